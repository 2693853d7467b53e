"""OCPP 1.6 Smart Charging (firmware/ocpp/smart.py): every SetChargingProfile rule, clearing
(with the errata's matching), stacking and purposes, recurrence across midnight and week ends,
W -> A, GetCompositeSchedule, persistence, a corrupt file, power cuts, and the same results on
the real MicroPython binary. Time is plain epoch seconds: nothing sleeps."""
import json
import os
import subprocess
import sys

import pytest

from firmware.ocpp import dt, smart
from flaky_fs import FlakyFS, PowerCut

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")

MON = dt.parse("2026-11-23T00:00:00Z")  # a Monday
H = 3600
DAY = 86400
WEEK = 7 * DAY
T0 = MON + 10 * H


def prof(pid=1, level=0, purpose="TxDefaultProfile", kind="Absolute", periods=((0, 16),),
         unit="A", start=MON, duration=None, **extra):
    sched = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        dict({"startPeriod": p[0], "limit": p[1]}, **({"numberPhases": p[2]} if len(p) > 2 else {}))
        for p in periods]}
    if start is not None:
        sched["startSchedule"] = start if isinstance(start, str) else dt.iso(start)
    if duration is not None:
        sched["duration"] = duration
    p = {"chargingProfileId": pid, "stackLevel": level, "chargingProfilePurpose": purpose,
         "chargingProfileKind": kind, "chargingSchedule": sched}
    for k, v in extra.items():
        p[k] = dt.iso(v) if k in ("validFrom", "validTo") and isinstance(v, int) else v
    return p


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "smart.json")


@pytest.fixture
def sp(path):
    return smart.Profiles(path)


def ok(p, connector_id, profile, tx_id=None, now=T0):
    r = p.set(connector_id, profile, tx_id, now)
    assert r == "Accepted", p.reason
    assert p.reason is None


def rejected(p, connector_id, profile, tx_id=None, now=T0, reason=""):
    before = p.installed()
    r = p.set(connector_id, profile, tx_id, now)
    assert r == "Rejected"
    assert reason in p.reason, p.reason
    assert p.installed() == before
    return p.reason


# ---------------------------------------------------------------------------------------------
# SetChargingProfile: what is accepted, what is rejected


