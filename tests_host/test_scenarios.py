"""Scenarios: the whole firmware on the virtual ESP32 (tools/vm.py), in the board's whole heap (96 KB).

Each scenario file in tests_host/scenarios/ runs through `tools/sim.py` exactly as a person
would run it; the tests read its events (JSON lines) and check what happened, on the firmware's
virtual clock. All scenarios run once per test session, two at a time.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCENARIOS = os.path.join(HERE, "scenarios")
SIM = os.path.join(ROOT, "tools", "sim.py")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import sim  # noqa: E402
from firmware.ocpp import status  # noqa: E402

BUDGET = sim.heap_bytes(sim.DEFAULT_HEAP)  # the whole heap, module objects included
BUDGET_MS = 100  # IEC 61851-1: the contactor opens within 100 ms


class Run:
    def __init__(self, name, code, events, output):
        self.name = name
        self.code = code
        self.events = events
        self.output = output

    def of(self, kind, **match):
        return [e for e in self.events if e["type"] == kind and all(e.get(k) == v for k, v in match.items())]

    def action(self, verb):
        hits = [e for e in self.events if e["type"] == "world" and e.get("action") == verb]
        assert hits, "%s: no %s action" % (self.name, verb)
        return hits[0]["t"]

    def closes(self):
        return [e["t"] for e in self.of("contactor", closed=True)]

    def opens(self):
        return [e["t"] for e in self.of("contactor", closed=False)]

    def first_open_after(self, t):
        later = [x for x in self.opens() if x >= t]
        assert later, "%s: the contactor never opened after %d ms" % (self.name, t)
        return later[0]

    def fault(self, code, active=True):
        return [e["t"] for e in self.of("fault", code=code, active=active)]

    def truth(self):
        return [e for e in self.events if e["type"] == "world" and "truth" in e][0]["truth"]


def run_sim(name, tmp, *extra):
    events = os.path.join(tmp, name + ".jsonl")
    cmd = [sys.executable, SIM, "--scenario", os.path.join(SCENARIOS, name + ".scn"), "--events", events,
           "--heap", sim.DEFAULT_HEAP, "--quiet"] + list(extra)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    evs = []
    if os.path.exists(events):
        with open(events) as f:
            evs = [json.loads(line) for line in f]
    return Run(name, p.returncode, evs, p.stdout + p.stderr)


NAMES = sorted(f[:-4] for f in os.listdir(SCENARIOS) if f.endswith(".scn"))
SETTINGS = {  # scenario: the settings file it runs with (the defaults otherwise)
    "lock_power_keep": {"lock_after_power_loss": "keep"},
}


def sim_args(name, tmp):
    if name not in SETTINGS:
        return []
    path = os.path.join(tmp, name + ".settings.json")
    with open(path, "w") as f:
        json.dump(SETTINGS[name], f)
    return ["--settings", path]


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("scenarios"))
    longest_first = sorted(NAMES, key=lambda n: "_1h" not in n)  # the hour-long ones set the pace
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        done = dict(zip(longest_first, pool.map(lambda n: run_sim(n, tmp, *sim_args(n, tmp)), longest_first)))
    return done


def ok(runs, name):
    r = runs[name]
    assert r.code == 0, "%s exited %d:\n%s" % (name, r.code, r.output[-3000:])
    heap = r.of("heap")
    if heap and heap[0]["out_of_memory"]:
        print("\n%s: %d slow rounds ran out of memory and were given up" % (name, heap[0]["out_of_memory"]))
    assert heap and heap[0]["budget"] == BUDGET
    return r


@pytest.mark.parametrize("name", NAMES)
def test_scenario_runs_to_its_end_within_the_heap(runs, name):
    r = ok(runs, name)
    assert r.events[0]["type"] == "boot"
    assert r.of("heap")[0]["peak"] <= BUDGET
    assert not r.of("reset"), "the watchdog reset the board"  # the service task feeds it
    assert "truth" in r.events[-1]


def test_normal_session(runs):
    r = ok(runs, "normal_session")
    ready = r.action("ev-ready")
    assert r.closes() and 0 < r.closes()[0] - ready <= 3000  # closes within 3 s of the car's request
    offers = r.of("offer")
    assert offers[0]["amps"] == 32.0 and offers[0]["duty"] == pytest.approx(53.33, abs=0.01)
    assert not r.of("fault")
    starts, stops = r.of("session", event="start"), r.of("session", event="stop")
    assert len(starts) == 1 and len(stops) == 1
    assert stops[0]["reason"] == "EVDisconnected"
    truth = r.truth()
    assert truth == pytest.approx(11040 * 600 / 3600, rel=0.01)  # 3 x 230 V x 16 A for ten minutes
    assert abs(stops[0]["energy_wh"] - truth) <= 1 + 0.005 * truth
    assert r.first_open_after(r.action("ev-pause")) - r.action("ev-pause") <= BUDGET_MS


def test_unplug_under_load(runs):
    r = ok(runs, "unplug_under_load")
    t = r.action("unplug")
    assert r.first_open_after(t) - t <= BUDGET_MS
    assert r.of("session", event="stop")[0]["reason"] == "EVDisconnected"
    assert r.of("state")[-1]["state"] == "A"


def test_c_to_b(runs):
    r = ok(runs, "c_to_b")
    t = r.action("ev-pause")
    assert r.first_open_after(t) - t <= BUDGET_MS
    assert r.of("state")[-1]["state"] == "B2"
    assert not r.of("fault")


def test_diode_fault(runs):
    r = ok(runs, "diode_fault")
    t = r.action("diode-fault")
    assert r.first_open_after(t) - t <= BUDGET_MS
    assert r.fault("diode") and r.fault("diode")[0] - t <= BUDGET_MS
    assert len(r.closes()) == 1


def test_pilot_short(runs):
    r = ok(runs, "pilot_short")
    t = r.action("pilot-short")
    assert r.first_open_after(t) - t <= BUDGET_MS
    assert r.fault("pilot-short")
    cleared = r.fault("pilot-short", active=False)
    assert cleared and cleared[0] - r.action("pilot-ok") >= 30000  # transient: retried after 30 s
    assert len(r.closes()) == 2 and r.closes()[1] > cleared[0]


def test_rcd_trip(runs):
    r = ok(runs, "rcd_trip")
    t = r.action("rcd-leak")
    assert r.first_open_after(t) - t <= BUDGET_MS
    assert r.fault("rcd-trip")
    cleared = r.fault("rcd-trip", active=False)
    assert cleared and cleared[0] - r.fault("rcd-trip")[0] >= 30000
    assert len(r.closes()) == 2  # charging resumed after the pause and a new self-test


def test_rcd_selftest_failure(runs):
    r = ok(runs, "rcd_selftest_fail")
    assert r.fault("rcd-selftest")
    assert not r.closes()
    assert all(o["amps"] == 0 for o in r.of("offer"))  # nothing was ever offered


def test_weld_is_permanent(runs):
    r = ok(runs, "weld")
    assert r.fault("welded")
    assert not r.fault("welded", active=False)
    assert len(r.closes()) == 1  # no charging after the replug
    assert r.of("state")[-1]["state"] == "F"


def test_temperature_derating_then_shutdown(runs):
    r = ok(runs, "temperature")
    t65 = r.action("temp")
    derated = [o for o in r.of("offer") if o["t"] > t65]
    assert derated and 6 <= derated[0]["amps"] < 32 and derated[0]["t"] - t65 <= 1500
    assert r.fault("over-temperature")
    assert r.first_open_after(r.fault("over-temperature")[0]) - r.fault("over-temperature")[0] <= BUDGET_MS
    assert r.fault("over-temperature", active=False)
    assert len(r.closes()) == 2


def test_car_ignoring_a_lowered_offer_is_overcurrent(runs):
    r = ok(runs, "overcurrent")
    t = r.action("limit")
    lowered = [o for o in r.of("offer") if o["t"] >= t]
    assert lowered[0]["amps"] == 10.0
    f = r.fault("overcurrent")
    assert f and 5000 <= f[0] - t <= 6000
    assert r.first_open_after(f[0]) == f[0]


def test_pwm_removed_car_stays_in_c(runs):
    r = ok(runs, "pwm_removed")
    t = r.action("limit")
    off = [o for o in r.of("offer") if o["t"] >= t][0]
    assert off["amps"] == 0 and off["duty"] == 100.0
    opened = r.first_open_after(t)
    assert 6000 <= opened - off["t"] <= 6000 + 20
    assert not r.of("fault")


def test_power_cut_while_charging(runs):
    r = ok(runs, "power_cut")
    boots = r.of("boot")
    assert len(boots) == 2
    cut = r.action("power-cut")
    # after the reboot the contactor is open until the whole closing sequence ran again
    reboot = boots[1]["t"]
    first = [e for e in r.events if e["t"] >= reboot and e["type"] == "contactor"]
    assert first[0]["closed"] is True and first[0]["t"] - reboot >= 200
    stops = r.of("session", event="stop")
    assert stops[0]["reason"] == "PowerLoss" and stops[0].get("recovered")
    truth = r.truth()
    total = sum(s["energy_wh"] for s in stops)
    assert abs(total - truth) <= 2 + 0.005 * truth  # nothing lost across the cut
    assert stops[0]["energy_wh"] >= 11040 * (cut - r.closes()[0]) / 3600000 - 1
    assert stops[-1]["reason"] == "EVDisconnected"


def test_a_to_c_without_b(runs):
    r = ok(runs, "a_to_c")
    assert r.fault("pilot")
    assert not r.closes()


def test_bad_scenario_line_names_its_line(tmp_path):
    bad = tmp_path / "bad.scn"
    bad.write_text("plug\nwait 2s\nev-ready sixteen\n")
    p = subprocess.run([sys.executable, SIM, "--scenario", str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "line 3" in p.stderr and "ev-ready" in p.stderr


def test_verb_the_board_can_not_do_fails_clearly(tmp_path):
    scn = tmp_path / "card.scn"
    scn.write_text("plug\ncard 04A1B2C3\n")
    p = subprocess.run([sys.executable, SIM, "--scenario", str(scn), "--quiet", "--board", "esp32-tethered-1p"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 3
    assert "line 2" in p.stdout and "no card reader" in p.stdout


def test_meter_failure_stops_charging(runs):
    r = ok(runs, "meter_fail")
    t = r.action("meter-fail")
    f = r.fault("meter")
    assert f and f[0] - t <= 10000
    assert status.error_code(r.of("fault", code="meter")[0]["code"]) == "PowerMeterFailure"
    assert r.first_open_after(f[0]) == f[0]
    cleared = r.fault("meter", active=False)
    assert cleared and cleared[0] > r.action("meter-ok")
    assert len(r.closes()) == 2  # charging resumed once the meter answered again


def meter_events(r):
    return [e for e in r.events if e["type"] == "meter"]


def billed_within_resolution(r):
    stops = r.of("session", event="stop")
    truth = r.truth()
    # the meter's resolution (10 Wh) plus 0.5 %
    assert abs(sum(s["energy_wh"] for s in stops) - truth) <= 10 + 0.005 * truth, (stops, truth)
    return stops


def test_one_hour_at_16a_three_phases_bills_what_the_car_got(runs):
    r = ok(runs, "charge_1h")
    assert r.truth() == pytest.approx(11040, rel=0.002)  # 3 x 230 V x 16 A for one hour
    billed_within_resolution(r)
    m = meter_events(r)
    assert all(a["energy_wh"] <= b["energy_wh"] for a, b in zip(m, m[1:]))
    assert {e["phases"] for e in m if e["power_w"]} == {"L1,L2,L3"}
    assert r.of("flash")[0]["bytes_written"] < 64 * 1024  # per hour of charging


def test_corrupted_frames_are_never_believed(runs):
    r = ok(runs, "meter_noise_1h")
    billed_within_resolution(r)
    m = [e for e in meter_events(r) if e["power_w"]]
    assert {tuple(e["amps"]) for e in m} == {(16.0, 16.0, 16.0)}  # every believed value is right
    assert {e["power_w"] for e in m} == {11040}
    assert all(a["energy_wh"] <= b["energy_wh"] for a, b in zip(m, m[1:]))
    assert m[-1]["bus_errors"] > 0  # the noise was there, and caught
    assert not r.fault("meter")


def test_power_cut_loses_no_energy_from_the_register(runs):
    r = ok(runs, "power_cut")
    cut = r.action("power-cut")
    m = meter_events(r)
    before = [e["energy_wh"] for e in m if e["t"] < cut]
    after = [e["energy_wh"] for e in m if e["t"] > cut]
    assert after[0] >= before[-1]
    assert abs(m[-1]["energy_wh"] - r.truth()) <= 10 + 0.005 * r.truth()
    billed_within_resolution(r)


def test_meter_on_the_wrong_address_is_reported_as_such(runs):
    r = ok(runs, "meter_wrong_address")
    f = r.of("fault", code="meter", active=True)
    assert f and "address 1" in f[0]["reason"] and "Modbus address" in f[0]["reason"]
    assert not r.closes()  # never metered, never charged


def test_meter_at_the_wrong_baud_rate_is_reported_as_such(runs):
    r = ok(runs, "meter_wrong_baud")
    f = r.of("fault", code="meter", active=True)
    assert f and "baud" in f[0]["reason"]
    assert not r.closes()


def closings_per_minute(r):
    closes = r.closes()
    return max(len([x for x in closes[i:] if x - t < 60000]) for i, t in enumerate(closes))


def test_chatter_is_limited_to_ten_closings_a_minute(runs):
    r = ok(runs, "chatter")
    t0, t1 = r.action("ev-chatter"), r.action("ev-steady")
    during = [t for t in r.closes() if t0 <= t < t1]
    assert closings_per_minute(r) <= 10 and len(during) <= 30
    holds = [e for e in r.of("holdoff") if t0 <= e["t"] < t1]
    assert holds and [e["ms"] for e in holds] == sorted(e["ms"] for e in holds)
    assert "contactor wear" in holds[0]["reason"]
    assert not r.fault("welded") and not r.fault("contactor")
    # steady again: the car charges (after at most the last hold-off) and stays charging
    assert [t for t in r.closes() if t >= t1] and r.of("contactor")[-1]["closed"]


def test_a_weld_during_chatter_is_found_within_five_seconds(runs):
    r = ok(runs, "chatter_weld")
    t = r.action("weld")
    state = [e for e in r.of("contactor") if e["t"] <= t]
    # the contacts weld when they are closed, or at the next closing when they are open
    appears = t if state and state[-1]["closed"] else [x for x in r.closes() if x >= t][0]
    found = r.fault("welded")
    assert found and found[0] - appears <= 5000
    assert not [x for x in r.closes() if x > appears]
    assert r.of("session", event="stop")[-1]["reason"] == "Other"


# ---- the socket lock (README, "The socket lock"; the DevKit profile's motor lock)

def lock_states(r):
    return [(e["t"], e["state"]) for e in r.of("lock") if "state" in e]


def locked_at(r, t):
    """The lock's last reported state at or before t is "locked"."""
    before = [s for at, s in lock_states(r) if at <= t]
    return bool(before) and before[-1] == "locked"


