# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the 7-series hard-block adapters (:mod:`rtl.phy.s7_axis`).

A model of the hard block's AXI4-Stream side, written here from the sources the module cites
and not from the adapter (tuser bits packed by hand, payload DWs built from bytes with the
lowest address in bits 31:24), drives ``m_axis_rx`` and checks ``s_axis_tx``: random TLPs
(3- and 4-DW headers, with and without payload), at 128 bits beats straddling two TLPs and TLPs
starting at byte 8, random ``tvalid`` gaps and ``tready`` stalls on the hard-block side and
random stalls on ours. Every TLP must arrive once, whole, in order, with its bytes where our
format puts them. SEED replays a run."""

import random

import pytest
from amaranth.sim import Simulator

from tb.seed import seed_from_env
from rtl.phy.s7_axis import S7AxisRx, S7AxisTx
from .sim_helpers import tlp_beats, beats_to_dws


WIDTHS = [64, 128]
MASK32 = 0xffff_ffff


# -- The two formats of one TLP ---------------------------------------------------------------

def random_tlp(rng, max_len=12):
    """A random TLP as ``(ours, axi, meta)``: its DWs in our stream format, the same DWs as the
    hard block carries them, and the side information the hard block gives with it.

    Header DWs are 32-bit values in both formats [PCIe-3.0 2.2.1]. Payload DWs are made from
    bytes in address order: ours hold the lowest address in bits 7:0 (rtl/tlp.py), the hard
    block's in bits 31:24 (Xilinx PIO example ``PIO_EP_MEM_ACCESS.v``: "TLP Payload format:
    data[31:0] = { byte[0] (lowest addr), ... }")."""
    fmt = rng.choice([0b000, 0b001, 0b010, 0b011])
    n = rng.randint(1, max_len) if fmt & 0b010 else 0
    length = n if n else rng.randrange(1024)
    dw0 = fmt << 29 | (rng.getrandbits(29) & ~0x3ff) | (length & 0x3ff)
    header = [dw0] + [rng.getrandbits(32) for _ in range(3 if fmt & 1 else 2)]
    payload = rng.randbytes(4 * n)
    ours = header + [int.from_bytes(payload[i:i + 4], "little") for i in range(0, 4 * n, 4)]
    axi = header + [int.from_bytes(payload[i:i + 4], "big") for i in range(0, 4 * n, 4)]
    meta = {"bar_hit": rng.getrandbits(7), "err_fwd": int(rng.random() < 0.2),
            "ecrc_err": int(rng.random() < 0.2)}
    return ours, axi, meta


def rx_tuser(ecrc_err=0, err_fwd=0, bar_hit=0, is_sof=0, is_eof=0):
    """``m_axis_rx_tuser`` [PG054, as PG156's migration table lists it]: rx_ecrc_err [0],
    rx_err_fwd [1], rx_bar_hit [9:2], rx_is_sof [14:10], rx_is_eof [21:17]."""
    return ecrc_err | err_fwd << 1 | bar_hit << 2 | is_sof << 10 | is_eof << 17


# -- The hard block's receive side ------------------------------------------------------------

def rx_beats_64(rng, tlps):
    """Beats of ``m_axis_rx`` at 64 bits: two DWs a beat, tkeep 0xFF, or 0x0F on a last beat
    with one DW; tlast; no start flag (is_sof left 0); bar_hit and err_fwd for the whole packet,
    ecrc_err at its end."""
    beats = []
    for _, axi, meta in tlps:
        for i in range(0, len(axi), 2):
            chunk = axi[i:i + 2]
            last = i + 2 >= len(axi)
            high = chunk[1] if len(chunk) == 2 else rng.getrandbits(32)
            beats.append({
                "tdata": chunk[0] | high << 32,
                "tkeep": 0xff if len(chunk) == 2 else 0x0f,
                "tlast": int(last),
                "tuser": rx_tuser(ecrc_err=meta["ecrc_err"] & last, err_fwd=meta["err_fwd"],
                                  bar_hit=meta["bar_hit"]),
            })
    return beats


