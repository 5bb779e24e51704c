# Ref: OASIS virtio 1.2 section 2.7 (split virtqueues: 2.7.4 message framing, 2.7.5 descriptor
#      table and indirect descriptors, 2.7.6 available ring, 2.7.7 used buffer notification
#      suppression, 2.7.8 used ring, 2.7.10 available buffer notification suppression, 2.7.13
#      supplying buffers, 2.7.14 receiving used buffers); Linux drivers/virtio/virtio_ring.c
"""The driver side of split virtqueues, in host memory the device reaches by DMA.

Nothing here awaits: :class:`HostMemory` reads and writes bytes synchronously (the
RootComplex's memory is an mmap the DUT's DMA lands in; the pure-Python tests use a bytearray),
and :class:`SplitVirtqueue` builds descriptor chains, publishes them and reaps the used ring the
way Linux's ``virtio_ring.c`` does. The asynchronous block driver in :mod:`tb.blk` sits on top.

Linux habits kept on purpose, because a device must cope with them:

* Free descriptors form a list threaded through their ``next`` fields; a completed chain goes
  back on the front, so heads and chain order are reused out of order.
* ``next`` is written in every descriptor, also the last of a chain (where it points at the next
  free descriptor) and the last of an indirect table (where it is one past the end): the device
  must ignore ``next`` when ``NEXT`` is clear.
* ``avail->idx`` is written after each chain, and wraps at 65536.
"""

import bisect
import struct

from model import regmap as rm


__all__ = ["HostMemory", "SplitVirtqueue", "VirtqueueError", "QueueFull", "need_event"]


class VirtqueueError(Exception):
    """The device broke the used ring (Linux calls this ``BAD_RING`` and stops the queue)."""


class QueueFull(Exception):
    """Not enough free descriptors for the chain; reap used buffers and try again."""


def need_event(event, new, old):
    """[VIRTIO-1.2 2.7.7, 2.7.10] ``vring_need_event``: did moving an index from ``old`` to
    ``new`` pass ``event``? (All three are 16-bit ring indices.)"""
    return (new - event - 1) & 0xffff < (new - old) & 0xffff


