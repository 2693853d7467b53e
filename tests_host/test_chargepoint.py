"""The OCPP 1.6J charge point (firmware/ocpp/chargepoint.py) on CPython, virtual time, no network.

A whole station runs on the fake `machine` with the simulated world (car, contactor, RCD, NTC,
Modbus meter) behind the esp32-devkit board profile; `station.attach_ocpp` gives it its
ChargePoint with a fake link, and the test answers the charge point's calls like a back end
would. Every payload the charge point sends (calls and answers) is checked against
rpc.validate and the official OCPP 1.6 JSON schemas of the `ocpp` package.

Section numbers: "spec" = OCPP 1.6 edition 2, "errata" = OCPP 1.6 errata sheet v4, "J" = OCPP-J
1.6 (reference/ocpp16/*.txt).
"""
import asyncio
import functools
import json
import os
import sys

import jsonschema
import pytest

import machine
from drivers import board
from firmware import station as station_mod
from vclock import VirtualClock
from firmware.ocpp import chargepoint as cp_mod
from firmware.ocpp import boot as boot_mod
from firmware.ocpp import meter as meter_mod
from firmware.ocpp import remote as remote_mod
from firmware.ocpp import smart
from firmware.ocpp import transactions as tx_mod
from firmware.ocpp import dt
from firmware.ocpp import rpc as rpc_mod
from world.world import World

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROFILE = board.load(os.path.join(REPO, "drivers", "boards", "esp32-devkit.json"))
T0 = dt.parse("2026-03-02T08:00:00Z")  # the back end's clock when a bench starts


# ------------------------------------------------------------------------------ schemas

def _schema_dir():
    import ocpp.v16

    return os.path.join(os.path.dirname(ocpp.v16.__file__), "schemas")


_VALIDATORS = {}


def schema_errors(name, payload):
    """Messages of the official JSON schema `name` (e.g. "StatusNotification") for payload."""
    v = _VALIDATORS.get(name)
    if v is None:
        with open(os.path.join(_schema_dir(), name + ".json")) as f:
            s = json.load(f)
        v = _VALIDATORS[name] = jsonschema.validators.validator_for(s)(s)
    return [e.message for e in v.iter_errors(payload)]


def check_payload(action, kind, payload):
    """[] when payload is a valid `action` request ("req") or response ("conf")."""
    bad = []
    e = rpc_mod.validate(action, kind, payload)
    if e is not None:
        bad.append("rpc.validate: %s %s" % e)
    bad += schema_errors(action if kind == "req" else action + "Response", payload)
    return bad


# ------------------------------------------------------------------------------ the bench

class PowerCut(BaseException):
    """Raised from inside the firmware: RAM is gone at that very instruction."""


class FakeLink:
    """What ChargePoint needs of ws.Link: connected, send, recv, callbacks, start/abort."""

    def __init__(self, bench):
        self.b = bench
        self.connected = False
        self.connecting = False
        self.ping_interval_s = 60
        self.password = None
        self.on_up = self.on_down = self.on_fail = None
        self.inbox = asyncio.Queue()
        self.last_size = None  # ws.Link: the real length of the message recv() returned
        self.ws = None
        self.started = False
        self.aborted = False
        self.yield_in_send = False  # a send that suspends, like a WebSocket write + drain
        self.answer_ms = 0  # virtual time an answer frame takes to write (a slow socket)
        self.fail_next_send = None  # an exception the next send raises (connection lost)
        self.reconnects = []  # (reason, password, frames the back end had then)
        self.url = None  # ChargePoint.run sets it (from the SecurityProfile)
        self.refuse_tls = False  # a back end without TLS: every wss:// connection fails
        self.tried = []  # the URL of every connection attempt

    def start(self):
        self.started = True

    def abort(self):
        self.aborted = True
        self.connected = False

    async def reconnect(self, reason):
        """ws.Link.reconnect: down, then up again with the password as it is now."""
        self.reconnects.append((reason, self.password, len(self.b.backend.frames)))
        self.down(reason)
        self.up()

    async def send_json(self, value):
        """ws.Link.send_json: the same frame, as the link would encode it."""
        await self.send(json.dumps(value, separators=(",", ":")))

    async def send(self, text):
        if self.yield_in_send:
            await asyncio.sleep(0)
        if self.answer_ms and text.startswith("[3"):
            await self.b.clock.sleep_ms(self.answer_ms)
        if self.fail_next_send is not None:
            e, self.fail_next_send = self.fail_next_send, None
            self.down("send failed")
            raise e
        if not self.connected:
            raise ConnectionError("not connected")
        self.b.backend.receive(text)

    async def recv(self):
        return await self.inbox.get()

    def push(self, frame):
        if self.connected:
            self.inbox.put_nowait(frame if isinstance(frame, str) else json.dumps(frame))

    def up(self):
        for _ in range(10):  # ws.Link tries again after a failure, with the URL as it is then
            self.tried.append(self.url)
            if not (self.refuse_tls and self.url.startswith("wss:")):
                break
            self.on_fail("TLS handshake failed")
        else:
            return
        self.connected = True
        self.on_up()

    def down(self, reason="gone"):
        if self.connected:
            self.connected = False
            self.on_down(reason)


class Backend:
    """The Central System: answers the charge point's calls at once (unless held) and records
    every frame; payloads that fail a schema are collected in `invalid`."""

    def __init__(self, bench):
        self.b = bench
        self.frames = []  # every frame the charge point sent, decoded, in order
        self.calls = []  # (action, payload, uid) of its calls
        self.answers = {}  # uid of a back-end call -> the charge point's answer frame
        self.cs_actions = {}  # uid of a back-end call -> action
        self.invalid = []
        self.hold = set()  # actions left unanswered: their calls go to `held`
        self.held = []
        self.boot = {"status": "Accepted", "interval": 300}
        self.tx_status = "Accepted"
        self.authorize_status = "Accepted"
        self.errors = {}  # action -> CallError code to answer with
        self.next_tid = 1000
        self.time_shift = 0  # seconds added to the back end's clock
        self.id_tags = {}  # idTag -> the idTagInfo the back end answers for it

    def epoch(self):
        return T0 + self.b.T // 1000 + self.time_shift

    def receive(self, text):
        m = json.loads(text)
        self.frames.append(m)
        if m[0] == 2:
            uid, action, p = m[1], m[2], m[3]
            for e in check_payload(action, "req", p):
                self.invalid.append((action, e, p))
            self.calls.append((action, p, uid))
            if action in self.hold:
                self.held.append((uid, action, p))
            elif action in self.errors:
                self.b.link.push([4, uid, self.errors[action], "refused by the test", {}])
            else:
                self.b.link.push([3, uid, self.respond(action, p)])
        else:
            self.answers[m[1]] = m
            action = self.cs_actions.get(m[1])
            if m[0] == 3 and action is not None:
                for e in check_payload(action, "conf", m[2]):
                    self.invalid.append((action + ".conf", e, m[2]))

    def respond(self, action, p):
        now = dt.iso(self.epoch())
        if action == "BootNotification":
            r = {"currentTime": now}
            r.update(self.boot)
            return r
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "StartTransaction":
            self.next_tid += 1
            return {"transactionId": self.next_tid,
                    "idTagInfo": self.id_tags.get(p["idTag"], {"status": self.tx_status})}
        if action == "Authorize":
            return {"idTagInfo": self.id_tags.get(p["idTag"], {"status": self.authorize_status})}
        if action == "DataTransfer":
            return {"status": "Accepted"}
        return {}

    def answer_held(self, i=0, payload=None):
        uid, action, p = self.held.pop(i)
        self.b.link.push([3, uid, payload if payload is not None else self.respond(action, p)])

    def sent(self, action):
        return [c[1] for c in self.calls if c[0] == action]

    def actions(self):
        return [c[0] for c in self.calls]

    def statuses(self, cid=1):
        return [(p["status"], p["errorCode"]) for a, p, _ in self.calls
                if a == "StatusNotification" and p["connectorId"] == cid]


_BENCHES = []


class Bench:
    def __init__(self, root, settings=None, profile=PROFILE, reboot=True, fs=None):
        self.root = str(root)
        # free_charging: as tools/sim.py has it; PAID turns it off (unset, a back end turns it off)
        s = {"ocpp_url": "ws://csms.test/ocpp", "charge_box_id": "CP1", "free_charging": True}
        s.update(settings or {})
        with open(os.path.join(self.root, "settings.json"), "w") as f:
            json.dump(s, f)
        self.T = 0
        self._next_service = 0
        self.reboots = []  # (hard, frames sent before the call)
        machine.hw_reset(keep_world=False)
        self.world = World(profile)
        self.clock = VirtualClock(0)
        hw = board.build(profile, self.clock)
        st_settings, err = station_mod.load_settings(self.root)
        assert err is None, err
        self.st = station_mod.Station(hw, profile, self.clock, self.root, st_settings, err, fs)
        self.backend = Backend(self)
        self.link = FakeLink(self)
        self.cp = station_mod.attach_ocpp(self.st, fs, self._reboot if reboot else None, self.link)
        assert self.cp is not None
        self.task = None
        self._uid = 0
        _BENCHES.append(self)

    def _reboot(self, hard):
        self.reboots.append((hard, len(self.backend.frames)))

    @classmethod
    async def start(cls, root, up=True, boot=None, profile=PROFILE, reboot=True, fs=None, **settings):
        b = cls(root, settings, profile, reboot, fs)
        if boot:
            b.backend.boot.update(boot)
        b.task = asyncio.create_task(b.cp.run())
        await b.settle()
        if up:
            await b.up()
        return b

    async def up(self):
        self.link.up()
        await self.run(200)

    async def down(self):
        self.link.down()
        await self.settle()

    def halt(self):
        """The power goes: the link's tasks end, RAM (this bench) is forgotten."""
        if self.task is not None:
            self.task.cancel()  # ChargePoint.run ends its tasks and drops the connection
            self.task = None

    async def settle(self):
        loop = asyncio.get_running_loop()
        for _ in range(5000):
            await asyncio.sleep(0)
            if not loop._ready:  # nothing left to run until time moves or a frame arrives
                return

    async def run(self, ms, step=10):
        """Time passes: the control tick every `step` ms, the slow task every 100 ms."""
        end = self.T + ms
        while self.T < end:
            d = min(step, end - self.T)
            self.T += d
            self.clock.advance(d)
            self.world.advance(self.T)
            machine.hw_advance_ms(d)
            self.st.tick()
            if self.T >= self._next_service:
                self._next_service = self.T + 100
                self.st.service()
            await self.settle()

    async def idle(self, ms):
        """Long stretches without transitions: 1 s steps (the world and the meter keep up)."""
        await self.run(ms, step=1000)

    async def until(self, pred, ms=10000, step=10):
        end = self.T + ms
        while not pred():
            if self.T >= end:
                return False
            await self.run(step, step)
        return True

    # -- the back end calls the charge point

    async def cs(self, action, payload):
        """A back-end call; returns the charge point's answer frame ([3, id, {..}] or [4, ...])."""
        self._uid += 1
        uid = "cs%d" % self._uid
        self.backend.cs_actions[uid] = action
        self.link.push([2, uid, action, payload])
        await self.settle()
        assert uid in self.backend.answers, "%s not answered" % action
        return self.backend.answers.pop(uid)

    async def ok(self, action, payload):
        m = await self.cs(action, payload)
        assert m[0] == 3, m
        return m[2]

    # -- the car

    def act(self, verb, *args):
        self.world.apply(verb, list(args))

    async def plug(self):
        self.act("plug", 32)
        await self.run(1500)

    async def charge(self, amps=16):
        """Plug in a car that charges at `amps`; returns once the contactor closed."""
        if not self.world.car.plugged:
            self.act("plug", 32)
            await self.run(1000)
        self.act("ev-ready", amps)
        assert await self.until(lambda: self.st.charger.contactor, 5000), self.st.charger.faults.codes()
        await self.run(300)

    async def unplug(self):
        self.act("unplug")
        await self.run(500)

    # -- what happened

    def status(self):
        return self.cp.status.connector_status()

    def ocpp_state(self):
        with open(os.path.join(self.root, cp_mod.STATE_FILE)) as f:
            return json.load(f)


