"""The simulated phase switch (1p/3p switching): a board profile's `phase_switch` section is a
second contactor whose coil connects L2 and L3 to the outlet (world/phase_switch.py, the
World's phases_now): the charger's meter, the world's truth and the grid model
follow it, the world counts its changes and those made with the main contacts closed, the counters
survive the snapshot of a power cut, and the runner's `world` events report them.

The firmware's outputs are played by the fake `machine` objects on virtual time (as in
test_world.py); the runner's part runs the real firmware on CPython (as in test_grid_world.py).
"""
import os

import machine
import simtest
from simtest import WorldBench as Bench, read_floats
import pytest

from drivers import board
from world.world import World

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PWM_PIN, RELAY, SWITCH, UART_ID = 25, 26, 15, 2


@pytest.fixture(autouse=True)
def fresh_board():
    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


def profile(active_high=True, switch=True, grid=False):
    p = board.load("esp32-devkit")
    p.pop("grid_meter", None)
    if grid:
        p["grid_meter"] = {"model": "sdm630", "address": 2}
    if switch:
        p["phase_switch"] = {"pin": SWITCH, "active_high": active_high}
    return p


def outlet(w):
    """The outlet's phases: the phase switch's, else the board's."""
    ps = w.phase_switch
    return w.phases if ps is None else ps.phases()


# -- the outlet's phases follow the coil


@pytest.mark.parametrize("active_high", [True, False])
def test_the_outlets_phases_follow_the_pin(active_high):
    w = World(profile(active_high))
    w.advance(0)
    ps = w.phase_switch
    assert ps is not None and ps.pin == SWITCH and ps.active_high is active_high
    # power-up: the pin drives nothing yet, the coil is released, whichever its active level
    assert not ps.coil and outlet(w) == 1 and ps.switches == 0
    on, off = (1, 0) if active_high else (0, 1)
    pin = machine.Pin(SWITCH, machine.Pin.OUT, value=off)
    w.advance(10)
    assert outlet(w) == 1 and ps.switches == 0
    pin.value(on)  # the world hears of it at once (hw_on_output)
    assert ps.coil and outlet(w) == 3 and ps.switches == 1
    w.advance(20)
    assert outlet(w) == 3
    pin.value(off)
    assert outlet(w) == 1 and ps.switches == 2
    pin.value(on)
    assert outlet(w) == 3 and ps.switches == 3
    assert ps.switch_under_load == 0  # the main contacts never closed
    # a power cut releases the coil (and counts as a change, never as one under load)
    w.power_cut()
    assert outlet(w) == 1 and ps.switches == 4 and ps.switch_under_load == 0
    w.advance(2000)
    machine.hw_reset(machine.PWRON_RESET)
    w.power_restored()
    assert outlet(w) == 1  # the pin forgotten: released until the firmware drives it
    w.advance(2010)
    assert outlet(w) == 1 and ps.switches == 4
    pin = machine.Pin(SWITCH, machine.Pin.OUT, value=on)  # (active low: no edge, seen at advance)
    w.advance(2020)
    assert outlet(w) == 3 and ps.switches == 5


def test_an_open_drain_pin_let_go_or_an_input_drives_no_coil():
    w = World(profile(active_high=False))
    w.advance(0)
    pin = machine.Pin(SWITCH, machine.Pin.OPEN_DRAIN, value=1)  # let go: floats
    w.advance(10)
    assert outlet(w) == 1
    pin.value(0)  # pulls the coil's low side down: energised (no edge on the line: seen at advance)
    w.advance(20)
    assert outlet(w) == 3
    pin.init(machine.Pin.IN)  # not driven any more
    w.advance(30)
    assert outlet(w) == 1


