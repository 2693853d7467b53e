"""The vehicle at the end of the pilot line (IEC 61851-1 annex A, SAE J1772).

Resistances on the vehicle side: 2.74 kOhm behind a diode (state B); S2 adds 1.3 kOhm (C) or
270 Ohm (D, ventilation) in parallel. The EVSE drives +/-12 V through 1 kOhm, so the high
plateau is 0.7 + 11.3 * R / (R + 1000) V (diode drop 0.7 V): about 9.0 / 6.0 / 2.9 V.

The offer is read from the PWM duty (`decode_duty`). Behaviour on virtual time (ms):
- a ready car closes S2 `react_ms` (500) after it first sees a valid offer;
- in C/D it follows a changed offer after `follow_ms` (1000; the standard allows 5 s);
- when the offer disappears (steady +12 V, -12 V, 0 V, invalid duty) it stops drawing and opens
  S2 after `stop_ms` (1000), unless it ignores offers: then it keeps its current and stays in C;
- plugging in while ready goes A -> C at once (the "A -> C without B" misbehaviour);
- unplugging is instant, also under load, and forgets "ready" (the next plug starts in B);
- a chattering car (`chatter(b_ms, c_ms)`) opens S2 for b_ms and closes it for c_ms, again and
  again, whatever the offer (a faulty on-board charger); `chatter(0, 0)` ends it.
Currents are kept in deci-amps (ints).
"""

R_B = 2740
R_C = 1300
R_D = 270
R_BC = R_B * R_C / (R_B + R_C)  # about 882 Ohm
R_BD = R_B * R_D / (R_B + R_D)  # about 246 Ohm


def decode_duty(duty_u16):
    """Offer in deci-amps for a PWM duty (0..65535); 0 = no offer.

    10..85 %: amps = duty% * 0.6; 85..96 %: amps = (duty% - 64) * 2.5; anything else (5 %
    digital communication, below 10 %, above 96 %, steady levels) is no offer. The duty is
    rounded to 0.1 % before the range check so a firmware's rounding of 10 % is accepted.
    """
    if duty_u16 <= 0 or duty_u16 >= 65535:
        return 0
    pm = (duty_u16 * 1000 + 32767) // 65535
    if 100 <= pm <= 850:
        return (duty_u16 * 600 + 32767) // 65535
    if 850 < pm <= 960:
        return (duty_u16 * 2500 + 32767) // 65535 - 1600
    return 0


def high_volts(ohms):
    """High plateau (V) with the vehicle resistance `ohms` on a +12 V source (None = no car)."""
    if ohms is None:
        return 12.0
    return 0.7 + 11.3 * ohms / (ohms + 1000)


