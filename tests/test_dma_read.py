# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of the DMA read engine.

The bench plays the root complex: a host memory of random bytes and a completer that answers each
Memory Read with completions split at a random Read Completion Boundary (64 or 128 B) or at a
random subset of those boundaries, returning the completions of different requests in random
order after random delays [PCIe-3.0 2.3.1.1, 2.4.1]. Every request is checked on the way out
(format, header size, byte enables, size, boundaries, the exact split of its command, tag rules)
and the data and statuses are checked byte for byte against host memory at the end. Error
injection answers a request with UR, CA, EP set, or not at all (completion timeout).
"""

import collections
import random

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from tb.seed import seed_from_env
from rtl.dma_layouts import DMA_MAX_LENGTH, DmaError
from rtl.dma_read import DmaReadEngine
from .sim_helpers import stream_put, stream_get, tlp_put, tlp_get, parse_mem_req, completion


RID = 0x0108                     # bus 1, device 1, function 0
CLOCK = 1e-8

BOGUS_KINDS = ["tag", "rid", "stale", "lower_address"]

FATE_ERROR = {
    "ok":      DmaError.OK,
    "ur":      DmaError.UNSUPPORTED_REQUEST,
    "ca":      DmaError.COMPLETER_ABORT,
    "ep":      DmaError.POISONED,
    "drop":    DmaError.TIMEOUT,     # no completion at all
    "partial": DmaError.TIMEOUT,     # some completions, not all
}


class HostMemory:
    """Random bytes at every address, made a 4 KB page at a time on first read."""
    PAGE = 4096

    def __init__(self, rng):
        self.salt = rng.randrange(1 << 64)
        self.pages = {}

    def read(self, addr, n):
        out = bytearray()
        while n:
            page, off = divmod(addr, self.PAGE)
            if page not in self.pages:
                self.pages[page] = random.Random(self.salt ^ page).randbytes(self.PAGE)
            take = min(n, self.PAGE - off)
            out += self.pages[page][off:off + take]
            addr += take
            n -= take
        return bytes(out)


class Command:
    def __init__(self, addr, length, tag, bus_master=1):
        self.addr, self.length, self.tag, self.bus_master = addr, length, tag, bus_master
        self.accepted = self.finished = self.first_data = None

    def __repr__(self):
        return f"Command(addr={self.addr:#x}, length={self.length}, tag={self.tag})"


class Request:
    """A Memory Read seen on ``tx`` and what the completer does with it."""
    def __init__(self, cmd, addr, length, tag, sent):
        self.cmd, self.addr, self.length, self.tag, self.sent = cmd, addr, length, tag, sent
        self.fate = "ok"
        self.cpls = []           # completions still to send, in order
        self.sent_cpls = []
        self.ready_at = sent
        self.finished = None     # cycle of the last beat of the last completion
        # A failed request: bytes from its start that good completions carried before the
        # failure. They may reach the client (the engine streams data as it arrives).
        self.good = 0

    def __repr__(self):
        return (f"Request(addr={self.addr:#x}, length={self.length}, tag={self.tag}, "
                f"fate={self.fate})")


def split_command(addr, length, mrrs):
    """The requests a command should become: at most MRRS bytes, split at MRRS-aligned
    addresses [PCIe-3.0 2.2.7]."""
    while length:
        n = min(length, mrrs - addr % mrrs)
        yield addr, n
        addr += n
        length -= n


CONTIGUOUS_BE = {0b0001, 0b0010, 0b0100, 0b1000, 0b0011, 0b0110, 0b1100, 0b0111, 0b1110, 0b1111}


def request_bytes(req):
    """(first byte address, byte count) of a memory read, checking its byte enables
    [PCIe-3.0 2.2.5]."""
    n_dw, fbe, lbe, addr = req["n_dw"], req["first_be"], req["last_be"], req["addr"]
    if n_dw == 1:
        assert lbe == 0, f"Last DW BE {lbe:04b} must be 0 for a 1 DW request"
        assert fbe in CONTIGUOUS_BE, f"First DW BE {fbe:04b} is not contiguous"
        lo = (fbe & -fbe).bit_length() - 1
        return addr + lo, fbe.bit_length() - lo
    assert fbe in (0b1111, 0b1110, 0b1100, 0b1000), f"First DW BE {fbe:04b} leaves a hole"
    assert lbe in (0b1111, 0b0111, 0b0011, 0b0001), f"Last DW BE {lbe:04b} leaves a hole"
    lo = (fbe & -fbe).bit_length() - 1
    return addr + lo, 4 * (n_dw - 1) - lo + lbe.bit_length()


class Bench:
    """The DUT, the host model and the checks. ``fate(rng, index, request)`` says how the
    completer answers the ``index``-th request; ``split`` is "random" (a random subset of RCB
    boundaries), "rcb" (every boundary), "none" (one completion) or a number of bytes (split at
    multiples of it, like a Max_Payload_Size)."""
    def __init__(self, commands, seed, *, tags=8, max_read_request=512, timeout=None,
                 mrrs_code=2, extended_tag=0, stalls=False, delay=30, split="random",
                 fate=None, inject=0.0, in_order=False):
        self.rng = random.Random(seed)
        kwargs = {} if timeout is None else {"timeout": timeout}
        self.dut = DmaReadEngine(tags=tags, max_read_request=max_read_request, **kwargs)
        self.commands = commands
        self.tags, self.timeout = tags, self.dut.timeout
        self.mrrs_code, self.extended_tag = mrrs_code, extended_tag
        self.mrrs = min(128 << mrrs_code, max_read_request)
        self.stall = self.idle = 0.3 if stalls else 0.0
        self.delay, self.split, self.inject, self.in_order = delay, split, inject, in_order
        self.fate = fate or (lambda rng, index, request: "ok")
        self.mem = HostMemory(self.rng)
        self.expected = collections.deque(
            (k, a, n) for k, c in enumerate(commands) if c.bus_master
            for a, n in split_command(c.addr, c.length, self.mrrs))
        self.requests = []
        self.by_tag = {}
        self.outstanding = []
        self.received = []
        self.statuses = []
        self.injected = 0
        self.injected_kinds = collections.Counter()
        self.unexpected = 0
        self.max_outstanding = 0

    # -- the parts of the bench -----------------------------------------------------------------
    async def driver(self, ctx):
        dut = self.dut
        rng = random.Random(self.rng.randrange(1 << 32))
        ctx.set(dut.requester_id, RID)
        ctx.set(dut.max_read_request_size, self.mrrs_code)
        ctx.set(dut.extended_tag, self.extended_tag)
        ctx.set(dut.bus_master, self.commands[0].bus_master if self.commands else 1)
        for k, c in enumerate(self.commands):
            if c.bus_master != ctx.get(dut.bus_master):
                # Change Bus Master Enable only between commands, as a driver would.
                while len(self.statuses) < k:
                    await ctx.tick()
                ctx.set(dut.bus_master, c.bus_master)
            while rng.random() < self.idle:
                await ctx.tick()
            await stream_put(ctx, dut.cmd, {"addr": c.addr, "length": c.length, "tag": c.tag})
            c.accepted = ctx.get(self.cycle)

    async def monitor(self, ctx):
        rng = random.Random(self.rng.randrange(1 << 32))
        while True:
            # Wait for a request with plain ticks: a background testbench left waiting inside
            # `until()` when the simulation ends makes Python warn as it is closed.
            while not ctx.get(self.dut.tx.valid):
                await ctx.tick()
            dws = await tlp_get(ctx, self.dut.tx, rng, self.stall)
            self.check_request(dws, ctx.get(self.cycle), ctx.get(self.dut.bus_master), rng)

    def check_request(self, dws, now, bus_master, rng):
        req = parse_mem_req(dws)
        where = f"request #{len(self.requests)} at cycle {now}: {req}"
        assert bus_master, f"{where}: sent with Bus Master Enable clear [PCI-3.0 6.2.2]"
        assert req["fmt"] in (0b000, 0b001) and req["type"] == 0, f"{where}: not a MRd"
        assert (req["tc"], req["attr"], req["attr2"], req["th"], req["td"], req["ep"],
                req["at"], req["addr_rsvd"]) == (0,) * 8, f"{where}: unexpected header bits"
        assert len(dws) == (4 if req["four_dw"] else 3), f"{where}: a MRd has no payload"
        # [PCIe-3.0 2.2.4.1] 32-bit addresses must use the 3 DW header, others the 4 DW one.
        assert req["four_dw"] == (req["addr"] >= 1 << 32), f"{where}: wrong header size"
        assert req["requester_id"] == RID, f"{where}: wrong Requester ID"
        tag = req["tag"]
        assert tag < self.tags, f"{where}: tag beyond the engine's {self.tags}"
        assert tag < 32 or self.extended_tag, \
            f"{where}: tag {tag} needs Extended Tag Field Enable [PCIe-3.0 2.2.6.2]"
        start, n = request_bytes(req)
        assert n <= self.mrrs, f"{where}: {n} bytes, more than MRRS {self.mrrs}"
        assert start // 4096 == (start + n - 1) // 4096, f"{where}: crosses 4 KB"
        assert self.expected, f"{where}: more requests than the commands need"
        k, a, length = self.expected.popleft()
        assert (start, n) == (a, length), \
            f"{where}: reads {n} B at {start:#x}, the split of command {k} says {length} B " \
            f"at {a:#x}"
        prev = self.by_tag.get(tag)
        if prev is not None:
            if prev.fate in ("drop", "partial"):
                assert now >= prev.sent + self.timeout, \
                    f"{where}: tag reused before the timeout of {prev} (sent at {prev.sent})"
            else:
                assert prev.finished is not None and prev.finished < now, \
                    f"{where}: tag reused while {prev} is outstanding"
        r = Request(k, start, n, tag, now)
        r.fate = self.fate(rng, len(self.requests), r)
        r.cpls = self.make_completions(r, rng)
        r.ready_at = now + rng.randrange(self.delay + 1)
        self.requests.append(r)
        self.by_tag[tag] = r
        if r.cpls:
            self.outstanding.append(r)
        self.max_outstanding = max(self.max_outstanding,
                                   sum(1 for t in self.by_tag.values() if t.finished is None))

    def make_completions(self, r, rng):
        start, end = r.addr, r.addr + r.length
        rcb = rng.choice((64, 128))
        cuts = list(range(start - start % rcb + rcb, end, rcb))
        if self.split == "none":
            cuts = []
        elif self.split == "random":
            p = rng.random()
            cuts = [a for a in cuts if rng.random() < p]
        elif isinstance(self.split, int):
            cuts = list(range(start - start % self.split + self.split, end, self.split))
        bounds = [start] + cuts + [end]
        cpls = []
        for a, b in zip(bounds, bounds[1:]):
            lo, hi = a & ~3, (b + 3) & ~3
            raw = bytearray(self.mem.read(lo, hi - lo))
            # The bytes outside the request in its first and last DW are not the host's.
            for i in list(range(a - lo)) + list(range(b - lo, hi - lo)):
                raw[i] = rng.randrange(256)
            payload = [int.from_bytes(raw[i:i + 4], "little") for i in range(0, len(raw), 4)]
            cpls.append(completion(r.tag, end - a, a, payload, requester_id=RID,
                                   completer_id=0x0000))
        if r.fate == "ep":
            k = rng.randrange(len(cpls))
            cpls[k][0] |= 1 << 14
            r.good = bounds[k] - start
        elif r.fate in ("ur", "ca"):
            k = rng.randrange(len(cpls))
            a = bounds[k]
            cpls = cpls[:k] + [completion(r.tag, end - a, a, None, requester_id=RID,
                                          status=0b001 if r.fate == "ur" else 0b100)]
            r.good = a - start
        elif r.fate == "drop":
            cpls = []
        elif r.fate == "partial":
            k = rng.randrange(len(cpls))
            cpls = cpls[:k]
            r.good = bounds[k] - start
        return cpls

    async def responder(self, ctx):
        rng = random.Random(self.rng.randrange(1 << 32))
        age_limit = min(self.timeout // 4, 2000)
        while True:
            now = ctx.get(self.cycle)
            ready = [r for r in self.outstanding if r.ready_at <= now]
            if not ready:
                await ctx.tick()
                continue
            if self.inject and rng.random() < self.inject:
                await tlp_put(ctx, self.dut.cpl, self.bogus_completion(rng, ready), rng,
                              self.idle)
                self.injected += 1
                continue
            # Random order across requests, but no request waits forever.
            if self.in_order or now - ready[0].sent > age_limit:
                r = ready[0]
            else:
                r = rng.choice(ready)
            dws = r.cpls.pop(0)
            await tlp_put(ctx, self.dut.cpl, dws, rng, self.idle)
            r.sent_cpls.append(dws)
            if not r.cpls:
                r.finished = ctx.get(self.cycle)
                self.outstanding.remove(r)

    def bogus_completion(self, rng, ready):
        """A completion the engine must drop without touching any request [PCIe-3.0 2.3.2]:
        each kind in turn."""
        kind = BOGUS_KINDS[self.injected % len(BOGUS_KINDS)]
        started = [r for r in ready if r.sent_cpls]
        if kind == "stale" and not started:
            kind = "lower_address"
        r = rng.choice(started if kind == "stale" else ready)   # outstanding: its tag stays
        dws = list(r.cpls[0])
        if kind == "tag":
            dws[2] = dws[2] & ~0xff00 | rng.randrange(self.tags, 256) << 8
        elif kind == "rid":
            dws[2] ^= rng.randrange(1, 1 << 16) << 16
        elif kind == "stale":
            dws = list(r.sent_cpls[-1])          # a duplicate: its Byte Count is used up
        else:
            dws[2] ^= rng.randrange(1, 1 << 5) << 2       # Lower Address off by whole DWs
        self.injected_kinds[kind] += 1
        return dws

    async def data_sink(self, ctx):
        rng = random.Random(self.rng.randrange(1 << 32))
        for k, c in enumerate(self.commands):
            got = bytearray()
            while True:
                while rng.random() < self.stall:
                    await ctx.tick()
                beat = await stream_get(ctx, self.dut.data)
                if c.first_data is None:
                    c.first_data = ctx.get(self.cycle)
                raw = beat.data.to_bytes(8, "little")
                if not beat.last:
                    assert beat.keep == 0xff, f"{c}: keep {beat.keep:#x} before the last beat"
                    got += raw
                    assert len(got) < c.length, f"{c}: no last beat after {len(got)} bytes"
                    continue
                n = c.length - len(got)
                assert beat.keep == (1 << n) - 1, \
                    f"{c}: last beat keep {beat.keep:#x} after {len(got)} bytes"
                assert raw[n:] == bytes(8 - n), f"{c}: bytes outside keep are not zero"
                got += raw[:n]
                break
            self.received.append(bytes(got))
            c.finished = ctx.get(self.cycle)

    async def status_sink(self, ctx):
        rng = random.Random(self.rng.randrange(1 << 32))
        for k, c in enumerate(self.commands):
            while rng.random() < self.stall:
                await ctx.tick()
            st = await stream_get(ctx, self.dut.status)
            assert len(self.received) > k, f"status of command {k} before its last data beat"
            self.statuses.append((st.tag, st.error))

    async def watch(self, ctx):
        dut = self.dut
        while True:
            _, _, ready, unexpected = await ctx.tick().sample(dut.cpl.ready, dut.unexpected_cpl)
            assert ready, "the completion stream was back-pressured"
            self.unexpected += unexpected

    # -- running and checking -------------------------------------------------------------------
    def run(self, max_cycles=400_000):
        m = Module()
        m.submodules.dut = self.dut
        self.cycle = Signal(32)
        m.d.sync += self.cycle.eq(self.cycle + 1)
        sim = Simulator(m)
        sim.add_clock(CLOCK)

        async def watchdog(ctx):
            for _ in range(max_cycles):
                await ctx.tick()
            raise AssertionError(f"not done after {max_cycles} cycles: {len(self.received)} of "
                                 f"{len(self.commands)} commands delivered")

        sim.add_testbench(self.driver)
        sim.add_testbench(self.data_sink)
        sim.add_testbench(self.status_sink)
        for bench in (self.monitor, self.responder, self.watch, watchdog):
            sim.add_testbench(bench, background=True)
        sim.run()
        return self

    def expected_data(self, k):
        c = self.commands[k]
        if not c.bus_master:
            return bytes(c.length)
        want = bytearray(self.mem.read(c.addr, c.length))
        for r in self.requests:
            if r.cmd == k and r.fate != "ok":
                want[r.addr - c.addr:r.addr - c.addr + r.length] = bytes(r.length)
        return bytes(want)

    def matches(self, k, got):
        """``got`` is command ``k``'s data: every failed request reads as its host bytes up to
        some point no later than its failure, then zeros [PCIe-3.0 2.7.2.2: no poisoned or
        failed data is used]; every other byte is the host's."""
        c = self.commands[k]
        want = bytearray(self.expected_data(k))
        if len(got) != len(want):
            return f"{len(got)} bytes, expected {len(want)}"
        host = self.mem.read(c.addr, c.length) if c.bus_master else bytes(c.length)
        ranges = [(r.addr - c.addr, r.addr - c.addr + r.length, r.good)
                  for r in self.requests if r.cmd == k and r.fate != "ok"]
        for lo, hi, good in ranges:
            j = lo
            while j < lo + good and got[j] == host[j]:
                j += 1
            want[lo:j] = host[lo:j]          # a streamed prefix
        for i in range(len(want)):
            if got[i] != want[i]:
                return (f"byte {i} (address {c.addr + i:#x}) is {got[i]:#04x}, expected "
                        f"{want[i]:#04x}")
        return None

    def expected_error(self, k):
        c = self.commands[k]
        if not c.bus_master:
            return DmaError.BUS_MASTER_DISABLED
        for r in sorted((r for r in self.requests if r.cmd == k), key=lambda r: r.addr):
            if r.fate != "ok":
                return FATE_ERROR[r.fate]
        return DmaError.OK

    def check(self):
        assert not self.expected, f"requests never sent: {list(self.expected)[:4]}..."
        for r in self.requests:
            assert r.fate in ("drop", "partial") or r.finished is not None, f"{r} unanswered"
        assert len(self.received) == len(self.commands)
        for k, c in enumerate(self.commands):
            wrong = self.matches(k, self.received[k])
            if wrong:
                pytest.fail(f"command {k} {c}: {wrong}; requests: "
                            f"{[r for r in self.requests if r.cmd == k]}")
            assert self.statuses[k] == (c.tag, self.expected_error(k)), \
                f"command {k} {c}: status {self.statuses[k]}; requests: " \
                f"{[r for r in self.requests if r.cmd == k]}"
        assert self.unexpected == self.injected, \
            f"{self.unexpected} completions dropped as unexpected, {self.injected} injected"
        return self


