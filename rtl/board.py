# Ref: Xilinx PG054 v3.3, 7 Series FPGAs Integrated Block for PCI Express (pcie_7x); PCIe CEM / M.2
"""The board build for the Litefury and NiteFury-II: ``make board BOARD=litefury|nitefury``.

``python -m rtl.board --board litefury --link gen1x4 --out build/board/litefury`` writes:

- ``virtio_blk_<board>.v``: :class:`S7BoardTop`, the Amaranth top with the pcie_7x core as an
  ``Instance`` (module ``pcie_7x_0``, every port of the core's top level connected by name), the
  reference-clock buffer, PERST#, the user clock domain, :class:`~rtl.top.VirtioBlkS7Endpoint`
  with a block-RAM disk behind it, its interrupt and error ports on the core's and the LEDs;
- ``<board>.xdc``: the pins, from ``constraints/<board>.xdc``;
- ``build.tcl``: a Vivado batch script (non-project flow) that creates the pcie_7x IP with the
  settings below, synthesises, places (with the board's GT lane placement), routes, writes the
  bitstream and the SPI flash image, and the utilisation and timing reports;
- ``build.sh``: runs ``vivado -mode batch -source build.tcl`` in that directory.

It then runs ``build.sh`` if ``vivado`` is on ``PATH`` (``--vivado auto``, the default), and
otherwise says so in one line.

Where the facts come from (public sources; see each constant):

- [XCI] The pcie_7x v3.3 customisation parameter names (``CONFIG.*``) and their value formats
  are those of a Vivado 2018.1 ``pcie_7x_0.xci`` for an Artix-7 (github.com/defparam/BAR-Tender,
  ``fpga/vivado/BAR-Tender.srcs/sources_1/ip/pcie_7x_0/pcie_7x_0.xci``), whose
  ``pcie_7x_0_stub.v`` gives the core's top-level port list for the interface options set
  here (``en_ext_clk``/``shared_logic_in_core`` false: the PIPE clock inside the core, so no
  ``pipe_*`` ports; ``err_reporting_if``, ``cfg_fc_if``, ``rcv_msg_if`` false;
  ``pl_interface``, ``cfg_mgmt_if``, ``cfg_ctl_if``, ``cfg_status_if`` true;
  ``PCIe_Debug_Ports`` false).
- [litepcie] ``litepcie/phy/s7pciephy.py`` (github.com/enjoy-digital/litepcie): the same names
  (``Link_Speed``, ``Maximum_Link_Width``, ``Trgt_Link_Speed``, ``User_Clk_Freq``,
  ``Interface_Width``, ``Bar0_Scale``/``Bar0_Size``, ``MSIx_*``), MSIx table size "in hexa",
  the tie-offs of the core's inputs, and GT channels placed by their ``pipe_lane[n]`` cell.
- [connectal] cambridgehackers/connectal's pcie_7x Tcl: "MSIX Table and PBA offset here is
  multiplied by 8" (the attributes ``MSIX_CAP_TABLE_OFFSET``/``MSIX_CAP_PBA_OFFSET`` are the
  29-bit offset[31:3]), and ``Bar0_Scale {Kilobytes}``.
- [RHS] github.com/RHSResearchLLC/NiteFury-and-LiteFury (commit 6d1b851): parts
  (``xc7a100tfgg484-2L``, ``xc7a200tfbg484-2`` in the projects' ``project.xpr``), pins and
  GT placement (``early.xdc``), LEDs active low (``CodeBlinker.v``: ``LED_ON = 1'b0``; pins in
  ``normal.xdc``), the flash image (``mcs/out.prm``: BIN, SPIx4, 16 MB at 0), Gen2 x4 at
  100 MHz reference clock on ``PCIE_X0Y0`` (``Top_xdma_0_0.xci``).
- [PCIE2-EP] Xilinx's 7-series example design as Avnet keeps it (github.com/Avnet/hdl,
  ``IP/xilinx_pcie_2_1_ep_7x/src/xilinx_pcie_2_1_ep_7x.v`` and ``pcie_7x_0_support.v``,
  commits c088f46 and 9e0fb9a): the error reporting ports of ``pcie_7x_0`` by name, as wires
  with their widths (``cfg_err_tlp_cpl_header`` [47:0], ``cfg_err_aer_headerlog`` [127:0],
  ``cfg_aer_interrupt_msgnum`` [4:0], the others 1 bit), and the outputs among them
  (``cfg_err_cpl_rdy``, ``cfg_err_aer_headerlog_set``, ``cfg_aer_ecrc_check_en``,
  ``cfg_aer_ecrc_gen_en``) left open.
- [PCIE2-IP] A Vivado-generated 7-series PCIe core wrapper with every interface on (XDMA's
  ``pcie2_ip``, github.com/EEVengers/ThunderScope, ``Firmware/dso_top_fpga_module_unsigned/
  dso_top.srcs/sources_1/bd/design_1/ip/design_1_xdma_0_0/ip_0/sim/
  design_1_xdma_0_0_pcie2_ip.v``): the same ports with their directions (``input wire [47 :
  0] cfg_err_tlp_cpl_header``, ``output wire cfg_err_cpl_rdy``, ...), all of them, the AER
  ones included, in one bus interface, ``xilinx.com:interface:pcie2_cfg_err``.

- [ERR-STUB] A Vivado-generated stub of a ``pcie_7x_0`` with ``err_reporting_if`` true
  (github.com/CMU-SAFARI/DRAM-Bender, ``projects/ZC706/ZC706.srcs/sources_1/ip/pcie_7x_0/
  pcie_7x_0_stub.v``, its ``.xci`` with ``PARAM_VALUE.err_reporting_if`` true): the
  ``cfg_err_*`` and ``cfg_aer_*`` ports of :func:`pcie_7x_ports`, the same names, widths and
  directions; the option brings the AER ports too. The core's own top
  (``pcie_7x_0_pcie_7x.v`` in [XCI]'s project) wires ``cfg_err_ur``, ``cfg_err_cpl_abort``,
  ``cfg_err_posted``, ``cfg_err_locked``, ``cfg_err_tlp_cpl_header`` and ``cfg_err_cpl_rdy``
  straight to the PCIE_2_1 cell, which builds the UR/CA completion of a non-posted request
  from the header itself: the user logic sends none.
- [LEGACY] ``Legacy_Interrupt {INTA}`` with ``IntX_Generation`` true: DRAM-Bender's ``.xci``;
  ``Trgt_Link_Speed {4'h1}`` with ``Link_Speed {2.5_GT/s}``: public Tcl scripts for Gen1 cores.

What could not be confirmed from a public file, and is therefore checked in ``build.tcl``
after synthesis (the PCIE_2_1 cell's attributes are printed and, if Vivado derived something
else, set): that ``PCI_CFG_Space`` also points the core's last capability (MSI-X) at the user
space (``MSIX_CAP_NEXTPTR`` = 0xA8). A port list that differs from the core's makes Vivado's
elaboration of the top fail on the ``pcie_7x_0`` instance, which names every port.
"""

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass

