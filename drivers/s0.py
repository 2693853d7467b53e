"""S0 pulse input (IEC 62053-31 / DIN 43864): an energy meter's open-collector pulse output.

    meter = build({"model": "s0", "pin": 35, "impulses_per_kwh": 1000, "active_high": False},
                  clock)
    every tick: meter.poll(now_ms)

Wiring: the meter's S0+ / S0- switch the input. active_high False (the default): the input has a
pull-up and the pulse pulls it low (S0+ to the pin, S0- to GND; GPIO 34-39 have no internal pull,
fit an external one). active_high True: the pulse drives the pin high against a pull-down.

A hard interrupt on both edges counts the pulses. It allocates nothing: it reads the clock, keeps
the time of the last edge (`last_edge_ms`) and, on the end of a pulse at least `min_pulse_ms`
(30 ms, the standard's minimum) wide, stores the pulse's start time in a ring of 8 and counts
it. Narrower pulses (contact bounce, interference) are rejected and counted in `glitches`. A
pulse already in progress at start-up is not counted (its start is unknown).

Readings, the same attributes as the Modbus meter (drivers/meter.py) where they make sense:
    energy_wh   imported energy, Wh, from the pulse count: pulses * 1000 / impulses_per_kwh, the
                remainder kept so nothing is lost to rounding (800 imp/kWh: 1.25 Wh a pulse).
                It counts from 0 at start-up (an S0 output has no register to read back):
                set_energy_wh(wh) continues from a saved value.
    power_w     W, from the pulses of the last WINDOW_MS (at least the last interval):
                intervals * 3600000000 / impulses_per_kwh / span_ms. When no pulse came for longer
                than the last interval, the power cannot be above one pulse's energy over the time
                since the last pulse, so it falls as 1/t; 0 once no pulse came for
                power_timeout_ms (60 s: 60 W at 1000 imp/kWh) or before a second pulse.
    amps_ma, volts_dv   [0, 0, 0]: an S0 output carries energy only; measures_current is False
    valid       True (nothing to go wrong that the input could see)
    failures 0, errors {}, last_error None (the Modbus meter's failure reporting, never set)
    readings    count of published changes (energy or power), as the Modbus meter's believed
                readings; updated_ms the tick of the last one
    pulses      pulses counted; glitches pulses rejected as too narrow
poll(now_ms) folds new pulses into energy_wh and power_w (allocates nothing), and re-estimates the
power at most every second while no pulse comes.

impulses_per_kwh must be 10..100000 so every intermediate stays a small int on the ESP32.
"""
from array import array

from machine import Pin

DEFAULT_IMPULSES_PER_KWH = 1000
MIN_PULSE_MS = 30          # IEC 62053-31 / DIN 43864: pulses at least 30 ms wide
POWER_TIMEOUT_MS = 60000
WINDOW_MS = 4000           # power from the pulses of about the last 4 s
DECAY_EVERY_MS = 1000      # without pulses, re-estimate the power this often
_RING = 8                  # pulse start times kept (power from up to 7 intervals)
_MASK = _RING - 1
_WH_PER_KWH = 1000
_MS_PER_H = 3600000


class _TimeClock:
    """time.ticks_* when no clock is handed in (only on MicroPython)."""

    def __init__(self):
        import time

        self._t = time

    def ticks_ms(self):
        return self._t.ticks_ms()  # type: ignore[attr-defined]

    def ticks_diff(self, a, b):
        return self._t.ticks_diff(a, b)  # type: ignore[attr-defined]

    def ticks_add(self, a, ms):
        return self._t.ticks_add(a, ms)  # type: ignore[attr-defined]


