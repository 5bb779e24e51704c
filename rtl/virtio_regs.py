# Ref: OASIS virtio 1.2, sections 2.1, 2.2, 4.1.4.3-4.1.4.8, 4.1.5, 5.2.4-5.2.5; PCIe Base 3.0
#      section 7.7
"""BAR0: the virtio modern PCI transport structures and the MSI-X table.

The layout is :mod:`model.regmap`'s: common configuration at 0x0000, ISR status at 0x1000,
device configuration (``struct virtio_blk_config``) at 0x2000, notifications at 0x3000, MSI-X
table at 0x4000 and PBA at 0x5000. The behaviour of every field, including the choices the spec
leaves open, is the golden model's (:mod:`model.device`).
"""

from amaranth.hdl import Module, Signal, Array, Cat, Const, Mux
from amaranth.lib import wiring, stream, data
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from model import regmap as rm
from model.regmap import merge
from .regport import RegisterSignature, byte_mask


__all__ = ["VirtioRegisters", "QueueConfigLayout", "MsixEntryLayout", "DoorbellLayout"]


# [VIRTIO-1.2 2.1] device_status bits by name.
_FEATURES_OK = exact_log2(rm.STATUS_FEATURES_OK)
_NEEDS_RESET = exact_log2(rm.STATUS_DEVICE_NEEDS_RESET)


class QueueConfigLayout(data.StructLayout):
    """What the driver configured for one virtqueue [VIRTIO-1.2 4.1.4.3]."""
    def __init__(self):
        super().__init__({
            "size":        16,
            "msix_vector": 16,
            "enable":      1,
            "desc":        64,
            "driver":      64,
            "device":      64,
        })


class DoorbellLayout(data.StructLayout):
    """An available buffer notification, as the notify stream carries it.

    ``queue`` is the index written (vqn); with VIRTIO_F_NOTIFICATION_DATA negotiated and a
    32-bit write, ``has_idx`` is set and ``avail_idx`` is the avail index the driver sent in
    bits 31:16 (next_off and next_wrap: all 16 bits of it for a split ring) [VIRTIO-1.2 2.9].
    """
    def __init__(self):
        super().__init__({"queue": 16, "avail_idx": 16, "has_idx": 1})


class MsixEntryLayout(data.StructLayout):
    """One MSI-X table entry as the interrupt logic needs it [PCIe-3.0 7.7.2]: Message Address
    (bits 1:0 always 0), Message Data and the Mask Bit of Vector Control."""
    def __init__(self):
        super().__init__({
            "addr":   64,
            "data":   32,
            "masked": 1,
        })


