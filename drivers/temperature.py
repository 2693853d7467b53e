"""Temperature: NTC on ADC1 (beta equation) and, optionally, a DS18B20 on a 1-Wire pin.

Wiring: supply -- series_ohms -- ADC node -- NTC -- GND. `deci_celsius(ticks_ms)` returns tenths
of a degree (int) or None when no sensor gives a plausible value. With both sensors it returns
the hotter one (the conservative choice for derating).

The DS18B20 is never waited for: a call starts a conversion, a call at least 750 ms later (by
the ticks value passed in) reads it and starts the next one. Without ticks the DS18B20 is not
touched. Read about once a second, not per control tick (floats are used here).
"""
import math

from machine import Pin

from drivers.analog import AnalogIn
from drivers.ticks import diff as _ticks_diff

CONVERT_MS = 750           # DS18B20 12-bit conversion time
DS_STALE_MS = 5000         # a DS18B20 value older than this is not reported
MIN_DECI = -550            # plausible range; outside it the sensor is treated as missing
MAX_DECI = 1500
ADC_MAX_MV = 3100          # the 11 dB ESP32 ADC saturates about here: cannot tell from open
_T25 = 298.15


def ntc_deci_celsius(mv, supply_mv, series_ohms, r25, beta):
    """Divider millivolts -> tenths of a degree, or None when open or shorted."""
    if mv <= 0 or mv >= supply_mv or mv >= ADC_MAX_MV:
        return None
    r = series_ohms * mv / (supply_mv - mv)
    if r <= 0:
        return None
    t = 1.0 / (1.0 / _T25 + math.log(r / r25) / beta)
    deci = int(math.floor((t - 273.15) * 10 + 0.5))
    if deci < MIN_DECI or deci > MAX_DECI:
        return None
    return deci


class Temperature:
    def __init__(self, cfg):
        self._supply = cfg["supply_mv"]
        self._series = cfg["series_ohms"]
        self._r25 = cfg["ntc_r25"]
        self._beta = cfg["ntc_beta"]
        self._in = AnalogIn(cfg["adc_pin"])
        self._ds = None
        self._rom = None
        self._ds_started = None   # ticks when the running conversion was started
        self._ds_value = None     # last DS18B20 reading, deci-degrees
        self._ds_at = 0           # ticks of that reading
        self.ds_error = None      # why the DS18B20 is not in use (str) or None
        pin = cfg.get("ds18b20_pin")
        if pin is not None:
            self._init_ds(pin)

    def _init_ds(self, pin):
        try:
            import onewire
            import ds18x20
        except ImportError:
            self.ds_error = "no onewire/ds18x20 module on this port"
            return
        try:
            ds = ds18x20.DS18X20(onewire.OneWire(Pin(pin)))
            roms = ds.scan()
        except Exception as e:  # noqa: BLE001 - a missing sensor must not stop the board
            self.ds_error = "DS18B20 scan failed: %s" % e
            return
        if not roms:
            self.ds_error = "no DS18B20 found"
            return
        self._ds = ds
        self._rom = roms[0]

    def millivolts(self):
        return self._in.millivolts()

    def ntc_deci_celsius(self):
        return ntc_deci_celsius(self.millivolts(), self._supply, self._series, self._r25,
                                self._beta)

    def ds_deci_celsius(self, ticks_ms):
        """Step the DS18B20 (start or collect a conversion); its latest fresh value or None."""
        ds = self._ds
        if ds is None:
            return None
        started = self._ds_started
        if started is None:
            self._ds_start(ds, ticks_ms)
        elif _ticks_diff(ticks_ms, started) >= CONVERT_MS:
            try:
                t = ds.read_temp(self._rom)
                self._ds_value = int(math.floor(t * 10 + 0.5))
                self._ds_at = ticks_ms
            except Exception:  # noqa: BLE001 - CRC error or sensor gone: no value this time
                pass
            self._ds_start(ds, ticks_ms)
        if self._ds_value is None or _ticks_diff(ticks_ms, self._ds_at) > DS_STALE_MS:
            return None
        return self._ds_value

    def _ds_start(self, ds, ticks_ms):
        try:
            ds.convert_temp()
            self._ds_started = ticks_ms
        except Exception:  # noqa: BLE001
            self._ds_started = None

    def deci_celsius(self, ticks_ms=None):
        t = self.ntc_deci_celsius()
        if ticks_ms is not None and self._ds is not None:
            d = self.ds_deci_celsius(ticks_ms)
            if d is not None and (t is None or d > t):
                t = d
        return t