def rx_beats_128(rng, tlps, straddle=0.5, late_start=0.1):
    """Beats of ``m_axis_rx`` at 128 bits, and how many straddle two TLPs.

    A TLP starts at DW0 or DW2 (is_sof 0b10000 or 0b11000) and ends at any DW (is_eof
    0b10011, 0b10111, 0b11011, 0b11111); tlast is 0 and tkeep all ones, as the core drives them.
    After a TLP that ends in DW0 or DW1 the next starts in DW2 of the same beat with probability
    ``straddle``; a TLP starts in DW2 of a fresh beat with probability ``late_start``. DWs of
    no TLP are random. bar_hit and err_fwd are those of the TLP starting in the beat, else of
    the one continuing through it; ecrc_err that of the TLP ending in it."""
    beats = []
    cur = None
    pos = 4                           # next free DW of `cur`; 4 once it is full

    def new_beat():
        nonlocal cur, pos
        cur = {"dws": [rng.getrandbits(32) for _ in range(4)], "sof": 0, "eof": 0,
               "meta": None, "ecrc_err": 0}
        beats.append(cur)
        pos = 0

    straddled = 0
    for _, axi, meta in tlps:
        if 0 < pos <= 2 and rng.random() < straddle:
            pos = 2
            straddled += 1
        else:
            new_beat()
            if rng.random() < late_start:
                pos = 2
        for i, dw in enumerate(axi):
            if pos == 4:
                new_beat()
            cur["dws"][pos] = dw
            if i == 0:
                cur["sof"] = 0b10000 | 4 * pos
                cur["meta"] = meta
            elif cur["meta"] is None:
                cur["meta"] = meta
            if i == len(axi) - 1:
                cur["eof"] = 0b10000 | (4 * pos + 3)
                cur["ecrc_err"] = meta["ecrc_err"]
            pos += 1
    out = []
    for b in beats:
        meta = b["meta"]
        out.append({
            "tdata": sum(dw << 32 * k for k, dw in enumerate(b["dws"])),
            "tkeep": 0xffff,
            "tlast": 0,
            "tuser": rx_tuser(ecrc_err=b["ecrc_err"], err_fwd=meta["err_fwd"],
                              bar_hit=meta["bar_hit"], is_sof=b["sof"], is_eof=b["eof"]),
        })
    return out, straddled


async def drive_rx(ctx, axis, beats, rng, gap):
    """Offer ``beats`` on ``m_axis_rx``, with random idle cycles (and random lines) before each;
    a beat stays until ``tready``, as AXI4-Stream wants."""
    width = len(axis.tdata)
    for beat in beats:
        while rng.random() < gap:
            ctx.set(axis.tvalid, 0)
            ctx.set(axis.tdata, rng.getrandbits(width))
            ctx.set(axis.tuser.as_value(), rng.getrandbits(22))
            await ctx.tick()
        ctx.set(axis.tvalid, 1)
        ctx.set(axis.tdata, beat["tdata"])
        ctx.set(axis.tkeep, beat["tkeep"])
        ctx.set(axis.tlast, beat["tlast"])
        ctx.set(axis.tuser.as_value(), beat["tuser"])
        await wait_ready(ctx, axis.tready)
    ctx.set(axis.tvalid, 0)


async def wait_ready(ctx, ready):
    """Tick until a clock edge at which ``ready`` is high. (Not ``ctx.tick().until()``: the
    background source is still waiting when a failing sink ends the simulation, and closing an
    ``until`` then raises inside the async generator and garbles pytest's report.)"""
    while True:
        _, _, taken = await ctx.tick().sample(ready)
        if taken:
            return


