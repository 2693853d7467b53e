#!/usr/bin/env python3
"""Put the charger application, its board profile and its settings on a board with mpremote.

    python3 tools/deploy.py --port PORT [--board NAME] [--settings FILE] [--secrets FILE]
                            [--frozen] [--no-reset] [--dry-run]

PORT is what mpremote connects to (/dev/ttyUSB0, a simulated board's PTY, ...). The board must
run MicroPython (tools/flash.py puts it there). Steps:

1. Check everything on this machine first: the board profile (drivers/boards/NAME.json or a
   path), the settings file (every key checked by firmware/settings.py, as the board will) and
   the secrets file. Nothing is copied when one of them is wrong.
2. Ask the board for its bytecode architecture and .mpy version, its free flash, and the
   SHA-256 of every file the application owns (/boot.py, /main.py, /board.json, /settings.json,
   /firmware, /drivers).
3. Build the application for that architecture (tools/build.py: xtensawin for an ESP32, x64
   for the simulated board), copy only the files whose hash differs, remove application files
   the build no longer has (a stale charger.py would shadow charger.mpy), check the hashes
   again, then reset the board (unless --no-reset) so it starts the new firmware.

Secrets (every setting flagged "secret" in firmware/settings.py: wifi_password,
authorization_key) come only from the secrets file (default ./secrets.json), a JSON object of
those keys. It must be ignored by git (this repository's .gitignore lists secrets.json); a
settings file holding a secret is refused, so a password is never committed. Secret values are
never printed or passed on a command line: the merged settings.json goes to the board from a
private temporary file.

--frozen: the board runs a custom image with firmware/ and drivers/ frozen in (manifest.py);
only boot.py, main.py, board.json and settings.json are copied, and copies of firmware/ and
drivers/ on the filesystem are removed (they would shadow the frozen ones). Without the flag the
probe finds such an image by itself (a `firmware` package under `.frozen`): the simulated board's
default runtime, the virtual ESP32, is one.
--dry-run: say what would be copied and removed, change nothing.

Exit status: 0 done, 1 the board or mpremote failed (with what to check), 2 bad input.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
BOARDS = os.path.join(ROOT, "drivers", "boards")
APP_DIRS = ("firmware", "drivers")
TOP_FILES = ("boot.py", "main.py", "board.json", "settings.json")
MARK = "DEPLOY:"
TIMEOUT_S = 60
PROBE_TIMEOUT_S = 20  # a board answers the probe in about a second
PROBE_FIRST_S = 5  # ... so the first try gives up early and asks once more (probe)
# sys.implementation._mpy >> 10 -> the architecture mpy-cross calls it (mip's table)
ARCHS = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc")
BUILT = ("xtensawin", "x64")
MPY_VERSION = 6

# Runs on the board: its architecture, free flash and the hashes of the application's files.
PROBE = r"""
import os, sys, json, hashlib, binascii
os.chdir('/')
def _h(p):
    try:
        f = open(p, 'rb')
    except OSError:
        return None
    d = hashlib.sha256()
    b = bytearray(1024)
    m = memoryview(b)
    while True:
        n = f.readinto(b)
        if not n:
            break
        d.update(m[:n])
    f.close()
    return binascii.hexlify(d.digest()).decode()
def _walk(d, out):
    try:
        es = list(os.ilistdir(d))
    except OSError:
        return
    out.append(d + '/')
    for e in es:
        p = d + '/' + e[0]
        if e[1] == 0x4000:
            _walk(p, out)
        else:
            out.append(p)
_files = []
for _d in %(dirs)r:
    _walk('/' + _d, _files)
_r = {}
for _p in _files + %(top)r:
    _r[_p] = '' if _p.endswith('/') else _h(_p)
_s = os.statvfs('/')
_fz = False
_sp = sys.path[:]
_m = sys.modules.pop('firmware', None)
try:
    sys.path[:] = ['.frozen']
    import firmware
    _fz = True
except ImportError:
    pass
sys.path[:] = _sp
sys.modules.pop('firmware', None)
if _m is not None:
    sys.modules['firmware'] = _m
print(%(mark)r + json.dumps({'mpy': sys.implementation._mpy, 'version': list(sys.implementation.version[:3]),
      'machine': sys.implementation._machine, 'free': _s[0] * _s[3], 'size': _s[0] * _s[2], 'files': _r,
      'frozen': _fz}))
