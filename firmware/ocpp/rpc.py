"""OCPP-J 1.6 RPC framework: frames in and out, schema validation, call/answer matching.

Frames (OCPP-J 1.6 section 4.2): `[2, id, action, {payload}]` Call, `[3, id, {payload}]`
CallResult, `[4, id, code, description, {details}]` CallError.

    parse(text, supported=None, max_size=MAX_FRAME) -> one tuple:
        (CALL, id, action, payload)          a valid call for a supported action
        (RESULT, id, payload)                a CallResult (payload checked by the Rpc, which
                                             knows the action)
        (ERROR, id, code, description, details)
        (REFUSE, id, code, description)      answer it with error_frame(id, code, description)
        (DROP, id_or_None, code, description) nothing to answer (see below); count it
    validate(action, kind, payload) -> None or (code, description); kind "req" or "conf"
    call_frame / result_frame / error_frame(...) -> compact JSON text
    Rpc(send, clock, handler, ...)           one connection's RPC state (see the class)

CallError decisions (spec = ocpp-j-1.6-specification, errata = ocpp-j-1.6-errata-sheet):
- Codes are spelled as in the spec's table 7: "FormationViolation" and
  "OccurenceConstraintViolation". Errata 5.1 and 5.2 keep these spellings for 1.6 ("Do not fix,
  this is a message level change"); the `ocpp` package the back end runs knows both spellings
  (FormationViolationError, OccurenceConstraintViolationError).
- Not JSON, not an array, an empty array, a message type that is not an integer, a wrong
  element count, an id/action that is not a string, a payload that is neither an object nor
  null: FormationViolation ("not conform the PDU structure"). null payloads are read as {}
  (spec 4.2.1 allows both notations).
- The unique id is echoed when element 1 is a string. A frame that is not JSON the charger
  accepts (a trailing comma, 300-deep nesting, an escaped lone surrogate) is still answered by
  its id when its head reads `[2,"<id>"`: the sender can match the error to its call. When the id
  can not be read it is "-1": OCPP-J 1.6 says nothing; "-1" is the convention OCPP-J 2.0.1
  (section 4.2.3) made explicit.
- Unique id longer than 36 characters (spec 4.1.4 table 3, named as a CallError case in 4.2.3):
  FormationViolation, with the id echoed unchanged so the sender can match it.
- Message type number not 2, 3 or 4 (spec 4.1.3: "it SHALL ignore the message payload"):
  dropped, nothing is answered (1.6 has no code for it).
- Unknown action: NotImplemented; an OCPP 1.6 action the charger does not handle (not in
  `supported`): NotSupported (table 7; errata 3.7 example).
- Payload against the schema: wrong JSON type -> TypeConstraintViolation; value out of range,
  not in the enum, string too long, not a multiple of the schema's multipleOf, a malformed
  date-time, a number that is not finite (1e999 decodes to inf: a JSON number, so the type is
  right and the value is what is wrong, table 7's "at least one field contains an invalid
  value"; in an integer field it is a float, so TypeConstraintViolation), a negative connectorId
  (the schemas say only "integer"; every PDU of spec section 6 says "connectorId >= 0" or "> 0";
  errata 3.39 answers an invalid connectorId with this code) -> PropertyConstraintViolation;
  a required property missing, a property the schema does not have (additionalProperties
  false, errata 3.1), an array shorter than minItems -> OccurenceConstraintViolation. (The
  `ocpp` package maps some of these differently, e.g. a missing property to ProtocolError;
  table 7's descriptions are followed here.)
  The date-time check is "YYYY-MM-DDTHH:MM:SS[.f...][Z|+hh:mm|-hh:mm]" with the fields in range;
  a missing offset is tolerated (read as UTC by the caller) because some back ends omit it.
- A Call with the same id as the call being handled, or any second Call while one is being
  handled (spec 4.1.1: the other side SHOULD NOT send it; 4.2.3 names "an existing call with
  the same unique identifier is being handled already" as a CallError case): GenericError.
- A frame longer than `max_size` bytes is never given to json.loads. If its head reads
  `[2,"<id>"` it is answered GenericError ("frame too large") with that id; otherwise dropped.
- A malformed CallResult/CallError is never answered (a CallError answers a Call only): it is
  dropped and counted; when its id is that of the outstanding call, that call fails with the code.
- Running out of memory while decoding: InternalError.
"""
import gc
import json

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# The strict scan (drivers/untrusted.py, shared with the file reader drivers/jsonfile.py);
# rpc.scan_json and rpc.json_error stay names of this module.
from drivers.untrusted import NOT_UTF8, finite, json_error, scan_json  # noqa: F401
from firmware.ocpp import schemas
from firmware import finish, loads
from firmware.ocpp import dumps as _dumps

