# Ref: OASIS virtio 1.2 sections 3.1 (device initialization), 4.1.3-4.1.5 (virtio over PCI);
#      Linux drivers/virtio/virtio_pci_modern_dev.c, virtio_pci_modern.c, virtio.c
"""A Python virtio-pci (modern) driver for the testbench.

It talks to the device only through cocotbext-pcie (configuration requests and BAR0 memory
requests through the RootComplex), and does things in the order Linux does them, so that a bug a
real driver would hit shows up here first:

1. ``vp_modern_probe``: walk the capability list for vendor capabilities, taking the first of
   each cfg_type whose BAR is valid: COMMON, ISR, NOTIFY (all required), then DEVICE (optional);
   check each structure's length against its minimum; read notify_off_multiplier.
2. ``virtio_dev_probe``: reset (write 0, wait for 0), ACKNOWLEDGE, DRIVER, read device
   features, write the accepted subset, set FEATURES_OK and read it back.
3. ``vp_find_vqs``: MSI-X vectors (config vector first, read back), then per queue: select,
   read queue_size, program the ring addresses and vector, read queue_notify_off; enable every
   queue last; then DRIVER_OK.
"""

from dataclasses import dataclass

from model import regmap as rm


__all__ = ["VirtioPciDriver", "VirtioCap", "DriverError"]


class DriverError(Exception):
    """The device did something a driver must refuse (Linux would fail the probe)."""


@dataclass
class VirtioCap:
    """[VIRTIO-1.2 4.1.4] One struct virtio_pci_cap as the driver found it."""
    cap_offset: int
    cfg_type: int
    bar: int
    offset: int
    length: int
    notify_off_multiplier: int = 0


# [VIRTIO-1.2 4.1.4.3] minimum length of each structure the driver maps (Linux's minlen).
_MIN_LENGTH = {
    rm.VIRTIO_PCI_CAP_COMMON_CFG: rm.COMMON_LENGTH,
    rm.VIRTIO_PCI_CAP_ISR_CFG: 1,
    rm.VIRTIO_PCI_CAP_NOTIFY_CFG: 2,
    rm.VIRTIO_PCI_CAP_DEVICE_CFG: 0,
}

# Common configuration fields by name: (offset, size), from the register map.
_COMMON = {name: (offset, size) for offset, size, name, _ in rm.COMMON_FIELDS}


