"""Amaranth-simulator tests of the BAR0 register file on its own: what the whole-endpoint tests
cannot see from the link (the notify stream, interrupts raised from inside), against the model.
"""

import pytest
from amaranth.sim import Simulator

from model import regmap as rm
from model.device import VirtioBlkModel
from model.params import DeviceParams
from rtl.virtio_regs import VirtioRegisters


def run(params, bench):
    dut = VirtioRegisters(params)
    model = VirtioBlkModel(params)
    sim = Simulator(dut)
    sim.add_clock(4e-9)

    async def testbench(ctx):
        await bench(ctx, dut, model)
    sim.add_testbench(testbench)
    sim.run()


async def write(ctx, dut, model, offset, value, be):
    model.bar_write_dw(offset // 4, value, be)
    ctx.set(dut.bus.addr, offset // 4)
    ctx.set(dut.bus.be, be)
    ctx.set(dut.bus.w_data, value)
    ctx.set(dut.bus.w_stb, 1)
    await ctx.tick()
    ctx.set(dut.bus.w_stb, 0)


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
    p = DeviceParams(num_queues=4, notify_off_multiplier=multiplier)

    async def bench(ctx, dut, model):
        ctx.set(dut.notify.ready, 1)
        for q in range(p.num_queues):
            addr = rm.NOTIFY_OFFSET + q * multiplier
            lane = addr & 3
            await write(ctx, dut, model, addr & ~3, q << 8 * lane, 0b11 << lane)
            assert ctx.get(dut.notify.valid), f"queue {q}: no notification"
            assert ctx.get(dut.notify.payload) == q, \
                f"queue {q}: notified {ctx.get(dut.notify.payload)}"
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
        assert ctx.get(dut.isr) == 0
        assert await read(ctx, dut, model, rm.ISR_OFFSET) == 0
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
            assert ctx.get(dut.notify.payload) == 2, "the waiting payload changed"
        taken = []
        ctx.set(dut.notify.ready, 1)
        for _ in range(6):
            if ctx.get(dut.notify.valid):
                taken.append(ctx.get(dut.notify.payload))   # transferred at this edge
            await ctx.tick()
        # Queue 2 was waiting first; then the rest of the bitmap, lowest first; 7 is no queue.
        assert taken == [2, 0, 1], taken
        assert model.notifications == [2, 0, 2, 1]
    run(p, bench)
