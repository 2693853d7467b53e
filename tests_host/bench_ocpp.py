"""Benchmarks of the OCPP link on the virtual board (run by tools/benchmark.py, which starts
tools/csms.py and tests_host/netproxy.py around it and drives them).

    bench_ocpp.py stall MODE [N] [--seed N]
    bench_ocpp.py boot
    bench_ocpp.py queue N [--heap BYTES]

Runs on the virtual ESP32 (frozen in, tools/vm.py) with the working directory as the board's flash
(board.json, settings.json with ocpp_url, charge_box_id and, for wss://, ocpp_ca_file). The heap
figures of `queue` are the firmware's (simrun.Heap: the interpreter's less what the world and the
harness held before the first boot); BYTES is the firmware's budget they are reported against.

stall: real time, as on the board (firmware.station.Station.run): the control task (world.advance,
  then station.tick()) every 10 ms, the slow task (service()) every 100 ms and the ChargePoint's
  run() with its link tasks, all under asyncio on SystemClock, while a car charges at 16 A on three
  phases. The gap between the starts of consecutive control ticks is recorded (time.ticks_us) into
  a histogram allocated before the firmware starts (instrumentation, not firmware data). The link
  is the firmware's own, except that its reconnect backoff is shortened to 20..100 ms so that the
  link reconnects as often as the network lets it (the firmware's backoff grows to 5 minutes).
  MODE names what the driver (tools/benchmark.py) does meanwhile; for all modes but `drain` this
  program prints `ready` once the link is accepted, the StartTransaction delivered and the car
  charging, records until a `stop` line arrives on stdin, then prints the figures. `drain N`: the
  network starts down; once the session has started, N transaction MeterValues are queued in the
  durable outbox (sampled like the firmware samples them), `queued N` is printed and recording
  starts; the driver brings the network up and recording ends when the outbox is empty.
boot: virtual time, the simulator (simrun.Sim) as tools/sim.py runs it: from the board's power-on
  until the StatusNotification Available of connector 1 is answered by the back end; the virtual
  time and the real time that took.
queue N: the simulator, network down (the driver's proxy refuses connections): live heap after gc
  before the car comes, charging with only the StartTransaction queued, and with N transaction
  MeterValues queued (MeterValueSampleInterval set to 1 s so the firmware samples them itself).

Output lines: `ready`, `queued N`, then figures (`gaps N P50 P99 MAX OVER20 OVER50` in us, `link
ATTEMPTS UPS DOWNS FAILS`, `rpc RECEIVED SENT`, `outbox PENDING DROPPED`, `drained N MS SEGS_BEFORE
SEGS_AFTER PUT_US`, `boot VIRTUAL_MS REAL_MS`, `heap ...`, `note TEXT`, `task-error TEXT`), then `done`.
"""
import sys

import asyncio
import gc
import os
import time

TICK_MS = 10
SERVICE_MS = 100
BIN_US = 100  # histogram resolution
BINS = 1000  # 0 .. 100 ms; longer gaps land in the last bin (the max is exact)
FAST_FIRST_MS = 20
FAST_CAP_MS = 100
READY_TIMEOUT_MS = 30000
MODES = ("idle", "tls", "storm", "frame", "rate", "drain")


class BenchError(Exception):
    pass


def _exc_handler(loop, ctx):
    e = ctx.get("exception")
    print("task-error", repr(e) if e is not None else ctx.get("message"))


def _segments():
    try:
        return len([e[0] for e in os.ilistdir("outbox") if e[0].endswith(".seg")])
    except OSError:
        return 0


class Gaps:
    """Histogram of the gaps between consecutive control ticks (allocated before the budget)."""

    def __init__(self):
        import array

        self.hist = array.array("i", (0 for _ in range(BINS)))
        self.reset()

    def reset(self):
        h = self.hist
        for i in range(BINS):
            h[i] = 0
        self.n = 0
        self.max = 0
        self.over20 = 0
        self.over50 = 0

    def add(self, g):
        self.n += 1
        if g > self.max:
            self.max = g
        if g > 20000:
            self.over20 += 1
            if g > 50000:
                self.over50 += 1
        i = g // BIN_US
        if i >= BINS:
            i = BINS - 1
        self.hist[i] += 1

    def rank(self, p):
        """Nearest-rank percentile: the upper edge of its bin (never above the exact max)."""
        if not self.n:
            return 0
        want = (p * self.n + 99) // 100
        c = 0
        for i in range(BINS):
            c += self.hist[i]
            if c >= want:
                v = (i + 1) * BIN_US
                return v if v < self.max else self.max
        return self.max

    def report(self):
        print("gaps", self.n, self.rank(50), self.rank(99), self.max, self.over20, self.over50)


