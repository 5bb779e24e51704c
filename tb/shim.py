# Ref: PCIe Base 3.0 section 2.2 (TLP formats)
"""The link between cocotbext-pcie and the DUT's TLP streams.

:class:`TlpShim` is a :class:`cocotbext.pcie.core.Device` with no functions of its own: every TLP
the RootComplex sends down the link, configuration type 0 included, goes into the DUT's ``rx``
stream, and every TLP the DUT puts on ``tx`` goes back up as a :class:`Tlp`. The DUT owns its
configuration space; the shim only reframes.

Beats follow :func:`rtl.tlp.TlpBeat`: header DWs in PCIe order with DW0 in the low bits of the
first beat, header DW values as the PCIe figures draw them (``fmt`` in bits 31:29 of DW0), and
payload DWs little-endian (the byte at the lowest address in bits 7:0). They go through the
simulation harness's transactors (:mod:`tb.harness`): a TLP is loaded into the ``rx`` feeder
whole, and the ``tx`` collector publishes each TLP the DUT sends, so the shim's Python runs per
TLP, not per beat.
"""

import random
import struct
from collections import deque

import cocotb
from cocotb.triggers import Event, Timer
from cocotb.utils import get_sim_steps, get_sim_time
from cocotbext.pcie.core import Device
from cocotbext.pcie.core.dllp import Dllp
from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId
from amaranth.lib import data

from rtl.tlp import TlpBeat
from .transactors import Feeder, Collector


__all__ = ["TlpShim", "TlpTrace", "tlp_to_dws", "dws_to_tlp", "describe_tlp"]


