"""The virtual board: runs the real firmware against the simulated world on a virtual clock.

Started by `tools/sim.py` under the unix MicroPython port (or CPython), with `tests_host/fakes`
first on the module path so the firmware's drivers get the fake `machine`. The current working
directory is the board's flash: the firmware reads `board.json` and `settings.json` there and
writes its journal there, exactly as on the ESP32, where the working directory is `/`.

Arguments (from tools/sim.py, which validates them first):
  simrun.py ROOT [--scenario FILE] [--events FILE] [--speed N|max] [--heap BYTES] [--quiet] [--tty]
                 [--csms-control PORT] [--proxy-control PORT]

Heap: with --heap, every module of the firmware, the drivers, the fakes and the world is loaded
first (on the ESP32 this bytecode is frozen into flash and takes no heap); then all free heap
above BYTES is taken by a ballast block, so the firmware's and the world's data must fit in
BYTES or raise MemoryError. The `heap` event at the end reports the peak.

Time: `T` is the firmware clock in ms since the first boot (the `t` of every event). Each step
moves the world and the firmware 10 ms; at `--speed N` the loop sleeps so that N ms of virtual
time pass per wall-clock ms. The firmware's own clock restarts at 0 after a power cut, as a
board's `ticks_ms` does.
"""
import json
import os
import sys
import time

import machine
from firmware.clock import SystemClock, VirtualClock
from world import scenario
from world.world import World

STEP_MS = 10
SERVICE_EVERY = 10  # service task every 100 ms, as on the board
STATUS_MS = 500

# Verbs whose part of the firmware is not built yet.
HOLD_MS = 5000  # real time for which virtual time waits on the network (see `astep`)

HELP = """commands: any scenario line (plug 32, ev-ready 16, wait 10s, unplug, temp 65, weld, ...)
shortcuts: p plug, u unplug, r ev-ready 16, s ev-pause, x stop, q quit, h help"""

SHORTCUTS = {"p": "plug", "u": "unplug", "r": "ev-ready 16", "s": "ev-pause", "x": "stop"}


class SimError(Exception):
    pass


# Every module the virtual board runs; loaded before the heap budget is set.
CODE = (
    "machine", "esp32", "network", "world.world", "world.scenario", "world.modbus_meter",
    "firmware.station", "firmware.charger", "firmware.pilot", "firmware.safety", "firmware.limits",
    "firmware.settings", "firmware.store", "firmware.journal", "firmware.flash", "firmware.session",
    "firmware.clock", "firmware.metering", "drivers.board", "drivers.untrusted", "drivers.jsonfile",
    "drivers.pilot", "drivers.relay", "drivers.rcd", "drivers.proximity",
    "drivers.temperature", "drivers.analog", "drivers.led", "drivers.watchdog", "drivers.meter", "drivers.modbus",
    "drivers.meter_models", "asyncio", "firmware.ocpp", "firmware.ocpp.ws", "firmware.ocpp.rpc",
    "firmware.ocpp.schemas", "firmware.ocpp.outbox", "firmware.ocpp.chargepoint", "firmware.ocpp.config",
    "firmware.ocpp.smart", "firmware.ocpp.dt", "firmware.ocpp.update", "firmware.ocpp.http",
    "firmware.ocpp.ed25519", "firmware.appslot", "control", "firmware.auth", "firmware.tariff",
    "firmware.billing", "firmware.ocpp.tokens", "drivers.reader", "drivers.mfrc522", "drivers.pn532",
    "drivers.wiegand", "world.card", "drivers.lock",
)


