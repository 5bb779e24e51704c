# Ref: OASIS virtio 1.2, sections 5.2.5 (the cache mode: VIRTIO_BLK_F_CONFIG_WCE, writeback) and
#      5.2.6.2 (when a write is stable: FLUSH); Linux drivers/block/virtio_blk.c
#      (virtblk_get_cache_mode, cache_type_store)
"""Flush semantics with a writeback cache: once a FLUSH completes OK, every write acknowledged
before it was submitted is durable in the back-end.

The storage back-end (:class:`tb.backend.StorageBackend`) follows the port's ``writeback``
level: in writeback mode a completed write may live only in its volatile cache until a FLUSH
(or an early eviction) writes it to the medium, and a simulated power loss throws away what is
still cached. :func:`flush_durability`

1. negotiates CONFIG_WCE (and FLUSH), reads ``writeback`` (1 after reset), switches it to 0
   and back to 1 the way Linux's ``cache_type_store`` does (write, read back), and checks that
   values other than 0 and 1 are ignored; the scoreboard compares every one of those reads with
   the golden model, and the back-end's mode must agree with the model's after each switch;
2. in writeback mode, runs random writes (OUT, DISCARD, WRITE_ZEROES of random sizes, on every
   queue, up to a random depth) interleaved with FLUSHes. Each FLUSH is checked when the
   driver sees it complete: every sector a write acknowledged (status OK seen by the driver)
   before the FLUSH was submitted holds, in the back-end's durable image, that write's data or
   the data of a later write to the sector [VIRTIO-1.2 5.2.6.2];
3. at a random moment after a FLUSH completed OK (1 to 9 further writes later, then the
   requests in flight drained, so that the port is idle and the model's disk can take the
   back-end's content exactly), simulates a power loss, checks the same property against
   the last completed FLUSH, logs which writes were still volatile (allowed to be lost), lets
   the golden model's disk take the back-end's durable content for the lost sectors, and reads
   some of the surviving writes back through the device;
4. leaves a few writes cached, switches to writethrough, and checks that every write then is
   durable by the time the driver sees it complete; a final FLUSH empties the cache.

Every request is still compared with the golden model as it completes, and at the end the
back-end's disk with the model's (valid: the model followed the power loss).

``SEED`` replays a run; ``FLUSH_WRITES`` sets the length of step 2.
"""

import cocotb

from model import regmap as rm
from .blk_testbench import BlkTB
from .scenario import STALLS, SECTOR, env_int


# Early write-backs of the back-end's cache: after each command, with this probability, one
# cached sector reaches the medium before any FLUSH (a cache may do that at any time).
EVICT_PROB = 0.05


class _Write:
    """A request that changes sectors, as the durability checks follow it."""
    __slots__ = ("seq", "req", "lo", "hi", "data")

    def __init__(self, seq, req, lo, hi, data):
        self.seq, self.req, self.lo, self.hi, self.data = seq, req, lo, hi, data

    @property
    def acked(self):
        """The driver saw it complete OK."""
        return self.req.done and self.req.status == rm.VIRTIO_BLK_S_OK

    def sector_data(self, s):
        k = (s - self.lo) * SECTOR
        return self.data[k:k + SECTOR]

    def __str__(self):
        return f"q{self.req.q} {self.req.op_name} sectors {self.lo}+{self.hi - self.lo}"


