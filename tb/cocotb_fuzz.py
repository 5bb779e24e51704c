# Ref: OASIS virtio 1.2 sections 2.1.2, 2.4, 2.7, 4.1.4.3, 5.2.6; PCIe Base 3.0 sections 2.3.2,
#      2.7.2, 2.8, 6.6.2
"""The fuzz campaign: one seed of random episodes against one DUT, the golden model as the oracle.

Each episode is one of

* ``io``: a burst of random requests on every queue, valid ones and well-framed ones with bad
  content (out of range, partial sectors, unknown types), random scatter-gather layouts;
* ``malformed``: a malformed ring from :mod:`tb.cocotb_robust`'s catalogue (loops, indices out
  of range, bad indirect tables, readable after writable, missing header or status);
  DEVICE_NEEDS_RESET, a configuration change notification and silence are required, then a
  reset;
* ``fault``: one DMA read answered with UR, CA, poisoned data or nothing, on a request buffer
  (IOERR) or on the ring (DEVICE_NEEDS_RESET), from :mod:`tb.cocotb_faults`;
* ``reset``: ``device_status = 0`` or an FLR with requests in flight, from :mod:`tb.cocotb_reset`;
* ``registers``: writes a driver must not make (read-only fields, an enabled queue's rings,
  clearing status bits, features after FEATURES_OK, doorbells for queues that do not exist).

Counts: ``requests`` submitted; ``malformed`` inputs: malformed rings, bad register writes
(and doorbells for queues that do not exist), and requests with bad content (out of range,
partial sectors, unknown types: those the model completes IOERR or UNSUPP); ``faults``
injected; ``resets`` (device_status = 0 or FLR, including the ones after NEEDS_RESET).

Invariants, checked all along: every request completes, or the device reports
DEVICE_NEEDS_RESET, within a bound; no DMA outside the rings and buffers the driver holds (the
scoreboard's ``dma_allowed``); every completion and every register read agrees with the model;
at the end the disk equals the model's, so no acknowledged write was lost.

Environment: ``SEED`` (printed; replays the run), ``FUZZ_EPISODES`` (default 8),
``FUZZ_OUT`` (a file that gets one JSON line with this run's counts).
"""

import json
import os

import cocotb
from cocotb.triggers import ClockCycles

from model import regmap as rm
from .blk_bench import BlkTB, ModelMemory
from .cocotb_blk import _random_request
from . import cocotb_faults, cocotb_reset, cocotb_robust as robust


QSIZE = 16
WAIT_NS = 2_000_000
KINDS = ["io", "io", "io", "malformed", "fault", "reset", "registers"]

# (builder, variants) from the malformed-ring catalogue.
MALFORMED = [
    (robust._loop, ["ring", "indirect"]),
    (robust._chain_too_long, ["ring", "indirect"]),
    (robust._next_out_of_range, ["ring", "indirect"]),
    (robust._head_out_of_range, [QSIZE, 0xffff]),
    (robust._avail_idx_ahead, [QSIZE + 1, 0xffff]),
    (robust._indirect_with_next, [None]),
    (robust._nested_indirect, ["first", "after_buffer"]),
    (robust._indirect_length, [24, 0]),
    (robust._readable_after_writable, ["empty", "nonempty"]),
    (robust._header_status, ["no_header", "short_header", "header_writable",
                             "status_readable", "status_zero_length"]),
]


class _AnyFence:
    """:class:`tb.cocotb_robust.RawRing` reports what it allocates; the campaign's fence is
    the allocation map itself."""
    def allow(self, *_):
        pass


