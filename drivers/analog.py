"""An ADC1 input read in millivolts: 11 dB attenuation, eFuse-calibrated read_uv, averaged."""
from machine import ADC, Pin


class AnalogIn:
    def __init__(self, pin, reads=4):
        self._read = ADC(Pin(pin), atten=ADC.ATTN_11DB).read_uv  # bound once: no allocation per read
        self._n = reads

    def millivolts(self):
        read = self._read
        n = self._n
        total = 0
        for _ in range(n):
            total += read()
        return (total + 500 * n) // (1000 * n)
