"""Durable storage that survives a power cut at any instant, and a full or failing flash.

- `write_json` / `read_json`: a whole small document, replaced atomically (write a temporary
  file, then rename it over the old one; rename is atomic on LittleFS and POSIX).
- Framed records, shared by the session journal and the OCPP outbox: one record per line,
      CCCCCCCC LLLL BODY\\n
  C = CRC-32 of BODY (8 hex digits), L = its length in bytes (4 hex digits). The length lets a
  reader take a record in two bounded reads; the CRC and the final newline prove it complete.
  `frame(body)` makes the line, `read_framed(f, off)` reads one back.
- `Appender`: appends lines so that a line torn by a power cut never swallows the next one:
  until a line is known complete, the next one starts with a newline. Readers skip the torn line
  and go on; nothing is ever rewritten to repair it.
- `Journal`: JSON records as framed lines in two generations, `PATH` (current) and `PATH.1`
  (older). Appends go to the current one; `rotate()` renames it over the older one (one atomic
  rename), so the flash it takes is bounded by what the owner lets a generation hold, and no
  write ever grows with the number of records.
- `Flash`: the station's filesystem as all its writers share it (every write goes through it):
  the newest write failure, the free space (`free()`, from os.statvfs) and the reserve below.

RESERVE: periodic data (transaction MeterValues, energy.json and the OCPP clock saves) is written
only while more than RESERVE bytes are free; transaction records (the session journal, Start/Stop
Transaction, the session cost, ocpp.json's queue marks, the welded latch) may use the reserve.
64 KB is room for about 50 sessions' transaction records (about 1.2 KB each: the journal's stop
record, StartTransaction, StopTransaction, SessionCost, counted in LittleFS's 4 KB blocks at a
segment's end) and for LittleFS's copy-on-write of a few files at once; on the ESP32's 4 MB
layout (2 MB filesystem) it is 3 % of the space. A new session starts only while at least
START_ROOM bytes are free (its start can be recorded: two 4 KB blocks).

All file access goes through an `fs` object (default: the real filesystem), which lets tests
cut the power at every single write or fill the flash.
"""

import json
import os
import sys

# On the board, os.sync() makes the filesystem commit. On a PC (the simulator's flash is a
# folder) it would flush every disk of the machine and stall the firmware for nothing.
_ON_DEVICE = sys.platform not in ("linux", "darwin", "win32", "cygwin")

try:
    from binascii import crc32
except ImportError:  # pragma: no cover - every supported runtime has binascii.crc32
    from zlib import crc32  # type: ignore

RESERVE = 65536  # bytes kept for transaction records (see above)
START_ROOM = 8192  # bytes free for a new session to start
MAX_BODY = 8192  # longest framed record (bytes)
_HDR = 14  # "CCCCCCCC LLLL "
ENOSPC = 28
_ENOENT = 2

try:
    json.dumps([], separators=(",", ":"))

    def dumps(o):
        """Compact JSON: what goes on the wire and onto the flash."""
        return json.dumps(o, separators=(",", ":"))
except TypeError:  # pragma: no cover - an old MicroPython without separators
    dumps = json.dumps


class RealFS:
    def open(self, path, mode):
        return open(path, mode)

    def rename(self, a, b):
        os.rename(a, b)

    def remove(self, path):
        os.remove(path)

    def exists(self, path):
        try:
            os.stat(path)
            return True
        except OSError:
            return False

    def sync(self):
        if _ON_DEVICE and hasattr(os, "sync"):
            os.sync()

    def mkdir(self, path):
        try:
            os.mkdir(path)
        except OSError:
            pass  # exists

    def ilistdir(self, path):
        """Yield the names in `path` one by one (no list of all names in RAM)."""
        if hasattr(os, "ilistdir"):  # MicroPython
            for e in os.ilistdir(path):  # type: ignore[attr-defined]
                yield e[0]
        else:  # CPython
            it = os.scandir(path)
            try:
                for e in it:
                    yield e.name
            finally:
                it.close()

    def free(self, path="."):
        """Bytes free on the filesystem that holds `path` (what a new block may take), or None."""
        try:
            s = os.statvfs(path)  # (bsize, frsize, blocks, bfree, bavail, ...) on every port
            return s[4] * s[1]
        except (OSError, AttributeError):
            return None


REAL = RealFS()


def read_json(path, fs=None):
    """The document at `path`, or None when there is none. Raises ValueError when it is corrupt."""
    fs = fs or REAL
    if not fs.exists(path):
        return None
    f = fs.open(path, "r")
    try:
        text = f.read()
    finally:
        f.close()
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError("not valid JSON")


def write_json(path, doc, fs=None):
    fs = fs or REAL
    tmp = path + ".tmp"
    f = fs.open(tmp, "w")
    try:
        f.write(json.dumps(doc))
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync()


# ---- framed records ----

def frame(body):
    """The line that holds one record whose body is `body` (bytes)."""
    return ("%08x %04x " % (crc32(body) & 0xFFFFFFFF, len(body))).encode() + body + b"\n"


