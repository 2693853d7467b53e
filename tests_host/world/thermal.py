"""Enclosure temperature seen through an NTC on temperature.adc_pin.

Circuit: series resistor `series_ohms` from `supply_mv` to the ADC node, NTC from the node to
ground. With T in kelvin and T25 = 298.15 K:

    R_ntc = ntc_r25 * exp(ntc_beta * (1/T - 1/T25))
    mv    = supply_mv * R_ntc / (R_ntc + series_ohms)          (rounded to an int)

and the inverse, which the temperature driver uses:

    R_ntc = series_ohms * mv / (supply_mv - mv)
    T     = 1 / (1/T25 + ln(R_ntc / ntc_r25) / ntc_beta);   C = T - 273.15

Hotter -> lower resistance -> lower voltage.
"""
import math

T25 = 298.15


def ntc_ohms(celsius, r25, beta):
    return r25 * math.exp(beta * (1.0 / (celsius + 273.15) - 1.0 / T25))


def ntc_mv(celsius, r25, beta, series_ohms, supply_mv):
    r = ntc_ohms(celsius, r25, beta)
    return int(supply_mv * r / (r + series_ohms) + 0.5)


def mv_to_celsius(mv, r25, beta, series_ohms, supply_mv):
    """The inverse formula; None when the node reads open (>= supply) or shorted (<= 0)."""
    if mv <= 0 or mv >= supply_mv:
        return None
    r = series_ohms * mv / (supply_mv - mv)
    return 1.0 / (1.0 / T25 + math.log(r / r25) / beta) - 273.15


class Thermal:
    def __init__(self, cfg):
        self.adc_pin = cfg["adc_pin"]
        self.r25 = cfg["ntc_r25"]
        self.beta = cfg["ntc_beta"]
        self.series = cfg["series_ohms"]
        self.supply = cfg["supply_mv"]
        self.celsius = 25.0
        self.mv = 0
        self.set(25.0)

    def set(self, celsius):
        self.celsius = float(celsius)
        self.mv = ntc_mv(self.celsius, self.r25, self.beta, self.series, self.supply)

    def adc(self, t_us):
        return self.mv
