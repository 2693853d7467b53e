"""Clock arithmetic wraps like MicroPython's ticks."""
from firmware.clock import SystemClock, VirtualClock

PERIOD = 1 << 30


def test_virtual_clock_wraps_like_ticks_ms():
    c = VirtualClock(PERIOD - 5)
    start = c.ticks_ms()
    c.advance(10)
    assert c.ticks_ms() == 5
    assert c.ticks_diff(c.ticks_ms(), start) == 10
    assert c.ticks_diff(start, c.ticks_ms()) == -10
    assert c.ticks_add(PERIOD - 1, 2) == 1


def test_system_clock_moves_forward():
    c = SystemClock()
    a = c.ticks_ms()
    b = c.ticks_add(a, 100)
    assert c.ticks_diff(b, a) == 100
    assert 0 <= a < PERIOD
