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
                # a raw frame from synchronous code: the ocpp package's charge point rejects the Warm reset
                r = await asyncio.to_thread(c.send_raw, "CP1", '[2,"t1","Reset",{"type":"Warm"}]', 5)
                assert json.loads(r["answer"])[:2] == [4, "t1"] and not r["valid"]
        asyncio.run(client())
        assert c.wait_for("CP1", "StatusNotification", {"status": "Available"}, timeout=2)["connectorId"] == 1
        with pytest.raises(asyncio.TimeoutError):
            c.wait_for("CP1", "StatusNotification", {"status": "Charging"}, timeout=0.1)
        c.wait_disconnected("CP1", timeout=5)
        assert c.status("CP1")["connected"] is False
        assert [f["unique_id"] for f in c.invalid_frames()] == ["t1"]  # ours; the answer was right
        assert c.status_violations() == []


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


# ---------------------------------------------------------------------------------------------- raw frames

async def _fake_cp(ws, slow_ids=()):
    """A charge point made with the bare websockets client: a CallError for any frame it cannot take,
    a CallResult for a well-formed Reset or for the uniqueId "lenient" (what a sloppy charger does),
    the answer to the ids in `slow_ids` half a second late, and nothing at all for uniqueId "mute"."""
    async for msg in ws:
        if isinstance(msg, bytes):
            await ws.send('[4,"-1","ProtocolError","binary frames are not OCPP-J",{}]')
            continue
        try:
            frame = json.loads(msg)
        except ValueError:
            await ws.send('[4,"-1","ProtocolError","not JSON",{}]')
            continue
        if not isinstance(frame, list) or len(frame) < 2 or frame[0] != 2:
            continue  # an answer to nothing of ours: ignored
        uid = frame[1]
        if uid == "mute":
            continue
        if uid == "lenient" or (len(frame) == 4 and frame[2] == "Reset" and
                                frame[3] in ({"type": "Soft"}, {"type": "Hard"})):
            reply = [3, uid, {"status": "Accepted"}]
        else:
            reply = [4, uid, "FormationViolation", "malformed Call", {}]
        if uid in slow_ids:
            async def later(reply=reply):
                await asyncio.sleep(0.5)
                await ws.send(json.dumps(reply))
            asyncio.ensure_future(later())
        else:
            await ws.send(json.dumps(reply))