from firmware.ocpp import random_bytes as _urandom

import asyncio

CALL, RESULT, ERROR = 2, 3, 4
REFUSE, DROP = 0, 1

MAX_ID = 36
MAX_FRAME = 4096  # bytes; a bigger frame is refused before json.loads (and is not kept whole)
UNREADABLE_ID = "-1"

NOT_IMPLEMENTED = "NotImplemented"
NOT_SUPPORTED = "NotSupported"
INTERNAL = "InternalError"
PROTOCOL = "ProtocolError"
SECURITY = "SecurityError"
FORMATION = "FormationViolation"
PROPERTY = "PropertyConstraintViolation"
OCCURENCE = "OccurenceConstraintViolation"
TYPE = "TypeConstraintViolation"
GENERIC = "GenericError"
TIMEOUT = "Timeout"  # local only: no answer in time (never sent)
CLOSED = "Closed"  # local only: the connection went down before the answer


_TNAME = {"s": "string", "e": "string", "d": "date-time string", "i": "integer", "n": "number",
          "b": "boolean", "o": "object", "a": "array"}


class RpcError(Exception):
    """A call failed (`code`: a CallError code, TIMEOUT or CLOSED), or a handler refuses a
    call with this CallError."""

    def __init__(self, code, description="", details=None):
        super().__init__(code, description)
        self.code = code
        self.description = description
        self.details = details


# ---------------------------------------------------------------------------- schemas

def find(action):
    """(action, request JSON, response JSON) of an OCPP 1.6 action, or None."""
    for row in schemas.A:
        if row[0] == action:
            return row
    return None


def actions():
    return [row[0] for row in schemas.A]


def _digits(s, i, n):
    v = 0
    for k in range(i, i + n):
        c = ord(s[k]) - 48
        if c < 0 or c > 9:
            return -1
        v = v * 10 + c
    return v


def _mdays(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and y % 100 != 0) or y % 400 == 0 else 28
    return 30 if m in (4, 6, 9, 11) else 31


def is_datetime(s):
    """RFC 3339 date-time ("2013-02-01T20:53:32.486Z"); the offset may be left out."""
    n = len(s)
    if n < 19 or s[4] != "-" or s[7] != "-" or s[10] not in "Tt" or s[13] != ":" or s[16] != ":":
        return False
    y, m = _digits(s, 0, 4), _digits(s, 5, 2)
    if (y < 0 or not 1 <= m <= 12 or not 1 <= _digits(s, 8, 2) <= _mdays(y, m)
            or not 0 <= _digits(s, 11, 2) <= 23 or not 0 <= _digits(s, 14, 2) <= 59
            or not 0 <= _digits(s, 17, 2) <= 60):
        return False
    i = 19
    if i < n and s[i] == ".":
        i += 1
        j = i
        while i < n and "0" <= s[i] <= "9":
            i += 1
        if i == j:
            return False
    if i == n:
        return True
    if s[i] in "Zz":
        return i + 1 == n
    if s[i] in "+-" and n - i == 6 and s[i + 3] == ":":
        return 0 <= _digits(s, i + 1, 2) <= 23 and 0 <= _digits(s, i + 4, 2) <= 59
    return False


# A property's code is upper case when the property is required; validation reads it in lower case
# through this table (str.lower() would allocate a string per property).
_LOWER = {"S": "s", "E": "e", "D": "d", "I": "i", "N": "n", "B": "b", "O": "o", "A": "a"}


def _in_enum(v, table):
    """`v` is one of the values of `table` ("|a|b|c|"), found without building "|v|"."""
    n = len(v)
    if not n or "|" in v:
        return False
    i = table.find(v)
    while i > 0:
        if table[i - 1] == "|" and table[i + n] == "|":
            return True
        i = table.find(v, i + 1)
    return False


