"""The data-path testbench: :class:`tb.testbench.TB` plus a storage back-end, host memory, the
block driver, the golden model running on the same rings, and the DMA fence.

Every request is handed to the golden model the moment it becomes available (the driver's
``on_submit`` hook: ``avail->idx`` is written): the model serves it from the same host memory,
but its writes go to a private overlay, so the DUT's results are not disturbed. When the driver
reaps the request (``on_complete``), the DUT's used ``len``, status byte and every
device-writable byte are compared with the model's; at the end the back-end's disk image is
compared with the model's disk. Meanwhile :class:`tb.fence.DmaFence` admits only the rings and
the buffers of the requests in flight, and the scoreboard's ordering checker
(:mod:`tb.ordering`) watches the order in which the DUT makes its results visible.

Tests keep requests that write sectors apart from any other request in flight on those sectors
(the order in which a device serves requests of different queues is its own), so the model's
order and the DUT's give the same disk.
"""

import random

import cocotb
from cocotb.triggers import RisingEdge

from model import regmap as rm
from .testbench import TB, CLOCK_NS
from .backend import StorageBackend
from .blk import BlkDriver
from .fence import DmaFence
from .ordering import OrderingChecker
from .virtqueue import HostMemory


__all__ = ["BlkTB", "ModelMemory"]


class ModelMemory:
    """The golden model's view of host memory: reads from host memory, writes to an overlay."""
    def __init__(self, mem):
        self.mem = mem
        self.writes = []

    def read(self, addr, n):
        return self.mem.read(addr, n)

    def write(self, addr, data):
        self.writes.append((addr, bytes(data)))

    def take(self, ranges, fill):
        """The bytes of ``ranges`` as the model left them (``fill`` where it wrote nothing)."""
        out = bytearray()
        for addr, n in ranges:
            buf = bytearray([fill]) * n
            for waddr, data in self.writes:
                lo, hi = max(addr, waddr), min(addr + n, waddr + len(data))
                if lo < hi:
                    buf[lo - addr:hi - addr] = data[lo - waddr:hi - waddr]
            out += buf
        return bytes(out)


