"""Board profiles: validation messages, build(), make_safe(), and a smoke run on real MicroPython."""
import json
import os
import subprocess
import sys
import types

import pytest

import machine
from drivers import board
from vclock import VirtualClock
from drivers.board import BoardError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOARDS = os.path.join(ROOT, "drivers", "boards")
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")


pytestmark = pytest.mark.usefixtures("bare_board")  # (conftest.py)


def raw(name="esp32-devkit"):
    with open(os.path.join(BOARDS, name + ".json")) as f:
        return json.load(f)


@pytest.fixture
def meter_stub(monkeypatch):
    """drivers.meter belongs to another part: a stand-in that records what build() passes."""
    import drivers

    calls = []
    mod = types.ModuleType("drivers.meter")

    def build(section, clock):
        calls.append((section, clock))
        return ("meter", section["model"])

    def build_on(meter, section):
        calls.append(("on", meter, section))
        return ("grid", section["model"])

    mod.build = build  # type: ignore[attr-defined]
    mod.build_on = build_on  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "drivers.meter", mod)
    monkeypatch.setattr(drivers, "meter", mod, raising=False)
    return calls


# ---------------------------------------------------------------------------------------------
# the shipped profiles

def test_devkit_profile_loads_with_documented_pins():
    p = board.load("esp32-devkit")
    assert p["name"] == "esp32-devkit"
    assert p["socketed"] is True and p["phases"] == 3 and p["max_current_a"] == 32
    assert p["pilot"]["pwm_pin"] == 25 and p["pilot"]["adc_pin"] == 36
    assert p["relay"] == {"pin": 26, "active_high": True, "feedback_pin": 27,
                          "feedback_active_high": True}
    assert p["rcd"]["pin"] == 33 and p["rcd"]["test_pin"] == 32
    assert p["proximity"]["adc_pin"] == 39
    assert p["temperature"]["adc_pin"] == 34 and p["temperature"]["ds18b20_pin"] is None
    assert p["meter"] == {"model": "sdm630", "uart": 2, "tx_pin": 17, "rx_pin": 16,
                          "de_pin": 4, "address": 1, "baudrate": 9600}


def test_tethered_profile_loads():
    p = board.load("esp32-tethered-1p")
    assert p["socketed"] is False and p["phases"] == 1 and p["max_current_a"] == 16
    assert p["proximity"] is None
    assert p["relay"]["feedback_pin"] is None
    assert p["meter"]["model"] == "sdm120" and p["meter"]["baudrate"] == 2400


def test_every_shipped_profile_is_valid():
    names = [n for n in os.listdir(BOARDS) if n.endswith(".json")]
    assert len(names) >= 2
    for n in names:
        p = board.load(os.path.join(BOARDS, n))
        assert p["name"] + ".json" == n


def test_load_by_path_and_dict(tmp_path):
    f = tmp_path / "mine.json"
    f.write_text(json.dumps(raw()))
    assert board.load(str(f))["name"] == "esp32-devkit"
    assert board.load(raw())["pilot"]["samples"] == 64


def test_optional_entries_get_defaults():
    d = raw()
    del d["led"]
    del d["meter"]
    del d["grid_meter"]
    del d["description"]
    del d["relay"]["feedback_pin"]
    del d["relay"]["feedback_active_high"]
    del d["temperature"]["ds18b20_pin"]
    p = board.load(d)
    assert p["led"] is None
    assert "meter" not in p
    assert p["description"] == ""
    assert p["relay"]["feedback_pin"] is None
    assert p["temperature"]["ds18b20_pin"] is None


def test_meter_tuning_keys_are_optional():
    d = raw()
    d["meter"].update({"interval_ms": 2000, "timeout_ms": 200, "retries": 3})
    assert board.load(d)["meter"]["retries"] == 3
    d = raw()
    d["meter"]["retries"] = None
    assert "retries" not in board.load(d)["meter"]


