# amaranth: UnusedElaboratable=no
"""Amaranth-simulator tests of interrupt delivery: the MSI-X Memory Write format, vector
selection, NO_VECTOR, per-vector and function masking with pending bits, Bus Master Enable,
ISR status when MSI-X is disabled or not built, TLPs under random back-pressure, and random
mask changes that must lose no request.
"""

import random

import pytest
from amaranth.sim import Simulator

from model import regmap as rm
from model.params import DeviceParams
from rtl.interrupts import InterruptController
from tb.seed import seed_from_env
from .sim_helpers import tlp_get, parse_mem_req


REQUESTER_ID = 0x4218   # bus 0x42, device 3, function 0
NO_VECTOR = rm.VIRTIO_MSI_NO_VECTOR


class Bench:
    """A simulated InterruptController with its inputs set up as a driver would: MSI-X enabled,
    function unmasked, Bus Master Enable set, every entry unmasked at a distinct address and
    data. Records ``isr_set`` pulses and the cycle each TLP starts, by cycle."""

    def __init__(self, params):
        self.p = params
        self.dut = InterruptController(params)
        self.cycle = 0
        self.isr = []           # (cycle, isr_set) for every cycle it is non-zero
        self.tlp_starts = []    # cycles at which a first beat was transferred

    @staticmethod
    def entry(v):
        return 0xfee0_0000 + 0x10 * v, 0x4000 + v

    def run(self, bench, *background):
        """Simulate ``bench(ctx, dut)`` to its end, with the ``background`` testbenches
        running beside it."""
        dut = self.dut
        sim = Simulator(dut)
        sim.add_clock(1e-8)

        async def setup_and_run(ctx):
            ctx.set(dut.requester_id, REQUESTER_ID)
            ctx.set(dut.bus_master, 1)
            if self.p.msix:
                ctx.set(dut.msix_enable, 1)
                for v in range(self.p.msix_table_size):
                    addr, data = self.entry(v)
                    self.set_entry(ctx, v, addr, data, masked=0)
            for q in range(self.p.num_queues):
                ctx.set(dut.queue_vectors[q], NO_VECTOR)
            ctx.set(dut.config_vector, NO_VECTOR)
            await bench(ctx, dut)

        async def monitor(ctx):
            while True:
                _, _, isr, valid, ready, first = await ctx.tick().sample(
                    dut.isr_set, dut.tx.valid, dut.tx.ready, dut.tx.payload.first)
                if isr:
                    self.isr.append((self.cycle, isr))
                if valid and ready and first:
                    self.tlp_starts.append(self.cycle)
                self.cycle += 1

        sim.add_testbench(setup_and_run)
        sim.add_testbench(monitor, background=True)
        for other in background:
            sim.add_testbench(other, background=True)
        sim.run()

    def set_entry(self, ctx, v, addr=None, data=None, masked=None):
        e = self.dut.msix_table[v]
        if addr is not None:
            ctx.set(e.addr, addr)
        if data is not None:
            ctx.set(e.data, data)
        if masked is not None:
            ctx.set(e.masked, masked)

    async def request(self, ctx, queue=0, config=0, within=50):
        """Put one request; fails if it is not taken within ``within`` cycles."""
        req = self.dut.request
        ctx.set(req.payload, {"queue": queue, "config": config})
        ctx.set(req.valid, 1)
        for _ in range(within):
            _, _, ready = await ctx.tick().sample(req.ready)
            if ready:
                ctx.set(req.valid, 0)
                return
        raise AssertionError(f"request not taken within {within} cycles")

    async def message(self, ctx, within=20, rng=None, stall=0.0):
        """The next TLP on ``tx``, parsed; fails if none starts within ``within`` cycles."""
        for _ in range(within):
            if ctx.get(self.dut.tx.valid):
                return parse_mem_req(await tlp_get(ctx, self.dut.tx, rng, stall))
            await ctx.tick()
        raise AssertionError(f"no MSI-X message within {within} cycles")

    async def quiet(self, ctx, cycles=20):
        """``tx`` offers nothing for ``cycles`` cycles (with ``ready`` high)."""
        ctx.set(self.dut.tx.ready, 1)
        for _ in range(cycles):
            assert not ctx.get(self.dut.tx.valid), "an unexpected MSI-X message"
            await ctx.tick()
        ctx.set(self.dut.tx.ready, 0)

    def pending(self, ctx):
        return ctx.get(self.dut.msix_pending)


