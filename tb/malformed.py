# Ref: OASIS virtio 1.2 sections 2.7.4.2 (message framing), 2.7.5 (descriptor table), 2.7.5.2
#      (no loops), 2.7.5.3 (indirect descriptors), 2.7.6 (available ring), 2.7.13 (supplying
#      buffers), 5.2.6 (the request header and status byte)
"""Rings a driver must never build: :class:`RawRing` writes descriptor chains by hand into one
of the driver's queues, and each builder below writes one kind of malformed chain and
publishes it. :data:`CATALOGUE` lists them with their variants; the robustness tests
(``tb/cocotb_robust.py``) run each as a named test, the fuzz campaign draws from it.

Every builder returns the words the golden model's reason must contain, so that a test is about
the malformation intended (the model is run on the same memory first).
"""

import struct

from model import regmap as rm
from .blk import outhdr


__all__ = ["RawRing", "CATALOGUE", "POISON", "QSIZE"]


NEXT, WRITE, INDIRECT = rm.VIRTQ_DESC_F_NEXT, rm.VIRTQ_DESC_F_WRITE, rm.VIRTQ_DESC_F_INDIRECT
T_FLUSH = rm.VIRTIO_BLK_T_FLUSH
# Queue size of the queues hand-written rings go into: loops and prefetch windows stay short.
QSIZE = 16
# Device-writable buffers are filled with this, so a write of the device to them is seen.
POISON = 0xee

_DESC = struct.Struct("<QIHH")     # [VIRTIO-1.2 2.7.5] struct virtq_desc


class RawRing:
    """Hand-written descriptor chains on one of the driver's queues, for chains the driver would
    never build. Descriptors are taken from the top of the table down (the driver's own free
    list starts at 0 and is not used meanwhile); every buffer and table is admitted by the
    DMA fence (``fence.admit``, with this ring as the owner: ``fence.release(ring)`` forgets
    them); device-writable buffers are filled with :data:`POISON` and remembered, so that a
    write of the device to any of them is seen.

    Parameters
    ----------
    mem : tb.virtqueue.HostMemory
    fence : tb.fence.DmaFence
    vq : tb.virtqueue.SplitVirtqueue
        The driver's queue to write into.
    """
    def __init__(self, mem, fence, vq):
        self.mem, self.fence, self.vq = mem, fence, vq
        self.size = vq.size
        self.free = list(range(vq.size))
        self.writable = []

    def take(self, n=1):
        assert n <= len(self.free), f"{n} descriptors wanted, {len(self.free)} free"
        out, self.free = self.free[-n:][::-1], self.free[:-n]
        return out

    def claim(self, i):
        self.free.remove(i)
        return i

    def desc(self, i, addr, length, flags=0, nxt=0, table=None):
        base = self.vq.desc_addr if table is None else table
        self.mem.write(base + 16 * i, _DESC.pack(addr, length, flags, nxt))

    def header(self, type=T_FLUSH, sector=0):
        """A 16-byte request header; returns ``(addr, 16, 0)``."""
        addr = self.mem.alloc(16, 8)
        self.mem.write(addr, outhdr(type, sector))
        self.fence.admit(self, addr, 16, False)
        return addr, 16, 0

    def rbuf(self, n, data=None):
        addr = self.mem.alloc(max(n, 1))
        self.mem.write(addr, bytes(data) if data is not None else bytes(n))
        self.fence.admit(self, addr, n, False)
        return addr, n, 0

    def wbuf(self, n, data=None):
        """A device-writable buffer: ``data``, or :data:`POISON` watched for writes."""
        addr = self.mem.alloc(max(n, 1))
        if data is not None:
            self.mem.write(addr, bytes(data))
        else:
            self.mem.write(addr, bytes([POISON]) * max(n, 1))
            self.writable.append((addr, max(n, 1)))
        self.fence.admit(self, addr, n, True)
        return addr, n, WRITE

    def chain(self, elems, indices=None):
        """Write ``elems`` ``[(addr, len, flags)]`` as a chain in the ring, NEXT added to all
        but the last; returns the head index."""
        indices = indices or self.take(len(elems))
        for k, (addr, n, flags) in enumerate(elems):
            last = k + 1 == len(elems)
            self.desc(indices[k], addr, n, flags | (0 if last else NEXT),
                      0 if last else indices[k + 1])
        return indices[0]

    def table(self, elems, length=None, extra=0):
        """An indirect table holding ``elems`` chained 0 -> 1 -> ... (plus ``extra`` zeroed
        entries after them); the fence admits ``length`` bytes of it (default: all)."""
        n = len(elems) + extra
        addr = self.mem.alloc(16 * n, 16)
        self.mem.write(addr, bytes(16 * n))
        for k, (a, ln, flags) in enumerate(elems):
            last = k + 1 == len(elems)
            self.desc(k, a, ln, flags | (0 if last else NEXT), k + 1, table=addr)
        self.fence.admit(self, addr, 16 * n if length is None else length, False)
        return addr

    def flush(self, indirect=False):
        """A good FLUSH request (header, status byte); returns its head."""
        elems = [self.header(T_FLUSH), self.wbuf(1)]
        if indirect:
            return self.chain([(self.table(elems), 32, INDIRECT)])
        return self.chain(elems)

    def publish(self, head):
        """[VIRTIO-1.2 2.7.13.2, 2.7.13.3] The head into the next ring entry, then idx."""
        vq = self.vq
        self.mem.write16(vq.avail_addr + 4 + 2 * (vq.avail_idx % self.size), head)
        self.set_avail_idx(vq.avail_idx + 1)

    def set_avail_idx(self, idx):
        self.vq.avail_idx = idx & 0xffff
        self.mem.write16(self.vq.avail_addr + 2, self.vq.avail_idx)

    def untouched(self):
        """Device-writable buffers the device wrote to (none, when it served nothing)."""
        return [(a, n) for a, n in self.writable if self.mem.read(a, n) != bytes([POISON]) * n]


