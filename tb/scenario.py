# Ref: OASIS virtio 1.2 sections 2.1.2 (DEVICE_NEEDS_RESET), 2.4 and 4.1.4.3.2 (device reset),
#      4.1.4.5 (ISR status), 5.2.6 (block requests); PCIe Base 3.0 sections 2.3.2 (completion
#      status), 2.7.2 (poisoned TLPs), 2.8 (completion timeout), 6.6.2 (FLR)
"""The steps the cocotb tests are made of, each written once: the test modules
(``tb/cocotb_*.py``) are short lists of tests built from these, and the fuzz campaign draws
episodes from the same steps.

Every step takes a :class:`tb.blk_testbench.BlkTB` that has been started. Waits are bounded:
a step that waits for the device fails with a message saying what did not come, after how
long, instead of hanging.
"""

import os

from cocotb.triggers import with_timeout
from cocotbext.pcie.core.caps import PciCapId

from model import regmap as rm
from .blk_testbench import ModelMemory
from .malformed import RawRing, QSIZE
from .testbench import CLOCK_NS


__all__ = ["STALLS", "SECTOR", "QSIZE", "HALT_CYCLES", "FAULT_KINDS", "env_int", "pattern",
           "random_request", "submit_random", "request", "round_trip", "upstream_counts",
           "assert_quiet", "wait_config_change", "reset_device", "malformed_round", "flr",
           "reset_round", "dma_fault_round"]


# Every data-path test runs with and without random stalls on the TLP streams and the storage
# port (see tb.testbench.TB and tb.backend.StorageBackend).
STALLS = [False, True]
SECTOR = rm.BLK_SECTOR_BYTES
# How long a device that must be quiet is watched for host memory accesses and interrupts.
HALT_CYCLES = 500
# How long a configuration change notification may take after what causes it.
IRQ_TIMEOUT_CYCLES = 5000
# A single request of a robustness test completes within this.
REQUEST_TIMEOUT_NS = 200_000
# Bound on the drain after a reset: the longest data transfer that may be under way (128 KiB)
# at the slowest (stalls on every stream), with margin.
RESET_BOUND_CYCLES = 60_000
# The DMA faults the shim injects (tb.shim.TlpShim.dma_fault).
FAULT_KINDS = ["ur", "ca", "poisoned", "timeout"]


def env_int(name, default):
    """An integer from the environment (make exports unset variables as "")."""
    return int(os.environ.get(name) or default)


def pattern(sector, nbytes, salt=0):
    """Bytes that name their own sector and offset, so misplaced data is recognisable."""
    out = bytearray(nbytes)
    for k in range(0, nbytes, 8):
        s = sector + k // SECTOR
        out[k:k + 8] = ((s << 20 | (k % SECTOR) << 4 | salt & 0xf) & (1 << 64) - 1) \
            .to_bytes(8, "little")[:min(8, nbytes - k)]
    return bytes(out)