def random_address(rng, length):
    region = rng.random()
    if region < 0.4:
        return rng.randrange((1 << 32) - length)                 # 32-bit
    if region < 0.8:
        return rng.randrange(1 << 32, 1 << 48)                   # 64-bit
    return (1 << 32) - rng.randrange(1, 2 * length + 2)          # ends near, or across, 4 GB


def random_commands(rng, n, big=0, max_length=9000):
    cmds = []
    for _ in range(n):
        length = rng.choice([rng.randint(1, 16), rng.randint(1, 600),
                             rng.randint(1, max_length)])
        cmds.append(Command(random_address(rng, length), length, rng.randrange(256)))
    for _ in range(big):
        cmds.insert(rng.randrange(len(cmds) + 1),
                    Command(random_address(rng, DMA_MAX_LENGTH), DMA_MAX_LENGTH,
                            rng.randrange(256)))
    return cmds


# -- data path ------------------------------------------------------------------------------------

@pytest.mark.parametrize("stalls", [False, True])
def test_random_reads(stalls):
    """Random commands (1 B to 9 KB and one 64 KiB, any alignment, below, above and across
    4 GB), completions split at random and returned out of order across requests."""
    s = seed_from_env()
    cmds = random_commands(random.Random(s), 30, big=1)
    Bench(cmds, s, stalls=stalls).run().check()


