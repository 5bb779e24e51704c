"""The testbench object: clock, reset, RootComplex, the shim, the golden model and the scoreboard.

Tests build one :class:`TB` and read like a driver session::

    tb = TB(dut)
    await tb.start()               # reset, enumerate, enable memory space and bus mastering
    drv = tb.driver()
    await drv.find_capabilities()
    ...
    tb.finish()                    # every completion matched the model; nothing outstanding
"""

import logging
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge, Timer
from cocotb.utils import get_sim_steps, get_sim_time
from cocotbext.pcie.core import RootComplex
from cocotbext.pcie.core.tlp import Tlp, TlpType
from cocotbext.pcie.core.utils import PcieId

from model.params import VARIANTS
from model.device import VirtioBlkModel
from .shim import TlpShim, TlpTrace
from .hardblock import S7HardBlock
from .scoreboard import Scoreboard
from .driver import VirtioPciDriver
from .seed import seed_from_env


__all__ = ["TB", "CLOCK_NS", "PEER_ID", "reset_dut", "start_clock", "wait_cycles"]


# Requester ID of requests a test puts on the link itself (a peer below the same root port),
# kept apart from the RootComplex's 00:00.0 so their tags never collide.
PEER_ID = PcieId(0, 2, 0)

# 250 MHz: the user clock of a 64-bit Gen2 x4 hard IP interface.
CLOCK_NS = 4


async def wait_cycles(clk, cycles, period_ns, origin=0):
    """Wait until the ``cycles``-th rising edge of ``clk`` from now, as
    ``ClockCycles(clk, cycles)`` does, but with a timer for all but the last edge: two
    wake-ups instead of one per cycle. ``period_ns`` is the clock's period; it rises at
    ``origin`` (in simulator steps, as :func:`start_clock` returns it) and every period
    after."""
    if cycles < 1:
        return
    # In simulator steps (integers), so that the timer lands exactly.
    period = get_sim_steps(period_ns, "ns")
    now = get_sim_time("step")
    # The last rising edge at or before now; the target is ``cycles`` edges after it.
    last = origin + (now - origin) // period * period
    target = last + cycles * period
    # Half a period before the target, then the edge itself.
    before = target - period // 2 - now
    if before > 0:
        await Timer(before, unit="step")
    await RisingEdge(clk)


def start_clock(dut):
    """Start the DUT's clock at :data:`CLOCK_NS` and return the time of its first rising edge
    (in simulator steps, for :func:`wait_cycles`). The clock toggles in the simulator's C++
    interface, not in a Python task: cocotb picks that itself where it trusts the simulator's
    inertial writes (Verilator); on Icarus it is asked for, which changes nothing for the
    design (the clock is the one signal written at the start of a time step, and every other
    write still waits for the write phase).

    The clock starts low, so that what the testbench drives when it starts (at the same
    instant) is in place before the first rising edge."""
    Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start(start_high=False)
    return get_sim_time("step") + get_sim_steps(CLOCK_NS, "ns") // 2


async def reset_dut(dut, model, scoreboard, origin=0):
    """Fundamental reset: ``rst`` for 8 cycles; the model and the scoreboard start over
    (``origin``: the clock's first rising edge, from :func:`start_clock`)."""
    dut.rst.value = 1
    await wait_cycles(dut.clk, 8, CLOCK_NS, origin)
    dut.rst.value = 0
    await wait_cycles(dut.clk, 2, CLOCK_NS, origin)
    model.power_on_reset()
    scoreboard.reset()


