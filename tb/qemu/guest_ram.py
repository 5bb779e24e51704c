# Ref: QEMU 7.2 hw/remote/memory.c (remote_sysmem_reconfig), hw/remote/proxy-memory-listener.c
"""Guest RAM as QEMU shares it: the memory-backend fds of each ``SYNC_SYSMEM``, mapped here.

The DUT's DMA goes straight to these mappings, as a device's DMA goes to a PC's DRAM: nothing
waits on QEMU.
"""

import mmap
import os

from .protocol import MAX_FDS


__all__ = ["GuestMemory", "UnmappedAccess"]


class UnmappedAccess(Exception):
    """A DMA access touches guest-physical addresses no RAM section covers."""


class GuestMemory:
    """The guest-physical RAM sections of the latest ``SYNC_SYSMEM``.

    Attributes
    ----------
    sections : list of (gpa, size, mmap)
        Sorted by ``gpa``.
    syncs : int
        ``SYNC_SYSMEM`` messages applied.
    """
    def __init__(self):
        self.sections = []
        self._fds = []
        self.syncs = 0

    def sync(self, regions, fds):
        """Replace the map with ``regions`` (:class:`~tb.qemu.protocol.SysmemRegion`), the i-th
        found in ``fds[i]`` at its offset, like ``remote_sysmem_reconfig`` (memory.c:43-59). The
        fds are taken over: closed on the next sync or :meth:`close`.

        Raises
        ------
        ValueError
            If the counts differ, there are more than 8, or an offset is not page aligned
            (``mmap`` needs that; QEMU's RAM blocks always are).
        """
        if len(regions) != len(fds) or not 1 <= len(fds) <= MAX_FDS:
            raise ValueError(f"SYNC_SYSMEM with {len(regions)} regions and {len(fds)} fds")
        new = []
        try:
            for r, fd in zip(regions, fds):
                if r.offset % mmap.ALLOCATIONGRANULARITY:
                    raise ValueError(f"RAM section at {r.gpa:#x}: offset {r.offset:#x} is not "
                                     f"page aligned")
                new.append((r.gpa, r.size, mmap.mmap(fd, r.size, mmap.MAP_SHARED,
                                                     mmap.PROT_READ | mmap.PROT_WRITE,
                                                     offset=r.offset)))
        except BaseException:
            for _, _, m in new:
                m.close()
            for fd in fds:
                os.close(fd)
            raise
        self._release()
        self.sections = sorted(new, key=lambda s: s[0])
        self._fds = list(fds)
        self.syncs += 1

    def _pieces(self, addr, n):
        """(mmap, offset in it, length) covering ``[addr, addr + n)``."""
        out = []
        while n:
            for gpa, size, m in self.sections:
                if gpa <= addr < gpa + size:
                    k = min(n, gpa + size - addr)
                    out.append((m, addr - gpa, k))
                    addr += k
                    n -= k
                    break
            else:
                raise UnmappedAccess(f"guest-physical {addr:#x} is in no RAM section")
        return out

    def read(self, addr, n):
        return b"".join(m[o:o + k] for m, o, k in self._pieces(addr, n))

    def write(self, addr, data):
        data = memoryview(bytes(data))
        pieces = self._pieces(addr, len(data))   # all or nothing: check before writing
        pos = 0
        for m, o, k in pieces:
            m[o:o + k] = data[pos:pos + k]
            pos += k

    def _release(self):
        for _, _, m in self.sections:
            m.close()
        for fd in self._fds:
            os.close(fd)
        self.sections, self._fds = [], []

    def close(self):
        self._release()
