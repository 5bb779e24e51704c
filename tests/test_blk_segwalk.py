# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of :class:`rtl.blk_segwalk.SegmentWalker`: random segment tables and
byte ranges are cut into exactly the DMA commands a Python reference cuts them into (a piece
ends at a segment's end or after DMA_MAX_LENGTH bytes, never crosses either), under random
back-pressure on the pieces, with the stream contract kept, ``busy`` high from the walk until
its last piece is taken, and the table address taken from a register. SEED replays a run."""

import random

from amaranth.sim import Simulator

from model.params import DeviceParams
from rtl.blk_segwalk import SegmentWalker
from rtl.blk_slots import seg_index_bits
from rtl.dma_layouts import DMA_MAX_LENGTH
from tb.seed import seed_from_env


PARAMS = DeviceParams(request_slots=4, seg_max=6)


def reference(segments, first, end, off, length):
    """The pieces ``(addr, len)`` of bytes ``[off, off + length)`` of the stream of
    ``segments[first:end]`` (each ``(addr, len)``)."""
    pieces = []
    pos = 0
    stop = off + length
    for addr, n in segments[first:end]:
        lo, hi = max(off, pos), min(stop, pos + n)
        while lo < hi:
            take = min(hi - lo, DMA_MAX_LENGTH)
            pieces.append((addr + lo - pos, take))
            lo += take
        pos += n
    return pieces


def random_walks(rng, n):
    """``n`` walks on random tables: ``(tables, table, first, end, off, len, write)``."""
    bits = seg_index_bits(PARAMS)
    depth = PARAMS.seg_max + 2
    walks = []
    for _ in range(n):
        tables = [[(rng.randrange(1 << 64 - 1), rng.choice([1, 3, 16, 512, 4096, 70000,
                                                            rng.randrange(1, 1 << 18)]))
                   for _ in range(depth)] for _ in range(PARAMS.request_slots)]
        table = rng.randrange(PARAMS.request_slots)
        first = rng.randrange(depth)
        end = rng.randrange(first + 1, depth + 1)
        total = sum(n for _, n in tables[table][first:end])
        off = rng.choice([0, 16, rng.randrange(total)])
        off = min(off, total - 1)
        length = rng.choice([total - off, rng.randrange(0, total - off + 1), 1])
        walks.append((tables, table, first, end, off, length, rng.randrange(2)))
    assert (1 << bits) >= depth
    return walks


def run(walks, rng, p_ready, seed):
    dut = SegmentWalker(PARAMS)
    bits = seg_index_bits(PARAMS)
    got = []
    state = {"tables": None, "done": False}

    async def table_port(ctx):
        # A synchronous read port: the entry at the address of the cycle before.
        async for _, _, addr in ctx.tick().sample(dut.seg_r_addr):
            tables = state["tables"]
            if tables is not None:
                a, n = tables[addr >> bits][addr & ((1 << bits) - 1)] \
                    if (addr & ((1 << bits) - 1)) < len(tables[0]) else (0, 0)
                ctx.set(dut.seg_r_data, {"addr": a, "len": n, "write": 0})

    async def driver(ctx):
        for k, (tables, table, first, end, off, length, write) in enumerate(walks):
            # Wait for the walker to finish the last walk, then change the tables.
            while ctx.get(dut.busy):
                await ctx.tick()
            state["tables"] = tables
            await ctx.tick()
            ctx.set(dut.start.valid, 1)
            ctx.set(dut.start.payload, {"table": table, "first": first, "end": end,
                                        "off": off, "len": length, "write": write})
            await ctx.tick().until(dut.start.ready)
            ctx.set(dut.start.valid, 0)
            got.append(("walk", k))
            await ctx.tick()
            # busy from the cycle after the walk was taken, while anything is due.
            if length:
                assert ctx.get(dut.busy), f"seed {seed}: walk {k} taken, busy low"
        while ctx.get(dut.busy):
            await ctx.tick()
        state["done"] = True

    async def sink(ctx):
        shown = None
        while not state["done"]:
            ready = rng.random() < p_ready
            ctx.set(dut.piece.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.piece.valid, dut.piece.payload)
            if shown is not None:
                assert valid and payload == shown, f"seed {seed}: a piece changed before taken"
            if valid and ready:
                got.append((payload.cmd.addr, payload.cmd.length, payload.write))
                shown = None
            elif valid:
                shown = payload

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(table_port)
    sim.add_testbench(driver)
    sim.add_testbench(sink)
    pieces = len(expected(walks)) - len(walks)
    sim.run_until(1e-8 * (100 + 40 * len(walks) + 20 * pieces))
    assert state["done"], f"seed {seed}: the walker stopped"
    return got


def expected(walks):
    out = []
    for k, (tables, table, first, end, off, length, write) in enumerate(walks):
        out.append(("walk", k))
        out += [(a, n, write) for a, n in reference(tables[table], first, end, off, length)]
    return out


def test_reference():
    segs = [(0x1000, 16), (0x2000, 4096), (0x9000, 1)]
    assert reference(segs, 0, 3, 0, 16) == [(0x1000, 16)]
    assert reference(segs, 0, 3, 16, 4096) == [(0x2000, 4096)]
    assert reference(segs, 0, 3, 8, 4104) == [(0x1008, 8), (0x2000, 4096)]
    assert reference(segs, 1, 3, 4095, 2) == [(0x2fff, 1), (0x9000, 1)]
    assert reference([(0, 3 * DMA_MAX_LENGTH)], 0, 1, 1, 2 * DMA_MAX_LENGTH) == \
        [(1, DMA_MAX_LENGTH), (1 + DMA_MAX_LENGTH, DMA_MAX_LENGTH)]


def pieces_in_order(got):
    # The driver logs a walk when it is taken; pieces of walk k come after it. The logs of
    # the two processes interleave only at walk boundaries, so compare per walk.
    walks, cur = [], None
    for item in got:
        if item[0] == "walk":
            cur = []
            walks.append(cur)
        else:
            cur.append(item)
    return walks


def test_walks_cut_like_the_reference():
    seed = seed_from_env()
    rng = random.Random(seed)
    print(f"seed {seed} (replay with SEED={seed})")
    walks = random_walks(rng, 40)
    for p_ready in (1.0, 0.3):
        got = run(walks, rng, p_ready, seed)
        want = pieces_in_order(expected(walks))
        assert pieces_in_order(got) == want, f"seed {seed}, p_ready {p_ready}"


def test_first_piece_latency_and_rate():
    """One 4-segment walk, the sink always ready: the first piece is offered in the third
    cycle after the walk is taken, and a segment of one piece follows every other cycle."""
    segs = [(0x1000 * (k + 1), 512) for k in range(PARAMS.seg_max + 2)]
    tables = [segs] * PARAMS.request_slots
    dut = SegmentWalker(PARAMS)
    bits = seg_index_bits(PARAMS)
    seen = []

    async def table_port(ctx):
        async for _, _, addr in ctx.tick().sample(dut.seg_r_addr):
            a, n = tables[addr >> bits][addr & ((1 << bits) - 1)]
            ctx.set(dut.seg_r_data, {"addr": a, "len": n, "write": 0})

    async def bench(ctx):
        ctx.set(dut.piece.ready, 1)
        ctx.set(dut.start.valid, 1)
        ctx.set(dut.start.payload, {"table": 1, "first": 0, "end": 4, "off": 0,
                                    "len": 4 * 512, "write": 1})
        await ctx.tick().until(dut.start.ready)
        ctx.set(dut.start.valid, 0)
        for cycle in range(1, 40):
            _, _, valid, payload = await ctx.tick().sample(dut.piece.valid, dut.piece.payload)
            if valid:
                seen.append((cycle, payload.cmd.addr, payload.cmd.length))
        assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_process(table_port)
    sim.add_testbench(bench)
    sim.run()
    assert [(a, n) for _, a, n in seen] == [(0x1000 * (k + 1), 512) for k in range(4)]
    cycles = [c for c, _, _ in seen]
    assert cycles[0] == 3, f"first piece offered {cycles[0]} cycles after the walk"
    assert [b - a for a, b in zip(cycles, cycles[1:])] == [2, 2, 2]
