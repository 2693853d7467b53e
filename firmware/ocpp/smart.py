"""OCPP 1.6 Smart Charging (spec 3.13, 5.5, 5.7, 5.16, 7.8-7.14, errata 3.25-3.30, 3.34, 3.37,
3.42-3.45, 3.57) for a charge point with one connector (1; 0 = the whole charge point).

    p = Profiles("/smart.json")                    # installed profiles, kept across reboots
    p.set(connector_id, csChargingProfiles, tx_id, now) -> "Accepted" | "Rejected" (p.reason)
    p.clear(id, connector_id, purpose, stack_level)     -> "Accepted" | "Unknown"
    p.tx_ended()                                   # the transaction ended: its TxProfiles go
    p.resume(tx_id)                                # at boot: keep only TxProfiles of tx_id
    p.limit(now, tx_start) -> (deci_amps or None, seconds until it changes or None)
    p.composite(connector_id, duration, unit, now, tx_start, phases, own_da=...) -> chargingSchedule or None

`Smart` is the charge point's smart-charging service (chargepoint.py): the back end's
SetChargingProfile, ClearChargingProfile and GetCompositeSchedule, and the limit in force claimed
on the charger (limits.py, claim CLAIM) every service round.

Times are integer epoch seconds (firmware.ocpp.dt). A transaction is "running" for limit() and
composite() when tx_start (its start, epoch seconds) is given: only then do TxProfiles apply and
only then is a Relative profile in force (measured from tx_start).

Decisions where the spec leaves room:
- An Absolute profile without startSchedule starts when it is received (`now` given to set();
  7.8: validFrom "if absent, valid as soon as it is received"; Absolute periods are relative to
  "a fixed point in time"). Without `now` it is rejected. A Relative profile's startSchedule is
  ignored. A Recurring profile needs startSchedule and recurrencyKind; it is not in force before
  its first startSchedule; a duration or periods beyond the recurrence period are not executed
  (errata 3.43/3.44), a shorter duration falls back to lower stack levels (errata 3.43).
- At each instant, per purpose the profile in force with the highest stackLevel wins (a profile
  whose validity, start or duration does not cover the instant is not in force); a TxDefault-
  Profile on connector 1 wins over one on connector 0 at the same stackLevel (3.13.1: it
  replaces the connector-0 profile "only for that specific connector"); a TxProfile in force
  overrules TxDefaultProfiles; the result is the minimum of that and ChargePointMaxProfile.
- W -> A: A = W / (volts * numberPhases), numberPhases of the period or, when absent, `phases`
  (3 by default as 7.12 says; errata 3.34: the limit is never rescaled to the phases in use).
  Results are floored to 0.1 A; below 6 A the charger pauses (IEC 61851), that is its business.
- GetCompositeSchedule: connector 0 and 1 give the same schedule (one connector); the returned
  chargingSchedule carries startSchedule = iso(now), which the caller also uses as the .conf's
  scheduleStart (errata 3.57 says to omit it inside chargingSchedule: pop it there). Where no profile applies the period carries `max_amps` (the station's own
  limit, also applied everywhere as a local limit, 5.7) or, without it, 80 A (the IEC 61851
  maximum). At most 48 periods are reported; duration is cut where they run out.
- Stored in one JSON document (store.write_json, atomic): a corrupt or malformed file counts as
  empty (`corrupt` is set) and is replaced at the next change. A change that cannot be saved is
  Rejected; a clear that cannot be saved still applies in RAM (the safer way).
"""
from firmware import store
from firmware import Many, drive, finish
from firmware.ocpp import dt

CPMAX = "ChargePointMaxProfile"
TXDEF = "TxDefaultProfile"
TX = "TxProfile"
_PURPOSES = (CPMAX, TXDEF, TX)
_KINDS = ("Absolute", "Recurring", "Relative")
NO_LIMIT_A = 80
_MAX_OUT = 48      # periods in a composite schedule
_LOOKAHEAD = 32    # boundaries limit() looks past for the next real change (then: look again)
_MAX_STEPS = 200   # instants one composite() examines
_STEPS_AT_ONCE = 4  # instants between two yields of composite_steps() (1.7 ms each, 8 profiles)
FILE_MAX = 8192    # bytes of the stored profiles: 8 profiles of 24 periods (the defaults) take 4.8 KB

