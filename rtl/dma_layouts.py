# Ref: PCIe Base 3.0, sections 2.2.7 (memory requests), 2.2.9 (completions), 2.8 (timeout)
"""The client side of the DMA engine: commands, data and status, shared by reads and writes.

A client (the virtqueue engine, the block request engine) asks for ``length`` bytes at host
address ``addr``; the engine splits the transfer into TLPs that follow the link's rules and
hands back the data packed from byte lane 0, then one status per command. The client's ``tag``
comes back in the status so it can match them.
"""

from amaranth.hdl import unsigned
from amaranth.lib import data, enum


__all__ = ["DMA_MAX_LENGTH", "DmaCommand", "DmaError", "DmaStatus", "DmaData"]


# Largest transfer in one command, in bytes (a 64 KiB buffer; 17 bits).
DMA_MAX_LENGTH = 1 << 16


class DmaCommand(data.Struct):
    """One transfer: ``length`` (1 to :data:`DMA_MAX_LENGTH`) bytes at host address ``addr``."""
    addr:   64
    length: 17
    tag:    8


class DmaError(enum.Enum, shape=3):
    """How a transfer ended. Errors are reported, never swallowed."""
    OK                  = 0
    UNSUPPORTED_REQUEST = 1   # [PCIe-3.0 2.2.9] a completion with UR status
    COMPLETER_ABORT     = 2   # ... with CA status
    POISONED            = 3   # [PCIe-3.0 2.7.2] a completion with EP set
    TIMEOUT             = 4   # [PCIe-3.0 2.8] no (complete) completion in time
    BUS_MASTER_DISABLED = 5   # [PCI-3.0 6.2.2] Bus Master Enable clear: nothing was sent


class DmaStatus(data.Struct):
    """The outcome of one command, after its last data beat."""
    tag:   8
    error: DmaError


def DmaData(data_width):
    """A beat of transfer data: bytes in address order from lane 0, ``keep`` per byte (all set
    but on the last beat of a command), ``last`` on the last beat of a command."""
    return data.StructLayout({
        "data": unsigned(data_width),
        "keep": unsigned(data_width // 8),
        "last": unsigned(1),
    })
