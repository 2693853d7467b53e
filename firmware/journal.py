"""Append-only logs of records that survive a power cut at any instant, never rewritten.

- Framed records, shared by the session journal and the OCPP outbox: one record per line,
      CCCCCCCC LLLL BODY\\n
  C = CRC-32 of BODY (8 hex digits), L = its length in bytes (4 hex digits). The length lets a
  reader take a record in two bounded reads; the CRC and the final newline prove it complete.
  `frame(body)` makes the line, `read_framed(f, off)` reads one back.
- `Appender`: appends lines so that a line torn by a power cut never swallows the next one:
  until a line is known complete, the next one starts with b"!\\n", which ends the torn line
  without completing it. Readers skip the torn line and go on; nothing is ever rewritten to
  repair it. A record's header, body and newline are three writes: the body is written from the
  JSON text itself, never copied (a 1 KB copy is what a fragmented heap lacks).
- `Journal`: JSON records as framed lines in two generations, `PATH` (current) and `PATH.1`
  (older). Appends go to the current one; `rotate()` renames it over the older one (one atomic
  rename), so the flash it takes is bounded by what the owner lets a generation hold, and no
  write ever grows with the number of records.
"""

from firmware import loads
from firmware import store
from firmware.encoder import crc32, utf8

MAX_BODY = 8192  # longest framed record (bytes)
_HDR = 14  # "CCCCCCCC LLLL "


def _head(crc, n):
    return ("%08x %04x " % (crc & 0xFFFFFFFF, n)).encode()


def header(body):
    """The head of the line that holds the record whose body is `body` (bytes)."""
    return _head(crc32(body), len(body))


def frame(body):
    """The whole line of the record `body` (bytes): header, body, newline."""
    return header(body) + body + b"\n"


def read_framed(f, off, enc=None):
    """Read the record at byte `off` of `f` (opened "rb", positioned there). With `enc` (a
    firmware.encoder.Encoder) the body goes into its buffer and `enc` is returned for it (its
    value() decodes it); else the body is returned as a view of the bytes read.

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
            if enc is not None:  # through the encoder's buffer: no block of heap
                if enc.read(f, n) == crc and f.read(1) == b"\n":
                    return enc, _HDR + n + 1
            else:
                b = f.read(n + 1)
                if b and len(b) == n + 1 and b[n] == 10 and crc32(memoryview(b)[:n]) & 0xFFFFFFFF == crc:
                    return memoryview(b)[:n], _HDR + n + 1
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
    (a power cut, a failed write) the next append starts with b"!\\n", so that a torn line
    ends there, incomplete, and is skipped by readers instead of swallowing the next record."""

    def __init__(self, fs):
        self.fs = fs
        self.nl = False  # the last line may be torn (set from a read of the file's end at boot)

    def append_encoded(self, path, enc, n):
        """Append the record held by `enc` (firmware/encoder.py, `n` bytes): its CRC is worked
        out from the pieces, then the pieces are written."""
        crc = 0
        for p in enc.pieces():
            crc = crc32(p, crc)
        self._write(path, _head(crc, n), enc.pieces())

    def append(self, path, body):
        """Append one record whose body is `body` (bytes, or a text's `utf8()`)."""
        self._write(path, header(body), (body,))

    def _write(self, path, head, chunks):
        # Header, body and newline in separate writes, so that no copy of the body is made.
        # After a torn line the next append starts with b"!\n": a torn line that lacks only its
        # newline is not made whole by it (that record's put never returned: reviving it later
        # could duplicate it).
        nl = self.nl
        self.nl = True
        f = self.fs.open(path, "ab")
        try:
            f.write(b"!\n" + head if nl else head)
            for p in chunks:
                f.write(p)
            f.write(b"\n")
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
        self.fs = fs or store.REAL
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
                        rec = loads(body)
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
        self._app.append(self.path, utf8(store.dumps(record)))
        self._count += 1

    def rotate(self):
        """The current generation becomes the older one (the older one is dropped)."""
        if self.fs.exists(self.path):
            self.fs.rename(self.path, self.older)
        self._count = 0
        self._app.nl = False
