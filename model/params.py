# Ref: OASIS virtio 1.2, section 5.2 (Block Device); Linux include/uapi/linux/virtio_blk.h
"""One parameter object for the whole device.

:class:`DeviceParams` drives the RTL build (``rtl/``), the golden model (``model/``), the
testbench driver (``tb/``) and the documentation. Nothing here imports Amaranth or cocotb.
"""

from dataclasses import dataclass, field, replace

from . import regmap as rm


__all__ = ["DeviceParams", "DEFAULT_FEATURES", "VARIANTS"]


# [VIRTIO-1.2 5.2.3] Feature bits the device offers by default. Each one is backed by a field of
# struct virtio_blk_config that the device presents (see DeviceParams.blk_config).
DEFAULT_FEATURES = (
    (1 << rm.VIRTIO_BLK_F_SIZE_MAX) |
    (1 << rm.VIRTIO_BLK_F_SEG_MAX) |
    (1 << rm.VIRTIO_BLK_F_GEOMETRY) |
    (1 << rm.VIRTIO_BLK_F_BLK_SIZE) |
    (1 << rm.VIRTIO_BLK_F_FLUSH) |
    (1 << rm.VIRTIO_BLK_F_TOPOLOGY) |
    # [VIRTIO-1.2 5.2.5] The driver reads and sets the cache mode in ``writeback``; the storage
    # port passes the mode on to the back-end (rtl/storage.py).
    (1 << rm.VIRTIO_BLK_F_CONFIG_WCE) |
    (1 << rm.VIRTIO_BLK_F_MQ) |
    (1 << rm.VIRTIO_BLK_F_DISCARD) |
    (1 << rm.VIRTIO_BLK_F_WRITE_ZEROES) |
    (1 << rm.VIRTIO_RING_F_INDIRECT_DESC) |
    (1 << rm.VIRTIO_RING_F_EVENT_IDX) |
    (1 << rm.VIRTIO_F_VERSION_1) |
    # [VIRTIO-1.2 6.1] A hardware device should offer these: its DMA goes through the
    # platform's IOMMU, and its accesses need the platform's memory ordering, so the driver
    # must use the DMA API and real barriers.
    (1 << rm.VIRTIO_F_ACCESS_PLATFORM) |
    (1 << rm.VIRTIO_F_ORDER_PLATFORM) |
    # [VIRTIO-1.2 2.9, 4.1.5.2] The driver's notification carries the avail index (bits
    # 31:16 for a split ring; Linux vring_notification_data sends avail_idx_shadow << 16 |
    # vq->index), so a notified queue's entries are fetched without reading avail->idx first.
    (1 << rm.VIRTIO_F_NOTIFICATION_DATA)
)


