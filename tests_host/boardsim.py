"""The simulated board's own process: a board's REPL over stdin/stdout, the world on real time.

Started (and restarted at every reset) by tools/simboard.py under the unix MicroPython port, with
the fakes and the world on MICROPYPATH. It behaves as an ESP32 running MicroPython does on its
USB serial port, so that mpremote, tools/deploy.py and tools/bench.py work against it unchanged:

- Its filesystem is the board's flash, a host directory mounted at `/` (vfs.VfsPosix), so
  `mpremote cp x :x` writes into that directory and nothing outside it is reachable. sys.path
  is a board's: '', '.frozen', '/lib'. The firmware comes from what was deployed to the flash
  (or from `mpremote mount`), never from the repository.
- Power-on and every reset run /boot.py; in the friendly REPL also /main.py, as the ESP32 port
  does. The REPL (friendly, raw, raw-paste) is written here in Python, because the unix port's
  own one exits on Ctrl-D and cannot be interrupted by a Ctrl-C byte. The bridge turns a Ctrl-C
  byte into SIGINT (KeyboardInterrupt here) while the interrupt character is enabled, and
  restarts this process when it exits with SOFT_RESET or HARD_RESET.
- `machine.reset()` is a hard reset (exit HARD_RESET); sys.exit() or Ctrl-D on an empty line is
  a soft reset (exit SOFT_RESET, the REPL mode kept), as on a board.
- The world (tests_host/world) is built from the board profile the simulated hardware is wired
  as (not the one deployed: a wrong profile must show on the bench, as with real hardware) and
  moves on the wall clock: every call into a `machine` class first brings the world and the
  fakes' virtual microseconds up to now.

Arguments: boardsim.py CONFIG_JSON MODE START, where CONFIG_JSON names
{"flash": DIR, "profile": PATH, "wifi": [SSID, KEY] or null, "world": [[VERB, ARG...], ...],
 "banner": TEXT}, MODE is "friendly" or "raw" and START is "power" (power-on), "hard"
(machine.reset(): reset_cause() is SOFT_RESET, as the ESP32 reports it) or "soft" (a soft
reset: "MPY: soft reboot" and the REPL mode kept); CONFIG_JSON's "hard_reset" says the last
hard reset was machine.reset(), which a soft reset does not change.
"""
import io
import json
import sys
import time

import machine
import network

HARD_RESET = 3  # exit statuses the bridge understands
SOFT_RESET = 4  # (a soft reset from the friendly REPL)
SOFT_RESET_RAW = 5  # (a soft reset from the raw REPL: the board comes back in the raw REPL)

CTRL_A = b"\x01"
CTRL_B = b"\x02"
CTRL_C = b"\x03"
CTRL_D = b"\x04"
CTRL_E = b"\x05"
PASTE_WINDOW = 2048  # bytes per flow-control window (an ESP32 uses 128..256)
_stdin = sys.stdin.buffer
_stdout = sys.stdout


def out(text):
    """Text to the serial line with a board's line endings."""
    if "\n" in text:
        text = text.replace("\r\n", "\n").replace("\n", "\r\n")
    _stdout.write(text)


_print = print


def _cooked_print(*args, sep=" ", end="\n", file=None):
    if file is not None:
        _print(*args, sep=sep, end=end, file=file)
        return
    s = io.StringIO()
    _print(*args, sep=sep, end=end, file=s)
    out(s.getvalue())


def print_exception(e):
    s = io.StringIO()
    sys.print_exception(e, s)
    out(s.getvalue())


class Reset(Exception):
    def __init__(self, status):
        super().__init__(status)
        self.status = status

    @staticmethod
    def of(exit_exc):
        """The reset a SystemExit asks for: machine.reset() exits HARD_RESET, anything else
        (sys.exit(), as on a board) is a soft reset."""
        args = exit_exc.args
        return Reset(HARD_RESET if args and args[0] == HARD_RESET else SOFT_RESET)


# ---------------------------------------------------------------- the world on the wall clock

class RealTime:
    """Moves the world and the fakes' virtual microseconds to the wall clock before any call
    into a `machine` class, so the firmware and bench code see a world that lives in real time."""

    def __init__(self, world):
        self.world = world
        self.t0 = time.ticks_ms()
        self.last = self.t0
        self.T = 0
        self.busy = False

    def sync(self):
        if self.busy:
            return
        now = time.ticks_ms()
        dt = time.ticks_diff(now, self.last)
        if dt <= 0:
            return
        self.busy = True
        try:
            self.last = now
            self.T += dt
            self.world.advance(self.T)
            machine.hw_advance_ms(dt)
        finally:
            self.busy = False


_NO = object()  # "argument not given"


