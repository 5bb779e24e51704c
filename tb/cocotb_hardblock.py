# Ref: Xilinx PG054 (7 Series FPGAs Integrated Block for PCI Express); PCI Local Bus 3.0 6.7;
#      PCIe Base 3.0 sections 6.1.4, 7.7; OASIS virtio 1.2 4.1.4
"""System tests of the build behind the 7-series hard block (``virtio_blk_ep_s7``), through the
block's model (``tb/hardblock.py``): what is the block's and what is the function's.

The data path, robustness and interrupt tests of the other modules run on this build too
(``make board-sim``); these check the split itself.
"""

import cocotb
from cocotb.triggers import with_timeout
from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus

from model import regmap as rm
from .blk_testbench import BlkTB
from .testbench import PEER_ID
from .scenario import STALLS, pattern


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def hard_block_split(dut, stalls):
    """The block's capabilities at its offsets, its last linked to the function's window, the
    window's requests (and only they) reaching the DUT, and MSI-X messages sent by the DUT
    with the block's MSI-X Enable."""
    bt = BlkTB(dut, stalls)
    assert bt.params.hard_ip == "s7", f"{bt.name} is not a build behind the 7-series block"
    drv = await bt.start()
    pci = bt.pci
    shim = bt.shim

    # [PCI-3.0 6.7] The list, walked as software does: the block's four, then the window's.
    ptr = await pci.config_read_byte(0x34)
    walk = []
    while ptr:
        walk.append((ptr, await pci.config_read_byte(ptr)))
        ptr = await pci.config_read_byte(ptr + 1) & 0xfc
    ids = {"pm": rm.PCI_CAP_ID_PM, "msi": 0x05, "pcie": rm.PCI_CAP_ID_EXP,
           "msix": rm.PCI_CAP_ID_MSIX}
    want = [(off, ids[name]) for name, off, _ in rm.S7_CAPS] + \
        [(c.offset, rm.PCI_CAP_ID_VNDR) for c in rm.capability_layout(bt.params)]
    assert walk == want, f"capability list {[(hex(o), i) for o, i in walk]}"
    assert want[len(rm.S7_CAPS)][0] == rm.S7_WINDOW[0]
    bt.log.info("capability list: %s", " ".join(f"{o:#x}:{i:#04x}" for o, i in walk))

    # The header and the block's capabilities never reach the DUT; the window does.
    before = shim.rx_count
    for off in (0x00, 0x04, 0x10, 0x40, 0x60, 0x9c, 0xa4, 0x100):
        await pci.config_read_dword(off)
    assert shim.rx_count == before, "a configuration read outside the window reached the DUT"
    vid = await pci.config_read_dword(0)
    assert vid == rm.DEVICE_ID << 16 | rm.VENDOR_ID, f"{vid:#x}"
    await pci.config_read_dword(rm.S7_WINDOW[0])
    await pci.config_read_dword(rm.S7_WINDOW[1] - 4)
    assert shim.rx_count == before + 2, "configuration reads in the window missed the DUT"

    # MSI-X: enabled in the block's structure, sent by the DUT from its table in BAR0.
    assert shim.host.msix_enable and bt.model.host.msix_enable, "MSI-X is not enabled"
    assert int(dut.host__cfg_interrupt_msixenable.value) == 1
    msi = bt.scoreboard.msi_writes
    assert await drv.write(0, pattern(0, 4096)) == rm.VIRTIO_BLK_S_OK
    st, data = await drv.read(0, 8)
    assert (st, data) == (rm.VIRTIO_BLK_S_OK, pattern(0, 4096))
    assert bt.scoreboard.msi_writes > msi, "no MSI-X message for the completed requests"
    # The Completer ID of the window's completions and the Requester ID of the DMA are the
    # block's Routing ID (the scoreboard checks every TLP against it).
    assert bt.model.completer_id == int(pci.pcie_id), \
        f"{bt.model.completer_id:#06x} != {int(pci.pcie_id):#06x}"
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def hard_block_intx(dut, stalls):
    """[PCIe-3.0 2.2.8.1] With MSI-X left off by the driver, completions arrive by INTx through
    the block: the function's level goes out as cfg_interrupt requests (rtl/phy/s7_cfg.py
    S7Interrupt), the block sends Assert_INTA and Deassert_INTA in turn, the driver reads the ISR
    on INTA#, and reading it deasserts INTA#; the block's Status.Interrupt Status follows."""
    bt = BlkTB(dut, stalls)
    drv = await bt.start(use_msix=False)
    pci, shim = bt.pci, bt.shim
    assert not drv.msix and int(dut.host__cfg_interrupt_msixenable.value) == 0
    assert not shim.fn.msi_cap.msi_enable
    msi = bt.scoreboard.msi_writes
    for i in range(4):
        assert await drv.write(i * 8, pattern(i * 8, 4096)) == rm.VIRTIO_BLK_S_OK
        st, data = await drv.read(i * 8, 8)
        assert (st, data) == (rm.VIRTIO_BLK_S_OK, pattern(i * 8, 4096))
    await bt.wait_cycles(100)
    msgs = shim.intx_messages
    bt.log.info("INTx: %d messages from the block, interrupts taken %s", len(msgs),
                dict(drv.interrupts))
    assert bt.scoreboard.msi_writes == msi, "an MSI-X message with MSI-X disabled"
    assert drv.interrupts.get("intx", 0) >= 8, f"completions not taken by INTx: " \
        f"{dict(drv.interrupts)}"
    assert len(msgs) >= 16 and msgs == ["Assert_INTA", "Deassert_INTA"] * (len(msgs) // 2), \
        f"INTx messages do not alternate from Assert: {msgs[:8]}..."
    assert not shim.inta and int(dut.intx_level.value) == 0, "INTA# left asserted"
    status = await pci.config_read_dword(0x04) >> 16
    assert not status & 1 << 3, f"Interrupt Status still set: {status:#06x}"
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def hard_block_errors(dut, stalls):
    """[PCIe-3.0 6.2, 7.5.1.2, 7.8.5] Behind the block the error status registers are the
    block's: an unsupported request the block answers itself, and the URs, CAs and Poisoned
    TLPs the function detects and reports on cfg_err_* (the block completing the non-posted
    ones from cfg_err_tlp_cpl_header), show in the block's Status and Device Status."""
    bt = BlkTB(dut, stalls)
    await bt.start()
    pci, shim = bt.pci, bt.shim
    devsta_off = rm.S7_CAPS[2][1] + 0x0a
    sta_err = rm.STS_SIGNALED_TARGET_ABORT | 1 << 15          # and Detected Parity Error

    async def devsta_urd():
        """UR Detected, then cleared (RW1C)."""
        sta = await pci.config_read_word(devsta_off)
        await pci.config_write_word(devsta_off, rm.DEVSTA_URD)
        assert not await pci.config_read_word(devsta_off) & rm.DEVSTA_URD, "URD not cleared"
        return bool(sta & rm.DEVSTA_URD)

    async def status(clear=True):
        sta = await pci.config_read_word(0x06)
        if clear:
            await pci.config_write_word(0x06, sta_err)
        return sta

    assert not await devsta_urd() and not await status() & sta_err
    # A memory read beside BAR0 (in the bridge's window): the block's own UR.
    before = shim.rx_count
    cpl = await bt.mem_read(bt.bar0 + bt.params.bar0_size, 4)
    assert cpl.status == CplStatus.UR and shim.rx_count == before
    assert await devsta_urd(), "the block's UR left Device Status UR Detected clear"
    # A 3 DW read of BAR0: the function's Completer Abort, completed by the block.
    cpl = await bt.mem_read(bt.bar0 + rm.COMMON_OFFSET, 12)
    assert cpl.status == CplStatus.CA and shim.rx_count == before + 1
    assert shim.error_reports[-1] == ("ca", False)
    assert await status() & rm.STS_SIGNALED_TARGET_ABORT, "no Signaled Target Abort"
    assert not await devsta_urd()
    # A poisoned Configuration Write in the window: the function's UR, completed by the block.
    r = Tlp()
    r.fmt_type, r.requester_id, r.tag = TlpType.CFG_WRITE_0, PEER_ID, 7
    r.completer_id = pci.pcie_id
    r.set_addr_be_data(rm.S7_WINDOW[0], b"\0\0\0\0")
    r.ep = True
    # (A report the block never takes would leave it without a completion: bounded.)
    cpl = await with_timeout(bt.inject(r), 20, "us")
    assert cpl.status == CplStatus.UR and cpl.tag == 7, f"{cpl!r}"
    # [PCIe-3.0 6.2] Reported as the UR alone, the error of higher precedence.
    assert shim.error_reports[-1] == ("ur", False) and \
        ("poisoned", False) not in shim.error_reports, shim.error_reports
    assert await devsta_urd(), "the function's UR left Device Status UR Detected clear"
    sta = await status()
    assert sta & 1 << 15, f"no Detected Parity Error for the poisoned write: {sta:#06x}"
    # Posted: a poisoned write and a 3 DW write to BAR0 (no completion; recorded).
    await bt.mem_write(bt.bar0 + rm.COMMON_OFFSET, b"\0" * 4, poisoned=True)
    await bt.mem_write(bt.bar0 + rm.COMMON_OFFSET, b"\0" * 12)
    await bt.settle(200)
    assert shim.error_reports[-2:] == [("poisoned", True), ("ca", True)], shim.error_reports
    sta = await status()
    assert sta & sta_err == sta_err, f"Status {sta:#06x} after the posted errors"
    bt.log.info("error reports to the block: %s", shim.error_reports)
    await bt.finish()
