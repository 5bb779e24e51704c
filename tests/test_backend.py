"""Tests of the cocotb storage back-end (``tb/backend.py``).

The back-end is run on Icarus against :class:`tb.harness.StorageHarness`: the storage port's
transactors, which the back-end drives as it does in the system tests, with the device's side
of the port as the toplevel's ``dev__*`` ports, driven by an initiator coroutine in this file
at every clock edge (it samples the handshakes of the cycle that ended at the edge, then
drives the next). The
checks are the RAM disk's (the bytearray reference of ``tests/test_ramdisk.py``): random
commands with and without stalls on both sides, injected faults, an image file, full rate,
and the write cache: what is durable in each cache mode, FLUSH, eviction and power loss,
against a reference of the rules in :mod:`rtl.storage`.

``test_cocotb`` (pytest) builds and runs the cocotb tests below; the constructor checks run in
pytest directly.
"""

import os
import random
from pathlib import Path

import pytest
import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge
from amaranth.lib import data

from rtl.storage import (SECTOR_BYTES, StorageCommand, StorageCompletion, StorageData, StorageOp,
                         StorageStatus)
from tb.backend import StorageBackend
from tb.seed import seed_from_env
from .test_ramdisk import Command, beats_of, random_command, reference


ROOT = Path(__file__).resolve().parent.parent
TOPLEVEL = "storage_port"
WIDTH = 64
BUILD = ROOT / "build" / "sim" / "icarus" / "storage_backend"
OK, IOERR = StorageStatus.OK, StorageStatus.IOERR


# -- the pytest side ---------------------------------------------------------------------------

def harness_verilog():
    """The storage transactors, the device's side as ports (:class:`tb.harness.StorageHarness`)."""
    from rtl.build import write_verilog
    from tb.harness import StorageHarness
    return write_verilog(StorageHarness(WIDTH), TOPLEVEL, BUILD)


def test_cocotb():
    from cocotb_tools.runner import get_runner, get_results
    seed = seed_from_env()
    BUILD.mkdir(parents=True, exist_ok=True)
    source = harness_verilog()
    runner = get_runner("icarus")
    runner.build(sources=[source], hdl_toplevel=TOPLEVEL, build_dir=BUILD,
                 timescale=("1ns", "1ps"))
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "SEED": str(seed)}
    results = runner.test(test_module="tests.test_backend", hdl_toplevel=TOPLEVEL,
                          build_dir=BUILD, test_dir=BUILD, extra_env=env,
                          results_xml=str(BUILD / "results.xml"))
    tests, failed = get_results(results)
    assert tests > 0 and failed == 0, f"{failed} of {tests} cocotb tests failed"


class _FakeSignal:
    def __init__(self, path, width=1):
        self._path, self.width, self.value = path, width, 0

    def __len__(self):
        return self.width


class _FakeDut:
    def __init__(self, widths):
        for stream, width in widths.items():
            name = f"storage__{stream}__data"
            setattr(self, name, _FakeSignal(name, width))


@pytest.mark.parametrize("width", [0, 4, 24, 8192, "64"])
def test_rejects_data_width(width):
    with pytest.raises(ValueError, match=rf"^StorageBackend data_width must divide 4096 bits "
                                         rf"\(one sector\), not {width!r}$"):
        StorageBackend(None, bytearray(512), data_width=width)


@pytest.mark.parametrize("prob", [-0.1, 1, 1.5, "0"])
def test_rejects_stall_prob(prob):
    with pytest.raises(ValueError, match=rf"^StorageBackend stall_prob must be at least 0 and "
                                         rf"below 1, not {prob!r}$"):
        StorageBackend(None, bytearray(512), stall_prob=prob)


@pytest.mark.parametrize("size", [0, 1, 511, 513])
def test_rejects_image_size(size, tmp_path):
    with pytest.raises(ValueError, match=rf"^StorageBackend image must be one or more whole "
                                         rf"512-byte sectors, not {size} bytes$"):
        StorageBackend(None, bytearray(size))
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(size))
    with pytest.raises(ValueError, match=rf"not {size} bytes$"):
        StorageBackend(None, path)


