#!/usr/bin/env python3
"""Our energy manager beside the anchors' algorithms, on the same simulated days.

    python3 tools/energy_baselines.py [--day NAME]...

Runs every day of tests_host/energy_day.py (days(): a clear and a cloudy day squeezed into an
hour, each with a 3-phase and a 1-phase car, the cloudy day on a board with a phase switch, and a
smart-mode evening on a 25 A fuse) with three controllers: ours (firmware/energy.py driven as the
station drives it) and SmartEVSE's and WARP's, reimplemented from their published code and manuals
in tests_host/energy_anchors.py (test harness only). Prints one Markdown table per day, as
docs/energy.md ("Against the anchors' algorithms") shows them: the car's energy, the share of it
the PV's surplus covered, the car's grid import, starts, stops, phase switches and the fuse's
overshoot (longest run / total seconds above main_fuse_a; "-" without a fuse). Deterministic;
a few seconds on CPython. --day runs only the named days (repeatable).
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
sys.path.insert(0, os.path.join(ROOT, "tests_host"))


def main(argv=None):
    import energy_day

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--day", action="append", default=[], help="only this day (repeatable)")
    args = ap.parse_args(argv)
    days = energy_day.days()
    known = [d.name for d in days]
    for name in args.day:
        if name not in known:
            ap.error("unknown day %r: one of %s" % (name, ", ".join(repr(k) for k in known)))
    t0 = time.monotonic()
    for day in days:
        if args.day and day.name not in args.day:
            continue
        results = [energy_day.run(day, ctl, name) for name, ctl in energy_day.controllers(day)]
        print(energy_day.report(day, results))
        print()
    print("(%.1f s)" % (time.monotonic() - t0), file=sys.stderr)
    return 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
