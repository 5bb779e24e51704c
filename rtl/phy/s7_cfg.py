# Ref: Xilinx PG054 v3.3, 7 Series FPGAs Integrated Block for PCI Express, Configuration Interface
"""The part of the 7-series PCIe hard block's configuration interface a function behind it needs.

The "7 Series FPGAs Integrated Block for PCI Express" (``pcie_7x``) owns the type-0 header, the
BARs and its own capability structures (PM, MSI, PCI Express, MSI-X; see
:data:`model.regmap.S7_CAPS`), and tells the user logic what software wrote there through
``cfg_*`` outputs, synchronous to ``user_clk_out``. The names and widths below are the core's
own, as its top-level module declares them (``<core>_pcie2_top.v`` / ``pcie_7x_0_core_top.v``
of "Series-7 Integrated Block for PCI Express" v3.3, section "4. Configuration (CFG)
Interface" of the port list, found in public XDMA and pcie_7x projects): a board wrapper
connects each member to the port of the same name.

What the core does *not* do for the function, and the function therefore does itself
(``DeviceParams(hard_ip="s7")``, :class:`rtl.top.VirtioBlkS7Endpoint`):

- the configuration window from ``EXT_CFG_CAP_PTR`` (:data:`model.regmap.S7_WINDOW`, bytes
  0xA8 to 0xFF): CfgRd0/CfgWr0 TLPs there arrive on ``m_axis_rx`` and the user logic sends
  their completions on ``s_axis_tx``;
- MSI-X messages: the core holds the MSI-X capability structure only (Message Control, and the
  Table and PBA BIR/offset attributes ``MSIX_CAP_TABLE_*``/``MSIX_CAP_PBA_*``); the table and
  the PBA live in the user's BAR, and the user logic sends each message as a Memory Write on
  ``s_axis_tx`` when ``cfg_interrupt_msixenable`` is set and ``cfg_interrupt_msixfm`` clear
  (its ``cfg_interrupt`` handshake serves INTx and MSI, which the block formats itself);
- Function Level Reset: Vivado generates the core with ``DEV_CAP_FUNCTION_LEVEL_RESET_CAPABLE
  = "FALSE"`` (every generated 7-series wrapper seen sets it so, and the customization GUI has
  no option for it), so Device Capabilities advertises no FLR and software never starts one.
  The core still has an output, ``cfg_received_func_lvl_rst``, for a core built with the
  attribute set; the function takes it (a rising edge resets it as an FLR would), and a board
  with the default core ties nothing to it but the core's output, which stays low.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import Out


__all__ = ["S7ConfigSignature"]


class S7ConfigSignature(wiring.Signature):
    """The ``cfg_*`` outputs of ``pcie_7x`` a function behind it takes, as the hard block drives
    them (all ``Out``; the function's port is ``In(S7ConfigSignature())``).

    Members
    -------
    cfg_command : Signal(16), out
        The Command register [PCI-3.0 6.2.2]: Memory Space Enable (bit 1) gates BAR0, Bus
        Master Enable (bit 2) every request the function sends, INTx Disable (bit 10) ``intx``.
    cfg_dcommand : Signal(16), out
        PCI Express Device Control [PCIe-3.0 7.8.4]: Max_Payload_Size (7:5), Extended Tag Field
        Enable (8), Max_Read_Request_Size (14:12) for the DMA engines.
    cfg_bus_number : Signal(8), out
    cfg_device_number : Signal(5), out
    cfg_function_number : Signal(3), out
        The function's Routing ID, captured by the block from Configuration Writes
        [PCIe-3.0 2.2.6.2]: the Requester ID of the function's requests and the Completer ID
        of its completions.
    cfg_pmcsr_powerstate : Signal(2), out
        PMCSR PowerState [PCI-PM 1.2 3.2.4]; BAR0 is not decoded in D3hot (3).
    cfg_interrupt_msixenable : Signal(1), out
        MSI-X Enable of the block's MSI-X capability [PCIe-3.0 7.7].
    cfg_interrupt_msixfm : Signal(1), out
        Its Function Mask.
    cfg_received_func_lvl_rst : Signal(1), out
        Function Level Reset received (only with ``DEV_CAP_FUNCTION_LEVEL_RESET_CAPABLE``; see
        the module docstring). Its rising edge resets the function.
    """
    def __init__(self):
        super().__init__({
            "cfg_command":               Out(16),
            "cfg_dcommand":              Out(16),
            "cfg_bus_number":            Out(8),
            "cfg_device_number":         Out(5),
            "cfg_function_number":       Out(3),
            "cfg_pmcsr_powerstate":      Out(2),
            "cfg_interrupt_msixenable":  Out(1),
            "cfg_interrupt_msixfm":      Out(1),
            "cfg_received_func_lvl_rst": Out(1),
        })
