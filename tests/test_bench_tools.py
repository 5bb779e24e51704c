"""The pure-Python parts of ``make bench``: grid and point checks, request framing, statistics,
the PNG chart renderer and the results summary. (The benchmark itself is a cocotb run.)"""

import json
import random
import struct
import zlib

import pytest

from tb.cocotb_bench import (GRIDS, WORKLOADS, RECORD_FIELDS, PAGE, grid_from_env, check_point,
                          steady_rate, request_count, linux_layout, percentile, sector_walk,
                          host_latencies_from_env, direction, breakdown)
from scripts.plot import (Canvas, encode_png, decode_png, throughput_figure, _FONT, GLYPH_W,
                          GLYPH_H, PALETTE)
from scripts.bench import read_records, headline, table, speed_line, plot_records
from tb.seed import seed_from_env


LIMITS = dict(capacity=2048, seg_max=126, queue_size=256, queues=2)


# -- grid -------------------------------------------------------------------------------------

def test_grid_default_is_quick():
    assert grid_from_env({}) == ("quick", (512, 4096, 65536, 131072), (1, 32, 64), WORKLOADS)


def test_grid_full_and_smoke():
    _, blocks, depths, workloads = grid_from_env({"BENCH_GRID": "full"})
    assert blocks == (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072)
    assert depths == (1, 2, 4, 8, 16, 32, 64)
    assert workloads == ("seq-read", "seq-write", "rand-read", "rand-write")
    assert grid_from_env({"BENCH_GRID": "smoke"})[1:] == ((65536,), (8,),
                                                           ("seq-read", "seq-write"))


def test_grid_overrides():
    env = {"BENCH_GRID": "full", "BENCH_BLOCKS": "4096, 0x2000", "BENCH_DEPTHS": "2",
           "BENCH_WORKLOADS": "rand-write"}
    assert grid_from_env(env) == ("full", (4096, 8192), (2,), ("rand-write",))


@pytest.mark.parametrize("env, message", [
    ({"BENCH_GRID": "huge"},
     "BENCH_GRID must be one of ['full', 'quick', 'smoke'], not 'huge'"),
    ({"BENCH_WORKLOADS": "seq-read,trim"},
     "BENCH_WORKLOADS: 'trim' is none of seq-read, seq-write, rand-read, rand-write"),
    ({"BENCH_BLOCKS": "4k"}, "BENCH_BLOCKS must be a comma-separated list of integers, not '4k'"),
    ({"BENCH_DEPTHS": ","}, "BENCH_DEPTHS is empty"),
])
def test_grid_errors(env, message):
    with pytest.raises(ValueError) as e:
        grid_from_env(env)
    assert str(e.value) == message


def test_host_latencies():
    # [issue 11] Every grid but the CI smoke runs at the model's own latency and at 1 µs.
    assert host_latencies_from_env("quick", {}) == (0, 250)
    assert host_latencies_from_env("full", {}) == (0, 250)
    assert host_latencies_from_env("smoke", {}) == (0,)
    assert host_latencies_from_env("smoke", {"BENCH_HOST_LATENCIES": "100, 0"}) == (100, 0)
    for bad, message in [("x", "comma-separated"), ("-5", "must not be negative")]:
        with pytest.raises(ValueError, match=message):
            host_latencies_from_env("quick", {"BENCH_HOST_LATENCIES": bad})


def test_breakdown():
    # Means over the requests whose timelines are whole (a request cut by a reset is not).
    times = [dict(fetch=0, data_first=100, data_last=500, status=501, element=510,
                  published=520),
             dict(fetch=1000, data_first=1150, data_last=1450, status=1451, element=1460,
                  published=1480),
             dict(fetch=2000, data_first=2100)]
    assert breakdown(times) == dict(fetch_cycles=125.0, data_cycles=350.0,
                                    completion_cycles=25.0)
    assert breakdown(times[2:]) == dict(fetch_cycles=None, data_cycles=None,
                                        completion_cycles=None)


def test_direction():
    assert [direction(w) for w in WORKLOADS] == ["in", "out", "in", "out"]


def test_every_grid_point_fits_the_device():
    for blocks, depths, _ in GRIDS.values():
        for b in blocks:
            for d in depths:
                check_point(b, d, **LIMITS)


@pytest.mark.parametrize("block, depth, message", [
    (1000, 1, "block size must be a positive multiple of 512 bytes, not 1000"),
    (0, 1, "block size must be a positive multiple of 512 bytes, not 0"),
    (2 << 20, 1, "block size 2097152 is larger than the disk (1048576 bytes)"),
    (4096, 0, "queue depth must be a positive integer, not 0"),
    (4096, 513, "queue depth 513 puts 257 requests on one of 2 queues of 256 descriptors"),
])
def test_check_point_errors(block, depth, message):
    with pytest.raises(ValueError) as e:
        check_point(block, depth, **LIMITS)
    assert str(e.value) == message


