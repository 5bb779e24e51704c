# amaranth: UnusedElaboratable=no
"""make board: the project rtl/board.py writes, checked without Vivado.

The Verilog's pcie_7x instance against the port list of the IP the Tcl creates, the Tcl's IP
settings against the model's values, the top's ports against the XDC's pins, and the
endpoint's interrupt and error ports against the core's ports of the same names.
"""

import os
import re
import subprocess

import pytest

from model import regmap as rm
from model.params import VARIANTS
from rtl import board as rb


PARAMS = VARIANTS["virtio_blk_ep_s7"]

# The port list of a generated pcie_7x v3.3 core with the interface options rtl/board.py sets
# (x1, 64 bits), as "<direction><width>:<name>" in the order of its declaration: Vivado 2018.1's
# pcie_7x_0_stub.v in github.com/defparam/BAR-Tender (fpga/vivado/BAR-Tender.srcs/sources_1/ip/
# pcie_7x_0/). The reference rtl.board.pcie_7x_ports() is checked against.
STUB_X1_64 = """
    o1:pci_exp_txp o1:pci_exp_txn i1:pci_exp_rxp i1:pci_exp_rxn o1:user_clk_out
    o1:user_reset_out o1:user_lnk_up o1:user_app_rdy o6:tx_buf_av o1:tx_cfg_req o1:tx_err_drop
    o1:s_axis_tx_tready i64:s_axis_tx_tdata i8:s_axis_tx_tkeep i1:s_axis_tx_tlast
    i1:s_axis_tx_tvalid i4:s_axis_tx_tuser i1:tx_cfg_gnt o64:m_axis_rx_tdata o8:m_axis_rx_tkeep
    o1:m_axis_rx_tlast o1:m_axis_rx_tvalid i1:m_axis_rx_tready o22:m_axis_rx_tuser i1:rx_np_ok
    i1:rx_np_req o32:cfg_mgmt_do o1:cfg_mgmt_rd_wr_done o16:cfg_status o16:cfg_command
    o16:cfg_dstatus o16:cfg_dcommand o16:cfg_lstatus o16:cfg_lcommand o16:cfg_dcommand2
    o3:cfg_pcie_link_state o1:cfg_pmcsr_pme_en o2:cfg_pmcsr_powerstate o1:cfg_pmcsr_pme_status
    o1:cfg_received_func_lvl_rst i32:cfg_mgmt_di i4:cfg_mgmt_byte_en i10:cfg_mgmt_dwaddr
    i1:cfg_mgmt_wr_en i1:cfg_mgmt_rd_en i1:cfg_mgmt_wr_readonly i1:cfg_trn_pending
    i1:cfg_pm_halt_aspm_l0s i1:cfg_pm_halt_aspm_l1 i1:cfg_pm_force_state_en
    i2:cfg_pm_force_state i64:cfg_dsn i1:cfg_interrupt o1:cfg_interrupt_rdy
    i1:cfg_interrupt_assert i8:cfg_interrupt_di o8:cfg_interrupt_do o3:cfg_interrupt_mmenable
    o1:cfg_interrupt_msienable o1:cfg_interrupt_msixenable o1:cfg_interrupt_msixfm
    i1:cfg_interrupt_stat i5:cfg_pciecap_interrupt_msgnum o1:cfg_to_turnoff i1:cfg_turnoff_ok
    o8:cfg_bus_number o5:cfg_device_number o3:cfg_function_number i1:cfg_pm_wake
    i1:cfg_pm_send_pme_to i8:cfg_ds_bus_number i5:cfg_ds_device_number
    i3:cfg_ds_function_number i1:cfg_mgmt_wr_rw1c_as_rw o1:cfg_bridge_serr_en
    o1:cfg_slot_control_electromech_il_ctl_pulse o1:cfg_root_control_syserr_corr_err_en
    o1:cfg_root_control_syserr_non_fatal_err_en o1:cfg_root_control_syserr_fatal_err_en
    o1:cfg_root_control_pme_int_en o1:cfg_aer_rooterr_corr_err_reporting_en
    o1:cfg_aer_rooterr_non_fatal_err_reporting_en o1:cfg_aer_rooterr_fatal_err_reporting_en
    o1:cfg_aer_rooterr_corr_err_received o1:cfg_aer_rooterr_non_fatal_err_received
    o1:cfg_aer_rooterr_fatal_err_received i2:pl_directed_link_change i2:pl_directed_link_width
    i1:pl_directed_link_speed i1:pl_directed_link_auton i1:pl_upstream_prefer_deemph
    o1:pl_sel_lnk_rate o2:pl_sel_lnk_width o6:pl_ltssm_state o2:pl_lane_reversal_mode
    o1:pl_phy_lnk_up o3:pl_tx_pm_state o2:pl_rx_pm_state o1:pl_link_upcfg_cap
    o1:pl_link_gen2_cap o1:pl_link_partner_gen2_supported o3:pl_initial_link_width
    o1:pl_directed_change_done o1:pl_received_hot_rst i1:pl_transmit_hot_rst
    i1:pl_downstream_deemph_source o7:cfg_vc_tcvc_map i1:sys_clk i1:sys_rst_n
"""
# The ports the error reporting interface (CONFIG.err_reporting_if true) adds to that list, with
# directions and widths: Xilinx's 7-series example design (github.com/Avnet/hdl,
# IP/xilinx_pcie_2_1_ep_7x/src/xilinx_pcie_2_1_ep_7x.v, pcie_7x_0_support.v) for names and
# widths, a generated 7-series core wrapper with every interface on (github.com/EEVengers/
# ThunderScope, .../design_1_xdma_0_0_pcie2_ip.v) for directions. Which of them the option adds
# could not be confirmed from a stub generated with it (see rtl/board.py).
ERR_PORTS = """
    i1:cfg_err_ecrc i1:cfg_err_ur i1:cfg_err_cpl_timeout i1:cfg_err_cpl_unexpect
    i1:cfg_err_cpl_abort i1:cfg_err_posted i1:cfg_err_cor i1:cfg_err_atomic_egress_blocked
    i1:cfg_err_internal_cor i1:cfg_err_malformed i1:cfg_err_mc_blocked i1:cfg_err_poisoned
    i1:cfg_err_norecovery i48:cfg_err_tlp_cpl_header o1:cfg_err_cpl_rdy i1:cfg_err_locked
    i1:cfg_err_acs i1:cfg_err_internal_uncor i128:cfg_err_aer_headerlog
    i5:cfg_aer_interrupt_msgnum o1:cfg_err_aer_headerlog_set o1:cfg_aer_ecrc_check_en
    o1:cfg_aer_ecrc_gen_en
"""
SMALL_DISK_KIB = 4      # the RAM disk's size does not change what is checked; small is fast


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """Both boards written once, with the default link, into a temporary directory."""
    out = tmp_path_factory.mktemp("board")
    return {name: rb.write_project(name, out_dir=out / name, ramdisk_kib=SMALL_DISK_KIB)
            for name in sorted(rb.BOARDS)}