def random_request(rng, cap, busy):
    """A random request that touches no sector a request in flight writes (and writes none
    another reads): 40% OUT, 40% IN (512 B to 128 KiB), FLUSH, GET_ID, DISCARD, WRITE_ZEROES,
    and 4% with bad content (out of range, partial sector, unknown type). ``busy`` is a list
    of ``(lo, hi, writes)`` sector ranges in flight. Returns ``(type, sector, out, in_len,
    span, writes)``, ``span`` the sector range touched or None, or None if the draw collides."""
    roll = rng.random()
    nbytes = min(1 << rng.randrange(9, 18), cap * SECTOR)     # 512 B .. 128 KiB
    nsec = nbytes // SECTOR
    sector = rng.randrange(0, cap - nsec + 1)
    span = (sector, sector + nsec)
    if roll < 0.40:
        typ, out, in_len, writes = rm.VIRTIO_BLK_T_OUT, rng.randbytes(nbytes), 0, True
    elif roll < 0.80:
        typ, out, in_len, writes = rm.VIRTIO_BLK_T_IN, b"", nbytes, False
    elif roll < 0.84:
        typ, out, in_len, writes, span = rm.VIRTIO_BLK_T_FLUSH, b"", 0, False, None
    elif roll < 0.88:
        typ, out, in_len, writes, span = rm.VIRTIO_BLK_T_GET_ID, b"", rng.choice(
            [20, 20, 8, 64]), False, None
    elif roll < 0.93:
        typ = rng.choice([rm.VIRTIO_BLK_T_DISCARD, rm.VIRTIO_BLK_T_WRITE_ZEROES])
        out = sector.to_bytes(8, "little") + nsec.to_bytes(4, "little") + bytes(4)
        in_len, writes = 0, True
    elif roll < 0.97:
        # Bad content in a well-formed chain: out of range, partial sector, unknown type.
        kind = rng.randrange(3)
        if kind == 0:
            typ, sector, out, in_len = rm.VIRTIO_BLK_T_IN, cap - nsec + 1 + rng.randrange(
                4), b"", nbytes
        elif kind == 1:
            typ, out, in_len = rm.VIRTIO_BLK_T_OUT, rng.randbytes(rng.randrange(1, 512)), 0
        else:
            typ, out, in_len = rng.randrange(15, 1 << 32), b"", rng.randrange(0, 64)
        writes, span = False, None
    else:
        typ, out, in_len, writes, span = rm.VIRTIO_BLK_T_GET_ID, b"", 20, False, None
    if span is not None:
        for lo, hi, w in busy:
            if span[0] < hi and lo < span[1] and (w or writes):
                return None
    return typ, sector, out, in_len, span, writes


async def submit_random(bt, rng, busy, inflight):
    """Submit one :func:`random_request` on a random queue with a random layout, if the draw
    does not collide with ``busy`` (``[(lo, hi, writes, req)]``, extended here), and append
    it to ``inflight``. Returns the request, or None."""
    drv = bt.drv
    choice = random_request(rng, bt.params.capacity, [b[:3] for b in busy])
    if choice is None:
        return None
    typ, sector, out, in_len, span, writes = choice
    q = rng.randrange(len(drv.vqs))
    layout = drv.random_layout(rng, len(out), in_len, q=q)
    req = await drv.submit(q, typ, sector, out, in_len, layout)
    inflight.append(req)
    if span is not None:
        busy.append((span[0], span[1], writes, req))
    return req


async def request(drv, typ, sector=0, out=b"", in_len=0, layout=None, q=0,
                  timeout_ns=REQUEST_TIMEOUT_NS):
    """One request on queue ``q``, waited for at most ``timeout_ns``."""
    req = await drv.submit(q, typ, sector, out, in_len, layout)
    return await drv.wait(req, timeout_ns=timeout_ns)


async def round_trip(bt, sector=8, nsectors=8):
    """Write random sectors and read them back through the driver (each compared with the
    model as well): the device still serves requests."""
    drv = bt.drv
    data = bt.rng.randbytes(nsectors * SECTOR)
    w = await request(drv, *drv.core.write_args(sector, data))
    assert w.status == rm.VIRTIO_BLK_S_OK, f"write: status {w.status}"
    r = await request(drv, *drv.core.read_args(sector, nsectors))
    assert r.status == rm.VIRTIO_BLK_S_OK and r.data == data, \
        f"read back: status {r.status}, data {'matches' if r.data == data else 'differs'}"


def upstream_counts(bt):
    """``(DMA reads, DMA writes, MSI-X messages)`` the DUT has sent so far."""
    sb = bt.scoreboard
    return sb.dma_reads, sb.dma_writes, sb.msi_writes