def test_check_point_seg_max_and_memory():
    with pytest.raises(ValueError) as e:
        check_point(65536, 1, **dict(LIMITS, seg_max=8))
    assert str(e.value) == ("block size 65536 needs 16 pieces of 4096 bytes; the device takes "
                            "at most seg_max 8")
    with pytest.raises(ValueError) as e:
        check_point(131072, 64, host_memory=8 << 20, **LIMITS)
    assert str(e.value) == ("queue depth 64 of 131072-byte requests needs 8388608 bytes of "
                            "buffers; host memory is 8388608")


def test_request_count():
    assert request_count(512, 1) == 256           # capped at 256 requests
    assert request_count(4096, 8) == 128          # 512 KiB
    assert request_count(65536, 1) == 8           # 512 KiB
    assert request_count(131072, 1) == 4          # at least 4
    for block in (512, 4096, 131072):
        for depth in (1, 8, 64, 100):
            assert request_count(block, depth) >= depth   # the queue fills


# -- requests ---------------------------------------------------------------------------------

def test_linux_layout():
    r = linux_layout(512, write=False)
    assert (r.readable, r.writable, r.indirect, r.direct_prefix, r.skews) == \
        ((16,), (512, 1), True, 0, ())
    w = linux_layout(131072, write=True)
    assert w.readable == (16,) + (PAGE,) * 32 and w.writable == (1,) and w.indirect
    assert w.count == 34
    w.check(131072, 0)
    odd = linux_layout(6144, write=False)
    assert odd.writable == (4096, 2048, 1)
    odd.check(0, 6144)


def test_percentile():
    values = list(range(100, 0, -1))        # 1..100, unsorted
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7], 99) == 7
    assert percentile([1, 2, 3, 1000], 50) == 2
    assert percentile([1, 2, 3, 1000], 99) == 1000
    with pytest.raises(ValueError, match="percentile of no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\], not 0"):
        percentile([1], 0)


def test_sector_walk_sequential_wraps():
    walk = sector_walk("seq-read", 131072, 2048, random.Random(0))
    assert [next(walk) for _ in range(10)] == [0, 256, 512, 768, 1024, 1280, 1536, 1792, 0, 256]


def test_sector_walk_random_is_aligned_and_seeded():
    seed = seed_from_env()
    a = sector_walk("rand-write", 4096, 2048, random.Random(seed))
    b = sector_walk("rand-write", 4096, 2048, random.Random(seed))
    got = [next(a) for _ in range(500)]
    assert got == [next(b) for _ in range(500)]
    assert all(s % 8 == 0 and 0 <= s <= 2048 - 8 for s in got)
    assert len(set(got)) > 100                  # not stuck: 256 slots, 500 draws


# -- PNG and charts ---------------------------------------------------------------------------

def test_font_glyphs_fit():
    for ch, rows in _FONT.items():
        assert len(rows) == 2 * GLYPH_H, ch
        assert all(int(rows[k:k + 2], 16) < 1 << GLYPH_W for k in range(0, len(rows), 2)), ch
    for ch in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz .,-/:%()":
        assert ch in _FONT, ch


def test_png_roundtrip():
    rng = random.Random(1)
    pixels = bytes(rng.randrange(256) for _ in range(7 * 5 * 3))
    data = encode_png(7, 5, pixels)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (7, 5)
    assert decode_png(data) == (7, 5, pixels)
    with pytest.raises(ValueError) as e:
        encode_png(2, 2, b"\x00" * 11)
    assert str(e.value) == "11 bytes of pixels for a 2x2 RGB image (needs 12)"


def test_png_is_standard():
    """The IDAT stream is a zlib stream of filter-0 scanlines, and every CRC checks."""
    data = encode_png(3, 2, bytes(range(18)))
    assert decode_png(data)[2] == bytes(range(18))
    n = struct.unpack(">I", data[33:37])[0]
    assert data[37:41] == b"IDAT"
    raw = zlib.decompress(data[41:41 + n])
    assert raw == b"\x00" + bytes(range(9)) + b"\x00" + bytes(range(9, 18))
    bad = bytearray(data)
    bad[45] ^= 1
    with pytest.raises(ValueError, match="bad CRC in the IDAT chunk"):
        decode_png(bytes(bad))


