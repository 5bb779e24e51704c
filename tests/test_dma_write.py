# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the DMA write engine: every commanded byte reaches host memory
once, at its address, in well-formed Memory Write TLPs that respect Max_Payload_Size and 4 KB
boundaries; nothing else is written; one status per command, in order; Bus Master Enable clear
sends nothing. Random commands, every Max_Payload_Size, with and without random stalls.
"""

import random

import pytest
from amaranth.sim import Simulator

from rtl.dma_layouts import DMA_MAX_LENGTH, DmaError
from tb.seed import seed_from_env
from rtl.dma_write import DmaWriteEngine
from .sim_helpers import stream_put, stream_get_within, tlp_get, \
    dma_data_beats, parse_mem_req


REQUESTER_ID = 0x4218   # bus 0x42, device 3, function 0


def mps_bytes(code):
    """[PCIe-3.0 7.8.4] Max_Payload_Size; the engine treats the reserved codes as 128 bytes."""
    return 128 << code if code <= 5 else 128


class Command:
    def __init__(self, addr, length, tag, bme=True, data=None, rng=None):
        self.addr, self.length, self.tag, self.bme = addr, length, tag, bme
        self.data = data if data is not None else bytes(rng.randrange(256) for _ in range(length))

    @property
    def payload(self):
        return {"addr": self.addr, "length": self.length, "tag": self.tag}

    def __repr__(self):
        return f"Command(addr={self.addr:#x}, length={self.length}, tag={self.tag}, bme={self.bme})"


def random_command(rng, tag, bme_off=0.0, big=False):
    r = rng.random()
    if big:
        length = rng.choice([DMA_MAX_LENGTH, rng.randrange(9000, DMA_MAX_LENGTH + 1)])
    elif r < 0.3:
        length = rng.randrange(1, 17)
    else:
        length = rng.randrange(1, 9001)
    kind = rng.randrange(5)
    if kind == 0:       # anywhere in the 64-bit space
        addr = rng.randrange((1 << 64) - length + 1)
    elif kind == 1:     # below 4 GB
        addr = rng.randrange((1 << 32) - length + 1)
    elif kind == 2:     # just before a 4 KB boundary, low or high
        base = rng.choice([rng.randrange(1, 1 << 20), rng.randrange(1 << 20, 1 << 51)]) << 12
        addr = base - rng.randrange(0, 40)
    elif kind == 3:     # straddling 4 GB
        addr = (1 << 32) - rng.randrange(1, max(2, min(length, 9000)))
    else:               # at the top of the address space
        addr = (1 << 64) - length - rng.randrange(0, 16)
    return Command(addr, length, tag, bme=rng.random() >= bme_off, rng=rng)


def enabled_bytes(dws):
    """Bytes a Memory Write writes, from its Length and byte enables."""
    p = parse_mem_req(dws)
    n, ones = p["n_dw"], lambda be: bin(be).count("1")
    return ones(p["first_be"]) if n == 1 else ones(p["first_be"]) + 4 * (n - 2) + ones(p["last_be"])


async def take_tlps(ctx, port, tlps, total, rng, stall):
    """Take TLPs from ``port`` into ``tlps`` until they have written ``total`` bytes, then stop
    taking (so anything more stays valid on ``port``, for the caller to see)."""
    written = 0
    while written < total:
        tlps.append(await tlp_get(ctx, port, rng, stall))
        written += enabled_bytes(tlps[-1])


def run(cmds, mps=1, stall=0.0, idle=0.0, rng=None, tail=40, garbage=True):
    """Simulate ``cmds`` through a DmaWriteEngine; returns the TLPs (DW lists), statuses and,
    for each status, the number of TLPs the link had taken when it arrived."""
    rng = rng or random.Random(0)
    dut = DmaWriteEngine(64)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    tlps, statuses, marks = [], [], []
    data_done = []

    async def commands(ctx):
        local = random.Random(rng.randrange(1 << 32))
        ctx.set(dut.max_payload_size, mps)
        ctx.set(dut.requester_id, REQUESTER_ID)
        for i, c in enumerate(cmds):
            while local.random() < idle:
                await ctx.tick()
            # Bus Master Enable is sampled before every TLP: it changes for this command only
            # once the previous one has ended (its status is out). The engine takes no command
            # before that anyway; a change during a command is test_bus_master_cleared_mid_command.
            while len(statuses) < i:
                await ctx.tick()
            ctx.set(dut.bus_master, c.bme)
            await stream_put(ctx, dut.cmd, c.payload)

    async def data(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for c in cmds:
            for beat in dma_data_beats(c.data):
                if garbage and beat["keep"] != 0xff:
                    # Lanes past the end carry junk: the engine must not send it.
                    n = beat["keep"].bit_length()
                    beat["data"] |= local.randrange(1 << 64) >> 8 * n << 8 * n
                while local.random() < idle:
                    await ctx.tick()
                await stream_put(ctx, dut.data, beat)
        data_done.append(True)

    async def link(ctx):
        local = random.Random(rng.randrange(1 << 32))
        await take_tlps(ctx, dut.tx, tlps, sum(c.length for c in cmds if c.bme), local, stall)

    async def status(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for c in cmds:
            while local.random() < stall:
                await ctx.tick()
            # A generous bound (the engine needs about 1 cycle per 8 bytes): fail, not hang.
            s = await stream_get_within(ctx, dut.status, 1000 + 3 * c.length)
            statuses.append((s.tag, s.error))
            marks.append(len(tlps))
        await ctx.tick().repeat(tail)
        assert not ctx.get(dut.tx.valid), "tx valid after the last status"
        assert not ctx.get(dut.status.valid), "a status too many"

    sim.add_testbench(commands)
    sim.add_testbench(data, background=True)   # if it is not drained, `data_done` says so
    sim.add_testbench(link, background=True)
    sim.add_testbench(status)
    sim.run()
    assert data_done, "the data stream was not drained"
    return tlps, statuses, marks


def check_tlp(p, mps):
    """Header checks of one parsed Memory Write; returns {address: byte} of its enabled bytes."""
    n = p["n_dw"]
    assert p["type"] == 0b00000, f"Type {p['type']:#07b} is not a memory request"
    # [PCIe-3.0 2.2.4.1] 3 DW header below 4 GB, 4 DW header at or above.
    four = p["addr"] >= 1 << 32
    assert p["fmt"] == (0b011 if four else 0b010), \
        f"Fmt {p['fmt']:#05b} for address {p['addr']:#x}"
    assert (p["tc"], p["attr"], p["attr2"], p["th"], p["td"], p["ep"], p["at"]) == \
        (0, 0, 0, 0, 0, 0, 0), f"TC/Attr/TH/TD/EP/AT not zero: {p}"
    assert p["addr_rsvd"] == 0, "address bits 1:0 (reserved) not zero"
    assert p["requester_id"] == REQUESTER_ID
    assert p["tag"] == 0
    assert len(p["data"]) == n, f"Length {n} DW but {len(p['data'])} payload DWs"
    # [PCIe-3.0 2.2.2] payload at most Max_Payload_Size.
    assert 4 * n <= mps, f"{4 * n} byte payload with Max_Payload_Size {mps}"
    # [PCIe-3.0 2.2.7] no request crosses a 4 KB boundary.
    assert p["addr"] >> 12 == (p["addr"] + 4 * n - 1) >> 12, \
        f"{p['addr']:#x} + {4 * n} crosses a 4 KB boundary"
    # [PCIe-3.0 2.2.5] byte enables: one contiguous range, Last BE 0 for a 1 DW request.
    fbe, lbe = p["first_be"], p["last_be"]
    if n == 1:
        assert lbe == 0, f"Last BE {lbe:#06b} in a 1 DW request"
        assert fbe in (0b0001, 0b0010, 0b0100, 0b1000, 0b0011, 0b0110, 0b1100, 0b0111, 0b1110,
                       0b1111), f"First BE {fbe:#06b} is empty or not contiguous"
    else:
        assert fbe in (0b1111, 0b1110, 0b1100, 0b1000), f"First BE {fbe:#06b} not contiguous"
        assert lbe in (0b0001, 0b0011, 0b0111, 0b1111), f"Last BE {lbe:#06b} not contiguous"
    written = {}
    for i, dw in enumerate(p["data"]):
        be = fbe if i == 0 else lbe if i == n - 1 else 0xf
        for j in range(4):
            if be >> j & 1:
                written[p["addr"] + 4 * i + j] = dw >> 8 * j & 0xff
    return written


def check(cmds, tlps, statuses, marks, mps):
    """Everything the engine promises about one run."""
    mps = mps_bytes(mps)
    memory, expected = {}, {}
    for c in cmds:
        if c.bme:
            expected.update({c.addr + k: b for k, b in enumerate(c.data)})
    active = [c for c in cmds if c.bme and c.length]
    done_at = {}        # command index in `active` -> number of TLPs once it is complete
    ci, pos = 0, 0
    for t, dws in enumerate(tlps):
        p = parse_mem_req(dws)
        written = check_tlp(p, mps)
        assert ci < len(active), f"TLP {t} ({p['addr']:#x}) after every command was done"
        c = active[ci]
        start, end = min(written), max(written) + 1
        assert end - start == len(written)
        assert start == c.addr + pos, \
            f"TLP {t} starts at {start:#x}, expected {c.addr + pos:#x} for {c}"
        assert bytes(written[a] for a in range(start, end)) == \
            c.data[pos:pos + end - start], f"TLP {t} data differs from {c}"
        # Split like a DMA engine: TLPs end on an MPS boundary, or at the end of the command.
        assert end % mps == 0 or end == c.addr + c.length, \
            f"TLP {t} ends at {end:#x}, not at a {mps} byte boundary nor the end of {c}"
        memory.update(written)
        pos += end - start
        if pos == c.length:
            done_at[id(c)] = t + 1
            ci, pos = ci + 1, 0
    assert ci == len(active), f"{len(active) - ci} commands not (completely) sent"
    assert memory.keys() == expected.keys(), "bytes written outside the commanded ranges"
    assert memory == expected
    want = [(c.tag, DmaError.OK if c.bme or not c.length else DmaError.BUS_MASTER_DISABLED)
            for c in cmds]
    assert statuses == want
    for c, mark in zip(cmds, marks):
        if id(c) in done_at:
            assert mark >= done_at[id(c)], f"status of {c} before its last TLP"


@pytest.mark.parametrize("stalls", [False, True])
@pytest.mark.parametrize("mps", range(8))
def test_random_writes(mps, stalls):
    rng = random.Random(seed_from_env())
    # One large command per run (up to 64 KiB) keeps the run time predictable.
    big = rng.randrange(12)
    cmds = [random_command(rng, tag, bme_off=0.1, big=tag == big) for tag in range(12)]
    stall, idle = (0.3, 0.3) if stalls else (0.0, 0.0)
    tlps, statuses, marks = run(cmds, mps, stall, idle, rng)
    check(cmds, tlps, statuses, marks, mps)


def test_known_tlps():
    """TLPs worked out by hand from the spec figures, so the checks above cannot share a
    misreading with the engine: DW0/DW1 fields, BE bit order, address DWs, payload lanes."""
    cmds = [Command(0x1003, 1, 1, data=b"\xab"),
            Command(0x1_0000_0002, 5, 2, data=bytes(range(0x11, 0x16))),
            Command(0xffc, 8, 3, data=bytes(range(0x21, 0x29)))]
    tlps, statuses, marks = run(cmds, 0, garbage=False)
    # (The engine sends zeros in disabled byte lanes; the spec would allow anything there.)
    assert [[f"{dw:08x}" for dw in dws] for dws in tlps] == [
        # MWr32, Length 1; RID 4218, tag 0, Last BE 0000, First BE 1000; address; byte in lane 3
        ["40000001", "42180008", "00001000", "ab000000"],
        # MWr64, Length 2; Last BE 0111, First BE 1100; address 63:32, 31:2; bytes from lane 2
        ["60000002", "4218007c", "00000001", "00000000", "12110000", "00151413"],
        # 8 bytes across 4 KB (and MPS 128): two 1 DW writes
        ["40000001", "4218000f", "00000ffc", "24232221"],
        ["40000001", "4218000f", "00001000", "28272625"],
    ]
    check(cmds, tlps, statuses, marks, 0)


@pytest.mark.parametrize("mps", [0, 5])
def test_edge_cases(mps):
    """Every length 1 to 9 at every alignment, around 4 KB, across 4 GB and at the very top."""
    rng = random.Random(seed_from_env())
    cmds = []
    for base in (0x1000 - 8, (1 << 32) - 8, (1 << 40) + 0xff8, (1 << 64) - 24):
        for off in range(8):
            for length in range(1, 10):
                cmds.append(Command(base + off, length, len(cmds) % 256, rng=rng))
    cmds += [Command((1 << 32) - 3, 9000, 1, rng=rng),
             Command((1 << 64) - DMA_MAX_LENGTH, DMA_MAX_LENGTH, 2, rng=rng)]
    tlps, statuses, marks = run(cmds, mps, 0.2, 0.2, rng)
    check(cmds, tlps, statuses, marks, mps)


def test_bus_master_disabled_sends_nothing():
    """[PCI-3.0 6.2.2] With Bus Master Enable clear: no TLP, data taken, BUS_MASTER_DISABLED.
    A command with it set afterwards still finds its own data at the start of the stream."""
    rng = random.Random(seed_from_env())
    cmds = [Command(rng.randrange(1 << 64 - 8), rng.choice([1, 7, 8, 9, 100, 4096, 9000]), tag,
                    bme=False, rng=rng) for tag in range(8)]
    tlps, statuses, marks = run(cmds, 1, 0.3, 0.3, rng)
    assert tlps == []
    assert statuses == [(c.tag, DmaError.BUS_MASTER_DISABLED) for c in cmds]

    cmds.append(Command(0x2003, 300, 99, rng=rng))
    tlps, statuses, marks = run(cmds, 1, 0.3, 0.3, rng)
    check(cmds, tlps, statuses, marks, 1)


def test_bus_master_cleared_mid_command():
    """[PCI-3.0 6.2.2] Bus Master Enable cleared while a command is being sent (software or a
    Function Level Reset): the TLP under way ends whole, no further TLP goes out, the rest of
    the data is taken and dropped, the status is BUS_MASTER_DISABLED; the next command (with
    it set again) finds its own data at the start of the stream."""
    rng = random.Random(seed_from_env())
    first = Command(0x10000, 4096, 1, rng=rng)
    second = Command(0x20004, 300, 2, rng=rng)
    dut = DmaWriteEngine(64)
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    tlps, statuses = [], []

    async def bench(ctx):
        ctx.set(dut.max_payload_size, 0)        # 128-byte TLPs: 32 of them for 4096 bytes
        ctx.set(dut.requester_id, REQUESTER_ID)
        ctx.set(dut.bus_master, 1)
        await stream_put(ctx, dut.cmd, first.payload)
        # Two TLPs out: the third was committed as the second ended. Clear BME now.
        local = random.Random(rng.randrange(1 << 32))
        tlps.append(await tlp_get(ctx, dut.tx, local, 0.0))
        tlps.append(await tlp_get(ctx, dut.tx, local, 0.0))
        # The link stalls meanwhile, so the engine's buffer fills up: dropping the rest must
        # not wait for room in it (it did: FLR with a full buffer hung the request engine).
        await ctx.tick().repeat(40)
        ctx.set(dut.bus_master, 0)
        # The one under way goes out whole, slowly: the data keeps the buffer full.
        tlps.append(await tlp_get(ctx, dut.tx, local, 0.8))
        s = await stream_get_within(ctx, dut.status, 2000)
        statuses.append((s.tag, s.error))
        assert not ctx.get(dut.tx.valid), "a TLP after Bus Master Enable went clear"
        ctx.set(dut.bus_master, 1)
        await stream_put(ctx, dut.cmd, second.payload)
        while enabled_bytes_total(tlps[3:]) < second.length:
            tlps.append(await tlp_get(ctx, dut.tx, local, 0.0))
        s = await stream_get_within(ctx, dut.status, 2000)
        statuses.append((s.tag, s.error))

    async def data(ctx):
        for c in (first, second):
            for beat in dma_data_beats(c.data):
                await stream_put(ctx, dut.data, beat)

    sim.add_testbench(bench)
    sim.add_testbench(data, background=True)
    sim.run()
    assert statuses == [(1, DmaError.BUS_MASTER_DISABLED), (2, DmaError.OK)]
    assert [parse_mem_req(t)["n_dw"] for t in tlps[:3]] == [32, 32, 32]
    assert written(tlps[:3]) == {first.addr + k: b for k, b in enumerate(first.data[:384])}
    assert written(tlps[3:]) == {second.addr + k: b for k, b in enumerate(second.data)}


def enabled_bytes_total(tlps):
    return sum(enabled_bytes(t) for t in tlps)


def written(tlps):
    out = {}
    for t in tlps:
        out.update(check_tlp(parse_mem_req(t), 128))
    return out


def test_zero_length_command():
    """Length 0 is not a valid command; it must still end cleanly, sending nothing."""
    rng = random.Random(seed_from_env())
    cmds = [Command(0x1000, 0, 5, data=b""), Command(0x1001, 10, 6, rng=rng)]
    tlps, statuses, marks = run(cmds, 0, rng=rng)
    check(cmds, tlps, statuses, marks, 0)


def run_timed(cmds, status_cycles):
    """Run ``cmds`` with no stalls anywhere; returns the TLPs, the statuses and the cycles
    at which the first command was offered and taken and the last status came."""
    dut = DmaWriteEngine()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    cycle = [0]
    times = {}
    tlps, statuses = [], []

    async def clock(ctx):
        while "end" not in times:
            await ctx.tick()
            cycle[0] += 1

    async def commands(ctx):
        ctx.set(dut.max_payload_size, 1)
        ctx.set(dut.requester_id, REQUESTER_ID)
        ctx.set(dut.bus_master, 1)
        times["offered"] = cycle[0]
        for c in cmds:
            await stream_put(ctx, dut.cmd, c.payload)
            times.setdefault("taken", cycle[0])

    async def data(ctx):
        for c in cmds:
            for beat in dma_data_beats(c.data):
                await stream_put(ctx, dut.data, beat)

    async def link(ctx):
        await take_tlps(ctx, dut.tx, tlps, sum(c.length for c in cmds), random.Random(0), 0.0)

    async def status(ctx):
        for c in cmds:
            s = await stream_get_within(ctx, dut.status, status_cycles)
            statuses.append((s.tag, s.error))
        times["end"] = cycle[0]

    sim.add_testbench(clock, background=True)
    sim.add_testbench(commands, background=True)
    sim.add_testbench(data, background=True)
    sim.add_testbench(link, background=True)
    sim.add_testbench(status)
    sim.run()
    return tlps, statuses, times


@pytest.mark.parametrize("addr", [0x10000, 0x10003, (1 << 36) + 0x10000])
def test_throughput(addr):
    """A measurement, not a timed test: a 64 KiB write with no stalls at MPS 256 must move at
    least 80% of the bytes per cycle that header overhead allows on a 64-bit stream."""
    length, mps = DMA_MAX_LENGTH, 256
    hdr_bytes = 16 if addr >= 1 << 32 else 12
    # Best case: every TLP a full MPS, header and payload packed into ceil(.../8) beats.
    bound = 8 * mps / (8 * -(-(hdr_bytes + mps) // 8))
    rng = random.Random(seed_from_env())
    c = Command(addr, length, 7, rng=rng)
    tlps, statuses, times = run_timed([c], 4 * length)
    check([c], tlps, statuses, [len(tlps)], 1)
    cycles = times["end"] - times["taken"]
    rate = length / cycles
    print(f"addr={addr:#x}: {length} bytes in {cycles} cycles = {rate:.3f} bytes/cycle "
          f"(header-overhead bound {bound:.3f}, {100 * rate / bound:.1f}% of it)")
    assert rate >= 0.8 * bound, f"{rate:.3f} bytes/cycle, below 80% of {bound:.3f}"


def test_small_commands_back_to_back():
    """Ring writes (a status byte, a used element, an index) are one-beat commands: with no
    stalls each costs its two TLP beats and two cycles of its own (taking it, planning its
    TLP), the status of one waiting while the next is taken."""
    n = 24
    rng = random.Random(seed_from_env())
    cmds = [Command(0x1000 + 8 * i, rng.choice((1, 2, 4)), i & 0xff, rng=rng)
            for i in range(n)]
    tlps, statuses, times = run_timed(cmds, 100)
    assert statuses == [(c.tag, DmaError.OK) for c in cmds]
    cycles = times["end"] - times["offered"]
    print(f"{n} one-beat commands in {cycles} cycles ({cycles / n:.2f} a command)")
    assert len(tlps) == n
    assert cycles <= 4 * n + 4, f"{cycles} cycles for {n} one-beat commands"


@pytest.mark.parametrize("width", [32, 128, 256, "64"])
def test_rejects_data_width(width):
    with pytest.raises(ValueError, match=rf"^DmaWriteEngine data_width must be 64 \(128 and 256 "
                                         rf"are not implemented yet\), not {width!r}$"):
        DmaWriteEngine(width)
