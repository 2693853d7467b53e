"""The session keeper: every charging session, durable on flash, in a bounded space.

Files (PATH is the journal's path, journal.Journal; framed JSON lines, see firmware/journal.py):

  PATH, PATH.1   the closed sessions, one self-contained closing record each, in two generations:
                 {"n": N, "tag": ID_TAG, "e0": METER_WH, "e": METER_WH, "wh": SESSION_WH,
                  "t0": EPOCH, "t": EPOCH, "reason": R[, "cost": MINOR_UNITS][, "g": GROUP,
                  "tf": TARIFF][, "incomplete": true]}
                 When PATH holds `keep` records, it is renamed over PATH.1 (one atomic rename)
                 before the next append: between `keep` and 2 x `keep` closed sessions are kept.
  PATH.open      the open session, replaced atomically (store.write_json) at its start and at
                 each progress step, removed once its closing record is on flash:
                 {"n", "tag", "e0", "t", "g", "tf", "e": METER_WH now, "ta": EPOCH now,
                  "x": BILL, "te": EPOCH of BILL}

METER_WH is the station's lifetime energy register (firmware/metering.py); "e0" is the first
reading of the session (the meter may have been silent when it began). EPOCH is the wall-clock
time in seconds since 1970 when the station knows it (the OCPP link sets it); the OCPP link
rebuilds a lost StartTransaction/StopTransaction from these records. GROUP, TARIFF, BILL and the
cost come from firmware/billing.py when the station prices sessions: BILL is the exact amount at
"te", so a power cut loses no money either. "incomplete" marks a session during which the meter
failed and charging was allowed to go on (meter_required off): its energy is a lower bound.
Strings (idTag, group, tariff, reason) are kept to STR_MAX characters (OCPP's CiString20).

Progress: PATH.open is replaced every `progress_wh` of energy and, while the station knows the
time, at least every PROGRESS_S seconds, so that after a power cut `recover()` tells the energy
and the time ("ta") the session was last known alive.

Why nothing acknowledged is lost and no two sessions are ever open (each step is one durable
write; a call returns once its write is on flash):
  - start: PATH.open of session N = 1 + the newest N on flash;
  - progress: PATH.open replaced (old or new after a cut: both are the open session);
  - stop: the closing record appended (after the rotation, if one is due: a rename that keeps
    every record), then PATH.open removed. After a cut in between, PATH.open's N has its closing
    record: at boot a session is open only when PATH.open's N is above every closed N.
  A line torn by a cut is skipped by readers and never rewritten (journal.Appender).

A write the flash refuses (full, failing) raises nothing: the record stays in RAM (`waiting()`,
`error`) and `flush()`, called by the station every slow round, writes it, oldest first.

Flash bounds (figures for keep = 50; a closing record is 130-180 bytes, PATH.open 140-160, at
most MAX_RECORD each with every string at STR_MAX characters of escaped Unicode):
  - used: at most 2 x keep closing records + PATH.open and its temporary copy: about 18 KB,
    2 x 50 x 768 + 2 x 768 = 78,336 bytes at most (BOUND), whatever the length and the number
    of sessions;
  - written per session: the start (~150 bytes), a progress step (~155 bytes) every 100 Wh or
    60 s, whichever comes first (17 KB per hour at 11 kW, 9 KB per hour at 3.7 kW or paused),
    the closing record (~150 bytes) and every `keep` sessions one rename; past sessions are
    never rewritten, so it does not grow with their number (tests_host/test_store.py: 200
    sessions of 30 kWh, each writes the same 47 KB, the journal never takes more than 20 KB).
"""
from firmware import store

PROGRESS_S = 60  # a progress record at least this often (s) while the time is known
STR_MAX = 20  # characters kept of an idTag, group, tariff name or stop reason
MAX_RECORD = 768  # the most bytes one closing record (framed) or PATH.open can take
BOUND = 2 * 50 * MAX_RECORD + 2 * MAX_RECORD  # bytes of flash the sessions take at most (keep = 50)
_SESSION_KEYS = ("n", "tag", "e0", "e", "t", "ta", "g", "tf", "x", "te")


def _clip(v):
    if type(v) is str and len(v) > STR_MAX:
        return v[:STR_MAX]
    return v


