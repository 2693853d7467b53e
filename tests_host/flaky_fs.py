"""A filesystem whose power fails at a chosen write: for the power-cut tests of the store and
the outbox (everything that goes to flash goes through an `fs` object)."""
import os

from firmware.ocpp import outbox


class PowerCut(Exception):
    pass


class FlakyFS(outbox.FS):
    """The real filesystem, but the power fails at write operation number `cut_at`.

    Write operations are file writes, renames and removals. mode "torn": a cut write leaves
    half of its bytes, a cut rename/removal did not happen. mode "after": the operation
    completed, then the power failed (before the caller learnt of it).
    """

    def __init__(self, cut_at=None, mode="torn"):
        self.cut_at = cut_at
        self.mode = mode
        self.ops = 0
        self.bytes = 0

    def _tick(self):
        self.ops += 1
        return self.cut_at is not None and self.ops == self.cut_at

    def open(self, path, mode):
        f = open(path, mode)
        if "r" in mode:
            return f
        fs = self

        class W:
            # MicroPython's files have no `closed`: W keeps its own (a cut write has closed f)
            closed = False

            def write(self, data):
                if fs._tick():
                    f.write(data if fs.mode == "after" else data[: len(data) // 2])
                    f.close()
                    self.closed = True
                    raise PowerCut()
                fs.bytes += len(data)
                return f.write(data)

            def close(self):
                if not self.closed:
                    f.close()
                    self.closed = True

        return W()

    def rename(self, a, b):
        if self._tick():
            if self.mode == "after":
                os.rename(a, b)
            raise PowerCut()
        os.rename(a, b)

    def remove(self, path):
        if self._tick():
            if self.mode == "after":
                os.remove(path)
            raise PowerCut()
        os.remove(path)
