# Ref: OASIS virtio 1.2, sections 2.7.5 (descriptor table), 2.7.5.3 (indirect descriptors),
#      2.7.4.2 (readable before writable), 5.2.6 (block requests)
"""The chain walker: available chains in, request slots filled, several chains at once.

The avail reader gives the walker a head index and a free slot; the walker reads the chain,
``DeviceParams.desc_prefetch`` descriptors per read, following ``NEXT`` and ``INDIRECT``,
writes its segments into the slot's table and, when the first readable segment holds the
whole 16-byte request header, reads the header too. Then it hands the slot's
:class:`~rtl.blk_slots.RequestSlot` on.

A chain is a few dependent reads (head descriptor, indirect table, header), each a host round
trip, while its logic works only in the few cycles its data streams in. So the walker keeps
up to ``DeviceParams.chain_walkers`` chains in flight, each in a *context* (the chain's walk
state, in a small memory), and one datapath serves them all: a read's data comes back in
command order, so a queue of the contexts that issued the reads outstanding says whose data
arrives next. The datapath loads that context, takes the data, decides (the next read, or the
slot), and stores the context back. Reads go out through a queue as deep as there are
contexts, so deciding never waits for the DMA engine, whose data for other contexts may wait
for the walker in turn.

The malformed-chain checks [VIRTIO-1.2 2.7.5, 2.7.5.1, 2.7.5.3.1, 2.7.4.2, 5.2.6.1] make the
slot ``BROKEN``; a chain longer than the slot's table makes it ``IOERR``.
"""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .dma_layouts import DmaCommand, DmaError
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


class _Context(data.StructLayout):
    """What a chain's walk keeps between two of its reads."""
    def __init__(self, params):
        idx = range(params.seg_max + 2 + 1)
        super().__init__({
            "queue":       range(max(params.num_queues, 2)),
            "slot":        range(max(params.request_slots, 2)),
            "head":        16,
            "table":       64,      # descriptor table being walked
            "table_size":  32,      # its entries
            "in_indirect": 1,
            "cur":         32,      # index of the descriptor wanted next
            "visited":     32,      # descriptors walked in this table (loop guard)
            "fetch_base":  32,      # index of the first descriptor of the read in flight
            "nseg":        idx,
            "first_w":     idx,
            "overflow":    1,       # more segments than the slot's table holds
            "seen_w":      1,
            "total_r":     48,
            "total_w":     48,
            "status_addr": 64,      # the last writable byte: the status
            "have_status": 1,
            "first_addr":  64,      # the first segment, where the header starts
            "first_len":   32,
        })


class _Expect(data.StructLayout):
    """Whose read's data comes next, and what it is."""
    def __init__(self, contexts):
        super().__init__({"ctx": range(max(contexts, 2)), "header": 1})