class S0Meter:
    measures_current = False
    model = "s0"

    def __init__(self, pin, clock=None, impulses_per_kwh=DEFAULT_IMPULSES_PER_KWH,
                 active_high=False, min_pulse_ms=MIN_PULSE_MS, power_timeout_ms=POWER_TIMEOUT_MS):
        if (not isinstance(impulses_per_kwh, int) or impulses_per_kwh is True
                or not 10 <= impulses_per_kwh <= 100000):
            raise ValueError("s0 meter: impulses_per_kwh must be 10..100000, got %r" % (
                impulses_per_kwh,))
        if clock is None:
            import time

            if not hasattr(time, "ticks_ms"):
                raise ValueError("s0 meter: needs a clock (time.ticks_ms is not available)")
            clock = _TimeClock()
        self._clock = clock
        self.impulses_per_kwh = impulses_per_kwh
        self.active_high = bool(active_high)
        self._active = 1 if active_high else 0
        self.min_pulse_ms = min_pulse_ms
        self.power_timeout_ms = power_timeout_ms
        # one pulse's energy as power over 1 ms: W * ms, below 2**30 for impulses_per_kwh >= 4
        self._k = _WH_PER_KWH * _MS_PER_H // impulses_per_kwh
        # readings
        self.energy_wh = 0
        self.power_w = 0
        self.amps_ma = [0, 0, 0]
        self.volts_dv = [0, 0, 0]
        self.phases = None
        self.valid = True
        self.failures = 0
        self.errors = {}
        self.last_error = None
        self.readings = 0
        self.updated_ms = None
        # shared with the interrupt handler (every attribute exists before the IRQ is enabled:
        # a new attribute would grow the instance dict, an allocation)
        self.pulses = 0
        self.glitches = 0
        self.last_edge_ms = None
        self._times = array("i", [0] * _RING)  # start ticks of the last pulses, by count & 7
        self._in_pulse = False
        self._rise = 0
        # poll's own state
        self._taken = 0         # pulses folded into energy_wh
        self._rem = 0           # energy remainder, Wh * impulses_per_kwh / 1000 units
        self._newest = 0        # start tick of the newest counted pulse
        self._interval = 0      # the last interval between pulses, ms (0: unknown)
        self._est = 0           # power from the pulse intervals, before the decay
        self._next_decay = 0
        self._started = False
        if isinstance(pin, int):
            if pin >= 34:  # GPIO 34-39 have no internal pull resistors: fit an external one
                pin = Pin(pin, Pin.IN)
            else:
                pin = Pin(pin, Pin.IN, Pin.PULL_DOWN if active_high else Pin.PULL_UP)
        self._pin = pin
        self._handler = self._irq  # bound once: the IRQ must not allocate
        pin.irq(handler=self._handler, trigger=Pin.IRQ_RISING | Pin.IRQ_FALLING, hard=True)

    # --- the interrupt -------------------------------------------------------------------
    def _irq(self, pin):
        clock = self._clock
        now = clock.ticks_ms()
        self.last_edge_ms = now
        if pin.value() == self._active:
            self._rise = now
            self._in_pulse = True
            return
        if not self._in_pulse:
            return  # an end without a start (active at start-up, or a repeated edge)
        self._in_pulse = False
        if clock.ticks_diff(now, self._rise) < self.min_pulse_ms:
            self.glitches += 1
            return
        n = self.pulses
        self._times[n & _MASK] = self._rise
        self.pulses = n + 1  # after the time: poll re-reads the count to see a torn snapshot

    # --- the control tick ----------------------------------------------------------------
    def set_energy_wh(self, wh):
        """Continue the register from wh (e.g. the value saved before a restart)."""
        self.energy_wh = int(wh)
        self._rem = 0

    def poll(self, now_ms):
        """Fold new pulses into energy_wh and power_w; cheap, allocates nothing."""
        changed = False
        if not self._started:
            self._started = True
            self._next_decay = now_ms
            changed = True
        n = self.pulses
        if n != self._taken:
            changed = self._count(n) or changed
        elif self._taken and self._clock.ticks_diff(now_ms, self._next_decay) >= 0:
            changed = self._decay(now_ms) or changed
        if changed:
            self.readings += 1
            self.updated_ms = now_ms

    def _count(self, n):
        """Take pulses up to count n: energy, and the power from the ring of start times."""
        times = self._times
        clock = self._clock
        while True:  # a consistent snapshot: retry if a pulse was counted meanwhile
            newest = times[(n - 1) & _MASK]
            span = 0
            used = 0
            interval = 0
            # the oldest start we may use: pulse n - 8 shares its slot with the next pulse, whose
            # IRQ writes the slot before raising the count (the re-check below sees that)
            last = n - _RING
            if last < 0:
                last = 0
            i = n - 2
            while i >= last:
                s = clock.ticks_diff(newest, times[i & _MASK])
                if used and s > WINDOW_MS:
                    break
                span = s
                used += 1
                if used == 1:
                    interval = s
                i -= 1
            m = self.pulses
            if m == n:
                break
            n = m
        new = n - self._taken
        self._taken = n
        rem = self._rem + new * _WH_PER_KWH
        ipk = self.impulses_per_kwh
        self.energy_wh += rem // ipk
        self._rem = rem % ipk
        self._newest = newest
        if used == 0 or span <= 0 or span > self.power_timeout_ms:
            self._interval = 0
            self._est = 0
        else:
            self._interval = interval
            k = self._k
            q = k // span
            self._est = q * used + ((k - q * span) * used + (span >> 1)) // span
        self._next_decay = clock.ticks_add(newest, DECAY_EVERY_MS)
        self.power_w = self._est
        return True

    def _decay(self, now_ms):
        """No new pulse: the power cannot be above one pulse over the time since the last."""
        clock = self._clock
        since = clock.ticks_diff(now_ms, self._newest)
        self._next_decay = clock.ticks_add(now_ms, DECAY_EVERY_MS)
        p = self._est
        if since >= self.power_timeout_ms:
            p = 0
        elif since > self._interval and since > 0:
            bound = (self._k + (since >> 1)) // since
            if bound < p:
                p = bound
        if p != self.power_w:
            self.power_w = p
            return True
        return False


def build(section, clock=None):
    """An S0Meter from a board profile's meter section:
    {"model": "s0", "pin": int, "impulses_per_kwh": int (1000), "active_high": bool (False)}."""
    return S0Meter(section["pin"], clock,
                   section.get("impulses_per_kwh") or DEFAULT_IMPULSES_PER_KWH,
                   bool(section.get("active_high", False)))
