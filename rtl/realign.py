# Ref: VIRTIO 1.2, sections 2.7.4 (message framing) and 5.2.6 (block device operation)
"""Re-packing a byte stream into packets of given lengths.

[VIRTIO-1.2 2.7.4.1] The device must not assume any particular arrangement of descriptors: the
data of one block request may be spread over any number of buffers of any byte length. Each
buffer is one DMA transfer, whose bytes arrive packed from byte lane 0, while the storage
back-end moves whole sectors [VIRTIO-1.2 5.2.6] as one continuous stream of full beats.
:class:`ByteRealigner` moves bytes between the two framings, in both directions.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, unsigned
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from .dma_layouts import DmaData


__all__ = ["ByteRealigner"]


class ByteRealigner(wiring.Component):
    """Concatenates the bytes of an input stream and cuts them into packets of given lengths.

    Input packet boundaries do not matter: ``i.payload.last`` is ignored and the bytes of all
    input beats are simply concatenated. For each length ``L`` taken from ``length``, ``o``
    carries the next ``L`` of those bytes as one packet of ``ceil(L / 8)`` beats, packed from
    byte lane 0. The same block is thus a gatherer (many short DMA transfers in, one packet of
    their total length out) and a scatterer (one continuous stream in, packets of the lengths
    of the buffers out).

    Bytes taken from ``i`` wait in a 24-byte buffer. An input beat is taken while the buffer
    holds at most 16 bytes, so there is always room for it; an output beat is offered once the
    buffer holds a full beat, or the rest of the current packet if that is shorter. With full
    input beats and ``o.ready`` held high, ``o`` carries one beat per cycle in the steady
    state, whatever the packet lengths: a short last beat of one packet is followed at once by
    a full first beat of the next. With short input beats the input is taken every cycle while
    the output waits for bytes, so the output runs at the rate the input bytes come in.

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
    #: 16 bytes, so there is always a full output beat behind a short one.
    BUFFER_BYTES = 24

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

        # -- the buffer: bytes taken from `i`, not yet sent, packed from lane 0 ------------------
        # Invariant: the bytes at and above `count` are zero, so appending is an OR.
        buf   = Signal(8 * nbuf)
        count = Signal(range(nbuf + 1))

        # -- the next output beat ----------------------------------------------------------------
        # `rem` compared with a beat, kept in registers beside it (set with it, below): the
        # output's valid and framing then come from a few bits of registers.
        short = Signal()                # rem < lanes: the rest of the packet is less than a beat
        final = Signal()                # rem <= lanes: the next beat ends the packet
        need  = Signal(range(lanes + 1))  # bytes in the next output beat
        m.d.comb += need.eq(Mux(short, rem[:3], lanes))
        m.d.comb += [
            self.o.valid.eq(active & (count >= need)),
            self.o.payload.data.eq(buf[:self.data_width] & byte_mask(need)),
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
        in_bytes = self.i.payload.data & Cat(*[keep[k].replicate(8) for k in range(lanes)])
        out_n = Signal(range(lanes + 1))
        m.d.comb += out_n.eq(Mux(sent, need, 0))
        # Bytes left in the buffer after this beat is sent: both cases from registers, the
        # output's `ready` only picks one (it comes late, from the block the beat goes to).
        less_need = Signal(range(nbuf + 1))
        m.d.comb += less_need.eq(count - need)
        kept = Signal(range(nbuf + 1))
        m.d.comb += kept.eq(Mux(sent, less_need, count))
        m.d.sync += [
            buf.eq((buf >> Cat(Const(0, 3), out_n)) |
                   Mux(taken, in_bytes, 0) << Cat(Const(0, 3), kept)),
            count.eq(kept + in_n),
        ]

        # -- lengths -----------------------------------------------------------------------------
        # A length is taken whenever the pending slot is empty. When the current packet ends
        # (or there is none) the next one starts at once: from the pending slot, or else
        # straight from `length`. A length of 0 is taken and dropped.
        m.d.comb += self.length.ready.eq(~pend_valid)
        new_len = self.length.payload
        new = self.length.valid & ~pend_valid & (new_len != 0)
        advance = ~active | (sent & final)
        rem_next = Signal(32)
        m.d.comb += rem_next.eq(rem)
        with m.If(advance):
            with m.If(pend_valid):
                m.d.comb += rem_next.eq(pend)
                m.d.sync += [active.eq(1), pend_valid.eq(0)]
            with m.Elif(new):
                m.d.comb += rem_next.eq(new_len)
                m.d.sync += active.eq(1)
            with m.Else():
                m.d.sync += active.eq(0)
        with m.Else():
            with m.If(sent):
                m.d.comb += rem_next.eq(rem - lanes)
            with m.If(new):
                m.d.sync += [pend.eq(new_len), pend_valid.eq(1)]
        m.d.sync += [rem.eq(rem_next), short.eq(rem_next < lanes), final.eq(rem_next <= lanes)]

        return m