class Heap:
    """The data budget: code first (and the simulated world, which is not the firmware's),
    then a ballast that leaves exactly `budget` bytes free for the firmware's data."""

    def __init__(self, budget):
        import gc

        self.gc = gc
        self.budget = budget
        self.ballast = None
        self.code = 0
        self.peak = 0
        if budget is None:
            return
        for name in CODE:
            __import__(name)

    def reserve(self):
        """After the world is built: the ballast."""
        gc = self.gc
        if self.budget is None:
            return
        gc.collect()
        self.code = gc.mem_alloc()
        if gc.mem_free() < self.budget:
            raise MemoryError("the heap cannot hold the code and a %d byte budget" % self.budget)
        self._fill()

    def _fill(self):
        """Ballast everywhere but the budget, which is kept in as few pieces as the heap allows:
        the largest piece of it the heap has in one place (all of it at the start), then, for
        what that piece lacks, the largest ballast pieces that fit in it are let go again."""
        gc = self.gc
        if self.ballast is None:
            self.ballast = [None] * 2048  # made once: a reboot's heap may have no 16 KB in one piece
        size = self.budget - 64
        reserve = None
        while reserve is None:
            try:
                reserve = bytearray(size)
            except MemoryError:
                size = size * 7 // 8
        if size < self.piece:
            self.piece = size
        n = 0
        chunk = 1 << 16
        while chunk >= 16 and n < len(self.ballast):
            try:
                self.ballast[n] = bytearray(chunk)
                n += 1
            except MemoryError:
                chunk //= 2
        reserve = None
        gc.collect()
        short = self.budget - gc.mem_free()
        for i in range(n):  # largest first (the pieces come in falling sizes), none beyond
            if short <= 64:
                break
            if len(self.ballast[i]) <= short:
                short -= len(self.ballast[i])
                self.ballast[i] = None
        gc.collect()
        self.base = gc.mem_alloc()

    leftover = 0  # the most any reboot found still held of the previous boot's data (bytes)
    piece = 1 << 30  # the smallest largest piece of the budget any boot was given (bytes)

    def reboot(self):
        """RAM is gone at a power cut, and a board's reset gives the new boot its whole heap in
        one piece. MicroPython's collector is conservative, though: a stale word somewhere that
        looks like a pointer can keep part of the old firmware's data alive (seen: 15-22 KB, only
        after the back-end link ran, only under MicroPython; CPython frees all of it), scattered
        over what was the budget and beyond. That is not the new boot's data: the ballast is
        laid again around a new budget, in one piece where the heap still has one (`_fill`).
        The amount left over and the smallest piece a boot was given are reported (`leftover`,
        `piece` in the heap event)."""
        if self.ballast is None:
            return
        left = self.settle()
        if left > self.leftover:
            self.leftover = left
        for i in range(len(self.ballast)):
            self.ballast[i] = None
        self.gc.collect()
        self._fill()

    def sample(self):
        """Live data after a collection (garbage waiting for the collector is not a need)."""
        if self.ballast is None:
            return
        self.gc.collect()
        used = self.gc.mem_alloc() - self.base
        if used > self.peak:
            self.peak = used

    def settle(self):
        """After a garbage collection: what the live data takes now."""
        if self.ballast is None:
            return 0
        self.gc.collect()
        return self.gc.mem_alloc() - self.base


CAPACITY = 0x200000  # bytes: the filesystem ("vfs" partition) of the ESP32's default 4 MB layout
ENOSPC = 28
EIO = 5


