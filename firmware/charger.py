"""IEC 61851-1 charging state machine.

Inputs (written by the station every control tick into `charger.inp`): pilot plateaus, proximity,
temperature, RCD, contactor feedback and measured current. Outputs: `duty` (the pilot PWM),
`contactor` (closed or not), `rcd_test` (drive the detector's test input) and events in
`events` for the slower tasks.

The contactor is closed only while every precondition holds:
  vehicle in C (or D when ventilation is allowed), stable for the close debounce, having passed
  through B; the driver authorized; no fault active; the RCD self-test passed since the vehicle
  connected; a cable present (socketed units); the station available; a PWM offer of at least 6 A;
  the socket lock confirmed locked (boards with a lock, see `_lock`).
It opens in the very tick a precondition fails, with one exception that the standard asks for:
when only the offer goes away (PWM removed, e.g. a limit of 0 A), the vehicle gets
`c1_timeout_ms` (6 s) to stop drawing and leave C before the contactor is forced open.

Only transitions that close the contactor are debounced; every opening acts on the first reading.

Phase switching (boards with a phase switch: a second contactor that connects L2 and L3,
`switchable`): parts claim the phases they want (`claim_phases(name, n)`: the energy manager
from the surplus, the back end from a charging profile's numberPhases), and the fewest claimed
win, as the lowest current claim does. A switch happens only through a safe sequence, never under
load: the offer is withdrawn; the contactor opens once the car has
stopped drawing (below 1 A) or left C, or at the latest after `c1_timeout_ms`; once the auxiliary
contact shows it open, `supply_phases` (the switch's output) changes; after SWITCH_SETTLE_MS the
offer comes back and the contactor closes again as for any closing (debounce, diode and weld
checks, wear). The session goes on throughout.

Two more gates keep the contactor itself from harm (README, "Contactor checks and wear"):
- Weld check. After a boot the contacts' state is unknown, and after every opening they may have
  welded: nothing is offered after a boot, and the contactor does not close again after an
  opening, until the auxiliary contact has shown open. A contact still closed `weld_check_ms`
  after the opening is a weld: a permanent fault.
- Wear. Contactors are rated for about 10^5 operations. At most WEAR_MAX closings in any
  WEAR_WINDOW_MS, and after WEAR_FREE short charges in a row (each ended within STABLE_MS of its
  closing) the next closing waits a hold-off that doubles with every further one, up to
  HOLD_MAX_MS; a charge that lasts STABLE_MS, or an unplug, starts the count afresh.
"""

from firmware import pilot
from firmware import safety
from firmware import limits as lim
from firmware.pilot import A, B, C, D, E, F

# Session stop reasons (OCPP 1.6 Reason values).
EV_DISCONNECTED = "EVDisconnected"
LOCAL = "Local"
REMOTE = "Remote"
DEAUTHORIZED = "DeAuthorized"
POWER_LOSS = "PowerLoss"
UNLOCK_COMMAND = "UnlockCommand"
OTHER = "Other"  # a latched fault ended the session (a welded contactor)

# Socket lock states, as drivers/lock.py reports them (firmware never imports drivers)
LOCK_LOCKED = "locked"
LOCK_UNLOCKED = "unlocked"
LOCK_MOVING = "moving"
LOCK_FAILED = "failed"
LOCK_OPEN_MS = 200  # the contactor open this long before the lock may let go: its contacts have moved
LOCK_AMPS_DA = 10  # below 1 A on every phase the car has stopped drawing

# Contactor wear (see the module docstring)
WEAR_MAX = 10  # closings in any WEAR_WINDOW_MS, whatever the vehicle does
WEAR_WINDOW_MS = 60000
WEAR_FREE = 3  # short charges in a row that need no hold-off (cars that pause once or twice)
HOLD_BASE_MS = 2000  # the first hold-off; each further short charge doubles it
HOLD_MAX_MS = 300000
STABLE_MS = 60000  # a charge at least this long is not chatter
SWITCH_SETTLE_MS = 2000  # after the phase switch moved: its contacts settle, the car sees the change
HOLD_SHORT = "short"  # holdoff reasons: short charges in a row / WEAR_MAX closings in the window
HOLD_RATE = "rate"

