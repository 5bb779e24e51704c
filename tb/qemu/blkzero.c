/*
 * blkzero DEVICE OFFSET LENGTH: zero a byte range of a block device with the BLKZEROOUT
 * ioctl (Linux include/uapi/linux/fs.h), for make linux's guest. With VIRTIO_BLK_F_WRITE_ZEROES
 * the kernel sends it as VIRTIO_BLK_T_WRITE_ZEROES [VIRTIO-1.2 5.2.6] (block/blk-lib.c,
 * blkdev_issue_zeroout: write zeroes first, without unmapping); busybox has no such applet.
 * Built static on the host by tb/qemu/guest.py.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: blkzero DEVICE OFFSET LENGTH\n");
        return 2;
    }
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    uint64_t range[2] = { strtoull(argv[2], NULL, 0), strtoull(argv[3], NULL, 0) };
    if (ioctl(fd, BLKZEROOUT, range) != 0) {
        perror("BLKZEROOUT");
        return 1;
    }
    return 0;
}
