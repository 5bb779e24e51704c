"""The Verilog the simulators get: every combinational block must run at time 0 in Icarus."""

import re

from model.params import VARIANTS
from rtl.build import generate, _wake_comb_at_time_zero


def test_one_statement_blocks_get_the_time_zero_trigger():
    text = ("module m(a);\n  output [1:0] a;\n  reg [1:0] a;\n"
            "  reg \\$auto$verilog_backend.cc:1:dump_module$1  = 0;\n"
            "  always @*\n    a[1] = 1'h0;\n"
            "endmodule\n")
    out = _wake_comb_at_time_zero(text)
    assert "  always @* begin\n    if (\\$auto$verilog_backend.cc:1:dump_module$1 ) begin end\n" \
           "    a[1] = 1'h0;\n  end" in out
    assert "initial #0 \\$auto$verilog_backend.cc:1:dump_module$1 = 1'h1;" in out


def test_a_module_without_trigger_gets_one():
    text = "module m(a);\n  output a;\n  reg a;\n  always @*\n    a = 1'h0;\nendmodule\n"
    out = _wake_comb_at_time_zero(text)
    assert re.search(r"reg \\\$auto\$verilog_backend\S*\s*=\s*0;", out)
    assert "initial #0" in out and "if (" in out


def test_generated_verilog_has_no_block_icarus_would_never_run(tmp_path):
    path = generate("virtio_blk_ep", VARIANTS["virtio_blk_ep"], tmp_path)
    text = open(path).read()
    assert not re.search(r"^  always @\*\n    [^\n]+;$", text, re.MULTILINE)
    # Every module with an always @* block has its trigger written at time 0.
    for module in re.findall(r"^module .*?^endmodule$", text, re.MULTILINE | re.DOTALL):
        if "always @*" in module:
            assert "initial #0" in module