# A stored profile is a list (compact in RAM and on flash):
_ID, _CONN, _PURP, _LEVEL, _KIND, _REC, _FROM, _TO, _START, _DUR, _UNIT, _PER, _TX = range(13)
# _REC: recurrence period in s (0: none); _FROM/_TO/_START: epoch or None; _DUR: s or None;
# _PER: [[startPeriod, limit in tenths of the unit, numberPhases or 0], ...]; _TX: tx id (TxProfile)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _int(d, name, lo):
    v = d.get(name)
    if not _is_int(v) or v < lo:
        raise ValueError("%s must be an integer >= %d, not %r" % (name, lo, v))
    return v


def _time(d, name):
    v = d.get(name)
    if v is None:
        return None
    try:
        return dt.parse(v)
    except ValueError:
        raise ValueError("%s is not a date-time: %r" % (name, v))


def _periods(s, max_periods):
    per = s.get("chargingSchedulePeriod")
    if not isinstance(per, list) or not per:
        raise ValueError("chargingSchedulePeriod must be a non-empty list")
    if len(per) > max_periods:
        raise ValueError("%d periods, more than ChargingScheduleMaxPeriods %d" % (len(per), max_periods))
    out = []
    last = -1
    for q in per:
        if not isinstance(q, dict):
            raise ValueError("a chargingSchedulePeriod is not an object")
        sp = _int(q, "startPeriod", 0)
        if last < 0 and sp != 0:
            raise ValueError("the first startPeriod must be 0, not %d" % sp)
        if sp <= last:
            raise ValueError("startPeriod %d does not follow %d" % (sp, last))
        last = sp
        lim = q.get("limit")
        if not isinstance(lim, (int, float)) or isinstance(lim, bool) or not 0 <= lim <= 1e7:
            raise ValueError("limit must be a number from 0 to 1e7, not %r" % (lim,))
        nph = q.get("numberPhases")
        if nph is not None and (not _is_int(nph) or not 1 <= nph <= 3):
            raise ValueError("numberPhases must be 1, 2 or 3, not %r" % (nph,))
        out.append([sp, lim * 10 if _is_int(lim) else int(lim * 10 + 0.001), nph or 0])
    return out


def _opt_int(v):
    return v is None or _is_int(v)


def _sound(r):
    """A stored record has the shape this module writes (a damaged file is not believed)."""
    if not (isinstance(r, list) and len(r) == 13 and _is_int(r[_ID]) and r[_CONN] in (0, 1)
            and r[_PURP] in _PURPOSES and _is_int(r[_LEVEL]) and r[_KIND] in _KINDS
            and r[_REC] in (0, 86400, 604800) and _opt_int(r[_FROM]) and _opt_int(r[_TO])
            and _opt_int(r[_START]) and _opt_int(r[_DUR]) and r[_UNIT] in ("A", "W")
            and isinstance(r[_PER], list) and r[_PER]):
        return False
    if r[_START] is None and r[_KIND] != "Relative" or r[_REC] and r[_KIND] != "Recurring":
        return False
    for q in r[_PER]:
        if not (isinstance(q, list) and len(q) == 3 and _is_int(q[0]) and _is_int(q[1])
                and _is_int(q[2])):
            return False
    return r[_PER][0][0] == 0


def _eval(r, t, tx_start):
    """(period in force or None, next epoch > t at which that may change or None) of profile r."""
    vto = r[_TO]
    if vto is not None and t >= vto:
        return None, None
    if r[_FROM] is not None and t < r[_FROM]:
        return None, r[_FROM]
    kind = r[_KIND]
    dur = r[_DUR]
    if kind == "Relative":
        if tx_start is None:
            return None, None
        start = tx_start
    else:
        start = r[_START]
        rec = r[_REC]
        if rec and t >= start:
            start += (t - start) // rec * rec
            if dur is None or dur > rec:
                dur = rec
    per = None
    nxt = None
    if t < start:
        nxt = start
    elif dur is not None and t - start >= dur:
        if r[_REC]:
            nxt = start + r[_REC]
    else:
        off = t - start
        for q in r[_PER]:
            if q[0] > off:
                nxt = start + q[0]
                break
            per = q
        if dur is not None and (nxt is None or start + dur < nxt):
            nxt = start + dur
    if vto is not None and (nxt is None or vto < nxt):
        nxt = vto
    return per, nxt


def _conv(r, per, unit, phases, volts):
    """The limit of period `per` of profile r in tenths of `unit` (floored)."""
    v = per[1]
    if r[_UNIT] == unit:
        return v
    n = per[2] or phases
    if unit == "A":
        return v // (volts * n)
    return v * volts * n


def _dec(v):
    return v // 10 if v % 10 == 0 else v / 10


