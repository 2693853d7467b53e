"""The simulated house around the charger (tests_host/world/grid.py): the RS-485 bus with two
meters, the grid arithmetic, PV over a day with clouds, the overload counter, the scenario verbs,
the snapshot across a power cut and the runner's `world` event every second.

The world is driven as in test_world.py: the fake `machine` objects play the firmware's outputs
on virtual time; the runner's part (tests_host/simrun.py) runs the real firmware on CPython.
"""
import math
import os
import shutil
import subprocess
import sys

import machine
import simtest
from simtest import WorldBench as Bench, read_floats, request
import pytest

from drivers import board
from world import grid as grid_mod
from world.modbus_meter import Bus, MeterSlave
from world.scenario import ScenarioError, parse
from world.world import VERBS, World

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
PWM_PIN, RELAY, UART_ID = 25, 26, 2


@pytest.fixture(autouse=True)
def fresh_board():
    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


def profile(grid=True, name="esp32-devkit"):
    p = board.load(name)
    p.pop("grid_meter", None)
    if grid:
        p["grid_meter"] = {"model": "sdm630", "address": 2}
    return p


# -- the bus


def _src(amps):
    return lambda: {"volts": [230.0, 230.0, 230.0], "amps": [amps, amps, amps], "import_wh": 0.0}


def test_bus_routes_each_request_to_the_addressed_slave_only():
    a = MeterSlave("sdm630", 1, _src(5.0), 9600)
    b = MeterSlave("sdm630", 2, _src(7.0), 9600)
    bus = Bus([a, b], UART_ID)
    assert a.uart_id == UART_ID and b.uart_id == UART_ID
    machine.hw_attach_uart(UART_ID, bus)
    assert read_floats(1, 0x0006, 3) == [5.0, 5.0, 5.0]
    assert (a.answered, b.answered, b.ignored) == (1, 0, 1)
    assert read_floats(2, 0x0006, 3) == [7.0, 7.0, 7.0]
    assert (a.answered, b.answered, a.ignored) == (1, 1, 1)
    assert read_floats(3, 0x0006, 1) is None  # nobody there
    assert a.ignored == 2 and b.ignored == 2
    b.dead = True
    assert read_floats(2, 0x0006, 1) is None and read_floats(1, 0x0006, 1) == [5.0]
    # a slave checks the baud rate of the UART the bus hangs on
    assert read_floats(1, 0x0006, 1, baud=19200) is None


def test_bus_with_one_slave_is_that_slave_byte_for_byte_and_in_time():
    def trace(device):
        machine.hw_reset(keep_world=False)
        machine.hw_attach_uart(UART_ID, device)
        uart = machine.UART(UART_ID, baudrate=9600)
        uart.write(request(1, 4, 0, 6))
        seen = []
        for _ in range(40):
            machine.hw_advance_ms(1)
            n = uart.any()
            seen.append((n, uart.read(3) if n else None))
        return seen

    alone = trace(MeterSlave("sdm630", 1, _src(3.5), 9600))
    on_bus = trace(Bus([MeterSlave("sdm630", 1, _src(3.5), 9600)], UART_ID))
    assert alone == on_bus
    assert b"".join([d for _n, d in alone if d])[:3] == b"\x01\x04\x0c"


def test_the_world_puts_the_grid_meter_on_the_charger_meters_bus():
    w = World(profile())
    assert w.bus.slaves == [w.meter, w.grid.meter]
    assert machine._uart_devs[UART_ID] is w.bus
    g = w.grid.meter
    assert (g.model, g.address, g.baudrate) == ("sdm630", 2, 9600)
    # without the section, or without a Modbus meter, there is no grid meter (and no grid)
    assert World(profile(grid=False)).grid is None
    p = profile()
    p.pop("meter")
    w = World(p)
    assert w.bus is None and w.grid is None
    w.apply("house", [1, 2, 3])
    assert w.grid.meter is None and w.grid.report()["grid"] == [1.0, 2.0, 3.0]


