"""Board profiles: load and validate drivers/boards/NAME.json, build the drivers, make safe at boot.

`load(name_or_path)` returns the validated profile (a dict, optional entries filled with their
defaults) or raises `BoardError` naming every bad entry. `build(profile)` constructs the
drivers. `make_safe(profile)` is what boot.py runs first: contactor open, socket lock idle,
pilot at +12 V.

Pins are checked against the ESP32 (WROOM/WROVER DevKit): GPIO 6-11 belong to the flash,
34-39 are input only, analog inputs must be ADC1 (32-39) because ADC2 is unusable with Wi-Fi.
"""
from drivers import jsonfile

# Pins of the generic DevKit profile: what make_safe falls back to when a profile is unusable.
DEFAULT_RELAY_PIN = 26
DEFAULT_RELAY_ACTIVE_HIGH = True
DEFAULT_PILOT_PWM_PIN = 25

PILOT_FREQ_HZ = 1000

_FLASH_PINS = (6, 7, 8, 9, 10, 11)
_MISSING_GPIO = (20, 24, 28, 29, 30, 31)
_ADC1_PINS = (32, 33, 34, 35, 36, 37, 38, 39)

_TOP_KEYS = ("name", "description", "socketed", "max_current_a", "phases", "pilot", "relay",
             "rcd", "proximity", "temperature", "led", "watchdog_ms", "meter", "grid_meter", "reader", "lock",
             "phase_switch")
_PILOT_KEYS = ("pwm_pin", "adc_pin", "samples", "cal")
_CAL_KEYS = ("adc_mv_at_minus12", "adc_mv_at_plus12")
_RELAY_KEYS = ("pin", "active_high", "feedback_pin", "feedback_active_high")
_RCD_KEYS = ("pin", "active_high", "test_pin", "type")
_RCD_TYPES = ("rdc-dd", "type-b")
_PROX_KEYS = ("adc_pin", "pullup_ohms", "supply_mv")
_TEMP_KEYS = ("adc_pin", "ntc_r25", "ntc_beta", "series_ohms", "supply_mv", "ds18b20_pin")
_LED_KEYS = ("pin", "active_high")
_PHASE_SWITCH_KEYS = ("pin", "active_high")  # the coil of the contactor that connects L2 and L3
_METER_KEYS = ("model", "uart", "tx_pin", "rx_pin", "de_pin", "address", "baudrate",
               "interval_ms", "timeout_ms", "retries")
_S0_METER_KEYS = ("model", "pin", "impulses_per_kwh", "active_high")  # meter.model "s0"
_GRID_METER_KEYS = ("model", "address", "interval_ms")  # on the bus of the Modbus meter
# Socket lock (drivers/lock.py): a motor (bistable, two outputs) or a solenoid (one output, held
# while locked); both confirm by a feedback contact.
_LOCK_TIMING = ("feedback_pin", "feedback_active_high", "active_high", "settle_ms", "pause_ms",
                "retries")
_LOCK_KEYS = {"motor": ("type", "lock_pin", "unlock_pin", "pulse_ms") + _LOCK_TIMING,
              "solenoid": ("type", "pin") + _LOCK_TIMING}
_LOCK_ALL = _LOCK_KEYS["motor"] + ("pin",)
INSTALLED_FILE = "board.json"  # the profile installed on the board's flash
# The largest profile (esp32-devkit.json, every section) has 1 KB; a longer description or a
# card reader section fit easily in 4 KB, and a bigger file is refused before it is read.
MAX_FILE = 4096


class BoardError(Exception):
    """A board profile that cannot be used. `errors` lists every problem found."""

    def __init__(self, message, errors=None):
        super().__init__(message)
        self.message = message
        self.errors = errors if errors is not None else [message]

    def __str__(self):
        return self.message


# ---------------------------------------------------------------------------------------------
# validation helpers

def type_name(v):
    """A JSON-ish name of a value's type, for error messages."""
    if v is None:
        return "null"
    if v is True or v is False:
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "str"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, (list, tuple)):
        return "list"
    return type(v).__name__