def test_nothing_installed_means_no_limit(sp):
    assert sp.limit(T0) == (None, None)
    assert sp.limit(T0, tx_start=T0) == (None, None)
    # the charger's own limit (here none given: NO_LIMIT_A), never Rejected for want of a profile
    assert sp.composite(1, 3600, "A", T0) == {"startSchedule": dt.iso(T0), "duration": 3600, "chargingRateUnit": "A",
                                              "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 80}]}
    assert sp.composite(1, 3600, "A", T0, own_da=160)["chargingSchedulePeriod"] == [{"startPeriod": 0, "limit": 16}]
    assert sp.installed() == []


def test_charge_point_max_profile_only_on_connector_0(sp):
    rejected(sp, 1, prof(purpose="ChargePointMaxProfile"), reason="connector 0")
    ok(sp, 0, prof(purpose="ChargePointMaxProfile"))
    assert sp.installed() == [(1, 0, "ChargePointMaxProfile", 0)]


def test_tx_default_profile_on_0_or_1_and_no_other_connector(sp):
    ok(sp, 0, prof(pid=1))
    ok(sp, 1, prof(pid=2))
    rejected(sp, 2, prof(pid=3), reason="connector")
    rejected(sp, -1, prof(pid=3), reason="connector")
    assert sorted(sp.installed()) == [(1, 0, "TxDefaultProfile", 0), (2, 1, "TxDefaultProfile", 0)]


def test_tx_profile_needs_connector_1_and_a_running_matching_transaction(sp):
    rejected(sp, 1, prof(purpose="TxProfile"), tx_id=None, reason="transaction")
    rejected(sp, 0, prof(purpose="TxProfile"), tx_id=7, reason="connector 1")
    rejected(sp, 1, prof(purpose="TxProfile", transactionId=8), tx_id=7, reason="transactionId 8")
    ok(sp, 1, prof(pid=1, purpose="TxProfile", transactionId=7), tx_id=7)
    ok(sp, 1, prof(pid=2, level=1, purpose="TxProfile"), tx_id=7)  # e.g. from RemoteStart
    assert len(sp.installed()) == 2


def test_transaction_id_on_other_purposes_is_ignored(sp):
    ok(sp, 1, prof(transactionId=99), tx_id=None)


def test_stack_level_bounds(path):
    sp = smart.Profiles(path, max_stack_level=3)
    ok(sp, 1, prof(level=3))
    rejected(sp, 1, prof(pid=2, level=4), reason="ChargeProfileMaxStackLevel 3")
    rejected(sp, 1, prof(pid=2, level=-1), reason="stackLevel")


def test_period_count_bounds(path):
    sp = smart.Profiles(path, max_periods=3)
    ok(sp, 1, prof(periods=((0, 6), (60, 7), (120, 8))))
    rejected(sp, 1, prof(pid=2, periods=((0, 6), (60, 7), (120, 8), (180, 9))),
             reason="ChargingScheduleMaxPeriods 3")
    rejected(sp, 1, prof(pid=2, periods=()), reason="non-empty")


@pytest.mark.parametrize("periods, reason", [
    (((60, 16),), "first startPeriod must be 0"),
    (((0, 16), (60, 10), (60, 8)), "does not follow"),
    (((0, 16), (60, 10), (30, 8)), "does not follow"),
    (((0, -1),), "limit"),
    (((0, "16"),), "limit"),
    (((0, True),), "limit"),
    (((0, float("inf")),), "limit"),
    (((0, float("nan")),), "limit"),
    (((0, 10 ** 8),), "limit"),
    (((0, 16, 4),), "numberPhases"),
    (((0, 16, 0),), "numberPhases"),
    (((-5, 16),), "startPeriod"),
])
def test_bad_periods_are_rejected(sp, periods, reason):
    rejected(sp, 1, prof(periods=periods), reason=reason)


def test_charging_rate_unit_must_be_supported(path):
    sp = smart.Profiles(path, units=("A",))
    ok(sp, 1, prof(unit="A"))
    rejected(sp, 1, prof(pid=2, level=1, unit="W"), reason="chargingRateUnit 'W'")
    rejected(sp, 1, prof(pid=2, level=1, unit="kW"), reason="chargingRateUnit")


def test_absolute_without_start_schedule_starts_when_received(sp):
    ok(sp, 1, prof(start=None, periods=((0, 16), (600, 8))), now=T0)
    assert sp.limit(T0 + 599) == (160, 1)
    assert sp.limit(T0 + 600) == (80, None)
    rejected(sp, 1, prof(pid=2, level=1, start=None), now=None, reason="startSchedule")


def test_recurring_needs_kind_and_start(sp):
    rejected(sp, 1, prof(kind="Recurring"), reason="recurrencyKind")
    rejected(sp, 1, prof(kind="Recurring", recurrencyKind="Monthly"), reason="recurrencyKind")
    rejected(sp, 1, prof(kind="Recurring", recurrencyKind="Daily", start=None), reason="startSchedule")
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Daily"))


def test_relative_profile_ignores_start_schedule(sp):
    ok(sp, 1, prof(kind="Relative", start=MON + 99 * DAY, periods=((0, 10), (600, 20))))
    assert sp.limit(T0, tx_start=T0 - 100) == (100, 500)


@pytest.mark.parametrize("profile, reason", [
    (prof(start="yesterday"), "startSchedule is not a date-time: 'yesterday'"),
    (prof(validFrom="2026-13-01T00:00:00Z"), "validFrom"),
    (prof(validTo="tomorrow"), "validTo"),
    (dict(prof(), validTo=12), "validTo"),
    (prof(validFrom=T0, validTo=T0), "validTo is not after validFrom"),
    (prof(duration=-1), "duration"),
    (prof(duration=1.5), "duration"),
    (dict(prof(), chargingProfilePurpose="Other"), "chargingProfilePurpose"),
    (dict(prof(), chargingProfileKind="Sometimes"), "chargingProfileKind"),
    (dict(prof(), chargingProfileId="1"), "chargingProfileId"),
    (dict(prof(), chargingProfileId=None), "chargingProfileId"),
    (dict(prof(), chargingSchedule=None), "chargingSchedule"),
    (dict(prof(), chargingSchedule={"chargingRateUnit": "A"}), "chargingSchedulePeriod"),
    (dict(prof(), chargingSchedule={"chargingRateUnit": "A", "chargingSchedulePeriod": [3]}),
     "chargingSchedulePeriod"),
    ("not a profile", "not an object"),
    (None, "not an object"),
])
def test_malformed_profiles_are_rejected_with_a_reason(sp, profile, reason):
    rejected(sp, 1, profile, reason=reason)


def test_rejections_change_nothing_on_flash_or_in_ram(sp, path):
    ok(sp, 0, prof(pid=1, purpose="ChargePointMaxProfile", periods=((0, 20),)))
    ok(sp, 1, prof(pid=2, periods=((0, 12),)))
    before = open(path).read()
    bad = [(1, prof(pid=1, purpose="ChargePointMaxProfile")),
           (1, prof(pid=2, level=99)),
           (1, prof(pid=2, periods=((0, 6), (0, 7)))),
           (1, prof(pid=1, purpose="TxProfile")),
           (1, prof(pid=2, kind="Recurring")),
           (1, prof(pid=2, unit="X")),
           (1, prof(pid=2, validFrom=T0 + 10, validTo=T0))]
    for cid, p in bad:  # each would replace an installed profile if it were accepted
        assert sp.set(cid, p, None, T0) == "Rejected"
        assert open(path).read() == before
        assert sp.limit(T0) == (120, None)


def test_same_id_replaces_whatever_its_level(sp):
    ok(sp, 1, prof(pid=5, level=0, periods=((0, 10),)))
    ok(sp, 1, prof(pid=5, level=3, periods=((0, 12),)))
    assert sp.installed() == [(5, 1, "TxDefaultProfile", 3)]
    ok(sp, 0, prof(pid=5, level=1, purpose="ChargePointMaxProfile", periods=((0, 8),)))
    assert sp.installed() == [(5, 0, "ChargePointMaxProfile", 1)]
    assert sp.limit(T0) == (80, None)


def test_same_level_and_purpose_on_the_same_connector_replaces(sp):
    ok(sp, 1, prof(pid=1, level=2, periods=((0, 10),)))
    ok(sp, 1, prof(pid=2, level=2, periods=((0, 12),)))
    assert sp.installed() == [(2, 1, "TxDefaultProfile", 2)]
    # another connector: both stay (3.13.1: replaced only for that specific connector)
    ok(sp, 0, prof(pid=3, level=2, periods=((0, 14),)))
    # another purpose: both stay
    ok(sp, 0, prof(pid=4, level=2, purpose="ChargePointMaxProfile", periods=((0, 32),)))
    assert len(sp.installed()) == 3
    assert sp.limit(T0) == (120, None)  # connector 1's TxDefault wins the tie with connector 0's


def test_remote_start_tx_profile_replaced_by_same_level_with_transaction_id(sp):
    ok(sp, 1, prof(pid=1, level=1, purpose="TxProfile", periods=((0, 10),)), tx_id=42)
    ok(sp, 1, prof(pid=2, level=1, purpose="TxProfile", transactionId=42, periods=((0, 14),)), tx_id=42)
    ok(sp, 1, prof(pid=3, level=2, purpose="TxProfile", transactionId=42, periods=((0, 8),),
                   start=T0, duration=600), tx_id=42)
    assert sorted(sp.installed()) == [(2, 1, "TxProfile", 1), (3, 1, "TxProfile", 2)]
    assert sp.limit(T0, tx_start=T0) == (80, 600)
    assert sp.limit(T0 + 600, tx_start=T0) == (140, None)


def test_no_more_than_max_installed(path):
    sp = smart.Profiles(path, max_installed=3)
    for i in range(3):
        ok(sp, 1, prof(pid=i, level=i))
    rejected(sp, 1, prof(pid=9, level=5), reason="MaxChargingProfilesInstalled is 3")
    ok(sp, 1, prof(pid=1, level=7))     # a replacement needs no room
    ok(sp, 1, prof(pid=9, level=0))     # replaces pid 0 by level and purpose
    assert sorted(sp.installed()) == [(1, 1, "TxDefaultProfile", 7), (2, 1, "TxDefaultProfile", 2),
                                      (9, 1, "TxDefaultProfile", 0)]


def test_expired_profiles_make_room(path):
    sp = smart.Profiles(path, max_installed=2)
    ok(sp, 1, prof(pid=1, level=1, validTo=T0 + 60))
    ok(sp, 1, prof(pid=2, level=2))
    rejected(sp, 1, prof(pid=3, level=3), now=T0 + 59, reason="MaxChargingProfilesInstalled")
    ok(sp, 1, prof(pid=3, level=3), now=T0 + 60)
    assert sorted(sp.installed()) == [(2, 1, "TxDefaultProfile", 2), (3, 1, "TxDefaultProfile", 3)]


# ---------------------------------------------------------------------------------------------
# ClearChargingProfile, end of transaction


@pytest.fixture
def four(sp):
    ok(sp, 0, prof(pid=1, level=0, purpose="ChargePointMaxProfile"))
    ok(sp, 0, prof(pid=2, level=1))
    ok(sp, 1, prof(pid=3, level=1))
    ok(sp, 1, prof(pid=4, level=2, purpose="TxProfile"), tx_id=5)
    return sp


def ids(sp):
    return sorted(i[0] for i in sp.installed())


def test_clear_without_fields_clears_all(four):
    assert four.clear() == "Accepted"
    assert four.installed() == []
    assert four.clear() == "Unknown"


def test_clear_by_id_ignores_the_other_fields(four):
    # errata 3.26: "If id is specified, then all other fields are ignored."
    assert four.clear(id=3, connector_id=0, purpose="ChargePointMaxProfile", stack_level=9) == "Accepted"
    assert ids(four) == [1, 2, 4]
    assert four.clear(id=3) == "Unknown"
    assert ids(four) == [1, 2, 4]


@pytest.mark.parametrize("fields, left", [
    ({"connector_id": 0}, [3, 4]),
    ({"connector_id": 1}, [1, 2]),
    ({"purpose": "TxDefaultProfile"}, [1, 4]),
    ({"stack_level": 1}, [1, 4]),
    ({"connector_id": 1, "stack_level": 1}, [1, 2, 4]),                 # logical AND (errata 3.25)
    ({"connector_id": 0, "purpose": "TxDefaultProfile", "stack_level": 1}, [1, 3, 4]),
])
def test_clear_by_fields_matches_all_of_them(four, fields, left):
    assert four.clear(**fields) == "Accepted"
    assert ids(four) == left


@pytest.mark.parametrize("fields", [
    {"connector_id": 1, "purpose": "ChargePointMaxProfile"}, {"stack_level": 7}, {"id": 99},
    {"connector_id": 0, "stack_level": 2}])
def test_clear_matching_nothing_is_unknown_and_writes_nothing(four, path, fields):
    before = open(path).read()
    assert four.clear(**fields) == "Unknown"
    assert ids(four) == [1, 2, 3, 4]
    assert open(path).read() == before


def test_tx_ended_removes_tx_profiles_only(four):
    assert four.limit(T0, tx_start=T0)[0] == 160
    assert four.tx_ended() == 1
    assert ids(four) == [1, 2, 3]
    assert four.tx_ended() == 0


def test_resume_keeps_only_the_same_transaction(four, path):
    again = smart.Profiles(path)
    assert again.resume(5) == 0 and ids(again) == [1, 2, 3, 4]
    assert again.resume(6) == 1 and ids(again) == [1, 2, 3]
    assert ids(smart.Profiles(path)) == [1, 2, 3]
    assert four.resume(None) == 1


# ---------------------------------------------------------------------------------------------
# the limit in force


def test_absolute_schedule_periods_and_duration(sp):
    ok(sp, 1, prof(start=T0, periods=((0, 16), (1800, 10), (3600, 5)), duration=5400))
    assert sp.limit(T0 - 10) == (None, 10)   # not started: no limit
    assert sp.limit(T0) == (160, 1800)
    assert sp.limit(T0 + 1799) == (160, 1)
    assert sp.limit(T0 + 1800) == (100, 1800)
    assert sp.limit(T0 + 3600) == (50, 1800)  # below 6 A: returned as is, the charger pauses
    assert sp.limit(T0 + 5399) == (50, 1)
    assert sp.limit(T0 + 5400) == (None, None)


def test_periods_beyond_the_duration_are_not_executed(sp):
    ok(sp, 1, prof(start=T0, periods=((0, 16), (600, 10)), duration=600))
    assert sp.limit(T0 + 300) == (160, 300)
    assert sp.limit(T0 + 600) == (None, None)


def test_without_duration_the_last_period_goes_on(sp):
    ok(sp, 1, prof(start=T0, periods=((0, 16), (600, 10))))
    assert sp.limit(T0 + 10 ** 8) == (100, None)


def test_valid_from_and_valid_to(sp):
    ok(sp, 1, prof(pid=1, level=0, periods=((0, 20),)))
    ok(sp, 1, prof(pid=2, level=1, periods=((0, 10),), validFrom=T0 + 100, validTo=T0 + 200))
    assert sp.limit(T0) == (200, 100)
    assert sp.limit(T0 + 100) == (100, 100)
    assert sp.limit(T0 + 199) == (100, 1)
    assert sp.limit(T0 + 200) == (200, None)


def test_spec_3_13_2_stacking_weekly_calendar_with_a_holiday_exception(sp):
    # TxDefaultProfile, weekly: full power weekdays 23:00-06:00 and all weekend, reduced otherwise
    periods = [(0, 32)]
    for d in range(5):
        periods += [(d * DAY + 6 * H, 10), (d * DAY + 23 * H, 32)]
    ok(sp, 1, prof(pid=10, level=0, kind="Recurring", recurrencyKind="Weekly", start=MON,
                   periods=periods, duration=WEEK))
    # exception for a holiday (Thursday of the second week): full power all day
    hol = MON + WEEK + 3 * DAY
    ok(sp, 1, prof(pid=11, level=1, periods=((0, 32),), validFrom=hol, validTo=hol + DAY))
    assert sp.limit(MON + 12 * H) == (100, 11 * H)              # Monday noon: reduced
    assert sp.limit(MON + 23 * H) == (320, 7 * H)               # Monday night: full until 06:00
    assert sp.limit(MON + 4 * DAY + 23 * H) == (320, 55 * H)    # Friday 23:00 to Monday 06:00
    assert sp.limit(MON + WEEK + 12 * H) == (100, 11 * H)       # second week, same calendar
    assert sp.limit(hol - H) == (320, H + DAY + 6 * H)          # Wednesday 23:00 .. Friday 06:00
    assert sp.limit(hol + 12 * H) == (320, 18 * H)              # holiday noon: the exception
    assert sp.limit(hol + DAY) == (320, 6 * H)                  # Friday 00:00: calendar again
    assert sp.limit(hol + DAY + 6 * H) == (100, 17 * H)


def test_spec_3_13_7_daily_profile_in_watts(sp):
    p = prof(pid=100, level=0, kind="Recurring", recurrencyKind="Daily", unit="W",
             start="2013-01-01T00:00Z", duration=86400,
             periods=((0, 11000, 3), (28800, 6000, 3), (72000, 11000, 3)))
    ok(sp, 0, p)
    # 11000 W / (230 V * 3) = 15.94 A; 6000 W / 690 V = 8.69 A
    assert sp.limit(MON + 8 * H - 1) == (159, 1)
    assert sp.limit(MON + 8 * H) == (86, 12 * H)
    assert sp.limit(MON + 20 * H) == (159, 12 * H)     # across midnight: no change at 00:00
    assert sp.limit(MON + 23 * H + 59 * 60) == (159, 8 * H + 60)
    assert sp.limit(MON + DAY) == (159, 8 * H)
    assert sp.limit(MON + 20 * H, volts=240) == (152, 12 * H)


def test_recurring_is_not_in_force_before_its_start(sp):
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Daily", start=T0, periods=((0, 10),),
                   duration=H))
    assert sp.limit(T0 - DAY) == (None, DAY)
    assert sp.limit(T0) == (100, H)
    assert sp.limit(T0 + H) == (None, DAY - H)
    assert sp.limit(T0 + 30 * DAY + 10) == (100, H - 10)


