"""The anchors' energy managers, reimplemented from what they publish, as baselines for ours.

Test harness only (tests_host/energy_day.py runs them; the firmware never imports this). Each is
a controller of energy_day's interface, `step(now_ms, readings) -> (amps offered, phases wanted)`,
for a single charger with a grid meter, in the mode the day asks for (Day.mode: "solar" or
"smart"). Our own code throughout; every constant says where it comes from. The sources read:

- SmartEVSE-3, github.com/SmartEVSE/SmartEVSE-3 at commit 2bc4238314fb78f3d360f3f6715bb7161f5a32b7
  (January 2026): docs/configuration.md (MODE, MAINS, MIN, MAX, START, STOP, IMPORT, CONTACT2,
  "SINGLE PHASE CHARGING"), docs/operation.md (error messages), SmartEVSE-3/src/main.h (the
  defaults), SmartEVSE-3/src/main.cpp (CalcBalancedCurrent, IsCurrentAvailable, Timer1S_singlerun,
  setState, CalcIsum) and src/meter.cpp (CalcImeasured).
- Tinkerforge WARP (WARP Charger / WARP Energy Manager firmware), github.com/Tinkerforge/
  esp32-firmware at commit cf4f5b58c08c7bf4d0b1d24a4aa47570fcd21014: software/src/modules/
  power_manager/power_manager.cpp and .h (the PV P-controller, the cloud filter, dynamic load
  management), modules/charge_manager/charge_manager.cpp (the defaults of the allocator's
  low-level config) and current_allocator.cpp (stages 3 to 8: switching chargers off and on,
  1p/3p, the current), the web interface's texts (charge_manager/translation_en.tsx: largest
  consumer current) and docs.warp-charger.com (API reference power_manager: the modes and
  cloud_filter_mode).
"""
import collections

VOLTS = 230


# ---- SmartEVSE ------------------------------------------------------------------------------

NOT_PRESENT, ALWAYS_OFF, ALWAYS_ON, AUTO = "not present", "always off", "always on", "auto"


