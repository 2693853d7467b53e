"""A simulated S0 pulse output (IEC 62053-31 / DIN 43864) driving a board input pin.

    s0 = S0Source(pin, impulses_per_kwh, pulse_ms=90, active_high=False)
    every world step: s0.advance(now_ms, energy_wh)

`energy_wh` is the energy the meter has seen so far (the world's truth, a float); every
1000 / impulses_per_kwh Wh it owes one pulse. A pulse drives the pin to its active level
(active_high False: low, the open collector pulling against the board's pull-up; True: high)
for `pulse_ms`, through machine.hw_set_input, which fires the board's pin interrupt at once.
Between pulses the line rests at least `gap_ms` (30 ms, the standard's minimum pause); pulses owed
faster than that wait their turn (`backlog`), as a real meter's pulse output lags.

Edges happen only inside advance(), at its now_ms: call it every few milliseconds (the
simulator's 10 ms step gives exact widths for widths that are multiples of 10 ms). now_ms is the
source's own millisecond count (the world's `t`, no wrap); the board's interrupt reads the
firmware clock, which moves by the same amount.

Faults:
    dead          the output is cut: the line rests, owed pulses are lost (counted in `lost`)
    short_pulses  10 ms glitches (`glitch_ms`) on the line in the gaps, one every
                  `glitch_every_ms` (250) while the knob is on; a meter must reject them
Counters: `pulses` (real pulses completed), `glitches` (glitches emitted), `lost`, `starts`
(start times of the real pulses, the last 64), `backlog` (pulses owed, not started yet).
"""
import machine

GAP_MS = 30
STARTS_KEPT = 64


class S0Source:
    def __init__(self, pin, impulses_per_kwh, pulse_ms=90, active_high=False, gap_ms=GAP_MS):
        if impulses_per_kwh <= 0:
            raise ValueError("impulses_per_kwh must be positive, got %r" % (impulses_per_kwh,))
        self.pin = pin
        self.impulses_per_kwh = impulses_per_kwh
        self.pulse_ms = pulse_ms
        self.active_high = bool(active_high)
        self.gap_ms = gap_ms
        self._active = 1 if active_high else 0
        self._idle = 1 - self._active
        # faults
        self.dead = False
        self.short_pulses = False
        self.glitch_ms = 10
        self.glitch_every_ms = 250
        # state
        self.owed = 0          # pulses the energy so far is worth
        self.backlog = 0
        self.pulses = 0
        self.glitches = 0
        self.lost = 0
        # The last 64 start times in a ring made here: the world's data must not grow inside
        # the firmware's heap budget while the firmware runs.
        self._starts = [0] * STARTS_KEPT
        self._started = 0
        self._level = None
        self._start = None     # start of the pulse or glitch on the line, or None
        self._glitch = False   # the one on the line is a glitch
        self._end = None       # end of the last pulse or glitch
        self._next_glitch = None
        self.install()

    @property
    def starts(self):
        """Start times of the last 64 real pulses, oldest first."""
        n = self._started
        first = max(0, n - STARTS_KEPT)
        return [self._starts[i % STARTS_KEPT] for i in range(first, n)]

    def install(self):
        """Drive the line at its present level (again, e.g. after machine.hw_reset)."""
        level = self._level if self._level is not None else self._idle
        self._level = None
        self._set(level)

    def _set(self, level):
        if level != self._level:
            self._level = level
            machine.hw_set_input(self.pin, level)

    def advance(self, now_ms, energy_wh):
        """Emit what is due up to now_ms for the energy seen so far."""
        owed = int(energy_wh * self.impulses_per_kwh / 1000.0 + 1e-9)
        if owed > self.owed:
            if self.dead:
                self.lost += owed - self.owed
            else:
                self.backlog += owed - self.owed
            self.owed = owed
        if self.dead:
            self.lost += self.backlog
            self.backlog = 0
            if self._start is not None:  # cut in the middle of a pulse: it never completes
                self._start = None
                self._end = now_ms
            self._set(self._idle)
            return
        # end the pulse or glitch on the line
        if self._start is not None:
            width = self.glitch_ms if self._glitch else self.pulse_ms
            if now_ms - self._start < width:
                return
            self._set(self._idle)
            self._start = None
            self._end = now_ms
            if self._glitch:
                self.glitches += 1
            else:
                self.pulses += 1
        if self._end is not None and now_ms - self._end < self.gap_ms:
            return
        if self.backlog > 0:
            self.backlog -= 1
            self._begin(now_ms, False)
            self._starts[self._started % STARTS_KEPT] = now_ms
            self._started += 1
            return
        if self.short_pulses:
            if self._next_glitch is None:
                self._next_glitch = now_ms
            if now_ms >= self._next_glitch:
                self._next_glitch = now_ms + self.glitch_every_ms
                self._begin(now_ms, True)
        else:
            self._next_glitch = None

    def _begin(self, now_ms, glitch):
        self._start = now_ms
        self._glitch = glitch
        self._set(self._active)
