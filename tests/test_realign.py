# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the byte realigner: the output carries exactly the input bytes,
in order, cut into packets of the given lengths, each framed as a DMA data packet (packed from
lane 0, ``keep`` short only on the last beat, ``last`` on it, zeros outside ``keep``); input
``last`` and lanes outside ``keep`` are ignored; one output beat per cycle with full input
beats whatever the packet lengths; no combinational path between the ports. Random gather,
scatter and mixed cases against a pure-Python reference, with and without random stalls.
"""

import random

import pytest
from amaranth.sim import Simulator

from rtl.realign import ByteRealigner
from tb.seed import seed_from_env
from .sim_helpers import stream_get_within, dma_data_beats


async def put(ctx, stream, payload):
    """Like ``stream_put``, but waiting with a plain loop instead of ``ctx.tick().until()``.
    When a check fails, the simulation stops with the background sources still waiting; in
    Amaranth 0.5.10 a coroutine closed while inside ``until()`` raises in its finalizer
    ("aclose(): asynchronous generator is already running"), which can crash pytest's report
    of the next failure (INTERNALERROR). A plain loop is closed cleanly."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    while True:
        _, _, ready = await ctx.tick().sample(stream.ready)
        if ready:
            break
    ctx.set(stream.valid, 0)


def reference(transfers, lengths):
    """The packets a realigner must send: the input bytes concatenated, cut by ``lengths``
    (a length of 0 produces no packet)."""
    data = b"".join(transfers)
    assert sum(lengths) <= len(data)
    packets, pos = [], 0
    for n in lengths:
        if n:
            packets.append(data[pos:pos + n])
            pos += n
    return packets


def input_beats(transfers, rng, empty=0.0, junk=True):
    """Beats of ``transfers`` on a ``DmaData(64)`` stream, each transfer framed as the DMA
    engines frame it. With probability ``empty`` a beat with ``keep`` 0 comes before a beat;
    with ``junk``, lanes outside ``keep`` carry random bytes and ``last`` is random (both must
    be ignored)."""
    beats = []
    for t in transfers:
        for beat in dma_data_beats(t):
            while rng.random() < empty:
                beats.append({"data": rng.randrange(1 << 64) if junk else 0, "keep": 0,
                              "last": rng.randrange(2) if junk else 0})
            if junk:
                n = beat["keep"].bit_length()
                beat["data"] |= rng.randrange(1 << 64) >> 8 * n << 8 * n
                beat["last"] = rng.randrange(2)
            beats.append(beat)
    return beats


def check_packet(k, got, want):
    """Packet ``k`` as received against the reference, with a short message (the first
    differing byte) rather than a dump of kilobytes."""
    if got != want:
        at = next((j for j, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got),
                                                                               len(want)))
        raise AssertionError(f"packet {k}: {len(got)} bytes, expected {len(want)}; first "
                             f"difference at byte {at}: got {got[at:at + 8].hex()}, expected "
                             f"{want[at:at + 8].hex()}")


def check_beat(beat, left, k):
    """One output beat of a packet with ``left`` bytes still to come; returns its bytes."""
    n = min(left, 8)
    want_keep = (1 << n) - 1
    assert beat.keep == want_keep, \
        f"packet {k}: keep {beat.keep:#010b} with {left} bytes left, expected {want_keep:#010b}"
    assert bool(beat.last) == (left <= 8), \
        f"packet {k}: last={beat.last} with {left} bytes left"
    assert beat.data >> 8 * n == 0, \
        f"packet {k}: data {beat.data:#018x} not zero outside keep {beat.keep:#010b}"
    return (beat.data & (1 << 8 * n) - 1).to_bytes(n, "little")


