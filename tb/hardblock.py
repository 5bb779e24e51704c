# Ref: Xilinx PG054 v3.3 (7 Series FPGAs Integrated Block for PCI Express); PCI Local Bus 3.0
#      section 6; PCIe Base 3.0 sections 2.2, 7.5, 7.7, 7.8
"""A model of the 7-series PCIe hard block's user side, for the build behind it
(``DeviceParams(hard_ip="s7")``, :class:`rtl.top.VirtioBlkS7Endpoint`).

:class:`S7HardBlock` is what the RootComplex enumerates: a cocotbext-pcie device whose one
function, :class:`S7Function` (a cocotbext-pcie :class:`Endpoint`), owns the type-0 header, BAR0
and the capability structures the block implements itself, at the block's offsets
(:data:`model.regmap.S7_CAPS`: PM 0x40, MSI 0x48, PCI Express 0x60, MSI-X 0x9C, the last linked
to the window at 0xA8, ``MSIX_CAP_NEXTPTR``). It hands the DUT, through the harness's
transactors, what ``pcie_7x`` hands the user logic on ``m_axis_rx``:

- configuration requests in the window (:data:`model.regmap.S7_WINDOW`, from
  ``EXT_CFG_CAP_PTR``), which the DUT completes itself;
- memory requests that hit BAR0 while Memory Space is enabled (``rx_bar_hit`` bit 0 set in
  ``tuser``); a read that hits no BAR is completed UR by the block, a write dropped, and so is
  every other request the block does not forward (I/O, Type 1, locked reads);
- the completions of the DUT's reads.

Everything the DUT sends on ``s_axis_tx`` goes up the link as it is. The DUT's interrupt
requests (``cfg_interrupt``, :class:`rtl.phy.s7_cfg.S7InterruptSignature`) are taken a few
cycles after they are raised (``cfg_interrupt_rdy`` for a cycle): with the block's MSI off, an
Assert_INTA or Deassert_INTA message (cocotbext-pcie's RootComplex has no INTx, so the model
keeps the wire itself: :attr:`S7HardBlock.inta`, driven to the harness's ``inta``, which the
driver watches, and :attr:`S7HardBlock.intx_messages`) and the Status register's Interrupt
Status bit; with it on, an MSI from the block's MSI capability.

The DUT's error reports (``cfg_err_*``, :class:`rtl.phy.s7_cfg.S7ErrorSignature`) are recorded
where the block records them: an Unsupported Request in Device Status (UR Detected), a Completer
Abort in Status (Signaled Target Abort), a Poisoned TLP in Status (Detected Parity Error); a
non-posted UR or CA, taken while ``cfg_err_cpl_rdy`` is high (low one cycle in three, so that
the DUT waits for it), is completed by the block from ``cfg_err_tlp_cpl_header`` and
``cfg_err_locked``, and that completion goes through the testbench's checks as the DUT's own
would. The requests the block answers itself (not forwarded) set UR Detected too.

The block's ``cfg_*`` outputs (:class:`rtl.phy.s7_cfg.S7ConfigSignature`) are driven from the
function's registers after every configuration request it takes, and
:attr:`S7HardBlock.on_host_config` tells the testbench (the golden model's
:class:`model.device.HostConfig`, the scoreboard's Bus Master Enable).

Beats are the block's AXI4-Stream beats (:class:`S7BeatFormat`), so the DUT's adapters
(:class:`rtl.phy.s7_axis.S7AxisRx`, :class:`~rtl.phy.s7_axis.S7AxisTx`) are in the loop: DW0 in
bits 31:0 of the first beat, ``tkeep`` 0x0F or 0xFF, ``tlast`` on the last beat, no start flag at
64 bits, and every DW the 32-bit value of the wire's four bytes with the first in bits 31:24
(payload DWs too: their lowest-addressed byte in bits 31:24 [PG054, the core's
``axi_basic_rx``; Xilinx's ``PIO_EP_MEM_ACCESS.v``]; see :mod:`rtl.phy.s7_axis`).
"""


import cocotb
from cocotb.triggers import RisingEdge
from amaranth.lib import data
from cocotbext.pcie.core.endpoint import Endpoint
from cocotbext.pcie.core.caps import MsiCapability, MsixCapability
from cocotbext.pcie.core.caps.common import PciCap, PciCapId
from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus
from cocotbext.pcie.core.utils import PcieId

