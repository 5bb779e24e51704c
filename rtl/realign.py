# Ref: VIRTIO 1.2, sections 2.7.4 (message framing) and 5.2.6 (block device operation)
"""Re-packing a byte stream into packets of given lengths.

[VIRTIO-1.2 2.7.4.1] The device must not assume any particular arrangement of descriptors: the
data of one block request may be spread over any number of buffers of any byte length. Each
buffer is one DMA transfer, whose bytes arrive packed from byte lane 0, while the storage
back-end moves whole sectors [VIRTIO-1.2 5.2.6] as one continuous stream of full beats.
:class:`ByteRealigner` moves bytes between the two framings, in both directions.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, unsigned
from amaranth.utils import exact_log2
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from .dma_layouts import DmaData


__all__ = ["ByteRing", "ByteRealigner"]


class ByteRing(wiring.Component):
    """A ring of bytes: appended at one end a beat at a time, dropped at the other, and the
    first bytes shown as one beat.

    It is the buffer behind :class:`ByteRealigner` and :class:`~rtl.dma_write.DmaWriteEngine`,
    built for the clock: every byte stays where it was written, so the wide multiplexers (the
    input's rotation to the write position, the window's rotation from the read position) are
    selected by pointer registers alone. The handshakes of the streams around it, which come
    late in a cycle, reach only the byte write enables and the pointer and count updates; a
    shift register (move every byte by what leaves each cycle) would put them on the select of
    every byte's multiplexer.

    Parameters
    ----------
    lanes : int
        Bytes in a beat.
    depth : int
        Bytes in the ring, a power of two.

    Attributes
    ----------
    w_data : Signal(8 * lanes), in; w_n : Signal, in
        Append the first ``w_n`` bytes of ``w_data`` (0 appends nothing). The user keeps
        ``count + w_n`` within ``depth``.
    r_n : Signal, in
        Drop the first ``r_n`` bytes (at most ``count``).
    next_offset : Signal, in
        From the next cycle on, show the window ``next_offset`` lanes up: byte ``k`` of the
        ring in lane ``k + next_offset``. (Given a cycle ahead so that the window's select is a
        register.)
    clear : Signal(1), in
        Drop every byte, those appended in the same cycle too.
    window : Signal(8 * lanes), out
        The first bytes, from registers through a multiplexer whose select is a register;
        lanes below the offset and past ``count`` hold stale bytes.
    count : Signal, out
        Bytes in the ring, from a register.
    """
    def __init__(self, lanes=8, depth=32):
        if depth & (depth - 1) or depth < 2 * lanes:
            raise ValueError(f"ByteRing depth must be a power of two of at least two beats, "
                             f"not {depth!r}")
        self.lanes, self.depth = lanes, depth
        super().__init__({
            "w_data": In(8 * lanes),
            "w_n":    In(range(lanes + 1)),
            "r_n":    In(range(lanes + 1)),
            "next_offset": In(range(lanes)),
            "clear":  In(1),
            "window": Out(8 * lanes),
            "count":  Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        lanes, depth = self.lanes, self.depth
        bits = exact_log2(depth)
        ring = [Signal(8, name=f"byte{k}") for k in range(depth)]
        wptr = Signal(bits)
        rptr = Signal(bits)
        count = Signal(range(depth + 1))
        m.d.comb += self.count.eq(count)
        rptr_next = Signal(bits)
        m.d.sync += [wptr.eq(wptr + self.w_n), rptr.eq(rptr_next)]
        with m.If(self.clear):
            m.d.comb += rptr_next.eq(wptr + self.w_n)
            m.d.sync += count.eq(0)
        with m.Else():
            m.d.comb += rptr_next.eq(rptr + self.r_n)
            m.d.sync += count.eq(count + self.w_n - self.r_n)

        # Writes: the beat rotated so that its byte j lands in lane (wptr + j) % lanes, and
        # ring byte k written when it is one of the w_n bytes from wptr on.
        rotated = Signal(8 * lanes)
        with m.Switch(wptr[:exact_log2(lanes)]):
            for r in range(lanes):
                with m.Case(r):
                    m.d.comb += rotated.eq(Cat(self.w_data[8 * lanes - 8 * r:],
                                               self.w_data[:8 * lanes - 8 * r]))
        for k in range(depth):
            ahead = Signal(bits, name=f"ahead{k}")      # (k - wptr) % depth
            m.d.comb += ahead.eq(k - wptr)
            with m.If(ahead < self.w_n):
                m.d.sync += ring[k].eq(rotated.word_select(k % lanes, 8))

        # The window: ring bytes from rptr on, `next_offset` (as it was) lanes up. The select,
        # rptr less the offset, is kept a cycle ahead, in a copy per output lane: one register
        # would drive the multiplexers of every bit of the window (8 * lanes of them), a net
        # whose routing alone set the engine's Fmax.
        sel_next = Signal(bits)
        m.d.comb += sel_next.eq(rptr_next - self.next_offset)
        for j in range(lanes):
            sel = Signal(bits, name=f"sel{j}", attrs={"keep": 1})
            m.d.sync += sel.eq(sel_next)
            with m.Switch(sel):
                for r in range(depth):
                    with m.Case(r):
                        m.d.comb += self.window.word_select(j, 8).eq(ring[(r + j) % depth])
        return m


class ByteRealigner(wiring.Component):
    """Concatenates the bytes of an input stream and cuts them into packets of given lengths.

    Input packet boundaries do not matter: ``i.payload.last`` is ignored and the bytes of all
    input beats are simply concatenated. For each length ``L`` taken from ``length``, ``o``
    carries the next ``L`` of those bytes as one packet of ``ceil(L / 8)`` beats, packed from
    byte lane 0. The same block is thus a gatherer (many short DMA transfers in, one packet of
    their total length out) and a scatterer (one continuous stream in, packets of the lengths
    of the buffers out).

    Bytes taken from ``i`` wait in a 32-byte :class:`ByteRing`. An input beat is taken while the
    ring holds at most 24 bytes, so there is always room for it; an output beat is offered once
    the buffer holds a full beat, or the rest of the current packet if that is shorter. With
    full input beats and ``o.ready`` held high, ``o`` carries one beat per cycle in the steady
    state, whatever the packet lengths: a short last beat of one packet is followed at once by a
    full first beat of the next. With short input beats the input is taken every cycle while the
    output waits for bytes, so the output runs at the rate the input bytes come in.

    Bytes taken beyond the sum of the lengths stay in the buffer and start the next packet:
    the user keeps the two streams in balance.

    Lengths go through a two-entry queue (the packet in progress and the next one), so
    back-to-back packets, even one-beat ones, leave no idle cycle between them.

    There is no combinational path between the ports: ``i.ready``, ``length.ready``,
    ``o.valid`` and ``o.payload`` depend on registers only.

    Parameters
    ----------
    data_width : int
        Width of the data streams in bits; 64 (others are not implemented yet).

    Attributes
    ----------
    i : stream.Signature(DmaData(data_width)), in
        Input bytes. Each beat contributes the bytes its ``keep`` marks, which must be
        contiguous from lane 0; a beat with ``keep`` 0 contributes nothing (and is taken).
        Lanes outside ``keep`` are ignored. ``last`` is ignored.
    length : stream.Signature(unsigned(32)), in
        Lengths in bytes of the output packets, in order. A length of 0 is not a valid packet:
        it is taken and produces nothing.
    o : stream.Signature(DmaData(data_width)), out
        Output packets: the next ``L`` input bytes packed from lane 0, ``keep`` all ones but
        on the last beat (where it marks ``L % 8`` bytes from lane 0, or all 8), ``last`` on
        the last beat. Lanes outside ``keep`` are zero.

    Raises
    ------
    ValueError
        If ``data_width`` is not 64.
    """

    #: Buffer size in bytes: a full input beat always fits on top of a buffer that holds
    #: 24 bytes (more than the 16 that keep a full output beat behind a short one).
    BUFFER_BYTES = 32

    def __init__(self, data_width=64):
        if not isinstance(data_width, int) or isinstance(data_width, bool) or data_width != 64:
            raise ValueError(f"ByteRealigner data_width must be 64 (others are not "
                             f"implemented yet), not {data_width!r}")
        self.data_width = data_width
        super().__init__({
            "i":      In(stream.Signature(DmaData(data_width))),
            "length": In(stream.Signature(unsigned(32))),
            "o":      Out(stream.Signature(DmaData(data_width))),
        })

    def elaborate(self, platform):
        m = Module()
        nbuf  = self.BUFFER_BYTES
        lanes = self.data_width // 8

        def byte_mask(n):
            """All ones in the byte lanes below ``n``."""
            return Cat(*[(n > k).replicate(8) for k in range(lanes)])

        # -- the packet in progress, and the next one --------------------------------------------
        active    = Signal()            # `rem` holds the bytes left of a packet
        rem       = Signal(32)          # bytes of the current packet not yet sent, > 0 if active
        pend      = Signal(32)          # the next packet's length, > 0 if pend_valid
        pend_valid = Signal()

        # -- the buffer: bytes taken from `i`, not yet sent -------------------------------------
        m.submodules.ring = ring = ByteRing(lanes, nbuf)
        count = ring.count

        # -- the next output beat ----------------------------------------------------------------
        # `rem` compared with a beat, kept in registers beside it (set with it, below): the
        # output's valid and framing then come from a few bits of registers.
        short = Signal()                # rem < lanes: the rest of the packet is less than a beat
        final = Signal()                # rem <= lanes: the next beat ends the packet
        need  = Signal(range(lanes + 1))  # bytes in the next output beat
        m.d.comb += need.eq(Mux(short, rem[:3], lanes))
        m.d.comb += [
            self.o.valid.eq(active & (count >= need)),
            self.o.payload.data.eq(ring.window & byte_mask(need)),
            self.o.payload.keep.eq(Cat(*[need > k for k in range(lanes)])),
            self.o.payload.last.eq(final),
        ]
        sent = self.o.valid & self.o.ready

        # -- moving bytes through the buffer -----------------------------------------------------
        # An input beat is taken whenever it fits whatever the output does, so i.ready does
        # not depend on o.ready.
        m.d.comb += self.i.ready.eq(count <= nbuf - lanes)
        taken = self.i.valid & self.i.ready
        keep  = self.i.payload.keep
        in_n  = Signal(range(lanes + 1))  # keep is contiguous from lane 0: count its ones
        m.d.comb += in_n.eq(Mux(taken, sum(keep[k] for k in range(lanes)), 0))
        out_n = Signal(range(lanes + 1))
        m.d.comb += out_n.eq(Mux(sent, need, 0))
        m.d.comb += [ring.w_data.eq(self.i.payload.data), ring.w_n.eq(in_n), ring.r_n.eq(out_n)]

        # -- lengths -----------------------------------------------------------------------------
        # A length is taken whenever the pending slot is empty. When the current packet ends
        # (or there is none) the next one starts at once: from the pending slot, or else
        # straight from `length`. A length of 0 is taken and dropped.
        m.d.comb += self.length.ready.eq(~pend_valid)
        new_len = self.length.payload
        new = self.length.valid & ~pend_valid & (new_len != 0)
        advance = ~active | (sent & final)
        # `short` and `final` of each value `rem` may take, side by side, so that the late
        # handshakes pick flags rather than feed a comparison: the pending length's were taken
        # with it, a new length's are compared as it comes, and after a full beat (rem - 8) the
        # rest is short when rem < 16.
        pend_short = Signal()
        pend_final = Signal()
        new_short  = new_len < lanes
        new_final  = new_len <= lanes
        with m.If(advance):
            with m.If(pend_valid):
                m.d.sync += [active.eq(1), pend_valid.eq(0),
                             rem.eq(pend), short.eq(pend_short), final.eq(pend_final)]
            with m.Elif(new):
                m.d.sync += [active.eq(1),
                             rem.eq(new_len), short.eq(new_short), final.eq(new_final)]
            with m.Else():
                m.d.sync += active.eq(0)
        with m.Else():
            with m.If(sent):
                m.d.sync += [rem.eq(rem - lanes), short.eq(rem < 2 * lanes),
                             final.eq(rem <= 2 * lanes)]
            with m.If(new):
                m.d.sync += [pend.eq(new_len), pend_valid.eq(1),
                             pend_short.eq(new_short), pend_final.eq(new_final)]

        return m
