# Ref: OASIS virtio 1.2, sections 5.2.5 (the cache mode) and 5.2.6 (device operation: the request
#      types a block device serves, and when a write is stable)
"""The storage back-end port: how the block request engine talks to whatever holds the blocks.

The port is four streams, seen from the initiator (the block request engine):

* ``cmd``: one :class:`StorageCommand` per operation, in order;
* ``wdata``: for a ``WRITE`` of ``count`` sectors, exactly ``count * 512 / (data_width / 8)``
  full beats, ``last`` on the final one;
* ``rdata``: for a ``READ``, exactly that many beats from the back-end, ``last`` on the final
  one, all of them before the completion;
* ``cpl``: one :class:`StorageCompletion` per command, in command order, after its data.

The framing never depends on the outcome: a ``READ`` that fails still delivers its beats (their
contents undefined) and a ``WRITE`` that fails still takes them, so neither side needs a way to
abort a transfer. The initiator checks sector ranges against the capacity before it issues a
command; ``IOERR`` is for faults of the medium.

``DISCARD`` and ``WRITE_ZEROES`` carry no data; after either completes ``OK`` the sectors read
as zeros. ``FLUSH`` completes once every write completed before it is durable; its ``sector``
and ``count`` are zero.

Besides the streams, one level from the initiator: ``writeback``, the cache mode the driver
chose [VIRTIO-1.2 5.2.5] (:attr:`model.device.VirtioBlkModel.writeback`). A back-end looks at
it when it takes a command:

* ``writeback`` 0 (writethrough): a ``WRITE``, ``DISCARD`` or ``WRITE_ZEROES`` is durable
  before its completion [VIRTIO-1.2 5.2.6.2: it is stable once completed];
* ``writeback`` 1: the back-end may complete one with its data only in a volatile cache (reads
  see it at once); the data becomes durable no later than the completion of the next
  ``FLUSH`` [VIRTIO-1.2 5.2.6.2: a write becomes stable once a FLUSH sent after its completion
  has completed], or earlier if the back-end writes it back by itself.

A back-end without a volatile cache (:class:`rtl.ramdisk.RamDisk`) ignores it. It changes
when the driver sets the mode or resets the device, at any time, so a back-end samples it when
it takes a command; what it cached before a change to 0 still waits for a ``FLUSH``.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["SECTOR_BYTES", "StorageOp", "StorageCommand", "StorageStatus", "StorageCompletion",
           "StorageData", "StorageSignature"]


#: [VIRTIO-1.2 5.2.6] Sector numbers are in 512-byte units whatever ``blk_size`` says.
SECTOR_BYTES = 512


class StorageOp(enum.Enum, shape=3):
    READ         = 0
    WRITE        = 1
    FLUSH        = 2
    DISCARD      = 3
    WRITE_ZEROES = 4


class StorageCommand(data.Struct):
    """One operation on ``count`` sectors starting at ``sector``; ``tag`` comes back in the
    completion."""
    op:     StorageOp
    tag:    8
    sector: 64
    count:  32


class StorageStatus(enum.Enum, shape=1):
    OK    = 0
    IOERR = 1


class StorageCompletion(data.Struct):
    tag:    8
    status: StorageStatus


def StorageData(data_width):
    """A beat of sector data: bytes in disk order from lane 0; ``last`` on a command's final
    beat."""
    return data.StructLayout({
        "data": unsigned(data_width),
        "last": unsigned(1),
    })


class StorageSignature(wiring.Signature):
    """The back-end port, from the initiator's side (a back-end takes it flipped).

    Members: the streams ``cmd``, ``wdata`` (out), ``rdata``, ``cpl`` (in), and ``writeback``
    (out, 1 bit), the cache mode.

    Parameters
    ----------
    data_width : int
        Width of the data streams in bits; a divisor of 4096 (512 bytes), at least 8.
    """
    def __init__(self, data_width=64):
        if not isinstance(data_width, int) or data_width < 8 or 4096 % data_width:
            raise ValueError(f"StorageSignature data_width must divide 4096 bits (one sector), "
                             f"not {data_width!r}")
        self.data_width = data_width
        super().__init__({
            "cmd":   Out(stream.Signature(StorageCommand)),
            "wdata": Out(stream.Signature(StorageData(data_width))),
            "rdata": In(stream.Signature(StorageData(data_width))),
            "cpl":   In(stream.Signature(StorageCompletion)),
            # [VIRTIO-1.2 5.2.5] 1: writes may stay volatile until the next FLUSH completes.
            "writeback": Out(1),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other.data_width == self.data_width

    def __repr__(self):
        return f"StorageSignature({self.data_width})"