async def assert_quiet(bt, cycles, what, before=None):
    """Watch the DUT for ``cycles`` cycles: it must send no DMA read or write and no MSI-X
    message (``before``: counts taken earlier, from :func:`upstream_counts`, to cover the time
    since then too)."""
    before = before or upstream_counts(bt)
    await bt.wait_cycles(cycles)
    after = upstream_counts(bt)
    assert after == before, \
        f"{what}: the DUT sent DMA or MSI-X when it must be quiet: reads {before[0]} -> " \
        f"{after[0]}, writes {before[1]} -> {after[1]}, MSI-X {before[2]} -> {after[2]}"


async def wait_config_change(bt, since, bound_cycles, what):
    """Wait until the driver has seen more than ``since`` configuration change notifications
    (``drv.config_changes``), at most ``bound_cycles``; returns the cycles it took."""
    drv = bt.drv
    start = bt.cycles()
    while drv.config_changes == since:
        left = bound_cycles - (bt.cycles() - start)
        assert left > 0, f"{what}: no configuration change notification within " \
                         f"{bound_cycles} cycles (interrupts {drv.interrupts})"
        drv.config_event.clear()
        try:
            await with_timeout(drv.config_event.wait(), left * CLOCK_NS, "ns")
        except TimeoutError:
            pass
    return bt.cycles() - start


async def reset_device(bt, write=True, since=None, bound_cycles=RESET_BOUND_CYCLES):
    """[VIRTIO-1.2 4.1.4.3.2] Write 0 to ``device_status`` (unless ``write`` is False: a reset
    already asked for, at cycle ``since``) and poll until it reads 0, within ``bound_cycles``;
    returns the polls it took."""
    t = bt.transport
    t0 = bt.cycles() if since is None else since
    if write:
        await t.common_write("device_status", 0)
    polls = 0
    while await t.status() != 0:
        polls += 1
        assert bt.cycles() - t0 < bound_cycles, \
            f"device_status still not 0 {bound_cycles} cycles after the reset"
    return polls


