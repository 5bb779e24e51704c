# Ref: OASIS virtio 1.2 sections 2.1, 2.2, 3.1.1, 4.1.2-4.1.5, 5.2.4; PCIe Base 3.0 sections 2.2,
# 2.3, 2.7, 7.5, 7.7, 7.8; PCI Local Bus 3.0 sections 6.2, 6.7
"""Unit tests of the golden model (:mod:`model`), driven the way a host drives the device.

Everything goes through the model's transaction API (configuration reads and writes, memory
reads and writes to BAR0), at the natural width of each field as a driver accesses it
[VIRTIO-1.2 4.1.3.1], and checks what comes back. The expected values come from the specs, not
from :mod:`model.regmap`, so a wrong table is caught here too.
"""

import re
from collections import Counter

import pytest

from model import regmap as rm
from model.device import VirtioBlkModel, SC, UR, CA
from model.params import DeviceParams, DEFAULT_FEATURES


BAR0_64 = 0x1_2340_0000     # above 4 GiB, as a 64-bit BAR is usually placed
BAR0_32 = 0xfe80_0000

# Common configuration fields: (offset, size) [VIRTIO-1.2 4.1.4.3].
DEVICE_FEATURE_SELECT = (0x00, 4)
DEVICE_FEATURE        = (0x04, 4)
DRIVER_FEATURE_SELECT = (0x08, 4)
DRIVER_FEATURE        = (0x0c, 4)
MSIX_CONFIG           = (0x10, 2)
NUM_QUEUES            = (0x12, 2)
DEVICE_STATUS         = (0x14, 1)
CONFIG_GENERATION     = (0x15, 1)
QUEUE_SELECT          = (0x16, 2)
QUEUE_SIZE            = (0x18, 2)
QUEUE_MSIX_VECTOR     = (0x1a, 2)
QUEUE_ENABLE          = (0x1c, 2)
QUEUE_NOTIFY_OFF      = (0x1e, 2)
QUEUE_DESC            = 0x20      # 64-bit fields, accessed as two 32-bit halves [4.1.3.1]
QUEUE_DRIVER          = 0x28
QUEUE_DEVICE          = 0x30

# [VIRTIO-1.2 2.1] Device status bits.
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8

# [VIRTIO-1.2 2.2, 5.2.3, 6] Feature bits.
F_SIZE_MAX, F_SEG_MAX, F_RO, F_BLK_SIZE, F_FLUSH, F_CONFIG_WCE, F_MQ = 1, 2, 5, 6, 9, 11, 12
F_INDIRECT_DESC, F_EVENT_IDX, F_VERSION_1, F_RING_PACKED = 28, 29, 32, 34
F_LIFETIME = 15

NO_VECTOR = 0xffff

# PCI capability IDs [PCI-3.0 H]; virtio cfg_type values [VIRTIO-1.2 4.1.4].
CAP_PM, CAP_VNDR, CAP_EXP, CAP_MSIX = 0x01, 0x09, 0x10, 0x11
COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG, PCI_CFG = 1, 2, 3, 4, 5

CMD_MEMORY_SPACE = 1 << 1
STS_INTERRUPT = 1 << 3
STS_CAP_LIST = 1 << 4
STS_SIGNALED_TARGET_ABORT = 1 << 11
DEVSTA_URD = 1 << 3

VARIANTS = {
    "default":     DeviceParams(),
    "qemu":        DeviceParams(bar0_64bit=False, msix=False),
    "one-queue":   DeviceParams(num_queues=1, features=DEFAULT_FEATURES & ~(1 << F_MQ)),
    "16-queues":   DeviceParams(num_queues=16, notify_off_multiplier=0, bar0_size=0x10000),
    "read-only":   DeviceParams(read_only=True, notify_off_multiplier=256, num_queues=4),
}


def bit(n):
    return 1 << n


def lanes(offset, size):
    """Byte enables of a ``size``-byte access at byte ``offset`` inside its DW."""
    return ((1 << size) - 1) << (offset & 3)