def check_message(msg, addr, data):
    """[PCI-3.0 6.8.3] A DWORD Memory Write of the entry's data to its address."""
    assert msg["type"] == 0b00000, f"Type {msg['type']:#07b} is not a memory request"
    # [PCIe-3.0 2.2.4.1] 3 DW header below 4 GB, 4 DW at or above.
    assert msg["fmt"] == (0b011 if addr >= 1 << 32 else 0b010), \
        f"Fmt {msg['fmt']:#05b} for address {addr:#x}"
    assert (msg["length"], msg["first_be"], msg["last_be"]) == (1, 0xf, 0), msg
    assert (msg["tc"], msg["attr"], msg["attr2"], msg["th"], msg["td"], msg["ep"], msg["at"],
            msg["tag"]) == (0, 0, 0, 0, 0, 0, 0, 0), f"TC/Attr/TH/TD/EP/AT/tag not zero: {msg}"
    assert msg["requester_id"] == REQUESTER_ID, f"requester id {msg['requester_id']:#06x}"
    assert msg["addr_rsvd"] == 0
    assert msg["addr"] == addr, f"address {msg['addr']:#x}, want {addr:#x}"
    assert msg["data"] == [data], f"data {[hex(d) for d in msg['data']]}, want {data:#x}"


@pytest.mark.parametrize("addr", [0xfee0_100c, 0xffff_fffc, 1 << 32, 0x1234_5678_9abc_def0],
                         ids=hex)
def test_message_format(addr):
    """The message of a queue interrupt: a 1 DW Memory Write of the entry's Message Data to
    its Message Address, 3 DW header below 4 GB and 4 DW above, requester id, tag 0."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        b.set_entry(ctx, 1, addr=addr, data=0xdead_beef)
        ctx.set(dut.queue_vectors[0], 1)
        await b.request(ctx, queue=0)
        check_message(await b.message(ctx), addr, 0xdead_beef)
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
        assert b.isr == [], "ISR bits set for a queue interrupt with MSI-X enabled"
    b.run(bench)


def test_vector_selection():
    """Each queue's request uses queue_msix_vector of that queue, a configuration change uses
    msix_config; vectors may be shared. A configuration change also sets ISR bit 1, before its
    message [VIRTIO-1.2 4.1.4.5.1]; a queue request sets no ISR bit."""
    p = DeviceParams(num_queues=4)
    b = Bench(p)
    vectors = {0: 3, 1: 0, 2: 4, 3: 3}

    async def bench(ctx, dut):
        for q, v in vectors.items():
            ctx.set(dut.queue_vectors[q], v)
        ctx.set(dut.config_vector, 2)
        for q in (2, 0, 3, 1):
            await b.request(ctx, queue=q)
            check_message(await b.message(ctx), *Bench.entry(vectors[q]))
        assert b.isr == []
        await b.request(ctx, config=1, queue=1)      # queue ignored
        check_message(await b.message(ctx), *Bench.entry(2))
        assert [isr for _, isr in b.isr] == [0b10]
        assert b.isr[0][0] < b.tlp_starts[-1], "ISR bit 1 not set before the message"
        await b.quiet(ctx)
    b.run(bench)


@pytest.mark.parametrize("vector", [NO_VECTOR, 3, 0x7ff, 0x8000])
def test_no_vector_raises_nothing(vector):
    """[VIRTIO-1.2 4.1.5.3.1, 4.1.5.4.1] With MSI-X enabled, a request whose vector is
    NO_VECTOR or names no table entry (3 entries here) sends nothing and leaves nothing
    pending; a configuration change still sets ISR bit 1, a queue request no ISR bit. A
    request for a queue that does not exist does nothing either."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[1], vector)
        ctx.set(dut.config_vector, vector)
        ctx.set(dut.queue_vectors[0], 0)
        await b.request(ctx, queue=1)
        await b.request(ctx, queue=2)                # no such queue
        await b.request(ctx, config=1)
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
        assert [isr for _, isr in b.isr] == [0b10]
        # The controller is still alive.
        await b.request(ctx, queue=0)
        check_message(await b.message(ctx), *Bench.entry(0))
    b.run(bench)


