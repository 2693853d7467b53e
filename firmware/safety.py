"""Fault monitor: which faults are active, when they may retry, which ones latch.

A fault is raised the moment its condition is seen (the contactor is opened by the charger in
the same tick; the RCD interrupt has opened it even earlier). A transient fault clears only
after its condition has been gone for the retry pause (at least 30 s); a vehicle that keeps
causing the same fault gets `max_retries` retries, then the fault stays until the vehicle is
unplugged. Permanent faults (a welded contactor, an invalid configuration) stay until a person
clears them.
"""

RCD_TRIP = "rcd-trip"
RCD_SELFTEST = "rcd-selftest"
WELDED = "welded"
CONTACTOR = "contactor"
DIODE = "diode"
PILOT = "pilot"
PILOT_SHORT = "pilot-short"
OVERCURRENT = "overcurrent"
OVERTEMP = "over-temperature"
TEMP_SENSOR = "temp-sensor"
CABLE = "cable"
CONFIG = "config"
METER = "meter"
LOCK = "lock"  # the socket lock did not confirm its position (firmware/charger.py: _lock)

PERMANENT = (WELDED, CONFIG)

# Every fault code, in a fixed order (the persistent faults' file keeps their index). What each
# means to OCPP (its ChargePointErrorCode) is the link's business: firmware/ocpp/status.py.
CODES = (RCD_TRIP, RCD_SELFTEST, WELDED, CONTACTOR, DIODE, PILOT, PILOT_SHORT, OVERCURRENT, OVERTEMP,
         TEMP_SENSOR, CABLE, CONFIG, METER, LOCK)
_INDEX = {}
for _i in range(len(CODES)):
    _INDEX[CODES[_i]] = _i


class Faults:
    """The state of every fault in four small arrays indexed by code (CODES), not an object per
    fault: it is read every control tick and kept small (a 14-object version took 1.8 KB)."""

    def __init__(self, clock, emit, retry_ms=30000, max_retries=3):
        self._clock = clock
        self._emit = emit  # emit(kind, a, b): the charger's event outbox
        self.retry_ms = retry_ms
        self.max_retries = max_retries
        n = len(CODES)
        self._active = bytearray(n)
        self._stuck = bytearray(n)  # retries used up: waits for unplug
        self._count = bytearray(n)  # raises while this vehicle is connected
        self._seen = [0] * n  # last tick the condition was present
        self.count_active = 0

    def active(self, code):
        return self._active[_INDEX[code]] != 0

    def any(self):
        return self.count_active > 0

    def codes(self):
        return [c for c in CODES if self._active[_INDEX[c]]]

    def report(self, code, present, now, vehicle=True):
        """Report a condition every tick. Raises the fault at once; clears it after the pause."""
        i = _INDEX[code]
        if present:
            self._seen[i] = now
            if not self._active[i]:
                self._raise(i, code, vehicle)
            return
        if not self._active[i] or self._stuck[i] or code in PERMANENT:
            return
        if self._clock.ticks_diff(now, self._seen[i]) >= self.retry_ms:
            self._clear(i, code)

    def trip(self, code, now, vehicle=True):
        """Raise a fault whose condition was an event (a trip, a weld found), not a level."""
        self.report(code, True, now, vehicle)

    def _raise(self, i, code, vehicle):
        self._active[i] = 1
        self.count_active += 1
        if vehicle:
            if self._count[i] < 255:
                self._count[i] += 1
            if self._count[i] > self.max_retries:
                self._stuck[i] = 1
        self._emit("fault", code, True)

    def _clear(self, i, code):
        self._active[i] = 0
        self.count_active -= 1
        self._emit("fault", code, False)

    def vehicle_left(self, now):
        """The vehicle was unplugged: retry counts start afresh, stuck faults may clear."""
        for i in range(len(CODES)):
            self._count[i] = 0
            if self._stuck[i]:
                self._stuck[i] = 0
                self._seen[i] = now  # a full pause still applies

    def clear_permanent(self, code):
        """A person cleared a latched fault (e.g. after replacing a welded contactor)."""
        i = _INDEX[code]
        if self._active[i]:
            self._stuck[i] = 0
            self._clear(i, code)
        self._count[i] = 0
