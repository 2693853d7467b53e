#!/usr/bin/env python3
"""Run the charger firmware on a virtual ESP32 board with a simulated car.

    python3 tools/sim.py [--scenario FILE] [--events FILE] [--runtime micropython|cpython]
                         [--heap SIZE] [--speed N|max] [--board NAME] [--settings FILE]
                         [--csms URL] [--id CHARGEBOXID] [--flash DIR] [--quiet]

Without --scenario it is interactive: type scenario lines (plug, ev-ready 16, unplug, ...) and
watch the status line. The firmware runs under the real unix MicroPython port by default, with
the fake `machine` modules and the simulated world (tests_host/world) behind them.

--speed N runs virtual time N times faster than the wall clock; `max` (the default with a
scenario) runs as fast as the machine can. Interactive mode defaults to --speed 1.
--flash DIR keeps the board's flash (settings, journal) in DIR between runs; by default a fresh
temporary flash is used and removed at the end.
Exit status: 0 when the scenario ran to its end, 2 for bad arguments or a bad scenario file,
3 when the scenario could not be carried out (e.g. a verb whose part is not built yet), and the
runtime's non-zero status when the firmware crashed.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
HOST = os.path.join(ROOT, "tests_host")
FAKES = os.path.join(HOST, "fakes")
BOARDS = os.path.join(ROOT, "drivers", "boards")


def heap_size(text):
    t = text.strip().upper()
    mult = 1
    if t.endswith("K"):
        mult, t = 1024, t[:-1]
    elif t.endswith("M"):
        mult, t = 1024 * 1024, t[:-1]
    if not t.isdigit() or int(t) == 0:
        raise argparse.ArgumentTypeError("expected a heap size like 64K, 128K or 1M, got %r" % text)
    n = int(t) * mult
    if n < 16 * 1024:
        raise argparse.ArgumentTypeError("heap %r is too small for the firmware (at least 16K)" % text)
    return text.strip()


def speed(text):
    if text == "max":
        return text
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number (times the wall clock) or 'max', got %r" % text)
    if v <= 0:
        raise argparse.ArgumentTypeError("speed must be above 0, got %r" % text)
    return text


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", metavar="FILE", help="scenario file to run (one action per line)")
    p.add_argument("--events", metavar="FILE", help="write events as JSON lines to FILE")
    p.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython")
    p.add_argument("--heap", type=heap_size, metavar="SIZE", help="MicroPython heap, e.g. 64K (-X heapsize=)")
    p.add_argument("--speed", type=speed, metavar="N", help="virtual time per wall-clock time; 'max' = unthrottled")
    p.add_argument("--board", default="esp32-devkit", metavar="NAME", help="board profile name or JSON path")
    p.add_argument("--settings", metavar="FILE", help="settings JSON put on the board's flash")
    p.add_argument("--csms", metavar="URL", help="OCPP back end (not available yet)")
    p.add_argument("--id", metavar="CHARGEBOXID", help="charge box id (not available yet)")
    p.add_argument("--flash", metavar="DIR", help="keep the board's flash in DIR between runs")
    p.add_argument("--quiet", action="store_true", help="do not print events")
    a = p.parse_args(argv)
    if a.heap and a.runtime != "micropython":
        p.error("--heap applies to the micropython runtime only")
    if a.csms or a.id:
        p.error("--csms/--id: the OCPP back-end link is not available yet")
    return a, p


def board_file(name, parser):
    path = name if (name.endswith(".json") or os.sep in name) else os.path.join(BOARDS, name + ".json")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(BOARDS) if f.endswith(".json"))
        parser.error("--board %s: no such board profile (known: %s)" % (name, ", ".join(known)))
    return path


def check_scenario(path, parser):
    if not os.path.exists(path):
        parser.error("--scenario %s: no such file" % path)
    sys.path.insert(0, HOST)
    from world import scenario

    with open(path) as f:
        text = f.read()
    try:
        scenario.parse(text)
    except scenario.ScenarioError as e:
        print("scenario %s: %s" % (path, e), file=sys.stderr)
        sys.exit(2)


def prepare_flash(flash, board, settings, parser):
    os.makedirs(flash, exist_ok=True)
    shutil.copyfile(board, os.path.join(flash, "board.json"))
    if settings:
        if not os.path.exists(settings):
            parser.error("--settings %s: no such file" % settings)
        with open(settings) as f:
            text = f.read()
        try:
            json.loads(text)
        except ValueError as e:
            parser.error("--settings %s: not valid JSON (%s)" % (settings, e))
        with open(os.path.join(flash, "settings.json"), "w") as f:
            f.write(text)


def command(a):
    runner = os.path.join(HOST, "simrun.py")
    path = os.pathsep.join([FAKES, ROOT, HOST])
    env = dict(os.environ)
    if a.runtime == "micropython":
        cmd = [_venv.bin_path("micropython")]
        if a.heap:
            cmd += ["-X", "heapsize=" + a.heap]
        env["MICROPYPATH"] = path
    else:
        cmd = [sys.executable, "-u"]
        env["PYTHONPATH"] = path
    cmd += [runner, ROOT]
    if a.scenario:
        cmd += ["--scenario", os.path.abspath(a.scenario)]
    if a.events:
        cmd += ["--events", os.path.abspath(a.events)]
    if a.speed:
        cmd += ["--speed", a.speed]
    if a.quiet:
        cmd += ["--quiet"]
    return cmd, env


def main(argv=None):
    a, parser = parse_args(sys.argv[1:] if argv is None else argv)
    board = board_file(a.board, parser)
    if a.scenario:
        check_scenario(a.scenario, parser)
    flash = os.path.abspath(a.flash) if a.flash else tempfile.mkdtemp(prefix="evse-flash-")
    try:
        prepare_flash(flash, board, a.settings, parser)
        cmd, env = command(a)
        try:
            return subprocess.call(cmd, cwd=flash, env=env)
        except KeyboardInterrupt:
            return 130
    finally:
        if not a.flash:
            shutil.rmtree(flash, ignore_errors=True)


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
