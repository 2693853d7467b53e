"""Status LED: one pin, a pattern per status; pass the tick to get the blink phase.

idle: steady on; connected: 1 Hz blink; charging: 2 Hz blink; fault (and anything unknown):
5 Hz blink; unavailable: off. No allocation.
"""
from machine import Pin


def half_period_ms(status):
    """0 = steady on, -1 = off, else the blink half period in ms."""
    if status == "idle":
        return 0
    if status == "connected":
        return 500
    if status == "charging":
        return 250
    if status == "unavailable":
        return -1
    return 100  # "fault" and anything unexpected


class Led:
    def __init__(self, cfg):
        self._on = 1 if cfg["active_high"] else 0
        self._pin = Pin(cfg["pin"], Pin.OUT, value=1 - self._on)

    def show(self, status, ticks_ms=0):
        h = half_period_ms(status)
        if h == 0:
            lit = True
        elif h < 0:
            lit = False
        else:
            lit = (ticks_ms // h) % 2 == 0
        self._pin.value(self._on if lit else 1 - self._on)

    def lit(self):
        return self._pin.value() == self._on