def _read(path):
    with open(path) as f:
        return f.read()


def _top_module(text, name):
    match = re.search(rf"^module {name}\(.*?^endmodule", text, re.MULTILINE | re.DOTALL)
    assert match, f"no module {name}"
    return match.group(0)


def _declared_widths(module):
    """``{name: width}`` of the module's ports, wires and regs."""
    widths = {}
    for kind, msb, name in re.findall(
            r"^\s*(input|output|wire|reg)\s+(?:\[(\d+):0\]\s+)?(\\?\S+)\s*(?:=[^;]*)?;",
            module, re.MULTILINE):
        widths[name] = int(msb) + 1 if msb else 1
    return widths


def _ports(module):
    """``{name: (direction, width)}`` of the module's ports."""
    return {name: (kind, int(msb) + 1 if msb else 1) for kind, msb, name in re.findall(
        r"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?(\S+);", module, re.MULTILINE)}


def _instance_connections(module, cell, inst):
    match = re.search(rf"^\s*{cell} {inst} \((.*?)\n\s*\);", module, re.MULTILINE | re.DOTALL)
    assert match, f"no instance {inst} of {cell}"
    return dict(re.findall(r"\.(\w+)\(([^()]*)\)", match.group(1)))


def _tcl_config(tcl):
    return dict(re.findall(r"CONFIG\.(\w+) \{([^}]*)\}", tcl))


