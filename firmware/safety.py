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

# OCPP 1.6 ChargePointErrorCode for each fault (StatusNotification.errorCode).
OCPP_ERROR = {
    RCD_TRIP: "GroundFailure",
    RCD_SELFTEST: "GroundFailure",
    WELDED: "PowerSwitchFailure",
    CONTACTOR: "PowerSwitchFailure",
    DIODE: "EVCommunicationError",
    PILOT: "EVCommunicationError",
    PILOT_SHORT: "EVCommunicationError",
    OVERCURRENT: "OverCurrentFailure",
    OVERTEMP: "HighTemperature",
    TEMP_SENSOR: "OtherError",
    CABLE: "OtherError",
    CONFIG: "InternalError",
    METER: "PowerMeterFailure",
    LOCK: "ConnectorLockFailure",
}


class _Fault:
    def __init__(self):
        self.active = False
        self.seen_at = 0  # last tick the condition was present
        self.count = 0  # raises while this vehicle is connected
        self.stuck = False  # retries used up: waits for unplug


class Faults:
    def __init__(self, clock, emit, retry_ms=30000, max_retries=3):
        self._clock = clock
        self._emit = emit  # emit(kind, a, b): the charger's event outbox
        self.retry_ms = retry_ms
        self.max_retries = max_retries
        self._f = {}
        for code in OCPP_ERROR:
            self._f[code] = _Fault()
        self.count_active = 0

    def active(self, code):
        return self._f[code].active

    def any(self):
        return self.count_active > 0

    def codes(self):
        return [c for c in self._f if self._f[c].active]

    def report(self, code, present, now, vehicle=True):
        """Report a condition every tick. Raises the fault at once; clears it after the pause."""
        f = self._f[code]
        if present:
            f.seen_at = now
            if not f.active:
                self._raise(f, code, vehicle)
            return
        if not f.active or f.stuck or code in PERMANENT:
            return
        if self._clock.ticks_diff(now, f.seen_at) >= self.retry_ms:
            self._clear(f, code)

    def trip(self, code, now, vehicle=True):
        """Raise a fault whose condition was an event (a trip, a weld found), not a level."""
        self.report(code, True, now, vehicle)

    def _raise(self, f, code, vehicle):
        f.active = True
        self.count_active += 1
        if vehicle:
            f.count += 1
            if f.count > self.max_retries:
                f.stuck = True
        self._emit("fault", code, True)

    def _clear(self, f, code):
        f.active = False
        self.count_active -= 1
        self._emit("fault", code, False)

    def vehicle_left(self, now):
        """The vehicle was unplugged: retry counts start afresh, stuck faults may clear."""
        for code in self._f:
            f = self._f[code]
            f.count = 0
            if f.stuck:
                f.stuck = False
                f.seen_at = now  # a full pause still applies

    def clear_permanent(self, code):
        """A person cleared a latched fault (e.g. after replacing a welded contactor)."""
        f = self._f[code]
        if f.active:
            f.stuck = False
            self._clear(f, code)
        f.count = 0
