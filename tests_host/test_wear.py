"""Flash wear on the ESP32's LittleFS (`tools/sim.py --flash-fs littlefs`, tests_host/lfs.py).

The power-cut scenario runs through the real path (tools/sim.py, the virtual ESP32, its built-in
back end) with the board's flash on MicroPython's LittleFS v2 over the counting block device;
the counters in the image must agree with the `wear` event, and the files the firmware wrote
before the power cut must be read back by the next boot, a fresh interpreter that mounts the
same image. Everything asserted is a count, none a time.
"""
import json
import os
import struct
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import sim  # noqa: E402
import vm  # noqa: E402

BLOCK, BLOCKS = 4096, 512  # tests_host/lfs.py's geometry (lfs.py imports `vfs`: MicroPython only)
STATS = ("reads", "read_bytes", "progs", "prog_bytes", "setup_erases", "unerased_progs")


def trailer(image):
    """The counters after the partition's bytes: (stats dict, per-block erases)."""
    with open(image, "rb") as f:
        data = f.read()
    assert len(data) == BLOCKS * BLOCK + 4 + 4 * (len(STATS) + BLOCKS)
    assert data[BLOCKS * BLOCK:BLOCKS * BLOCK + 4] == b"WEAR"
    words = struct.unpack_from("<%dI" % (len(STATS) + BLOCKS), data, BLOCKS * BLOCK + 4)
    return dict(zip(STATS, words[:len(STATS)])), list(words[len(STATS):])


def on_board(flash, code):
    """Run `code` on the virtual ESP32 with the image of `flash` mounted as the working directory
    (as the simulator's boots do, without copying the host's files in); its stdout."""
    prelude = "import lfs\n_dev = lfs.attach(%r, copy=False)\n" % os.path.join(flash, sim.LFS_IMAGE)
    p = subprocess.run([vm.build(), "-c", prelude + code], cwd=flash, capture_output=True, text=True,
                       env=dict(os.environ, MICROPYPATH=".frozen"), timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


@pytest.fixture(scope="module")
def power_cut(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("wear"))
    flash = os.path.join(tmp, "flash")
    events = os.path.join(tmp, "events.jsonl")
    cmd = [sys.executable, os.path.join(ROOT, "tools", "sim.py"), "--scenario",
           os.path.join(HERE, "scenarios", "power_cut.scn"), "--flash-fs", "littlefs", "--flash", flash,
           "--events", events, "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout + p.stderr
    with open(events) as f:
        evs = [json.loads(line) for line in f]
    return flash, evs, trailer(os.path.join(flash, sim.LFS_IMAGE))  # (before on_board reads the image)


def test_wear_counters_agree_with_the_image(power_cut):
    flash, evs, (stats, erases) = power_cut
    wear = [e for e in evs if e["type"] == "wear"]
    assert len(wear) == 1
    w = wear[0]
    assert (w["blocks"], w["block_size"]) == (BLOCKS, BLOCK)
    assert w["erases"] > 0 and w["erases"] == sum(erases)
    assert w["worst_erases"] == max(erases) == erases[w["worst_block"]]
    assert w["worst_erases"] >= w["mean_erases"] > 0
    assert w["blocks_erased"] == sum(1 for e in erases if e)
    for k in STATS:
        assert w[k] == stats[k], k
    assert w["setup_erases"] > 0  # mkfs and the seed files, counted apart from the run
    assert w["unerased_progs"] == 0  # LittleFS programs erased bytes only (NOR flash)
    # Every byte the firmware wrote was programmed at least once (LittleFS adds its metadata).
    written = [e for e in evs if e["type"] == "flash"][-1]["bytes_written"]
    assert w["prog_bytes"] >= written > 0


def test_wear_files_survive_the_power_cut(power_cut):
    flash, evs, _counters = power_cut
    # Two boots, each in its own interpreter: the second read what the first wrote to LittleFS.
    assert len([e for e in evs if e["type"] == "boot"]) == 2
    stops = [e for e in evs if e["type"] == "session" and e.get("event") == "stop"]
    assert len(stops) == 2
    assert stops[0].get("recovered") is True  # closed from the journal the first boot left
    assert stops[0]["energy_wh"] > 0
    # The image holds the board's files: the seed (byte for byte) and what the firmware wrote.
    out = on_board(flash, "import os\nprint(sorted(os.listdir('')))\nprint(open('board.json').read())")
    names = eval(out.splitlines()[0])
    assert {"board.json", "settings.json"} <= set(names)
    assert len(names) > 2
    with open(os.path.join(flash, "board.json")) as f:
        assert out.split("\n", 1)[1].rstrip("\n") == f.read().rstrip("\n")


def test_wear_nor_semantics(tmp_path):
    """The device behaves as NOR flash: erase sets 0xFF, a program clears bits only, and a
    program over bytes that are not erased is counted; counters persist in the image."""
    image = str(tmp_path / "t.img")
    code = """
import lfs
d = lfs.Flash(%r)
d.erase(7)
d.writeblocks(7, b"\\x0f" * 32, 0)
d.writeblocks(7, b"\\xf3" * 32, 0)
buf = bytearray(32)
d.readblocks(7, buf, 0)
print(buf[0], d.erases[7], d.stats[2], d.stats[5])
d.writeblocks(9, b"\\x01" * 4096)
d.readblocks(9, buf, 4064)
print(buf[31], d.erases[9])
d.close()
e = lfs.Flash(%r)
print(e.erases[7], e.erases[9], e.stats[5])
""" % (image, image)
    p = subprocess.run([vm.build(), "-c", code], capture_output=True, text=True, cwd=str(tmp_path),
                       env=dict(os.environ, MICROPYPATH=".frozen"), timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == "3 1 2 1"  # 0x0f & 0xf3; one erase; two programs, the second over programmed bytes
    assert lines[1] == "1 1"  # the simple protocol erases the whole block first
    assert lines[2] == "1 1 1"


def test_wear_benchmark_row(power_cut, monkeypatch):
    """tools/benchmark.py's row 10 from the power-cut run's events (the row's own run is the hour
    of charging, minutes long): the figures follow from the wear event."""
    import benchmark

    _flash, evs, _counters = power_cut
    monkeypatch.setattr(benchmark, "_sim_events", lambda *a: evs)
    w = benchmark.wear_figures(benchmark.SCENARIO)
    ev = [e for e in evs if e["type"] == "wear"][0]
    hours = w["charging_s"] / 3600
    assert w["erases"] == ev["erases"] and w["worst_erases"] == ev["worst_erases"]
    assert abs(w["per_hour"]["worst"] * hours - ev["worst_erases"]) < 1e-6
    assert w["years_worst"] == benchmark.ENDURANCE / w["per_hour"]["worst"] / (benchmark.WEAR_HOURS_A_DAY * 365)
    assert w["years_mean"] >= w["years_worst"]
    text = "\n".join(benchmark.wear_table(w))
    assert "worst block" in text and "years" in text