def run_rx(width, tlps, rng, gap=0.0, stall=0.0, straddle=0.5, late_start=0.1):
    """Send ``tlps`` through an :class:`S7AxisRx`; return the received ``(dws, metas)`` per TLP
    (one meta per beat), the number of straddled beats and the cycles taken."""
    dut = S7AxisRx(width)
    if width == 64:
        beats, straddled = rx_beats_64(rng, tlps), 0
    else:
        beats, straddled = rx_beats_128(rng, tlps, straddle, late_start)
    received = []
    cycles = [0]
    drive_rng = random.Random(rng.randrange(1 << 32))

    async def source(ctx):
        await drive_rx(ctx, dut.m_axis_rx, beats, drive_rng, gap)

    async def sink(ctx):
        beats_of_tlp, metas = [], []
        shown = None              # a beat offered and not taken, which must stay as it is
        while len(received) < len(tlps):
            ready = rng.random() >= stall
            ctx.set(dut.tlp.ready, ready)
            _, _, valid, payload, meta = await ctx.tick().sample(
                dut.tlp.valid, dut.tlp.payload, dut.meta)
            cycles[0] += 1
            assert cycles[0] < 20 * len(beats) + 200, "the adapter stopped passing beats"
            now = (payload.as_value().value, meta.as_value().value)
            if shown is not None:
                assert valid and now == shown, "an offered beat changed before it was taken"
            shown = now if valid and not ready else None
            if not (valid and ready):
                continue
            assert bool(payload.first) == (not beats_of_tlp), "first set inside a TLP, or missing"
            assert payload.keep and payload.keep & (payload.keep + 1) == 0, \
                f"keep {payload.keep:#x}: DWs must be packed from DW0"
            assert payload.last or payload.keep == (1 << width // 32) - 1, \
                "a DW missing before the last beat"
            beats_of_tlp.append(payload)
            metas.append({"bar_hit": meta.bar_hit, "err_fwd": meta.err_fwd,
                          "ecrc_err": meta.ecrc_err})
            if payload.last:
                received.append((beats_to_dws(beats_of_tlp, width), metas))
                beats_of_tlp, metas = [], []

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return received, straddled, cycles[0]


def check_rx(tlps, received):
    assert len(received) == len(tlps)
    for k, ((ours, _, meta), (dws, metas)) in enumerate(zip(tlps, received)):
        assert dws == ours, f"TLP {k}: {[hex(d) for d in dws]} != {[hex(d) for d in ours]}"
        for j, got in enumerate(metas):
            last = j == len(metas) - 1
            assert got == {"bar_hit": meta["bar_hit"], "err_fwd": meta["err_fwd"],
                           "ecrc_err": meta["ecrc_err"] & last}, f"TLP {k} beat {j}: meta {got}"


# -- The hard block's transmit side -----------------------------------------------------------

async def capture_tx(ctx, axis, n, rng, stall, cycles_max):
    """Take ``n`` TLPs from ``s_axis_tx`` (as AXI DWs), holding ``tready`` low at random; check
    ``tkeep`` (whole DWs from DW0, short only on the last beat) and ``tuser`` (all 0)."""
    width = len(axis.tdata)
    per = width // 32
    legal_last = {(1 << 32 * k // 8) - 1 for k in range(1, per + 1)}
    tlps, cur = [], []
    for _ in range(cycles_max):
        if len(tlps) == n:
            return tlps
        ready = rng.random() >= stall
        ctx.set(axis.tready, ready)
        _, _, valid, tdata, tkeep, tlast, tuser = await ctx.tick().sample(
            axis.tvalid, axis.tdata, axis.tkeep, axis.tlast, axis.tuser.as_value())
        if not (valid and ready):
            continue
        assert tuser == 0, f"tuser {tuser:#x}: ecrc_gen, err_fwd, str and src_dsc stay 0"
        if tlast:
            assert tkeep in legal_last, f"last beat's tkeep {tkeep:#x}"
        else:
            assert tkeep == (1 << width // 8) - 1, f"tkeep {tkeep:#x} before the last beat"
        cur += [tdata >> 32 * k & MASK32 for k in range(bin(tkeep).count("1") // 4)]
        if tlast:
            tlps.append(cur)
            cur = []
    raise AssertionError(f"s_axis_tx gave {len(tlps)} of {n} TLPs in {cycles_max} cycles")


def run_tx(width, tlps, rng, idle=0.0, stall=0.0):
    """Send ``tlps`` (our format) through an :class:`S7AxisTx`; return what ``s_axis_tx``
    carried, a list of AXI DWs per TLP."""
    dut = S7AxisTx(width)
    got = []
    put_rng = random.Random(rng.randrange(1 << 32))

    async def source(ctx):
        for ours, _, _ in tlps:
            for beat in tlp_beats(ours, width):
                while put_rng.random() < idle:
                    ctx.set(dut.tlp.valid, 0)
                    await ctx.tick()
                ctx.set(dut.tlp.valid, 1)
                ctx.set(dut.tlp.payload, beat)
                await wait_ready(ctx, dut.tlp.ready)
        ctx.set(dut.tlp.valid, 0)

    async def sink(ctx):
        got.extend(await capture_tx(ctx, dut.s_axis_tx, len(tlps), rng, stall,
                                    cycles_max=50 * sum(len(t[0]) for t in tlps) + 200))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source, background=True)
    sim.add_testbench(sink)
    sim.run()
    return got


# -- Tests ------------------------------------------------------------------------------------

STALLS = [(0.0, 0.0), (0.4, 0.4), (0.0, 0.8)]


@pytest.mark.parametrize("gap,stall", STALLS)
@pytest.mark.parametrize("width", WIDTHS)
def test_rx_random_tlps(width, gap, stall):
    rng = random.Random(seed_from_env())
    # 120 TLPs: with 60, one seed in 20 gave 5 or fewer straddled beats at 128 bits and
    # failed the check below (seed 1466043022); with 120, none of 3,000 seeds did.
    tlps = [random_tlp(rng) for _ in range(120)]
    received, straddled, _ = run_rx(width, tlps, rng, gap, stall)
    check_rx(tlps, received)
    if width == 128:
        assert straddled > 5, "the model made too few straddled beats to test them"


@pytest.mark.parametrize("idle,stall", STALLS)
@pytest.mark.parametrize("width", WIDTHS)
def test_tx_random_tlps(width, idle, stall):
    rng = random.Random(seed_from_env())
    tlps = [random_tlp(rng) for _ in range(60)]
    got = run_tx(width, tlps, rng, idle, stall)
    assert len(got) == len(tlps)
    for k, ((_, axi, _), dws) in enumerate(zip(tlps, got)):
        assert dws == axi, f"TLP {k}: {[hex(d) for d in dws]} != {[hex(d) for d in axi]}"


@pytest.mark.parametrize("width", WIDTHS)
def test_round_trip(width):
    """Our TLPs out through S7AxisTx, the link's DWs reframed as the receiving hard block would
    (straddled at 128 bits), and in through S7AxisRx: the same TLPs come back."""
    rng = random.Random(seed_from_env())
    tlps = [random_tlp(rng, max_len=20) for _ in range(40)]
    wire = run_tx(width, tlps, rng, idle=0.3, stall=0.3)
    assert wire == [axi for _, axi, _ in tlps]
    looped = [(ours, axi, meta) for (ours, _, meta), axi in zip(tlps, wire)]
    received, _, _ = run_rx(width, looped, rng, gap=0.3, stall=0.3, straddle=0.7)
    check_rx(tlps, received)


@pytest.mark.parametrize("stall", [0.0, 0.5, 0.9])
def test_rx_128_every_beat_straddled(stall):
    """Short TLPs (5, 6 and 7 DWs) where every TLP that can straddle does: one of two at byte
    8, tails that need a beat of their own, and our side stalling at random."""
    rng = random.Random(seed_from_env())
    tlps = []
    while len(tlps) < 50:
        ours, axi, meta = random_tlp(rng, max_len=4)
        if 5 <= len(ours) <= 7:
            tlps.append((ours, axi, meta))
    received, straddled, _ = run_rx(128, tlps, rng, stall=stall, straddle=1.0, late_start=0.0)
    check_rx(tlps, received)
    assert straddled >= 15


def test_rx_128_realigned_stream_keeps_full_rate():
    """A long TLP starting at byte 8 goes out a beat per hard-block beat (its carried half
    costs no cycle), plus the one beat its tail needs."""
    rng = random.Random(seed_from_env())
    while True:
        tlp = random_tlp(rng, max_len=64)
        if len(tlp[0]) >= 40 and len(tlp[0]) % 4 in (1, 2):
            break                     # from DW2 on, it ends in the upper half of a beat
    received, _, cycles = run_rx(128, [tlp], rng, straddle=0.0, late_start=1.0)
    check_rx([tlp], received)
    beats_in = (len(tlp[0]) + 2 + 3) // 4
    # One cycle through the output register, one for the tail's own beat.
    assert cycles <= beats_in + 2, f"{cycles} cycles for {beats_in} hard-block beats"


@pytest.mark.parametrize("cls", [S7AxisRx, S7AxisTx])
@pytest.mark.parametrize("width", [32, 256, "128"])
def test_width_rejected(cls, width):
    with pytest.raises(ValueError, match=f"^{cls.__name__} supports the 64- and 128-bit "
                       f"AXI4-Stream interfaces of the 7-series PCIe block, not a data width "
                       f"of {width!r}$"):
        cls(width)
