"""Control pilot: 1 kHz LEDC PWM out, ADC1 sampling of both plateaus in.

`sample()` takes `samples` reads back to back (about 23 us each), which spans one or more
whole 1 ms PWM periods, and keeps the 3 highest and 3 lowest readings in six ints (no list, no
float, no allocation besides the returned 2-tuple; `measure()` avoids even that).
"""
from machine import ADC, PWM, Pin

try:
    import micropython  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython (host tests): @micropython.native is the identity there
    class micropython:  # noqa: N801 - stands in for the module  # pyright: ignore[reportRedeclaration]
        @staticmethod
        def native(f):
            return f

FREQ_HZ = 1000
_BIG = 1000000000  # beyond any microvolt reading, still a small int on the ESP32 (< 2**30)


class Pilot:
    def __init__(self, cfg):
        cal = cfg["cal"]
        self._cal_lo = cal["adc_mv_at_minus12"]  # ADC mV at -12 V on the pilot line
        span = cal["adc_mv_at_plus12"] - self._cal_lo
        self._den = span * 10          # tenths of a millivolt per 24 V
        self._half = span * 5          # rounding, works for either sign of span
        self._n = cfg["samples"]
        self._duty = 65535
        self._pwm = PWM(Pin(cfg["pwm_pin"]), freq=FREQ_HZ, duty_u16=65535)
        self._adc = ADC(Pin(cfg["adc_pin"]), atten=ADC.ATTN_11DB)
        self._read = self._adc.read_uv
        self.high_mv = 0
        self.low_mv = 0

    def set_duty_u16(self, d):
        """65535: steady +12 V; 0: steady -12 V (state F); else 1 kHz PWM with that duty."""
        if d < 0:
            d = 0
        elif d > 65535:
            d = 65535
        self._duty = d
        self._pwm.duty_u16(d)

    def duty_u16(self):
        return self._duty

    def to_line_mv(self, adc_uv):
        """ADC microvolts -> pilot-line millivolts by the two-point calibration (ints only)."""
        # tenths of a mV above the -12 V point; |x| <= 33000 so x * 24000 < 2**30
        x = adc_uv // 100 - self._cal_lo * 10
        return -12000 + (x * 24000 + self._half) // self._den

    def line_mv(self):
        """One reading of the pilot line in millivolts (the bench measures the duty with it)."""
        return self.to_line_mv(self._read())

    @micropython.native  # the hottest loop of the control tick: native code on the ESP32 (xtensawin)
    def measure(self):
        """Sample both plateaus into self.high_mv / self.low_mv; allocates nothing."""
        read = self._read
        h1 = h2 = h3 = -_BIG
        l1 = l2 = l3 = _BIG
        for _ in range(self._n):
            v = read()
            if v > h3:
                if v > h2:
                    h3 = h2
                    if v > h1:
                        h2 = h1
                        h1 = v
                    else:
                        h2 = v
                else:
                    h3 = v
            if v < l3:
                if v < l2:
                    l3 = l2
                    if v < l1:
                        l2 = l1
                        l1 = v
                    else:
                        l2 = v
                else:
                    l3 = v
        # mean of 3 in tenths of a mV (sum // 300), then the calibration
        den = self._den
        half = self._half
        lo10 = self._cal_lo * 10
        self.high_mv = -12000 + (((h1 + h2 + h3) // 300 - lo10) * 24000 + half) // den
        self.low_mv = -12000 + (((l1 + l2 + l3) // 300 - lo10) * 24000 + half) // den

    def sample(self):
        """(high_mv, low_mv): pilot-line millivolts of the high and the low plateau."""
        self.measure()
        return (self.high_mv, self.low_mv)

    def deinit(self):
        self._pwm.deinit()
