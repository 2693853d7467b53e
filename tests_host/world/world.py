"""The physics behind the fakes: one charging point's surroundings, on virtual time.

`World(profile)` builds the car, contactor, RCD, PP cable, NTC, (if the board has a `meter`
section) the Modbus meter and (if it has a `reader` section) the card reader's hardware with the
cards held on it (world/card.py) from a validated board profile and hooks them into the fake
`machine` module. The runner calls `advance(now_ms)` before each firmware step; `apply(verb, args)`
carries out a scenario action; `truth_wh` is the energy that really flowed.

Pilot line: the EVSE drives +12 V / -12 V through 1 kOhm (PWM on pilot.pwm_pin; duty 65535 =
steady +12 V; 0, or the pin low without PWM = steady -12 V). With the car's resistance R the
high plateau is 0.7 + 11.3 * R / (R + 1000) V (12 V without a car); the low plateau is -12 V
(the diode blocks) or -(11.3 * R / (R + 1000)) V with the diode missing; a pilot shorted to PE
or an EVSE without power reads 0 V. The ADC sees the line through pilot.cal (linear between
adc_mv_at_minus12 and adc_mv_at_plus12). Both plateaus are precomputed whenever the car or
the power changes; an ADC read picks one by the phase of the EVSE output at that virtual
microsecond (`machine.hw_set_analog_pwm`; for 1 kHz: high while (t_us % 1000) * 65535 <
duty_u16 * 1000), so a duty the firmware just set is seen by its very next read and a read
allocates nothing.

Time: `advance` walks through every event due in the interval (car reactions, contact
movements, RCD trip delays) in order, integrating energy piecewise in between. Output changes
the firmware made since the last call count from the previous `advance` time. Inputs the world
drives (contact feedback, RCD output) fire the firmware's pin IRQs at the event's time.

Power: `power_cut()` de-energises the coil, puts 0 V on the pilot (the car sees E and stops
drawing) and silences the meter; the car, cable and temperature persist. It does not touch the
fakes: the runner stops the firmware and calls `machine.hw_reset()` as it sees fit;
`power_restored()` re-installs the world's hooks (`install()`) and re-drives its inputs.

Actions (`apply`, VERBS): plug [CABLE_AMPS=32], unplug, ev-ready AMPS [PHASES=board's],
ev-pause, ev-vent, ev-ignore-offer, ev-chatter B_MS C_MS (S2 toggles by itself), ev-steady, rcd-leak MA (0 clears), rcd-broken, rcd-ok, weld,
feedback-lost (the contactor's auxiliary contact is disconnected: feedback always open),
feedback-ok,
diode-fault, pilot-short, pilot-ok (clears both pilot faults), temp C, meter-fail, meter-ok
(clears every meter fault), meter-noise PERCENT (the meter gets a fraction), card UID_HEX (a
card is held on the reader: 4, 7 or 10 bytes on an MFRC522 / PN532, 3 (Wiegand 26) or 4
(Wiegand 34) on a Wiegand reader, which sends it once), card-off (it is taken away), card-broken
KIND (the next read goes wrong: crc, bcc, collision, parity, removed on an MFRC522; checksum,
lcs, nack, error, noanswer on a PN532; parity, bits on Wiegand). Args may be typed values (from
scenario.parse) or strings. ValueError when an action cannot apply (no meter, no NTC, no reader,
bad argument).

Socket lock (boards with a `lock` section, world/lock.py): lock-jam (the actuator's pin is stuck
where it is), lock-ok (it moves again), pull (a person pulls the plug out of the socket: refused
while the pin holds it, else cable and car are gone; `apply` returns {"pull": "refused" or
"done"}, and `pulls_refused` counts the refusals). With the plug held, `unplug` only takes the
car off its end of the cable: the cable stays in the socket (PP still reads it) until a `pull`;
a `plug` then plugs the car into that cable again.

The house and the grid (world/grid.py, built when the board has a `grid_meter` beside a Modbus
`meter`, or at the first of its verbs): house L1 L2 L3 (household amps per phase), pv WATTS,
pv-day clear|clouds [PEAK_W [HOURS]], grid-meter-fail, grid-meter-ok. The Modbus meter hangs on
an RS-485 Bus (world/modbus_meter.py), which the grid meter shares.

Phase switch (boards with a `phase_switch` section, world/phase_switch.py): a second
contactor whose coil (phase_switch.pin, honouring active_high) connects L2 and L3 to the outlet.
The outlet has 3 phases while it is energised, 1 (L1) while it is released: at power-up, during
a power cut, and while the board drives nothing on the pin; without the section, the board's
`phases`. The car draws on min(its phases, the outlet's): the charger's meter (amps on L2 and L3
read 0 on 1 phase), truth_wh and the grid model all follow `phases_now()`. A car still drawing
when the outlet drops to 1 phase keeps its current on L1; that change was made under load
(`phase_switch.switch_under_load`, see PhaseSwitch; `switches` counts every change).
"""
import machine

