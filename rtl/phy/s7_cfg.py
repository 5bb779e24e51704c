# Ref: Xilinx PG054 v3.3, 7 Series FPGAs Integrated Block for PCI Express, Configuration Interface
#      and Interrupt Interface; PCIe Base 3.0 2.2.8.1 (INTx Interrupt Signaling)
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
  (its ``cfg_interrupt`` handshake serves INTx and MSI, which the block formats itself:
  :class:`S7Interrupt` turns the function's INTA# level into those requests);
- the block's own MSI capability (0x48, on in Vivado's default customization) is kept, not
  disabled (the core's ``MSI_Enabled`` parameter, with ``mode_selection`` "Advanced", would
  remove it: litepcie's ``S7PCIEPHY`` does so for its MSI-X builds): a virtio driver never
  enables it (Linux's ``vp_find_vqs`` tries MSI-X, then falls back to INTx), and if software
  does, :class:`S7Interrupt` asks for one MSI per rising edge of the level, so the function
  still interrupts. Removing it would move the list the tests and drivers walk for nothing;
- Function Level Reset: Vivado generates the core with ``DEV_CAP_FUNCTION_LEVEL_RESET_CAPABLE
  = "FALSE"`` (every generated 7-series wrapper seen sets it so, and the customization GUI has
  no option for it), so Device Capabilities advertises no FLR and software never starts one.
  The core still has an output, ``cfg_received_func_lvl_rst``, for a core built with the
  attribute set; the function takes it (a rising edge resets it as an FLR would), and a board
  with the default core ties nothing to it but the core's output, which stays low.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["S7ConfigSignature", "S7InterruptSignature", "S7Interrupt", "S7CplHeader",
           "S7ErrorSignature"]


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


class S7InterruptSignature(wiring.Signature):
    """The interrupt request ports of ``pcie_7x`` as the user logic drives them (the user
    logic's port is ``Out(S7InterruptSignature())``; a board wrapper connects each member to the
    core's port of the same name).

    Members
    -------
    cfg_interrupt : Signal(1), out
        Request: held until ``cfg_interrupt_rdy`` (a valid/ready handshake, as litepcie's
        ``S7PCIEPHY`` drives it from a stream's ``valid``/``ready``).
    cfg_interrupt_rdy : Signal(1), in
        The core took the request.
    cfg_interrupt_assert : Signal(1), out
        With MSI off: 1 asks for Assert_INTA, 0 for Deassert_INTA [PCIe-3.0 2.2.8.1]. Stable
        while ``cfg_interrupt`` is held.
    cfg_interrupt_di : Signal(8), out
        With MSI on: the message's vector (the low bits of its data); 0 here, one vector.
        With MSI off: which of INTA..INTD, 0 for INTA (the header's Interrupt Pin is 1).
    cfg_interrupt_msienable : Signal(1), in
        MSI Enable of the block's MSI capability: the core then sends an MSI for a request
        instead of an INTx message.
    cfg_interrupt_stat : Signal(1), out
        Tied 0 (the core's Interrupt Status bit follows the INTx state it sends).
    """
    def __init__(self):
        super().__init__({
            "cfg_interrupt":           Out(1),
            "cfg_interrupt_rdy":       In(1),
            "cfg_interrupt_assert":    Out(1),
            "cfg_interrupt_di":        Out(8),
            "cfg_interrupt_msienable": In(1),
            "cfg_interrupt_stat":      Out(1),
        })


class S7Interrupt(wiring.Component):
    """The function's INTA# level turned into the 7-series block's ``cfg_interrupt`` requests.

    [PCIe-3.0 2.2.8.1] INTx is a virtual wire: an Assert_INTA message when the level rises, a
    Deassert_INTA when it falls. The core sends them for the user logic: it asks with
    ``cfg_interrupt`` and ``cfg_interrupt_assert`` (1 to assert, 0 to deassert) and holds both
    until ``cfg_interrupt_rdy``. One request is in flight at a time; a level that changes
    back and forth during a request is followed once the request is taken (the messages
    alternate Assert, Deassert, and the last one matches the level).

    When software enabled the block's MSI capability (``cfg_interrupt_msienable``; no virtio
    driver does: Linux's virtio_pci uses MSI-X or INTx), each rising edge of the level is one
    MSI request (``cfg_interrupt_assert`` 0, vector 0) and no INTx message is asked for
    [PCIe-3.0 6.1.4.3: a function with MSI enabled does not use INTx]. With MSI on, a request
    *is* an MSI, so an INTA# asserted when software enables MSI cannot be deasserted through
    the handshake: it is forgotten (``asserted`` falls) and what the core does with its INTx
    state then is the core's (PG054 does not say; Linux sets INTx Disable with MSI Enable,
    which makes our level fall first unless the two writes race).

    Attributes
    ----------
    intx : Signal(1), in
        The function's INTA# level (:attr:`rtl.top.VirtioBlkEndpoint.intx`).
    irq : S7InterruptSignature, out
        To the core.
    asserted : Signal(1), out
        INTA# as the core has taken it (the last request taken was an Assert).
    """
    intx:     In(1)
    irq:      Out(S7InterruptSignature())
    asserted: Out(1)

    def elaborate(self, platform):
        m = Module()
        irq = self.irq
        msi = irq.cfg_interrupt_msienable
        level_q = Signal()          # the level a cycle ago: its rising edge is an MSI's cause
        msi_pending = Signal()      # a rising edge with MSI on, its MSI not yet taken
        m.d.sync += level_q.eq(self.intx)
        rose = self.intx & ~level_q
        m.d.sync += msi_pending.eq(msi & (msi_pending | rose))
        with m.FSM():
            with m.State("Idle"):
                # Idle -- waits for the level to differ from what the core took, or an MSI.
                with m.If(self.asserted & msi):
                    # With MSI on, a request is an MSI: there is no Deassert_INTA to ask for.
                    m.d.sync += self.asserted.eq(0)
                with m.Elif(self.asserted & ~self.intx):
                    m.next = "Deassert"
                with m.Elif(~msi & self.intx & ~self.asserted):
                    m.next = "Assert"
                with m.Elif(msi & msi_pending):
                    m.next = "MSI"
            with m.State("Assert"):
                # Assert -- waits for the core to take the Assert_INTA request.
                m.d.comb += [irq.cfg_interrupt.eq(1), irq.cfg_interrupt_assert.eq(1)]
                with m.If(irq.cfg_interrupt_rdy):
                    m.d.sync += self.asserted.eq(1)
                    m.next = "Idle"
            with m.State("Deassert"):
                # Deassert -- waits for the core to take the Deassert_INTA request.
                m.d.comb += [irq.cfg_interrupt.eq(1), irq.cfg_interrupt_assert.eq(0)]
                with m.If(irq.cfg_interrupt_rdy):
                    m.d.sync += self.asserted.eq(0)
                    m.next = "Idle"
            with m.State("MSI"):
                # MSI -- waits for the core to take the MSI request (vector 0).
                m.d.comb += irq.cfg_interrupt.eq(1)
                with m.If(irq.cfg_interrupt_rdy):
                    m.d.sync += msi_pending.eq(msi & rose)
                    m.next = "Idle"
        return m


class S7CplHeader(data.Struct):
    """``cfg_err_tlp_cpl_header[47:0]``: what the core needs of a request to complete it with an
    error status [PG054, Error Reporting Interface]: Tag (7:0), Requester ID (23:8), Attr
    (25:24), TC (28:26), Byte Count (40:29), Lower Address (47:41) [PCIe-3.0 2.2.9]."""
    tag:           8
    requester_id:  16
    attr:          2
    tc:            3
    byte_count:    12
    lower_address: 7


class S7ErrorSignature(wiring.Signature):
    """The error reporting inputs of ``pcie_7x`` a completer behind it drives (the user logic's
    port is ``Out(S7ErrorSignature())``). Behind the block the function has no Status or Device
    Status register of its own: the errors it detects as a completer go to the block, which
    records them (Device Status UR Detected, Status Signaled Target Abort and Detected Parity
    Error) and, for a non-posted request, sends the completion with UR or CA status itself from
    ``cfg_err_tlp_cpl_header`` (a CplLk with ``cfg_err_locked``); the user logic sends none.

    Members
    -------
    cfg_err_ur : Signal(1), out
        An Unsupported Request [PCIe-3.0 2.3.1], a pulse.
    cfg_err_cpl_abort : Signal(1), out
        A Completer Abort [PCIe-3.0 2.3.1], a pulse.
    cfg_err_poisoned : Signal(1), out
        A Poisoned TLP received [PCIe-3.0 2.7.2.2], a pulse.
    cfg_err_posted : Signal(1), out
        With the pulse: the request was posted (no completion to send).
    cfg_err_locked : Signal(1), out
        With a non-posted pulse: the request was an MRdLk (the completion is a CplLk).
    cfg_err_tlp_cpl_header : S7CplHeader, out
        With a non-posted pulse: the completion's fields.
    cfg_err_cpl_rdy : Signal(1), in
        The core takes a non-posted ``cfg_err_ur``/``cfg_err_cpl_abort`` only while this is
        high; the pulse waits for it.
    """
    def __init__(self):
        super().__init__({
            "cfg_err_ur":             Out(1),
            "cfg_err_cpl_abort":      Out(1),
            "cfg_err_poisoned":       Out(1),
            "cfg_err_posted":         Out(1),
            "cfg_err_locked":         Out(1),
            "cfg_err_tlp_cpl_header": Out(S7CplHeader),
            "cfg_err_cpl_rdy":        In(1),
        })
