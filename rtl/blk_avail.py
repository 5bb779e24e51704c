# Ref: OASIS virtio 1.2, sections 2.7.6 (available ring), 2.7.10 (EVENT_IDX), 2.7.13
#      (supplying buffers), 2.1.2 (DEVICE_NEEDS_RESET), 2.9 (driver notifications:
#      VIRTIO_F_NOTIFICATION_DATA)
"""The avail reader: doorbells in, chain heads out to the chain walkers.

For each queue with work, round robin, the reader reads ``avail->idx`` (only when the entries
it last showed are used up), then up to ``DeviceParams.avail_prefetch`` ``avail->ring``
entries in one read, and hands each head with a free request slot to the
:class:`~rtl.blk_walk.ChainWalker`, in ring order.
When those entries are the last ``avail->idx`` showed, a read of ``avail->idx`` goes out right
behind the read of the entries, so the next batch needs one round trip, not two (the entries
read covers only entries published before the index it was sized by, so the two reads may be
answered in any order [VIRTIO-1.2 2.7.13.3]).
With EVENT_IDX a drained queue gets ``avail_event`` [VIRTIO-1.2 2.7.10].

With VIRTIO_F_NOTIFICATION_DATA a doorbell carries the driver's avail index
[VIRTIO-1.2 2.9]. One that runs ahead of everything known of the queue, by at most the queue
size, becomes the queue's *hint*, and the queue's entries up to it are read with no read of
``avail->idx`` before them. The data is the driver's, and Linux sends it unlocked
(``virtqueue_notify`` after the queue lock is dropped, ``vring_notification_data`` reading
``avail_idx_shadow``), so doorbells may arrive out of order and a stale index is not an error:
an index at or behind what is known is a repeat and changes nothing; one more than the queue
size ahead of ``last_avail_idx`` (a stale one behind it looks the same modulo 2**16) is taken as
a doorbell without data, and ``avail->idx`` is read, which decides as without the feature
(more than the queue size ahead there is malformed). A read of ``avail->idx`` that shows less
than a doorbell's index already did leaves the known index where it is, as long as it is not
behind ``last_avail_idx`` as it was when the read went out (for the read behind the entries,
the first of them): behind it, the read looks more than the queue size ahead, is taken, and
the ring is malformed. Only a driver whose doorbell runs ahead of its own ``avail->idx`` (Linux
writes ``avail->idx`` first) meets this; whether it does depends on where the reads of entries
start (``avail_prefetch``, the ring's end). ``model/blk.py`` follows these rules.

``avail->idx`` more than the queue size ahead, a head index past the descriptor table, or a
failed read of the ring, is a malformed ring [VIRTIO-1.2 2.1.2, 2.7.5, 2.7.13.3]: the reader
hands on a ``broken`` job (the walker passes it on as a ``BROKEN`` slot) and stops until the
device is reset. It stops the same way once the walker found a malformed chain (``halt``).
"""

from contextlib import contextmanager

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .dma_layouts import DmaError
from .dma_arbiter import DmaReadClient, DmaWriteClient
from .virtio_regs import QueueConfigLayout, DoorbellLayout
from .blk_walk import WalkJob


__all__ = ["AvailReader"]


