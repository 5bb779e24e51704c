# Ref: Linux Documentation/driver-api/early-userspace/buffer-format.rst (initramfs, newc cpio)
"""The guest side of ``make linux``: its initramfs, the disk image and the host-side checks.

Plain Python plus ``mkfs.ext4``, ``e2fsck`` and ``debugfs`` from e2fsprogs; no root, no loop
devices, no ``cpio`` binary. Used by ``scripts/linux/guest.py`` (the base initramfs, once) and by
:mod:`tb.qemu.cocotb_linux` (the per-run part and the disk).
"""

import gzip
import os
import random
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path


__all__ = ["MODULES", "newc_entry", "newc_archive", "tree_members", "base_initramfs",
           "run_initramfs", "render_init", "make_payload", "make_disk", "fsck", "read_back",
           "RawJob", "raw_jobs", "build_blkzero"]


# Module paths under lib/modules/<abi>/kernel/ in insmod order: each after what it depends on
# (from each .ko's .modinfo; docs/qemu-cosim-notes.md section 5).
MODULES = [
    ("virtio_ring", "drivers/virtio/virtio_ring.ko"),
    ("virtio", "drivers/virtio/virtio.ko"),
    ("virtio_pci_legacy_dev", "drivers/virtio/virtio_pci_legacy_dev.ko"),
    ("virtio_pci_modern_dev", "drivers/virtio/virtio_pci_modern_dev.ko"),
    ("virtio_pci", "drivers/virtio/virtio_pci.ko"),
    ("virtio_blk", "drivers/block/virtio_blk.ko"),
    ("crc16", "lib/crc16.ko"),
    ("crc32c_generic", "crypto/crc32c_generic.ko"),
    ("mbcache", "fs/mbcache.ko"),
    ("jbd2", "fs/jbd2/jbd2.ko"),
    ("ext4", "fs/ext4/ext4.ko"),
]

_INIT_TEMPLATE = Path(__file__).with_name("init.sh.in")


def newc_entry(name, mode, data=b"", rdev=(0, 0), ino=1):
    """One member of a ``newc`` cpio archive (magic 070701): the 110-byte ASCII header, the
    NUL-terminated name and the data, each padded to 4 bytes."""
    name_b = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name_b), 0)
    out = bytearray(b"070701" + "".join(f"{v:08x}" for v in fields).encode())
    out += name_b
    out += b"\0" * (-len(out) % 4)
    out += data
    out += b"\0" * (-len(out) % 4)
    return bytes(out)


def newc_archive(members):
    """A whole archive from ``(name, mode, data[, rdev])`` members, with its trailer."""
    out = bytearray()
    for ino, m in enumerate(members, start=1):
        out += newc_entry(m[0], m[1], m[2] if len(m) > 2 else b"",
                          m[3] if len(m) > 3 else (0, 0), ino)
    out += newc_entry("TRAILER!!!", 0, ino=0)
    return bytes(out)


def tree_members(root, skip=()):
    """``(name, mode, data)`` members for every directory, file and symbolic link under
    ``root``, names relative to it, parents first; a link's data is its target."""
    root = Path(root)
    members = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + sorted(filenames):
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if rel in skip:
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                members.append((rel, stat.S_IFLNK | 0o777, os.readlink(path).encode()))
            elif stat.S_ISDIR(st.st_mode):
                members.append((rel, stat.S_IFDIR | 0o755))
            elif stat.S_ISREG(st.st_mode):
                members.append((rel, stat.S_IFREG | (st.st_mode & 0o777), path.read_bytes()))
    return members