def lock_world(r):
    return [e for e in r.of("world") if "lock_both_on" in e][0]


def pulls(r):
    return [e["pull"] for e in r.of("world") if "pull" in e]


def test_lock_confirmed_before_the_contactor_closes(runs):
    r = ok(runs, "lock_before_close")
    closes = r.closes()
    assert len(closes) == 1 and all(locked_at(r, t) for t in closes)
    assert [s for _, s in lock_states(r)] == ["unlocked", "moving", "locked", "moving", "unlocked"]
    stop = r.action("stop")
    opened = r.first_open_after(stop)
    assert opened == stop  # opening waits for nothing, the lock least of all
    unlocked = [t for t, s in lock_states(r) if s == "unlocked"][-1]
    assert unlocked > opened
    assert pulls(r) == ["done"]
    assert lock_world(r)["lock_both_on"] == 0 and lock_world(r)["lock_strokes"] == 2


def test_lock_refuses_a_pull_while_charging(runs):
    r = ok(runs, "lock_pull")
    pull = r.action("pull")
    unplug = r.action("unplug")
    assert pulls(r) == ["refused", "done"]
    assert r.closes()[0] < pull and r.first_open_after(pull) == r.first_open_after(unplug)  # charging went on
    assert r.first_open_after(unplug) - unplug <= BUDGET_MS
    assert r.of("session", event="stop")[0]["reason"] == "EVDisconnected"
    unlocked = [t for t, s in lock_states(r) if s == "unlocked"][-1]
    assert unplug < unlocked < unplug + 3000
    assert lock_world(r)["pulls_refused"] == 1 and not r.of("fault")