class HostMemory:
    """Synchronous byte access to host memory, with an allocator.

    Host memory is one or more byte buffers (``bytearray``, ``mmap``) mapped at bus addresses.
    ``read``/``write`` take bus addresses, like the golden model's memory interface. The
    allocator hands out pieces of the buffers, first fit, at any alignment asked for.

    Parameters
    ----------
    guard : int
        Bytes at the start of each buffer that are never allocated, so no buffer or ring ever
        sits at bus address 0.

    Raises
    ------
    ValueError
        From ``add_region`` when regions overlap; from ``read``/``write`` when an access is
        not inside one region; from ``alloc`` for a size below 1 or an alignment that is not a
        power of two; from ``free`` for an address that is not allocated.
    MemoryError
        From ``alloc`` when no free piece is large enough.
    """
    def __init__(self, guard=0x1000):
        self.guard = guard
        self._bases = []      # sorted region bases
        self._regions = {}    # base -> buffer
        self._holes = []      # sorted [start, end) free pieces, bus addresses
        self._allocs = {}     # address -> size

    @classmethod
    def from_bytearray(cls, size, base=0x1000_0000, guard=0x1000):
        """A bytearray of ``size`` bytes at bus address ``base`` (for tests without a
        simulator)."""
        mem = cls(guard)
        mem.add_region(base, bytearray(size))
        return mem

    @classmethod
    def from_root_complex(cls, rc, size=4 << 20, base=None, guard=0x1000):
        """Host memory of a cocotbext-pcie RootComplex that the DUT's Memory Read and Write
        requests reach.

        With ``base`` None the region comes from ``rc.alloc_region`` (below 2 GiB, 32-bit
        addresses). With a ``base`` (e.g. ``0x1_2340_0000``) a new memory region is registered
        in the RootComplex's address space there, which makes the device use 64-bit addresses.
        """
        from cocotbext.axi.address_space import MemoryRegion
        mem = cls(guard)
        if base is None:
            addr, buf = rc.alloc_region(size)
        else:
            region = MemoryRegion(size)
            rc.mem_address_space.register_region(region, base)
            addr, buf = base, region.mem
        mem.add_region(addr, buf)
        return mem

    def add_region(self, base, buf):
        """Map ``buf`` at bus address ``base`` and make it allocatable (past the guard)."""
        end = base + len(buf)
        for b in self._bases:
            if b < end and base < b + len(self._regions[b]):
                raise ValueError(f"region {base:#x}+{len(buf):#x} overlaps the region at {b:#x}")
        bisect.insort(self._bases, base)
        self._regions[base] = buf
        if base + self.guard < end:
            bisect.insort(self._holes, [base + self.guard, end])

    def _locate(self, addr, n):
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            base = self._bases[i]
            buf = self._regions[base]
            if addr + n <= base + len(buf):
                return buf, addr - base
        raise ValueError(f"host access {addr:#x}+{n:#x} is outside host memory")

    def read(self, addr, n):
        buf, off = self._locate(addr, n)
        return bytes(buf[off:off + n])

    def write(self, addr, data):
        buf, off = self._locate(addr, len(data))
        buf[off:off + len(data)] = bytes(data)

    def read16(self, addr):
        return struct.unpack("<H", self.read(addr, 2))[0]

    def write16(self, addr, value):
        self.write(addr, struct.pack("<H", value & 0xffff))

    def alloc(self, size, align=1):
        """Return the bus address of ``size`` free bytes, a multiple of ``align``."""
        if size < 1:
            raise ValueError(f"allocation size must be at least 1, not {size!r}")
        if align < 1 or align & (align - 1):
            raise ValueError(f"alignment must be a power of two, not {align!r}")
        for i, (start, end) in enumerate(self._holes):
            addr = (start + align - 1) & -align
            if addr + size <= end:
                pieces = [[s, e] for s, e in ((start, addr), (addr + size, end)) if s < e]
                self._holes[i:i + 1] = pieces
                self._allocs[addr] = size
                return addr
        raise MemoryError(f"no {size} free bytes aligned to {align} in host memory")

    def free(self, addr):
        size = self._allocs.pop(addr, None)
        if size is None:
            raise ValueError(f"{addr:#x} is not an allocated host buffer")
        i = bisect.bisect_left(self._holes, [addr, addr + size])
        self._holes.insert(i, [addr, addr + size])
        # Coalesce with the neighbours (pieces of different regions never touch: the guard).
        if i + 1 < len(self._holes) and self._holes[i][1] == self._holes[i + 1][0]:
            self._holes[i][1] = self._holes.pop(i + 1)[1]
        if i > 0 and self._holes[i - 1][1] == self._holes[i][0]:
            self._holes[i - 1][1] = self._holes.pop(i)[1]

    @property
    def allocated(self):
        """Bytes currently allocated."""
        return sum(self._allocs.values())


class _Chain:
    """What the driver remembers about one in-flight chain (Linux's desc_state/desc_extra)."""
    __slots__ = ("descs", "table", "writable")

    def __init__(self, descs, table, writable):
        self.descs, self.table, self.writable = descs, table, writable


_DESC = struct.Struct("<QIHH")     # [VIRTIO-1.2 2.7.5] struct virtq_desc: addr, len, flags, next
_USED_ELEM = struct.Struct("<II")  # [VIRTIO-1.2 2.7.8] struct virtq_used_elem: id, len


