"""The simulation harness's transactors (``tb/harness.py``), in Amaranth's simulator.

:class:`StreamFeeder`: chunks the testbench loads come out as a stream in order, a beat per
cycle with no bubble between chunks while the next one is loaded in time, a shown beat stays
until taken, idle cycles come at the rate asked for and replay with the seed, and a load asked
for is taken as soon as a chunk buffer is free, ``taken`` telling the testbench.
:class:`StreamCollector`: every beat taken comes back in a published chunk, in order, cut at
``last`` and when full, ``seq`` counting chunks, ``ready`` low at the rate asked for and never
without ``accept``. Both keep their handshake with the testbench through a reset. The default
build's harness elaborates (the system tests build every variant's).
"""

import random

import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from model.params import VARIANTS
from tb.harness import StreamFeeder, StreamCollector, SimHarness, StorageHarness, tlp_chunk
from tb.seed import seed_from_env


W = 12


def _chunks(rng, n, k):
    """``n`` chunks of 1..k random beats."""
    return [[rng.randrange(1 << W) for _ in range(rng.randint(1, k))] for _ in range(n)]


async def _load(ctx, port, beats):
    """The testbench's load: wait until the last one was taken (``taken`` equals ``toggle``),
    then data, count and a change of ``toggle``."""
    while ctx.get(port.taken) != ctx.get(port.toggle):
        await ctx.tick()
    ctx.set(port.data, sum(b << W * i for i, b in enumerate(beats)))
    ctx.set(port.count, len(beats))
    ctx.set(port.toggle, ctx.get(port.toggle) ^ 1)


def _run(dut, *benches, deadline=200_000):
    sim = Simulator(dut)
    sim.add_clock(4e-9)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run_until(deadline * 4e-9)


@pytest.mark.parametrize("k", [1, 4])
def test_feeder_sends_every_chunk_in_order_without_bubbles(k):
    rng = random.Random(seed_from_env())
    dut = StreamFeeder(W, k)
    chunks = _chunks(rng, 40, k)
    want = [b for c in chunks for b in c]
    got, cycles = [], []

    async def loader(ctx):
        for c in chunks:
            await _load(ctx, dut.tb, c)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(got) < len(want):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                got.append(payload)
                cycles.append(cycle)

    _run(dut, loader, sink)
    assert got == want
    # The loader keeps a chunk ready ahead of the one being sent: from the second beat on,
    # a beat every cycle (with chunks of one beat the loader's own handshake paces it).
    if k > 1:
        assert cycles[-1] - cycles[1] == len(want) - 2


def test_feeder_holds_a_beat_and_idles_at_the_rate_asked_for():
    seed = seed_from_env()
    rng = random.Random(seed)
    k = 8
    dut = StreamFeeder(W, k)
    chunks = _chunks(rng, 120, k)
    want = [b for c in chunks for b in c]
    got = []
    stats = {"idle": 0, "offered": 0}

    async def loader(ctx):
        ctx.set(dut.tb.threshold, int(0.3 * 65536))
        ctx.set(dut.tb.seed, seed & 0xffffffff)
        for c in chunks:
            await _load(ctx, dut.tb, c)

    async def sink(ctx):
        shown = None
        while len(got) < len(want):
            ready = rng.random() < 0.7
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if shown is not None:
                # [stream] a beat shown stays, unchanged, until it is taken.
                assert valid and payload == shown
            if valid:
                stats["offered"] += 1
                if ready:
                    got.append(payload)
                    shown = None
                else:
                    shown = payload
            elif ctx.get(dut.tb.busy):
                stats["idle"] += 1

    _run(dut, loader, sink)
    assert got == want
    # Idle cycles while beats wait: about 30% of the cycles not holding a beat.
    rate = stats["idle"] / (stats["idle"] + len(want))
    assert 0.2 < rate < 0.4, f"idle rate {rate:.2f} (seed {seed})"


def test_feeder_takes_a_load_when_it_has_room():
    dut = StreamFeeder(W, 2)

    async def bench(ctx):
        assert ctx.get(dut.tb.taken) == 0 and not ctx.get(dut.tb.busy)
        ctx.set(dut.o.ready, 0)
        for beats in ([1, 2], [3]):
            await _load(ctx, dut.tb, beats)
            await ctx.tick()
        assert ctx.get(dut.tb.taken) == 0 and ctx.get(dut.tb.busy), "both chunks taken"
        await _load(ctx, dut.tb, [4])
        for _ in range(5):
            await ctx.tick()
            assert ctx.get(dut.tb.taken) != ctx.get(dut.tb.toggle), \
                "a third chunk taken with both buffers full"
        ctx.set(dut.o.ready, 1)
        for want in (1, 2, 3, 4):
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            assert valid and payload == want
        assert ctx.get(dut.tb.taken) == ctx.get(dut.tb.toggle)

    _run(dut, bench)