@pytest.mark.parametrize("name", sorted(rb.BOARDS))
def test_writes_every_file_of_the_project(projects, name):
    files = projects[name]
    assert set(files) == {"verilog", "xdc", "tcl", "sh"}
    for path in files.values():
        assert _read(path).strip(), path
    top = rb.TOP_PREFIX + name
    assert files["verilog"].endswith(f"{top}.v")
    tcl = _read(files["tcl"])
    assert f"set part {rb.BOARDS[name].part}\n" in tcl
    assert f"set top  {top}\n" in tcl
    assert f"read_xdc $here/{rb.BOARDS[name].xdc}" in tcl
    for step in ("synth_design", "place_design", "route_design", "report_utilization",
                 "report_timing_summary", "write_bitstream", "write_cfgmem -force -format bin"):
        assert step in tcl, step
    assert "vivado -mode batch" in _read(files["sh"])


def _port_tokens(text):
    ports = {}
    for token in text.split():
        kind, name = token.split(":")
        ports[name] = (kind[0], int(kind[1:]))
    return ports


def test_port_list_is_the_generated_cores():
    stub, err = _port_tokens(STUB_X1_64), _port_tokens(ERR_PORTS)
    assert not set(stub) & set(err)
    stub |= err
    x1 = rb.Link("x1", 1, "5.0_GT/s", "4'h2", 64, 125)
    assert rb.pcie_7x_ports(x1) == stub
    # At x4 the lanes are 4 bits wide, and nothing else changes.
    x4 = rb.pcie_7x_ports(rb.LINKS[rb.DEFAULT_LINK])
    lanes = {"pci_exp_txp", "pci_exp_txn", "pci_exp_rxp", "pci_exp_rxn"}
    assert {n: (d, 4 if n in lanes else w) for n, (d, w) in stub.items()} == x4


@pytest.mark.parametrize("name", sorted(rb.BOARDS))
def test_verilog_instantiates_the_core_with_the_ports_of_the_ip(projects, name):
    link = rb.LINKS[rb.DEFAULT_LINK]
    module = _top_module(_read(projects[name]["verilog"]), rb.TOP_PREFIX + name)
    conns = _instance_connections(module, rb.PCIE_IP, "pcie_7x_0_i")
    ports = rb.pcie_7x_ports(link)
    assert set(conns) == set(ports)
    widths = _declared_widths(module)
    def width_of(expr):
        expr = expr.strip()
        if expr.startswith("{"):        # a concatenation
            return sum(width_of(part) for part in expr.strip("{}").split(","))
        const = re.fullmatch(r"(\d+)'[hbd][0-9a-fA-F]+", expr)
        if const:
            return int(const.group(1))
        select = re.fullmatch(r"(\S+)\s*\[(\d+)(?::(\d+))?\]", expr)
        if select:                      # a slice of a wire
            assert select.group(1) in widths
            msb, lsb = int(select.group(2)), int(select.group(3) or select.group(2))
            return msb - lsb + 1
        return widths[expr]
    for port, expr in conns.items():
        assert width_of(expr) == ports[port][1], f"{port}: {expr}"
    # The Tcl's IP is the one instantiated, with these interface options and this data path.
    config = _tcl_config(_read(projects[name]["tcl"]))
    assert f"-module_name {rb.PCIE_IP} " in _read(projects[name]["tcl"])
    assert config["Interface_Width"] == f"{ports['s_axis_tx_tdata'][1]}_bit"
    assert config["Maximum_Link_Width"] == f"X{ports['pci_exp_txp'][1]}"
    for option in ("en_ext_clk", "shared_logic_in_core", "cfg_fc_if", "rcv_msg_if",
                   "PCIe_Debug_Ports"):
        assert config[option] == "false", option     # else the core has ports we do not list
    for option in ("pl_interface", "cfg_mgmt_if", "cfg_ctl_if", "cfg_status_if",
                   "err_reporting_if"):
        assert config[option] == "true", option
    # The error reporting ports are there (the function's errors reach the core, which completes
    # a rejected non-posted request), and those the function does not use are tied 0.
    for port in _port_tokens(ERR_PORTS):
        assert port in conns, port
    for port in ("cfg_err_ecrc", "cfg_err_cpl_timeout", "cfg_err_cor", "cfg_err_acs",
                 "cfg_err_aer_headerlog", "cfg_aer_interrupt_msgnum"):
        assert re.fullmatch(r"\d+'h0+", conns[port].strip()), (port, conns[port])
    tcl = _read(projects[name]["tcl"])
    assert "CONFIG.err_reporting_if {true}" in tcl
    assert "_stub.v" in tcl             # where to look if the core's port list differs
    # The reference clock buffer feeds the core.
    ibuf = _instance_connections(module, "IBUFDS_GTE2", "refclk_ibuf")
    assert ibuf["I"].strip() == "pcie_refclk_p" and ibuf["IB"].strip() == "pcie_refclk_n"
    assert ibuf["O"].strip() == conns["sys_clk"].strip()


