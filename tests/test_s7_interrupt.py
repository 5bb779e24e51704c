# Ref: Xilinx PG054 v3.3 (7 Series FPGAs Integrated Block for PCI Express), Interrupt Interface;
#      PCIe Base 3.0 2.2.8.1, 6.1.4.3
"""Amaranth-simulator tests of :class:`rtl.phy.s7_cfg.S7Interrupt`: the function's INTA# level
into the 7-series block's ``cfg_interrupt`` / ``cfg_interrupt_rdy`` / ``cfg_interrupt_assert``
handshakes, against a model of the core that takes each request after a random delay."""

import random

import pytest
from amaranth.sim import Simulator

from rtl.phy.s7_cfg import S7Interrupt


def run(levels, msi=None, seed=0, max_wait=6):
    """Drive ``levels`` (a value of ``intx`` per cycle) into an S7Interrupt whose core takes a
    request 0..max_wait cycles after it is raised; ``msi`` (a value of
    ``cfg_interrupt_msienable`` per cycle, default all 0). Returns the requests taken, as
    ``(cycle, "assert" | "deassert" | "msi")``, and ``asserted`` at the end."""
    rng = random.Random(seed)
    dut = S7Interrupt()
    msi = msi or [0] * len(levels)
    taken, end = [], {}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    async def bench(ctx):
        irq = dut.irq
        wait, held = None, None
        for cycle in range(len(levels) + 40):
            i = min(cycle, len(levels) - 1)
            ctx.set(dut.intx, levels[i])
            ctx.set(irq.cfg_interrupt_msienable, msi[i])
            ctx.set(irq.cfg_interrupt_rdy, 0)
            req, asrt, di = ctx.get(irq.cfg_interrupt), ctx.get(irq.cfg_interrupt_assert), \
                ctx.get(irq.cfg_interrupt_di)
            if req:
                assert di == 0, "cfg_interrupt_di: INTA / vector 0"
                # [PG054] The request and its kind are held until the core takes it.
                if held is not None:
                    assert (asrt, msi[i]) == held, f"cycle {cycle}: request changed while held"
                held = (asrt, msi[i])
                if wait is None:
                    wait = rng.randrange(max_wait + 1)
                if wait == 0:
                    ctx.set(irq.cfg_interrupt_rdy, 1)
                    kind = "msi" if msi[i] else ("assert" if asrt else "deassert")
                    taken.append((cycle, kind))
                    wait, held = None, None
                else:
                    wait -= 1
            else:
                assert held is None, f"cycle {cycle}: request dropped before the core took it"
            await ctx.tick()
        end["asserted"] = ctx.get(dut.asserted)
        assert ctx.get(irq.cfg_interrupt_stat) == 0
    sim.add_testbench(bench)
    sim.run()
    return taken, end["asserted"]


def test_level_into_assert_and_deassert():
    """A high level is one Assert_INTA request, its fall one Deassert_INTA; a steady level
    asks for nothing more."""
    taken, asserted = run([0] * 5 + [1] * 30 + [0] * 30, max_wait=3)
    assert [k for _, k in taken] == ["assert", "deassert"]
    assert asserted == 0
    taken, asserted = run([0] * 5 + [1] * 30, max_wait=3)
    assert [k for _, k in taken] == ["assert"] and asserted == 1


@pytest.mark.parametrize("seed", range(6))
def test_random_level_messages_alternate_and_end_at_the_level(seed):
    """[PCIe-3.0 2.2.8.1] Whatever the level does while a request waits, the messages the core
    sends alternate Assert, Deassert, ..., and the last one matches the level."""
    rng = random.Random(1000 + seed)
    levels, v = [], 0
    for _ in range(60):
        v ^= 1
        levels += [v] * rng.choice([1, 1, 2, 3, 8, 20])
    levels += [rng.randrange(2)] * 5
    taken, asserted = run(levels, seed=seed)
    kinds = [k for _, k in taken]
    assert kinds, "no request"
    assert all(k == ("assert" if n % 2 == 0 else "deassert") for n, k in enumerate(kinds)), \
        kinds
    assert asserted == levels[-1] and (kinds[-1] == "assert") == bool(levels[-1])


def test_msi_one_request_per_rising_edge():
    """With the block's MSI on, each rising edge of the level is one MSI request and no INTx
    request is made [PCIe-3.0 6.1.4.3]; an INTA# asserted when MSI gets enabled is forgotten
    without a request (with MSI on, the core would send any request as an MSI)."""
    levels = [0] * 3 + ([1] * 12 + [0] * 12) * 4
    taken, asserted = run(levels, msi=[1] * len(levels), max_wait=4)
    assert [k for _, k in taken] == ["msi"] * 4 and asserted == 0
    # INTA# asserted, then MSI on: no request for it, then an MSI per later rising edge.
    levels = [1] * 20 + [0] * 10 + [1] * 10
    msi = [0] * 15 + [1] * 25
    taken, asserted = run(levels, msi=msi, max_wait=2)
    assert [k for _, k in taken] == ["assert", "msi"], taken
    assert asserted == 0
