# Ref: OASIS virtio 1.2, sections 2.7 (split virtqueues) and 5.2.6 (block device operation)
"""The request engine: split virtqueues in host memory in, block operations on the back-end out.

One engine serves every queue, one request at a time, round robin over the queues that have
work. For each request it

1. knows ``avail->idx`` (read with ``avail->flags`` after the previous request, or on a
   doorbell), reads the next ``avail->ring`` entry, and walks the descriptor chain, fetching up
   to ``DeviceParams.desc_prefetch`` descriptors per read and following ``NEXT`` and
   ``INDIRECT``;
2. keeps the chain as a list of segments: the device-readable ones, then the device-writable
   ones [VIRTIO-1.2 2.7.4.2], with their byte totals R and W;
3. treats each list as one byte stream, whatever the descriptor boundaries: the request header
   is readable bytes [0, 16), OUT data is readable bytes [16, R), IN data goes to writable bytes
   [0, W - 1) and the status is the last writable byte [VIRTIO-1.2 5.2.6];
4. moves data between those streams and the storage back-end through two
   :class:`~rtl.realign.ByteRealigner` s, so the data runs at one beat per cycle whatever the
   segment lengths;
5. writes the status byte, the used element ``{id = head, len = W}`` and ``used->idx``, reads
   ``avail->flags``/``avail->idx`` (and ``used_event`` with EVENT_IDX) and asks for an
   interrupt if the driver wants one [VIRTIO-1.2 2.7.7, 2.7.10].

The behaviour, including the choices the spec leaves open, is the golden model's
(:mod:`model.blk`); the model's docstring lists them.
"""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal, Cat, Const, Mux, unsigned
from amaranth.lib import wiring, stream, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .dma_layouts import DmaCommand, DmaData, DMA_MAX_LENGTH
from .storage import StorageSignature, StorageOp, StorageStatus
from .realign import ByteRealigner
from .virtio_regs import QueueConfigLayout
from .interrupts import IrqRequest


__all__ = ["BlkEngine"]


class SegmentLayout(data.StructLayout):
    """One buffer of the chain."""
    def __init__(self):
        super().__init__({"addr": 64, "len": 32, "write": 1})


