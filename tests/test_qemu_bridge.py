"""The QEMU co-simulation bridge without QEMU: the multi-process message format over
socketpairs, fd passing, the guest RAM map, completion splitting, INTx eventfd semantics and the
initramfs writer. Random tests take ``SEED`` (printed)."""

import gzip
import mmap
import os
import random
import socket
import stat
import struct
import types

import pytest
from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from tb.seed import seed_from_env
from tb.qemu import protocol as mp
from tb.qemu.guest_ram import GuestMemory, UnmappedAccess
from tb.qemu.remote import split_read_completions, QemuRemote, CosimTB, _dw_pieces
from tb.qemu import guest


@pytest.fixture
def pair():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


def receive(sock, reader=None):
    return mp.recv_available(sock, reader or mp.MessageReader())


# -- wire format -------------------------------------------------------------------------------

def test_header_layout():
    # int cmd at 0, 4 bytes of padding, size_t size at 8, data at 16 (mpqemu-link.h).
    raw = mp.encode(mp.Cmd.BAR_READ, bytes(24))
    assert len(raw) == 16 + 24
    assert struct.unpack_from("<i", raw, 0)[0] == 5
    assert raw[4:8] == bytes(4)
    assert struct.unpack_from("<Q", raw, 8)[0] == 24


def test_payload_layouts():
    cfg = mp.encode_config(True, mp.ConfigAccess(0x3c, 0x5a, 1))
    assert cfg[16:] == struct.pack("<IIi", 0x3c, 0x5a, 1) and len(cfg) == 16 + 12
    assert struct.unpack_from("<i", cfg)[0] == mp.Cmd.PCI_CFGWRITE
    bar = mp.encode_bar(False, mp.BarAccess(0xfebf0014, 0, 2, True))
    assert len(bar) == 16 + 24
    assert bar[16:] == struct.pack("<QQI", 0xfebf0014, 0, 2) + b"\x01\0\0\0"
    sync = mp.encode_sysmem([mp.SysmemRegion(0x100000, 0x1000, 0x2000)])
    assert len(sync) == 16 + 192
    assert struct.unpack_from("<Q", sync, 16)[0] == 0x100000        # gpas[0]
    assert struct.unpack_from("<Q", sync, 16 + 64)[0] == 0x1000     # sizes[0]
    assert struct.unpack_from("<q", sync, 16 + 128)[0] == 0x2000    # offsets[0]


def test_ret_encoding():
    raw = mp.encode_ret(0x1_0000_0042)
    assert raw == struct.pack("<i4xQQ", 1, 8, 0x1_0000_0042)
    assert mp.encode_ret(size=0) == struct.pack("<i4xQ", 1, 0)
    assert mp.encode_ret(-1)[16:] == b"\xff" * 8
    with pytest.raises(ValueError, match=r"^a RET carries 0 or 8 bytes, not 4$"):
        mp.encode_ret(1, size=4)
    with pytest.raises(ValueError, match=r"^message data is at most 192 bytes, not 193$"):
        mp.encode(mp.Cmd.RET, bytes(193))
    with pytest.raises(ValueError, match=r"^SYNC_SYSMEM carries 1 to 8 regions, not 9$"):
        mp.encode_sysmem([mp.SysmemRegion(0, 4096, 0)] * 9)


