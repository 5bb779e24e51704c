"""The ordering checker (``tb/ordering.py``) must catch a device that makes its results visible
in the wrong order.

Each test plays a device completing requests the driver (``tb/blk.py``'s synchronous core) made
available in host memory, as the DUT's TLPs, through the scoreboard, in the order a correct
device uses: read ``avail->idx``, the ring entry, the descriptors, the indirect table and the
header; write the data, the status byte, the used element, ``used->idx``; then the MSI-X
message. That passes; then one step moves, and the checker must name the rule that breaks.
(The system tests only ever show it a well-behaved device; these prove it can fail.)
"""

import random
import struct

import pytest

from model import regmap as rm
from tb.blk import BlkCore, Layout
from tb.ordering import OrderingChecker
from tb.seed import seed_from_env
from tb.virtqueue import HostMemory, SplitVirtqueue
from .test_tlp_checker import board, dma, dut_read, dut_write, send   # noqa: F401 (fixtures)


QSIZE = 16
MSI_ADDR = 0xfee0_0000
_DESC = struct.Struct("<QIHH")


class World:
    """Host memory with queue ``0`` (and ``1``), the scoreboard with the checker, and a
    device that does each step of a request as TLPs on demand."""
    def __init__(self, sb, indirect=False):
        self.sb = sb
        self.mem = HostMemory.from_bytearray(1 << 20)
        self.vqs = [SplitVirtqueue(self.mem, QSIZE, q) for q in range(2)]
        model = sb.model
        for q, vq in enumerate(self.vqs):
            qs = model.queues[q]
            qs.size = QSIZE
            qs.desc, qs.driver, qs.device = vq.rings
            qs.msix_vector = q + 1
            qs.enable = 1
        model.msix_config = 0
        for k, e in enumerate(model.msix_table[:3]):
            e.addr, e.data, e.ctrl = MSI_ADDR, 0x40 + k, 0
        self.checker = OrderingChecker(model, self.mem.read, sb.error)
        sb.ordering = self.checker
        features = 1 << rm.VIRTIO_RING_F_INDIRECT_DESC if indirect else 0
        self.core = BlkCore(self.mem, self.vqs, features)
        self.used = [0, 0]              # the device's used->idx per queue
        self.tag = 0

    # -- the driver ---------------------------------------------------------------------------

    def read_request(self, q=0, nbytes=64, layout=None):
        """An IN request of ``nbytes`` made available on queue ``q``."""
        return self.core.submit(q, rm.VIRTIO_BLK_T_IN, 0, b"", nbytes, layout)

    # -- the device, a step at a time ---------------------------------------------------------

    def read(self, addr, n):
        """A read of ``n`` bytes, cut at 4 KB boundaries as a DMA engine must."""
        while True:
            k = min(n, 4096 - addr % 4096)
            self.tag = (self.tag + 1) % 32
            assert send(self.sb, dut_read(addr, k, tag=self.tag)) is not None
            # The root complex's answer: the read is done (the checker judges the request).
            self.sb.dma_pending.clear()
            addr, n = addr + k, n - k
            if not n:
                return

    def write(self, addr, data):
        """A write, cut at 4 KB boundaries; it lands in host memory too, as the root complex
        would put it there (the driver reaps from it)."""
        data = bytes(data)
        if addr != MSI_ADDR:
            self.mem.write(addr, data)
        mps = self.sb.model.max_payload_size
        while True:
            k = min(len(data), 4096 - addr % 4096, mps - addr % 4)
            assert send(self.sb, dut_write(addr, data[:k])) is not None
            addr, data = addr + k, data[k:]
            if not data:
                return

    def fetch(self, req):
        """``avail->idx``, the ring entry, 8 descriptors from the head, the indirect table,
        the readable buffers."""
        vq = self.vqs[req.q]
        self.read(vq.avail_addr, 4)
        slot = (vq.avail_idx - 1) % vq.size
        self.read(vq.avail_addr + 4 + 2 * slot, 2)
        n = min(8, vq.size - req.head)
        self.read(vq.desc_addr + 16 * req.head, 16 * n)
        addr, length, flags, _ = _DESC.unpack(self.mem.read(vq.desc_addr + 16 * req.head, 16))
        if flags & rm.VIRTQ_DESC_F_INDIRECT:
            self.read(addr, length)
        for a, ln in req.readable:
            self.read(a, ln)

    def data(self, req):
        """The input data into the device-writable buffers (all but the status byte)."""
        left = req.in_len
        for a, ln in req.writable:
            k = min(ln, left)
            if k:
                self.write(a, bytes([0x5a]) * k)
            left -= k

    def status(self, req, value=rm.VIRTIO_BLK_S_OK):
        a, ln = [w for w in req.writable if w[1]][-1]
        self.write(a + ln - 1, bytes([value]))

    def element(self, req, slot=None, head=None):
        vq = self.vqs[req.q]
        slot = self.used[req.q] % vq.size if slot is None else slot
        head = req.head if head is None else head
        self.write(vq.used_addr + 4 + 8 * slot, struct.pack("<II", head, req.in_len + 1))

    def index(self, q=0, by=1):
        self.used[q] = (self.used[q] + by) & 0xffff
        self.write(self.vqs[q].used_addr + 2, struct.pack("<H", self.used[q]))

    def notify(self, q=0):
        self.write(MSI_ADDR, (0x40 + q + 1).to_bytes(4, "little"))

    def complete(self, req):
        """The whole of a request, in the right order."""
        self.fetch(req)
        self.data(req)
        self.status(req)
        self.element(req)
        self.index(req.q)
        self.notify(req.q)

    @property
    def errors(self):
        return [e for e in self.sb.errors if e.startswith("ORDERING")]


