# Ref: Xilinx PG054 v3.3, 7 Series FPGAs Integrated Block for PCI Express, Transaction Interface
"""The 7-series PCIe hard block's AXI4-Stream user interface, to and from our TLP streams.

The Xilinx "7 Series FPGAs Integrated Block for PCI Express" (``pcie_7x``, the hard block of the
Artix-7 on the Litefury and NiteFury) hands received TLPs out on ``m_axis_rx_*`` and takes TLPs
to send on ``s_axis_tx_*``, 64 or 128 bits wide. :class:`S7AxisRx` and :class:`S7AxisTx` turn
these into the streams of :mod:`rtl.tlp` and back. What they rely on, and where it comes from:

- [PG054] is the product guide. Its signal tables are restated, bit for bit, in PG156's
  migration tables (https://docs.amd.com/r/en-US/pg156-ultrascale-pcie-gen3/m_axis_rx_tuser,
  .../s_axis_tx_tuser). [axi_basic_rx] and [axi_basic_tx] are the core's own RTL, which builds
  the AXI4-Stream interface from the block's TRN interface (``<core>_axi_basic_rx_pipeline.v``
  and ``<core>_axi_basic_tx_pipeline.v``, "Series-7 Integrated Block for PCI Express" v3.3, as
  Vivado generates them into a project and as found in public repositories of pcie_7x and XDMA
  projects for 7-series parts).
- Beats. The AXI side is "DWORD swapped from TRN": DW0 of a TLP is in bits 31:0 of the first
  beat, as in our streams [axi_basic_rx, "Create TDATA"]. Each DW is the 32-bit value of the
  spec's figure, the first byte on the wire in bits 31:24. For a header DW that is our format;
  for a payload DW it puts the lowest-addressed byte in bits 31:24, where our streams carry it
  in bits 7:0. Xilinx's own PIO example for this core says so ("TLP Payload format:
  data[31:0] = { byte[0] (lowest addr), ... }", ``PIO_EP_MEM_ACCESS.v``, which takes
  ``w_wr_data_b0 = wr_data[31:24]``), and litepcie's ``S7PCIEPHY`` declares
  ``endianness = "big"``, for which ``litepcie/tlp/common.py`` ``dword_endianness_swap``
  reverses the bytes of each data DW after the header (github.com/enjoy-digital/litepcie).
  Both adapters therefore reverse the bytes of every payload DW and leave header DWs alone;
  the header is 3 or 4 DWs by Fmt bit 0 of DW0 [PCIe-3.0 2.2.1]. (The core is PCIe 2.1: no
  TLP prefixes.)
- RX at 64 bits: ``m_axis_rx_tkeep`` is 0x0F or 0xFF, 0x0F only on the last beat; ``tlast``
  marks the last beat; there is no start flag ([axi_basic_rx, "Create tkeep"]: "tkeep has only
  two possible values here, 0xFF or 0x0F"; PG156 marks ``rx_is_sof`` "128-bit only"), so
  ``first`` is "the previous beat was a last one".
- RX at 128 bits: the core drives ``tlast`` 0 and ``tkeep`` all ones ("For 128-bit interface,
  don't pass TLAST and tkeep to user (is_eof and is_data passed to user instead)",
  [axi_basic_rx]); ``is_sof`` and ``is_eof`` in ``tuser`` delimit TLPs (:class:`S7RxTuser`). A
  TLP starts at byte 0 or 8 of a beat ("Due to inherent 64-bit alignment of packets from the
  block, the only possible values are 5'b11000 (sof @ byte 8), 5'b10000 (sof @ byte 0)") and
  ends at byte 3, 7, 11 or 15. A TLP that ends in the lower half can share its beat with the
  next one starting at byte 8: the beat *straddles* two TLPs.
- TX at either width: DW0 in bits 31:0 of the first beat, no straddling (the core makes
  ``trn_tsof`` from "valid and not in a packet", so a TLP always starts at byte 0), ``tkeep``
  all ones but on the last beat, and in whole DWs: at 128 bits the core reads only bits 7, 11
  and 15 of ``tkeep`` (0x000F, 0x00FF, 0x0FFF, 0xFFFF), at 64 bits only bit 7 (0x0F, 0xFF)
  [axi_basic_tx, "tkeep_to_trem"]. ``tuser`` is in :class:`S7TxTuser`.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from ..tlp import TlpBeat, TlpStreamSignature
from ..streams import SkidBuffer


__all__ = ["S7RxTuser", "S7TxTuser", "S7RxMeta", "S7AxisSignature", "S7AxisRx", "S7AxisTx",
           "S7_DATA_WIDTHS"]


S7_DATA_WIDTHS = (64, 128)


class S7RxTuser(data.Struct):
    """[PG054] ``m_axis_rx_tuser[21:0]``, the same layout at 64 and 128 bits.

    As PG156's migration table lists it and [axi_basic_rx] assembles it ("TUSER bits
    [21:17] ... [0]"): ``ecrc_err`` (``rx_ecrc_err``, the packet has an ECRC error, at its end),
    ``err_fwd`` (``rx_err_fwd``, the packet is poisoned, EP set, for the whole packet),
    ``bar_hit`` (``rx_bar_hit``: BAR0 to BAR5 in bits 0 to 5, the expansion ROM in bit 6; bit 7
    is reserved and the core drives it 0), ``is_sof`` and ``is_eof`` (128 bits only). ``is_sof``
    is bit 4 "a TLP starts in this beat" and bits 3:0 its byte offset (0 or 8); ``is_eof`` is
    bit 4 "a TLP ends in this beat" and bits 3:0 the offset of its last byte (3, 7, 11 or 15).
    """
    ecrc_err: 1
    err_fwd:  1
    bar_hit:  8
    is_sof:   5
    _rsvd:    2
    is_eof:   5


class S7TxTuser(data.Struct):
    """[PG054] ``s_axis_tx_tuser[3:0]`` ([axi_basic_tx] maps them to ``trn_tecrc_gen``,
    ``trn_terrfwd``, ``trn_tstr`` and ``trn_tsrc_dsc``; PG156's table names them ``tx_ecrc_gen``,
    ``tx_err_fwd``, ``tx_str`` and ``t_src_dsc``).

    :class:`S7AxisTx` drives all four 0: no ECRC is generated (our TLPs have TD clear); a
    poisoned TLP carries EP in its own header, so ``err_fwd`` is not needed; ``str``
    (cut-through) would oblige ``tvalid`` to stay high through a TLP, which our sources do not
    promise, so the core stores each TLP before sending it; and our sources never abandon a TLP
    once begun (``src_dsc``).
    """
    ecrc_gen: 1
    err_fwd:  1
    str:      1
    src_dsc:  1


class S7RxMeta(data.Struct):
    """What the hard block says about the TLP on :attr:`S7AxisRx.tlp` besides its DWs, for a
    later hard-IP mode (BAR decode done by the block, poisoned-TLP handling).

    ``bar_hit`` and ``err_fwd`` are those of the beat where the TLP started (so that a beat
    that straddles two TLPs attributes them to the one starting in it); ``ecrc_err`` is that of
    the beat where it ended, shown on our ``last`` beat only.
    """
    bar_hit:  7
    err_fwd:  1
    ecrc_err: 1


class S7AxisSignature(wiring.Signature):
    """One direction of the hard block's AXI4-Stream interface, as its source sees it:
    ``tdata``, ``tkeep`` (a bit per byte), ``tvalid``, ``tlast`` and ``tuser`` out, ``tready``
    in.

    Parameters
    ----------
    data_width : int
        64 or 128.
    tuser : layout
        :class:`S7RxTuser` for ``m_axis_rx``, :class:`S7TxTuser` for ``s_axis_tx``.
    """
    def __init__(self, data_width, tuser):
        _check_width("S7AxisSignature", data_width)
        self.data_width = data_width
        super().__init__({
            "tdata":  Out(data_width),
            "tkeep":  Out(data_width // 8),
            "tvalid": Out(1),
            "tready": In(1),
            "tlast":  Out(1),
            "tuser":  Out(tuser),
        })


def _check_width(name, data_width):
    if data_width not in S7_DATA_WIDTHS:
        raise ValueError(f"{name} supports the 64- and 128-bit AXI4-Stream interfaces of the "
                         f"7-series PCIe block, not a data width of {data_width!r}")


def _reverse_bytes(dw):
    return Cat(dw[24:32], dw[16:24], dw[8:16], dw[0:8])


def _swap_payload(beat_data, beat, four_dw):
    """``beat_data`` with the bytes of each payload DW reversed, header DWs as they are.

    ``beat`` is the beat's number in its TLP (a signal; any value from 2 on may stand for all
    later beats), ``four_dw`` is Fmt bit 0 of the TLP's DW0: DW ``beat * per + p`` is payload
    from DW 3 or 4 on [PCIe-3.0 2.2.1]. Reversal is its own inverse, so RX and TX share it.
    """
    per = len(beat_data) // 32
    dws = []
    for p in range(per):
        dw = beat_data[32 * p:32 * p + 32]
        dws.append(Mux(beat * per + p >= 3 + four_dw, _reverse_bytes(dw), dw))
    return Cat(*dws)


_FMT_4DW_BIT = 29   # [PCIe-3.0 2.2.1 Figure 2-5] Fmt[0] of DW0: a 4-DW header


class S7AxisRx(wiring.Component):
    """Received TLPs: the hard block's ``m_axis_rx`` in, our TLP stream out.

    At 64 bits beats pass one for one, without a register: ``first`` is remembered from the
    previous beat's ``tlast``, ``keep`` is ``tkeep`` in DWs, payload DWs have their bytes
    reversed.

    At 128 bits the beats are cut at TLP boundaries and realigned, through a
    :class:`~rtl.streams.SkidBuffer` (so ``tlp`` and ``meta`` come from registers). The beat is
    seen as two halves of two DWs, which is the granularity of a TLP's start. A TLP that starts
    at byte 8 goes out two DWs down: its first half waits in a register and goes out with the
    low half of the next hard-block beat, and so on. A straddled beat becomes the last beat of
    one TLP and the start of the next. When the tail of a realigned TLP needs a beat of its own
    (its last half is the upper half of a hard-block beat) the hard-block beat is held
    (``tready`` low) for one more cycle; otherwise one beat is taken per cycle. ``tready`` is
    high only in the cycle the beat is used up, so nothing is lost or repeated whatever our
    side's back-pressure.

    Parameters
    ----------
    data_width : int
        64 or 128, the width of the hard block's interface and of ``tlp``.

    Attributes
    ----------
    m_axis_rx : S7AxisSignature(data_width, S7RxTuser), in
        The hard block's receive interface (connect ``m_axis_rx_*`` of the core).
    tlp : TlpStreamSignature(data_width), out
        The received TLPs, in our format (:mod:`rtl.tlp`).
    meta : S7RxMeta, out
        About the TLP of the beat on ``tlp``; valid with ``tlp.valid``.

    Raises
    ------
    ValueError
        If ``data_width`` is not 64 or 128.
    """
    def __init__(self, data_width):
        _check_width("S7AxisRx", data_width)
        self.data_width = data_width
        super().__init__({
            "m_axis_rx": In(S7AxisSignature(data_width, S7RxTuser)),
            "tlp":       Out(TlpStreamSignature(data_width)),
            "meta":      Out(S7RxMeta),
        })

    def elaborate(self, platform):
        m = Module()
        if self.data_width == 64:
            self._elaborate_64(m)
        else:
            self._elaborate_128(m)
        return m

    def _elaborate_64(self, m):
        axis, tlp = self.m_axis_rx, self.tlp
        beat = Signal(range(3))       # beats of this TLP already taken, 2 meaning "2 or more"
        four_dw = Signal()            # Fmt[0] of the TLP in progress, from its first beat
        first = Signal()
        four_now = Signal()
        m.d.comb += [
            first.eq(beat == 0),      # no start flag at 64 bits: after a tlast, or reset
            four_now.eq(Mux(first, axis.tdata[_FMT_4DW_BIT], four_dw)),
            tlp.valid.eq(axis.tvalid),
            axis.tready.eq(tlp.ready),
            tlp.payload.data.eq(_swap_payload(axis.tdata, beat, four_now)),
            # tkeep is 0x0F or 0xFF: DW1 is there when its first byte is.
            tlp.payload.keep.eq(Cat(axis.tkeep[0], axis.tkeep[4])),
            tlp.payload.first.eq(first),
            tlp.payload.last.eq(axis.tlast),
            # rx_bar_hit and rx_err_fwd hold for the whole packet, rx_ecrc_err is at its end.
            self.meta.bar_hit.eq(axis.tuser.bar_hit[:7]),
            self.meta.err_fwd.eq(axis.tuser.err_fwd),
            self.meta.ecrc_err.eq(axis.tuser.ecrc_err & axis.tlast),
        ]
        with m.If(axis.tvalid & axis.tready):
            m.d.sync += [
                beat.eq(Mux(axis.tlast, 0, Mux(beat == 2, 2, beat + 1))),
                four_dw.eq(four_now),
            ]

    def _elaborate_128(self, m):
        axis = self.m_axis_rx
        user = axis.tuser
        lo, hi = axis.tdata[:64], axis.tdata[64:]

        out_layout = data.StructLayout({"beat": TlpBeat(128), "meta": S7RxMeta})
        m.submodules.out = out = SkidBuffer(stream.Signature(out_layout))
        m.d.comb += [
            self.tlp.valid.eq(out.o.valid),
            self.tlp.payload.eq(out.o.payload.beat),
            self.meta.eq(out.o.payload.meta),
            out.o.ready.eq(self.tlp.ready),
        ]

        # [PG054, axi_basic_rx] is_sof = {present, at byte 8, 000}; is_eof = {present, DW, 11}.
        sof, sof_hi = user.is_sof[4], user.is_sof[3]
        eof, eof_dw = user.is_eof[4], user.is_eof[2:4]
        in_meta = Signal(S7RxMeta)
        m.d.comb += [in_meta.bar_hit.eq(user.bar_hit[:7]), in_meta.err_fwd.eq(user.err_fwd)]

        in_tlp = Signal()             # a TLP continues into the next hard-block beat
        low_done = Signal()           # this beat's low half is used; its high half is not
        pend = Signal()               # a half of a TLP started at byte 8 waits in pend_dws
        pend_dws = Signal(64)
        pend_first = Signal()
        pend_meta = Signal(S7RxMeta)  # of the TLP pend_dws starts
        cur_meta = Signal(S7RxMeta)   # of the TLP whose beats go out

        # The two halves of the hard-block beat: which hold DWs of a TLP, which start or end
        # one, and how many of their DWs are there.
        low_first, high_first = sof & ~sof_hi, sof & sof_hi
        low_eof, high_eof = eof & ~eof_dw[1], eof & eof_dw[1]
        low = ~low_done & (in_tlp | low_first)
        high = high_first | ((in_tlp | low_first) & ~low_eof)
        low_keep = Mux(low_eof & ~eof_dw[0], 0b01, 0b11)
        high_keep = Mux(high_eof & ~eof_dw[0], 0b01, 0b11)

        o = Signal(TlpBeat(128))
        o_meta = Signal(S7RxMeta)
        produce = Signal()            # a beat goes out for this hard-block beat now
        used_up = Signal()            # ... after which the hard-block beat is used up
        load_pend = Signal()          # ... and its high half waits in pend_dws
        with m.If(pend):
            # Realigned TLP: the waiting half and this low half make a beat. A straddled low
            # half ends the TLP and a new one starts in the high half.
            m.d.comb += [
                produce.eq(1),
                o.data.eq(Cat(pend_dws, lo)),
                o.keep.eq(Cat(Const(0b11, 2), low_keep)),
                o.first.eq(pend_first),
                o.last.eq(low_eof),
                o_meta.eq(Mux(pend_first, pend_meta, cur_meta)),
            ]
            with m.If(high & high_eof):
                # The TLP's tail is the high half: it goes out alone next cycle.
                m.d.comb += used_up.eq(0)
            with m.Else():
                m.d.comb += [used_up.eq(1), load_pend.eq(high)]
        with m.Elif(low & ~low_eof):
            # Aligned TLP: the beat goes out as it is.
            m.d.comb += [
                produce.eq(1),
                o.data.eq(axis.tdata),
                o.keep.eq(Cat(Const(0b11, 2), high_keep)),
                o.first.eq(low_first),
                o.last.eq(high_eof),
                o_meta.eq(Mux(low_first, in_meta, cur_meta)),
                used_up.eq(1),
            ]
        with m.Elif(low):
            # An aligned TLP ends in the low half; the high half may start the next one.
            m.d.comb += [
                produce.eq(1),
                o.data.eq(lo),
                o.keep.eq(low_keep),
                o.first.eq(low_first),
                o.last.eq(1),
                o_meta.eq(Mux(low_first, in_meta, cur_meta)),
                used_up.eq(1),
                load_pend.eq(high),
            ]
        with m.Elif(high & high_eof):
            # The tail of a realigned TLP, held over from the cycle before.
            m.d.comb += [
                produce.eq(1),
                o.data.eq(hi),
                o.keep.eq(high_keep),
                o.first.eq(0),
                o.last.eq(1),
                o_meta.eq(cur_meta),
                used_up.eq(1),
            ]
        with m.Else():
            # A TLP starts at byte 8 after an idle low half (or the beat holds nothing).
            m.d.comb += [produce.eq(0), used_up.eq(1), load_pend.eq(high)]

        go = Signal()
        m.d.comb += [
            go.eq(axis.tvalid & (~produce | out.i.ready)),
            axis.tready.eq(go & used_up),
            out.i.valid.eq(axis.tvalid & produce),
            out.i.payload.beat.data.eq(_swap_payload(o.data, ~o.first, o.data[_FMT_4DW_BIT])),
            out.i.payload.beat.keep.eq(o.keep),
            out.i.payload.beat.first.eq(o.first),
            out.i.payload.beat.last.eq(o.last),
            out.i.payload.meta.bar_hit.eq(o_meta.bar_hit),
            out.i.payload.meta.err_fwd.eq(o_meta.err_fwd),
            out.i.payload.meta.ecrc_err.eq(user.ecrc_err & o.last),
        ]
        with m.If(go):
            m.d.sync += [low_done.eq(~used_up), pend.eq(load_pend)]
            with m.If(load_pend):
                m.d.sync += [pend_dws.eq(hi), pend_first.eq(high_first), pend_meta.eq(in_meta)]
            with m.If(produce):
                m.d.sync += cur_meta.eq(o_meta)
            with m.If(used_up):
                m.d.sync += in_tlp.eq(high_first | ((in_tlp | low_first) & ~eof))


class S7AxisTx(wiring.Component):
    """TLPs to send: our TLP stream in, the hard block's ``s_axis_tx`` out.

    Beats pass one for one, without a register (``tvalid`` is ``tlp.valid``, ``tlp.ready`` is
    ``tready``): our ``first`` beat already starts at DW0, which is where the hard block wants
    a TLP, and never holds two TLPs. ``tkeep`` is ``keep`` a byte per bit (0x0F/0xFF at 64 bits,
    0x000F/0x00FF/0x0FFF/0xFFFF at 128), ``tlast`` is ``last``, payload DWs have their bytes
    reversed, and ``tuser`` is 0 (see :class:`S7TxTuser`). Gaps in ``tvalid`` inside a TLP are
    allowed, since ``str`` is 0.

    Parameters
    ----------
    data_width : int
        64 or 128, the width of the hard block's interface and of ``tlp``.

    Attributes
    ----------
    tlp : TlpStreamSignature(data_width), in
        The TLPs to send, in our format (:mod:`rtl.tlp`).
    s_axis_tx : S7AxisSignature(data_width, S7TxTuser), out
        The hard block's transmit interface (connect ``s_axis_tx_*`` of the core).

    Raises
    ------
    ValueError
        If ``data_width`` is not 64 or 128.
    """
    def __init__(self, data_width):
        _check_width("S7AxisTx", data_width)
        self.data_width = data_width
        super().__init__({
            "tlp":       In(TlpStreamSignature(data_width)),
            "s_axis_tx": Out(S7AxisSignature(data_width, S7TxTuser)),
        })

    def elaborate(self, platform):
        m = Module()
        tlp, axis = self.tlp, self.s_axis_tx
        beat = Signal(range(3))       # beats of this TLP already sent, 2 meaning "2 or more"
        four_dw = Signal()            # Fmt[0] of the TLP in progress, from its first beat
        beat_now = Signal(range(3))
        four_now = Signal()
        m.d.comb += [
            beat_now.eq(Mux(tlp.payload.first, 0, beat)),
            four_now.eq(Mux(tlp.payload.first, tlp.payload.data[_FMT_4DW_BIT], four_dw)),
            axis.tvalid.eq(tlp.valid),
            tlp.ready.eq(axis.tready),
            axis.tdata.eq(_swap_payload(tlp.payload.data, beat_now, four_now)),
            axis.tkeep.eq(Cat(k.replicate(4) for k in tlp.payload.keep)),
            axis.tlast.eq(tlp.payload.last),
            axis.tuser.eq(0),
        ]
        with m.If(tlp.valid & tlp.ready):
            m.d.sync += [
                beat.eq(Mux(beat_now == 2, 2, beat_now + 1)),
                four_dw.eq(four_now),
            ]
        return m