def aio(fn):
    """Run an async test in a fresh event loop; afterwards every payload must have been valid."""

    @functools.wraps(fn)
    def wrapper(*args, **kw):
        async def main():
            try:
                await fn(*args, **kw)
            finally:
                benches = list(_BENCHES)
                del _BENCHES[:]
                for b in benches:
                    b.halt()
                await asyncio.sleep(0)
            for b in benches:
                assert b.backend.invalid == [], b.backend.invalid

        asyncio.run(main())

    return wrapper


PAID = {"free_charging": False}


def test_the_schema_check_is_not_vacuous():
    assert check_payload("StatusNotification", "req", {"connectorId": 1, "status": "Available",
                                                       "errorCode": "NoError"}) == []
    assert check_payload("StatusNotification", "req", {"connectorId": 1, "status": "Idle", "errorCode": "NoError"})
    assert check_payload("StartTransaction", "req", {"connectorId": 1, "idTag": "A", "meterStart": 0})
    assert check_payload("Reset", "conf", {"status": "Maybe"})


# ============================================================================== boot (spec 4.2)

@aio
async def test_boot_accepted_sets_interval_and_time_then_reports_every_connector(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    assert b.link.started and b.backend.calls == []
    await b.up()
    calls = b.backend.calls
    # 4.2: BootNotification first, with who we are (6.3: CiString lengths checked by the schema)
    assert calls[0][0] == "BootNotification"
    boot = calls[0][1]
    assert boot["chargePointVendor"] == boot_mod.VENDOR
    assert boot["chargePointModel"] == "esp32-devkit"
    assert boot["meterType"] == "sdm630"
    assert "firmwareVersion" in boot
    # errata 3.22: after Accepted, a StatusNotification for connector 0 and every connector
    assert [(c[0], c[1]["connectorId"]) for c in calls[1:3]] == [("StatusNotification", 0), ("StatusNotification", 1)]
    assert b.backend.statuses(0) == [("Available", "NoError")]
    assert b.backend.statuses(1) == [("Available", "NoError")]
    # 4.2: the heartbeat interval follows the answer's interval; the clock follows currentTime
    assert b.cp.config.get("HeartbeatInterval") == 300
    assert b.cp.accepted and b.cp.boot_status == "Accepted"
    assert b.cp.wall.synced and abs(b.cp.wall.now() - b.backend.epoch()) <= 1
    # statuses derived before the time was known are stamped with the synced time, not 1970
    for p in b.backend.sent("StatusNotification"):
        assert abs(dt.parse(p["timestamp"]) - b.backend.epoch()) <= 1
    assert len(calls) == 3  # nothing else


@aio
async def test_heartbeat_after_the_interval_of_silence_and_it_sets_the_clock(tmp_path):
    b = await Bench.start(tmp_path, boot={"interval": 120})
    n = len(b.backend.calls)
    await b.idle(110000)
    assert len(b.backend.calls) == n  # 4.6: nothing to say, not yet
    await b.idle(11000)
    assert b.backend.actions()[n:] == ["Heartbeat"]
    # 4.6: a Heartbeat.conf's currentTime synchronises the clock
    b.backend.time_shift = 5000
    await b.idle(121000)
    assert b.backend.actions()[n + 1:] == ["Heartbeat"]
    assert abs(b.cp.wall.now() - b.backend.epoch()) <= 1
    # 4.6: MAY skip the heartbeat when another message went out within the interval
    await b.idle(60000)
    await b.ok("TriggerMessage", {"requestedMessage": "StatusNotification", "connectorId": 1})
    await b.run(200)
    assert b.backend.actions()[-1] == "StatusNotification"
    k = len(b.backend.calls)
    await b.idle(100000)
    assert len(b.backend.calls) == k  # 160 s after the last heartbeat, 100 s after the status
    await b.idle(25000)
    assert b.backend.actions()[k:] == ["Heartbeat"]


@aio
async def test_heartbeat_interval_zero_in_boot_keeps_the_configured_one(tmp_path):
    # 4.2: the interval "of the response PDU"; 0 is not applied (the key's own value stays)
    b = await Bench.start(tmp_path, boot={"interval": 0})
    assert b.cp.accepted and b.cp.config.get("HeartbeatInterval") == 86400


@aio
async def test_boot_pending_answers_calls_but_sends_nothing_until_accepted(tmp_path):
    b = await Bench.start(tmp_path, boot={"status": "Pending", "interval": 30})
    assert b.backend.actions() == ["BootNotification"]
    assert b.cp.boot_status == "Pending" and not b.cp.accepted
    assert b.cp.wall.synced  # currentTime is taken from any BootNotification.conf
    # 4.2: while Pending the Central System may read and change the configuration
    conf = await b.ok("GetConfiguration", {"key": ["HeartbeatInterval"]})
    assert conf["configurationKey"][0]["value"] == "86400"
    assert (await b.ok("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "30"}))["status"] == "Accepted"
    # 4.2: RemoteStart/RemoteStop are not allowed while Pending: nothing is authorized
    ans = await b.cs("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1})
    assert ans[0] == 4 or ans[2]["status"] == "Rejected"
    assert not b.st.charger.authorized
    ans = await b.cs("RemoteStopTransaction", {"transactionId": 1})
    assert ans[0] == 4 or ans[2]["status"] == "Rejected"
    # a session (free charging) starts meanwhile: no StatusNotification, no StartTransaction
    await b.charge()
    await b.idle(10000)
    assert b.backend.actions() == ["BootNotification"]
    # ... unless the back end asks for it (4.2: TriggerMessage); here: a BootNotification
    assert (await b.ok("TriggerMessage", {"requestedMessage": "BootNotification"}))["status"] == "Accepted"
    await b.run(300)
    assert b.backend.actions() == ["BootNotification", "BootNotification"]
    assert b.cp.boot_status == "Pending"
    await b.idle(10000)
    assert b.backend.actions() == ["BootNotification", "BootNotification"]
    # after the interval, the next BootNotification; Accepted: statuses, then the transaction
    b.backend.boot["status"] = "Accepted"
    await b.idle(21000)  # 30 s after the triggered one
    await b.run(300)
    acts = b.backend.actions()
    assert acts[:3] == ["BootNotification"] * 3
    assert acts[3:6] == ["StatusNotification", "StatusNotification", "StartTransaction"]
    assert b.backend.statuses(1) == [("Charging", "NoError")]


@aio
async def test_boot_rejected_waits_the_interval_and_answers_nothing(tmp_path):
    b = await Bench.start(tmp_path, boot={"status": "Rejected", "interval": 60})
    assert b.cp.boot_status == "Rejected"
    await b.plug()
    # 4.2: "While Rejected, the Charge Point SHALL NOT respond to any Central System initiated
    # message"
    b.link.push([2, "x1", "GetConfiguration", {}])
    b.link.push([2, "x2", "Reset", {"type": "Soft"}])
    b.link.push("garbage")
    await b.settle()
    assert b.backend.frames == [b.backend.frames[0]]
    await b.idle(55000)
    assert b.backend.actions() == ["BootNotification"]
    b.backend.boot.update(status="Accepted")
    await b.idle(6000)
    await b.run(200)
    assert b.backend.actions()[:2] == ["BootNotification", "BootNotification"]
    assert b.cp.accepted
    assert b.backend.statuses(1) == [("SuspendedEV", "NoError")]


@aio
async def test_boot_rejected_with_interval_zero_retries_on_its_own_pace(tmp_path):
    b = await Bench.start(tmp_path, boot={"status": "Rejected", "interval": 0})
    await b.idle(boot_mod.BOOT_RETRY_S * 1000 - 2000)
    assert b.backend.actions() == ["BootNotification"]  # 4.2: no flooding
    await b.idle(3000)
    assert b.backend.actions() == ["BootNotification", "BootNotification"]


@aio
async def test_calls_before_the_first_boot_answer_are_refused(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    b.backend.hold.add("BootNotification")
    await b.up()
    ans = await b.cs("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    assert ans[0] == 4 and ans[2] == "SecurityError"
    assert b.st.charger.available
    b.backend.answer_held()
    await b.run(200)
    assert b.cp.accepted


@aio
async def test_boot_without_answer_is_retried_and_nothing_else_goes_out(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    b.backend.hold.add("BootNotification")
    await b.up()
    await b.charge()
    b.backend.held.clear()
    b.backend.hold.clear()
    await b.idle(31000)  # MessageTimeout (30 s) on the virtual clock
    await asyncio.sleep(0.05)  # the Rpc looks at its deadline every 20 ms of real time
    await b.settle()
    assert b.backend.actions() == ["BootNotification"]
    await b.idle(boot_mod.BOOT_RETRY_S * 1000)
    await b.run(300)
    assert b.backend.actions()[:2] == ["BootNotification", "BootNotification"]
    assert "StartTransaction" in b.backend.actions()


@aio
async def test_reconnect_does_not_boot_again_and_trigger_can(tmp_path):
    b = await Bench.start(tmp_path)
    await b.down()
    await b.up()
    assert b.backend.actions().count("BootNotification") == 1  # 4.2: once per boot
    assert (await b.ok("TriggerMessage", {"requestedMessage": "BootNotification"}))["status"] == "Accepted"
    await b.run(200)
    assert b.backend.actions().count("BootNotification") == 2
    assert b.cp.accepted


# ============================================================================== statuses (spec 4.9)

@aio
async def test_status_follows_a_free_session(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")
    b.act("ev-pause")
    await b.run(3000)
    assert b.backend.statuses(1)[-1] == ("SuspendedEV", "NoError")  # C4
    b.act("ev-ready", 16)
    await b.run(3000)
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")  # D3
    await b.unplug()
    assert b.backend.statuses(1)[-1] == ("Available", "NoError")  # C1
    seq = b.backend.statuses(1)
    assert all(seq[i] != seq[i + 1] for i in range(len(seq) - 1))  # only changes are sent
    for s, _ in seq:
        assert s in ("Available", "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing")
    assert b.backend.statuses(0) == [("Available", "NoError")]


@aio
async def test_status_preparing_and_finishing_with_authorization(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.plug()
    assert b.backend.statuses(1)[-1] == ("Preparing", "NoError")  # A2
    assert not b.st.charger.session
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1}))["status"] == "Accepted"
    b.act("ev-ready", 16)
    await b.run(3000)
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")
    tid = b.cp.outbox.transaction_id(b.cp.transaction["n"])
    assert (await b.ok("RemoteStopTransaction", {"transactionId": tid}))["status"] == "Accepted"
    await b.run(2000)
    assert b.backend.statuses(1)[-1] == ("Finishing", "NoError")  # C6: the cable is still in
    await b.unplug()
    assert b.backend.statuses(1)[-1] == ("Available", "NoError")  # F1


FAULTS = [
    # (world actions, expected errorCode) -- spec 7.6 ChargePointErrorCode, README fault table
    ([("rcd-leak", 30)], "GroundFailure"),
    ([("temp", 75)], "HighTemperature"),
    ([("meter-fail",)], "PowerMeterFailure"),
    ([("weld",), ("ev-pause",)], "PowerSwitchFailure"),
    ([("diode-fault",)], "EVCommunicationError"),
    ([("pilot-short",)], "EVCommunicationError"),
]


@pytest.mark.parametrize("actions,code", FAULTS, ids=[f[1] + "-" + f[0][0][0] for f in FAULTS])
@aio
async def test_fault_is_reported_faulted_with_its_error_code(tmp_path, actions, code):
    b = await Bench.start(tmp_path)
    await b.charge()
    for a in actions:
        b.act(*a)
    assert await b.until(lambda: b.st.charger.faults.any(), 15000)
    await b.run(3000)
    assert not b.st.charger.contactor
    # 4.9 A9..I9 / C9: Faulted with the errorCode of the fault
    assert ("Faulted", code) in b.backend.statuses(1)
    sent = [p for p in b.backend.sent("StatusNotification") if p["status"] == "Faulted"]
    # 4.9: connector 0 is the charge point itself: Faulted only for a fault of the box
    assert {p["connectorId"] for p in sent} == ({0, 1} if code == "HighTemperature" else {1})
    assert all(p["errorCode"] == code for p in sent)


@aio
async def test_fault_resolved_returns_to_the_status_before(tmp_path):
    b = await Bench.start(tmp_path, fault_retry_s=30)
    await b.plug()
    before = b.backend.statuses(1)[-1]
    b.act("temp", 75)
    await b.run(2000)
    assert b.backend.statuses(1)[-1] == ("Faulted", "HighTemperature")
    b.act("temp", 25)
    await b.idle(35000)
    await b.run(2000)
    assert b.backend.statuses(1)[-1] == before  # I1-I8: back to the pre-fault state
    assert b.backend.statuses(0)[-2:] == [("Faulted", "HighTemperature"), ("Available", "NoError")]


@aio
async def test_statuses_are_collapsed_while_offline_and_the_newest_is_sent_on_reconnect(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    n = len(b.backend.statuses(1))
    await b.down()
    await b.plug()  # Preparing
    await b.unplug()  # Available
    await b.plug()  # Preparing again
    changed_at = b.cp.status.derived(1)[2]
    await b.idle(20000)
    assert len(b.backend.statuses(1)) == n
    await b.up()
    new = [p for p in b.backend.sent("StatusNotification")[n + 1:]]
    assert [(p["connectorId"], p["status"]) for p in new] == [(1, "Preparing")]
    # the time of the change, not of the sending
    assert dt.parse(new[0]["timestamp"]) == changed_at
    assert b.backend.epoch() - changed_at >= 20


@aio
async def test_connector_zero_follows_availability_only(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    await b.unplug()
    assert b.backend.statuses(0) == [("Available", "NoError")]  # 4.9: 0 has Available/Unavailable/Faulted
    await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    await b.run(300)
    assert b.backend.statuses(0)[-1] == ("Unavailable", "NoError")
    assert b.backend.statuses(1)[-1] == ("Unavailable", "NoError")


# ============================================================================== transactions

def _order(b, *actions):
    return [c[0] for c in b.backend.calls if c[0] in actions]


@aio
async def test_transaction_messages_in_order_with_the_transaction_id(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    await b.idle(125000)
    await b.unplug()
    await b.run(500)
    start, = b.backend.sent("StartTransaction")
    stop, = b.backend.sent("StopTransaction")
    mvs = b.backend.sent("MeterValues")
    assert _order(b, "StartTransaction", "MeterValues", "StopTransaction") == \
        ["StartTransaction"] + ["MeterValues"] * len(mvs) + ["StopTransaction"]
    # 4.8 / 6.45: a free session is reported with the configured idTag
    assert start["connectorId"] == 1 and start["idTag"] == "FreeCharging" and start["meterStart"] == 0
    assert "reservationId" not in start
    tid = b.backend.next_tid
    # 4.7 MeterValueSampleInterval 60 s: two periodic samples in 125 s, with the transactionId
    assert len(mvs) == 2
    for mv in mvs:
        assert mv["transactionId"] == tid and mv["connectorId"] == 1
        sv = mv["meterValue"][0]["sampledValue"]
        assert {s["measurand"] for s in sv} == {"Energy.Active.Import.Register", "Power.Active.Import"}
        assert all(s["context"] == "Sample.Periodic" for s in sv)
    assert dt.parse(mvs[1]["meterValue"][0]["timestamp"]) - dt.parse(mvs[0]["meterValue"][0]["timestamp"]) == 60
    # 4.10: StopTransaction with the transactionId, the meter register and the reason
    assert stop["transactionId"] == tid and stop["reason"] == "EVDisconnected"
    assert stop["idTag"] == "FreeCharging"
    wh = b.st.metering.register_wh
    assert stop["meterStop"] == wh and 350 < wh < 450  # 11 kW for ~2 min
    assert dt.parse(stop["timestamp"]) >= dt.parse(start["timestamp"]) + 125
    assert b.cp.outbox.pending() == 0
    assert b.ocpp_state()["s"] == b.ocpp_state()["p"] == 1


@aio
async def test_offline_session_is_delivered_after_the_boot_with_ids_filled_in(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    await b.charge()
    await b.idle(65000)
    await b.unplug()
    assert b.backend.frames == []
    await b.up()
    await b.run(300)
    acts = b.backend.actions()
    assert acts == ["BootNotification", "StatusNotification", "StatusNotification",
                    "StartTransaction", "MeterValues", "StopTransaction"]
    tid = b.backend.next_tid
    assert b.backend.sent("MeterValues")[0]["transactionId"] == tid
    assert b.backend.sent("StopTransaction")[0]["transactionId"] == tid
    assert b.backend.statuses(1) == [("Available", "NoError")]


@aio
async def test_start_transaction_dropped_after_its_attempts_gives_minus_one(tmp_path):
    b = await Bench.start(tmp_path)
    await b.ok("ChangeConfiguration", {"key": "TransactionMessageRetryInterval", "value": "2"})
    b.backend.errors["StartTransaction"] = "InternalError"
    await b.charge()
    await b.idle(8000)  # attempts 3: send, 2 s, send, 4 s, send -> discarded (3.7 / errata 3.18)
    assert len(b.backend.sent("StartTransaction")) == 3
    del b.backend.errors["StartTransaction"]
    await b.idle(61000)
    await b.unplug()
    assert b.cp.outbox.dropped == 1
    # errata 3.18: every later message of this transaction carries transactionId -1
    assert [m["transactionId"] for m in b.backend.sent("MeterValues")] == [-1]
    assert b.backend.sent("StopTransaction")[0]["transactionId"] == -1
    assert len(b.backend.sent("StartTransaction")) == 3
    # and RemoteStop can not name it
    assert b.cp.outbox.pending() == 0


@aio
async def test_start_transaction_cut_by_a_link_loss_is_sent_again_not_counted(tmp_path):
    b = await Bench.start(tmp_path)
    b.backend.hold.add("StartTransaction")
    await b.charge()
    assert len(b.backend.held) == 1
    await b.down()
    b.backend.hold.clear()
    await b.up()
    await b.run(300)
    assert len(b.backend.sent("StartTransaction")) == 2
    assert b.cp.outbox.pending() == 0 and b.cp.outbox.dropped == 0


@aio
async def test_link_failing_inside_send_does_not_stop_the_sender(tmp_path):
    # ws.Link.send raises ClosedError when the connection breaks during the write
    b = await Bench.start(tmp_path)
    from firmware.ocpp.ws import ClosedError

    b.link.fail_next_send = ClosedError(1006, "connection lost")
    await b.charge()
    await b.run(500)
    assert b.backend.sent("StartTransaction") == []
    assert b.task is not None and not b.task.done(), b.task.done() and b.task.exception()
    await b.up()
    await b.run(300)
    assert len(b.backend.sent("StartTransaction")) == 1
    assert b.cp.outbox.pending() == 0


async def _power_cut_run(b, when):
    with pytest.raises(PowerCut):
        await when()
    b.halt()


@aio
async def test_power_cut_between_journal_and_outbox_start_is_repaired_at_boot(tmp_path, monkeypatch):
    b = await Bench.start(tmp_path)

    def cut(*a, **kw):
        raise PowerCut()

    monkeypatch.setattr(b.cp.outbox, "put", cut)
    b.act("plug", 32)  # free charging: the session starts with the plug
    await _power_cut_run(b, lambda: b.run(1000))
    assert b.st.keeper.current is not None  # the session is in the journal, not in the outbox
    b2 = await Bench.start(tmp_path)
    await b2.run(6000)  # the station closes the cut session (PowerLoss) once the meter answers
    assert [c[0] for c in b2.backend.calls if "Transaction" in c[0]] == ["StartTransaction", "StopTransaction"]
    stop = b2.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "PowerLoss" and stop["transactionId"] == b2.backend.next_tid
    assert b2.ocpp_state()["s"] == b2.ocpp_state()["p"] == 1


@aio
async def test_power_cut_between_outbox_start_and_record_sends_no_duplicate(tmp_path, monkeypatch):
    b = await Bench.start(tmp_path, up=False)

    def cut(*a, **kw):
        raise PowerCut()

    monkeypatch.setattr(b.cp, "save", cut)
    b.act("plug", 32)
    await _power_cut_run(b, lambda: b.run(1000))
    assert b.cp is not None
    b2 = await Bench.start(tmp_path)
    await b2.run(6000)
    assert [c[0] for c in b2.backend.calls if "Transaction" in c[0]] == ["StartTransaction", "StopTransaction"]


@aio
async def test_power_cut_between_journal_and_outbox_stop_is_repaired_at_boot(tmp_path, monkeypatch):
    b = await Bench.start(tmp_path)
    await b.charge()
    await b.run(1000)

    def cut(action, payload, tx=None):
        if action == "StopTransaction":
            raise PowerCut()
        return real(action, payload, tx)

    real = b.cp.outbox.put
    monkeypatch.setattr(b.cp.outbox, "put", cut)
    b.act("unplug")
    await _power_cut_run(b, lambda: b.run(1000))
    b2 = await Bench.start(tmp_path)
    await b2.run(1000)
    assert [c[0] for c in b.backend.calls + b2.backend.calls if "Transaction" in c[0]] == \
        ["StartTransaction", "StopTransaction"]
    stop = b2.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "EVDisconnected" and stop["transactionId"] == b.backend.next_tid
    assert stop["meterStop"] > 0


@aio
async def test_power_cut_between_outbox_stop_and_record_sends_no_duplicate(tmp_path, monkeypatch):
    b = await Bench.start(tmp_path, up=False)
    await b.charge()
    await b.run(1000)
    real = b.cp.save

    def cut():
        if b.cp.kept["p"] is not None and b.cp.kept["p"] >= 1:
            raise PowerCut()
        real()

    monkeypatch.setattr(b.cp, "save", cut)
    b.act("unplug")
    await _power_cut_run(b, lambda: b.run(1000))
    b2 = await Bench.start(tmp_path)
    await b2.run(1000)
    assert [c[0] for c in b2.backend.calls if "Transaction" in c[0]] == ["StartTransaction", "StopTransaction"]


@aio
async def test_sessions_from_before_ocpp_are_not_sent(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    await b.charge()
    await b.unplug()
    b.halt()
    os.remove(os.path.join(str(tmp_path), cp_mod.STATE_FILE))
    import shutil

    shutil.rmtree(os.path.join(str(tmp_path), cp_mod.OUTBOX_DIR))
    b2 = await Bench.start(tmp_path)  # the first boot with a back end: the journal has session 1
    await b2.run(500)
    assert "StartTransaction" not in b2.backend.actions()
    await b2.charge()
    assert len(b2.backend.sent("StartTransaction")) == 1
    assert b2.cp.transaction["n"] == 2


@aio
async def test_offline_timestamps_after_a_reboot_do_not_go_back_before_the_last_sync(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()  # saves ocpp.json with the synced time
    await b.unplug()
    saved = b.ocpp_state()["t"]
    assert abs(saved - b.backend.epoch()) <= 1
    b.halt()
    b2 = await Bench.start(tmp_path, up=False)  # reboots, the back end can not be reached
    assert not b2.cp.wall.synced
    await b2.charge()
    await b2.unplug()
    b2.backend.time_shift = 3600  # the back end knows it is an hour later
    await b2.up()
    await b2.run(500)
    start = b2.backend.sent("StartTransaction")[0]
    # before the sync the clock counted on from the last known time, never from 1970; the
    # messages put meanwhile in this boot are shifted to the back end's time when sent
    assert saved + 3600 - 5 <= dt.parse(start["timestamp"]) <= b2.backend.epoch()
    assert abs(b2.cp.wall.now() - b2.backend.epoch()) <= 1
    assert all(tx_mod.PROVISIONAL not in m for m in b2.backend.sent("StartTransaction")
               + b2.backend.sent("StopTransaction") + b2.backend.sent("MeterValues"))


@aio
async def test_transaction_before_the_time_was_ever_known_is_stamped_with_the_back_ends_time(tmp_path):
    # A new charger: no time ever known, the back end unreachable at first.
    b = await Bench.start(tmp_path, up=False)
    assert not b.cp.wall.synced and b.cp.wall.now() < 86400
    await b.charge()
    await b.run(65000)  # a periodic sample at 60 s
    await b.unplug()
    await b.run(3000)
    await b.up()
    await b.run(2000)
    now = b.backend.epoch()
    start = b.backend.sent("StartTransaction")[0]
    stop = b.backend.sent("StopTransaction")[0]
    t0, t1 = dt.parse(start["timestamp"]), dt.parse(stop["timestamp"])
    # the session began about 70 s and ended about 5 s before the link came up
    assert now - 80 <= t0 <= now - 65 and now - 10 <= t1 <= now - 3 and t0 < t1
    samples = [dt.parse(v["timestamp"]) for m in b.backend.sent("MeterValues") for v in m["meterValue"]]
    assert samples and all(t0 <= s <= t1 for s in samples)
    for m in (start, stop):
        assert tx_mod.PROVISIONAL not in m


@aio
async def test_a_car_plugged_in_at_power_on_is_stamped_with_the_time_learnt_a_second_later(tmp_path):
    # The session starts at the first tick; its StartTransaction waits for the meter's first
    # reading (meterStart), which here comes after the back end told the time: it must carry the
    # time of the plug, not the estimate of a clock that knew nothing yet (1970 on a new charger).
    b = await Bench.start(tmp_path, up=False, meter_required=False)
    b.act("meter-fail")  # the meter is slow to answer after power-on
    plugged = b.backend.epoch()
    b.act("plug", 32)
    b.act("ev-ready", 16)
    await b.run(1000)
    assert b.st.charger.session and not b.backend.sent("StartTransaction")  # it waits for the meter
    await b.up()  # the back end tells the time a second after power-on
    await b.run(1000)
    b.act("meter-ok")
    await b.run(5000)
    start = b.backend.sent("StartTransaction")[0]
    assert abs(dt.parse(start["timestamp"]) - plugged) <= 1
    assert tx_mod.PROVISIONAL not in start


@aio
async def test_provisional_timestamps_of_an_earlier_boot_stay_as_estimated(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    await b.charge()
    b.halt()  # power cut before the time was ever known
    b2 = await Bench.start(tmp_path)
    await b2.run(1000)
    start = b2.backend.sent("StartTransaction")[0]
    assert dt.parse(start["timestamp"]) < 86400  # nothing can tell when that boot was
    assert tx_mod.PROVISIONAL not in start


@aio
async def test_outbox_that_can_not_take_a_message_does_not_stop_charging(tmp_path, monkeypatch):
    b = await Bench.start(tmp_path)
    from firmware.ocpp import outbox as outbox_mod

    def full(*a, **kw):
        raise outbox_mod.OutboxFull("outbox: full")

    monkeypatch.setattr(b.cp.outbox, "put", full)
    await b.charge()
    await b.run(1000)
    assert b.st.charger.contactor
    assert [e for e in b.cp.errors if "StartTransaction of transaction 1 not queued" in e] != []
    assert b.ocpp_state()["s"] == 0  # not lost: put again every round until the outbox takes it
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")
    monkeypatch.undo()
    await b.run(1000)
    assert len(b.backend.sent("StartTransaction")) == 1 and b.ocpp_state()["s"] == 1


@aio
async def test_meter_values_of_per_phase_measurands(tmp_path):
    # 9.1.17 / errata 3.14.3: "Current.Import.L1" etc. are accepted by the configuration: sent
    b = await Bench.start(tmp_path)
    assert (await b.ok("ChangeConfiguration", {"key": "MeterValuesSampledData",
                                                "value": "Current.Import.L1,Voltage.L2-N,Current.Offered"}))["status"] == "Accepted"
    await b.charge()
    await b.idle(61000)
    mv = b.backend.sent("MeterValues")[0]["meterValue"][0]["sampledValue"]
    got = {(s["measurand"], s.get("phase")) for s in mv}
    assert got == {("Current.Import", "L1"), ("Voltage", "L2-N"), ("Current.Offered", None)}
    amps = [s for s in mv if s["measurand"] == "Current.Import"][0]
    assert amps["unit"] == "A" and float(amps["value"]) == pytest.approx(16, abs=0.5)


@aio
async def test_clock_aligned_and_stop_transaction_data(tmp_path):
    b = await Bench.start(tmp_path)
    for k, v in (("ClockAlignedDataInterval", "60"), ("MeterValueSampleInterval", "0"),
                 ("StopTxnSampledData", "Energy.Active.Import.Register")):
        assert (await b.ok("ChangeConfiguration", {"key": k, "value": v}))["status"] == "Accepted"
    await b.idle(61000)
    idle_mv = b.backend.sent("MeterValues")
    assert len(idle_mv) == 1 and "transactionId" not in idle_mv[0]  # errata 3.16: no tx, no id
    ts = dt.parse(idle_mv[0]["meterValue"][0]["timestamp"])
    assert ts % 60 == 0
    assert idle_mv[0]["meterValue"][0]["sampledValue"][0]["context"] == "Sample.Clock"
    await b.charge()
    await b.idle(61000)
    await b.unplug()
    tx_mv = b.backend.sent("MeterValues")[1:]
    assert len(tx_mv) == 1 and tx_mv[0]["transactionId"] == b.backend.next_tid
    stop, = b.backend.sent("StopTransaction")
    start, = b.backend.sent("StartTransaction")
    begin, end = [m["sampledValue"] for m in stop["transactionData"]]  # no sampling, no aligned data
    assert begin[0]["context"] == "Transaction.Begin" and begin[0]["value"] == str(start["meterStart"])
    assert end[0]["context"] == "Transaction.End" and end[0]["measurand"] == "Energy.Active.Import.Register"
    assert end[0]["value"] == str(stop["meterStop"])


@aio
async def test_stop_txn_data_spreads_over_a_long_session_within_its_bound(tmp_path):
    # 9.1.24/25: StopTxnSampledData every MeterValueSampleInterval and StopTxnAlignedData every
    # ClockAlignedDataInterval of the transaction go into the StopTransaction's transactionData,
    # at most TXDATA_VALUES values: the first, the last and others spread over the session
    b = await Bench.start(tmp_path)
    for k, v in (("ClockAlignedDataInterval", "900"), ("MeterValueSampleInterval", "60"),
                 ("StopTxnSampledData", "Energy.Active.Import.Register"),
                 ("StopTxnAlignedData", "Energy.Active.Import.Register")):
        assert (await b.ok("ChangeConfiguration", {"key": k, "value": v}))["status"] == "Accepted"
    await b.charge()
    await b.idle(3 * 3600 * 1000)
    await b.unplug()
    stop, = b.backend.sent("StopTransaction")
    data = stop["transactionData"]
    values = [v for m in data for v in m["sampledValue"]]
    assert len(values) == len(data) and meter_mod.TXDATA_VALUES // 2 < len(values) <= meter_mod.TXDATA_VALUES
    contexts = [v["context"] for v in values]
    assert contexts[0] == "Transaction.Begin" and contexts[-1] == "Transaction.End"
    assert set(contexts[1:-1]) <= {"Sample.Periodic", "Sample.Clock"}
    times = [dt.parse(m["timestamp"]) for m in data]
    assert times == sorted(times) and times[-2] - times[1] >= 2 * 3600  # spread, not the last minutes
    wh = [int(v["value"]) for v in values]
    assert wh == sorted(wh) and wh[-1] == stop["meterStop"]


# ============================================================================== StartTransaction.conf

@aio
async def test_invalid_id_tag_stops_the_transaction(tmp_path):
    # errata 3.17 (spec 4.8): StopTransactionOnInvalidId true -> stop, reason DeAuthorized
    b = await Bench.start(tmp_path, **PAID)
    b.backend.tx_status = "Invalid"
    b.backend.hold.add("StartTransaction")  # the answer comes while energy flows
    await b.ok("RemoteStartTransaction", {"idTag": "BAD", "connectorId": 1})
    await b.charge()
    b.backend.answer_held()
    await b.run(1000)
    assert not b.st.charger.session and not b.st.charger.contactor
    stop = b.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "DeAuthorized" and stop["idTag"] == "BAD"
    assert b.backend.statuses(1)[-1] == ("Finishing", "NoError")


@aio
async def test_invalid_id_tag_only_stops_energy_when_configured_so(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.ok("ChangeConfiguration", {"key": "StopTransactionOnInvalidId", "value": "false"})
    b.backend.tx_status = "Blocked"
    b.backend.hold.add("StartTransaction")  # the answer comes once the car charges
    await b.ok("RemoteStartTransaction", {"idTag": "BAD", "connectorId": 1})
    await b.charge()
    b.backend.hold.discard("StartTransaction")
    b.backend.answer_held()
    await b.run(8000)
    c = b.st.charger
    assert c.session and not c.contactor and c.offer_da == 0
    assert b.backend.sent("StopTransaction") == []
    assert b.backend.statuses(1)[-1] == ("SuspendedEVSE", "NoError")  # C5
    await b.unplug()
    assert b.backend.sent("StopTransaction")[0]["reason"] == "EVDisconnected"
    assert tx_mod.INVALID_CLAIM not in c.limits.claims()  # the next driver gets energy again


@aio
async def test_invalid_answer_never_stops_a_free_session(tmp_path):
    b = await Bench.start(tmp_path)
    b.backend.tx_status = "Invalid"
    await b.charge()
    await b.run(3000)
    assert b.st.charger.contactor and b.st.charger.session
    assert b.backend.sent("StopTransaction") == []


# ============================================================================== ChangeAvailability (5.2)

@aio
async def test_change_availability_when_idle(tmp_path):
    b = await Bench.start(tmp_path)
    assert (await b.ok("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}))["status"] == "Accepted"
    await b.run(300)
    assert not b.st.charger.available
    assert b.backend.statuses(1)[-1] == ("Unavailable", "NoError")  # A8
    # 5.2: a change to the status it is in: Accepted
    assert (await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}))["status"] == "Accepted"
    await b.plug()
    b.act("ev-ready", 16)
    await b.run(2000)
    assert not b.st.charger.contactor
    assert (await b.ok("ChangeAvailability", {"connectorId": 2, "type": "Operative"}))["status"] == "Rejected"
    assert (await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Operative"}))["status"] == "Accepted"
    assert await b.until(lambda: b.st.charger.contactor, 5000)  # H3
    await b.run(300)
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")
    assert "Faulted" not in [s for s, _ in b.backend.statuses(1)]  # no false diode fault


@aio
async def test_change_availability_during_a_transaction_is_scheduled_and_persists(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    assert (await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}))["status"] == "Scheduled"
    await b.run(2000)
    assert b.st.charger.contactor and b.st.charger.available  # the transaction goes on
    await b.unplug()
    assert not b.st.charger.available
    assert b.backend.statuses(1)[-1] == ("Unavailable", "NoError")  # C8
    assert b.backend.sent("StopTransaction")[0]["reason"] == "EVDisconnected"
    b.halt()
    # 4.9 / 5.2: Unavailable set by ChangeAvailability persists across reboots
    b2 = await Bench.start(tmp_path)
    assert not b2.st.charger.available
    assert b2.backend.statuses(1) == [("Unavailable", "NoError")]
    assert b2.backend.statuses(0) == [("Unavailable", "NoError")]
    await b2.plug()
    b2.act("ev-ready", 16)
    await b2.run(2000)
    assert not b2.st.charger.contactor


@aio
async def test_unavailable_connector_starts_no_transaction(tmp_path):
    b = await Bench.start(tmp_path)
    await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    await b.plug()
    await b.run(500)
    assert b.backend.sent("StartTransaction") == []
    assert b.backend.statuses(1)[-1] == ("Unavailable", "NoError")


@aio
async def test_operative_during_a_transaction_cancels_a_scheduled_change(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    assert (await b.ok("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}))["status"] == "Scheduled"
    assert (await b.ok("ChangeAvailability", {"connectorId": 1, "type": "Operative"}))["status"] == "Accepted"
    await b.unplug()
    assert b.st.charger.available


@aio
async def test_scheduled_inoperative_survives_a_power_cut_that_ends_the_transaction(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    assert (await b.ok("ChangeAvailability", {"connectorId": 1, "type": "Inoperative"}))["status"] == "Scheduled"
    b.halt()  # power cut: the transaction ends with PowerLoss at the next boot
    b2 = await Bench.start(tmp_path)
    await b2.run(1000)
    assert not b2.st.charger.available
    stop = b2.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "PowerLoss"
    assert b2.backend.statuses(1)[-1] == ("Unavailable", "NoError")
    b2.halt()
    b3 = await Bench.start(tmp_path)  # applied once, and then kept as any Inoperative is
    await b3.run(500)
    assert not b3.st.charger.available and b3.ocpp_state()["so"] is None


# ============================================================================== RemoteStart / RemoteStop

@aio
async def test_remote_start_with_the_car_plugged_in(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.plug()
    b.act("ev-ready", 16)
    assert not b.st.charger.session  # free_charging false: nobody authorized yet
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1}))["status"] == "Accepted"
    assert await b.until(lambda: b.st.charger.contactor, 5000)
    await b.run(300)
    # 5.11: AuthorizeRemoteTxRequests false -> no Authorize.req, StartTransaction with the idTag
    assert "Authorize" not in b.backend.actions()
    assert b.backend.sent("StartTransaction")[0]["idTag"] == "CARD1"


@aio
async def test_remote_start_without_connector_id_takes_connector_1(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD1"}))["status"] == "Accepted"
    await b.charge()
    assert b.backend.sent("StartTransaction")[0]["connectorId"] == 1


@aio
async def test_remote_start_waits_connection_timeout_for_the_car(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.ok("ChangeConfiguration", {"key": "ConnectionTimeOut", "value": "20"})
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1}))["status"] == "Accepted"
    await b.run(300)
    assert b.backend.statuses(1)[-1] == ("Preparing", "NoError")  # A2: a RemoteStart
    await b.idle(15000)
    assert b.st.charger.authorized
    await b.idle(6000)
    await b.run(300)
    # errata 3.76: from the beginning of Preparing, ConnectionTimeOut; then back to Available
    assert not b.st.charger.authorized
    assert b.backend.statuses(1)[-1] == ("Available", "NoError")
    await b.plug()
    b.act("ev-ready", 16)
    assert not b.st.charger.session
    assert b.backend.sent("StartTransaction") == []


@aio
async def test_remote_start_with_a_car_arriving_in_time(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1})
    await b.idle(10000)
    await b.charge()
    await b.idle(40000)
    assert b.st.charger.contactor  # ConnectionTimeOut ends with the plug
    assert b.backend.sent("StartTransaction")[0]["idTag"] == "CARD1"


@aio
async def test_remote_start_with_local_pre_authorize_needs_no_authorize_for_a_known_id(tmp_path):
    """5.11 with AuthorizeRemoteTxRequests true: "as if in response to a local action", so with
    LocalPreAuthorize an idTag the local list or the cache accepts starts without Authorize.req;
    an unknown one is asked about (and the answer is learnt)."""
    b = await Bench.start(tmp_path, **PAID)
    for key, value in (("AuthorizeRemoteTxRequests", "true"), ("LocalPreAuthorize", "true"),
                       ("LocalAuthListEnabled", "true")):
        assert (await b.ok("ChangeConfiguration", {"key": key, "value": value}))["status"] == "Accepted"
    assert (await b.ok("SendLocalList", {"listVersion": 1, "updateType": "Full", "localAuthorizationList": [
        {"idTag": "LISTED", "idTagInfo": {"status": "Accepted"}}]}))["status"] == "Accepted"

    async def remote_start(tag):
        """A car plugged in, a remote start for `tag`: it charges; then it leaves."""
        await b.plug()
        b.act("ev-ready", 16)
        assert (await b.ok("RemoteStartTransaction", {"idTag": tag, "connectorId": 1}))["status"] == "Accepted"
        assert await b.until(lambda: b.st.charger.contactor, 5000)
        await b.unplug()
        await b.run(2000)

    await remote_start("LISTED")
    assert b.backend.sent("Authorize") == []
    assert b.backend.sent("StartTransaction")[0]["idTag"] == "LISTED"
    # an idTag neither the list nor the cache knows: Authorize.req first, and the cache learns it
    await remote_start("NEW1")
    assert b.backend.sent("Authorize") == [{"idTag": "NEW1"}]
    assert b.cp.tokens.cache.lookup("NEW1")[0] == "Accepted"
    await remote_start("NEW1")
    assert b.backend.sent("Authorize") == [{"idTag": "NEW1"}]  # from the cache this time


@aio
async def test_remote_start_authorizes_first_when_configured(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.ok("ChangeConfiguration", {"key": "AuthorizeRemoteTxRequests", "value": "true"})
    b.backend.authorize_status = "Invalid"
    await b.plug()
    b.act("ev-ready", 16)
    assert (await b.ok("RemoteStartTransaction", {"idTag": "BAD", "connectorId": 1}))["status"] == "Accepted"
    await b.run(2000)
    # 5.11: "behave as if in response to a local action": Authorize.req first, no start if refused
    assert b.backend.sent("Authorize") == [{"idTag": "BAD"}]
    assert not b.st.charger.session
    b.backend.authorize_status = "Accepted"
    assert (await b.ok("RemoteStartTransaction", {"idTag": "GOOD", "connectorId": 1}))["status"] == "Accepted"
    assert await b.until(lambda: b.st.charger.contactor, 5000)
    await b.run(300)
    acts = b.backend.actions()
    assert acts.index("StartTransaction") > len(acts) - 1 - acts[::-1].index("Authorize")
    assert b.backend.sent("StartTransaction")[0]["idTag"] == "GOOD"


@aio
async def test_remote_start_is_rejected_when_it_can_not_start(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert (await b.ok("RemoteStartTransaction", {"idTag": "X", "connectorId": 2}))["status"] == "Rejected"
    await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1})
    await b.charge()
    # a transaction runs already
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD2", "connectorId": 1}))["status"] == "Rejected"
    await b.unplug()
    # a remote start waiting for its car
    await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1})
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD2", "connectorId": 1}))["status"] == "Rejected"
    await b.idle(31000)
    # unavailable
    await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD2"}))["status"] == "Rejected"
    await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Operative"})
    # faulted
    b.act("temp", 80)
    await b.run(2000)
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD2"}))["status"] == "Rejected"
    assert not b.st.charger.authorized


@aio
async def test_remote_start_with_a_tx_profile(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    bad = {"chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Relative",
           "chargingSchedule": {"chargingRateUnit": "A", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 10}]}}
    # 5.11: "The purpose of this ChargingProfile SHALL be set to TxProfile"
    assert (await b.ok("RemoteStartTransaction", {"idTag": "C", "connectorId": 1, "chargingProfile": bad}))["status"] == "Rejected"
    prof = dict(bad, chargingProfilePurpose="TxProfile")
    assert (await b.ok("RemoteStartTransaction", {"idTag": "C", "connectorId": 1, "chargingProfile": prof}))["status"] == "Accepted"
    await b.charge()
    await b.run(6000)
    assert b.st.charger.limits.claims().get(smart.CLAIM) == 100
    assert b.st.charger.offer_da == 100
    await b.unplug()
    await b.run(300)
    assert b.st.charger.limits.claims().get(smart.CLAIM) is None  # TxProfile ends with the tx


@aio
async def test_remote_stop(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    b.backend.hold.add("StartTransaction")
    await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1})
    await b.charge()
    # no transactionId known yet: nothing to match
    assert (await b.ok("RemoteStopTransaction", {"transactionId": 1001}))["status"] == "Rejected"
    b.backend.answer_held()
    await b.run(300)
    tid = b.cp.outbox.transaction_id(b.cp.transaction["n"])
    assert tid == 1001
    # 5.12: the wrong transactionId is Rejected and changes nothing
    assert (await b.ok("RemoteStopTransaction", {"transactionId": tid + 1}))["status"] == "Rejected"
    await b.run(300)
    assert b.st.charger.contactor
    assert (await b.ok("RemoteStopTransaction", {"transactionId": tid}))["status"] == "Accepted"
    await b.run(300)
    assert not b.st.charger.contactor and not b.st.charger.session
    stop = b.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "Remote" and stop["transactionId"] == tid and stop["idTag"] == "CARD1"
    assert (await b.ok("RemoteStopTransaction", {"transactionId": tid}))["status"] == "Rejected"


@aio
async def test_a_new_session_after_a_remote_stop_with_the_car_plugged_goes_through_preparing(tmp_path):
    """4.9: from Finishing only F1 Available, F2 Preparing (a new authorization), F8, F9. A remote
    stop leaves the car plugged in (Finishing); the driver's card starts a new transaction, and
    the back end sees Finishing -> Preparing -> SuspendedEV/Charging, every step in the table."""
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import csms

    b = await Bench.start(tmp_path, **PAID)
    b.cp.tokens.present("CARD1")
    await b.run(500)
    await b.charge()
    tid = b.cp.outbox.transaction_id(b.cp.transaction["n"])
    assert (await b.ok("RemoteStopTransaction", {"transactionId": tid}))["status"] == "Accepted"
    await b.run(1000)
    assert b.backend.statuses()[-1][0] == "Finishing"
    b.cp.tokens.present("CARD1")
    await b.run(3000)
    assert b.st.charger.session and len(b.backend.sent("StartTransaction")) == 2
    seq = [s for s, _ in b.backend.statuses()]
    i = seq.index("Finishing")
    assert seq[i + 1] == "Preparing", seq
    pairs = [(a, c) for a, c in zip(seq, seq[1:]) if a != c]
    assert all(c in csms.STATUS_TRANSITIONS[a] for a, c in pairs), pairs


# ============================================================================== Reset (5.14)

@pytest.mark.parametrize("kind", ["Soft", "Hard"])
@aio
async def test_reset_during_a_transaction(tmp_path, kind):
    b = await Bench.start(tmp_path)
    await b.charge()
    n = len(b.backend.frames)
    assert (await b.ok("Reset", {"type": kind}))["status"] == "Accepted"
    await b.run(1000)
    assert not b.st.charger.contactor
    assert len(b.reboots) == 1
    hard, frames_before = b.reboots[0]
    assert hard == (kind == "Hard")
    # the answer went out before the reboot
    assert frames_before > n and b.backend.frames[n][0] == 3
    stops = b.backend.sent("StopTransaction")
    # 5.14: "SHALL send a StopTransaction.req for any ongoing transaction before performing the
    # reset" (a hard reset may leave it queued: it is sent after the reboot)
    if kind == "Soft":
        assert len(stops) == 1
        i = [k for k, f in enumerate(b.backend.frames) if f[0] == 2 and f[2] == "StopTransaction"][0]
        assert i < frames_before
    for s in stops:
        assert s["reason"] == kind + "Reset"
    assert b.cp.st.keeper.find(1)["reason"] == kind + "Reset"


@aio
async def test_soft_reset_does_not_wait_forever_for_the_stop_transaction(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    b.backend.hold.add("StopTransaction")  # the back end never answers it
    await b.ok("Reset", {"type": "Soft"})
    await b.idle(remote_mod.RESET_WAIT_MS - 5000)
    assert b.reboots == []
    await b.idle(6000)
    await asyncio.sleep(0.05)  # the Rpc notices its MessageTimeout every 20 ms of real time
    await b.run(500)
    assert len(b.reboots) == 1
    assert b.cp.outbox.pending() == 1  # the StopTransaction stays queued for after the reboot


@aio
async def test_soft_reset_while_offline_reboots_at_once(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    await b.ok("Reset", {"type": "Soft"})
    await b.down()
    await b.run(500)
    assert len(b.reboots) == 1 and b.cp.outbox.pending() == 1


@aio
async def test_reset_when_idle_reboots_after_the_answer(tmp_path):
    b = await Bench.start(tmp_path)
    n = len(b.backend.frames)
    assert (await b.ok("Reset", {"type": "Soft"}))["status"] == "Accepted"
    assert b.reboots == []  # not inside the handler
    await b.run(300)
    assert b.reboots == [(False, n + 1)]


@aio
async def test_reset_without_a_reboot_function_is_rejected(tmp_path):
    b = await Bench.start(tmp_path, reboot=False)
    await b.charge()
    assert (await b.ok("Reset", {"type": "Hard"}))["status"] == "Rejected"
    await b.run(500)
    assert b.st.charger.contactor


# ============================================================================== small commands

@aio
async def test_unlock_connector_without_a_lock(tmp_path):
    b = await Bench.start(tmp_path, profile=board.load("esp32-tethered-1p"))
    await b.charge()
    # 6.54 UnlockStatus NotSupported: no connector lock on the board (a tethered cable); the
    # transaction goes on (test_lock_ocpp.py: with a lock)
    assert (await b.ok("UnlockConnector", {"connectorId": 1}))["status"] == "NotSupported"
    assert b.st.charger.session and b.st.charger.contactor


@aio
async def test_data_transfer_unknown_vendor_and_message(tmp_path):
    b = await Bench.start(tmp_path)
    # 4.3 / 5.6: unknown vendor -> UnknownVendorId without data; known vendor, unknown message
    ans = await b.ok("DataTransfer", {"vendorId": "com.example", "messageId": "x", "data": "y"})
    assert ans == {"status": "UnknownVendorId"}
    ans = await b.ok("DataTransfer", {"vendorId": tx_mod.VENDOR_ID, "messageId": "nope"})
    assert ans == {"status": "UnknownMessageId"}


@aio
async def test_clear_cache(tmp_path):
    b = await Bench.start(tmp_path)
    assert (await b.ok("ClearCache", {}))["status"] == "Accepted"


@aio
async def test_get_configuration(tmp_path):
    b = await Bench.start(tmp_path, authorization_key="secretsecret")
    conf = await b.ok("GetConfiguration", {})
    keys = {k["key"]: k for k in conf["configurationKey"]}
    assert "AuthorizationKey" not in keys  # security whitepaper 7.2: write-only
    assert keys["HeartbeatInterval"] == {"key": "HeartbeatInterval", "readonly": False, "value": "300"}
    assert keys["NumberOfConnectors"]["readonly"] is True and keys["NumberOfConnectors"]["value"] == "1"
    assert "unknownKey" not in conf
    conf = await b.ok("GetConfiguration", {"key": ["MeterValueSampleInterval", "NoSuchKey", "AuthorizationKey"]})
    assert [k["key"] for k in conf["configurationKey"]] == ["MeterValueSampleInterval"]
    assert conf["unknownKey"] == ["NoSuchKey", "AuthorizationKey"]
    most = b.cp.config.get("GetConfigurationMaxKeys")
    assert keys["GetConfigurationMaxKeys"]["value"] == str(most)
    ans = await b.ok("GetConfiguration", {"key": ["HeartbeatInterval"] * most})
    assert len(ans["configurationKey"]) == 1
    ans = await b.cs("GetConfiguration", {"key": ["HeartbeatInterval"] * (most + 1)})
    assert ans[0] == 4 and ans[2] == rpc_mod.OCCURENCE


@aio
async def test_a_new_authorization_key_reconnects_with_it_once_the_answer_is_out(tmp_path):
    """Security whitepaper A01: ChangeConfiguration(AuthorizationKey) is answered Accepted, then
    the charger disconnects and connects with the new key; the change is logged without the key.
    A rejected key changes nothing and keeps the connection."""
    b = await Bench.start(tmp_path)
    key = "0123456789abcdef0123456789abcdef"
    uid = "cs%d" % (b._uid + 1)
    assert (await b.ok("ChangeConfiguration", {"key": "AuthorizationKey", "value": key}))["status"] == "Accepted"
    await b.run(1000)
    [(reason, password, seen)] = b.link.reconnects
    assert password == key and "AuthorizationKey" in reason
    answered = [i for i, f in enumerate(b.backend.frames) if f[0] == 3 and f[1] == uid]
    assert answered and answered[0] < seen  # the answer went out on the old connection
    assert b.link.connected
    assert any("AuthorizationKey changed" in e for e in b.cp.errors)
    assert not any(key in e for e in b.cp.errors)
    assert (await b.ok("ChangeConfiguration", {"key": "AuthorizationKey", "value": "short"}))["status"] == "Rejected"
    await b.run(1000)
    assert len(b.link.reconnects) == 1 and b.link.password == key


@aio
async def test_change_configuration_applies_at_once(tmp_path):
    b = await Bench.start(tmp_path)

    async def change(k, v):
        return (await b.ok("ChangeConfiguration", {"key": k, "value": v}))["status"]

    assert await change("WebSocketPingInterval", "25") == "Accepted"
    assert b.link.ping_interval_s == 25
    assert await change("TransactionMessageAttempts", "5") == "Accepted"
    assert await change("TransactionMessageRetryInterval", "7") == "Accepted"
    assert (b.cp.outbox.attempts, b.cp.outbox.retry_interval_s) == (5, 7)
    key = "0123456789abcdef0123456789abcdef"
    assert await change("AuthorizationKey", key) == "Accepted"
    assert b.link.password == key
    assert await change("MessageTimeout", "5") == "Accepted"
    assert b.cp.rpc.timeout_ms == 5000
    await b.down()
    await b.up()
    assert b.cp.rpc.timeout_ms == 5000  # and on the next connection
    # 5.3: unknown key NotSupported, read-only or bad value Rejected; nothing changes
    assert await change("NoSuchKey", "1") == "NotSupported"
    assert await change("NumberOfConnectors", "2") == "Rejected"
    assert await change("HeartbeatInterval", "soon") == "Rejected"
    assert await change("AuthorizationKey", "short") == "Rejected"
    assert b.link.password == key
    # HeartbeatInterval: the next heartbeat follows the new interval
    assert await change("HeartbeatInterval", "40") == "Accepted"
    n = len(b.backend.calls)
    await b.idle(41000)
    assert b.backend.actions()[n:] == ["Heartbeat"]
    # a new ChargePoint on the same flash keeps the values
    b.halt()
    b2 = await Bench.start(tmp_path, boot={"interval": 0})
    assert b2.cp.config.get("HeartbeatInterval") == 40
    assert (b2.cp.outbox.attempts, b2.cp.outbox.retry_interval_s) == (5, 7)


@aio
async def test_meter_value_sample_interval_change_applies(tmp_path):
    b = await Bench.start(tmp_path)
    await b.ok("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "0"})
    await b.charge()
    await b.idle(130000)
    assert b.backend.sent("MeterValues") == []  # 9.1.19: 0 = no sampled data
    await b.ok("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "10"})
    await b.idle(31000)
    assert 2 <= len(b.backend.sent("MeterValues")) <= 3


@aio
async def test_a_shorter_meter_value_sample_interval_counts_from_its_change(tmp_path):
    # the back end shortens 60 s to 10 s 15 s into a transaction: samples follow 10 s after the
    # change, not 60 s after the start
    b = await Bench.start(tmp_path)
    await b.charge()
    await b.idle(15000)
    assert b.backend.sent("MeterValues") == []
    await b.ok("ChangeConfiguration", {"key": "MeterValueSampleInterval", "value": "10"})
    await b.idle(25000)
    assert len(b.backend.sent("MeterValues")) == 2


@aio
async def test_a_raised_security_profile_is_used_at_once_and_given_up_when_it_cannot_connect(tmp_path):
    """Security whitepaper A05: a raise whose prerequisites are met is Accepted, then the charger
    connects with the new profile (2: TLS, the same URL as wss://); when it cannot connect that
    way it falls back to the profile before (A05.FR.08); a profile that connected stays, and a
    lower or equal one is Rejected (A05.FR.01)."""
    with open(os.path.join(str(tmp_path), "ca.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key = "0123456789abcdef0123456789abcdef"
    b = await Bench.start(tmp_path, authorization_key=key, ocpp_ca_file="ca.pem")
    assert b.link.url == "ws://csms.test/ocpp"
    b.link.refuse_tls = True
    assert (await b.ok("ChangeConfiguration", {"key": "SecurityProfile", "value": "1"}))["status"] == "Accepted"
    await b.run(1000)
    assert len(b.link.reconnects) == 1 and b.link.connected and b.link.url == "ws://csms.test/ocpp"
    assert b.ocpp_state()["pf"] is None  # connected with profile 1: it stays

    assert (await b.ok("ChangeConfiguration", {"key": "SecurityProfile", "value": "2"}))["status"] == "Accepted"
    await b.run(1000)
    assert b.link.tried[-4:] == ["wss://csms.test/ocpp"] * 3 + ["ws://csms.test/ocpp"]
    assert b.link.connected and b.cp.config.get("SecurityProfile") == 1
    assert any("could not connect with SecurityProfile 2" in e and "back to 1" in e for e in b.cp.errors)
    assert b.ocpp_state()["pf"] is None

    b.link.refuse_tls = False
    assert (await b.ok("ChangeConfiguration", {"key": "SecurityProfile", "value": "2"}))["status"] == "Accepted"
    await b.run(1000)
    assert b.link.tried[-1] == b.link.url == "wss://csms.test/ocpp" and b.link.connected
    assert b.cp.config.get("SecurityProfile") == 2 and b.ocpp_state()["pf"] is None
    assert (await b.ok("ChangeConfiguration", {"key": "SecurityProfile", "value": "1"}))["status"] == "Rejected"
    assert (await b.ok("ChangeConfiguration", {"key": "SecurityProfile", "value": "2"}))["status"] == "Rejected"
    await b.run(1000)
    assert b.link.url == "wss://csms.test/ocpp" and len(b.link.reconnects) == 3


@aio
async def test_a_security_profile_raise_cut_by_a_power_cut_still_falls_back(tmp_path):
    # the profile before the raise is on flash (ocpp.json) until a connection with the new one
    # succeeds: a reboot in between still finds its way back
    with open(os.path.join(str(tmp_path), "ca.pem"), "w") as f:
        f.write("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key = "0123456789abcdef0123456789abcdef"
    settings = {"authorization_key": key, "ocpp_ca_file": "ca.pem"}
    b = await Bench.start(tmp_path, **settings)
    b.link.refuse_tls = True
    b.backend.hold.add("StatusNotification")  # nothing else goes out: the power goes first
    assert (await b.ok("ChangeConfiguration", {"key": "SecurityProfile", "value": "2"}))["status"] == "Accepted"
    assert b.ocpp_state()["pf"] == 0
    b.halt()
    b2 = Bench(tmp_path, settings)
    b2.link.refuse_tls = True
    b2.task = asyncio.create_task(b2.cp.run())
    await b2.settle()
    assert b2.link.url == "wss://csms.test/ocpp"
    await b2.up()
    assert b2.link.connected and b2.link.url == "ws://csms.test/ocpp"
    assert b2.cp.config.get("SecurityProfile") == 0 and b2.ocpp_state()["pf"] is None


# ============================================================================== reservations (5.13, 5.1)

def _reserve(b, rid=7, tag="CARD1", secs=600, cid=1, parent=None):
    p = {"connectorId": cid, "expiryDate": dt.iso(b.backend.epoch() + secs), "idTag": tag, "reservationId": rid}
    if parent:
        p["parentIdTag"] = parent
    return b.ok("ReserveNow", p)


@aio
async def test_reservation_blocks_free_charging_and_other_tags(tmp_path):
    b = await Bench.start(tmp_path)
    assert (await _reserve(b, parent="FLEET"))["status"] == "Accepted"
    await b.run(300)
    assert b.backend.statuses(1)[-1] == ("Reserved", "NoError")  # A7
    # 5.13: "refuse charging for all incoming idTags ... except" the reserved (parent) idTag
    await b.plug()
    b.act("ev-ready", 16)
    assert not b.st.charger.session  # free charging waits too
    assert (await b.ok("RemoteStartTransaction", {"idTag": "OTHER", "connectorId": 1}))["status"] == "Rejected"
    assert not b.st.charger.session
    # a second reservation: Occupied (5.13)
    assert (await _reserve(b, rid=8, tag="CARD2"))["status"] == "Occupied"
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1}))["status"] == "Accepted"
    assert await b.until(lambda: b.st.charger.contactor, 5000)
    await b.run(300)
    # 4.8: a transaction that ends a reservation carries its reservationId; the reservation ends
    start = b.backend.sent("StartTransaction")[0]
    assert start["reservationId"] == 7 and start["idTag"] == "CARD1"
    assert b.cp.reservation is None and not b.st.charger.reserved
    assert b.ocpp_state()["r"] is None


@aio
async def test_reservation_for_the_parent_id_tag(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert (await _reserve(b, tag="CARD1", parent="FLEET"))["status"] == "Accepted"
    lst = [{"idTag": "CARD9", "idTagInfo": {"status": "Accepted", "parentIdTag": "FLEET"}},
           {"idTag": "CARD8", "idTagInfo": {"status": "Accepted", "parentIdTag": "OTHER"}}]
    assert (await b.ok("SendLocalList", {"listVersion": 1, "updateType": "Full",
                                         "localAuthorizationList": lst}))["status"] == "Accepted"
    # 5.13: the parentIdTag is a group, not a token: FLEET itself, or a token of another
    # group, may not use the reservation
    for tag in ("FLEET", "CARD8"):
        assert (await b.ok("RemoteStartTransaction", {"idTag": tag, "connectorId": 1}))["status"] == "Rejected"
    assert (await b.ok("RemoteStartTransaction", {"idTag": "CARD9", "connectorId": 1}))["status"] == "Accepted"
    await b.charge()
    start = b.backend.sent("StartTransaction")[0]
    assert start["reservationId"] == 7 and start["idTag"] == "CARD9"


@aio
async def test_at_a_reservation_an_unknown_id_tag_is_asked_about_before_it_is_refused(tmp_path):
    """5.13: with a reservation for a parentIdTag, the group of an idTag neither the local list
    nor the cache knows is learnt from Authorize.req, for a card and for a RemoteStartTransaction;
    only then is it refused or let in."""
    b = await Bench.start(tmp_path, **PAID)
    await b.ok("ChangeConfiguration", {"key": "AuthorizationCacheEnabled", "value": "false"})
    b.backend.id_tags["STRANGER"] = {"status": "Accepted", "parentIdTag": "OTHER"}
    b.backend.id_tags["KID1"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    b.backend.id_tags["KID2"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    assert (await _reserve(b, tag="CARD1", parent="FLEET"))["status"] == "Accepted"
    # a remote start for another group: asked, then Rejected
    assert (await b.ok("RemoteStartTransaction", {"idTag": "STRANGER", "connectorId": 1}))["status"] == "Rejected"
    assert b.backend.sent("Authorize") == [{"idTag": "STRANGER"}]
    # a card of the reservation's group: asked, then let in
    b.cp.tokens.present("KID1")
    await b.run(1000)
    assert b.backend.sent("Authorize")[-1] == {"idTag": "KID1"}
    assert b.cp.tokens.last["result"] == "accepted", b.cp.tokens.last
    await b.charge()
    start = b.backend.sent("StartTransaction")[0]
    assert (start["idTag"], start["reservationId"]) == ("KID1", 7)


@aio
async def test_a_remote_start_of_the_reserved_group_learnt_from_authorize_is_accepted(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.ok("ChangeConfiguration", {"key": "AuthorizationCacheEnabled", "value": "false"})
    b.backend.id_tags["KID2"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    assert (await _reserve(b, tag="CARD1", parent="FLEET"))["status"] == "Accepted"
    assert (await b.ok("RemoteStartTransaction", {"idTag": "KID2", "connectorId": 1}))["status"] == "Accepted"
    assert b.backend.sent("Authorize") == [{"idTag": "KID2"}]
    await b.charge()
    assert b.backend.sent("StartTransaction")[0]["reservationId"] == 7


@aio
async def test_a_car_plugged_in_without_identification_leaves_the_connector_reserved(tmp_path):
    b = await Bench.start(tmp_path)  # free charging too: a reservation holds it back (5.13)
    assert (await _reserve(b, tag="CARD1"))["status"] == "Accepted"
    await b.run(300)
    await b.plug()
    b.act("ev-ready", 16)
    await b.run(3000)
    assert not b.st.charger.session
    assert b.backend.statuses(1)[-1] == ("Reserved", "NoError")
    assert ("Preparing", "NoError") not in b.backend.statuses(1)
    b.cp.tokens.present("CARD1")
    assert await b.until(lambda: b.st.charger.contactor, 5000)
    await b.run(300)
    seq = [x for x, _ in b.backend.statuses(1)]
    assert seq[seq.index("Reserved"):][:2] == ["Reserved", "Preparing"]  # G2: the reserved identity


@aio
async def test_reservation_expires(tmp_path):
    b = await Bench.start(tmp_path)
    assert (await _reserve(b, secs=30))["status"] == "Accepted"
    await b.idle(25000)
    assert b.cp.reservation is not None
    await b.idle(6000)
    await b.run(300)
    # 5.13: at expiryDate the reservation ends and a StatusNotification says Available
    assert b.cp.reservation is None and not b.st.charger.reserved
    assert b.backend.statuses(1)[-2:] == [("Reserved", "NoError"), ("Available", "NoError")]
    await b.charge()  # free charging again
    assert "reservationId" not in b.backend.sent("StartTransaction")[0]


@aio
async def test_reservation_replace_cancel_and_refusals(tmp_path):
    b = await Bench.start(tmp_path)
    # ReserveConnectorZeroSupported false -> Rejected for connector 0 (5.13)
    assert (await _reserve(b, cid=0))["status"] == "Rejected"
    assert (await _reserve(b, rid=7, tag="A"))["status"] == "Accepted"
    # the same reservationId replaces the reservation
    assert (await _reserve(b, rid=7, tag="B"))["status"] == "Accepted"
    assert b.cp.reservation["tag"] == "B"
    # 5.1: CancelReservation of an unknown id Rejected, of the known one Accepted
    assert (await b.ok("CancelReservation", {"reservationId": 8}))["status"] == "Rejected"
    assert (await b.ok("CancelReservation", {"reservationId": 7}))["status"] == "Accepted"
    await b.run(300)
    assert b.backend.statuses(1)[-1] == ("Available", "NoError")  # G1
    assert not b.st.charger.reserved
    # Occupied while a car is there, Unavailable, Faulted
    await b.charge()
    assert (await _reserve(b, rid=9))["status"] == "Occupied"
    await b.unplug()
    await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    assert (await _reserve(b, rid=9))["status"] == "Unavailable"
    await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Operative"})
    b.act("temp", 80)
    await b.run(2000)
    assert (await _reserve(b, rid=9))["status"] == "Faulted"
    assert b.cp.reservation is None


@pytest.mark.parametrize("how", ["Unavailable", "Faulted"])
@aio
async def test_reservation_ends_when_the_connector_becomes_unavailable_or_faulted(tmp_path, how):
    # 5.13: "A reservation SHALL be terminated ... (3) when the Charge Point or connector are set
    # to Faulted or Unavailable."
    b = await Bench.start(tmp_path)
    assert (await _reserve(b, secs=3600))["status"] == "Accepted"
    if how == "Unavailable":
        await b.ok("ChangeAvailability", {"connectorId": 0, "type": "Inoperative"})
    else:
        b.act("temp", 80)
    await b.run(2000)
    assert b.backend.statuses(1)[-1][0] == how
    assert b.cp.reservation is None and not b.st.charger.reserved
    assert b.ocpp_state()["r"] is None
    assert (await b.ok("CancelReservation", {"reservationId": 7}))["status"] == "Rejected"


@aio
async def test_reservation_survives_a_reboot(tmp_path):
    b = await Bench.start(tmp_path)
    assert (await _reserve(b, secs=3600))["status"] == "Accepted"
    b.halt()
    b2 = await Bench.start(tmp_path)
    assert b2.st.charger.reserved and b2.cp.reservation["id"] == 7
    assert b2.backend.statuses(1) == [("Reserved", "NoError")]
    await b2.plug()
    b2.act("ev-ready", 16)
    assert not b2.st.charger.session


# ============================================================================== smart charging

def _profile(limit, purpose="TxDefaultProfile", pid=1, level=0):
    return {"chargingProfileId": pid, "stackLevel": level, "chargingProfilePurpose": purpose,
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "A",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit}]}}


@aio
async def test_composite_schedule_without_a_profile_is_the_limit_the_charger_applies(tmp_path):
    """5.7 / errata: with no profile installed GetCompositeSchedule is Accepted and tells the
    limit the charger applies by itself (here the board's 32 A; in W with its three phases)."""
    b = await Bench.start(tmp_path)
    comp = await b.ok("GetCompositeSchedule", {"connectorId": 1, "duration": 600})
    assert comp["status"] == "Accepted"
    assert comp["chargingSchedule"]["chargingRateUnit"] == "A" and comp["chargingSchedule"]["duration"] == 600
    assert comp["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32}]
    comp = await b.ok("GetCompositeSchedule", {"connectorId": 0, "duration": 600, "chargingRateUnit": "W"})
    assert comp["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 32 * 230 * 3}]
    b.st.charger.limits.claim("settings", 160)  # a lower limit of the charger's own
    comp = await b.ok("GetCompositeSchedule", {"connectorId": 1, "duration": 600})
    assert comp["chargingSchedule"]["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16}]


@aio
async def test_set_charging_profile_lowers_the_offer_and_composite_schedule(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    c = b.st.charger
    assert c.offer_da == 320
    # a Relative TxDefaultProfile is in force from the start of the transaction (3.13, 7.8)
    ans = await b.ok("SetChargingProfile", {"connectorId": 0, "csChargingProfiles": _profile(10)})
    assert ans["status"] == "Accepted"
    await b.run(6000)  # the offer changes at most once per 5 s (limits.py)
    assert c.limits.claims()[smart.CLAIM] == 100
    assert c.offer_da == 100 and c.contactor
    # 5.7: GetCompositeSchedule, scheduleStart outside the chargingSchedule (errata 3.57)
    comp = await b.ok("GetCompositeSchedule", {"connectorId": 1, "duration": 3600, "chargingRateUnit": "A"})
    assert comp["status"] == "Accepted" and comp["connectorId"] == 1
    assert "startSchedule" not in comp["chargingSchedule"]
    assert abs(dt.parse(comp["scheduleStart"]) - b.cp.wall.now()) <= 1
    assert comp["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 10
    assert (await b.ok("GetCompositeSchedule", {"connectorId": 2, "duration": 60}))["status"] == "Rejected"
    # ChargePointMaxProfile lower still wins (3.13.1)
    ans = await b.ok("SetChargingProfile", {"connectorId": 0, "csChargingProfiles":
                                            dict(_profile(8, "ChargePointMaxProfile", pid=2), chargingProfileKind="Absolute",
                                                 chargingSchedule={"chargingRateUnit": "A", "startSchedule": dt.iso(b.cp.wall.now()),
                                                                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 8}]})})
    assert ans["status"] == "Accepted"
    await b.run(6000)
    assert c.offer_da == 80
    # 5.5: ClearChargingProfile -> the offer comes back
    assert (await b.ok("ClearChargingProfile", {}))["status"] == "Accepted"
    await b.run(6000)
    assert smart.CLAIM not in c.limits.claims() and c.offer_da == 320
    assert (await b.ok("ClearChargingProfile", {"id": 99}))["status"] == "Unknown"


@aio
async def test_set_charging_profile_refusals(tmp_path):
    b = await Bench.start(tmp_path)
    # a TxProfile without a transaction (5.16: Rejected)
    ans = await b.ok("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": _profile(10, "TxProfile")})
    assert ans["status"] == "Rejected"
    assert b.st.charger.limits.claims().get(smart.CLAIM) is None


# ============================================================================== TriggerMessage (5.17)

@aio
async def test_triggered_message_waits_for_a_slow_answer(tmp_path):
    # 5.17: "SHALL first send the TriggerMessage response, before sending the requested message",
    # also when writing the response takes a while (the sender polls every 100 ms meanwhile)
    b = await Bench.start(tmp_path)
    b.link.answer_ms = 450
    for what in ("StatusNotification", "Heartbeat", "MeterValues"):
        n = len(b.backend.frames)
        b.link.push([2, "t-" + what, "TriggerMessage", {"requestedMessage": what, "connectorId": 1}])
        await b.run(1500)
        new = b.backend.frames[n:]
        assert new[0][:2] == [3, "t-" + what] and new[1][0] == 2 and new[1][2] == what, new
    # an answer and a call of our own do not overtake each other either
    n = len(b.backend.frames)
    b.link.push([2, "r1", "ChangeAvailability", {"connectorId": 0, "type": "Inoperative"}])
    await b.run(1500)
    assert b.backend.frames[n][:2] == [3, "r1"]
    assert [f[3]["status"] for f in b.backend.frames[n + 1:] if f[0] == 2] == ["Unavailable", "Unavailable"]


@aio
async def test_trigger_message_each_requested_message(tmp_path):
    b = await Bench.start(tmp_path)
    b.link.yield_in_send = True  # writes that suspend, as on a socket: order still holds

    async def trigger(what, cid=None):
        p = {"requestedMessage": what}
        if cid is not None:
            p["connectorId"] = cid
        n = len(b.backend.frames)
        ans = await b.ok("TriggerMessage", p)
        await b.run(300)
        new = b.backend.frames[n:]
        return ans["status"], new

    for what in ("BootNotification", "Heartbeat", "DiagnosticsStatusNotification", "FirmwareStatusNotification"):
        status, new = await trigger(what)
        assert status == "Accepted"
        # 5.17: "SHALL first send the TriggerMessage response, before sending the requested message"
        assert new[0][0] == 3 and new[1][0] == 2 and new[1][2] == what, (what, new)
        if what.endswith("StatusNotification"):
            assert new[1][3] == {"status": "Idle"}
    # StatusNotification without connectorId: connector 0 and every connector
    status, new = await trigger("StatusNotification")
    assert status == "Accepted" and new[0][0] == 3
    assert [(f[2], f[3]["connectorId"]) for f in new[1:] if f[0] == 2] == [("StatusNotification", 0), ("StatusNotification", 1)]
    status, new = await trigger("StatusNotification", 1)
    assert [(f[2], f[3]["connectorId"]) for f in new[1:] if f[0] == 2] == [("StatusNotification", 1)]
    # MeterValues without a transaction: no transactionId, context Trigger
    status, new = await trigger("MeterValues", 1)
    mv = [f[3] for f in new if f[0] == 2 and f[2] == "MeterValues"]
    assert status == "Accepted" and len(mv) == 1 and "transactionId" not in mv[0]
    assert mv[0]["meterValue"][0]["sampledValue"][0]["context"] == "Trigger"
    await b.charge()
    await b.run(300)
    status, new = await trigger("MeterValues")
    mv = [f[3] for f in new if f[0] == 2 and f[2] == "MeterValues"]
    assert mv[0]["transactionId"] == b.backend.next_tid
    power = [s for s in mv[0]["meterValue"][0]["sampledValue"] if s["measurand"] == "Power.Active.Import"]
    assert float(power[0]["value"]) > 10000  # the most recent measurements (5.17)
    # a connector that does not exist
    assert (await trigger("StatusNotification", 2))[0] == "Rejected"


# ============================================================================== bad input

@aio
async def test_malformed_frames_get_call_errors_and_change_nothing(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    await b.run(500)
    c = b.st.charger
    cfg_file = os.path.join(str(tmp_path), cp_mod.CONFIG_FILE)
    before = (c.available, c.authorized, c.contactor, c.session, b.cp.reservation, dict(c.limits.claims()),
              os.path.exists(cfg_file), b.ocpp_state(), b.cp.config.get("HeartbeatInterval"))
    n_calls = len(b.backend.calls)
    cases = [
        ("not json", "-1", rpc_mod.FORMATION),
        ('{"a": 1}', "-1", rpc_mod.FORMATION),
        ('[2, "m1", "Reset"]', "m1", rpc_mod.FORMATION),
        ('[2, "m2", "Reset", {"type": "Sideways"}]', "m2", rpc_mod.PROPERTY),
        ('[2, "m3", "ChangeAvailability", {"connectorId": "1", "type": "Inoperative"}]', "m3", rpc_mod.TYPE),
        ('[2, "m4", "ChangeAvailability", {"type": "Inoperative"}]', "m4", rpc_mod.OCCURENCE),
        ('[2, "m5", "ChangeConfiguration", {"key": "HeartbeatInterval", "value": "5", "x": 1}]', "m5", rpc_mod.OCCURENCE),
        ('[2, "m6", "BeamMeUp", {}]', "m6", rpc_mod.NOT_IMPLEMENTED),
        ('[2, "m7", "Heartbeat", {}]', "m7", rpc_mod.NOT_SUPPORTED),  # a Charge Point's own action
        ('[2, "%s", "Reset", {"type": "Hard"}]' % ("x" * 37), "x" * 37, rpc_mod.FORMATION),
        ('[2, "m8", "RemoteStopTransaction", {"transactionId": 1.5}]', "m8", rpc_mod.TYPE),
        ('[2, "m9", "ReserveNow", {"connectorId": 1, "expiryDate": "tomorrow", "idTag": "A", "reservationId": 1}]',
         "m9", rpc_mod.PROPERTY),
    ]
    for text, uid, code in cases:
        n = len(b.backend.frames)
        b.link.push(text)
        await b.settle()
        new = b.backend.frames[n:]
        assert len(new) == 1 and new[0][0] == 4, (text, new)
        assert new[0][1] == uid and new[0][2] == code, (text, new)
    # J 4.1.3: an unknown message type is ignored; stray results and errors are not answered
    n = len(b.backend.frames)
    for text in ('[5, "z1", {}]', '[3, "nobody", {}]', '[4, "nobody", "GenericError", "", {}]', '[3]'):
        b.link.push(text)
    await b.settle()
    assert b.backend.frames[n:] == []
    await b.run(1000)
    after = (c.available, c.authorized, c.contactor, c.session, b.cp.reservation, dict(c.limits.claims()),
             os.path.exists(cfg_file), b.ocpp_state(), b.cp.config.get("HeartbeatInterval"))
    assert after[:7] == before[:7] and after[8] == before[8]
    assert {k: after[7][k] for k in "spor"} == {k: before[7][k] for k in "spor"}
    assert len(b.backend.calls) == n_calls and b.reboots == []
    # the link still works
    assert (await b.ok("DataTransfer", {"vendorId": "x"}))["status"] == "UnknownVendorId"


@aio
async def test_a_bad_answer_to_our_call_is_not_believed(tmp_path):
    b = await Bench.start(tmp_path, up=False)
    b.backend.hold.add("BootNotification")
    await b.up()
    uid = b.backend.held[0][0]
    b.backend.held.clear()
    b.link.push([3, uid, {"status": "Accepted", "currentTime": "yesterday", "interval": 10}])
    await b.settle()
    await b.run(300)
    assert not b.cp.accepted and not b.cp.wall.synced  # rejected by the response schema
    assert b.backend.actions() == ["BootNotification"]


# ============================================================================== true times (issue 11, item 8)

HOURLY = {"currency": "EUR", "tariffs": {"hourly": {"per_kwh": 0, "per_hour": 36}}, "default": "hourly"}  # 1 cent a second


def session_cost(backend):
    """Cents of the SessionCost DataTransfers the back end received, in order."""
    out = []
    for p in backend.sent("DataTransfer"):
        if p.get("messageId") == "SessionCost":
            euros, cents = json.loads(p["data"])["cost"].split(".")
            out.append(int(euros) * 100 + int(cents))
    return out


@aio
async def test_a_session_begun_before_the_time_was_known_is_billed_from_its_true_start(tmp_path):
    # Nothing is billed on a guessed time: with the old estimate (1970 on a new charger) a
    # per-hour tariff billed 56 years as soon as the back end told the time.
    b = await Bench.start(tmp_path, up=False, tariffs=HOURLY)
    plugged = b.backend.epoch()
    b.act("plug", 32)
    b.act("ev-ready", 16)
    await b.run(1000)
    await b.up()  # the time, a second after power-on
    await b.idle(59000)
    await b.unplug()
    await b.run(2000)
    start = b.backend.sent("StartTransaction")[0]
    assert abs(dt.parse(start["timestamp"]) - plugged) <= 1
    assert session_cost(b.backend) == [pytest.approx(60, abs=2)]  # a minute at 1 cent a second
    closed = list(b.st.keeper.journal.records())[-1]
    assert abs(closed["t0"] - plugged) <= 1 and abs(closed["t"] - (plugged + 61)) <= 2


@aio
async def test_a_power_cut_stops_the_session_when_it_was_last_known_alive_and_bills_no_outage(tmp_path):
    b = await Bench.start(tmp_path, tariffs=HOURLY)
    await b.charge()
    t0 = dt.parse(b.backend.sent("StartTransaction")[0]["timestamp"])
    await b.idle(150000)
    cut = b.backend.epoch()
    b.halt()  # the power goes for 40 s
    b2 = await Bench.start(tmp_path, tariffs=HOURLY, boot={})
    b2.backend.time_shift = b.T // 1000 + 40  # the back end's clock went on meanwhile
    await b2.up()
    await b2.run(8000)
    stop = b2.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "PowerLoss"
    t1 = dt.parse(stop["timestamp"])
    from firmware import session as session_mod
    assert cut - session_mod.PROGRESS_S <= t1 <= cut  # when it was last known alive, not when power came back
    # billed up to then: not the 40 s without power
    assert session_cost(b2.backend) == [pytest.approx(t1 - t0, abs=1)]


SWITCHING = dict(PROFILE, phase_switch={"pin": 15, "active_high": True})


def _phases_profile(limit, phases):
    """A TxDefaultProfile as evcc sends it to switch phases: amps, and numberPhases."""
    p = _profile(limit)
    p["chargingSchedule"]["chargingSchedulePeriod"][0]["numberPhases"] = phases
    return p


@aio
async def test_number_phases_of_a_tx_default_profile_switches_a_charger_that_can(tmp_path):
    b = await Bench.start(tmp_path, profile=SWITCHING)
    c = b.st.charger
    key = await b.ok("GetConfiguration", {"key": ["ConnectorSwitch3to1PhaseSupported"]})
    assert key["configurationKey"][0]["value"] == "true"
    await b.charge()
    ans = await b.ok("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": _phases_profile(16, 1)})
    assert ans["status"] == "Accepted"
    await b.run(200)
    assert c.phases_wanted == 1
    await b.run(12000)  # the offer withdrawn, the car leaves C or stops drawing, the switch, 2 s, the offer
    assert c.supply_phases == 1 and not c.switching and c.offer_da == 160
    ans = await b.ok("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": _phases_profile(16, 3)})
    await b.run(12000)
    assert c.phases_wanted == 3 and c.supply_phases == 3
    assert (await b.ok("ClearChargingProfile", {}))["status"] == "Accepted"
    await b.run(200)
    assert c.phases_wanted == 3 and smart.CLAIM not in c.limits.claims()


@aio
async def test_a_charger_without_a_phase_switch_says_so_and_keeps_its_phases(tmp_path):
    b = await Bench.start(tmp_path)
    key = await b.ok("GetConfiguration", {"key": ["ConnectorSwitch3to1PhaseSupported"]})
    assert key["configurationKey"][0]["value"] == "false"
    await b.charge()
    await b.ok("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": _phases_profile(16, 1)})
    await b.run(6000)
    assert b.st.charger.phases_wanted == 3 and b.st.charger.supply_phases == 3
    assert b.st.charger.offer_da == 160


@aio
async def test_a_power_limit_holds_across_a_switch_to_one_phase(tmp_path):
    """A limit in W becomes amps with the phases the car is supplied with: 4,600 W is 6.6 A on
    three phases and 20 A on one."""
    b = await Bench.start(tmp_path, profile=SWITCHING)
    c = b.st.charger
    await b.charge()
    p = _profile(4600)
    p["chargingSchedule"]["chargingRateUnit"] = "W"
    await b.ok("SetChargingProfile", {"connectorId": 1, "csChargingProfiles": p})
    await b.run(6000)
    assert c.limits.claims()[smart.CLAIM] == 66
    c.claim_phases("energy", 1)
    await b.run(12000)
    assert c.supply_phases == 1 and c.limits.claims()[smart.CLAIM] == 200
