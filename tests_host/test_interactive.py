"""Interactive simulator: typed commands drive the world, a status line reports the station."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM = os.path.join(ROOT, "tools", "sim.py")


def test_typed_commands_and_status_line():
    cmds = "plug\nev-ready 16\nwait 3s\nbogus\nh\nq\n"
    p = subprocess.run([sys.executable, SIM, "--speed", "50"], input=cmds, capture_output=True, text=True, timeout=120)
    out = p.stdout
    assert p.returncode == 0, out + p.stderr
    assert "action=plug" in out and "contactor closed=True" in out
    assert "error: unknown verb 'bogus'" in out
    assert "shortcuts:" in out
    assert "truth=" in out


def test_status_line_shows_state_offer_contactor_current_energy_faults():
    cmds = "p\nr\nwait 20s\n"
    p = subprocess.run([sys.executable, SIM, "--speed", "20"], input=cmds, capture_output=True, text=True, timeout=120)
    lines = [line for line in p.stdout.splitlines() if line.startswith("T=")]
    assert lines, p.stdout
    last = lines[-1]
    for word in ("state=C2", "offer=32.0A", "contactor=closed", "current= 16.0A", "energy=", "faults=none"):
        assert word in last, last


def test_cpython_runtime_runs_the_same_scenario(tmp_path):
    ev = tmp_path / "e.jsonl"
    p = subprocess.run([sys.executable, SIM, "--runtime", "cpython", "--scenario",
                        os.path.join(ROOT, "tests_host", "scenarios", "c_to_b.scn"), "--events", str(ev), "--quiet"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    text = ev.read_text()
    assert '"closed": true' in text and '"closed": false' in text