def test_load_installed_and_fail_safe(tmp_path):
    with pytest.raises(BoardError) as e:
        board.load_installed(str(tmp_path))
    assert "board.json" in str(e.value)
    r = board.fail_safe(str(tmp_path))          # nothing installed: the DevKit pins
    assert r["relay_pin"] == 26 and machine.hw_level(26) == 0
    d = raw("esp32-tethered-1p")
    d["relay"]["pin"] = 13
    d["relay"]["active_high"] = False
    (tmp_path / "board.json").write_text(json.dumps(d))
    assert board.load_installed(str(tmp_path) + "/")["relay"]["pin"] == 13
    r = board.fail_safe(str(tmp_path))
    assert r == {"relay_pin": 13, "pilot_pin": 25, "errors": []}
    assert machine.hw_level(13) == 1
    assert board.installed_path("") == "board.json"
    assert board.installed_path("/") == "/board.json"


def test_null_meter_means_no_meter():
    d = raw()
    d["meter"] = None
    d["grid_meter"] = None
    assert "meter" not in board.load(d) and "grid_meter" not in board.load(d)


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(BoardError) as e:
        board.load("no-such-board")
    assert "no-such-board" in str(e.value)
    f = tmp_path / "bad.json"
    f.write_text("{\"name\": ")
    with pytest.raises(BoardError) as e:
        board.load(str(f))
    assert "not valid JSON" in str(e.value)
    with pytest.raises(BoardError):
        board.load(str(tmp_path / "absent.json"))


# ---------------------------------------------------------------------------------------------
# every validation error names its entry

def _set(d, path, value):
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[k]
    if value is _DELETE:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value


_DELETE = object()

