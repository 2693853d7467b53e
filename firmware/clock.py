"""Clocks handed to every part that needs time.

`SystemClock` is the board's millisecond tick; `VirtualClock` is moved by tests and the simulator.
Both expose the wrap-aware helpers so no part calls `time` directly.
"""
import time

_PERIOD = 1 << 30  # MicroPython's ticks period on every port (TICKS_MAX + 1)
_HALF = _PERIOD >> 1


def _diff(a, b):
    return ((a - b + _HALF) % _PERIOD) - _HALF


def _add(a, ms):
    return (a + ms) % _PERIOD


if hasattr(time, "ticks_ms"):
    _ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us  # type: ignore[attr-defined]
else:  # CPython: the same wrap-around ticks from the monotonic clock
    def _ticks_ms():
        return int(time.monotonic() * 1000) % _PERIOD

    def ticks_us():
        return int(time.monotonic() * 1000000) % _PERIOD


class SystemClock:
    def ticks_ms(self):
        return _ticks_ms()

    def ticks_diff(self, a, b):
        return _diff(a, b)

    def ticks_add(self, a, ms):
        return _add(a, ms)


class VirtualClock:
    """A clock that only moves when told to; same wrap arithmetic as the board."""

    def __init__(self, start_ms=0):
        self.now = start_ms % _PERIOD

    def ticks_ms(self):
        return self.now

    def advance(self, ms):
        self.now = (self.now + ms) % _PERIOD

    def set(self, ms):
        self.now = ms % _PERIOD

    def ticks_diff(self, a, b):
        return _diff(a, b)

    def ticks_add(self, a, ms):
        return _add(a, ms)
