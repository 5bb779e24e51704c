# Ref: OASIS virtio 1.2 sections 2.1.2 (DEVICE_NEEDS_RESET), 2.7.4.2 (message framing), 2.7.5
#      (descriptor table, indirect descriptors), 2.7.13 (available ring), 4.1.4.3.2 (reset),
#      5.2.6 (block device operation)
"""cocotb tests of hostile input: rings a driver must never build, and requests that are well
framed but make no sense. One named test per case; sub-cases are parametrized.

Malformed rings (``malformed_*``). The chain is written by hand into the driver's queue 0
(:class:`RawRing`), with a good FLUSH chain after it in the available ring where room is left.
The golden model (:mod:`model.blk`, whose docstring lists the device's choices) is run on the same
memory first and must call it malformed, for the reason the case is about. Then the DUT must:
set DEVICE_NEEDS_RESET and send a configuration change notification (MSI-X vector 0)
[VIRTIO-1.2 2.1.2]; complete nothing, neither the bad chain nor the one after it; and make no
host memory access at all once broken, not even when the driver rings every doorbell again.
The driver then resets it (``device_status`` = 0, polled until it reads 0 [VIRTIO-1.2
4.1.4.3.2]), initialises it again, and a write and read back must work.

Bad content (``bad_*``): a well-formed chain through the driver, so :class:`BlkTB` compares every
completion with the model; each status is also checked against the one the case requires, and
the device must go on serving requests.

Every test sets ``scoreboard.dma_allowed`` to a :class:`DmaFence` that admits only what the
driver has posted: reads of the descriptor tables, available rings, indirect tables and
device-readable buffers; writes to the used rings and device-writable buffers.
"""

import enum
import struct

import cocotb
from cocotb.triggers import ClockCycles

from model import regmap as rm
from model.params import VARIANTS
from .blk_bench import BlkTB, ModelMemory
from .blk import Layout, outhdr, discard_segment


SECTOR = rm.BLK_SECTOR_BYTES
NEXT, WRITE, INDIRECT = rm.VIRTQ_DESC_F_NEXT, rm.VIRTQ_DESC_F_WRITE, rm.VIRTQ_DESC_F_INDIRECT
OK, IOERR, UNSUPP = rm.VIRTIO_BLK_S_OK, rm.VIRTIO_BLK_S_IOERR, rm.VIRTIO_BLK_S_UNSUPP
T_IN, T_OUT, T_FLUSH = rm.VIRTIO_BLK_T_IN, rm.VIRTIO_BLK_T_OUT, rm.VIRTIO_BLK_T_FLUSH

# Every test runs with and without random stalls on the TLP streams and the storage port.
STALLS = [False, True]
# Queue size of the malformed-ring tests: loops and prefetch windows stay short.
QSIZE = 16
# How long a broken device is watched for host memory accesses.
HALT_CYCLES = 500
# How long the configuration change notification may take after the doorbell.
IRQ_TIMEOUT_CYCLES = 5000
REQUEST_TIMEOUT_NS = 200_000
POISON = 0xee

_DESC = struct.Struct("<QIHH")     # [VIRTIO-1.2 2.7.5] struct virtq_desc


def _named(*names):
    """Values for ``cocotb.parametrize`` that appear by name in the test name (cocotb names a
    plain string only up to 10 characters, and numbers the values otherwise)."""
    return list(enum.Enum("Variant", names))


class DmaFence:
    """``scoreboard.dma_allowed``: the host memory the driver has posted to the device.

    Each region is ``(start, end, write)``; a DMA read must lie inside a read region, a DMA write
    inside a write region. While :attr:`closed`, nothing is allowed.
    """
    def __init__(self):
        self.regions = []
        self.closed = False

    def allow(self, addr, n, write):
        self.regions.append((addr, addr + n, write))

    def rings(self, vqs):
        """[VIRTIO-1.2 2.7] The device reads the descriptor table and the available ring
        (``used_event`` included) and writes the used ring (``avail_event`` included)."""
        for vq in vqs:
            self.allow(vq.desc_addr, 16 * vq.size, False)
            self.allow(vq.avail_addr, 6 + 2 * vq.size, False)
            self.allow(vq.used_addr, 6 + 8 * vq.size, True)

    def request(self, req, vq, mem):
        """The buffers of a request the driver made available, and its indirect table (found
        by walking its chain in the ring, as the driver wrote it)."""
        for addr, n in req.readable:
            self.allow(addr, n, False)
        for addr, n in req.writable:
            self.allow(addr, n, True)
        i = req.head
        while True:
            addr, n, flags, nxt = _DESC.unpack(mem.read(vq.desc_addr + 16 * i, 16))
            if flags & INDIRECT:
                self.allow(addr, n, False)
            if not flags & NEXT:
                break
            i = nxt

    def __call__(self, addr, n, is_write):
        return not self.closed and any(lo <= addr and addr + n <= hi and w == is_write
                                       for lo, hi, w in self.regions)


