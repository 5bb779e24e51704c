# Ref: QEMU 7.2 docs/system/multi-process.rst (x-pci-proxy-dev); OASIS virtio 1.2 section 4.1
# (virtio over PCI); Linux drivers/virtio/virtio_pci_modern.c, drivers/block/virtio_blk.c
"""``make linux``: a stock Debian kernel in QEMU drives the RTL with its own virtio_blk driver.

One cocotb test, :func:`linux_boot`, on the ``virtio_blk_ep_qemu`` variant. QEMU runs the guest
under TCG with its RAM on a shared memfd and the device as ``x-pci-proxy-dev``; this process is
the proxy's remote (:class:`tb.qemu.remote.QemuRemote`). The disk is a fresh ext4 image behind
:class:`tb.backend.StorageBackend`; the guest's ``/init`` (``tb/qemu/init.sh.in``) writes files
of known content, checks and reads them back; afterwards the host runs ``e2fsck -fn`` on the
image and compares every file byte for byte.

Environment (``scripts/linux/run.py`` sets these):

``COSIM_QEMU``      the patched ``qemu-system-x86_64`` (default ``build/qemu/qemu-system-x86_64``)
``COSIM_GUEST``     directory with ``vmlinuz`` and ``initrd-base.gz`` (default ``build/linux``)
``COSIM_OUT``       where the run's disk image, console log and ``result.json`` go
                    (default ``build/linux/run``)
``COSIM_TIMEOUT``   wall-clock limit in seconds (default 600)
``COSIM_QEMU_ARGS`` more QEMU options (debugging)
``COSIM_CPUS``      the guest's CPUs (default 2: the kernel gives each its hardware queue)
``SEED``            the payload's seed (printed; replays the run's file contents)
"""

import json
import os
import random
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

import cocotb
from cocotbext.pcie.core.utils import PcieId

from model import regmap as rm
from ..backend import StorageBackend
from .remote import CosimTB, QemuRemote
from . import guest


ROOT = Path(__file__).resolve().parents[2]

# The ext4 file system's share of the disk, at most (half of a smaller disk); the raw-device
# jobs go beyond it.
FS_BYTES = 8 << 20

# Where the proxy sits on the guest's root bus: 00:04.0 (explicit, so the Completer ID of the
# configuration requests is known before the guest enumerates).
GUEST_BDF = PcieId(0, 4, 0)


class Console:
    """Follows QEMU's serial log file: prints each new line, remembers the COSIM markers with
    the wall time and simulated cycle at which they were seen."""
    def __init__(self, path, tb, t0, period=0.1):
        self.path = path
        self.tb = tb
        self.t0 = t0
        self.period = period
        self._fd = None
        self._partial = b""
        self._next = 0.0
        self.lines = []
        self.marks = {}

    def poll(self, force=False):
        now = time.monotonic()
        if not force and now < self._next:
            return
        self._next = now + self.period
        if self._fd is None:
            try:
                self._fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
        while chunk := os.read(self._fd, 65536):
            self._partial += chunk
        *done, self._partial = self._partial.split(b"\n")
        for raw in done:
            line = raw.decode(errors="replace").rstrip("\r")
            self.lines.append(line)
            print(f"guest | {line}", flush=True)
            for key in ("COSIM: init", "COSIM-RESULT"):
                if line.startswith(key) and key not in self.marks:
                    self.marks[key] = (now - self.t0, self.tb.cycles())

    def result(self):
        for line in reversed(self.lines):
            if line.startswith("COSIM-RESULT"):
                return line
        return None

    def close(self):
        if self._fd is not None:
            os.close(self._fd)


