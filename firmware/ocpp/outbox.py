"""Durable outbox for OCPP transaction-related messages (StartTransaction, StopTransaction,
transaction MeterValues): queued on flash before they are sent, delivered strictly in order,
removed only when the Central System confirmed them (or after the last allowed attempt).

Use (by the OCPP link, which has one call in flight at a time):
    ob = Outbox("/outbox", attempts=3, retry_interval_s=60)   # ob.configure(...) at run time
    ob.put("StartTransaction", payload, tx=n)    # durable when it returns; tx: local number
    ob.put("StopTransaction", payload, tx=n)     # transactionId is filled in when it is sent
    m = ob.next_due(now_ms)       # (seq, action, payload) when due (ask only while connected)
    ob.confirm(seq, result)       # CallResult payload; durable when it returns (see 2. below)
    ob.fail(seq, now_ms)          # CallError or no answer in time: retry later or discard
    ob.release(seq)               # the link went down before an answer: not an attempt
    ob.due_in(now_ms), ob.peek(), ob.pending(), ob.transaction_id(n), ob.dropped, ob.tail()
    ob.flush(), ob.waiting(), ob.error   # a state.json write the flash refused (see 2.)

Files (all in one directory, all access through the injectable `fs`):

    <k>.seg      segment k: the messages with sequence numbers k*S .. k*S+S-1 (S = seg_records,
                 64 by default, fixed in state.json when the directory is created), appended one
                 record per line, never rewritten:
                     CCCCCCCC LLLL [seq,"Action",tx,{payload}]\\n
                 (firmware/journal.py's framed records: C = CRC-32 of the JSON, L = its length.)
                 A line torn by a power cut fails them and is skipped (the next append first
                 ends it with b"!\\n", so a torn tail never swallows a record nor is completed:
                 journal.Appender).
    state.json   {"h": head, "d": dropped, "x": [[tx, transactionId], ...], "s": S}, replaced
                 atomically (store.write_json: temporary file + rename). `head` is the ack
                 pointer: every message with seq < head is confirmed or dropped; every record
                 with seq >= head is still to be delivered. `x` maps local transaction numbers
                 to the transactionId the Central System gave (-1: none will ever come).

Why nothing is lost, nothing confirmed comes back, and the only duplicate is the message whose
confirmation the power cut (each step is one durable write, in this order):
  1. put() appends the record and closes (commits) the file before it returns. Its seq is above
     every record on flash and above head (at boot next seq = max(head, last valid seq + 1)), so
     order of seq = order of put, and the record stays deliverable until head passes it.
  2. head passes a record only through confirm()/drop of that very record (it must be the oldest
     one): one atomic rename of state.json that carries the new head, the transactionId learnt
     from a StartTransaction.conf (or -1 for a dropped StartTransaction) and the dropped count.
     No later message is handed out before that rename is done, so the transactionId is durable
     before any later message is sent, and a confirmed message is never offered again. A cut
     before the rename leaves the old state: the message is offered again after the reboot (the
     one permitted duplicate). When the flash refuses the write (full, failing), RAM keeps the
     confirmation (the message is not offered again: no re-send storm), next_due() writes it
     again at each call and hands out nothing until it is on flash (`waiting()`, `error`).
  3. Compaction removes segment k only when (k+1)*S <= the head on flash, i.e. after step 2
     made every record in it confirmed, and writes no data: whole files are deleted (a cut
     removal is redone at boot). No record is ever rewritten, so compaction can not tear one.

Retries (OCPP 1.6 section 3.7.1; keys 9.1.31 TransactionMessageAttempts and 9.1.32
TransactionMessageRetryInterval, both changeable at run time with configure()):
  a message is transmitted at most `attempts` times. fail() reports a "failure to process" (a
  CallError, or no answer within the call timeout while connected); before the next
  transmission the outbox waits retry_interval_s * (number of transmissions so far), so with 3
  and 60: send, fail, 60 s, send, fail, 120 s, send, fail -> discarded ("the Charge Point SHOULD
  discard the message and continue with the next transaction-related message"). Discarded
  messages are counted in `dropped` (durable). release() hands a message back without counting
  an attempt (the link went down before an answer: it is offered again at once). The attempt
  count lives in RAM: after a reboot the oldest message is sent at once and counts afresh.

transactionId (errata 3.18 to section 4.8): put() names the transaction by a local number `tx`.
The outbox fills payload["transactionId"] of every later StopTransaction/MeterValues of that
transaction from the mapping recorded by the StartTransaction.conf. If the StartTransaction was
discarded after its last attempt, or its answer carried no integer transactionId, the mapping is
-1 and "any Transaction related messages for this transaction" are sent with transactionId -1 as
the errata says: the StopTransaction and the MeterValues too (the Central System "SHALL respond as
if these messages refer to a valid transactionId"), so no metering is thrown away. A
StartTransaction.conf whose idTagInfo is not Accepted still carries a valid transactionId: it is
used (the charger then stops the transaction normally, reason DeAuthorized, section 3.5.4).
Because delivery is strictly in order, a StopTransaction can not be sent before its
StartTransaction was confirmed or discarded. The mapping of a transaction is removed when its
StopTransaction is confirmed or discarded; at most `max_tx` mappings are kept (the oldest is
evicted).

RAM does not depend on the queue length: one decoded message (the oldest) is cached, files are
read one record at a time with seek, directories through ilistdir/scandir. Measured by
tests_host/test_outbox.py with 10,000 queued 300-byte MeterValues on unix MicroPython 1.29 x64,
-X heapsize=64K (files in tmpfs; on the host's ext4 disk confirm takes 0.3-1 ms instead):
  heap in use after gc: 22.4 KB with 100 queued (mostly the imported modules), +64 B with
    10,000; flat while draining; an Outbox object ~0.8 KB; boot with 10,000 queued < 1 ms
    (it scans only the last segment);
  put: ~20 us on average (one append of 331 bytes: 14-byte header + JSON + newline);
  confirm: ~16 us (state.json, ~40 bytes, written to a temporary file and renamed);
  next_due + confirm per message while draining: ~45 us;
  compaction of a fully confirmed 64-message segment: one file removal, 0 bytes written, < 20 us.
On the ESP32 (LittleFS on SPI flash) each put/confirm/compaction is one or two filesystem
commits (a few ms each), never a rewrite of queued data. Flash use is the JSON size + 15 bytes
per queued message (10,000 such MeterValues take 3.3 MB: size the filesystem, or `capacity`,
accordingly).
"""

