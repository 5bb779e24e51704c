"""The testbench's TLP checker and scoreboard must catch bad TLPs: each test here feeds it a
request and a completion with one thing wrong, or a request of the DUT's own (DMA, MSI-X) that
breaks one rule, and checks that it says so.

(The system tests only ever show it well-behaved traffic; these prove it can fail.)
"""

import logging
import random

import pytest
from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus
from cocotbext.pcie.core.utils import PcieId

from model import regmap as rm
from model.device import VirtioBlkModel
from model.params import DeviceParams
from tb.scoreboard import Scoreboard, framing_problem, read_byte_count, read_lower_address
from tb.seed import seed_from_env
from tb.shim import tlp_to_dws


RC = PcieId(0, 0, 0)
EP = PcieId(1, 0, 0)


def cfg_read(register, tag=1):
    req = Tlp()
    req.fmt_type = TlpType.CFG_READ_0
    req.requester_id, req.completer_id, req.tag = RC, EP, tag
    req.set_addr_be(register * 4, 4)
    return req


def good_completion(req, data):
    cpl = Tlp.create_completion_data_for_tlp(req, EP)
    cpl.byte_count = 4
    cpl.lower_address = 0
    cpl.set_data(data)
    return cpl


@pytest.fixture
def board():
    sb = Scoreboard(VirtioBlkModel(DeviceParams()), logging.getLogger("test"))
    # The model learns its bus number from the first configuration write, as the RTL does.
    w = Tlp()
    w.fmt_type = TlpType.CFG_WRITE_0
    w.requester_id, w.completer_id, w.tag = RC, EP, 0
    w.set_addr_be_data(0x3c, b"\x00")
    sb.request(w)
    cpl = Tlp.create_completion_for_tlp(w, EP)
    cpl.byte_count = 4
    assert sb.completion(tlp_to_dws(cpl)) is not None
    assert sb.errors == []
    return sb


def test_matching_completion_passes(board):
    req = cfg_read(0)
    board.request(req)
    id_dw = (rm.DEVICE_ID << 16 | rm.VENDOR_ID).to_bytes(4, "little")
    assert board.completion(tlp_to_dws(good_completion(req, id_dw))) is not None
    board.check()
    assert board.compared_reads == 1


@pytest.mark.parametrize("fault, message", [
    ("data",           "data"),
    ("status",         "status"),
    ("byte_count",     "byte count"),
    ("lower_address",  "lower address"),
    ("completer_id",   "completer ID"),
    ("tag",            "matches no outstanding request"),
    ("requester_id",   "matches no outstanding request"),
    ("tc",             "TC/Attr"),
    ("no_data",        "type CPL, expected CPL_DATA"),
    ("locked",         "type CPL_LOCKED_DATA, expected CPL_DATA"),
    ("long",           "8 data bytes, expected 4"),
])
def test_bad_completion_is_an_error(board, fault, message):
    req = cfg_read(0, tag=7)
    board.request(req)
    cpl = good_completion(req, (rm.DEVICE_ID << 16 | rm.VENDOR_ID).to_bytes(4, "little"))
    if fault == "data":
        cpl.set_data(b"\xde\xad\xbe\xef")
    elif fault == "status":
        cpl.status = CplStatus.CA
    elif fault == "byte_count":
        cpl.byte_count = 8
    elif fault == "lower_address":
        cpl.lower_address = 4
    elif fault == "completer_id":
        cpl.completer_id = PcieId(2, 0, 0)
    elif fault == "tag":
        cpl.tag = 8
    elif fault == "requester_id":
        cpl.requester_id = PcieId(0, 1, 0)
    elif fault == "tc":
        cpl.tc = 1
    elif fault == "no_data":
        cpl = Tlp.create_completion_for_tlp(req, EP)
        cpl.byte_count = 4
    elif fault == "locked":
        cpl.fmt_type = TlpType.CPL_LOCKED_DATA
    elif fault == "long":
        cpl.byte_count = 8
        cpl.set_data(b"\xf4\x1a\x42\x10" * 2)
    board.completion(tlp_to_dws(cpl))
    assert any(message in e for e in board.errors), board.errors
    with pytest.raises(AssertionError):
        board.check()


