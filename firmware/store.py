"""Durable storage that survives a power cut at any instant.

- `write_json` / `read_json`: a whole small document, replaced atomically (write a temporary
  file, then rename it over the old one; rename is atomic on LittleFS and POSIX); read through
  the one capped, strict reader (drivers/jsonfile.py), so no file on flash can make a boot raise.
- `Journal`: an append-only file of records, one line each: 8 hex digits of CRC-32, a space,
  the JSON record. A line cut short by a power failure fails its CRC and ends the readable part;
  the next append first truncates the torn tail (by rewriting), so nothing after it is lost.

All file access goes through an `fs` object (default: the real filesystem), which lets tests
cut the power at every single write.
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
        f.write(json.dumps(doc))
    finally:
        f.close()
    fs.rename(tmp, path)
    fs.sync()


def _line(record):
    body = json.dumps(record)
    return "%08x %s\n" % (crc32(body.encode()) & 0xFFFFFFFF, body)


def _parse(line):
    """The record on one journal line, or None when the line is torn or corrupt."""
    if len(line) < 11 or line[8] != " " or line[-1] != "\n":
        return None
    body = line[9:-1]
    try:
        if int(line[:8], 16) != crc32(body.encode()) & 0xFFFFFFFF:
            return None
        return json.loads(body)
    except ValueError:
        return None


class Journal:
    """Append-only record log. Reading streams line by line; RAM use does not grow with length."""

    def __init__(self, path, fs=None):
        self.path = path
        self.fs = fs or REAL
        self._checked = False

    def records(self):
        """Yield every intact record in order; stops at the first torn line."""
        if not self.fs.exists(self.path):
            return
        f = self.fs.open(self.path, "r")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                rec = _parse(line)
                if rec is None:
                    return
                yield rec
        finally:
            f.close()

    def _repair(self):
        # Drop a torn tail left by a power cut so new records are not hidden behind it.
        if not self.fs.exists(self.path):
            return
        good = 0
        torn = False
        f = self.fs.open(self.path, "r")
        try:
            while True:
                line = f.readline()
                if not line:
                    break
                if _parse(line) is None:
                    torn = True
                    break
                good += 1
        finally:
            f.close()
        if torn:
            self.rewrite(self._first(good))

    def _first(self, n):
        i = 0
        for rec in self.records():
            if i >= n:
                return
            i += 1
            yield rec

    def append(self, record):
        if not self._checked:
            self._repair()
            self._checked = True
        f = self.fs.open(self.path, "a")
        try:
            f.write(_line(record))
        finally:
            f.close()
        self.fs.sync()

    def rewrite(self, records):
        """Replace the journal with `records` (an iterable, consumed while writing), atomically."""
        tmp = self.path + ".tmp"
        f = self.fs.open(tmp, "w")
        try:
            for rec in records:
                f.write(_line(rec))
        finally:
            f.close()
        self.fs.rename(tmp, self.path)
        self.fs.sync()