# Each builder writes the bad chain (and whatever it needs) and publishes it; it returns the
# words the model's reason must contain, so that the test is about the malformation intended.

def _loop(r, where):
    if where == "ring":
        # [VIRTIO-1.2 2.7.5.2] No loops: the second descriptor points back at the head.
        a, b = r.take(2)
        r.desc(a, *r.header()[:2], NEXT, b)
        r.desc(b, *r.rbuf(4)[:2], NEXT, a)
        r.publish(a)
    else:
        # Inside an indirect table: 0 -> 1 -> 2 -> 1.
        elems = [r.header(), r.wbuf(1), r.wbuf(1)]
        table = r.table(elems)
        r.desc(2, elems[2][0], 1, WRITE | NEXT, 1, table=table)
        r.publish(r.chain([(table, 48, INDIRECT)]))
    return "a loop"


def _chain_too_long(r, where):
    # A chain that visits more descriptors than its table holds and never comes back to its
    # head: a loop check that waits for the head again never ends; only a count stops it.
    if where == "ring":
        idx = r.take(r.size)                 # every descriptor
        for k, i in enumerate(idx):
            elem = r.header() if k == 0 else r.rbuf(4)
            r.desc(i, *elem[:2], NEXT, idx[k + 1] if k + 1 < len(idx) else idx[1])
        r.publish(idx[0])
    else:
        n = 8
        elems = [r.header()] + [r.rbuf(4) for _ in range(n - 1)]
        table = r.table(elems)
        r.desc(n - 1, elems[-1][0], 4, NEXT, 1, table=table)
        r.publish(r.chain([(table, 16 * n, INDIRECT)]))
    return "a loop"


def _next_out_of_range(r, where):
    if where == "ring":
        a, = r.take(1)
        r.desc(a, *r.header()[:2], NEXT, r.size)
        r.publish(a)
        return f"next {r.size} is not below the table size {r.size}"
    # Entry 2 exists in memory, but the table is 2 entries long: the device must not read it.
    table = r.table([r.header(), r.wbuf(1), r.wbuf(1)], length=32)
    r.publish(r.chain([(table, 32, INDIRECT)]))
    return "next 2 is not below the table size 2"