class SmartEvse:
    """SmartEVSE-3's Smart and Solar modes (CalcBalancedCurrent and its timers), one EVSE with
    a mains meter (LoadBl 0, no EV meter). Currents in deci-amps, as theirs.

    - The mains meter is read every 2 s (Timer1S: "Every two seconds request measurement data";
      CalcBalancedCurrent(0) runs once the readings are in). Irms are signed phase currents
      (their API: "-5 means 0.5A exporting"); Isum their sum; Imeasured the largest (CalcImeasured).
    - Smart: Idifference = MAINS - Imeasured; below 0 the set point drops by all of it at once,
      above 0 it rises by a quarter of it per reading; never above MAINS - Baseload (Baseload:
      Imeasured less the current set for the car), never above MAX.
    - Solar, per reading while charging: IsumImport = Isum - IMPORT; exporting more than 1 A:
      +0.5 A, else +0.1 A; importing more than 2 A: - IsumImport / 2, more than 1 A: -0.5 A, more
      than 0.3 A: -0.1 A. The first SOLARSTARTTIME (40 s) of a charge at MIN (6 A).
    - Start (IsCurrentAvailable, solar): Isum below -START (4 A of export, summed over the phases)
      while not charging; otherwise the LESS_6A error: CHARGEDELAY (60 s) after it clears (it
      clears once current is available, checked every second) before the car may start.
    - Stop (solar): the set point below MIN while importing, and a stop would free enough to
      restart (Isum > (MIN x phases - START)): the SolarStopTimer, STOP minutes; when it runs out,
      the car stops (C1) and LESS_6A as above. A reading without that shortage resets the timer.
    - Stop (smart, "hard shortage"): MIN does not fit under MAINS - Baseload for more than 2
      readings in a row (NoCurrent > 2): LESS_6A; also at once when Imeasured exceeds 2 x MAINS.
    - CONTACT2 (a second contactor for L2/L3): "not present" (3 phases), "always off" (1 phase:
      what docs/configuration.md recommends for a 1-phase car in Solar mode, "EVEN IF YOU DONT HAVE
      A second contactor INSTALLED"), "auto" (solar only): before a start, three phases if the
      export is at least 3 x MIN + 3 A (summed), else one; charging on three at MIN and importing:
      the SolarStopTimer (STOP minutes for a deficit below MIN, 30 s for a larger one) ends in a
      switch to one phase instead of a stop; on one phase at MAX (within 0.8 A) with an export
      above 3 x (MIN + 1) - MAX (3 A if that is negative) for 63 s: a switch to three. A switch is
      a stop (C1, ChargeDelay 15 s) and a new start on the other phases.
    - A stop through C1 holds the car off for ChargeDelay 15 s (setState(STATE_C1)).

    Left out: power sharing between EVSEs, MaxCircuit (no EV meter), MaxSumMains (capacity
    tariff, default off), the home battery, OCPP, the pilot's 5 s disconnect after C1 (shorter
    than the ChargeDelay that follows it), the state-B 500 ms debounce.
    """

    MIN_CURRENT = 6        # main.h MIN_CURRENT: "minimum Current the EV will accept" (MIN setting, 6-16)
    START_CURRENT = 4      # main.h START_CURRENT: "Start charging when surplus current on sum of all phases exceeds 4A (Solar)"
    STOP_TIME = 10         # main.h STOP_TIME: "Stop charging after 10 minutes at MIN charge current (Solar)"
    IMPORT_CURRENT = 0     # main.h IMPORT_CURRENT: "Allow the use of grid power when solar charging (Amps)"
    SOLARSTARTTIME = 40    # main.h SOLARSTARTTIME: "Seconds to keep chargecurrent at 6A"
    CHARGEDELAY = 60       # main.h CHARGEDELAY; docs/operation.md "ERROR: NO CURRENT ... retry in 60 seconds"
    C1_DELAY = 15          # main.cpp setState(STATE_C1): setChargeDelay(15)
    METER_EVERY_S = 2      # main.cpp Timer1S: the mains meter every two seconds
    MAX_MAINS_DEFAULT = 25  # main.h MAX_MAINS (the MAINS setting), used where the day sets no fuse

    def __init__(self, day, enable_c2=None, max_mains=None):
        self.mode = day.mode  # "smart" or "solar"
        self.max_current = int(day.station_max_a)  # MAX: the charger's maximum (the same for every controller)
        # MAINS: "max mains current per phase": the main fuse (no margin: it is the setting's meaning)
        self.max_mains = int(max_mains or day.fuse_a or self.MAX_MAINS_DEFAULT)
        if enable_c2 is None:
            if day.switchable and day.mode == "solar":
                enable_c2 = AUTO
            elif day.car_phases == 1 and day.mode == "solar":
                enable_c2 = ALWAYS_OFF  # (docs/configuration.md's advice for a 1-phase car, see above)
            else:
                enable_c2 = NOT_PRESENT
        self.c2 = enable_c2
        self.phases = 1 if enable_c2 == ALWAYS_OFF else 3  # Nr_Of_Phases_Charging
        self.switching = None  # Switching_Phases_C2: 1 or 3 until the next start
        self.state = "B"  # B: plugged in, not charging (B, B1, C1); C: charging
        self.iset = 0  # IsetBalanced
        self.balanced = 0  # Balanced[0], what the PWM offers in C
        self.charge_delay = 0
        self.less_6a = False
        self.solar_stop_timer = 0
        self.int_timer = 0  # seconds in C (Node[0].IntTimer)
        self.no_current = 0
        self.isum = 0
        self.imeasured = 0
        self.fresh = False  # phasesLastUpdateFlag
        self._sec = None

    # what SmartEVSE's loops do, second by second and every 10 ms

    def step(self, now, r):
        s = now // 1000
        if s != self._sec:
            self._sec = s
            self._timer1s(s, r)
        if self.state == "B" and r.ready and self.charge_delay == 0 and not self.less_6a:
            # the car asks for C (pilot 6 V): it may, if current is available
            if self._available():
                self.balanced = 0
                self._calc(True)
                self._enter_c()
            else:
                self.less_6a = True
        offer = self.balanced / 10.0 if self.state == "C" else 0
        return offer, (self.switching or self.phases)

    def _enter_c(self):
        self.state = "C"
        if self.switching:  # "Here at State C we actually switch the contactors"
            self.phases = self.switching
            self.switching = None
        self.phases = 1 if self.c2 == ALWAYS_OFF or (self.c2 == AUTO and self.phases == 1) else 3
        self.solar_stop_timer = 0
        self.int_timer = 0
        self.balanced = self.MIN_CURRENT * 10  # the PWM set in state B: ChargeCurrent = MinCurrent

    def _c1(self):
        """setState(STATE_C1): the car is told to stop; ChargeDelay 15 s."""
        if self.state == "C":
            self.state = "B"
        self.charge_delay = self.C1_DELAY

    def _timer1s(self, s, r):
        if self.solar_stop_timer:
            self.solar_stop_timer -= 1
            if self.solar_stop_timer == 0:
                if self.state == "C":
                    self._c1()
                self.less_6a = True  # "Set error: not enough sun"
        self.int_timer = self.int_timer + 1 if self.state == "C" else 0
        if s % self.METER_EVERY_S == 0 and r.grid_at is not None:
            irms = [int(round(a * 10)) for a in r.grid_a]  # CalcIsum
            self.isum = irms[0] + irms[1] + irms[2]
            self.imeasured = max(irms)
            self.fresh = True
            self._calc(False)
            if self.no_current > 2 or self.imeasured > self.max_mains * 20:
                self.less_6a = True
                self.no_current = 0
        if self.charge_delay:
            self.charge_delay -= 1
        if self.less_6a and self._available():
            self.less_6a = False
        if self.less_6a:
            self._c1()  # setStatePowerUnavailable
            self.charge_delay = self.CHARGEDELAY

    def _available(self):
        """IsCurrentAvailable: room for one more EVSE at MIN."""
        active = 1 if self.state == "C" else 0
        total = self.balanced if active else 0
        mn = self.MIN_CURRENT * 10
        if self.mode == "solar":
            if not active and self.isum >= -self.START_CURRENT * 10:
                return False
            if active * mn > total:
                return False
            if active and self.isum > self.IMPORT_CURRENT * 10 + total - active * mn:
                return False
        active += 1
        baseload = self.imeasured - total
        return active * mn + baseload <= self.max_mains * 10

    def _calc(self, mod):
        """CalcBalancedCurrent(mod) for one EVSE."""
        active = 1 if self.state == "C" else 0
        mn = self.MIN_CURRENT * 10
        charge_current = self.max_current * 10
        total = self.balanced if active else 0
        baseload = self.imeasured - total
        solar = self.mode == "solar"
        if solar and self.state == "B" and self.charge_delay == 0 and self.c2 == AUTO:
            # before the start (state B, not B1 or C1): three phases with room for 3 x 1 A of
            # regulation, else one (a choice already made stands while it is the phases in use)
            if -self.isum >= 30 * self.MIN_CURRENT + 30:
                if self.phases != 3:
                    self.switching = 3
            elif self.phases != 1:
                self.switching = 1
        idiff = self.max_mains * 10 - self.imeasured
        if not mod:
            if self.fresh:
                if idiff > 0:
                    if not solar:
                        self.iset += idiff // 4  # "increase with 1/4th of difference (slowly increase current)"
                else:
                    self.iset += idiff  # "immediately decrease current"
            self.iset = max(0, min(800, self.iset))
        isum_import = self.isum - 10 * self.IMPORT_CURRENT
        if solar:
            if active and idiff > 0 and self.fresh:
                if isum_import < 0:
                    self.iset += 5 if (isum_import < -10 and idiff > 10) else 1
                elif isum_import > 20:
                    self.iset -= isum_import // 2
                elif isum_import > 10:
                    self.iset -= 5
                elif isum_import > 3:
                    self.iset -= 1
        self.iset = min(self.iset, self.max_mains * 10 - baseload)  # guard MaxMains
        if active and self.fresh:
            if self.iset < active * mn:
                self.iset = active * mn
                if solar:
                    if isum_import > 0 and (self.isum > (active * self.MIN_CURRENT * self.phases - self.START_CURRENT) * 10
                                            or (self.phases > 1 and self.c2 == AUTO)):
                        if self.phases > 1 and self.c2 == AUTO:
                            if self.solar_stop_timer == 0:
                                self.solar_stop_timer = self.STOP_TIME * 60 if isum_import < 10 * self.MIN_CURRENT else 30
                            if self.solar_stop_timer <= 2:
                                self.switching = 1
                                self._c1()
                                self.solar_stop_timer = 0
                        elif self.solar_stop_timer == 0:
                            self.solar_stop_timer = self.STOP_TIME * 60
                    else:
                        self.solar_stop_timer = 0
                if self.iset > self.max_mains * 10 - baseload and self.switching != 1:
                    self.no_current += 1  # hard shortage
            else:
                if (solar and self.phases == 1 and self.c2 == AUTO and self.iset + 8 >= charge_current
                        and self.state == "C"):
                    spare = 3 * (self.MIN_CURRENT + 1) - self.max_current
                    if spare < 0:
                        spare = 3
                    if -self.isum > 10 * spare:
                        if self.solar_stop_timer == 0:
                            self.solar_stop_timer = 63
                        if self.solar_stop_timer <= 3:
                            self.switching = 3
                            self._c1()
                            self.solar_stop_timer = 0
                    else:
                        self.solar_stop_timer = 0
                else:
                    self.solar_stop_timer = 0
                    self.no_current = 0
            if self.state == "C":
                if self.iset > charge_current:
                    self.iset = charge_current  # ActiveMax
                if solar and self.int_timer < self.SOLARSTARTTIME:
                    self.balanced = mn
                    self.iset = total
                else:
                    self.balanced = self.iset
        if not active:
            self.solar_stop_timer = 0
            self.no_current = 0
        self.fresh = False


