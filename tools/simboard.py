#!/usr/bin/env python3
"""A simulated ESP32 board on a pseudo-terminal, for mpremote, tools/deploy.py and tools/bench.py.

    python3 tools/simboard.py [--board NAME] [--flash DIR] [--link PATH] [--wifi SSID:PASSWORD]
                              [--world ACTION]... [--heap SIZE] [--runtime esp32|micropython]

It prints the serial port to use (`mpremote connect PORT ...`) and runs until Ctrl-C. Behind the
port a unix MicroPython runs tests_host/boardsim.py: the board's REPL, the fake `machine`
modules and the simulated world (car socket, contactor, RCD, meter, card reader) on the wall
clock. Its flash starts empty: deploy with tools/deploy.py, then bench-test with tools/bench.py.

--runtime esp32 (default): the virtual ESP32 (tools/vm.py), a board flashed with an image that
               has the firmware frozen in (32-bit, as on the chip): tools/deploy.py sees that and
               copies only boot.py, main.py, the profile and the settings.
--runtime micropython: the prebuilt 64-bit unix MicroPython, a board with a stock image:
               tools/deploy.py copies the firmware as .mpy files (x64 bytecode).

--board NAME   how the simulated hardware is wired (a profile in drivers/boards/, default
               esp32-devkit); deploy the same profile or the bench will show the difference.
--flash DIR    the board's flash: a directory that keeps its files between runs (default: a
               fresh temporary one, removed at the end).
--link PATH    also make PATH a symlink to the port (a stable name for scripts).
--wifi S:P     the access point the board can join (default evse-bench:bench-password), or none.
--world ACTION a world action applied at every power-on, e.g. "card 04A1B2C3" (a card held
               on the reader), "feedback-lost" (the contactor's auxiliary contact is
               disconnected), "pilot-short", "meter-fail", "temp 45" (see tests_host/world).

Like a board: Ctrl-C interrupts running code (the bridge turns the byte into SIGINT while the
board's interrupt character is enabled, and passes it as data while mpremote's mount has it
disabled); a soft reset (Ctrl-D, sys.exit()) runs boot.py again and, from the friendly REPL,
main.py; machine.reset() restarts the process as a hard reset. The world is rebuilt at every
reset (the contactor is open after a reset anyway).

Exit status: 0 after Ctrl-C, 2 for bad arguments.
"""
import argparse
import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
HOST = os.path.join(ROOT, "tests_host")
BOARDS = os.path.join(ROOT, "drivers", "boards")
DEFAULT_WIFI = ("evse-bench", "bench-password")
HEAP = "2M"  # an ESP32-WROVER's MicroPython heap is about 4 MB of PSRAM; 2 MB is plenty here
BANNER = "MicroPython v%s on 2026-11-01; ESP32 module (simulated: %s) with ESP32"
OUT_CAP = 256 * 1024  # output kept for a host that is not reading; older output is dropped

HARD_RESET, SOFT_RESET, SOFT_RESET_RAW = 3, 4, 5  # tests_host/boardsim.py's exit statuses
RUNTIMES = ("esp32", "micropython")


def _signal_masks(pid, fields):
    """The OR of /proc/PID/status signal masks named by `fields` (e.g. "SigCgt:"), None when
    the process is gone."""
    mask = 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(fields):
                    mask |= int(line.split()[1], 16)
    except OSError:
        return None
    return mask


SIGINT_BIT = 1 << (signal.SIGINT - 1)


def _sigint_caught(pid):
    """True when the process has a SIGINT handler: MicroPython's interrupt character is on.
    mpremote's mount turns it off (micropython.kbd_intr(-1)) while binary data flows."""
    return bool((_signal_masks(pid, ("SigCgt:",)) or 0) & SIGINT_BIT)