def test_recurring_with_a_short_duration_falls_back_to_a_lower_level(sp):
    # errata 3.43: after the duration, the profile with a lower stackLevel (or no limit)
    ok(sp, 1, prof(pid=1, level=0, periods=((0, 32),)))
    ok(sp, 1, prof(pid=2, level=1, kind="Recurring", recurrencyKind="Daily", start=MON + 17 * H,
                   periods=((0, 6),), duration=4 * H))
    assert sp.limit(MON + 16 * H) == (320, H)
    assert sp.limit(MON + 17 * H) == (60, 4 * H)
    assert sp.limit(MON + 21 * H) == (320, 20 * H)
    assert sp.limit(MON + 5 * DAY + 18 * H) == (60, 3 * H)


def test_a_high_level_without_duration_never_falls_back(sp):
    ok(sp, 1, prof(pid=1, level=0, periods=((0, 32),)))
    ok(sp, 1, prof(pid=2, level=5, start=T0, periods=((0, 8),)))
    assert sp.limit(T0 - 1) == (320, 1)
    assert sp.limit(T0 + 400 * DAY) == (80, None)


def test_recurrence_cuts_periods_and_duration_longer_than_the_period(sp):
    # errata 3.44: the remainder periods beyond the recurrence period are not executed
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Daily", start=MON,
                   periods=((0, 10), (20 * H, 12), (DAY + H, 30)), duration=2 * DAY))
    assert sp.limit(MON + 20 * H) == (120, 4 * H)
    assert sp.limit(MON + DAY) == (100, 20 * H)
    assert sp.limit(MON + DAY + 2 * H) == (100, 18 * H)


