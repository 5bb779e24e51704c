# Ref: OASIS virtio 1.2, sections 2.7.5 (descriptor table), 2.7.6 (available ring), 2.7.10
#      (EVENT_IDX), 2.7.13 (supplying buffers), 5.2.6 (block requests)
"""The front half of the request engine: doorbells in, fetched chains (request slots) out.

For each queue with work, round robin, the fetcher reads ``avail->idx``, then for each new
available entry the head index and the descriptor chain, fetching up to
``DeviceParams.desc_prefetch`` descriptors per read and following ``NEXT`` and ``INDIRECT``.
It writes the chain's segments into a free slot's table and, when the first readable segment
holds the whole 16-byte request header, reads the header too. Then it passes the slot on.
It runs ahead of the executor by up to ``DeviceParams.request_slots`` chains, so the four
dependent reads of the next chain overlap the data of the one being served.

A malformed ring [VIRTIO-1.2 2.1.2, 2.7.5, 2.7.13.3] is passed on as a ``BROKEN`` slot behind
the chains fetched before it; the fetcher then stops until the device is reset, and the
executor sets DEVICE_NEEDS_RESET once it reaches that slot. The device thus completes the
requests before a malformed one exactly as it would serve them one at a time.
"""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .dma_layouts import DmaError
from .dma_arbiter import DmaReadClient, DmaWriteClient
from .virtio_regs import QueueConfigLayout
from .blk_slots import SegmentLayout, SlotKind, RequestSlot, seg_index_bits


__all__ = ["ChainFetcher"]