from model import regmap as rm
from model.device import HostConfig
from rtl.phy.s7_axis import S7RxTuser, S7TxTuser
from rtl.phy.s7_cfg import S7CplHeader
from .harness import s7_beat_layout
from .shim import TlpShim, tlp_to_dws


__all__ = ["S7BeatFormat", "S7Function", "S7HardBlock"]


def _swap_payload(dws):
    """Reverse the bytes of each payload DW, header DWs as they are (its own inverse)."""
    hdr = 4 if dws[0] >> 29 & 1 else 3
    return dws[:hdr] + [int.from_bytes(d.to_bytes(4, "little"), "big") for d in dws[hdr:]]


class S7BeatFormat:
    """A TLP's DWs (in :func:`tb.shim.tlp_to_dws`'s convention) to and from the 64-bit
    AXI4-Stream beats of ``pcie_7x`` (:func:`tb.harness.s7_beat_layout`), for :class:`TlpShim`.

    Parameters
    ----------
    data_width : int
        64 (the 128-bit interface's straddled beats are the adapter's unit tests' business).
    """
    def __init__(self, data_width=64):
        if data_width != 64:
            raise ValueError(f"S7BeatFormat models the 64-bit interface, not {data_width!r}")
        rx = data.Layout.cast(s7_beat_layout(64, S7RxTuser))
        tx = data.Layout.cast(s7_beat_layout(64, S7TxTuser))
        self.rx_width, self.tx_width = rx.size, tx.size
        self._rx = {name: rx[name].offset for name in ("tdata", "tkeep", "tlast", "tuser")}
        self._tx = {name: tx[name].offset for name in ("tdata", "tkeep", "tlast")}
        self._bar_hit = self._rx["tuser"] + data.Layout.cast(S7RxTuser)["bar_hit"].offset
        self._in_tlp = False

    def pack(self, dws):
        """The DWs of one TLP into ``m_axis_rx`` beats. A memory request is BAR0's
        (``rx_bar_hit`` bit 0): the block forwards no other."""
        axi = _swap_payload(dws)
        is_mem = dws[0] >> 24 & 0x1f in (0b00000, 0b00001)
        beats = []
        for i in range(0, len(axi), 2):
            chunk = axi[i:i + 2]
            last = i + 2 >= len(axi)
            value = chunk[0] | (chunk[1] << 32 if len(chunk) > 1 else 0)
            value <<= self._rx["tdata"]
            value |= (0xff if len(chunk) > 1 else 0x0f) << self._rx["tkeep"]
            value |= int(last) << self._rx["tlast"]
            value |= int(is_mem) << self._bar_hit
            beats.append(value)
        return beats

    def unpack(self, value):
        """One ``s_axis_tx`` beat -> ``(dws, first, last)``; 64-bit beats have no start flag,
        so ``first`` is "the beat before was a last one"."""
        tdata = value >> self._tx["tdata"] & (1 << 64) - 1
        tkeep = value >> self._tx["tkeep"] & 0xff
        last = bool(value >> self._tx["tlast"] & 1)
        if tkeep not in (0x0f, 0xff) or (tkeep == 0x0f and not last):
            raise AssertionError(f"s_axis_tx_tkeep {tkeep:#04x} (last={last}): the core reads "
                                 f"only 0x0F on a last beat and 0xFF [axi_basic_tx]")
        dws = [tdata & 0xffffffff] + ([tdata >> 32] if tkeep == 0xff else [])
        first = not self._in_tlp
        self._in_tlp = not last
        return dws, first, last

    def finish(self, dws):
        """A whole TLP's DWs from ``s_axis_tx`` -> in :func:`tb.shim.dws_to_tlp`'s convention."""
        return _swap_payload(dws)


class _Window(PciCap):
    """Where the block's list goes on: the user's window. Its requests go to the DUT
    (:meth:`S7HardBlock.upstream_recv`); this only places it, for the block's next pointer."""
    def __init__(self):
        super().__init__()
        self.cap_id = PciCapId.VNDR
        self.length = (rm.S7_WINDOW[1] - rm.S7_WINDOW[0]) // 4

    async def _read_register(self, reg):
        raise AssertionError("the window's requests go to the DUT")

    async def _write_register(self, reg, data, mask):
        raise AssertionError("the window's requests go to the DUT")


