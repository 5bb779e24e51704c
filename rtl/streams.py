"""Stream helpers shared by the blocks: registers that cut a handshake in two.

A stream that crosses from one block to another carries ``valid`` and the payload forward and
``ready`` back; joined combinationally, the paths of several blocks add up into one (the
transmit path: DMA write engine, arbiter, Bus Master gate, link, and back). A
:class:`SkidBuffer` between two blocks registers all three, at full throughput; a
:class:`RegisterSlice` registers them at half the throughput and without the skid buffer's
second register and multiplexer (one LUT a payload bit), for streams that never carry a beat
every cycle.
"""

from amaranth.hdl import Module, Signal, Mux
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
    """A two-entry register stage: ``o.valid`` and ``i.ready`` come straight from flip-flops,
    ``o.payload`` from two registers through one 2:1 multiplexer whose select is a flip-flop,
    and one transfer can pass per cycle.

    Beats are written into two registers in turn and read out of them in turn (a two-entry
    FIFO). The write side's clock enables depend only on ``i.valid`` and a pointer, never on
    ``o.ready``: the consumer's ``ready``, often the latest signal of its block's cycle, reaches
    the read pointer and the fill count (three flip-flops) and not the clock enables of every
    payload bit, which a shift-style skid buffer (an output register loaded when the consumer
    takes a beat) puts it on. A beat taken goes out in the next cycle; ``i.ready`` is "not
    both entries full". Beats leave in the order they came, none is lost or repeated, and
    ``o.valid`` falls only after a transfer (the stream contract of ``amaranth.lib.stream``).

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
        entries = [Signal.like(self.i.payload, name=f"entry{k}") for k in range(2)]
        w_ptr = Signal()
        r_ptr = Signal()
        full = Signal()                 # both entries hold a beat
        taken = self.i.valid & self.i.ready
        given = self.o.valid & self.o.ready

        m.d.comb += [
            self.i.ready.eq(~full),
            self.o.payload.eq(Mux(r_ptr, entries[1], entries[0])),
        ]
        with m.If(taken):
            m.d.sync += w_ptr.eq(~w_ptr)
            for k in range(2):
                with m.If(w_ptr == k):
                    m.d.sync += entries[k].eq(self.i.payload)
        with m.If(given):
            m.d.sync += r_ptr.eq(~r_ptr)
        # o.valid is "at least one entry holds a beat", full "both do".
        with m.If(taken & ~given):
            m.d.sync += [self.o.valid.eq(1), full.eq(self.o.valid)]
        with m.Elif(given & ~taken):
            m.d.sync += [full.eq(0), self.o.valid.eq(full)]
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