def _fence_submissions(bt, fence):
    """Admit the buffers of every request submitted through the driver from now on. (The
    submission is synchronous: the regions are in before the device can see the chain.)"""
    core = bt.drv.core
    submit = core.submit

    def submit_fenced(q, *args, **kw):
        req = submit(q, *args, **kw)
        fence.request(req, core.vqs[q], bt.mem)
        return req
    core.submit = submit_fenced


async def _start(dut, stalls, **init_kw):
    bt = BlkTB(dut, stalls)
    await bt.start(**init_kw)
    fence = DmaFence()
    fence.rings(bt.drv.vqs)
    bt.tb.scoreboard.dma_allowed = fence
    _fence_submissions(bt, fence)
    return bt, fence


async def _round_trip(bt, sector=8, nsectors=8):
    """Write random sectors and read them back through the driver (compared with the model
    as well)."""
    drv = bt.drv
    data = bt.rng.randbytes(nsectors * SECTOR)
    w = await _request(drv, *drv.core.write_args(sector, data))
    assert w.status == OK, f"write: status {w.status}"
    r = await _request(drv, *drv.core.read_args(sector, nsectors))
    assert r.status == OK and r.data == data, f"read back: status {r.status}, data " \
        f"{'matches' if r.data == data else 'differs'}"


async def _request(drv, typ, sector=0, out=b"", in_len=0, layout=None, q=0):
    """One request on queue ``q``, waited for at most :data:`REQUEST_TIMEOUT_NS`."""
    req = await drv.submit(q, typ, sector, out, in_len, layout)
    return await drv.wait(req, timeout_ns=REQUEST_TIMEOUT_NS)


# -- malformed rings -------------------------------------------------------------------------------

class RawRing:
    """Hand-written descriptor chains on one of the driver's queues, for chains the driver would
    never build. Descriptors are taken from the top of the table down (the driver's own free
    list starts at 0 and is not used meanwhile); every buffer and table is admitted by the
    fence; device-writable buffers are filled with :data:`POISON` and remembered, so that a
    write of the device to any of them is seen.
    """
    def __init__(self, bt, fence, vq):
        self.mem, self.fence, self.vq = bt.mem, fence, vq
        self.size = vq.size
        self.free = list(range(vq.size))
        self.writable = []

    def take(self, n=1):
        assert n <= len(self.free), f"{n} descriptors wanted, {len(self.free)} free"
        out, self.free = self.free[-n:][::-1], self.free[:-n]
        return out

    def claim(self, i):
        self.free.remove(i)
        return i

    def desc(self, i, addr, length, flags=0, nxt=0, table=None):
        base = self.vq.desc_addr if table is None else table
        self.mem.write(base + 16 * i, _DESC.pack(addr, length, flags, nxt))

    def header(self, type=T_FLUSH, sector=0):
        """A 16-byte request header; returns ``(addr, 16, 0)``."""
        addr = self.mem.alloc(16, 8)
        self.mem.write(addr, outhdr(type, sector))
        self.fence.allow(addr, 16, False)
        return addr, 16, 0

    def rbuf(self, n, data=None):
        addr = self.mem.alloc(max(n, 1))
        self.mem.write(addr, bytes(data) if data is not None else bytes(n))
        self.fence.allow(addr, n, False)
        return addr, n, 0

    def wbuf(self, n, data=None):
        """A device-writable buffer: ``data``, or :data:`POISON` watched for writes."""
        addr = self.mem.alloc(max(n, 1))
        if data is not None:
            self.mem.write(addr, bytes(data))
        else:
            self.mem.write(addr, bytes([POISON]) * max(n, 1))
            self.writable.append((addr, max(n, 1)))
        self.fence.allow(addr, n, True)
        return addr, n, WRITE

    def chain(self, elems, indices=None):
        """Write ``elems`` ``[(addr, len, flags)]`` as a chain in the ring, NEXT added to all
        but the last; returns the head index."""
        indices = indices or self.take(len(elems))
        for k, (addr, n, flags) in enumerate(elems):
            last = k + 1 == len(elems)
            self.desc(indices[k], addr, n, flags | (0 if last else NEXT),
                      0 if last else indices[k + 1])
        return indices[0]

    def table(self, elems, length=None, extra=0):
        """An indirect table holding ``elems`` chained 0 -> 1 -> ... (plus ``extra`` zeroed
        entries after them); the fence admits ``length`` bytes of it (default: all)."""
        n = len(elems) + extra
        addr = self.mem.alloc(16 * n, 16)
        self.mem.write(addr, bytes(16 * n))
        for k, (a, ln, flags) in enumerate(elems):
            last = k + 1 == len(elems)
            self.desc(k, a, ln, flags | (0 if last else NEXT), k + 1, table=addr)
        self.fence.allow(addr, 16 * n if length is None else length, False)
        return addr

    def flush(self, indirect=False):
        """A good FLUSH request (header, status byte); returns its head."""
        elems = [self.header(T_FLUSH), self.wbuf(1)]
        if indirect:
            return self.chain([(self.table(elems), 32, INDIRECT)])
        return self.chain(elems)

    def publish(self, head):
        """[VIRTIO-1.2 2.7.13.2, 2.7.13.3] The head into the next ring entry, then idx."""
        vq = self.vq
        self.mem.write16(vq.avail_addr + 4 + 2 * (vq.avail_idx % self.size), head)
        self.set_avail_idx(vq.avail_idx + 1)

    def set_avail_idx(self, idx):
        self.vq.avail_idx = idx & 0xffff
        self.mem.write16(self.vq.avail_addr + 2, self.vq.avail_idx)

    def untouched(self):
        """Device-writable buffers the device wrote to (none, when it served nothing)."""
        return [(a, n) for a, n in self.writable if self.mem.read(a, n) != bytes([POISON]) * n]