# -- the grid arithmetic


def test_grid_is_house_plus_car_minus_pv_signed_and_the_meter_reads_it():
    b = Bench(profile())
    w = b.w
    w.apply("house", [2, 0, 1.5])
    assert w.grid.report() == {"grid": [2.0, 0.0, 1.5], "house": [2.0, 0.0, 1.5], "pv_w": 0,
                               "car": [0.0, 0.0, 0.0], "over_ms": 0}
    b.charge(16, 1)  # a one-phase car: L1 only
    w.apply("pv", [6900])  # 10 A per phase at 230 V
    r = w.grid.report()
    assert r["car"] == [16.0, 0.0, 0.0] and r["pv_w"] == 6900
    assert r["grid"] == [8.0, -10.0, -8.5]
    # the grid meter: volts, unsigned amps, signed powers, the signed total
    assert read_floats(2, 0x0000, 3) == [230.0, 230.0, 230.0]
    assert read_floats(2, 0x0006, 3) == [8.0, 10.0, 8.5]
    assert read_floats(2, 0x000C, 3) == [pytest.approx(1840.0), pytest.approx(-2300.0),
                                         pytest.approx(-1955.0)]
    assert read_floats(2, 0x0034, 1) == [pytest.approx(1840.0 - 2300.0 - 1955.0)]
    assert read_floats(2, 0x001E, 3) == [1.0, -1.0, -1.0]  # power factor: the power's sign
    # the charger's meter is untouched by the house
    assert read_floats(1, 0x0006, 3) == [16.0, 0.0, 0.0]
    assert read_floats(1, 0x000C, 1) == [pytest.approx(3680.0)]
    b.open()
    assert w.grid.report()["grid"] == [-8.0, -10.0, -8.5]
    src = w.grid.meter_source()
    assert src["power_w"] == pytest.approx(-230 * 26.5) and src["amps"] == [8.0, 10.0, 8.5]


def test_three_phase_car_and_energy_import_export():
    b = Bench(profile())
    w = b.w
    b.charge(16, 3)
    b.run(3600 * 1000, step=1000)  # an hour at 16 A on three phases
    imp, exp = w.grid.energy_wh()
    assert imp == pytest.approx(230 * 48, abs=0.5) and exp == 0
    b.open()
    imp, exp = w.grid.energy_wh()
    w.apply("pv", [9200])  # 40 A in all, 13.33 A per phase exported
    b.run(1800 * 1000, step=1000)
    imp2, exp2 = w.grid.energy_wh()
    assert imp2 == pytest.approx(imp, abs=0.01) and exp2 == pytest.approx(4600, abs=0.5)
    kwh = read_floats(2, 0x0048, 2)
    assert kwh == [pytest.approx(imp2 / 1000, rel=1e-5), pytest.approx(exp2 / 1000, rel=1e-5)]


def test_no_power_no_flow_and_a_silent_grid_meter():
    b = Bench(profile())
    w = b.w
    w.apply("house", [5, 5, 5])
    w.apply("pv", [2000])
    w.power_cut()
    assert w.grid.meter.dead
    assert w.grid.report()["grid"] == [0.0, 0.0, 0.0] and w.grid.report()["pv_w"] == 0
    w.power_restored()
    assert not w.grid.meter.dead
    w.apply("grid-meter-fail")
    assert w.grid.meter.dead and read_floats(2, 0, 1) is None
    assert read_floats(1, 0, 1) == [230.0]  # the charger's meter still answers
    w.power_cut()
    w.power_restored()
    assert w.grid.meter.dead  # still failed
    w.apply("grid-meter-ok")
    assert not w.grid.meter.dead and read_floats(2, 0x0006, 1) == [pytest.approx(5 - 2000 / 690.0)]
    # meter-fail / meter-ok are the charger meter's only
    w.apply("meter-fail")
    assert w.meter.dead and not w.grid.meter.dead
    w.apply("grid-meter-fail")
    w.apply("meter-ok")
    assert not w.meter.dead and w.grid.meter.dead


