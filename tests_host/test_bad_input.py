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
    p = subprocess.run([sys.executable, SIM, "--scenario", str(scn), "--events", str(ev), "--quiet"]
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
    from vclock import VirtualClock

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


# ---------------------------------------------------------------------------------------------
# Hostile configuration files (settings.json, board.json): each is refused unread or unparsed,
# with a message that says why, and the station stays out of service with the outputs safe. No
# file can make station.start raise (on the board: a boot loop).

from drivers import board as board_mod  # noqa: E402
from firmware import station as station_mod  # noqa: E402
from vclock import VirtualClock  # noqa: E402

HOSTILE = [
    # (id, file content, what the message must say; {cap} is the file's cap)
    ("200KB-string", json.dumps({"free_id_tag": "x" * 200 * 1024}).encode(), "204819 bytes, more than the {cap} allowed"),
    ("5000-keys", json.dumps({"k%d" % i: i for i in range(5000)}).encode(), "72780 bytes, more than the {cap} allowed"),
    ("10000-levels", b"[" * 10000 + b"]" * 10000, "20000 bytes, more than the {cap} allowed"),
    ("40-levels", b'{"tariffs": ' + b"[" * 40 + b"]" * 40 + b"}", "nested too deeply (more than 32 levels)"),
    ("null", b"null", "expected a JSON object, got null"),
    ("list", b"[]", "expected a JSON object, got an array"),
    ("latin-1", b'{"free_id_tag": "Gr\xfcn"}', "not UTF-8 text"),
]
HOSTILE_IDS = [h[0] for h in HOSTILE]


def devkit_on(root):
    with open(DEVKIT, "rb") as f:
        (root / "board.json").write_bytes(f.read())


def run_ticks(st, clock, ms):
    for _ in range(ms // 10):
        clock.advance(10)
        st.tick()
        if clock.ticks_ms() % 100 == 0:
            st.service()


def assert_outputs_safe():
    import machine

    assert machine.hw_level(26) == 0  # devkit relay is active high: open
    pwm = machine.hw_pwm(25)
    assert pwm is None or pwm[1] == 0  # pilot at -12 V (state F)
    assert machine.hw_level(25) == 0


@pytest.mark.parametrize("name,content,words", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_settings_file_is_refused_and_the_station_stays_out_of_service(tmp_path, name, content, words):
    import machine

    machine.hw_reset(keep_world=False)
    devkit_on(tmp_path)
    (tmp_path / "settings.json").write_bytes(content)
    clock = VirtualClock()
    st = station_mod.start(str(tmp_path), clock)
    msg = st.settings_error
    assert msg == "settings file %s/settings.json: %s" % (tmp_path, words.format(cap=settings_mod.MAX_FILE))
    run_ticks(st, clock, 2000)
    assert "config" in st.charger.faults.codes() and not st.charger.contactor
    assert st.settings.get("ocpp_url") == "" and st.ocpp is None  # nothing of the file is used
    assert_outputs_safe()


@pytest.mark.parametrize("name,content,words", HOSTILE, ids=HOSTILE_IDS)
def test_hostile_board_file_gives_out_of_service(tmp_path, name, content, words):
    import machine

    machine.hw_reset(keep_world=False)
    (tmp_path / "board.json").write_bytes(content)
    st = station_mod.start(str(tmp_path), VirtualClock())
    assert isinstance(st, station_mod.OutOfService)
    assert st.error == "%s/board.json: %s" % (tmp_path, words.format(cap=board_mod.MAX_FILE))
    assert_outputs_safe()
    # boot.py's first step reads the same file: it falls back to the DevKit pins, never raises
    safe = board_mod.make_safe(str(tmp_path / "board.json"))
    assert safe["relay_pin"] == 26 and safe["errors"][0] == st.error


# Under the real MicroPython with a 64 KB heap, each kind at least once (the 200 KB file, the
# MemoryError boot loop of old, in both files): the boot does not loop, the run ends (exit 0),
# the boot event names the problem, the contactor never closes.
SIM_CASES = [("settings", "200KB-string"), ("board", "200KB-string"), ("settings", "5000-keys"),
             ("board", "10000-levels"), ("settings", "null"), ("board", "list"), ("settings", "latin-1")]


@pytest.mark.parametrize("which,name", SIM_CASES, ids=["%s-%s" % c for c in SIM_CASES])
def test_hostile_file_under_micropython_64k(tmp_path, which, name):
    content, words = [(h[1], h[2]) for h in HOSTILE if h[0] == name][0]
    f = tmp_path / "hostile.json"
    f.write_bytes(content)
    events, _out = sim(tmp_path, "--" + which, str(f), "--csms", "none")
    boot = [e for e in events if e["type"] == "boot"][0]
    if which == "settings":
        assert boot["settings_error"] == "settings file settings.json: " + words.format(cap=settings_mod.MAX_FILE)
    else:
        assert boot["board_error"] == "board.json: " + words.format(cap=board_mod.MAX_FILE)
    assert_out_of_service(events)
    assert not [e for e in events if e["type"] == "error"]


@pytest.mark.parametrize("settings_text", [
    # what fits the cap is read; what is over it is refused before it is parsed
    json.dumps({"free_id_tag": "A" * 20, "local_tokens": {"%020d" % i: "G%019d" % i for i in range(100)}}),
])
def test_a_settings_file_within_the_cap_is_read(tmp_path, settings_text):
    assert len(settings_text) <= settings_mod.MAX_FILE
    p = tmp_path / "settings.json"
    p.write_text(settings_text)
    assert len(settings_mod.load(str(p)).get("local_tokens")) == 100
    p.write_text(settings_text + " " * (settings_mod.MAX_FILE + 1 - len(settings_text)))
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.load(str(p))
    assert str(e.value).endswith(": %d bytes, more than the %d allowed" % (settings_mod.MAX_FILE + 1, settings_mod.MAX_FILE))


# ---------------------------------------------------------------------------------------------
# The state files read at boot: whatever one holds, the boot goes on (the file's own fallback
# applies: a corrupt faults.json errs on the safe side, welded).

STATE_FILES = ["faults.json", "energy.json", "ocpp.json", "ocpp-config.json", "ocpp-profiles.json", "tariffs.json"]


@pytest.mark.parametrize("content", [h[1] for h in HOSTILE] + [b'{"register_wh": 1e999, "welded": 1e999}',
                                                                b'{"register_wh": -5, "meter_wh": "x"}'],
                         ids=HOSTILE_IDS + ["1e999", "negative"])
@pytest.mark.parametrize("name", STATE_FILES)
def test_no_state_file_can_make_the_boot_raise(tmp_path, name, content):
    import machine

    machine.hw_reset(keep_world=False)
    devkit_on(tmp_path)
    (tmp_path / "settings.json").write_text(json.dumps({"ocpp_url": "ws://csms.test/ocpp", "charge_box_id": "CP1"}))
    (tmp_path / name).write_bytes(content)
    clock = VirtualClock()
    st = station_mod.start(str(tmp_path), clock)
    assert isinstance(st, station_mod.Station) and st.settings_error is None and st.ocpp is not None
    run_ticks(st, clock, 1000)
    welded = "welded" in st.charger.faults.codes()
    assert welded == (name == "faults.json" and content != b'{"register_wh": -5, "meter_wh": "x"}')
    if name == "energy.json":
        assert st.metering.register_wh in (None, 0)  # not inf, not -5: the meter's reading starts it
    if name == "tariffs.json":
        assert st.billing.tariffs is None and st.billing.error


# ---------------------------------------------------------------------------------------------
# Numbers out of any range (NaN, +-inf, 1e999, negative) are refused like any bad value.

@pytest.mark.parametrize("key,value,words", [
    ("max_current_a", float("nan"), "expected a finite number, got nan"),  # NaN passes < lo and > hi
    ("max_current_a", float("inf"), "expected a finite number, got inf"),
    ("temp_derate_c", float("-inf"), "expected a finite number, got -inf"),
    ("max_current_a", 10 ** 400, "expected a finite number, got inf"),  # CPython: float() overflows
    ("overcurrent_margin_a", -1.0, "-1.0 is below the minimum 0.5"),
    ("fault_retry_s", -30, "-30 is below the minimum 30"),
    ("fault_retry_s", 10 ** 400, "is above the maximum 3600"),
], ids=["nan", "inf", "-inf", "10**400", "negative-float", "negative-int", "10**400-int"])
def test_numbers_out_of_any_range_in_settings(key, value, words):
    s = settings_mod.Settings({"max_current_a": 20})
    with pytest.raises(settings_mod.SettingsError) as e:
        s.update({key: value})
    assert words in str(e.value) and key in str(e.value) and len(str(e.value)) < 120
    assert s.get("max_current_a") == 20.0  # nothing changed
    if key != "max_current_a":
        assert s.get(key) == settings_mod.SCHEMA[key][1]


def test_1e999_in_a_settings_file(tmp_path):
    p = tmp_path / "settings.json"
    p.write_text('{"max_current_a": 1e999}')
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.load(str(p))
    assert str(e.value) == "setting 'max_current_a': expected a finite number, got inf"
    p.write_text('{"max_current_a": NaN}')  # not JSON, though CPython's json.loads takes it
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.load(str(p))
    assert "not valid JSON" in str(e.value)


# Through the charge point's handlers (tests_host/test_chargepoint.py's bench: the whole station,
# a fake link, the test as the back end). Frames are written by hand: json.dumps would write inf
# as "Infinity", which is no JSON at all.

def _raw_call(b, uid, action, payload_text):
    b.backend.cs_actions[uid] = action
    b.link.push('[2,"%s","%s",%s]' % (uid, action, payload_text))


def test_numbers_out_of_range_from_the_back_end_change_nothing(tmp_path):
    from test_chargepoint import Bench, aio
    from firmware.ocpp import transactions as tx_mod

    profile = ('{"connectorId":1,"csChargingProfiles":{"chargingProfileId":7,"stackLevel":0,'
               '"chargingProfilePurpose":"TxDefaultProfile","chargingProfileKind":"Relative",'
               '"chargingSchedule":{"chargingRateUnit":"A","chargingSchedulePeriod":[{"startPeriod":0,"limit":%s}]}}}')
    tariffs = '{"currency":"EUR","tariffs":{"a":{"per_kwh":%s}},"default":"a"}'

    @aio
    async def run():
        b = await Bench.start(tmp_path)
        calls = [
            # (action, payload as JSON text, the CallError code or the status answered, and what
            # the CallError's description or the DataTransfer's data says)
            ("SetChargingProfile", profile % "1e999", "PropertyConstraintViolation",
             "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].limit: not a finite number"),
            ("SetChargingProfile", profile % "-1e999", "PropertyConstraintViolation",
             "csChargingProfiles.chargingSchedule.chargingSchedulePeriod[0].limit: not a finite number"),
            ("SetChargingProfile", profile % "-16", "Rejected", None),  # smart.py: a limit from 0 to 1e7
            ("ChangeAvailability", '{"connectorId":-1,"type":"Inoperative"}', "PropertyConstraintViolation",
             "connectorId: below 0"),
            ("ReserveNow", '{"connectorId":-1,"expiryDate":"2030-01-01T00:00:00Z","idTag":"A","reservationId":1}',
             "PropertyConstraintViolation", "connectorId: below 0"),
            ("ReserveNow", '{"connectorId":1,"expiryDate":"2030-01-01T00:00:00Z","idTag":"A","reservationId":1e999}',
             "TypeConstraintViolation", "reservationId: expected integer"),
            ("GetCompositeSchedule", '{"connectorId":-1,"duration":-3600}', "PropertyConstraintViolation",
             "connectorId: below 0"),
            ("ChangeConfiguration", '{"key":"HeartbeatInterval","value":"1e999"}', "Rejected", None),
            ("ChangeConfiguration", '{"key":"HeartbeatInterval","value":"NaN"}', "Rejected", None),
            ("ChangeConfiguration", '{"key":"HeartbeatInterval","value":"-300"}', "Rejected", None),
            ("DataTransfer", '{"vendorId":"%s","messageId":"SetTariffs","data":"%s"}'
             % (tx_mod.VENDOR_ID, (tariffs % "1e999").replace('"', '\\"')), "Rejected",
             "tariffs.a.per_kwh: expected a number <= 1000, got inf"),
            ("DataTransfer", '{"vendorId":"%s","messageId":"SetTariffs","data":"%s"}'
             % (tx_mod.VENDOR_ID, (tariffs % "NaN").replace('"', '\\"')), "Rejected",
             "tariff table: not valid JSON (unexpected byte 0x4e at 44)"),
            ("DataTransfer", '{"vendorId":"%s","messageId":"SetTariffs","data":"%s"}'
             % (tx_mod.VENDOR_ID, (tariffs % "-0.3").replace('"', '\\"')), "Rejected",
             "tariffs.a.per_kwh: expected a number >= 0, got -0.3"),
        ]
        for i, (action, payload, want, words) in enumerate(calls):
            uid = "n%d" % i
            _raw_call(b, uid, action, payload)
            await b.settle()
            ans = b.backend.answers.pop(uid)
            if want.endswith("Violation"):
                assert ans[0] == 4 and ans[2] == want and ans[3] == words, (action, payload, ans)
            else:
                assert ans[0] == 3 and ans[2]["status"] == want, (action, payload, ans)
                if words is not None:
                    assert ans[2]["data"] == words, (action, payload, ans)
        # nothing changed
        assert b.cp.smart.profiles.installed() == []
        assert b.st.charger.available and b.cp.reservation is None and not b.st.charger.reserved
        assert b.cp.config.get("HeartbeatInterval") == 300
        assert b.st.billing.tariffs is None
        # and the station goes on: a car charges
        await b.charge()
        assert b.st.charger.contactor

    run()


def test_deploy_refuses_settings_the_board_would_refuse_unread(tmp_path):
    """Valid settings that tools/deploy.py would write in more bytes than the board reads."""
    band = {"days": "Mon-Fri", "from": "08:00", "to": "18:00", "per_kwh": 0.4321, "per_hour": 1.25}
    table = {"currency": "EUR", "default": "t0",
             "tariffs": {"t%d" % i: {"per_kwh": 0.39, "bands": [band] * 8} for i in range(8)}}
    values = {"local_tokens": {"%020d" % i: "G%019d" % i for i in range(100)}, "tariffs": table}
    settings_mod.Settings(values)  # every value is valid
    f = tmp_path / "big.json"
    f.write_text(json.dumps(values))
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "deploy.py"), "--port", "/dev/ttyNOPE9",
                        "--settings", str(f)], cwd=str(tmp_path),  # (no ./secrets.json there)
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "more than the %d the firmware reads" % settings_mod.MAX_FILE in p.stderr


def test_energy_mode_at_run_time_is_checked_saved_and_applied(tmp_path):
    from test_chargepoint import Bench, aio
    from firmware import settings as settings_mod

    @aio
    async def run():
        b = await Bench.start(tmp_path, up=False)
        st = b.st
        assert st.energy is None  # normal mode: the energy manager is not even imported
        assert st.set_energy_mode("turbo") == ('setting \'energy_mode\': expected one of "normal", '
                                               '"smart", "solar", got \'turbo\'')
        assert st.set_energy_mode(None) is not None and st.set_energy_mode(1e999) is not None
        assert st.set_energy_mode("smart") == "setting 'energy_mode': \"smart\" needs main_fuse_a"
        assert st.energy is None and st.settings.get("energy_mode") == "normal"
        assert st.set_energy_mode("solar") is None
        assert st.energy.mode == "solar" and st.settings.get("energy_mode") == "solar"
        saved = settings_mod.load(os.path.join(str(tmp_path), "settings.json"))
        assert saved.get("energy_mode") == "solar"
        assert st.set_energy_mode("normal") is None and st.energy.mode == "normal"

    run()