def _check(code, arg, v):
    """None, or (error code, path, what) for value `v` against one item spec. The path is
    relative to `v` ("" for `v` itself, ".name" or "[k]" further down) and is built only for an
    error: a valid payload is checked without allocating."""
    t = type(v)
    if code == "s" or code == "e" or code == "d":
        if t is not str:
            return TYPE, "", "expected string"
        if code == "s":
            if arg is not None and len(v) > arg:
                return PROPERTY, "", "longer than %d" % arg
        elif code == "e":
            if not _in_enum(v, schemas.E[arg]):
                return PROPERTY, "", "not an allowed value"
        elif not is_datetime(v):
            return PROPERTY, "", "not a date-time"
        return None
    if code == "i":
        if t is not int:
            return TYPE, "", "expected integer"
        return None
    if code == "n":
        if t is not int and t is not float:
            return TYPE, "", "expected number"
        if t is float and not finite(v):  # 1e999 decodes to inf: of the right type, out of any range
            return PROPERTY, "", "not a finite number"
        if arg and t is float:
            r = v * arg
            if r != r or abs(r - round(r)) > 1e-6 * abs(r) + 1e-9:  # float32 on the ESP32
                return PROPERTY, "", "not a multiple of 1/%d" % arg
        return None
    if code == "b":
        if t is not bool:
            return TYPE, "", "expected boolean"
        return None
    if code == "o":
        if t is not dict:
            return TYPE, "", "expected object"
        return _check_props(arg, v)
    if code == "a":
        if not isinstance(v, list):  # (firmware.Many, an answer's long list, is one)
            return TYPE, "", "expected array"
        if len(v) < arg[0]:
            return OCCURENCE, "", "fewer than %d items" % arg[0]
        it = arg[1]
        ic = it[0]
        ia = it[1] if len(it) > 1 else None
        for k in range(len(v)):
            e = _check(ic, ia, v[k])
            if e is not None:
                return e[0], "[%d]%s" % (k, e[1]), e[2]
        return None
    return INTERNAL, "", "bad schema code %r" % code  # pragma: no cover


def _check_props(props, obj):
    """None or (code, ".name..." path, what) for dict `obj` against a decoded object of the table."""
    for k in obj:
        for p in props:
            if p[0] == k:
                break
        else:
            return OCCURENCE, "." + k, "unexpected property"
    for p in props:
        name = p[0]
        c = p[1]
        if name not in obj:
            if c < "a":  # upper case: required
                return OCCURENCE, "." + name, "required"
            continue
        v = obj[name]
        e = _check(_LOWER.get(c, c), p[2] if len(p) > 2 else None, v)
        if e is not None:
            return e[0], "." + name + e[1], e[2]
        if name == "connectorId" and v < 0:  # spec section 6: "connectorId >= 0" (or > 0) in every PDU
            return PROPERTY, "." + name, "below 0"
    return None


def check_object(props, obj):
    """None or (code, description) for dict `obj` against a decoded object of the table; the
    description names the offending value by its path ("a.b[2].c: expected integer")."""
    e = _check_props(props, obj)
    if e is None:
        return None
    return e[0], "%s: %s" % (e[1][1:], e[2])


def validate(action, kind, payload):
    """None when `payload` is a valid `action` request (kind "req") or response ("conf"),
    else (code, description). An unknown action gives (NotImplemented, ...)."""
    row = find(action)
    if row is None:
        return NOT_IMPLEMENTED, "unknown action %s" % action
    if type(payload) is not dict:
        return TYPE, "payload: expected object"
    return check_object(_props(row[1] if kind == "req" else row[2]), payload)


SLICE = const(6)  # items of a long array checked in one step


def check_slices(props, obj):
    """check_object as a generator: a long array at the top of `obj` is checked SLICE items at
    a time with a yield between (the 25 entries of a SendLocalList take 19 ms of ESP32 time at
    240 MHz checked at once; a step must stay under 20 ms). Returns what check_object does."""
    long = None
    for k in obj:
        v = obj[k]
        if isinstance(v, list) and len(v) > SLICE:
            long = k
            break
    if long is None:
        return check_object(props, obj)
    whole = obj[long]
    part = dict(obj)
    for i in range(0, len(whole), SLICE):
        part[long] = whole[i:i + SLICE]
        if check_object(props, part) is not None:
            return check_object(props, obj)  # the error, with its path in the whole array
        yield
    return None


def validate_steps(action, kind, payload):
    """validate() as a generator (check_slices)."""
    row = find(action)
    if row is None or type(payload) is not dict:
        return validate(action, kind, payload)
    return (yield from check_slices(_props(row[1] if kind == "req" else row[2]), payload))


