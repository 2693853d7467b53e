"""The charging cable's proximity (PP) coding resistor, seen on proximity.adc_pin.

PP-PE resistor against a pull-up of `pullup_ohms` to `supply_mv`:
mv = supply_mv * R / (R + pullup_ohms); no cable (open) reads supply_mv.
Type 2 coding (IEC 61851-1 / IEC 62196): 13 A 1500, 20 A 680, 32 A 220, 63 A (70 A on one
phase) 100 Ohm. Tethered boards have no PP input and no Cable object.
"""

OHMS = {13: 1500, 20: 680, 32: 220, 63: 100, 70: 100}


def pp_mv(ohms, pullup_ohms, supply_mv):
    """Millivolts at the PP input (int); ohms None = open."""
    if ohms is None:
        return supply_mv
    den = ohms + pullup_ohms
    return (supply_mv * ohms + den // 2) // den


class Cable:
    def __init__(self, cfg):
        self.adc_pin = cfg["adc_pin"]
        self.pullup = cfg["pullup_ohms"]
        self.supply = cfg["supply_mv"]
        self.amps = None
        self.ohms = None
        self.mv = self.supply

    def plug(self, amps):
        if amps not in OHMS:
            raise ValueError("cable rating %r A: expected one of 13, 20, 32, 63, 70" % (amps,))
        self.amps = amps
        self.set_ohms(OHMS[amps])

    def set_ohms(self, ohms):
        """Any PP resistor (None = open), e.g. a damaged cable."""
        self.ohms = ohms
        self.mv = pp_mv(ohms, self.pullup, self.supply)

    def unplug(self):
        self.amps = None
        self.set_ohms(None)

    def adc(self, t_us):
        return self.mv