def _is_int(v):
    return isinstance(v, int) and v is not True and v is not False


class _Checker:
    def __init__(self):
        self.errors = []
        self.pins = {}  # pin -> first entry that uses it

    def err(self, msg):
        self.errors.append(msg)

    def section(self, d, path, key, allowed, required=True, nullable=False):
        """The sub-object d[key]: None if absent/null/bad (reported), else the dict."""
        full = path + key
        if key not in d:
            if required:
                self.err("missing required entry: " + full)
            return None
        v = d[key]
        if v is None:
            if not nullable:
                self.err(full + ": expected object, got null")
            return None
        if not isinstance(v, dict):
            self.err(full + ": expected object, got " + type_name(v))
            return None
        for k in v:
            if k not in allowed:
                self.err("unknown key: " + full + "." + str(k))
        return v

    def value(self, d, path, key, kind, required=True, nullable=False, default=None):
        """Type-check d[key]; returns (ok, value). Absent optional entries get `default`."""
        full = path + key
        if key not in d:
            if required:
                self.err("missing required entry: " + full)
                return False, None
            d[key] = default
            return True, default
        v = d[key]
        if v is None:
            if nullable:
                return True, None
            self.err(full + ": expected " + kind + ", got null")
            return False, None
        if kind == "int":
            ok = _is_int(v)
        elif kind == "bool":
            ok = v is True or v is False
        else:
            ok = isinstance(v, str)
        if not ok:
            self.err(full + ": expected " + kind + ", got " + type_name(v))
            return False, None
        return True, v

    def int_range(self, d, path, key, lo, hi, required=True, nullable=False, default=None):
        ok, v = self.value(d, path, key, "int", required, nullable, default)
        if ok and v is not None and (v < lo or v > hi):
            self.err("%s%s: %d out of range %d..%d" % (path, key, v, lo, hi))
            return False, None
        return ok, v

    def pin(self, d, path, key, use, required=True, nullable=False):
        """use: "out" (output or open drain), "in" (digital input) or "adc" (ADC1 input)."""
        ok, p = self.value(d, path, key, "int", required, nullable)
        if not ok or p is None:
            return
        full = path + key
        if p < 0 or p > 39 or p in _MISSING_GPIO:
            self.err("%s: GPIO %d does not exist on the ESP32" % (full, p))
            return
        if p in _FLASH_PINS:
            self.err("%s: GPIO %d is wired to the SPI flash (6-11 are unusable)" % (full, p))
            return
        if use == "out" and p >= 34:
            self.err("%s: GPIO %d is input only (34-39) and cannot drive an output" % (full, p))
            return
        if use == "adc" and p not in _ADC1_PINS:
            self.err("%s: GPIO %d is not an ADC1 pin (use 32-39; ADC2 is unusable with Wi-Fi)"
                     % (full, p))
            return
        first = self.pins.get(p)
        if first is not None:
            self.err("pin %d used twice: %s and %s" % (p, first, full))
        else:
            self.pins[p] = full