@pytest.fixture
def world(dma):
    return World(dma)


def _named(world, words):
    assert any(words in e for e in world.errors), world.sb.errors
    assert world.checker.violations >= 1


def test_in_order_device_passes(world):
    for n in (64, 512, 0):
        world.complete(world.read_request(nbytes=n))
    world.complete(world.read_request(q=1))
    assert world.sb.errors == []
    c = world.checker.counts
    assert (c["elements"], c["indices"], c["notifications"]) == (4, 4, 4) and c["reads"] >= 16


def test_indirect_and_split_chains_pass(dma):
    w = World(dma, indirect=True)
    w.complete(w.read_request(layout=Layout((16,), (32, 32, 1), indirect=True)))
    w.complete(w.read_request(layout=Layout((8, 8), (64, 1), indirect=True, direct_prefix=1)))
    w.complete(w.read_request(layout=Layout((10, 6), (20, 44, 1))))
    assert dma.errors == []


def test_index_before_element(world):
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.status(req)
    world.index()
    world.element(req, slot=0)
    _named(world, "publishing used->ring[0] (entry 0), before writing that element")


def test_index_in_the_same_write_as_its_element(world):
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.status(req)
    vq = world.vqs[0]
    world.write(vq.used_addr + 2, struct.pack("<HII", 1, req.head, 65))
    _named(world, "in the same write as used->ring[0]")


def test_element_before_status(world):
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.element(req)
    world.status(req)
    world.index()
    _named(world, f"for head {req.head} before that request's status byte")


def test_data_after_status(world):
    req = world.read_request()
    world.fetch(req)
    world.status(req)
    world.data(req)
    _named(world, "after its status byte")


def test_data_after_element(world):
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.status(req)
    world.element(req)
    world.data(req)
    _named(world, "after the used element that returned the chain")


def test_element_for_a_head_not_in_flight(world):
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.status(req)
    world.element(req, head=req.head + 5)
    _named(world, f"with id {req.head + 5}, which is not the head of a chain in flight")


def test_notification_before_index(world):
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.status(req)
    world.element(req)
    world.notify()
    world.index()
    _named(world, "MSI-X message of vector 1 (queue 0) with no used->idx written")


def test_second_notification_without_a_new_index(world):
    world.complete(world.read_request())
    world.notify()
    _named(world, "with no used->idx written since the last one")


def test_unannounced_lists_queues_with_an_index_after_their_last_notification(world):
    # What random_workload checks at the end: no queue left with used->idx written after its
    # last notification (a missing interrupt).
    for q in (0, 1):
        req = world.read_request(q=q)
        world.fetch(req)
        world.data(req)
        world.status(req)
        world.element(req)
        world.index(q)
    assert world.checker.unannounced() == [0, 1]
    world.notify(q=0)
    assert world.checker.unannounced() == [1]
    world.notify(q=1)
    assert world.checker.unannounced() == []
    assert world.sb.errors == []


