"""Wall-clock time for OCPP, as integer seconds since 1970-01-01T00:00:00Z (UTC).

The ports disagree on the epoch of `time.time()` (MicroPython's is 2000 on the ESP32), so the
civil-date arithmetic is done here (Howard Hinnant's days-from-civil) and the clock is built on
the firmware's tick clock:

    parse("2026-11-22T10:00:00.5+01:00") -> 1795338000    iso(1795338000) -> "2026-11-22T09:00:00Z"
    wc = WallClock(clock, floor=last_saved)   # counts on from `floor` until the back end tells
    wc.set(parse(conf["currentTime"]))        # BootNotification.conf / Heartbeat.conf
    wc.now() -> epoch seconds; wc.synced

`parse` takes RFC 3339 / ISO 8601 extended date-times: "T" or "t", seconds optional (the spec's
own example "2013-01-01T00:00Z"), any fraction (dropped: times are whole seconds, floored),
"Z"/"z", "+hh:mm", "-hh:mm", "+hhmm" or no offset at all (read as UTC, as OCPP 3.14 recommends
UTC and some back ends leave the "Z" out). A leap second :60 counts as :59.
"""

from firmware.calendar import civil as _civil
from firmware.calendar import days as _days

DAY = 86400


def _mdays(y, m):
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


def _num(s, i, n):
    """The n decimal digits at s[i:i+n], or -1."""
    if i + n > len(s):
        return -1
    v = 0
    for k in range(i, i + n):
        c = ord(s[k]) - 48
        if c < 0 or c > 9:
            return -1
        v = v * 10 + c
    return v


def parse(text):
    """Epoch seconds (UTC) of an ISO 8601 / RFC 3339 date-time; ValueError naming the text."""
    s = text if isinstance(text, str) else None
    secs = _parse(s) if s is not None else None
    if secs is None:
        raise ValueError("not an ISO 8601 date-time: %r" % (text,))
    return secs


def _parse(s):
    n = len(s)
    if n < 16 or s[4] != "-" or s[7] != "-" or s[10] not in "Tt" or s[13] != ":":
        return None
    y = _num(s, 0, 4)
    mo = _num(s, 5, 2)
    d = _num(s, 8, 2)
    h = _num(s, 11, 2)
    mi = _num(s, 14, 2)
    if y < 0 or not 1 <= mo <= 12 or not 1 <= d <= _mdays(y, mo) or not 0 <= h <= 23 \
            or not 0 <= mi <= 59:
        return None
    i = 16
    sec = 0
    if i < n and s[i] == ":":
        sec = _num(s, i + 1, 2)
        if not 0 <= sec <= 60:
            return None
        if sec == 60:
            sec = 59
        i += 3
        if i < n and s[i] in ".,":
            i += 1
            j = i
            while i < n and "0" <= s[i] <= "9":
                i += 1
            if i == j:
                return None
    off = 0
    if i < n:
        c = s[i]
        if c in "Zz":
            i += 1
        elif c in "+-":
            oh = _num(s, i + 1, 2)
            if n - i == 6 and s[i + 3] == ":":
                om = _num(s, i + 4, 2)
            elif n - i == 5:
                om = _num(s, i + 3, 2)
            else:
                return None
            if not 0 <= oh <= 23 or not 0 <= om <= 59:
                return None
            off = (oh * 60 + om) * 60
            if c == "-":
                off = -off
            i = n
        else:
            return None
    if i != n:
        return None
    return _days(y, mo, d) * DAY + h * 3600 + mi * 60 + sec - off


def iso(epoch):
    """"YYYY-MM-DDTHH:MM:SSZ" of epoch seconds (UTC)."""
    days = epoch // DAY
    s = epoch - days * DAY
    y, m, d = _civil(days)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (y, m, d, s // 3600, s // 60 % 60, s % 60)


def weekday(epoch):
    """0 = Monday .. 6 = Sunday (1970-01-01 was a Thursday)."""
    return (epoch // DAY + 3) % 7


def seconds_of_day(epoch):
    return epoch % DAY


_REBASE_MS = 0x10000000  # 2**28 ms (3.1 days): far inside the 2**29 ms a ticks_diff can span


class WallClock:
    """Epoch seconds on top of the tick clock.

    Keeps an epoch base (seconds + milliseconds) and the tick at which it held; now() moves
    the base forward once 2**28 ms have passed, so the tick difference never nears the 2**29 ms
    where ticks_diff wraps. Call now() at least every three days (any periodic task does).
    Before set() it counts from `floor` (the last time known before a reboot, 0 if none), so
    timestamps do not go backwards across reboots; `synced` says whether the back end set it.
    """

    def __init__(self, clock, floor=0):
        self.clock = clock
        self.synced = False
        self._rebase(floor)

    def _rebase(self, epoch):
        self._s = epoch
        self._ms = 0
        self._t = self.clock.ticks_ms()

    def set(self, epoch):
        """The back end told the time (BootNotification.conf / Heartbeat.conf currentTime)."""
        self._rebase(int(epoch))
        self.synced = True

    def known(self):
        """now() once the back end told the time, else None: a record that must be true (the
        session journal, a bill) takes no estimate."""
        return self.now() if self.synced else None

    def now(self):
        t = self.clock.ticks_ms()
        ms = self._ms + self.clock.ticks_diff(t, self._t)
        if ms >= _REBASE_MS:
            self._s += ms // 1000
            self._ms = ms % 1000
            self._t = t
            ms = self._ms
        return self._s + ms // 1000
