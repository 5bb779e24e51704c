# Ref: OASIS virtio 1.2, sections 2.1, 2.2, 3.1, 4.1.4, 4.1.5; PCIe Base 3.0 sections 2.2, 2.3, 7.5
"""Golden model of the endpoint's configuration space and BAR0.

The API speaks in transactions, the way the link sees them: configuration reads and writes by
DW index and byte enables, memory reads and writes by address, DW length and byte enables. Each
call returns what the completion must carry. The RTL in ``rtl/`` implements the same rules; where
the specs leave a choice open, the choice is written down here and in ``docs/registers.md``:

* Memory requests to BAR0 longer than 2 DW, or running past its end, are Completer Aborts
  (reads) or discarded (writes), and set Signaled Target Abort: [VIRTIO-1.2 4.1.3.1] drivers
  access fields at their natural width, so wider accesses violate the programming model
  ([PCIe-3.0 2.3.1] allows CA for that).
* Bytes of a field are written lane by lane, so a 4-byte write at ``device_status`` also writes
  ``queue_select``; a write of 0 to ``device_status`` resets the device and the other lanes of
  that write are dropped, and so is the rest of its request (the second DW of a 2-DW write,
  ``queue_size`` and ``queue_msix_vector``): the device presents 0 in ``device_status`` only
  once the reset is done [VIRTIO-1.2 4.1.4.3.1], the RTL's when the data path has drained, and
  the driver MUST wait for that before it reinitializes the device [VIRTIO-1.2 4.1.4.3.2]. In
  the RTL, writes to the virtio registers before the reset has finished are lost.
* ``driver_feature`` ignores writes once FEATURES_OK is set [VIRTIO-1.2 3.1.1 step 5].
* ``msix_config``/``queue_msix_vector`` keep a vector only if it names an MSI-X table entry, and
  read NO_VECTOR otherwise (and always without MSI-X) [VIRTIO-1.2 4.1.5.1.2].
* ``queue_enable`` becomes 1 on a write with bit 0 set; writes of 0 are ignored, the driver MUST
  NOT write 0 [VIRTIO-1.2 4.1.4.3.2]. It is refused, and DEVICE_NEEDS_RESET set (when the
  status is not 0), if the queue size is not a power of two up to the maximum or a ring is
  misaligned (descriptor table 16, available ring 2, used ring 4 [VIRTIO-1.2 2.7]).
* ``queue_size``, ``queue_desc``, ``queue_driver`` and ``queue_device`` of an enabled queue
  ignore writes (the queue is configured before it is enabled [VIRTIO-1.2 4.1.4.3.2]).
* ``device_status`` bits are never cleared by a write other than 0 (the driver MUST NOT clear a
  bit [VIRTIO-1.2 2.1.1]): a write ORs into the status.
* Per-queue fields of a ``queue_select`` at or beyond ``num_queues`` read 0 and ignore writes.
* A PCI_CFG window access [VIRTIO-1.2 4.1.4.9] happens only if bar = 0, length is 1, 2 or 4,
  offset is a multiple of length and the access lies inside BAR0; otherwise pci_cfg_data is
  plain storage.
* The cache mode (:attr:`VirtioBlkModel.writeback`, 0 writethrough, 1 writeback) is what the
  storage port tells the back-end, and what the ``writeback`` byte of struct virtio_blk_config
  reads. It counts only features accepted with FEATURES_OK (0 before), and follows QEMU
  (``virtio_blk_set_status``) and Linux (``virtblk_get_cache_mode``):

  - without FLUSH it is 0: the driver cannot flush, so every completed write must be stable
    [VIRTIO-1.2 5.2.6.2, first case]; with CONFIG_WCE but not FLUSH the device MUST initialize
    ``writeback`` to 0 [VIRTIO-1.2 5.2.5.2];
  - with FLUSH but not CONFIG_WCE it is 1: the driver SHOULD assume a writeback cache
    [VIRTIO-1.2 5.2.5.1];
  - with FLUSH and CONFIG_WCE it is the driver-set register ``wce``, which resets to
    ``params.writeback`` (1) on every device reset [VIRTIO-1.2 5.2.5: either is allowed].

  ``writeback`` takes writes only with CONFIG_WCE accepted (FEATURES_OK set), and only of 0 or
  1 (in byte lane 0 of its DW); any other value, and every write without CONFIG_WCE, is
  ignored (QEMU's ``virtio_blk_set_config`` would take any non-zero value as writeback; the
  spec defines only 0 and 1). The other bytes of struct virtio_blk_config are read-only.
"""

