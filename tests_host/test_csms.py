"""The development back end (tools/csms.py) against a charge point scripted with the `ocpp` package's
own ChargePoint: what it stores, what it answers, every command it sends, the frames it flags,
who it lets in, and its command line."""
import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOLS = os.path.join(ROOT, "tools")
CSMS = os.path.join(TOOLS, "csms.py")
sys.path.insert(0, TOOLS)

csms = pytest.importorskip("csms")  # needs the venv (ocpp, websockets)
import websockets  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402
from ocpp.exceptions import OCPPError  # noqa: E402
from ocpp.routing import on  # noqa: E402
from ocpp.v16 import ChargePoint as OcppChargePoint  # noqa: E402
from ocpp.v16 import call, call_result  # noqa: E402

T0 = "2026-03-01T10:00:00Z"
T1 = "2026-03-01T10:15:00Z"
T2 = "2026-03-01T10:30:00.250Z"
PROFILE = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Absolute",
           "chargingSchedule": {"chargingRateUnit": "A", "startSchedule": T0,
                                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0},
                                                           {"startPeriod": 3600, "limit": 6.5}]}}

# Every command with a valid payload, and what the scripted charge point answers.
COMMANDS = {
    "ChangeAvailability": ({"connectorId": 1, "type": "Inoperative"}, call_result.ChangeAvailability(status="Accepted")),
    "ChangeConfiguration": ({"key": "HeartbeatInterval", "value": "60"}, call_result.ChangeConfiguration(status="Accepted")),
    "ClearCache": ({}, call_result.ClearCache(status="Accepted")),
    "DataTransfer": ({"vendorId": "org.example", "messageId": "ping", "data": "hello"},
                     call_result.DataTransfer(status="Accepted", data="pong")),
    "GetConfiguration": ({"key": ["HeartbeatInterval"]}, call_result.GetConfiguration(
        configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "60"}])),
    "RemoteStartTransaction": ({"connectorId": 1, "idTag": "CARD1",
                                "chargingProfile": dict(PROFILE, chargingProfilePurpose="TxProfile",
                                                        chargingProfileKind="Relative",
                                                        chargingSchedule={"chargingRateUnit": "A",
                                                                          "chargingSchedulePeriod": [
                                                                              {"startPeriod": 0, "limit": 10.0}]})},
                               call_result.RemoteStartTransaction(status="Accepted")),
    "RemoteStopTransaction": ({"transactionId": 1}, call_result.RemoteStopTransaction(status="Accepted")),
    "Reset": ({"type": "Soft"}, call_result.Reset(status="Accepted")),
    "UnlockConnector": ({"connectorId": 1}, call_result.UnlockConnector(status="Unlocked")),
    "GetDiagnostics": ({"location": "ftp://diag.example.com/up", "startTime": T0, "stopTime": T1},
                       call_result.GetDiagnostics(file_name="diag-1.log")),
    "UpdateFirmware": ({"location": "https://fw.example.com/1.1.bin", "retrieveDate": T1, "retries": 2},
                       call_result.UpdateFirmware()),
    "CancelReservation": ({"reservationId": 7}, call_result.CancelReservation(status="Accepted")),
    "ReserveNow": ({"connectorId": 1, "expiryDate": T1, "idTag": "CARD1", "reservationId": 7},
                   call_result.ReserveNow(status="Accepted")),
    "ClearChargingProfile": ({"id": 1}, call_result.ClearChargingProfile(status="Accepted")),
    "GetCompositeSchedule": ({"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"},
                             call_result.GetCompositeSchedule(
                                 status="Accepted", connector_id=1, schedule_start=T0,
                                 charging_schedule={"charging_rate_unit": "A", "duration": 3600,
                                                    "charging_schedule_period": [{"start_period": 0, "limit": 16.0}]})),
    "SetChargingProfile": ({"connectorId": 1, "csChargingProfiles": PROFILE},
                           call_result.SetChargingProfile(status="Accepted")),
    "TriggerMessage": ({"requestedMessage": "StatusNotification", "connectorId": 1},
                       call_result.TriggerMessage(status="Accepted")),
    "GetLocalListVersion": ({}, call_result.GetLocalListVersion(list_version=3)),
    "SendLocalList": ({"listVersion": 4, "updateType": "Full",
                       "localAuthorizationList": [{"idTag": "CARD1", "idTagInfo": {"status": "Accepted"}},
                                                  {"idTag": "CARD9"}]},
                      call_result.SendLocalList(status="Accepted")),
}
REQUIRED_COMMANDS = {"ChangeAvailability", "ChangeConfiguration", "ClearCache", "DataTransfer", "GetConfiguration",
                     "RemoteStartTransaction", "RemoteStopTransaction", "Reset", "UnlockConnector", "GetDiagnostics",
                     "UpdateFirmware", "CancelReservation", "ReserveNow", "ClearChargingProfile",
                     "GetCompositeSchedule", "SetChargingProfile", "TriggerMessage", "GetLocalListVersion",
                     "SendLocalList"}


