# Ref: OASIS virtio 1.2, sections 2.7.5 (descriptors), 2.7.8 (used ring), 5.2.6 (block requests)
"""The virtio structures the request engine reads and writes in host memory, as
:mod:`amaranth.lib.data` layouts built from the field lists in :mod:`model.regmap`, so the RTL
and the golden model read one definition.

All are little-endian [VIRTIO-1.2 2.4] and the data path puts byte ``k`` of a read in lane
``k % 8``, so a structure's fields land in a ``Cat`` of its beats in memory order.
"""

from amaranth.lib import data

from model import regmap as rm


__all__ = ["VirtqDesc", "VirtqUsedElem", "BlkOutHdr", "BlkDiscardSeg"]


def _layout(fields):
    return data.StructLayout(dict(fields))


#: [VIRTIO-1.2 2.7.5] ``struct virtq_desc``: ``addr``, ``len``, ``flags``, ``next``.
VirtqDesc = _layout(rm.VIRTQ_DESC)
#: [VIRTIO-1.2 2.7.8] ``struct virtq_used_elem``: ``id``, ``len``.
VirtqUsedElem = _layout(rm.VIRTQ_USED_ELEM)
#: [VIRTIO-1.2 5.2.6] ``struct virtio_blk_outhdr``: ``type``, ``reserved``, ``sector``.
BlkOutHdr = _layout(rm.BLK_OUTHDR)
#: [VIRTIO-1.2 5.2.6] ``struct virtio_blk_discard_write_zeroes``: ``sector``,
#: ``num_sectors``, ``flags``.
BlkDiscardSeg = _layout(rm.BLK_DISCARD_SEG)
