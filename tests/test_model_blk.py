# Ref: OASIS virtio 1.2 sections 2.1, 2.7 (Split Virtqueues), 5.2.6 (Block Device Operation)
"""Unit tests of the request golden model (:mod:`model.blk`) and its hook in
:class:`model.device.VirtioBlkModel`.

Rings, descriptor tables, request headers and buffers are laid out by hand in a bytearray that
stands for host memory, the way a driver lays them out; the tests then look at what the model
wrote there (and what it did not write) and at the disk. Layout and values come from the spec,
not from :mod:`model.regmap`.
"""

import random
import re
import struct

import pytest

from model import regmap as rm
from model.blk import BlkProcessor, Completion, vring_need_event
from model.device import VirtioBlkModel, QueueState
from model.params import DeviceParams
from tb.seed import seed_from_env


# [VIRTIO-1.2 2.7.5] descriptor flags; [2.7.6] avail flags.
NEXT, WRITE, INDIRECT = 1, 2, 4
NO_INTERRUPT = 1
# [VIRTIO-1.2 5.2.6] request types and status values.
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_GET_LIFETIME, T_DISCARD, T_WRITE_ZEROES, T_SECURE_ERASE = \
    0, 1, 4, 8, 10, 11, 13, 14
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
UNMAP = 1
# [VIRTIO-1.2 5.2.3, 6] feature bits.
F_DISCARD, F_WRITE_ZEROES, F_INDIRECT_DESC, F_EVENT_IDX, F_VERSION_1 = 13, 14, 28, 29, 32

FEATURES = 1 << F_VERSION_1 | 1 << F_INDIRECT_DESC | 1 << F_DISCARD | 1 << F_WRITE_ZEROES
FEATURES_EI = FEATURES | 1 << F_EVENT_IDX

CAPACITY = 64
PARAMS = DeviceParams(capacity=CAPACITY, num_queues=1,
                      features=DeviceParams().features & ~(1 << rm.VIRTIO_BLK_F_MQ))
SERIAL = b"virtio-blk-ep" + bytes(7)
FILL = 0xa5     # what buffers hold before the device writes them


# -- host memory and a hand-made driver --------------------------------------------------------

class Memory:
    """Host memory: a bytearray; the device's writes are logged."""

    def __init__(self, size=1 << 20):
        self.b = bytearray(size)
        self.writes = []
        self.on_read = None

    def read(self, addr, n):
        assert 0 <= addr and addr + n <= len(self.b), f"read {n} at {addr:#x} out of memory"
        data = bytes(self.b[addr:addr + n])
        if self.on_read:
            self.on_read(addr, n)
        return data

    def write(self, addr, data):
        assert 0 <= addr and addr + len(data) <= len(self.b), f"write at {addr:#x} out of memory"
        self.b[addr:addr + len(data)] = data
        self.writes.append((addr, bytes(data)))

    # Host-side access, not logged.
    def poke(self, addr, data):
        self.b[addr:addr + len(data)] = data

    def peek(self, addr, n):
        return bytes(self.b[addr:addr + n])

    def written(self):
        """Every byte address the device wrote."""
        return {a + i for a, d in self.writes for i in range(len(d))}


def span(addr, n):
    return set(range(addr, addr + n))


class Request:
    """Buffers of one request: ``out`` (header + data, device-readable) and ``inb`` (data +
    status, device-writable), each split at the given piece lengths."""

    def __init__(self, head, out_pieces, in_pieces):
        self.head, self.out_pieces, self.in_pieces = head, out_pieces, in_pieces

    def in_bytes(self, mem):
        return b"".join(mem.peek(a, n) for a, n in self.in_pieces)

    def status(self, mem):
        return self.in_bytes(mem)[-1]

    def status_addr(self):
        a, n = [p for p in self.in_pieces if p[1]][-1]
        return a + n - 1


class Driver:
    """The driver side of one split virtqueue [VIRTIO-1.2 2.7], in :class:`Memory`."""

    def __init__(self, mem, size=8, desc=0x1000, driver=0x2000, device=0x3000):
        self.mem = mem
        self.queue = QueueState(size, enable=1, desc=desc, driver=driver, device=device)
        self.size = size
        self.next_desc = 0
        self.avail_idx = 0
        self.heap = 0x10000

    def alloc(self, n, fill=FILL):
        addr = self.heap
        self.heap += (n + 15) & ~15 or 16
        self.mem.poke(addr, bytes([fill]) * n)
        return addr

    def set_avail_idx(self, idx):
        self.avail_idx = idx & 0xffff
        self.mem.poke(self.queue.driver + 2, struct.pack("<H", self.avail_idx))

    def put_desc(self, i, addr, length, flags=0, nxt=0, table=None):
        base = self.queue.desc if table is None else table
        self.mem.poke(base + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def chain(self, descs):
        """``descs``: ``[(addr, len, flags)]`` into consecutive free table entries, NEXT added
        on all but the last; returns the head."""
        idx = [(self.next_desc + k) % self.size for k in range(len(descs))]
        self.next_desc = (self.next_desc + len(descs)) % self.size
        for k, (addr, length, flags) in enumerate(descs):
            last = k == len(descs) - 1
            self.put_desc(idx[k], addr, length, flags | (0 if last else NEXT),
                          0 if last else idx[k + 1])
        return idx[0]

    def indirect_table(self, descs):
        """An indirect table holding ``descs`` chained in order; returns ``(addr, len)``."""
        table = self.alloc(16 * len(descs), fill=0)
        for k, (addr, length, flags) in enumerate(descs):
            last = k == len(descs) - 1
            self.put_desc(k, addr, length, flags | (0 if last else NEXT), 0 if last else k + 1,
                          table=table)
        return table, 16 * len(descs)

    def push(self, head):
        """[VIRTIO-1.2 2.7.13] avail->ring[idx % size] = head; idx += 1."""
        self.mem.poke(self.queue.driver + 4 + 2 * (self.avail_idx % self.size),
                      struct.pack("<H", head))
        self.set_avail_idx(self.avail_idx + 1)

    def request(self, op, sector=0, data=b"", in_len=1, out_split=None, in_split=None,
                indirect=False, payload=None):
        """Build, chain and push one request. ``data`` follows the header (OUT data or
        discard segments, or ``payload`` bytes); ``in_len`` counts the status byte. The splits
        give piece lengths (summing to 16 + len(data) and to ``in_len``)."""
        out = struct.pack("<IIQ", op, 0, sector) + (payload if payload is not None else data)
        out_split = out_split or [len(out)]
        in_split = in_split if in_split is not None else [in_len]
        assert sum(out_split) == len(out) and sum(in_split) == in_len
        out_pieces, in_pieces, pos = [], [], 0
        for n in out_split:
            a = self.alloc(n)
            self.mem.poke(a, out[pos:pos + n])
            out_pieces.append((a, n))
            pos += n
        for n in in_split:
            in_pieces.append((self.alloc(n), n))
        descs = [(a, n, 0) for a, n in out_pieces] + [(a, n, WRITE) for a, n in in_pieces]
        if indirect:
            table, length = self.indirect_table(descs)
            head = self.chain([(table, length, INDIRECT)])
        else:
            head = self.chain(descs)
        self.push(head)
        return Request(head, out_pieces, in_pieces)

    def used(self, i):
        """Used element ``i`` (ring slot ``i % size``) as ``(id, len)``."""
        return struct.unpack("<II", self.mem.peek(self.queue.device + 4 + 8 * (i % self.size), 8))

    def used_idx(self):
        return struct.unpack("<H", self.mem.peek(self.queue.device + 2, 2))[0]

    def avail_event_addr(self):
        return self.queue.device + 4 + 8 * self.size

    def avail_event(self):
        return struct.unpack("<H", self.mem.peek(self.avail_event_addr(), 2))[0]

    def set_flags(self, flags):
        self.mem.poke(self.queue.driver, struct.pack("<H", flags))

    def set_used_event(self, value):
        self.mem.poke(self.queue.driver + 4 + 2 * self.size, struct.pack("<H", value))


def setup(params=PARAMS, size=8):
    mem = Memory()
    return BlkProcessor(params), mem, Driver(mem, size=size)


def run(blk, mem, drv, features=FEATURES):
    return blk.process(0, mem, drv.queue, features)


def pattern(n, seed=1):
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(n))


