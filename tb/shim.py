# Ref: PCIe Base 3.0 section 2.2 (TLP formats)
"""The link between cocotbext-pcie and the DUT's TLP streams.

:class:`TlpShim` is a :class:`cocotbext.pcie.core.Device` with no functions of its own: every TLP
the RootComplex sends down the link, configuration type 0 included, goes into the DUT's ``rx``
stream, and every TLP the DUT puts on ``tx`` goes back up as a :class:`Tlp`. The DUT owns its
configuration space; the shim only reframes.

Beats follow :func:`rtl.tlp.TlpBeat`: header DWs in PCIe order with DW0 in the low bits of the
first beat, header DW values as the PCIe figures draw them (``fmt`` in bits 31:29 of DW0), and
payload DWs little-endian (the byte at the lowest address in bits 7:0).
"""

import collections
import random
import struct

import cocotb
from cocotb.triggers import Event, RisingEdge
from cocotbext.pcie.core import Device
from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from rtl.tlp import TlpBeat
from .cycles import Agent, CycleLoop, Wire


__all__ = ["TlpShim", "tlp_to_dws", "dws_to_tlp"]


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


class _RxAgent(Agent):
    """Drives the DUT's ``rx`` stream, a beat per cycle while TLPs wait (idle cycles at
    random with the shim's ``idle_prob``)."""
    def __init__(self, shim):
        dut = shim.dut
        self.shim = shim
        self.valid, self.ready, self.payload = (Wire(dut.rx__valid), Wire(dut.rx__ready),
                                                Wire(dut.rx__payload))
        self.tlps = collections.deque()     # DW lists not yet cut into beats
        self.beats = collections.deque()
        self.shown = False                  # a beat is on rx this cycle
        self.driven = False                 # rx.valid as last written

    def step(self):
        shim = self.shim
        # The beat shown in the cycle that just ended was taken if ready was high.
        if self.shown and self.ready.high():
            self.shown = False
        if not self.shown:
            if not self.beats and self.tlps:
                self.beats.extend(shim.fmt.pack(self.tlps.popleft()))
            if self.beats and not (shim.idle_prob and shim.rng.random() < shim.idle_prob):
                self.payload.write(self.beats.popleft())
                self.shown = True
        if self.shown != self.driven:     # writes through the simulator cost: only changes
            self.valid.write(int(self.shown))
            self.driven = self.shown
        # Nothing shown and nothing waiting: sleep until the next TLP.
        return self.shown or bool(self.beats) or bool(self.tlps)


class _TxAgent(Agent):
    """Takes the DUT's ``tx`` stream: ``ready`` low at random with the shim's
    ``stall_prob``; asleep (``ready`` as last driven) while ``tx.valid`` is low."""
    def __init__(self, shim):
        dut = shim.dut
        self.shim = shim
        self.valid, self.ready, self.payload = (Wire(dut.tx__valid), Wire(dut.tx__ready),
                                                Wire(dut.tx__payload))
        self.wake_on = RisingEdge(dut.tx__valid)
        self.dws = []
        # Without stalls ready stays high, from the start.
        self.driven = 0 if shim.stall_prob else 1
        self.ready.write(self.driven)

    def step(self):
        shim = self.shim
        valid = self.valid.high()
        if valid and self.driven:
            beat, first, last = shim.fmt.unpack(self.payload.read())
            if first != (not self.dws):
                raise AssertionError(f"TLP framing: first={first} after {len(self.dws)} DWs")
            self.dws.extend(beat)
            if last:
                dws, self.dws = self.dws, []
                shim._from_dut(dws)
        if not valid and not self.dws:
            return False              # nothing offered: sleep until tx.valid rises
        ready = int(not (shim.stall_prob and shim.rng.random() < shim.stall_prob))
        if ready != self.driven:      # writes through the simulator are costly: only changes
            self.ready.write(ready)
            self.driven = ready
        return True


class TlpShim(Device):
    """A cocotbext-pcie device whose single function is the DUT, at the TLP level.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel with ``clk``, ``rx__{valid,ready,payload}`` and ``tx__{valid,ready,payload}``.
    data_width : int
        Width of the TLP streams (``DeviceParams.data_width``).
    idle_prob : float
        Probability of an idle cycle before each ``rx`` beat (source stalls).
    stall_prob : float
        Probability that ``tx.ready`` is low in a cycle (back-pressure).
    rng : random.Random
        Source of the stalls, so a seed replays them.
    on_request : callable
        Called with each :class:`Tlp` into the DUT, in link order.
    on_completion : callable
        Called with the DWs of each TLP out of the DUT, in link order; returns the parsed
        :class:`Tlp`, or None if it is malformed (the shim then stops the test). The
        testbench's TLP checker and scoreboard hang here.
    loop : tb.cycles.CycleLoop or None
        The loop the shim's receive and transmit agents run in (shared with the other agents
        on the DUT's clock); a loop of its own if None.

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
    """
    def __init__(self, dut, data_width, *, idle_prob=0.0, stall_prob=0.0, rng=None,
                 on_request=None, on_completion=None, loop=None):
        super().__init__()
        self.dut = dut
        self.clk = dut.clk
        self.fmt = _BeatFormat(data_width)
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

        dut.rx__valid.value = 0
        dut.rx__payload.value = 0
        self.loop = loop or CycleLoop(dut.clk)
        self._rx = _RxAgent(self)
        self._tx = _TxAgent(self)
        self.loop.add(self._rx)
        self.loop.add(self._tx)

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
        self.on_request(tlp)
        self.rx_count += 1
        self._enqueue(tlp_to_dws(tlp))

    def _enqueue(self, dws):
        """The DWs of one TLP go into the DUT after those already waiting."""
        self._rx.tlps.append(dws)
        self.loop.wake(self._rx)

    @property
    def rx_pending(self):
        """TLPs waiting to go into the DUT (one partly sent counts)."""
        return len(self._rx.tlps) + bool(self._rx.beats)

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
        slot = self._local.pop((int(tlp.requester_id), tlp.tag), None) \
            if tlp.is_completion() else None
        if slot is not None:
            slot[1] = tlp
            slot[0].set()
            return
        fault = None
        if self.dma_fault is not None and tlp.fmt_type in (TlpType.MEM_READ,
                                                            TlpType.MEM_READ_64):
            fault = self.dma_fault(tlp)
        if fault is None:
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
