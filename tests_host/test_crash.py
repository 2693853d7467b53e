"""A task of the firmware that raises (firmware/station.py): the control task's failure opens the
contactor at once and restarts the board; a slow round's failure is given up and reported, and
only a run of them restarts the board. The whole firmware runs in the simulator (tests_host/simrun.py)
on CPython with the fakes, on virtual time."""
import asyncio
import json
import os
import shutil

import pytest

import machine
import simrun
from firmware import station as station_mod

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RELAY_PIN = 26  # esp32-devkit: active high
PILOT_PIN = 25


@pytest.fixture
def sim(tmp_path, monkeypatch):
    shutil.copy(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json"), tmp_path / "board.json")
    monkeypatch.chdir(tmp_path)
    events = tmp_path / "events.jsonl"
    s = simrun.Sim(ROOT, str(events), quiet=True)
    s.path = events
    yield s
    if s.events is not None and not s.events.closed:
        s.events.close()


def act(s, line):
    from world import scenario

    async def go():
        for lineno, verb, args in scenario.parse(line):
            await s.act(lineno, verb, args)
    asyncio.run(go())


def events(s, kind=None):
    s.events.flush()
    out = [json.loads(line) for line in open(s.path)]
    return [e for e in out if kind is None or e["type"] == kind]


def charging(s):
    act(s, "plug\nwait 2s\nev-ready 16\nwait 10s")
    assert s.station.charger.contactor and machine.hw_level(RELAY_PIN) == 1
    return s.station


class Fails:
    """Stands in for a method: raises `exc` for its first `times` calls (forever with None)."""

    def __init__(self, real, exc, times=None):
        self.real, self.exc, self.left = real, exc, times
        self.calls = 0

    def __call__(self, *args):
        self.calls += 1
        if self.left is None or self.left > 0:
            if self.left is not None:
                self.left -= 1
            raise self.exc
        return self.real(*args)


def test_a_slow_round_out_of_memory_is_given_up_and_charging_goes_on(sim):
    st = charging(sim)
    wh0 = st.snapshot()["energy_wh"]
    st.billing.update = Fails(st.billing.update, MemoryError("memory allocation failed, allocating 944 bytes"), 3)
    act(sim, "wait 10s")
    errs = events(sim, "error")
    assert [(e["where"], e["in_a_row"]) for e in errs] == [("service", 1), ("service", 2), ("service", 3)]
    assert errs[0]["error"] == "MemoryError: memory allocation failed, allocating 944 bytes"
    assert sim.station is st and st.failures == 3 and st._failing == 0
    assert not events(sim, "reset")
    assert st.charger.contactor and machine.hw_level(RELAY_PIN) == 1  # the control task never stopped
    assert st.snapshot()["energy_wh"] > wh0 + 20  # 11 kW for 10 s: about 30 Wh
    assert sim.bugs == []  # out of memory in a slow round is the heap budget, not a bug


def test_slow_rounds_failing_in_a_row_restart_the_board_with_outputs_safe(sim):
    st = charging(sim)
    seen = []

    def reboot(hard):
        # what the outputs are when the board is told to restart
        seen.append((hard, machine.hw_level(RELAY_PIN), machine.hw_pwm(PILOT_PIN)[1], st.charger.contactor))
        sim._reboot_request(hard)
    st.reboot = reboot
    st.billing.update = Fails(st.billing.update, OSError(28, "ENOSPC"))
    act(sim, "wait 5s")
    errs = events(sim, "error")
    assert [e["in_a_row"] for e in errs] == list(range(1, station_mod.SERVICE_FAILS_MAX + 1))
    assert errs[-1]["error"] == "OSError: [Errno 28] ENOSPC"
    assert seen == [(True, 0, 0, True)]  # relay open, pilot at -12 V, whatever the charger thought
    assert [e["cause"] for e in events(sim, "reset")] == ["hard"]
    assert sim.station is not st  # booted again: the journal's session is closed and reported
    stops = [e for e in events(sim, "session") if e.get("event") == "stop"]
    assert len(stops) == 1 and stops[0]["energy_wh"] > 0
    assert len(sim.bugs) == station_mod.SERVICE_FAILS_MAX and "ENOSPC" in sim.bugs[0]


def test_a_control_tick_that_raises_opens_the_contactor_at_once(sim):
    st = charging(sim)
    st.charger.update = Fails(st.charger.update, TypeError("a bug"), 1)
    seen = []

    def reboot(hard):
        seen.append((hard, machine.hw_level(RELAY_PIN), machine.hw_pwm(PILOT_PIN)[1]))
        sim._reboot_request(hard)
    st.reboot = reboot
    sim.step()  # one 10 ms step: the tick raised, the outputs went safe and the restart was asked
    assert seen == [(True, 0, 0)]
    assert [(e["where"], e["error"]) for e in events(sim, "error")] == [("control", "TypeError: a bug")]
    act(sim, "wait 5s")
    assert [e["cause"] for e in events(sim, "reset")] == ["hard"]
    assert sim.bugs == ["12.010s control: TypeError: a bug"]
    # booted again: the session cut short is closed from the journal, as after a power cut
    assert sim.station is not st
    stops = [e for e in events(sim, "session") if e.get("event") == "stop"]
    assert len(stops) == 1 and stops[0]["recovered"] and stops[0]["energy_wh"] > 0


def test_without_a_way_to_restart_the_exception_goes_up_after_the_outputs_went_safe(sim):
    st = charging(sim)
    st.reboot = None
    st.charger.update = Fails(st.charger.update, ZeroDivisionError("x"))
    with pytest.raises(ZeroDivisionError):
        st.tick()
    assert machine.hw_level(RELAY_PIN) == 0 and machine.hw_pwm(PILOT_PIN)[1] == 0


def test_outputs_are_made_safe_when_the_tasks_stop(sim, monkeypatch):
    """Ctrl-C at the REPL (mpremote) ends station.run(): the contactor opens and the pilot goes to
    a steady +12 V before the REPL is the person's."""
    st = charging(sim)

    def run(self):
        assert self is st
        raise KeyboardInterrupt
    monkeypatch.setattr(station_mod.Station, "run", run)
    monkeypatch.setattr(station_mod, "start", lambda root, reboot=None: st)
    with pytest.raises(KeyboardInterrupt):
        station_mod.main(".")
    assert machine.hw_level(RELAY_PIN) == 0
    assert machine.hw_pwm(PILOT_PIN)[1] == 65535
