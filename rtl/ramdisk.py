# Ref: OASIS virtio 1.2, section 5.2.6 (device operation: read, write, flush, discard, write zeroes)
"""A storage back-end held in on-chip RAM: a small disk for tests and demonstrations."""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In

from .storage import SECTOR_BYTES, StorageOp, StorageStatus, StorageSignature


__all__ = ["RamDisk"]


class RamDisk(wiring.Component):
    """A disk of ``sectors`` 512-byte sectors in block RAM, behind the storage port.

    Commands are served one at a time, in the order they arrive, with the semantics
    :mod:`rtl.storage` defines:

    * ``READ`` sends ``count * 4096 / data_width`` beats, ``last`` on the final one, then the
      completion;
    * ``WRITE`` takes that many beats and writes them, then completes; the beats are counted
      from the command, their ``last`` bits are not looked at;
    * ``FLUSH`` completes ``OK`` at once, whatever its ``sector`` and ``count``: nothing is
      cached, every write is in the RAM when it completes; so ``storage.writeback``, the cache
      mode, is not looked at (a RAM disk is as durable as it gets: it is writethrough whatever
      the driver chose, which [VIRTIO-1.2 5.2.5] allows, a writethrough cache being one that
      commits writes before reporting their completion);
    * ``DISCARD`` and ``WRITE_ZEROES`` write zeros over the sectors, then complete;
    * a ``READ`` or ``WRITE`` of 0 sectors moves no beats and completes.

    A command whose range runs past the end of the disk (``sector + count > sectors``, worked
    out in 65 bits so nothing wraps) completes ``IOERR`` and leaves the RAM as it was, but keeps
    the framing: a ``READ`` still sends its beats (all zeros), a ``WRITE`` still takes its beats
    and drops them; ``DISCARD`` and ``WRITE_ZEROES`` write nothing. An ``op`` value that is not
    a :class:`~rtl.storage.StorageOp` completes ``IOERR`` and moves no data.

    Timing, with every stream ready: ``cmd.ready`` is high in the cycle after the previous
    command ended, and taking the command costs that cycle. Then a ``READ`` of ``n`` beats
    takes ``n + 1`` cycles (one to read the first word), a ``WRITE`` ``n`` cycles (one per
    beat, as fast as they come), ``DISCARD`` and ``WRITE_ZEROES`` one cycle per word (one
    cycle in all if out of range), ``FLUSH``, 0-sector and invalid commands one cycle. So
    back-to-back ``READ`` commands of ``n`` beats each move ``n / (n + 2)`` beats per cycle
    (0.97 for one sector at 64 bits), ``WRITE`` commands ``n / (n + 1)``. The completion is
    valid from the cycle after the last beat was taken (or the last word written). Each completion waits in a one-entry register while the next command starts; a
    command only waits for the completion stream when its own completion is ready and the
    previous one has not been taken. There is no combinational path between ports.

    The RAM is an :class:`amaranth.lib.memory.Memory` of ``sectors * 4096 / data_width`` words
    of ``data_width`` bits with one synchronous read port and one write port, so that synthesis
    maps it to block RAM; it starts all zeros.

    Parameters
    ----------
    sectors : int
        Capacity in 512-byte sectors; at least 1.
    data_width : int
        Width of the data streams and of the RAM words in bits; a divisor of 4096, at least 8.

    Attributes
    ----------
    storage : StorageSignature(data_width), in
        The storage port, as the back-end sees it: ``storage.cmd`` and ``storage.wdata`` in,
        ``storage.rdata`` and ``storage.cpl`` out; ``storage.writeback`` in, and ignored.

    Raises
    ------
    ValueError
        If ``sectors`` is not a positive integer, or ``data_width`` does not divide 4096 bits.
    """
    def __init__(self, sectors, data_width=64):
        if not isinstance(sectors, int) or isinstance(sectors, bool) or sectors < 1:
            raise ValueError(f"RamDisk sectors must be a positive integer, not {sectors!r}")
        signature = StorageSignature(data_width)    # checks data_width
        self.sectors = sectors
        self.data_width = data_width
        #: RAM words (and beats) per sector.
        self.words_per_sector = SECTOR_BYTES * 8 // data_width
        self.depth = sectors * self.words_per_sector
        super().__init__({"storage": In(signature)})

    def elaborate(self, platform):
        m = Module()
        port = self.storage
        shift = self.words_per_sector.bit_length() - 1      # words_per_sector is a power of 2

        m.submodules.mem = mem = Memory(shape=self.data_width, depth=self.depth, init=[])
        rd = mem.read_port()                    # synchronous, "sync" domain
        wr = mem.write_port()

        # -- the command in progress -------------------------------------------------------------
        addr = Signal(range(self.depth))        # RAM word of the next beat (wraps if IOERR)
        left = Signal(32 + shift)               # beats or words not yet read, taken or zeroed
        tag  = Signal(8)
        err  = Signal()                         # out of range, or not an op: complete IOERR

        # -- the completion register -------------------------------------------------------------
        cpl_valid  = Signal()
        cpl_tag    = Signal(8)
        cpl_status = Signal(StorageStatus)
        m.d.comb += [
            port.cpl.valid.eq(cpl_valid),
            port.cpl.payload.tag.eq(cpl_tag),
            port.cpl.payload.status.eq(cpl_status),
        ]
        with m.If(port.cpl.ready):
            m.d.sync += cpl_valid.eq(0)

        def complete():
            """End the command: its completion goes into the register if it is free (by its
            registered state, so cpl.ready reaches no other port), else it waits there."""
            with m.If(cpl_valid):
                m.next = "Complete"
            with m.Else():
                m.d.sync += [
                    cpl_valid.eq(1),
                    cpl_tag.eq(tag),
                    cpl_status.eq(Mux(err, StorageStatus.IOERR, StorageStatus.OK)),
                ]
                m.next = "Take-Command"

        # -- the read pipeline: the RAM's output register is the rdata beat ----------------------
        # rd.data is the word addressed in the cycle before rd.en was last high, so holding
        # rd.en low while a beat waits for rdata.ready keeps it on the port.
        out_valid = Signal()
        out_last  = Signal()
        advance   = Signal()
        m.d.comb += [
            advance.eq(~out_valid | port.rdata.ready),
            rd.en.eq(advance),
            rd.addr.eq(addr),
            port.rdata.valid.eq(out_valid),
            port.rdata.payload.data.eq(Mux(err, 0, rd.data)),
            port.rdata.payload.last.eq(out_last),
            wr.addr.eq(addr),
        ]

        cmd = port.cmd.payload
        with m.FSM(name="fsm"):
            with m.State("Take-Command"):
                m.d.comb += port.cmd.ready.eq(1)
                with m.If(port.cmd.valid):
                    m.d.sync += [
                        tag.eq(cmd.tag),
                        addr.eq(cmd.sector << shift),
                        left.eq(cmd.count << shift),
                        # The sum is 65 bits wide: a sector near 2**64 does not wrap round.
                        err.eq(cmd.sector + cmd.count > self.sectors),
                    ]
                    with m.Switch(cmd.op):
                        with m.Case(StorageOp.READ):
                            m.next = "Complete"
                            with m.If(cmd.count != 0):
                                m.next = "Read-Data"
                        with m.Case(StorageOp.WRITE):
                            m.next = "Complete"
                            with m.If(cmd.count != 0):
                                m.next = "Write-Data"
                        with m.Case(StorageOp.DISCARD, StorageOp.WRITE_ZEROES):
                            m.next = "Complete"
                            with m.If(cmd.count != 0):
                                m.next = "Zero-Sectors"
                        with m.Case(StorageOp.FLUSH):
                            # Nothing is cached: every completed write is already in the RAM.
                            m.d.sync += err.eq(0)
                            m.next = "Complete"
                        with m.Default():
                            m.d.sync += err.eq(1)
                            m.next = "Complete"

            with m.State("Read-Data"):
                with m.If(advance):
                    m.d.sync += [
                        out_valid.eq(left != 0),
                        out_last.eq(left == 1),
                    ]
                    with m.If(left != 0):
                        m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                with m.If(out_valid & port.rdata.ready & out_last):
                    complete()

            with m.State("Write-Data"):
                m.d.comb += port.wdata.ready.eq(1)
                with m.If(port.wdata.valid):
                    m.d.comb += [
                        wr.en.eq(~err),
                        wr.data.eq(port.wdata.payload.data),
                    ]
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        complete()

            with m.State("Zero-Sectors"):
                # [VIRTIO-1.2 5.2.6.2] After a write zeroes command completes, reads of its
                # sectors MUST return zeroes; a discard MAY deallocate them, leaving their
                # contents open. The storage port asks zeros after both, and with nothing to
                # deallocate in a RAM, both write zeros over the range.
                with m.If(err):
                    complete()
                with m.Else():
                    m.d.comb += [wr.en.eq(1), wr.data.eq(0)]
                    m.d.sync += [addr.eq(addr + 1), left.eq(left - 1)]
                    with m.If(left == 1):
                        complete()

            with m.State("Complete"):
                complete()

        return m