class Host:
    """The host side of the link: configuration and BAR0 accesses at natural width.

    Parameters
    ----------
    params : DeviceParams
    base : int
        Address BAR0 is programmed to.
    memory : bool
        Set Memory Space Enable in the Command register.
    """
    def __init__(self, params=None, *, base=None, memory=True):
        self.p = params if params is not None else DeviceParams()
        self.dev = VirtioBlkModel(self.p)
        if base is None:
            base = BAR0_64 if self.p.bar0_64bit else BAR0_32
        self.base = base
        self.cfg_write(0x10, base & 0xffffffff)
        if self.p.bar0_64bit:
            self.cfg_write(0x14, base >> 32)
        if memory:
            self.cfg_write(0x04, CMD_MEMORY_SPACE, 2)

    # -- configuration space --

    def cfg_read(self, offset, size=4):
        status, value = self.dev.config_read(offset >> 2, lanes(offset, size))
        assert status == SC, f"config read at {offset:#x} completed {status}"
        return value >> 8 * (offset & 3) & ((1 << 8 * size) - 1)

    def cfg_write(self, offset, value, size=4):
        status = self.dev.config_write(offset >> 2, value << 8 * (offset & 3),
                                       lanes(offset, size))
        assert status == SC, f"config write at {offset:#x} completed {status}"

    # -- BAR0 --

    def read(self, offset, size=4):
        status, data = self.dev.mem_read(self.base + (offset & ~3), 1, lanes(offset, size))
        assert status == SC, f"BAR0 read at {offset:#x} completed {status}"
        return int.from_bytes(data, "little") >> 8 * (offset & 3) & ((1 << 8 * size) - 1)

    def write(self, offset, value, size=4):
        data = (value << 8 * (offset & 3)).to_bytes(4, "little")
        status = self.dev.mem_write(self.base + (offset & ~3), data, lanes(offset, size))
        assert status == SC, f"BAR0 write at {offset:#x} completed {status}"

    def read64(self, offset):
        return self.read(offset) | self.read(offset + 4) << 32

    def write64(self, offset, value):
        self.write(offset, value & 0xffffffff)
        self.write(offset + 4, value >> 32)

    # -- common configuration, by field --

    def get(self, field):
        return self.read(*field)

    def set(self, field, value):
        self.write(field[0], value, field[1])

    def device_features(self):
        f = 0
        for sel in (0, 1):
            self.set(DEVICE_FEATURE_SELECT, sel)
            f |= self.get(DEVICE_FEATURE) << 32 * sel
        return f

    def write_driver_features(self, features):
        for sel in (0, 1):
            self.set(DRIVER_FEATURE_SELECT, sel)
            self.set(DRIVER_FEATURE, features >> 32 * sel & 0xffffffff)

    def driver_features(self):
        f = 0
        for sel in (0, 1):
            self.set(DRIVER_FEATURE_SELECT, sel)
            f |= self.get(DRIVER_FEATURE) << 32 * sel
        return f

    def negotiate(self, features):
        """The Linux order [VIRTIO-1.2 3.1.1]; returns device_status read after FEATURES_OK."""
        self.set(DEVICE_STATUS, 0)
        assert self.get(DEVICE_STATUS) == 0
        self.set(DEVICE_STATUS, ACKNOWLEDGE)
        self.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER)
        self.device_features()
        self.write_driver_features(features)
        self.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
        return self.get(DEVICE_STATUS)

    def pcie_devsta(self):
        return self.cfg_read(self.cap_offset(CAP_EXP) + 0x0a, 2)

    def status_reg(self):
        return self.cfg_read(0x06, 2)

    # -- capabilities --

    def walk_caps(self):
        """``[(offset, cap_id)]`` following the list from the Capabilities Pointer [PCI-3.0 6.7]."""
        assert self.status_reg() & STS_CAP_LIST
        caps = []
        ptr = self.cfg_read(0x34, 1)
        while ptr:
            assert ptr % 4 == 0 and 0x40 <= ptr <= 0xfc, f"bad capability pointer {ptr:#x}"
            assert ptr not in [c for c, _ in caps], f"capability list loops at {ptr:#x}"
            caps.append((ptr, self.cfg_read(ptr, 1)))
            ptr = self.cfg_read(ptr + 1, 1)
        return caps

    def cap_offset(self, cap_id):
        found = [off for off, cid in self.walk_caps() if cid == cap_id]
        assert len(found) == 1
        return found[0]

    def virtio_caps(self):
        """``{cfg_type: dict}`` of the virtio vendor capabilities [VIRTIO-1.2 4.1.4]."""
        caps = {}
        for off, cid in self.walk_caps():
            if cid != CAP_VNDR:
                continue
            c = {
                "cap": off,
                "cap_len": self.cfg_read(off + 2, 1),
                "cfg_type": self.cfg_read(off + 3, 1),
                "bar": self.cfg_read(off + 4, 1),
                "offset": self.cfg_read(off + 8),
                "length": self.cfg_read(off + 12),
            }
            if c["cfg_type"] == NOTIFY_CFG:
                c["multiplier"] = self.cfg_read(off + 16)
            assert c["cfg_type"] not in caps, "one capability of each type expected"
            caps[c["cfg_type"]] = c
        return caps

    def bar0_size(self):
        """Size BAR0 the way firmware does [PCI-3.0 6.2.5.1]; restores the BAR afterwards."""
        lo, hi = self.cfg_read(0x10), self.cfg_read(0x14)
        self.cfg_write(0x10, 0xffffffff)
        mask = self.cfg_read(0x10) & ~0xf
        if self.p.bar0_64bit:
            self.cfg_write(0x14, 0xffffffff)
            mask |= self.cfg_read(0x14) << 32
            self.cfg_write(0x14, hi)
            size = (~mask + 1) & ((1 << 64) - 1)
        else:
            size = (~mask + 1) & 0xffffffff
        self.cfg_write(0x10, lo)
        return size


# -- DeviceParams ---------------------------------------------------------------------------------

def exactly(message):
    return "^" + re.escape(message) + "$"


NO_MQ = DEFAULT_FEATURES & ~bit(F_MQ)


