# Ref: OASIS virtio 1.2, sections 2.7 (Split Virtqueues), 5.2.6 (Block Device Operation); Linux
# include/uapi/linux/virtio_ring.h (vring_need_event), include/uapi/linux/virtio_blk.h
"""Golden model of virtio-blk request processing over split virtqueues.

:class:`BlkProcessor` owns the disk and the device's side of each virtqueue (``last_avail_idx``,
the used ``idx``, the used ``idx`` at the last interrupt decision) and serves the available ring
the way the RTL does. Host memory is any object with ``read(addr, n) -> bytes`` and
``write(addr, data)``; every access the device makes to it goes through those two calls.

What one :meth:`BlkProcessor.process` call does, on an available buffer notification:

1. Read ``avail->idx``, then serve every entry from ``last_avail_idx`` up to it, in order, in
   reads of up to ``avail_prefetch`` entries that stop at the ring's end, as the RTL reads them;
   ``avail->idx`` is read again right behind the read of the last entries it showed (before
   those are served), and the entries it shows beyond them are served too.
   With ``VIRTIO_F_NOTIFICATION_DATA`` and a notification that carried an avail index
   [VIRTIO-1.2 2.9] the rules of the RTL's avail reader (``rtl/blk_avail.py``) apply: an index
   at ``last_avail_idx`` is a repeat, and nothing is read or written; one ahead of it by at
   most the queue size is taken as ``avail->idx`` without reading it; one further ahead (or a
   stale one behind, the same modulo 2**16) counts as no data. The read of ``avail->idx``
   behind the entries then keeps the notified index when it shows less, unless it is behind
   ``last_avail_idx`` as it was when the read went out (the first entry of that read): then it
   is taken, and is more than the queue size ahead, malformed. So a driver whose notification
   runs ahead of its ``avail->idx`` (a lying one: Linux writes ``avail->idx`` first) gets the
   entries up to the notified index served, whatever they hold, and the device broken when a
   read of entries starts past the ``avail->idx`` in memory.
2. For each entry: walk the descriptor chain, execute the request against the disk, write the
   data and the status byte, then the used element ``{id = head, len}`` and then ``used->idx``.
3. With ``VIRTIO_F_EVENT_IDX``, write ``avail_event = last_avail_idx``.
4. If at least one used element was added, decide whether to interrupt: one decision for the
   batch. (The RTL decides after every request; "an interrupt for the batch" is the same as "an
   interrupt after one of its requests" while ``used_event`` and ``avail->flags`` stay put,
   because ``vring_need_event`` over consecutive intervals fires in exactly one of them.)

The request is a byte stream over the chain: the device-readable bytes, in chain order, are
``struct virtio_blk_outhdr`` (16 bytes) followed by the OUT data or the discard/write zeroes
segments; the device-writable bytes are the IN data (or the ID string) followed by the status
byte, which is the last writable byte. No descriptor boundary matters: the header may be split
across descriptors and the status byte may share a descriptor with data.

Choices where the specification leaves room (the RTL is to make the same ones):

* The used ``len`` is ``W``, the total of the device-writable bytes, for every request and
  status, as QEMU reports ``in_len``. Only a successful IN writes all of them; for the others it
  overstates what [VIRTIO-1.2 2.7.8.2] asks for, which Linux tolerates (it ignores ``len`` for
  virtio-blk) and [VIRTIO-1.2 5.2.6.3] records as what devices have always done.
* A malformed chain (see :class:`Malformed`) is not served: nothing is written for it, it is not
  consumed (``last_avail_idx`` stays on it), no later entry is served, and the device stays
  broken until :meth:`BlkProcessor.reset` [VIRTIO-1.2 2.1.2: DEVICE_NEEDS_RESET]. The batch
  ends there: ``avail_event`` is not written, but the interrupt decision is still made for the
  entries served before it (the RTL decides after every request, so it has made it already).
* ``avail->idx`` more than the queue size ahead of ``last_avail_idx`` [VIRTIO-1.2 2.7.13] breaks
  the device the same way, before anything more is served. (The testbench calls
  :meth:`BlkProcessor.process` on every submission, with memory holding still meanwhile, so
  the reads of ``avail->idx`` within one call agree unless the driver lies.)
* ``avail_event`` is written at the end of every batch, also when no entry was served (but not
  for a repeated notification index, which does nothing); ``avail->idx`` is read once more
  after it, as the RTL does.
* A well formed chain of more than ``seg_max + 2`` buffer descriptors (the descriptor that
  points to an indirect table is not counted; zero-length ones are) completes IOERR whatever
  its type, without looking further at the request: [VIRTIO-1.2 2.7.4.1] lets the device limit
  chain length.
* The loop check counts descriptors per table: more than the queue size visited in the
  descriptor table, or more than ``len / 16`` in the indirect table, is a loop.
* A readable descriptor after a writable one is malformed even when either has length 0.
* Discard and write zeroes are all or nothing: every segment is checked before any is zeroed,
  the UNSUPP checks of all segments before their IOERR checks.
* Completion ``op`` and ``sector`` are read from the header even when the request is not
  executed (more than ``seg_max + 2`` descriptors); they are for logs, not for comparison.
"""