class VirtioPciDriver:
    """The driver side of one virtio-pci function.

    Parameters
    ----------
    rc : cocotbext.pcie.core.RootComplex
    dev : cocotbext.pcie.core.pci.PciDevice
        The enumerated function, from ``rc.find_device``.
    log : logging.Logger
    """
    def __init__(self, rc, dev, log):
        self.rc, self.dev, self.log = rc, dev, log
        self.caps = {}
        self.all_caps = []
        self.device_features = None
        self.driver_features = None
        self.queues = []

    # -- capability discovery (vp_modern_probe) -------------------------------------------------

    async def find_capabilities(self):
        """Walk the capability list; returns ``{cfg_type: VirtioCap}`` of the first valid one
        of each type (and keeps every vendor capability found in ``all_caps``)."""
        dev = self.dev
        self.caps, self.all_caps = {}, []
        # [PCI-3.0 6.7] Capabilities Pointer at 0x34 when Status.Capabilities List is set.
        status = await dev.config_read_word(0x06)
        if not status & rm.STS_CAP_LIST:
            raise DriverError("Status.Capabilities List is clear")
        ptr = await dev.config_read_byte(0x34) & 0xfc
        seen = set()
        while ptr:
            if ptr in seen or ptr < 0x40:
                raise DriverError(f"capability list loops or points into the header at {ptr:#x}")
            seen.add(ptr)
            cap_id = await dev.config_read_byte(ptr)
            nxt = await dev.config_read_byte(ptr + 1) & 0xfc
            if cap_id == rm.PCI_CAP_ID_VNDR:
                cfg_type = await dev.config_read_byte(ptr + 3)
                bar = await dev.config_read_byte(ptr + 4)
                offset = await dev.config_read_dword(ptr + 8)
                length = await dev.config_read_dword(ptr + 12)
                cap = VirtioCap(ptr, cfg_type, bar, offset, length)
                if cfg_type == rm.VIRTIO_PCI_CAP_NOTIFY_CFG:
                    cap.notify_off_multiplier = await dev.config_read_dword(ptr + 16)
                self.all_caps.append(cap)
                self.log.info("virtio cap at %#04x: type %d bar %d offset %#06x length %#x",
                              ptr, cfg_type, bar, offset, length)
                # [VIRTIO-1.2 4.1.4.1] Ignore capabilities with a reserved BAR; use the first
                # of each type. PCI_CFG has no structure in a BAR to validate.
                valid_bar = bar < 6 and dev.bar_window[bar] is not None
                if cfg_type not in self.caps and (valid_bar or
                                                  cfg_type == rm.VIRTIO_PCI_CAP_PCI_CFG):
                    self.caps[cfg_type] = cap
            ptr = nxt
        for t in (rm.VIRTIO_PCI_CAP_COMMON_CFG, rm.VIRTIO_PCI_CAP_ISR_CFG,
                  rm.VIRTIO_PCI_CAP_NOTIFY_CFG):
            if t not in self.caps:
                raise DriverError(f"no virtio capability of cfg_type {t}")
        for t, minlen in _MIN_LENGTH.items():
            cap = self.caps.get(t)
            if cap is None:
                continue
            if cap.length < minlen:
                raise DriverError(f"cfg_type {t}: length {cap.length:#x} < {minlen:#x}")
            if cap.offset % 4 or cap.offset + cap.length > self.dev.bar_size[cap.bar]:
                raise DriverError(f"cfg_type {t}: {cap.offset:#x}+{cap.length:#x} "
                                  f"does not fit BAR{cap.bar}")
        return self.caps

    # -- structure access ----------------------------------------------------------------------

    def _window(self, cfg_type):
        cap = self.caps[cfg_type]
        return self.dev.bar_window[cap.bar], cap.offset

    async def read(self, cfg_type, offset, size):
        win, base = self._window(cfg_type)
        return int.from_bytes(await win.read(base + offset, size), "little")

    async def write(self, cfg_type, offset, size, value):
        win, base = self._window(cfg_type)
        await win.write(base + offset, value.to_bytes(size, "little"))

    async def common_read(self, name):
        offset, size = _COMMON[name]
        if size == 8:
            # [VIRTIO-1.2 4.1.3.1] 64-bit fields are accessed as two 32-bit halves, low first.
            lo = await self.read(rm.VIRTIO_PCI_CAP_COMMON_CFG, offset, 4)
            hi = await self.read(rm.VIRTIO_PCI_CAP_COMMON_CFG, offset + 4, 4)
            return hi << 32 | lo
        return await self.read(rm.VIRTIO_PCI_CAP_COMMON_CFG, offset, size)

    async def common_write(self, name, value):
        offset, size = _COMMON[name]
        if size == 8:
            await self.write(rm.VIRTIO_PCI_CAP_COMMON_CFG, offset, 4, value & 0xffffffff)
            await self.write(rm.VIRTIO_PCI_CAP_COMMON_CFG, offset + 4, 4, value >> 32)
        else:
            await self.write(rm.VIRTIO_PCI_CAP_COMMON_CFG, offset, size, value)

    async def status(self):
        return await self.common_read("device_status")

    async def add_status(self, bits):
        await self.common_write("device_status", await self.status() | bits)

    async def reset(self, polls=100):
        """[VIRTIO-1.2 4.1.4.3.2] Write 0, then wait until device_status reads back 0."""
        await self.common_write("device_status", 0)
        for _ in range(polls):
            if await self.status() == 0:
                return
        raise DriverError("device_status did not read 0 after reset")

    async def read_device_config(self, offset, size):
        """[VIRTIO-1.2 4.1.4.3.1] Read device config, retrying while config_generation moves."""
        while True:
            before = await self.common_read("config_generation")
            value = await self.read(rm.VIRTIO_PCI_CAP_DEVICE_CFG, offset, size)
            if await self.common_read("config_generation") == before:
                return value

    async def pci_cfg_read(self, offset, length, bar=0):
        """[VIRTIO-1.2 4.1.4.9] Read BAR memory through the VIRTIO_PCI_CAP_PCI_CFG window."""
        cap = self.caps[rm.VIRTIO_PCI_CAP_PCI_CFG].cap_offset
        await self.dev.config_write_byte(cap + 4, bar)
        await self.dev.config_write_dword(cap + 8, offset)
        await self.dev.config_write_dword(cap + 12, length)
        # The device stores the first ``length`` bytes it read in pci_cfg_data, from byte 0.
        data = await self.dev.config_read(cap + 16, length)
        return int.from_bytes(data, "little")

    # -- initialization (virtio_dev_probe + vp_find_vqs) ---------------------------------------

    async def read_device_features(self):
        words = []
        for sel in (0, 1):
            await self.common_write("device_feature_select", sel)
            words.append(await self.common_read("device_feature"))
        return words[1] << 32 | words[0]

    async def negotiate(self, wanted):
        """Steps 1-6 of [VIRTIO-1.2 3.1.1]; writes ``device & wanted`` unless ``wanted`` is
        given as ``("exact", bits)``. Returns True if the device kept FEATURES_OK."""
        await self.reset()
        await self.add_status(rm.STATUS_ACKNOWLEDGE)
        await self.add_status(rm.STATUS_DRIVER)
        self.device_features = await self.read_device_features()
        if isinstance(wanted, tuple):
            _, features = wanted
        else:
            features = self.device_features & wanted
        self.driver_features = features
        for sel in (0, 1):
            await self.common_write("driver_feature_select", sel)
            await self.common_write("driver_feature", features >> 32 * sel & 0xffffffff)
        await self.add_status(rm.STATUS_FEATURES_OK)
        # [VIRTIO-1.2 3.1.1 step 6] Re-read device status to ensure FEATURES_OK is still set.
        ok = bool(await self.status() & rm.STATUS_FEATURES_OK)
        if not ok:
            self.log.info("device refused features %s", rm.feature_names(features))
            await self.add_status(rm.STATUS_FAILED)
        return ok

    async def setup_queues(self, rings, use_msix):
        """Program every queue at its maximum size; ``rings[i]`` is ``(desc, driver, device)``
        host addresses; with ``use_msix`` configuration changes on vector 0 and queue ``i`` on
        vector ``i + 1`` (see :meth:`find_vqs`)."""
        num = await self.common_read("num_queues")
        return await self.find_vqs(num, lambda q, max_size: (max_size, *rings[q]),
                                   vectors=[q + 1 for q in range(num)] if use_msix else None,
                                   config_vector=0 if use_msix else None)

    async def find_vqs(self, nqueues, make_ring, vectors=None, config_vector=None):
        """Set up queues ``0 .. nqueues-1`` the way Linux's ``vp_modern_find_vqs`` does, and
        enable them last.

        Parameters
        ----------
        nqueues : int
            Queues to set up (at most ``num_queues``; the others stay disabled).
        make_ring : callable
            ``make_ring(q, max_size) -> (size, desc, driver, device)``: allocate the rings for
            queue ``q`` given the device's maximum size; a smaller ``size`` is written back to
            ``queue_size`` [VIRTIO-1.2 4.1.4.3].
        vectors : list of int or None
            MSI-X vector per queue (read back and checked), or None for no MSI-X.
        config_vector : int or None
            MSI-X vector for configuration changes (read back and checked).

        Returns
        -------
        list of dict
            ``self.queues``: ``{"size", "notify"}`` per queue, as :meth:`notify` uses.
        """
        if config_vector is not None:
            await self.common_write("msix_config", config_vector)
            if await self.common_read("msix_config") != config_vector:
                raise DriverError(f"device refused MSI-X vector {config_vector} for "
                                  "configuration changes")
        num = await self.common_read("num_queues")
        if not 1 <= nqueues <= num:
            raise DriverError(f"{nqueues} queues asked for, the device has {num}")
        self.queues = []
        for q in range(nqueues):
            await self.common_write("queue_select", q)
            max_size = await self.common_read("queue_size")
            if max_size == 0:
                raise DriverError(f"queue {q} is not available (queue_size 0)")
            if await self.common_read("queue_enable"):
                raise DriverError(f"queue {q} is already enabled")
            size, desc, drv, dev = make_ring(q, max_size)
            if size != max_size:
                await self.common_write("queue_size", size)
            await self.common_write("queue_desc", desc)
            await self.common_write("queue_driver", drv)
            await self.common_write("queue_device", dev)
            if vectors is not None:
                await self.common_write("queue_msix_vector", vectors[q])
                if await self.common_read("queue_msix_vector") != vectors[q]:
                    raise DriverError(f"device refused MSI-X vector {vectors[q]} for queue {q}")
            notify_off = await self.common_read("queue_notify_off")
            cap = self.caps[rm.VIRTIO_PCI_CAP_NOTIFY_CFG]
            notify = notify_off * cap.notify_off_multiplier
            if notify + 2 > cap.length:
                raise DriverError(f"queue {q} notify offset {notify:#x} outside the region")
            self.queues.append({"size": size, "notify": notify})
        for q in range(nqueues):
            await self.common_write("queue_select", q)
            await self.common_write("queue_enable", 1)
        return self.queues

    # ``avail_index(q)``: the avail index a notification of queue ``q`` carries when
    # VIRTIO_F_NOTIFICATION_DATA is negotiated (set by the block driver); None: no data.
    avail_index = None

    async def notify(self, q, avail_idx=None):
        """[VIRTIO-1.2 4.1.5.2] Available buffer notification: write the queue index, 16 bits.
        With VIRTIO_F_NOTIFICATION_DATA, 32 bits: the avail index (``avail_idx``, else
        :attr:`avail_index`) in bits 31:16 above the queue index [VIRTIO-1.2 2.9], as Linux's
        ``vp_notify_with_data`` writes ``vring_notification_data`` (``avail_idx_shadow << 16 |
        vq->index`` for a split ring)."""
        if self.driver_features and self.driver_features >> rm.VIRTIO_F_NOTIFICATION_DATA & 1:
            if avail_idx is None and self.avail_index is not None:
                avail_idx = self.avail_index(q)
            if avail_idx is not None:
                await self.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG, self.queues[q]["notify"], 4,
                                 (avail_idx & 0xffff) << 16 | q)
                return
        await self.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG, self.queues[q]["notify"], 2, q)

    async def init(self, wanted, rings):
        """Bring the device to DRIVER_OK the way Linux's probe does. Returns the final status."""
        if not await self.negotiate(wanted):
            raise DriverError("device refused features")
        use_msix = self.dev.msix_enabled if hasattr(self.dev, "msix_enabled") else False
        await self.setup_queues(rings, use_msix)
        await self.add_status(rm.STATUS_DRIVER_OK)
        return await self.status()
