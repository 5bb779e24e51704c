# Ref: PCIe Base 3.0 sections 2 and 7; OASIS virtio 1.2 section 4.1
"""The virtio-blk PCIe endpoint function, at the TLP level."""

from amaranth.hdl import Module, Signal, Mux, Cat
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .tlp import TlpStreamSignature
from .config_space import ConfigSpace
from .virtio_regs import VirtioRegisters
from .completer import Completer
from .tlp_mux import TlpArbiter, TlpRouter, BusMasterGate
from .dma_read import DmaReadEngine
from .dma_write import DmaWriteEngine
from .blk_engine import BlkEngine
from .interrupts import InterruptController
from .storage import StorageSignature
from .streams import SkidBuffer
from .phy.s7_axis import S7AxisSignature, S7RxTuser, S7TxTuser, S7AxisRx, S7AxisTx
from .phy.s7_cfg import (S7ConfigSignature, S7InterruptSignature, S7Interrupt,
                         S7ErrorSignature)


__all__ = ["VirtioBlkEndpoint", "VirtioBlkRamDiskCard", "VirtioBlkS7Endpoint"]


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
    storage : StorageSignature(params.data_width), out
        The storage back-end port (:mod:`rtl.storage`): a RAM disk on a board, a disk image
        served by the testbench in simulation. Its streams are the request engine's; its
        ``writeback`` level is the cache mode from the register file [VIRTIO-1.2 5.2.5].
    host : S7ConfigSignature, in (``params.hard_ip`` only)
        The hard block's ``cfg_*`` outputs (:mod:`rtl.phy.s7_cfg`). Behind a hard block the
        function answers only the configuration window the block forwards
        (:data:`model.regmap.S7_WINDOW`) and takes Command, Device Control, its Routing ID,
        PowerState, MSI-X Enable and Function Mask, and FLR from here;
        :class:`VirtioBlkS7Endpoint` is this with the AXI4-Stream adapters.
    err : S7ErrorSignature, out (``params.hard_ip`` only)
        The completer's errors to the block's ``cfg_err_*`` inputs (see
        :class:`~rtl.completer.Completer`): the block records them and completes a non-posted
        request in error itself.
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
            "storage": Out(StorageSignature(params.data_width)),
            **({"host": In(S7ConfigSignature()), "err": Out(S7ErrorSignature())}
               if params.hard_ip else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        w = p.data_width
        m.submodules.router    = router    = TlpRouter(w)
        m.submodules.completer = completer = Completer(p)
        m.submodules.config    = config    = ConfigSpace(p)
        m.submodules.regs      = regs      = VirtioRegisters(p)
        m.submodules.dma_read  = dma_read  = DmaReadEngine(w, tags=p.dma_read_tags,
                                                            timeout=p.completion_timeout)
        m.submodules.dma_write = dma_write = DmaWriteEngine(w)
        m.submodules.engine    = engine    = BlkEngine(p)
        m.submodules.irq       = irq       = InterruptController(p)
        m.submodules.arbiter   = arbiter   = TlpArbiter(w, 4)

        # TLPs in: requests to the completer, completions to the DMA read engine. TLPs out:
        # completions, read requests, write requests and MSI-X messages, packet by packet.
        # Skid buffers register the handshakes at the link and behind the arbiter, so that
        # valid and ready never chain through the link, the gate and the arbiter in one cycle.
        # Each source reaches the arbiter through a skid buffer too, so the arbiter decides
        # from registers. Ordering holds [PCIe-3.0 2.4.1]: a source's TLPs are in the one
        # ordered stream to the link once the arbiter took them, and what must follow them
        # waits for that. The write engine registers its TLP output itself and reports a
        # command done only once its last beat has left that register for the arbiter; so an
        # MSI-X message, a read that must not pass a write, or a completion of a register
        # read that a write's status led to, goes into its own buffer behind it. A read request
        # or a completion has nothing behind it to order; an MSI-X message in its buffer is
        # still on its way, and the reset and the notifier wait for it (`irq_idle`).
        def skid(name):
            buf = SkidBuffer(TlpStreamSignature(w))
            m.submodules[name] = buf
            return buf
        rx_skid = skid("rx_skid")
        wiring.connect(m, wiring.flipped(self.rx), rx_skid.i)
        wiring.connect(m, rx_skid.o, router.i)
        wiring.connect(m, router.requests, completer.rx)
        wiring.connect(m, router.completions, dma_read.cpl)
        cpl_skid = skid("completer_skid")
        rd_skid = skid("dma_read_skid")
        irq_skid = skid("irq_skid")
        wiring.connect(m, completer.tx, cpl_skid.i)
        wiring.connect(m, dma_read.tx, rd_skid.i)
        wiring.connect(m, irq.tx, irq_skid.i)
        for k, source in enumerate((cpl_skid.o, rd_skid.o, dma_write.tx, irq_skid.o)):
            wiring.connect(m, source, arbiter.i[k])
        irq_idle = irq.idle & ~irq_skid.o.valid   # (a skid buffer fills only behind its output)
        # [PCIe-3.0 7.5.1.1] Nothing but completions reaches the link with Bus Master Enable
        # clear, whatever was queued when it went clear.
        m.submodules.bm_gate = bm_gate = BusMasterGate(w)
        arb_skid = skid("arbiter_skid")
        tx_skid = skid("tx_skid")
        wiring.connect(m, arbiter.o, arb_skid.i)
        wiring.connect(m, arb_skid.o, bm_gate.i)
        wiring.connect(m, bm_gate.o, tx_skid.i)
        wiring.connect(m, tx_skid.o, wiring.flipped(self.tx))
        m.d.comb += bm_gate.bus_master.eq((config.command & rm.CMD_BUS_MASTER).any())
        wiring.connect(m, completer.cfg, config.bus)
        if p.hard_ip:
            wiring.connect(m, wiring.flipped(self.host), config.host)
            wiring.connect(m, completer.err, wiring.flipped(self.err))
            h = self.host
            m.d.comb += completer.routing_id.eq(Cat(h.cfg_function_number, h.cfg_device_number,
                                                    h.cfg_bus_number))

        # BAR0 has two initiators that never access at the same time: the completer (memory
        # requests) and configuration space (the virtio PCI_CFG window). Both drive zeros while
        # idle, so their requests are OR-ed. The request reaches the registers a cycle later,
        # from flip-flops (the initiators' decoding is not to run into the registers' side
        # effects in one cycle), so read data comes in the second cycle after `r_stb`: both
        # initiators wait for it.
        for name in ("addr", "be", "r_stb", "w_stb", "w_data"):
            m.d.sync += getattr(regs.bus, name).eq(getattr(completer.bar, name) |
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
        ]

        # -- bus mastering: the DMA engines and MSI-X --------------------------------------------
        bus_master = (config.command & rm.CMD_BUS_MASTER).any()
        devctl = config.devctl
        # [PCIe-3.0 7.8.4] Max_Payload_Size "must not exceed" Max_Payload_Size Supported; a
        # larger value programmed by software is clamped rather than obeyed.
        mps = Signal(3)
        m.d.comb += mps.eq(Mux(devctl[5:8] > p.max_payload_size_supported,
                               p.max_payload_size_supported, devctl[5:8]))
        for engine_ in (dma_read, dma_write):
            m.d.comb += [
                engine_.bus_master.eq(bus_master),
                engine_.requester_id.eq(completer.completer_id),
            ]
        m.d.comb += [
            dma_read.max_read_request_size.eq(devctl[12:15]),
            dma_read.extended_tag.eq(devctl[8]),
            dma_write.max_payload_size.eq(mps),
        ]
        # The DMA arbiters register every client's commands (rtl/dma_arbiter.py); the engine
        # meets the DMA engines directly, so a read's round trip pays no extra cycle here.
        wiring.connect(m, engine.rd_cmd, dma_read.cmd)
        wiring.connect(m, dma_read.data, engine.rd_data)
        wiring.connect(m, dma_read.status, engine.rd_status)
        wiring.connect(m, engine.wr_cmd, dma_write.cmd)
        wiring.connect(m, engine.wr_data, dma_write.data)
        wiring.connect(m, dma_write.status, engine.wr_status)
        wiring.connect(m, engine.storage, wiring.flipped(self.storage))
        # The cache mode the driver chose goes to the back-end with the engine's port.
        m.d.comb += engine.writeback.eq(regs.writeback)

        # -- the request engine and the transport -----------------------------------------------
        wiring.connect(m, regs.notify, engine.notify)
        for i in range(p.num_queues):
            m.d.comb += engine.queues[i].eq(regs.queues[i])
            m.d.comb += irq.queue_vectors[i].eq(regs.queues[i].msix_vector)
        # [VIRTIO-1.2 4.1.4.3.1] A reset finishes (device_status reads 0) once the engine has
        # drained and no interrupt is on its way. The stages' idle flags gather from all over
        # the engine and the reset goes back to all of the registers, so the flags are
        # registered: sampled only while the reset is requested, when nothing starts, so
        # that idle in that cycle is idle in the next. A device that has not had DRIVER_OK
        # since its last reset has nothing to drain (the engine starts only with it, and the
        # last reset cleared the pending interrupts): its reset finishes at once, as before.
        drained = Signal()
        ran = Signal()          # DRIVER_OK was set since the last reset
        m.d.sync += [
            drained.eq(engine.idle & irq_idle & regs.reset_req),
            ran.eq((ran | (regs.device_status & rm.STATUS_DRIVER_OK).any()) & ~regs.reset_done),
        ]
        m.d.comb += regs.reset_ack.eq(drained | ~ran)
        m.d.comb += [
            engine.driver_features.eq(regs.driver_features),
            engine.device_status.eq(regs.device_status),
            regs.needs_reset.eq(engine.needs_reset),
            engine.reset_req.eq(regs.reset_req),
            regs.flr.eq(config.flr),
            irq.flr.eq(config.flr),
            irq.clear_pending.eq(regs.reset_done),
        ]

        # -- interrupts --------------------------------------------------------------------------
        wiring.connect(m, engine.irq, irq.request)
        m.d.comb += engine.irq_idle.eq(irq_idle)
        if p.msix:
            m.d.comb += engine.msix_enable.eq(config.msix_enable)
        m.d.comb += [
            irq.config_vector.eq(regs.msix_config),
            irq.bus_master.eq(bus_master),
            irq.requester_id.eq(completer.completer_id),
            regs.isr_set.eq(irq.isr_set),
        ]
        if p.msix:
            for v in range(p.msix_table_size):
                m.d.comb += irq.msix_table[v].eq(regs.msix_table[v])
            m.d.comb += [
                regs.msix_pending.eq(irq.msix_pending),
                irq.msix_enable.eq(config.msix_enable),
                irq.msix_function_mask.eq(config.msix_mask),
            ]

        intx_pending = regs.isr != 0
        if p.msix:
            intx_pending = intx_pending & ~config.msix_enable
        m.d.comb += [
            config.intx_pending.eq(intx_pending),
            self.intx.eq(intx_pending & ~(config.command & rm.CMD_INTX_DISABLE).any()),
        ]
        return m


class VirtioBlkRamDiskCard(wiring.Component):
    """The endpoint with an on-chip RAM disk behind it: what a board build synthesises.

    Parameters
    ----------
    params : model.params.DeviceParams
        ``capacity`` is the RAM disk's size in sectors.

    Attributes
    ----------
    rx, tx, intx : as :class:`VirtioBlkEndpoint`.
    """
    def __init__(self, params):
        self.params = params
        super().__init__({
            "rx":   In(TlpStreamSignature(params.data_width)),
            "tx":   Out(TlpStreamSignature(params.data_width)),
            "intx": Out(1),
        })

    def elaborate(self, platform):
        from .ramdisk import RamDisk
        m = Module()
        m.submodules.endpoint = ep = VirtioBlkEndpoint(self.params)
        m.submodules.disk = disk = RamDisk(self.params.capacity, self.params.data_width)
        wiring.connect(m, wiring.flipped(self.rx), ep.rx)
        wiring.connect(m, ep.tx, wiring.flipped(self.tx))
        wiring.connect(m, ep.storage, disk.storage)
        m.d.comb += self.intx.eq(ep.intx)
        return m


class VirtioBlkS7Endpoint(wiring.Component):
    """The endpoint behind the 7-series PCIe hard block (``pcie_7x``, PG054), with the block's
    interfaces as its ports: what a board build instantiates next to the core, port for port.

    Inside, :class:`~rtl.phy.s7_axis.S7AxisRx` and :class:`~rtl.phy.s7_axis.S7AxisTx` turn
    the block's AXI4-Stream interfaces into the function's TLP streams (beats, ``tkeep`` and
    the payload byte order), and :class:`VirtioBlkEndpoint` runs with ``hard_ip="s7"``: it
    answers only the configuration window the block forwards (the five virtio capabilities at
    0xA8 to 0xFF, :data:`model.regmap.S7_WINDOW`), takes the block's ``cfg_*`` outputs instead of
    registers of its own, keeps the MSI-X table and PBA in BAR0 and sends MSI-X messages as
    Memory Writes on ``s_axis_tx``.

    The core is generated with (names of the core's attributes; :mod:`model.regmap` has the
    facts): BAR0 of ``params.bar0_size``, 64-bit (``params.bar0_64bit``), non-prefetchable;
    MSI-X on, ``MSIX_CAP_TABLE_SIZE`` = ``params.msix_table_size - 1``, table at BAR0 +
    :data:`~model.regmap.MSIX_TABLE_OFFSET`, PBA at BAR0 + :data:`~model.regmap.MSIX_PBA_OFFSET`
    (BIR 0); ``EXT_CFG_CAP_PTR`` (``PCI_CFG_SPACE_ADDR``) = 0x2A and ``MSIX_CAP_NEXTPTR`` =
    0xA8; the identity of :mod:`model.regmap` (vendor 0x1AF4, device 0x1042, class 0x018000,
    subsystem from ``params``); Max_Payload_Size Supported ``params.max_payload_size_supported``.

    Parameters
    ----------
    params : model.params.DeviceParams
        With ``hard_ip="s7"``.

    Attributes
    ----------
    m_axis_rx : S7AxisSignature(params.data_width, S7RxTuser), in
        The core's ``m_axis_rx_tdata``, ``_tkeep``, ``_tvalid``, ``_tready`` (out), ``_tlast``
        and ``_tuser``: requests to BAR0, configuration requests in the window, completions of
        the function's reads.
    s_axis_tx : S7AxisSignature(params.data_width, S7TxTuser), out
        To the core's ``s_axis_tx_*``: completions, DMA reads and writes, MSI-X messages.
    host : S7ConfigSignature, in
        The core's ``cfg_command``, ``cfg_dcommand``, ``cfg_bus_number``,
        ``cfg_device_number``, ``cfg_function_number``, ``cfg_pmcsr_powerstate``,
        ``cfg_interrupt_msixenable``, ``cfg_interrupt_msixfm`` and
        ``cfg_received_func_lvl_rst`` (see :mod:`rtl.phy.s7_cfg`).
    irq : S7InterruptSignature, out
        To the core's ``cfg_interrupt``, ``cfg_interrupt_rdy`` (in), ``cfg_interrupt_assert``,
        ``cfg_interrupt_di``, ``cfg_interrupt_msienable`` (in) and ``cfg_interrupt_stat``: the
        function's INTA# level as Assert_INTA/Deassert_INTA requests, or MSI requests if
        software enabled the block's MSI (:class:`~rtl.phy.s7_cfg.S7Interrupt`).
    err : S7ErrorSignature, out
        To the core's ``cfg_err_ur``, ``cfg_err_cpl_abort``, ``cfg_err_poisoned``,
        ``cfg_err_posted``, ``cfg_err_locked``, ``cfg_err_tlp_cpl_header`` and
        ``cfg_err_cpl_rdy`` (in): the errors the function detects as a completer, which the
        block records in its Status and Device Status registers; it also sends the UR or CA
        completion of a non-posted request (:class:`~rtl.completer.Completer`).
    intx : Signal(1), out
        The function's INTA# level (as :class:`VirtioBlkEndpoint`), what ``irq`` follows; for
        observation only, a board leaves it open.
    storage : StorageSignature(params.data_width), out
        The storage back-end port.

    Raises
    ------
    ValueError
        If ``params.hard_ip`` is not ``"s7"``.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"params must be a DeviceParams, not {params!r}")
        if params.hard_ip != "s7":
            raise ValueError(f"VirtioBlkS7Endpoint needs DeviceParams(hard_ip=\"s7\"), not "
                             f"hard_ip={params.hard_ip!r}")
        self.params = params
        w = params.data_width
        super().__init__({
            "m_axis_rx": In(S7AxisSignature(w, S7RxTuser)),
            "s_axis_tx": Out(S7AxisSignature(w, S7TxTuser)),
            "host":      In(S7ConfigSignature()),
            "irq":       Out(S7InterruptSignature()),
            "err":       Out(S7ErrorSignature()),
            "intx":      Out(1),
            "storage":   Out(StorageSignature(w)),
        })

    def elaborate(self, platform):
        m = Module()
        w = self.params.data_width
        m.submodules.rx = rx = S7AxisRx(w)
        m.submodules.tx = tx = S7AxisTx(w)
        m.submodules.function = fn = VirtioBlkEndpoint(self.params)
        wiring.connect(m, wiring.flipped(self.m_axis_rx), rx.m_axis_rx)
        wiring.connect(m, rx.tlp, fn.rx)
        wiring.connect(m, fn.tx, tx.tlp)
        wiring.connect(m, tx.s_axis_tx, wiring.flipped(self.s_axis_tx))
        wiring.connect(m, wiring.flipped(self.host), fn.host)
        wiring.connect(m, fn.storage, wiring.flipped(self.storage))
        m.submodules.irq = irq = S7Interrupt()
        m.d.comb += [irq.intx.eq(fn.intx), self.intx.eq(fn.intx)]
        wiring.connect(m, irq.irq, wiring.flipped(self.irq))
        wiring.connect(m, fn.err, wiring.flipped(self.err))
        return m
