# Ref: OASIS virtio 1.2, sections 2.7.4 (message framing), 5.2.6 (block device operation)
"""The executor's segment walker: a byte range of a chain's byte stream in, DMA commands out.

A request slot's table lists the chain's buffers, the device-readable ones first, then the
device-writable ones [VIRTIO-1.2 2.7.4.2]. The executor treats each list as one byte stream,
whatever the descriptor boundaries [VIRTIO-1.2 2.7.4], and asks for byte ranges of it: the
header is readable bytes [0, 16), IN data writable bytes [0, W - 1), and so on. The walker
turns such a range into *pieces*: one DMA command each, ending at a buffer's end or after
:data:`~rtl.dma_layouts.DMA_MAX_LENGTH` bytes.

It is built for the clock: the table address comes from a register (or, as a walk is taken,
from the walk itself), every sum and comparison is taken from registers or from the table's
output alone, and the piece goes out of a register. A walk takes two cycles per buffer it
passes (reading the entry, looking at it) and two per piece (sizing it, in the look at its
buffer's entry or, for a further piece of a buffer longer than DMA_MAX_LENGTH, in a cycle of
its own; sending it); the first piece is offered in the third cycle after the walk was taken.

The walker keeps three numbers: ``into``, how far the range's next byte lies past the start of
buffer ``i``; and, once it is inside buffer ``i``, the host address of that byte (``ptr``) and
the bytes left of the buffer (``rem_seg``) and of the range (``rem_all``). A buffer no longer
than ``into`` is passed (``into -= len``); a piece is ``min(rem_seg, rem_all,
DMA_MAX_LENGTH)`` bytes at ``ptr``.
"""

from amaranth.hdl import Module, Signal, Cat, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model.params import DeviceParams
from .dma_layouts import DmaCommand, DMA_MAX_LENGTH
from .blk_slots import SegmentLayout, seg_index_bits


__all__ = ["WalkLayout", "PieceLayout", "SegmentWalker"]


class WalkLayout(data.StructLayout):
    """A byte range ``[off, off + len)`` of the stream of segments ``first`` to ``end - 1`` of
    slot ``table``'s table; ``write`` is passed on with each piece."""
    def __init__(self, params):
        idx = seg_index_bits(params) + 1
        super().__init__({
            "table": range(max(params.request_slots, 2)),
            "first": idx,
            "end":   idx,
            "off":   48,
            "len":   48,
            "write": 1,
        })


class PieceLayout(data.StructLayout):
    """One DMA command of a walk (its ``tag`` is 0), and the walk's ``write``."""
    def __init__(self):
        super().__init__({
            "cmd":   DmaCommand,
            "write": 1,
        })