def _qemu_command(qemu, linux, initrd, console, fd, cpus):
    return [
        str(qemu), "-nodefaults", "-display", "none", "-no-reboot",
        # Guest RAM on a memfd that QEMU can hand to the remote (SYNC_SYSMEM); its size must
        # equal -m. -nodefaults keeps the RAM sections few (a remote takes at most 8).
        "-machine", "q35,memory-backend=mem", "-accel", "tcg", "-smp", str(cpus), "-m", "512",
        "-object", "memory-backend-memfd,id=mem,size=512M,share=on",
        "-L", "/usr/share/seabios", "-L", "/usr/share/qemu",
        "-serial", f"file:{console}",
        "-kernel", str(linux / "vmlinuz"), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 oops=panic",
        "-device", f"x-pci-proxy-dev,id=blk,fd={fd},"
                   f"addr={GUEST_BDF.device:02x}.{GUEST_BDF.function}",
    ]


def _virtio_interrupts(lines):
    """``{name: count}`` of the guest's virtio interrupts from its ``/proc/interrupts`` lines
    (``COSIM: interrupts  24:  3  9  PCI-MSI 65536-edge  virtio0-req.0``): the name after
    ``virtioN-`` (``config``, ``req.0``, ...), the count summed over CPUs."""
    out = {}
    for ln in lines:
        if not ln.startswith("COSIM: interrupts "):
            continue
        fields = ln[len("COSIM: interrupts "):].split()
        m = re.match(r"virtio\d+-(\S+)$", fields[-1]) if fields else None
        if not m:
            continue
        counts = []
        for f in fields[1:]:
            if not f.isdigit():
                break
            counts.append(int(f))
        out[m.group(1)] = sum(counts)
    return out