def _wrap(fn, sync):
    """fn with the world synced first. Fixed arity, no *args: the firmware's hard interrupt
    handlers call these with the heap locked, where building an argument tuple would fail (and
    the world is not moved inside a handler)."""
    def call(self, a=_NO, b=_NO, c=_NO):
        if not machine._hard_depth:
            sync()
        if a is _NO:
            return fn(self)
        if b is _NO:
            return fn(self, a)
        if c is _NO:
            return fn(self, a, b)
        return fn(self, a, b, c)
    return call


# The board-side calls that read or change what the world sees (all called positionally).
METHODS = {
    "Pin": ("value", "on", "off", "__call__"),
    "Signal": ("value", "on", "off", "__call__"),
    "ADC": ("read_u16", "read_uv", "read"),
    "PWM": ("duty_u16", "duty_ns", "duty", "freq"),
    "UART": ("read", "readinto", "readline", "write", "any"),
    "SPI": ("read", "readinto", "write", "write_readinto"),
    "SoftSPI": ("read", "readinto", "write", "write_readinto"),
    "I2C": ("readfrom", "readfrom_into", "writeto", "readfrom_mem", "readfrom_mem_into",
            "writeto_mem", "scan"),
    "SoftI2C": ("readfrom", "readfrom_into", "writeto", "readfrom_mem", "readfrom_mem_into",
                "writeto_mem", "scan"),
    "WDT": ("feed",),
    "RTC": ("datetime",),
}


def hook_machine(sync):
    for cls_name in METHODS:
        cls = getattr(machine, cls_name, None)
        if cls is None:
            continue
        for name in METHODS[cls_name]:
            fn = cls.__dict__.get(name) if hasattr(cls, "__dict__") else None
            if fn is None:
                fn = getattr(cls, name, None)
            if fn is not None:
                setattr(cls, name, _wrap(fn, sync))
    pulse = machine.time_pulse_us

    def time_pulse_us(pin, level, timeout_us=1000000):
        sync()
        return pulse(pin, level, timeout_us)

    machine.time_pulse_us = time_pulse_us

    def reset():
        out("\r\n")
        raise SystemExit(HARD_RESET)

    def soft_reset():
        raise SystemExit(SOFT_RESET)

    machine.reset = reset
    machine.soft_reset = soft_reset


def build_world(cfg, start):
    from drivers import board
    from world.world import World

    profile = board.load(cfg["profile"])
    if start == "hard" or cfg.get("hard_reset"):
        machine.hw_set_reset_cause(machine.SOFT_RESET)  # (a soft reset keeps the last cause)
    world = World(profile)
    for action in cfg.get("world") or ():
        world.apply(action[0], action[1:])
    wifi = cfg.get("wifi")
    if wifi:
        network.hw_set_wifi(True, wifi[0], wifi[1])
    # The board's firmware comes from its flash: forget the copies the world was built with.
    for name in list(sys.modules):
        if name == "firmware" or name.startswith("firmware.") or name == "drivers" \
                or name.startswith("drivers."):
            del sys.modules[name]
    return world


FLASH_BLOCK = 4096
FLASH_BLOCKS = 512  # the ESP32_GENERIC image's filesystem partition: 2 MB of its 4 MB flash


