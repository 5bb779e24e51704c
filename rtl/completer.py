# Ref: PCIe Base 3.0, sections 2.2.7 (requests), 2.2.9 (completions), 2.3.1 (request handling)
"""The request side of the endpoint: receives requests, answers them, reports errors.

Configuration Type 0 requests go to :class:`rtl.config_space.ConfigSpace`, memory requests that
hit BAR0 go to :class:`rtl.virtio_regs.VirtioRegisters`. Every non-posted request gets exactly
one completion; requests the function does not support are completed with UR (non-posted) or
dropped (posted), and set Unsupported Request Detected.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, Array
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .tlp import Fmt, TlpType, CplStatus, TlpDw0, ReqDw1, CfgDw2, CplDw1, CplDw2, \
    TlpStreamSignature
from .regport import RegisterSignature
from .phy.s7_cfg import S7ErrorSignature
from model import regmap as rm


__all__ = ["Completer"]


class Completer(wiring.Component):
    """Target of configuration and BAR0 memory requests.

    Register accesses are 1 or 2 DW: [VIRTIO-1.2 4.1.3.1] drivers access each field at its
    natural width, so a memory request to BAR0 that is longer, or runs past the end of BAR0, is
    completed with Completer Abort (reads) or discarded (writes) [PCIe-3.0 2.3.1], setting
    Signaled Target Abort.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    rx : TlpStreamSignature, in
        Requests (and, until the DMA engine claims them, completions) from the link.
    tx : TlpStreamSignature, out
        Completions to the link.
    cfg : RegisterSignature(10), out
        Configuration space accesses.
    bar : RegisterSignature, out
        BAR0 accesses.
    command : Signal(16), in
        Command register (Memory Space Enable gates BAR0 decode).
    power_state : Signal(2), in
        PMCSR PowerState; BAR0 is not decoded in D3hot.
    bar0_base : Signal(64), in
    completer_id : Signal(16), out
        Bus and Device Numbers captured from Type 0 Configuration Writes [PCIe-3.0 2.2.6.2];
        the function number is 0.
    ur_detected, target_abort, poisoned_received : Signal(1), out
        Pulses for Device Status and Status.
    routing_id : Signal(16), in (``params.hard_ip`` only)
        Behind a hard block: the function's Bus, Device and Function Numbers as the block
        captured them (``cfg_bus_number`` ...), which ``completer_id`` then is. The block also
        decodes the BARs: it hands the function only memory requests that hit one [PG054], so
        a memory request is BAR0's whenever Memory Space is enabled and the function is not in
        D3hot, whatever ``bar0_base`` says; and only configuration requests in its window
        (:data:`model.regmap.S7_WINDOW`) arrive, which the completer completes like any other
        (a DW outside the table reads 0 and ignores writes).
    err : S7ErrorSignature, out (``params.hard_ip`` only)
        Behind the block, the errors go to the block's ``cfg_err_*`` inputs instead (besides
        the pulses above): a posted request's as a pulse with ``cfg_err_posted``, and a
        non-posted request's UR or CA as a pulse with the completion's fields when
        ``cfg_err_cpl_rdy`` allows, in place of the completion, which the block sends.
    """
    def __init__(self, params):
        self.params = params
        bar_addr_width = params.bar0_dw_bits
        super().__init__({
            "rx":           In(TlpStreamSignature(params.data_width)),
            "tx":           Out(TlpStreamSignature(params.data_width)),
            "cfg":          Out(RegisterSignature(10)),
            "bar":          Out(RegisterSignature(bar_addr_width)),
            "command":      In(16),
            "power_state":  In(2),
            "bar0_base":    In(64),
            "completer_id": Out(16),
            "ur_detected":  Out(1),
            "target_abort": Out(1),
            "poisoned_received": Out(1),
            **({"routing_id": In(16), "err": Out(S7ErrorSignature())} if params.hard_ip
               else {}),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        size_bits = (p.bar0_size - 1).bit_length()

        # -- capture the first three beats: up to a 4 DW header and 2 DW of data ---------------
        dws = [Signal(32, name=f"dw{i}") for i in range(6)]
        beat = Signal(2)

        dw0 = TlpDw0(dws[0])
        dw1 = ReqDw1(dws[1])
        cfg_dw2 = CfgDw2(dws[2])
        four_dw = dw0.fmt.as_value()[0]
        has_data = dw0.fmt.as_value()[1]
        prefix = dw0.fmt.as_value()[2]
        typ = dw0.type
        addr = Signal(64)
        m.d.comb += addr.eq(Mux(four_dw,
                                Cat(Const(0, 2), dws[3][2:], dws[2]),
                                Cat(Const(0, 2), dws[2][2:])))
        wdata = Array([Mux(four_dw, dws[4], dws[3]), Mux(four_dw, dws[5], dws[4])])

        is_mem  = ~prefix & (typ == TlpType.MEM)
        is_mrd  = is_mem & ~has_data
        is_mwr  = is_mem & has_data
        is_lock = ~prefix & ~has_data & (typ == TlpType.MEM_LOCKED)
        is_cfg0 = ~prefix & ~four_dw & (typ == TlpType.CFG0)
        is_cpl  = ~prefix & ((typ == TlpType.CPL) | (typ == TlpType.CPL_LOCKED))
        is_msg  = ~prefix & (typ[3:] == 0b10)
        posted  = is_mwr | is_msg | prefix
        # [PCIe-3.0 2.2.8] Messages an endpoint takes without error (Set_Slot_Power_Limit,
        # Unlock, ...; see regmap.MESSAGES_ACCEPTED); any other is an Unsupported Request.
        msg_accepted = is_msg & Cat(dws[1][:8] == code
                                    for code in rm.MESSAGES_ACCEPTED).any()

        bar_hit = Signal()
        # [PCIe-3.0 5.3.1.4.1] In D3hot a function takes only configuration requests and
        # messages: memory requests are Unsupported Requests.
        in_bar = (addr >> size_bits) == (self.bar0_base >> size_bits)
        if p.hard_ip:
            in_bar = 1          # the block forwards only BAR hits (see the docstring)
        m.d.comb += bar_hit.eq((self.command & rm.CMD_MEMORY_SPACE).any() & (self.power_state != 3) &
                               in_bar)
        offset = addr[2:size_bits]
        last_dw = (1 << (size_bits - 2)) - 1
        length = dw0.length
        len_ok = (length == 1) | ((length == 2) & (offset != last_dw))

        # [PCIe-3.0 2.2.9] Byte Count and Lower Address of a memory read completion.
        def first_set(be):
            return Mux(be[0], 0, Mux(be[1], 1, Mux(be[2], 2, 3)))

        def last_end(be):
            return Mux(be[3], 4, Mux(be[2], 3, Mux(be[1], 2, 1)))
        first_be, last_be = dw1.first_be, dw1.last_be
        rd_byte_count = Signal(12)
        with m.If(length == 1):
            with m.If(first_be == 0):
                m.d.comb += rd_byte_count.eq(1)          # zero-length read
            with m.Else():
                m.d.comb += rd_byte_count.eq(last_end(first_be) - first_set(first_be))
        with m.Else():
            # Also right for the long reads that complete CA: 4 * Length, less the disabled
            # bytes at both ends, modulo 4096 (Length 0 is 1024 DW, Byte Count 0 is 4096).
            m.d.comb += rd_byte_count.eq(Cat(Const(0, 2), length) - first_set(first_be) - 4 +
                                         last_end(last_be))
        rd_lower_address = Cat(Mux(first_be == 0, 0, first_set(first_be))[:2], addr[2:7])

        # -- the request classified, a cycle after its last beat ---------------------------------
        # The decode above (a 64-bit BAR compare, the Byte Count arithmetic) is registered in
        # Classify, so that Dispatch chooses the next state and builds the completion header from
        # registers: together they were the completer's critical path (issue 12).
        k_cfg      = Signal()       # a Type 0 configuration request this function takes
        k_mrd_hit  = Signal()       # a memory read of BAR0
        k_mwr_hit  = Signal()       # a memory write to BAR0
        k_len_ok   = Signal()       # ... of a register's width
        k_discard  = Signal()       # a completion, or a message that needs no action
        k_posted   = Signal()
        k_lock     = Signal()
        k_rd       = Signal()       # a memory read, locked or not (Byte Count from its BEs)
        k_byte_count    = Signal(12)
        k_lower_address = Signal(7)

        # -- completion being built --------------------------------------------------------------
        cpl_dw0 = Signal(TlpDw0)
        cpl_dw1 = Signal(CplDw1)
        cpl_dw2 = Signal(CplDw2)
        cpl_data = Array(Signal(32, name=f"cpl_data{i}") for i in range(2))
        idx = Signal(1)

        bus_dev = Signal(13)
        if p.hard_ip:
            m.d.comb += self.completer_id.eq(self.routing_id)
            function = self.routing_id[:3]
        else:
            m.d.comb += self.completer_id.eq(Cat(Const(0, 3), bus_dev))
            function = 0

        def start_completion(status, with_data, byte_count, lower_address, locked=False):
            return [
                cpl_dw0.eq(0),
                cpl_dw0.fmt.eq(Mux(with_data, Fmt.DW3_DATA, Fmt.DW3_NODATA)),
                cpl_dw0.type.eq(TlpType.CPL_LOCKED if locked else TlpType.CPL),
                cpl_dw0.tc.eq(dw0.tc),
                cpl_dw0.attr.eq(dw0.attr),
                cpl_dw0.attr2.eq(dw0.attr2),
                cpl_dw0.length.eq(Mux(with_data, length, 0)),
                cpl_dw1.completer_id.eq(self.completer_id),
                cpl_dw1.status.eq(status),
                cpl_dw1.bcm.eq(0),
                cpl_dw1.byte_count.eq(byte_count),
                cpl_dw2.requester_id.eq(dw1.requester_id),
                cpl_dw2.tag.eq(dw1.tag),
                cpl_dw2.lower_address.eq(lower_address),
            ]

        with m.FSM():
            with m.State("Receive"):
                m.d.comb += self.rx.ready.eq(1)
                with m.If(self.rx.valid):
                    n = Mux(self.rx.payload.first, 0, beat)
                    for b in range(3):
                        with m.If(n == b):
                            m.d.sync += [
                                dws[2 * b].eq(self.rx.payload.data[:32]),
                                dws[2 * b + 1].eq(self.rx.payload.data[32:64]),
                            ]
                    m.d.sync += beat.eq(Mux(n == 3, 3, n + 1))
                    with m.If(self.rx.payload.last):
                        m.d.sync += beat.eq(0)
                        m.next = "Classify"

            with m.State("Classify"):
                # [PCIe-3.0 2.7.2.2] A Poisoned TLP received (data with EP set) is logged
                # whatever happens to it next.
                m.d.comb += self.poisoned_received.eq(has_data & dw0.ep)
                m.d.sync += [
                    k_cfg.eq(is_cfg0 & (cfg_dw2.function == function) & ~(has_data & dw0.ep)),
                    k_mrd_hit.eq(is_mrd & bar_hit),
                    k_mwr_hit.eq(is_mwr & bar_hit),
                    k_len_ok.eq(len_ok),
                    k_discard.eq(is_cpl | msg_accepted),
                    k_posted.eq(posted),
                    k_lock.eq(is_lock),
                    k_rd.eq(is_mrd | is_lock),
                    k_byte_count.eq(rd_byte_count),
                    k_lower_address.eq(rd_lower_address),
                    idx.eq(0),
                ]
                m.next = "Dispatch"

            with m.State("Dispatch"):
                with m.If(k_cfg):
                    with m.If(has_data):
                        m.d.sync += start_completion(CplStatus.SC, 0, 4, 0)
                        m.next = "Config-Write"
                    with m.Else():
                        m.d.sync += start_completion(CplStatus.SC, 1, 4, 0)
                        m.next = "Config-Read"
                with m.Elif(k_mrd_hit):
                    with m.If(k_len_ok):
                        m.d.sync += start_completion(CplStatus.SC, 1, k_byte_count,
                                                     k_lower_address)
                        m.next = "BAR-Read"
                    with m.Else():
                        m.d.comb += self.target_abort.eq(1)
                        m.d.sync += start_completion(CplStatus.CA, 0, k_byte_count,
                                                     k_lower_address)
                        m.next = "Report-Error" if p.hard_ip else "Send-Completion"
                with m.Elif(k_mwr_hit):
                    with m.If(dw0.ep):
                        # [PCIe-3.0 2.7.2.2] Poisoned write data must not be used. Behind the
                        # hard block, reported as what it is only here: a poisoned request
                        # that is also unsupported or aborted is reported as that alone, the
                        # error of higher precedence [PCIe-3.0 6.2].
                        if p.hard_ip:
                            m.d.comb += [self.err.cfg_err_poisoned.eq(1),
                                         self.err.cfg_err_posted.eq(1)]
                        m.next = "Receive"
                    with m.Elif(k_len_ok):
                        m.next = "BAR-Write"
                    with m.Else():
                        m.d.comb += self.target_abort.eq(1)
                        if p.hard_ip:
                            m.d.comb += [self.err.cfg_err_cpl_abort.eq(1),
                                         self.err.cfg_err_posted.eq(1)]
                        m.next = "Receive"
                with m.Elif(k_discard):
                    # Unexpected Completion, or a message that needs no action: discard.
                    if p.hard_ip:
                        m.d.comb += [self.err.cfg_err_poisoned.eq(has_data & dw0.ep),
                                     self.err.cfg_err_posted.eq(k_posted)]
                    m.next = "Receive"
                with m.Elif(k_posted):
                    m.d.comb += self.ur_detected.eq(1)
                    if p.hard_ip:
                        m.d.comb += [self.err.cfg_err_ur.eq(1), self.err.cfg_err_posted.eq(1)]
                    m.next = "Receive"
                with m.Else():
                    # [PCIe-3.0 2.3.1] Unsupported Request: I/O, Type 1 configuration, MRdLk,
                    # AtomicOps, requests to functions 1-7, poisoned configuration writes, and
                    # memory reads that miss BAR0 or arrive with Memory Space disabled.
                    m.d.comb += self.ur_detected.eq(1)
                    m.d.sync += start_completion(
                        CplStatus.UR, 0, Mux(k_rd, k_byte_count, 4),
                        Mux(k_rd, k_lower_address, 0))
                    with m.If(k_lock):
                        m.d.sync += cpl_dw0.type.eq(TlpType.CPL_LOCKED)
                    m.next = "Report-Error" if p.hard_ip else "Send-Completion"

            with m.State("Config-Read"):
                m.d.comb += [
                    self.cfg.r_stb.eq(1),
                    self.cfg.addr.eq(cfg_dw2.register),
                    self.cfg.be.eq(first_be),
                ]
                m.next = "Config-Read-Wait"

            with m.State("Config-Read-Wait"):
                # Configuration space answers in the second cycle (its PCI_CFG window reads
                # BAR0, whose requests are registered).
                m.next = "Config-Read-Data"

            with m.State("Config-Read-Data"):
                m.d.sync += cpl_data[0].eq(self.cfg.r_data)
                m.next = "Send-Completion"

            with m.State("Config-Write"):
                m.d.comb += [
                    self.cfg.w_stb.eq(1),
                    self.cfg.addr.eq(cfg_dw2.register),
                    self.cfg.be.eq(first_be),
                    self.cfg.w_data.eq(wdata[0]),
                ]
                # [PCIe-3.0 2.2.6.2] Capture Bus and Device Number from Type 0 writes (behind a
                # hard block, the block does).
                if not p.hard_ip:
                    m.d.sync += [
                        bus_dev.eq(Cat(cfg_dw2.device, cfg_dw2.bus)),
                        cpl_dw1.completer_id.eq(Cat(Const(0, 3), cfg_dw2.device, cfg_dw2.bus)),
                    ]
                m.next = "Send-Completion"

            with m.State("BAR-Read"):
                m.d.comb += [
                    self.bar.r_stb.eq(1),
                    self.bar.addr.eq(offset + idx),
                    self.bar.be.eq(Mux(length == 1, first_be, Mux(idx, last_be, first_be))),
                ]
                m.next = "BAR-Read-Wait"

            with m.State("BAR-Read-Wait"):
                # BAR0 answers in the second cycle: its requests are registered (rtl/top.py).
                m.next = "BAR-Read-Data"

            with m.State("BAR-Read-Data"):
                m.d.sync += cpl_data[idx].eq(self.bar.r_data)
                with m.If((idx == 0) & (length == 2)):
                    m.d.sync += idx.eq(1)
                    m.next = "BAR-Read"
                with m.Else():
                    m.d.sync += idx.eq(0)
                    m.next = "Send-Completion"

            with m.State("BAR-Write"):
                m.d.comb += [
                    self.bar.w_stb.eq(1),
                    self.bar.addr.eq(offset + idx),
                    self.bar.be.eq(Mux(length == 1, first_be, Mux(idx, last_be, first_be))),
                    self.bar.w_data.eq(wdata[idx]),
                ]
                with m.If((idx == 0) & (length == 2)):
                    m.d.sync += idx.eq(1)
                with m.Else():
                    m.next = "Receive"

            if p.hard_ip:
                with m.State("Report-Error"):
                    # Report-Error -- waits for cfg_err_cpl_rdy, then reports the UR or CA of
                    # the completion built in Dispatch to the block, which sends it [PG054].
                    hdr = self.err.cfg_err_tlp_cpl_header
                    m.d.comb += [
                        hdr.tag.eq(cpl_dw2.tag),
                        hdr.requester_id.eq(cpl_dw2.requester_id),
                        hdr.attr.eq(cpl_dw0.attr),
                        hdr.tc.eq(cpl_dw0.tc),
                        hdr.byte_count.eq(cpl_dw1.byte_count),
                        hdr.lower_address.eq(cpl_dw2.lower_address),
                        self.err.cfg_err_locked.eq(cpl_dw0.type == TlpType.CPL_LOCKED),
                    ]
                    with m.If(self.err.cfg_err_cpl_rdy):
                        m.d.comb += [
                            self.err.cfg_err_ur.eq(cpl_dw1.status == CplStatus.UR),
                            self.err.cfg_err_cpl_abort.eq(cpl_dw1.status == CplStatus.CA),
                        ]
                        m.next = "Receive"

            with m.State("Send-Completion"):
                n_data = cpl_dw0.length
                with_data = cpl_dw0.fmt.as_value()[1]
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.first.eq(idx == 0),
                ]
                with m.Switch(idx):
                    with m.Case(0):
                        m.d.comb += [
                            self.tx.payload.data.eq(Cat(cpl_dw0, cpl_dw1)),
                            self.tx.payload.keep.eq(0b11),
                        ]
                    with m.Case(1):
                        m.d.comb += [
                            self.tx.payload.data.eq(Cat(cpl_dw2, cpl_data[0])),
                            self.tx.payload.keep.eq(Mux(with_data, 0b11, 0b01)),
                            self.tx.payload.last.eq(~with_data | (n_data == 1)),
                        ]
                # A 2 DW completion needs a third beat, sent from the next state.
                with m.If(self.tx.ready):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(idx == 1):
                        m.d.sync += idx.eq(0)
                        with m.If(with_data & (n_data == 2)):
                            m.next = "Send-Completion-Tail"
                        with m.Else():
                            m.next = "Receive"

            with m.State("Send-Completion-Tail"):
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.data.eq(cpl_data[1]),
                    self.tx.payload.keep.eq(0b01),
                    self.tx.payload.last.eq(1),
                ]
                with m.If(self.tx.ready):
                    m.next = "Receive"

        return m
