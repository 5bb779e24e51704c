"""pytest entry for the cocotb system tests: every simulator, every build variant.

``SIM=verilator`` or ``SIM=icarus`` narrows the run to one simulator.

Which tests run on which build: the default build runs the foundation and the whole data path
(in two groups, so that the two cores share the longest run);
the QEMU build (32-bit BAR0, no MSI-X, so completions come by INTx and the ISR) runs the
foundation and the data-path tests whose interrupt path differs; the read-only build runs the
read-only test. ``io_headline`` (``make sim``) moves 4 MiB and runs on Verilator only, and so
does the QEMU build's random workload. The default build's group ``a`` also runs the hostile
input, reset, fault and flush tests; ``test_fuzz_smoke`` is CI's short fuzz campaign.

The build behind the 7-series hard block (``virtio_blk_ep_s7``) runs through the block's model
(``tb/hardblock.py``): a short group here, and every test that applies to it (:data:`BOARD_SIM`)
in ``tb/board_sim.py``, which only ``make board-sim`` names (its file name is not a test
module's, so ``make test`` never collects it).
"""

import os

import pytest

from model.params import VARIANTS
from .run import run, failure_report, sim_dir, cocotb_tests, SIMULATORS, TEST_MODULES


_sims = [s for s in SIMULATORS if os.environ.get("SIM", "") in ("", s)]

FOUNDATION = ["headline", "negotiation", "random_access", "unsupported_requests"]
# The default build's tests, in two groups that run side by side (each with its own simulator
# build): the long random workload and whole-disk sweeps, and everything else.
LONG = ["random_workload", "data_integrity"]
SHORT = ["request_types", "interrupt_suppression", "event_idx_interrupts", "flush_durability",
         "host_latency", "notification_data", "notification_data_bad",
         "notification_data_ahead"]
# Hostile input (tb/cocotb_robust.py): malformed rings and bad request content; resets.
ROBUST = ["malformed_loop", "malformed_chain_too_long", "malformed_next_out_of_range",
          "malformed_head_out_of_range", "malformed_avail_idx_ahead",
          "malformed_indirect_with_next", "malformed_nested_indirect",
          "malformed_indirect_length", "malformed_readable_after_writable",
          "malformed_header_status", "bad_data_length", "bad_sector_range", "bad_request_type",
          "bad_zero_length_descriptors", "bad_too_many_descriptors", "bad_queue_enable",
          "bad_register_phase",
          # Resets with requests in flight (tb/cocotb_reset.py), DMA faults (cocotb_faults.py).
          "reset_in_flight", "flr_in_flight", "dma_fault"]
# Behind the 7-series hard block: everything but what the block owns (the header's random
# accesses and unsupported requests are the block's business, not the function's) and FLR (the
# block as Vivado generates it has none: rtl/phy/s7_cfg.py).
BOARD_SIM = ["headline", "negotiation", "hard_block_split", "hard_block_intx",
             "hard_block_errors"] + SHORT + LONG + \
    [name for name in ROBUST if name != "flr_in_flight"]
# The tests make board-sim leaves out, and why; every other test of TEST_MODULES is in BOARD_SIM.
NOT_BOARD_SIM = {
    "random_access":        "the header's registers are the block's (its model's)",
    "unsupported_requests": "the block completes requests outside the window and BAR0 itself",
    "flr_in_flight":        "the block as Vivado generates it advertises no FLR",
    "read_only":            "the read-only build's test",
    "io_headline":          "make sim's 4 MiB run; headline covers the build",
}
SELECTION = {
    ("virtio_blk_ep", "b"):      LONG,
    ("virtio_blk_ep", "a"):      FOUNDATION + SHORT + ROBUST,
    ("virtio_blk_ep_qemu", ""):  FOUNDATION + ["request_types", "interrupt_suppression",
                                               "event_idx_interrupts", "flush_durability"],
    ("virtio_blk_ep_ro", ""):    ["read_only"],
    # make test's share of make board-sim: the split, INTx, the error registers, DRIVER_OK, each
    # request type, MSI-X, a malformed ring and a reset with requests in flight.
    ("virtio_blk_ep_s7", ""):    ["headline", "hard_block_split", "hard_block_intx",
                                  "hard_block_errors", "request_types", "interrupt_suppression",
                                  "malformed_loop", "reset_in_flight"],
}
ON_VERILATOR = {("virtio_blk_ep", "a"): ["io_headline"],
                # The INTx build's random workload: Verilator only (Icarus takes 6 minutes for
                # what the default build's Icarus run and make linux already cover).
                ("virtio_blk_ep_qemu", ""): ["random_workload"]}


def test_selection_covers_every_variant():
    assert sorted({v for v, _ in SELECTION}) == sorted(VARIANTS)


def test_selection_covers_every_test():
    """Every cocotb test of the modules make test runs is in some group (a test in none would
    never run), and every name in a group is a test (a typo would select nothing)."""
    selected = {n for names in (*SELECTION.values(), *ON_VERILATOR.values()) for n in names}
    defined = cocotb_tests(TEST_MODULES)
    assert sorted(defined - selected) == [], "cocotb tests that no group of make test selects"
    assert sorted(selected - defined) == [], "names in a group that are no cocotb test"


def test_board_sim_selection():
    """make board-sim (tb/board_sim.py) runs every cocotb test but those left out with a
    reason, and names only tests."""
    defined = cocotb_tests(TEST_MODULES)
    assert sorted(set(BOARD_SIM) - defined) == [], "names in BOARD_SIM that are no cocotb test"
    assert sorted(set(NOT_BOARD_SIM) - defined) == [], \
        "names in NOT_BOARD_SIM that are no cocotb test"
    assert sorted(set(BOARD_SIM) & set(NOT_BOARD_SIM)) == []
    assert sorted(defined - set(BOARD_SIM) - set(NOT_BOARD_SIM)) == [], \
        "cocotb tests that make board-sim neither runs nor leaves out with a reason"


# Longest first (Icarus, then the long group), so no core idles at the end of make test.
@pytest.mark.parametrize("toplevel,group", list(SELECTION))
@pytest.mark.parametrize("sim", sorted(_sims))
def test_system(sim, toplevel, group):
    key = (toplevel, group)
    tests = SELECTION[key] + (ON_VERILATOR.get(key, []) if sim == "verilator" else [])
    ran, failed = run(sim, toplevel, tests, build_tag=group or None)
    report = failure_report(sim, toplevel, group or None) if failed else []
    assert ran > 0 and failed == 0, \
        f"{failed} of {ran} cocotb tests failed; the simulator's output is in " \
        f"{sim_dir(sim, toplevel, group or None) / 'sim.log'}\n" + "\n".join(report)


# CI's fuzz smoke: a few seeds of tb/cocotb_fuzz.py (``make fuzz`` runs the long campaign).
FUZZ_SMOKE = {"verilator": (2, 6), "icarus": (1, 4)}     # seeds, episodes


@pytest.mark.parametrize("sim", sorted(_sims))
def test_fuzz_smoke(sim):
    from .fuzz import campaign, summary_line
    seeds, episodes = FUZZ_SMOKE[sim]
    totals = campaign(seeds, sim, episodes=episodes, jobs=1, name="smoke")
    print(summary_line(totals))
    assert totals["violations"] == 0, summary_line(totals)
