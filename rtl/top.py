# Ref: PCIe Base 3.0 sections 2 and 7; OASIS virtio 1.2 section 4.1
"""The virtio-blk PCIe endpoint function, at the TLP level."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model.params import DeviceParams
from .tlp import TlpStreamSignature
from .config_space import ConfigSpace
from .virtio_regs import VirtioRegisters
from .completer import Completer


__all__ = ["VirtioBlkEndpoint"]


class VirtioBlkEndpoint(wiring.Component):
    """A virtio 1.x block device as one PCIe endpoint function.

    The function owns its whole configuration space: every TLP from the link, configuration
    requests included, arrives on ``rx``, and every TLP it sends leaves on ``tx``. A PHY adapter
    (a hard IP wrapper on a board, the cocotb shim in simulation) only reframes beats.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    rx : TlpStreamSignature(params.data_width), in
        TLPs from the link.
    tx : TlpStreamSignature(params.data_width), out
        TLPs to the link.
    intx : Signal(1), out
        Level of the INTA# virtual wire [PCIe-3.0 2.2.8.1]: an ISR bit is set, MSI-X is off and
        the Command register's INTx Disable is clear.
    """
    def __init__(self, params=None):
        if params is None:
            params = DeviceParams()
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        self.params = params
        super().__init__({
            "rx":   In(TlpStreamSignature(params.data_width)),
            "tx":   Out(TlpStreamSignature(params.data_width)),
            "intx": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.completer = completer = Completer(self.params)
        m.submodules.config    = config    = ConfigSpace(self.params)
        m.submodules.regs      = regs      = VirtioRegisters(self.params)

        wiring.connect(m, wiring.flipped(self.rx), completer.rx)
        wiring.connect(m, completer.tx, wiring.flipped(self.tx))
        wiring.connect(m, completer.cfg, config.bus)

        # BAR0 has two initiators that never access at the same time: the completer (memory
        # requests) and configuration space (the virtio PCI_CFG window). Both drive zeros while
        # idle, so their requests are OR-ed.
        for name in ("addr", "be", "r_stb", "w_stb", "w_data"):
            m.d.comb += getattr(regs.bus, name).eq(getattr(completer.bar, name) |
                                                   getattr(config.bar, name))
        m.d.comb += [
            completer.bar.r_data.eq(regs.bus.r_data),
            config.bar.r_data.eq(regs.bus.r_data),
            completer.command.eq(config.command),
            completer.bar0_base.eq(config.bar0_base),
            config.ur_detected.eq(completer.ur_detected),
            config.target_abort.eq(completer.target_abort),
            config.poisoned_received.eq(completer.poisoned_received),
            completer.power_state.eq(config.power_state),
            # Nothing consumes notifications until the queue engine exists.
            regs.notify.ready.eq(1),
        ]

        intx_pending = regs.isr != 0
        if self.params.msix:
            intx_pending = intx_pending & ~config.msix_enable
        m.d.comb += [
            config.intx_pending.eq(intx_pending),
            self.intx.eq(intx_pending & ~config.command[10]),
        ]
        return m
