# Ref: OASIS virtio 1.2, sections 5.2.5 (the cache mode) and 5.2.6 (device operation: read, write,
#      flush, discard, write zeroes; when a write is stable)
"""The storage back-end of the cocotb testbench: a disk image in Python behind the DUT's
storage port.

:class:`StorageBackend` plays the part :class:`rtl.ramdisk.RamDisk` plays in hardware, with the
same semantics (see :mod:`rtl.storage` for the protocol), on a ``bytearray`` or a disk image
file, with optional random stalls on all four streams, per-operation counters and injected
faults. Bit positions of the packed payloads come from the RTL's own layouts.

Unlike the RAM disk it has a volatile write cache, used when the port's ``writeback`` level
asks for one [VIRTIO-1.2 5.2.5]: then a completed write may exist only in the cache until the
next ``FLUSH`` (or an eviction) makes it durable, and :meth:`StorageBackend.power_loss` throws
away what is not durable yet. ``image`` is the disk as reads see it; ``durable`` is what a
power loss leaves.
"""

import logging
import os
import random

from amaranth.lib import data

from .transactors import Wire, Feeder, Collector
from rtl.storage import (SECTOR_BYTES, StorageOp, StorageStatus, StorageCommand,
                         StorageCompletion, StorageData)


__all__ = ["StorageBackend"]


def _field(layout, name):
    """(offset, mask) of a field of a layout."""
    f = data.Layout.cast(layout)[name]
    return f.offset, (1 << f.width) - 1


class _Command:
    __slots__ = ("op", "name", "tag", "sector", "count", "ok", "beats", "data", "index",
                 "writeback")

    def __repr__(self):
        return f"{self.name} tag={self.tag} sector={self.sector} count={self.count}"