def test_daily_recurrence_across_midnight(sp):
    # 22:00 .. 06:00 cheap power: 32 A, otherwise 10 A, as one daily schedule starting at 22:00
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Daily", start=MON - 2 * H,
                   periods=((0, 32), (8 * H, 10))))
    assert sp.limit(MON - 1) == (320, 6 * H + 1)
    assert sp.limit(MON) == (320, 6 * H)
    assert sp.limit(MON + 6 * H) == (100, 16 * H)
    assert sp.limit(MON + 21 * H + 59 * 60 + 59) == (100, 1)
    assert sp.limit(MON + 22 * H) == (320, 8 * H)


def test_weekly_recurrence_across_the_week_boundary(sp):
    # Sunday 22:00 to Monday 00:00: 6 A; rest of the week: 16 A; the week starts Monday 00:00
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Weekly", start=MON,
                   periods=((0, 16), (6 * DAY + 22 * H, 6))))
    sun22 = MON + 6 * DAY + 22 * H
    assert sp.limit(sun22 - 1) == (160, 1)
    assert sp.limit(sun22) == (60, 2 * H)
    assert sp.limit(MON + WEEK - 1) == (60, 1)
    assert sp.limit(MON + WEEK) == (160, 6 * DAY + 22 * H)
    assert sp.limit(MON + 5 * WEEK + 6 * DAY + 23 * H) == (60, H)
    assert dt.weekday(sun22) == 6


