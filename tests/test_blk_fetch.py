# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the chain fetcher (the request engine's front stage): random
descriptor chains (direct and indirect, the header whole or split over descriptors) published
on two queues come out as request slots, per queue in ring order, with the chain's segments in
the slot's table, its byte totals, status address and, when the first segment holds it, the
header; no table is written while its slot is in use; a malformed ring comes out as a BROKEN
slot behind the good chains and stops the fetcher; with EVENT_IDX a drained queue gets
``avail_event``. Every stream stalls at random; SEED replays a run."""

import random
import struct

import pytest
from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from model import regmap as rm
from model.params import DeviceParams
from rtl.blk_fetch import ChainFetcher
from rtl.dma_arbiter import DmaReadArbiter
from rtl.blk_slots import SlotKind, seg_index_bits
from tb.seed import seed_from_env
from .dma_host import DmaHost, wait_handshake


QSIZE = 64
RINGS = [(0x1000, 0x2000, 0x3000), (0x5000, 0x6000, 0x7000)]   # desc, avail, used per queue
DRIVER_OK = 0x0f


class Queue:
    """The driver side of one split virtqueue in the test's host memory."""
    def __init__(self, host, index, rng):
        self.host, self.index, self.rng = host, index, rng
        self.desc, self.avail, self.used = RINGS[index]
        self.next_desc = 0
        self.idx = 0
        self.expected = []
        self.indirect_at = 0x9000 + index * 0x800

    def _write_desc(self, table, i, addr, length, flags, nxt):
        self.host.put(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def add_chain(self, segments, indirect=False, header=None):
        """Publish a chain of ``segments`` (addr, length, write); return what its slot must
        hold."""
        n = len(segments)
        if indirect:
            table, base = self.indirect_at, 0
            self.indirect_at += 16 * n
            head = self.next_desc % QSIZE
            self._write_desc(self.desc, head, table, 16 * n, rm.VIRTQ_DESC_F_INDIRECT, 0)
            self.next_desc += 1
        else:
            table, base = self.desc, self.next_desc
            head = base % QSIZE
            self.next_desc += n
        for j, (addr, length, write) in enumerate(segments):
            flags = (rm.VIRTQ_DESC_F_WRITE if write else 0) | (
                rm.VIRTQ_DESC_F_NEXT if j + 1 < n else 0)
            i = (base + j) % QSIZE if not indirect else j
            nxt = (base + j + 1) % QSIZE if not indirect else j + 1
            self._write_desc(table, i, addr, length, flags, nxt)
        self.host.put(self.avail + 4 + 2 * (self.idx % QSIZE), struct.pack("<H", head))
        self.idx += 1
        self.host.put(self.avail + 2, struct.pack("<H", self.idx & 0xffff))
        readable = [s for s in segments if not s[2]]
        writable = [s for s in segments if s[2]]
        last_w = [s for s in writable if s[1]][-1]
        want = {
            "kind": SlotKind.REQUEST, "queue": self.index, "head": head,
            "nseg": n, "first_w": len(readable),
            "total_r": sum(s[1] for s in readable), "total_w": sum(s[1] for s in writable),
            "status_addr": last_w[0] + last_w[1] - 1,
            "header": int(readable[0][1] >= 16),
            "segments": [(a, ln, int(w)) for a, ln, w in readable + writable],
        }
        if header is not None and want["header"]:
            want["req_type"], want["sector"] = header
        self.expected.append(want)
        return want


def random_request(q, rng, buf):
    """A block request's chain: a header (sometimes split), data buffers, the status byte."""
    req_type = rng.choice([rm.VIRTIO_BLK_T_IN, rm.VIRTIO_BLK_T_OUT])
    sector = rng.randrange(1 << 40)
    hdr_addr = buf
    q.host.put(hdr_addr, struct.pack("<IIQ", req_type, 0, sector))
    if rng.random() < 0.25:
        cut = rng.randrange(1, 16)
        segs = [(hdr_addr, cut, False), (hdr_addr + cut, 16 - cut, False)]
    else:
        segs = [(hdr_addr, 16 + 8 * rng.randrange(2), False)]
    write = req_type == rm.VIRTIO_BLK_T_IN
    for k in range(rng.randrange(1, 4)):
        segs.append((buf + 0x100 + 0x200 * k + rng.randrange(8), rng.randrange(1, 513), write))
    segs.append((buf + 0x1f00 + rng.randrange(64), 1, True))
    return segs, (req_type, sector)


def make_dut(**kw):
    kw.setdefault("request_slots", 3)
    kw.setdefault("chain_walkers", 2)
    params = DeviceParams(num_queues=2, max_queue_size=QSIZE, **kw)
    return ChainFetcher(params), params


def run_fetcher(dut, params, host, queues, *, features, kicks, slots_wanted, hold=0,
                cycles=40000):
    """Kick the queues, take slots (freeing each a random time later) until ``slots_wanted``
    came or the fetcher went idle with nothing left."""
    rng = host.rng
    got = []
    tables = {}
    in_use = []
    stride = 1 << seg_index_bits(params)
    violations = []

    async def testbench(ctx):
        for i, q in enumerate(queues):
            ctx.set(dut.queues[i], {"size": QSIZE, "msix_vector": 0, "enable": 1,
                                    "desc": q.desc, "driver": q.avail, "device": q.used})
        ctx.set(dut.driver_features, features)
        ctx.set(dut.device_status, DRIVER_OK)
        for qi in kicks:
            ctx.set(dut.notify.valid, 1)
            ctx.set(dut.notify.payload, {"queue": qi})
            await wait_handshake(ctx, dut.notify)
            ctx.set(dut.notify.valid, 0)
            for _ in range(rng.randrange(4)):
                await ctx.tick()
        idle_for = 0
        free_at = []
        free_now = False
        for cycle in range(cycles):
            ctx.set(dut.slot_done, free_now)
            ctx.set(dut.slot.ready, rng.random() < 0.5)
            _, _, v, r, p, we, wa, wd, idle = await ctx.tick().sample(
                dut.slot.valid, dut.slot.ready, dut.slot.payload,
                dut.seg_w_en, dut.seg_w_addr, dut.seg_w_data, dut.idle)
            index = p.table
            if free_now:
                in_use.pop(0)
            free_now = False
            if we:
                if wa // stride in in_use:
                    violations.append(f"cycle {cycle}: table of slot {wa // stride} written "
                                      f"while in use")
                tables[wa] = (wd.addr, wd.len, wd.write)
            if v and r:
                slot = {f: getattr(p, f) for f in ("kind", "queue", "head", "nseg", "first_w",
                                                   "total_r", "total_w", "status_addr",
                                                   "header", "req_type", "sector")}
                slot["segments"] = [tables.get(index * stride + i) for i in range(p.nseg)]
                got.append(slot)
                # The executor takes every slot, BROKEN ones too, and frees them in order.
                in_use.append(index)
                if p.kind != SlotKind.BROKEN:
                    free_at.append(cycle + hold + rng.randrange(200))
            if free_at and cycle >= free_at[0]:
                free_at.pop(0)
                free_now = True
            idle_for = idle_for + 1 if idle and not in_use else 0
            if len(got) >= slots_wanted and idle_for > 100:
                break

    # The fetcher's two readers share the host through a read arbiter, as in BlkEngine.
    top = Module()
    top.submodules.fetch = dut
    top.submodules.rd_arbiter = rd_arb = DmaReadArbiter(2, params.data_width)
    for k in range(2):
        wiring.connect(top, dut.rd[k], rd_arb.i[k])
    sim = Simulator(top)
    sim.add_clock(1e-6)
    host.add_to(sim, rd=rd_arb.o, wr=dut.wr)
    sim.add_testbench(testbench)
    sim.run()
    assert not violations, violations[:3]
    return got


def check_slot(got, want, n):
    for field in ("kind", "queue", "head", "nseg", "first_w", "total_r", "total_w",
                  "status_addr", "header", "segments"):
        assert got[field] == want[field], (
            f"slot {n}: {field} {got[field]!r}, expected {want[field]!r}")
    if "req_type" in want:
        assert (got["req_type"], got["sector"]) == (want["req_type"], want["sector"]), (
            f"slot {n}: header {got['req_type']}/{got['sector']:#x}")


@pytest.mark.parametrize("walkers", [1, 2, 4, 8])
def test_chains_become_slots(walkers):
    seed = seed_from_env() + walkers
    rng = random.Random(seed)
    host = DmaHost(rng)
    dut, params = make_dut(chain_walkers=walkers, request_slots=walkers + 1)
    queues = [Queue(host, i, rng) for i in range(2)]
    for n in range(10):
        for q in queues:
            if rng.random() < 0.7:
                segs, hdr = random_request(q, rng, 0x10000 + 0x2000 * (2 * n + q.index))
                q.add_chain(segs, indirect=rng.random() < 0.4, header=hdr)
    wanted = sum(len(q.expected) for q in queues)
    features = 1 << rm.VIRTIO_RING_F_INDIRECT_DESC
    got = run_fetcher(dut, params, host, queues, features=features, kicks=[0, 1],
                      slots_wanted=wanted)
    assert len(got) == wanted, f"{len(got)} slots, {wanted} chains published"
    for qi, q in enumerate(queues):
        mine = [s for s in got if s["queue"] == qi]
        assert len(mine) == len(q.expected)
        for n, (g, w) in enumerate(zip(mine, q.expected)):
            check_slot(g, w, n)
    # Reads only of what the driver published: the avail ring, descriptor tables, headers.
    for addr, length in host.reads:
        assert length <= 128, f"read of {length} bytes at {addr:#x}"
    # The walker reads several chains at once: never more chain reads (descriptors, indirect
    # table, header: anything but the avail rings) out at a time than it has contexts, and
    # with more than one, two or more at some point.
    def is_chain_read(addr):
        return not any(avail <= addr < avail + 6 + 2 * QSIZE for _, avail, _ in RINGS)
    most = max(sum(map(is_chain_read, snap)) for snap in host.snapshots)
    assert most <= walkers, f"{most} chain reads out at once with {walkers} contexts"
    if walkers > 1:
        assert most >= 2, "the walker never had two chains in flight"


def test_malformed_ring_is_a_broken_slot_last():
    rng = random.Random(seed_from_env())
    host = DmaHost(rng)
    dut, params = make_dut()
    q = Queue(host, 0, rng)
    for n in range(3):
        segs, hdr = random_request(q, rng, 0x10000 + 0x2000 * n)
        q.add_chain(segs, header=hdr)
    # [VIRTIO-1.2 2.7.5] a head index past the queue size.
    host.put(q.avail + 4 + 2 * (q.idx % QSIZE), struct.pack("<H", QSIZE + 3))
    q.idx += 1
    host.put(q.avail + 2, struct.pack("<H", q.idx))
    segs, hdr = random_request(q, rng, 0x18000)
    q.add_chain(segs, header=hdr)      # published after the bad one: never fetched
    got = run_fetcher(dut, params, host, [q, Queue(host, 1, rng)], features=0, kicks=[0],
                      slots_wanted=4)
    assert [s["kind"] for s in got] == [SlotKind.REQUEST] * 3 + [SlotKind.BROKEN], got
    for n in range(3):
        check_slot(got[n], q.expected[n], n)


def test_event_idx_writes_avail_event_when_drained():
    rng = random.Random(seed_from_env())
    host = DmaHost(rng)
    dut, params = make_dut()
    q = Queue(host, 0, rng)
    for n in range(5):
        segs, hdr = random_request(q, rng, 0x10000 + 0x2000 * n)
        q.add_chain(segs, header=hdr)
    features = 1 << rm.VIRTIO_RING_F_EVENT_IDX
    got = run_fetcher(dut, params, host, [q, Queue(host, 1, rng)], features=features,
                      kicks=[0], slots_wanted=5)
    assert len(got) == 5
    # [VIRTIO-1.2 2.7.10] avail_event (after the used ring's entries) = the next index wanted.
    event_addr = q.used + 4 + 8 * QSIZE
    assert host.u16(event_addr) == 5, host.writes
    assert all(addr == event_addr for addr, _ in host.writes), host.writes
