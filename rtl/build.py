"""Generate Verilog for the endpoint: ``python -m rtl.build --out build/verilog``."""

import argparse
import os
import re

from amaranth.back import verilog

from model.params import VARIANTS
from .top import VirtioBlkEndpoint, VirtioBlkS7Endpoint


__all__ = ["generate", "write_verilog"]


# Yosys gives each module with combinational processes a dummy register, initialised to 0 and
# read by its ``always @*`` blocks, so that simulators evaluate those blocks at time 0. Icarus
# 11 does not treat the initialiser as an event, so a block whose inputs keep their initial
# values (the completer's ``rx.ready`` while idle) stays X forever. Writing the register once at
# time 0 makes it an event. Synthesis ignores the initial block (the register drives nothing).
#
# Yosys also writes one-statement ``always @*`` blocks (a reg's bits driven from a constant, or
# from a signal that may never change) without reading the register; Icarus would never run
# them. Each gets a read of its module's trigger register, which is created if missing.
_COMB_TRIGGER = re.compile(r"^  reg (\\\$auto\$verilog_backend\S*)\s*=\s*0;$", re.MULTILINE)
_ONE_LINE_ALWAYS = re.compile(r"^  always @\*\n    ([^\n]+;)$", re.MULTILINE)
_MODULE = re.compile(r"^module .*?^endmodule$", re.MULTILINE | re.DOTALL)


def _wake_module(text):
    blocks = _ONE_LINE_ALWAYS.findall(text)
    trigger = _COMB_TRIGGER.search(text)
    if blocks and trigger is None:
        name = "\\$auto$verilog_backend$build_py "
        decl = f"  reg {name} = 0;"
        text = re.sub(r"^(module [^;]*;\n)", lambda m: m.group(1) + decl + "\n", text, count=1,
                      flags=re.MULTILINE)
        trigger = _COMB_TRIGGER.search(text)
    if trigger is not None:
        name = trigger.group(1)
        text = _ONE_LINE_ALWAYS.sub(
            lambda m: f"  always @* begin\n    if ({name} ) begin end\n    {m.group(1)}\n  end",
            text)
        text = _COMB_TRIGGER.sub(
            lambda m: f"{m.group(0)}\n  initial #0 {m.group(1)} = 1'h1;", text)
    return text


def _wake_comb_at_time_zero(text):
    return _MODULE.sub(lambda m: _wake_module(m.group(0)), text)


def generate(name, params, out_dir):
    """Write ``<out_dir>/<name>.v`` with the endpoint for ``params`` as a top module called
    ``name`` (behind the 7-series hard block, :class:`~rtl.top.VirtioBlkS7Endpoint`, its ports
    the block's); returns its path."""
    top = VirtioBlkS7Endpoint(params) if params.hard_ip == "s7" else VirtioBlkEndpoint(params)
    return write_verilog(top, name, out_dir)


def write_verilog(top, name, out_dir):
    """:func:`generate` for any elaboratable ``top`` (the testbench's harness, for one)."""
    os.makedirs(out_dir, exist_ok=True)
    text = _wake_comb_at_time_zero(verilog.convert(top, name=name, emit_src=False))
    path = os.path.join(out_dir, f"{name}.v")
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return path      # unchanged: simulator builds stay up to date
    # Written whole and renamed: parallel test runs may generate the same variant at once.
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="build/verilog")
    parser.add_argument("--variant", choices=sorted(VARIANTS), action="append")
    args = parser.parse_args()
    for name in args.variant or sorted(VARIANTS):
        print(f"verilog: {generate(name, VARIANTS[name], args.out)}")


if __name__ == "__main__":
    main()
