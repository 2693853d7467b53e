"""The session keeper: every charging session, durable in a journal.

Records (one journal line each):
  {"k": "start", "n": N, "tag": ID_TAG, "e0": METER_WH[, "t": EPOCH][, "g": GROUP, "tf": TARIFF]}
                                                          a session began
  {"k": "e", "n": N, "e": METER_WH[, "t": EPOCH, "x": BILL]}  progress (meter register), batched;
                                                          the first one sets the start energy
                                                          when the meter was silent at the start
  {"k": "stop", "n": N, "reason": R, "e": METER_WH, "wh": SESSION_WH[, "incomplete": true][, "t": EPOCH]
   [, "cost": MINOR_UNITS]}

GROUP, TARIFF, BILL and the cost come from firmware/billing.py when the station prices sessions:
BILL is the exact amount so far at EPOCH, so a power cut loses no money either.

EPOCH is the wall-clock time in seconds since 1970 when the station knows it (the OCPP link
sets it); the OCPP link rebuilds a lost StartTransaction/StopTransaction from these records.

METER_WH is the station's lifetime energy register (firmware/metering.py). "incomplete" marks a
session during which the meter failed and charging was allowed to go on (meter_required off):
its energy is a lower bound.

The journal is the truth: after a power cut, `recover()` finds a session that started and never
stopped, and the station closes it with reason PowerLoss and the last energy it knows. Progress
is written every `progress_wh` so a power cut loses at most that much of the *record*; the meter's
own register keeps the energy, and the stop record uses the register read after the reboot when
the meter answers.
"""


class SessionKeeper:
    def __init__(self, journal, progress_wh=100, keep=50):
        self.journal = journal
        self.progress_wh = progress_wh
        self.keep = keep  # closed sessions kept when the journal is compacted
        self.current = None  # dict of the open session, or None
        self._last_n = 0
        self._written_e = None
        self._records = 0

    def recover(self):
        """Scan the journal; return the open session left by a power cut, if any."""
        open_ = None
        n = 0
        count = 0
        for rec in self.journal.records():
            count += 1
            k = rec.get("k")
            if rec.get("n", 0) > n:
                n = rec["n"]
            if k == "start":
                open_ = {"n": rec["n"], "tag": rec.get("tag"), "e0": rec.get("e0"), "e": rec.get("e0"),
                         "t": rec.get("t"), "g": rec.get("g"), "tf": rec.get("tf")}
            elif k == "e" and open_ is not None and rec.get("n") == open_["n"]:
                open_["e"] = rec.get("e")
                if open_["e0"] is None:
                    open_["e0"] = open_["e"]
                if "x" in rec:
                    open_["x"], open_["te"] = rec["x"], rec.get("t")
            elif k == "stop" and open_ is not None and rec.get("n") == open_["n"]:
                open_ = None
        self._last_n = n
        self._records = count
        self.current = open_
        return open_

    def start(self, id_tag, meter_wh, t=None, extra=None):
        """Open a session; `t`: wall-clock time (epoch s) when the station knows it; `extra`:
        more fields for the record and the session (group, tariff)."""
        self._last_n += 1
        self.current = {"n": self._last_n, "tag": id_tag, "e0": meter_wh, "e": meter_wh, "t": t}
        rec = {"k": "start", "n": self._last_n, "tag": id_tag, "e0": meter_wh}
        if t is not None:
            rec["t"] = t
        if extra:
            rec.update(extra)
            self.current.update(extra)
        self._write(rec)
        self._written_e = meter_wh
        return self.current

    def energy(self, meter_wh):
        """Session energy in Wh for the open session at this meter reading (0 without a meter)."""
        s = self.current
        if s is None or s["e0"] is None or meter_wh is None:
            return 0
        return max(0, meter_wh - s["e0"])

    def progress(self, meter_wh, extra=None):
        """The meter moved on; a record every progress_wh, with the fields extra() gives then."""
        s = self.current
        if s is None or meter_wh is None:
            return
        s["e"] = meter_wh
        if s["e0"] is None:
            s["e0"] = meter_wh  # the meter was not answering yet when the session began
        if self._written_e is None or meter_wh - self._written_e >= self.progress_wh:
            rec = {"k": "e", "n": s["n"], "e": meter_wh}
            if extra is not None:
                rec.update(extra())
            self._write(rec)
            self._written_e = meter_wh

    def stop(self, reason, meter_wh, incomplete=False, t=None, extra=None):
        """Close the open session; returns (session record, energy Wh) or None."""
        s = self.current
        if s is None:
            return None
        if meter_wh is None:
            meter_wh = s["e"]
        s["e"] = meter_wh
        wh = self.energy(meter_wh)
        rec = {"k": "stop", "n": s["n"], "reason": reason, "e": meter_wh, "wh": wh}
        if incomplete:
            rec["incomplete"] = True
        if t is not None:
            rec["t"] = t
        if extra:
            rec.update(extra)
        self._write(rec)
        self.current = None
        self._written_e = None
        if self._records > 4 * self.keep:
            self.compact()
        return s, wh

    def compact(self):
        """Keep the last `keep` sessions; the rewrite is atomic (see store.Journal.rewrite)."""
        first = self._last_n - self.keep
        if self.current is not None:
            first -= 1  # the open session is kept besides the `keep` closed ones
        kept = [0]

        def newest():
            for rec in self.journal.records():
                if rec.get("n", 0) > first:
                    kept[0] += 1
                    yield rec

        self.journal.rewrite(newest())
        self._records = kept[0]

    def last_n(self):
        """Number of the newest session in the journal (0: none yet)."""
        return self._last_n

    def find(self, n):
        """Session `n` from the journal: {"tag", "e0", "t"} and, once closed, "stop": True,
        "e", "reason", "ts"; None when the journal does not have it."""
        out = None
        for rec in self.journal.records():
            if rec.get("n") != n:
                continue
            k = rec.get("k")
            if k == "start":
                out = {"tag": rec.get("tag"), "e0": rec.get("e0"), "t": rec.get("t")}
            elif k == "e" and out is not None and out["e0"] is None:
                out["e0"] = rec.get("e")  # the meter was silent when the session began
            elif k == "stop" and out is not None:
                out["stop"] = True
                out["e"] = rec.get("e")
                out["reason"] = rec.get("reason")
                out["ts"] = rec.get("t")
        return out

    def history(self, limit=10):
        """The last `limit` closed sessions, newest last (for the status page and the bench)."""
        out = []
        starts = {}
        for rec in self.journal.records():
            if rec.get("k") == "start":
                starts[rec["n"]] = rec
            elif rec.get("k") == "stop":
                st = starts.pop(rec["n"], {})
                out.append({"n": rec["n"], "tag": st.get("tag"), "reason": rec.get("reason"), "wh": rec.get("wh"),
                            "incomplete": rec.get("incomplete", False), "group": st.get("g"),
                            "tariff": st.get("tf"), "cost": rec.get("cost")})
                if len(out) > limit:
                    out.pop(0)
        return out

    def _write(self, rec):
        self.journal.append(rec)
        self._records += 1