class VirtioRegisters(wiring.Component):
    """BAR0 register file.

    Parameters
    ----------
    params : model.params.DeviceParams

    Attributes
    ----------
    bus : RegisterSignature, in
        BAR0 accesses by DW offset.
    notify : stream.Signature(DoorbellLayout()), out
        Queue indices written to the notify region [VIRTIO-1.2 4.1.5.2], with the avail index
        when the driver sent one (VIRTIO_F_NOTIFICATION_DATA and a 32-bit write). Notifications
        for a queue whose previous one has not been taken yet merge with it; none is lost (two
        that carry different avail indices merge into one without an index).
    device_status : Signal(8), out
    driver_features : Signal(64), out
    queues : Array of QueueConfigLayout, out
        Per-queue configuration, for the queue engine.
    isr_set : Signal(2), in
        Pulses that set ISR bits: bit 0 queue interrupt, bit 1 configuration change.
    needs_reset : Signal(1), in
        Sets DEVICE_NEEDS_RESET in ``device_status`` [VIRTIO-1.2 2.1.2] (the request engine
        found a malformed ring).
    reset_req : Signal(1), out
        A device reset is under way: the driver wrote 0 to ``device_status``, or a Function
        Level Reset came. The data path stops taking work and drains.
    reset_ack : Signal(1), in
        The data path is quiescent (nothing in flight, no interrupt being sent). Only then does
        the reset finish: every register goes back to its reset value and ``device_status``
        reads 0 [VIRTIO-1.2 4.1.4.3.2: the driver waits for that]; until then it reads what it
        held.
    reset_done : Signal(1), out
        A pulse in the cycle the reset finishes.
    flr : Signal(1), in
        A pulse: Function Level Reset [PCIe-3.0 6.6.2]. Starts the same reset and clears the
        MSI-X table at once.
    isr : Signal(8), out
        ISR status.
    msix_config : Signal(16), out
        The common configuration's ``msix_config``: the configuration change vector, or
        VIRTIO_MSI_NO_VECTOR (always, without MSI-X).
    writeback : Signal(1), out
        The cache mode in force, for the storage back-end: 1 writeback (completed writes may
        stay volatile until a FLUSH), 0 writethrough. 0 unless FLUSH was negotiated; with
        CONFIG_WCE also negotiated, the driver sets it in struct virtio_blk_config
        ``writeback``, and it reads back there. The rules are the golden model's
        (:attr:`model.device.VirtioBlkModel.writeback`).
    msix_table : Array of MsixEntryLayout, out
        The MSI-X table, one entry per vector. Only when ``params.msix``.
    msix_pending : Signal(msix_table_size), in
        Pending bits, read back in the PBA: bit ``v`` is vector ``v`` [PCIe-3.0 7.7.2]. Only
        when ``params.msix``.
    """
    def __init__(self, params):
        self.params = params
        self.addr_width = params.bar0_dw_bits
        nv = params.msix_table_size
        ports = {
            "bus":             In(RegisterSignature(self.addr_width)),
            "notify":          Out(stream.Signature(DoorbellLayout())),
            "device_status":   Out(8),
            "driver_features": Out(64),
            "queues":          Out(QueueConfigLayout()).array(params.num_queues),
            "isr_set":         In(2),
            "needs_reset":     In(1),
            "reset_req":       Out(1),
            "reset_ack":       In(1),
            "reset_done":      Out(1),
            "flr":             In(1),
            "isr":             Out(8),
            "msix_config":     Out(16),
            "writeback":       Out(1),
        }
        if nv:
            # Without MSI-X there is no table and no PBA: the ports do not exist (a zero-length
            # array or a zero-width signal would only invite wiring mistakes).
            ports["msix_table"] = Out(MsixEntryLayout()).array(nv)
            ports["msix_pending"] = In(nv)
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        p = self.params
        nq = p.num_queues
        nv = p.msix_table_size
        bus = self.bus

        # -- state -----------------------------------------------------------------------------
        device_feature_select = Signal(32)
        driver_feature_select = Signal(32)
        driver_features       = Signal(64)
        msix_config           = Signal(16, init=rm.VIRTIO_MSI_NO_VECTOR)
        device_status         = Signal(8)
        queue_select          = Signal(16)
        isr                   = Signal(8)
        # [VIRTIO-1.2 5.2.5] The driver-set cache mode (with CONFIG_WCE); resets to
        # params.writeback on every device reset, as QEMU's to its configured mode.
        wce                   = Signal(1, init=p.writeback)
        q_size   = Array(Signal(16, init=p.max_queue_size, name=f"q{i}_size") for i in range(nq))
        q_vector = Array(Signal(16, init=rm.VIRTIO_MSI_NO_VECTOR, name=f"q{i}_vector")
                         for i in range(nq))
        q_enable = Array(Signal(1, name=f"q{i}_enable") for i in range(nq))
        q_desc   = Array(Signal(64, name=f"q{i}_desc") for i in range(nq))
        q_driver = Array(Signal(64, name=f"q{i}_driver") for i in range(nq))
        q_device = Array(Signal(64, name=f"q{i}_device") for i in range(nq))
        # The 64-bit ring addresses, as 32-bit halves: (offset, registers, half).
        ring_halves = [(base + 4 * half, arr, half)
                       for base, arr in ((rm.CC_QUEUE_DESC, q_desc),
                                         (rm.CC_QUEUE_DRIVER, q_driver),
                                         (rm.CC_QUEUE_DEVICE, q_device))
                       for half in range(2)]
        # [PCIe-3.0 7.7.2] MSI-X table entries; the Mask Bit resets to 1.
        mx_addr = Array(Signal(64, name=f"msix{i}_addr") for i in range(nv))
        mx_data = Array(Signal(32, name=f"msix{i}_data") for i in range(nv))
        mx_ctrl = Array(Signal(1, init=1, name=f"msix{i}_mask") for i in range(nv))

        m.d.comb += [
            self.device_status.eq(device_status),
            self.driver_features.eq(driver_features),
            self.isr.eq(isr),
            self.msix_config.eq(msix_config),
        ]
        for i in range(nv):
            m.d.comb += [
                self.msix_table[i].addr.eq(mx_addr[i]),
                self.msix_table[i].data.eq(mx_data[i]),
                self.msix_table[i].masked.eq(mx_ctrl[i]),
            ]
        for i in range(nq):
            m.d.comb += [
                self.queues[i].size.eq(q_size[i]),
                self.queues[i].msix_vector.eq(q_vector[i]),
                self.queues[i].enable.eq(q_enable[i]),
                self.queues[i].desc.eq(q_desc[i]),
                self.queues[i].driver.eq(q_driver[i]),
                self.queues[i].device.eq(q_device[i]),
            ]

        # -- address decode --------------------------------------------------------------------
        region = bus.addr[10:]           # 4 KiB windows
        local = Cat(Const(0, 2), bus.addr[:10])   # byte offset inside the window
        sel_valid = queue_select < nq
        qs = queue_select[:max(1, (nq - 1).bit_length())]
        entry = local[4:]
        entry_valid = entry < nv
        offered = p.offered_features
        features_ok = device_status[_FEATURES_OK]

        # The cache mode in force. Only features accepted with FEATURES_OK count.
        # [VIRTIO-1.2 5.2.6.2] Without FLUSH every completed write must be stable: writethrough
        # (and [5.2.5.2] with CONFIG_WCE but not FLUSH the device MUST initialize writeback to
        # 0). [5.2.5.1] With FLUSH but not CONFIG_WCE the driver SHOULD assume a writeback
        # cache, as QEMU makes it. With both, the driver's choice.
        neg_flush = Signal()
        neg_config_wce = Signal()
        neg_notification_data = Signal()
        writeback = Signal()
        m.d.comb += [
            neg_flush.eq(features_ok & driver_features[rm.VIRTIO_BLK_F_FLUSH]),
            neg_config_wce.eq(features_ok & driver_features[rm.VIRTIO_BLK_F_CONFIG_WCE]),
            neg_notification_data.eq(features_ok &
                                     driver_features[rm.VIRTIO_F_NOTIFICATION_DATA]),
            writeback.eq(neg_flush & (wce | ~neg_config_wce)),
            self.writeback.eq(writeback),
        ]

        def vector(v):
            # [VIRTIO-1.2 4.1.5.1.2] Keep a vector only if it names an MSI-X table entry.
            return Mux(v < nv, v, rm.VIRTIO_MSI_NO_VECTOR) if nv else rm.VIRTIO_MSI_NO_VECTOR

        # -- reads (one cycle latency) ---------------------------------------------------------
        r_data = Signal(32)
        m.d.comb += bus.r_data.eq(r_data)
        with m.If(bus.r_stb):
            m.d.sync += r_data.eq(0)
            with m.Switch(region):
                with m.Case(0):
                    with m.Switch(local):
                        with m.Case(rm.CC_DEVICE_FEATURE_SELECT):
                            m.d.sync += r_data.eq(device_feature_select)
                        with m.Case(rm.CC_DEVICE_FEATURE):
                            with m.Switch(device_feature_select):
                                with m.Case(0):
                                    m.d.sync += r_data.eq(offered & 0xffffffff)
                                with m.Case(1):
                                    m.d.sync += r_data.eq(offered >> 32)
                        with m.Case(rm.CC_DRIVER_FEATURE_SELECT):
                            m.d.sync += r_data.eq(driver_feature_select)
                        with m.Case(rm.CC_DRIVER_FEATURE):
                            with m.Switch(driver_feature_select):
                                with m.Case(0):
                                    m.d.sync += r_data.eq(driver_features[:32])
                                with m.Case(1):
                                    m.d.sync += r_data.eq(driver_features[32:])
                        with m.Case(rm.CC_MSIX_CONFIG):
                            m.d.sync += r_data.eq(Cat(msix_config, Const(nq, 16)))
                        with m.Case(rm.CC_DEVICE_STATUS):
                            # config_generation stays 0: the configuration never changes yet.
                            m.d.sync += r_data.eq(Cat(device_status, Const(0, 8), queue_select))
                        with m.Case(rm.CC_QUEUE_SIZE):
                            with m.If(sel_valid):
                                m.d.sync += r_data.eq(Cat(q_size[qs], q_vector[qs]))
                        with m.Case(rm.CC_QUEUE_ENABLE):
                            with m.If(sel_valid):
                                # queue_notify_off = queue index
                                m.d.sync += r_data.eq(Cat(q_enable[qs], Const(0, 15),
                                                          queue_select))
                        for offset, arr, half in ring_halves:
                            with m.Case(offset):
                                with m.If(sel_valid):
                                    m.d.sync += r_data.eq(arr[qs][32 * half:32 * half + 32])
                with m.Case(1):
                    with m.If(local == 0):
                        m.d.sync += r_data.eq(isr)
                with m.Case(2):
                    cfg = p.blk_config()
                    with m.Switch(local):
                        for off in range(0, rm.BLK_CONFIG_LENGTH, 4):
                            word = int.from_bytes(cfg[off:off + 4], "little")
                            with m.Case(off):
                                if off == rm.BLK_CFG_WRITEBACK:
                                    # [VIRTIO-1.2 5.2.4] writeback is byte 0 of its DW.
                                    m.d.sync += r_data.eq(Cat(writeback, Const(0, 7),
                                                              Const(word >> 8, 24)))
                                else:
                                    m.d.sync += r_data.eq(word)
                if nv:
                    with m.Case(4):
                        with m.If(entry_valid):
                            with m.Switch(local[2:4]):
                                with m.Case(0):
                                    m.d.sync += r_data.eq(mx_addr[entry][:32])
                                with m.Case(1):
                                    m.d.sync += r_data.eq(mx_addr[entry][32:])
                                with m.Case(2):
                                    m.d.sync += r_data.eq(mx_data[entry])
                                with m.Case(3):
                                    m.d.sync += r_data.eq(mx_ctrl[entry])
                    with m.Case(5):
                        # [PCIe-3.0 7.7.2] The PBA: one QW per 64 vectors, bit v for vector v,
                        # read as DWs (QW 0 is all there is: nv is at most 17).
                        pba = Cat(self.msix_pending, Const(0, 64 - nv))
                        with m.Switch(local):
                            with m.Case(0):
                                m.d.sync += r_data.eq(pba[:32])
                            with m.Case(4):
                                m.d.sync += r_data.eq(pba[32:])

        # -- writes ----------------------------------------------------------------------------
        mask = Signal(32)
        m.d.comb += mask.eq(byte_mask(bus.be))
        w = bus.w_data
        reset_write = Signal()      # the driver wrote 0 to device_status
        resetting = Signal()        # a reset is under way, waiting for the data path
        virtio_reset = Signal()     # it finishes in this cycle
        notify_write = Signal()
        notify_index = Signal(16)
        notify_avail = Signal(16)
        notify_has = Signal()
        bad_enable = Signal()       # queue_enable with an illegal size or misaligned rings

        with m.If(bus.w_stb):
            with m.Switch(region):
                with m.Case(0):
                    with m.Switch(local):
                        with m.Case(rm.CC_DEVICE_FEATURE_SELECT):
                            m.d.sync += device_feature_select.eq(
                                merge(device_feature_select, w, mask))
                        with m.Case(rm.CC_DRIVER_FEATURE_SELECT):
                            m.d.sync += driver_feature_select.eq(
                                merge(driver_feature_select, w, mask))
                        with m.Case(rm.CC_DRIVER_FEATURE):
                            # [VIRTIO-1.2 3.1.1] No new features after FEATURES_OK.
                            with m.If(~features_ok):
                                with m.Switch(driver_feature_select):
                                    with m.Case(0):
                                        m.d.sync += driver_features[:32].eq(
                                            merge(driver_features[:32], w, mask))
                                    with m.Case(1):
                                        m.d.sync += driver_features[32:].eq(
                                            merge(driver_features[32:], w, mask))
                        with m.Case(rm.CC_MSIX_CONFIG):
                            with m.If(mask[:16].any()):
                                m.d.sync += msix_config.eq(
                                    vector(merge(msix_config, w[:16], mask[:16])))
                        with m.Case(rm.CC_DEVICE_STATUS):
                            with m.If(bus.be[0] & (w[:8] == 0)):
                                # [VIRTIO-1.2 4.1.4.3.1] Writing 0 resets the device.
                                m.d.comb += reset_write.eq(1)
                            with m.Elif(resetting):
                                pass    # the driver waits for the reset to finish first
                            with m.Else():
                                m.d.sync += queue_select.eq(
                                    merge(queue_select, w[16:], mask[16:]))
                                with m.If(bus.be[0]):
                                    status = Signal(8)
                                    driver_ok = Signal()
                                    m.d.comb += [
                                        # [VIRTIO-1.2 2.2.2] Fail FEATURES_OK unless the driver
                                        # accepted a subset of the offered features that
                                        # includes VERSION_1 [VIRTIO-1.2 6.1].
                                        driver_ok.eq(
                                            ((driver_features & ~offered
                                              & 0xffffffffffffffff) == 0) &
                                            driver_features[rm.VIRTIO_F_VERSION_1]),
                                        # [VIRTIO-1.2 2.1.1] The driver MUST NOT clear a
                                        # status bit: only a reset clears them.
                                        status.eq(w[:8] | device_status),
                                        # DEVICE_NEEDS_RESET is the device's to set.
                                        status[_NEEDS_RESET].eq(device_status[_NEEDS_RESET]),
                                    ]
                                    with m.If(~driver_ok & ~device_status[_FEATURES_OK]):
                                        m.d.comb += status[_FEATURES_OK].eq(0)
                                    m.d.sync += device_status.eq(status)
                        with m.Case(rm.CC_QUEUE_SIZE):
                            with m.If(sel_valid):
                                # [VIRTIO-1.2 4.1.4.3.2] The queue is configured before it is
                                # enabled; an enabled queue's size and rings stay put.
                                with m.If(mask[:16].any() & ~q_enable[qs]):
                                    m.d.sync += q_size[qs].eq(merge(q_size[qs], w[:16],
                                                                    mask[:16]))
                                with m.If(mask[16:].any()):
                                    m.d.sync += q_vector[qs].eq(
                                        vector(merge(q_vector[qs], w[16:], mask[16:])))
                        with m.Case(rm.CC_QUEUE_ENABLE):
                            # [VIRTIO-1.2 4.1.4.3.2] The driver MUST NOT write 0.
                            with m.If(sel_valid & bus.be[0] & w[0]):
                                # [VIRTIO-1.2 2.7] A power-of-two size up to the maximum
                                # [4.1.4.3.2], rings at their alignments (descriptor table 16,
                                # available ring 2, used ring 4 [2.7, its table]); otherwise the
                                # queue stays disabled and the device needs a reset [2.1.2].
                                size = q_size[qs]
                                with m.If((size != 0) & ((size & (size - 1)) == 0) &
                                          (size <= p.max_queue_size) &
                                          (q_desc[qs][:4] == 0) & (q_driver[qs][:1] == 0) &
                                          (q_device[qs][:2] == 0)):
                                    m.d.sync += q_enable[qs].eq(1)
                                with m.Else():
                                    m.d.comb += bad_enable.eq(1)
                        for offset, arr, half in ring_halves:
                            with m.Case(offset):
                                with m.If(sel_valid & ~q_enable[qs]):
                                    sl = arr[qs][32 * half:32 * half + 32]
                                    m.d.sync += sl.eq(merge(sl, w, mask))
                with m.Case(2):
                    # [VIRTIO-1.2 5.2.5] With CONFIG_WCE the driver sets the cache mode: 0
                    # writethrough, 1 writeback. Other values, and every write without
                    # CONFIG_WCE, are ignored; the rest of the structure is read-only.
                    with m.If((local == rm.BLK_CFG_WRITEBACK) & bus.be[0] & neg_config_wce &
                              (w[1:8] == 0)):
                        m.d.sync += wce.eq(w[0])
                with m.Case(3):
                    # [VIRTIO-1.2 4.1.5.2] Available buffer notification: the 16-bit queue
                    # index, in lanes 2-3 when the notify address is 2 mod 4 (multiplier 2).
                    # With VIRTIO_F_NOTIFICATION_DATA the driver writes 32 bits: vqn in 15:0,
                    # next_off in 30:16 and next_wrap in 31, for a split ring the whole avail
                    # index [VIRTIO-1.2 2.9] (Linux vp_notify_with_data: iowrite32 of
                    # avail_idx_shadow << 16 | vq->index). A narrower write then carries no
                    # index: it is taken as a notification without data, its queue index from
                    # the lanes as above.
                    with m.If((local < p.notify_length) & mask.any()):
                        m.d.comb += [
                            notify_write.eq(1),
                            notify_index.eq(Mux(mask[:16].any(), w[:16] & mask[:16],
                                                w[16:] & mask[16:])),
                            notify_avail.eq(w[16:]),
                            notify_has.eq(neg_notification_data & (bus.be == 0xf)),
                        ]
                if nv:
                    with m.Case(4):
                        with m.If(entry_valid):
                            with m.Switch(local[2:4]):
                                with m.Case(0):
                                    # Message Address bits 1:0 are 0 (DW aligned).
                                    m.d.sync += mx_addr[entry][:32].eq(
                                        merge(mx_addr[entry][:32], w, mask & ~3))
                                with m.Case(1):
                                    m.d.sync += mx_addr[entry][32:].eq(
                                        merge(mx_addr[entry][32:], w, mask))
                                with m.Case(2):
                                    m.d.sync += mx_data[entry].eq(merge(mx_data[entry], w, mask))
                                with m.Case(3):
                                    m.d.sync += mx_ctrl[entry].eq(merge(mx_ctrl[entry], w[0],
                                                                        mask[0]))

        # Doorbells wait in a per-queue pending bitmap, so none is lost while the queue engine
        # is busy and repeats for one queue merge (the engine reads avail->idx anyway); with
        # each its avail index, kept only while the repeats agree on it. The stream's payload
        # holds still until taken; the lowest pending queue goes next. An index at or beyond
        # num_queues names no queue and is dropped.
        pending = Signal(nq)
        pending_all = Signal(nq)
        pend_idx = [Signal(16, name=f"pend{i}_avail_idx") for i in range(nq)]
        pend_has = Signal(nq)
        idx_all = [Signal(16, name=f"pend{i}_avail_idx_all") for i in range(nq)]
        has_all = Signal(nq)
        m.d.comb += [pending_all.eq(pending), has_all.eq(pend_has)]
        for i in range(nq):
            m.d.comb += idx_all[i].eq(pend_idx[i])
        waiting = self.notify.valid & ~self.notify.ready      # presented, not taken yet
        same_as_waiting = (waiting & (self.notify.payload.queue == notify_index) &
                           (self.notify.payload.has_idx == notify_has) &
                           (~notify_has | (self.notify.payload.avail_idx == notify_avail)))
        with m.If(notify_write & ~same_as_waiting):
            m.d.comb += pending_all.eq(pending | Cat(notify_index == q for q in range(nq)))
            for i in range(nq):
                with m.If(notify_index == i):
                    m.d.comb += [
                        idx_all[i].eq(notify_avail),
                        # Merged with a pending one: the index only if both sent the same.
                        has_all[i].eq(notify_has & (~pending[i] | pend_has[i] &
                                                    (pend_idx[i] == notify_avail))),
                    ]
        m.d.sync += [pending.eq(pending_all), pend_has.eq(has_all)]
        for i in range(nq):
            m.d.sync += pend_idx[i].eq(idx_all[i])
        with m.If(~self.notify.valid | self.notify.ready):
            m.d.sync += self.notify.valid.eq(pending_all.any())
            for q in reversed(range(nq)):
                with m.If(pending_all[q]):
                    m.d.sync += [self.notify.payload.queue.eq(q),
                                 self.notify.payload.avail_idx.eq(idx_all[q]),
                                 self.notify.payload.has_idx.eq(has_all[q])]
            with m.If(pending_all.any()):
                # Lowest set bit cleared: x & (x - 1).
                m.d.sync += pending.eq(pending_all & (pending_all - 1))

        # ISR: set by the interrupt logic, cleared by reading byte 0 [VIRTIO-1.2 4.1.4.5].
        isr_next = Signal(8)
        m.d.comb += isr_next.eq(isr)
        with m.If(bus.r_stb & (region == 1) & (local == 0) & bus.be[0]):
            m.d.comb += isr_next.eq(0)
        m.d.sync += isr.eq(isr_next | self.isr_set)
        with m.If(self.flr):
            # [PCIe-3.0 6.6.2] No INTx stays asserted through an FLR.
            m.d.sync += isr.eq(0)

        # [VIRTIO-1.2 2.1.2] DEVICE_NEEDS_RESET is set by the device, kept until reset.
        with m.If((self.needs_reset | bad_enable) & device_status.any()):
            m.d.sync += device_status[_NEEDS_RESET].eq(1)

        # [VIRTIO-1.2 2.4.1] The reset finishes once the data path has stopped: nothing of it
        # reaches the host after device_status reads 0.
        with m.If(reset_write | self.flr):
            m.d.sync += resetting.eq(1)
        m.d.comb += [
            self.reset_req.eq(resetting),
            virtio_reset.eq(resetting & self.reset_ack),
            self.reset_done.eq(virtio_reset),
        ]
        if nv:
            # [PCIe-3.0 6.6.2] FLR returns the MSI-X table to its reset state: all masked.
            with m.If(self.flr):
                for i in range(nv):
                    m.d.sync += [mx_addr[i].eq(0), mx_data[i].eq(0), mx_ctrl[i].eq(1)]

        # Coming after the write logic, the reset overrides any write in the cycle it finishes:
        # a write to the virtio registers before the reset has finished is lost, such as the
        # second DW of a request that wrote 0 to device_status (the completer issues it in the
        # next cycle, with resetting set), as in the model. [VIRTIO-1.2 4.1.4.3.2] The driver
        # MUST wait for device_status to read 0 before it reinitializes the device.
        with m.If(virtio_reset):
            m.d.sync += [
                resetting.eq(reset_write | self.flr),
                device_feature_select.eq(0),
                driver_feature_select.eq(0),
                driver_features.eq(0),
                msix_config.eq(rm.VIRTIO_MSI_NO_VECTOR),
                device_status.eq(0),
                queue_select.eq(0),
                isr.eq(0),
                pending.eq(0),
                self.notify.valid.eq(0),
                wce.eq(p.writeback),
            ]
            for i in range(nq):
                m.d.sync += [
                    q_size[i].eq(p.max_queue_size),
                    q_vector[i].eq(rm.VIRTIO_MSI_NO_VECTOR),
                    q_enable[i].eq(0),
                    q_desc[i].eq(0),
                    q_driver[i].eq(0),
                    q_device[i].eq(0),
                ]

        return m
