# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the avail reader (the request engine's first stage): doorbells
in, chain heads out. Under random back-pressure on every stream and a slot that is free only
now and then, each head the driver published comes out exactly once, in ring order per queue,
with the slot that was free when it was taken; entries published later are found after a new
doorbell; with EVENT_IDX a drained queue gets ``avail_event`` [VIRTIO-1.2 2.7.10]; the next look at
``avail->idx`` travels with the read of the entries it last showed; an
``avail->idx`` more than the queue size ahead is a broken job and nothing after it
[VIRTIO-1.2 2.7.13.3]. SEED replays a run."""

import random
import struct

import pytest
from amaranth.sim import Simulator

from model import regmap as rm
from model.params import DeviceParams
from rtl.blk_avail import AvailReader
from tb.seed import seed_from_env
from .dma_host import DmaHost, wait_handshake


QSIZE = 16
RINGS = [(0x1000, 0x2000, 0x3000), (0x5000, 0x6000, 0x7000)]   # desc, avail, used per queue


class Ring:
    """One queue's available ring in host memory, as a driver fills it."""
    def __init__(self, host, index, rng):
        self.host, self.index, self.rng = host, index, rng
        self.desc, self.avail, self.used = RINGS[index]
        self.published = []
        self.idx = 0

    def publish(self, n):
        for _ in range(n):
            head = self.rng.randrange(QSIZE)
            self.host.put(self.avail + 4 + 2 * (self.idx % QSIZE), struct.pack("<H", head))
            self.published.append(head)
            self.idx = (self.idx + 1) & 0xffff
        self.host.put(self.avail + 2, struct.pack("<H", self.idx))

    def avail_event(self):
        return self.host.u16(self.used + 4 + 8 * QSIZE)


def configure(ctx, dut, features):
    """The driver's queue configuration, features and DRIVER_OK."""
    for i, (desc, avail, used) in enumerate(RINGS):
        ctx.set(dut.queues[i], {"size": QSIZE, "msix_vector": 0, "enable": 1,
                                "desc": desc, "driver": avail, "device": used})
    ctx.set(dut.driver_features, features)
    ctx.set(dut.device_status, 0x0f)


async def kick(ctx, dut, q):
    """A doorbell for queue ``q``."""
    ctx.set(dut.notify.valid, 1)
    ctx.set(dut.notify.payload, {"queue": q})
    await wait_handshake(ctx, dut.notify)
    ctx.set(dut.notify.valid, 0)