from world.cable import Cable
from world.lock import LockActuator
from world.car import Car, decode_duty, high_volts
from world.rcd import Rcd
from world.relay import Relay
from world.thermal import Thermal

VOLTS = 230

_PERIOD = 1 << 30  # ticks_ms wrap (MicroPython)
_HALF = _PERIOD >> 1

# EVSE output modes
OUT_DEAD = 0   # no power: 0 V
OUT_HIGH = 1   # steady +12 V
OUT_LOW = 2    # steady -12 V
OUT_PWM = 3

# scenario verbs the world carries out (the runner handles wait, net, remote, token, power-cut,
# limit, stop, clear-fault)
VERBS = ("plug", "unplug", "ev-ready", "ev-pause", "ev-vent", "ev-ignore-offer", "ev-chatter", "ev-steady", "rcd-leak",
         "rcd-broken", "rcd-ok", "weld", "diode-fault", "pilot-short", "pilot-ok", "temp",
         "meter-fail", "meter-ok", "meter-noise", "meter-address", "meter-baud", "card",
         "card-off", "card-broken", "feedback-lost", "feedback-ok", "lock-jam", "lock-ok", "pull",
         "house", "pv", "pv-day", "grid-meter-fail", "grid-meter-ok")


def _ticks_diff(a, b):
    return ((a - b + _HALF) % _PERIOD) - _HALF


def _num(v, what, verb):
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ValueError("%s: %s: expected an integer, got %r" % (verb, what, v))