@pytest.mark.parametrize("kwargs, message", [
    (dict(capacity=0), "capacity must be between 1 and 2**64-1 sectors, not 0"),
    (dict(capacity=-8), "capacity must be between 1 and 2**64-1 sectors, not -8"),
    (dict(capacity=1 << 64),
     "capacity must be between 1 and 2**64-1 sectors, not 18446744073709551616"),
    (dict(capacity=2048.0), "capacity must be between 1 and 2**64-1 sectors, not 2048.0"),
    (dict(num_queues=0), "num_queues must be between 1 and 16, not 0"),
    (dict(num_queues=17), "num_queues must be between 1 and 16, not 17"),
    (dict(num_queues="2"), "num_queues must be between 1 and 16, not '2'"),
    (dict(max_queue_size=1), "max_queue_size must be a power of two between 2 and 32768, not 1"),
    (dict(max_queue_size=384),
     "max_queue_size must be a power of two between 2 and 32768, not 384"),
    (dict(max_queue_size=65536),
     "max_queue_size must be a power of two between 2 and 32768, not 65536"),
    (dict(max_queue_size=256.0),
     "max_queue_size must be a power of two between 2 and 32768, not 256.0"),
    (dict(bar0_size=0x4000),
     "bar0_size must be a power of two of at least 0x8000 bytes, not 16384"),
    (dict(bar0_size=0xc000),
     "bar0_size must be a power of two of at least 0x8000 bytes, not 49152"),
    (dict(bar0_64bit=False, bar0_size=1 << 32), "a 32-bit BAR0 cannot be 0x100000000 bytes"),
    (dict(data_width=128),
     "data_width must be 64 (128 and 256 are not implemented yet), not 128"),
    (dict(features=1 << 64), "features must fit in 64 bits"),
    (dict(features=-1), "features must fit in 64 bits"),
    (dict(num_queues=2, features=NO_MQ),
     "num_queues > 1 needs VIRTIO_BLK_F_MQ in features [VIRTIO-1.2 5.2.3]"),
    (dict(dma_read_tags=0), "dma_read_tags must be from 1 to 256 (the 8-bit Tag field), not 0"),
    (dict(dma_read_tags=257),
     "dma_read_tags must be from 1 to 256 (the 8-bit Tag field), not 257"),
    (dict(desc_prefetch=0), "desc_prefetch must be from 1 to 8 descriptors (128 bytes, the "
                            "smallest Max_Read_Request_Size), not 0"),
    (dict(desc_prefetch=9), "desc_prefetch must be from 1 to 8 descriptors (128 bytes, the "
                            "smallest Max_Read_Request_Size), not 9"),
    (dict(avail_prefetch=0), "avail_prefetch must be from 1 to 32 entries, not 0"),
    (dict(avail_prefetch=33), "avail_prefetch must be from 1 to 32 entries, not 33"),
    (dict(max_payload_size_supported=6),
     "max_payload_size_supported is the encoded field, 0 (128 B) to 5 (4096 B)"),
    (dict(max_payload_size_supported=-1),
     "max_payload_size_supported is the encoded field, 0 (128 B) to 5 (4096 B)"),
    (dict(notify_off_multiplier=1),
     "notify_off_multiplier must be 0 or an even power of two up to 512 [VIRTIO-1.2 4.1.4.4]"),
    (dict(notify_off_multiplier=6),
     "notify_off_multiplier must be 0 or an even power of two up to 512 [VIRTIO-1.2 4.1.4.4]"),
    (dict(notify_off_multiplier=1024),
     "notify_off_multiplier must be 0 or an even power of two up to 512 [VIRTIO-1.2 4.1.4.4]"),
    (dict(notify_off_multiplier=2),
     "features with VIRTIO_F_NOTIFICATION_DATA need notify_off_multiplier 0 or a multiple of "
     "4: the driver writes 32 bits [VIRTIO-1.2 4.1.4.4]"),
    (dict(features=DEFAULT_FEATURES | bit(rm.VIRTIO_F_RING_PACKED)),
     "VIRTIO_F_RING_PACKED is not implemented"),
    (dict(num_queues=16, notify_off_multiplier=512),
     "the notify region does not fit its 4 KiB window"),
    (dict(features=DEFAULT_FEATURES & ~bit(F_FLUSH)),
     "features with VIRTIO_BLK_F_CONFIG_WCE must include VIRTIO_BLK_F_FLUSH "
     "[VIRTIO-1.2 5.2.5.2]"),
    (dict(writeback=2), "writeback must be 0 (writethrough) or 1 (writeback), not 2"),
    (dict(writeback=True), "writeback must be 0 (writethrough) or 1 (writeback), not True"),
])
def test_params_rejected(kwargs, message):
    with pytest.raises(ValueError, match=exactly(message)):
        DeviceParams(**kwargs)


def test_params_version_1_required():
    # [VIRTIO-1.2 6.2] A device MUST offer VIRTIO_F_VERSION_1. The section the message cites is
    # not checked here (see the report: it names 7.1).
    with pytest.raises(ValueError,
                       match=r"^features must include VIRTIO_F_VERSION_1 \[VIRTIO-1\.2 [\d.]+\]$"):
        DeviceParams(features=DEFAULT_FEATURES & ~bit(F_VERSION_1))


def test_params_replace_is_validated():
    p = DeviceParams()
    with pytest.raises(ValueError, match=exactly("num_queues must be between 1 and 16, not 0")):
        p.replace(num_queues=0)
    assert p.replace(num_queues=4).num_queues == 4
    assert p.num_queues == 2


@pytest.mark.parametrize("kwargs", [
    dict(num_queues=1, features=NO_MQ),
    dict(num_queues=16, notify_off_multiplier=256),
    dict(num_queues=8, notify_off_multiplier=512),
    dict(max_queue_size=2), dict(max_queue_size=32768),
    dict(bar0_64bit=False, bar0_size=1 << 31),
    dict(capacity=(1 << 64) - 1),
    dict(notify_off_multiplier=0),
])
def test_params_accepted_at_the_limits(kwargs):
    p = DeviceParams(**kwargs)
    for name, value in kwargs.items():
        assert getattr(p, name) == value