_CONNECTED = (B, C, D)
_X1 = {B: "B1", C: "C1", D: "D1"}  # no PWM: the station offers nothing
_X2 = {B: "B2", C: "C2", D: "D2"}  # PWM on: the station offers current

# RCD self-test phases
_RCD_IDLE = 0
_RCD_TESTING = 1
_RCD_RELEASING = 2


class Inputs:
    """What the station read from the drivers this tick. Plain attributes: no allocation."""

    def __init__(self):
        self.high_mv = 12000
        self.low_mv = -12000
        self.pp_ohms = None  # None: no cable (or tethered)
        self.temp_dc = 250  # deci-degrees C; None: sensor missing
        self.rcd_tripped = False  # latched by the driver's interrupt
        self.rcd_input = False  # the detector output right now
        self.feedback = None  # contactor auxiliary contact: True closed, None: not fitted
        self.amps_da = None  # highest phase current, deci-amps; None: no meter
        self.meter_failed = False  # the board's meter stopped giving believable readings
        self.meter_ready = True  # no meter, or it gave a believable reading since boot
        self.journal_ok = True  # a new session's start can be recorded (station: the flash has room)
        self.lock = None  # socket lock: LOCK_LOCKED, _UNLOCKED, _MOVING, _FAILED; None: none fitted


class Events:
    """The charger's events for the slower tasks, oldest first: a ring of CAP slots made at boot,
    filled in the control tick without allocating (a list of tuples would take heap at every
    transition). An event that finds it full is counted in `lost`, which the station reports; the
    station takes them every 100 ms, and a tick makes a few at most."""

    CAP = 24

    def __init__(self):
        n = self.CAP
        self._kind = [None] * n
        self._a = [None] * n
        self._b = [None] * n
        self._at = [0] * n
        self._first = 0
        self._n = 0
        self.lost = 0

    def __len__(self):
        return self._n

    def put(self, kind, a, b, at):
        if self._n == self.CAP:
            self.lost += 1
            return
        i = (self._first + self._n) % self.CAP
        self._kind[i] = kind
        self._a[i] = a
        self._b[i] = b
        self._at[i] = at
        self._n += 1

    def take(self):
        """The oldest event as (kind, a, b, ticks), or None."""
        if not self._n:
            return None
        i = self._first
        e = (self._kind[i], self._a[i], self._b[i], self._at[i])
        self._a[i] = self._b[i] = None  # (no reference kept to what the slow task may free)
        self._first = (i + 1) % self.CAP
        self._n -= 1
        return e