def fill_disk(blk, seed=7):
    blk.disk[:] = pattern(len(blk.disk), seed)


def seg(sector, num, flags=0):
    """[VIRTIO-1.2 5.2.6] struct virtio_blk_discard_write_zeroes."""
    return struct.pack("<QII", sector, num, flags)


# -- parameters and constants ------------------------------------------------------------------

def test_regmap_constants():
    # Values from the spec and Linux include/uapi/linux/virtio_{blk,ring}.h.
    assert (rm.VIRTIO_BLK_T_IN, rm.VIRTIO_BLK_T_OUT, rm.VIRTIO_BLK_T_FLUSH, rm.VIRTIO_BLK_T_GET_ID,
            rm.VIRTIO_BLK_T_GET_LIFETIME, rm.VIRTIO_BLK_T_DISCARD, rm.VIRTIO_BLK_T_WRITE_ZEROES,
            rm.VIRTIO_BLK_T_SECURE_ERASE) == (0, 1, 4, 8, 10, 11, 13, 14)
    assert (rm.VIRTIO_BLK_S_OK, rm.VIRTIO_BLK_S_IOERR, rm.VIRTIO_BLK_S_UNSUPP) == (0, 1, 2)
    assert (rm.VIRTQ_DESC_F_NEXT, rm.VIRTQ_DESC_F_WRITE, rm.VIRTQ_DESC_F_INDIRECT) == (1, 2, 4)
    assert rm.VIRTQ_AVAIL_F_NO_INTERRUPT == 1 and rm.VIRTQ_USED_F_NO_NOTIFY == 1
    assert rm.VIRTIO_BLK_ID_BYTES == 20 and rm.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP == 1
    assert rm.BLK_OUTHDR_BYTES == 16 and rm.BLK_DISCARD_SEG_BYTES == 16


def test_serial_bytes():
    assert DeviceParams().serial_bytes() == SERIAL
    # [VIRTIO-1.2 5.2.6] A 20-byte string has no NUL terminator.
    assert DeviceParams(serial="A" * 20).serial_bytes() == b"A" * 20
    assert DeviceParams(serial="").serial_bytes() == bytes(20)


@pytest.mark.parametrize("serial", ["A" * 21, "caf\u00e9", b"bytes"])
def test_serial_validated(serial):
    with pytest.raises(ValueError, match=re.escape(
            f"serial must be an ASCII string of at most 20 bytes [VIRTIO-1.2 5.2.6], "
            f"not {serial!r}")):
        DeviceParams(serial=serial)


@pytest.mark.parametrize("size", [0, 6, 65536])
def test_queue_size_checked(size):
    blk, mem, drv = setup()
    drv.queue.size = size
    with pytest.raises(ValueError, match=re.escape(
            f"queue 0 size must be a power of two from 1 to 32768 [VIRTIO-1.2 2.7], not {size}")):
        run(blk, mem, drv)


# -- each request type, OK path ----------------------------------------------------------------

def test_out_then_in():
    blk, mem, drv = setup()
    data = pattern(1024)
    w = drv.request(T_OUT, sector=5, data=data)
    b = run(blk, mem, drv)
    assert b.completions == [Completion(head=w.head, used_len=1, status=S_OK, op=T_OUT,
                                        sector=5, nbytes=1024)]
    assert blk.disk[5 * 512:7 * 512] == data
    assert blk.disk[:5 * 512] == bytes(5 * 512) and blk.disk[7 * 512:] == bytes(len(blk.disk)
                                                                                - 7 * 512)
    assert w.status(mem) == S_OK
    assert drv.used_idx() == 1 and drv.used(0) == (w.head, 1)

    r = drv.request(T_IN, sector=5, in_len=1025)
    b = run(blk, mem, drv)
    assert b.completions == [Completion(r.head, 1025, S_OK, T_IN, 5, 1024)]
    assert r.in_bytes(mem) == data + bytes([S_OK])
    # [VIRTIO-1.2 2.7.8] used len: all device-writable bytes.
    assert drv.used_idx() == 2 and drv.used(1) == (r.head, 1025)


def test_in_of_zero_sectors_is_ok_at_capacity():
    blk, mem, drv = setup()
    r = drv.request(T_IN, sector=CAPACITY, in_len=1)
    assert run(blk, mem, drv).completions == [Completion(r.head, 1, S_OK, T_IN, CAPACITY, 0)]
    assert r.status(mem) == S_OK


def test_header_split_and_status_sharing_a_descriptor_with_data():
    blk, mem, drv = setup(size=16)
    data = pattern(1536, 3)
    # Header in 5 + 0 + 11 bytes, data in 0 + 300 + 1000 + 236, zero-length descriptors allowed.
    w = drv.request(T_OUT, sector=9, data=data, out_split=[5, 0, 11 + 0, 300, 1000, 236])
    assert run(blk, mem, drv).completions[0].status == S_OK
    assert blk.disk[9 * 512:12 * 512] == data
    # IN: 1536 data bytes + status in [100, 0, 1437]: the status shares the last descriptor;
    # a zero-length writable descriptor at the end holds nothing.
    r = drv.request(T_IN, sector=9, in_len=1537, out_split=[8, 8], in_split=[100, 0, 1437, 0])
    b = run(blk, mem, drv)
    assert b.completions == [Completion(r.head, 1537, S_OK, T_IN, 9, 1536)]
    assert r.in_bytes(mem) == data + bytes([S_OK])
    assert mem.peek(r.status_addr(), 1) == bytes([S_OK])


