#!/usr/bin/env python3
"""The development OCPP 1.6J back end (central system) for the firmware, the simulator and the tests.

    python3 tools/csms.py serve [--host 127.0.0.1] [--port 9000] [--control-port 9001] [--db FILE]
                                [--tls-cert FILE --tls-key FILE] [--boot-answer Accepted|Pending|Rejected]
                                [--heartbeat 300] [--password CP=SECRET ...] [--auth-required]
                                [--unknown-token Invalid|Accepted] [--ping-interval 20] [--quiet]
    python3 tools/csms.py sessions [--db FILE] [--cp CP] [--json]
    python3 tools/csms.py frames   [--db FILE] [--cp CP] [--invalid] [--action A] [--direction in|out] [--limit N] [--json]
    python3 tools/csms.py send CP ACTION JSON [--control URL] [--timeout S] [--no-validate]
    python3 tools/csms.py raw CP TEXT [--binary] [--control URL] [--timeout S]
    python3 tools/csms.py statuses [--db FILE] [--cp CP] [--check] [--json]
    python3 tools/csms.py tokens   [--db FILE]
    python3 tools/csms.py token IDTAG [--status Accepted|Blocked|Expired|Invalid|ConcurrentTx]
                                [--parent IDTAG] [--expiry ISO-TIME] [--remove] [--db FILE]

Charge points connect to ws://HOST:PORT/CHARGEBOXID (wss:// with --tls-cert/--tls-key) and must
offer the WebSocket subprotocol `ocpp1.6`; a connection without it completes the handshake without
a subprotocol and is closed at once, as OCPP-J 1.6 section 3.1 says. A charge point with a password
(--password, security profile 1/2) must send HTTP basic auth with user = its id; --auth-required
refuses charge points that have none.

Every frame is checked with the `ocpp` package (the official OCPP 1.6 JSON schemas) plus the
RFC 3339 form of its date-time fields, and stored with its verdict: `frames --invalid` lists the
frames that failed and exits 1 when there is one (0: all frames valid). Everything else lands in an
SQLite database (--db, default build/csms.db): charge points, connections, boots, the status
history, transactions, meter values (absent sampled-value fields stored with the spec's defaults),
tokens and every frame received and sent.

`raw` sends any text (or, with --binary, base64 bytes) to a connected charge point as one WebSocket message,
for fuzzing: it is stored as an outgoing frame with its own verdict, and the answer with the same uniqueId
(checked too: a CallResult to a malformed Call is flagged) is printed; exit 1 when none came in time.

`statuses` lists the status history and checks it against the connector status transition table of OCPP 1.6
section 4.9 as amended by errata 3.20 (STATUS_TRANSITIONS below), per charge point and connector: the first
status after a BootNotification or a new connection may be anything, an unchanged status is no transition,
Faulted returns to the status before it (or to one that status may change to), connector 0 only knows
Available, Unavailable and Faulted. --check exits 1 when a change is not allowed.

The control API listens on 127.0.0.1:CONTROL-PORT and speaks JSON:
    POST /command   {"cp": "CP1", "action": "Reset", "payload": {"type": "Soft"}, "timeout": 30, "validate": true}
                    -> {"cp", "action", "uniqueId", "result": {...}} or {"error": {"code", "description", "details"}},
                       plus "valid"/"validationError" for the charge point's answer;
                       400 bad request, 404 charge point not connected, 504 no answer in time
    POST /raw       {"cp": "CP1", "text": "[2,\"x1\",\"Reset\",{}]", "timeout": 5}   (or "binary": "BASE64")
                    (or "texts": [up to 50 texts, sent back to back] -> {"cp", "answers": [per text
                     "CallResult", the CallError's code or null]})
                    -> {"answer": "<the charge point's frame with the same uniqueId>" or null, "frames": [...],
                        "uniqueId", "frameId", "valid", "error" (the verdict on the frame sent), "cp"}
    GET  /violations[?cp=CP1]   -> {"count", "violations": [{cp, connector, from, to, at, timestamp, id, why}]}
    GET  /status    GET /status/CP1     GET /sessions[?cp=CP1]     GET /sessions/ID (with meter values)
    GET  /frames?cp=CP1&invalid=1&direction=in&action=StatusNotification&since=ID&limit=N
    GET  /wait?cp=CP1&action=StatusNotification&match={"status":"Charging"}&since=ID&timeout=10
    GET  /tokens    POST /tokens {"idTag", "status", "parentIdTag", "expiryDate"}    DELETE /tokens/IDTAG
    GET  /settings  POST /settings {"bootAnswer": "Pending", "heartbeat": 60, "unknownToken": "Invalid"}
"cp" may be left out of POST /command and POST /raw while exactly one charge point is connected.

As a library (tests, the simulator):
    async with Csms(port=0, db=path) as c:               # c.port, c.url, c.control_url, c.cp_url("CP1")
        await c.wait_for("CP1", "BootNotification")
        answer = await c.send("CP1", "Reset", {"type": "Soft"})
        raw = await c.send_raw("CP1", '[2,"f1","Reset",{"type":"Warm"}]', timeout=5)   # raw["answer"]: text
        assert c.status_violations() == []
        assert c.invalid_frames() == []
    with CsmsThread(port=0, db=path) as c:               # the same, synchronous, loop in a thread
        c.wait_for("CP1", "StatusNotification", {"status": "Charging"}, timeout=10)

Exit status: 0 done, 1 failed (a command answered with a CallError, no answer, an invalid frame
found by `frames --invalid`, a status change found by `statuses --check`, the port in use), 2 bad
command-line input.
"""
import argparse
import asyncio
import base64
import binascii
import copy
import datetime
import decimal
import hmac
import http
import json
import logging
import os
import re
import signal
import sqlite3
import ssl
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

if __name__ == "__main__":
    _venv.ensure()  # the imports below live in the project's venv

from jsonschema import Draft4Validator, FormatChecker  # noqa: E402
from ocpp.exceptions import OCPPError  # noqa: E402
from ocpp.messages import Call, CallResult, get_validator, validate_payload  # noqa: E402
from ocpp.routing import on  # noqa: E402
from ocpp.v16 import ChargePoint as _OcppChargePoint  # noqa: E402
from ocpp.v16 import call_result  # noqa: E402
import websockets  # noqa: E402
from websockets.asyncio.server import serve as _ws_serve  # noqa: E402

ROOT = _venv.ROOT
DEFAULT_DB = os.path.join(ROOT, "build", "csms.db")
SUBPROTOCOL = "ocpp1.6"

# What a charge point sends (handled here) and what the central system sends (commands).
CP_ACTIONS = (
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
    "Heartbeat", "MeterValues", "StartTransaction", "StatusNotification", "StopTransaction",
    # security extension (whitepaper edition 2)
    "LogStatusNotification", "SecurityEventNotification", "SignCertificate", "SignedFirmwareStatusNotification",
)
COMMANDS = (
    "CancelReservation", "ChangeAvailability", "ChangeConfiguration", "ClearCache", "ClearChargingProfile",
    "DataTransfer", "GetCompositeSchedule", "GetConfiguration", "GetDiagnostics", "GetLocalListVersion",
    "RemoteStartTransaction", "RemoteStopTransaction", "ReserveNow", "Reset", "SendLocalList",
    "SetChargingProfile", "TriggerMessage", "UnlockConnector", "UpdateFirmware",
    # security extension
    "CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds", "GetLog",
    "InstallCertificate", "SignedUpdateFirmware",
)
BOOT_ANSWERS = ("Accepted", "Pending", "Rejected")
TOKEN_STATUSES = ("Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx")
# OCPP-J 1.6 section 4.2.3, plus the corrected spellings of errata 5.1/5.2 (which the 1.6 errata leaves
# unfixed, and which the `ocpp` package itself sends: FormatViolation).
ERROR_CODES = ("NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError",
               "FormationViolation", "PropertyConstraintViolation", "OccurenceConstraintViolation",
               "TypeConstraintViolation", "GenericError", "FormatViolation", "OccurrenceConstraintViolation")
SAMPLE_DEFAULTS = {"measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic",
                   "format": "Raw", "location": "Outlet"}

_OCPP_LOG = logging.getLogger("csms.ocpp")  # the ocpp package's own log (tracebacks for every CallError)
_OCPP_LOG.propagate = False
_OCPP_LOG.addHandler(logging.NullHandler())


class CsmsError(Exception):
    """A request the back end cannot carry out (bad action, bad payload); the message says why."""


class NotConnected(CsmsError):
    pass


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc)


def iso(t=None, ms=True):
    """ISO 8601 UTC with a Z: milliseconds in the database, whole seconds on the wire."""
    t = t or utc_now()
    if ms:
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def is_date_time(text):
    """RFC 3339 date-time, as the schemas' "format": "date-time" asks."""
    if not isinstance(text, str):
        return True  # the type check reports it
    if not _DATE_TIME.match(text):
        return False
    try:
        datetime.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def parse_time(text):
    try:
        return datetime.datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(is_date_time)
_format_validators = {}


# The ocpp package reads these schemas with Decimal floats (multipleOf 0.1) and caches one validator per
# schema: ask for them the same way, or its own validation of these actions would break.
_DECIMAL_SCHEMAS = {(2, "SetChargingProfile"), (2, "RemoteStartTransaction"), (3, "GetCompositeSchedule")}


def _format_errors(message_type, action, payload):
    key = (message_type, action)
    v = _format_validators.get(key)
    if v is None:
        pf = decimal.Decimal if key in _DECIMAL_SCHEMAS else float
        schema = json.loads(json.dumps(get_validator(message_type, action, "1.6", parse_float=pf).schema, default=float))
        v = Draft4Validator(schema, format_checker=_FORMATS)
        _format_validators[key] = v
    return ["%s: %r is not an RFC 3339 date-time" % ("/".join(str(p) for p in e.absolute_path) or "payload", e.instance)
            for e in v.iter_errors(payload) if e.validator == "format"]


def _ocpp_error_text(e):
    cause = (e.details or {}).get("cause") if isinstance(e.details, dict) else None
    return "%s: %s" % (e.code, str(cause or e.description).split("\n\n")[0])


async def check_payload(message_type, action, payload, unique_id="x"):
    """None when `payload` is a valid `action` request (message_type 2) or answer (3), else why not."""
    msg = Call(unique_id, action, copy.deepcopy(payload)) if message_type == 2 else \
        CallResult(unique_id, copy.deepcopy(payload), action)
    try:
        await validate_payload(msg, "1.6")
    except OCPPError as e:
        return _ocpp_error_text(e)
    errors = _format_errors(message_type, action, payload)
    return "FormatViolation: " + "; ".join(errors) if errors else None