class Durability:
    """Every write of the test, per sector in the order they reached the disk (writes to one
    sector are never in flight together, so submission order is completion order)."""
    def __init__(self, bt):
        self.bt = bt
        self.writes = []
        self.history = {}            # sector -> [_Write] in order

    def add(self, req, lo, hi, data):
        w = _Write(len(self.writes), req, lo, hi, data)
        self.writes.append(w)
        for s in range(lo, hi):
            self.history.setdefault(s, []).append(w)
        return w

    def acked_now(self):
        """Sequence numbers of the writes the driver has seen complete OK."""
        return {w.seq for w in self.writes if w.acked}

    def check(self, disk, acked, what):
        """Every sector written by a write in ``acked`` holds, in ``disk``, the data of the
        last such write or of a later write to it. Returns (writes, sectors) checked."""
        bad = []
        sectors = 0
        for s, hist in self.history.items():
            last = max((i for i, w in enumerate(hist) if w.seq in acked), default=None)
            if last is None:
                continue
            sectors += 1
            got = bytes(disk[s * SECTOR:(s + 1) * SECTOR])
            if all(got != w.sector_data(s) for w in hist[last:]):
                bad.append((s, hist[last]))
        for s, w in bad[:8]:
            self.bt.scoreboard.error(f"{what}: sector {s} of {w} (acknowledged before) is "
                                        f"not durable")
        assert not bad, f"{what}: {len(bad)} sectors of acknowledged writes are not durable"
        return len(acked), sectors


