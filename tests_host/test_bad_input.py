"""Bad settings and board profiles: a clear error naming the entry, and a station that stays safe."""
import json
import os
import subprocess
import sys

import pytest

from firmware import settings as settings_mod

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIM = os.path.join(ROOT, "tools", "sim.py")
DEVKIT = os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json")
STORY = "plug\nwait 2s\nev-ready 16\nwait 30s\n"


@pytest.mark.parametrize(
    "values,words",
    [
        ({"max_curent_a": 16}, ["unknown setting", "max_curent_a"]),
        ({"max_current_a": "16"}, ["max_current_a", "expected number", "'16'"]),
        ({"free_charging": 1}, ["free_charging", "expected boolean"]),
        ({"max_current_a": 100}, ["max_current_a", "above the maximum"]),
        ({"fault_retry_s": 5}, ["fault_retry_s", "below the minimum 30"]),
        ({"temp_derate_c": 80.0}, ["temp_derate_c"]),
    ],
)
def test_settings_errors_name_the_key(values, words):
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.Settings(values)
    for w in words:
        assert w in str(e.value)


def test_bad_update_changes_nothing():
    s = settings_mod.Settings({"max_current_a": 20})
    with pytest.raises(settings_mod.SettingsError):
        s.update({"max_current_a": 16, "nonsense": 1})
    assert s.get("max_current_a") == 20.0


def test_settings_file_round_trip(tmp_path):
    p = str(tmp_path / "settings.json")
    s = settings_mod.Settings({"max_current_a": 16, "ventilation_allowed": True})
    settings_mod.save(p, s)
    assert json.load(open(p)) == {"max_current_a": 16.0, "ventilation_allowed": True}
    assert settings_mod.load(p).get("max_current_a") == 16.0
    open(p, "w").write("{not json")
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.load(p)
    assert "not valid JSON" in str(e.value)


def sim(tmp_path, *args):
    scn = tmp_path / "story.scn"
    scn.write_text(STORY)
    ev = tmp_path / "events.jsonl"
    p = subprocess.run([sys.executable, SIM, "--scenario", str(scn), "--events", str(ev), "--heap", "64K", "--quiet"]
                       + list(args), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return [json.loads(line) for line in open(ev)], p.stdout + p.stderr


def assert_out_of_service(events):
    assert not [e for e in events if e["type"] == "contactor" and e["closed"]]
    assert [e for e in events if e["type"] == "state"][-1]["state"] == "F"
    assert [e for e in events if e["type"] == "fault" and e["code"] == "config" and e["active"]]
    assert events[-1]["truth"] == 0


def test_bad_settings_file_keeps_the_station_out_of_service(tmp_path):
    bad = tmp_path / "settings.json"
    bad.write_text(json.dumps({"max_current_a": "sixteen"}))
    events, _out = sim(tmp_path, "--settings", str(bad))
    boot = [e for e in events if e["type"] == "boot"][0]
    assert "max_current_a" in boot["settings_error"]
    assert_out_of_service(events)


def broken_board(tmp_path, change):
    prof = json.load(open(DEVKIT))
    change(prof)
    p = tmp_path / "broken.json"
    p.write_text(json.dumps(prof))
    return str(p)


@pytest.mark.parametrize(
    "change,words",
    [
        (lambda p: p["relay"].update({"pinn": 5}), ["relay.pinn"]),
        (lambda p: p["relay"].update({"pin": "26"}), ["relay.pin", "expected int"]),
        (lambda p: p["relay"].update({"pin": 25}), ["25", "pilot.pwm_pin", "relay.pin"]),
        (lambda p: p["pilot"].pop("adc_pin"), ["pilot.adc_pin", "missing"]),
    ],
)
def test_bad_board_profile_names_the_entry_and_stays_safe(tmp_path, change, words):
    events, _out = sim(tmp_path, "--board", broken_board(tmp_path, change))
    boot = [e for e in events if e["type"] == "boot"][0]
    for w in words:
        assert w in boot["board_error"]
    assert_out_of_service(events)


def test_out_of_service_outputs(tmp_path, monkeypatch):
    """On CPython with the fakes: relay pin at its open level, pilot at -12 V (PWM duty 0)."""
    import machine
    from firmware import station
    from firmware.clock import VirtualClock

    machine.hw_reset()
    broken = broken_board(tmp_path, lambda p: p["relay"].update({"pinn": 5}))
    os.replace(broken, tmp_path / "board.json")
    st = station.start(str(tmp_path), VirtualClock())
    assert isinstance(st, station.OutOfService)
    assert machine.hw_level(26) == 0  # devkit relay is active high: open
    pwm = machine.hw_pwm(25)
    assert pwm is None or pwm[1] == 0
    assert machine.hw_level(25) == 0


@pytest.mark.parametrize(
    "args,words",
    [
        (["--board", "nosuchboard"], ["--board nosuchboard", "esp32-devkit"]),
        (["--heap", "lots"], ["--heap", "64K"]),
        (["--speed", "-1"], ["speed"]),
        (["--runtime", "java"], ["--runtime"]),
        (["--scenario", "/nonexistent.scn"], ["no such file"]),
        (["--csms", "http://localhost:9000"], ["--csms http://localhost:9000", "ws://"]),
        (["--csms", "wss://localhost:9000"], ["--csms wss://", "--tls on"]),
        (["--tls", "on", "--csms", "ws://x:1"], ["built-in back end"]),
        (["--id", ""], ["--id", "1 to 48"]),
    ],
)
def test_bad_command_line(args, words):
    p = subprocess.run([sys.executable, SIM] + args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2
    for w in words:
        assert w in p.stderr


def test_unknown_meter_model_in_the_board_profile_names_it(tmp_path):
    events, _out = sim(tmp_path, "--board", broken_board(tmp_path, lambda p: p["meter"].update({"model": "abb-b23"})))
    boot = [e for e in events if e["type"] == "boot"][0]
    assert "abb-b23" in boot["board_error"] and "sdm630" in boot["board_error"]
    assert_out_of_service(events)
