"""A DW register access port: how the completer reaches configuration space and BAR0."""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["RegisterSignature", "byte_mask"]


class RegisterSignature(wiring.Signature):
    """One DW register access per cycle, from the initiator's side.

    ``r_stb`` or ``w_stb`` is asserted for one cycle with ``addr`` (a DW index) and ``be``;
    side effects (read-to-clear, write) happen at that clock edge. ``r_data`` is valid in the
    cycle after ``r_stb``. An initiator drives all its outputs to 0 while neither strobe is set,
    so the ports of initiators that never access at the same time can be OR-ed.

    Members
    -------
    addr : Signal(addr_width), out
    be : Signal(4), out
        Byte enables; only enabled bytes are written, and only enabled bytes have read side
        effects.
    r_stb, w_stb : Signal(1), out
    w_data : Signal(32), out
    r_data : Signal(32), in
    """
    def __init__(self, addr_width):
        if not isinstance(addr_width, int) or addr_width < 1:
            raise TypeError(f"Address width must be a positive integer, not {addr_width!r}")
        self.addr_width = addr_width
        super().__init__({
            "addr":   Out(addr_width),
            "be":     Out(4),
            "r_stb":  Out(1),
            "w_stb":  Out(1),
            "w_data": Out(32),
            "r_data": In(32),
        })


def byte_mask(be):
    """Byte enables -> a 32-bit mask value (an Amaranth expression)."""
    from amaranth.hdl import Cat
    return Cat(*(be[i].replicate(8) for i in range(4)))
