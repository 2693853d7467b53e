"""Meter readings -> the station's lifetime energy register, power and per-phase values.

The register (Wh) is what sessions and the back end bill from. It never goes backwards and
survives reboots: it is kept as `register = base_register + (meter_wh - base_meter)`, with the
base pair saved atomically (`energy.json`) every `save_wh` and whenever a session ends. Energy
the meter counted while the station was off (it keeps its own register) is therefore not lost,
and a meter that is replaced or reset to a lower count does not make the register go back.

Every new reading is checked before it is believed:
- energy that goes backwards, or that grew more than the connected power could deliver in the
  time since the last believed reading (plus RESOLUTION_WH), is rejected;
- currents above what the station can carry are rejected.
Rejections are counted by kind. A meter that keeps failing or keeps answering nonsense for
`max_failures` refreshes in a row is reported as failed (the charger's PowerMeterFailure).
A steady new level after `REBASE_AFTER` consistent readings (a replaced meter) is taken as a
new base without adding the jump to the register.

A station without a meter has `register_wh` None: sessions then report 0 Wh and are marked
unmetered; the offer (Current.Offered) is the only measurand.
"""

from firmware import store

ENERGY_FILE = "energy.json"
REBASE_AFTER = 5
RESOLUTION_WH = 10  # the coarsest energy step of the supported meters (0.01 kWh)
_ACTIVE_MA = 1000  # a phase drawing more than 1 A counts as used by the car
_NOMINAL_V = 230


def _wh(v):
    """An energy count as this module writes it: an int >= 0 (a float such as NaN or inf never)."""
    return type(v) is int and v >= 0