BAD = [
    # unknown keys
    ("colour", "red", "unknown key: colour"),
    ("relay.pinn", 5, "unknown key: relay.pinn"),
    ("pilot.cal.offset", 1, "unknown key: pilot.cal.offset"),
    ("meter.parity", "N", "unknown key: meter.parity"),
    # wrong types
    ("relay.pin", "26", "relay.pin: expected int, got str"),
    ("pilot.samples", True, "pilot.samples: expected int, got bool"),
    ("max_current_a", 32.0, "max_current_a: expected int, got float"),
    ("socketed", 1, "socketed: expected bool, got int"),
    ("relay.active_high", None, "relay.active_high: expected bool, got null"),
    ("name", 7, "name: expected str, got int"),
    ("pilot", [25, 36], "pilot: expected object, got list"),
    ("pilot.cal", None, "pilot.cal: expected object, got null"),
    ("meter.de_pin", "4", "meter.de_pin: expected int, got str"),
    ("meter.model", None, "meter.model: expected str, got null"),
    ("watchdog_ms", "5000", "watchdog_ms: expected int, got str"),
    # out of range
    ("max_current_a", 100, "max_current_a: 100 out of range 6..80"),
    ("max_current_a", 5, "max_current_a: 5 out of range 6..80"),
    ("phases", 2, "phases: 2 out of range"),
    ("pilot.samples", 10, "pilot.samples: 10 out of range"),
    ("pilot.cal.adc_mv_at_plus12", 4000, "pilot.cal.adc_mv_at_plus12: 4000 out of range"),
    ("pilot.cal.adc_mv_at_plus12", 300, "pilot.cal: adc_mv_at_plus12 and adc_mv_at_minus12"),
    ("proximity.pullup_ohms", 0, "proximity.pullup_ohms: 0 out of range"),
    ("temperature.ntc_beta", 50, "temperature.ntc_beta: 50 out of range"),
    ("watchdog_ms", 500, "watchdog_ms: 500 out of range"),
    ("meter.address", 0, "meter.address: 0 out of range 1..247"),
    ("meter.address", 248, "meter.address: 248 out of range 1..247"),
    ("meter.uart", 0, "meter.uart: 0 out of range"),
    ("meter.retries", 99, "meter.retries: 99 out of range"),
    ("meter.interval_ms", "1s", "meter.interval_ms: expected int, got str"),
    ("rcd.type", "type-a", "rcd.type: 'type-a' is not one of"),
    ("name", "", "name: must not be empty"),
    # pins used twice (both uses named)
    ("relay.pin", 25, "pin 25 used twice: pilot.pwm_pin and relay.pin"),
    ("rcd.test_pin", 26, "pin 26 used twice: relay.pin and rcd.test_pin"),
    ("proximity.adc_pin", 36, "pin 36 used twice: pilot.adc_pin and proximity.adc_pin"),
    ("meter.de_pin", 2, "pin 2 used twice: led.pin and meter.de_pin"),
    ("temperature.ds18b20_pin", 27,
     "pin 27 used twice: relay.feedback_pin and temperature.ds18b20_pin"),
    # missing required entries
    ("pilot.adc_pin", _DELETE, "missing required entry: pilot.adc_pin"),
    ("rcd", _DELETE, "missing required entry: rcd"),
    ("watchdog_ms", _DELETE, "missing required entry: watchdog_ms"),
    ("pilot.cal.adc_mv_at_minus12", _DELETE,
     "missing required entry: pilot.cal.adc_mv_at_minus12"),
    ("rcd.test_pin", _DELETE, "missing required entry: rcd.test_pin"),
    ("meter.baudrate", _DELETE, "missing required entry: meter.baudrate"),
    # analog inputs on ADC2 pins, outputs on input-only pins, flash and absent GPIOs
    ("pilot.adc_pin", 14, "pilot.adc_pin: GPIO 14 is not an ADC1 pin"),
    ("proximity.adc_pin", 4, "proximity.adc_pin: GPIO 4 is not an ADC1 pin"),
    ("temperature.adc_pin", 25, "temperature.adc_pin: GPIO 25 is not an ADC1 pin"),
    ("relay.pin", 35, "relay.pin: GPIO 35 is input only"),
    ("meter.tx_pin", 39, "meter.tx_pin: GPIO 39 is input only"),
    ("led.pin", 7, "led.pin: GPIO 7 is wired to the SPI flash"),
    ("relay.feedback_pin", 40, "relay.feedback_pin: GPIO 40 does not exist"),
    ("rcd.pin", 20, "rcd.pin: GPIO 20 does not exist"),
    # socketed / tethered consistency
    ("proximity", None, "proximity: required when socketed is true"),
    ("proximity", _DELETE, "proximity: required when socketed is true"),
    ("socketed", False, "proximity: must be null when socketed is false"),
]


@pytest.mark.parametrize("path,value,message", BAD, ids=[b[0] + "=" + ("(deleted)" if b[1] is _DELETE else repr(b[1])) for b in BAD])
def test_validation_error_names_the_entry(path, value, message):
    d = raw()
    _set(d, path, value)
    with pytest.raises(BoardError) as e:
        board.load(d)
    assert message in str(e.value)
    assert any(message in m for m in e.value.errors)


def test_tethered_with_proximity_is_rejected():
    d = raw("esp32-tethered-1p")
    d["proximity"] = {"adc_pin": 39, "pullup_ohms": 1000, "supply_mv": 3300}
    with pytest.raises(BoardError) as e:
        board.load(d)
    assert "proximity: must be null when socketed is false" in str(e.value)


def test_all_errors_are_reported_and_the_file_is_named(tmp_path):
    d = raw()
    d["relay"]["pin"] = "x"
    d["pilot"]["adc_pin"] = 13
    d["zz"] = 1
    f = tmp_path / "broken.json"
    f.write_text(json.dumps(d))
    with pytest.raises(BoardError) as e:
        board.load(str(f))
    msg = str(e.value)
    assert str(f) in msg
    assert "relay.pin: expected int, got str" in msg
    assert "pilot.adc_pin: GPIO 13 is not an ADC1 pin" in msg
    assert "unknown key: zz" in msg
    assert len(e.value.errors) == 3


