"""The soak: many long sessions through everything that can go wrong, checked against the world.

    python3 tools/benchmark.py --rows soak [--soak-sessions 100] [--soak-kwh 10-50] [--seed N]

Sessions of a random 10-50 kWh each (a car at 32 A on three phases, 22 kW), in runs of
RUN_SESSIONS, each run one `tools/sim.py` process on the virtual ESP32 in the board's whole
heap (96K) against its built-in back end, runs side by side, one per CPU. A seeded generator writes each
run's scenario: in each session, at random moments, up to three of a power cut (1-60 s), the
network down (1 min - 2 h), meter noise (5 % of the replies corrupted) and a full flash (free
space at most the firmware's reserve, 5 min - 1 h); between sessions the car is away 30 s - 5 min.
At the end of a run the network, the meter and the flash are well again and the outbox gets time
to drain. Then, per run:

- every session of the firmware is one transaction at the back end (StartTransaction and
  StopTransaction received once each: a duplicate is counted, the one a power cut between a send
  and its confirmation allows), in order, meterStart and meterStop as the firmware recorded them;
- per plug-in, the energy the back end was told (the sum of meterStop - meterStart of its
  transactions) is within 0.5 % + 10 Wh of what the simulated car received;
- flash: the session journal's bytes after every session (the `resources` event) stay under its
  documented bound, firmware/session.py BOUND;
- heap: the live heap after every session (`resources`) does not grow: within a boot, from its
  second session on, it stays within HEAP_GROWTH.
"""
import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SIM = os.path.join(HERE, "sim.py")
CP_ID = "SOAK-0001"
POWER_W = 32 * 3 * 230  # what the car draws: 32 A on three phases
RUN_SESSIONS = 10  # sessions per simulator process (its scenario is parsed whole at start)
ENERGY_REL = 0.005
ENERGY_ABS_WH = 10
HEAP_GROWTH = 1024  # bytes the live heap may differ between sessions of one boot (allocator noise)
DRAIN_MS = 5 * 60000  # at the end of a run: the outbox delivers what it queued offline