class ChainWalker(wiring.Component):
    """Walks up to ``params.chain_walkers`` descriptor chains at once into request slots.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    job : stream.Signature(WalkJob(params)), in
        Taken when a context is free and no read's data is waiting; dropped during a reset.
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    reset_req : Signal(1), in
        Stop at the next safe point and drain; the chains under way are dropped.
    rd : DmaReadClient, out
    seg_w_addr, seg_w_data, seg_w_en : out
        Writes to the slot tables, only in a cycle in which ``rd.data`` brings a descriptor.
    info : RequestSlot(params), out; info_valid : out; info_ready : in
        A filled slot's description, held until taken; ``slot`` says which slot.
    slot : out
    idle : Signal(1), out
        No chain in flight, no read outstanding.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        self.contexts = params.chain_walkers
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
        n_ctx = self.contexts
        prefetch = p.desc_prefetch
        indirect_ok = self.driver_features[rm.VIRTIO_RING_F_INDIRECT_DESC]

        # -- contexts --------------------------------------------------------------------------
        # `c` is the chain being worked on: loaded from `contexts` when its data arrives (or
        # set up from a job), stored back when it waits for its next read.
        m.submodules.contexts = ctx_mem = Memory(shape=_Context(p), depth=max(n_ctx, 2),
                                                 init=[])
        ctx_w = ctx_mem.write_port()
        ctx_r = ctx_mem.read_port(domain="comb")
        c = Signal(_Context(p))
        ctx = Signal(range(max(n_ctx, 2)))      # which context `c` is
        busy = Signal(max(n_ctx, 2))            # contexts holding a chain
        busy_set = Signal.like(busy)
        busy_clear = Signal.like(busy)
        m.d.sync += busy.eq((busy | busy_set) & ~busy_clear)
        m.d.comb += [ctx_w.addr.eq(ctx), ctx_w.data.eq(c)]
        free_ctx = Signal.like(ctx)
        any_free = Signal()
        for k in reversed(range(n_ctx)):
            with m.If(~busy[k]):
                m.d.comb += [free_ctx.eq(k), any_free.eq(1)]

        qcfg = Signal(QueueConfigLayout())
        with m.Switch(c.queue):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += qcfg.eq(self.queues[i])

        # -- reads -----------------------------------------------------------------------------
        # Commands wait in `cmds` (one per context at most, so it never fills); `expect` says
        # whose data comes back next, in the same order.
        m.submodules.cmds = cmds = fifo.SyncFIFOBuffered(width=data.Layout.cast(DmaCommand).size,
                                                         depth=max(n_ctx, 2))
        m.submodules.expect = expect = fifo.SyncFIFOBuffered(
            width=_Expect(n_ctx).size, depth=max(n_ctx, 2))
        cmd_in = data.View(DmaCommand, cmds.w_data)
        m.d.comb += [
            self.rd.cmd.payload.eq(cmds.r_data),
            self.rd.cmd.valid.eq(cmds.r_rdy),
            cmds.r_en.eq(self.rd.cmd.ready),
        ]
        next_read = data.View(_Expect(n_ctx), expect.r_data)
        expect_in = data.View(_Expect(n_ctx), expect.w_data)
        rd_pending = Signal(range(2 * max(n_ctx, 2) + 1))   # issued, status not yet taken
        issue = Signal()
        m.d.sync += rd_pending.eq(rd_pending + issue - (self.rd.status.valid &
                                                        self.rd.status.ready))

        def read(addr, length, header):
            m.d.comb += [
                cmd_in.addr.eq(addr), cmd_in.length.eq(length), cmd_in.tag.eq(c.queue),
                cmds.w_en.eq(1),
                expect_in.ctx.eq(ctx), expect_in.header.eq(header),
                expect.w_en.eq(1),
                issue.eq(1),
            ]

        # -- this chain's read: its data and status ---------------------------------------------
        beat_k     = Signal(range(2 * prefetch + 1))
        desc_lo    = Signal(64)
        chain_done = Signal()
        go_indirect = Signal()
        desc_hit   = Signal()      # the descriptor arriving is the chain's next
        data_done  = Signal()      # the read's last beat has been taken
        malformed  = Signal()
        failed     = Signal()       # the read's status was an error
        hdr_k      = Signal(2)
        req_type   = Signal(32)
        sector     = Signal(64)
        # What the slot's description says besides the context: set on the way to Pass-Slot.
        kind       = Signal(SlotKind)
        header     = Signal()
        status_ok  = self.rd.status.payload.error == DmaError.OK

        m.d.comb += [
            self.slot.eq(c.slot),
            self.info.kind.eq(kind),
            self.info.queue.eq(c.queue),
            self.info.head.eq(c.head),
            self.info.nseg.eq(c.nseg),
            self.info.first_w.eq(c.first_w),
            self.info.total_r.eq(c.total_r),
            self.info.total_w.eq(c.total_w),
            self.info.status_addr.eq(c.status_addr),
            self.info.header.eq(header),
            self.info.req_type.eq(req_type),
            self.info.sector.eq(sector),
        ]

        @contextmanager
        def state(name):
            with m.State(name):
                with m.If(self.reset_req):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        m.d.comb += self.idle.eq(0)
        with m.FSM(name="walk"):
            with m.State("Idle"):
                # A read's data first (the DMA engine's data for others may wait behind it),
                # then a new chain into a free context. A job offered during a reset is taken
                # (the offer must end) and dropped.
                m.d.comb += self.idle.eq((busy == 0) & (rd_pending == 0))
                m.d.comb += ctx_r.addr.eq(next_read.ctx)
                job = self.job.payload
                with m.If(self.reset_req):
                    m.d.comb += self.job.ready.eq(1)
                    with m.If((busy != 0) | (rd_pending != 0)):
                        m.next = "Reset-Drain"
                with m.Elif(expect.r_rdy & self.rd.data.valid):
                    m.d.comb += expect.r_en.eq(1)
                    m.d.sync += [
                        c.eq(ctx_r.data), ctx.eq(next_read.ctx),
                        beat_k.eq(0), hdr_k.eq(0), failed.eq(0), header.eq(0), data_done.eq(0),
                        chain_done.eq(0), go_indirect.eq(0), malformed.eq(0),
                    ]
                    with m.If(next_read.header):
                        m.next = "Take-Header"
                    with m.Else():
                        m.next = "Take-Descriptors"
                with m.Else():
                    m.d.comb += self.job.ready.eq(any_free)
                    with m.If(self.job.valid & any_free):
                        m.d.comb += busy_set.eq(1 << free_ctx)
                        m.d.sync += [
                            ctx.eq(free_ctx),
                            c.queue.eq(job.queue), c.slot.eq(job.slot),
                            c.head.eq(job.head), c.cur.eq(job.head),
                            c.in_indirect.eq(0),
                            c.visited.eq(0),
                            c.nseg.eq(0), c.first_w.eq(0), c.overflow.eq(0), c.seen_w.eq(0),
                            c.total_r.eq(0), c.total_w.eq(0), c.have_status.eq(0),
                            header.eq(0), kind.eq(SlotKind.BROKEN),
                        ]
                        with m.If(job.broken):
                            m.next = "Pass-Slot"
                        with m.Else():
                            m.next = "Start"

            with state("Start"):
                m.d.sync += [c.table.eq(qcfg.desc), c.table_size.eq(qcfg.size)]
                m.next = "Check-Head"

            with state("Check-Head"):
                with m.If(c.cur >= c.table_size):
                    # [VIRTIO-1.2 2.7.5] a head index out of range is a malformed ring.
                    m.d.sync += kind.eq(SlotKind.BROKEN)
                    m.next = "Pass-Slot"
                with m.Else():
                    m.next = "Fetch-Descriptors"

            with state("Fetch-Descriptors"):
                # desc_prefetch descriptors, never past the table's end; but with INDIRECT_DESC
                # a ring's head is most often an indirect descriptor alone [VIRTIO-1.2
                # 2.7.5.3] (Linux's virtio_ring puts every chain of several buffers in a
                # table), so the head is read alone and the rest of a direct chain after it.
                limit = Mux(indirect_ok & ~c.in_indirect & (c.visited == 0), 1, prefetch)
                n = Signal(17)
                m.d.comb += n.eq(Mux(c.table_size - c.cur > limit, limit,
                                     c.table_size - c.cur))
                read(c.table + Cat(Const(0, 4), c.cur), Cat(Const(0, 4), n), header=0)
                m.d.sync += c.fetch_base.eq(c.cur)
                m.next = "Store"

            with m.State("Store"):
                # The chain waits for its read: back into its context.
                m.d.comb += ctx_w.en.eq(1)
                m.next = "Idle"

            with m.State("Take-Descriptors"):
                # A read's beats end with `last`: any after it are the next read's (the DMA
                # engine may offer them as soon as its status), and wait for Idle.
                m.d.comb += [self.rd.data.ready.eq(~data_done), self.rd.status.ready.eq(1)]
                with m.If(self.rd.data.valid & ~data_done & self.rd.data.payload.last):
                    m.d.sync += data_done.eq(1)
                with m.If(self.rd.status.valid):
                    # The status comes after the read's last beat.
                    m.d.sync += failed.eq(~status_ok)
                    m.next = "Chain-Step"
                with m.If(self.rd.data.valid & ~data_done):
                    m.d.sync += beat_k.eq(beat_k + 1)
                    with m.If(~beat_k[0]):
                        # Whether the descriptor these two beats carry is the chain's next,
                        # decided on its first beat (`cur` and the flags were set on the last
                        # beat of the one before) so that its second beat starts from it.
                        m.d.sync += [
                            desc_lo.eq(self.rd.data.payload.data),
                            desc_hit.eq((c.fetch_base + beat_k[1:] == c.cur) & ~chain_done &
                                        ~go_indirect & ~malformed),
                        ]
                    with m.Else():
                        # [VIRTIO-1.2 2.7.5] struct virtq_desc: addr, len, flags, next.
                        desc = data.View(VirtqDesc, Cat(desc_lo, self.rd.data.payload.data))
                        d_addr, d_len, d_next = desc.addr, desc.len, desc.next
                        f_next     = (desc.flags & rm.VIRTQ_DESC_F_NEXT).any()
                        f_write    = (desc.flags & rm.VIRTQ_DESC_F_WRITE).any()
                        f_indirect = (desc.flags & rm.VIRTQ_DESC_F_INDIRECT).any()
                        with m.If(desc_hit):
                            m.d.sync += c.visited.eq(c.visited + 1)
                            with m.If(c.visited >= c.table_size):
                                # [VIRTIO-1.2 2.7.5.1] a chain longer than the table loops.
                                m.d.sync += malformed.eq(1)
                            with m.Elif(f_indirect):
                                # [VIRTIO-1.2 2.7.5.3.1] INDIRECT needs the feature, not inside
                                # an indirect table, not with NEXT, and whole descriptors.
                                with m.If(~indirect_ok | c.in_indirect | f_next |
                                          (d_len[:4] != 0) | (d_len == 0)):
                                    m.d.sync += malformed.eq(1)
                                with m.Else():
                                    m.d.sync += [
                                        go_indirect.eq(1),
                                        c.table.eq(d_addr),
                                        c.table_size.eq(d_len[4:]),
                                    ]
                            with m.Else():
                                with m.If(f_write):
                                    m.d.sync += [
                                        c.seen_w.eq(1),
                                        c.total_w.eq(c.total_w + d_len),
                                    ]
                                    with m.If(d_len != 0):
                                        m.d.sync += [
                                            c.have_status.eq(1),
                                            c.status_addr.eq(d_addr + d_len - 1),
                                        ]
                                with m.Else():
                                    # [VIRTIO-1.2 2.7.4.2] readable before writable.
                                    with m.If(c.seen_w):
                                        m.d.sync += malformed.eq(1)
                                    m.d.sync += c.total_r.eq(c.total_r + d_len)
                                    with m.If(c.nseg < self.seg_depth):
                                        m.d.sync += c.first_w.eq(c.nseg + 1)
                                    with m.If(c.nseg == 0):
                                        m.d.sync += [c.first_addr.eq(d_addr),
                                                     c.first_len.eq(d_len)]
                                with m.If(c.nseg < self.seg_depth):
                                    m.d.comb += [
                                        self.seg_w_addr.eq(Cat(c.nseg[:self.seg_bits],
                                                               c.slot)),
                                        self.seg_w_data.eq(Cat(d_addr, d_len, f_write)),
                                        self.seg_w_en.eq(1),
                                    ]
                                    m.d.sync += c.nseg.eq(c.nseg + 1)
                                with m.Else():
                                    m.d.sync += c.overflow.eq(1)
                                with m.If(f_next):
                                    with m.If(d_next >= c.table_size):
                                        m.d.sync += malformed.eq(1)
                                    m.d.sync += c.cur.eq(d_next)
                                with m.Else():
                                    m.d.sync += chain_done.eq(1)

            with state("Chain-Step"):
                with m.If(failed | malformed):
                    m.d.sync += kind.eq(SlotKind.BROKEN)
                    m.next = "Pass-Slot"
                with m.Elif(go_indirect):
                    m.d.sync += [go_indirect.eq(0), c.in_indirect.eq(1), c.cur.eq(0),
                                 c.visited.eq(0)]
                    m.next = "Fetch-Descriptors"
                with m.Elif(chain_done):
                    m.next = "Check-Chain"
                with m.Else():
                    m.next = "Fetch-Descriptors"

            with state("Check-Chain"):
                # [VIRTIO-1.2 5.2.6.1] a request has a 16-byte header and a status byte.
                with m.If((c.total_r < rm.BLK_OUTHDR_BYTES) | ~c.have_status):
                    m.d.sync += kind.eq(SlotKind.BROKEN)
                with m.Elif(c.overflow):
                    m.d.sync += kind.eq(SlotKind.IOERR)
                with m.Else():
                    m.d.sync += kind.eq(SlotKind.REQUEST)
                with m.If(~c.overflow & (c.total_r >= rm.BLK_OUTHDR_BYTES) & c.have_status &
                          (c.first_len >= rm.BLK_OUTHDR_BYTES)):
                    m.next = "Read-Header"
                with m.Else():
                    m.next = "Pass-Slot"

            with state("Read-Header"):
                # The header in one piece: one read, two beats.
                read(c.first_addr, rm.BLK_OUTHDR_BYTES, header=1)
                m.next = "Store"

            with m.State("Take-Header"):
                # [VIRTIO-1.2 5.2.6] struct virtio_blk_req: type, reserved, sector.
                m.d.comb += [self.rd.data.ready.eq(~data_done), self.rd.status.ready.eq(1)]
                with m.If(self.rd.data.valid & ~data_done & self.rd.data.payload.last):
                    m.d.sync += data_done.eq(1)
                # Beat 0 holds type and reserved, beat 1 the sector: each seen through the
                # layout at its place in the header.
                beat = self.rd.data.payload.data
                with m.If(self.rd.data.valid & ~data_done):
                    m.d.sync += hdr_k.eq(hdr_k + 1)
                    with m.If(hdr_k == 0):
                        m.d.sync += req_type.eq(data.View(BlkOutHdr, Cat(beat, Const(0, 64))).type)
                    with m.Else():
                        m.d.sync += sector.eq(data.View(BlkOutHdr, Cat(Const(0, 64), beat)).sector)
                with m.If(self.rd.status.valid):
                    # Only a well-formed chain reads its header (Check-Chain).
                    m.d.sync += [header.eq(1),
                                 kind.eq(Mux(status_ok, SlotKind.REQUEST, SlotKind.IOERR))]
                    m.next = "Pass-Slot"

            with state("Pass-Slot"):
                m.d.comb += self.info_valid.eq(1)
                with m.If(self.info_ready):
                    m.d.comb += busy_clear.eq(1 << ctx)
                    m.next = "Idle"

            with m.State("Reset-Drain"):
                # Every chain is dropped; the reads still to go out go, and the data and
                # statuses of all are taken and dropped. Jobs too.
                m.d.comb += [self.rd.data.ready.eq(1), self.rd.status.ready.eq(1),
                             expect.r_en.eq(self.rd.status.valid), self.job.ready.eq(1)]
                m.d.sync += busy.eq(0)
                with m.If(rd_pending == 0):
                    m.next = "Idle"
        return m
