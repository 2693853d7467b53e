"""The virtual board: runs the real firmware against the simulated world on a virtual clock.

Started by `tools/sim.py` under the unix MicroPython port (or CPython), with `tests_host/fakes`
first on the module path so the firmware's drivers get the fake `machine`. The current working
directory is the board's flash: the firmware reads `board.json` and `settings.json` there and
writes its journal there, exactly as on the ESP32, where the working directory is `/`.

Arguments (from tools/sim.py, which validates them first):
  simrun.py ROOT [--scenario FILE] [--events FILE] [--speed N|max] [--heap BYTES] [--quiet] [--tty]
                 [--csms-control PORT] [--proxy-control PORT] [--cpu MHZ] [--littlefs IMAGE]

CPU (the virtual ESP32 only, tests_host/cpumodel.py): what the control tick, the slow round and
each step of the link's asyncio tasks cost in ESP32 time is counted, and a `cpu` event at the end
gives each one's steps, mean and worst ms at 160 and 240 MHz and its share of the CPU. With
--cpu MHZ the virtual clock also advances by what the firmware's work at that clock overran
each 10 ms step, so the next tick comes that much late, as on the chip.

Flash: the working directory, a host directory; with --littlefs, the ESP32's LittleFS v2 on a
block device that counts erases (tests_host/lfs.py), its image the host file IMAGE, mounted and
made the working directory before anything else (the host directory's files are copied in).

Heap (see Heap): on the virtual ESP32 the interpreter's heap is the firmware's budget BYTES plus
--world, what the world and this harness held before the first boot (tools/sim.py measures it
with --probe); the `heap` event at the end reports the firmware's peak. --fresh FILE: every boot
after a power cut or a reset runs in a fresh interpreter: the run saves its state in FILE and
exits RESTART, and tools/sim.py starts it again, which resumes from FILE.

Time: `T` is the firmware clock in ms since the first boot (the `t` of every event). Each step
moves the world and the firmware 10 ms; at `--speed N` the loop sleeps so that N ms of virtual
time pass per wall-clock ms. The firmware's own clock restarts at 0 after a power cut, as a
board's `ticks_ms` does.

The house and the grid (tests_host/world/grid.py): once the scenario used one of house, pv,
pv-day, grid-meter-fail, grid-meter-ok, or the board has a grid meter and the station's setting
energy_mode is not "normal", a `world` event every 1000 ms of virtual time reports
    grid [L1, L2, L3]   amps at the house connection, signed (positive = import), 2 decimals
    house [L1, L2, L3]  the household load, amps
    pv_w                the PV production, W (int)
    car [L1, L2, L3]    what the car draws through the charger, amps
    over_ms             the longest run so far (ms) with a phase's |grid| above main_fuse_a
and the last `world` event (truth) carries over_ms too. main_fuse_a and energy_mode are read
from the running firmware's settings (station.settings: settings.json on the board's flash as
the firmware took it, changes at run time included), at each boot and every second.

A board with a `phase_switch` (1p/3p switching, world/phase_switch.py): the grid's `world`
event also carries
    phases              the outlet's phases now (3: the switch energised, 1: released)
and the last `world` event (truth)
    switches            how often the phase switch changed state
    switch_under_load   how many of those changes happened with the main contactor's contacts
                        closed (the world's contactor model, not the firmware's command)
Without a phase switch these fields are absent and the events are as they always were.
"""
import gc
import json
import os
import sys
import time

# The heap's split (see Heap): the firmware's modules that this harness uses too count as the
# firmware's (it loads them at boot anyway); the fake hardware, the world and the harness do not.
_ALLOC = getattr(gc, "mem_alloc", lambda: 0)  # (CPython has no such count)
gc.collect()
_at_start = _ALLOC()
import asyncio  # noqa: E402
from drivers import board as _board  # noqa: E402,F401
from firmware.clock import SystemClock  # noqa: E402
from vclock import VirtualClock  # noqa: E402
from firmware.ocpp import outbox as _outbox  # noqa: E402,F401
gc.collect()
_FIRMWARE_OWN = _ALLOC() - _at_start