class ScriptedCP(OcppChargePoint):
    """A charge point written with the ocpp package: it validates what the back end sends it."""

    def __init__(self, cp_id, ws):
        super().__init__(cp_id, ws, response_timeout=5)
        self.received = []  # (action, payload) of every Call from the back end, as sent

    async def route_message(self, raw_msg):
        frame = json.loads(raw_msg)
        if frame[0] == 2:
            self.received.append((frame[2], frame[3]))
        await super().route_message(raw_msg)


for _action, (_payload, _answer) in COMMANDS.items():
    def _handler(self, _reply=_answer, **_kw):
        return _reply
    _handler.__name__ = "on_" + _action
    setattr(ScriptedCP, _handler.__name__, on(_action)(_handler))


@contextlib.asynccontextmanager
async def charge_point(url, cp_id="CP1", password=None, user=None, subprotocols=("ocpp1.6",), ssl_ctx=None):
    headers = {}
    if password is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % (user or cp_id, password)).encode()).decode()
    async with connect(url + "/" + urllib.parse.quote(cp_id, safe=""), subprotocols=list(subprotocols), additional_headers=headers,
                       ssl=ssl_ctx, open_timeout=5) as ws:
        cp = ScriptedCP(cp_id, ws)
        task = asyncio.create_task(cp.start())
        try:
            yield cp
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
                await task