def _random_write(rng, drv, cap, busy):
    """OUT, DISCARD or WRITE_ZEROES on a range no request in flight writes. Returns
    (type, sector, out, lo, hi, data) or None."""
    nbytes = 1 << rng.choice([9, 9, 10, 11, 12, 12, 13, 14, 15, 17])
    nsec = min(nbytes // SECTOR, cap)
    lo = rng.randrange(0, cap - nsec + 1)
    hi = lo + nsec
    if any(lo < b_hi and b_lo < hi for b_lo, b_hi, _ in busy):
        return None
    if rng.random() < 0.85:
        data = rng.randbytes(nsec * SECTOR)
        return rm.VIRTIO_BLK_T_OUT, lo, data, lo, hi, data
    typ = rng.choice([rm.VIRTIO_BLK_T_DISCARD, rm.VIRTIO_BLK_T_WRITE_ZEROES])
    # [VIRTIO-1.2 5.2.6.2] After either, the device asks its back-end for zeros.
    seg = lo.to_bytes(8, "little") + nsec.to_bytes(4, "little") + bytes(4)
    return typ, 0, seg, lo, hi, bytes(nsec * SECTOR)


async def _switch(bt, drv, value, want):
    """Linux ``cache_type_store``: write ``writeback``, read it back; the model and the
    back-end must agree with what the driver reads."""
    got = await drv.set_cache_mode(value)
    assert got == want, f"writeback reads {got} after writing {value}, want {want}"
    assert bt.model.writeback == want, f"the model's cache mode is {bt.model.writeback}"
    assert bt.backend.writeback == bool(want), \
        f"the back-end is in {'writeback' if bt.backend.writeback else 'writethrough'} mode, " \
        f"the driver set {want}"
    bt.log.info("flush: wrote %#04x to writeback, reads %d (%s); the model and the back-end "
                "agree", value, got, "writeback" if got else "writethrough")


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def flush_durability(dut, stalls):
    """[VIRTIO-1.2 5.2.6.2] With a writeback cache (CONFIG_WCE), a FLUSH that completes OK
    leaves every write acknowledged before it was submitted durable; a power loss loses only
    writes acknowledged after; in writethrough mode every acknowledged write is durable."""
    bt = BlkTB(dut, stalls)
    rng = bt.rng
    drv = await bt.start()
    be = bt.backend
    be.evict_prob = EVICT_PROB
    p = bt.params
    cap = p.capacity
    nq = len(drv.vqs)
    log = bt.log
    dur = Durability(bt)

    # -- 1. the cache mode: read, switch, junk ignored ----------------------------------------
    for bit in (rm.VIRTIO_BLK_F_CONFIG_WCE, rm.VIRTIO_BLK_F_FLUSH):
        assert drv.features >> bit & 1, f"{rm.FEATURE_NAMES[bit]} not negotiated"
    # [VIRTIO-1.2 5.2.5] The mode after reset is read from writeback after negotiation.
    mode = await drv.read_cache_mode()
    assert mode == 1 == bt.model.writeback and be.writeback, \
        f"writeback reads {mode} after reset, want 1 (writeback)"
    log.info("flush: CONFIG_WCE and FLUSH negotiated; writeback reads 1 (writeback) after reset")
    await _switch(bt, drv, 0, 0)
    await _switch(bt, drv, 2, 0)        # not 0 or 1: ignored
    await _switch(bt, drv, 1, 1)
    await _switch(bt, drv, 0xff, 1)     # ignored

    # -- 2. writeback mode: random writes and FLUSHes -----------------------------------------
    n = env_int("FLUSH_WRITES", 24 if cocotb.SIM_NAME.lower().startswith("icarus") else 60)
    max_depth = rng.choice([1, 4, 8, 16, 32])
    flush_every = rng.randrange(3, 10)
    loss_flush = rng.randint(1, max(1, n // flush_every))      # power loss after this FLUSH
    loss_extra = rng.randrange(1, 10)                           # ... this many writes later
    log.info("flush: writeback mode: %d writes on %d queues, depth up to %d, a FLUSH about "
             "every %d writes; power loss %d writes after FLUSH #%d completes",
             n, nq, max_depth, flush_every, loss_extra, loss_flush)
    inflight = []          # requests not yet waited for
    busy = []              # (lo, hi, req) of writes in flight
    flushes = []           # (number, req, acked before its submission)
    done_flushes = []
    writes = since_flush = 0
    extra = None           # writes left before the power loss, once loss_flush completed

    def check_flushes():
        """Check each FLUSH the driver has seen complete since the last call, in the state
        the back-end's medium is in now (later writes may have reached it too: allowed)."""
        for f in flushes:
            number, req, acked = f
            if req.done and f not in done_flushes:
                assert req.status == rm.VIRTIO_BLK_S_OK, f"{req}: status {req.status}"
                nw, ns = dur.check(be.durable, acked, f"FLUSH #{number}")
                done_flushes.append(f)
                log.info("flush: FLUSH #%d on q%d completed OK: the %d writes (%d sectors) "
                         "acknowledged before it was submitted are durable; %d sectors cached",
                         number, req.q, nw, ns, len(be.volatile))

    async def wait_one(oldest=False):
        req = inflight.pop(0 if oldest or rng.random() < 0.5 else rng.randrange(len(inflight)))
        await drv.wait(req, timeout_ns=5_000_000)
        busy[:] = [b for b in busy if b[2] is not req]
        assert req.status == rm.VIRTIO_BLK_S_OK, f"{req}: status {req.status}"
        check_flushes()

    while True:
        check_flushes()
        if extra is None and any(f[0] == loss_flush for f in done_flushes):
            extra = loss_extra
        if extra == 0:
            break
        if len(inflight) >= max_depth:
            await wait_one()
            continue
        if extra is None and writes >= n and since_flush == 0:
            # Everything planned is submitted; FLUSH #loss_flush is among it.
            assert inflight, f"FLUSH #{loss_flush} was never submitted"
            await wait_one()
            continue
        q = rng.randrange(nq)
        if extra is None and (since_flush >= flush_every or writes >= n):
            acked = dur.acked_now()
            layout = drv.random_layout(rng, 0, 0, q=q)
            req = await drv.submit(q, *drv.core.flush_args(), layout)
            flushes.append((len(flushes) + 1, req, acked))
            inflight.append(req)
            since_flush = 0
        else:
            choice = _random_write(rng, drv, cap, busy)
            if choice is None:
                await wait_one()
                continue
            typ, sector, out, lo, hi, data = choice
            layout = drv.random_layout(rng, len(out), 0, q=q)
            req = await drv.submit(q, typ, sector, out, 0, layout)
            dur.add(req, lo, hi, data)
            busy.append((lo, hi, req))
            inflight.append(req)
            writes += 1
            since_flush += 1
        if extra is not None:
            extra -= 1

    # -- 3. power loss ------------------------------------------------------------------------
    while inflight:
        await wait_one(oldest=True)
    await bt.wait_cycles(50)
    check_flushes()
    last = max(done_flushes, key=lambda f: f[0])
    volatile_writes = {}
    for s in be.volatile:
        hist = dur.history.get(s)
        if hist:
            volatile_writes.setdefault(hist[-1].seq, []).append(s)
    lost = be.power_loss()
    nw, ns = dur.check(be.image, last[2], f"power loss after FLUSH #{last[0]}")
    log.info("flush: power loss %d writes after FLUSH #%d (last FLUSH completed: #%d): %d "
             "cached sectors lost; the %d writes (%d sectors) acknowledged before FLUSH #%d was "
             "submitted all survived", loss_extra, loss_flush, last[0], len(lost), nw, ns,
             last[0])
    for seq, sectors in sorted(volatile_writes.items()):
        w = dur.writes[seq]
        log.info("flush:   still volatile, allowed to be lost: %s (acknowledged %s FLUSH #%d "
                 "was submitted), %d of its sectors", w,
                 "before" if seq in last[2] else "after", last[0], len(sectors))
    assert all(seq not in last[2] for seq in volatile_writes)
    log.info("flush: back-end: %d writes cached, %d sectors evicted early, %d FLUSHes",
             be.cached, be.evicted, be.counts["FLUSH"])
    assert be.cached, "the back-end cached no write: writeback mode never reached it"
    # The golden model's disk follows the back-end: it lost the same sectors.
    disk = bt.model.blk.disk
    for s in lost:
        disk[s * SECTOR:(s + 1) * SECTOR] = be.image[s * SECTOR:(s + 1) * SECTOR]
    log.info("flush: the model's disk takes the back-end's durable content of the %d lost "
             "sectors, so the final disk comparison stays valid", len(lost))
    # What survived reads back through the device (each read compared with the model, too).
    survivors = [dur.writes[seq] for seq in sorted(last[2])]
    for w in rng.sample(survivors, min(4, len(survivors))):
        st, got = await drv.read(w.lo, w.hi - w.lo)
        assert st == rm.VIRTIO_BLK_S_OK
        assert got == bytes(be.durable[w.lo * SECTOR:w.hi * SECTOR]), \
            f"{w}: reads back other than the durable content"
    log.info("flush: %d surviving writes read back through the device",
             min(4, len(survivors)))

    # -- 4. writethrough mode -----------------------------------------------------------------
    for _ in range(rng.randrange(1, 4)):
        choice = _random_write(rng, drv, cap, [])
        typ, sector, out, lo, hi, data = choice
        req = await drv.request(rng.randrange(nq), typ, sector, out, 0)
        assert req.status == rm.VIRTIO_BLK_S_OK
        dur.add(req, lo, hi, data)
    cached = set(be.volatile)
    await _switch(bt, drv, 0, 0)
    nwt = rng.randrange(8, 16)
    for _ in range(nwt):
        choice = _random_write(rng, drv, cap, [])
        typ, sector, out, lo, hi, data = choice
        q = rng.randrange(nq)
        req = await drv.request(q, typ, sector, out, 0, drv.random_layout(rng, len(out), 0, q=q))
        assert req.status == rm.VIRTIO_BLK_S_OK, f"{req}: status {req.status}"
        dur.add(req, lo, hi, data)
        # [VIRTIO-1.2 5.2.6.2] With writeback 0 all the time between submission and
        # completion, a write is stable once completed.
        assert bytes(be.durable[lo * SECTOR:hi * SECTOR]) == data, \
            f"writethrough: {req} is not durable when the driver sees it complete"
        assert not set(range(lo, hi)) & set(be.volatile), \
            f"writethrough: sectors of {req} are still cached"
    still = cached & set(be.volatile)
    log.info("flush: writethrough mode: %d writes, each durable when the driver saw it "
             "complete; %d sectors cached before the switch still wait for a FLUSH",
             nwt, len(still))
    assert await drv.flush() == rm.VIRTIO_BLK_S_OK
    assert be.volatile == [] and be.durable == be.image, "a FLUSH left sectors cached"
    log.info("flush: a final FLUSH made the cache durable (%d sectors were lost in the power "
             "loss, all of writes acknowledged after the last FLUSH before it)", be.lost)
    await bt.finish()