def test_round_trip_in_pieces(pair):
    """Messages sent whole and read in any fragmentation come out as they went in."""
    ours, theirs = pair
    rng = random.Random(seed_from_env())
    accesses = []
    stream = b""
    for _ in range(50):
        if rng.random() < 0.5:
            a = mp.ConfigAccess(rng.randrange(64) * 4, rng.randrange(1 << 32), 4)
            write = rng.random() < 0.5
            stream += mp.encode_config(write, a)
        else:
            a = mp.BarAccess(rng.randrange(1 << 32), rng.randrange(1 << 64),
                             rng.choice((1, 2, 4, 8)), True)
            write = rng.random() < 0.5
            stream += mp.encode_bar(write, a)
        accesses.append((write, a))
    reader = mp.MessageReader()
    got = []
    pos = 0
    while pos < len(stream):
        n = rng.randrange(1, 40)
        theirs.sendall(stream[pos:pos + n])
        pos += n
        got += receive(ours, reader)
    assert len(got) == len(accesses)
    for msg, (write, a) in zip(got, accesses):
        if isinstance(a, mp.ConfigAccess):
            assert msg.cmd == (mp.Cmd.PCI_CFGWRITE if write else mp.Cmd.PCI_CFGREAD)
            assert mp.decode_config(msg) == a
        else:
            assert msg.cmd == (mp.Cmd.BAR_WRITE if write else mp.Cmd.BAR_READ)
            assert mp.decode_bar(msg) == a
        assert msg.fds == []
    assert reader.want == 16


def test_fds_belong_to_their_message(pair):
    """SET_IRQFD's eventfds arrive with it even when a BAR write precedes it in the stream, and
    are the same eventfds (a write on the received fd is read on the original)."""
    ours, theirs = pair
    intr, resample = os.eventfd(0, os.EFD_NONBLOCK), os.eventfd(0, os.EFD_NONBLOCK)
    theirs.sendall(mp.encode_bar(True, mp.BarAccess(0x1000, 1, 4, True)))
    mp.send_message(theirs, mp.encode(mp.Cmd.SET_IRQFD), [intr, resample])
    theirs.sendall(mp.encode_bar(False, mp.BarAccess(0x1000, 0, 4, True)))
    msgs = receive(ours)
    assert [m.cmd for m in msgs] == [mp.Cmd.BAR_WRITE, mp.Cmd.SET_IRQFD, mp.Cmd.BAR_READ]
    assert msgs[0].fds == [] and msgs[2].fds == []
    r_intr, r_resample = msgs[1].fds
    os.eventfd_write(r_intr, 3)
    assert os.eventfd_read(intr) == 3
    os.eventfd_write(resample, 1)
    assert os.eventfd_read(r_resample) == 1
    for fd in (intr, resample, r_intr, r_resample):
        os.close(fd)


@pytest.mark.parametrize("raw, fds, message", [
    (struct.pack("<i4xQ", 9, 0), 0, r"^unknown command 9$"),
    (struct.pack("<i4xQ", 5, 193), 0, r"^BAR_READ claims 193 bytes of data, at most 192$"),
    (mp.encode(mp.Cmd.PCI_CFGREAD, bytes(8)), 0,
     r"^PCI_CFGREAD carries 8 bytes of data, must carry 12$"),
    (mp.encode(mp.Cmd.SET_IRQFD), 1, r"^SET_IRQFD came with 1 fds, must come with 2 to 3$"),
    (mp.encode(mp.Cmd.BAR_WRITE, bytes(24)), 1,
     r"^BAR_WRITE came with 1 fds, must come with 0 to 0$"),
    (mp.encode(mp.Cmd.SYNC_SYSMEM, bytes(192)), 0,
     r"^SYNC_SYSMEM came with 0 fds, must come with 1 to 8$"),
])
def test_invalid_messages(pair, raw, fds, message):
    """What QEMU's mpqemu_msg_valid rejects is rejected, and the fds that came with it are
    closed."""
    ours, theirs = pair
    sent = [os.eventfd(0) for _ in range(fds)]
    mp.send_message(theirs, raw, sent)
    before = set(os.listdir("/proc/self/fd"))
    with pytest.raises(mp.ProtocolError, match=message):
        receive(ours)
    assert set(os.listdir("/proc/self/fd")) <= before
    for fd in sent:
        os.close(fd)


