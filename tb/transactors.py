"""The testbench's side of the harness's transactors (:mod:`tb.harness`).

:class:`Feeder` queues beats for a :class:`tb.harness.StreamFeeder` and loads them a chunk at a
time, the next as soon as the feeder has taken the last; :class:`Collector` wakes at each chunk a
:class:`tb.harness.StreamCollector` publishes and hands its beats on. Python runs once per
chunk, not once per beat and cycle.

Both read and write the toplevel's signals through :class:`Wire`: reads of the simulator's
binary string straight into an ``int`` (cocotb 2.1's own ``handle.value`` builds a
``LogicArray`` first), writes through the handle, so that cocotb applies them where the
simulator needs them.
"""

import collections

import cocotb
from cocotb.triggers import Event, ReadWrite, ValueChange


__all__ = ["Wire", "Feeder", "Collector", "stall_threshold"]


class Wire:
    """Fast access to one signal of the toplevel.

    Parameters
    ----------
    handle : cocotb handle
        A packed signal (a port of the toplevel).
    """
    __slots__ = ("handle", "width", "_get")

    def __init__(self, handle):
        self.handle = handle
        self.width = len(handle)
        # cocotb's GPI object for the signal (cocotb 2.1): its binary-string read is what
        # ``handle.value`` parses into a LogicArray.
        self._get = handle._handle.get_signal_val_binstr

    def read(self):
        """The value as an unsigned ``int``; raises ``ValueError`` if any bit is X or Z."""
        return int(self._get(), 2)

    def read_or(self, default):
        """The value, or ``default`` if a bit is X or Z (a register not yet initialised)."""
        try:
            return int(self._get(), 2)
        except ValueError:
            return default

    def high(self):
        """A 1-bit signal is 1 (X or Z, before the first clock edge, count as 0)."""
        return self._get() == "1"

    def write(self, value):
        """Drive ``value``, an ``int`` from 0 to ``2**width - 1``."""
        self.handle.value = value

    @property
    def path(self):
        return self.handle._path


def stall_threshold(prob):
    """A probability as the transactors' ``threshold``: cycles per 65536."""
    if not 0 <= prob < 1:
        raise ValueError(f"stall probability must be at least 0 and below 1, not {prob!r}")
    return round(prob * 65536)


def _ports(dut, prefix, names):
    return [Wire(getattr(dut, f"{prefix}__{n}")) for n in names]


def _set_stalls(dut, prefix, prob, seed):
    """Set a transactor's stall generator: ``prob`` per cycle, its LFSR loaded with ``seed``
    at the next reset."""
    threshold, seed_port = _ports(dut, prefix, ("threshold", "seed"))
    threshold.write(stall_threshold(prob))
    seed_port.write(seed & 0xffffffff)


