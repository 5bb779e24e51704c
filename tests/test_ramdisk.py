# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the RAM disk: every command does to the disk what a bytearray
reference says, reads return what it holds, the framing follows the commands whatever the
outcome, completions come in order after their data, out-of-range commands change nothing, and
reads and writes run at one beat per cycle. Random commands, with and without random stalls on
all four streams.
"""

import random

import pytest
from amaranth.lib import data, wiring
from amaranth.sim import Simulator

from rtl.ramdisk import RamDisk
from rtl.storage import SECTOR_BYTES, StorageCommand, StorageOp, StorageStatus
from tb.seed import seed_from_env
from .sim_helpers import stream_put, stream_get_within


SECTORS = 64
OK, IOERR = StorageStatus.OK, StorageStatus.IOERR
BAD_OPS = (5, 6, 7)     # op codes that are not a StorageOp


class Command:
    def __init__(self, op, sector=0, count=0, tag=0, data=None):
        self.op, self.sector, self.count, self.tag = op, sector, count, tag
        self.data = data                # bytes of a WRITE

    @property
    def payload(self):
        if isinstance(self.op, StorageOp):
            return {"op": self.op, "tag": self.tag, "sector": self.sector, "count": self.count}
        # Not a StorageOp, so not a valid field value: build the bits by hand.
        layout = data.Layout.cast(StorageCommand)
        fields = {"op": self.op, "tag": self.tag, "sector": self.sector, "count": self.count}
        return layout.from_bits(sum(value << layout[name].offset
                                    for name, value in fields.items()))

    def __repr__(self):
        name = self.op.name if isinstance(self.op, StorageOp) else f"op{self.op}"
        return f"Command({name}, sector={self.sector}, count={self.count}, tag={self.tag})"


def beats_of(cmd, width):
    """Beats the command moves on wdata or rdata (by its framing, whatever its outcome)."""
    if cmd.op in (StorageOp.READ, StorageOp.WRITE):
        return cmd.count * SECTOR_BYTES * 8 // width
    return 0


def reference(cmds, sectors):
    """Run ``cmds`` on a bytearray: -> (expected (tag, status) list, expected bytes of each
    READ, by command index, and the final disk)."""
    disk = bytearray(sectors * SECTOR_BYTES)
    statuses, reads = [], {}
    for i, c in enumerate(cmds):
        lo, hi = c.sector * SECTOR_BYTES, (c.sector + c.count) * SECTOR_BYTES
        if c.op in BAD_OPS:
            ok = False
        elif c.op == StorageOp.FLUSH:
            ok = True
        else:
            ok = c.sector + c.count <= sectors     # Python ints: no wrap-round
        if c.op == StorageOp.READ:
            reads[i] = bytes(disk[lo:hi]) if ok else bytes(hi - lo)
        elif c.op == StorageOp.WRITE and ok:
            disk[lo:hi] = c.data
        elif c.op in (StorageOp.DISCARD, StorageOp.WRITE_ZEROES) and ok:
            disk[lo:hi] = bytes(hi - lo)
        statuses.append((c.tag, OK if ok else IOERR))
    return statuses, reads, disk


def random_command(rng, tag, sectors):
    op = rng.choices(list(StorageOp), weights=[4, 4, 1, 1, 1])[0]
    if rng.random() < 0.1:
        # Out of range: just past the end, or wrapping round 2**64 in a 64-bit sum.
        count = rng.randrange(1, 4)
        sector = rng.choice([sectors - count + 1, sectors, (1 << 64) - rng.randrange(1, 3)])
    else:
        count = rng.choice([0, 1, 1, 2, 3])
        sector = rng.randrange(sectors - count + 1)
    if op == StorageOp.FLUSH:
        sector = count = 0
    data = rng.randbytes(count * SECTOR_BYTES) if op == StorageOp.WRITE else None
    return Command(op, sector, count, tag, data)


def run(cmds, sectors=SECTORS, width=64, stall=0.0, idle=0.0, rng=None, tail=30,
        toggle_writeback=False):
    """Simulate ``cmds`` through a RamDisk; returns the transfers seen on the four streams, as
    (edge number, payload) lists, with a monitor that samples every handshake at the edge.
    ``toggle_writeback`` flips the cache mode level at random."""
    rng = rng or random.Random(0)
    dut = RamDisk(sectors, width)
    port = dut.storage
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = {"cmd": [], "wdata": [], "rdata": [], "cpl": []}
    n_beats = width // 8
    # Bounds on any wait, so a design that hangs fails instead of running forever: a few
    # cycles per beat or word of the whole run (zeroing counts when in range).
    budget = 200 + 10 * sum(beats_of(c, width) or
                            (c.count * SECTOR_BYTES * 8 // width if c.count <= sectors else 0)
                            for c in cmds)

    async def monitor(ctx):
        edge = 0
        streams = [(name, getattr(port, name)) for name in seen]
        signals = [s for _, st in streams for s in (st.valid, st.ready, st.payload)]
        while True:
            _, _, *values = await ctx.tick().sample(*signals)
            edge += 1
            for k, (name, _) in enumerate(streams):
                valid, ready, payload = values[3 * k:3 * k + 3]
                if valid and ready:
                    seen[name].append((edge, payload))

    async def commands(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for c in cmds:
            while local.random() < idle:
                await ctx.tick()
            await stream_put(ctx, port.cmd, c.payload)

    async def wdata(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for c in cmds:
            if c.op != StorageOp.WRITE:
                continue
            n = beats_of(c, width)
            for k in range(n):
                while local.random() < idle:
                    await ctx.tick()
                chunk = c.data[k * n_beats:(k + 1) * n_beats]
                await stream_put(ctx, port.wdata, {"data": int.from_bytes(chunk, "little"),
                                                   "last": int(k == n - 1)})

    async def rdata(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for c in cmds:
            if c.op != StorageOp.READ:
                continue
            for _ in range(beats_of(c, width)):
                while local.random() < stall:
                    await ctx.tick()
                await stream_get_within(ctx, port.rdata, budget)

    async def cpl(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for c in cmds:
            while local.random() < stall:
                await ctx.tick()
            await stream_get_within(ctx, port.cpl, budget)
        await ctx.tick().repeat(tail)
        assert not ctx.get(port.cpl.valid), "a completion too many"
        assert not ctx.get(port.rdata.valid), "rdata valid after the last completion"

    async def writeback(ctx):
        local = random.Random(rng.randrange(1 << 32))
        while True:
            ctx.set(port.writeback, local.random() < 0.5)
            for _ in range(local.randrange(1, 20)):
                await ctx.tick()

    sim.add_testbench(monitor, background=True)
    if toggle_writeback:
        sim.add_testbench(writeback, background=True)
    sim.add_testbench(commands)
    sim.add_testbench(wdata)
    sim.add_testbench(rdata)
    sim.add_testbench(cpl)
    sim.run()
    return seen


def check(cmds, seen, sectors=SECTORS, width=64):
    """Everything the RAM disk promises about one run, against the bytearray reference."""
    statuses, reads, _ = reference(cmds, sectors)
    n_bytes = width // 8
    assert len(seen["cmd"]) == len(cmds)
    got = [(p.tag, p.status) for _, p in seen["cpl"]]
    assert got == statuses, "completions differ from the reference"
    assert len(seen["wdata"]) == sum(beats_of(c, width) for c in cmds
                                      if c.op == StorageOp.WRITE), "WRITE beats not all taken"
    assert len(seen["rdata"]) == sum(beats_of(c, width) for c in cmds
                                      if c.op == StorageOp.READ), "READ beats miscounted"
    rpos = wpos = 0
    for i, c in enumerate(cmds):
        cpl_edge = seen["cpl"][i][0]
        assert cpl_edge > seen["cmd"][i][0], f"completion of {c} before it was accepted"
        n = beats_of(c, width)
        if c.op == StorageOp.READ:
            beats = seen["rdata"][rpos:rpos + n]
            rpos += n
            assert [p.last for _, p in beats] == [int(k == n - 1) for k in range(n)], \
                f"last misplaced in the beats of {c}"
            data = b"".join(int(p.data).to_bytes(n_bytes, "little") for _, p in beats)
            assert data == reads[i], f"{c} read wrong data"
        elif c.op == StorageOp.WRITE:
            beats = seen["wdata"][wpos:wpos + n]
            wpos += n
        else:
            beats = []
        if beats:
            assert beats[0][0] > seen["cmd"][i][0], f"data of {c} before its command"
            assert beats[-1][0] < cpl_edge, f"completion of {c} before its last beat"


def readback(sectors, tag=255):
    return Command(StorageOp.READ, 0, sectors, tag)


@pytest.mark.parametrize("stalls", [False, True])
def test_random_commands(stalls):
    seed = seed_from_env()
    rng = random.Random(seed)
    cmds = [random_command(rng, tag, SECTORS) for tag in range(40)]
    cmds.append(readback(SECTORS))      # the whole disk, so every byte is checked at the end
    stall, idle = (0.3, 0.3) if stalls else (0.0, 0.0)
    seen = run(cmds, stall=stall, idle=idle, rng=rng)
    check(cmds, seen)


def test_writeback_level_is_ignored():
    """The port's cache mode level (``storage.writeback``) is an input the RAM disk does not
    look at: with it flipping at random, every command still does what the reference says
    (a RAM disk is writethrough whatever the driver chose [VIRTIO-1.2 5.2.5])."""
    port = RamDisk(SECTORS).signature.members["storage"]
    assert port.flow == wiring.In and "writeback" in port.signature.members
    rng = random.Random(seed_from_env())
    cmds = [random_command(rng, tag, SECTORS) for tag in range(40)]
    cmds.append(readback(SECTORS))
    seen = run(cmds, stall=0.2, idle=0.2, rng=rng, toggle_writeback=True)
    check(cmds, seen)


@pytest.mark.parametrize("width", [8, 32, 128, 512])
def test_other_widths(width):
    """The same semantics at other widths: sector = 4096 / width beats, bytes from lane 0."""
    rng = random.Random(seed_from_env())
    sectors = 8
    cmds = [random_command(rng, tag, sectors) for tag in range(8 if width > 8 else 4)]
    cmds.append(readback(sectors))
    seen = run(cmds, sectors=sectors, width=width, stall=0.2, idle=0.2, rng=rng)
    check(cmds, seen, sectors=sectors, width=width)


def test_lanes_and_order():
    """Bytes by hand, so the reference cannot share a misreading with the RAM disk: byte k of
    a sector is in lane k % 8 of beat k // 8, and sector s starts at byte 512 * s."""
    data = bytes(range(256)) * 4
    cmds = [Command(StorageOp.WRITE, 3, 2, 1, data),
            Command(StorageOp.READ, 4, 1, 2)]
    seen = run(cmds)
    check(cmds, seen)
    first = seen["rdata"][0][1]
    assert int(first.data) == 0x0706050403020100
    assert [(p.tag, p.status) for _, p in seen["cpl"]] == [(1, OK), (2, OK)]