# -- PV over a day


def _day(kind, peak=8000, hours=1, step_s=5):
    w = World(profile(grid=False))
    w.advance(0)
    w.apply("pv-day", [kind, peak, hours])
    g = w.grid
    return [g.pv_now(t * 1000) for t in range(0, int(hours * 3600) + 120, step_s)]


def test_pv_day_clear_is_a_sine_and_zero_after():
    xs = _day("clear", 8000, 1)
    assert xs[0] == 0 and max(xs) <= 8000 and min(xs) >= 0
    assert xs[360] == pytest.approx(8000)          # noon: t = T / 2 (1800 s)
    assert xs[180] == pytest.approx(8000 * math.sin(math.pi / 4))
    assert xs[720:] == [0] * len(xs[720:])         # after T
    w = World(profile(grid=False))
    w.apply("pv-day", ["clear"])                   # defaults: 8000 W over 12 h
    assert w.grid.pv_now(6 * 3600000) == pytest.approx(8000) and w.grid.day_ms == 12 * 3600000


def test_pv_day_clouds_are_deterministic_dips_within_range():
    a = _day("clouds", 9000, 2, step_s=1)
    assert a == _day("clouds", 9000, 2, step_s=1)  # the same every time
    clear = _day("clear", 9000, 2, step_s=1)
    assert max(a) <= 9000 and min(a) >= 0
    factors = [x / c for x, c in zip(a, clear) if c > 100]
    assert min(factors) >= 0.2 - 1e-9 and max(factors) <= 1 + 1e-9
    shaded = [f < 0.999 for f in factors]
    starts = sum(1 for i in range(1, len(shaded)) if shaded[i] and not shaded[i - 1])
    assert 12 <= starts <= 60  # every few minutes over two hours
    assert 0.1 < sum(shaded) / len(shaded) < 0.6
    deep = [f for f in factors if f <= 0.41]
    assert deep and all(f >= 0.2 - 1e-9 for f in deep)
    # ramps of a few seconds: from full sun to the full dip in 3..8 s
    steps = [abs(factors[i + 1] - factors[i]) for i in range(len(factors) - 1)]
    assert max(steps) < 0.8 / 3 + 0.01
    # the cloud factor does not depend on how often it is looked at
    w = World(profile(grid=False))
    w.apply("pv-day", ["clouds", 9000, 2])
    g = w.grid
    coarse = [g.cloud(t * 1000) for t in range(0, 7200, 7)]
    g.cloud(7000 * 1000)
    assert [g.cloud(t * 1000) for t in range(0, 7200, 7)] == coarse  # (looked at backwards too)


def test_pv_verb_ends_a_day_and_days_restart():
    w = World(profile(grid=False))
    w.apply("pv-day", ["clear", 5000, 0.5])
    w.t = 900000
    assert w.grid.pv_now(w.t) == pytest.approx(5000)
    w.apply("pv", [1200])
    assert w.grid.pv_now(w.t) == 1200 and w.grid.day == 0
    w.apply("pv-day", ["clear", 5000, 0.5])  # starts now
    assert w.grid.pv_now(w.t) == 0 and w.grid.pv_now(w.t + 900000) == pytest.approx(5000)


CLOUD_SCRIPT = r"""
import sys
sys.path[:0] = ["tests_host/fakes", ".", "tests_host"]
from world.grid import Grid
class W:
    profile = {}
    bus = None
    t = 0
    powered = True
g = Grid(W())
out = []
for i in range(40):
    g._c_next()
    out.append("%d %d %d %d %d" % (g._c_start, g._c_in, g._c_hold, g._c_out, g._c_depth))
print(";".join(out))
"""