# -- identity and capabilities ------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_pci_identity(variant):
    p = VARIANTS[variant]
    h = Host(p)
    # [VIRTIO-1.2 4.1.2.1] Vendor 0x1AF4; Device ID 0x1040 + 2 (block); Revision ID >= 1 and
    # Subsystem Device ID >= 0x40 for a non-transitional device.
    assert h.cfg_read(0x00, 2) == 0x1af4
    assert h.cfg_read(0x02, 2) == 0x1042
    assert h.cfg_read(0x08, 1) >= 1
    assert h.cfg_read(0x2e, 2) >= 0x40
    assert h.cfg_read(0x2c, 2) == p.subsystem_vendor_id
    # [PCI-3.0 6.2.1] Header Type 0, single function.
    assert h.cfg_read(0x0e, 1) == 0x00
    # [PCIe-3.0 7.9.1] No extended capabilities: the header at 0x100 reads 0.
    assert h.cfg_read(0x100) == 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_capability_list(variant):
    p = VARIANTS[variant]
    h = Host(p)
    caps = h.walk_caps()
    ids = Counter(cid for _, cid in caps)
    # [PCIe-3.0 7.8, PCI-PM 1.2] PM and PCI Express capabilities; MSI-X only when built;
    # [VIRTIO-1.2 4.1.4] one vendor capability per virtio structure type (five types).
    expected = Counter({CAP_PM: 1, CAP_EXP: 1, CAP_VNDR: 5})
    if p.msix:
        expected[CAP_MSIX] = 1
    assert ids == expected

    # The structures in configuration space do not overlap and stay below 0x100.
    length = {CAP_PM: 8, CAP_MSIX: 12, CAP_EXP: 0x3c}
    spans = []
    for off, cid in caps:
        n = length[cid] if cid != CAP_VNDR else h.cfg_read(off + 2, 1)
        assert off + n <= 0x100
        spans.append((off, off + n))
    spans.sort()
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start

    # [PCIe-3.0 7.8.2] Capability version 2, Device/Port Type 0 (PCI Express Endpoint).
    pcie = h.cap_offset(CAP_EXP)
    assert h.cfg_read(pcie + 2, 2) & 0xf == 2
    assert h.cfg_read(pcie + 2, 2) >> 4 & 0xf == 0


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_virtio_capabilities(variant):
    p = VARIANTS[variant]
    h = Host(p)
    caps = h.virtio_caps()
    assert set(caps) == {COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG, PCI_CFG}
    for c in caps.values():
        # [VIRTIO-1.2 4.1.4] struct virtio_pci_cap is 16 bytes; cap_len covers it.
        assert c["cap_len"] >= 16
    assert caps[NOTIFY_CFG]["cap_len"] >= 20    # + notify_off_multiplier
    assert caps[PCI_CFG]["cap_len"] >= 20       # + pci_cfg_data

    bar0_size = h.bar0_size()
    assert bar0_size == p.bar0_size
    spans = []
    for t in (COMMON_CFG, NOTIFY_CFG, ISR_CFG, DEVICE_CFG):
        c = caps[t]
        assert c["bar"] == 0, "BAR0 is the only BAR"
        assert c["length"] > 0
        assert c["offset"] + c["length"] <= bar0_size, f"cfg_type {t} runs past BAR0"
        spans.append((c["offset"], c["offset"] + c["length"], f"cfg_type {t}"))

    # [VIRTIO-1.2 4.1.4.3.1, 4.1.4.6.1] 4-byte aligned common and device structures;
    # [4.1.4.4.1] 2-byte aligned notify structure.
    assert caps[COMMON_CFG]["offset"] % 4 == 0
    assert caps[DEVICE_CFG]["offset"] % 4 == 0
    assert caps[NOTIFY_CFG]["offset"] % 2 == 0
    # The common structure covers struct virtio_pci_common_cfg up to queue_device (0x38);
    # the device structure covers struct virtio_blk_config up to write_zeroes_may_unmap.
    assert caps[COMMON_CFG]["length"] >= 0x38
    assert caps[DEVICE_CFG]["length"] >= 0x39
    assert caps[ISR_CFG]["length"] >= 1
    # [VIRTIO-1.2 4.1.4.4.1] notify_off_multiplier is 0 or an even power of two.
    mult = caps[NOTIFY_CFG]["multiplier"]
    assert mult == p.notify_off_multiplier
    assert mult == 0 or (mult % 2 == 0 and mult & (mult - 1) == 0)

    if p.msix:
        # [PCIe-3.0 7.7] Table and PBA in BAR0, QWORD aligned.
        msix = h.cap_offset(CAP_MSIX)
        n = (h.cfg_read(msix + 2, 2) & 0x7ff) + 1
        table, pba = h.cfg_read(msix + 4), h.cfg_read(msix + 8)
        assert table & 7 == 0 and pba & 7 == 0, "BIR must be BAR0"
        table &= ~7
        pba &= ~7
        spans.append((table, table + 16 * n, "MSI-X table"))
        spans.append((pba, pba + 8 * ((n + 63) // 64), "MSI-X PBA"))
        assert table + 16 * n <= bar0_size and pba + 8 <= bar0_size
        # [PCIe-3.0 7.7] Other registers must not share a naturally aligned 4 KiB range with
        # the MSI-X table or PBA.
        msix_pages = {a >> 12 for s, e, _ in spans[-2:] for a in range(s, e, 4)}
        virtio_pages = {a >> 12 for s, e, _ in spans[:-2] for a in range(s, e)}
        assert not msix_pages & virtio_pages

    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        assert end <= start, f"{a} overlaps {b}"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_notify_addresses(variant):
    # [VIRTIO-1.2 4.1.4.4] Each queue's notify address is cap.offset + queue_notify_off *
    # notify_off_multiplier, inside the structure; writing the queue index notifies it.
    p = VARIANTS[variant]
    h = Host(p)
    notify = h.virtio_caps()[NOTIFY_CFG]
    for q in range(p.num_queues):
        h.set(QUEUE_SELECT, q)
        off = h.get(QUEUE_NOTIFY_OFF) * notify["multiplier"]
        assert off + 2 <= notify["length"]
        h.write(notify["offset"] + off, q, 2)
        assert h.dev.notifications[-1] == q
    assert len(h.dev.notifications) == p.num_queues


@pytest.mark.parametrize("variant", ["default", "read-only"])
def test_msix_capability(variant):
    p = VARIANTS[variant]
    h = Host(p)
    msix = h.cap_offset(CAP_MSIX)
    control = h.cfg_read(msix + 2, 2)
    n = (control & 0x7ff) + 1
    # [VIRTIO-1.2 4.1.5.1.2.1] At least 2 vectors; one per queue plus the configuration vector.
    assert 2 <= n <= 0x800
    assert n == p.num_queues + 1
    # [PCIe-3.0 7.7.1] MSI-X Enable and Function Mask reset to 0.
    assert control >> 14 == 0
    # [PCIe-3.0 7.7.2] Each entry's Mask Bit resets to 1.
    table = h.cfg_read(msix + 4) & ~7
    for i in range(n):
        assert h.read(table + 16 * i + 12) & 1 == 1


def test_no_msix():
    p = VARIANTS["qemu"]
    h = Host(p)
    assert CAP_MSIX not in [cid for _, cid in h.walk_caps()]
    # [VIRTIO-1.2 4.1.5.1.2] Without vectors every mapping fails and reads NO_VECTOR.
    h.set(MSIX_CONFIG, 0)
    assert h.get(MSIX_CONFIG) == NO_VECTOR
    h.set(QUEUE_MSIX_VECTOR, 0)
    assert h.get(QUEUE_MSIX_VECTOR) == NO_VECTOR
    # The MSI-X table window is not decoded as a table.
    h.write(rm.MSIX_TABLE_OFFSET, 0xfee00000)
    assert h.read(rm.MSIX_TABLE_OFFSET) == 0


def test_bar0_64bit():
    h = Host(DeviceParams(), memory=False)
    h.cfg_write(0x10, 0xffffffff)
    h.cfg_write(0x14, 0xffffffff)
    bar0, bar1 = h.cfg_read(0x10), h.cfg_read(0x14)
    # [PCI-3.0 6.2.5.1] Memory BAR (bit 0 = 0), type 10b = 64-bit, not prefetchable (ISR reads
    # have side effects); size bits read 0.
    assert bar0 & 0xf == 0x4
    assert bar0 & ~0xf == (~(0x8000 - 1)) & 0xfffffff0
    assert bar1 == 0xffffffff


def test_bar0_32bit():
    p = DeviceParams(bar0_64bit=False, msix=False)
    h = Host(p, memory=False)
    h.cfg_write(0x10, 0xffffffff)
    h.cfg_write(0x14, 0xffffffff)
    # [PCI-3.0 6.2.5.1] Type 00b = 32-bit; BAR1 is unimplemented and reads 0.
    assert h.cfg_read(0x10) == (~(p.bar0_size - 1)) & 0xfffffff0
    assert h.cfg_read(0x14) == 0
    assert h.bar0_size() == p.bar0_size
    h.cfg_write(0x10, BAR0_32)
    h.cfg_write(0x04, CMD_MEMORY_SPACE, 2)
    assert h.cfg_read(0x10) == BAR0_32
    assert h.get(NUM_QUEUES) == p.num_queues
    # Only the low 32 address bits are decoded by a 32-bit BAR: an address above 4 GiB
    # with the same low bits is not ours.
    status, _ = h.dev.mem_read((1 << 32) + BAR0_32 + 0x10, 1, 0b1100)
    assert status == UR


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_device_config(variant):
    # [VIRTIO-1.2 5.2.4] struct virtio_blk_config, read field by field.
    p = VARIANTS[variant]
    h = Host(p)
    dev = h.virtio_caps()[DEVICE_CFG]["offset"]
    assert h.read64(dev + 0x00) == p.capacity
    assert h.read(dev + 0x08) == p.size_max
    assert h.read(dev + 0x0c) == p.seg_max
    assert h.read(dev + 0x14) == p.blk_size
    assert h.read(dev + 0x22, 2) == p.num_queues
    assert h.read(dev + 0x24) == p.max_discard_sectors
    assert h.read(dev + 0x30) == p.max_write_zeroes_sectors


# -- the cache mode: writeback [VIRTIO-1.2 5.2.5] -------------------------------------------------

WRITEBACK = 0x20     # struct virtio_blk_config.writeback [VIRTIO-1.2 5.2.4]


def writeback(h):
    return h.read(h.virtio_caps()[DEVICE_CFG]["offset"] + WRITEBACK, 1)


def set_writeback(h, value):
    h.write(h.virtio_caps()[DEVICE_CFG]["offset"] + WRITEBACK, value, 1)


BASE = bit(F_VERSION_1)


@pytest.mark.parametrize("accepted, mode", [
    (BASE, 0),                                            # [5.2.6.2] no FLUSH: writethrough
    (BASE | bit(F_FLUSH), 1),                             # [5.2.5.1] FLUSH alone: writeback
    (BASE | bit(F_FLUSH) | bit(F_CONFIG_WCE), 1),         # the reset value, writeback
    (DEFAULT_FEATURES, 1),
], ids=rm.feature_names)
def test_cache_mode_follows_the_features(accepted, mode):
    # [VIRTIO-1.2 5.2.5] The actual mode can be read in writeback after feature negotiation;
    # the storage port carries the same value (VirtioBlkModel.writeback).
    h = Host()
    assert h.negotiate(accepted) & FEATURES_OK
    assert writeback(h) == mode == h.dev.writeback


def test_cache_mode_without_flush_is_writethrough():
    # [VIRTIO-1.2 5.2.5.2] With CONFIG_WCE but not FLUSH the device MUST initialize writeback
    # to 0; the driver could never flush, so it stays 0 whatever is written.
    h = Host()
    assert h.negotiate(BASE | bit(F_CONFIG_WCE)) & FEATURES_OK
    assert writeback(h) == 0 == h.dev.writeback
    set_writeback(h, 1)
    assert writeback(h) == 0 == h.dev.writeback


def test_cache_mode_is_zero_before_features_ok():
    # [VIRTIO-1.2 5.2.5.1] The driver MUST NOT read writeback before FEATURES_OK; it reads 0
    # then, and a write is ignored.
    h = Host()
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER)
    h.write_driver_features(DEFAULT_FEATURES)
    assert writeback(h) == 0
    set_writeback(h, 0)
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
    assert writeback(h) == 1, "a write before FEATURES_OK changed the mode"


def test_cache_mode_set_by_the_driver():
    # [VIRTIO-1.2 5.2.5] With CONFIG_WCE the cache mode is set through writeback: 0
    # writethrough, 1 writeback. Other values are ignored (a choice, see model/device.py);
    # the other bytes of the DW are read-only.
    h = Host()
    dev = h.virtio_caps()[DEVICE_CFG]["offset"]
    assert h.negotiate(DEFAULT_FEATURES) & FEATURES_OK
    before = h.read(dev + WRITEBACK)
    set_writeback(h, 0)
    assert writeback(h) == 0 == h.dev.writeback
    for junk in (2, 0x81, 0xff):
        set_writeback(h, junk)
        assert writeback(h) == 0, f"a write of {junk:#x} changed the mode"
    set_writeback(h, 1)
    assert writeback(h) == 1 == h.dev.writeback
    # A 4-byte write: byte 0 sets the mode, unused0 and num_queues stay as they were.
    h.write(dev + WRITEBACK, 0xffff_ff00)
    assert h.read(dev + WRITEBACK) == before & ~0xff
    # A write to num_queues' lanes alone leaves the mode.
    h.write(dev + 0x22, 0, 2)
    assert h.read(dev + WRITEBACK) == before & ~0xff
    set_writeback(h, 1)
    # [VIRTIO-1.2 5.2.5] The mode after reset may be either; here it is writeback again.
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    set_writeback(h, 0)
    assert h.negotiate(DEFAULT_FEATURES) & FEATURES_OK
    assert writeback(h) == 1 == h.dev.writeback


def test_cache_mode_read_only_without_config_wce():
    # Without CONFIG_WCE the field does not exist for the driver [VIRTIO-1.2 5.2.4]: writes
    # are ignored; it reads the mode in force.
    h = Host()
    assert h.negotiate(BASE | bit(F_FLUSH)) & FEATURES_OK
    set_writeback(h, 0)
    assert writeback(h) == 1 == h.dev.writeback


def test_cache_mode_reset_value_is_a_parameter():
    h = Host(DeviceParams(writeback=0))
    assert h.negotiate(DEFAULT_FEATURES) & FEATURES_OK
    assert writeback(h) == 0
    set_writeback(h, 1)
    assert writeback(h) == 1
    h.set(DEVICE_STATUS, 0)
    assert h.negotiate(DEFAULT_FEATURES) & FEATURES_OK
    assert writeback(h) == 0


# -- feature negotiation ------------------------------------------------------------------------

@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_device_features_offered(variant):
    p = VARIANTS[variant]
    h = Host(p)
    f = h.device_features()
    assert f & bit(F_VERSION_1)
    assert bool(f & bit(F_RO)) == p.read_only
    if p.num_queues > 1:
        assert f & bit(F_MQ)    # [VIRTIO-1.2 5.2.4] num_queues is valid only with MQ
    assert f == p.features | (bit(F_RO) if p.read_only else 0)
    # [VIRTIO-1.2 4.1.4.3] No feature bit above 63 is offered: the third word reads 0.
    h.set(DEVICE_FEATURE_SELECT, 2)
    assert h.get(DEVICE_FEATURE) == 0


@pytest.mark.parametrize("accepted", [
    bit(F_VERSION_1),
    bit(F_VERSION_1) | bit(F_BLK_SIZE) | bit(F_FLUSH),
    bit(F_VERSION_1) | bit(F_INDIRECT_DESC) | bit(F_EVENT_IDX) | bit(F_SIZE_MAX) | bit(F_SEG_MAX),
    DEFAULT_FEATURES,
], ids=rm.feature_names)
def test_features_ok_for_a_subset(accepted):
    # [VIRTIO-1.2 2.2.2] The device SHOULD accept any valid subset of the offered features.
    h = Host()
    assert accepted & ~h.device_features() == 0
    status = h.negotiate(accepted)
    assert status == ACKNOWLEDGE | DRIVER | FEATURES_OK
    assert h.driver_features() == accepted


def test_features_ok_read_only_feature():
    h = Host(VARIANTS["read-only"])
    status = h.negotiate(bit(F_VERSION_1) | bit(F_RO))
    assert status & FEATURES_OK


@pytest.mark.parametrize("accepted", [
    bit(F_VERSION_1) | bit(F_RO),             # RO is not offered by a writable disk
    bit(F_VERSION_1) | bit(F_LIFETIME),
    bit(F_VERSION_1) | bit(F_RING_PACKED),
    bit(F_VERSION_1) | bit(63),
    DEFAULT_FEATURES | bit(F_RO),
], ids=rm.feature_names)
def test_features_ok_refused_for_unoffered_bit(accepted):
    # [VIRTIO-1.2 2.2.1] The driver MUST NOT accept a feature the device did not offer;
    # [2.2.2] the device fails to set FEATURES_OK for a subset it does not accept.
    h = Host()
    assert accepted & ~h.device_features() != 0
    status = h.negotiate(accepted)
    assert status == ACKNOWLEDGE | DRIVER
    assert not h.get(DEVICE_STATUS) & FEATURES_OK


@pytest.mark.parametrize("accepted", [0, bit(F_BLK_SIZE) | bit(F_FLUSH),
                                      DEFAULT_FEATURES & ~bit(F_VERSION_1)],
                         ids=rm.feature_names)
def test_features_ok_refused_without_version_1(accepted):
    # [VIRTIO-1.2 6.2] A device MAY fail to operate further if VIRTIO_F_VERSION_1 is not
    # accepted; this one refuses FEATURES_OK.
    h = Host()
    status = h.negotiate(accepted)
    assert status == ACKNOWLEDGE | DRIVER


def test_driver_features_frozen_after_features_ok():
    # [VIRTIO-1.2 3.1.1] The driver MUST NOT accept new feature bits after FEATURES_OK; the
    # model ignores driver_feature writes from then on.
    h = Host()
    accepted = bit(F_VERSION_1) | bit(F_FLUSH)
    assert h.negotiate(accepted) & FEATURES_OK
    h.write_driver_features(DEFAULT_FEATURES)
    assert h.driver_features() == accepted
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    assert h.get(DEVICE_STATUS) == ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK


def test_driver_features_writable_before_features_ok():
    h = Host()
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER)
    h.write_driver_features(bit(F_VERSION_1) | bit(F_RO))
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
    assert not h.get(DEVICE_STATUS) & FEATURES_OK
    # Refused: the driver may still change its mind before setting FEATURES_OK again.
    h.write_driver_features(bit(F_VERSION_1))
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)
    assert h.get(DEVICE_STATUS) & FEATURES_OK
    assert h.driver_features() == bit(F_VERSION_1)


