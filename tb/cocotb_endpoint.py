# Ref: OASIS virtio 1.2 sections 3.1, 4.1; PCIe Base 3.0 sections 2.2, 2.3, 7.5
"""System tests of the endpoint: the generated Verilog behind cocotbext-pcie's RootComplex.

Run through ``tb/test_system.py`` (pytest) or ``python -m tb.run``. Every TLP the DUT receives
also goes to the golden model, and every completion is compared with it (``tb/scoreboard.py``),
so each test below checks the model agreement on top of what it asserts itself.
"""

import os

import cocotb
from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus
from cocotbext.pcie.core.utils import PcieId

from model import regmap as rm
from .testbench import TB


TIMEOUT_MS = 20


def _common_snapshot_plan(p):
    """(queue_select value or None, offset, size) for every common configuration field."""
    fields = [(rm.CC_DEVICE_FEATURE_SELECT, 4), (rm.CC_DRIVER_FEATURE_SELECT, 4),
              (rm.CC_MSIX_CONFIG, 2), (rm.CC_NUM_QUEUES, 2), (rm.CC_DEVICE_STATUS, 1),
              (rm.CC_CONFIG_GENERATION, 1), (rm.CC_QUEUE_SELECT, 2)]
    per_queue = [(rm.CC_QUEUE_SIZE, 2), (rm.CC_QUEUE_MSIX_VECTOR, 2), (rm.CC_QUEUE_ENABLE, 2),
                 (rm.CC_QUEUE_NOTIFY_OFF, 2)] + \
                [(o + k, 4) for o in (rm.CC_QUEUE_DESC, rm.CC_QUEUE_DRIVER, rm.CC_QUEUE_DEVICE)
                 for k in (0, 4)]
    return fields, per_queue