from firmware import journal
from firmware import loads
from drivers.untrusted import finite
from firmware import encoder
from firmware.encoder import Encoder, utf8
from firmware import store
from firmware.ocpp import dumps as _dumps
from firmware.clock import SystemClock

START = "StartTransaction"
STOP = "StopTransaction"

def _not_json(v, depth):
    """None when `v` is made of what JSON holds (objects with string keys, arrays, strings,
    finite numbers, booleans, null, at most 16 deep), else what is wrong. Allocates nothing."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return None
    if t is float:
        return None if finite(v) else "a number that is not finite"
    if depth >= 16:
        return "nested more than 16 deep"
    if t is dict:
        for k in v:
            if type(k) is not str:
                return "a key that is not a string"
            why = _not_json(v[k], depth + 1)
            if why is not None:
                return why
        return None
    if isinstance(v, (list, tuple)):  # (a firmware.Many is one)
        for x in v:
            why = _not_json(x, depth + 1)
            if why is not None:
                return why
        return None
    return "a %s" % t.__name__


ENCODER_BYTES = encoder.BYTES  # a record's JSON at most (firmware/encoder.py)
MAX_BODY = journal.MAX_BODY  # hard limit of one record's JSON (bytes); max_bytes may only be lower
_MAX_WAIT = 0x0FFFFFFF  # longest retry wait in ms (~74 h), safe for ticks_add on every port



class OutboxFull(Exception):
    pass


FS = store.RealFS  # the filesystem adapter of the outbox (it has the directory calls too)


def _seg_no(name):
    if not name.endswith(".seg"):
        return None
    try:
        return int(name[:-4])
    except ValueError:
        return None


def _valid(rec):
    return (type(rec) is list and len(rec) == 4 and type(rec[0]) is int and rec[0] >= 0
            and type(rec[1]) is str and type(rec[3]) is dict
            and (rec[2] is None or type(rec[2]) is int))


def _next(f, off, enc=None):
    """The record at byte `off` of `f` (positioned there): (record or None, bytes consumed), see
    journal.read_framed (`enc`: the encoder whose buffer it is read into, unless a frame is being
    written from it)."""
    body, n = journal.read_framed(f, off, None if enc is None or enc.busy else enc)
    if body is None:
        return None, n
    try:
        rec = enc.value() if body is enc else loads(body)
    except ValueError:
        rec = None
    return (rec if _valid(rec) else None), n


class Outbox:
    def __init__(self, path, fs=None, clock=None, attempts=3, retry_interval_s=60,
                 seg_records=64, max_bytes=4096, capacity=20000, max_tx=16, auto_compact=True, enc=None):
        if not 0 < max_bytes <= MAX_BODY:
            raise ValueError("outbox: max_bytes must be 1..%d, got %r" % (MAX_BODY, max_bytes))
        self.dir = path
        self.fs = fs or FS()
        self.clock = clock or SystemClock()
        self.attempts = 3
        self.retry_interval_s = 60
        self.configure(attempts, retry_interval_s)
        self.seg = seg_records
        self.max_bytes = max_bytes
        self._enc = enc  # firmware/encoder.py: made by station.start while the heap is whole
        self.capacity = capacity
        self.max_tx = max_tx
        self.auto_compact = auto_compact
        self._state = path + "/state.json"
        self.head = 0  # every seq below is confirmed or dropped (durable)
        self.dropped = 0  # messages discarded after their last attempt (durable)
        self._tx = {}  # local transaction number -> transactionId (durable, bounded)
        self._cur = None  # the oldest unconfirmed record, decoded, transactionId filled
        self._fails = 0  # failed transmissions of _cur
        self._due = None  # tick before which _cur is not sent again
        self._busy = False  # _cur handed out by next_due(), no answer yet
        self._dirty = False  # RAM (head, mapping, count) is ahead of state.json
        self._open()

    # -- boot -----------------------------------------------------------------------------------

    def _open(self):
        fs = self.fs
        fs.mkdir(self.dir)
        doc = None
        try:
            doc = store.read_json(self._state, fs)
            if doc is not None:
                tx = {}
                for p in doc["x"]:
                    tx[int(p[0])] = int(p[1])
                seg = int(doc["s"])
                if seg < 1:
                    raise ValueError
                self.head, self.dropped, self._tx, self.seg = int(doc["h"]), int(doc["d"]), tx, seg
        except (ValueError, KeyError, TypeError, IndexError):
            # Can not happen with an atomic rename; if flash rots, deliver everything still on
            # flash again (duplicates) rather than lose anything.
            self.head, self.dropped, self._tx = 0, 0, {}
        self._saved = self.head  # head as state.json has it
        self.error = None  # OSError of a state.json write that is still to be made
        if doc is None:  # a new outbox: its segment size is fixed before the first segment
            self._dirty = True
            self.flush()
        hk = self.head // self.seg
        lo = hi = -1
        for name in fs.ilistdir(self.dir):
            k = _seg_no(name)
            if k is not None:
                if lo < 0 or k < lo:
                    lo = k
                if k > hi:
                    hi = k
        self._low_k = lo if lo >= 0 else hk
        self.compact()  # a removal cut by the power is redone here
        self._last_k = hi
        nxt = self.head
        self._app = journal.Appender(fs)
        if self._enc is None:
            self._enc = Encoder()
        self._tail = None  # (seq, action, tx) of the newest record on flash
        if hi >= hk:
            if hi * self.seg > nxt:
                nxt = hi * self.seg
            f = fs.open(self._seg_path(hi), "rb")
            try:
                off = 0
                while True:
                    rec, n = _next(f, off, self._enc)
                    if n < 0:
                        self._app.nl = n == -2
                        break
                    if rec is not None and rec[0] + 1 > nxt:
                        nxt = rec[0] + 1
                        self._tail = (rec[0], rec[1], rec[2])
                    off += n
            finally:
                f.close()
        self.next_seq = nxt
        self._rk, self._roff = hk, 0  # where the oldest unconfirmed record is looked for
        self._nk, self._noff = hk, 0  # just after it

    def _seg_path(self, k):
        return "%s/%d.seg" % (self.dir, k)

    # -- public ---------------------------------------------------------------------------------

    def configure(self, attempts=None, retry_interval_s=None):
        """TransactionMessageAttempts (>= 1) and TransactionMessageRetryInterval (s, >= 0)."""
        if attempts is not None and (type(attempts) is not int or attempts < 1):
            raise ValueError("TransactionMessageAttempts: expected an integer >= 1, got %r" % (attempts,))
        if retry_interval_s is not None and (type(retry_interval_s) is not int or retry_interval_s < 0):
            raise ValueError("TransactionMessageRetryInterval: expected an integer >= 0 (seconds), got %r"
                             % (retry_interval_s,))
        if attempts is not None:
            self.attempts = attempts
        if retry_interval_s is not None:
            self.retry_interval_s = retry_interval_s

    def put(self, action, payload, tx=None):
        """Queue a message; returns its sequence number once it is on flash.

        `tx` is the local transaction number: the one a StartTransaction starts, or the one a
        StopTransaction/MeterValues belongs to (its transactionId is filled in when sent).
        """
        if type(action) is not str or not action:
            raise ValueError("outbox: action must be a non-empty string, got %r" % (action,))
        if type(payload) is not dict:
            raise ValueError("outbox: %s payload must be a dict, got %r" % (action, type(payload)))
        if tx is not None and type(tx) is not int:
            raise ValueError("outbox: tx must be an integer or None, got %r" % (tx,))
        if self.next_seq - self.head >= self.capacity:
            raise OutboxFull("outbox: %d messages queued, the capacity" % self.capacity)
        seq = self.next_seq
        # MicroPython's json writes what it cannot encode as its repr (`<object>`, `nan`) where
        # CPython raises: a body that does not read back would be accepted here and then dropped
        # from flash as a damaged record, so it is refused now (checked in place: decoding the
        # body again would take a second copy of the message).
        why = _not_json(payload, 0)
        if why is not None:
            raise ValueError("outbox: %s payload is not JSON (%s)" % (action, why))
        enc = self._enc
        if enc.busy:  # a frame is being written from it: this record as a string of its own
            body = utf8(_dumps([seq, action, tx, payload]))
            n = len(body)
        else:
            n = enc.load([seq, action, tx, payload])
        if n > self.max_bytes:
            raise ValueError("outbox: %s message is %d bytes, more than the %d allowed"
                             % (action, n, self.max_bytes))
        k = seq // self.seg
        self.next_seq = seq + 1  # a failed write leaves a gap, never a reused number
        if k > self._last_k:
            self._last_k = k
        tail = (seq, action, tx)  # (made first: nothing may fail between the write and noting it)
        if enc.busy:
            self._app.append(self._seg_path(k), body)
        else:
            try:
                self._app.append_encoded(self._seg_path(k), enc, n)
            finally:
                enc.release()
        self._tail = tail
        return seq

    @property
    def encoder(self):
        """The encoder records are made and read with (the link may share it: firmware/encoder.py)."""
        return self._enc

    def tail(self):
        """(action, tx) of the newest message put (delivered or not; None when the boot found
        none left on flash). Lets the owner tell, after a power cut or a put() that raised,
        whether its last put() reached the flash."""
        t = self._tail
        if t is None:
            return None
        return t[1], t[2]

    def peek(self):
        """(seq, action, payload) of the oldest unconfirmed message, or None."""
        rec = self._load()
        if rec is None:
            return None
        return rec[0], rec[1], rec[3]

    def next_due(self, now_ms):
        """The oldest message when it may be transmitted now, else None. The message counts as
        in flight until confirm(), fail() or release(); meanwhile nothing else is handed out."""
        if self._busy or not self.flush():
            return None
        rec = self._load()
        if rec is None:
            return None
        if self._due is not None and self.clock.ticks_diff(now_ms, self._due) < 0:
            return None
        self._busy = True
        return rec[0], rec[1], rec[3]

    def due_in(self, now_ms):
        """Milliseconds until next_due() has something (0: now), None when empty or in flight."""
        if self._busy or self._dirty or self._load() is None:
            return None
        if self._due is None:
            return 0
        d = self.clock.ticks_diff(self._due, now_ms)
        return d if d > 0 else 0

    def confirm(self, seq, result=None):
        """The CallResult for message `seq` arrived (`result`: its payload). Durable on return,
        unless the flash refused the write: then the confirmation is kept in RAM (the message is
        not offered again) and nothing more is handed out until flush() wrote it (`error`)."""
        rec = self._oldest(seq)
        upd = None
        if rec[2] is not None:
            if rec[1] == START:
                tid = result.get("transactionId") if type(result) is dict else None
                upd = (rec[2], tid if type(tid) is int else -1)
            elif rec[1] == STOP:
                upd = (rec[2], None)
        self._advance(seq, upd, 0)

    def fail(self, seq, now_ms):
        """Message `seq` failed to be processed (CallError, or no answer in time). Returns True
        when that was its last attempt and it was discarded."""
        rec = self._oldest(seq)
        self._busy = False
        self._fails += 1
        if self._fails >= self.attempts:
            upd = None
            if rec[2] is not None:
                if rec[1] == START:
                    upd = (rec[2], -1)
                elif rec[1] == STOP:
                    upd = (rec[2], None)
            self._advance(seq, upd, 1)
            return True
        wait = self.retry_interval_s * 1000 * self._fails
        self._due = self.clock.ticks_add(now_ms, wait if wait < _MAX_WAIT else _MAX_WAIT)
        return False

    def release(self, seq):
        """Message `seq` got no answer because the link went down: offered again, not counted."""
        self._oldest(seq)
        self._busy = False

    def transaction_id(self, tx):
        """The transactionId recorded for local transaction `tx` (-1: none will come), or None."""
        return self._tx.get(tx)

    def pending(self):
        """Messages still to deliver (an upper bound: a put() that raised may leave a gap)."""
        return self.next_seq - self.head

    def compact(self):
        """Remove the segments whose every message is confirmed on flash; returns how many."""
        hk = self._saved // self.seg
        n = 0
        while self._low_k < hk:
            try:
                self.fs.remove(self._seg_path(self._low_k))
                n += 1
            except OSError:
                pass  # not there (a gap) or already removed
            self._low_k += 1
        return n

    # -- inside ---------------------------------------------------------------------------------

    def _oldest(self, seq):
        rec = self._load()
        if rec is None or rec[0] != seq:
            raise ValueError("outbox: message %r is not the oldest unconfirmed one (%r)"
                             % (seq, rec and rec[0]))
        return rec

    def _advance(self, seq, upd, dropped):
        m = {}
        for k in self._tx:
            m[k] = self._tx[k]
        if upd is not None:
            if upd[1] is None:
                m.pop(upd[0], None)
            else:
                m[upd[0]] = upd[1]
                while len(m) > self.max_tx:
                    m.pop(min(m))
        self._busy = False
        self.head = seq + 1
        self.dropped += dropped
        self._tx = m
        self._cur = None
        self._fails = 0
        self._due = None
        self._rk, self._roff = self._nk, self._noff
        # The one durable step: head, mapping and count change together, or not at all.
        self._dirty = True
        if self.flush() and self.auto_compact:
            self.compact()

    def flush(self):
        """Write state.json if RAM is ahead of it (a write the flash refused); True when it is
        on flash. Raises no OSError: `error` keeps it. While RAM is ahead nothing is handed out,
        so a power cut can bring back at most the one message whose confirmation waits."""
        if not self._dirty:
            return True
        x = []
        m = self._tx
        for k in m:
            x.append([k, m[k]])
        try:
            store.write_json(self._state, {"h": self.head, "d": self.dropped, "x": x, "s": self.seg}, self.fs)
        except OSError as e:
            self.error = e
            return False
        self._dirty = False
        self._saved = self.head
        self.error = None
        return True

    def waiting(self):
        """True while a confirmation is kept in RAM only (the flash refused it)."""
        return self._dirty

    def _load(self):
        """The oldest record with seq >= head (cached), reading forward from the last position."""
        if self._cur is not None:
            return self._cur
        k, off = self._rk, self._roff
        while k <= self._last_k:
            try:
                f = self.fs.open(self._seg_path(k), "rb")
            except OSError:
                f = None  # removed, or never written (a gap)
            if f is not None:
                try:
                    if off:
                        f.seek(off)
                    while True:
                        rec, n = _next(f, off, self._enc)
                        if n < 0:
                            break
                        if rec is not None and rec[0] >= self.head:
                            if rec[2] is not None and rec[1] != START:
                                rec[3]["transactionId"] = self._tx.get(rec[2], -1)
                            self._rk, self._roff = k, off
                            self._nk, self._noff = k, off + n
                            self._cur = rec
                            return rec
                        off += n
                finally:
                    f.close()
            if k >= self._last_k:
                break
            k += 1
            off = 0
        self._rk, self._roff = k, off
        return None