class CountingFS:
    """The board's flash as the firmware sees it (firmware/store.py's fs), counting writes, with
    a capacity: `used` is the bytes of file content (LittleFS's blocks and metadata are not
    modelled; on the board the flash fills somewhat sooner, which flash.RESERVE's margin covers).

    Scenario verbs: `flash-full [FREE]` leaves FREE bytes (default 0): from then on a write that
    needs more fails ENOSPC (truncating, replacing and removing files gives space back);
    `flash-fail`: every write, rename and removal fails EIO; `flash-ok`: the whole capacity
    again, and writes work."""

    def __init__(self, root="."):
        from firmware.ocpp import outbox

        self._real = outbox.FS()  # store.RealFS plus the directory calls the outbox needs
        self.bytes = 0
        self.writes = 0
        self.capacity = CAPACITY
        self.failing = False
        self.used = self._du(root)

    def _du(self, d):
        n = 0
        for name in self._real.ilistdir(d):
            p = d + "/" + name
            st = os.stat(p)
            n += self._du(p) if st[0] & 0x4000 else st[6]
        return n

    def _size(self, path):
        try:
            return os.stat(path)[6]
        except OSError:
            return 0

    def _check(self):
        if self.failing:
            raise OSError(EIO, "EIO")

    def fill(self, free=0):
        self.capacity = self.used + free

    def fail(self):
        self.failing = True

    def heal(self):
        self.capacity = CAPACITY
        self.failing = False

    def free(self, path="."):
        return max(0, self.capacity - self.used)

    def mkdir(self, path):
        self._real.mkdir(path)

    def ilistdir(self, path):
        return self._real.ilistdir(path)

    def open(self, path, mode):
        if "r" in mode:
            return self._real.open(path, mode)
        self._check()
        if "w" in mode:
            self.used -= self._size(path)
        return _CountedFile(self._real.open(path, mode), self)

    def rename(self, a, b):
        self._check()
        if a != b:
            self.used -= self._size(b)
        self._real.rename(a, b)

    def remove(self, path):
        self._check()
        n = self._size(path)
        self._real.remove(path)
        self.used -= n

    def exists(self, path):
        return self._real.exists(path)

    def sync(self):
        self._real.sync()


class _CountedFile:
    def __init__(self, f, fs):
        self._f = f
        self._fs = fs

    def write(self, data):
        fs = self._fs
        fs._check()
        if fs.used + len(data) > fs.capacity:
            raise OSError(ENOSPC, "ENOSPC")
        fs.bytes += len(data)
        fs.writes += 1
        fs.used += len(data)
        return self._f.write(data)

    def close(self):
        self._f.close()


def _purge_firmware():
    # A power cut loses RAM: boot.py and main.py run afresh. The firmware's and the drivers' modules
    # stay loaded, as frozen bytecode stays in a board's flash: they hold code and constants only
    # (no module-level state; tests_host/test_scenario.py checks), and every object with state is
    # built anew by station.start().
    for name in ("boot", "main"):
        if name in sys.modules:
            del sys.modules[name]