def validate(data, source="profile"):
    """Check a parsed profile in place, fill optional entries with defaults and return it.

    Raises BoardError listing every problem ("; "-joined, sorted; each names its entry).
    """
    if not isinstance(data, dict):
        raise BoardError("%s: expected object at top level, got %s" % (source, type_name(data)))
    c = _Checker()
    for k in data:
        if k not in _TOP_KEYS:
            c.err("unknown key: " + str(k))

    ok, name = c.value(data, "", "name", "str")
    if ok and not name:
        c.err("name: must not be empty")
    c.value(data, "", "description", "str", required=False, default="")
    ok, socketed = c.value(data, "", "socketed", "bool")
    if not ok:
        socketed = None
    c.int_range(data, "", "max_current_a", 6, 80)
    ok, phases = c.value(data, "", "phases", "int")
    if ok and phases not in (1, 3):
        c.err("phases: %d out of range (1 or 3)" % phases)
    ok, wd = c.value(data, "", "watchdog_ms", "int")
    if ok and isinstance(wd, int) and wd != 0 and (wd < 1000 or wd > 60000):
        c.err("watchdog_ms: %d out of range (0 = off, or 1000..60000)" % wd)

    # pilot
    s = c.section(data, "", "pilot", _PILOT_KEYS)
    if s is not None:
        c.pin(s, "pilot.", "pwm_pin", "out")
        c.pin(s, "pilot.", "adc_pin", "adc")
        c.int_range(s, "pilot.", "samples", 44, 256)
        cal = c.section(s, "pilot.", "cal", _CAL_KEYS)
        if cal is not None:
            ok1, lo = c.int_range(cal, "pilot.cal.", "adc_mv_at_minus12", 0, 3300)
            ok2, hi = c.int_range(cal, "pilot.cal.", "adc_mv_at_plus12", 0, 3300)
            if ok1 and ok2 and lo is not None and hi is not None and abs(hi - lo) < 100:
                c.err("pilot.cal: adc_mv_at_plus12 and adc_mv_at_minus12 must differ by "
                      "at least 100 mV")

    # relay
    s = c.section(data, "", "relay", _RELAY_KEYS)
    if s is not None:
        c.pin(s, "relay.", "pin", "out")
        c.value(s, "relay.", "active_high", "bool")
        if "feedback_pin" not in s:
            s["feedback_pin"] = None
        c.pin(s, "relay.", "feedback_pin", "in", required=False, nullable=True)
        c.value(s, "relay.", "feedback_active_high", "bool", required=False, default=True)

    # rcd
    s = c.section(data, "", "rcd", _RCD_KEYS)
    if s is not None:
        c.pin(s, "rcd.", "pin", "in")
        c.value(s, "rcd.", "active_high", "bool")
        c.pin(s, "rcd.", "test_pin", "out")
        ok, t = c.value(s, "rcd.", "type", "str")
        if ok and t not in _RCD_TYPES:
            c.err("rcd.type: %r is not one of \"rdc-dd\", \"type-b\"" % t)

    # proximity: required on socketed boards, absent/null on tethered ones
    s = c.section(data, "", "proximity", _PROX_KEYS, required=False, nullable=True)
    if "proximity" not in data:
        data["proximity"] = None
    if socketed is True and data["proximity"] is None:
        c.err("proximity: required when socketed is true (a socket needs the PP input)")
    if socketed is False and data["proximity"] is not None:
        c.err("proximity: must be null when socketed is false (a tethered cable has no PP input)")
    if s is not None:
        c.pin(s, "proximity.", "adc_pin", "adc")
        c.int_range(s, "proximity.", "pullup_ohms", 100, 100000)
        c.int_range(s, "proximity.", "supply_mv", 1000, 5000)

    # temperature
    s = c.section(data, "", "temperature", _TEMP_KEYS)
    if s is not None:
        c.pin(s, "temperature.", "adc_pin", "adc")
        c.int_range(s, "temperature.", "ntc_r25", 100, 1000000)
        c.int_range(s, "temperature.", "ntc_beta", 1000, 10000)
        c.int_range(s, "temperature.", "series_ohms", 100, 1000000)
        c.int_range(s, "temperature.", "supply_mv", 1000, 5000)
        if "ds18b20_pin" not in s:
            s["ds18b20_pin"] = None
        c.pin(s, "temperature.", "ds18b20_pin", "out", required=False, nullable=True)

    # led (optional)
    # phase_switch (optional, 3-phase boards): energised, a second contactor connects L2 and L3;
    # released, the car gets L1 only (firmware/charger.py: switch_phases)
    ps = c.section(data, "", "phase_switch", _PHASE_SWITCH_KEYS, required=False, nullable=True)
    if "phase_switch" in data and data["phase_switch"] is None:
        del data["phase_switch"]
    if ps is not None:
        c.pin(ps, "phase_switch.", "pin", "out")
        c.value(ps, "phase_switch.", "active_high", "bool")
        if data.get("phases", 3) != 3:
            c.err("phase_switch: only a 3-phase board (phases 3) can switch to 1 phase and back")

    s = c.section(data, "", "led", _LED_KEYS, required=False, nullable=True)
    if "led" not in data:
        data["led"] = None
    if s is not None:
        c.pin(s, "led.", "pin", "out")
        c.value(s, "led.", "active_high", "bool")

    # meter (optional; only its shape is checked here, drivers.meter owns the rest). Model "s0"
    # is a pulse input (drivers/s0.py): {"model": "s0", "pin", "impulses_per_kwh" (1000),
    # "active_high" (false: the pulse pulls the input low)}; any other model is a Modbus meter.
    m = data.get("meter")
    is_s0 = isinstance(m, dict) and m.get("model") == "s0"
    s = c.section(data, "", "meter", _S0_METER_KEYS if is_s0 else _METER_KEYS, required=False,
                  nullable=True)
    if "meter" in data and data["meter"] is None:
        del data["meter"]
    if s is not None and is_s0:
        c.pin(s, "meter.", "pin", "in")
        c.int_range(s, "meter.", "impulses_per_kwh", 10, 100000, required=False, default=1000)
        c.value(s, "meter.", "active_high", "bool", required=False, default=False)
    elif s is not None:
        ok, model = c.value(s, "meter.", "model", "str")
        if ok and not model:
            c.err("meter.model: must not be empty")
        c.int_range(s, "meter.", "uart", 1, 2)
        c.pin(s, "meter.", "tx_pin", "out")
        c.pin(s, "meter.", "rx_pin", "in")
        if "de_pin" not in s:
            s["de_pin"] = None
        c.pin(s, "meter.", "de_pin", "out", required=False, nullable=True)
        c.int_range(s, "meter.", "address", 1, 247)
        c.int_range(s, "meter.", "baudrate", 300, 115200)
        # optional tuning read by drivers.meter; absent = its defaults
        c.int_range(s, "meter.", "interval_ms", 100, 3600000, required=False, nullable=True)
        c.int_range(s, "meter.", "timeout_ms", 10, 10000, required=False, nullable=True)
        c.int_range(s, "meter.", "retries", 0, 10, required=False, nullable=True)
        for k in ("interval_ms", "timeout_ms", "retries"):
            if s.get(k, 0) is None:
                del s[k]

    # grid_meter (optional): a Modbus meter at the house connection (energy management,
    # firmware/energy.py) on the RS-485 bus of the charger's Modbus meter, at its own address.
    g = c.section(data, "", "grid_meter", _GRID_METER_KEYS, required=False, nullable=True)
    if "grid_meter" in data and data["grid_meter"] is None:
        del data["grid_meter"]
    if g is not None:
        ok, model = c.value(g, "grid_meter.", "model", "str")
        if ok and (not model or model == "s0"):
            c.err("grid_meter.model: must name a Modbus meter model")
        c.int_range(g, "grid_meter.", "address", 1, 247)
        c.int_range(g, "grid_meter.", "interval_ms", 100, 60000, required=False, default=500)
        if s is None or is_s0:
            c.err("grid_meter: needs a Modbus meter section (meter) whose RS-485 bus it shares")
        elif g.get("address") == s.get("address"):
            c.err("grid_meter.address: %r is the charger meter's address on the same bus" % g.get("address"))

    # reader (optional; drivers.reader checks the values and which keys go with which type, the
    # pins are checked here). Defaults: mfrc522 "rst" null (not wired), pn532 "address" 36 (0x24).
    if "reader" in data and data["reader"] is None:
        del data["reader"]
    if "reader" in data:
        from drivers import reader as reader_driver

        s = c.section(data, "", "reader", reader_driver.ALL_KEYS)
        if s is not None:
            for e in reader_driver.config_errors(s, unknown_checked=True):
                c.err(e)
            for key, use in reader_driver.pin_keys(s):
                c.pin(s, "reader.", key, use)
            if s.get("type") == "mfrc522":
                s.setdefault("rst", None)
            elif s.get("type") == "pn532":
                s.setdefault("address", reader_driver.PN532_ADDRESS)

    _validate_lock(c, data, socketed)

    if c.errors:
        errs = sorted(c.errors)
        raise BoardError(source + ": " + "; ".join(errs), errs)
    return data


