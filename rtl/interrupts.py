# Ref: OASIS virtio 1.2, 4.1.4.5, 4.1.5.3-4; PCI 3.0, 6.8.3; PCIe Base 3.0, 2.2.7, 7.5.1.1, 7.7.2
"""Interrupt delivery: used-buffer and configuration-change notifications to the driver, as
MSI-X Memory Writes or as ISR status bits (from which the top level drives INTx).
"""

from amaranth.hdl import Module, Signal, Array, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out

from model import regmap as rm
from model.params import DeviceParams
from .tlp import Fmt, TlpType, TlpDw0, ReqDw1, TlpStreamSignature
from .virtio_regs import MsixEntryLayout


__all__ = ["IrqRequest", "InterruptController"]


class IrqRequest(data.Struct):
    """One interrupt the device wants to raise.

    ``queue`` is the virtqueue with new used buffers; with ``config`` set the request is a
    device configuration change notification instead and ``queue`` is ignored.
    """
    queue:  16
    config: 1


class InterruptController(wiring.Component):
    """Turns interrupt requests into MSI-X messages, pending bits or ISR status bits.

    A request is handled by the rules of the virtio PCI transport:

    * A configuration change always sets ISR bit 1 [VIRTIO-1.2 4.1.4.5.1].
    * With MSI-X disabled (or not built), a queue request sets ISR bit 0 and nothing else; the
      top level raises INTx from a non-zero ISR [VIRTIO-1.2 4.1.5.3, 4.1.5.4].
    * With MSI-X enabled, the request's vector is ``queue_vectors[queue]`` or
      ``config_vector``. VIRTIO_MSI_NO_VECTOR, or any vector that names no table entry, raises
      nothing [VIRTIO-1.2 4.1.5.3.1, 4.1.5.4.1]. Otherwise the vector's message is sent, unless
      the vector is masked (its entry's Mask Bit or the Function Mask) or Bus Master Enable is
      clear: then the vector's pending bit is set instead [PCI-3.0 6.8.3.4, PCIe-3.0 7.5.1.1].

    Whenever a pending vector can be sent (MSI-X enabled, function and entry unmasked, Bus
    Master Enable set) its message goes out and its pending bit clears once the message has
    been taken by ``tx``. Pending vectors go before new requests, lowest vector first. Pending
    bits stay through an MSI-X disable; they clear only by sending (and on reset).

    Requests are taken one at a time: ``request.ready`` is low while a request is being routed
    (one cycle), while a message is being sent (2 or 3 beats) and while a pending vector is
    waiting to be sent. Each request that finds its vector sendable gets its own message; a
    pending bit stands for any number of requests [PCI-3.0 6.8.3.4]. The entry's Message
    Address and Data are read when its message is decided (one cycle before the first beat);
    software must not change them while the entry is unmasked [PCI-3.0 6.8.3.4]. A queue index
    at or beyond ``num_queues`` has no vector; with MSI-X disabled it still sets ISR bit 0.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    request : stream.Signature(IrqRequest), in
        Interrupts to raise. The queue engine requests only once the used-ring write a request
        refers to has left the device, so the message is ordered after it.
    queue_vectors : Array of Signal(16), in
        ``queue_msix_vector`` of each virtqueue.
    config_vector : Signal(16), in
        ``msix_config``.
    msix_table : Array of MsixEntryLayout, in
        The MSI-X table. Only when ``params.msix``.
    msix_pending : Signal(msix_table_size), out
        Pending bits, for the PBA: bit ``v`` is vector ``v``. Only when ``params.msix``.
    msix_enable : Signal(1), in
        MSI-X Enable of the MSI-X Message Control register. Only when ``params.msix``.
    msix_function_mask : Signal(1), in
        Function Mask of the MSI-X Message Control register. Only when ``params.msix``.
    bus_master : Signal(1), in
        Bus Master Enable, bit 2 of the Command register.
    requester_id : Signal(16), in
        Bus, Device and Function Numbers of this function.
    tx : TlpStreamSignature(params.data_width), out
        MSI-X messages: 1 DW Memory Writes (TC 0, no attributes, tag 0). Never valid without
        MSI-X.
    isr_set : Signal(2), out
        One-cycle pulses that set ISR status bits: bit 0 queue interrupt, bit 1 configuration
        change.
    idle : Signal(1), out
        No request being routed and no message being sent: a device reset may finish.
    flr : Signal(1), in
        Function Level Reset: clears every pending bit [PCIe-3.0 6.6.2].
    clear_pending : Signal(1), in
        A device reset finishes: pending notifications are dropped, so none reaches the driver
        after ``device_status`` reads 0 [VIRTIO-1.2 2.4.1] (QEMU clears them too).

    Raises
    ------
    TypeError
        If ``params`` is not a :class:`model.params.DeviceParams`.
    """
    def __init__(self, params):
        if not isinstance(params, DeviceParams):
            raise TypeError(f"InterruptController params must be a DeviceParams, "
                            f"not {params!r}")
        self.params = params
        nv = params.msix_table_size
        ports = {
            "request":       In(stream.Signature(IrqRequest)),
            "queue_vectors": In(16).array(params.num_queues),
            "config_vector": In(16),
            "bus_master":    In(1),
            "requester_id":  In(16),
            "tx":            Out(TlpStreamSignature(params.data_width)),
            "isr_set":       Out(2),
            "idle":          Out(1),
            "flr":           In(1),
            "clear_pending": In(1),
        }
        if nv:
            ports.update({
                "msix_table":         In(MsixEntryLayout()).array(nv),
                "msix_pending":       Out(nv),
                "msix_enable":        In(1),
                "msix_function_mask": In(1),
            })
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        nv = p.msix_table_size
        req = self.request.payload

        # The request being routed.
        r_queue  = Signal(16)
        r_config = Signal()

        if not nv:
            # [VIRTIO-1.2 4.1.4.5] Without MSI-X every notification goes through ISR status.
            with m.FSM():
                with m.State("Take-Request"):
                    m.d.comb += [self.request.ready.eq(1), self.idle.eq(1)]
                    with m.If(self.request.valid):
                        m.d.sync += r_config.eq(req.config)
                        m.next = "Set-ISR"
                with m.State("Set-ISR"):
                    m.d.comb += self.isr_set.eq(Mux(r_config, 0b10, 0b01))
                    m.next = "Take-Request"
            return m

        # -- MSI-X state ---------------------------------------------------------------------------
        table = Array(self.msix_table)
        pending = Signal(nv)
        m.d.comb += self.msix_pending.eq(pending)

        # [PCI-3.0 6.8.3.4] A vector is masked by its entry's Mask Bit or by the Function Mask;
        # [PCIe-3.0 7.5.1.1] with Bus Master Enable clear the function must not send MSI-X
        # messages (they are Memory Writes). Either way the message waits as a pending bit.
        may_send = Signal()
        m.d.comb += may_send.eq(self.msix_enable & ~self.msix_function_mask & self.bus_master)
        unmasked = Signal(nv)
        m.d.comb += unmasked.eq(Cat(~e.masked for e in self.msix_table))
        sendable = Signal(nv)
        m.d.comb += sendable.eq(pending & unmasked & may_send.replicate(nv))

        # The lowest sendable pending vector.
        flush_vec = Signal(range(nv))
        for v in reversed(range(nv)):
            with m.If(sendable[v]):
                m.d.comb += flush_vec.eq(v)

        # The vector of the request being routed.
        r_vector = Signal(16)
        queue_vectors = Array(self.queue_vectors)
        qidx = r_queue[:max(1, (nq - 1).bit_length())]
        with m.If(r_config):
            m.d.comb += r_vector.eq(self.config_vector)
        with m.Elif(r_queue < nq):
            m.d.comb += r_vector.eq(queue_vectors[qidx])
        with m.Else():
            m.d.comb += r_vector.eq(rm.VIRTIO_MSI_NO_VECTOR)     # no such queue
        # [VIRTIO-1.2 4.1.5.1.2] Only 0 .. Table Size - 1 name a table entry; NO_VECTOR (0xffff)
        # and anything else above are no vector at all.
        r_valid = r_vector < nv
        r_entry = r_vector[:max(1, (nv - 1).bit_length())]

        # -- the message being sent ----------------------------------------------------------------
        hdr0    = Signal(TlpDw0)
        hdr1    = Signal(ReqDw1)
        addr_hi = Signal(32)
        addr_lo = Signal(32)
        msg     = Signal(32)
        four_dw = Signal()
        vector  = Signal(range(nv))

        def decide(v):
            """Latch the message of vector ``v`` (an entry index) and go send it."""
            e = table[v]
            m.d.sync += [
                hdr0.eq(0),
                # [PCI-3.0 6.8.3] A message is a DWORD Memory Write of the entry's Message
                # Data to its Message Address. [PCIe-3.0 2.2.7] MWr: Fmt 010b/011b, Type
                # 0 0000b; [PCIe-3.0 2.2.4.1] a 3 DW header below 4 GB, 4 DW above.
                hdr0.fmt.eq(Mux(e.addr[32:] != 0, Fmt.DW4_DATA, Fmt.DW3_DATA)),
                hdr0.type.eq(TlpType.MEM),
                hdr0.length.eq(1),
                # [PCIe-3.0 2.2.5] All 4 bytes of a 1 DW request: First BE 1111b, Last BE 0000b.
                hdr1.first_be.eq(0b1111),
                hdr1.last_be.eq(0),
                # [PCIe-3.0 2.2.6.2] Posted requests need no tag; send 0.
                hdr1.tag.eq(0),
                hdr1.requester_id.eq(self.requester_id),
                addr_hi.eq(e.addr[32:]),
                addr_lo.eq(Cat(Const(0, 2), e.addr[2:32])),
                msg.eq(e.data),
                four_dw.eq(e.addr[32:] != 0),
                vector.eq(v),
            ]
            m.next = "Send-Header"

        with m.FSM():
            with m.State("Take-Request"):
                m.d.comb += self.idle.eq(~sendable.any())
                with m.If(sendable.any()):
                    # [PCI-3.0 6.8.3.4] When a pending vector is unmasked, schedule its message.
                    decide(flush_vec)
                with m.Else():
                    m.d.comb += self.request.ready.eq(1)
                    with m.If(self.request.valid):
                        m.d.sync += [
                            r_queue.eq(req.queue),
                            r_config.eq(req.config),
                        ]
                        m.next = "Route-Request"

            with m.State("Route-Request"):
                # [VIRTIO-1.2 4.1.4.5.1] The device MUST set the Device Configuration Interrupt
                # bit in ISR status before sending a configuration change notification, MSI-X
                # or not. [VIRTIO-1.2 4.1.5.3] The Queue Interrupt bit only with MSI-X disabled.
                m.d.comb += self.isr_set.eq(Mux(r_config, 0b10,
                                                Mux(self.msix_enable, 0b00, 0b01)))
                m.next = "Take-Request"
                # [VIRTIO-1.2 4.1.5.3.1, 4.1.5.4.1] With MSI-X enabled and no vector, the device
                # MUST NOT deliver an interrupt.
                with m.If(self.msix_enable & r_valid):
                    with m.If(may_send & unmasked.bit_select(r_entry, 1)):
                        decide(r_entry)
                    with m.Else():
                        # [PCI-3.0 6.8.3.4] While a vector is masked the function must set its
                        # Pending bit instead of sending the message.
                        m.d.sync += pending.bit_select(r_entry, 1).eq(1)

            with m.State("Send-Header"):
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.data.eq(Cat(hdr0, hdr1)),
                    self.tx.payload.keep.eq(0b11),
                    self.tx.payload.first.eq(1),
                ]
                with m.If(self.tx.ready):
                    with m.If(four_dw):
                        m.next = "Send-Address"
                    with m.Else():
                        m.next = "Send-Data"

            with m.State("Send-Address"):
                # [PCIe-3.0 2.2.4.1 Figure 2-14] 64-bit address: bits 63:32 in DW2, 31:2 in DW3.
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.data.eq(Cat(addr_hi, addr_lo)),
                    self.tx.payload.keep.eq(0b11),
                ]
                with m.If(self.tx.ready):
                    m.next = "Send-Data"

            with m.State("Send-Data"):
                # A 3 DW header ends with the address in the low DW of this beat; the Message
                # Data follows it (in the low DW after a 4 DW header).
                m.d.comb += [
                    self.tx.valid.eq(1),
                    self.tx.payload.data.eq(Mux(four_dw, msg, Cat(addr_lo, msg))),
                    self.tx.payload.keep.eq(Mux(four_dw, 0b01, 0b11)),
                    self.tx.payload.last.eq(1),
                ]
                with m.If(self.tx.ready):
                    # [PCI-3.0 6.8.3.4] The Pending bit clears once the message has been sent.
                    m.d.sync += pending.bit_select(vector, 1).eq(0)
                    m.next = "Take-Request"

        with m.If(self.flr | self.clear_pending):
            m.d.sync += pending.eq(0)
        return m