def test_top_level_must_be_an_object():
    with pytest.raises(BoardError) as e:
        board.validate([1, 2])
    assert "expected object" in str(e.value)


# ---------------------------------------------------------------------------------------------
# an S0 pulse meter instead of a Modbus one

S0 = {"model": "s0", "pin": 35, "impulses_per_kwh": 800, "active_high": True}


def _with_s0(section=None):
    d = raw()
    d["meter"] = dict(S0) if section is None else section
    del d["grid_meter"]  # (it needs the RS-485 bus of a Modbus meter)
    return d


def test_s0_meter_section():
    assert board.load(_with_s0())["meter"] == S0


def test_s0_meter_defaults():
    p = board.load(_with_s0({"model": "s0", "pin": 35}))
    assert p["meter"] == {"model": "s0", "pin": 35, "impulses_per_kwh": 1000,
                          "active_high": False}


BAD_S0 = [
    ("meter.uart", 2, "unknown key: meter.uart"),
    ("meter.baudrate", 9600, "unknown key: meter.baudrate"),
    ("meter.pin", _DELETE, "missing required entry: meter.pin"),
    ("meter.pin", "35", "meter.pin: expected int, got str"),
    ("meter.pin", None, "meter.pin: expected int, got null"),
    ("meter.pin", 26, "pin 26 used twice: relay.pin and meter.pin"),
    ("meter.pin", 7, "meter.pin: GPIO 7 is wired to the SPI flash"),
    ("meter.pin", 20, "meter.pin: GPIO 20 does not exist"),
    ("meter.impulses_per_kwh", 5, "meter.impulses_per_kwh: 5 out of range 10..100000"),
    ("meter.impulses_per_kwh", 200000, "meter.impulses_per_kwh: 200000 out of range 10..100000"),
    ("meter.impulses_per_kwh", 1000.0, "meter.impulses_per_kwh: expected int, got float"),
    ("meter.active_high", 1, "meter.active_high: expected bool, got int"),
]


@pytest.mark.parametrize("path,value,message", BAD_S0,
                         ids=[b[0] + "=" + ("(deleted)" if b[1] is _DELETE else repr(b[1])) for b in BAD_S0])
def test_s0_validation_error_names_the_entry(path, value, message):
    d = _with_s0()
    _set(d, path, value)
    with pytest.raises(BoardError) as e:
        board.load(d)
    assert any(message in m for m in e.value.errors), e.value.errors


def test_modbus_meter_keeps_its_keys():
    d = raw()
    d["meter"]["pin"] = 35
    with pytest.raises(BoardError) as e:
        board.load(d)
    assert "unknown key: meter.pin" in e.value.errors


def test_build_s0_meter_counts_pulses():
    from drivers.s0 import S0Meter

    clock = VirtualClock(1000)
    b = board.build(board.load(_with_s0()), clock)
    assert isinstance(b.meter, S0Meter) and b.meter.measures_current is False
    assert b.meter.impulses_per_kwh == 800 and b.meter.active_high is True
    for _ in range(8):
        clock.advance(400)
        machine.hw_set_input(35, 1)    # active high: the pulse drives the pin high
        clock.advance(100)
        machine.hw_set_input(35, 0)
    b.meter.poll(clock.ticks_ms())
    assert b.meter.pulses == 8 and b.meter.energy_wh == 10     # 8 x 1.25 Wh
    assert b.meter.power_w == 3600000 * 1000 // 800 // 500    # 1.25 Wh every 500 ms: 9 kW


# ---------------------------------------------------------------------------------------------
# build

