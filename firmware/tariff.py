"""Tariffs: driver group -> tariff, prices by day and time of day, sharing hours of a private
charger, and the cost of a session (docs/tariffs.md describes the table).

    t = parse(text)                  # ValueError naming the entry, the value and what was expected
    t.may_charge("FLEET-UBER", now)  # (True, "fleet") or (False, "outside sharing hours; next window Mon 09:00")
    t.price("standard", now)         # (per_kwh, per_hour) in price units
    bill = Bill(t, "fleet", now, meter_wh); bill.update(now, meter_wh); bill.cost  # minor units (cents)
    format_cost(bill.cost, t.currency, t.decimals)   # "EUR 12.34"

Money is integer. A price unit is 1/10000 of the currency unit (0.39 -> 3900, rounded half up).
A Bill adds up the exact amount `x` in 1/18000 of a price unit, per_kwh * Wh * 18 + per_hour *
seconds * 5, and `cost` rounds x half up once, to the currency's minor unit.
Times are epoch seconds (UTC); days and hours in the table are local time (the table's POSIX TZ).
"""
import json

from drivers import jsonfile
from firmware.calendar import civil
from firmware.calendar import days as _days

DAY = 86400
PRICE = 10000  # price units per currency unit
X = 18000  # Bill.x units per price unit: lcm(1000 Wh per kWh, 3600 s per hour)
MAX_TEXT = 4096
MAX_TARIFFS = 8
MAX_BANDS = 8
MAX_GROUPS = 16
MAX_WINDOWS = 8
MAX_PRICE = 1000
DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _year(n):
    """The year of day `n` from 1970-01-01."""
    return civil(n)[0]


