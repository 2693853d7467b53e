"""Energy management: the charger's share of the house connection, as one claim ("energy") on
the current arbiter (firmware/limits.py). docs/energy.md explains the modes, every constant and
why, against SmartEVSE, Tinkerforge WARP and evcc.

    e = Energy(clock, settings, emit, phases=3)
    e.set_mode("solar")                    # a person, the local API: None, or why not
    e.grid(amps, power_w, now)             # a grid reading pushed by a home-energy manager
    every service round (100 ms): e.update(now, grid_meter, metering, charger)

Modes (setting energy_mode):
- normal: no claim; the charger offers its fixed maximum (max_current_a and the other claims).
- smart: the house's load plus the charger's stay under main_fuse_a - fuse_margin_a on every
  phase. The house's load on a phase is what the grid meter measures there minus what the
  charger draws there (its own meter): a reading a lowered offer has not reached yet does not
  lower it twice. Down at once (a safety claim: the arbiter lowers the offer in the same tick),
  up by at most UP_STEP_DA every UP_EVERY_MS.
- solar: the car charges from what the house exports (plus solar_import_w of import), between
  6 A and the maximum, on the phases it draws on. It starts once the surplus has been enough
  for solar_start_s, and stops once it has been short, at the minimum current, for
  solar_stop_s: a passing cloud does not stop the car. The fuse limit of smart applies too.

The grid reading comes from the grid meter on the charger's RS-485 bus (board profile
grid_meter), or from a home-energy manager (grid()). Without a fresh one for grid_timeout_s, the
claim falls back to grid_fallback_a and a "grid" fault event says so until readings are back:
the last value is never kept silently. The main fuse is a ceiling no other part can lift: a claim
only lowers the offer (the arbiter takes the lowest), so neither the back end nor a person can
raise it above what this claim allows.

Phase currents at the house connection are magnitudes (a meter's phase currents carry no
direction), which errs on the safe side for the fuse; the surplus comes from the signed total
power (negative: export), as a net-metering meter counts it.
"""
MODES = ("normal", "smart", "solar")
CLAIM = "energy"
VOLTS = 230  # nominal phase voltage for watts -> amps
MIN_DA = 60  # IEC 61851: 6 A, the least a car may be offered
UP_STEP_DA = 20  # smart: at most 2 A more ...
UP_EVERY_MS = 5000  # ... every 5 s (the arbiter's own pace for raising the offer)
PHASE_SEEN_MA = 1000  # a phase drawing more than 1 A is one the car charges on
PAIR_WAIT_MS = 1000  # a grid reading waits this long at most for the charger's own after it
SETTLE_MS = 3000  # a reading taken sooner after the offer or the contactor changed may catch the
# car between two currents (cars follow in 1-3 s): it may lower the claim, never raise it
# 1p/3p switching (boards with a phase switch), solar mode only: down to one phase when the
# surplus has been between one phase's minimum (1.38 kW) and three phases' (4.14 kW) for
# SWITCH_DOWN_MS; up to three once it has been at least three phases' minimum plus
# SWITCH_UP_EXTRA_W for SWITCH_UP_MS; never two switches within SWITCH_MIN_MS; never up for a car
# that drew on one phase only while it had three.
SWITCH_DOWN_MS = 60000
SWITCH_UP_MS = 120000
SWITCH_UP_EXTRA_W = 460  # 2 A on one phase: the hysteresis between the two thresholds
SWITCH_MIN_MS = 300000

# reasons (the energy event's `reason`; constants: nothing is built per round)
NORMAL = "normal mode"
WAITING = "waiting for a grid reading"
STALE = "no grid reading: safe current"
FUSE = "main fuse"
WITHIN = "within the main fuse"
SURPLUS = "solar surplus"
SOLAR_WAIT = "solar: waiting for surplus"
SOLAR_SOON = "solar: surplus, starting soon"
SOLAR_SHORT = "solar: short of surplus, at the minimum"
SOLAR_STOP = "solar: not enough surplus, stopped"
SOLAR_PROBE = "solar: the car charges on three phases, waiting for their surplus"


