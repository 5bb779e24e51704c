# Ref: OASIS virtio 1.2 sections 2.1.2 (DEVICE_NEEDS_RESET), 2.7.4.2 (message framing), 2.7.5
#      (descriptor table, indirect descriptors), 2.7.13 (available ring), 4.1.4.3.2 (reset),
#      5.2.6 (block device operation)
"""cocotb tests of hostile input: rings a driver must never build, and requests that are well
framed but make no sense. One named test per case; sub-cases are parametrized.

Malformed rings (``malformed_*``): :func:`tb.scenario.malformed_round` with a chain from
:mod:`tb.malformed`, written by hand into the driver's queue 0, a good FLUSH chain after it in
the available ring where room is left. The golden model (:mod:`model.blk`, whose docstring lists
the device's choices) must call it malformed, for the reason the case is about; the DUT must set
DEVICE_NEEDS_RESET and send a configuration change notification [VIRTIO-1.2 2.1.2], complete
nothing, and make no host memory access once broken, not even when the driver rings every
doorbell again. The driver then resets it (``device_status`` = 0, polled until it reads 0
[VIRTIO-1.2 4.1.4.3.2]), initialises it again, and a write and read back must work.

Bad content (``bad_*``): a well-formed chain through the driver, so :class:`BlkTB` compares every
completion with the model; each status is also checked against the one the case requires, and
the device must go on serving requests.

Every test runs behind the testbench's DMA fence (:mod:`tb.fence`), which admits only what the
driver has posted: reads of the descriptor tables, available rings, indirect tables and
device-readable buffers; writes to the used rings and device-writable buffers.
"""

import enum

import cocotb

from model import regmap as rm
from model.params import VARIANTS
from .blk_testbench import BlkTB
from .blk import Layout, discard_segment
from .malformed import CATALOGUE, QSIZE
from .scenario import STALLS, SECTOR, HALT_CYCLES, request, round_trip, malformed_round, \
    assert_quiet, reset_device


OK, IOERR, UNSUPP = rm.VIRTIO_BLK_S_OK, rm.VIRTIO_BLK_S_IOERR, rm.VIRTIO_BLK_S_UNSUPP
T_IN, T_OUT, T_FLUSH = rm.VIRTIO_BLK_T_IN, rm.VIRTIO_BLK_T_OUT, rm.VIRTIO_BLK_T_FLUSH


def _named(*names):
    """Values for ``cocotb.parametrize`` that appear by name in the test name (cocotb names a
    plain string only up to 10 characters, and numbers the values otherwise)."""
    return list(enum.Enum("Variant", names))


async def _start(dut, stalls, **init_kw):
    bt = BlkTB(dut, stalls)
    await bt.start(**init_kw)
    return bt


# -- malformed rings -------------------------------------------------------------------------------

async def _malformed(dut, stalls, name, variant, label):
    """The malformed-ring round for one chain of the catalogue, then a write and read back."""
    bt = await _start(dut, stalls, queue_size=QSIZE)
    build, _ = CATALOGUE[name]
    await malformed_round(bt, build, variant, label, queue_size=QSIZE)
    await round_trip(bt)
    bt.log.info("malformed ring, %s: reset, initialised again, write + read back OK", label)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(where=["ring", "indirect"], stalls=STALLS)
async def malformed_loop(dut, where, stalls):
    """Case 1: a chain whose ``next`` points back at an earlier descriptor
    [VIRTIO-1.2 2.7.5.2]."""
    await _malformed(dut, stalls, "loop", where, f"loop in the {where}")


@cocotb.test()
@cocotb.parametrize(where=["ring", "indirect"], stalls=STALLS)
async def malformed_chain_too_long(dut, where, stalls):
    """Case 2: a chain visiting more descriptors than its table holds, cycling back to a
    descriptor after the head [VIRTIO-1.2 2.7.5.2, 2.7.5.3.1]."""
    await _malformed(dut, stalls, "chain_too_long", where, f"chain longer than the {where} table")


