# Ref: QEMU 7.2 docs/devel/multi-process.rst; include/hw/remote/mpqemu-link.h,
# hw/remote/mpqemu-link.c (message format and validity rules), hw/remote/proxy.c (what the proxy
# sends), hw/remote/message.c (how QEMU's own remote answers)
"""The wire format of QEMU 7.2's multi-process messages (``MPQemuMsg``), as the remote sees it.

A message is a 16-byte header (``int cmd``, 4 bytes of padding, ``size_t size``) followed by
``size`` bytes of data, at most 192; file descriptors travel beside it as ``SCM_RIGHTS``, on the
same ``sendmsg`` as the header. Host byte order, which is little-endian on x86_64. See
``docs/qemu-cosim-notes.md`` section 2 for the source citations.

Nothing here touches cocotb: the encoders and the :class:`MessageReader` are plain Python, so
the unit tests (``tests/test_qemu_bridge.py``) check them over socketpairs.
"""

import enum
import os
import socket
import struct
from dataclasses import dataclass, field


__all__ = ["Cmd", "Message", "ProtocolError", "ConfigAccess", "BarAccess", "SysmemRegion",
           "MessageReader", "HEADER", "MAX_DATA", "MAX_FDS",
           "encode", "encode_ret", "encode_config", "encode_bar", "encode_sysmem",
           "decode_config", "decode_bar", "decode_sysmem", "decode_ret", "send_message",
           "recv_available"]


class Cmd(enum.IntEnum):
    """``MPQemuCmd`` (mpqemu-link.h:35-45)."""
    SYNC_SYSMEM = 0
    RET = 1
    PCI_CFGWRITE = 2
    PCI_CFGREAD = 3
    BAR_WRITE = 4
    BAR_READ = 5
    SET_IRQFD = 6
    DEVICE_RESET = 7


# int cmd; (4 bytes padding); size_t size -- offsetof(MPQemuMsg, data.u64) = 16 (mpqemu-link.h:23)
HEADER = struct.Struct("<i4xQ")
# sizeof(MPQemuMsg.data): the largest member is SyncSysmemMsg, 3 * 8 * 8 bytes.
MAX_DATA = 192
# REMOTE_MAX_FDS (mpqemu-link.h:21): at most 8 fds per message.
MAX_FDS = 8

_CONFIG = struct.Struct("<IIi")        # PciConfDataMsg: u32 addr, u32 val, int len
_BAR = struct.Struct("<QQI?3x")        # BarAccessMsg: hwaddr addr, u64 val, unsigned size, bool
_SYSMEM = struct.Struct("<8Q8Q8q")     # SyncSysmemMsg: u64 gpas[8], u64 sizes[8], off_t offsets[8]
_U64 = struct.Struct("<Q")


class ProtocolError(Exception):
    """A message QEMU's own ``mpqemu_msg_valid`` would reject, or a broken stream."""


@dataclass
class Message:
    """One message: its command, its data bytes, and the fds that came with it (owned by the
    receiver, which must close them)."""
    cmd: Cmd
    data: bytes = b""
    fds: list = field(default_factory=list)


@dataclass(frozen=True)
class ConfigAccess:
    """``PciConfDataMsg``: a configuration access of ``length`` bytes at offset ``addr``."""
    addr: int
    value: int
    length: int


@dataclass(frozen=True)
class BarAccess:
    """``BarAccessMsg``: ``size`` bytes at guest-physical ``addr`` (absolute, proxy.c:245);
    ``value`` holds the byte at the lowest address in bits 7:0."""
    addr: int
    value: int
    size: int
    memory: bool


@dataclass(frozen=True)
class SysmemRegion:
    """One RAM section: ``size`` bytes of guest-physical memory at ``gpa``, found at ``offset``
    in the fd sent with it."""
    gpa: int
    size: int
    offset: int


# Per command: (data size or None for "any up to MAX_DATA", allowed fd counts).
# mpqemu-link.c:215-263 (mpqemu_msg_valid).
_RULES = {
    Cmd.SYNC_SYSMEM: (_SYSMEM.size, range(1, MAX_FDS + 1)),
    Cmd.RET: (None, range(0, 1)),
    Cmd.PCI_CFGWRITE: (_CONFIG.size, range(0, 1)),
    Cmd.PCI_CFGREAD: (_CONFIG.size, range(0, 1)),
    Cmd.BAR_WRITE: (_BAR.size, range(0, 1)),
    Cmd.BAR_READ: (_BAR.size, range(0, 1)),
    # interrupt, resample, and (patches/qemu-7.2-proxy-msi-bar64.patch) the write pipe.
    Cmd.SET_IRQFD: (0, range(2, 4)),
    Cmd.DEVICE_RESET: (None, range(0, 1)),
}


def _check(msg):
    size, nfds = _RULES[msg.cmd]
    if size is not None and len(msg.data) != size:
        raise ProtocolError(f"{msg.cmd.name} carries {len(msg.data)} bytes of data, "
                            f"must carry {size}")
    if len(msg.fds) not in nfds:
        raise ProtocolError(f"{msg.cmd.name} came with {len(msg.fds)} fds, must come with "
                            f"{nfds.start} to {nfds.stop - 1}")


# -- encoding --------------------------------------------------------------------------------

def encode(cmd, data=b""):
    """Header and data of one message, as bytes."""
    if len(data) > MAX_DATA:
        raise ValueError(f"message data is at most {MAX_DATA} bytes, not {len(data)}")
    return HEADER.pack(int(cmd), len(data)) + bytes(data)