def test_completion_without_request_is_an_error(board):
    cpl = good_completion(cfg_read(0, tag=9), b"\x00" * 4)
    board.completion(tlp_to_dws(cpl))
    assert any("matches no outstanding request" in e for e in board.errors)


def test_missing_completion_is_an_error(board):
    board.request(cfg_read(1, tag=3))
    with pytest.raises(AssertionError, match="no completion"):
        board.check()


@pytest.mark.parametrize("dws, problem", [
    ([], "empty"),
    # CplD, Length 1, but no payload DW.
    ([0x4a000001, 0x01000004, 0x00000100], "3 DWs, but Fmt 0b010 and Length 1 make 4"),
    # CplD, Length 2, one payload DW.
    ([0x4a000002, 0x01000008, 0x00000100, 0], "4 DWs, but Fmt 0b010 and Length 2 make 5"),
    # Cpl (no data) with a payload DW.
    ([0x0a000000, 0x01000004, 0x00000100, 0], "4 DWs, but Fmt 0b000 and Length 0 make 3"),
    ([0x9a000000], "prefixes"),
])
def test_framing(board, dws, problem):
    assert problem in framing_problem(dws)
    assert board.completion(dws) is None
    assert any("malformed TLP" in e for e in board.errors)


def test_framing_accepts_well_formed():
    assert framing_problem([0x4a000001, 0x01000004, 0x00000100, 0x12345678]) is None
    assert framing_problem([0x0a000000, 0x01000004, 0x00000100]) is None


@pytest.mark.parametrize("addr, length, first_be, last_be, count, lower", [
    # [PCIe-3.0 2.2.9] Byte Count and Lower Address of a single memory read completion.
    (0x1000, 1, 0xf, 0, 4, 0x00),
    (0x1004, 1, 0x6, 0, 2, 0x05),
    (0x1008, 1, 0x0, 0, 1, 0x08),       # zero-length read
    (0x1008, 2, 0xe, 0x1, 4, 0x09),
    (0x107c, 3, 0xc, 0x3, 8, 0x7e),     # long read: the CA completion still reports it
    (0x1000, 1024 % 1024, 0xf, 0xf, 0, 0x00),  # 1024 DW: 4096 bytes, encoded as 0
])
def test_read_byte_count_and_lower_address(addr, length, first_be, last_be, count, lower):
    req = Tlp()
    req.fmt_type = TlpType.MEM_READ
    req.address, req.length, req.first_be, req.last_be = addr, length, first_be, last_be
    assert read_byte_count(req) == count
    assert read_lower_address(req) == lower


# -- requests of the DUT (DMA and MSI-X) ---------------------------------------------------------

COMMAND_DW = 1
DEVCTL_DW = (rm.find_cap(DeviceParams(), "pcie").offset + 8) // 4
DEVCTL_RESET = 0x2810   # [PCIe-3.0 7.8.4] RO and No Snoop enabled, MPS 128 B, MRRS 512 B


def cfg_write(sb, dw, value, nbytes=4, tag=0, complete=True):
    """A Configuration Write from the RootComplex; with ``complete``, also the DUT's completion
    of it. Returns that completion."""
    w = Tlp()
    w.fmt_type = TlpType.CFG_WRITE_0
    w.requester_id, w.completer_id, w.tag = RC, EP, tag
    w.set_addr_be_data(dw * 4, value.to_bytes(nbytes, "little"))
    sb.request(w)
    cpl = Tlp.create_completion_for_tlp(w, EP)
    cpl.byte_count = 4
    if complete:
        assert sb.completion(tlp_to_dws(cpl)) is not None
    return cpl


def set_command(sb, value, **kwargs):
    return cfg_write(sb, COMMAND_DW, value, nbytes=2, **kwargs)


def set_devctl(sb, value):
    cfg_write(sb, DEVCTL_DW, value, nbytes=2)


