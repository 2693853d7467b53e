"""A welded contactor across power cuts (README, "Contactor checks and wear"): after any boot the
contactor's state is unknown, so nothing is offered and nothing closes before the auxiliary
contact has shown open, and a weld that is found is latched on flash. Power is cut at every 10 ms
around the weld check and at every flash write after the opening; the firmware must never close
onto the weld. The whole firmware runs in the simulator (tests_host/simrun.py) on CPython, on
virtual time."""
import json
import os
import shutil

import pytest

import simrun
import simtest
from firmware import safety

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WELD_MS = 1000  # weld_check_ms, the default
FLASH = simrun.CountingFS


class Cut(BaseException):
    """The power fails in the middle of a flash write (not an Exception: nothing catches it)."""


class CutFlash:
    """The simulator's flash, but the power fails at write operation number `at` (a write leaves
    half its bytes; a rename or removal does not happen)."""

    def __init__(self, real, at):
        self._real = real
        self.at = at
        self.ops = 0

    def _op(self):
        self.ops += 1
        if self.ops == self.at:
            raise Cut()

    def open(self, path, mode):
        f = self._real.open(path, mode)
        if "r" in mode:
            return f
        fs = self

        class W:
            def write(self, data):
                if fs.ops + 1 == fs.at:
                    f.write(data[: len(data) // 2])
                    f.close()
                fs._op()
                return f.write(data)

            def close(self):
                f.close()
        return W()

    def rename(self, a, b):
        self._op()
        self._real.rename(a, b)

    def remove(self, path):
        self._op()
        self._real.remove(path)

    def __getattr__(self, name):  # exists, mkdir, ilistdir, sync, free, ...
        return getattr(self._real, name)


def new_sim(tmp_path, monkeypatch, cut_at=None):
    shutil.copy(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json"), tmp_path / "board.json")
    monkeypatch.chdir(tmp_path)
    flashes = []

    def flash():
        f = CutFlash(FLASH(), cut_at)
        flashes.append(f)
        return f
    monkeypatch.setattr(simrun, "CountingFS", flash)
    s = simrun.Sim(ROOT, str(tmp_path / "events.jsonl"), quiet=True)
    s.cuts = flashes[0]
    return s


act = simtest.act
events = simtest.events


def closes_after(s, t):
    return [e["t"] for e in events(s) if e["type"] == "contactor" and e["closed"] and e["t"] > t]


def weld_and_open(s):
    """A car charges, the contacts weld, the car pauses: the contactor opens onto the weld."""
    act(s, "plug\nev-ready 16\nwait 3s\nweld\nev-pause\nwait 10ms")
    assert not s.station.charger.contactor and s.world.relay.closed
    return s.T


def resumed(s):
    """After the power came back, the car wants to charge again; nothing must close."""
    act(s, "ev-ready 16\nwait 5s")
    st = s.station
    assert st.charger.faults.active(safety.WELDED)
    assert json.load(open("faults.json")) == {"welded": True}


@pytest.mark.parametrize("after_ms", list(range(0, WELD_MS + 210, 10)))
def test_a_power_cut_around_the_weld_check_never_leads_to_a_close_onto_the_weld(tmp_path, monkeypatch, after_ms):
    s = new_sim(tmp_path, monkeypatch)
    t_open = weld_and_open(s)
    if after_ms:
        act(s, "wait %dms" % after_ms)
    act(s, "power-cut 1s")
    t_cut = s.T
    resumed(s)
    assert closes_after(s, t_cut) == []
    assert s.T - t_open > WELD_MS


def count_writes_after_the_opening(tmp_path, monkeypatch):
    s = new_sim(tmp_path, monkeypatch)
    weld_and_open(s)
    before = s.cuts.ops
    act(s, "wait 3s")
    return before, s.cuts.ops


def test_a_power_cut_at_every_flash_write_after_the_opening_never_leads_to_a_close_onto_the_weld(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    probe.mkdir()
    first, last = count_writes_after_the_opening(probe, monkeypatch)
    assert last - first >= 4  # the latched fault, the session's stop, the energy register
    for k in range(first + 1, last + 1):
        d = tmp_path / ("cut%d" % k)
        d.mkdir()
        s = new_sim(d, monkeypatch, cut_at=k)
        weld_and_open(s)
        with pytest.raises(Cut):
            act(s, "wait 3s")
        s.power_cut(1000)  # the write was torn: RAM is gone
        t_cut = s.T
        resumed(s)
        assert closes_after(s, t_cut) == [], "cut at write %d" % k
        s.events.close()
