"""tools/benchmark.py runs end to end (quick mode) and prints every row with its figures.

No timing thresholds: the machines that run the tests are shared and noisy; the benchmark's
figures are for people comparing runs on one machine.
"""
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TRIALS = 20
NUM = r"(\d+(?:\.\d+)?)"
ROWS = ("C -> B (ev-pause) -> open", "state E (pilot-short) -> open", "diode fault -> open",
        "RCD trip -> open (pin IRQ path alone)", "station.tick()", "station.service()")


def test_benchmark_quick(tmp_path):
    out_json = str(tmp_path / "bench.json")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--trials", str(TRIALS),
                        "--json", out_json, "--scenario", os.path.join(HERE, "scenarios", "normal_session.scn")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    text = p.stdout
    assert re.search(r"^machine: .+, \d+ CPUs$", text, re.M), text
    assert re.search(r"^micropython: \d+\.\d+\.\d+.*MicroPython", text, re.M), text
    assert "retry pause skipped" in text

    for label in ROWS:
        m = re.search(r"^%s\s+(\d+)\s+%s\s+%s\s+%s$" % (re.escape(label), NUM, NUM, NUM), text, re.M)
        assert m, "no row %r in:\n%s" % (label, text)
        n, p50, p99, top = int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4))
        assert n == TRIALS or (label == "station.service()" and n >= 1), (label, n)
        assert p50 <= p99 <= top, (label, p50, p99, top)

    m = re.search(r"^peak (\d+)\s+live (\d+)\s+budget 65536\s+code (\d+)$", text, re.M)
    assert m and 0 < int(m.group(1)) <= 65536 and int(m.group(3)) > 0, text
    m = re.search(r"^flash written: (\d+) bytes in (\d+) writes over (\d+) s of charging = (\d+) bytes per hour$",
                  text, re.M)
    assert m and int(m.group(1)) > 0 and int(m.group(3)) >= 590, text
    for model in ("sdm630", "sdm120", "sdm72d", "dtsu666", "ddsu666"):
        m = re.search(r"^%s\s+%d\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$" % (model, TRIALS), text, re.M)
        assert m, "no meter row for %s in:\n%s" % (model, text)
        assert int(m.group(4)) == 0, "%s allocates per poll" % model
    m = re.search(r"^total (\d+) in (\d+) files$", text, re.M)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, text
    assert len(re.findall(r"^  \S+\.mpy\s+\d+$", text, re.M)) >= 3, text

    with open(out_json) as f:
        r = json.load(f)
    assert sorted(r["reaction_us"]) == ["c-b", "diode", "e", "rcd"]
    for s in list(r["reaction_us"].values()) + [r["tick_us"]]:
        assert s["n"] == TRIALS and s["p50"] <= s["p99"] <= s["max"]
    assert r["heap"]["budget"] == 65536 and r["heap"]["peak"] > 0
    assert r["mpy"]["total"] >= sum(size for _name, size in r["mpy"]["largest"]) > 0