def test_build_devkit(meter_stub):
    p = board.load("esp32-devkit")
    clock = VirtualClock()
    b = board.build(p, clock)
    assert b.profile is p
    for name in ("pilot", "relay", "rcd", "proximity", "temperature", "led", "watchdog"):
        assert getattr(b, name) is not None, name
    assert meter_stub == [(p["meter"], clock)]  # (the grid meter: made by the station when needed)
    assert b.meter == ("meter", "sdm630") and b.grid_meter is None
    # safe state after build: contactor open, pilot at steady +12 V, RCD test output off
    assert machine.hw_level(26) == 0
    assert b.relay.closed() is False
    assert machine.hw_pwm(25) == (1000, 65535)
    assert b.pilot.duty_u16() == 65535
    assert machine.hw_level(32) == 0
    assert b.rcd.tripped() is False
    assert b.watchdog.enabled()


def test_build_tethered_has_no_proximity(meter_stub):
    b = board.build("esp32-tethered-1p", VirtualClock())
    assert b.proximity is None
    assert b.relay.feedback() is None
    assert meter_stub[0][0]["model"] == "sdm120"


def test_build_without_clock_leaves_the_meter_out(meter_stub):
    b = board.build("esp32-devkit")
    assert b.meter is None and meter_stub == []
    assert b.pilot is not None


def test_build_without_meter_led_and_watchdog(meter_stub):
    d = raw()
    del d["meter"]
    del d["grid_meter"]
    d["led"] = None
    d["watchdog_ms"] = 0
    b = board.build(board.load(d), VirtualClock())
    assert b.meter is None and b.led is None
    assert meter_stub == []
    assert not b.watchdog.enabled()
    b.watchdog.feed()


# ---------------------------------------------------------------------------------------------
# make_safe

def test_make_safe_devkit():
    r = board.make_safe(raw())
    assert r == {"relay_pin": 26, "pilot_pin": 25, "errors": []}
    assert machine.hw_level(26) == 0
    assert machine.hw_pwm(25) == (1000, 65535)


def test_make_safe_by_name():
    r = board.make_safe("esp32-tethered-1p")
    assert r["errors"] == [] and r["relay_pin"] == 26
    assert machine.hw_level(26) == 0


def test_make_safe_active_low_relay_drives_high():
    d = raw()
    d["relay"]["pin"] = 14
    d["relay"]["active_high"] = False
    d["pilot"]["pwm_pin"] = 13
    r = board.make_safe(d)
    assert r["relay_pin"] == 14 and r["pilot_pin"] == 13
    assert machine.hw_level(14) == 1
    assert machine.hw_pwm(13) == (1000, 65535)


def test_make_safe_ignores_the_other_sections():
    d = raw()
    d["rcd"] = "broken"
    d["temperature"]["adc_pin"] = 4
    d["bogus"] = [1]
    del d["name"]
    r = board.make_safe(d)
    assert r["errors"] == []
    assert machine.hw_level(26) == 0


@pytest.mark.parametrize("profile", [
    None, {}, "no-such-board", 42, {"relay": "x", "pilot": None},
    {"relay": {"pin": "26", "active_high": "yes"}, "pilot": {"pwm_pin": 36}},
    {"relay": {"pin": 9}, "pilot": {"pwm_pin": -1}},
])
def test_make_safe_falls_back_to_devkit_pins(profile):
    r = board.make_safe(profile)
    assert r["relay_pin"] == board.DEFAULT_RELAY_PIN == 26
    assert r["pilot_pin"] == board.DEFAULT_PILOT_PWM_PIN == 25
    assert machine.hw_level(26) == 0
    assert machine.hw_pwm(25) == (1000, 65535)


def test_make_safe_on_bad_json(tmp_path):
    f = tmp_path / "bad.json"
    f.write_text("not json")
    r = board.make_safe(str(f))
    assert r["relay_pin"] == 26 and r["errors"]
    assert machine.hw_level(26) == 0


# ---------------------------------------------------------------------------------------------
# the real MicroPython binary

