# Ref: OASIS virtio 1.2, sections 2.1, 2.2, 4.1.4, 5.2; PCI Local Bus 3.0 section 6; PCIe Base 3.0
# sections 7.5, 7.7, 7.8; Linux include/uapi/linux/{virtio_config,virtio_pci,virtio_blk,virtio_ring}.h
"""The register map: the one source of truth shared by the RTL, the model, the driver and docs.

Everything here is plain data: constants, offsets, and the table of type-0 configuration space
registers (reset value, writable bits, write-1-to-clear bits) that both :mod:`rtl.config_space`
and :mod:`model.device` are built from. ``python -m model.regmap`` prints it as Markdown.
"""

from dataclasses import dataclass


# -- virtio constants (Linux include/uapi/linux/virtio_config.h, virtio_ring.h, virtio_blk.h) --

# [VIRTIO-1.2 2.1] Device status field.
STATUS_ACKNOWLEDGE        = 0x01
STATUS_DRIVER             = 0x02
STATUS_DRIVER_OK          = 0x04
STATUS_FEATURES_OK        = 0x08
STATUS_DEVICE_NEEDS_RESET = 0x40
STATUS_FAILED             = 0x80

# [VIRTIO-1.2 6] Reserved feature bits.
VIRTIO_RING_F_INDIRECT_DESC = 28
VIRTIO_RING_F_EVENT_IDX     = 29
VIRTIO_F_VERSION_1          = 32
VIRTIO_F_ACCESS_PLATFORM    = 33
VIRTIO_F_RING_PACKED        = 34
VIRTIO_F_ORDER_PLATFORM     = 36
VIRTIO_F_NOTIFICATION_DATA  = 38

# [VIRTIO-1.2 5.2.3] Block device feature bits.
VIRTIO_BLK_F_SIZE_MAX     = 1
VIRTIO_BLK_F_SEG_MAX      = 2
VIRTIO_BLK_F_GEOMETRY     = 4
VIRTIO_BLK_F_RO           = 5
VIRTIO_BLK_F_BLK_SIZE     = 6
VIRTIO_BLK_F_FLUSH        = 9
VIRTIO_BLK_F_TOPOLOGY     = 10
VIRTIO_BLK_F_CONFIG_WCE   = 11
VIRTIO_BLK_F_MQ           = 12
VIRTIO_BLK_F_DISCARD      = 13
VIRTIO_BLK_F_WRITE_ZEROES = 14

FEATURE_NAMES = {
    VIRTIO_BLK_F_SIZE_MAX: "SIZE_MAX", VIRTIO_BLK_F_SEG_MAX: "SEG_MAX",
    VIRTIO_BLK_F_GEOMETRY: "GEOMETRY", VIRTIO_BLK_F_RO: "RO", VIRTIO_BLK_F_BLK_SIZE: "BLK_SIZE",
    VIRTIO_BLK_F_FLUSH: "FLUSH", VIRTIO_BLK_F_TOPOLOGY: "TOPOLOGY",
    VIRTIO_BLK_F_CONFIG_WCE: "CONFIG_WCE", VIRTIO_BLK_F_MQ: "MQ",
    VIRTIO_BLK_F_DISCARD: "DISCARD", VIRTIO_BLK_F_WRITE_ZEROES: "WRITE_ZEROES",
    VIRTIO_RING_F_INDIRECT_DESC: "RING_INDIRECT_DESC", VIRTIO_RING_F_EVENT_IDX: "RING_EVENT_IDX",
    VIRTIO_F_VERSION_1: "VERSION_1", VIRTIO_F_ACCESS_PLATFORM: "ACCESS_PLATFORM",
    VIRTIO_F_RING_PACKED: "RING_PACKED", VIRTIO_F_ORDER_PLATFORM: "ORDER_PLATFORM",
    VIRTIO_F_NOTIFICATION_DATA: "NOTIFICATION_DATA",
}


def feature_names(bits):
    """``0x1_0000_1000`` -> ``"MQ VERSION_1"``; unnamed bits print as ``bit<N>``."""
    return " ".join(FEATURE_NAMES.get(n, f"bit{n}") for n in range(64) if bits >> n & 1) or "-"


