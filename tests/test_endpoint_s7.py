# Ref: Xilinx PG054 (7 Series FPGAs Integrated Block for PCI Express); PCIe Base 3.0 2.2.6.2, 7.5.1.1
"""Amaranth-simulator tests of the endpoint behind the 7-series hard block (``hard_ip="s7"``):
its configuration window, and the block's ``cfg_*`` outputs in place of its own registers.

The cocotb tests run the same build through a model of the hard block (``make board-sim``);
these check the function's side alone, against the golden model with the same host state.
"""

import pytest
from amaranth.sim import Simulator

from model.params import DeviceParams, VARIANTS
from model.device import VirtioBlkModel, SC
from model import regmap as rm
from rtl.top import VirtioBlkEndpoint, VirtioBlkS7Endpoint
from .test_endpoint_sim import Harness, BAR0
from .sim_helpers import mem_req


P = VARIANTS["virtio_blk_ep_s7"]


class BlockHarness(Harness):
    """:class:`Harness` with the block's side of ``cfg_err_*``: ``cfg_err_cpl_rdy`` high, and a
    non-posted ``cfg_err_ur``/``cfg_err_cpl_abort`` pulse taken for the completion the block
    sends from ``cfg_err_tlp_cpl_header`` [PG054], so that the function's errors are checked
    against the model as its own completions are. ``reports`` lists every pulse."""
    def __init__(self, ctx, dut, model):
        super().__init__(ctx, dut, model)
        self.reports = []
        ctx.set(dut.err.cfg_err_cpl_rdy, 1)

    async def completion(self, tag):
        ctx, err = self.ctx, self.dut.err
        while not ctx.get(self.dut.tx.valid):
            ur, ca = ctx.get(err.cfg_err_ur), ctx.get(err.cfg_err_cpl_abort)
            if (ur or ca) and not ctx.get(err.cfg_err_posted):
                hdr = ctx.get(err.cfg_err_tlp_cpl_header)
                self.reports.append(("ur" if ur else "ca", "non-posted"))
                assert ur != ca, "cfg_err_ur and cfg_err_cpl_abort at once"
                await ctx.tick()
                assert hdr.tag == tag, f"cfg_err_tlp_cpl_header tag {hdr.tag} for {tag}"
                return {"fmt": 0, "type": 0b01011 if ctx.get(err.cfg_err_locked) else 0b01010,
                        "length": 0, "completer_id": self.model.completer_id,
                        "status": 1 if ur else 4, "byte_count": int(hdr.byte_count),
                        "requester_id": int(hdr.requester_id), "tag": int(hdr.tag),
                        "lower_address": int(hdr.lower_address), "data": []}
            await ctx.tick()
        return await super().completion(tag)


def run(bench):
    dut = VirtioBlkEndpoint(P)
    model = VirtioBlkModel(P)
    sim = Simulator(dut)
    sim.add_clock(4e-9)

    async def testbench(ctx):
        h = BlockHarness(ctx, dut, model)

        def host(**fields):
            """Set the block's cfg_* outputs, and the model's view of them."""
            for name, value in fields.items():
                ctx.set(getattr(dut.host, name), value)
            hc = model.host
            hc.command = ctx.get(dut.host.cfg_command)
            hc.devctl = ctx.get(dut.host.cfg_dcommand)
            hc.bus = ctx.get(dut.host.cfg_bus_number)
            hc.device = ctx.get(dut.host.cfg_device_number)
            hc.function = ctx.get(dut.host.cfg_function_number)
            hc.power_state = ctx.get(dut.host.cfg_pmcsr_powerstate)
            hc.msix_enable = bool(ctx.get(dut.host.cfg_interrupt_msixenable))
            hc.bar0_base = BAR0
        h.host = host
        host(cfg_dcommand=0x2810)
        await bench(h, model, ctx, dut)
    sim.add_testbench(testbench)
    sim.run()


