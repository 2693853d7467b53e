"""Residual-current detector (RDC-DD 6 mA DC or type B) behind rcd.pin.

Trips `leak_ms` (20) after the leakage reaches `TRIP_MA` (6 mA), or `test_ms` (30) after its
test input (rcd.test_pin, active high) goes active; the output is active while tripped and
releases as soon as neither cause is present. `broken`: never trips (self-test fails and
leakage goes undetected). The World drives rcd.pin from `active()`.
"""

TRIP_MA = 6


class Rcd:
    def __init__(self, cfg):
        self.pin = cfg["pin"]
        self.active_high = cfg.get("active_high", True)
        self.test_pin = cfg.get("test_pin")
        self.test_active_high = cfg.get("test_active_high", True)
        self.leak_ms = 20
        self.test_ms = 30
        self.leak_ma = 0
        self.testing = False
        self.broken = False
        self.tripped = False
        self.trips = 0
        self._leak_at = None     # trip due by leakage
        self._test_at = None     # trip due by the test input
        self._leak_on = False    # leakage present long enough
        self._test_on = False

    def level(self):
        """Level on rcd.pin."""
        return 1 if self.tripped == bool(self.active_high) else 0

    def test_active_by(self, level):
        return (level == 1) == bool(self.test_active_high)

    def set_leak(self, ma, t):
        was = self.leak_ma >= TRIP_MA
        self.leak_ma = ma
        if ma >= TRIP_MA:
            if not was:
                self._leak_at = t + self.leak_ms
        else:
            self._leak_at = None
            self._leak_on = False
        self._update()

    def set_test(self, on, t):
        if on == self.testing:
            return
        self.testing = on
        if on:
            self._test_at = t + self.test_ms
        else:
            self._test_at = None
            self._test_on = False
        self._update()

    def set_broken(self, broken, t):
        self.broken = broken
        if not broken:  # a repaired detector starts timing its causes afresh
            self._leak_on = self._test_on = False
            self._leak_at = t + self.leak_ms if self.leak_ma >= TRIP_MA else None
            self._test_at = t + self.test_ms if self.testing else None
        self._update()

    def next_due(self):
        a = self._leak_at
        b = self._test_at
        if a is None:
            return b
        if b is None or a < b:
            return a
        return b

    def step(self, t):
        d = self._leak_at
        if d is not None and t >= d:
            self._leak_at = None
            self._leak_on = True
        d = self._test_at
        if d is not None and t >= d:
            self._test_at = None
            self._test_on = True
        self._update()

    def _update(self):
        tr = (self._leak_on or self._test_on) and not self.broken
        if tr and not self.tripped:
            self.trips += 1
        self.tripped = tr
