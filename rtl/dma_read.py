# Ref: PCIe Base 3.0, sections 2.2.7 (memory requests), 2.3 (completions), 2.8 (timeout)
"""The read half of the DMA engine: host memory to the client, in command order.

A command (``addr``, ``length``, client ``tag``) becomes one or more Memory Read requests, each
at most Max_Read_Request_Size long and never crossing an MRRS-aligned boundary (so never a 4 KB
one). Every request owns a *slot*: its Tag is the slot number, and a slot of
``max_read_request`` bytes in the reassembly buffer holds its data at the host address modulo
``max_read_request``. Completions fill the slots in any order; the slots drain to the client in
the order they were allocated (a ring), so data comes out in command order with no reorder logic
beyond the ring itself. The slot at the head of the ring drains as its completions arrive (they
come in address order [PCIe-3.0 2.3.1.1]), not only once its request is done, so a request's
data follows its first completion by a few cycles. A slot, and with it its Tag, is freed when
it has drained, that is right after its request completed, failed or timed out.

The drain reads the buffer one aligned 64-bit word a cycle and shifts every word of a command by
the same number of bytes (``addr % 8``): every request after a command's first starts on an MRRS
boundary, so on a word boundary.
"""

from amaranth.hdl import Module, Signal, Cat, Const, Mux, Array
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from .tlp import Fmt, TlpType, CplStatus, TlpDw0, ReqDw1, CplDw1, CplDw2, TlpStreamSignature
from .dma_layouts import DmaCommand, DmaData, DmaError, DmaStatus
from .streams import RegisterSlice


__all__ = ["DmaReadEngine", "DEFAULT_TIMEOUT"]


# Completion timeout in cycles: 2**20 is 8.4 ms at 125 MHz, inside the 50 us to 50 ms range that
# the default Completion Timeout Value (0000b) allows [PCIe-3.0 2.8, 7.8.16].
DEFAULT_TIMEOUT = 1 << 20

_MRR_SIZES = (128, 256, 512, 1024, 2048, 4096)

def _OutBeat(data_width):
    """A beat on its way to the client, with its command's status (on the last beat)."""
    return data.StructLayout({
        "beat":  DmaData(data_width),
        "tag":   8,
        "error": 3,
    })

# The command as the drain needs it: passed from the request side in a FIFO.
_CmdInfo = data.StructLayout({
    "length": 17,
    "shift":  3,     # addr % 8: the byte lane of the first byte in the buffer's words
    "tag":    8,
    # Decoded from `length` and `shift` as the command goes in, so that the drain's handshake
    # is a few gates from registers and not a chain of adders on the FIFO's output.
    "zero":   1,     # length == 0
    "single": 1,     # one data beat: length <= 8
    "spill":  1,     # the last beat also takes bytes from the next buffer word
})