from amaranth.back import verilog
from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import VARIANTS, DeviceParams
from .ramdisk import RamDisk
from .top import VirtioBlkS7Endpoint


__all__ = ["Board", "Link", "BOARDS", "LINKS", "DEFAULT_LINK", "PCIE_IP", "pcie_7x_ports",
           "pcie_7x_config", "S7BoardTop", "write_project", "main"]


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass(frozen=True)
class Board:
    """A board the build knows.

    ``part`` is Vivado's part name, ``xdc`` the constraints file under ``constraints/``,
    ``gt_locs`` the GTPE2 channel of each PIPE lane (the board routes the connector's lanes to
    the quad in another order than the core assumes), ``flash`` the configuration flash as
    Vivado's Hardware Manager names it, ``flash_mb`` the size ``write_cfgmem`` fills, and
    ``ramdisk_kib`` the block-RAM disk that fits next to the design.
    """
    name: str
    part: str
    xdc: str
    gt_locs: tuple
    flash: str
    flash_mb: int
    ramdisk_kib: int
    leds: int = 4


# [RHS early.xdc] PIPE lane n of the core -> GTPE2 channel, the same on both boards:
# pipe_lane[0] X0Y6, [1] X0Y4, [2] X0Y5, [3] X0Y7, block at PCIE_X0Y0.
_FURY_GT_LOCS = ("GTPE2_CHANNEL_X0Y6", "GTPE2_CHANNEL_X0Y4", "GTPE2_CHANNEL_X0Y5",
                 "GTPE2_CHANNEL_X0Y7")

BOARDS = {
    # [RHS] README: Litefury XC7A100T-L2FGG484E, 128 Mb or 256 Mb S25FL flash; 135 RAMB36: a
    # 256 KiB disk is 57 of them (rtl/synth.py's figure).
    "litefury": Board("litefury", "xc7a100tfgg484-2L", "litefury.xdc", _FURY_GT_LOCS,
                      "s25fl128sxxxxxx0-spi-x1_x2_x4", 16, 256),
    # [RHS] README: Nitefury-II XC7A200T-2FBG484E, 256 Mb flash; 365 RAMB36: a 1 MiB disk is
    # 228 of them.
    "nitefury": Board("nitefury", "xc7a200tfbg484-2", "nitefury.xdc", _FURY_GT_LOCS,
                      "s25fl256sxxxxxx0-spi-x1_x2_x4", 16, 1024),
}


@dataclass(frozen=True)
class Link:
    """A link configuration of the core: lanes, rate, and the AXI4-Stream width and clock."""
    name: str
    lanes: int
    speed: str          # CONFIG.Link_Speed
    target: str         # CONFIG.Trgt_Link_Speed (Link Control 2 Target Link Speed)
    data_width: int     # CONFIG.Interface_Width
    user_clk_mhz: int   # CONFIG.User_Clk_Freq


# [PG054] x4 at 64 bits: 125 MHz for 2.5 GT/s, 250 MHz for 5.0 GT/s (or 128 bits at 125 MHz,
# which the endpoint does not support yet: DeviceParams.data_width is 64).
LINKS = {
    "gen1x4": Link("gen1x4", 4, "2.5_GT/s", "4'h1", 64, 125),
    "gen2x4": Link("gen2x4", 4, "5.0_GT/s", "4'h2", 64, 250),
}
# Gen1 x4 by default: its 125 MHz user clock is within reach of the design today, the 250 MHz
# of Gen2 x4 at 64 bits is not yet (issue 12); the link trains at 2.5 GT/s with any host.
DEFAULT_LINK = "gen1x4"