def _props(text):
    """The property list of one object of the table (decoded on use: the table stays text)."""
    return json.loads(text)


# ---------------------------------------------------------------------------- frames

# The frame-head peeks read bytes (ints): a frame arrives as a view of the WebSocket's buffer.
# (const: defined before their first use, or MicroPython's compiler looks for a global.)
_WS = b" \t\n\r"
_QUOTE = const(0x22)
_BACKSLASH = const(0x5C)
_COMMA = const(0x2C)
_LBRACKET = const(0x5B)
_TWO = const(0x32)


def _peek_call_id(text):
    """The id of a frame that starts `[2,"<id>"` (blanks allowed), else None; no allocation
    beyond the id itself. Used for frames too large to decode (`text` may hold only the
    frame's head)."""
    if isinstance(text, str):
        text = text[:64].encode()
    n = min(len(text), 64)

    def skip(i):
        while i < n and text[i] in _WS:
            i += 1
        return i
    i = skip(0)
    for want in (_LBRACKET, _TWO, _COMMA):
        if i >= n or text[i] != want:
            return None
        i = skip(i + 1)
    if i >= n or text[i] != _QUOTE:
        return None
    j = i + 1
    while j < n and j - i <= MAX_ID + 1:
        c = text[j]
        if c == _QUOTE:
            try:
                return bytes(text[i + 1:j]).decode()
            except UnicodeError:
                return None
        if c == _BACKSLASH or c < 0x20:
            return None
        j += 1
    return None


NO_MEMORY = "out of memory"
SPARE_BYTES = const(1024)  # Rpc's spare block: a frame's longest string (500 characters) fits


def _no_memory(text, supported):
    uid = _peek_call_id(text)
    if uid is None:
        return (REFUSE, UNREADABLE_ID, INTERNAL, NO_MEMORY)
    action = _peek_action(text, uid)
    if action is not None and find(action) is None:
        return (REFUSE, uid, NOT_IMPLEMENTED, "unknown action")
    if action is not None and supported is not None and action not in supported:
        return (REFUSE, uid, NOT_SUPPORTED, "%s not supported" % action)
    return (REFUSE, uid, INTERNAL, NO_MEMORY)


def _peek_action(text, uid):
    """The action of a frame whose head is `[2,"<uid>","<action>"` (blanks allowed), else None."""
    if isinstance(text, str):
        text = text[:160].encode()
    n = min(len(text), 160)
    i = bytes(text[:n]).find(b'"' + uid.encode() + b'"')
    if i < 0:
        return None
    i += len(uid) + 2
    while i < n and text[i] in _WS:
        i += 1
    if i >= n or text[i] != _COMMA:
        return None
    i += 1
    while i < n and text[i] in _WS:
        i += 1
    if i >= n or text[i] != _QUOTE:
        return None
    j = i + 1
    while j < n and text[j] != _QUOTE:
        if text[j] == _BACKSLASH or text[j] < 0x20:
            return None
        j += 1
    if j >= n:
        return None
    try:
        return bytes(text[i + 1:j]).decode()
    except UnicodeError:
        return None


def _not_json(text, why):
    """The refusal of a frame that is not JSON the charger accepts: by its id when the head
    names one."""
    uid = _peek_call_id(text)
    return (REFUSE, UNREADABLE_ID if uid is None else uid, FORMATION,
            NOT_UTF8 if why == NOT_UTF8 else "not JSON")


