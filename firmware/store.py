"""Durable storage that survives a power cut at any instant.

- `write_json` / `read_json`: a whole small document, replaced atomically (write a temporary
  file, then rename it over the old one; rename is atomic on LittleFS and POSIX); read through
  the one capped, strict reader (drivers/jsonfile.py), so no file on flash can make a boot raise.
- `RealFS`: the filesystem adapter. All file access goes through an `fs` object (default: the
  real filesystem), which lets tests cut the power at every single write or fill the flash;
  `free()` tells the bytes free (os.statvfs).

Logs of records live in firmware/journal.py, the flash as the station's writers share it (its
reserve for transaction records, the newest write failure) in firmware/flash.py.
"""


import json
import os
import sys

# On the board, os.sync() makes the filesystem commit. On a PC (the simulator's flash is a
# folder) it would flush every disk of the machine and stall the firmware for nothing.
_ON_DEVICE = sys.platform not in ("linux", "darwin", "win32", "cygwin")

from firmware import NOTHING, dumps, holds_many, steps  # noqa: F401 - dumps: compact JSON, also store.dumps


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

    def rmdir(self, path):
        os.rmdir(path)

    def entries(self, path):
        """Yield (name, is_directory) for the entries of `path`, one by one (no list of all
        names in RAM)."""
        if hasattr(os, "ilistdir"):  # MicroPython
            for e in os.ilistdir(path):  # type: ignore[attr-defined]
                yield e[0], e[1] == 0x4000
        else:  # CPython
            it = os.scandir(path)
            try:
                for e in it:
                    yield e.name, e.is_dir()
            finally:
                it.close()

    def ilistdir(self, path):
        """Yield the names in `path` one by one."""
        for name, _ in self.entries(path):
            yield name

    def free(self, path="."):
        """Bytes free on the filesystem that holds `path` (what a new block may take), or None."""
        try:
            s = os.statvfs(path)  # (bsize, frsize, blocks, bfree, bavail, ...) on every port
            return s[4] * s[1]
        except (OSError, AttributeError):
            return None


REAL = RealFS()


MAX_JSON = 4096  # bytes: the cap of the small state files (faults, energy, ocpp.json, ...)


def read_json(path, fs=None, cap=MAX_JSON):
    """The JSON object at `path`, or None when there is no file. Raises ValueError naming what
    is wrong (never an empty message) when it is corrupt: more than `cap` bytes (refused before
    it is read), not UTF-8, not strict JSON, nested too deeply, not an object (every state file
    is one; `null` is no document either). See drivers/jsonfile.py."""
    from drivers import jsonfile  # the one capped reader (drivers/ may not import firmware/);
    # imported on first use: what only appends to a journal does not carry the reader's code
    fs = fs or REAL
    if not fs.exists(path):
        return None
    return jsonfile.read_json(path, cap, fs)


def write_json(path, doc, fs=None):
    fs = fs or REAL
    tmp = path + ".tmp"
    f = fs.open(tmp, "w")
    try:
        if holds_many(doc):  # a long list (firmware.Many): an element at a time
            for text, x in steps(doc):
                f.write(text)
                if x is not NOTHING:
                    f.write(json.dumps(x))
        else:
            f.write(json.dumps(doc))
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync()
