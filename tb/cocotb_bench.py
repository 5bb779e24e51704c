# Ref: OASIS virtio 1.2 sections 5.2.6 (block device operation), 2.7.5.3 (indirect
#      descriptors), 2.7.13 (supplying buffers); Linux drivers/block/virtio_blk.c
#      (virtblk_add_req: header, data scatterlist, status)
"""``make bench``: throughput and latency of block requests, over a grid of workloads, block
sizes and queue depths.

Each point of the grid keeps exactly ``queue_depth`` requests of ``block_size`` bytes in flight
(a new one goes in as soon as one completes), spread round robin over the device's queues, and
measures, from the first submission to the last completion:

* ``bytes_per_cycle`` and ``requests_per_cycle``, at the 250 MHz user clock
  (:data:`tb.testbench.CLOCK_NS`), over the whole point: from the first submission to the
  last completion, the ramp (a queue filling, the first requests' dependent round trips)
  included;
* ``steady_requests_per_cycle``: the rate once the queue has turned over, from the
  ``queue_depth``-th completion to the last (the ramp left out, as fio's ``ramp_time`` does);
  None when the point has no more requests than its depth;
* ``sim_cycles_per_second``: how fast the simulation itself ran (simulated cycles per second
  of wall-clock time), a figure of the testbench, not of the device;
* ``direction``: ``in`` (reads: the device writes host memory) or ``out`` (writes: it reads
  host memory);
* ``host_latency_cycles``: the host's read latency the point ran with
  (:attr:`tb.shim.TlpShim.host_latency_ns`; 0 is the RootComplex model's own, 10 to 40 cycles;
  250 cycles is 1 µs, what a real host's memory takes);
* a per-request breakdown, the mean over the point's requests of the cycles the link shows
  in each phase (the ordering checker's timelines, :mod:`tb.ordering`): ``fetch_cycles`` from
  the first read of its avail entry or head descriptor to its first data TLP,
  ``data_cycles`` to its last, ``completion_cycles`` from there to the ``used->idx`` write that
  publishes it. The link shows what the device sends: for a read (``in``) its data writes, for
  a write (``out``) its read requests, so there the wait for the data's completions and the
  back-end counts as completion;
* per-request latency in cycles, ``completed_at - submitted_at`` (set by
  :class:`tb.blk_testbench.BlkTB`: the cycle the request went into the available ring, and the cycle
  the driver reaped it from the used ring after the interrupt), as p50 and p99.

Requests are framed the way Linux's virtio_blk frames them: an indirect table
[VIRTIO-1.2 2.7.5.3] (one ring descriptor per request) holding the 16-byte header, the data in
4 KiB pieces (page-cache pages, page aligned) and the status byte. Sequential workloads walk the
disk from sector 0, wrapping at its end; random ones pick block-aligned sectors with the seed
(``SEED=<n>`` replays a run). The golden-model comparison of :class:`~tb.blk_testbench.BlkTB` stays
on: every request and, at the end, the whole disk are checked.

Environment:

``BENCH_GRID``
    ``quick`` (default), ``full`` or ``smoke`` (64 KiB, depth 8, sequential only: for CI).
``BENCH_BLOCKS``, ``BENCH_DEPTHS``, ``BENCH_WORKLOADS``, ``BENCH_HOST_LATENCIES``
    Comma-separated lists that replace the grid's own (host latencies in cycles).
``BENCH_REQUESTS``
    A fixed request count per point (default, or 0: :func:`request_count`).
``BENCH_OUT``
    The JSON Lines file written, one record per point as soon as it is measured (default
    ``build/bench/results.jsonl`` in the repository).
"""

import json
import math
import os
import random
import time
from collections import deque
from pathlib import Path

import cocotb
from cocotb.triggers import First, with_timeout

from model import regmap as rm
from .blk import Layout, PAGE
from .blk_testbench import BlkTB
from .testbench import CLOCK_NS