# Each builder writes the bad chain (and whatever it needs) and publishes it; it returns the
# words the model's reason must contain, so that the test is about the malformation intended.

def _loop(r, where):
    if where == "ring":
        # [VIRTIO-1.2 2.7.5.2] No loops: the second descriptor points back at the head.
        a, b = r.take(2)
        r.desc(a, *r.header()[:2], NEXT, b)
        r.desc(b, *r.rbuf(4)[:2], NEXT, a)
        r.publish(a)
    else:
        # Inside an indirect table: 0 -> 1 -> 2 -> 1.
        elems = [r.header(), r.wbuf(1), r.wbuf(1)]
        table = r.table(elems)
        r.desc(2, elems[2][0], 1, WRITE | NEXT, 1, table=table)
        r.publish(r.chain([(table, 48, INDIRECT)]))
    return "a loop"


def _chain_too_long(r, where):
    # A chain that visits more descriptors than its table holds and never comes back to its
    # head: a loop check that waits for the head again never ends; only a count stops it.
    if where == "ring":
        idx = r.take(r.size)                 # every descriptor
        for k, i in enumerate(idx):
            elem = r.header() if k == 0 else r.rbuf(4)
            r.desc(i, *elem[:2], NEXT, idx[k + 1] if k + 1 < len(idx) else idx[1])
        r.publish(idx[0])
    else:
        n = 8
        elems = [r.header()] + [r.rbuf(4) for _ in range(n - 1)]
        table = r.table(elems)
        r.desc(n - 1, elems[-1][0], 4, NEXT, 1, table=table)
        r.publish(r.chain([(table, 16 * n, INDIRECT)]))
    return "a loop"


def _next_out_of_range(r, where):
    if where == "ring":
        a, = r.take(1)
        r.desc(a, *r.header()[:2], NEXT, r.size)
        r.publish(a)
        return f"next {r.size} is not below the table size {r.size}"
    # Entry 2 exists in memory, but the table is 2 entries long: the device must not read it.
    table = r.table([r.header(), r.wbuf(1), r.wbuf(1)], length=32)
    r.publish(r.chain([(table, 32, INDIRECT)]))
    return "next 2 is not below the table size 2"


def _head_out_of_range(r, head):
    # A device that masks the head with size - 1 finds a good chain there and serves it.
    trap = r.claim(head % r.size)
    r.chain([r.header(), r.wbuf(1)], [trap] + r.take(1))
    r.publish(head)
    return f"head {head} is not below the queue size {r.size}"


def _avail_idx_ahead(r, ahead):
    # A good chain in every ring entry, so a device that does not check would serve them.
    # ``ahead`` counts from the device's last_avail_idx, the ring's idx while it is idle.
    start = r.vq.avail_idx
    for k in range(r.size):
        r.mem.write16(r.vq.avail_addr + 4 + 2 * k, r.flush(indirect=True))
    r.set_avail_idx(start + ahead)
    return f"is more than {r.size} ahead of {start}"


def _indirect_with_next(r, _):
    a, b = r.take(2)
    table = r.table([r.header(), r.wbuf(1)])
    r.desc(a, table, 32, INDIRECT | NEXT, b)
    r.desc(b, *r.wbuf(1))
    r.publish(a)
    return "INDIRECT together with NEXT"


