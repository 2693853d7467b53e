"""Durable storage and the session journal: power cut at every single write, nothing acknowledged
is lost; the flash the journal takes is bounded, and what a session writes does not grow with the
sessions before it."""
import json
import os

import pytest

from firmware import journal
from firmware import session as session_mod
from firmware import store
from firmware.session import SessionKeeper
from flaky_fs import FlakyFS, PowerCut
from offdevice import history
from portable import exists, getsize, join, makedirs

T0 = 1772438400  # 2026-03-02 08:00 UTC


def keeper(path, fs=None, **kw):
    return SessionKeeper(journal.Journal(path, fs), **kw)


def story(k, acked):
    """Five sessions with progress in time and energy (keep=2: the journal rotates twice);
    `acked` collects each step the keeper acknowledged (returned from)."""
    t = T0
    for n in range(5):
        k.start("TAG%d" % n, 1000 * n, t)
        acked.append(("start", n + 1))
        for e in range(1, 4):
            t += 30
            k.progress(1000 * n + 150 * e, None, t)
            acked.append(("progress", n + 1, 1000 * n + 150 * e, t))
        k.stop("EVDisconnected", 1000 * n + 500, t=t)
        acked.append(("stop", n + 1))


def sessions(k):
    """{n: find(n)} of every session the keeper knows after recover()."""
    out = {}
    for n in range(1, k.last_n() + 1):
        s = k.find(n)
        if s is not None:
            out[n] = s
    return out


@pytest.mark.parametrize("mode", ["torn", "after"])
def test_every_write_cut_loses_nothing_acknowledged(fastdir, mode):
    probe = FlakyFS()
    makedirs(fastdir / "probe")
    story(keeper(str(fastdir / "probe" / "j.log"), probe, keep=2), [])
    total = probe.ops
    assert total >= 25
    for cut in range(1, total + 1):
        d = fastdir / ("%s%d" % (mode, cut))
        makedirs(d)
        path = str(d / "j.log")
        acked = []
        with pytest.raises(PowerCut):
            story(keeper(path, FlakyFS(cut, mode), keep=2), acked)
        after = keeper(path, keep=2)  # reboot: a fresh keeper on the same flash
        open_ = after.recover()
        known = sessions(after)
        for step in acked:
            n = step[1]
            if n < after.last_n() - 2:
                continue  # older than the keep = 2 closed sessions kept at least
            assert n in known, "cut %d lost session %d" % (cut, n)
            if step[0] == "stop":
                assert known[n].get("stop"), "cut %d lost the stop of %d" % (cut, n)
            if step[0] == "progress" and not known[n].get("stop"):
                assert open_["e"] >= step[2] and open_["ta"] >= step[3]
        still_open = [n for n in known if not known[n].get("stop")]
        assert len(still_open) <= 1, "cut %d: two open sessions" % cut
        if still_open:
            assert open_ is not None and open_["n"] == still_open[0] == after.last_n()
            after.stop("PowerLoss", None)  # the station closes it after the reboot
        else:
            assert open_ is None
        after.start("NEXT", 5000, T0 + 9999)
        after.stop("EVDisconnected", 5100)
        again = keeper(path, keep=2)
        assert again.recover() is None
        assert history(again, 1)[-1]["tag"] == "NEXT" and again.last_n() == after.last_n()
        assert len(history(again, 10)) >= min(2, after.last_n())  # between keep and 2 x keep closed sessions


def test_atomic_json_is_old_or_new_after_any_cut(tmp_path):
    path = str(tmp_path / "faults.json")
    store.write_json(path, {"welded": False})
    for cut in (1, 2):
        with pytest.raises(PowerCut):
            store.write_json(path, {"welded": True}, FlakyFS(cut))
        assert store.read_json(path) == {"welded": False}
    store.write_json(path, {"welded": True}, FlakyFS(None))
    assert store.read_json(path) == {"welded": True}


def test_a_torn_line_is_skipped_and_never_rewritten(tmp_path):
    path = str(tmp_path / "j.log")
    j = journal.Journal(path)
    j.append({"k": "a"})
    with open(path, "ab") as f:
        f.write(b'deadbeef 0010 {"k": "to')  # torn by a power cut
    size = getsize(path)
    assert [r["k"] for r in journal.Journal(path).records()] == ["a"]
    j2 = journal.Journal(path)
    j2.append({"k": "b"})
    with open(path, "rb") as f:
        assert f.read(size) == open(path, "rb").read(size)  # what was there stays as it was
    assert [r["k"] for r in journal.Journal(path).records()] == ["a", "b"]


def test_a_corrupt_record_is_not_believed_and_the_next_ones_are(tmp_path):
    path = str(tmp_path / "j.log")
    j = journal.Journal(path)
    j.append({"k": "a", "e": 100})
    j.append({"k": "b", "e": 200})
    text = open(path).read().replace("100", "900")
    open(path, "w").write(text)
    assert list(journal.Journal(path).records()) == [{"k": "b", "e": 200}]