@pytest.mark.parametrize("cache", ["WRITEBACK", None, 1])
def test_rejects_cache(cache):
    with pytest.raises(ValueError, match=rf"^StorageBackend cache must be 'port', 'writeback' "
                                         rf"or 'writethrough', not {cache!r}$"):
        StorageBackend(None, bytearray(512), cache=cache)


@pytest.mark.parametrize("prob", [-0.1, 1.5, "0"])
def test_rejects_evict_prob(prob):
    with pytest.raises(ValueError, match=rf"^StorageBackend evict_prob must be between 0 and 1, "
                                         rf"not {prob!r}$"):
        StorageBackend(None, bytearray(512), evict_prob=prob)


def test_rejects_image_type():
    with pytest.raises(TypeError, match=r"^StorageBackend image must be a bytearray or a path, "
                                        r"not bytes$"):
        StorageBackend(None, bytes(512))


def test_rejects_port_width():
    """A toplevel built for another width fails at once, not with garbled beats."""
    dut = _FakeDut({"cmd": 107, "wdata": 33 * 32, "rdata": 65 * 32, "cpl": 9})
    with pytest.raises(ValueError, match=r"^StorageBackend: storage__wdata__data is 1056 bits, "
                                         r"not a whole number of 65-bit beats$"):
        StorageBackend(dut, bytearray(512))


# -- the cocotb side ---------------------------------------------------------------------------

def _high(signal):
    return str(signal.value) == "1"


_CMD = data.Layout.cast(StorageCommand)
_BEAT = data.Layout.cast(StorageData(WIDTH))
_CPL = data.Layout.cast(StorageCompletion)


def _pack_cmd(c):
    p = c.payload
    return (p if isinstance(p, data.Const) else _CMD.const(p)).as_bits()


def _write_beats(c, width=WIDTH):
    n, per = beats_of(c, width), width // 8
    return [_BEAT.const({"data": int.from_bytes(c.data[k * per:(k + 1) * per], "little"),
                         "last": int(k == n - 1)}).as_bits() for k in range(n)]


class Initiator:
    """Drives the initiator half of the port: commands and write beats as fast as allowed
    (with an idle cycle before each with probability ``stall``), ``ready`` on rdata and cpl
    low with probability ``stall``. Records each transfer with its cycle number."""
    def __init__(self, dut, rng, stall=0.0):
        self.dut, self.rng, self.stall = dut, rng, stall
        self.cycle = 0
        for name in ("cmd__valid", "wdata__valid", "rdata__ready", "cpl__ready", "writeback"):
            getattr(dut, f"dev__{name}").value = 0
        dut.dev__cmd__payload.value = 0
        dut.dev__wdata__payload.value = 0

    def _go(self):
        return not (self.stall and self.rng.random() < self.stall)

    async def run(self, cmds, max_cycles=100_000):
        d = self.dut
        cmd_q = [_pack_cmd(c) for c in cmds]
        w_q = [b for c in cmds if c.op == StorageOp.WRITE for b in _write_beats(c)]
        seen = {"cmd": [], "wdata": [], "rdata": [], "cpl": []}
        cmd_v = w_v = r_r = c_r = False
        ci = wi = 0
        start = self.cycle
        while len(seen["cpl"]) < len(cmds):
            await RisingEdge(d.clk)
            self.cycle += 1
            assert self.cycle - start < max_cycles, \
                f"{len(seen['cpl'])} of {len(cmds)} completions after {max_cycles} cycles"
            if cmd_v and _high(d.dev__cmd__ready):
                cmd_v = False
                seen["cmd"].append((self.cycle, None))
            if w_v and _high(d.dev__wdata__ready):
                w_v = False
                seen["wdata"].append((self.cycle, None))
            if r_r and _high(d.dev__rdata__valid):
                seen["rdata"].append((self.cycle, _BEAT.from_bits(
                    d.dev__rdata__payload.value.to_unsigned())))
            if c_r and _high(d.dev__cpl__valid):
                seen["cpl"].append((self.cycle, _CPL.from_bits(
                    d.dev__cpl__payload.value.to_unsigned())))
            if not cmd_v and ci < len(cmd_q) and self._go():
                d.dev__cmd__payload.value = cmd_q[ci]
                cmd_v, ci = True, ci + 1
            if not w_v and wi < len(w_q) and self._go():
                d.dev__wdata__payload.value = w_q[wi]
                w_v, wi = True, wi + 1
            r_r, c_r = self._go(), self._go()
            d.dev__cmd__valid.value = int(cmd_v)
            d.dev__wdata__valid.value = int(w_v)
            d.dev__rdata__ready.value = int(r_r)
            d.dev__cpl__ready.value = int(c_r)
        # Nothing more may come: hold both ready high for a while and watch.
        d.dev__rdata__ready.value = 1
        d.dev__cpl__ready.value = 1
        for _ in range(20):
            await RisingEdge(d.clk)
            self.cycle += 1
            assert not _high(d.dev__rdata__valid), "rdata valid after the last completion"
            assert not _high(d.dev__cpl__valid), "a completion too many"
        d.dev__rdata__ready.value = 0
        d.dev__cpl__ready.value = 0
        assert ci == len(cmd_q) and not cmd_v, "commands not all taken"
        assert wi == len(w_q) and not w_v, "write beats not all taken"
        return seen