def test_flush():
    blk, mem, drv = setup()
    r = drv.request(T_FLUSH, in_len=1)
    assert run(blk, mem, drv).completions == [Completion(r.head, 1, S_OK, T_FLUSH, 0, 0)]
    assert r.status(mem) == S_OK


@pytest.mark.parametrize("in_len", [21, 9, 1, 31])
def test_get_id(in_len):
    blk, mem, drv = setup()
    r = drv.request(T_GET_ID, in_len=in_len, in_split=[in_len - 1, 1] if in_len > 1 else [1])
    b = run(blk, mem, drv)
    n = min(20, in_len - 1)
    assert b.completions == [Completion(r.head, in_len, S_OK, T_GET_ID, 0, n)]
    got = r.in_bytes(mem)
    # min(20, W - 1) bytes of the ID; the bytes between it and the status stay untouched.
    assert got == SERIAL[:n] + bytes([FILL]) * (in_len - 1 - n) + bytes([S_OK])


def test_get_id_custom_serial():
    blk, mem, drv = setup(PARAMS.replace(serial="S/N 0123456789abcdef"))
    r = drv.request(T_GET_ID, in_len=21)
    run(blk, mem, drv)
    assert r.in_bytes(mem) == b"S/N 0123456789abcdef" + bytes([S_OK])


@pytest.mark.parametrize("op, flags", [(T_DISCARD, 0), (T_WRITE_ZEROES, 0),
                                       (T_WRITE_ZEROES, UNMAP)])
def test_discard_and_write_zeroes_zero_the_range(op, flags):
    blk, mem, drv = setup()
    fill_disk(blk)
    before = bytes(blk.disk)
    r = drv.request(op, data=seg(10, 3, flags))
    b = run(blk, mem, drv)
    assert b.completions == [Completion(r.head, 1, S_OK, op, 0, 3 * 512)]
    assert blk.disk[10 * 512:13 * 512] == bytes(3 * 512)
    assert blk.disk[:10 * 512] == before[:10 * 512]
    assert blk.disk[13 * 512:] == before[13 * 512:]


def test_discard_several_segments():
    blk, mem, drv = setup(PARAMS.replace(max_discard_seg=3))
    fill_disk(blk)
    before = bytes(blk.disk)
    # Segments split across descriptors, up to the last sector of the disk.
    payload = seg(1, 1) + seg(CAPACITY - 2, 2) + seg(20, 0)
    r = drv.request(T_DISCARD, data=payload, out_split=[16, 7, 20, 21])
    assert run(blk, mem, drv).completions[0].status == S_OK
    expect = bytearray(before)
    expect[512:1024] = bytes(512)
    expect[(CAPACITY - 2) * 512:] = bytes(1024)
    assert blk.disk == expect


# -- status rules ------------------------------------------------------------------------------

def _status_case(params, features, op, sector=0, data=b"", in_len=1):
    blk, mem, drv = setup(params)
    fill_disk(blk)
    before = bytes(blk.disk)
    r = drv.request(op, sector=sector, data=data, in_len=in_len)
    b = run(blk, mem, drv, features)
    return blk, mem, drv, r, b, before


RO = PARAMS.replace(read_only=True)
NO_DISCARD = FEATURES & ~(1 << F_DISCARD)
NO_WZ = FEATURES & ~(1 << F_WRITE_ZEROES)
FOUR_SEG = PARAMS.replace(max_discard_seg=4, max_write_zeroes_seg=4)

STATUS_CASES = {
    # IN: data length W-1 a multiple of 512, within capacity.
    "in-not-sector-multiple":  (PARAMS, FEATURES, T_IN, 0, b"", 1 + 511, S_IOERR),
    "in-past-capacity":        (PARAMS, FEATURES, T_IN, CAPACITY - 1, b"", 1 + 1024, S_IOERR),
    "in-zero-past-capacity":   (PARAMS, FEATURES, T_IN, CAPACITY + 1, b"", 1, S_IOERR),
    "in-sector-wraps-64-bit":  (PARAMS, FEATURES, T_IN, (1 << 64) - 1, b"", 1 + 1024, S_IOERR),
    "in-last-sector":          (PARAMS, FEATURES, T_IN, CAPACITY - 1, b"", 1 + 512, S_OK),
    "in-read-only-ok":         (RO, FEATURES, T_IN, 0, b"", 1 + 512, S_OK),
    # OUT: data length R-16.
    "out-not-sector-multiple": (PARAMS, FEATURES, T_OUT, 0, bytes(513), 1, S_IOERR),
    "out-past-capacity":       (PARAMS, FEATURES, T_OUT, CAPACITY - 1, bytes(1024), 1, S_IOERR),
    "out-sector-wraps-64-bit": (PARAMS, FEATURES, T_OUT, (1 << 64) - 2, bytes(1024), 1, S_IOERR),
    "out-read-only":           (RO, FEATURES, T_OUT, 0, bytes(512), 1, S_IOERR),
    "out-zero-read-only":      (RO, FEATURES, T_OUT, 0, b"", 1, S_IOERR),
    "out-last-sector":         (PARAMS, FEATURES, T_OUT, CAPACITY - 1, bytes(512), 1, S_OK),
    # Types the device does not implement.
    "get-lifetime":            (PARAMS, FEATURES, T_GET_LIFETIME, 0, b"", 1 + 6, S_UNSUPP),
    "secure-erase":            (PARAMS, FEATURES, T_SECURE_ERASE, 0, seg(0, 1), 1, S_UNSUPP),
    "type-2":                  (PARAMS, FEATURES, 2, 0, b"", 1, S_UNSUPP),
    "type-0xffffffff":         (PARAMS, FEATURES, 0xffffffff, 0, b"", 1, S_UNSUPP),
    # DISCARD.
    "discard-not-negotiated":  (PARAMS, NO_DISCARD, T_DISCARD, 0, seg(0, 1), 1, S_UNSUPP),
    "discard-no-segment":      (PARAMS, FEATURES, T_DISCARD, 0, b"", 1, S_UNSUPP),
    "discard-partial-segment": (PARAMS, FEATURES, T_DISCARD, 0, seg(0, 1)[:15], 1, S_UNSUPP),
    "discard-too-many-segs":   (PARAMS, FEATURES, T_DISCARD, 0, seg(0, 1) * 2, 1, S_UNSUPP),
    "discard-unmap":           (PARAMS, FEATURES, T_DISCARD, 0, seg(0, 1, UNMAP), 1, S_UNSUPP),
    "discard-reserved-flag":   (PARAMS, FEATURES, T_DISCARD, 0, seg(0, 1, 1 << 31), 1, S_UNSUPP),
    "discard-too-many-sectors": (PARAMS.replace(max_discard_sectors=4), FEATURES, T_DISCARD, 0,
                                 seg(0, 5), 1, S_IOERR),
    "discard-max-sectors":     (PARAMS.replace(max_discard_sectors=4), FEATURES, T_DISCARD, 0,
                                seg(0, 4), 1, S_OK),
    "discard-past-capacity":   (PARAMS, FEATURES, T_DISCARD, 0, seg(CAPACITY - 1, 2), 1, S_IOERR),
    "discard-wraps-64-bit":    (PARAMS, FEATURES, T_DISCARD, 0, seg((1 << 64) - 1, 2), 1, S_IOERR),
    "discard-read-only":       (RO, FEATURES, T_DISCARD, 0, seg(0, 1), 1, S_IOERR),
    "discard-unsupp-first":    (PARAMS, FEATURES, T_DISCARD, 0, seg(CAPACITY, 9, UNMAP), 1,
                                S_UNSUPP),
    # WRITE_ZEROES.
    "wz-not-negotiated":       (PARAMS, NO_WZ, T_WRITE_ZEROES, 0, seg(0, 1), 1, S_UNSUPP),
    "wz-no-segment":           (PARAMS, FEATURES, T_WRITE_ZEROES, 0, b"", 1, S_UNSUPP),
    "wz-partial-segment":      (PARAMS, FEATURES, T_WRITE_ZEROES, 0, seg(0, 1) + b"x", 1,
                                S_UNSUPP),
    "wz-too-many-segs":        (PARAMS, FEATURES, T_WRITE_ZEROES, 0, seg(0, 1) * 2, 1, S_UNSUPP),
    "wz-unknown-flag":         (PARAMS, FEATURES, T_WRITE_ZEROES, 0, seg(0, 1, 2), 1, S_UNSUPP),
    "wz-too-many-sectors":     (PARAMS.replace(max_write_zeroes_sectors=2), FEATURES,
                                T_WRITE_ZEROES, 0, seg(0, 3), 1, S_IOERR),
    "wz-past-capacity":        (PARAMS, FEATURES, T_WRITE_ZEROES, 0, seg(CAPACITY, 1), 1, S_IOERR),
    "wz-read-only":            (RO, FEATURES, T_WRITE_ZEROES, 0, seg(0, 1, UNMAP), 1, S_IOERR),
    # All or nothing over segments; every segment's UNSUPP checks before any IOERR check.
    "segs-one-bad-range":      (FOUR_SEG, FEATURES, T_WRITE_ZEROES, 0,
                                seg(0, 1) + seg(CAPACITY, 1), 1, S_IOERR),
    "segs-ioerr-then-unsupp":  (FOUR_SEG, FEATURES, T_DISCARD, 0,
                                seg(CAPACITY, 1) + seg(0, 1, UNMAP), 1, S_UNSUPP),
    "segs-max":                (FOUR_SEG, FEATURES, T_DISCARD, 0, seg(0, 1) * 4, 1, S_OK),
    "segs-over-max":           (FOUR_SEG, FEATURES, T_DISCARD, 0, seg(0, 1) * 5, 1, S_UNSUPP),
}


