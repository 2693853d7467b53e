"""Socket lock: the actuator that holds a Type 2 plug in the socket, confirmed by a feedback contact.

Two kinds (board profile `lock`, docs/interfaces.md):
- "motor": a bistable actuator on an H-bridge. `lock_pin` drives it towards locked, `unlock_pin`
  towards unlocked, each for `pulse_ms`; it then stays where it is without current, also when
  the power goes. The two outputs are never on together: every pulse switches both off first.
- "solenoid": one output `pin`, on (energised) while locked; a spring releases the plug when it
  goes off, also when the power goes.

Both read `feedback_pin`: active = the plug is locked. A move is confirmed when, `settle_ms`
after the pulse (motor) or after switching (solenoid), the feedback shows the wanted position.
Not confirmed: the move is tried again after `pause_ms`, up to `retries` more times, then the
lock reports "failed" (with every output off). A lock at rest whose feedback stops showing the
position it was put in (a broken wire, a forced pin) reports "failed" at once.

    lock.want(locked, now_ms)   the wanted position; starts a move when it differs from the last
                                wanted one, or when the last move failed (a fresh set of retries)
    lock.poll(now_ms) -> state  every control tick: steps the move; "locked", "unlocked",
                                "moving" or "failed" (before any want(): what the feedback shows)
    lock.idle()                 every output off (no current); safe in an IRQ or on the way down

Non-blocking and allocation-free: the control tick steps it; nothing sleeps.
"""
from machine import Pin

from drivers.ticks import diff as _diff

LOCKED = "locked"
UNLOCKED = "unlocked"
MOVING = "moving"
FAILED = "failed"

_REST = 0
_PULSE = 1  # motor: one output on
_SETTLE = 2  # outputs as they stay (motor: both off); then the feedback is read
_PAUSE = 3  # not confirmed: outputs off until the next attempt

class Lock:
    def __init__(self, cfg):
        self.motor = cfg["type"] == "motor"
        self._on = 1 if cfg.get("active_high", True) else 0
        off = 1 - self._on
        # value= in the constructor: no glitch towards a move
        if self.motor:
            self._a = Pin(cfg["lock_pin"], Pin.OUT, value=off)
            self._b = Pin(cfg["unlock_pin"], Pin.OUT, value=off)
        else:
            self._a = Pin(cfg["pin"], Pin.OUT, value=off)
            self._b = None
        self._fb = Pin(cfg["feedback_pin"], Pin.IN)
        self._fb_on = 1 if cfg.get("feedback_active_high", True) else 0
        self.pulse_ms = cfg.get("pulse_ms", 300)
        self.settle_ms = cfg.get("settle_ms", 50)
        self.pause_ms = cfg.get("pause_ms", 1000)
        self.retries = cfg.get("retries", 2)
        self.target = None  # wanted position (True = locked); None: nothing asked since boot
        self._phase = _REST
        self._at = 0
        self._tries = 0
        self.moves = 0  # attempts made (bench, tests)
        self.state = LOCKED if self.feedback() else UNLOCKED

    def feedback(self):
        """True when the feedback contact shows the plug locked."""
        return self._fb.value() == self._fb_on

    def idle(self):
        off = 1 - self._on
        self._a.value(off)
        b = self._b
        if b is not None:
            b.value(off)

    def want(self, locked, now):
        if locked == self.target and self.state != FAILED:
            return
        if self.target is None and self._phase == _REST and self.feedback() == locked:
            self.target = locked  # the first wish after boot, already so: no needless move
            return
        self.target = locked
        self._tries = 0
        self._attempt(now)

    def _attempt(self, now):
        self._tries += 1
        self.moves += 1
        self.idle()  # the other direction off before this one goes on
        b = self._b
        if b is not None:  # a motor
            (self._a if self.target else b).value(self._on)
            self._phase = _PULSE
        else:
            if self.target:
                self._a.value(self._on)
            self._phase = _SETTLE
        self._at = now
        self.state = MOVING

    def poll(self, now):
        ph = self._phase
        t = self.target
        if ph == _REST:
            fb = self.feedback()
            if t is None:
                self.state = LOCKED if fb else UNLOCKED
            elif self.state != FAILED and fb != t:
                self._fail()  # it was confirmed, and is no longer
            return self.state
        el = _diff(now, self._at)
        if ph == _PULSE:
            if el >= self.pulse_ms:
                self.idle()
                self._phase = _SETTLE
                self._at = now
        elif ph == _SETTLE:
            if el >= self.settle_ms:
                if self.feedback() == t:
                    self._phase = _REST
                    self.state = LOCKED if t else UNLOCKED
                elif self._tries > self.retries:
                    self._fail()
                else:
                    self.idle()  # (a solenoid drops out for the pause, then pulls again)
                    self._phase = _PAUSE
                    self._at = now
        elif el >= self.pause_ms:
            self._attempt(now)
        return self.state

    def _fail(self):
        self.idle()
        self._phase = _REST
        self.state = FAILED
