# Ref: PCIe Base 3.0 sections 2.2.9 (Completion rules), 2.3.1 (request handling)
"""TLP checker and scoreboard: every request into the DUT also goes to the golden model, and
every TLP out of the DUT must be well-formed and match what the model predicted, field by field.

It sits on the shim, so it sees all traffic, including the RootComplex's own enumeration and the
cocotbext-pcie helpers' accesses, not only what a test asks for explicitly. A mismatch is logged
with both sides in full and recorded; :meth:`Scoreboard.check` fails the test at the end.
"""

from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus

from model.device import SC, UR, CA
from .shim import dws_to_tlp


__all__ = ["Scoreboard", "framing_problem"]


_STATUS = {SC: CplStatus.SC, UR: CplStatus.UR, CA: CplStatus.CA}

_CPL_TYPES = {TlpType.CPL, TlpType.CPL_DATA, TlpType.CPL_LOCKED, TlpType.CPL_LOCKED_DATA}


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
        self.locked = req.fmt_type in (TlpType.MEM_READ_LOCKED, TlpType.MEM_READ_LOCKED_64)
        if req.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64, TlpType.MEM_READ_LOCKED,
                            TlpType.MEM_READ_LOCKED_64):
            self.byte_count = read_byte_count(req)
            self.lower_address = read_lower_address(req)
        else:
            self.byte_count, self.lower_address = 4, 0


class Scoreboard:
    """Golden-model scoreboard for the endpoint's completer.

    Parameters
    ----------
    model : model.device.VirtioBlkModel
    log : logging.Logger
    """
    def __init__(self, model, log):
        self.model = model
        self.log = log
        self.pending = {}
        self.errors = []
        self.requests = 0
        self.completions = 0
        self.compared_reads = 0

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
            status = m.config_write(tlp.address >> 2, value, tlp.first_be,
                                    function=tlp.completer_id.function,
                                    bus=tlp.completer_id.bus, dev=tlp.completer_id.device,
                                    poisoned=bool(tlp.ep))
            exp = Expected(tlp, status)
        elif t in (TlpType.MEM_READ, TlpType.MEM_READ_64):
            status, data = m.mem_read(tlp.address, tlp.length, tlp.first_be, tlp.last_be)
            mask = tlp.first_be | (tlp.last_be << 4 if tlp.length == 2 else 0)
            exp = Expected(tlp, status, data, mask)
        elif t in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64):
            m.mem_write(tlp.address, bytes(tlp.get_data()), tlp.first_be, tlp.last_be,
                        poisoned=bool(tlp.ep))
        elif t in _CPL_TYPES:
            # [PCIe-3.0 2.3.2] An Unexpected Completion is discarded (poisoned data logged).
            if tlp.ep and tlp.has_data():
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

    # -- completions ---------------------------------------------------------------------------

    def completion(self, dws):
        """Called by the shim with the DWs of each TLP the DUT sends. Returns the :class:`Tlp`,
        or None if the TLP is malformed (recorded as an error)."""
        self.completions += 1
        problem = framing_problem(dws)
        if problem is None:
            cpl = dws_to_tlp(dws)
            if not cpl.check():
                problem = "fails cocotbext-pcie's Tlp.check()"
        if problem is not None:
            self.error(f"malformed TLP from the DUT ({problem}): "
                       f"{' '.join(f'{dw:08x}' for dw in dws)}")
            return None
        self._match(cpl)
        return cpl

    def _match(self, cpl):
        if cpl.fmt_type not in _CPL_TYPES:
            self.error(f"DUT sent a request, but has no DMA yet: {cpl!r}")
            return
        key = (int(cpl.requester_id), cpl.tag)
        exp = self.pending.pop(key, None)
        if exp is None:
            self.error(f"completion matches no outstanding request: {cpl!r}")
            return
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
            elif any(got[k] != exp.data[k] for k in range(len(got)) if exp.byte_mask >> k & 1):
                problems.append(f"data {got.hex()}, model {exp.data.hex()} "
                                f"(byte mask {exp.byte_mask:#x})")
            else:
                self.compared_reads += 1
        if problems:
            self.error(f"{exp.req!r} -> {cpl!r}: " + "; ".join(problems))

    def check(self):
        """Raise if anything mismatched or a non-posted request never completed."""
        for exp in self.pending.values():
            self.error(f"no completion for {exp.req!r}")
        self.pending.clear()
        assert not self.errors, f"{len(self.errors)} scoreboard errors, first: {self.errors[0]}"