# -- device reset -------------------------------------------------------------------------------

PER_QUEUE_DWS = range(0x18, rm.COMMON_LENGTH, 4)


def common_snapshot(h):
    """Every DW of the common configuration, plus each select-dependent view of it.

    The plain DW reads come first, so they see the state as found; the selected views then
    write the select registers (identically for every model compared).
    """
    snap = {("dw", off): h.read(off) for off in range(0, rm.COMMON_LENGTH, 4)}
    for sel in (0, 1):
        h.set(DEVICE_FEATURE_SELECT, sel)
        snap[("device_feature", sel)] = h.get(DEVICE_FEATURE)
        h.set(DRIVER_FEATURE_SELECT, sel)
        snap[("driver_feature", sel)] = h.get(DRIVER_FEATURE)
    for q in range(h.p.num_queues + 1):           # one past the last queue: unavailable
        h.set(QUEUE_SELECT, q)
        for off in PER_QUEUE_DWS:
            snap[("queue", q, off)] = h.read(off)
    return snap


def dirty_everything(h):
    """Write every driver-writable common configuration field to a non-reset value."""
    accepted = bit(F_VERSION_1) | bit(F_FLUSH)
    assert h.negotiate(accepted) & FEATURES_OK
    vectors = h.p.msix_table_size
    for q in range(h.p.num_queues):
        h.set(QUEUE_SELECT, q)
        h.set(QUEUE_SIZE, h.p.max_queue_size // 2)
        if vectors:
            h.set(QUEUE_MSIX_VECTOR, (q + 1) % vectors)
        h.write64(QUEUE_DESC, 0x1_1000_0000 + 0x10000 * q)
        h.write64(QUEUE_DRIVER, 0x2_2000_0000 + 0x10000 * q)
        h.write64(QUEUE_DEVICE, 0x3_3000_0000 + 0x10000 * q)
        h.set(QUEUE_ENABLE, 1)
    if vectors:
        h.set(MSIX_CONFIG, 0)
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK)
    h.set(DEVICE_FEATURE_SELECT, 1)
    h.set(DRIVER_FEATURE_SELECT, 1)
    h.set(QUEUE_SELECT, h.p.num_queues - 1 if h.p.num_queues > 1 else 0)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reset_restores_common_config(variant):
    # [VIRTIO-1.2 4.1.4.3.1] Writing 0 to device_status resets the device; [2.4.1] device_status
    # reads 0 afterwards; [4.1.5.1.2.1] all events are unmapped upon reset.
    p = VARIANTS[variant]
    fresh = common_snapshot(Host(p))
    h = Host(p)
    dirty_everything(h)
    before = common_snapshot(h)

    # The dirtying must reach every writable field, or the comparison below proves little.
    changed = {k for k in fresh if fresh[k] != before[k]}
    must_change = {("dw", 0x0c), ("dw", 0x14), ("driver_feature", 0), ("driver_feature", 1)}
    must_change |= {("dw", 0x18), ("dw", 0x1c), ("dw", 0x20), ("dw", 0x28), ("dw", 0x30)}
    if p.msix:
        must_change.add(("dw", 0x10))
    for q in range(p.num_queues):
        must_change |= {("queue", q, off) for off in (0x18, 0x1c, 0x20, 0x24, 0x28, 0x2c, 0x30,
                                                      0x34)}
    must_change |= {("dw", 0x00), ("dw", 0x04), ("dw", 0x08)}
    assert must_change <= changed, sorted(must_change - changed)

    h.set(DEVICE_FEATURE_SELECT, 1)
    h.set(DRIVER_FEATURE_SELECT, 1)
    h.set(DEVICE_STATUS, 0)
    assert h.get(DEVICE_STATUS) == 0
    after = common_snapshot(h)
    diff = {k: (after[k], fresh[k]) for k in fresh if after[k] != fresh[k]}
    assert not diff, f"after reset (read, expected): {diff}"


