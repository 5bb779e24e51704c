"""Amaranth-simulator tests of the whole endpoint at the TLP level, against the golden model.

These are the fast tier: no cocotb, no Verilog. The cocotb tests in ``tb/`` repeat the important
ones through cocotbext-pcie's RootComplex on Verilator and Icarus.
"""

import os
import random
from types import SimpleNamespace

import pytest
from amaranth.sim import Simulator

from model.params import DeviceParams, VARIANTS, DEFAULT_FEATURES
from model.device import VirtioBlkModel, SC, UR, CA
from model import regmap as rm
from rtl.top import VirtioBlkEndpoint
from tb.scoreboard import read_byte_count, read_lower_address
from tb.seed import seed_from_env
from .sim_helpers import stream_put, stream_get, tlp_beats, beats_to_dws, cfg0, mem_req, \
    parse_cpl


STATUS = {0: SC, 1: UR, 4: CA}
BAR0 = 0x1_2340_0000
N_ACCESSES = int(os.environ.get("N_ACCESSES") or 2500)


# DRIVER_OK in every byte lane of a DW.
DRIVER_OK_LANES = rm.STATUS_DRIVER_OK * 0x01010101


class Harness:
    """Drives each request into the endpoint and the model, and compares what comes back.

    Every read's enabled bytes and every completion status must match the model; a posted
    request must produce no completion (a stray one would be taken as the next request's and
    fail its tag check).
    """
    def __init__(self, ctx, dut, model):
        self.ctx, self.dut, self.model = ctx, dut, model
        self.tag = 0

    async def send(self, dws):
        for beat in tlp_beats(dws):
            await stream_put(self.ctx, self.dut.rx, beat)

    async def completion(self, tag):
        beats = []
        while True:
            beat = await stream_get(self.ctx, self.dut.tx)
            beats.append(beat)
            if beat.last:
                break
        assert beats[0].first
        cpl = parse_cpl(beats_to_dws(beats))
        assert cpl["tag"] == tag, f"completion tag {cpl['tag']} for request tag {tag}"
        assert cpl["completer_id"] == self.model.completer_id
        return cpl

    def next_tag(self):
        self.tag = (self.tag + 1) % 256
        return self.tag

    async def cfg_read(self, register, be=0xf, function=0, what=""):
        exp = self.model.config_read(register, be, function=function)
        tag = self.next_tag()
        await self.send(cfg0(register, be, tag=tag, function=function))
        cpl = await self.completion(tag)
        assert cpl["byte_count"] == 4 and cpl["lower_address"] == 0
        got = STATUS[cpl["status"]], (cpl["data"][0] if cpl["data"] else None)
        assert got == exp, f"{what} cfg read {register:#x} be {be:#x}: {got} != {exp}"
        return got[1]

    async def cfg_write(self, register, value, be=0xf, function=0, bus=1, dev=0, ep=0,
                        what=""):
        exp = self.model.config_write(register, value, be, function=function, bus=bus, dev=dev,
                                      poisoned=bool(ep))
        tag = self.next_tag()
        await self.send(cfg0(register, be, write=value, tag=tag, function=function, bus=bus,
                             dev=dev, ep=ep))
        cpl = await self.completion(tag)
        assert cpl["length"] == 0 and cpl["type"] == 0b01010 and cpl["byte_count"] == 4
        assert STATUS[cpl["status"]] == exp, f"{what} cfg write {register:#x}"
        return exp

    async def mem_read(self, addr, length, first_be, last_be=0, what=""):
        exp = self.model.mem_read(addr, length, first_be, last_be)
        tag = self.next_tag()
        await self.send(mem_req(addr, length, first_be, last_be, tag=tag))
        cpl = await self.completion(tag)
        status = STATUS[cpl["status"]]
        assert status == exp[0], f"{what} mem read {addr:#x}: {status} != {exp[0]}"
        req = SimpleNamespace(address=addr, length=length, first_be=first_be, last_be=last_be)
        assert (cpl["byte_count"], cpl["lower_address"]) == \
            (read_byte_count(req), read_lower_address(req)), f"{what} mem read {addr:#x}"
        if status != SC:
            assert cpl["data"] == [] and cpl["length"] == 0
            return None
        assert cpl["length"] == length == len(cpl["data"])
        data = b"".join(d.to_bytes(4, "little") for d in cpl["data"])
        bes = first_be | (last_be << 4 if length == 2 else 0)
        for k in range(4 * length):
            if bes >> k & 1:
                assert data[k] == exp[1][k], \
                    f"{what} mem read {addr:#x} byte {k}: {data.hex()} != {exp[1].hex()}"
        return data

    async def message(self, code, data=None, ep=0):
        """A Message, routed Local [PCIe-3.0 2.2.8]; posted, so nothing must come back (a
        stray completion would fail the next request's tag check)."""
        self.model.message(code, poisoned=bool(ep and data))
        fmt = 0b011 if data else 0b001
        dw0 = fmt << 29 | 0b10100 << 24 | ep << 14 | (len(data) if data else 0)
        await self.send([dw0, 0x0000_0000 | self.next_tag() << 8 | code, 0, 0] + (data or []))

    async def mem_write(self, addr, dws, first_be, last_be=0, ep=0):
        data = b"".join(v.to_bytes(4, "little") for v in dws)
        self.model.mem_write(addr, data, first_be, last_be, poisoned=bool(ep))
        await self.send(mem_req(addr, len(dws), first_be, last_be, data=dws, ep=ep))