def test_out_of_range():
    """Past the end (and wrapping round 2**64 in a 64-bit sum): IOERR, the framing kept (READ
    beats are zeros, WRITE beats are taken), and nothing written; count 0 at the very end is
    fine. Statuses by hand, not from the reference."""
    rng = random.Random(seed_from_env())
    top = (1 << 64) - 1
    pattern = rng.randbytes(SECTORS * SECTOR_BYTES)
    cmds = [
        Command(StorageOp.WRITE, 0, SECTORS, 1, pattern),
        Command(StorageOp.WRITE, SECTORS - 2, 3, 2, rng.randbytes(3 * SECTOR_BYTES)),
        Command(StorageOp.WRITE, top, 2, 3, rng.randbytes(2 * SECTOR_BYTES)),   # wraps to 1
        Command(StorageOp.READ, SECTORS - 1, 2, 4),
        Command(StorageOp.READ, top - 1, 3, 5),                                  # wraps to 1
        Command(StorageOp.DISCARD, SECTORS - 4, 5, 6),
        Command(StorageOp.WRITE_ZEROES, top, 1, 7),                              # wraps to 0
        Command(StorageOp.DISCARD, 0, (1 << 32) - 1, 8),
        Command(StorageOp.WRITE_ZEROES, top, (1 << 32) - 1, 9),
        Command(StorageOp.READ, SECTORS, 0, 10),
        Command(StorageOp.WRITE, SECTORS, 0, 11, b""),
        Command(StorageOp.READ, SECTORS + 1, 0, 12),
        Command(StorageOp.WRITE, top, 0, 13, b""),
        Command(5, 0, 1, 14),
        Command(7, 0, 0, 15),
        Command(StorageOp.FLUSH, 0, 0, 16),
        readback(SECTORS),
    ]
    seen = run(cmds, stall=0.2, idle=0.2, rng=rng)
    assert [(p.tag, p.status) for _, p in seen["cpl"]] == [
        (1, OK), (2, IOERR), (3, IOERR), (4, IOERR), (5, IOERR), (6, IOERR), (7, IOERR),
        (8, IOERR), (9, IOERR), (10, OK), (11, OK), (12, IOERR), (13, IOERR), (14, IOERR),
        (15, IOERR), (16, OK), (255, OK)]
    tail = seen["rdata"][-SECTORS * 64:]
    assert b"".join(int(p.data).to_bytes(8, "little") for _, p in tail) == pattern, \
        "an out-of-range command changed the disk"
    assert all(int(p.data) == 0 for _, p in seen["rdata"][:-SECTORS * 64]), \
        "out-of-range READ beats are not zeros"
    check(cmds, seen)


