# Ref: PCIe Base 3.0, sections 2.2.2, 2.2.4.1, 2.2.5, 2.2.7 (Memory Write requests); PCI 3.0, 6.2.2
"""The write half of the DMA engine: client write commands in, Memory Write TLPs out.

A command names a host buffer (``addr``, ``length``); its data arrives on a separate stream,
packed from byte lane 0. The engine cuts the buffer into Memory Write requests that follow the
link's rules, moves each byte to the lane its host address needs, and reports one status per
command once the last TLP has gone out. Memory writes are posted: nothing comes back from the
host, so "done" means "handed to the link".
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import data, fifo, wiring, stream
from amaranth.lib.wiring import In, Out

from .tlp import Fmt, TlpType, TlpDw0, ReqDw1, TlpStreamSignature
from .dma_layouts import DmaCommand, DmaData, DmaStatus, DmaError
from .streams import SkidBuffer
from .realign import ByteRing


__all__ = ["DmaWriteEngine"]


class DmaWriteEngine(wiring.Component):
    """Turns client write commands into Memory Write TLPs.

    Each command is cut at every Max_Payload_Size-aligned address, so the first TLP runs up to
    the next such boundary and the others start on one: every TLP is at most Max_Payload_Size
    long [PCIe-3.0 2.2.2] and none crosses a 4 KB boundary [PCIe-3.0 2.2.7], since every
    Max_Payload_Size divides 4096. Requests below 4 GB use a 3 DW header, the others a 4 DW
    header [PCIe-3.0 2.2.4.1]; a command that straddles 4 GB switches format at the boundary
    (which is also a 4 KB boundary, so no TLP straddles it).

    Bus Master Enable is sampled before each TLP: a command accepted with it clear sends
    nothing, takes and drops its data, and ends with ``BUS_MASTER_DISABLED`` [PCI-3.0 6.2.2]; a
    command during which it goes clear (software, or a Function Level Reset) finishes the TLP
    under way, sends no other, drops the rest of its data and ends the same way.

    ``max_payload_size`` and ``requester_id`` are read at the start of each TLP. The reserved
    Max_Payload_Size encodings 110b and 111b are treated as 128 bytes, a size every function
    may use.

    The data stream is counted by the command's ``length``: a command takes
    ``ceil(length / 8)`` beats whatever their ``keep`` and ``last`` bits say, and bytes past
    ``length`` in its last beat are ignored. A command with ``length`` 0 (not a valid command)
    takes no data, sends nothing and ends with ``OK``.

    In the steady state the engine sends one 64-bit beat per cycle: a TLP costs its header
    beats and the beats its payload spans, with no idle cycle between TLPs. A command costs
    two cycles more (taking it and planning its first TLP): its status waits in a queue while
    the next command is taken. The data stream goes through a skid buffer (a cycle of latency)
    into a 32-byte ring (:class:`~rtl.realign.ByteRing`) that realigns the bytes for the TLP
    stream, which leaves through a second skid buffer (another cycle); the data stream is taken
    at full rate as long as the TLP stream is. A command's status is offered once its last
    beat has left the engine. There is no combinational path between ports.

    Parameters
    ----------
    data_width : int
        Width of the TLP and data streams in bits; 64 (128 and 256 are not implemented yet).

    Attributes
    ----------
    cmd : stream.Signature(DmaCommand), in
        Write commands: ``length`` (1 to :data:`~rtl.dma_layouts.DMA_MAX_LENGTH`) bytes to
        host address ``addr``; ``tag`` comes back in the status.
    data : stream.Signature(DmaData(data_width)), in
        The bytes of each command in address order, packed from byte lane 0: byte ``k`` of a
        transfer is in lane ``k % 8`` of beat ``k // 8``.
    status : stream.Signature(DmaStatus), out
        One per command, in command order, after its last TLP has been taken by ``tx``:
        ``OK``, or ``BUS_MASTER_DISABLED`` if Bus Master Enable was clear at the start of the
        command or went clear during it (then only the TLPs before that were sent).
    tx : TlpStreamSignature(data_width), out
        Memory Write requests (TC 0, no attributes, tag 0) to the link.
    bus_master : Signal(1), in
        Bus Master Enable, bit 2 of the Command register.
    requester_id : Signal(16), in
        Bus, Device and Function Numbers of this function.
    max_payload_size : Signal(3), in
        Max_Payload_Size of the Device Control register: 0 is 128 bytes ... 5 is 4096 bytes.

    Raises
    ------
    ValueError
        If ``data_width`` is not 64.
    """

    #: Realignment ring size in bytes: three beats of slack above the one being sent.
    BUFFER_BYTES = 32

    def __init__(self, data_width=64):
        if not isinstance(data_width, int) or data_width != 64:
            raise ValueError(f"DmaWriteEngine data_width must be 64 (128 and 256 are not "
                             f"implemented yet), not {data_width!r}")
        self.data_width = data_width
        super().__init__({
            "cmd":              In(stream.Signature(DmaCommand)),
            "data":             In(stream.Signature(DmaData(data_width))),
            "status":           Out(stream.Signature(DmaStatus)),
            "tx":               Out(TlpStreamSignature(data_width)),
            "bus_master":       In(1),
            "requester_id":     In(16),
            "max_payload_size": In(3),
        })

    def elaborate(self, platform):
        m = Module()
        nbuf = self.BUFFER_BYTES

        def byte_mask(n, lanes):
            """All ones in byte lanes below ``n``."""
            return Cat(*[(n > i).replicate(8) for i in range(lanes)])

        # -- the data, through a skid buffer -----------------------------------------------------
        # The buffer's shifts are deep logic; the client's data (from a realigner, through an
        # arbiter) is not to reach them in the same cycle.
        m.submodules.data_skid = data_skid = SkidBuffer(self.data.signature.flip())
        wiring.connect(m, wiring.flipped(self.data), data_skid.i)
        data_in = data_skid.o

        # -- the TLP stream, through a skid buffer -----------------------------------------------
        # The buffer's shifts are deep logic; the arbiter's `ready` is not to reach them, nor
        # are they to reach the arbiter's output register, in the same cycle. A beat that ends
        # a command carries `end` through the buffer, for the statuses below.
        m.submodules.tx_skid = tx_skid = SkidBuffer(stream.Signature(data.StructLayout({
            "beat": self.tx.payload.shape(), "end": 1})))
        tx = tx_skid.i
        m.d.comb += [
            self.tx.valid.eq(tx_skid.o.valid),
            self.tx.payload.eq(tx_skid.o.payload.beat),
            tx_skid.o.ready.eq(self.tx.ready),
        ]
        tx_empty = ~tx_skid.o.valid           # (a skid buffer fills only behind its output)
        ends_held = Signal(2)                 # beats with `end` in the skid buffer
        m.d.sync += ends_held.eq(ends_held + (tx.valid & tx.ready & tx.payload.end)
                                 - (tx_skid.o.valid & tx_skid.o.ready & tx_skid.o.payload.end))

        # -- the statuses of ended commands, until taken ----------------------------------------
        # A command's status goes in as its last beat goes into the skid buffer, and out only
        # once that beat has left it: "done" is "handed to the link" [PCIe-3.0 2.4.1], and a
        # client's read after the status must not pass the write. The statuses whose beats are
        # still held are the newest (the buffer keeps order), so the oldest `level - ends_held`
        # may go. A command that ends with no beat of its own (length 0, or Bus Master Enable
        # clear) ends only with the buffer empty. Four entries: with two held behind the
        # buffer, one waits while the next command is taken; `w_rdy` (from the queue's level, a
        # register) keeps `status.ready` off every other port.
        m.submodules.st_queue = st_queue = fifo.SyncFIFO(
            width=data.Layout.cast(DmaStatus).size, depth=4)
        st_in = data.View(DmaStatus, st_queue.w_data)
        m.d.comb += [
            self.status.valid.eq(st_queue.r_level > ends_held),
            self.status.payload.eq(st_queue.r_data),
            st_queue.r_en.eq(self.status.valid & self.status.ready),
        ]
        # A command is taken only while the queue has room, and only its own status goes in
        # before the next is taken: so at its end there is room, and the transmit path does
        # not wait on the queue.
        st_free = st_queue.w_rdy

        def finish(tag_value, error_value):
            """The command ends: its status into the queue, on to the next command."""
            m.d.comb += [st_in.tag.eq(tag_value), st_in.error.eq(error_value),
                         st_queue.w_en.eq(1)]
            m.next = "Accept-Command"

        # -- the command in progress -------------------------------------------------------------
        addr      = Signal(64)          # host address of the first byte not yet put in a TLP
        remaining = Signal(17)          # bytes not yet put in a TLP
        tag       = Signal(8)
        error     = Signal(DmaError)
        drop      = Signal()            # accepted with Bus Master Enable clear
        in_left   = Signal(17)          # bytes still to take from the data stream

        # -- realignment buffer: bytes taken from `data`, not yet sent, packed from lane 0 -------
        m.submodules.ring = ring = ByteRing(8, nbuf)
        count = ring.count

        # -- the TLP in progress -----------------------------------------------------------------
        hdr0      = Signal(TlpDw0)
        hdr1      = Signal(ReqDw1)
        addr_hi   = Signal(32)
        addr_lo   = Signal(32)
        four_dw   = Signal()
        tlp_left  = Signal(13)          # payload bytes of this TLP not yet sent
        lane      = Signal(3)           # byte lane of its next payload byte in the next beat
        with_addr = Signal()            # the next beat starts with DW2 of a 3 DW header

        # -- planning the next TLP from the command cursor ---------------------------------------
        # [PCIe-3.0 7.8.4] Max_Payload_Size, as a mask of the offset within one payload.
        mps_mask = Signal(12)
        with m.Switch(self.max_payload_size):
            for code in range(6):
                with m.Case(code):
                    m.d.comb += mps_mask.eq((128 << code) - 1)
            with m.Default():           # 110b and 111b are reserved: use the smallest size
                m.d.comb += mps_mask.eq(127)
        # [PCIe-3.0 2.2.2] A TLP's payload must not exceed Max_Payload_Size, and [PCIe-3.0
        # 2.2.7] a request must not cross a 4 KB boundary: stop at the next MPS-aligned
        # address, which is at or before the next 4 KB boundary.
        # `room` is a register, worked out from `addr` in the cycle after it moves (a TLP takes
        # at least two cycles, so it is ready for the next plan), and from the command's own
        # address as it is taken, so that planning a TLP starts from it.
        room = Signal(13)

        def room_at(a):
            return mps_mask - (a[:12] & mps_mask) + 1
        m.d.sync += room.eq(room_at(addr))
        tlp_len = Signal(13)
        m.d.comb += tlp_len.eq(Mux(remaining < room, remaining, room))
        offset = addr[:2]
        span = Signal(13)               # from the first byte of the first DW to the last byte
        m.d.comb += span.eq(offset + tlp_len)
        n_dw = Signal(11)
        m.d.comb += n_dw.eq((span + 3) >> 2)
        last_lane = (span - 1)[:2]
        first_be = Signal(4)
        last_be = Signal(4)
        for i in range(4):
            # [PCIe-3.0 2.2.5] First DW BE enables the bytes from the start address on (and only
            # up to the last byte if the request is 1 DW); Last DW BE the bytes up to the end,
            # and it is 0000b for a 1 DW request.
            m.d.comb += [
                first_be[i].eq((offset <= i) & (span > i)),
                last_be[i].eq((n_dw != 1) & (last_lane >= i)),
            ]
        # [PCIe-3.0 2.2.4.1] Addresses below 4 GB must use the 3 DW format.
        plan_four_dw = addr[32:] != 0

        # The payload starts at the DW holding `addr`: right after the header, which leaves it
        # in the upper half of a beat (3 DW) or at the start of one (4 DW). `lane` is set
        # through `lane_next`, which the ring needs a cycle ahead.
        plan_lane = Mux(plan_four_dw, 0, 4) + offset
        lane_next = Signal(3)
        m.d.comb += lane_next.eq(lane)
        m.d.sync += lane.eq(lane_next)

        def plan():
            """Start the next TLP: latch its header, advance the command cursor."""
            return [
                hdr0.eq(0),
                # [PCIe-3.0 2.2.7] MWr: Fmt 010b/011b, Type 0 0000b. TC 0 and no attributes.
                hdr0.fmt.eq(Mux(plan_four_dw, Fmt.DW4_DATA, Fmt.DW3_DATA)),
                hdr0.type.eq(TlpType.MEM),
                hdr0.length.eq(n_dw),   # 1024 DW is encoded as 0
                hdr1.first_be.eq(first_be),
                hdr1.last_be.eq(last_be),
                # [PCIe-3.0 2.2.6.2] Posted requests need no tag; send 0.
                hdr1.tag.eq(0),
                hdr1.requester_id.eq(self.requester_id),
                addr_hi.eq(addr[32:]),
                addr_lo.eq(Cat(Const(0, 2), addr[2:32])),
                four_dw.eq(plan_four_dw),
                tlp_left.eq(tlp_len),
                with_addr.eq(~plan_four_dw),
                addr.eq(addr + tlp_len),
                remaining.eq(remaining - tlp_len),
            ]

        # -- taking data into the buffer ---------------------------------------------------------
        # `in_left`'s comparisons are registers beside it, set with it (here, and as a command
        # is taken): the input's `ready` and the bytes it appends, which reach the clock
        # enables of every byte of the buffer, wait on no 17-bit comparison of their own.
        in_more = Signal()              # in_left != 0
        in_full = Signal()              # in_left >= 8: the next beat is a full one
        in_avail = Mux(in_full, 8, in_left[:4])
        in_n = Signal(4)                # bytes appended to the buffer this cycle
        out_n = Signal(4)               # bytes sent from the buffer this cycle
        m.d.comb += data_in.ready.eq(in_more & (count <= nbuf - 8))
        with m.If(data_in.valid & data_in.ready):
            m.d.sync += [in_left.eq(in_left - in_avail),
                         in_more.eq(in_left > 8), in_full.eq(in_left >= 16)]
            m.d.comb += in_n.eq(Mux(drop, 0, in_avail))
        m.d.comb += [ring.w_data.eq(data_in.payload.data), ring.w_n.eq(in_n),
                     ring.r_n.eq(out_n), ring.next_offset.eq(lane_next)]

        # -- the next payload beat ---------------------------------------------------------------
        # Its size and whether it ends the TLP are registers: worked out while the header goes
        # (from the planned `tlp_left` and `lane`), then after each beat for the next one
        # (which starts at lane 0), so the beat's `valid` and the status behind the TLP's last
        # one wait on no subtraction or comparison of their own.
        need = Signal(4)                # payload bytes in the next beat
        last = Signal()                 # the next beat is the TLP's last
        after = Signal(13)              # tlp_left after the next beat
        m.d.comb += after.eq(tlp_left - need)

        def plan_beat(left, to_beat_end):
            """Set `need` and `last` for a beat with `left` payload bytes still to send and
            room for `to_beat_end` of them."""
            return [need.eq(Mux(left < to_beat_end, left, to_beat_end)),
                    last.eq(left <= to_beat_end)]
        end = Signal(4)                 # byte lane after the last payload byte of the beat
        m.d.comb += end.eq(lane + need)
        # The ring shows its bytes from lane `lane` on (below it: DW2 of a 3 DW header).
        beat_data = ((ring.window & byte_mask(end, 8) & ~byte_mask(lane, 8)) |
                     Mux(with_addr, addr_lo, 0))

        with m.FSM():
            with m.State("Accept-Command"):
                m.d.comb += self.cmd.ready.eq(st_free)
                with m.If(self.cmd.valid & st_free):
                    p = self.cmd.payload
                    m.d.sync += [
                        addr.eq(p.addr),
                        room.eq(room_at(p.addr)),
                        remaining.eq(p.length),
                        in_left.eq(p.length),
                        in_more.eq(p.length != 0),
                        in_full.eq(p.length >= 8),
                        tag.eq(p.tag),
                        error.eq(DmaError.OK),
                    ]
                    with m.If(p.length == 0):
                        m.next = "End-Empty"
                    with m.Elif(~self.bus_master):
                        # [PCI-3.0 6.2.2] With Bus Master Enable clear the function must not
                        # issue memory requests: take the data and drop it.
                        m.d.sync += [
                            drop.eq(1),
                            error.eq(DmaError.BUS_MASTER_DISABLED),
                        ]
                        m.next = "Drop-Data"
                    with m.Else():
                        m.next = "Plan-TLP"

            with m.State("End-Empty"):
                # A command with no data: its status once the TLPs before it have left.
                with m.If(tx_empty):
                    finish(tag, error)

            with m.State("Drop-Data"):
                with m.If(~in_more & tx_empty):
                    m.d.sync += drop.eq(0)
                    finish(tag, error)

            with m.State("Plan-TLP"):
                m.d.sync += plan()
                m.d.comb += lane_next.eq(plan_lane)
                m.next = "Send-Header"

            with m.State("Send-Header"):
                m.d.sync += plan_beat(tlp_left, 8 - lane)
                m.d.comb += [
                    tx.valid.eq(1),
                    tx.payload.beat.data.eq(Cat(hdr0, hdr1)),
                    tx.payload.beat.keep.eq(0b11),
                    tx.payload.beat.first.eq(1),
                ]
                with m.If(tx.ready):
                    with m.If(four_dw):
                        m.next = "Send-Address"
                    with m.Else():
                        m.next = "Send-Data"      # DW2 goes with the first payload DW

            with m.State("Send-Address"):
                # [PCIe-3.0 2.2.4.1 Figure 2-14] 64-bit address: bits 63:32 in DW2, 31:2 in DW3.
                m.d.sync += plan_beat(tlp_left, 8 - lane)
                m.d.comb += [
                    tx.valid.eq(1),
                    tx.payload.beat.data.eq(Cat(addr_hi, addr_lo)),
                    tx.payload.beat.keep.eq(0b11),
                ]
                with m.If(tx.ready):
                    m.next = "Send-Data"

            with m.State("Send-Data"):
                m.d.comb += [
                    tx.valid.eq(count >= need),
                    tx.payload.beat.data.eq(beat_data),
                    tx.payload.beat.keep.eq(Cat(Const(1, 1), end > 4)),
                    tx.payload.beat.last.eq(last),
                ]
                with m.If(tx.valid & tx.ready):
                    m.d.comb += [out_n.eq(need), lane_next.eq(0)]
                    m.d.sync += [
                        tlp_left.eq(after),
                        with_addr.eq(0),
                        *plan_beat(after, 8),
                    ]
                    with m.If(last):
                        with m.If(remaining == 0):
                            m.d.comb += tx.payload.end.eq(1)
                            finish(tag, error)
                        with m.Elif(~self.bus_master):
                            # Bus Master Enable went clear (or an FLR came) during the
                            # command: no further TLP [PCI-3.0 6.2.2]; the rest is dropped,
                            # the bytes already buffered for it first (a full buffer would
                            # take no more data, and Drop-Data would wait forever).
                            m.d.sync += [
                                drop.eq(1),
                                error.eq(DmaError.BUS_MASTER_DISABLED),
                            ]
                            m.d.comb += ring.clear.eq(1)
                            m.next = "Drop-Data"
                        with m.Else():
                            # Plan the next TLP now, so there is no idle cycle between TLPs.
                            m.d.sync += plan()
                            m.d.comb += lane_next.eq(plan_lane)
                            m.next = "Send-Header"


        return m