def test_entry_mask_makes_pending_then_unmask_sends():
    """[PCI-3.0 6.8.3.4] A request for a masked entry sets its pending bit and sends nothing;
    more requests keep the one bit; unmasking sends one message, then the bit clears. The
    other vectors are not held up meanwhile."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[0], 1)
        ctx.set(dut.queue_vectors[1], 2)
        b.set_entry(ctx, 1, masked=1)
        await b.request(ctx, queue=0)
        await b.quiet(ctx, 10)
        assert b.pending(ctx) == 0b010
        await b.request(ctx, queue=0)
        await b.quiet(ctx, 10)
        assert b.pending(ctx) == 0b010
        # Vector 2 still goes out directly.
        await b.request(ctx, queue=1)
        check_message(await b.message(ctx), *Bench.entry(2))
        assert b.pending(ctx) == 0b010
        b.set_entry(ctx, 1, masked=0)
        check_message(await b.message(ctx), *Bench.entry(1))
        await ctx.tick()
        assert b.pending(ctx) == 0
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
    b.run(bench)


def test_unmask_reads_the_entry_at_unmask_time():
    """[PCI-3.0 6.8.3.4] The message of a pending vector uses the address and data the entry
    holds when it is unmasked, not those it held when the request came."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.config_vector, 0)
        b.set_entry(ctx, 0, masked=1)
        await b.request(ctx, config=1)
        await b.quiet(ctx, 5)
        assert b.pending(ctx) == 0b001
        b.set_entry(ctx, 0, addr=0x5_0000_0040, data=0x1234_5678)
        await b.quiet(ctx, 5)
        b.set_entry(ctx, 0, masked=0)
        check_message(await b.message(ctx), 0x5_0000_0040, 0x1234_5678)
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
    b.run(bench)


def test_function_mask():
    """[PCI-3.0 6.8.3.4] The Function Mask masks every vector: requests become pending bits;
    clearing it sends each pending vector once, lowest first, and clears the bits."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[0], 2)
        ctx.set(dut.queue_vectors[1], 0)
        ctx.set(dut.msix_function_mask, 1)
        await b.request(ctx, queue=0)
        await b.request(ctx, queue=1)
        await b.request(ctx, queue=0)
        await b.quiet(ctx)
        assert b.pending(ctx) == 0b101
        ctx.set(dut.msix_function_mask, 0)
        check_message(await b.message(ctx), *Bench.entry(0))
        check_message(await b.message(ctx), *Bench.entry(2))
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
    b.run(bench)


def test_pending_needs_both_masks_clear():
    """A pending vector is sent only when both its entry and the function are unmasked."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[1], 1)
        b.set_entry(ctx, 1, masked=1)
        ctx.set(dut.msix_function_mask, 1)
        await b.request(ctx, queue=1)
        await b.quiet(ctx, 5)
        b.set_entry(ctx, 1, masked=0)
        await b.quiet(ctx, 10)            # still function-masked
        b.set_entry(ctx, 1, masked=1)
        ctx.set(dut.msix_function_mask, 0)
        await b.quiet(ctx, 10)            # still entry-masked
        assert b.pending(ctx) == 0b010
        b.set_entry(ctx, 1, masked=0)
        check_message(await b.message(ctx), *Bench.entry(1))
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
    b.run(bench)


