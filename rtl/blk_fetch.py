# Ref: OASIS virtio 1.2, sections 2.7.5 (descriptor table), 2.7.6 (available ring), 2.7.10
#      (EVENT_IDX), 2.7.13 (supplying buffers), 5.2.6 (block requests)
"""The front of the request engine: doorbells in, fetched chains (request slots) out, in
ring order.

An :class:`~rtl.blk_avail.AvailReader` reads the available rings and gives each head, with a
free request slot, to the :class:`~rtl.blk_walk.ChainWalker`, which reads up to
``DeviceParams.chain_walkers`` chains at the same time. The slots are passed on in the order
the heads were dispatched, whichever chain is read first, so the executor serves each queue in
ring order. Slots are allocated and freed in that same order: a ring of
``DeviceParams.request_slots``.

A malformed ring is passed on as a ``BROKEN`` slot behind the chains before it; dispatching
stops there until the device is reset, and :attr:`idle` tells the executor when the chains
still being read after it have been, so that nothing touches host memory once
DEVICE_NEEDS_RESET is set [VIRTIO-1.2 2.1.2].
"""

from amaranth.hdl import Module, Signal, Mux, ResetInserter
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.params import DeviceParams
from .dma_arbiter import DmaReadClient, DmaWriteClient
from .virtio_regs import QueueConfigLayout, DoorbellLayout
from .blk_slots import SegmentLayout, SlotKind, RequestSlot, seg_index_bits
from .blk_avail import AvailReader
from .blk_walk import ChainWalker
from .streams import RegisterSlice


__all__ = ["ChainFetcher"]