def encode_ret(value=0, size=8):
    """``MPQEMU_CMD_RET`` carrying ``value`` as a u64 (``size`` 8), or nothing (``size`` 0, as
    QEMU's remote answers ``DEVICE_RESET``, message.c:226-228)."""
    if size not in (0, 8):
        raise ValueError(f"a RET carries 0 or 8 bytes, not {size!r}")
    return encode(Cmd.RET, _U64.pack(value & (1 << 64) - 1) if size else b"")


def encode_config(write, access):
    return encode(Cmd.PCI_CFGWRITE if write else Cmd.PCI_CFGREAD,
                  _CONFIG.pack(access.addr, access.value, access.length))


def encode_bar(write, access):
    return encode(Cmd.BAR_WRITE if write else Cmd.BAR_READ,
                  _BAR.pack(access.addr, access.value, access.size, access.memory))


def encode_sysmem(regions):
    """``SYNC_SYSMEM`` for up to 8 regions (send it with one fd per region)."""
    if not 1 <= len(regions) <= MAX_FDS:
        raise ValueError(f"SYNC_SYSMEM carries 1 to {MAX_FDS} regions, not {len(regions)}")
    pad = [0] * (MAX_FDS - len(regions))
    return encode(Cmd.SYNC_SYSMEM, _SYSMEM.pack(*[r.gpa for r in regions], *pad,
                                                *[r.size for r in regions], *pad,
                                                *[r.offset for r in regions], *pad))


# -- decoding --------------------------------------------------------------------------------

def decode_config(msg):
    addr, value, length = _CONFIG.unpack(msg.data)
    # [PCI-3.0 6.1] The proxy is a conventional PCI function: 256 bytes of configuration space
    # (proxy.c:224), accessed 1, 2 or 4 bytes at a time.
    if length not in (1, 2, 4) or addr + length > 256:
        raise ProtocolError(f"configuration access of {length} bytes at {addr:#x}")
    return ConfigAccess(addr, value, length)


def decode_bar(msg):
    addr, value, size, memory = _BAR.unpack(msg.data)
    # proxy_mr_ops.impl: accesses of 1 to 8 bytes (proxy.c:286-294).
    if size not in (1, 2, 4, 8):
        raise ProtocolError(f"BAR access of {size} bytes at {addr:#x}")
    return BarAccess(addr, value, size, memory)


def decode_sysmem(msg):
    """The regions of a ``SYNC_SYSMEM``, one per fd that came with it."""
    values = _SYSMEM.unpack(msg.data)
    n = len(msg.fds)
    return [SysmemRegion(values[i], values[8 + i], values[16 + i]) for i in range(n)]


def decode_ret(msg):
    return _U64.unpack(msg.data)[0] if len(msg.data) == 8 else None


# -- transport -------------------------------------------------------------------------------

def send_message(sock, raw, fds=()):
    """Send one encoded message, with ``fds`` on the same ``sendmsg`` (mpqemu-link.c:43-71)."""
    sent = socket.send_fds(sock, [raw], list(fds)) if fds else sock.send(raw)
    if sent < len(raw):
        sock.sendall(raw[sent:])


class MessageReader:
    """Reassembles messages from a stream socket, which may hand them over in pieces.

    Like ``mpqemu_read`` (mpqemu-link.c:130-154) it asks the socket for exactly the bytes the
    current message still lacks, so one ``recvmsg`` never spans two messages and the fds it
    returns belong to the message being read.

    Attributes
    ----------
    want : int
        Bytes the message being assembled still lacks (header first, then data).
    """
    def __init__(self):
        self._buf = bytearray()
        self._fds = []
        self._cmd = None
        self._size = None

    @property
    def want(self):
        if self._size is None:
            return HEADER.size - len(self._buf)
        return self._size - len(self._buf)

    def feed(self, data, fds=()):
        """Add bytes (at most :attr:`want`) and the fds that came with them; returns the
        finished :class:`Message` or None. Raises :class:`ProtocolError` on an unknown command,
        an oversized message, or one QEMU would reject (its fds are closed first)."""
        if len(data) > self.want:
            for fd in fds:
                os.close(fd)
            raise ProtocolError(f"fed {len(data)} bytes, the message lacks only {self.want}")
        self._buf += data
        self._fds += fds
        if self._size is None:
            if len(self._buf) < HEADER.size:
                return None
            cmd, size = HEADER.unpack(self._buf)
            self._buf.clear()
            try:
                self._cmd = Cmd(cmd)
            except ValueError:
                self._fail(f"unknown command {cmd}")
            if size > MAX_DATA:
                # mpqemu_read: "Invalid size for message"
                self._fail(f"{self._cmd.name} claims {size} bytes of data, at most {MAX_DATA}")
            self._size = size
        if len(self._buf) < self._size:
            return None
        msg = Message(self._cmd, bytes(self._buf), self._fds)
        self._buf, self._fds, self._cmd, self._size = bytearray(), [], None, None
        try:
            _check(msg)
        except ProtocolError:
            for fd in msg.fds:
                os.close(fd)
            raise
        return msg

    def _fail(self, why):
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        raise ProtocolError(why)


def recv_available(sock, reader):
    """Every message that can be read from the non-blocking ``sock`` now, in order. Raises
    ``EOFError`` when the peer has closed the stream."""
    out = []
    while True:
        try:
            data, fds, _flags, _addr = socket.recv_fds(sock, reader.want, MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return out
        if not data:
            for fd in fds:
                os.close(fd)
            raise EOFError("QEMU closed the proxy socket")
        msg = reader.feed(data, fds)
        if msg is not None:
            out.append(msg)
