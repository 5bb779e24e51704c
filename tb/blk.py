# Ref: OASIS virtio 1.2 sections 5.2 (block device: 5.2.3 features, 5.2.4 configuration,
#      5.2.5 initialization, 5.2.6 operation), 2.7 (split virtqueues), 4.1.4.5 (ISR status),
#      4.1.5 (PCI notifications and MSI-X vectors); Linux drivers/block/virtio_blk.c,
#      drivers/virtio/virtio_pci_common.c (vp_find_vqs), drivers/virtio/virtio_ring.c
"""The testbench's virtio-blk driver: asynchronous block I/O over split virtqueues.

Two halves:

* :class:`BlkCore` is synchronous and needs no simulator: it turns a request (type, sector,
  payload, expected input length, scatter-gather :class:`Layout`) into host buffers and a
  descriptor chain on a :class:`~tb.virtqueue.SplitVirtqueue`, and turns used ring entries back
  into finished :class:`Request` objects (status byte, data, used length). The pure-Python tests
  drive the golden model with it directly.
* :class:`BlkDriver` is the cocotb side: it brings the device up the way Linux's
  ``virtblk_probe`` does on top of :class:`~tb.driver.VirtioPciDriver`, keeps many requests in
  flight on several queues, notifies the device, and completes requests from MSI-X vectors,
  from INTx (reading the ISR, which clears it), or by polling queues that suppress
  notifications.

A request is a byte stream over its chain [VIRTIO-1.2 2.7.4]: the device-readable bytes are
``struct virtio_blk_outhdr`` (16 bytes) and the payload; the device-writable bytes are the input
data and the status byte, last [VIRTIO-1.2 5.2.6]. A :class:`Layout` says how each stream is cut
into descriptors; :func:`random_layout` draws one of the layouts the specification allows.
"""

import logging
import struct
from dataclasses import dataclass, field

from model import regmap as rm
from .virtqueue import SplitVirtqueue, QueueFull
from .driver import DriverError


__all__ = ["BlkDriver", "BlkCore", "BlkConfig", "Request", "Layout", "random_layout",
           "DRIVER_FEATURES", "driver_features", "OP_NAMES"]


SECTOR = rm.BLK_SECTOR_BYTES
OUTHDR = rm.BLK_OUTHDR_BYTES
# A page of the page cache: Linux hands data to the device in pieces of at most this size.
PAGE = 4096

OP_NAMES = {
    rm.VIRTIO_BLK_T_IN: "IN", rm.VIRTIO_BLK_T_OUT: "OUT", rm.VIRTIO_BLK_T_FLUSH: "FLUSH",
    rm.VIRTIO_BLK_T_GET_ID: "GET_ID", rm.VIRTIO_BLK_T_GET_LIFETIME: "GET_LIFETIME",
    rm.VIRTIO_BLK_T_DISCARD: "DISCARD", rm.VIRTIO_BLK_T_WRITE_ZEROES: "WRITE_ZEROES",
    rm.VIRTIO_BLK_T_SECURE_ERASE: "SECURE_ERASE",
}

# The features this driver can use: Linux virtio_blk's feature table (without SCSI, zoned,
# secure erase, lifetime) plus the transport features of vring_transport_features that the
# split ring here implements (no packed ring, no in-order).
DRIVER_FEATURES = sum(1 << b for b in (
    rm.VIRTIO_BLK_F_SIZE_MAX, rm.VIRTIO_BLK_F_SEG_MAX, rm.VIRTIO_BLK_F_GEOMETRY,
    rm.VIRTIO_BLK_F_RO, rm.VIRTIO_BLK_F_BLK_SIZE, rm.VIRTIO_BLK_F_FLUSH,
    rm.VIRTIO_BLK_F_TOPOLOGY, rm.VIRTIO_BLK_F_CONFIG_WCE, rm.VIRTIO_BLK_F_MQ,
    rm.VIRTIO_BLK_F_DISCARD, rm.VIRTIO_BLK_F_WRITE_ZEROES,
    rm.VIRTIO_RING_F_INDIRECT_DESC, rm.VIRTIO_RING_F_EVENT_IDX, rm.VIRTIO_F_VERSION_1,
    rm.VIRTIO_F_ACCESS_PLATFORM, rm.VIRTIO_F_ORDER_PLATFORM, rm.VIRTIO_F_NOTIFICATION_DATA))


def driver_features(features=None, indirect=True, event_idx=False, notification_data=True):
    """The feature bits the driver is willing to accept: ``features`` (default
    :data:`DRIVER_FEATURES`), without INDIRECT_DESC / EVENT_IDX / NOTIFICATION_DATA unless
    asked for. The device's offer is ANDed in by :meth:`VirtioPciDriver.negotiate`."""
    f = DRIVER_FEATURES if features is None else features
    if not notification_data:
        f &= ~(1 << rm.VIRTIO_F_NOTIFICATION_DATA)
    if not indirect:
        f &= ~(1 << rm.VIRTIO_RING_F_INDIRECT_DESC)
    if not event_idx:
        f &= ~(1 << rm.VIRTIO_RING_F_EVENT_IDX)
    return f


def _has(features, bit):
    return bool(features >> bit & 1)


