# Ref: OASIS virtio 1.2 sections 2.7 (split virtqueues), 5.2.6 (block device operation)
"""The golden model on the guest's rings: every request the kernel makes, checked.

In the cocotb tests the Python driver hands each request to the model as it submits it
(:class:`tb.blk_testbench.BlkTB`). Here the driver is Linux, whose submissions nobody sees; so
:class:`RingChecker` watches the device's side instead. On each notification, and whenever the
DUT's write of a queue's ``used->idx`` announces requests the model has not served yet, the
model serves the queue from guest memory as it is then (:meth:`model.device.VirtioBlkModel.
process_queue`), writing to a private overlay (:class:`tb.blk_testbench.ModelMemory`) and
keeping each completion with the bytes it would write for it. When the DUT writes ``used->idx``
(before that write reaches guest memory, so the guest cannot have reused the buffers), each
request it announces is compared with the model's next one for that queue: the used element
``{id, len}`` in guest memory, and every data and status byte the model wrote. At the end
:meth:`RingChecker.finish` compares the disk with the model's.

The model serves requests of different queues in the order it sees them, the DUT in its own:
requests in flight on two queues at once that write the same sectors (or one writes what the
other reads) may legitimately differ. Linux's block layer and the guest's workload (separate
regions per job) do not make such pairs.
"""

import struct

from ..blk_testbench import ModelMemory


__all__ = ["RingChecker"]


U16 = 0xffff