def dut_read(addr, nbytes, tag=0, requester=EP):
    req = Tlp()
    req.fmt_type = TlpType.MEM_READ_64 if addr >> 32 else TlpType.MEM_READ
    req.requester_id, req.tag = requester, tag
    req.set_addr_be(addr, nbytes)
    return req


def dut_write(addr, data, requester=EP):
    req = Tlp()
    req.fmt_type = TlpType.MEM_WRITE_64 if addr >> 32 else TlpType.MEM_WRITE
    req.requester_id = requester
    req.set_addr_be_data(addr, data)
    return req


def send(sb, tlp):
    """The DUT sends ``tlp``; returns what the checker returns."""
    return sb.completion(tlp_to_dws(tlp))


def read_completions(req, cuts=(), data=None):
    """The completions a root complex returns for the DUT's read ``req``, split at the byte
    addresses ``cuts`` (each on a Read Completion Boundary) [PCIe-3.0 2.3.1.1]."""
    start = req.address + (next(k for k in range(4) if req.first_be >> k & 1)
                           if req.first_be else 0)
    end = start + (read_byte_count(req) or 4096)
    points = [start, *sorted(cuts), end]
    cpls = []
    for a, b in zip(points, points[1:]):
        cpl = Tlp.create_completion_data_for_tlp(req, RC)
        cpl.byte_count = end - a
        cpl.lower_address = a & 0x7f
        ndw = (a % 4 + b - a + 3) // 4
        cpl.set_data(data(4 * ndw) if data else bytes(4 * ndw))
        cpls.append(cpl)
    return cpls


def detected_parity_error(sb):
    return bool(sb.model.config_read(COMMAND_DW)[1] >> 16 & rm.STS_DETECTED_PARITY_ERROR)


@pytest.fixture
def dma(board):
    """The board after ``pci_set_master``: Memory Space and Bus Master Enable set."""
    set_command(board, rm.CMD_MEMORY_SPACE | rm.CMD_BUS_MASTER, tag=1)
    assert board.errors == []
    return board


def test_clean_dma_traffic_passes(dma):
    msix = dma.model.msix_table[1]
    msix.addr, msix.data = 0xfee0_0000, 0x4021
    reads = [
        dut_read(0x10000, 512, tag=0),              # MRRS-sized, four 128-byte completions
        dut_read(0x2_0000_1003, 77, tag=1),         # 4 DW header above 4 GB, unaligned ends
        dut_read(0x30ffc, 4, tag=31),               # last DW before a 4 KB boundary
        dut_read(0x40000, 0, tag=2),                # zero-length read: 1 DW, no byte enabled
    ]
    cuts = [(0x10080, 0x10100, 0x10180), (0x2_0000_1040,), (), ()]
    for req in reads:
        assert send(dma, req) is not None
    writes = [
        dut_write(0x50000, bytes(range(128))),      # MPS-sized
        dut_write(0x3_0000_0ff0, b"\x11" * 16),     # 4 DW header, ends on 4 KB
        dut_write(0x60001, b"\x42"),                # one byte: a virtio-blk status
        dut_write(0x70000, bytes(8)),               # QW aligned 2 DW: any byte enables [2.2.5]
        dut_write(0xfee0_0000, (0x4021).to_bytes(4, "little")),   # MSI-X vector 1
    ]
    writes[3].first_be, writes[3].last_be = 0b0101, 0b1010   # spans 8 bytes
    for req in writes:
        assert send(dma, req) is not None
    # Completions come back in any order across tags, in order within one read.
    cpls = [read_completions(r, c) for r, c in zip(reads, cuts)]
    for k in range(4):
        for c in cpls[::-1]:
            if k < len(c):
                dma.request(c[k])
    dma.check()
    assert (dma.dma_reads, dma.dma_read_bytes) == (4, 512 + 77 + 4 + 0)
    assert (dma.dma_writes, dma.dma_write_bytes) == (4, 128 + 16 + 1 + 8)
    assert dma.msi_writes == 1
    assert "4 reads (593 bytes), 4 writes (153 bytes), 1 MSI-X messages" in dma.summary()