SMOKE = r"""
import sys
import machine
from drivers import board
from vclock import VirtualClock
try:
    from drivers import meter
except ImportError:
    class _Stub:  # drivers.meter is another part; stand in until it exists
        @staticmethod
        def build(section):
            return "stub-meter"
    sys.modules["drivers.meter"] = _Stub
p = board.load("esp32-devkit")
safe = board.make_safe(p)
assert safe["errors"] == [], safe
b = board.build(p)
assert b.proximity is not None and b.led is not None
assert machine.hw_level(26) == 0
assert machine.hw_pwm(25) == (1000, 65535), machine.hw_pwm(25)
machine.hw_set_analog(36, lambda t: 2980 if (t % 1000) < 500 else 280)
b.pilot.set_duty_u16(32768)
hi, lo = b.pilot.sample()
assert abs(hi - 12000) < 200 and abs(lo + 12000) < 200, (hi, lo)
b.relay.set(True)
assert machine.hw_level(26) == 1
machine.hw_set_input(33, 1)
assert machine.hw_level(26) == 0 and b.rcd.tripped() and b.rcd.trips == 1
machine.hw_set_analog(39, lambda t: 3300 * 220 // 1220)
assert abs(b.proximity.ohms() - 220) <= 3, b.proximity.ohms()
machine.hw_set_analog(34, lambda t: 1650)
assert abs(b.temperature.deci_celsius() - 250) <= 5
t = board.load("esp32-tethered-1p")
assert t["proximity"] is None
try:
    d = board.load("esp32-devkit")
    d["relay"]["pin"] = "26"
    board.validate(d)
    raise SystemExit("no error")
except board.BoardError as e:
    assert "relay.pin: expected int, got str" in str(e), str(e)
from drivers.temperature import Temperature
cfg = dict(p["temperature"])
cfg["ds18b20_pin"] = 13
tt = Temperature(cfg)   # the unix port has no onewire: NTC only, no exception
assert tt.ds_error and abs(tt.deci_celsius(1000) - 250) <= 5
# the per-tick paths allocate nothing
import micropython
b.relay.set(True)
micropython.heap_lock()
try:
    b.relay.open_now()
    b.rcd.tripped()
    b.rcd._irq(None)
    b.relay.feedback()
    b.pilot.measure()
    b.pilot.set_duty_u16(6554)
    b.proximity.ohms()
    b.led.show("charging", 1234)
finally:
    micropython.heap_unlock()
print("SMOKE OK")
"""


@pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no micropython binary")
def test_smoke_on_real_micropython():
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join([os.path.join(ROOT, "tests_host", "fakes"), ROOT, os.path.join(ROOT, "tests_host")])
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=256K", "-c", SMOKE], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SMOKE OK" in r.stdout


@pytest.mark.parametrize("change, message", [
    ({"meter": None}, "grid_meter: needs a Modbus meter section"),
    ({"meter": dict(S0)}, "grid_meter: needs a Modbus meter section"),
    ({"grid_meter": {"model": "sdm630", "address": 1}}, "grid_meter.address: 1 is the charger meter's address"),
    ({"grid_meter": {"model": "s0", "address": 2}}, "grid_meter.model: must name a Modbus meter model"),
    ({"grid_meter": {"model": "sdm630", "address": 300}}, "grid_meter.address: 300 out of range 1..247"),
    ({"grid_meter": {"model": "sdm630", "address": 2, "baud": 1}}, "unknown key: grid_meter.baud"),
])
def test_a_grid_meter_shares_the_bus_of_a_modbus_meter_at_its_own_address(change, message):
    d = raw()
    d.update(change)
    with pytest.raises(board.BoardError) as e:
        board.load(d)
    assert message in str(e.value)


def test_the_grid_meter_polls_its_interval_by_default():
    d = raw()
    d["grid_meter"] = {"model": "sdm630", "address": 3}
    assert board.load(d)["grid_meter"] == {"model": "sdm630", "address": 3, "interval_ms": 500}
