# Ref: PCIe Base 3.0, sections 2.2 (TLP formats) and 2.4 (ordering)
"""Joining and splitting TLP streams, a whole packet at a time.

The endpoint has one link but several TLP sources (the completer's completions, the DMA
engine's requests) and sinks (requests go to the completer, completions to the DMA engine).
:class:`TlpArbiter` merges sources onto one stream and :class:`TlpRouter` splits one stream by
TLP kind; neither ever interleaves the beats of two packets.
"""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .tlp import TlpStreamSignature, TlpDw0, TlpType


__all__ = ["TlpArbiter", "TlpRouter", "BusMasterGate"]


class TlpArbiter(wiring.Component):
    """Merges ``n`` TLP streams onto one, packet by packet, in round-robin order.

    A grant starts on a ``first`` beat and lasts until that packet's ``last`` beat has been
    taken, so packets stay whole. After a packet, the port after it has priority, so no source
    can starve another. [PCIe-3.0 2.4.1] ordering holds per source; the arbiter adds no
    reordering within a source.

    Parameters
    ----------
    data_width : int
        Width of the TLP streams.
    n : int
        Number of sources, at least 1.

    Attributes
    ----------
    i : array of TlpStreamSignature(data_width), in
        The sources; ``i[0]`` first after reset.
    o : TlpStreamSignature(data_width), out
        The merged stream.
    """
    def __init__(self, data_width, n):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"TlpArbiter needs at least one source, not {n!r}")
        self.data_width = data_width
        self.n = n
        super().__init__({
            "i": In(TlpStreamSignature(data_width)).array(n),
            "o": Out(TlpStreamSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.n
        grant = Signal(range(n), init=n - 1)  # the port granted now or last; i[0] goes first
        locked = Signal()            # inside a packet of port `grant`
        pick = Signal(range(n))      # the port to take when not locked

        # Round robin: the first valid port after the last granted one.
        m.d.comb += pick.eq(grant)
        for k in reversed(range(1, n + 1)):
            for g in range(n):
                with m.If((grant == g) & self.i[(g + k) % n].valid):
                    m.d.comb += pick.eq((g + k) % n)
        # A first beat shown and not yet taken stays: the stream's payload holds until the
        # transfer, and the BusMasterGate's verdict on it with it.
        shown = Signal()
        sel = Mux(locked | shown, grant, pick)
        m.d.sync += shown.eq(self.o.valid & ~self.o.ready)
        with m.If(self.o.valid & ~self.o.ready):
            m.d.sync += grant.eq(sel)

        with m.Switch(sel):
            for k in range(n):
                with m.Case(k):
                    m.d.comb += [
                        self.o.valid.eq(self.i[k].valid),
                        self.o.payload.eq(self.i[k].payload),
                        self.i[k].ready.eq(self.o.ready),
                    ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += [
                grant.eq(sel),
                locked.eq(~self.o.payload.last),
            ]
        return m


class TlpRouter(wiring.Component):
    """Splits one TLP stream into completions and everything else.

    The kind is decided from DW0 on each packet's ``first`` beat and held to its ``last``.

    Parameters
    ----------
    data_width : int
        Width of the TLP streams.

    Attributes
    ----------
    i : TlpStreamSignature(data_width), in
        TLPs from the link.
    requests : TlpStreamSignature(data_width), out
        Every TLP that is not a completion (to the completer).
    completions : TlpStreamSignature(data_width), out
        Cpl, CplD, CplLk and CplDLk [PCIe-3.0 2.2.9] (to the DMA engine's reassembly).
    """
    def __init__(self, data_width):
        self.data_width = data_width
        super().__init__({
            "i":           In(TlpStreamSignature(data_width)),
            "requests":    Out(TlpStreamSignature(data_width)),
            "completions": Out(TlpStreamSignature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        dw0 = TlpDw0(self.i.payload.data[:32])
        # [PCIe-3.0 2.2.1 Table 2-3] Completions are Type 0101x with Fmt 000 or 010; a prefix
        # (Fmt 100) is not a completion header.
        is_cpl_now = ((dw0.type[1:] == TlpType.CPL >> 1) & ~dw0.fmt.as_value()[2])
        in_cpl = Signal()            # the packet in progress is a completion
        is_cpl = Mux(self.i.payload.first, is_cpl_now, in_cpl)

        for port, want in ((self.completions, 1), (self.requests, 0)):
            m.d.comb += port.payload.eq(self.i.payload)
            with m.If(is_cpl == want):
                m.d.comb += [
                    port.valid.eq(self.i.valid),
                    self.i.ready.eq(port.ready),
                ]
        with m.If(self.i.valid & self.i.ready & self.i.payload.first):
            m.d.sync += in_cpl.eq(is_cpl_now)
        return m


class BusMasterGate(wiring.Component):
    """The last stop before the link: drops every request TLP that would start while Bus
    Master Enable is clear; completions always pass.

    [PCI-3.0 6.2.2, PCIe-3.0 7.5.1.1] With Bus Master Enable clear the function issues no
    memory requests (MSI-X messages included). The DMA engines and the interrupt controller
    check it too, but a request they built just before software (or a Function Level Reset)
    cleared it may still be waiting for the link; the host, once it has the completion of
    that configuration write, must see no request. A packet is judged on its ``first`` beat;
    one presented and not yet taken keeps its verdict, so ``o.valid`` never falls without a
    transfer. A dropped read is never answered: its requester's completion timer ends it.
    Everything but a completion counts as a request here; the function sends no Messages
    (which Bus Master Enable would not gate [PCIe-3.0 7.5.1.1]), so none is lost.

    Attributes
    ----------
    i, o : TlpStreamSignature(data_width)
    bus_master : Signal(1), in
    dropped : Signal(1), out
        A pulse for each request dropped.
    """
    def __init__(self, data_width):
        self.data_width = data_width
        super().__init__({
            "i":          In(TlpStreamSignature(data_width)),
            "o":          Out(TlpStreamSignature(data_width)),
            "bus_master": In(1),
            "dropped":    Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        dw0 = TlpDw0(self.i.payload.data[:32])
        is_cpl = (dw0.type[1:] == TlpType.CPL >> 1) & ~dw0.fmt.as_value()[2]
        inside = Signal()            # after the first beat of a packet, before its last
        dropping = Signal()          # ... which is being dropped
        held = Signal()              # a first beat presented with the verdict "pass"
        drop_now = Signal()
        m.d.comb += drop_now.eq(Mux(inside, dropping,
                                    ~held & ~is_cpl & ~self.bus_master))
        m.d.comb += self.o.payload.eq(self.i.payload)
        with m.If(drop_now):
            m.d.comb += self.i.ready.eq(1)
        with m.Else():
            m.d.comb += [
                self.o.valid.eq(self.i.valid),
                self.i.ready.eq(self.o.ready),
            ]
        first = self.i.valid & self.i.payload.first & ~inside
        with m.If(first & ~drop_now):
            m.d.sync += held.eq(~self.o.ready)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += held.eq(0)
            with m.If(self.i.payload.last):
                m.d.sync += inside.eq(0)
            with m.Elif(first):
                m.d.sync += [inside.eq(1), dropping.eq(drop_now)]
            m.d.comb += self.dropped.eq(first & drop_now)
        return m