class ChainFetcher(wiring.Component):
    """Fetches descriptor chains from the available rings into request slots.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    notify : stream.Signature(DoorbellLayout()), in
        Doorbells: the index of a queue with new available buffers, with the avail index when
        the driver sent one (VIRTIO_F_NOTIFICATION_DATA).
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    device_status : Signal(8), in
        Chains are fetched only with DRIVER_OK set and DEVICE_NEEDS_RESET clear.
    reset_req : Signal(1), in
        A device reset is under way: stop at the next safe point and drain.
    rd : array of 2 DmaReadClient, out
        The avail reader's ring reads (``rd[0]``) and the chain walker's descriptor, table and
        header reads (``rd[1]``), each a client of the engine's read arbiter: one arbiter
        between them and the DMA engine, not two (each level costs a registered hop, and the
        fetch's reads are dependent round trips).
    wr : DmaWriteClient, out
        The ``avail_event`` write [VIRTIO-1.2 2.7.10].
    slot : stream.Signature(RequestSlot(params)), out
        Fetched chains, in dispatch order (ring order per queue); ``table`` names the slot.
    stop : Signal(1), in
        Dispatch nothing more until reset (the notifier found the ring broken).
    slot_done : Signal(1), in
        The executor is done with the oldest slot passed on: its table may be filled again.
    seg_w_addr, seg_w_data, seg_w_en : out
        Writes to the slot tables: entry ``seg_w_addr[:k]`` of slot ``seg_w_addr[k:]``.
    idle : Signal(1), out
        Nothing in progress and no DMA outstanding.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        self.seg_bits = seg_index_bits(params)
        w = params.data_width
        super().__init__({
            "notify":          In(stream.Signature(DoorbellLayout())),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "device_status":   In(8),
            "reset_req":       In(1),
            "rd":              Out(DmaReadClient(w)).array(2),
            "wr":              Out(DmaWriteClient(w)),
            "slot":            Out(stream.Signature(RequestSlot(params))),
            "slot_done":       In(1),
            "stop":            In(1),
            "seg_w_addr":      Out(range(params.request_slots << self.seg_bits)),
            "seg_w_data":      Out(SegmentLayout()),
            "seg_w_en":        Out(1),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        n_slots = p.request_slots
        reset_now = self.device_status == 0

        m.submodules.avail = avail = AvailReader(p)
        m.submodules.walker = walker = ChainWalker(p)
        wiring.connect(m, avail.rd, wiring.flipped(self.rd[0]))
        wiring.connect(m, walker.rd, wiring.flipped(self.rd[1]))
        wiring.connect(m, avail.wr, wiring.flipped(self.wr))
        wiring.connect(m, wiring.flipped(self.notify), avail.notify)
        for stage in (avail, walker):
            for i in range(p.num_queues):
                m.d.comb += stage.queues[i].eq(self.queues[i])
            m.d.comb += [stage.driver_features.eq(self.driver_features),
                         stage.reset_req.eq(self.reset_req)]
        m.d.comb += avail.device_status.eq(self.device_status)

        # -- slots: allocated at dispatch and freed by the executor, both in dispatch order -----
        tail = Signal(range(max(n_slots, 2)))
        in_use = Signal(range(n_slots + 1))
        dispatched = avail.job.valid & avail.job.ready
        with m.If(dispatched):
            m.d.sync += tail.eq(Mux(tail == n_slots - 1, 0, tail + 1))
        m.d.sync += in_use.eq(in_use + dispatched - self.slot_done)
        m.d.comb += [avail.free_slot.eq(tail), avail.slot_free.eq(in_use < n_slots)]

        # Each head to the walker, through a register: the job's `valid` comes from the slot
        # count and the halt above, its `broken` from a compare of the ring entry, and the
        # walker starts on it; the half rate costs nothing, as each job is a descriptor read.
        m.submodules.job_reg = job_reg = ResetInserter(reset_now)(
            RegisterSlice(avail.job.signature))
        wiring.connect(m, avail.job, job_reg.i)
        wiring.connect(m, job_reg.o, walker.job)

        # The order in which the slots go to the executor.
        m.submodules.order = order = ResetInserter(reset_now)(
            fifo.SyncFIFO(width=max(n_slots - 1, 1).bit_length(), depth=n_slots))
        m.d.comb += [order.w_data.eq(avail.job.payload.slot), order.w_en.eq(dispatched)]

        # -- filled slots: the walker's descriptions, one a cycle -------------------------------
        m.submodules.infos = infos = Memory(shape=RequestSlot(p), depth=max(n_slots, 2),
                                            init=[])
        info_w = infos.write_port()
        info_r = infos.read_port(domain="comb")
        filled = Signal(max(n_slots, 2))
        filled_set = Signal(max(n_slots, 2))
        filled_clear = Signal(max(n_slots, 2))
        broken = Signal()            # a BROKEN slot was filled: stop dispatching
        m.d.comb += [
            walker.info_ready.eq(1),
            info_w.addr.eq(walker.slot),
            info_w.data.eq(walker.info),
            info_w.en.eq(walker.info_valid),
        ]
        with m.If(walker.info_valid):
            m.d.comb += filled_set.eq(1 << walker.slot)
            with m.If(walker.info.kind == SlotKind.BROKEN):
                m.d.sync += broken.eq(1)
        m.d.sync += filled.eq((filled | filled_set) & ~filled_clear)
        m.d.comb += avail.halt.eq(broken | self.stop)

        # -- segment tables: the walker writes them as the descriptors arrive ------------------
        m.d.comb += [
            self.seg_w_addr.eq(walker.seg_w_addr),
            self.seg_w_data.eq(walker.seg_w_data),
            self.seg_w_en.eq(walker.seg_w_en),
        ]

        # -- to the executor ----------------------------------------------------------------------
        # Through a register: the executor decodes the slot as it takes it, and the order
        # queue's and the descriptions' reads are not to add to that. A slot goes at most
        # every other cycle, and a request takes the executor many more than that.
        m.submodules.slot_reg = slot_reg = ResetInserter(reset_now)(
            RegisterSlice(self.slot.signature))
        head = order.r_data
        out = slot_reg.i
        m.d.comb += [
            info_r.addr.eq(head),
            out.payload.eq(info_r.data),
            out.payload.table.eq(head),
            out.valid.eq(order.r_rdy & (filled >> head)[0]),
            order.r_en.eq(out.valid & out.ready),
        ]
        with m.If(out.valid & out.ready):
            m.d.comb += filled_clear.eq(1 << head)
        wiring.connect(m, slot_reg.o, wiring.flipped(self.slot))

        m.d.comb += self.idle.eq(avail.idle & ~job_reg.o.valid & walker.idle)
        with m.If(reset_now):
            m.d.sync += [tail.eq(0), in_use.eq(0), filled.eq(0), broken.eq(0)]
        return m