import struct
from dataclasses import dataclass, field

from . import regmap as rm


__all__ = ["BlkProcessor", "Batch", "Completion", "RingState", "Malformed", "vring_need_event"]


U16 = 0xffff
SECTOR = rm.BLK_SECTOR_BYTES


def vring_need_event(event, new, old):
    """[VIRTIO-1.2 2.7.7.2] Linux ``vring_need_event``: ``True`` if the used ``idx`` moving from
    ``old`` to ``new`` passed ``event`` (all 16-bit, wrapping)."""
    return (new - event - 1) & U16 < (new - old) & U16


@dataclass(frozen=True)
class Completion:
    """One request the device completed (a used element it wrote).

    Attributes
    ----------
    head : int
        Head descriptor index, the used element's ``id``.
    used_len : int
        The used element's ``len``: total device-writable bytes of the chain.
    status : int
        ``VIRTIO_BLK_S_*`` written to the status byte.
    op : int
        ``type`` from the request header.
    sector : int
        ``sector`` from the request header.
    nbytes : int
        Data moved by a request that completed OK: bytes read from the disk (IN), written to it
        (OUT), zeroed on it (DISCARD, WRITE_ZEROES), ID bytes written (GET_ID); 0 otherwise.
    """
    head: int
    used_len: int
    status: int
    op: int
    sector: int
    nbytes: int


@dataclass
class Batch:
    """What one :meth:`BlkProcessor.process` call did.

    Attributes
    ----------
    completions : list of Completion
        In used ring order.
    interrupt : bool
        The device sends a used buffer notification for this batch.
    needs_reset : bool
        A malformed chain was found (now or earlier): the device sets DEVICE_NEEDS_RESET.
    error : str
        Why, when ``needs_reset`` was set by this batch.
    """
    completions: list = field(default_factory=list)
    interrupt: bool = False
    needs_reset: bool = False
    error: str = ""


@dataclass
class RingState:
    """The device's side of one split virtqueue; every index is 16-bit and wraps.

    Attributes
    ----------
    last_avail_idx : int
        Next available ring entry to serve.
    used_idx : int
        Next used ring entry to write (the value last written to ``used->idx``).
    signalled_used : int
        ``used_idx`` at the last interrupt decision (``old`` of ``vring_need_event``).
    """
    last_avail_idx: int = 0
    used_idx: int = 0
    signalled_used: int = 0


class Malformed(Exception):
    """A descriptor chain the device cannot serve: it needs a reset [VIRTIO-1.2 2.1.2]."""


# -- host memory access, little endian [VIRTIO-1.2 2.7] -------------------------------------------

def _read_u16(mem, addr):
    return int.from_bytes(mem.read(addr, 2), "little")


def _write_u16(mem, addr, value):
    mem.write(addr, (value & U16).to_bytes(2, "little"))


def _gather(mem, segs, offset, n):
    """Bytes ``[offset, offset + n)`` of the stream formed by ``segs`` ``[(addr, len)]``."""
    out = bytearray()
    for addr, length in segs:
        if n == 0:
            break
        if offset >= length:
            offset -= length
            continue
        take = min(length - offset, n)
        out += mem.read(addr + offset, take)
        offset, n = 0, n - take
    assert n == 0
    return bytes(out)