def test_cloud_sequence_is_the_same_under_micropython():
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    here = subprocess.run([sys.executable, "-c", CLOUD_SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    mp = subprocess.run([MICROPYTHON, "-c", CLOUD_SCRIPT], cwd=ROOT, capture_output=True, text=True,
                        timeout=60)
    assert here.returncode == 0 and mp.returncode == 0, here.stderr + mp.stderr
    assert here.stdout == mp.stdout and here.stdout.count(";") == 39


# -- over the main fuse


def test_over_ms_is_the_longest_run_above_the_fuse():
    b = Bench(profile())
    w = b.w
    g = w.grid
    g.set_fuse(20)
    w.apply("house", [10, 0, 0])
    b.run(2000)
    assert g.over_ms == 0
    b.charge(16, 3)  # L1 at 26 A
    t0 = b.now
    b.run(5000)
    b.open()
    assert g.over_ms == pytest.approx(b.now - t0, abs=40)
    longest = g.over_ms
    assert g.run_ms == 0
    b.charge(16, 3)
    b.run(1000)
    b.open()
    assert g.over_ms == longest  # a shorter run does not change the longest
    w.apply("pv", [2760])  # 4 A per phase: L1 at 22 A, still over
    b.charge(16, 3)
    b.run(8000)
    assert g.over_ms > longest and g.report()["over_ms"] == g.over_ms
    w.apply("pv", [6000])  # L1 at 17.3 A: under
    b.run(100)
    assert g.run_ms == 0
    g.set_fuse(0)  # no fuse set: nothing counted
    w.apply("pv", [0])
    before = g.over_ms
    b.run(3000)
    assert g.over_ms == before and g.run_ms == 0
    # export counts as much as import: |grid| above the fuse
    g.set_fuse(10)
    b.open()
    w.apply("house", [0, 0, 0])
    w.apply("pv", [9660])  # 14 A per phase exported
    g.over_ms = 0
    b.run(2000)
    assert g.over_ms == 2000


def test_over_ms_stops_at_a_power_cut():
    b = Bench(profile())
    w = b.w
    w.grid.set_fuse(5)
    w.apply("house", [6, 0, 0])
    b.run(1000)
    w.power_cut()
    b.run(1000)
    w.power_restored()
    b.run(500)
    assert w.grid.over_ms == 1000 and w.grid.run_ms == 500


# -- the scenario verbs


def test_scenario_parses_the_grid_verbs():
    assert parse("house 8 2.5 0\npv 3000\npv-day clear\npv-day clouds 9000\npv-day clouds 9000 0.5\n"
                 "grid-meter-fail\ngrid-meter-ok") == [
        (1, "house", [8.0, 2.5, 0.0]), (2, "pv", [3000]), (3, "pv-day", ["clear"]),
        (4, "pv-day", ["clouds", 9000]), (5, "pv-day", ["clouds", 9000, 0.5]),
        (6, "grid-meter-fail", []), (7, "grid-meter-ok", [])]
    for v in grid_mod.VERBS:
        assert v in VERBS
    assert VERBS[-5:] == grid_mod.VERBS
    import simrun

    assert simrun.GRID_VERBS == grid_mod.VERBS


@pytest.mark.parametrize("text,expect", [
    ("house 1 2", "house: expected 3 arguments (house L1 L2 L3), got 2"),
    ("house 1 2 3 4", "house: expected 3 arguments"),
    ("house 1 2 101", "house: L3: expected 0..100, got 101"),
    ("house -1 2 3", "house: L1: expected 0..100, got -1"),
    ("house a 2 3", "house: L1: expected a number, got 'a'"),
    ("house nan 2 3", "house: L1: expected 0..100, got nan"),
    ("pv", "pv: expected 1 argument (pv WATTS), got 0"),
    ("pv 50001", "pv: WATTS: expected 0..50000, got 50001"),
    ("pv -5", "pv: WATTS: expected 0..50000, got -5"),
    ("pv 1.5", "pv: WATTS: expected an integer, got '1.5'"),
    ("pv-day", "pv-day: expected 1 to 3 arguments (pv-day clear|clouds [PEAK_W] [HOURS]), got 0"),
    ("pv-day sunny", "pv-day: PROFILE: expected clear or clouds, got 'sunny'"),
    ("pv-day clear 60000", "pv-day: PEAK_W: expected 0..50000, got 60000"),
    ("pv-day clear 8000 0", "pv-day: HOURS: expected 0.01..24, got 0"),
    ("pv-day clear 8000 25", "pv-day: HOURS: expected 0.01..24, got 25"),
    ("pv-day clear 8000 1 2", "pv-day: expected 1 to 3 arguments"),
    ("grid-meter-fail now", "grid-meter-fail: expected no arguments (grid-meter-fail), got 1"),
    ("grid-meter-ok 1", "grid-meter-ok: expected no arguments"),
])
def test_scenario_rejects_bad_grid_arguments(text, expect):
    with pytest.raises(ScenarioError) as e:
        parse("plug\n" + text)
    assert str(e.value).startswith("line 2: " + expect), str(e.value)


def test_world_rejects_bad_grid_arguments():
    w = World(profile())
    for verb, args in (("house", [1, 2]), ("house", ["x", 1, 1]), ("house", [1, 1, 101]),
                       ("pv", []), ("pv", [-1]), ("pv-day", []), ("pv-day", ["rain"]),
                       ("pv-day", ["clear", 8000, 0]), ("pv-day", ["clear", "lots"])):
        with pytest.raises(ValueError) as e:
            w.apply(verb, args)
        assert str(e.value).startswith(verb + ":"), str(e.value)
    # strings, as an interactive line gives them, are taken
    w.apply("house", ["1.5", "0", "2"])
    w.apply("pv-day", ["clouds", "4000", "0.5"])
    assert w.grid.house == [1.5, 0.0, 2.0] and w.grid.day_peak == 4000 and w.grid.day_ms == 1800000


def test_grid_verbs_work_without_a_grid_meter():
    w = World(profile(grid=False))
    assert w.grid is None
    w.apply("grid-meter-fail")
    assert w.grid is not None and w.grid.failed and w.grid.meter is None and w.grid.active
    w.apply("grid-meter-ok")
    w.apply("house", [3, 3, 3])
    w.apply("pv", [690])
    assert w.grid.report()["grid"] == [2.0, 2.0, 2.0]


# -- snapshot across a power cut


_roundtrip = simtest.snapshot_roundtrip


@pytest.mark.parametrize("with_meter", [True, False])
def test_the_grid_survives_the_snapshot(with_meter):
    prof = profile(grid=with_meter)
    b = Bench(prof)
    w = b.w
    w.apply("house", [12, 1, 2.5])
    w.apply("pv-day", ["clouds", 9000, 1])
    w.grid.set_fuse(20)
    b.charge(16, 3)
    b.run(20 * 60 * 1000, step=1000)  # some clouds went by
    b.open()
    w.apply("grid-meter-fail")
    w.power_cut()
    g = w.grid
    state = dict(g.__dict__)
    fresh = _roundtrip(w, prof)
    h = fresh.grid
    assert h is not None and h.world is fresh
    for k in state:
        if k not in ("world", "meter"):
            assert getattr(h, k) == state[k], k
    assert h.over_ms > 0 and h.import_wh > 0 and h.failed and h.active and h.day == grid_mod.CLOUDS
    assert h.pv_now(fresh.t) == g.pv_now(w.t)
    if with_meter:
        assert h.meter is fresh.bus.slaves[1] and h.meter.source == h.meter_source
        assert fresh.meter is fresh.bus.slaves[0]
        assert h.meter.dead
        fresh.power_restored()
        assert h.meter.dead  # still failed
        fresh.apply("grid-meter-ok")
        assert not h.meter.dead
        kwh = read_floats(2, 0x0048, 1)[0]
        assert kwh == pytest.approx(h.energy_wh()[0] / 1000, rel=1e-6)
    else:
        assert h.meter is None and fresh.bus.slaves == [fresh.meter]


# -- the runner's world event


def _sim(tmp_path, monkeypatch, settings=None, grid=True):
    prof = simtest.devkit()
    prof.pop("grid_meter", None)
    if grid:
        prof["grid_meter"] = {"model": "sdm630", "address": 2}
    return simtest.sim_on(tmp_path, monkeypatch, prof, settings)


_act = simtest.act
_events = simtest.events


def _grid_events(s):
    return [e for e in _events(s) if e["type"] == "world" and "grid" in e]


def test_world_event_every_second_once_a_grid_verb_is_used(tmp_path, monkeypatch):
    s = _sim(tmp_path, monkeypatch, {"main_fuse_a": 20})
    try:
        _act(s, "plug\nwait 3s")
        assert _grid_events(s) == []  # nothing used yet, energy_mode normal
        _act(s, "house 10 0 0\nev-ready 16\nwait 4s")
        ev = _grid_events(s)
        assert [e["t"] for e in ev] == [4000, 5000, 6000, 7000]
        for e in ev:
            assert list(e) == ["t", "type", "grid", "house", "pv_w", "car", "over_ms"]
        assert ev[0]["house"] == [10.0, 0.0, 0.0] and ev[0]["pv_w"] == 0
        last = ev[-1]
        assert last["car"] == [16.0, 16.0, 16.0] and last["grid"] == [26.0, 16.0, 16.0]
        assert 2000 < last["over_ms"] <= 4000  # above the 20 A fuse since the contactor closed
        assert s.world.grid.fuse_a == 20.0
        s.finish()
        end = _events(s)[-1]
        assert end["truth"] > 0 and end["over_ms"] == s.world.grid.over_ms
    finally:
        if not s.events.closed:
            s.events.close()


def test_a_scenario_with_grid_verbs_builds_the_grid_before_the_first_boot(tmp_path, monkeypatch):
    import simrun

    shutil.copy(os.path.join(ROOT, "drivers", "boards", "esp32-tethered-1p.json"), tmp_path / "board.json")
    monkeypatch.chdir(tmp_path)
    s = simrun.Sim(ROOT, None, quiet=True, boot=False, actions=parse("plug\npv 2000"))
    assert s.world.grid is not None and not s.world.grid.active  # the world's bytes, measured with it
    s = simrun.Sim(ROOT, None, quiet=True, boot=False, actions=parse("plug"))
    assert s.world.grid is None


def test_no_world_event_without_grid_verbs(tmp_path, monkeypatch):
    s = _sim(tmp_path, monkeypatch)
    try:
        _act(s, "plug\nwait 1s\nev-ready 16\nwait 3s")
        assert _grid_events(s) == []
        s.finish()
        assert "over_ms" not in _events(s)[-1]  # the end as it always was
    finally:
        if not s.events.closed:
            s.events.close()


def test_world_event_with_a_grid_meter_and_an_energy_mode(tmp_path, monkeypatch):
    s = _sim(tmp_path, monkeypatch, {"main_fuse_a": 25, "energy_mode": "smart"})
    try:
        _act(s, "wait 2s")
        assert [e["t"] for e in _grid_events(s)] == [1000, 2000]
    finally:
        s.events.close()
    # the same settings without a grid meter: nothing to report
    machine.hw_reset(keep_world=False)
    s = _sim(tmp_path, monkeypatch, {"main_fuse_a": 25, "energy_mode": "smart"}, grid=False)
    try:
        _act(s, "wait 2s")
        assert _grid_events(s) == []
    finally:
        s.events.close()