def http_json(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


async def api(c, method, path, body=None):
    return await asyncio.to_thread(http_json, method, c.control_url + path, body)


def run_cli(*args, timeout=30):
    return subprocess.run([sys.executable, CSMS] + list(args), capture_output=True, text=True, timeout=timeout)


TOKENS = [{"id_tag": "CARD1"}, {"id_tag": "BLOCKED1", "status": "Blocked"},
          {"id_tag": "OLD1", "expiry_date": "2001-01-01T00:00:00Z"},
          {"id_tag": "KID1", "parent_id_tag": "FAMILY", "expiry_date": "2099-01-01T00:00:00Z"}]


async def _session(db):
    async with csms.Csms(port=0, db=db, heartbeat=60, tokens=TOKENS) as c:
        async with charge_point(c.url) as cp:
            r = await cp.call(call.BootNotification(charge_point_model="DevKit", charge_point_vendor="OpenEVSE",
                                                    firmware_version="0.1.0", charge_point_serial_number="SN1"))
            assert (r.status, r.interval) == ("Accepted", 60)
            assert r.current_time.endswith("Z")
            assert (await cp.call(call.Heartbeat())).current_time.endswith("Z")
            for status in ("Available", "Preparing"):
                await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status=status, timestamp=T0))
            await cp.call(call.StatusNotification(connector_id=0, error_code="OtherError", status="Faulted",
                                                  info="relay", vendor_error_code="E12"))

            answers = {t: (await cp.call(call.Authorize(id_tag=t))).id_tag_info
                       for t in ("CARD1", "BLOCKED1", "OLD1", "KID1", "NOBODY")}
            assert answers["CARD1"] == {"status": "Accepted"}
            assert answers["BLOCKED1"]["status"] == "Blocked"
            assert answers["OLD1"]["status"] == "Expired"
            assert answers["KID1"] == {"status": "Accepted", "parent_id_tag": "FAMILY",  # the client's snake_case
                                       "expiry_date": "2099-01-01T00:00:00Z"}
            assert answers["NOBODY"] == {"status": "Invalid"}
            sent = c.frames(cp="CP1", direction="out")[-2]["frame"]  # on the wire: camelCase
            assert sent[2] == {"idTagInfo": {"status": "Accepted", "parentIdTag": "FAMILY",
                                             "expiryDate": "2099-01-01T00:00:00Z"}}

            charging = asyncio.create_task(c.wait_for("CP1", "StatusNotification", {"status": "Charging"}, timeout=5))
            start = call.StartTransaction(connector_id=1, id_tag="CARD1", meter_start=1000, timestamp=T0)
            s = await cp.call(start)
            assert s.id_tag_info == {"status": "Accepted"}
            tid = s.transaction_id
            assert (await cp.call(start)).transaction_id == tid  # a retry whose answer was lost: same id
            await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"))
            assert (await charging)["connectorId"] == 1
            await cp.call(call.MeterValues(connector_id=1, transaction_id=tid, meter_value=[{
                "timestamp": T1, "sampled_value": [
                    {"value": "1.5", "unit": "kWh", "measurand": "Energy.Active.Import.Register"},
                    {"value": "15.9", "measurand": "Current.Import", "phase": "L1", "unit": "A",
                     "context": "Sample.Periodic"}]}]))
            assert c.sessions()[0]["energy_wh"] == 500  # an open session: energy so far
            stop = await cp.call(call.StopTransaction(
                meter_stop=2500, timestamp=T2, transaction_id=tid, reason="EVDisconnected", id_tag="CARD1",
                transaction_data=[{"timestamp": T2, "sampled_value": [{"value": "2500", "context": "Transaction.End"}]}]))
            assert stop.id_tag_info == {"status": "Accepted"}
            await cp.call(call.StopTransaction(meter_stop=10, timestamp=T2, transaction_id=-1))  # errata 3.18
            await cp.call(call.DataTransfer(vendor_id="org.example", message_id="hi", data="x"))
            await cp.call(call.DiagnosticsStatusNotification(status="Uploaded"))
            await cp.call(call.FirmwareStatusNotification(status="Installed"))

            # The control API: status, sessions, frames, wait.
            code, st = await api(c, "GET", "/status/CP1")
            assert code == 200 and st["connected"] and st["boot"]["vendor"] == "OpenEVSE"
            assert st["connectors"]["1"]["status"] == "Charging" and st["connectors"]["0"]["error_code"] == "OtherError"
            assert st["invalid_frames"] == 0
            code, ss = await api(c, "GET", "/sessions?cp=CP1")
            assert code == 200 and ss["sessions"][0]["energy_wh"] == 1500
            code, one = await api(c, "GET", "/sessions/%d" % tid)
            assert code == 200 and len(one["meter_values"]) == 3
            code, w = await api(c, "GET", '/wait?cp=CP1&action=StatusNotification&match={"status":"Faulted"}&timeout=1')
            assert code == 200 and w["frame"][3]["vendorErrorCode"] == "E12"
            code, w = await api(c, "GET", '/wait?cp=CP1&action=StatusNotification&match={"status":"Reserved"}&timeout=0.2')
            assert code == 504

        assert c.invalid_frames() == []
        return tid


def test_session_is_stored(tmp_path):
    db = str(tmp_path / "csms.db")
    tid = asyncio.run(_session(db))
    store = csms.Store(db)
    boots = store.boots("CP1")
    assert len(boots) == 1 and boots[0]["status"] == "Accepted" and boots[0]["firmware"] == "0.1.0"
    hist = store.status_history("CP1")
    assert [(h["connector"], h["status"], h["error_code"]) for h in hist] == [
        (1, "Available", "NoError"), (1, "Preparing", "NoError"), (0, "Faulted", "OtherError"),
        (1, "Charging", "NoError")]
    assert hist[0]["timestamp"] == T0 and hist[2]["vendor_error_code"] == "E12" and hist[0]["time"]
    s = store.sessions("CP1")
    assert len(s) == 2
    t = s[0]
    assert (t["id"], t["connector"], t["id_tag"], t["meter_start"], t["meter_stop"]) == (tid, 1, "CARD1", 1000, 2500)
    assert (t["start_time"], t["stop_time"], t["reason"], t["energy_wh"]) == (T0, T2, "EVDisconnected", 1500)
    assert t["start_count"] == 2 and t["stop_count"] == 1 and t["transaction_data"][0]["timestamp"] == T2
    assert s[1]["reported_id"] == -1 and s[1]["meter_stop"] == 10
    mv = store.meter_value_rows(transaction_id=tid)
    assert [(m["value"], m["measurand"], m["phase"], m["unit"], m["context"], m["source"]) for m in mv] == [
        ("1.5", "Energy.Active.Import.Register", None, "kWh", "Sample.Periodic", "MeterValues"),
        ("15.9", "Current.Import", "L1", "A", "Sample.Periodic", "MeterValues"),
        ("2500", "Energy.Active.Import.Register", None, "Wh", "Transaction.End", "StopTransaction")]
    frames = store.frames(cp="CP1")
    assert {f["direction"] for f in frames} == {"in", "out"} and all(f["valid"] for f in frames)
    ins = [f for f in frames if f["direction"] == "in"]
    outs = [f for f in frames if f["direction"] == "out"]
    assert len(ins) == len(outs)  # every call answered
    assert ins[0]["action"] == "BootNotification" and outs[0]["unique_id"] == ins[0]["unique_id"]
    assert outs[0]["action"] == "BootNotification" and outs[0]["type"] == 3
    store.close()

    r = run_cli("sessions", "--db", db)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("CP1") and " CARD1 " in x][0]
    for word in (str(tid), T0, T2, "1500", "EVDisconnected"):
        assert word in line
    assert "2 sessions" in r.stdout
    r = run_cli("sessions", "--db", db, "--json")
    assert json.loads(r.stdout)[0]["energy_wh"] == 1500
    r = run_cli("frames", "--db", db, "--invalid")
    assert r.returncode == 0 and "all" in r.stderr and "frames valid" in r.stderr