class World:
    phase_switch = None  # world/phase_switch.py PhaseSwitch, on a board with a `phase_switch` section

    def __init__(self, profile):
        self.profile = profile
        self.phases = profile.get("phases", 3)
        self.t = 0                 # world time, ms, monotonic (starts at the first advance)
        self._last = None          # last now_ms given to advance
        self.powered = True
        p = profile["pilot"]
        self._pwm_pin = p["pwm_pin"]
        self._pilot_adc_pin = p["adc_pin"]
        cal = p["cal"]
        self._cal_lo = cal["adc_mv_at_minus12"]
        self._cal_span = cal["adc_mv_at_plus12"] - self._cal_lo
        self.car = Car(self.phases)
        self.car.max_da = profile.get("max_current_a", 32) * 10
        self.relay = Relay(profile["relay"])
        ps = profile.get("phase_switch")
        if ps:  # (else the class's None)
            from world.phase_switch import PhaseSwitch

            self.phase_switch = PhaseSwitch(ps, self)  # L2 and L3 to the outlet
        self.rcd = Rcd(profile["rcd"])
        prox = profile.get("proximity")
        self.cable = Cable(prox) if prox else None
        lk = profile.get("lock")
        self.lock = LockActuator(lk) if lk else None
        self.pulls_refused = 0
        self._lock_level = None
        self._on_lock_fns = (self._on_lock_pin0, self._on_lock_pin1)
        temp = profile.get("temperature")
        self.thermal = Thermal(temp) if temp and temp.get("adc_pin") is not None else None
        self.meter = None
        self._meter_cfg = profile.get("meter")
        self.meter_fail = False
        self.bus = None            # the meter's RS-485 line (a Modbus meter)
        self.grid = None           # the house, PV and grid meter (world/grid.py), once needed
        self._energy = 0           # deci-amps * phases * ms
        # EVSE output as last observed
        self._mode = -1
        self._duty = -1
        self._freq = 0
        self._load = -1            # pilot load key (car state) the levels were computed for
        # precomputed pilot plateaus at the ADC
        self.high_mv = 0
        self.low_mv = 0
        self._fb_level = None
        self._rcd_level = None
        self._on_relay_fn = self._on_relay_pin
        self._on_test_fn = self._on_test_pin
        if self._meter_cfg:
            from world.modbus_meter import MeterSlave
            m = self._meter_cfg
            if m["model"] == "s0":
                from world.s0 import S0Source

                self.meter = S0Source(m["pin"], m["impulses_per_kwh"], active_high=m["active_high"])
            else:
                from world.modbus_meter import Bus

                self.bus = Bus(None, m["uart"])
                self.meter = self.bus.add(MeterSlave(m["model"], m["address"], self._meter_source,
                                                     m["baudrate"]))
        if profile.get("grid_meter") and self.bus is not None:
            self._grid()
        self.card = None                   # the card reader's hardware (world/card.py)
        if profile.get("reader"):
            from world.card import make_device

            self.card = make_device(profile["reader"])
        self.install()

    # -- hooks

    def install(self):
        """(Re)connect to the fake machine module, e.g. after machine.hw_reset()."""
        machine.hw_set_analog_pwm(self._pilot_adc_pin, self._pwm_pin, self)  # high_mv / low_mv
        if self.cable is not None:
            machine.hw_set_analog(self.cable.adc_pin, self.cable.adc)
        if self.thermal is not None:
            machine.hw_set_analog(self.thermal.adc_pin, self.thermal.adc)
        machine.hw_on_output(self.relay.pin, self._on_relay_fn)
        if self.phase_switch is not None:
            machine.hw_on_output(self.phase_switch.pin, self.phase_switch.on_pin)
        if self.rcd.test_pin is not None:
            machine.hw_on_output(self.rcd.test_pin, self._on_test_fn)
        if self.meter is not None:
            if self._meter_cfg["model"] == "s0":
                self.meter.install()
            else:
                machine.hw_attach_uart(self._meter_cfg["uart"], self.bus)
        if self.card is not None:
            self.card.install()
        if self.lock is not None:
            for k, pin in enumerate(self.lock.pins):
                machine.hw_on_output(pin, self._on_lock_fns[k])
            self._lock_level = None
        self._fb_level = None
        self._rcd_level = None
        self._mode = -1
        self._observe()

    def _on_relay_pin(self, level):
        self.relay.command(self.powered and self.relay.energised_by(level), self.t)

    def _on_lock_pin0(self, level):
        self.lock.set_drive(0, self.lock.on_by(level), self.powered, self.t)
        self._sync()

    def _on_lock_pin1(self, level):
        self.lock.set_drive(1, self.lock.on_by(level), self.powered, self.t)
        self._sync()

    def _on_test_pin(self, level):
        self.rcd.set_test(self.rcd.test_active_by(level), self.t)
        self._sync()

    # -- the EVSE's outputs

    def _read_output(self):
        """(mode, duty) of the EVSE's pilot output now."""
        if not self.powered:
            return OUT_DEAD, 0
        pwm = machine.hw_pwm(self._pwm_pin)
        if pwm is None:
            return (OUT_HIGH, 65535) if machine.hw_level(self._pwm_pin) else (OUT_LOW, 0)
        freq, duty = pwm
        self._freq = freq
        if duty >= 65535:
            return OUT_HIGH, 65535
        if duty <= 0:
            return OUT_LOW, 0
        return OUT_PWM, duty

    def offer_da(self):
        """The offer as a car on the line would read it (deci-amps, 0 = none)."""
        if self._mode != OUT_PWM or self.car.short:
            return 0
        if self._freq < 900 or self._freq > 1100:
            return 0
        return decode_duty(self._duty)

    def _observe(self):
        """Read the firmware's outputs and let the world react (at the current world time)."""
        r = self.relay
        r.command(self.powered and r.energised_by(machine.hw_level(r.pin)), self.t)
        if self.phase_switch is not None:
            self.phase_switch.update()
        if self.rcd.test_pin is not None:
            self.rcd.set_test(self.rcd.test_active_by(machine.hw_level(self.rcd.test_pin)),
                              self.t)
        lk = self.lock
        if lk is not None:
            for k, pin in enumerate(lk.pins):
                lk.set_drive(k, lk.on_by(machine.hw_level(pin)), self.powered, self.t)
        mode, duty = self._read_output()
        self._mode = mode
        self._duty = duty
        self.car.perceive(self.offer_da(), self.t)
        self._sync()

    # -- derived levels

    def _volts_to_adc(self, v):
        return int(self._cal_lo + (v + 12.0) * self._cal_span / 24.0 + 0.5)

    def _refresh_pilot(self):
        car = self.car
        key = ((car.plugged * 2 + car.s2) * 2 + car.vent) * 4 + car.diode * 2 + car.short
        if not self.powered:
            key = -2
        if key == self._load:
            return
        self._load = key
        if not self.powered or car.short:
            hi = lo = 0.0
        else:
            r = car.ohms()
            hi = high_volts(r)
            if r is None or car.diode:
                lo = -12.0
            else:
                lo = -(11.3 * r / (r + 1000))
        self.high_mv = self._volts_to_adc(hi)
        self.low_mv = self._volts_to_adc(lo)

    def _sync(self):
        """Bring the world's outputs (pilot levels, feedback, RCD input) up to date."""
        self._refresh_pilot()
        r = self.relay
        if r.feedback_pin is not None:
            lv = r.feedback_level()
            if lv != self._fb_level:
                self._fb_level = lv
                machine.hw_set_input(r.feedback_pin, lv)
        lv = self.rcd.level()
        if lv != self._rcd_level:
            self._rcd_level = lv
            machine.hw_set_input(self.rcd.pin, lv)
        lk = self.lock
        if lk is not None:
            lv = lk.feedback_level()
            if lv != self._lock_level:
                self._lock_level = lv
                machine.hw_set_input(lk.feedback_pin, lv)

    # -- time

    def _next_due(self):
        n = None
        for d in (self.car.next_due(), self.relay.next_due(), self.rcd.next_due(),
                  self.lock.next_due() if self.lock is not None else None):
            if d is not None and (n is None or d < n):
                n = d
        return n

    def _flowing(self):
        """Deci-amps per phase flowing through the contacts now."""
        car = self.car
        if self.powered and self.relay.closed and car.charging():
            return car.draw_da
        return 0

    def phases_now(self):
        """The phases the car draws on: min(the car's, the outlet's: the phase switch's, else
        the board's)."""
        ps = self.phase_switch
        return 1 if self.car.phases == 1 or (self.phases if ps is None else ps.phases()) == 1 else 3

    def _integrate(self, dt):
        if dt > 0:
            da = self._flowing()
            if da:
                self._energy += da * self.phases_now() * dt
            if self.grid is not None:
                self.grid.step(dt)

    def advance(self, now_ms):
        """Move the physics to now_ms (the firmware clock's ticks_ms, wrap-aware)."""
        if self._last is None:
            self._last = now_ms
        dt = _ticks_diff(now_ms, self._last)
        self._last = now_ms
        if dt < 0:
            dt = 0
        end = self.t + dt
        self._observe()
        while True:
            d = self._next_due()
            if d is None or d > end:
                break
            if d > self.t:
                self._integrate(d - self.t)
                self.t = d
            self.car.step(self.t)
            self.relay.step(self.t)
            self.rcd.step(self.t)
            if self.lock is not None:
                self.lock.step(self.t)
            self._sync()
        self._integrate(end - self.t)
        self.t = end
        if self.meter is not None and self._meter_cfg["model"] == "s0":
            self.meter.advance(self.t, self.truth_wh)
        if self.card is not None:
            self.card.advance(self.t)

    @property
    def truth_wh(self):
        """Energy delivered so far, Wh: 230 V * amps * phases over time with contacts closed."""
        return self._energy * VOLTS / 36000000.0

    def amps(self):
        """Current per phase flowing now, A (float)."""
        return self._flowing() / 10.0

    def status(self):
        return {"car": self.car.state(), "amps": self.amps(), "phases": self.phases_now(),
                "lock": None if self.lock is None else ("locked" if self.lock.locked() else "open"),
                "contacts": self.relay.closed, "rcd": self.rcd.tripped,
                "wh": int(self.truth_wh * 10 + 0.5) / 10, "power": self.powered,
                "temp": self.thermal.celsius if self.thermal is not None else None}

    # -- meter

    def _meter_source(self):
        a = self._flowing() / 10.0
        v = float(VOLTS) if self.powered else 0.0
        if self.phases_now() == 1:
            amps = [a, 0.0, 0.0]
        else:
            amps = [a, a, a]
        return {"volts": [v, v, v], "amps": amps, "import_wh": self.truth_wh}

    def _grid(self):
        if self.grid is None:
            from world.grid import Grid

            self.grid = Grid(self)
        return self.grid

    def _need_meter(self, verb):
        if self.meter is None:
            raise ValueError("%s: board %r has no meter" % (verb, self.profile.get("name")))
        return self.meter

    # -- power

    def power_cut(self):
        if not self.powered:
            return
        self.powered = False
        self.relay.command(False, self.t)
        if self.lock is not None:
            self.lock.power(False, self.t)  # a motor stays put, a solenoid's spring lets go
        self.car.power_lost()
        if self.meter is not None:
            self.meter.dead = True
        if self.grid is not None:
            self.grid.power()
        if self.card is not None:
            self.card.power(False)
        self._observe()

    def power_restored(self):
        if self.powered:
            return
        self.powered = True
        if self.meter is not None:
            self.meter.dead = self.meter_fail
        if self.grid is not None:
            self.grid.power()
        if self.card is not None:
            self.card.power(True)
        self.install()

    # -- scenario actions

    def apply(self, verb, args=()):
        """Carry out one scenario action (see VERBS); ValueError if it cannot be applied."""
        car = self.car
        t = self.t
        n = len(args)
        result = None
        if verb == "plug":
            amps = _num(args[0], "cable amps", verb) if n else 32
            if self.cable is not None:
                if self._held():
                    if n and amps != self.cable.amps:
                        raise ValueError("plug: the socket holds a locked %d A cable" % self.cable.amps)
                else:
                    self.cable.plug(amps)
            car.plug(self.offer_da(), t)
        elif verb == "unplug":
            car.unplug()
            if self.cable is not None and not self._held():
                self.cable.unplug()  # the driver takes the cable along
        elif verb in ("lock-jam", "lock-ok", "pull"):
            result = self._lock_action(verb)
        elif verb in VERBS[-5:]:
            self._grid().apply(verb, args)
        elif verb == "ev-ready":
            if not n:
                raise ValueError("ev-ready: expected AMPS [PHASES]")
            amps = _num(args[0], "amps", verb)
            phases = _num(args[1], "phases", verb) if n > 1 else self.phases
            if phases not in (1, 3):
                raise ValueError("ev-ready: phases must be 1 or 3, got %r" % (phases,))
            car.set_ready(amps * 10, phases, t)
        elif verb == "ev-pause":
            car.pause()
        elif verb == "ev-vent":
            car.set_vent(True)
        elif verb == "ev-ignore-offer":
            car.ignore_offers(t)
        elif verb == "ev-chatter":
            if n < 2:
                raise ValueError("ev-chatter: expected B_TIME C_TIME")
            car.chatter(_num(args[0], "B_TIME", verb), _num(args[1], "C_TIME", verb), t)
        elif verb == "ev-steady":
            car.chatter(0, 0, t)
        elif verb == "rcd-leak":
            self.rcd.set_leak(_num(args[0], "milliamps", verb) if n else 0, t)
        elif verb == "rcd-broken":
            self.rcd.set_broken(True, t)
        elif verb == "rcd-ok":
            self.rcd.set_broken(False, t)
        elif verb == "weld":
            self.relay.welded = True
        elif verb == "feedback-lost" or verb == "feedback-ok":
            if self.relay.feedback_pin is None:
                raise ValueError("%s: board %r has no contactor feedback input" % (verb, self.profile.get("name")))
            self.relay.feedback_lost = verb == "feedback-lost"
        elif verb == "diode-fault":
            car.diode = False
        elif verb == "pilot-short":
            car.short = True
        elif verb == "pilot-ok":
            car.short = False
            car.diode = True
        elif verb == "temp":
            if self.thermal is None:
                raise ValueError("temp: board %r has no NTC input" % self.profile.get("name"))
            if not n:
                raise ValueError("temp: expected CELSIUS")
            self.thermal.set(float(args[0]))
        elif verb == "meter-fail":
            self._need_meter(verb).dead = True
            self.meter_fail = True
        elif verb == "meter-ok":
            m = self._need_meter(verb)
            self.meter_fail = False
            m.dead = not self.powered
            m.noise = 0
            m.late_ms = 0
            m.wrong_address = False
            m.short_pulses = False
        elif verb == "meter-noise":
            m = self._need_meter(verb)
            if not n:
                raise ValueError("meter-noise: expected PERCENT")
            m.noise = _num(args[0], "percent", verb) / 100.0  # a fraction: 1 % is not 100 %
            m.short_pulses = m.noise > 0  # on an S0 line: glitches the meter must reject
        elif verb == "meter-address" or verb == "meter-baud":
            m = self._need_meter(verb)
            if not hasattr(m, "address"):
                raise ValueError("%s: the board's meter is not on a Modbus bus" % verb)
            if verb == "meter-address":
                m.address = _num(args[0], "address", verb)  # the meter was set up differently
            else:
                m.baudrate = _num(args[0], "baud", verb)
        elif verb == "card" or verb == "card-off" or verb == "card-broken":
            dev = self.card
            if dev is None:
                raise ValueError("%s: board %r has no card reader" % (verb, self.profile.get("name")))
            if verb == "card-off":
                dev.remove()
            elif not n:
                raise ValueError("%s: expected %s" % (verb, "UID" if verb == "card" else "KIND"))
            elif verb == "card":
                from world.card import parse_uid

                uid = parse_uid(args[0], verb)
                if len(uid) not in dev.lengths:
                    raise ValueError("card: UID: this board's %s reader takes %s bytes, got %d"
                                     % (self.profile["reader"]["type"],
                                        " or ".join([str(k) for k in dev.lengths]), len(uid)))
                dev.present(uid)
            else:
                dev.break_next(str(args[0]))
        else:
            raise ValueError("unknown world action %r (expected one of %s)"
                             % (verb, ", ".join(VERBS)))
        self._observe()
        return result

    def _held(self):
        """A plug is in the socket and the lock's pin holds it."""
        return self.lock is not None and self.cable is not None and self.cable.amps is not None \
            and self.lock.holds_plug()

    def _lock_action(self, verb):
        if verb == "pull":
            if self.cable is None:
                raise ValueError("pull: board %r has a tethered cable" % self.profile.get("name"))
            if self.cable.amps is None:
                raise ValueError("pull: no plug in the socket")
            if self._held():
                self.pulls_refused += 1
                return {"pull": "refused", "refused": self.pulls_refused}
            self.car.unplug()
            self.cable.unplug()
            return {"pull": "done"}
        if self.lock is None:
            raise ValueError("%s: board %r has no socket lock" % (verb, self.profile.get("name")))
        self.lock.jam(verb == "lock-jam", self.t)
        return None