def test_configuration_notification_is_not_a_queue_notification(world):
    world.complete(world.read_request())
    world.write(MSI_ADDR, (0x40).to_bytes(4, "little"))     # vector 0: msix_config
    assert world.sb.errors == []


def test_intx_before_index(world):
    world.sb.model.queues[0].msix_vector = rm.VIRTIO_MSI_NO_VECTOR
    req = world.read_request()
    world.fetch(req)
    world.data(req)
    world.status(req)
    world.element(req)
    world.checker.intx_asserted()
    _named(world, "INTA# asserted with no used->idx written")
    world.sb.errors.clear()
    world.index()
    world.checker.intx_asserted()
    assert world.sb.errors == []


def test_descriptor_read_before_publication(world):
    req = world.read_request()
    world.fetch(req)
    free = max(req.head + len(req.readable) + len(req.writable), 10)
    world.read(world.vqs[0].desc_addr + 16 * free, 16)
    _named(world, f"read descriptor {free} of queue 0, which no chain made available holds")


def test_descriptor_read_after_return(world):
    req = world.read_request()
    world.complete(req)
    world.read(world.vqs[0].desc_addr + 16 * req.head, 16)
    _named(world, f"read descriptor {req.head} of queue 0")


def test_masked_head_is_caught(world):
    """A device that masks an out-of-range head with the queue size reads a descriptor no
    chain holds (the malformed ring of ``malformed_head_out_of_range``)."""
    vq = world.vqs[0]
    world.mem.write16(vq.avail_addr + 4, QSIZE)           # head 16 in a queue of 16
    world.mem.write16(vq.avail_addr + 2, 1)
    world.read(vq.avail_addr + 4, 2)
    world.read(vq.desc_addr, 16 * 8)
    _named(world, "read descriptor 0 of queue 0")


def test_avail_entry_read_before_publication(world):
    world.read_request()
    vq = world.vqs[0]
    world.read(vq.avail_addr + 4 + 2 * 1, 2)              # entry 1: avail->idx is 1
    _named(world, "read avail->ring[1] of queue 0, which avail->idx (1) has not published")


def test_avail_header_and_used_event_are_always_readable(world):
    vq = world.vqs[0]
    world.read(vq.avail_addr, 4)
    world.read(vq.avail_addr + 4 + 2 * QSIZE, 2)
    assert world.sb.errors == []


def test_indirect_table_read_after_return(dma):
    w = World(dma, indirect=True)
    req = w.read_request(layout=Layout((16,), (64, 1), indirect=True))
    w.complete(req)
    addr, length, _, _ = _DESC.unpack(w.mem.read(w.vqs[0].desc_addr + 16 * req.head, 16))
    w.read(addr, length)
    _named(w, f"in the indirect table of queue 0 head {req.head}, after that chain's used "
              f"element")


