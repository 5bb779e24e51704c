# Ref: PCIe Base 3.0 sections 2.3.2 (completion status), 2.7.2 (poisoned TLPs), 2.8 (completion
#      timeout); OASIS virtio 1.2 sections 2.1.2 (DEVICE_NEEDS_RESET), 5.2.6 (request status)
"""DMA faults: the host answers one of the DUT's memory reads with Unsupported Request,
Completer Abort, a poisoned completion, or not at all (completion timeout).

The testbench's shim injects the fault (``TlpShim.dma_fault``). What the device must do depends
on what the read was for:

* **a request buffer** (here: OUT data): the request completes with ``VIRTIO_BLK_S_IOERR``
  [VIRTIO-1.2 5.2.6] and the device goes on serving requests. What reached the disk for that
  request is undefined (the failed part reads as zeros), so the model's disk takes the DUT's
  for its sectors; every other sector must still match;
* **the ring** (here: the ``avail`` header read after a doorbell): the device cannot trust
  its view of the ring, so it sets DEVICE_NEEDS_RESET, sends a configuration change
  notification, and touches no host memory until reset [VIRTIO-1.2 2.1.2]; the driver resets
  it and it works again.

The model cannot see link faults, so the test tells it the outcome the spec requires (an IOERR
status for the request; DEVICE_NEEDS_RESET and the ISR configuration bit for the device) and
the scoreboard then compares as usual. Every test checks that the fault was injected, fences
DMA to the driver's allocations, and prints ``fault: ...`` lines.
"""

import enum

import cocotb
from cocotb.triggers import ClockCycles

from model import regmap as rm
from .blk_bench import BlkTB
from .cocotb_reset import _allowed
from .cocotb_robust import _round_trip as robust_round_trip


SECTOR = rm.BLK_SECTOR_BYTES
STALLS = [False, True]
KINDS = ["ur", "ca", "poisoned", "timeout"]
HALT_CYCLES = 500


class _Target(enum.Enum):
    buffer = "buffer"
    ring = "ring"


def _arm(bt, kind, inside):
    """Fault the first DUT read that ``inside(addr)`` accepts; returns the list the injected
    reads go into."""
    sb, shim = bt.tb.scoreboard, bt.tb.shim
    hit = []

    def fault(tlp):
        if hit or not inside(tlp.address):
            return None
        hit.append(tlp)
        if kind == "timeout":
            # The read is dropped on purpose: the DUT's timer ends it [PCIe-3.0 2.8].
            sb.expect_timeouts = True
            sb.abandon(tlp.tag)
        return kind
    shim.dma_fault = fault
    return hit


async def _round_trip(bt, rng):
    """A write and read back at a random place (:func:`tb.cocotb_robust._round_trip`)."""
    await robust_round_trip(bt, sector=rng.randrange(bt.params.capacity - 8))


async def _buffer_fault(bt, kind, rng):
    drv = bt.drv
    nsec = 16
    sector = rng.randrange(bt.params.capacity - nsec)
    data = rng.randbytes(nsec * SECTOR)
    req = await drv.submit(0, *drv.core.write_args(sector, data))
    # The data buffers (the header is the first readable piece of the simple layout).
    spans = [(a, a + n) for a, n in req.readable[1:]]
    hit = _arm(bt, kind, lambda addr: any(lo <= addr < hi for lo, hi in spans))
    # [VIRTIO-1.2 5.2.6] The request fails with IOERR; the model (blind to the link) said OK.
    used_len, _, rest = req.expected
    req.expected = (used_len, rm.VIRTIO_BLK_S_IOERR, rest)
    await drv.wait(req, timeout_ns=2_000_000)
    assert hit, f"{kind}: no read of the request's data buffers to fault"
    assert req.status == rm.VIRTIO_BLK_S_IOERR, \
        f"{kind} on an OUT data read: status {req.status}, want IOERR"
    lo, hi = sector * SECTOR, (sector + nsec) * SECTOR
    bt.model.blk.disk[lo:hi] = bt.image[lo:hi]
    bt.log.info("fault: %s on a read of OUT data at %#x -> the request completed IOERR; the "
                "device goes on", kind, hit[0].address)
    await _round_trip(bt, rng)


async def _ring_fault(bt, kind, rng, **init_kw):
    drv = bt.drv
    sb = bt.tb.scoreboard
    vq = drv.vqs[0]
    avail = vq.avail_addr
    hit = _arm(bt, kind, lambda addr: avail <= addr < avail + 4)
    nsec = 8
    sector = rng.randrange(bt.params.capacity - nsec)
    lo, hi = sector * SECTOR, (sector + nsec) * SECTOR
    before = bytes(bt.model.blk.disk[lo:hi])
    configs = drv.config_changes
    req = await drv.submit(0, *drv.core.write_args(sector, rng.randbytes(nsec * SECTOR)))
    req.expected = None            # never completes
    # [VIRTIO-1.2 2.1.2] What the spec requires, told to the model, which cannot see the link.
    bt.model.device_status |= rm.STATUS_DEVICE_NEEDS_RESET
    bt.model.isr |= 2
    t0 = bt.cycles()
    while drv.config_changes == configs:
        await ClockCycles(bt.dut.clk, 50)
        assert bt.cycles() - t0 < bt.params.completion_timeout + 20_000, \
            f"{kind} on the avail ring read: no configuration change notification"
    assert hit, f"{kind}: no read of the avail ring to fault"
    status = await drv.drv.status()
    assert status & rm.STATUS_DEVICE_NEEDS_RESET, \
        f"{kind} on the avail ring read: device_status {status:#04x}"
    quiet = (sb.dma_reads, sb.dma_writes, sb.msi_writes)
    await drv.drv.notify(0)
    await ClockCycles(bt.dut.clk, HALT_CYCLES)
    assert (sb.dma_reads, sb.dma_writes, sb.msi_writes) == quiet, \
        f"{kind}: the broken device accessed host memory"
    assert not req.done and bytes(bt.image[lo:hi]) == before, \
        f"{kind}: the request behind the failed ring read was served"
    bt.log.info("fault: %s on the avail ring read -> DEVICE_NEEDS_RESET (device_status %#04x), "
                "configuration change notification after %d cycles, no DMA after", kind,
                status, bt.cycles() - t0)
    # Reset, as Linux does after NEEDS_RESET; the request is dropped, its sectors unchanged.
    await drv.drv.reset()
    await drv.close()
    for base in req.allocations:
        drv.mem.free(base)
    bt.model.blk.disk[lo:hi] = before
    await bt.reinit(**init_kw)
    await _round_trip(bt, rng)


@cocotb.test()
@cocotb.parametrize(kind=KINDS, target=list(_Target), stalls=STALLS)
async def dma_fault(dut, kind, target, stalls):
    """One read of the DUT answered with UR, CA, poisoned data or nothing; on a request
    buffer: IOERR and the device goes on; on the ring: DEVICE_NEEDS_RESET, reset, recovery."""
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    await bt.start()
    bt.tb.scoreboard.dma_allowed = _allowed(bt.mem)
    await _round_trip(bt, rng)
    if target is _Target.buffer:
        await _buffer_fault(bt, kind, rng)
    else:
        await _ring_fault(bt, kind, rng)
    assert len(bt.tb.shim.faults) == 1, f"{len(bt.tb.shim.faults)} faults injected, want 1"
    await bt.finish()
