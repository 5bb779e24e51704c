"""The testbench's virtio-blk driver (tb/virtqueue.py, tb/blk.py) against the golden model,
without a simulator.

The driver's data structures live in a bytearray-backed :class:`HostMemory`; a fake "device"
serves a queue by calling the golden model on the same rings when the driver kicks. The driver is
brought up through the model's register file (:class:`VirtioBlkModel`) with
:meth:`BlkDriver.setup`, whose awaitables run on plain asyncio here. Every random test prints its
seed; ``SEED=<n>`` replays it.
"""

import asyncio
import logging
import random
import struct

import pytest

from model import regmap as rm
from model.device import VirtioBlkModel
from model.params import DeviceParams
from tb.blk import (BlkConfig, BlkDriver, DRIVER_FEATURES, Layout, driver_features,
                    random_layout)
from tb.driver import VirtioPciDriver
from tb.seed import seed_from_env
from tb.virtqueue import HostMemory, QueueFull, SplitVirtqueue, VirtqueueError, need_event


SECTOR = rm.BLK_SECTOR_BYTES
DESC = struct.Struct("<QIHH")
LOG = logging.getLogger("test_driver_model")


def seeded():
    return random.Random(seed_from_env(print))


# -- a PCI function backed by the golden model, enough for VirtioPciDriver -----------------------