def test_reset_keeps_pci_state():
    # A virtio reset is not a PCI reset: BAR, Command and the MSI-X table stay as programmed.
    h = Host()
    msix = h.cap_offset(CAP_MSIX)
    table = h.cfg_read(msix + 4) & ~7
    h.write(table + 8, 0x4321)
    h.set(DEVICE_STATUS, ACKNOWLEDGE)
    h.set(DEVICE_STATUS, 0)
    assert h.cfg_read(0x04, 2) & CMD_MEMORY_SPACE
    assert h.read(table + 8) == 0x4321


# -- ISR and INTx -------------------------------------------------------------------------------

def test_isr_read_clears():
    h = Host(VARIANTS["qemu"])
    isr = h.virtio_caps()[ISR_CFG]["offset"]
    assert h.read(isr, 1) == 0
    # The model has no interrupt-raising transaction yet; set the ISR as the queue engine will.
    h.dev.isr = 0b01
    assert h.read(isr, 1) == 0b01
    # [VIRTIO-1.2 4.1.4.5.1] The device MUST reset ISR status to 0 on driver read.
    assert h.read(isr, 1) == 0
    h.dev.isr = 0b11
    assert h.read(isr, 4) & 0xff == 0b11
    assert h.read(isr, 1) == 0


def test_intx_status_follows_isr():
    # [VIRTIO-1.2 4.1.4.5.1] Without MSI-X the Interrupt Status bit of the PCI Status register is
    # the OR of the ISR bits, and reading the ISR clears both.
    h = Host(VARIANTS["qemu"])
    isr = h.virtio_caps()[ISR_CFG]["offset"]
    assert not h.status_reg() & STS_INTERRUPT
    h.dev.isr = 0b10
    assert h.status_reg() & STS_INTERRUPT
    h.read(isr, 1)
    assert not h.status_reg() & STS_INTERRUPT