@pytest.mark.parametrize("case", STATUS_CASES)
def test_status_rules(case):
    params, features, op, sector, data, in_len, status = STATUS_CASES[case]
    blk, mem, drv, r, b, before = _status_case(params, features, op, sector, data, in_len)
    assert [(c.head, c.used_len, c.status, c.op, c.sector) for c in b.completions] == \
        [(r.head, in_len, status, op, sector)]
    assert r.status(mem) == status
    assert drv.used_idx() == 1 and drv.used(0) == (r.head, in_len)
    if status != S_OK:
        # Data effects only on OK: the disk and the data bytes of the buffer are untouched.
        assert b.completions[0].nbytes == 0
        assert blk.disk == before
        assert r.in_bytes(mem)[:-1] == bytes([FILL]) * (in_len - 1)
    elif op == T_IN:
        assert r.in_bytes(mem)[:-1] == before[sector * 512:sector * 512 + in_len - 1]


# -- descriptor chains -------------------------------------------------------------------------

@pytest.mark.parametrize("features", [FEATURES, FEATURES & ~(1 << F_INDIRECT_DESC)])
def test_chain_of_queue_size_descriptors(features):
    # A chain as long as the table is fine (seg_max permitting).
    blk, mem, drv = setup(PARAMS.replace(seg_max=6), size=8)
    data = pattern(6 * 512, 4)
    w = drv.request(T_OUT, sector=2, data=data, out_split=[16] + [512] * 6)
    assert len(w.out_pieces) + len(w.in_pieces) == 8
    assert run(blk, mem, drv, features).completions[0].status == S_OK
    assert blk.disk[1024:1024 + len(data)] == data


def test_indirect_table():
    blk, mem, drv = setup()
    data = pattern(2048, 5)
    w = drv.request(T_OUT, sector=3, data=data, out_split=[10, 6, 2048], indirect=True)
    r = drv.request(T_IN, sector=3, in_len=2049, in_split=[1000, 1049], indirect=True)
    b = run(blk, mem, drv)
    assert [c.status for c in b.completions] == [S_OK, S_OK]
    assert blk.disk[3 * 512:7 * 512] == data
    assert r.in_bytes(mem) == data + bytes([S_OK])
    assert drv.used(1) == (r.head, 2049)


def test_direct_descriptors_then_indirect_table():
    # [VIRTIO-1.2 2.7.5.3.2] Normal descriptors followed by one INDIRECT descriptor, whose WRITE
    # flag the device ignores.
    blk, mem, drv = setup()
    fill_disk(blk)
    hdr = drv.alloc(16)
    mem.poke(hdr, struct.pack("<IIQ", T_IN, 0, 4))
    data, status = drv.alloc(512), drv.alloc(1)
    table, length = drv.indirect_table([(data, 512, WRITE), (status, 1, WRITE)])
    head = drv.chain([(hdr, 16, 0), (table, length, INDIRECT | WRITE)])
    drv.push(head)
    b = run(blk, mem, drv)
    assert b.completions == [Completion(head, 513, S_OK, T_IN, 4, 512)]
    assert mem.peek(data, 512) == blk.disk[4 * 512:5 * 512]
    assert mem.peek(status, 1) == bytes([S_OK])


@pytest.mark.parametrize("indirect", [False, True])
def test_more_than_seg_max_plus_2_descriptors_is_ioerr(indirect):
    blk, mem, drv = setup(PARAMS.replace(seg_max=2), size=16)
    # seg_max + 2 = 4 descriptors: served.
    ok = drv.request(T_OUT, sector=1, data=pattern(1024), out_split=[16, 512, 512],
                     indirect=indirect)
    # 5 descriptors, a well formed chain: IOERR, the status at the last writable byte, which
    # shares a descriptor with (unwritten) data.
    bad = drv.request(T_IN, sector=1, in_len=513, out_split=[8, 8], in_split=[256, 0, 257],
                      indirect=indirect)
    b = run(blk, mem, drv)
    assert not b.needs_reset
    assert [c.status for c in b.completions] == [S_OK, S_IOERR]
    assert b.completions[1] == Completion(bad.head, 513, S_IOERR, T_IN, 1, 0)
    assert bad.in_bytes(mem) == bytes([FILL]) * 512 + bytes([S_IOERR])
    assert drv.used(1) == (bad.head, 513)
    assert ok.status(mem) == S_OK


