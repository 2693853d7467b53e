"""From host to board, end to end, without a board: mpremote, tools/deploy.py and tools/bench.py
against the simulated board on a pseudo-terminal (tools/simboard.py).

The tests run in file order and share one board flash: the first deploy fills it, the broken
world reuses it. A local back end (tools/csms.py) answers the bench's back-end step.
"""
import json
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import _venv  # noqa: E402
import csms  # noqa: E402
import simboard  # noqa: E402

serial = pytest.importorskip("serial")

MPREMOTE = _venv.bin_path("mpremote")
PASSWORD = "bench-password"
CARD = "04A1B2C3"


def mpremote(port, *args, timeout=60):
    return subprocess.run([MPREMOTE, "connect", port] + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def tool(name, *args, timeout=180):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", name)] + list(args),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("csms") / "csms.db")
    with csms.CsmsThread(port=0, control_port=0, db=db) as c:
        yield c.csms


@pytest.fixture(scope="module")
def flash(tmp_path_factory):
    return str(tmp_path_factory.mktemp("flash"))


@pytest.fixture(scope="module")
def config(tmp_path_factory, backend):
    d = tmp_path_factory.mktemp("config")
    settings = d / "settings.json"
    settings.write_text(json.dumps({"wifi_ssid": "evse-bench", "charge_box_id": "BENCH-1",
                                    "ocpp_url": "ws://127.0.0.1:%d/ocpp" % backend.port}))
    secrets = d / "secrets.json"
    secrets.write_text(json.dumps({"wifi_password": PASSWORD, "authorization_key": "s3cret-key-123"}))
    return str(settings), str(secrets)


@pytest.fixture(scope="module")
def board(flash):
    # a stock image (the 64-bit unix port): deploy copies the firmware as .mpy files
    with simboard.SimBoard(flash=flash, world=[["card", CARD]], runtime="micropython") as b:
        yield b


# ---------------------------------------------------------------- the board as mpremote sees it

def _tree_to_mount(tmp_path):
    """A copy of firmware/ and drivers/ and a 3-character name, all with a modification time
    that holds the bytes 0x03 and 0x04: mpremote mount sends both as data (a name's length, a
    file's time), and the bridge must pass them on as such, not as a Ctrl-C or a Ctrl-D."""
    import shutil

    d = str(tmp_path / "tree")
    for top in ("firmware", "drivers"):
        shutil.copytree(os.path.join(ROOT, top), os.path.join(d, top),
                        ignore=shutil.ignore_patterns("__pycache__", "*.mpy"))
    with open(os.path.join(d, "abc"), "w") as f:
        f.write("x")
    for dirpath, dirs, files in os.walk(d):
        for name in dirs + files:
            os.utime(os.path.join(dirpath, name), (0x6B170403, 0x6B170403))  # bytes 03 04 17 6b
    os.utime(d, (0x6B170403, 0x6B170403))
    return d


def test_mpremote_exec_and_mount_on_an_empty_board(board, tmp_path):
    r = mpremote(board.port, "exec", "import sys, os; print(sys.platform, os.listdir('/'), sys.path)")
    assert r.returncode == 0, r.stderr
    assert "linux [] ['', '.frozen', '/lib']" in r.stdout  # an empty flash, a board's path
    r = mpremote(board.port, "exec", "import firmware")
    assert r.returncode != 0 and "ImportError" in r.stdout + r.stderr  # not deployed yet
    r = mpremote(board.port, "mount", _tree_to_mount(tmp_path), "exec",
                 "import os, firmware; from firmware import settings; "
                 "print(os.getcwd(), firmware.__name__, len(settings.SCHEMA), sorted(os.listdir('.')))")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/remote firmware %d ['abc', 'drivers', 'firmware']" % len(__import__("firmware.settings").settings.SCHEMA) \
        in r.stdout


def test_ctrl_c_soft_and_hard_reset_behave_as_on_a_board(board):
    s = serial.Serial(board.port, 115200, timeout=0.2)
    try:
        pending = [b""]

        def read_until(marker, seconds=10):
            """What the board printed up to and including `marker` (the rest is kept)."""
            data = pending[0]
            end = time.monotonic() + seconds
            while marker not in data and time.monotonic() < end:
                data += s.read(4096)
            assert marker in data, data
            i = data.index(marker) + len(marker)
            pending[0] = data[i:]
            return data[:i]

        s.write(b"\x03\x02")  # Ctrl-C, Ctrl-B: the friendly REPL
        read_until(b"for more information.\r\n>>> ")
        time.sleep(0.3)
        pending[0] = s.read(4096)  # (a prompt per control key)
        s.write(b"n = 0\r")
        read_until(b">>> ")
        s.write(b"while True: n += 1\r\r")  # runs until interrupted
        time.sleep(0.5)
        s.write(b"\x03")
        out = read_until(b">>> ")
        assert b"KeyboardInterrupt" in out
        s.write(b"n > 0\r")
        assert b"True" in read_until(b">>> ")  # the REPL's state survived the interrupt
        s.write(b"\x04")  # Ctrl-D: soft reset, RAM is gone
        read_until(b"MPY: soft reboot")
        read_until(b">>> ")
        s.write(b"'n' in globals()\r")
        assert b"False" in read_until(b">>> ")
        s.write(b"import machine; machine.reset()\r")
        read_until(b"for more information.\r\n>>> ")
        s.write(b"import machine; machine.reset_cause() == machine.SOFT_RESET\r")
        assert b"True" in read_until(b">>> ")  # the ESP32 reports machine.reset() as SOFT_RESET
    finally:
        s.close()
    assert "hard" in board.starts and "soft" in board.starts


# ---------------------------------------------------------------- deploy

def test_deploy_copies_everything_then_nothing(board, config, flash):
    settings, secrets = config
    r = tool("deploy.py", "--port", board.port, "--settings", settings, "--secrets", secrets)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "x64 bytecode" in r.stdout and "verified" in r.stdout
    copied = int(r.stdout.split("copy ", 1)[1].split(" file")[0])
    assert copied > 40
    assert PASSWORD not in r.stdout + r.stderr and "s3cret" not in r.stdout + r.stderr
    assert "wifi_password=***" in r.stdout
    with open(os.path.join(flash, "settings.json")) as f:
        on_board = json.load(f)
    assert on_board["wifi_password"] == PASSWORD and on_board["wifi_ssid"] == "evse-bench"
    with open(os.path.join(flash, "board.json")) as f, \
            open(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json")) as g:
        assert json.load(f) == json.load(g)
    assert os.path.exists(os.path.join(flash, "firmware", "charger.mpy"))

    r = tool("deploy.py", "--port", board.port, "--settings", settings, "--secrets", secrets)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copy 0 files (0 bytes), %d unchanged, remove 0 stale" % (copied,) in r.stdout


def test_deploy_removes_stale_files_and_replaces_changed_ones(board, config, flash):
    settings, secrets = config
    with open(os.path.join(flash, "firmware", "charger.py"), "w") as f:
        f.write("raise ImportError('stale source shadowing charger.mpy')\n")
    with open(os.path.join(flash, "main.py"), "a") as f:
        f.write("# edited on the board\n")
    r = tool("deploy.py", "--port", board.port, "--settings", settings, "--secrets", secrets)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copy 1 file" in r.stdout and "remove 1 stale" in r.stdout
    assert "copy   /main.py" in r.stdout and "remove /firmware/charger.py" in r.stdout
    assert not os.path.exists(os.path.join(flash, "firmware", "charger.py"))


def test_the_deployed_station_runs_after_the_reset(board):
    # main.py runs after deploy's reset; mpremote's Ctrl-C stops it and shows what it printed.
    time.sleep(1.5)
    r = mpremote(board.port, "exec", "import os; print(sorted(os.listdir('/')))")
    assert r.returncode == 0, r.stderr
    assert "journal" in r.stdout or "energy.json" in r.stdout  # the station wrote its files


# ---------------------------------------------------------------- bench

def test_bench_passes_every_step_on_a_good_board(board, backend, tmp_path):
    out = tmp_path / "bench.json"
    r = tool("bench.py", "--port", board.port, "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(out.read_text())
    steps = {x["step"]: x for x in doc["results"] if x["step"] not in ("prompt", "done")}
    assert set(steps) == set(["profile", "pilot-a", "pilot-pwm", "relay", "rcd", "proximity",
                              "temperature", "meter", "card", "wifi", "backend"])
    assert all(x["ok"] is True for x in steps.values()), r.stdout
    assert doc["failed"] == 0 and doc["passed"] == 11
    assert steps["pilot-a"]["v"]["high_mv"] == 12000
    assert abs(steps["pilot-pwm"]["v"]["duty_pct"] - 26.7) <= 1.0
    assert steps["relay"]["v"]["close_ms"] >= 30 and steps["relay"]["v"]["open_ms"] >= 20
    assert steps["card"]["v"]["id_tag"] == CARD
    assert steps["backend"]["v"]["charge_box_id"] == "BENCH-1"
    assert "summary: 11 passed, 0 failed, 0 skipped" in r.stdout


def test_bench_with_a_broken_world_fails_the_right_steps(board, flash):
    board.stop()  # the same flash, rewired: contactor feedback off, pilot shorted to PE
    broken = [["feedback-lost"], ["pilot-short"], ["card", CARD]]
    with simboard.SimBoard(flash=flash, world=broken, wifi=None, runtime="micropython") as b:
        r = tool("bench.py", "--port", b.port, "--skip", "backend", "--card-wait", "3")
    assert r.returncode == 1, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    failed = [ln.split()[1] for ln in lines if ln.strip().startswith("FAIL")]
    assert failed == ["pilot-a", "pilot-pwm", "relay", "wifi"]
    text = r.stdout
    assert "CP shorted to PE" in text
    assert "the feedback did not close within 500 ms" in text
    assert "auxiliary contact wiring to relay.feedback_pin" in text
    assert "the network was not found" in text  # no access point in this world
    for step in ("rcd", "temperature", "meter", "card"):
        assert any(ln.strip().startswith("PASS  " + step) for ln in lines), text


def test_the_default_board_is_the_virtual_esp32_with_the_firmware_frozen_in(config, tmp_path):
    # tools/vm.py's image, 32-bit as the chip: deploy finds the frozen firmware and copies only
    # boot.py, main.py, the profile and the settings, and the station runs from the image
    settings, secrets = config
    with simboard.SimBoard(flash=str(tmp_path), world=[["card", CARD]]) as b:
        r = mpremote(b.port, "exec", "import sys, firmware; print(sys.implementation._mpy >> 10, firmware.__name__)")
        assert r.returncode == 0 and "1 firmware" in r.stdout, r.stdout + r.stderr  # x86: 32-bit
        r = tool("deploy.py", "--port", b.port, "--settings", settings, "--secrets", secrets)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "the firmware frozen in its image (found)" in r.stdout and "copy 4 files" in r.stdout, r.stdout
        assert sorted(os.listdir(str(tmp_path))) == ["board.json", "boot.py", "main.py", "settings.json"]
        time.sleep(1.5)
        r = mpremote(b.port, "exec", "import os; print(sorted(os.listdir('/')))")
        assert r.returncode == 0, r.stderr
        assert "journal" in r.stdout or "energy.json" in r.stdout  # the station wrote its files


# ---------------------------------------------------------------- bad input

def test_a_missing_port_is_named(tmp_path):
    r = tool("deploy.py", "--port", "/dev/ttyNOPE9")
    assert r.returncode == 1 and "no board at /dev/ttyNOPE9" in r.stderr
    r = tool("bench.py", "--port", "/dev/ttyNOPE9")
    assert r.returncode == 2 and "no board at /dev/ttyNOPE9" in r.stderr


def test_a_board_that_never_answers():
    master, slave = os.openpty()  # a serial port with nothing behind it
    try:
        r = tool("deploy.py", "--port", os.ttyname(slave))
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 1
    assert "does not answer" in r.stderr and "tools/flash.py" in r.stderr


def test_a_secret_in_plain_sight_in_the_repository_is_refused():
    path = os.path.join(ROOT, "tests_host", "scenarios", "bench-settings.json")  # tracked territory
    with open(path, "w") as f:
        json.dump({"wifi_ssid": "home", "wifi_password": "hunter2hunter2"}, f)
    try:
        r = tool("deploy.py", "--port", "/dev/ttyNOPE9", "--settings", path)
    finally:
        os.remove(path)
    assert r.returncode == 2
    assert "wifi_password is a secret in plain sight in the repository" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


def test_a_secrets_file_git_would_commit_is_refused(tmp_path):
    path = os.path.join(ROOT, "tests_host", "scenarios", "bench-secrets.json")
    with open(path, "w") as f:
        json.dump({"wifi_password": "hunter2hunter2"}, f)
    try:
        r = tool("deploy.py", "--port", "/dev/ttyNOPE9", "--secrets", path)
    finally:
        os.remove(path)
    assert r.returncode == 2 and "would be committed" in r.stderr
    assert "hunter2" not in r.stderr + r.stdout


def test_bad_settings_and_secrets_are_named_before_the_board_is_touched(tmp_path):
    bad = tmp_path / "settings.json"
    bad.write_text(json.dumps({"max_current_a": 200}))
    r = tool("deploy.py", "--port", "/dev/ttyNOPE9", "--settings", str(bad))
    assert r.returncode == 2 and "max_current_a" in r.stderr and "above the maximum" in r.stderr
    sec = tmp_path / "secrets.json"
    sec.write_text(json.dumps({"wifi_password": "short"}))
    r = tool("deploy.py", "--port", "/dev/ttyNOPE9", "--secrets", str(sec))
    assert r.returncode == 2 and "wifi_password" in r.stderr and "short" not in r.stderr
    sec.write_text(json.dumps({"max_current_a": 16}))
    r = tool("deploy.py", "--port", "/dev/ttyNOPE9", "--secrets", str(sec))
    assert r.returncode == 2 and "not a secret setting" in r.stderr
    r = tool("deploy.py", "--port", "/dev/ttyNOPE9", "--board", "no-such-board")
    assert r.returncode == 2 and "no such board profile" in r.stderr
    r = tool("simboard.py", "--world", "fly-to-mars")
    assert r.returncode == 2 and "fly-to-mars" in r.stderr