def _dur(ms):
    """A scenario duration: whole seconds (ms when shorter)."""
    ms = int(ms)
    return "%ds" % (ms // 1000) if ms >= 1000 else "%dms" % max(ms, 10)


def disturbances(rng, charge_ms, reserve):
    """[(at_ms, [lines when it starts], duration_ms, [lines when it ends])] within the charge."""
    kinds = rng.sample(["power-cut", "net", "noise", "flash"], rng.randint(0, 3))
    out = []
    for k in kinds:
        at = rng.uniform(0.05, 0.8) * charge_ms
        room = 0.95 * charge_ms - at  # a disturbance is over before the car is full
        if k == "power-cut":
            d = rng.randint(1, 60) * 1000
            out.append((at, ["power-cut %s" % _dur(d)], d, []))
        elif k == "net":
            d = min(rng.randint(60, 7200) * 1000, room)
            out.append((at, [rng.choice(["net down", "net drop\nwait 1s\nnet down"])], d, ["net up"]))
        elif k == "noise":
            d = min(rng.randint(60, 3600) * 1000, room)
            out.append((at, ["meter-noise 5"], d, ["meter-noise 0"]))
        else:
            d = min(rng.randint(300, 3600) * 1000, room)
            out.append((at, ["flash-full %d" % rng.randint(0, reserve)], d, ["flash-ok"]))
    return sorted(out, key=lambda x: x[0])


def scenario(rng, sessions, kwh, reserve):
    """The scenario text of one run and what it plans: [{"kwh", "events": [...]}]."""
    lines = ["# tools/soak.py: %d sessions" % sessions]
    plan = []
    for _ in range(sessions):
        e = rng.uniform(kwh[0], kwh[1])
        charge_ms = e * 3600 * 1000 * 1000 / POWER_W
        lines += ["plug 32", "wait 2s", "ev-ready 32 3"]
        t = 0
        ends = []  # (at, lines): the ends of disturbances that are on
        done = []
        for at, start, d, end in disturbances(rng, charge_ms, reserve):
            for et, el in sorted(ends):
                if et <= at:
                    lines += ["wait %s" % _dur(et - t)] + el
                    t = et
            ends = [x for x in ends if x[0] > at]
            lines += ["wait %s" % _dur(at - t)] + start
            t = at
            if end:  # (a power cut ends by itself: the power comes back, the car resumes)
                ends.append((at + d, end))
            done.append(start[0].split()[0])
        for et, el in sorted(ends):
            if et > t:
                lines += ["wait %s" % _dur(et - t)]
                t = et
            lines += el
        if charge_ms > t:
            lines += ["wait %s" % _dur(charge_ms - t)]
        lines += ["ev-pause", "wait 5s", "unplug", "wait %ds" % rng.randint(30, 300)]
        plan.append({"kwh": round(e, 2), "events": done})
    lines += ["net up", "flash-ok", "meter-noise 0", "wait %s" % _dur(DRAIN_MS)]
    return "\n".join(lines) + "\n", plan


def _run_one(i, seed, sessions, kwh, reserve, work, runtime):
    rng = random.Random("%d-%d" % (seed, i))
    text, plan = scenario(rng, sessions, kwh, reserve)
    d = os.path.join(work, "run%d" % i)
    os.makedirs(d)
    scn = os.path.join(d, "soak.scn")
    with open(scn, "w") as f:
        f.write(text)
    events, db, flash = os.path.join(d, "events.jsonl"), os.path.join(d, "csms.db"), os.path.join(d, "flash")
    cmd = [sys.executable, SIM, "--scenario", scn, "--events", events, "--csms-db", db, "--flash", flash,
           "--id", CP_ID, "--quiet", "--runtime", runtime]
    # (the esp32 runtime runs in the board's whole heap: tools/sim.py's DEFAULT_HEAP)
    t0 = time.monotonic()
    with open(os.path.join(d, "output.txt"), "w") as out:  # kept beside the events for a post-mortem
        p = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
    with open(os.path.join(d, "output.txt")) as f:
        output = f.read()
    wall = time.monotonic() - t0
    evs = []
    if os.path.exists(events):
        with open(events) as f:
            evs = [json.loads(line) for line in f]
    return check(i, p.returncode, output, evs, db, plan, wall)


def check(i, rc, output, evs, db, plan, wall):
    """The figures and failures of one run."""
    sys.path.insert(0, HERE)
    import csms
    from firmware import session as session_mod

    fails = []
    if rc != 0:
        fails.append("run %d: tools/sim.py exited %d: %s" % (i, rc, output[-2000:]))
    starts = [e for e in evs if e["type"] == "session" and e.get("event") == "start"]
    stops = [e for e in evs if e["type"] == "session" and e.get("event") == "stop"]
    plugs = [e for e in evs if e["type"] == "world" and e.get("action") == "plug"]
    unplugs = [e for e in evs if e["type"] == "world" and e.get("action") == "unplug"]
    res = [e for e in evs if e["type"] == "resources"]
    tx, invalid, violations = [], [], []
    if os.path.exists(db):
        s = csms.Store.open_existing(db)
        try:
            tx = s.sessions(CP_ID)
            invalid = s.frames(CP_ID, invalid=True)
            violations = s.status_violations(CP_ID)
        finally:
            s.close()
    dup = sum(max(0, t["start_count"] - 1) + max(0, t["stop_count"] - 1) for t in tx)
    if len(tx) != len(starts) or len(starts) != len(stops):
        fails.append("run %d: %d sessions started, %d stopped, %d transactions at the back end"
                     % (i, len(starts), len(stops), len(tx)))
    for t, a, b in zip(tx, starts, stops):
        if t["start_count"] < 1 or t["stop_count"] < 1:
            fails.append("run %d: transaction %s lacks its %s" % (i, t["id"], "start" if t["start_count"] < 1 else "stop"))
        # (a session that began before the meter's first reading starts at that reading)
        e0 = a.get("meter_wh") if a.get("meter_wh") is not None else b.get("meter_wh", 0) - b.get("energy_wh", 0)
        if t["meter_start"] != e0 or t["meter_stop"] != b.get("meter_wh"):
            fails.append("run %d: transaction %s: meterStart/Stop %s/%s, the firmware recorded %s/%s"
                         % (i, t["id"], t["meter_start"], t["meter_stop"], e0, b.get("meter_wh")))
    worst = 0.0
    per_plug = []
    for k, (p, u) in enumerate(zip(plugs, unplugs)):
        truth = u["truth_wh"] - p["truth_wh"]
        told = sum((t["meter_stop"] or 0) - (t["meter_start"] or 0) for t, a in zip(tx, starts)
                   if p["t"] <= a["t"] <= u["t"])
        err = abs(told - truth)
        per_plug.append((round(truth), told))
        worst = max(worst, err / max(truth, 1))
        if err > ENERGY_REL * truth + ENERGY_ABS_WH:
            fails.append("run %d, plug-in %d: the back end was told %d Wh, the car received %.0f Wh (%s)"
                         % (i, k + 1, told, truth, ",".join(plan[k]["events"]) if k < len(plan) else ""))
    journal = [e["journal_bytes"] for e in res if e.get("journal_bytes") is not None]
    bound = session_mod.BOUND
    if bound is not None and journal and max(journal) > bound:
        fails.append("run %d: the journal took %d bytes, more than its bound %d" % (i, max(journal), bound))
    # Live heap after each session, per boot: a reboot measures from a new base (what the old
    # boot left behind is not the new one's), and the first session of a boot creates what the
    # link keeps from then on; from the second session on it must stay flat.
    steady, boot = [], []
    for e in evs:
        if e["type"] == "boot":
            boot = []
        elif e["type"] == "resources" and e.get("heap_live") is not None:
            boot.append(e["heap_live"])
            if len(boot) > 1:
                steady.append((e["t"], e["heap_live"], boot))
    live = [x[1] for x in steady]
    spread = 0
    for _t, _v, b in steady:
        spread = max(spread, max(b[1:]) - min(b[1:]))
    if spread > HEAP_GROWTH:
        fails.append("run %d: within one boot the live heap after a session moved by %d bytes" % (i, spread))
    if invalid:
        fails.append("run %d: %d frames failed the schema" % (i, len(invalid)))
    if violations:
        fails.append("run %d: %d status changes the specification does not allow" % (i, len(violations)))
    heap = [e for e in evs if e["type"] == "heap"]
    flash = [e for e in evs if e["type"] == "flash"]
    return {
        "run": i, "plug_ins": len(plugs), "sessions": len(starts), "transactions": len(tx), "duplicates": dup,
        "power_cuts": sum(1 for e in evs if e["type"] == "world" and e.get("action") == "power-cut"),
        "net_outages": sum(1 for e in evs if e["type"] == "world" and e.get("action") == "net" and e.get("args") == ["down"]),
        "flash_full": sum(1 for e in evs if e["type"] == "world" and e.get("action") == "flash-full"),
        "noise": sum(1 for e in evs if e["type"] == "world" and e.get("action") == "meter-noise" and e.get("args") != [0]),
        "truth_wh": round(sum(t for t, _ in per_plug)), "told_wh": sum(x for _, x in per_plug),
        "worst_energy_error": worst, "journal_max": max(journal) if journal else None, "journal_bound": bound,
        "heap_live": [min(live), max(live)] if live else None, "heap_spread": spread,
        "heap_peak": heap[-1]["peak"] if heap else None, "heap_budget": heap[-1]["budget"] if heap else None,
        "flash_written": flash[-1]["bytes_written"] if flash else None,
        "virtual_h": round(evs[-1]["t"] / 3600000, 1) if evs else 0, "wall_s": round(wall),
        "failures": fails,
    }


def run(sessions=100, kwh=(10, 50), seed=1, work=None, runtime="esp32", jobs=None):
    """Every run's figures; `failures` lists what broke a promise."""
    sys.path.insert(0, ROOT)
    from firmware import flash as flash_mod

    reserve = getattr(flash_mod, "RESERVE", 16384)
    counts = [RUN_SESSIONS] * (sessions // RUN_SESSIONS)
    if sessions % RUN_SESSIONS:
        counts.append(sessions % RUN_SESSIONS)
    jobs = jobs or os.cpu_count() or 2
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futs = [pool.submit(_run_one, i, seed, n, kwh, reserve, work, runtime) for i, n in enumerate(counts)]
        runs = [f.result() for f in futs]
    return summarize(sessions, runs)


def summarize(sessions, runs):
    """The figures of all runs together."""
    total = {"sessions_planned": sessions, "runs": runs}
    for k in ("plug_ins", "sessions", "transactions", "duplicates", "power_cuts", "net_outages", "flash_full",
              "noise", "truth_wh", "told_wh", "wall_s"):
        total[k] = sum(r[k] for r in runs)
    total["virtual_h"] = round(sum(r["virtual_h"] for r in runs), 1)
    total["worst_energy_error"] = max(r["worst_energy_error"] for r in runs)
    j = [r["journal_max"] for r in runs if r["journal_max"] is not None]
    total["journal_max"] = max(j) if j else None
    total["journal_bound"] = runs[0]["journal_bound"] if runs else None
    lives = [r["heap_live"] for r in runs if r["heap_live"]]
    total["heap_live"] = [min(x[0] for x in lives), max(x[1] for x in lives)] if lives else None
    total["heap_spread"] = max(r["heap_spread"] for r in runs) if runs else None
    peaks = [r["heap_peak"] for r in runs if r["heap_peak"] is not None]
    total["heap_peak"] = max(peaks) if peaks else None
    total["heap_budget"] = max((r["heap_budget"] or 0) for r in runs) or None
    total["failures"] = [f for r in runs for f in r["failures"]]
    return total


def table(s):
    lines = [
        "%d sessions planned in %d runs: %d plug-ins, %d sessions, %d transactions at the back end, %d duplicates"
        % (s["sessions_planned"], len(s["runs"]), s["plug_ins"], s["sessions"], s["transactions"], s["duplicates"]),
        "disturbances: %d power cuts, %d network outages, %d full flashes, %d meter-noise spells"
        % (s["power_cuts"], s["net_outages"], s["flash_full"], s["noise"]),
        "energy: the car received %d Wh, the back end was told %d Wh, worst plug-in %.3f %%"
        % (s["truth_wh"], s["told_wh"], 100 * s["worst_energy_error"]),
        "journal: at most %s bytes (bound %s)" % (s["journal_max"], s["journal_bound"]),
        "heap: live after a session %s bytes (a reboot measures from a new base); within a boot it moved "
        "by at most %s bytes; peak %s of %s" % (s["heap_live"], s["heap_spread"], s["heap_peak"], s["heap_budget"]),
        "time: %.1f h of virtual time in %d s of CPU-bound runs" % (s["virtual_h"], s["wall_s"]),
    ]
    for f in s["failures"]:
        lines.append("FAIL " + f)
    lines.append("soak: %s" % ("ok" if not s["failures"] else "%d failures" % len(s["failures"])))
    return "\n".join(lines)
