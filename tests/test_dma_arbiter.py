# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the DMA arbiters: every client's commands reach the engine
unchanged, each command's data and status come back to the client that issued it and to no
other, in that client's order; an offered command keeps its payload until taken; all of it
under random back-pressure on every stream, with a seed that replays the run."""

import random

import pytest
from amaranth.sim import Simulator

from rtl.dma_arbiter import DmaReadArbiter, DmaWriteArbiter
from tb.seed import seed_from_env


CLIENTS = 3


async def wait_handshake(ctx, stream):
    while True:
        _, _, ready = await ctx.tick().sample(stream.ready)
        if ready:
            return


def command(client, k, rng):
    """Command ``k`` of ``client``: its address says whose it is, so the engine's answer can
    be checked at the client."""
    return {"addr": client << 40 | k << 16 | rng.randrange(8), "length": rng.randrange(1, 70),
            "tag": (client * 37 + k) & 0xff}


def beats_of(cmd):
    n = (cmd["length"] + 7) // 8
    return [{"data": (cmd["addr"] + j) & (1 << 64) - 1, "keep": 0xff, "last": int(j == n - 1)}
            for j in range(n)]


def run(arbiter_cls, seed, n_cmds=40, registered=True):
    rng = random.Random(seed)
    dut = arbiter_cls(CLIENTS, depth=4, registered=registered)
    write = arbiter_cls is DmaWriteArbiter
    cmds = [[command(c, k, rng) for k in range(n_cmds)] for c in range(CLIENTS)]
    seen_at_engine = []
    got_data = [[] for _ in range(CLIENTS)]
    got_status = [[] for _ in range(CLIENTS)]
    answers = []          # commands taken by the engine, still to answer (reads)

    def client_source(c):
        async def proc(ctx):
            for cmd in cmds[c]:
                while rng.random() < 0.3:
                    await ctx.tick()
                ctx.set(dut.i[c].cmd.valid, 1)
                ctx.set(dut.i[c].cmd.payload, cmd)
                await wait_handshake(ctx, dut.i[c].cmd)
                ctx.set(dut.i[c].cmd.valid, 0)
        return proc

    def client_data_source(c):
        async def proc(ctx):
            for cmd in cmds[c]:
                for beat in beats_of(cmd):
                    while rng.random() < 0.3:
                        await ctx.tick()
                    ctx.set(dut.i[c].data.valid, 1)
                    ctx.set(dut.i[c].data.payload, beat)
                    await wait_handshake(ctx, dut.i[c].data)
                    ctx.set(dut.i[c].data.valid, 0)
        return proc

    def client_sinks(c):
        async def proc(ctx):
            while True:
                ctx.set(dut.i[c].status.ready, rng.random() < 0.6)
                if not write:
                    ctx.set(dut.i[c].data.ready, rng.random() < 0.6)
                _, _, sv, sr, sp, dv, dr, dp = await ctx.tick().sample(
                    dut.i[c].status.valid, dut.i[c].status.ready, dut.i[c].status.payload,
                    dut.i[c].data.valid, dut.i[c].data.ready, dut.i[c].data.payload)
                if sv and sr:
                    got_status[c].append(sp.tag)
                    if not write:
                        # [DmaReadEngine's contract] a status comes after its last beat.
                        k = len(got_status[c]) - 1
                        beats = sum(len(beats_of(cmd)) for cmd in cmds[c][:k + 1])
                        assert len(got_data[c]) >= beats, (
                            f"client {c}: status of command {k} before its last data beat")
                if not write and dv and dr:
                    got_data[c].append(dp.data)
        return proc

    async def engine(ctx):
        last_offer = None
        while True:
            ctx.set(dut.o.cmd.ready, rng.random() < 0.5)
            _, _, v, r, p = await ctx.tick().sample(dut.o.cmd.valid, dut.o.cmd.ready,
                                                     dut.o.cmd.payload)
            if v:
                offer = (p.addr, p.length, p.tag)
                if last_offer is not None:
                    assert offer == last_offer, "an offered command changed before it was taken"
                last_offer = None if r else offer
                if r:
                    seen_at_engine.append(offer)
                    answers.append(offer)

    async def engine_answers(ctx):
        # Reads: the data beats of each command, then its status, in command order. Writes:
        # take the command's beats, check them, then the status.
        while True:
            if not answers:
                await ctx.tick()
                continue
            addr, length, tag = answers.pop(0)
            cmd = {"addr": addr, "length": length, "tag": tag}
            for beat in beats_of(cmd):
                if write:
                    while True:
                        ctx.set(dut.o.data.ready, rng.random() < 0.6)
                        _, _, v, r, p = await ctx.tick().sample(
                            dut.o.data.valid, dut.o.data.ready, dut.o.data.payload)
                        if v and r:
                            assert p.data == beat["data"], (
                                f"write data {p.data:#x} for command at {addr:#x}, beat "
                                f"{beat['data']:#x} expected")
                            break
                    ctx.set(dut.o.data.ready, 0)
                else:
                    ctx.set(dut.o.data.valid, 1)
                    ctx.set(dut.o.data.payload, beat)
                    await wait_handshake(ctx, dut.o.data)
                    ctx.set(dut.o.data.valid, 0)
            ctx.set(dut.o.status.valid, 1)
            ctx.set(dut.o.status.payload, {"tag": tag, "error": 0})
            await wait_handshake(ctx, dut.o.status)
            ctx.set(dut.o.status.valid, 0)

    async def bench(ctx):
        for _ in range(20000):
            await ctx.tick()
            if all(len(got_status[c]) == n_cmds for c in range(CLIENTS)):
                break
        for c in range(CLIENTS):
            assert got_status[c] == [cmd["tag"] for cmd in cmds[c]], (
                f"client {c}: statuses {got_status[c]}")
            if not write:
                want = [b["data"] for cmd in cmds[c] for b in beats_of(cmd)]
                assert got_data[c] == want, f"client {c}: data out of order or misrouted"
        assert sorted(seen_at_engine) == sorted(
            (cmd["addr"], cmd["length"], cmd["tag"]) for cs in cmds for cmd in cs)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for c in range(CLIENTS):
        sim.add_testbench(client_source(c), background=True)
        sim.add_testbench(client_sinks(c), background=True)
        if write:
            sim.add_testbench(client_data_source(c), background=True)
    sim.add_testbench(engine, background=True)
    sim.add_testbench(engine_answers, background=True)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("registered", [True, False, (False, True, True)])
@pytest.mark.parametrize("k", range(3))
def test_read_arbiter_routes_data_and_status(k, registered):
    run(DmaReadArbiter, seed_from_env() + k, registered=registered)


@pytest.mark.parametrize("registered", [True, False])
@pytest.mark.parametrize("k", range(3))
def test_write_arbiter_routes_data_and_status(k, registered):
    run(DmaWriteArbiter, seed_from_env() + k, registered=registered)


def test_parameters():
    with pytest.raises(ValueError):
        DmaReadArbiter(1)
    with pytest.raises(ValueError):
        DmaWriteArbiter(2, depth=0)
    with pytest.raises(ValueError, match="names 2 clients, not 3"):
        DmaReadArbiter(3, registered=(True, False))