class AvailReader(wiring.Component):
    """Reads the available rings and dispatches chain heads.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    notify : stream.Signature(DoorbellLayout()), in
        Doorbells: the index of a queue with new available buffers, and the avail index when
        the driver sent one.
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    device_status : Signal(8), in
        Heads are dispatched only with DRIVER_OK set and DEVICE_NEEDS_RESET clear.
    reset_req : Signal(1), in
        A device reset is under way: stop at the next safe point and drain.
    rd, wr : DmaReadClient, DmaWriteClient, out
        Ring reads; the ``avail_event`` write.
    job : stream.Signature(WalkJob(params)), out
        Heads, in ring order per queue, each with the slot ``free_slot`` named.
    slot_free : Signal(1), in; free_slot : in
        A request slot is free, and which.
    halt : Signal(1), in
        A walker found a malformed chain: dispatch nothing more until reset.
    idle : Signal(1), out
        Nothing in progress and no DMA outstanding.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        w = params.data_width
        super().__init__({
            "notify":          In(stream.Signature(DoorbellLayout())),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "device_status":   In(8),
            "reset_req":       In(1),
            "rd":              Out(DmaReadClient(w)),
            "wr":              Out(DmaWriteClient(w)),
            "job":             Out(stream.Signature(WalkJob(params))),
            "slot_free":       In(1),
            "free_slot":       In(range(max(params.request_slots, 2))),
            "halt":            In(1),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        nbytes = p.data_width // 8

        event_idx = self.driver_features[rm.VIRTIO_RING_F_EVENT_IDX]
        notification_data = self.driver_features[rm.VIRTIO_F_NOTIFICATION_DATA]
        # -- per-queue state -------------------------------------------------------------------
        last_avail = [Signal(16, name=f"q{i}_last_avail") for i in range(nq)]
        avail_seen = [Signal(16, name=f"q{i}_avail_seen") for i in range(nq)]  # last avail->idx
        active     = Signal(nq)   # the queue may have work
        kicked     = Signal(nq)   # a doorbell came since avail->idx was last read
        # [VIRTIO-1.2 2.9] The newest avail index a doorbell brought, ahead of avail_seen when
        # it came; taken into avail_seen when the queue is next served.
        hint       = [Signal(16, name=f"q{i}_hint") for i in range(nq)]
        hinted     = Signal(nq)
        active_clear = Signal(nq)
        kicked_clear = Signal(nq)
        hinted_clear = Signal(nq)
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
        q_hint = per_queue(hint)
        onehot_q = Signal(nq)
        m.d.comb += onehot_q.eq(Cat(q == i for i in range(nq)))
        size_mask = Signal(16)
        m.d.comb += size_mask.eq(qcfg.size - 1)

        running = ((self.device_status & rm.STATUS_DRIVER_OK).any() &
                   ~(self.device_status & rm.STATUS_DEVICE_NEEDS_RESET).any() & ~self.reset_req)
        reset_now = self.device_status == 0

        # -- doorbells -------------------------------------------------------------------------
        # Three steps a cycle each, for the clock: the doorbell registered; its queue's state
        # selected and taken as distances from last_avail_idx, registered; those compared and
        # decided. A doorbell is taken only when the steps are empty, so the next one sees the
        # hint this one sets. (The queue's state may move between the second and third steps:
        # last_avail_idx only advances toward what is known, which leaves every comparison as
        # it was; avail->idx read meanwhile may overtake the doorbell's index, which Take-Hint
        # checks again.) Doorbells come no closer than a register write apart, and those that
        # wait merge in the register file.
        db_valid = Signal()
        db = Signal(DoorbellLayout())
        s2_valid = Signal()
        m.d.comb += self.notify.ready.eq(~db_valid & ~s2_valid)
        m.d.sync += db_valid.eq(self.notify.valid & self.notify.ready & running)
        with m.If(self.notify.valid & self.notify.ready):
            m.d.sync += db.eq(self.notify.payload)
        db_last = Signal(16)
        db_seen = Signal(16)
        db_hint = Signal(16)
        db_hinted = Signal()
        db_size = Signal(16)
        db_enable = Signal()
        with m.Switch(db.queue):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += [db_last.eq(last_avail[i]), db_seen.eq(avail_seen[i]),
                                 db_hint.eq(hint[i]), db_hinted.eq(hinted[i]),
                                 db_size.eq(self.queues[i].size),
                                 db_enable.eq(self.queues[i].enable)]
        # How far ahead of last_avail_idx: the doorbell's index, avail->idx as last read, and
        # the hint (if there is one).
        s2 = Signal(DoorbellLayout())
        s2_ahead = Signal(16)
        s2_seen = Signal(16)
        s2_hint = Signal(16)
        s2_hinted = Signal()
        s2_size = Signal(16)
        s2_usable = Signal()
        m.d.sync += [
            s2_valid.eq(db_valid & running),
            s2.eq(db),
            s2_ahead.eq(db.avail_idx - db_last),
            s2_seen.eq(db_seen - db_last),
            s2_hint.eq(db_hint - db_last),
            s2_hinted.eq(db_hinted),
            s2_size.eq(db_size),
            # (A queue not enabled is left to Read-Avail-Idx, which finds it so.)
            s2_usable.eq(db.has_idx & notification_data & db_enable),
        ]
        # What is known is the furthest of avail->idx and a hint within the queue size; the
        # doorbell's index is new when it is beyond both, and within the queue size.
        hint_ok = s2_hinted & (s2_hint <= s2_size)
        beyond = (s2_ahead > s2_seen) & (~hint_ok | (s2_ahead > s2_hint))
        db_new = s2_usable & (s2_ahead <= s2_size) & beyond
        db_repeat = s2_usable & ~beyond
        doorbell = Signal(nq)       # the queue has work (maybe)
        db_kick = Signal(nq)        # ... and avail->idx is to be read
        db_hint_set = Signal(nq)    # ... or the doorbell's index is the queue's hint
        with m.If(s2_valid):
            for i in range(nq):
                with m.If(s2.queue == i):
                    with m.If(db_new):
                        m.d.comb += [doorbell[i].eq(1), db_hint_set[i].eq(1)]
                        m.d.sync += hint[i].eq(s2.avail_idx)
                    with m.Elif(~db_repeat):
                        # No index, or one more than the queue size ahead: read avail->idx.
                        m.d.comb += [doorbell[i].eq(1), db_kick[i].eq(1)]
        m.d.sync += [
            active.eq(active & ~active_clear | doorbell),
            kicked.eq(kicked & ~kicked_clear | db_kick),
            hinted.eq(hinted & ~hinted_clear | db_hint_set),
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

        # -- entries read, waiting to be dispatched ---------------------------------------------
        per_read = p.avail_prefetch
        entry_beats = -(-16 * per_read // p.data_width)
        entries = Signal(entry_beats * p.data_width)
        e_beat = Signal(range(max(entry_beats, 2)))
        idx_ahead = Signal()        # an avail->idx read went out behind the entries read
        seen_ahead = Signal(16)     # what it showed
        n_entries = Signal(range(per_read + 1))
        k_entry = Signal(range(per_read + 1))
        broken_job = Signal()
        head = Signal(16)
        # [VIRTIO-1.2 2.7.5] A head past the descriptor table is a malformed ring: found here,
        # before the heads after it go to the walker, which would read their chains.
        bad_head = Signal()
        # The entries shift down as their heads are dispatched: the next head is always in
        # the low bits, with no multiplexer between the register and the checks behind it.
        # Its range check is a register too, kept for the head after this cycle's shift (both
        # candidates compared, the shift choosing), so the dispatch, whose handshake shifts
        # all the entries, does not wait on a comparison.
        shift = Signal()
        m.d.comb += head.eq(entries[:16])
        m.d.sync += bad_head.eq(Mux(shift, entries[16:32] >= qcfg.size,
                                    entries[:16] >= qcfg.size))
        m.d.comb += [
            self.job.payload.queue.eq(q),
            self.job.payload.head.eq(head),
            self.job.payload.slot.eq(self.free_slot),
            self.job.payload.broken.eq(broken_job | bad_head),
        ]

        # avail->idx - last_avail_idx of the queue served, set as Check-Avail is entered.
        ahead_r  = Signal(16)
        h_seen   = Signal(16)       # Take-Hint: avail->idx as last read, less last_avail_idx
        h_dist   = Signal(16)       # ... the hint, less last_avail_idx
        h_idx    = Signal(16)       # ... the hint

        def taken_index(read_idx):
            """What an avail->idx read of ``read_idx`` makes the queue's known index, and how
            far ahead of last_avail_idx that is. Without NOTIFICATION_DATA it is the index read.
            With it a doorbell may have brought a newer index than the read showed: that one
            stays. An index read more than the queue size ahead is malformed either way."""
            d_read = Signal(16, name="d_read")
            d_seen = Signal(16, name="d_seen")
            new_idx = Signal(16, name="new_idx")
            new_ahead = Signal(16, name="new_ahead")
            m.d.comb += [
                d_read.eq(read_idx - q_last_avail),
                d_seen.eq(q_avail_seen - q_last_avail),
                new_idx.eq(read_idx),
                new_ahead.eq(d_read),
            ]
            with m.If(notification_data & (d_seen <= qcfg.size) & (d_read <= qcfg.size) &
                      (d_read < d_seen)):
                m.d.comb += [new_idx.eq(q_avail_seen), new_ahead.eq(d_seen)]
            return new_idx, new_ahead

        ent_n    = Signal(range(per_read + 1))   # the next entries read, set in Check-Avail
        ent_all  = Signal()                      # it covers all avail->idx showed
        ent_addr = Signal(64)
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
            (self.job.valid & ~self.job.ready))
        ring_write_idle = ~wr_cmd_done & ~wr_beat_done

        @contextmanager
        def state(name, abortable=1):
            with m.State(name):
                with m.If(self.reset_req & abortable & ~offered):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        m.d.comb += self.idle.eq(0)
        with m.FSM(name="avail"):
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
                with m.If(self.halt):
                    m.next = "Halted"
                with m.Elif(running & found):
                    m.d.sync += [q.eq(nxt), event_written.eq(0)]
                    # Entries the last read of avail->idx showed are still to be fetched, or
                    # no doorbell came since that read: no need to read it again first.
                    with m.If((hinted >> nxt)[0]):
                        m.next = "Take-Hint"
                    with m.Elif((ahead_nxt != 0) | ~(kicked >> nxt)[0]):
                        m.d.sync += ahead_r.eq(ahead_nxt)
                        m.next = "Check-Avail"
                    with m.Else():
                        m.next = "Read-Avail-Idx"

            with state("Take-Hint"):
                # [VIRTIO-1.2 2.9] The doorbell's avail index, if it is still ahead of what
                # avail->idx showed (a read since may have overtaken it), is the known index.
                # The distances registered here, weighed in Use-Hint (for the clock).
                m.d.sync += [h_seen.eq(q_avail_seen - q_last_avail),
                             h_dist.eq(q_hint - q_last_avail), h_idx.eq(q_hint)]
                m.d.comb += hinted_clear.eq(onehot_q)
                m.next = "Use-Hint"

            with state("Use-Hint"):
                use = (h_dist <= qcfg.size) & (h_dist > h_seen)
                with m.If(use):
                    set_per_queue(avail_seen, h_idx)
                m.d.sync += ahead_r.eq(Mux(use, h_dist, h_seen))
                with m.If(use | (h_seen != 0) | ~(kicked >> q)[0]):
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
                taken, taken_ahead = taken_index(self.rd.data.payload.data[16:32])
                with m.If(self.rd.data.valid):
                    set_per_queue(avail_seen, taken)
                    m.d.sync += ahead_r.eq(taken_ahead)
                    m.next = "Check-Avail"

            with state("Check-Avail"):
                ahead = ahead_r
                # The entries read of Read-Avail-Entries, sized here into registers: as many
                # entries as were published, up to avail_prefetch and not past the ring's end
                # (the ring wraps at the queue size).
                to_end = Signal(17)
                n_max = Signal(range(per_read + 1))
                n = Signal(range(per_read + 1))
                m.d.comb += [
                    to_end.eq(qcfg.size - (q_last_avail & size_mask)),
                    n_max.eq(Mux(ahead < per_read, ahead, per_read)),
                    n.eq(Mux(to_end < n_max, to_end, n_max)),
                ]
                m.d.sync += [ent_n.eq(n), ent_all.eq(n == ahead), ent_addr.eq(avail_entry)]
                m.d.sync += broken_job.eq(1)
                with m.If(rd_pending != 0):
                    pass     # the read's status
                with m.Elif(rd_error):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Dispatch"
                with m.Elif(ahead > qcfg.size):
                    # [VIRTIO-1.2 2.7.13.3] idx can run at most Queue Size ahead.
                    m.next = "Dispatch"
                with m.Elif(ahead != 0):
                    m.d.sync += broken_job.eq(0)
                    m.next = "Read-Avail-Entries"
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
                    m.d.comb += active_clear.eq(onehot_q & ~kicked & ~hinted)
                    m.next = "Idle"

            with state("Recheck-Avail"):
                # The avail_event write is posted; the read after it is not passed by it
                # [PCIe-3.0 2.4.1].
                with m.If(read(avail_hdr, 4, when=wr_pending == 0)):
                    m.d.sync += event_written.eq(1)
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.next = "Take-Avail-Idx"

            with state("Read-Avail-Entries"):
                with m.If(read(ent_addr, Cat(Const(0, 1), ent_n))):
                    m.d.sync += [event_written.eq(0), n_entries.eq(ent_n), k_entry.eq(0),
                                 idx_ahead.eq(0), e_beat.eq(0)]
                    with m.If(ent_all):
                        m.next = "Read-Avail-Idx-Ahead"
                    with m.Else():
                        m.next = "Take-Avail-Entries"

            with state("Read-Avail-Idx-Ahead"):
                # These entries are all avail->idx showed: look at it again now, so that the
                # answer travels with the entries' instead of after them.
                with m.If(read(avail_hdr, 4)):
                    m.d.comb += kicked_clear.eq(onehot_q)
                    m.d.sync += idx_ahead.eq(1)
                    m.next = "Take-Avail-Entries"

            with state("Take-Avail-Entries"):
                # Data comes in command order: the entries, then the index read behind them.
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(self.rd.data.valid):
                    m.d.sync += e_beat.eq(e_beat + 1)
                    with m.Switch(e_beat):
                        for k in range(entry_beats):
                            with m.Case(k):
                                w = p.data_width
                                m.d.sync += entries[w * k:w * (k + 1)].eq(
                                    self.rd.data.payload.data)
                with m.If(self.rd.data.valid & self.rd.data.payload.last):
                    with m.If(idx_ahead):
                        m.next = "Take-Avail-Idx-Ahead"
                    with m.Else():
                        m.next = "Check-Entries"

            with state("Take-Avail-Idx-Ahead"):
                m.d.comb += self.rd.data.ready.eq(1)
                with m.If(self.rd.data.valid):
                    m.d.sync += seen_ahead.eq(self.rd.data.payload.data[16:32])
                    m.next = "Check-Entries"

            with state("Check-Entries"):
                taken_a, _ = taken_index(seen_ahead)
                with m.If(rd_pending == 0):
                    m.d.comb += clear_rd_error.eq(1)
                    with m.If(rd_error):
                        # Either read failed: the ring cannot be trusted [VIRTIO-1.2 2.1.2].
                        m.d.sync += broken_job.eq(1)
                    with m.Elif(idx_ahead):
                        # Checked against the queue size when the queue is next served.
                        set_per_queue(avail_seen, taken_a)
                    m.next = "Dispatch"

            with state("Dispatch", abortable=~offered):
                # Each head to a walker, with a free slot; a broken job once, then stop.
                with m.If(self.halt & ~offered):
                    m.next = "Halted"
                with m.Else():
                    m.d.comb += self.job.valid.eq(self.slot_free)
                    with m.If(self.job.valid & self.job.ready):
                        with m.If(broken_job | bad_head):
                            m.next = "Halted"
                        with m.Else():
                            set_per_queue(last_avail, q_last_avail + 1)
                            m.d.comb += shift.eq(1)
                            m.d.sync += [k_entry.eq(k_entry + 1), entries.eq(entries >> 16)]
                            with m.If(k_entry + 1 == n_entries):
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
            m.d.sync += [active.eq(0), kicked.eq(0), hinted.eq(0)]
            for i in range(nq):
                m.d.sync += [last_avail[i].eq(0), avail_seen[i].eq(0)]
        return m
