"""``make bench``: run the benchmark grid of ``tb/cocotb_bench.py`` on a simulator, then write
``build/bench/results.json`` and ``build/bench/throughput.png`` and print the table.

``python scripts/bench.py [--sim verilator|icarus] [--grid quick|full|smoke] [--out DIR]``
(also ``python -m scripts.bench``). ``BENCH_GRID`` sets the default grid; ``SEED`` replays the
random workloads; ``BENCH_BLOCKS``, ``BENCH_DEPTHS``, ``BENCH_WORKLOADS``,
``BENCH_HOST_LATENCIES``, ``BENCH_REQUESTS`` narrow a run (see ``tb/cocotb_bench.py``). Exits
non-zero if the cocotb run failed or measured nothing.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # `python scripts/bench.py` puts scripts/ on the path, not the repository root.
    sys.path.insert(0, str(ROOT))

from model.params import VARIANTS                          # noqa: E402
from tb.testbench import CLOCK_NS                               # noqa: E402
from tb.cocotb_bench import GRIDS, RECORD_FIELDS               # noqa: E402
from scripts.plot import throughput_figure                  # noqa: E402


TOPLEVEL = "virtio_blk_ep"
HEADLINE_BLOCK, HEADLINE_DEPTH = 65536, 8


def read_records(path):
    """The records of a JSON Lines file, in file order.

    Raises
    ------
    ValueError
        If a line is not JSON or lacks one of :data:`tb.cocotb_bench.RECORD_FIELDS`.
    """
    records = []
    with open(path) as f:
        for k, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{k}: not JSON ({e})") from None
            missing = [n for n in RECORD_FIELDS if n not in rec]
            if missing:
                raise ValueError(f"{path}:{k}: record lacks {', '.join(missing)}")
            records.append(rec)
    return records


def _size(n):
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def _cycles(v):
    return f"{'-' if v is None else f'{v:.0f}':>7}"


def _rate(v):
    return f"{'-' if v is None else f'{v:.3g}':>10}"


def table(records):
    """The results as text lines, one per point."""
    lines = [f"{'workload':<10} {'host':>4} {'block':>8} {'depth':>5} {'B/cycle':>8} "
             f"{'MB/s':>7} {'req/cycle':>10} {'steady':>10} {'p50 cyc':>8} {'p99 cyc':>8} "
             f"{'requests':>8} "
             f"{'fetch':>7} {'data':>7} {'cpl':>7} {'sim cyc/s':>9}"]
    for r in records:
        lines.append(f"{r['workload']:<10} {r['host_latency_cycles']:>4} "
                     f"{_size(r['block_size']):>8} {r['queue_depth']:>5} "
                     f"{r['bytes_per_cycle']:>8.3f} {r['mb_per_s']:>7.1f} "
                     f"{r['requests_per_cycle']:>10.3g} {_rate(r['steady_requests_per_cycle'])} "
                     f"{r['latency_cycles_p50']:>8} "
                     f"{r['latency_cycles_p99']:>8} {r['requests']:>8} "
                     f"{_cycles(r['fetch_cycles'])} {_cycles(r['data_cycles'])} "
                     f"{_cycles(r['completion_cycles'])} {r['sim_cycles_per_second']:>9}")
    return lines


def plot_records(records):
    """The records as the plot takes them: a point at a host latency other than the
    RootComplex model's own goes to a panel of its own (``seq-read, host 250``)."""
    return [dict(r, workload=r["workload"] + (f", host {r['host_latency_cycles']}"
                                              if r["host_latency_cycles"] else ""))
            for r in records]


def speed_line(records, sim):
    """``bench: simulation speed ...``: simulated cycles per wall second over all points."""
    cycles = sum(r["cycles"] for r in records)
    wall = sum(r["cycles"] / max(r["sim_cycles_per_second"], 1) for r in records)
    return (f"bench: simulation speed {cycles / max(wall, 1e-9):,.0f} cycles per wall second "
            f"on {sim} ({cycles:,} cycles measured)")


def headline(records, peak):
    """``bench: seq-read 64 KiB qd8 X.XX B/cycle (YY% of 8), seq-write ...``."""
    parts = []
    for w in ("seq-read", "seq-write"):
        hit = [r for r in records if r["workload"] == w and r["block_size"] == HEADLINE_BLOCK
               and r["queue_depth"] == HEADLINE_DEPTH and r["host_latency_cycles"] == 0]
        label = f"{w} {_size(HEADLINE_BLOCK)} qd{HEADLINE_DEPTH}"
        if hit:
            bpc = hit[-1]["bytes_per_cycle"]
            pct = f"{100 * bpc / peak:.0f}% of {peak:g}" if not parts else \
                f"{100 * bpc / peak:.0f}%"
            parts.append(f"{label} {bpc:.2f} B/cycle ({pct})")
        else:
            parts.append(f"{label} not measured")
    return "bench: " + ", ".join(parts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", choices=("verilator", "icarus"),
                        default=os.environ.get("SIM") or "verilator")
    parser.add_argument("--grid", choices=sorted(GRIDS),
                        default=os.environ.get("BENCH_GRID") or "quick")
    parser.add_argument("--out", default=str(ROOT / "build" / "bench"),
                        help="directory for results.jsonl, results.json, throughput.png")
    args = parser.parse_args(argv)

    from tb.run import run                       # Amaranth and cocotb's runner: only here

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "results.jsonl"
    if jsonl.exists():
        jsonl.unlink()
    t0 = time.monotonic()
    tests, failed = run(args.sim, TOPLEVEL, tests=["bench"], modules=["tb.cocotb_bench"],
                        extra_env={"SIM": args.sim, "BENCH_GRID": args.grid,
                                   "BENCH_OUT": str(jsonl)})
    elapsed = time.monotonic() - t0
    records = read_records(jsonl) if jsonl.exists() else []
    if records:
        (out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
        params = VARIANTS[TOPLEVEL]
        peak = params.data_width // 8
        clock_mhz = 1000 / CLOCK_NS
        fig = throughput_figure(plot_records(records), peak=peak, clock_mhz=clock_mhz,
                                title=f"virtio-blk throughput ({args.sim}, Gen2 x4, "
                                      f"{clock_mhz:g} MHz, {params.data_width}-bit)")
        fig.save(out / "throughput.png")
        print("\n".join(table(records)))
        print(f"wrote {out / 'results.json'} and {out / 'throughput.png'} "
              f"({len(records)} points, {elapsed:.0f} s)")
        print(headline(records, peak))
        print(speed_line(records, args.sim))
    if failed or not tests or not records:
        print(f"bench: the cocotb run failed ({failed} of {tests} tests failed, "
              f"{len(records)} points measured)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