def parse(text, supported=None, max_size=MAX_FRAME, checked=False, size=None, check=True):
    """Decode one incoming frame (bytes-like or str); never raises. See the module's docstring.
    `checked`: the caller already ran scan_json on it (Rpc.feed does, yielding meanwhile).
    `check`: False when the caller checks a Call's payload itself (Rpc.feed, check_slices).
    `size`: the frame's real length when `text` holds only its head (the WebSocket layer keeps
    at most its buffer's worth of a frame that is too large)."""
    if (len(text) if size is None else size) > max_size:
        uid = _peek_call_id(text)
        if uid is None:
            return (DROP, None, GENERIC, "frame too large")
        return (REFUSE, uid, GENERIC, "frame too large (limit %d bytes)" % max_size)
    try:
        if not checked:
            why = json_error(text)
            if why is not None:
                return _not_json(text, why)
        m = loads(text)
    except MemoryError:
        # A long string in the payload needs one block that a fragmented heap may not have. The
        # head still names the call: answer it by its id, NotImplemented/NotSupported when the
        # action alone says so (the payload does not matter then).
        return _no_memory(text, supported)
    except Exception:
        return _not_json(text, None)
    if type(m) is not list or not m:
        return (REFUSE, UNREADABLE_ID, FORMATION, "not a non-empty JSON array")
    n = len(m)
    uid = m[1] if n > 1 and type(m[1]) is str else None
    t = m[0]
    if type(t) is not int:
        return (REFUSE, UNREADABLE_ID if uid is None else uid, FORMATION, "message type is not an integer")
    if t == CALL:
        if uid is None:
            return (REFUSE, UNREADABLE_ID, FORMATION, "unique id is not a string")
        if n != 4:
            return (REFUSE, uid, FORMATION, "a call has 4 elements")
        if len(uid) > MAX_ID:
            return (REFUSE, uid, FORMATION, "unique id longer than %d" % MAX_ID)
        action = m[2]
        payload = m[3]
        if type(action) is not str:
            return (REFUSE, uid, FORMATION, "action is not a string")
        if payload is None:
            payload = {}
        elif type(payload) is not dict:
            return (REFUSE, uid, FORMATION, "payload is not an object")
        row = find(action)
        if row is None:
            return (REFUSE, uid, NOT_IMPLEMENTED, "unknown action")
        if supported is not None and action not in supported:
            return (REFUSE, uid, NOT_SUPPORTED, "%s not supported" % action)
        if not check:
            return (CALL, uid, action, payload)
        try:
            e = check_object(_props(row[1]), payload)
        except MemoryError:
            return (REFUSE, uid, INTERNAL, NO_MEMORY)
        if e is not None:
            return (REFUSE, uid, e[0], e[1])
        return (CALL, uid, action, payload)
    if t == RESULT:
        if uid is None or n != 3:
            return (DROP, uid, FORMATION, "malformed CallResult")
        payload = m[2]
        if payload is None:
            payload = {}
        elif type(payload) is not dict:
            return (DROP, uid, FORMATION, "CallResult payload is not an object")
        return (RESULT, uid, payload)
    if t == ERROR:
        if uid is None or n != 5 or type(m[2]) is not str:
            return (DROP, uid, FORMATION, "malformed CallError")
        desc = m[3] if type(m[3]) is str else ""
        details = m[4] if type(m[4]) is dict else {}
        return (ERROR, uid, m[2], desc, details)
    return (DROP, uid, None, "unknown message type %d" % t)


def random_hex(n=4):
    """n random bytes as hex text (call id prefixes, boot ids)."""
    return "".join("%02x" % b for b in _urandom(n))


def call_frame(uid, action, payload):
    return _dumps([CALL, uid, action, payload])


def result_frame(uid, payload):
    return _dumps([RESULT, uid, payload])


def error_frame(uid, code, description="", details=None):
    return _dumps([ERROR, uid, code, description, details if details is not None else {}])


# ---------------------------------------------------------------------------- the RPC object

if hasattr(asyncio, "wait_for_ms"):
    _wait_ms = asyncio.wait_for_ms  # type: ignore[attr-defined]
else:
    def _wait_ms(aw, ms):
        return asyncio.wait_for(aw, ms / 1000)


