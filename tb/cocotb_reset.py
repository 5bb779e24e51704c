# Ref: OASIS virtio 1.2 sections 2.4 (Device Reset), 4.1.4.3.2; PCIe Base 3.0 section 6.6.2 (FLR)
"""Resets at any moment: ``device_status = 0`` and Function Level Reset with requests in flight.

Each test runs :data:`ROUNDS` rounds of :func:`tb.scenario.reset_round`: a random mix of
requests in flight, a random wait, a reset the way Linux does it (``vp_reset``: write 0, poll
until ``device_status`` reads 0; or ``pci_reset_function``: save config, FLR, restore), then:

* the reset finishes within a bound, and from then on the DUT sends nothing upstream: no DMA,
  no MSI-X, until the driver sets DRIVER_OK again;
* the DUT never touched memory other than the rings and buffers the driver had given it (the
  DMA fence), and never after they were freed;
* every request the driver saw complete was compared with the golden model as usual; a write
  still in flight at the reset has, sector by sector, the old or the new content on the disk
  (or zeros after an FLR); the model's disk takes over what the DUT left, and at the end the
  whole disk must equal it: no acknowledged write is lost, nothing else changed;
* the device comes back: the driver re-initialises it and the next round runs.

``SEED`` replays a run.
"""

import cocotb

from model import regmap as rm
from .blk_testbench import BlkTB
from .scenario import STALLS, SECTOR, reset_round


ROUNDS = 4


async def _reset_test(dut, stalls, how):
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    await bt.start()
    dropped = 0
    for rnd in range(ROUNDS):
        dropped += (await reset_round(bt, rng, how, rnd))[1]
    # The device works after the last reset: a write and read back through it.
    data = rng.randbytes(8 * SECTOR)
    sector = rng.randrange(bt.params.capacity - 8)
    assert await bt.drv.write(sector, data) == rm.VIRTIO_BLK_S_OK
    status, got = await bt.drv.read(sector, 8)
    assert status == rm.VIRTIO_BLK_S_OK and got == data, "read back after the resets differs"
    bt.log.info("%s: %d resets, %d requests dropped in flight, the device works after",
                how, ROUNDS, dropped)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def reset_in_flight(dut, stalls):
    """Writing 0 to device_status with requests in flight [VIRTIO-1.2 2.4, 4.1.4.3.2]."""
    await _reset_test(dut, stalls, "device_status")


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def flr_in_flight(dut, stalls):
    """Function Level Reset with requests in flight [PCIe-3.0 6.6.2]."""
    await _reset_test(dut, stalls, "flr")
