"""Every setting of the station: type, default, bounds and flags, with validated load and save.

A settings file is a JSON object holding only the keys that differ from the defaults. Loading
checks every key; any problem raises `SettingsError` whose message names the key, the value and
what was expected, and nothing is applied. Saving is atomic (see store.py).

Flags: "secret" values are never printed or reported; "reboot" values take effect after a restart.
"""

from drivers import untrusted
from firmware import store

# key: (type, default, minimum, maximum, flags, help)
SCHEMA = {
    "free_charging": (bool, None, None, None, "", "Charge without authorization (a private wallbox); null: yes without a back end (ocpp_url empty), no with one."),
    "max_current_a": (float, 32.0, 6.0, 80.0, "", "Installer's current limit for this station, in A."),
    "ventilation_allowed": (bool, False, None, None, "", "Allow charging in state D (vehicle asks for ventilation)."),
    "overcurrent_margin_a": (float, 2.0, 0.5, 10.0, "", "Current above the offer tolerated before an overcurrent fault."),
    "overcurrent_time_ms": (int, 5000, 1000, 10000, "", "How long the vehicle may exceed offer + margin."),
    "temp_derate_c": (float, 60.0, 40.0, 90.0, "", "Temperature at which the offer starts to shrink."),
    "temp_shutdown_c": (float, 70.0, 45.0, 95.0, "", "Temperature at which charging stops (HighTemperature)."),
    "temp_resume_c": (float, 55.0, 30.0, 90.0, "", "Temperature below which charging may resume after a shutdown."),
    "fault_retry_s": (int, 30, 30, 3600, "", "Pause after a transient fault before energy is offered again."),
    "fault_max_retries": (int, 3, 0, 10, "", "Retries per plug-in before a fault waits for the vehicle to be unplugged."),
    "close_debounce_ms": (int, 200, 50, 2000, "", "Time the vehicle must stay in C/D before the contactor closes."),
    "pilot_fault_ms": (int, 50, 20, 90, "", "Out-of-band pilot reading time before a pilot fault (opening stays within 100 ms)."),
    "c1_timeout_ms": (int, 6000, 3000, 6000, "", "Contactor forced open this long after PWM removal if the vehicle stays in C."),
    "weld_check_ms": (int, 1000, 200, 5000, "", "Delay after opening before the contactor feedback must show open."),
    "rcd_test_timeout_ms": (int, 500, 100, 2000, "", "Time the RCD has to trip during its self-test."),
    "temp_sensor_required": (bool, True, None, None, "", "A missing temperature sensor is a fault."),
    "meter_required": (bool, True, None, None, "", "A meter that stops answering stops charging (PowerMeterFailure)."),
    "meter_max_failures": (int, 3, 1, 20, "", "Consecutive failed meter refreshes before the meter counts as failed."),
    "wifi_ssid": (str, "", None, None, "reboot", "Wi-Fi network the station joins (2.4 GHz); empty: no Wi-Fi (Ethernet, or no back end)."),
    "wifi_password": (str, "", None, None, "secret reboot", "Wi-Fi password (WPA2-PSK); empty for an open network."),
    "ocpp_url": (str, "", None, None, "reboot", "Back end (OCPP 1.6J) endpoint, ws://host:port/path or wss://...; empty: no back end."),
    "charge_box_id": (str, "", None, None, "reboot", "This charger's identity at the back end (appended to ocpp_url)."),
    "ocpp_ca_file": (str, "", None, None, "reboot", "PEM file of the CA that signed the back end's certificate (wss://, security profile 2)."),
    "authorization_key": (str, "", None, None, "secret", "HTTP basic auth password (OCPP AuthorizationKey); the back end may change it."),
    "free_id_tag": (str, "FreeCharging", None, None, "", "idTag reported for sessions that needed no authorization (free_charging)."),
    "firmware_public_key": (str, "", None, None, "reboot", "Ed25519 public key (64 hex digits) that firmware bundles must be signed with; empty: UpdateFirmware is refused."),
    "tariffs": (dict, None, None, None, "reboot", "Tariff table: prices by driver group and time of day, sharing windows of a private charger (docs/tariffs.md); none: sessions are not priced."),
    "local_tokens": (dict, None, None, None, "", "Without a back end: the tokens (idTag -> group or null) that may charge when free_charging is off (docs/auth.md)."),
    "energy_mode": (str, "normal", None, None, "", "Energy management (docs/energy.md): \"normal\" a fixed maximum, \"smart\" keeps the house's load and the charger under main_fuse_a, \"solar\" charges from the house's export; changeable at run time."),
    "main_fuse_a": (float, 0.0, 0.0, 400.0, "", "The house connection's main fuse per phase, in A: a ceiling no other controller lifts (smart and solar); 0: none set."),
    "fuse_margin_a": (float, 1.0, 0.0, 20.0, "", "Amps kept free below main_fuse_a on every phase (readings are up to a second old)."),
    "grid_timeout_s": (int, 10, 2, 600, "", "A grid reading older than this is stale: the charger offers grid_fallback_a and reports a grid fault."),
    "grid_fallback_a": (float, 6.0, 0.0, 80.0, "", "Current offered while no fresh grid reading is there (smart and solar); 0 pauses charging."),
    "solar_import_w": (int, 0, 0, 20000, "", "Solar mode: grid import allowed on top of the surplus, in W."),
    "solar_start_s": (int, 60, 0, 3600, "", "Solar mode: how long the surplus must suffice for 6 A before charging starts."),
    "solar_stop_s": (int, 180, 0, 7200, "", "Solar mode: how long charging goes on at 6 A while the surplus is short, before it stops (passing clouds)."),
    "lock_after_power_loss": (str, "release", None, None, "", "Socket lock found locked at boot with no session: \"release\" opens it, \"keep\" keeps it locked until the driver's token, a person or the back end frees it (a solenoid lock lets go when the power goes, whatever this says)."),
}