class Campaign:
    def __init__(self, bt):
        self.bt = bt
        self.rng = bt.rng
        self.counts = dict(requests=0, malformed=0, faults=0, resets=0, episodes=0)

    async def io(self):
        bt, rng = self.bt, self.rng
        drv = bt.drv
        busy, inflight = [], []
        for _ in range(rng.randrange(1, 3 * QSIZE)):
            choice = _random_request(rng, drv, bt.params.capacity, [b[:3] for b in busy])
            if choice is None:
                continue
            typ, sector, out, in_len, span, writes = choice
            q = rng.randrange(len(drv.vqs))
            layout = drv.random_layout(rng, len(out), in_len, q=q)
            req = await drv.submit(q, typ, sector, out, in_len, layout)
            inflight.append(req)
            if span is not None:
                busy.append((span[0], span[1], writes, req))
            self.counts["requests"] += 1
        for req in inflight:
            # Invariant: every request completes within the bound.
            await drv.wait(req, timeout_ns=WAIT_NS)
            if req.status != rm.VIRTIO_BLK_S_OK:
                self.counts["malformed"] += 1       # bad content: IOERR or UNSUPP

    async def malformed(self):
        bt, rng = self.bt, self.rng
        drv, sb = bt.drv, bt.tb.scoreboard
        build, variants = rng.choice(MALFORMED)
        variant = rng.choice(variants)
        r = robust.RawRing(bt, _AnyFence(), drv.vqs[0])
        reason = build(r, variant)
        batch = bt.model.process_queue(0, ModelMemory(bt.mem))
        assert batch.needs_reset and reason in batch.error, \
            f"{build.__name__}({variant}): the model says {batch}"
        configs = drv.config_changes
        t0 = bt.cycles()
        await drv.drv.notify(0)
        while drv.config_changes == configs:
            assert bt.cycles() - t0 < 5000, \
                f"{build.__name__}({variant}): no configuration change notification"
            await ClockCycles(bt.dut.clk, 16)
        quiet = (sb.dma_reads, sb.dma_writes, sb.msi_writes)
        await drv.drv.notify(0)
        await ClockCycles(bt.dut.clk, 300)
        assert (sb.dma_reads, sb.dma_writes, sb.msi_writes) == quiet, \
            f"{build.__name__}({variant}): host memory accessed after DEVICE_NEEDS_RESET"
        bt.log.info("fuzz: malformed ring %s(%s) -> DEVICE_NEEDS_RESET after %d cycles",
                    build.__name__.strip("_"), variant, bt.cycles() - t0)
        self.counts["malformed"] += 1
        await drv.drv.reset()
        await drv.close()
        self.counts["resets"] += 1
        await bt.reinit(queue_size=QSIZE)

    async def fault(self):
        kind = self.rng.choice(cocotb_faults.KINDS)
        sb = self.bt.tb.scoreboard
        try:
            # Three requests either way: the faulted one and a write + read back after.
            if self.rng.random() < 0.5:
                await cocotb_faults._buffer_fault(self.bt, kind, self.rng)
            else:
                await cocotb_faults._ring_fault(self.bt, kind, self.rng, queue_size=QSIZE)
                self.counts["resets"] += 1
            self.counts["requests"] += 3
        finally:
            # A timeout fault relaxes the Tag checks for its own read only.
            self.bt.tb.shim.dma_fault = None
            sb.expect_timeouts = False
        self.counts["faults"] += 1

    async def reset(self):
        how = self.rng.choice(["device_status", "flr"])
        submitted, _ = await cocotb_reset._reset_round(self.bt, self.rng, how,
                                                       self.counts["resets"], queue_size=QSIZE)
        self.counts["requests"] += submitted
        self.counts["resets"] += 1

    async def registers(self):
        bt, rng = self.bt, self.rng
        t = bt.drv.drv
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
        bt.tb.scoreboard.dma_allowed = cocotb_reset._allowed(bt.mem)
        for _ in range(episodes):
            kind = bt.rng.choice(KINDS)
            await getattr(c, kind)()
            c.counts["episodes"] += 1
        await bt.finish()
    except BaseException as e:       # recorded, then raised: the run fails
        error = f"{type(e).__name__}: {e}"
        raise
    finally:
        sb = bt.tb.scoreboard
        violations = len(sb.errors) + (1 if error and not sb.errors else 0)
        record = dict(seed=bt.tb.seed, stalls=stalls, violations=violations,
                      error=error or (sb.errors[0] if sb.errors else None), **c.counts)
        bt.log.info("fuzz run: %s", record)
        if out:
            with open(out, "a") as f:
                f.write(json.dumps(record) + "\n")
