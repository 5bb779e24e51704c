# Ref: OASIS virtio 1.2, sections 2.7 (split virtqueues) and 5.2.6 (block device operation)
"""The request engine: split virtqueues in host memory in, block operations on the back-end out.

Three stages, the first two joined by a queue of *request slots* (:mod:`rtl.blk_slots`):

* :class:`~rtl.blk_fetch.ChainFetcher` serves the doorbells, round robin over the queues
  with work, and fetches each new chain (avail entry, descriptors, indirect table, request
  header) into a free slot;
* :class:`~rtl.blk_exec.RequestExecutor` takes the slots in order, moves the data between the
  chain's buffers and the storage back-end, and completes each request on the used ring;
* :class:`~rtl.blk_notify.Notifier` decides, off the request path, which of those completions
  get an interrupt.

The fetcher runs up to ``DeviceParams.request_slots`` chains ahead, so the dependent reads of
the next requests overlap the data of the one being served. The two stages share the DMA
engines through :class:`~rtl.dma_arbiter.DmaReadArbiter` and
:class:`~rtl.dma_arbiter.DmaWriteArbiter`.

The behaviour, including the choices the spec leaves open, is the golden model's
(:mod:`model.blk`); the model's docstring lists them.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring, stream, data
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model.params import DeviceParams
from .dma_layouts import DmaCommand, DmaData
from .dma_arbiter import DmaReadArbiter, DmaWriteArbiter
from .storage import StorageSignature
from .virtio_regs import QueueConfigLayout, DoorbellLayout
from .interrupts import IrqRequest
from .blk_slots import SegmentLayout, seg_index_bits
from .blk_fetch import ChainFetcher
from .blk_exec import RequestExecutor
from .blk_notify import Notifier


__all__ = ["BlkEngine"]


class BlkEngine(wiring.Component):
    """Serves virtio-blk requests from split virtqueues.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    notify : stream.Signature(DoorbellLayout()), in
        Doorbells: the index of a queue with new available buffers, with the avail index when
        the driver sent one (VIRTIO_F_NOTIFICATION_DATA).
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
    irq_idle : Signal(1), in
        The interrupt controller's ``idle``.
    msix_enable : Signal(1), in
        MSI-X Enable (0 when the function has no MSI-X): which queues share an interrupt.
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
            "notify":          In(stream.Signature(DoorbellLayout())),
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
            "irq_idle":        In(1),
            "msix_enable":     In(1),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        w = p.data_width
        m.submodules.fetch = fetch = ChainFetcher(p)
        m.submodules.execute = execute = RequestExecutor(p)
        m.submodules.notify = notify = Notifier(p)
        # One read arbiter for all four readers: the avail reader, the chain walker, the
        # executor and the notifier, each through its registers (one hop per read).
        m.submodules.rd_arbiter = rd_arb = DmaReadArbiter(4, w)
        m.submodules.wr_arbiter = wr_arb = DmaWriteArbiter(2, w)

        # -- the DMA engines: the fetcher's ring reads beside the executor's data -------------
        wiring.connect(m, fetch.rd[0], rd_arb.i[0])
        wiring.connect(m, fetch.rd[1], rd_arb.i[1])
        wiring.connect(m, execute.rd, rd_arb.i[2])
        wiring.connect(m, notify.rd, rd_arb.i[3])
        wiring.connect(m, fetch.wr, wr_arb.i[0])
        wiring.connect(m, execute.wr, wr_arb.i[1])
        m.d.comb += [
            self.rd_cmd.payload.eq(rd_arb.o.cmd.payload),
            self.rd_cmd.valid.eq(rd_arb.o.cmd.valid),
            rd_arb.o.cmd.ready.eq(self.rd_cmd.ready),
            rd_arb.o.data.payload.eq(self.rd_data.payload),
            rd_arb.o.data.valid.eq(self.rd_data.valid),
            self.rd_data.ready.eq(rd_arb.o.data.ready),
            rd_arb.o.status.payload.eq(self.rd_status.payload),
            rd_arb.o.status.valid.eq(self.rd_status.valid),
            self.rd_status.ready.eq(rd_arb.o.status.ready),
            self.wr_cmd.payload.eq(wr_arb.o.cmd.payload),
            self.wr_cmd.valid.eq(wr_arb.o.cmd.valid),
            wr_arb.o.cmd.ready.eq(self.wr_cmd.ready),
            self.wr_data.payload.eq(wr_arb.o.data.payload),
            self.wr_data.valid.eq(wr_arb.o.data.valid),
            wr_arb.o.data.ready.eq(self.wr_data.ready),
            wr_arb.o.status.payload.eq(self.wr_status.payload),
            wr_arb.o.status.valid.eq(self.wr_status.valid),
            self.wr_status.ready.eq(wr_arb.o.status.ready),
        ]

        # -- request slots: a table of segments per slot, and the rest in a queue --------------
        m.submodules.tables = tables = Memory(
            shape=SegmentLayout(), depth=p.request_slots << seg_index_bits(p), init=[])
        seg_w = tables.write_port()
        # A synchronous read: the tables map to block RAM (8 slots of 128 segments are 97 Kbit, too
        # much for LUT RAM); the executor's walker waits a cycle for each new entry.
        seg_r = tables.read_port()
        m.d.comb += [
            seg_w.addr.eq(fetch.seg_w_addr), seg_w.data.eq(fetch.seg_w_data),
            seg_w.en.eq(fetch.seg_w_en),
            seg_r.addr.eq(execute.seg_r_addr), execute.seg_r_data.eq(seg_r.data),
        ]
        wiring.connect(m, fetch.slot, execute.slot)
        m.d.comb += [
            fetch.slot_done.eq(execute.slot_done),
            execute.fetch_idle.eq(fetch.idle),
        ]

        # -- the rest --------------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.notify), fetch.notify)
        wiring.connect(m, execute.storage, wiring.flipped(self.storage))
        wiring.connect(m, execute.report, notify.report)
        wiring.connect(m, notify.irq, wiring.flipped(self.irq))
        for stage in (fetch, execute, notify):
            for i in range(p.num_queues):
                m.d.comb += stage.queues[i].eq(self.queues[i])
            m.d.comb += [
                stage.driver_features.eq(self.driver_features),
                stage.device_status.eq(self.device_status),
                stage.reset_req.eq(self.reset_req),
            ]
        m.d.comb += [
            execute.writeback.eq(self.writeback),
            notify.irq_idle.eq(self.irq_idle),
            notify.idx_busy.eq(execute.idx_busy),
            notify.others_idle.eq(fetch.idle & execute.idle),
            fetch.stop.eq(notify.stop),
            execute.stop.eq(notify.stop),
            execute.hold.eq(notify.hold),
            notify.msix_enable.eq(self.msix_enable),
            self.needs_reset.eq(execute.needs_reset | notify.needs_reset),
            self.idle.eq(fetch.idle & execute.idle & notify.idle),
        ]
        return m