# -- malformed chains --------------------------------------------------------------------------

def _hdr(drv, op=T_FLUSH):
    a = drv.alloc(16)
    drv.mem.poke(a, struct.pack("<IIQ", op, 0, 0))
    return a


def _bad_head(drv):
    drv.chain([(_hdr(drv), 16, 0), (drv.alloc(1), 1, WRITE)])
    return drv.size


def _bad_next(drv):
    head = drv.chain([(_hdr(drv), 16, 0), (drv.alloc(1), 1, WRITE)])
    drv.put_desc(head, _hdr(drv), 16, NEXT, drv.size)
    # A valid status descriptor just past the table, so only the index check can object.
    drv.put_desc(drv.size, drv.alloc(1), 1, WRITE)
    return head


def _loop(drv):
    a = drv.chain([(_hdr(drv), 16, 0), (drv.alloc(512), 512, 0)])
    drv.put_desc((a + 1) % drv.size, drv.alloc(512), 512, NEXT, a)     # a -> b -> a ...
    return a


def _indirect(drv, descs, flags=INDIRECT, length=None):
    table, n = drv.indirect_table(descs)
    return drv.chain([(table, n if length is None else length, flags)])


def _good_descs(drv):
    return [(_hdr(drv), 16, 0), (drv.alloc(1), 1, WRITE)]


def _indirect_loop(drv):
    table, n = drv.indirect_table(_good_descs(drv) + [(drv.alloc(1), 1, WRITE)])
    drv.put_desc(2, drv.alloc(1), 1, WRITE | NEXT, 1, table=table)   # 1 -> 2 -> 1 ...
    return drv.chain([(table, n, INDIRECT)])


def _indirect_next_out_of_table(drv):
    table, n = drv.indirect_table(_good_descs(drv) + [(drv.alloc(1), 1, WRITE)])
    drv.put_desc(1, drv.alloc(1), 1, WRITE | NEXT, 2, table=table)
    return drv.chain([(table, n - 16, INDIRECT)])   # entry 2 exists but is outside the table


def _indirect_in_indirect(drv):
    inner, n = drv.indirect_table(_good_descs(drv))
    return _indirect(drv, [(inner, n, INDIRECT)])


MALFORMED = {
    "head-not-below-size":      (_bad_head, FEATURES),
    "next-not-below-size":      (_bad_next, FEATURES),
    "loop":                     (_loop, FEATURES),
    "indirect-not-negotiated":  (lambda d: _indirect(d, _good_descs(d)),
                                 FEATURES & ~(1 << F_INDIRECT_DESC)),
    "indirect-in-indirect":     (_indirect_in_indirect, FEATURES),
    "indirect-with-next":       (lambda d: _indirect(d, _good_descs(d), INDIRECT | NEXT),
                                 FEATURES),
    "indirect-len-0":           (lambda d: _indirect(d, _good_descs(d), length=0), FEATURES),
    "indirect-len-24":          (lambda d: _indirect(d, _good_descs(d), length=24), FEATURES),
    "indirect-loop":            (_indirect_loop, FEATURES),
    "indirect-next-not-below":  (_indirect_next_out_of_table, FEATURES),
    "readable-after-writable":  (lambda d: d.chain([(_hdr(d), 16, 0), (d.alloc(1), 1, WRITE),
                                                    (d.alloc(4), 4, 0), (d.alloc(1), 1, WRITE)]),
                                 FEATURES),
    "empty-readable-after-writable": (lambda d: d.chain([(_hdr(d), 16, 0), (d.alloc(1), 0, WRITE),
                                                          (d.alloc(1), 0, 0),
                                                          (d.alloc(1), 1, WRITE)]), FEATURES),
    "header-15-bytes":          (lambda d: d.chain([(_hdr(d), 8, 0), (_hdr(d), 7, 0),
                                                    (d.alloc(1), 1, WRITE)]), FEATURES),
    "no-writable":              (lambda d: d.chain([(_hdr(d), 16, 0)]), FEATURES),
    "writable-zero-length":     (lambda d: d.chain([(_hdr(d), 16, 0), (d.alloc(1), 0, WRITE)]),
                                 FEATURES),
}


@pytest.mark.parametrize("event_idx", [False, True], ids=["no-event-idx", "event-idx"])
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_chain_needs_reset(case, event_idx):
    build, features = MALFORMED[case]
    if event_idx:
        features |= 1 << F_EVENT_IDX
    blk, mem, drv = setup()
    first = drv.request(T_FLUSH)
    drv.push(build(drv))
    third = drv.request(T_FLUSH)
    b = run(blk, mem, drv, features)
    assert b.needs_reset and b.error
    # The entry before the malformed one completes and gets its interrupt decision; nothing is
    # written for the malformed one or the one after it, nor avail_event.
    assert b.completions == [Completion(first.head, 1, S_OK, T_FLUSH, 0, 0)]
    assert b.interrupt
    assert mem.written() == span(first.status_addr(), 1) | span(drv.queue.device + 2, 2 + 8)
    assert drv.used_idx() == 1 and drv.used(0) == (first.head, 1)
    assert third.status(mem) == FILL
    assert blk.rings[0].last_avail_idx == 1
    # Broken: nothing is read or written until reset.
    mem.writes.clear()
    mem.on_read = lambda addr, n: pytest.fail(f"read at {addr:#x} while broken")
    b = run(blk, mem, drv, features)
    assert b.needs_reset and b.completions == [] and not b.interrupt and mem.writes == []
    mem.on_read = None
    blk.reset()
    assert not blk.broken and blk.rings[0].last_avail_idx == 0


@pytest.mark.parametrize("ahead, broken", [(8, False), (9, False), (10, True), (65535, True)])
def test_avail_idx_too_far_ahead_needs_reset(ahead, broken):
    # [VIRTIO-1.2 2.7.13] avail->idx is at most the queue size (8) ahead of what was served.
    blk, mem, drv = setup()
    drv.request(T_FLUSH)
    assert len(run(blk, mem, drv, FEATURES_EI).completions) == 1
    for _ in range(8):
        drv.request(T_FLUSH, indirect=True)     # one table entry each
    drv.set_avail_idx(ahead)
    mem.writes.clear()
    b = run(blk, mem, drv, FEATURES_EI)
    assert b.needs_reset == broken
    if broken:
        assert b.completions == [] and mem.writes == [] and blk.broken
    else:
        assert len(b.completions) == ahead - 1


