# Ref: OASIS virtio 1.2 sections 2.4 (Device Reset), 4.1.4.3.2; PCIe Base 3.0 section 6.6.2 (FLR)
"""Resets at any moment: ``device_status = 0`` and Function Level Reset with requests in flight.

Each round puts a random mix of requests in flight, waits a random time and resets the device
the way Linux does (``vp_reset``: write 0, poll until ``device_status`` reads 0; or
``pci_reset_function``: save config, FLR, restore), then checks:

* the reset finishes (``device_status`` reads 0) within a bound, and from then on the DUT sends
  nothing upstream: no DMA, no MSI-X, until the driver sets DRIVER_OK again;
* the DUT never touched memory other than the rings and buffers the driver had given it (the
  scoreboard's ``dma_allowed``), and never after they were freed;
* every request the driver saw complete was compared with the golden model as usual; a write
  still in flight at the reset has, sector by sector, the old or the new content on the disk
  (or zeros after an FLR, whose Bus Master Enable clear turns outstanding reads into zeros);
  the model's disk takes over what the DUT left, and at the end the whole disk must equal it:
  no acknowledged write is lost, nothing else changed;
* the device comes back: the driver re-initialises it and the next round runs.

``SEED`` replays a run.
"""

import cocotb
from cocotb.triggers import ClockCycles

from cocotbext.pcie.core.caps import PciCapId

from model import regmap as rm
from .blk_bench import BlkTB
from .cocotb_blk import _random_request, STALLS


SECTOR = rm.BLK_SECTOR_BYTES
ROUNDS = 4
# Bound on the drain after a reset: the longest data transfer that may be under way (128 KiB)
# at the slowest (stalls on every stream), with margin.
RESET_BOUND_CYCLES = 60_000


def _allowed(mem):
    """DMA may only touch host memory the driver holds allocated (rings and request buffers)."""
    def check(addr, n, is_write):
        for base, size in mem._allocs.items():
            if base <= addr and addr + max(n, 1) <= base + size:
                return True
        return False
    return check


async def _flr(bt):
    """Linux ``pci_reset_function``: save the configuration software programmed, Initiate FLR,
    wait, restore it [PCIe-3.0 6.6.2]."""
    pci = bt.tb.pci
    saved = {off: await pci.config_read_dword(off) for off in (0x04, 0x10, 0x14)}
    devctl = await pci.capability_read_word(PciCapId.EXP, 0x08)
    await pci.capability_write_word(PciCapId.EXP, 0x08, devctl | rm.DEVCTL_INITIATE_FLR)
    # [PCIe-3.0 6.6.2] Software waits (100 ms on hardware) before touching the function; the
    # configuration space is usable at once here, the virtio part finishes when drained.
    await ClockCycles(bt.dut.clk, 100)
    after = await pci.capability_read_word(PciCapId.EXP, 0x08)
    assert not after & rm.DEVCTL_INITIATE_FLR, "Initiate FLR reads back 1"
    assert await pci.config_read_dword(0x04) & 0x7 == 0, \
        "Command (MSE, BME) not cleared by the FLR"
    await pci.capability_write_word(PciCapId.EXP, 0x08, devctl)
    for off in (0x10, 0x14):
        await pci.config_write_dword(off, saved[off])
    # Memory Space only: Bus Master Enable stays clear until the virtio reset has finished
    # (Linux's pci_reset_function disables the device around the FLR); the caller polls
    # device_status, then restore_master() sets it again.
    await pci.config_write_dword(0x04, saved[0x04] & ~rm.CMD_BUS_MASTER)
    # The MSI-X table went back to reset: the driver sets it up again.
    pci.msix_enabled = False
    return saved[0x04]