# ---- Tinkerforge WARP -----------------------------------------------------------------------

class _Window:
    """The minimum and maximum of the last n values (the power manager's minmax filters)."""

    def __init__(self, n):
        self.n = n
        self.i = 0
        self._lo = collections.deque()  # (index, value), values rising
        self._hi = collections.deque()  # values falling

    def push(self, v):
        i = self.i
        self.i += 1
        lo, hi = self._lo, self._hi
        while lo and lo[-1][1] >= v:
            lo.pop()
        lo.append((i, v))
        while hi and hi[-1][1] <= v:
            hi.pop()
        hi.append((i, v))
        while lo[0][0] <= i - self.n:
            lo.popleft()
        while hi[0][0] <= i - self.n:
            hi.popleft()

    @property
    def min(self):
        return self._lo[0][1]

    @property
    def max(self):
        return self._hi[0][1]


class _Mavg:
    """The moving average of the last n values (update_mavg_filter: filled with the first one)."""

    def __init__(self, n):
        self.n = n
        self.values = None
        self.pos = 0
        self.total = 0

    def push(self, v):
        if self.values is None:
            self.values = [v] * self.n
            self.total = v * self.n
            return v
        self.total += v - self.values[self.pos]
        self.values[self.pos] = v
        self.pos = (self.pos + 1) % self.n
        return int(self.total / self.n)  # (C's signed division truncates towards 0)


