# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the notifier (the request engine's last stage): without
EVENT_IDX an interrupt follows the reports of a queue unless ``avail->flags`` has
NO_INTERRUPT, never one that announces nothing new, and never after the queue's last report
is left unannounced; with EVENT_IDX exactly the decisions ``vring_need_event`` makes over the
reported intervals; a configuration change goes out after the interrupts due before it; a
failed ring read raises needs_reset and a configuration change. Random back-pressure on every
stream; SEED replays a run."""

import random
import struct

import pytest
from amaranth.sim import Simulator

from model import regmap as rm
from model.params import DeviceParams
from rtl.blk_notify import Notifier
from tb.seed import seed_from_env
from .dma_host import DmaHost


QSIZE = 64
AVAIL = [0x2000, 0x6000]


def need_event(event, new, old):
    """[VIRTIO-1.2 2.7.10] vring_need_event, as Linux writes it."""
    return ((new - event - 1) & 0xffff) < ((new - old) & 0xffff)


def run(rng, *, event_idx, flags, used_event=None, n_reports=60, fail=False):
    params = DeviceParams(num_queues=2, max_queue_size=QSIZE)
    dut = Notifier(params)
    host = DmaHost(rng)
    for q in range(2):
        host.put(AVAIL[q], struct.pack("<H", flags))
        if used_event is not None:
            host.put(AVAIL[q] + 4 + 2 * QSIZE, struct.pack("<H", used_event[q]))
        if fail:
            host.fail.add(AVAIL[q])
    events = []       # ("report", q, idx) / ("irq", q, config) / ("needs_reset",)

    async def testbench(ctx):
        for q in range(2):
            ctx.set(dut.queues[q], {"size": QSIZE, "msix_vector": q, "enable": 1,
                                    "desc": 0x1000, "driver": AVAIL[q], "device": 0x3000})
        ctx.set(dut.driver_features, (1 << rm.VIRTIO_RING_F_EVENT_IDX) if event_idx else 0)
        ctx.set(dut.device_status, 0x0f)
        ctx.set(dut.msix_enable, 1)
        ctx.set(dut.others_idle, 1)
        used = [0, 0]
        busy = 0
        reports = 0
        for cycle in range(20000):
            report = None
            if reports < n_reports and rng.random() < 0.08:
                q = rng.randrange(2)
                used[q] = (used[q] + 1) & 0xffff
                report = {"queue": q, "used_idx": used[q], "config": 0}
                reports += 1
            elif reports == n_reports and rng.random() < 0.05:
                report = {"queue": 0, "used_idx": 0, "config": 1}
                reports += 1
            ctx.set(dut.report.valid, report is not None)
            if report is not None:
                ctx.set(dut.report.payload, report)
            ctx.set(dut.irq.ready, rng.random() < 0.5)
            # The controller is busy for a few cycles after each request it takes.
            ctx.set(dut.irq_idle, busy == 0)
            _, _, iv, ir, ip, nr, idle = await ctx.tick().sample(
                dut.irq.valid, dut.irq.ready, dut.irq.payload, dut.needs_reset, dut.idle)
            busy = max(0, busy - 1)
            if report is not None:
                events.append(("report", report["queue"], report["used_idx"])
                              if not report["config"] else ("config report",))
            if nr:
                events.append(("needs_reset",))
            if iv and ir:
                events.append(("irq", ip.queue, ip.config))
                busy = rng.randrange(1, 6)
            # Done once the configuration change went out (or the notifier stopped) and all
            # is quiet.
            stopped = ("needs_reset",) in events
            if reports > n_reports and idle and not iv and (
                    stopped or any(e[0] == "irq" and e[2] for e in events)):
                break
        ctx.set(dut.report.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    host.add_to(sim, rd=dut.rd)
    sim.add_testbench(testbench)
    sim.run()
    return events


def announced_intervals(events):
    """Per queue: the used->idx values reported before each of its interrupts."""
    latest = [0, 0]
    fresh = [False, False]
    out = []
    for e in events:
        if e[0] == "report":
            latest[e[1]] = e[2]
            fresh[e[1]] = True
        elif e[0] == "irq" and not e[2]:
            assert fresh[e[1]], f"an interrupt of queue {e[1]} that announces nothing new"
            fresh[e[1]] = False
            out.append((e[1], latest[e[1]]))
    return out, fresh


@pytest.mark.parametrize("k", range(2))
def test_interrupt_after_reports_without_event_idx(k):
    rng = random.Random(seed_from_env() + k)
    events = run(rng, event_idx=False, flags=0)
    out, fresh = announced_intervals(events)
    assert out, "no interrupt at all"
    assert not any(fresh), "a queue's last reports were never announced"
    irqs = [e for e in events if e[0] == "irq"]
    assert irqs[-1] == ("irq", irqs[-1][1], 1), "the configuration change did not go last"
    assert events.index(("config report",)) < len(events) - 1


def test_no_interrupt_flag_silences():
    rng = random.Random(seed_from_env())
    events = run(rng, event_idx=False, flags=1)
    assert [e for e in events if e[0] == "irq" and not e[2]] == [], events


@pytest.mark.parametrize("k", range(2))
def test_event_idx(k):
    # used_event fixed for the run: an interrupt is due exactly when the used index passes
    # it, once per queue.
    rng = random.Random(seed_from_env() + k)
    marks = [rng.randrange(1, 25), rng.randrange(1, 25)]
    events = run(rng, event_idx=True, flags=0, used_event=marks)
    out, _ = announced_intervals(events)
    for q in range(2):
        reported = [e[2] for e in events if e[0] == "report" and e[1] == q]
        want = 1 if reported and reported[-1] > marks[q] else 0
        got = [idx for qq, idx in out if qq == q]
        assert len(got) == want, f"queue {q}: used_event {marks[q]}, last used->idx " \
                                 f"{reported[-1] if reported else 0}, interrupts at {got}"
        if got:
            assert got[0] > marks[q]


def test_failed_ring_read_needs_reset():
    rng = random.Random(seed_from_env())
    events = run(rng, event_idx=False, flags=0, n_reports=3, fail=True)
    assert ("needs_reset",) in events
    after = events[events.index(("needs_reset",)):]
    assert any(e[0] == "irq" and e[2] == 1 for e in after), events
    assert not any(e[0] == "irq" and e[2] == 0 for e in events), events
