# Ref: OASIS virtio 1.2, sections 2.7.7 (used buffer notifications), 2.7.8 (used ring), 2.7.10
#      (EVENT_IDX) and 5.2.6 (block device operation)
"""The back half of the request engine: request slots in, block operations and completions out.

The executor takes the chains :class:`~rtl.blk_fetch.ChainFetcher` fetched, one at a time in
the order they were fetched, and for each

1. treats the slot's segment lists as byte streams, whatever the descriptor boundaries: the
   request header is readable bytes [0, 16), OUT data is readable bytes [16, R), IN data goes
   to writable bytes [0, W - 1) and the status is the last writable byte [VIRTIO-1.2 5.2.6];
   the fetcher has usually read the header already;
2. moves data between those streams and the storage back-end through two
   :class:`~rtl.realign.ByteRealigner` s, so the data runs at one beat per cycle whatever the
   segment lengths;
3. writes the status byte, the used element ``{id = head, len = W}`` and ``used->idx``
   [VIRTIO-1.2 2.7.8], and reports the new ``used->idx`` to :class:`~rtl.blk_notify.Notifier`,
   which decides on the interrupt while the next request runs;
4. for a ``BROKEN`` slot, sets DEVICE_NEEDS_RESET, reports a configuration change and stops
   [VIRTIO-1.2 2.1.2].

The behaviour, including the choices the spec leaves open, is the golden model's
(:mod:`model.blk`); the model's docstring lists them.
"""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .dma_layouts import DmaCommand, DmaData, DmaError
from .dma_arbiter import DmaReadClient, DmaWriteClient
from .storage import StorageSignature, StorageOp, StorageStatus
from .realign import ByteRealigner
from .streams import SkidBuffer, RegisterSlice
from .virtio_regs import QueueConfigLayout
from .blk_notify import UsedReport
from .blk_segwalk import SegmentWalker
from .blk_slots import SegmentLayout, SlotKind, RequestSlot, seg_index_bits
from .wire_formats import VirtqUsedElem, BlkOutHdr, BlkDiscardSeg


__all__ = ["RequestExecutor"]


