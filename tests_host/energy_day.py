"""A simulated day for energy managers, side by side: PV, a house, a car, a charger, two meters.

Fast and deterministic (CPython, pure Python; never imported by the firmware). It measures how a
controller shares a house connection with a car, so that ours (firmware/energy.py) can be put
beside the anchors' algorithms reimplemented in tests_host/energy_anchors.py (SmartEVSE, WARP);
tools/energy_baselines.py prints the figures, docs/energy.md ("Against the anchors'
algorithms") reads them.

The world moves in rounds of TICK_MS (100 ms: the station's service round); its inputs change
once a second:
- PV: tests_host/world/grid.py's day model (PvDay: `clear` or `clouds`, the same sun and the same
  deterministic cumulus sequence as the scenario verb `pv-day`), or a constant, spread evenly
  over the three phases.
- House: a constant load per phase plus optional events (House), each on one phase or all three,
  optionally cycling on and off (an oven's thermostat).
- Car: three phases or one, a maximum current, plugged in from the start and ready from
  READY_MS (2 s) on. It follows a changed offer CAR_DELAY_MS (1 s) later, draws min(offer, its
  maximum) on min(its phases, the supply's) and nothing below 6 A (the PWM is off then). The
  contactor is closed while the car draws: a closing is a start, an opening a stop.
- Charger: offers what the controller asks for (floored to 0.1 A, capped at the station's
  maximum; below 6 A nothing). With a phase switch (Day.switchable) a change of the phases asked
  for goes through the firmware's safe sequence (firmware/charger.py): the offer is withdrawn,
  once the car has stopped drawing (the contactor open) the switch moves, SWITCH_SETTLE_MS (2 s)
  later the offer comes back.
- Meters: every GRID_EVERY_MS (500 ms), GRID_PHASE_MS (200 ms) after the whole second (a jump of
  the house is seen 200 ms after it, not in the same instant), the grid meter reads the house
  connection (per phase, A, signed: house + car - PV / 3 / 230 V; and the signed total power) and
  the charger's own meter reads the car right after it (the station asks for it then:
  firmware/station.py).

A controller has one method, `step(now_ms, readings) -> (amps offered or 0, phases wanted)`,
called every round with a Readings (see there); `phases wanted` matters on a board with a phase
switch only.

Metrics (Result), integrated every round from the state in force during it:
- car_kwh: what the car drew; surplus_kwh: the part of it the PV's surplus over the house
  covered, min(car power, max(0, PV - house power)), as tests_host/test_energy_scenarios.py
  counts it (there second by second); import_kwh = car_kwh - surplus_kwh, the car's grid import.
- starts, stops: contactor closings and openings, except those of a phase switch made while the
  car was charging: that is one `switches`; its opening counts as a stop only when the car does
  not draw again within RESUME_MS of the re-offer. A switch made while the car is not charging (a
  controller that picks the phases before it starts) moves no load and is not counted.
- over_longest_ms, over_total_ms: with Day.fuse_a set, the longest run and the total time during
  which any phase's |grid current| exceeded it (to the round: 100 ms).
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for _p in (ROOT, HERE, os.path.join(HERE, "fakes")):  # (world/world.py imports the fake `machine`)
    if _p not in sys.path:
        sys.path.append(_p)

from firmware.charger import SWITCH_SETTLE_MS  # noqa: E402  (the safe sequence's settling time, 2 s)
from world import grid as grid_mod  # noqa: E402

VOLTS = 230
TICK_MS = 100
GRID_EVERY_MS = 500
GRID_PHASE_MS = 200  # the readings fall at 200 ms, 700 ms: not on the whole seconds the world's inputs change at
CAR_DELAY_MS = 1000
READY_MS = 2000  # the car asks for charge this long after the start (the scenarios' `plug`, `wait 2s`, `ev-ready`)
RESUME_MS = 60000
MIN_A = 6.0


class PvDay:
    """PV watts at t ms: world/grid.py's day (`kind` clear or clouds, PEAK_W, HOURS, as `pv-day`),
    or `kind` const: PEAK_W all the time."""

    def __init__(self, kind, peak_w, hours=None):
        self.kind = kind
        self.peak_w = peak_w
        self.hours = hours
        self._grid = None
        if kind != "const":
            world = _NoWorld()
            self._grid = grid_mod.Grid(world)
            args = [kind, str(peak_w)] + ([str(hours)] if hours is not None else [])
            self._grid.apply("pv-day", args)  # the day starts at world time 0

    def watts(self, t_ms):
        if self._grid is None:
            return float(self.peak_w)
        return self._grid.pv_now(t_ms)


class _NoWorld:
    """What world/grid.py's Grid reads of its world when nothing but the PV is asked of it."""
    profile = {}
    bus = None
    t = 0


