"""The testbench's TLP checker and scoreboard must catch bad completions: each test here feeds
it a request and a completion with one thing wrong, and checks that it says so.

(The system tests only ever show it well-behaved completions; these prove it can fail.)
"""

import logging

import pytest
from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus
from cocotbext.pcie.core.utils import PcieId

from model import regmap as rm
from model.device import VirtioBlkModel
from model.params import DeviceParams
from tb.scoreboard import Scoreboard, framing_problem, read_byte_count, read_lower_address
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


def test_request_from_the_dut_is_an_error(board):
    req = Tlp()
    req.fmt_type = TlpType.MEM_READ
    req.requester_id = EP
    req.set_addr_be(0x1000, 4)
    board.completion(tlp_to_dws(req))
    assert any("has no DMA yet" in e for e in board.errors)


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