class Energy:
    def __init__(self, clock, settings, emit, phases=3):
        self.clock = clock
        self.emit = emit
        self.phases = phases  # the station's phases
        self.mode = settings.get("energy_mode")
        self.configure(settings)
        self.grid_amps = [0.0, 0.0, 0.0]  # at the house connection, as seen last (magnitudes)
        self.grid_w = 0  # total active power there, positive = import
        self.fresh = False  # a reading within grid_timeout_s
        self._read_at = None  # tick of the last reading
        self._meter_seen = None  # the grid meter's updated_ms last taken
        self._pair = False  # a grid reading waits for the charger's own reading after it
        self._paired = False  # ... and the charger's reading in use came right after it
        self._offer_seen = (0, False)  # the charger's (offer, contactor) as last seen
        self._changed_at = None  # tick at which they last changed
        self._boot = clock.ticks_ms()
        self.target_da = None  # the claim, None: no claim
        self.surplus_w = 0
        self.car_phases = None  # phases the car drew on in this plug-in (None: not seen yet)
        self.car_max = None  # ... while it had three: 1 for a car that charges on one phase only
        self._supply = phases  # the phases the car is supplied with now (the phase switch)
        self._sw_since = None  # tick since which the surplus has asked for the other phases
        self._switched_at = None  # tick of the last switch asked for
        self.reason = NORMAL if self.mode == "normal" else WAITING
        self._solar_on = False
        self._probe = False  # solar: started before the car's phases were known
        self._since = None  # solar: tick since which the surplus has been enough / short
        self._raised_at = None
        self._reported = None  # (mode, target, phases, reason) of the last energy event
        self._stale_reported = False

    def configure(self, settings):
        self.fuse_da = int(settings.get("main_fuse_a") * 10)
        self.margin_da = int(settings.get("fuse_margin_a") * 10)
        self.timeout_ms = settings.get("grid_timeout_s") * 1000
        self.fallback_da = int(settings.get("grid_fallback_a") * 10)
        self.import_w = settings.get("solar_import_w")
        self.start_ms = settings.get("solar_start_s") * 1000
        self.stop_ms = settings.get("solar_stop_s") * 1000
        self.max_da = int(settings.get("max_current_a") * 10)

    # ---- commands -------------------------------------------------------------------------

    def set_mode(self, mode):
        """Change the mode at run time. None, or why not (the mode is then unchanged)."""
        if mode not in MODES:
            return "energy_mode must be one of %s, not %r" % (", ".join(MODES), mode)
        if mode == "smart" and self.fuse_da <= 0:
            return "smart mode needs main_fuse_a"
        self.mode = mode
        self._solar_on = False
        self._since = None
        return None

    def needs_grid(self):
        """Whether the mode needs readings at the house connection (the grid meter is polled)."""
        return self.mode != "normal"

    def grid(self, amps, power_w, now, age_ms=0):
        """A reading at the house connection pushed by a home-energy manager: amps per phase
        (magnitudes or signed; three numbers), total power (W, positive = import), its age.
        None, or why it was refused (nothing changes then)."""
        try:
            a = [abs(float(amps[0])), abs(float(amps[1])), abs(float(amps[2]))]
            w = float(power_w)
            age = int(age_ms)
        except (TypeError, ValueError, IndexError, OverflowError):
            return "a grid reading is three currents and a power"
        for v in a + [w]:
            if v != v or v > 1e6 or v < -1e6:  # NaN, beyond any house connection
                return "a grid reading out of range"
        if age < 0 or age > self.timeout_ms:
            return "a grid reading %d ms old" % age
        self.grid_amps = a
        self.grid_w = int(w)
        self._read_at = self.clock.ticks_add(now, -age)
        self._pair = True
        return None

    # ---- every service round --------------------------------------------------------------

    def update(self, now, grid_meter, metering, charger):
        """Take a new grid reading, decide, claim. Allocation-free unless the decision changes."""
        clock = self.clock
        if self.mode == "normal":
            self._claim(charger, None, NORMAL)
            if charger.switchable:
                charger.claim_phases(CLAIM, None)
            return
        if grid_meter is not None and grid_meter.valid and grid_meter.updated_ms != self._meter_seen:
            self._meter_seen = grid_meter.updated_ms
            a = grid_meter.amps_ma
            self.grid_amps[0] = abs(a[0]) / 1000
            self.grid_amps[1] = abs(a[1]) / 1000
            self.grid_amps[2] = abs(a[2]) / 1000
            self.grid_w = grid_meter.power_w
            self._read_at = grid_meter.updated_ms
            self._pair = True
        # what the car draws now, per phase (mA), and on which phases
        own = metering.amps_ma if metering is not None and metering.measures_current else None
        seen = self._offer_seen
        if seen[0] != charger.offer_da or seen[1] != charger.contactor:
            self._offer_seen = (charger.offer_da, charger.contactor)
            self._changed_at = now
        if charger.supply_phases != self._supply:
            self._supply = charger.supply_phases
            self.car_phases = None  # to be seen on the new supply
        if charger.contactor and own is not None:
            n = 0
            for i in range(3):
                if own[i] > PHASE_SEEN_MA:
                    n += 1
            if n:
                self.car_phases = n
                if self._supply == 3:
                    self.car_max = n
        elif not charger.plugged:
            self.car_phases = self.car_max = None  # unplugged: the next car may be another
        at = self._read_at
        fresh = at is not None and clock.ticks_diff(now, at) <= self.timeout_ms
        self.fresh = fresh
        if fresh == self._stale_reported:  # a stale spell to report, or one that ended
            if fresh or at is not None or clock.ticks_diff(now, self._boot) > self.timeout_ms:
                self._stale(fresh)
        if not fresh:
            self._claim(charger, self.fallback_da, STALE)
            return
        if self._pair:
            # The house's load is the grid's current less the charger's own: both from about the
            # same moment (the station asks the charger's meter for a reading right after the
            # grid meter's), or a car that has just changed its current is counted wrong.
            own_at = metering.updated_ms if metering is not None else None
            self._paired = own_at is not None and clock.ticks_diff(own_at, at) >= 0
            if not self._paired and own_at is not None and clock.ticks_diff(now, at) < PAIR_WAIT_MS:
                return  # (the decision in force holds meanwhile)
            self._pair = False
        elif self.target_da is not None and self.reason != STALE and self.reason != WAITING:
            return  # decided on this reading already
        target = self._fuse_da(own, charger)
        why = FUSE if target < self.max_da else WITHIN
        if self.mode == "solar":
            solar, sw = self._solar(now, metering, charger)
            if solar <= target:
                target, why = solar, sw
            if charger.switchable:
                self._switch(now, charger)
        elif charger.switchable:
            charger.claim_phases(CLAIM, None)
        self._claim(charger, self._gently(now, target), why)

    def _switch(self, now, charger):
        """Solar: claim one phase or three from the surplus (see SWITCH_*)."""
        clock = self.clock
        avail = self.surplus_w + self.import_w
        one = MIN_DA * VOLTS // 10
        three = 3 * one
        if self._supply == 3:
            other = avail < three and avail >= one
        else:
            other = avail >= three + SWITCH_UP_EXTRA_W and self.car_max != 1
        if not other or charger.switching:
            self._sw_since = None
            return
        if self._sw_since is None:
            self._sw_since = now
        wait = SWITCH_DOWN_MS if self._supply == 3 else SWITCH_UP_MS
        if clock.ticks_diff(now, self._sw_since) < wait:
            return
        if self._switched_at is not None and clock.ticks_diff(now, self._switched_at) < SWITCH_MIN_MS:
            return
        self._switched_at = now
        self._sw_since = None
        charger.claim_phases(CLAIM, 1 if self._supply == 3 else 3)

    def _fuse_da(self, own, charger):
        """The most the car may draw on each of its phases: the fuse less the margin less the
        house's load there (the grid's current less the charger's own). Without the charger's
        per-phase currents (an S0 meter) its offer counts as drawn on every phase it may use."""
        if self.fuse_da <= 0:
            return self.max_da
        room = self.max_da
        c = charger.offer_da if charger.contactor else 0
        for i in range(3):
            if not self._uses(i):
                continue
            # Unpaired (a pushed reading, a late meter): never more than it is offered, since a
            # reading from before a lower offer took hold would hide house load behind current
            # the car no longer draws. Paired, the two readings show the same moment.
            mine = own[i] // 100 if own is not None else c
            if mine > c and not self._paired:
                mine = c
            r = self.fuse_da - self.margin_da - (int(self.grid_amps[i] * 10) - mine)
            if r < room:
                room = r
        return room if room > 0 else 0

    def _uses(self, i):
        """Whether the car may draw on phase i (L1 always; L2, L3 while it is supplied with three,
        unless it has shown it charges on one phase)."""
        if i == 0:
            return True
        if self._supply < 3:
            return False
        return self.car_max is None or self.car_max > 1

    def _solar(self, now, metering, charger):
        """(deci-amps, reason) from the surplus: 0 while off."""
        clock = self.clock
        mine_w = metering.power_w if metering is not None and metering.valid and charger.contactor else 0
        self.surplus_w = mine_w - self.grid_w  # export, plus what the car takes now
        avail = self.surplus_w + self.import_w
        # The phases it draws on: one when supplied with one. Before it has drawn on three: one
        # (a 1-phase car starts on one phase's surplus; a 3-phase car shows its phases and
        # waits), or three where a phase switch can give it one (switched first, no probe).
        ph = 1 if self._supply == 1 else (self.car_max or (3 if charger.switchable else 1))
        da = avail * 10 // (VOLTS * ph)
        enough = da >= MIN_DA
        if not self._solar_on:
            if not enough or not charger.plugged:
                self._since = None
                return 0, SOLAR_WAIT
            if self._since is None:
                self._since = now
            if clock.ticks_diff(now, self._since) < self.start_ms:
                return 0, SOLAR_SOON
            self._solar_on = True
            self._probe = self.car_max is None and self._supply == 3
            self._since = None
        if self._probe and self.car_max is not None:
            self._probe = False
            if not enough:
                # Started on one phase's surplus to learn the car's phases: it takes three, and
                # three are not there. Stop now, not after the clouds' timer: from now on in
                # this plug-in it starts on three phases' surplus.
                self._solar_on = False
                return 0, SOLAR_PROBE
        if enough:
            self._since = None
            return (da if da < self.max_da else self.max_da), SURPLUS
        if self._since is None:
            self._since = now
        if clock.ticks_diff(now, self._since) >= self.stop_ms or not charger.plugged:
            self._solar_on = False
            self._since = None
            return 0, SOLAR_STOP
        return MIN_DA, SOLAR_SHORT

    def _gently(self, now, target):
        """Down at once; up by UP_STEP_DA every UP_EVERY_MS (a start from a pause is not a raise:
        the car begins at what is allowed)."""
        cur = self.target_da
        if cur is None or cur < MIN_DA or target <= cur or self.reason == STALE:
            return target  # (a start, or the first reading after a spell without: not a raise)
        ch = self._changed_at
        if ch is not None and self._read_at is not None and self.clock.ticks_diff(self._read_at, ch) < SETTLE_MS:
            return cur  # the reading may have caught the car between two currents
        at = self._raised_at
        if at is not None and self.clock.ticks_diff(now, at) < UP_EVERY_MS:
            return cur
        self._raised_at = now
        return target if target - cur <= UP_STEP_DA else cur + UP_STEP_DA

    def _claim(self, charger, da, reason):
        if da is not None and 0 < da < MIN_DA:
            da = 0  # below 6 A the car pauses
        if da != self.target_da:
            self.target_da = da
            charger.limits.claim(CLAIM, da, safety=True)
        self.reason = reason
        r = self._reported
        ph = self.car_phases or self._supply
        if r is None or r[0] != self.mode or r[1] != da or r[2] != ph or r[3] != reason:
            self._reported = (self.mode, da, ph, reason)
            g = self.grid_amps
            self.emit("energy", {"mode": self.mode, "grid_amps": [round(g[0], 2), round(g[1], 2), round(g[2], 2)],
                                 "surplus_w": self.surplus_w, "phases": ph,
                                 "target_amps": None if da is None else da / 10, "reason": reason})

    def _stale(self, fresh):
        self._stale_reported = not fresh
        self.emit("fault", {"code": "grid", "active": not fresh,
                            "reason": None if fresh else "no grid reading for %d s: %d A offered"
                            % (self.timeout_ms // 1000, self.fallback_da // 10)})

    def view(self):
        """What the local page and the log show."""
        return {"mode": self.mode, "grid_amps": list(self.grid_amps), "grid_w": self.grid_w, "fresh": self.fresh,
                "surplus_w": self.surplus_w, "target_amps": None if self.target_da is None else self.target_da / 10,
                "phases": self.car_phases or self._supply, "reason": self.reason}
