# Ref: OASIS virtio 1.2, sections 2.7.4 (message framing), 2.7.5 (descriptor chains), 5.2.6
"""What the request engine's chain fetcher hands its executor: one *request slot* per chain.

A slot is the chain as two byte streams need it (:mod:`rtl.blk_engine` explains them): its
segments in a table of its own (the device-readable ones first, then the device-writable ones
[VIRTIO-1.2 2.7.4.2]) and, in the :class:`RequestSlot` passed on a stream, the rest: which
queue and head, the byte totals, where the status byte goes, and the request header when the
fetcher could read it in one piece.
"""

from amaranth.lib import data, enum


__all__ = ["SegmentLayout", "SlotKind", "RequestSlot", "seg_index_bits"]


class SegmentLayout(data.StructLayout):
    """One buffer of a chain."""
    def __init__(self):
        super().__init__({"addr": 64, "len": 32, "write": 1})


class SlotKind(enum.Enum, shape=2):
    #: A well-formed chain: execute it.
    REQUEST = 0
    #: A chain the device can only fail: write ``VIRTIO_BLK_S_IOERR`` and complete it (more
    #: segments than the table holds, or the header read failed).
    IOERR   = 1
    #: The ring is malformed at this point [VIRTIO-1.2 2.1.2]: after the slots before it are
    #: complete, set DEVICE_NEEDS_RESET and stop.
    BROKEN  = 2


def seg_index_bits(params):
    """Bits of a segment's index in its slot's table (``seg_max + 2`` entries: the data
    segments, the header and the status [VIRTIO-1.2 5.2.4])."""
    return (params.seg_max + 2 - 1).bit_length()


class RequestSlot(data.StructLayout):
    """A fetched chain, as the executor takes it.

    Fields: ``kind`` (:class:`SlotKind`); ``queue`` and ``head`` (the used element's ``id``);
    ``nseg`` segments in the slot's table, the first ``first_w`` readable; ``total_r`` and
    ``total_w`` bytes; ``status_addr``, the last writable byte; ``header`` set when
    ``req_type`` and ``sector`` were read from the first segment (else the executor reads the
    header through the segment table); ``table``, the slot whose table holds the segments.
    """
    def __init__(self, params):
        idx = seg_index_bits(params) + 1
        super().__init__({
            "kind":        SlotKind,
            "queue":       range(max(params.num_queues, 2)),
            "head":        16,
            "nseg":        idx,
            "first_w":     idx,
            "total_r":     48,
            "total_w":     48,
            "status_addr": 64,
            "header":      1,
            "req_type":    32,
            "sector":      64,
            "table":       range(max(params.request_slots, 2)),
        })
