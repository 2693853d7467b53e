"""A charger on virtual time with hand-set inputs, for unit and property tests."""
from firmware import charger as chg
from firmware import settings as settings_mod
from vclock import VirtualClock

LEVEL = {"A": 12000, "B": 9000, "C": 6000, "D": 3000, "E": 0, "F": -12000, "gap": 7500}


class RigLock:
    """A socket lock as the charger sees it (the contract of drivers/lock.py): a move takes
    MOVE_MS and is confirmed unless `jammed`; `moves` counts them."""

    MOVE_MS = 350

    def __init__(self, locked=False):
        self.locked = locked  # where the pin is
        self.target = None
        self.jammed = False
        self.state = "locked" if locked else "unlocked"
        self.moves = 0
        self._done = None

    def want(self, locked, now):
        if locked == self.target and self.state != "failed":
            return
        self.target = locked
        if locked == self.locked and self.state != "failed":
            self.state = "locked" if locked else "unlocked"
            return
        self.moves += 1
        self.state = "moving"
        self._done = now + self.MOVE_MS

    def poll(self, now):
        if self._done is not None and now >= self._done:
            self._done = None
            if not self.jammed:
                self.locked = self.target
            self.state = ("locked" if self.locked else "unlocked") if self.locked == self.target else "failed"
        return self.state


class Rig:
    """Drives one Charger: `vehicle('C')`, `run(ms)`; the relay feedback follows the contactor.
    With `lock=True` a RigLock stands in for the socket lock, driven as the station drives it."""

    def __init__(self, socketed=True, phases=3, hw_max_a=32, lock=False, **settings):
        self.clock = VirtualClock(1000)
        self.settings = settings_mod.Settings(settings)
        self.c = chg.Charger(self.clock, self.settings, hw_max_a, phases, socketed)
        i = self.c.inp
        i.pp_ohms = 220 if socketed else None
        i.temp_dc = 250
        i.feedback = False
        self.welded = False
        self.rcd_works = True
        self.leak = False
        self.diode = True
        self.amps_da = None  # None: no meter; otherwise the current the car draws when closed
        self.vs = "A"
        self.events = []
        self.lock = (lock if isinstance(lock, RigLock) else RigLock()) if lock else None
        self._lock_out = None

    @property
    def now(self):
        return self.clock.ticks_ms()

    def vehicle(self, state):
        self.vs = state

    def _inputs(self):
        i = self.c.inp
        c = self.c
        i.high_mv = LEVEL[self.vs]
        pwm = c.duty not in (0, 65535)
        if c.duty == 0:
            i.high_mv = -12000
        if pwm and self.vs in ("B", "C", "D", "gap") and not self.diode:
            i.low_mv = -i.high_mv
        else:
            i.low_mv = -12000
        # the RCD trips while leaking or while its test input is driven
        active = self.rcd_works and (self.leak or c.rcd_test)
        i.rcd_input = active
        if active:
            i.rcd_tripped = True
        if c.rcd_clear:
            c.rcd_clear = False
            if not active:
                i.rcd_tripped = False
        i.feedback = c.contactor or self.welded
        if self.amps_da is not None:
            i.amps_da = self.amps_da if c.contactor else 0
        if self.lock is not None:
            i.lock = self.lock.poll(self.now)

    def _lock_outputs(self):
        lk = self.lock
        c = self.c
        if lk is None or c.lock_wanted is None:
            return
        if c.lock_wanted != self._lock_out or c.lock_retry:
            lk.want(c.lock_wanted, self.now)
            self._lock_out = c.lock_wanted
            c.lock_retry = False
            c.inp.lock = lk.state

    def step(self):
        self.clock.advance(10)
        self._inputs()
        self.c.update(self.now)
        self._lock_outputs()
        while True:
            e = self.c.events.take()
            if e is None:
                break
            self.events.append(e[:3])

    def run(self, ms):
        for _ in range(ms // 10):
            self.step()

    def until(self, pred, ms=60000):
        for _ in range(ms // 10):
            if pred():
                return True
            self.step()
        return pred()

    def charging(self):
        """Plug, get ready and wait for the contactor: a car charging at the offer."""
        self.vehicle("B")
        self.run(1000)
        self.vehicle("C")
        assert self.until(lambda: self.c.contactor, 3000), self.c.faults.codes()

    def kinds(self, kind):
        return [e for e in self.events if e[0] == kind]