def check_frame_shape(frame, echo=False):
    """None when `frame` (parsed JSON) has the shape of an OCPP-J message, else why not. echo: an answer
    of ours, whose UniqueId repeats the caller's whatever its length."""
    if not isinstance(frame, list) or not frame:
        return "ProtocolError: a frame is a JSON array [MessageTypeId, UniqueId, ...]"
    kind = frame[0]
    sizes = {2: 4, 3: 3, 4: 5}
    if type(kind) is not int or kind not in sizes:  # (a list or dict is not hashable)
        return "PropertyConstraintViolation: MessageTypeId %r is not 2, 3 or 4" % (kind,)
    if len(frame) != sizes[kind]:
        return "ProtocolError: a message of type %d has %d elements, got %d" % (kind, sizes[kind], len(frame))
    if not isinstance(frame[1], str) or not frame[1]:
        return "TypeConstraintViolation: UniqueId must be a non-empty string, got %r" % (frame[1],)
    if len(frame[1]) > 36 and not echo:
        return "TypeConstraintViolation: UniqueId is %d characters, at most 36" % len(frame[1])
    if kind == 2 and (not isinstance(frame[2], str) or not isinstance(frame[3], dict)):
        return "TypeConstraintViolation: a Call is [2, id, \"Action\", {payload}]"
    if kind == 3 and not isinstance(frame[2], dict):
        return "TypeConstraintViolation: a CallResult is [3, id, {payload}]"
    if kind == 4:
        if frame[2] not in ERROR_CODES:
            return "PropertyConstraintViolation: errorCode %r is not an OCPP-J 1.6 error code (%s)" % (
                frame[2], ", ".join(ERROR_CODES))
        if not isinstance(frame[3], str) or not isinstance(frame[4], dict):
            return "TypeConstraintViolation: a CallError is [4, id, \"errorCode\", \"description\", {details}]"
    return None


def matches(payload, match):
    """`match` is None, a callable on the payload, or a dict every key of which the payload has equal."""
    if match is None:
        return True
    if callable(match):
        return bool(match(payload))
    return isinstance(payload, dict) and all(k in payload and payload[k] == v for k, v in match.items())


# ---------------------------------------------------------------------------------------------- status transitions

# OCPP 1.6 section 4.9, the connector status transition table, with errata 3.20 (B6 Preparing -> Finishing,
# already in edition 2's table). The spec's code is the row letter of the previous status (A Available ...
# I Faulted) and the column digit of the new one (1 Available ... 9 Faulted); a pair that is not here is
# not allowed. A status repeated unchanged (a new errorCode, a TriggerMessage, the report after a boot) is
# no transition.
STATUS_TRANSITIONS = {
    "Available":     {"Preparing": "A2",      # usage initiated: plug in, idTag, RemoteStartTransaction
                      "Charging": "A3",       # no authorization means needed
                      "SuspendedEV": "A4",    # as A3, the EV does not start charging
                      "SuspendedEVSE": "A5",  # as A3, the EVSE does not allow charging
                      "Reserved": "A7",       # ReserveNow
                      "Unavailable": "A8",    # ChangeAvailability Inoperative
                      "Faulted": "A9"},
    "Preparing":     {"Available": "B1",      # usage ended: unplugged, idTag again, ConnectionTimeOut
                      "Charging": "B3", "SuspendedEV": "B4", "SuspendedEVSE": "B5",
                      "Finishing": "B6",      # errata 3.20: timed out without an idTag, cable still in
                      "Faulted": "B9"},
    "Charging":      {"Available": "C1", "SuspendedEV": "C4", "SuspendedEVSE": "C5",
                      "Finishing": "C6",      # stopped by the user or RemoteStop, user action needed
                      "Unavailable": "C8", "Faulted": "C9"},
    "SuspendedEV":   {"Available": "D1", "Charging": "D3", "SuspendedEVSE": "D5", "Finishing": "D6",
                      "Unavailable": "D8", "Faulted": "D9"},
    "SuspendedEVSE": {"Available": "E1", "Charging": "E3", "SuspendedEV": "E4", "Finishing": "E6",
                      "Unavailable": "E8", "Faulted": "E9"},
    "Finishing":     {"Available": "F1",      # all user actions completed
                      "Preparing": "F2",      # user restarts: a new transaction
                      "Unavailable": "F8", "Faulted": "F9"},
    "Reserved":      {"Available": "G1",      # reservation expired or cancelled
                      "Preparing": "G2",      # the reservation's idTag presented
                      "Unavailable": "G8", "Faulted": "G9"},
    "Unavailable":   {"Available": "H1", "Preparing": "H2", "Charging": "H3", "SuspendedEV": "H4",
                      "SuspendedEVSE": "H5", "Faulted": "H9"},
    # I1-I8: "fault is resolved and status returns to the pre-fault state". Checked as: back to the status
    # before Faulted, or to one that status may change to (the car may have left during the fault).
    "Faulted":       {"Available": "I1", "Preparing": "I2", "Charging": "I3", "SuspendedEV": "I4",
                      "SuspendedEVSE": "I5", "Finishing": "I6", "Reserved": "I7", "Unavailable": "I8"},
}
CONNECTOR0_STATUSES = ("Available", "Unavailable", "Faulted")  # 4.9: the only ones for connectorId 0


def _transition_error(frm, to, pre_fault):
    """None when a connector may go from `frm` to `to` (pre_fault: the status before a Faulted `frm`,
    None when unknown), else why not."""
    if frm == to:
        return None
    if frm == "Faulted":
        if pre_fault is None or to == pre_fault or to in STATUS_TRANSITIONS[pre_fault]:
            return None
        return "Faulted -> %s: a resolved fault returns to the pre-fault state (I1-I8), which was %s, " \
               "and %s -> %s is not in the table either" % (to, pre_fault, pre_fault, to)
    if to in STATUS_TRANSITIONS.get(frm, {}):
        return None
    return "%s -> %s is not in the OCPP 1.6 status transition table (section 4.9)" % (frm, to)


def status_transition_violations(rows):
    """The status changes in `rows` (status_history rows in order: cp, connector, status, epoch, time,
    timestamp, id) that the table of section 4.9 does not allow, as dicts {cp, connector, from, to, at,
    timestamp, id, why}. Per charge point and connector; the first status of a connector in each epoch
    (after a BootNotification or a new connection: 4.9 says a charge point back online reports only its
    current status) may be anything. Connector 0 only has Available, Unavailable and Faulted."""
    out = []
    last = {}  # (cp, connector) -> (status, pre-fault status, epoch)
    for r in rows:
        key = (r["cp"], r["connector"])
        status, epoch = r["status"], r.get("epoch")
        prev = last.get(key)
        if prev is not None and prev[2] != epoch:
            prev = None
        why = None
        if r["connector"] == 0 and status not in CONNECTOR0_STATUSES:
            why = "connector 0 only reports Available, Unavailable or Faulted (section 4.9), not %s" % status
        elif prev is not None:
            why = _transition_error(prev[0], status, prev[1])
        if why:
            out.append({"cp": r["cp"], "connector": r["connector"], "from": prev[0] if prev else None,
                        "to": status, "at": r["time"], "timestamp": r.get("timestamp"), "id": r.get("id"),
                        "why": why})
        pre_fault = None
        if status == "Faulted" and prev is not None:
            pre_fault = prev[1] if prev[0] == "Faulted" else prev[0]
        last[key] = (status, pre_fault, epoch)
    return out


# ---------------------------------------------------------------------------------------------- storage

SCHEMA = """
CREATE TABLE IF NOT EXISTS charge_points (id TEXT PRIMARY KEY, password TEXT, first_seen TEXT, last_seen TEXT,
    connected INTEGER NOT NULL DEFAULT 0, vendor TEXT, model TEXT, serial TEXT, firmware TEXT, boot_status TEXT,
    last_boot TEXT, last_heartbeat TEXT);
CREATE TABLE IF NOT EXISTS connections (id INTEGER PRIMARY KEY, time TEXT, cp TEXT, event TEXT, detail TEXT);
CREATE TABLE IF NOT EXISTS boots (id INTEGER PRIMARY KEY, time TEXT, cp TEXT, vendor TEXT, model TEXT, serial TEXT,
    firmware TEXT, payload TEXT, status TEXT, interval INTEGER);
CREATE TABLE IF NOT EXISTS status_history (id INTEGER PRIMARY KEY, time TEXT, cp TEXT, connector INTEGER,
    status TEXT, error_code TEXT, info TEXT, vendor_id TEXT, vendor_error_code TEXT, timestamp TEXT);
CREATE TABLE IF NOT EXISTS transactions (id INTEGER PRIMARY KEY AUTOINCREMENT, cp TEXT, connector INTEGER,
    id_tag TEXT, auth_status TEXT, meter_start INTEGER, start_time TEXT, reservation_id INTEGER,
    meter_stop INTEGER, stop_time TEXT, stop_id_tag TEXT, reason TEXT, transaction_data TEXT,
    started_at TEXT, stopped_at TEXT, reported_id INTEGER, start_count INTEGER NOT NULL DEFAULT 0,
    stop_count INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meter_values (id INTEGER PRIMARY KEY, time TEXT, cp TEXT, connector INTEGER,
    transaction_id INTEGER, source TEXT, timestamp TEXT, value TEXT, measurand TEXT, phase TEXT, unit TEXT,
    context TEXT, format TEXT, location TEXT);
CREATE TABLE IF NOT EXISTS frames (id INTEGER PRIMARY KEY, time TEXT, cp TEXT, direction TEXT, type INTEGER,
    unique_id TEXT, action TEXT, payload TEXT, valid INTEGER, error TEXT);
CREATE INDEX IF NOT EXISTS frames_cp ON frames (cp, action);
CREATE INDEX IF NOT EXISTS frames_cp_id ON frames (cp, id);
CREATE INDEX IF NOT EXISTS frames_cp_uid ON frames (cp, unique_id);
CREATE TABLE IF NOT EXISTS tokens (id_tag TEXT PRIMARY KEY, status TEXT NOT NULL, parent_id_tag TEXT,
    expiry_date TEXT);
"""


