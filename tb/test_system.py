"""pytest entry for the cocotb system tests: every simulator, every build variant.

``SIM=verilator`` or ``SIM=icarus`` narrows the run to one simulator.

Which tests run on which build: the default build runs the foundation and the whole data path;
the QEMU build (32-bit BAR0, no MSI-X, so completions come by INTx and the ISR) runs the
foundation and the data-path tests whose interrupt path differs; the read-only build runs the
read-only test. ``io_headline`` (``make sim``) moves 4 MiB and runs on Verilator only.
"""

import os

import pytest

from model.params import VARIANTS
from .run import run, SIMULATORS


_sims = [s for s in SIMULATORS if os.environ.get("SIM", "") in ("", s)]

FOUNDATION = ["headline", "negotiation", "random_access", "unsupported_requests"]
DATA_PATH = ["request_types", "random_workload", "data_integrity", "interrupt_suppression",
             "event_idx_interrupts"]
SELECTION = {
    "virtio_blk_ep":      FOUNDATION + DATA_PATH,
    "virtio_blk_ep_qemu": FOUNDATION + ["request_types", "random_workload",
                                        "interrupt_suppression", "event_idx_interrupts"],
    "virtio_blk_ep_ro":   ["read_only"],
}
ON_VERILATOR = {"virtio_blk_ep": ["io_headline"]}


def test_selection_covers_every_variant():
    assert sorted(SELECTION) == sorted(VARIANTS)


@pytest.mark.parametrize("toplevel", sorted(VARIANTS))
@pytest.mark.parametrize("sim", _sims)
def test_system(sim, toplevel):
    tests = SELECTION[toplevel] + (ON_VERILATOR.get(toplevel, []) if sim == "verilator" else [])
    ran, failed = run(sim, toplevel, tests)
    assert ran > 0 and failed == 0, f"{failed} of {ran} cocotb tests failed"
