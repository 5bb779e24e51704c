# Ref: PCIe Base 3.0 sections 2.2.2, 2.2.4.1, 2.2.5, 2.2.6.2-2.2.6.5, 2.2.7 (request rules), 2.2.9
# (Completion rules), 2.3.1 (request handling), 2.3.1.1 (data return for read requests), 2.3.2
# (completion handling), 6.1.4 (MSI-X), 7.5.1.1 (Bus Master Enable), 7.8.4 (Device Control)
"""TLP checker and scoreboard: every request into the DUT also goes to the golden model, and
every TLP out of the DUT must be well-formed and match what the model predicted, field by field.

It sits on the shim, so it sees all traffic, including the RootComplex's own enumeration and the
cocotbext-pcie helpers' accesses, not only what a test asks for explicitly. A mismatch is logged
with both sides in full and recorded; :meth:`Scoreboard.check` fails the test at the end.

Requests the DUT makes itself (DMA reads and writes, MSI-X messages) are checked against the
rules for a requester, with the limits the model's configuration space holds (Max_Payload_Size,
Max_Read_Request_Size, Extended Tag Field Enable, Bus Master Enable, the captured Bus and Device
Numbers). The completions the RootComplex returns for the DUT's reads are matched to them by
Tag, and must continue each read's data.
"""

from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus

from model import regmap as rm
from model.device import SC, UR, CA
from .shim import dws_to_tlp


__all__ = ["Scoreboard", "framing_problem", "read_byte_count", "read_lower_address",
           "be_problems", "enabled_span"]


_STATUS = {SC: CplStatus.SC, UR: CplStatus.UR, CA: CplStatus.CA}

_CPL_TYPES = {TlpType.CPL, TlpType.CPL_DATA, TlpType.CPL_LOCKED, TlpType.CPL_LOCKED_DATA}

_MEM_READS = {TlpType.MEM_READ, TlpType.MEM_READ_64}
_MEM_WRITES = {TlpType.MEM_WRITE, TlpType.MEM_WRITE_64}
_FOUR_DW = {TlpType.MEM_READ_64, TlpType.MEM_WRITE_64}

# cocotbext-pcie's TlpAttr bits: No Snoop is Attr[0], Relaxed Ordering Attr[1].
_ATTR_NS, _ATTR_RO = 1, 2
# [PCIe-3.0 7.8.4] Device Control: Enable Relaxed Ordering (4), Extended Tag Field Enable (8),
# Enable No Snoop (11).
_DEVCTL_RO, _DEVCTL_EXT_TAG, _DEVCTL_NS = 1 << 4, 1 << 8, 1 << 11

# [PCIe-3.0 2.3.1.1] The smallest Read Completion Boundary: a completion that is not the last of
# its read ends on a multiple of the completer's RCB, 64 or 128 bytes, so always of 64.
_MIN_RCB = 64


def _first_set(be):
    return next(k for k in range(4) if be >> k & 1)


def read_byte_count(tlp):
    """[PCIe-3.0 2.2.9, Table 2-37] Byte Count of a memory read's only completion."""
    length = tlp.length or 1024
    if length == 1:
        if tlp.first_be == 0:
            return 1  # a zero-length read still reports one byte
        last = tlp.first_be
    else:
        last = tlp.last_be
    last_end = 4 - next(k for k in range(4) if last << k & 0x8) if last else 0
    count = 4 * length - (_first_set(tlp.first_be) if tlp.first_be else 0) - (4 - last_end)
    return count % 4096  # 4096 is encoded as 0


def read_lower_address(tlp):
    """[PCIe-3.0 2.2.9] Lower Address: address bits 6:2 and the offset of the first enabled
    byte."""
    return (tlp.address & 0x7c) | (_first_set(tlp.first_be) if tlp.first_be else 0)


def _crosses_4k(tlp):
    return (tlp.address & 0xfff) + 4 * (tlp.length or 1024) > 4096