def test_bad_accesses():
    with pytest.raises(mp.ProtocolError, match=r"^configuration access of 3 bytes at 0x10$"):
        mp.decode_config(mp.Message(mp.Cmd.PCI_CFGREAD, struct.pack("<IIi", 0x10, 0, 3)))
    with pytest.raises(mp.ProtocolError, match=r"^configuration access of 4 bytes at 0xfe$"):
        mp.decode_config(mp.Message(mp.Cmd.PCI_CFGREAD, struct.pack("<IIi", 0xfe, 0, 4)))
    with pytest.raises(mp.ProtocolError, match=r"^BAR access of 3 bytes at 0x1000$"):
        mp.decode_bar(mp.Message(mp.Cmd.BAR_READ, struct.pack("<QQI?3x", 0x1000, 0, 3, True)))


def test_eof(pair):
    ours, theirs = pair
    theirs.sendall(mp.encode_ret(7))
    assert mp.decode_ret(receive(ours)[0]) == 7
    theirs.close()
    with pytest.raises(EOFError):
        receive(ours)


# -- guest RAM ---------------------------------------------------------------------------------

def memfd(size):
    fd = os.memfd_create("guest-ram")
    os.ftruncate(fd, size)
    return fd


def test_sync_sysmem_and_dma(pair):
    """SYNC_SYSMEM's memfds, received over the socket, map guest-physical addresses onto the
    shared memory: DMA writes land in QEMU's copy and reads see QEMU's writes."""
    ours, theirs = pair
    page = mmap.PAGESIZE
    low, high = memfd(4 * page), memfd(8 * page)
    regions = [mp.SysmemRegion(0, 2 * page, 0), mp.SysmemRegion(2 * page, 2 * page, 2 * page),
               mp.SysmemRegion(0x100000, 4 * page, 4 * page)]
    mp.send_message(theirs, mp.encode_sysmem(regions), [low, low, high])
    msg, = receive(ours)
    assert mp.decode_sysmem(msg) == regions
    mem = GuestMemory()
    mem.sync(mp.decode_sysmem(msg), msg.fds)
    qemu_low = mmap.mmap(low, 4 * page)
    qemu_high = mmap.mmap(high, 8 * page)
    # A write across the two low sections (contiguous in guest-physical space).
    data = bytes(range(256)) * 2
    mem.write(2 * page - 256, data)
    assert qemu_low[2 * page - 256:2 * page + 256] == data
    qemu_high[4 * page + 100:4 * page + 104] = b"\xde\xad\xbe\xef"
    assert mem.read(0x100000 + 100, 4) == b"\xde\xad\xbe\xef"
    with pytest.raises(UnmappedAccess, match=r"^guest-physical 0x4000 is in no RAM section$"):
        mem.read(4 * page - 4, 8)
    # All or nothing: a write that runs off the map changes nothing.
    with pytest.raises(UnmappedAccess):
        mem.write(4 * page - 4, b"\x11" * 8)
    assert qemu_low[4 * page - 4:4 * page] == bytes(4)
    # A new sync replaces the map and closes the old fds.
    fds_before = set(msg.fds)
    other = memfd(page)
    mem.sync([mp.SysmemRegion(0x200000, page, 0)], [other])
    assert all(not os.path.exists(f"/proc/self/fd/{fd}") or fd == other for fd in fds_before)
    with pytest.raises(UnmappedAccess):
        mem.read(0, 4)
    mem.close()
    for m in (qemu_low, qemu_high):
        m.close()
    for fd in (low, high):
        os.close(fd)


def test_sync_rejects_unaligned_offset():
    fd = memfd(2 * mmap.PAGESIZE)
    mem = GuestMemory()
    with pytest.raises(ValueError, match=r"^RAM section at 0x0: offset 0x10 is not page "
                                         r"aligned$"):
        mem.sync([mp.SysmemRegion(0, mmap.PAGESIZE, 0x10)], [fd])
    with pytest.raises(ValueError, match=r"^SYNC_SYSMEM with 2 regions and 1 fds$"):
        mem.sync([mp.SysmemRegion(0, 1, 0)] * 2, [memfd(1)])