def _nested_indirect(r, position):
    inner = r.table([r.header(), r.wbuf(1)])
    if position == "first":
        outer = r.table([(inner, 32, INDIRECT)])
        n = 1
    else:
        outer = r.table([r.header(), (inner, 32, INDIRECT)])
        n = 2
    r.publish(r.chain([(outer, 16 * n, INDIRECT)]))
    return "INDIRECT inside an indirect table"


def _indirect_length(r, length):
    table = r.table([r.header(), r.wbuf(1), r.wbuf(1)], length=length)
    r.publish(r.chain([(table, length, INDIRECT)]))
    return f"indirect table length {length} is not a positive multiple of 16"


def _readable_after_writable(r, lengths):
    w, rd = (0, 0) if lengths == "empty" else (1, 4)
    r.publish(r.chain([r.header(), r.wbuf(w), r.rbuf(rd), r.wbuf(1)]))
    return "a device-readable descriptor after a device-writable one"


def _header_status(r, variant):
    hdr = outhdr(T_FLUSH, 0)
    if variant == "no_header":
        r.publish(r.chain([r.wbuf(1)]))
        return "0 device-readable bytes, fewer than the 16-byte header"
    if variant == "short_header":
        r.publish(r.chain([r.rbuf(8, hdr[:8]), r.rbuf(7, hdr[8:15]), r.wbuf(1)]))
        return "15 device-readable bytes, fewer than the 16-byte header"
    if variant == "header_writable":
        r.publish(r.chain([r.wbuf(16, hdr), r.wbuf(1)]))
        return "0 device-readable bytes, fewer than the 16-byte header"
    if variant == "status_readable":
        r.publish(r.chain([r.header(), r.rbuf(1)]))
        return "no device-writable byte for the status"
    assert variant == "status_zero_length"
    r.publish(r.chain([r.header(), r.wbuf(0)]))
    return "no device-writable byte for the status"


async def _malformed(dut, stalls, case, build, variant):
    """The malformed-ring scenario (see the module docstring) for one chain."""
    bt, fence = await _start(dut, stalls, queue_size=QSIZE)
    drv, sb, log = bt.drv, bt.tb.scoreboard, bt.log
    vq = drv.vqs[0]
    r = RawRing(bt, fence, vq)
    reason = build(r, variant)
    # A good request behind the bad one: it must not be served either.
    tail = r.flush() if len(r.free) >= 2 and vq.avail_idx < QSIZE else None
    if tail is not None:
        r.publish(tail)

    # The golden model, on the same memory: malformed, for the intended reason; nothing written.
    mm = ModelMemory(bt.mem)
    batch = bt.model.process_queue(0, mm)
    assert batch.needs_reset and not batch.completions and not mm.writes, \
        f"{case}: the model does not call the ring malformed: {batch}"
    assert reason in batch.error, f"{case}: the model's reason is {batch.error!r}, " \
                                  f"not {reason!r}"
    assert bt.model.device_status & rm.STATUS_DEVICE_NEEDS_RESET

    before = dict(cfg=drv.config_changes, msi=sb.msi_writes)
    start = bt.cycles()
    await drv.drv.notify(0)
    while drv.config_changes == before["cfg"]:
        assert bt.cycles() - start < IRQ_TIMEOUT_CYCLES, \
            f"{case}: no configuration change notification {IRQ_TIMEOUT_CYCLES} cycles after " \
            f"the doorbell (used idx {vq.used_idx}, interrupts {drv.interrupts})"
        await ClockCycles(dut.clk, 8)
    irq_cycles = bt.cycles() - start
    # [VIRTIO-1.2 2.1.2] Broken: from here on no host memory access until reset, the fence
    # takes every DMA as an error.
    fence.closed = True
    quiet = (sb.dma_reads, sb.dma_writes, sb.msi_writes)
    assert sb.msi_writes - before["msi"] == 1 and set(drv.interrupts) == {"msix0"}, \
        f"{case}: {sb.msi_writes - before['msi']} MSI-X messages, by vector {drv.interrupts}; " \
        f"want only the configuration change one"
    status = await drv.drv.status()
    assert status == rm.STATUS_DEVICE_NEEDS_RESET | 0x0f, \
        f"{case}: device_status {status:#04x} after the configuration change notification"
    # [VIRTIO-1.2 4.1.4.5.1] The Device Configuration Interrupt bit of the ISR is set before
    # the notification, MSI-X or not (the model sets it too; the scoreboard compares).
    isr = await drv.drv.read(rm.VIRTIO_PCI_CAP_ISR_CFG, 0, 1)
    assert isr & 2, f"{case}: ISR status {isr:#04x}, the configuration change bit is clear"
    for q in range(len(drv.vqs)):
        await drv.drv.notify(q)         # doorbells on a broken device change nothing
    await ClockCycles(dut.clk, HALT_CYCLES)
    assert (sb.dma_reads, sb.dma_writes, sb.msi_writes) == quiet, \
        f"{case}: the broken device accessed host memory: DMA reads {quiet[0]} -> " \
        f"{sb.dma_reads}, writes {quiet[1]} -> {sb.dma_writes}, MSI-X {quiet[2]} -> " \
        f"{sb.msi_writes}"
    assert [v.used_idx for v in drv.vqs] == [0] * len(drv.vqs) and not r.untouched(), \
        f"{case}: the device completed something: used idx {[v.used_idx for v in drv.vqs]}, " \
        f"written buffers {r.untouched()}"
    # The model, notified again, serves nothing either (it stays broken until reset).
    again = bt.model.process_queue(0, ModelMemory(bt.mem))
    assert not again.completions and bt.model.device_status & rm.STATUS_DEVICE_NEEDS_RESET
    log.info("malformed ring, %s: model: %s; DUT: DEVICE_NEEDS_RESET (device_status %#04x), "
             "configuration change MSI-X %d cycles after the doorbell (ISR %#04x), nothing "
             "completed%s, no DMA or MSI-X in the next %d cycles despite doorbells on every "
             "queue", case, batch.error, status, irq_cycles, isr,
             " (nor the good FLUSH behind it)" if tail is not None else "",
             bt.cycles() - start - irq_cycles)

    # [VIRTIO-1.2 4.1.4.3.2] Reset: write 0, wait until device_status reads 0; then initialise
    # again, and the device works.
    await drv.close()
    await drv.drv.reset()
    assert await drv.drv.status() == 0
    fence.regions.clear()
    await bt.reinit(queue_size=QSIZE)
    fence.rings(drv.vqs)
    fence.closed = False
    _fence_submissions(bt, fence)
    await _round_trip(bt)
    log.info("malformed ring, %s: reset, initialised again, write + read back OK", case)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(where=["ring", "indirect"], stalls=STALLS)