from dataclasses import dataclass, field

from . import regmap as rm
from .blk import BlkProcessor, Batch
from .regmap import merge


__all__ = ["VirtioBlkModel", "QueueState", "HostConfig", "SC", "UR", "CA"]

SC, UR, CA = "SC", "UR", "CA"


def be_mask(be):
    """Byte enables (4 bits) -> 32-bit mask."""
    return sum(0xff << 8 * i for i in range(4) if be >> i & 1)


@dataclass
class HostConfig:
    """What a hard block that owns the configuration header tells the function behind it
    (``params.hard_ip``): its ``cfg_*`` outputs, and where its BAR0 is. The testbench's model of
    the block keeps it up to date; without a hard block it is unused."""
    command: int = 0
    devctl: int = 0x2810          # [PCIe-3.0 7.8.4] Device Control's reset value
    bus: int = 0
    device: int = 0
    function: int = 0
    power_state: int = 0
    msix_enable: bool = False
    msix_mask: bool = False
    bar0_base: int = 0


@dataclass
class QueueState:
    size: int
    msix_vector: int = rm.VIRTIO_MSI_NO_VECTOR
    enable: int = 0
    desc: int = 0
    driver: int = 0
    device: int = 0


@dataclass
class MsixEntry:
    addr: int = 0
    data: int = 0
    ctrl: int = 1   # [PCIe-3.0 7.7.2] Mask Bit resets to 1