# -- BAR decode and error handling ------------------------------------------------------------

@pytest.mark.parametrize("variant", ["default", "qemu"])
def test_bar_decode_needs_memory_space_enable(variant):
    p = VARIANTS[variant]
    h = Host(p, memory=False)
    addr = h.base + NUM_QUEUES[0]
    # [PCI-3.0 6.2.2] With Memory Space Enable clear the function does not decode its BAR:
    # [PCIe-3.0 2.3.1] the request is Unsupported, and [7.8.5] Unsupported Request Detected
    # is set.
    assert not h.pcie_devsta() & DEVSTA_URD
    assert h.dev.mem_read(addr, 1, 0b1100) == (UR, None)
    assert h.pcie_devsta() & DEVSTA_URD
    # Unsupported Request Detected is RW1C.
    pcie = h.cap_offset(CAP_EXP)
    h.cfg_write(pcie + 0x0a, DEVSTA_URD, 2)
    assert not h.pcie_devsta() & DEVSTA_URD
    # A posted write is dropped, too.
    assert h.dev.mem_write(h.base, (1).to_bytes(4, "little"), 0xf) == UR
    assert h.pcie_devsta() & DEVSTA_URD

    h.cfg_write(0x04, CMD_MEMORY_SPACE, 2)
    assert h.get(NUM_QUEUES) == p.num_queues
    assert h.get(DEVICE_FEATURE_SELECT) == 0, "the write without Memory Space Enable landed"

    h.cfg_write(0x04, 0, 2)
    assert h.dev.mem_read(addr, 1, 0b1100)[0] == UR