class Feeder:
    """Sends beats into the DUT through the harness's :class:`~tb.harness.StreamFeeder` at
    ``<prefix>__*``.

    Parameters
    ----------
    dut : cocotb handle
    prefix : str
        The feeder's port in the toplevel (``rx``, ``storage__rdata``, ...).
    width : int
        Bits per beat (the feeder's ``data`` holds ``chunk`` of them).
    idle_prob : float
        Probability of an idle cycle before each beat (drawn by the feeder's LFSR).
    seed : int
        The LFSR's seed; it is loaded while ``rst`` is high, so set it before a reset.

    Attributes
    ----------
    width, chunk : int
        Bits per beat, beats per load.
    """
    def __init__(self, dut, prefix, width, idle_prob=0.0, seed=1):
        self.data, self.count, self.toggle, self.taken, self.busy = _ports(
            dut, prefix, ("data", "count", "toggle", "taken", "busy"))
        _set_stalls(dut, prefix, idle_prob, seed)
        # Every input driven from the start; ``toggle`` as the feeder last took it (it keeps
        # that through resets, from one test of a simulation to the next): no load.
        self.data.write(0)
        self.count.write(0)
        self._toggle = self.taken.read_or(0)
        self.toggle.write(self._toggle)
        self.width = width
        self.chunk = self.data.width // width
        self._queue = collections.deque()     # chunks (lists of beats) and barrier callbacks
        self._work = Event()
        self._task = cocotb.start_soon(self._run())

    def send(self, beats):
        """Queue ``beats`` (``int`` payloads) to go out after those queued before."""
        for k in range(0, len(beats), self.chunk):
            self._queue.append(beats[k:k + self.chunk])
        self._work.set()

    def then(self, callback):
        """Call ``callback()`` once every beat queued so far has been loaded into the feeder
        (it is then on its way: nothing queued later goes before it)."""
        self._queue.append(callback)
        self._work.set()

    @property
    def pending(self):
        """Beats not yet sent (a chunk waiting to be loaded, or in the feeder's buffers, counts
        at least one)."""
        return (sum(len(c) for c in self._queue if not callable(c)) + self.busy.high() +
                (self.taken.read() != self._toggle))

    def stop(self):
        self._task.cancel()

    async def _run(self):
        taken_changes = ValueChange(self.taken.handle)
        while True:
            while not self._queue:
                self._work.clear()
                await self._work.wait()
            item = self._queue.popleft()
            if callable(item):
                item()
                continue
            # The last load must have been taken (``taken`` is a register: what it reads is
            # never ahead of or behind a write just made); the feeder takes this one as soon
            # as it has room.
            while self.taken.read() != self._toggle:
                await taken_changes
            width = self.width
            self.data.write(sum(b << width * i for i, b in enumerate(item)))
            self.count.write(len(item))
            self._toggle ^= 1
            self.toggle.write(self._toggle)


class Collector:
    """Takes beats out of the DUT through the harness's :class:`~tb.harness.StreamCollector`
    at ``<prefix>__*`` and passes each chunk to ``on_chunk(beats)`` in the time step the
    collector publishes it.

    Parameters
    ----------
    dut : cocotb handle
    prefix : str
    width : int
        Bits per beat.
    on_chunk : callable
    stall_prob : float
        Probability that ``ready`` is low in a cycle (drawn by the collector's LFSR).
    seed : int
        As for :class:`Feeder`.
    accept : bool
        ``ready`` may be high (see :attr:`accept`).
    """
    def __init__(self, dut, prefix, width, on_chunk, stall_prob=0.0, seed=1, accept=True):
        self.data, self.count, self.seq, self._accept = _ports(
            dut, prefix, ("data", "count", "seq", "accept"))
        _set_stalls(dut, prefix, stall_prob, seed)
        self.on_chunk = on_chunk
        self.width = width
        self.accepting = None
        self.accept = accept
        self._task = cocotb.start_soon(self._run())

    @property
    def accept(self):
        """While False, the collector holds ``ready`` low (from the next cycle on)."""
        return self.accepting

    @accept.setter
    def accept(self, value):
        value = bool(value)
        if value != self.accepting:
            self._accept.write(int(value))
            self.accepting = value

    def stop(self):
        self._task.cancel()

    async def _run(self):
        seen = self.seq.read_or(0)
        change = ValueChange(self.seq.handle)
        while True:
            await change
            # Icarus calls back as ``seq`` is updated, before ``count`` and ``data`` of the
            # same edge are: read them once the time step has settled.
            await ReadWrite()
            now = self.seq.read()
            if now == seen:
                continue
            if (now - seen) & 0xffff != 1:
                raise AssertionError(f"{self.seq.path}: {(now - seen) & 0xffff} chunks "
                                     f"published at once")
            seen = now
            n, value = self.count.read(), self.data.read()
            width = self.width
            mask = (1 << width) - 1
            # The chunk's beats are the top ``n`` of ``data``, the first lowest.
            first = self.data.width // width - n
            self.on_chunk([value >> width * (first + i) & mask for i in range(n)])