def _validate_lock(c, data, socketed):
    """lock (optional, socketed boards only). Defaults: active_high and feedback_active_high
    true, settle_ms 50, pause_ms 1000, retries 2; a motor's pulse_ms 300. Checked after every
    other section, so a pin it shares is named against its first user."""
    if "lock" in data and data["lock"] is None:
        del data["lock"]
    if "lock" not in data:
        return
    v = data["lock"]
    kind = v.get("type") if isinstance(v, dict) else None
    s = c.section(data, "", "lock", _LOCK_ALL)
    if s is None:
        return
    if socketed is False:
        c.err("lock: must be absent when socketed is false (a tethered cable has no socket to lock)")
    if kind not in _LOCK_KEYS:
        c.err("lock.type: expected \"motor\" or \"solenoid\", got %s" % (
            "nothing" if "type" not in s else repr(kind)))
        return
    for k in s:
        if k in _LOCK_ALL and k not in _LOCK_KEYS[kind]:
            c.err("lock.%s: not a key of a %s lock" % (k, kind))
    if kind == "motor":
        c.pin(s, "lock.", "lock_pin", "out")
        c.pin(s, "lock.", "unlock_pin", "out")
        c.int_range(s, "lock.", "pulse_ms", 20, 2000, required=False, default=300)
    else:
        c.pin(s, "lock.", "pin", "out")
    c.value(s, "lock.", "active_high", "bool", required=False, default=True)
    c.pin(s, "lock.", "feedback_pin", "in")  # a lock that cannot confirm must not be trusted
    c.value(s, "lock.", "feedback_active_high", "bool", required=False, default=True)
    c.int_range(s, "lock.", "settle_ms", 0, 2000, required=False, default=50)
    c.int_range(s, "lock.", "pause_ms", 100, 10000, required=False, default=1000)
    c.int_range(s, "lock.", "retries", 0, 5, required=False, default=2)