class TB:
    """One DUT, one RootComplex, one model.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel; its name picks the parameters from :data:`model.params.VARIANTS`.
    stalls : bool
        Random idle cycles (30%) on ``rx`` and back-pressure (30%) on ``tx``.
    """
    def __init__(self, dut, stalls=False):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        self.log.setLevel(logging.INFO)
        self.name = dut._name
        if self.name not in VARIANTS:
            raise ValueError(f"toplevel {self.name!r} is none of {sorted(VARIANTS)}")
        self.params = VARIANTS[self.name]
        self.seed = seed_from_env(self.log.info)
        self.rng = random.Random(self.seed)
        self.model = VirtioBlkModel(self.params)
        self.scoreboard = Scoreboard(self.model, self.log)

        self.rc = RootComplex()
        # The RootComplex logs every DMA access and MSI at INFO: thousands of lines per test.
        self.rc.log.setLevel(logging.WARNING)
        # Max_Payload_Size 256 bytes, programmed into every function at enumeration: what a
        # Gen2 x4 root port of a PC typically runs (Linux keeps the firmware's setting), and the
        # most our endpoint supports (Device Capabilities). Max_Read_Request_Size stays 512.
        self.rc.max_payload_size = 1
        link = dict(idle_prob=0.3 if stalls else 0.0,
                    stall_prob=0.3 if stalls else 0.0,
                    rng=random.Random(self.rng.randrange(1 << 32)),
                    on_request=self.scoreboard.request,
                    on_completion=self.scoreboard.completion)
        if self.params.hard_ip == "s7":
            # The 7-series hard block's model (tb/hardblock.py) in front of the DUT: it owns
            # the header and its capabilities and tells the golden model what its cfg_*
            # outputs show.
            self.shim = S7HardBlock(dut, self.params, on_host_config=self._host_config, **link)
        else:
            self.shim = TlpShim(dut, self.params.data_width, **link)
        # TLP_TRACE=<file>: a line per TLP on the link, with its cycle (off by default).
        if os.environ.get("TLP_TRACE"):
            self.shim.trace = TlpTrace(os.environ["TLP_TRACE"], self.cycles)
        # The link the Litefury's hard IP would train: 5.0 GT/s x4 (matches Link Capabilities).
        self.shim.upstream_port.max_link_speed = 2
        self.shim.upstream_port.max_link_width = 4
        port = self.rc.make_port()
        port.connect(self.shim)
        if self.shim.trace is not None:
            self.shim.trace.watch(port.downstream_port)
        self.pci = None
        self._peer_tag = 0
        self.clock_origin = start_clock(dut)
        self._wall0 = time.monotonic()
        self._cycle0 = self.cycles()

    async def reset(self):
        await reset_dut(self.dut, self.model, self.scoreboard, self.clock_origin)
        if isinstance(self.shim, S7HardBlock):
            await self.shim.sync_host()

    def _host_config(self, host):
        """The hard block's cfg_* outputs changed: the golden model and the scoreboard follow."""
        self.model.host = host
        self.scoreboard.host_command(host.command)

    def cycles(self):
        """Clock cycles since time 0."""
        return int(get_sim_time("ns") // CLOCK_NS)

    async def wait_cycles(self, cycles):
        """Wait ``cycles`` rising edges of the DUT's clock (cheaply: see
        :func:`wait_cycles`)."""
        await wait_cycles(self.dut.clk, cycles, CLOCK_NS, self.clock_origin)

    def speed(self):
        """``(cycles, wall seconds, cycles per wall second)`` since this testbench was built."""
        cycles = self.cycles() - self._cycle0
        wall = max(time.monotonic() - self._wall0, 1e-9)
        return cycles, wall, cycles / wall

    async def start(self, enable=True):
        """Reset, enumerate, and (like Linux's pci_enable_device + pci_set_master) enable
        memory space and bus mastering."""
        await self.reset()
        await self.rc.enumerate()
        self.pci = self.find_function()
        if enable:
            await self.pci.enable_device()
            await self.pci.set_master()
        return self.pci

    def find_function(self):
        """The enumerated function whose config requests reach our shim."""
        for bus in range(1, 8):
            dev = self.rc.find_device(PcieId(bus, 0, 0))
            if dev is not None:
                return dev
        raise AssertionError("the RootComplex found no device below its root port")

    def driver(self):
        return VirtioPciDriver(self.rc, self.pci, self.log)

    @property
    def bar0(self):
        return self.pci.bar_addr[0]

    # -- raw requests, for what the convenience helpers do not cover ---------------------------

    async def mem_read(self, addr, nbytes, inject=False):
        """One Memory Read Request (never split); returns its completion.

        With ``inject``, the request goes straight onto the link from :data:`PEER_ID` instead of
        through the RootComplex, whose bridges only forward addresses inside their windows:
        that is how a test reaches the DUT with an address outside BAR0.
        """
        req = Tlp()
        req.fmt_type = TlpType.MEM_READ_64 if addr >> 32 else TlpType.MEM_READ
        req.set_addr_be(addr, nbytes)
        if inject:
            req.requester_id = PEER_ID
            req.tag = self._next_peer_tag()
            return await self.inject(req)
        req.requester_id = PcieId(0, 0, 0)
        cpls = await self.rc.perform_nonposted_operation(req, timeout=10, timeout_unit="us")
        assert len(cpls) == 1, f"{len(cpls)} completions for {req!r}"
        return cpls[0]

    async def mem_write(self, addr, data, poisoned=False, inject=False):
        """One Memory Write Request (never split); ``inject`` as for :meth:`mem_read`."""
        req = Tlp()
        req.fmt_type = TlpType.MEM_WRITE_64 if addr >> 32 else TlpType.MEM_WRITE
        req.set_addr_be_data(addr, data)
        req.ep = poisoned
        if inject:
            req.requester_id = PEER_ID
            await self.inject(req)
        else:
            req.requester_id = PcieId(0, 0, 0)
            await self.rc.send(req)

    def _next_peer_tag(self):
        self._peer_tag = (self._peer_tag + 1) % 256
        return self._peer_tag

    async def inject(self, tlp):
        """Put ``tlp`` on the link directly (see :meth:`TlpShim.inject`)."""
        return await self.shim.inject(tlp)

    async def settle(self, cycles=50):
        await self.wait_cycles(cycles)

    def finish(self):
        cycles, wall, rate = self.speed()
        self.log.info("speed: %d cycles in %.1f s wall, %.0f cycles per second (%s)", cycles,
                      wall, rate, cocotb.SIM_NAME)
        sb = self.scoreboard
        self.log.info("scoreboard: %d requests, %d completions, %d reads compared with the "
                      "model", sb.requests, sb.completions, sb.compared_reads)
        self.log.info("%s", sb.summary())
        sb.check()