def test_tx_profile_overrules_tx_default_and_cp_max_caps_both(sp):
    ok(sp, 1, prof(pid=1, level=3, periods=((0, 10),)))
    ok(sp, 0, prof(pid=2, level=0, purpose="ChargePointMaxProfile", periods=((0, 25),)))
    assert sp.limit(T0) == (100, None)
    ok(sp, 1, prof(pid=3, level=0, purpose="TxProfile", periods=((0, 32),)), tx_id=1)
    assert sp.limit(T0, tx_start=T0) == (250, None)  # TxProfile 32 A, not min with TxDefault 10 A
    assert sp.limit(T0) == (100, None)               # no transaction: TxProfiles do not apply
    sp.tx_ended()
    assert sp.limit(T0, tx_start=T0) == (100, None)


def test_tx_profile_that_is_not_in_force_gives_way_to_tx_default(sp):
    ok(sp, 1, prof(pid=1, periods=((0, 10),)))
    ok(sp, 1, prof(pid=2, purpose="TxProfile", kind="Relative", start=None, periods=((0, 20),),
                   duration=900), tx_id=1)
    assert sp.limit(T0, tx_start=T0) == (200, 900)
    assert sp.limit(T0 + 900, tx_start=T0) == (100, None)


def test_relative_profiles_count_from_the_transaction_start(sp):
    ok(sp, 1, prof(pid=1, kind="Relative", start=None, periods=((0, 6), (600, 16)), duration=3600))
    ok(sp, 0, prof(pid=2, kind="Relative", start=None, purpose="ChargePointMaxProfile",
                   periods=((0, 12),)))
    assert sp.limit(T0) == (None, None)               # no transaction: not in force
    assert sp.limit(T0, tx_start=T0) == (60, 600)
    assert sp.limit(T0 + 600, tx_start=T0) == (120, None)  # TxDefault ends at 3600: still 12 A
    assert sp.limit(T0 + 3600, tx_start=T0) == (120, None)


def test_tx_default_on_connector_1_wins_the_tie_but_not_a_higher_level(sp):
    ok(sp, 0, prof(pid=1, level=1, periods=((0, 20),)))
    ok(sp, 1, prof(pid=2, level=1, periods=((0, 30),)))
    assert sp.limit(T0) == (300, None)
    ok(sp, 0, prof(pid=3, level=2, periods=((0, 8),), validTo=T0 + 60))
    assert sp.limit(T0) == (80, 60)
    assert sp.limit(T0 + 60) == (300, None)