async def malformed_round(bt, build, variant, label, tail=True, notify_idx=None, **init_kw):
    """A malformed ring on queue 0 (which must have :data:`QSIZE` entries), from
    ``build(ring, variant)`` (``tb/malformed.py``); the DUT must break as the spec says.

    The golden model is run on the same memory first and must call the ring malformed for the
    builder's reason. Then the DUT must set DEVICE_NEEDS_RESET and send a configuration change
    notification (only that one) [VIRTIO-1.2 2.1.2], with the ISR's configuration bit set
    [VIRTIO-1.2 4.1.4.5.1]; complete nothing, neither the bad chain nor, with ``tail``, a good
    FLUSH published behind it; and touch no host memory once broken (the fence closes), not even
    when the driver rings every doorbell. The driver then resets the device (polling
    ``device_status`` until 0) and initialises it again (``init_kw``). Returns the model's
    reason. With ``notify_idx`` the doorbell (and the model) carries that avail index
    [VIRTIO-1.2 2.9] instead of the ``avail->idx`` the builder published.
    """
    drv, sb, log = bt.drv, bt.scoreboard, bt.log
    fence = bt.fence
    vq = drv.vqs[0]
    assert vq.size == QSIZE, f"malformed rings go into a queue of {QSIZE}, not {vq.size}"
    r = RawRing(bt.mem, fence, vq)
    reason = build(r, variant)
    # A good request behind the bad one: it must not be served either.
    if tail and len(r.free) >= 2 and vq.avail_idx - vq.last_used < QSIZE:
        r.publish(r.flush())
    else:
        tail = False

    # The golden model, on the same memory: malformed, for the intended reason; nothing written.
    mm = ModelMemory(bt.mem)
    batch = bt.model.process_queue(0, mm, notify_idx)
    assert batch.needs_reset and not batch.completions and not mm.writes, \
        f"{label}: the model does not call the ring malformed: {batch}"
    assert reason in batch.error, f"{label}: the model's reason is {batch.error!r}, " \
                                  f"not {reason!r}"
    assert bt.model.device_status & rm.STATUS_DEVICE_NEEDS_RESET

    used = [v.used_idx for v in drv.vqs]
    irqs, msi = dict(drv.interrupts), sb.msi_writes
    await drv.transport.notify(0, notify_idx)
    irq_cycles = await wait_config_change(bt, drv.config_changes, IRQ_TIMEOUT_CYCLES, label)
    # [VIRTIO-1.2 2.1.2] Broken: from here on no host memory access until reset; the fence
    # takes every DMA as an error.
    fence.closed = True
    quiet = upstream_counts(bt)
    new = {k: v - irqs.get(k, 0) for k, v in drv.interrupts.items() if v != irqs.get(k, 0)}
    want = {"msix0": 1} if drv.msix else None
    assert sb.msi_writes - msi == (1 if drv.msix else 0) and (want is None or new == want), \
        f"{label}: {sb.msi_writes - msi} MSI-X messages, by vector {new}; want only the " \
        f"configuration change one"
    t = drv.transport
    status = await t.status()
    assert status == rm.STATUS_DEVICE_NEEDS_RESET | 0x0f, \
        f"{label}: device_status {status:#04x} after the configuration change notification"
    # [VIRTIO-1.2 4.1.4.5.1] The Device Configuration Interrupt bit of the ISR is set before
    # the notification, MSI-X or not (the model sets it too; the scoreboard compares).
    isr = await t.read(rm.VIRTIO_PCI_CAP_ISR_CFG, 0, 1)
    assert isr & 2, f"{label}: ISR status {isr:#04x}, the configuration change bit is clear"
    for q in range(len(drv.vqs)):
        await t.notify(q)         # doorbells on a broken device change nothing
    await assert_quiet(bt, HALT_CYCLES, f"{label}: a broken device", before=quiet)
    assert [v.used_idx for v in drv.vqs] == used and not r.untouched(), \
        f"{label}: the device completed something: used idx {used} -> " \
        f"{[v.used_idx for v in drv.vqs]}, written buffers {r.untouched()}"
    # The model, notified again, serves nothing either (it stays broken until reset).
    again = bt.model.process_queue(0, ModelMemory(bt.mem))
    assert not again.completions and bt.model.device_status & rm.STATUS_DEVICE_NEEDS_RESET
    log.info("malformed ring, %s: model: %s; DUT: DEVICE_NEEDS_RESET (device_status %#04x), "
             "configuration change notification %d cycles after the doorbell (ISR %#04x), "
             "nothing completed%s, no DMA or MSI-X in the next %d cycles despite doorbells on "
             "every queue", label, batch.error, status, irq_cycles, isr,
             " (nor the good FLUSH behind it)" if tail else "", HALT_CYCLES)

    # [VIRTIO-1.2 4.1.4.3.2] Reset, then initialise again.
    await reset_device(bt)
    await drv.close()
    fence.release(r)
    fence.closed = False
    await bt.reinit(**init_kw)
    return batch.error


async def flr(bt):
    """Linux ``pci_reset_function``: save the configuration software programmed, Initiate FLR,
    wait, restore it [PCIe-3.0 6.6.2]. Bus Master Enable stays clear (Linux disables the
    device around the FLR): the caller polls ``device_status``, then sets it again with the
    Command value returned."""
    pci = bt.pci
    saved = {off: await pci.config_read_dword(off) for off in (0x04, 0x10, 0x14)}
    devctl = await pci.capability_read_word(PciCapId.EXP, 0x08)
    await pci.capability_write_word(PciCapId.EXP, 0x08, devctl | rm.DEVCTL_INITIATE_FLR)
    # [PCIe-3.0 6.6.2] Software waits (100 ms on hardware) before touching the function; the
    # configuration space is usable at once here, the virtio part finishes when drained.
    await bt.wait_cycles(100)
    after = await pci.capability_read_word(PciCapId.EXP, 0x08)
    assert not after & rm.DEVCTL_INITIATE_FLR, "Initiate FLR reads back 1"
    assert await pci.config_read_dword(0x04) & 0x7 == 0, \
        "Command (MSE, BME) not cleared by the FLR"
    await pci.capability_write_word(PciCapId.EXP, 0x08, devctl)
    for off in (0x10, 0x14):
        await pci.config_write_dword(off, saved[off])
    await pci.config_write_dword(0x04, saved[0x04] & ~rm.CMD_BUS_MASTER)
    # The MSI-X table went back to reset: the driver sets it up again.
    pci.msix_enabled = False
    return saved[0x04]