class Charger:
    def __init__(self, clock, settings, hw_max_a, phases=3, socketed=True):
        self.clock = clock
        self.inp = Inputs()
        self.events = Events()
        self.faults = safety.Faults(clock, self._emit, settings.get("fault_retry_s") * 1000,
                                    settings.get("fault_max_retries"))
        self.limits = lim.Limits(clock)
        self.phases = phases
        self.supply_phases = phases  # output: the phases the phase switch connects (1 or 3)
        self.switchable = False  # the board has a phase switch (the station says so)
        self._phase_claims = None  # name -> 1 or 3 (claim_phases), made at the first claim
        self._phases_wanted = phases  # the fewest claimed, else the station's phases
        self._switch_to = None  # phases being switched to, until the switch settled
        self._switch_at = None  # tick at which the switch moved
        self.socketed = socketed
        self.hw_max_da = int(hw_max_a * 10)
        self.limits.claim(lim.HARDWARE, self.hw_max_da, safety=True)
        if not socketed:
            self.limits.claim(lim.CABLE, self.hw_max_da, safety=True)
        self.configure(settings)

        self._now = clock.ticks_ms()  # time stamp of the events being emitted
        self.state = None  # reported state (A, B1, C2, ...)
        self.vs = A  # vehicle state from the pilot
        self._seen_b = False
        self._diode_seen = False  # the last sample, taken under PWM, showed a good diode
        self._oob_since = None
        self._cd_since = None
        self.duty = pilot.DUTY_FULL
        self.offer_da = 0
        self.contactor = False
        self._contactor_at = 0
        self._pwm_off_at = None  # when the offer went away while the contactor was closed
        self._over_since = None
        self._fb_bad_since = None
        self._weld_pending = True  # after a boot the contacts' state is unknown
        self._weld_checked = False  # the auxiliary contact showed open since boot
        self._closes = [0] * WEAR_MAX  # ticks of the last closings (a ring; no allocation)
        self._close_n = 0  # closings since boot
        self.short_charges = 0  # charges in a row that ended within STABLE_MS (read-only outside)
        self._close_after = None  # tick before which the contactor may not close again
        self._held = False  # the hold-off was reported for the closing that waits
        self.rcd_ok = False
        self.rcd_test = False
        self.rcd_clear = False
        self._rcd_phase = _RCD_IDLE
        self._rcd_started = 0
        self.available = True
        self.authorized = False
        self.id_tag = None
        self.reserved = False  # a reservation holds the station: free charging waits
        self.session = False
        self._stopped = False  # session ended by a command: wait for unplug or a new authorization
        self.cable_da = None
        self._temp_last = -99999  # forces the first evaluation
        # socket lock (see _lock)
        self.lock_wanted = None  # output: True locked, False unlocked, None: nothing decided yet
        self.lock_retry = False  # output: try the failed move again (the station clears it)
        self.lock_hold = False  # locked without a session until its owner or a request frees it
        self.lock_owner = None  # idTag (or one of its group) that frees a held lock; None: a request
        self.unlock_on_ev_disconnect = True  # OCPP UnlockConnectorOnEVSideDisconnect
        self._lock_first = True
        self._lock_session = False  # the session as _lock saw it last
        self._lock_tag = None  # idTag of that session
        self._lock_seen = None  # the lock state last reported as an event
        self._lock_tripped = 0  # 1: the fault was raised for this failure, 2: a retry was asked
        self._unlock_asked = False
        self._emit("boot", None, None)

    def configure(self, settings):
        """Copy the settings the control loop needs into plain attributes (read every tick)."""
        self.free = settings.get("free_charging")
        self.vent_allowed = settings.get("ventilation_allowed")
        self.margin_da = int(settings.get("overcurrent_margin_a") * 10)
        self.over_ms = settings.get("overcurrent_time_ms")
        self.derate_dc = int(settings.get("temp_derate_c") * 10)
        self.shutdown_dc = int(settings.get("temp_shutdown_c") * 10)
        self.resume_dc = int(settings.get("temp_resume_c") * 10)
        self.debounce_ms = settings.get("close_debounce_ms")
        self.pilot_fault_ms = settings.get("pilot_fault_ms")
        self.c1_ms = settings.get("c1_timeout_ms")
        self.weld_ms = settings.get("weld_check_ms")
        self.rcd_test_ms = settings.get("rcd_test_timeout_ms")
        self.temp_required = settings.get("temp_sensor_required")
        self.meter_required = settings.get("meter_required")
        self.lock_keep = settings.get("lock_after_power_loss") == "keep"
        self.faults.retry_ms = settings.get("fault_retry_s") * 1000
        self.faults.max_retries = settings.get("fault_max_retries")
        self.limits.claim(lim.SETTINGS, int(settings.get("max_current_a") * 10))

    # ---- commands from the other tasks (OCPP, cards, buttons); they change inputs only ----

    def authorize(self, id_tag=None):
        self.authorized = True
        self.id_tag = id_tag
        self._stopped = False

    def forget_authorization(self):
        """An authorization no car came for (OCPP ConnectionTimeOut): no session starts with it."""
        self.authorized = False
        self.id_tag = None

    def reserve(self, held):
        """A reservation holds the station (True) or no longer does: free charging waits."""
        self.reserved = held

    def set_unlock_on_ev_disconnect(self, on):
        """Whether the socket lock opens when the car leaves (OCPP UnlockConnectorOnEVSideDisconnect)."""
        self.unlock_on_ev_disconnect = on

    def claim_phases(self, name, n):
        """Claim the supply on n phases (1 or 3; None withdraws the claim). The fewest claimed
        win; without a claim the station's phases. The switch follows through the safe sequence
        (see the module's docstring) on a board that can switch. False when n is not 1, 3 or
        None (nothing changes then)."""
        if n is not None and n != 1 and n != 3:
            return False
        claims = self._phase_claims
        if claims is None:
            claims = self._phase_claims = {}
        if n is None:
            if name in claims:
                del claims[name]
        else:
            claims[name] = n
        want = self.phases
        for k in claims:
            if claims[k] < want:
                want = claims[k]
        self._phases_wanted = want
        return True

    @property
    def phases_wanted(self):
        """The phases the claims ask for (what the supply will be once switched)."""
        return self._phases_wanted

    @property
    def switching(self):
        """A phase switch is under way: the offer is withdrawn meanwhile."""
        return self._switch_to is not None

    @property
    def plugged(self):
        """A vehicle is connected (B, C or D on the pilot)."""
        return self.vs in _CONNECTED

    @property
    def stopped(self):
        """The session was ended by a command: no new one until unplug or a new authorization."""
        return self._stopped

    def deauthorize(self, now=None):
        """Authorization withdrawn: the contactor opens in this call, the session ends."""
        self.authorized = False
        self._end_session(DEAUTHORIZED)
        self._stopped = True
        self._apply(self.clock.ticks_ms() if now is None else now)

    def stop(self, reason=LOCAL, now=None):
        """Stop command: the contactor opens in this call, the session ends."""
        self.authorized = False
        self._end_session(reason)
        self._stopped = True
        self._apply(self.clock.ticks_ms() if now is None else now)

    def set_available(self, available, now=None):
        """Operative or not (a person, or OCPP ChangeAvailability). Becoming unavailable
        withdraws the offer and opens the contactor in this call; becoming available waits for
        the next control tick, because starting an offer outside the tick would skip the diode
        check made under the new PWM."""
        self.available = available
        if not available:
            self._apply(self.clock.ticks_ms() if now is None else now)

    def unlock(self):
        """A person or the back end asks for the socket lock to open. A running session must be
        stopped first (the caller decides whether it may be); the lock opens once no current can
        flow. A lock whose last move failed tries again at once."""
        self.lock_hold = False
        self.lock_owner = None
        self._unlock_asked = True

    def hold_lock(self, owner):
        """Keep the socket locked after the session until `owner` (an idTag; its group too) is
        presented or someone asks to unlock (OCPP 3.5.4 with errata 3.5, 9.1.33)."""
        self.lock_hold = True
        self.lock_owner = owner

    def unlock_result(self):
        """After unlock(): None while it is under way, True once the feedback confirms the lock
        open, False when it failed (or something wants it locked again)."""
        st = self.inp.lock
        if self._unlock_asked or self.lock_retry or st == LOCK_MOVING:
            return None
        if self.lock_wanted:
            return None if not self.session else False
        if st == LOCK_UNLOCKED:
            return True
        return False if st == LOCK_FAILED else None

    def reset_wear(self):
        """A person vouches for the contactor (just replaced, or a bench that cycles it on
        purpose): the closings counted for wear and any hold-off are forgotten."""
        self._close_n = 0
        self.short_charges = 0
        self._close_after = None
        self._held = False

    def clear_fault(self, code):
        """A person cleared a latched fault (welded contactor replaced, configuration fixed).
        The weld check runs again before the next closing. The session the fault ended stays
        ended; a car still plugged in may start a new one (the pilot could not show whether it
        was unplugged meanwhile)."""
        self.faults.clear_permanent(code)
        self._weld_pending = True
        if not self._latched():
            self._stopped = False

    # ---- the control tick ----

    def update(self, now):
        self._now = now
        i = self.inp
        f = self.faults
        if self.duty != pilot.DUTY_OFF:
            self._read_pilot(i, now)
        connected = self.vs in _CONNECTED

        # Diode: only measurable while the PWM runs and a vehicle loads the line.
        pwm = self.duty != pilot.DUTY_FULL and self.duty != pilot.DUTY_OFF
        if pwm and connected:
            ok = pilot.diode_ok(i.low_mv)
            f.report(safety.DIODE, not ok, now, connected)
            self._diode_seen = ok
        else:
            f.report(safety.DIODE, False, now, connected)
            self._diode_seen = False

        self._rcd(i, now, connected)
        self._contactor_feedback(i, now, connected)
        self._overcurrent(i, now, connected)
        f.report(safety.METER, i.meter_failed and self.meter_required, now, connected)
        self._cable(i, now, connected)
        if i.temp_dc != self._temp_last:
            self._temperature(i, now, connected)
        elif f.active(safety.OVERTEMP) or f.active(safety.TEMP_SENSOR):
            self._temperature(i, now, connected)

        # Sessions: begin when a connected vehicle is authorized (never while out of service, nor
        # while the start could not be recorded), end when it leaves.
        if connected and not self._stopped and self.available and (self.authorized or (self.free and not self.reserved)) \
                and i.journal_ok and not self._latched():
            if not self.session:
                self.session = True
                self._emit("session", "start", self.id_tag)
        self._lock(i, now, connected)
        self._apply(now)

    def _read_pilot(self, i, now):
        f = self.faults
        raw = pilot.classify(i.high_mv)
        if raw is None:
            # Between bands: hold the previous state; a persistent gap is a pilot fault.
            if self._oob_since is None:
                self._oob_since = now
            elif self.clock.ticks_diff(now, self._oob_since) >= self.pilot_fault_ms:
                f.report(safety.PILOT, True, now, self.vs in _CONNECTED)
            return
        self._oob_since = None
        if raw != self.vs:
            if raw == A:
                self._vehicle_left(now)
            elif raw == B:
                self._seen_b = True
            if raw == C or raw == D:
                self._cd_since = now
            self.vs = raw
        connected = raw in _CONNECTED
        # A -> C/D without B, a line stuck at -12 V, or E while a vehicle could be there.
        bad = ((raw == C or raw == D) and not self._seen_b) or raw == F
        f.report(safety.PILOT, bad, now, connected)
        f.report(safety.PILOT_SHORT, raw == E, now, True)

    def _vehicle_left(self, now):
        self._end_session(EV_DISCONNECTED)
        self.short_charges = 0  # the next car starts afresh (the WEAR_MAX cap still holds)
        self._close_after = None
        self._stopped = False
        self.authorized = False
        self.id_tag = None
        self._seen_b = False
        self.rcd_ok = False
        self._rcd_phase = _RCD_IDLE
        self.rcd_test = False
        self.faults.vehicle_left(now)

    def _rcd(self, i, now, connected):
        f = self.faults
        if self._rcd_phase == _RCD_TESTING:
            if i.rcd_input or i.rcd_tripped:
                self.rcd_test = False
                self._rcd_phase = _RCD_RELEASING
            elif self.clock.ticks_diff(now, self._rcd_started) >= self.rcd_test_ms:
                self.rcd_test = False
                self._rcd_phase = _RCD_IDLE
                f.trip(safety.RCD_SELFTEST, now, connected)
            return
        if self._rcd_phase == _RCD_RELEASING:
            if not i.rcd_input:
                self.rcd_clear = True  # the station clears the driver's latch
                if not i.rcd_tripped:
                    self._rcd_phase = _RCD_IDLE
                    self.rcd_ok = True
            return
        # A real trip: the interrupt has already opened the relay.
        if i.rcd_tripped:
            self.rcd_ok = False
            f.report(safety.RCD_TRIP, True, now, connected)
            self.rcd_clear = not i.rcd_input
        else:
            f.report(safety.RCD_TRIP, False, now, connected)
            f.report(safety.RCD_SELFTEST, False, now, connected)
            if connected and not self.rcd_ok and not f.any() and self.duty != pilot.DUTY_OFF:
                self.rcd_test = True
                self._rcd_phase = _RCD_TESTING
                self._rcd_started = now

    def _contactor_feedback(self, i, now, connected):
        # A contact still closed weld_ms after an opening is welded (permanent); one that does not
        # close weld_ms after a closing is a contactor failure (transient). An open contactor
        # whose auxiliary contact shows open (or that has none) has passed the weld check.
        fb = i.feedback
        if fb is None or fb == self.contactor:
            if not self.contactor:
                self._weld_pending = False
                self._weld_checked = True
            self._fb_bad_since = None
            self.faults.report(safety.CONTACTOR, False, now, connected)
            return
        if self._fb_bad_since is None:
            self._fb_bad_since = now
            return
        if self.clock.ticks_diff(now, self._fb_bad_since) < self.weld_ms:
            return
        if fb:
            self.faults.trip(safety.WELDED, now, connected)
        else:
            self.faults.report(safety.CONTACTOR, True, now, connected)

    def _overcurrent(self, i, now, connected):
        a = i.amps_da
        # With the offer withdrawn the C1 timeout, not the overcurrent check, ends the charge.
        over = self.contactor and self.offer_da > 0 and a is not None and a > self.offer_da + self.margin_da
        if not over:
            self._over_since = None
            self.faults.report(safety.OVERCURRENT, False, now, connected)
        elif self._over_since is None:
            self._over_since = now
        elif self.clock.ticks_diff(now, self._over_since) >= self.over_ms:
            self.faults.report(safety.OVERCURRENT, True, now, connected)

    def _cable(self, i, now, connected):
        if not self.socketed:
            return
        ohms = i.pp_ohms
        if ohms is None:
            da = None
            bad = False
        else:
            amps = pilot.cable_amps(ohms, self.phases)
            da = None if amps is None else amps * 10
            bad = amps is None
        self.faults.report(safety.CABLE, bad, now, connected)
        if da != self.cable_da:
            self.cable_da = da
            self.limits.claim(lim.CABLE, da, safety=True)

    def _temperature(self, i, now, connected):
        t = i.temp_dc
        self._temp_last = t
        f = self.faults
        if t is None:
            f.report(safety.TEMP_SENSOR, self.temp_required, now, connected)
            if self.temp_required:
                return
            da = None
        else:
            f.report(safety.TEMP_SENSOR, False, now, connected)
            hot = t >= self.shutdown_dc or (f.active(safety.OVERTEMP) and t >= self.resume_dc)
            f.report(safety.OVERTEMP, hot, now, connected)
            if t <= self.derate_dc:
                da = None
            else:
                span = self.shutdown_dc - self.derate_dc
                da = self.hw_max_da - (self.hw_max_da - pilot.MIN_DA) * (t - self.derate_dc) // span
                if da < pilot.MIN_DA:
                    da = pilot.MIN_DA
        self.limits.claim(lim.TEMPERATURE, da, safety=True)

    def may_offer(self):
        """Every precondition except the vehicle being ready. With a required meter, nothing is
        offered before it gave a first believable reading: unmetered energy cannot be billed. Nor
        before the weld check of this boot: a car offered current would draw it through welded
        contacts. Nor before the socket lock is confirmed: the car gets 3 s from C to the
        closing, and a lock that takes longer (a retry) must not eat into them."""
        return (
            self.vs in _CONNECTED
            and (self.authorized or (self.free and not self.reserved))
            and not self._stopped
            and not self.faults.any()
            and self.rcd_ok
            and (not self.socketed or self.cable_da is not None)
            and self._seen_b
            and self.available
            and (self.inp.meter_ready or not self.meter_required)
            and self._weld_checked
            and (self.session or self.inp.journal_ok)
            and self._lock_closes()
        )

    def _apply(self, now):
        """Decide duty and contactor from the current inputs. Opening never waits."""
        self._now = now
        f = self.faults
        offering = self.may_offer()
        ready = self.vs == C or (self.vs == D and self.vent_allowed)
        want = self._phases_wanted
        if self.switchable and want != self.supply_phases and self._switch_to is None:
            self._switch_to = want
        switching = self._switch_to is not None
        if switching:
            self._switch_step(now)
            switching = self._switch_to is not None
        if offering and not switching:
            da = self.limits.offer(now, self.duty != pilot.DUTY_FULL)
        else:
            da = 0
        if self._latched():
            duty = pilot.DUTY_OFF  # state F: the station is out of service
            if self.session:
                # In F the pilot no longer shows whether the car is still there: the session
                # ends now, or it would never get its stop.
                self._end_session(OTHER)
                self._stopped = True
                self.authorized = False
        elif da >= pilot.MIN_DA:
            duty = pilot.duty_for(da)
        else:
            duty = pilot.DUTY_FULL
            da = 0
        if duty != self.duty or da != self.offer_da:
            self.duty = duty
            self.offer_da = da
            self._emit("offer", da, duty)

        close = offering and ready and self._lock_closes()
        if switching and close:
            # The phase switch waits for the contactor to open: at once when the car no longer
            # draws current (or its meter cannot tell: then after c1_timeout_ms below).
            a = self.inp.amps_da
            if not self.contactor or (a is not None and a < LOCK_AMPS_DA):
                close = False
        if close and da == 0:
            # Offer withdrawn but nothing unsafe: the vehicle has c1_timeout_ms to leave C.
            if not self.contactor:
                close = False
            elif self._pwm_off_at is None:
                self._pwm_off_at = now
            elif self.clock.ticks_diff(now, self._pwm_off_at) >= self.c1_ms:
                close = False
        else:
            self._pwm_off_at = None
        if close and not self.contactor:
            # Closing is the one debounced transition, and it needs a diode check made while
            # this offer's PWM was already on the line.
            close = (
                self._diode_seen
                and self._cd_since is not None
                and self.clock.ticks_diff(now, self._cd_since) >= self.debounce_ms
                and not self._weld_pending
                and self._wear_allows(now)
            )
        if close != self.contactor:
            if close:
                self._closes[self._close_n % WEAR_MAX] = now
                self._close_n += 1
                self._held = False
            else:
                self._opened(now)
            self.contactor = close
            self._contactor_at = now
            self._fb_bad_since = None
            self._emit("contactor", close, None)

        state = self._state_name()
        if state != self.state:
            self.state = state
            self._emit("state", state, None)

    def _switch_step(self, now):
        """Move the phase switch once the contactor is open and its auxiliary contact shows it;
        end the switching SWITCH_SETTLE_MS later."""
        if self._switch_at is None:
            if self._phases_wanted == self.supply_phases:
                self._switch_to = None  # called off before the switch moved
                return
            fb = self.inp.feedback
            if self.contactor or fb:
                return
            self.supply_phases = self._switch_to
            self._switch_at = now
            self._emit("phases", self._switch_to, None)
        elif self.clock.ticks_diff(now, self._switch_at) >= SWITCH_SETTLE_MS:
            self._switch_to = None
            self._switch_at = None

    def _latched(self):
        f = self.faults
        return f.active(safety.WELDED) or f.active(safety.CONFIG)

    def _opened(self, now):
        """The contactor opens: the weld check starts, and a short charge counts towards wear."""
        self._weld_pending = True
        if self.clock.ticks_diff(now, self._contactor_at) < STABLE_MS:
            self.short_charges += 1
        else:
            self.short_charges = 0
        k = self.short_charges - WEAR_FREE
        if k < 0:
            self._close_after = None
        else:
            hold = HOLD_MAX_MS if k >= 8 else HOLD_BASE_MS << k
            if hold > HOLD_MAX_MS:
                hold = HOLD_MAX_MS
            self._close_after = self.clock.ticks_add(now, hold)

    def _wear_allows(self, now):
        """Whether the contactor may close now as far as its wear goes; the first time a closing
        has to wait, a "holdoff" event says how long and why."""
        after = self._close_after
        reason = HOLD_SHORT
        if self._close_n >= WEAR_MAX:
            window = self.clock.ticks_add(self._closes[self._close_n % WEAR_MAX], WEAR_WINDOW_MS)
            if after is None or self.clock.ticks_diff(window, after) > 0:
                after = window
                reason = HOLD_RATE
        if after is None:
            return True
        wait = self.clock.ticks_diff(after, now)
        if wait <= 0:
            return True
        if not self._held:
            self._held = True
            self._emit("holdoff", wait, reason)
        return False

    def _lock(self, i, now, connected):
        """The socket lock, on boards that have one (i.lock not None).

        Locked for the whole session, before the contactor may close, and for as long as any
        current can flow; open again at the session's end once none can (_lock_quiet), unless it
        is held: after the vehicle unplugged its end with unlock_on_ev_disconnect off, after the
        back end refused the session's idTag (ChargePoint: hold_lock), or at boot with
        lock_after_power_loss "keep" when it was found locked. unlock() frees a held lock.
        A move that the feedback does not confirm is the LOCK fault, a transient one: after its
        retry pause the move is tried again (lock_retry), and fault_max_retries per vehicle apply.
        """
        st = i.lock
        if st is None:
            return
        if self._lock_first:
            self._lock_first = False
            if self.lock_keep and st == LOCK_LOCKED:
                self.lock_hold = True  # (the station names the owner: the session cut by the power loss)
        if self.session:
            if not self._lock_session:
                self._lock_session = True
                self.lock_hold = False  # the new session owns the lock now
                self.lock_owner = None
                self._unlock_asked = False
            self._lock_tag = self.id_tag
        elif self._lock_session:
            self._lock_session = False
            if self.vs == A and not self.unlock_on_ev_disconnect:
                self.hold_lock(self._lock_tag)
        want = self.session or self.lock_hold
        was = self.lock_wanted if self.lock_wanted is not None else st == LOCK_LOCKED  # (at boot: as found)
        if not want and was and not self._lock_quiet(i, now):
            want = True  # current may still flow: stays locked until none can
        if want != self.lock_wanted:
            self.lock_wanted = want
            self._lock_tripped = 2  # a new move: a "failed" read now is the last one's
        elif self._unlock_asked and not want and st == LOCK_FAILED:
            self.lock_retry = True  # a request is a fresh attempt, whatever the fault's pause
            self._lock_tripped = 2
        if not want:
            self._unlock_asked = False
        f = self.faults
        if st != LOCK_FAILED:
            self._lock_tripped = 0
        elif self._lock_tripped == 0:
            self._lock_tripped = 1
            f.trip(safety.LOCK, now, connected)
        elif self._lock_tripped == 1 and not f.active(safety.LOCK):
            self._lock_tripped = 2
            self.lock_retry = True
        f.report(safety.LOCK, False, now, connected)  # (clears retry_ms after the trip)
        if st != self._lock_seen:
            self._lock_seen = st
            self._emit("lock", st, self.lock_hold)

    def _lock_quiet(self, i, now):
        """No current can flow through the socket: the contactor commanded open for LOCK_OPEN_MS,
        its auxiliary contact (when fitted) open, the meter (when it measures current) below
        LOCK_AMPS_DA. Never with a welded contactor: the socket may still be live."""
        if self.contactor or i.feedback or self.faults.active(safety.WELDED):
            return False
        if self.clock.ticks_diff(now, self._contactor_at) < LOCK_OPEN_MS:
            return False
        a = i.amps_da
        return a is None or a < LOCK_AMPS_DA

    def _lock_closes(self):
        """The contactor may close (or stay closed) as far as the lock goes: none fitted, or it
        is wanted and confirmed locked. Anything else opens it in this tick."""
        st = self.inp.lock
        return st is None or (st == LOCK_LOCKED and self.lock_wanted is True)

    def _state_name(self):
        if self.duty == pilot.DUTY_OFF:
            return F
        names = _X1 if self.duty == pilot.DUTY_FULL else _X2
        return names.get(self.vs, self.vs)

    def _end_session(self, reason):
        if self.session:
            self.session = False
            self._emit("session", "stop", reason)

    def _emit(self, kind, a, b):
        self.events.put(kind, a, b, self._now)
