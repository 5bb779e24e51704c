"""pytest entry for ``make board-sim``: every system test that applies (:data:`BOARD_SIM` in
``tb/test_system.py``) on the build behind the 7-series hard block's model, per simulator.

Not a ``test_*.py`` file, so ``make test`` (``pytest tb tests``) never collects it; pytest
collects a file named on its command line whatever its name, which is how ``make board-sim``
runs it. ``SIM=`` narrows it to one simulator, ``N_REQUESTS=`` sets the random workload's length.
"""

import os

import pytest

from .run import run, failure_report, sim_dir, SIMULATORS
from .test_system import BOARD_SIM


@pytest.mark.parametrize("sim", [s for s in SIMULATORS if os.environ.get("SIM", "") in ("", s)])
def test_board_sim(sim):
    """Every system test that applies, on the build behind the 7-series hard block's model."""
    ran, failed = run(sim, "virtio_blk_ep_s7", BOARD_SIM, build_tag="board")
    report = failure_report(sim, "virtio_blk_ep_s7", "board") if failed else []
    assert ran > 0 and failed == 0, \
        f"{failed} of {ran} cocotb tests failed; the simulator's output is in " \
        f"{sim_dir(sim, 'virtio_blk_ep_s7', 'board') / 'sim.log'}\n" + "\n".join(report)