class ChainFetcher(wiring.Component):
    """Fetches descriptor chains from the available rings into request slots.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    notify : stream.Signature(16), in
        Doorbells: the index of a queue with new available buffers.
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    device_status : Signal(8), in
        Chains are fetched only with DRIVER_OK set and DEVICE_NEEDS_RESET clear.
    reset_req : Signal(1), in
        A device reset is under way: stop at the next safe point and drain.
    rd, wr : DmaReadClient, DmaWriteClient, out
        Ring and descriptor reads; the ``avail_event`` write [VIRTIO-1.2 2.7.10].
    slot : stream.Signature(RequestSlot(params)), out
        Fetched chains, in ring order per queue.
    slot_free : Signal(1), in
        A slot's table is free to fill: the ``slot_index`` one.
    slot_index : Signal, out
        The slot being filled (the next one after the last slot passed on).
    seg_w_addr, seg_w_data, seg_w_en : out
        Writes to the slot tables: entry ``seg_w_addr[:k]`` of slot ``seg_w_addr[k:]``.
    idle : Signal(1), out
        Nothing in progress and no DMA outstanding.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        self.seg_depth = params.seg_max + 2
        self.seg_bits = seg_index_bits(params)
        w = params.data_width
        super().__init__({
            "notify":          In(stream.Signature(16)),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "device_status":   In(8),
            "reset_req":       In(1),
            "rd":              Out(DmaReadClient(w)),
            "wr":              Out(DmaWriteClient(w)),
            "slot":            Out(stream.Signature(RequestSlot(params))),
            "slot_free":       In(1),
            "slot_index":      Out(range(params.request_slots)),
            "seg_w_addr":      Out(range(params.request_slots << self.seg_bits)),
            "seg_w_data":      Out(SegmentLayout()),
            "seg_w_en":        Out(1),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        nbytes = p.data_width // 8
        prefetch = p.desc_prefetch

        event_idx = self.driver_features[rm.VIRTIO_RING_F_EVENT_IDX]
        indirect_ok = self.driver_features[rm.VIRTIO_RING_F_INDIRECT_DESC]

        # -- per-queue state -------------------------------------------------------------------
        last_avail = [Signal(16, name=f"q{i}_last_avail") for i in range(nq)]
        avail_seen = [Signal(16, name=f"q{i}_avail_seen") for i in range(nq)]  # last avail->idx
        active     = Signal(nq)   # the queue may have work
        kicked     = Signal(nq)   # a doorbell came since avail->idx was last read
        active_clear = Signal(nq)
        kicked_clear = Signal(nq)
        event_written = Signal()  # avail_event written since the queue was last found empty

        q = Signal(range(nq))
        qcfg = Signal(QueueConfigLayout())
        with m.Switch(q):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += qcfg.eq(self.queues[i])

        def per_queue(regs):
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
        m.d.sync += [
            active.eq(active & ~active_clear | doorbell),
            kicked.eq(kicked & ~kicked_clear | doorbell),
        ]

        # -- DMA bookkeeping -------------------------------------------------------------------
        rd_pending = Signal(8)
        wr_pending = Signal(8)
        rd_error = Signal()
        clear_rd_error = Signal()
        m.d.comb += [self.rd.status.ready.eq(1), self.wr.status.ready.eq(1)]
        m.d.sync += [
            rd_pending.eq(rd_pending + (self.rd.cmd.valid & self.rd.cmd.ready)
                          - self.rd.status.valid),
            wr_pending.eq(wr_pending + (self.wr.cmd.valid & self.wr.cmd.ready)
                          - self.wr.status.valid),
        ]
        with m.If(clear_rd_error):
            m.d.sync += rd_error.eq(0)
        with m.If(self.rd.status.valid & (self.rd.status.payload.error != DmaError.OK)):
            m.d.sync += rd_error.eq(1)
        no_dma = (rd_pending == 0) & (wr_pending == 0)

        def read(addr, length, when=1):
            """Issue a read while ``when`` holds; true in the cycle it is taken."""
            with m.If(when):
                m.d.comb += [self.rd.cmd.payload.addr.eq(addr),
                             self.rd.cmd.payload.length.eq(length),
                             self.rd.cmd.payload.tag.eq(q),
                             self.rd.cmd.valid.eq(1)]
            return Const(1, 1) & when & self.rd.cmd.ready

        # A ring write is a command and one data beat; each may be taken in a different cycle.
        wr_cmd_done = Signal()
        wr_beat_done = Signal()

        def ring_write(addr, length, value):
            """Offer a ring write; true in the cycle it is complete."""
            cmd_now = self.wr.cmd.valid & self.wr.cmd.ready
            beat_now = self.wr.data.valid & self.wr.data.ready
            m.d.comb += [
                self.wr.cmd.payload.addr.eq(addr), self.wr.cmd.payload.length.eq(length),
                self.wr.cmd.payload.tag.eq(q), self.wr.cmd.valid.eq(~wr_cmd_done),
                self.wr.data.payload.data.eq(value),
                self.wr.data.payload.keep.eq((1 << nbytes) - 1),
                self.wr.data.payload.last.eq(1),
                self.wr.data.valid.eq(~wr_beat_done),
            ]
            done = (wr_cmd_done | cmd_now) & (wr_beat_done | beat_now)
            with m.If(done):
                m.d.sync += [wr_cmd_done.eq(0), wr_beat_done.eq(0)]
            with m.Else():
                with m.If(cmd_now):
                    m.d.sync += wr_cmd_done.eq(1)
                with m.If(beat_now):
                    m.d.sync += wr_beat_done.eq(1)
            return done

        # -- the chain -------------------------------------------------------------------------
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

        slot = Signal(range(p.request_slots))
        m.d.comb += self.slot_index.eq(slot)
        with m.If(self.slot.valid & self.slot.ready):
            m.d.sync += slot.eq(Mux(slot == p.request_slots - 1, 0, slot + 1))

        m.d.comb += [
            self.slot.payload.kind.eq(kind),
            self.slot.payload.queue.eq(q),
            self.slot.payload.head.eq(head),
            self.slot.payload.nseg.eq(nseg),
            self.slot.payload.first_w.eq(first_w),
            self.slot.payload.total_r.eq(total_r),
            self.slot.payload.total_w.eq(total_w),
            self.slot.payload.status_addr.eq(status_addr),
            self.slot.payload.header.eq(header),
            self.slot.payload.req_type.eq(req_type),
            self.slot.payload.sector.eq(sector),
        ]

        avail_hdr   = qcfg.driver
        avail_entry = qcfg.driver + 4 + Cat(Const(0, 1), q_last_avail & size_mask)
        avail_event_addr = qcfg.device + 4 + Cat(Const(0, 3), qcfg.size)

        # [VIRTIO-1.2 2.4.1] On a reset the fetcher stops at the next state that would start
        # something new and drains its reads; a handshake offered must finish first.
        offered = Signal()
        m.d.sync += offered.eq(
            (self.rd.cmd.valid & ~self.rd.cmd.ready) |
            (self.wr.cmd.valid & ~self.wr.cmd.ready) |
            (self.wr.data.valid & ~self.wr.data.ready) |
            (self.slot.valid & ~self.slot.ready))
        ring_write_idle = ~wr_cmd_done & ~wr_beat_done

        @contextmanager
        def state(name, abortable=1):
            with m.State(name):
                with m.If(self.reset_req & abortable & ~offered):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        m.d.comb += self.idle.eq(0)
        with m.FSM(name="fetch"):
            with m.State("Idle"):
                m.d.comb += self.idle.eq(no_dma)
                # Round robin: the first active queue after the last one served.
                nxt = Signal(range(nq))
                found = Signal()
                for k in reversed(range(1, nq + 1)):
                    for i in range(nq):
                        cand = (i + k) % nq
                        with m.If((q == i) & active[cand]):
                            m.d.comb += [nxt.eq(cand), found.eq(1)]
                ahead_nxt = Signal(16)
                with m.Switch(nxt):
                    for i in range(nq):
                        with m.Case(i):
                            m.d.comb += ahead_nxt.eq(avail_seen[i] - last_avail[i])
                with m.If(running & found):
                    m.d.sync += [q.eq(nxt), event_written.eq(0)]
                    # Entries the last read of avail->idx showed are still to be fetched: no
                    # need to read it again first.
                    with m.If(ahead_nxt != 0):
                        m.next = "Check-Avail"
                    with m.Else():
                        m.next = "Read-Avail-Idx"

            with state("Read-Avail-Idx"):
                # [VIRTIO-1.2 2.7.6] avail->flags and avail->idx, one 4-byte read.
                issued = read(avail_hdr, 4, when=qcfg.enable)
                with m.If(~qcfg.enable):
                    m.d.comb += active_clear.eq(onehot_q)
                    m.next = "Idle"
                with m.Elif(issued):
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.next = "Take-Avail-Idx"

            with state("Take-Avail-Idx"):
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(self.rd.data.valid):
                    set_per_queue(avail_seen, self.rd.data.payload.data[16:32])
                    m.next = "Check-Avail"

            with state("Check-Avail"):
                ahead = Signal(16)
                m.d.comb += ahead.eq(q_avail_seen - q_last_avail)
                m.d.sync += kind.eq(SlotKind.BROKEN)
                with m.If(rd_pending != 0):
                    pass     # the read's status
                with m.Elif(rd_error):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Pass-Slot"
                with m.Elif(ahead > qcfg.size):
                    # [VIRTIO-1.2 2.7.13.3] idx can run at most Queue Size ahead.
                    m.next = "Pass-Slot"
                with m.Elif(ahead != 0):
                    m.next = "Read-Avail-Entry"
                with m.Else():
                    m.next = "Drained"

            with state("Drained", abortable=ring_write_idle):
                # [VIRTIO-1.2 2.7.10] With EVENT_IDX, ask for a doorbell at the next buffer:
                # avail_event = last_avail_idx, then look again before going idle.
                with m.If(event_idx & ~event_written):
                    with m.If(ring_write(avail_event_addr, 2, q_last_avail)):
                        m.next = "Recheck-Avail"
                with m.Else():
                    # A doorbell since the last read of avail->idx keeps the queue active.
                    m.d.comb += active_clear.eq(onehot_q & ~kicked)
                    m.next = "Idle"

            with state("Recheck-Avail"):
                # The avail_event write is posted; the read after it is not passed by it
                # [PCIe-3.0 2.4.1].
                with m.If(read(avail_hdr, 4, when=wr_pending == 0)):
                    m.d.sync += event_written.eq(1)
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.next = "Take-Avail-Idx"

            with state("Read-Avail-Entry"):
                # Only into a free slot: its table is written as the chain is walked.
                with m.If(read(avail_entry, 2, when=self.slot_free)):
                    m.d.sync += event_written.eq(0)
                    m.next = "Take-Avail-Entry"

            with state("Take-Avail-Entry"):
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(self.rd.data.valid):
                    m.d.sync += [
                        head.eq(self.rd.data.payload.data[:16]),
                        cur.eq(self.rd.data.payload.data[:16]),
                        table.eq(qcfg.desc),
                        table_size.eq(qcfg.size),
                        in_indirect.eq(0),
                        visited.eq(0),
                        nseg.eq(0), first_w.eq(0), overflow.eq(0), seen_w.eq(0),
                        total_r.eq(0), total_w.eq(0), have_status.eq(0),
                        chain_done.eq(0), go_indirect.eq(0), malformed.eq(0),
                        header.eq(0),
                    ]
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
                        d_addr  = desc_lo
                        d_len   = self.rd.data.payload.data[:32]
                        d_flags = self.rd.data.payload.data[32:48]
                        d_next  = self.rd.data.payload.data[48:64]
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
                with m.If(self.rd.data.valid & (hdr_k != 2)):
                    m.d.sync += hdr_k.eq(hdr_k + 1)
                    with m.If(hdr_k == 0):
                        m.d.sync += req_type.eq(self.rd.data.payload.data[:32])
                    with m.Else():
                        m.d.sync += sector.eq(self.rd.data.payload.data)
                with m.If((hdr_k == 2) & (rd_pending == 0)):
                    m.d.comb += clear_rd_error.eq(1)
                    m.d.sync += header.eq(1)
                    with m.If(rd_error):
                        m.d.sync += kind.eq(SlotKind.IOERR)
                    m.next = "Pass-Slot"

            with state("Pass-Slot", abortable=~offered):
                m.d.comb += self.slot.valid.eq(1)
                with m.If(self.slot.ready):
                    with m.If(kind == SlotKind.BROKEN):
                        m.next = "Halted"
                    with m.Else():
                        set_per_queue(last_avail, q_last_avail + 1)
                        m.next = "Idle"

            with m.State("Reset-Drain"):
                # Reads still coming are dropped; the statuses are counted.
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(no_dma):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Halted"

            with m.State("Halted"):
                m.d.comb += [self.idle.eq(no_dma), self.rd.data.ready.eq(1)]
                with m.If(reset_now):
                    m.next = "Idle"

        with m.If(reset_now):
            m.d.sync += [active.eq(0), kicked.eq(0), slot.eq(0)]
            for i in range(nq):
                m.d.sync += [last_avail[i].eq(0), avail_seen[i].eq(0)]
        return m