@dataclass
class BlkConfig:
    """[VIRTIO-1.2 5.2.4] struct virtio_blk_config, as the driver uses it.

    Fields whose feature was not negotiated hold what Linux assumes then: ``seg_max`` 1,
    ``size_max`` None (no limit), ``blk_size`` 512, ``num_queues`` 1, no discard / write zeroes.
    """
    capacity: int = 0
    size_max: int = None
    seg_max: int = 1
    cylinders: int = 0
    heads: int = 0
    sectors: int = 0
    blk_size: int = SECTOR
    physical_block_exp: int = 0
    alignment_offset: int = 0
    min_io_size: int = 0
    opt_io_size: int = 0
    writeback: int = 0
    num_queues: int = 1
    max_discard_sectors: int = 0
    max_discard_seg: int = 0
    discard_sector_alignment: int = 0
    max_write_zeroes_sectors: int = 0
    max_write_zeroes_seg: int = 0
    write_zeroes_may_unmap: int = 0

    # (name, offset, size, feature bit or None): the fields read, in Linux virtblk_probe order.
    FIELDS = (
        ("capacity", 0x00, 8, None),
        ("seg_max", 0x0c, 4, rm.VIRTIO_BLK_F_SEG_MAX),
        ("num_queues", 0x22, 2, rm.VIRTIO_BLK_F_MQ),
        ("size_max", 0x08, 4, rm.VIRTIO_BLK_F_SIZE_MAX),
        ("blk_size", 0x14, 4, rm.VIRTIO_BLK_F_BLK_SIZE),
        ("physical_block_exp", 0x18, 1, rm.VIRTIO_BLK_F_TOPOLOGY),
        ("alignment_offset", 0x19, 1, rm.VIRTIO_BLK_F_TOPOLOGY),
        ("min_io_size", 0x1a, 2, rm.VIRTIO_BLK_F_TOPOLOGY),
        ("opt_io_size", 0x1c, 4, rm.VIRTIO_BLK_F_TOPOLOGY),
        ("cylinders", 0x10, 2, rm.VIRTIO_BLK_F_GEOMETRY),
        ("heads", 0x12, 1, rm.VIRTIO_BLK_F_GEOMETRY),
        ("sectors", 0x13, 1, rm.VIRTIO_BLK_F_GEOMETRY),
        ("writeback", 0x20, 1, rm.VIRTIO_BLK_F_CONFIG_WCE),
        ("max_discard_sectors", 0x24, 4, rm.VIRTIO_BLK_F_DISCARD),
        ("max_discard_seg", 0x28, 4, rm.VIRTIO_BLK_F_DISCARD),
        ("discard_sector_alignment", 0x2c, 4, rm.VIRTIO_BLK_F_DISCARD),
        ("max_write_zeroes_sectors", 0x30, 4, rm.VIRTIO_BLK_F_WRITE_ZEROES),
        ("max_write_zeroes_seg", 0x34, 4, rm.VIRTIO_BLK_F_WRITE_ZEROES),
        ("write_zeroes_may_unmap", 0x38, 1, rm.VIRTIO_BLK_F_WRITE_ZEROES),
    )

    @classmethod
    def fields_for(cls, features):
        """The ``(name, offset, size)`` a driver with ``features`` reads."""
        return [(n, o, s) for n, o, s, bit in cls.FIELDS if bit is None or _has(features, bit)]

    def set_field(self, name, value):
        # Linux: a seg_max of 0 means 1; num_queues 0 means 1 (virtblk_probe, init_vq).
        if name in ("seg_max", "num_queues"):
            value = value or 1
        setattr(self, name, value)

    @classmethod
    def from_bytes(cls, raw, features):
        """Decode the config structure ``raw`` as a driver with ``features`` would read it."""
        cfg = cls()
        for name, off, size in cls.fields_for(features):
            cfg.set_field(name, int.from_bytes(raw[off:off + size], "little"))
        return cfg


@dataclass(frozen=True)
class Layout:
    """How one request is cut into descriptors [VIRTIO-1.2 2.7.4: framing is free].

    Parameters
    ----------
    readable : tuple of int
        Lengths of the device-readable descriptors, in chain order; they cut the stream
        ``outhdr (16 bytes) + payload`` anywhere: the header may take several descriptors or
        share one with the payload.
    writable : tuple of int
        Lengths of the device-writable descriptors; they cut ``input data + status byte``. A
        last length of 1 with input data present is the status byte alone; otherwise it shares
        the last descriptor with the data.
    indirect : bool
        Put the descriptors in an indirect table [VIRTIO-1.2 2.7.5.3].
    direct_prefix : int
        With ``indirect``: this many leading descriptors stay in the ring, chained to the
        INDIRECT descriptor that holds the rest [VIRTIO-1.2 2.7.5.3.2].
    skews : tuple of int
        Per descriptor (readable then writable), bytes between the start of its allocation and
        the buffer: misaligned and page-crossing buffers. Empty means all 0.
    """
    readable: tuple
    writable: tuple
    indirect: bool = False
    direct_prefix: int = 0
    skews: tuple = ()

    @classmethod
    def simple(cls, out_len, in_len, indirect=False):
        """Linux's layout: header, payload, input data, status: one descriptor each."""
        return cls((OUTHDR,) + ((out_len,) if out_len else ()),
                   ((in_len,) if in_len else ()) + (1,), indirect)

    @property
    def count(self):
        return len(self.readable) + len(self.writable)

    def check(self, out_len, in_len):
        """Raise ValueError unless this layout frames a request with an ``out_len``-byte payload
        and ``in_len`` bytes of input data."""
        if sum(self.readable) != OUTHDR + out_len:
            raise ValueError(f"readable lengths {self.readable} sum to {sum(self.readable)}, "
                             f"not the {OUTHDR + out_len} bytes of header and payload")
        if sum(self.writable) != in_len + 1:
            raise ValueError(f"writable lengths {self.writable} sum to {sum(self.writable)}, "
                             f"not the {in_len + 1} bytes of input data and status")
        if any(n < 0 for n in self.readable + self.writable):
            raise ValueError(f"negative descriptor length in {self.readable} {self.writable}")
        if self.skews and len(self.skews) != self.count:
            raise ValueError(f"{len(self.skews)} skews for {self.count} descriptors")
        if self.direct_prefix and not (self.indirect and self.direct_prefix < self.count):
            raise ValueError(f"direct_prefix {self.direct_prefix} needs indirect and must leave "
                             f"a descriptor of the {self.count} for the table")

    def describe(self):
        tag = ("indirect" + (f"+{self.direct_prefix}" if self.direct_prefix else "")
               if self.indirect else "direct")
        return f"{tag} r{list(self.readable)} w{list(self.writable)}"