PCIE_IP = "pcie_7x_0"           # the IP's module name (create_ip -module_name)
TOP_PREFIX = "virtio_blk_"


def _check_board(name):
    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}: BOARD must be one of "
                         f"{', '.join(sorted(BOARDS))}")
    return BOARDS[name]


def _check_link(name):
    if name not in LINKS:
        raise ValueError(f"unknown link {name!r}: LINK must be one of "
                         f"{', '.join(sorted(LINKS))}")
    return LINKS[name]


def pcie_7x_ports(link):
    """The core's top-level ports for the options :func:`pcie_7x_config` sets, as
    ``{name: (direction, width)}`` with direction ``"i"`` or ``"o"``: those of [XCI
    ``pcie_7x_0_stub.v``] (x1 at 64 bits; the lane and data widths scale), generated without
    the error reporting interface, and the ``cfg_err_*``/``cfg_aer_*`` ports that
    ``err_reporting_if`` adds, named and sized as in [PCIE2-EP] and [PCIE2-IP] (see the module
    docstring)."""
    n, w = link.lanes, link.data_width
    ports = {}

    def add(direction, width, *names):
        for name in names:
            ports[name] = (direction, width)
    add("o", n, "pci_exp_txp", "pci_exp_txn")
    add("i", n, "pci_exp_rxp", "pci_exp_rxn")
    add("i", 1, "sys_clk", "sys_rst_n")
    add("o", 1, "user_clk_out", "user_reset_out", "user_lnk_up", "user_app_rdy", "tx_cfg_req",
        "tx_err_drop", "s_axis_tx_tready", "m_axis_rx_tlast", "m_axis_rx_tvalid")
    add("o", 6, "tx_buf_av")
    add("i", w, "s_axis_tx_tdata")
    add("i", w // 8, "s_axis_tx_tkeep")
    add("i", 1, "s_axis_tx_tlast", "s_axis_tx_tvalid", "tx_cfg_gnt", "m_axis_rx_tready",
        "rx_np_ok", "rx_np_req")
    add("i", 4, "s_axis_tx_tuser")
    add("o", w, "m_axis_rx_tdata")
    add("o", w // 8, "m_axis_rx_tkeep")
    add("o", 22, "m_axis_rx_tuser")
    # Configuration management (cfg_mgmt_if) and status (cfg_status_if).
    add("o", 32, "cfg_mgmt_do")
    add("o", 1, "cfg_mgmt_rd_wr_done")
    add("i", 32, "cfg_mgmt_di")
    add("i", 4, "cfg_mgmt_byte_en")
    add("i", 10, "cfg_mgmt_dwaddr")
    add("i", 1, "cfg_mgmt_wr_en", "cfg_mgmt_rd_en", "cfg_mgmt_wr_readonly",
        "cfg_mgmt_wr_rw1c_as_rw")
    add("o", 16, "cfg_status", "cfg_command", "cfg_dstatus", "cfg_dcommand", "cfg_lstatus",
        "cfg_lcommand", "cfg_dcommand2")
    add("o", 3, "cfg_pcie_link_state")
    add("o", 1, "cfg_pmcsr_pme_en", "cfg_pmcsr_pme_status", "cfg_received_func_lvl_rst")
    add("o", 2, "cfg_pmcsr_powerstate")
    # Configuration control (cfg_ctl_if) and interrupts.
    add("i", 1, "cfg_trn_pending", "cfg_pm_halt_aspm_l0s", "cfg_pm_halt_aspm_l1",
        "cfg_pm_force_state_en", "cfg_interrupt", "cfg_interrupt_assert", "cfg_interrupt_stat",
        "cfg_turnoff_ok", "cfg_pm_wake", "cfg_pm_send_pme_to")
    add("i", 2, "cfg_pm_force_state")
    add("i", 64, "cfg_dsn")
    add("o", 1, "cfg_interrupt_rdy", "cfg_interrupt_msienable", "cfg_interrupt_msixenable",
        "cfg_interrupt_msixfm", "cfg_to_turnoff")
    add("i", 8, "cfg_interrupt_di", "cfg_ds_bus_number")
    add("o", 8, "cfg_interrupt_do", "cfg_bus_number")
    add("o", 3, "cfg_interrupt_mmenable", "cfg_function_number")
    add("i", 5, "cfg_pciecap_interrupt_msgnum", "cfg_ds_device_number")
    add("o", 5, "cfg_device_number")
    add("i", 3, "cfg_ds_function_number")
    add("o", 1, "cfg_bridge_serr_en", "cfg_slot_control_electromech_il_ctl_pulse",
        "cfg_root_control_syserr_corr_err_en", "cfg_root_control_syserr_non_fatal_err_en",
        "cfg_root_control_syserr_fatal_err_en", "cfg_root_control_pme_int_en",
        "cfg_aer_rooterr_corr_err_reporting_en", "cfg_aer_rooterr_non_fatal_err_reporting_en",
        "cfg_aer_rooterr_fatal_err_reporting_en", "cfg_aer_rooterr_corr_err_received",
        "cfg_aer_rooterr_non_fatal_err_received", "cfg_aer_rooterr_fatal_err_received")
    add("o", 7, "cfg_vc_tcvc_map")
    # Physical layer (pl_interface).
    add("i", 2, "pl_directed_link_change", "pl_directed_link_width")
    add("i", 1, "pl_directed_link_speed", "pl_directed_link_auton", "pl_upstream_prefer_deemph",
        "pl_transmit_hot_rst", "pl_downstream_deemph_source")
    add("o", 1, "pl_sel_lnk_rate", "pl_phy_lnk_up", "pl_link_upcfg_cap", "pl_link_gen2_cap",
        "pl_link_partner_gen2_supported", "pl_directed_change_done", "pl_received_hot_rst")
    add("o", 2, "pl_sel_lnk_width", "pl_lane_reversal_mode", "pl_rx_pm_state")
    add("o", 6, "pl_ltssm_state")
    add("o", 3, "pl_tx_pm_state", "pl_initial_link_width")
    # Error reporting (err_reporting_if) [PCIE2-EP, PCIE2-IP], with the AER ports that come with
    # it: the completer's errors go in here (and the core completes a rejected non-posted
    # request itself from cfg_err_tlp_cpl_header), the rest are tied 0.
    add("i", 1, "cfg_err_ecrc", "cfg_err_ur", "cfg_err_cpl_timeout", "cfg_err_cpl_unexpect",
        "cfg_err_cpl_abort", "cfg_err_posted", "cfg_err_cor", "cfg_err_atomic_egress_blocked",
        "cfg_err_internal_cor", "cfg_err_malformed", "cfg_err_mc_blocked", "cfg_err_poisoned",
        "cfg_err_norecovery", "cfg_err_locked", "cfg_err_acs", "cfg_err_internal_uncor")
    add("i", 48, "cfg_err_tlp_cpl_header")
    add("o", 1, "cfg_err_cpl_rdy")
    add("i", 128, "cfg_err_aer_headerlog")
    add("i", 5, "cfg_aer_interrupt_msgnum")
    add("o", 1, "cfg_err_aer_headerlog_set", "cfg_aer_ecrc_check_en", "cfg_aer_ecrc_gen_en")
    return ports


def _bar_size(size):
    """``(Bar0_Scale, Bar0_Size)`` for a BAR of ``size`` bytes [XCI: Kilobytes/Megabytes]."""
    if size >= 1 << 20:
        return "Megabytes", size >> 20
    return "Kilobytes", size >> 10


def pcie_7x_config(params, link):
    """The ``CONFIG.*`` values of the pcie_7x IP for ``params`` (``hard_ip="s7"``) and
    ``link``, as an ordered ``{name: value}``; every value comes from
    :class:`~model.params.DeviceParams` or :mod:`model.regmap` (the docstring of
    :class:`~rtl.top.VirtioBlkS7Endpoint` lists what the core must be built with)."""
    if params.hard_ip != "s7":
        raise ValueError(f"the board build needs DeviceParams(hard_ip=\"s7\"), not "
                         f"hard_ip={params.hard_ip!r}")
    if params.data_width != link.data_width:
        raise ValueError(f"link {link.name} has a {link.data_width}-bit interface, the "
                         f"endpoint {params.data_width} bits")
    bar_scale, bar_size = _bar_size(params.bar0_size)
    bir = "BAR_1:0" if params.bar0_64bit else "BAR_0"
    class_code = f"{rm.CLASS_CODE:06X}"
    return {
        "mode_selection":           "Advanced",
        "Device_Port_Type":         "PCI_Express_Endpoint_device",
        "PCIe_Blk_Locn":            "X0Y0",
        # The link and the user interface.
        "Maximum_Link_Width":       f"X{link.lanes}",
        "Link_Speed":               link.speed,
        "Trgt_Link_Speed":          link.target,
        "Interface_Width":          f"{link.data_width}_bit",
        "User_Clk_Freq":            str(link.user_clk_mhz),
        "Ref_Clk_Freq":             "100_MHz",
        # The core's interfaces: the port list of pcie_7x_ports().
        "en_ext_clk":               "false",
        "shared_logic_in_core":     "false",
        "en_ext_pipe_interface":    "false",
        # The error reporting interface: the function reports a request it rejects (UR, CA,
        # poisoned) on cfg_err_* and the core sends the completion of a non-posted one; without
        # these ports such a request would never be completed.
        "err_reporting_if":         "true",
        "cfg_fc_if":                "false",
        "rcv_msg_if":               "false",
        "pl_interface":             "true",
        "cfg_mgmt_if":              "true",
        "cfg_ctl_if":               "true",
        "cfg_status_if":            "true",
        "PCIe_Debug_Ports":         "false",
        # Identity [VIRTIO-1.2 4.1.2]: model.regmap and DeviceParams.
        "Vendor_ID":                f"{rm.VENDOR_ID:04X}",
        "Device_ID":                f"{rm.DEVICE_ID:04X}",
        "Revision_ID":              f"{params.revision_id:02X}",
        "Subsystem_Vendor_ID":      f"{params.subsystem_vendor_id:04X}",
        "Subsystem_ID":             f"{params.subsystem_id:04X}",
        "Use_Class_Code_Lookup_Assistant": "false",
        "Class_Code_Base":          class_code[0:2],
        "Class_Code_Sub":           class_code[2:4],
        "Class_Code_Interface":     class_code[4:6],
        # BAR0: the virtio structures, the MSI-X table and PBA.
        "Bar0_Enabled":             "true",
        "Bar0_Type":                "Memory",
        "Bar0_64bit":               "true" if params.bar0_64bit else "false",
        "Bar0_Prefetchable":        "false",
        "Bar0_Scale":               bar_scale,
        "Bar0_Size":                str(bar_size),
        # [PCIe-3.0 7.8.3] Max_Payload_Size Supported, encoded 0 = 128 B ... 5 = 4096 B.
        "Max_Payload_Size":         f"{128 << params.max_payload_size_supported}_bytes",
        # Interrupts: INTA# for a driver without MSI-X, the block's MSI structure kept where
        # model.regmap.S7_CAPS has it (0x48), MSI-X with the table and PBA in BAR0. The
        # offsets are in QWORDs (offset[31:3], [connectal]), the table size a count in hex
        # [litepcie].
        "IntX_Generation":          "true",
        "Legacy_Interrupt":         "INTA",
        "MSI_Enabled":              "true",
        "MSI_64b":                  "true",
        "Multiple_Message_Capable": "1_vector",
        "MSIx_Enabled":             "true",
        "MSIx_Table_Size":          f"{params.msix_table_size:X}",
        "MSIx_Table_Offset":        f"{rm.MSIX_TABLE_OFFSET >> 3:X}",
        "MSIx_Table_BIR":           bir,
        "MSIx_PBA_Offset":          f"{rm.MSIX_PBA_OFFSET >> 3:X}",
        "MSIx_PBA_BIR":             bir,
        # The virtio capabilities: configuration requests from EXT_CFG_CAP_PTR (a DW index) up
        # to 0xFF go to the user logic; no user extended space.
        "PCI_CFG_Space":            "true",
        "PCI_CFG_Space_Addr":       f"{rm.S7_EXT_CFG_CAP_PTR:02X}",
        "EXT_PCI_CFG_Space":        "false",
    }


class _Stretch(wiring.Component):
    """``o`` stays high for ``cycles`` after each cycle ``i`` is high (an activity LED)."""
    i: In(1)
    o: Out(1)

    def __init__(self, cycles):
        self.cycles = cycles
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(self.cycles + 1))
        with m.If(self.i):
            m.d.sync += count.eq(self.cycles)
        with m.Elif(count != 0):
            m.d.sync += count.eq(count - 1)
        m.d.comb += self.o.eq(count != 0)
        return m


class S7BoardTop(wiring.Component):
    """The FPGA top of a Litefury or NiteFury-II: the pcie_7x core and the endpoint behind it.

    - The 100 MHz reference clock from the M.2 connector goes through an ``IBUFDS_GTE2`` to the
      core's ``sys_clk``; PERST# (active low, from the host; a pull-up in the XDC) is the core's
      ``sys_rst_n``; CLKREQ# is driven low (the clock is wanted whenever the card is powered).
    - The ``sync`` domain is the core's ``user_clk_out`` (125 MHz for Gen1 x4, 250 MHz for Gen2
      x4 at 64 bits); its reset is ``user_reset_out`` or link down, registered in that clock
      (both are synchronous to it [PG054]), so a Hot Reset or a link loss resets the function.
    - :class:`~rtl.top.VirtioBlkS7Endpoint` takes ``m_axis_rx`` and drives ``s_axis_tx``; its
      ``host`` port is the core's ``cfg_*`` outputs of the same names; a
      :class:`~rtl.ramdisk.RamDisk` of ``ramdisk_kib`` KiB is its storage (what
      :class:`~rtl.top.VirtioBlkRamDiskCard` does for ``make synth``, behind the hard block).
    - The core's inputs the function does not drive are tied as Xilinx's PIO example and
      litepcie tie them: ``tx_cfg_gnt``, ``rx_np_ok``, ``rx_np_req`` high (the core may send
      its own TLPs at any time; non-posted requests are never held back), no configuration
      management access, none of the error reports the function does not make, no AER
      header log, no PM requests, no directed link changes,
      ``pl_upstream_prefer_deemph`` high. ``cfg_turnoff_ok`` follows ``cfg_to_turnoff`` a cycle
      later (the function has no state to save before a PME_Turn_Off). ``cfg_dsn`` (Device
      Serial Number) is a constant.
    - The endpoint's ``irq`` (:class:`~rtl.phy.s7_cfg.S7InterruptSignature`: INTx through
      :class:`~rtl.phy.s7_cfg.S7Interrupt` inside it, MSI when software enabled the block's
      MSI) and ``err`` (:class:`~rtl.phy.s7_cfg.S7ErrorSignature`: UR, CA and poisoned
      requests, which the core completes when they are non-posted) are connected member by
      member to the core's ports of the same names. ``intx``, the level ``irq`` follows, is
      left unused.
    - LEDs (active low on these boards [RHS]): 0 link up, 1 Bus Master Enable (the driver
      took the device), 2 MSI-X enabled, 3 TLP activity (stretched to about 0.1 s).

    Parameters
    ----------
    params : model.params.DeviceParams
        With ``hard_ip="s7"``; ``capacity`` is replaced by the RAM disk's size.
    link : Link
    ramdisk_kib : int
    leds : int

    Attributes
    ----------
    pcie_refclk_p, pcie_refclk_n : Signal(1), in
    pcie_perst_n : Signal(1), in
    pcie_clkreq_n : Signal(1), out
    pcie_rx_p, pcie_rx_n : Signal(lanes), in
    pcie_tx_p, pcie_tx_n : Signal(lanes), out
    led : Signal(leds), out
        Active low.

    Raises
    ------
    ValueError
        If ``params`` is not a ``hard_ip="s7"`` build of the link's data width, or the disk
        size is not a positive number of KiB.
    """
    def __init__(self, params, link, ramdisk_kib, leds=4):
        if not isinstance(ramdisk_kib, int) or ramdisk_kib < 1:
            raise ValueError(f"ramdisk_kib must be a positive integer, not {ramdisk_kib!r}")
        self.config = pcie_7x_config(params, link)      # checks params against link
        self.params = params.replace(capacity=ramdisk_kib * 1024 // rm.BLK_SECTOR_BYTES)
        self.link = link
        self.ramdisk_kib = ramdisk_kib
        n = link.lanes
        super().__init__({
            "pcie_refclk_p": In(1),
            "pcie_refclk_n": In(1),
            "pcie_perst_n":  In(1),
            "pcie_clkreq_n": Out(1),
            "pcie_rx_p":     In(n),
            "pcie_rx_n":     In(n),
            "pcie_tx_p":     Out(n),
            "pcie_tx_n":     Out(n),
            "led":           Out(leds),
        })

    def elaborate(self, platform):
        m = Module()
        p, link = self.params, self.link
        ports = pcie_7x_ports(link)
        # One signal per port of the core, named as the port.
        core = {name: Signal(width, name=name) for name, (_, width) in ports.items()}

        sys_clk = core["sys_clk"]
        m.submodules.refclk_ibuf = Instance(
            "IBUFDS_GTE2", i_I=self.pcie_refclk_p, i_IB=self.pcie_refclk_n, i_CEB=Const(0),
            o_O=sys_clk)
        m.d.comb += [
            core["sys_rst_n"].eq(self.pcie_perst_n),
            core["pci_exp_rxp"].eq(self.pcie_rx_p),
            core["pci_exp_rxn"].eq(self.pcie_rx_n),
            self.pcie_tx_p.eq(core["pci_exp_txp"]),
            self.pcie_tx_n.eq(core["pci_exp_txn"]),
            self.pcie_clkreq_n.eq(0),
        ]
        m.submodules.pcie_7x_0_i = Instance(
            PCIE_IP, **{f"{'i' if d == 'i' else 'o'}_{name}": core[name]
                        for name, (d, _) in ports.items()})

        # -- clock and reset ---------------------------------------------------------------------
        m.domains.pcie = ClockDomain("pcie", reset_less=True)
        m.domains.sync = ClockDomain("sync")
        reset = Signal(init=1)
        m.d.comb += [
            ClockSignal("pcie").eq(core["user_clk_out"]),
            ClockSignal("sync").eq(core["user_clk_out"]),
            ResetSignal("sync").eq(reset),
        ]
        m.d.pcie += reset.eq(core["user_reset_out"] | ~core["user_lnk_up"])

        # -- the endpoint and its disk -----------------------------------------------------------
        m.submodules.endpoint = ep = VirtioBlkS7Endpoint(p)
        m.submodules.disk = disk = RamDisk(p.capacity, p.data_width)
        wiring.connect(m, ep.storage, disk.storage)
        rx, tx = ep.m_axis_rx, ep.s_axis_tx
        m.d.comb += [
            rx.tdata.eq(core["m_axis_rx_tdata"]),
            rx.tkeep.eq(core["m_axis_rx_tkeep"]),
            rx.tvalid.eq(core["m_axis_rx_tvalid"]),
            rx.tlast.eq(core["m_axis_rx_tlast"]),
            rx.tuser.eq(core["m_axis_rx_tuser"]),
            core["m_axis_rx_tready"].eq(rx.tready),
            core["s_axis_tx_tdata"].eq(tx.tdata),
            core["s_axis_tx_tkeep"].eq(tx.tkeep),
            core["s_axis_tx_tvalid"].eq(tx.tvalid),
            core["s_axis_tx_tlast"].eq(tx.tlast),
            core["s_axis_tx_tuser"].eq(tx.tuser),
            tx.tready.eq(core["s_axis_tx_tready"]),
        ]
        for name in ep.host.signature.members:
            m.d.comb += getattr(ep.host, name).eq(core[name])

        # -- interrupts and errors: each member to the core's port of the same name -------------
        ep_to_core = set()
        for port in (ep.irq, ep.err):
            for name, member in port.signature.members.items():
                if member.flow == Out:
                    m.d.comb += core[name].eq(getattr(port, name))
                    ep_to_core.add(name)
                else:
                    m.d.comb += getattr(port, name).eq(core[name])

        # -- the core's other inputs -------------------------------------------------------------
        tied = {"tx_cfg_gnt": 1, "rx_np_ok": 1, "rx_np_req": 1, "pl_upstream_prefer_deemph": 1,
                # A serial number of our own: "virtio-b" in ASCII, a placeholder per build.
                "cfg_dsn": int.from_bytes(b"virtio-b", "big")}
        driven = {"sys_clk", "sys_rst_n", "pci_exp_rxp", "pci_exp_rxn", "m_axis_rx_tready",
                  "s_axis_tx_tdata", "s_axis_tx_tkeep", "s_axis_tx_tvalid", "s_axis_tx_tlast",
                  "s_axis_tx_tuser", "cfg_turnoff_ok"} | ep_to_core
        for name, (d, _) in ports.items():
            if d == "i" and name not in driven:
                m.d.comb += core[name].eq(tied.get(name, 0))
        m.d.sync += core["cfg_turnoff_ok"].eq(core["cfg_to_turnoff"])

        # -- LEDs --------------------------------------------------------------------------------
        activity = _Stretch(link.user_clk_mhz * 100_000)     # about 0.1 s
        m.submodules.activity = activity
        m.d.comb += activity.i.eq((rx.tvalid & rx.tready) | (tx.tvalid & tx.tready))
        status = [
            core["user_lnk_up"],
            core["cfg_command"][2],                     # Bus Master Enable
            core["cfg_interrupt_msixenable"],
            activity.o,
        ]
        for k in range(len(self.led)):
            m.d.comb += self.led[k].eq(~status[k] if k < len(status) else 1)
        return m


# -- the project files ---------------------------------------------------------------------------

def _tcl_config(config):
    return "\n".join(f"    CONFIG.{name} {{{value}}} \\" for name, value in config.items())


def build_tcl(board, link, top, config, params):
    """The Vivado batch script, as text."""
    locs = " ".join(f"{lane} {site}" for lane, site in enumerate(board.gt_locs))
    window = rm.S7_WINDOW[0]
    return f"""\
# Written by rtl/board.py ({board.name}, {link.name}): edit that, not this.
# vivado -mode batch -source build.tcl   (in this directory; build.sh does it)
#
# Non-project flow: the pcie_7x IP with the settings of rtl.board.pcie_7x_config(), then
# synthesis, implementation, bitstream and SPI flash image, reports in this directory.

set here [file dirname [file normalize [info script]]]
set part {board.part}
set top  {top}
cd $here
create_project -in_memory -part $part
file mkdir $here/ip

# -- the PCIe hard block: pcie_7x ({link.lanes} lanes, {link.speed}, {link.data_width}-bit AXI at {link.user_clk_mhz} MHz)
# CONFIG.err_reporting_if {{true}} adds the cfg_err_*/cfg_aer_* ports the top connects (the
# function reports UR/CA there and the core completes those requests); the port list is that
# of a public stub of a core generated with it (rtl/board.py, [ERR-STUB]). If elaboration
# fails on a pcie_7x_0 port, compare with ip/{PCIE_IP}/{PCIE_IP}_stub.v.
create_ip -name pcie_7x -vendor xilinx.com -library ip -module_name {PCIE_IP} -dir $here/ip -force
set_property -dict [list \\
{_tcl_config(config)}
] [get_ips {PCIE_IP}]
# Synthesised with the design (not out of context), so that its PCIE_2_1 cell can be checked
# below.
set_property generate_synth_checkpoint false [get_files {PCIE_IP}.xci]
generate_target {{synthesis instantiation_template}} [get_ips {PCIE_IP}]

read_verilog $here/$top.v
read_xdc $here/{board.xdc}
synth_design -top $top -part $part
write_checkpoint -force $here/post_synth.dcp

# -- the hard block's attributes the virtio window depends on ------------------------------------
# The core hands configuration requests from EXT_CFG_CAP_PTR (DW {rm.S7_EXT_CFG_CAP_PTR:#04x}) up to 0xFF to
# the user logic (PCI_CFG_Space_Addr), and its last capability, MSI-X, must link to the first
# virtio capability at {window:#04x} (MSIX_CAP_NEXTPTR). Whether the IP derives the second from the
# first could not be confirmed from public files: check both, and set what differs.
set pcie [get_cells -hierarchical -filter {{REF_NAME == PCIE_2_1}}]
if {{[llength $pcie] != 1}} {{ error "expected one PCIE_2_1 cell, found [llength $pcie]" }}
foreach {{attr want}} {{EXT_CFG_CAP_PTR 6'h{rm.S7_EXT_CFG_CAP_PTR:02X} MSIX_CAP_NEXTPTR 8'h{window:02X} MSIX_CAP_TABLE_OFFSET 29'h{rm.MSIX_TABLE_OFFSET >> 3:X} MSIX_CAP_PBA_OFFSET 29'h{rm.MSIX_PBA_OFFSET >> 3:X}}} {{
    set have [get_property $attr $pcie]
    scan [regsub {{^.*'h}} $want {{}}] %x w
    if {{[scan [regsub {{^.*'h}} $have {{}}] %x h] != 1}} {{ set h -1 }}
    if {{$w != $h}} {{
        puts "board: PCIE_2_1 $attr is $have, setting $want"
        set_property $attr $want $pcie
    }} else {{
        puts "board: PCIE_2_1 $attr = $have"
    }}
}}

# -- the board's lane order ([RHS] early.xdc): PIPE lane -> GTPE2 channel --------------------------
set gt_locs [dict create {locs}]
set gts [get_cells -hierarchical -filter {{REF_NAME == GTPE2_CHANNEL}}]
if {{[llength $gts] != {link.lanes}}} {{ error "expected {link.lanes} GTPE2_CHANNEL cells, found [llength $gts]" }}
reset_property LOC $gts
foreach gt $gts {{
    if {{![regexp {{pipe_lane\\[(\\d+)\\]}} $gt -> lane]}} {{ error "no PIPE lane in $gt" }}
    set_property LOC [dict get $gt_locs $lane] $gt
    puts "board: $gt -> [dict get $gt_locs $lane]"
}}

opt_design
place_design
phys_opt_design
route_design
write_checkpoint -force $here/post_route.dcp
report_utilization -file $here/utilization.rpt
report_utilization -hierarchical -file $here/utilization_hier.rpt
report_timing_summary -max_paths 20 -file $here/timing_summary.rpt
report_clocks -file $here/clocks.rpt

write_bitstream -force $here/$top.bit
# [RHS] mcs/out.prm: BIN, SPIx4, {board.flash_mb} MB, bitstream at 0.
write_cfgmem -force -format bin -interface SPIx4 -size {board.flash_mb} -loadbit "up 0x0 $here/$top.bit" -file $here/$top.bin
write_cfgmem -force -format mcs -interface SPIx4 -size {board.flash_mb} -loadbit "up 0x0 $here/$top.bit" -file $here/$top.mcs

set wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]
puts "board: wrote $here/$top.bit and $top.bin; worst setup slack $wns ns (timing_summary.rpt)"
"""


BUILD_SH = """\
#!/bin/sh
# Written by rtl/board.py: runs the Vivado batch build of this directory.
set -e
cd "$(dirname "$0")"
exec vivado -mode batch -nojournal -log vivado.log -source build.tcl
"""


def write_project(board_name, link_name=DEFAULT_LINK, out_dir=None, ramdisk_kib=None,
                  params=None):
    """Write the project for ``board_name`` into ``out_dir`` (default
    ``build/board/<board>``); returns ``{kind: path}`` of the files written.

    Raises
    ------
    ValueError
        If the board or link is unknown.
    """
    board = _check_board(board_name)
    link = _check_link(link_name)
    if out_dir is None:
        out_dir = os.path.join("build", "board", board.name)
    if params is None:
        params = VARIANTS["virtio_blk_ep_s7"]
    if not isinstance(params, DeviceParams):
        raise TypeError(f"params must be a DeviceParams, not {params!r}")
    kib = board.ramdisk_kib if ramdisk_kib is None else ramdisk_kib
    top_name = TOP_PREFIX + board.name
    top = S7BoardTop(params, link, kib, board.leds)
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    files["verilog"] = os.path.join(out_dir, f"{top_name}.v")
    with open(files["verilog"], "w") as f:
        f.write(verilog.convert(top, name=top_name, emit_src=False))
    files["xdc"] = os.path.join(out_dir, board.xdc)
    shutil.copyfile(os.path.join(_ROOT, "constraints", board.xdc), files["xdc"])
    files["tcl"] = os.path.join(out_dir, "build.tcl")
    with open(files["tcl"], "w") as f:
        f.write(build_tcl(board, link, top_name, top.config, top.params))
    files["sh"] = os.path.join(out_dir, "build.sh")
    with open(files["sh"], "w") as f:
        f.write(BUILD_SH)
    os.chmod(files["sh"], 0o755)
    return files


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Write the Vivado project of a board build; run it if Vivado is on PATH.")
    parser.add_argument("--board", default="litefury",
                        help=f"one of {', '.join(sorted(BOARDS))} (default: %(default)s)")
    parser.add_argument("--link", default=DEFAULT_LINK,
                        help=f"one of {', '.join(sorted(LINKS))} (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output directory (default: "
                        "build/board/<board>)")
    parser.add_argument("--ramdisk-kib", type=int, default=None,
                        help="size of the block-RAM disk (default: the board's)")
    parser.add_argument("--vivado", choices=("auto", "never"), default="auto",
                        help="auto: run Vivado if it is on PATH (default); never: only write")
    args = parser.parse_args(argv)
    try:
        files = write_project(args.board, args.link, args.out, args.ramdisk_kib)
    except ValueError as e:
        print(f"board: error: {e}", file=sys.stderr)
        return 2
    out = os.path.dirname(files["tcl"])
    written = ", ".join(os.path.basename(p) for p in files.values())
    run = f"sh {shlex.quote(files['sh'])}"
    vivado = shutil.which("vivado") if args.vivado == "auto" else None
    if vivado is None:
        why = "vivado is not on PATH" if args.vivado == "auto" else "--vivado never"
        print(f"board: {why}: wrote {written} in {out}/ and ran nothing; with Vivado, "
              f"run: {run}")
        return 0
    print(f"board: wrote {written} in {out}/; running {vivado} (build.sh)")
    return subprocess.call(["sh", files["sh"]])


if __name__ == "__main__":
    sys.exit(main())