# ---------------------------------------------------------------------------------------------
# loading

def _boards_dirs():
    dirs = []
    f = globals().get("__file__")
    if isinstance(f, str):
        i = f.rfind("/")
        dirs.append((f[:i + 1] if i >= 0 else "") + "boards/")
    for d in ("drivers/boards/", "/drivers/boards/"):
        if d not in dirs:
            dirs.append(d)
    return dirs


def _read_json(path):
    """Parsed JSON object of path; None if the file cannot be opened; BoardError naming the file
    and the reason if it is refused (more than MAX_FILE bytes, not UTF-8, not strict JSON,
    nested too deeply, not an object): drivers/jsonfile.py, the reader of every file on flash."""
    try:
        return jsonfile.read_json(path, MAX_FILE)
    except OSError:
        return None
    except ValueError as e:
        raise BoardError("%s: %s" % (path, e))


def _find(name_or_path):
    """(path, parsed JSON) of a profile name or path; BoardError if not found."""
    if "/" in name_or_path or name_or_path.endswith(".json"):
        candidates = [name_or_path]
    else:
        candidates = [d + name_or_path + ".json" for d in _boards_dirs()]
    for path in candidates:
        data = _read_json(path)
        if data is not None:
            return path, data
    raise BoardError("board profile not found: %s (looked for %s)"
                     % (name_or_path, ", ".join(candidates)))


def installed_path(root="/"):
    """Where the installed profile lives: ROOT/board.json ("" = the working directory)."""
    if not root:
        return INSTALLED_FILE
    return root.rstrip("/") + "/" + INSTALLED_FILE