class Car:
    def __init__(self, phases=3):
        self.plugged = False
        self.ready = False       # the driver/vehicle wants to charge (S2 closes on an offer)
        self.vent = False        # asks for ventilation: D instead of C
        self.max_da = 320        # own maximum current, deci-amps
        self.phases = phases
        self.ignore = False      # misbehaviour: ignores offers (keeps drawing, stays in C)
        self.diode = True        # False: diode missing/shorted
        self.short = False       # pilot shorted to PE (state E)
        self.s2 = False
        self.draw_da = 0         # current the car draws while in C/D and the contacts are closed
        self.offer_da = 0        # offer as the car currently sees it
        self.react_ms = 500
        self.follow_ms = 1000
        self.stop_ms = 1000
        self._close_at = None
        self._open_at = None
        self._follow_at = None
        self._chatter = None  # (b_ms, c_ms) while the car chatters
        self._chatter_at = None

    # -- what the EVSE sees

    def state(self):
        """'A'..'E' as seen on the pilot line (E: pilot shorted)."""
        if self.short:
            return "E"
        if not self.plugged:
            return "A"
        if not self.s2:
            return "B"
        return "D" if self.vent else "C"

    def ohms(self):
        """Resistance behind the diode, or None when unplugged."""
        if not self.plugged:
            return None
        if not self.s2:
            return R_B
        return R_BD if self.vent else R_BC

    def charging(self):
        """In C/D: draws draw_da while the contacts are closed."""
        return self.plugged and self.s2

    def want_da(self):
        if not self.offer_da:
            return 0
        return self.offer_da if self.offer_da < self.max_da else self.max_da

    # -- time

    def next_due(self):
        n = None
        for d in (self._close_at, self._open_at, self._follow_at, self._chatter_at):
            if d is not None and (n is None or d < n):
                n = d
        return n

    def step(self, t):
        """Carry out the reactions due at or before t; True if the pilot load changed."""
        changed = False
        d = self._close_at
        if d is not None and t >= d:
            self._close_at = None
            if self.plugged and self.ready and self.offer_da and not self.s2:
                self.s2 = True
                self.draw_da = self.want_da()
                changed = True
        d = self._open_at
        if d is not None and t >= d:
            self._open_at = None
            self.draw_da = 0
            if self.s2:
                self.s2 = False
                changed = True
        d = self._follow_at
        if d is not None and t >= d:
            self._follow_at = None
            if self.s2 and not self.ignore:
                self.draw_da = self.want_da()
        d = self._chatter_at
        if d is not None and t >= d and self.plugged:
            self.s2 = not self.s2
            self.draw_da = self.want_da() if self.s2 else 0
            self._chatter_at = t + self._chatter[1 if self.s2 else 0]
            changed = True
        return changed

    def _cancel(self):
        self._close_at = None
        self._open_at = None
        self._follow_at = None

    def _plan(self, t):
        if not self.plugged:
            self._cancel()
            return
        if self.ignore and self.s2:
            self._open_at = None
            self._follow_at = None
            return
        if self.offer_da:
            self._open_at = None
            if self.s2:
                if self.draw_da != self.want_da():
                    if self._follow_at is None:
                        self._follow_at = t + self.follow_ms
                else:
                    self._follow_at = None
            elif self.ready and self._close_at is None:
                self._close_at = t + self.react_ms
        else:
            self._close_at = None
            self._follow_at = None
            if self.s2 and self._open_at is None:
                self._open_at = t + self.stop_ms

    def perceive(self, offer_da, t):
        """The offer on the pilot line is now offer_da (0 = none)."""
        if offer_da != self.offer_da:
            self.offer_da = offer_da
            self._plan(t)

    # -- scenario actions; each returns True when the pilot load changed at once

    def plug(self, offer_da, t):
        if self.plugged:
            return False
        self.plugged = True
        self.offer_da = offer_da
        if self.ready:  # A -> C directly
            self.s2 = True
            self.draw_da = self.want_da()
        self._plan(t)
        return True

    def unplug(self):
        if not self.plugged:
            return False
        self.plugged = False
        self.ready = False
        self._chatter = self._chatter_at = None
        self.s2 = False
        self.draw_da = 0
        self._cancel()
        return True

    def set_ready(self, max_da, phases, t):
        self.ready = True
        self.max_da = max_da
        self.phases = phases
        if self.s2 and not self.ignore:
            self.draw_da = self.want_da()
        self._plan(t)
        return False

    def pause(self):
        self.ready = False
        self.draw_da = 0
        self._cancel()
        if self.s2:
            self.s2 = False
            return True
        return False

    def set_vent(self, on):
        if self.vent == on:
            return False
        self.vent = on
        return self.s2

    def chatter(self, b_ms, c_ms, t):
        """S2 toggles by itself: open b_ms, closed c_ms (0, 0: the car behaves again)."""
        if b_ms and c_ms:
            self._chatter = (b_ms, c_ms)
            self.ready = True
            if self._chatter_at is None:
                self._chatter_at = t + (c_ms if self.s2 else b_ms)
        else:
            self._chatter = self._chatter_at = None
            self._plan(t)

    def ignore_offers(self, t):
        self.ignore = True
        self._plan(t)
        return False

    def power_lost(self):
        """The EVSE lost power: no current any more (the line reads 0 V, seen as no offer)."""
        self.draw_da = 0
        self._follow_at = None
