"""Clocked testbench agents at little cost per cycle, and waits counted in clock cycles.

The testbench's stream agents (the TLP shim's receive and transmit sides, the storage
back-end) move beats at the rising edges of the DUT's clock. Written as one cocotb task each,
every agent would wake at every edge, busy or not: several task switches per cycle, the largest
cost of a simulation (the RTL itself, compiled by Verilator, takes a few microseconds a cycle).
:class:`CycleLoop` runs them all in one task instead, and only while one of them has work:

* at each rising edge it calls :meth:`Agent.step` of every agent that is awake: the agent
  samples the handshakes of the cycle that just ended and drives the next cycle's values, as
  a clocked process does;
* an agent with nothing to do returns False and falls asleep. Its outputs keep the values it
  drove last. It wakes on its :attr:`Agent.wake_on` trigger (the rising edge of the valid
  signal it waits for) or when the testbench calls :meth:`CycleLoop.wake` (work handed to
  it), and steps again from the next rising edge;
* with every agent asleep the loop awaits nothing clocked: the simulator runs the RTL on its
  own until something wakes an agent.

That is exact, not an approximation: an agent sleeps only when the last edge showed no
handshake in progress on its streams and it has nothing to drive, and the first edge at which
a handshake can happen after its wake-up trigger is the edge at which it steps again.

Signal access goes through :class:`Wire`, which reads a top-level signal as an ``int`` from the
simulator's binary string without building cocotb's ``Logic``/``LogicArray`` objects (cocotb
2.1's own ``handle.value`` costs several microseconds per read). Writes go straight to the
simulator where cocotb trusts its inertial writes (``COCOTB_TRUST_INERTIAL_WRITES``, which
cocotb's runner sets for Verilator: a write then takes effect after the current evaluation,
as a nonblocking assignment does); elsewhere (Icarus) through the handle, which holds them
back to the write phase of the time step.
"""

import os

import cocotb
from cocotb.triggers import Event, RisingEdge, Timer
from cocotb.utils import get_sim_steps, get_sim_time


__all__ = ["CycleLoop", "Agent", "Wire", "wait_cycles"]


class Wire:
    """Fast access to one signal of the toplevel.

    Parameters
    ----------
    handle : cocotb handle
        A packed signal (a port of the toplevel).

    Attributes
    ----------
    handle : cocotb handle
    width : int
    """
    __slots__ = ("handle", "width", "_get", "_put", "_format")

    # cocotb's own switch (its runner sets it for Verilator); 0 is the GPI's "deposit" action,
    # an inertial write.
    TRUSTED = os.environ.get("COCOTB_TRUST_INERTIAL_WRITES", "").lower() in ("1", "true",
                                                                              "yes", "on")
    DEPOSIT = 0

    def __init__(self, handle):
        self.handle = handle
        self.width = len(handle)
        # cocotb's GPI object for the signal (cocotb 2.1): its binary-string read is what
        # ``handle.value`` parses into a LogicArray.
        gpi = handle._handle
        self._get = gpi.get_signal_val_binstr
        if not self.TRUSTED:
            self._put = None
        elif self.width <= 32:
            self._put = gpi.set_signal_val_int
        else:
            self._put = gpi.set_signal_val_binstr
        self._format = f"0{self.width}b"

    def read(self):
        """The value as an unsigned ``int``; raises ``ValueError`` if any bit is X or Z."""
        return int(self._get(), 2)

    def high(self):
        """A 1-bit signal is 1 (X or Z, before the first clock edge, count as 0)."""
        return self._get() == "1"

    def write(self, value):
        """Drive ``value``, an ``int`` from 0 to ``2**width - 1``."""
        put = self._put
        if put is None:
            self.handle.value = value
        elif self.width <= 32:
            put(self.DEPOSIT, value)
        else:
            put(self.DEPOSIT, format(value, self._format))

    @property
    def path(self):
        return self.handle._path


class Agent:
    """Something :class:`CycleLoop` steps at rising edges.

    Attributes
    ----------
    wake_on : cocotb trigger or None
        What wakes the agent when it sleeps (besides :meth:`CycleLoop.wake`), typically
        ``RisingEdge`` of the valid signal of a stream it receives. None: only
        :meth:`CycleLoop.wake` does.
    """
    wake_on = None

    def step(self):
        """Called at a rising edge: take the handshakes of the cycle that just ended, drive the
        next cycle's values. Returns True to be stepped at the next edge too, False to sleep."""
        raise NotImplementedError


class CycleLoop:
    """Steps the testbench's clocked agents in one task, only while they have work (see the
    module docstring).

    Parameters
    ----------
    clk : cocotb handle
        The clock whose rising edges the agents work on.

    Attributes
    ----------
    edges : int
        Rising edges at which at least one agent stepped (the busy cycles, a statistic).
    """
    def __init__(self, clk):
        self.clk = clk
        self._edge = RisingEdge(clk)
        self._awake = []
        self._joining = []
        self._asleep = {}          # agent -> its wake-up task
        self._kick = Event()
        self.edges = 0
        self._task = cocotb.start_soon(self._run())

    def add(self, agent, awake=False):
        """Take ``agent`` into the loop, asleep (until its trigger or :meth:`wake`) or
        awake."""
        if awake:
            self.wake(agent)
        else:
            self._sleep(agent)

    def wake(self, agent):
        """``agent`` has work: step it from the next rising edge on."""
        task = self._asleep.pop(agent, None)
        if task is not None:
            task.cancel()
        if agent not in self._joining and agent not in self._awake:
            self._joining.append(agent)
            self._kick.set()

    def remove(self, agent):
        """Stop stepping ``agent`` and stop waiting for its trigger."""
        task = self._asleep.pop(agent, None)
        if task is not None:
            task.cancel()
        for lst in (self._awake, self._joining):
            if agent in lst:
                lst.remove(agent)

    def stop(self):
        """Stop the loop and every wake-up task."""
        self._task.cancel()
        for task in self._asleep.values():
            task.cancel()
        self._asleep.clear()

    def _sleep(self, agent):
        if agent.wake_on is not None and agent not in self._asleep:
            self._asleep[agent] = cocotb.start_soon(self._wait(agent))

    async def _wait(self, agent):
        await agent.wake_on
        self._asleep.pop(agent, None)
        self.wake(agent)

    async def _run(self):
        edge = self._edge
        awake = self._awake
        while True:
            if not awake and not self._joining:
                self._kick.clear()
                await self._kick.wait()
            await edge
            if self._joining:
                awake.extend(self._joining)
                self._joining.clear()
            self.edges += 1
            idle = [a for a in awake if not a.step()]
            for agent in idle:
                awake.remove(agent)
                self._sleep(agent)


async def wait_cycles(clk, cycles, period_ns, origin=0):
    """Wait until the ``cycles``-th rising edge of ``clk`` from now, as
    ``ClockCycles(clk, cycles)`` does, but with a timer for all but the last edge: two
    wake-ups instead of one per cycle. ``period_ns`` is the clock's period; it rises at
    ``origin`` (in simulator steps) and every period after (cocotb's ``Clock`` starts high)."""
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