class Profiles:
    def __init__(self, path, fs=None, max_stack_level=8, max_periods=24, max_installed=8,
                 units=("A", "W")):
        self.path = path
        self.fs = fs
        self.max_stack_level = max_stack_level
        self.max_periods = max_periods
        self.max_installed = max_installed
        self.units = units
        self.reason = None
        self.corrupt = False
        self.number_phases = 0  # numberPhases of the period that sets limit()'s result (0: none)
        self._p = self._load()

    def _load(self):
        try:
            doc = store.read_json(self.path, self.fs, FILE_MAX)
        except (ValueError, OSError):
            doc = 0
        if doc is None:
            return []
        recs = doc.get("p") if isinstance(doc, dict) and doc.get("v") == 1 else None
        if isinstance(recs, list):
            for r in recs:
                if not _sound(r):
                    break
            else:
                return recs
        self.corrupt = True
        return []

    def _save(self, recs):
        try:
            store.write_json(self.path, {"v": 1, "p": Many(recs)}, self.fs)  # 8 x 24 periods: 4.8 KB
            return True
        except OSError as e:
            self.reason = "cannot save the profiles: %s" % e
            return False

    def installed(self):
        """(chargingProfileId, connectorId, purpose, stackLevel) of every installed profile."""
        return [(r[_ID], r[_CONN], r[_PURP], r[_LEVEL]) for r in self._p]

    # ---- SetChargingProfile

    def set(self, connector_id, profile, tx_id=None, now=None):
        """SetChargingProfile.req: tx_id = the running transaction's id (None: none runs); now =
        epoch when received (start of an Absolute profile without startSchedule)."""
        try:
            r = self._record(connector_id, profile, tx_id, now)
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            self.reason = str(e)
            return "Rejected"
        keep = []
        for q in self._p:
            if q[_ID] == r[_ID] or (q[_LEVEL] == r[_LEVEL] and q[_PURP] == r[_PURP]
                                    and q[_CONN] == r[_CONN]):
                continue  # replaced
            if now is not None and q[_TO] is not None and q[_TO] <= now:
                continue  # expired: make room
            keep.append(q)
        if len(keep) >= self.max_installed:
            self.reason = "%d profiles installed, MaxChargingProfilesInstalled is %d" % (
                len(keep), self.max_installed)
            return "Rejected"
        keep.append(r)
        if not self._save(keep):
            return "Rejected"
        self._p = keep
        self.reason = None
        return "Accepted"

    def _record(self, cid, p, tx_id, now):
        if not isinstance(p, dict):
            raise ValueError("csChargingProfiles is not an object")
        pid = p.get("chargingProfileId")
        if not _is_int(pid):
            raise ValueError("chargingProfileId must be an integer, not %r" % (pid,))
        level = _int(p, "stackLevel", 0)
        if level > self.max_stack_level:
            raise ValueError("stackLevel %d above ChargeProfileMaxStackLevel %d"
                             % (level, self.max_stack_level))
        purp = p.get("chargingProfilePurpose")
        if purp not in _PURPOSES:
            raise ValueError("unknown chargingProfilePurpose %r" % (purp,))
        if not _is_int(cid) or not 0 <= cid <= 1:
            raise ValueError("no connector %r" % (cid,))
        if purp == CPMAX and cid != 0:
            raise ValueError("a ChargePointMaxProfile goes on connector 0 only")
        if purp == TX:
            if cid != 1:
                raise ValueError("a TxProfile goes on connector 1 only")
            if tx_id is None:
                raise ValueError("a TxProfile needs a running transaction")
            t = p.get("transactionId")
            if t is not None and t != tx_id:
                raise ValueError("transactionId %r is not the running transaction %r" % (t, tx_id))
        kind = p.get("chargingProfileKind")
        if kind not in _KINDS:
            raise ValueError("unknown chargingProfileKind %r" % (kind,))
        s = p.get("chargingSchedule")
        if not isinstance(s, dict):
            raise ValueError("chargingSchedule is not an object")
        unit = s.get("chargingRateUnit")
        if unit not in self.units:
            raise ValueError("chargingRateUnit %r not supported (%s)" % (unit, ",".join(self.units)))
        periods = _periods(s, self.max_periods)
        dur = s.get("duration")
        if dur is not None:
            dur = _int(s, "duration", 0)
        start = None
        rec = 0
        if kind != "Relative":
            start = _time(s, "startSchedule")
            if kind == "Recurring":
                rk = p.get("recurrencyKind")
                rec = 86400 if rk == "Daily" else 604800 if rk == "Weekly" else 0
                if not rec:
                    raise ValueError("a Recurring profile needs recurrencyKind Daily or Weekly")
                if start is None:
                    raise ValueError("a Recurring profile needs a startSchedule")
            elif start is None:
                if now is None:
                    raise ValueError("an Absolute profile needs a startSchedule")
                start = int(now)
        vf = _time(p, "validFrom")
        vt = _time(p, "validTo")
        if vf is not None and vt is not None and vt <= vf:
            raise ValueError("validTo is not after validFrom")
        return [pid, cid, purp, level, kind, rec, vf, vt, start, dur, unit, periods,
                tx_id if purp == TX else None]

    # ---- ClearChargingProfile, end of transaction

    def clear(self, id=None, connector_id=None, purpose=None, stack_level=None):
        """ClearChargingProfile.req (errata 3.25/3.26): by id alone when given, else every profile
        matching all given fields (none given: all)."""
        keep = []
        for r in self._p:
            if id is not None:
                hit = r[_ID] == id
            else:
                hit = ((connector_id is None or r[_CONN] == connector_id)
                       and (purpose is None or r[_PURP] == purpose)
                       and (stack_level is None or r[_LEVEL] == stack_level))
            if not hit:
                keep.append(r)
        return "Accepted" if self._drop(keep) else "Unknown"

    def tx_ended(self):
        """The transaction ended: its TxProfiles cease to be valid (7.10)."""
        return self._drop([r for r in self._p if r[_PURP] != TX])

    def resume(self, tx_id):
        """At boot: keep the TxProfiles of transaction tx_id (it goes on), drop any other."""
        return self._drop([r for r in self._p if r[_PURP] != TX or (tx_id is not None
                                                                     and r[_TX] == tx_id)])

    def _drop(self, keep):
        n = len(self._p) - len(keep)
        if n:
            self._p = keep
            self._save(keep)
        return n

    # ---- evaluation

    def _at(self, t, tx_start, unit, phases, volts):
        """(limit at epoch t in tenths of unit or None, next epoch it may change or None,
        numberPhases of the period that sets the limit or 0)."""
        best = [None, None, None]  # per purpose: [profile, period]
        nxt = None
        for r in self._p:
            k = _PURPOSES.index(r[_PURP])
            if k == 2 and tx_start is None:
                continue
            per, n = _eval(r, t, tx_start)
            if n is not None and (nxt is None or n < nxt):
                nxt = n
            if per is None:
                continue
            b = best[k]
            if b is None or r[_LEVEL] > b[0][_LEVEL] or (r[_LEVEL] == b[0][_LEVEL]
                                                         and r[_CONN] > b[0][_CONN]):
                best[k] = [r, per]
        v = None
        nph = 0
        for b in (best[0], best[2] or best[1]):
            if b is not None:
                x = _conv(b[0], b[1], unit, phases, volts)
                if v is None or x < v:
                    v = x
                    nph = b[1][2]
        return v, nxt, nph

    def limit(self, now, tx_start=None, phases=3, volts=230):
        """(limit on connector 1 at epoch `now` in deci-amps or None = no limit, seconds until it
        changes or None = never; after many unchanged steps, a time to look again)."""
        v, nxt, self.number_phases = self._at(now, tx_start, "A", phases, volts)
        i = 0
        while nxt is not None and i < _LOOKAHEAD:
            v2, n2, _ = self._at(nxt, tx_start, "A", phases, volts)
            if v2 != v:
                break
            nxt = n2
            i += 1
        return v, (None if nxt is None else nxt - now)

    def composite(self, *args, **kw):
        """composite_steps() run to its end at once."""
        return drive(self.composite_steps(*args, **kw))

    def composite_steps(self, connector_id, duration, unit, now, tx_start=None, phases=3, volts=230,
                        own_da=None):
        """chargingSchedule of GetCompositeSchedule.conf over [now, now + duration), or None when
        the connector is unknown (answer Rejected). `own_da`: what the charger itself allows
        (hardware, cable, settings ... in deci-amps; None: NO_LIMIT_A), the limit wherever no
        profile sets a lower one, also when none is installed. A period keeps the numberPhases of
        the profile period that sets its limit. A generator that yields every _STEPS_AT_ONCE
        instants (8 profiles of 24 periods take some 47 ms of ESP32 time at 240 MHz in all) and
        returns the schedule."""
        if connector_id not in (0, 1) or duration <= 0:
            return None
        unit = unit or "A"
        own = (NO_LIMIT_A * 10) if own_da is None else own_da
        cap = own if unit == "A" else own * volts * phases
        end = now + duration
        out = Many()  # 48 periods are 2.2 KB of JSON
        last = None
        t = now
        i = 0
        while t < end:
            if i == _MAX_STEPS:
                end = t
                break
            i += 1
            if i % _STEPS_AT_ONCE == 0:
                yield
            v, nxt, nph = self._at(t, tx_start, unit, phases, volts) if self._p else (None, None, 0)
            if v is None or cap < v:
                v, nph = cap, 0
            if (v, nph) != last:
                if len(out) == _MAX_OUT:
                    end = t
                    break
                per = {"startPeriod": t - now, "limit": _dec(v)}
                if nph:
                    per["numberPhases"] = nph
                out.append(per)
                last = (v, nph)
            if nxt is None:
                break
            t = nxt
        return {"startSchedule": dt.iso(now), "duration": end - now, "chargingRateUnit": unit,
                "chargingSchedulePeriod": out}