class Metering:
    def __init__(self, meter, clock, path, hw_max_a, phases, max_failures=3, save_wh=100, fs=None):
        self.meter = meter
        self.clock = clock
        self.path = path
        self.fs = fs
        self.max_failures = max_failures
        self.save_wh = save_wh
        # The most the connected installation could deliver, with 10 % voltage tolerance.
        self.max_power_w = hw_max_a * phases * _NOMINAL_V * 11 // 10
        self.max_ma = hw_max_a * 1000 * 3 // 2  # a current beyond this is not believed
        self.register_wh = None
        self.power_w = 0
        self.amps_ma = [0, 0, 0]
        self.volts_dv = [0, 0, 0]
        self.phases_used = 0  # bit mask: 1 = L1, 2 = L2, 4 = L3
        self.valid = False
        self.updated_ms = None  # tick of the last believed reading
        self.seen = False  # a reading was believed since boot
        self.failed = False
        self.rejected = {"backwards": 0, "jump": 0, "current": 0, "rebased": 0}
        self._seen = 0  # meter.readings already looked at
        self._last_wh = None  # last believed meter reading
        self._last_at = 0
        self._bad_in_row = 0  # rejected readings in a row
        self._same_odd = 0  # rejected readings in a row at one steady level
        self._odd_wh = None
        self._base_reg = 0
        self._base_meter = None
        self._saved_reg = None
        self.measures_current = meter is not None and getattr(meter, "measures_current", True)
        self._load()

    # ---- persistence ----

    def _load(self):
        try:
            doc = store.read_json(self.path, self.fs)
        except ValueError:
            doc = None  # corrupt: the meter's own register still has the energy
        if doc and not (_wh(doc.get("register_wh", 0)) and (doc.get("meter_wh") is None or _wh(doc.get("meter_wh")))):
            doc = None  # a count that is no count (NaN, 1e999, negative, text) is as corrupt
        if doc:
            self._base_reg = doc.get("register_wh", 0)
            self._base_meter = doc.get("meter_wh")
            self.register_wh = self._base_reg
            self._saved_reg = self._base_reg

    def save(self, write=True):
        """Write the base pair (atomic). Called by the station's slow task, never per tick. The
        next save is due save_wh later whether this one is written, left out (write False: the
        flash keeps its reserve, see firmware/flash.py) or fails: the energy itself is safe in
        the meter's own register, an older base pair only means a longer way back to it."""
        if self.register_wh is None or self._last_wh is None:
            return
        self._saved_reg = self.register_wh
        if write:
            store.write_json(self.path, {"register_wh": self.register_wh, "meter_wh": self._last_wh}, self.fs)

    def due(self):
        """True when enough energy flowed since the last save."""
        return (self.register_wh is not None and self._saved_reg is not None
                and self.register_wh - self._saved_reg >= self.save_wh) or (
            self.register_wh is not None and self._saved_reg is None)

    # ---- the control task: called every tick, works only when a new reading arrived ----

    def update(self, now):
        m = self.meter
        if m is None:
            return
        if m.readings != self._seen:
            self._seen = m.readings
            if m.valid and self._plausible(m, m.energy_wh, now):
                self._bad_in_row = 0
                self._believe(m, m.energy_wh, now)
        self.failed = m.failures >= self.max_failures or self._bad_in_row >= self.max_failures
        if self.failed:
            self.valid = False

    def _plausible(self, m, wh, now):
        if self.measures_current:
            a = m.amps_ma
            if a[0] > self.max_ma or a[1] > self.max_ma or a[2] > self.max_ma:
                self._reject("current")
                return False
        last = self._last_wh
        if last is None:
            return True
        if wh < last:
            return self._odd(wh, "backwards")
        dt = self.clock.ticks_diff(now, self._last_at)
        if dt < 0:
            dt = 0
        # energy the connected power could deliver in dt, plus one step of resolution
        if wh - last > self.max_power_w * dt // 3600000 + RESOLUTION_WH:
            return self._odd(wh, "jump")
        return True

    def _odd(self, wh, kind):
        # The same odd level again and again is a meter that was replaced or reset: rebase.
        self._reject(kind)
        if self._odd_wh is not None and abs(wh - self._odd_wh) <= self.max_power_w // 360 + RESOLUTION_WH:
            self._same_odd += 1
        else:
            self._same_odd = 1
        self._odd_wh = wh
        if self._same_odd >= REBASE_AFTER:
            self.rejected["rebased"] += 1
            self._base_reg = self.register_wh if self.register_wh is not None else 0
            self._base_meter = wh
            self._last_wh = None
            self._same_odd = 0
            return True
        return False

    def _reject(self, kind):
        self.rejected[kind] += 1
        self._bad_in_row += 1
        self.valid = False

    def _believe(self, m, wh, now):
        if self._base_meter is None or (self._last_wh is None and wh < self._base_meter):
            # first reading ever, or the meter shows less than before the reboot
            self._base_meter = wh
            if self.register_wh is None:
                self.register_wh = 0
            self._base_reg = self.register_wh
        self.register_wh = self._base_reg + (wh - self._base_meter)
        self._last_wh = wh
        self._last_at = now
        self.updated_ms = now
        self.power_w = m.power_w
        if self.measures_current:
            a = m.amps_ma
            v = m.volts_dv
            mask = 0
            for k in range(3):
                self.amps_ma[k] = a[k]
                self.volts_dv[k] = v[k]
                if a[k] > _ACTIVE_MA:
                    mask |= 1 << k
            self.phases_used = mask
        self.valid = True
        self.seen = True

    def max_amps_da(self):
        """Highest phase current in deci-amps, or None when the meter cannot tell."""
        if not self.valid or not self.measures_current:
            return None
        a = self.amps_ma
        top = a[0]
        if a[1] > top:
            top = a[1]
        if a[2] > top:
            top = a[2]
        return top // 100

    # ---- OCPP measurands (for the back-end link) ----

    def phases(self):
        """The phases the car draws on, e.g. "L1,L2,L3" (empty when it draws nothing)."""
        names = []
        for k in range(3):
            if self.phases_used & (1 << k):
                names.append("L%d" % (k + 1))
        return ",".join(names)
