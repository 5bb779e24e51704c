"""``make speed``: how fast the testbench simulates, in device clock cycles per wall-clock
second, on a fixed set of cocotb tests, per simulator.

    python scripts/simspeed.py [--sim verilator|icarus ...] [--root DIR] [--seed N] [TEST ...]

Each simulator runs the tests (default :data:`TESTS`, every parametrization) in one process,
with ``SEED`` fixed so that two checkouts do the same work, and the figures come from cocotb's
results file: simulated time over wall time for each test, and for all of them together.
``--root`` measures another checkout of the project (one with ``tb/run.py``), so that a change
can be measured against the commit before it on the same machine. The simulator build is kept
apart (``SIM_BUILD_TAG=speed``) and not counted.
"""

import argparse
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # `python scripts/simspeed.py` puts scripts/ on the path, not the repository root.
    sys.path.insert(0, str(ROOT))

from tb.testbench import CLOCK_NS                              # noqa: E402

# A cross-section of make test: the foundation, the data path (random workload, whole-disk
# sweeps), hostile rings, resets, FLUSH durability.
TESTS = ["headline", "request_types", "random_workload", "data_integrity/stalls=False",
         "malformed_loop", "reset_in_flight", "flush_durability"]


def measure(root, sim, tests, seed):
    """Run ``tests`` on ``sim`` in the checkout ``root``; returns ``[(test, cycles, wall
    seconds, passed)]``."""
    args = [sys.executable, "-m", "tb.run", "--sim", sim]
    for t in tests:
        args += ["--test", t]
    env = dict(os.environ, SEED=str(seed), SIM_BUILD_TAG="speed")
    out = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    results = Path(root) / "build" / "sim" / sim / "virtio_blk_ep-speed" / "results.xml"
    if not results.exists():
        raise RuntimeError(f"{sim}: no results ({out.stdout[-2000:]}{out.stderr[-2000:]})")
    rows = []
    for tc in ET.parse(results).iter("testcase"):
        props = {p.get("name"): p.get("value") for p in tc.iter("property")}
        ns = float(props.get("sim_time_duration", 0))
        ok = tc.find("failure") is None and tc.find("error") is None
        rows.append((tc.get("name"), ns / CLOCK_NS, float(tc.get("time")), ok))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", action="append", choices=("verilator", "icarus"))
    parser.add_argument("--root", default=str(ROOT))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED") or 7))
    parser.add_argument("tests", nargs="*")
    args = parser.parse_args(argv)
    failed = False
    for sim in args.sim or ["verilator", "icarus"]:
        rows = measure(args.root, sim, args.tests or TESTS, args.seed)
        for name, cycles, wall, ok in rows:
            print(f"{sim:9} {name:50} {cycles:11,.0f} cycles {wall:7.1f} s "
                  f"{cycles / wall:9,.0f} cycles/s{'' if ok else '  FAILED'}")
            failed |= not ok
        cycles, wall = sum(r[1] for r in rows), sum(r[2] for r in rows)
        print(f"speed: {sim}: {cycles:,.0f} cycles in {wall:.1f} s: {cycles / wall:,.0f} cycles "
              f"per wall second ({len(rows)} tests, SEED={args.seed})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
