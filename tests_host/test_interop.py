"""Interop: the firmware on the virtual ESP32 against a central system no one here wrote, npm's
ocpp-rpc in strict mode (tests_host/interop/csms.js), which checks every call and every answer,
both ways, against the official OCPP 1.6 JSON schemas. The simulator's proxy stands between them
(`--csms URL`), so the network verbs work. One run of tests_host/scenarios/interop/session.scn:
the back end's commands after the boot, a session it stops remotely, a session that ends while
the network is down.

The back end runs in real time, the simulator at forty times real time (`--speed 40`): the back
end's commands take some 100 ms, 4 s of the board's time, where the scenario leaves 60 s.
tools/test.py installs ocpp-rpc (tests_host/interop/package-lock.json) with npm.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INTEROP = os.path.join(HERE, "interop")
SCENARIO = os.path.join(HERE, "scenarios", "interop", "session.scn")
SIM = os.path.join(ROOT, "tools", "sim.py")


class Run:
    def __init__(self, code, output, events, log):
        self.code, self.output, self.events, self.log = code, output, events, log

    def calls(self, method):
        return [e["params"] for e in self.log if e.get("ev") == "call" and e["method"] == method]

    def commands(self):
        return [e for e in self.log if e.get("ev") == "command"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    node = shutil.which("node")
    assert node, "the interop check needs Node.js (.ci/run installs it)"
    assert os.path.isdir(os.path.join(INTEROP, "node_modules", "ocpp-rpc")), \
        "ocpp-rpc is not installed: python3 tools/test.py installs it (npm ci in tests_host/interop)"
    tmp = str(tmp_path_factory.mktemp("interop"))
    log_path = os.path.join(tmp, "csms.jsonl")
    events = os.path.join(tmp, "events.jsonl")
    with open(log_path, "w") as log_file:
        csms = subprocess.Popen([node, "csms.js"], cwd=INTEROP, stdin=subprocess.PIPE, stdout=log_file,
                                stderr=subprocess.STDOUT)
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None and time.monotonic() < deadline and csms.poll() is None:
            with open(log_path) as f:
                first = f.readline()
            if first.endswith("\n"):
                port = json.loads(first)["listening"]
            else:
                time.sleep(0.05)
        assert port, "the central system did not start: %s" % open(log_path).read()[-2000:]
        p = subprocess.run([sys.executable, SIM, "--scenario", SCENARIO, "--csms", "ws://127.0.0.1:%d/ocpp" % port,
                            "--speed", "40", "--quiet", "--events", events], capture_output=True, text=True,
                           timeout=600)
    finally:
        csms.stdin.close()  # it closes its connections and exits
        try:
            csms.wait(timeout=30)
        except subprocess.TimeoutExpired:
            csms.kill()
    with open(log_path) as f:
        log = [json.loads(line) for line in f if line.startswith("{")]
    evs = []
    if os.path.exists(events):
        with open(events) as f:
            evs = [json.loads(line) for line in f]
    return Run(p.returncode, p.stdout + p.stderr, evs, log)


def test_the_simulator_runs_the_story_against_it(run):
    assert run.code == 0, run.output[-3000:]
    assert run.log[0]["listening"]


def test_strict_mode_finds_nothing_to_refuse(run):
    # every call the charger made and every answer it gave satisfied the official schemas
    assert [e for e in run.log if e.get("ev") == "invalid"] == []
    assert run.calls("BootNotification")


def test_every_command_of_the_back_end_is_answered_as_the_specification_says(run):
    got = {}
    for c in run.commands():
        assert "result" in c, c
        got.setdefault(c["method"], []).append(c["result"])
    every = got["GetConfiguration"][0]["configurationKey"]
    assert len(every) >= 40 and {"key": "MeterValueSampleInterval", "value": "60", "readonly": False} in every
    assert all("AuthorizationKey" != k["key"] for k in every)  # write-only (whitepaper 7.2)
    assert got["ChangeConfiguration"] == [{"status": "Accepted"}]
    assert got["GetConfiguration"][1] == {"configurationKey": [
        {"key": "MeterValueSampleInterval", "value": "10", "readonly": False}], "unknownKey": ["NoSuchKey"]}
    assert got["TriggerMessage"] == [{"status": "Accepted"}]
    assert got["SendLocalList"] == [{"status": "Accepted"}]
    assert got["GetLocalListVersion"] == [{"listVersion": 4}]
    assert got["SetChargingProfile"] == [{"status": "Accepted"}]
    composite = got["GetCompositeSchedule"][0]
    assert composite["status"] == "Accepted"
    assert composite["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 16  # the profile's
    assert got["ClearChargingProfile"] == [{"status": "Accepted"}]
    assert got["DataTransfer"] == [{"status": "UnknownVendorId"}]
    assert got["ClearCache"] == [{"status": "Accepted"}]
    assert got["RemoteStopTransaction"] == [{"status": "Accepted"}]


def test_each_session_is_one_transaction_told_once_with_its_energy(run):
    starts, stops = run.calls("StartTransaction"), run.calls("StopTransaction")
    sessions = [e for e in run.events if e["type"] == "session" and e["event"] == "stop"]
    assert len(starts) == len(stops) == len(sessions) == 2
    assert [s["transactionId"] for s in stops] == [1, 2]
    assert [s["reason"] for s in stops] == ["Remote", "EVDisconnected"]
    for start, stop, session in zip(starts, stops, sessions):
        assert stop["meterStop"] - start["meterStart"] == session["energy_wh"] > 0
    # the second ended while the network was down: told once, on the connection that followed
    kinds = [e["method"] if e.get("ev") == "call" else e.get("ev") for e in run.log]
    second_stop = [i for i, k in enumerate(kinds) if k == "StopTransaction"][1]
    before = kinds[:second_stop]
    last_connect = len(before) - 1 - before[::-1].index("connect")
    assert "close" in before and before.index("close") < last_connect


def test_meter_values_follow_the_interval_the_back_end_set(run):
    mvs = run.calls("MeterValues")
    assert {m["transactionId"] for m in mvs} <= {1, 2} and len(mvs) >= 5
    for m in mvs:
        assert m["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Periodic"
