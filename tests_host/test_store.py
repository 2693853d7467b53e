"""Durable storage: power cut at every single write, nothing acknowledged is lost."""
import json
import os

import pytest

from firmware import store
from firmware.session import SessionKeeper
from flaky_fs import FlakyFS, PowerCut


def story(keeper, acked):
    """A day of sessions; `acked` collects each step the keeper acknowledged (returned from)."""
    for n in range(3):
        keeper.start("TAG%d" % n, 1000 * n)
        acked.append(("start", n + 1))
        for e in range(1, 4):
            keeper.progress(1000 * n + 150 * e)
        keeper.stop("EVDisconnected", 1000 * n + 500)
        acked.append(("stop", n + 1))


def count_ops(tmp):
    fs = FlakyFS()
    story(SessionKeeper(store.Journal(os.path.join(tmp, "j.jnl"), fs)), [])
    return fs.ops


def test_every_write_cut_loses_nothing_acknowledged(tmp_path):
    os.makedirs(tmp_path / "probe")
    total = count_ops(str(tmp_path / "probe"))
    assert total >= 12
    for cut in range(1, total + 1):
        d = tmp_path / ("cut%d" % cut)
        os.makedirs(d)
        path = str(d / "j.jnl")
        fs = FlakyFS(cut)
        keeper = SessionKeeper(store.Journal(path, fs))
        acked = []
        try:
            story(keeper, acked)
        except PowerCut:
            pass
        # reboot: a fresh keeper on the same flash
        after = SessionKeeper(store.Journal(path))
        open_ = after.recover()
        recs = list(after.journal.records())
        starts = {r["n"] for r in recs if r["k"] == "start"}
        stops = {r["n"] for r in recs if r["k"] == "stop"}
        for kind, n in acked:
            assert n in (starts if kind == "start" else stops), "cut %d lost %s %d" % (cut, kind, n)
        started_not_stopped = starts - stops
        assert len(started_not_stopped) <= 1
        if started_not_stopped:
            assert open_ is not None and open_["n"] == started_not_stopped.pop()
            # the station closes it after the reboot, and the journal takes new records
            after.stop("PowerLoss", None)
        after.start("NEXT", 5000)
        after.stop("EVDisconnected", 5100)
        again = SessionKeeper(store.Journal(path))
        assert again.recover() is None
        assert [r for r in again.journal.records() if r["k"] == "start"][-1]["tag"] == "NEXT"


def test_atomic_json_is_old_or_new_after_any_cut(tmp_path):
    path = str(tmp_path / "faults.json")
    store.write_json(path, {"welded": False})
    for cut in (1, 2):
        with pytest.raises(PowerCut):
            store.write_json(path, {"welded": True}, FlakyFS(cut))
        assert store.read_json(path) == {"welded": False}
    store.write_json(path, {"welded": True}, FlakyFS(None))
    assert store.read_json(path) == {"welded": True}


def test_torn_line_ends_the_readable_part_and_is_repaired(tmp_path):
    path = str(tmp_path / "j.jnl")
    j = store.Journal(path)
    j.append({"k": "a"})
    with open(path, "a") as f:
        f.write('deadbeef {"k": "to')  # torn by a power cut
    assert [r["k"] for r in store.Journal(path).records()] == ["a"]
    j2 = store.Journal(path)
    j2.append({"k": "b"})
    assert [r["k"] for r in store.Journal(path).records()] == ["a", "b"]


def test_corrupt_line_is_not_believed(tmp_path):
    path = str(tmp_path / "j.jnl")
    j = store.Journal(path)
    j.append({"k": "a", "e": 100})
    text = open(path).read().replace("100", "900")
    open(path, "w").write(text)
    assert list(store.Journal(path).records()) == []


def test_compaction_keeps_recent_sessions_and_the_open_one(tmp_path):
    k = SessionKeeper(store.Journal(str(tmp_path / "j.jnl")), keep=3)
    for n in range(20):
        k.start("T%d" % n, n * 10)
        k.stop("Local", n * 10 + 5)
    k.start("OPEN", 500)
    k.compact()
    again = SessionKeeper(store.Journal(str(tmp_path / "j.jnl")))
    assert again.recover()["tag"] == "OPEN"
    assert len(again.history()) == 3
    assert json.dumps(again.history()[-1]["tag"]) == '"T19"'
