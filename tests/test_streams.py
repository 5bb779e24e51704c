# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the stream helpers in :mod:`rtl.streams`: under random
back-pressure on both sides a :class:`~rtl.streams.SkidBuffer` and a
:class:`~rtl.streams.RegisterSlice` pass every beat once, in order, keep the stream contract,
run at one beat per cycle (the slice at one every other cycle), and have no combinational
path from ``o.ready`` to ``i.ready`` or from ``i`` to ``o``. SEED replays a run."""

import random

import pytest
from amaranth.hdl import unsigned
from amaranth.lib import stream
from amaranth.sim import Simulator

from rtl.streams import SkidBuffer, RegisterSlice
from tb.seed import seed_from_env


def run(dut, rng, n, p_valid, p_ready):
    sent = [rng.randrange(1 << 16) for _ in range(n)]
    received = []
    cycles = [0]

    async def source(ctx):
        for value in sent:
            while rng.random() >= p_valid:
                ctx.set(dut.i.valid, 0)
                await ctx.tick()
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, value)
            await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        shown = None      # (payload) of a beat offered and not taken last cycle
        while len(received) < n:
            ready = rng.random() < p_ready
            ctx.set(dut.o.ready, ready)
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycles[0] += 1
            assert cycles[0] < 20 * n + 100, "the buffer stopped passing beats"
            if shown is not None:
                # [amaranth.lib.stream] valid stays up and the payload holds until taken.
                assert valid and payload == shown, "an offered beat changed before it was taken"
            if valid and ready:
                received.append(payload)
                shown = None
            elif valid:
                shown = payload

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return sent, received, cycles[0]


BUFFERS = [SkidBuffer, RegisterSlice]


@pytest.mark.parametrize("cls", BUFFERS)
@pytest.mark.parametrize("p_valid,p_ready", [(0.5, 0.5), (1.0, 0.3), (0.3, 1.0), (0.9, 0.9)])
def test_every_beat_once_in_order(cls, p_valid, p_ready):
    rng = random.Random(seed_from_env())
    dut = cls(stream.Signature(unsigned(16)))
    sent, received, _ = run(dut, rng, 500, p_valid, p_ready)
    assert received == sent


def test_one_beat_per_cycle():
    rng = random.Random(1)
    dut = SkidBuffer(stream.Signature(unsigned(16)))
    _, received, cycles = run(dut, rng, 200, 1.0, 1.0)
    # The first beat needs a cycle to reach the output register; then one per cycle.
    assert len(received) == 200 and cycles <= 200 + 2, f"{cycles} cycles for 200 beats"


def test_register_slice_one_beat_every_other_cycle():
    rng = random.Random(1)
    dut = RegisterSlice(stream.Signature(unsigned(16)))
    _, received, cycles = run(dut, rng, 200, 1.0, 1.0)
    assert len(received) == 200 and 2 * 200 - 2 <= cycles <= 2 * 200 + 2, \
        f"{cycles} cycles for 200 beats"


@pytest.mark.parametrize("cls", BUFFERS)
def test_no_combinational_path_through(cls):
    dut = cls(stream.Signature(unsigned(16)))

    async def testbench(ctx):
        for _ in range(3):        # fill the output (and the skid) register
            ctx.set(dut.i.valid, 1)
            ctx.set(dut.i.payload, 0x1234)
            ctx.set(dut.o.ready, 0)
            await ctx.tick()
        # Neither side sees the other's change until a clock edge.
        before = (ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload))
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.i.payload, 0x5678)
        assert (ctx.get(dut.i.ready), ctx.get(dut.o.valid), ctx.get(dut.o.payload)) == before
        assert before == (0, 1, 0x1234)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


@pytest.mark.parametrize("cls", BUFFERS)
def test_wants_a_stream_with_a_handshake(cls):
    with pytest.raises(TypeError, match=f"{cls.__name__} needs a stream.Signature"):
        cls(unsigned(8))
    with pytest.raises(ValueError, match="has none to cut"):
        cls(stream.Signature(unsigned(8), always_ready=True))