def run(rng, event_idx, rounds, bad_idx_at=None, avail_prefetch=4):
    params = DeviceParams(num_queues=2, max_queue_size=QSIZE, request_slots=4,
                          avail_prefetch=avail_prefetch)
    dut = AvailReader(params)
    host = DmaHost(rng)
    rings = [Ring(host, i, rng) for i in range(2)]
    jobs = []
    features = (1 << rm.VIRTIO_RING_F_EVENT_IDX) if event_idx else 0

    async def slots(ctx):
        # A slot is free now and then, a different one each time.
        while True:
            ctx.set(dut.slot_free, rng.random() < 0.5)
            ctx.set(dut.free_slot, rng.randrange(4))
            await ctx.tick()

    async def consumer(ctx):
        while True:
            ctx.set(dut.job.ready, rng.random() < 0.6)
            _, _, v, r, p, free, slot = await ctx.tick().sample(
                dut.job.valid, dut.job.ready, dut.job.payload, dut.slot_free, dut.free_slot)
            if v and r:
                assert free or p.broken, "a head dispatched with no slot free"
                jobs.append((p.queue, p.head, p.slot, p.broken, slot))

    async def testbench(ctx):
        configure(ctx, dut, features)
        for n in range(rounds):
            for ring in rings:
                if bad_idx_at is not None and n > bad_idx_at and ring.index == 1:
                    continue                # the driver leaves the broken index alone
                if n == bad_idx_at and ring.index == 1:
                    # [VIRTIO-1.2 2.7.13.3] more than the queue size ahead.
                    ring.host.put(ring.avail + 2, struct.pack("<H", ring.idx + QSIZE + 1))
                else:
                    # No more than the ring holds beyond what was dispatched.
                    done = sum(1 for j in jobs if j[0] == ring.index)
                    ring.publish(rng.randrange(0, QSIZE - (len(ring.published) - done) + 1))
                await kick(ctx, dut, ring.index)
            for _ in range(rng.randrange(50, 400)):
                await ctx.tick()
        # `idle` also shows for a cycle between two queues' turns: done is every head out
        # and, with EVENT_IDX, every drained queue's avail_event written.
        def settled(r):
            if sum(1 for j in jobs if j[0] == r.index) != len(r.published):
                return False
            return not (event_idx and r.published) or r.avail_event() == r.idx
        for _ in range(3000):
            _, _, idle = await ctx.tick().sample(dut.idle)
            if idle and all(settled(r) for r in rings):
                break
        for _ in range(20):
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    # Background testbenches, not processes, here as in DmaHost.add_to: these share
    # the seeded rng, and only testbenches run in a fixed order.
    host.add_to(sim, rd=dut.rd, wr=dut.wr)
    sim.add_testbench(slots, background=True)
    sim.add_testbench(consumer, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return rings, jobs, host


@pytest.mark.parametrize("prefetch", [1, 4, 16])
@pytest.mark.parametrize("event_idx", [False, True])
def test_heads_in_ring_order(event_idx, prefetch):
    seed = seed_from_env() + event_idx
    rng = random.Random(seed)
    rings, jobs, host = run(rng, event_idx, rounds=8, avail_prefetch=prefetch)
    assert not any(j[3] for j in jobs), "a broken job on a well-formed ring"
    for ring in rings:
        mine = [j[1] for j in jobs if j[0] == ring.index]
        assert mine == ring.published, f"queue {ring.index}: heads {mine}"
    # Each head went into the slot that was free when it was taken.
    assert all(j[2] == j[4] for j in jobs)
    # Reads of the avail rings only, each inside its ring, at most `prefetch` entries.
    for addr, length in host.reads:
        ring = next(r for r in rings if r.avail <= addr < r.avail + 4 + 2 * QSIZE)
        assert addr + length <= ring.avail + 4 + 2 * QSIZE, f"read {addr:#x}+{length}"
        assert length <= max(4, 2 * prefetch), f"read of {length} bytes at {addr:#x}"
    # And batches larger than four entries when they may be.
    longest = max(length for addr, length in host.reads)
    assert longest == 8 if prefetch == 4 else longest > 8 if prefetch > 4 else longest == 4
    if event_idx:
        # [VIRTIO-1.2 2.7.10] The drained queue asks for a doorbell at the next entry.
        for ring in rings:
            if ring.published:
                assert ring.avail_event() == ring.idx, (
                    f"queue {ring.index}: avail_event {ring.avail_event()}, idx {ring.idx}")
    else:
        assert not host.writes, "avail_event written without EVENT_IDX"


def test_index_too_far_ahead_is_a_broken_job_and_the_last():
    rng = random.Random(seed_from_env())
    rings, jobs, _ = run(rng, False, rounds=4, bad_idx_at=2)
    broken = [k for k, j in enumerate(jobs) if j[3]]
    assert len(broken) == 1, f"{len(broken)} broken jobs"
    k = broken[0]
    assert jobs[k][0] == 1
    # Nothing is dispatched after it, from either queue.
    assert k == len(jobs) - 1, jobs[k:]


def test_head_out_of_range_is_a_broken_job_and_the_last():
    # [VIRTIO-1.2 2.7.5] A head past the descriptor table, in the middle of a batch: the heads
    # before it go out, it goes out broken, and not one after it (it is the reader that
    # stops, so the walker never reads the chains behind it).
    rng = random.Random(seed_from_env())
    params = DeviceParams(num_queues=2, max_queue_size=QSIZE, request_slots=4,
                          avail_prefetch=16)
    dut = AvailReader(params)
    host = DmaHost(rng)
    ring = Ring(host, 0, rng)
    ring.publish(3)
    bad = len(ring.published)
    ring.host.put(ring.avail + 4 + 2 * ring.idx, struct.pack("<H", QSIZE + 5))
    ring.published.append(QSIZE + 5)
    ring.idx += 1
    ring.publish(3)
    jobs = []

    async def consumer(ctx):
        ctx.set(dut.slot_free, 1)
        ctx.set(dut.job.ready, 1)
        while True:
            _, _, v, p = await ctx.tick().sample(dut.job.valid, dut.job.payload)
            if v:
                jobs.append((p.head, p.broken))

    async def testbench(ctx):
        configure(ctx, dut, 0)
        await kick(ctx, dut, 0)
        for _ in range(400):
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    host.add_to(sim, rd=dut.rd, wr=dut.wr)
    sim.add_testbench(consumer, background=True)
    sim.add_testbench(testbench)
    sim.run()
    want = [(h, 0) for h in ring.published[:bad]] + [(QSIZE + 5, 1)]
    assert jobs == want, jobs


def test_a_seed_replays_exactly():
    # The same seed twice: the same heads, reads and writes, cycle for cycle.
    seed = seed_from_env()
    traces = []
    for _ in range(3):
        rings, jobs, host = run(random.Random(seed), True, rounds=4)
        traces.append((jobs, host.reads, host.writes))
    assert traces[0] == traces[1] == traces[2]


def test_index_read_travels_with_the_entries():
    # When a batch of entries is all that avail->idx showed, the next look at avail->idx goes
    # out while that batch's read is still in flight: one round trip per batch, not two.
    rng = random.Random(seed_from_env())
    rings, jobs, host = run(rng, False, rounds=8)

    def entries_of(ring, addr):
        return ring.avail + 4 <= addr < ring.avail + 4 + 2 * QSIZE

    together = [s for s in host.snapshots for r in rings
                if s[-1] == r.avail and any(entries_of(r, a) for a in s[:-1])]
    assert together, "no avail->idx read went out with an entries read in flight"


# -- VIRTIO_F_NOTIFICATION_DATA: the avail index in the doorbell [VIRTIO-1.2 2.9] -------------

ND = 1 << rm.VIRTIO_F_NOTIFICATION_DATA


def run_doorbells(steps, n_entries, shown, features=ND, hold_slots=False):
    """Queue 0 with ``n_entries`` heads in its ring and ``avail->idx`` showing ``shown`` of
    them; ``steps`` are doorbells ``(has_idx, avail_idx)``, each followed by 200 cycles. With
    ``hold_slots`` no slot is free until after the last doorbell. Returns the ring, the jobs
    (head, broken) and the host."""
    rng = random.Random(seed_from_env())
    params = DeviceParams(num_queues=2, max_queue_size=QSIZE, request_slots=4,
                          avail_prefetch=16)
    dut = AvailReader(params)
    host = DmaHost(rng)
    ring = Ring(host, 0, rng)
    ring.publish(n_entries)
    host.put(ring.avail + 2, struct.pack("<H", shown))
    jobs = []
    free = [not hold_slots]

    async def consumer(ctx):
        ctx.set(dut.job.ready, 1)
        while True:
            ctx.set(dut.slot_free, free[0])
            _, _, v, p = await ctx.tick().sample(dut.job.valid, dut.job.payload)
            if v and free[0]:
                jobs.append((p.head, p.broken))

    async def testbench(ctx):
        configure(ctx, dut, features)
        for has_idx, idx in steps:
            ctx.set(dut.notify.valid, 1)
            ctx.set(dut.notify.payload, {"queue": 0, "avail_idx": idx, "has_idx": has_idx})
            await wait_handshake(ctx, dut.notify)
            ctx.set(dut.notify.valid, 0)
            for _ in range(200):
                await ctx.tick()
        free[0] = True
        for _ in range(400):
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    host.add_to(sim, rd=dut.rd, wr=dut.wr)
    sim.add_testbench(consumer, background=True)
    sim.add_testbench(testbench)
    sim.run()
    return ring, jobs, host


def idx_reads(ring, host):
    """The reads in command order: "idx" for avail->flags/idx, "ring" for entries."""
    return ["idx" if addr == ring.avail else "ring" for addr, _ in host.reads]


@pytest.mark.parametrize("shown", [3, 0])
def test_doorbell_index_ahead_is_served_without_an_avail_idx_read_first(shown):
    # Ahead by at most the queue size: the entries up to it are read first, avail->idx right
    # behind them; it showing less (a driver ahead of its avail->idx) keeps the index.
    ring, jobs, host = run_doorbells([(1, 3)], 3, shown)
    assert jobs == [(h, 0) for h in ring.published]
    assert idx_reads(ring, host) == ["ring", "idx"]


def test_doorbell_index_at_the_queue_size_is_a_hint():
    ring, jobs, host = run_doorbells([(1, QSIZE)], QSIZE, QSIZE)
    assert jobs == [(h, 0) for h in ring.published]
    assert idx_reads(ring, host) == ["ring", "idx"]


@pytest.mark.parametrize("stale", [0, 1, 2, 3])
def test_doorbell_index_at_or_behind_what_is_known_changes_nothing(stale):
    # The first doorbell's index is known (its entries wait for a slot); a second one at or
    # behind it is a repeat: no further read of avail->idx, once the queue drains either.
    ring, jobs, host = run_doorbells([(1, 3), (1, stale)], 3, 3, hold_slots=True)
    assert jobs == [(h, 0) for h in ring.published]
    assert idx_reads(ring, host) == ["ring", "idx"]


def test_doorbell_index_at_last_avail_after_draining_changes_nothing():
    ring, jobs, host = run_doorbells([(1, 3), (1, 3)], 3, 3)
    assert jobs == [(h, 0) for h in ring.published]
    assert idx_reads(ring, host) == ["ring", "idx"]


@pytest.mark.parametrize("has_idx, idx, features, why", [
    (1, QSIZE + 1, ND, "more than the queue size ahead"),
    (1, 0xffff, ND, "stale, one behind last_avail_idx"),
    (1, 0x8000, ND, "0x8000 ahead"),
    (0, 3, ND, "no index (a narrow write)"),
    (1, 3, 0, "NOTIFICATION_DATA not negotiated")])
def test_doorbell_without_a_usable_index_reads_avail_idx(has_idx, idx, features, why):
    # A doorbell without data: avail->idx is read first, and decides.
    ring, jobs, host = run_doorbells([(has_idx, idx)], 3, 2, features=features)
    assert jobs == [(h, 0) for h in ring.published[:2]], why
    assert idx_reads(ring, host) == ["idx", "ring", "idx"], why