"""


class DeployError(Exception):
    """Something the person must fix; `status` is the exit status."""

    def __init__(self, message, status=2, no_answer=False):
        super().__init__(message)
        self.status = status
        self.no_answer = no_answer  # mpremote timed out: the board did not answer at all


# ---------------------------------------------------------------- local checks

def board_profile(name):
    path = name if (name.endswith(".json") or os.sep in name) else os.path.join(BOARDS, name + ".json")
    if not os.path.exists(path):
        known = sorted(f[:-5] for f in os.listdir(BOARDS) if f.endswith(".json"))
        raise DeployError("--board %s: no such board profile (known: %s)" % (name, ", ".join(known)))
    sys.path.insert(0, ROOT)
    from drivers import board

    try:
        board.load(path)
    except board.BoardError as e:
        raise DeployError("--board %s: %s" % (name, "; ".join(e.errors)))
    with open(path, "rb") as f:
        return f.read()


def _read_object(path, what):
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise DeployError("%s %s: cannot read it (%s)" % (what, path, e.strerror or e))
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise DeployError("%s %s: not valid JSON (%s)" % (what, path, e))
    if not isinstance(doc, dict):
        raise DeployError("%s %s: expected a JSON object of settings, got %s" % (what, path, type(doc).__name__))
    return doc


def _git(args, cwd):
    try:
        return subprocess.run(["git"] + args, cwd=cwd, capture_output=True, text=True)
    except OSError:
        return None


def _in_git_unignored(path):
    """True when `path` is in a git work tree and git would track it (tracked, or not ignored)."""
    d = os.path.dirname(os.path.abspath(path))
    top = _git(["rev-parse", "--show-toplevel"], d)
    if top is None or top.returncode != 0:
        return False
    tracked = _git(["ls-files", "--error-unmatch", os.path.abspath(path)], d)
    if tracked is not None and tracked.returncode == 0:
        return True
    ignored = _git(["check-ignore", "-q", os.path.abspath(path)], d)
    return ignored is not None and ignored.returncode == 1


def settings_file(settings_path, secrets_path):
    """The settings.json to put on the board (bytes) and the names of the secrets it holds."""
    sys.path.insert(0, ROOT)
    from firmware import settings as settings_mod

    secret_keys = sorted(k for k in settings_mod.SCHEMA if "secret" in settings_mod.SCHEMA[k][4])
    values = {}
    if settings_path:
        values = _read_object(settings_path, "settings file")
        plain = [k for k in sorted(values) if k in secret_keys and values[k] not in ("", None)]
        if plain:
            where = "in the repository" if _in_git_unignored(settings_path) else "in a settings file"
            raise DeployError(
                "settings file %s: %s %s a secret in plain sight %s; move %s to the secrets file "
                "(%s, which git ignores) and leave %s out of the settings file"
                % (settings_path, ", ".join(plain), "is" if len(plain) == 1 else "are", where,
                   "it" if len(plain) == 1 else "them", secrets_path or "secrets.json",
                   "it" if len(plain) == 1 else "them"))
    used = []
    if secrets_path and os.path.exists(secrets_path):
        if _in_git_unignored(secrets_path):
            raise DeployError("secrets file %s would be committed: git does not ignore it; add it to "
                              ".gitignore (and if it was committed, change those passwords)" % secrets_path)
        secrets = _read_object(secrets_path, "secrets file")
        for k in sorted(secrets):
            if k not in secret_keys:
                raise DeployError("secrets file %s: '%s' is not a secret setting (secrets: %s); put it in "
                                  "the settings file" % (secrets_path, k, ", ".join(secret_keys)))
            values[k] = secrets[k]
            used.append(k)
    try:
        st = settings_mod.Settings(values)
    except settings_mod.SettingsError as e:
        msg = str(e)
        for k in used:  # a message naming a secret's value must not print it
            if isinstance(values[k], str) and values[k] and values[k] in msg:
                msg = msg.replace(values[k], "***")
        raise DeployError("settings: %s" % msg)
    doc = st.changed()
    data = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    if len(data) > settings_mod.MAX_FILE:  # the board would refuse it unread
        raise DeployError("settings: %d bytes as written to the board, more than the %d the firmware "
                          "reads (firmware/settings.py MAX_FILE)" % (len(data), settings_mod.MAX_FILE))
    return data, used, st


# ---------------------------------------------------------------- mpremote

def mpremote(port, args, timeout=TIMEOUT_S):
    """Run mpremote; its output, or DeployError(status 1) naming what to check."""
    cmd = [_venv.bin_path("mpremote"), "connect", port] + args
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DeployError("the board on %s does not answer (nothing complete within %d s): is it "
                          "running MicroPython (tools/flash.py)? Is another program (a serial "
                          "monitor, Thonny, a second mpremote) using the port?" % (port, timeout), 1,
                          no_answer=True)
    except OSError as e:
        raise DeployError("cannot run mpremote (%s): pip install -r requirements.txt" % e, 1)
    if r.returncode != 0:
        raise DeployError(explain_mpremote(port, (r.stdout + r.stderr).strip()), 1)
    return r.stdout


def explain_mpremote(port, text):
    """What an mpremote failure on `port` means for the person at the board."""
    last = text.splitlines()[-1] if text else "(no output)"
    if "failed to access" in text or "No such file" in text or "could not open port" in text:
        if "Errno 16" in text or "busy" in text.lower():
            return ("port %s is busy: close the other program using it (a serial monitor, Thonny, "
                    "another mpremote) and try again" % port)
        return ("no board at %s (%s): check the cable and the port name (mpremote connect list "
                "shows the ports); on Linux your user needs the dialout group" % (port, last))
    if "could not enter raw repl" in text:
        return ("the board on %s does not answer like MicroPython (could not enter the raw REPL): "
                "flash MicroPython with tools/flash.py; if it runs, press its reset button and retry"
                % port)
    return "mpremote failed on %s: %s" % (port, last)


def probe(port):
    args = ["exec", PROBE % {"dirs": APP_DIRS, "top": ["/" + f for f in TOP_FILES], "mark": MARK}]
    try:
        out = mpremote(port, timeout=PROBE_FIRST_S, args=args)
    except DeployError as e:
        if not e.no_answer:
            raise
        # mpremote sends one Ctrl-C; a board that was just (re)starting, or whose USB bridge
        # reset it when the port opened, can miss it while its firmware starts: ask once more.
        out = mpremote(port, timeout=PROBE_TIMEOUT_S - PROBE_FIRST_S, args=args)
    for line in out.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise DeployError("the board on %s answered without its file list: %s" % (port, out.strip()[-200:]), 1)


def board_arch(info):
    mpy = info["mpy"]
    arch_i = mpy >> 10
    arch = ARCHS[arch_i] if arch_i < len(ARCHS) else None
    version = mpy & 0xFF
    ver = ".".join(str(v) for v in info["version"])
    if version != MPY_VERSION:
        raise DeployError("the board runs MicroPython %s, whose .mpy version is %d; this firmware is "
                          "compiled for .mpy version %d (MicroPython 1.23 or later): flash a newer "
                          "MicroPython with tools/flash.py" % (ver, version, MPY_VERSION), 1)
    if arch not in BUILT:
        raise DeployError("the board's code architecture is %s (MicroPython %s on %s); this firmware "
                          "is built for the ESP32 (xtensawin) and the simulated board (x64)"
                          % (arch or "unknown", ver, info.get("machine")), 1)
    return arch


# ---------------------------------------------------------------- the plan

def _sha(data):
    return hashlib.sha256(data).hexdigest()


def wanted_files(arch, profile, settings_bytes, frozen):
    """{board path: (local path or None, bytes or None, sha256)}"""
    import build

    files = {}
    if not frozen:
        b = build.build(arch, quiet=True)
        for rel, meta in b["files"].items():
            top = rel.split("/")[0]
            if top in APP_DIRS and not rel.startswith("drivers/boards/"):
                files["/" + rel] = (os.path.join(b["dir"], rel), None, meta["sha256"])
        for name in ("boot.py", "main.py"):
            files["/" + name] = (os.path.join(b["dir"], name), None, b["files"][name]["sha256"])
    else:
        for name in ("boot.py", "main.py"):
            path = os.path.join(ROOT, name)
            with open(path, "rb") as f:
                files["/" + name] = (path, None, _sha(f.read()))
    files["/board.json"] = (None, profile, _sha(profile))
    files["/settings.json"] = (None, settings_bytes, _sha(settings_bytes))
    return files


def plan(files, info):
    on_board = info["files"]
    copy = sorted(p for p in files if on_board.get(p) != files[p][2])
    stale = sorted(p for p in on_board
                   if not p.endswith("/") and on_board[p] is not None and p not in files
                   and p.split("/")[1] in APP_DIRS)
    dirs_have = set(p.rstrip("/") for p in on_board if p.endswith("/"))
    need = set()
    for p in files:
        parts = p.split("/")[1:-1]
        for i in range(1, len(parts) + 1):
            need.add("/" + "/".join(parts[:i]))
    mkdirs = sorted(d for d in need if d not in dirs_have)
    # A directory left without files would still import (as a namespace package) and shadow
    # the frozen firmware or hide an import error: remove it, deepest first.
    rmdirs = sorted((d for d in dirs_have if d not in need), key=lambda d: -d.count("/"))
    return copy, stale, rmdirs, mkdirs


def deploy(a, log=print):
    profile = board_profile(a.board)
    secrets = a.secrets if a.secrets else ("secrets.json" if os.path.exists("secrets.json") else None)
    if a.secrets and not os.path.exists(a.secrets):
        raise DeployError("--secrets %s: no such file" % a.secrets)
    settings_bytes, used, st = settings_file(a.settings, secrets)
    info = probe(a.port)
    frozen = a.frozen or bool(info.get("frozen"))
    arch = board_arch(info) if not frozen else "frozen"
    files = wanted_files(arch, profile, settings_bytes, frozen)
    copy, stale, rmdirs, mkdirs = plan(files, info)
    log("board on %s: MicroPython %s, %s, flash %d KB with %d KB free"
        % (a.port, ".".join(str(v) for v in info["version"]),
           "%s bytecode" % arch if not frozen else "the firmware frozen in its image" + ("" if a.frozen else " (found)"),
           info["size"] // 1024, info["free"] // 1024))
    size = 0
    for p in copy:
        local, data, _h = files[p]
        size += len(data) if data is not None else os.path.getsize(local)
    if size > info["free"]:
        raise DeployError("not enough room on the board: %d KB to copy, %d KB free; remove other "
                          "files (mpremote fs rm) or use a frozen image (--frozen)"
                          % (size // 1024, info["free"] // 1024), 1)
    unchanged = len(files) - len(copy)
    log("copy %d file%s (%d bytes), %d unchanged, remove %d stale"
        % (len(copy), "" if len(copy) == 1 else "s", size, unchanged, len(stale) + len(rmdirs)))
    for p in copy:
        log("  copy   %s" % p)
    for p in stale + rmdirs:
        log("  remove %s" % p)
    log("settings: %s%s" % (", ".join("%s=%s" % (k, v) for k, v in sorted(st.public().items())
                                      if k in st.changed()) or "all defaults",
                            "; secrets from %s: %s (not shown)" % (secrets, ", ".join(used)) if used else ""))
    if a.dry_run:
        log("dry run: nothing changed")
        return {"copied": [], "removed": [], "unchanged": unchanged, "planned": copy, "stale": stale + rmdirs}
    if copy or stale or rmdirs:
        with tempfile.TemporaryDirectory(prefix="evse-deploy-") as tmp:
            os.chmod(tmp, 0o700)
            args = []
            if mkdirs:
                args += ["exec", "import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass" % mkdirs, "+"]
            for p in copy:
                local, data, _h = files[p]
                if data is not None:
                    local = os.path.join(tmp, p.strip("/").replace("/", "_"))
                    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as f:
                        f.write(data)
                args += ["fs", "cp", local, ":" + p, "+"]
            for p in stale:
                args += ["fs", "rm", ":" + p, "+"]
            for d in rmdirs:
                args += ["fs", "rmdir", ":" + d, "+"]
            mpremote(a.port, args[:-1], timeout=TIMEOUT_S * 5)
        after = probe(a.port)
        bad = [p for p in files if after["files"].get(p) != files[p][2]]
        if bad:
            raise DeployError("after copying, %d file%s on the board differ from the build (%s): the "
                              "flash may be full or failing; run the deploy again"
                              % (len(bad), "" if len(bad) == 1 else "s", ", ".join(bad[:5])), 1)
        log("verified: every file's SHA-256 on the board matches")
    if not a.no_reset:
        mpremote(a.port, ["reset"])
        log("reset: the board restarts with the new firmware")
    return {"copied": copy, "removed": stale + rmdirs, "unchanged": unchanged}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="the board's serial port, as mpremote connect takes it")
    p.add_argument("--board", default="esp32-devkit", help="board profile name or JSON path (default esp32-devkit)")
    p.add_argument("--settings", metavar="FILE", help="settings JSON (keys that differ from the defaults)")
    p.add_argument("--secrets", metavar="FILE", help="secrets JSON, never committed (default ./secrets.json if present)")
    p.add_argument("--frozen", action="store_true", help="the image has the firmware frozen in: copy only boot/main/profile/settings")
    p.add_argument("--no-reset", action="store_true", help="do not reset the board at the end")
    p.add_argument("--dry-run", action="store_true", help="show what would change, change nothing")
    a = p.parse_args(argv)
    try:
        deploy(a)
    except DeployError as e:
        print("deploy: %s" % e, file=sys.stderr)
        return e.status
    return 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
