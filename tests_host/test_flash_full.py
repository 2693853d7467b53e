"""A full or failing flash is a condition the station lives with (firmware/store.py Flash,
firmware/station.py _flash_check): no exception out of the slow task, no restart, charging goes
on; records the flash refuses wait in RAM and are written once it takes them again; no new
session starts meanwhile; the fault "flash" (OCPP OtherError with a vendorErrorCode) comes and
goes by itself; every session still reaches the back end once, in order.

The whole firmware runs on CPython on virtual time: in the simulator (tests_host/simrun.py, whose
CountingFS is the flash with its capacity), or on test_chargepoint's bench with its fake back end."""
import json
import random

import pytest

import machine
import simrun
from firmware import flash as flash_mod
from firmware import journal
from firmware.session import SessionKeeper
from firmware.station import JOURNAL_FILE
from test_chargepoint import Bench, aio
from test_crash import RELAY_PIN, act, charging, events, sim  # noqa: F401 - the fixture

# ---------------------------------------------------------------------------- the simulator


def changes(seq):
    """seq without repeats in a row (an event comes again when only its reason changed)."""
    out = []
    for x in seq:
        if not out or out[-1] != x:
            out.append(x)
    return out


def flash_faults(s):
    return changes([(e["active"], e["vendor"]) for e in events(s, "fault") if e["code"] == "flash"])


def sessions(s, what):
    return [e for e in events(s, "session") if e["event"] == what]


@pytest.mark.parametrize("verb,vendor", [("flash-full", "FlashFull"), ("flash-fail", "FlashError")])
def test_the_station_lives_with_a_flash_that_takes_no_more_writes(sim, verb, vendor):  # noqa: F811
    st = charging(sim)
    act(sim, verb)
    act(sim, "wait 2m")
    # no exception out of a slow round, no restart, and the contactor stayed closed
    assert events(sim, "error") == [] and sim.bugs == []
    assert events(sim, "reset") == [] and sim.station is st
    assert st.charger.contactor and machine.hw_level(RELAY_PIN) == 1
    assert [e["closed"] for e in events(sim, "contactor")] == [True]
    assert flash_faults(sim) == [(True, vendor)]
    assert st.keeper.waiting()  # the session's progress waits in RAM
    act(sim, "unplug\nwait 5s")
    assert len(sessions(sim, "stop")) == 1  # the session ended; its closing record waits
    # No new session while its start could not be recorded: the car waits, nothing is offered.
    act(sim, "plug\nwait 2s\nev-ready 16\nwait 30s")
    assert len(sessions(sim, "start")) == 1 and not st.charger.contactor
    act(sim, verb.replace("full", "ok").replace("fail", "ok"))
    act(sim, "wait 5s")
    fault = [e for e in events(sim, "fault") if e["code"] == "flash"]
    assert flash_faults(sim) == [(True, vendor), (False, None)]
    assert "records wait in RAM" in fault[-2]["reason"]
    assert fault[-1]["refused"] > 0  # periodic data left out meanwhile (energy.json saves): counted
    assert len(sessions(sim, "start")) == 2 and st.charger.contactor  # the waiting car charges now
    # the first session is on flash, closed, with its true energy; the second is open
    k = SessionKeeper(journal.Journal(JOURNAL_FILE))
    assert k.recover()["n"] == 2
    first = k.find(1)
    assert first["stop"] and first["reason"] == "EVDisconnected"
    assert first["e"] - first["e0"] == sessions(sim, "stop")[0]["energy_wh"] > 100
    assert events(sim, "error") == [] and sim.bugs == []