class SessionKeeper:
    def __init__(self, journal, progress_wh=100, keep=50, legacy=None):
        self.journal = journal
        self.fs = journal.fs
        self.open_path = journal.path + ".open"
        self.legacy = legacy  # path of a journal in the format before this one, carried over once
        self.progress_wh = progress_wh
        self.keep = keep  # closing records per generation
        self.current = None  # dict of the open session, or None
        self.error = None  # OSError of a write still to be made (the record is in RAM)
        self._last_n = 0
        self._started = 0  # newest session whose start is on flash
        self._closed = 0  # newest session whose closing record is on flash
        self._written_e = None
        self._written_t = None
        self._dirty = False  # the open session is ahead of PATH.open
        self._stops = []  # closing records still to be appended, oldest first
        self._drop = False  # PATH.open belongs to a closed session: to be removed

    def recover(self):
        """Read the flash; return the open session left by a power cut, if any, with "ta": the
        time it was last known alive (its newest record's time, else its start time)."""
        n = 0
        for rec in self.journal.records():
            m = rec.get("n")
            if type(m) is int and m > n:
                n = m
        self._closed = self._started = self._last_n = n
        self.current = None
        try:
            doc = store.read_json(self.open_path, self.fs)
        except ValueError:
            doc = None  # (an atomic replace: can only be flash rot)
        if type(doc) is dict and type(doc.get("n")) is int and doc["n"] > n:
            s = {}
            for k in _SESSION_KEYS:
                s[k] = doc.get(k)
            if s["ta"] is None:
                s["ta"] = s["t"]
            self.current = s
            self._started = self._last_n = s["n"]
            self._written_e, self._written_t = s["e"], s["ta"]
        elif doc is not None:
            self._drop = True  # its closing record is on flash
        if self.legacy is not None and self.fs.exists(self.legacy):
            self._migrate()
        self.flush()
        return self.current

    def start(self, id_tag, meter_wh, t=None, extra=None):
        """Open a session; `t`: wall-clock time (epoch s) when the station knows it; `extra`:
        more fields for the record and the session (group, tariff)."""
        self._last_n += 1
        s = {"n": self._last_n, "tag": _clip(id_tag), "e0": meter_wh, "e": meter_wh, "t": t, "ta": t,
             "g": None, "tf": None, "x": None, "te": None}
        if extra:
            for k in extra:
                s[k] = _clip(extra[k])
        self.current = s
        self._written_e, self._written_t = meter_wh, t
        self._dirty = True
        self.flush()
        return s

    def retime(self, t):
        """The open session began at `t` (epoch s): learnt after its start, when the back end
        told the time later in the same boot."""
        s = self.current
        if s is None:
            return
        s["t"] = t
        if s["ta"] is None or s["ta"] < t:
            s["ta"] = t
        self._written_t = t
        self._dirty = True
        if self.error is None:
            self.flush()

    def energy(self, meter_wh):
        """Session energy in Wh for the open session at this meter reading (0 without a meter)."""
        s = self.current
        if s is None or s["e0"] is None or meter_wh is None:
            return 0
        return max(0, meter_wh - s["e0"])

    def progress(self, meter_wh, extra=None, t=None):
        """The meter moved on (`meter_wh`, None without a reading) at wall-clock time `t` (None
        when unknown): PATH.open is replaced every progress_wh and every PROGRESS_S, with the
        fields extra() gives then."""
        s = self.current
        if s is None:
            return
        due = False
        if meter_wh is not None:
            s["e"] = meter_wh
            if s["e0"] is None:
                s["e0"] = meter_wh  # the meter was not answering yet when the session began
            due = self._written_e is None or meter_wh - self._written_e >= self.progress_wh
        if t is not None and (self._written_t is None or abs(t - self._written_t) >= PROGRESS_S):
            due = True
        if not due:
            return
        if extra is not None:
            f = extra()
            if "x" in f:
                s["x"], s["te"] = f["x"], f.get("t")
            if t is None:
                t = f.get("t")
        if t is not None:
            s["ta"] = t
            self._written_t = t
        self._written_e = s["e"]
        self._dirty = True
        if self.error is None:  # (else the station's next flush() writes it)
            self.flush()

    def stop(self, reason, meter_wh, incomplete=False, t=None, extra=None):
        """Close the open session; returns (session, energy Wh) or None. The session is closed
        whether or not its record could be written yet (then it waits in RAM, see flush())."""
        s = self.current
        if s is None:
            return None
        if meter_wh is None:
            meter_wh = s["e"]
        s["e"] = meter_wh
        if s["e0"] is None:
            s["e0"] = meter_wh  # the meter answered only at the end: nothing measured
        wh = self.energy(meter_wh)
        rec = {"n": s["n"], "tag": s["tag"], "e0": s["e0"], "e": meter_wh, "wh": wh, "t0": s["t"], "t": t,
               "reason": _clip(reason), "g": s["g"], "tf": s["tf"]}
        if incomplete:
            rec["incomplete"] = True
        if extra:
            for k in extra:
                rec[k] = extra[k]
        for k in ("e0", "e", "t0", "t", "g", "tf", "cost"):
            if k in rec and rec[k] is None:
                del rec[k]
        self.current = None
        self._dirty = False
        self._written_e = self._written_t = None
        self._stops.append(rec)
        self.flush()
        return s, wh

    def flush(self):
        """Write what is only in RAM, oldest first: closing records, the open session, then the
        removal of a closed session's PATH.open. True when nothing waits. An OSError is kept in
        `error`, never raised: the station calls this every slow round while waiting()."""
        j = self.journal
        try:
            while self._stops:
                rec = self._stops[0]
                if j.size() >= self.keep:
                    j.rotate()
                j.append(rec)
                self._stops.pop(0)
                if rec["n"] > self._closed:
                    self._closed = rec["n"]
                if rec["n"] > self._started:
                    self._started = rec["n"]
                self._drop = True
            s = self.current
            if s is not None and self._dirty:
                store.write_json(self.open_path, s, self.fs)
                self._dirty = self._drop = False
                if s["n"] > self._started:
                    self._started = s["n"]
        except OSError as e:
            self.error = e
            return False
        self.error = None
        if self._drop and self.current is None:
            self._drop = False
            try:
                self.fs.remove(self.open_path)
            except OSError:
                pass  # harmless: at boot its session has its closing record, so it is not open
        return True

    def waiting(self):
        """True while a record is in RAM only (the flash refused it)."""
        return self._dirty or len(self._stops) > 0

    def skip_to(self, n):
        """Number the next session after `n` (the OCPP link has seen sessions up to `n` that the
        flash lost): a number is never given twice."""
        if n > self._last_n:
            self._last_n = n

    def last_n(self):
        """Number of the newest session (0: none yet)."""
        return self._last_n

    def started_n(self):
        """Number of the newest session whose start is on flash."""
        return self._started

    def closed_n(self):
        """Number of the newest session whose closing record is on flash."""
        return self._closed

    def find(self, n):
        """Session `n`: {"tag", "e0", "t"} and, once closed, "stop": True, "e", "reason", "ts";
        None when the keeper does not have it (any more)."""
        s = self.current
        if s is not None and s["n"] == n:
            return {"tag": s["tag"], "e0": s["e0"], "t": s["t"]}
        out = None
        for rec in self._closing():
            if rec.get("n") == n:
                out = rec
        if out is None:
            return None
        return {"tag": out.get("tag"), "e0": out.get("e0"), "t": out.get("t0"), "stop": True, "e": out.get("e"),
                "reason": out.get("reason"), "ts": out.get("t")}

    def files(self, root=""):
        """Names of the keeper's files (relative to `root`): for a diagnostics upload."""
        n = len(root.rstrip("/")) + 1 if root else 0
        return (self.journal.older[n:], self.journal.path[n:], self.open_path[n:])

    def _closing(self):
        """Every closing record, oldest first: on flash, then those still waiting in RAM."""
        for rec in self.journal.records():
            yield rec
        for rec in self._stops:
            yield rec

    # ---- the journal of firmware before 0.5 ----

    def _migrate(self):
        """Carry a journal in the old format over (one file of start, progress and stop records,
        "CCCCCCCC JSON" lines): every session newer than those on flash becomes a closing record,
        an open one the open session; then the old file is removed. Cut by a power cut or a full
        flash, it goes on at the next boot from where it stopped (sessions already carried over
        are not carried again)."""
        top = self._last_n
        o = None
        for rec in _legacy_records(self.legacy, self.fs):
            n = rec.get("n")
            if type(n) is not int or n <= top:
                continue
            k = rec.get("k")
            if k == "start":
                o = {"n": n, "tag": rec.get("tag"), "e0": rec.get("e0"), "e": rec.get("e0"), "t": rec.get("t"),
                     "ta": rec.get("t"), "g": rec.get("g"), "tf": rec.get("tf"), "x": None, "te": None}
            elif o is not None and n == o["n"] and k == "e":
                o["e"] = rec.get("e")
                if o["e0"] is None:
                    o["e0"] = o["e"]
                if rec.get("t") is not None:
                    o["ta"] = rec["t"]
                if "x" in rec:
                    o["x"], o["te"] = rec["x"], rec.get("t")
            elif o is not None and n == o["n"] and k == "stop":
                self.current, self._last_n = o, n
                self.stop(rec.get("reason"), rec.get("e"), rec.get("incomplete", False), rec.get("t"),
                          {"cost": rec.get("cost")})
                o = None
                if self.waiting():
                    return  # the flash is full: the rest at the next boot
        if o is not None:
            self.current, self._last_n = o, o["n"]
            self._started = o["n"]
            self._written_e, self._written_t = o["e"], o["ta"]
            self._dirty = True
            if not self.flush():
                return
        try:
            self.fs.remove(self.legacy)
        except OSError:
            pass


def _legacy_records(path, fs):
    import json

    from firmware.encoder import crc32

    f = fs.open(path, "r")
    try:
        while True:
            line = f.readline()
            if not line:
                return
            if len(line) < 11 or line[8] != " " or line[-1] != "\n":
                continue
            body = line[9:-1]
            try:
                if int(line[:8], 16) != crc32(body.encode()) & 0xFFFFFFFF:
                    continue
                rec = json.loads(body)
            except ValueError:
                continue
            if type(rec) is dict:
                yield rec
    finally:
        f.close()
