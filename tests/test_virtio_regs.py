"""Amaranth-simulator tests of the BAR0 register file on its own: what the whole-endpoint tests
cannot see from the link (the notify stream, interrupts raised from inside), against the model.
"""

import pytest
from amaranth.sim import Simulator

from model import regmap as rm
from model.device import VirtioBlkModel
from model.params import DeviceParams, DEFAULT_FEATURES
from rtl.virtio_regs import VirtioRegisters


def run(params, bench):
    dut = VirtioRegisters(params)
    model = VirtioBlkModel(params)
    sim = Simulator(dut)
    sim.add_clock(4e-9)

    async def testbench(ctx):
        ctx.set(dut.reset_ack, 1)       # a quiescent data path, unless a test says otherwise
        await bench(ctx, dut, model)
    sim.add_testbench(testbench)
    sim.run()


async def raw_write(ctx, dut, offset, value, be):
    """A BAR0 write of the DUT alone (the model does not see it)."""
    ctx.set(dut.bus.addr, offset // 4)
    ctx.set(dut.bus.be, be)
    ctx.set(dut.bus.w_data, value)
    ctx.set(dut.bus.w_stb, 1)
    await ctx.tick()
    ctx.set(dut.bus.w_stb, 0)


async def write(ctx, dut, model, offset, value, be):
    model.bar_write_dw(offset // 4, value, be)
    await raw_write(ctx, dut, offset, value, be)


async def read(ctx, dut, model, offset, be=0xf):
    want = model.bar_read_dw(offset // 4, be)
    ctx.set(dut.bus.addr, offset // 4)
    ctx.set(dut.bus.be, be)
    ctx.set(dut.bus.r_stb, 1)
    await ctx.tick()
    ctx.set(dut.bus.r_stb, 0)
    got = ctx.get(dut.bus.r_data)
    mask = sum(0xff << 8 * k for k in range(4) if be >> k & 1)
    assert got & mask == want & mask, f"BAR0+{offset:#x}: {got:#x}, model {want:#x}"
    return got


@pytest.mark.parametrize("multiplier", [0, 2, 4, 8])
def test_notify_carries_the_queue_index(multiplier):
    """[VIRTIO-1.2 4.1.4.4, 4.1.5.2] The 16-bit queue index written at each queue's notify
    address comes out of the notify stream, whichever byte lanes that address uses."""
    # A multiplier of 2 cannot go with NOTIFICATION_DATA [VIRTIO-1.2 4.1.4.4].
    p = DeviceParams(num_queues=4, notify_off_multiplier=multiplier,
                     features=DEFAULT_FEATURES & ~(1 << rm.VIRTIO_F_NOTIFICATION_DATA))

    async def bench(ctx, dut, model):
        ctx.set(dut.notify.ready, 1)
        for q in range(p.num_queues):
            addr = rm.NOTIFY_OFFSET + q * multiplier
            lane = addr & 3
            await write(ctx, dut, model, addr & ~3, q << 8 * lane, 0b11 << lane)
            assert ctx.get(dut.notify.valid), f"queue {q}: no notification"
            assert ctx.get(dut.notify.payload).queue == q, \
                f"queue {q}: notified {ctx.get(dut.notify.payload).queue}"
            assert not ctx.get(dut.notify.payload).has_idx
            await ctx.tick()
            assert not ctx.get(dut.notify.valid)
        assert model.notifications == list(range(p.num_queues))
    run(p, bench)


def test_isr_is_set_from_inside_and_cleared_by_reading():
    """[VIRTIO-1.2 4.1.4.5] ISR bits set by the device; a read of the ISR byte clears it."""
    p = DeviceParams()

    async def bench(ctx, dut, model):
        assert await read(ctx, dut, model, rm.ISR_OFFSET) == 0
        ctx.set(dut.isr_set, 0b01)
        await ctx.tick()
        ctx.set(dut.isr_set, 0)
        model.isr |= 0b01
        assert ctx.get(dut.isr) == 0b01
        # A read without byte 0 enabled has no side effect.
        await read(ctx, dut, model, rm.ISR_OFFSET, be=0x2)
        assert ctx.get(dut.isr) == 0b01
        assert await read(ctx, dut, model, rm.ISR_OFFSET) == 0b01
        assert ctx.get(dut.isr) == 0
        assert await read(ctx, dut, model, rm.ISR_OFFSET) == 0
        # Both kinds, then a device reset clears them too.
        ctx.set(dut.isr_set, 0b11)
        await ctx.tick()
        ctx.set(dut.isr_set, 0)
        model.isr |= 0b11
        await write(ctx, dut, model, rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS & ~3, 0, 0x1)
        await ctx.tick()            # the reset finishes in the cycle after (data path idle)
        assert ctx.get(dut.isr) == 0
        assert await read(ctx, dut, model, rm.ISR_OFFSET) == 0
    run(p, bench)


async def raw_read(ctx, dut, offset):
    ctx.set(dut.bus.addr, offset // 4)
    ctx.set(dut.bus.be, 0xf)
    ctx.set(dut.bus.r_stb, 1)
    await ctx.tick()
    ctx.set(dut.bus.r_stb, 0)
    return ctx.get(dut.bus.r_data)


@pytest.mark.parametrize("how", ["device_status", "flr"])
def test_reset_waits_for_the_data_path(how):
    """[VIRTIO-1.2 4.1.4.3.2] After a write of 0 to device_status (or an FLR) the reset
    finishes only once the data path reports it has drained: until then device_status reads
    what it held, a new status is ignored and the queue registers stay; then all of it is at
    reset at once. An FLR masks the MSI-X table and clears the ISR at once."""
    p = DeviceParams()
    status_dw = rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS & ~3
    desc_dw = rm.COMMON_OFFSET + rm.CC_QUEUE_DESC

    async def bench(ctx, dut, model):
        ctx.set(dut.reset_ack, 0)
        await write(ctx, dut, model, status_dw, 0x3, 0x1)
        await write(ctx, dut, model, desc_dw, 0x12340, 0xf)
        await write(ctx, dut, model, rm.MSIX_TABLE_OFFSET + 12, 0, 0xf)     # unmask vector 0
        ctx.set(dut.isr_set, 0b01)
        await ctx.tick()
        ctx.set(dut.isr_set, 0)
        assert not ctx.get(dut.reset_req)
        if how == "flr":
            ctx.set(dut.flr, 1)
            await ctx.tick()
            ctx.set(dut.flr, 0)
            assert ctx.get(dut.msix_table[0].masked) == 1 and ctx.get(dut.isr) == 0
        else:
            await raw_write(ctx, dut, status_dw, 0, 0x1)
        for _ in range(20):
            assert ctx.get(dut.reset_req)
            assert await raw_read(ctx, dut, status_dw) & 0xff == 0x3
            assert await raw_read(ctx, dut, desc_dw) == 0x12340
        # A status written before the reset has finished is ignored.
        await raw_write(ctx, dut, status_dw, 0x1, 0x1)
        assert await raw_read(ctx, dut, status_dw) & 0xff == 0x3
        ctx.set(dut.reset_ack, 1)
        await ctx.tick()
        assert not ctx.get(dut.reset_req)
        assert await raw_read(ctx, dut, status_dw) == 0
        assert await raw_read(ctx, dut, desc_dw) == 0
        # The queue_size register is back at its maximum: the reset took everything.
        assert await raw_read(ctx, dut, rm.COMMON_OFFSET + rm.CC_QUEUE_SIZE) & 0xffff == \
            p.max_queue_size
    run(p, bench)


def test_notify_waits_while_stalled_and_merges_repeats():
    """Doorbells that arrive while the queue engine is busy wait, one per queue, and the
    waiting payload never changes under the consumer; an index past num_queues is dropped."""
    p = DeviceParams(num_queues=4)

    async def bench(ctx, dut, model):
        ctx.set(dut.notify.ready, 0)
        for q in (2, 0, 2, 7, 1):
            await write(ctx, dut, model, rm.NOTIFY_OFFSET + q * p.notify_off_multiplier, q, 0x3)
            assert ctx.get(dut.notify.valid)
            assert ctx.get(dut.notify.payload).queue == 2, "the waiting payload changed"
        taken = []
        ctx.set(dut.notify.ready, 1)
        for _ in range(6):
            if ctx.get(dut.notify.valid):
                taken.append(ctx.get(dut.notify.payload).queue)   # transferred at this edge
            await ctx.tick()
        # Queue 2 was waiting first; then the rest of the bitmap, lowest first; 7 is no queue.
        assert taken == [2, 0, 1], taken
        assert model.notifications == [2, 0, 2, 1]
    run(p, bench)


def test_msix_table_and_config_are_exported():
    """The MSI-X table entries and ``msix_config`` written through BAR0 come out on
    ``msix_table`` and ``msix_config`` for the interrupt logic, as the model holds them; every
    Mask Bit starts set [PCIe-3.0 7.7.2]."""
    p = DeviceParams()
    nv = p.msix_table_size

    def check(ctx, dut, model):
        for v in range(nv):
            e, want = dut.msix_table[v], model.msix_table[v]
            got = (ctx.get(e.addr), ctx.get(e.data), ctx.get(e.masked))
            assert got == (want.addr, want.data, want.ctrl & 1), \
                f"entry {v}: {got}, model {(want.addr, want.data, want.ctrl)}"
        assert ctx.get(dut.msix_config) == model.msix_config

    async def bench(ctx, dut, model):
        check(ctx, dut, model)
        assert all(ctx.get(dut.msix_table[v].masked) for v in range(nv))
        assert ctx.get(dut.msix_config) == rm.VIRTIO_MSI_NO_VECTOR
        for v in range(nv):
            base = rm.MSIX_TABLE_OFFSET + 16 * v
            await write(ctx, dut, model, base + 0, 0xfee0_1003 + 0x100 * v, 0xf)
            await write(ctx, dut, model, base + 4, 0x10 * v, 0xf)
            await write(ctx, dut, model, base + 8, 0xabcd_0000 | v, 0xf)
            check(ctx, dut, model)
        await write(ctx, dut, model, rm.MSIX_TABLE_OFFSET + 16 * 1 + 12, 0, 0xf)
        check(ctx, dut, model)
        assert not ctx.get(dut.msix_table[1].masked)
        # Byte 1 of the data only.
        await write(ctx, dut, model, rm.MSIX_TABLE_OFFSET + 16 * 2 + 8, 0x5500, 0x2)
        check(ctx, dut, model)
        # msix_config: a table entry sticks, anything else reads NO_VECTOR.
        cc = rm.COMMON_OFFSET + rm.CC_MSIX_CONFIG
        await write(ctx, dut, model, cc, nv - 1, 0x3)
        assert ctx.get(dut.msix_config) == nv - 1
        check(ctx, dut, model)
        await write(ctx, dut, model, cc, nv, 0x3)
        assert ctx.get(dut.msix_config) == rm.VIRTIO_MSI_NO_VECTOR
        await write(ctx, dut, model, cc, 0, 0x3)
        assert ctx.get(dut.msix_config) == 0
        # A device reset unmaps it [VIRTIO-1.2 4.1.5.1.2]; the table is the function's, and
        # stays.
        await write(ctx, dut, model, rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS, 0, 0x1)
        await ctx.tick()            # the reset finishes in the cycle after (data path idle)
        assert ctx.get(dut.msix_config) == rm.VIRTIO_MSI_NO_VECTOR
        check(ctx, dut, model)
    run(p, bench)


@pytest.mark.parametrize("num_queues", [2, 16])
def test_pba_reads_the_pending_bits(num_queues):
    """[PCIe-3.0 7.7.2] The PBA at 0x5000 reads ``msix_pending``, bit v for vector v, in the
    first DW; the second DW of the QW reads 0 (at most 17 vectors)."""
    p = DeviceParams(num_queues=num_queues)
    nv = p.msix_table_size

    async def bench(ctx, dut, model):
        assert await read(ctx, dut, model, rm.MSIX_PBA_OFFSET) == 0
        for bits in (0b1, 1 << nv - 1, 0b101 & ((1 << nv) - 1), (1 << nv) - 1, 0):
            ctx.set(dut.msix_pending, bits)
            model.msix_pba = bits
            assert await read(ctx, dut, model, rm.MSIX_PBA_OFFSET) == bits
            assert await read(ctx, dut, model, rm.MSIX_PBA_OFFSET + 4) == 0
            # Byte-wise reads see the same bits.
            await read(ctx, dut, model, rm.MSIX_PBA_OFFSET, be=0x4)
    run(p, bench)


def test_no_msix_build_has_no_msix_ports():
    """Without MSI-X there is no table or PBA to export; ``msix_config`` stays NO_VECTOR
    whatever is written [VIRTIO-1.2 4.1.5.1.2]."""
    p = DeviceParams(msix=False)

    async def bench(ctx, dut, model):
        assert not hasattr(dut, "msix_table")
        assert not hasattr(dut, "msix_pending")
        await write(ctx, dut, model, rm.COMMON_OFFSET + rm.CC_MSIX_CONFIG, 0, 0x3)
        assert ctx.get(dut.msix_config) == rm.VIRTIO_MSI_NO_VECTOR
        await read(ctx, dut, model, rm.COMMON_OFFSET + rm.CC_MSIX_CONFIG)
        await read(ctx, dut, model, rm.MSIX_PBA_OFFSET)
    run(p, bench)


@pytest.mark.parametrize("features", [
    rm.VIRTIO_BLK_F_FLUSH, rm.VIRTIO_BLK_F_CONFIG_WCE, None, "both"])
def test_writeback_field_and_port(features):
    """[VIRTIO-1.2 5.2.5] The cache mode: the ``writeback`` byte of struct virtio_blk_config
    and the ``writeback`` port agree with the model through negotiation, driver writes (0, 1,
    other values, other lanes) and a device reset; it counts only with FEATURES_OK."""
    p = DeviceParams()
    bits = 1 << rm.VIRTIO_F_VERSION_1
    if features == "both":
        bits |= 1 << rm.VIRTIO_BLK_F_FLUSH | 1 << rm.VIRTIO_BLK_F_CONFIG_WCE
    elif features is not None:
        bits |= 1 << features
    status_dw = rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS & ~3
    field = rm.DEVICE_OFFSET + rm.BLK_CFG_WRITEBACK

    async def bench(ctx, dut, model):
        def check():
            assert ctx.get(dut.writeback) == model.writeback, \
                f"port {ctx.get(dut.writeback)}, model {model.writeback}"

        async def negotiate():
            await write(ctx, dut, model, status_dw, 0x3, 0x1)
            for sel in (0, 1):
                await write(ctx, dut, model, rm.CC_DRIVER_FEATURE_SELECT, sel, 0xf)
                await write(ctx, dut, model, rm.CC_DRIVER_FEATURE, bits >> 32 * sel & 0xffffffff,
                            0xf)
                check()
                await read(ctx, dut, model, field)
            await write(ctx, dut, model, status_dw, 0xb, 0x1)
            check()
            await read(ctx, dut, model, field)

        await negotiate()
        for value, be in ((0, 0x1), (1, 0x1), (2, 0x1), (0x100, 0x2), (0xffff_ff00, 0xf),
                          (0, 0xe), (0x80, 0x1), (1, 0xf), (0, 0xf)):
            await write(ctx, dut, model, field, value, be)
            check()
            await read(ctx, dut, model, field)
            await read(ctx, dut, model, field, be=0x1)
        # [VIRTIO-1.2 4.1.4.3.1] A device reset brings the mode back to its reset value.
        await write(ctx, dut, model, status_dw, 0, 0x1)
        await ctx.tick()            # the reset finishes in the cycle after (data path idle)
        check()
        await negotiate()
        await read(ctx, dut, model, field)
        check()
    run(p, bench)


# -- VIRTIO_F_NOTIFICATION_DATA [VIRTIO-1.2 2.9] ----------------------------------------------

ND = 1 << rm.VIRTIO_F_NOTIFICATION_DATA


async def negotiate(ctx, dut, model, bits):
    """ACKNOWLEDGE | DRIVER, the driver's features ``bits``, FEATURES_OK."""
    status_dw = rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS & ~3
    await write(ctx, dut, model, status_dw, 0x3, 0x1)
    for sel in (0, 1):
        await write(ctx, dut, model, rm.CC_DRIVER_FEATURE_SELECT, sel, 0xf)
        await write(ctx, dut, model, rm.CC_DRIVER_FEATURE, bits >> 32 * sel & 0xffffffff, 0xf)
    await write(ctx, dut, model, status_dw, 0xb, 0x1)


def taken_doorbell(ctx, dut):
    """The notify stream's payload as ``(queue, avail_idx or None)``."""
    d = ctx.get(dut.notify.payload)
    return d.queue, d.avail_idx if d.has_idx else None


@pytest.mark.parametrize("be, negotiated, has_idx", [
    (0xf, True, True), (0x3, True, False), (0x1, True, False), (0xf, False, False)])
def test_notify_avail_index_only_from_32_bit_writes_with_the_feature(be, negotiated, has_idx):
    """[VIRTIO-1.2 2.9, 4.1.5.2] The avail index in bits 31:16 of the notification comes out
    with the queue index only for a 4-byte write with NOTIFICATION_DATA negotiated; a narrower
    write, or one without the feature, decodes the queue alone. The model agrees."""
    p = DeviceParams(num_queues=4)

    async def bench(ctx, dut, model):
        ctx.set(dut.notify.ready, 1)
        await negotiate(ctx, dut, model, 1 << rm.VIRTIO_F_VERSION_1 | (ND if negotiated else 0))
        for q in range(p.num_queues):
            await write(ctx, dut, model, rm.NOTIFY_OFFSET + q * p.notify_off_multiplier,
                        (0xa230 + q) << 16 | q, be)
            assert ctx.get(dut.notify.valid), f"queue {q}: no notification"
            want = (q, 0xa230 + q if has_idx else None)
            assert taken_doorbell(ctx, dut) == want, taken_doorbell(ctx, dut)
            await ctx.tick()
        assert model.doorbells == [(q, 0xa230 + q if has_idx else None)
                                   for q in range(p.num_queues)]
    run(p, bench)


def test_notify_with_data_for_no_queue_is_dropped():
    p = DeviceParams(num_queues=4)

    async def bench(ctx, dut, model):
        ctx.set(dut.notify.ready, 1)
        await negotiate(ctx, dut, model, 1 << rm.VIRTIO_F_VERSION_1 | ND)
        for q in (4, 7, 0x7fff, 0xffff):
            await write(ctx, dut, model, rm.NOTIFY_OFFSET, 0x55 << 16 | q, 0xf)
            assert not ctx.get(dut.notify.valid), f"queue index {q:#x} notified"
            await ctx.tick()
            assert not ctx.get(dut.notify.valid), f"queue index {q:#x} notified"
        assert model.doorbells == []
    run(p, bench)


def test_notify_merges_keep_the_avail_index_only_if_they_agree():
    """Doorbells for a queue already pending merge; the avail index stays only when every
    merged one carried the same. One equal to the waiting payload merges with it; a different
    one waits behind it."""
    p = DeviceParams(num_queues=4)

    async def bench(ctx, dut, model):
        await negotiate(ctx, dut, model, 1 << rm.VIRTIO_F_VERSION_1 | ND)
        ctx.set(dut.notify.ready, 0)

        async def ring(q, idx, be=0xf):
            await write(ctx, dut, model, rm.NOTIFY_OFFSET + q * p.notify_off_multiplier,
                        idx << 16 | q, be)
            assert ctx.get(dut.notify.valid)
            assert taken_doorbell(ctx, dut) == (2, 5), "the waiting payload changed"

        await ring(2, 5)
        await ring(2, 5)            # the same as the waiting one: merged into it
        await ring(0, 9)
        await ring(0, 9)            # agree: the index stays
        await ring(1, 3)
        await ring(1, 4)            # disagree: no index
        await ring(3, 1)
        await ring(3, 1, be=0x3)    # one without an index: no index
        await ring(2, 6)            # differs from the waiting one: waits behind it
        taken = []
        ctx.set(dut.notify.ready, 1)
        for _ in range(7):
            if ctx.get(dut.notify.valid):
                taken.append(taken_doorbell(ctx, dut))     # transferred at this edge
            await ctx.tick()
        assert taken == [(2, 5), (0, 9), (1, None), (2, 6), (3, None)], taken
    run(p, bench)