class VirtioBlkModel:
    """The device, as a driver and the link see it.

    Parameters
    ----------
    params : model.params.DeviceParams
    """

    def __init__(self, params):
        self.p = params
        self.regs = rm.config_registers(params)
        self.blk_config = params.blk_config()
        self.notifications = []
        # [VIRTIO-1.2 2.9] Each notification as (queue, avail index or None without data).
        self.doorbells = []
        # The request engine; its disk survives resets, its ring state does not.
        self.blk = BlkProcessor(params)
        self.power_on_reset()

    # -- resets -------------------------------------------------------------------------------

    def power_on_reset(self):
        """Fundamental reset: configuration space, MSI-X table and virtio state."""
        self.cfg = {dw: r.reset for dw, r in self.regs.items()}
        self.bus, self.dev = 0, 0
        # Behind a hard block: its state, as the block's model sets it (a fundamental reset
        # resets the block too).
        self.host = HostConfig()
        self.msix_table = [MsixEntry() for _ in range(self.p.msix_table_size)]
        self.msix_pba = 0
        self.virtio_reset()

    def function_level_reset(self):
        """[PCIe-3.0 6.6.2] FLR: configuration space (but Max_Payload_Size and the link
        registers), the MSI-X table and the virtio state go back to reset; the disk stays."""
        keep = {dw: self.cfg[dw] & rm.FLR_KEEPS[r.name] for dw, r in self.regs.items()
                if r.name in rm.FLR_KEEPS}
        self.cfg = {dw: r.reset for dw, r in self.regs.items()}
        for dw, bits in keep.items():
            mask = rm.FLR_KEEPS[self.regs[dw].name]
            self.cfg[dw] = (self.cfg[dw] & ~mask) | bits
        self.msix_table = [MsixEntry() for _ in range(self.p.msix_table_size)]
        self.msix_pba = 0
        self.virtio_reset()

    def virtio_reset(self):
        """[VIRTIO-1.2 4.1.4.3.1] Writing 0 to device_status resets the device."""
        # [VIRTIO-1.2 5.2.5] The cache mode after reset can be either; QEMU's is its
        # configured one (virtio_blk_reset restores original_wce), ours params.writeback.
        self.wce = self.p.writeback
        self.device_feature_select = 0
        self.driver_feature_select = 0
        self.driver_features = 0
        self.msix_config = rm.VIRTIO_MSI_NO_VECTOR
        self.device_status = 0
        self.config_generation = 0
        self.queue_select = 0
        self.queues = [QueueState(self.p.max_queue_size) for _ in range(self.p.num_queues)]
        self.isr = 0
        # [VIRTIO-1.2 2.4.1] No notification after the reset: pending MSI-X messages go.
        self.msix_pba = 0
        self.blk.reset()

    # -- request processing -------------------------------------------------------------------

    def process_queue(self, q, mem, avail_idx=None):
        """Serve queue ``q`` after an available buffer notification, through :attr:`blk`.

        Nothing is served (an empty :class:`model.blk.Batch` is returned) unless the queue
        exists and is enabled, DRIVER_OK is set and DEVICE_NEEDS_RESET is not. A malformed
        descriptor chain sets DEVICE_NEEDS_RESET [VIRTIO-1.2 2.1.2], which stops all queues
        until the driver resets the device.

        Parameters
        ----------
        q : int
            Queue index.
        mem : object
            Host memory: ``read(addr, n) -> bytes``, ``write(addr, data)``.
        avail_idx : int or None
            The avail index the notification carried (as :attr:`doorbells` records it), or
            None for one without data; see :meth:`model.blk.BlkProcessor.process`.

        Returns
        -------
        model.blk.Batch
        """
        if not (q < self.p.num_queues and self.queues[q].enable and
                self.device_status & rm.STATUS_DRIVER_OK and
                not self.device_status & rm.STATUS_DEVICE_NEEDS_RESET):
            return Batch()
        batch = self.blk.process(q, mem, self.queues[q], self.driver_features, avail_idx)
        if batch.needs_reset:
            self.device_status |= rm.STATUS_DEVICE_NEEDS_RESET
            # [VIRTIO-1.2 4.1.4.5.1] The configuration change notification that follows sets
            # the Device Configuration Interrupt bit of the ISR first, MSI-X or not.
            self.isr |= 2
        return batch

    # -- derived state ------------------------------------------------------------------------

    def _reg_dw(self, name):
        for dw, r in self.regs.items():
            if r.name == name:
                return dw
        raise KeyError(name)

    def _cfg_value(self, dw):
        r = self.regs[dw]
        live = r.wmask | r.w1c
        return (self.cfg[dw] & live) | (r.reset & ~live)

    @property
    def command(self):
        if self.p.hard_ip:
            return self.host.command
        return self._cfg_value(1) & 0xffff

    @property
    def memory_enabled(self):
        return bool(self.command & rm.CMD_MEMORY_SPACE)

    @property
    def bar0_base(self):
        if self.p.hard_ip:
            return self.host.bar0_base & ~(self.p.bar0_size - 1)
        base = self._cfg_value(4) & ~0xf
        if self.p.bar0_64bit:
            base |= self._cfg_value(5) << 32
        return base & ~(self.p.bar0_size - 1)

    @property
    def completer_id(self):
        """[PCIe-3.0 2.2.6.2] Bus and Device Numbers captured from Type 0 Configuration Writes;
        behind a hard block, the block's (``cfg_bus_number`` and so on)."""
        if self.p.hard_ip:
            h = self.host
            return h.bus << 8 | h.device << 3 | h.function
        return self.bus << 8 | self.dev << 3

    @property
    def devctl(self):
        if self.p.hard_ip:
            return self.host.devctl & 0xffff
        return self._cfg_value(self._reg_dw("pcie_devctl_devsta")) & 0xffff

    @property
    def max_payload_size(self):
        return 128 << (self.devctl >> 5 & 7)

    @property
    def max_read_request_size(self):
        return 128 << (self.devctl >> 12 & 7)

    @property
    def features_ok(self):
        return bool(self.device_status & rm.STATUS_FEATURES_OK)

    def negotiated(self, bit):
        """Feature ``bit`` was accepted: in ``driver_features`` with FEATURES_OK set."""
        return self.features_ok and bool(self.driver_features >> bit & 1)

    @property
    def writeback(self):
        """The cache mode in force: 1 writeback, 0 writethrough (see the module docstring)."""
        # [VIRTIO-1.2 5.2.6.2] Without FLUSH every completed write must be stable: writethrough.
        if not self.negotiated(rm.VIRTIO_BLK_F_FLUSH):
            return 0
        # [VIRTIO-1.2 5.2.5] With CONFIG_WCE the driver sets the mode; [5.2.5.1] without it a
        # driver that negotiated FLUSH SHOULD assume a writeback cache (QEMU makes it one).
        if self.negotiated(rm.VIRTIO_BLK_F_CONFIG_WCE):
            return self.wce
        return 1

    def _set_event(self, name, bits):
        if self.p.hard_ip:
            # The status registers are the hard block's; the function reports nothing to them
            # (its cfg_err_* inputs are not driven yet).
            return
        dw = self._reg_dw(name)
        self.cfg[dw] |= bits

    def _unsupported_request(self):
        # [PCIe-3.0 7.8.5] Unsupported Request Detected.
        self._set_event("pcie_devctl_devsta", rm.DEVSTA_URD << 16)

    def poisoned_received(self):
        """[PCIe-3.0 7.5.1.2] A Poisoned TLP (data with EP set) arrived: Status.Detected Parity
        Error, whatever Parity Error Response says."""
        self._set_event("command_status", rm.STS_DETECTED_PARITY_ERROR << 16)

    def _target_abort(self):
        # [PCI-3.0 6.2.3] Signaled Target Abort: the function completed a request as CA.
        self._set_event("command_status", rm.STS_SIGNALED_TARGET_ABORT << 16)

    # -- configuration space ------------------------------------------------------------------

    def config_read(self, dw, be=0xf, function=0):
        """Configuration Read Type 0. Returns ``(status, value)``."""
        if function != 0:
            # [PCIe-3.0 2.3.1] A single-function device has no function 1-7: UR.
            self._unsupported_request()
            return UR, None
        if dw not in self.regs:
            return SC, 0
        r = self.regs[dw]
        if r.special == "status":
            value = self._cfg_value(dw)
            if self.isr and not self._msix_enabled:
                value |= rm.STS_INTERRUPT << 16
            return SC, value
        if r.special == "pci_cfg_data" and be:
            window = self._pci_cfg_window()
            if window is not None:
                offset, length = window
                lane = offset & 3
                data = self.bar_read_dw(offset >> 2, ((1 << length) - 1) << lane) >> 8 * lane
                mask = (1 << 8 * length) - 1
                self.cfg[dw] = (self.cfg[dw] & ~mask) | (data & mask)
        return SC, self._cfg_value(dw)

    def config_write(self, dw, value, be=0xf, function=0, bus=0, dev=0, poisoned=False):
        """Configuration Write Type 0. Returns the completion status."""
        if poisoned:
            self.poisoned_received()
        if function != 0 or poisoned:
            # [PCIe-3.0 2.7.2.2] A poisoned Configuration Write is discarded and completes UR.
            self._unsupported_request()
            return UR
        self.bus, self.dev = bus, dev
        if dw not in self.regs:
            return SC
        r = self.regs[dw]
        m = be_mask(be)
        if r.special == "pmcsr":
            # [PCI-PM 1.2 3.2.4] A write of an unsupported power state (D1, D2) is discarded.
            if be & 1 and value & 3 in (1, 2):
                m &= ~0x3
        old = self.cfg[dw]
        new = (old & ~(r.wmask & m)) | (value & r.wmask & m)
        new &= ~(value & r.w1c & m)
        self.cfg[dw] = new
        if r.name == "pcie_devctl_devsta" and value & m & rm.DEVCTL_INITIATE_FLR:
            # [PCIe-3.0 7.8.4] Initiate Function Level Reset; this write still completes.
            self.function_level_reset()
            return SC
        if r.special == "pci_cfg_data" and be:
            window = self._pci_cfg_window()
            if window is not None:
                offset, length = window
                lane = offset & 3
                data = self.cfg[dw] & ((1 << 8 * length) - 1)
                self.bar_write_dw(offset >> 2, data << 8 * lane, ((1 << length) - 1) << lane)
        return SC

    def _pci_cfg_window(self):
        cap = rm.find_cap(self.p, "virtio-pci-cfg")
        bar = self._cfg_value((cap.offset + 4) // 4) & 0xff
        offset = self._cfg_value((cap.offset + 8) // 4)
        length = self._cfg_value((cap.offset + 12) // 4)
        if bar != 0 or length not in (1, 2, 4) or offset % length:
            return None
        if offset + length > self.p.bar0_size:
            return None
        return offset, length

    # -- memory requests ----------------------------------------------------------------------

    @property
    def power_state(self):
        """PMCSR PowerState: 0 = D0, 3 = D3hot."""
        if self.p.hard_ip:
            return self.host.power_state
        return self._cfg_value(self._reg_dw("pm_csr")) & 3

    def _bar_hit(self, addr):
        # [PCIe-3.0 5.3.1.4.1] In D3hot only configuration requests and messages are taken.
        return (self.memory_enabled and self.power_state != 3 and
                addr & ~(self.p.bar0_size - 1) == self.bar0_base)

    def mem_read(self, addr, length_dw, first_be, last_be=0):
        """Memory Read Request. Returns ``(status, bytes)`` with ``length_dw * 4`` bytes on SC."""
        if not self._bar_hit(addr):
            self._unsupported_request()
            return UR, None
        off = (addr - self.bar0_base) >> 2
        if length_dw > 2 or (off + length_dw) * 4 > self.p.bar0_size:
            self._target_abort()
            return CA, None
        bes = [first_be] if length_dw == 1 else [first_be, last_be]
        out = bytearray()
        for i, be in enumerate(bes):
            out += self.bar_read_dw(off + i, be).to_bytes(4, "little")
        return SC, bytes(out)

    def mem_write(self, addr, data, first_be, last_be=0, poisoned=False):
        """Posted Memory Write Request; ``data`` holds ``4 * length`` bytes."""
        length_dw = len(data) // 4
        if poisoned:
            self.poisoned_received()
        if not self._bar_hit(addr):
            self._unsupported_request()
            return UR
        if poisoned:
            # [PCIe-3.0 2.7.2.2] Poisoned write data must not modify the register.
            return SC
        off = (addr - self.bar0_base) >> 2
        if length_dw > 2 or (off + length_dw) * 4 > self.p.bar0_size:
            self._target_abort()
            return CA
        bes = [first_be] if length_dw == 1 else [first_be, last_be]
        for i, be in enumerate(bes):
            if self.bar_write_dw(off + i, int.from_bytes(data[4 * i:4 * i + 4], "little"), be):
                # [VIRTIO-1.2 4.1.4.3.2] The driver MUST wait for device_status to read 0
                # before reinitializing the device: the rest of a request that reset it is
                # written while the reset is under way, and dropped.
                break
        return SC

    def message(self, code, poisoned=False):
        """A Message request with Message Code ``code`` [PCIe-3.0 2.2.8]: the ones in
        :data:`regmap.MESSAGES_ACCEPTED` are dropped without error, any other is an Unsupported
        Request (posted, so only Unsupported Request Detected records it)."""
        if code in rm.MESSAGES_ACCEPTED:
            if poisoned:
                self.poisoned_received()
            return
        self.unsupported(poisoned)

    def unsupported(self, poisoned=False):
        """Any request type the function does not support (I/O, Type 1, MRdLk, AtomicOp, Msg);
        ``poisoned`` if it carried data with EP set."""
        if poisoned:
            self.poisoned_received()
        self._unsupported_request()
        return UR

    # -- BAR0 registers -----------------------------------------------------------------------

    @property
    def _msix_enabled(self):
        if not self.p.msix:
            return False
        if self.p.hard_ip:
            return self.host.msix_enable
        return bool(self._cfg_value(self._reg_dw("msix_cap")) >> 31)

    def _selected_queue(self):
        if self.queue_select < self.p.num_queues:
            return self.queues[self.queue_select]
        return None

    def _vector(self, value):
        return value if value < self.p.msix_table_size else rm.VIRTIO_MSI_NO_VECTOR

    def bar_read_dw(self, off, be=0xf):
        """Read DW ``off`` of BAR0 with byte enables ``be`` (side effects only on enabled bytes)."""
        region, local = divmod(off * 4, rm.REGION_SIZE)
        if region == 0:
            return self._common_read(local)
        if region == 1 and local == 0:
            # [VIRTIO-1.2 4.1.4.5] Reading the ISR status resets it to 0.
            value = self.isr
            if be & 1:
                self.isr = 0
            return value
        if region == 2 and local < rm.BLK_CONFIG_LENGTH:
            value = int.from_bytes(self.blk_config[local:local + 4], "little")
            if local == rm.BLK_CFG_WRITEBACK:
                value = (value & ~0xff) | self.writeback
            return value
        if region == 4 and local // 16 < self.p.msix_table_size:
            e = self.msix_table[local // 16]
            return [e.addr & 0xffffffff, e.addr >> 32, e.data, e.ctrl][local // 4 % 4]
        if region == 5 and self.p.msix and local == 0:
            return self.msix_pba
        return 0

    def _common_read(self, local):
        q = self._selected_queue()
        if local == rm.CC_DEVICE_FEATURE_SELECT:
            return self.device_feature_select
        if local == rm.CC_DEVICE_FEATURE:
            sel = self.device_feature_select
            return self.p.offered_features >> 32 * sel & 0xffffffff if sel < 2 else 0
        if local == rm.CC_DRIVER_FEATURE_SELECT:
            return self.driver_feature_select
        if local == rm.CC_DRIVER_FEATURE:
            sel = self.driver_feature_select
            return self.driver_features >> 32 * sel & 0xffffffff if sel < 2 else 0
        if local == rm.CC_MSIX_CONFIG:
            return self.p.num_queues << 16 | self.msix_config
        if local == rm.CC_DEVICE_STATUS:
            return self.queue_select << 16 | self.config_generation << 8 | self.device_status
        if q is None:
            return 0
        if local == rm.CC_QUEUE_SIZE:
            return q.msix_vector << 16 | q.size
        if local == rm.CC_QUEUE_ENABLE:
            return self.queue_select << 16 | q.enable
        for base, name in ((rm.CC_QUEUE_DESC, "desc"), (rm.CC_QUEUE_DRIVER, "driver"),
                           (rm.CC_QUEUE_DEVICE, "device")):
            if local in (base, base + 4):
                return getattr(q, name) >> 8 * (local - base) & 0xffffffff
        return 0

    def bar_write_dw(self, off, value, be=0xf):
        """Write DW ``off`` of BAR0 with byte enables ``be``. Returns True if the write reset
        the device (0 written to ``device_status``)."""
        region, local = divmod(off * 4, rm.REGION_SIZE)
        m = be_mask(be)
        if region == 0:
            return bool(self._common_write(local, value, m))
        elif region == 2 and local == rm.BLK_CFG_WRITEBACK:
            # [VIRTIO-1.2 5.2.5] With CONFIG_WCE the driver sets the cache mode: 0 writethrough,
            # 1 writeback; other values are ignored, and so is every write without CONFIG_WCE.
            if m & 0xff and self.negotiated(rm.VIRTIO_BLK_F_CONFIG_WCE) and value & 0xff < 2:
                self.wce = value & 1
        elif region == 3:
            # [VIRTIO-1.2 4.1.5.2] The driver notifies by writing the 16-bit queue index at
            # the queue's notify address: lanes 2-3 when that is 2 mod 4 (a multiplier of 2).
            # [VIRTIO-1.2 2.9] With VIRTIO_F_NOTIFICATION_DATA a 32-bit write carries the avail
            # index in bits 31:16 (for a split ring); a narrower one carries none.
            if local < self.p.notify_length and m:
                q = value & m & 0xffff if m & 0xffff else (value & m) >> 16
                data = value >> 16 & 0xffff if (
                    m == 0xffffffff and self.negotiated(rm.VIRTIO_F_NOTIFICATION_DATA)) else None
                if q < self.p.num_queues:   # any other index names no queue: dropped
                    self.notifications.append(q)
                    self.doorbells.append((q, data))
        elif region == 4 and local // 16 < self.p.msix_table_size:
            e = self.msix_table[local // 16]
            word = local // 4 % 4
            if word == 0:
                e.addr = (e.addr & ~0xffffffff) | merge(e.addr & 0xffffffff, value, m & ~3)
            elif word == 1:
                e.addr = (e.addr & 0xffffffff) | merge(e.addr >> 32, value, m) << 32
            elif word == 2:
                e.data = merge(e.data, value, m)
            else:
                e.ctrl = merge(e.ctrl, value, m & 1)
        return False

    def _common_write(self, local, value, m):
        q = self._selected_queue()
        if local == rm.CC_DEVICE_FEATURE_SELECT:
            self.device_feature_select = merge(self.device_feature_select, value, m)
        elif local == rm.CC_DRIVER_FEATURE_SELECT:
            self.driver_feature_select = merge(self.driver_feature_select, value, m)
        elif local == rm.CC_DRIVER_FEATURE:
            sel = self.driver_feature_select
            if sel < 2 and not self.features_ok:
                word = merge(self.driver_features >> 32 * sel & 0xffffffff, value, m)
                self.driver_features &= ~(0xffffffff << 32 * sel)
                self.driver_features |= word << 32 * sel
        elif local == rm.CC_MSIX_CONFIG:
            if m & 0xffff:
                self.msix_config = self._vector(merge(self.msix_config, value, m & 0xffff))
        elif local == rm.CC_DEVICE_STATUS:
            if m & 0xff and value & 0xff == 0:
                self.virtio_reset()
                return True
            if m & 0xffff0000:
                self.queue_select = merge(self.queue_select << 16, value, m & 0xffff0000) >> 16
            if m & 0xff:
                self._write_status(value & 0xff)
        elif q is None:
            return
        elif local == rm.CC_QUEUE_SIZE:
            # [VIRTIO-1.2 4.1.4.3.2] An enabled queue's size and rings stay put.
            if m & 0xffff and not q.enable:
                q.size = merge(q.size, value, m & 0xffff)
            if m & 0xffff0000:
                q.msix_vector = self._vector(
                    merge(q.msix_vector << 16, value, m & 0xffff0000) >> 16)
        elif local == rm.CC_QUEUE_ENABLE:
            if m & 1 and value & 1:
                if self._queue_valid(q):
                    q.enable = 1
                elif self.device_status:
                    # [VIRTIO-1.2 2.1.2] A queue the device cannot use: it needs a reset.
                    self.device_status |= rm.STATUS_DEVICE_NEEDS_RESET
        elif q.enable:
            return
        else:
            for base, name in ((rm.CC_QUEUE_DESC, "desc"), (rm.CC_QUEUE_DRIVER, "driver"),
                               (rm.CC_QUEUE_DEVICE, "device")):
                if local in (base, base + 4):
                    shift = 8 * (local - base)
                    old = getattr(q, name)
                    word = merge(old >> shift & 0xffffffff, value, m)
                    setattr(q, name, (old & ~(0xffffffff << shift)) | word << shift)

    def _queue_valid(self, q):
        """[VIRTIO-1.2 2.7, 4.1.4.3.2] A power-of-two size up to the maximum, and the
        rings at their alignments: descriptor table 16, available ring 2, used ring 4."""
        return (0 < q.size <= self.p.max_queue_size and q.size & (q.size - 1) == 0 and
                q.desc % 16 == 0 and q.driver % 2 == 0 and q.device % 4 == 0)

    def _write_status(self, value):
        # [VIRTIO-1.2 2.1.1] The driver MUST NOT clear a status bit: only a reset clears them.
        # DEVICE_NEEDS_RESET belongs to the device; the driver cannot set it.
        old = self.device_status
        value = ((value | old) & ~rm.STATUS_DEVICE_NEEDS_RESET) | \
                (old & rm.STATUS_DEVICE_NEEDS_RESET)
        # [VIRTIO-1.2 2.2.2] The device fails to set FEATURES_OK unless it accepts the subset.
        if value & rm.STATUS_FEATURES_OK and not old & rm.STATUS_FEATURES_OK and \
                not self.features_acceptable(self.driver_features):
            value &= ~rm.STATUS_FEATURES_OK
        self.device_status = value

    def features_acceptable(self, features):
        """[VIRTIO-1.2 2.2.2, 6.1] A subset of the offered features that includes VERSION_1."""
        return (features & ~self.p.offered_features) == 0 and \
            bool(features >> rm.VIRTIO_F_VERSION_1 & 1)