class Flash:
    """The board's filesystem: a host directory, mounted at `/`. Every path is resolved here
    (relative ones against this filesystem's own cwd, `..` stopping at its root) and handed to
    a root-less vfs.VfsPosix as a full host path, so nothing outside the directory is reachable
    (and the unix port's VfsPosix-with-root rename bug, which joins both names into one buffer,
    is avoided). ilistdir reports file sizes as LittleFS does (mpremote's ls shows them);
    statvfs reports a 2 MB partition."""

    def __init__(self, path):
        import vfs

        self.p = vfs.VfsPosix()
        self.root = path.rstrip("/")
        self.cwd = "/"

    def _abs(self, path):
        if not path.startswith("/"):
            path = self.cwd.rstrip("/") + "/" + path
        parts = []
        for part in path.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)

    def _host(self, path):
        return self.root + self._abs(path)

    def mount(self, readonly, mkfs):
        pass

    def umount(self):
        pass

    def open(self, path, mode):
        return self.p.open(self._host(path), mode)

    def ilistdir(self, path):
        host = self._host(path)
        for e in self.p.ilistdir(host):
            name, kind = e[0], e[1]
            size = self.p.stat(host + "/" + name)[6] if kind == 0x8000 else 0
            yield (name, kind, 0, size)

    def stat(self, path):
        return self.p.stat(self._host(path))

    def mkdir(self, path):
        self.p.mkdir(self._host(path))

    def rmdir(self, path):
        self.p.rmdir(self._host(path))

    def remove(self, path):
        self.p.remove(self._host(path))

    def rename(self, old, new):
        self.p.rename(self._host(old), self._host(new))

    def chdir(self, path):
        target = self._abs(path)
        if not self.p.stat(self.root + target)[0] & 0x4000:
            raise OSError(20)  # ENOTDIR
        self.cwd = target

    def getcwd(self):
        return self.cwd

    def _used(self, host):
        n = 0
        for e in self.p.ilistdir(host):
            full = host + "/" + e[0]
            if e[1] == 0x4000:
                n += FLASH_BLOCK + self._used(full)
            else:
                n += (self.p.stat(full)[6] + FLASH_BLOCK - 1) // FLASH_BLOCK * FLASH_BLOCK
        return n

    def statvfs(self, path):
        free = max(0, FLASH_BLOCKS - self._used(self.root) // FLASH_BLOCK)
        return (FLASH_BLOCK, FLASH_BLOCK, FLASH_BLOCKS, free, free, 0, 0, 0, 0, 255)

    def __repr__(self):
        return "<VfsLfs2 (simulated: %s)>" % self.root


def mount_flash(path):
    import os
    import vfs

    vfs.umount("/")
    vfs.mount(Flash(path), "/")
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"]


# ---------------------------------------------------------------- running code

class Board:
    def __init__(self, banner):
        self.banner = banner
        self.g = {"__name__": "__main__"}

    def run(self, src, name):
        """Execute source in the REPL's globals; returns the exception it ended with, or None.
        SystemExit ends the REPL (a reset)."""
        try:
            exec(compile(src, name, "exec"), self.g)
        except SystemExit as e:
            raise Reset.of(e)
        except BaseException as e:  # noqa: BLE001 - shown as a board shows it
            return e
        return None

    def run_file(self, path):
        """Run a file of the flash; False when it raised (a missing file is no failure)."""
        try:
            with open(path) as f:
                src = f.read()
        except OSError:
            return True
        e = self.run(src, path)
        if e is not None:
            print_exception(e)
            return False
        return True

    def boot(self, mode, soft):
        if soft:
            out("MPY: soft reboot\r\n")
        import micropython

        micropython.kbd_intr(3)  # from here on Ctrl-C interrupts, as on a board from its reset
        # As the ESP32 port: main.py runs only when boot.py ended without an exception (a
        # Ctrl-C in boot.py, as mpremote sends to a board that just reset, skips main.py).
        if self.run_file("boot.py") and mode == "friendly":
            self.run_file("main.py")

    # ---- input

    def read(self):
        """One byte from the host; a Ctrl-C (SIGINT from the bridge) reads as CTRL_C."""
        try:
            b = _stdin.read(1)
        except KeyboardInterrupt:
            return CTRL_C
        if not b:
            raise SystemExit(0)  # the bridge is gone
        return b

    # ---- friendly REPL

    def friendly(self):
        out(self.banner + '\r\nType "help()" for more information.\r\n')
        while True:
            try:
                line = self.readline(">>> ")
            except KeyboardInterrupt:
                out("\r\n")
                continue
            if isinstance(line, bytes):
                if line == CTRL_A:
                    return "raw"
                if line == CTRL_B:
                    out("\r\n" + self.banner + '\r\nType "help()" for more information.\r\n')
                elif line == CTRL_C:
                    out("\r\n")
                elif line == CTRL_D:
                    out("\r\n")
                    raise Reset(SOFT_RESET)
                elif line == CTRL_E:
                    self.paste()
                continue
            if not line.strip():
                continue
            src = line
            while self.more(src):
                nxt = self.readline("... ")
                if isinstance(nxt, bytes):
                    out("\r\n")
                    src = None  # Ctrl-C (or another control key) cancels the statement
                    break
                if not nxt.strip():
                    break
                src += "\n" + nxt
            if src is not None:
                self.single(src)

    COMPOUND = ("if", "while", "for", "try", "with", "def", "class", "async", "@")

    def more(self, src):
        """Whether the REPL waits for more lines (as MicroPython's: a compound statement, an open
        bracket, a trailing colon or backslash, or a block already under way)."""
        first = src.lstrip().split(" ", 1)[0].split(":", 1)[0].split("(", 1)[0]
        if first in self.COMPOUND or src.lstrip().startswith("@"):
            return True
        last = src.split("\n")[-1].rstrip()
        depth = 0
        for c in src:
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
        return depth > 0 or last.endswith(":") or last.endswith("\\") or ("\n" in src)

    def single(self, src):
        """A statement typed at the prompt; expression values are shown, as the REPL does
        (MicroPython's "single" mode prints them itself, with a bare newline)."""
        try:
            code = compile(src + "\n", "<stdin>", "single")
        except SyntaxError as e:
            print_exception(e)
            return
        try:
            exec(code, self.g)
        except SystemExit as e:
            raise Reset.of(e)
        except BaseException as e:  # noqa: BLE001
            print_exception(e)

    def readline(self, prompt):
        """A line typed at the prompt (echoed), or a control byte (CTRL_A/B/C/D/E) on its own."""
        out(prompt)
        buf = ""
        while True:
            b = self.read()
            if b in (CTRL_A, CTRL_B, CTRL_C, CTRL_E) or (b == CTRL_D and not buf):
                return b
            if b == b"\r" or b == b"\n":
                out("\r\n")
                return buf
            if b in (b"\x7f", b"\x08"):
                if buf:
                    buf = buf[:-1]
                    out("\x08 \x08")
                continue
            if b == b"\x1b":  # an escape sequence (arrow keys): read and ignore it
                nxt = self.read()
                if nxt == b"[":
                    while True:
                        c = self.read()
                        if c.isalpha() or c == b"~":
                            break
                continue
            if b < b" ":
                continue
            try:
                ch = b.decode()
            except UnicodeError:
                continue
            buf += ch
            out(ch)

    def paste(self):
        out("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
        data = b""
        while True:
            b = self.read()
            if b == CTRL_C:
                out("\r\n")
                return
            if b == CTRL_D:
                break
            data += b
            out(b.decode() if b != b"\r" else "\r\n=== ")
        out("\r\n")
        e = self.run(data.decode().replace("\r\n", "\n").replace("\r", "\n"), "<stdin>")
        if e is not None:
            print_exception(e)

    # ---- raw REPL (what mpremote speaks)

    def raw(self):
        out("raw REPL; CTRL-B to exit\r\n")
        while True:
            out(">")
            data = b""
            while True:
                b = self.read()
                if b == CTRL_A:
                    out("raw REPL; CTRL-B to exit\r\n>")
                    data = b""
                    continue
                if b == CTRL_B:
                    out("\r\n")
                    return "friendly"
                if b == CTRL_C:
                    data = b""
                    continue
                if b == CTRL_E and not data:
                    pasted = self.raw_paste()
                    if pasted is None:
                        data = b""
                        out(">")  # not raw-paste: back to the prompt
                        continue
                    data = pasted
                    break
                if b == CTRL_D:
                    out("OK")
                    if not data:
                        out("\r\n")
                        raise Reset(SOFT_RESET)
                    break
                data += b
            self.raw_exec(data)

    def raw_paste(self):
        """Raw-paste mode (Ctrl-E 'A' Ctrl-A): flow-controlled upload; the code, or None."""
        if self.read() != b"A" or self.read() != CTRL_A:
            return None
        _stdout.write("R\x01")
        _stdout.buffer.write(bytes((PASTE_WINDOW & 0xFF, PASTE_WINDOW >> 8)))
        data = bytearray()
        got = 0
        while True:
            b = self.read()  # (a stream read here blocks until it has all it asked for)
            if b == CTRL_D:
                _stdout.write("\x04")
                return bytes(data)
            if b == CTRL_C:
                _stdout.write("\x04")
                return None
            data += b
            got += 1
            if got == PASTE_WINDOW:
                got = 0
                _stdout.write("\x01")

    def raw_exec(self, data):
        try:
            src = data.decode()
        except UnicodeError as e:
            _stdout.write("\x04")
            print_exception(e)
            _stdout.write("\x04")
            return
        e = None
        try:
            e = self.run(src, "<stdin>")
        except Reset:
            _stdout.write("\x04\x04")
            raise
        _stdout.write("\x04")
        if e is not None:
            print_exception(e)
        _stdout.write("\x04")


def main():
    import micropython

    # The board's own start (the bridge holds a Ctrl-C meanwhile and sends it once this process
    # takes it again, in boot(): a board interrupts boot.py, never its firmware's start).
    micropython.kbd_intr(-1)
    cfg_path, mode, start = sys.argv[1], sys.argv[2], sys.argv[3]
    with open(cfg_path) as f:
        cfg = json.load(f)
    import builtins

    builtins.print = _cooked_print
    world = build_world(cfg, start)
    clock = RealTime(world)
    hook_machine(clock.sync)
    mount_flash(cfg["flash"])
    b = Board(cfg.get("banner") or "MicroPython (simulated board)")
    try:
        b.boot(mode, soft=start == "soft")
        while True:
            mode = b.raw() if mode == "raw" else b.friendly()
    except Reset as r:
        if r.status == SOFT_RESET and mode == "raw":
            sys.exit(SOFT_RESET_RAW)
        sys.exit(r.status)


main()
