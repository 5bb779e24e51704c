"""tb.run.failure_report: a failed system-test group names its failed cocotb tests, their seeds
and their error lines, so a CI log says what to replay without the simulator's whole output."""

from tb.run import failure_report


RESULTS = """<testsuites><testsuite name="all" tests="3" failures="1" errors="0">
<testcase name="headline/stalls=False" classname="tb.cocotb_endpoint"/>
<testcase name="random_workload/stalls=True" classname="tb.cocotb_blk">
<failure message="AssertionError"/></testcase>
<testcase name="request_types" classname="tb.cocotb_blk"/>
</testsuite></testsuites>"""

LOG = """\
     0.00ns INFO     cocotb.regression                  running tb.cocotb_endpoint.headline/stalls=False (1/3)
     0.00ns INFO     cocotb.tb                          seed=11 (replay with SEED=11)
   100.00ns INFO     cocotb.regression                  running tb.cocotb_blk.random_workload/stalls=True (2/3)
   100.00ns INFO     cocotb.tb                          seed=22 (replay with SEED=22)
   900.00ns ERROR    cocotb.tb                          request 7: status 1, model says 0
   950.00ns INFO     cocotb.regression                  random_workload/stalls=True failed
   960.00ns INFO     cocotb.regression                  running tb.cocotb_blk.request_types (3/3)
   960.00ns INFO     cocotb.tb                          seed=33 (replay with SEED=33)
   990.00ns ERROR    cocotb.tb                          not this test's line
"""


def test_failure_report_names_the_failed_test_and_its_seed(tmp_path):
    (tmp_path / "results.xml").write_text(RESULTS)
    (tmp_path / "sim.log").write_text(LOG)
    lines = failure_report("verilator", "virtio_blk_ep", where=tmp_path)
    assert lines[0].startswith("FAILED random_workload/stalls=True (SEED=22)")
    assert "--test random_workload" in lines[0]
    assert any("status 1, model says 0" in line for line in lines[1:])
    assert not any("SEED=11" in line or "SEED=33" in line or "not this test" in line
                   for line in lines)


def test_failure_report_of_a_passing_run_is_empty(tmp_path):
    (tmp_path / "results.xml").write_text(RESULTS.replace(
        '<failure message="AssertionError"/>', ""))
    (tmp_path / "sim.log").write_text(LOG)
    assert failure_report("verilator", "virtio_blk_ep", where=tmp_path) == []
