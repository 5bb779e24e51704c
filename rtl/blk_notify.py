# Ref: OASIS virtio 1.2, sections 2.7.7 (used buffer notification suppression), 2.7.10
#      (EVENT_IDX), 2.1.2 (DEVICE_NEEDS_RESET); PCIe Base 3.0, section 2.4.1 (ordering)
"""The last stage of the request engine: used buffer notifications, off the request path.

The executor reports each ``used->idx`` it has written (after the write was handed to the
link) and goes on with the next request. The notifier then reads what the driver asked for,
``avail->flags`` [VIRTIO-1.2 2.7.7] or, with EVENT_IDX, ``used_event`` [VIRTIO-1.2 2.7.10],
and asks for an interrupt if the driver wants one. The read is not passed by the posted
used-ring writes before it [PCIe-3.0 2.4.1], so it sees the driver's view after them.

Reports for one queue that arrive while its decision is pending are folded into one decision
over all of them: with EVENT_IDX ``vring_need_event`` over consecutive intervals fires in
exactly one of them, so one decision over their union asks for the same interrupt; without it
the driver gets one interrupt for several used buffers, which [VIRTIO-1.2 2.7.7] allows (the
model decides once per batch, :mod:`model.blk`).

A queue gets no second interrupt for used buffers that were all visible before the last
interrupt it shares (its own, its MSI-X vector's, or INTx): the driver's handler saw them. The
testbench's ordering checker holds the device to that.

A configuration change notification (the executor reached a malformed ring) goes out after the
decisions for the used buffers before it. A failed read of the driver's ring is itself a
malformed ring: DEVICE_NEEDS_RESET and a configuration change notification [VIRTIO-1.2 2.1.2].
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
from .interrupts import IrqRequest


__all__ = ["UsedReport", "Notifier"]


class UsedReport(data.StructLayout):
    """From the executor: ``used->idx`` of ``queue`` is now ``used_idx`` (written and handed
    to the link), or, with ``config``, a configuration change notification is due."""
    def __init__(self, params):
        super().__init__({
            "queue":    range(max(params.num_queues, 2)),
            "used_idx": 16,
            "config":   1,
        })


class Notifier(wiring.Component):
    """Decides and requests used buffer notifications.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    report : stream.Signature(UsedReport(params)), in
        Always ready.
    queues : array of QueueConfigLayout, in
    driver_features : Signal(64), in
    device_status : Signal(8), in
        ``device_status`` 0 clears the per-queue state (a finished reset).
    reset_req : Signal(1), in
        Stop at the next safe point and drain; pending decisions are dropped.
    rd : DmaReadClient, out
        Reads of ``avail->flags`` and ``used_event``.
    irq : stream.Signature(IrqRequest), out
    irq_idle : Signal(1), in
        The interrupt controller's ``idle``: the last message requested has been sent.
    hold : Signal(1), out; idx_busy : Signal(1), in
        From an interrupt decision until its message is out, the executor holds back its next
        ``used->idx`` write (``hold``); the interrupt is requested once no ``used->idx`` write
        is under way (``idx_busy`` low). So every index reported before the request was
        visible before the message, and none written after it could have been.
    stop : Signal(1), out; others_idle : Signal(1), in
        After a failed ring read the fetcher and the executor stop (``stop``); once they are
        idle (``others_idle``) DEVICE_NEEDS_RESET is set, so nothing touches host memory after
        it.
    msix_enable : Signal(1), in
        MSI-X Enable: without it every queue shares INTx.
    needs_reset : Signal(1), out
        Pulses when a read of the driver's ring failed.
    idle : Signal(1), out
        No decision under way or due, and no read outstanding (while a reset is under way:
        stopped, decisions due dropped).
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        super().__init__({
            "report":          In(stream.Signature(UsedReport(params))),
            "queues":          In(QueueConfigLayout()).array(params.num_queues),
            "driver_features": In(64),
            "device_status":   In(8),
            "reset_req":       In(1),
            "rd":              Out(DmaReadClient(params.data_width)),
            "irq":             Out(stream.Signature(IrqRequest)),
            "irq_idle":        In(1),
            "hold":            Out(1),
            "stop":            Out(1),
            "others_idle":     In(1),
            "idx_busy":        In(1),
            "msix_enable":     In(1),
            "needs_reset":     Out(1),
            "idle":            Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        event_idx = self.driver_features[rm.VIRTIO_RING_F_EVENT_IDX]
        reset_now = self.device_status == 0

        # Per queue: the last used->idx reported, whether a decision is due for it, and the
        # used->idx at the last decision ("old" of vring_need_event).
        reported  = [Signal(16, name=f"q{i}_reported") for i in range(nq)]
        signalled = [Signal(16, name=f"q{i}_signalled") for i in range(nq)]
        # used->idx as reported when the queue's last interrupt was taken: every used buffer
        # up to it was visible to the driver before that interrupt.
        announced = [Signal(16, name=f"q{i}_announced") for i in range(nq)]
        due       = Signal(nq)
        due_clear = Signal(nq)
        config_due = Signal()
        config_clear = Signal()

        m.d.comb += self.report.ready.eq(1)
        due_set = Signal(nq)
        with m.If(self.report.valid):
            with m.If(self.report.payload.config):
                m.d.sync += config_due.eq(1)
            with m.Else():
                for i in range(nq):
                    with m.If(self.report.payload.queue == i):
                        m.d.sync += reported[i].eq(self.report.payload.used_idx)
                        m.d.comb += due_set[i].eq(1)
        m.d.sync += due.eq((due | due_set) & ~due_clear)
        with m.If(config_clear):
            m.d.sync += config_due.eq(0)

        q = Signal(range(nq))
        qcfg = Signal(QueueConfigLayout())
        new = Signal(16)            # used->idx this decision covers
        old = Signal(16)
        seen = Signal(16)
        latest = Signal(16)         # q's used->idx reported by now, this cycle's report too
        with m.Switch(q):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += [qcfg.eq(self.queues[i]), old.eq(signalled[i]),
                                 seen.eq(announced[i]), latest.eq(reported[i])]
        with m.If(self.report.valid & ~self.report.payload.config &
                  (self.report.payload.queue == q)):
            m.d.comb += latest.eq(self.report.payload.used_idx)

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

        # The answers, taken as they come (also while the second read waits to be taken: the
        # engine's data, in command order, must never wait for a command behind it).
        flags = Signal(16)
        used_event = Signal(16)
        answers = Signal(2)
        m.d.comb += self.rd.data.ready.eq(1)
        with m.If(self.rd.data.valid):
            m.d.sync += answers.eq(answers + 1)
            with m.If(answers == 0):
                m.d.sync += flags.eq(self.rd.data.payload.data[:16])
            with m.Else():
                m.d.sync += used_event.eq(self.rd.data.payload.data[:16])
        irq_valid = Signal()
        irq_config = Signal()
        want = Signal()             # the decision covering `new` announces it
        m.d.comb += [
            self.irq.valid.eq(irq_valid),
            self.irq.payload.queue.eq(q),
            self.irq.payload.config.eq(irq_config),
        ]

        # [VIRTIO-1.2 2.7.10] vring_need_event: (u16)(new - event - 1) < (u16)(new - old).
        def need_event(event, new, old):
            return (new - event - 1)[:16] < (new - old)[:16]

        offered = Signal()
        m.d.sync += offered.eq((self.rd.cmd.valid & ~self.rd.cmd.ready) |
                               (self.irq.valid & ~self.irq.ready))

        @contextmanager
        def state(name):
            with m.State(name):
                with m.If(self.reset_req & ~offered):
                    m.next = "Reset-Drain"
                with m.Else():
                    yield

        # An interrupt announces the used buffers of every queue that shares it: all of them
        # with INTx, those on the same vector with MSI-X (the driver's handler serves them
        # all).
        latest_of = []
        for i in range(nq):
            sig = Signal(16, name=f"q{i}_latest")
            m.d.comb += sig.eq(Mux(self.report.valid & ~self.report.payload.config &
                                   (self.report.payload.queue == i),
                                   self.report.payload.used_idx, reported[i]))
            latest_of.append(sig)
        vector = Signal(16)
        with m.Switch(q):
            for i in range(nq):
                with m.Case(i):
                    m.d.comb += vector.eq(self.queues[i].msix_vector)

        def set_announced():
            for i in range(nq):
                shares = ~self.msix_enable | (self.queues[i].msix_vector == vector)
                with m.If((q == i) | shares):
                    m.d.sync += announced[i].eq(latest_of[i])

        m.d.comb += self.idle.eq(0)
        with m.FSM(name="notify"):
            with state("Idle"):
                m.d.comb += self.idle.eq((rd_pending == 0) & (due == 0) & ~config_due)
                # Round robin over the queues with a decision due, then the configuration
                # change notification.
                nxt = Signal(range(nq))
                found = Signal()
                for k in reversed(range(1, nq + 1)):
                    for i in range(nq):
                        cand = (i + k) % nq
                        with m.If((q == i) & due[cand]):
                            m.d.comb += [nxt.eq(cand), found.eq(1)]
                m.d.sync += answers.eq(0)
                with m.If(found):
                    m.d.sync += q.eq(nxt)
                    m.next = "Read-Flags"
                with m.Elif(config_due):
                    m.next = "Config"

            with state("Read-Flags"):
                # Covers every report up to the read: later ones get a later read.
                with m.If(read(qcfg.driver, 2)):
                    m.d.comb += due_clear.eq(Cat(q == i for i in range(nq)))
                    m.d.sync += new.eq(latest)
                    with m.If(event_idx):
                        m.next = "Read-Used-Event"
                    with m.Else():
                        m.next = "Take"

            with state("Read-Used-Event"):
                # [VIRTIO-1.2 2.7.10] used_event follows the available ring's entries.
                with m.If(read(qcfg.driver + 4 + Cat(Const(0, 1), qcfg.size), 2)):
                    m.next = "Take"

            with m.State("Take"):
                # [VIRTIO-1.2 2.7.7] VIRTQ_AVAIL_F_NO_INTERRUPT in avail->flags. Nothing to
                # announce if all of it was visible before the last interrupt. Weighed here
                # into a register, from the answers as they stand (final in the cycle that
                # leaves), so that Decide's handshakes do not wait on the subtractions.
                no_interrupt = (flags & rm.VIRTQ_AVAIL_F_NO_INTERRUPT).any()
                m.d.sync += want.eq(Mux(event_idx, need_event(used_event, new, old),
                                        ~no_interrupt) & (new != seen))
                with m.If(answers == Mux(event_idx, 2, 1)):
                    m.next = "Decide"

            with state("Decide"):
                with m.If(rd_pending == 0):
                    m.d.comb += clear_rd_error.eq(1)
                    with m.If(rd_error):
                        m.next = "Broken"
                    with m.Elif(want):
                        m.d.comb += self.hold.eq(1)
                        with m.If(~self.idx_busy):
                            m.d.comb += [irq_valid.eq(1), irq_config.eq(0)]
                        with m.If(~self.idx_busy & self.irq.ready):
                            set_announced()
                            m.next = "Sending"
                    with m.Else():
                        m.next = "Signalled"

            with state("Sending"):
                # No used->idx write until the message is out (the controller is idle again).
                m.d.comb += self.hold.eq(1)
                with m.If(self.irq_idle):
                    m.next = "Signalled"

            with m.State("Signalled"):
                with m.Switch(q):
                    for i in range(nq):
                        with m.Case(i):
                            m.d.sync += signalled[i].eq(new)
                m.next = "Idle"

            with state("Config"):
                m.d.comb += [irq_valid.eq(1), irq_config.eq(1)]
                with m.If(self.irq.ready):
                    m.d.comb += config_clear.eq(1)
                    m.next = "Idle"

            with state("Broken"):
                # [VIRTIO-1.2 2.1.2] The driver's ring could not be read: stop the other
                # stages, then DEVICE_NEEDS_RESET and a configuration change notification.
                m.d.comb += self.stop.eq(1)
                with m.If(self.others_idle):
                    m.d.comb += [self.needs_reset.eq(1), irq_valid.eq(1), irq_config.eq(1)]
                    with m.If(self.irq.ready):
                        m.next = "Halted"

            with m.State("Halted"):
                m.d.comb += [self.idle.eq(rd_pending == 0), self.stop.eq(1)]
                with m.If(reset_now):
                    m.next = "Idle"

            with m.State("Reset-Drain"):
                with m.If(rd_pending == 0):
                    m.d.comb += clear_rd_error.eq(1)
                    m.next = "Reset-Wait"

            with m.State("Reset-Wait"):
                m.d.comb += self.idle.eq(rd_pending == 0)
                with m.If(reset_now):
                    m.next = "Idle"

        with m.If(reset_now):
            m.d.sync += [due.eq(0), config_due.eq(0)]
            for i in range(nq):
                m.d.sync += [reported[i].eq(0), signalled[i].eq(0), announced[i].eq(0)]
        return m
