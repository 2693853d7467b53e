"""Current arbiter: the offer is the lowest of all claims.

Each part that limits the current (hardware, cable, settings, temperature; later the back end
and load management) holds a named claim in deci-amps. The applied offer follows the lowest
claim, but changes at most once per `min_interval_ms` (IEC 61851 as EVerest reads it), except
that a claim marked `safety` lowers the offer at once. Starting and ending the PWM is not
rate-limited: that is the charger's decision, not an offer change.
"""

HARDWARE = "hardware"
CABLE = "cable"
SETTINGS = "settings"
TEMPERATURE = "temperature"
OPERATOR = "operator"


class Limits:
    def __init__(self, clock, min_interval_ms=5000):
        self._clock = clock
        self._interval = min_interval_ms
        self._claims = {}  # name -> deci-amps
        self._safety = {}  # name -> True when the claim may lower the offer at once
        self.applied = 0  # deci-amps currently offered (0 = nothing)
        self._changed_at = None

    def claim(self, name, da, safety=False):
        """Set (or with da=None withdraw) a claim. Only allocates when the claim set changes."""
        if da is None:
            if name in self._claims:
                del self._claims[name]
            return
        self._claims[name] = da
        if safety:
            self._safety[name] = True

    def claims(self):
        return dict(self._claims)

    def _scan(self):
        # Writes the lowest claim to attributes instead of returning a tuple: called every tick.
        best = -1
        who = None
        for name in self._claims:
            da = self._claims[name]
            if best < 0 or da < best:
                best = da
                who = name
        self._target = best if best > 0 else 0
        self._who = who

    def lowest_but(self, name):
        """Deci-amps of the lowest claim other than `name`'s (None when there is none): what the
        others allow without it."""
        best = None
        for k in self._claims:
            da = self._claims[k]
            if k != name and (best is None or da < best):
                best = da
        return best

    def lowest(self):
        """(deci-amps, name) of the lowest claim; (0, None) when nobody claims anything."""
        self._scan()
        return self._target, self._who

    def target(self):
        self._scan()
        return self._target

    def offer(self, now, running):
        """Deci-amps to offer now. `running` tells whether the PWM is already on."""
        self._scan()
        target = self._target
        who = self._who
        if not running or self.applied == 0:
            self._set(target, now)
            return self.applied
        if target == self.applied:
            return self.applied
        if target < self.applied and self._safety.get(who, False):
            self._set(target, now)
        elif self._changed_at is None or self._clock.ticks_diff(now, self._changed_at) >= self._interval:
            self._set(target, now)
        return self.applied

    def _set(self, da, now):
        if da != self.applied:
            self.applied = da
            self._changed_at = now