def test_tcl_carries_the_model_values(projects):
    p = PARAMS
    config = _tcl_config(_read(projects["litefury"]["tcl"]))
    assert int(config["Vendor_ID"], 16) == rm.VENDOR_ID
    assert int(config["Device_ID"], 16) == rm.DEVICE_ID
    assert int(config["Revision_ID"], 16) == p.revision_id
    assert int(config["Subsystem_Vendor_ID"], 16) == p.subsystem_vendor_id
    assert int(config["Subsystem_ID"], 16) == p.subsystem_id
    assert int(config["Class_Code_Base"] + config["Class_Code_Sub"] +
               config["Class_Code_Interface"], 16) == rm.CLASS_CODE
    assert config["Use_Class_Code_Lookup_Assistant"] == "false"
    scale = {"Kilobytes": 1 << 10, "Megabytes": 1 << 20}[config["Bar0_Scale"]]
    assert int(config["Bar0_Size"]) * scale == p.bar0_size
    assert config["Bar0_64bit"] == ("true" if p.bar0_64bit else "false")
    assert config["Bar0_Type"] == "Memory"
    assert config["MSIx_Enabled"] == "true"
    assert int(config["MSIx_Table_Size"], 16) == p.msix_table_size
    assert int(config["MSIx_Table_Offset"], 16) * 8 == rm.MSIX_TABLE_OFFSET
    assert int(config["MSIx_PBA_Offset"], 16) * 8 == rm.MSIX_PBA_OFFSET
    bir = "BAR_1:0" if p.bar0_64bit else "BAR_0"
    assert config["MSIx_Table_BIR"] == config["MSIx_PBA_BIR"] == bir
    assert config["PCI_CFG_Space"] == "true"
    assert int(config["PCI_CFG_Space_Addr"], 16) * 4 == rm.S7_WINDOW[0]
    assert config["Max_Payload_Size"] == f"{128 << p.max_payload_size_supported}_bytes"
    # The block's MSI structure stays where the model has it (S7_CAPS), so MSI is on.
    assert dict((n, o) for n, o, _ in rm.S7_CAPS)["msi"] == 0x48
    assert config["MSI_Enabled"] == "true"
    # After synthesis the script checks the attributes the window depends on.
    tcl = _read(projects["litefury"]["tcl"])
    assert f"MSIX_CAP_NEXTPTR 8'h{rm.S7_WINDOW[0]:02X}" in tcl
    assert f"EXT_CFG_CAP_PTR 6'h{rm.S7_EXT_CFG_CAP_PTR:02X}" in tcl
    assert f"MSIX_CAP_TABLE_OFFSET 29'h{rm.MSIX_TABLE_OFFSET >> 3:X}" in tcl


@pytest.mark.parametrize("link", sorted(rb.LINKS))
def test_link_settings(link):
    config = rb.pcie_7x_config(PARAMS, rb.LINKS[link])
    speed, mhz = {"gen1x4": ("2.5_GT/s", "125"), "gen2x4": ("5.0_GT/s", "250")}[link]
    assert (config["Link_Speed"], config["User_Clk_Freq"]) == (speed, mhz)
    assert config["Maximum_Link_Width"] == "X4" and config["Interface_Width"] == "64_bit"


