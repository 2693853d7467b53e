"""tests_host/energy_day.py, the simulated day that sets our energy manager beside the anchors'
(tests_host/energy_anchors.py; tools/energy_baselines.py prints the tables of docs/energy.md):
its bookkeeping on trivial days whose figures are known in advance, every controller through every
day, and ours keeping the main fuse on the smart evening."""
import os

import pytest

import energy_day as ed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOUR_S = 3600


class Fixed:
    """A controller that offers `amps` on `phases`, switching to `later` (amps, phases) at `at_ms`."""

    def __init__(self, amps, phases=3, at_ms=None, later=None):
        self.amps, self.phases, self.at_ms, self.later = amps, phases, at_ms, later
        self.seen = []

    def step(self, now, r):
        self.seen.append((now, r.offer_a, r.contactor, r.supply_phases, r.switching))
        if self.at_ms is not None and now >= self.at_ms:
            return self.later
        return self.amps, self.phases


def trivial(pv_w, seconds=600, house=(0.0, 0.0, 0.0), **kw):
    return ed.Day("trivial", seconds, ed.PvDay("const", pv_w), ed.House(house), **kw)


def charged_s(seconds):
    """Seconds the car draws on a day of `seconds` with an offer from the start: from READY_MS,
    CAR_DELAY_MS later."""
    return seconds - (ed.READY_MS + ed.CAR_DELAY_MS) / 1000


def test_a_car_on_a_sunny_day_charges_from_the_surplus_alone():
    r = ed.run(trivial(12000), Fixed(16))
    wh = 16 * 3 * 230 * charged_s(600) / 3600  # 11,040 W
    assert r.car_wh == pytest.approx(wh, rel=1e-9)
    assert r.surplus_wh == pytest.approx(wh, rel=1e-9) and r.import_kwh == pytest.approx(0, abs=1e-9)
    assert (r.starts, r.stops, r.switches) == (1, 0, 0)
    assert r.row() == ["Fixed", "%.2f" % (wh / 1000), "100.0", "0.00", "1", "0", "0", "-"]


def test_the_surplus_is_the_pv_less_the_house_and_the_rest_is_import():
    r = ed.run(trivial(6000, house=(1.0, 1.0, 1.0)), Fixed(16))  # 6,000 - 690 W for a car of 11,040 W
    h = charged_s(600) / 3600
    assert r.car_wh == pytest.approx(11040 * h)
    assert r.surplus_wh == pytest.approx(5310 * h)
    assert r.import_kwh == pytest.approx((11040 - 5310) * h / 1000)
    assert r.surplus_share == pytest.approx(5310 / 11040)


def test_a_one_phase_car_draws_on_one_phase_and_at_most_its_maximum():
    r = ed.run(trivial(0, car_phases=1, car_max_a=16.0), Fixed(32))
    assert r.car_wh == pytest.approx(16 * 230 * charged_s(600) / 3600)
    assert r.surplus_wh == 0


def test_below_six_amps_nothing_flows_and_the_station_caps_the_offer():
    assert ed.run(trivial(0), Fixed(5.9)).car_wh == 0
    r = ed.run(trivial(0, car_max_a=80.0, station_max_a=16.0), Fixed(32))
    assert r.car_wh == pytest.approx(16 * 3 * 230 * charged_s(600) / 3600)


def test_a_stop_and_a_start_are_counted_and_the_offer_reaches_the_car_a_second_late():
    c = Fixed(10, at_ms=100000, later=(0, 3))
    r = ed.run(trivial(0), c)
    assert (r.starts, r.stops) == (1, 1)
    assert r.car_wh == pytest.approx(10 * 3 * 230 * (100 - 2) / 3600)  # from 3 s to 101 s
    closed = [now for now, _, contactor, _, _ in c.seen if contactor]
    assert closed[0] == ed.READY_MS + ed.CAR_DELAY_MS and closed[-1] == 100000 + ed.CAR_DELAY_MS - ed.TICK_MS


def test_a_phase_switch_under_load_is_a_switch_not_a_stop_and_a_start():
    c = Fixed(16, 3, at_ms=100000, later=(16, 1))
    r = ed.run(trivial(0, switchable=True), c)
    assert (r.starts, r.stops, r.switches) == (1, 0, 1)
    # the offer withdrawn at 100 s, the car off at 101 s, the switch at once, 2 s later the offer
    # back, the car on 1 s later: 3 s without current
    assert r.car_wh == pytest.approx(16 * 230 * (3 * (101 - 3) + 1 * (600 - 104)) / 3600)
    assert [s for s in c.seen if s[4]][0][0] == 100000 + ed.TICK_MS
    assert c.seen[-1][3] == 1


