# Ref: OASIS virtio 1.2 sections 2.7.5 (descriptor table), 2.7.6 (available ring), 2.7.8 (used
#      ring), 2.7.8.2 (the device writes the buffers before the used element, the used element
#      before used->idx), 2.7.10 (used buffer notifications), 2.7.13 (supplying buffers), 4.1.4.5
#      (ISR status); PCIe Base 3.0 section 2.4.1 (posted writes stay in order)
"""The ordering checker: does the DUT make its results visible in the order a driver relies on?

The scoreboard hands it every memory request the DUT sends, in link order, with the moment it
leaves the DUT; posted writes are never reordered on the way [PCIe-3.0 2.4.1], so link order is
the order in which a CPU polling host memory can see them. The checker knows the rings' layout
from the registers the driver programmed (the golden model's queue state) and reads the driver's
side of the rings in host memory: what ``avail->idx`` has published, and the chains behind it.
It flags, with a ``ORDERING:`` scoreboard error:

* **data after status**: a write to a request's device-writable buffers that leaves out its
  status byte (the last device-writable byte), after the status byte was written (the status
  reports the data);
* **buffers after the element**: any write to a request's device-writable buffers after the
  used element that returns the chain [VIRTIO-1.2 2.7.8.2];
* **element before status**: a used element for a chain whose status byte was never written;
  a used element naming no chain the driver made available;
* **index before element**: ``used->idx`` moved over a ring entry whose element was not written
  since the index last passed it, or in the same write as the element (the bytes of one
  write may become visible in any order) [VIRTIO-1.2 2.7.8.2];
* **notification before index**: an MSI-X message of a queue's vector, or a rising edge of
  INTA#, with no ``used->idx`` write of its queues since their last notification (a driver
  woken before the index moves finds nothing, and no second notification comes)
  [VIRTIO-1.2 2.7.10]; configuration change notifications are not queue notifications;
* **read before publication**: a read of a descriptor table entry that no chain made available
  holds (a chain is available from the ``avail->idx`` write that publishes it until its used
  element), of an available ring entry that ``avail->idx`` has not published, or of an
  indirect table or buffer of a chain already returned [VIRTIO-1.2 2.7.6, 2.7.13].
  With ``VIRTIO_F_NOTIFICATION_DATA`` a notification's avail index publishes too, when it is
  ahead of what was published by at most the queue size [VIRTIO-1.2 2.9] (the device may
  take it as ``avail->idx``: a driver that notifies ahead of its ``avail->idx`` has made those
  entries available); an ``avail->idx`` then read behind it publishes nothing.

A read of the descriptor table may run past the entry it needs (a prefetch): only the first
entry it returns must be available. A read the DMA engine split (at Max_Read_Request_Size
and 4 KB boundaries [PCIe-3.0 2.2.7, 7.8.4]) arrives as several TLPs: one that starts where the
queue's previous descriptor read ended, on such a boundary (or Max_Read_Request_Size after the
previous start), continues that read. A reset of the device (``device_status`` = 0, FLR, the
``rst`` pin) forgets everything; the queues start again when the driver enables them.

Given a clock (``now``), the checker also keeps each request's **timeline** as the link shows
it, for ``make bench``'s per-request breakdown: ``fetch`` (the first read of its avail entry
or of its head descriptor), ``data_first`` and ``data_last`` (its first and last data access:
a write to its device-writable buffers other than the status byte, or a read of its
device-readable ones past the 16-byte request header [VIRTIO-1.2 5.2.6]), ``status``,
``element`` and ``published`` (the ``used->idx`` write that publishes its element). Each
completed timeline goes to ``on_timeline(q, head, times)``.
"""

import bisect
import struct

from model import regmap as rm


__all__ = ["OrderingChecker"]


_DESC = struct.Struct("<QIHH")      # [VIRTIO-1.2 2.7.5] struct virtq_desc
_ELEM = struct.Struct("<II")        # [VIRTIO-1.2 2.7.8] struct virtq_used_elem
U16 = 0xffff


class _Chain:
    """One chain the driver made available, as the checker follows it."""
    __slots__ = ("q", "head", "descs", "regions", "status_addr", "status_written",
                 "returned", "header", "times")

    def __init__(self, q, head):
        self.q, self.head = q, head
        self.descs = []           # descriptor table entries of the chain
        self.regions = []         # (lo, hi, kind): "readable", "writable", "table"
        self.status_addr = None   # the last device-writable byte
        self.status_written = False
        self.returned = False     # its used element was written
        self.header = []          # (lo, hi): the first 16 device-readable bytes
        self.times = {}           # the timeline (see the module docstring)


