"""The control tick allocates no heap while charging (real MicroPython, meter polling included)."""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))


def test_control_tick_allocates_nothing(tmp_path):
    import sim
    import _venv

    sim.compile_for_sim()
    sim.prepare_flash(str(tmp_path), os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json"), None, None)
    env = dict(os.environ, MICROPYPATH=sim.micropython_path())
    p = subprocess.run([_venv.bin_path("micropython"), os.path.join(HERE, "alloc_probe.py"), ROOT],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    worst = int(p.stdout.split("tick-alloc")[1].split()[0])
    assert worst == 0, "a control tick allocated %d bytes" % worst