class Sim:
    def __init__(self, root_code, events_path=None, speed=None, quiet=False, heap=None, tty=False,
                 csms_control=None, proxy_control=None):
        self.code = root_code
        self.csms_control = csms_control  # port of tools/csms.py's control API
        self.proxy_control = proxy_control  # port of the network proxy's control (tests_host/netproxy.py)
        self._remotes = 0  # back-end commands in flight
        self._reboot = None  # a Reset the firmware asked for: True hard, False soft
        self.bugs = []  # exceptions the firmware's tasks caught (error events), but a MemoryError
        self.out_of_memory = 0  # slow rounds given up for a MemoryError
        self.tty = tty
        self.heap = Heap(heap)
        self.T = 0
        self.boot_T = 0
        self.clock = VirtualClock(0)
        self.speed = speed  # None: as fast as possible
        self.quiet = quiet
        self.events = open(events_path, "w") if events_path else None
        self.station = None
        self.flash = None
        self.powered = True
        self.restore_at = None
        self.crashed = None
        from drivers import board

        try:
            self.profile = board.load_installed("")
            self.world = World(self.profile)
        except (board.BoardError, ValueError) as e:
            # The installed profile is unusable; the physical board is still the DevKit wiring.
            print("board.json is unusable (%s); the simulated hardware is the esp32-devkit wiring" % e)
            self.profile = board.load(self.code + "/drivers/boards/esp32-devkit.json")
            self.world = World(self.profile)
        # The harness's own talk with the back end's control API reads into this buffer, kept
        # outside the firmware's budget like the world (one call at a time).
        import asyncio

        self._ctl_buf = bytearray(16384)
        self._ctl_lock = asyncio.Lock()
        self.heap.reserve()
        self._wall = SystemClock()
        self._wall0 = self._wall.ticks_ms()
        self._steps = 0
        self._boot()

    # ---- events ----

    def emit(self, kind, fields, at=None):
        """An event; `at` is the firmware tick it happened at (its clock restarts at boot)."""
        t = self.T if at is None else self.boot_T + at
        if kind == "error":
            if fields.get("where") == "service" and fields.get("error", "").startswith("MemoryError"):
                self.out_of_memory += 1  # the heap budget at work: the round was given up (the heap event counts them)
            else:  # the station survives these (firmware/station.py), but they are bugs: the run fails
                self.bugs.append("%.3fs %s: %s" % (t / 1000, fields.get("where"), fields.get("error")))
        if kind == "session" and fields.get("event") == "stop":
            self._live_due = True  # measured after this step, once the firmware let go of it
        rec = {"t": t, "type": kind}
        for k in fields:
            rec[k] = fields[k]
        if self.events is not None:
            self.events.write(json.dumps(rec) + "\n")
        if not self.quiet:
            self._print_event(t, kind, fields)

    def _print_event(self, t, kind, fields):
        parts = []
        for k in fields:
            parts.append("%s=%s" % (k, fields[k]))
        line = "%9.3fs %-9s %s" % (t / 1000, kind, " ".join(parts))
        if self.tty:
            line = "\r\x1b[K" + line  # over the live status line, which is redrawn below it
        print(line)

    # ---- power ----

    def _boot(self, cause=None):
        _purge_firmware()
        if self.flash is None:
            self.flash = CountingFS()  # outlives reboots: it is the flash, not the firmware
        machine.hw_reset(machine.PWRON_RESET if cause is None else cause)
        self.world.install()
        if self.station_booted:
            self.heap.reboot()  # (after the reset dropped the old firmware's interrupt handlers)
        self.station_booted = True
        self.clock.set(0)
        self.boot_T = self.T
        __import__("boot")  # the board's boot.py, run afresh after every reset
        from firmware import station

        self.station = station.start("", self.clock, fs=self.flash, reboot=self._reboot_request)
        self.station.add_sink(self.emit)
        self.world.advance(self.T)
        self.station.service()  # as on the board: the slow task's first round reports the boot
        cp = getattr(self.station, "ocpp", None)
        if cp is not None:
            import asyncio

            self._async = True
            self._link_task = asyncio.create_task(cp.run())

    def _resources(self):
        """After each session: the live heap (flat: nothing leaks), the session journal's bytes
        on flash (under its bound) and the flash in use."""
        fields = {"heap_live": self.heap.settle() if self.heap.ballast is not None else None,
                  "flash_used": getattr(self.flash, "used", None)}
        st = self.station
        keeper = getattr(st, "keeper", None) if st is not None else None
        if keeper is not None:
            n = 0
            for name in keeper.files(""):
                try:
                    n += os.stat(name)[6]
                except OSError:
                    pass
            fields["journal_bytes"] = n
        self.emit("resources", fields)

    def _reboot_request(self, hard):
        self._reboot = hard

    def _halt(self):
        """RAM is gone: the firmware's tasks stop and its connection drops without a goodbye."""
        cp = getattr(self.station, "ocpp", None) if self.station is not None else None
        if cp is not None:
            cp.abort()
            self._link_task.cancel()
            self._link_task = None
        self.station = None

    station_booted = False
    _live_due = False
    _cut_after = None  # (messages sent, cut duration): power-cut-after-sent
    _hold_since = None  # real tick since which virtual time waits on the network
    _async = False  # the firmware runs asyncio tasks (the back-end link): yield to them every step
    _link_task = None
    _restore_cause = None

    def _reset(self, cause):
        """The chip resets: outputs float for a moment (the world sees the station dead) and it
        boots at the next step; the tasks of the old firmware end in between."""
        self.power_cut(STEP_MS)
        self._restore_cause = cause

    def power_cut(self, duration_ms):
        self._halt()  # RAM is gone; only the flash (this directory) stays
        self.world.power_cut()
        self.powered = False
        self.restore_at = self.T + duration_ms

    # ---- the loop ----

    def step(self):
        self.T += STEP_MS
        self.clock.advance(STEP_MS)
        if not self.powered and self.T >= self.restore_at:
            self.powered = True
            self.world.power_restored()
            cause, self._restore_cause = self._restore_cause, None
            self._boot(cause)
        self.world.advance(self.T)
        machine.hw_advance_ms(STEP_MS)
        if self.station is not None and machine.hw_wdt_expired():
            # The firmware stopped feeding its watchdog: the board resets, as a real one would.
            self.emit("reset", {"cause": "watchdog"})
            self._reset(machine.WDT_RESET)
        if self.station is not None:
            self.station.tick()
            self._steps += 1
            if self._steps % SERVICE_EVERY == 0:
                self.station.service()
                if self._steps % (SERVICE_EVERY * 10) == 0:
                    self.heap.sample()
        if self._live_due:
            self._live_due = False
            self._resources()
        if self._reboot is not None:
            hard = self._reboot
            self._reboot = None
            self.emit("reset", {"cause": "hard" if hard else "soft"})
            self._reset(machine.HARD_RESET if hard else machine.SOFT_RESET)
        if self.speed:
            ahead = self.T // self.speed - self._wall.ticks_diff(self._wall.ticks_ms(), self._wall0)
            if ahead > 0:
                time.sleep(ahead / 1000)

    async def astep(self):
        """One step with the back-end link running beside the firmware.

        The link's tasks get the CPU between steps. While the link waits on the network (a
        connect, a call without its answer) or a back-end command is in flight, virtual time
        holds, for up to HOLD_MS of real time: network latency costs no virtual time, and an
        OCPP time-out only happens when the back end or the network is really gone."""
        import asyncio

        st = self.station
        cp = getattr(st, "ocpp", None) if st is not None else None
        if cp is not None or self._remotes:
            wall = self._wall
            # (not while the firmware's answer waits on the charger itself: UnlockConnector)
            while (self._remotes and not (cp is not None and cp.local_wait)) or (cp is not None and cp.busy()):
                if self._cut_due(cp):
                    break
                # One wait holds virtual time for at most HOLD_MS in all: beyond, the network
                # counts as gone and virtual time runs on (time-outs, half-open links).
                if self._hold_since is None:
                    self._hold_since = wall.ticks_ms()
                elif wall.ticks_diff(wall.ticks_ms(), self._hold_since) >= HOLD_MS:
                    break
                await asyncio.sleep(0.001)
            else:
                self._hold_since = None
        self.step()
        if self._async or self._remotes:
            await asyncio.sleep(0)

    def _cut_due(self, cp):
        """power-cut-after-sent: cut as soon as the firmware has handed its N-th message to the
        network, before its answer can be recorded (the one case where a duplicate is allowed)."""
        cut = self._cut_after
        if cut is None or cp is None or self.station is None or cp.sent < cut[0]:
            return False
        self._cut_after = None
        self.emit("world", {"action": "power-cut", "args": [cut[1]], "after_sent": cp.sent})
        self.power_cut(cut[1])
        return True

    async def run_for(self, ms):
        end = self.T + ms
        while self.T < end:
            await self.astep()

    async def act(self, lineno, verb, args):
        """Apply one scenario action. Raises SimError with the line number when it cannot."""
        if verb == "wait":
            await self.run_for(args[0])
            return
        fields = {"action": verb, "args": list(args), "truth_wh": round(self.world.truth_wh, 3)}
        if lineno:
            fields["line"] = lineno
        self.emit("world", fields)
        if verb == "power-cut":
            self.power_cut(args[0] if args else 1000)
        elif verb == "flash-full":
            self.flash.fill(args[0] if args else 0)
        elif verb == "flash-fail":
            self.flash.fail()
        elif verb == "flash-ok":
            self.flash.heal()
        elif verb == "power-cut-after-sent":
            cp = getattr(self.station, "ocpp", None) if self.station is not None else None
            if cp is None:
                raise SimError("line %d: power-cut-after-sent: the firmware has no back-end link" % lineno)
            self._cut_after = (cp.sent + args[0], args[1] if len(args) > 1 else 1000)
        elif verb == "net":
            self._net(lineno, args[0])
        elif verb == "remote":
            self._remote(lineno, args[0], args[1] if len(args) > 1 else {})
        elif verb == "token":
            body = {"idTag": args[0], "status": args[1] if len(args) > 1 else "Accepted"}
            if len(args) > 2:
                body["parentIdTag"] = args[2]
            self._remote(lineno, "token", None, "/tokens", body)
        elif verb in ("limit", "stop", "clear-fault", "unlock"):
            self._command(lineno, verb, args)
        else:
            try:
                result = self.world.apply(verb, args)
            except ValueError as e:
                raise SimError("line %d: %s" % (lineno, e))
            if result:
                self.emit("world", result)

    def _command(self, lineno, verb, args):
        # Commands a person or the operator gives the station (later: through OCPP).
        st = self.station
        if st is None:
            raise SimError("line %d: %s: the station has no power" % (lineno, verb))
        from firmware import limits

        if st.charger is None:
            raise SimError("line %d: %s: the station is out of service (bad board profile)" % (lineno, verb))
        if verb == "limit":
            st.charger.limits.claim(limits.OPERATOR, args[0] * 10)
        elif verb == "stop":
            st.charger.stop("Local")
        elif verb == "clear-fault":
            for code in st.charger.faults.codes():
                st.clear_fault(code)
        elif verb == "unlock":
            if st.unlock() == "no lock":
                raise SimError("line %d: unlock: board %r has no socket lock" % (lineno, self.profile.get("name")))

    def _net(self, lineno, what):
        if self.proxy_control is None:
            raise SimError("line %d: net: the simulator runs without its network proxy (it needs the "
                           "built-in back end: leave out --csms)" % lineno)
        import control

        try:
            reply = control.proxy_command(self.proxy_control, what)
        except OSError as e:
            raise SimError("line %d: net %s: the network proxy does not answer (%s)" % (lineno, what, e))
        if reply != "ok":
            raise SimError("line %d: net %s: %s" % (lineno, what, reply))

    def _remote(self, lineno, action, payload, path="/command", body=None):
        if self.csms_control is None:
            raise SimError("line %d: remote: no back end to send %s (the simulator was started with "
                           "--csms: send commands with that back end's own tools)" % (lineno, action))
        import asyncio

        if body is None:
            body = {"action": action, "payload": payload, "timeout": 30}
        self._remotes += 1
        asyncio.create_task(self._control_call(lineno, action, path, body))

    async def _control_call(self, lineno, action, path, body):
        # The back end acts while the firmware keeps running: this task talks to the control API
        # (tools/csms.py) over asyncio streams, the firmware answers from its own tasks.
        import asyncio

        fields = {"action": action, "line": lineno}
        await self._ctl_lock.acquire()
        try:
            data = json.dumps(body).encode()
            r, w = await asyncio.open_connection("127.0.0.1", self.csms_control)
            head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
                   "Connection: close\r\nContent-Length: %d\r\n\r\n" % (path, len(data))
            w.write(head.encode() + data)
            await w.drain()
            status = int((await r.readline()).split()[1])
            while (await r.readline()) not in (b"\r\n", b"\n", b""):
                pass
            buf = memoryview(self._ctl_buf)
            n = 0
            while n < len(buf):
                k = await r.readinto(buf[n:])
                if not k:
                    break
                n += k
            w.close()
            await w.wait_closed()
            if n == len(buf):
                raise ValueError("control API answer longer than %d bytes" % n)
            answer = json.loads(buf[:n]) if n else {}
            if "result" in answer:
                fields["result"] = answer["result"]
            elif "error" in answer or status >= 300:
                fields["error"] = answer.get("error", {"status": status})
        except (OSError, ValueError, IndexError) as e:
            fields["error"] = {"description": "control API: %s" % e}
        finally:
            self._ctl_lock.release()
            self._remotes -= 1
        self.emit("remote", fields)

    def finish(self):
        if self.heap.ballast is not None:
            self.emit("heap", {"budget": self.heap.budget, "peak": self.heap.peak, "live": self.heap.settle(),
                               "code": self.heap.code, "leftover": self.heap.leftover,
                               "piece": self.heap.piece, "out_of_memory": self.out_of_memory})
        self.emit("flash", {"bytes_written": self.flash.bytes, "writes": self.flash.writes, "used": self.flash.used})
        lk = self.world.lock
        if lk is not None:
            self.emit("world", {"lock_both_on": lk.both_on, "lock_strokes": lk.strokes,
                                "pulls_refused": self.world.pulls_refused})
        self.emit("world", {"truth": round(self.world.truth_wh, 3)})
        if self.events is not None:
            self.events.close()

    # ---- interactive ----

    def status_line(self):
        if self.station is None:
            return "[no power]"
        s = self.station.snapshot()
        return "T=%7.1fs state=%-3s offer=%4.1fA contactor=%-6s current=%5sA energy=%7.1fWh faults=%s" % (
            self.T / 1000,
            s["state"],
            s["offer_a"],
            "closed" if s["contactor"] else "open",
            "-" if s["amps"] is None else "%.1f" % s["amps"],
            s["energy_wh"],
            ",".join(s["faults"]) or "none",
        )

    async def interactive(self):
        import select

        poll = select.poll()
        poll.register(sys.stdin, select.POLLIN)
        if self.speed is None:
            self.speed = 1
        print(HELP)
        next_status = 0
        while True:
            for _ in range(5):
                await self.astep()
            if self._wall.ticks_diff(self._wall.ticks_ms(), next_status) >= 0:
                next_status = self._wall.ticks_add(self._wall.ticks_ms(), STATUS_MS)
                if self.tty:
                    sys.stdout.write("\r\x1b[K" + self.status_line())
                else:
                    print(self.status_line())
            if not poll.poll(0):
                continue
            line = sys.stdin.readline()
            if not line:
                return  # end of input
            line = line.strip()
            if line in ("q", "quit", "exit"):
                return
            if line in ("h", "help", "?"):
                print(HELP)
                continue
            line = SHORTCUTS.get(line, line)
            try:
                for lineno, verb, args in scenario.parse(line):
                    await self.act(0, verb, args)
            except (scenario.ScenarioError, SimError) as e:
                print("error:", str(e).replace("line 1: ", "").replace("line 0: ", ""))


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    code = argv[1]
    opts = {"--scenario": None, "--events": None, "--speed": None, "--heap": None, "--csms-control": None,
            "--proxy-control": None}
    quiet = False
    tty = False
    i = 2
    while i < len(argv):
        a = argv[i]
        if a == "--quiet":
            quiet = True
            i += 1
            continue
        if a == "--tty":
            tty = True
            i += 1
            continue
        if a not in opts or i + 1 >= len(argv):
            print("simrun: bad argument %r" % a)
            return 2
        opts[a] = argv[i + 1]
        i += 2
    speed = opts["--speed"]
    speed = None if speed in (None, "max") else float(speed)
    actions = None
    if opts["--scenario"]:
        with open(opts["--scenario"]) as f:
            text = f.read()
        try:
            actions = scenario.parse(text)
        except scenario.ScenarioError as e:
            print("scenario %s: %s" % (opts["--scenario"], e))
            return 2
    heap = int(opts["--heap"]) if opts["--heap"] else None
    csms = int(opts["--csms-control"]) if opts["--csms-control"] else None
    proxy = int(opts["--proxy-control"]) if opts["--proxy-control"] else None
    import asyncio

    return asyncio.run(_run(code, opts, speed, quiet, heap, tty, csms, proxy, actions))


async def _run(code, opts, speed, quiet, heap, tty, csms, proxy, actions):
    sim = Sim(code, opts["--events"], speed, quiet, heap, tty, csms, proxy)
    try:
        if actions is None:
            await sim.interactive()
        else:
            for lineno, verb, args in actions:
                await sim.act(lineno, verb, args)
            await sim.run_for(STEP_MS)
    except SimError as e:
        print("scenario %s: %s" % (opts["--scenario"], e))
        sim.finish()
        return 3
    sim.finish()
    if sim.bugs:
        print("the firmware raised (and recovered): %s" % "; ".join(sim.bugs))
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