class House:
    """Household amps per phase: `base` (three numbers) plus `events`, each
    (start_s, end_s, phase 0..2 or None for all three, amps[, on_s, off_s]): on from start_s to
    end_s, cycling on_s on / off_s off when given."""

    def __init__(self, base, events=()):
        self.base = [float(a) for a in base]
        self.events = [tuple(e) for e in events]

    def amps(self, t_s):
        a = list(self.base)
        for e in self.events:
            start, end, phase, amps = e[0], e[1], e[2], e[3]
            if not start <= t_s < end:
                continue
            if len(e) > 4 and (t_s - start) % (e[4] + e[5]) >= e[4]:
                continue  # (the thermostat's off spell)
            if phase is None:
                a[0] += amps
                a[1] += amps
                a[2] += amps
            else:
                a[phase] += amps
        return a


class Day:
    """One simulated run's world. mode: what the controllers are asked for, "solar" (charge from
    the surplus) or "smart" (keep the fuse); fuse_a: the main fuse per phase (0: none, no overshoot
    counted); station_max_a: the charger's own maximum (max_current_a)."""

    def __init__(self, name, seconds, pv, house, car_phases=3, car_max_a=16.0, switchable=False, fuse_a=0.0,
                 mode="solar", station_max_a=32.0, about=""):
        self.name = name
        self.seconds = seconds
        self.pv = pv
        self.house = house
        self.car_phases = car_phases
        self.car_max_a = car_max_a
        self.switchable = switchable
        self.fuse_a = fuse_a
        self.mode = mode
        self.station_max_a = station_max_a
        self.about = about


class Readings:
    """What a controller sees in a round. Meter values hold until the next reading.

    grid_at: tick of the last grid reading (None before the first); grid_a: its per-phase
    currents, A, signed (negative: export; a controller that wants a meter's magnitudes takes
    abs); grid_w: its total power, W, signed. own_at, own_a, own_w: the charger's meter (the car's
    currents per phase, A, and power, W), read right after. ready: the car asks for charge (from
    READY_MS on); offer_a: the offer in force (0: none); contactor: closed; supply_phases: what the phase switch connects (the station's phases without
    one); switching: a phase switch under way (the offer is withdrawn meanwhile); switchable: the
    board has a phase switch; station_max_a: the charger's maximum."""

    __slots__ = ("grid_at", "grid_a", "grid_w", "own_at", "own_a", "own_w", "ready", "offer_a", "contactor",
                 "supply_phases", "switching", "switchable", "station_max_a")

    def __init__(self, switchable, station_max_a):
        self.grid_at = None
        self.grid_a = [0.0, 0.0, 0.0]
        self.grid_w = 0.0
        self.own_at = None
        self.own_a = [0.0, 0.0, 0.0]
        self.own_w = 0.0
        self.ready = False
        self.offer_a = 0.0
        self.contactor = False
        self.supply_phases = 3
        self.switching = False
        self.switchable = switchable
        self.station_max_a = station_max_a


class Result:
    def __init__(self, day, controller):
        self.day = day
        self.controller = controller
        self.car_wh = 0.0
        self.surplus_wh = 0.0
        self.starts = 0
        self.stops = 0
        self.switches = 0
        self.over_longest_ms = 0
        self.over_total_ms = 0

    @property
    def car_kwh(self):
        return self.car_wh / 1000

    @property
    def surplus_kwh(self):
        return self.surplus_wh / 1000

    @property
    def import_kwh(self):
        return (self.car_wh - self.surplus_wh) / 1000

    @property
    def surplus_share(self):
        return self.surplus_wh / self.car_wh if self.car_wh else 0.0

    def row(self):
        """The Markdown table's cells (tools/energy_baselines.py)."""
        over = "-"
        if self.day.fuse_a:
            over = "%.1f / %.1f" % (self.over_longest_ms / 1000, self.over_total_ms / 1000)
        no_pv = self.day.pv.kind == "const" and not self.day.pv.peak_w
        share = "%.1f" % (100 * self.surplus_share) if self.car_wh and not no_pv else "-"
        return [self.controller, "%.2f" % self.car_kwh, share, "%.2f" % self.import_kwh, str(self.starts),
                str(self.stops), str(self.switches), over]