@cocotb.test()
@cocotb.parametrize(where=["ring", "indirect"], stalls=STALLS)
async def malformed_next_out_of_range(dut, where, stalls):
    """Case 3: ``next`` not below the table size [VIRTIO-1.2 2.7.5]."""
    await _malformed(dut, stalls, "next_out_of_range", where, f"next out of range in the {where}")


@cocotb.test()
@cocotb.parametrize(head=[QSIZE, 0xffff], stalls=STALLS)
async def malformed_head_out_of_range(dut, head, stalls):
    """Case 4: an available ring entry not below the queue size [VIRTIO-1.2 2.7.6]."""
    await _malformed(dut, stalls, "head_out_of_range", head, f"head {head}")


@cocotb.test()
@cocotb.parametrize(ahead=[QSIZE + 1, 0xffff], stalls=STALLS)
async def malformed_avail_idx_ahead(dut, ahead, stalls):
    """Case 5: ``avail->idx`` more than the queue size ahead of the device [VIRTIO-1.2
    2.7.13.3]."""
    await _malformed(dut, stalls, "avail_idx_ahead", ahead, f"avail idx {ahead} ahead")


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def malformed_indirect_with_next(dut, stalls):
    """Case 6: INDIRECT and NEXT in one descriptor [VIRTIO-1.2 2.7.5.3.1]."""
    await _malformed(dut, stalls, "indirect_with_next", None, "INDIRECT with NEXT")


@cocotb.test()
@cocotb.parametrize(position=_named("first", "after_buffer"), stalls=STALLS)
async def malformed_nested_indirect(dut, position, stalls):
    """Case 7: INDIRECT inside an indirect table, as its first entry or after a buffer
    [VIRTIO-1.2 2.7.5.3.1]."""
    await _malformed(dut, stalls, "nested_indirect", position.name,
                     f"nested indirect ({position.name})")


@cocotb.test()
@cocotb.parametrize(length=[24, 0], stalls=STALLS)
async def malformed_indirect_length(dut, length, stalls):
    """Case 8: an indirect table whose length is not a positive multiple of 16
    [VIRTIO-1.2 2.7.5.3]."""
    await _malformed(dut, stalls, "indirect_length", length, f"indirect table of {length} bytes")


@cocotb.test()
@cocotb.parametrize(lengths=["nonempty", "empty"], stalls=STALLS)
async def malformed_readable_after_writable(dut, lengths, stalls):
    """Case 9: a device-readable descriptor after a device-writable one, also when both are
    empty [VIRTIO-1.2 2.7.4.2]."""
    await _malformed(dut, stalls, "readable_after_writable", lengths,
                     f"readable after writable ({lengths})")


@cocotb.test()
@cocotb.parametrize(variant=_named("no_header", "short_header", "header_writable",
                                  "status_readable", "status_zero_length"), stalls=STALLS)
async def malformed_header_status(dut, variant, stalls):
    """Case 10: no room for the 16-byte header among the device-readable bytes, or no
    device-writable byte for the status [VIRTIO-1.2 5.2.6]: the model calls every one of these
    malformed (DEVICE_NEEDS_RESET), none completes with IOERR."""
    await _malformed(dut, stalls, "header_status", variant.name,
                     variant.name.replace("_", " "))


# -- bad content -----------------------------------------------------------------------------------