@pytest.mark.parametrize("limit, phases_field, phases, volts, expected", [
    (11000, 3, 3, 230, 159),    # 15.94 A
    (11000, None, 3, 230, 159),  # numberPhases absent: 3 (7.12)
    (3680, 1, 3, 230, 160),     # one phase: 16 A
    (3680, None, 1, 230, 160),  # a one-phase station assumes 1 phase when absent
    (7360, 2, 3, 230, 160),
    (4140, 3, 3, 230, 60),
    (4139, 3, 3, 230, 59),      # floored, just below 6 A
    (22000.5, 3, 3, 230, 318),
    (11000, 3, 3, 240, 152),
    (0, 3, 3, 230, 0),
])
def test_watts_to_amps(sp, limit, phases_field, phases, volts, expected):
    per = (0, limit, phases_field) if phases_field else (0, limit)
    ok(sp, 1, prof(unit="W", periods=(per,)))
    assert sp.limit(T0, phases=phases, volts=volts) == (expected, None)


@pytest.mark.parametrize("limit, deci", [(8.1, 81), (16, 160), (6.0, 60), (0.3, 3), (0.7, 7),
                                         (31.9, 319), (5.5, 55)])
def test_decimal_amps(sp, limit, deci):
    ok(sp, 1, prof(periods=((0, limit),)))
    assert sp.limit(T0) == (deci, None)


def test_mixed_units_take_the_minimum(sp):
    ok(sp, 0, prof(pid=1, purpose="ChargePointMaxProfile", unit="W", periods=((0, 6900, 3),)))
    ok(sp, 1, prof(pid=2, start=T0, periods=((0, 16), (600, 8))))
    assert sp.limit(T0) == (100, 600)   # 6900 W on 3 phases = 10 A
    assert sp.limit(T0 + 600) == (80, None)


def test_next_change_skips_boundaries_where_the_value_stays(sp):
    ok(sp, 1, prof(pid=1, start=T0, periods=((0, 16), (600, 16), (1200, 16), (1800, 10))))
    ok(sp, 0, prof(pid=2, start=T0, purpose="ChargePointMaxProfile", periods=((0, 20), (900, 16))))
    assert sp.limit(T0) == (160, 1800)


def test_a_limit_that_never_changes_asks_to_look_again_later(sp):
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Daily", start=MON, periods=((0, 16),)))
    v, s = sp.limit(T0)
    assert v == 160 and s is not None and s > 10 * DAY


# ---------------------------------------------------------------------------------------------
# GetCompositeSchedule


def test_composite_of_the_spec_example_over_a_day(sp):
    ok(sp, 0, prof(pid=100, kind="Recurring", recurrencyKind="Daily", unit="W",
                   start="2013-01-01T00:00:00Z", duration=86400,
                   periods=((0, 11000, 3), (28800, 6000, 3), (72000, 11000, 3))))
    assert sp.composite(0, DAY, "W", MON) == {
        "startSchedule": "2026-11-23T00:00:00Z", "duration": DAY, "chargingRateUnit": "W", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 11000, "numberPhases": 3}, {"startPeriod": 28800, "limit": 6000, "numberPhases": 3},
            {"startPeriod": 72000, "limit": 11000, "numberPhases": 3}]}
    assert sp.composite(1, DAY, None, MON + 6 * H) == {
        "startSchedule": "2026-11-23T06:00:00Z", "duration": DAY, "chargingRateUnit": "A", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 15.9, "numberPhases": 3}, {"startPeriod": 2 * H, "limit": 8.6, "numberPhases": 3},
            {"startPeriod": 14 * H, "limit": 15.9, "numberPhases": 3}]}


def test_composite_merges_purposes_from_now(sp):
    ok(sp, 0, prof(pid=1, purpose="ChargePointMaxProfile", start=T0,
                   periods=((0, 20), (H, 10)), duration=2 * H))
    ok(sp, 1, prof(pid=2, start=T0 - H, periods=((0, 16), (H + 1800, 32))))
    ok(sp, 1, prof(pid=3, purpose="TxProfile", kind="Relative", start=None, periods=((0, 24),),
                   duration=H), tx_id=9)
    now = T0 + 600
    assert sp.composite(1, 3 * H, "A", now) == {
        "startSchedule": dt.iso(now), "duration": 3 * H, "chargingRateUnit": "A", "chargingSchedulePeriod": [
            {"startPeriod": 0, "limit": 16},
            {"startPeriod": 1200, "limit": 20},        # TxDefault rises to 32 at T0 + 30 min
            {"startPeriod": 3000, "limit": 10},        # CP max 10 A from T0 + 1 h
            {"startPeriod": 6600, "limit": 32},        # CP max ends at T0 + 2 h
        ]}
    # in a transaction (started at now): the TxProfile overrules TxDefault for its hour
    assert sp.composite(1, 3 * H, "A", now, tx_start=now)["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 20}, {"startPeriod": 3000, "limit": 10},
        {"startPeriod": 6600, "limit": 32}]
    assert sp.composite(0, 3 * H, "A", now) == sp.composite(1, 3 * H, "A", now)