def _scatter(mem, segs, offset, data):
    """Write ``data`` at ``offset`` of the stream formed by ``segs`` ``[(addr, len)]``."""
    data = bytes(data)
    for addr, length in segs:
        if not data:
            break
        if offset >= length:
            offset -= length
            continue
        take = min(length - offset, len(data))
        mem.write(addr + offset, data[:take])
        offset, data = 0, data[take:]
    assert not data


class BlkProcessor:
    """The request engine of the virtio-blk device: disk, ring state, request execution.

    Parameters
    ----------
    params : model.params.DeviceParams
        ``capacity``, ``num_queues``, ``seg_max``, ``read_only``, the discard and write zeroes
        limits and ``serial`` are used.

    Attributes
    ----------
    disk : bytearray
        ``capacity * 512`` bytes, zero at construction; not cleared by :meth:`reset`.
    rings : list of RingState
        One per queue; tests may set the indices directly (e.g. to test wrapping).
    broken : bool
        A malformed chain was found; nothing is served until :meth:`reset`.
    """

    def __init__(self, params):
        self.p = params
        self.disk = bytearray(params.capacity * SECTOR)
        self.reset()

    def reset(self):
        """[VIRTIO-1.2 2.4] Device reset: ring state back to 0, no longer broken. The disk
        keeps its contents."""
        self.rings = [RingState() for _ in range(self.p.num_queues)]
        self.broken = False

    # -- available ring -> used ring ------------------------------------------------------------

    def process(self, q, mem, queue, features, avail_idx=None):
        """Serve queue ``q`` after an available buffer notification.

        Parameters
        ----------
        q : int
            Queue index.
        mem : object
            Host memory: ``read(addr, n) -> bytes``, ``write(addr, data)``.
        queue : model.device.QueueState
            ``size``, ``desc``, ``driver`` (available ring) and ``device`` (used ring).
        features : int
            The negotiated (driver) feature bits.
        avail_idx : int or None
            The avail index the notification carried (VIRTIO_F_NOTIFICATION_DATA and a 32-bit
            write, :meth:`model.device.VirtioBlkModel.bar_write_dw`); None: a notification
            without data. Ignored without the feature.

        Returns
        -------
        Batch

        Raises
        ------
        ValueError
            If ``queue.size`` is not a power of two from 1 to 32768: the driver broke
            [VIRTIO-1.2 2.7] and the device's behaviour is not defined.
        """
        batch = Batch()
        if self.broken:
            batch.needs_reset = True
            return batch
        size = queue.size
        if not (1 <= size <= 32768 and size & (size - 1) == 0):
            raise ValueError(f"queue {q} size must be a power of two from 1 to 32768 "
                             f"[VIRTIO-1.2 2.7], not {size}")
        ring = self.rings[q]
        event_idx = bool(features >> rm.VIRTIO_RING_F_EVENT_IDX & 1)
        notification_data = bool(features >> rm.VIRTIO_F_NOTIFICATION_DATA & 1)
        # [VIRTIO-1.2 2.7.6] struct virtq_avail: flags u16, idx u16, ring[size] u16, used_event.
        # [VIRTIO-1.2 2.7.8] struct virtq_used: flags u16, idx u16, ring[size] {id u32, len u32},
        # avail_event.
        known = None
        if notification_data and avail_idx is not None:
            # [VIRTIO-1.2 2.9] The driver's avail index, as the RTL's doorbell rules take it
            # (rtl/blk_avail.py): at last_avail_idx, a repeat that changes nothing; ahead by at
            # most the queue size, the known index with no read of avail->idx; further (or a
            # stale one behind, the same modulo 2**16), a notification without data.
            ahead = (avail_idx - ring.last_avail_idx) & U16
            if ahead == 0:
                return batch
            if ahead <= size:
                known = avail_idx & U16
        if known is None:
            known = _read_u16(mem, queue.driver + 2)
        while not batch.needs_reset:
            while ring.last_avail_idx != known and not batch.needs_reset:
                if (known - ring.last_avail_idx) & U16 > size:
                    # [VIRTIO-1.2 2.7.13] The ring holds at most size entries: idx cannot run
                    # further ahead of what the device has served.
                    self.broken = True
                    batch.needs_reset = True
                    batch.error = (f"queue {q} avail idx {known} is more than {size} ahead "
                                   f"of {ring.last_avail_idx}")
                    break
                known = self._serve_entries(q, mem, queue, features, batch, known,
                                            notification_data)
            if batch.needs_reset or not event_idx:
                break
            # [VIRTIO-1.2 2.7.10] avail_event: the driver need not notify before it adds the
            # entry at this index; the device has served everything before it. Then avail->idx
            # is looked at again, for entries published before avail_event was seen.
            _write_u16(mem, queue.device + 4 + 8 * size, ring.last_avail_idx)
            known = _read_u16(mem, queue.driver + 2)
            if known == ring.last_avail_idx:
                break
        if batch.completions:
            batch.interrupt = self._need_interrupt(mem, queue, ring, event_idx)
        return batch

    def _serve_entries(self, q, mem, queue, features, batch, known, notification_data):
        """One read of avail entries, as the RTL makes it: from ``last_avail_idx`` towards
        ``known`` (at most the queue size ahead), up to ``avail_prefetch`` entries and not past
        the ring's end. When they are the last ``known`` shows, ``avail->idx`` is read right
        behind them, before any of them is served. Serves them in order (stopping at a
        malformed one) and returns the known index after that read."""
        ring, size = self.rings[q], queue.size
        start = ring.last_avail_idx
        ahead = (known - start) & U16
        n = min(ahead, self.p.avail_prefetch, size - start % size)
        heads = [_read_u16(mem, queue.driver + 4 + 2 * ((start + k) % size)) for k in range(n)]
        read_idx = _read_u16(mem, queue.driver + 2) if n == ahead else None
        for head in heads:
            try:
                c = self._serve(head, mem, queue, features)
            except Malformed as e:
                self.broken = True
                batch.needs_reset = True
                batch.error = f"queue {q} avail entry {ring.last_avail_idx} head {head}: {e}"
                return known
            # [VIRTIO-1.2 2.7.8.2] The device sets len before it updates the used idx.
            slot = queue.device + 4 + 8 * (ring.used_idx % size)
            mem.write(slot, struct.pack(rm.struct_format(rm.VIRTQ_USED_ELEM), head, c.used_len))
            ring.used_idx = (ring.used_idx + 1) & U16
            _write_u16(mem, queue.device + 2, ring.used_idx)
            ring.last_avail_idx = (ring.last_avail_idx + 1) & U16
            batch.completions.append(c)
        if read_idx is None:
            return known
        # The index read is compared with last_avail_idx as it was when the read went out (at
        # the first of these entries). With NOTIFICATION_DATA a doorbell may have brought a
        # newer index than the read shows (a driver that races its own notification, or lies):
        # the known index stays. Otherwise the index read is the known one, more than the
        # queue size ahead of last_avail_idx malformed, as without the feature.
        d_read = (read_idx - start) & U16
        if notification_data and d_read <= size and d_read < ahead:
            return known
        return read_idx

    def _need_interrupt(self, mem, queue, ring, event_idx):
        if event_idx:
            # [VIRTIO-1.2 2.7.7.2] With EVENT_IDX the device ignores avail->flags and notifies
            # when the used idx moved past used_event since the last decision.
            used_event = _read_u16(mem, queue.driver + 4 + 2 * queue.size)
            irq = vring_need_event(used_event, ring.used_idx, ring.signalled_used)
        else:
            # [VIRTIO-1.2 2.7.7.2] Without EVENT_IDX: notify unless VIRTQ_AVAIL_F_NO_INTERRUPT.
            irq = not _read_u16(mem, queue.driver) & rm.VIRTQ_AVAIL_F_NO_INTERRUPT
        ring.signalled_used = ring.used_idx
        return irq

    # -- descriptor chain -----------------------------------------------------------------------

    def _walk(self, head, mem, queue, features):
        """Follow the chain from ``head``; returns ``(readable, writable, count)``, the readable
        and writable segments ``[(addr, len)]`` in chain order and the number of buffer
        descriptors. Raises :class:`Malformed`."""
        if head >= queue.size:
            raise Malformed(f"head {head} is not below the queue size {queue.size}")
        table, table_size, i = queue.desc, queue.size, head
        in_indirect = False
        visited = 0
        count = 0
        readable, writable = [], []
        while True:
            visited += 1
            if visited > table_size:
                # [VIRTIO-1.2 2.7.5.2, 2.7.5.3.1] A chain is never longer than its table.
                raise Malformed(f"more than {table_size} descriptors in a table: a loop")
            # [VIRTIO-1.2 2.7.5] struct virtq_desc: addr u64, len u32, flags u16, next u16.
            addr, length, flags, nxt = struct.unpack(
                rm.struct_format(rm.VIRTQ_DESC),
                mem.read(table + rm.VIRTQ_DESC_BYTES * i, rm.VIRTQ_DESC_BYTES))
            if flags & rm.VIRTQ_DESC_F_INDIRECT:
                # [VIRTIO-1.2 2.7.5.3.1] Driver requirements on indirect descriptors.
                if not features >> rm.VIRTIO_RING_F_INDIRECT_DESC & 1:
                    raise Malformed("INDIRECT without VIRTIO_F_INDIRECT_DESC")
                if in_indirect:
                    raise Malformed("INDIRECT inside an indirect table")
                if flags & rm.VIRTQ_DESC_F_NEXT:
                    raise Malformed("INDIRECT together with NEXT")
                if length == 0 or length % 16:
                    raise Malformed(f"indirect table length {length} is not a positive "
                                    f"multiple of 16")
                # [VIRTIO-1.2 2.7.5.3.2] The WRITE flag of this descriptor is ignored; the
                # chain goes on at entry 0 of the table.
                table, table_size, i = addr, length // 16, 0
                in_indirect = True
                visited = 0
                continue
            count += 1
            if flags & rm.VIRTQ_DESC_F_WRITE:
                writable.append((addr, length))
            elif writable:
                # [VIRTIO-1.2 2.7.4.2] Device-writable elements come after device-readable ones.
                raise Malformed("a device-readable descriptor after a device-writable one")
            else:
                readable.append((addr, length))
            if not flags & rm.VIRTQ_DESC_F_NEXT:
                return readable, writable, count
            if nxt >= table_size:
                raise Malformed(f"next {nxt} is not below the table size {table_size}")
            i = nxt

    def _serve(self, head, mem, queue, features):
        """Walk, execute and write the status byte of the request at ``head``."""
        readable, writable, count = self._walk(head, mem, queue, features)
        r = sum(length for _, length in readable)
        w = sum(length for _, length in writable)
        # [VIRTIO-1.2 5.2.6] struct virtio_blk_req: type, reserved, sector are device-readable,
        # status is the last device-writable byte.
        if r < rm.BLK_OUTHDR_BYTES:
            raise Malformed(f"{r} device-readable bytes, fewer than the 16-byte header")
        if w < 1:
            raise Malformed("no device-writable byte for the status")
        op, _reserved, sector = struct.unpack(
            rm.struct_format(rm.BLK_OUTHDR), _gather(mem, readable, 0, rm.BLK_OUTHDR_BYTES))
        if count > self.p.seg_max + 2:
            # [VIRTIO-1.2 2.7.4.1] The device MAY limit the descriptors in a chain: seg_max data
            # segments plus the header and the status.
            status, nbytes = rm.VIRTIO_BLK_S_IOERR, 0
        else:
            status, nbytes = self._execute(op, sector, mem, readable, r, writable, w, features)
        _scatter(mem, writable, w - 1, bytes([status]))
        return Completion(head=head, used_len=w, status=status, op=op, sector=sector,
                          nbytes=nbytes)

    # -- requests [VIRTIO-1.2 5.2.6] ------------------------------------------------------------

    def _execute(self, op, sector, mem, readable, r, writable, w, features):
        """Run one request; returns ``(status, nbytes)``. Data effects only on OK."""
        p = self.p
        if op == rm.VIRTIO_BLK_T_IN:
            n = w - 1
            # [VIRTIO-1.2 5.2.6.1] Data is a multiple of 512 bytes and within capacity.
            if n % SECTOR or sector + n // SECTOR > p.capacity:
                return rm.VIRTIO_BLK_S_IOERR, 0
            _scatter(mem, writable, 0, self.disk[sector * SECTOR:sector * SECTOR + n])
            return rm.VIRTIO_BLK_S_OK, n
        if op == rm.VIRTIO_BLK_T_OUT:
            n = r - rm.BLK_OUTHDR_BYTES
            if n % SECTOR or sector + n // SECTOR > p.capacity:
                return rm.VIRTIO_BLK_S_IOERR, 0
            if p.read_only:
                # [VIRTIO-1.2 5.2.6.2] IOERR for a write when VIRTIO_BLK_F_RO is offered.
                return rm.VIRTIO_BLK_S_IOERR, 0
            data = _gather(mem, readable, rm.BLK_OUTHDR_BYTES, n)
            self.disk[sector * SECTOR:sector * SECTOR + n] = data
            return rm.VIRTIO_BLK_S_OK, n
        if op == rm.VIRTIO_BLK_T_FLUSH:
            # Writes are stable once completed (the disk has no cache): nothing to do.
            return rm.VIRTIO_BLK_S_OK, 0
        if op == rm.VIRTIO_BLK_T_GET_ID:
            n = min(rm.VIRTIO_BLK_ID_BYTES, w - 1)
            _scatter(mem, writable, 0, p.serial_bytes()[:n])
            return rm.VIRTIO_BLK_S_OK, n
        if op in (rm.VIRTIO_BLK_T_DISCARD, rm.VIRTIO_BLK_T_WRITE_ZEROES):
            return self._discard_write_zeroes(op, mem, readable, r, features)
        # GET_LIFETIME, SECURE_ERASE (features not offered) and unknown types.
        return rm.VIRTIO_BLK_S_UNSUPP, 0

    def _discard_write_zeroes(self, op, mem, readable, r, features):
        p = self.p
        if op == rm.VIRTIO_BLK_T_DISCARD:
            feature, max_seg, max_sectors = \
                rm.VIRTIO_BLK_F_DISCARD, p.max_discard_seg, p.max_discard_sectors
            allowed_flags = 0   # [VIRTIO-1.2 5.2.6.2] unmap set on a discard is UNSUPP
        else:
            feature, max_seg, max_sectors = \
                rm.VIRTIO_BLK_F_WRITE_ZEROES, p.max_write_zeroes_seg, p.max_write_zeroes_sectors
            allowed_flags = rm.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        if not features >> feature & 1:
            return rm.VIRTIO_BLK_S_UNSUPP, 0
        payload = r - rm.BLK_OUTHDR_BYTES
        n = payload // rm.BLK_DISCARD_SEG_BYTES
        # [VIRTIO-1.2 5.2.6.1] One or more whole segments, at most max_*_seg of them.
        if payload % rm.BLK_DISCARD_SEG_BYTES or not 1 <= n <= max_seg:
            return rm.VIRTIO_BLK_S_UNSUPP, 0
        # struct virtio_blk_discard_write_zeroes: sector u64, num_sectors u32, flags u32.
        size = rm.BLK_DISCARD_SEG_BYTES
        segs = [struct.unpack(rm.struct_format(rm.BLK_DISCARD_SEG),
                              _gather(mem, readable, rm.BLK_OUTHDR_BYTES + size * k, size))
                for k in range(n)]
        # [VIRTIO-1.2 5.2.6.2] UNSUPP if any unknown flag is set.
        if any(flags & ~allowed_flags for _, _, flags in segs):
            return rm.VIRTIO_BLK_S_UNSUPP, 0
        for sector, num, _ in segs:
            if num > max_sectors or sector + num > p.capacity:
                return rm.VIRTIO_BLK_S_IOERR, 0
        if p.read_only:
            return rm.VIRTIO_BLK_S_IOERR, 0
        # [VIRTIO-1.2 5.2.6.2] Reads after write zeroes return zeros; discarded sectors read as
        # zeros here too (the driver assumes nothing about them).
        for sector, num, _ in segs:
            self.disk[sector * SECTOR:(sector + num) * SECTOR] = bytes(num * SECTOR)
        return rm.VIRTIO_BLK_S_OK, sum(num for _, num, _ in segs) * SECTOR