def _cuts(rng, lo, hi, k):
    """``k`` distinct cut positions strictly between ``lo`` and ``hi`` (fewer if no room)."""
    k = max(0, min(k, hi - lo - 1))
    return set(rng.sample(range(lo + 1, hi), k)) if k else set()


def _lengths(total, cuts):
    points = [0] + sorted(cuts) + [total]
    return tuple(b - a for a, b in zip(points, points[1:]))


def _split_long(total, cuts, size_max):
    """Add cuts until no piece is longer than ``size_max``."""
    cuts = set(cuts)
    points = [0] + sorted(cuts) + [total]
    for a, b in zip(points, points[1:]):
        cuts.update(range(a + size_max, b, size_max))
    return cuts


def random_layout(rng, out_len, in_len, *, seg_max=126, size_max=None, queue_size=None,
                  indirect=None, direct_prefix_prob=0.1, split_header_prob=0.3,
                  share_prob=0.3, max_skew=64):
    """Draw a :class:`Layout` for a request with an ``out_len``-byte payload and ``in_len``
    bytes of input data.

    The header is split in up to three descriptors or shares one with the payload, data goes in
    1..N descriptors of arbitrary byte lengths, the status byte is alone or shares the last
    writable descriptor, and the chain is direct, indirect, or a direct prefix followed by an
    indirect table. Limits: at most ``seg_max + 2`` descriptors (``seg_max`` data segments plus
    header and status, as Linux counts them) and at most ``queue_size`` [VIRTIO-1.2 2.7.5.3.1];
    none longer than ``size_max`` [VIRTIO-1.2 5.2.4].

    Parameters
    ----------
    indirect : bool or None
        Force direct (False) or indirect (True); None draws either.

    Raises
    ------
    ValueError
        If no layout within the limits can carry the request.
    """
    limit = seg_max + 2 if queue_size is None else min(seg_max + 2, queue_size)
    size_max = size_max or 0xffffffff
    R, W = OUTHDR + out_len, in_len + 1

    def attempt(header_cuts, share_hdr, share_status, extra):
        rcuts = set(header_cuts)
        if out_len and not share_hdr:
            rcuts.add(OUTHDR)
        wcuts = {in_len} if in_len and not share_status else set()
        n_out = rng.randint(0, extra) if out_len and in_len else extra
        rcuts |= _cuts(rng, OUTHDR, R, n_out if out_len else 0)
        wcuts |= _cuts(rng, 0, in_len, extra - n_out if in_len else 0)
        rcuts, wcuts = _split_long(R, rcuts, size_max), _split_long(W, wcuts, size_max)
        return _lengths(R, rcuts), _lengths(W, wcuts)

    for _ in range(8):
        header_cuts = _cuts(rng, 0, OUTHDR, rng.randint(1, 2)) \
            if rng.random() < split_header_prob else set()
        share_hdr = rng.random() < share_prob
        share_status = rng.random() < share_prob
        base = len(header_cuts) + 1 + (out_len > 0 and not share_hdr) + 1 + \
            (in_len > 0 and not share_status)
        room = max(0, limit - base)
        extra = min(room, rng.choice([0, 0, 1, 2, 3, rng.randint(0, room)]))
        readable, writable = attempt(header_cuts, share_hdr, share_status, extra)
        if len(readable) + len(writable) <= limit:
            break
    else:
        # The fewest descriptors: header with payload, data with status, cut at size_max.
        readable, writable = attempt(set(), True, True, 0)
        if len(readable) + len(writable) > limit:
            raise ValueError(f"a request of {out_len} + {in_len} bytes needs "
                             f"{len(readable) + len(writable)} descriptors of at most "
                             f"{size_max} bytes; the limit is {limit}")
    count = len(readable) + len(writable)
    if indirect is None:
        indirect = rng.random() < 0.5
    prefix = 0
    if indirect and count > 1 and rng.random() < direct_prefix_prob:
        prefix = rng.randint(1, count - 1)
    skews = tuple(rng.randrange(max_skew) if max_skew and rng.random() < 0.5 else 0
                  for _ in range(count))
    return Layout(readable, writable, bool(indirect), prefix, skews)


def outhdr(type, sector):
    """[VIRTIO-1.2 5.2.6] struct virtio_blk_outhdr: type, reserved (0), sector."""
    return struct.pack("<IIQ", type, 0, sector)


def discard_segment(sector, num_sectors, flags=0):
    """[VIRTIO-1.2 5.2.6] struct virtio_blk_discard_write_zeroes."""
    return struct.pack("<QII", sector, num_sectors, flags)


