# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the request executor (the request engine's back stage): slots
for IN and OUT requests over random segment lists (header fetched or not) move exactly the
right bytes between the buffers and the back-end, write the status byte, the used element
``{id, len}`` and ``used->idx`` per queue in slot order, and report each used->idx; an
IOERR slot completes with status 1 and no back-end command; a BROKEN slot comes after every
completion before it, raises needs_reset and reports a configuration change, and stops the
executor. Every stream stalls at random; SEED replays a run."""

import random
import struct

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from model import regmap as rm
from model.params import DeviceParams
from rtl.blk_exec import RequestExecutor
from rtl.blk_slots import SegmentLayout, SlotKind, seg_index_bits
from rtl.storage import StorageOp
from tb.seed import seed_from_env
from .dma_host import DmaHost, wait_handshake


QSIZE = 64
RINGS = [(0x1000, 0x2000, 0x3000), (0x5000, 0x6000, 0x7000)]
SECTOR = 512


class ExecutorBench(wiring.Component):
    """The executor with the slot tables it reads, written by the test."""
    def __init__(self, params):
        self.params = params
        self.execute = RequestExecutor(params)
        self.seg_addr = Signal(range(params.request_slots << seg_index_bits(params)))
        self.seg_data = Signal(SegmentLayout())
        self.seg_en = Signal()
        super().__init__({})

    def elaborate(self, platform):
        m = Module()
        m.submodules.execute = ex = self.execute
        m.submodules.tables = tables = Memory(
            shape=SegmentLayout(), depth=self.params.request_slots << seg_index_bits(
                self.params), init=[])
        w, r = tables.write_port(), tables.read_port()
        m.d.comb += [w.addr.eq(self.seg_addr), w.data.eq(self.seg_data), w.en.eq(self.seg_en),
                     r.addr.eq(ex.seg_r_addr), ex.seg_r_data.eq(r.data)]
        return m


def disk_bytes(sector, count):
    return b"".join(struct.pack("<Q", (sector + s) * 0x1000 + k) * 1
                    for s in range(count) for k in range(SECTOR // 8))


def random_request(rng, q, buf, with_header, write_req=None):
    """A slot and its segments for an IN or OUT request of 1 to 4 sectors, the data cut into
    1 to 4 buffers at random."""
    if write_req is None:
        write_req = rng.random() < 0.5
    req_type = rm.VIRTIO_BLK_T_OUT if write_req else rm.VIRTIO_BLK_T_IN
    count = rng.randrange(1, 5)
    sector = rng.randrange(0, 1000)
    nbytes = count * SECTOR
    cuts = sorted(rng.sample(range(1, nbytes), rng.randrange(0, 4)))
    pieces = [b - a for a, b in zip([0] + cuts, cuts + [nbytes])]
    segs = [(buf, 16, 0)]
    at = buf + 0x40
    for n in pieces:
        at += rng.randrange(8)
        segs.append((at, n, int(not write_req)))
        at += n
    status = at + 3
    segs.append((status, 1, 1))
    readable = [s for s in segs if not s[2]]
    writable = [s for s in segs if s[2]]
    slot = {"kind": SlotKind.REQUEST, "queue": q, "head": rng.randrange(QSIZE),
            "nseg": len(segs), "first_w": len(readable),
            "total_r": sum(s[1] for s in readable), "total_w": sum(s[1] for s in writable),
            "status_addr": status, "header": int(with_header),
            "req_type": req_type if with_header else 0, "sector": sector if with_header else 0}
    return slot, readable + writable, (req_type, sector, count)


@pytest.mark.parametrize("ahead", [False, True])
@pytest.mark.parametrize("k", range(3))
def test_requests_complete_in_slot_order(k, ahead):
    """``ahead``: every slot is filled and offered at once (as the fetcher does when it runs
    ahead), so an OUT request's data reads may go out while the one before it runs; they
    must, for two OUT requests in a row."""
    seed = seed_from_env() + k + 100 * ahead
    rng = random.Random(seed)
    params = DeviceParams(num_queues=2, max_queue_size=QSIZE,
                          request_slots=16 if ahead else 2, capacity=2048)
    bench = ExecutorBench(params)
    ex = bench.execute
    host = DmaHost(rng)
    stride = 1 << seg_index_bits(params)
    requests = []
    # Requests 5 and 6: OUT with the header fetched, the case the read-ahead serves.
    for n in range(8):
        slot, segs, what = random_request(rng, rng.randrange(2), 0x10000 + 0x1000 * n,
                                          with_header=n in (5, 6) or rng.random() < 0.7,
                                          write_req=True if n in (5, 6) else None)
        req_type, sector, count = what
        host.put(segs[0][0], struct.pack("<IIQ", req_type, 0, sector))
        if req_type == rm.VIRTIO_BLK_T_OUT:
            data = bytes(rng.randrange(256) for _ in range(count * SECTOR))
            at = 0
            for a, ln, w in segs[1:-1]:
                host.put(a, data[at:at + ln])
                at += ln
        else:
            data = disk_bytes(sector, count)
        requests.append((slot, segs, what, data))
    ioerr = dict(requests[3][0], kind=SlotKind.IOERR)
    requests[3] = (ioerr, requests[3][1], None, None)
    storage_cmds, written, irqs, events = [], [], [], []

    async def storage(ctx):
        sto = ex.storage
        ctx.set(sto.cpl.valid, 0)
        while True:
            ctx.set(sto.cmd.ready, 1)
            _, _, v, p = await ctx.tick().sample(sto.cmd.valid, sto.cmd.payload)
            if not v:
                continue
            ctx.set(sto.cmd.ready, 0)
            op, sector, count = p.op, p.sector, p.count
            storage_cmds.append((op, sector, count))
            if op == StorageOp.READ:
                data = disk_bytes(sector, count)
                for j in range(0, len(data), 8):
                    while rng.random() < 0.3:
                        await ctx.tick()
                    ctx.set(sto.rdata.valid, 1)
                    ctx.set(sto.rdata.payload, {
                        "data": int.from_bytes(data[j:j + 8], "little"),
                        "last": int(j + 8 == len(data))})
                    await wait_handshake(ctx, sto.rdata)
                    ctx.set(sto.rdata.valid, 0)
            elif op == StorageOp.WRITE:
                got = b""
                while len(got) < count * SECTOR:
                    ctx.set(sto.wdata.ready, rng.random() < 0.7)
                    _, _, wv, wr_, wp = await ctx.tick().sample(
                        sto.wdata.valid, sto.wdata.ready, sto.wdata.payload)
                    if wv and wr_:
                        got += wp.data.to_bytes(8, "little")
                ctx.set(sto.wdata.ready, 0)
                written.append((sector, got))
            ctx.set(sto.cpl.valid, 1)
            ctx.set(sto.cpl.payload, {"tag": p.tag, "status": 0})
            await wait_handshake(ctx, sto.cpl)
            ctx.set(sto.cpl.valid, 0)

    async def testbench(ctx):
        for i, (desc, avail, used) in enumerate(RINGS):
            ctx.set(ex.queues[i], {"size": QSIZE, "msix_vector": 0, "enable": 1,
                                   "desc": desc, "driver": avail, "device": used})
        ctx.set(ex.driver_features, 0)
        ctx.set(ex.device_status, 0x0f)
        ctx.set(ex.fetch_idle, 1)
        queue = list(requests) + [({"kind": SlotKind.BROKEN, "queue": 0}, [], None, None)]
        if ahead:
            for n, (slot, segs, _, _) in enumerate(queue):
                for i, (a, ln, w) in enumerate(segs):
                    ctx.set(bench.seg_addr, n * stride + i)
                    ctx.set(bench.seg_data, {"addr": a, "len": ln, "write": w})
                    ctx.set(bench.seg_en, 1)
                    await ctx.tick()
            ctx.set(bench.seg_en, 0)
            for n, (slot, segs, _, _) in enumerate(queue):
                ctx.set(ex.slot.valid, 1)
                ctx.set(ex.slot.payload, dict(slot, table=n))
                await wait_handshake(ctx, ex.slot)
                taken.append(cycle[0])
            ctx.set(ex.slot.valid, 0)
            for _ in range(20000):
                _, _, nr = await ctx.tick().sample(ex.needs_reset)
                if nr:
                    events.append(("needs_reset",))
                    break
            queue = []
        slot_index = 0
        for slot, segs, _, _ in queue:
            # The fetcher fills a slot's table before it passes the slot on.
            for i, (a, ln, w) in enumerate(segs):
                ctx.set(bench.seg_addr, slot_index * stride + i)
                ctx.set(bench.seg_data, {"addr": a, "len": ln, "write": w})
                ctx.set(bench.seg_en, 1)
                await ctx.tick()
            ctx.set(bench.seg_en, 0)
            ctx.set(ex.slot.valid, 1)
            ctx.set(ex.slot.payload, dict(slot, table=slot_index))
            await wait_handshake(ctx, ex.slot)
            ctx.set(ex.slot.valid, 0)
            # One slot ahead at most here (the table of the next is written now): wait for
            # the executor to be done with this one's table.
            while True:
                _, _, done, nr = await ctx.tick().sample(ex.slot_done, ex.needs_reset)
                if nr:
                    events.append(("needs_reset",))
                if done or (slot["kind"] == SlotKind.BROKEN and nr):
                    break
            slot_index = (slot_index + 1) % params.request_slots
        for _ in range(50):
            _, _, idle = await ctx.tick().sample(ex.idle)
        assert idle, "executor not idle after the BROKEN slot"

    cycle, taken, reads = [0], [], []

    async def monitor(ctx):
        # Every DMA read command, with the cycle it was taken.
        while True:
            _, _, v, r, c = await ctx.tick().sample(ex.rd.cmd.valid, ex.rd.cmd.ready,
                                                   ex.rd.cmd.payload)
            cycle[0] += 1
            if v and r:
                reads.append((cycle[0], c.addr))

    async def reporter(ctx):
        # The reports, taken under random back-pressure; each may come after its slot_done
        # (it waits for the used-ring writes to leave).
        while True:
            ctx.set(ex.report.ready, rng.random() < 0.5)
            _, _, iv, ir, ip = await ctx.tick().sample(
                ex.report.valid, ex.report.ready, ex.report.payload)
            if iv and ir:
                irqs.append((ip.config, ip.queue if not ip.config else None,
                             ip.used_idx if not ip.config else None))
                events.append(("report", ip.config))

    sim = Simulator(bench)
    sim.add_clock(1e-6)
    host.add_to(sim, rd=ex.rd, wr=ex.wr)
    sim.add_testbench(storage, background=True)
    sim.add_testbench(reporter, background=True)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(testbench)
    sim.run()

    # Per queue: statuses, used elements and used->idx in slot order.
    used_n = [0, 0]
    want_cmds = []
    for slot, segs, what, data in requests:
        q = slot["queue"]
        _, _, used = RINGS[q]
        elem = host.mem[used + 4 + 8 * used_n[q]:used + 12 + 8 * used_n[q]]
        assert struct.unpack("<II", elem) == (slot["head"], slot["total_w"]), (
            f"used element {used_n[q]} of queue {q}")
        used_n[q] += 1
        status = host.mem[slot["status_addr"]]
        if what is None:
            assert status == rm.VIRTIO_BLK_S_IOERR
            continue
        assert status == rm.VIRTIO_BLK_S_OK
        req_type, sector, count = what
        if req_type == rm.VIRTIO_BLK_T_IN:
            want_cmds.append((StorageOp.READ, sector, count))
            got = b"".join(bytes(host.mem[a:a + ln]) for a, ln, w in segs[1:-1])
            assert got == data, f"IN data of sector {sector}"
        else:
            want_cmds.append((StorageOp.WRITE, sector, count))
            assert (sector, data) in written, f"OUT data of sector {sector}"
    for q in range(2):
        assert host.u16(RINGS[q][2] + 2) == used_n[q], f"used->idx of queue {q}"
    assert storage_cmds == want_cmds
    # One report per request, with the queue's new used->idx, the configuration change last.
    want, n = [], [0, 0]
    for s, _, _, _ in requests:
        n[s["queue"]] += 1
        want.append((0, s["queue"], n[s["queue"]]))
    assert irqs == want + [(1, None, None)], irqs
    if ahead:
        # Request 6's data reads went out before the executor took its slot.
        _, segs6, _, _ = requests[6]
        first = min(t for t, a in reads if any(b <= a < b + ln for b, ln, _ in segs6[1:-1]))
        assert first < taken[6], f"request 6's data read at cycle {first}, its slot taken " \
                                 f"at {taken[6]}: no read-ahead"
    assert ("needs_reset",) in events and events.index(("needs_reset",)) >= len(requests)