@pytest.mark.parametrize("name", sorted(rb.BOARDS))
def test_every_port_has_a_pin_and_every_pin_a_port(projects, name):
    module = _top_module(_read(projects[name]["verilog"]), rb.TOP_PREFIX + name)
    bits = set()
    for port, (_, width) in _ports(module).items():
        bits |= {port} if width == 1 else {f"{port}[{i}]" for i in range(width)}
    xdc = _read(projects[name]["xdc"])
    pinned = set(re.findall(r"PACKAGE_PIN\s+\w+\s+\[get_ports\s+\{?([\w\[\]]+)\}?\]", xdc))
    assert pinned == bits
    # Every other get_ports names ports of the top too (wildcards included).
    for pattern in re.findall(r"\[get_ports\s+\{?([\w\[\]*]+)\}?\]", xdc):
        regex = re.escape(pattern).replace(r"\*", r"\d+")
        assert any(re.fullmatch(regex, b) for b in bits), pattern
    # The GT placement of the Tcl is the board's.
    tcl = _read(projects[name]["tcl"])
    for lane, site in enumerate(rb.BOARDS[name].gt_locs):
        assert f"{lane} {site}" in tcl


# Vivado's commands as tclsh procedures: enough to run build.tcl through and see what it does to
# the netlist. The PCIE_2_1 cell starts with the attributes of a core whose MSI-X capability is
# the last of the list (next pointer 0), the GT channels at the IP's own sites.
VIVADO_STUB = r"""
proc log {args} { puts "stub: [join $args]" }
foreach cmd {create_project create_ip generate_target read_verilog read_xdc synth_design
             write_checkpoint opt_design place_design phys_opt_design route_design
             report_utilization report_timing_summary report_clocks write_bitstream
             write_cfgmem} { proc $cmd {args} "log $cmd \$args" }
proc get_ips {name} { return ip:$name }
proc get_files {name} { return file:$name }
proc get_timing_paths {args} { return path }
set cells(pcie) {pcie_7x_0_i/inst/inst/pcie_top_i/pcie_7x_i/pcie_block_i}
set props($cells(pcie),EXT_CFG_CAP_PTR) 6'h2A
set props($cells(pcie),MSIX_CAP_NEXTPTR) 8'h00
set props($cells(pcie),MSIX_CAP_TABLE_OFFSET) 29'h800
set props($cells(pcie),MSIX_CAP_PBA_OFFSET) 29'hA00
set props(path,SLACK) 0.1
proc get_cells {args} {
    global cells
    if {[string match *PCIE_2_1* $args]} { return [list $cells(pcie)] }
    set gts {}
    foreach lane {2 0 3 1} {
        lappend gts "pcie_7x_0_i/inst/inst/gt_top_i/pipe_wrapper_i/pipe_lane\[$lane\].gt_wrapper_i/gtp_channel.gtpe2_channel_i"
    }
    return $gts
}
proc get_property {name obj} { global props; return $props($obj,$name) }
proc set_property {args} {
    global props
    if {[lindex $args 0] eq "-dict"} { log set_property_dict; return }
    lassign $args name value objs
    foreach obj $objs { set props($obj,$name) $value; log set $name $value $obj }
}
proc reset_property {name objs} { foreach obj $objs { log reset $name $obj } }
source [lindex $argv 0]
"""