def check(cmds, seen, statuses, reads):
    """Statuses, framing, data and ordering of one batch, against expected ``statuses`` and
    ``reads`` (bytes of each READ by command index)."""
    got = [(p.tag, p.status) for _, p in seen["cpl"]]
    assert got == statuses, f"completions {got} != {statuses}"
    assert len(seen["rdata"]) == sum(beats_of(c, WIDTH) for c in cmds
                                     if c.op == StorageOp.READ), "READ beats miscounted"
    rpos = wpos = 0
    for i, c in enumerate(cmds):
        n = beats_of(c, WIDTH)
        cpl_cycle = seen["cpl"][i][0]
        assert cpl_cycle > seen["cmd"][i][0], f"completion of {c} before it was taken"
        if c.op == StorageOp.READ:
            beats = seen["rdata"][rpos:rpos + n]
            rpos += n
            assert [p.last for _, p in beats] == [int(k == n - 1) for k in range(n)], \
                f"last misplaced in the beats of {c}"
            got = b"".join(int(p.data).to_bytes(WIDTH // 8, "little") for _, p in beats)
            assert got == reads[i], f"{c} read wrong data"
        elif c.op == StorageOp.WRITE:
            beats = seen["wdata"][wpos:wpos + n]
            wpos += n
        else:
            beats = []
        if beats:
            assert beats[0][0] > seen["cmd"][i][0], f"data of {c} before its command"
            assert beats[-1][0] < cpl_cycle, f"completion of {c} before its last beat"


async def setup(dut, sectors, stall, rng, image=None, **kw):
    # Low first: what the test drives at this instant is in place before the first edge.
    Clock(dut.clk, 4, unit="ns").start(start_high=False)
    backend = StorageBackend(dut, image if image is not None else
                             bytearray(sectors * SECTOR_BYTES),
                             stall_prob=stall, rng=random.Random(rng.randrange(1 << 32)), **kw)
    initiator = Initiator(dut, random.Random(rng.randrange(1 << 32)), stall)
    # A reset empties the transactors and loads the seeds of their stalls.
    dut.rst.value = 1
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    return backend, initiator


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def random_commands(dut, stalls):
    """Random commands (in and out of range) and a final read of the whole disk, checked against
    the bytearray reference; the image and the counters agree with it too."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 16
    stall = 0.3 if stalls else 0.0
    backend, initiator = await setup(dut, sectors, stall, rng)
    cmds = [random_command(rng, tag, sectors) for tag in range(30)]
    cmds.append(Command(StorageOp.READ, 0, sectors, 255))
    statuses, reads, disk = reference(cmds, sectors)
    seen = await initiator.run(cmds)
    check(cmds, seen, statuses, reads)
    assert backend.image == disk
    done = [c for c, (_, s) in zip(cmds, statuses) if s == OK]
    for op in StorageOp:
        assert backend.counts[op.name] == sum(c.op == op for c in cmds), op.name
    assert backend.errors == len(cmds) - len(done)
    assert backend.bytes_read == sum(c.count for c in done if c.op == StorageOp.READ) * 512
    assert backend.bytes_written == sum(c.count for c in done if c.op == StorageOp.WRITE) * 512
    assert [(t, s) for _, t, _, _, s in backend.commands] == statuses


@cocotb.test()
async def faults(dut):
    """fail_next: the chosen commands complete IOERR, READ still sends (zero) beats, WRITE still
    takes its beats and changes nothing; the others are untouched. Statuses by hand."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 8
    backend, initiator = await setup(dut, sectors, 0.2, rng)
    p = rng.randbytes(4 * SECTOR_BYTES)
    q = rng.randbytes(SECTOR_BYTES)
    batch = [Command(StorageOp.WRITE, 0, 4, 1, p)]
    check(batch, await initiator.run(batch), [(1, OK)], {})

    backend.fail_next("WRITE")
    backend.fail_next(StorageOp.READ)
    batch = [Command(StorageOp.READ, 0, 4, 2), Command(StorageOp.WRITE, 1, 1, 3, q),
             Command(StorageOp.FLUSH, 0, 0, 4), Command(StorageOp.READ, 0, 4, 5),
             Command(StorageOp.WRITE, 1, 1, 6, q)]
    check(batch, await initiator.run(batch), [(2, IOERR), (3, IOERR), (4, OK), (5, OK), (6, OK)],
          {0: bytes(4 * SECTOR_BYTES), 3: p})
    p = p[:SECTOR_BYTES] + q + p[2 * SECTOR_BYTES:]

    backend.fail_next(None, 2)
    batch = [Command(StorageOp.DISCARD, 0, 1, 7), Command(StorageOp.FLUSH, 0, 0, 8),
             Command(StorageOp.READ, 0, 4, 9)]
    check(batch, await initiator.run(batch), [(7, IOERR), (8, IOERR), (9, OK)], {2: p})
    assert backend.image[:4 * SECTOR_BYTES] == p
    assert backend.errors == 4
    assert backend.counts == {"READ": 3, "WRITE": 3, "FLUSH": 2, "DISCARD": 1,
                              "WRITE_ZEROES": 0, "INVALID": 0}
    assert backend.bytes_written == 5 * SECTOR_BYTES
    assert backend.bytes_read == 8 * SECTOR_BYTES


@cocotb.test()
async def image_file(dut):
    """An image file: read in, written back by FLUSH (not before) and by close()."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 8
    path = BUILD / "disk.img"
    original = rng.randbytes(sectors * SECTOR_BYTES)
    path.write_bytes(original)
    backend, initiator = await setup(dut, sectors, 0.0, rng, image=path)
    r = rng.randbytes(SECTOR_BYTES)
    batch = [Command(StorageOp.READ, 0, sectors, 1), Command(StorageOp.WRITE, 2, 1, 2, r)]
    check(batch, await initiator.run(batch), [(1, OK), (2, OK)], {0: original})
    assert path.read_bytes() == original, "written back before FLUSH"
    batch = [Command(StorageOp.FLUSH, 0, 0, 3)]
    check(batch, await initiator.run(batch), [(3, OK)], {})
    expected = bytearray(original)
    expected[2 * SECTOR_BYTES:3 * SECTOR_BYTES] = r
    assert path.read_bytes() == expected, "FLUSH did not write the image back"
    batch = [Command(StorageOp.WRITE_ZEROES, 5, 2, 4)]
    check(batch, await initiator.run(batch), [(4, OK)], {})
    backend.close()
    expected[5 * SECTOR_BYTES:7 * SECTOR_BYTES] = bytes(2 * SECTOR_BYTES)
    assert path.read_bytes() == expected, "close() did not write the image back"


@cocotb.test()
async def full_rate(dut):
    """With no stalls, READ and WRITE move at least 0.95 beats per cycle, from the cycle the
    first command is taken to the last beat."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 16
    backend, initiator = await setup(dut, sectors, 0.0, rng)
    for op, name in ((StorageOp.WRITE, "wdata"), (StorageOp.READ, "rdata")):
        batch = [Command(op, 4 * k, 4, k, rng.randbytes(4 * SECTOR_BYTES)
                         if op == StorageOp.WRITE else None) for k in range(4)]
        seen = await initiator.run(batch)
        beats = len(seen[name])
        cycles = seen[name][-1][0] - seen["cmd"][0][0]
        dut._log.info(f"{op.name}: {beats} beats in {cycles} cycles = "
                      f"{beats / cycles:.3f} beats/cycle")
        assert beats / cycles >= 0.95, f"{op.name} at {beats / cycles:.3f} beats/cycle"


# -- the write cache ------------------------------------------------------------------------------

def _sector(buf, s):
    return bytes(buf[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES])


class CacheReference:
    """The rules of :mod:`rtl.storage` for the cache, on bytearrays: ``image`` (what reads see),
    ``durable`` (what a power loss leaves) and the set of cached sectors."""
    def __init__(self, sectors, image=None):
        self.image = bytearray(image) if image is not None else bytearray(sectors * SECTOR_BYTES)
        self.durable = bytearray(self.image)
        self.volatile = set()

    def apply(self, cmds, statuses, writeback):
        for c, (_, status) in zip(cmds, statuses):
            if status != OK:
                continue
            lo, hi = c.sector * SECTOR_BYTES, (c.sector + c.count) * SECTOR_BYTES
            if c.op == StorageOp.FLUSH:
                self.commit(self.volatile)
                continue
            if c.op == StorageOp.WRITE:
                self.image[lo:hi] = c.data
            elif c.op in (StorageOp.DISCARD, StorageOp.WRITE_ZEROES):
                self.image[lo:hi] = bytes(hi - lo)
            else:
                continue
            sectors = range(c.sector, c.sector + c.count)
            if writeback:
                self.volatile.update(sectors)
            else:
                self.commit(sectors)

    def commit(self, sectors):
        for s in list(sectors):
            self.durable[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES] = _sector(self.image, s)
            self.volatile.discard(s)

    def power_loss(self):
        lost = sorted(self.volatile)
        for s in lost:
            self.image[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES] = _sector(self.durable, s)
        self.volatile.clear()
        return lost


def check_cache(backend, ref, what):
    assert backend.volatile == sorted(ref.volatile), f"{what}: cached sectors differ"
    assert backend.image == ref.image, f"{what}: image differs"
    assert backend.durable == ref.durable, f"{what}: durable image differs"


@cocotb.test()
async def write_cache(dut):
    """The cache by hand: in writeback mode WRITE, DISCARD and WRITE_ZEROES are read back at
    once but are not durable until FLUSH; a power loss drops exactly the cached sectors; in
    writethrough mode each is durable when it completes and takes its sectors out of the
    cache, while older cached sectors stay cached; a failed WRITE caches nothing."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 8
    backend, initiator = await setup(dut, sectors, 0.0, rng)
    a, b, c = (rng.randbytes(2 * SECTOR_BYTES) for _ in range(3))
    zero2 = bytes(2 * SECTOR_BYTES)

    dut.dev__writeback.value = 1
    await RisingEdge(dut.clk)
    assert backend.writeback
    batch = [Command(StorageOp.WRITE, 0, 2, 1, a), Command(StorageOp.WRITE_ZEROES, 4, 1, 2),
             Command(StorageOp.READ, 0, 2, 3)]
    check(batch, await initiator.run(batch), [(1, OK), (2, OK), (3, OK)], {2: a})
    assert backend.volatile == [0, 1, 4]
    assert backend.durable == bytes(sectors * SECTOR_BYTES), "cached writes reached the medium"
    assert backend.cached == 2
    batch = [Command(StorageOp.FLUSH, 0, 0, 4)]
    check(batch, await initiator.run(batch), [(4, OK)], {})
    assert backend.volatile == [] and backend.durable == backend.image

    batch = [Command(StorageOp.WRITE, 2, 2, 5, b), Command(StorageOp.DISCARD, 0, 1, 6)]
    check(batch, await initiator.run(batch), [(5, OK), (6, OK)], {})
    assert backend.volatile == [0, 2, 3]
    backend.fail_next("WRITE")
    batch = [Command(StorageOp.WRITE, 6, 2, 7, c)]
    check(batch, await initiator.run(batch), [(7, IOERR)], {})
    assert backend.volatile == [0, 2, 3], "a failed WRITE was cached"
    assert backend.power_loss() == [0, 2, 3]
    assert backend.image[:4 * SECTOR_BYTES] == a + zero2, "power loss kept cached data"
    assert backend.image == backend.durable and backend.lost == 3

    dut.dev__writeback.value = 1
    batch = [Command(StorageOp.WRITE, 6, 2, 8, c)]
    check(batch, await initiator.run(batch), [(8, OK)], {})
    dut.dev__writeback.value = 0
    await RisingEdge(dut.clk)
    assert not backend.writeback
    batch = [Command(StorageOp.WRITE, 2, 2, 9, b), Command(StorageOp.WRITE, 7, 1, 10, a[:512])]
    check(batch, await initiator.run(batch), [(9, OK), (10, OK)], {})
    assert _sector(backend.durable, 2) == b[:512] and _sector(backend.durable, 7) == a[:512]
    assert backend.volatile == [6], "writethrough left its sectors cached, or flushed others"
    assert backend.power_loss() == [6]
    assert _sector(backend.image, 6) == bytes(SECTOR_BYTES)


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def write_cache_random(dut, stalls):
    """Random batches of commands, each in a random cache mode (the level set between
    batches), with random power losses between them: ``image``, ``durable`` and the cached
    sectors always agree with the reference; reads return what the reference image holds."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 16
    stall = 0.3 if stalls else 0.0
    backend, initiator = await setup(dut, sectors, stall, rng)
    ref = CacheReference(sectors)
    lost = 0
    for k in range(12):
        writeback = rng.random() < 0.7
        dut.dev__writeback.value = int(writeback)
        cmds = [random_command(rng, 10 * k + t, sectors) for t in range(10)]
        cmds.append(Command(StorageOp.READ, 0, sectors, 255))
        statuses, _, _ = reference(cmds, sectors)      # the statuses do not depend on data
        seen = await initiator.run(cmds)
        assert [(p.tag, p.status) for _, p in seen["cpl"]] == statuses
        ref.apply(cmds, statuses, writeback)
        whole = b"".join(int(p.data).to_bytes(WIDTH // 8, "little")
                         for _, p in seen["rdata"][-sectors * SECTOR_BYTES * 8 // WIDTH:])
        assert whole == ref.image, f"batch {k}: the final read differs from the reference"
        check_cache(backend, ref, f"batch {k}")
        if rng.random() < 0.3:
            assert backend.power_loss() == ref.power_loss()
            lost += 1
            check_cache(backend, ref, f"power loss after batch {k}")
    dut._log.info(f"12 batches, {lost} power losses, {backend.cached} writes cached, "
                  f"{backend.lost} sectors lost")


@cocotb.test()
async def eviction(dut):
    """``evict_prob`` 1: after every command one cached sector is written back early; the
    sector is then durable and no longer cached, and ``image`` does not change."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 8
    backend, initiator = await setup(dut, sectors, 0.0, rng, evict_prob=1.0)
    dut.dev__writeback.value = 1
    data = rng.randbytes(4 * SECTOR_BYTES)
    batch = [Command(StorageOp.WRITE, 0, 4, 1, data)]
    check(batch, await initiator.run(batch), [(1, OK)], {})
    assert len(backend.volatile) == 3 and backend.evicted == 1
    (s,) = set(range(4)) - set(backend.volatile)
    assert _sector(backend.durable, s) == data[s * SECTOR_BYTES:(s + 1) * SECTOR_BYTES]
    batch = [Command(StorageOp.READ, 0, 4, 2)] * 3
    check(batch, await initiator.run(batch), [(2, OK)] * 3, {0: data, 1: data, 2: data})
    assert backend.volatile == [] and backend.evicted == 4 and backend.durable == backend.image


@cocotb.test()
async def fixed_cache_mode(dut):
    """``cache="writeback"`` caches whatever the port says; ``close()`` is an orderly
    shutdown that makes the cache durable."""
    rng = random.Random(seed_from_env(dut._log.info))
    sectors = 4
    backend, initiator = await setup(dut, sectors, 0.0, rng, cache="writeback")
    dut.dev__writeback.value = 0
    data = rng.randbytes(SECTOR_BYTES)
    batch = [Command(StorageOp.WRITE, 1, 1, 1, data)]
    check(batch, await initiator.run(batch), [(1, OK)], {})
    assert backend.volatile == [1]
    backend.close()
    assert backend.volatile == [] and _sector(backend.durable, 1) == data