class SplitVirtqueue:
    """The driver side of one split virtqueue [VIRTIO-1.2 2.7].

    The descriptor table, available ring and used ring are allocated from ``mem`` at their
    minimum alignments (16, 2 and 4 bytes [VIRTIO-1.2 2.7.1]) and zeroed.

    Parameters
    ----------
    mem : HostMemory
        Where the rings, indirect tables (and the caller's buffers) live.
    size : int
        Queue Size: a power of two from 1 to 32768 [VIRTIO-1.2 2.7].
    index : int
        The queue's index on its device, for messages.
    event_idx : bool
        ``VIRTIO_RING_F_EVENT_IDX`` was negotiated: use ``used_event``/``avail_event`` instead
        of the ring flags [VIRTIO-1.2 2.7.7, 2.7.10].

    Attributes
    ----------
    num_free : int
        Free descriptors in the table.
    last_used : int
        The driver's used index: entries before it have been reaped (16 bits, wraps).
    avail_idx : int
        The available index last published (16 bits, wraps).
    no_interrupt : bool
        Used buffer notifications are suppressed (see :meth:`set_no_interrupt`).

    Raises
    ------
    ValueError
        If ``size`` is not a power of two from 1 to 32768.
    """
    def __init__(self, mem, size, index=0, event_idx=False):
        if not (isinstance(size, int) and 1 <= size <= 32768 and size & (size - 1) == 0):
            raise ValueError(f"queue size must be a power of two from 1 to 32768, not {size!r}")
        self.mem, self.size, self.index, self.event_idx = mem, size, index, event_idx
        # [VIRTIO-1.2 2.7] Alignment and size of each part.
        self._desc = mem.alloc(16 * size, 16)
        self._avail = mem.alloc(6 + 2 * size, 2)
        self._used = mem.alloc(6 + 8 * size, 4)
        mem.write(self._desc, bytes(16 * size))
        mem.write(self._avail, bytes(6 + 2 * size))
        # [VIRTIO-1.2 2.7.10.1] The driver MUST initialize flags in the used ring to 0.
        mem.write(self._used, bytes(6 + 8 * size))
        # Free list threaded through next, 0 -> 1 -> ... -> size-1 (Linux vring_alloc_queue).
        self._next = [(i + 1) % size for i in range(size)]
        self._free_head = 0
        self.num_free = size
        self._chains = {}
        self.avail_idx = 0
        self.last_used = 0
        self._num_added = 0
        self.no_interrupt = False
        self._avail_flags = 0

    # -- addresses for queue_desc / queue_driver / queue_device ---------------------------------

    @property
    def desc_addr(self):
        return self._desc

    @property
    def avail_addr(self):
        return self._avail

    @property
    def used_addr(self):
        return self._used

    @property
    def rings(self):
        """``(desc, driver, device)``, as :meth:`VirtioPciDriver.setup_queues` takes them."""
        return self._desc, self._avail, self._used

    @property
    def in_flight(self):
        """Chains made available and not yet reaped."""
        return len(self._chains)

    # -- supplying buffers [VIRTIO-1.2 2.7.13] --------------------------------------------------

    def descriptors_needed(self, nbufs, indirect=False, direct_prefix=0):
        """Ring descriptors a chain of ``nbufs`` buffers takes."""
        return direct_prefix + 1 if indirect else nbufs

    def add(self, readable, writable, indirect=False, direct_prefix=0):
        """Make one buffer available; returns its head descriptor index.

        Parameters
        ----------
        readable, writable : list of (addr, len)
            Device-readable elements, then device-writable ones [VIRTIO-1.2 2.7.4.2].
        indirect : bool
            Put the elements in an indirect table [VIRTIO-1.2 2.7.5.3] allocated from ``mem``
            (freed when the chain is reaped).
        direct_prefix : int
            With ``indirect``, the number of leading elements placed as ordinary chained
            descriptors before the one INDIRECT descriptor, the unusual layout a device MUST
            handle [VIRTIO-1.2 2.7.5.3.2]. 0 is the usual single indirect descriptor.

        Raises
        ------
        ValueError
            For an empty chain, a chain longer than the queue size [VIRTIO-1.2 2.7.5.3.1], or a
            ``direct_prefix`` that leaves no element for the indirect table.
        QueueFull
            If fewer than the needed descriptors are free; nothing is changed.
        """
        elems = [(a, n, 0) for a, n in readable] + \
                [(a, n, rm.VIRTQ_DESC_F_WRITE) for a, n in writable]
        total = len(elems)
        if total == 0:
            raise ValueError("a buffer has at least one element [VIRTIO-1.2 2.7.13.1]")
        if total > self.size:
            raise ValueError(f"a chain of {total} descriptors is longer than the queue size "
                             f"{self.size} [VIRTIO-1.2 2.7.5.3.1]")
        if not indirect and direct_prefix:
            raise ValueError("direct_prefix needs indirect")
        if indirect and not 0 <= direct_prefix < total:
            raise ValueError(f"direct_prefix must leave at least one of the {total} elements "
                             f"for the indirect table, not {direct_prefix!r}")
        needed = self.descriptors_needed(total, indirect, direct_prefix)
        if needed > self.num_free:
            raise QueueFull(f"queue {self.index}: {needed} descriptors needed, "
                            f"{self.num_free} free")
        writable_len = sum(n for _, n, f in elems if f)

        table = None
        ring_elems = elems
        if indirect:
            inner = elems[direct_prefix:]
            table = self.mem.alloc(16 * len(inner), 16)
            # Linux alloc_indirect_split: next = i + 1 in every entry, also the last one.
            self.mem.write(table, b"".join(
                _DESC.pack(a, n, f | (rm.VIRTQ_DESC_F_NEXT if i + 1 < len(inner) else 0), i + 1)
                for i, (a, n, f) in enumerate(inner)))
            # [VIRTIO-1.2 2.7.5.3.1] INDIRECT and NEXT never together; WRITE is not set on it.
            ring_elems = elems[:direct_prefix] + [(table, 16 * len(inner),
                                                   rm.VIRTQ_DESC_F_INDIRECT)]

        # [VIRTIO-1.2 2.7.13.1] Place the buffers into free descriptors, chaining as necessary.
        head = self._free_head
        descs = []
        i = head
        for k, (a, n, f) in enumerate(ring_elems):
            descs.append(i)
            nxt = self._next[i]
            if k + 1 < len(ring_elems):
                f |= rm.VIRTQ_DESC_F_NEXT
            self.mem.write(self._desc + 16 * i, _DESC.pack(a, n, f, nxt))
            i = nxt
        self._free_head = i
        self.num_free -= len(descs)
        self._chains[head] = _Chain(descs, table, writable_len)

        # [VIRTIO-1.2 2.7.13.2] The head goes into the next available ring entry; then
        # [2.7.13.3] idx is increased (the ring entry is written first: the device may use
        # the chain as soon as it sees idx).
        self.mem.write16(self._avail + 4 + 2 * (self.avail_idx % self.size), head)
        self.avail_idx = (self.avail_idx + 1) & 0xffff
        self.mem.write16(self._avail + 2, self.avail_idx)
        self._num_added += 1
        return head

    def kick_prepare(self):
        """After adding chains: must the device be notified? [VIRTIO-1.2 2.7.10.1]

        Without EVENT_IDX, unless the device set ``VIRTQ_USED_F_NO_NOTIFY``; with it, if
        ``avail->idx`` passed ``avail_event`` since the last call (Linux
        ``virtqueue_kick_prepare_split``).
        """
        new = self.avail_idx
        old = (new - self._num_added) & 0xffff
        self._num_added = 0
        if self.event_idx:
            return need_event(self.avail_event, new, old)
        return not self.used_flags & rm.VIRTQ_USED_F_NO_NOTIFY

    # -- what the device wrote ------------------------------------------------------------------

    @property
    def used_idx(self):
        return self.mem.read16(self._used + 2)

    @property
    def used_flags(self):
        return self.mem.read16(self._used)

    @property
    def avail_event(self):
        """[VIRTIO-1.2 2.7.8] ``used->avail_event``, after the used ring entries."""
        return self.mem.read16(self._used + 4 + 8 * self.size)

    @property
    def used_event(self):
        """[VIRTIO-1.2 2.7.6] ``avail->used_event`` as last written by the driver."""
        return self.mem.read16(self._avail + 4 + 2 * self.size)

    def more_used(self):
        return self.used_idx != self.last_used

    # -- receiving used buffers [VIRTIO-1.2 2.7.14] ---------------------------------------------

    def get_used(self):
        """Reap every new used ring entry; returns ``[(id, len)]`` in ring order.

        The chains' descriptors go back on the free list and their indirect tables are freed.
        With EVENT_IDX and notifications wanted, ``used_event`` is moved to the new
        ``last_used`` and the used index read again, so that an entry the device added in
        between is not left without a notification.

        Raises
        ------
        VirtqueueError
            If the device moved the used index past the chains in flight, or an entry names a
            descriptor that is not the head of an in-flight chain, or reports more bytes written
            than the chain has device-writable bytes.
        """
        done = []
        while True:
            used_idx = self.used_idx
            pending = (used_idx - self.last_used) & 0xffff
            if pending > len(self._chains):
                raise VirtqueueError(
                    f"queue {self.index}: used idx {used_idx} is {pending} entries past "
                    f"last_used {self.last_used}, with only {len(self._chains)} chains in flight")
            for _ in range(pending):
                slot = self.last_used % self.size
                head, length = _USED_ELEM.unpack(self.mem.read(self._used + 4 + 8 * slot, 8))
                chain = self._chains.pop(head, None)
                if chain is None:
                    raise VirtqueueError(
                        f"queue {self.index}: used ring entry {self.last_used} names descriptor "
                        f"{head}, which is not the head of a chain in flight")
                if length > chain.writable:
                    raise VirtqueueError(
                        f"queue {self.index}: used ring entry {self.last_used} (head {head}) "
                        f"reports {length} bytes written, the chain has {chain.writable} "
                        f"device-writable bytes")
                self._detach(head, chain)
                self.last_used = (self.last_used + 1) & 0xffff
                done.append((head, length))
            if not (self.event_idx and not self.no_interrupt):
                return done
            # [VIRTIO-1.2 2.7.7.1] Notify me once the device writes entry last_used; then
            # re-check, as in the example of [VIRTIO-1.2 2.7.14].
            self.mem.write16(self._avail + 4 + 2 * self.size, self.last_used)
            if self.used_idx == used_idx:
                return done

    def _detach(self, head, chain):
        # Linux detach_buf_split: the chain goes back on the front of the free list.
        self._next[chain.descs[-1]] = self._free_head
        self._free_head = head
        self.num_free += len(chain.descs)
        if chain.table is not None:
            self.mem.free(chain.table)

    # -- used buffer notification suppression [VIRTIO-1.2 2.7.7] --------------------------------

    def set_no_interrupt(self, suppress):
        """Ask the device not to send used buffer notifications (or to send them again).

        Without EVENT_IDX this is ``VIRTQ_AVAIL_F_NO_INTERRUPT`` in ``avail->flags``; with it the
        flags stay 0 [VIRTIO-1.2 2.7.7.1] and ``used_event`` is put one behind ``last_used``,
        an index the device cannot reach before the driver reaps. Either way it is only a hint:
        the device may still notify. Returns True if used entries are already waiting (the
        caller must reap them: no notification will come for them).
        """
        self.no_interrupt = bool(suppress)
        if self.event_idx:
            event = self.last_used - 1 if suppress else self.last_used
            self.mem.write16(self._avail + 4 + 2 * self.size, event)
        else:
            self._avail_flags = rm.VIRTQ_AVAIL_F_NO_INTERRUPT if suppress else 0
            self.mem.write16(self._avail, self._avail_flags)
        return self.more_used()

    def set_used_event(self, idx):
        """[VIRTIO-1.2 2.7.7.1] Write ``used_event``: notify once the device writes used ring
        entry ``idx`` (EVENT_IDX only). ``get_used`` moves it again unless notifications are
        suppressed."""
        if not self.event_idx:
            raise ValueError("used_event is only meaningful with VIRTIO_RING_F_EVENT_IDX "
                             "[VIRTIO-1.2 2.7.7.1]")
        self.mem.write16(self._avail + 4 + 2 * self.size, idx)

    def close(self):
        """Free the rings and any indirect tables still in flight (after a device reset)."""
        for chain in self._chains.values():
            if chain.table is not None:
                self.mem.free(chain.table)
        self._chains.clear()
        for addr in (self._desc, self._avail, self._used):
            self.mem.free(addr)