async def _reset_round(bt, rng, how, rnd, **init_kw):
    drv = bt.drv
    p = bt.params
    sb = bt.tb.scoreboard
    nq = len(drv.vqs)
    busy, inflight, old = [], [], {}
    depth = rng.choice([1, 4, 16, 32])
    for _ in range(depth):
        choice = _random_request(rng, drv, p.capacity, [b[:3] for b in busy])
        if choice is None:
            continue
        typ, sector, out, in_len, span, writes = choice
        q = rng.randrange(nq)
        layout = drv.random_layout(rng, len(out), in_len, q=q)
        if writes:
            lo, hi = span
            before = bytes(bt.model.blk.disk[lo * SECTOR:hi * SECTOR])
        req = await drv.submit(q, typ, sector, out, in_len, layout)
        inflight.append(req)
        if span is not None:
            busy.append((span[0], span[1], writes, req))
            if writes:
                old[id(req)] = (span, before)
    delay = rng.choice([0, 10, 100, rng.randrange(1, 20_000)])
    await ClockCycles(bt.dut.clk, delay)
    bt.log.info("reset round %d: %s with %d of %d requests in flight, after %d cycles",
                rnd, how, sum(not r.done for r in inflight), len(inflight), delay)

    t0 = bt.cycles()
    command = await _flr(bt) if how == "flr" else None
    polls = 0
    transport = drv.drv
    if how == "device_status":
        await transport.common_write("device_status", 0)
    while await transport.status() != 0:
        polls += 1
        assert bt.cycles() - t0 < RESET_BOUND_CYCLES, \
            f"device_status still not 0 {RESET_BOUND_CYCLES} cycles after the reset"
    took = bt.cycles() - t0
    if command is not None:
        await bt.tb.pci.config_write_dword(0x04, command)      # Bus Master Enable again
    counts = (sb.dma_reads, sb.dma_writes, sb.msi_writes)
    await ClockCycles(bt.dut.clk, 2000)
    assert (sb.dma_reads, sb.dma_writes, sb.msi_writes) == counts, \
        f"the DUT sent DMA or MSI-X after the reset had finished: {counts} -> " \
        f"{(sb.dma_reads, sb.dma_writes, sb.msi_writes)}"
    bt.log.info("reset round %d: %s finished after %d cycles (%d polls of device_status); "
                "no DMA or MSI-X in the 2000 cycles after", rnd, how, took, polls)

    # Like Linux (vp_reset, then del_vqs): the rings are freed only after the reset.
    pending = [r for r in inflight if not r.done]
    await drv.close()

    # Requests the driver never saw complete: their buffers go back, and a write among them
    # left each sector old or new (or zero after an FLR). The model's disk follows the DUT's.
    disk = bt.model.blk.disk
    torn = 0
    for req in pending:
        for base in req.allocations:
            bt.drv.mem.free(base)
        req.allocations = []
        if id(req) not in old:
            continue
        (lo, hi), before = old[id(req)]
        for s in range(lo, hi):
            got = bytes(bt.image[s * SECTOR:(s + 1) * SECTOR])
            k = (s - lo) * SECTOR
            choices = [before[k:k + SECTOR], bytes(disk[s * SECTOR:(s + 1) * SECTOR])]
            if how == "flr":
                choices.append(bytes(SECTOR))
            if how == "flr" and got not in choices:
                # Cut mid-sector: the data before the FLR, zeros after it.
                assert all(g in (o, n, 0) for g, o, n in zip(got, choices[0], choices[1])), \
                    f"sector {s} of unfinished {req}: bytes neither old, new nor zero"
            else:
                assert got in choices, f"sector {s} of unfinished {req} is neither its old " \
                                       f"nor its new content"
            torn += got != choices[1]
            disk[s * SECTOR:(s + 1) * SECTOR] = got
    bt.log.info("reset round %d: %d unfinished requests dropped, %d sectors of unfinished "
                "writes not written", rnd, len(pending), torn)
    await bt.reinit(**init_kw)
    return len(inflight), len(pending)


async def _reset_test(dut, stalls, how):
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    await bt.start()
    bt.tb.scoreboard.dma_allowed = _allowed(bt.mem)
    dropped = 0
    for rnd in range(ROUNDS):
        dropped += (await _reset_round(bt, rng, how, rnd))[1]
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