@pytest.mark.parametrize("variant", ["default", "qemu"])
def test_addresses_outside_bar0_are_unsupported(variant):
    p = VARIANTS[variant]
    h = Host(p)
    for addr in (h.base - 4, h.base + p.bar0_size, h.base ^ (1 << 31), 0):
        assert h.dev.mem_read(addr, 1, 0xf) == (UR, None), hex(addr)
    assert h.dev.mem_read(h.base + p.bar0_size - 4, 1, 0xf)[0] == SC


def test_unsupported_requests():
    h = Host()
    pcie = h.cap_offset(CAP_EXP)
    # [PCIe-3.0 2.3.1] I/O, Type 1 configuration, locked reads and other request types this
    # function does not implement complete as UR and set Unsupported Request Detected.
    assert h.dev.unsupported() == UR
    assert h.pcie_devsta() & DEVSTA_URD
    h.cfg_write(pcie + 0x0a, DEVSTA_URD, 2)
    # A single-function device: functions 1-7 do not exist.
    assert h.dev.config_read(0, 0xf, function=1) == (UR, None)
    before = h.cfg_read(0x04)
    assert h.dev.config_write(1, 0, 0xf, function=3) == UR
    assert h.cfg_read(0x04) == before
    # [PCIe-3.0 2.7.2.2] A poisoned Configuration Write is discarded and completes UR.
    assert h.dev.config_write(0x3c // 4, 0x5a, 0x1, poisoned=True) == UR
    assert h.cfg_read(0x3c, 1) == 0


def test_wide_bar_access_is_completer_abort():
    # The model's documented choice: a BAR0 request longer than 2 DW violates the virtio
    # programming model [VIRTIO-1.2 4.1.3.1] and completes CA [PCIe-3.0 2.3.1], setting
    # Signaled Target Abort [PCI-3.0 6.2.3].
    h = Host()
    assert not h.status_reg() & STS_SIGNALED_TARGET_ABORT
    assert h.dev.mem_read(h.base, 4, 0xf, 0xf) == (CA, None)
    assert h.status_reg() & STS_SIGNALED_TARGET_ABORT
    h.cfg_write(0x06, STS_SIGNALED_TARGET_ABORT, 2)
    assert not h.status_reg() & STS_SIGNALED_TARGET_ABORT


# -- VIRTIO_PCI_CAP_PCI_CFG window --------------------------------------------------------------

def window(h, offset, length):
    cap = h.virtio_caps()[PCI_CFG]["cap"]
    h.cfg_write(cap + 4, 0, 1)           # cap.bar
    h.cfg_write(cap + 8, offset)         # cap.offset
    h.cfg_write(cap + 12, length)        # cap.length
    return cap + 16                      # pci_cfg_data


@pytest.mark.parametrize("field", [DEVICE_FEATURE_SELECT, DEVICE_FEATURE, NUM_QUEUES,
                                   DEVICE_STATUS, CONFIG_GENERATION, QUEUE_SIZE],
                         ids=lambda f: f"{f[0]:#04x}")
def test_pci_cfg_window_read(field):
    # [VIRTIO-1.2 4.1.4.9.1] A read of pci_cfg_data reads cap.length bytes at cap.offset of the
    # BAR and stores them in the first bytes of pci_cfg_data.
    h = Host()
    h.set(DEVICE_STATUS, ACKNOWLEDGE | DRIVER)
    h.set(DEVICE_FEATURE_SELECT, 1)
    offset, size = field
    data = window(h, offset, size)
    assert h.cfg_read(data, size) == h.get(field)


def test_pci_cfg_window_write_device_status():
    # [VIRTIO-1.2 4.1.4.9.1] A write of pci_cfg_data writes its first cap.length bytes at
    # cap.offset of the BAR; device_status (offset 0x14, 1 byte) is a valid target.
    h = Host()
    data = window(h, *DEVICE_STATUS)
    h.cfg_write(data, ACKNOWLEDGE, 1)
    assert h.get(DEVICE_STATUS) == ACKNOWLEDGE


def test_pci_cfg_window_write_queue_select():
    h = Host()
    data = window(h, *QUEUE_SELECT)
    h.cfg_write(data, 1, 2)
    assert h.get(QUEUE_SELECT) == 1


def test_register_map_document_is_current():
    """docs/registers.md is generated from model/regmap.py; it must not drift (make regmap)."""
    import pathlib
    doc = pathlib.Path(__file__).resolve().parent.parent / "docs" / "registers.md"
    assert doc.read_text() == rm.describe(DeviceParams()), "run `make regmap`"
