"""Contactor relay: one output pin, optional auxiliary (mirror) contact as feedback input.

An interlock (the RCD driver registers itself) keeps the contactor open while it is tripped:
set(True) then opens instead, whatever the caller decided.
"""
from machine import Pin


class Relay:
    def __init__(self, cfg):
        self._on = 1 if cfg["active_high"] else 0
        self._off = 1 - self._on
        # value= in the constructor: the pin never glitches to the closed level
        self._pin = Pin(cfg["pin"], Pin.OUT, value=self._off)
        self._closed = False
        fb = cfg.get("feedback_pin")
        self._fb = None if fb is None else Pin(fb, Pin.IN)
        self._fb_on = 1 if cfg.get("feedback_active_high", True) else 0
        self._interlock = None

    def interlock(self, guard):
        """guard.tripped() -> True forbids closing (the RCD driver calls this)."""
        self._interlock = guard

    def set(self, closed):
        guard = self._interlock
        if closed and (guard is None or not guard.tripped()):
            self._pin.value(self._on)
            self._closed = True
            # A trip interrupt between the check and the write opened nothing (the pin was
            # still off) but latched: look again, so the coil is released within microseconds.
            if guard is not None and guard.tripped():
                self.open_now()
        else:
            self.open_now()

    def closed(self):
        """The last command (True = closed), not the contacts: see feedback()."""
        return self._closed

    def open_now(self):
        """Open at once. Safe in a hard IRQ: no allocation."""
        self._pin.value(self._off)
        self._closed = False

    def feedback(self):
        """True if the auxiliary contact says closed, False if open, None without feedback."""
        fb = self._fb
        if fb is None:
            return None
        return fb.value() == self._fb_on
