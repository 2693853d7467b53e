"""Clocks handed to every part that needs time.

`SystemClock` is the board's millisecond tick; `VirtualClock` is moved by tests and the simulator.
Both expose the wrap-aware helpers so no part calls `time` directly. Tick values wrap at 2**30
like MicroPython's `ticks_ms`; the arithmetic uses masks, never a number of 2**30 or more, so it
stays in small ints (no heap allocation) on the 32-bit ESP32.
"""
import time

_MASK = 0x3FFFFFFF  # ticks period - 1
_HALF = 0x20000000


def _diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def _add(a, ms):
    return (a + ms) & _MASK


if hasattr(time, "ticks_ms"):  # MicroPython: the port's own ticks
    _ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us  # type: ignore[attr-defined]
    _tdiff = time.ticks_diff  # type: ignore[attr-defined]
    _tadd = time.ticks_add  # type: ignore[attr-defined]
else:  # CPython: the same wrap-around ticks from the monotonic clock
    def _ticks_ms():
        return int(time.monotonic() * 1000) & _MASK

    def ticks_us():
        return int(time.monotonic() * 1000000) & _MASK

    _tdiff = _diff
    _tadd = _add


def _asyncio():
    import asyncio  # only the tasks that wait need it; the control tick never does

    return asyncio


class SystemClock:
    async def sleep_ms(self, ms):
        """Wait `ms` milliseconds (the board's asyncio)."""
        await _asyncio().sleep(ms / 1000)

    def ticks_ms(self):
        return _ticks_ms()

    def ticks_diff(self, a, b):
        return _tdiff(a, b)

    def ticks_add(self, a, ms):
        return _tadd(a, ms)


class VirtualClock:
    """A clock that only moves when told to; same wrap arithmetic as the board.

    `await sleep_ms(ms)` parks the task until `advance()` or `set()` moved the clock past its
    deadline, so tasks that wait (the OCPP link) follow virtual time too.
    """

    def __init__(self, start_ms=0):
        self.now = start_ms & _MASK
        self._sleepers = []  # [deadline, asyncio.Event]

    def ticks_ms(self):
        return self.now

    def advance(self, ms):
        self.now = (self.now + ms) & _MASK
        if self._sleepers:
            self._wake()

    def set(self, ms):
        """Restart the clock (a reboot): every sleeper is woken."""
        self.now = ms & _MASK
        for s in self._sleepers:
            s[1].set()
        self._sleepers = []

    def _wake(self):
        keep = []
        for s in self._sleepers:
            if _diff(self.now, s[0]) >= 0:
                s[1].set()
            else:
                keep.append(s)
        self._sleepers = keep

    async def sleep_ms(self, ms):
        aio = _asyncio()
        if ms <= 0:
            await aio.sleep(0)  # only lets the other tasks run
            return
        ev = aio.Event()
        self._sleepers.append([_add(self.now, ms), ev])
        await ev.wait()

    def ticks_diff(self, a, b):
        return _diff(a, b)

    def ticks_add(self, a, ms):
        return _add(a, ms)