def test_a_three_phase_car_draws_on_l1_only_while_the_switch_is_released():
    b = Bench(profile())
    w = b.w
    b.charge(16, 3)  # the switch released: one phase at the outlet
    assert outlet(w) == 1 and w.phases_now() == 1 and w.car.phases == 3
    assert read_floats(1, 0x0006, 3) == [16.0, 0.0, 0.0]  # L1, L2, L3 amps
    assert read_floats(1, 0x000C, 3) == [pytest.approx(3680.0), 0.0, 0.0]
    assert read_floats(1, 0x0034, 1) == [pytest.approx(3680.0)]  # the total
    assert read_floats(1, 0x0000, 3) == [230.0, 230.0, 230.0]  # (the meter sits before the switch)
    t0 = w.truth_wh
    b.run(3600 * 1000, step=1000)
    assert w.truth_wh - t0 == pytest.approx(230 * 16, rel=1e-9)
    assert w.status()["phases"] == 1
    # three phases, the contactor opened first
    b.open()
    b.switch(True)
    b.relay.value(1)
    b.run(30)
    assert w.phases_now() == 3 and read_floats(1, 0x0006, 3) == [16.0, 16.0, 16.0]
    assert read_floats(1, 0x0034, 1) == [pytest.approx(3 * 3680.0)]
    t1 = w.truth_wh
    b.run(3600 * 1000, step=1000)
    assert w.truth_wh - t1 == pytest.approx(230 * 16 * 3, rel=1e-9)
    # a one-phase car draws on one phase whatever the switch
    w.apply("ev-ready", [16, 1])
    assert w.phases_now() == 1 and read_floats(1, 0x0006, 3) == [16.0, 0.0, 0.0]
    assert w.phase_switch.switch_under_load == 0 and w.phase_switch.switches == 1


def test_the_grid_model_follows_the_outlet():
    b = Bench(profile(grid=True))
    w = b.w
    w.apply("house", [2, 2, 2])
    b.switch(True)
    b.charge(10, 3)
    r = w.grid.report()
    assert r["car"] == [10.0, 10.0, 10.0] and r["grid"] == [12.0, 12.0, 12.0] and r["phases"] == 3
    b.open()
    b.switch(False)
    b.relay.value(1)
    b.run(30)
    r = w.grid.report()
    assert r["car"] == [10.0, 0.0, 0.0] and r["grid"] == [12.0, 2.0, 2.0] and r["phases"] == 1
    imp0 = w.grid.energy_wh()[0]
    b.run(3600 * 1000, step=1000)
    assert w.grid.energy_wh()[0] - imp0 == pytest.approx(230 * (10 + 6), abs=0.01)
    assert w.phase_switch.switch_under_load == 0


# -- the safety bookkeeping


def test_a_change_under_load_is_counted_and_the_car_keeps_drawing_on_l1():
    b = Bench(profile())
    w = b.w
    ps = w.phase_switch
    b.switch(True)  # contacts open: a change, not under load
    assert (ps.switches, ps.switch_under_load) == (1, 0)
    b.charge(16, 3)
    assert w.phases_now() == 3
    e0 = w._energy
    b.switch(False)  # a firmware fault: the switch drops while the car draws
    assert (ps.switches, ps.switch_under_load) == (2, 1)
    assert w.amps() == 16.0 and w.phases_now() == 1
    assert read_floats(1, 0x0006, 3) == [16.0, 0.0, 0.0]
    b.run(1000)
    assert w._energy - e0 == 160 * 1 * 1000  # the car draws on what is there
    b.switch(True)  # and back: under load again
    assert (ps.switches, ps.switch_under_load) == (3, 2)
    # the contacts, not the command: the contactor takes 20 ms to open
    b.relay.value(0)
    b.switch(False)
    assert (ps.switches, ps.switch_under_load) == (4, 3)
    b.run(20)
    assert not w.relay.closed
    b.switch(True)
    assert (ps.switches, ps.switch_under_load) == (5, 3)
    # and closing takes 30 ms: a change right after the command is made with the contacts open
    b.relay.value(1)
    b.switch(False)
    assert (ps.switches, ps.switch_under_load) == (6, 3)
    b.run(30)
    assert w.relay.closed
    # a welded contactor: its contacts stay closed, a change is under load
    w.apply("weld")
    b.relay.value(0)
    b.run(100)
    assert w.relay.closed
    b.switch(True)
    assert (ps.switches, ps.switch_under_load) == (7, 4)