class SegmentWalker(wiring.Component):
    """Cuts byte ranges of a slot's segment lists into DMA commands.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    start : stream.Signature(WalkLayout(params)), in
        A walk; taken only while :attr:`busy` is low. A zero ``len`` is taken and yields no
        piece.
    piece : stream.Signature(PieceLayout()), out
        The walk's commands, in stream order; ``valid`` and ``payload`` from registers.
    seg_r_addr : Signal, out; seg_r_data : SegmentLayout, in
        A synchronous read port on the slot tables (entry ``seg_r_addr[:k]`` of slot
        ``seg_r_addr[k:]``): ``seg_r_data`` is the entry at the address of the cycle before.
        The address comes from a register, or while no walk is under way from
        ``start.payload`` (which must therefore not depend on ``start.valid``).
    busy : Signal(1), out
        A walk is under way or its last piece has not been taken yet.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        self.seg_bits = seg_index_bits(params)
        super().__init__({
            "start":      In(stream.Signature(WalkLayout(params))),
            "piece":      Out(stream.Signature(PieceLayout())),
            "seg_r_addr": Out(range(params.request_slots << self.seg_bits)),
            "seg_r_data": In(SegmentLayout()),
            "busy":       Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        walk = self.start.payload
        seg = self.seg_r_data

        table    = Signal.like(walk.table)
        i        = Signal.like(walk.first)
        end      = Signal.like(walk.end)
        write    = Signal()
        into     = Signal(48)       # the range's next byte, past the start of segment i
        rem_all  = Signal(48)       # bytes of the range still to cover
        reach    = Signal(48)       # into + rem_all: the range's end, past segment i's start
        into_max = Signal(48)       # into + DMA_MAX_LENGTH
        ptr      = Signal(64)       # once in segment i: the host address of the next byte
        rem_seg  = Signal(32)       # once in segment i: its bytes from there on

        # The next piece, sized a cycle before it goes out: min(rem_seg, rem_all,
        # DMA_MAX_LENGTH) bytes, and whether it ends the range or only the segment.
        length   = Signal(range(DMA_MAX_LENGTH + 1))
        ends_all = Signal()
        ends_seg = Signal()

        # The table address: the walk's first segment while a walk is taken (its payload does
        # not depend on `valid`), so that its entry is there in the next cycle, else `i`.
        # Leaving a segment for the next, the next: its entry is there as the walk looks.
        # `i_inc` is always i + 1, kept beside it, so the address needs no adder.
        idle = Signal()
        step = Signal()
        i_inc = Signal.like(i)
        m.d.comb += self.seg_r_addr.eq(Mux(idle, Cat(walk.first[:self.seg_bits], walk.table),
                                           Cat(Mux(step, i_inc, i)[:self.seg_bits], table)))

        m.d.comb += self.busy.eq(~idle | self.piece.valid)
        with m.If(self.piece.valid & self.piece.ready):
            m.d.sync += self.piece.valid.eq(0)

        with m.FSM(name="walk"):
            with m.State("Idle"):
                m.d.comb += [idle.eq(1), self.start.ready.eq(~self.piece.valid)]
                with m.If(self.start.valid & self.start.ready & (walk.len != 0)):
                    m.d.sync += [
                        table.eq(walk.table), i.eq(walk.first), i_inc.eq(walk.first + 1),
                        end.eq(walk.end),
                        write.eq(walk.write),
                        into.eq(walk.off), rem_all.eq(walk.len),
                        reach.eq(walk.off + walk.len),
                        into_max.eq(walk.off + DMA_MAX_LENGTH),
                    ]
                    m.next = "Look"

            with m.State("Read"):
                # The table's port samples `i` now; its entry is there next cycle.
                m.next = "Look"

            with m.State("Look"):
                with m.If(i >= end):
                    # Out of segments: the range was longer than the list (the executor
                    # checks ranges against the totals, so this does not happen).
                    m.next = "Idle"
                with m.Elif(seg.len <= into):
                    # The range starts past this segment.
                    m.d.sync += [
                        into.eq(into - seg.len), reach.eq(reach - seg.len),
                        into_max.eq(into_max - seg.len), i.eq(i_inc), i_inc.eq(i_inc + 1),
                    ]
                    m.next = "Read"
                with m.Else():
                    # The first piece in this segment, each comparison against the entry
                    # alone: rem_all <= rem_seg is reach <= len, and rem_seg > MAX is
                    # len > into + MAX.
                    all_first = reach <= seg.len
                    capped = (seg.len > into_max) & (rem_all > DMA_MAX_LENGTH)
                    m.d.sync += [
                        ptr.eq(seg.addr + into),
                        rem_seg.eq(seg.len - into),
                        length.eq(Mux(capped, DMA_MAX_LENGTH,
                                      Mux(all_first, rem_all, seg.len - into))),
                        ends_all.eq(~capped & all_first),
                        ends_seg.eq(~capped & ~all_first),
                    ]
                    m.next = "Emit"

            with m.State("Size"):
                # A further piece of a segment longer than DMA_MAX_LENGTH.
                all_first = rem_all <= rem_seg
                capped = (rem_seg > DMA_MAX_LENGTH) & (rem_all > DMA_MAX_LENGTH)
                m.d.sync += [
                    length.eq(Mux(capped, DMA_MAX_LENGTH, Mux(all_first, rem_all, rem_seg))),
                    ends_all.eq(~capped & all_first),
                    ends_seg.eq(~capped & ~all_first),
                ]
                m.next = "Emit"

            with m.State("Emit"):
                with m.If(~self.piece.valid):
                    m.d.sync += [
                        self.piece.valid.eq(1),
                        self.piece.payload.cmd.addr.eq(ptr),
                        self.piece.payload.cmd.length.eq(length),
                        self.piece.payload.write.eq(write),
                        ptr.eq(ptr + length),
                        rem_seg.eq(rem_seg - length),
                        rem_all.eq(rem_all - length),
                    ]
                    with m.If(ends_all):
                        m.next = "Idle"
                    with m.Elif(ends_seg):
                        # The next segment, from its first byte.
                        m.d.comb += step.eq(1)
                        m.d.sync += [
                            i.eq(i_inc), i_inc.eq(i_inc + 1), into.eq(0),
                            reach.eq(rem_all - length),
                            into_max.eq(DMA_MAX_LENGTH),
                        ]
                        m.next = "Look"
                    with m.Else():
                        m.next = "Size"
        return m