def load_installed(root="/"):
    """The validated profile installed on the board (ROOT/board.json). Raises BoardError."""
    path = installed_path(root)
    data = _read_json(path)
    if data is None:
        raise BoardError("board profile not found: " + path)
    return validate(data, path)


def load(name_or_path):
    """Validated profile from drivers/boards/NAME.json or a path to a JSON file.

    A dict is accepted too (validated in place). Raises BoardError.
    """
    if isinstance(name_or_path, dict):
        return validate(name_or_path)
    if not isinstance(name_or_path, str) or not name_or_path:
        raise BoardError("board profile: expected a name or a path, got " + type_name(name_or_path))
    path, data = _find(name_or_path)
    return validate(data, path)


# ---------------------------------------------------------------------------------------------
# building

class Board:
    """The driver objects of one board. proximity, led, meter, grid_meter, reader and lock are
    None when absent; reader_error says why a profile's reader is None (its chip did not
    answer)."""

    def __init__(self, profile, pilot, relay, rcd, proximity, temperature, led, watchdog,
                 meter, reader=None, reader_error=None, lock=None, grid_meter=None, phase_switch=None):
        self.profile = profile
        self.pilot = pilot
        self.relay = relay
        self.rcd = rcd
        self.proximity = proximity
        self.temperature = temperature
        self.led = led
        self.watchdog = watchdog
        self.meter = meter
        self.reader = reader
        self.reader_error = reader_error
        self.lock = lock
        # the grid meter (profile grid_meter): made by the station when a mode needs it
        # (drivers.meter.build_on), on the bus of `meter`
        self.grid_meter = grid_meter
        self.phase_switch = phase_switch  # drivers.relay.Relay: closed = 3 phases


def build(profile, clock=None):
    """Construct every driver of a validated profile (or a profile name/path, loaded first).

    The relay comes first so the contactor is held open before anything else is touched.
    The meter (drivers.meter.build(section, clock)) needs the clock: without one it is not
    built and `meter` stays None. A card reader whose chip does not answer leaves `reader`
    None and the reason in `reader_error`: the station can still charge (free charging, remote
    start) without it.
    """
    if not isinstance(profile, dict):
        profile = load(profile)
    from drivers.relay import Relay
    from drivers.pilot import Pilot
    from drivers.rcd import Rcd
    from drivers.temperature import Temperature
    from drivers.watchdog import Watchdog

    relay = Relay(profile["relay"])
    lock = None
    if profile.get("lock") is not None:  # its outputs idle (no current) next
        from drivers.lock import Lock
        lock = Lock(profile["lock"])
    phase_switch = None
    if profile.get("phase_switch") is not None:  # released (1 phase) until the charger decides
        phase_switch = Relay(profile["phase_switch"])
    pilot = Pilot(profile["pilot"])
    rcd = Rcd(profile["rcd"], relay)
    proximity = None
    if profile.get("proximity") is not None:
        from drivers.proximity import Proximity
        proximity = Proximity(profile["proximity"])
    temperature = Temperature(profile["temperature"])
    led = None
    if profile.get("led") is not None:
        from drivers.led import Led
        led = Led(profile["led"])
    meter = None
    if profile.get("meter") is not None and clock is not None:
        from drivers import meter as meter_driver
        meter = meter_driver.build(profile["meter"], clock)
    reader = None
    reader_error = None
    if profile.get("reader") is not None:
        from drivers import reader as reader_driver
        try:
            reader = reader_driver.make_reader(profile["reader"], clock=clock)
        except reader_driver.ReaderError as e:
            reader_error = str(e)
    watchdog = Watchdog(profile["watchdog_ms"])
    return Board(profile, pilot, relay, rcd, proximity, temperature, led, watchdog, meter, reader,
                 reader_error, lock, None, phase_switch)


# ---------------------------------------------------------------------------------------------
# boot