@dataclass(eq=False)
class Request:
    """One block request, from submission to completion.

    Attributes
    ----------
    q, type, sector : int
    out : bytes
        Payload after the header (write data, discard / write zeroes segments).
    in_len : int
        Device-writable bytes before the status byte.
    layout : Layout
    head : int
        Head descriptor index while in flight.
    readable, writable : list of (addr, len)
        The host buffers of the chain.
    status : int or None
        The status byte, once complete.
    data : bytes or None
        The ``in_len`` device-writable bytes before the status byte, once complete.
    used_len : int or None
        ``len`` of the used ring entry.
    done : bool
    event : object
        Set by :class:`BlkDriver` (a cocotb Event); None in the synchronous core.
    expected : tuple or None
        What the golden model says the device must report, set by the testbench when the
        request is made available: ``(used_len, status, data)``, or ``("needs_reset",
        reason)`` when the model found the ring malformed; None: not compared.
    interrupt : bool
        The model decided on a used buffer notification for it.
    submitted_at, completed_at : int or None
        Clock cycles at submission and at reaping (set by the testbench).
    """
    q: int
    type: int
    sector: int
    out: bytes
    in_len: int
    layout: Layout
    head: int = None
    readable: list = field(default_factory=list)
    writable: list = field(default_factory=list)
    allocations: list = field(default_factory=list)
    status: int = None
    data: bytes = None
    used_len: int = None
    done: bool = False
    event: object = None
    expected: tuple = None
    interrupt: bool = False
    submitted_at: int = None
    completed_at: int = None

    @property
    def op_name(self):
        return OP_NAMES.get(self.type, f"T{self.type}")

    def __str__(self):
        s = f"q{self.q} head {self.head} {self.op_name} sector {self.sector} " \
            f"out {len(self.out)} in {self.in_len} ({self.layout.describe()})"
        if self.done:
            s += f": status {self.status}, used len {self.used_len}"
        return s