__all__ = ["WORKLOADS", "GRIDS", "HOST_LATENCIES", "PAGE", "RECORD_FIELDS", "grid_from_env",
           "host_latencies_from_env", "direction", "breakdown", "check_point",
           "request_count", "linux_layout", "percentile", "sector_walk", "bench"]


SECTOR = rm.BLK_SECTOR_BYTES
OUTHDR = rm.BLK_OUTHDR_BYTES

WORKLOADS = ("seq-read", "seq-write", "rand-read", "rand-write")

# name: (block sizes, queue depths, workloads)
GRIDS = {
    "smoke": ((65536,), (8,), ("seq-read", "seq-write")),
    "quick": ((512, 4096, 65536, 131072), (1, 32, 64), WORKLOADS),
    "full": (tuple(512 << k for k in range(9)), (1, 2, 4, 8, 16, 32, 64), WORKLOADS),
}

# Host read latencies per grid, in cycles: the RootComplex model's own (0) and 1 µs.
HOST_LATENCIES = {"smoke": (0,), "quick": (0, 250), "full": (0, 250)}

# The fields of every record, in the order they are written.
RECORD_FIELDS = ("workload", "direction", "host_latency_cycles", "block_size", "queue_depth",
                 "requests", "bytes", "cycles", "bytes_per_cycle", "requests_per_cycle",
                 "steady_requests_per_cycle",
                 "latency_cycles_p50", "latency_cycles_p99", "fetch_cycles", "data_cycles",
                 "completion_cycles", "simulator", "seed", "mb_per_s", "sim_cycles_per_second")

# Requests per point (see request_count): 512 KiB worth, up to 256, so that a small-block
# point at depth 32 runs eight rounds of the queue and its ramp (the first requests' dependent
# host round trips, about 1,700 cycles at 1 us) is a small part of it, not a quarter of it as
# with 64 requests; long runs only cost simulation time (about 10,000 to 60,000 cycles per
# wall second on Verilator).
POINT_BYTES = 512 << 10
POINT_MAX_REQUESTS = 256
POINT_MIN_REQUESTS = 4

# Host memory: buffers of depth * block bytes must fit with room for rings and tables.
HOST_MEMORY = 16 << 20

# Where the records go without BENCH_OUT (the cocotb process runs in the simulator's build
# directory, so not relative to it).
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "build" / "bench" / "results.jsonl"

# A request that takes longer than this has hung (2.5 M cycles).
TIMEOUT_NS = 10_000_000


def _int_list(text, name):
    try:
        values = tuple(int(v, 0) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{name} must be a comma-separated list of integers, "
                         f"not {text!r}") from None
    if not values:
        raise ValueError(f"{name} is empty")
    return values


def grid_from_env(env=None):
    """The grid to run: ``(grid name, block sizes, queue depths, workloads)`` from
    ``BENCH_GRID`` and the ``BENCH_BLOCKS`` / ``BENCH_DEPTHS`` / ``BENCH_WORKLOADS`` overrides.

    Raises
    ------
    ValueError
        For an unknown grid or workload, or a list that does not parse.
    """
    env = os.environ if env is None else env
    name = env.get("BENCH_GRID") or "quick"
    if name not in GRIDS:
        raise ValueError(f"BENCH_GRID must be one of {sorted(GRIDS)}, not {name!r}")
    blocks, depths, workloads = GRIDS[name]
    if env.get("BENCH_BLOCKS"):
        blocks = _int_list(env["BENCH_BLOCKS"], "BENCH_BLOCKS")
    if env.get("BENCH_DEPTHS"):
        depths = _int_list(env["BENCH_DEPTHS"], "BENCH_DEPTHS")
    if env.get("BENCH_WORKLOADS"):
        workloads = tuple(w.strip() for w in env["BENCH_WORKLOADS"].split(",") if w.strip())
        for w in workloads:
            if w not in WORKLOADS:
                raise ValueError(f"BENCH_WORKLOADS: {w!r} is none of {', '.join(WORKLOADS)}")
    return name, blocks, depths, workloads