def _with_reset(dut):
    """``dut`` in a module with an explicit ``sync`` domain, and its reset signal."""
    m = Module()
    m.domains.sync = cd = ClockDomain()
    m.submodules.dut = dut
    return m, cd.rst


def test_handshakes_survive_reset():
    """A reset (every test of a simulation starts with one) empties the buffers but keeps
    ``taken`` and ``seq``, which the testbench reads when it starts."""
    feeder, collector = StreamFeeder(W, 2), StreamCollector(W, 1)
    m, rst = _with_reset(feeder)
    m.submodules.collector = collector

    async def bench(ctx):
        ctx.set(collector.tb.accept, 1)
        ctx.set(collector.i.valid, 1)
        ctx.set(collector.i.payload, 9)
        await ctx.tick()
        ctx.set(collector.i.valid, 0)
        await _load(ctx, feeder.tb, [7, 8])
        await ctx.tick()
        ctx.set(rst, 1)
        await ctx.tick()
        await ctx.tick()
        ctx.set(rst, 0)
        assert ctx.get(feeder.tb.taken) == 1 and ctx.get(collector.tb.seq) == 1
        assert not ctx.get(feeder.o.valid), "a reset empties the chunk buffers"
        await _load(ctx, feeder.tb, [5])
        await ctx.tick()
        ctx.set(feeder.o.ready, 1)
        _, _, valid, payload = await ctx.tick().sample(feeder.o.valid, feeder.o.payload)
        assert valid and payload == 5

    _run(m, bench)


@pytest.mark.parametrize("k", [1, 5])
def test_collector_publishes_every_beat(k):
    seed = seed_from_env()
    rng = random.Random(seed)
    dut = StreamCollector(W + 1, k, last=W)
    packets = [[rng.randrange(1 << W) for _ in range(rng.randint(1, 3 * k))] for _ in range(60)]
    published = []

    async def source(ctx):
        for p in packets:
            for i, b in enumerate(p):
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, b | (i == len(p) - 1) << W)
                await ctx.tick().until(dut.i.ready)
                ctx.set(dut.i.valid, 0)

    async def reader(ctx):
        ctx.set(dut.tb.accept, 1)
        ctx.set(dut.tb.threshold, int(0.25 * 65536))
        seq = ctx.get(dut.tb.seq)
        total = sum(len(p) for p in packets)
        while sum(len(c) for c in published) < total:
            await ctx.tick()
            now = ctx.get(dut.tb.seq)
            assert now - seq in (0, 1), "two chunks published in one cycle"
            if now != seq:
                seq = now
                n = ctx.get(dut.tb.count)
                value = ctx.get(dut.tb.data)
                published.append([value >> (W + 1) * (k - n + i) & ((1 << W + 1) - 1)
                                  for i in range(n)])

    _run(dut, source, reader)
    # Chunks cut each packet at its last beat and at k beats.
    want = []
    for p in packets:
        for i in range(0, len(p), k):
            part = p[i:i + k]
            want.append([b | (i + j == len(p) - 1) << W for j, b in enumerate(part)])
    assert published == want


def test_collector_needs_accept():
    dut = StreamCollector(W, 1)

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 5)
        for _ in range(10):
            await ctx.tick()
            assert not ctx.get(dut.i.ready)
        assert ctx.get(dut.tb.seq) == 0
        ctx.set(dut.tb.accept, 1)
        await ctx.tick()
        assert ctx.get(dut.tb.seq) == 1 and ctx.get(dut.tb.data) == 5

    _run(dut, bench)


def test_constructors_check_their_arguments():
    with pytest.raises(ValueError, match=r"^StreamFeeder chunk must be a positive integer, "
                                         r"not 0$"):
        StreamFeeder(8, 0)
    with pytest.raises(ValueError, match=r"^StreamCollector chunk must be a positive integer, "
                                         r"not 'x'$"):
        StreamCollector(8, "x")
    with pytest.raises(ValueError, match=r"^StreamCollector last bit 8 is not a bit of a "
                                         r"8-bit beat$"):
        StreamCollector(8, 2, last=8)


def test_harness_elaborates():
    """The harness of the default build (the system tests build every variant's), and the
    storage transactors alone; a TLP of the largest payload fits one chunk."""
    from amaranth.back import rtlil
    p = VARIANTS["virtio_blk_ep"]
    text = rtlil.convert(SimHarness(p), name="virtio_blk_ep")
    assert "module \\virtio_blk_ep" in text
    assert tlp_chunk(p.data_width) * p.data_width >= (16 + 256) * 8
    rtlil.convert(StorageHarness(p.data_width), name="storage_harness")