CLAIM = "ocpp"  # the current-limit claim of charging profiles


class Smart:
    def __init__(self, cp, path):
        self.cp = cp
        cfg = cp.config
        self.profiles = Profiles(path, cp.fs, max_stack_level=cfg.get("ChargeProfileMaxStackLevel"),
                                 max_periods=cfg.get("ChargingScheduleMaxPeriods"),
                                 max_installed=cfg.get("MaxChargingProfilesInstalled"))
        self._claimed = None  # the claim on the limits (deci-amps) or None
        self._phases = None  # the claim on the phases (1, 3) or None
        self._on_start = None  # a RemoteStart's TxProfile, installed once the transaction has its id

    def tx_ended(self):
        """The transaction ended: its TxProfiles go."""
        self.profiles.tx_ended()

    def install_on_start(self, profile):
        """A RemoteStartTransaction's TxProfile: installed once its transaction has an id."""
        self._on_start = profile

    def service(self, now, epoch):
        cp = self.cp
        tx = cp.tx.current
        if self._on_start is not None and tx is not None:
            tid = cp.tx.transaction_id()
            if tid is not None:
                prof = self._on_start
                self._on_start = None
                prof["transactionId"] = tid
                self.profiles.set(1, prof, tid, epoch)
        # Watts become amps with the period's numberPhases, else the phases the car is supplied
        # with (7.12 says 3, which a single-phase station, or one switched to one phase, is
        # not): the power limit holds across a phase switch.
        c = cp.charger
        da, _next = self.profiles.limit(epoch, tx["t0"] if tx is not None else None, c.supply_phases)
        if da != self._claimed:
            c.limits.claim(CLAIM, da)
            self._claimed = da
        # numberPhases asks a charger that can switch for that many phases (evcc drives chargers
        # this way; ConnectorSwitch3to1PhaseSupported says whether this one can)
        n = self.profiles.number_phases
        want = n if (n == 1 or n == 3) and cp.config.get("ConnectorSwitch3to1PhaseSupported") else None
        if want != self._phases:
            c.claim_phases(CLAIM, want)
            self._phases = want

    async def SetChargingProfile(self, p):
        cp = self.cp
        tid = None
        if cp.tx.current is not None:
            tid = cp.tx.transaction_id()
            # Without a transactionId yet (offline start) a TxProfile naming one can not match.
            if tid is None:
                tid = -1
        # Without any transaction tid stays None, so that a TxProfile is refused (5.16.4: "not
        # possible ... without presence of an active transaction").
        status = self.profiles.set(p["connectorId"], p["csChargingProfiles"], tid, cp.wall.now())
        if status != "Accepted":
            cp.note("SetChargingProfile rejected: %s" % self.profiles.reason)
        return {"status": status}

    async def ClearChargingProfile(self, p):
        return {"status": self.profiles.clear(p.get("id"), p.get("connectorId"), p.get("chargingProfilePurpose"),
                                              p.get("stackLevel"))}

    async def GetCompositeSchedule(self, p):
        cp = self.cp
        cid = p["connectorId"]
        if cid > 1:
            return {"status": "Rejected"}
        tx = cp.tx.current
        own = cp.charger.limits.lowest_but(CLAIM)  # what the charger allows by itself
        sched = await finish(self.profiles.composite_steps(
            cid, p["duration"], p.get("chargingRateUnit"), cp.wall.now(), tx["t0"] if tx is not None else None,
            cp.charger.supply_phases, own_da=own))
        if sched is None:
            return {"status": "Rejected"}
        start = sched.pop("startSchedule")  # errata 3.57: only as scheduleStart
        return {"status": "Accepted", "connectorId": cid, "scheduleStart": start, "chargingSchedule": sched}