class RingChecker:
    """Serves the golden model on the guest's rings and compares the DUT's results with it.

    Parameters
    ----------
    model : model.device.VirtioBlkModel
        The scoreboard's model: its register state (queue addresses, features, status) follows
        the guest's accesses.
    memory : tb.qemu.guest_ram.GuestMemory
        Guest RAM.
    error : callable
        Called with a message for each mismatch (the scoreboard's ``error``).
    log : logging.Logger
    now : callable
        The current clock cycle.

    Attributes
    ----------
    compared, mismatches : int
        Requests compared, and those that differed.
    per_queue : list of int
        Requests compared per queue.
    latencies : list of int
        Per request compared, the cycles from when the model served it (the guest's
        notification, or the DUT's announcement of an earlier request) to the DUT's
        ``used->idx`` write that announced it: the device's time per request, as far as the
        bridge can see it.
    """
    def __init__(self, model, memory, error, log, now=lambda: 0):
        self.model = model
        self.now = now
        self.latencies = []      # cycles from the model's serving to the DUT's announcement
        self.memory = memory
        self.error = error
        self.log = log
        self.compared = 0
        self.mismatches = 0
        n = model.p.num_queues
        self.per_queue = [0] * n
        self._pending = [[] for _ in range(n)]   # (Completion, [(addr, bytes)], cycle) per queue
        self._announced = [0] * n                # the used->idx the DUT last wrote
        self._mem = ModelMemory(memory)
        self._rings = model.blk.rings

    def _follow_reset(self):
        """After a reset of the model (device_status 0, FLR, the bridge's DEVICE_RESET: its
        ring state is a new list) every queue starts again at 0 with nothing pending."""
        if self.model.blk.rings is not self._rings:
            self._rings = self.model.blk.rings
            n = self.model.p.num_queues
            self._pending = [[] for _ in range(n)]
            self._announced = [0] * n

    def _u16(self, addr):
        """A ring index (or flags) in guest memory [VIRTIO-1.2 2.7: little endian]."""
        return struct.unpack("<H", self.memory.read(addr, 2))[0]

    def _ring_spans(self, queue):
        """Byte ranges of queue's rings (the model's writes there are not data)."""
        size = queue.size
        return [(queue.driver, 6 + 2 * size), (queue.device, 6 + 8 * size)]

    def serve(self, q):
        """The model serves queue ``q`` as guest memory shows it now; its completions wait
        for the DUT's announcement."""
        self._follow_reset()
        queue = self.model.queues[q]
        mm = self._mem
        mm.writes = []
        batch = self.model.process_queue(q, mm)
        if batch.needs_reset and batch.error:
            self.log.info("model: queue %d: %s: DEVICE_NEEDS_RESET", q, batch.error)
        if not batch.completions:
            return 0
        # The model writes each request's data and status, then its used element, then
        # used->idx: its writes split into requests at the used element writes.
        elems = (queue.device + 4, 8 * queue.size)
        spans = self._ring_spans(queue)
        groups, current = [], []
        for addr, data in mm.writes:
            if elems[0] <= addr < elems[0] + elems[1]:
                groups.append(current)
                current = []
            elif not any(lo <= addr < lo + n for lo, n in spans):
                current.append((addr, data))
        now = self.now()
        for c, writes in zip(batch.completions, groups):
            self._pending[q].append((c, writes, now))
        return len(batch.completions)

    def serve_all(self):
        for q, queue in enumerate(self.model.queues):
            if queue.enable:
                self.serve(q)

    def before_write(self, addr, data, enabled):
        """The DUT writes ``data`` at guest-physical ``addr`` (``enabled(i)``: byte ``i`` is
        written); called before the write reaches guest memory."""
        self._follow_reset()
        for q, queue in enumerate(self.model.queues):
            if not queue.enable:
                continue
            idx_addr = queue.device + 2
            i = idx_addr - addr
            if 0 <= i and i + 2 <= len(data) and enabled(i) and enabled(i + 1):
                self._announce(q, queue, struct.unpack_from("<H", data, i)[0])

    def _announce(self, q, queue, new):
        n = (new - self._announced[q]) & U16
        if n > queue.size:
            self.mismatches += 1
            self.error(f"queue {q}: the DUT wrote used->idx {new}, {n} past {self._announced[q]}"
                       f" (more than the queue size)")
            self._announced[q] = new
            return
        if len(self._pending[q]) < n:
            self.serve(q)
        for k in range(n):
            slot = (self._announced[q] + k) % queue.size
            elem = self.memory.read(queue.device + 4 + 8 * slot, 8)
            head, used_len = struct.unpack("<II", elem)
            self.compared += 1
            self.per_queue[q] += 1
            if not self._pending[q]:
                self.mismatches += 1
                avail = self._u16(queue.driver + 2)
                self.error(f"queue {q}: the DUT completed head {head} (used->idx {new}), the "
                           f"model has no request to complete (model: device_status "
                           f"{self.model.device_status:#04x}, queue enable {queue.enable} "
                           f"size {queue.size}, last_avail_idx "
                           f"{self.model.blk.rings[q].last_avail_idx}; avail->idx {avail})")
                continue
            c, writes, served_at = self._pending[q].pop(0)
            self.latencies.append(self.now() - served_at)
            problems = []
            if head != c.head:
                problems.append(f"head {head}, model {c.head}")
            if used_len != c.used_len:
                problems.append(f"used len {used_len}, model {c.used_len}")
            for addr, want in writes:
                got = self.memory.read(addr, len(want))
                if got != want:
                    j = next(i for i in range(len(want)) if got[i] != want[i])
                    what = "status" if len(want) == 1 else "data"
                    problems.append(f"{what} at {addr + j:#x} differs: {got[j:j + 8].hex()}, "
                                    f"model {want[j:j + 8].hex()} (model status {c.status})")
                    break
            if problems:
                self.mismatches += 1
                self.error(f"queue {q} used->idx {(self._announced[q] + k + 1) & U16}: "
                           f"request op {c.op} sector {c.sector}: " + "; ".join(problems))
        self._announced[q] = new

    def describe(self):
        """One line per enabled queue: the ring indices in guest memory and the device's and
        the model's view, for a run that stopped moving."""
        out = []
        for q, queue in enumerate(self.model.queues):
            if not queue.enable:
                continue
            size = queue.size
            try:
                u16 = self._u16
                ring = (f"avail flags {u16(queue.driver):#x} idx {u16(queue.driver + 2)} "
                        f"used_event {u16(queue.driver + 4 + 2 * size)}; used flags "
                        f"{u16(queue.device):#x} idx {u16(queue.device + 2)} avail_event "
                        f"{u16(queue.device + 4 + 8 * size)}")
            except Exception as e:      # the rings are guest memory that may be gone
                ring = f"rings unreadable: {e}"
            notified = sum(1 for d in self.model.doorbells if d[0] == q)
            out.append(f"queue {q} (size {size}): {ring}; the DUT announced "
                       f"{self._announced[q]}; model last_avail_idx "
                       f"{self.model.blk.rings[q].last_avail_idx}, {len(self._pending[q])} "
                       f"pending; {notified} notifications")
        return out

    def outstanding(self):
        """The enabled queues whose ``avail->idx`` in guest memory is not their ``used->idx``:
        requests the guest made available and the device has not completed."""
        out = []
        for q, queue in enumerate(self.model.queues):
            if not queue.enable:
                continue
            try:
                avail, used = self._u16(queue.driver + 2), self._u16(queue.device + 2)
            except Exception:
                continue
            if avail != used:
                out.append(q)
        return out

    def finish(self, image):
        """After the run: every request announced was compared; ``image`` (the back-end's
        disk, bytes) against the model's. Returns a list of problems."""
        problems = []
        disk = self.model.blk.disk
        if bytes(image) != bytes(disk):
            k = next(i for i in range(min(len(disk), len(image))) if image[i] != disk[i]) \
                if len(image) == len(disk) else 0
            problems.append(f"the disk differs from the model's at byte {k} "
                            f"(sector {k // 512})")
        left = sum(len(p) for p in self._pending)
        if left:
            self.log.info("model: %d requests served that the DUT never announced (the guest "
                          "powered off with them in flight, or the model served ahead)", left)
        return problems
