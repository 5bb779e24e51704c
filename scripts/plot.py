"""A small chart renderer in pure Python: RGB canvas, lines, rectangles, a built-in 5x8 bitmap
font, and PNG output (zlib + struct), so ``make bench`` draws its plot with no plotting
library.

:func:`throughput_figure` draws the benchmark: bytes per cycle against queue depth (log2
axis), one line per block size, one panel per workload.
"""

import math
import struct
import zlib


__all__ = ["Canvas", "encode_png", "decode_png", "line_chart", "throughput_figure",
           "GLYPH_W", "GLYPH_H", "PALETTE"]


# -- font ----------------------------------------------------------------------------------------

GLYPH_W, GLYPH_H = 5, 8
# Each glyph: 8 rows top to bottom, 5 bits per row (bit 4 = leftmost column), as hex pairs.
# Rows 0-6 hold capitals and digits; row 7 is for descenders.
_FONT = {
    " ": "0000000000000000", "0": "0E11131519110E00", "1": "040C040404040E00",
    "2": "0E11010204081F00", "3": "1F02040201110E00", "4": "02060A121F020200",
    "5": "1F101E0101110E00", "6": "0608101E11110E00", "7": "1F01020408080800",
    "8": "0E11110E11110E00", "9": "0E11110F01020C00",
    "A": "0E11111F11111100", "B": "1E11111E11111E00", "C": "0E11101010110E00",
    "D": "1C12111111121C00", "E": "1F10101E10101F00", "F": "1F10101E10101000",
    "G": "0E11101711110F00", "H": "1111111F11111100", "I": "0E04040404040E00",
    "J": "0702020202120C00", "K": "1112141814121100", "L": "1010101010101F00",
    "M": "111B151511111100", "N": "1111191513111100", "O": "0E11111111110E00",
    "P": "1E11111E10101000", "Q": "0E11111115120D00", "R": "1E11111E14121100",
    "S": "0F10100E01011E00", "T": "1F04040404040400", "U": "1111111111110E00",
    "V": "11111111110A0400", "W": "1111111515150A00", "X": "11110A040A111100",
    "Y": "11110A0404040400", "Z": "1F01020408101F00",
    "a": "00000E010F110F00", "b": "1010161911111E00", "c": "00000E1010110E00",
    "d": "01010D1311110F00", "e": "00000E111F100E00", "f": "0609081C08080800",
    "g": "00000F11110F010E", "h": "1010161911111100", "i": "04000C0404040E00",
    "j": "020006020202120C", "k": "1010121418141200", "l": "0C04040404040E00",
    "m": "00001A1515111100", "n": "0000161911111100", "o": "00000E1111110E00",
    "p": "00001E11111E1010", "q": "00000F11110F0101", "r": "0000161910101000",
    "s": "00000F100E011E00", "t": "08081C0808090600", "u": "0000111111130D00",
    "v": "00001111110A0400", "w": "0000111115150A00", "x": "0000110A040A1100",
    "y": "00001111110F010E", "z": "00001F0204081F00",
    ".": "00000000000C0C00", ",": "000000000C0C0408", "-": "0000000E00000000",
    "/": "0001020408100000", ":": "000C0C000C0C0000", "%": "1819020408130300",
    "(": "0204080808040200", ")": "0804020202040800", "=": "00001F001F000000",
    "+": "0004041F04040000", "_": "0000000000001F00", "*": "0004150E15040000",
    "?": "0E11010204000400", "<": "0204081008040200", ">": "0804020102040800",
    "[": "0E08080808080E00", "]": "0E02020202020E00", "|": "0404040404040400",
    "'": "0404080000000000", "#": "0A0A1F0A1F0A0A00", "!": "0404040404000400",
    "@": "0E11171517100E00", "&": "0C12140815120D00", ";": "000C0C000C0C0408",
    "~": "0000081506000000", "^": "040A110000000000", '"': "0A0A000000000000",
}
_MISSING = "1F11111111111F00"


def _glyph(ch):
    text = _FONT.get(ch, _MISSING)
    return [int(text[k:k + 2], 16) for k in range(0, 2 * GLYPH_H, 2)]