def test_canvas_drawing():
    c = Canvas(40, 20)
    red = (255, 0, 0)
    c.line(0, 0, 39, 19, red)
    assert c.get(0, 0) == red and c.get(39, 19) == red and c.get(39, 0) == (255, 255, 255)
    c.rect(10, 2, 12, 4, (0, 0, 255))
    assert c.get(11, 3) == (0, 0, 255) and c.get(13, 3) != (0, 0, 255)
    t = Canvas(12, 8)
    t.text(0, 0, "1", (0, 0, 0))
    # "1": rows 04 0C 04 04 04 04 0E 00.
    lit = {(x, y) for y in range(8) for x in range(6) if t.get(x, y) == (0, 0, 0)}
    want = {(x, y) for y, bits in enumerate([4, 12, 4, 4, 4, 4, 14, 0])
            for x in range(5) if bits >> (4 - x) & 1}
    assert lit == want
    assert Canvas.text_width("ab", scale=2) == 22
    with pytest.raises(ValueError) as e:
        Canvas(0, 10)
    assert str(e.value) == "canvas size must be positive integers, not 0x10"


def _records():
    recs = []
    for w in WORKLOADS:
        for b in (512, 65536):
            for d in (1, 8, 64):
                recs.append(dict(workload=w, block_size=b, queue_depth=d,
                                 bytes_per_cycle=1.5 if b == 512 else 7.0))
    return recs


def test_throughput_figure_draws_every_block_size(tmp_path):
    fig = throughput_figure(_records(), peak=8, clock_mhz=250)
    path = tmp_path / "t.png"
    fig.save(path)
    w, h, px = decode_png(path.read_bytes())
    assert (w, h) == (fig.width, fig.height)
    colors = {tuple(px[i:i + 3]) for i in range(0, len(px), 3)}
    assert PALETTE[0] in colors and PALETTE[1] in colors     # one line per block size
    assert PALETTE[2] not in colors                          # and no more
    # Four panels, two per row.
    assert fig.width == 2 * 460 and fig.height > 2 * 330


# -- summary ----------------------------------------------------------------------------------

def _record(**kw):
    rec = dict(workload="seq-read", direction="in", host_latency_cycles=0, block_size=65536,
               queue_depth=8, requests=8, bytes=524288, fetch_cycles=120.5,
               data_cycles=9100.0, completion_cycles=60.0,
               cycles=73728, bytes_per_cycle=7.1111, requests_per_cycle=0.00010851,
               steady_requests_per_cycle=0.00011,
               latency_cycles_p50=36000, latency_cycles_p99=73000, simulator="verilator",
               seed=1, mb_per_s=1777.8, sim_cycles_per_second=60000)
    rec.update(kw)
    return rec


def test_read_records(tmp_path):
    path = tmp_path / "r.jsonl"
    recs = [_record(), _record(workload="seq-write", bytes_per_cycle=6.5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert read_records(path) == recs
    assert set(RECORD_FIELDS) <= set(recs[0])
    bad = dict(recs[0])
    del bad["latency_cycles_p99"], bad["seed"]
    path.write_text(json.dumps(recs[0]) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError) as e:
        read_records(path)
    assert str(e.value) == f"{path}:2: record lacks latency_cycles_p99, seed"


def test_headline_and_table():
    recs = [_record(), _record(workload="seq-write", bytes_per_cycle=6.5)]
    assert headline(recs, 8) == ("bench: seq-read 64 KiB qd8 7.11 B/cycle (89% of 8), "
                                 "seq-write 64 KiB qd8 6.50 B/cycle (81%)")
    assert headline(recs[:1], 8).endswith("seq-write 64 KiB qd8 not measured")
    lines = table(recs)
    assert len(lines) == 3 and lines[1].split()[:6] == ["seq-read", "0", "64", "KiB", "8",
                                                        "7.111"]
    # The headline is at the RootComplex model's own latency; 1 µs points have panels of
    # their own in the plot.
    slow = _record(host_latency_cycles=250, bytes_per_cycle=5.0)
    assert headline([slow] + recs, 8) == headline(recs, 8)
    assert [r["workload"] for r in plot_records([slow] + recs)] == \
        ["seq-read, host 250", "seq-read", "seq-write"]
    assert lines[1].split()[-4:] == ["120", "9100", "60", "60000"]
    # 2 x 73728 cycles, each point at 60,000 cycles per wall second.
    assert speed_line(recs, "verilator") == ("bench: simulation speed 60,000 cycles per wall "
                                             "second on verilator (147,456 cycles measured)")


def test_steady_rate_leaves_the_ramp_out():
    # Four in flight; the first four take 1,000 cycles to come back (the ramp), then one
    # every 100 cycles: the steady rate is 0.01 whatever the ramp took.
    done = [1000, 1010, 1020, 1030] + [1030 + 100 * k for k in range(1, 13)]
    assert steady_rate(reversed(done), 4) == 0.01
    assert steady_rate(done, 16) is None             # no request after the ramp
    assert steady_rate([5, 9, 13], 1) == 0.25       # depth 1: from the first completion on
