# amaranth: UnusedElaboratable=no
"""The wrapper ``make timing`` places and routes (:class:`rtl.timing.RegisteredPorts`): every
input of the design comes from the ``si`` chain and every output reaches ``so``, so synthesis
can drop nothing and the Fmax it reports is that of the whole design."""

from amaranth.hdl import Module
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from rtl.timing import RegisteredPorts


class Adder(wiring.Component):
    a: In(stream.Signature(4))
    y: Out(stream.Signature(4))

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.y.payload.eq(self.a.payload + 1), self.y.valid.eq(self.a.valid),
                     self.a.ready.eq(self.y.ready)]
        return m


def test_inputs_come_from_the_chain_and_outputs_reach_the_pin():
    inner = Adder()
    top = RegisteredPorts(inner)
    pattern = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0] * 4
    seen = {"a.payload": set(), "a.valid": set(), "y.ready": set(), "so": set()}

    async def testbench(ctx):
        for bit in pattern:
            ctx.set(top.si, bit)
            await ctx.tick()
            seen["a.payload"].add(ctx.get(inner.a.payload))
            seen["a.valid"].add(ctx.get(inner.a.valid))
            seen["y.ready"].add(ctx.get(inner.y.ready))
            seen["so"].add(ctx.get(top.so))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    # Every input of the design moves with `si`, and the outputs reach `so`.
    assert len(seen["a.payload"]) > 4
    assert seen["a.valid"] == seen["y.ready"] == {0, 1}
    assert seen["so"] == {0, 1}