def _fault(name):
    """A request of the DUT with one rule broken, and what the checker must say."""
    if name == "mwr_over_mps":
        return dut_write(0x1000, bytes(256)), "256 bytes exceeds Max_Payload_Size 128"
    if name == "mrd_over_mrrs":
        return dut_read(0x1000, 1024), "exceeds Max_Read_Request_Size 512"
    if name == "mrd_4k":
        return dut_read(0x1f80, 256), "cross a 4 KB boundary"
    if name == "mwr_4k":
        return dut_write(0x1fc0, bytes(128)), "cross a 4 KB boundary"
    if name in ("mrd_4dw_below_4g", "mwr_4dw_below_4g"):
        req = dut_read(0x1000, 64) if name.startswith("mrd") else dut_write(0x1000, bytes(64))
        req.fmt_type = TlpType.MEM_READ_64 if name.startswith("mrd") else TlpType.MEM_WRITE_64
        return req, "4 DW header for address 0x1000 below 4 GB"
    if name == "last_be_in_1dw":
        req = dut_read(0x1000, 4)
        req.last_be = 0xf
        return req, "Last DW BE 0b1111 in a 1 DW request"
    if name == "first_be_zero":
        req = dut_read(0x1000, 16)
        req.first_be = 0
        return req, "First DW BE 0b0000 in a 4 DW request"
    if name == "last_be_zero":
        req = dut_write(0x1000, bytes(8))
        req.last_be = 0
        return req, "Last DW BE 0b0000 in a 2 DW request"
    if name == "first_be_gap_3dw":
        req = dut_read(0x1000, 12)
        req.first_be = 0b0101
        return req, "First DW BE 0b0101 not contiguous"
    if name == "last_be_gap_3dw":
        req = dut_write(0x1000, bytes(12))
        req.last_be = 0b0110
        return req, "Last DW BE 0b0110 not contiguous"
    if name == "first_be_short_2dw_unaligned":
        req = dut_read(0x1004, 8)
        req.first_be = 0b0111     # leaves a hole before the second DW; not QW aligned
        return req, "First DW BE 0b0111 not contiguous"
    if name == "requester_id":
        return dut_read(0x1000, 64, requester=PcieId(2, 0, 0)), \
            "Requester ID 0x0200, expected 0x0100"
    if name == "tag_32":
        return dut_read(0x1000, 64, tag=32), "Tag 32 with Extended Tag Field Enable clear"
    if name == "io_write":
        req = Tlp()
        req.fmt_type = TlpType.IO_WRITE
        req.requester_id = EP
        req.set_addr_be_data(0x100, b"\0\0\0\0")
        return req, "DUT sent a IO_WRITE request; it only issues Memory Reads"
    if name == "locked_read":
        req = dut_read(0x1000, 4)
        req.fmt_type = TlpType.MEM_READ_LOCKED
        return req, "DUT sent a MEM_READ_LOCKED request"
    raise KeyError(name)


@pytest.mark.parametrize("name", [
    "mwr_over_mps", "mrd_over_mrrs", "mrd_4k", "mwr_4k", "mrd_4dw_below_4g", "mwr_4dw_below_4g",
    "last_be_in_1dw", "first_be_zero", "last_be_zero", "first_be_gap_3dw", "last_be_gap_3dw",
    "first_be_short_2dw_unaligned", "requester_id", "tag_32", "io_write", "locked_read",
])
def test_bad_dut_request_is_an_error(dma, name):
    req, message = _fault(name)
    send(dma, req)
    assert len(dma.errors) == 1 and message in dma.errors[0], dma.errors
    with pytest.raises(AssertionError):
        dma.check()


def test_4k_crossing_is_malformed_and_named(dma):
    # cocotbext-pcie's Tlp.check() rejects it too: the checker stops the test (None) but says
    # which rule, not only "malformed".
    assert send(dma, dut_write(0x2ff8, bytes(16))) is None
    assert "cross a 4 KB boundary [PCIe-3.0 2.2.7]" in dma.errors[0]