async def _commands(db):
    async with csms.Csms(port=0, db=db) as c:
        async with charge_point(c.url) as cp:
            await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            for action, (payload, _answer) in COMMANDS.items():
                code, answer = await api(c, "POST", "/command", {"cp": "CP1", "action": action, "payload": payload})
                assert code == 200, (action, answer)
                assert "result" in answer and answer["valid"], (action, answer)
                assert cp.received[-1] == (action, payload)  # arrived as sent, and the client's schema check passed
            code, answer = await api(c, "POST", "/command", {"action": "GetConfiguration"})  # the only one connected
            assert code == 200 and answer["result"]["configurationKey"][0]["value"] == "60"
            assert (await api(c, "POST", "/command", {"action": "DataTransfer", "payload": {"vendorId": "x"}}))[1][
                "result"] == {"status": "Accepted", "data": "pong"}
            assert (await c.send("CP1", "GetLocalListVersion"))["result"] == {"listVersion": 3}

            # Bad requests change nothing and say why.
            n = len(cp.received)
            code, e = await api(c, "POST", "/command", {"cp": "CP1", "action": "Reset", "payload": {"type": "Warm"}})
            assert code == 400 and "Warm" in e["error"]
            code, e = await api(c, "POST", "/command", {"cp": "CP1", "action": "Dance"})
            assert code == 400 and "unknown command" in e["error"]
            code, e = await api(c, "POST", "/command", {"cp": "CP9", "action": "Reset", "payload": {"type": "Soft"}})
            assert code == 404 and "CP9" in e["error"]
            assert len(cp.received) == n
            # ... unless asked to send it anyway: the charge point's ocpp package answers with a CallError.
            code, e = await api(c, "POST", "/command", {"cp": "CP1", "action": "Reset", "payload": {"type": "Warm"},
                                                        "validate": False})
            assert code == 200 and e["error"]["code"] in ("FormatViolation", "FormationViolation")
            assert [f["action"] for f in c.invalid_frames()] == ["Reset"]  # ours, flagged too

            # The command line goes through the same API.
            mark = c.mark()
            p = await asyncio.create_subprocess_exec(
                sys.executable, CSMS, "send", "CP1", "UnlockConnector", '{"connectorId": 1}', "--control",
                c.control_url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await p.communicate()
            assert p.returncode == 0, err
            assert json.loads(out)["result"] == {"status": "Unlocked"}
            assert cp.received[-1] == ("UnlockConnector", {"connectorId": 1})
            code, fr = await api(c, "GET", "/frames?cp=CP1&action=UnlockConnector&direction=out&since=%d" % mark)
            assert code == 200 and fr["count"] == 1 and fr["frames"][0]["valid"]


def test_every_command_reaches_the_charge_point(tmp_path):
    assert REQUIRED_COMMANDS <= set(COMMANDS) <= set(csms.COMMANDS)
    asyncio.run(_commands(str(tmp_path / "csms.db")))


async def _invalid(db):
    async with csms.Csms(port=0, db=db) as c:
        async with charge_point(c.url) as cp:
            await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            with pytest.raises(OCPPError) as e:
                await cp.call(call.StatusNotification(connector_id=1, error_code="Bogus", status="Available"),
                              skip_schema_validation=True, suppress=False)
            assert e.value.code in ("FormatViolation", "FormationViolation")
            with pytest.raises(OCPPError):  # a date-time that is not RFC 3339
                await cp.call(call.StartTransaction(connector_id=1, id_tag="CARD1", meter_start=0,
                                                    timestamp="2026-03-01 10:00"), suppress=False)
        bad = c.invalid_frames(direction="in")
        assert [f["action"] for f in bad] == ["StatusNotification", "StartTransaction"]
        assert "Bogus" in bad[0]["error"] and "RFC 3339" in bad[1]["error"]
        assert c.status_history("CP1") == []  # refused, not stored
        code, fr = await api(c, "GET", "/frames?invalid=1")
        assert code == 200 and fr["count"] == 2 and not fr["frames"][0]["valid"]

        # Raw frames the ocpp package cannot parse are recorded and, where they have an id, answered.
        async with connect(c.url + "/CP2", subprotocols=["ocpp1.6"]) as ws:
            await ws.send('[2,"m1","Heartbeat"]')
            reply = json.loads(await ws.recv())
            assert reply[:3] == [4, "m1", "ProtocolError"]
            await ws.send("not json")
            await ws.send('[2,"%s","Heartbeat",{}]' % ("x" * 37))
            reply = json.loads(await ws.recv())
            assert reply[0] == 4 and reply[2] == "TypeConstraintViolation"  # ids are at most 36 characters
        assert len(c.invalid_frames("CP2")) == 3
    r = run_cli("frames", "--db", db, "--invalid")
    assert r.returncode == 1 and "5 of" in r.stderr and "INVALID: FormatViolation" in r.stdout


def test_invalid_frames_are_recorded(tmp_path):
    asyncio.run(_invalid(str(tmp_path / "csms.db")))


async def _access(db):
    async with csms.Csms(port=0, db=db, passwords={"CP1": "0123456789abcdef"}) as c:
        for kw in ({"password": "wrong"}, {}, {"password": "0123456789abcdef", "user": "CP2"}):
            with pytest.raises(websockets.InvalidStatus) as e:
                async with charge_point(c.url, **kw):
                    pass
            assert e.value.response.status_code == 401
        async with charge_point(c.url, password="0123456789abcdef") as cp:
            r = await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            assert r.status == "Accepted"
        async with charge_point(c.url, cp_id="OPEN1") as cp:  # no password set: open (security profile 0)
            await cp.call(call.Heartbeat())
        c.change_settings({"authRequired": True})
        with pytest.raises(websockets.InvalidStatus):
            async with charge_point(c.url, cp_id="OPEN1"):
                pass

        # The subprotocol: handshake without one, then closed at once (OCPP-J 3.1).
        for offered in ([], ["ocpp2.0.1"]):
            async with connect(c.url + "/CP1", subprotocols=offered or None, additional_headers={
                    "Authorization": "Basic " + base64.b64encode(b"CP1:0123456789abcdef").decode()}) as ws:
                assert ws.subprotocol is None
                with pytest.raises(websockets.ConnectionClosed) as e:
                    await ws.recv()
                assert e.value.rcvd.code == 1002
        events = [(x["cp"], x["event"]) for x in c.store.connections()]
        assert events.count(("CP1", "refused")) == 5 and ("CP1", "connected") in events

        # Boot answers and intervals can be changed while running.
        c.change_settings({"authRequired": False})
        code, st = await api(c, "POST", "/settings", {"bootAnswer": "Pending", "heartbeat": 5})
        assert code == 200 and st["bootAnswer"] == "Pending"
        code, st = await api(c, "POST", "/settings", {"bootAnswer": "Maybe"})
        assert code == 400 and "Maybe" in st["error"]
        async with charge_point(c.url, cp_id="CP3") as cp:
            r = await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            assert (r.status, r.interval) == ("Pending", 5)
            c.boot_answer = "Rejected"
            assert (await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))).status == \
                "Rejected"
        code, t = await api(c, "POST", "/tokens", {"idTag": "NEW1", "status": "Blocked"})
        assert code == 200 and {"id_tag": "NEW1", "status": "Blocked", "parent_id_tag": None,
                                "expiry_date": None} in t["tokens"]
        assert (await api(c, "POST", "/tokens", {"idTag": "X" * 21}))[0] == 400
        assert (await api(c, "DELETE", "/tokens/NEW1"))[0] == 200
        assert (await api(c, "GET", "/nothing"))[0] == 404
        assert c.invalid_frames() == []