def test_broken_device_stops_every_queue():
    p = DeviceParams(capacity=CAPACITY, num_queues=2)
    blk, mem = BlkProcessor(p), Memory()
    d0 = Driver(mem, desc=0x1000, driver=0x2000, device=0x3000)
    d1 = Driver(mem, desc=0x4000, driver=0x5000, device=0x6000)
    d1.heap = 0x80000
    d0.push(_bad_head(d0))
    r = d1.request(T_FLUSH)
    assert blk.process(0, mem, d0.queue, FEATURES).needs_reset
    b = blk.process(1, mem, d1.queue, FEATURES)
    assert b.needs_reset and b.completions == [] and r.status(mem) == FILL


# -- used ring, indices, batches ---------------------------------------------------------------

def test_used_ring_and_indices_wrap():
    blk, mem, drv = setup(size=4)
    ring = blk.rings[0]
    ring.last_avail_idx = ring.used_idx = ring.signalled_used = 65534
    drv.set_avail_idx(65534)
    reqs = [drv.request(T_FLUSH) for _ in range(3)]
    assert drv.avail_idx == 1
    b = run(blk, mem, drv)
    assert [c.head for c in b.completions] == [r.head for r in reqs]
    assert drv.used_idx() == 1 and ring.used_idx == 1 and ring.last_avail_idx == 1
    # Slots 65534 % 4 = 2, 65535 % 4 = 3, 0.
    assert [drv.used(i) for i in (2, 3, 0)] == [(r.head, 1) for r in reqs]
    # Written: three used elements and idx, nothing at slot 1.
    assert not mem.written() & span(drv.queue.device + 4 + 8, 8)


def test_batch_in_order_and_the_index_read_behind_the_entries():
    # As the RTL: avail->idx, then the entries it shows in one read with avail->idx read again
    # right behind it (before they are served); what that read shows is served too. A request
    # published after the last read waits for the next notification.
    blk, mem, drv = setup()
    reqs = [drv.request(T_OUT, sector=i, data=bytes([i]) * 512) for i in range(3)]
    late = []
    reads = []

    def driver_adds_more(addr, n):
        # The driver publishes another request right after the first read and the third.
        if addr == drv.queue.driver + 2:
            reads.append(drv.avail_idx)
            if len(reads) in (1, 3):
                late.append(drv.request(T_FLUSH))
    mem.on_read = driver_adds_more
    b = run(blk, mem, drv)
    mem.on_read = None
    assert reads == [3, 4, 4], "avail->idx: read first, then behind each read of entries"
    assert [c.head for c in b.completions] == [r.head for r in reqs] + [late[0].head]
    assert [drv.used(i)[0] for i in range(4)] == [r.head for r in reqs] + [late[0].head]
    assert late[1].status(mem) == FILL and drv.used_idx() == 4
    # The next notification serves it.
    b = run(blk, mem, drv)
    assert [c.head for c in b.completions] == [late[1].head]
    assert late[1].status(mem) == S_OK and drv.used_idx() == 5


def test_empty_batch():
    blk, mem, drv = setup()
    b = run(blk, mem, drv)
    assert b.completions == [] and not b.interrupt and not b.needs_reset
    assert mem.writes == []     # no EVENT_IDX: nothing at all


def test_writes_in_order_data_status_used_idx():
    # [VIRTIO-1.2 2.7.8.2] Data and len are in memory before used->idx moves.
    blk, mem, drv = setup()
    fill_disk(blk)
    r = drv.request(T_IN, sector=0, in_len=513)
    run(blk, mem, drv)
    addrs = [a for a, _ in mem.writes]
    assert addrs[-1] == drv.queue.device + 2
    assert addrs[-2] == drv.queue.device + 4
    assert r.status_addr() in range(addrs[-3], addrs[-3] + len(mem.writes[-3][1]))


# -- used buffer notifications and avail_event -------------------------------------------------

def test_vring_need_event():
    # (u16)(new - event - 1) < (u16)(new - old)
    assert vring_need_event(0, 1, 0)
    assert not vring_need_event(0, 2, 1)
    assert vring_need_event(2, 4, 2) and vring_need_event(3, 4, 2)
    assert not vring_need_event(4, 4, 2) and not vring_need_event(1, 4, 2)
    assert vring_need_event(65535, 1, 65535) and vring_need_event(0, 1, 65535)
    assert not vring_need_event(1, 1, 65535)


@pytest.mark.parametrize("flags, interrupt", [(0, True), (NO_INTERRUPT, False)])
def test_interrupt_without_event_idx(flags, interrupt):
    blk, mem, drv = setup()
    drv.set_flags(flags)
    drv.set_used_event(0)       # ignored without EVENT_IDX
    drv.request(T_FLUSH)
    drv.request(T_FLUSH)
    assert run(blk, mem, drv).interrupt == interrupt
    drv.request(T_FLUSH)
    assert run(blk, mem, drv).interrupt == interrupt
    assert avail_event_untouched(mem, drv)


def avail_event_untouched(mem, drv):
    return not mem.written() & span(drv.avail_event_addr(), 2)


def test_interrupt_with_event_idx_follows_used_event():
    blk, mem, drv = setup()
    drv.set_flags(NO_INTERRUPT)     # [VIRTIO-1.2 2.7.7.2] ignored with EVENT_IDX
    drv.set_used_event(4)
    got = []
    for _ in range(8):              # one request per batch: used idx 1 .. 8
        drv.request(T_FLUSH)
        got.append(run(blk, mem, drv, FEATURES_EI).interrupt)
    # Interrupt when the used idx passes used_event: the entry at index 4 makes it 5.
    assert got == [False] * 4 + [True] + [False] * 3


def test_interrupt_with_event_idx_batches():
    blk, mem, drv = setup()

    def batch(n, used_event=None):
        if used_event is not None:
            drv.set_used_event(used_event)
        for _ in range(n):
            drv.request(T_FLUSH)
        return run(blk, mem, drv, FEATURES_EI).interrupt
    assert batch(1, used_event=0)           # 0 -> 1 passes 0
    assert not batch(2)                     # 1 -> 3 does not pass 0
    assert not batch(1, used_event=2)       # 3 -> 4: 2 was passed before the last decision
    assert batch(2, used_event=4)           # 4 -> 6 passes 4
    assert not batch(1, used_event=5)       # 6 -> 7: 5 is behind the last decision
    assert not batch(0, used_event=7)       # nothing used: no decision
    assert batch(1)                         # 7 -> 8 passes 7


def test_interrupt_with_event_idx_wraps():
    blk, mem, drv = setup(size=4)
    ring = blk.rings[0]
    ring.last_avail_idx = ring.used_idx = ring.signalled_used = 65534
    drv.set_avail_idx(65534)
    drv.set_used_event(65535)
    drv.request(T_FLUSH)
    assert not run(blk, mem, drv, FEATURES_EI).interrupt        # 65534 -> 65535
    drv.request(T_FLUSH)
    drv.request(T_FLUSH)
    assert run(blk, mem, drv, FEATURES_EI).interrupt            # 65535 -> 1 passes 65535
    assert ring.signalled_used == 1