@pytest.mark.parametrize("tags,max_read_request,mrrs_code,split", [
    (1,  128,  5, "rcb"),      # one slot: requests go out one at a time
    (3,  256,  0, "random"),   # MRRS programmed below the engine's limit; tags not a power of 2
    (8,  512,  5, 256),        # MRRS programmed above the engine's limit; MPS-sized completions
    (4,  4096, 5, "random"),   # 4 KB requests: Length 1024 encoded as 0, Byte Count 4096 as 0
    (16, 1024, 1, "none"),
])
def test_request_sizes(tags, max_read_request, mrrs_code, split):
    s = seed_from_env()
    rng = random.Random(s)
    cmds = random_commands(rng, 16)
    # Requests of every size up to 4 KB, starting on a 4 KB boundary and just before one.
    cmds += [Command(0x1_0000_0000 - 3, 4099, 1), Command(0x2000, 4096, 2),
             Command(0xffff_f000, 8192, 3), Command(0x1234_5ffd, 7, 4)]
    bench = Bench(cmds, s, tags=tags, max_read_request=max_read_request, mrrs_code=mrrs_code,
                  split=split, stalls=rng.random() < 0.5)
    bench.run().check()


def test_zero_length_command():
    """A client error with a defined outcome: nothing sent, one beat with no bytes, OK."""
    s = seed_from_env()
    cmds = [Command(0x1000, 0, 7), Command(0x1003, 5, 8), Command(0x2_0000_0005, 0, 9)]
    Bench(cmds, s).run().check()