# [VIRTIO-1.2 4.1.5.1.2.1] "no vector" for msix_config / queue_msix_vector.
VIRTIO_MSI_NO_VECTOR = 0xffff


# -- Split virtqueues [VIRTIO-1.2 2.7] (Linux include/uapi/linux/virtio_ring.h) --

# [VIRTIO-1.2 2.7.5] struct virtq_desc flags.
VIRTQ_DESC_F_NEXT     = 1
VIRTQ_DESC_F_WRITE    = 2
VIRTQ_DESC_F_INDIRECT = 4
# [VIRTIO-1.2 2.7.6] virtq_avail.flags; [2.7.8] virtq_used.flags.
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY     = 1

# Wire formats: (field, bits) in memory order, little-endian [VIRTIO-1.2 2.4]. The model packs
# them with `struct_format`, the RTL views them as `amaranth.lib.data` layouts
# (`rtl/wire_formats.py`), so both read the same definition.
# [VIRTIO-1.2 2.7.5] struct virtq_desc.
VIRTQ_DESC = (("addr", 64), ("len", 32), ("flags", 16), ("next", 16))
# [VIRTIO-1.2 2.7.8] struct virtq_used_elem: id is the head of the chain, len the bytes written.
VIRTQ_USED_ELEM = (("id", 32), ("len", 32))

# -- Block requests [VIRTIO-1.2 5.2.6] (Linux include/uapi/linux/virtio_blk.h) --

# struct virtio_blk_req type.
VIRTIO_BLK_T_IN           = 0
VIRTIO_BLK_T_OUT          = 1
VIRTIO_BLK_T_FLUSH        = 4
VIRTIO_BLK_T_GET_ID       = 8
VIRTIO_BLK_T_GET_LIFETIME = 10
VIRTIO_BLK_T_DISCARD      = 11
VIRTIO_BLK_T_WRITE_ZEROES = 13
VIRTIO_BLK_T_SECURE_ERASE = 14
# struct virtio_blk_req status.
VIRTIO_BLK_S_OK     = 0
VIRTIO_BLK_S_IOERR  = 1
VIRTIO_BLK_S_UNSUPP = 2
# GET_ID: the device ID string is at most 20 bytes, NUL padded.
VIRTIO_BLK_ID_BYTES = 20
# struct virtio_blk_discard_write_zeroes flags: unmap (bit 0, write zeroes only).
VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP = 1
# [VIRTIO-1.2 5.2.6] struct virtio_blk_outhdr, the request header, and one
# struct virtio_blk_discard_write_zeroes segment.
BLK_OUTHDR = (("type", 32), ("reserved", 32), ("sector", 64))
BLK_DISCARD_SEG = (("sector", 64), ("num_sectors", 32), ("flags", 32))


def wire_bytes(fields):
    """Size in bytes of a wire format."""
    return sum(bits for _, bits in fields) // 8


def struct_format(fields):
    """The `struct` module's format string of a wire format."""
    return "<" + "".join({8: "B", 16: "H", 32: "I", 64: "Q"}[bits] for _, bits in fields)


VIRTQ_DESC_BYTES      = wire_bytes(VIRTQ_DESC)
BLK_OUTHDR_BYTES      = wire_bytes(BLK_OUTHDR)
BLK_DISCARD_SEG_BYTES = wire_bytes(BLK_DISCARD_SEG)
BLK_SECTOR_BYTES      = 512     # [VIRTIO-1.2 5.2.6] protocol sectors are always 512 bytes
# -- PCI identity [VIRTIO-1.2 4.1.2] --

VENDOR_ID   = 0x1af4
DEVICE_ID   = 0x1040 + 2      # modern device id = 0x1040 + virtio device id (block = 2)
CLASS_CODE  = 0x018000        # mass storage controller, "other"
MAX_QUEUES  = 16

# -- BAR0 layout: each virtio structure in its own 4 KiB window --

