# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the TLP arbiter and router: packets stay whole and in order per
source, every packet arrives exactly once, no source starves, and random stalls change none of it.
"""

import random

import pytest
from amaranth.sim import Simulator

from tb.seed import seed_from_env
from rtl.tlp_mux import TlpArbiter, TlpRouter
from .sim_helpers import tlp_put, tlp_get, mem_req


def random_packet(rng, source, index):
    """A memory write carrying (source, index) in its payload so the sink can tell it apart."""
    length = rng.choice([1, 1, 2, 3, 4, 7, 16])
    data = [source << 24 | index << 8 | k for k in range(length)]
    return mem_req(0x1000 + 4 * index, length, 0xf, 0xf if length > 1 else 0, data=data)


def random_cpl(rng, index, with_data):
    """A completion (Cpl or CplD) tagged with ``index``."""
    n = rng.choice([1, 2, 5]) if with_data else 0
    dw0 = (0b010 if with_data else 0) << 29 | 0b01010 << 24 | n
    return [dw0, 0x0100_0000 | 4 * n, index << 8] + [index << 16 | k for k in range(n)]


@pytest.mark.parametrize("stalls", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_arbiter_keeps_packets_whole_and_ordered(n, stalls):
    rng = random.Random(seed_from_env())
    per_source = 40
    packets = [[random_packet(rng, s, i) for i in range(per_source)] for s in range(n)]
    dut = TlpArbiter(64, n)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    idle, stall = (0.3, 0.3) if stalls else (0.0, 0.0)
    received = []

    def source(s):
        async def bench(ctx):
            local = random.Random(rng.randrange(1 << 32))
            for dws in packets[s]:
                await tlp_put(ctx, dut.i[s], dws, local, idle)
        return bench

    async def sink(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for _ in range(n * per_source):
            received.append(await tlp_get(ctx, dut.o, local, stall))

    for s in range(n):
        sim.add_testbench(source(s))
    sim.add_testbench(sink)
    sim.run()

    by_source = [[] for _ in range(n)]
    for dws in received:
        by_source[dws[3] >> 24].append(dws)
    assert by_source == packets


def test_arbiter_round_robin_under_load():
    """With every source always ready to send, grants rotate: no source waits two turns."""
    n = 3
    dut = TlpArbiter(64, n)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    order = []

    def source(s):
        async def bench(ctx):
            for i in range(3):
                await tlp_put(ctx, dut.i[s], mem_req(0, 2, 0xf, 0xf, data=[s << 24, 0]),
                                 random.Random(0), 0.0)
        return bench

    async def sink(ctx):
        for _ in range(3 * n):
            order.append((await tlp_get(ctx, dut.o, random.Random(0), 0.0))[3] >> 24)

    for s in range(n):
        sim.add_testbench(source(s))
    sim.add_testbench(sink)
    sim.run()
    assert order == [0, 1, 2] * 3


def test_arbiter_rejects_no_sources():
    with pytest.raises(ValueError, match="needs at least one source"):
        TlpArbiter(64, 0)


@pytest.mark.parametrize("stalls", [False, True])
def test_router_splits_completions_from_requests(stalls):
    rng = random.Random(seed_from_env())
    stream = []
    for i in range(120):
        kind = rng.choice(["req", "cpl", "cpld"])
        if kind == "req":
            stream.append(("req", random_packet(rng, 0, i)))
        else:
            stream.append(("cpl", random_cpl(rng, i, kind == "cpld")))
    # A locked completion goes with the completions too.
    cpllk = random_cpl(rng, 200, True)
    cpllk[0] |= 1 << 24
    stream.append(("cpl", cpllk))
    want = {k: [dws for kind, dws in stream if kind == k] for k in ("req", "cpl")}

    dut = TlpRouter(64)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    idle, stall = (0.3, 0.3) if stalls else (0.0, 0.0)
    got = {"req": [], "cpl": []}

    async def source(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for _, dws in stream:
            await tlp_put(ctx, dut.i, dws, local, idle)

    def sink(kind, port):
        async def bench(ctx):
            local = random.Random(rng.randrange(1 << 32))
            for _ in range(len(want[kind])):
                got[kind].append(await tlp_get(ctx, port, local, stall))
        return bench

    sim.add_testbench(source)
    sim.add_testbench(sink("req", dut.requests))
    sim.add_testbench(sink("cpl", dut.completions))
    sim.run()
    assert got == want


@pytest.mark.parametrize("stalls", [False, True])
def test_bus_master_gate(stalls):
    """[PCIe-3.0 7.5.1.1] Requests that start with Bus Master Enable clear are dropped whole;
    those that started with it set, and every completion, pass whole; ``o.valid`` never falls
    without a transfer (the verdict of a presented first beat holds)."""
    from rtl.tlp_mux import BusMasterGate
    rng = random.Random(seed_from_env())
    n = 120
    packets = [random_cpl(rng, i, rng.random() < 0.5) if rng.random() < 0.4
               else random_packet(rng, 1, i) for i in range(n)]
    dut = BusMasterGate(64)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    idle, stall = (0.3, 0.3) if stalls else (0.0, 0.0)
    verdicts = []            # per packet, the Bus Master Enable seen at its first beat's take
    received = []
    presented = []

    async def source(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for dws in packets:
            await tlp_put(ctx, dut.i, dws, local, idle)

    async def toggler(ctx):
        local = random.Random(rng.randrange(1 << 32))
        while True:
            ctx.set(dut.bus_master, local.random() < 0.6)
            await ctx.tick().repeat(local.randrange(1, 12))

    async def sink(ctx):
        local = random.Random(rng.randrange(1 << 32))
        while True:
            received.append(await tlp_get(ctx, dut.o, local, stall))

    async def watch(ctx):
        # The gate's verdict on each packet: the Bus Master Enable at the cycle its first beat
        # was first presented to the gate; a valid output may not fall without a transfer.
        was_valid = False
        first_seen = None
        async for _, _, i_valid, i_first, i_ready, o_valid, o_ready, bme in ctx.tick().sample(
                dut.i.valid, dut.i.payload.first, dut.i.ready, dut.o.valid, dut.o.ready,
                dut.bus_master):
            assert not (was_valid and not o_valid), "o.valid fell without a transfer"
            was_valid = o_valid and not o_ready
            if i_valid and i_first and first_seen is None:
                first_seen = bme
            if i_valid and i_ready and i_first:
                verdicts.append(first_seen)
                first_seen = None

    sim.add_testbench(source)
    sim.add_testbench(toggler, background=True)
    sim.add_testbench(sink, background=True)
    sim.add_testbench(watch, background=True)
    sim.run()
    is_cpl = [(p[0] >> 24 & 0x1e) == 0b01010 for p in packets]
    want = [p for p, c, v in zip(packets, is_cpl, verdicts) if c or v]
    assert len(verdicts) == n
    assert received == want, f"{len(received)} packets out, {len(want)} expected"
    assert any(not v and not c for c, v in zip(is_cpl, verdicts)), "no request was dropped"


def test_arbiter_holds_a_shown_beat():
    """A beat the arbiter shows and the sink does not take stays, payload and all, until it is
    taken, even when a port ahead of it in the round robin becomes valid meanwhile (stream
    rules; the BusMasterGate's verdict on a shown first beat relies on it)."""
    dut = TlpArbiter(64, 3)
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    def beat(port):
        return {"data": 0x1000 + port, "keep": 0b11, "first": 1, "last": 1}

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        # Port 2 shows a beat; the sink waits.
        ctx.set(dut.i[2].payload, beat(2))
        ctx.set(dut.i[2].valid, 1)
        await ctx.tick()
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.data) == 0x1002
        # Port 0 (first in line after reset) becomes valid: the shown beat must stay.
        ctx.set(dut.i[0].payload, beat(0))
        ctx.set(dut.i[0].valid, 1)
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload.data) == 0x1002, \
                "the shown beat was replaced before it was taken"
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        ctx.set(dut.i[2].valid, 0)
        assert ctx.get(dut.o.payload.data) == 0x1000, "port 0 goes next"

    sim.add_testbench(bench)
    sim.run()