def test_avail_event_written_with_event_idx():
    blk, mem, drv = setup(size=4)
    mem.poke(drv.avail_event_addr(), b"\xee\xee")
    # Written at the end of every batch, an empty one too.
    run(blk, mem, drv, FEATURES_EI)
    assert drv.avail_event() == 0
    for _ in range(3):
        drv.request(T_FLUSH)
    run(blk, mem, drv, FEATURES_EI)
    assert drv.avail_event() == 3
    # After the used ring: used + 4 + 8 * size, and nothing else around it.
    assert mem.written() & span(drv.queue.device, 64) == \
        span(drv.queue.device + 2, 2) | span(drv.queue.device + 4, 24) | \
        span(drv.avail_event_addr(), 2)
    for _ in range(4):
        drv.request(T_FLUSH)
    run(blk, mem, drv, FEATURES_EI)
    assert drv.avail_event() == 7


# -- VIRTIO_F_NOTIFICATION_DATA: the avail index in the notification [VIRTIO-1.2 2.9] -------------
# The rules are the RTL avail reader's (rtl/blk_avail.py), which the model mirrors.

F_NOTIFICATION_DATA = 38
FEATURES_ND = FEATURES | 1 << F_NOTIFICATION_DATA


def idx_reads(mem, drv):
    """A list that grows at each read of avail->idx (the entry reads go in as "ring")."""
    log = []

    def on_read(addr, n):
        if addr == drv.queue.driver + 2:
            log.append("idx")
        elif drv.queue.driver + 4 <= addr < drv.queue.driver + 4 + 2 * drv.size:
            log.append("ring")
    mem.on_read = on_read
    return log


def lie(drv, n_requests, shown):
    """``n_requests`` FLUSHes with their entries in the ring, and ``avail->idx`` put back to
    ``shown`` (relative to where it was): the driver notifies ahead of what it wrote."""
    base = drv.avail_idx
    reqs = [drv.request(T_FLUSH) for _ in range(n_requests)]
    truth = drv.avail_idx
    drv.set_avail_idx(base + shown)
    drv.avail_idx = truth
    return reqs


@pytest.mark.parametrize("shown", [3, 0, 1])
def test_notification_data_ahead_is_served_without_reading_avail_idx_first(shown):
    # Ahead of last_avail_idx by at most the queue size: taken as avail->idx, the entries read
    # first, avail->idx read once behind them. It showing less (a driver that notifies ahead of
    # what it wrote to avail->idx) keeps the notified index.
    blk, mem, drv = setup()
    reqs = lie(drv, 3, shown)
    log = idx_reads(mem, drv)
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=3)
    assert [c.head for c in b.completions] == [r.head for r in reqs] and not b.needs_reset
    assert log == ["ring"] * 3 + ["idx"]
    assert all(r.status(mem) == S_OK for r in reqs) and drv.used_idx() == 3
    assert blk.rings[0].last_avail_idx == 3


def test_notification_data_read_behind_shows_more():
    # The read of avail->idx behind the entries shows more than the notification: served too.
    blk, mem, drv = setup()
    reqs = [drv.request(T_FLUSH) for _ in range(5)]
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=2)
    assert [c.head for c in b.completions] == [r.head for r in reqs]


@pytest.mark.parametrize("features", [FEATURES_ND, FEATURES_ND | 1 << F_EVENT_IDX])
def test_notification_data_repeat_does_nothing(features):
    # An index at last_avail_idx: nothing read, nothing written (no avail_event either), even
    # with entries published behind it.
    blk, mem, drv = setup()
    drv.request(T_FLUSH)
    assert len(blk.process(0, mem, drv.queue, features, avail_idx=1).completions) == 1
    r = drv.request(T_FLUSH)
    mem.writes.clear()
    log = idx_reads(mem, drv)
    b = blk.process(0, mem, drv.queue, features, avail_idx=1)
    assert b.completions == [] and log == [] and mem.writes == [] and not b.needs_reset
    # Without data, the same notification reads avail->idx and serves it.
    b = blk.process(0, mem, drv.queue, features)
    assert [c.head for c in b.completions] == [r.head]


@pytest.mark.parametrize("notified, why", [
    (9, "queue size + 1 ahead"), (0xffff, "a stale index, one behind"),
    (0x8000, "0x8000 ahead"), (None, "no data (a narrow write)")])
def test_notification_data_out_of_range_reads_avail_idx(notified, why):
    # More than the queue size (8) ahead, or behind (the same modulo 2**16), or none: a
    # notification without data, avail->idx read first and deciding.
    blk, mem, drv = setup()
    reqs = [drv.request(T_FLUSH) for _ in range(2)]
    log = idx_reads(mem, drv)
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=notified)
    assert [c.head for c in b.completions] == [r.head for r in reqs], why
    assert log == ["idx", "ring", "ring", "idx"], why


def test_notification_data_ignored_without_the_feature():
    blk, mem, drv = setup()
    lie(drv, 3, 1)
    log = idx_reads(mem, drv)
    b = blk.process(0, mem, drv.queue, FEATURES, avail_idx=3)
    assert len(b.completions) == 1 and log == ["idx", "ring", "idx"]


@pytest.mark.parametrize("shown, broken", [(0, True), (1, True), (2, False), (4, False)])
def test_notification_data_over_two_reads(shown, broken):
    # From entry 6 of a ring of 8, 4 entries ahead take two reads (2 up to the ring's end, 2
    # after it); avail->idx is read behind the second, and compared with last_avail_idx as it
    # was then (8). Showing 6 + shown: at least 8 keeps the notified index; behind 8 it is
    # more than the queue size ahead, malformed, once the four are served.
    blk, mem, drv = setup()
    for _ in range(6):
        drv.request(T_FLUSH)
    assert len(blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=6).completions) == 6
    reqs = lie(drv, 4, shown)
    log = idx_reads(mem, drv)
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=10)
    assert log == ["ring"] * 4 + ["idx"]
    assert [c.head for c in b.completions] == [r.head for r in reqs]
    assert b.needs_reset == broken and blk.broken == broken
    if broken:
        assert b.error == f"queue 0 avail idx {6 + shown} is more than 8 ahead of 10"


@pytest.mark.parametrize("shown, broken", [(3, True), (4, False)])
def test_notification_data_over_two_reads_of_prefetch(shown, broken):
    # The same at avail_prefetch: 6 entries ahead, 4 in the first read, 2 in the second.
    p = DeviceParams(capacity=CAPACITY, num_queues=1, avail_prefetch=4,
                     features=PARAMS.features)
    mem = Memory()
    blk, drv = BlkProcessor(p), Driver(mem, size=8)
    lie(drv, 6, shown)
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=6)
    assert len(b.completions) == 6 and b.needs_reset == broken