def _head_out_of_range(r, head):
    # A device that masks the head with size - 1 finds a good chain there and serves it.
    trap = r.claim(head % r.size)
    r.chain([r.header(), r.wbuf(1)], [trap] + r.take(1))
    r.publish(head)
    return f"head {head} is not below the queue size {r.size}"


def _avail_idx_ahead(r, ahead):
    # A good chain in every ring entry, so a device that does not check would serve them.
    # ``ahead`` counts from the device's last_avail_idx, the ring's idx while it is idle.
    start = r.vq.avail_idx
    for k in range(r.size):
        r.mem.write16(r.vq.avail_addr + 4 + 2 * k, r.flush(indirect=True))
    r.set_avail_idx(start + ahead)
    return f"is more than {r.size} ahead of {start}"


def _indirect_with_next(r, _):
    a, b = r.take(2)
    table = r.table([r.header(), r.wbuf(1)])
    r.desc(a, table, 32, INDIRECT | NEXT, b)
    r.desc(b, *r.wbuf(1))
    r.publish(a)
    return "INDIRECT together with NEXT"


def _nested_indirect(r, position):
    inner = r.table([r.header(), r.wbuf(1)])
    if position == "first":
        outer = r.table([(inner, 32, INDIRECT)])
        n = 1
    else:
        outer = r.table([r.header(), (inner, 32, INDIRECT)])
        n = 2
    r.publish(r.chain([(outer, 16 * n, INDIRECT)]))
    return "INDIRECT inside an indirect table"


def _indirect_length(r, length):
    table = r.table([r.header(), r.wbuf(1), r.wbuf(1)], length=length)
    r.publish(r.chain([(table, length, INDIRECT)]))
    return f"indirect table length {length} is not a positive multiple of 16"


def _readable_after_writable(r, lengths):
    w, rd = (0, 0) if lengths == "empty" else (1, 4)
    r.publish(r.chain([r.header(), r.wbuf(w), r.rbuf(rd), r.wbuf(1)]))
    return "a device-readable descriptor after a device-writable one"


def _header_status(r, variant):
    hdr = outhdr(T_FLUSH, 0)
    if variant == "no_header":
        r.publish(r.chain([r.wbuf(1)]))
        return "0 device-readable bytes, fewer than the 16-byte header"
    if variant == "short_header":
        r.publish(r.chain([r.rbuf(8, hdr[:8]), r.rbuf(7, hdr[8:15]), r.wbuf(1)]))
        return "15 device-readable bytes, fewer than the 16-byte header"
    if variant == "header_writable":
        r.publish(r.chain([r.wbuf(16, hdr), r.wbuf(1)]))
        return "0 device-readable bytes, fewer than the 16-byte header"
    if variant == "status_readable":
        r.publish(r.chain([r.header(), r.rbuf(1)]))
        return "no device-writable byte for the status"
    assert variant == "status_zero_length"
    r.publish(r.chain([r.header(), r.wbuf(0)]))
    return "no device-writable byte for the status"


# name: (builder, variants), every malformed ring of the README's table (cases 1 to 10); the
# builders take a :class:`RawRing` on a queue of :data:`QSIZE` entries and a variant.
CATALOGUE = {
    "loop": (_loop, ["ring", "indirect"]),
    "chain_too_long": (_chain_too_long, ["ring", "indirect"]),
    "next_out_of_range": (_next_out_of_range, ["ring", "indirect"]),
    "head_out_of_range": (_head_out_of_range, [QSIZE, 0xffff]),
    "avail_idx_ahead": (_avail_idx_ahead, [QSIZE + 1, 0xffff]),
    "indirect_with_next": (_indirect_with_next, [None]),
    "nested_indirect": (_nested_indirect, ["first", "after_buffer"]),
    "indirect_length": (_indirect_length, [24, 0]),
    "readable_after_writable": (_readable_after_writable, ["nonempty", "empty"]),
    "header_status": (_header_status, ["no_header", "short_header", "header_writable",
                                       "status_readable", "status_zero_length"]),
}