async def snapshot_common(drv, p):
    """Every common-configuration register, the per-queue ones for each queue, and the device
    and driver feature words for both selects. Leaves queue_select and the selects at 0."""
    fields, per_queue = _common_snapshot_plan(p)
    snap = {}
    cc = rm.VIRTIO_PCI_CAP_COMMON_CFG
    for off, size in fields:
        snap[off] = await drv.read(cc, off, size)
    for sel in (0, 1):
        await drv.common_write("device_feature_select", sel)
        snap[("device_feature", sel)] = await drv.common_read("device_feature")
        await drv.common_write("driver_feature_select", sel)
        snap[("driver_feature", sel)] = await drv.common_read("driver_feature")
    await drv.common_write("device_feature_select", 0)
    await drv.common_write("driver_feature_select", 0)
    for q in range(p.num_queues):
        await drv.common_write("queue_select", q)
        for off, size in per_queue:
            snap[(q, off)] = await drv.read(cc, off, size)
    await drv.common_write("queue_select", 0)
    return snap


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(stalls=[False, True])
async def headline(dut, stalls):
    """Enumerate, find the virtio structures like Linux, negotiate every offered feature, reach
    DRIVER_OK, and print a summary."""
    tb = TB(dut, stalls)
    p = tb.params
    pci = await tb.start()

    # [VIRTIO-1.2 4.1.2] Identity.
    assert (pci.vendor_id, pci.device_id) == (rm.VENDOR_ID, rm.DEVICE_ID), \
        f"found {pci.vendor_id:04x}:{pci.device_id:04x}"
    assert pci.class_code == rm.CLASS_CODE, f"class {pci.class_code:#08x}"
    assert pci.revision_id == p.revision_id
    assert (pci.subsystem_vendor_id, pci.subsystem_id) == (p.subsystem_vendor_id,
                                                           p.subsystem_id)
    assert pci.bar_addr[0] is not None and pci.bar_size[0] == p.bar0_size, \
        f"BAR0 at {pci.bar_addr[0]}, size {pci.bar_size[0]}"
    raw = await pci.config_read_dword(0x10)
    assert raw & 0x6 == (0x4 if p.bar0_64bit else 0x0), f"BAR0 type bits {raw:#x}"
    assert raw & ~0xf == pci.bar_addr[0] & 0xfffffff0

    drv = tb.driver()
    caps = await drv.find_capabilities()
    wanted_types = [rm.VIRTIO_PCI_CAP_COMMON_CFG, rm.VIRTIO_PCI_CAP_NOTIFY_CFG,
                    rm.VIRTIO_PCI_CAP_ISR_CFG, rm.VIRTIO_PCI_CAP_DEVICE_CFG,
                    rm.VIRTIO_PCI_CAP_PCI_CFG]
    assert sorted(caps) == sorted(wanted_types), f"found cfg_types {sorted(caps)}"

    # Each structure is where its capability says: read something known through it.
    cc = rm.VIRTIO_PCI_CAP_COMMON_CFG
    assert await drv.read(cc, rm.CC_NUM_QUEUES, 2) == p.num_queues
    blk = p.blk_config()
    assert await drv.read_device_config(0, 8) == p.capacity
    for off, size in ((0x08, 4), (0x0c, 4), (0x14, 4), (0x22, 2), (0x24, 4), (0x30, 4)):
        assert await drv.read_device_config(off, size) == \
            int.from_bytes(blk[off:off + size], "little"), f"virtio_blk_config+{off:#x}"
    assert await drv.read(rm.VIRTIO_PCI_CAP_ISR_CFG, 0, 1) == 0
    notify = caps[rm.VIRTIO_PCI_CAP_NOTIFY_CFG]
    assert notify.notify_off_multiplier == p.notify_off_multiplier
    assert notify.length >= p.notify_off_multiplier * (p.num_queues - 1) + 2
    # PCI_CFG: the window reaches the same BAR0 bytes as a memory read.
    via_window = await drv.pci_cfg_read(caps[cc].offset + rm.CC_NUM_QUEUES, 2)
    assert via_window == p.num_queues, f"PCI_CFG window read {via_window:#x}"
    via_window = await drv.pci_cfg_read(caps[rm.VIRTIO_PCI_CAP_DEVICE_CFG].offset, 4)
    assert via_window == p.capacity & 0xffffffff

    if p.msix:
        # Linux's pci_alloc_irq_vectors: config vector + one per queue.
        assert await pci.alloc_irq_vectors(p.num_queues + 1, p.num_queues + 1) == \
            p.num_queues + 1
    rings = [(0x1000_0000 + q * 0x10000, 0x1000_4000 + q * 0x10000, 0x1000_8000 + q * 0x10000)
             for q in range(p.num_queues)]
    status = await drv.init(p.offered_features, rings)
    want = rm.STATUS_ACKNOWLEDGE | rm.STATUS_DRIVER | rm.STATUS_FEATURES_OK | \
        rm.STATUS_DRIVER_OK
    assert status == want, f"device_status {status:#x}"
    for q in range(p.num_queues):
        await drv.common_write("queue_select", q)
        assert await drv.common_read("queue_enable") == 1
        assert await drv.common_read("queue_desc") == rings[q][0]
        assert await drv.common_read("queue_driver") == rings[q][1]
        assert await drv.common_read("queue_device") == rings[q][2]
        await drv.notify(q)
    assert drv.device_features == p.offered_features
    assert drv.driver_features == p.offered_features

    tb.log.info("==== virtio-blk endpoint: %s ====", tb.name)
    tb.log.info("function %s, vendor:device %04x:%04x, class %06x, revision %02x",
                pci.pcie_id, pci.vendor_id, pci.device_id, pci.class_code, pci.revision_id)
    tb.log.info("BAR0 %#x (%d KiB, %s)", pci.bar_addr[0], pci.bar_size[0] // 1024,
                "64-bit" if p.bar0_64bit else "32-bit")
    for t in wanted_types[:-1]:
        c = caps[t]
        tb.log.info("virtio cap type %d at config %#04x -> BAR%d+%#06x, %#x bytes", t,
                    c.cap_offset, c.bar, c.offset, c.length)
    tb.log.info("virtio cap type 5 at config %#04x: PCI_CFG access window",
                caps[rm.VIRTIO_PCI_CAP_PCI_CFG].cap_offset)
    tb.log.info("features offered  %#018x: %s", drv.device_features,
                rm.feature_names(drv.device_features))
    tb.log.info("features accepted %#018x: %s", drv.driver_features,
                rm.feature_names(drv.driver_features))
    tb.log.info("queues %d, sizes %s, MSI-X %s", len(drv.queues),
                [q["size"] for q in drv.queues], "on" if p.msix else "absent")
    tb.log.info("device_status %#04x (ACKNOWLEDGE DRIVER FEATURES_OK DRIVER_OK)", status)
    tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(stalls=[False, True])
