"""Wi-Fi station: network.WLAN(STA_IF), joined once at boot; the ESP32 port reconnects by itself.

`start(ssid, password)` never blocks: the back-end link simply fails its connection attempts
(and backs off) until the network is up. `state()` is what a log line or the bench shows.
"""
import network

_NAMES = {}


def _status_names():
    if not _NAMES:
        for name in ("STAT_IDLE", "STAT_CONNECTING", "STAT_GOT_IP", "STAT_NO_AP_FOUND",
                     "STAT_WRONG_PASSWORD", "STAT_BEACON_TIMEOUT", "STAT_ASSOC_FAIL",
                     "STAT_HANDSHAKE_TIMEOUT"):
            code = getattr(network, name, None)
            if code is not None and code not in _NAMES:
                _NAMES[code] = name[5:].lower()
    return _NAMES


class Wifi:
    def __init__(self):
        self.wlan = network.WLAN(network.STA_IF)

    def start(self, ssid, password):
        self.wlan.active(True)
        self.wlan.connect(ssid, password)

    def connected(self):
        return self.wlan.isconnected()

    def state(self):
        """{"status": "got_ip" | "no_ap_found" | "wrong_password" | ..., "ip", "rssi"}"""
        code = self.wlan.status()
        out = {"status": _status_names().get(code, str(code)), "ip": None, "rssi": None}
        if self.wlan.isconnected():
            out["ip"] = self.wlan.ifconfig()[0]
            try:
                out["rssi"] = self.wlan.status("rssi")
            except (OSError, ValueError):
                pass
        return out


def start(ssid, password):
    """Join `ssid` (non-blocking); returns the Wifi object."""
    w = Wifi()
    w.start(ssid, password)
    return w
