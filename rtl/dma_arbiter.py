# Ref: PCIe Base 3.0, section 2.4.1 (ordering: posted writes are not passed by later reads)
"""Sharing one DMA engine between clients.

The request engine's stages each talk to the DMA engines as if they owned them: a stream of
commands out, the data and one status per command back. :class:`DmaReadArbiter` and
:class:`DmaWriteArbiter` put several such clients on one engine. The engines answer in command
order, so an arbiter only has to remember, in command order, whose each command was: two
queues of client numbers, one popped on each command's last data beat, the other on each
status.

A client must take the data and the status of every command it issued, whatever else it is
waiting for; the arbiters never drop or hold back anything. Since the engine's answers come
in command order, one client that stops taking its data stops every client behind it.
"""

from amaranth.hdl import Module, Signal, Mux
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .dma_layouts import DmaCommand, DmaData, DmaStatus
from .streams import RegisterSlice, SkidBuffer


__all__ = ["DmaReadClient", "DmaWriteClient", "DmaReadArbiter", "DmaWriteArbiter"]


class DmaReadClient(wiring.Signature):
    """A DMA read engine's client port, seen from the client: ``cmd`` out, ``data`` and
    ``status`` in (:class:`rtl.dma_read.DmaReadEngine` describes the contract)."""
    def __init__(self, data_width=64):
        self.data_width = data_width
        super().__init__({
            "cmd":    Out(stream.Signature(DmaCommand)),
            "data":   In(stream.Signature(DmaData(data_width))),
            "status": In(stream.Signature(DmaStatus)),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other.data_width == self.data_width


class DmaWriteClient(wiring.Signature):
    """A DMA write engine's client port, seen from the client: ``cmd`` and ``data`` out,
    ``status`` in (:class:`rtl.dma_write.DmaWriteEngine` describes the contract)."""
    def __init__(self, data_width=64):
        self.data_width = data_width
        super().__init__({
            "cmd":    Out(stream.Signature(DmaCommand)),
            "data":   Out(stream.Signature(DmaData(data_width))),
            "status": In(stream.Signature(DmaStatus)),
        })

    def __eq__(self, other):
        return type(other) is type(self) and other.data_width == self.data_width


class _Arbiter(wiring.Component):
    #: Route queues with registered outputs (see :meth:`_commands`).
    _registered_routes = False

    def __init__(self, client_signature, clients, depth, registered):
        if not isinstance(clients, int) or not 2 <= clients <= 16:
            raise ValueError(f"clients must be from 2 to 16, not {clients!r}")
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive number of commands, not {depth!r}")
        self.clients = clients
        self.depth = depth
        if not isinstance(registered, (tuple, list)):
            registered = (registered,) * clients
        if len(registered) != clients:
            raise ValueError(f"registered names {len(registered)} clients, not {clients}")
        self.registered = tuple(bool(r) for r in registered)
        super().__init__({
            "i": In(client_signature).array(clients),
            "o": Out(client_signature),
        })

    def _commands(self, m):
        """Round robin over the clients' commands; returns the two route queues' write side.

        A command offered to the engine stays offered, with the same payload, until taken
        (the grant is held while ``o.cmd`` waits), as a stream source must."""
        n = self.clients
        # With ``registered``, each client's commands enter through a register slice: the
        # grant below depends on every client's ``valid``, and each client's ``ready`` on the
        # grant, so without it one client's command logic would chain through the arbiter
        # into the others'. Half rate is enough (a client's commands each bring data beats or
        # a round trip), so not a skid buffer: its multiplexer costs a LUT a command bit.
        cmds = []
        for j in range(n):
            if self.registered[j]:
                buf = RegisterSlice(stream.Signature(DmaCommand))
                m.submodules[f"cmd_reg{j}"] = buf
                wiring.connect(m, wiring.flipped(self.i[j].cmd), buf.i)
                cmds.append(buf.o)
            else:
                cmds.append(self.i[j].cmd)
        # The route queues of a read arbiter have registered outputs: a read's data comes back
        # a host round trip after its command, so the cycle they add to a route is never seen,
        # and its beats reach the client without a memory read on their way. A write's data
        # may come with its command, so a write arbiter's routes answer in the next cycle.
        route_fifo = fifo.SyncFIFOBuffered if self._registered_routes else fifo.SyncFIFO
        m.submodules.data_route = data_route = route_fifo(
            width=(n - 1).bit_length(), depth=self.depth)
        m.submodules.status_route = status_route = route_fifo(
            width=(n - 1).bit_length(), depth=self.depth)

        last = Signal(range(n))          # the client granted last
        held = Signal()                  # o.cmd was offered and not taken: keep the grant
        grant = Signal(range(n))
        pick = Signal(range(n))
        any_valid = Signal()
        # The first client with a command after the one granted last.
        for k in reversed(range(1, n + 1)):
            for j in range(n):
                cand = (j + k) % n
                with m.If((last == j) & cmds[cand].valid):
                    m.d.comb += [pick.eq(cand), any_valid.eq(1)]
        m.d.comb += grant.eq(Mux(held, last, pick))
        if self._registered_routes:
            # A read's route is written a cycle after its command was taken, from registers
            # (its data comes a round trip later): the grant's round robin does not run into
            # the queues' write ports. Room counts that write already, so that a command
            # offered keeps its room until taken.
            route_en = Signal()
            route_to = Signal(range(n))
            limit = Mux(route_en, self.depth - 1, self.depth)
            room = (data_route.w_level < limit) & (status_route.w_level < limit)
        else:
            room = data_route.w_rdy & status_route.w_rdy
        with m.Switch(grant):
            for j in range(n):
                with m.Case(j):
                    m.d.comb += [
                        self.o.cmd.payload.eq(cmds[j].payload),
                        self.o.cmd.valid.eq(cmds[j].valid & room),
                        cmds[j].ready.eq(self.o.cmd.ready & room),
                    ]
        taken = self.o.cmd.valid & self.o.cmd.ready
        with m.If(any_valid | held):
            m.d.sync += last.eq(grant)
        m.d.sync += held.eq(self.o.cmd.valid & ~self.o.cmd.ready)
        if self._registered_routes:
            m.d.sync += [route_en.eq(taken), route_to.eq(grant)]
        else:
            route_en, route_to = taken, grant
        m.d.comb += [
            data_route.w_data.eq(route_to), data_route.w_en.eq(route_en),
            status_route.w_data.eq(route_to), status_route.w_en.eq(route_en),
        ]
        return data_route, status_route

    def _statuses(self, m, status_route, gates=None):
        """Route each status to its client; ``gates[j]``, when given and not None, holds
        client ``j``'s status back while it is low."""
        with m.Switch(status_route.r_data):
            for j in range(self.clients):
                ok = status_route.r_rdy
                if gates is not None and gates[j] is not None:
                    ok = ok & gates[j]
                with m.Case(j):
                    m.d.comb += [
                        self.i[j].status.payload.eq(self.o.status.payload),
                        self.i[j].status.valid.eq(self.o.status.valid & ok),
                        self.o.status.ready.eq(self.i[j].status.ready & ok),
                    ]
        m.d.comb += status_route.r_en.eq(self.o.status.valid & self.o.status.ready)


class DmaReadArbiter(_Arbiter):
    """Puts ``clients`` read clients on one :class:`~rtl.dma_read.DmaReadEngine`.

    Commands are taken round robin; each command's data beats (up to the one with ``last``)
    and its status go back to the client that issued it.

    Parameters
    ----------
    clients : int
        Number of clients, 2 to 16.
    data_width : int
    depth : int
        Commands whose status has not come back yet, at most; more wait.
    registered : bool, or a bool per client
        Each client's commands through a :class:`~rtl.streams.RegisterSlice` (a cycle more per
        command, at most one command every other cycle, no combinational path from one
        client's command to another's ``ready``), and its data through a
        :class:`~rtl.streams.SkidBuffer` (a cycle more per beat, at full rate, so that the
        client's ``data.ready`` does not reach the engine); a client that is itself a
        registered arbiter needs neither.

    Attributes
    ----------
    i : array of DmaReadClient(data_width), in
        The clients.
    o : DmaReadClient(data_width), out
        To the engine.
    """
    _registered_routes = True

    def __init__(self, clients, data_width=64, depth=16, registered=True):
        super().__init__(DmaReadClient(data_width), clients, depth, registered)

    def elaborate(self, platform):
        m = Module()
        data_route, status_route = self._commands(m)
        # A registered client takes its data from a skid buffer: the route queue pops on the
        # beat with `last`, and the client's `ready` (from its own state machine) is not to
        # chain into that. Its status must still come after its last beat [the engine's
        # contract]: `lasts[j]` counts the last beats client j has taken whose status it has
        # not, and its status waits while that is zero.
        beats_out = []
        lasts = []
        for j in range(self.clients):
            if self.registered[j]:
                skid = SkidBuffer(self.i[j].data.signature)
                m.submodules[f"data_skid{j}"] = skid
                wiring.connect(m, skid.o, wiring.flipped(self.i[j].data))
                beats_out.append(skid.i)
                count = Signal(range(self.depth + 1), name=f"lasts{j}")
                got_last = (self.i[j].data.valid & self.i[j].data.ready &
                            self.i[j].data.payload.last)
                status_now = self.i[j].status.valid & self.i[j].status.ready
                m.d.sync += count.eq(count + got_last - status_now)
                lasts.append(count != 0)
            else:
                beats_out.append(self.i[j].data)
                lasts.append(None)
        with m.Switch(data_route.r_data):
            for j in range(self.clients):
                with m.Case(j):
                    m.d.comb += [
                        beats_out[j].payload.eq(self.o.data.payload),
                        beats_out[j].valid.eq(self.o.data.valid & data_route.r_rdy),
                        self.o.data.ready.eq(beats_out[j].ready & data_route.r_rdy),
                    ]
        m.d.comb += data_route.r_en.eq(self.o.data.valid & self.o.data.ready &
                                       self.o.data.payload.last)
        self._statuses(m, status_route, lasts)
        return m


class DmaWriteArbiter(_Arbiter):
    """Puts ``clients`` write clients on one :class:`~rtl.dma_write.DmaWriteEngine`.

    Commands are taken round robin; the data beats of each command (``ceil(length / 8)`` of
    them, as the engine counts them) are taken from the client that issued it, in command
    order, and its status goes back to that client. A client may offer its data before its
    command is taken: it waits until the command is.

    Parameters and attributes as :class:`DmaReadArbiter`, with :class:`DmaWriteClient` ports;
    a ``registered`` client's data enters through a :class:`~rtl.streams.SkidBuffer` (a cycle
    more, at full rate).
    """
    def __init__(self, clients, data_width=64, depth=16, registered=True):
        super().__init__(DmaWriteClient(data_width), clients, depth, registered)

    def elaborate(self, platform):
        m = Module()
        data_route, status_route = self._commands(m)
        # The beats each command still takes, in command order, beside its client number.
        m.submodules.beats = beats = fifo.SyncFIFO(width=14, depth=self.depth)
        taken = self.o.cmd.valid & self.o.cmd.ready
        m.d.comb += [
            beats.w_data.eq((self.o.cmd.payload.length + 7) >> 3),
            beats.w_en.eq(taken),
        ]
        left = Signal(14)            # beats of the head command already passed
        # A registered client's data enters through a skid buffer, as its commands through a
        # register slice: the route below counts each beat off its command, and a client's
        # `valid` (from its own state machine, often through its own routes) is not to chain
        # into that count.
        beats_in = []
        for j in range(self.clients):
            if self.registered[j]:
                skid = SkidBuffer(self.i[j].data.signature.flip())
                m.submodules[f"data_skid{j}"] = skid
                wiring.connect(m, wiring.flipped(self.i[j].data), skid.i)
                beats_in.append(skid.o)
            else:
                beats_in.append(self.i[j].data)
        with m.Switch(data_route.r_data):
            for j in range(self.clients):
                with m.Case(j):
                    m.d.comb += [
                        self.o.data.payload.eq(beats_in[j].payload),
                        self.o.data.valid.eq(beats_in[j].valid & data_route.r_rdy),
                        beats_in[j].ready.eq(self.o.data.ready & data_route.r_rdy),
                    ]
        beat = self.o.data.valid & self.o.data.ready
        end = beat & (left + 1 >= beats.r_data)
        with m.If(beat):
            m.d.sync += left.eq(Mux(end, 0, left + 1))
        m.d.comb += [data_route.r_en.eq(end), beats.r_en.eq(end)]
        self._statuses(m, status_route)
        return m