# -- completions for the DUT's reads -----------------------------------------------------------

def mem_read(addr, nbytes):
    req = Tlp()
    req.fmt_type = TlpType.MEM_READ
    req.requester_id = PcieId(0, 4, 0)
    req.tag = 17
    req.set_addr_be(addr, nbytes)
    return req


@pytest.mark.parametrize("max_bytes", [64, 128, 256])
def test_read_completions(max_bytes):
    """Completions return the read's bytes in order, each but the last ending on a multiple of
    max_bytes, with the Byte Count and Lower Address of PCIe 3.0 2.2.9."""
    rng = random.Random(seed_from_env())
    for _ in range(200):
        addr = rng.randrange(0, 0x10000)
        n = rng.randrange(1, 513)
        if (addr & 0xfff) + n > 0x1000:
            addr &= ~0xfff
        req = mem_read(addr, n)
        data = rng.randbytes(4 * req.length)
        cpls = split_read_completions(req, data, PcieId(0, 0, 0), max_bytes)
        assert b"".join(bytes(c.get_data()) for c in cpls) == data
        remaining = n
        pos = addr
        for i, c in enumerate(cpls):
            assert c.fmt_type == TlpType.CPL_DATA and c.tag == 17
            assert c.requester_id == PcieId(0, 4, 0)
            assert c.byte_count == remaining % 4096
            assert c.lower_address == pos & 0x7f
            assert len(c.get_data()) <= max_bytes
            end = (pos & ~3) + len(c.get_data())
            if i < len(cpls) - 1:
                assert end % max_bytes == 0
            remaining -= end - pos
            pos = end
            assert c.check()
        assert remaining <= 0 and remaining > -4


def test_read_completions_arguments():
    with pytest.raises(ValueError, match=r"^max_bytes must be a power of two of at least 64 "
                                         r"\(the RCB\), not 96$"):
        split_read_completions(mem_read(0, 4), bytes(4), PcieId(0, 0, 0), 96)
    with pytest.raises(ValueError, match=r"^8 data bytes for a 1 DW read$"):
        split_read_completions(mem_read(0, 4), bytes(8), PcieId(0, 0, 0))


def test_dw_pieces():
    assert _dw_pieces(0x3e, 4) == [(0x3e, 2), (0x40, 2)]
    assert _dw_pieces(0x04, 2) == [(0x04, 2)]
    assert _dw_pieces(0x07, 1) == [(0x07, 1)]


# -- INTx ------------------------------------------------------------------------------------

class FakeDut:
    def __init__(self):
        self.intx = types.SimpleNamespace(value="0")


def fake_remote(pair):
    tb = types.SimpleNamespace(dut=FakeDut(), log=None)
    remote = QemuRemote(tb, pair[0], PcieId(0, 4, 0))
    remote.intr_fd = os.eventfd(0, os.EFD_NONBLOCK)
    remote.resample_fd = os.eventfd(0, os.EFD_NONBLOCK)
    return tb.dut, remote


def writes(fd):
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def test_intx_level_with_resample(pair):
    """The interrupt eventfd is written when the line rises and again at each resample while
    it stays high, never while it is low (hw/remote/iohub.c's contract)."""
    dut, remote = fake_remote(pair)
    remote._service_intx()
    assert writes(remote.intr_fd) == 0
    dut.intx.value = "1"
    remote._service_intx()
    assert writes(remote.intr_fd) == 1
    remote._service_intx()                       # still high, no resample: nothing new
    assert writes(remote.intr_fd) == 0
    os.eventfd_write(remote.resample_fd, 1)      # QEMU lowered its pin after an access
    remote._service_intx()
    assert writes(remote.intr_fd) == 1
    dut.intx.value = "0"                         # the ISR read cleared it
    os.eventfd_write(remote.resample_fd, 1)
    remote._service_intx()
    assert writes(remote.intr_fd) == 0
    dut.intx.value = "1"
    remote._service_intx()
    assert writes(remote.intr_fd) == 1
    assert remote.interrupts == 3
    remote._close_irqfds()