async def malformed_loop(dut, where, stalls):
    """Case 1: a chain whose ``next`` points back at an earlier descriptor
    [VIRTIO-1.2 2.7.5.2]."""
    await _malformed(dut, stalls, f"loop in the {where}", _loop, where)


@cocotb.test()
@cocotb.parametrize(where=["ring", "indirect"], stalls=STALLS)
async def malformed_chain_too_long(dut, where, stalls):
    """Case 2: a chain visiting more descriptors than its table holds, cycling back to a
    descriptor after the head [VIRTIO-1.2 2.7.5.2, 2.7.5.3.1]."""
    await _malformed(dut, stalls, f"chain longer than the {where} table", _chain_too_long, where)


@cocotb.test()
@cocotb.parametrize(where=["ring", "indirect"], stalls=STALLS)
async def malformed_next_out_of_range(dut, where, stalls):
    """Case 3: ``next`` not below the table size [VIRTIO-1.2 2.7.5]."""
    await _malformed(dut, stalls, f"next out of range in the {where}", _next_out_of_range, where)


@cocotb.test()
@cocotb.parametrize(head=[QSIZE, 0xffff], stalls=STALLS)
async def malformed_head_out_of_range(dut, head, stalls):
    """Case 4: an available ring entry not below the queue size [VIRTIO-1.2 2.7.6]."""
    await _malformed(dut, stalls, f"head {head}", _head_out_of_range, head)


@cocotb.test()
@cocotb.parametrize(ahead=[QSIZE + 1, 0xffff], stalls=STALLS)
async def malformed_avail_idx_ahead(dut, ahead, stalls):
    """Case 5: ``avail->idx`` more than the queue size ahead of the device [VIRTIO-1.2
    2.7.13.3]."""
    await _malformed(dut, stalls, f"avail idx {ahead} ahead", _avail_idx_ahead, ahead)


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def malformed_indirect_with_next(dut, stalls):
    """Case 6: INDIRECT and NEXT in one descriptor [VIRTIO-1.2 2.7.5.3.1]."""
    await _malformed(dut, stalls, "INDIRECT with NEXT", _indirect_with_next, None)


@cocotb.test()
@cocotb.parametrize(position=_named("first", "after_buffer"), stalls=STALLS)
async def malformed_nested_indirect(dut, position, stalls):
    """Case 7: INDIRECT inside an indirect table, as its first entry or after a buffer
    [VIRTIO-1.2 2.7.5.3.1]."""
    await _malformed(dut, stalls, f"nested indirect ({position.name})", _nested_indirect,
                     position.name)


