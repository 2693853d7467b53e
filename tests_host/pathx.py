"""os.path.exists for the harness on every runtime: MicroPython's os has no os.path. One place
for the simulator (simrun.py), the LittleFS flash (lfs.py) and the portable test helpers
(portable.py); frozen into the virtual ESP32."""
import os


def exists(path):
    try:
        os.stat(str(path))
        return True
    except OSError:
        return False