class BlkEngine(wiring.Component):
    """Serves virtio-blk requests from split virtqueues.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    notify : stream.Signature(16), in
        Doorbells: the index of a queue with new available buffers.
    queues : array of QueueConfigLayout, in
        The driver's queue configuration.
    driver_features : Signal(64), in
    device_status : Signal(8), in
        Requests are served only with DRIVER_OK set and DEVICE_NEEDS_RESET clear.
    writeback : Signal(1), in
        The cache mode [VIRTIO-1.2 5.2.5], passed to the back-end as ``storage.writeback``.
    reset_req : Signal(1), in
        A device reset is under way: stop at the next safe point, drain, and report ``idle``
        (the register file then finishes the reset; the engine clears its ring state when
        ``device_status`` reads 0).
    rd_cmd, rd_data, rd_status : DMA read engine client port.
    wr_cmd, wr_data, wr_status : DMA write engine client port.
    storage : StorageSignature(data_width), out
        The back-end.
    irq : stream.Signature(IrqRequest), out
        Interrupt requests, each after the ``used->idx`` write it announces has been sent.
    needs_reset : Signal(1), out
        Pulses when a malformed ring makes the device stop [VIRTIO-1.2 2.1.2]; the register
        file sets DEVICE_NEEDS_RESET and a configuration interrupt is requested.
    idle : Signal(1), out
        Nothing in progress: no request, no DMA or back-end operation outstanding.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        if params.max_discard_seg != 1 or params.max_write_zeroes_seg != 1:
            raise ValueError("BlkEngine serves one discard / write-zeroes segment per request; "
                             "max_discard_seg and max_write_zeroes_seg must be 1")
        self.params = params
        # [VIRTIO-1.2 5.2.4] seg_max data segments, plus the header and the status.
        self.seg_depth = params.seg_max + 2
        w = params.data_width
        super().__init__({
            "notify":          In(stream.Signature(16)),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "device_status":   In(8),
            "rd_cmd":          Out(stream.Signature(DmaCommand)),
            "rd_data":         In(stream.Signature(DmaData(w))),
            "rd_status":       In(stream.Signature(data.StructLayout({"tag": 8, "error": 3}))),
            "wr_cmd":          Out(stream.Signature(DmaCommand)),
            "wr_data":         Out(stream.Signature(DmaData(w))),
            "wr_status":       In(stream.Signature(data.StructLayout({"tag": 8, "error": 3}))),
            "storage":         Out(StorageSignature(w)),
            "irq":             Out(stream.Signature(IrqRequest)),
            "needs_reset":     Out(1),
            "reset_req":       In(1),
            "writeback":       In(1),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        w = p.data_width
        nbytes = w // 8
        prefetch = p.desc_prefetch

        m.submodules.gather  = gather  = ByteRealigner(w)
        m.submodules.scatter = scatter = ByteRealigner(w)
        m.submodules.segs    = segs    = Memory(shape=SegmentLayout(), depth=self.seg_depth,
                                                init=[])
        seg_w = segs.write_port()
        seg_r = segs.read_port(domain="comb")

        def feature(bit):
            return self.driver_features[bit]

        event_idx = feature(rm.VIRTIO_RING_F_EVENT_IDX)
        indirect_ok = feature(rm.VIRTIO_RING_F_INDIRECT_DESC)

        # -- per-queue device state ------------------------------------------------------------
        last_avail = [Signal(16, name=f"q{i}_last_avail") for i in range(nq)]
        used_idx   = [Signal(16, name=f"q{i}_used_idx") for i in range(nq)]
        signalled  = [Signal(16, name=f"q{i}_signalled") for i in range(nq)]
        avail_seen = [Signal(16, name=f"q{i}_avail_seen") for i in range(nq)]  # last avail->idx read
        active     = Signal(nq)   # the queue may have work
        kicked     = Signal(nq)   # a doorbell came since avail->idx was last read
        active_clear = Signal(nq)
        kicked_clear = Signal(nq)
        event_written = Signal()  # avail_event written since the queue was last found empty
        fresh      = Signal(nq)   # avail->idx read after the queue's last request
        used_event = Signal(16)

        q = Signal(range(nq))                 # the queue being served
        qcfg = Signal(QueueConfigLayout())
        with m.Switch(q):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += qcfg.eq(self.queues[i])

        def per_queue(regs):
            """The current queue's register out of a per-queue list (read and write)."""
            sel = Signal.like(regs[0], name=regs[0].name.split("_", 1)[1] + "_cur")
            with m.Switch(q):
                for i in range(nq):
                    with m.Case(i):
                        m.d.comb += sel.eq(regs[i])
            return sel

        def set_per_queue(regs, value):
            with m.Switch(q):
                for i in range(nq):
                    with m.Case(i):
                        m.d.sync += regs[i].eq(value)

        q_last_avail = per_queue(last_avail)
        q_used_idx   = per_queue(used_idx)
        q_signalled  = per_queue(signalled)
        q_avail_seen = per_queue(avail_seen)
        onehot_q = Signal(nq)
        m.d.comb += onehot_q.eq(Cat(q == i for i in range(nq)))
        size_mask = Signal(16)
        m.d.comb += size_mask.eq(qcfg.size - 1)

        running = self.device_status[2] & ~self.device_status[6] & ~self.reset_req
        reset_now = self.device_status == 0

        # -- doorbells -------------------------------------------------------------------------
        m.d.comb += self.notify.ready.eq(1)
        doorbell = Signal(nq)
        with m.If(self.notify.valid & running):
            m.d.comb += doorbell.eq(Cat(self.notify.payload == i for i in range(nq)))

        # -- DMA bookkeeping -------------------------------------------------------------------
        rd_pending = Signal(16)
        wr_pending = Signal(16)
        rd_error   = Signal()       # sticky until cleared by the FSM
        wr_error   = Signal()
        clear_rd_error = Signal()
        clear_wr_error = Signal()
        m.d.comb += [self.rd_status.ready.eq(1), self.wr_status.ready.eq(1)]
        rd_issue = self.rd_cmd.valid & self.rd_cmd.ready
        wr_issue = self.wr_cmd.valid & self.wr_cmd.ready
        m.d.sync += rd_pending.eq(rd_pending + rd_issue - self.rd_status.valid)
        m.d.sync += wr_pending.eq(wr_pending + wr_issue - self.wr_status.valid)
        with m.If(clear_rd_error):
            m.d.sync += rd_error.eq(0)
        with m.If(self.rd_status.valid & (self.rd_status.payload.error != 0)):
            m.d.sync += rd_error.eq(1)
        with m.If(clear_wr_error):
            m.d.sync += wr_error.eq(0)
        with m.If(self.wr_status.valid & (self.wr_status.payload.error != 0)):
            m.d.sync += wr_error.eq(1)

        # Commands the FSM issues itself (ring accesses); the segment walker drives the command
        # streams while it runs.
        fsm_rd = Signal(DmaCommand)
        fsm_rd_valid = Signal()
        fsm_wr = Signal(DmaCommand)
        fsm_wr_valid = Signal()
        fsm_wr_data = Signal(DmaData(w))
        fsm_wr_data_valid = Signal()

        # -- the chain -------------------------------------------------------------------------
        head       = Signal(16)
        table      = Signal(64)     # descriptor table being walked
        table_size = Signal(32)     # its entries
        in_indirect = Signal()
        cur        = Signal(32)     # index of the descriptor wanted next
        visited    = Signal(32)     # descriptors walked in this table (loop guard)
        fetch_base = Signal(32)     # index of the first descriptor of the read in flight
        fetch_n    = Signal(range(prefetch + 1))
        beat_k     = Signal(range(2 * prefetch + 1))
        desc_lo    = Signal(64)
        chain_done = Signal()
        go_indirect = Signal()
        malformed  = Signal()
        nseg       = Signal(range(self.seg_depth + 1))
        first_w    = Signal(range(self.seg_depth + 1))
        overflow   = Signal()       # more segments than the segment memory holds
        seen_w     = Signal()
        total_r    = Signal(48)
        total_w    = Signal(48)
        last_w_addr = Signal(64)    # last writable byte's address: the status byte
        have_last_w = Signal()

        # -- the request -----------------------------------------------------------------------
        capture  = Signal(128)      # header or discard segment, from the gather realigner
        cap_k    = Signal(2)
        req_type = Signal(32)
        sector   = Signal(64)
        status   = Signal(8)
        data_len = Signal(48)
        count    = Signal(48)
        seg_sector = Signal(64)
        seg_count  = Signal(32)
        seg_flags  = Signal(32)
        avail_flags = Signal(16)
        st_pending = Signal()       # a back-end completion is due
        st_error   = Signal()

        # -- segment walker --------------------------------------------------------------------
        # Issues one DMA command per piece of the byte range [wk_off, wk_end) of the readable or
        # writable list: a piece ends at a segment's end or after DMA_MAX_LENGTH bytes. For the
        # writable list each piece's length also goes to the scatter realigner, which cuts the
        # data stream to match.
        wk_start = Signal()
        wk_write = Signal()
        wk_busy  = Signal()
        wk_i     = Signal(range(self.seg_depth + 1))
        wk_end_i = Signal(range(self.seg_depth + 1))
        wk_seg_off = Signal(48)     # stream offset of segment wk_i
        wk_off   = Signal(48)
        wk_end   = Signal(48)
        start_write = Signal()
        start_off   = Signal(48)
        start_len   = Signal(48)
        with m.If(wk_start):
            m.d.sync += [
                wk_busy.eq(start_len != 0),
                wk_write.eq(start_write),
                wk_i.eq(Mux(start_write, first_w, 0)),
                wk_end_i.eq(Mux(start_write, nseg, first_w)),
                wk_seg_off.eq(0),
                wk_off.eq(start_off),
                wk_end.eq(start_off + start_len),
            ]
        seg = seg_r.data
        m.d.comb += seg_r.addr.eq(wk_i)
        seg_end = Signal(48)
        piece_end = Signal(48)
        piece_len = Signal(17)
        m.d.comb += [
            seg_end.eq(wk_seg_off + seg.len),
            piece_end.eq(Mux(seg_end < wk_end, seg_end, wk_end)),
        ]
        m.d.comb += piece_len.eq(Mux(piece_end - wk_off > DMA_MAX_LENGTH, DMA_MAX_LENGTH,
                                     piece_end - wk_off))
        wk_cmd = Signal(DmaCommand)
        m.d.comb += [
            wk_cmd.addr.eq(seg.addr + (wk_off - wk_seg_off)),
            wk_cmd.length.eq(piece_len),
        ]
        wk_skip = seg_end <= wk_off
        wk_valid = Signal()
        wk_taken = Signal()
        with m.If(wk_busy):
            with m.If(wk_i >= wk_end_i):
                # Ran out of segments (cannot happen when the range was checked against R/W).
                m.d.sync += wk_busy.eq(0)
            with m.Elif(wk_skip):
                m.d.sync += [wk_i.eq(wk_i + 1), wk_seg_off.eq(seg_end)]
            with m.Else():
                m.d.comb += wk_valid.eq(1)
                with m.If(wk_taken):
                    m.d.sync += wk_off.eq(wk_off + piece_len)
                    with m.If(wk_off + piece_len >= wk_end):
                        m.d.sync += wk_busy.eq(0)

        # Command stream muxes.
        with m.If(wk_busy):
            with m.If(wk_write):
                m.d.comb += [
                    self.wr_cmd.payload.eq(wk_cmd),
                    self.wr_cmd.valid.eq(wk_valid & scatter.length.ready),
                    scatter.length.payload.eq(wk_cmd.length),
                    scatter.length.valid.eq(wk_valid & self.wr_cmd.ready),
                    wk_taken.eq(self.wr_cmd.ready & scatter.length.ready),
                ]
            with m.Else():
                m.d.comb += [
                    self.rd_cmd.payload.eq(wk_cmd),
                    self.rd_cmd.valid.eq(wk_valid),
                    wk_taken.eq(self.rd_cmd.ready),
                ]
        with m.Else():
            m.d.comb += [
                self.rd_cmd.payload.eq(fsm_rd),
                self.rd_cmd.valid.eq(fsm_rd_valid),
                self.wr_cmd.payload.eq(fsm_wr),
                self.wr_cmd.valid.eq(fsm_wr_valid),
            ]

        # -- data routes -----------------------------------------------------------------------
        # Read data goes to the FSM (ring and descriptor reads) or to the gather realigner;
        # gather output goes to the header capture or to the back-end's write data.
        rd_to_gather = Signal()
        gather_to_storage = Signal()
        storage_to_scatter = Signal()
        scatter_to_wr = Signal()
        fsm_rd_ready = Signal()
        with m.If(rd_to_gather):
            m.d.comb += [
                gather.i.payload.eq(self.rd_data.payload),
                gather.i.valid.eq(self.rd_data.valid),
                self.rd_data.ready.eq(gather.i.ready),
            ]
        with m.Else():
            m.d.comb += self.rd_data.ready.eq(fsm_rd_ready)
        cap_ready = Signal()
        with m.If(gather_to_storage):
            m.d.comb += [
                self.storage.wdata.payload.data.eq(gather.o.payload.data),
                self.storage.wdata.payload.last.eq(gather.o.payload.last),
                self.storage.wdata.valid.eq(gather.o.valid),
                gather.o.ready.eq(self.storage.wdata.ready),
            ]
        with m.Else():
            m.d.comb += gather.o.ready.eq(cap_ready)
        with m.If(gather.o.valid & cap_ready):
            m.d.sync += [
                capture.eq(Cat(capture[64:], gather.o.payload.data)),
                cap_k.eq(cap_k + 1),
            ]

        serial_valid = Signal()
        serial_beat = Signal(DmaData(w))
        with m.If(storage_to_scatter):
            m.d.comb += [
                scatter.i.payload.data.eq(self.storage.rdata.payload.data),
                scatter.i.payload.keep.eq((1 << nbytes) - 1),
                scatter.i.payload.last.eq(self.storage.rdata.payload.last),
                scatter.i.valid.eq(self.storage.rdata.valid),
                self.storage.rdata.ready.eq(scatter.i.ready),
            ]
        with m.Else():
            m.d.comb += [
                scatter.i.payload.eq(serial_beat),
                scatter.i.valid.eq(serial_valid),
            ]
        with m.If(scatter_to_wr):
            m.d.comb += [
                self.wr_data.payload.eq(scatter.o.payload),
                self.wr_data.valid.eq(scatter.o.valid),
                scatter.o.ready.eq(self.wr_data.ready),
            ]
        with m.Else():
            m.d.comb += [
                self.wr_data.payload.eq(fsm_wr_data),
                self.wr_data.valid.eq(fsm_wr_data_valid),   # ring writes: one beat each
            ]

        # -- back-end --------------------------------------------------------------------------
        m.d.comb += [
            self.storage.writeback.eq(self.writeback),
            self.storage.cpl.ready.eq(1),
            # One command at a time, so the tag is only informative: the queue it serves.
            self.storage.cmd.payload.tag.eq(q),
        ]
        with m.If(self.storage.cmd.valid & self.storage.cmd.ready):
            m.d.sync += st_pending.eq(1)
        with m.If(self.storage.cpl.valid):
            m.d.sync += st_pending.eq(0)
            with m.If(self.storage.cpl.payload.status != StorageStatus.OK):
                m.d.sync += st_error.eq(1)

        # -- interrupts ------------------------------------------------------------------------
        irq_valid = Signal()
        irq_config = Signal()
        m.d.comb += [
            self.irq.valid.eq(irq_valid),
            self.irq.payload.queue.eq(q),
            self.irq.payload.config.eq(irq_config),
        ]

        # [VIRTIO-1.2 2.7.10] vring_need_event: (u16)(new - event - 1) < (u16)(new - old).
        def need_event(event, new, old):
            return (new - event - 1)[:16] < (new - old)[:16]

        # Ring addresses.
        avail_hdr   = qcfg.driver
        avail_entry = qcfg.driver + 4 + Cat(Const(0, 1), q_last_avail & size_mask)
        used_event_addr = qcfg.driver + 4 + Cat(Const(0, 1), qcfg.size)
        used_elem   = qcfg.device + 4 + Cat(Const(0, 3), q_used_idx & size_mask)
        used_idx_addr = qcfg.device + 2
        avail_event_addr = qcfg.device + 4 + Cat(Const(0, 3), qcfg.size)

        def fsm_read(addr, length, when=1):
            """Issue a ring read from the FSM while ``when`` holds; true when it is taken."""
            with m.If(when):
                m.d.comb += [fsm_rd.addr.eq(addr), fsm_rd.length.eq(length),
                             fsm_rd.tag.eq(q), fsm_rd_valid.eq(1)]
            return Const(1, 1) & when & self.rd_cmd.ready & ~wk_busy

        # A ring write is a command and one data beat; each may be taken in a different cycle.
        wr_cmd_done = Signal()
        wr_beat_done = Signal()
        ring_write = Signal()
        with m.If(ring_write):
            with m.If(self.wr_cmd.valid & self.wr_cmd.ready):
                m.d.sync += wr_cmd_done.eq(1)
            with m.If(self.wr_data.valid & self.wr_data.ready):
                m.d.sync += wr_beat_done.eq(1)
        ring_write_done = ((wr_cmd_done | (self.wr_cmd.valid & self.wr_cmd.ready)) &
                           (wr_beat_done | (self.wr_data.valid & self.wr_data.ready)))

        def ring_write_step(addr, length, value, next_state):
            m.d.comb += ring_write.eq(1)
            m.d.comb += [
                fsm_wr.addr.eq(addr), fsm_wr.length.eq(length), fsm_wr.tag.eq(q),
                fsm_wr_valid.eq(~wr_cmd_done),
                fsm_wr_data.data.eq(value),
                fsm_wr_data.keep.eq((1 << nbytes) - 1),
                fsm_wr_data.last.eq(1),
                fsm_wr_data_valid.eq(~wr_beat_done),
            ]
            with m.If(ring_write_done):
                m.d.sync += [wr_cmd_done.eq(0), wr_beat_done.eq(0)]
                m.next = next_state

        m.d.comb += self.idle.eq(0)
        serial = p.serial_bytes()
        serial_n = Signal(range(21))
        serial_k = Signal(range(4))

        # [VIRTIO-1.2 2.4.1] On a reset the engine stops at the next state that would start
        # something new (a ring access, a storage command, an interrupt) and drains what is in
        # flight. A data transfer under way (header, segment, IN/OUT data, ID) runs to its end
        # first: the realigners and the back-end see whole frames, and the DMA engines get
        # every data beat of the commands they took. The reset finishes only after that.
        ring_write_idle = ~wr_cmd_done & ~wr_beat_done
        # A stream that showed valid without ready in the last cycle must keep it until the
        # transfer: the state finishes that handshake before it may give way to the reset.
        offered = Signal()
        m.d.sync += offered.eq(
            (self.storage.cmd.valid & ~self.storage.cmd.ready) |
            (self.rd_cmd.valid & ~self.rd_cmd.ready) |
            (self.wr_cmd.valid & ~self.wr_cmd.ready) |
            (self.wr_data.valid & ~self.wr_data.ready) |
            (self.irq.valid & ~self.irq.ready))

        @contextmanager
        def state(name, abortable=1):
            with m.State(name):
                with m.If(self.reset_req & abortable & ~offered):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        with m.FSM(name="engine"):
            with m.State("Idle"):
                m.d.comb += self.idle.eq((rd_pending == 0) & (wr_pending == 0) & ~st_pending)
                # Round robin: the first active queue after the last one served.
                nxt = Signal(range(nq))
                found = Signal()
                for k in reversed(range(1, nq + 1)):
                    for i in range(nq):
                        cand = (i + k) % nq
                        with m.If((q == i) & active[cand]):
                            m.d.comb += [nxt.eq(cand), found.eq(1)]
                fresh_nxt = Signal()
                m.d.comb += fresh_nxt.eq((fresh >> nxt)[0])
                with m.If(running & found):
                    m.d.sync += [q.eq(nxt), event_written.eq(0)]
                    # avail->idx was read after this queue's last request (Post-Request): no
                    # need to read it again before serving what it showed.
                    with m.If(fresh_nxt):
                        m.d.sync += fresh.eq(fresh & ~Cat(nxt == i for i in range(nq)))
                        m.next = "Check-Avail"
                    with m.Else():
                        m.next = "Read-Avail-Idx"

            with state("Read-Avail-Idx"):
                # [VIRTIO-1.2 2.7.6] avail->flags and avail->idx, one 4-byte read.
                m.d.sync += event_written.eq(0)
                issued = fsm_read(avail_hdr, 4, when=qcfg.enable)
                with m.If(~qcfg.enable):
                    m.d.comb += active_clear.eq(onehot_q)
                    m.next = "Idle"
                with m.Elif(issued):
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.next = "Take-Avail-Idx"

            with state("Take-Avail-Idx"):
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If(self.rd_data.valid):
                    m.d.sync += avail_flags.eq(self.rd_data.payload.data[:16])
                    set_per_queue(avail_seen, self.rd_data.payload.data[16:32])
                    m.next = "Check-Avail"

            with state("Check-Avail"):
                ahead = Signal(16)
                m.d.comb += ahead.eq(q_avail_seen - q_last_avail)
                with m.If(rd_pending != 0):
                    pass     # the read's status
                with m.Elif(rd_error):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Broken"
                with m.Elif(ahead > qcfg.size):
                    # [VIRTIO-1.2 2.7.13.3] idx can run at most Queue Size ahead.
                    m.next = "Broken"
                with m.Elif(ahead != 0):
                    m.next = "Read-Avail-Entry"
                with m.Else():
                    m.next = "Drained"

            with state("Drained", abortable=ring_write_idle):
                # [VIRTIO-1.2 2.7.10] With EVENT_IDX, ask for a doorbell at the next buffer:
                # avail_event = last_avail_idx, then look again before going idle.
                with m.If(event_idx & ~event_written):
                    ring_write_step(avail_event_addr, 2, q_last_avail, "Recheck-Avail")
                with m.Else():
                    # A doorbell since the last read of avail->idx keeps the queue active.
                    m.d.comb += active_clear.eq(onehot_q & ~kicked)
                    m.next = "Idle"

            with state("Recheck-Avail"):
                # The avail_event write is posted; the read after it is not passed by it.
                with m.If(fsm_read(avail_hdr, 4, when=wr_pending == 0)):
                    m.d.sync += event_written.eq(1)
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.next = "Take-Avail-Idx"

            with state("Read-Avail-Entry"):
                m.d.sync += event_written.eq(0)
                with m.If(fsm_read(avail_entry, 2)):
                    m.next = "Take-Avail-Entry"

            with state("Take-Avail-Entry"):
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If(self.rd_data.valid):
                    m.d.sync += [
                        head.eq(self.rd_data.payload.data[:16]),
                        cur.eq(self.rd_data.payload.data[:16]),
                        table.eq(qcfg.desc),
                        table_size.eq(qcfg.size),
                        in_indirect.eq(0),
                        visited.eq(0),
                        nseg.eq(0), first_w.eq(0), overflow.eq(0), seen_w.eq(0),
                        total_r.eq(0), total_w.eq(0), have_last_w.eq(0),
                        chain_done.eq(0), go_indirect.eq(0), malformed.eq(0),
                    ]
                    m.next = "Check-Head"

            with state("Check-Head"):
                with m.If(rd_pending != 0):
                    pass
                with m.Elif(rd_error | (cur >= table_size)):
                    # [VIRTIO-1.2 2.7.5] a head index out of range is a malformed ring.
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Broken"
                with m.Else():
                    m.next = "Fetch-Descriptors"

            with state("Fetch-Descriptors"):
                n = Signal(17)
                m.d.comb += n.eq(Mux(table_size - cur > prefetch, prefetch, table_size - cur))
                with m.If(fsm_read(table + Cat(Const(0, 4), cur), Cat(Const(0, 4), n))):
                    m.d.sync += [fetch_base.eq(cur), fetch_n.eq(n), beat_k.eq(0)]
                    m.next = "Take-Descriptors"

            with state("Take-Descriptors"):
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If(self.rd_data.valid):
                    m.d.sync += beat_k.eq(beat_k + 1)
                    with m.If(~beat_k[0]):
                        m.d.sync += desc_lo.eq(self.rd_data.payload.data)
                    with m.Else():
                        d_addr  = desc_lo
                        d_len   = self.rd_data.payload.data[:32]
                        d_flags = self.rd_data.payload.data[32:48]
                        d_next  = self.rd_data.payload.data[48:64]
                        f_next, f_write, f_indirect = d_flags[0], d_flags[1], d_flags[2]
                        index = fetch_base + beat_k[1:]
                        with m.If((index == cur) & ~chain_done & ~go_indirect & ~malformed):
                            m.d.sync += visited.eq(visited + 1)
                            with m.If(visited >= table_size):
                                # [VIRTIO-1.2 2.7.5.1] a chain longer than the table loops.
                                m.d.sync += malformed.eq(1)
                            with m.Elif(f_indirect):
                                # [VIRTIO-1.2 2.7.5.3.1] INDIRECT needs the feature, not inside
                                # an indirect table, not with NEXT, and whole descriptors.
                                with m.If(~indirect_ok | in_indirect | f_next |
                                          (d_len[:4] != 0) | (d_len == 0)):
                                    m.d.sync += malformed.eq(1)
                                with m.Else():
                                    m.d.sync += [
                                        go_indirect.eq(1),
                                        table.eq(d_addr),
                                        table_size.eq(d_len[4:]),
                                    ]
                            with m.Else():
                                with m.If(f_write):
                                    m.d.sync += [
                                        seen_w.eq(1),
                                        total_w.eq(total_w + d_len),
                                    ]
                                    with m.If(d_len != 0):
                                        m.d.sync += [
                                            have_last_w.eq(1),
                                            last_w_addr.eq(d_addr + d_len - 1),
                                        ]
                                with m.Else():
                                    # [VIRTIO-1.2 2.7.4.2] readable before writable.
                                    with m.If(seen_w):
                                        m.d.sync += malformed.eq(1)
                                    m.d.sync += total_r.eq(total_r + d_len)
                                    with m.If(nseg < self.seg_depth):
                                        m.d.sync += first_w.eq(nseg + 1)
                                with m.If(nseg < self.seg_depth):
                                    m.d.comb += [
                                        seg_w.addr.eq(nseg),
                                        seg_w.data.eq(Cat(d_addr, d_len, f_write)),
                                        seg_w.en.eq(1),
                                    ]
                                    m.d.sync += nseg.eq(nseg + 1)
                                with m.Else():
                                    m.d.sync += overflow.eq(1)
                                with m.If(f_next):
                                    with m.If(d_next >= table_size):
                                        m.d.sync += malformed.eq(1)
                                    m.d.sync += cur.eq(d_next)
                                with m.Else():
                                    m.d.sync += chain_done.eq(1)
                        with m.If(self.rd_data.payload.last):
                            m.next = "Chain-Step"

            with state("Chain-Step"):
                with m.If(rd_pending != 0):
                    pass
                with m.Elif(rd_error | malformed):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Broken"
                with m.Elif(go_indirect):
                    m.d.sync += [go_indirect.eq(0), in_indirect.eq(1), cur.eq(0),
                                 visited.eq(0)]
                    m.next = "Fetch-Descriptors"
                with m.Elif(chain_done):
                    m.next = "Check-Chain"
                with m.Else():
                    m.next = "Fetch-Descriptors"

            with state("Check-Chain"):
                # [VIRTIO-1.2 5.2.6.1] a request has a 16-byte header and a status byte.
                with m.If((total_r < rm.BLK_OUTHDR_BYTES) | ~have_last_w):
                    m.next = "Broken"
                with m.Elif(overflow):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                    m.next = "Write-Status"
                with m.Else():
                    m.d.comb += [
                        start_write.eq(0), start_off.eq(0),
                        start_len.eq(rm.BLK_OUTHDR_BYTES), wk_start.eq(1),
                    ]
                    m.d.sync += cap_k.eq(0)
                    m.next = "Read-Header"

            with m.State("Read-Header"):
                m.d.comb += [rd_to_gather.eq(1), gather.length.payload.eq(16),
                             gather.length.valid.eq(1)]
                with m.If(gather.length.ready):
                    m.next = "Take-Header"

            with m.State("Take-Header"):
                m.d.comb += [rd_to_gather.eq(1), cap_ready.eq(1)]
                with m.If((cap_k == 2) & (rd_pending == 0) & ~wk_busy):
                    m.d.sync += [
                        req_type.eq(capture[:32]),
                        sector.eq(capture[64:128]),
                        st_error.eq(0),
                    ]
                    m.d.comb += clear_rd_error.eq(1)
                    with m.If(rd_error):
                        m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                        m.next = "Write-Status"
                    with m.Else():
                        m.next = "Decode"

            with state("Decode"):
                wr_data_len = total_w - 1
                rd_data_len = total_r - rm.BLK_OUTHDR_BYTES
                read_only = p.read_only
                with m.Switch(req_type):
                    with m.Case(rm.VIRTIO_BLK_T_IN):
                        m.d.sync += [data_len.eq(wr_data_len), count.eq(wr_data_len[9:])]
                        m.next = "Check-Range"
                    with m.Case(rm.VIRTIO_BLK_T_OUT):
                        m.d.sync += [data_len.eq(rd_data_len), count.eq(rd_data_len[9:])]
                        if read_only:
                            m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                            m.next = "Write-Status"
                        else:
                            m.next = "Check-Range"
                    with m.Case(rm.VIRTIO_BLK_T_FLUSH):
                        m.next = "Flush"
                    with m.Case(rm.VIRTIO_BLK_T_GET_ID):
                        m.d.sync += [
                            serial_n.eq(Mux(wr_data_len > rm.VIRTIO_BLK_ID_BYTES,
                                            rm.VIRTIO_BLK_ID_BYTES, wr_data_len)),
                            serial_k.eq(0),
                        ]
                        m.next = "Get-Id"
                    with m.Case(rm.VIRTIO_BLK_T_DISCARD, rm.VIRTIO_BLK_T_WRITE_ZEROES):
                        negotiated = Mux(req_type == rm.VIRTIO_BLK_T_DISCARD,
                                         feature(rm.VIRTIO_BLK_F_DISCARD),
                                         feature(rm.VIRTIO_BLK_F_WRITE_ZEROES))
                        with m.If(~negotiated | (rd_data_len != rm.BLK_DISCARD_SEG_BYTES)):
                            # [VIRTIO-1.2 5.2.6.2] one whole segment, max_*_seg is 1.
                            m.d.sync += status.eq(rm.VIRTIO_BLK_S_UNSUPP)
                            m.next = "Write-Status"
                        with m.Else():
                            m.d.comb += [
                                start_write.eq(0), start_off.eq(rm.BLK_OUTHDR_BYTES),
                                start_len.eq(rm.BLK_DISCARD_SEG_BYTES), wk_start.eq(1),
                            ]
                            m.d.sync += cap_k.eq(0)
                            m.next = "Read-Segment"
                    with m.Default():
                        m.d.sync += status.eq(rm.VIRTIO_BLK_S_UNSUPP)
                        m.next = "Write-Status"

            def range_ok(first, n):
                # [VIRTIO-1.2 5.2.6.1] sectors past the capacity fail. Wide enough not to wrap.
                return (Cat(first, Const(0, 1)) + n) <= p.capacity

            with state("Check-Range"):
                # IN or OUT: whole sectors, inside the disk, a count the port can carry.
                is_in = req_type == rm.VIRTIO_BLK_T_IN
                with m.If((data_len[:9] != 0) | ~range_ok(sector, count) | (count >> 32 != 0)):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                    m.next = "Write-Status"
                with m.Elif(count == 0):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_OK)
                    m.next = "Write-Status"
                with m.Else():
                    m.d.comb += [
                        self.storage.cmd.valid.eq(1),
                        self.storage.cmd.payload.op.eq(Mux(is_in, StorageOp.READ,
                                                           StorageOp.WRITE)),
                        self.storage.cmd.payload.sector.eq(sector),
                        self.storage.cmd.payload.count.eq(count),
                    ]
                    with m.If(self.storage.cmd.ready & is_in):
                        m.d.comb += [
                            start_write.eq(1), start_off.eq(0), start_len.eq(data_len),
                            wk_start.eq(1), clear_wr_error.eq(1),
                        ]
                        m.next = "Data-In"
                    with m.Elif(self.storage.cmd.ready):
                        m.next = "Gather-Length"

            with m.State("Data-In"):
                m.d.comb += [storage_to_scatter.eq(1), scatter_to_wr.eq(1)]
                with m.If(~wk_busy & ~st_pending & (wr_pending == 0) & ~scatter.o.valid):
                    m.d.comb += clear_wr_error.eq(1)
                    m.d.sync += status.eq(Mux(st_error | wr_error, rm.VIRTIO_BLK_S_IOERR,
                                              rm.VIRTIO_BLK_S_OK))
                    m.next = "Write-Status"

            with m.State("Gather-Length"):
                m.d.comb += [
                    gather.length.payload.eq(data_len),
                    gather.length.valid.eq(1),
                ]
                with m.If(gather.length.ready):
                    m.d.comb += [
                        start_write.eq(0), start_off.eq(rm.BLK_OUTHDR_BYTES),
                        start_len.eq(data_len), wk_start.eq(1), clear_rd_error.eq(1),
                    ]
                    m.next = "Data-Out"

            with m.State("Data-Out"):
                m.d.comb += [rd_to_gather.eq(1), gather_to_storage.eq(1)]
                with m.If(~wk_busy & ~st_pending & (rd_pending == 0)):
                    m.d.comb += clear_rd_error.eq(1)
                    m.d.sync += status.eq(Mux(st_error | rd_error, rm.VIRTIO_BLK_S_IOERR,
                                              rm.VIRTIO_BLK_S_OK))
                    m.next = "Write-Status"

            with state("Flush"):
                m.d.comb += [
                    self.storage.cmd.valid.eq(1),
                    self.storage.cmd.payload.op.eq(StorageOp.FLUSH),
                ]
                with m.If(self.storage.cmd.ready):
                    m.next = "Wait-Storage"

            with state("Wait-Storage"):
                with m.If(~st_pending):
                    m.d.sync += status.eq(Mux(st_error, rm.VIRTIO_BLK_S_IOERR,
                                              rm.VIRTIO_BLK_S_OK))
                    m.next = "Write-Status"

            with state("Get-Id"):
                # [VIRTIO-1.2 5.2.6] GET_ID: up to 20 bytes of serial, zero padded.
                with m.If(serial_n == 0):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_OK)
                    m.next = "Write-Status"
                with m.Else():
                    m.d.comb += [
                        start_write.eq(1), start_off.eq(0), start_len.eq(serial_n),
                        wk_start.eq(1), clear_wr_error.eq(1),
                    ]
                    m.next = "Send-Id"

            with m.State("Send-Id"):
                m.d.comb += scatter_to_wr.eq(1)
                words = [int.from_bytes(serial[8 * k:8 * k + 8].ljust(8, b"\0"), "little")
                         for k in range(3)]
                with m.Switch(serial_k):
                    for k in range(3):
                        with m.Case(k):
                            m.d.comb += serial_beat.data.eq(words[k])
                sent = Cat(Const(0, 3), serial_k)
                m.d.comb += serial_beat.last.eq(serial_k == 2)
                m.d.comb += serial_beat.keep.eq(Cat(*[(sent + i < serial_n)
                                                      for i in range(nbytes)]))
                with m.If(sent < serial_n):
                    m.d.comb += serial_valid.eq(1)
                    with m.If(scatter.i.ready):
                        m.d.sync += serial_k.eq(serial_k + 1)
                with m.Elif(~wk_busy & (wr_pending == 0) & ~scatter.o.valid):
                    m.d.comb += clear_wr_error.eq(1)
                    m.d.sync += status.eq(Mux(wr_error, rm.VIRTIO_BLK_S_IOERR,
                                              rm.VIRTIO_BLK_S_OK))
                    m.next = "Write-Status"

            with m.State("Read-Segment"):
                m.d.comb += [rd_to_gather.eq(1), gather.length.payload.eq(16),
                             gather.length.valid.eq(1)]
                with m.If(gather.length.ready):
                    m.next = "Take-Segment"

            with m.State("Take-Segment"):
                m.d.comb += [rd_to_gather.eq(1), cap_ready.eq(1)]
                with m.If((cap_k == 2) & (rd_pending == 0) & ~wk_busy):
                    m.d.sync += [
                        seg_sector.eq(capture[:64]),
                        seg_count.eq(capture[64:96]),
                        seg_flags.eq(capture[96:128]),
                    ]
                    m.d.comb += clear_rd_error.eq(1)
                    with m.If(rd_error):
                        m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                        m.next = "Write-Status"
                    with m.Else():
                        m.next = "Check-Segment"

            with state("Check-Segment"):
                is_discard = req_type == rm.VIRTIO_BLK_T_DISCARD
                bad_flags = Mux(is_discard, seg_flags != 0,
                                (seg_flags & ~rm.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) != 0)
                limit = Mux(is_discard, p.max_discard_sectors, p.max_write_zeroes_sectors)
                with m.If(bad_flags):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_UNSUPP)
                    m.next = "Write-Status"
                with m.Elif((seg_count > limit) | ~range_ok(seg_sector, seg_count) |
                            Const(int(p.read_only), 1)):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                    m.next = "Write-Status"
                with m.Elif(seg_count == 0):
                    m.d.sync += status.eq(rm.VIRTIO_BLK_S_OK)
                    m.next = "Write-Status"
                with m.Else():
                    m.d.comb += [
                        self.storage.cmd.valid.eq(1),
                        self.storage.cmd.payload.op.eq(Mux(is_discard, StorageOp.DISCARD,
                                                           StorageOp.WRITE_ZEROES)),
                        self.storage.cmd.payload.sector.eq(seg_sector),
                        self.storage.cmd.payload.count.eq(seg_count),
                    ]
                    with m.If(self.storage.cmd.ready):
                        m.next = "Wait-Storage"

            with state("Write-Status", abortable=ring_write_idle):
                ring_write_step(last_w_addr, 1, status, "Write-Used-Elem")

            with state("Write-Used-Elem", abortable=ring_write_idle):
                # [VIRTIO-1.2 2.7.8] used element: id = head, len = bytes written (all of W).
                ring_write_step(used_elem, 8, Cat(head, Const(0, 16), total_w[:32]),
                                "Write-Used-Idx")

            with state("Write-Used-Idx", abortable=ring_write_idle):
                # [VIRTIO-1.2 2.7.8.2] used->idx after the element.
                ring_write_step(used_idx_addr, 2, q_used_idx + 1, "Post-Request")
                with m.If(ring_write_done):
                    set_per_queue(used_idx, q_used_idx + 1)
                    set_per_queue(last_avail, q_last_avail + 1)

            with state("Post-Request"):
                # Read avail->flags/idx again: it tells whether the driver wants an interrupt
                # [VIRTIO-1.2 2.7.7] and how much work is left. A read is not passed by the
                # posted used-ring writes before it [PCIe-3.0 2.4.1], so it sees them done.
                with m.If(fsm_read(avail_hdr, 4, when=wr_pending == 0)):
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.d.sync += fresh.eq(fresh | onehot_q)
                    with m.If(event_idx):
                        m.next = "Read-Used-Event"
                    with m.Else():
                        m.next = "Take-Post-Avail"

            with state("Read-Used-Event"):
                # [VIRTIO-1.2 2.7.10] used_event, in flight together with avail->idx.
                with m.If(fsm_read(used_event_addr, 2)):
                    m.next = "Take-Post-Avail"

            with state("Take-Post-Avail"):
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If(self.rd_data.valid):
                    m.d.sync += avail_flags.eq(self.rd_data.payload.data[:16])
                    set_per_queue(avail_seen, self.rd_data.payload.data[16:32])
                    with m.If(event_idx):
                        m.next = "Take-Used-Event"
                    with m.Else():
                        m.next = "Decide-Interrupt"

            with state("Take-Used-Event"):
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If(self.rd_data.valid):
                    m.d.sync += used_event.eq(self.rd_data.payload.data[:16])
                    m.next = "Decide-Interrupt"

            with state("Decide-Interrupt"):
                want = Mux(event_idx, need_event(used_event, q_used_idx, q_signalled),
                           ~avail_flags[0])
                with m.If((rd_pending == 0) & (wr_pending == 0)):
                    m.d.comb += clear_rd_error.eq(1)
                    with m.If(rd_error):
                        m.next = "Broken"
                    with m.Elif(want):
                        m.d.comb += [irq_valid.eq(1), irq_config.eq(0)]
                        with m.If(self.irq.ready):
                            set_per_queue(signalled, q_used_idx)
                            m.next = "Idle"
                    with m.Else():
                        set_per_queue(signalled, q_used_idx)
                        m.next = "Idle"

            with state("Broken"):
                # [VIRTIO-1.2 2.1.2] DEVICE_NEEDS_RESET, then a configuration change
                # notification; no more host memory accesses until reset.
                m.d.comb += self.needs_reset.eq(1)
                m.d.comb += [irq_valid.eq(1), irq_config.eq(1)]
                with m.If(self.irq.ready):
                    m.next = "Halted"

            with m.State("Reset-Drain"):
                # Ring reads still coming are dropped; DMA and back-end statuses are counted.
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If((rd_pending == 0) & (wr_pending == 0) & ~st_pending & ~wk_busy):
                    m.d.comb += [clear_rd_error.eq(1), clear_wr_error.eq(1)]
                    m.next = "Halted"

            with m.State("Halted"):
                m.d.comb += self.idle.eq((rd_pending == 0) & (wr_pending == 0) & ~st_pending)
                # Drain whatever is still in flight, then wait for the reset.
                m.d.comb += [fsm_rd_ready.eq(1)]
                with m.If(reset_now):
                    m.next = "Idle"

        # Doorbells mark queues active; served queues drop out in "Drained".
        m.d.sync += [
            active.eq(active & ~active_clear | doorbell),
            kicked.eq(kicked & ~kicked_clear | doorbell),
        ]

        with m.If(reset_now):
            m.d.sync += [active.eq(0), kicked.eq(0), fresh.eq(0)]
            for i in range(nq):
                m.d.sync += [last_avail[i].eq(0), used_idx[i].eq(0), signalled[i].eq(0),
                             avail_seen[i].eq(0)]
        return m
