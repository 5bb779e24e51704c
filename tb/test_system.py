"""pytest entry for the cocotb system tests: every test on every simulator and build variant.

``SIM=verilator`` or ``SIM=icarus`` narrows the run to one simulator.
"""

import os

import pytest

from model.params import VARIANTS
from .run import run, SIMULATORS


_sims = [s for s in SIMULATORS if os.environ.get("SIM", "") in ("", s)]


@pytest.mark.parametrize("toplevel", sorted(VARIANTS))
@pytest.mark.parametrize("sim", _sims)
def test_system(sim, toplevel):
    tests, failed = run(sim, toplevel)
    assert tests > 0 and failed == 0, f"{failed} of {tests} cocotb tests failed"