def test_the_journal_keeps_keep_to_twice_keep_closed_sessions_and_the_open_one(tmp_path):
    k = keeper(str(tmp_path / "j.log"), keep=3)
    for n in range(20):
        k.start("T%d" % n, n * 10)
        k.stop("Local", n * 10 + 5)
    k.start("OPEN", 500)
    again = keeper(str(tmp_path / "j.log"), keep=3)
    assert again.recover()["tag"] == "OPEN" and again.last_n() == 21
    hist = history(again, 50)
    assert 3 <= len(hist) <= 6 and [h["tag"] for h in hist][-3:] == ["T17", "T18", "T19"]
    assert json.dumps(hist[-1]["tag"]) == '"T19"'
    assert again.find(19)["reason"] == "Local" and again.find(1) is None


# -- bounds --------------------------------------------------------------------------------------

def flash_bytes(d):
    return sum(getsize(join(d, f)) for f in os.listdir(d))


def test_flash_use_is_bounded_and_bytes_written_per_session_do_not_grow(fastdir):
    """200 sessions of 30 kWh at 11 kW (progress every 100 Wh, and every minute): the journal's
    files never take more than session.BOUND, and every session writes the same bytes, the
    200th as the 10th."""
    fs = FlakyFS()  # counts the bytes written
    k = keeper(str(fastdir / "sessions.log"), fs)
    k.recover()
    wh, t = 10 ** 8, T0  # (numbers of the same length all along: the same bytes each time)
    written = []
    most = 0
    for n in range(200):
        before = fs.bytes
        k.start("CARD%04d" % n, wh, t, {"g": "FLEET", "tf": "day"})
        for _ in range(300):  # 30 kWh: 100 Wh every 33 s
            wh += 100
            t += 33
            k.progress(wh, lambda: {"t": t, "x": wh * 3}, t)
        k.stop("EVDisconnected", wh, t=t, extra={"cost": wh * 3})
        written.append(fs.bytes - before)
        most = max(most, flash_bytes(str(fastdir)))
        t += 600
    assert most <= session_mod.BOUND
    assert most <= 20000  # the figure of session.py's docstring
    assert max(written[99:]) == min(written[99:])  # sessions 100 to 200 (numbers of one length)
    assert written[99] - written[10] <= 400  # session 100 vs 11: its number has one more digit in each write
    assert written[-1] < 300 * 170  # ~155 bytes per progress step, nothing more
    assert history(k, 1)[-1]["n"] == 200


def test_a_record_stays_within_max_record_whatever_the_strings(tmp_path):
    fs = FlakyFS()
    k = keeper(str(tmp_path / "j.log"), fs)
    long = "\u00e9\u4e2d" * 40
    k.start(long, 10 ** 11, 2 ** 31, {"g": long, "tf": long})
    k.progress(10 ** 11 + 5, lambda: {"t": 2 ** 31, "x": 10 ** 12}, 2 ** 31)
    assert getsize(k.open_path) <= session_mod.MAX_RECORD
    k.stop(long, 10 ** 11 + 10 ** 9, True, 2 ** 31, {"cost": 10 ** 12})
    assert getsize(str(tmp_path / "j.log")) <= session_mod.MAX_RECORD
    assert history(k, 1)[-1]["tag"] == long[:session_mod.STR_MAX]


# -- time stamps ------------------------------------------------------------------------------

def test_progress_every_minute_without_energy_and_recover_tells_when_last_alive(tmp_path):
    path = str(tmp_path / "j.log")
    fs = FlakyFS()
    k = keeper(path, fs)
    k.start("CAR", 5000, T0)
    ops = fs.ops
    for s in range(1, 301):  # five minutes, no energy flows (the car paused), a round a second
        k.progress(5000, None, T0 + s)
    assert fs.ops - ops == 5 * 2  # one replace (write + rename) a minute
    for s in range(301, 331):
        k.progress(5000, None, T0 + s)
    # the power goes at T0 + 330
    k2 = keeper(path)
    s = k2.recover()
    assert s["n"] == 1 and s["e"] == 5000 and s["ta"] == T0 + 300 and s["t"] == T0


def test_recover_falls_back_to_the_start_time(tmp_path):
    path = str(tmp_path / "j.log")
    keeper(path).start("CAR", 5000, T0)
    assert keeper(path).recover()["ta"] == T0
    path2 = str(tmp_path / "k.log")
    k = keeper(path2)
    k.start("CAR", None, None)  # no meter reading and no time yet
    k.progress(7000, None, None)  # the first reading: recorded, it is the start energy
    s = keeper(path2).recover()
    assert s["e0"] == s["e"] == 7000 and s["ta"] is None


