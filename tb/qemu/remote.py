# Ref: QEMU 7.2 hw/remote/proxy.c, hw/remote/message.c, hw/remote/iohub.c (the remote's side of
# x-pci-proxy-dev); PCIe Base 3.0 sections 2.2.7 (request headers), 2.2.9 (Completion rules),
# 2.3.1.1 (data return for read requests)
"""The bridge between QEMU's proxy device and the DUT: the cocotb testbench as QEMU's remote.

* ``PCI_CFGREAD`` / ``PCI_CFGWRITE`` become Configuration Type 0 requests to the guest's Bus,
  Device and Function of the proxy, so the DUT's configuration space is the guest's view of the
  device, BAR0 included (the guest's firmware sizes and places it);
* ``BAR_READ`` / ``BAR_WRITE`` become Memory Reads and Writes at the guest-physical address, which
  the DUT decodes against the BAR0 the guest programmed;
* the DUT's own Memory Reads and Writes go to the guest RAM QEMU shares (:class:`DmaShim`);
* the DUT's ``intx`` level goes to QEMU's interrupt eventfd, re-sent after each resample while it
  stays high, as ``hw/remote/iohub.c`` does.

There is no RootComplex: the bridge is the root port. Every TLP into the DUT still passes the
scoreboard (:class:`tb.scoreboard.Scoreboard`), so the DUT's completions are compared with the
golden model's registers and its DMA requests are checked against the PCIe request rules.
"""

import logging
import os
import select
import struct
import time

from cocotb.utils import get_sim_time
from cocotbext.pcie.core.tlp import Tlp, TlpType, CplStatus
from cocotbext.pcie.core.port import SimPort
from cocotbext.pcie.core.utils import PcieId

from model.params import VARIANTS
from model.device import VirtioBlkModel
from ..shim import TlpShim, TlpTrace
from ..scoreboard import Scoreboard, read_byte_count
from ..testbench import CLOCK_NS, reset_dut, start_clock, wait_cycles
from ..seed import seed_from_env
from .guest_ram import GuestMemory, UnmappedAccess
from .rings import RingChecker
from . import protocol as mp


__all__ = ["DmaShim", "CosimTB", "QemuRemote", "ROOT_ID", "split_read_completions"]


# Requester ID of the requests the bridge makes for the guest's CPU, and Completer ID of the
# completions it returns for the DUT's reads: the root complex, 00:00.0.
ROOT_ID = PcieId(0, 0, 0)


