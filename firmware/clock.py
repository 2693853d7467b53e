"""The clock handed to every part that needs time.

`SystemClock` is the board's millisecond tick (tests and the simulator hand in
tests_host/vclock.py's VirtualClock instead). It exposes the wrap-aware helpers so no part calls
`time` directly. Tick values wrap at 2**30 like MicroPython's `ticks_ms` on the ESP32
(drivers/ticks.py).
"""
import time

from drivers import ticks

if hasattr(time, "ticks_ms"):  # MicroPython: the port's own ticks
    _ticks_ms = time.ticks_ms
    ticks_us = time.ticks_us  # type: ignore[attr-defined]
    _tdiff = time.ticks_diff  # type: ignore[attr-defined]
    _tadd = time.ticks_add  # type: ignore[attr-defined]
else:  # CPython: the same wrap-around ticks from the monotonic clock
    def _ticks_ms():
        return int(time.monotonic() * 1000) & ticks.MASK

    def ticks_us():
        return int(time.monotonic() * 1000000) & ticks.MASK

    _tdiff = ticks.diff
    _tadd = ticks.add


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