class _Regions:
    """Address ranges that do not overlap, each with a ``(chain, kind)`` item; found by
    address."""
    def __init__(self):
        self._starts, self._items = [], []

    def add(self, lo, hi, item):
        """Add ``[lo, hi)``, first removing whatever overlaps it."""
        self.carve(lo, hi)
        k = bisect.bisect_right(self._starts, lo)
        self._starts.insert(k, lo)
        self._items.insert(k, (lo, hi, item))

    def carve(self, lo, hi):
        """Remove every range that overlaps ``[lo, hi)``."""
        k = max(0, bisect.bisect_right(self._starts, lo) - 1)
        while k < len(self._starts) and self._starts[k] < hi:
            if self._items[k][1] > lo:
                del self._starts[k]
                del self._items[k]
            else:
                k += 1

    def remove(self, lo, chain):
        """Remove the range of ``chain`` that starts at ``lo``, if it is there."""
        k = bisect.bisect_left(self._starts, lo)
        while k < len(self._starts) and self._starts[k] == lo:
            if self._items[k][2][0] is chain:
                del self._starts[k]
                del self._items[k]
                return
            k += 1

    def find(self, addr):
        """``(lo, hi, item)`` of the range holding ``addr``, or None."""
        k = bisect.bisect_right(self._starts, addr) - 1
        if k >= 0 and addr < self._items[k][1]:
            return self._items[k]
        return None


class _Queue:
    """The checker's view of one enabled queue."""
    def __init__(self, q, desc, avail, used, size):
        self.q, self.desc, self.avail, self.used, self.size = q, desc, avail, used, size
        self.seen_idx = 0         # avail->idx as last read (16 bits)
        self.published = 0        # avail entries published (unbounded count)
        self.returned = 0         # chains returned by a used element (unbounded count)
        self.chains = {}          # head -> available _Chain
        self.owner = {}           # descriptor index -> head of the available chain holding it
        self.used_idx = 0         # used->idx as the DUT last wrote it
        self.elements = {}        # used ring slot -> the _Chain its element returned (None:
        #                           no chain in flight), written since used->idx passed it
        self.partial = {}         # used ring slot -> bytearray(8) and mask, partly written
        self.fresh = False        # used->idx written since the queue's last notification
        self.desc_read = (0, 0)   # (start, end) of the last read of the descriptor table
        self.slots = {}           # avail ring slot -> head published there
        self.lead = False         # seen_idx came from a notification, ahead of avail->idx

    def key(self):
        return self.desc, self.avail, self.used, self.size


