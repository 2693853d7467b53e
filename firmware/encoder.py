"""JSON made without a large block of heap: a fragmented heap (hours of work, 30 KB free in a
96 KB one) has no 1.2 KB piece for a MeterValues or a StopTransaction with all its measurands,
and a record or a frame that can not be made stalls the link or, on the flash, restarts the
board. One Encoder per user (the outbox, the WebSocket), made at boot."""
import io
import json

from firmware import dumps


class Encoder:
    """On MicroPython json.dump fills a BytesIO preallocated at boot (`size` bytes; it grows
    only for a bigger document) and the text is read back in PIECE-byte pieces through a small
    buffer; CPython (the tests) encodes with json.dumps."""

    PIECE = 256

    def __init__(self, size):
        try:
            self._io = io.BytesIO(size)  # MicroPython: preallocated to `size` bytes
            self._piece = memoryview(bytearray(self.PIECE))
        except TypeError:  # CPython: BytesIO takes no size
            self._io = None
        self.n = 0
        self._text = b""

    def load(self, obj):
        """Encode `obj` (compact separators); returns its length in bytes (also `n`)."""
        b = self._io
        if b is None:
            self._text = dumps(obj).encode()
            self.n = len(self._text)
            return self.n
        b.seek(0)
        json.dump(obj, b, separators=(",", ":"))
        self.n = b.tell()
        return self.n

    def pieces(self):
        """The text of the last load() in pieces (each valid until the next)."""
        b = self._io
        if b is None:
            yield self._text
            return
        b.seek(0)
        left = self.n
        piece = self._piece
        while left > 0:
            k = b.readinto(piece[:left] if left < self.PIECE else piece)
            if not k:
                raise OSError("encoder: the text ended early")
            yield piece[:k]
            left -= k
