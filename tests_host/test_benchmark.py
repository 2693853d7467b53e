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
BUDGET = 96 * 1024  # the board's whole heap: tools/sim.py DEFAULT_HEAP
TRIALS = 20
NUM = r"(\d+(?:\.\d+)?)"
# The OCPP rows, small: every row runs, in about a minute.
DROPS = 30
QUEUED = 50
CALLS = 50
HANDSHAKES = 3
SOAK = 2  # sessions of 1-2 kWh: the soak's machinery, not its figures
QUICK_OCPP = ["--drops", str(DROPS), "--stall-seconds", "1.5", "--handshakes", str(HANDSHAKES),
              "--queued", str(QUEUED), "--calls", str(CALLS), "--soak-sessions", str(SOAK), "--soak-kwh", "1-2"]
STALL_ROWS = ("link idle (ws, connected): baseline", "TLS handshakes (wss, reconnects)",
              "reconnect storm (drops, then refused)", "largest frames (8 KB call, 16 KB frame)",
              "incoming calls back to back", "outbox drain and compaction")
ROWS = ("C -> B (ev-pause) -> open", "state E (pilot-short) -> open", "diode fault -> open",
        "RCD trip -> open (pin IRQ path alone)", "station.tick()", "station.service()")


def test_benchmark_quick(tmp_path):
    out_json = str(tmp_path / "bench.json")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "benchmark.py"), "--trials", str(TRIALS),
                        "--json", out_json, "--scenario", os.path.join(HERE, "scenarios", "normal_session.scn")]
                       + QUICK_OCPP, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    text = p.stdout
    assert re.search(r"^machine: .+, \d+ CPUs$", text, re.M), text
    assert re.search(r"^micropython: \d+\.\d+\.\d+.*MicroPython", text, re.M), text
    assert "retry pause skipped" in text
    assert re.search(r"^firmware: \S+", text, re.M), text

    for label in ROWS:
        m = re.search(r"^%s\s+(\d+)\s+%s\s+%s\s+%s$" % (re.escape(label), NUM, NUM, NUM), text, re.M)
        assert m, "no row %r in:\n%s" % (label, text)
        n, p50, p99, top = int(m.group(1)), float(m.group(2)), float(m.group(3)), float(m.group(4))
        assert n == TRIALS or (label == "station.service()" and n >= 1), (label, n)
        assert p50 <= p99 <= top, (label, p50, p99, top)

    m = re.search(r"^peak (\d+)\s+live (\d+)\s+budget %d\s+\(world beside it (\d+)\)$" % BUDGET, text, re.M)
    assert m and 0 < int(m.group(1)) <= BUDGET and int(m.group(3)) > 0, text
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
    assert r["heap"]["budget"] == BUDGET and r["heap"]["peak"] > 0
    assert r["mpy"]["total"] >= sum(size for _name, size in r["mpy"]["largest"]) > 0

    # 6. control-loop stalls while the OCPP link works
    assert "6. OCPP link: control-loop stall" in text
    for label in STALL_ROWS:
        m = re.search(r"^%s\s+(\d+)\s+%s\s+%s\s+%s  \S" % (re.escape(label), NUM, NUM, NUM), text, re.M)
        assert m, "no row %r in:\n%s" % (label, text)
        assert int(m.group(1)) > 0 and float(m.group(2)) <= float(m.group(3)) <= float(m.group(4)), label
    assert re.search(r"^   problems: .+$", text, re.M), text
    stall = r["ocpp"]["stall"]
    assert sorted(stall) == sorted(["idle", "tls", "storm", "frame", "rate", "drain"])
    for mode, x in stall.items():
        g, s = x["gap_us"], x["stall_us"]
        assert g["n"] > 0 and g["p50"] <= g["p99"] <= g["max"], (mode, g)
        assert s["max"] == max(0, g["max"] - 10000), (mode, s, g)
        d = x["detail"]
        assert d["link_ups"] >= 1 and d["invalid_frames"] == 0 and d["outbox_pending"] == 0, (mode, d)
    assert stall["tls"]["detail"]["handshakes"] == HANDSHAKES
    assert stall["tls"]["detail"]["link_ups"] >= HANDSHAKES + 1
    assert stall["storm"]["detail"]["drops"] > 0 and stall["storm"]["detail"]["refused"] > 0
    f = stall["frame"]["detail"]
    assert f["rounds"] >= 3 and f["answered_8k"] == f["rounds"] and f["refused_16k"] == f["rounds"], f
    assert stall["rate"]["detail"]["calls"] == CALLS and stall["rate"]["detail"]["per_s"] > 0
    dr = stall["drain"]["detail"]
    assert dr["queued"] == QUEUED + 1 and dr["meter_values_received"] >= QUEUED and dr["per_s"] > 0, dr

    # 7. heap with messages queued, messages per second, boot, flash per hour
    m = re.search(r"^heap with %d messages queued: live (\d+) bytes; 0 queued (\d+) \([+-]\d+\); "
                  r"idle before the car (\d+); peak (\d+) of %d$" % (QUEUED, BUDGET), text, re.M)
    assert m and 0 < int(m.group(2)) <= int(m.group(4)) <= BUDGET, text
    assert re.search(r"^messages handled per second: incoming %s \(\d+ DataTransfer" % NUM, text, re.M), text
    assert re.search(r"^   outgoing %s \(%d messages drained from the outbox: the StartTransaction and %d MeterValues"
                     % (NUM, QUEUED + 1, QUEUED), text, re.M), text
    m = re.search(r"^time from power-on to Available: (\d+) ms virtual, (\d+) ms real", text, re.M)
    assert m and int(m.group(1)) > 0 and int(m.group(2)) > 0, text
    m = re.search(r"^flash bytes written per hour of charging at 60 s sampling: (\d+) bytes in (\d+) writes "
                  r"\(normal_session.scn, (\d+) MeterValues$", text, re.M)
    assert m and int(m.group(1)) > 0 and int(m.group(3)) >= 9, text
    assert re.search(r"^   received, 1 transaction\); without the link: (\d+) bytes in (\d+) writes$", text, re.M)
    q = r["ocpp"]["queue"]
    assert q["queued"] >= QUEUED and q["budget"] == BUDGET and q["peak"] <= BUDGET
    assert r["ocpp"]["boot"]["virtual_ms"] > 0 and r["heap"]["bare"]["flash_bytes"] > 0

    # 8. network drops during a long charging run
    assert re.search(r"^8\. %d network drops during a long charging run" % DROPS, text, re.M), text
    d = r["drops"]
    assert d["drops"] == DROPS == d["drops_done"], d
    assert d["link_ups"] >= 1 and d["boots"] >= 1 and d["wall_s"] > 0, d
    for key in ("transactions", "meter_values_received", "meter_values_sampled", "duplicates", "invalid_frames",
                "status_violations", "outbox_pending", "outbox_dropped"):
        assert isinstance(d[key], int) and d[key] >= 0, (key, d)
    assert re.search(r"^drops done %d   link up events \d+   boots \d+   wall \d+ s" % DROPS, text, re.M), text
    assert re.search(r"^transactions \d+   meterStop ", text, re.M), text
    assert re.search(r"^MeterValues received \d+, sampled -?\d+ \(\d+ expected", text, re.M), text
    assert re.search(r"^outbox pending -?\d+, discarded \d+   invalid frames \d+   status violations \d+", text,
                     re.M), text

    # 9. the soak
    assert re.search(r"^9\. soak", text, re.M), text
    k = r["soak"]
    assert k["sessions_planned"] == SOAK and k["plug_ins"] == SOAK and k["failures"] == [], k
    assert k["transactions"] == k["sessions"] >= SOAK and k["journal_max"] <= k["journal_bound"], k
    assert 0 < k["heap_peak"] <= BUDGET and k["truth_wh"] > 0, k
    assert re.search(r"^soak: ok$", text, re.M), text