@cocotb.test()
@cocotb.parametrize(length=[24, 0], stalls=STALLS)
async def malformed_indirect_length(dut, length, stalls):
    """Case 8: an indirect table whose length is not a positive multiple of 16
    [VIRTIO-1.2 2.7.5.3]."""
    await _malformed(dut, stalls, f"indirect table of {length} bytes", _indirect_length, length)


@cocotb.test()
@cocotb.parametrize(lengths=["nonempty", "empty"], stalls=STALLS)
async def malformed_readable_after_writable(dut, lengths, stalls):
    """Case 9: a device-readable descriptor after a device-writable one, also when both are
    empty [VIRTIO-1.2 2.7.4.2]."""
    await _malformed(dut, stalls, f"readable after writable ({lengths})", _readable_after_writable,
                     lengths)


@cocotb.test()
@cocotb.parametrize(variant=_named("no_header", "short_header", "header_writable",
                                  "status_readable", "status_zero_length"), stalls=STALLS)
async def malformed_header_status(dut, variant, stalls):
    """Case 10: no room for the 16-byte header among the device-readable bytes, or no
    device-writable byte for the status [VIRTIO-1.2 5.2.6]: the model calls every one of these
    malformed (DEVICE_NEEDS_RESET), none completes with IOERR."""
    await _malformed(dut, stalls, variant.name.replace("_", " "), _header_status, variant.name)


# -- bad content -----------------------------------------------------------------------------------

