"""Host fake of MicroPython's `network` module (ESP32 port): WLAN.

World hooks (firmware never calls them):

    hw_set_wifi(available, ssid=None, key=None)
        The world's access point is up (True) or down. With ssid/key given, connect() must use
        that ssid (else STAT_NO_AP_FOUND) and key (else STAT_WRONG_PASSWORD); None accepts any.
    hw_wifi_state() -> dict
        {"available", "ssid" (the AP's), "active", "connected", "status"} of the station.

There is no connection delay: the station is connected whenever it is active, has been asked to
connect (and not disconnect()ed since) and the world's AP is up and accepts its ssid/key. So it
drops when the AP goes down and comes back by itself when the AP returns, as the ESP32 port
reconnects. machine.hw_reset() forgets the interfaces (inactive, default config);
keep_world=False also takes the AP down.
"""
import machine

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
AUTH_OPEN = 0
AUTH_WPA2_PSK = 3

_STA_ADDR = ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")
_AP_ADDR = ("192.168.4.1", "255.255.255.0", "192.168.4.1", "0.0.0.0")
_NO_ADDR = ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

_ap = {"available": False, "ssid": None, "key": None}
_ifs = {}  # interface id -> state


def hw_set_wifi(available, ssid=None, key=None):
    _ap["available"] = bool(available)
    _ap["ssid"] = ssid
    _ap["key"] = key


def hw_wifi_state():
    sta = WLAN(STA_IF)
    return {"available": _ap["available"], "ssid": _ap["ssid"], "active": sta.active(),
            "connected": sta.isconnected(), "status": sta.status()}


def _on_reset(keep_world):
    _ifs.clear()
    if not keep_world:
        hw_set_wifi(False)


machine._reset_hooks.append(_on_reset)


def _state(interface_id):
    s = _ifs.get(interface_id)
    if s is None:
        mac = machine.unique_id()
        if interface_id == AP_IF:
            mac = mac[:5] + bytes([(mac[5] + 1) & 0xFF])
        config = {"mac": mac, "ssid": "", "key": "", "channel": 1, "hidden": False,
                  "security": AUTH_OPEN, "hostname": "espressif", "reconnects": -1,
                  "txpower": 20, "pm": WLAN.PM_PERFORMANCE}
        s = _ifs[interface_id] = {"active": False, "want": None, "static": None,
                                  "config": config}
    return s


def _mask(prefix):
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return "%d.%d.%d.%d" % (bits >> 24, (bits >> 16) & 255, (bits >> 8) & 255, bits & 255)


class WLAN:
    IF_STA = 0
    IF_AP = 1
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        self._if = interface_id

    def _s(self):
        return _state(self._if)

    def active(self, is_active=None):
        s = self._s()
        if is_active is None:
            return s["active"]
        s["active"] = bool(is_active)
        if not is_active:
            s["want"] = None

    def connect(self, ssid=None, password=None, *, bssid=None):
        s = self._s()
        if self._if != STA_IF:
            raise OSError("STA required")
        if not s["active"]:
            raise OSError("Wifi Not Started")
        if ssid is not None:
            s["config"]["ssid"] = ssid
        if password is not None:
            s["config"]["key"] = password
        s["want"] = (s["config"]["ssid"], s["config"]["key"])

    def disconnect(self):
        self._s()["want"] = None

    def status(self, param=None):
        s = self._s()
        if param == "rssi":
            if not self.isconnected():
                raise OSError("Wifi Not Connected")
            return -55
        if param == "stations":
            return []
        if param is not None:
            raise ValueError("unknown status param")
        if self._if != STA_IF or not s["active"] or s["want"] is None:
            return STAT_IDLE
        ssid, key = s["want"]
        if not _ap["available"] or _ap["ssid"] not in (None, ssid):
            return STAT_NO_AP_FOUND
        if _ap["key"] not in (None, key):
            return STAT_WRONG_PASSWORD
        return STAT_GOT_IP

    def isconnected(self):
        return self._if == STA_IF and self.status() == STAT_GOT_IP

    def scan(self):
        if not self._s()["active"]:
            raise OSError("Wifi Not Started")
        if not _ap["available"]:
            return []
        ssid = (_ap["ssid"] or "world-ap").encode()
        security = AUTH_OPEN if _ap["key"] is None else AUTH_WPA2_PSK
        return [(ssid, b"\x02\x00\x00\x00\x00\x01", 6, -55, security, False)]

    def ifconfig(self, ip_mask_gateway_dns=None):
        s = self._s()
        if ip_mask_gateway_dns is not None:
            s["static"] = tuple(ip_mask_gateway_dns)
            return None
        if self._if == AP_IF:
            return _AP_ADDR if s["active"] else _NO_ADDR
        if not self.isconnected():
            return _NO_ADDR
        return s["static"] or _STA_ADDR

    def ipconfig(self, *args, **kwargs):
        """Get 'addr4' (ip, mask), 'gw4', 'dhcp4'; set dhcp4=, addr4=("ip", "mask") or "ip/nn",
        gw4=."""
        s = self._s()
        if args:
            ip, mask, gw, dns = self.ifconfig()
            if args[0] == "addr4":
                return (ip, mask)
            if args[0] == "gw4":
                return gw
            if args[0] == "dhcp4":
                return s["static"] is None
            raise ValueError("unexpected key")
        static = list(s["static"] or _STA_ADDR)
        for k in kwargs:
            v = kwargs[k]
            if k == "addr4":
                if isinstance(v, str):
                    ip, prefix = v.split("/")
                    v = (ip, _mask(int(prefix)))
                static[0], static[1] = v[0], v[1]
            elif k == "gw4":
                static[2] = v
            elif k != "dhcp4":
                raise ValueError("unexpected key")
        s["static"] = None if kwargs.get("dhcp4") else tuple(static)

    def config(self, param=None, **kwargs):
        cfg = self._s()["config"]
        if param is not None:
            if param not in cfg:
                raise ValueError("unknown config param")
            return cfg[param]
        for k in kwargs:
            if k not in cfg:
                raise ValueError("unknown config param")
            cfg[k] = kwargs[k]