def host_latencies_from_env(grid, env=None):
    """The host read latencies (cycles) to run ``grid`` at: ``BENCH_HOST_LATENCIES`` or the
    grid's own (:data:`HOST_LATENCIES`)."""
    env = os.environ if env is None else env
    if env.get("BENCH_HOST_LATENCIES"):
        values = _int_list(env["BENCH_HOST_LATENCIES"], "BENCH_HOST_LATENCIES")
        if any(v < 0 for v in values):
            raise ValueError(f"BENCH_HOST_LATENCIES must not be negative: {values}")
        return values
    return HOST_LATENCIES[grid]


def direction(workload):
    """``in`` for reads (the device writes host memory), ``out`` for writes."""
    return "out" if workload.endswith("write") else "in"


def check_point(block, depth, *, capacity, seg_max, queue_size, queues,
                host_memory=HOST_MEMORY):
    """Raise ValueError unless a point can run on this device and testbench.

    Parameters
    ----------
    block : int
        Bytes per request: a multiple of the sector size [VIRTIO-1.2 5.2.6.1], no more than the
        disk, and in at most ``seg_max`` 4 KiB pieces [VIRTIO-1.2 5.2.4].
    depth : int
        Requests in flight: each takes one ring descriptor (indirect) of a queue; round robin
        puts ``ceil(depth / queues)`` on one queue, which must not exceed ``queue_size``.
    capacity : int
        Disk size in sectors.
    """
    if not isinstance(block, int) or block < SECTOR or block % SECTOR:
        raise ValueError(f"block size must be a positive multiple of {SECTOR} bytes, "
                         f"not {block!r}")
    if block > capacity * SECTOR:
        raise ValueError(f"block size {block} is larger than the disk "
                         f"({capacity * SECTOR} bytes)")
    if -(-block // PAGE) > seg_max:
        raise ValueError(f"block size {block} needs {-(-block // PAGE)} pieces of {PAGE} bytes; "
                         f"the device takes at most seg_max {seg_max}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"queue depth must be a positive integer, not {depth!r}")
    if -(-depth // queues) > queue_size:
        raise ValueError(f"queue depth {depth} puts {-(-depth // queues)} requests on one of "
                         f"{queues} queues of {queue_size} descriptors")
    if depth * block > host_memory // 2:
        raise ValueError(f"queue depth {depth} of {block}-byte requests needs "
                         f"{depth * block} bytes of buffers; host memory is {host_memory}")


def request_count(block, depth):
    """Requests measured at one point: 512 KiB worth, between 4 and 256 requests, and never
    fewer than ``depth`` so that the queue fills (64 x 128 KiB at depth 64)."""
    return max(depth, min(POINT_MAX_REQUESTS, max(POINT_MIN_REQUESTS, POINT_BYTES // block)))


def linux_layout(block, write):
    """[VIRTIO-1.2 5.2.6] The chain Linux's ``virtblk_add_req`` builds: header, data in
    :data:`PAGE`-byte pieces (a smaller block is one piece), status byte; all in an indirect
    table [VIRTIO-1.2 2.7.5.3], as Linux uses one for any chain of several elements."""
    pieces = (PAGE,) * (block // PAGE) + ((block % PAGE,) if block % PAGE else ())
    if write:
        return Layout((OUTHDR,) + pieces, (1,), indirect=True)
    return Layout((OUTHDR,), pieces + (1,), indirect=True)


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with at least ``p`` percent of ``values``
    at or below it."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < p <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {p!r}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def sector_walk(workload, block, capacity, rng):
    """Endless start sectors of ``block``-byte requests: sequential from 0, wrapping at the end
    of the disk, or block-aligned random ones drawn from ``rng``."""
    nsec = block // SECTOR
    slots = capacity // nsec
    k = 0
    while True:
        if workload.startswith("seq"):
            yield (k % slots) * nsec
            k += 1
        else:
            yield rng.randrange(slots) * nsec


def _sig(x, digits=5):
    return float(f"{x:.{digits}g}")


def _simulator():
    return (os.environ.get("SIM") or cocotb.SIM_NAME).strip().lower()


def steady_rate(completed_at, depth):
    """Requests per cycle from the ``depth``-th completion to the last: the point once its
    queue has turned over, without the ramp. None when there is nothing after the ramp."""
    finished = sorted(completed_at)
    if len(finished) <= depth or finished[-1] <= finished[depth - 1]:
        return None
    return _sig((len(finished) - depth) / (finished[-1] - finished[depth - 1]))


async def _run_point(bt, drv, workload, block, depth, n, rng):
    """Keep ``depth`` requests in flight until ``n`` have completed; returns the measurements.

    Requests complete in the order the device serves them, which across queues need not be
    submission order: each completion (whichever request it is) makes room for the next."""
    write = workload.endswith("write")
    layout = linux_layout(block, write)
    data = rng.randbytes(block) if write else b""
    sectors = sector_walk(workload, block, bt.params.capacity, rng)
    typ = rm.VIRTIO_BLK_T_OUT if write else rm.VIRTIO_BLK_T_IN
    in_len = 0 if write else block

    inflight = deque()
    done = []
    submitted = 0
    timelines = []
    bt.ordering.on_timeline = lambda q, head, times: timelines.append(times)
    start = bt.cycles()
    wall = time.monotonic()
    while len(done) < n:
        # The requests that fit go in as one batch, a notification per queue after all of
        # them, as blk-mq hands a plugged batch to virtio_blk's queue_rqs (one kick a queue).
        batch = set()
        while submitted < n and len(inflight) < depth:
            sector = next(sectors)
            # Every write of a point carries the same block: overlapping writes in flight
            # (a 1 MiB disk, up to 64 x 128 KiB) leave the same bytes whatever their order.
            req = await drv.submit(None, typ, sector, data, in_len, layout, kick=False)
            inflight.append(req)
            batch.add(req.q)
            submitted += 1
        for q in sorted(batch):
            await drv.kick(q)
        if not any(r.done for r in inflight):
            await with_timeout(First(*(r.event.wait() for r in inflight)), TIMEOUT_NS, "ns")
        for req in [r for r in inflight if r.done]:
            inflight.remove(req)
            if req.status != rm.VIRTIO_BLK_S_OK:
                raise AssertionError(f"{workload} {block} B qd{depth}: {req}: status "
                                     f"{req.status}")
            done.append(req)
    end = max(r.completed_at for r in done)
    cycles = max(1, end - start)
    steady = steady_rate([r.completed_at for r in done], depth)
    latencies = [r.completed_at - r.submitted_at for r in done]
    bt.ordering.on_timeline = None
    return {**breakdown(timelines),
        "workload": workload, "block_size": block, "queue_depth": depth, "requests": n,
        "bytes": n * block, "cycles": cycles,
        "bytes_per_cycle": _sig(n * block / cycles),
        "requests_per_cycle": _sig(n / cycles),
        "steady_requests_per_cycle": steady,
        "latency_cycles_p50": percentile(latencies, 50),
        "latency_cycles_p99": percentile(latencies, 99),
        # How fast the simulation ran (simulated cycles per wall-clock second), not the device.
        "sim_cycles_per_second": round((bt.cycles() - start) / max(time.monotonic() - wall,
                                                                   1e-9)),
    }


def breakdown(timelines):
    """``fetch_cycles``, ``data_cycles`` and ``completion_cycles``: the means over the
    timelines (:mod:`tb.ordering`) that have all their steps."""
    whole = [t for t in timelines
             if all(k in t for k in ("fetch", "data_first", "data_last", "published"))]
    if not whole:
        return dict(fetch_cycles=None, data_cycles=None, completion_cycles=None)
    n = len(whole)
    return dict(
        fetch_cycles=round(sum(t["data_first"] - t["fetch"] for t in whole) / n, 1),
        data_cycles=round(sum(t["data_last"] - t["data_first"] for t in whole) / n, 1),
        completion_cycles=round(sum(t["published"] - t["data_last"] for t in whole) / n, 1))


@cocotb.test()
async def bench(dut):
    """The benchmark grid (``BENCH_GRID``); one JSON record per point to ``BENCH_OUT``."""
    grid, blocks, depths, workloads = grid_from_env()
    latencies = host_latencies_from_env(grid)
    fixed = int(os.environ.get("BENCH_REQUESTS") or 0)
    if fixed < 0:
        raise ValueError(f"BENCH_REQUESTS must be a positive request count, not {fixed}")
    out = Path(os.environ.get("BENCH_OUT") or DEFAULT_OUT)
    bt = BlkTB(dut, mem_size=HOST_MEMORY)
    seed = bt.seed
    rng = random.Random(f"bench {seed}")      # not the TB's own stream (stalls, back-end)
    drv = await bt.start()
    bt.ordering.now = bt.cycles       # the timelines of the per-request breakdown
    trace = bt.shim.trace
    if trace is not None:             # TLP_TRACE: the driver's side of each request too
        drv.on_submit.append(lambda r: trace.note(f"submit q{r.q} head {r.head} {r.op_name} "
                                                  f"sector {r.sector}"))
        drv.on_complete.append(lambda r: trace.note(f"reaped q{r.q} head {r.head} latency "
                                                    f"{r.completed_at - r.submitted_at}"))
    # Buffers as Linux has them: data in page-aligned pages, header and status kmalloc'd.
    drv.core.page_aligned = True
    p = bt.params
    limits = dict(capacity=p.capacity, seg_max=drv.config.seg_max, queue_size=drv.vqs[0].size,
                  queues=len(drv.vqs))
    points = [(b, d) for b in blocks for d in depths]
    for b, d in points:
        check_point(b, d, **limits)
    sim = _simulator()
    bt.log.info("bench: grid %s, block sizes %s, depths %s, workloads %s, host latencies %s "
                "cycles, %s, seed %d (replay with SEED=%d), %d queues, results to %s", grid,
                list(blocks), list(depths), list(workloads), list(latencies), sim, seed, seed,
                len(drv.vqs), out)

    # Fill the disk with random data first, so that every read moves meaningful bytes and the
    # model comparison checks them.
    fill = min(128 << 10, p.capacity * SECTOR)
    await _run_point(bt, drv, "seq-write", fill, 8, p.capacity * SECTOR // fill, rng)

    out.parent.mkdir(parents=True, exist_ok=True)
    clock_mhz = 1000 / CLOCK_NS
    bt.log.info("bench: %-10s %4s %7s %5s %8s %10s %10s %8s %8s %5s %6s %6s %6s", "workload",
                "host", "block", "depth", "B/cycle", "req/cycle", "steady", "p50", "p99", "reqs",
                "fetch", "data", "cpl")
    with out.open("w") as f:
        for host in latencies:
            bt.shim.host_latency_ns = host * CLOCK_NS
            for block, depth in points:
                for workload in workloads:
                    n = fixed or request_count(block, depth)
                    rec = await _run_point(bt, drv, workload, block, depth, n, rng)
                    rec.update(simulator=sim, seed=seed, direction=direction(workload),
                               host_latency_cycles=host,
                               mb_per_s=round(rec["bytes_per_cycle"] * clock_mhz, 1))
                    f.write(json.dumps({k: rec[k] for k in RECORD_FIELDS}) + "\n")
                    f.flush()
                    bt.log.info("bench: %-10s %4d %7d %5d %8.3f %10.3g %10s %8d %8d %5d %6s %6s "
                                "%6s", workload, host, block, depth, rec["bytes_per_cycle"],
                                rec["requests_per_cycle"], rec["steady_requests_per_cycle"],
                                rec["latency_cycles_p50"],
                                rec["latency_cycles_p99"], n, rec["fetch_cycles"],
                                rec["data_cycles"], rec["completion_cycles"])
    await bt.finish()