def test_jammed_lock_is_a_fault_retried_and_never_closes_unlocked(runs):
    r = ok(runs, "lock_jam")
    raised = r.fault("lock")
    assert len(raised) == 2 and raised[1] - raised[0] >= 30000  # retried after the fault pause
    assert {status.error_code(e["code"]) for e in r.of("fault", code="lock")} == {"ConnectorLockFailure"}
    cleared = r.fault("lock", active=False)
    assert len(cleared) == 2 and cleared[1] > r.action("lock-ok")
    closes = r.closes()
    assert len(closes) == 1 and closes[0] > cleared[1] and locked_at(r, closes[0])
    assert lock_world(r)["lock_both_on"] == 0


def test_power_loss_release_opens_the_lock_when_the_power_returns(runs):
    r = ok(runs, "lock_power_release")
    reboot = r.of("boot")[1]["t"]
    assert r.of("lock")[[e["t"] for e in r.of("lock")].index(reboot)]["state"] == "locked"  # it held
    assert pulls(r) == ["refused", "done"]  # refused without power, out after the boot
    unlocked = [t for t, s in lock_states(r) if s == "unlocked" and t > reboot]
    assert unlocked and unlocked[0] - reboot < 1000
    assert r.of("session", event="stop")[0]["reason"] == "PowerLoss"


def test_power_loss_keep_holds_the_lock_until_a_person_asks(runs):
    r = ok(runs, "lock_power_keep")
    reboot = r.of("boot")[1]["t"]
    after = [e for e in r.of("lock") if e["t"] >= reboot and "state" in e]
    assert after[0]["state"] == "locked" and after[0]["held"] is True
    unlock = r.action("unlock")
    assert [e["t"] for e in after if e["state"] == "moving"][0] >= unlock  # nothing moved before
    assert r.of("lock", request="unlock")[0]["result"] == "unlocking"
    assert pulls(r) == ["refused", "done"]
