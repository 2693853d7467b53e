"""Proximity pilot (PP): PP-PE resistor against a pull-up to supply_mv, read on ADC1.

ohms = pullup * v / (supply - v), integer math. None when open (no cable), 0 when shorted.
"""
from drivers.analog import AnalogIn

OPEN_OHMS = 10000  # no Type 2 coding resistor is above 2.2 kOhm; anything this high is open


class Proximity:
    def __init__(self, cfg):
        self._pullup = cfg["pullup_ohms"]
        self._supply = cfg["supply_mv"]
        self._in = AnalogIn(cfg["adc_pin"])

    def millivolts(self):
        return self._in.millivolts()

    def ohms(self):
        return ohms_from_mv(self.millivolts(), self._pullup, self._supply)


def ohms_from_mv(v, pullup, supply):
    if v <= 0:
        return 0
    den = supply - v
    if den <= 0:
        return None
    r = (pullup * v + den // 2) // den
    if r > OPEN_OHMS:
        return None
    return r
