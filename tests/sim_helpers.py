"""Helpers shared by the Amaranth-simulator unit tests: stream access and raw TLP framing."""

import struct


__all__ = ["stream_put", "stream_get", "tlp_beats", "beats_to_dws",
           "cfg0", "mem_req", "parse_cpl"]


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