# Settings whose value is one of a few words.
CHOICES = {"lock_after_power_loss": ("release", "keep"), "energy_mode": ("normal", "smart", "solar")}


# The biggest settings file a station is expected to hold: 100 local_tokens of 14 hex digits
# (7-byte card UIDs), a third of them in a group, a two-tariff table, the Wi-Fi and back-end
# strings, as tools/deploy.py writes it (indent 1): 3.8 KB, and with it the whole firmware peaks
# at 58 KB of the 64 KB heap with a back end (measured in the simulator). Twice that leaves room
# for longer tokens and tables; more is refused unread (a 200 KB file would not even fit the heap).
MAX_FILE = 8192


class SettingsError(ValueError):
    pass


def _type_name(t):
    return {bool: "boolean", int: "integer", float: "number", str: "string", dict: "JSON object"}[t]


def check(key, value):
    """Return the value converted to the key's type, or raise SettingsError naming the problem."""
    if key not in SCHEMA:
        raise SettingsError("unknown setting %s" % _show(key))
    t, default, lo, hi, _flags, _help = SCHEMA[key]
    if t is bool:
        ok = value is True or value is False or (value is None and default is None)
    elif t is float:
        ok = (type(value) is int or type(value) is float) and value is not True and value is not False
        if ok:
            try:
                value = float(value)
            except OverflowError:  # CPython: an int beyond the float range (MicroPython gives inf)
                value = float("inf") if value > 0 else float("-inf")
    elif t is dict:
        ok = value is None or type(value) is dict
    else:
        ok = type(value) is t
    if not ok:
        raise SettingsError("setting '%s': expected %s, got %s" % (key, _type_name(t), _show(value)))
    if t is float and not untrusted.finite(value):  # NaN passes both bound checks below
        raise SettingsError("setting '%s': expected a finite number, got %r" % (key, value))
    if t is dict and value is not None:
        if key == "tariffs":
            from firmware import tariff

            try:
                tariff.parse(value)
            except ValueError as e:
                raise SettingsError("setting '%s': %s" % (key, e))
        else:
            _check_tokens(key, value)
    if key in CHOICES and value not in CHOICES[key]:
        raise SettingsError("setting '%s': expected one of %s, got %r"
                            % (key, ", ".join(['"%s"' % c for c in CHOICES[key]]), value))
    if lo is not None and value < lo:
        raise SettingsError("setting '%s': %s is below the minimum %r" % (key, _show(value), lo))
    if hi is not None and value > hi:
        raise SettingsError("setting '%s': %s is above the maximum %r" % (key, _show(value), hi))
    return value


def _show(value):
    """repr(value) for a message, cut short: a message must not grow with a hostile value."""
    r = repr(value)
    return r if len(r) <= 60 else r[:57] + "..."