def base_initramfs(busybox, module_root, e2fsck=None, extra=None):
    """The run-independent part of the initramfs: directories, ``/dev/console`` (the kernel
    opens it for init; Debian's kernel does not mount devtmpfs by itself), busybox, the modules
    of :data:`MODULES` from ``module_root`` (``.../lib/modules/<abi>/kernel``), optionally
    ``e2fsck.static``, and optionally a whole ``extra`` tree (pciutils' ``lspci`` with its
    libraries and ``pci.ids``). Returns gzip'ed bytes."""
    d, f, x = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644, stat.S_IFREG | 0o755
    top = ("bin", "sbin", "dev", "proc", "sys", "lib", "lib/modules", "mnt", "tmp", "payload")
    members = [(p, d) for p in top]
    members.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    members.append(("bin/busybox", x, Path(busybox).read_bytes()))
    members.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox"))
    for name, rel in MODULES:
        members.append((f"lib/modules/{name}.ko", f, (Path(module_root) / rel).read_bytes()))
    if e2fsck is not None:
        members.append(("sbin/e2fsck.static", x, Path(e2fsck).read_bytes()))
    if extra is not None:
        members += tree_members(extra, skip=top)
    return gzip.compress(newc_archive(members), compresslevel=6, mtime=0)


def render_init(sectors, files, phases=((), ()), discard=None, zero=None):
    """The guest's ``/init`` from ``init.sh.in``; ``phases`` are the raw-device jobs
    (:func:`raw_jobs`): the first run one at a time, the second all at once; ``discard`` and
    ``zero``: ``(byte offset, bytes)`` ranges to discard, and to zero with ``blkzero``
    (WRITE_ZEROES), then read back as zeros."""
    text = _INIT_TEMPLATE.read_text()
    depth1 = "\n".join(f"raw_job {j.line(0)}" for j in phases[0])
    wide = "\n".join(f"raw_job {j.line(f'$(({k} % cpus))')} &"
                      for k, j in enumerate(phases[1]))
    off, n = discard or (0, 0)
    return (text.replace("@SECTORS@", str(sectors)).replace("@FILES@", " ".join(files))
            .replace("@RAW_DEPTH1@", depth1).replace("@RAW_WIDE@", wide)
            .replace("@DISCARD_OFFSET@", str(off)).replace("@DISCARD_BYTES@", str(n))
            .replace("@ZERO_OFFSET@", str((zero or (0, 0))[0]))
            .replace("@ZERO_BYTES@", str((zero or (0, 0))[1])))


@dataclass
class RawJob:
    """A raw-device job of the guest: write ``/payload/<name>`` at ``sector`` in blocks of
    ``bs`` bytes with O_DIRECT (in block order, or in the shuffled block ``order``), read it
    back the same way and compare."""
    name: str
    sector: int
    bs: int
    count: int
    order: tuple = ()

    @property
    def nbytes(self):
        return self.bs * self.count

    def line(self, cpu):
        """The job's line in ``/init``: ``raw_job <name> <sector> <bs> <count> <cpu>
        [<block>...]``."""
        return " ".join(str(v) for v in (self.name, self.sector, self.bs, self.count, cpu) +
                        tuple(self.order))


