"""The house around the charger: household load, PV production, the grid connection and its meter.

Per phase, in amps, positive = import from the grid:

    grid_i = house_i + car_i - pv_w / 3 / volts_i

house_i is the household load (scenario verb `house L1 L2 L3`), car_i what the car draws through
the charger on that phase (the phases the charger's meter sees current on: the car's phases, or
L1 alone while a board's phase switch gives the outlet 1 phase; 0 with the contacts open) and
pv_w the PV production, spread evenly over the three phases. volts_i are the charger meter's
volts: VOLTS, or 0 while the station has no power, which the world takes for a mains outage:
then nothing flows (the house draws nothing, the inverter disconnects, grid_i = 0).

The runner's `world` event (report()) also carries `phases`, the outlet's phases, when the board
has a phase switch (world/phase_switch.py).

PV (`pv WATTS` constant; `pv-day PROFILE [PEAK_W [HOURS]]` a day that starts at the verb):
    clear:  PEAK_W * sin(pi * t / T) for 0 <= t <= T (T = HOURS, default DAY_HOURS; PEAK_W
            default DAY_PEAK_W), 0 after
    clouds: clear * the cloud factor, a fixed sequence of cumulus clouds from CLOUD_SEED (the
            same every run and on every runtime: integer arithmetic only, 30-bit LCG
            x' = (x * 1103515245 + 12345) mod 2^30, its high 16 bits drawing each figure). From
            the start of the day: a clear gap of CLOUD_GAP_S seconds, then a cloud: the
            production ramps down over CLOUD_RAMP_S seconds to CLOUD_DEPTH_PCT percent of the
            clear-sky value, stays there CLOUD_HOLD_S seconds, ramps back up over CLOUD_RAMP_S
            seconds; then the next gap, and so on (each figure drawn anew, whole seconds, ranges
            inclusive).

The grid meter (board profile section `grid_meter`, {"model": "sdm630", "address": 2}, with a
Modbus `meter`): a second MeterSlave on the charger meter's RS-485 bus (world/modbus_meter.py's
Bus: the same UART and baud rate). Volts per phase as the charger's meter, amps = |grid_i|
(unsigned, as on a real meter), phase powers volts_i * grid_i and the total `power_w`, signed
(negative = export), import_wh / export_wh integrated from the total's sign. Faults: `dead`
(grid-meter-fail; grid-meter-ok clears it), and it is silent while the station has no power.

Overload: `over_ms` is the longest run so far, in ms at the world's step resolution, during which
any phase's |grid_i| was above `fuse_a` (the station's setting main_fuse_a, handed over by the
runner with set_fuse; 0 = not counted); `run_ms` the current run.

The energy counts in integers (whole Wh plus deci-watt-milliseconds), so that a single-precision
float runtime adds small steps to a large total without losing them.
"""
import math

from world.world import VOLTS

DAY_HOURS = 12.0
DAY_PEAK_W = 8000
MAX_PV_W = 50000
MAX_HOUSE_A = 100

CLOUD_SEED = 0x2545F49
CLOUD_GAP_S = (120, 360)      # clear sky between two clouds
CLOUD_HOLD_S = (30, 180)      # the cloud's shade at its full depth
CLOUD_RAMP_S = (3, 8)         # its edge: down before, up after
CLOUD_DEPTH_PCT = (20, 40)    # production in the shade, percent of clear sky

CLEAR = 1
CLOUDS = 2
DAY_KINDS = ("clear", "clouds")
VERBS = ("house", "pv", "pv-day", "grid-meter-fail", "grid-meter-ok")

_WH = 36000000  # deci-watt-milliseconds in a watt-hour


def _number(v, what, verb, lo, hi):
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError("%s: %s: expected a number, got %r" % (verb, what, v))
    if not (lo <= x <= hi):  # also rejects nan
        raise ValueError("%s: %s: expected %g..%g, got %r" % (verb, what, lo, hi, v))
    return x


def _r2(xs):
    out = []
    for x in xs:
        v = round(x, 2)
        out.append(0.0 if v == 0 else v)  # (no -0.0)
    return out