class ModelBar:
    """BAR0 of the model as cocotbext-pcie's bar_window: byte accesses split into DWs with byte
    enables, as the RootComplex would put them in Memory Requests."""
    def __init__(self, model):
        self.model = model

    async def read(self, addr, n):
        out = bytearray()
        while n:
            lane, take = addr % 4, min(n, 4 - addr % 4)
            value = self.model.bar_read_dw(addr // 4, ((1 << take) - 1) << lane)
            out += (value >> 8 * lane & (1 << 8 * take) - 1).to_bytes(take, "little")
            addr, n = addr + take, n - take
        return bytes(out)

    async def write(self, addr, data):
        data = bytes(data)
        while data:
            lane, take = addr % 4, min(len(data), 4 - addr % 4)
            value = int.from_bytes(data[:take], "little") << 8 * lane
            self.model.bar_write_dw(addr // 4, value, ((1 << take) - 1) << lane)
            addr, data = addr + take, data[take:]


class ModelFunction:
    """The parts of cocotbext-pcie's PciDevice that VirtioPciDriver and BlkDriver.setup use."""
    def __init__(self, model):
        self.model = model
        self.bar_window = [ModelBar(model)] + [None] * 5
        self.bar_size = [model.p.bar0_size] + [0] * 5
        self.msix_enabled = False

    def _cfg(self, addr, n):
        status, value = self.model.config_read(addr // 4)
        assert status == "SC"
        return value >> 8 * (addr % 4) & (1 << 8 * n) - 1

    async def config_read_byte(self, addr):
        return self._cfg(addr, 1)

    async def config_read_word(self, addr):
        return self._cfg(addr, 2)

    async def config_read_dword(self, addr):
        return self._cfg(addr, 4)


def run(coro):
    return asyncio.run(coro)


class Session:
    """Driver and golden model on one host memory; the device runs when the test kicks.

    The test keeps its own shadow of the disk and works out, in the order the device serves
    requests, what each one must return.
    """
    def __init__(self, rng, params=None, event_idx=False, indirect=True, queue_size=None,
                 queues=None, features=None, mem_size=8 << 20):
        self.rng = rng
        self.p = params or DeviceParams()
        self.model = VirtioBlkModel(self.p)
        self.mem = HostMemory.from_bytearray(mem_size, base=0x4000_0000)
        self.pci_drv = VirtioPciDriver(None, ModelFunction(self.model), LOG)
        self.blk = BlkDriver(self.pci_drv, self.mem, LOG)
        vectors = run(self.blk.setup(features, queues, indirect, event_idx, use_msix=False,
                                     queue_size=queue_size))
        assert vectors is None
        run(self.pci_drv.add_status(rm.STATUS_DRIVER_OK))
        self.core = self.blk.core
        self.vqs = self.blk.vqs
        self.features = self.blk.features
        self.shadow = bytearray(self.p.capacity * SECTOR)
        self.expect = {}
        self.batches = 0

    def submit(self, q, args, layout=None):
        return self.core.submit(q, *args, layout)

    def kick(self, q, notify=False):
        """The driver's kick decision, then the device serves the queue (golden model)."""
        needed = self.vqs[q].kick_prepare()
        if notify:
            run(self.pci_drv.notify(q))
            assert self.model.notifications[-1] == q
        batch = self.model.process_queue(q, self.mem)
        assert not batch.needs_reset, batch.error
        for c in batch.completions:
            req = self.core.inflight[q][c.head]
            assert (c.op, c.sector) == (req.type, req.sector)
            self.expect[id(req)] = (self.effect(req), c)
        self.batches += 1
        return needed, batch

    def effect(self, req):
        """Apply ``req`` to the shadow disk; return ``(status, data)`` it must complete with."""
        ok = rm.VIRTIO_BLK_S_OK
        if req.type == rm.VIRTIO_BLK_T_IN:
            lo = req.sector * SECTOR
            return ok, bytes(self.shadow[lo:lo + req.in_len])
        if req.type == rm.VIRTIO_BLK_T_OUT:
            lo = req.sector * SECTOR
            self.shadow[lo:lo + len(req.out)] = req.out
            return ok, b""
        if req.type in (rm.VIRTIO_BLK_T_DISCARD, rm.VIRTIO_BLK_T_WRITE_ZEROES):
            sector, n, flags = struct.unpack("<QII", req.out)
            if req.type == rm.VIRTIO_BLK_T_DISCARD and flags:
                return rm.VIRTIO_BLK_S_UNSUPP, b""
            self.shadow[sector * SECTOR:(sector + n) * SECTOR] = bytes(n * SECTOR)
            return ok, b""
        if req.type == rm.VIRTIO_BLK_T_GET_ID:
            return ok, self.p.serial_bytes()
        if req.type == rm.VIRTIO_BLK_T_FLUSH:
            return ok, b""
        return rm.VIRTIO_BLK_S_UNSUPP, None

    def reap(self, q):
        done = self.core.reap(q)
        for req in done:
            (status, data), c = self.expect.pop(id(req))
            assert req.done and req.head == c.head
            assert req.status == status == c.status, f"{req}: expected status {status}"
            # The model's used len: every device-writable byte of the chain.
            assert req.used_len == c.used_len == sum(req.layout.writable)
            if data is not None and req.type in (rm.VIRTIO_BLK_T_IN, rm.VIRTIO_BLK_T_GET_ID):
                assert req.data == data, f"{req}: data differs"
        return done

    def run_queue(self, q):
        """Kick and reap until queue ``q`` has nothing in flight."""
        while self.core.inflight[q]:
            self.kick(q)
            self.reap(q)

    def random_request(self, q, weights=(4, 4, 1, 1, 1, 1), max_sectors=16):
        """Draw one request; returns its builder arguments."""
        rng, core, cap = self.rng, self.core, self.p.capacity
        op = rng.choices(["read", "write", "flush", "get_id", "discard", "write_zeroes"],
                         weights)[0]
        n = rng.randint(1, max_sectors)
        sector = rng.randrange(cap - n + 1)
        if op == "read":
            return core.read_args(sector, n)
        if op == "write":
            return core.write_args(sector, rng.randbytes(n * SECTOR))
        if op == "flush":
            return core.flush_args()
        if op == "get_id":
            return core.get_id_args()
        if op == "discard":
            return core.discard_args(sector, n)
        return core.write_zeroes_args(sector, n, unmap=rng.random() < 0.5)


def layout_for(session, q, args):
    _, _, out, in_len = args
    return session.core.random_layout(session.rng, len(out), in_len, q)


# -- host memory --------------------------------------------------------------------------------

def test_host_memory_alloc_free_and_errors():
    mem = HostMemory.from_bytearray(0x3000, base=0x10000)
    a = mem.alloc(10, 1)
    assert a == 0x11000                       # the guard page is never handed out
    b = mem.alloc(16, 16)
    assert b % 16 == 0 and b >= a + 10
    c = mem.alloc(0x2000 - 32, 1)
    mem.write(c, b"\x01\x02\x03")
    assert mem.read(c, 3) == b"\x01\x02\x03"
    with pytest.raises(MemoryError, match=r"no 4096 free bytes aligned to 1"):
        mem.alloc(0x1000)
    for x in (a, b, c):
        mem.free(x)
    assert mem.allocated == 0
    # Freed pieces coalesce: the whole region past the guard is one piece again.
    assert mem.alloc(0x2000) == 0x11000
    with pytest.raises(ValueError, match=r"0x11001 is not an allocated host buffer"):
        mem.free(0x11001)
    with pytest.raises(ValueError, match=r"alignment must be a power of two, not 3"):
        mem.alloc(4, 3)
    with pytest.raises(ValueError, match=r"allocation size must be at least 1, not 0"):
        mem.alloc(0)
    with pytest.raises(ValueError, match=r"host access 0x12ffe\+0x4 is outside host memory"):
        mem.read(0x12ffe, 4)
    with pytest.raises(ValueError, match=r"overlaps the region at 0x10000"):
        mem.add_region(0x12000, bytearray(0x2000))


def test_host_memory_is_the_root_complex_memory():
    """from_root_complex: the bytes the driver writes are the ones the RootComplex's address
    space (which serves the DUT's Memory Requests) returns, below 2 GiB and above 4 GiB."""
    from cocotbext.axi.address_space import AddressSpace

    class FakeRc:                   # RootComplex's own alloc_region, on a real AddressSpace
        def __init__(self):
            self.mem_address_space = AddressSpace(2 ** 64)
            self.mem_pool = self.mem_address_space.create_pool(0, 0x8000_0000)

        def alloc_region(self, size):
            region = self.mem_pool.alloc_region(size)
            return region.get_absolute_address(0), region.mem

    rc = FakeRc()
    for base in (None, 0x1_2340_0000):
        mem = HostMemory.from_root_complex(rc, 0x10000, base=base)
        addr = mem.alloc(100, 4)
        if base is not None:
            assert addr >> 32 == 1
        mem.write(addr, b"virtio" * 10)
        assert run(rc.mem_address_space.read(addr, 60)) == b"virtio" * 10
        run(rc.mem_address_space.write(addr + 3, b"DMA"))
        assert mem.read(addr, 8) == b"virDMAvi"


# -- split virtqueue ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 3, 65536, 2.0])
def test_virtqueue_size_is_checked(size):
    mem = HostMemory.from_bytearray(0x10000)
    with pytest.raises(ValueError, match=rf"queue size must be a power of two from 1 to 32768, "
                                         rf"not {size!r}"):
        SplitVirtqueue(mem, size)


def test_virtqueue_rings_in_memory():
    """Descriptors, chaining, ring placement and alignment, the avail ring, the Linux free list,
    indirect tables and the direct-prefix layout, byte for byte."""
    mem = HostMemory.from_bytearray(0x10000)
    vq = SplitVirtqueue(mem, 4)
    assert vq.desc_addr % 16 == 0 and vq.avail_addr % 2 == 0 and vq.used_addr % 4 == 0
    assert mem.read(vq.used_addr, 6 + 8 * 4) == bytes(6 + 8 * 4)

    def desc(i, table=None):
        return DESC.unpack(mem.read((table or vq.desc_addr) + 16 * i, 16))

    h0 = vq.add([(0x1000, 16)], [(0x2000, 1)])
    h1 = vq.add([(0x3000, 16), (0x3100, 512)], [])
    assert (h0, h1) == (0, 2) and vq.num_free == 0
    N, W, I = rm.VIRTQ_DESC_F_NEXT, rm.VIRTQ_DESC_F_WRITE, rm.VIRTQ_DESC_F_INDIRECT
    assert desc(0) == (0x1000, 16, N, 1)
    assert desc(1) == (0x2000, 1, W, 2)          # next written, NEXT clear: Linux's free list
    assert desc(2) == (0x3000, 16, N, 3)
    assert desc(3)[:3] == (0x3100, 512, 0)
    assert mem.read16(vq.avail_addr + 2) == 2
    assert [mem.read16(vq.avail_addr + 4 + 2 * i) for i in range(2)] == [0, 2]
    with pytest.raises(QueueFull):
        vq.add([(0x1000, 16)], [(0x2000, 1)], indirect=True)
    assert vq.num_free == 0 and vq.avail_idx == 2
    with pytest.raises(ValueError, match=r"a chain of 5 descriptors is longer than the queue "
                                         r"size 4"):
        vq.add([(0, 1)] * 5, [], indirect=True)
    with pytest.raises(ValueError, match=r"direct_prefix must leave at least one of the 2 "
                                         r"elements for the indirect table, not 2"):
        vq.add([(0, 1)], [(0, 1)], indirect=True, direct_prefix=2)

    # The device uses head 2, then head 0: each chain goes on the front of the free list, so
    # the next chains start at 0, then 1 (Linux detach_buf_split).
    mem.write(vq.used_addr + 4, struct.pack("<IIII", 2, 0, 0, 1))
    mem.write16(vq.used_addr + 2, 2)
    assert vq.get_used() == [(2, 0), (0, 1)] and vq.num_free == 4
    allocated = mem.allocated
    h2 = vq.add([(0x5000, 16)], [(0x6000, 100), (0x6100, 1)], indirect=True)
    assert h2 == 0 and vq.num_free == 3 and mem.allocated == allocated + 48
    addr, length, flags, _ = desc(0)
    assert (length, flags) == (48, I) and addr % 16 == 0
    # Linux alloc_indirect_split: next = i + 1 in every entry.
    assert [desc(i, addr) for i in range(3)] == [
        (0x5000, 16, N, 1), (0x6000, 100, W | N, 2), (0x6100, 1, W, 3)]
    h3 = vq.add([(0x7000, 16), (0x7100, 8)], [(0x8000, 1)], indirect=True, direct_prefix=1)
    assert h3 == 1 and vq.num_free == 1
    assert desc(1) == (0x7000, 16, N, 2)
    addr, length, flags, _ = desc(2)
    assert (length, flags) == (32, I)
    assert [desc(i, addr) for i in range(2)] == [(0x7100, 8, N, 1), (0x8000, 1, W, 2)]
    assert [mem.read16(vq.avail_addr + 4 + 2 * i) for i in range(4)] == [0, 2, 0, 1]
    # Completing everything frees the indirect tables and every descriptor.
    mem.write(vq.used_addr + 4 + 16, struct.pack("<IIII", 1, 1, 0, 101))
    mem.write16(vq.used_addr + 2, 4)
    assert vq.get_used() == [(1, 1), (0, 101)]
    assert vq.num_free == 4 and vq.in_flight == 0 and mem.allocated == allocated


def test_virtqueue_detects_device_bugs():
    """Used ring entries that name no chain in flight, overstate the bytes written, or a used
    idx past the chains in flight: the driver stops (Linux BAD_RING)."""
    def fresh():
        mem = HostMemory.from_bytearray(0x10000)
        vq = SplitVirtqueue(mem, 8)
        vq.add([(0x1000, 16)], [(0x2000, 10)])
        return mem, vq

    mem, vq = fresh()
    mem.write(vq.used_addr + 4, struct.pack("<II", 1, 0))
    mem.write16(vq.used_addr + 2, 1)
    with pytest.raises(VirtqueueError, match=r"names descriptor 1, which is not the head"):
        vq.get_used()
    mem, vq = fresh()
    mem.write(vq.used_addr + 4, struct.pack("<II", 0, 11))
    mem.write16(vq.used_addr + 2, 1)
    with pytest.raises(VirtqueueError, match=r"reports 11 bytes written, the chain has 10"):
        vq.get_used()
    mem, vq = fresh()
    mem.write16(vq.used_addr + 2, 2)
    with pytest.raises(VirtqueueError, match=r"used idx 2 is 2 entries past last_used 0, "
                                             r"with only 1 chains in flight"):
        vq.get_used()


def test_notification_suppression_fields():
    """NO_INTERRUPT / used_event as the driver writes them, and the kick decision from the
    device's NO_NOTIFY / avail_event [VIRTIO-1.2 2.7.7, 2.7.10]."""
    mem = HostMemory.from_bytearray(0x10000)
    vq = SplitVirtqueue(mem, 8)
    vq.add([(0x1000, 16)], [(0x2000, 1)])
    assert vq.kick_prepare()
    mem.write16(vq.used_addr, rm.VIRTQ_USED_F_NO_NOTIFY)
    vq.add([(0x1000, 16)], [(0x2000, 1)])
    assert not vq.kick_prepare()
    vq.set_no_interrupt(True)
    assert mem.read16(vq.avail_addr) == rm.VIRTQ_AVAIL_F_NO_INTERRUPT
    vq.set_no_interrupt(False)
    assert mem.read16(vq.avail_addr) == 0
    with pytest.raises(ValueError, match=r"used_event is only meaningful with "
                                         r"VIRTIO_RING_F_EVENT_IDX"):
        vq.set_used_event(3)

    vq = SplitVirtqueue(mem, 16, event_idx=True)
    for _ in range(3):
        vq.add([(0x1000, 16)], [(0x2000, 1)])
    # The device asked to hear about entry 1 (avail_event 1): idx went 0 -> 3, past it.
    mem.write16(vq.used_addr + 4 + 8 * 16, 1)
    mem.write16(vq.used_addr, rm.VIRTQ_USED_F_NO_NOTIFY)    # ignored with EVENT_IDX
    assert vq.kick_prepare()
    vq.add([(0x1000, 16)], [(0x2000, 1)])
    assert not vq.kick_prepare()                            # 3 -> 4 does not pass 1
    mem.write16(vq.used_addr + 4 + 8 * 16, 4)
    vq.add([(0x1000, 16)], [(0x2000, 1)])
    assert vq.kick_prepare()                                # 4 -> 5 passes 4
    vq.set_no_interrupt(True)
    assert mem.read16(vq.avail_addr) == 0                   # flags stay 0 with EVENT_IDX
    assert vq.used_event == 0xffff                          # one behind last_used (0)
    vq.set_used_event(7)
    assert vq.used_event == 7
    assert need_event(0xffff, 0, 0xfffe) and not need_event(5, 5, 4)


# -- layouts ------------------------------------------------------------------------------------

def test_random_layouts_cover_the_allowed_shapes():
    """Every shape the spec allows shows up, and every layout stays within seg_max, size_max
    and the queue size."""
    rng = seeded()
    seen = set()
    for _ in range(3000):
        # The shapes of real requests: OUT, discard / write zeroes, IN, GET_ID, FLUSH.
        out_len, in_len = rng.choice([(SECTOR * rng.randint(1, 8), 0), (16, 0),
                                      (0, SECTOR * rng.randint(1, 8)), (0, 20), (0, 0)])
        seg_max, size_max, qsize = rng.choice([(126, None, 256), (3, 1500, 8), (1, 4096, 4)])
        lay = random_layout(rng, out_len, in_len, seg_max=seg_max, size_max=size_max,
                            queue_size=qsize)
        lay.check(out_len, in_len)
        assert lay.count <= min(seg_max + 2, qsize)
        assert all(1 <= n <= (size_max or 1 << 32) for n in lay.readable + lay.writable)
        assert all(0 <= s < 64 for s in lay.skews)
        cuts, pos = set(), 0
        for n in lay.readable:
            pos += n
            cuts.add(pos)
        if any(c < 16 for c in cuts):
            seen.add("header split")
        if out_len and 16 not in cuts:
            seen.add("header shares payload")
        if out_len and len(lay.readable) > 2:
            seen.add("payload in several")
        if in_len:
            seen.add("status alone" if lay.writable[-1] == 1 else "status shares data")
            if len(lay.writable) > 2:
                seen.add("input in several")
        seen.add("indirect" if lay.indirect else "direct")
        if lay.direct_prefix:
            seen.add("direct prefix")
        if any(lay.skews):
            seen.add("skewed")
    assert seen == {"header split", "header shares payload", "payload in several",
                    "status alone", "status shares data", "input in several", "indirect",
                    "direct", "direct prefix", "skewed"}


def test_layout_errors():
    with pytest.raises(ValueError, match=r"readable lengths \(16,\) sum to 16, not the 528 "
                                         r"bytes of header and payload"):
        Layout((16,), (1,)).check(512, 0)
    with pytest.raises(ValueError, match=r"writable lengths \(512,\) sum to 512, not the 513 "
                                         r"bytes of input data and status"):
        Layout((16,), (512,)).check(0, 512)
    with pytest.raises(ValueError, match=r"direct_prefix 1 needs indirect"):
        Layout((16,), (1,), direct_prefix=1).check(0, 0)
    with pytest.raises(ValueError, match=r"3 skews for 2 descriptors"):
        Layout((16,), (1,), skews=(0, 0, 0)).check(0, 0)
    with pytest.raises(ValueError, match=r"a request of 8192 \+ 0 bytes needs 4 descriptors of "
                                         r"at most 4096 bytes; the limit is 3"):
        random_layout(random.Random(1), 8192, 0, seg_max=1, size_max=4096)


# -- configuration and features -----------------------------------------------------------------

def test_blk_config_and_features():
    p = DeviceParams(seg_max=7, size_max=1000, num_queues=3)
    raw = p.blk_config()
    cfg = BlkConfig.from_bytes(raw, p.offered_features)
    assert (cfg.capacity, cfg.seg_max, cfg.size_max, cfg.num_queues, cfg.blk_size) == \
        (p.capacity, 7, 1000, 3, p.blk_size)
    assert (cfg.max_discard_sectors, cfg.max_write_zeroes_seg) == \
        (p.max_discard_sectors, p.max_write_zeroes_seg)
    # Without the features, Linux's defaults: one data segment, no limit, one queue.
    bare = BlkConfig.from_bytes(raw, 1 << rm.VIRTIO_F_VERSION_1)
    assert (bare.capacity, bare.seg_max, bare.size_max, bare.num_queues) == \
        (p.capacity, 1, None, 1)
    f = driver_features()
    assert f == DRIVER_FEATURES & ~(1 << rm.VIRTIO_RING_F_EVENT_IDX)
    assert not driver_features(indirect=False) >> rm.VIRTIO_RING_F_INDIRECT_DESC & 1
    assert driver_features(event_idx=True) >> rm.VIRTIO_RING_F_EVENT_IDX & 1
    assert not DRIVER_FEATURES >> rm.VIRTIO_F_RING_PACKED & 1


@pytest.mark.parametrize("event_idx", [False, True])
def test_setup_through_the_register_model(event_idx):
    """BlkDriver.setup in Linux order against the model's registers: features, config, queue
    sizes written back, ring addresses, enables; notify reaches the right queue."""
    p = DeviceParams(num_queues=3, max_queue_size=64, seg_max=9)
    s = Session(random.Random(0), p, event_idx=event_idx, queue_size=16)
    m = s.model
    assert m.device_status == 0x0f
    want = driver_features(event_idx=event_idx) & p.offered_features
    assert s.features == m.driver_features == want
    assert (s.blk.config.seg_max, s.blk.config.capacity, s.blk.config.num_queues) == \
        (9, p.capacity, 3)
    for q, vq in enumerate(s.vqs):
        qs = m.queues[q]
        assert (qs.size, qs.enable, qs.desc, qs.driver, qs.device) == \
            (16, 1, vq.desc_addr, vq.avail_addr, vq.used_addr)
        s.submit(q, s.core.flush_args())
        needed, batch = s.kick(q, notify=True)
        assert needed and [c.status for c in batch.completions] == [rm.VIRTIO_BLK_S_OK]
        assert len(s.reap(q)) == 1
    # Only two queues asked for: the third stays disabled.
    s2 = Session(random.Random(0), p, queues=2)
    assert [qs.enable for qs in s2.model.queues] == [1, 1, 0]
    with pytest.raises(Exception, match=r"4 queues asked for, the device has 3"):
        Session(random.Random(0), p, queues=4)


# -- requests against the golden model ----------------------------------------------------------

@pytest.mark.parametrize("indirect", [False, True])
def test_write_then_read_back(indirect):
    """Writes then reads of the same sectors, each with its own random layout, read back what
    was written; the disk ends equal to the shadow."""
    s = Session(seeded(), indirect=indirect, queue_size=32)
    rng, core = s.rng, s.core
    for _ in range(60):
        n = rng.randint(1, 24)
        sector = rng.randrange(s.p.capacity - n + 1)
        data = rng.randbytes(n * SECTOR)
        args = core.write_args(sector, data)
        w = s.submit(0, args, layout_for(s, 0, args))
        s.run_queue(0)
        assert w.status == rm.VIRTIO_BLK_S_OK
        args = core.read_args(sector, n)
        r = s.submit(1, args, layout_for(s, 1, args))
        s.run_queue(1)
        assert r.status == rm.VIRTIO_BLK_S_OK and r.data == data
    assert s.model.blk.disk == s.shadow
    # Every request buffer and indirect table was freed: only the rings are left.
    assert not any(s.core.inflight)
    assert s.mem.allocated == sum(16 * vq.size + 6 + 2 * vq.size + 6 + 8 * vq.size
                                  for vq in s.vqs)


def test_get_id_flush_discard_write_zeroes():
    s = Session(seeded(), queue_size=16)
    core, rng = s.core, s.rng
    data = rng.randbytes(64 * SECTOR)
    for args in (core.write_args(100, data), core.get_id_args(), core.flush_args()):
        # One at a time: a random direct layout of the write may take the whole 16-entry
        # queue (SEED=4127120452 did).
        s.submit(0, args, layout_for(s, 0, args))
        s.run_queue(0)
    ident = s.submit(0, core.get_id_args(), Layout((16,), (7, 13, 1)))
    s.run_queue(0)
    assert ident.status == rm.VIRTIO_BLK_S_OK
    assert ident.data == b"virtio-blk-ep".ljust(20, b"\0")
    for args in (core.discard_args(100, 8), core.write_zeroes_args(120, 4, unmap=True),
                 core.write_zeroes_args(130, 2)):
        req = s.submit(0, args, layout_for(s, 0, args))
        s.run_queue(0)
        assert req.status == rm.VIRTIO_BLK_S_OK
    r = s.submit(0, core.read_args(100, 64))
    s.run_queue(0)
    want = bytearray(data)
    for lo, n in ((0, 8), (20, 4), (30, 2)):
        want[lo * SECTOR:(lo + n) * SECTOR] = bytes(n * SECTOR)
    assert r.data == want
    # [VIRTIO-1.2 5.2.6.2] unmap on a discard is UNSUPP, and so is an unknown type.
    from tb.blk import discard_segment
    bad = s.submit(0, (rm.VIRTIO_BLK_T_DISCARD, 0, discard_segment(0, 1, 1), 0))
    odd = s.submit(0, (99, 0, b"", 0))
    s.run_queue(0)
    assert bad.status == odd.status == rm.VIRTIO_BLK_S_UNSUPP
    with pytest.raises(ValueError, match=r"sectors 2040\+9 are beyond the capacity of 2048"):
        core.read_args(2040, 9)
    with pytest.raises(ValueError, match=r"write data must be a multiple of 512 bytes, not 100"):
        core.write_args(0, bytes(100))


def test_indirect_needs_the_feature():
    s = Session(random.Random(0), indirect=False)
    assert not s.features >> rm.VIRTIO_RING_F_INDIRECT_DESC & 1
    with pytest.raises(ValueError, match=r"indirect layout without VIRTIO_RING_F_INDIRECT_DESC"):
        s.submit(0, s.core.flush_args(), Layout((16,), (1,), indirect=True))
    lay = s.core.random_layout(random.Random(1), 512, 0)
    assert not lay.indirect


def test_chain_longer_than_the_queue_is_refused():
    """Such a request could never be submitted: an error, not an endless wait for room."""
    s = Session(random.Random(0), queue_size=4)
    with pytest.raises(ValueError, match=r"a chain of 5 descriptors is longer than the queue "
                                         r"size 4"):
        s.submit(0, s.core.write_args(0, bytes(SECTOR)), Layout((16, 100, 100, 312), (1,)))
    assert not s.core.inflight[0] and s.vqs[0].num_free == 4


@pytest.mark.parametrize("event_idx", [False, True])
def test_many_in_flight_on_several_queues(event_idx):
    """Queues filled to QueueFull with random requests and layouts, served in random order and
    reaped in random order; every completion matches what the shadow disk says."""
    p = DeviceParams(num_queues=3)
    s = Session(seeded(), p, event_idx=event_idx, queue_size=16)
    rng, core = s.rng, s.core
    submitted = 0
    for _ in range(400):
        q = rng.randrange(3)
        args = s.random_request(q)
        lay = layout_for(s, q, args)
        if not core.can_submit(q, lay):
            before = s.mem.allocated
            with pytest.raises(QueueFull):
                s.submit(q, args, lay)
            assert s.mem.allocated == before       # nothing allocated for a refused request
            s.kick(rng.randrange(3))
            s.reap(rng.randrange(3))
            continue
        s.submit(q, args, lay)
        submitted += 1
        if rng.random() < 0.2:
            s.kick(rng.randrange(3))
        if rng.random() < 0.2:
            s.reap(rng.randrange(3))
    for q in range(3):
        s.run_queue(q)
    assert not s.expect and core.completed == submitted
    assert s.model.blk.disk == s.shadow


@pytest.mark.parametrize("event_idx", [False, True])
def test_ring_wrap(event_idx):
    """More than 65536 requests through a queue of 4: avail and used idx wrap, descriptors are
    recycled, and the interrupt decisions follow the driver's NO_INTERRUPT / used_event."""
    s = Session(seeded(), event_idx=event_idx, queue_size=4, queues=1)
    rng, core, vq = s.rng, s.core, s.vqs[0]
    total, wrapped, irqs = 65536 + 700, False, 0
    reaped_all = True
    done = 0
    while done < total:
        before = vq.avail_idx
        suppress = rng.random() < 0.1
        vq.set_no_interrupt(suppress)
        added = 0
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.02:
                n = rng.randint(1, 2)
                args = rng.choice([core.read_args(rng.randrange(2000), n),
                                   core.write_args(rng.randrange(2000), rng.randbytes(
                                       n * SECTOR))])
            else:
                args = core.flush_args()
            lay = layout_for(s, 0, args)
            if not core.can_submit(0, lay):
                break
            s.submit(0, args, lay)
            added += 1
        if not added:
            # Too few free descriptors for the layout drawn: reap first.
            done += len(s.reap(0))
            reaped_all = True
            continue
        needed, batch = s.kick(0)
        # The device drained the ring and asked to be told about the next entry.
        assert needed
        if event_idx:
            want_irq = not suppress and reaped_all
        else:
            want_irq = not suppress
        assert batch.interrupt == want_irq, (done, suppress, reaped_all)
        irqs += batch.interrupt
        # Reap only now and then with EVENT_IDX: a driver behind on reaping gets no interrupt.
        reaped_all = not event_idx or rng.random() < 0.7
        if reaped_all or len(core.inflight[0]) == vq.size:
            done += len(s.reap(0))
            reaped_all = True
        wrapped |= vq.avail_idx < before
    assert wrapped and s.reap(0) == [] and not core.inflight[0]
    done_total = core.completed
    assert vq.avail_idx == vq.last_used == done_total & 0xffff
    assert s.model.blk.rings[0].used_idx == done_total & 0xffff
    assert vq.num_free == 4 and 0 < irqs < s.batches
    assert s.model.blk.disk == s.shadow


def test_used_event_delays_the_interrupt():
    """set_used_event(idx): the device notifies only when it writes used entry idx."""
    s = Session(random.Random(0), event_idx=True, queue_size=8, queues=1)
    vq = s.vqs[0]
    vq.set_used_event(3)
    irq = []
    for _ in range(5):
        s.submit(0, s.core.flush_args())
        irq.append(s.kick(0)[1].interrupt)
    assert irq == [False, False, False, True, False]
    assert len(s.reap(0)) == 5 and vq.used_event == 5