class StorageBackend:
    """Serves the DUT's storage port from a disk image, one command at a time, in order.

    * ``READ`` sends ``count * 4096 / data_width`` beats (``last`` on the final one), then the
      completion;
    * ``WRITE`` takes that many beats, then writes the bytes into the image and completes; the
      beats are counted from the command, their ``last`` bits must agree (an assertion);
    * ``FLUSH`` makes every sector of the cache durable, writes the durable sectors changed so
      far back to the image file, if there is one, and completes ``OK``; its ``sector`` and
      ``count`` are not looked at;
    * ``DISCARD`` and ``WRITE_ZEROES`` zero the range and complete;
    * a ``READ`` or ``WRITE`` of 0 sectors moves no beats and completes.

    The cache mode is taken with each command (``cache``: the port's ``writeback`` level, or a
    fixed mode). In writethrough mode a ``WRITE``, ``DISCARD`` or ``WRITE_ZEROES`` is durable
    before it completes [VIRTIO-1.2 5.2.6.2: stable once completed]; in writeback mode its
    sectors go into the volatile cache (``image`` shows them, ``durable`` does not) and become
    durable at the next ``FLUSH`` [VIRTIO-1.2 5.2.6.2: stable once a FLUSH sent after its
    completion has completed], or earlier: after each command, with probability
    ``evict_prob``, one cached sector is written back. A writethrough write to a cached sector
    takes it out of the cache; what was cached before a switch to writethrough still waits for
    a ``FLUSH``.

    A command past the end of the image (``sector + count > sectors``), with an ``op`` that is
    not a :class:`~rtl.storage.StorageOp`, or failed by :meth:`fail_next`, completes ``IOERR``
    and leaves the image as it was, but keeps the framing: a ``READ`` sends its beats (zeros),
    a ``WRITE`` takes its beats and drops them.

    Timing with ``stall_prob`` 0: one command at a time, the next taken once the previous
    one's completion is loaded; read beats from the second cycle after the command was taken,
    then one per cycle; write beats at one per cycle; the completion valid two cycles after
    the last write beat, or once the last read beat has gone. Completions wait in a queue, so
    the next command starts while the previous completion waits to be taken. With
    ``stall_prob`` p, ``cmd.ready`` and ``wdata.ready`` are low in a cycle with probability
    p, and each ``rdata`` beat and completion is preceded by an idle cycle with probability p
    (repeatedly); the harness's LFSRs draw them, seeded from ``rng``.

    The port's streams go through the simulation harness's transactors (:mod:`tb.harness`):
    the back-end takes each command and each chunk of write data when the harness publishes
    it, and hands read data and completions to it a chunk at a time; Python works per
    command and per chunk, not per beat.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel, with the storage port's transactors (:class:`tb.harness.SimHarness` or
        :class:`tb.harness.StorageHarness`): ``<prefix>__{cmd,wdata}__*`` collectors,
        ``<prefix>__{rdata,cpl}__*`` feeders, and ``<prefix>__writeback``.
    image : bytearray or str or os.PathLike
        The disk: a ``bytearray`` used in place, or the path of an image file, read in and
        written back by ``FLUSH`` and :meth:`close`. Its size is one or more whole sectors.
    prefix : str
        Name of the storage port's transactors in the toplevel.
    data_width : int
        Width of the data streams in bits; a divisor of 4096, at least 8.
    stall_prob : float
        Probability of a stall on each stream in each cycle, 0 to below 1.
    rng : random.Random
        Source of the stalls, so a seed replays them.
    log : logging.Logger
        Where to log a line per command (DEBUG); by default ``cocotb.<prefix>``.
    cache : str
        ``"port"``: follow the toplevel's ``<prefix>__writeback`` (1 writeback, anything else
        writethrough), or writethrough if it has none; ``"writeback"`` or ``"writethrough"``:
        that mode whatever the port says.
    evict_prob : float
        In writeback mode, the probability that one cached sector is written back after a
        command, 0 to 1.

    Attributes
    ----------
    image : bytearray
        The disk contents, as reads see them: the durable sectors with the cache over them.
    durable : bytearray
        What would be left after a power loss: the medium. Equal to ``image`` outside
        :attr:`volatile`.
    sectors : int
        Capacity in 512-byte sectors.
    counts : dict
        Commands completed, by op name (``"READ"`` ... ``"WRITE_ZEROES"``, ``"INVALID"``).
    errors : int
        Commands completed ``IOERR``.
    bytes_read, bytes_written : int
        Bytes moved by ``READ`` and ``WRITE`` commands that completed ``OK``.
    commands : list
        ``(op name, tag, sector, count, status)`` of every command completed, in order.
    cached : int
        Write commands (``WRITE``, ``DISCARD``, ``WRITE_ZEROES``) completed ``OK`` into the
        cache, in writeback mode.
    evicted : int
        Cached sectors written back before a ``FLUSH``.
    lost : int
        Cached sectors thrown away by :meth:`power_loss`.

    Raises
    ------
    ValueError
        If ``data_width``, ``stall_prob``, ``evict_prob``, ``cache`` or the image size is out
        of range, or the transactors' data ports do not fit the layouts' beats.
    TypeError
        If ``image`` is neither a ``bytearray`` nor a path.
    """
    def __init__(self, dut, image, *, prefix="storage", data_width=64, stall_prob=0.0,
                 rng=None, log=None, cache="port", evict_prob=0.0):
        if not isinstance(data_width, int) or data_width < 8 or 4096 % data_width:
            raise ValueError(f"StorageBackend data_width must divide 4096 bits (one sector), "
                             f"not {data_width!r}")
        if not isinstance(stall_prob, (int, float)) or not 0 <= stall_prob < 1:
            raise ValueError(f"StorageBackend stall_prob must be at least 0 and below 1, "
                             f"not {stall_prob!r}")
        if cache not in ("port", "writeback", "writethrough"):
            raise ValueError(f"StorageBackend cache must be 'port', 'writeback' or "
                             f"'writethrough', not {cache!r}")
        if not isinstance(evict_prob, (int, float)) or not 0 <= evict_prob <= 1:
            raise ValueError(f"StorageBackend evict_prob must be between 0 and 1, "
                             f"not {evict_prob!r}")
        self._file = None
        if isinstance(image, bytearray):
            self.image = image
        elif isinstance(image, (str, os.PathLike)):
            self._file = open(image, "r+b")
            self.image = bytearray(self._file.read())
        else:
            raise TypeError(f"StorageBackend image must be a bytearray or a path, not "
                            f"{type(image).__name__}")
        if not self.image or len(self.image) % SECTOR_BYTES:
            if self._file is not None:
                self._file.close()
            raise ValueError(f"StorageBackend image must be one or more whole "
                             f"{SECTOR_BYTES}-byte sectors, not {len(self.image)} bytes")
        self.sectors = len(self.image) // SECTOR_BYTES
        self.data_width = data_width
        self.stall_prob = stall_prob
        self.rng = rng or random.Random(0)
        self.log = log or logging.getLogger(f"cocotb.{prefix}")
        self.counts = {op.name: 0 for op in StorageOp}
        self.counts["INVALID"] = 0
        self.errors = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.commands = []
        self.cache = cache
        self.evict_prob = evict_prob
        self.durable = bytearray(self.image)
        self.cached = 0
        self.evicted = 0
        self.lost = 0
        self._volatile = set()          # sectors whose image content is not durable yet
        self._faults = []               # [op or None, remaining], first match wins
        self._dirty = set()             # durable sectors changed since the last file write-back
        port_ = getattr(dut, f"{prefix}__writeback", None) \
            if cache == "port" and dut is not None else None
        self._writeback_port = Wire(port_) if port_ is not None else None

        # Packed payloads: fields from bit 0 in declaration order, as the layouts say.
        beat = StorageData(data_width)
        sizes = {name: data.Layout.cast(layout).size for name, layout in (
            ("cmd", StorageCommand), ("wdata", beat), ("rdata", beat),
            ("cpl", StorageCompletion))}
        for name, size in sizes.items():
            port = getattr(dut, f"{prefix}__{name}__data")
            if len(port) % size or (name in ("cmd", "cpl") and len(port) != size):
                raise ValueError(f"StorageBackend: {port._path} is {len(port)} bits, not "
                                 f"{'a' if name in ('cmd', 'cpl') else 'a whole number of'} "
                                 f"{size}-bit {'beat' if name in ('cmd', 'cpl') else 'beats'}")
        self._op, self._tag, self._sector, self._count = (
            _field(StorageCommand, n) for n in ("op", "tag", "sector", "count"))
        self._data, self._last = (_field(beat, n) for n in ("data", "last"))
        self._cpl_tag, self._cpl_status = (_field(StorageCompletion, n)
                                           for n in ("tag", "status"))
        self._beat_bytes = data_width // 8

        # The harness's transactors (tb/harness.py): commands and write data collected,
        # read data and completions fed, each with its own seeded stalls.
        def seed():
            return self.rng.randrange(1 << 32)
        self._current = None            # the command whose data is moving
        self._cmd = Collector(dut, f"{prefix}__cmd", sizes["cmd"], self._take_command,
                              stall_prob, seed())
        self._wdata = Collector(dut, f"{prefix}__wdata", sizes["wdata"], self._take_data,
                                stall_prob, seed(), accept=False)
        self._rdata = Feeder(dut, f"{prefix}__rdata", sizes["rdata"], stall_prob, seed())
        self._cpl = Feeder(dut, f"{prefix}__cpl", sizes["cpl"], stall_prob, seed())

    # -- the public interface --------------------------------------------------------------------

    def fail_next(self, op=None, count=1):
        """Make the next ``count`` commands (of ``op``, a :class:`~rtl.storage.StorageOp` or
        its name, or any op if None) complete ``IOERR``, keeping their framing; a failed
        ``WRITE`` leaves the image unchanged, a failed ``READ`` sends zeros."""
        if isinstance(op, str):
            op = StorageOp[op]
        if op is not None and not isinstance(op, StorageOp):
            raise ValueError(f"fail_next op must be a StorageOp, its name or None, not {op!r}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"fail_next count must be a positive integer, not {count!r}")
        self._faults.append([op, count])

    def close(self):
        """Stop serving, make the cache durable (an orderly shutdown), and write the image
        back to its file (if it came from one)."""
        for part in (self._cmd, self._wdata, self._rdata, self._cpl):
            part.stop()
        self._commit(self._volatile)
        if self._file is not None:
            self._write_back()
            self._file.close()
            self._file = None

    @property
    def writeback(self):
        """The cache mode the next command will be served in: True for writeback."""
        if self.cache != "port":
            return self.cache == "writeback"
        return self._writeback_port is not None and self._writeback_port.high()

    @property
    def volatile(self):
        """The sectors in the cache, not durable yet (sorted)."""
        return sorted(self._volatile)

    def power_loss(self):
        """The power fails: the cache is gone, and every sector it held reads its durable
        content again. Returns the sectors lost (sorted). The back-end is up again at once: a
        command in progress carries on and completes as if nothing happened (its data lands
        after the loss), so call this with the port idle for a clean cut."""
        lost = sorted(self._volatile)
        for s in lost:
            self.image[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES] = \
                self.durable[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES]
        self._volatile.clear()
        self.lost += len(lost)
        self.log.info("storage: power loss: %d cached sectors lost", len(lost))
        return lost

    # -- the command loop ------------------------------------------------------------------------

    def _decode(self, value):
        c = _Command()
        code = value >> self._op[0] & self._op[1]
        c.tag = value >> self._tag[0] & self._tag[1]
        c.sector = value >> self._sector[0] & self._sector[1]
        c.count = value >> self._count[0] & self._count[1]
        try:
            c.op = StorageOp(code)
            c.name = c.op.name
        except ValueError:
            c.op, c.name = None, "INVALID"
        if c.op is None:
            c.ok = False
        elif c.op == StorageOp.FLUSH:
            c.ok = True
        else:
            c.ok = c.sector + c.count <= self.sectors        # Python ints: nothing wraps
        for fault in self._faults:
            if fault[0] is None or fault[0] == c.op:
                c.ok = False
                fault[1] -= 1
                if not fault[1]:
                    self._faults.remove(fault)
                break
        c.beats = (c.count * SECTOR_BYTES // self._beat_bytes
                   if c.op in (StorageOp.READ, StorageOp.WRITE) else 0)
        c.index = 0
        c.data = []
        c.writeback = self.writeback
        return c

    def _start(self, c):
        """A command was taken: do what needs no data; True if it is complete already."""
        lo, hi = c.sector * SECTOR_BYTES, (c.sector + c.count) * SECTOR_BYTES
        if c.op == StorageOp.READ and c.beats:
            c.data = bytes(self.image[lo:hi]) if c.ok else bytes(hi - lo)
        elif c.op in (StorageOp.DISCARD, StorageOp.WRITE_ZEROES) and c.ok:
            # [VIRTIO-1.2 5.2.6.2] After write zeroes the sectors MUST read as zeroes; a
            # discard MAY deallocate them. The storage port asks zeros after both.
            self.image[lo:hi] = bytes(hi - lo)
            self._written(c)
        elif c.op == StorageOp.FLUSH and c.ok:
            # [VIRTIO-1.2 5.2.6.2] Every write completed before the FLUSH becomes stable.
            self._commit(self._volatile)
            self._write_back()
        return c.beats == 0

    def _finish(self, c):
        """The command's data has moved: apply a write, count it, queue its completion."""
        if c.op == StorageOp.WRITE and c.ok:
            lo = c.sector * SECTOR_BYTES
            self.image[lo:lo + len(c.data) * self._beat_bytes] = b"".join(
                d.to_bytes(self._beat_bytes, "little") for d in c.data)
            self._written(c)
        if self.evict_prob and self._volatile and self.rng.random() < self.evict_prob:
            # An early write-back, which a cache may do at any time.
            self._commit([self.rng.choice(sorted(self._volatile))])
            self.evicted += 1
        status = StorageStatus.OK if c.ok else StorageStatus.IOERR
        self.counts[c.name] += 1
        if not c.ok:
            self.errors += 1
        elif c.op == StorageOp.READ:
            self.bytes_read += c.count * SECTOR_BYTES
        elif c.op == StorageOp.WRITE:
            self.bytes_written += c.count * SECTOR_BYTES
        self.commands.append((c.name, c.tag, c.sector, c.count, status))
        self.log.debug("storage: %r -> %s", c, status.name)
        return (c.tag << self._cpl_tag[0]) | (status.value << self._cpl_status[0])

    def _written(self, c):
        """The image holds the new content of ``c``'s sectors: cache it, or make it durable
        now in writethrough mode."""
        sectors = range(c.sector, c.sector + c.count)
        if c.writeback:
            self._volatile.update(sectors)
            self.cached += 1
        else:
            self._commit(sectors)

    def _commit(self, sectors):
        """Make ``sectors`` durable: their image content goes to the medium."""
        for s in list(sectors):
            self.durable[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES] = \
                self.image[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES]
            self._volatile.discard(s)
            self._dirty.add(s)

    def _write_back(self):
        """Write the durable sectors changed since the last time to the image file."""
        if self._file is None:
            return
        for s in sorted(self._dirty):
            self._file.seek(s * SECTOR_BYTES)
            self._file.write(self.durable[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES])
        self._file.flush()
        self._dirty.clear()

    def _take_command(self, payloads):
        """The command collector published a command (it holds ``ready`` low from now on,
        until this one's data has moved)."""
        self._cmd.accept = False
        c = self._decode(payloads[0])
        if self._start(c):
            self._complete(c)
        elif c.op == StorageOp.READ:
            beats = [int.from_bytes(c.data[k * self._beat_bytes:(k + 1) * self._beat_bytes],
                                    "little") << self._data[0] |
                     int(k == c.beats - 1) << self._last[0] for k in range(c.beats)]
            self._rdata.send(beats)
            # [rtl.storage] All of a READ's beats before its completion: the completion is
            # loaded once the last beat is in the feeder, and the harness holds it back
            # until the read data has gone.
            self._rdata.then(lambda: self._complete(c))
        else:
            # A WRITE: its beats are taken from the next cycle on, and only its.
            self._current = c
            self._wdata.accept = True

    def _take_data(self, payloads):
        """The write data collector published a chunk of beats."""
        c = self._current
        if c is None or c.op != StorageOp.WRITE:
            raise AssertionError(f"{len(payloads)} wdata beats with no WRITE under way")
        for value in payloads:
            last = bool(value >> self._last[0] & 1)
            c.data.append(value >> self._data[0] & self._data[1])
            c.index += 1
            assert last == (c.index == c.beats), \
                f"wdata beat {c.index} of {c.beats} of {c!r}: last={last}"
        if c.index == c.beats:
            self._current = None
            self._wdata.accept = False
            self._complete(c)

    def _complete(self, c):
        """The command's data has moved: finish it, send its completion, take the next."""
        self._cpl.send([self._finish(c)])
        self._cmd.accept = True