class Grid:
    def __init__(self, world):
        self.world = world
        self.house = [0.0, 0.0, 0.0]
        self._house = False        # any household load
        self.pv_w = 0              # constant production (without a day)
        self.day = 0               # 0, CLEAR or CLOUDS
        self.day_peak = DAY_PEAK_W
        self.day_ms = 0
        self.day_t0 = 0            # world time the day started at
        self.active = False        # a grid verb was used: the runner reports the grid
        self.fuse_a = 0.0
        self._fuse_da = 0.0
        self.over_ms = 0
        self.run_ms = 0
        self.import_wh = 0         # whole Wh
        self.import_r = 0          # and the rest, deci-W ms
        self.export_wh = 0
        self.export_r = 0
        self.failed = False        # grid-meter-fail
        self._c_reset()
        self.meter = None
        g = world.profile.get("grid_meter")
        if g and world.bus is not None:
            from world.modbus_meter import MeterSlave

            self.meter = world.bus.add(MeterSlave(g.get("model", "sdm630"), g.get("address", 2),
                                                  self.meter_source, world.profile["meter"]["baudrate"]))

    # -- PV

    def pv_now(self, t):
        """PV watts at world time t."""
        if not self.day:
            return self.pv_w
        x = t - self.day_t0
        if x <= 0 or x >= self.day_ms:
            return 0  # (sin(0) and sin(pi): no rounding residue)
        p = self.day_peak * math.sin(math.pi * x / self.day_ms)
        if self.day == CLOUDS:
            p *= self.cloud(x)
        return p if p > 0 else 0

    def _c_reset(self):
        self._c_seed = CLOUD_SEED
        self._c_end = 0
        self._c_next()

    def _rand(self, lo_hi):
        x = (self._c_seed * 1103515245 + 12345) & 0x3FFFFFFF
        self._c_seed = x
        lo, hi = lo_hi
        return lo + (((x >> 14) * (hi - lo + 1)) >> 16)

    def _c_next(self):
        self._c_from = self._c_end
        self._c_start = self._c_from + 1000 * self._rand(CLOUD_GAP_S)
        self._c_in = 1000 * self._rand(CLOUD_RAMP_S)
        self._c_hold = 1000 * self._rand(CLOUD_HOLD_S)
        self._c_out = 1000 * self._rand(CLOUD_RAMP_S)
        self._c_depth = self._rand(CLOUD_DEPTH_PCT)
        self._c_end = self._c_start + self._c_in + self._c_hold + self._c_out

    def cloud(self, x):
        """The cloud factor (CLOUD_DEPTH_PCT / 100 .. 1) x ms into the day."""
        if x < self._c_from:
            self._c_reset()
        while x >= self._c_end:
            self._c_next()
        x -= self._c_start
        if x < 0:
            return 1.0
        d = self._c_depth / 100.0
        if x < self._c_in:
            return 1.0 - (1.0 - d) * x / self._c_in
        x -= self._c_in
        if x < self._c_hold:
            return d
        x -= self._c_hold
        return d + (1.0 - d) * x / self._c_out

    # -- the flows

    def flows(self):
        """(grid, house, car, pv_w) now: amps per phase (lists) and watts."""
        w = self.world
        if not w.powered:
            return [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], 0
        a = w._flowing() / 10.0
        car = [a, a, a] if w.phases_now() == 3 else [a, 0.0, 0.0]
        pv = self.pv_now(w.t)
        share = pv / 3.0 / VOLTS
        h = self.house
        return [h[0] + car[0] - share, h[1] + car[1] - share, h[2] + car[2] - share], list(h), car, pv

    def step(self, dt):
        """dt ms at the world's current state: energy, the run above the fuse."""
        w = self.world
        if dt <= 0:
            return
        if not w.powered:
            self.run_ms = 0
            return
        da = w._flowing()
        n = w.phases_now() if da else 0
        pv = self.pv_now(w.t)
        fuse = self._fuse_da
        if not pv and not self._house:  # the car alone: integers, no float allocated
            over = fuse > 0 and da > fuse
            e = VOLTS * da * n * dt
        else:
            h = self.house
            s = pv / 3.0 / VOLTS
            a = da / 10.0
            b = a if n == 3 else 0.0
            g1 = h[0] + a - s
            g2 = h[1] + b - s
            g3 = h[2] + b - s
            f = self.fuse_a
            over = f > 0 and (abs(g1) > f or abs(g2) > f or abs(g3) > f)
            e = int(VOLTS * (g1 + g2 + g3) * dt * 10)
        if over:
            self.run_ms += dt
            if self.run_ms > self.over_ms:
                self.over_ms = self.run_ms
        else:
            self.run_ms = 0
        if e > 0:
            r = self.import_r + e
            if r >= _WH:
                k = r // _WH
                self.import_wh += k
                r -= k * _WH
            self.import_r = r
        elif e < 0:
            r = self.export_r - e
            if r >= _WH:
                k = r // _WH
                self.export_wh += k
                r -= k * _WH
            self.export_r = r

    def set_fuse(self, amps):
        """The station's main_fuse_a (0 or None: no overload counted)."""
        f = float(amps or 0)
        if f != self.fuse_a:
            self.fuse_a = f
            self._fuse_da = f * 10

    def energy_wh(self):
        """(import, export) Wh so far."""
        return self.import_wh + self.import_r / float(_WH), self.export_wh + self.export_r / float(_WH)

    def meter_source(self):
        grid = self.flows()[0]
        v = float(VOLTS) if self.world.powered else 0.0
        p = [v * grid[0], v * grid[1], v * grid[2]]
        imp, exp = self.energy_wh()
        return {"volts": [v, v, v], "amps": [abs(grid[0]), abs(grid[1]), abs(grid[2])], "powers": p,
                "power_w": p[0] + p[1] + p[2], "import_wh": imp, "export_wh": exp}

    def report(self):
        """The fields of the runner's `world` event."""
        grid, house, car, pv = self.flows()
        r = {"grid": _r2(grid), "house": _r2(house), "pv_w": int(pv + 0.5), "car": _r2(car),
             "over_ms": self.over_ms}
        if self.world.phase_switch is not None:
            r["phases"] = self.world.phase_switch.phases()  # (boards with a phase switch only)
        return r

    # -- power, actions

    def power(self):
        """The station's power changed: the grid meter is silent without it."""
        if self.meter is not None:
            self.meter.dead = self.failed or not self.world.powered

    def apply(self, verb, args):
        n = len(args)
        if verb == "house":
            if n != 3:
                raise ValueError("house: expected L1 L2 L3 (amps), got %d arguments" % n)
            h = [_number(args[i], "L%d" % (i + 1), verb, 0, MAX_HOUSE_A) for i in range(3)]
            self.house = h
            self._house = h[0] > 0 or h[1] > 0 or h[2] > 0
        elif verb == "pv":
            if n != 1:
                raise ValueError("pv: expected WATTS")
            self.pv_w = _number(args[0], "WATTS", verb, 0, MAX_PV_W)
            self.day = 0
        elif verb == "pv-day":
            kind = str(args[0]) if n else None
            if kind not in DAY_KINDS:
                raise ValueError("pv-day: PROFILE: expected clear or clouds, got %r" % (kind,))
            if n > 3:
                raise ValueError("pv-day: expected PROFILE [PEAK_W [HOURS]]")
            self.day_peak = _number(args[1], "PEAK_W", verb, 0, MAX_PV_W) if n > 1 else DAY_PEAK_W
            hours = _number(args[2], "HOURS", verb, 0.01, 24) if n > 2 else DAY_HOURS
            self.day_ms = int(hours * 3600000 + 0.5)
            self.day = CLEAR if kind == "clear" else CLOUDS
            self.day_t0 = self.world.t
            self._c_reset()
        elif verb == "grid-meter-fail" or verb == "grid-meter-ok":
            self.failed = verb == "grid-meter-fail"
            self.power()
        else:
            raise ValueError("unknown grid action %r" % (verb,))
        self.active = True