async def _raw(db):
    async with csms.Csms(port=0, db=db) as c:
        async with connect(c.url + "/FUZZ1", subprotocols=["ocpp1.6"]) as ws:
            task = asyncio.create_task(_fake_cp(ws, slow_ids=("slow1",)))
            await c.wait_connected("FUZZ1", timeout=5)

            # A malformed Call: sent as it is, flagged on our side, the charge point's CallError comes back.
            text = '[2,"m1","Reset",{"type":"Warm"}]'
            r = await c.send_raw("FUZZ1", text, timeout=5)
            assert json.loads(r["answer"]) == [4, "m1", "FormationViolation", "malformed Call", {}]
            assert r["uniqueId"] == "m1" and not r["valid"] and "Warm" in r["error"]
            assert [(f["direction"], f["payload"], f["valid"]) for f in r["frames"]] == [
                ("out", text, False), ("in", r["answer"], True)]  # a CallError is the right answer
            # A frame with too few elements, and one whose action is a charge point's message.
            r = await c.send_raw("FUZZ1", '[2,"m2","Heartbeat"]')
            assert json.loads(r["answer"])[:3] == [4, "m2", "FormationViolation"]
            assert r["error"].startswith("ProtocolError")
            r = await c.send_raw("FUZZ1", '[2,"m3","Heartbeat",{}]')
            assert r["error"].startswith("NotSupported") and json.loads(r["answer"])[1] == "m3"
            # A well-formed command sent raw: its answer is checked against the schema.
            r = await c.send_raw("FUZZ1", '[2,"ok1","Reset",{"type":"Soft"}]')
            assert r["valid"] and json.loads(r["answer"]) == [3, "ok1", {"status": "Accepted"}]
            assert r["frames"][-1]["valid"] and r["frames"][-1]["action"] == "Reset"
            # A charger that accepts a malformed Call is flagged.
            r = await c.send_raw("FUZZ1", '[2,"lenient","Reset",{"type":"Warm"}]')
            assert r["frames"][-1]["valid"] is False and "a CallError was due" in r["frames"][-1]["error"]
            # Not JSON at all: no uniqueId, so the first answer to no call of ours is the answer.
            r = await c.send_raw("FUZZ1", "{{{ not json")
            assert r["uniqueId"] is None and r["error"].startswith("FormatViolation")
            assert json.loads(r["answer"])[:3] == [4, "-1", "ProtocolError"]
            # Binary.
            r = await c.send_raw("FUZZ1", b"\x00\xffbin")
            assert "binary" in r["error"] and json.loads(r["answer"])[3] == "binary frames are not OCPP-J"
            # No answer: None after the timeout.
            r = await c.send_raw("FUZZ1", '[2,"mute","Reset",{"type":"Soft"}]', timeout=0.2)
            assert r["answer"] is None and [f["direction"] for f in r["frames"]] == ["out"]

            # A late answer to a raw frame does not disturb the ocpp package's bookkeeping: the command
            # sent meanwhile gets its own answer, and so does the next one.
            r = await c.send_raw("FUZZ1", '[2,"slow1","Reset",{"type":"Soft"}]', timeout=0.1)
            assert r["answer"] is None
            a = await c.send("FUZZ1", "Reset", {"type": "Hard"}, timeout=3)
            assert a["result"] == {"status": "Accepted"} and a["valid"]
            for _ in range(500):  # the late answer comes half a second after the raw frame
                late = c.frames(cp="FUZZ1", direction="in")[-1]
                if late["unique_id"] == "slow1":
                    break
                await asyncio.sleep(0.01)
            assert late["unique_id"] == "slow1" and late["valid"]
            a = await c.send("FUZZ1", "Reset", {"type": "Soft"}, timeout=3)
            assert a["result"] == {"status": "Accepted"} and a["uniqueId"] != "slow1"
            assert c.links["FUZZ1"]._response_queue.empty()

            # The control API.
            code, r = await api(c, "POST", "/raw", {"cp": "FUZZ1", "text": '[2,"api1","Reset",{}]', "timeout": 5})
            assert code == 200 and json.loads(r["answer"])[:2] == [4, "api1"] and r["frames"][0]["direction"] == "out"
            code, r = await api(c, "POST", "/raw", {"text": '[2,"api2","Reset",{"type":"Soft"}]'})  # the only one
            assert code == 200 and json.loads(r["answer"]) == [3, "api2", {"status": "Accepted"}]
            code, r = await api(c, "POST", "/raw", {"cp": "FUZZ1", "binary": base64.b64encode(b"\x01\x02").decode()})
            assert code == 200 and json.loads(r["answer"])[0] == 4
            for body, want in (({"cp": "FUZZ1"}, "exactly one"), ({"cp": "FUZZ1", "text": "x", "binary": "AA=="},
                                                                  "exactly one"),
                               ({"cp": "FUZZ1", "binary": "***"}, "base64"), ({"cp": "FUZZ1", "text": 5}, "string"),
                               ({"cp": "FUZZ1", "text": "x", "timeout": 0}, "timeout"),
                               ({"cp": "FUZZ1", "text": "x", "extra": 1}, "unknown fields")):
                code, e = await api(c, "POST", "/raw", body)
                assert code == 400 and want in e["error"], (body, e)
            code, e = await api(c, "POST", "/raw", {"cp": "NOPE", "text": "[]"})
            assert code == 404 and "NOPE" in e["error"]

            # The command line.
            p = await asyncio.create_subprocess_exec(
                sys.executable, CSMS, "raw", "FUZZ1", '[2,"cli1","Reset",{"type":"Warm"}]', "--control",
                c.control_url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await p.communicate()
            assert p.returncode == 0, err
            assert json.loads(json.loads(out)["answer"])[:3] == [4, "cli1", "FormationViolation"]
            p = await asyncio.create_subprocess_exec(
                sys.executable, CSMS, "raw", "FUZZ1", '[2,"mute","Reset",{"type":"Soft"}]', "--timeout", "0.2",
                "--control", c.control_url, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await p.communicate()
            assert p.returncode == 1 and b"no answer" in err
            task.cancel()
        with pytest.raises(csms.NotConnected):
            await c.send_raw("FUZZ1", "[]")
        # Our own malformed frames are on record as such; the charge point's answers were all right but one.
        bad_in = c.invalid_frames(direction="in")
        assert [f["unique_id"] for f in bad_in] == ["lenient"]
        assert len(c.invalid_frames(direction="out")) >= 8


def test_raw_frames(tmp_path):
    asyncio.run(_raw(str(tmp_path / "csms.db")))


# ---------------------------------------------------------------------------------------------- status transitions

def _history(*steps, cp="CP1"):
    """Status rows from steps: "Status" (connector 1), (connector, "Status") or "BOOT" (a new epoch)."""
    rows, epoch = [], 0
    for i, s in enumerate(steps):
        if s == "BOOT":
            epoch += 1
            continue
        conn, status = (1, s) if isinstance(s, str) else s
        rows.append({"id": i + 1, "cp": cp, "connector": conn, "status": status, "epoch": "e%d" % epoch,
                     "time": "t%d" % i, "timestamp": None})
    return rows


def _bad(*steps):
    return [(v["connector"], v["from"], v["to"]) for v in csms.status_transition_violations(_history(*steps))]


def test_status_table_is_the_spec():
    codes = {to: code for frm in csms.STATUS_TRANSITIONS.values() for to, code in frm.items()}
    order = ["Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing", "Reserved",
             "Unavailable", "Faulted"]
    assert set(codes) == set(order)
    for i, frm in enumerate(order):
        for to, code in csms.STATUS_TRANSITIONS[frm].items():
            assert code == "ABCDEFGHI"[i] + str(order.index(to) + 1)
    cells = sorted(c for frm in csms.STATUS_TRANSITIONS.values() for c in frm.values())
    assert cells == sorted("A2 A3 A4 A5 A7 A8 A9 B1 B3 B4 B5 B6 B9 C1 C4 C5 C6 C8 C9 D1 D3 D5 D6 D8 D9 "
                           "E1 E3 E4 E6 E8 E9 F1 F2 F8 F9 G1 G2 G8 G9 H1 H2 H3 H4 H5 H9 "
                           "I1 I2 I3 I4 I5 I6 I7 I8".split())


def test_status_transitions_valid_histories():
    session = ["Available", "Preparing", "Charging", "SuspendedEV", "Charging", "SuspendedEVSE", "SuspendedEV",
               "Charging", "Finishing", "Available"]
    assert _bad(*session) == []
    assert _bad("Available", "Preparing", "Finishing", "Preparing", "Available") == []  # B6 (errata 3.20), F2
    assert _bad("Available", "Reserved", "Preparing", "Charging", "Unavailable", "Available") == []  # G2, C8, H1
    assert _bad("Available", "Available", "Preparing", "Preparing") == []  # repeats are no transition
    # Faulted from anywhere, back to the state before it, or on to where that state may go.
    assert _bad("Charging", "Faulted", "Charging") == []
    assert _bad("Charging", "Faulted", "Faulted", "Finishing", "Available") == []  # C6 after the fault
    assert _bad("Preparing", "Faulted", "Available") == []  # B1
    assert _bad("Faulted", "Charging") == []  # no state known before the fault
    # The first status after each boot / connection may be anything.
    assert _bad("Charging", "BOOT", "Preparing", "BOOT", "Finishing") == []
    # Connectors are separate; connector 0 has Available, Unavailable and Faulted.
    assert _bad((1, "Charging"), (2, "Available"), (0, "Available"), (0, "Unavailable"), (0, "Faulted"),
                (0, "Unavailable"), (2, "Preparing"), (1, "Finishing")) == []


def test_status_transitions_invalid_histories():
    assert _bad("Available", "Finishing") == [(1, "Available", "Finishing")]  # no A6
    assert _bad("Charging", "Preparing") == [(1, "Charging", "Preparing")]  # no C2
    assert _bad("Finishing", "Charging") == [(1, "Finishing", "Charging")]  # no F3
    assert _bad("Reserved", "Charging") == [(1, "Reserved", "Charging")]  # no G3
    assert _bad("Unavailable", "Finishing") == [(1, "Unavailable", "Finishing")]
    # A fault ends where neither the pre-fault state nor a change from it leads.
    assert _bad("Charging", "Faulted", "Reserved") == [(1, "Faulted", "Reserved")]
    assert _bad("Finishing", "Faulted", "Faulted", "Charging") == [(1, "Faulted", "Charging")]
    # The boot resets only what comes after it.
    assert _bad("Available", "Finishing", "BOOT", "Charging", "Preparing") == [
        (1, "Available", "Finishing"), (1, "Charging", "Preparing")]
    # Connector 0: only three statuses, even as its first.
    assert _bad((0, "Charging"), (0, "Available")) == [(0, None, "Charging")]
    # Per connector: connector 2's history does not excuse connector 1.
    assert _bad((1, "Available"), (2, "Preparing"), (1, "Charging"), (2, "Finishing")) == []
    assert _bad((2, "Charging"), (1, "Available"), (2, "Available"), (1, "SuspendedEV"), (2, "Finishing")) == [
        (2, "Available", "Finishing")]
    v = csms.status_transition_violations(_history("Charging", "Preparing"))[0]
    assert set(v) >= {"cp", "connector", "from", "to", "at"} and v["at"] == "t1" and "4.9" in v["why"]


async def _statuses(db):
    async with csms.Csms(port=0, db=db) as c:
        def sn(conn, status):
            return call.StatusNotification(connector_id=conn, error_code="NoError", status=status)

        async with charge_point(c.url) as cp:
            await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            for conn, st in ((0, "Available"), (1, "Available"), (1, "Preparing"), (1, "Charging"),
                             (1, "Faulted"), (1, "Charging"), (1, "SuspendedEV")):
                await cp.call(sn(conn, st))
            assert c.status_violations() == []
            await cp.call(sn(1, "Preparing"))  # SuspendedEV -> Preparing: no D2
            # A reboot: the first status may be anything again.
            await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
            await cp.call(sn(1, "Finishing"))
            await cp.call(sn(1, "Available"))
        async with charge_point(c.url) as cp:  # a new connection without a boot: the same
            await cp.call(sn(1, "Charging"))
            await cp.call(sn(0, "Preparing"))  # not for connector 0
        v = c.status_violations()
        assert [(x["cp"], x["connector"], x["from"], x["to"]) for x in v] == [
            ("CP1", 1, "SuspendedEV", "Preparing"), ("CP1", 0, None, "Preparing")]
        code, r = await api(c, "GET", "/violations")
        assert code == 200 and r["count"] == 2 and r["violations"][0]["to"] == "Preparing"
        code, r = await api(c, "GET", "/violations?cp=CP9")
        assert code == 200 and r == {"count": 0, "violations": []}


def test_status_transitions_recorded(tmp_path, capsys):
    db = str(tmp_path / "csms.db")
    asyncio.run(_statuses(db))

    def cli(*args):
        code = csms.main(["statuses", "--db"] + list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = cli(db)
    assert code == 0 and out.count("NOT ALLOWED") == 2 and "SuspendedEV -> Preparing" in out
    assert out.count("(after boot/connect)") == 3
    code, out, err = cli(db, "--check")
    assert code == 1 and "2 of 12 status changes not allowed" in err
    code, out, err = cli(db, "--check", "--cp", "CP2")
    assert code == 0 and "all 0 statuses" in err
    code, out, err = cli(db, "--json")
    j = json.loads(out)
    assert len(j["history"]) == 12 and len(j["violations"]) == 2

    # A database from before the check (no epoch column) is migrated when opened.
    import sqlite3
    old = str(tmp_path / "old.db")
    con = sqlite3.connect(old)
    con.executescript(csms.SCHEMA)  # the tables as they were: status_history gets its epoch column later
    assert "epoch" not in [x[1] for x in con.execute("PRAGMA table_info(status_history)")]
    con.execute("INSERT INTO status_history (time, cp, connector, status) VALUES ('t', 'CP1', 1, 'Available')")
    con.execute("INSERT INTO status_history (time, cp, connector, status) VALUES ('t', 'CP1', 1, 'Finishing')")
    con.commit()
    con.close()
    code, out, err = cli(old, "--check")
    assert code == 1 and "1 of 2" in err
    r = run_cli("statuses", "--db", old, "--check")  # and from the shell
    assert r.returncode == 1 and "Available -> Finishing" in r.stdout


def test_raw_answer_with_an_odd_unique_id(tmp_path):
    async def run():
        async with csms.Csms(port=0, db=str(tmp_path / "csms.db")) as c:
            async with connect(c.url + "/ODD", subprotocols=["ocpp1.6"]) as ws:
                await c.wait_connected("ODD", timeout=5)

                async def answer():
                    msg = json.loads(await ws.recv())
                    await ws.send(json.dumps([4, msg[1], "FormationViolation", "ids are strings", {}]))
                    await ws.send('[3,[1],{}]')  # garbage of the charge point's own: recorded, no crash
                task = asyncio.create_task(answer())
                r = await c.send_raw("ODD", '[2,[7],"Reset",{"type":"Soft"}]')
                assert r["uniqueId"] == [7] and json.loads(r["answer"])[1] == [7]
                await task
                r = await c.send_raw("ODD", "[2,7,\"Reset\",{}]", timeout=0.2)  # 7 and "7" are the same id
                assert r["answer"] is None and r["uniqueId"] == 7
                await ws.send('[4,"7","TypeConstraintViolation","ids are strings",{}]')
                await asyncio.sleep(0.05)
                assert c.frames(cp="ODD", direction="in")[-1]["frame"][1] == "7"
            await c.wait_disconnected("ODD", timeout=5)
            bad = c.invalid_frames("ODD", direction="in")  # only the charge point's garbage; echoes are fine
            assert [f["payload"] for f in bad] == ['[3,[1],{}]']
    asyncio.run(run())