def test_build_tcl_runs_through_a_stub_of_vivado(projects, tmp_path):
    stub = tmp_path / "stub.tcl"
    stub.write_text(VIVADO_STUB)
    tcl = projects["litefury"]["tcl"]
    run = subprocess.run(["tclsh", str(stub), tcl], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    out = run.stdout.splitlines()
    # The attribute the IP left at 0 is set to the window; the others are as the IP made them.
    assert f"board: PCIE_2_1 MSIX_CAP_NEXTPTR is 8'h00, setting 8'h{rm.S7_WINDOW[0]:02X}" in out
    assert f"board: PCIE_2_1 EXT_CFG_CAP_PTR = 6'h{rm.S7_EXT_CFG_CAP_PTR:02X}" in out
    # Each GT channel goes to the site of its PIPE lane.
    for lane, site in enumerate(rb.BOARDS["litefury"].gt_locs):
        assert any(line.startswith("stub: set LOC " + site) and f"pipe_lane[{lane}]" in line
                   for line in out), (lane, site)
    steps = [line.split()[1] for line in out if line.startswith("stub: ")]
    order = ["synth_design", "reset", "place_design", "route_design", "write_bitstream",
             "write_cfgmem"]
    firsts = [steps.index(step) for step in order]      # each step happens, in this order
    assert firsts == sorted(firsts)


def test_a_bad_board_name_raises(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown board 'lightfury': BOARD must be one of "
                                         r"litefury, nitefury$"):
        rb.write_project("lightfury", out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"^unknown link 'gen3x4': LINK must be one of "
                                         r"gen1x4, gen2x4$"):
        rb.write_project("litefury", "gen3x4", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())


def test_main_says_vivado_is_not_on_path(projects, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))          # nothing there
    files = projects["litefury"]                        # what write_project wrote for it
    out = os.path.dirname(files["tcl"])
    calls = []
    monkeypatch.setattr(rb, "write_project", lambda *args: calls.append(args) or files)
    assert rb.main(["--board", "litefury", "--out", str(out)]) == 0
    assert calls == [("litefury", rb.DEFAULT_LINK, str(out), None)]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("board: vivado is not on PATH: wrote virtio_blk_litefury.v, "
                               "litefury.xdc, build.tcl, build.sh")
    assert lines[0].endswith(f"run: sh {out}/build.sh")
    monkeypatch.undo()
    assert rb.main(["--board", "lightfury", "--out", str(tmp_path / "x")]) == 2
    assert "unknown board 'lightfury'" in capsys.readouterr().err


def test_board_top_checks_its_arguments():
    with pytest.raises(ValueError, match=r"^the board build needs DeviceParams\(hard_ip=\"s7\"\)"):
        rb.S7BoardTop(VARIANTS["virtio_blk_ep"], rb.LINKS["gen1x4"], 4)
    with pytest.raises(ValueError, match=r"^ramdisk_kib must be a positive integer, not 0$"):
        rb.S7BoardTop(PARAMS, rb.LINKS["gen1x4"], 0)


def _aliases(module):
    """``find(net)``: the representative of a net of ``module`` through its plain
    ``assign a = b;`` statements (constants are not merged), and ``{wire: literal}`` of the
    wires assigned a constant."""
    parent = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x
    consts = {}
    for lhs, rhs in re.findall(r"^\s*assign (\w+) = ([\w']+);", module, re.MULTILINE):
        if re.fullmatch(r"\d+'[hbd][0-9a-fA-F]+", rhs):
            consts[lhs] = rhs
        else:
            parent[find(lhs)] = find(rhs)
    return find, consts


@pytest.mark.parametrize("name", sorted(rb.BOARDS))
def test_every_interrupt_and_error_member_reaches_the_core_port_of_its_name(projects, name):
    """Each member of the endpoint's ``irq`` and ``err`` is the same net as the core's port of
    that name, in the direction its signature gives. A member the endpoint drives with a
    constant (``cfg_interrupt_di``, ``cfg_interrupt_stat``) is folded by Amaranth into that
    constant on both sides: then the core's port must carry the same constant."""
    from amaranth.lib.wiring import Out
    from rtl.top import VirtioBlkS7Endpoint
    module = _top_module(_read(projects[name]["verilog"]), rb.TOP_PREFIX + name)
    core = _instance_connections(module, rb.PCIE_IP, "pcie_7x_0_i")
    ep = _instance_connections(module, re.escape(rf"\{rb.TOP_PREFIX}{name}.endpoint "),
                               "endpoint")
    find, consts = _aliases(module)
    ports = rb.pcie_7x_ports(rb.LINKS[rb.DEFAULT_LINK])
    members = VirtioBlkS7Endpoint(PARAMS).signature.members
    checked = 0
    for port in ("irq", "err"):
        for member, flow in members[port].signature.members.items():
            assert member in core, f"{port}.{member}: no core port {member}"
            assert ports[member][0] == ("i" if flow.flow == Out else "o"), member
            net = f"{port}__{member}"
            if net in ep:
                assert find(ep[net].strip()) == find(core[member].strip()), \
                    f"{port}.{member} is {ep[net].strip()}, the core's {member} is {core[member]}"
            else:
                assert net in consts, f"{port}.{member} is neither a port nor a constant"
                assert core[member].strip() == consts[net], (member, core[member], consts[net])
            checked += 1
    assert checked == 13