import machine  # noqa: E402
from pathx import exists  # noqa: E402
from world import scenario  # noqa: E402
from world.world import World  # noqa: E402


def held():
    """What this interpreter holds now, less what the firmware's own modules took above: before
    the first boot, what the world and the harness hold (Heap.world)."""
    gc.collect()
    return _ALLOC() - _FIRMWARE_OWN

STEP_MS = 10
SERVICE_EVERY = 10  # service task every 100 ms, as on the board
STATUS_MS = 500

# Verbs whose part of the firmware is not built yet.
HOLD_MS = 5000  # real time for which virtual time waits on the network (see `astep`)

HELP = """commands: any scenario line (plug 32, ev-ready 16, wait 10s, unplug, temp 65, weld, ...;
house 8 2 4, pv 3000, pv-day clear|clouds [PEAK_W [HOURS]], grid-meter-fail, grid-meter-ok)
shortcuts: p plug, u unplug, r ev-ready 16, s ev-pause, x stop, q quit, h help"""

GRID_VERBS = ("house", "pv", "pv-day", "grid-meter-fail", "grid-meter-ok")  # (world/grid.py's VERBS)

SHORTCUTS = {"p": "plug", "u": "unplug", "r": "ev-ready 16", "s": "ev-pause", "x": "stop"}



def world_classes():
    """{name: class} of every class of the world's modules loaded now (what a snapshot of the
    world is restored with)."""
    classes = {}
    for name in list(sys.modules):
        if name.startswith("world."):
            m = sys.modules[name]
            for k in dir(m):
                v = getattr(m, k)
                if isinstance(v, type):
                    classes[k] = v
    return classes

class SimError(Exception):
    pass


class PowerOn(Exception):
    """The power comes back, and the run restarts the interpreter for the new boot (see Sim.fresh)."""


RESTART = 75  # exit status: start a fresh interpreter with --resume (tools/sim.py does)


class Heap:
    """What the firmware holds of the MicroPython heap, measured after a collection.

    Under the virtual ESP32 (`tools/sim.py --runtime esp32`) the interpreter's heap is the
    board's: `-X heapsize` is the firmware's budget plus what the simulated world and this harness
    hold (`world`, measured by a probe run of the same board and scenario that stops before the
    first boot, see `main`). Everything else counts: the firmware's module objects, asyncio's,
    its data, and what a power cut leaves for the collector to find (RAM is gone on a board, but
    here the old boot's objects are garbage in the same heap: a stale pointer that keeps some
    alive makes the next boot fail, as a leak would)."""

    def __init__(self, budget, world):
        import gc

        self.gc = gc
        self.budget = budget  # None: no accounting (other runtimes)
        self.world = world
        self.peak = 0

    def sample(self):
        """Live data after a collection (garbage waiting for the collector is not a need)."""
        used = self.settle()
        if used is not None and used > self.peak:
            self.peak = used

    def settle(self):
        """After a garbage collection: what the firmware's live data takes now."""
        if self.budget is None:
            return None
        self.gc.collect()
        return self.gc.mem_alloc() - self.world


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