@cocotb.test()
async def linux_boot(dut):
    """Boot Linux against the DUT, run the ext4 round trip, check the disk on the host."""
    t0 = time.monotonic()
    # `or`, not a get() default: make exports unset variables as "".
    qemu = Path(os.environ.get("COSIM_QEMU") or ROOT / "build" / "qemu" / "qemu-system-x86_64")
    linux = Path(os.environ.get("COSIM_GUEST") or ROOT / "build" / "linux")
    out = Path(os.environ.get("COSIM_OUT") or ROOT / "build" / "linux" / "run")
    timeout = float(os.environ.get("COSIM_TIMEOUT") or 600)
    cpus = int(os.environ.get("COSIM_CPUS") or 2)
    for need in (qemu, linux / "vmlinuz", linux / "initrd-base.gz"):
        assert need.exists(), f"{need} is missing: run scripts/linux/build-qemu.sh and " \
                              f"scripts/linux/guest.py first (make linux does)"
    out.mkdir(parents=True, exist_ok=True)

    tb = CosimTB(dut)
    log = tb.log
    params = tb.params
    image = out / "disk.img"
    disk_bytes = params.capacity * rm.BLK_SECTOR_BYTES
    fs_bytes = min(disk_bytes // 2, FS_BYTES)
    guest.make_disk(image, disk_bytes, fs_bytes)
    payload = guest.make_payload(tb.seed)
    phases, raw_payload = guest.raw_jobs(random.Random(tb.seed + 1), fs_bytes // 512,
                                         (disk_bytes - fs_bytes) // 512)
    for job in phases[0] + phases[1]:
        assert job.sector * 512 + job.nbytes <= disk_bytes, "the raw jobs need more disk"
    # The first job of the second phase is discarded afterwards, the third zeroed with write
    # zeroes; both must then read zeros.
    discarded, zeroed = phases[1][0], phases[1][2]
    initrd = out / "initrd.gz"
    initrd.write_bytes(guest.run_initramfs(
        (linux / "initrd-base.gz").read_bytes(),
        guest.render_init(params.capacity, [n for n, _ in payload], phases,
                          (discarded.sector * 512, discarded.nbytes),
                          (zeroed.sector * 512, zeroed.nbytes)),
        payload + raw_payload, [("blkzero", guest.build_blkzero(out))]))
    console_path = out / "console.log"
    console_path.unlink(missing_ok=True)
    backend = StorageBackend(dut, str(image), log=log)
    # The golden model starts from the same disk as the DUT's back-end.
    tb.model.blk.disk[:] = image.read_bytes()
    await tb.reset()

    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    cmd = _qemu_command(qemu, linux, initrd, console_path, theirs.fileno(), cpus)
    # COSIM_QEMU_ARGS: more QEMU options, for debugging (e.g. "-d guest_errors -D file").
    cmd += shlex.split(os.environ.get("COSIM_QEMU_ARGS", ""))
    log.info("QEMU: %s", " ".join(cmd))
    qemu_log = open(out / "qemu.log", "wb")
    proc = subprocess.Popen(cmd, pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                            stdout=qemu_log, stderr=subprocess.STDOUT, start_new_session=True)
    theirs.close()
    console = Console(console_path, tb, t0)

    def on_poll():
        console.poll()
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"no power-off within {timeout:.0f} s")

    def activity():
        return (len(backend.commands), backend.bytes_read, backend.bytes_written)

    remote = QemuRemote(tb, ours, GUEST_BDF, activity=activity, on_poll=on_poll)
    try:
        await remote.serve()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            log.error("QEMU did not exit after closing the socket")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        qemu_log.close()
        ours.close()
        console.poll(force=True)
        console.close()
        backend.close()
        tb.memory.close()

    # -- the host's side of the checks ------------------------------------------------------
    clean, fsck_out = guest.fsck(image)
    log.info("e2fsck -fn:\n%s", fsck_out.rstrip())
    mismatched = []
    disk = image.read_bytes()
    # What the second phase left (it overwrote the first's regions), and the discarded range.
    content = dict(raw_payload)
    for job in phases[1]:
        at = job.sector * 512
        zeros = job is discarded or job is zeroed
        want = bytes(job.nbytes) if zeros else content[job.name]
        if disk[at:at + job.nbytes] != want:
            mismatched.append(job.name)
            log.error("raw job %s: its region of the image differs from its %s", job.name,
                      "zeros (discarded or zeroed)" if zeros else "payload")
    for name, data in payload:
        got = guest.read_back(image, name)
        if got != data:
            mismatched.append(name)
            log.error("%s differs on the host: %d bytes, expected %d", name, len(got), len(data))
    line = console.result()
    problems = []
    if line is None or not line.startswith("COSIM-RESULT PASS"):
        problems.append(f"guest: {line or 'no result'}")
    if proc.returncode:
        problems.append(f"QEMU exited with {proc.returncode} (see {out / 'qemu.log'})")
    if mismatched:
        problems.append(f"content differs: {' '.join(mismatched)}")
    if not clean:
        problems.append("e2fsck found errors")
    sb = tb.scoreboard
    try:
        sb.check()        # also records requests that never completed
    except AssertionError:
        pass
    if sb.errors:
        problems.append(f"{len(sb.errors)} scoreboard errors, first: {sb.errors[0]}")
    rings = tb.rings
    problems += rings.finish(disk)
    if rings.mismatches:
        problems.append(f"{rings.mismatches} of {rings.compared} requests differ from the "
                        f"golden model's")
    # The guest's discard and BLKZEROOUT must reach the device as such (the kernel would
    # write zeros itself without the features) [VIRTIO-1.2 5.2.3, 5.2.6].
    for op, bit in (("DISCARD", rm.VIRTIO_BLK_F_DISCARD),
                    ("WRITE_ZEROES", rm.VIRTIO_BLK_F_WRITE_ZEROES)):
        if params.features >> bit & 1 and not params.read_only and not backend.counts.get(op):
            problems.append(f"no {op} command reached the back-end")
    if remote.io_accesses:
        problems.append(f"{remote.io_accesses} I/O-space BAR accesses from QEMU (the device "
                        f"has no I/O BAR)")
    if tb.shim.dma_errors:
        problems.append(f"{len(tb.shim.dma_errors)} DMA errors, first: {tb.shim.dma_errors[0]}")

    # What the guest saw: its CPUs and the hardware queues its kernel made of the device's.
    seen = next((ln for ln in console.lines if ln.startswith("COSIM: cpus ")), "")
    m = re.match(r"COSIM: cpus (\d+), hardware queues (\d+)", seen)
    guest_cpus, guest_queues = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
    if guest_cpus != cpus:
        problems.append(f"the guest reports {guest_cpus} CPUs, QEMU was given {cpus}")
    if guest_queues != min(cpus, params.num_queues):
        problems.append(f"the guest's kernel made {guest_queues} hardware queues of the "
                        f"device's {params.num_queues}, with {cpus} CPUs")

    # With MSI-X: enabled in the guest's lspci -vv, a vector for configuration changes and one
    # per request queue in /proc/interrupts, each request vector counting.
    vectors = _virtio_interrupts(console.lines)
    if params.msix:
        if not any("MSI-X: Enable+" in ln for ln in console.lines
                   if ln.startswith("COSIM: lspci-vv")):
            problems.append("lspci -vv does not show MSI-X enabled")
        want = ["config"] + [f"req.{k}" for k in range(guest_queues)]
        missing = [w for w in want if w not in vectors]
        if missing:
            problems.append(f"no MSI-X vector for {missing} in /proc/interrupts: {vectors}")
        idle = [w for w in want[1:] if vectors.get(w) == 0]
        if idle:
            problems.append(f"request vectors that never fired: {idle}")

    wall = time.monotonic() - t0
    boot = console.marks.get("COSIM: init")
    end = console.marks.get("COSIM-RESULT")
    log.info("messages: %s; %d interrupts sent; %d idle waits", remote.counts,
             remote.interrupts, remote.idle_waits)
    log.info("scoreboard: %s", sb.summary())
    log.info("back-end: %s", backend.counts)
    if boot:
        log.info("boot to /init: %.1f s wall, %d cycles", boot[0], boot[1])
    if boot and end:
        log.info("workload: %.1f s wall, %d cycles", end[0] - boot[0], end[1] - boot[1])
    log.info("total: %.1f s wall, %d cycles", wall, tb.cycles())
    for p in problems:
        log.error("%s", p)
    result = "PASS" if not problems else "FAIL"
    log.info("guest's virtio interrupts: %s", vectors)
    log.info("golden model: %d requests compared (per queue %s), %d mismatches",
             rings.compared, rings.per_queue, rings.mismatches)
    lat = sorted(rings.latencies)
    latency = {"median": lat[len(lat) // 2], "mean": round(sum(lat) / len(lat)),
               "max": lat[-1]} if lat else {}
    log.info("cycles from notification to used->idx, per request: %s", latency)
    # Device cycles per request: the guest's workload (from /init to its result) over the
    # requests the device completed in the whole run (boot's few included).
    per_request = round((end[1] - boot[1]) / rings.compared) if boot and end and \
        rings.compared else 0
    summary = (f"linux: {result} build={dut._name} msix={'on' if tb.params.msix else 'off'} "
               f"cpus={guest_cpus} queues={guest_queues} "
               f"disk={params.capacity * rm.BLK_SECTOR_BYTES >> 20}MiB requests={rings.compared} "
               f"mismatches={rings.mismatches} "
               f"cycles/request={per_request} latency={latency.get('median', 0)} (median), "
               f"{backend.bytes_written} bytes written, "
               f"{backend.bytes_read} bytes read, fsck {'clean' if clean else 'errors'}")
    (out / "result.json").write_text(json.dumps({
        "result": result, "summary": summary, "problems": problems, "seed": tb.seed,
        "bytes_written": backend.bytes_written, "bytes_read": backend.bytes_read,
        "fsck_clean": clean, "boot_wall_s": boot and round(boot[0], 2),
        "boot_cycles": boot and boot[1],
        "workload_wall_s": boot and end and round(end[0] - boot[0], 2),
        "workload_cycles": boot and end and end[1] - boot[1],
        "total_wall_s": round(wall, 2), "total_cycles": tb.cycles(),
        "messages": remote.counts, "interrupts": remote.interrupts,
        "backend": backend.counts, "scoreboard": sb.summary(),
        "requests": rings.compared, "requests_per_queue": rings.per_queue,
        "mismatches": rings.mismatches, "cycles_per_request": per_request,
        "latency_cycles": latency,
    }, indent=2) + "\n")
    print(summary, flush=True)
    assert not problems, "; ".join(problems)