def _div(a, b):
    """C's integer division (towards 0)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class Warp:
    """Tinkerforge WARP's power manager and charge manager (current allocator) for one charger,
    mode PV (solar days; "Vehicles are only charged from PV excess") or Fast with dynamic load
    management (the smart evening). Currents in mA, as theirs; the "PV phase" is the available
    power as a current at 230 V, summed over phases (a 3-phase charger at 6 A costs 18 A of it).

    Power manager, every PM_TASK_DELAY_MS (500 ms):
    - PV: the error is target_power_from_grid (0 W) minus the grid power. With nothing allocated
      the available power is the error itself (p = 1); else the allocated power plus p x error,
      p = 0.5 below 1000 W of error, 0.75 below 1500 W, 0.875 above. raw = that / 230 V; min and
      max of raw over the cloud filter's window (medium, the default: 240 s).
    - Dynamic load management, per phase: target = min(1.4 x limit - largest consumer, limit) x
      (100 - safety margin) % ("circuit breaker trip point": limit + 40 %); the meter current is
      pre-processed over 10 s (the moving average below target + 10 %, (max + average) / 2 above
      target + 20 %, in between interpolated; above + 20 % it triggers an allocator run, at most
      every 5 s); error = target - that; the phase limit is the allocated current plus 15/16 of
      a negative error, or half a positive one (at most target / 2); min over 4 min of it.

    Charge manager, every ALLOCATION_INTERVAL_S (10 s) or when triggered:
    - off (stage 3): a phase limit below 6 A: at once; PV: raw below the charger's minimum (6 A x
      its phases) and the 240 s maximum not above it either, the global hysteresis (210 s since
      the last switch-on) elapsed, not within plug_in_time (210 s) of the first switch-on.
    - on (stage 4), hysteresis elapsed: three phases first (a fixed 3-phase charger, or a
      switchable one of unknown phase rotation), then one (switchable): the 240 s minimum of PV
      at least 6 A x phases and every phase limit's 4 min minimum at least 6 A. A 3-phase charger
      switched off for want of surplus is switched on again on one phase in the same run when the
      PV allows it: that is the 3p -> 1p switch.
    - 1p -> 3p (stage 5): 210 s since the last phase switch or switch-on, global hysteresis
      elapsed, the 240 s minimum of PV at least 18 A and above what the charger could draw on one
      phase (its requested current), phase limits with room (1.5 x 6 A + 3 A).
    - the current (stages 6 to 8): at least 6 A, else PV raw / phases, at most the phase limits,
      the charger's maximum and the requested current (60 s after the start of a charge: what the
      car draws on its busiest phase + 3 A, unless the last allocation fell short of it: then
      the charger's maximum for 60 s).

    Left out: several chargers (fairness, rotation, the enable factor between chargers), the
    long-term minimum ("spread", which for one charger only short-cuts a check that passes
    anyway), Min+PV and Eco modes, batteries, waking up full vehicles, meter ages, the network's
    delay between manager and charger.
    """

    PM_TASK_DELAY_MS = 500       # power_manager.h PM_TASK_DELAY_MS
    CLOUD_FILTER_S = 240         # power_manager.cpp: CLOUD_FILTER_MEDIUM -> 240 s, the config default (cloud_filter_mode 2)
    TARGET_POWER_FROM_GRID = 0   # power_manager config target_power_from_grid default 0 W
    GLOBAL_HYSTERESIS_S = 210    # charge_manager.cpp low_level_config global_hysteresis 3 * 60 + 30
    PLUG_IN_TIME_S = 210         # charge_manager.cpp low_level_config plug_in_time 3 * 60 + 30
    ENABLE_FACTOR = 1.5          # charge_manager.cpp enable_current_factor_pct 150
    ALLOCATION_INTERVAL_S = 10   # charge_manager.cpp low_level_config allocation_interval 10
    MIN_MA = 6000                # charge_manager.cpp minimum_current(_1p) 6000 mA
    REQUESTED_MARGIN_MA = 3000   # charge_manager.cpp REQUESTED_CURRENT_MARGIN_DEFAULT
    REQUESTED_THRESHOLD_S = 60   # charge_manager.cpp requested_current_threshold 60
    DLM_MIN_FILTER_S = 240       # power_manager.cpp: min_filter_length 4 min
    DLM_PREPROC_S = 10           # power_manager.cpp: preproc_filter_length 10 s
    DLM_SAFETY_MARGIN_PCT = 0    # power_manager.cpp dynamic_load_config safety_margin_pct 0
    TRIGGER_HYSTERESIS_MS = 5000  # power_manager.cpp cm_allocator_trigger_hysteresis 5_s

    def __init__(self, day, largest_consumer_a=None):
        self.pv_mode = day.mode == "solar"
        self.supported_ma = int(day.station_max_a * 1000)
        self.switchable = day.switchable
        self.phases = 3  # the charger's phases (the switch's position)
        n = self.CLOUD_FILTER_S * 1000 // self.PM_TASK_DELAY_MS
        self.pv_win = _Window(n)
        self.pv_raw = None
        self.dlm = bool(day.fuse_a)
        if self.dlm:
            limit = int(day.fuse_a * 1000)
            # largest_consumer_current: "The largest sudden rise in current draw to be expected
            # at the meter" (translation_en.tsx); its default is 32 A, which on a 25 A fuse would
            # leave a target of 3 A: an installer sets the house's largest step. None: the day's.
            big = int((largest_consumer_a if largest_consumer_a is not None else _largest_step(day.house)) * 1000)
            self.target_ma = min(limit * 7 // 5 - big, limit) * (100 - self.DLM_SAFETY_MARGIN_PCT) // 100
            self.max_increase_ma = self.target_ma // 2
            self.mavg_limit = self.target_ma * 11 // 10
            self.interp_limit = self.target_ma * 6 // 5
            self.interp_q = (self.interp_limit - self.mavg_limit) // 128
            k = self.DLM_PREPROC_S * 1000 // self.PM_TASK_DELAY_MS
            self.pre_max = [_Window(k) for _ in range(3)]
            self.pre_mavg = [_Mavg(k) for _ in range(3)]
            self.ph_min = [_Window(self.DLM_MIN_FILTER_S * 1000 // self.PM_TASK_DELAY_MS) for _ in range(3)]
            self.ph_raw = [0, 0, 0]
        self.alloc_phases = 0
        self.alloc_ma = 0
        self.last_hyst_reset = None
        self.last_phase_switch = None
        self.first_on = None  # just_plugged_in: the first switch-on of this plug-in
        self.use_supported_at = None
        self.c_since = None  # the charge's start (state C)
        self._pm_next = 0
        self._alloc_next = 1000
        self._trigger_at = None
        self._contactor = False

    # the power manager

    def _pm(self, now, r):
        if self.pv_mode and r.grid_at is not None:
            err = self.TARGET_POWER_FROM_GRID - int(r.grid_w)
            alloc_w = self.alloc_ma * self.alloc_phases * VOLTS // 1000
            if alloc_w <= 0:
                adj = err
            elif abs(err) < 1000:
                adj = _div(err, 2)
            elif abs(err) < 1500:
                adj = _div(err * 3, 4)
            else:
                adj = _div(err * 7, 8)
            self.pv_raw = (alloc_w + adj) * 1000 // VOLTS
            self.pv_win.push(self.pv_raw)
        if self.dlm and r.grid_at is not None:
            for p in range(3):
                meter = int(abs(r.grid_a[p]) * 1000)
                self.pre_max[p].push(meter)
                mavg = self.pre_mavg[p].push(meter)
                max_mavg = (self.pre_max[p].max + mavg) // 2
                if meter < self.mavg_limit:
                    pre = mavg
                elif meter > self.interp_limit:
                    pre = max_mavg
                    if self._trigger_at is None or now - self._trigger_at >= self.TRIGGER_HYSTERESIS_MS:
                        self._trigger_at = now
                        self._alloc_next = now  # charge_manager.trigger_allocator_run(true)
                else:
                    q_max = (meter - self.mavg_limit) // 128
                    q_mavg = self.interp_q - q_max
                    pre = _div(max_mavg * q_max, self.interp_q) + _div(mavg * q_mavg, self.interp_q)
                err = self.target_ma - pre
                alloc = self.alloc_ma if self.alloc_phases else 0
                if alloc <= 0:
                    adj = err
                elif err < 0:
                    adj = err - _div(err, 16)
                else:
                    adj = min(_div(err, 2), self.max_increase_ma)
                raw = min(alloc + adj, self.supported_ma)
                self.ph_raw[p] = raw
                self.ph_min[p].push(raw)

    # the charge manager

    def _elapsed(self, at, now, s):
        return at is None or now - at >= s * 1000

    def _allocate(self, now, r):
        ph = self.alloc_phases
        hyst = self._elapsed(self.last_hyst_reset, now, self.GLOBAL_HYSTERESIS_S)
        pv_ok = self.pv_raw is not None
        if not self.pv_mode:
            pv_raw = pv_min = pv_max = None
        elif pv_ok:
            pv_raw, pv_min, pv_max = self.pv_raw, self.pv_win.min, self.pv_win.max
        else:
            pv_raw = pv_min = pv_max = 0
        ph_raw = self.ph_raw if self.dlm else [self.supported_ma] * 3
        ph_min = [w.min for w in self.ph_min] if self.dlm else [self.supported_ma] * 3
        new = ph
        # stage 3: off
        if ph:
            if min(ph_raw) < self.MIN_MA:
                new = 0  # a phase overloaded even at the minimum: at once
            elif pv_raw is not None and pv_raw < self.MIN_MA * ph:
                just_plugged = self.first_on is not None and not self._elapsed(self.first_on, now, self.PLUG_IN_TIME_S)
                if not just_plugged and pv_max <= self.MIN_MA * ph and hyst:
                    new = 0
        # stage 4: on (a charger whose car wants to charge)
        if new == 0 and hyst and r.ready:
            recent = not self._elapsed(self.last_phase_switch, now, self.GLOBAL_HYSTERESIS_S)
            force_3p = recent and self.phases == 3
            force_1p = recent and self.phases == 1
            fixed_3p = not self.switchable
            try_3p = not force_1p  # (fixed 3p, or switchable with unknown rotation: three first)
            try_1p = self.switchable and not force_3p and not fixed_3p
            if try_3p and self._can_start(3, pv_min, ph_min):
                new = 3
            elif try_1p and self._can_start(1, pv_min, ph_min):
                new = 1
        # stage 5: 1p -> 3p
        if (new == 1 and ph == 1 and self.switchable and hyst
                and self._elapsed(self.last_phase_switch, now, self.GLOBAL_HYSTERESIS_S)):
            reqd = self._requested(now, r)
            ok = min(ph_min) >= self.MIN_MA * self.ENABLE_FACTOR + (self.MIN_MA * self.ENABLE_FACTOR - self.MIN_MA)
            if pv_min is not None:
                ok = ok and pv_min >= self.MIN_MA + 2 * self.MIN_MA and reqd < pv_min
            if ok:
                new = 3
        # stages 6 to 8: the current
        if new:
            cur = self._requested(now, r)
            if pv_raw is not None:
                cur = min(cur, max(self.MIN_MA, pv_raw // new))
            cur = max(self.MIN_MA, min(cur, min(ph_raw)))
            if cur < self._car_requested(now, r):
                self.use_supported_at = now
        else:
            cur = 0
        if new != ph:
            if new:
                self.last_hyst_reset = now
                if ph == 0 and self.first_on is None:
                    self.first_on = now
            if new and new != self.phases:
                self.last_phase_switch = now
        self.alloc_phases, self.alloc_ma = new, cur

    def _can_start(self, n, pv_min, ph_min):
        if min(ph_min) < self.MIN_MA:  # CHECK_MIN_WINDOW_ENABLE, no active charger: the minimum
            return False
        if pv_min is not None and pv_min < self.MIN_MA * n:  # CHECK_MIN_WINDOW_MIN on the PV phase
            return False
        return True

    def _car_requested(self, now, r):
        """The charger's requested current (charge_manager.cpp): the supported current, or from
        60 s into a charge what the car draws on its busiest phase plus the margin."""
        if self.c_since is None or not self._elapsed(self.c_since, now, self.REQUESTED_THRESHOLD_S):
            return self.supported_ma
        return min(self.supported_ma, int(max(r.own_a) * 1000) + self.REQUESTED_MARGIN_MA)

    def _requested(self, now, r):
        """get_requested_current: the supported current for 60 s after an allocation fell short
        of the requested current (a fast ramp-up), else the requested current."""
        if not self._elapsed(self.use_supported_at, now, self.REQUESTED_THRESHOLD_S):
            return self.supported_ma
        return self._car_requested(now, r)

    def step(self, now, r):
        if r.contactor and not self._contactor:
            self.c_since = now
            self.last_phase_switch = now  # charge_manager.cpp: "just switched to state C"
        elif not r.contactor:
            self.c_since = None
        self._contactor = r.contactor
        self.phases = r.supply_phases
        if now >= self._pm_next:
            self._pm_next = now + self.PM_TASK_DELAY_MS
            self._pm(now, r)
        if now >= self._alloc_next:
            self._alloc_next = now + self.ALLOCATION_INTERVAL_S * 1000
            self._allocate(now, r)
        if not self.alloc_phases:
            return 0, self.phases
        return self.alloc_ma / 1000.0, self.alloc_phases


def _largest_step(house):
    """The largest sudden rise of one phase's house current in energy_day.House's events."""
    big = 0.0
    for e in house.events:
        big = max(big, e[3])
    return big
