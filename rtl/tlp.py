# Ref: PCIe Base 3.0, section 2.2 (Transaction Layer Packets)
"""TLP stream and header formats.

A TLP travels as a packet on a :class:`TlpStreamSignature` stream: the header first, in PCIe
order (DW0 in bits 31:0 of the first beat, DW1 in bits 63:32, and so on), then the payload, with
no gap between them. Each header DW is the 32-bit value of the spec's figure (Fmt in bits 31:29 of
DW0); payload DWs carry bytes in address order, the lowest address in bits 7:0.

A hard block's stream is not always this. The Xilinx 7-series block (pcie_7x, PG054) has the
same beats and header DWs, but each of its payload DWs holds the lowest-addressed byte in bits
31:24 (Xilinx's PIO example for it, ``PIO_EP_MEM_ACCESS.v``: "TLP Payload format: data[31:0] =
{ byte[0] (lowest addr), ... }"; litepcie's ``S7PCIEPHY``, ``endianness = "big"``), and at 128
bits it packs two TLPs into a beat; :mod:`rtl.phy.s7_axis` reverses the payload bytes and
reframes the beats.
"""

import enum as py_enum

from amaranth.lib import enum

from amaranth.hdl import unsigned
from amaranth.lib import data, stream


__all__ = ["Fmt", "TlpType", "CplStatus", "TlpBeat", "TlpStreamSignature",
           "TlpDw0", "ReqDw1", "CplDw1", "CplDw2", "CfgDw2"]


class Fmt(enum.Enum, shape=3):
    """[PCIe-3.0 2.2.1] TLP format: header size and presence of data."""
    DW3_NODATA = 0b000
    DW4_NODATA = 0b001
    DW3_DATA   = 0b010
    DW4_DATA   = 0b011
    PREFIX     = 0b100


class TlpType(py_enum.IntEnum):
    """[PCIe-3.0 2.2.1 Table 2-3] The Type field (5 bits), for the requests we decode."""
    MEM        = 0b00000
    MEM_LOCKED = 0b00001
    IO         = 0b00010
    CFG0       = 0b00100
    CFG1       = 0b00101
    CPL        = 0b01010
    CPL_LOCKED = 0b01011
    FETCH_ADD  = 0b01100
    SWAP       = 0b01101
    CAS        = 0b01110


class CplStatus(enum.Enum, shape=3):
    """[PCIe-3.0 2.2.9] Completion Status."""
    SC  = 0b000
    UR  = 0b001
    CRS = 0b010
    CA  = 0b100


class TlpDw0(data.Struct):
    """[PCIe-3.0 2.2.1 Figure 2-5] The first header DW, common to all TLPs."""
    length: 10
    at:     2
    attr:   2
    ep:     1
    td:     1
    th:     1
    _rsvd0: 1
    attr2:  1
    t8:     1
    tc:     3
    t9:     1
    type:   5
    fmt:    Fmt


class ReqDw1(data.Struct):
    """[PCIe-3.0 2.2.7] DW1 of memory, I/O and configuration requests."""
    first_be:     4
    last_be:      4
    tag:          8
    requester_id: 16


class CfgDw2(data.Struct):
    """[PCIe-3.0 2.2.7 Figure 2-17] DW2 of configuration requests."""
    _rsvd0:     2
    register:   10   # Extended Register Number and Register Number: the DW index
    _rsvd1:     4
    function:   3
    device:     5
    bus:        8


class CplDw1(data.Struct):
    """[PCIe-3.0 2.2.9 Figure 2-21] DW1 of a completion."""
    byte_count:   12
    bcm:          1
    status:       CplStatus
    completer_id: 16


class CplDw2(data.Struct):
    """[PCIe-3.0 2.2.9] DW2 of a completion."""
    lower_address: 7
    _rsvd0:        1
    tag:           8
    requester_id:  16


def TlpBeat(data_width):
    """One beat of a TLP stream: ``data_width`` bits of DWs, a keep bit per DW, and framing."""
    if data_width not in (64, 128, 256):
        raise ValueError(f"TLP data width must be 64, 128 or 256 bits, not {data_width!r}")
    return data.StructLayout({
        "data":  unsigned(data_width),
        "keep":  unsigned(data_width // 32),
        "first": unsigned(1),
        "last":  unsigned(1),
    })


def TlpStreamSignature(data_width):
    """A TLP stream (source side): see the module docstring for the beat format."""
    return stream.Signature(TlpBeat(data_width))