def test_a_board_without_a_switch_ignores_the_phases_asked_for():
    r = ed.run(trivial(0), Fixed(16, 1))
    assert r.switches == 0 and r.car_wh == pytest.approx(16 * 3 * 230 * charged_s(600) / 3600)


def test_a_switch_not_followed_by_a_charge_is_a_stop():
    c = Fixed(16, 3, at_ms=100000, later=(0, 1))
    r = ed.run(trivial(0, switchable=True), c)
    assert (r.starts, r.stops, r.switches) == (1, 1, 1)


def test_the_fuse_overshoot_is_the_time_any_phase_is_above_the_fuse():
    # 16 A of car + 5 A of house on L2 on a 20 A fuse, from 3 s to the end; 2 A on the others
    r = ed.run(trivial(0, house=(2.0, 5.0, 2.0), fuse_a=20.0), Fixed(16))
    assert r.over_longest_ms == r.over_total_ms == 600000 - 3000
    assert r.row()[-1] == "597.0 / 597.0"
    # exporting more than the fuse counts too (a meter's currents are magnitudes)
    r = ed.run(trivial(20000, fuse_a=20.0), Fixed(0))
    assert r.over_total_ms == 600000


def test_the_pv_day_is_the_worlds():
    from world import grid as grid_mod

    day = ed.PvDay("clouds", 10000, 1)
    assert day.watts(0) == 0 and day.watts(HOUR_S * 1000) == 0
    clear = ed.PvDay("clear", 10000, 1)
    assert clear.watts(HOUR_S * 500) == pytest.approx(10000)
    shaded = [t for t in range(0, HOUR_S * 1000, 1000) if day.watts(t) < 0.9 * clear.watts(t)]
    assert shaded and shaded[0] >= 1000 * grid_mod.CLOUD_GAP_S[0]  # a clear gap first, then clouds


def test_the_house_cycles_its_events():
    h = ed.House([1, 2, 3], [(10, 20, 0, 5.0, 3, 2), (15, 16, None, 1.0)])
    assert h.amps(9) == [1, 2, 3] and h.amps(10) == [6, 2, 3] and h.amps(13) == [1, 2, 3]
    assert h.amps(15) == [7, 3, 4] and h.amps(20) == [1, 2, 3]


@pytest.fixture(scope="module")
def results():
    """Every controller through every day (a second or two)."""
    out = {}
    for day in ed.days():
        for name, ctl in ed.controllers(day):
            out[day.name, name] = ed.run(day, ctl, name)
    return out


def test_every_controller_runs_every_day(results):
    names = {d.name for d in ed.days()}
    assert {k[0] for k in results} == names and {k[1] for k in results} == {"ours", "SmartEVSE", "WARP"}
    for (day, name), r in results.items():
        assert r.car_wh > 0, (day, name)
        assert 0 <= r.surplus_wh <= r.car_wh + 1e-6, (day, name)
        assert r.stops <= r.starts <= r.stops + 1, (day, name)


def test_ours_keeps_the_fuse_on_the_smart_evening(results):
    r = results["smart evening", "ours"]
    assert 0 < r.over_longest_ms <= 2000  # docs/energy.md: a reading, the decision, the car's second
    assert r.car_kwh > 5


def test_ours_on_the_cloudy_day_is_what_the_whole_firmware_gives(results):
    # the bounds test_energy_scenarios.py holds the firmware on the virtual ESP32 to, same day
    r = results["clouds", "ours"]
    assert r.car_kwh > 3 and r.surplus_share >= 0.90 and r.starts <= 3
    # and the anchors' switching only where the board can switch
    for (day, name), res in results.items():
        if res.switches:
            assert day == "clouds, phase switch", (day, name)


def test_the_days_are_deterministic(results):
    day = ed.days()[1]
    again = ed.run(day, ed.Ours(day), "ours")
    assert again.row() == results[day.name, "ours"].row()


def test_the_docs_show_what_the_days_give(results):
    """docs/energy.md's tables are tools/energy_baselines.py's output: rerun it after a change of
    firmware/energy.py or of the days, and read the figures again."""
    with open(os.path.join(ROOT, "docs", "energy.md"), encoding="utf-8") as f:
        doc = f.read()
    for day in ed.days():
        want = ed.report(day, [results[day.name, name] for name in ("ours", "SmartEVSE", "WARP")])
        assert want in doc, "docs/energy.md is stale for %r: run python3 tools/energy_baselines.py" % day.name