@dataclass(frozen=True)
class DeviceParams:
    """Build-time parameters of the virtio-blk endpoint.

    Parameters
    ----------
    capacity : int
        Disk size in 512-byte sectors ([VIRTIO-1.2 5.2.4] ``capacity``).
    num_queues : int
        Number of request virtqueues (1 to 16). More than one is offered only with
        ``VIRTIO_BLK_F_MQ``.
    max_queue_size : int
        Largest split virtqueue size the device accepts; a power of two, 2 to 32768.
    bar0_size : int
        Size of BAR0 in bytes; a power of two, at least :data:`regmap.BAR0_MIN_SIZE`.
    bar0_64bit : bool
        BAR0 is a 64-bit memory BAR (BAR0+BAR1). ``False`` builds a 32-bit BAR0, which QEMU's
        proxy device needs because it sizes BARs one 32-bit register at a time.
    msix : bool
        Present the MSI-X capability, table and PBA. ``False`` for QEMU co-simulation.
    features : int
        Feature bits offered in ``device_feature`` (64 bits). Must include VERSION_1.
    read_only : bool
        Offer ``VIRTIO_BLK_F_RO``.
    data_width : int
        Width of the TLP streams in bits (64; 128 and 256 are reserved for later).
    writeback : int
        The cache mode after reset [VIRTIO-1.2 5.2.5]: 1 writeback (QEMU's default, ``cache=
        writeback``), 0 writethrough. It is what a driver that negotiated CONFIG_WCE and FLUSH
        reads in ``writeback`` until it writes the field (see :mod:`model.device`).
    serial : str
        Device ID string returned by ``VIRTIO_BLK_T_GET_ID``: ASCII, at most
        :data:`regmap.VIRTIO_BLK_ID_BYTES` (20) bytes [VIRTIO-1.2 5.2.6].
    completion_timeout : int
        DMA read completion timeout in clock cycles [PCIe-3.0 2.8]. The default, 2**14, is
        65.5 us at 250 MHz (131 us at 125 MHz): inside the 50 us to 50 ms range that the
        default Completion Timeout Value (0000b) allows [PCIe-3.0 7.8.16], and short enough for
        a simulation to reach.
    dma_read_tags : int
        Memory reads the DMA read engine keeps outstanding, each with its own Tag and a
        Max_Read_Request_Size slot of completion buffer (1 to 256; more than 32 use tags the
        host enables with Extended Tag Field Enable [PCIe-3.0 2.2.6.2]).
    desc_prefetch : int
        Descriptors the request engine fetches per read of a descriptor table (1 to 8; never
        past the table's end). 8 is 128 bytes, within the smallest Max_Read_Request_Size.
    avail_prefetch : int
        ``avail->ring`` entries the request engine reads at once, at most (1 to 32, 2 bytes
        each; never past the ring's end or what ``avail->idx`` showed).
    request_slots : int
        Requests the request engine holds at once, from dispatch to completion, each with its
        own segment table (1 to 64).
    chain_walkers : int
        Descriptor chains the request engine reads at the same time (1 to 32): the chain
        walker's contexts.
    hard_ip : str
        ``""`` (the default): the function owns its whole configuration space. ``"s7"``: the
        function sits behind the 7-series PCIe hard block (``pcie_7x``), which owns the type-0
        header, the BARs, PM, MSI, the PCI Express and the MSI-X capability structures and
        hands the function only the window of :data:`regmap.S7_WINDOW` (0xA8 to 0xFF), where
        the five virtio capabilities are; Command, Device Control, the function's number, PM
        state and MSI-X Enable/Function Mask come from the block's ``cfg_*`` outputs
        (:class:`rtl.phy.s7_cfg.S7ConfigSignature`). Needs ``msix``.
    """
    capacity: int = 2048                 # 1 MiB
    num_queues: int = 2
    max_queue_size: int = 256
    bar0_size: int = 0x8000
    bar0_64bit: bool = True
    msix: bool = True
    features: int = DEFAULT_FEATURES
    read_only: bool = False
    data_width: int = 64
    subsystem_vendor_id: int = 0x1af4
    subsystem_id: int = 0x1100
    revision_id: int = 0x01
    # [PCIe-3.0 7.8.3] Max_Payload_Size Supported, encoded (0 = 128 B ... 5 = 4096 B).
    max_payload_size_supported: int = 1  # 256 bytes
    # [VIRTIO-1.2 4.1.4.4] notify address = notify cap offset + queue_notify_off * multiplier.
    notify_off_multiplier: int = 4
    # struct virtio_blk_config limits, as offered.
    size_max: int = 1 << 16
    seg_max: int = 126
    blk_size: int = 512
    cylinders: int = 0
    heads: int = 0
    sectors: int = 0
    physical_block_exp: int = 0
    alignment_offset: int = 0
    min_io_size: int = 1
    opt_io_size: int = 0
    max_discard_sectors: int = 1 << 16
    max_discard_seg: int = 1
    discard_sector_alignment: int = 1
    max_write_zeroes_sectors: int = 1 << 16
    max_write_zeroes_seg: int = 1
    write_zeroes_may_unmap: int = 0
    writeback: int = 1
    serial: str = "virtio-blk-ep"
    completion_timeout: int = 1 << 14
    dma_read_tags: int = 16
    desc_prefetch: int = 8
    avail_prefetch: int = 16
    request_slots: int = 16
    chain_walkers: int = 16
    hard_ip: str = ""

    def __post_init__(self):
        def check(cond, msg):
            if not cond:
                raise ValueError(msg)
        check(isinstance(self.capacity, int) and 0 < self.capacity < 1 << 64,
              f"capacity must be between 1 and 2**64-1 sectors, not {self.capacity!r}")
        check(isinstance(self.num_queues, int) and 1 <= self.num_queues <= rm.MAX_QUEUES,
              f"num_queues must be between 1 and {rm.MAX_QUEUES}, not {self.num_queues!r}")
        check(isinstance(self.max_queue_size, int) and 2 <= self.max_queue_size <= 32768 and
              self.max_queue_size & (self.max_queue_size - 1) == 0,
              f"max_queue_size must be a power of two between 2 and 32768, "
              f"not {self.max_queue_size!r}")
        check(isinstance(self.bar0_size, int) and self.bar0_size >= rm.BAR0_MIN_SIZE and
              self.bar0_size & (self.bar0_size - 1) == 0,
              f"bar0_size must be a power of two of at least {rm.BAR0_MIN_SIZE:#x} bytes, "
              f"not {self.bar0_size!r}")
        check(self.bar0_64bit or self.bar0_size <= 1 << 31,
              f"a 32-bit BAR0 cannot be {self.bar0_size:#x} bytes")
        check(self.data_width in (64,),
              f"data_width must be 64 (128 and 256 are not implemented yet), "
              f"not {self.data_width!r}")
        check(0 <= self.features < 1 << 64, "features must fit in 64 bits")
        check(self.features >> rm.VIRTIO_F_VERSION_1 & 1,
              "features must include VIRTIO_F_VERSION_1 [VIRTIO-1.2 7.1]")
        check(not self.features >> rm.VIRTIO_BLK_F_CONFIG_WCE & 1 or
              self.features >> rm.VIRTIO_BLK_F_FLUSH & 1,
              "features with VIRTIO_BLK_F_CONFIG_WCE must include VIRTIO_BLK_F_FLUSH "
              "[VIRTIO-1.2 5.2.5.2]")
        check(self.writeback in (0, 1) and not isinstance(self.writeback, bool),
              f"writeback must be 0 (writethrough) or 1 (writeback), not {self.writeback!r}")
        check(self.num_queues == 1 or self.features >> rm.VIRTIO_BLK_F_MQ & 1,
              "num_queues > 1 needs VIRTIO_BLK_F_MQ in features [VIRTIO-1.2 5.2.3]")
        check(0 <= self.max_payload_size_supported <= 5,
              "max_payload_size_supported is the encoded field, 0 (128 B) to 5 (4096 B)")
        check(self.notify_off_multiplier in (0, 2, 4, 8, 16, 32, 64, 128, 256, 512),
              "notify_off_multiplier must be 0 or an even power of two up to 512 "
              "[VIRTIO-1.2 4.1.4.4]")
        check(not self.features >> rm.VIRTIO_F_NOTIFICATION_DATA & 1 or
              self.notify_off_multiplier % 4 == 0,
              "features with VIRTIO_F_NOTIFICATION_DATA need notify_off_multiplier 0 or a "
              "multiple of 4: the driver writes 32 bits [VIRTIO-1.2 4.1.4.4]")
        check(not self.features >> rm.VIRTIO_F_RING_PACKED & 1,
              "VIRTIO_F_RING_PACKED is not implemented")
        check(self.notify_off_multiplier * (self.num_queues - 1) + 2 <= rm.REGION_SIZE,
              "the notify region does not fit its 4 KiB window")
        check(isinstance(self.completion_timeout, int) and self.completion_timeout >= 1,
              f"completion_timeout must be a positive number of cycles, "
              f"not {self.completion_timeout!r}")
        check(isinstance(self.dma_read_tags, int) and not isinstance(self.dma_read_tags, bool)
              and 1 <= self.dma_read_tags <= 256,
              f"dma_read_tags must be from 1 to 256 (the 8-bit Tag field), "
              f"not {self.dma_read_tags!r}")
        check(isinstance(self.request_slots, int) and not isinstance(self.request_slots, bool)
              and 1 <= self.request_slots <= 64,
              f"request_slots must be from 1 to 64, not {self.request_slots!r}")
        check(isinstance(self.chain_walkers, int) and not isinstance(self.chain_walkers, bool)
              and 1 <= self.chain_walkers <= 32,
              f"chain_walkers must be from 1 to 32, not {self.chain_walkers!r}")
        check(isinstance(self.desc_prefetch, int) and not isinstance(self.desc_prefetch, bool)
              and 1 <= self.desc_prefetch <= 8,
              f"desc_prefetch must be from 1 to 8 descriptors (128 bytes, the smallest "
              f"Max_Read_Request_Size), not {self.desc_prefetch!r}")
        check(isinstance(self.avail_prefetch, int) and not isinstance(self.avail_prefetch, bool)
              and 1 <= self.avail_prefetch <= 32,
              f"avail_prefetch must be from 1 to 32 entries, not {self.avail_prefetch!r}")
        check(self.hard_ip in ("", "s7"),
              f"hard_ip must be \"\" (the function owns its configuration space) or \"s7\" "
              f"(behind the 7-series PCIe hard block), not {self.hard_ip!r}")
        check(self.hard_ip != "s7" or self.msix,
              "hard_ip=\"s7\" needs msix: the hard block's MSI-X structure is the last of its "
              "capabilities, the one that links to the virtio window")
        check(isinstance(self.serial, str) and self.serial.isascii() and
              len(self.serial) <= rm.VIRTIO_BLK_ID_BYTES,
              f"serial must be an ASCII string of at most {rm.VIRTIO_BLK_ID_BYTES} bytes "
              f"[VIRTIO-1.2 5.2.6], not {self.serial!r}")

    def replace(self, **changes):
        return replace(self, **changes)

    @property
    def offered_features(self):
        """The 64-bit ``device_feature`` value."""
        f = self.features
        if self.read_only:
            f |= 1 << rm.VIRTIO_BLK_F_RO
        return f

    @property
    def bar0_dw_bits(self):
        """Width of a DW index into BAR0."""
        return (self.bar0_size // 4 - 1).bit_length()

    @property
    def msix_table_size(self):
        """MSI-X vectors: one per queue plus the configuration vector (0 without MSI-X)."""
        return self.num_queues + 1 if self.msix else 0

    @property
    def notify_length(self):
        return self.notify_off_multiplier * (self.num_queues - 1) + 4

    def blk_config(self):
        """``struct virtio_blk_config`` as bytes, as the device presents it [VIRTIO-1.2 5.2.4]."""
        b = bytearray(rm.BLK_CONFIG_LENGTH)

        def put(off, size, value):
            b[off:off + size] = int(value).to_bytes(size, "little")
        put(0x00, 8, self.capacity)
        put(0x08, 4, self.size_max)
        put(0x0c, 4, self.seg_max)
        put(0x10, 2, self.cylinders)
        put(0x12, 1, self.heads)
        put(0x13, 1, self.sectors)
        put(0x14, 4, self.blk_size)
        put(0x18, 1, self.physical_block_exp)
        put(0x19, 1, self.alignment_offset)
        put(0x1a, 2, self.min_io_size)
        put(0x1c, 4, self.opt_io_size)
        # The cache mode after reset, as a driver that negotiated CONFIG_WCE and FLUSH first
        # reads it; the live value (model.device, rtl.virtio_regs) depends on the features.
        put(rm.BLK_CFG_WRITEBACK, 1, self.writeback)
        put(0x22, 2, self.num_queues)
        put(0x24, 4, self.max_discard_sectors)
        put(0x28, 4, self.max_discard_seg)
        put(0x2c, 4, self.discard_sector_alignment)
        put(0x30, 4, self.max_write_zeroes_sectors)
        put(0x34, 4, self.max_write_zeroes_seg)
        put(0x38, 1, self.write_zeroes_may_unmap)
        return bytes(b)

    def serial_bytes(self):
        """The device ID string as ``VIRTIO_BLK_T_GET_ID`` returns it: 20 bytes, NUL padded, with
        no terminator when the string is 20 bytes long [VIRTIO-1.2 5.2.6]."""
        return self.serial.encode("ascii").ljust(rm.VIRTIO_BLK_ID_BYTES, b"\0")

    def capabilities(self):
        """The capability list, as ``[(offset, cap_id, length, extra)]`` in list order."""
        return rm.capability_layout(self)


# The builds that exist, by top-level module name. The RTL build (``rtl/build.py``), the
# testbench and the synthesis script all take their parameters from here.
#
# ``virtio_blk_ep_qemu`` is the one QEMU's proxy device needs: a 32-bit BAR0 (QEMU sizes BARs
# one 32-bit register at a time) and no MSI-X (only guest RAM is shared, so MSI-X writes cannot
# land).
#
# ``virtio_blk_ep_ro`` offers VIRTIO_BLK_F_RO [VIRTIO-1.2 5.2.3]: every request that would change
# the disk completes IOERR.
VARIANTS = {
    "virtio_blk_ep":      DeviceParams(),
    "virtio_blk_ep_qemu": DeviceParams(bar0_64bit=False, msix=False),
    # Read-only, and the request engine's fetch and DMA at other sizes than the default's:
    # one descriptor and one avail entry per read, four reads outstanding, one request.
    "virtio_blk_ep_ro":   DeviceParams(read_only=True, desc_prefetch=1, avail_prefetch=1,
                                       dma_read_tags=4, request_slots=1, chain_walkers=1),
    # Behind the 7-series PCIe hard block (the Litefury's pcie_7x): the function answers only
    # the configuration window the block leaves it, and takes Command, Device Control, its
    # number and MSI-X Enable from the block's cfg_* outputs (rtl/phy/s7_cfg.py).
    "virtio_blk_ep_s7":   DeviceParams(hard_ip="s7"),
}