REGION_SIZE     = 0x1000
COMMON_OFFSET   = 0x0000
ISR_OFFSET      = 0x1000
DEVICE_OFFSET   = 0x2000
NOTIFY_OFFSET   = 0x3000
MSIX_TABLE_OFFSET = 0x4000
MSIX_PBA_OFFSET   = 0x5000
BAR0_MIN_SIZE   = 0x8000

COMMON_LENGTH   = 0x38        # struct virtio_pci_common_cfg up to queue_device
ISR_LENGTH      = 4
BLK_CONFIG_LENGTH = 0x3c      # struct virtio_blk_config up to write_zeroes_may_unmap + unused1
# [VIRTIO-1.2 5.2.4] struct virtio_blk_config: the one field the driver may write, the cache mode
# (0 writethrough, 1 writeback), with VIRTIO_BLK_F_CONFIG_WCE [VIRTIO-1.2 5.2.5].
BLK_CFG_WRITEBACK = 0x20

# [VIRTIO-1.2 4.1.4.3] struct virtio_pci_common_cfg field offsets.
CC_DEVICE_FEATURE_SELECT = 0x00
CC_DEVICE_FEATURE        = 0x04
CC_DRIVER_FEATURE_SELECT = 0x08
CC_DRIVER_FEATURE        = 0x0c
CC_MSIX_CONFIG           = 0x10
CC_NUM_QUEUES            = 0x12
CC_DEVICE_STATUS         = 0x14
CC_CONFIG_GENERATION     = 0x15
CC_QUEUE_SELECT          = 0x16
CC_QUEUE_SIZE            = 0x18
CC_QUEUE_MSIX_VECTOR     = 0x1a
CC_QUEUE_ENABLE          = 0x1c
CC_QUEUE_NOTIFY_OFF      = 0x1e
CC_QUEUE_DESC            = 0x20
CC_QUEUE_DRIVER          = 0x28
CC_QUEUE_DEVICE          = 0x30

# [VIRTIO-1.2 4.1.4] virtio_pci_cap cfg_type values.
VIRTIO_PCI_CAP_COMMON_CFG = 1
VIRTIO_PCI_CAP_NOTIFY_CFG = 2
VIRTIO_PCI_CAP_ISR_CFG    = 3
VIRTIO_PCI_CAP_DEVICE_CFG = 4
VIRTIO_PCI_CAP_PCI_CFG    = 5

# -- PCI capability IDs --
PCI_CAP_ID_PM     = 0x01
PCI_CAP_ID_VNDR   = 0x09
PCI_CAP_ID_EXP    = 0x10
PCI_CAP_ID_MSIX   = 0x11

CFG_SPACE_SIZE     = 0x100     # conventional header + capabilities
CFG_EXT_SPACE_SIZE = 0x1000    # [PCIe-3.0 7.2.2] extended space: no extended capabilities, reads 0

# Command register bits [PCI-3.0 6.2.2].
CMD_IO_SPACE     = 1 << 0
CMD_MEMORY_SPACE = 1 << 1
CMD_BUS_MASTER   = 1 << 2
CMD_PARITY_ERR   = 1 << 6
CMD_SERR         = 1 << 8
CMD_INTX_DISABLE = 1 << 10
# Status register bits.
STS_INTERRUPT             = 1 << 3
STS_CAP_LIST              = 1 << 4
STS_SIGNALED_TARGET_ABORT = 1 << 11
STS_DETECTED_PARITY_ERROR = 1 << 15
# [PCIe-3.0 2.2.8] Messages an endpoint accepts and drops without error, by Message Code. Any
# other message is an Unsupported Request (posted: no completion, URD set).
MESSAGES_ACCEPTED = {
    0x00: "Unlock",                       # 2.2.8.4
    0x14: "PM_Active_State_Nak",          # 2.2.8.2
    0x19: "PME_Turn_Off",                 # 2.2.8.2 (the PME_TO_Ack reply is not sent yet)
    0x50: "Set_Slot_Power_Limit",         # 2.2.8.5
    0x7f: "Vendor_Defined Type 1",        # 2.2.8.6: silently discarded
}

# PCIe Device Status bits [PCIe-3.0 7.8.5].
DEVSTA_URD = 1 << 3