def run(params, bench, seed=None):
    dut = VirtioBlkEndpoint(params)
    model = VirtioBlkModel(params)
    sim = Simulator(dut)
    sim.add_clock(4e-9)

    async def testbench(ctx):
        h = Harness(ctx, dut, model)
        await bench(h, model)
    sim.add_testbench(testbench)
    sim.run()


async def enable_bar(h, model):
    """Place BAR0 at BAR0 and set Memory Space Enable, in both the RTL and the model."""
    for dw, value in ((4, BAR0 & 0xffffffff), (5, BAR0 >> 32), (1, rm.CMD_MEMORY_SPACE)):
        assert await h.cfg_write(dw, value) == SC


def test_config_header():
    p = DeviceParams()

    async def bench(h, model):
        for dw in range(0, 0x100 // 4):
            await h.cfg_read(dw)
        assert await h.cfg_read(0) == rm.DEVICE_ID << 16 | rm.VENDOR_ID
        assert await h.cfg_read(2) == rm.CLASS_CODE << 8 | p.revision_id
    run(p, bench)


def test_bar_sizing_and_decode():
    p = DeviceParams()

    async def bench(h, model):
        await h.cfg_write(4, 0xffffffff)
        assert await h.cfg_read(4) == (0x1_0000_0000 - p.bar0_size) | 0x4
        await h.cfg_write(4, 0)
        # Memory Space Enable clear: UR, and URD set in Device Status.
        assert await h.mem_read(0, 1, 0xf) is None
        devsta = rm.find_cap(p, "pcie").offset // 4 + 2
        assert await h.cfg_read(devsta) >> 16 & rm.DEVSTA_URD
        await h.cfg_write(devsta, rm.DEVSTA_URD << 16, be=0xc)
        assert not await h.cfg_read(devsta) >> 16 & rm.DEVSTA_URD
        await enable_bar(h, model)
        data = await h.mem_read(BAR0 + rm.DEVICE_OFFSET, 2, 0xf, 0xf)
        assert data == p.blk_config()[:8]
        # Past the end of BAR0, and outside it; too long.
        assert await h.mem_read(BAR0 + p.bar0_size, 1, 0xf) is None
        assert await h.mem_read(BAR0 + p.bar0_size - 4, 2, 0xf, 0xf) is None
        assert await h.mem_read(BAR0, 3, 0xf, 0xf) is None
        assert await h.cfg_read(1) >> 16 & rm.STS_SIGNALED_TARGET_ABORT
    run(p, bench)


def test_messages():
    """[PCIe-3.0 2.2.8] Messages an endpoint must take are dropped without error; any other is
    an Unsupported Request, which for a posted request only sets URD; a poisoned one is logged."""
    p = DeviceParams()
    devsta = rm.find_cap(p, "pcie").offset // 4 + 2

    async def bench(h, model):
        for code, data, ep, urd in [(0x50, [0x0000_0019], 0, False),   # Set_Slot_Power_Limit
                                    (0x00, None, 0, False),             # Unlock
                                    (0x14, None, 0, False),             # PM_Active_State_Nak
                                    (0x19, None, 0, False),             # PME_Turn_Off
                                    (0x7f, None, 0, False),             # Vendor_Defined Type 1
                                    (0x7e, None, 0, True),              # Vendor_Defined Type 0
                                    (0x20, None, 0, True),              # Assert_INTA: upstream only
                                    (0x99, None, 0, True),              # undefined
                                    (0x50, [0x0000_0019], 1, False)]:   # poisoned
            await h.message(code, data, ep)
            got_urd = bool(await h.cfg_read(devsta) >> 16 & rm.DEVSTA_URD)
            assert got_urd == urd, f"message {code:#04x}: URD {got_urd}"
            await h.cfg_write(devsta, rm.DEVSTA_URD << 16, be=0xc)
        assert await h.cfg_read(1) >> 16 & rm.STS_DETECTED_PARITY_ERROR
    run(p, bench)


def test_d3hot_leaves_bar0_undecoded():
    """[PCIe-3.0 5.3.1.4.1] In D3hot memory requests are Unsupported Requests; back in D0 they
    are decoded again."""
    p = DeviceParams()
    pmcsr = rm.find_cap(p, "pm").offset // 4 + 1

    async def bench(h, model):
        await enable_bar(h, model)
        assert await h.mem_read(BAR0 + rm.CC_NUM_QUEUES, 1, 0xc) is not None
        await h.cfg_write(pmcsr, 3, be=0x1)
        assert await h.cfg_read(pmcsr) & 3 == 3
        assert await h.mem_read(BAR0 + rm.CC_NUM_QUEUES, 1, 0xc) is None
        await h.cfg_write(pmcsr, 0, be=0x1)
        assert await h.mem_read(BAR0 + rm.CC_NUM_QUEUES, 1, 0xc) is not None
    run(p, bench)


def test_reset_drops_the_rest_of_its_request():
    """[VIRTIO-1.2 4.1.4.3.2] The driver MUST wait for device_status to read 0 before it
    reinitializes the device: in a 2-DW write that writes 0 to device_status, the second DW
    (queue_size, queue_msix_vector) comes while the reset is under way and is dropped. A later
    write is taken. (Found by test_random_accesses_match_model with SEED=1950052242.)"""
    p = DeviceParams()
    status = BAR0 + rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS
    size = BAR0 + rm.COMMON_OFFSET + rm.CC_QUEUE_SIZE
    at_reset = (rm.VIRTIO_MSI_NO_VECTOR << 16 | p.max_queue_size).to_bytes(4, "little")

    async def bench(h, model):
        await enable_bar(h, model)
        await h.mem_write(size, [8], 0x3)
        await h.mem_write(status, [rm.STATUS_ACKNOWLEDGE], 0x1)
        # device_status = 0, then queue_size = 1 and queue_msix_vector = 0 in one request.
        await h.mem_write(status, [0, 0x0000_0001], 0xf, 0xf)
        assert await h.mem_read(status, 1, 0x1) == bytes(4)
        assert await h.mem_read(size, 1, 0xf) == at_reset
        # Once device_status reads 0, the same write goes through.
        await h.mem_write(size, [0x0000_0001], 0xf)
        assert await h.mem_read(size, 1, 0xf) == (1).to_bytes(4, "little")
    run(p, bench)


# The shipped builds, and corners of the parameter space: one queue (a 1-bit queue index),
# sixteen queues with notify addresses 2 bytes apart and a larger BAR0. (The build behind the
# hard block has a configuration space of its window only: tests/test_endpoint_s7.py.)
RANDOM_PARAMS = {
    **{name: p for name, p in VARIANTS.items() if not p.hard_ip},
    "one_queue": DeviceParams(num_queues=1,
                              features=DEFAULT_FEATURES & ~(1 << rm.VIRTIO_BLK_F_MQ)),
    "many_queues": DeviceParams(num_queues=16, notify_off_multiplier=2, bar0_size=0x10000,
                                features=DEFAULT_FEATURES &
                                ~(1 << rm.VIRTIO_F_NOTIFICATION_DATA)),
}


@pytest.mark.parametrize("variant", sorted(RANDOM_PARAMS))
def test_random_accesses_match_model(variant):
    """Random configuration and BAR0 traffic; every read and status compared with the model.

    DRIVER_OK is never set: with it the request engine would start DMA from whatever the
    random writes left in the queue registers, and this test compares the register file only
    (the data path has its own tests, in tb/cocotb_blk.py)."""
    p = RANDOM_PARAMS[variant]
    rng = random.Random(seed_from_env())
    base = BAR0 if p.bar0_64bit else 0xfe00_0000
    bar_dws = [rm.COMMON_OFFSET // 4 + i for i in range(rm.COMMON_LENGTH // 4 + 2)] + \
              [rm.ISR_OFFSET // 4, rm.ISR_OFFSET // 4 + 1] + \
              [rm.DEVICE_OFFSET // 4 + i for i in range(rm.BLK_CONFIG_LENGTH // 4 + 1)] + \
              [rm.NOTIFY_OFFSET // 4 + i for i in range(3)] + \
              [rm.MSIX_TABLE_OFFSET // 4 + i for i in range(4 * p.msix_table_size + 1)] + \
              [rm.MSIX_PBA_OFFSET // 4, p.bar0_size // 4 - 1]
    pci_cfg = rm.find_cap(p, "virtio-pci-cfg").offset // 4
    live_cfg = [dw for dw, r in rm.config_registers(p).items() if r.wmask | r.w1c]
    # The common configuration fields are where the driver spends its time: weight them.
    bar_dws += [rm.COMMON_OFFSET // 4 + i for i in range(rm.COMMON_LENGTH // 4)] * 3

    def rand_be():
        return rng.choice([0xf, 0xf, 0x1, 0x3, 0xc, 0x2, 0x4, 0x8, 0x6, 0x9, 0x5, 0x0,
                           rng.randrange(16)])

    def rand_value():
        return rng.choice([0, 1, 2, 3, 0xffffffff, rng.randrange(1 << 32), rng.randrange(8),
                           rng.randrange(1 << 16), 0x0b])

    async def bench(h, model):
        await h.cfg_write(4, base & 0xffffffff)
        if p.bar0_64bit:
            await h.cfg_write(5, base >> 32)
        await h.cfg_write(1, rm.CMD_MEMORY_SPACE)
        for i in range(N_ACCESSES):
            kind = rng.random()
            if kind < 0.25:
                dw = rng.choice([rng.randrange(64), rng.randrange(1024), pci_cfg,
                                 pci_cfg - 1, pci_cfg - 2, pci_cfg - 3] + live_cfg)
                be = rand_be()
                if rng.random() < 0.5 or dw in (4, 5):
                    await h.cfg_read(dw, be, what=f"#{i}")
                else:
                    value = rand_value()
                    if dw == pci_cfg - 3:
                        value = rng.choice([0, 0, 1])
                    elif dw == pci_cfg - 2:
                        value = rng.choice(bar_dws) * 4 + rng.randrange(4)
                    elif dw == pci_cfg - 1:
                        value = rng.choice([1, 2, 4, 3, 0])
                    elif model.regs.get(dw) and model.regs[dw].special == "pmcsr":
                        value = rng.randrange(4)
                    elif dw == 1:
                        value = rng.choice([rm.CMD_MEMORY_SPACE, 0x6, 0x406, value])
                    elif dw == pci_cfg:
                        # The window may land on device_status in any byte lane.
                        value &= ~(DRIVER_OK_LANES)
                    await h.cfg_write(dw, value, be, what=f"#{i}")
            else:
                if not model.memory_enabled and rng.random() < 0.8:
                    await h.cfg_write(1, rm.CMD_MEMORY_SPACE)
                dw = rng.choice(bar_dws)
                length = rng.choice([1, 1, 1, 2])
                first_be = rand_be() if length == 1 else rng.choice([0xf, 0xe, 0xc, 0x8])
                last_be = 0 if length == 1 else rng.choice([0xf, 0x7, 0x3, 0x1])
                addr = base + dw * 4
                if rng.random() < 0.03:
                    addr = rng.choice([base + p.bar0_size, 0x1000, base - 4])
                if kind < 0.65:
                    await h.mem_read(addr, length, first_be, last_be, what=f"#{i}")
                else:
                    if dw == rm.COMMON_OFFSET // 4 + rm.CC_DEVICE_STATUS // 4 and \
                            rng.random() < 0.7:
                        values = [rng.choice([0, 1, 3, 0xb, 0xf, 0x4b]) |
                                  rng.randrange(3) << 16]
                    elif dw == rm.COMMON_OFFSET // 4 + rm.CC_DRIVER_FEATURE // 4:
                        # Mostly subsets of the offered word, sometimes an unoffered bit.
                        sel = model.driver_feature_select
                        word = p.offered_features >> 32 * sel & 0xffffffff if sel < 2 else 0
                        values = [word & rng.randrange(1 << 32) |
                                  (1 << rng.randrange(32) if rng.random() < 0.2 else 0)]
                    elif dw in (rm.COMMON_OFFSET // 4 + rm.CC_DRIVER_FEATURE_SELECT // 4,
                                rm.COMMON_OFFSET // 4 + rm.CC_DEVICE_FEATURE_SELECT // 4,
                                rm.COMMON_OFFSET // 4 + rm.CC_DEVICE_STATUS // 4 + 1):
                        values = [rng.choice([0, 1, 1, 2, rand_value()]) for _ in range(length)]
                    else:
                        values = [rand_value() for _ in range(length)]
                    status_dw = base + (rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS) // 4 * 4
                    values = [v & ~rm.STATUS_DRIVER_OK if addr + 4 * k == status_dw else v
                              for k, v in enumerate(values)]
                    await h.mem_write(addr, values, first_be, last_be)
        # Everything the model holds must read back the same at the end.
        for dw in range(64):
            await h.cfg_read(dw, what="final")
        if model.memory_enabled:
            for dw in bar_dws:
                await h.mem_read(base + dw * 4, 1, 0xf, what="final")
    run(p, bench)