def _check_tokens(key, value):
    if len(value) > 100:
        raise SettingsError("setting '%s': at most 100 tokens, got %d" % (key, len(value)))
    for tag in value:
        group = value[tag]
        for what, v in (("idTag", tag), ("group of %s" % tag, group)):
            if v is not None and (type(v) is not str or not 1 <= len(v) <= 20):
                raise SettingsError("setting '%s': %s: expected 1 to 20 characters (OCPP idToken), got %s"
                                    % (key, what, _show(v)))


class Settings:
    """Current values; `get` is cheap enough for slow tasks, the charger copies what it needs."""

    def __init__(self, values=None):
        self._v = {}
        for key in SCHEMA:
            self._v[key] = SCHEMA[key][1]
        if values:
            self.update(values)
        self._cross_check(self._v)

    def get(self, key):
        v = self._v[key]
        if v is None and key == "free_charging":
            # Not set: a charger connected to an operator charges authorized drivers only; a
            # wallbox with no back end charges whoever plugs in.
            return not self._v["ocpp_url"]
        return v

    def update(self, values):
        """Validate every value first; apply all or none."""
        if not isinstance(values, dict):
            raise SettingsError("settings must be a JSON object, got %s" % _show(values))
        new = dict(self._v)
        for key in values:
            new[key] = check(key, values[key])
        self._cross_check(new)
        self._v = new

    def _cross_check(self, v):
        if v["ocpp_url"] and not v["charge_box_id"]:
            raise SettingsError("setting 'charge_box_id': needed with ocpp_url %s" % _show(v["ocpp_url"]))
        if v["ocpp_url"] and not (v["ocpp_url"].startswith("ws://") or v["ocpp_url"].startswith("wss://")):
            raise SettingsError("setting 'ocpp_url': expected ws://... or wss://..., got %s" % _show(v["ocpp_url"]))
        if len(v["wifi_ssid"]) > 32:
            raise SettingsError("setting 'wifi_ssid': expected at most 32 characters, got %d" % len(v["wifi_ssid"]))
        if v["wifi_password"] and not 8 <= len(v["wifi_password"]) <= 63:
            raise SettingsError("setting 'wifi_password': expected 8 to 63 characters (WPA2), got %d"
                                % len(v["wifi_password"]))
        if len(v["free_id_tag"]) > 20 or not v["free_id_tag"]:
            raise SettingsError("setting 'free_id_tag': expected 1 to 20 characters (OCPP idToken), got %s"
                                % _show(v["free_id_tag"]))
        if v["energy_mode"] == "smart" and not v["main_fuse_a"]:
            raise SettingsError("setting 'energy_mode': \"smart\" needs main_fuse_a")
        if 0 < v["grid_fallback_a"] < 6:
            raise SettingsError("setting 'grid_fallback_a': 0 (pause) or at least 6 A, got %r" % v["grid_fallback_a"])
        if not v["temp_resume_c"] < v["temp_derate_c"] < v["temp_shutdown_c"]:
            raise SettingsError(
                "settings temp_resume_c < temp_derate_c < temp_shutdown_c expected, got %r, %r, %r"
                % (v["temp_resume_c"], v["temp_derate_c"], v["temp_shutdown_c"])
            )

    def changed(self):
        """The values that differ from the defaults (what a settings file holds)."""
        out = {}
        for key in self._v:
            if self._v[key] != SCHEMA[key][1]:
                out[key] = self._v[key]
        return out

    def public(self):
        """Values safe to print or report: secrets are masked."""
        out = {}
        for key in self._v:
            out[key] = "***" if "secret" in SCHEMA[key][4] else self._v[key]
        return out


def load(path, fs=None):
    """Settings from a JSON file; defaults when the file does not exist. Raises SettingsError.

    The file is refused, before anything is parsed, when it has more than MAX_FILE bytes; it is
    refused too when it is not UTF-8, not strict JSON, nested too deeply or not an object
    (`null`, a list: never "all defaults", which would mean free charging)."""
    try:
        values = store.read_json(path, fs, MAX_FILE)
    except ValueError as e:
        raise SettingsError("settings file %s: %s" % (path, e))
    if values is None:
        return Settings()
    return Settings(values)


def save(path, settings, fs=None):
    store.write_json(path, settings.changed(), fs)