class Tz:
    """A POSIX TZ string: std offset [dst [offset] [,start[/time],end[/time]]].

    Offsets are [+-]hh[:mm[:ss]] west of Greenwich (CET-1 is UTC+1); dst defaults to std + 1 h;
    start/end are Mm.w.d (week w = 5: the last), Jn (1..365, no Feb 29) or n (0..365), at
    [+-]hh[:mm[:ss]] local time (default 02:00); without rules, the US ones (M3.2.0,M11.1.0).
    """

    def __init__(self, text):
        self.text = text
        self._i = 0
        self._name()
        self.std = -self._time(24)  # seconds east of UTC
        self.dst = None
        if self._i < len(text):
            self._name()
            self.dst = self.std + 3600
            if self._peek() not in ("", ","):
                self.dst = -self._time(24)
            self.rules = ((3, 2, 0, 7200), (11, 1, 0, 7200))
            if self._i < len(text):
                self._eat(",")
                a = self._rule()
                self._eat(",")
                self.rules = (a, self._rule())
        if self._i != len(text):
            raise ValueError("unexpected %r at %d" % (text[self._i], self._i))

    def _peek(self):
        return self.text[self._i] if self._i < len(self.text) else ""

    def _eat(self, c):
        if self._peek() != c:
            raise ValueError("expected %r at %d" % (c, self._i))
        self._i += 1

    def _num(self, lo, hi):
        s, i = self.text, self._i
        j = i
        while j < len(s) and j - i < 3 and "0" <= s[j] <= "9":
            j += 1
        if j == i or not lo <= int(s[i:j]) <= hi:
            raise ValueError("expected a number from %d to %d at %d" % (lo, hi, i))
        self._i = j
        return int(s[i:j])

    def _name(self):
        s, i = self.text, self._i
        if self._peek() == "<":
            j = s.find(">", i)
            self._i = j + 1
            n = j - i - 1
        else:
            j = i
            while j < len(s) and s[j].isalpha():
                j += 1
            self._i = j
            n = j - i
        if n < 3:
            raise ValueError("expected a zone name at %d" % i)

    def _time(self, maxh):
        sign = -1 if self._peek() == "-" else 1
        if self._peek() in ("+", "-"):
            self._i += 1
        v = self._num(0, maxh) * 3600
        for k in (60, 1):
            if self._peek() == ":":
                self._i += 1
                v += self._num(0, 59) * k
        return sign * v

    def _rule(self):
        """(month, week, weekday, time) of Mm.w.d; Jn is (0, n, 0, time), n is (-1, n, 0, time)."""
        c = self._peek()
        if c == "M":
            self._i += 1
            m = self._num(1, 12)
            self._eat(".")
            w = self._num(1, 5)
            self._eat(".")
            r = [m, w, self._num(0, 6), 7200]
        elif c == "J":
            self._i += 1
            r = [0, self._num(1, 365), 0, 7200]
        else:
            r = [-1, self._num(0, 365), 0, 7200]
        if self._peek() == "/":
            self._i += 1
            r[3] = self._time(167)
        return tuple(r)

    def _switches(self, y):
        """(start of DST, end of DST) in year y, epoch seconds."""
        out = []
        for r, off in ((self.rules[0], self.std), (self.rules[1], self.dst)):
            m, w = r[0], r[1]
            if m > 0:
                first = _days(y, m, 1)
                day = first + (r[2] - first - 4) % 7 + 7 * (w - 1)  # 1970-01-01: a Thursday
                while day >= _days(y + m // 12, m % 12 + 1, 1):
                    day -= 7
            elif m == 0:
                day = _days(y, 1, 1) + w - 1 + (1 if w >= 60 and _days(y, 3, 1) - _days(y, 2, 1) == 29 else 0)
            else:
                day = _days(y, 1, 1) + w
            out.append(day * DAY + r[3] - off)
        return out

    def offset(self, t):
        """Seconds to add to UTC epoch t for local time."""
        if self.dst is None:
            return self.std
        a, b = self._switches(_year((t + self.std) // DAY))
        on = a <= t < b if a < b else not b <= t < a
        return self.dst if on else self.std

    def next_change(self, t):
        """The first switch to or from DST after t, or None."""
        if self.dst is None:
            return None
        y = _year((t + self.std) // DAY)
        best = None
        for x in self._switches(y) + self._switches(y + 1):
            if x > t and (best is None or x < best):
                best = x
        return best


def _r(v):
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _bad(path, what, got, why=""):
    raise ValueError("%s: expected %s, got %s%s" % (path, what, _r(got), why))


def _obj(v, path, keys, need=()):
    if not isinstance(v, dict):
        _bad(path or "tariff table", "a JSON object", v)
    for k in v:
        if k not in keys:
            raise ValueError("%s: unknown key %r (expected %s)" % (path or "tariff table", k, ", ".join(keys)))
    for k in need:
        if k not in v:
            raise ValueError("%s%s: missing" % (path and path + ".", k))
    return v


def _list(v, path, most):
    if not isinstance(v, list):
        _bad(path, "a JSON array", v)
    if len(v) > most:
        raise ValueError("%s: %d entries, at most %d allowed" % (path, len(v), most))
    return v


def _name(v, path):
    if type(v) is not str or not 1 <= len(v) <= 20:
        _bad(path, "a name of 1 to 20 characters", v)
    return v


def _known(t, name, path):
    if _name(name, path) not in t.tariffs:
        raise ValueError("%s: unknown tariff %r (tariffs: %s)" % (path, name, ", ".join(sorted(t.tariffs))))
    return name


def _fold(tag):
    """A group as OCPP compares idTags (CiString: ASCII letters ignore case); None for none."""
    return tag.encode().upper().decode() if tag else None


def _price(v, path):
    if type(v) is not int and type(v) is not float:
        _bad(path, "a number", v)
    if not v >= 0:
        _bad(path, "a number >= 0", v)
    if v > MAX_PRICE:
        _bad(path, "a number <= %d" % MAX_PRICE, v)
    return int(v * PRICE + 0.5)


def _hhmm(v, path, end):
    if type(v) is str and len(v) == 5 and v[2] == ":" and v[:2].isdigit() and v[3:].isdigit():
        m = int(v[:2]) * 60 + int(v[3:])
        if int(v[3:]) < 60 and (m < 1440 or end and m == 1440):
            return m
    _bad(path, "HH:MM or 24:00" if end else "HH:MM", v)


def _mask(v, path):
    """A set of weekdays as bits (Mon = 1) from "Mon-Fri", "Sat,Sun", "Mon,Wed-Fri", "Fri-Mon" or "*"."""
    if v == "*":
        return 127
    mask = 0
    for part in v.split(",") if type(v) is str else [""]:
        ends = [s.strip().lower() for s in part.split("-")]
        ds = [i for e in ends for i in range(7) if DAYS[i].lower() == e]
        if len(ends) > 2 or len(ds) != len(ends):
            _bad(path, "days like 'Mon-Fri', 'Sat,Sun', 'Mon,Wed-Fri' or '*'", v)
        a = ds[0]
        while True:
            mask |= 1 << a
            if a == ds[-1]:
                break
            a = (a + 1) % 7
    return mask


def _span(v, path, band):
    keys = ("days", "from", "to", "per_kwh", "per_hour") if band else ("days", "from", "to")
    _obj(v, path, keys, ("days", "from", "to"))
    a = _hhmm(v["from"], path + ".from", False)
    b = _hhmm(v["to"], path + ".to", True)
    if a == b:
        _bad(path + ".to", "a time other than 'from' (00:00 to 24:00 is the whole day)", v["to"])
    s = (_mask(v["days"], path + ".days"), a, b)
    if band:
        if "per_kwh" not in v and "per_hour" not in v:
            raise ValueError("%s: expected per_kwh or per_hour (or both)" % path)
        s += tuple(_price(v[k], path + "." + k) if k in v else None for k in ("per_kwh", "per_hour"))
    return s


def parse(src):
    """A Tariffs from JSON text or a dict; ValueError naming the first bad entry."""
    if isinstance(src, (str, bytes)):
        if len(src) > MAX_TEXT:
            raise ValueError("tariff table: %d bytes, at most %d allowed" % (len(src), MAX_TEXT))
        try:
            src = jsonfile.loads(src)  # strict, UTF-8, nested at most 32 deep, an object
        except ValueError as e:
            raise ValueError("tariff table: %s" % e)
    d = _obj(src, "", ("currency", "decimals", "tz", "tariffs", "groups", "default", "sharing"),
             ("currency", "tariffs", "default"))
    t = Tariffs()
    c = d["currency"]
    if type(c) is not str or len(c) != 3 or not c.isalpha() or not c.isupper():
        _bad("currency", "a 3-letter ISO 4217 code like 'EUR'", c)
    t.currency = c
    t.decimals = d.get("decimals", 2)
    if t.decimals not in (0, 1, 2, 3) or type(t.decimals) is not int:
        _bad("decimals", "0, 1, 2 or 3 (digits of the minor unit)", t.decimals)
    tz = d.get("tz", "UTC0")
    try:
        if type(tz) is not str or len(tz) > 64:
            raise ValueError("a string of at most 64 characters")
        t.tz = Tz(tz)
    except ValueError as e:
        _bad("tz", "a POSIX TZ string like 'CET-1CEST,M3.5.0,M10.5.0/3'", tz, " (%s)" % e)
    tars = _obj(d["tariffs"], "tariffs", d["tariffs"])
    if not 1 <= len(tars) <= MAX_TARIFFS:
        raise ValueError("tariffs: %d entries, expected 1 to %d" % (len(tars), MAX_TARIFFS))
    for name in tars:
        p = "tariffs." + _name(name, "tariffs: name %r" % name)
        v = _obj(tars[name], p, ("per_kwh", "per_hour", "bands"), ("per_kwh",))
        bands = _list(v.get("bands", []), p + ".bands", MAX_BANDS)
        t.tariffs[name] = (_price(v["per_kwh"], p + ".per_kwh"), _price(v.get("per_hour", 0), p + ".per_hour"),
                           tuple(_span(bands[i], "%s.bands[%d]" % (p, i), True) for i in range(len(bands))))
    t.default = _known(t, d["default"], "default")
    groups = _obj(d.get("groups", {}), "groups", d.get("groups", {}))
    if len(groups) > MAX_GROUPS:
        raise ValueError("groups: %d entries, at most %d allowed" % (len(groups), MAX_GROUPS))
    for g in groups:
        k = _fold(_name(g, "groups: name %r" % g))
        if k in t.groups:
            raise ValueError("groups.%s: the same group as another entry (idTags ignore case)" % g)
        t.groups[k] = _known(t, groups[g], "groups." + g)
    if "sharing" in d:
        s = _obj(d["sharing"], "sharing", ("owner_groups", "guest_tariff", "windows"),
                 ("owner_groups", "guest_tariff", "windows"))
        og = _list(s["owner_groups"], "sharing.owner_groups", MAX_GROUPS)
        t.owners = tuple(_fold(_name(og[i], "sharing.owner_groups[%d]" % i)) for i in range(len(og)))
        t.guest = _known(t, s["guest_tariff"], "sharing.guest_tariff")
        w = _list(s["windows"], "sharing.windows", MAX_WINDOWS)
        t.windows = tuple(_span(w[i], "sharing.windows[%d]" % i, False) for i in range(len(w)))
    return t


def _dec(units):
    return ("%d.%04d" % (units // PRICE, units % PRICE)).rstrip("0").rstrip(".")


def _mask_text(mask):
    if mask == 127:
        return "*"
    out = []
    i = 0
    while i < 7:
        j = i
        while mask >> i & 1 and j + 1 < 7 and mask >> (j + 1) & 1:
            j += 1
        if mask >> i & 1:
            out.append(DAYS[i] + "-" + DAYS[j] if j > i + 1 else ",".join(DAYS[i:j + 1]))
        i = j + 1
    return ",".join(out)


def _span_json(s):
    out = '{"days":"%s","from":"%02d:%02d","to":"%02d:%02d"' % (_mask_text(s[0]), s[1] // 60, s[1] % 60,
                                                                 s[2] // 60, s[2] % 60)
    for i, k in ((3, "per_kwh"), (4, "per_hour")):
        if len(s) > i and s[i] is not None:
            out += ',"%s":%s' % (k, _dec(s[i]))
    return out + "}"


class Tariffs:
    """A parsed table, built by parse(); read-only once built. Prices are in price units, times
    of day in minutes, day sets in bits (Monday = 1):

    currency, decimals, tz (a Tz), default (tariff name)
    tariffs   {name: (per_kwh, per_hour, bands)}, bands ((days, from, to, per_kwh|None, per_hour|None), ...)
    groups    {GROUP: tariff name}, groups upper-cased (OCPP idTags ignore the case of ASCII letters)
    owners    (GROUP, ...); guest: tariff name; windows ((days, from, to), ...) or None: no sharing
    """

    def __init__(self):
        self.currency, self.decimals, self.tz, self.default = "EUR", 2, Tz("UTC0"), ""
        self.tariffs, self.groups = {}, {}
        self.owners = ()  # type: tuple
        self.guest = ""
        self.windows = None  # type: tuple | None

    def to_json(self):
        """Compact canonical JSON, defaults left out; parse(t.to_json()) gives the same table."""
        q = json.dumps
        tars = []
        for n, v in self.tariffs.items():
            tars.append('%s:{"per_kwh":%s%s%s}' % (
                q(n), _dec(v[0]), ',"per_hour":' + _dec(v[1]) if v[1] else "",
                ',"bands":[%s]' % ",".join(_span_json(b) for b in v[2]) if v[2] else ""))
        out = '{"currency":%s,%s"tz":%s,"tariffs":{%s},"default":%s' % (
            q(self.currency), '"decimals":%d,' % self.decimals if self.decimals != 2 else "", q(self.tz.text),
            ",".join(tars), q(self.default))
        if self.groups:
            out += ',"groups":{%s}' % ",".join("%s:%s" % (q(g), q(n)) for g, n in self.groups.items())
        if self.windows is not None:
            out += ',"sharing":{"owner_groups":[%s],"guest_tariff":%s,"windows":[%s]}' % (
                ",".join(q(g) for g in self.owners), q(self.guest), ",".join(_span_json(w) for w in self.windows))
        return out + "}"

    def local(self, epoch):
        """(weekday 0 = Monday, minute of the day) in the table's local time."""
        lt = epoch + self.tz.offset(epoch)
        return (lt // DAY + 3) % 7, lt % DAY // 60

    def _match(self, spans, t):
        """Index of the first span (days, from, to, ...) covering time t, or -1."""
        wd, m = self.local(t)
        for i in range(len(spans)):
            s = spans[i]
            if s[1] < s[2]:
                hit = s[0] >> wd & 1 and s[1] <= m < s[2]
            else:  # crossing midnight: belongs to the day it starts on
                hit = s[0] >> wd & 1 and m >= s[1] or s[0] >> (wd + 6) % 7 & 1 and m < s[2]
            if hit:
                return i
        return -1

    def _edge(self, spans, t, until):
        """The first time after t (at most `until`) at which the matching span may change."""
        if not spans:
            return until
        nxt = self.tz.next_change(t)
        if nxt is None or nxt > until:
            nxt = until
        sod = (t + self.tz.offset(t)) % DAY
        for s in spans:
            for m in (s[1], s[2]):
                c = t + ((m * 60 - sod) % DAY or DAY)
                if c < nxt:
                    nxt = c
        return nxt

    def _tariff(self, name):
        if name not in self.tariffs:
            raise ValueError("unknown tariff %r" % (name,))
        return self.tariffs[name]

    def _price(self, tar, t):
        pe, ph, bands = tar
        i = self._match(bands, t)
        if i >= 0:
            b = bands[i]
            pe = pe if b[3] is None else b[3]
            ph = ph if b[4] is None else b[4]
        return pe, ph

    def price(self, name, epoch):
        """(per_kwh, per_hour) of a tariff at a time, in price units (1/10000 of the currency)."""
        return self._price(self._tariff(name), epoch)

    def group_tariff(self, parent_id_tag):
        """The tariff of a token's group (its parentIdTag; None or "": no group)."""
        g = _fold(parent_id_tag)
        if self.windows is not None and g not in self.owners:
            return self.guest
        return self.groups.get(g, self.default)

    def may_charge(self, parent_id_tag, epoch):
        """(True, tariff name) or (False, reason): guests of a private charger only in a window."""
        if self.windows is None or _fold(parent_id_tag) in self.owners or self._match(self.windows, epoch) >= 0:
            return True, self.group_tariff(parent_id_tag)
        wd, m = self.local(epoch)
        best = None
        for mask, a, _b in self.windows:
            for d in range(8):
                if mask >> (wd + d) % 7 & 1 and (d or a > m):
                    if best is None or d * 1440 + a < best:
                        best = d * 1440 + a
                    break
        if best is None:
            return False, "outside sharing hours; no sharing window set"
        return False, "outside sharing hours; next window %s %02d:%02d" % (
            DAYS[(wd + best // 1440) % 7], best % 1440 // 60, best % 60)

    def window_end(self, parent_id_tag, epoch):
        """When this token's right to charge ends: None if it does not (owner, public charger, a
        window that never closes), else the end of the current sharing window (epoch if outside)."""
        if self.windows is None or _fold(parent_id_tag) in self.owners:
            return None
        t, stop = epoch, epoch + 8 * DAY
        while t < stop and self._match(self.windows, t) >= 0:
            t = self._edge(self.windows, t, stop)
        return None if t >= stop else t


class Bill:
    """The cost of one session from meter readings (epoch seconds, meter register in Wh).

    update() charges the energy since the last reading and the time elapsed, splitting the
    interval at band boundaries and DST switches; the energy is shared out in proportion to time
    in whole Wh (the Wh reached at a boundary is the linear interpolation, rounded down), so the
    parts add up to the meter's delta. A reading older or lower than the last one adds nothing
    for the part that went backwards (a replay after a power cut never counts twice).
    """

    def __init__(self, tariffs, tariff, start, wh, x=0):
        tariffs._tariff(tariff)
        self.tariffs = tariffs
        self.tariff = tariff
        self.t = int(start)
        self.wh = int(wh)
        self.x = x  # exact amount so far, 1/18000 of a price unit

    def update(self, epoch, wh):
        tb, tar = self.tariffs, self.tariffs._tariff(self.tariff)
        epoch, wh = int(epoch), int(wh)
        t0 = t = self.t
        span = epoch - t0 if epoch > t0 else 0
        dwh = wh - self.wh if wh > self.wh else 0
        end = t0 + span
        done = 0
        while True:
            pe, ph = tb._price(tar, t)
            e = tb._edge(tar[2], t, end) if t < end else end
            part = dwh if e == end else dwh * (e - t0) // span
            self.x += pe * (part - done) * 18 + ph * (e - t) * 5
            done, t = part, e
            if t == end:
                break
        self.t = end
        self.wh += dwh

    @property
    def cost(self):
        """Cost so far in minor units of the currency (cents), rounded half up."""
        d = PRICE * X // 10 ** self.tariffs.decimals
        return (self.x + d // 2) // d

    def to_dict(self):
        return {"tariff": self.tariff, "t": self.t, "wh": self.wh, "x": self.x}

    @classmethod
    def from_dict(cls, tariffs, d):
        """A Bill saved by to_dict(), to go on with after a reboot; ValueError if it is not one."""
        try:
            if type(d["t"]) is int and type(d["wh"]) is int and type(d["x"]) is int and d["x"] >= 0:
                return cls(tariffs, d["tariff"], d["t"], d["wh"], d["x"])
        except (KeyError, TypeError):
            pass
        _bad("bill", "a saved bill {tariff, t, wh, x}", d)


def format_cost(cost, currency, decimals=2):
    """"EUR 12.34" from 1234 minor units."""
    if not decimals:
        return "%s %d" % (currency, cost)
    p = 10 ** decimals
    return "%s %d.%0*d" % (currency, cost // p, decimals, cost % p)