HEADER = ["controller", "car kWh", "from surplus %", "car import kWh", "starts", "stops", "switches",
          "fuse overshoot longest s / total s"]


def report(day, results):
    """A day's Markdown paragraph and table (Results in the order of the rows), as
    tools/energy_baselines.py prints it and docs/energy.md shows it."""
    lines = ["**%s**: %s." % (day.name, day.about), "", "| " + " | ".join(HEADER) + " |",
             "|" + "|".join("---" for _ in HEADER) + "|"]
    for r in results:
        lines.append("| " + " | ".join(r.row()) + " |")
    return "\n".join(lines)


def run(day, controller, name=None):
    """Run `controller` through `day`; a Result."""
    res = Result(day, name or type(controller).__name__)
    r = Readings(day.switchable, day.station_max_a)
    fuse = day.fuse_a
    share_a = 1.0 / 3 / VOLTS  # PV watts -> amps on each phase
    car_ph = day.car_phases
    car_max = day.car_max_a
    station_max = day.station_max_a
    supply = 3
    car_a = 0.0  # what the car draws on each of its phases now
    target = 0.0  # what it will draw once it has followed the offer
    pending = []  # [(tick, amps)]: the car's coming changes
    offer = 0.0
    sw = None  # the phase switch's sequence: None, "withdraw" (waiting for the contactor to open), "settle"
    sw_to = 3
    sw_at = 0
    sw_loaded = False  # the switch was asked for while the car was charging
    resume_until = None  # a closing before this tick resumes after a switch (no start)
    over_run = 0
    pv = 0.0
    house = [0.0, 0.0, 0.0]
    dt_h = TICK_MS / 3600000.0
    end = day.seconds * 1000
    now = 0
    while now < end:
        if now % 1000 == 0:
            pv = day.pv.watts(now)
            house = day.house.amps(now // 1000)
        # the car follows the offer, CAR_DELAY_MS late
        while pending and pending[0][0] <= now:
            a = pending.pop(0)[1]
            if a != car_a:
                if car_a == 0.0:  # the contactor closes
                    if resume_until is not None and now <= resume_until:
                        pass  # (the charge goes on after a phase switch)
                    else:
                        res.starts += 1
                    resume_until = None
                elif a == 0.0:  # it opens
                    if sw is not None and sw_loaded:
                        resume_until = -1  # (decided once the offer is back)
                    else:
                        res.stops += 1
                car_a = a
        if resume_until is not None and resume_until >= 0 and now > resume_until:
            res.stops += 1  # the switch's opening was a stop: no charge after it
            resume_until = None
        n = car_ph if car_ph < supply else supply
        c1 = car_a
        c23 = car_a if n == 3 else 0.0
        s = pv * share_a
        g1 = house[0] + c1 - s
        g2 = house[1] + c23 - s
        g3 = house[2] + c23 - s
        if now % GRID_EVERY_MS == GRID_PHASE_MS:
            r.grid_at = now
            r.grid_a = [g1, g2, g3]
            r.grid_w = VOLTS * (g1 + g2 + g3)
            r.own_at = now
            r.own_a = [c1, c23, c23]
            r.own_w = VOLTS * (c1 + c23 + c23)
        r.ready = now >= READY_MS
        r.offer_a = offer
        r.contactor = car_a > 0.0
        r.supply_phases = supply
        r.switching = sw is not None
        want_a, want_ph = controller.step(now, r)
        # the charger
        if day.switchable and sw is None and want_ph in (1, 3) and want_ph != supply:
            sw, sw_to, sw_loaded = "withdraw", want_ph, car_a > 0.0
        if sw == "withdraw":
            offer = 0.0
            if want_ph == supply:
                sw = None  # called off before the switch moved
                if resume_until == -1:
                    resume_until = now + RESUME_MS
            elif car_a == 0.0 and not [1 for p in pending if p[1]]:  # (and not about to draw)
                supply = sw_to
                sw, sw_at = "settle", now
                if sw_loaded:
                    res.switches += 1
        elif sw == "settle":
            offer = 0.0
            if now - sw_at >= SWITCH_SETTLE_MS:
                sw = None
                if resume_until == -1:
                    resume_until = now + RESUME_MS
        if sw is None:
            a = int(want_a * 10 + 1e-9) / 10.0 if want_a else 0.0
            if a > station_max:
                a = station_max
            offer = a if a >= MIN_A else 0.0
        t = (offer if offer < car_max else car_max) if offer >= MIN_A and now >= READY_MS else 0.0
        if t != target:
            target = t
            pending.append((now + CAR_DELAY_MS, t))
        # this round's figures
        car_w = VOLTS * (c1 + c23 + c23)
        spare = pv - VOLTS * (house[0] + house[1] + house[2])
        res.car_wh += car_w * dt_h
        if spare > 0:
            res.surplus_wh += (car_w if car_w < spare else spare) * dt_h
        if fuse:
            if abs(g1) > fuse or abs(g2) > fuse or abs(g3) > fuse:
                over_run += TICK_MS
                res.over_total_ms += TICK_MS
                if over_run > res.over_longest_ms:
                    res.over_longest_ms = over_run
            else:
                over_run = 0
        now += TICK_MS
    return res


# ---- our energy manager, as the station drives it -------------------------------------------

class _GridMeter:
    """drivers.meter.Meter's readings as firmware/energy.py reads them: amps_ma (magnitudes, mA),
    power_w (signed), valid, updated_ms."""

    def __init__(self):
        self.valid = False
        self.updated_ms = None
        self.amps_ma = [0, 0, 0]
        self.power_w = 0


class _Metering:
    """The charger's own meter (firmware/metering.py) as firmware/energy.py reads it."""
    measures_current = True

    def __init__(self):
        self.valid = True
        self.updated_ms = None
        self.amps_ma = [0, 0, 0]
        self.power_w = 0


class _ChargerView:
    """What firmware/energy.py reads of firmware/charger.py's Charger, and claim_phases."""

    def __init__(self, limits, phases, switchable):
        self.limits = limits
        self.phases = phases
        self.contactor = False
        self.vs = "B"
        self.offer_da = 0
        self.switchable = switchable
        self.supply_phases = phases
        self.switching = False
        self._claims = {}
        self.phases_wanted = phases

    @property
    def plugged(self):
        return self.vs in ("B", "C", "D")

    def claim_phases(self, name, n):  # (firmware/charger.py's rule: the fewest claimed win)
        if n is None:
            self._claims.pop(name, None)
        else:
            self._claims[name] = n
        want = self.phases
        for k in self._claims:
            if self._claims[k] < want:
                want = self._claims[k]
        self.phases_wanted = want
        return True


class Ours:
    """firmware/energy.py's Energy exactly as the station drives it: Energy.update(now, grid
    meter, charger's meter, charger) every round, the real firmware/limits.py Limits as the
    charger's arbiter (the offer is Limits.offer, as firmware/charger.py asks for it, not asked
    during a phase switch) with the settings' claim of max_current_a, and charger.claim_phases
    honoured by the day's phase switch. `settings`: more firmware settings (firmware/settings.py)."""

    def __init__(self, day, **settings):
        from firmware import energy
        from firmware import limits as lim
        from firmware import settings as settings_mod
        from vclock import VirtualClock

        self.clock = VirtualClock()
        s = settings_mod.Settings()
        values = {"energy_mode": day.mode, "max_current_a": float(day.station_max_a)}
        if day.fuse_a:
            values["main_fuse_a"] = float(day.fuse_a)
        values.update(settings)
        s.update(values)
        self.limits = lim.Limits(self.clock)
        self.limits.claim(lim.SETTINGS, int(day.station_max_a * 10))
        self.charger = _ChargerView(self.limits, 3, day.switchable)
        self.energy = energy.Energy(self.clock, s, self._emit, 3)
        self.grid = _GridMeter()
        self.mt = _Metering()
        self.events = []

    def _emit(self, kind, fields):
        if kind != "energy":
            self.events.append((kind, dict(fields)))

    def step(self, now, r):
        self.clock.now = now
        g = self.grid
        if r.grid_at is not None and r.grid_at != g.updated_ms:
            g.valid = True
            g.updated_ms = r.grid_at
            a = r.grid_a
            g.amps_ma = [int(abs(a[0]) * 1000), int(abs(a[1]) * 1000), int(abs(a[2]) * 1000)]
            g.power_w = int(r.grid_w)
        m = self.mt
        if r.own_at is not None and r.own_at != m.updated_ms:
            m.updated_ms = r.own_at
            a = r.own_a
            m.amps_ma = [int(a[0] * 1000), int(a[1] * 1000), int(a[2] * 1000)]
            m.power_w = int(r.own_w)
        c = self.charger
        c.contactor = r.contactor
        c.vs = "C" if r.contactor else "B"
        c.offer_da = int(r.offer_a * 10 + 0.5)
        c.supply_phases = r.supply_phases
        c.switching = r.switching
        self.energy.update(now, self.grid, self.mt, c)
        if r.switching:
            return 0, c.phases_wanted
        da = self.limits.offer(now, c.offer_da > 0)
        return da / 10.0, c.phases_wanted


# ---- the days -------------------------------------------------------------------------------

HOUR = 3600
SOLAR_HOUSE = House([0.5, 0.5, 0.5])  # tests_host/scenarios/energy/solar_clouds.scn's house

# The smart-mode evening: a house that jumps on a 25 A main fuse while a 3-phase car wants 32 A
# (tests_host/scenarios/energy/fuse.scn's car). (start s, end s, phase, A[, on s, off s])
EVENING = House([3.0, 2.0, 4.0], [
    (301, 1501, 0, 12.0, 90, 60),   # oven on L1, its thermostat cycling
    (614, 794, 1, 9.0),             # kettle on L2
    (1207, 2107, 2, 14.0, 40, 20),  # induction hob on L3, pulsing
    (1522, 1582, 0, 8.0),           # hair dryer on L1 (beside the oven)
    (2411, 3011, None, 5.0),        # heat pump, three phases
    (2733, 2763, 1, 12.0),          # microwave on L2
    (3016, 3076, None, 16.0),       # an 11 kW instantaneous water heater for a minute: less than 6 A left on L3
])


def days():
    """The days of tools/energy_baselines.py and its test, in order."""
    return [
        Day("clear", HOUR, PvDay("clear", 10000, 1), SOLAR_HOUSE,
            about="a clear day squeezed into an hour (`pv-day clear 10000 1`), house 0.5 A per phase, "
                  "3-phase 16 A car"),
        Day("clouds", HOUR, PvDay("clouds", 10000, 1), SOLAR_HOUSE,
            about="the cloudy day of energy/solar_clouds.scn (`pv-day clouds 10000 1`), house 0.5 A per "
                  "phase, 3-phase 16 A car"),
        Day("clear, 1-phase car", HOUR, PvDay("clear", 10000, 1), SOLAR_HOUSE, car_phases=1,
            about="the clear day with a 1-phase 16 A car"),
        Day("clouds, 1-phase car", HOUR, PvDay("clouds", 10000, 1), SOLAR_HOUSE, car_phases=1,
            about="the cloudy day with a 1-phase 16 A car"),
        Day("clouds, phase switch", HOUR, PvDay("clouds", 10000, 1), SOLAR_HOUSE, switchable=True,
            about="the cloudy day on a board with a 1p/3p phase switch, 3-phase 16 A car"),
        Day("smart evening", HOUR, PvDay("const", 0), EVENING, car_max_a=32.0, fuse_a=25.0, mode="smart",
            about="smart mode, 25 A main fuse, no PV, a house that jumps (oven, kettle, hob, heat pump, water "
                  "heater: energy_day.EVENING), 3-phase car that wants 32 A"),
    ]


def controllers(day):
    """(name, controller) for `day`: ours and the anchors' (tests_host/energy_anchors.py)."""
    import energy_anchors

    return [("ours", Ours(day)), ("SmartEVSE", energy_anchors.SmartEvse(day)), ("WARP", energy_anchors.Warp(day))]
