"""Stream helpers shared by the blocks: registers that cut a handshake in two.

A stream that crosses from one block to another carries ``valid`` and the payload forward and
``ready`` back; joined combinationally, the paths of several blocks add up into one (the
transmit path: DMA write engine, arbiter, Bus Master gate, link, and back). A
:class:`SkidBuffer` between two blocks registers all three, at full throughput; a
:class:`RegisterSlice` registers them at half the throughput and without the skid buffer's
multiplexer (one LUT a payload bit), for streams that never carry a beat every cycle.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out


__all__ = ["SkidBuffer", "RegisterSlice"]


class _RegisterStage(wiring.Component):
    """A stream in (``i``) and the same stream out (``o``), with a handshake to register."""
    def __init__(self, signature):
        name = type(self).__name__
        if not isinstance(signature, stream.Signature):
            raise TypeError(f"{name} needs a stream.Signature, not {signature!r}")
        if signature.always_valid or signature.always_ready:
            raise ValueError(f"a {name} registers a handshake; this stream has none to cut")
        super().__init__({"i": In(signature), "o": Out(signature)})


class SkidBuffer(_RegisterStage):
    """A two-entry register slice: ``o.valid``, ``o.payload`` and ``i.ready`` come straight
    from flip-flops, and one transfer can pass per cycle.

    The output register holds the beat shown downstream. ``i.ready`` is "the skid register is
    empty": a beat taken in the cycle the output stalls lands there, and goes out next, before
    any new one. Beats leave in the order they came, none is lost or repeated, and ``o.valid``
    falls only after a transfer (the stream contract of ``amaranth.lib.stream``).

    Parameters
    ----------
    signature : stream.Signature
        The stream, as seen by its source (``valid`` and ``payload`` out, ``ready`` in).

    Attributes
    ----------
    i : signature, in
    o : signature, out
    """
    def elaborate(self, platform):
        m = Module()
        skid_valid = Signal()
        skid = Signal.like(self.i.payload)

        m.d.comb += self.i.ready.eq(~skid_valid)
        with m.If(self.o.ready | ~self.o.valid):
            # The output register is free (or frees now): the oldest beat moves into it.
            with m.If(skid_valid):
                m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(skid), skid_valid.eq(0)]
            with m.Else():
                m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        with m.Elif(self.i.valid & self.i.ready):
            # The output stalls: the beat taken now waits in the skid register.
            m.d.sync += [skid.eq(self.i.payload), skid_valid.eq(1)]
        return m


class RegisterSlice(_RegisterStage):
    """A one-entry register slice: ``o.valid``, ``o.payload`` and ``i.ready`` come straight
    from flip-flops, and one transfer can pass every other cycle.

    ``i.ready`` is "the register is empty": a beat taken goes out the next cycle and the
    register takes the next one in the cycle after it left. The payload register loads only
    from ``i.payload`` (a clock enable, no multiplexer), so this costs a flip-flop a bit where
    a :class:`SkidBuffer` costs two and a LUT. For streams whose beats are each followed by
    other work (DMA commands, each with its data): there the half rate costs nothing and the
    latency is the skid buffer's, one cycle.

    Parameters
    ----------
    signature : stream.Signature
        The stream, as seen by its source (``valid`` and ``payload`` out, ``ready`` in).

    Attributes
    ----------
    i : signature, in
    o : signature, out
    """
    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(self.i.payload)]
        return m
