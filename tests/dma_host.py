"""Host memory behind a DMA client port, for the Amaranth-simulator tests of the request
engine's stages: reads answer with the memory's bytes as :class:`rtl.dma_read.DmaReadEngine`
frames them (packed from lane 0, ``last`` on a command's final beat, then a status, and
the next read's first beats possibly beside that status), writes
land in memory as :class:`rtl.dma_write.DmaWriteEngine` takes them. Every stream stalls at
random from the seeded ``rng``, and every access is logged."""

import struct


__all__ = ["DmaHost", "wait_handshake"]


async def wait_handshake(ctx, stream):
    """Wait, with a plain loop, for the cycle in which an offered transfer is taken."""
    while True:
        _, _, ready = await ctx.tick().sample(stream.ready)
        if ready:
            return


class DmaHost:
    """``size`` bytes of host memory at address 0.

    Parameters
    ----------
    rng : random.Random
    stall : float
        Probability that a stream is held (not ready, or not valid) in a cycle.
    """
    def __init__(self, rng, size=1 << 18, stall=0.3):
        self.rng = rng
        self.mem = bytearray(size)
        self.stall = stall
        self.reads = []       # (addr, length), in command order
        self.writes = []      # (addr, bytes), in command order
        self.fail = set()     # addresses whose reads fail (UR) when a command starts there
        self.outstanding = 0  # reads taken and not answered with their status yet
        self.max_outstanding = 0
        self.in_flight = []   # addresses of those reads
        self.snapshots = []   # `in_flight` as each read was taken, that read included

    def put(self, addr, data):
        self.mem[addr:addr + len(data)] = data

    def u16(self, addr):
        return struct.unpack_from("<H", self.mem, addr)[0]

    def add_to(self, sim, rd=None, wr=None):
        """Serve the ports ``rd`` and ``wr`` in ``sim``.

        The coroutines are background testbenches, not processes: they share ``rng``, and
        testbenches run in the order they were added, where processes do not, so only then
        does a seed replay a run exactly."""
        for proc in self._coroutines(rd, wr):
            sim.add_testbench(proc, background=True)

    def _coroutines(self, rd, wr):
        procs = []
        if rd is not None:
            queue = []

            async def take_reads(ctx):
                while True:
                    ctx.set(rd.cmd.ready, self.rng.random() >= self.stall)
                    _, _, v, r, p = await ctx.tick().sample(rd.cmd.valid, rd.cmd.ready,
                                                             rd.cmd.payload)
                    if v and r:
                        self.reads.append((p.addr, p.length))
                        queue.append((p.addr, p.length, p.tag))
                        self.outstanding += 1
                        self.max_outstanding = max(self.max_outstanding, self.outstanding)
                        self.in_flight.append(p.addr)
                        self.snapshots.append(tuple(self.in_flight))

            statuses = []   # (tag, error, addr) of reads whose last beat was taken

            async def answer_data(ctx):
                # As DmaReadEngine offers them: a read's beats as soon as they are there, the
                # next read's first beats even while this one's status waits (a client that
                # waits for a status must stop at `last`), but a last beat only once the
                # status before it has been taken.
                while True:
                    if not queue:
                        await ctx.tick()
                        continue
                    addr, length, tag = queue.pop(0)
                    error = 1 if addr in self.fail else 0
                    data = bytes(length) if error else bytes(self.mem[addr:addr + length])
                    for k in range(0, length, 8):
                        last = k + 8 >= length
                        while self.rng.random() < self.stall or (last and statuses):
                            await ctx.tick()
                        chunk = data[k:k + 8]
                        ctx.set(rd.data.valid, 1)
                        ctx.set(rd.data.payload, {
                            "data": int.from_bytes(chunk, "little"),
                            "keep": (1 << len(chunk)) - 1,
                            "last": int(last)})
                        await wait_handshake(ctx, rd.data)
                        ctx.set(rd.data.valid, 0)
                    statuses.append((tag, error, addr))

            async def answer_status(ctx):
                # A read's status from the cycle after its last beat was taken.
                while True:
                    if not statuses:
                        await ctx.tick()
                        continue
                    tag, error, addr = statuses[0]
                    ctx.set(rd.status.valid, 1)
                    ctx.set(rd.status.payload, {"tag": tag, "error": error})
                    await wait_handshake(ctx, rd.status)
                    ctx.set(rd.status.valid, 0)
                    statuses.pop(0)
                    self.outstanding -= 1
                    self.in_flight.remove(addr)
            procs += [take_reads, answer_data, answer_status]
        if wr is not None:
            wqueue = []

            async def take_writes(ctx):
                while True:
                    ctx.set(wr.cmd.ready, self.rng.random() >= self.stall)
                    _, _, v, r, p = await ctx.tick().sample(wr.cmd.valid, wr.cmd.ready,
                                                             wr.cmd.payload)
                    if v and r:
                        wqueue.append((p.addr, p.length, p.tag))

            async def write_data(ctx):
                while True:
                    if not wqueue:
                        await ctx.tick()
                        continue
                    addr, length, tag = wqueue.pop(0)
                    data = b""
                    while len(data) < length:
                        ctx.set(wr.data.ready, self.rng.random() >= self.stall)
                        _, _, v, r, p = await ctx.tick().sample(wr.data.valid, wr.data.ready,
                                                                 wr.data.payload)
                        if v and r:
                            data += p.data.to_bytes(8, "little")
                    ctx.set(wr.data.ready, 0)
                    data = data[:length]
                    self.put(addr, data)
                    self.writes.append((addr, data))
                    ctx.set(wr.status.valid, 1)
                    ctx.set(wr.status.payload, {"tag": tag, "error": 0})
                    await wait_handshake(ctx, wr.status)
                    ctx.set(wr.status.valid, 0)
            procs += [take_writes, write_data]
        return procs