class Rpc:
    """The RPC state of one OCPP-J connection (spec 4.1.1: one outstanding call each way).

        rpc = Rpc(send, clock, handler, supported=("Reset", ...), timeout_ms=30000)
        await rpc.feed(text)               # every text message the WebSocket receives
        payload = await rpc.call("Heartbeat", {})   # raises RpcError(code, ...) on failure
        rpc.closed()                       # the connection went down: the outstanding call
                                           # fails with CLOSED

    `send(text)` is an async function (WebSocket.send). `handler(action, payload)` is an async
    function that returns the CallResult payload or raises RpcError(code, description) to
    answer with that CallError; any other exception is answered with InternalError.

    Outgoing calls: at most one outstanding. A second `call()` waits (FIFO) until the first is
    answered or timed out; its own `timeout_ms` runs from the moment it is sent. Unique ids are
    a boot-random prefix (8 hex digits) + a hex counter ("3fa2c91b1a"): unique on the
    connection and, with overwhelming probability, across reboots. A CallResult/CallError whose
    id is not the outstanding call's (late, unknown) is ignored and counted in `late`.
    The result payload is validated against the action's response schema; an invalid one fails
    the call with that code (counted in `bad_results`).

    Incoming calls: one handled at a time; the handler runs as its own task so that answers to
    our calls are still read meanwhile; a Call that arrives while one is being handled is
    refused with GenericError. Refused frames are counted in `refused`, dropped ones in
    `dropped`.

    check_out (default True): every outgoing call payload and result payload is validated
    first; a failure raises RpcError(InternalError) in `call()` (nothing sent) or answers the
    incoming call with InternalError instead of the invalid payload, and is counted in `bugs`.

    send_json: when given (ws.Link.send_json), calls and results go to it as JSON values, which
    the link encodes into its own buffer: a message never needs a block of heap its size.
    An answer that meets MemoryError before any of it is sent is answered with InternalError
    instead, counted in `unanswered` and told to `note(text)`.

    spare: a one-element list holding a bytearray(SPARE_BYTES) made at boot, or None. Hours of
    work leave the heap in pieces (24 KB free, none of them 600 bytes, seen in the fuzz), and a
    frame that can not be decoded for want of one piece is tried once more after the spare is
    given back to the heap, and so is the handling of a call in `reads` (actions that change
    nothing, so that running them again is safe); the spare is made again when there is room.
    """

    def __init__(self, send, clock, handler=None, supported=None, timeout_ms=30000,
                 max_size=MAX_FRAME, check_out=True, poll_ms=20, prefix=None, send_json=None,
                 note=None, spare=None, reads=()):
        self.send = send
        self.note = note
        self.spare = spare
        self.reads = reads
        self.send_json = send_json
        self.clock = clock
        self.handler = handler
        self.supported = supported
        self.timeout_ms = timeout_ms
        self.max_size = max_size
        self.check_out = check_out
        self.poll_ms = poll_ms
        if prefix is None:
            prefix = random_hex()
        self.prefix = prefix
        self.seq = 0
        self.lock = asyncio.Lock()
        self._got = asyncio.Event()  # an answer (or the end of the connection) arrived
        self._out_id = None  # id of the outstanding call
        self._out_action = None
        self._answer = None  # (RESULT, payload) or (ERROR, code, desc, details)
        self._in_id = None  # id of the incoming call being handled
        self.late = 0
        self.refused = 0
        self.dropped = 0
        self.bad_results = 0
        self.bugs = 0
        self.timeouts = 0
        self.unanswered = 0

    def next_id(self):
        self.seq += 1
        return "%s%x" % (self.prefix, self.seq)

    @property
    def busy(self):
        """True while an incoming call is being handled or its answer written."""
        return self._in_id is not None or self._writing

    _writing = False

    @property
    def outstanding(self):
        """Id of the outstanding outgoing call, or None."""
        return self._out_id

    async def call(self, action, payload, timeout_ms=None):
        """Send a Call and return the CallResult payload; raises RpcError(code, description):
        the CallError's code, a schema code for an invalid result, TIMEOUT or CLOSED."""
        if self.check_out:
            e = validate(action, "req", payload)
            if e is not None:
                self.bugs += 1
                raise RpcError(INTERNAL, "outgoing %s: %s" % (action, e[1]))
        await self.lock.acquire()
        try:
            uid = self.next_id()
            self._answer = None
            self._out_id = uid
            self._out_action = action
            if self.send_json is not None:
                await self.send_json([CALL, uid, action, payload])
            else:
                await self.send(call_frame(uid, action, payload))
            clock = self.clock
            deadline = clock.ticks_add(clock.ticks_ms(), self.timeout_ms if timeout_ms is None else timeout_ms)
            while self._answer is None:
                if self._out_id is None:
                    raise RpcError(CLOSED, "connection closed")
                if clock.ticks_diff(clock.ticks_ms(), deadline) >= 0:
                    self.timeouts += 1
                    raise RpcError(TIMEOUT, "no answer to %s" % action)
                # Woken by feed() at once; every poll_ms the deadline is checked on the clock.
                self._got.clear()
                try:
                    await _wait_ms(self._got.wait(), self.poll_ms)
                except asyncio.TimeoutError:
                    pass
            a = self._answer
            if a[0] == RESULT:
                e = validate(action, "conf", a[1])
                if e is not None:
                    self.bad_results += 1
                    raise RpcError(e[0], "%s.conf: %s" % (action, e[1]))
                return a[1]
            raise RpcError(a[1], a[2], a[3])
        finally:
            self._out_id = None
            self._out_action = None
            self._answer = None
            self.lock.release()

    def closed(self):
        """The connection is gone: the outstanding call fails with CLOSED."""
        self._out_id = None
        self._got.set()

    async def feed(self, text, size=None):
        """Take one incoming message (bytes-like or str; `size` as in parse()). Returns the parsed
        tuple (for logs and tests)."""
        checked = False
        if (len(text) if size is None else size) <= self.max_size:
            why = await finish(scan_json(text))  # a long frame must not hold the control task back
            if why is not None:
                m = _not_json(text, why)
                self.refused += 1
                await self.send(error_frame(m[1], m[2], m[3]))
                return m
            checked = True
        m = parse(text, self.supported, self.max_size, checked, size, check=False)
        if m[0] == REFUSE and m[3] is NO_MEMORY and self._give_spare():
            m = parse(text, self.supported, self.max_size, checked, size, check=False)
        self._keep_spare()
        k = m[0]
        if k == CALL:  # its payload against the schema, a slice of a long array at a time
            try:
                e = await finish(validate_steps(m[2], "req", m[3]))
            except MemoryError:
                e = (INTERNAL, NO_MEMORY)
            if e is not None:
                m = (REFUSE, m[1], e[0], e[1])
                k = REFUSE
        if k == CALL:
            if self._in_id is not None:
                self.refused += 1
                desc = "call with this id is being handled" if m[1] == self._in_id else "busy with another call"
                await self.send(error_frame(m[1], GENERIC, desc))
                return (REFUSE, m[1], GENERIC, desc)
            self._in_id = m[1]
            asyncio.create_task(self._serve(m[1], m[2], m[3]))
        elif k == REFUSE:
            self.refused += 1
            await self.send(error_frame(m[1], m[2], m[3]))
        elif k == RESULT or k == ERROR:
            if m[1] != self._out_id or self._answer is not None:
                self.late += 1
            else:
                self._answer = (RESULT, m[2]) if k == RESULT else (ERROR, m[2], m[3], m[4])
                self._got.set()
        else:  # DROP
            self.dropped += 1
            if m[1] is not None and m[1] == self._out_id and m[2] is not None and self._answer is None:
                self._answer = (ERROR, m[2], m[3], None)
                self._got.set()
        return m

    def _give_spare(self):
        s = self.spare
        if s is None or s[0] is None:
            return False
        s[0] = None
        gc.collect()  # (the spare's piece is free only after a collection)
        return True

    def _keep_spare(self):
        s = self.spare
        if s is not None and s[0] is None:
            try:
                s[0] = bytearray(SPARE_BYTES)
            except MemoryError:
                pass  # the heap has no such piece now: tried again with the next frame

    async def _serve(self, uid, action, payload):
        try:
            try:
                if self.handler is None:
                    raise RpcError(NOT_SUPPORTED, "%s not supported" % action)
                try:
                    res = await self.handler(action, payload)
                except MemoryError:
                    if action not in self.reads or not self._give_spare():
                        raise
                    res = await self.handler(action, payload)  # it changes nothing: once more
                finally:
                    self._keep_spare()
                if res is None:
                    res = {}
                if self.check_out:
                    e = await finish(validate_steps(action, "conf", res))
                    if e is not None:
                        self.bugs += 1
                        raise RpcError(INTERNAL, "bad %s.conf: %s" % (action, e[1]))
                frame = [RESULT, uid, res] if self.send_json is not None else result_frame(uid, res)
            except RpcError as e:
                frame = error_frame(uid, e.code, e.description, e.details)
            except Exception as e:  # a bug in a handler: tell the back end, keep running
                frame = error_frame(uid, INTERNAL, "%s" % type(e).__name__)
            # Free for the next call before the answer goes out: the back end may send its next
            # call the moment it has this answer (one outstanding call each way, 4.1.1).
            self._in_id = None
            self._writing = True
            try:
                try:
                    if type(frame) is list:
                        await self.send_json(frame)
                    else:
                        await self.send(frame)
                except MemoryError:  # nothing of it went out (ws): the back end is told so
                    self.unanswered += 1
                    if self.note is not None:
                        self.note("no memory for the answer to %s %s" % (action, uid))
                    await self.send(error_frame(uid, INTERNAL, "no memory for the answer"))
            except Exception:
                pass  # the link is down: the back end times the call out
        finally:
            self._in_id = None
            self._writing = False