class S7Function(Endpoint):
    """The configuration space ``pcie_7x`` implements for the function, as Vivado generates the
    core for this endpoint (see :class:`rtl.top.VirtioBlkS7Endpoint`): identity, BAR0, PM, MSI
    (64-bit), PCI Express (Max_Payload_Size Supported from the parameters, Extended Tag, no
    FLR: ``DEV_CAP_FUNCTION_LEVEL_RESET_CAPABLE = "FALSE"``), MSI-X (table and PBA in BAR0),
    then the window.

    Parameters
    ----------
    params : model.params.DeviceParams
    """
    def __init__(self, params):
        super().__init__()
        self.vendor_id, self.device_id = rm.VENDOR_ID, rm.DEVICE_ID
        self.class_code, self.revision_id = rm.CLASS_CODE, params.revision_id
        self.subsystem_vendor_id, self.subsystem_id = params.subsystem_vendor_id, \
            params.subsystem_id
        self.interrupt_pin = 1
        self.configure_bar(0, params.bar0_size, ext=params.bar0_64bit)
        offsets = {name: off // 4 for name, off, _ in rm.S7_CAPS}
        self.msi_cap = MsiCapability()
        self.msi_cap.msi_64bit_address_capable = True
        self.msix_cap = MsixCapability()
        self.msix_cap.msix_table_size = params.msix_table_size - 1
        self.msix_cap.msix_table_bar_indicator_register = 0
        self.msix_cap.msix_table_offset = rm.MSIX_TABLE_OFFSET
        self.msix_cap.msix_pba_bar_indicator_register = 0
        self.msix_cap.msix_pba_offset = rm.MSIX_PBA_OFFSET
        pcie = self.pcie_cap
        pcie.max_payload_size_supported = params.max_payload_size_supported
        pcie.extended_tag_supported = True
        pcie.function_level_reset_capability = False
        pcie.max_link_speed, pcie.max_link_width = 2, 4
        self.window = _Window()
        for cap, name in ((self.pm_cap, "pm"), (self.msi_cap, "msi"), (self.pcie_cap, "pcie"),
                          (self.msix_cap, "msix")):
            self.register_capability(cap, offsets[name])
        self.register_capability(self.window, rm.S7_EXT_CFG_CAP_PTR)
        assert [c.offset * 4 for c in self.capabilities.list] == \
            [off for _, off, _ in rm.S7_CAPS] + [rm.S7_WINDOW[0]]

    async def host_config(self):
        """The block's ``cfg_*`` outputs now, as a :class:`model.device.HostConfig`."""
        bar0 = self.bar[0] & ~0xf
        if self.bar[0] & 4:
            bar0 |= self.bar[1] << 32
        pcie, pm = rm.S7_CAPS[2][1], rm.S7_CAPS[0][1]
        return HostConfig(
            command=await self.read_config_register(1) & 0xffff,
            devctl=await self.read_config_register(pcie // 4 + 2) & 0xffff,
            bus=self.bus_num, device=self.device_num, function=self.function_num,
            power_state=await self.read_config_register(pm // 4 + 1) & 3,
            msix_enable=bool(self.msix_cap.msix_enable),
            msix_mask=bool(self.msix_cap.msix_function_mask),
            bar0_base=bar0)


_MEM = {TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_WRITE, TlpType.MEM_WRITE_64}
_CPL = {TlpType.CPL, TlpType.CPL_DATA, TlpType.CPL_LOCKED, TlpType.CPL_LOCKED_DATA}
_CFG0 = {TlpType.CFG_READ_0, TlpType.CFG_WRITE_0}


class S7HardBlock(TlpShim):
    """The hard block and the DUT behind it, as one cocotbext-pcie device (see the module
    docstring).

    Parameters
    ----------
    dut : cocotb handle
        The toplevel, :class:`tb.harness.S7SimHarness`.
    params : model.params.DeviceParams
    on_host_config : callable
        Called with a :class:`model.device.HostConfig` whenever the block's ``cfg_*`` outputs
        are driven (after each configuration request the block takes).
    **kwargs
        As :class:`tb.shim.TlpShim` (stalls, hooks).

    Attributes
    ----------
    fn : S7Function
    host : model.device.HostConfig
        What the ``cfg_*`` outputs show now.
    """
    def __init__(self, dut, params, *, on_host_config=None, **kwargs):
        super().__init__(dut, params.data_width, fmt=S7BeatFormat(params.data_width), **kwargs)
        self.fn = self.append_function(S7Function(params))
        self.on_host_config = on_host_config or (lambda host: None)
        self.host = HostConfig()
        self.inta = False
        self.intx_messages = []
        self.msi_sent = 0
        self._drive(self.host)
        dut.inta.value = 0
        dut.irq__cfg_interrupt_rdy.value = 0
        dut.err__cfg_err_cpl_rdy.value = 0
        self.error_reports = []
        hdr = data.Layout.cast(S7CplHeader)
        self._hdr = {name: (field.offset, field.width) for name, field in hdr}
        cocotb.start_soon(self._serve_interrupts())
        cocotb.start_soon(self._serve_errors())

    async def _serve_errors(self):
        """[PG054] Record the DUT's ``cfg_err_*`` pulses, and complete a non-posted UR or CA."""
        d, fn = self.dut, self.fn
        cycle = 0
        while True:
            await RisingEdge(self.clk)
            ur, ca = int(d.err__cfg_err_ur.value), int(d.err__cfg_err_cpl_abort.value)
            poisoned, posted = int(d.err__cfg_err_poisoned.value), \
                int(d.err__cfg_err_posted.value)
            rdy = int(d.err__cfg_err_cpl_rdy.value)
            cycle += 1
            d.err__cfg_err_cpl_rdy.value = int(cycle % 3 != 0)
            if poisoned:
                # [PCIe-3.0 7.5.1.2] Detected Parity Error: a Poisoned TLP received.
                fn.detected_parity_error = True
                self.error_reports.append(("poisoned", bool(posted)))
            if not (ur or ca):
                continue
            assert not (ur and ca), "cfg_err_ur and cfg_err_cpl_abort in one cycle"
            # [PCIe-3.0 6.2] One error per TLP, the one of highest precedence: UR and CA rank
            # above Poisoned TLP Received.
            assert not poisoned, "cfg_err_poisoned with cfg_err_ur or cfg_err_cpl_abort"
            self.error_reports.append(("ur" if ur else "ca", bool(posted)))
            if ur:
                fn.pcie_cap.unsupported_request_detected = True
            else:
                fn.signaled_target_abort = True
            if posted:
                continue
            assert rdy, "a non-posted cfg_err pulse while cfg_err_cpl_rdy was low"
            raw = int(d.err__cfg_err_tlp_cpl_header.value)
            h = {name: raw >> off & (1 << width) - 1 for name, (off, width) in self._hdr.items()}
            cpl = Tlp()
            cpl.fmt_type = TlpType.CPL_LOCKED if int(d.err__cfg_err_locked.value) else \
                TlpType.CPL
            cpl.status = CplStatus.UR if ur else CplStatus.CA
            cpl.completer_id = PcieId(self.bus_num, fn.device_num, fn.function_num)
            cpl.requester_id = PcieId.from_int(h["requester_id"])
            cpl.tag, cpl.tc, cpl.attr = h["tag"], h["tc"], h["attr"]
            cpl.byte_count, cpl.lower_address = h["byte_count"], h["lower_address"]
            # The block's completion, checked as the DUT's own (scoreboard, TLP checker).
            self._from_dut(tlp_to_dws(cpl))

    async def _serve_interrupts(self, latency=3):
        """[PG054] Take each ``cfg_interrupt`` request ``latency`` cycles after it is raised
        (``cfg_interrupt_rdy`` high for a cycle), and send what it asks for."""
        d, fn = self.dut, self.fn
        waited = 0
        while True:
            await RisingEdge(self.clk)
            d.irq__cfg_interrupt_rdy.value = 0
            if not d.irq__cfg_interrupt.value:
                waited = 0
                continue
            if waited < latency:
                waited += 1
                continue
            waited = 0
            d.irq__cfg_interrupt_rdy.value = 1
            if fn.msi_cap.msi_enable:
                self.msi_sent += 1
                vector = int(d.irq__cfg_interrupt_di.value)
                cocotb.start_soon(fn.msi_cap.issue_msi_interrupt(vector))
                continue
            assert int(d.irq__cfg_interrupt_di.value) == 0, "cfg_interrupt_di: INTA is 0"
            level = bool(d.irq__cfg_interrupt_assert.value)
            # [PCIe-3.0 7.5.1.2] Interrupt Status follows the INTx state; the message is sent
            # only with Interrupt Disable clear (as the block's later versions document), a
            # Deassert always [PCIe-3.0 7.5.1.1].
            fn.interrupt_status = level
            if level != self.inta and not (level and fn.interrupt_disable):
                self.intx_messages.append("Assert_INTA" if level else "Deassert_INTA")
                self.inta = level
                d.inta.value = int(level)

    def _drive(self, h):
        d = self.dut
        d.host__cfg_command.value = h.command
        d.host__cfg_dcommand.value = h.devctl
        d.host__cfg_bus_number.value = h.bus
        d.host__cfg_device_number.value = h.device
        d.host__cfg_function_number.value = h.function
        d.host__cfg_pmcsr_powerstate.value = h.power_state
        d.host__cfg_interrupt_msixenable.value = int(h.msix_enable)
        d.host__cfg_interrupt_msixfm.value = int(h.msix_mask)
        d.host__cfg_received_func_lvl_rst.value = 0
        d.irq__cfg_interrupt_msienable.value = int(bool(self.fn.msi_cap.msi_enable))

    async def sync_host(self):
        """Drive the ``cfg_*`` outputs from the function's registers, and tell the testbench."""
        self.host = await self.fn.host_config()
        self._drive(self.host)
        self.on_host_config(self.host)

    def _received_poisoned(self, tlp):
        """[PCIe-3.0 7.5.1.2] Detected Parity Error: set by the function that receives a
        Poisoned TLP, whatever error (if any) it is reported as; the model takes the block's
        transaction layer, which sees the EP bit of every TLP it forwards, to log it."""
        if tlp.ep and tlp.fmt_type in (TlpType.CFG_WRITE_0, TlpType.MEM_WRITE,
                                       TlpType.MEM_WRITE_64):
            self.fn.detected_parity_error = True

    async def upstream_recv(self, tlp):
        fn = self.fn
        if tlp.fmt_type in _CFG0:
            # [PCIe-3.0 2.2.6.2] The block captures its Bus Number from Type 0 requests.
            self.bus_num = tlp.completer_id.bus
            reg = tlp.address >> 2
            mine = tlp.completer_id.device == fn.device_num and \
                tlp.completer_id.function == fn.function_num
            if mine and rm.S7_EXT_CFG_CAP_PTR <= reg < rm.S7_WINDOW[1] // 4:
                # [PG054] The window: the user logic completes it.
                self._received_poisoned(tlp)
                await self.sync_host()
                await super().upstream_recv(tlp)
                return
            await fn.upstream_recv(tlp)
            await self.sync_host()
            return
        if tlp.fmt_type in _MEM:
            if fn.memory_space_enable and fn.match_bar(tlp.address) and \
                    self.host.power_state == 0:
                self._received_poisoned(tlp)
                await super().upstream_recv(tlp)
                return
        elif tlp.fmt_type in _CPL:
            await super().upstream_recv(tlp)
            return
        # Not forwarded: the block completes a non-posted request UR [PCIe-3.0 2.3.1] and
        # records it (Device Status UR Detected) [PCIe-3.0 6.2.3.2.4, 7.8.5].
        tlp.release_fc()
        fn.pcie_cap.unsupported_request_detected = True
        if tlp.fmt_type not in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64):
            cpl = Tlp.create_ur_completion_for_tlp(tlp, PcieId(self.bus_num, fn.device_num,
                                                               fn.function_num))
            slot = self._local.pop((int(tlp.requester_id), tlp.tag), None)
            if slot is not None:
                # Injected by the test (TlpShim.inject): its completion goes back to it.
                slot[1] = cpl
                slot[0].set()
                return
            await self.upstream_send(cpl)