def test_split_descriptor_read_continues(world):
    """A descriptor read split by the DMA engine at a Max_Read_Request_Size boundary: the
    second TLP starts on an entry no chain holds, but continues the first."""
    vq = world.vqs[0]
    req = world.read_request()
    mrrs = world.sb.model.max_read_request_size
    start = vq.desc_addr + 16 * req.head
    cut = (start // mrrs + 1) * mrrs
    world.read(vq.avail_addr, 4)
    world.read(start, min(cut - start, 128))
    if cut - start < 128:
        world.read(cut, 128 - (cut - start))
    assert world.sb.errors == []
    # The same read again later, not right after the first part: a read of its own.
    world.read(start + 16 * 9, 16)
    _named(world, "read descriptor")


def test_reset_forgets(world):
    req = world.read_request()
    world.fetch(req)
    world.status(req)
    world.sb.model.virtio_reset()       # device_status = 0: the queues are disabled
    world.checker.device_reset()
    world.data(req)                     # a transfer that ran on through the reset
    world.index()
    assert world.sb.errors == []


def test_random_legal_orders_pass():
    """Several requests in flight on two queues, completed out of order and interleaved the
    way a pipelined device may: buffers and status before each element, elements before the
    index that publishes them (several at once), a notification after each index. No
    violation may be reported. ``SEED`` replays."""
    import logging
    from model.device import VirtioBlkModel
    from model.params import DeviceParams
    from tb.scoreboard import Scoreboard
    from .test_tlp_checker import set_command, cfg_write
    seed = seed_from_env()
    rng = random.Random(seed)
    sb = Scoreboard(VirtioBlkModel(DeviceParams()), logging.getLogger("test"))
    cfg_write(sb, 0x3c // 4, 0, nbytes=1)
    set_command(sb, rm.CMD_MEMORY_SPACE | rm.CMD_BUS_MASTER, tag=1)
    w = World(sb, indirect=True)
    pending = [[], []]          # per queue: [req, steps done: 0 fetched .. 3 element]
    done = 0
    while done < 200:
        q = rng.randrange(2)
        layout = rng.choice([None, Layout((16,), (8, 8, 1), indirect=True),
                             Layout((8, 8), (16, 1))])
        if w.core.can_submit(q, layout or Layout.simple(0, 16, True)) and rng.random() < 0.4:
            req = w.read_request(q=q, nbytes=16, layout=layout)
            w.fetch(req)
            pending[q].append([req, 0])
            continue
        if not pending[q]:
            continue
        item = rng.choice(pending[q])
        req, steps = item
        if steps == 0:
            w.data(req)
        elif steps == 1:
            w.status(req)
        elif steps == 2:
            # Elements go into the used ring in completion order, after the index.
            slot = (w.used[q] + sum(1 for _, s in pending[q] if s == 3)) % QSIZE
            w.element(req, slot=slot)
        item[1] = min(steps + 1, 3)
        ready = [it for it in pending[q] if it[1] == 3]
        if ready and rng.random() < 0.5:
            # One index for every element written so far, then the notification.
            w.index(q, by=len(ready))
            w.notify(q)
            for it in ready:
                pending[q].remove(it)
            assert {r.head for r in w.core.reap(q)} == {it[0].head for it in ready}
            done += len(ready)
    assert sb.errors == [], f"seed {seed}: {sb.errors[:3]}"


def _clocked(world):
    """The checker with a clock the test sets (``world.t``) and the timelines it reports."""
    world.t, timelines = 0, []
    world.checker.now = lambda: world.t
    world.checker.on_timeline = lambda q, head, times: timelines.append((q, head, dict(times)))
    return timelines


def test_timeline_of_an_in_request(world):
    # make bench's per-request breakdown: fetch from the avail entry, data from the first
    # write into the buffers to the last, then status, element and the index that publishes it.
    timelines = _clocked(world)
    req = world.read_request(nbytes=512, layout=Layout((16,), (256, 256, 1)))
    world.t = 10
    world.fetch(req)
    (a0, _), (a1, _) = req.writable[:2]
    world.t = 20
    world.write(a0, bytes(256))
    world.t = 25
    world.write(a1, bytes(256))
    world.t = 30
    world.status(req)
    assert timelines == []
    world.t = 40
    world.element(req)
    world.t = 50
    world.index()
    assert world.sb.errors == []
    assert timelines == [(0, req.head, dict(fetch=10, data_first=20, data_last=25, status=30,
                                            element=40, published=50))]


def test_timeline_of_an_out_request_skips_the_header(world):
    timelines = _clocked(world)
    req = world.core.submit(0, rm.VIRTIO_BLK_T_OUT, 0, bytes(256), 0,
                            Layout((16, 256), (1,)))
    vq = world.vqs[0]
    world.t = 5
    world.read(vq.desc_addr + 16 * req.head, 16 * 2)      # the descriptors: fetch starts
    (hdr, n_hdr), (data, n_data) = req.readable
    world.t = 6
    world.read(hdr, n_hdr)                                 # the header is not data
    world.t = 7
    world.read(data, n_data)
    world.t = 8
    world.status(req)
    world.element(req)
    world.index()
    assert world.sb.errors == []
    assert timelines == [(0, req.head, dict(fetch=5, data_first=7, data_last=7, status=8,
                                            element=8, published=8))]


def test_no_timelines_without_a_clock(world):
    # The system tests' checker has no clock: nothing is kept.
    req = world.read_request()
    world.complete(req)
    assert world.checker.now is None and world.sb.errors == []
