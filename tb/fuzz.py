"""The fuzz campaign driver: many seeds of :mod:`tb.cocotb_fuzz`, the totals, one summary line.

``make fuzz SEEDS=N`` (``scripts/fuzz.py``) and the CI smoke in :mod:`tb.test_system` call
:func:`campaign`. Each seed is one simulator run of the ``fuzz`` cocotb test (with and without
stalls), in a process of its own; ``jobs`` of them go side by side, each with its own simulator
build. The runs append one JSON line each to ``build/fuzz/<tag>.jsonl``.
"""

import json
import os
import queue
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .run import ROOT


__all__ = ["campaign", "summary_line"]


FIELDS = ("requests", "malformed", "faults", "resets")


def _one(sim, seed, episodes, out, tag):
    env = dict(os.environ, SEED=str(seed), FUZZ_EPISODES=str(episodes), FUZZ_OUT=str(out),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    log = out.with_suffix(f".{seed}.log")
    code = ("from tb.run import run; import sys; "
            f"ran, failed = run({sim!r}, 'virtio_blk_ep', ['fuzz'], modules=['tb.cocotb_fuzz'], "
            f"build_tag={tag!r}); sys.exit(1 if failed or not ran else 0)")
    with open(log, "w") as f:
        r = subprocess.run([sys.executable, "-c", code], env=env, stdout=f,
                           stderr=subprocess.STDOUT, cwd=ROOT)
    return seed, r.returncode, log


def campaign(seeds, sim="verilator", episodes=24, base=None, jobs=1, name="fuzz",
             print_=print):
    """Run ``seeds`` seeds from ``base`` (random if None); returns the totals (a dict with
    ``seeds``, the counts of :data:`FIELDS`, ``violations`` and ``records``)."""
    if base is None:
        base = random.SystemRandom().randrange(1 << 32)
    outdir = ROOT / "build" / "fuzz"
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / f"{name}-{sim}.jsonl"
    out.unlink(missing_ok=True)
    print_(f"fuzz: {seeds} seeds from {base} on {sim}, {episodes} episodes each "
           f"(replay one with SEED=<seed> FUZZ_EPISODES={episodes})")
    seeds_list = [(base + i) & 0xffffffff for i in range(seeds)]
    failed_runs = []
    # Each simulator build directory serves one run at a time.
    free_tags = queue.Queue()
    for k in range(jobs):
        free_tags.put(f"{name}{k}")

    def task(seed):
        tag = free_tags.get()
        try:
            return _one(sim, seed, episodes, out, tag)
        finally:
            free_tags.put(tag)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for seed, code, log in pool.map(task, seeds_list):
            if code:
                failed_runs.append((seed, log))
            print_(f"fuzz: seed {seed}: {'FAIL' if code else 'ok'} ({log.name})")
    records = [json.loads(line) for line in out.read_text().splitlines()] \
        if out.exists() else []
    totals = {f: sum(r[f] for r in records) for f in FIELDS}
    violations = sum(r["violations"] for r in records)
    # A run that failed without a record of it (a crash, a build failure) counts too.
    for seed, log in failed_runs:
        if not any(r["seed"] == seed and r["violations"] for r in records):
            violations += 1
    passed = {r["seed"] for r in records}
    violations += sum(1 for seed in seeds_list
                      if seed not in passed and seed not in dict(failed_runs))
    for r in records:
        if r["violations"]:
            print_(f"fuzz: seed {r['seed']} stalls={r['stalls']}: {r['violations']} "
                   f"violations: {r['error']}")
    totals.update(seeds=seeds, violations=violations, records=records)
    return totals


def summary_line(t):
    return (f"fuzz: {t['seeds']} seeds, {t['requests']} requests, {t['malformed']} malformed, "
            f"{t['faults']} faults, {t['resets']} resets, {t['violations']} violations")
