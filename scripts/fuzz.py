"""``make fuzz``: the long fuzz campaign (tb/cocotb_fuzz.py) over many seeds.

    python scripts/fuzz.py [--seeds N] [--episodes E] [--sim verilator|icarus] [--jobs J]

Environment (what make passes): ``SEEDS`` (default 20), ``FUZZ_EPISODES`` (default 24),
``SEED`` (the first seed; random and printed if unset), ``SIM``, ``JOBS`` (default 2). The
last line reads ``fuzz: <seeds> seeds, <requests> requests, <malformed> malformed, <faults>
faults, <resets> resets, <violations> violations``; the exit status is 1 on any violation.
Per-run logs and the JSON records are in build/fuzz/.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tb.fuzz import campaign, summary_line   # noqa: E402


def _env(name, default):
    return os.environ.get(name) or default


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=int(_env("SEEDS", 20)))
    parser.add_argument("--episodes", type=int, default=int(_env("FUZZ_EPISODES", 24)))
    parser.add_argument("--sim", default=_env("SIM", "verilator"))
    parser.add_argument("--jobs", type=int, default=int(_env("JOBS", 2)))
    parser.add_argument("--seed", type=int, default=int(_env("SEED", -1)))
    args = parser.parse_args()
    totals = campaign(args.seeds, args.sim, args.episodes,
                      base=None if args.seed < 0 else args.seed, jobs=args.jobs)
    print(summary_line(totals), flush=True)
    sys.exit(1 if totals["violations"] else 0)


if __name__ == "__main__":
    main()