class DmaReadEngine(wiring.Component):
    """Reads host memory with Memory Read requests and returns the bytes in command order.

    Every command gets exactly ``length`` bytes on ``data`` (byte ``k`` in lane ``k % 8`` of
    beat ``k // 8``), then one ``status``. A request that fails (a completion with UR or CA
    status or EP set, or no complete answer within ``timeout`` cycles) reads as zeros from
    where the drain stood when it failed to the end of its range: the words of its good
    completions that had drained already carry the host's bytes, nothing after the failure
    does [PCIe-3.0 2.7.2.2]. The rest of the command still carries data and the status
    reports the first failed request in address order, so a client that sees an error must
    treat the whole command's data as undefined. With Bus Master Enable clear
    no request is sent and the bytes read as zeros; Bus Master Enable is checked before each
    request, so clearing it in the middle of a command stops the rest. A zero ``length`` is a
    client error: nothing is sent and one beat with ``keep`` clear comes out, then a status.

    The status of a command waits in a register until taken; the last data beat of the next
    command waits for that, so a client must take statuses as it takes data.

    Beats leave through a four-entry queue, each last one carrying its command's status: the
    drain waits only on the queue's room (a register), not on the client's ``data.ready``,
    which comes late through the DMA arbiters. The client sees the ports behave as described
    above, a cycle or two later; but the next command's first beats may be offered in the
    same cycle as a status, so a client that waits for a status must stop taking data at the
    beat with ``last``.

    Up to ``tags`` requests are outstanding at once. The Tag of a request is its slot number, so
    tags stay below 32 unless ``tags`` is larger and Extended Tag Field Enable is set.

    Parameters
    ----------
    data_width : int
        Width of the TLP and data streams in bits; 64 only for now.
    tags : int
        Number of slots, and so of requests outstanding at once, 1 to 256. The reassembly
        buffer holds ``tags * max_read_request`` bytes.
    max_read_request : int
        Largest request the engine sends, in bytes (128 to 4096, a power of two); the
        programmed Max_Read_Request_Size is used when it is smaller.
    timeout : int
        Completion timeout in cycles, counted from the request's last beat [PCIe-3.0 2.8].

    Attributes
    ----------
    cmd : stream.Signature(DmaCommand), in
        Commands: ``length`` (1 to ``DMA_MAX_LENGTH``) bytes at ``addr``; ``tag`` comes back
        in the status.
    data : stream.Signature(DmaData(data_width)), out
        The bytes of each command, packed from lane 0; ``keep`` all set but on the command's
        last beat, ``last`` on that beat. Bytes outside ``keep`` are zero.
    status : stream.Signature(DmaStatus), out
        One per command, after its last data beat: the client's tag and OK or the first error.
    tx : TlpStreamSignature(data_width), out
        Memory Read requests.
    cpl : TlpStreamSignature(data_width), in
        Completions from the link; never back-pressured.
    bus_master : Signal(1), in
        Bus Master Enable (Command register bit 2).
    requester_id : Signal(16), in
        Bus, Device and Function Number of this function.
    max_read_request_size : Signal(3), in
        Max_Read_Request_Size from Device Control (0 is 128 B, ..., 5 is 4096 B).
    extended_tag : Signal(1), in
        Extended Tag Field Enable from Device Control; only matters when ``tags`` > 32. Takes
        effect when no request is outstanding.
    unexpected_cpl : Signal(1), out
        Pulses once for each completion that was dropped: its tag names no outstanding request,
        its Requester ID is not ours, or its Byte Count, Lower Address or Length do not continue
        the request's data [PCIe-3.0 2.3.2].

    Raises
    ------
    ValueError
        For a parameter out of range.
    """
    def __init__(self, data_width=64, tags=8, max_read_request=512, timeout=DEFAULT_TIMEOUT):
        if data_width != 64:
            raise ValueError(f"DmaReadEngine data_width must be 64 (128 and 256 are not "
                             f"implemented yet), not {data_width!r}")
        if not isinstance(tags, int) or isinstance(tags, bool) or not 1 <= tags <= 256:
            raise ValueError(f"DmaReadEngine tags must be an integer from 1 to 256 (the 8-bit "
                             f"Tag field), not {tags!r}")
        if max_read_request not in _MRR_SIZES or isinstance(max_read_request, bool):
            raise ValueError(f"DmaReadEngine max_read_request must be one of 128, 256, 512, "
                             f"1024, 2048 or 4096 bytes, not {max_read_request!r}")
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 1:
            raise ValueError(f"DmaReadEngine timeout must be a positive number of cycles, "
                             f"not {timeout!r}")
        self.data_width = data_width
        self.tags = tags
        self.max_read_request = max_read_request
        self.timeout = timeout
        super().__init__({
            "cmd":                   In(stream.Signature(DmaCommand)),
            "data":                  Out(stream.Signature(DmaData(data_width))),
            "status":                Out(stream.Signature(DmaStatus)),
            "tx":                    Out(TlpStreamSignature(data_width)),
            "cpl":                   In(TlpStreamSignature(data_width)),
            "bus_master":            In(1),
            "requester_id":          In(16),
            "max_read_request_size": In(3),
            "extended_tag":          In(1),
            "unexpected_cpl":        Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        tags = self.tags
        off_bits = exact_log2(self.max_read_request)   # byte offset inside a slot
        word_bits = off_bits - 3                        # 64-bit word inside a slot
        mrr_code = off_bits - 7                         # Device Control encoding of the limit

        OK, UR, CA, EP, TIMEOUT, BMD = (Const(e.value, 3) for e in (
            DmaError.OK, DmaError.UNSUPPORTED_REQUEST, DmaError.COMPLETER_ABORT,
            DmaError.POISONED, DmaError.TIMEOUT, DmaError.BUS_MASTER_DISABLED))

        def first_error(old, new):
            return Mux(old == OK, new, old)

        # -- reassembly buffer: a slot of max_read_request bytes per tag, even and odd DWs in
        # separate banks so that one beat (two DWs, on either DW alignment) writes in one cycle.
        depth = tags << word_bits
        m.submodules.even_bank = even = Memory(shape=32, depth=depth, init=[])
        m.submodules.odd_bank  = odd  = Memory(shape=32, depth=depth, init=[])
        even_w, odd_w = even.write_port(), odd.write_port()
        even_r, odd_r = even.read_port(), odd.read_port()

        # -- per-slot state --------------------------------------------------------------------
        def per_slot(name, shape):
            return Array(Signal(shape, name=f"{name}{t}") for t in range(tags))
        busy       = per_slot("busy", 1)         # allocated, not drained yet
        waiting    = per_slot("waiting", 1)      # request sent, completions expected
        done       = per_slot("done", 1)         # ready to drain
        error      = per_slot("error", 3)        # DmaError, the first one seen
        first_word = per_slot("first_word", word_bits)
        last_word  = per_slot("last_word", word_bits)
        remaining  = per_slot("remaining", 13)   # bytes still to come: the next Byte Count
        next_off   = per_slot("next_off", off_bits)  # slot offset of the next byte to come
        # Slot offset up to which completions have been written: the drain may read the words
        # below it before the request is done.
        ready_off  = per_slot("ready_off", off_bits)
        timer      = per_slot("timer", range(self.timeout))

        # The ring of slots: allocated at `tail`, drained at `head`.
        head = Signal(range(tags))
        tail = Signal(range(tags))
        used = Signal(range(tags + 1))
        alloc = Signal()
        free = Signal()
        head_reset = Signal()
        if tags > 32:
            # [PCIe-3.0 2.2.6.2] Without Extended Tag Field Enable only tags 0 to 31 may be
            # used. The ring size changes only while the ring is empty.
            ring_last = Signal(range(tags), init=31)
            with m.If((used == 0) & ~alloc):
                m.d.comb += head_reset.eq(1)
                m.d.sync += [
                    ring_last.eq(Mux(self.extended_tag, tags - 1, 31)),
                    head.eq(0),
                    tail.eq(0),
                ]
        else:
            ring_last = Const(tags - 1, range(tags))

        def ring_next(i):
            return Mux(i == ring_last, 0, i + 1)
        m.d.sync += used.eq(used + alloc - free)

        # -- request side: split commands, allocate slots, send MRd --------------------------
        m.submodules.cmd_fifo = cmd_fifo = fifo.SyncFIFOBuffered(
            width=_CmdInfo.size, depth=max(tags, 2))
        cmd_w = data.View(_CmdInfo, cmd_fifo.w_data)
        # Commands enter through a register: `cmd.ready` is a flip-flop, so the clients'
        # arbitration (the request engine's DMA read arbiter) does not chain into the split
        # logic below. Its half rate costs nothing, as a command takes at least a cycle
        # in Allocate-Tag after it is accepted.
        m.submodules.cmd_reg = cmd_reg = RegisterSlice(self.cmd.signature.flip())
        wiring.connect(m, wiring.flipped(self.cmd), cmd_reg.i)
        cmd = cmd_reg.o

        cur_addr = Signal(64)
        rem_len = Signal(17)

        # [PCIe-3.0 7.8.4] Max_Read_Request_Size, limited to what the slots hold. The reserved
        # encodings 6 and 7 are read as our limit.
        mrrs_code = Signal(3)
        m.d.comb += mrrs_code.eq(Mux(self.max_read_request_size > mrr_code, mrr_code,
                                     self.max_read_request_size))
        # Registered: a change of Max_Read_Request_Size applies a cycle later, and the split
        # below starts from a register. Its reset value, 128 B, is a valid boundary too.
        boundary_mask = Signal(12, init=127)
        with m.Switch(mrrs_code):
            for k in range(mrr_code + 1):
                with m.Case(k):
                    m.d.sync += boundary_mask.eq((128 << k) - 1)
        # [PCIe-3.0 2.2.7] A request must not cross a 4 KB boundary; splitting at MRRS-aligned
        # boundaries also keeps every request inside one slot-sized block of the address space.
        # A request either ends at the next boundary or is the command's last (`req_last`, the
        # rest fits before the boundary). Its fields are computed for both cases side by side
        # and chosen by `req_last`, so that no adder waits on the comparison.
        to_boundary = Signal(13)     # 1 to 4096 bytes from cur_addr to the next boundary
        req_last = Signal()          # the command's last request
        req_len = Signal(13)
        m.d.comb += [
            to_boundary.eq((boundary_mask & ~cur_addr[:12]) + 1),
            req_last.eq(rem_len <= to_boundary),
            req_len.eq(Mux(req_last, rem_len, to_boundary)),
        ]
        # When `req_last`, `rem_len` is at most 4096 and its low 13 bits are the whole of it.
        tail_len = rem_len[:13]

        # [PCIe-3.0 2.2.5] First and Last DW Byte Enables; Last BE is 0 for a 1 DW request.
        # A request that ends at the boundary ends on a DW boundary.
        tail_end = Signal(14)        # cur_addr[:2] + tail_len
        bnd_dws = Signal(11)
        tail_dws = Signal(11)
        req_dws = Signal(11)
        one_dw = Signal()
        be_start = Signal(4)
        be_end = Signal(4)
        m.d.comb += [
            tail_end.eq(cur_addr[:2] + tail_len),
            bnd_dws.eq((boundary_mask[2:] & ~cur_addr[2:12]) + 1),
            tail_dws.eq((tail_end + 3) >> 2),
            req_dws.eq(Mux(req_last, tail_dws, bnd_dws)),
            one_dw.eq(Mux(req_last, tail_dws == 1, bnd_dws == 1)),
            be_start.eq(Array(Const(0b1111 << k & 0b1111, 4) for k in range(4))[cur_addr[:2]]),
            be_end.eq(Mux(req_last,
                          Array(Const(v, 4) for v in (0b1111, 0b0001, 0b0011, 0b0111))[
                              tail_end[:2]],
                          0b1111)),
        ]

        # A request whose slot is filled without a TLP: Bus Master Enable clear
        # [PCI-3.0 6.2.2], or a zero-length command.
        zero_len = rem_len == 0
        dead = ~self.bus_master | zero_len
        start_off = cur_addr[:off_bits]
        # Slot offset of the request's last byte (of its first, for a zero length).
        end_off = Mux(req_last,
                      start_off + Mux(zero_len, 0, (tail_len - 1)[:off_bits]),
                      start_off | boundary_mask[:off_bits])[:off_bits]
        # The next request starts at the boundary; after the last one `cur_addr` is not used
        # until the next command loads it.
        next_addr = (cur_addr | boundary_mask) + 1

        hdr_dw0 = Signal(TlpDw0)
        hdr_dw1 = Signal(ReqDw1)
        hdr_addr_hi = Signal(32)
        hdr_addr_lo = Signal(32)
        hdr_4dw = Signal()
        req_tag = Signal(range(tags))
        req_cmd_last = Signal()
        sent = Signal()

        with m.FSM(name="request"):
            with m.State("Accept-Command"):
                m.d.comb += [
                    cmd.ready.eq(cmd_fifo.w_rdy),
                    cmd_fifo.w_en.eq(cmd.valid),
                    cmd_w.length.eq(cmd.payload.length),
                    cmd_w.shift.eq(cmd.payload.addr[:3]),
                    cmd_w.tag.eq(cmd.payload.tag),
                    cmd_w.zero.eq(cmd.payload.length == 0),
                    cmd_w.single.eq(cmd.payload.length <= 8),
                    # The last beat starts at byte shift + 8 * (beats - 1) of the command's
                    # words and holds (length - 1) % 8 + 1 bytes: it ends past its word when
                    # shift + (length - 1) % 8 >= 8 (never for a zero length, read as one).
                    cmd_w.spill.eq((cmd.payload.length != 0) &
                                   (cmd.payload.addr[:3] +
                                    (cmd.payload.length[:3] - 1)[:3] >= 8)),
                ]
                with m.If(cmd.valid & cmd_fifo.w_rdy):
                    m.d.sync += [
                        cur_addr.eq(cmd.payload.addr),
                        rem_len.eq(cmd.payload.length),
                    ]
                    m.next = "Allocate-Tag"

            with m.State("Allocate-Tag"):
                with m.If(used != ring_last + 1):
                    m.d.comb += alloc.eq(1)
                    four_dw = cur_addr[32:].any()
                    m.d.sync += [
                        tail.eq(ring_next(tail)),
                        cur_addr.eq(next_addr),
                        rem_len.eq(Mux(req_last, 0, rem_len - to_boundary)),
                        req_tag.eq(tail),
                        req_cmd_last.eq(req_last),
                        # [PCIe-3.0 2.2.4.1] 32-bit addressing below 4 GB, 64-bit above.
                        hdr_4dw.eq(four_dw),
                        hdr_dw0.eq(0),
                        hdr_dw0.fmt.eq(Mux(four_dw, Fmt.DW4_NODATA, Fmt.DW3_NODATA)),
                        hdr_dw0.type.eq(TlpType.MEM),
                        hdr_dw0.length.eq(req_dws[:10]),     # 1024 DW is encoded as 0
                        hdr_dw1.requester_id.eq(self.requester_id),
                        hdr_dw1.tag.eq(tail),
                        hdr_dw1.first_be.eq(Mux(one_dw, be_start & be_end, be_start)),
                        hdr_dw1.last_be.eq(Mux(one_dw, 0, be_end)),
                        hdr_addr_hi.eq(cur_addr[32:]),
                        hdr_addr_lo.eq(Cat(Const(0, 2), cur_addr[2:32])),
                    ]
                    with m.If(dead):
                        with m.If(req_last):
                            m.next = "Accept-Command"
                    with m.Else():
                        m.next = "Send-Header"

            with m.State("Send-Header"):
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.data.eq(Cat(hdr_dw0, hdr_dw1)),
                    self.tx.payload.keep.eq(0b11),
                    self.tx.payload.first.eq(1),
                ]
                with m.If(self.tx.ready):
                    m.next = "Send-Address"

            with m.State("Send-Address"):
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.data.eq(Mux(hdr_4dw, Cat(hdr_addr_hi, hdr_addr_lo),
                                                hdr_addr_lo)),
                    self.tx.payload.keep.eq(Mux(hdr_4dw, 0b11, 0b01)),
                    self.tx.payload.last.eq(1),
                ]
                with m.If(self.tx.ready):
                    m.d.comb += sent.eq(1)
                    with m.If(req_cmd_last):
                        m.next = "Accept-Command"
                    with m.Else():
                        m.next = "Allocate-Tag"

        # -- completion side: check each completion against its slot, write its payload -------
        # Two stages, so that no check has to follow a tag lookup in the same cycle:
        #   A (the beat as it arrives): the header's fields go to registers on beat 0; on beat 1,
        #     which brings DW2 (Tag, Requester ID, Lower Address), the slot named by the Tag is
        #     looked up and compared with the header, and the results go to registers.
        #   B (the same beat a cycle later, from `p_*`): the completion is accepted or dropped
        #     from those registers alone, its payload is written and its slot updated.
        # The lookup of stage A is never stale: a completion's last beat is in stage B the
        # cycle after it arrives, and the next completion's beat 1 comes at least one header
        # beat later; a slot only becomes `waiting` once its request is sent, so before any of
        # its completions can come; and a slot that a completion in stage A names does not time
        # out (below), so `waiting` it read still holds in stage B.
        cpl = self.cpl
        m.d.comb += cpl.ready.eq(1)

        # Stage A.
        c_beat = Signal(2)       # the next beat: 0 header DW0-1, 1 DW2 and payload, 2 payload
        c_dw0 = Signal(TlpDw0)
        c_dw1 = Signal(CplDw1)
        h_byte_count = Signal(13)
        h_length_dw = Signal(11)
        c_slot = Signal(range(tags))
        c_hit = Signal()         # a completion for an outstanding request of ours
        c_bc_ok = Signal()       # its Byte Count is the one its slot expects
        c_la_ok = Signal()       # its Lower Address is the slot's next byte
        c_len_ok = Signal()      # its Length ends with the request
        c_last_cpl = Signal()    # its Byte Count says it is the request's last completion
        c_bytes = Signal(13)     # its bytes from its first enabled byte
        c_next = Signal(off_bits)    # the slot's `next_off` when it arrived

        a_dw2 = CplDw2(cpl.payload.data[:32])
        a_beat1 = cpl.valid & ~cpl.payload.first & (c_beat == 1)
        a_idx = a_dw2.tag[:len(c_slot)]
        a_lower = a_dw2.lower_address
        # Bytes of this completion from its first enabled byte; [PCIe-3.0 2.2.9] its Byte Count
        # is the bytes left in the request, so it is the last one when they all fit.
        a_bytes = Cat(Const(0, 2), h_length_dw) - a_lower[:2]
        a_tag_ok = waiting[a_idx]
        if tags < 256:
            a_tag_ok &= a_dw2.tag < tags

        with m.If(cpl.valid):
            with m.If(cpl.payload.first):
                m.d.sync += [
                    c_dw0.eq(cpl.payload.data[:32]),
                    c_dw1.eq(cpl.payload.data[32:]),
                    c_beat.eq(Mux(cpl.payload.last, 0, 1)),
                ]
                dw0 = TlpDw0(cpl.payload.data[:32])
                dw1 = CplDw1(cpl.payload.data[32:])
                m.d.sync += [
                    h_byte_count.eq(Mux(dw1.byte_count == 0, 4096, dw1.byte_count)),
                    h_length_dw.eq(Mux(dw0.length == 0, 1024, dw0.length)),
                ]
            with m.Elif(c_beat == 1):
                m.d.sync += [
                    c_slot.eq(a_idx),
                    c_hit.eq((c_dw0.type == TlpType.CPL) &
                             ((c_dw0.fmt == Fmt.DW3_NODATA) | (c_dw0.fmt == Fmt.DW3_DATA)) &
                             (a_dw2.requester_id == self.requester_id) &
                             a_tag_ok),
                    # [PCIe-3.0 2.3.1.1] Completions of one request come in address order, each
                    # with the Byte Count still to come and the Lower Address of its first byte:
                    # both must continue the slot exactly, and the last one must end with the
                    # request.
                    c_bc_ok.eq(h_byte_count == remaining[a_idx]),
                    c_la_ok.eq(a_lower == next_off[a_idx][:7]),
                    c_len_ok.eq(h_length_dw == ((a_lower[:2] + h_byte_count + 3) >> 2)),
                    c_last_cpl.eq(h_byte_count <= a_bytes),
                    c_bytes.eq(a_bytes),
                    c_next.eq(next_off[a_idx]),
                    c_beat.eq(Mux(cpl.payload.last, 0, 2)),
                ]
            with m.Elif(c_beat == 2):
                with m.If(cpl.payload.last):
                    m.d.sync += c_beat.eq(0)

        # The beat itself, a cycle later.
        p_runt = Signal()        # a TLP of one beat: no room for a completion header
        p_hdr = Signal()         # beat 0: the header
        p_beat1 = Signal()       # beat 1: DW2 and the first payload DW
        p_beatn = Signal()       # a later beat: two payload DWs
        p_last = Signal()
        p_data = Signal(64)
        m.d.sync += [
            p_runt.eq(cpl.valid & cpl.payload.first & cpl.payload.last),
            p_hdr.eq(cpl.valid & cpl.payload.first),
            p_beat1.eq(a_beat1),
            p_beatn.eq(cpl.valid & ~cpl.payload.first & (c_beat == 2)),
            p_last.eq(cpl.payload.last),
            p_data.eq(cpl.payload.data),
        ]

        # Stage B.
        c_acc = Signal()         # the completion in progress was accepted; more beats to come
        c_final = Signal()
        c_err = Signal(3)
        c_left = Signal(11)      # payload DWs still to write
        c_dw = Signal(off_bits - 2)  # slot DW index of the next payload DW

        sc = c_dw1.status == CplStatus.SC
        has_data = c_dw0.fmt == Fmt.DW3_DATA
        final = c_last_cpl
        accept = Signal()
        m.d.comb += accept.eq(c_hit & (~sc | (has_data & c_bc_ok & c_la_ok &
                                              (~final | c_len_ok))))
        # [PCIe-3.0 2.3.2] A status other than SC ends the request; a reserved status is handled
        # as UR, and so is CRS, which only configuration requests may get.
        # [PCIe-3.0 2.7.2.2] Poisoned data must not be used.
        cpl_err = Mux(sc, Mux(c_dw0.ep, EP, OK),
                      Mux(c_dw1.status == CplStatus.CA, CA, UR))

        with m.If(p_runt):
            m.d.comb += self.unexpected_cpl.eq(1)
        with m.If(p_hdr):
            m.d.sync += c_acc.eq(0)
        with m.If(p_beat1):
            m.d.sync += [
                c_acc.eq(accept & ~p_last),
                c_final.eq(~sc | final),
                c_err.eq(cpl_err),
                # The Length less one, 1024 DWs (encoded 0) included.
                c_left.eq(Mux(accept & sc, (c_dw0.length - 1)[:10], 0)),
                c_dw.eq(c_next[2:] + 1),
            ]
            with m.If(~accept):
                m.d.comb += self.unexpected_cpl.eq(1)
        with m.If(p_beatn & p_last):
            m.d.sync += c_acc.eq(0)

        # Payload DWs of this beat: one on the second beat (after DW2), then two. A digest DW
        # after the payload (TD set) is not written.
        w_slot = c_slot
        w_dw = Mux(p_beat1, c_next[2:], c_dw)
        w_lo = Mux(p_beat1, p_data[32:], p_data[:32])
        w_hi = p_data[32:]
        w_n = Signal(2)
        with m.If(p_beat1 & accept & sc):
            m.d.comb += w_n.eq(1)
        with m.Elif(p_beatn):
            m.d.comb += w_n.eq(Mux(c_left >= 2, 2, c_left))
        with m.If(p_beatn):
            m.d.sync += [c_left.eq(c_left - w_n), c_dw.eq(c_dw + w_n)]
        odd_first = w_dw[0]
        row = w_dw[1:]
        m.d.comb += [
            even_w.addr.eq(Cat(Mux(odd_first, row + 1, row)[:word_bits], w_slot)),
            even_w.data.eq(Mux(odd_first, w_hi, w_lo)),
            even_w.en.eq(Mux(odd_first, w_n >= 2, w_n >= 1)),
            odd_w.addr.eq(Cat(row, w_slot)),
            odd_w.data.eq(Mux(odd_first, w_lo, w_hi)),
            odd_w.en.eq(Mux(odd_first, w_n >= 1, w_n >= 2)),
        ]

        # A slot receiving a completion does not time out in the middle of it, nor while the
        # completion's beat 1 is in stage A.
        holding = Mux(p_beat1, accept, c_acc)
        progress = p_beat1 & accept & sc & ~final
        commit = (p_beat1 | p_beatn) & p_last & holding
        commit_final = Mux(p_beat1, ~sc | final, c_final)
        commit_err = Mux(p_beat1, cpl_err, c_err)
        c_next_end = c_next + c_bytes    # the slot's `next_off` after this completion

        # -- drain: read the slots in ring order, a word a cycle --------------------------------
        # The read ports' output is one register of the stream and `hold` a second behind it:
        # a word the output stage does not take moves there, so that the next read goes out
        # whether or not it is taken. Reads depend only on these two being not both full (a
        # register), not on `s1_take`, which the output stage decides late.
        port_valid = Signal()    # the read ports hold a word not yet taken (nor moved)
        port_err = Signal(3)
        hold_valid = Signal()    # `hold` holds a word, older than the ports' one
        hold = Signal(64)
        hold_err = Signal(3)
        s1_valid = Signal()      # the oldest word: in `hold`, else at the read ports
        s1_err = Signal(3)
        s1_take = Signal()
        s1_word = Signal(64)
        advance = ~hold_valid | ~port_valid
        at_start = Signal(init=1)
        widx = Signal(word_bits)
        # The head slot's state as it was in the last cycle, in registers: the drain decides
        # from these, not through the slots' multiplexers. While a slot is at the head its
        # state only moves forward (done and ready_off rise, its range stays), so a decision on
        # the last cycle's state is one the present state allows too; but in the cycle after
        # the head moves they describe the slot before it, and nothing is read.
        h_fresh = Signal()
        h_done = Signal()
        h_waiting = Signal()
        h_err = Signal(3)
        h_first = Signal(word_bits)
        h_last = Signal(word_bits)
        h_ready = Signal(word_bits)
        m.d.sync += [
            h_fresh.eq(~free & ~head_reset),
            h_done.eq(done[head]),
            h_waiting.eq(waiting[head]),
            h_err.eq(error[head]),
            h_first.eq(first_word[head]),
            h_last.eq(last_word[head]),
            h_ready.eq(ready_off[head][3:]),
        ]
        cur_w = Mux(at_start, h_first, widx)
        # [PCIe-3.0 2.3.1.1] The completions of one request come in address order, so the
        # words before the last completion's end are final: they drain while the rest of the
        # request is still on the way.
        streamable = h_waiting & (cur_w < h_ready)
        fetch = advance & h_fresh & (h_done | streamable)
        m.d.comb += [
            even_r.addr.eq(Cat(cur_w, head)),
            odd_r.addr.eq(Cat(cur_w, head)),
            even_r.en.eq(advance),
            odd_r.en.eq(advance),
            s1_valid.eq(hold_valid | port_valid),
            s1_err.eq(Mux(hold_valid, hold_err, port_err)),
            # A failed request reads as zeros.
            s1_word.eq(Mux(s1_err == OK, Mux(hold_valid, hold, Cat(even_r.data, odd_r.data)),
                           0)),
        ]
        with m.If(fetch):
            m.d.sync += port_err.eq(h_err)
        m.d.sync += port_valid.eq(fetch | (port_valid & hold_valid))
        with m.If(hold_valid):
            with m.If(s1_take):
                m.d.sync += hold_valid.eq(0)
        with m.Elif(port_valid & ~s1_take):
            m.d.sync += [hold.eq(Cat(even_r.data, odd_r.data)), hold_err.eq(port_err),
                         hold_valid.eq(1)]
        with m.If(fetch):
            with m.If(cur_w == h_last):
                m.d.comb += free.eq(1)
                m.d.sync += [head.eq(ring_next(head)), at_start.eq(1)]
            with m.Else():
                m.d.sync += [widx.eq(cur_w + 1), at_start.eq(0)]

        # -- per-slot updates, in order of priority ----------------------------------------------
        for t in range(tags):
            with m.If(waiting[t]):
                with m.If(timer[t] != 0):
                    m.d.sync += timer[t].eq(timer[t] - 1)
                with m.Elif(~(holding & (w_slot == t)) & ~(a_beat1 & (a_idx == t))):
                    # [PCIe-3.0 2.8] Completion Timeout: the request ends with an error and its
                    # tag becomes free once the slot has drained.
                    m.d.sync += [
                        waiting[t].eq(0),
                        done[t].eq(1),
                        error[t].eq(first_error(error[t], TIMEOUT)),
                    ]
            with m.If(progress & (w_slot == t)):
                m.d.sync += [
                    remaining[t].eq(h_byte_count - c_bytes),
                    next_off[t].eq(c_next_end),
                ]
            with m.If(commit & (w_slot == t)):
                m.d.sync += error[t].eq(first_error(error[t], commit_err))
                with m.If(~commit_final):
                    # The whole completion is written with this beat; on its second beat
                    # `next_off` moves on in this same cycle.
                    m.d.sync += ready_off[t].eq(Mux(p_beat1, c_next_end, next_off[t]))
                with m.If(commit_final):
                    m.d.sync += [waiting[t].eq(0), done[t].eq(1)]
            with m.If(sent & (req_tag == t)):
                m.d.sync += [waiting[t].eq(1), timer[t].eq(self.timeout - 1)]
            with m.If(alloc & (tail == t)):
                m.d.sync += [
                    busy[t].eq(1),
                    waiting[t].eq(0),
                    done[t].eq(dead),
                    error[t].eq(Mux(self.bus_master, OK, BMD)),
                    first_word[t].eq(start_off[3:]),
                    last_word[t].eq(end_off[3:off_bits]),
                    remaining[t].eq(req_len),
                    next_off[t].eq(start_off),
                    ready_off[t].eq(start_off),
                ]
            with m.If(free & (head == t)):
                m.d.sync += [busy[t].eq(0), done[t].eq(0)]

        # -- output: shift the word stream by the command's byte offset --------------------------
        info = data.View(_CmdInfo, cmd_fifo.r_data)
        prev_valid = Signal()    # `prev` holds word `beat` of the current command
        prev = Signal(64)
        beat = Signal(14)
        cmd_err = Signal(3)
        st_valid = Signal()
        st_tag = Signal(8)
        st_err = Signal(3)

        # `last_beat` is `beat == (length - 1) // 8` (a zero length is one beat), kept in
        # registers: on the first beat the FIFO's `single` says it, on later ones `last_next`
        # was computed when the previous beat was taken. Only commands of more than one beat
        # use `last_next`, so their length is not zero there.
        at_first = Signal(init=1)    # beat == 0
        last_next = Signal()
        last_beat = Mux(at_first, info.single, last_next)
        # Beat j takes bytes shift..7 of word j and, when shift is not 0 and word j + 1 still
        # belongs to the command, bytes 0..shift-1 of word j + 1: every beat but the last
        # needs word j + 1 then; the last one only if it spills over.
        need_next = (info.shift != 0) & (~last_beat | info.spill)
        out_valid = cmd_fifo.r_rdy & prev_valid & (~need_next | s1_valid)
        window = Cat(prev, s1_word)
        shifted = Array(window[8 * k:8 * k + 64] for k in range(8))[info.shift]
        keep = Signal(8)
        with m.If(~last_beat):
            m.d.comb += keep.eq(0xff)
        with m.Elif(~info.zero):
            m.d.comb += keep.eq(Array(Const((1 << k) - 1 if k else 0xff, 8)
                                      for k in range(8))[info.length[:3]])
        # The beats, each last one with its command's status, go to the client through a
        # queue whose `w_rdy` (from its level, a register) is all the drain waits on: the
        # client's `data.ready`, which comes through the DMA arbiters, does not reach it.
        out_fifo = m.submodules.out_fifo = fifo.SyncFIFOBuffered(
            width=data.Layout.cast(_OutBeat(self.data_width)).size, depth=4)
        out = data.View(_OutBeat(self.data_width), out_fifo.w_data)
        m.d.comb += [
            out.beat.data.eq(shifted & Cat(keep[k].replicate(8) for k in range(8))),
            out.beat.keep.eq(keep),
            out.beat.last.eq(last_beat),
            out.tag.eq(info.tag),
            out.error.eq(first_error(cmd_err, Mux(need_next, s1_err, OK))),
            out_fifo.w_en.eq(out_valid),
        ]
        take = out_valid & out_fifo.w_rdy
        load = s1_valid & (~prev_valid | (take & ~last_beat))
        m.d.comb += s1_take.eq(load | (take & last_beat & need_next))

        with m.If(load):
            m.d.sync += [
                prev.eq(s1_word),
                cmd_err.eq(Mux(~prev_valid & (beat == 0), s1_err, first_error(cmd_err, s1_err))),
                prev_valid.eq(1),
            ]
        with m.If(take):
            with m.If(last_beat):
                m.d.comb += cmd_fifo.r_en.eq(1)
                m.d.sync += [
                    prev_valid.eq(0),
                    beat.eq(0),
                    at_first.eq(1),
                ]
            with m.Else():
                m.d.sync += [
                    beat.eq(beat + 1),
                    at_first.eq(0),
                    last_next.eq(beat + 1 == (info.length - 1)[3:]),
                    prev_valid.eq(s1_valid),
                ]

        # The client's side: a command's status is offered from the cycle after its last beat
        # was taken, and the next command's last beat waits until that status is taken.
        head = data.View(_OutBeat(self.data_width), out_fifo.r_data)
        m.d.comb += [
            self.data.valid.eq(out_fifo.r_rdy & ~(head.beat.last & st_valid)),
            self.data.payload.eq(head.beat),
            out_fifo.r_en.eq(self.data.valid & self.data.ready),
        ]
        with m.If(self.status.ready):
            m.d.sync += st_valid.eq(0)
        with m.If(self.data.valid & self.data.ready & head.beat.last):
            m.d.sync += [st_valid.eq(1), st_tag.eq(head.tag), st_err.eq(head.error)]
        m.d.comb += [
            self.status.valid.eq(st_valid),
            self.status.payload.tag.eq(st_tag),
            self.status.payload.error.eq(st_err),
        ]

        return m