def raw_jobs(rng, first_sector, sectors, sizes=(512, 4096, 65536, 131072), wide=32):
    """The raw-device jobs, in two phases on the ``sectors`` sectors from ``first_sector`` on
    (the second overwrites the first's regions):

    1. depth 1: one job per block size, one after another, each moving 256 KiB at 64 KiB and
       larger blocks, 64 KiB below (or its share of the room);
    2. depth ``wide``: ``wide`` jobs at once on separate regions, spread over every CPU (and
       so every hardware queue), block sizes in turn among those that fit their share, every
       other one writing its blocks in a random order.

    Each job starts at a multiple of its block size (``dd``'s ``seek`` counts blocks).
    Returns ``(phases, payload)``: two lists of :class:`RawJob`, and ``(name, bytes)``."""
    end = first_sector + sectors
    payload, phases = [], [[], []]

    def place(phase, name, sector, bs, want, order=False):
        """The job at the first multiple of ``bs`` from ``sector``, at most ``want`` blocks
        and within the room; returns the sector after it."""
        per = bs // 512
        start = -(-sector // per) * per
        count = min(want, (end - start) // per) if start < end else 0
        if count <= 0:
            raise ValueError(f"{sectors * 512} bytes beyond the file system leave no room "
                             f"for a job of {bs}-byte blocks")
        order = tuple(rng.sample(range(count), count)) if order else ()
        phases[phase].append(RawJob(name, start, bs, count, order))
        return start + count * per

    room = sectors * 512
    sector = first_sector
    for bs in sizes:
        want = min((256 << 10) if bs >= 65536 else (64 << 10), room // len(sizes)) // bs
        sector = place(0, f"d1_{bs}", sector, bs, max(want, 1))
    share = room // wide
    fits = [bs for bs in sizes if 2 * bs <= min(share, 128 << 10)]
    if not fits:
        raise ValueError(f"{room} bytes leave no room for {wide} jobs")
    sector = first_sector
    for k in range(wide):
        bs = fits[k % len(fits)]
        sector = place(1, f"d{wide}_{k}", sector, bs, min((share - bs) // bs, 16),
                       order=bool(k % 2))
    for job in phases[0] + phases[1]:
        payload.append((job.name, rng.randbytes(job.nbytes)))
    return phases, payload


def build_blkzero(out_dir):
    """``blkzero`` (``tb/qemu/blkzero.c``), linked static with the host's gcc: the guest's way
    to make the kernel send WRITE_ZEROES. Returns the binary's bytes."""
    out = Path(out_dir) / "blkzero"
    subprocess.run(["gcc", "-static", "-O2", "-o", str(out),
                    str(Path(__file__).with_name("blkzero.c"))], check=True)
    return out.read_bytes()


def run_initramfs(base, init_text, payload, binaries=()):
    """``base`` followed by a second gzip'ed archive with ``/init`` and ``/payload/<name>``:
    the kernel unpacks concatenated archives in order, so one base serves every run."""
    members = [("init", stat.S_IFREG | 0o755, init_text.encode())]
    members += [(f"bin/{name}", stat.S_IFREG | 0o755, data) for name, data in binaries]
    members += [(f"payload/{name}", stat.S_IFREG | 0o644, data) for name, data in payload]
    return base + gzip.compress(newc_archive(members), compresslevel=1, mtime=0)


def make_payload(seed, total=160 * 1024):
    """Files of known content for the guest to write: random bytes from ``seed``, sizes that
    are not multiples of a block (so partial blocks are covered), about ``total`` bytes."""
    rng = random.Random(seed)
    sizes = [total // 2 + rng.randrange(1, 512), total // 4 + rng.randrange(1, 4096),
             rng.randrange(1, 1024), 4096]
    return [(f"f{i}.bin", rng.randbytes(n)) for i, n in enumerate(sizes)]


def make_disk(path, size_bytes, fs_bytes=None):
    """A fresh sparse image of ``size_bytes`` with an ext4 file system on its first
    ``fs_bytes`` (all of it if None; ``mkfs.ext4`` picks 1 KiB blocks for a small file system,
    and no journal below 2 MiB); the rest is zeros, for raw-device jobs."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.truncate(size_bytes)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "cosim", "-E", "root_owner=0:0",
                    str(path)] + ([f"{fs_bytes // 1024}k"] if fs_bytes else []),
                   check=True, env=_sbin_path())


def fsck(path):
    """``e2fsck -fn`` on the image: ``(clean, output)``."""
    r = subprocess.run(["e2fsck", "-fn", str(path)], capture_output=True, text=True,
                       env=_sbin_path())
    return r.returncode == 0, r.stdout + r.stderr


def read_back(path, name):
    """The bytes of ``/name`` in the ext4 image, with ``debugfs`` (no mount)."""
    r = subprocess.run(["debugfs", "-R", f"cat /{name}", str(path)], capture_output=True,
                       env=_sbin_path())
    if r.returncode:
        raise RuntimeError(f"debugfs cat /{name}: {r.stderr.decode(errors='replace')}")
    return r.stdout


def _sbin_path():
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([env.get("PATH", ""), "/usr/sbin", "/sbin"])
    return env