def test_priced_progress_keeps_the_bill_with_its_time(tmp_path):
    path = str(tmp_path / "j.log")
    k = keeper(path)
    k.start("CAR", 0, T0, {"g": "G", "tf": "night"})
    k.progress(100, lambda: {"t": T0 + 40, "x": 31}, T0 + 40)
    s = keeper(path).recover()
    assert (s["x"], s["te"], s["ta"], s["g"], s["tf"]) == (31, T0 + 40, T0 + 40, "G", "night")


# -- a full flash ------------------------------------------------------------------------------

class FullFS(FlakyFS):
    """The real filesystem, but while `full` every write fails ENOSPC (nothing is written)."""

    full = False

    def _tick(self):
        self.ops += 1
        if self.full:
            raise OSError(28, "ENOSPC")
        return False

    def rename(self, a, b):
        self._tick()
        os.rename(a, b)


def test_records_the_flash_refuses_wait_in_ram_and_are_written_in_order(tmp_path):
    path = str(tmp_path / "j.log")
    fs = FullFS()
    k = keeper(path, fs, keep=2)
    k.start("A", 0, T0)
    k.stop("Local", 100, t=T0 + 60)
    fs.full = True
    s = k.start("B", 100, T0 + 100)  # nothing raises
    assert s["n"] == 2 and k.waiting() and k.error.args[0] == 28 and k.started_n() == 1
    k.progress(300, None, T0 + 200)
    k.stop("EVDisconnected", 400, t=T0 + 300)
    assert k.waiting() and k.closed_n() == 1
    assert keeper(path, keep=2).recover() is None  # (a power cut now would lose session 2)
    assert not k.flush()
    fs.full = False
    assert k.flush() and not k.waiting() and k.error is None
    assert k.started_n() == k.closed_n() == 2
    again = keeper(path, keep=2)
    assert again.recover() is None
    assert again.find(2) == {"tag": "B", "e0": 100, "t": T0 + 100, "stop": True, "e": 400,
                             "reason": "EVDisconnected", "ts": T0 + 300}
    assert not exists(k.open_path)


# -- the journal of firmware before 0.5 ----------------------------------------------------------

def legacy_line(rec):
    from binascii import crc32

    body = json.dumps(rec)
    return "%08x %s\n" % (crc32(body.encode()) & 0xFFFFFFFF, body)


def test_a_journal_of_the_old_format_is_carried_over_once(tmp_path):
    old = str(tmp_path / "sessions.jnl")
    with open(old, "w") as f:
        for n in (1, 2):
            f.write(legacy_line({"k": "start", "n": n, "tag": "T%d" % n, "e0": n * 1000, "t": T0 + n}))
            f.write(legacy_line({"k": "e", "n": n, "e": n * 1000 + 150}))
            f.write(legacy_line({"k": "stop", "n": n, "reason": "Local", "e": n * 1000 + 200, "wh": 200,
                                 "t": T0 + n + 50, "cost": 77}))
        f.write(legacy_line({"k": "start", "n": 3, "tag": "T3", "e0": 3000, "t": T0 + 3}))
        f.write(legacy_line({"k": "e", "n": 3, "e": 3100, "t": T0 + 90, "x": 5}))
    path = str(tmp_path / "sessions.log")
    k = SessionKeeper(journal.Journal(path), legacy=old)
    s = k.recover()
    assert (s["n"], s["tag"], s["e0"], s["e"], s["t"], s["ta"], s["x"], s["te"]) == \
        (3, "T3", 3000, 3100, T0 + 3, T0 + 90, 5, T0 + 90)
    assert not exists(old)
    assert [h["cost"] for h in history(k)] == [77, 77]
    assert k.find(2) == {"tag": "T2", "e0": 2000, "t": T0 + 2, "stop": True, "e": 2200, "reason": "Local",
                         "ts": T0 + 52}
    again = SessionKeeper(journal.Journal(path), legacy=old)
    assert again.recover()["n"] == 3 and len(history(again)) == 2


def test_a_document_holding_a_long_list_is_written_an_element_at_a_time_and_reads_back(tmp_path):
    # (firmware/encoder.py: Many) eight charging profiles of 24 periods are 4.8 KB of JSON: a
    # fragmented heap has no block that size, so the list goes out an element at a time
    from firmware import Many

    path = join(str(tmp_path), "p.json")
    recs = [[n, "TxDefaultProfile", [[600 * i, 60 + n, 3] for i in range(24)], None] for n in range(8)]
    doc = {"v": 1, "p": Many(recs), "empty": Many(), "nested": {"q": Many([{"a": "\u00e9\""}])}}
    store.write_json(path, doc)
    with open(path) as f:
        text = f.read()
    assert json.loads(text) == {"v": 1, "p": recs, "empty": [], "nested": {"q": [{"a": "\u00e9\""}]}}
    assert store.read_json(path, cap=8192) == json.loads(text)
