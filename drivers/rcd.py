"""Residual-current detector (RDC-DD 6 mA DC module or a type B RCD's signal contact).

The trip input has a hard IRQ on its active edge. The handler opens the contactor before
anything else, then latches and counts; it allocates nothing. `tripped()` also polls the
input, so a trip whose edge was missed is still caught on the next control tick.
While tripped the relay refuses to close. `trips` counts latched trips. The test output
(`test_pin`) is active high.
"""
from machine import Pin


class Rcd:
    def __init__(self, cfg, relay):
        self._relay = relay
        self._active = 1 if cfg["active_high"] else 0
        self._pin = Pin(cfg["pin"], Pin.IN)
        self._test = Pin(cfg["test_pin"], Pin.OUT, value=0)
        self._latched = False
        self.trips = 0
        self._handler = self._irq  # bound once: the IRQ must not allocate
        trigger = Pin.IRQ_RISING if self._active else Pin.IRQ_FALLING
        self._pin.irq(handler=self._handler, trigger=trigger, hard=True)
        relay.interlock(self)  # no closing while tripped
        if self._pin.value() == self._active:  # already active at boot
            self._irq(self._pin)

    def _irq(self, pin):
        self._relay.open_now()
        if not self._latched:
            self._latched = True
            self.trips += 1

    def tripped(self):
        """True while latched (since the last successful clear())."""
        if not self._latched and self._pin.value() == self._active:
            self._irq(self._pin)
        return self._latched

    def clear(self):
        """Clear the latch if the detector output is inactive; returns whether it cleared."""
        if self._pin.value() == self._active:
            return False
        self._latched = False
        return True

    def test(self, on):
        """Drive the detector's test input (self-test: expect a trip within 500 ms)."""
        self._test.value(1 if on else 0)

    def input_active(self):
        return self._pin.value() == self._active