def test_limits_follow_device_control(dma):
    # MPS 256, MRRS 128, Extended Tags: what was wrong above is right now, and the reverse.
    set_devctl(dma, DEVCTL_RESET & ~(7 << 12 | 7 << 5) | 1 << 5 | 1 << 8)
    assert send(dma, dut_write(0x1000, bytes(256))) is not None
    assert send(dma, dut_read(0x2000, 128, tag=200)) is not None
    assert dma.errors == []
    send(dma, dut_read(0x3000, 256, tag=201))
    assert "Length 64 DW (256 bytes) exceeds Max_Read_Request_Size 128" in dma.errors[0]
    send(dma, dut_write(0x1000, bytes(512)))
    assert "payload 512 bytes exceeds Max_Payload_Size 256" in dma.errors[1]


@pytest.mark.parametrize("attr, enable, message", [
    (2, 1 << 4,  "Relaxed Ordering attribute with Enable Relaxed Ordering clear"),
    (1, 1 << 11, "No Snoop attribute with Enable No Snoop clear"),
])
def test_attributes_need_their_enables(dma, attr, enable, message):
    req = dut_write(0x1000, bytes(4))
    req.attr = attr
    assert send(dma, req) is not None
    assert dma.errors == []   # enabled at reset
    set_devctl(dma, DEVCTL_RESET & ~enable)
    send(dma, req)
    assert len(dma.errors) == 1 and message in dma.errors[0], dma.errors


def test_duplicate_outstanding_tag_is_an_error(dma):
    first = dut_read(0x1000, 64, tag=5)
    send(dma, first)
    for cpl in read_completions(first):
        dma.request(cpl)
    send(dma, dut_read(0x2000, 64, tag=5))       # the first read is done: the tag is free
    assert dma.errors == []
    send(dma, dut_read(0x3000, 64, tag=5))
    assert len(dma.errors) == 1 and "Tag 5 still outstanding" in dma.errors[0], dma.errors


def test_tag_32_with_extended_tags(dma):
    set_devctl(dma, DEVCTL_RESET | 1 << 8)
    req = dut_read(0x1000, 64, tag=255)
    send(dma, req)
    for cpl in read_completions(req):
        dma.request(cpl)
    dma.check()


def test_request_with_bus_master_disabled_is_an_error(board):
    for req in (dut_read(0x1000, 4), dut_write(0x1000, bytes(4))):
        send(board, req)
    assert len(board.errors) == 2
    assert all("Bus Master Enable is clear [PCIe-3.0 7.5.1.1]" in e for e in board.errors)


def test_msix_message_needs_bus_master_too(board):
    entry = board.model.msix_table[0]
    entry.addr, entry.data = 0xfee0_0000, 7
    send(board, dut_write(0xfee0_0000, (7).to_bytes(4, "little")))
    assert board.msi_writes == 1
    assert len(board.errors) == 1 and "DUT MSI-X write request" in board.errors[0]
    assert "Bus Master Enable is clear" in board.errors[0]


def test_bus_master_clear_takes_effect_with_its_completion(dma):
    cpl = set_command(dma, rm.CMD_MEMORY_SPACE, tag=2, complete=False)
    # The Configuration Write is in the DUT, its completion not out: the old value may hold.
    send(dma, dut_read(0x1000, 4, tag=1))
    send(dma, dut_write(0x1000, bytes(4)))
    assert dma.errors == []
    assert send(dma, cpl) is not None
    assert dma.errors == []
    send(dma, dut_write(0x1000, bytes(4)))
    assert len(dma.errors) == 1 and "Bus Master Enable is clear" in dma.errors[0], dma.errors


def test_bus_master_set_may_act_before_its_completion(board):
    cpl = set_command(board, rm.CMD_BUS_MASTER, tag=2, complete=False)
    # The DUT may apply the write and start DMA before the completion wins the link.
    send(board, dut_write(0x1000, bytes(4)))
    assert board.errors == []
    send(board, cpl)
    send(board, dut_write(0x1000, bytes(4)))
    assert board.errors == []


