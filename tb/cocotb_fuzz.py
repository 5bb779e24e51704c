# Ref: OASIS virtio 1.2 sections 2.1.2, 2.4, 2.7, 4.1.4.3, 5.2.6; PCIe Base 3.0 sections 2.3.2,
#      2.7.2, 2.8, 6.6.2
"""The fuzz campaign: one seed of random episodes against one DUT, the golden model as the oracle.

Each episode is one of

* ``io``: a burst of random requests on every queue, valid ones and well-framed ones with bad
  content (out of range, partial sectors, unknown types), random scatter-gather layouts;
* ``malformed``: a malformed ring from the catalogue of :mod:`tb.malformed` (loops, indices out
  of range, bad indirect tables, readable after writable, missing header or status);
  DEVICE_NEEDS_RESET, a configuration change notification and silence are required, then a
  reset (:func:`tb.scenario.malformed_round`);
* ``fault``: one DMA read answered with UR, CA, poisoned data or nothing, on a request buffer
  (IOERR) or on the ring (DEVICE_NEEDS_RESET) (:func:`tb.scenario.dma_fault_round`);
* ``reset``: ``device_status = 0`` or an FLR with requests in flight
  (:func:`tb.scenario.reset_round`);
* ``registers``: writes a driver must not make (read-only fields, an enabled queue's rings,
  clearing status bits, features after FEATURES_OK, doorbells for queues that do not exist).

Counts: ``requests`` submitted; ``malformed`` inputs: malformed rings, bad register writes
(and doorbells for queues that do not exist), and requests with bad content (out of range,
partial sectors, unknown types: those the model completes IOERR or UNSUPP); ``faults``
injected; ``resets`` (device_status = 0 or FLR, including the ones after NEEDS_RESET).

Invariants, checked all along: every request completes, or the device reports
DEVICE_NEEDS_RESET, within a bound; no DMA outside the rings and the buffers of requests in
flight (the DMA fence, :mod:`tb.fence`); results made visible in the order the spec requires
(the ordering checker, :mod:`tb.ordering`); every completion and every register read agrees
with the model; at the end the disk equals the model's, so no acknowledged write was lost.

Environment: ``SEED`` (printed; replays the run), ``FUZZ_EPISODES`` (default 8),
``FUZZ_OUT`` (a file that gets one JSON line with this run's counts).
"""

import json
import os

import cocotb

from model import regmap as rm
from .blk_testbench import BlkTB
from .malformed import CATALOGUE, QSIZE
from .scenario import FAULT_KINDS, submit_random, malformed_round, reset_round, \
    dma_fault_round


WAIT_NS = 2_000_000
KINDS = ["io", "io", "io", "malformed", "fault", "reset", "registers"]


class Campaign:
    def __init__(self, bt):
        self.bt = bt
        self.rng = bt.rng
        self.counts = dict(requests=0, malformed=0, faults=0, resets=0, episodes=0)

    async def io(self):
        bt, rng = self.bt, self.rng
        busy, inflight = [], []
        for _ in range(rng.randrange(1, 3 * QSIZE)):
            if await submit_random(bt, rng, busy, inflight) is not None:
                self.counts["requests"] += 1
        for req in inflight:
            # Invariant: every request completes within the bound.
            await bt.drv.wait(req, timeout_ns=WAIT_NS)
            if req.status != rm.VIRTIO_BLK_S_OK:
                self.counts["malformed"] += 1       # bad content: IOERR or UNSUPP

    async def malformed(self):
        name = self.rng.choice(sorted(CATALOGUE))
        build, variants = CATALOGUE[name]
        variant = self.rng.choice(variants)
        await malformed_round(self.bt, build, variant, f"fuzz: {name}({variant})",
                              queue_size=QSIZE)
        self.counts["malformed"] += 1
        self.counts["resets"] += 1

    async def fault(self):
        kind = self.rng.choice(FAULT_KINDS)
        target = self.rng.choice(["buffer", "ring"])
        # Three requests either way: the faulted one and a write + read back after.
        await dma_fault_round(self.bt, kind, target, self.rng, queue_size=QSIZE)
        self.counts["requests"] += 3
        self.counts["resets"] += target == "ring"
        self.counts["faults"] += 1

    async def reset(self):
        how = self.rng.choice(["device_status", "flr"])
        submitted, _ = await reset_round(self.bt, self.rng, how, self.counts["resets"],
                                         queue_size=QSIZE)
        self.counts["requests"] += submitted
        self.counts["resets"] += 1

    async def registers(self):
        bt, rng = self.bt, self.rng
        t = bt.transport
        vq = bt.drv.vqs[rng.randrange(len(bt.drv.vqs))]
        writes = [
            ("num_queues", rng.randrange(1 << 16)),
            ("device_feature", rng.randrange(1 << 32)),
            ("queue_notify_off", rng.randrange(1 << 16)),
            ("queue_desc", rng.randrange(1 << 64)),
            ("queue_driver", rng.randrange(1 << 64)),
            ("queue_device", rng.randrange(1 << 64)),
            ("queue_size", rng.randrange(1 << 16)),
            ("device_status", rng.choice([1, 2, 3, 7])),      # clears bits: ignored
            ("driver_feature", rng.randrange(1 << 32)),     # after FEATURES_OK: ignored
            ("config_generation", rng.randrange(256)),
        ]
        for _ in range(rng.randrange(1, 6)):
            name, value = rng.choice(writes)
            await t.common_write("queue_select", vq.index)
            await t.common_write(name, value)
            # Read back: the scoreboard compares with the model.
            await t.common_read(name)
            self.counts["malformed"] += 1
        # A doorbell for a queue that does not exist names no queue [VIRTIO-1.2 4.1.5.2].
        await t.write(rm.VIRTIO_PCI_CAP_NOTIFY_CFG, 0, 2, len(bt.drv.vqs) + rng.randrange(8))
        self.counts["malformed"] += 1
        await t.common_write("queue_select", 0)
        bt.log.info("fuzz: bad register writes ignored")


@cocotb.test()
@cocotb.parametrize(stalls=[False, True])
async def fuzz(dut, stalls):
    """One seed of the fuzz campaign (see the module docstring)."""
    bt = BlkTB(dut, stalls)
    episodes = int(os.environ.get("FUZZ_EPISODES") or 8)
    out = os.environ.get("FUZZ_OUT")
    c = Campaign(bt)
    error = None
    try:
        await bt.start(queue_size=QSIZE, event_idx=bt.rng.random() < 0.5)
        for _ in range(episodes):
            kind = bt.rng.choice(KINDS)
            await getattr(c, kind)()
            c.counts["episodes"] += 1
        await bt.finish()
    except BaseException as e:       # recorded, then raised: the run fails
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        sb = bt.scoreboard
        violations = len(sb.errors) + (1 if error and not sb.errors else 0)
        record = dict(seed=bt.seed, stalls=stalls, violations=violations,
                      error=error or (sb.errors[0] if sb.errors else None), **c.counts)
        bt.log.info("fuzz run: %s", record)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