def test_remote_arguments(pair):
    with pytest.raises(ValueError, match=r"^poll_cycles must be a positive int, not 0$"):
        QemuRemote(None, pair[0], PcieId(0, 4, 0), poll_cycles=0)
    with pytest.raises(ValueError, match=r"^idle_cycles must be an int of at least poll_cycles "
                                         r"\(16\), not 8$"):
        QemuRemote(None, pair[0], PcieId(0, 4, 0), idle_cycles=8)


def test_cosim_tb_needs_a_known_variant():
    with pytest.raises(ValueError, match=r"^toplevel 'nope' is none of"):
        CosimTB(types.SimpleNamespace(_name="nope"))


# -- the initramfs -------------------------------------------------------------------------------

def parse_newc(raw):
    """(name, mode, data, rdev) of each member, checking magic and 4-byte alignment."""
    out = []
    pos = 0
    while True:
        assert raw[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        f = [int(raw[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = f[11], f[6]
        name = raw[pos + 110:pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        data = raw[pos:pos + filesize]
        pos += filesize
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out, pos
        out.append((name, f[1], data, (f[9], f[10])))


def test_initramfs(tmp_path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox")
    root = tmp_path / "kernel"
    for _, rel in guest.MODULES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    extra = tmp_path / "extra"
    (extra / "usr" / "bin").mkdir(parents=True)
    (extra / "usr" / "bin" / "lspci").write_bytes(b"\x7fELF lspci")
    (extra / "usr" / "bin" / "lspci").chmod(0o755)
    (extra / "lib" / "x86_64-linux-gnu").mkdir(parents=True)
    (extra / "lib" / "x86_64-linux-gnu" / "libc.so.6").write_bytes(b"libc")
    (extra / "lib64").mkdir()
    (extra / "lib64" / "ld.so").symlink_to("/lib/x86_64-linux-gnu/libc.so.6")
    base = guest.base_initramfs(busybox, root, extra=extra)
    init = guest.render_init(2048, ["a.bin", "b.bin"])
    assert "@SECTORS@" not in init and "@FILES@" not in init and '"$size" = "2048"' in init and "for f in a.bin b.bin" in init
    raw = gzip.decompress(guest.run_initramfs(base, init, [("a.bin", b"xyz"), ("b.bin", b"")]))
    first, end = parse_newc(raw)
    second, _ = parse_newc(raw[end:])
    members = {name: (mode, data, rdev) for name, mode, data, rdev in first + second}
    assert members["dev/console"][0] == stat.S_IFCHR | 0o600 and \
        members["dev/console"][2] == (5, 1)
    assert members["bin/busybox"][1] == b"\x7fELF busybox"
    assert stat.S_ISLNK(members["bin/sh"][0]) and members["bin/sh"][1] == b"busybox"
    for name, rel in guest.MODULES:
        assert members[f"lib/modules/{name}.ko"][1] == rel.encode()
    assert members["init"][0] == stat.S_IFREG | 0o755 and members["init"][1] == init.encode()
    assert members["payload/a.bin"][1] == b"xyz"
    # The extra tree: files keep their mode, links their target; "lib" is not listed twice.
    assert members["usr/bin/lspci"][:2] == (stat.S_IFREG | 0o755, b"\x7fELF lspci")
    assert members["usr"][0] == stat.S_IFDIR | 0o755
    assert members["lib/x86_64-linux-gnu/libc.so.6"][1] == b"libc"
    assert stat.S_ISLNK(members["lib64/ld.so"][0]) and \
        members["lib64/ld.so"][1] == b"/lib/x86_64-linux-gnu/libc.so.6"
    assert [m[0] for m in first].count("lib") == 1


def test_payload_replays():
    a = guest.make_payload(1234)
    assert a == guest.make_payload(1234) and a != guest.make_payload(1235)
    assert all(len(d) % 1024 for _, d in a[:3])


# -- messages to TLPs ----------------------------------------------------------------------------

class FakeShim:
    """Answers injected requests from a dict of DWs, the way the DUT's completer would."""
    def __init__(self, config=None, bar=None, status=None):
        self.config = config or {}
        self.bar = bar or {}
        self.status = status
        self.requests = []
        self._local = {}

    async def inject(self, tlp):
        import asyncio
        await asyncio.sleep(0)
        self.requests.append(tlp)
        if not tlp.is_nonposted():
            return None
        from cocotbext.pcie.core.tlp import CplStatus
        if self.status is not None:
            return Tlp.create_completion_for_tlp(tlp, PcieId(0, 4, 0), status=self.status)
        if tlp.fmt_type == TlpType.CFG_WRITE_0:
            return Tlp.create_completion_for_tlp(tlp, PcieId(0, 4, 0))
        source = self.config if tlp.fmt_type == TlpType.CFG_READ_0 else self.bar
        cpl = Tlp.create_completion_data_for_tlp(tlp, PcieId(0, 4, 0))
        cpl.set_data(b"".join(source.get(tlp.address + 4 * i, 0).to_bytes(4, "little")
                              for i in range(tlp.length)))
        cpl.status = CplStatus.SC
        return cpl


def handle(pair, shim, raw):
    """Run one message through QemuRemote._handle; returns the RET QEMU would read."""
    import asyncio
    ours, theirs = pair
    tags = iter(range(1, 256))

    async def reset():
        shim.requests.append("reset")
    tb = types.SimpleNamespace(dut=FakeDut(), log=types.SimpleNamespace(
        warning=lambda *a: None, info=lambda *a: None,
        error=lambda *a: shim.requests.append(("logged error",) + a)), shim=shim,
        next_tag=lambda: next(tags), reset=reset,
        rings=types.SimpleNamespace(serve_all=lambda: shim.requests.append("model serves")))
    remote = QemuRemote(tb, ours, PcieId(0, 4, 0))
    theirs.sendall(raw)
    msg, = mp.recv_available(ours, mp.MessageReader())
    asyncio.run(remote._handle(msg))
    theirs.setblocking(False)
    try:
        return theirs.recv(64)
    except BlockingIOError:
        return None


def test_config_read_becomes_cfgrd0(pair):
    shim = FakeShim(config={0x00: 0x10421af4, 0x3c: 0x0000010a, 0x40: 0x44332211})
    ret = handle(pair, shim, mp.encode_config(False, mp.ConfigAccess(0x02, 0, 2)))
    assert ret == mp.encode_ret(0x1042)
    req, = shim.requests
    assert req.fmt_type == TlpType.CFG_READ_0
    assert req.completer_id == PcieId(0, 4, 0) and req.requester_id == PcieId(0, 0, 0)
    assert (req.address, req.first_be, req.length) == (0x00, 0b1100, 1)
    # An access across a DW boundary becomes two requests, and the bytes join up.
    shim.requests.clear()
    assert handle(pair, shim, mp.encode_config(False, mp.ConfigAccess(0x3e, 0, 4))) == \
        mp.encode_ret(0x22110000)
    assert [(r.address, r.first_be) for r in shim.requests] == [(0x3c, 0b1100), (0x40, 0b0011)]


def test_config_write_becomes_cfgwr0(pair):
    shim = FakeShim()
    ret = handle(pair, shim, mp.encode_config(True, mp.ConfigAccess(0x04, 0x0406, 2)))
    assert ret == mp.encode_ret(0)
    req, = shim.requests
    assert req.fmt_type == TlpType.CFG_WRITE_0 and req.completer_id == PcieId(0, 4, 0)
    assert (req.address, req.first_be) == (0x04, 0b0011)
    assert bytes(req.get_data()) == b"\x06\x04\x00\x00"


def test_config_read_error_is_all_ones(pair):
    from cocotbext.pcie.core.tlp import CplStatus
    shim = FakeShim(status=CplStatus.UR)
    assert handle(pair, shim, mp.encode_config(False, mp.ConfigAccess(0x10, 0, 4))) == \
        mp.encode_ret(0xffffffff)


def test_bar_accesses_become_memory_requests(pair):
    shim = FakeShim(bar={0xfebf8010: 0x87654321, 0xfebf8014: 0xcafef00d})
    assert handle(pair, shim, mp.encode_bar(False, mp.BarAccess(0xfebf8011, 0, 2, True))) == \
        mp.encode_ret(0x6543)
    req = shim.requests[-1]
    assert req.fmt_type == TlpType.MEM_READ and req.requester_id == PcieId(0, 0, 0)
    assert (req.address, req.first_be, req.length) == (0xfebf8010, 0b0110, 1)
    assert handle(pair, shim, mp.encode_bar(False, mp.BarAccess(0xfebf8010, 0, 8, True))) == \
        mp.encode_ret(0xcafef00d87654321)
    assert shim.requests[-1].length == 2
    # A write is posted: QEMU gets its RET, the DUT a Memory Write with the bytes in order.
    assert handle(pair, shim, mp.encode_bar(True, mp.BarAccess(0xfebf8016, 0xbeef, 2,
                                                               True))) == mp.encode_ret(0)
    # After a BAR write (a notification, perhaps) the golden model serves the rings.
    assert shim.requests.pop() == "model serves"
    req = shim.requests[-1]
    assert req.fmt_type == TlpType.MEM_WRITE
    assert (req.address, req.first_be) == (0xfebf8014, 0b1100)
    assert bytes(req.get_data()) == b"\x00\x00\xef\xbe"
    # I/O space: the function has none; all ones and no request.
    n = len(shim.requests)
    assert handle(pair, shim, mp.encode_bar(False, mp.BarAccess(0xc000, 0, 4, False))) == \
        mp.encode_ret(0xffffffff)
    # No request to the DUT; an error logged (QEMU took a memory BAR for an I/O one).
    assert len(shim.requests) == n + 1 and shim.requests[-1][0] == "logged error"
    assert "I/O-space BAR" in shim.requests[-1][1] and shim.requests[-1][2] == "read"


def test_device_reset_answers_empty_ret(pair):
    shim = FakeShim()
    assert handle(pair, shim, mp.encode(mp.Cmd.DEVICE_RESET)) == mp.encode_ret(size=0)
    assert shim.requests == ["reset"]


def test_raw_jobs_and_their_init_lines():
    """The guest's raw-device jobs: a depth-1 phase with every block size, then 32 jobs at
    once on separate regions (half in a shuffled block order), within the room after the
    file system; /init runs the first one by one and the second all at once, then waits."""
    import random as _random
    phases, payload = guest.raw_jobs(_random.Random(5), 16384, 131072 - 16384)
    d1, wide = phases
    assert [j.bs for j in d1] == [512, 4096, 65536, 131072]
    assert len(wide) == 32 and len({j.sector for j in wide}) == 32
    for jobs in phases:
        assert jobs[0].sector == 16384
        # dd seeks in blocks: every job starts at a multiple of its block size.
        assert all(j.sector * 512 % j.bs == 0 for j in jobs)
        for a, b in zip(jobs, jobs[1:]):
            assert b.sector * 512 >= a.sector * 512 + a.nbytes
        assert jobs[-1].sector * 512 + jobs[-1].nbytes <= 131072 * 512
    assert all(sorted(j.order) == list(range(j.count)) for j in wide if j.order)
    assert sum(1 for j in wide if j.order) == 16
    names = [n for n, _ in payload]
    assert names == [j.name for j in d1 + wide] and len(set(names)) == len(names)
    assert all(len(d) == j.nbytes == j.bs * j.count for j, (_, d) in zip(d1 + wide, payload))
    small, _ = guest.raw_jobs(_random.Random(5), 1024, 1024)     # a 1 MiB disk's second half
    assert all(j.sector * 512 + j.nbytes <= 2048 * 512 and j.sector * 512 % j.bs == 0
               for j in small[0] + small[1])
    odd, _ = guest.raw_jobs(_random.Random(5), 16395, 100000)    # an unaligned start
    assert all(j.sector * 512 % j.bs == 0 and j.sector >= 16395 for j in odd[0] + odd[1])
    with pytest.raises(ValueError, match="no room"):
        guest.raw_jobs(_random.Random(5), 1024, 4)
    init = guest.render_init(131072, ["a.bin"], phases, (16384 * 512, 8192),
                             (16400 * 512, 4096))
    assert "@" not in init.replace('"$@"', "")
    assert "blkzero /dev/vda 8396800 4096" in init
    for j in d1:
        assert f"\nraw_job {j.line(0)}\n" in init
    for k, j in enumerate(wide):
        assert f"raw_job {j.name} {j.sector} {j.bs} {j.count} $(({k} % cpus))" in init
    assert init.index("raw_job d1_131072") < init.index("raw_job d32_0") < \
        init.index("\nwait\n") < init.index("blkdiscard -o 8388608 -l 8192 /dev/vda")


def test_interrupt_write_records(pair):
    """An MSI-X message of the DUT goes to QEMU's write pipe as one 16-byte record per DW
    (address, length, data; patches/qemu-7.2-proxy-msi-bar64.patch), only the enabled bytes;
    without the pipe (an unpatched QEMU) it is refused."""
    dut, remote = fake_remote(pair)
    assert not remote._interrupt_write(0xfee0_1000, b"\x31\0\0\0", lambda i: True)
    r, w = os.pipe()
    remote.write_fd = w
    assert remote._interrupt_write(0xfee0_1000, b"\x31\x40\0\0", lambda i: True)
    assert os.read(r, 64) == struct.pack("<QI", 0xfee0_1000, 4) + b"\x31\x40\0\0"
    assert remote._interrupt_write(0xfee0_2000, b"\0\x22\x33\0", lambda i: i in (1, 2))
    assert os.read(r, 64) == struct.pack("<QI", 0xfee0_2001, 2) + b"\x22\x33\0\0"
    assert remote.interrupts == 2
    remote._close_irqfds()
    os.close(r)


def test_virtio_interrupts_from_proc_interrupts():
    from tb.qemu.cocotb_linux import _virtio_interrupts
    lines = ["COSIM: interrupts  24:     0      1   PCI-MSI 65536-edge   virtio0-config",
             "COSIM: interrupts  25:   120     33   PCI-MSI 65537-edge   virtio0-req.0",
             "COSIM: interrupts  26:     0      0   PCI-MSI 65538-edge   virtio0-req.1",
             "COSIM: interrupts  11:     5      0   IO-APIC  11-fasteoi  virtio0",
             "guest | 27: 9 9 virtio0-req.2"]
    assert _virtio_interrupts(lines) == {"config": 1, "req.0": 153, "req.1": 0}


def test_enabled_runs_write_each_run_at_once():
    """A partial write lands as runs of enabled bytes, one store each (a 2-byte ring index
    must never be seen half written)."""
    from tb.qemu.remote import _enabled_runs
    assert _enabled_runs(8, lambda i: i in (2, 3)) == [(2, 4)]
    assert _enabled_runs(8, lambda i: i in (0, 1, 5, 6, 7)) == [(0, 2), (5, 8)]
    assert _enabled_runs(4, lambda i: False) == []
    assert _enabled_runs(4, lambda i: True) == [(0, 4)]
