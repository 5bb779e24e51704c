# Ref: PCI Local Bus 3.0 section 6; PCIe Base 3.0 sections 7.5, 7.7, 7.8; virtio 1.2 4.1.4.9
"""Type-0 configuration space, built from the register table in :mod:`model.regmap`."""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from .regport import RegisterSignature, byte_mask
from .phy.s7_cfg import S7ConfigSignature


__all__ = ["ConfigSpace"]


class ConfigSpace(wiring.Component):
    """The function's configuration space (4 KiB; the extended part reads 0).

    Every DW of :func:`model.regmap.config_registers` with writable or write-1-to-clear bits is a
    register; the others are constants. Besides the table, the component implements the
    power-state rule of PMCSR, the Interrupt Status bit, the error bits set by the completer,
    and the virtio PCI_CFG window, which it forwards to BAR0 through ``bar``.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    bus : RegisterSignature(10), in
        Configuration accesses by DW index (0 to 1023).
    bar : RegisterSignature(bar_addr_width), out
        BAR0 accesses made on behalf of ``pci_cfg_data`` [VIRTIO-1.2 4.1.4.9].
    command : Signal(16), out
        The Command register.
    bar0_base : Signal(64), out
        BAR0 base address (the size bits read as 0).
    devctl : Signal(16), out
        PCI Express Device Control: Max_Payload_Size, Max_Read_Request_Size, Extended Tag.
    power_state : Signal(2), out
        PMCSR PowerState: 0 = D0, 3 = D3hot.
    msix_enable, msix_mask : Signal(1), out
        MSI-X Enable and Function Mask.
    intx_pending : Signal(1), in
        The function's INTx state, reported in Status.Interrupt Status.
    ur_detected, target_abort : Signal(1), in
        Pulses that set Device Status.Unsupported Request Detected and Status.Signaled Target
        Abort.
    poisoned_received : Signal(1), in
        A pulse for each poisoned TLP received: sets Status.Detected Parity Error.
    flr : Signal(1), out
        A pulse, from a register, the cycle after software set Initiate Function Level Reset
        [PCIe-3.0 7.8.4]: the configuration space is back at reset in the next cycle (but for
        :data:`model.regmap.FLR_KEEPS`); the rest of the function resets on this pulse.
    host : S7ConfigSignature, in (``params.hard_ip`` only)
        The hard block's ``cfg_*`` outputs. Behind a hard block the table holds only the
        window's capabilities (:func:`model.regmap.config_registers`); ``command``,
        ``devctl``, ``power_state``, ``msix_enable`` and ``msix_mask`` are the block's,
        ``bar0_base`` is 0 (the block decodes the BARs), the error events are not recorded
        (the status registers are the block's), and ``flr`` pulses on a rising edge of
        ``cfg_received_func_lvl_rst``, resetting the window's registers.
    """
    def __init__(self, params):
        self.params = params
        self.regs = rm.config_registers(params)
        self._dw = {r.name: dw for dw, r in self.regs.items()}
        bar_addr_width = params.bar0_dw_bits
        super().__init__({
            "bus":          In(RegisterSignature(10)),
            "bar":          Out(RegisterSignature(bar_addr_width)),
            "command":      Out(16),
            "bar0_base":    Out(64),
            "devctl":       Out(16),
            "power_state":  Out(2),
            "msix_enable":  Out(1),
            "msix_mask":    Out(1),
            "intx_pending": In(1),
            "ur_detected":  In(1),
            "target_abort": In(1),
            "poisoned_received": In(1),
            "flr":          Out(1),
            **({"host": In(S7ConfigSignature())} if params.hard_ip else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params

        # One register per DW that software or hardware can change.
        store = {}
        for dw, r in self.regs.items():
            if r.wmask | r.w1c:
                store[dw] = Signal(32, init=r.reset, name=f"cfg_{r.name.replace('-', '_')}")

        def value(dw):
            r = self.regs[dw]
            live = r.wmask | r.w1c
            if not live:
                return Const(r.reset, 32)
            return (store[dw] & live) | (r.reset & ~live & 0xffffffff)

        def field(name):
            return value(self._dw[name])

        if p.hard_ip:
            # The hard block's registers, from its cfg_* outputs (rtl/phy/s7_cfg.py).
            host = self.host
            flr_level = Signal()
            m.d.sync += flr_level.eq(host.cfg_received_func_lvl_rst)
            m.d.comb += [
                self.command.eq(host.cfg_command),
                self.devctl.eq(host.cfg_dcommand),
                self.power_state.eq(host.cfg_pmcsr_powerstate),
                self.msix_enable.eq(host.cfg_interrupt_msixenable),
                self.msix_mask.eq(host.cfg_interrupt_msixfm),
                self.bar0_base.eq(0),
                self.flr.eq(host.cfg_received_func_lvl_rst & ~flr_level),
            ]
        else:
            m.d.comb += [
                self.command.eq(field("command_status")[:16]),
                self.devctl.eq(field("pcie_devctl_devsta")[:16]),
                self.power_state.eq(field("pm_csr")[:2]),
            ]
            base = field("bar0")[4:32] << 4
            if p.bar0_64bit:
                base = Cat(base[:32], field("bar1"))
            m.d.comb += self.bar0_base.eq(base & ~(p.bar0_size - 1) & ((1 << 64) - 1))
            if p.msix:
                m.d.comb += [
                    self.msix_enable.eq(field("msix_cap")[31]),
                    self.msix_mask.eq(field("msix_cap")[30]),
                ]

        # -- PCI_CFG window [VIRTIO-1.2 4.1.4.9] ---------------------------------------------
        cap = rm.find_cap(p, "virtio-pci-cfg")
        w_bar = value((cap.offset + 4) // 4)[:8]
        w_off = value((cap.offset + 8) // 4)
        w_len = value((cap.offset + 12) // 4)
        data_dw = (cap.offset + 16) // 4
        w_valid = Signal()
        w_lanes = Signal(4)
        m.d.comb += [
            # bar 0, length 1/2/4, offset a multiple of length, the whole access inside BAR0.
            w_valid.eq((w_bar == 0) &
                       (((w_len == 1)) |
                        ((w_len == 2) & (w_off[0] == 0)) |
                        ((w_len == 4) & (w_off[:2] == 0))) &
                       (w_off < p.bar0_size)),
            w_lanes.eq(Mux(w_len == 1, 0b0001, Mux(w_len == 2, 0b0011, 0b1111)) << w_off[:2]),
        ]
        shift = Cat(Const(0, 3), w_off[:2])          # byte lane * 8
        len_mask = Mux(w_len == 1, 0xff, Mux(w_len == 2, 0xffff, 0xffffffff))

        # -- reads: answered in the second cycle (below) --------------------------------------
        r_data = Signal(32)
        window_read = Signal()      # the previous cycle read pci_cfg_data through the window
        m.d.sync += window_read.eq(0)
        with m.If(self.bus.r_stb):
            with m.Switch(self.bus.addr):
                for dw in self.regs:
                    with m.Case(dw):
                        v = value(dw)
                        if self.regs[dw].special == "status":
                            v = v | Cat(Const(0, 16 + 3), self.intx_pending)
                        m.d.sync += r_data.eq(v)
                        if self.regs[dw].special == "pci_cfg_data":
                            with m.If(w_valid & (self.bus.be != 0)):
                                m.d.sync += window_read.eq(1)
                                m.d.comb += [
                                    self.bar.r_stb.eq(1),
                                    self.bar.addr.eq(w_off[2:]),
                                    self.bar.be.eq(w_lanes),
                                ]
                with m.Default():
                    m.d.sync += r_data.eq(0)

        # Reads answer in the second cycle after `r_stb`: BAR0 answers the window's read then
        # (its requests are registered, rtl/top.py); `r_data` holds every other answer until
        # the next read.
        # "store the first cap.length bytes in pci_cfg_data"
        window_data = Signal(32)
        window_ready = Signal()     # BAR0's answer to the window's read is here
        m.d.sync += window_ready.eq(window_read)
        m.d.comb += window_data.eq((store[data_dw] & ~len_mask) |
                                   ((self.bar.r_data >> shift) & len_mask))
        with m.If(window_ready):
            m.d.sync += store[data_dw].eq(window_data)
            m.d.comb += self.bus.r_data.eq(window_data)
        with m.Else():
            m.d.comb += self.bus.r_data.eq(r_data)

        # -- writes ----------------------------------------------------------------------------
        mask = byte_mask(self.bus.be)
        w = self.bus.w_data
        with m.If(self.bus.w_stb):
            with m.Switch(self.bus.addr):
                for dw, r in self.regs.items():
                    if dw not in store:
                        continue
                    with m.Case(dw):
                        wmask = Signal(32, name=f"wmask_{dw}")
                        m.d.comb += wmask.eq(mask & r.wmask)
                        if r.special == "pmcsr":
                            # [PCI-PM 1.2 3.2.4] Writes of D1/D2 (unsupported) are discarded.
                            with m.If((w[:2] == 1) | (w[:2] == 2)):
                                m.d.comb += wmask.eq(mask & r.wmask & ~0x3)
                        merged = (store[dw] & ~wmask) | (w & wmask)
                        m.d.sync += store[dw].eq(merged & ~(w & mask & r.w1c))
                        if r.special == "pci_cfg_data":
                            with m.If(w_valid & (self.bus.be != 0)):
                                # BAR0 registers the request (rtl/top.py).
                                m.d.comb += [
                                    self.bar.w_stb.eq(1),
                                    self.bar.addr.eq(w_off[2:]),
                                    self.bar.be.eq(w_lanes),
                                    self.bar.w_data.eq((merged & len_mask) << shift),
                                ]

        # -- Function Level Reset [PCIe-3.0 6.6.2] --------------------------------------------
        # The write that initiates it completes normally (the completer answers from the
        # request), and lands like any other; `flr` is a register, so the function is at reset
        # from the cycle after next, Bus Master Enable clear (before the write's completion
        # has left: the completer takes at least two cycles to send it). Registered because it
        # is the reset of every register of the function: as a decode of the write strobe it
        # was among the longest paths (issue 12). Behind a hard block the FLR is the block's
        # (above), and resets the window.
        devctl_dw = self._dw.get("pcie_devctl_devsta")
        if not p.hard_ip:
            m.d.sync += self.flr.eq(self.bus.w_stb & (self.bus.addr == devctl_dw) &
                                    self.bus.be[1] & w[15])
        with m.If(self.flr):
            for dw, sig in store.items():
                r = self.regs[dw]
                keep = rm.FLR_KEEPS.get(r.name, 0)
                # Kept fields keep what the write put there (Max_Payload_Size).
                m.d.sync += sig.eq((sig & keep) | (r.reset & ~keep & 0xffffffff))

        # -- events from the completer (after the write, so a write-1-to-clear in the same
        # cycle loses to a new event) --------------------------------------------------------
        if p.hard_ip:
            return m
        with m.If(self.ur_detected):
            dw = self._dw["pcie_devctl_devsta"]
            m.d.sync += store[dw][16 + 3].eq(1)
        with m.If(self.target_abort):
            dw = self._dw["command_status"]
            m.d.sync += store[dw][16 + 11].eq(1)
        with m.If(self.poisoned_received):
            # [PCIe-3.0 7.5.1.2] Detected Parity Error: set on receiving a Poisoned TLP,
            # whatever Parity Error Response says.
            dw = self._dw["command_status"]
            m.d.sync += store[dw][16 + 15].eq(1)

        return m