def test_composite_in_watts_converts_amps_with_the_phases(sp):
    ok(sp, 1, prof(start=T0, periods=((0, 16), (600, 10, 1))))
    assert sp.composite(1, 1200, "W", T0)["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 11040}, {"startPeriod": 600, "limit": 2300, "numberPhases": 1}]


def test_composite_fills_gaps_and_takes_the_local_limit(sp):
    ok(sp, 1, prof(start=T0 + 600, periods=((0, 10),), duration=600))
    sched = sp.composite(1, 1800, "A", T0)
    assert sched["startSchedule"] == dt.iso(T0)
    assert sched["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 80}, {"startPeriod": 600, "limit": 10},
        {"startPeriod": 1200, "limit": 80}]
    assert sp.composite(1, 1800, "A", T0, own_da=320)["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32}, {"startPeriod": 600, "limit": 10},
        {"startPeriod": 1200, "limit": 32}]
    assert sp.composite(1, 1800, "A", T0, own_da=60)["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 6}]


def test_composite_without_a_profile_in_force_is_the_charger_limit(sp):
    ok(sp, 1, prof(start=T0 + 600, periods=((0, 10),)))
    ok(sp, 1, prof(pid=2, level=1, purpose="TxProfile", periods=((0, 6),)), tx_id=3)
    assert sp.composite(1, 600, "A", T0, own_da=320)["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 32}]                  # the profile starts after the window
    assert sp.composite(1, 601, "A", T0)["chargingSchedulePeriod"][-1] == {
        "startPeriod": 600, "limit": 10}
    assert sp.composite(2, 3600, "A", T0) is None         # unknown connector
    assert sp.composite(1, 0, "A", T0) is None


def test_composite_keeps_number_phases_and_splits_where_they_change(sp):
    ok(sp, 1, prof(start=T0, periods=((0, 16, 3), (600, 16, 1), (1200, 16))))
    assert sp.composite(1, 1800, "A", T0)["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 16, "numberPhases": 3}, {"startPeriod": 600, "limit": 16, "numberPhases": 1},
        {"startPeriod": 1200, "limit": 16}]


def test_composite_is_bounded(sp):
    ok(sp, 1, prof(kind="Recurring", recurrencyKind="Daily", start=MON,
                   periods=[(h * H, 10 + h % 2) for h in range(24)]))
    sched = sp.composite(1, 7 * DAY, "A", MON)
    assert len(sched["chargingSchedulePeriod"]) == 48
    assert sched["duration"] == 2 * DAY
    assert sched["chargingSchedulePeriod"][-1] == {"startPeriod": 47 * H, "limit": 11}


# ---------------------------------------------------------------------------------------------
# persistence


def test_profiles_survive_a_reload(sp, path):
    ok(sp, 0, prof(pid=1, purpose="ChargePointMaxProfile", unit="W", periods=((0, 11000, 3),)))
    ok(sp, 1, prof(pid=2, kind="Recurring", recurrencyKind="Daily", start=MON,
                   periods=((0, 16), (8 * H, 10))))
    ok(sp, 1, prof(pid=3, level=1, purpose="TxProfile", transactionId=77, periods=((0, 8),),
                   validTo=T0 + H), tx_id=77)
    again = smart.Profiles(path)
    assert not again.corrupt
    assert sorted(again.installed()) == sorted(sp.installed())
    for t in (T0, T0 + H, MON + DAY + H, MON + DAY + 9 * H):
        for tx in (None, T0):
            assert again.limit(t, tx) == sp.limit(t, tx)
    assert again.limit(T0, tx_start=T0) == (80, H)
    assert again.clear(id=2) == "Accepted"
    assert ids(smart.Profiles(path)) == [1, 3]
    again.tx_ended()
    assert ids(smart.Profiles(path)) == [1]


@pytest.mark.parametrize("content", [
    "{not json", "", "[]", '{"v": 1, "p": 3}', '{"v": 1, "p": [[1, 2]]}', '{"v": 2, "p": []}',
    '{"v": 1, "p": [[1,1,"X",0,"Absolute",0,null,null,0,null,"A",[[0,160,0]],null]]}',
    '{"v": 1, "p": [[1,1,"TxDefaultProfile",0,"Absolute",0,null,null,0,null,"A",[],null]]}',
    '{"v": 1, "p": [[1,1,"TxDefaultProfile",0,"Absolute",0,null,null,"0",null,"A",[[0,160,0]],null]]}',
    '{"v": 1, "p": [[1,1,"TxDefaultProfile",0,"Absolute",0,null,null,null,null,"A",[[0,160,0]],null]]}',
    '{"v": 1, "p": [[1,1,"TxDefaultProfile",0,"Absolute",0,null,null,0,null,"A",[[0,16.5,0]],null]]}',
    '{"v": 1, "p": [[1,1,"TxDefaultProfile",0,"Absolute",0,null,null,0,null,"A",[[5,160,0]],null]]}',
    '{"v": 1, "p": [[1,1,"TxDefaultProfile",0,"Absolute",86400,null,null,0,null,"A",[[0,160,0]],null]]}',
])
def test_a_corrupt_file_counts_as_empty_and_is_replaced(path, content):
    with open(path, "w") as f:
        f.write(content)
    sp = smart.Profiles(path)
    assert sp.corrupt
    assert sp.installed() == [] and sp.limit(T0) == (None, None)
    ok(sp, 1, prof(periods=((0, 10),)))
    again = smart.Profiles(path)
    assert not again.corrupt and again.limit(T0) == (100, None)


class FailingFS(FlakyFS):
    def rename(self, a, b):
        raise OSError(28, "no space left")


def test_a_profile_that_cannot_be_saved_is_rejected_and_changes_nothing(path):
    ok(smart.Profiles(path), 1, prof(pid=1, periods=((0, 10),)))
    sp = smart.Profiles(path, fs=FailingFS())
    assert sp.set(1, prof(pid=1, periods=((0, 20),)), None, T0) == "Rejected"
    assert "cannot save" in sp.reason
    assert sp.limit(T0) == (100, None)
    # a clear that cannot be saved still applies: the safer side
    assert sp.clear() == "Accepted"
    assert sp.limit(T0) == (None, None)


def test_a_power_cut_at_any_write_leaves_the_old_or_the_new_profiles(path):
    ok(smart.Profiles(path), 1, prof(pid=1, periods=((0, 10),)))
    for cut in range(1, 4):
        sp = smart.Profiles(path, fs=FlakyFS(cut_at=cut))
        try:
            sp.set(1, prof(pid=1, periods=((0, 20),)), None, T0)
            done = True
        except PowerCut:
            done = False
        after = smart.Profiles(path)
        assert not after.corrupt
        assert after.limit(T0) == ((200, None) if done else (100, None))
        ok(after, 1, prof(pid=1, periods=((0, 10),)))


# ---------------------------------------------------------------------------------------------
# the same results on the real MicroPython binary

SCRIPT = r"""
import json, sys
from firmware.ocpp import dt, smart

out = []
for s in ("2026-11-22T10:00:00Z", "2026-11-22T10:00:00.123-05:30", "2024-02-29t23:59:60z",
          "2013-01-01T00:00Z", "1969-12-31T23:00:00+0100", "2100-03-01T00:00:00"):
    e = dt.parse(s)
    out.append([s, e, dt.iso(e), dt.weekday(e), dt.seconds_of_day(e)])
for s in ("2026-02-29T00:00:00Z", "nonsense", "2026-11-22T10:00:00+1"):
    try:
        dt.parse(s)
        out.append([s, "parsed"])
    except ValueError as e:
        out.append([s, str(e)])

from vclock import VirtualClock
c = VirtualClock(2 ** 30 - 3000)
w = dt.WallClock(c, floor=1000)
c.advance(2500)
out.append(["floor", w.now(), w.synced])
w.set(1795341600)
for i in range(100):
    c.advance(2 ** 28 - 7)
    w.now()
out.append(["wall", w.now(), w.synced])

MON = dt.parse("2026-11-23T00:00:00Z")
H = 3600
p = smart.Profiles(sys.argv[1])
def sched(unit, periods, start=None):
    d = {"chargingRateUnit": unit, "chargingSchedulePeriod": [
        {"startPeriod": q[0], "limit": q[1], "numberPhases": q[2]} for q in periods]}
    if start is not None:
        d["startSchedule"] = start
    return d
out.append(p.set(0, {"chargingProfileId": 100, "stackLevel": 0, "chargingProfilePurpose": "ChargePointMaxProfile",
           "chargingProfileKind": "Recurring", "recurrencyKind": "Daily",
           "chargingSchedule": sched("W", [[0, 11000, 3], [28800, 6000, 3], [72000, 11000, 3]],
                                     "2013-01-01T00:00Z")}, None, MON))
out.append(p.set(1, {"chargingProfileId": 2, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Recurring", "recurrencyKind": "Weekly",
           "chargingSchedule": sched("A", [[0, 16, 3], [6 * 86400 + 22 * H, 6.5, 1]], dt.iso(MON))},
           None, MON))
out.append(p.set(1, {"chargingProfileId": 3, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
           "chargingProfileKind": "Relative", "chargingSchedule": dict(sched("A", [[0, 8.1, 1], [900, 32, 3]]), duration=1800)},
           55, MON))
out.append([p.set(0, {"chargingProfileId": 4, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": sched("A", [[0, 8, 1]])}, 55, MON), p.reason])
q = smart.Profiles(sys.argv[1])
for t in (MON, MON + 8 * H, MON + 6 * 86400 + 23 * H, MON + 7 * 86400, MON + 9 * 86400 + 21 * H):
    out.append([t, q.limit(t), q.limit(t, t - 600), q.limit(t, t - 600, 1, 240)])
out.append(q.composite(1, 86400, "A", MON + 6 * 86400, MON + 6 * 86400 + 100))
out.append(q.composite(0, 3 * 86400, "W", MON + 3 * H))
out.append([q.clear(stack_level=1), q.clear(id=7), q.tx_ended(), q.installed()])
for x in out:
    print(json.dumps(x))
"""


def run_script(runtime, tmp_path, name):
    script = tmp_path / "smart_check.py"
    script.write_text(SCRIPT)
    path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests_host")])
    env = dict(os.environ, MICROPYPATH=path, PYTHONPATH=path)
    r = subprocess.run([runtime, str(script), str(tmp_path / name)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_micropython_gives_the_same_results_as_cpython(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    cp = run_script(sys.executable, tmp_path, "cp.json")
    mp = run_script(MICROPYTHON, tmp_path, "mp.json")
    assert len(cp) == 23
    for a, b in zip(cp, mp):
        assert a == b
    assert cp[9] == ["floor", 1002, False]
    assert cp[11:14] == ["Accepted", "Accepted", "Accepted"]
    assert cp[14][0] == "Rejected" and "connector 1" in cp[14][1]
    with open(tmp_path / "cp.json") as f, open(tmp_path / "mp.json") as g:
        assert json.load(f) == json.load(g)