class RequestExecutor(wiring.Component):
    """Executes fetched virtio-blk requests and completes them on the used ring.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    slot : stream.Signature(RequestSlot(params)), in
        Fetched chains, each with its table in slot ``slot_index``.
    slot_index : Signal, out
        The slot of the chain being executed.
    hold : Signal(1), in; idx_busy : Signal(1), out
        The notifier holds back the ``used->idx`` write while an interrupt goes out; the
        executor says when one is under way (written, not yet reported).
    stop : Signal(1), in
        Take no more slots (the notifier found the ring broken).
    fetch_idle : Signal(1), in
        The fetcher has stopped and has no read outstanding: a ``BROKEN`` slot waits for it
        before DEVICE_NEEDS_RESET is set.
    slot_done : Signal(1), out
        Pulses when the executor is done with slot ``slot_index``'s table.
    seg_r_addr : Signal, out; seg_r_data : SegmentLayout, in
        A synchronous read port on the slot tables (entry ``seg_r_addr[:k]`` of slot
        ``seg_r_addr[k:]``): ``seg_r_data`` is the entry at the address of the cycle before.
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    device_status : Signal(8), in
        Slots are taken only with DRIVER_OK set and DEVICE_NEEDS_RESET clear.
    writeback : Signal(1), in
        The cache mode [VIRTIO-1.2 5.2.5], passed to the back-end as ``storage.writeback``.
    reset_req : Signal(1), in
        A device reset is under way: stop at the next safe point, drain, and report ``idle``.
    rd, wr : DmaReadClient, DmaWriteClient, out
    storage : StorageSignature(data_width), out
        The back-end.
    report : stream.Signature(UsedReport(params)), out
        Each ``used->idx`` written, once the write has been handed to the link; and the
        configuration change notification a ``BROKEN`` slot asks for.
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
            raise ValueError("RequestExecutor serves one discard / write-zeroes segment per "
                             "request; max_discard_seg and max_write_zeroes_seg must be 1")
        self.params = params
        self.seg_depth = params.seg_max + 2
        self.seg_bits = seg_index_bits(params)
        w = params.data_width
        super().__init__({
            "slot":            In(stream.Signature(RequestSlot(params))),
            "slot_index":      Out(range(max(params.request_slots, 2))),
            "fetch_idle":      In(1),
            "stop":            In(1),
            "hold":            In(1),
            "idx_busy":        Out(1),
            "slot_done":       Out(1),
            "seg_r_addr":      Out(range(params.request_slots << self.seg_bits)),
            "seg_r_data":      In(SegmentLayout()),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "device_status":   In(8),
            "rd":              Out(DmaReadClient(w)),
            "wr":              Out(DmaWriteClient(w)),
            "storage":         Out(StorageSignature(w)),
            "report":          Out(stream.Signature(UsedReport(params))),
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

        m.submodules.gather  = gather  = ByteRealigner(w)
        m.submodules.scatter = scatter = ByteRealigner(w)

        def feature(bit):
            return self.driver_features[bit]


        # -- per-queue device state ------------------------------------------------------------
        used_idx   = [Signal(16, name=f"q{i}_used_idx") for i in range(nq)]
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


        q_used_idx   = per_queue(used_idx)
        size_mask = Signal(16)
        m.d.comb += size_mask.eq(qcfg.size - 1)

        running = ((self.device_status & rm.STATUS_DRIVER_OK).any() &
                   ~(self.device_status & rm.STATUS_DEVICE_NEEDS_RESET).any() & ~self.reset_req)
        reset_now = self.device_status == 0
        # Whether a new request may start. `running` registered, as it reaches the slot
        # handshake and the read-ahead: a request taken in the cycle a reset is requested stops
        # in its first state, which is abortable. `stop` (a failed ring read) acts at once.
        running_r = Signal()
        m.d.sync += running_r.eq(running)
        go = running_r & ~self.stop

        # -- DMA bookkeeping -------------------------------------------------------------------
        rd_pending = Signal(16)
        wr_pending = Signal(16)
        rd_error   = Signal()       # sticky until cleared by the FSM
        wr_error   = Signal()
        clear_rd_error = Signal()
        clear_wr_error = Signal()
        m.d.comb += [self.rd.status.ready.eq(1), self.wr.status.ready.eq(1)]
        rd_issue = self.rd.cmd.valid & self.rd.cmd.ready
        wr_issue = self.wr.cmd.valid & self.wr.cmd.ready
        m.d.sync += rd_pending.eq(rd_pending + rd_issue - self.rd.status.valid)
        m.d.sync += wr_pending.eq(wr_pending + wr_issue - self.wr.status.valid)
        with m.If(clear_rd_error):
            m.d.sync += rd_error.eq(0)
        with m.If(self.rd.status.valid & (self.rd.status.payload.error != DmaError.OK)):
            m.d.sync += rd_error.eq(1)
        with m.If(clear_wr_error):
            m.d.sync += wr_error.eq(0)
        with m.If(self.wr.status.valid & (self.wr.status.payload.error != DmaError.OK)):
            m.d.sync += wr_error.eq(1)

        # Commands the FSM issues itself (ring accesses); the segment walker drives the command
        # streams while it runs.
        fsm_wr = Signal(DmaCommand)
        fsm_wr_valid = Signal()
        fsm_wr_data = Signal(DmaData(w))
        fsm_wr_data_valid = Signal()

        # -- the request slot ------------------------------------------------------------------
        slot = Signal(range(max(p.request_slots, 2)))
        m.d.comb += self.slot_index.eq(slot)
        head       = Signal(16)
        nseg       = Signal(range(self.seg_depth + 1))
        first_w    = Signal(range(self.seg_depth + 1))
        total_r    = Signal(48)
        total_w    = Signal(48)
        last_w_addr = Signal(64)    # last writable byte's address: the status byte

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
        st_pending = Signal()       # a back-end completion is due
        st_error   = Signal()

        # -- segment walker --------------------------------------------------------------------
        # Issues one DMA command per piece of a byte range of the readable or writable list
        # (:class:`~rtl.blk_segwalk.SegmentWalker`). For the writable list each piece's length
        # also goes to the scatter realigner, which cuts the data stream to match. A walk
        # starts only when the last one is over (every state that starts one comes after a
        # wait for `walker.busy` to fall, or after a request with no walk of its own), so
        # `wk_start` is always taken.
        m.submodules.walker = walker = SegmentWalker(p)
        # A walk goes to the walker through a register: the start's `valid` and its range come
        # from this FSM's state decode and its multiplexers, and the walker adds the range up
        # as it takes it. The walk in the register counts as busy.
        m.submodules.start_reg = start_reg = RegisterSlice(walker.start.signature.flip())
        wiring.connect(m, start_reg.o, walker.start)
        wk_start = Signal()
        wk_busy  = walker.busy | start_reg.o.valid
        start_write = Signal()
        start_off   = Signal(48)
        start_len   = Signal(48)
        # The slot whose table the walk reads: the current request's, but for a read-ahead.
        start_table   = Signal.like(slot)
        start_first_w = Signal.like(first_w)
        start_nseg    = Signal.like(nseg)
        start_ra      = Signal()
        m.d.comb += [start_table.eq(slot), start_first_w.eq(first_w), start_nseg.eq(nseg)]
        wk_ra    = Signal()         # the walk reads the next request's OUT data ahead
        m.d.comb += [
            start_reg.i.valid.eq(wk_start),
            start_reg.i.payload.table.eq(start_table),
            start_reg.i.payload.first.eq(Mux(start_write, start_first_w, 0)),
            start_reg.i.payload.end.eq(Mux(start_write, start_nseg, start_first_w)),
            start_reg.i.payload.off.eq(start_off),
            start_reg.i.payload.len.eq(start_len),
            start_reg.i.payload.write.eq(start_write),
            self.seg_r_addr.eq(walker.seg_r_addr),
            walker.seg_r_data.eq(self.seg_r_data),
        ]
        with m.If(wk_start):
            m.d.sync += wk_ra.eq(start_ra)

        # Command streams. The walker's writes and the FSM's ring writes never overlap; the
        # reads are all the walker's.
        piece = walker.piece
        wk_cmd = piece.payload.cmd
        with m.If(piece.valid & piece.payload.write):
            m.d.comb += [
                self.wr.cmd.payload.eq(wk_cmd),
                self.wr.cmd.valid.eq(scatter.length.ready),
                scatter.length.payload.eq(wk_cmd.length),
                scatter.length.valid.eq(self.wr.cmd.ready),
                piece.ready.eq(self.wr.cmd.ready & scatter.length.ready),
            ]
        with m.Else():
            m.d.comb += [
                self.wr.cmd.payload.eq(fsm_wr),
                self.wr.cmd.valid.eq(fsm_wr_valid),
            ]
        with m.If(piece.valid & ~piece.payload.write):
            m.d.comb += [
                self.rd.cmd.payload.eq(wk_cmd),
                self.rd.cmd.valid.eq(1),
                piece.ready.eq(self.rd.cmd.ready),
            ]

        # -- OUT data read ahead -----------------------------------------------------------
        # While an OUT request's data streams to the back-end, the data reads of the next
        # slot, when it is an OUT request that will pass its checks, go out already: its host
        # round trip overlaps this request's transfer. Its data stays in the DMA engine (it
        # comes back in command order, after this request's) until that request runs.
        # ra_valid: reads issued for the slot at the head of `slot`; ra_cmds of them so far,
        # none of whose data has been taken; data_out: commands whose last beat is still due.
        ra_valid = Signal()
        ra_cur   = Signal()         # the current request's reads went out ahead
        ra_cmds  = Signal(16)
        data_out = Signal(16)
        rd_data_last = self.rd.data.valid & self.rd.data.ready & self.rd.data.payload.last
        m.d.sync += data_out.eq(data_out + rd_issue - rd_data_last)
        # ra_cmds counts up here; the states below clear it through `ra_clear`.
        ra_clear = Signal()
        m.d.sync += ra_cmds.eq(Mux(ra_clear, 0, ra_cmds + (rd_issue & wk_ra)))
        # The current request's data only: the gather never takes a byte of the next one.
        # Kept in a register: the route it decides is on the way to the DMA engine's `ready`.
        # cur_cmds = data_out - ra_cmds, the current request's commands whose last beat is
        # due, is a counter of its own, and whether its next value is zero is decided from
        # its present value by the step it takes, so the late handshakes choose between
        # comparisons of registers with constants instead of going through adders.
        cur_cmds = Signal(16)
        cur_data = Signal()

        def nonzero_after(count, inc, dec):
            return Mux(inc & ~dec, count != 0xffff,
                       Mux(dec & ~inc, count != 1, count != 0))

        cur_inc = rd_issue & ~wk_ra
        m.d.sync += [
            cur_cmds.eq(Mux(ra_clear, data_out + rd_issue - rd_data_last,
                            cur_cmds + cur_inc - rd_data_last)),
            cur_data.eq(Mux(ra_clear, nonzero_after(data_out, rd_issue, rd_data_last),
                            nonzero_after(cur_cmds, cur_inc, rd_data_last))),
        ]

        # -- data routes -----------------------------------------------------------------------
        # Read data goes to the FSM (ring and descriptor reads) or to the gather realigner;
        # gather output goes to the header capture or to the back-end's write data.
        rd_to_gather = Signal()
        gather_to_storage = Signal()
        storage_to_scatter = Signal()
        scatter_to_wr = Signal()
        fsm_rd_ready = Signal()
        # The gather realigner takes its input through a skid buffer: its buffer's shifts are
        # not to wait for the route's decision in the same cycle. Only beats of the current
        # request's transfers go in, and every transfer runs to its end, so none is left there.
        m.submodules.gather_skid = gather_skid = SkidBuffer(gather.i.signature.flip())
        wiring.connect(m, gather_skid.o, gather.i)
        with m.If(rd_to_gather & cur_data):
            m.d.comb += [
                gather_skid.i.payload.eq(self.rd.data.payload),
                gather_skid.i.valid.eq(self.rd.data.valid),
                self.rd.data.ready.eq(gather_skid.i.ready),
            ]
        with m.Else():
            m.d.comb += self.rd.data.ready.eq(fsm_rd_ready)
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
        # The scatter realigner too takes its input through a skid buffer (the back-end's read
        # data or the serial number, by the state).
        m.submodules.scatter_skid = scatter_skid = SkidBuffer(scatter.i.signature.flip())
        wiring.connect(m, scatter_skid.o, scatter.i)
        with m.If(storage_to_scatter):
            m.d.comb += [
                scatter_skid.i.payload.data.eq(self.storage.rdata.payload.data),
                scatter_skid.i.payload.keep.eq((1 << nbytes) - 1),
                scatter_skid.i.payload.last.eq(self.storage.rdata.payload.last),
                scatter_skid.i.valid.eq(self.storage.rdata.valid),
                self.storage.rdata.ready.eq(scatter_skid.i.ready),
            ]
        with m.Else():
            m.d.comb += [
                scatter_skid.i.payload.eq(serial_beat),
                scatter_skid.i.valid.eq(serial_valid),
            ]
        # ... and gives its output through one: the ring window's multiplexers are the deepest
        # logic of the data path, and the write arbiter's skid buffer that takes the beats sits
        # by the DMA write engine, a long route away (issue 12: the critical path at 87.9 MHz).
        m.submodules.scatter_out = scatter_out = SkidBuffer(scatter.o.signature)
        wiring.connect(m, scatter.o, scatter_out.i)
        scatter_busy = scatter.o.valid | scatter_out.o.valid
        with m.If(scatter_to_wr):
            m.d.comb += [
                self.wr.data.payload.eq(scatter_out.o.payload),
                self.wr.data.valid.eq(scatter_out.o.valid),
                scatter_out.o.ready.eq(self.wr.data.ready),
            ]
        with m.Else():
            m.d.comb += [
                self.wr.data.payload.eq(fsm_wr_data),
                self.wr.data.valid.eq(fsm_wr_data_valid),   # ring writes: one beat each
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

        # Ring addresses.
        used_elem   = qcfg.device + 4 + Cat(Const(0, 3), q_used_idx & size_mask)
        # [VIRTIO-1.2 2.7.8] The used element: id = head, len = bytes written (all of W).
        elem = Signal(VirtqUsedElem)
        m.d.comb += [elem.id.eq(head), elem.len.eq(total_w[:32])]
        used_idx_addr = qcfg.device + 2

        # A ring write is a command and one data beat; each may be taken in a different cycle.
        wr_cmd_done = Signal()
        wr_beat_done = Signal()
        ring_write = Signal()
        with m.If(ring_write):
            with m.If(fsm_wr_valid & self.wr.cmd.ready):
                m.d.sync += wr_cmd_done.eq(1)
            with m.If(fsm_wr_data_valid & self.wr.data.ready):
                m.d.sync += wr_beat_done.eq(1)
        # From the FSM's own valids: no segment walk writes during a ring write, and the
        # walker's command logic stays out of this path.
        ring_write_done = ((wr_cmd_done | (fsm_wr_valid & self.wr.cmd.ready)) &
                           (wr_beat_done | (fsm_wr_data_valid & self.wr.data.ready)))

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

        # -- the report of the last used->idx written ----------------------------------------
        # [PCIe-3.0 2.4.1] Once the used-ring writes before it are handed to the link, the
        # notifier's read of the driver's flags cannot pass them: the report goes out when the
        # ``rep_ahead`` writes outstanding at the index write (it included) have left.
        rep_valid = Signal()
        rep_queue = Signal(range(max(nq, 2)))
        rep_idx   = Signal(16)
        rep_ahead = Signal(16)
        with m.If(rep_valid & self.wr.status.valid & (rep_ahead != 0)):
            m.d.sync += rep_ahead.eq(rep_ahead - 1)
        with m.If(rep_valid & (rep_ahead == 0)):
            m.d.comb += [
                self.report.valid.eq(1),
                self.report.payload.queue.eq(rep_queue),
                self.report.payload.used_idx.eq(rep_idx),
            ]
            with m.If(self.report.ready):
                m.d.sync += rep_valid.eq(0)
        m.d.comb += self.idx_busy.eq(rep_valid)
        with m.If(reset_now):
            m.d.sync += rep_valid.eq(0)

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
            (self.rd.cmd.valid & ~self.rd.cmd.ready) |
            (self.wr.cmd.valid & ~self.wr.cmd.ready) |
            (self.wr.data.valid & ~self.wr.data.ready) |
            (self.report.valid & ~self.report.ready))

        @contextmanager
        def state(name, abortable=1):
            with m.State(name):
                with m.If(self.reset_req & abortable & ~offered):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        def range_ok(first, n):
            # [VIRTIO-1.2 5.2.6.1] sectors past the capacity fail. Wide enough not to wrap.
            return (Cat(first, Const(0, 1)) + n) <= p.capacity

        nxt = self.slot.payload
        nxt_len = Signal(48)
        nxt_count = Signal(48)
        m.d.comb += [nxt_len.eq(nxt.total_r - rm.BLK_OUTHDR_BYTES),
                     nxt_count.eq(nxt_len[9:])]
        # Whether the slot offered is an OUT request whose data Data-Out may read ahead: exactly
        # the conditions under which Decode and Check-Range lead it to Gather-Length. Registered
        # (the arithmetic is not to reach the table read that starts the walk): a slot offered
        # stays until it is taken, and Data-Out is at least two cycles after one was taken.
        nxt_out = (self.slot.valid & ~self.slot.ready &
                   (nxt.kind == SlotKind.REQUEST) & nxt.header &
                   (nxt.req_type == rm.VIRTIO_BLK_T_OUT) &
                   Const(int(not p.read_only), 1) &
                   (nxt_len[:9] == 0) & (nxt_count != 0) &
                   (nxt_count >> 32 == 0) & range_ok(nxt.sector, nxt_count))
        nxt_out_r = Signal()
        m.d.sync += nxt_out_r.eq(nxt_out)

        with m.FSM(name="exec"):
            with m.State("Idle"):
                m.d.comb += self.idle.eq((rd_pending == 0) & (wr_pending == 0) & ~st_pending &
                                         ~rep_valid)
                s = self.slot.payload
                with m.If(go):
                    m.d.comb += self.slot.ready.eq(1)
                with m.If(ra_valid & ~go):
                    # The read-ahead's slot will not run (a reset or a broken ring): drop
                    # its data.
                    m.d.comb += self.idle.eq(0)
                    m.d.comb += fsm_rd_ready.eq(1)
                    with m.If(~wk_busy & (rd_pending == 0)):
                        m.d.sync += [ra_valid.eq(0), wk_ra.eq(0)]
                        m.d.comb += ra_clear.eq(1)
                with m.If(go & self.slot.valid):
                    m.d.comb += ra_clear.eq(1)
                    m.d.sync += [ra_cur.eq(ra_valid), ra_valid.eq(0),
                                 wk_ra.eq(0)]
                    m.d.sync += [
                        slot.eq(s.table), q.eq(s.queue), head.eq(s.head), nseg.eq(s.nseg),
                        first_w.eq(s.first_w), total_r.eq(s.total_r),
                        total_w.eq(s.total_w), last_w_addr.eq(s.status_addr),
                        req_type.eq(s.req_type), sector.eq(s.sector), st_error.eq(0),
                    ]
                    with m.If(s.kind == SlotKind.BROKEN):
                        m.next = "Broken"
                    with m.Elif(s.kind == SlotKind.IOERR):
                        m.d.sync += status.eq(rm.VIRTIO_BLK_S_IOERR)
                        m.next = "Write-Status"
                    with m.Elif(s.header & (s.req_type == rm.VIRTIO_BLK_T_IN)):
                        # Decode's IN and OUT cases, in the cycle the slot is taken.
                        in_len = s.total_w - 1
                        m.d.sync += [data_len.eq(in_len), count.eq(in_len[9:])]
                        m.next = "Check-Range"
                    with m.Elif(s.header & (s.req_type == rm.VIRTIO_BLK_T_OUT) &
                                Const(int(not p.read_only), 1)):
                        out_len = s.total_r - rm.BLK_OUTHDR_BYTES
                        m.d.sync += [data_len.eq(out_len), count.eq(out_len[9:])]
                        m.next = "Check-Range"
                    with m.Elif(s.header):
                        m.next = "Decode"
                    with m.Else():
                        m.next = "Start-Header"

            with state("Start-Header"):
                # The header spans segments: gather it through the segment table.
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
                        req_type.eq(data.View(BlkOutHdr, capture).type),
                        sector.eq(data.View(BlkOutHdr, capture).sector),
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
                    # (The walk's fields outside the condition: the walker reads its first
                    # segment's entry from them, and the back-end's ready is not to reach it.)
                    m.d.comb += [start_write.eq(1), start_off.eq(0), start_len.eq(data_len)]
                    with m.If(self.storage.cmd.ready & is_in):
                        m.d.comb += [wk_start.eq(1), clear_wr_error.eq(1)]
                        m.next = "Data-In"
                    with m.Elif(self.storage.cmd.ready):
                        m.next = "Gather-Length"

            with m.State("Data-In"):
                m.d.comb += [storage_to_scatter.eq(1), scatter_to_wr.eq(1)]
                with m.If(~wk_busy & ~st_pending & (wr_pending == 0) & ~scatter_busy):
                    m.d.comb += clear_wr_error.eq(1)
                    m.d.sync += status.eq(Mux(st_error | wr_error, rm.VIRTIO_BLK_S_IOERR,
                                              rm.VIRTIO_BLK_S_OK))
                    m.next = "Write-Status"

            with m.State("Gather-Length"):
                m.d.comb += [
                    gather.length.payload.eq(data_len),
                    gather.length.valid.eq(1),
                ]
                m.d.comb += [start_write.eq(0), start_off.eq(rm.BLK_OUTHDR_BYTES),
                             start_len.eq(data_len)]
                with m.If(gather.length.ready):
                    m.d.comb += clear_rd_error.eq(1)
                    with m.If(~ra_cur):
                        m.d.comb += wk_start.eq(1)
                    m.d.sync += ra_cur.eq(0)
                    m.next = "Data-Out"

            with m.State("Data-Out"):
                m.d.comb += [rd_to_gather.eq(1), gather_to_storage.eq(1)]
                m.d.comb += [
                    start_write.eq(0), start_off.eq(rm.BLK_OUTHDR_BYTES),
                    start_len.eq(nxt_len), start_table.eq(nxt.table),
                    start_first_w.eq(nxt.first_w), start_nseg.eq(nxt.nseg), start_ra.eq(1),
                ]
                with m.If(go & ~wk_busy & ~ra_valid & nxt_out_r):
                    m.d.comb += wk_start.eq(1)
                    m.d.sync += ra_valid.eq(1)
                with m.If((~wk_busy | wk_ra) & ~st_pending & (rd_pending == ra_cmds)):
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
                    with m.If(scatter_skid.i.ready):
                        m.d.sync += serial_k.eq(serial_k + 1)
                with m.Elif(~wk_busy & (wr_pending == 0) & ~scatter_busy):
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
                        seg_sector.eq(data.View(BlkDiscardSeg, capture).sector),
                        seg_count.eq(data.View(BlkDiscardSeg, capture).num_sectors),
                        seg_flags.eq(data.View(BlkDiscardSeg, capture).flags),
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
                ring_write_step(used_elem, VirtqUsedElem.size // 8, elem.as_value(),
                                "Wait-Hold")
                with m.If(ring_write_done & ~self.hold & ~rep_valid):
                    # Wait-Hold's condition holds already: straight to the index.
                    m.next = "Write-Used-Idx"

            with state("Wait-Hold"):
                # One report waits at a time (below); the next index waits for it.
                with m.If(~self.hold & ~rep_valid):
                    m.next = "Write-Used-Idx"

            with state("Write-Used-Idx", abortable=ring_write_idle):
                # [VIRTIO-1.2 2.7.8.2] used->idx after the element.
                m.d.comb += self.idx_busy.eq(1)
                ring_write_step(used_idx_addr, 2, q_used_idx + 1, "Idle")
                with m.If(ring_write_done):
                    set_per_queue(used_idx, q_used_idx + 1)
                    # The report waits for the writes before it (the index write included);
                    # the next request goes on meanwhile.
                    m.d.sync += [
                        rep_valid.eq(1), rep_queue.eq(q), rep_idx.eq(q_used_idx + 1),
                        rep_ahead.eq(wr_pending + wr_issue - self.wr.status.valid),
                    ]
                    m.d.comb += self.slot_done.eq(1)

            with state("Broken"):
                # [VIRTIO-1.2 2.1.2] DEVICE_NEEDS_RESET, then (from the notifier, after the
                # notifications due before it) a configuration change notification; no more
                # host memory accesses until reset: walkers still reading chains behind this
                # one finish first.
                with m.If(self.fetch_idle & ~rep_valid):
                    m.d.comb += [
                        self.needs_reset.eq(1),
                        self.report.valid.eq(1),
                        self.report.payload.config.eq(1),
                    ]
                    with m.If(self.report.ready):
                        m.next = "Halted"

            with m.State("Reset-Drain"):
                # Ring reads still coming are dropped; DMA and back-end statuses are counted.
                m.d.comb += fsm_rd_ready.eq(1)
                with m.If((rd_pending == 0) & (wr_pending == 0) & ~st_pending & ~wk_busy &
                          ~rep_valid):
                    m.d.comb += [clear_rd_error.eq(1), clear_wr_error.eq(1)]
                    m.d.sync += [ra_valid.eq(0), ra_cur.eq(0), wk_ra.eq(0)]
                    m.d.comb += ra_clear.eq(1)
                    m.next = "Halted"

            with m.State("Halted"):
                m.d.comb += self.idle.eq((rd_pending == 0) & (wr_pending == 0) & ~st_pending &
                                         ~rep_valid)
                # Drain whatever is still in flight, then wait for the reset.
                m.d.comb += [fsm_rd_ready.eq(1)]
                with m.If(reset_now):
                    m.next = "Idle"

        with m.If(reset_now):
            for i in range(nq):
                m.d.sync += used_idx[i].eq(0)
        with m.If(reset_now):
            m.d.sync += [ra_valid.eq(0), ra_cur.eq(0), wk_ra.eq(0)]
            m.d.comb += ra_clear.eq(1)
        return m