def tlp_to_dws(tlp):
    """A :class:`Tlp` -> list of DW values as carried on the stream."""
    pkt = tlp.pack()
    hdr = tlp.get_header_size_dw()
    return ([struct.unpack_from(">L", pkt, 4 * i)[0] for i in range(hdr)] +
            [struct.unpack_from("<L", pkt, 4 * i)[0] for i in range(hdr, len(pkt) // 4)])


def dws_to_tlp(dws):
    """The DW values of one TLP from the stream -> a :class:`Tlp`."""
    # [PCIe-3.0 2.2.1] Fmt bit 0 (DW0 bit 29) selects a 4 DW header.
    hdr = 4 if dws[0] >> 29 & 1 else 3
    pkt = b"".join(struct.pack(">L", dw) for dw in dws[:hdr])
    pkt += b"".join(struct.pack("<L", dw) for dw in dws[hdr:])
    return Tlp.unpack(pkt)


class _BeatFormat:
    """Packs and unpacks beat payloads using the RTL's own layout (one source of truth)."""
    def __init__(self, data_width):
        layout = TlpBeat(data_width)
        self.rx_width = self.tx_width = data.Layout.cast(layout).size
        self.per_beat = data_width // 32
        self.keep_shift = layout["keep"].offset
        self.first_shift = layout["first"].offset
        self.last_shift = layout["last"].offset

    def pack(self, dws):
        beats = []
        for i in range(0, len(dws), self.per_beat):
            chunk = dws[i:i + self.per_beat]
            value = sum(dw << 32 * k for k, dw in enumerate(chunk))
            value |= ((1 << len(chunk)) - 1) << self.keep_shift
            value |= int(i == 0) << self.first_shift
            value |= int(i + self.per_beat >= len(dws)) << self.last_shift
            beats.append(value)
        return beats

    def unpack(self, value):
        """-> (dws, first, last)"""
        keep = value >> self.keep_shift & ((1 << self.per_beat) - 1)
        dws = [value >> 32 * k & 0xffffffff for k in range(self.per_beat) if keep >> k & 1]
        return dws, bool(value >> self.first_shift & 1), bool(value >> self.last_shift & 1)

    def finish(self, dws):
        """The DWs of a whole TLP from ``tx`` -> as :func:`dws_to_tlp` takes them (here they
        are already)."""
        return dws


class TlpShim(Device):
    """A cocotbext-pcie device whose single function is the DUT, at the TLP level.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel (:class:`tb.harness.SimHarness`), with ``clk`` and the transactor ports
        ``rx__*`` (a feeder into the DUT's ``rx``) and ``tx__*`` (a collector of its ``tx``).
    data_width : int
        Width of the TLP streams (``DeviceParams.data_width``).
    idle_prob : float
        Probability of an idle cycle before each ``rx`` beat (source stalls).
    stall_prob : float
        Probability that ``tx.ready`` is low in a cycle (back-pressure).
    rng : random.Random
        Seeds the transactors' stall generators, so a seed replays them.
    on_request : callable
        Called with each :class:`Tlp` into the DUT, in link order.
    on_completion : callable
        Called with the DWs of each TLP out of the DUT, in link order; returns the parsed
        :class:`Tlp`, or None if it is malformed (the shim then stops the test). The
        testbench's TLP checker and scoreboard hang here.

    Attributes
    ----------
    dma_fault : callable or None
        Fault injection for the DUT's memory reads: ``dma_fault(tlp)`` returns None (the read
        goes to the RootComplex), ``"ur"`` or ``"ca"`` (the shim answers with a Completion of
        that status [PCIe-3.0 2.3.2], as a host bridge does for an address it cannot serve),
        ``"poisoned"`` (the RootComplex answers, its first completion goes in with EP set
        [PCIe-3.0 2.7.2]) or ``"timeout"`` (the read is dropped: the DUT's completion timer
        must expire [PCIe-3.0 2.8]).
    faults : list of (str, Tlp)
        The faults injected, in order.
    host_latency_ns : int
        The host's read latency (0: the RootComplex model's own, 10 to 40 cycles): the
        completions of a memory read of the DUT go into it no earlier than this long after the
        read left it, as a real host's memory takes 0.4 to 1 µs to answer. Completions keep
        the order the RootComplex sent them in; requests to the DUT are not held (posted
        requests may pass completions [PCIe-3.0 2.4.1]). A parameter of the testbench (``make
        bench`` sets it per point), not of the device.
    trace : callable or None
        ``trace(direction, tlp)`` for every TLP: ``"rx"`` as it is handed to the DUT's ``rx``
        feeder (its first beat goes in a cycle or two later), ``"tx"`` as the DUT's last beat
        of it is collected. None (the default) traces nothing; ``TLP_TRACE=<file>`` makes the
        testbench set a :class:`TlpTrace` here (which also logs, as ``rc``, each of the DUT's
        TLPs reaching the RootComplex: :meth:`TlpTrace.watch`).
    """
    def __init__(self, dut, data_width, *, idle_prob=0.0, stall_prob=0.0, rng=None,
                 on_request=None, on_completion=None, fmt=None):
        super().__init__()
        self.dut = dut
        self.clk = dut.clk
        # How a TLP's DWs become the transactors' beats and back: our TLP streams'
        # (rtl.tlp.TlpBeat) unless a hard block's model brings its own (tb.hardblock).
        self.fmt = fmt or _BeatFormat(data_width)
        self.idle_prob = idle_prob
        self.stall_prob = stall_prob
        self.rng = rng or random.Random(0)
        self.on_request = on_request or (lambda tlp: None)
        self.on_completion = on_completion or dws_to_tlp
        self.rx_count = 0
        self.tx_count = 0
        self._local = {}
        self.dma_fault = None
        self.faults = []
        self._poison = set()
        self.host_latency_ns = 0
        self.trace = None
        self._read_sent = {}        # (requester ID, tag) -> when the read left the DUT (steps)
        self._held = deque()        # (due, Tlp): completions waiting for the host latency

        # The harness's transactors (tb/harness.py): a TLP a load into rx, a TLP a chunk out
        # of tx, each with its own seeded stalls.
        self._rx = Feeder(dut, "rx", self.fmt.rx_width, idle_prob, self.rng.randrange(1 << 32))
        self._tx = Collector(dut, "tx", self.fmt.tx_width, self._take_beats, stall_prob,
                             self.rng.randrange(1 << 32))
        self._dws = []

    async def upstream_recv(self, tlp):
        """A TLP from the link: forward it to the DUT whatever it is."""
        self.log.debug("To DUT: %r", tlp)
        assert tlp.check(), f"RootComplex sent a malformed TLP: {tlp!r}"
        tlp.release_fc()
        if self._poison and tlp.is_completion():
            key = (int(tlp.requester_id), tlp.tag)
            if key in self._poison and tlp.has_data():
                self._poison.discard(key)
                tlp.ep = True
        if tlp.is_completion() and self._read_sent:
            sent = self._read_sent.get((int(tlp.requester_id), tlp.tag))
            if sent is not None:
                due = sent + get_sim_steps(self.host_latency_ns, "ns")
                if due > get_sim_time("step") or self._held:
                    self._held.append((due, tlp))
                    if len(self._held) == 1:
                        cocotb.start_soon(self._release_held())
                    return
        self._deliver(tlp)

    def _deliver(self, tlp):
        if self.trace is not None:
            self.trace("rx", tlp)
        self.on_request(tlp)
        self.rx_count += 1
        self._enqueue(tlp_to_dws(tlp))

    async def _release_held(self):
        """Hand the held completions to the DUT, in order, each at its due time."""
        while self._held:
            due, tlp = self._held[0]
            now = get_sim_time("step")
            if due > now:
                await Timer(due - now, "step")
            self._held.popleft()
            self._deliver(tlp)

    def _enqueue(self, dws):
        """The DWs of one TLP go into the DUT after those already waiting."""
        self._rx.send(self.fmt.pack(dws))

    @property
    def rx_pending(self):
        """Beats waiting to go into the DUT."""
        return self._rx.pending

    def _take_beats(self, beats):
        """A chunk of the DUT's ``tx``: at most one TLP, whole or its first beats."""
        for value in beats:
            dws, first, last = self.fmt.unpack(value)
            if first != (not self._dws):
                raise AssertionError(f"TLP framing: first={first} after {len(self._dws)} DWs")
            self._dws.extend(dws)
            if last:
                dws, self._dws = self._dws, []
                self._from_dut(self.fmt.finish(dws))

    async def inject(self, tlp):
        """Put ``tlp`` straight onto the link, as if a switch had sent it, and return the DUT's
        completion (or None for a posted request). For requests the RootComplex never makes
        (Configuration Type 1, I/O, MRdLk, completions to the endpoint); the completion is
        taken here and not forwarded, so the RootComplex's tags are left alone."""
        slot = None
        if tlp.is_nonposted():
            slot = self._local[(int(tlp.requester_id), tlp.tag)] = [Event(), None]
        await self.upstream_recv(tlp)
        if slot is None:
            return None
        await slot[0].wait()
        return slot[1]

    def _from_dut(self, dws):
        self.tx_count += 1
        tlp = self.on_completion(dws)
        if tlp is None:
            raise AssertionError("the DUT sent a malformed TLP (see the TLP checker's error)")
        self.log.debug("From DUT: %r", tlp)
        if self.trace is not None:
            self.trace("tx", tlp)
        slot = self._local.pop((int(tlp.requester_id), tlp.tag), None) \
            if tlp.is_completion() else None
        if slot is not None:
            slot[1] = tlp
            slot[0].set()
            return
        self._to_host(tlp)

    def _to_host(self, tlp):
        """A TLP of the DUT's that is no completion of an injected request: up the link to
        the RootComplex (through :attr:`dma_fault` for reads). A shim that is its own host
        (:class:`tb.qemu.remote.DmaShim`) serves it here instead."""
        fault = None
        if self.dma_fault is not None and tlp.fmt_type in (TlpType.MEM_READ,
                                                            TlpType.MEM_READ_64):
            fault = self.dma_fault(tlp)
        if fault is None:
            if self.host_latency_ns and tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64):
                self._read_sent[(int(tlp.requester_id), tlp.tag)] = get_sim_time("step")
            cocotb.start_soon(self.send(tlp))
            return
        self.faults.append((fault, tlp))
        self.log.info("FAULT: %s for the DUT's read of %d DW at %#x (tag %d)", fault,
                      tlp.length or 1024, tlp.address, tlp.tag)
        if fault in ("ur", "ca"):
            from .scoreboard import read_byte_count, read_lower_address   # (imports this module)
            make = Tlp.create_ur_completion_for_tlp if fault == "ur" else \
                Tlp.create_ca_completion_for_tlp
            cpl = make(tlp, PcieId(0, 0, 0))
            # [PCIe-3.0 2.3.2] Byte Count of a completion that ends a read early: the bytes
            # left (all of them here); Lower Address from the request.
            cpl.byte_count = read_byte_count(tlp)
            cpl.lower_address = read_lower_address(tlp)
            cocotb.start_soon(self.upstream_recv(cpl))
        elif fault == "poisoned":
            self._poison.add((int(tlp.requester_id), tlp.tag))
            cocotb.start_soon(self.send(tlp))
        elif fault != "timeout":
            raise ValueError(f"unknown DMA fault {fault!r}")


def describe_tlp(tlp):
    """One line about ``tlp``: its type, address or completion fields, length, tag, and the
    first bytes of a short payload (a ring index, an MSI-X message)."""
    name = tlp.fmt_type.name
    if tlp.is_completion():
        text = (f"{name:<10} tag {tlp.tag:<3} {tlp.length * 4 if tlp.has_data() else 0:>4} B "
                f"bc {tlp.byte_count} la {tlp.lower_address:#x} {tlp.status.name}")
    elif tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64):
        text = f"{name:<10} tag {tlp.tag:<3} {(tlp.length or 1024) * 4:>4} B @ {tlp.address:#x}"
    elif tlp.fmt_type in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64):
        text = f"{name:<10}         {(tlp.length or 1024) * 4:>4} B @ {tlp.address:#x}"
    elif tlp.fmt_type in (TlpType.CFG_READ_0, TlpType.CFG_WRITE_0, TlpType.CFG_READ_1,
                          TlpType.CFG_WRITE_1):
        text = f"{name:<10} tag {tlp.tag:<3} reg {tlp.address & 0xffc:#05x} be " \
               f"{tlp.first_be:#x}"
    else:
        text = f"{name:<10} tag {tlp.tag}"
    data = tlp.get_data() if tlp.has_data() else b""
    if data and len(data) <= 16:
        text += f" [{data.hex()}]"
    return text


class TlpTrace:
    """A log of the link, one line per TLP (see :attr:`TlpShim.trace`) and per :meth:`note`:
    the cycle, ``rx`` (to the DUT), ``tx`` (from it) or ``rc`` (a TLP of the DUT's reaching
    the RootComplex, see :meth:`watch`) and :func:`describe_tlp`.

    Parameters
    ----------
    path : str or Path
        The file written (line-buffered).
    now : callable
        The current cycle.
    """
    def __init__(self, path, now):
        self.now = now
        self.file = open(path, "w", buffering=1)

    def __call__(self, direction, tlp):
        self.file.write(f"{self.now():>9} {direction} {describe_tlp(tlp)}\n")

    def watch(self, port):
        """Also log, as ``rc``, each TLP ``port`` (the RootComplex's end of the link) receives:
        when the DUT's TLP has crossed the link model (its wire time and the link delay)."""
        recv = port.ext_recv

        async def ext_recv(pkt):
            if not isinstance(pkt, Dllp):
                self("rc", pkt)
            await recv(pkt)
        port.ext_recv = ext_recv

    def note(self, text):
        """A line of the testbench's own (a submission, a completion reaped)."""
        self.file.write(f"{self.now():>9} -- {text}\n")
