"""Helpers shared by the Amaranth-simulator unit tests: stream access and raw TLP framing."""

import struct


__all__ = ["stream_put", "stream_get", "tlp_beats", "beats_to_dws",
           "cfg0", "mem_req", "parse_cpl", "stream_get_within", "dma_data_beats", "parse_mem_req",
           "tlp_put", "tlp_get", "completion"]


async def stream_put(ctx, stream, payload):
    """Drive one transfer on ``stream`` (a source we control)."""
    ctx.set(stream.valid, 1)
    ctx.set(stream.payload, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream):
    """Take one transfer from ``stream`` (a sink we control)."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


def tlp_beats(dws, width=64):
    """Frame a list of DWs as beat payloads (dicts) of a TLP stream."""
    per = width // 32
    beats = []
    for i in range(0, len(dws), per):
        chunk = dws[i:i + per]
        beats.append({
            "data": sum(dw << 32 * k for k, dw in enumerate(chunk)),
            "keep": (1 << len(chunk)) - 1,
            "first": int(i == 0),
            "last": int(i + per >= len(dws)),
        })
    return beats


def beats_to_dws(beats, width=64):
    dws = []
    for b in beats:
        for k in range(width // 32):
            if b.keep >> k & 1:
                dws.append(b.data >> 32 * k & 0xffffffff)
    return dws


def cfg0(register, be=0xf, write=None, bus=1, dev=0, function=0, tag=1, ep=0):
    """A Configuration Type 0 request as DWs."""
    fmt = 0b010 if write is not None else 0b000
    dw0 = fmt << 29 | 0b00100 << 24 | ep << 14 | 1
    dw1 = 0x0000 << 16 | tag << 8 | be
    dw2 = bus << 24 | dev << 19 | function << 16 | register << 2
    return [dw0, dw1, dw2] + ([_le(write)] if write is not None else [])


def mem_req(addr, length, first_be, last_be=0, data=None, tag=2, ep=0, force_64=False):
    """A memory read (``data is None``) or write request as DWs; data is a list of DWs."""
    four = force_64 or addr >= 1 << 32
    fmt = (0b010 if data is not None else 0) | four
    dw0 = fmt << 29 | 0b00000 << 24 | ep << 14 | (length & 0x3ff)
    dw1 = tag << 8 | last_be << 4 | first_be
    hdr = [dw0, dw1] + ([addr >> 32, addr & 0xfffffffc] if four else [addr & 0xfffffffc])
    return hdr + [_le(d) for d in (data or [])]


def _le(value):
    """A payload DW value -> the DW as carried on the stream (bytes in address order)."""
    return value  # payload DWs are little-endian values already: byte 0 in bits 7:0


def parse_cpl(dws):
    """A completion's DWs -> dict of fields and data DWs."""
    dw0, dw1, dw2 = dws[:3]
    return {
        "fmt": dw0 >> 29, "type": dw0 >> 24 & 0x1f, "length": dw0 & 0x3ff,
        "completer_id": dw1 >> 16, "status": dw1 >> 13 & 7, "byte_count": dw1 & 0xfff,
        "requester_id": dw2 >> 16, "tag": dw2 >> 8 & 0xff, "lower_address": dw2 & 0x7f,
        "data": dws[3:],
    }


def dma_data_beats(data, width=64):
    """Bytes of one DMA transfer -> beat payloads (dicts) of a ``DmaData(width)`` stream: packed
    from byte lane 0, ``keep`` per byte (all set but on the last beat), ``last`` on the last."""
    per = width // 8
    beats = []
    for i in range(0, len(data), per):
        chunk = bytes(data[i:i + per])
        beats.append({
            "data": int.from_bytes(chunk, "little"),
            "keep": (1 << len(chunk)) - 1,
            "last": int(i + per >= len(data)),
        })
    return beats


