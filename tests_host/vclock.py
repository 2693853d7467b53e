"""The clock of tests and the simulator: it only moves when told to, with the board's wrap
arithmetic (drivers/ticks.py), and stands in for firmware/clock.py's SystemClock."""
from drivers import ticks


class VirtualClock:
    """A clock that only moves when told to; same wrap arithmetic as the board.

    `await sleep_ms(ms)` parks the task until `advance()` or `set()` moved the clock past its
    deadline, so tasks that wait (the OCPP link) follow virtual time too.
    """

    def __init__(self, start_ms=0):
        self.now = start_ms & ticks.MASK
        self._sleepers = []  # [deadline, asyncio.Event]

    def ticks_ms(self):
        return self.now

    def advance(self, ms):
        self.now = (self.now + ms) & ticks.MASK
        if self._sleepers:
            self._wake()

    def set(self, ms):
        """Restart the clock (a reboot): every sleeper is woken."""
        self.now = ms & ticks.MASK
        for s in self._sleepers:
            s[1].set()
        self._sleepers = []

    def _wake(self):
        keep = []
        for s in self._sleepers:
            if ticks.diff(self.now, s[0]) >= 0:
                s[1].set()
            else:
                keep.append(s)
        self._sleepers = keep

    async def sleep_ms(self, ms):
        import asyncio  # on first use, as the firmware's: counted where the board would count it

        if ms <= 0:
            await asyncio.sleep(0)  # only lets the other tasks run
            return
        ev = asyncio.Event()
        self._sleepers.append([ticks.add(self.now, ms), ev])
        await ev.wait()

    ticks_diff = staticmethod(ticks.diff)
    ticks_add = staticmethod(ticks.add)