_FLASHDEV = None  # with --littlefs: the counting block device (tests_host/lfs.py), the world's


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
                 csms_control=None, proxy_control=None, world=0, boot=True, fresh=None, cpu=None, actions=None):
        self.code = root_code
        self.csms_control = csms_control  # port of tools/csms.py's control API
        self.proxy_control = proxy_control  # port of the network proxy's control (tests_host/netproxy.py)
        self._remotes = 0  # back-end commands in flight
        self._reboot = None  # a Reset the firmware asked for: True hard, False soft
        self.bugs = []  # exceptions the firmware's tasks caught (error events), but a MemoryError
        self.out_of_memory = 0  # slow rounds given up for a MemoryError
        self.tty = tty
        self.heap = Heap(heap, world)
        self.T = 0
        self.boot_T = 0
        self.clock = VirtualClock(0)
        self.speed = speed  # None: as fast as possible
        self.quiet = quiet
        # fresh: a file; each boot after a power cut or reset then runs in a fresh interpreter, as
        # a board's boots start from empty RAM: the run saves its state there and exits RESTART.
        self.fresh = fresh
        self._resumed = False
        self.pos = 0  # the scenario action being carried out
        self.wait_end = None  # the virtual time the current `wait` ends at
        self.events = open(events_path, "a" if fresh and exists(fresh) else "w") if events_path else None
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
        self._requests = {}  # scenario line -> (action, path, body): see prepare
        self._ctl_lock = asyncio.Lock()
        self._wall = SystemClock()
        self._wall0 = self._wall.ticks_ms()
        self._steps = 0
        self.cpu = _cpu_meter(cpu)
        self._grid_sec = 0  # the second of T last looked at for the grid's `world` event
        self._grid_settings = (None, None)  # (energy_mode, main_fuse_a) as last known
        self._file_settings = None  # the same from settings.json, when the firmware lacks the keys
        self.prepare(actions)
        if boot:
            self._boot()

    def start(self):
        """Power on: the first boot (for a Sim made with boot=False)."""
        self._wall0 = self._wall.ticks_ms()
        self._boot()

    # ---- a fresh interpreter for every boot ----

    def save(self):
        """All that outlives the firmware's RAM, into self.fresh: the world, the board's clocks,
        the flash's counters, this run's figures and where the scenario is."""
        from world import snapshot

        self.station = None
        gc.collect()
        doc = {"T": self.T, "restore_at": self.restore_at, "cause": self._restore_cause, "steps": self._steps,
               "peak": self.heap.peak, "oom": self.out_of_memory, "bugs": self.bugs, "pos": self.pos,
               "wait_end": self.wait_end, "cut_after": self._cut_after, "net": self._net_mode,
               "flash": [self.flash.bytes, self.flash.writes, self.flash.capacity, self.flash.failing],
               "machine": machine.hw_state(), "cpu": self.cpu.stats if self.cpu is not None else None}
        if _FLASHDEV is not None:
            _FLASHDEV.flush()  # the erase counters outlive the interpreter with the image
        with open(self.fresh, "w") as f:
            f.write(json.dumps(doc)[:-1] + ', "world": ')
            snapshot.save(self.world, f)
            f.write("}")

    def resume(self, doc):
        """In the fresh interpreter: the state self.save() left (`doc`, read_state), power still
        off; the next step boots. Returns the scenario position (action index, end of its wait)."""
        from world import snapshot
        from world.snapshot import fresh

        if doc["world"]["a"].get("grid") is not None and "world.grid" not in sys.modules:
            __import__("world.grid")  # a grid the world builds on first use only: its class
        snapshot.load(self.world, doc["world"], world_classes())
        self._grid_sec = doc["T"] // 1000
        machine.hw_set_state(fresh(doc["machine"]))
        self.T = fresh(doc["T"])
        self.clock.set(self.T)
        self.restore_at = fresh(doc["restore_at"])
        self._restore_cause = fresh(doc["cause"])
        self._steps = fresh(doc["steps"])
        self.heap.peak = fresh(doc["peak"])
        self.out_of_memory = fresh(doc["oom"])
        self.bugs = fresh(doc["bugs"])
        if self.cpu is not None and doc.get("cpu"):
            self.cpu.stats = fresh(doc["cpu"])
        self._cut_after = tuple(fresh(doc["cut_after"])) if doc["cut_after"] else None
        self._net_mode = fresh(doc["net"])
        self.flash = CountingFS()
        self.flash.bytes, self.flash.writes, self.flash.capacity, self.flash.failing = fresh(doc["flash"])
        self.powered = False
        self._resumed = True
        if self.speed:
            self._wall0 = self._wall.ticks_add(self._wall.ticks_ms(), -int(self.T // self.speed))
        return fresh(doc["pos"]), fresh(doc["wait_end"])

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
            # streamed: a whole line as one string could need a piece of heap that the firmware's
            # data, not this harness, decides is there
            json.dump(rec, self.events)
            self.events.write("\n")
        if not self.quiet:
            self._print_event(t, kind, fields)

    def _print_event(self, t, kind, fields):
        # streamed a field at a time, as the events file is (a long line, the cpu report's, once
        # needed a 728-byte piece of the firmware's heap)
        if self.tty:
            print("\r\x1b[K", end="")  # over the live status line, which is redrawn below it
        print("%9.3fs %-9s" % (t / 1000, kind), end="")
        for k in fields:
            print(" %s=" % k, end="")
            print(fields[k], end="")  # (printed as it is walked: a back end's long answer)
        print()

    # ---- power ----

    def _boot(self, cause=None):
        _purge_firmware()
        if self.flash is None:
            self.flash = CountingFS()  # outlives reboots: it is the flash, not the firmware
        machine.hw_reset(machine.PWRON_RESET if cause is None else cause)
        self.world.install()
        self.clock.set(0)
        self.boot_T = self.T
        __import__("boot")  # the board's boot.py, run afresh after every reset
        from firmware import station

        self.station = station.start("", self.clock, fs=self.flash, reboot=self._reboot_request)
        self.station.add_sink(self.emit)
        if self.world.grid is not None:
            self.world.grid.set_fuse(self._energy_settings()[1])
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
        fields = {"heap_live": self.heap.settle(),
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
            self._link_task.cancel()  # its tasks and connection end with it (ChargePoint.run)
            self._link_task = None
        self.station = None

    _live_due = False
    _cut_after = None  # (messages sent, cut duration): power-cut-after-sent
    _hold_since = None  # real tick since which virtual time waits on the network
    _async = False  # the firmware runs asyncio tasks (the back-end link): yield to them every step
    _link_task = None
    _net_mode = "up"  # what the scenario last made the network proxy (`net`)
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
        if not self.powered and self.T + STEP_MS >= self.restore_at and self.fresh and not self._resumed:
            raise PowerOn()
        # --cpu: the firmware's work since the last step overran the step by `late` ms.
        ms = STEP_MS + (self.cpu.late_ms(STEP_MS) if self.cpu is not None else 0)
        self.T += ms
        self.clock.advance(ms)
        if not self.powered and self.T >= self.restore_at:
            self._resumed = False
            self.powered = True
            self.world.power_restored()
            cause, self._restore_cause = self._restore_cause, None
            self._boot(cause)
        self.world.advance(self.T)
        machine.hw_advance_ms(ms)
        if self.station is not None and machine.hw_wdt_expired():
            # The firmware stopped feeding its watchdog: the board resets, as a real one would.
            self.emit("reset", {"cause": "watchdog"})
            self._reset(machine.WDT_RESET)
        if self.station is not None:
            cpu = self.cpu
            if cpu is not None:
                cpu.switch("tick")
            self.station.tick()
            self._steps += 1
            if self._steps % SERVICE_EVERY == 0:
                if cpu is not None:
                    cpu.switch("service")
                self.station.service()
            if cpu is not None:
                cpu.switch(cpu.HARNESS)
            if self._steps % (SERVICE_EVERY * 10) == 0:
                self.heap.sample()
        if self.T // 1000 != self._grid_sec:
            self._grid_tick()
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
            # (nor on the link through a half-open network, which the scenario made and which
            # passes nothing: no answer is coming, so virtual time runs on at once)
            while (self._remotes and not (cp is not None and cp.local_wait)) or \
                    (cp is not None and self._net_mode != "half-open" and cp.busy()):
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

    def _energy_settings(self):
        """(energy_mode, main_fuse_a) of the running firmware's settings, else as last known
        (no power, or a station out of service); settings.json itself when the firmware does
        not know the keys."""
        st = self.station
        s = getattr(st, "settings", None) if st is not None else None
        if s is not None:
            try:
                self._grid_settings = (s.get("energy_mode"), s.get("main_fuse_a"))
            except KeyError:
                if self._file_settings is None:
                    self._file_settings = _settings_file()  # (read once)
                self._grid_settings = self._file_settings
        return self._grid_settings

    def _grid_tick(self):
        """A new second of T: the grid's `world` event, when it is reported (module doc)."""
        self._grid_sec = self.T // 1000
        g = self.world.grid
        if g is None:
            return
        mode, fuse = self._energy_settings()
        g.set_fuse(fuse)
        if not g.active:
            if g.meter is None or mode is None or mode == "normal":
                return
            g.active = True  # (kept with the world across power cuts)
        self.emit("world", g.report())

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
        await self.run_until(self.T + ms)

    async def run_until(self, end):
        self.wait_end = end
        while self.T < end:
            await self.astep()
        self.wait_end = None

    async def act(self, lineno, verb, args):
        """Apply one scenario action. Raises SimError with the line number when it cannot."""
        if verb == "wait":
            await self.run_for(args[0])
            return
        fields = {"action": verb, "args": list(args), "truth_wh": round(self.world.truth_wh, 3)}
        req = self._requests.get(lineno) if verb in ("remote", "burst") and len(args) > 1 else None
        if req is not None:
            # a back-end command's payload, up to a 4 KB frame, is named by its size: printed
            # whole it would need a piece of heap as large as the firmware's own frame buffer
            fields["args"] = list(args[:-1])
            fields["request_bytes"] = len(req[2])
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
        elif verb in ("remote", "token", "burst"):
            self._remote(lineno, verb, args)
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
            raise SimError("line %d: net: the simulator runs without its network proxy (it needs a "
                           "back end: the built-in one or --csms URL)" % lineno)
        import control

        try:
            reply = control.proxy_command(self.proxy_control, what)
        except OSError as e:
            raise SimError("line %d: net %s: the network proxy does not answer (%s)" % (lineno, what, e))
        if reply != "ok":
            raise SimError("line %d: net %s: %s" % (lineno, what, reply))
        if what in ("up", "down", "half-open"):
            self._net_mode = what

    @staticmethod
    def _request(verb, args):
        """(action, path, JSON body) of a back-end command of the scenario (remote, token, burst:
        COUNT calls sent back to back, answered in one `remote` event as `answers`, the kind of
        each: CallResult or the CallError's code, or None without an answer)."""
        if verb == "burst":
            payload = args[2] if len(args) > 2 else {}
            texts = [json.dumps([2, "burst%d" % i, args[1], payload]) for i in range(1, args[0] + 1)]
            return args[1], "/raw", json.dumps({"texts": texts, "timeout": 30}).encode()
        if verb == "token":
            body = {"idTag": args[0], "status": args[1] if len(args) > 1 else "Accepted"}
            if len(args) > 2:
                body["parentIdTag"] = args[2]
            return "token", "/tokens", json.dumps(body).encode()
        return args[0], "/command", json.dumps({"action": args[0], "payload": args[1] if len(args) > 1 else {},
                                                "timeout": 30}).encode()

    def prepare(self, actions):
        """The back-end commands' requests, encoded before the first boot: they are the world's
        (measured with it), not a few kilobytes taken from the firmware's heap when sent. So is
        the house and grid model a scenario's grid verbs need (world/grid.py; built here, not
        at the first of them)."""
        for lineno, verb, args in actions or ():
            if verb in ("remote", "token", "burst"):
                self._requests[lineno] = self._request(verb, args)
            elif verb in GRID_VERBS:
                self.world._grid()

    def _remote(self, lineno, verb, args):
        action = args[0] if verb == "remote" else args[1] if verb == "burst" else "token"
        if self.csms_control is None:
            raise SimError("line %d: remote: no back end to send %s (the simulator was started with "
                           "--csms: send commands with that back end's own tools)" % (lineno, action))
        import asyncio

        req = self._requests.pop(lineno, None) if lineno else None
        action, path, data = req or self._request(verb, args)
        self._remotes += 1
        task = asyncio.create_task(self._control_call(lineno, action, path, data))
        if self.cpu is not None:
            self.cpu.helpers.append(task)  # the harness's work, not the link's

    async def _control_call(self, lineno, action, path, data):
        # The back end acts while the firmware keeps running: this task talks to the control API
        # (tools/csms.py) over asyncio streams, the firmware answers from its own tasks.
        import asyncio

        fields = {"action": action, "line": lineno}
        await self._ctl_lock.acquire()
        try:
            r, w = await asyncio.open_connection("127.0.0.1", self.csms_control)
            head = "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" \
                   "Connection: close\r\nContent-Length: %d\r\n\r\n" % (path, len(data))
            w.write(head.encode())
            w.write(data)
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
            if self.quiet and self.events is not None:
                # The answer (a JSON object: result, answers or error) goes into the event as it
                # came, undecoded: it comes at the firmware's peak (a GetConfiguration of every
                # key would take some 8 KB as Python objects of the heap the firmware shares).
                self._remote_event(fields, buf[:n], status)
                fields = None
            else:
                answer = json.loads(buf[:n]) if n else {}
                if "answers" in answer:
                    fields["answers"] = answer["answers"]
                elif "result" in answer:
                    fields["result"] = answer["result"]
                elif "error" in answer or status >= 300:
                    fields["error"] = answer.get("error", {"status": status})
        except (OSError, ValueError, IndexError, MemoryError) as e:  # the run's record says so
            fields = {"action": action, "line": lineno,
                      "error": {"description": "control API: %s: %s" % (type(e).__name__, e)}}
        finally:
            self._ctl_lock.release()
            self._remotes -= 1
            if self.cpu is not None:
                self.cpu.helpers.remove(asyncio.current_task())
        if fields is not None:
            self.emit("remote", fields)

    def _remote_event(self, fields, raw, status):
        """A `remote` event whose answer members are the control API's JSON text as it is."""
        f = self.events
        f.write('{"t": %d, "type": "remote", "action": ' % self.T)
        json.dump(fields["action"], f)
        f.write(', "line": %d' % fields["line"])
        if status >= 300 and b'"error"' not in bytes(raw):
            f.write(', "error": {"status": %d}' % status)
        n = len(raw)
        if n > 2:
            # the object's members and its closing brace, without the line breaks the control API
            # puts between them (a break inside a JSON string is written as \n: none is dropped)
            f.write(", ")
            whole = self._ctl_buf
            i = 1
            while i < n:
                j = whole.find(b"\n", i, n)
                if j < 0:
                    j = n
                if j > i:
                    try:
                        f.write(raw[i:j])
                    except TypeError:  # CPython's text files take text only (no budget there)
                        f.write(str(raw[i:j], "utf-8"))
                i = j + 1
        else:
            f.write("}")
        f.write("\n")

    async def settle_remotes(self):
        """Back-end commands in flight end before the interpreter does (their answers are the
        back end's, whatever the board's power), within the control API's time-out."""
        import asyncio

        wall = self._wall
        t0 = wall.ticks_ms()
        while self._remotes and wall.ticks_diff(wall.ticks_ms(), t0) < 35000:
            await asyncio.sleep(0.005)

    def finish(self):
        if self.heap.budget is not None:
            self.emit("heap", {"budget": self.heap.budget, "peak": self.heap.peak, "live": self.heap.settle(),
                               "world": self.heap.world, "out_of_memory": self.out_of_memory})
        self.emit("flash", {"bytes_written": self.flash.bytes, "writes": self.flash.writes, "used": self.flash.used})
        if self.cpu is not None:
            self.cpu.switch(self.cpu.HARNESS)
            self.emit("cpu", self.cpu.report(self.T))
        if _FLASHDEV is not None:
            _FLASHDEV.flush()
            self.emit("wear", _FLASHDEV.report())
        lk = self.world.lock
        if lk is not None:
            self.emit("world", {"lock_both_on": lk.both_on, "lock_strokes": lk.strokes,
                                "pulls_refused": self.world.pulls_refused})
        end = {"truth": round(self.world.truth_wh, 3)}
        g = self.world.grid
        if g is not None and g.active:
            end["over_ms"] = g.over_ms
        ps = self.world.phase_switch
        if ps is not None:
            end["switches"] = ps.switches
            end["switch_under_load"] = ps.switch_under_load
        self.emit("world", end)
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


def _settings_file():
    """(energy_mode, main_fuse_a) from the flash's settings.json as it is (None when absent)."""
    try:
        with open("settings.json") as f:
            doc = json.load(f)
        mode, fuse = doc.get("energy_mode"), doc.get("main_fuse_a")
    except (OSError, ValueError, AttributeError):
        return None, None
    if type(fuse) not in (int, float):
        fuse = None
    return mode, fuse


def _cpu_meter(mhz):
    """The CPU model's meter on the virtual ESP32 (its `vesp` module), None elsewhere; it also
    becomes asyncio's step hook, so that each step of each task is counted on its own."""
    try:
        import vesp
    except ImportError:
        return None
    import asyncio
    import cpumodel

    meter = cpumodel.Meter(vesp, mhz)
    asyncio.core.step_hook = meter.task_step
    return meter


def read_state(path):
    """The state a run saved at a power cut, read before the harness builds anything: the
    document is garbage once the world is restored, and where it lay, under all that is built
    after it, it leaves one hole the new boot can use, not holes between the world's objects."""
    with open(path) as f:
        return json.load(f)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    code = argv[1]
    opts = {"--scenario": None, "--events": None, "--speed": None, "--heap": None, "--csms-control": None,
            "--proxy-control": None, "--world": None, "--fresh": None, "--cpu": None, "--littlefs": None}
    quiet = False
    tty = False
    probe = False
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
        if a == "--probe":
            probe = True
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
    world = int(opts["--world"]) if opts["--world"] else 0
    csms = int(opts["--csms-control"]) if opts["--csms-control"] else None
    proxy = int(opts["--proxy-control"]) if opts["--proxy-control"] else None
    if opts["--littlefs"]:
        # The board's flash from here on, before the world reads board.json from it; in the probe
        # run too, so that the device's and the mount's bytes count as the world's. The host
        # directory's files go in at the run's first boot only (a resumed boot finds them there).
        global _FLASHDEV
        import lfs

        fresh = opts["--fresh"]
        _FLASHDEV = lfs.attach(opts["--littlefs"], copy=not (fresh is not None and exists(fresh)))
    if probe:
        # What the world and this harness hold once built, before the first boot: tools/sim.py
        # adds it to the firmware's budget for -X heapsize. (The same steps as a run, so the same
        # bytes: the scenario parsed, the world and the harness built, the events file open.)
        fresh = opts["--fresh"]
        state = read_state(fresh) if fresh is not None and exists(fresh) else None
        sim = Sim(code, None, speed, True, heap, tty, csms, proxy, boot=False, actions=actions)
        if state is not None:  # a boot after a power cut: the world as resumed
            sim.fresh = fresh
            sim.resume(state)
            state = None
        print("world %d" % held())
        return 0
    return asyncio.run(_run(code, opts, speed, quiet, heap, tty, csms, proxy, actions, world))


async def _run(code, opts, speed, quiet, heap, tty, csms, proxy, actions, world):
    fresh = opts["--fresh"]
    resuming = fresh is not None and exists(fresh)
    state = read_state(fresh) if resuming else None
    sim = Sim(code, opts["--events"], speed, quiet, heap, tty, csms, proxy, world, boot=not resuming, fresh=fresh,
              cpu=int(opts["--cpu"]) if opts["--cpu"] else None, actions=actions)
    start, wait_end = sim.resume(state) if resuming else (0, None)
    state = None
    try:
        if actions is None:
            if wait_end is not None:  # a typed `wait` the power came back in
                await sim.run_until(wait_end)
            await sim.interactive()
        else:
            if wait_end is not None:  # power came back during this `wait`
                await sim.run_until(wait_end)
                start += 1
            for i in range(start, len(actions)):
                sim.pos = i
                lineno, verb, args = actions[i]
                await sim.act(lineno, verb, args)
            sim.pos = len(actions)
            await sim.run_for(STEP_MS)
    except PowerOn:
        await sim.settle_remotes()
        sim.save()
        if sim.events is not None:
            sim.events.close()
        return RESTART
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