@pytest.mark.parametrize("extended_tag", [0, 1])
def test_extended_tags(extended_tag):
    """With 64 tags, tags 32 to 63 are used only with Extended Tag Field Enable set."""
    s = seed_from_env()
    rng = random.Random(s)
    cmds = [Command(rng.randrange(1 << 40), 64 * 128 + rng.randrange(8), k) for k in range(3)]
    bench = Bench(cmds, s, tags=64, mrrs_code=0, extended_tag=extended_tag, delay=400,
                  split="none").run().check()
    top = max(r.tag for r in bench.requests)
    assert (top >= 32) == bool(extended_tag), f"highest tag {top}"
    assert bench.max_outstanding > 32 if extended_tag else bench.max_outstanding <= 32


def test_throughput():
    """Not a timed test: a 64 KiB read with a completer that answers at once, in order.

    The completions are the bottleneck: each 512 B request comes back as one CplD of 3 + 128
    DWs, 66 beats of the 64-bit stream, so the link itself allows at most 512 / 66 = 7.76
    bytes a cycle. The engine may add its start-up latency (a request out, its first completion
    in, about 75 cycles, 1% of the transfer), so we ask for 95% of what the completions allow.
    With MPS-sized (256 B) completions the link allows 512 / 68 = 7.5 bytes a cycle.
    """
    s = seed_from_env()
    for split in ("none", 256):
        cmd = Command(0x1_2345_0000, DMA_MAX_LENGTH, 1)
        bench = Bench([cmd], s, delay=0, split=split, in_order=True).run().check()
        cycles = cmd.finished - cmd.accepted
        link_beats = sum((len(dws) + 1) // 2 for r in bench.requests for dws in r.sent_cpls)
        rate, bound = DMA_MAX_LENGTH / cycles, DMA_MAX_LENGTH / link_beats
        print(f"completions of {split}: 64 KiB in {cycles} cycles, {rate:.2f} bytes/cycle "
              f"(the completion stream allows {bound:.2f})")
        assert rate >= 0.95 * bound


def test_data_streams_before_the_request_completes():
    """Completion data goes on in order as it arrives: with a 512 B request answered in
    64 B completions spread over time, the first bytes reach the client before the last
    completion is sent, and the tag is free again right after it."""
    s = seed_from_env()
    cmd = Command(0x8000_0000, 512, 3)
    bench = Bench([cmd], s, delay=0, split=64, in_order=True)
    bench.idle = 0.9                     # the completer pauses before most beats
    bench.run().check()
    (r,) = bench.requests
    assert len(r.sent_cpls) == 8
    print(f"first data beat at cycle {cmd.first_data}, last completion at {r.finished}, "
          f"last data beat at {cmd.finished}")
    assert cmd.first_data < r.finished, "the data waited for the whole request"
    assert cmd.finished - r.finished < 16


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fate", ["ur", "ca", "ep", "drop", "partial"])
def test_failed_request(fate):
    """The middle request of a command fails: its bytes read as zero, the rest of the command
    and the commands after it are delivered intact, the status names the error."""
    s = seed_from_env()
    rng = random.Random(s)
    cmds = [Command(0x8000_1005, 1300, 0x11)]       # 507 + 512 + 281 bytes
    cmds += random_commands(rng, 6, max_length=2000)
    bench = Bench(cmds, s, timeout=1500, delay=10,
                  fate=lambda rng, i, r: fate if i == 1 else "ok")
    bench.run().check()
    assert bench.statuses[0] == (0x11, FATE_ERROR[fate])
    assert bench.requests[1].length == 512


@pytest.mark.parametrize("stalls", [False, True])
def test_random_errors(stalls):
    """About a third of the requests fail in one of the five ways; tags of requests that time
    out are not reused before their timeout."""
    s = seed_from_env()
    rng = random.Random(s)
    fates = ["ok"] * 13 + ["ur", "ca", "ep", "drop", "partial"]
    # Every fate at least once among the first 20 requests (25 commands make 25 or more).
    forced = dict(zip(rng.sample(range(20), 5), fates[13:]))

    def fate(rng, index, request):
        return forced.get(index) or rng.choice(fates)
    bench = Bench(random_commands(rng, 25, max_length=3000), s, timeout=3000, delay=40,
                  stalls=stalls, fate=fate)
    bench.run().check()


def race_completion_and_timeout(delay, timeout=24):
    """One 8 B read whose only completion arrives ``delay`` cycles after the request: the
    client's data, status, and how many completions were dropped."""
    dut = DmaReadEngine(tags=1, timeout=timeout)
    m = Module()
    m.submodules.dut = dut
    dropped = Signal(8)
    m.d.sync += dropped.eq(dropped + dut.unexpected_cpl)
    host = bytes(range(0x40, 0x48))
    got = {}

    async def bench(ctx):
        ctx.set(dut.requester_id, RID)
        ctx.set(dut.bus_master, 1)
        ctx.set(dut.max_read_request_size, 2)
        await stream_put(ctx, dut.cmd, {"addr": 0x1000, "length": 8, "tag": 7})
        req = parse_mem_req(await tlp_get(ctx, dut.tx))
        await ctx.tick().repeat(delay)
        payload = [int.from_bytes(host[i:i + 4], "little") for i in (0, 4)]
        await tlp_put(ctx, dut.cpl, completion(req["tag"], 8, 0, payload, requester_id=RID))
        beat = await stream_get(ctx, dut.data)
        status = await stream_get(ctx, dut.status)
        await ctx.tick().repeat(4)
        got.update(data=beat.data.to_bytes(8, "little"), tag=status.tag, error=status.error,
                   dropped=ctx.get(dropped))

    sim = Simulator(m)
    sim.add_clock(CLOCK)
    sim.add_testbench(bench)
    sim.run_until(2000 * CLOCK)
    assert got, f"delay {delay}: the read did not finish"
    return host, got


def test_completion_racing_the_timeout():
    """[PCIe-3.0 2.8] A completion that arrives as its request times out is either taken whole
    (the data and OK) or dropped whole (zeros, TIMEOUT, and counted as unexpected): never
    written into a slot that has timed out. Swept over every arrival cycle around the timeout,
    so the cycle in which the completion's Tag is looked up while the timer runs out is hit."""
    outcomes = []
    for delay in range(8, 40):
        host, got = race_completion_and_timeout(delay)
        assert got["tag"] == 7
        if got["error"] == DmaError.OK:
            assert (got["data"], got["dropped"]) == (host, 0), f"delay {delay}: {got}"
        else:
            assert got["error"] == DmaError.TIMEOUT, f"delay {delay}: {got}"
            assert (got["data"], got["dropped"]) == (bytes(8), 1), f"delay {delay}: {got}"
        outcomes.append(got["error"])
    # Early completions are taken, late ones dropped, with one switch between.
    switch = outcomes.index(DmaError.TIMEOUT)
    assert 0 < switch and all(e == DmaError.TIMEOUT for e in outcomes[switch:]), outcomes


def test_unexpected_completions_are_dropped():
    """Completions with a tag not in use, another Requester ID, a stale Byte Count or a wrong
    Lower Address are dropped and counted, and the data is still right."""
    s = seed_from_env()
    rng = random.Random(s)
    bench = Bench(random_commands(rng, 20, max_length=3000), s, inject=0.2, split="rcb")
    bench.run().check()
    assert set(bench.injected_kinds) == set(BOGUS_KINDS), bench.injected_kinds


def test_bus_master_disabled():
    """With Bus Master Enable clear nothing is sent and zeros come back; once it is set the
    engine works."""
    s = seed_from_env()
    rng = random.Random(s)
    off = random_commands(rng, 5, big=1)
    for c in off:
        c.bus_master = 0
    on = random_commands(rng, 5)
    bench = Bench(off + on + [Command(0x3000, 9, 5, bus_master=0)], s, stalls=True)
    bench.run().check()
    assert all(r.cmd >= len(off) for r in bench.requests)


# -- parameters -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"data_width": 128}, r"data_width must be 64 \(128 and 256 are not implemented yet\), "
                          r"not 128"),
    ({"tags": 0}, r"tags must be an integer from 1 to 256 \(the 8-bit Tag field\), not 0"),
    ({"tags": 257}, r"tags must be an integer from 1 to 256 .*, not 257"),
    ({"tags": 8.0}, r"tags must be an integer from 1 to 256 .*, not 8.0"),
    ({"max_read_request": 64}, r"max_read_request must be one of 128, 256, 512, 1024, 2048 or "
                               r"4096 bytes, not 64"),
    ({"max_read_request": 768}, r"max_read_request must be one of .*, not 768"),
    ({"timeout": 0}, r"timeout must be a positive number of cycles, not 0"),
    ({"timeout": 1.5}, r"timeout must be a positive number of cycles, not 1.5"),
])
def test_rejects_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=r"^DmaReadEngine " + message + r"$"):
        DmaReadEngine(**kwargs)