def test_access_subprotocol_and_settings(tmp_path):
    asyncio.run(_access(str(tmp_path / "csms.db")))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls(tmp_path):
    import ssl
    cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    ctx = ssl.create_default_context(cafile=cert)

    async def run():
        async with csms.Csms(port=0, db=str(tmp_path / "csms.db"), tls_cert=cert, tls_key=key) as c:
            assert c.url.startswith("wss://")
            async with charge_point(c.url, ssl_ctx=ctx) as cp:
                r = await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
                assert r.status == "Accepted"
    asyncio.run(run())


def test_library_in_a_thread(tmp_path):
    with csms.CsmsThread(port=0, db=str(tmp_path / "csms.db"), tokens=["CARD1"]) as c:
        assert c.port and c.control_url.startswith("http://127.0.0.1:")

        async def client():
            async with charge_point(c.url) as cp:
                await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
                await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
                assert c.connected() == ["CP1"]
        asyncio.run(client())
        assert c.wait_for("CP1", "StatusNotification", {"status": "Available"}, timeout=2)["connectorId"] == 1
        with pytest.raises(asyncio.TimeoutError):
            c.wait_for("CP1", "StatusNotification", {"status": "Charging"}, timeout=0.1)
        c.wait_disconnected("CP1", timeout=5)
        assert c.status("CP1")["connected"] is False
        assert c.invalid_frames() == []