def parse_mem_req(dws):
    """A memory request's DWs (as from :func:`beats_to_dws`) -> dict of header fields, the
    DW-aligned ``addr``, ``n_dw`` (Length decoded, 0 meaning 1024), ``four_dw`` and the payload
    DWs in ``data``."""
    dw0, dw1 = dws[:2]
    fmt = dw0 >> 29
    four_dw = bool(fmt & 1)
    if four_dw:
        addr = dws[2] << 32 | dws[3]
    else:
        addr = dws[2]
    hdr_len = 4 if four_dw else 3
    length = dw0 & 0x3ff
    return {
        "fmt": fmt, "type": dw0 >> 24 & 0x1f, "tc": dw0 >> 20 & 7, "attr": dw0 >> 12 & 3,
        "attr2": dw0 >> 18 & 1, "th": dw0 >> 16 & 1, "td": dw0 >> 15 & 1, "ep": dw0 >> 14 & 1,
        "at": dw0 >> 10 & 3, "length": length, "n_dw": length or 1024,
        "requester_id": dw1 >> 16, "tag": dw1 >> 8 & 0xff,
        "last_be": dw1 >> 4 & 0xf, "first_be": dw1 & 0xf,
        "four_dw": four_dw, "addr_rsvd": addr & 3, "addr": addr & ~3,
        "data": dws[hdr_len:],
    }


async def stream_get_within(ctx, stream, cycles):
    """Like :func:`stream_get`, but fail if no transfer comes within ``cycles`` cycles, so a
    design that hangs fails the test instead of running forever."""
    ctx.set(stream.ready, 1)
    for _ in range(cycles):
        _, _, valid, payload = await ctx.tick().sample(stream.valid, stream.payload)
        if valid:
            ctx.set(stream.ready, 0)
            return payload
    raise AssertionError(f"no transfer on {stream!r} within {cycles} cycles")


async def tlp_put(ctx, stream, dws, rng=None, idle=0.0):
    """Send one TLP (a list of DWs) on ``stream``, with an idle cycle before each beat with
    probability ``idle``."""
    for beat in tlp_beats(dws, len(stream.payload.data)):
        while rng is not None and rng.random() < idle:
            await ctx.tick()
        await stream_put(ctx, stream, beat)


async def tlp_get(ctx, stream, rng=None, stall=0.0):
    """Take one TLP from ``stream`` and return its DWs, holding ``ready`` low before each beat
    with probability ``stall``; checks that ``first`` marks exactly the first beat and that
    ``keep`` packs the DWs from DW0, only the last beat short."""
    full = (1 << len(stream.payload.data) // 32) - 1
    beats = []
    while True:
        while rng is not None and rng.random() < stall:
            await ctx.tick()
        beat = await stream_get(ctx, stream)
        assert bool(beat.first) == (not beats), "first set inside a packet, or missing"
        assert beat.keep and beat.keep & (beat.keep + 1) == 0, \
            f"keep {beat.keep:#x}: DWs must be packed from DW0"
        assert beat.last or beat.keep == full, "a DW missing before the last beat"
        beats.append(beat)
        if beat.last:
            return beats_to_dws(beats, len(stream.payload.data))


def completion(tag, byte_count, lower_address, data=None, status=0, ep=0, requester_id=0,
               completer_id=0):
    """A completion as DWs: CplD when ``data`` (a list of payload DWs) is given, else Cpl.
    ``byte_count`` 4096 is encoded as 0 [PCIe-3.0 2.2.9]."""
    n = len(data) if data is not None else 0
    fmt = 0b010 if data is not None else 0b000
    dw0 = fmt << 29 | 0b01010 << 24 | ep << 14 | (n & 0x3ff)
    dw1 = completer_id << 16 | status << 13 | (byte_count & 0xfff)
    dw2 = requester_id << 16 | tag << 8 | (lower_address & 0x7f)
    return [dw0, dw1, dw2] + [_le(d) for d in (data or [])]