def run(beats, lengths, want, rng, stall=0.0, idle=0.0, timeout=200):
    """Simulate a ByteRealigner fed ``beats`` on ``i`` and ``lengths`` on ``length``; check
    the framing of every output beat, each output packet against ``want`` (as it arrives, so a
    wrong run stops early), that every input beat and length was taken and that nothing more
    came out."""
    dut = ByteRealigner()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    expected = [n for n in lengths if n]
    assert [len(p) for p in want] == expected
    done = {}

    async def source(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for beat in beats:
            while local.random() < idle:
                await ctx.tick()
            await put(ctx, dut.i, beat)
        done["i"] = True

    async def lengths_source(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for n in lengths:
            while local.random() < idle:
                await ctx.tick()
            await put(ctx, dut.length, n)
        done["length"] = True

    async def sink(ctx):
        local = random.Random(rng.randrange(1 << 32))
        for k, n in enumerate(expected):
            got, left = b"", n
            while left:
                while local.random() < stall:
                    await ctx.tick()
                beat = await stream_get_within(ctx, dut.o, timeout)
                chunk = check_beat(beat, left, k)
                got += chunk
                left -= len(chunk)
            check_packet(k, got, want[k])
        # Nothing more may come out.
        for _ in range(20):
            await ctx.tick()
            assert not ctx.get(dut.o.valid), "an output beat beyond the requested lengths"

    sim.add_testbench(source, background=True)
    sim.add_testbench(lengths_source, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert done == {"i": True, "length": True}, f"input not all taken: {done}"


def random_transfer_length(rng):
    """Mostly short (the awkward case), sometimes sector-sized or longer."""
    r = rng.random()
    if r < 0.6:
        return rng.randrange(1, 18)
    if r < 0.8:
        return rng.randrange(18, 700)
    return rng.choice([512, 4096, rng.randrange(700, 5000)])


STALLS = pytest.mark.parametrize("stall,idle", [(0.0, 0.0), (0.3, 0.3)],
                                 ids=["no-stalls", "stalls"])


@STALLS
def test_random_gather(stall, idle):
    """Many DMA transfers of arbitrary length in, one packet of their total length out."""
    rng = random.Random(seed_from_env())
    transfers, lengths = [], []
    for _ in range(12):
        group = [rng.randbytes(random_transfer_length(rng))
                 for _ in range(rng.randrange(1, 12))]
        transfers += group
        lengths.append(sum(len(t) for t in group))
    beats = input_beats(transfers, rng, empty=0.05)
    run(beats, lengths, reference(transfers, lengths), rng, stall, idle)


@STALLS
def test_random_scatter(stall, idle):
    """One continuous stream of full beats in, packets of arbitrary lengths out."""
    rng = random.Random(seed_from_env())
    lengths = [random_transfer_length(rng) for _ in range(40)]
    total = sum(lengths)
    transfers = [rng.randbytes(-(-total // 8) * 8)]   # whole beats, the tail unused
    beats = input_beats(transfers, rng, junk=False)
    run(beats, lengths, reference(transfers, lengths), rng, stall, idle)


@STALLS
def test_random_mixed(stall, idle):
    """Input and output framings unrelated to each other, zero lengths and empty beats
    among them."""
    rng = random.Random(seed_from_env())
    transfers = [rng.randbytes(random_transfer_length(rng)) for _ in range(60)]
    total = sum(len(t) for t in transfers)
    lengths, left = [], total
    while left:
        n = min(left, random_transfer_length(rng)) if rng.random() > 0.05 else 0
        lengths.append(n)
        left -= n
    beats = input_beats(transfers, rng, empty=0.1)
    run(beats, lengths, reference(transfers, lengths), rng, stall, idle)


@pytest.mark.parametrize("gather", [False, True], ids=["scatter", "gather"])
def test_edge_lengths(gather):
    """Lengths 1, 8, 9, 4096 and 65536; as a gather from transfers of every length 1 to 17
    (in turn) with empty beats among them, or as a scatter of one stream of full beats."""
    rng = random.Random(seed_from_env())
    lengths = [1, 8, 9, 4096, 1, 1, 65536, 7, 8, 9]
    total = sum(lengths)
    if gather:
        transfers, n = [], 0
        while sum(len(t) for t in transfers) < total:
            transfers.append(rng.randbytes(n % 17 + 1))
            n += 1
        beats = input_beats(transfers, rng, empty=0.02)
    else:
        transfers = [rng.randbytes(-(-total // 8) * 8)]
        beats = input_beats(transfers, rng, junk=False)
    run(beats, lengths, reference(transfers, lengths), rng, 0.05, 0.05)


def test_every_short_transfer():
    """Every input transfer length 1 to 17 against every output length 1 to 17."""
    rng = random.Random(seed_from_env())
    transfers = [rng.randbytes(n) for _ in range(17) for n in range(1, 18)]
    lengths = [n for n in range(1, 18) for _ in range(17)]
    rng.shuffle(lengths)
    beats = input_beats(transfers, rng)
    run(beats, lengths, reference(transfers, lengths), rng, 0.2, 0.2)


def test_empty_beats_and_zero_lengths():
    """Beats with keep 0 contribute nothing, even at the start or between packets; lengths
    of 0 are taken and produce nothing, even first, last or several in a row."""
    rng = random.Random(seed_from_env())
    empty = {"data": 0, "keep": 0, "last": 1}
    transfers = [b"\x11\x22\x33", bytes(range(0x40, 0x4d))]
    beats = [empty, empty] + input_beats(transfers[:1], rng, junk=False) + [empty] + \
        input_beats(transfers[1:], rng, junk=False) + [empty, empty]
    lengths = [0, 2, 0, 0, 9, 5, 0]
    run(beats, lengths, [b"\x11\x22", b"\x33" + bytes(range(0x40, 0x48)),
                         bytes(range(0x48, 0x4d))], rng)


def test_known_beats():
    """Beats worked out by hand, so the checks above cannot share a misreading with the
    block: 3 + 13 bytes in, packets of 1, 10 and 5 bytes out."""
    beats = [{"data": 0x0000000000332211, "keep": 0b00000111, "last": 1},
             {"data": 0x4847464544434241, "keep": 0xff, "last": 0},
             {"data": 0x0000004d4c4b4a49, "keep": 0b00011111, "last": 1}]
    # (Lanes 3..7 of the first beat are junk, to be ignored.)
    beats[0]["data"] |= 0xdeadbeefcc << 24
    dut = ByteRealigner()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    got = []

    async def source(ctx):
        for n in (1, 10, 5):
            await put(ctx, dut.length, n)

    async def feed(ctx):
        for beat in beats:
            await put(ctx, dut.i, beat)

    async def sink(ctx):
        for _ in range(4):
            b = await stream_get_within(ctx, dut.o, 50)
            got.append((f"{b.data:016x}", f"{b.keep:08b}", int(b.last)))

    sim.add_testbench(source, background=True)
    sim.add_testbench(feed, background=True)
    sim.add_testbench(sink)
    sim.run()
    assert got == [("0000000000000011", "00000001", 1),
                   ("4645444342413322", "11111111", 0), ("0000000000004847", "00000011", 1),
                   ("0000004d4c4b4a49", "00011111", 1)]


def measure(transfers, lengths, rng):
    """Run with every source always valid and ``o.ready`` held high; returns (output beats,
    cycles from the first output beat to the last, input beats, cycles from the first input
    beat taken to the last)."""
    beats = input_beats(transfers, rng, junk=False)
    expected = reference(transfers, lengths)
    n_out = sum(-(-len(p) // 8) for p in expected)
    dut = ByteRealigner()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    out_cycles, in_cycles, data = [], [], []

    async def lengths_source(ctx):
        for n in lengths:
            await put(ctx, dut.length, n)

    async def source(ctx):
        # Every input beat valid from the first cycle on, back to back.
        ctx.set(dut.i.valid, 1)
        cycle = 0
        for beat in beats:
            ctx.set(dut.i.payload, beat)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                cycle += 1
                if ready:
                    in_cycles.append(cycle)
                    break
        ctx.set(dut.i.valid, 0)

    async def sink(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(out_cycles) < n_out:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                out_cycles.append(cycle)
                data.append(payload)
            assert cycle < 4 * n_out + 100, "output stalled"

    sim.add_testbench(lengths_source, background=True)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    # The data must be right too, or the rate means nothing.
    got, k, left = [], 0, 0
    for beat in data:
        if not left:
            left = len(expected[k])
            got.append(b"")
        got[-1] += check_beat(beat, left, k)
        left = len(expected[k]) - len(got[-1])
        k += not left
    assert len(got) == len(expected)
    for k, (g, w) in enumerate(zip(got, expected)):
        check_packet(k, g, w)
    return (n_out, out_cycles[-1] - out_cycles[0] + 1,
            len(in_cycles), in_cycles[-1] - in_cycles[0] + 1)


@pytest.mark.parametrize("lengths", [[4096] * 16, [4099] * 16, [13] * 2000, [8] * 2000,
                                     [4099, 13, 1, 512, 9, 4097, 4095, 20] * 4],
                         ids=["4096", "4099", "13", "8", "mixed"])
def test_throughput_full_beats(lengths):
    """A measurement, not a timed test: with full input beats and o.ready high, at least 0.95
    output beats per cycle, whether packets end on a beat boundary or not."""
    rng = random.Random(seed_from_env())
    total = sum(lengths)
    transfers = [rng.randbytes(-(-total // 8) * 8)]
    n_out, out_span, _, _ = measure(transfers, lengths, rng)
    rate = n_out / out_span
    print(f"lengths {lengths[:6]}...: {n_out} output beats in {out_span} cycles = "
          f"{rate:.3f} beats/cycle")
    assert rate >= 0.95, f"{rate:.3f} output beats per cycle, below 0.95"


def test_throughput_short_input_beats():
    """5-byte input transfers: the input is taken every cycle (the output waits on bytes, never
    the other way round), so the output runs at 5/8 of a beat per cycle."""
    rng = random.Random(seed_from_env())
    transfers = [rng.randbytes(5) for _ in range(1000)]
    lengths = [4096, 904]
    n_out, out_span, n_in, in_span = measure(transfers, lengths, rng)
    print(f"{n_in} input beats in {in_span} cycles, {n_out} output beats in {out_span} cycles")
    assert n_in / in_span >= 0.95, f"{n_in / in_span:.3f} input beats per cycle, below 0.95"
    assert n_out / out_span >= 0.95 * 5 / 8


def test_one_beat_packets_back_to_back():
    """Packets of 1 and 8 bytes, one beat each, leave no idle cycle between them: the
    length queue starts the next packet in the cycle after the last beat."""
    rng = random.Random(seed_from_env())
    lengths = [rng.choice([1, 8]) for _ in range(200)]
    total = sum(lengths)
    transfers = [rng.randbytes(-(-total // 8) * 8)]
    n_out, out_span, _, _ = measure(transfers, lengths, rng)
    assert n_out == 200
    assert n_out / out_span >= 0.95, f"{n_out} beats in {out_span} cycles"


def test_no_combinational_paths():
    """i.ready and length.ready do not follow o.ready, and o does not follow i or length
    within a cycle: checked in a state where sending the beat on offer would free room for an
    input beat and end the packet (so a combinational design would raise both readies)."""
    dut = ByteRealigner()
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    seen = {}

    async def bench(ctx):
        await put(ctx, dut.length, 5)
        await put(ctx, dut.length, 3)
        for beat in dma_data_beats(bytes(range(1, 28))):
            await put(ctx, dut.i, beat)
        await ctx.tick()
        # Now: 27 bytes buffered (no room for a beat), a 5-byte packet on offer, a 3-byte one
        # pending (no room for a length).
        outputs = (dut.i.ready, dut.length.ready, dut.o.valid, dut.o.payload.as_value())
        for o_ready in (0, 1):
            for i_valid in (0, 1):
                for l_valid in (0, 1):
                    ctx.set(dut.o.ready, o_ready)
                    ctx.set(dut.i.valid, i_valid)
                    ctx.set(dut.i.payload, {"data": 0x1122334455667788, "keep": 0xff, "last": 0})
                    ctx.set(dut.length.valid, l_valid)
                    ctx.set(dut.length.payload, 5)
                    seen[o_ready, i_valid, l_valid] = tuple(ctx.get(s) for s in outputs)
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.length.valid, 0)

    sim.add_testbench(bench)
    sim.run()
    values = set(seen.values())
    assert len(values) == 1, f"ports follow each other combinationally: {seen}"
    i_ready, length_ready, o_valid, _ = values.pop()
    # The state is the one intended (the check above would pass on a stuck block).
    assert (i_ready, length_ready, o_valid) == (0, 0, 1)


@pytest.mark.parametrize("width", [32, 128, 256, "64", True])
def test_rejects_data_width(width):
    with pytest.raises(ValueError, match=rf"^ByteRealigner data_width must be 64 \(others are "
                                         rf"not implemented yet\), not {width!r}$"):
        ByteRealigner(width)