async def negotiation(dut, stalls):
    """[VIRTIO-1.2 3.1.1, 2.2.2] FEATURES_OK only for an offered subset with VERSION_1; reset
    returns every register to its reset value."""
    tb = TB(dut, stalls)
    p = tb.params
    await tb.start()
    drv = tb.driver()
    await drv.find_capabilities()
    power_on = await snapshot_common(drv, p)

    version_1 = 1 << rm.VIRTIO_F_VERSION_1
    offered = p.offered_features
    blk_bits = [b for b in range(32) if offered >> b & 1]
    for trial in range(4):
        subset = version_1 | sum(1 << b for b in blk_bits if tb.rng.random() < 0.5)
        assert await drv.negotiate(("exact", subset)), \
            f"refused offered subset {rm.feature_names(subset)}"
        await drv.add_status(rm.STATUS_DRIVER_OK)
        assert await drv.status() == 0x0f
        # The device reports what was accepted, not what was offered.
        for sel in (0, 1):
            await drv.common_write("driver_feature_select", sel)
            assert await drv.common_read("driver_feature") == subset >> 32 * sel & 0xffffffff

    unoffered = [b for b in range(64) if not offered >> b & 1]
    for bit in (tb.rng.choice(unoffered), rm.VIRTIO_F_RING_PACKED):
        bad = version_1 | 1 << bit
        assert not await drv.negotiate(("exact", bad)), f"accepted unoffered bit {bit}"
        assert not await drv.status() & rm.STATUS_FEATURES_OK
        tb.log.info("device refused unoffered feature bit %d, as it must", bit)
    without_v1 = offered & ~version_1
    assert not await drv.negotiate(("exact", without_v1)), "accepted features without VERSION_1"
    assert not await drv.status() & rm.STATUS_FEATURES_OK
    tb.log.info("device refused a feature set without VERSION_1, as it must")

    # Dirty every register, then reset: all must read their reset values again.
    assert await drv.negotiate(offered)
    rings = [(0x2000_0000 + q * 0x1000, 0x3000_0000 + q * 0x1000, 0x4000_0000 + q * 0x1000)
             for q in range(p.num_queues)]
    await drv.setup_queues(rings, use_msix=False)
    await drv.add_status(rm.STATUS_DRIVER_OK)
    await drv.common_write("msix_config", 0)
    dirty = await snapshot_common(drv, p)
    assert dirty != power_on
    await drv.reset()
    after = await snapshot_common(drv, p)
    diffs = {k: (power_on[k], after[k]) for k in power_on if power_on[k] != after[k]}
    assert not diffs, f"registers not back at reset values: {diffs}"
    tb.finish()