class Stall:
    def __init__(self, mode, arg, gaps):
        from drivers import board
        from firmware import station
        from firmware.clock import SystemClock
        from world.world import World

        self.mode = mode
        self.arg = arg
        self.gaps = gaps
        self.profile = board.load_installed("")
        self.world = World(self.profile)
        self.world.car.react_ms = 0
        self.clock = SystemClock()
        self.t_start = self.clock.ticks_ms()
        self.station = station.start("", self.clock)
        cp = self.station.ocpp
        if cp is None:
            raise BenchError("no OCPP link: settings.json names no ocpp_url")
        self.cp = cp
        self.recording = False
        self.done = False
        self.ups = self.downs = self.fails = 0
        self.station.add_sink(self._event)
        self._fast_link()
        self.stop_seen = False
        import select

        self.poll = select.poll()
        self.poll.register(sys.stdin, select.POLLIN)

    def _fast_link(self):
        # The firmware's own link (ChargePoint.run() would build exactly this), with a short backoff.
        from firmware.ocpp import chargepoint, ws

        cp = self.cp
        cp.link = ws.Link(cp.opts.url, cp.opts.charge_box_id, self.clock, cp.config.get("AuthorizationKey"),
                          cp.opts.ca, cp.config.get("WebSocketPingInterval"), sleep_ms=self.clock.sleep_ms,
                          stable_ms=chargepoint.STABLE_MS, backoff=ws.Backoff(FAST_FIRST_MS, FAST_CAP_MS),
                          buf=cp._rxbuf, piece=cp._txbuf)

    def _event(self, kind, fields, at):
        if kind == "ocpp":
            link = fields.get("link")
            if link == "up":
                self.ups += 1
            elif link == "down":
                self.downs += 1
            elif link == "failed":
                self.fails += 1

    # ---- the tasks of the board ----

    async def control(self):
        st = self.station
        world = self.world
        clock = self.clock
        gaps = self.gaps
        last = None
        while not self.done:
            t = time.ticks_us()
            if self.recording:
                if last is not None:
                    gaps.add(time.ticks_diff(t, last))
                last = t
            else:
                last = None
            world.advance(clock.ticks_ms())
            st.tick()
            await asyncio.sleep_ms(TICK_MS)

    async def slow(self):
        st = self.station
        while not self.done:
            st.service()
            if not self.stop_seen and self.poll.poll(0):
                line = sys.stdin.readline()
                if not line or line.strip() == "stop":
                    self.stop_seen = True
            await asyncio.sleep_ms(SERVICE_MS)

    # ---- helpers ----

    def charging(self):
        return self.station.hw.relay.closed() and self.world.relay.closed

    async def until(self, cond, timeout_ms, what):
        t0 = self.clock.ticks_ms()
        while not cond():
            if self.clock.ticks_diff(self.clock.ticks_ms(), t0) > timeout_ms:
                raise BenchError("%s: %s within %d ms (link %s, errors %s)"
                                 % (self.mode, what, timeout_ms, self.cp.link, self.cp.errors))
            await asyncio.sleep_ms(5)

    def settled(self):
        cp = self.cp
        # (tls: the car waits in B, see main())
        return (cp.accepted and cp.link is not None and cp.link.connected
                and (self.charging() or self.mode == "tls") and cp.outbox.pending() == 0 and not cp.busy())

    async def measure(self):
        cp = self.cp
        if self.mode == "drain":
            await self.drain()
            return
        await self.until(self.settled, READY_TIMEOUT_MS, "link accepted, StartTransaction delivered, charging")
        print("ready", self.clock.ticks_diff(self.clock.ticks_ms(), self.t_start))
        self.gaps.reset()
        self.recording = True
        while not self.stop_seen:
            await asyncio.sleep_ms(20)
        self.recording = False

    async def drain(self):
        cp = self.cp
        n = self.arg
        # (the StartTransaction waits for the meter's first reading; on a loaded host that can
        # come after the contactor closed: wait for it to be queued, or the count is one short)
        await self.until(lambda: cp.tx.started() is not None and self.charging(),
                         READY_TIMEOUT_MS, "session started, StartTransaction queued")
        tx = cp.transaction["n"]
        put_us = 0
        for i in range(n):
            t0 = time.ticks_us()
            mv = cp.meter.samples("MeterValuesSampledData", "Sample.Periodic", cp.wall.now())
            cp.tx.put("MeterValues", {"connectorId": 1, "transactionId": -1, "meterValue": mv}, tx)
            put_us += time.ticks_diff(time.ticks_us(), t0)
            if i % 8 == 7:
                await asyncio.sleep_ms(0)
        mv = None
        queued = cp.outbox.pending()
        segs = _segments()
        print("queued", queued)
        self.gaps.reset()
        self.recording = True
        await self.until(lambda: cp.accepted, READY_TIMEOUT_MS, "link accepted")
        t_acc = self.clock.ticks_ms()
        await self.until(lambda: cp.outbox.pending() == 0, 120000 + 100 * n, "outbox empty")
        ms = self.clock.ticks_diff(self.clock.ticks_ms(), t_acc)
        self.recording = False
        print("drained", queued, ms, segs, _segments(), put_us // (n or 1))

    async def main(self):
        asyncio.get_event_loop().set_exception_handler(_exc_handler)
        self.world.apply("plug", [32])
        if self.mode != "tls":
            # (tls: the car stays in B, the contactor open: no TLS handshake starts while it is
            # closed, ChargePoint.may_stall; the row measures what one costs the control loop)
            self.world.apply("ev-ready", [16, 3])
        tasks = [asyncio.create_task(self.control()), asyncio.create_task(self.slow())]
        link = asyncio.create_task(self.cp.run())
        try:
            await self.measure()
        finally:
            self.done = True
        for t in tasks:
            await t
        cp = self.cp
        self.gaps.report()
        lk = cp.link
        print("link", lk.attempts if lk is not None else 0, self.ups, self.downs, self.fails)
        print("rpc", cp.received, cp.sent)
        print("outbox", cp.outbox.pending(), cp.outbox.dropped)
        for e in cp.errors:
            print("note", e)
        link.cancel()  # its tasks and connection end with it (ChargePoint.run)
        await asyncio.sleep(0)


# ---- the simulator (virtual time) ----

def _available(sim):
    st = sim.station
    cp = getattr(st, "ocpp", None) if st is not None else None
    return cp is not None and cp.status.reported(1) == "Available"


async def boot_run(budget):
    from simrun import Sim, STEP_MS

    wall0 = time.ticks_ms()
    sim = Sim(".", None, None, True, None)
    sim.start()
    while not _available(sim):
        await sim.astep()
        if sim.T > 120000:
            raise BenchError("boot: no Available within 120 s of virtual time (errors %s)" % sim.station.ocpp.errors)
    real = time.ticks_diff(time.ticks_ms(), wall0)
    print("boot", sim.T, real)
    await sim.run_for(STEP_MS)
    sim.finish()


async def queue_run(budget, n):
    from simrun import Sim, held

    sim = Sim(".", None, None, True, budget)
    sim.heap.world = held()
    sim.start()
    cp = sim.station.ocpp
    await sim.run_for(5000)
    idle = sim.heap.settle()
    await sim.act(0, "plug", [32])
    await sim.act(0, "ev-ready", [16, 3])
    while cp.transaction is None or not sim.station.hw.relay.closed():
        await sim.run_for(100)
        if sim.T > 60000:
            raise BenchError("queue: no charging session within 60 s (errors %s)" % cp.errors)
    await sim.run_for(5000)
    base = cp.outbox.pending()
    live0 = sim.heap.settle()
    cp.config.set("MeterValueSampleInterval", 1)
    t0 = sim.T
    while cp.outbox.pending() < base + n:
        await sim.run_for(1000)
        if sim.T - t0 > (n + 120) * 1000:
            raise BenchError("queue: %d of %d MeterValues queued (errors %s)" % (cp.outbox.pending() - base, n, cp.errors))
    cp.config.set("MeterValueSampleInterval", 0)
    liven = sim.heap.settle()
    print("heap", idle, live0, liven, sim.heap.peak, sim.heap.budget, cp.outbox.pending() - base, sim.T,
          _segments())
    for e in cp.errors:
        print("note", e)
    sim.finish()


def main(argv):
    args = list(argv[1:])
    budget = None
    if "--heap" in args:
        i = args.index("--heap")
        budget = int(args[i + 1])
        del args[i:i + 2]
    if "--seed" in args:
        i = args.index("--seed")
        import random

        random.seed(int(args[i + 1]))  # the link's backoff jitter
        del args[i:i + 2]
    if not args or args[0] not in ("stall", "boot", "queue"):
        print(__doc__)
        return 2
    try:
        if args[0] == "stall":
            if len(args) < 2 or args[1] not in MODES:
                print(__doc__)
                return 2
            gaps = Gaps()  # instrumentation: allocated before the firmware starts
            gc.collect()
            bench = Stall(args[1], int(args[2]) if len(args) > 2 else 0, gaps)
            asyncio.run(bench.main())
        elif args[0] == "boot":
            asyncio.run(boot_run(budget))
        else:
            asyncio.run(queue_run(budget, int(args[1])))
    except BenchError as e:
        print("error:", e)
        return 1
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
