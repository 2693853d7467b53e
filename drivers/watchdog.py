"""Hardware watchdog: machine.WDT(timeout=watchdog_ms). 0 = disabled (bench only).

Once started the ESP32 watchdog cannot be stopped; feed() it from the control loop.
"""


class Watchdog:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self._wdt = None
        if timeout_ms:
            from machine import WDT
            self._wdt = WDT(timeout=timeout_ms)

    def enabled(self):
        return self._wdt is not None

    def feed(self):
        wdt = self._wdt
        if wdt is not None:
            wdt.feed()