# [PCIe-3.0 7.8.3, 7.8.4, 6.6.2] Function Level Reset: capability bit in Device Capabilities,
# the Initiate bit in Device Control (write-only, reads 0). An FLR leaves Max_Payload_Size and
# the link registers as they were; everything else of the function goes back to reset.
DEVCAP_FLR = 1 << 28
DEVCTL_INITIATE_FLR = 1 << 15
DEVCTL_MPS = 0x7 << 5
FLR_KEEPS = {"pcie_devctl_devsta": DEVCTL_MPS, "pcie_linkctl_linksta": 0xffffffff,
             "pcie_linkctl2": 0xffffffff}


# -- The 7-series PCIe hard block (pcie_7x) --------------------------------------------------------
# [PG054] The "7 Series FPGAs Integrated Block for PCI Express" implements the type-0 header, the
# BARs and these capability structures itself, at the offsets of its attributes as Vivado
# generates them (``PM_BASE_PTR = 8'h40``, ``MSI_BASE_PTR = 8'h48``, ``PCIE_BASE_PTR = 8'h60``,
# ``MSIX_BASE_PTR = 8'h9C`` in the core's ``pcie_7x_v3_3`` top, and ``CAPABILITIES_PTR = 8'h40``),
# linked in this order (``PM_CAP_NEXTPTR = 8'h48``, ``MSI_CAP_NEXTPTR = 8'h60``,
# ``PCIE_CAP_NEXTPTR = 8'h9C`` with MSI-X on): (name, offset, bytes).
S7_CAPS = (("pm", 0x40, 8), ("msi", 0x48, 0x18), ("pcie", 0x60, 0x3c), ("msix", 0x9c, 12))
# Configuration requests from ``EXT_CFG_CAP_PTR`` (``PCI_CFG_SPACE_ADDR``, a DW index; legal from
# 0x2A, just past the MSI-X structure) to 0x3F are handed to the user logic as CfgRd0/CfgWr0 TLPs
# on the receive stream and completed by it; the extended space is not (``EXT_CFG_XP_CAP_PTR``
# left at 0x3FF). The block's last capability must point into the window: ``MSIX_CAP_NEXTPTR =
# 8'hA8``. The window is bytes 0xA8 to 0xFF, exactly the five virtio capabilities (88 bytes).
S7_WINDOW = (0xa8, 0x100)
S7_EXT_CFG_CAP_PTR = S7_WINDOW[0] // 4


def merge(old, value, mask):
    """``old`` with the bits set in ``mask`` taken from ``value``: a register write with byte
    enables. Works on ints (the model) and Amaranth values (the RTL) alike."""
    return (old & ~mask) | (value & mask)


@dataclass(frozen=True)
class Cap:
    """One capability structure in configuration space."""
    name: str
    offset: int
    cap_id: int
    length: int
    cfg_type: int = 0     # virtio vendor capabilities only
    bar: int = 0
    bar_offset: int = 0
    bar_length: int = 0


