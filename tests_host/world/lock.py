"""The socket lock's actuator: a pin that slides into the plug, driven by the lock outputs.

Travel takes `travel_ms` of drive (a motor 200, a solenoid 40). A motor ("motor" profile:
lock_pin, unlock_pin) moves while one output is on and stays where it is when both are off or
the power goes; both on
brakes it and is counted in `both_on` (the firmware must never do that). A solenoid ("solenoid":
pin) pulls the pin in while energised and a spring pushes it out when it is not, also without
power. `jammed`: the pin is stuck where it is. The feedback contact is active only with the pin
fully in (locked); the plug is held while the pin is in at all. Positions are in ms of travel
(0 = out, travel_ms = in), integrated on world time.
"""


class LockActuator:
    def __init__(self, cfg):
        self.motor = cfg["type"] == "motor"
        self.active_high = cfg.get("active_high", True)
        if self.motor:
            self.pins = (cfg["lock_pin"], cfg["unlock_pin"])
        else:
            self.pins = (cfg["pin"],)
        self.feedback_pin = cfg["feedback_pin"]
        self.feedback_active_high = cfg.get("feedback_active_high", True)
        self.travel_ms = 200 if self.motor else 40  # a solenoid's armature is quick
        self.pos = 0
        self.jammed = False
        self.drive = [False] * len(self.pins)  # outputs as the actuator sees them (powered)
        self.both_on = 0  # times both motor outputs were on together
        self.strokes = 0  # full moves (in or out)
        self._dir = 0  # +1 in, -1 out, 0 still
        self._t = 0  # world time of pos

    def on_by(self, level):
        return (level == 1) == bool(self.active_high)

    def locked(self):
        return self.pos >= self.travel_ms

    def holds_plug(self):
        return self.pos > 0

    def feedback_level(self):
        return 1 if self.locked() == bool(self.feedback_active_high) else 0

    def set_drive(self, i, on, powered, t):
        """Output i (0 = lock / the solenoid, 1 = unlock) is now on or off."""
        on = on and powered
        if on == self.drive[i]:
            return
        self._move(t)
        self.drive[i] = on
        if self.motor and self.drive[0] and self.drive[1]:
            self.both_on += 1
        self._plan(powered)

    def power(self, powered, t):
        self._move(t)
        if not powered:
            self.drive = [False] * len(self.pins)
        self._plan(powered)

    def _plan(self, powered):
        if self.motor:
            a, b = self.drive
            self._dir = 1 if a and not b else (-1 if b and not a else 0)
        else:
            self._dir = 1 if self.drive[0] else -1  # the spring needs no power

    def _move(self, t):
        dt = t - self._t
        self._t = t
        if dt <= 0 or self.jammed or not self._dir:
            return
        old = self.pos
        self.pos = max(0, min(self.travel_ms, self.pos + self._dir * dt))
        if self.pos != old and self.pos in (0, self.travel_ms):
            self.strokes += 1

    def next_due(self):
        """World time at which the pin reaches an end (the feedback or the hold changes)."""
        if self.jammed or not self._dir:
            return None
        if self._dir > 0 and self.pos < self.travel_ms:
            return self._t + self.travel_ms - self.pos
        if self._dir < 0 and self.pos >= self.travel_ms:
            return self._t + 1  # the feedback contact opens as soon as the pin moves
        if self._dir < 0 and self.pos > 0:
            return self._t + self.pos
        return None

    def step(self, t):
        self._move(t)

    def jam(self, stuck, t):
        self._move(t)
        self.jammed = stuck