def _split(total, n):
    """``n`` lengths summing to ``total``, as equal as can be."""
    return tuple(total // n + (k < total % n) for k in range(n))


async def _bad_content(dut, stalls, family, cases, **init_kw):
    """Submit each case ``(label, type, sector, out, in_len, layout, want)``, one at a time;
    check the status the case requires (the data path has compared the rest with the model),
    then that the device still serves a write and a read."""
    bt = await _start(dut, stalls, **init_kw)
    drv = bt.drv
    for label, typ, sector, out, in_len, layout, want in cases:
        req = await request(drv, typ, sector, out, in_len, layout)
        assert req.status == want, f"{family}, {label}: status {req.status}, want {want}"
        assert bt.mismatches == 0, f"{family}, {label}: the DUT differs from the model"
        bt.log.info("%s, %s: status %s as the model and the spec say (used len %d)", family,
                    label, {OK: "OK", IOERR: "IOERR", UNSUPP: "UNSUPP"}[req.status],
                    req.used_len)
    await round_trip(bt)
    bt.log.info("%s: the device still serves requests: write + read back OK", family)
    await bt.finish()
    return bt


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_data_length(dut, stalls):
    """Case 11: IN / OUT data not a multiple of 512 bytes [VIRTIO-1.2 5.2.6.1] -> IOERR."""
    await _bad_content(dut, stalls, "data length not a multiple of 512", [
        ("read of 100 bytes", T_IN, 0, b"", 100, None, IOERR),
        ("read of 513 bytes", T_IN, 0, b"", 513, None, IOERR),
        ("write of 700 bytes", T_OUT, 0, bytes(range(256)) * 2 + bytes(188), 0, None, IOERR),
        ("write of 511 bytes", T_OUT, 0, bytes(511), 0, None, IOERR),
    ])


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_sector_range(dut, stalls):
    """Case 12: sectors beyond the capacity, and sector + count wrapping 2**64
    [VIRTIO-1.2 5.2.6.1] -> IOERR; the last sector itself -> OK."""
    cap = VARIANTS[dut._name].capacity
    top = 1 << 64
    await _bad_content(dut, stalls, "sector range", [
        ("read of the last sector", T_IN, cap - 1, b"", 512, None, OK),
        ("read across the end", T_IN, cap - 1, b"", 1024, None, IOERR),
        ("write at the capacity", T_OUT, cap, bytes(512), 0, None, IOERR),
        ("read at 2**64-1 (sector + count = 2**64)", T_IN, top - 1, b"", 512, None, IOERR),
        ("write at 2**64-4 of 8 sectors (sum wraps to 4)", T_OUT, top - 4, bytes(4096), 0,
         None, IOERR),
        ("discard at 2**64-1 of 2 sectors (wraps)", rm.VIRTIO_BLK_T_DISCARD, 0,
         discard_segment(top - 1, 2), 0, None, IOERR),
        ("write zeroes at the capacity", rm.VIRTIO_BLK_T_WRITE_ZEROES, 0,
         discard_segment(cap, 1), 0, None, IOERR),
    ])


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_request_type(dut, stalls):
    """Case 13: unknown request types, and known ones with the high bit set
    [VIRTIO-1.2 5.2.6] -> UNSUPP, nothing read or written."""
    await _bad_content(dut, stalls, "request type", [
        ("type 2", 2, 0, b"", 0, None, UNSUPP),
        ("type 3 with data", 3, 0, bytes(512), 512, None, UNSUPP),
        ("type 0x7fffffff", 0x7fffffff, 0, b"", 0, None, UNSUPP),
        ("IN | 0x80000000", 0x80000000 | T_IN, 0, b"", 512, None, UNSUPP),
        ("OUT | 0x80000000", 0x80000000 | T_OUT, 0, bytes([0x5a]) * 512, 0, None, UNSUPP),
        ("FLUSH | 0x80000000", 0x80000000 | T_FLUSH, 0, b"", 0, None, UNSUPP),
        ("GET_ID | 0x80000000", 0x80000000 | rm.VIRTIO_BLK_T_GET_ID, 0, b"", 20, None,
         UNSUPP),
    ])


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_zero_length_descriptors(dut, stalls):
    """Case 14: zero-length descriptors anywhere in a chain. Not malformed for the model
    (framing is free [VIRTIO-1.2 2.7.4]; they only count towards seg_max + 2): the requests
    complete OK and move the right data."""
    data = bytes(range(256)) * 4
    bt = await _bad_content(dut, stalls, "zero-length descriptors", [
        ("write, empty data descriptors", T_OUT, 16, data, 0,
         Layout((16, 0, 512, 0, 512), (0, 1)), OK),
        ("read, empty descriptors around data and status", T_IN, 16, b"", 1024,
         Layout((0, 16), (0, 512, 0, 512, 0, 1)), OK),
        ("read, status byte before an empty last descriptor", T_IN, 16, b"", 512,
         Layout((16,), (512, 1, 0)), OK),
        ("read of 0 bytes into an empty data descriptor", T_IN, 16, b"", 0,
         Layout((16,), (0, 1)), OK),
        ("flush, header split by empty descriptors", T_FLUSH, 0, b"", 0,
         Layout((0, 8, 0, 8, 0), (1,)), OK),
        ("indirect read with empty entries", T_IN, 16, b"", 1024,
         Layout((16, 0), (512, 0, 512, 1), indirect=True), OK),
    ])
    assert bytes(bt.image[16 * SECTOR:18 * SECTOR]) == data, \
        "the write with empty descriptors did not put its data on the disk"


@cocotb.test()
@cocotb.parametrize(stalls=STALLS)
async def bad_too_many_descriptors(dut, stalls):
    """Case 15: more than seg_max + 2 descriptors (seg_max 126 on this build): the model's choice
    [VIRTIO-1.2 2.7.4.1] is IOERR without executing; exactly seg_max + 2 is served."""
    limit = VARIANTS[dut._name].seg_max + 2
    over = limit + 1
    data = bytes(range(256)) * 2
    await _bad_content(dut, stalls, "descriptors beyond seg_max + 2", [
        (f"write in {limit} descriptors", T_OUT, 24, data, 0,
         Layout((16,) + _split(512, limit - 2), (1,)), OK),
        (f"write in {over} descriptors", T_OUT, 32, bytes([0x77]) * 512, 0,
         Layout((16,) + _split(512, over - 2), (1,)), IOERR),
        (f"read in {over} descriptors", T_IN, 24, b"", 512,
         Layout((16,), _split(512, over - 2) + (1,)), IOERR),
        (f"read in {over} indirect descriptors", T_IN, 24, b"", 512,
         Layout((16,), _split(512, over - 2) + (1,), indirect=True), IOERR),
        (f"read in {limit} descriptors and an empty one", T_IN, 24, b"", 512,
         Layout((16,), _split(512, limit - 2) + (1, 0)), IOERR),
    ])


# -- register writes a driver must not make ---------------------------------------------------------

async def _setup_until_queue(bt):
    """Reset, then Linux's steps up to a queue's configuration: ACKNOWLEDGE, DRIVER, features,
    FEATURES_OK [VIRTIO-1.2 3.1.1]; queue 0 selected. Returns the transport."""
    t = bt.transport
    await bt.drv.close()
    assert await t.negotiate(bt.drv.features), "the device refused the features it offered"
    await t.common_write("queue_select", 0)
    return t


@cocotb.test()
@cocotb.parametrize(case=_named("size_not_power_of_2", "size_zero", "size_too_big",
                                "desc_misaligned", "avail_misaligned", "used_misaligned"),
                    stalls=[False])
async def bad_queue_enable(dut, case, stalls):
    """queue_enable with a size that is not a power of two up to the maximum, or a ring not at
    its alignment [VIRTIO-1.2 2.7, 4.1.4.3.2]: the queue stays disabled, the device sets
    DEVICE_NEEDS_RESET [VIRTIO-1.2 2.1.2], and a doorbell for it starts no DMA. A reset brings
    it back."""
    bt = await _start(dut, stalls)
    log = bt.log
    t = await _setup_until_queue(bt)
    maximum = bt.params.max_queue_size
    desc = bt.mem.alloc(16 * maximum + 16, 16)
    avail = bt.mem.alloc(6 + 2 * maximum + 2, 2)
    used = bt.mem.alloc(6 + 8 * maximum + 4, 4)
    size = {"size_not_power_of_2": 12, "size_zero": 0, "size_too_big": 2 * maximum}.get(
        case.name, 16)
    desc += 8 if case.name == "desc_misaligned" else 0
    avail += 1 if case.name == "avail_misaligned" else 0
    used += 2 if case.name == "used_misaligned" else 0
    await t.common_write("queue_size", size)
    for name, addr in (("queue_desc", desc), ("queue_driver", avail), ("queue_device", used)):
        await t.common_write(name, addr)
    await t.common_write("queue_enable", 1)
    enabled = await t.common_read("queue_enable")
    status = await t.common_read("device_status")
    assert enabled == 0, f"{case.name}: queue_enable reads {enabled}"
    assert status & rm.STATUS_DEVICE_NEEDS_RESET, f"{case.name}: device_status {status:#04x}"
    await t.add_status(rm.STATUS_DRIVER_OK)
    await t.notify(0)
    await assert_quiet(bt, HALT_CYCLES, f"{case.name}: a doorbell for a refused queue")
    log.info("bad register write, queue_enable with %s (size %d, rings %#x/%#x/%#x): refused, "
             "device_status %#04x (DEVICE_NEEDS_RESET), no DMA after a doorbell", case.name,
             size, desc, avail, used, status)
    await reset_device(bt)
    await bt.reinit()
    await round_trip(bt)
    await bt.finish()


@cocotb.test()
@cocotb.parametrize(case=_named("queue_after_enable", "status_bits_cleared",
                                "features_after_ok", "read_only_fields"),
                    stalls=[False])
async def bad_register_phase(dut, case, stalls):
    """Register writes in the wrong device_status phase [VIRTIO-1.2 3.1.1, 4.1.4.3.2, 2.1.1]:
    an enabled queue's size and ring addresses, clearing status bits, driver features after
    FEATURES_OK, and read-only fields are all ignored (the scoreboard compares every read with
    the model); the device goes on serving requests on the rings it was given."""
    bt = await _start(dut, stalls)
    t, log = bt.transport, bt.log
    vq = bt.drv.vqs[0]
    if case.name == "queue_after_enable":
        await t.common_write("queue_select", 0)
        junk = bt.mem.alloc(4096, 16)           # never fenced: DMA there fails the test
        for name in ("queue_desc", "queue_driver", "queue_device"):
            await t.common_write(name, junk)
        await t.common_write("queue_size", vq.size // 2)
        got = [await t.common_read(n) for n in ("queue_desc", "queue_driver", "queue_device",
                                                "queue_size")]
        assert got == [vq.desc_addr, vq.avail_addr, vq.used_addr, vq.size], \
            f"an enabled queue's configuration changed: {got}"
    elif case.name == "status_bits_cleared":
        await t.common_write("device_status", rm.STATUS_ACKNOWLEDGE)
        status = await t.common_read("device_status")
        assert status == 0x0f, f"device_status {status:#04x} after a write clearing bits"
    elif case.name == "features_after_ok":
        before = bt.drv.features
        got = 0
        for sel in (0, 1):
            await t.common_write("driver_feature_select", sel)
            await t.common_write("driver_feature", 0)
            got |= await t.common_read("driver_feature") << 32 * sel
        assert got == before == bt.model.driver_features, \
            f"driver features {got:#x} after writes past FEATURES_OK, negotiated {before:#x}"
    else:
        offered = bt.params.offered_features
        await t.common_write("num_queues", 7)
        await t.common_write("device_feature_select", 0)
        await t.common_write("device_feature", 0)
        await t.common_write("queue_select", 0)
        notify_off = await t.common_read("queue_notify_off")
        await t.common_write("queue_notify_off", notify_off + 5)
        await t.write(rm.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4, 0xffffffff)    # capacity is RO
        assert await t.common_read("num_queues") == bt.params.num_queues
        assert await t.common_read("device_feature") == offered & 0xffffffff
        assert await t.common_read("queue_notify_off") == notify_off
        assert await t.read(rm.VIRTIO_PCI_CAP_DEVICE_CFG, 0, 4) == \
            bt.params.capacity & 0xffffffff
    log.info("bad register write, %s: ignored; the device goes on", case.name)
    await round_trip(bt)
    await bt.finish()
