"""MicroPython's ticks arithmetic, the one home of it: period 2**30 on every clock here (the
ESP32's `ticks_ms`). Done with masks, never with a number of 2**30 or more, so it stays in small
ints and allocates nothing on the 32-bit ESP32; the unix port's own ticks wrap elsewhere, which is
why the virtual clocks use these and not `time.ticks_diff`."""

MASK = 0x3FFFFFFF  # the period - 1
_HALF = 0x20000000


def diff(a, b):
    """a - b in ticks, signed, as `time.ticks_diff(a, b)` on the ESP32."""
    return ((a - b + _HALF) & MASK) - _HALF


def add(a, ms):
    return (a + ms) & MASK