def test_notification_data_ahead_over_stale_or_garbage_entries():
    # Entries never written (zero: head 0, a zeroed descriptor) or out of range, ahead of
    # avail->idx: served as they are, so malformed.
    blk, mem, drv = setup()
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=2)
    assert b.needs_reset and b.error == ("queue 0 avail entry 0 head 0: 0 device-readable "
                                         "bytes, fewer than the 16-byte header")
    blk, mem, drv = setup()
    r = drv.request(T_FLUSH)
    mem.poke(drv.queue.driver + 4 + 2, struct.pack("<H", 0xbeef))
    b = blk.process(0, mem, drv.queue, FEATURES_ND, avail_idx=3)
    assert [c.head for c in b.completions] == [r.head] and b.needs_reset
    assert b.error == "queue 0 avail entry 1 head 48879: head 48879 is not below the queue size 8"


@pytest.mark.parametrize("be, features, data", [
    (0xf, FEATURES_ND, 0x1234), (0x3, FEATURES_ND, None), (0x1, FEATURES_ND, None),
    (0xf, FEATURES, None)])
def test_notify_register_decodes_notification_data(be, features, data):
    # [VIRTIO-1.2 2.9, 4.1.5.2] The avail index of a 32-bit write, with the feature negotiated.
    m, mem, drv = live_device()
    m.driver_features = features
    m.bar_write_dw(rm.NOTIFY_OFFSET // 4, 0x1234 << 16 | 0, be)
    m.bar_write_dw(rm.NOTIFY_OFFSET // 4, 0x1234 << 16 | 7, be)     # no such queue: dropped
    assert m.doorbells == [(0, data)] and m.notifications == [0]


def test_device_passes_the_notification_data_on():
    m, mem, drv = live_device()
    m.driver_features = FEATURES_ND
    m.device_status |= rm.STATUS_DRIVER_OK
    m.queues[0].enable = 1
    reqs = lie(drv, 2, 0)
    assert m.process_queue(0, mem).completions == []
    b = m.process_queue(0, mem, avail_idx=2)
    assert [c.head for c in b.completions] == [r.head for r in reqs]


# -- the hook in VirtioBlkModel ----------------------------------------------------------------

def live_device(params=PARAMS):
    m = VirtioBlkModel(params)
    mem = Memory()
    drv = Driver(mem, size=8)
    m.driver_features = FEATURES
    m.device_status = rm.STATUS_ACKNOWLEDGE | rm.STATUS_DRIVER | rm.STATUS_FEATURES_OK
    q = m.queues[0]
    q.size, q.desc, q.driver, q.device = 8, drv.queue.desc, drv.queue.driver, drv.queue.device
    return m, mem, drv


def test_device_serves_only_enabled_queues_after_driver_ok():
    m, mem, drv = live_device()
    r = drv.request(T_OUT, sector=1, data=pattern(512))
    m.queues[0].enable = 1
    assert m.process_queue(0, mem).completions == []        # no DRIVER_OK yet
    m.device_status |= rm.STATUS_DRIVER_OK
    m.queues[0].enable = 0
    assert m.process_queue(0, mem).completions == []        # queue not enabled
    assert m.process_queue(1, mem).completions == []        # no such queue
    assert mem.writes == []
    m.queues[0].enable = 1
    b = m.process_queue(0, mem)
    assert [c.status for c in b.completions] == [S_OK] and r.status(mem) == S_OK
    assert m.blk.disk[512:1024] == pattern(512)


def test_device_needs_reset_and_virtio_reset():
    m, mem, drv = live_device()
    m.device_status |= rm.STATUS_DRIVER_OK
    m.queues[0].enable = 1
    drv.request(T_OUT, sector=2, data=pattern(512, 9))
    assert m.process_queue(0, mem).completions[0].status == S_OK
    drv.push(_bad_head(drv))
    b = m.process_queue(0, mem)
    assert b.needs_reset
    assert m.device_status & rm.STATUS_DEVICE_NEEDS_RESET
    drv.request(T_FLUSH)
    mem.writes.clear()
    b = m.process_queue(0, mem)
    assert b.completions == [] and mem.writes == []
    # [VIRTIO-1.2 4.1.4.3.1] Writing 0 to device_status resets the device: ring state back to
    # 0, DEVICE_NEEDS_RESET clear, the disk kept.
    m.virtio_reset()
    assert m.device_status == 0 and not m.blk.broken
    assert m.blk.rings[0].last_avail_idx == 0 and m.blk.rings[0].used_idx == 0
    assert m.blk.disk[1024:1536] == pattern(512, 9)


def test_device_reset_through_the_register():
    m, mem, drv = live_device()
    m.blk.rings[0].used_idx = 5
    m.blk.broken = True
    m.bar_write_dw(rm.CC_DEVICE_STATUS // 4, 0, be=0x1)
    assert m.blk.rings[0].used_idx == 0 and not m.blk.broken


# -- random requests against a shadow disk -----------------------------------------------------

def split(n, rng, max_pieces=4):
    """``n`` as 1..max_pieces piece lengths, zeros allowed."""
    cuts = sorted(rng.randrange(n + 1) for _ in range(rng.randrange(max_pieces)))
    return [b - a for a, b in zip([0] + cuts, cuts + [n])]


def test_random_reads_and_writes():
    seed = seed_from_env()
    rng = random.Random(seed)
    # Up to 4 requests of up to 9 descriptors each per batch: 64 entries are never reused early.
    blk, mem, drv = setup(PARAMS.replace(seg_max=8), size=64)
    shadow = bytearray(len(blk.disk))
    for _ in range(60):
        drv.heap = 0x10000
        pending = []
        for _ in range(rng.randrange(1, 5)):
            nsec = rng.randrange(0, 5)
            sector = rng.randrange(0, CAPACITY - nsec + 1)
            kw = dict(sector=sector, out_split=split(16, rng, 3), indirect=rng.random() < 0.3)
            if rng.random() < 0.5:
                data = bytes(rng.randrange(256) for _ in range(512 * nsec))
                kw["out_split"] += split(len(data), rng, 3)
                r = drv.request(T_OUT, data=data, **kw)
                shadow[sector * 512:sector * 512 + len(data)] = data
                pending.append((r, None))
            else:
                n = 512 * nsec + 1
                r = drv.request(T_IN, in_len=n, in_split=split(n, rng, 3), **kw)
                pending.append((r, bytes(shadow[sector * 512:sector * 512 + n - 1])))
        b = run(blk, mem, drv)
        assert not b.needs_reset, f"seed={seed}: {b.error}"
        assert [c.head for c in b.completions] == [r.head for r, _ in pending], f"seed={seed}"
        assert all(c.status == S_OK for c in b.completions), f"seed={seed}"
        for r, expect in pending:
            if expect is not None:
                assert r.in_bytes(mem) == expect + bytes([S_OK]), f"seed={seed}"
        assert blk.disk == shadow, f"seed={seed}"