def test_a_power_cut_under_load_is_not_a_change_under_load():
    b = Bench(profile())
    w = b.w
    b.switch(True)
    b.charge(16, 3)
    w.power_cut()  # both coils drop together, with no mains: nothing is broken under load
    ps = w.phase_switch
    assert outlet(w) == 1 and (ps.switches, ps.switch_under_load) == (2, 0)
    assert w.relay.closed  # (the main contacts open 20 ms later)
    machine.hw_reset(machine.PWRON_RESET)  # the pins fall: the world is told, nothing changes
    assert (ps.switches, ps.switch_under_load) == (2, 0)
    b.run(100)
    assert not w.relay.closed


# -- snapshot across a power cut



def test_the_counters_survive_the_snapshot():
    prof = profile(active_high=False)
    b = Bench(prof)
    w = b.w
    b.switch(True)
    b.charge(16, 3)
    b.switch(False)  # under load
    b.open()
    b.switch(True)
    b.relay.value(1)
    b.run(30)
    w.power_cut()
    b.run(100)  # the main contacts open too
    ps = w.phase_switch
    assert (ps.switches, ps.switch_under_load, ps.coil) == (4, 1, False)
    fresh = simtest.snapshot_roundtrip(w, prof)
    h = fresh.phase_switch
    assert h is not ps and type(h) is type(ps)
    assert (h.switches, h.switch_under_load, h.coil) == (4, 1, False)
    assert (h.pin, h.active_high) == (SWITCH, False)
    assert h.world is fresh and h.on_pin == h._on_pin
    fresh.power_restored()
    assert outlet(fresh) == 1
    fresh.advance(0)
    pin = machine.Pin(SWITCH, machine.Pin.OUT, value=1)  # the firmware boots: released
    pin.value(0)  # the restored world hears the pin
    assert outlet(fresh) == 3 and (h.switches, h.switch_under_load) == (5, 1)


# -- a board without a phase switch


def test_a_board_without_a_phase_switch_is_as_before():
    b = Bench(profile(switch=False, grid=True))
    w = b.w
    assert w.phase_switch is None and outlet(w) == 3
    machine.Pin(SWITCH, machine.Pin.OUT, value=0)  # the pin means nothing here
    b.charge(16, 3)
    assert w.phases_now() == 3 and read_floats(1, 0x0006, 3) == [16.0, 16.0, 16.0]
    assert list(w.grid.report()) == ["grid", "house", "pv_w", "car", "over_ms"]
    w.apply("ev-ready", [16, 1])
    assert w.phases_now() == 1
    p = board.load("esp32-tethered-1p")
    p.pop("meter", None)
    machine.hw_reset(keep_world=False)
    w = World(p)
    assert w.phase_switch is None and outlet(w) == 1 and w.phases_now() == 1


# -- the runner's events


def _sim(tmp_path, monkeypatch, switch):
    prof = simtest.devkit()
    prof.pop("grid_meter", None)
    if switch:
        prof["phase_switch"] = {"pin": SWITCH, "active_high": True}
    return simtest.sim_on(tmp_path, monkeypatch, prof)


_act = simtest.act
_events = simtest.events


@pytest.mark.parametrize("switch", [True, False])
def test_the_runners_events_carry_the_phase_switch_only_with_one(tmp_path, monkeypatch, switch):
    s = _sim(tmp_path, monkeypatch, switch)
    try:
        _act(s, "house 1 1 1\nplug\nwait 1s\nev-ready 16\nwait 5s")
        ev = [e for e in _events(s) if e["type"] == "world" and "grid" in e]
        assert len(ev) >= 5
        keys = ["t", "type", "grid", "house", "pv_w", "car", "over_ms"]
        for e in ev:
            assert list(e) == (keys + ["phases"] if switch else keys)
        assert s.world.amps() == 16.0
        if switch:
            assert ev[-1]["phases"] == outlet(s.world)
            n = outlet(s.world)
            assert ev[-1]["car"] == [16.0] * n + [0.0] * (3 - n)
        s.finish()
        end = _events(s)[-1]
        assert end["type"] == "world" and end["truth"] > 0
        if switch:
            ps = s.world.phase_switch
            assert list(end) == ["t", "type", "truth", "over_ms", "switches", "switch_under_load"]
            assert end["switches"] == ps.switches and end["switch_under_load"] == 0
        else:
            assert list(end) == ["t", "type", "truth", "over_ms"]
    finally:
        if not s.events.closed:
            s.events.close()
