# Ref: OASIS virtio 1.2, sections 2.7 (split virtqueues) and 5.2 (block device)
"""cocotb tests of the data path: block requests through the RootComplex, the DUT and the
storage back-end, each compared with the golden model.

Every test runs with and without random stalls on the TLP streams and the storage port.
"""

import os
import random

import cocotb

from model import regmap as rm
from .blk_testbench import BlkTB
from .testbench import CLOCK_NS
from .scenario import STALLS, SECTOR, QSIZE, IRQ_TIMEOUT_CYCLES, REQUEST_TIMEOUT_NS, env_int, \
    pattern, submit_random, wait_config_change, reset_device, malformed_round


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def io_headline(dut, stalls):
    """``make sim``: write a few MiB, read them back, verify, and report bytes per cycle."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start()
    p = bt.params
    block = 64 * 1024
    depth = 8
    disk = p.capacity * SECTOR
    total = max(disk, env_int("SIM_BYTES", 2 << 20) // disk * disk)
    sectors = block // SECTOR
    cycles = {"write": 0, "read": 0}

    async def sweep(kind, salt):
        # One pass over the whole disk, `depth` requests in flight on both queues.
        start = bt.cycles()
        inflight = []
        for sector in range(0, p.capacity, sectors):
            if kind == "write":
                req = await drv.submit(None, rm.VIRTIO_BLK_T_OUT, sector,
                                       pattern(sector, block, salt), 0)
            else:
                req = await drv.submit(None, rm.VIRTIO_BLK_T_IN, sector, b"", block)
            inflight.append((sector, req))
            while len(inflight) >= depth or (sector + sectors >= p.capacity and inflight):
                s, r = inflight.pop(0)
                await drv.wait(r)
                assert r.status == rm.VIRTIO_BLK_S_OK, f"{kind} at sector {s}: {r.status}"
                if kind == "read":
                    assert r.data == pattern(s, block, salt), \
                        f"data read back at sector {s} differs from what was written"
        cycles[kind] += bt.cycles() - start

    for npass in range(total // disk):
        await sweep("write", npass)
        await sweep("read", npass)
        bt.log.info("pass %d: wrote the %d KiB disk, read it back, every byte matches",
                    npass + 1, disk // 1024)
    w, r = total / cycles["write"], total / cycles["read"]
    bt.log.info("sim: wrote, read back and verified %d KiB: write %.2f bytes/cycle, read %.2f "
                "bytes/cycle (of 8; 64 KiB requests, queue depth %d, 2 queues)",
                total // 1024, w, r, depth)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def request_types(dut, stalls):
    """Each request type once, and each error status, with the statuses the spec requires."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start()
    p = bt.params
    cap = p.capacity
    log = bt.log

    st = await drv.write(8, pattern(8, 4096))
    assert st == rm.VIRTIO_BLK_S_OK, st
    st, data = await drv.read(8, 8)
    assert (st, data) == (rm.VIRTIO_BLK_S_OK, pattern(8, 4096))
    assert await drv.flush() == rm.VIRTIO_BLK_S_OK
    st, ident = await drv.get_id()
    assert st == rm.VIRTIO_BLK_S_OK and ident == p.serial_bytes(), (st, ident)
    assert await drv.write_zeroes(8, 2) == rm.VIRTIO_BLK_S_OK
    st, data = await drv.read(8, 8)
    assert data[:1024] == bytes(1024) and data[1024:] == pattern(8, 4096)[1024:]
    assert await drv.discard(12, 4) == rm.VIRTIO_BLK_S_OK
    st, data = await drv.read(8, 8)
    assert data[2048:] == bytes(2048)
    log.info("IN, OUT, FLUSH, GET_ID, WRITE_ZEROES, DISCARD: OK")

    # [VIRTIO-1.2 5.2.6.1] out of range, partial sectors, unknown types.
    core = drv.core
    cases = [
        ("read past the end", rm.VIRTIO_BLK_T_IN, cap - 1, b"", 1024, rm.VIRTIO_BLK_S_IOERR),
        ("write past the end", rm.VIRTIO_BLK_T_OUT, cap, bytes(512), 0, rm.VIRTIO_BLK_S_IOERR),
        ("sector + count wraps 64 bits", rm.VIRTIO_BLK_T_IN, (1 << 64) - 1, b"", 512,
         rm.VIRTIO_BLK_S_IOERR),
        ("read of 100 bytes", rm.VIRTIO_BLK_T_IN, 0, b"", 100, rm.VIRTIO_BLK_S_IOERR),
        ("write of 700 bytes", rm.VIRTIO_BLK_T_OUT, 0, bytes(700), 0, rm.VIRTIO_BLK_S_IOERR),
        ("GET_LIFETIME", rm.VIRTIO_BLK_T_GET_LIFETIME, 0, b"", 16, rm.VIRTIO_BLK_S_UNSUPP),
        ("SECURE_ERASE", rm.VIRTIO_BLK_T_SECURE_ERASE, 0, bytes(16), 0,
         rm.VIRTIO_BLK_S_UNSUPP),
        ("type 0x80000001", 0x80000001, 0, b"", 0, rm.VIRTIO_BLK_S_UNSUPP),
        ("discard with flags", rm.VIRTIO_BLK_T_DISCARD, 0,
         (0).to_bytes(8, "little") + (1).to_bytes(4, "little") + (1).to_bytes(4, "little"), 0,
         rm.VIRTIO_BLK_S_UNSUPP),
        ("two discard segments", rm.VIRTIO_BLK_T_DISCARD, 0, bytes(32), 0,
         rm.VIRTIO_BLK_S_UNSUPP),
        ("write zeroes past the end", rm.VIRTIO_BLK_T_WRITE_ZEROES, 0,
         (cap - 1).to_bytes(8, "little") + (2).to_bytes(4, "little") + bytes(4), 0,
         rm.VIRTIO_BLK_S_IOERR),
        ("write zeroes over the limit", rm.VIRTIO_BLK_T_WRITE_ZEROES, 0,
         (0).to_bytes(8, "little") + (p.max_write_zeroes_sectors + 1).to_bytes(4, "little") +
         bytes(4), 0, rm.VIRTIO_BLK_S_IOERR),
    ]
    for name, typ, sector, out, in_len, want in cases:
        req = await drv.request(0, typ, sector, out, in_len)
        assert req.status == want, f"{name}: status {req.status}, want {want}"
        log.info("%s: status %d as required", name, req.status)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def random_workload(dut, stalls):
    """Mixed requests, sizes 512 B to 128 KiB, random scatter-gather layouts (1 to seg_max
    data segments, split headers, shared status bytes, indirect and direct), queue depth up to
    the queue size, on every queue; every result compared with the golden model.
    ``N_REQUESTS`` sets the length, ``MAX_DEPTH`` the depth (0: the sum of the queue sizes)."""
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    event_idx = rng.random() < 0.5
    drv = await bt.start(event_idx=event_idx)
    p = bt.params
    # Icarus runs about a quarter as fast as Verilator: a shorter default keeps make test in
    # the CI budget (the 2,000-request campaigns set N_REQUESTS on either simulator).
    n = env_int("N_REQUESTS", 100 if cocotb.SIM_NAME.lower().startswith("icarus") else 300)
    nq = len(drv.vqs)
    # Up to every descriptor of every queue (the driver waits when a queue is full); the
    # no-overlap rule for writes limits it further on a small disk.
    # MAX_DEPTH pins it (0: the sum of the queue sizes).
    max_depth = rng.choice([1, 4, 16, 64, sum(vq.size for vq in drv.vqs)])
    if os.environ.get("MAX_DEPTH"):
        max_depth = env_int("MAX_DEPTH", 0) or sum(vq.size for vq in drv.vqs)
    # Half of the runs, the driver also polls the used rings at random moments, as a CPU
    # may at any time: it must never find used->idx ahead of the elements, nor an element
    # ahead of its data and status [VIRTIO-1.2 2.7.8.2].
    poll = rng.random() < 0.5
    if poll:
        drv.poll_at_random(random.Random(rng.randrange(1 << 32)), max_gap_ns=400)
    bt.log.info("random workload: %d requests, %d queues, depth up to %d, event_idx %s, "
                "random polling %s", n, nq, max_depth, event_idx, poll)
    busy = []            # (lo, hi, writes, req)
    inflight = []
    counts = {}
    msi_before = bt.scoreboard.msi_writes
    modelled = []
    while len(modelled) < n or inflight:
        if len(modelled) < n and len(inflight) < max_depth:
            req = await submit_random(bt, rng, busy, inflight)
            if req is not None:
                modelled.append(req)
                name = req.op_name if not req.op_name.startswith("T") else "unknown type"
                counts[name] = counts.get(name, 0) + 1
                continue
        # Wait for the oldest request (or any, half of the time, to mix the order).
        req = inflight.pop(0 if rng.random() < 0.5 else rng.randrange(len(inflight)))
        await drv.wait(req, timeout_ns=2_000_000)
        busy = [b for b in busy if b[3] is not req]
    await bt.wait_cycles(200)
    # [VIRTIO-1.2 2.7.7.2] Without EVENT_IDX and with avail->flags 0 (this driver never sets
    # NO_INTERRUPT here) a notification must follow the used ring writes. The device may cover
    # several used entries with one, as the model's batches do; the ordering checker fails any
    # message that announces no new used->idx. None may be missing: no queue may end with
    # used->idx written after its last message. With EVENT_IDX the decision depends on
    # used_event at completion time; then too no interrupt may be missing (the driver would
    # hang), and there can be no more than one per request.
    want = sum(bool(getattr(r, "interrupt", False)) for r in modelled)
    sent = bt.scoreboard.msi_writes - msi_before
    if drv.msix and not event_idx:
        assert want == len(modelled), f"the model suppressed {len(modelled) - want} interrupts"
        assert 1 <= sent <= want, f"{sent} MSI-X messages, the model decided on {want}"
        stale = bt.scoreboard.ordering.unannounced()
        assert not stale, f"queues {stale}: used->idx written after the last MSI-X message"
    elif drv.msix:
        assert 1 <= sent <= len(modelled), f"{sent} MSI-X messages for {len(modelled)} requests"
    bt.log.info("random workload done: %s; %d MSI-X messages (model: %d); driver saw %s",
                counts, sent, want, drv.interrupts)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def data_integrity(dut, stalls):
    """Fill the whole disk with a known pattern, read it back through three different segment
    layouts, and compare every byte."""
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    drv = await bt.start()
    p = bt.params
    chunk = 128 * 1024 if not stalls else 64 * 1024
    nsec = chunk // SECTOR
    depth = 8
    salt = rng.randrange(16)

    async def sweep(write, layout_kind):
        inflight = []
        for sector in range(0, p.capacity, nsec):
            n = min(nsec, p.capacity - sector)
            nbytes = n * SECTOR
            if layout_kind == "random":
                lay = drv.random_layout(rng, nbytes if write else 0,
                                        0 if write else nbytes)
            elif layout_kind == "pages":
                lay = drv.random_layout(rng, nbytes if write else 0,
                                        0 if write else nbytes, split_header_prob=0,
                                        share_prob=0, max_skew=0)
            else:
                lay = None
            if write:
                req = await drv.submit(None, rm.VIRTIO_BLK_T_OUT, sector,
                                       pattern(sector, nbytes, salt), 0, lay)
            else:
                req = await drv.submit(None, rm.VIRTIO_BLK_T_IN, sector, b"", nbytes, lay)
            inflight.append((sector, nbytes, req))
            while len(inflight) >= depth or (sector + n >= p.capacity and inflight):
                s, nb, r = inflight.pop(0)
                await drv.wait(r, timeout_ns=5_000_000)
                assert r.status == rm.VIRTIO_BLK_S_OK, f"sector {s}: status {r.status}"
                if not write:
                    assert r.data == pattern(s, nb, salt), \
                        f"data read back at sector {s} ({layout_kind} layout) differs"

    await sweep(True, "random")
    kinds = ("simple", "pages", "random")
    if cocotb.SIM_NAME.lower().startswith("icarus"):
        # A quarter of Verilator's speed: one read-back layout per run on Icarus (the random
        # one with stalls, the Linux-like one without), all three on Verilator.
        kinds = ("random",) if stalls else ("pages",)
    for kind in kinds:
        await sweep(False, kind)
        bt.log.info("whole disk (%d KiB) read back through %s layouts: every byte matches",
                    p.capacity // 2, kind)
    assert bytes(bt.image) == b"".join(pattern(s, SECTOR, salt) for s in range(p.capacity))
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def host_latency(dut, stalls):
    """The testbench's host read latency (``TlpShim.host_latency_ns``, which ``make bench``
    runs at 1 µs): a request at depth 1 pays it for each dependent read (at least the avail
    entry, the descriptor and the header [VIRTIO-1.2 2.7.6, 5.2.6]), and every request and
    byte still matches the golden model."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start()
    host = 250
    taken = {}
    for latency in (0, host):
        bt.shim.host_latency_ns = latency * CLOCK_NS
        cycles = []
        for i in range(4):
            sector = 16 * i
            assert await drv.write(sector, pattern(sector, 512, latency), q=0) == \
                rm.VIRTIO_BLK_S_OK
            req = await drv.wait(await drv.submit(0, rm.VIRTIO_BLK_T_IN, sector, b"", 512))
            assert req.status == rm.VIRTIO_BLK_S_OK and \
                req.data == pattern(sector, 512, latency)
            cycles.append(req.completed_at - req.submitted_at)
        taken[latency] = min(cycles)
    bt.log.info("host latency: a 512 B read at depth 1 takes %d cycles with the root complex's "
                "own latency, %d with %d cycles", taken[0], taken[host], host)
    # Three dependent reads, each at least host - 40 cycles (the model's own latency) longer.
    assert taken[host] - taken[0] >= 3 * (host - 40), \
        f"with a {host}-cycle host latency a read took {taken[host]} cycles, {taken[0]} without"
    bt.shim.host_latency_ns = 0
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def interrupt_suppression(dut, stalls):
    """[VIRTIO-1.2 2.7.7] VIRTQ_AVAIL_F_NO_INTERRUPT silences a queue's vector; with
    EVENT_IDX [VIRTIO-1.2 2.7.10] the device interrupts only when used_event is passed."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start(event_idx=False)
    drv.set_no_interrupt(0, True)
    before = dict(drv.interrupts)
    for i in range(8):
        st = await drv.write(i * 8, pattern(i * 8, 4096), q=0)
        assert st == rm.VIRTIO_BLK_S_OK
    await bt.wait_cycles(200)
    got = {k: v - before.get(k, 0) for k, v in drv.interrupts.items()}
    quiet = got.get("msix1", 0) if drv.msix else got.get("intx", 0)
    assert quiet == 0, f"queue 0 with NO_INTERRUPT still interrupted: {got}"
    bt.log.info("NO_INTERRUPT: 8 requests completed (by polling), no interrupt: %s", got)
    drv.set_no_interrupt(0, False)
    before = dict(drv.interrupts)
    st = await drv.write(0, pattern(0, 512), q=0)
    assert st == rm.VIRTIO_BLK_S_OK
    got = {k: v - before.get(k, 0) for k, v in drv.interrupts.items()}
    assert sum(got.values()) >= 1, "no interrupt after NO_INTERRUPT was cleared"
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def event_idx_interrupts(dut, stalls):
    """[VIRTIO-1.2 2.7.10] With EVENT_IDX the device interrupts when used->idx passes
    used_event, not for every entry, and leaves avail_event at the entries it has taken."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start(event_idx=True)
    vq = drv.vqs[0]
    src = "msix1" if drv.msix else "intx"
    for rounds in range(3):
        n = 2 + rounds * 3
        # Notify me once the device has written the n-th entry from now.
        vq.set_used_event((vq.last_used + n - 1) & 0xffff)
        before = drv.interrupts.get(src, 0)
        reqs = []
        for i in range(n):
            reqs.append(await drv.submit(0, rm.VIRTIO_BLK_T_OUT, 8 * i,
                                         pattern(8 * i, 4096, rounds), 0))
        for req in reqs:
            await drv.wait(req, timeout_ns=1_000_000)
            assert req.status == rm.VIRTIO_BLK_S_OK
        await bt.wait_cycles(300)
        got = drv.interrupts.get(src, 0) - before
        assert got == 1, f"{n} completions with used_event at the last: {got} interrupts, want 1"
        # [VIRTIO-1.2 2.7.10] The device publishes the avail index it will be notified past.
        assert vq.avail_event == vq.avail_idx, \
            f"avail_event {vq.avail_event}, the device took entries up to {vq.avail_idx}"
        bt.log.info("EVENT_IDX: %d requests, one interrupt, avail_event %d", n, vq.avail_event)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def read_only(dut, stalls):
    """[VIRTIO-1.2 5.2.3, 5.2.6.2] A read-only build offers VIRTIO_BLK_F_RO and fails every
    request that would change the disk with IOERR; reads, flushes and GET_ID still work.
    Runs on the ``virtio_blk_ep_ro`` build (``tb/test_system.py``)."""
    bt = BlkTB(dut, stalls)
    assert bt.params.read_only, f"{bt.name} is not a read-only build"
    drv = await bt.start()
    assert drv.features >> rm.VIRTIO_BLK_F_RO & 1, "VIRTIO_BLK_F_RO not offered"
    bt.image[0:4096] = pattern(0, 4096)          # the medium's contents
    bt.model.blk.disk[0:4096] = pattern(0, 4096)
    for name, st in [
            ("write", await drv.write(0, bytes(4096))),
            ("write zeroes", await drv.write_zeroes(0, 8)),
            ("discard", await drv.discard(0, 8))]:
        assert st == rm.VIRTIO_BLK_S_IOERR, f"{name} on a read-only device: status {st}"
        bt.log.info("%s on a read-only device: IOERR", name)
    st, data = await drv.read(0, 8)
    assert (st, data) == (rm.VIRTIO_BLK_S_OK, pattern(0, 4096)), "read-only disk changed"
    assert await drv.flush() == rm.VIRTIO_BLK_S_OK
    assert (await drv.get_id())[0] == rm.VIRTIO_BLK_S_OK
    await bt.finish()


def _count_avail_header_reads(bt, q=0):
    """A list that grows by one at each DMA read of queue ``q``'s ``avail->flags``/``idx``
    [VIRTIO-1.2 2.7.6], seen through the scoreboard's DMA hook."""
    hdr = bt.drv.vqs[q].rings[1]
    seen = []
    inner = bt.scoreboard.dma_allowed

    def counting(start, span, write):
        if not write and start <= hdr + 2 < start + span:
            seen.append(start)
        return inner(start, span, write) if inner is not None else True
    bt.scoreboard.dma_allowed = counting
    return seen


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def notification_data(dut, stalls):
    """[VIRTIO-1.2 2.9, 4.1.5.2] With VIRTIO_F_NOTIFICATION_DATA the doorbell carries the avail
    index, and a request at depth 1 is fetched without reading avail->idx first: one read of
    the avail header per request (the one behind the entries) instead of two. Without the
    feature, two."""
    bt = BlkTB(dut, stalls)
    n = 8
    counts = {}
    for nd in (True, False):
        drv = await (bt.start if nd else bt.reinit)(notification_data=nd)
        assert bool(drv.features >> rm.VIRTIO_F_NOTIFICATION_DATA & 1) == nd
        await drv.write(0, pattern(0, 512 * n, nd), q=0)
        seen = _count_avail_header_reads(bt)
        for i in range(n):
            req = await drv.wait(await drv.submit(0, rm.VIRTIO_BLK_T_IN, i, b"", 512))
            assert req.status == rm.VIRTIO_BLK_S_OK and \
                req.data == pattern(0, 512 * n, nd)[512 * i:512 * (i + 1)]
        counts[nd] = len(seen)
        bt.scoreboard.dma_allowed = bt.fence
    bt.log.info("avail header reads for %d depth-1 reads: %d with notification data, %d "
                "without", n, counts[True], counts[False])
    assert counts[True] == n and counts[False] == 2 * n, counts
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def notification_data_bad(dut, stalls):
    """Bad notification data never breaks the device [VIRTIO-1.2 2.9]: an avail index more than
    the queue size ahead (or a stale one behind, the same modulo 2**16), a narrow write with the
    feature negotiated, a queue index out of range: each is a doorbell without data (or none),
    avail->idx is read, and every request completes as the golden model says."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start()
    assert drv.features >> rm.VIRTIO_F_NOTIFICATION_DATA & 1
    t = drv.transport
    vq = drv.vqs[0]
    await drv.write(0, pattern(0, 4096, 7), q=0)
    cases = [
        ("an index queue size + 1 ahead", lambda: t.notify(0, vq.avail_idx + vq.size)),
        ("a stale index, one behind", lambda: t.notify(0, vq.avail_idx - 2)),
        ("an index 0x8000 away", lambda: t.notify(0, vq.avail_idx ^ 0x8000)),
        ("a 16-bit write", lambda: t.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG,
                                           t.queues[0]["notify"], 2, 0)),
        ("an 8-bit write", lambda: t.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG,
                                           t.queues[0]["notify"], 1, 0)),
    ]
    for k, (what, ring) in enumerate(cases):
        req = await drv.submit(0, rm.VIRTIO_BLK_T_IN, k, b"", 512, kick=False)
        await ring()
        await drv.wait(req, REQUEST_TIMEOUT_NS)
        assert req.status == rm.VIRTIO_BLK_S_OK and \
            req.data == pattern(0, 4096, 7)[512 * k:512 * (k + 1)], what
        assert not await t.status() & rm.STATUS_DEVICE_NEEDS_RESET, what
        bt.log.info("notification data: %s: served from avail->idx", what)
    # A 16-bit write on a queue whose last_avail_idx is 0 (queue 1, unused so far): lanes 2-3,
    # 0, taken for an avail index would be a repeat, and the request would wait for ever.
    req = await drv.submit(1, rm.VIRTIO_BLK_T_IN, 6, b"", 512, kick=False)
    await t.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG, t.queues[1]["notify"], 2, 1)
    await drv.wait(req, REQUEST_TIMEOUT_NS)
    assert req.status == rm.VIRTIO_BLK_S_OK and \
        req.data == pattern(0, 4096, 7)[512 * 6:512 * 7], "a 16-bit write on queue 1"
    # A queue index out of range, with data: names no queue and is dropped; the request
    # waits for a good doorbell.
    req = await drv.submit(0, rm.VIRTIO_BLK_T_IN, 5, b"", 512, kick=False)
    await t.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG, t.queues[0]["notify"], 4,
                  vq.avail_idx << 16 | 0x7fff)
    await bt.wait_cycles(2000)
    assert req.status is None, "a doorbell for no queue served queue 0"
    await drv.kick(0)
    await drv.wait(req, REQUEST_TIMEOUT_NS)
    assert req.status == rm.VIRTIO_BLK_S_OK
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def notification_data_ahead(dut, stalls):
    """[VIRTIO-1.2 2.9] A driver that notifies with an avail index ahead of the ``avail->idx``
    it wrote (a lying driver, or one racing its own write: Linux writes ``avail->idx`` first),
    by at most the queue size: the device takes the index and serves the entries up to it,
    whatever they hold, as the golden model says (``rtl/blk_avail.py``'s rules, which
    ``model/blk.py`` mirrors). Every used entry, status and data byte is compared with the
    model's, and nothing hangs.

    Entries present in the ring behind an ``avail->idx`` that shows fewer of them: served, the
    read of ``avail->idx`` behind them keeping the notified index, also over two reads of
    entries; shown behind where the last read of entries started, the entries are served and
    the ring is then malformed (the index read is more than the queue size ahead). Stale
    (never written: head 0, a zeroed descriptor) and garbage (out of range) entries: malformed.
    """
    bt = BlkTB(dut, stalls)
    drv = await bt.start()
    t = drv.transport
    salt = 11
    data = pattern(0, 512 * 32, salt)
    await drv.write(0, data, q=0)

    async def lie(k, shown):
        """``k`` reads with their entries in the ring, ``avail->idx`` left ``shown`` entries
        ahead of where it was, a doorbell with the index of all ``k``; returns the requests
        and the model's batch."""
        vq = drv.vqs[0]
        base = vq.avail_idx
        bt.model_on_submit = False
        reqs = [await drv.submit(0, rm.VIRTIO_BLK_T_IN, i, b"", 512, kick=False)
                for i in range(k)]
        bt.model_on_submit = True
        vq.kick_prepare()
        bt.mem.write16(vq.avail_addr + 2, (base + shown) & 0xffff)
        batch = bt.model_notify(0, vq.avail_idx, reqs)
        assert len(batch.completions) == k, f"the model served {len(batch.completions)} of {k}"
        await t.notify(0, vq.avail_idx)
        for i, req in enumerate(reqs):
            await drv.wait(req, REQUEST_TIMEOUT_NS)
            assert req.status == rm.VIRTIO_BLK_S_OK and \
                req.data == data[512 * i:512 * (i + 1)], f"{k} ahead, {shown} shown: request {i}"
        return batch

    for k, shown in ((3, 0), (16, 8), (20, 17)):
        batch = await lie(k, shown)
        assert not batch.needs_reset
        assert not await t.status() & rm.STATUS_DEVICE_NEEDS_RESET, (k, shown)
        # The driver publishes what it notified; the next request goes as usual.
        vq = drv.vqs[0]
        bt.mem.write16(vq.avail_addr + 2, vq.avail_idx)
        status, got = await drv.read(24, 1, q=0)
        assert status == rm.VIRTIO_BLK_S_OK and got == data[512 * 24:512 * 25]
        bt.log.info("notified %d ahead of an avail->idx showing %d: all served, as the model",
                    k, shown)

    # Shown behind where the second read of entries starts: served, then malformed.
    since = drv.config_changes
    batch = await lie(20, 0)
    assert batch.needs_reset and "more than" in batch.error, batch.error
    await wait_config_change(bt, since, IRQ_TIMEOUT_CYCLES, "notified 20 ahead of avail->idx")
    status = await t.status()
    assert status & rm.STATUS_DEVICE_NEEDS_RESET, f"device_status {status:#04x}"
    bt.log.info("notified 20 ahead of an avail->idx showing 0: served, then %s", batch.error)
    await reset_device(bt)
    await drv.close()
    await bt.reinit(queue_size=QSIZE)

    def stale(r, _):
        return "fewer than the 16-byte header"

    def garbage(r, _):
        for k in range(3):
            bt.mem.write16(r.vq.avail_addr + 4 + 2 * ((r.vq.avail_idx + k) % r.size),
                           0xbeef + k)
        return "is not below the queue size"

    for build, label in ((stale, "stale entries"), (garbage, "garbage entries")):
        reason = await malformed_round(bt, build, None, f"notified ahead over {label}",
                                       tail=False, notify_idx=drv.vqs[0].avail_idx + 3,
                                       queue_size=QSIZE)
        bt.log.info("notified 3 ahead over %s: %s", label, reason)
    status, got = await drv.read(1, 1, q=0)
    assert status == rm.VIRTIO_BLK_S_OK and got == data[512:1024]
    await bt.finish()