def throughput(cmds, width=64):
    seen = run(cmds, width=width)
    check(cmds, seen)
    start = seen["cmd"][0][0]
    name = "rdata" if cmds[0].op == StorageOp.READ else "wdata"
    beats, end = len(seen[name]), seen[name][-1][0]
    return beats, end - start


@pytest.mark.parametrize("op", [StorageOp.READ, StorageOp.WRITE])
def test_throughput(op):
    """A measurement: back-to-back commands of 1 to 4 sectors with no stalls move at least
    0.95 beats per cycle, from the edge that takes the first command to the last beat."""
    rng = random.Random(seed_from_env())
    cmds = []
    sector = 0
    for tag in range(12):
        count = rng.randrange(1, 5)
        data = rng.randbytes(count * SECTOR_BYTES) if op == StorageOp.WRITE else None
        cmds.append(Command(op, sector, count, tag, data))
        sector = (sector + count) % (SECTORS - 4)
    beats, cycles = throughput(cmds)
    rate = beats / cycles
    print(f"{op.name}: {beats} beats in {cycles} cycles = {rate:.3f} beats/cycle")
    assert rate >= 0.95, f"{op.name} at {rate:.3f} beats/cycle"


@pytest.mark.parametrize("sectors", [0, -1, 1.0, "64", True, None])
def test_rejects_sectors(sectors):
    with pytest.raises(ValueError,
                       match=rf"^RamDisk sectors must be a positive integer, not "
                             rf"{sectors!r}$".replace("(", r"\(").replace(")", r"\)")):
        RamDisk(sectors)


@pytest.mark.parametrize("width", [0, 4, 24, 48, 8192, "64"])
def test_rejects_data_width(width):
    with pytest.raises(ValueError, match=rf"^StorageSignature data_width must divide 4096 bits "
                                         rf"\(one sector\), not {width!r}$"):
        RamDisk(64, width)