async def reset_round(bt, rng, how, rnd, **init_kw):
    """A random mix of requests in flight, a random wait, then a reset the way Linux does it
    (``how``: ``"device_status"``, ``vp_reset``; or ``"flr"``, ``pci_reset_function``):

    * the reset finishes (``device_status`` reads 0) within :data:`RESET_BOUND_CYCLES`, and
      then the DUT sends nothing upstream for 2000 cycles;
    * a write still in flight at the reset has, sector by sector, the old or the new content
      on the disk (or zeros after an FLR, whose Bus Master Enable clear turns outstanding reads
      into zeros); the model's disk takes over what the DUT left, so the final comparison
      still proves that no acknowledged write is lost;
    * the device comes back: the driver initialises it again (``init_kw``).

    Returns ``(requests submitted, requests dropped unfinished)``."""
    drv = bt.drv
    busy, inflight, old = [], [], {}
    disk = bt.model.blk.disk
    for _ in range(rng.choice([1, 4, 16, 32])):
        choice = random_request(rng, bt.params.capacity, [b[:3] for b in busy])
        if choice is None:
            continue
        typ, sector, out, in_len, span, writes = choice
        q = rng.randrange(len(drv.vqs))
        layout = drv.random_layout(rng, len(out), in_len, q=q)
        if writes:
            # What the sectors hold before (the model serves the write as it is submitted).
            before = bytes(disk[span[0] * SECTOR:span[1] * SECTOR])
        req = await drv.submit(q, typ, sector, out, in_len, layout)
        inflight.append(req)
        if span is not None:
            busy.append((span[0], span[1], writes, req))
            if writes:
                old[id(req)] = (span, before)
    delay = rng.choice([0, 10, 100, rng.randrange(1, 20_000)])
    await bt.wait_cycles(delay)
    bt.log.info("reset round %d: %s with %d of %d requests in flight, after %d cycles",
                rnd, how, sum(not r.done for r in inflight), len(inflight), delay)

    t0 = bt.cycles()
    command = await flr(bt) if how == "flr" else None
    polls = await reset_device(bt, write=how == "device_status", since=t0)
    took = bt.cycles() - t0
    if command is not None:
        await bt.pci.config_write_dword(0x04, command)      # Bus Master Enable again
    await assert_quiet(bt, 2000, f"reset round {rnd} ({how}) after the reset had finished")
    bt.log.info("reset round %d: %s finished after %d cycles (%d polls of device_status); "
                "no DMA or MSI-X in the 2000 cycles after", rnd, how, took, polls)

    # Like Linux (vp_reset, then del_vqs): the rings and the requests the driver never saw
    # complete go only now.
    pending = [r for r in inflight if not r.done]
    await drv.close()
    torn = 0
    for req in pending:
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


def _arm(bt, kind, inside):
    """Fault the first DUT read that ``inside(addr)`` accepts; returns the list the faulted
    read goes into."""
    sb, shim = bt.scoreboard, bt.shim
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