def capability_layout(p):
    """Place the capabilities for parameters ``p``; returns a list of :class:`Cap` in list order.

    [PCI-3.0 6.7] The list starts at the Capabilities Pointer (0x34); each entry is DW-aligned.
    Behind a hard block (``p.hard_ip``) only the virtio capabilities are the function's, from
    the start of the block's window (:data:`S7_WINDOW`), the first linked from the block's own
    last capability.
    """
    caps = []
    off = S7_WINDOW[0] if p.hard_ip else 0x40

    def add(name, cap_id, length, **kw):
        nonlocal off
        caps.append(Cap(name, off, cap_id, length, **kw))
        off += (length + 3) & ~3
    if not p.hard_ip:
        add("pm", PCI_CAP_ID_PM, 8)
        if p.msix:
            add("msix", PCI_CAP_ID_MSIX, 12)
        add("pcie", PCI_CAP_ID_EXP, 0x3c)
    # [VIRTIO-1.2 4.1.4] struct virtio_pci_cap, 16 bytes; the notify one adds the multiplier and
    # the PCI_CFG one adds pci_cfg_data.
    add("virtio-common", PCI_CAP_ID_VNDR, 16, cfg_type=VIRTIO_PCI_CAP_COMMON_CFG,
        bar_offset=COMMON_OFFSET, bar_length=COMMON_LENGTH)
    add("virtio-notify", PCI_CAP_ID_VNDR, 20, cfg_type=VIRTIO_PCI_CAP_NOTIFY_CFG,
        bar_offset=NOTIFY_OFFSET, bar_length=p.notify_length)
    add("virtio-isr", PCI_CAP_ID_VNDR, 16, cfg_type=VIRTIO_PCI_CAP_ISR_CFG,
        bar_offset=ISR_OFFSET, bar_length=ISR_LENGTH)
    add("virtio-device", PCI_CAP_ID_VNDR, 16, cfg_type=VIRTIO_PCI_CAP_DEVICE_CFG,
        bar_offset=DEVICE_OFFSET, bar_length=BLK_CONFIG_LENGTH)
    add("virtio-pci-cfg", PCI_CAP_ID_VNDR, 20, cfg_type=VIRTIO_PCI_CAP_PCI_CFG)
    assert off <= (S7_WINDOW[1] if p.hard_ip else CFG_SPACE_SIZE)
    return caps


def find_cap(p, name):
    for cap in capability_layout(p):
        if cap.name == name:
            return cap
    return None


@dataclass(frozen=True)
class Reg:
    """One DW of configuration space.

    Reads return ``(value & live) | (reset & ~live)`` with ``live = wmask | w1c`` and ``value``
    what reset, writes and hardware events left, so constant bits read as their reset value. A write with byte enables ``be``
    replaces the enabled bytes of ``wmask`` with the written data, and clears the enabled bits of
    ``w1c`` written as 1. ``special`` names the DWs whose behaviour the table cannot express; the
    RTL and the model both implement those by hand (see :mod:`model.device`).
    """
    name: str
    reset: int
    wmask: int = 0
    w1c: int = 0
    special: str = ""