def test_window_holds_the_virtio_capabilities():
    """[PG054] The first virtio capability is at EXT_CFG_CAP_PTR (0xA8), the list runs through
    the five of them to the window's end, and the rest of configuration space reads 0 (the
    block never forwards it; if it did, nothing there is the function's)."""
    async def bench(h, model, ctx, dut):
        ptr, seen = rm.S7_WINDOW[0], []
        while ptr:
            hdr = await h.cfg_read(ptr // 4)
            assert hdr & 0xff == rm.PCI_CAP_ID_VNDR, f"cap at {ptr:#x}: {hdr:#010x}"
            seen.append(hdr >> 24)
            ptr = hdr >> 8 & 0xfc
            assert ptr == 0 or rm.S7_WINDOW[0] < ptr < rm.S7_WINDOW[1]
        assert seen == [rm.VIRTIO_PCI_CAP_COMMON_CFG, rm.VIRTIO_PCI_CAP_NOTIFY_CFG,
                        rm.VIRTIO_PCI_CAP_ISR_CFG, rm.VIRTIO_PCI_CAP_DEVICE_CFG,
                        rm.VIRTIO_PCI_CAP_PCI_CFG]
        last = rm.capability_layout(P)[-1]
        assert last.offset + last.length == rm.S7_WINDOW[1]
        # The header and the block's own capabilities are not the function's: 0, and writes
        # (even of Command or a BAR) change nothing.
        for dw in (0, 1, 4, 0x10, 0x18, 0x27, 0x29, 0x40, 0x3ff):
            await h.cfg_write(dw, 0xffffffff)
            assert await h.cfg_read(dw) == 0
        assert await h.mem_read(BAR0, 1, 0xf) is None        # Memory Space still off: UR
    run(bench)


def test_host_config_drives_the_function():
    """Memory Space Enable and PowerState gate BAR0, the Routing ID is the block's, and a
    write through the virtio PCI_CFG window of the function's own window reaches BAR0."""
    async def bench(h, model, ctx, dut):
        num_queues = BAR0 + rm.COMMON_OFFSET + rm.CC_NUM_QUEUES
        h.host(cfg_bus_number=3, cfg_device_number=0, cfg_function_number=0)
        assert await h.mem_read(num_queues, 1, 0xc) is None                 # UR: disabled
        h.host(cfg_command=rm.CMD_MEMORY_SPACE)
        assert (await h.mem_read(num_queues, 1, 0xc))[2] == P.num_queues
        h.host(cfg_pmcsr_powerstate=3)
        assert await h.mem_read(num_queues, 1, 0xc) is None                 # D3hot
        h.host(cfg_pmcsr_powerstate=0, cfg_bus_number=0x42, cfg_device_number=5,
               cfg_function_number=0)
        # The completion's Completer ID is the block's (Harness.completion compares it).
        assert (await h.mem_read(num_queues, 1, 0xc))[2] == P.num_queues
        pci_cfg = rm.find_cap(P, "virtio-pci-cfg").offset // 4
        for dw, value in ((1, 0), (2, rm.COMMON_OFFSET + rm.CC_QUEUE_SELECT), (3, 2),
                          (4, 0x0001_0000 >> 16)):
            assert await h.cfg_write(pci_cfg + dw, value) == SC
        sel = await h.mem_read(BAR0 + rm.COMMON_OFFSET + rm.CC_QUEUE_SELECT - 2, 1, 0xc)
        assert sel[2:] == b"\x01\x00"
    run(bench)


def test_flr_input_resets_the_window():
    """A rising edge of cfg_received_func_lvl_rst resets the window's registers (the PCI_CFG
    window's bar/offset/length), and only the edge does."""
    async def bench(h, model, ctx, dut):
        off = rm.find_cap(P, "virtio-pci-cfg").offset // 4 + 2
        await h.cfg_write(off, 0x1234)
        ctx.set(dut.host.cfg_received_func_lvl_rst, 1)
        await ctx.tick().repeat(3)
        model.function_level_reset()
        assert await h.cfg_read(off) == 0
        await h.cfg_write(off, 0x5678)
        await ctx.tick().repeat(3)                         # the level alone does nothing
        assert await h.cfg_read(off) == 0x5678
    run(bench)


def test_s7_endpoint_needs_s7_params():
    with pytest.raises(ValueError, match="VirtioBlkS7Endpoint needs DeviceParams"):
        VirtioBlkS7Endpoint(VARIANTS["virtio_blk_ep"])
    with pytest.raises(ValueError, match="hard_ip must be"):
        DeviceParams(hard_ip="xdma")
    with pytest.raises(ValueError, match="hard_ip=\"s7\" needs msix"):
        DeviceParams(hard_ip="s7", msix=False)


def test_errors_go_to_the_block():
    """[PG054] Behind the block a non-posted request in error is not completed by the function:
    its UR waits for cfg_err_cpl_rdy and goes out as one cfg_err_ur pulse, cfg_err_posted low,
    with the completion's fields; a posted one is a pulse with cfg_err_posted, without waiting."""
    async def bench(h, model, ctx, dut):
        err = dut.err
        ctx.set(err.cfg_err_cpl_rdy, 0)
        await h.send(mem_req(BAR0 + 4, 1, 0x6, tag=0x5a))      # Memory Space off: UR
        for _ in range(30):
            await ctx.tick()
            assert not ctx.get(dut.tx.valid), "the function completed a UR itself"
            assert not ctx.get(err.cfg_err_ur), "cfg_err_ur while cfg_err_cpl_rdy was low"
        ctx.set(err.cfg_err_cpl_rdy, 1)
        for _ in range(3):
            if ctx.get(err.cfg_err_ur):
                break
            await ctx.tick()
        assert ctx.get(err.cfg_err_ur) and not ctx.get(err.cfg_err_posted)
        assert not ctx.get(err.cfg_err_cpl_abort) and not ctx.get(err.cfg_err_locked)
        hdr = ctx.get(err.cfg_err_tlp_cpl_header)
        assert (hdr.tag, hdr.byte_count, hdr.lower_address) == (0x5a, 2, 5), hdr
        await ctx.tick()
        assert not ctx.get(err.cfg_err_ur), "more than one pulse"
        # Posted: a write with Memory Space off, cfg_err_cpl_rdy low all the while.
        ctx.set(err.cfg_err_cpl_rdy, 0)
        await h.send(mem_req(BAR0 + 4, 1, 0xf, data=[0]))
        pulses = []
        for _ in range(20):
            await ctx.tick()
            if ctx.get(err.cfg_err_ur):
                pulses.append(ctx.get(err.cfg_err_posted))
        assert pulses == [1], pulses
    run(bench)