def test_periodic_data_stops_at_the_reserve_and_sessions_go_on(sim):  # noqa: F811
    st = charging(sim)
    act(sim, "flash-full %d" % (flash_mod.RESERVE // 2))  # inside the reserve: room for transaction records
    act(sim, "wait 3m\nunplug\nwait 5s\nplug\nwait 2s\nev-ready 16\nwait 20s")
    assert flash_faults(sim) == [(True, "FlashFull")]
    reason = [e for e in events(sim, "fault") if e["code"] == "flash"][0]["reason"]
    assert "periodic data is left out" in reason
    assert len(sessions(sim, "start")) == 2 and st.charger.contactor and not st.keeper.waiting()
    assert st.flash.refused >= 3  # energy.json every 100 Wh: left out
    with open("energy.json") as f:  # (its last save is from before: the register is safe in the meter)
        assert json.load(f)["register_wh"] < st.metering.register_wh - 300
    act(sim, "flash-ok\nwait 11s")  # (the free space is measured every 10 s)
    assert flash_faults(sim) == [(True, "FlashFull"), (False, None)]


# ------------------------------------------------------------------------- with a back end

class RefusingFS(simrun.CountingFS):
    """The flash, refusing (ENOSPC) every write to a path that contains one of `refuse`."""

    def __init__(self, root):
        super().__init__(root)
        self.refuse = ()

    def _check_path(self, path):
        for part in self.refuse:
            if part in path:
                raise OSError(28, "ENOSPC")

    def open(self, path, mode):
        if "r" not in mode:
            self._check_path(path)
        return super().open(path, mode)

    def rename(self, a, b):
        self._check_path(b)
        super().rename(a, b)


def transactions(b):
    return [c for c in b.backend.calls if c[0] in ("StartTransaction", "StopTransaction")]


@aio
async def test_a_start_transaction_the_outbox_could_not_take_reaches_the_back_end_once_space_returns(tmp_path):
    fs = RefusingFS(str(tmp_path))
    b = await Bench.start(tmp_path, fs=fs)
    fs.refuse = ("/outbox/",)  # the outbox's segment can not grow
    await b.charge()
    await b.idle(120000)
    assert b.st.charger.contactor and b.backend.sent("StartTransaction") == []
    assert b.ocpp_state()["s"] == 0 and b.cp.waiting()
    assert b.backend.statuses(1)[-1] == ("Charging", "OtherError")
    assert [p.get("vendorErrorCode") for p in b.backend.sent("StatusNotification")][-1] == "FlashFull"
    assert b.backend.sent("MeterValues") == []  # nothing of the transaction before its start
    fs.refuse = ()
    await b.idle(70000)
    assert [c[0] for c in transactions(b)] == ["StartTransaction"]
    assert b.ocpp_state()["s"] == 1 and not b.cp.waiting()
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")
    await b.unplug()
    await b.run(1000)
    assert [c[0] for c in transactions(b)] == ["StartTransaction", "StopTransaction"]
    mv = b.backend.sent("MeterValues")
    assert mv and all(p["transactionId"] == b.backend.next_tid for p in mv)


@aio
async def test_a_confirmation_the_flash_refuses_is_kept_and_nothing_is_sent_twice(tmp_path):
    fs = RefusingFS(str(tmp_path))
    b = await Bench.start(tmp_path, up=False, fs=fs)
    await b.charge()
    await b.idle(300000)  # offline: the StartTransaction and five MeterValues queued
    assert b.cp.outbox.pending() == 6
    fs.refuse = ("/outbox/state.json",)  # the outbox can not record confirmations
    await b.up()
    await b.idle(60000)
    sent = [c for c in b.backend.calls if c[0] in ("StartTransaction", "MeterValues")]
    assert [c[0] for c in sent] == ["StartTransaction"]  # sent once, confirmed in RAM, then it waits
    assert b.cp.outbox.waiting() and b.backend.statuses(1)[-1][1] == "OtherError"
    fs.refuse = ()
    await b.idle(20000)
    sent = [c for c in b.backend.calls if c[0] in ("StartTransaction", "MeterValues")]
    assert [c[0] for c in sent] == ["StartTransaction"] + ["MeterValues"] * 6
    stamps = [json.dumps(c[1], sort_keys=True) for c in sent]
    assert len(set(stamps)) == len(stamps)  # nothing twice
    assert b.cp.outbox.pending() == 0 and not b.cp.outbox.waiting()
    assert b.backend.statuses(1)[-1] == ("Charging", "NoError")


class FillingFS(simrun.CountingFS):
    """The flash, full from write number `at` on (a write that needs space fails ENOSPC)."""

    def __init__(self, root, at):
        super().__init__(root)
        self.at = at
        self.full_since = None

    def open(self, path, mode):
        if "r" not in mode and self.at is not None and self.writes >= self.at:
            self.at = None
            self.fill(0)
        return super().open(path, mode)


@pytest.mark.parametrize("seed", [1, 2, 3])
@aio
async def test_a_flash_that_fills_at_a_random_write_and_empties_again_loses_no_session(tmp_path, seed):
    rng = random.Random(seed)
    fs = FillingFS(str(tmp_path), None)
    b = await Bench.start(tmp_path, fs=fs)
    got = []
    faults = []
    b.st.add_sink(lambda kind, f, at: got.append(dict(f)) if kind == "session" else None)
    b.st.add_sink(lambda kind, f, at: faults.append(f["active"]) if kind == "fault" and f["code"] == "flash" else None)
    writes = 0
    for rnd in range(10):
        if rnd % 3 == 0:  # fill at a random write among the next ones, empty again some minutes later
            fs.at = fs.writes + rng.randrange(1, 60)
            heal = b.T + rng.randrange(60, 600) * 1000
        if rng.random() < 0.3:
            await b.down()
        b.act("plug", 32)
        await b.run(1500)
        b.act("ev-ready", 16)
        for _ in range(rng.randrange(60, 300)):
            await b.idle(1000)
            if heal is not None and b.T >= heal and fs.capacity < simrun.CAPACITY:
                fs.heal()
                heal = None
        b.act("unplug")
        await b.run(500)
        if not b.link.connected:
            await b.up()
        await b.idle(rng.randrange(5, 60) * 1000)
        writes = fs.writes
    fs.heal()
    if not b.link.connected:
        await b.up()
    await b.idle(120000)
    assert writes > 0
    starts = [e for e in got if e["event"] == "start"]
    stops = [e for e in got if e["event"] == "stop"]
    assert len(starts) == len(stops) >= 5
    assert [e["n"] for e in starts] == list(range(1, len(starts) + 1))
    # every session reached the back end exactly once, in order, with its true energy
    tx = transactions(b)
    assert [c[0] for c in tx] == ["StartTransaction", "StopTransaction"] * len(starts)
    tids = []
    for i in range(len(starts)):
        start, stop = tx[2 * i][1], tx[2 * i + 1][1]
        assert start["meterStart"] == starts[i]["meter_wh"] and stop["meterStop"] == stops[i]["meter_wh"]
        tids.append(stop["transactionId"])
    assert tids == list(range(1001, 1001 + len(starts)))
    # meter values: only of the transaction that runs, after its start, never twice
    mv = [json.dumps(p, sort_keys=True) for p in b.backend.sent("MeterValues")]
    assert len(set(mv)) == len(mv)
    assert all(p["transactionId"] in tids for p in b.backend.sent("MeterValues"))
    assert b.cp.outbox.pending() == 0 and not b.cp.waiting() and not b.st.keeper.waiting()
    assert b.st.flash_fault is None
    faults = changes(faults)
    assert len(faults) >= 4 and faults == [True, False] * (len(faults) // 2)  # filled and emptied again
