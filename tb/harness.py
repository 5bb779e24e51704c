"""The simulation harness: the endpoint as the cocotb testbench simulates it, with the streams
that move data beat by beat driven by transactors in the design instead of by Python at every
clock edge.

A beat-by-beat stream driven from Python costs a few microseconds of Python per beat and
cycle (plus, on Icarus, a write the simulator must settle); a Verilator model of the endpoint
runs a cycle in about three. So the testbench hands over whole chunks of beats instead:

* :class:`StreamFeeder` sends a stream (to the DUT) from chunks the testbench loads through a
  wide port, a beat per cycle; two chunk buffers, so that the next chunk is loaded while one is
  sent and the stream runs without a bubble; the testbench asks for a load as soon as the last
  one was taken, and the feeder takes it when a buffer is free;
* :class:`StreamCollector` takes a stream (from the DUT) into a chunk buffer and publishes it
  on a wide port when a packet ends (the beat's ``last`` bit) or the buffer is full; the
  testbench, woken by the change of ``seq``, reads it in the same time step.

Random stalls stay exactly reproducible: each transactor draws them from its own 32-bit LFSR,
seeded by the testbench (``seed``, loaded while ``rst`` is high), with the probability given
as ``threshold / 65536``: an idle cycle before a beat (feeder; a beat shown stays until taken)
or ``ready`` low (collector), per cycle.

:class:`SimHarness` is :class:`rtl.top.VirtioBlkEndpoint` with a feeder on ``rx``, a collector
on ``tx``, and the storage port served the same way (commands and write data collected, read
data and completions fed); ``intx`` and ``storage.writeback`` are its own ports. The design the
harness wraps is the product's, untouched: ``make verilog``, ``make synth`` and board builds
use :class:`~rtl.top.VirtioBlkEndpoint` alone. The Python side of each transactor is in
:mod:`tb.transactors`.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, ResetSignal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.tlp import TlpBeat
from rtl.storage import StorageCommand, StorageCompletion, StorageData, StorageSignature
from rtl.top import VirtioBlkEndpoint, VirtioBlkS7Endpoint
from rtl.phy.s7_axis import S7RxTuser, S7TxTuser
from rtl.phy.s7_cfg import S7ConfigSignature, S7InterruptSignature, S7ErrorSignature


__all__ = ["FeedSignature", "CollectSignature", "StreamFeeder", "StreamCollector",
           "SimHarness", "S7SimHarness", "StorageHarness", "tlp_chunk", "s7_beat_layout",
           "harness_for"]


def _chunk_members(width, chunk, data_dir):
    """The members both testbench ports have: a chunk (``data``, ``count``) going ``data_dir``,
    and the stall generator's ``threshold`` and ``seed``."""
    return {"data":      data_dir(width * chunk),
            "count":     data_dir(range(chunk + 1)),
            "threshold": In(16),
            "seed":      In(32)}


class FeedSignature(wiring.Signature):
    """The testbench's port of a :class:`StreamFeeder`, as the feeder has it: all ``In`` but
    ``taken`` and ``busy``.

    Members: ``data`` (``chunk`` beats of ``width`` bits, beat 0 in the low bits), ``count``
    (beats in it), ``toggle`` (a change asks for ``data``/``count`` to be loaded; they must
    stay until it is), ``taken`` (out: the ``toggle`` value last loaded), ``busy`` (out: beats
    are left to send), ``threshold`` (idle cycles per 65536), ``seed``."""
    def __init__(self, width, chunk):
        self.width, self.chunk = width, chunk
        super().__init__({**_chunk_members(width, chunk, In),
                          "toggle": In(1), "taken": Out(1), "busy": Out(1)})


class CollectSignature(wiring.Signature):
    """The testbench's port of a :class:`StreamCollector`, as the collector has it.

    Members: ``data``/``count`` (out: the last chunk published, its ``count`` beats the top
    ones of ``data``, the first lowest), ``seq`` (out: chunks published, wrapping),
    ``accept`` (``ready`` may be high only while it is), ``threshold`` (cycles with ``ready``
    low per 65536), ``seed``."""
    def __init__(self, width, chunk):
        self.width, self.chunk = width, chunk
        super().__init__({**_chunk_members(width, chunk, Out),
                          "seq": Out(16), "accept": In(1)})