class OrderingChecker:
    """See the module docstring.

    Parameters
    ----------
    model : model.device.VirtioBlkModel
        The golden model: its queue registers give the rings' layout and vectors.
    read : callable
        ``read(addr, n) -> bytes`` of host memory, to read the driver's side of the rings.
    error : callable
        ``error(message)``: where violations go (the scoreboard's ``error``).
    now : callable or None
        The current cycle; with it the checker keeps timelines (see the module docstring).
    on_timeline : callable or None
        ``on_timeline(q, head, times)`` for each request's timeline when ``used->idx``
        publishes it.

    Attributes
    ----------
    violations : int
    counts : dict
        What was checked: ``elements``, ``indices``, ``notifications``, ``reads``.
    """
    def __init__(self, model, read, error, now=None, on_timeline=None):
        self.model = model
        self.read = read
        self.error = error
        self.now = now
        self.on_timeline = on_timeline
        self.violations = 0
        self.counts = dict(elements=0, indices=0, notifications=0, reads=0)
        self._queues = {}
        self._live = _Regions()       # buffers and tables of available chains
        self._returned = _Regions()   # ... of chains already returned
        self._doorbells = len(model.doorbells)    # the model's notifications taken so far

    # -- events --------------------------------------------------------------------------------

    def device_reset(self):
        """The device was reset: nothing it did before counts any more."""
        self._queues = {}
        self._live = _Regions()
        self._returned = _Regions()
        # Nor the notifications before it: their avail indices are of the rings before.
        self._doorbells = len(self.model.doorbells)

    def dut_read(self, addr, n):
        """A Memory Read the DUT sent: ``n`` bytes from ``addr`` (the enabled bytes)."""
        self._sync()
        self.counts["reads"] += 1
        for v in self._queues.values():
            if v.desc <= addr < v.desc + 16 * v.size:
                start, end = v.desc_read
                v.desc_read = (addr, addr + n)
                mrrs = self.model.max_read_request_size
                if addr == end and (addr % mrrs == 0 or end - start == mrrs):
                    return      # the rest of the previous read, split by the DMA engine
                self._read_descriptor(v, (addr - v.desc) // 16)
                return
            ring = v.avail + 4
            if ring <= addr + n and addr < ring + 2 * v.size and n:
                self._read_avail(v, max(addr, ring), min(addr + n, ring + 2 * v.size))
                return
            if v.avail <= addr < v.avail + 6 + 2 * v.size:
                return      # flags, idx, used_event: always readable
        hit = self._live.find(addr)
        if hit is not None:
            chain = hit[2][0]
            if self.now is not None and hit[2][1] == "readable" and \
                    not any(lo <= addr and addr + n <= hi for lo, hi in chain.header):
                self._stamp(chain, "data_first", once=True)
                self._stamp(chain, "data_last")
        else:
            hit = self._returned.find(addr)
            if hit is not None:
                lo, hi, (chain, kind) = hit
                what = "indirect table" if kind == "table" else f"{kind} buffer"
                self._violation(f"the DUT read {n} bytes at {addr:#x}, in the {what} of queue "
                                f"{chain.q} head {chain.head}, after that chain's used element "
                                f"returned it [VIRTIO-1.2 2.7.8.2]")

    def dut_write(self, addr, data):
        """A Memory Write the DUT sent (not an MSI-X message): ``data``, its enabled bytes,
        from ``addr``."""
        self._sync()
        n = len(data)
        for v in self._queues.values():
            if v.used <= addr < v.used + 6 + 8 * v.size:
                self._write_used(v, addr - v.used, data)
                return
        hit = self._live.find(addr)
        if hit is not None:
            lo, hi, (chain, kind) = hit
            if kind == "writable":
                self._write_buffer(chain, addr, n)
            return
        hit = self._returned.find(addr)
        if hit is not None:
            lo, hi, (chain, kind) = hit
            self._violation(f"the DUT wrote {n} bytes at {addr:#x}, into a buffer of queue "
                            f"{chain.q} head {chain.head}, after the used element that "
                            f"returned the chain [VIRTIO-1.2 2.7.8.2]")

    def msix_message(self, vector):
        """The DUT sent the MSI-X message of table entry ``vector``."""
        self._sync()
        if vector == self.model.msix_config:
            return          # a configuration change notification
        queues = [v for q, v in self._queues.items()
                  if self.model.queues[q].msix_vector == vector]
        if not queues:
            return
        self.counts["notifications"] += 1
        if not any(v.fresh for v in queues):
            self._violation(f"MSI-X message of vector {vector} (queue "
                            f"{', '.join(str(v.q) for v in queues)}) with no used->idx "
                            f"written since the last one: the notification came before the "
                            f"index it announces [VIRTIO-1.2 2.7.10]")
        for v in queues:
            v.fresh = False

    def unannounced(self):
        """The queues whose ``used->idx`` was written since their last notification."""
        self._sync()
        return sorted(q for q, v in self._queues.items() if v.fresh)

    def intx_asserted(self):
        """INTA# rose: the ISR went from 0 to non-zero [VIRTIO-1.2 4.1.4.5]."""
        self._sync()
        m = self.model
        if m.isr & 2 or m.device_status & rm.STATUS_DEVICE_NEEDS_RESET or not self._queues:
            return          # a configuration change notification (or nothing to announce)
        self.counts["notifications"] += 1
        if not any(v.fresh for v in self._queues.values()):
            self._violation("INTA# asserted with no used->idx written since the last time: the "
                            "notification came before the index it announces "
                            "[VIRTIO-1.2 2.7.10]")
        for v in self._queues.values():
            v.fresh = False

    # -- the driver's side: what avail->idx has published -------------------------------------

    def _sync(self):
        m = self.model
        # [VIRTIO-1.2 2.9] The avail indices notifications carried since the last look.
        notified = {}
        for q, idx in m.doorbells[self._doorbells:]:
            if idx is not None:
                notified.setdefault(q, []).append(idx)
        self._doorbells = len(m.doorbells)
        for q, qs in enumerate(m.queues):
            v = self._queues.get(q)
            key = (qs.desc, qs.driver, qs.device, qs.size)
            if not qs.enable:
                if v is not None:
                    self._drop(v)
                continue
            if v is None or v.key() != key:
                if v is not None:
                    self._drop(v)
                v = self._queues[q] = _Queue(q, *key)
            in_memory = int.from_bytes(self.read(v.avail + 2, 2), "little")
            idx = in_memory
            if v.lead and 0 < (v.seen_idx - in_memory) & U16 <= v.size:
                idx = v.seen_idx        # behind what a notification published
            for n_idx in notified.get(q, []):
                if 0 < (n_idx - v.seen_idx) & U16 <= v.size and \
                        (n_idx - v.seen_idx) & U16 > (idx - v.seen_idx) & U16:
                    idx = n_idx
            new = (idx - v.seen_idx) & U16
            if not new:
                continue
            v.lead = idx != in_memory
            # Entries beyond a queue size ahead are malformed; the first size of them still
            # hold heads the device may look at.
            for i in range(v.published, v.published + min(new, v.size)):
                slot = i % v.size
                head = int.from_bytes(self.read(v.avail + 4 + 2 * slot, 2), "little")
                self._publish(v, head)
                v.slots[slot] = head
            v.seen_idx = idx
            v.published += new

    def _drop(self, v):
        for chain in v.chains.values():
            for lo, hi, kind in chain.regions:
                self._live.remove(lo, chain)
        del self._queues[v.q]

    def _publish(self, v, head):
        if head >= v.size or head in v.chains:
            return          # out of range (malformed) or in flight twice: no chain to follow
        chain = _Chain(v.q, head)
        read = self.read
        i, seen = head, set()
        writable = []
        while i < v.size and i not in seen and i not in v.owner:
            seen.add(i)
            chain.descs.append(i)
            addr, n, flags, nxt = _DESC.unpack(read(v.desc + 16 * i, 16))
            if flags & rm.VIRTQ_DESC_F_INDIRECT:
                self._follow_table(chain, addr, n, writable)
            else:
                self._region(chain, addr, n, flags, writable)
            if not flags & rm.VIRTQ_DESC_F_NEXT:
                break
            i = nxt
        # The request header: the first 16 device-readable bytes [VIRTIO-1.2 5.2.6].
        need = 16
        for lo, hi, kind in chain.regions:
            if kind == "readable" and need > 0 and hi > lo:
                chain.header.append((lo, min(hi, lo + need)))
                need -= min(hi, lo + need) - lo
        last = [(a, n) for a, n in writable if n]
        chain.status_addr = last[-1][0] + last[-1][1] - 1 if last else None
        v.chains[head] = chain
        for d in chain.descs:
            v.owner[d] = head
        for lo, hi, kind in chain.regions:
            if hi > lo:
                # Host memory of a returned chain may hold this one's buffers now.
                self._returned.carve(lo, hi)
                self._live.add(lo, hi, (chain, kind))
        chain.regions = [(lo, hi, kind) for lo, hi, kind in chain.regions if hi > lo]

    def _follow_table(self, chain, addr, n, writable):
        chain.regions.append((addr, addr + n, "table"))
        k, seen = 0, set()
        while k < n // 16 and k not in seen:
            seen.add(k)
            a, ln, flags, nxt = _DESC.unpack(self.read(addr + 16 * k, 16))
            if flags & rm.VIRTQ_DESC_F_INDIRECT:
                chain.regions.append((a, a + ln, "table"))     # nested: malformed
            else:
                self._region(chain, a, ln, flags, writable)
            if not flags & rm.VIRTQ_DESC_F_NEXT:
                break
            k = nxt

    @staticmethod
    def _region(chain, addr, n, flags, writable):
        if flags & rm.VIRTQ_DESC_F_WRITE:
            chain.regions.append((addr, addr + n, "writable"))
            writable.append((addr, n))
        else:
            chain.regions.append((addr, addr + n, "readable"))

    # -- reads -----------------------------------------------------------------------------------

    def _read_descriptor(self, v, entry):
        if entry in v.owner and self.now is not None:
            self._stamp(v.chains[v.owner[entry]], "fetch", once=True)
        if entry not in v.owner:
            inflight = v.published - v.returned
            self._violation(f"the DUT read descriptor {entry} of queue {v.q}, which no chain "
                            f"made available holds (avail->idx {v.seen_idx}, {inflight} "
                            f"chains in flight): a read before the avail->idx that publishes "
                            f"it, or after the used element that returned it "
                            f"[VIRTIO-1.2 2.7.13]")

    def _read_avail(self, v, lo, hi):
        # Entries the device may still have to read: from the chains returned so far (the
        # device has consumed at least that many) up to what avail->idx published.
        if v.published - v.returned >= v.size:
            return
        allowed = {i % v.size for i in range(v.returned, v.published)}
        for slot in range((lo - v.avail - 4) // 2, (hi - v.avail - 4 + 1) // 2):
            chain = v.chains.get(v.slots.get(slot)) if slot in allowed else None
            if chain is not None and self.now is not None:
                self._stamp(chain, "fetch", once=True)
            if slot not in allowed:
                self._violation(f"the DUT read avail->ring[{slot}] of queue {v.q}, which "
                                f"avail->idx ({v.seen_idx}) has not published "
                                f"[VIRTIO-1.2 2.7.6, 2.7.13.3]")
                return

    # -- writes ----------------------------------------------------------------------------------

    def _write_buffer(self, chain, addr, n):
        status = chain.status_addr
        if self.now is not None and (n > 1 or addr != status):
            self._stamp(chain, "data_first", once=True)
            self._stamp(chain, "data_last")
        if status is not None and addr <= status < addr + n:
            chain.status_written = True
            if self.now is not None:
                self._stamp(chain, "status")
        elif chain.status_written:
            self._violation(f"the DUT wrote {n} bytes at {addr:#x}, data of queue {chain.q} "
                            f"head {chain.head}, after its status byte at {status:#x}: the "
                            f"status reports the data, so it comes last [VIRTIO-1.2 5.2.6]")

    def _write_used(self, v, offset, data):
        n = len(data)
        end = offset + n
        elements = []
        # [VIRTIO-1.2 2.7.8] struct virtq_used: flags (0), idx (2), ring[size] (4), avail_event.
        first = max(0, (offset - 4) // 8)
        for slot in range(first, v.size):
            lo = 4 + 8 * slot
            if lo >= end:
                break
            if lo + 8 <= offset:
                continue
            buf, mask = v.partial.get(slot, (bytearray(8), 0))
            for k in range(8):
                if offset <= lo + k < end:
                    buf[k] = data[lo + k - offset]
                    mask |= 1 << k
            if mask == 0xff:
                v.partial.pop(slot, None)
                elements.append(slot)
                self._element(v, slot, *_ELEM.unpack(bytes(buf)))
            else:
                v.partial[slot] = (buf, mask)
        if offset <= 2 and end >= 4:
            idx = int.from_bytes(data[2 - offset:4 - offset], "little")
            self._used_idx(v, idx, elements)

    def _element(self, v, slot, head, length):
        self.counts["elements"] += 1
        chain = v.chains.get(head)
        if chain is None:
            self._violation(f"the DUT wrote used->ring[{slot}] of queue {v.q} with id {head}, "
                            f"which is not the head of a chain in flight [VIRTIO-1.2 2.7.8]")
            v.elements[slot] = None
            return
        if not chain.status_written:
            self._violation(f"the DUT wrote used->ring[{slot}] of queue {v.q} for head {head} "
                            f"before that request's status byte"
                            + (f" at {chain.status_addr:#x}" if chain.status_addr is not None
                               else "") + " [VIRTIO-1.2 2.7.8.2, 5.2.6]")
        # The chain goes back to the driver.
        chain.returned = True
        if self.now is not None:
            self._stamp(chain, "element")
        del v.chains[head]
        for d in chain.descs:
            v.owner.pop(d, None)
        for lo, hi, kind in chain.regions:
            self._live.remove(lo, chain)
            self._returned.add(lo, hi, (chain, kind))
        v.returned += 1
        v.elements[slot] = chain

    def _used_idx(self, v, idx, same_write):
        self.counts["indices"] += 1
        moved = (idx - v.used_idx) & U16
        for k in range(moved):
            slot = (v.used_idx + k) % v.size
            if slot in same_write:
                self._violation(f"the DUT wrote used->idx {idx} of queue {v.q} in the same "
                                f"write as used->ring[{slot}], the element it publishes: the "
                                f"element must be visible first [VIRTIO-1.2 2.7.8.2]")
            elif slot not in v.elements:
                self._violation(f"the DUT wrote used->idx {idx} of queue {v.q}, publishing "
                                f"used->ring[{slot}] (entry {(v.used_idx + k) & U16}), before "
                                f"writing that element [VIRTIO-1.2 2.7.8.2]")
            chain = v.elements.pop(slot, None)
            if chain is not None and self.now is not None:
                self._stamp(chain, "published")
                if self.on_timeline is not None:
                    self.on_timeline(chain.q, chain.head, chain.times)
        if moved:
            v.fresh = True
        v.used_idx = idx

    def _stamp(self, chain, what, once=False):
        if not (once and what in chain.times):
            chain.times[what] = self.now()

    def _violation(self, message):
        self.violations += 1
        self.error("ORDERING: " + message)