def test_bus_master_disabled_makes_pending():
    """[PCIe-3.0 7.5.1.1] With Bus Master Enable clear no MSI-X message goes out: the vector
    is made pending, and sent once Bus Master Enable is set."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[1], 1)
        ctx.set(dut.bus_master, 0)
        await b.request(ctx, queue=1)
        await b.quiet(ctx)
        assert b.pending(ctx) == 0b010
        ctx.set(dut.bus_master, 1)
        check_message(await b.message(ctx), *Bench.entry(1))
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
    b.run(bench)


def test_msix_disabled_uses_isr():
    """[VIRTIO-1.2 4.1.5.3, 4.1.5.4] With MSI-X disabled a queue request sets ISR bit 0 and a
    configuration change ISR bit 1, one pulse each, and no message goes out. A vector made
    pending before MSI-X was disabled stays pending, and is sent once it is enabled again."""
    b = Bench(DeviceParams())

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[0], 0)
        ctx.set(dut.queue_vectors[1], 1)
        ctx.set(dut.config_vector, 2)
        b.set_entry(ctx, 1, masked=1)
        await b.request(ctx, queue=1)
        await b.quiet(ctx, 5)
        assert b.pending(ctx) == 0b010
        ctx.set(dut.msix_enable, 0)
        b.set_entry(ctx, 1, masked=0)
        await b.request(ctx, queue=0)
        await b.quiet(ctx, 5)
        await b.request(ctx, config=1)
        await b.quiet(ctx, 5)
        await b.request(ctx, queue=1)
        await b.quiet(ctx)
        assert [isr for _, isr in b.isr] == [0b01, 0b10, 0b01], b.isr
        assert b.pending(ctx) == 0b010
        ctx.set(dut.msix_enable, 1)
        check_message(await b.message(ctx), *Bench.entry(1))
        await b.quiet(ctx)
        assert b.pending(ctx) == 0
    b.run(bench)


def test_no_msix_build_uses_isr_only():
    """Without MSI-X in the build there are no MSI-X ports; requests set ISR bits only and
    ``tx`` never offers anything."""
    p = DeviceParams(msix=False)
    b = Bench(p)
    for name in ("msix_table", "msix_pending", "msix_enable", "msix_function_mask"):
        assert not hasattr(b.dut, name), f"{name} exists without MSI-X"

    async def bench(ctx, dut):
        ctx.set(dut.queue_vectors[0], 0)          # ignored: there is no table
        ctx.set(dut.config_vector, 1)
        for kind in ("queue", "config", "queue", "queue", "config"):
            await b.request(ctx, queue=0, config=int(kind == "config"))
            await b.quiet(ctx, 3)
        await b.quiet(ctx)
        assert [isr for _, isr in b.isr] == [0b01, 0b10, 0b01, 0b01, 0b10], b.isr
        assert b.tlp_starts == []
    b.run(bench)


@pytest.mark.parametrize("stall", [0.0, 0.6])
def test_back_to_back_requests_under_backpressure(stall):
    """Random requests, back to back or with idle cycles, with ``tx`` stalled at random: every
    request gets its own intact message, in request order, none lost or repeated."""
    seed = seed_from_env()
    rng = random.Random(seed)
    p = DeviceParams(num_queues=4)
    nv = p.msix_table_size
    b = Bench(p)
    vectors = [rng.randrange(nv) for _ in range(p.num_queues)]
    entries = [(rng.choice([rng.randrange(1 << 30), rng.randrange(1 << 62)]) << 2,
                rng.randrange(1 << 32)) for _ in range(nv)]
    reqs = [rng.choice([("queue", rng.randrange(p.num_queues)), ("config", 0)])
            for _ in range(40)]
    want = [entries[nv - 1 if kind == "config" else vectors[q]] for kind, q in reqs]
    got = []

    async def bench(ctx, dut):
        for v, (addr, data) in enumerate(entries):
            b.set_entry(ctx, v, addr=addr, data=data)
        for q, v in enumerate(vectors):
            ctx.set(dut.queue_vectors[q], v)
        ctx.set(dut.config_vector, nv - 1)
        local = random.Random(rng.randrange(1 << 32))
        for kind, q in reqs:
            while local.random() < 0.3:
                await ctx.tick()
            await b.request(ctx, queue=q, config=int(kind == "config"))
        for _ in range(1000):
            if len(got) >= len(reqs):
                break
            await ctx.tick()
        await b.quiet(ctx)
        assert b.pending(ctx) == 0

    async def link(ctx):
        local = random.Random(rng.randrange(1 << 32))
        while True:
            got.append(await b.message(ctx, within=1000, rng=local, stall=stall))

    b.run(bench, link)
    assert len(got) == len(want)
    for i, (msg, (addr, data)) in enumerate(zip(got, want)):
        try:
            check_message(msg, addr, data)
        except AssertionError as e:
            raise AssertionError(f"message {i} (seed {seed}): {e}") from None
    assert sum(1 for _, isr in b.isr if isr == 0b10) == sum(k == "config" for k, _ in reqs)


def test_random_masking_loses_nothing():
    """Random requests while entry masks, the Function Mask and Bus Master Enable change at
    random, with ``tx`` stalled at random. Every message is decided while its vector was
    sendable; no vector gets more messages than requests; and once everything is unmasked,
    every vector requested has had a message after its last request, and nothing is pending."""
    seed = seed_from_env()
    rng = random.Random(seed)
    p = DeviceParams(num_queues=4)
    nv = p.msix_table_size
    b = Bench(p)
    dut = b.dut
    vectors = [rng.randrange(nv) for _ in range(p.num_queues)]
    requested = []          # (cycle taken, vector)
    got = []                # vectors of the messages, in order
    state = []              # per cycle: sendable vectors as a bit mask, sampled before the edge
    starts = []             # cycles at whose edge a header beat was first offered

    async def bench(ctx, dut):
        for q, v in enumerate(vectors):
            ctx.set(dut.queue_vectors[q], v)
        ctx.set(dut.config_vector, nv - 1)
        masked = [0] * nv
        local = random.Random(rng.randrange(1 << 32))
        for _ in range(150):
            action = local.randrange(6)
            if action <= 1:
                config = local.random() < 0.25
                q = local.randrange(p.num_queues)
                await b.request(ctx, queue=q, config=int(config))
                requested.append((b.cycle, nv - 1 if config else vectors[q]))
            elif action == 2:
                v = local.randrange(nv)
                masked[v] ^= 1
                b.set_entry(ctx, v, masked=masked[v])
            elif action == 3:
                ctx.set(dut.msix_function_mask, local.random() < 0.3)
            elif action == 4:
                ctx.set(dut.bus_master, local.random() < 0.7)
            for _ in range(local.randrange(4)):
                await ctx.tick()
        for v in range(nv):
            b.set_entry(ctx, v, masked=0)
        ctx.set(dut.msix_function_mask, 0)
        ctx.set(dut.bus_master, 1)
        await ctx.tick().repeat(20 * nv)

    async def link(ctx):
        local = random.Random(rng.randrange(1 << 32))
        while True:
            msg = await b.message(ctx, within=100000, rng=local, stall=0.5)
            check_message(msg, msg["addr"], msg["data"][0])
            got.append(msg["data"][0] - 0x4000)

    async def watch(ctx):
        was_offered = False
        while True:
            sample = [dut.tx.valid, dut.tx.ready, dut.tx.payload.first, dut.msix_enable,
                      dut.msix_function_mask, dut.bus_master,
                      *(dut.msix_table[v].masked for v in range(nv))]
            _, _, valid, ready, first, enable, fmask, bme, *entry_masked = \
                await ctx.tick().sample(*sample)
            ok = enable and not fmask and bme
            state.append(sum(1 << v for v in range(nv) if ok and not entry_masked[v]))
            offered = bool(valid and first)
            if offered and not was_offered:
                starts.append(len(state) - 1)
            # A header offered but not taken stays offered: count it once.
            was_offered = offered and not ready

    b.run(bench, link, watch)
    print(f"{len(requested)} requests, {len(got)} messages")
    assert len(starts) >= len(got)
    for i, v in enumerate(got):
        # The message was decided at the edge before its header was first offered.
        decided = starts[i] - 1
        assert state[decided] >> v & 1, \
            f"message {i} (vector {v}) decided while masked (seed {seed})"
    for v in range(nv):
        reqs = [t for t, rv in requested if rv == v]
        msgs = [starts[i] for i, gv in enumerate(got) if gv == v]
        assert len(msgs) <= len(reqs), f"vector {v}: {len(msgs)} messages for {len(reqs)} " \
                                       f"requests (seed {seed})"
        if reqs:
            assert msgs and msgs[-1] >= reqs[-1], \
                f"vector {v}: no message after its last request (seed {seed})"


def test_params_must_be_device_params():
    with pytest.raises(TypeError, match=r"^InterruptController params must be a DeviceParams, "
                                        r"not 4$"):
        InterruptController(4)
