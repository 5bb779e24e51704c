# Ref: OASIS virtio 1.2, sections 2.7.5 (descriptor table), 2.7.5.3 (indirect descriptors),
#      2.7.4.2 (readable before writable), 5.2.6 (block requests)
"""A chain walker: one available chain in, one request slot filled.

The avail reader gives a walker a head index and a free slot; the walker reads the chain,
``DeviceParams.desc_prefetch`` descriptors per read, following ``NEXT`` and ``INDIRECT``,
writes its segments into the slot's table and, when the first readable segment holds the
whole 16-byte request header, reads the header too. Then it hands the slot's
:class:`~rtl.blk_slots.RequestSlot` on. Several walkers work at once, each on its own chain,
so the dependent reads of several chains overlap.

The malformed-chain checks [VIRTIO-1.2 2.7.5, 2.7.5.1, 2.7.5.3.1, 2.7.4.2, 5.2.6.1] make the
slot ``BROKEN``; a chain longer than the slot's table makes it ``IOERR``.
"""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .dma_layouts import DmaError
from .dma_arbiter import DmaReadClient
from .virtio_regs import QueueConfigLayout
from .wire_formats import VirtqDesc, BlkOutHdr
from .blk_slots import SegmentLayout, SlotKind, RequestSlot, seg_index_bits


__all__ = ["WalkJob", "ChainWalker"]


class WalkJob(data.StructLayout):
    """A chain to walk: ``head`` of ``queue`` into ``slot``; with ``broken`` the ring is
    already known to be malformed here, and the slot is passed on as ``BROKEN`` at once."""
    def __init__(self, params):
        super().__init__({
            "queue":  range(max(params.num_queues, 2)),
            "head":   16,
            "slot":   range(max(params.request_slots, 2)),
            "broken": 1,
        })