# -- PNG -----------------------------------------------------------------------------------------

def _chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))


def encode_png(width, height, rgb):
    """PNG bytes of an 8-bit RGB image; ``rgb`` holds ``width * height * 3`` bytes, rows top
    to bottom."""
    if len(rgb) != width * height * 3:
        raise ValueError(f"{len(rgb)} bytes of pixels for a {width}x{height} RGB image "
                         f"(needs {width * height * 3})")
    stride = width * 3
    # Filter type 0 (None) on every scanline.
    raw = b"".join(b"\x00" + bytes(rgb[y * stride:(y + 1) * stride]) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) +
            _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def decode_png(data):
    """``(width, height, rgb bytes)`` of a PNG as :func:`encode_png` writes them (8-bit RGB,
    not interlaced, any of the five scanline filters)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, width = 8, b"", None
    while pos < len(data):
        n, = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] != \
                zlib.crc32(kind + body) & 0xffffffff:
            raise ValueError(f"bad CRC in the {kind.decode()} chunk")
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if (depth, color, interlace) != (8, 2, 0):
                raise ValueError("only 8-bit RGB, non-interlaced PNGs are read")
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    stride = width * 3
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 1:
                line[i] = (line[i] + a) & 0xff
            elif f == 2:
                line[i] = (line[i] + b) & 0xff
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xff
            elif f == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) \
                    & 0xff
        out += line
        prev = line
    return width, height, bytes(out)


# -- canvas --------------------------------------------------------------------------------------

class Canvas:
    """An RGB image to draw on; colours are ``(r, g, b)`` tuples.

    Parameters
    ----------
    width, height : int
        Size in pixels.
    background : tuple
        Initial colour of every pixel.

    Raises
    ------
    ValueError
        If a size is not a positive integer.
    """
    def __init__(self, width, height, background=(255, 255, 255)):
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ValueError(f"canvas size must be positive integers, not {width!r}x{height!r}")
        self.width, self.height = width, height
        self.pixels = bytearray(bytes(background) * (width * height))

    def pixel(self, x, y, color):
        """Set one pixel; outside the canvas does nothing."""
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i:i + 3] = bytes(color)

    def get(self, x, y):
        i = (y * self.width + x) * 3
        return tuple(self.pixels[i:i + 3])

    def rect(self, x0, y0, x1, y1, color, fill=True):
        """The rectangle with corners ``(x0, y0)`` and ``(x1, y1)``, both included."""
        x0, x1 = sorted((int(x0), int(x1)))
        y0, y1 = sorted((int(y0), int(y1)))
        if fill:
            xa, xb = max(0, x0), min(self.width - 1, x1)
            if xa > xb:
                return
            row = bytes(color) * (xb - xa + 1)
            for y in range(max(0, y0), min(self.height - 1, y1) + 1):
                i = (y * self.width + xa) * 3
                self.pixels[i:i + len(row)] = row
        else:
            for x0_, y0_, x1_, y1_ in ((x0, y0, x1, y0), (x0, y1, x1, y1), (x0, y0, x0, y1),
                                       (x1, y0, x1, y1)):
                self.line(x0_, y0_, x1_, y1_, color)

    def line(self, x0, y0, x1, y1, color, width=1, dash=None):
        """A straight line (Bresenham), ``width`` pixels thick; ``dash=(on, off)`` in pixels
        along the line."""
        x0, y0, x1, y1 = (int(round(v)) for v in (x0, y0, x1, y1))
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        lo = -((width - 1) // 2)
        step = 0
        while True:
            if dash is None or step % (dash[0] + dash[1]) < dash[0]:
                for ox in range(lo, lo + width):
                    for oy in range(lo, lo + width):
                        self.pixel(x0 + ox, y0 + oy, color)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy
            step += 1

    @staticmethod
    def text_width(text, scale=1):
        return max(0, len(text) * (GLYPH_W + 1) - 1) * scale

    def text(self, x, y, text, color=(0, 0, 0), scale=1, align="left", valign="top",
             vertical=False):
        """Draw ``text`` with the built-in font. ``align`` is ``left``, ``center`` or
        ``right`` of ``x``; ``valign`` is ``top``, ``middle`` or ``bottom`` of ``y``.
        ``vertical`` writes bottom to top (a y-axis label), centred on ``(x, y)``."""
        w, h = self.text_width(text, scale), GLYPH_H * scale
        if vertical:
            x0, y0 = x - h // 2, y + w // 2
        else:
            x0 = {"left": x, "center": x - w // 2, "right": x - w}[align]
            y0 = {"top": y, "middle": y - h // 2, "bottom": y - h}[valign]
        for k, ch in enumerate(text):
            rows = _glyph(ch)
            for r, bits in enumerate(rows):
                for c in range(GLYPH_W):
                    if bits >> (GLYPH_W - 1 - c) & 1:
                        u, v = k * (GLYPH_W + 1) + c, r
                        for sx in range(scale):
                            for sy in range(scale):
                                if vertical:
                                    self.pixel(x0 + v * scale + sy, y0 - u * scale - sx, color)
                                else:
                                    self.pixel(x0 + u * scale + sx, y0 + v * scale + sy, color)

    def png(self):
        return encode_png(self.width, self.height, self.pixels)

    def save(self, path):
        with open(path, "wb") as f:
            f.write(self.png())


# -- charts --------------------------------------------------------------------------------------

# Distinguishable line colours (blue, orange, green, red, purple, brown, pink, grey, olive, cyan).
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
GRID = (225, 225, 225)
AXIS = (60, 60, 60)


def _nice_step(span, ticks=5):
    raw = span / max(1, ticks)
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw:
            return m * mag
    return 10 * mag


def _fmt(v):
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


def line_chart(canvas, box, series, *, title="", xlabel="", ylabel="", y_max=None,
               log2_x=True, ref_y=None, ref_label="", y2_scale=None, y2_label=""):
    """Draw a line chart inside ``box = (x0, y0, x1, y1)`` of ``canvas``.

    Parameters
    ----------
    series : list of (label, color, [(x, y), ...])
        One line each, with a square marker at each point.
    y_max : float or None
        Top of the y axis (rounded up to a tick); default the largest y.
    log2_x : bool
        x on a log2 axis with a tick at each power of two in range.
    ref_y : float or None
        A dashed horizontal reference line (e.g. the peak), labelled ``ref_label``.
    y2_scale : float or None
        Draw a secondary y axis on the right whose values are ``y * y2_scale``.
    """
    x0, y0, x1, y1 = box
    left = x0 + 44
    right = x1 - (48 if y2_scale else 10)
    top = y0 + (22 if title else 8)
    bottom = y1 - 34
    xs = [x for _, _, pts in series for x, _ in pts]
    ys = [y for _, _, pts in series for _, y in pts]
    if not xs:
        xs, ys = [1], [0]
    fx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    xlo, xhi = fx(min(xs)), fx(max(xs))
    if xhi == xlo:
        xlo, xhi = xlo - 1, xhi + 1
    top_value = max([y_max or 0] + ys + ([ref_y] if ref_y else [])) or 1
    step = _nice_step(top_value)
    ytop = step * math.ceil(top_value / step - 1e-9)
    if ref_y is not None and ref_y >= ytop - 1e-9:
        ytop += step / 2          # room above the reference line for its label

    def px(v):
        return left + (fx(v) - xlo) / (xhi - xlo) * (right - left)

    def py(v):
        return bottom - v / ytop * (bottom - top)

    if title:
        canvas.text((left + right) // 2, y0 + 4, title, AXIS, scale=2, align="center")
    # Grid and y ticks.
    k = 0
    while k * step <= ytop + 1e-9:
        v = k * step
        y = int(round(py(v)))
        canvas.line(left, y, right, y, GRID)
        canvas.line(left - 4, y, left, y, AXIS)
        canvas.text(left - 6, y, _fmt(round(v, 6)), AXIS, align="right", valign="middle")
        if y2_scale:
            canvas.line(right, y, right + 4, y, AXIS)
            canvas.text(right + 6, y, _fmt(round(v * y2_scale, 3)), AXIS, valign="middle")
        k += 1
    # x ticks.
    if log2_x:
        ticks = [2 ** e for e in range(math.ceil(xlo), math.floor(xhi) + 1)]
    else:
        xstep = _nice_step(xhi - xlo)
        ticks = [xlo + i * xstep for i in range(int((xhi - xlo) / xstep) + 1)]
    for t in ticks:
        x = int(round(px(t)))
        canvas.line(x, top, x, bottom, GRID)
        canvas.line(x, bottom, x, bottom + 4, AXIS)
        canvas.text(x, bottom + 6, _fmt(t), AXIS, align="center")
    canvas.rect(left, top, right, bottom, AXIS, fill=False)
    if xlabel:
        canvas.text((left + right) // 2, y1 - 2, xlabel, AXIS, align="center", valign="bottom")
    if ylabel:
        canvas.text(x0 + 6, (top + bottom) // 2, ylabel, AXIS, vertical=True)
    if y2_label:
        canvas.text(x1 - 6, (top + bottom) // 2, y2_label, AXIS, vertical=True)
    if ref_y is not None:
        y = int(round(py(ref_y)))
        canvas.line(left, y, right, y, (120, 120, 120), dash=(4, 3))
        if ref_label:
            canvas.text(left + 4, y - 2, ref_label, (120, 120, 120), valign="bottom")
    for label, color, pts in series:
        pts = sorted(pts)
        for (xa, ya), (xb, yb) in zip(pts, pts[1:]):
            canvas.line(px(xa), py(ya), px(xb), py(yb), color, width=2)
        for x, y in pts:
            cx, cy = int(round(px(x))), int(round(py(y)))
            canvas.rect(cx - 2, cy - 2, cx + 2, cy + 2, color)
    return px, py


def _size_label(n):
    return f"{n >> 10} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def throughput_figure(records, peak=None, clock_mhz=None, title="virtio-blk throughput",
                      workloads=None, panel=(460, 330)):
    """A figure of benchmark records (dicts with ``workload``, ``block_size``,
    ``queue_depth``, ``bytes_per_cycle``): one panel per workload (two per row), bytes per
    cycle against queue depth, one line per block size, a shared legend. ``peak`` draws a
    dashed line at the data path's peak; ``clock_mhz`` adds an MB/s axis."""
    if workloads is None:
        workloads = []
        for r in records:
            if r["workload"] not in workloads:
                workloads.append(r["workload"])
    blocks = sorted({r["block_size"] for r in records})
    colors = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(blocks)}
    cols = min(2, max(1, len(workloads)))
    rows = max(1, math.ceil(len(workloads) / cols))
    pw, ph = panel
    head, legend_h = 34, 16 + 14 * math.ceil(len(blocks) / 5)
    canvas = Canvas(cols * pw, head + rows * ph + legend_h)
    canvas.text(canvas.width // 2, 8, title, AXIS, scale=2, align="center")
    y_max = max([peak or 0] + [r["bytes_per_cycle"] for r in records])
    for i, w in enumerate(workloads):
        bx, by = (i % cols) * pw, head + (i // cols) * ph
        series = []
        for b in blocks:
            pts = sorted((r["queue_depth"], r["bytes_per_cycle"]) for r in records
                         if r["workload"] == w and r["block_size"] == b)
            if pts:
                series.append((_size_label(b), colors[b], pts))
        line_chart(canvas, (bx + 4, by, bx + pw - 4, by + ph - 4), series, title=w,
                   xlabel="queue depth", ylabel="bytes/cycle", y_max=y_max, ref_y=peak,
                   ref_label=f"peak {peak:g} B/cycle" if peak else "",
                   y2_scale=clock_mhz, y2_label="MB/s" if clock_mhz else "")
    # Legend: a short line and the block size, five per row.
    ly = head + rows * ph + 6
    canvas.text(20, ly, "block size:", AXIS)
    for i, b in enumerate(blocks):
        x = 100 + (i % 5) * 100
        y = ly + (i // 5) * 14
        canvas.line(x, y + 4, x + 18, y + 4, colors[b], width=2)
        canvas.rect(x + 7, y + 2, x + 11, y + 6, colors[b])
        canvas.text(x + 24, y, _size_label(b), AXIS)
    return canvas