def test_command_write_that_never_completes_does_not_commit(dma):
    set_command(dma, rm.CMD_MEMORY_SPACE, tag=2, complete=False)
    # A later completion of another write must not commit the Command value.
    cfg_write(dma, 0x3c // 4, 0, nbytes=1, tag=3)
    send(dma, dut_write(0x1000, bytes(4)))
    assert dma.errors == []


def test_reset_restores_bus_master_reset_value(dma):
    dma.model.power_on_reset()
    dma.reset()
    send(dma, dut_write(0x1000, bytes(4)))
    assert "Bus Master Enable is clear" in dma.errors[0]


# -- completions to the DUT's reads ---------------------------------------------------------------

@pytest.mark.parametrize("fault, message", [
    ("byte_count",    "byte count 252, expected 256 (read of 256 bytes, 0 returned)"),
    ("later_count",   "byte count 192, expected 128 (read of 256 bytes, 128 returned)"),
    ("lower_address", "lower address 0x4, expected 0x0"),
    ("long_last",     "Length 17 DW, but the last 64 bytes from lower address 0x40 take 16"),
    ("off_rcb",       "ends at 0x1020, not on a Read Completion Boundary"),
    ("over_mps",      "payload 256 bytes exceeds the DUT's Max_Payload_Size 128"),
    ("tc",            "TC/Attr 2/0, request had 0/0"),
    ("no_data",       "type CPL with status SC answers a read"),
])
def test_bad_completion_to_dut_read_is_an_error(dma, fault, message):
    req = dut_read(0x1000, 256, tag=4)
    send(dma, req)
    cuts = {"off_rcb": (0x1020, 0x1080), "over_mps": (), "long_last": (0x1080, 0x10c0)}
    cpls = read_completions(req, cuts.get(fault, (0x1080,)))
    if fault == "byte_count":
        cpls[0].byte_count = 252
    elif fault == "later_count":
        cpls[1].byte_count = 192
    elif fault == "lower_address":
        cpls[0].lower_address = 4
    elif fault == "long_last":
        cpls[2].set_data(bytes(68))
    elif fault == "tc":
        cpls[0].tc = 2
    elif fault == "no_data":
        cpls = [Tlp.create_completion_for_tlp(req, RC)]
        cpls[0].byte_count = 256
    for cpl in cpls:
        dma.request(cpl)
    assert any(message in e for e in dma.errors), dma.errors
    with pytest.raises(AssertionError):
        dma.check()


def test_failed_completion_ends_the_read(dma):
    req = dut_read(0x1000, 256, tag=6)
    send(dma, req)
    dma.request(read_completions(req, (0x1080,))[0])
    ca = Tlp.create_ca_completion_for_tlp(req, RC)
    dma.request(ca)
    dma.check()
    # A second one is now an Unexpected Completion for the model, not a checker error.
    dma.request(ca)
    dma.check()


def test_poisoned_completion_to_dut_read_is_not_unexpected(dma):
    req = dut_read(0x1000, 64, tag=3)
    send(dma, req)
    (cpl,) = read_completions(req)
    cpl.ep = True
    dma.request(cpl)
    assert not detected_parity_error(dma)
    dma.check()
    # With the read retired, the same completion is unexpected: the model logs its poison.
    dma.request(cpl)
    assert detected_parity_error(dma)


def test_read_never_completed_is_an_error(dma):
    send(dma, dut_read(0x1000, 64, tag=9))
    with pytest.raises(AssertionError, match="the DUT's read never completed"):
        dma.check()


def test_read_partly_completed_is_an_error(dma):
    req = dut_read(0x1000, 256, tag=9)
    send(dma, req)
    dma.request(read_completions(req, (0x1080,))[0])
    with pytest.raises(AssertionError, match="128 returned"):
        dma.check()


def test_expected_timeouts(dma):
    dma.expect_timeouts = True
    send(dma, dut_read(0x1000, 64, tag=9))
    send(dma, dut_read(0x2000, 64, tag=9))    # the DUT timed the first out and reused its tag
    dma.check()


def test_abandoned_read(dma):
    send(dma, dut_read(0x1000, 64, tag=9))
    send(dma, dut_read(0x2000, 64, tag=10))
    dma.abandon(9)
    with pytest.raises(AssertionError, match="never completed.*0x2000"):
        dma.check()


def test_abandon_unknown_tag():
    sb = Scoreboard(VirtioBlkModel(DeviceParams()), logging.getLogger("test"))
    with pytest.raises(ValueError, match="^no read of the DUT with Tag 3 is outstanding$"):
        sb.abandon(3)


def test_dma_allowed(dma):
    calls = []

    def allowed(addr, length, is_write):
        calls.append((addr, length, is_write))
        return 0x10000 <= addr and addr + length <= 0x11000

    dma.dma_allowed = allowed
    entry = dma.model.msix_table[0]
    entry.addr, entry.data = 0xfee0_0000, 3
    send(dma, dut_write(0x10003, b"\x01"))
    send(dma, dut_read(0x10ff0, 16, tag=1))
    send(dma, dut_write(0xfee0_0000, (3).to_bytes(4, "little")))   # MSI-X: not DMA
    assert dma.errors == []
    assert calls == [(0x10003, 1, True), (0x10ff0, 16, False)]
    send(dma, dut_read(0x10ff0, 32, tag=2))
    assert len(dma.errors) == 1
    assert "DMA outside the driver's buffers: 32 bytes at 0x10ff0" in dma.errors[0]


def test_random_clean_dma_traffic():
    """DMA commands cut the way the engines cut them, completions split at random Read
    Completion Boundaries and interleaved across tags: no error, and every byte counted."""
    seed = seed_from_env()
    rng = random.Random(seed)
    sb = Scoreboard(VirtioBlkModel(DeviceParams()), logging.getLogger("test"))
    set_command(sb, rm.CMD_BUS_MASTER, tag=1)
    mps = 128 << rng.randrange(3)
    mrrs = 128 << rng.randrange(6)
    set_devctl(sb, DEVCTL_RESET & ~(7 << 12 | 7 << 5) | (mps.bit_length() - 8) << 5 |
               (mrrs.bit_length() - 8) << 12)
    free_tags = list(range(32))
    open_reads = []
    read_bytes = write_bytes = 0
    for _ in range(200):
        addr = rng.randrange(1 << rng.choice((32, 40)))
        length = rng.randrange(1, 3 * mrrs)
        is_write = rng.random() < 0.5
        limit = mps if is_write else mrrs
        while length:
            n = min(length, limit - addr % limit)
            if is_write:
                assert send(sb, dut_write(addr, bytes(n))) is not None
                write_bytes += n
            else:
                if not free_tags:
                    k = rng.randrange(len(open_reads))
                    tag, cpls = open_reads[k]
                    for cpl in cpls:
                        sb.request(cpl)
                    free_tags.append(tag)
                    del open_reads[k]
                tag = free_tags.pop(rng.randrange(len(free_tags)))
                req = dut_read(addr, n, tag=tag)
                assert send(sb, req) is not None
                read_bytes += n
                rcb = rng.choice((64, 128))
                # Cut at random RCB lines, and at every MPS line: a completion carries at
                # most MPS bytes.
                cuts = {a for a in range(addr - addr % rcb + rcb, addr + n, rcb)
                        if rng.random() < 0.5}
                cuts |= set(range(addr - addr % mps + mps, addr + n, mps))
                open_reads.append((tag, read_completions(req, cuts)))
            addr += n
            length -= n
    for tag, cpls in open_reads:
        for cpl in cpls:
            sb.request(cpl)
    sb.check()
    print(f"seed={seed}: {sb.summary()}")
    assert (sb.dma_read_bytes, sb.dma_write_bytes) == (read_bytes, write_bytes)