def _size_field(code):
    """[PCIe-3.0 7.8.4] Max_Payload_Size / Max_Read_Request_Size encoding -> bytes. The reserved
    encodings 110b and 111b count as 128 bytes, the size every function supports (the DMA
    engines make the same choice)."""
    return 128 << code if code <= 5 else 128


def _last_set(be):
    return next(k for k in range(3, -1, -1) if be >> k & 1)


def enabled_span(tlp):
    """``(address, bytes)`` from the first to the last byte a memory request enables; a request
    with no byte enabled (a zero-length read or write) spans 0 bytes at its address."""
    length = tlp.length or 1024
    first = tlp.first_be
    last = first if length == 1 else tlp.last_be
    if not first:
        if length == 1:
            return tlp.address, 0
        first = 0xf  # malformed (be_problems reports it); count the whole DW
    start = tlp.address + _first_set(first)
    end = tlp.address + 4 * (length - 1) + (_last_set(last) + 1 if last else 0)
    return start, max(end - start, 0)


def be_problems(tlp):
    """What breaks the First/Last DW Byte Enable rules in a memory request. [PCIe-3.0 2.2.5]"""
    length = tlp.length or 1024
    first, last = tlp.first_be, tlp.last_be
    if length == 1:
        # [PCIe-3.0 2.2.5] A 1 DW request has Last DW BE 0000b; any First DW BE, 0000b (a
        # zero-length access) and non-contiguous ones included.
        return [f"Last DW BE {last:#06b} in a 1 DW request, must be 0b0000 [PCIe-3.0 2.2.5]"] \
            if last else []
    problems = []
    # [PCIe-3.0 2.2.5] Longer than 1 DW: neither First nor Last DW BE may be 0000b.
    if not first:
        problems.append(f"First DW BE 0b0000 in a {length} DW request [PCIe-3.0 2.2.5]")
    if not last:
        problems.append(f"Last DW BE 0b0000 in a {length} DW request [PCIe-3.0 2.2.5]")
    # [PCIe-3.0 2.2.5] Non-contiguous byte enables are allowed only in 1 DW requests and in QW
    # aligned 2 DW ones; every other request enables only bytes contiguous with the DWs between
    # its first and last: First DW BE runs up to byte 3 (1111b, 1110b, 1100b, 1000b), Last DW BE
    # starts at byte 0 (0001b, 0011b, 0111b, 1111b).
    if length >= 3 or tlp.address & 7:
        if first and first not in (0xf, 0xe, 0xc, 0x8):
            problems.append(f"First DW BE {first:#06b} not contiguous with the rest of a "
                            f"{length} DW request at {tlp.address:#x} [PCIe-3.0 2.2.5]")
        if last and last not in (0x1, 0x3, 0x7, 0xf):
            problems.append(f"Last DW BE {last:#06b} not contiguous with the rest of a "
                            f"{length} DW request at {tlp.address:#x} [PCIe-3.0 2.2.5]")
    return problems


def framing_problem(dws):
    """What is wrong with the framing of one TLP's DWs, or None. [PCIe-3.0 2.2.1, 2.2.2]"""
    if not dws:
        return "empty"
    fmt = dws[0] >> 29
    if fmt & 0b100:
        return f"TLP prefixes (Fmt {fmt:#05b}) are not sent by this function"
    hdr = 4 if fmt & 1 else 3
    has_data = bool(fmt & 0b10)
    length = dws[0] & 0x3ff
    expected = hdr + ((length or 1024) if has_data else 0)
    if len(dws) != expected:
        return (f"{len(dws)} DWs, but Fmt {fmt:#05b} and Length {length} make {expected}")
    return None


class Expected:
    """What the completion of one non-posted request must carry."""
    def __init__(self, req, status, data=None, byte_mask=None):
        self.req = req
        self.status = status
        self.data = data
        self.byte_mask = byte_mask
        self.alt_data = None        # a second acceptable payload (see Scoreboard.isr_maybe)
        self.locked = req.fmt_type in (TlpType.MEM_READ_LOCKED, TlpType.MEM_READ_LOCKED_64)
        if req.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_READ_LOCKED,
                            TlpType.MEM_READ_LOCKED_64):
            self.byte_count = read_byte_count(req)
            self.lower_address = read_lower_address(req)
        else:
            self.byte_count, self.lower_address = 4, 0