class Store:
    """The back end's SQLite database. One connection, used from one thread at a time."""

    def __init__(self, path):
        self.path = path
        if path != ":memory:":
            d = os.path.dirname(os.path.abspath(path))
            os.makedirs(d, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        self.db.row_factory = sqlite3.Row
        if path != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        cols = [r[1] for r in self.db.execute("PRAGMA table_info(status_history)").fetchall()]
        if "epoch" not in cols:  # a database made before the transition check: its rows have no epoch
            self.db.execute("ALTER TABLE status_history ADD COLUMN epoch TEXT")

    @classmethod
    def open_existing(cls, path):
        if not os.path.exists(path):
            raise CsmsError("no such database: %s (start `csms.py serve --db %s` first)" % (path, path))
        try:
            return cls(path)
        except sqlite3.DatabaseError as e:
            raise CsmsError("%s is not a csms database: %s" % (path, e))

    def close(self):
        self.db.close()

    def _x(self, sql, args=()):
        return self.db.execute(sql, args)

    def _rows(self, sql, args=()):
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    # charge points and connections

    def seen(self, cp, connected=None):
        now = iso()
        self._x("INSERT OR IGNORE INTO charge_points (id, first_seen) VALUES (?, ?)", (cp, now))
        if connected is None:
            self._x("UPDATE charge_points SET last_seen=? WHERE id=?", (now, cp))
        else:
            self._x("UPDATE charge_points SET last_seen=?, connected=? WHERE id=?", (now, int(connected), cp))

    def set_password(self, cp, password):
        self._x("INSERT OR IGNORE INTO charge_points (id) VALUES (?)", (cp,))
        self._x("UPDATE charge_points SET password=? WHERE id=?", (password, cp))

    def password(self, cp):
        r = self._x("SELECT password FROM charge_points WHERE id=?", (cp,)).fetchone()
        return r[0] if r else None

    def connection_event(self, cp, event, detail=""):
        self._x("INSERT INTO connections (time, cp, event, detail) VALUES (?, ?, ?, ?)", (iso(), cp, event, detail))

    def mark_all_disconnected(self):
        self._x("UPDATE charge_points SET connected=0")

    # messages from the charge point

    def boot(self, cp, p, status, interval):
        now = iso()
        self._x("INSERT INTO boots (time, cp, vendor, model, serial, firmware, payload, status, interval) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, cp, p.get("chargePointVendor"), p.get("chargePointModel"),
                 p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"), p.get("firmwareVersion"),
                 json.dumps(p), status, interval))
        self._x("UPDATE charge_points SET vendor=?, model=?, serial=?, firmware=?, boot_status=?, last_boot=? "
                "WHERE id=?", (p.get("chargePointVendor"), p.get("chargePointModel"),
                               p.get("chargePointSerialNumber") or p.get("chargeBoxSerialNumber"),
                               p.get("firmwareVersion"), status, now, cp))

    def heartbeat(self, cp):
        self._x("UPDATE charge_points SET last_heartbeat=? WHERE id=?", (iso(), cp))

    def status(self, cp, p):
        # The epoch (last connection / last boot of this charge point) tells the transition check where the
        # status history starts afresh.
        conn = self._x("SELECT COALESCE(MAX(id), 0) FROM connections WHERE cp=? AND event='connected'",
                       (cp,)).fetchone()[0]
        boot = self._x("SELECT COALESCE(MAX(id), 0) FROM boots WHERE cp=?", (cp,)).fetchone()[0]
        self._x("INSERT INTO status_history (time, cp, connector, status, error_code, info, vendor_id, "
                "vendor_error_code, timestamp, epoch) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (iso(), cp, p.get("connectorId"), p.get("status"), p.get("errorCode"), p.get("info"),
                 p.get("vendorId"), p.get("vendorErrorCode"), p.get("timestamp"), "%d/%d" % (conn, boot)))

    def id_tag_info(self, id_tag, unknown="Invalid"):
        """idTagInfo (camelCase) for `id_tag` from the token table; `unknown` for a tag not in it."""
        r = self._x("SELECT * FROM tokens WHERE id_tag=?", (id_tag,)).fetchone()
        if r is None:
            return {"status": unknown}
        info = {"status": r["status"]}
        if r["parent_id_tag"]:
            info["parentIdTag"] = r["parent_id_tag"]
        if r["expiry_date"]:
            info["expiryDate"] = r["expiry_date"]
            t = parse_time(r["expiry_date"])
            if info["status"] == "Accepted" and t is not None and t.tzinfo and t <= utc_now():
                info["status"] = "Expired"
        return info

    def start_transaction(self, cp, p, auth_status):
        """The transactionId for a StartTransaction; a repeated identical one (a retry whose answer was
        lost) gets the same id and counts in start_count."""
        r = self._x("SELECT id FROM transactions WHERE cp=? AND connector=? AND id_tag=? AND meter_start=? "
                    "AND start_time=? ORDER BY id DESC LIMIT 1",
                    (cp, p.get("connectorId"), p.get("idTag"), p.get("meterStart"), p.get("timestamp"))).fetchone()
        if r is not None:
            self._x("UPDATE transactions SET start_count=start_count+1 WHERE id=?", (r[0],))
            return r[0]
        c = self._x("INSERT INTO transactions (cp, connector, id_tag, auth_status, meter_start, start_time, "
                    "reservation_id, started_at, start_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (cp, p.get("connectorId"), p.get("idTag"), auth_status, p.get("meterStart"),
                     p.get("timestamp"), p.get("reservationId"), iso()))
        return c.lastrowid

    def stop_transaction(self, cp, p):
        """Record a StopTransaction; one for an unknown transactionId (e.g. -1, errata 3.18) gets a row of
        its own with reported_id. A repeated stop counts in stop_count and keeps the first values."""
        tid = p.get("transactionId")
        data = p.get("transactionData")
        r = self._x("SELECT id, stop_count FROM transactions WHERE id=? AND cp=?", (tid, cp)).fetchone()
        if r is None:
            c = self._x("INSERT INTO transactions (cp, reported_id, meter_stop, stop_time, stop_id_tag, reason, "
                        "transaction_data, stopped_at, stop_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
                        (cp, tid, p.get("meterStop"), p.get("timestamp"), p.get("idTag"), p.get("reason"),
                         json.dumps(data) if data is not None else None, iso()))
            row_id = c.lastrowid
        elif r["stop_count"]:
            self._x("UPDATE transactions SET stop_count=stop_count+1 WHERE id=?", (tid,))
            return tid
        else:
            row_id = tid
            self._x("UPDATE transactions SET meter_stop=?, stop_time=?, stop_id_tag=?, reason=?, transaction_data=?, "
                    "stopped_at=?, stop_count=1 WHERE id=?",
                    (p.get("meterStop"), p.get("timestamp"), p.get("idTag"), p.get("reason"),
                     json.dumps(data) if data is not None else None, iso(), tid))
        if data:
            conn = self._x("SELECT connector FROM transactions WHERE id=?", (row_id,)).fetchone()[0]
            self.meter_values(cp, conn, row_id, data, "StopTransaction")
        return row_id

    def meter_values(self, cp, connector, transaction_id, meter_value, source="MeterValues"):
        now = iso()
        for mv in meter_value or ():
            for sv in mv.get("sampledValue") or ():
                self._x("INSERT INTO meter_values (time, cp, connector, transaction_id, source, timestamp, value, "
                        "measurand, phase, unit, context, format, location) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (now, cp, connector, transaction_id, source, mv.get("timestamp"), sv.get("value"),
                         sv.get("measurand", SAMPLE_DEFAULTS["measurand"]), sv.get("phase"),
                         sv.get("unit", SAMPLE_DEFAULTS["unit"]), sv.get("context", SAMPLE_DEFAULTS["context"]),
                         sv.get("format", SAMPLE_DEFAULTS["format"]), sv.get("location", SAMPLE_DEFAULTS["location"])))

    # frames

    def frame(self, cp, direction, kind, unique_id, action, raw, valid, error):
        def text(v):  # lone surrogates (from \\ud800 escapes) can not be stored as UTF-8
            return v.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(v, str) else v

        unique_id, action, raw, error = text(unique_id), text(action), text(raw), text(error)
        c = self._x("INSERT INTO frames (time, cp, direction, type, unique_id, action, payload, valid, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (iso(), cp, direction, kind, unique_id, action, raw, int(valid), error))
        return c.lastrowid

    def last_frame_id(self):
        return self._x("SELECT COALESCE(MAX(id), 0) FROM frames").fetchone()[0]

    def frames(self, cp=None, invalid=None, direction=None, action=None, since=0, limit=None, kind=None):
        where, args = ["id > ?"], [int(since or 0)]
        for col, val in (("cp", cp), ("direction", direction), ("action", action), ("type", kind)):
            if val is not None:
                where.append("%s = ?" % col)
                args.append(val)
        if invalid is not None:
            where.append("valid = ?")
            args.append(0 if invalid else 1)
        sql = "SELECT * FROM frames WHERE %s ORDER BY id" % " AND ".join(where)
        if limit:
            sql = "SELECT * FROM (SELECT * FROM frames WHERE %s ORDER BY id DESC LIMIT %d) ORDER BY id" % (
                " AND ".join(where), int(limit))
        out = []
        for r in self._rows(sql, args):
            r["valid"] = bool(r["valid"])
            try:
                r["frame"] = json.loads(r["payload"])
            except ValueError:
                r["frame"] = None
            out.append(r)
        return out

    # reports

    def sessions(self, cp=None, transaction_id=None):
        where, args = [], []
        if cp is not None:
            where.append("t.cp = ?")
            args.append(cp)
        if transaction_id is not None:
            where.append("t.id = ?")
            args.append(transaction_id)
        rows = self._rows("SELECT t.* FROM transactions t %s ORDER BY t.id" % (
            ("WHERE " + " AND ".join(where)) if where else ""), args)
        for r in rows:
            r["energy_wh"] = None
            if r["meter_start"] is not None and r["meter_stop"] is not None:
                r["energy_wh"] = r["meter_stop"] - r["meter_start"]
            elif r["meter_start"] is not None:
                last = self._x("SELECT value, unit FROM meter_values WHERE transaction_id=? AND cp=? AND "
                               "measurand='Energy.Active.Import.Register' AND phase IS NULL ORDER BY id DESC LIMIT 1",
                               (r["id"], r["cp"])).fetchone()
                if last is not None:
                    try:
                        v = float(last["value"]) * (1000 if last["unit"] == "kWh" else 1)
                        r["energy_wh"] = round(v - r["meter_start"])
                    except (TypeError, ValueError):
                        pass
            r["open"] = r["stop_count"] == 0
            r["transaction_data"] = json.loads(r["transaction_data"]) if r["transaction_data"] else None
        return rows

    def meter_value_rows(self, cp=None, transaction_id=None):
        where, args = [], []
        if cp is not None:
            where.append("cp = ?")
            args.append(cp)
        if transaction_id is not None:
            where.append("transaction_id = ?")
            args.append(transaction_id)
        return self._rows("SELECT * FROM meter_values %s ORDER BY id" % (
            ("WHERE " + " AND ".join(where)) if where else ""), args)

    def status_history(self, cp=None):
        if cp is None:
            return self._rows("SELECT * FROM status_history ORDER BY id")
        return self._rows("SELECT * FROM status_history WHERE cp=? ORDER BY id", (cp,))

    def status_violations(self, cp=None):
        return status_transition_violations(self.status_history(cp))

    def boots(self, cp=None):
        if cp is None:
            return self._rows("SELECT * FROM boots ORDER BY id")
        return self._rows("SELECT * FROM boots WHERE cp=? ORDER BY id", (cp,))

    def connections(self, cp=None):
        if cp is None:
            return self._rows("SELECT * FROM connections ORDER BY id")
        return self._rows("SELECT * FROM connections WHERE cp=? ORDER BY id", (cp,))

    def charge_point_ids(self):
        return [r[0] for r in self._x("SELECT id FROM charge_points ORDER BY id").fetchall()]

    def cp_status(self, cp):
        r = self._x("SELECT * FROM charge_points WHERE id=?", (cp,)).fetchone()
        if r is None:
            return None
        r = dict(r)
        connectors = {}
        for s in self._rows("SELECT * FROM status_history WHERE cp=? AND id IN "
                            "(SELECT MAX(id) FROM status_history WHERE cp=? GROUP BY connector) ORDER BY connector",
                            (cp, cp)):
            connectors[str(s["connector"])] = {k: s[k] for k in ("status", "error_code", "info", "vendor_id",
                                                                  "vendor_error_code", "timestamp", "time")}
        counts = self._x("SELECT COUNT(*), COALESCE(SUM(valid = 0), 0) FROM frames WHERE cp=?", (cp,)).fetchone()
        return {
            "id": cp, "connected": bool(r["connected"]), "first_seen": r["first_seen"], "last_seen": r["last_seen"],
            "last_heartbeat": r["last_heartbeat"], "has_password": r["password"] is not None,
            "boot": {"status": r["boot_status"], "time": r["last_boot"], "vendor": r["vendor"], "model": r["model"],
                     "serial": r["serial"], "firmware": r["firmware"]},
            "connectors": connectors,
            "open_transactions": [s["id"] for s in self.sessions(cp) if s["open"]],
            "frames": counts[0], "invalid_frames": counts[1],
        }

    # tokens

    def tokens(self):
        return self._rows("SELECT * FROM tokens ORDER BY id_tag")

    def set_token(self, id_tag, status="Accepted", parent_id_tag=None, expiry_date=None):
        if not isinstance(id_tag, str) or not 1 <= len(id_tag) <= 20:
            raise CsmsError("idTag must be a string of 1 to 20 characters (CiString20Type), got %r" % (id_tag,))
        if status not in TOKEN_STATUSES:
            raise CsmsError("status %r: expected one of %s" % (status, ", ".join(TOKEN_STATUSES)))
        if parent_id_tag is not None and (not isinstance(parent_id_tag, str) or not 1 <= len(parent_id_tag) <= 20):
            raise CsmsError("parentIdTag must be a string of 1 to 20 characters, got %r" % (parent_id_tag,))
        if expiry_date is not None and (not isinstance(expiry_date, str) or not is_date_time(expiry_date)):
            raise CsmsError("expiryDate %r: expected an RFC 3339 date-time like 2030-01-01T00:00:00Z" % (expiry_date,))
        self._x("INSERT OR REPLACE INTO tokens (id_tag, status, parent_id_tag, expiry_date) VALUES (?, ?, ?, ?)",
                (id_tag, status, parent_id_tag, expiry_date))

    def delete_token(self, id_tag):
        return self._x("DELETE FROM tokens WHERE id_tag=?", (id_tag,)).rowcount > 0


# ---------------------------------------------------------------------------------------------- OCPP side

class ChargePointLink(_OcppChargePoint):
    """One connected charge point: the `ocpp` package's ChargePoint with a handler for every message a
    1.6 charge point sends, and a recorder on every frame in and out."""

    def __init__(self, cp_id, connection, csms):
        super().__init__(cp_id, connection, response_timeout=csms.response_timeout, logger=_OCPP_LOG)
        self.csms = csms
        self.store = csms.store
        self._payload = {}  # the camelCase payload of the Call being handled
        self._sent_calls = {}  # unique id -> action of our calls (to check the answers)
        self._answers = {}  # unique id -> (frame id, valid, error) of answers received
        self._raw = {}  # unique id key of a raw frame sent -> _RawSent (its answer is ours, not the ocpp package's)
        self._raw_orphans = []  # futures of raw frames without a unique id, waiting for an answer to no call

    # every frame in and out

    async def route_message(self, raw_msg):
        frame, fid, valid, error = await self.csms._record_in(self, raw_msg)
        if frame is None:
            return
        if not valid and isinstance(frame, list) and len(frame) >= 2 and frame[0] == 2 and \
                isinstance(frame[1], str):
            # Answer every Call found invalid with the CallError its check names: the ocpp package would
            # only log a malformed one, and it does not check date-time formats.
            code, _, text = error.partition(": ")
            await self._send(json.dumps([4, frame[1], code if code in ERROR_CODES else "GenericError",
                                         text[:500], {}], separators=(",", ":")))
            return
        if isinstance(frame, list) and len(frame) >= 2 and frame[0] in (3, 4):
            # The answer to a raw frame goes to send_raw (even when it comes late), never to the ocpp
            # package's response queue, where it would be taken for the answer to a command.
            sent = self._raw.get(_uid_key(frame[1]))
            if sent is not None:
                if not sent.future.done():
                    sent.future.set_result(raw_msg)
                return
            if _uid_key(frame[1]) not in self._sent_calls:
                for f in self._raw_orphans:
                    if not f.done():
                        f.set_result(raw_msg)
                        return
        if isinstance(frame, list) and len(frame) == 4 and frame[0] == 2:
            self._payload = frame[3]
        elif isinstance(frame, list) and frame and frame[0] in (3, 4) and len(frame) > 1:
            self._answers[_uid_key(frame[1])] = (fid, valid, error)
            if len(self._answers) > 100:  # answers that came after their call timed out
                self._answers.pop(next(iter(self._answers)))
        await super().route_message(raw_msg)

    async def _send(self, message):
        await self.csms._record_out(self, message)
        await super()._send(message)

    # commands

    async def command(self, action, payload, timeout=None, validate=True):
        unique_id = str(uuid.uuid4())
        if validate:
            why = await check_payload(2, action, payload, unique_id)
            if why:
                raise CsmsError("%s payload not valid, not sent: %s" % (action, why))
        async with self._call_lock:
            self._sent_calls[unique_id] = action
            if len(self._sent_calls) > 1000:
                self._sent_calls.pop(next(iter(self._sent_calls)))
            await self._send(json.dumps([2, unique_id, action, payload], separators=(",", ":")))
            response = await self._get_specific_response(unique_id, timeout or self._response_timeout)
        fid, valid, error = self._answers.pop(unique_id, (None, True, None))
        answer = {"cp": self.id, "action": action, "uniqueId": unique_id, "frameId": fid, "valid": valid}
        if error:
            answer["validationError"] = error
        if isinstance(response, CallResult):
            answer["result"] = response.payload
        else:
            answer["error"] = {"code": response.error_code, "description": response.error_description,
                               "details": response.error_details}
        return answer

    async def send_raw(self, data, timeout=5):
        """Send `data` (str: one text message; bytes: one binary message) as it is, and wait up to
        `timeout` s for the frame the charge point answers it with (same uniqueId; for text with no
        uniqueId to be found, the first answer to no call of ours)."""
        loop = asyncio.get_running_loop()
        fid, uid, info = await self.csms._record_raw_out(self, data)
        future = loop.create_future()
        sent = _RawSent(future, info)
        keys = _uid_keys(uid)
        for k in keys:
            self._raw.pop(k, None)
            self._raw[k] = sent
        while len(self._raw) > 200:  # late answers to old raw frames are still swallowed, up to a point
            self._raw.pop(next(iter(self._raw)))
        if not keys:
            self._raw_orphans.append(future)
        try:
            try:
                await self._connection.send(data)
            except websockets.ConnectionClosed as e:
                raise NotConnected("charge point %s closed the connection: %s" % (self.id, e))
            try:
                answer = await asyncio.wait_for(asyncio.shield(future), timeout)
            except asyncio.TimeoutError:
                answer = None
        finally:
            if future in self._raw_orphans:
                self._raw_orphans.remove(future)
            if not future.done():
                future.cancel()
        if isinstance(answer, bytes):
            answer = answer.decode("utf-8", "replace")
        return {"cp": self.id, "uniqueId": None if uid is _NO_UID else uid, "frameId": fid, "valid": info["valid"],
                "error": info["error"], "answer": answer,
                "frames": self.store.frames(cp=self.id, since=fid - 1)}

    # handlers: every message a 1.6 charge point sends

    @on("BootNotification")
    def on_boot_notification(self, **_):
        status = self.csms.boot_answer
        interval = self.csms.heartbeat
        self.store.boot(self.id, self._payload, status, interval)
        return call_result.BootNotification(current_time=iso(ms=False), interval=interval, status=status)

    @on("Heartbeat")
    def on_heartbeat(self, **_):
        self.store.heartbeat(self.id)
        return call_result.Heartbeat(current_time=iso(ms=False))

    @on("StatusNotification")
    def on_status_notification(self, **_):
        self.store.status(self.id, self._payload)
        return call_result.StatusNotification()

    @on("Authorize")
    def on_authorize(self, **_):
        info = self.store.id_tag_info(self._payload["idTag"], self.csms.unknown_token)
        return call_result.Authorize(id_tag_info=_snake(info))

    @on("StartTransaction")
    def on_start_transaction(self, **_):
        info = self.store.id_tag_info(self._payload["idTag"], self.csms.unknown_token)
        tid = self.store.start_transaction(self.id, self._payload, info["status"])
        return call_result.StartTransaction(transaction_id=tid, id_tag_info=_snake(info))

    @on("StopTransaction")
    def on_stop_transaction(self, **_):
        self.store.stop_transaction(self.id, self._payload)
        if self._payload.get("idTag"):
            return call_result.StopTransaction(
                id_tag_info=_snake(self.store.id_tag_info(self._payload["idTag"], self.csms.unknown_token)))
        return call_result.StopTransaction()

    @on("MeterValues")
    def on_meter_values(self, **_):
        p = self._payload
        self.store.meter_values(self.id, p.get("connectorId"), p.get("transactionId"), p.get("meterValue"))
        return call_result.MeterValues()

    @on("DataTransfer")
    def on_data_transfer(self, **_):
        return call_result.DataTransfer(status=self.csms.data_transfer_answer)

    @on("DiagnosticsStatusNotification")
    def on_diagnostics_status_notification(self, **_):
        return call_result.DiagnosticsStatusNotification()

    @on("FirmwareStatusNotification")
    def on_firmware_status_notification(self, **_):
        return call_result.FirmwareStatusNotification()

    @on("SecurityEventNotification")
    def on_security_event_notification(self, **_):
        return call_result.SecurityEventNotification()

    @on("SignedFirmwareStatusNotification")
    def on_signed_firmware_status_notification(self, **_):
        return call_result.SignedFirmwareStatusNotification()

    @on("LogStatusNotification")
    def on_log_status_notification(self, **_):
        return call_result.LogStatusNotification()

    @on("SignCertificate")
    def on_sign_certificate(self, **_):
        return call_result.SignCertificate(status="Rejected")  # no certificate authority here


class _RawSent:
    """A raw frame sent: the future of its answer and what the check said of it (kind, action, valid, error)."""
    __slots__ = ("future", "info")

    def __init__(self, future, info):
        self.future, self.info = future, info


def _uid_key(value):
    """A hashable key for a uniqueId as found in a frame (normally a string; a raw frame may use anything)."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, sort_keys=True)
    except (TypeError, ValueError):
        return repr(value)


def _uid_keys(uid):
    """The keys an answer to a frame with uniqueId `uid` may carry (the number 7 and the text "7" share one)."""
    return [] if uid is _NO_UID else [_uid_key(uid)]


_NO_UID = object()
_UID_PREFIX = re.compile(r'^\s*\[\s*-?\d+\s*,\s*"((?:[^"\\]|\\.)*)"')


def _raw_uid(text, frame):
    """The uniqueId of a raw frame: the second element of a JSON array, or of what looks like the start
    of one in text that is not JSON; _NO_UID when there is none."""
    if isinstance(frame, list):
        return frame[1] if len(frame) >= 2 else _NO_UID
    m = _UID_PREFIX.match(text)
    if m:
        try:
            return json.loads('"%s"' % m.group(1))
        except ValueError:
            return m.group(1)
    return _NO_UID


def _snake(info):
    """idTagInfo in the keyword form the ocpp package turns back into camelCase."""
    out = {"status": info["status"]}
    if "parentIdTag" in info:
        out["parent_id_tag"] = info["parentIdTag"]
    if "expiryDate" in info:
        out["expiry_date"] = info["expiryDate"]
    return out


def _cp_id_from_path(path):
    p = urllib.parse.urlsplit(path).path.rstrip("/")
    return urllib.parse.unquote(p.rsplit("/", 1)[-1]) if p else ""


def _basic_auth(header):
    """(user, password) from an Authorization header, or None."""
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        text = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8", "surrogateescape")
    except (binascii.Error, ValueError):
        return None
    if ":" not in text:
        return None
    return tuple(text.split(":", 1))


class Csms:
    """The back end, as a library: `async with Csms(port=0, db=path) as c:`."""

    def __init__(self, host="127.0.0.1", port=9000, control_port=0, db=":memory:", tls_cert=None, tls_key=None,
                 boot_answer="Accepted", heartbeat=300, passwords=None, auth_required=False, unknown_token="Invalid",
                 tokens=None, data_transfer_answer="Accepted", response_timeout=30, ping_interval=20, log=None):
        if boot_answer not in BOOT_ANSWERS:
            raise CsmsError("boot_answer %r: expected one of %s" % (boot_answer, ", ".join(BOOT_ANSWERS)))
        if unknown_token not in TOKEN_STATUSES:
            raise CsmsError("unknown_token %r: expected one of %s" % (unknown_token, ", ".join(TOKEN_STATUSES)))
        if bool(tls_cert) != bool(tls_key):
            raise CsmsError("TLS needs both a certificate and a key")
        self.host, self.port, self.control_port = host, port, control_port
        self.tls_cert, self.tls_key = tls_cert, tls_key
        self.boot_answer, self.heartbeat = boot_answer, int(heartbeat)
        self.auth_required, self.unknown_token = auth_required, unknown_token
        self.data_transfer_answer = data_transfer_answer
        self.response_timeout, self.ping_interval = response_timeout, ping_interval
        self.log = log  # a callable taking one line, or None
        self.db_path = db
        self.store = Store(db)
        self.store.mark_all_disconnected()
        for cp, pw in (passwords or {}).items():
            self.store.set_password(cp, pw)
        for t in tokens or ():
            if isinstance(t, str):
                self.store.set_token(t)
            else:
                self.store.set_token(**t)
        self.links = {}
        self._changed = None
        self._ws_server = None
        self._control_server = None

    # life cycle

    async def start(self):
        self._changed = asyncio.Event()
        ctx = None
        if self.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
        self._ws_server = await _ws_serve(
            self._handler, self.host, self.port, ssl=ctx, subprotocols=[SUBPROTOCOL],
            select_subprotocol=lambda _conn, offered: SUBPROTOCOL if SUBPROTOCOL in offered else None,
            process_request=self._process_request, ping_interval=self.ping_interval or None,
            ping_timeout=self.ping_interval or None, logger=logging.getLogger("csms.websockets"))
        self.port = self._ws_server.sockets[0].getsockname()[1]
        if self.control_port is not None:
            self._control_server = await asyncio.start_server(self._control_client, "127.0.0.1", self.control_port)
            self.control_port = self._control_server.sockets[0].getsockname()[1]
        return self

    async def stop(self):
        if self._control_server is not None:
            self._control_server.close()
            await self._control_server.wait_closed()
            self._control_server = None
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
            self._ws_server = None
        self.store.mark_all_disconnected()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.stop()
        self.store.close()

    @property
    def url(self):
        return "%s://%s:%d" % ("wss" if self.tls_cert else "ws", self.host, self.port)

    def cp_url(self, cp):
        return "%s/%s" % (self.url, urllib.parse.quote(cp, safe=""))

    @property
    def control_url(self):
        return "http://127.0.0.1:%d" % self.control_port if self.control_port is not None else None

    # the WebSocket side

    def _process_request(self, connection, request):
        cp = _cp_id_from_path(request.path)
        if not cp:
            self._say("refused %s: no charge box id in the path" % request.path)
            return connection.respond(http.HTTPStatus.NOT_FOUND, "The path must be /CHARGEBOXID\n")
        password = self.store.password(cp)
        if password is None and not self.auth_required:
            return None
        creds = _basic_auth(request.headers.get("Authorization"))
        why = None
        if password is None:
            why = "no password set for this charge point (--auth-required)"
        elif creds is None:
            why = "no HTTP basic credentials"
        elif creds[0] != cp:
            why = "basic auth user %r is not the charge box id" % creds[0]
        elif not hmac.compare_digest(creds[1].encode("utf-8", "surrogateescape"), password.encode("utf-8")):
            why = "wrong password"
        if why is None:
            return None
        self.store.seen(cp)
        self.store.connection_event(cp, "refused", "401: " + why)
        self._say("%s refused: %s" % (cp, why))
        response = connection.respond(http.HTTPStatus.UNAUTHORIZED, "Unauthorized: %s\n" % why)
        response.headers["WWW-Authenticate"] = 'Basic realm="csms", charset="UTF-8"'
        return response

    async def _handler(self, ws):
        cp = _cp_id_from_path(ws.request.path)
        peer = "%s:%s" % tuple(ws.remote_address[:2]) if ws.remote_address else "?"
        self.store.seen(cp)
        if ws.subprotocol != SUBPROTOCOL:
            offered = ws.request.headers.get("Sec-WebSocket-Protocol") or "none"
            self.store.connection_event(cp, "refused", "subprotocol %s required, offered: %s" % (SUBPROTOCOL, offered))
            self._say("%s refused: subprotocol %s required, offered: %s" % (cp, SUBPROTOCOL, offered))
            self._notify()
            await ws.close(1002, "subprotocol %s required" % SUBPROTOCOL)
            return
        link = ChargePointLink(cp, ws, self)
        old = self.links.get(cp)
        self.links[cp] = link
        if old is not None:
            self.store.connection_event(cp, "replaced", "a new connection from %s" % peer)
            await old._connection.close(1000, "replaced by a new connection")
        self.store.seen(cp, connected=True)
        self.store.connection_event(cp, "connected", "%s %s" % (peer, "wss" if self.tls_cert else "ws"))
        self._say("%s connected from %s" % (cp, peer))
        self._notify()
        try:
            await link.start()
        except websockets.ConnectionClosed as e:
            detail = ("code %s %s" % (e.rcvd.code, e.rcvd.reason)).strip() if e.rcvd else "no close frame"
        else:
            detail = ""
        finally:
            if self.links.get(cp) is link:
                del self.links[cp]
                self.store.seen(cp, connected=False)
        self.store.connection_event(cp, "disconnected", detail)
        self._say("%s disconnected (%s)" % (cp, detail))
        self._notify()

    async def _record_in(self, link, raw):
        """Check and store one received frame; (parsed frame or None, frame id, valid, error)."""
        if isinstance(raw, bytes):
            error = "ProtocolError: a binary WebSocket message; OCPP-J uses text frames"
            fid = self.store.frame(link.id, "in", None, None, None, raw.decode("utf-8", "replace"), False, error)
            self._notify_frame(link.id, "in", raw, False, error)
            return None, fid, False, error
        try:
            frame = json.loads(raw)
        except ValueError as e:
            error = "FormatViolation: not JSON (%s)" % e
            fid = self.store.frame(link.id, "in", None, None, None, raw, False, error)
            self._notify_frame(link.id, "in", raw, False, error)
            return None, fid, False, error
        raw_sent, orphan = None, False  # an answer to a raw frame of ours (send_raw)
        if isinstance(frame, list) and len(frame) >= 2 and frame[0] in (3, 4):
            raw_sent = link._raw.get(_uid_key(frame[1]))
            orphan = raw_sent is None and _uid_key(frame[1]) not in link._sent_calls and \
                any(not f.done() for f in link._raw_orphans)
        shape = frame
        if raw_sent is not None and not isinstance(frame[1], str):  # it echoes the odd id of our raw frame
            shape = [frame[0], "echo"] + frame[2:]
        error = check_frame_shape(shape, echo=raw_sent is not None or orphan)
        kind = frame[0] if isinstance(frame, list) and frame and frame[0] in (2, 3, 4) else None
        unique_id = frame[1] if kind and len(frame) > 1 and isinstance(frame[1], str) else None
        action = None
        if error is None:
            if kind == 2:
                action = frame[2]
                if action not in CP_ACTIONS:
                    error = ("NotSupported: %s is not a message a charge point sends" % action
                             if action in COMMANDS else "NotImplemented: %s is not an OCPP 1.6 action" % action)
                else:
                    error = await check_payload(2, action, frame[3], unique_id)
            elif raw_sent is not None or orphan:
                info = raw_sent.info if raw_sent is not None else {"kind": None, "action": None, "valid": False}
                action = info["action"]
                if kind == 3:
                    if info["kind"] != 2:
                        error = "ProtocolError: a CallResult to a frame that was not a Call; a CallError was due"
                    elif not info["valid"]:
                        error = "ProtocolError: a CallResult to a Call that fails its check (%s); a CallError " \
                                "was due" % info["error"]
                    elif action in COMMANDS:
                        error = await check_payload(3, action, frame[2], unique_id)
            else:
                action = link._sent_calls.get(unique_id)
                if action is None:
                    error = "ProtocolError: an answer to no call of ours (uniqueId %s)" % unique_id
                elif kind == 3:
                    error = await check_payload(3, action, frame[2], unique_id)
        elif kind == 2 and len(frame) > 2 and isinstance(frame[2], str):
            action = frame[2]
        fid = self.store.frame(link.id, "in", kind, unique_id, action, raw, error is None, error)
        self.store.seen(link.id)
        self._notify_frame(link.id, "in", raw, error is None, error)
        return frame, fid, error is None, error

    async def _record_out(self, link, raw):
        frame = json.loads(raw)
        kind, unique_id = frame[0], frame[1]
        error = check_frame_shape(frame, echo=kind != 2)
        action = None
        if kind == 2:
            action = frame[2]
            if error is None:
                error = await check_payload(2, action, frame[3], unique_id)
        else:
            r = self.store._x("SELECT action FROM frames WHERE cp=? AND direction='in' AND type=2 AND unique_id=? "
                              "ORDER BY id DESC LIMIT 1", (link.id, unique_id)).fetchone()
            action = r[0] if r else None
            if kind == 3 and error is None and action in CP_ACTIONS:
                error = await check_payload(3, action, frame[2], unique_id)
        self.store.frame(link.id, "out", kind, unique_id, action, raw, error is None, error)
        self._notify_frame(link.id, "out", raw, error is None, error)

    async def _record_raw_out(self, link, data):
        """Check and store a raw frame about to be sent; (frame id, uniqueId or _NO_UID, info) where info
        is {kind, action, valid, error}."""
        binary = isinstance(data, (bytes, bytearray))
        text = bytes(data).decode("utf-8", "replace") if binary else data
        try:
            frame = json.loads(text)
        except ValueError as e:
            frame, error = None, "FormatViolation: not JSON (%s)" % e
        else:
            kind0 = frame[0] if isinstance(frame, list) and frame else None
            error = check_frame_shape(frame, echo=kind0 in (3, 4))
        uid = _raw_uid(text, frame)
        kind = frame[0] if isinstance(frame, list) and frame and frame[0] in (2, 3, 4) else None
        action = None
        if kind == 2 and len(frame) > 2 and isinstance(frame[2], str):
            action = frame[2]
        if error is None:
            if kind == 2:
                if action not in COMMANDS:
                    error = ("NotSupported: %s is a message a charge point sends" % action if action in CP_ACTIONS
                             else "NotImplemented: %s is not an OCPP 1.6 command" % action)
                else:
                    error = await check_payload(2, action, frame[3], frame[1])
            else:
                r = self.store._x("SELECT action FROM frames WHERE cp=? AND direction='in' AND type=2 AND "
                                  "unique_id=? ORDER BY id DESC LIMIT 1", (link.id, frame[1])).fetchone()
                action = r[0] if r else None
                if action is None:
                    error = "ProtocolError: an answer to no call of the charge point (uniqueId %s)" % frame[1]
                elif kind == 3 and action in CP_ACTIONS:
                    error = await check_payload(3, action, frame[2], frame[1])
        if binary:
            error = "ProtocolError: a binary WebSocket message; OCPP-J uses text frames" + (
                "" if error is None else " (and %s)" % error)
        stored_uid = None if uid is _NO_UID else (uid if isinstance(uid, str) else _uid_key(uid))
        fid = self.store.frame(link.id, "out", kind, stored_uid, action, text, error is None, error)
        self._notify_frame(link.id, "out", ("(binary) " if binary else "") + text, error is None, error)
        return fid, uid, {"kind": kind, "action": action, "valid": error is None, "error": error}

    def _notify_frame(self, cp, direction, raw, valid, error):
        if self.log:
            text = raw if isinstance(raw, str) else repr(raw)
            if len(text) > 400:
                text = text[:400] + "..."
            self._say("%s %s %s%s" % (cp, ">>" if direction == "in" else "<<", text,
                                      "" if valid else "\n    INVALID: %s" % error))
        self._notify()

    def _notify(self):
        if self._changed is not None:
            ev, self._changed = self._changed, asyncio.Event()
            ev.set()

    def _say(self, line):
        if self.log:
            self.log("%s %s" % (utc_now().strftime("%H:%M:%S.%f")[:-3], line))

    # what tests and tools use

    def connected(self, cp=None):
        """Whether `cp` is connected; without `cp`, the ids of the connected charge points."""
        return sorted(self.links) if cp is None else cp in self.links

    async def send(self, cp, action, payload=None, timeout=None, validate=True):
        """Send a command and return the answer: {"result": {...}} or {"error": {...}} with "uniqueId",
        "valid" (the answer passed the schema) and "validationError". Raises NotConnected, CsmsError
        (an unknown action or a payload that fails the schema, unless validate=False) or
        asyncio.TimeoutError."""
        if action not in COMMANDS:
            raise CsmsError("unknown command %r; commands: %s" % (action, ", ".join(sorted(COMMANDS))))
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise CsmsError("the payload must be a JSON object, got %r" % (payload,))
        return await self._link(cp).command(action, payload, timeout=timeout, validate=validate)

    def _link(self, cp):
        if cp is None:
            if len(self.links) != 1:
                raise CsmsError("name the charge point: %d are connected (%s)" % (
                    len(self.links), ", ".join(sorted(self.links)) or "none"))
            cp = next(iter(self.links))
        link = self.links.get(cp)
        if link is None:
            raise NotConnected("charge point %s is not connected (connected: %s)" % (
                cp, ", ".join(sorted(self.links)) or "none"))
        return link

    async def send_raw(self, cp, text, timeout=5):
        """Send `text` to `cp` exactly as given, as one WebSocket text message (bytes: one binary message),
        for fuzzing. It is stored as an outgoing frame with its own verdict and bypasses the ocpp package:
        the answer is not taken for the answer to a command. Returns {"answer": the text the charge point
        answered with (same uniqueId) or None after `timeout` s, "frames": the frames of `cp` from the one
        sent on, "uniqueId", "frameId", "valid", "error" (of the frame sent), "cp"}. Raises NotConnected."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise CsmsError("a raw frame is text (str) or binary (bytes), got %s" % type(text).__name__)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise CsmsError("timeout must be a number of seconds above 0, got %r" % (timeout,))
        return await self._link(cp).send_raw(text, timeout)

    async def send_raw_many(self, cp, texts, timeout=5):
        """Send the text messages `texts` to `cp` back to back, without waiting for answers in
        between, then wait up to `timeout` s for each answer. Returns {"cp", "answers": per
        message "CallResult", the CallError's code, or None (no answer)}: the kinds only, so
        that ten long answers make a short reply. Raises NotConnected."""
        link = self._link(cp)
        results = await asyncio.gather(*(link.send_raw(t, timeout) for t in texts))
        return {"cp": link.id, "answers": [_answer_kind(r["answer"]) for r in results]}

    def mark(self):
        """The id of the last frame so far: pass it as `since` to wait for what comes after."""
        return self.store.last_frame_id()

    async def wait_for(self, cp, action, match=None, timeout=10, since=0, full=False):
        """The payload of the first `action` Call from `cp` after frame `since` whose payload matches
        `match` (a dict of equal fields or a callable); waits up to `timeout` seconds, then raises
        asyncio.TimeoutError. full=True returns the frame's row (id, time, valid, frame, ...)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            ev = self._changed
            for f in self.store.frames(cp=cp, action=action, direction="in", since=since, kind=2):
                payload = f["frame"][3] if isinstance(f["frame"], list) and len(f["frame"]) == 4 else None
                if matches(payload, match):
                    return f if full else payload
                since = f["id"]
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError("no %s from %s matching %r within %ss" % (action, cp, match, timeout))
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_connected(self, cp, timeout=10):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while cp not in self.links:
            ev = self._changed
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError("%s did not connect within %ss" % (cp, timeout))
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def wait_disconnected(self, cp, timeout=10):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while cp in self.links:
            ev = self._changed
            left = deadline - loop.time()
            if left <= 0:
                raise asyncio.TimeoutError("%s still connected after %ss" % (cp, timeout))
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    def frames(self, cp=None, invalid=None, direction=None, action=None, since=0, limit=None):
        return self.store.frames(cp=cp, invalid=invalid, direction=direction, action=action, since=since, limit=limit)

    def invalid_frames(self, cp=None, direction=None):
        """The frames that failed the check; [] means every frame was valid."""
        return self.store.frames(cp=cp, invalid=True, direction=direction)

    def sessions(self, cp=None):
        return self.store.sessions(cp)

    def meter_values(self, cp=None, transaction_id=None):
        return self.store.meter_value_rows(cp, transaction_id)

    def status_history(self, cp=None):
        return self.store.status_history(cp)

    def status_violations(self, cp=None):
        """The recorded status changes the OCPP 1.6 transition table does not allow: [{cp, connector, from,
        to, at, timestamp, id, why}]; [] when every change was allowed (see STATUS_TRANSITIONS)."""
        return self.store.status_violations(cp)

    def boots(self, cp=None):
        return self.store.boots(cp)

    def status(self, cp):
        s = self.store.cp_status(cp)
        if s is not None:
            s["connected"] = cp in self.links
        return s

    def add_token(self, id_tag, status="Accepted", parent_id_tag=None, expiry_date=None):
        self.store.set_token(id_tag, status, parent_id_tag, expiry_date)

    def set_password(self, cp, password):
        self.store.set_password(cp, password)

    def settings(self):
        return {"bootAnswer": self.boot_answer, "heartbeat": self.heartbeat, "unknownToken": self.unknown_token,
                "dataTransfer": self.data_transfer_answer, "authRequired": self.auth_required}

    def change_settings(self, values):
        if not isinstance(values, dict):
            raise CsmsError("settings must be a JSON object")
        checks = {
            "bootAnswer": lambda v: v in BOOT_ANSWERS,
            "heartbeat": lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0,
            "unknownToken": lambda v: v in TOKEN_STATUSES,
            "dataTransfer": lambda v: v in ("Accepted", "Rejected", "UnknownMessageId", "UnknownVendorId"),
            "authRequired": lambda v: isinstance(v, bool),
        }
        for k, v in values.items():
            if k not in checks:
                raise CsmsError("unknown setting %r (known: %s)" % (k, ", ".join(checks)))
            if not checks[k](v):
                raise CsmsError("setting %s: %r is not allowed" % (k, v))
        for k, v in values.items():
            attr = {"bootAnswer": "boot_answer", "heartbeat": "heartbeat", "unknownToken": "unknown_token",
                    "dataTransfer": "data_transfer_answer", "authRequired": "auth_required"}[k]
            setattr(self, attr, v)
        return self.settings()

    # the control API

    async def _control_client(self, reader, writer):
        status, body = 500, {"error": "internal error"}
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), 10)
                method, target = line.decode("latin-1").split()[:2]
                headers = {}
                while True:
                    h = await asyncio.wait_for(reader.readline(), 10)
                    if h in (b"\r\n", b"\n", b""):
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length") or 0)
                data = await asyncio.wait_for(reader.readexactly(n), 10) if n else b""
            except (ValueError, asyncio.IncompleteReadError, asyncio.TimeoutError):
                status, body = 400, {"error": "not an HTTP request"}
            else:
                status, body = await self._route(method.upper(), target, data)
        except Exception as e:  # the API answers, whatever happened
            status, body = 500, {"error": "%s: %s" % (type(e).__name__, e)}
        try:
            out = json.dumps(body, indent=1, default=str).encode() + b"\n"
            reason = http.HTTPStatus(status).phrase
            writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                         b"Connection: close\r\n\r\n" % (status, reason.encode(), len(out)) + out)
            await writer.drain()
            writer.close()
        except ConnectionError:
            pass

    async def _route(self, method, target, data):
        url = urllib.parse.urlsplit(target)
        path = url.path.rstrip("/") or "/"
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        body = None
        if data:
            try:
                body = json.loads(data)
            except ValueError as e:
                return 400, {"error": "the body is not JSON: %s" % e}
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        try:
            if path == "/" and method == "GET":
                return 200, {"endpoints": [
                    "POST /command {cp, action, payload, timeout, validate}", "POST /raw {cp, text|binary, timeout}",
                    "GET /violations?cp=", "GET /status", "GET /status/CP",
                    "GET /sessions?cp=", "GET /sessions/ID", "GET /frames?cp=&invalid=1&direction=&action=&since=&limit=",
                    "GET /wait?cp=&action=&match=JSON&since=&timeout=", "GET /tokens", "POST /tokens {idTag, status, "
                    "parentIdTag, expiryDate}", "DELETE /tokens/IDTAG", "GET /settings", "POST /settings {...}"],
                    "commands": sorted(COMMANDS)}
            if path == "/command" and method == "POST":
                return await self._api_command(body)
            if path == "/raw" and method == "POST":
                return await self._api_raw(body)
            if path == "/violations" and method == "GET":
                v = self.status_violations(q.get("cp"))
                return 200, {"count": len(v), "violations": v}
            if parts[0] == "status" and method == "GET":
                if len(parts) == 1:
                    return 200, {"chargePoints": [self.status(cp) for cp in self.store.charge_point_ids()]}
                s = self.status(parts[1])
                return (200, s) if s else (404, {"error": "no charge point %s has been seen" % parts[1]})
            if parts[0] == "sessions" and method == "GET":
                if len(parts) == 1:
                    return 200, {"sessions": self.store.sessions(q.get("cp"))}
                try:
                    tid = int(parts[1])
                except ValueError:
                    return 400, {"error": "a transaction id is a number, got %r" % parts[1]}
                rows = self.store.sessions(transaction_id=tid)
                if not rows:
                    return 404, {"error": "no transaction %d" % tid}
                rows[0]["meter_values"] = self.store.meter_value_rows(transaction_id=tid)
                return 200, rows[0]
            if path == "/frames" and method == "GET":
                invalid = q.get("invalid")
                if invalid is not None:
                    invalid = invalid.lower() in ("1", "true", "yes")
                frames = self.store.frames(cp=q.get("cp"), invalid=invalid, direction=q.get("direction"),
                                           action=q.get("action"), since=_int(q, "since", 0), limit=_int(q, "limit", None))
                for f in frames:
                    f.pop("payload")
                return 200, {"count": len(frames), "frames": frames}
            if path == "/wait" and method == "GET":
                if not q.get("cp") or not q.get("action"):
                    return 400, {"error": "GET /wait needs cp= and action="}
                match = None
                if q.get("match"):
                    try:
                        match = json.loads(q["match"])
                    except ValueError as e:
                        return 400, {"error": "match= is not JSON: %s" % e}
                    if not isinstance(match, dict):
                        return 400, {"error": "match= must be a JSON object of fields to compare"}
                timeout = _float(q, "timeout", 10)
                try:
                    row = await self.wait_for(q["cp"], q["action"], match, timeout=timeout,
                                              since=_int(q, "since", 0), full=True)
                except asyncio.TimeoutError as e:
                    return 504, {"error": str(e)}
                row.pop("payload")
                return 200, row
            if parts[0] == "tokens":
                if method == "GET" and len(parts) == 1:
                    return 200, {"tokens": self.store.tokens()}
                if method == "POST" and len(parts) == 1:
                    if not isinstance(body, dict) or "idTag" not in body:
                        return 400, {"error": "POST /tokens needs {\"idTag\": ..., \"status\": ...}"}
                    extra = set(body) - {"idTag", "status", "parentIdTag", "expiryDate"}
                    if extra:
                        return 400, {"error": "unknown fields %s" % ", ".join(sorted(extra))}
                    self.store.set_token(body["idTag"], body.get("status", "Accepted"), body.get("parentIdTag"),
                                         body.get("expiryDate"))
                    return 200, {"tokens": self.store.tokens()}
                if method == "DELETE" and len(parts) == 2:
                    if not self.store.delete_token(parts[1]):
                        return 404, {"error": "no token %s" % parts[1]}
                    return 200, {"tokens": self.store.tokens()}
            if path == "/settings":
                if method == "GET":
                    return 200, self.settings()
                if method == "POST":
                    return 200, self.change_settings(body)
        except _BadQuery as e:
            return 400, {"error": str(e)}
        except CsmsError as e:
            return 400, {"error": str(e)}
        return 404, {"error": "no such endpoint: %s %s (GET / lists them)" % (method, path)}

    async def _api_command(self, body):
        if not isinstance(body, dict):
            return 400, {"error": "POST /command needs {\"cp\": ..., \"action\": ..., \"payload\": {...}}"}
        extra = set(body) - {"cp", "action", "payload", "timeout", "validate"}
        if extra:
            return 400, {"error": "unknown fields %s" % ", ".join(sorted(extra))}
        if "action" not in body:
            return 400, {"error": "POST /command: \"action\" is missing"}
        timeout = body.get("timeout")
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
            return 400, {"error": "timeout must be a number of seconds above 0"}
        try:
            return 200, await self.send(body.get("cp"), body["action"], body.get("payload"), timeout=timeout,
                                        validate=body.get("validate", True) is not False)
        except NotConnected as e:
            return 404, {"error": str(e)}
        except asyncio.TimeoutError:
            return 504, {"error": "%s did not answer %s in time" % (body.get("cp"), body["action"])}


    async def _api_raw(self, body):
        if not isinstance(body, dict):
            return 400, {"error": "POST /raw needs {\"cp\": ..., \"text\": \"...\"} or {..., \"binary\": \"BASE64\"}"}
        extra = set(body) - {"cp", "text", "texts", "binary", "timeout"}
        if extra:
            return 400, {"error": "unknown fields %s" % ", ".join(sorted(extra))}
        if ("text" in body) + ("texts" in body) + ("binary" in body) != 1:
            return 400, {"error": "POST /raw needs exactly one of \"text\", \"texts\" and \"binary\""}
        if "text" in body:
            data = body["text"]
            if not isinstance(data, str):
                return 400, {"error": "\"text\" must be a string (the message exactly as sent)"}
        elif "texts" in body:
            data = body["texts"]
            if not (isinstance(data, list) and 0 < len(data) <= 50 and all(isinstance(t, str) for t in data)):
                return 400, {"error": "\"texts\" must be a list of 1 to 50 strings (sent back to back)"}
        else:
            try:
                data = base64.b64decode(body["binary"], validate=True)
            except (binascii.Error, TypeError, ValueError):
                return 400, {"error": "\"binary\" must be base64"}
        timeout = body.get("timeout", 5)
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            return 400, {"error": "timeout must be a number of seconds above 0"}
        try:
            if "texts" in body:
                return 200, await self.send_raw_many(body.get("cp"), data, timeout=timeout)
            return 200, await self.send_raw(body.get("cp"), data, timeout=timeout)
        except NotConnected as e:
            return 404, {"error": str(e)}


def _answer_kind(text):
    """"CallResult", a CallError's code, or None, of a charge point's answer frame (or None)."""
    try:
        m = json.loads(text) if text is not None else None
    except ValueError:
        return "not JSON"
    if isinstance(m, list) and m and m[0] == 3:
        return "CallResult"
    if isinstance(m, list) and len(m) > 2 and m[0] == 4:
        return m[2]
    return None


class _BadQuery(CsmsError):
    pass


def _int(q, key, default):
    if key not in q:
        return default
    try:
        return int(q[key])
    except ValueError:
        raise _BadQuery("%s= must be a whole number, got %r" % (key, q[key]))


def _float(q, key, default):
    if key not in q:
        return default
    try:
        v = float(q[key])
    except ValueError:
        raise _BadQuery("%s= must be a number, got %r" % (key, q[key]))
    if v <= 0:
        raise _BadQuery("%s= must be above 0" % key)
    return v


class CsmsThread:
    """Csms in a thread of its own, for synchronous code: `with CsmsThread(port=0, db=path) as c:`.
    Every method of Csms is available; coroutines run on the back end's loop and are waited for."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self._loop = None
        self._thread = None
        self.csms = None

    def __enter__(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="csms", daemon=True)
        self._thread.start()

        async def make():
            return await Csms(**self._kwargs).start()

        try:
            self.csms = self._run(make())
        except BaseException:
            self._close_loop()
            raise
        return self

    def __exit__(self, *exc):
        try:
            self._run(self.csms.stop())
            self._run(self._sync(self.csms.store.close))
        finally:
            self._close_loop()

    def _close_loop(self):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, coro, timeout=None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @staticmethod
    async def _sync(fn, *a, **kw):
        return fn(*a, **kw)

    def __getattr__(self, name):
        if name.startswith("_") or self.csms is None:
            raise AttributeError(name)
        attr = getattr(self.csms, name)
        if not callable(attr):
            return attr
        if asyncio.iscoroutinefunction(attr):
            return lambda *a, **kw: self._run(attr(*a, **kw))
        return lambda *a, **kw: self._run(self._sync(attr, *a, **kw))


# ---------------------------------------------------------------------------------------------- command line

def _port(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a port number 0-65535, got %r" % text)
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError("expected a port number 0-65535, got %r" % text)
    return v


def _positive_int(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a whole number of seconds, got %r" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be above 0, got %r" % text)
    return v


def _seconds(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % text)
    if v < 0:
        raise argparse.ArgumentTypeError("must not be negative, got %r" % text)
    return v


def _positive_float(text):
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of seconds, got %r" % text)
    if not v > 0:
        raise argparse.ArgumentTypeError("must be above 0, got %r" % text)
    return v


def _password(text):
    cp, sep, pw = text.partition("=")
    if not sep or not cp or not pw:
        raise argparse.ArgumentTypeError("expected CHARGEBOXID=PASSWORD, got %r" % text)
    return cp, pw


def _json_object(text):
    try:
        v = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("not valid JSON (%s): %s" % (e, text))
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("the payload must be a JSON object like '{\"type\": \"Soft\"}', got %s" % text)
    return v


def parser():
    p = argparse.ArgumentParser(prog="csms.py", description=__doc__.split("\n\n")[0],
                                epilog="Run `csms.py COMMAND --help` for each command; the module docstring has the "
                                       "control API.")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.required = True
    subs = {}

    s = subs["serve"] = sub.add_parser("serve", help="run the back end")
    s.add_argument("--host", default="127.0.0.1", help="address for charge points (default 127.0.0.1)")
    s.add_argument("--port", type=_port, default=9000, help="WebSocket port (default 9000, 0 = any free)")
    s.add_argument("--control-port", type=_port, default=9001,
                   help="control API port on 127.0.0.1 (default 9001, 0 = any free)")
    s.add_argument("--db", default=DEFAULT_DB, metavar="FILE", help="SQLite database (default build/csms.db)")
    s.add_argument("--tls-cert", metavar="FILE", help="serve wss:// with this certificate (PEM)")
    s.add_argument("--tls-key", metavar="FILE", help="... and this private key (PEM)")
    s.add_argument("--boot-answer", choices=BOOT_ANSWERS, default="Accepted", help="answer to BootNotification")
    s.add_argument("--heartbeat", type=_positive_int, default=300, metavar="S",
                   help="interval in the BootNotification answer (heartbeat, or retry when not Accepted)")
    s.add_argument("--password", type=_password, action="append", default=[], metavar="CP=SECRET",
                   help="basic auth password of a charge point (repeatable; stored in the database)")
    s.add_argument("--auth-required", action="store_true", help="refuse charge points without a password")
    s.add_argument("--unknown-token", choices=("Invalid", "Accepted"), default="Invalid",
                   help="answer for idTags not in the token table (default Invalid)")
    s.add_argument("--ping-interval", type=_seconds, default=20, metavar="S",
                   help="WebSocket ping interval and timeout (0 = no pings; default 20)")
    s.add_argument("--quiet", action="store_true", help="do not print frames")

    s = subs["sessions"] = sub.add_parser("sessions", help="list the charging sessions (transactions)")
    s.add_argument("--db", default=DEFAULT_DB, metavar="FILE")
    s.add_argument("--cp", metavar="CHARGEBOXID")
    s.add_argument("--json", action="store_true", help="JSON instead of a table")

    s = subs["frames"] = sub.add_parser("frames", help="list the frames received and sent")
    s.add_argument("--db", default=DEFAULT_DB, metavar="FILE")
    s.add_argument("--cp", metavar="CHARGEBOXID")
    s.add_argument("--invalid", action="store_true", help="only the invalid ones; exit 1 when there is one")
    s.add_argument("--action", metavar="ACTION")
    s.add_argument("--direction", choices=("in", "out"))
    s.add_argument("--limit", type=_positive_int, metavar="N", help="only the last N")
    s.add_argument("--json", action="store_true", help="JSON instead of lines")

    s = subs["send"] = sub.add_parser("send", help="send a command to a connected charge point through the control API")
    s.add_argument("cp", metavar="CP", help="charge box id")
    s.add_argument("action", metavar="ACTION", help="one of: " + ", ".join(sorted(COMMANDS)))
    s.add_argument("payload", metavar="JSON", type=_json_object, nargs="?", default={},
                   help="the payload, a JSON object (default {})")
    s.add_argument("--control", default="http://127.0.0.1:9001", metavar="URL", help="control API of `serve`")
    s.add_argument("--timeout", type=_positive_int, default=30, metavar="S", help="wait this long for the answer")
    s.add_argument("--no-validate", action="store_true", help="send even a payload that fails the schema")

    s = subs["raw"] = sub.add_parser("raw", help="send one raw WebSocket message to a connected charge point "
                                                  "(fuzzing) through the control API; exit 1 without an answer")
    s.add_argument("cp", metavar="CP", help="charge box id")
    s.add_argument("text", metavar="TEXT", help="the message exactly as sent (with --binary: base64 of the bytes)")
    s.add_argument("--binary", action="store_true", help="TEXT is base64; send it as a binary message")
    s.add_argument("--control", default="http://127.0.0.1:9001", metavar="URL", help="control API of `serve`")
    s.add_argument("--timeout", type=_positive_float, default=5, metavar="S", help="wait this long for the answer")

    s = subs["statuses"] = sub.add_parser("statuses", help="the status history, with the changes the OCPP 1.6 "
                                                            "transition table does not allow")
    s.add_argument("--db", default=DEFAULT_DB, metavar="FILE")
    s.add_argument("--cp", metavar="CHARGEBOXID")
    s.add_argument("--check", action="store_true", help="exit 1 when a change is not allowed")
    s.add_argument("--json", action="store_true", help="JSON {history, violations} instead of lines")

    s = subs["tokens"] = sub.add_parser("tokens", help="list the token table")
    s.add_argument("--db", default=DEFAULT_DB, metavar="FILE")

    s = subs["token"] = sub.add_parser("token", help="add, change or remove a token (idTag)")
    s.add_argument("id_tag", metavar="IDTAG")
    s.add_argument("--status", choices=TOKEN_STATUSES, default="Accepted")
    s.add_argument("--parent", metavar="IDTAG", help="parentIdTag (group)")
    s.add_argument("--expiry", metavar="TIME", help="expiryDate, e.g. 2030-01-01T00:00:00Z")
    s.add_argument("--remove", action="store_true")
    s.add_argument("--db", default=DEFAULT_DB, metavar="FILE")
    return p, subs


def cmd_serve(a, p):
    for f in (a.tls_cert, a.tls_key):
        if f and not os.path.isfile(f):
            p.error("--tls-cert/--tls-key %s: no such file" % f)
    if bool(a.tls_cert) != bool(a.tls_key):
        p.error("--tls-cert and --tls-key go together")

    async def run():
        try:
            csms = Csms(host=a.host, port=a.port, control_port=a.control_port, db=a.db, tls_cert=a.tls_cert,
                        tls_key=a.tls_key, boot_answer=a.boot_answer, heartbeat=a.heartbeat,
                        passwords=dict(a.password), auth_required=a.auth_required, unknown_token=a.unknown_token,
                        ping_interval=a.ping_interval, log=None if a.quiet else (lambda s: print(s, flush=True)))
        except sqlite3.DatabaseError as e:
            print("csms: --db %s: %s" % (a.db, e), file=sys.stderr)
            return 2
        try:
            await csms.start()
        except ssl.SSLError as e:
            print("csms: TLS certificate/key: %s" % e, file=sys.stderr)
            return 2
        except OSError as e:
            print("csms: cannot listen (%s:%s, control %s): %s" % (a.host, a.port, a.control_port, e), file=sys.stderr)
            await csms.stop()
            return 1
        print("csms: charge points connect to %s/CHARGEBOXID (subprotocol ocpp1.6); control API %s; db %s" % (
            csms.url, csms.control_url, os.path.abspath(a.db)), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await csms.stop()
        csms.store.close()
        print("csms: stopped", flush=True)
        return 0

    return asyncio.run(run())


def _open_db(a, p):
    try:
        return Store.open_existing(a.db)
    except CsmsError as e:
        print("csms: %s" % e, file=sys.stderr)
        sys.exit(2)


def cmd_sessions(a, p):
    store = _open_db(a, p)
    rows = store.sessions(a.cp)
    if a.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("%-12s %6s %-20s %-24s %-24s %9s %s" % ("charge point", "tx", "idTag", "start", "stop", "energy Wh", "reason"))
    for r in rows:
        tid = str(r["id"]) if r["reported_id"] is None else "%d(%s)" % (r["id"], r["reported_id"])
        stop = r["stop_time"] or ("(open)" if r["open"] else "")
        reason = r["reason"] or ("Local" if not r["open"] else "")  # the spec's default reason is Local
        if r["start_count"] > 1 or r["stop_count"] > 1:
            reason += " [repeated: %d starts, %d stops]" % (r["start_count"], r["stop_count"])
        print("%-12s %6s %-20s %-24s %-24s %9s %s" % (r["cp"], tid, r["id_tag"] or r["stop_id_tag"] or "",
                                                     r["start_time"] or "", stop,
                                                     "" if r["energy_wh"] is None else r["energy_wh"], reason))
    print("%d session%s" % (len(rows), "" if len(rows) == 1 else "s"))
    return 0


def cmd_frames(a, p):
    store = _open_db(a, p)
    rows = store.frames(cp=a.cp, invalid=True if a.invalid else None, direction=a.direction, action=a.action,
                        limit=a.limit)
    if a.json:
        for r in rows:
            r.pop("payload")
        print(json.dumps(rows, indent=1))
    else:
        for r in rows:
            print("%6d %s %-10s %-3s %s%s" % (r["id"], r["time"], r["cp"], ">>" if r["direction"] == "in" else "<<",
                                              r["payload"], "" if r["valid"] else "\n       INVALID: %s" % r["error"]))
    if a.invalid:
        total = store._x("SELECT COUNT(*) FROM frames%s" % (" WHERE cp=?" if a.cp else ""),
                         (a.cp,) if a.cp else ()).fetchone()[0]
        print("%d of %d frames invalid" % (len(rows), total) if rows else "all %d frames valid" % total,
              file=sys.stderr)
        return 1 if rows else 0
    return 0


def _post_control(control, path, body, timeout):
    """(answer, None) from the control API, or (None, exit status) after saying why on stderr."""
    req = urllib.request.Request(control.rstrip("/") + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r), None
    except urllib.error.HTTPError as e:
        try:
            answer = json.load(e)
        except ValueError:
            answer = {"error": "HTTP %d" % e.code}
        print("csms: %s" % answer.get("error"), file=sys.stderr)
        return None, 1
    except (urllib.error.URLError, OSError) as e:
        print("csms: cannot reach the control API at %s: %s" % (control, getattr(e, "reason", e)), file=sys.stderr)
        return None, 1


def cmd_raw(a, p):
    body = {"cp": a.cp, "timeout": a.timeout}
    if a.binary:
        try:
            base64.b64decode(a.text, validate=True)
        except (binascii.Error, ValueError):
            p.error("--binary: TEXT must be base64, got %r" % a.text)
        body["binary"] = a.text
    else:
        body["text"] = a.text
    answer, status = _post_control(a.control, "/raw", body, a.timeout + 5)
    if answer is None:
        return status
    print(json.dumps(answer, indent=1))
    if answer.get("answer") is None:
        print("csms: no answer from %s within %ss" % (a.cp, a.timeout), file=sys.stderr)
        return 1
    return 0


def cmd_statuses(a, p):
    store = _open_db(a, p)
    history = store.status_history(a.cp)
    violations = status_transition_violations(history)
    if a.json:
        print(json.dumps({"history": history, "violations": violations}, indent=1))
    else:
        bad = {v["id"]: v["why"] for v in violations}
        epochs = {}
        for r in history:
            fresh = epochs.get(r["cp"]) != r["epoch"]
            epochs[r["cp"]] = r["epoch"]
            print("%6d %s %-10s %2s %-13s %-22s %s%s%s" % (
                r["id"], r["time"], r["cp"], r["connector"], r["status"], r["error_code"] or "",
                r["info"] or "", "  (after boot/connect)" if fresh else "",
                "\n       NOT ALLOWED: %s" % bad[r["id"]] if r["id"] in bad else ""))
    if a.check:
        print("%d of %d status changes not allowed" % (len(violations), len(history)) if violations else
              "all %d statuses follow the OCPP 1.6 transition table" % len(history), file=sys.stderr)
        return 1 if violations else 0
    return 0


def cmd_send(a, p):
    if a.action not in COMMANDS:
        p.error("unknown command %r; commands: %s" % (a.action, ", ".join(sorted(COMMANDS))))
    if not a.no_validate:
        why = asyncio.run(check_payload(2, a.action, a.payload))
        if why:
            p.error("%s payload not valid (--no-validate sends it anyway): %s" % (a.action, why))
    answer, status = _post_control(a.control, "/command", {"cp": a.cp, "action": a.action, "payload": a.payload,
                                                           "timeout": a.timeout, "validate": not a.no_validate},
                                   a.timeout + 5)
    if answer is None:
        return status
    print(json.dumps(answer, indent=1))
    return 0 if "result" in answer and answer.get("valid", True) else 1


def cmd_tokens(a, p):
    store = _open_db(a, p)
    for t in store.tokens():
        print("%-20s %-12s %-20s %s" % (t["id_tag"], t["status"], t["parent_id_tag"] or "", t["expiry_date"] or ""))
    return 0


def cmd_token(a, p):
    store = Store(a.db)
    if a.remove:
        if not store.delete_token(a.id_tag):
            print("csms: no token %s" % a.id_tag, file=sys.stderr)
            return 1
        return 0
    try:
        store.set_token(a.id_tag, a.status, a.parent, a.expiry)
    except CsmsError as e:
        p.error(str(e))
    return 0


def main(argv=None):
    p, subs = parser()
    a = p.parse_args(sys.argv[1:] if argv is None else argv)
    sp = subs[a.cmd]  # errors name the command's own usage
    return {"serve": cmd_serve, "sessions": cmd_sessions, "frames": cmd_frames, "send": cmd_send, "raw": cmd_raw,
            "statuses": cmd_statuses, "tokens": cmd_tokens, "token": cmd_token}[a.cmd](a, sp)


if __name__ == "__main__":
    sys.exit(main())
