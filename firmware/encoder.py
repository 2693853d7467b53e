"""JSON made without a large block of heap: a fragmented heap (hours of work, 30 KB free in a
96 KB one) has no 1.2 KB piece for a MeterValues or a StopTransaction with all its measurands,
and a record or a frame that can not be made stalls the link or, on the flash, restarts the
board. One Encoder, made at boot, serves the WebSocket and the outbox: a frame is written from it
across awaits (`busy`), a record is made or read in one synchronous step, which uses its own
strings instead while the frame is on its way.

A list longer than the buffer (GetConfiguration of every key, a composite schedule of many
periods) goes in a `Many`: its items are encoded one at a time, twice (once to count the bytes a
WebSocket header needs, once to send them), so no answer the charger advertises needs a block of
its size."""
import io
import json

from firmware import NOTHING, dumps, holds_many, steps

try:  # (the one import of crc32: the journal and the session records take it from here)
    from binascii import crc32
except ImportError:  # pragma: no cover - every supported runtime has binascii.crc32
    from zlib import crc32  # type: ignore

BYTES = 1536  # an encoder's buffer: the longest message or record (every measurand's MeterValues: 1.2 KB)
_BLANKS = b" " * 64
_SEP = (",", ":")


def utf8(text):
    """The UTF-8 bytes of `text` without a copy where the runtime allows it (MicroPython: a str
    is its own buffer; a 1 KB copy is what a fragmented heap lacks), else encoded (CPython)."""
    try:
        return memoryview(text)
    except TypeError:
        return text.encode()


class Encoder:
    """On MicroPython json.dump fills a BytesIO preallocated at boot (`size` bytes; it grows
    only for a bigger document) and the text is read back in PIECE-byte pieces through a small
    buffer; a text read from a file comes in the same way and json.load decodes it from the
    buffer. CPython (the tests) encodes with json.dumps and reads whole."""

    PIECE = 128

    def __init__(self, size=BYTES):
        try:
            self._io = io.BytesIO(size)  # MicroPython: preallocated to `size` bytes
            self._piece = memoryview(bytearray(self.PIECE))
        except TypeError:  # CPython: BytesIO takes no size
            self._io = None
        self.n = 0
        self.busy = False  # a WebSocket frame is being written from it (its text must stay)
        self._top = 0  # the end of the longest text the buffer ever held
        self._text = b""
        self._obj = None  # what load() was given, when it holds a Many

    def load(self, obj):
        """Encode `obj` (compact separators); returns its length in bytes (also `n`)."""
        b = self._io
        if b is None:
            self._text = dumps(obj).encode()
            self.n = len(self._text)
            return self.n
        if holds_many(obj):
            self._obj = obj
            n = 0
            for k in self._parts(obj):
                n += k
            self.n = n
            return n
        self._obj = None
        b.seek(0)
        json.dump(obj, b, separators=_SEP)
        self.n = b.tell()
        if self.n > self._top:
            self._top = self.n
        return self.n

    def _parts(self, v):
        """Put `v`'s JSON (steps()) at the start of the buffer a step at a time, yielding each
        step's length."""
        b = self._io
        for text, x in steps(v):
            b.seek(0)
            b.write(text)
            if x is not NOTHING:
                json.dump(x, b, separators=_SEP)
            yield self._mark(b.tell())

    def release(self):
        """Forget what load() was given: a long answer's objects (GetConfiguration of every key,
        5 KB of dicts) are not kept alive until the next message."""
        self._obj = None

    def _mark(self, k):
        if k > self._top:  # read() blanks the buffer up to the longest text it held
            self._top = k
        return k

    def read(self, f, n):
        """Take the next `n` bytes of file `f` as the text; returns their CRC-32, or None when
        the file ends first."""
        self._obj = None
        b = self._io
        if b is None:
            t = f.read(n)
            if len(t) != n:
                return None
            self._text, self.n = t, n
            return crc32(t) & 0xFFFFFFFF
        b.seek(0)
        piece = self._piece
        crc = 0
        left = n
        while left > 0:
            k = f.readinto(piece[:left] if left < self.PIECE else piece)
            if not k:
                break
            crc = crc32(piece[:k], crc)
            b.write(piece[:k])
            left -= k
        end = b.tell()
        while b.tell() < self._top:  # json.load wants nothing but blanks after the value
            gap = self._top - b.tell()
            b.write(_BLANKS[:gap] if gap < 64 else _BLANKS)
        if end > self._top:
            self._top = end
        self.n = n
        return None if left else crc & 0xFFFFFFFF

    def value(self):
        """The JSON value of the text read last (read()); ValueError when it is not JSON."""
        b = self._io
        if b is None:
            return json.loads(self._text)
        b.seek(0)
        return json.load(b)

    def pieces(self):
        """The text of the last load() in pieces (each valid until the next)."""
        b = self._io
        if b is None:
            yield self._text
            return
        if self._obj is None:
            yield from self._out(self.n)
            return
        for n in self._parts(self._obj):
            yield from self._out(n)

    def _out(self, n):
        b = self._io
        b.seek(0)
        piece = self._piece
        while n > 0:
            k = b.readinto(piece[:n] if n < self.PIECE else piece)
            if not k:
                raise OSError("encoder: the text ended early")
            yield piece[:k]
            n -= k
