# Ref: OASIS virtio 1.2 sections 2.7 (split virtqueues: what the device reads and writes),
#      2.7.5.3 (indirect descriptors), 2.1.2 (DEVICE_NEEDS_RESET)
"""The DMA fence: which host memory the DUT may touch, at each moment.

:class:`DmaFence` is the scoreboard's ``dma_allowed``. Every memory request of the DUT other
than an MSI-X message must lie inside what the driver has given the device, in the direction
it was given for:

* the rings of the driver's queues, for as long as the queues exist: the descriptor table and
  the available ring (``used_event`` included) to read, the used ring (``avail_event``
  included) to write [VIRTIO-1.2 2.7];
* each request's buffers from the moment it is made available until the driver reaps it, or
  drops it after a reset: its device-readable buffers and its indirect table to read, its
  device-writable buffers to write;
* regions a test admits itself (hand-written chains), until it releases them.

While :attr:`DmaFence.closed` (a device in DEVICE_NEEDS_RESET, which must not touch host memory
[VIRTIO-1.2 2.1.2]) nothing is allowed.
"""

import bisect
import struct

from model import regmap as rm


__all__ = ["DmaFence", "chain_tables"]


_DESC = struct.Struct("<QIHH")     # [VIRTIO-1.2 2.7.5] struct virtq_desc


def chain_tables(read, desc_addr, size, head):
    """``[(addr, len)]`` of the indirect tables of the chain from ``head`` in a descriptor table
    at ``desc_addr`` of ``size`` entries, found by walking it in host memory (``read(addr, n)``)
    as the driver wrote it; the walk stops at an index out of range or a loop."""
    tables = []
    seen = set()
    i = head
    while i < size and i not in seen:
        seen.add(i)
        addr, n, flags, nxt = _DESC.unpack(read(desc_addr + 16 * i, 16))
        if flags & rm.VIRTQ_DESC_F_INDIRECT:
            tables.append((addr, n))
        if not flags & rm.VIRTQ_DESC_F_NEXT:
            break
        i = nxt
    return tables


class DmaFence:
    """``scoreboard.dma_allowed`` (see the module docstring).

    Parameters
    ----------
    queues : callable
        Returns the driver's current :class:`~tb.virtqueue.SplitVirtqueue` list, whose rings
        are admitted.
    read : callable
        ``read(addr, n) -> bytes`` of host memory, to find a request's indirect tables.

    Attributes
    ----------
    closed : bool
        Nothing is allowed while set.
    """
    def __init__(self, queues, read):
        self.queues = queues
        self.read = read
        self.closed = False
        self._owned = {}        # owner -> [(lo, hi, write)]
        self._starts = []       # sorted region starts, parallel to _regions
        self._regions = []      # (lo, hi, write, owner), sorted by lo

    def admit(self, owner, lo, n, write):
        """Allow ``n`` bytes at ``lo`` to be read (``write`` False) or written, until
        :meth:`release` of ``owner``."""
        region = (lo, lo + n, bool(write), owner)
        k = bisect.bisect_right(self._starts, lo)
        self._starts.insert(k, lo)
        self._regions.insert(k, region)
        self._owned.setdefault(owner, []).append(region)

    def release(self, owner):
        """Forget every region of ``owner``."""
        for region in self._owned.pop(owner, ()):
            k = bisect.bisect_left(self._starts, region[0])
            while self._regions[k] is not region:
                k += 1
            del self._starts[k]
            del self._regions[k]

    def request(self, req):
        """Admit a request the driver made available: its buffers and indirect tables."""
        for addr, n in req.readable:
            self.admit(req, addr, n, False)
        for addr, n in req.writable:
            self.admit(req, addr, n, True)
        vq = self.queues()[req.q]
        for addr, n in chain_tables(self.read, vq.desc_addr, vq.size, req.head):
            self.admit(req, addr, n, False)

    def __call__(self, addr, n, is_write):
        if self.closed:
            return False
        for vq in self.queues():
            # [VIRTIO-1.2 2.7] Descriptor table and available ring: read; used ring: written.
            if is_write:
                if vq.used_addr <= addr and addr + n <= vq.used_addr + 6 + 8 * vq.size:
                    return True
            elif (vq.desc_addr <= addr and addr + n <= vq.desc_addr + 16 * vq.size or
                  vq.avail_addr <= addr and addr + n <= vq.avail_addr + 6 + 2 * vq.size):
                return True
        # The region starting last at or before addr; regions never overlap (each is one
        # allocation of host memory, or a part of one), but several may start at one address.
        k = bisect.bisect_right(self._starts, addr) - 1
        start = self._starts[k] if k >= 0 else None
        while k >= 0 and self._starts[k] == start:
            _, hi, write, _ = self._regions[k]
            if addr + n <= hi and write == is_write:
                return True
            k -= 1
        return False