def _sigint_delivered(pid, limit_s=0.2):
    """Wait until a SIGINT sent to pid is no longer pending: then a read it was blocked in has
    failed with EINTR and MicroPython raised KeyboardInterrupt, so the bytes that followed the
    Ctrl-C cannot overtake it."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        pending = _signal_masks(pid, ("SigPnd:", "ShdPnd:"))
        if pending is None or not pending & SIGINT_BIT:
            return
        time.sleep(0.001)


class SimBoard:
    """The bridge: a PTY on one side, the board's MicroPython process on the other.

    with SimBoard(flash=DIR) as b:  b.port is the serial device to hand to mpremote.
    `starts` lists how each process started ("power", "hard", "soft") for tests.
    """

    def __init__(self, board="esp32-devkit", flash=None, link=None, wifi=DEFAULT_WIFI, world=(),
                 heap=HEAP, runtime="esp32"):
        if runtime not in RUNTIMES:
            raise ValueError("no such runtime: %s (%s)" % (runtime, ", ".join(RUNTIMES)))
        self.runtime = runtime
        self.profile = board if board.endswith(".json") else os.path.join(BOARDS, board + ".json")
        if not os.path.exists(self.profile):
            raise ValueError("no such board profile: %s" % board)
        self._own_flash = flash is None
        self.flash = os.path.abspath(flash) if flash else tempfile.mkdtemp(prefix="evse-board-")
        os.makedirs(self.flash, exist_ok=True)
        self.link = link
        self.wifi = wifi
        self.world = [list(a) for a in world]
        self.heap = heap
        self.starts = []
        self.exits = []
        self.proc = None
        self._stop = threading.Event()
        self._thread = None
        self._in = bytearray()   # host -> board, waiting for the process to read
        self._out = bytearray()  # board -> host, waiting for the host to read
        self._started = False  # the board's process has had its interrupt character on since it started
        self._intr = False  # a Ctrl-C that came while it was still starting: delivered once it can
        self._work = tempfile.mkdtemp(prefix="evse-simboard-")

    # ---- life cycle

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        import sim

        if self.runtime == "esp32":  # the harness (boardsim, fakes, world) is frozen in with the firmware
            import vm

            self._micropython = vm.build(quiet=True)
            self._env = dict(os.environ, MICROPYPATH=".frozen")
        else:
            sim.compile_for_sim()
            self._env = dict(os.environ, MICROPYPATH=sim.micropython_path())
            self._micropython = _venv.bin_path("micropython")
        name = os.path.basename(self.profile)[:-5]
        cfg = {"flash": self.flash, "profile": self.profile, "world": self.world,
               "wifi": list(self.wifi) if self.wifi else None,
               "banner": BANNER % (self._mp_version(), name)}
        self._cfg = os.path.join(self._work, "board.json")
        with open(self._cfg, "w") as f:
            json.dump(cfg, f)
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no line discipline: bytes pass as on a USB serial port
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self._slave)
        if self.link:
            if os.path.islink(self.link) or os.path.exists(self.link):
                os.remove(self.link)
            os.symlink(self.port, self.link)
        self._spawn("friendly", "power")
        self._thread = threading.Thread(target=self._loop, name="simboard", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._kill()
        for fd in (getattr(self, "master", None), getattr(self, "_slave", None)):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.link and os.path.islink(self.link):
            os.remove(self.link)
        shutil.rmtree(self._work, ignore_errors=True)
        if self._own_flash:
            shutil.rmtree(self.flash, ignore_errors=True)

    def _mp_version(self):
        r = subprocess.run([self._micropython, "-c",
                            "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
                           capture_output=True, text=True)
        return r.stdout.strip() or "1.x"

    def _spawn(self, mode, how):
        if how != "soft":  # reset_cause() after a soft reset is the last hard reset's
            with open(self._cfg) as f:
                cfg = json.load(f)
            cfg["hard_reset"] = how == "hard"
            with open(self._cfg, "w") as f:
                json.dump(cfg, f)
        cmd = [self._micropython, "-X", "heapsize=" + self.heap, "-m", "boardsim", self._cfg, mode, how]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, env=self._env, cwd=self.flash)
        os.set_blocking(self.proc.stdin.fileno(), False)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._started = False
        self.starts.append(how)

    def _kill(self):
        p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
            p.wait()

    # ---- the bridge

    def _loop(self):
        sel = selectors.DefaultSelector()
        sel.register(self.master, selectors.EVENT_READ, "host")
        child = self.proc
        sel.register(child.stdout, selectors.EVENT_READ, "board")
        crashes = []
        while not self._stop.is_set():
            events = sel.select(0.05)
            for key, _mask in events:
                if key.data == "host":
                    self._from_host()
                else:
                    data = self._read_board(child)
                    if data is None:  # the process ended: a reset
                        sel.unregister(child.stdout)
                        child = self._restart(child, crashes)
                        if child is None:
                            return
                        sel.register(child.stdout, selectors.EVENT_READ, "board")
            self._flush()

    def _read_board(self, child):
        try:
            data = os.read(child.stdout.fileno(), 65536)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            return None
        if not self._started and child.poll() is None:
            # Once its interrupt character has been on (boardsim's boot()), a 0x03 byte that
            # comes while it is off is data (mpremote mount's: a name's length, a file's time),
            # not a Ctrl-C held for a process that is still starting.
            self._catches(child)
        self._out += data
        if len(self._out) > OUT_CAP:
            del self._out[:len(self._out) - OUT_CAP]
        return data

    def _restart(self, child, crashes):
        rc = child.wait()
        child.stdout.close()
        try:
            child.stdin.close()
        except OSError:
            pass
        self.exits.append(rc)
        if self._stop.is_set():
            return None
        if rc == HARD_RESET:
            self._spawn("friendly", "hard")
        elif rc == SOFT_RESET:
            self._spawn("friendly", "soft")
        elif rc == SOFT_RESET_RAW:
            self._spawn("raw", "soft")
        else:
            now = time.monotonic()
            crashes[:] = [t for t in crashes if now - t < 10] + [now]
            msg = "\r\n[simboard: the board's process ended with status %s; power-cycling it]\r\n" % rc
            self._out += msg.encode()
            if len(crashes) > 3:
                time.sleep(2)  # a crash loop: do not spin
            self._spawn("friendly", "power")
        return self.proc

    def _from_host(self):
        try:
            data = os.read(self.master, 65536)
        except (BlockingIOError, OSError):
            return
        start = 0
        while True:
            i = data.find(b"\x03", start)
            if i < 0:
                self._in += data[start:]
                break
            self._in += data[start:i]
            p = self.proc
            if p is not None and p.poll() is None and self._catches(p):
                self._interrupt(p)
            elif p is not None and not self._started:
                # A board takes Ctrl-C from its first instruction (it interrupts boot.py); the
                # process has not installed its handler yet: held, and delivered once it has.
                self._intr = True
            else:
                self._in += b"\x03"  # mount's binary data (the interrupt character is off)
            start = i + 1

    def _catches(self, p):
        if _sigint_caught(p.pid):
            self._started = True
            return True
        return False

    def _interrupt(self, p):
        self._flush()
        os.kill(p.pid, signal.SIGINT)
        _sigint_delivered(p.pid)

    def _flush(self):
        p = self.proc
        if self._intr and p is not None and p.poll() is None and self._catches(p):
            self._intr = False
            self._interrupt(p)
        if self._in and p is not None and p.poll() is None:
            try:
                n = os.write(p.stdin.fileno(), self._in)
                del self._in[:n]
            except (BlockingIOError, BrokenPipeError, OSError):
                pass
        if self._out:
            try:
                n = os.write(self.master, self._out)
                del self._out[:n]
            except (BlockingIOError, OSError):
                pass


def world_action(text):
    # world.world imports the fake machine, which takes firmware/calendar.py from the repository
    sys.path[:0] = [HOST, os.path.join(HOST, "fakes"), ROOT]
    from world import scenario
    from world.world import VERBS

    try:
        steps = scenario.parse(text, verbs=VERBS)
    except scenario.ScenarioError as e:
        raise argparse.ArgumentTypeError("%s (world actions: %s)" % (e, ", ".join(VERBS)))
    if len(steps) != 1:
        raise argparse.ArgumentTypeError("expected one world action, got %r" % text)
    _line, verb, args = steps[0]
    return [verb] + [a if isinstance(a, (int, float, str)) else str(a) for a in args]


def wifi_arg(text):
    if text == "none":
        return None
    ssid, sep, key = text.partition(":")
    if not sep or not ssid or len(ssid) > 32:
        raise argparse.ArgumentTypeError("expected SSID:PASSWORD (SSID 1 to 32 characters) or none, got %r" % text)
    return ssid, key


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--board", default="esp32-devkit", help="how the simulated hardware is wired")
    p.add_argument("--flash", metavar="DIR", help="keep the board's flash in DIR")
    p.add_argument("--link", metavar="PATH", help="a symlink to the port")
    p.add_argument("--wifi", type=wifi_arg, default=DEFAULT_WIFI, metavar="SSID:PASSWORD")
    p.add_argument("--world", type=world_action, action="append", default=[], metavar="ACTION")
    p.add_argument("--heap", default=HEAP, help="MicroPython heap of the board (default %s)" % HEAP)
    p.add_argument("--runtime", choices=RUNTIMES, default="esp32",
                   help="esp32: the virtual ESP32, the firmware frozen in (default); micropython: the "
                        "64-bit unix port, a stock image")
    a = p.parse_args(argv)
    try:
        board = SimBoard(a.board, a.flash, a.link, a.wifi, a.world, a.heap, a.runtime)
    except ValueError as e:
        p.error("--board %s: %s" % (a.board, e))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with board:
        print("simulated board on %s%s (flash: %s)" % (board.port, " -> " + a.link if a.link else "",
                                                       board.flash), flush=True)
        print("try: mpremote connect %s exec \"import sys; print(sys.platform)\"" % (a.link or board.port),
              flush=True)
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