class ChainWalker(wiring.Component):
    """Walks one descriptor chain at a time into a request slot.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    job : stream.Signature(WalkJob(params)), in
        Taken only when the walker is idle; dropped during a reset.
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    reset_req : Signal(1), in
        Stop at the next safe point and drain; the chain under way is dropped.
    rd : DmaReadClient, out
    seg_w_addr, seg_w_data, seg_w_en : out
        Writes to the slot tables, only in a cycle in which ``rd.data`` brings a descriptor:
        walkers that share one read engine never write in the same cycle.
    info : RequestSlot(params), out; info_valid : out; info_ready : in
        The filled slot's description, held until taken; ``slot`` says which slot.
    slot : out
    idle : Signal(1), out
        Waiting for a job, no read outstanding.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        self.seg_depth = params.seg_max + 2
        self.seg_bits = seg_index_bits(params)
        super().__init__({
            "job":             In(stream.Signature(WalkJob(params))),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "reset_req":       In(1),
            "rd":              Out(DmaReadClient(params.data_width)),
            "seg_w_addr":      Out(range(params.request_slots << self.seg_bits)),
            "seg_w_data":      Out(SegmentLayout()),
            "seg_w_en":        Out(1),
            "info":            Out(RequestSlot(params)),
            "info_valid":      Out(1),
            "info_ready":      In(1),
            "slot":            Out(range(max(params.request_slots, 2))),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        prefetch = p.desc_prefetch
        indirect_ok = self.driver_features[rm.VIRTIO_RING_F_INDIRECT_DESC]

        q = Signal(range(nq))
        qcfg = Signal(QueueConfigLayout())
        with m.Switch(q):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += qcfg.eq(self.queues[i])

        # -- reads -----------------------------------------------------------------------------
        rd_pending = Signal(4)
        rd_error = Signal()
        clear_rd_error = Signal()
        m.d.comb += self.rd.status.ready.eq(1)
        m.d.sync += rd_pending.eq(rd_pending + (self.rd.cmd.valid & self.rd.cmd.ready)
                                  - self.rd.status.valid)
        with m.If(clear_rd_error):
            m.d.sync += rd_error.eq(0)
        with m.If(self.rd.status.valid & (self.rd.status.payload.error != DmaError.OK)):
            m.d.sync += rd_error.eq(1)

        def read(addr, length):
            m.d.comb += [self.rd.cmd.payload.addr.eq(addr),
                         self.rd.cmd.payload.length.eq(length),
                         self.rd.cmd.payload.tag.eq(q),
                         self.rd.cmd.valid.eq(1)]
            return self.rd.cmd.ready

        # -- the chain -------------------------------------------------------------------------
        slot       = Signal(range(max(p.request_slots, 2)))
        head       = Signal(16)
        table      = Signal(64)     # descriptor table being walked
        table_size = Signal(32)     # its entries
        in_indirect = Signal()
        cur        = Signal(32)     # index of the descriptor wanted next
        visited    = Signal(32)     # descriptors walked in this table (loop guard)
        fetch_base = Signal(32)     # index of the first descriptor of the read in flight
        beat_k     = Signal(range(2 * prefetch + 1))
        desc_lo    = Signal(64)
        chain_done = Signal()
        go_indirect = Signal()
        malformed  = Signal()
        nseg       = Signal(range(self.seg_depth + 1))
        first_w    = Signal(range(self.seg_depth + 1))
        overflow   = Signal()       # more segments than the slot's table holds
        seen_w     = Signal()
        total_r    = Signal(48)
        total_w    = Signal(48)
        status_addr = Signal(64)    # the last writable byte: the status
        have_status = Signal()
        first_addr = Signal(64)     # the first segment, where the header starts
        first_len  = Signal(32)
        header     = Signal()
        hdr_k      = Signal(2)
        req_type   = Signal(32)
        sector     = Signal(64)
        kind       = Signal(SlotKind)

        m.d.comb += [
            self.slot.eq(slot),
            self.info.kind.eq(kind),
            self.info.queue.eq(q),
            self.info.head.eq(head),
            self.info.nseg.eq(nseg),
            self.info.first_w.eq(first_w),
            self.info.total_r.eq(total_r),
            self.info.total_w.eq(total_w),
            self.info.status_addr.eq(status_addr),
            self.info.header.eq(header),
            self.info.req_type.eq(req_type),
            self.info.sector.eq(sector),
        ]

        offered = Signal()
        m.d.sync += offered.eq(self.rd.cmd.valid & ~self.rd.cmd.ready)

        @contextmanager
        def state(name):
            with m.State(name):
                with m.If(self.reset_req & ~offered):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        m.d.comb += self.idle.eq(0)
        with m.FSM(name="walk"):
            with m.State("Idle"):
                # A job offered during a reset is taken (the offer must end) and dropped.
                m.d.comb += [self.idle.eq(rd_pending == 0), self.job.ready.eq(1)]
                job = self.job.payload
                with m.If(self.job.valid & ~self.reset_req):
                    m.d.sync += [
                        q.eq(job.queue), slot.eq(job.slot),
                        head.eq(job.head), cur.eq(job.head),
                        in_indirect.eq(0),
                        visited.eq(0),
                        nseg.eq(0), first_w.eq(0), overflow.eq(0), seen_w.eq(0),
                        total_r.eq(0), total_w.eq(0), have_status.eq(0),
                        chain_done.eq(0), go_indirect.eq(0), malformed.eq(0),
                        header.eq(0), kind.eq(SlotKind.BROKEN),
                    ]
                    with m.If(job.broken):
                        m.next = "Pass-Slot"
                    with m.Else():
                        m.next = "Start"

            with m.State("Start"):
                m.d.sync += [table.eq(qcfg.desc), table_size.eq(qcfg.size)]
                m.next = "Check-Head"

            with state("Check-Head"):
                with m.If(rd_pending != 0):
                    pass
                with m.Elif(rd_error | (cur >= table_size)):
                    # [VIRTIO-1.2 2.7.5] a head index out of range is a malformed ring.
                    m.d.comb += clear_rd_error.eq(1)
                    m.d.sync += kind.eq(SlotKind.BROKEN)
                    m.next = "Pass-Slot"
                with m.Else():
                    m.next = "Fetch-Descriptors"

            with state("Fetch-Descriptors"):
                n = Signal(17)
                m.d.comb += n.eq(Mux(table_size - cur > prefetch, prefetch, table_size - cur))
                with m.If(read(table + Cat(Const(0, 4), cur), Cat(Const(0, 4), n))):
                    m.d.sync += [fetch_base.eq(cur), beat_k.eq(0)]
                    m.next = "Take-Descriptors"

            with m.State("Take-Descriptors"):
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(self.rd.data.valid):
                    m.d.sync += beat_k.eq(beat_k + 1)
                    with m.If(~beat_k[0]):
                        m.d.sync += desc_lo.eq(self.rd.data.payload.data)
                    with m.Else():
                        # [VIRTIO-1.2 2.7.5] struct virtq_desc: addr, len, flags, next.
                        desc = data.View(VirtqDesc, Cat(desc_lo, self.rd.data.payload.data))
                        d_addr, d_len, d_next = desc.addr, desc.len, desc.next
                        f_next     = (desc.flags & rm.VIRTQ_DESC_F_NEXT).any()
                        f_write    = (desc.flags & rm.VIRTQ_DESC_F_WRITE).any()
                        f_indirect = (desc.flags & rm.VIRTQ_DESC_F_INDIRECT).any()
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
                                            have_status.eq(1),
                                            status_addr.eq(d_addr + d_len - 1),
                                        ]
                                with m.Else():
                                    # [VIRTIO-1.2 2.7.4.2] readable before writable.
                                    with m.If(seen_w):
                                        m.d.sync += malformed.eq(1)
                                    m.d.sync += total_r.eq(total_r + d_len)
                                    with m.If(nseg < self.seg_depth):
                                        m.d.sync += first_w.eq(nseg + 1)
                                    with m.If(nseg == 0):
                                        m.d.sync += [first_addr.eq(d_addr),
                                                     first_len.eq(d_len)]
                                with m.If(nseg < self.seg_depth):
                                    m.d.comb += [
                                        self.seg_w_addr.eq(Cat(nseg[:self.seg_bits], slot)),
                                        self.seg_w_data.eq(Cat(d_addr, d_len, f_write)),
                                        self.seg_w_en.eq(1),
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
                    with m.If(self.rd.data.payload.last):
                        m.next = "Chain-Step"

            with state("Chain-Step"):
                with m.If(rd_pending != 0):
                    pass
                with m.Elif(rd_error | malformed):
                    m.d.comb += clear_rd_error.eq(1)
                    m.d.sync += kind.eq(SlotKind.BROKEN)
                    m.next = "Pass-Slot"
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
                with m.If((total_r < rm.BLK_OUTHDR_BYTES) | ~have_status):
                    m.d.sync += kind.eq(SlotKind.BROKEN)
                with m.Elif(overflow):
                    m.d.sync += kind.eq(SlotKind.IOERR)
                with m.Else():
                    m.d.sync += kind.eq(SlotKind.REQUEST)
                with m.If(~overflow & (total_r >= rm.BLK_OUTHDR_BYTES) & have_status &
                          (first_len >= rm.BLK_OUTHDR_BYTES)):
                    m.next = "Read-Header"
                with m.Else():
                    m.next = "Pass-Slot"

            with state("Read-Header"):
                # The header in one piece: one read, two beats.
                with m.If(read(first_addr, rm.BLK_OUTHDR_BYTES)):
                    m.d.sync += hdr_k.eq(0)
                    m.next = "Take-Header"

            with m.State("Take-Header"):
                # [VIRTIO-1.2 5.2.6] struct virtio_blk_req: type, reserved, sector.
                m.d.comb += self.rd.data.ready.eq(1)
                # Beat 0 holds type and reserved, beat 1 the sector: each seen through the
                # layout at its place in the header.
                beat = self.rd.data.payload.data
                with m.If(self.rd.data.valid & (hdr_k != 2)):
                    m.d.sync += hdr_k.eq(hdr_k + 1)
                    with m.If(hdr_k == 0):
                        m.d.sync += req_type.eq(data.View(BlkOutHdr, Cat(beat, Const(0, 64))).type)
                    with m.Else():
                        m.d.sync += sector.eq(data.View(BlkOutHdr, Cat(Const(0, 64), beat)).sector)
                with m.If((hdr_k == 2) & (rd_pending == 0)):
                    m.d.comb += clear_rd_error.eq(1)
                    m.d.sync += header.eq(1)
                    with m.If(rd_error):
                        m.d.sync += kind.eq(SlotKind.IOERR)
                    m.next = "Pass-Slot"

            with state("Pass-Slot"):
                m.d.comb += self.info_valid.eq(1)
                with m.If(self.info_ready):
                    m.next = "Idle"

            with m.State("Reset-Drain"):
                # Reads still coming are dropped; the statuses are counted.
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(rd_pending == 0):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Idle"
        return m
