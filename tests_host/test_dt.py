"""Wall-clock time for OCPP (firmware/ocpp/dt.py): ISO 8601 parsing and formatting against
CPython's datetime, weekday and time of day, and the WallClock on wrapping ticks."""
import datetime
import random

import pytest

from vclock import VirtualClock
from firmware.ocpp import dt

UTC = datetime.timezone.utc


def ref(text):
    """CPython's reading of the same text (Python 3.10's fromisoformat is strict: help it)."""
    s = text.replace("z", "Z").replace("t", "T").replace("Z", "+00:00")
    return int(datetime.datetime.fromisoformat(s).timestamp())


@pytest.mark.parametrize("text, expected", [
    ("1970-01-01T00:00:00Z", 0),
    ("2026-11-22T10:00:00Z", 1795341600),
    ("2026-11-22T10:00:00.123Z", 1795341600),
    ("2026-11-22T10:00:00.999999999Z", 1795341600),
    ("2026-11-22T10:00:00,5Z", 1795341600),
    ("2026-11-22t10:00:00z", 1795341600),
    ("2026-11-22T10:00:00+01:00", 1795341600 - 3600),
    ("2026-11-22T10:00:00.5+01:00", 1795341600 - 3600),
    ("2026-11-22T10:00:00-05:30", 1795341600 + 5 * 3600 + 1800),
    ("2026-11-22T10:00:00+0100", 1795341600 - 3600),
    ("2026-11-22T10:00:00", 1795341600),            # no offset: read as UTC
    ("2026-11-22T10:00Z", 1795341600),               # no seconds (the spec's own example)
    ("2013-01-01T00:00Z", 1356998400),
    ("2016-12-31T23:59:60Z", 1483228799),            # leap second counts as :59
    ("2024-02-29T12:00:00Z", 1709208000),
    ("2000-03-01T00:00:00+14:00", 951818400),
    ("1969-12-31T23:00:00Z", -3600),
    ("2100-03-01T00:00:00Z", 4107542400),
])
def test_parse(text, expected):
    assert dt.parse(text) == expected


@pytest.mark.parametrize("text", [
    "2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123Z", "2026-11-22T10:00:00+01:00",
    "2026-11-22T10:00:00-05:30", "1999-12-31T23:59:59Z", "2024-02-29T00:00:00Z"])
def test_parse_agrees_with_cpython(text):
    assert dt.parse(text) == ref(text)


@pytest.mark.parametrize("text", [
    "", "garbage", "2026-11-22", "2026-11-22 10:00:00Z", "2026-11-22T10:00:00ZZ",
    "2026-13-01T00:00:00Z", "2026-00-01T00:00:00Z", "2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z",
    "2026-11-22T24:00:00Z", "2026-11-22T10:60:00Z", "2026-11-22T10:00:61Z",
    "2026-11-22T10:00:00.Z", "2026-11-22T10:00:00+1:00", "2026-11-22T10:00:00+01:0",
    "2026-11-22T10:00:00+24:00", "2026-11-22T10:00:00+01:60", "2026-11-22T10:00:00 ",
    "2026-11-22T10:00:00UTC", "2026-1-22T10:00:00Z", "2026-11-22T1a:00:00Z", "+2026-11-22T10:00Z",
    "2026-11-22T10:00.5Z",
])
def test_bad_text_raises_value_error_naming_it(text):
    with pytest.raises(ValueError) as e:
        dt.parse(text)
    assert repr(text) in str(e.value)


@pytest.mark.parametrize("value", [None, 1795341600, b"2026-11-22T10:00:00Z", ["x"]])
def test_not_a_string_raises_value_error(value):
    with pytest.raises(ValueError):
        dt.parse(value)


def test_iso_round_trip_and_agrees_with_cpython():
    rnd = random.Random(7)
    samples = [0, -1, 86399, 86400, 951782400, 4107542400, 253402300799, -62135596800]
    samples += [rnd.randrange(-2 * 10 ** 9, 10 ** 10) for _ in range(3000)]
    for e in samples:
        text = dt.iso(e)
        d = datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=e)
        assert text == "%04d-%02d-%02dT%02d:%02d:%02dZ" % (
            d.year, d.month, d.day, d.hour, d.minute, d.second), e
        assert dt.parse(text) == e
        assert dt.weekday(e) == d.weekday()
        assert dt.seconds_of_day(e) == d.hour * 3600 + d.minute * 60 + d.second


def test_every_day_of_four_centuries():
    d = datetime.date(1900, 1, 1)
    day = datetime.timedelta(days=1)
    for _ in range(146097):
        e = int(datetime.datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp())
        assert dt.parse("%04d-%02d-%02dT00:00:00Z" % (d.year, d.month, d.day)) == e
        d += day


def test_weekday_and_seconds_of_day():
    mon = dt.parse("2026-11-23T00:00:00Z")
    assert dt.weekday(mon) == 0
    assert dt.weekday(mon - 1) == 6 and dt.seconds_of_day(mon - 1) == 86399
    assert dt.weekday(0) == 3  # 1970-01-01 was a Thursday
    assert dt.seconds_of_day(mon + 3661) == 3661


# ---------------------------------------------------------------------------------------------
# WallClock


def test_counts_from_the_floor_until_set():
    c = VirtualClock(12345)
    w = dt.WallClock(c, floor=1795341600)
    assert not w.synced and w.now() == 1795341600
    c.advance(1999)
    assert w.now() == 1795341601
    w.set(1800000000)
    assert w.synced and w.now() == 1800000000
    c.advance(999)
    assert w.now() == 1800000000
    c.advance(1)
    assert w.now() == 1800000001


def test_default_floor_is_zero_and_set_may_go_back():
    c = VirtualClock()
    w = dt.WallClock(c)
    c.advance(5000)
    assert w.now() == 5
    w.set(dt.parse("2026-01-01T00:00:00Z"))
    w.set(dt.parse("2025-01-01T00:00:00Z"))  # the back end is the authority
    assert dt.iso(w.now()) == "2025-01-01T00:00:00Z"


@pytest.mark.parametrize("start", [0, 2 ** 30 - 5000, 2 ** 29])
@pytest.mark.parametrize("steps", [[60000], [2 ** 27 + 17], [2 ** 28 - 1], [2 ** 28 - 1] + [999] * 50,
                                   [2 ** 28 + 3, 1, 7, 999]])
def test_runs_for_months_across_tick_wraps_without_drift(start, steps):
    c = VirtualClock(start)
    w = dt.WallClock(c, floor=1000)
    w.set(1795341600)
    total = 0
    while total < 200 * 86400 * 1000:  # 200 days: the ticks wrap 16 times
        for step in steps:
            c.advance(step)
            total += step
            assert w.now() == 1795341600 + total // 1000
    assert dt.iso(w.now()).startswith("2027-06-")


def test_rarely_asked_still_right_up_to_the_rebase_limit():
    c = VirtualClock(2 ** 30 - 1)
    w = dt.WallClock(c)
    w.set(1795341600)
    for _ in range(40):
        c.advance(2 ** 29 - 1)  # the most a ticks_diff can span: correct only with re-basing
        assert w.now() >= 1795341600
    assert w.now() == 1795341600 + 40 * (2 ** 29 - 1) // 1000