class BlkTB(TB):
    """One DUT with its back-end, driver, golden model and DMA fence.

    Parameters
    ----------
    dut : cocotb handle
    stalls : bool
        Random stalls on both TLP streams (see :class:`tb.testbench.TB`) and on all four streams
        of the storage port.
    mem_size : int
        Bytes of host memory for rings and buffers.

    Attributes
    ----------
    backend : tb.backend.StorageBackend
    image : bytearray
        The back-end's disk.
    mem : tb.virtqueue.HostMemory
        After :meth:`start`.
    drv : tb.blk.BlkDriver
        After :meth:`start`.
    transport : tb.driver.VirtioPciDriver
        The driver's virtio-pci transport (``drv.transport``).
    fence : tb.fence.DmaFence
        The scoreboard's ``dma_allowed``, after :meth:`start`.
    ordering : tb.ordering.OrderingChecker
        The scoreboard's ordering checker, after :meth:`start`.
    compared, mismatches : int
        Requests compared with the model, and those that differed.
    model_on_submit : bool
        The model serves each request as it is submitted (default). Off: the test runs the
        model itself, e.g. on a notification (:meth:`model_notify`).
    """
    def __init__(self, dut, stalls=False, mem_size=16 << 20):
        super().__init__(dut, stalls)
        self.image = bytearray(self.params.capacity * rm.BLK_SECTOR_BYTES)
        self.backend = StorageBackend(dut, self.image,
                                      stall_prob=0.3 if stalls else 0.0,
                                      rng=random.Random(self.rng.randrange(1 << 32)),
                                      log=self.log)
        self.mem_size = mem_size
        self.mem = self.drv = self.transport = self.fence = self.ordering = None
        self.compared = 0
        self.mismatches = 0
        self._last_reap = -(1 << 62)
        self._model_mem = None
        self.model_on_submit = True

    async def start(self, **init_kw):
        """Reset, enumerate, and bring the block driver to DRIVER_OK (``init_kw`` go to
        :meth:`tb.blk.BlkDriver.init`)."""
        await super().start()
        self.mem = HostMemory.from_root_complex(self.rc, size=self.mem_size)
        self._model_mem = ModelMemory(self.mem)
        self.drv = BlkDriver(self.driver(), self.mem, self.log, intx=self.dut.intx)
        self.transport = self.drv.transport
        self.fence = DmaFence(lambda: self.drv.vqs, self.mem.read)
        self.scoreboard.dma_allowed = self.fence
        self.ordering = OrderingChecker(self.model, self.mem.read, self.scoreboard.error)
        self.scoreboard.ordering = self.ordering
        self.scoreboard.isr_maybe = self._isr_maybe
        self.drv.on_submit += [self.fence.request, self._model_request]
        self.drv.on_complete += [self.fence.release, self._compare]
        self.drv.on_abandon.append(self.fence.release)
        await self.drv.init(**init_kw)
        if self.drv.intx is not None and not self.drv.msix:
            cocotb.start_soon(self._watch_intx())
        return self.drv

    async def reinit(self, **init_kw):
        """After a reset of the device: bring the driver up again on fresh rings (the model's
        ring state was reset with the device; its disk stays)."""
        await self.drv.init(**init_kw)
        return self.drv

    async def _watch_intx(self):
        # INTA# is the notification without MSI-X: the ordering checker wants its edges.
        intx = self.dut.intx
        while True:
            await RisingEdge(intx)
            self.ordering.intx_asserted()

    # -- the golden model on the same rings ---------------------------------------------------------

    def _model_request(self, req):
        """``on_submit``: the model serves the request now, from the same rings; its writes stay
        private."""
        req.submitted_at = self.cycles()
        if not self.model_on_submit:
            return
        mm = self._model_mem
        mm.writes = []
        batch = self.model.process_queue(req.q, mm)
        if batch.needs_reset:
            req.expected = ("needs_reset", batch.error)
            return
        assert len(batch.completions) == 1, \
            f"model served {len(batch.completions)} requests for one submission"
        c = batch.completions[0]
        assert c.head == req.head, f"model served head {c.head}, driver added {req.head}"
        stream = mm.take(req.writable, self.drv.core.poison)
        req.expected = (c.used_len, c.status, stream[:-1])
        req.interrupt = batch.interrupt

    def model_notify(self, q, avail_idx, reqs):
        """The model serves queue ``q`` on a notification that carries ``avail_idx`` (None:
        without data) [VIRTIO-1.2 2.9], from the same rings; each of ``reqs`` it completes is
        given what the DUT must report for it. Returns the model's batch."""
        mm = self._model_mem
        mm.writes = []
        batch = self.model.process_queue(q, mm, avail_idx)
        by_head = {r.head: r for r in reqs}
        for c in batch.completions:
            assert c.head in by_head, f"model served head {c.head}, which is none of {reqs}"
            req = by_head.pop(c.head)
            req.expected = (c.used_len, c.status, mm.take(req.writable, self.drv.core.poison)[:-1])
            req.interrupt = batch.interrupt
        return batch

    def _compare(self, req):
        """``on_complete``: the DUT's used entry, status byte and data against the model's."""
        req.completed_at = self._last_reap = self.cycles()
        exp = req.expected
        if exp is None:
            return
        self.compared += 1
        problems = []
        if exp[0] == "needs_reset":
            problems.append(f"the model found the ring malformed ({exp[1]}), the DUT completed "
                            f"the request")
        else:
            used_len, status, data = exp
            if req.used_len != used_len:
                problems.append(f"used len {req.used_len}, model {used_len}")
            if req.status != status:
                problems.append(f"status {req.status}, model {status}")
            if req.data != data:
                k = next(i for i in range(min(len(data), len(req.data)))
                         if req.data[i] != data[i]) if len(data) == len(req.data) else 0
                problems.append(f"device-writable bytes differ from the model's from byte {k} "
                                f"({req.data[k:k + 8].hex()} vs {data[k:k + 8].hex()})")
        if problems:
            self.mismatches += 1
            self.scoreboard.error(f"request {req}: " + "; ".join(problems))

    # How long after the driver reaps a request the DUT's interrupt for it may still arrive:
    # the driver can find a used entry (reaping for another interrupt) before the DUT has
    # decided and sent the interrupt that announces it.
    IRQ_GRACE_CYCLES = 1000

    def _isr_maybe(self):
        """[VIRTIO-1.2 4.1.4.5] Without MSI-X the DUT sets ISR bit 0 for a queue interrupt; the
        register model cannot know when, so the ISR may read bit 0 set while a request that
        the model says interrupts is in flight, or was reaped just now."""
        drv = self.drv
        if drv is None or drv.msix or drv.core is None:
            return 0
        # With EVENT_IDX the decision depends on used_event when the DUT completes the
        # request, which the model (serving at submission) cannot see: any request in flight
        # may interrupt.
        event_idx = drv.features >> rm.VIRTIO_RING_F_EVENT_IDX & 1
        if any(event_idx or r.interrupt for qs in drv.core.inflight for r in qs.values()):
            return 1
        return int(self.cycles() - self._last_reap < self.IRQ_GRACE_CYCLES)

    async def finish(self, settle=200):
        """Let the device go idle, then check: every request compared, no scoreboard error,
        the back-end's disk equals the model's."""
        await self.wait_cycles(settle)
        # The DUT's last reads (a look at avail->idx after the last request) may still be on
        # their way back when the host answers late (``make bench``'s 1 us points): wait for
        # them, as long as the host's latency and a margin, before the scoreboard calls them
        # lost.
        latency = -(-self.shim.host_latency_ns // CLOCK_NS)
        waited = 0
        while (self.scoreboard.dma_pending and not self.scoreboard.expect_timeouts
               and waited < latency + settle):
            await self.wait_cycles(16)
            waited += 16
        disk = self.model.blk.disk
        if bytes(self.image) != bytes(disk):
            k = next(i for i in range(len(disk)) if self.image[i] != disk[i])
            self.scoreboard.error(f"disk image differs from the model's at byte {k} "
                                  f"(sector {k // 512})")
        self.log.info("data path: %d requests compared with the model, %d mismatches; "
                      "back-end %s", self.compared, self.mismatches, self.backend.counts)
        await self.drv.close()
        super().finish()