def split_read_completions(req, data, completer_id, max_bytes=128):
    """The Completions with Data that return ``data`` for the Memory Read ``req``.

    [PCIe-3.0 2.3.1.1] A read may be answered by several completions; each one but the last
    ends on a naturally aligned multiple of the Read Completion Boundary (64 bytes for a root
    complex that may use either RCB). Here each ends on a multiple of ``max_bytes`` (a multiple
    of 64, no more than the requester's Max_Payload_Size), so none carries more than that.
    [PCIe-3.0 2.2.9] Byte Count is what remains to be returned, including this completion;
    Lower Address is the address of the first byte it returns.

    ``data`` is the whole DWs the request spans (``4 * req.length`` bytes).
    """
    if max_bytes < 64 or max_bytes % 64 or max_bytes & (max_bytes - 1):
        raise ValueError(f"max_bytes must be a power of two of at least 64 (the RCB), "
                         f"not {max_bytes!r}")
    length = req.length or 1024
    if len(data) != 4 * length:
        raise ValueError(f"{len(data)} data bytes for a {length} DW read")
    remaining = read_byte_count(req) or 4096
    first = next((k for k in range(4) if req.first_be >> k & 1), 0)
    byte_addr = req.address + first
    dw_addr = req.address
    done = 0
    out = []
    while done < length:
        boundary = (dw_addr // max_bytes + 1) * max_bytes
        n = min(length - done, (boundary - dw_addr) // 4)
        cpl = Tlp.create_completion_data_for_tlp(req, completer_id)
        cpl.byte_count = remaining % 4096       # 4096 is encoded as 0
        cpl.lower_address = byte_addr & 0x7f
        cpl.set_data(data[4 * done:4 * (done + n)])
        out.append(cpl)
        returned = 4 * n - (byte_addr & 3)
        remaining -= returned
        done += n
        dw_addr += 4 * n
        byte_addr = dw_addr
    return out


# [Intel SDM vol. 3 10.11.1] Memory writes here are MSI and MSI-X messages to the local APICs.
MSI_RANGE = (0xfee0_0000, 0xfef0_0000)


class DmaShim(TlpShim):
    """A :class:`tb.shim.TlpShim` that is its own root port: the DUT's Memory Reads and Writes
    are served from :class:`~tb.qemu.guest_ram.GuestMemory` here instead of going up a link.

    Parameters
    ----------
    dut, data_width, on_request, on_completion
        As for :class:`tb.shim.TlpShim` (no stalls: the guest is the workload).
    memory : GuestMemory
        Where the DUT's DMA lands.
    max_completion_bytes : int
        Largest completion returned for the DUT's reads (see :func:`split_read_completions`).
    log : logging.Logger

    Attributes
    ----------
    dma_errors : list of str
        DMA requests that touched no guest RAM (answered Unsupported Request, or dropped).
    """
    def __init__(self, dut, data_width, memory, *, max_completion_bytes=128, on_request=None,
                 on_completion=None, log=None):
        super().__init__(dut, data_width, on_request=on_request, on_completion=on_completion)
        self.memory = memory
        self.max_completion_bytes = max_completion_bytes
        self.dma_errors = []
        # Called as before_write(addr, payload, enabled) before a DUT write reaches guest RAM
        # (the golden model's ring checker, tb/qemu/rings.py).
        self.before_write = None
        # Called as interrupt_write(addr, payload, enabled) for a DUT write to the interrupt
        # address range (QemuRemote._interrupt_write); true if it was delivered.
        self.interrupt_write = None
        self.dlog = log or logging.getLogger("cocotb.qemu")
        # The cocotbext-pcie Device underneath runs a data link layer (flow-control DLLPs) that
        # needs a partner port; no TLP ever goes up it.
        self._link_partner = SimPort()
        self.upstream_port.connect(self._link_partner)

    def _to_host(self, tlp):
        """The DUT's TLPs that are no completion of the bridge's own requests: its memory
        reads and writes, served from guest RAM here."""
        if tlp.is_completion():
            self._dma_error(f"completion for no request of the bridge: {tlp!r}")
        elif tlp.fmt_type in (TlpType.MEM_READ, TlpType.MEM_READ_64):
            try:
                data = self.memory.read(tlp.address, 4 * (tlp.length or 1024))
            except UnmappedAccess as e:
                self._dma_error(f"DMA read: {e}: {tlp!r}")
                self._deliver(Tlp.create_ur_completion_for_tlp(tlp, ROOT_ID))
                return
            for cpl in split_read_completions(tlp, data, ROOT_ID, self.max_completion_bytes):
                self._deliver(cpl)
        elif tlp.fmt_type in (TlpType.MEM_WRITE, TlpType.MEM_WRITE_64):
            payload = bytes(tlp.get_data())
            length = tlp.length or 1024
            last = tlp.first_be if length == 1 else tlp.last_be

            def enabled(i):
                be = tlp.first_be if i < 4 else last if i >= 4 * (length - 1) else 0xf
                return bool(be >> (i % 4) & 1)
            if MSI_RANGE[0] <= tlp.address < MSI_RANGE[1]:
                if self.interrupt_write is None or \
                        not self.interrupt_write(tlp.address, payload, enabled):
                    self._dma_error(f"an interrupt message the bridge cannot deliver (no "
                                    f"write pipe from QEMU): {tlp!r}")
                return
            if self.before_write is not None:
                self.before_write(tlp.address, payload, enabled)
            try:
                if tlp.first_be == 0xf and (length == 1 or last == 0xf):
                    self.memory.write(tlp.address, payload)
                else:
                    # Partial DWs: only the enabled bytes [PCIe-3.0 2.2.5], each run of them
                    # in one store, so that a 2-byte index (used->idx, avail_event) never
                    # shows the guest one new byte and one old.
                    for lo, hi in _enabled_runs(4 * length, enabled):
                        self.memory.write(tlp.address + lo, payload[lo:hi])
            except UnmappedAccess as e:
                self._dma_error(f"DMA write dropped: {e}: {tlp!r}")
        else:
            self._dma_error(f"the DUT sent {tlp.fmt_type.name}, which the bridge does not "
                            f"serve: {tlp!r}")

    def _dma_error(self, msg):
        self.dlog.error("DMA: %s", msg)
        self.dma_errors.append(msg)


class CosimTB:
    """The co-simulation testbench: clock, reset, the golden model and scoreboard, the shim
    serving DMA from guest RAM. The counterpart of :class:`tb.testbench.TB` without a RootComplex.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel: any variant (MSI-X and a 64-bit BAR0 need QEMU with
        ``patches/qemu-7.2-proxy-msi-bar64.patch``, which ``make linux`` builds).
    max_completion_bytes : int
        See :func:`split_read_completions`.

    Raises
    ------
    ValueError
        If the toplevel is no known variant.
    """
    def __init__(self, dut, max_completion_bytes=128):
        self.dut = dut
        self.log = logging.getLogger("cocotb.qemu")
        self.log.setLevel(logging.INFO)
        name = dut._name
        if name not in VARIANTS:
            raise ValueError(f"toplevel {name!r} is none of {sorted(VARIANTS)}")
        self.params = VARIANTS[name]
        # COSIM_CAPACITY: the capacity the build was made with (scripts/linux/run.py builds the
        # variant with the disk's size, as a board build does with its RAM disk's).
        if os.environ.get("COSIM_CAPACITY"):
            self.params = self.params.replace(capacity=int(os.environ["COSIM_CAPACITY"]))
        self.seed = seed_from_env(self.log.info)
        self.model = VirtioBlkModel(self.params)
        self.scoreboard = Scoreboard(self.model, self.log)
        # [VIRTIO-1.2 4.1.4.5] The queue-interrupt bit of the ISR depends on when the DUT
        # completes requests, which the register model cannot know: accept it set or clear.
        self.scoreboard.isr_maybe = lambda: 1
        self.memory = GuestMemory()
        self.shim = DmaShim(dut, self.params.data_width, self.memory,
                            max_completion_bytes=max_completion_bytes,
                            on_request=self.scoreboard.request,
                            on_completion=self.scoreboard.completion, log=self.log)
        # The golden model on the guest's rings: every request the guest makes, compared.
        self.rings = RingChecker(self.model, self.memory, self.scoreboard.error, self.log,
                                 now=self.cycles)
        self.shim.before_write = self.rings.before_write
        # TLP_TRACE=<file>: a line per TLP with its cycle, as in the cocotb tests (off by
        # default).
        if os.environ.get("TLP_TRACE"):
            self.shim.trace = TlpTrace(os.environ["TLP_TRACE"], self.cycles)
        self._tag = 0
        self.clock_origin = start_clock(dut)

    async def reset(self):
        await reset_dut(self.dut, self.model, self.scoreboard, self.clock_origin)

    def next_tag(self):
        self._tag = (self._tag + 1) % 256
        return self._tag

    def cycles(self):
        return int(get_sim_time("ns") // CLOCK_NS)


class QemuRemote:
    """Serves QEMU's proxy device from the DUT until QEMU closes the socket.

    Parameters
    ----------
    tb : CosimTB
    sock : socket.socket
        Our end of the socketpair whose other end QEMU got as ``x-pci-proxy-dev,fd=N``; made
        non-blocking here.
    bdf : PcieId
        Where the guest sees the proxy device (its ``addr=`` on the root bus): the Completer ID
        of every configuration request, so the DUT captures the Bus and Device Numbers the
        guest uses [PCIe-3.0 2.2.6.2].
    poll_cycles : int
        Clock cycles between two looks at the socket and the interrupt line.
    idle_cycles : int
        Cycles without any TLP, storage command or interrupt change after which the DUT counts
        as idle: the bridge then waits in ``select`` (up to ``idle_wait`` seconds) instead of
        running the clock, leaving the CPU to QEMU's vCPU.
    idle_wait : float
        Seconds of one such wait.
    activity : callable
        Returns a value that changes whenever the design outside the TLP streams does something
        (the storage back-end's counters), folded into the idle test.
    on_poll : callable
        Called once per poll (the console tail, the wall-clock deadline); may raise.
    stall_report_s : float
        Wall-clock seconds without any activity after which the queues' state is logged
        (once per such stretch): the guest may just be idle, or waiting for a notification
        that never came.
    stall_fail_s : float
        Wall-clock seconds without any activity, with requests the guest made available and
        the device has not completed, after which the run fails (:class:`TimeoutError`): the
        device, the bridge or QEMU lost a notification or an interrupt.

    Attributes
    ----------
    counts : dict
        Messages handled, by command name.
    interrupts : int
        Times the interrupt eventfd was written.
    """
    def __init__(self, tb, sock, bdf, *, poll_cycles=16, idle_cycles=1024, idle_wait=0.005,
                 activity=None, on_poll=None, stall_report_s=20.0, stall_fail_s=90.0):
        if not isinstance(poll_cycles, int) or poll_cycles < 1:
            raise ValueError(f"poll_cycles must be a positive int, not {poll_cycles!r}")
        if not isinstance(idle_cycles, int) or idle_cycles < poll_cycles:
            raise ValueError(f"idle_cycles must be an int of at least poll_cycles "
                             f"({poll_cycles}), not {idle_cycles!r}")
        self.tb = tb
        self.dut = tb.dut
        self.log = tb.log
        self.sock = sock
        sock.setblocking(False)
        self.bdf = bdf
        self.poll_cycles = poll_cycles
        self.idle_cycles = idle_cycles
        self.idle_wait = idle_wait
        self.stall_report_s = stall_report_s
        self.stall_fail_s = stall_fail_s
        self.activity = activity or (lambda: None)
        self.on_poll = on_poll or (lambda: None)
        self.reader = mp.MessageReader()
        if tb is not None and hasattr(tb, "shim"):
            tb.shim.interrupt_write = self._interrupt_write
        self.intr_fd = None
        self.resample_fd = None
        self.write_fd = None
        self._line = False
        self.counts = {c.name: 0 for c in mp.Cmd}
        self.interrupts = 0
        self.idle_waits = 0
        self.io_accesses = 0
        self._layout = None

    # -- the loop --------------------------------------------------------------------------------

    async def serve(self):
        """Handle messages until QEMU closes the socket (the guest powered off)."""
        idle = 0
        last = None
        still_since, reported = time.monotonic(), False
        try:
            while True:
                self.on_poll()
                try:
                    msgs = mp.recv_available(self.sock, self.reader)
                except EOFError:
                    self.log.info("QEMU closed the socket")
                    return
                for msg in msgs:
                    await self._handle(msg)
                self._service_intx()
                sig = (self.shim.rx_count, self.shim.tx_count, self.shim.rx_pending,
                       self._line, self.activity())
                if msgs or sig != last:
                    idle, last = 0, sig
                    still_since, reported = time.monotonic(), False
                else:
                    idle += self.poll_cycles
                    if not reported and time.monotonic() - still_since > self.stall_report_s:
                        # Nothing moved for a while: say where every queue stands.
                        reported = True
                        self.log.warning("no TLP, message or back-end command for %.0f s; the "
                                         "queues:", self.stall_report_s)
                        for line in self.tb.rings.describe():
                            self.log.warning("  %s", line)
                    # Requests in flight and nothing moving: a lost notification or
                    # interrupt. Fail now rather than at the run's deadline. (Guest memory is
                    # looked at only once the time is up, not on every idle poll.)
                    stuck = time.monotonic() - still_since > self.stall_fail_s and \
                        self.tb.rings.outstanding()
                    if stuck:
                        raise TimeoutError(
                            f"stalled: queues {stuck} have requests the device has not "
                            f"completed and nothing moved for {self.stall_fail_s:.0f} s: "
                            + "; ".join(self.tb.rings.describe()))
                if idle >= self.idle_cycles and not self.tb.shim._local:
                    # Nothing moves in the DUT: let QEMU run until it sends something.
                    self.idle_waits += 1
                    fds = [self.sock] + ([self.resample_fd] if self.resample_fd is not None
                                         else [])
                    select.select(fds, [], [], self.idle_wait)
                await wait_cycles(self.dut.clk, self.poll_cycles, CLOCK_NS,
                                  self.tb.clock_origin)
        finally:
            self._close_irqfds()

    @property
    def shim(self):
        return self.tb.shim

    def _reply(self, value=0, size=8):
        # QEMU's vCPU waits for this in a blocking read: the socket never fills up.
        self.sock.setblocking(True)
        try:
            mp.send_message(self.sock, mp.encode_ret(value, size))
        finally:
            self.sock.setblocking(False)

    async def _handle(self, msg):
        self.counts[msg.cmd.name] += 1
        if msg.cmd == mp.Cmd.PCI_CFGREAD:
            a = mp.decode_config(msg)
            self._reply(await self.config_read(a.addr, a.length))
        elif msg.cmd == mp.Cmd.PCI_CFGWRITE:
            a = mp.decode_config(msg)
            await self.config_write(a.addr, a.value, a.length)
            self._reply(0)
        elif msg.cmd == mp.Cmd.BAR_READ:
            a = mp.decode_bar(msg)
            if not a.memory:
                self._io_access("read", a)
            self._reply(await self.bar_read(a.addr, a.size) if a.memory else
                        (1 << 8 * a.size) - 1)
        elif msg.cmd == mp.Cmd.BAR_WRITE:
            a = mp.decode_bar(msg)
            if a.memory:
                await self.bar_write(a.addr, a.value, a.size)
            else:
                self._io_access("write", a)
            self._reply(0)
        elif msg.cmd == mp.Cmd.SYNC_SYSMEM:
            regions = mp.decode_sysmem(msg)
            self.tb.memory.sync(regions, msg.fds)
            # QEMU resends the map at every change of the guest's memory topology (dozens per
            # boot); log only a new layout.
            layout = [(r.gpa, r.size) for r in regions]
            if layout != self._layout:
                self._layout = layout
                self.log.info("guest RAM: %s", ", ".join(f"{r.size:#x} bytes at {r.gpa:#x}"
                                                         for r in regions))
        elif msg.cmd == mp.Cmd.SET_IRQFD:
            self._close_irqfds()
            self.intr_fd, self.resample_fd = msg.fds[:2]
            # The proxy's pipe for the writes it makes for us (our MSI-X messages).
            self.write_fd = msg.fds[2] if len(msg.fds) > 2 else None
            os.set_blocking(self.resample_fd, False)
            self._line = False
        elif msg.cmd == mp.Cmd.DEVICE_RESET:
            self.log.info("DEVICE_RESET")
            await self.tb.reset()
            self._line = False
            # QEMU's own remote answers a reset with an empty RET (message.c:226-228).
            self._reply(size=0)
        else:
            raise mp.ProtocolError(f"QEMU sent {msg.cmd.name}, which a remote never gets")

    def _io_access(self, kind, a):
        """The device has no I/O BAR: an I/O access means QEMU took a memory BAR for one (as
        it did a 64-bit BAR0 before patches/qemu-7.2-proxy-msi-bar64.patch). Reads get all
        ones; said once, loudly."""
        if not self.io_accesses:
            self.log.error("QEMU sent an I/O-space BAR %s (%d bytes at %#x): the device has no "
                           "I/O BAR; answered as a master abort", kind, a.size, a.addr)
        self.io_accesses += 1

    # -- configuration -----------------------------------------------------------------------

    def _config_tlp(self, write, addr, data_or_len):
        tlp = Tlp()
        tlp.fmt_type = TlpType.CFG_WRITE_0 if write else TlpType.CFG_READ_0
        tlp.requester_id = ROOT_ID
        tlp.completer_id = self.bdf
        tlp.tag = self.tb.next_tag()
        if write:
            tlp.set_addr_be_data(addr, data_or_len)
        else:
            tlp.set_addr_be(addr, data_or_len)
        return tlp

    async def config_read(self, addr, length):
        """``length`` bytes of configuration space at ``addr``, from one CfgRd0 per DW touched;
        all ones where the DUT does not complete successfully (a master abort)."""
        out = b""
        for a, n in _dw_pieces(addr, length):
            cpl = await self.tb.shim.inject(self._config_tlp(False, a, n))
            if cpl is not None and cpl.status == CplStatus.SC and cpl.has_data():
                dw = bytes(cpl.get_data()[:4])
                out += dw[a & 3:(a & 3) + n]
            else:
                self.log.warning("config read of %d bytes at %#x: %r", n, a, cpl)
                out += b"\xff" * n
        return int.from_bytes(out, "little")

    async def config_write(self, addr, value, length):
        """Write ``length`` bytes at ``addr`` with CfgWr0s and wait for their completions."""
        data = value.to_bytes(4, "little")[:length]
        pos = 0
        for a, n in _dw_pieces(addr, length):
            cpl = await self.tb.shim.inject(self._config_tlp(True, a, data[pos:pos + n]))
            pos += n
            if cpl is None or cpl.status != CplStatus.SC:
                self.log.warning("config write of %d bytes at %#x: %r", n, a, cpl)

    # -- BARs ----------------------------------------------------------------------------------

    def _mem_tlp(self, write, addr, data_or_len):
        tlp = Tlp()
        if write:
            tlp.fmt_type = TlpType.MEM_WRITE_64 if addr >> 32 else TlpType.MEM_WRITE
            tlp.set_addr_be_data(addr, data_or_len)
        else:
            tlp.fmt_type = TlpType.MEM_READ_64 if addr >> 32 else TlpType.MEM_READ
            tlp.set_addr_be(addr, data_or_len)
            tlp.tag = self.tb.next_tag()
        tlp.requester_id = ROOT_ID
        return tlp

    async def bar_read(self, addr, size):
        """``size`` bytes at guest-physical ``addr`` with one Memory Read; all ones on an error
        completion (the root complex's answer to the CPU for UR or CA)."""
        cpl = await self.tb.shim.inject(self._mem_tlp(False, addr, size))
        if cpl is None or cpl.status != CplStatus.SC or not cpl.has_data():
            self.log.warning("BAR read of %d bytes at %#x: %r", size, addr, cpl)
            return (1 << 8 * size) - 1
        data = bytes(cpl.get_data())
        return int.from_bytes(data[addr & 3:(addr & 3) + size], "little")

    async def bar_write(self, addr, value, size):
        """A posted Memory Write: queued behind every earlier request, so the next read sees
        it [PCIe-3.0 2.4.1]; no need to wait."""
        await self.tb.shim.inject(self._mem_tlp(True, addr, value.to_bytes(8, "little")[:size]))
        # A notification (or any write that may enable a queue or set DRIVER_OK): the model
        # serves what the guest made available, to compare when the DUT announces it.
        self.tb.rings.serve_all()

    # -- INTx ----------------------------------------------------------------------------------

    def _service_intx(self):
        line = str(self.dut.intx.value) == "1"
        resampled = False
        if self.resample_fd is not None:
            try:
                os.eventfd_read(self.resample_fd)
                resampled = True
            except BlockingIOError:
                pass
        # [PCI-3.0 2.2.6] INTx is a level: QEMU raises its pin on each write of the eventfd,
        # and lowers it and signals resample after each access while raised; a line still
        # high at a resample is sent again (hw/remote/iohub.c, remote_intx_resample).
        if self.intr_fd is not None and line and (not self._line or resampled):
            os.eventfd_write(self.intr_fd, 1)
            self.interrupts += 1
        self._line = line

    def _close_irqfds(self):
        for fd in (self.intr_fd, self.resample_fd, self.write_fd):
            if fd is not None:
                os.close(fd)
        self.intr_fd = self.resample_fd = self.write_fd = None

    # -- MSI and MSI-X -------------------------------------------------------------------------

    def _interrupt_write(self, addr, payload, enabled):
        """The DUT's memory write to the interrupt address range [0xfee00000, 0xfeefffff]
        (an MSI or MSI-X message; Intel SDM vol. 3 10.11.1): only QEMU can deliver it to the
        guest's local APICs, so it goes to the proxy's write pipe, one record per DW
        (patches/qemu-7.2-proxy-msi-bar64.patch): address, length, data. Returns False when
        there is no pipe (an unpatched QEMU)."""
        if self.write_fd is None:
            return False
        for dw in range(0, len(payload), 4):
            lanes = [i for i in range(4) if dw + i < len(payload) and enabled(dw + i)]
            if not lanes:
                continue
            lo, hi = lanes[0], lanes[-1] + 1
            data = payload[dw + lo:dw + hi]
            os.write(self.write_fd, struct.pack("<QI", addr + dw + lo, len(data)) +
                     data.ljust(4, b"\0"))
        self.interrupts += 1
        return True


def _enabled_runs(n, enabled):
    """The runs ``[lo, hi)`` of consecutive bytes ``i < n`` for which ``enabled(i)``."""
    runs, lo = [], None
    for i in range(n + 1):
        on = i < n and enabled(i)
        if on and lo is None:
            lo = i
        elif not on and lo is not None:
            runs.append((lo, i))
            lo = None
    return runs


def _dw_pieces(addr, length):
    """(address, bytes) of an access split at DW boundaries."""
    out = []
    while length:
        n = min(length, 4 - (addr & 3))
        out.append((addr, n))
        addr += n
        length -= n
    return out