class DmaRead:
    """A Memory Read the DUT sent, while its completions come back.

    ``start`` is the address of the first byte the read returns, ``total`` the bytes it returns
    ([PCIe-3.0 2.2.9] the Byte Count of its first completion) and ``done`` those already
    returned by earlier completions."""
    def __init__(self, req):
        self.req = req
        self.start = req.address + (_first_set(req.first_be) if req.first_be else 0)
        self.total = read_byte_count(req) or 4096
        self.done = 0

    def __repr__(self):
        return f"<DMA read of {self.total} bytes at {self.start:#x}, {self.done} returned: " \
               f"{self.req!r}>"


class Scoreboard:
    """Golden-model scoreboard for the endpoint's completer, and checker of the endpoint's own
    requests.

    Parameters
    ----------
    model : model.device.VirtioBlkModel
    log : logging.Logger

    Attributes
    ----------
    errors : list of str
        Every violation found, in order; :meth:`check` fails if there is any.
    dma_allowed : callable or None
        If set, ``dma_allowed(addr, length, is_write) -> bool`` must hold for every memory
        request of the DUT other than an MSI-X message: ``addr`` is the first byte the request
        enables, ``length`` the bytes from there to the last enabled one (0 for a zero-length
        request). A robustness test sets it to the driver's buffers.
    ordering : tb.ordering.OrderingChecker or None
        If set, gets every memory request of the DUT in link order (reads, writes with their
        data, MSI-X messages by vector) and every device reset, and checks the order in which
        the DUT makes its results visible.
    expect_timeouts : bool
        Set by a test in which the DUT's reads may go unanswered on purpose: the DUT may then
        reuse the Tag of a read still outstanding here (it timed out in the DUT, [PCIe-3.0
        2.8]), and :meth:`check` does not report reads that never completed.
    requests, completions : int
        TLPs into the DUT and out of it.
    compared_reads : int
        Completions of the DUT whose data was compared with the model.
    dma_reads, dma_read_bytes : int
        Memory Reads the DUT sent and the bytes they asked for.
    dma_writes, dma_write_bytes : int
        Memory Writes the DUT sent, MSI-X messages excluded, and their enabled bytes.
    msi_writes : int
        Memory Writes that carry the address and data of an entry of the model's MSI-X table.
    """
    def __init__(self, model, log):
        self.model = model
        self.log = log
        self.pending = {}
        self.errors = []
        self.requests = 0
        self.completions = 0
        self.compared_reads = 0
        self.dma_allowed = None
        self.ordering = None
        # ISR bits the data path may have set since the last ISR read, which the register
        # model cannot know (they depend on when the DUT completes requests): a callable
        # returning a bit mask, set by the data-path testbench. A read of the ISR may then
        # return those bits set or clear.
        self.isr_maybe = lambda: 0
        # [VIRTIO-1.2 4.1.4.3.2] After a write of 0 to device_status (or an FLR) the DUT may
        # go on reading the old DW at device_status until its data path has drained; the model
        # resets at once. The old DW, until a read returns the model's value.
        self._draining_dw = None
        self.expect_timeouts = False
        self.dma_reads = 0
        self.dma_read_bytes = 0
        self.dma_writes = 0
        self.dma_write_bytes = 0
        self.msi_writes = 0
        self.reset()

    def reset(self):
        """The DUT went through a fundamental reset (call after ``model.power_on_reset()``):
        no read of the DUT is outstanding any more, and Bus Master Enable is back to its reset
        value."""
        self._device_reset()
        self.dma_pending = {}
        # Bus Master Enable timing. The model applies a Configuration Write to the Command
        # register as soon as the request goes into the DUT, but the DUT applies it some cycles
        # later, and may send requests in between. Its completion, though, leaves only after
        # the DUT has applied it. So each Command write's new value waits in _pending_command
        # (by the write's requester ID and Tag) until its completion is matched, and only then
        # becomes _command, the value every later request of the DUT must obey. A request
        # leaving while a Command write is in flight may follow either value: old or new.
        self._command = self.model.command
        self._pending_command = {}
        # The MSI-X table as it was before an FLR whose completion has not been seen yet.
        self._flr_msix = {}

    def _device_reset(self):
        if getattr(self, "ordering", None) is not None:
            self.ordering.device_reset()

    def error(self, msg):
        self.log.error("SCOREBOARD: %s", msg)
        self.errors.append(msg)

    # -- requests ------------------------------------------------------------------------------

    def request(self, tlp):
        """Called by the shim for each TLP going into the DUT, in order."""
        self.requests += 1
        m = self.model
        t = tlp.fmt_type
        exp = None
        if t == TlpType.CFG_READ_0:
            status, value = m.config_read(tlp.address >> 2, tlp.first_be,
                                          function=tlp.completer_id.function)
            data = value.to_bytes(4, "little") if status == SC else None
            exp = Expected(tlp, status, data, 0xf)
        elif t == TlpType.CFG_WRITE_0:
            value = int.from_bytes(tlp.get_data()[:4], "little")
            before = self._status_dw()
            table = [(e.addr, e.data) for e in m.msix_table]
            status = m.config_write(tlp.address >> 2, value, tlp.first_be,
                                    function=tlp.completer_id.function,
                                    bus=tlp.completer_id.bus, dev=tlp.completer_id.device,
                                    poisoned=bool(tlp.ep))
            if (tlp.address >> 2 == self._devctl_dw and tlp.first_be & 2 and
                    value & rm.DEVCTL_INITIATE_FLR and status == SC):
                self._device_reset()
                self._start_drain(before)
                # FLR clears the Command register (Bus Master Enable) once this completes;
                # until then the DUT may still send MSI-X messages of the table it had.
                self._pending_command[(int(tlp.requester_id), tlp.tag)] = m.command
                self._flr_msix[(int(tlp.requester_id), tlp.tag)] = table
            exp = Expected(tlp, status)
            if tlp.address >> 2 == 1:
                self._pending_command[(int(tlp.requester_id), tlp.tag)] = m.command
        elif t in (TlpType.MEM_READ, TlpType.MEM_READ_64):
            isr_hit = (m._bar_hit(tlp.address) and tlp.first_be & 1 and
                       tlp.address - m.bar0_base == rm.ISR_OFFSET)
            maybe = self.isr_maybe() if isr_hit else 0
            status, data = m.mem_read(tlp.address, tlp.length, tlp.first_be, tlp.last_be)
            mask = tlp.first_be | (tlp.last_be << 4 if tlp.length == 2 else 0)
            exp = Expected(tlp, status, data, mask)
            if maybe and data is not None:
                exp.alt_data = bytes([data[0] | maybe]) + data[1:]
            if (self._draining_dw is not None and data is not None and tlp.length == 1 and
                    self._status_hit(tlp.address)):
                exp.alt_data = self._draining_dw.to_bytes(4, "little")
                exp.draining = True
        elif t in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64):
            payload = bytes(tlp.get_data())
            before = self._status_dw()
            m.mem_write(tlp.address, payload, tlp.first_be, tlp.last_be,
                        poisoned=bool(tlp.ep))
            if self._status_hit(tlp.address) and tlp.first_be & 1 and not tlp.ep:
                if payload[0] == 0:
                    self._device_reset()
                    self._start_drain(before)
                else:
                    self._draining_dw = None    # the driver saw the reset finish
        elif t in _CPL_TYPES:
            rd = self.dma_pending.get((int(tlp.requester_id), tlp.tag))
            if rd is not None:
                self._completion_to_dut(tlp, rd)
            # [PCIe-3.0 2.3.2] An Unexpected Completion is discarded (poisoned data logged).
            elif tlp.ep and tlp.has_data():
                m.poisoned_received()
        else:
            # I/O, Configuration Type 1, MRdLk, AtomicOps: Unsupported Request. (Messages
            # cannot reach here: cocotbext-pcie's Tlp does not encode them.)
            exp = Expected(tlp, m.unsupported(poisoned=bool(tlp.ep) and tlp.has_data()))
        if exp is not None:
            exp.completer_id = m.completer_id
            key = (int(tlp.requester_id), tlp.tag)
            if key in self.pending:
                self.error(f"request reuses tag {tlp.tag} still outstanding: {tlp!r}")
            self.pending[key] = exp

    @property
    def resetting(self):
        """A device reset has been requested and the DUT has not yet been seen to finish it
        (``device_status`` may still read its old value)."""
        return self._draining_dw is not None

    @property
    def _devctl_dw(self):
        cap = rm.find_cap(self.model.p, "pcie")
        return None if cap is None else cap.offset // 4 + 2     # (a hard block's, if none)

    def host_command(self, value):
        """Behind a hard block the Command register is the block's: ``value`` is what its
        ``cfg_command`` output shows the DUT from now on."""
        self._command = value

    def _status_hit(self, addr):
        """``addr`` is in the DW of BAR0 that holds ``device_status``."""
        m = self.model
        return m._bar_hit(addr) and (addr - m.bar0_base) & ~3 == \
            rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS

    def _status_dw(self):
        return self.model.bar_read_dw((rm.COMMON_OFFSET + rm.CC_DEVICE_STATUS) // 4)

    def _start_drain(self, before):
        if before & 0xff:
            self._draining_dw = before
            self.log.info("SCOREBOARD: reset under way: device_status may read %#04x until the "
                          "DUT has drained", before & 0xff)

    # -- completions ---------------------------------------------------------------------------

    def completion(self, dws):
        """Called by the shim with the DWs of each TLP the DUT sends. Returns the :class:`Tlp`,
        or None if the TLP is malformed (recorded as an error)."""
        self.completions += 1
        problem = framing_problem(dws)
        if problem is None:
            cpl = dws_to_tlp(dws)
            if not cpl.check():
                if cpl.fmt_type in _MEM_READS | _MEM_WRITES and _crosses_4k(cpl):
                    # [PCIe-3.0 2.2.7] A Malformed TLP; the request checks name the rule.
                    self._match(cpl)
                    return None
                problem = "fails cocotbext-pcie's Tlp.check()"
        if problem is not None:
            self.error(f"malformed TLP from the DUT ({problem}): "
                       f"{' '.join(f'{dw:08x}' for dw in dws)}")
            return None
        self._match(cpl)
        return cpl

    def _match(self, cpl):
        if cpl.fmt_type not in _CPL_TYPES:
            self._request_from_dut(cpl)
            return
        key = (int(cpl.requester_id), cpl.tag)
        exp = self.pending.pop(key, None)
        if exp is None:
            self.error(f"completion matches no outstanding request: {cpl!r}")
            return
        if key in self._pending_command:
            # The DUT has applied this Command write (see reset()).
            self._command = self._pending_command.pop(key)
        self._flr_msix.pop(key, None)
        problems = []
        has_data = exp.status == SC and exp.data is not None
        if exp.locked:
            want_type = TlpType.CPL_LOCKED_DATA if has_data else TlpType.CPL_LOCKED
        else:
            want_type = TlpType.CPL_DATA if has_data else TlpType.CPL
        if cpl.fmt_type != want_type:
            problems.append(f"type {cpl.fmt_type.name}, expected {want_type.name}")
        if cpl.status != _STATUS[exp.status]:
            problems.append(f"status {cpl.status.name}, expected {exp.status}")
        if int(cpl.completer_id) != exp.completer_id:
            problems.append(f"completer ID {int(cpl.completer_id):#06x}, "
                            f"expected {exp.completer_id:#06x}")
        if cpl.byte_count != exp.byte_count:
            problems.append(f"byte count {cpl.byte_count}, expected {exp.byte_count}")
        if cpl.lower_address != exp.lower_address:
            problems.append(f"lower address {cpl.lower_address:#x}, "
                            f"expected {exp.lower_address:#x}")
        if (cpl.tc, cpl.attr) != (exp.req.tc, exp.req.attr):
            # [PCIe-3.0 2.2.9] TC and Attr are copied from the request.
            problems.append(f"TC/Attr {cpl.tc}/{cpl.attr}, request had "
                            f"{exp.req.tc}/{exp.req.attr}")
        if has_data and cpl.fmt_type == want_type:
            got = bytes(cpl.get_data())
            if len(got) != len(exp.data):
                problems.append(f"{len(got)} data bytes, expected {len(exp.data)}")
            elif all(any(got[k] != want[k] for k in range(len(got)) if exp.byte_mask >> k & 1)
                     for want in (exp.data, exp.alt_data) if want is not None):
                problems.append(f"data {got.hex()}, model {exp.data.hex()} "
                                f"(byte mask {exp.byte_mask:#x})")
            else:
                self.compared_reads += 1
                if getattr(exp, "draining", False) and \
                        all(got[k] == exp.data[k] for k in range(len(got))
                            if exp.byte_mask >> k & 1):
                    self._draining_dw = None    # the reset has finished
        if problems:
            self.error(f"{exp.req!r} -> {cpl!r}: " + "; ".join(problems))

    # -- requests of the DUT --------------------------------------------------------------------

    def _bus_master_enabled(self):
        # [PCIe-3.0 7.5.1.1] With Bus Master Enable clear a function issues no Memory Request,
        # MSI-X messages included. Judged by the Command value in effect (see reset()): the
        # last one whose write has completed, or that of a write still in flight.
        return any(cmd & rm.CMD_BUS_MASTER
                   for cmd in (self._command, *self._pending_command.values()))

    def _msix_vector(self, tlp):
        """The MSI-X table entry whose message ``tlp`` is, or None; -1 for an entry of the
        table as it was before an FLR still in flight."""
        if tlp.fmt_type not in _MEM_WRITES or tlp.length != 1 or tlp.first_be != 0xf:
            return None
        data = int.from_bytes(bytes(tlp.get_data())[:4], "little")
        # [PCIe-3.0 6.1.4] An MSI-X message is a DW write of the entry's Message Data to its
        # Message Address.
        for k, e in enumerate(self.model.msix_table):
            if e.addr == tlp.address and e.data == data:
                return k
        if any((tlp.address, data) in table for table in self._flr_msix.values()):
            return -1
        return None

    def _request_from_dut(self, tlp):
        t = tlp.fmt_type
        if t not in _MEM_READS | _MEM_WRITES:
            self.error(f"DUT sent a {t.name} request; it only issues Memory Reads and Memory "
                       f"Writes: {tlp!r}")
            return
        m = self.model
        is_read = t in _MEM_READS
        devctl = m.devctl
        length = tlp.length or 1024
        nbytes = 4 * length
        problems = []
        if is_read:
            # [PCIe-3.0 7.8.4] A function generates no read request longer than
            # Max_Read_Request_Size.
            mrrs = _size_field(devctl >> 12 & 7)
            if nbytes > mrrs:
                problems.append(f"Length {length} DW ({nbytes} bytes) exceeds "
                                f"Max_Read_Request_Size {mrrs} [PCIe-3.0 7.8.4]")
        else:
            # [PCIe-3.0 2.2.2] The payload of a TLP is at most Max_Payload_Size bytes.
            mps = _size_field(devctl >> 5 & 7)
            if nbytes > mps:
                problems.append(f"payload {nbytes} bytes exceeds Max_Payload_Size {mps} "
                                f"[PCIe-3.0 2.2.2]")
        if _crosses_4k(tlp):
            # [PCIe-3.0 2.2.7] No memory request crosses a 4 KB boundary.
            problems.append(f"{nbytes} bytes at {tlp.address:#x} cross a 4 KB boundary "
                            f"[PCIe-3.0 2.2.7]")
        if t in _FOUR_DW and tlp.address >> 32 == 0:
            # [PCIe-3.0 2.2.4.1] Addresses below 4 GB use the 32-bit (3 DW header) format. (The
            # 3 DW format cannot name an address at or above 4 GB at all.)
            problems.append(f"4 DW header for address {tlp.address:#x} below 4 GB "
                            f"[PCIe-3.0 2.2.4.1]")
        problems += be_problems(tlp)
        if int(tlp.requester_id) != m.completer_id:
            # [PCIe-3.0 2.2.6.2] The Requester ID is the function's captured Bus and Device
            # Numbers and its Function Number.
            problems.append(f"Requester ID {int(tlp.requester_id):#06x}, expected "
                            f"{m.completer_id:#06x} [PCIe-3.0 2.2.6.2]")
        if not self._bus_master_enabled():
            problems.append("Bus Master Enable is clear [PCIe-3.0 7.5.1.1]")
        # [PCIe-3.0 2.2.6.4, 2.2.6.5, 7.8.4] Relaxed Ordering and No Snoop only when enabled.
        if tlp.attr & _ATTR_RO and not devctl & _DEVCTL_RO:
            problems.append("Relaxed Ordering attribute with Enable Relaxed Ordering clear "
                            "[PCIe-3.0 2.2.6.4]")
        if tlp.attr & _ATTR_NS and not devctl & _DEVCTL_NS:
            problems.append("No Snoop attribute with Enable No Snoop clear [PCIe-3.0 2.2.6.5]")

        vector = self._msix_vector(tlp)
        msix = vector is not None
        start, span = enabled_span(tlp)
        if is_read:
            key = (int(tlp.requester_id), tlp.tag)
            # [PCIe-3.0 2.2.6.2] Without Extended Tag Field Enable only Tags 0 to 31 are used.
            if tlp.tag >= 32 and not devctl & _DEVCTL_EXT_TAG:
                problems.append(f"Tag {tlp.tag} with Extended Tag Field Enable clear "
                                f"[PCIe-3.0 2.2.6.2]")
            old = self.dma_pending.get(key)
            if old is not None:
                if self.expect_timeouts:
                    self.log.info("SCOREBOARD: Tag %d reused: %r taken as timed out",
                                  tlp.tag, old)
                else:
                    # [PCIe-3.0 2.2.6.2] A Tag is unique among a requester's outstanding
                    # non-posted requests.
                    problems.append(f"Tag {tlp.tag} still outstanding for {old!r} "
                                    f"[PCIe-3.0 2.2.6.2]")
            self.dma_pending[key] = DmaRead(tlp)
            self.dma_reads += 1
            self.dma_read_bytes += span
        elif msix:
            self.msi_writes += 1
        else:
            self.dma_writes += 1
            self.dma_write_bytes += span
        if self.dma_allowed is not None and not msix and \
                not self.dma_allowed(start, span, not is_read):
            problems.append(f"DMA outside the driver's buffers: {span} bytes at {start:#x}")
        if self.ordering is not None:
            if is_read:
                self.ordering.dut_read(start, span)
            elif msix:
                self.ordering.msix_message(vector)
            else:
                off = start - tlp.address
                self.ordering.dut_write(start, bytes(tlp.get_data())[off:off + span])
        if problems:
            kind = "read" if is_read else "MSI-X write" if msix else "write"
            self.error(f"DUT {kind} request {tlp!r}: " + "; ".join(problems))

    def _completion_to_dut(self, cpl, rd):
        """A completion the RootComplex returns for the DUT's read ``rd``."""
        key = (int(cpl.requester_id), cpl.tag)
        problems = []
        if (cpl.tc, cpl.attr) != (rd.req.tc, rd.req.attr):
            # [PCIe-3.0 2.2.9] TC and Attr are copied from the request.
            problems.append(f"TC/Attr {cpl.tc}/{cpl.attr}, request had "
                            f"{rd.req.tc}/{rd.req.attr}")
        if cpl.status != CplStatus.SC:
            # [PCIe-3.0 2.3.2] A completion with any other status ends the request.
            del self.dma_pending[key]
        elif cpl.fmt_type != TlpType.CPL_DATA:
            problems.append(f"type {cpl.fmt_type.name} with status SC answers a read, "
                            f"expected CPL_DATA [PCIe-3.0 2.2.9]")
            del self.dma_pending[key]
        else:
            remaining = rd.total - rd.done
            lower = (rd.start + rd.done) & 0x7f
            payload = 4 * (cpl.length or 1024)
            carried = payload - (lower & 3)
            mps = _size_field(self.model.devctl >> 5 & 7)
            if cpl.byte_count % 4096 != remaining % 4096:
                # [PCIe-3.0 2.2.9, 2.3.1.1] Byte Count: the bytes still to return, this
                # completion's included.
                problems.append(f"byte count {cpl.byte_count}, expected {remaining} (read of "
                                f"{rd.total} bytes, {rd.done} returned) [PCIe-3.0 2.3.1.1]")
            elif cpl.lower_address != lower:
                # [PCIe-3.0 2.3.1.1] Lower Address: of the first byte this completion returns.
                problems.append(f"lower address {cpl.lower_address:#x}, expected {lower:#x} "
                                f"[PCIe-3.0 2.3.1.1]")
            elif carried >= remaining:
                need = (lower % 4 + remaining + 3) // 4
                if cpl.length != need:
                    problems.append(f"Length {cpl.length} DW, but the last {remaining} bytes "
                                    f"from lower address {lower:#x} take {need} "
                                    f"[PCIe-3.0 2.3.1.1]")
                del self.dma_pending[key]
            else:
                end = rd.start + rd.done + carried
                if end % _MIN_RCB:
                    # [PCIe-3.0 2.3.1.1] A completion that is not the last ends on an RCB.
                    problems.append(f"a completion that is not the last ends at {end:#x}, not "
                                    f"on a Read Completion Boundary [PCIe-3.0 2.3.1.1]")
                rd.done += carried
            if payload > mps:
                # [PCIe-3.0 2.2.2] The DUT would take it as a Malformed TLP.
                problems.append(f"payload {payload} bytes exceeds the DUT's "
                                f"Max_Payload_Size {mps} [PCIe-3.0 2.2.2]")
        if problems:
            self.error(f"completion to the DUT's read {rd.req!r} -> {cpl!r}: " +
                       "; ".join(problems))

    def abandon(self, tag=None):
        """Forget the DUT's outstanding read with ``tag`` (or all of them), which a test made
        time out on purpose: it is no longer reported by :meth:`check`, and a completion that
        still comes for it is an Unexpected Completion [PCIe-3.0 2.3.2]."""
        keys = [k for k in self.dma_pending if tag is None or k[1] == tag]
        if tag is not None and not keys:
            raise ValueError(f"no read of the DUT with Tag {tag} is outstanding")
        for k in keys:
            self.log.info("SCOREBOARD: abandoned %r", self.dma_pending.pop(k))

    # -- the end ---------------------------------------------------------------------------------

    def summary(self):
        """One line of counters for the end of a test."""
        return (f"{self.requests} TLPs in, {self.completions} out, {self.compared_reads} reads "
                f"compared with the model; DMA {self.dma_reads} reads ({self.dma_read_bytes} "
                f"bytes), {self.dma_writes} writes ({self.dma_write_bytes} bytes), "
                f"{self.msi_writes} MSI-X messages")

    def check(self):
        """Raise if anything mismatched or a non-posted request never completed, of the
        RootComplex's (to the DUT) or of the DUT's (unless :attr:`expect_timeouts`)."""
        for exp in self.pending.values():
            self.error(f"no completion for {exp.req!r}")
        self.pending.clear()
        self._pending_command.clear()
        self._flr_msix.clear()
        for rd in self.dma_pending.values():
            if self.expect_timeouts:
                self.log.info("SCOREBOARD: %r never completed (timeouts expected)", rd)
            else:
                self.error(f"the DUT's read never completed: {rd!r}")
        self.dma_pending.clear()
        assert not self.errors, f"{len(self.errors)} scoreboard errors, first: {self.errors[0]}"