@cocotb.test(timeout_time=200, timeout_unit="ms")
@cocotb.parametrize(stalls=[False, True])
async def random_access(dut, stalls):
    """Random configuration and BAR0 traffic: sizes 1/2/4/8, partial byte enables, reserved and
    read-only fields, offsets outside BAR0; the scoreboard compares every completion."""
    tb = TB(dut, stalls)
    p = tb.params
    n = int(os.environ.get("N_ACCESSES") or 2000)
    pci = await tb.start()
    drv = tb.driver()
    caps = await drv.find_capabilities()
    rng = tb.rng
    base = tb.bar0
    pci_cfg = caps[rm.VIRTIO_PCI_CAP_PCI_CFG].cap_offset
    pmcsr = rm.find_cap(p, "pm").offset + 4
    regs = rm.config_registers(p)
    live_cfg = [dw * 4 for dw, r in regs.items() if r.wmask | r.w1c and r.name not in
                ("bar0", "bar1")]
    structures = [(rm.COMMON_OFFSET, rm.COMMON_LENGTH + 8)] * 4 + \
                 [(rm.ISR_OFFSET, 8), (rm.DEVICE_OFFSET, rm.BLK_CONFIG_LENGTH + 4),
                  (rm.NOTIFY_OFFSET, p.notify_length + 4), (rm.MSIX_PBA_OFFSET, 8),
                  (p.bar0_size - 8, 8), (0x6000, 64)]
    if p.msix:
        structures.append((rm.MSIX_TABLE_OFFSET, 16 * p.msix_table_size + 4))
    cc = rm.COMMON_OFFSET

    # DRIVER_OK is never set here: with it, a doorbell would start the request engine on
    # whatever the random writes left in the queue registers, and this test compares the
    # register file alone (the data path has its own tests, in tb/cocotb_blk.py).
    def interesting_value(off, size):
        if off == cc + rm.CC_DEVICE_STATUS:
            return rng.choice([0, 1, 3, 0xb, 0xf, 0x4b, 0x80])
        if off in (cc + rm.CC_DRIVER_FEATURE_SELECT, cc + rm.CC_DEVICE_FEATURE_SELECT,
                   cc + rm.CC_QUEUE_SELECT):
            return rng.choice([0, 1, 1, 2, p.num_queues, rng.randrange(1 << 8 * size)])
        if off == cc + rm.CC_DRIVER_FEATURE:
            sel = tb.model.driver_feature_select
            word = p.offered_features >> 32 * sel & 0xffffffff if sel < 2 else 0
            return word & rng.randrange(1 << 32) | (1 << rng.randrange(32)
                                                    if rng.random() < 0.2 else 0)
        if off in (cc + rm.CC_MSIX_CONFIG, cc + rm.CC_QUEUE_MSIX_VECTOR):
            return rng.choice([0, 1, p.num_queues, 0xffff, rng.randrange(1 << 16)])
        return rng.choice([0, 1, 0xff, rng.randrange(1 << 8 * size)])

    counts = {"cfg_read": 0, "cfg_write": 0, "mem_read": 0, "mem_write": 0, "outside": 0}
    flr_byte = rm.find_cap(tb.params, "pcie").offset + 8 + 1   # Device Control, bits 15:8

    async def settle():
        # [VIRTIO-1.2 4.1.4.3.2] After a write of 0 to device_status a driver waits until it
        # reads 0 before touching the device again (until then the DUT may still be draining;
        # the model resets at once). So does this test.
        if not tb.scoreboard.resetting:
            return
        await tb.wait_cycles(100)
        if tb.model.memory_enabled and tb.model.power_state == 0:
            cpl = await tb.mem_read(base + cc + rm.CC_DEVICE_STATUS, 1)
            assert not tb.scoreboard.resetting, \
                f"device_status still not 0 100 cycles after a reset: {cpl!r}"
    offered = p.offered_features

    def random_features():
        bits = offered & rng.randrange(1 << 64)
        if rng.random() < 0.3:
            bits |= 1 << rng.randrange(64)                 # maybe an unoffered bit
        if rng.random() < 0.3:
            bits ^= 1 << rm.VIRTIO_F_VERSION_1             # maybe without VERSION_1
        return bits

    negotiations = 0
    for i in range(n):
        if rng.random() < 0.02 and tb.model.memory_enabled and tb.model.power_state == 0:
            # A whole driver negotiation, on top of the n single accesses: reset, status
            # bits, feature words, FEATURES_OK read back (the scoreboard checks each access).
            await drv.negotiate(("exact", random_features()))
            negotiations += 1
        size = rng.choice([1, 2, 4, 8])
        if rng.random() < 0.3:
            # Configuration space: header, capabilities, PCI_CFG window, extended space.
            off = rng.choice([rng.randrange(0x100), rng.randrange(0x1000), pci_cfg + 4,
                              pci_cfg + 8, pci_cfg + 12, pci_cfg + 16, pci_cfg + 16 +
                              rng.randrange(4)] + live_cfg)
            off = min(off, 0x1000 - size)
            if rng.random() < 0.5 or off < 0x18 and off + size > 0x10:
                await pci.config_read(off, size)
                counts["cfg_read"] += 1
            else:
                if off == pci_cfg + 4:
                    value = rng.choice([0, 0, 1])
                elif off == pci_cfg + 8:
                    s_off, s_len = rng.choice(structures)
                    value = s_off + rng.randrange(s_len)
                elif off == pci_cfg + 12:
                    value = rng.choice([1, 2, 4, 3, 0])
                elif off == 0x04:
                    value = rng.choice([0x6, 0x6, 0x406, 0x0, rng.randrange(1 << 16)])
                else:
                    value = rng.randrange(1 << 8 * size)
                if off >= pci_cfg + 16:
                    # The window may land on device_status in any byte lane.
                    value &= ~(rm.STATUS_DRIVER_OK * 0x01010101)
                if off <= flr_byte < off + size:
                    # Initiate FLR would clear BAR0 for the rest of the run: flr_in_flight
                    # (tb/cocotb_reset.py) covers it.
                    value &= ~(rm.DEVCTL_INITIATE_FLR >> 8 << 8 * (flr_byte - off))
                await pci.config_write(off, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
                counts["cfg_write"] += 1
                await settle()
            continue
        if not tb.model.memory_enabled and rng.random() < 0.8:
            await pci.config_write_word(0x04, rm.CMD_MEMORY_SPACE | rm.CMD_BUS_MASTER)
        if tb.model.power_state == 3 and rng.random() < 0.8:
            await pci.config_write_byte(pmcsr, 0)          # back to D0
        s_off, s_len = rng.choice(structures)
        off = s_off + rng.randrange(s_len)
        if rng.random() < 0.5:
            off &= ~(size - 1)            # naturally aligned, as drivers do
        # [PCIe-3.0 2.2.7] A request must not cross a 4 KB boundary (the RootComplex refuses).
        off = min(off, (off | 0xfff) + 1 - size)
        addr = base + off
        outside = rng.random() < 0.03
        if outside:
            # Just past the end of BAR0, just below it, far above it. (Straddling its end would
            # cross a 4 KB boundary: a malformed TLP, for a later issue.)
            addr = rng.choice([base + p.bar0_size, base - 8, base + 0x10 * p.bar0_size])
            counts["outside"] += 1
        if rng.random() < 0.55:
            await tb.mem_read(addr, size, inject=outside)
            counts["mem_read"] += 1
        else:
            value = interesting_value(off, size)
            status_lane = cc + rm.CC_DEVICE_STATUS - off
            if 0 <= status_lane < size:
                value &= ~(rm.STATUS_DRIVER_OK << 8 * status_lane)
            await tb.mem_write(addr, (value & ((1 << 8 * size) - 1)).to_bytes(size, "little"),
                               inject=outside)
            counts["mem_write"] += 1
        await settle()
    # Everything the model holds must read back the same at the end.
    for off in range(0, 0x100, 4):
        await pci.config_read_dword(off)
    if tb.model.memory_enabled and tb.model.power_state == 0:
        for s_off, s_len in structures:
            for off in range(s_off, s_off + s_len - 3, 4):
                await tb.mem_read(base + off, 4)
    tb.log.info("random accesses: %s, and %d negotiations", counts, negotiations)
    assert all(counts[k] > n // 20 for k in ("cfg_read", "cfg_write", "mem_read", "mem_write")), \
        f"the random mix is lopsided: {counts}"
    tb.finish()


@cocotb.test(timeout_time=TIMEOUT_MS, timeout_unit="ms")
@cocotb.parametrize(stalls=[False, True])
async def unsupported_requests(dut, stalls):
    """[PCIe-3.0 2.3.1] UR for what the function does not support; CA for BAR0 accesses wider
    than a field; nothing decoded with Memory Space Enable clear."""
    tb = TB(dut, stalls)
    p = tb.params
    pci = await tb.start()
    bus = pci.pcie_id.bus
    devsta_off = rm.find_cap(p, "pcie").offset + 0x0a
    rid = PcieId(0, 0, 0)

    async def urd_set_and_clear():
        sta = await pci.config_read_word(devsta_off)
        await pci.config_write_word(devsta_off, rm.DEVSTA_URD)
        return bool(sta & rm.DEVSTA_URD)

    assert not await urd_set_and_clear()
    drv = tb.driver()
    await drv.find_capabilities()

    async def state():
        """Configuration space and every virtio register, to show nothing changed."""
        cfg = [await pci.config_read_dword(off) for off in range(0, 0x100, 4)]
        return cfg, await snapshot_common(drv, p)

    before = await state()

    def req(fmt_type, tag, **kw):
        t = Tlp()
        t.fmt_type = fmt_type
        t.requester_id = rid
        t.tag = tag
        for k, v in kw.items():
            setattr(t, k, v)
        return t

    # I/O requests: no I/O BAR.
    r = req(TlpType.IO_READ, 1)
    r.set_addr_be(0x1000, 4)
    cpl = await tb.inject(r)
    assert cpl.status == CplStatus.UR and cpl.fmt_type == TlpType.CPL
    assert await urd_set_and_clear()
    tb.log.info("I/O Read -> UR, as required")
    r = req(TlpType.IO_WRITE, 2)
    r.set_addr_be_data(0x1000, b"\x01\x02\x03\x04")
    assert (await tb.inject(r)).status == CplStatus.UR

    # Configuration Type 1 reaching an endpoint.
    r = req(TlpType.CFG_READ_1, 3, completer_id=PcieId(bus, 0, 0))
    r.set_addr_be(0, 4)
    assert (await tb.inject(r)).status == CplStatus.UR
    tb.log.info("Configuration Type 1 -> UR, as required")
    # Function 1 of a single-function device, through the RootComplex.
    vid = await tb.rc.config_read_dword(PcieId(bus, 0, 1), 0)
    assert vid == 0xffffffff, f"function 1 answered {vid:#x}"
    assert await urd_set_and_clear()

    # Locked read: UR in a locked completion [PCIe-3.0 2.3.1].
    r = req(TlpType.MEM_READ_LOCKED_64 if tb.bar0 >> 32 else TlpType.MEM_READ_LOCKED, 4)
    r.set_addr_be(tb.bar0, 4)
    cpl = await tb.inject(r)
    assert (cpl.status, cpl.fmt_type) == (CplStatus.UR, TlpType.CPL_LOCKED)

    # A completion the function never asked for is discarded [PCIe-3.0 2.3.2].
    r = req(TlpType.CPL_DATA, 5, completer_id=rid, requester_id=PcieId(bus, 0, 0))
    r.byte_count, r.length, r.data = 4, 1, bytearray(4)
    sent = tb.shim.tx_count
    assert await tb.inject(r) is None
    await tb.settle()
    assert tb.shim.tx_count == sent, "the function answered an Unexpected Completion"

    # Wider than a field: CA and Signaled Target Abort.
    cpl = await tb.mem_read(tb.bar0, 12)
    assert cpl.status == CplStatus.CA
    sts = await pci.config_read_word(0x06)
    assert sts & rm.STS_SIGNALED_TARGET_ABORT
    await pci.config_write_word(0x06, rm.STS_SIGNALED_TARGET_ABORT)
    assert not await pci.config_read_word(0x06) & rm.STS_SIGNALED_TARGET_ABORT
    tb.log.info("12-byte BAR0 read -> CA and Signaled Target Abort, as documented")

    # A poisoned configuration write is UR and changes nothing [PCIe-3.0 2.7.2.2].
    r = req(TlpType.CFG_WRITE_0, 6, completer_id=PcieId(bus, 0, 0), ep=True)
    r.set_addr_be_data(0x3c, b"\x5a")
    assert (await tb.inject(r)).status == CplStatus.UR
    assert await pci.config_read_byte(0x3c) == 0
    # A poisoned memory write does not land either.
    await tb.mem_write(tb.bar0 + rm.CC_QUEUE_SELECT, b"\x01\x00", poisoned=True)
    assert await drv.common_read("queue_select") == 0
    # [PCIe-3.0 7.5.1.2] Both were logged in Status.Detected Parity Error (RW1C).
    assert await pci.config_read_word(0x06) & rm.STS_DETECTED_PARITY_ERROR
    await pci.config_write_word(0x06, rm.STS_DETECTED_PARITY_ERROR)

    # Memory Space Enable clear: BAR0 is not decoded.
    await pci.config_write_word(0x04, rm.CMD_BUS_MASTER)
    cpl = await tb.mem_read(tb.bar0, 4)
    assert cpl.status == CplStatus.UR
    assert await urd_set_and_clear()
    await tb.mem_write(tb.bar0 + rm.CC_QUEUE_SELECT, b"\x01\x00")
    await tb.mem_write(tb.bar0 + rm.CC_DEVICE_STATUS, b"\x01")
    assert await urd_set_and_clear()          # [PCIe-3.0 2.3.1] posted UR: no completion
    await pci.config_write_word(0x04, rm.CMD_MEMORY_SPACE | rm.CMD_BUS_MASTER)
    assert (await tb.mem_read(tb.bar0 + rm.CC_NUM_QUEUES, 2)).status == CplStatus.SC
    tb.log.info("Memory Space Enable clear -> UR, as required")

    # None of it changed any state.
    after = await state()
    assert after == before, "unsupported requests changed the device's state"
    tb.finish()