def _lfsr(m, seed):
    """A 32-bit Galois LFSR, a step per cycle, loaded with ``seed`` (never 0) during reset."""
    state = Signal(32, init=1, reset_less=True)
    # x^32 + x^22 + x^2 + x + 1, a maximal-length polynomial.
    step = Mux(state[0], (state >> 1) ^ 0x8020_0003, state >> 1)
    m.d.sync += state.eq(Mux(ResetSignal(), seed | 1, step))
    return state


class StreamFeeder(wiring.Component):
    """Sends a stream from chunks the testbench loads (see the module docstring).

    Parameters
    ----------
    width : int
        Bits per beat (the stream's payload).
    chunk : int
        Beats per load, at least 1.

    Attributes
    ----------
    o : stream.Signature(width), out
        The stream.
    tb : FeedSignature(width, chunk)
        The testbench's port.
    go : Signal(1), in
        A beat is offered only while it is high (one already offered stays until taken).
    """
    def __init__(self, width, chunk):
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"StreamFeeder chunk must be a positive integer, not {chunk!r}")
        self.width, self.chunk = width, chunk
        super().__init__({"o": Out(stream.Signature(width)),
                          "tb": Out(FeedSignature(width, chunk)),
                          "go": In(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        w, k = self.width, self.chunk
        tb = self.tb
        # Two chunk buffers; ``head`` is sent from, ``full`` of them hold beats to send. They
        # and the load handshake keep their values through a reset, so that a testbench in the
        # middle of a load and the design agree (the testbench reads ``taken`` when it starts).
        # The testbench may ask for a load whenever the last one has been taken: the feeder
        # takes it as soon as it has room, so no state of the testbench's can be stale.
        bufs = [Signal(w * k, name=f"buf{i}", reset_less=True) for i in range(2)]
        counts = [Signal(range(k + 1), name=f"count{i}", reset_less=True) for i in range(2)]
        head = Signal()
        full = Signal(range(3))
        index = Signal(range(k))
        taken = Signal(reset_less=True)
        load = Signal()
        m.d.comb += [tb.taken.eq(taken), tb.busy.eq(full != 0)]

        # The beat: an idle cycle at random before each, and one shown stays until taken.
        hold = Signal()
        lfsr = _lfsr(m, tb.seed)
        gap = Signal()
        m.d.comb += gap.eq((lfsr[:16] < tb.threshold) & ~hold)
        # Each buffer shifts down a beat as one is taken: the beat is always the low bits (a
        # fixed slice is cheaper to simulate than an index into a wide vector).
        beat = Signal(w)
        m.d.comb += [
            beat.eq(Mux(head, bufs[1][:w], bufs[0][:w])),
            self.o.payload.eq(beat),
            self.o.valid.eq((full != 0) & ~gap & (hold | self.go)),
        ]
        m.d.sync += hold.eq(self.o.valid & ~self.o.ready)

        done = Signal()   # the last beat of the head buffer goes this cycle
        m.d.comb += done.eq(self.o.valid & self.o.ready &
                            (index == Mux(head, counts[1], counts[0]) - 1))
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += index.eq(Mux(done, 0, index + 1))
            for i in range(2):
                with m.If(head == i):
                    m.d.sync += bufs[i].eq(bufs[i] >> w)
        with m.If(done):
            m.d.sync += head.eq(~head)
        # A load is taken when a buffer is free (or frees this cycle), into the buffer after
        # the one still full (with none full, or one emptying now, that is ``head``).
        m.d.comb += load.eq((tb.toggle != taken) & ((full < 2) | done))
        target = Signal()
        m.d.comb += target.eq(head ^ (full == 1))
        with m.If(load):
            m.d.sync += taken.eq(tb.toggle)
            for i in range(2):
                with m.If(target == i):
                    m.d.sync += [bufs[i].eq(tb.data), counts[i].eq(tb.count)]
        m.d.sync += full.eq(full + load - done)
        return m


class StreamCollector(wiring.Component):
    """Takes a stream into chunks the testbench reads (see the module docstring).

    Parameters
    ----------
    width : int
        Bits per beat.
    chunk : int
        Beats per chunk, at least 1.
    last : int or None
        The bit of a beat that ends a packet: a chunk is published after it (and when full).

    Attributes
    ----------
    i : stream.Signature(width), in
        The stream.
    tb : CollectSignature(width, chunk)
        The testbench's port.
    """
    def __init__(self, width, chunk, last=None):
        if not isinstance(chunk, int) or chunk < 1:
            raise ValueError(f"StreamCollector chunk must be a positive integer, not {chunk!r}")
        if last is not None and not 0 <= last < width:
            raise ValueError(f"StreamCollector last bit {last!r} is not a bit of a {width}-bit "
                             f"beat")
        self.width, self.chunk, self.last = width, chunk, last
        super().__init__({"i": In(stream.Signature(width)),
                          "tb": Out(CollectSignature(width, chunk))})

    def elaborate(self, platform):
        m = Module()
        w, k = self.width, self.chunk
        tb = self.tb
        n = Signal(range(k + 1))
        lfsr = _lfsr(m, tb.seed)
        m.d.comb += self.i.ready.eq(tb.accept & ~(lfsr[:16] < tb.threshold))
        # Beats shift into the published buffer from the top (a fixed shift is cheaper to
        # simulate than an index into a wide vector): a chunk of ``count`` beats is its top
        # ``count`` beats, the first lowest. The testbench reads it in the time step ``seq``
        # changes, before the next beat can move it. It and ``seq`` keep their values through a
        # reset (the testbench reads ``seq`` when it starts).
        data_out = Signal(w * k, reset_less=True)
        count_out = Signal(range(k + 1), reset_less=True)
        seq = Signal(16, reset_less=True)
        m.d.comb += [tb.data.eq(data_out), tb.count.eq(count_out), tb.seq.eq(seq)]
        ends = (n == k - 1)
        if self.last is not None:
            ends = ends | self.i.payload[self.last]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += data_out.eq(Cat(data_out[w:], self.i.payload))
            with m.If(ends):
                m.d.sync += [count_out.eq(n + 1), seq.eq(seq + 1), n.eq(0)]
            with m.Else():
                m.d.sync += n.eq(n + 1)
        return m


def tlp_chunk(data_width):
    """Beats of a TLP chunk: a 4 DW header and 256 bytes (the largest Max_Payload_Size the
    endpoint supports), so a TLP of the link goes in one load."""
    return -(-(16 + 256) * 8 // data_width)


# Beats per chunk of storage data: 4 KiB at 64 bits would be 512; a sector is plenty.
STORAGE_CHUNK_BYTES = 256


def _width(layout):
    return data.Layout.cast(layout).size


def _storage_signature(data_width):
    """The back-end's side of the storage transactors: ``cmd`` and ``wdata`` collected,
    ``rdata`` and ``cpl`` fed, and ``writeback`` (out), the cache mode."""
    beat = _width(StorageData(data_width))
    chunk = STORAGE_CHUNK_BYTES * 8 // data_width
    return wiring.Signature({
        "cmd":       Out(CollectSignature(_width(StorageCommand), 1)),
        "wdata":     Out(CollectSignature(beat, chunk)),
        "rdata":     Out(FeedSignature(beat, chunk)),
        "cpl":       Out(FeedSignature(_width(StorageCompletion), 1)),
        "writeback": Out(1),
    })


class _StoragePort(wiring.Component):
    """The storage back-end's four streams behind transactors. ``dev`` is the device's side
    of the port, ``tb`` the back-end's (:func:`_storage_signature`)."""
    def __init__(self, data_width):
        self.data_width = data_width
        super().__init__({"dev": In(StorageSignature(data_width)),
                          "tb":  Out(_storage_signature(data_width))})

    def elaborate(self, platform):
        m = Module()
        dev, tb = self.dev, self.tb
        last = data.Layout.cast(StorageData(self.data_width))["last"].offset
        # Each transactor as wide and deep as its port says.
        members = tb.signature.members
        parts = {name: StreamCollector(members[name].signature.width,
                                       members[name].signature.chunk,
                                       last=last if name == "wdata" else None)
                 for name in ("cmd", "wdata")}
        parts.update({name: StreamFeeder(members[name].signature.width,
                                         members[name].signature.chunk)
                      for name in ("rdata", "cpl")})
        for name, part in parts.items():
            m.submodules[name] = part
            wiring.connect(m, wiring.flipped(getattr(tb, name)), part.tb)
        for name in ("cmd", "wdata"):
            part = parts[name]
            m.d.comb += [part.i.valid.eq(getattr(dev, name).valid),
                         part.i.payload.eq(getattr(dev, name).payload),
                         getattr(dev, name).ready.eq(part.i.ready)]
        for name in ("rdata", "cpl"):
            part = parts[name]
            m.d.comb += [getattr(dev, name).valid.eq(part.o.valid),
                         getattr(dev, name).payload.eq(part.o.payload),
                         part.o.ready.eq(getattr(dev, name).ready)]
        m.d.comb += tb.writeback.eq(dev.writeback)
        # [rtl.storage] A completion comes after its command's data: the testbench loads a
        # READ's completion once its last beat is loaded, and it is offered only when the read
        # data has all gone (no beat left, no load waiting).
        rdata = parts["rdata"].tb
        m.d.comb += parts["cpl"].go.eq(~rdata.busy & (rdata.toggle == rdata.taken))
        return m


class SimHarness(wiring.Component):
    """:class:`rtl.top.VirtioBlkEndpoint` behind transactors, the toplevel the cocotb
    testbench simulates (see the module docstring).

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    rx : FeedSignature
        TLPs into the endpoint, a chunk a TLP (:func:`tlp_chunk` beats of
        :func:`rtl.tlp.TlpBeat`).
    tx : CollectSignature
        TLPs out of the endpoint, published at each TLP's last beat.
    intx : Signal(1), out
    storage : the storage port: ``cmd`` and ``wdata`` collected, ``rdata`` and ``cpl`` fed,
        and ``writeback`` (out), the cache mode.
    """
    def __init__(self, params):
        self.params = params
        w = params.data_width
        self.beat_width = _width(TlpBeat(w))
        k = tlp_chunk(w)
        super().__init__({
            "rx":      Out(FeedSignature(self.beat_width, k)),
            "tx":      Out(CollectSignature(self.beat_width, k)),
            "intx":    Out(1),
            "storage": Out(_storage_signature(w)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        w = p.data_width
        k = tlp_chunk(w)
        last = data.Layout.cast(TlpBeat(w))["last"].offset
        m.submodules.dut = dut = VirtioBlkEndpoint(p)
        m.submodules.rx = rx = StreamFeeder(self.beat_width, k)
        m.submodules.tx = tx = StreamCollector(self.beat_width, k, last=last)
        m.submodules.storage = port = _StoragePort(w)
        m.d.comb += [dut.rx.valid.eq(rx.o.valid), dut.rx.payload.eq(rx.o.payload),
                     rx.o.ready.eq(dut.rx.ready),
                     tx.i.valid.eq(dut.tx.valid), tx.i.payload.eq(dut.tx.payload),
                     dut.tx.ready.eq(tx.i.ready),
                     self.intx.eq(dut.intx)]
        wiring.connect(m, wiring.flipped(self.rx), rx.tb)
        wiring.connect(m, wiring.flipped(self.tx), tx.tb)
        wiring.connect(m, dut.storage, port.dev)
        wiring.connect(m, wiring.flipped(self.storage), port.tb)
        return m


def s7_beat_layout(data_width, tuser):
    """One beat of the 7-series hard block's AXI4-Stream interface as the harness's transactors
    carry it: ``tdata``, ``tkeep``, ``tlast``, ``tuser`` (:class:`~rtl.phy.s7_axis.S7RxTuser` or
    :class:`~rtl.phy.s7_axis.S7TxTuser`); ``tvalid``/``tready`` are the stream's handshake."""
    return data.StructLayout({"tdata": data_width, "tkeep": data_width // 8, "tlast": 1,
                              "tuser": tuser})


class S7SimHarness(wiring.Component):
    """:class:`rtl.top.VirtioBlkS7Endpoint` (the endpoint behind the 7-series hard block, with
    the AXI4-Stream adapters in the loop) behind transactors: what the testbench's model of the
    hard block (:mod:`tb.hardblock`) drives.

    Attributes
    ----------
    rx : FeedSignature
        Beats of ``m_axis_rx`` (:func:`s7_beat_layout` with ``S7RxTuser``), a chunk a TLP.
    tx : CollectSignature
        Beats of ``s_axis_tx`` (``S7TxTuser``), published at each ``tlast``.
    host : S7ConfigSignature, flipped
        The hard block's ``cfg_*`` outputs, driven by the testbench.
    irq : S7InterruptSignature
        The DUT's interrupt requests to the block; the testbench's model of the block answers
        them (``cfg_interrupt_rdy``) and drives ``cfg_interrupt_msienable``.
    err : S7ErrorSignature
        The DUT's error reports to the block, which the model records and completes.
    inta : Signal(1), in
        INTA# as the block's Assert_INTA/Deassert_INTA messages left it (the model drives it).
    intx : Signal(1), out
        ``inta``: what the testbench's driver takes for INTA# (as :class:`SimHarness`'s
        ``intx``, which is the endpoint's level).
    intx_level : Signal(1), out
        The function's INTA# level, before the block.
    storage : as :class:`SimHarness`.
    """
    def __init__(self, params):
        self.params = params
        w = params.data_width
        self.rx_width = _width(s7_beat_layout(w, S7RxTuser))
        self.tx_width = _width(s7_beat_layout(w, S7TxTuser))
        k = tlp_chunk(w)
        super().__init__({
            "rx":      Out(FeedSignature(self.rx_width, k)),
            "tx":      Out(CollectSignature(self.tx_width, k)),
            "host":    In(S7ConfigSignature()),
            "irq":     Out(S7InterruptSignature()),
            "err":     Out(S7ErrorSignature()),
            "inta":    In(1),
            "intx":    Out(1),
            "intx_level": Out(1),
            "storage": Out(_storage_signature(w)),
        })

    def elaborate(self, platform):
        m = Module()
        p = self.params
        w = p.data_width
        k = tlp_chunk(w)
        last = data.Layout.cast(s7_beat_layout(w, S7TxTuser))["tlast"].offset
        m.submodules.dut = dut = VirtioBlkS7Endpoint(p)
        m.submodules.rx = rx = StreamFeeder(self.rx_width, k)
        m.submodules.tx = tx = StreamCollector(self.tx_width, k, last=last)
        m.submodules.storage = port = _StoragePort(w)
        rx_beat = Signal(s7_beat_layout(w, S7RxTuser))
        tx_beat = Signal(s7_beat_layout(w, S7TxTuser))
        axis_rx, axis_tx = dut.m_axis_rx, dut.s_axis_tx
        m.d.comb += [
            rx_beat.eq(rx.o.payload),
            axis_rx.tvalid.eq(rx.o.valid), rx.o.ready.eq(axis_rx.tready),
            axis_rx.tdata.eq(rx_beat.tdata), axis_rx.tkeep.eq(rx_beat.tkeep),
            axis_rx.tlast.eq(rx_beat.tlast), axis_rx.tuser.eq(rx_beat.tuser),
            tx_beat.tdata.eq(axis_tx.tdata), tx_beat.tkeep.eq(axis_tx.tkeep),
            tx_beat.tlast.eq(axis_tx.tlast), tx_beat.tuser.eq(axis_tx.tuser),
            tx.i.valid.eq(axis_tx.tvalid), tx.i.payload.eq(tx_beat),
            axis_tx.tready.eq(tx.i.ready),
            self.intx.eq(self.inta),
            self.intx_level.eq(dut.intx),
        ]
        wiring.connect(m, dut.irq, wiring.flipped(self.irq))
        wiring.connect(m, dut.err, wiring.flipped(self.err))
        wiring.connect(m, wiring.flipped(self.rx), rx.tb)
        wiring.connect(m, wiring.flipped(self.tx), tx.tb)
        wiring.connect(m, wiring.flipped(self.host), dut.host)
        wiring.connect(m, dut.storage, port.dev)
        wiring.connect(m, wiring.flipped(self.storage), port.tb)
        return m


def harness_for(params):
    """The harness that simulates the build ``params``: :class:`S7SimHarness` behind the
    7-series hard block, :class:`SimHarness` otherwise."""
    return S7SimHarness(params) if params.hard_ip == "s7" else SimHarness(params)


class StorageHarness(wiring.Component):
    """The storage port's transactors alone, the device's side as ports: what the storage
    back-end's own tests (``tests/test_backend.py``) drive.

    Attributes
    ----------
    dev : StorageSignature(data_width), flipped: the device's side, driven by the test.
    storage : the back-end's side, as in :class:`SimHarness`.
    """
    def __init__(self, data_width=64):
        self.data_width = data_width
        super().__init__({
            "dev": In(StorageSignature(data_width)),
            "storage": Out(_storage_signature(data_width)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.port = port = _StoragePort(self.data_width)
        wiring.connect(m, wiring.flipped(self.dev), port.dev)
        wiring.connect(m, wiring.flipped(self.storage), port.tb)
        return m