class BlkCore:
    """The synchronous half of the block driver: requests in, finished requests out.

    Parameters
    ----------
    mem : tb.virtqueue.HostMemory
        Where request buffers are allocated.
    vqs : list of tb.virtqueue.SplitVirtqueue
        One per request queue.
    features : int
        The negotiated feature bits (INDIRECT_DESC allows indirect layouts).
    config : BlkConfig
        Limits for :meth:`random_layout` and the helpers' range checks.
    log : logging.Logger
        One DEBUG line per completed request.
    poison : int
        Byte the device-writable buffers are filled with before submission, so that bytes
        the device failed to write are visible.
    on_submit, on_complete, on_abandon : list of callable or None
        Hooks, each called with the :class:`Request`: once it is available to the device (its
        buffers and chain written, ``avail->idx`` published); once it is reaped (``status``,
        ``data`` and ``used_len`` set); when :meth:`abandon` drops it. The lists are used as
        given, so a driver can keep its hooks across cores.

    Attributes
    ----------
    page_aligned : bool
        Allocate buffers as Linux has them: data pieces of a sector or more page aligned (the
        page cache), smaller ones (header, status) 8-byte aligned (kmalloc). Off: first fit,
        byte aligned, so buffers sit anywhere.
    """
    def __init__(self, mem, vqs, features=0, config=None, log=None, poison=0xee,
                 on_submit=None, on_complete=None, on_abandon=None):
        self.mem, self.vqs, self.features = mem, list(vqs), features
        self.config = config or BlkConfig()
        self.log = log or logging.getLogger("tb.blk")
        self.poison = poison
        self.indirect = _has(features, rm.VIRTIO_RING_F_INDIRECT_DESC)
        self.inflight = [{} for _ in self.vqs]
        self.completed = 0
        self.page_aligned = False
        self.on_submit = [] if on_submit is None else on_submit
        self.on_complete = [] if on_complete is None else on_complete
        self.on_abandon = [] if on_abandon is None else on_abandon

    def random_layout(self, rng, out_len, in_len, q=0, **kw):
        """:func:`random_layout` within the negotiated limits of queue ``q``."""
        kw.setdefault("seg_max", self.config.seg_max)
        kw.setdefault("size_max", self.config.size_max)
        kw.setdefault("queue_size", self.vqs[q].size)
        if not self.indirect:
            kw["indirect"] = False
        return random_layout(rng, out_len, in_len, **kw)

    def can_submit(self, q, layout):
        vq = self.vqs[q]
        return vq.descriptors_needed(layout.count, layout.indirect,
                                     layout.direct_prefix) <= vq.num_free

    def submit(self, q, type, sector=0, out=b"", in_len=0, layout=None):
        """Build and make available one request; returns its :class:`Request`.

        Raises
        ------
        ValueError
            If ``layout`` does not frame the request, is longer than the queue size, or is
            indirect without INDIRECT_DESC [VIRTIO-1.2 2.7.5.3.1].
        QueueFull
            If the queue has too few free descriptors; nothing is allocated.
        """
        out = bytes(out)
        if layout is None:
            # Linux uses an indirect table whenever it may and the chain has several elements.
            layout = Layout.simple(len(out), in_len, indirect=self.indirect)
        layout.check(len(out), in_len)
        if layout.indirect and not self.indirect:
            raise ValueError("indirect layout without VIRTIO_RING_F_INDIRECT_DESC negotiated "
                             "[VIRTIO-1.2 2.7.5.3.1]")
        vq = self.vqs[q]
        if layout.count > vq.size:
            # [VIRTIO-1.2 2.7.5.3.1] Never satisfiable: do not wait for free descriptors.
            raise ValueError(f"a chain of {layout.count} descriptors is longer than the queue "
                             f"size {vq.size} [VIRTIO-1.2 2.7.5.3.1]")
        if not self.can_submit(q, layout):
            raise QueueFull(f"queue {q}: {vq.num_free} free descriptors")
        req = Request(q, type, sector, out, in_len, layout)
        skews = layout.skews or (0,) * layout.count
        stream = outhdr(type, sector) + out
        pos = 0
        for n, skew in zip(layout.readable, skews):
            addr = self._alloc(req, n, skew)
            self.mem.write(addr, stream[pos:pos + n])
            req.readable.append((addr, n))
            pos += n
        for n, skew in zip(layout.writable, skews[len(layout.readable):]):
            addr = self._alloc(req, n, skew)
            self.mem.write(addr, bytes([self.poison]) * n)
            req.writable.append((addr, n))
        req.head = vq.add(req.readable, req.writable, layout.indirect, layout.direct_prefix)
        self.inflight[q][req.head] = req
        for hook in self.on_submit:
            hook(req)
        return req

    def _alloc(self, req, n, skew):
        align = (PAGE if n >= SECTOR else 8) if self.page_aligned else 1
        base = self.mem.alloc(max(1, n + skew), align)
        req.allocations.append(base)
        return base + skew

    def abandon(self, req):
        """Drop a request the device will never complete (it was reset): free its buffers and
        tell the ``on_abandon`` hooks. Its descriptors go with the rings at the reset."""
        self.inflight[req.q].pop(req.head, None)
        for base in req.allocations:
            self.mem.free(base)
        req.allocations = []
        for hook in self.on_abandon:
            hook(req)

    def reap(self, q):
        """Take the used entries of queue ``q``; returns the finished requests in used order.

        Raises
        ------
        VirtqueueError
            From :meth:`SplitVirtqueue.get_used` when the device broke the used ring.
        """
        finished = []
        for head, used_len in self.vqs[q].get_used():
            req = self.inflight[q].pop(head)
            stream = b"".join(self.mem.read(a, n) for a, n in req.writable)
            # [VIRTIO-1.2 5.2.6] The status byte is the last device-writable byte.
            req.status, req.data, req.used_len = stream[-1], stream[:-1], used_len
            req.done = True
            for base in req.allocations:
                self.mem.free(base)
            req.allocations = []
            self.completed += 1
            self.log.debug("done %s", req)
            finished.append(req)
        for req in finished:
            for hook in self.on_complete:
                hook(req)
        return finished

    # -- request builders: (type, sector, out, in_len) ------------------------------------------

    def check_range(self, sector, nsectors):
        """[VIRTIO-1.2 5.2.6.1] A driver MUST NOT read or write beyond capacity."""
        if sector < 0 or nsectors < 0 or sector + nsectors > self.config.capacity:
            raise ValueError(f"sectors {sector}+{nsectors} are beyond the capacity of "
                             f"{self.config.capacity} sectors")

    def read_args(self, sector, nsectors):
        self.check_range(sector, nsectors)
        return rm.VIRTIO_BLK_T_IN, sector, b"", nsectors * SECTOR

    def write_args(self, sector, data):
        # [VIRTIO-1.2 5.2.6.1] Data of IN and OUT is a multiple of 512 bytes.
        if len(data) % SECTOR:
            raise ValueError(f"write data must be a multiple of {SECTOR} bytes, "
                             f"not {len(data)}")
        self.check_range(sector, len(data) // SECTOR)
        return rm.VIRTIO_BLK_T_OUT, sector, bytes(data), 0

    @staticmethod
    def flush_args():
        # [VIRTIO-1.2 5.2.6.1] sector is 0 for FLUSH, and no data.
        return rm.VIRTIO_BLK_T_FLUSH, 0, b"", 0

    @staticmethod
    def get_id_args():
        # [VIRTIO-1.2 5.2.6.1] GET_ID data is 20 bytes.
        return rm.VIRTIO_BLK_T_GET_ID, 0, b"", rm.VIRTIO_BLK_ID_BYTES

    def discard_args(self, sector, nsectors):
        self.check_range(sector, nsectors)
        # [VIRTIO-1.2 5.2.6.1] unmap is 0 for discard; one segment (max_discard_seg >= 1).
        return rm.VIRTIO_BLK_T_DISCARD, 0, discard_segment(sector, nsectors), 0

    def write_zeroes_args(self, sector, nsectors, unmap=False):
        self.check_range(sector, nsectors)
        flags = rm.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP if unmap else 0
        return rm.VIRTIO_BLK_T_WRITE_ZEROES, 0, discard_segment(sector, nsectors, flags), 0


class BlkDriver:
    """The virtio-blk driver the cocotb tests use: Linux's order, asynchronous requests.

    Parameters
    ----------
    transport : tb.driver.VirtioPciDriver
        The virtio-pci transport (capabilities are found by :meth:`init` if not yet).
    mem : tb.virtqueue.HostMemory
        Host memory the rings and buffers live in, e.g.
        ``HostMemory.from_root_complex(tb.rc)``.
    log : logging.Logger
    intx : cocotb handle or None
        The DUT's INTA# level (``dut.intx``). Used when MSI-X is off: on its rising edge the ISR
        is read (which clears it) and every queue reaped. Without it, a task polls the ISR.
    poll_ns : int
        Period of the polling fallback (queues with notifications suppressed; INTx without
        ``intx``).

    Attributes
    ----------
    core : BlkCore
        After :meth:`init`.
    vqs : list of SplitVirtqueue
    config : BlkConfig
    features : int
        Negotiated feature bits.
    msix : bool
        Completions come from MSI-X vectors (config 0, queue q on vector q + 1, or all queues
        on vector 1 when the table is too small, as Linux falls back to).
    interrupts : dict
        Interrupts taken, by source (``"msix<n>"``, ``"intx"``, ``"poll"``).
    config_changes : int
        Configuration change notifications seen.
    on_submit, on_complete, on_abandon : list of callable
        The hooks of every :class:`BlkCore` this driver makes (see there): the testbench
        hangs the golden model, its comparisons and its DMA fence here.
    """
    def __init__(self, transport, mem, log=None, intx=None, poll_ns=1000):
        self.transport, self.mem = transport, mem
        self.log = log or logging.getLogger("cocotb.tb.blk")
        self.intx, self.poll_ns = intx, poll_ns
        self.on_submit, self.on_complete, self.on_abandon = [], [], []
        self.core = None
        self.vqs = []
        self.config = None
        self.features = 0
        self.msix = False
        self.interrupts = {}
        self.config_changes = 0
        self._tasks = []
        self._poll_task = None
        self._slot = []
        self._next_q = 0
        self.config_event = None      # a cocotb Event set on each configuration change

    # -- initialization (virtblk_probe) --------------------------------------------------------

    async def _cread(self, offset, size):
        """[VIRTIO-1.2 2.5.1, 4.1.3.1] Read a config field at its width (64-bit as two 32-bit
        halves, low first), retrying while config_generation moves."""
        drv = self.transport
        while True:
            gen = await drv.common_read("config_generation")
            if size == 8:
                lo = await drv.read(rm.VIRTIO_PCI_CAP_DEVICE_CFG, offset, 4)
                hi = await drv.read(rm.VIRTIO_PCI_CAP_DEVICE_CFG, offset + 4, 4)
                value = hi << 32 | lo
            else:
                value = await drv.read(rm.VIRTIO_PCI_CAP_DEVICE_CFG, offset, size)
            if await drv.common_read("config_generation") == gen:
                return value

    async def read_config(self):
        """Read struct virtio_blk_config, only the fields of negotiated features."""
        cfg = BlkConfig()
        for name, off, size in BlkConfig.fields_for(self.features):
            cfg.set_field(name, await self._cread(off, size))
        return cfg

    async def setup(self, features=None, queues=None, indirect=True, event_idx=False,
                    use_msix=True, queue_size=None, notification_data=True):
        """Everything :meth:`init` does before it starts the interrupt tasks and sets
        DRIVER_OK: negotiation, configuration, MSI-X, queues. Needs no simulator (only the
        transport's awaitables), so the pure-Python tests run it against the golden model.
        Takes the parameters of :meth:`init`; returns the MSI-X vector of each queue, or None.
        """
        await self.close()
        drv = self.transport
        if not drv.caps:
            await drv.find_capabilities()
        if not await drv.negotiate(driver_features(features, indirect, event_idx,
                                                   notification_data)):
            raise DriverError(f"device refused features "
                              f"{rm.feature_names(drv.driver_features)}")
        self.features = drv.driver_features
        # [VIRTIO-1.2 5.2.5] The config is read after FEATURES_OK (writeback only then).
        self.config = await self.read_config()
        nq = self.config.num_queues
        if queues is not None:
            if not 1 <= queues <= nq:
                raise DriverError(f"{queues} queues asked for, the device has {nq}")
            nq = queues

        pci = drv.dev
        vectors = None
        self.msix = False
        if use_msix:
            from cocotbext.pcie.core.caps import PciCapId
            self.msix = bool(pci.get_capability_offset(PciCapId.MSIX))
        if self.msix:
            # Linux vp_request_msix_vectors: pci_alloc_irq_vectors(nvqs + 1), falling back to
            # one vector shared by the queues.
            if not pci.msix_enabled:
                if await pci.alloc_irq_vectors(2, nq + 1) < 0:
                    raise DriverError("could not enable MSI-X")
            per_vq = len(pci.msi_vectors) >= nq + 1
            vectors = [q + 1 if per_vq else 1 for q in range(nq)]
        elif getattr(pci, "msix_enabled", False):
            await pci.disable_msix()

        event_idx_on = _has(self.features, rm.VIRTIO_RING_F_EVENT_IDX)
        mem = self.mem

        def make_ring(q, max_size):
            size = max_size if queue_size is None else min(queue_size, max_size)
            vq = SplitVirtqueue(mem, size, q, event_idx=event_idx_on)
            self.vqs.append(vq)
            return (size,) + vq.rings

        await drv.find_vqs(nq, make_ring, vectors=vectors,
                           config_vector=0 if self.msix else None)
        # [VIRTIO-1.2 2.9] What a notification carries with NOTIFICATION_DATA: the avail
        # index the driver last published (Linux: avail_idx_shadow, which it writes to
        # avail->idx); read from the ring, so a test that publishes by hand sends its index.
        vqs = self.vqs
        drv.avail_index = lambda q: mem.read16(vqs[q].rings[1] + 2)
        self.core = BlkCore(mem, self.vqs, self.features, self.config, self.log,
                            on_submit=self.on_submit, on_complete=self.on_complete,
                            on_abandon=self.on_abandon)
        self._next_q = 0
        return vectors

    async def init(self, features=None, queues=None, indirect=True, event_idx=False,
                   use_msix=True, queue_size=None, notification_data=True):
        """Bring the device to DRIVER_OK and set up the request queues.

        Order (Linux ``virtio_dev_probe`` + ``virtblk_probe`` + ``vp_find_vqs``): reset,
        ACKNOWLEDGE, DRIVER, features, FEATURES_OK check; read the config; MSI-X vectors (config
        on 0, queue q on q + 1); queues; DRIVER_OK.

        Parameters
        ----------
        features : int or None
            Feature bits the driver accepts (ANDed with the offer); default
            :data:`DRIVER_FEATURES`.
        queues : int or None
            Request queues to use; default all the device has (``num_queues`` with MQ, else 1).
        indirect, event_idx, notification_data : bool
            Accept VIRTIO_RING_F_INDIRECT_DESC / VIRTIO_RING_F_EVENT_IDX /
            VIRTIO_F_NOTIFICATION_DATA if offered. With notification data each notification
            carries the queue's avail index as Linux sends it.
        use_msix : bool
            Enable MSI-X if the function has it; otherwise INTx.
        queue_size : int or None
            Use smaller queues than the device's maximum (a power of two) [VIRTIO-1.2 4.1.4.3].

        Returns
        -------
        int
            The device status read back (0x0f).

        Raises
        ------
        DriverError
            If the device refuses the features or a queue, or has fewer queues than asked for.
        """
        import cocotb
        from cocotb.triggers import Event

        vectors = await self.setup(features, queues, indirect, event_idx, use_msix, queue_size,
                                   notification_data)
        nq = len(self.vqs)
        self._slot = [Event() for _ in range(nq)]
        if self.config_event is None:
            self.config_event = Event()
        # Interrupt handlers before DRIVER_OK: the device may notify right after.
        if self.msix:
            for v in sorted(set(vectors)) + [0]:
                qs = [q for q in range(nq) if vectors[q] == v]
                self._tasks.append(cocotb.start_soon(self._msix_task(v, qs)))
        elif self.intx is not None:
            self._tasks.append(cocotb.start_soon(self._intx_task()))
        else:
            self._tasks.append(cocotb.start_soon(self._isr_poll_task()))

        # [VIRTIO-1.2 3.1.1 step 8] DRIVER_OK (Linux virtio_device_ready).
        await self.transport.add_status(rm.STATUS_DRIVER_OK)
        status = await self.transport.status()
        self.log.info("virtio-blk: %d sectors, %d queues of %s, seg_max %d, size_max %s, "
                      "%s, features %s", self.config.capacity, nq,
                      [vq.size for vq in self.vqs], self.config.seg_max, self.config.size_max,
                      "MSI-X" if self.msix else "INTx" if self.intx is not None else "ISR poll",
                      rm.feature_names(self.features))
        return status

    async def close(self):
        """Stop the interrupt and polling tasks, drop the requests still in flight
        (:meth:`BlkCore.abandon`) and free the queues. After a reset of the device, as Linux
        frees its rings only once the device has let go of them (``vp_reset``, then
        ``del_vqs``)."""
        for t in self._tasks + ([self._poll_task] if self._poll_task else []):
            t.cancel()
        self._tasks, self._poll_task = [], None
        if self.core is not None:
            for q in list(self.core.inflight):
                for req in list(q.values()):
                    self.core.abandon(req)
        for vq in self.vqs:
            vq.close()
        self.vqs = []
        self.core = None

    # -- the cache mode (Linux virtblk_get_cache_mode, cache_type_store) -----------------------

    @property
    def writeback(self):
        """The cache mode as Linux's ``virtblk_get_cache_mode`` decides it: ``writeback``
        from the config with CONFIG_WCE; otherwise a writeback cache exactly when FLUSH was
        negotiated [VIRTIO-1.2 5.2.5.1: the driver SHOULD then assume one]."""
        if _has(self.features, rm.VIRTIO_BLK_F_CONFIG_WCE):
            return self.config.writeback
        return int(_has(self.features, rm.VIRTIO_BLK_F_FLUSH))

    async def read_cache_mode(self):
        """Read ``writeback`` from the device config (CONFIG_WCE only) and return the mode
        (:attr:`writeback`)."""
        if _has(self.features, rm.VIRTIO_BLK_F_CONFIG_WCE):
            self.config.writeback = await self._cread(rm.BLK_CFG_WRITEBACK, 1)
        return self.writeback

    async def set_cache_mode(self, writeback):
        """Linux ``cache_type_store``: write ``writeback`` (0 writethrough, 1 writeback; the
        byte is written as given) and read the mode back. Only with CONFIG_WCE
        [VIRTIO-1.2 5.2.5]; Linux makes the attribute read-only otherwise. Returns the mode."""
        if not _has(self.features, rm.VIRTIO_BLK_F_CONFIG_WCE):
            raise DriverError("the cache mode is read-only without VIRTIO_BLK_F_CONFIG_WCE")
        await self.transport.write(rm.VIRTIO_PCI_CAP_DEVICE_CFG, rm.BLK_CFG_WRITEBACK, 1, writeback)
        return await self.read_cache_mode()

    # -- completions ---------------------------------------------------------------------------

    def _reap(self, q):
        finished = self.core.reap(q)
        for req in finished:
            if req.event is not None:
                req.event.set()
        if finished:
            self._slot[q].set()
        return finished

    def _count(self, source):
        self.interrupts[source] = self.interrupts.get(source, 0) + 1

    def _config_changed(self):
        self.config_changes += 1
        self.log.info("virtio-blk: configuration change notification")
        if self.config_event is not None:
            self.config_event.set()

    async def _msix_task(self, vector, qs):
        # cocotbext-pcie's MsiRegion sets the vector's event on each message write.
        ev = self.transport.dev.msi_vectors[vector].event
        while True:
            await ev.wait()
            ev.clear()
            self._count(f"msix{vector}")
            if vector == 0:
                self._config_changed()
            for q in qs:
                self._reap(q)

    async def _service_isr(self, source):
        # [VIRTIO-1.2 4.1.4.5] Reading the ISR status clears it (and deasserts INTx).
        isr = await self.transport.read(rm.VIRTIO_PCI_CAP_ISR_CFG, 0, 1)
        if isr:
            self._count(source)
        if isr & 2:
            self._config_changed()
        if isr & 1:
            for q in range(len(self.vqs)):
                self._reap(q)
        return isr

    async def _intx_task(self):
        from cocotb.triggers import RisingEdge, Timer
        while True:
            if self.intx.value != 1:
                await RisingEdge(self.intx)
            if not await self._service_isr("intx"):
                # INTA# high with the ISR clear: do not spin on it.
                await Timer(self.poll_ns, unit="ns")

    async def _isr_poll_task(self):
        from cocotb.triggers import Timer
        while True:
            await Timer(self.poll_ns, unit="ns")
            if any(self.core.inflight):
                await self._service_isr("poll")

    async def _queue_poll_task(self):
        from cocotb.triggers import Timer
        while any(vq.no_interrupt for vq in self.vqs):
            await Timer(self.poll_ns, unit="ns")
            for q, vq in enumerate(self.vqs):
                if vq.no_interrupt and self.core.inflight[q]:
                    if self._reap(q):
                        self._count("poll")
        self._poll_task = None

    def poll_at_random(self, rng, max_gap_ns):
        """Also reap every queue at random moments, gaps of 1 to ``max_gap_ns`` drawn from
        ``rng``, as a CPU polling the used ring does (Linux's blk-mq poll queues; a busy
        polling loop in user space): it may look at ``used->idx`` and the used elements at any
        moment, and must always find them consistent [VIRTIO-1.2 2.7.8.2, 2.7.14]. Runs until
        :meth:`close`."""
        import cocotb
        from cocotb.triggers import Timer

        async def poll():
            while True:
                await Timer(rng.randint(1, max_gap_ns), unit="ns")
                for q in range(len(self.vqs)):
                    if self.core.inflight[q] and self._reap(q):
                        self._count("random poll")
        self._tasks.append(cocotb.start_soon(poll()))

    def set_no_interrupt(self, q, suppress=True):
        """Suppress (or re-enable) used buffer notifications of queue ``q``
        [VIRTIO-1.2 2.7.7]; a suppressed queue is polled every ``poll_ns``."""
        import cocotb
        if self.vqs[q].set_no_interrupt(suppress) and not suppress:
            self._reap(q)
        if suppress and self._poll_task is None:
            self._poll_task = cocotb.start_soon(self._queue_poll_task())

    # -- requests ------------------------------------------------------------------------------

    def _pick_queue(self, q):
        if q is None:
            q = self._next_q
            self._next_q = (self._next_q + 1) % len(self.vqs)
        return q

    async def kick(self, q):
        """Notify the device about queue ``q`` unless it suppresses notifications
        [VIRTIO-1.2 2.7.10.1, 2.7.13.4]. Returns True if notified."""
        if not self.vqs[q].kick_prepare():
            return False
        await self.transport.notify(q)
        return True

    # How long a request may take, or a full queue wait for room, before a test fails: far
    # beyond any request of the tests (a 128 KiB request 64 deep takes about 5 ms), so a
    # device that never completes fails the test instead of hanging it.
    TIMEOUT_NS = 50_000_000

    async def submit(self, q, type, sector=0, out_payload=b"", in_len=0, layout=None, kick=True):
        """Make one request available on queue ``q`` (None: round robin) and return its
        :class:`Request` without waiting for it; waits for free descriptors if the queue is
        full (at most :data:`TIMEOUT_NS`). With ``kick=False`` the caller batches and calls
        :meth:`kick` itself."""
        from cocotb.triggers import Event, with_timeout
        q = self._pick_queue(q)
        while True:
            try:
                req = self.core.submit(q, type, sector, out_payload, in_len, layout)
                break
            except QueueFull:
                self._slot[q].clear()
                await with_timeout(self._slot[q].wait(), self.TIMEOUT_NS, "ns")
        req.event = Event()
        if kick:
            await self.kick(q)
        return req

    async def wait(self, req, timeout_ns=None):
        """Wait until ``req`` completes; returns it. Raises ``SimTimeoutError`` after
        ``timeout_ns`` (default :data:`TIMEOUT_NS`)."""
        from cocotb.triggers import with_timeout
        if not req.done:
            await with_timeout(req.event.wait(), timeout_ns or self.TIMEOUT_NS, "ns")
        return req

    async def request(self, q, type, sector=0, out_payload=b"", in_len=0, layout=None):
        return await self.wait(await self.submit(q, type, sector, out_payload, in_len, layout))

    def random_layout(self, rng, out_len, in_len, q=0, **kw):
        """:func:`random_layout` within the negotiated limits."""
        return self.core.random_layout(rng, out_len, in_len, q, **kw)

    async def read(self, sector, nsectors, q=None, layout=None):
        """Returns ``(status, data)``."""
        req = await self.request(q, *self.core.read_args(sector, nsectors), layout)
        return req.status, req.data

    async def write(self, sector, data, q=None, layout=None):
        """Returns the status byte."""
        return (await self.request(q, *self.core.write_args(sector, data), layout)).status

    async def flush(self, q=None, layout=None):
        return (await self.request(q, *self.core.flush_args(), layout)).status

    async def get_id(self, q=None, layout=None):
        """Returns ``(status, 20 ID bytes)``."""
        req = await self.request(q, *self.core.get_id_args(), layout)
        return req.status, req.data

    async def discard(self, sector, nsectors, q=None, layout=None):
        return (await self.request(q, *self.core.discard_args(sector, nsectors), layout)).status

    async def write_zeroes(self, sector, nsectors, unmap=False, q=None, layout=None):
        args = self.core.write_zeroes_args(sector, nsectors, unmap)
        return (await self.request(q, *args, layout)).status
