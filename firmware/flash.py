"""The flash as the station's writers share it.

`Flash` is an fs adapter (firmware/store.py) over the board's filesystem through which every part
of the station writes, so that the newest write failure is known in one place, with the free
space and the reserve below.

RESERVE: periodic data (transaction MeterValues, energy.json and the OCPP clock saves) is written
only while more than RESERVE bytes are free; transaction records (the session journal, Start/Stop
Transaction, the session cost, ocpp.json's queue marks, the welded latch) may use the reserve.
64 KB is room for about 50 sessions' transaction records (about 1.2 KB each: the journal's closing
record, StartTransaction, StopTransaction, SessionCost) and for LittleFS's copy-on-write of a few
files at once (4 KB blocks); on the ESP32's 4 MB layout (2 MB filesystem) it is 3 % of the space.
A new session starts only while at least START_ROOM bytes are free (its start can be recorded:
two 4 KB blocks), see firmware/station.py _flash_check.
"""
from firmware import store

RESERVE = 65536  # bytes kept for transaction records
START_ROOM = 8192  # bytes free for a new session to start
# os.statvfs walks LittleFS's metadata (lfs_fs_size): measured at most this often; the bytes
# written meanwhile are taken off the last figure, and a write that fails measures again.
FREE_MS = 10000
ENOSPC = 28
_ENOENT = 2


def errno_of(e):
    return e.args[0] if e.args and type(e.args[0]) is int else None


class Flash:
    """The station's filesystem: an fs adapter whose every write goes through here, so that the
    newest write failure is known in one place (`error`, None again once a later write
    succeeded), with the free space and the reserve for transaction records."""

    def __init__(self, fs=None, root="", clock=None):
        self.fs = fs or store.REAL
        self.root = root or "."
        self.clock = clock  # without one, free() measures at every call
        self._free = None  # bytes free at the last measure, less what was written since
        self._free_at = None  # tick of the last measure (None: measure at the next call)
        self.error = None  # OSError of the newest write, None once a later write succeeded
        self.last_error = None  # the newest write failure ever seen (for the reason)
        self.refused = 0  # periodic writes not made (below the reserve, or failed)

    # -- what the writers ask

    def free(self):
        """Bytes free on the flash, or None when the filesystem does not tell."""
        c = self.clock
        if self._free_at is not None and c.ticks_diff(c.ticks_ms(), self._free_at) < FREE_MS:
            return self._free
        f = getattr(self.fs, "free", None)
        n = f(self.root) if f is not None else None
        self._free = n
        self._free_at = c.ticks_ms() if c is not None and n is not None else None
        return n

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
            self._free_at = None

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
            n = self._f.write(data)
        except OSError as e:
            self._ok = False
            self._flash.failed(e)
            raise
        fl = self._flash
        if fl._free is not None:
            fl._free = fl._free - len(data) if fl._free > len(data) else 0
        return n

    def close(self):
        try:
            self._f.close()
        except OSError as e:
            self._flash.failed(e)
            raise
        fl = self._flash
        if self._ok and fl.error is not None:
            fl.error = None
            fl._free_at = None  # writes work again: measure the space again
