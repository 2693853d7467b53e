"""Clock arithmetic wraps like MicroPython's ticks."""
from firmware.clock import SystemClock
from vclock import VirtualClock

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


def test_virtual_sleep_waits_for_virtual_time():
    import asyncio

    c = VirtualClock(0)
    woke = []

    async def sleeper(name, ms):
        await c.sleep_ms(ms)
        woke.append((name, c.ticks_ms()))

    async def main():
        asyncio.create_task(sleeper("a", 100))
        asyncio.create_task(sleeper("b", 30))
        for _ in range(20):
            await asyncio.sleep(0)
            c.advance(10)
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    asyncio.run(main())
    assert woke == [("b", 30), ("a", 100)]


def test_virtual_clock_set_wakes_every_sleeper():
    import asyncio

    c = VirtualClock(500)
    woke = []

    async def main():
        async def s():
            await c.sleep_ms(10000)
            woke.append(c.ticks_ms())

        t = asyncio.create_task(s())
        await asyncio.sleep(0)
        c.set(0)
        await t

    asyncio.run(main())
    assert woke == [0]