def test_serve_command(tmp_path):
    db = str(tmp_path / "csms.db")
    p = subprocess.Popen([sys.executable, CSMS, "serve", "--port", "0", "--control-port", "0", "--db", db,
                          "--heartbeat", "42"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = p.stdout.readline()
        assert "csms: charge points connect to ws://127.0.0.1:" in line, line + p.stderr.read()
        url = line.split("connect to ")[1].split("/CHARGEBOXID")[0]
        control = line.split("control API ")[1].split(";")[0]

        async def client():
            async with charge_point(url, cp_id="CP 7") as cp:  # percent-encoded in the path
                r = await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
                assert r.interval == 42
        asyncio.run(client())
        code, st = http_json("GET", control + "/status/CP%207")
        assert code == 200 and st["boot"]["status"] == "Accepted"
    finally:
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=10)
    assert p.returncode == 0, err
    assert "CP 7 >> [2," in out and "csms: stopped" in out


@pytest.mark.parametrize("args,words", [
    (["serve", "--boot-answer", "Maybe"], ["--boot-answer", "Maybe"]),
    (["serve", "--port", "70000"], ["--port", "70000"]),
    (["serve", "--heartbeat", "0"], ["--heartbeat", "above 0"]),
    (["serve", "--tls-cert", "/no/such.pem", "--tls-key", "/no/such.key"], ["no such file"]),
    (["serve", "--tls-cert", __file__], ["go together"]),
    (["serve", "--password", "CP1"], ["CHARGEBOXID=PASSWORD"]),
    (["send", "CP1", "Dance", "{}"], ["unknown command", "Dance"]),
    (["send", "CP1", "Reset", "{bad"], ["not valid JSON"]),
    (["send", "CP1", "Reset", "[1]"], ["JSON object"]),
    (["send", "CP1", "Reset", '{"type": "Warm"}'], ["Reset payload not valid", "Warm"]),
    (["sessions", "--db", "/no/such/csms.db"], ["no such database"]),
    (["token", "CARD1", "--expiry", "tomorrow"], ["expiryDate", "tomorrow"]),
    (["frobnicate"], ["invalid choice"]),
    ([], ["COMMAND"]),
])
def test_bad_command_line_exits_2(args, words, capsys, tmp_path):
    if args[:1] == ["token"]:
        args = args + ["--db", str(tmp_path / "t.db")]
    with pytest.raises(SystemExit) as e:
        csms.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    for w in words:
        assert w in err


def test_bad_command_line_from_the_shell(tmp_path):
    r = run_cli("send", "CP1", "Reset", "{bad")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    r = run_cli("send", "CP1", "Reset", '{"type": "Soft"}', "--control", "http://127.0.0.1:9")
    assert r.returncode == 1 and "cannot reach the control API" in r.stderr
    db = str(tmp_path / "t.db")
    assert run_cli("token", "CARD7", "--status", "Blocked", "--db", db).returncode == 0
    r = run_cli("tokens", "--db", db)
    assert "CARD7" in r.stdout and "Blocked" in r.stdout