def config_registers(p):
    """The type-0 configuration header and capabilities as ``{dw_index: Reg}``.

    DWs not in the table (and the whole extended space) read 0 and ignore writes. Behind a hard
    block (``p.hard_ip``) the table holds only the window's capabilities: the header and the
    other capabilities are the block's.
    """
    regs = {}

    def reg(offset, *args, **kw):
        assert offset % 4 == 0 and offset // 4 not in regs
        regs[offset // 4] = Reg(*args, **kw)

    caps = capability_layout(p)
    nexts = {c.offset: (caps[i + 1].offset if i + 1 < len(caps) else 0) for i, c in enumerate(caps)}

    if not p.hard_ip:
        _header_registers(p, reg, caps)
    _capability_registers(p, reg, caps, nexts)
    return regs


def _header_registers(p, reg, caps):
    # [PCI-3.0 6.2] Type-0 header.
    reg(0x00, "id", DEVICE_ID << 16 | VENDOR_ID)
    # Command: Memory Space, Bus Master, Parity Error Response, SERR#, INTx Disable are RW; there
    # is no I/O BAR, so I/O Space is hardwired to 0. Status: Capabilities List is 1; the error
    # bits are RW1C; Interrupt Status (bit 3) reflects the INTx state (special).
    reg(0x04, "command_status", STS_CAP_LIST << 16,
        wmask=CMD_MEMORY_SPACE | CMD_BUS_MASTER | CMD_PARITY_ERR | CMD_SERR | CMD_INTX_DISABLE,
        w1c=0xf900 << 16, special="status")
    reg(0x08, "class_revision", CLASS_CODE << 8 | p.revision_id)
    # Cache Line Size is RW with no effect on PCIe [PCIe-3.0 7.5.1.3]; header type 0.
    reg(0x0c, "bist_header_latency_cls", 0x00000000, wmask=0x000000ff)
    size_mask = (1 << 64) - p.bar0_size
    if p.bar0_64bit:
        # [PCI-3.0 6.2.5.1] 64-bit, non-prefetchable (ISR reads have side effects) memory BAR.
        reg(0x10, "bar0", 0x4, wmask=size_mask & 0xfffffff0)
        reg(0x14, "bar1", 0, wmask=0xffffffff)
    else:
        reg(0x10, "bar0", 0x0, wmask=size_mask & 0xfffffff0)
    reg(0x2c, "subsystem", p.subsystem_id << 16 | p.subsystem_vendor_id)
    reg(0x34, "cap_ptr", caps[0].offset)
    # Interrupt Line is RW scratch for software; Interrupt Pin = INTA#.
    reg(0x3c, "interrupt", 0x01 << 8, wmask=0x000000ff)


def _capability_registers(p, reg, caps, nexts):
    for c in caps:
        hdr = nexts[c.offset] << 8 | c.cap_id
        o = c.offset
        if c.name == "pm":
            # [PCI-PM 1.2 3.2.3] PMC: version 3, no PME, D1/D2 unsupported.
            reg(o, "pm_cap", 0x0003 << 16 | hdr)
            # PMCSR: PowerState (1:0) takes D0 or D3hot only; NoSoftReset (bit 3) = 1.
            reg(o + 4, "pm_csr", 0x00000008, wmask=0x3, special="pmcsr")
        elif c.name == "msix":
            # [PCIe-3.0 7.7] Message Control: Table Size N-1 (RO), Function Mask (14) and
            # MSI-X Enable (15) RW. Table and PBA in BAR0 (BIR 0).
            reg(o, "msix_cap", (p.msix_table_size - 1) << 16 | hdr, wmask=0xc000 << 16)
            reg(o + 4, "msix_table", MSIX_TABLE_OFFSET | 0)
            reg(o + 8, "msix_pba", MSIX_PBA_OFFSET | 0)
        elif c.name == "pcie":
            # [PCIe-3.0 7.8.2] PCI Express Capabilities: version 2, PCI Express Endpoint.
            reg(o + 0x00, "pcie_cap", 0x0002 << 16 | hdr)
            # [PCIe-3.0 7.8.3] Device Capabilities: MPSS, Extended Tag supported (bit 5),
            # Role-Based Error Reporting (bit 15), Function Level Reset Capability (bit 28).
            reg(o + 0x04, "pcie_devcap",
                p.max_payload_size_supported | 1 << 5 | 1 << 15 | DEVCAP_FLR)
            # [PCIe-3.0 7.8.4] Device Control: error reporting enables (3:0), Relaxed Ordering
            # (4, reset 1), Max_Payload_Size (7:5), Extended Tag (8), No Snoop (11, reset 1),
            # Max_Read_Request_Size (14:12, reset 512 B). [7.8.5] Device Status: the error
            # detected bits (3:0) are RW1C; Unsupported Request Detected is bit 3.
            # Initiate Function Level Reset (15) is written, never stored: it reads 0.
            reg(o + 0x08, "pcie_devctl_devsta", 0x2810, wmask=0x79ff, w1c=0x000f << 16,
                special="devsta")
            # [PCIe-3.0 7.8.6] Link Capabilities: 5.0 GT/s, x4.
            reg(o + 0x0c, "pcie_linkcap", 4 << 4 | 2)
            # [PCIe-3.0 7.8.7/8] Link Control RW bits (ASPM, RCB, Common Clock, Extended Sync);
            # Link Status: 5.0 GT/s, x4, Slot Clock Configuration.
            reg(o + 0x10, "pcie_linkctl_linksta", (1 << 12 | 4 << 4 | 2) << 16, wmask=0x00cb)
            # Slot and Root registers (0x14-0x23) are reserved for an endpoint: 0.
            reg(o + 0x24, "pcie_devcap2", 0)
            reg(o + 0x28, "pcie_devctl2", 0)
            # [PCIe-3.0 7.8.18] Supported Link Speeds: 2.5 and 5.0 GT/s.
            reg(o + 0x2c, "pcie_linkcap2", 0x6)
            # Link Control 2: Target Link Speed RW, reset 5.0 GT/s.
            reg(o + 0x30, "pcie_linkctl2", 0x2, wmask=0xf)
            reg(o + 0x34, "pcie_slotcap2", 0)
            reg(o + 0x38, "pcie_slotctl2", 0)
        elif c.cfg_type == VIRTIO_PCI_CAP_PCI_CFG:
            # [VIRTIO-1.2 4.1.4.9] The driver programs bar, offset and length, then accesses
            # pci_cfg_data to reach BAR0 through configuration space.
            reg(o + 0x0, c.name, c.cfg_type << 24 | c.length << 16 | hdr)
            reg(o + 0x4, c.name + "_bar", 0, wmask=0x000000ff)
            reg(o + 0x8, c.name + "_offset", 0, wmask=0xffffffff)
            reg(o + 0xc, c.name + "_length", 0, wmask=0xffffffff)
            reg(o + 0x10, c.name + "_data", 0, wmask=0xffffffff, special="pci_cfg_data")
        else:
            # [VIRTIO-1.2 4.1.4] cap_vndr, cap_next, cap_len, cfg_type; bar, id, padding;
            # offset; length; (notify) notify_off_multiplier.
            reg(o + 0x0, c.name, c.cfg_type << 24 | c.length << 16 | hdr)
            reg(o + 0x4, c.name + "_bar", c.bar)
            reg(o + 0x8, c.name + "_offset", c.bar_offset)
            reg(o + 0xc, c.name + "_length", c.bar_length)
            if c.cfg_type == VIRTIO_PCI_CAP_NOTIFY_CFG:
                reg(o + 0x10, c.name + "_multiplier", p.notify_off_multiplier)


# [VIRTIO-1.2 4.1.4.3] struct virtio_pci_common_cfg, for the documentation: (offset, size,
# name, access). "queue" fields are those of the queue named by queue_select.
COMMON_FIELDS = [
    (CC_DEVICE_FEATURE_SELECT, 4, "device_feature_select", "RW"),
    (CC_DEVICE_FEATURE,        4, "device_feature", "RO, the selected 32 offered bits"),
    (CC_DRIVER_FEATURE_SELECT, 4, "driver_feature_select", "RW"),
    (CC_DRIVER_FEATURE,        4, "driver_feature", "RW until FEATURES_OK"),
    (CC_MSIX_CONFIG,           2, "msix_config", "RW, NO_VECTOR unless a table entry"),
    (CC_NUM_QUEUES,            2, "num_queues", "RO"),
    (CC_DEVICE_STATUS,         1, "device_status", "RW, 0 resets the device; bits only set"),
    (CC_CONFIG_GENERATION,     1, "config_generation", "RO"),
    (CC_QUEUE_SELECT,          2, "queue_select", "RW"),
    (CC_QUEUE_SIZE,            2, "queue_size", "RW (queue) until enabled, resets to the maximum"),
    (CC_QUEUE_MSIX_VECTOR,     2, "queue_msix_vector", "RW (queue)"),
    (CC_QUEUE_ENABLE,          2, "queue_enable", "RW (queue), writing 1 enables a valid queue"),
    (CC_QUEUE_NOTIFY_OFF,      2, "queue_notify_off", "RO (queue)"),
    (CC_QUEUE_DESC,            8, "queue_desc", "RW (queue) until enabled"),
    (CC_QUEUE_DRIVER,          8, "queue_driver", "RW (queue) until enabled"),
    (CC_QUEUE_DEVICE,          8, "queue_device", "RW (queue) until enabled"),
]


# [VIRTIO-1.2 5.2.4] struct virtio_blk_config, for the documentation: (offset, size, name,
# access). The behaviour of ``writeback`` is the golden model's (model/device.py).
BLK_CONFIG_FIELDS = [
    (0x00, 8, "capacity", "RO"),
    (0x08, 4, "size_max", "RO"),
    (0x0c, 4, "seg_max", "RO"),
    (0x10, 2, "geometry.cylinders", "RO"),
    (0x12, 1, "geometry.heads", "RO"),
    (0x13, 1, "geometry.sectors", "RO"),
    (0x14, 4, "blk_size", "RO"),
    (0x18, 1, "topology.physical_block_exp", "RO"),
    (0x19, 1, "topology.alignment_offset", "RO"),
    (0x1a, 2, "topology.min_io_size", "RO"),
    (0x1c, 4, "topology.opt_io_size", "RO"),
    (BLK_CFG_WRITEBACK, 1, "writeback",
     "the cache mode in force, 0 writethrough, 1 writeback: 0 unless FLUSH was accepted "
     "(FEATURES_OK); with FLUSH but not CONFIG_WCE, 1; with both, the driver's choice, which "
     "a write of 0 or 1 sets (other values ignored) and a device reset returns to 1. "
     "Writes without CONFIG_WCE are ignored"),
    (0x21, 1, "unused0", "RO 0"),
    (0x22, 2, "num_queues", "RO"),
    (0x24, 4, "max_discard_sectors", "RO"),
    (0x28, 4, "max_discard_seg", "RO"),
    (0x2c, 4, "discard_sector_alignment", "RO"),
    (0x30, 4, "max_write_zeroes_sectors", "RO"),
    (0x34, 4, "max_write_zeroes_seg", "RO"),
    (0x38, 1, "write_zeroes_may_unmap", "RO"),
    (0x39, 3, "unused1", "RO 0"),
]


def describe(p):
    """The register map for parameters ``p`` as Markdown (for docs/registers.md)."""
    lines = [
        "# Register map",
        "",
        "Generated by `make regmap` (`python -m model.regmap`) from `model/regmap.py`, the table",
        "the RTL, the golden model and the testbench driver are all built from. Default",
        "parameters; see `model/params.py` for the others.",
        "",
        "## BAR0",
        "",
        "| offset | length | structure | capability |",
        "|---|---|---|---|",
    ]
    bar = [(COMMON_OFFSET, COMMON_LENGTH, "virtio common configuration", "virtio-common"),
           (ISR_OFFSET, ISR_LENGTH, "virtio ISR status (read clears)", "virtio-isr"),
           (DEVICE_OFFSET, BLK_CONFIG_LENGTH, "struct virtio_blk_config", "virtio-device"),
           (NOTIFY_OFFSET, p.notify_length,
            f"notify (queue n at n * {p.notify_off_multiplier})", "virtio-notify")]
    if p.msix:
        bar += [(MSIX_TABLE_OFFSET, 16 * p.msix_table_size, "MSI-X table", "msix"),
                (MSIX_PBA_OFFSET, 8, "MSI-X PBA", "msix")]
    for off, length, what, cap in bar:
        lines.append(f"| 0x{off:04x} | 0x{length:x} | {what} | {cap} |")
    lines += ["", f"BAR0 is {p.bar0_size // 1024} KiB, "
              f"{'64' if p.bar0_64bit else '32'}-bit, non-prefetchable. Other offsets read 0 "
              "and ignore writes; accesses wider than 8 bytes complete with Completer Abort.",
              "", "## Common configuration (BAR0 + 0x0000)", "",
              "| offset | size | field | access |", "|---|---|---|---|"]
    for off, size, name, access in COMMON_FIELDS:
        lines.append(f"| 0x{off:02x} | {size} | {name} | {access} |")
    lines += ["", f"## Device configuration (BAR0 + 0x{DEVICE_OFFSET:04x})", "",
              "| offset | size | field | access |", "|---|---|---|---|"]
    for off, size, name, access in BLK_CONFIG_FIELDS:
        lines.append(f"| 0x{off:02x} | {size} | {name} | {access} |")
    lines += ["", "## Configuration space", "",
              "| offset | name | reset | writable | RW1C | notes |", "|---|---|---|---|---|---|"]
    for dw, r in sorted(config_registers(p).items()):
        lines.append(f"| 0x{dw * 4:03x} | {r.name} | 0x{r.reset:08x} | 0x{r.wmask:08x} | "
                     f"0x{r.w1c:08x} | {r.special} |")
    lines += ["", "Capabilities, in list order:", ""]
    for c in capability_layout(p):
        lines.append(f"- 0x{c.offset:02x} {c.name} (ID 0x{c.cap_id:02x}, {c.length} bytes)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from .params import DeviceParams
    print(describe(DeviceParams()), end="")