def _pick(section, key, default, want_bool):
    """section[key] if usable (a bool, or an output-capable GPIO), else default."""
    if not isinstance(section, dict):
        return default
    v = section.get(key)
    if want_bool:
        return v if (v is True or v is False) else default
    if not isinstance(v, int) or v is True or v is False:
        return default
    if v < 0 or v > 33 or v in _FLASH_PINS or v in _MISSING_GPIO:
        return default
    return v


def make_safe(profile=None, pilot_high=True):
    """Contactor open, socket lock outputs idle, pilot at steady +12 V (or -12 V, state F, with
    pilot_high=False). Never raises.

    profile: a profile dict (need not be valid), a profile name or path, or None for the
    generic DevKit pins. Entries that are missing or unusable fall back to the DevKit pins.
    Returns {"relay_pin": int, "pilot_pin": int, "errors": [str]}.
    """
    errors = []
    if not isinstance(profile, dict):
        raw = None
        if isinstance(profile, str) and profile:
            try:
                raw = _find(profile)[1]
            except Exception as e:  # noqa: BLE001 - boot must go on whatever the file holds
                errors.append(str(e))
        profile = raw if isinstance(raw, dict) else {}
    relay = profile.get("relay")
    pilot = profile.get("pilot")
    relay_pin = _pick(relay, "pin", DEFAULT_RELAY_PIN, False)
    active_high = _pick(relay, "active_high", DEFAULT_RELAY_ACTIVE_HIGH, True)
    pilot_pin = _pick(pilot, "pwm_pin", DEFAULT_PILOT_PWM_PIN, False)
    if pilot_pin == relay_pin:
        errors.append("pilot.pwm_pin equals relay.pin; pilot left alone")
        pilot_pin = -1
    try:
        from machine import Pin
    except Exception as e:  # noqa: BLE001
        errors.append("machine: " + str(e))
        return {"relay_pin": relay_pin, "pilot_pin": pilot_pin, "errors": errors}
    try:
        Pin(relay_pin, Pin.OUT, value=0 if active_high else 1)
    except Exception as e:  # noqa: BLE001
        errors.append("relay pin %d: %s" % (relay_pin, e))
    _lock_idle(Pin, profile.get("lock"), (relay_pin, pilot_pin), errors)
    if pilot_pin >= 0:
        try:
            level = 1 if pilot_high else 0
            p = Pin(pilot_pin, Pin.OUT, value=level)
            try:
                from machine import PWM
                PWM(p, freq=PILOT_FREQ_HZ, duty_u16=65535 * level)
            except Exception as e:  # noqa: BLE001 - the plain high level already holds +12 V
                errors.append("pilot PWM %d: %s" % (pilot_pin, e))
        except Exception as e:  # noqa: BLE001
            errors.append("pilot pin %d: %s" % (pilot_pin, e))
    return {"relay_pin": relay_pin, "pilot_pin": pilot_pin, "errors": errors}


def _lock_idle(Pin, lock, taken, errors):
    """The socket lock's outputs at their idle level (no current in the actuator), each one
    written once and both motor outputs off: a motor is never driven both ways. Only the
    profile's own pins: an unusable entry is left alone (the H-bridge's pull-downs hold it)."""
    if not isinstance(lock, dict):
        return
    off = 0 if _pick(lock, "active_high", True, True) else 1
    for key in ("lock_pin", "unlock_pin", "pin"):
        p = _pick(lock, key, -1, False)
        if p < 0:
            continue
        if p in taken:
            errors.append("lock.%s equals the relay or pilot pin; left alone" % key)
            continue
        try:
            Pin(p, Pin.OUT, value=off)
        except Exception as e:  # noqa: BLE001
            errors.append("lock pin %d: %s" % (p, e))


def fail_safe(root="/"):
    """Out of service: contactor open and pilot at -12 V (state F: a vehicle sees the station is
    not available), with the installed profile's pins or the DevKit pins if it is unreadable."""
    return make_safe(installed_path(root), pilot_high=False)