async def dma_fault_round(bt, kind, target, rng, **init_kw):
    """One read of the DUT answered with UR, CA, poisoned data or nothing (``kind``, one of
    :data:`FAULT_KINDS`), on a request buffer or on the ring (``target``):

    * ``"buffer"`` (the data of an OUT request): the request completes IOERR [VIRTIO-1.2
      5.2.6]; what reached the disk for it is undefined (the failed part reads as zeros), so
      the model's disk takes the DUT's for its sectors;
    * ``"ring"`` (the ``avail`` header read after a doorbell): DEVICE_NEEDS_RESET and a
      configuration change notification, no host memory access until reset [VIRTIO-1.2 2.1.2];
      the driver resets the device, the request is dropped, its sectors unchanged.

    The model cannot see link faults: it is told the outcome the spec requires. Then a write
    and a read back at a random place. The fault hook is disarmed at the end."""
    drv, sb = bt.drv, bt.scoreboard
    nsec = 16 if target == "buffer" else 8
    sector = rng.randrange(bt.params.capacity - nsec)
    lo, hi = sector * SECTOR, (sector + nsec) * SECTOR
    data = rng.randbytes(nsec * SECTOR)
    try:
        if target == "buffer":
            req = await drv.submit(0, *drv.core.write_args(sector, data))
            # The data buffers (the header is the first readable piece of the simple layout).
            spans = [(a, a + n) for a, n in req.readable[1:]]
            hit = _arm(bt, kind, lambda addr: any(s <= addr < e for s, e in spans))
            # [VIRTIO-1.2 5.2.6] The request fails with IOERR; the model (blind to the link)
            # said OK.
            used_len, _, rest = req.expected
            req.expected = (used_len, rm.VIRTIO_BLK_S_IOERR, rest)
            await drv.wait(req, timeout_ns=2_000_000)
            assert hit, f"{kind}: no read of the request's data buffers to fault"
            assert req.status == rm.VIRTIO_BLK_S_IOERR, \
                f"{kind} on an OUT data read: status {req.status}, want IOERR"
            bt.model.blk.disk[lo:hi] = bt.image[lo:hi]
            bt.log.info("fault: %s on a read of OUT data at %#x -> the request completed "
                        "IOERR; the device goes on", kind, hit[0].address)
        else:
            avail = drv.vqs[0].avail_addr
            hit = _arm(bt, kind, lambda addr: avail <= addr < avail + 4)
            before = bytes(bt.model.blk.disk[lo:hi])
            configs = drv.config_changes
            req = await drv.submit(0, *drv.core.write_args(sector, data))
            req.expected = None            # never completes
            # [VIRTIO-1.2 2.1.2] What the spec requires, told to the model.
            bt.model.device_status |= rm.STATUS_DEVICE_NEEDS_RESET
            bt.model.isr |= 2
            took = await wait_config_change(bt, configs,
                                            bt.params.completion_timeout + 20_000,
                                            f"{kind} on the avail ring read")
            assert hit, f"{kind}: no read of the avail ring to fault"
            status = await drv.transport.status()
            assert status & rm.STATUS_DEVICE_NEEDS_RESET, \
                f"{kind} on the avail ring read: device_status {status:#04x}"
            quiet = upstream_counts(bt)
            await drv.transport.notify(0)
            await assert_quiet(bt, HALT_CYCLES, f"{kind}: the broken device", before=quiet)
            assert not req.done and bytes(bt.image[lo:hi]) == before, \
                f"{kind}: the request behind the failed ring read was served"
            bt.log.info("fault: %s on the avail ring read -> DEVICE_NEEDS_RESET (device_status "
                        "%#04x), configuration change notification after %d cycles, no DMA "
                        "after", kind, status, took)
            # Reset, as Linux does after NEEDS_RESET; the request is dropped.
            await reset_device(bt)
            await drv.close()
            bt.model.blk.disk[lo:hi] = before
            await bt.reinit(**init_kw)
    finally:
        # A timeout fault relaxes the Tag checks for its own read only.
        bt.shim.dma_fault = None
        sb.expect_timeouts = False
    await round_trip(bt, sector=rng.randrange(bt.params.capacity - 8))