def _split(total, n):
    """``n`` lengths summing to ``total``, as equal as can be."""
    return tuple(total // n + (k < total % n) for k in range(n))


async def _bad_content(dut, stalls, family, cases, **init_kw):
    """Submit each case ``(label, type, sector, out, in_len, layout, want)``, one at a time;
    check the status the case requires (the data path has compared the rest with the model),
    then that the device still serves a write and a read."""
    bt, _ = await _start(dut, stalls, **init_kw)
    drv = bt.drv
    for label, typ, sector, out, in_len, layout, want in cases:
        req = await _request(drv, typ, sector, out, in_len, layout)
        assert req.status == want, f"{family}, {label}: status {req.status}, want {want}"
        assert bt.mismatches == 0, f"{family}, {label}: the DUT differs from the model"
        bt.log.info("%s, %s: status %s as the model and the spec say (used len %d)", family,
                    label, {OK: "OK", IOERR: "IOERR", UNSUPP: "UNSUPP"}[req.status],
                    req.used_len)
    await _round_trip(bt)
    bt.log.info("%s: the device still serves requests: write + read back OK", family)
    await bt.finish()
    return bt


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_data_length(dut, stalls):
    """Case 11: IN / OUT data not a multiple of 512 bytes [VIRTIO-1.2 5.2.6.1] -> IOERR."""
    await _bad_content(dut, stalls, "data length not a multiple of 512", [
        ("read of 100 bytes", T_IN, 0, b"", 100, None, IOERR),
        ("read of 513 bytes", T_IN, 0, b"", 513, None, IOERR),
        ("write of 700 bytes", T_OUT, 0, bytes(range(256)) * 2 + bytes(188), 0, None, IOERR),
        ("write of 511 bytes", T_OUT, 0, bytes(511), 0, None, IOERR),
    ])


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_sector_range(dut, stalls):
    """Case 12: sectors beyond the capacity, and sector + count wrapping 2**64
    [VIRTIO-1.2 5.2.6.1] -> IOERR; the last sector itself -> OK."""
    cap = VARIANTS[dut._name].capacity
    top = 1 << 64
    await _bad_content(dut, stalls, "sector range", [
        ("read of the last sector", T_IN, cap - 1, b"", 512, None, OK),
        ("read across the end", T_IN, cap - 1, b"", 1024, None, IOERR),
        ("write at the capacity", T_OUT, cap, bytes(512), 0, None, IOERR),
        ("read at 2**64-1 (sector + count = 2**64)", T_IN, top - 1, b"", 512, None, IOERR),
        ("write at 2**64-4 of 8 sectors (sum wraps to 4)", T_OUT, top - 4, bytes(4096), 0,
         None, IOERR),
        ("discard at 2**64-1 of 2 sectors (wraps)", rm.VIRTIO_BLK_T_DISCARD, 0,
         discard_segment(top - 1, 2), 0, None, IOERR),
        ("write zeroes at the capacity", rm.VIRTIO_BLK_T_WRITE_ZEROES, 0,
         discard_segment(cap, 1), 0, None, IOERR),
    ])


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_request_type(dut, stalls):
    """Case 13: unknown request types, and known ones with the high bit set
    [VIRTIO-1.2 5.2.6] -> UNSUPP, nothing read or written."""
    await _bad_content(dut, stalls, "request type", [
        ("type 2", 2, 0, b"", 0, None, UNSUPP),
        ("type 3 with data", 3, 0, bytes(512), 512, None, UNSUPP),
        ("type 0x7fffffff", 0x7fffffff, 0, b"", 0, None, UNSUPP),
        ("IN | 0x80000000", 0x80000000 | T_IN, 0, b"", 512, None, UNSUPP),
        ("OUT | 0x80000000", 0x80000000 | T_OUT, 0, bytes([0x5a]) * 512, 0, None, UNSUPP),
        ("FLUSH | 0x80000000", 0x80000000 | T_FLUSH, 0, b"", 0, None, UNSUPP),
        ("GET_ID | 0x80000000", 0x80000000 | rm.VIRTIO_BLK_T_GET_ID, 0, b"", 20, None,
         UNSUPP),
    ])


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_zero_length_descriptors(dut, stalls):
    """Case 14: zero-length descriptors anywhere in a chain. Not malformed for the model
    (framing is free [VIRTIO-1.2 2.7.4]; they only count towards seg_max + 2): the requests
    complete OK and move the right data."""
    data = bytes(range(256)) * 4
    bt = await _bad_content(dut, stalls, "zero-length descriptors", [
        ("write, empty data descriptors", T_OUT, 16, data, 0,
         Layout((16, 0, 512, 0, 512), (0, 1)), OK),
        ("read, empty descriptors around data and status", T_IN, 16, b"", 1024,
         Layout((0, 16), (0, 512, 0, 512, 0, 1)), OK),
        ("read, status byte before an empty last descriptor", T_IN, 16, b"", 512,
         Layout((16,), (512, 1, 0)), OK),
        ("read of 0 bytes into an empty data descriptor", T_IN, 16, b"", 0,
         Layout((16,), (0, 1)), OK),
        ("flush, header split by empty descriptors", T_FLUSH, 0, b"", 0,
         Layout((0, 8, 0, 8, 0), (1,)), OK),
        ("indirect read with empty entries", T_IN, 16, b"", 1024,
         Layout((16, 0), (512, 0, 512, 1), indirect=True), OK),
    ])
    assert bytes(bt.image[16 * SECTOR:18 * SECTOR]) == data, \
        "the write with empty descriptors did not put its data on the disk"


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_too_many_descriptors(dut, stalls):
    """Case 15: more than seg_max + 2 descriptors (seg_max 126 on this build): the model's choice
    [VIRTIO-1.2 2.7.4.1] is IOERR without executing; exactly seg_max + 2 is served."""
    limit = VARIANTS[dut._name].seg_max + 2
    over = limit + 1
    data = bytes(range(256)) * 2
    await _bad_content(dut, stalls, "descriptors beyond seg_max + 2", [
        (f"write in {limit} descriptors", T_OUT, 24, data, 0,
         Layout((16,) + _split(512, limit - 2), (1,)), OK),
        (f"write in {over} descriptors", T_OUT, 32, bytes([0x77]) * 512, 0,
         Layout((16,) + _split(512, over - 2), (1,)), IOERR),
        (f"read in {over} descriptors", T_IN, 24, b"", 512,
         Layout((16,), _split(512, over - 2) + (1,)), IOERR),
        (f"read in {over} indirect descriptors", T_IN, 24, b"", 512,
         Layout((16,), _split(512, over - 2) + (1,), indirect=True), IOERR),
        (f"read in {limit} descriptors and an empty one", T_IN, 24, b"", 512,
         Layout((16,), _split(512, limit - 2) + (1, 0)), IOERR),
    ])


# -- register writes a driver must not make ---------------------------------------------------------

async def _setup_until_queue(bt):
    """Reset, then Linux's steps up to a queue's configuration: ACKNOWLEDGE, DRIVER, features,
    FEATURES_OK [VIRTIO-1.2 3.1.1]; queue 0 selected. Returns the transport."""
    t = bt.drv.drv
    await bt.drv.close()
    assert await t.negotiate(bt.drv.features), "the device refused the features it offered"
    await t.common_write("queue_select", 0)
    return t


@cocotb.test()
@cocotb.parametrize(case=_named("size_not_power_of_2", "size_zero", "size_too_big",
                                "desc_misaligned", "avail_misaligned", "used_misaligned"),
                    stalls=[False])
async def bad_queue_enable(dut, case, stalls):
    """queue_enable with a size that is not a power of two up to the maximum, or a ring not at
    its alignment [VIRTIO-1.2 2.7, 4.1.4.3.2]: the queue stays disabled, the device sets
    DEVICE_NEEDS_RESET [VIRTIO-1.2 2.1.2], and a doorbell for it starts no DMA. A reset brings
    it back."""
    bt, fence = await _start(dut, stalls)
    sb, log = bt.tb.scoreboard, bt.log
    t = await _setup_until_queue(bt)
    maximum = bt.params.max_queue_size
    desc = bt.mem.alloc(16 * maximum + 16, 16)
    avail = bt.mem.alloc(6 + 2 * maximum + 2, 2)
    used = bt.mem.alloc(6 + 8 * maximum + 4, 4)
    size = {"size_not_power_of_2": 12, "size_zero": 0, "size_too_big": 2 * maximum}.get(
        case.name, 16)
    desc += 8 if case.name == "desc_misaligned" else 0
    avail += 1 if case.name == "avail_misaligned" else 0
    used += 2 if case.name == "used_misaligned" else 0
    await t.common_write("queue_size", size)
    for name, addr in (("queue_desc", desc), ("queue_driver", avail), ("queue_device", used)):
        await t.common_write(name, addr)
    await t.common_write("queue_enable", 1)
    enabled = await t.common_read("queue_enable")
    status = await t.common_read("device_status")
    assert enabled == 0, f"{case.name}: queue_enable reads {enabled}"
    assert status & rm.STATUS_DEVICE_NEEDS_RESET, f"{case.name}: device_status {status:#04x}"
    await t.add_status(rm.STATUS_DRIVER_OK)
    quiet = (sb.dma_reads, sb.dma_writes)
    await t.notify(0)
    await ClockCycles(dut.clk, HALT_CYCLES)
    assert (sb.dma_reads, sb.dma_writes) == quiet, f"{case.name}: DMA for a refused queue"
    log.info("bad register write, queue_enable with %s (size %d, rings %#x/%#x/%#x): refused, "
             "device_status %#04x (DEVICE_NEEDS_RESET), no DMA after a doorbell", case.name,
             size, desc, avail, used, status)
    await t.reset()
    await bt.reinit()
    _fence_submissions(bt, fence)
    fence.rings(bt.drv.vqs)
    await _round_trip(bt)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(case=_named("queue_after_enable", "status_bits_cleared",
                                "features_after_ok", "read_only_fields"),
                    stalls=[False])
async def bad_register_phase(dut, case, stalls):
    """Register writes in the wrong device_status phase [VIRTIO-1.2 3.1.1, 4.1.4.3.2, 2.1.1]:
    an enabled queue's size and ring addresses, clearing status bits, driver features after
    FEATURES_OK, and read-only fields are all ignored (the scoreboard compares every read with
    the model); the device goes on serving requests on the rings it was given."""
    bt, fence = await _start(dut, stalls)
    t, log = bt.drv.drv, bt.log
    vq = bt.drv.vqs[0]
    if case.name == "queue_after_enable":
        await t.common_write("queue_select", 0)
        junk = bt.mem.alloc(4096, 16)           # never fenced: DMA there fails the test
        for name in ("queue_desc", "queue_driver", "queue_device"):
            await t.common_write(name, junk)
        await t.common_write("queue_size", vq.size // 2)
        got = [await t.common_read(n) for n in ("queue_desc", "queue_driver", "queue_device",
                                                "queue_size")]
        assert got == [vq.desc_addr, vq.avail_addr, vq.used_addr, vq.size], \
            f"an enabled queue's configuration changed: {got}"
    elif case.name == "status_bits_cleared":
        await t.common_write("device_status", rm.STATUS_ACKNOWLEDGE)
        status = await t.common_read("device_status")
        assert status == 0x0f, f"device_status {status:#04x} after a write clearing bits"
    elif case.name == "features_after_ok":
        before = bt.drv.features
        got = 0
        for sel in (0, 1):
            await t.common_write("driver_feature_select", sel)
            await t.common_write("driver_feature", 0)
            got |= await t.common_read("driver_feature") << 32 * sel
        assert got == before == bt.model.driver_features, \
            f"driver features {got:#x} after writes past FEATURES_OK, negotiated {before:#x}"
    else:
        offered = bt.params.offered_features
        await t.common_write("num_queues", 7)
        await t.common_write("device_feature_select", 0)
        await t.common_write("device_feature", 0)
        await t.common_write("queue_select", 0)
        notify_off = await t.common_read("queue_notify_off")
        await t.common_write("queue_notify_off", notify_off + 5)
        await t.write(rm.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4, 0xffffffff)    # capacity is RO
        assert await t.common_read("num_queues") == bt.params.num_queues
        assert await t.common_read("device_feature") == offered & 0xffffffff
        assert await t.common_read("queue_notify_off") == notify_off
        assert await t.read(rm.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4) == \
            bt.params.capacity & 0xffffffff
    log.info("bad register write, %s: ignored; the device goes on", case.name)
    await _round_trip(bt)
    await bt.finish()
