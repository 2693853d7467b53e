"""The control tick allocates no heap while charging (real MicroPython, meter polling included).

On both interpreters: the virtual ESP32 (32-bit, as the board: small ints end at 2**30, so
arithmetic that a 64-bit build keeps in small ints may allocate there) and the 64-bit unix port.
"""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))


@pytest.mark.parametrize("runtime", ["esp32", "micropython"])
def test_control_tick_allocates_nothing(tmp_path, runtime):
    import sim
    import _venv

    sim.prepare_flash(str(tmp_path), os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json"), None, None)
    if runtime == "esp32":
        cmd, env = sim.vm_command("alloc_probe", [ROOT], 1024 * 1024)
    else:
        sim.compile_for_sim()
        env = dict(os.environ, MICROPYPATH=sim.micropython_path())
        cmd = [_venv.bin_path("micropython"), os.path.join(HERE, "alloc_probe.py"), ROOT]
    p = subprocess.run(cmd, cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    worst = int(p.stdout.split("tick-alloc")[1].split()[0])
    assert worst == 0, "a control tick allocated %d bytes" % worst
