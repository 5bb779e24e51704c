# Ref: PCIe Base 3.0 sections 2.3.2 (completion status), 2.7.2 (poisoned TLPs), 2.8 (completion
#      timeout); OASIS virtio 1.2 sections 2.1.2 (DEVICE_NEEDS_RESET), 5.2.6 (request status)
"""DMA faults: the host answers one of the DUT's memory reads with Unsupported Request,
Completer Abort, a poisoned completion, or not at all (completion timeout).

The testbench's shim injects the fault (``TlpShim.dma_fault``); :func:`tb.scenario.dma_fault_round`
says what the device must do, which depends on what the read was for:

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
the scoreboard then compares as usual. Every test checks that the fault was injected, runs
behind the DMA fence, and prints ``fault: ...`` lines.
"""

import enum

import cocotb

from .blk_testbench import BlkTB
from .scenario import STALLS, FAULT_KINDS, round_trip, dma_fault_round


class _Target(enum.Enum):
    buffer = "buffer"
    ring = "ring"


@cocotb.test()
@cocotb.parametrize(kind=FAULT_KINDS, target=list(_Target), stalls=STALLS)
async def dma_fault(dut, kind, target, stalls):
    """One read of the DUT answered with UR, CA, poisoned data or nothing; on a request
    buffer: IOERR and the device goes on; on the ring: DEVICE_NEEDS_RESET, reset, recovery."""
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    await bt.start()
    await round_trip(bt, sector=rng.randrange(bt.params.capacity - 8))
    await dma_fault_round(bt, kind, target.value, rng)
    assert len(bt.shim.faults) == 1, f"{len(bt.shim.faults)} faults injected, want 1"
    await bt.finish()