def read_framed(f, off):
    """Read the record at byte `off` of `f` (opened "rb", positioned there).

    Returns (body bytes or None when the bytes there are not a record, bytes consumed); consumed
    is -1 at the clean end of the file and -2 when the file ends inside a line (a torn tail).
    """
    h = f.read(_HDR)
    if not h:
        return None, -1
    if len(h) == _HDR and h[8] == 32 and h[13] == 32:
        try:
            crc = int(h[:8], 16)
            n = int(h[9:13], 16)
        except ValueError:
            n = 0
        if 0 < n <= MAX_BODY:
            b = f.read(n + 1)
            if b and len(b) == n + 1 and b[n] == 10 and crc32(memoryview(b)[:n]) & 0xFFFFFFFF == crc:
                return b[:n], _HDR + n + 1
    # Not a record (torn by a power cut, or damaged): skip to the end of its line, in bounded reads.
    f.seek(off)
    m = 0
    while True:
        c = f.readline(256)
        if not c:
            return None, -2
        m += len(c)
        if c[-1] == 10:
            return None, m


class Appender:
    """Appends lines to files. A line is known complete once its file was closed; until then
    (a power cut, a failed write) the next append starts with a newline, so that a torn line
    ends there and is skipped by readers instead of swallowing the next record."""

    def __init__(self, fs):
        self.fs = fs
        self.nl = False  # the last line may be torn (set from a read of the file's end at boot)

    def append(self, path, line):
        if self.nl:
            line = b"\n" + line
        self.nl = True
        f = self.fs.open(path, "ab")
        try:
            f.write(line)
        finally:
            f.close()
        self.fs.sync()
        self.nl = False


class Journal:
    """JSON records (dicts) as framed lines in two generations: `path` and `path`.1 (older).
    Reading streams one record at a time; RAM use does not grow with length."""

    def __init__(self, path, fs=None):
        self.path = path
        self.older = path + ".1"
        self.fs = fs or REAL
        self._app = Appender(self.fs)
        self._count = None  # records in the current generation, once counted

    def records(self):
        """Yield every intact record, oldest first; a torn or damaged line is skipped."""
        for rec in self._read(self.older):
            yield rec
        for rec in self._read(self.path):
            yield rec

    def _read(self, path):
        try:
            f = self.fs.open(path, "rb")
        except OSError:
            return  # no such generation (yet)
        try:
            off = 0
            while True:
                body, n = read_framed(f, off)
                if n < 0:
                    if path == self.path:
                        self._app.nl = n == -2
                    return
                off += n
                if body is not None:
                    try:
                        rec = json.loads(body)
                    except ValueError:
                        rec = None
                    if type(rec) is dict:
                        yield rec
        finally:
            f.close()

    def size(self):
        """Records in the current generation."""
        if self._count is None:
            n = 0
            for _ in self._read(self.path):
                n += 1
            self._count = n
        return self._count

    def append(self, record):
        """Append one record (durable when it returns)."""
        self.size()  # (also learns whether the file ends in a torn line)
        self._app.append(self.path, frame(dumps(record).encode()))
        self._count += 1

    def rotate(self):
        """The current generation becomes the older one (the older one is dropped)."""
        if self.fs.exists(self.path):
            self.fs.rename(self.path, self.older)
        self._count = 0
        self._app.nl = False

    def files(self):
        return (self.path, self.older)


# ---- the flash as the station's writers share it ----

def errno_of(e):
    return e.args[0] if e.args and type(e.args[0]) is int else None


class Flash:
    """The station's filesystem: an fs adapter whose every write goes through here, so that the
    newest write failure is known in one place (`error`, None again once a later write
    succeeded), with the free space and the reserve for transaction records."""

    def __init__(self, fs=None, root=""):
        self.fs = fs or REAL
        self.root = root or "."
        self.error = None  # OSError of the newest write, None once a later write succeeded
        self.last_error = None  # the newest write failure ever seen (for the reason)
        self.refused = 0  # periodic writes not made (below the reserve, or failed)

    # -- what the writers ask

    def free(self):
        """Bytes free on the flash, or None when the filesystem does not tell."""
        f = getattr(self.fs, "free", None)
        return f(self.root) if f is not None else None

    def periodic(self):
        """May periodic data be written now (more than RESERVE free, or unknown)? A refusal is
        counted: the caller drops that piece of periodic data."""
        free = self.free()
        if free is None or free > RESERVE:
            return True
        self.refused += 1
        return False

    def room_to_start(self):
        free = self.free()
        return free is None or free >= START_ROOM

    def failed(self, e):
        if errno_of(e) != _ENOENT:
            self.error = self.last_error = e

    # -- the fs adapter

    def open(self, path, mode):
        if "r" in mode:
            return self.fs.open(path, mode)
        try:
            return _Written(self.fs.open(path, mode), self)
        except OSError as e:
            self.failed(e)
            raise

    def rename(self, a, b):
        try:
            self.fs.rename(a, b)
        except OSError as e:
            self.failed(e)
            raise

    def remove(self, path):
        try:
            self.fs.remove(path)
        except OSError as e:
            self.failed(e)
            raise

    def exists(self, path):
        return self.fs.exists(path)

    def sync(self):
        self.fs.sync()

    def mkdir(self, path):
        self.fs.mkdir(path)

    def ilistdir(self, path):
        return self.fs.ilistdir(path)


class _Written:
    """A file open for writing through Flash: its failures are the flash's."""

    def __init__(self, f, flash):
        self._f = f
        self._flash = flash
        self._ok = True

    def write(self, data):
        try:
            return self._f.write(data)
        except OSError as e:
            self._ok = False
            self._flash.failed(e)
            raise

    def close(self):
        try:
            self._f.close()
        except OSError as e:
            self._flash.failed(e)
            raise
        if self._ok:
            self._flash.error = None
