"""boot.py: the outputs are safe before anything else runs, the choice of the application slot
(which may write to flash) included."""
import json
import os
import runpy
import shutil
import sys

import pytest

import machine
from firmware import appslot

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BOOT = os.path.join(ROOT, "boot.py")


def outputs(relay, pilot):
    """(relay pin driven as an output, its level, pilot PWM duty or None)."""
    pwm = machine.hw_pwm(pilot)
    return machine.Pin(relay).mode() == machine.Pin.OUT, machine.hw_level(relay), pwm and pwm[1]


def boot(monkeypatch, tmp_path, profile, relay, pilot, slot=None):
    """Run boot.py after a power-on; returns the outputs as they were when the slot was chosen."""
    machine.hw_reset()
    monkeypatch.chdir(tmp_path)
    seen = []

    def select(root="/app", fs=None):
        seen.append(outputs(relay, pilot))
        return slot
    monkeypatch.setattr(appslot, "select", select)
    saved = dict(sys.modules)
    try:
        runpy.run_path(BOOT, run_name="boot")
    finally:  # boot.py may drop modules to import them from a slot
        sys.modules.clear()
        sys.modules.update(saved)
    assert len(seen) == 1
    return seen[0]


def test_outputs_are_safe_before_the_slot_is_chosen(monkeypatch, tmp_path):
    shutil.copy(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json"), tmp_path / "board.json")
    # relay (GPIO 26, active high) driven open, pilot (GPIO 25) at a steady +12 V
    assert boot(monkeypatch, tmp_path, "board.json", 26, 25) == (True, 0, 65535)


def test_with_the_profile_own_pins(monkeypatch, tmp_path):
    prof = json.load(open(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json")))
    prof["relay"].update({"pin": 14, "active_high": False})
    prof["pilot"]["pwm_pin"] = 13
    (tmp_path / "board.json").write_text(json.dumps(prof))
    assert boot(monkeypatch, tmp_path, "board.json", 14, 13) == (True, 1, 65535)


@pytest.mark.parametrize("text", [None, "{broken", "null"])
def test_without_a_usable_profile_the_devkit_pins_are_made_safe_first(monkeypatch, tmp_path, text):
    if text is not None:
        (tmp_path / "board.json").write_text(text)
    assert boot(monkeypatch, tmp_path, "board.json", 26, 25) == (True, 0, 65535)


def test_a_slot_is_imported_afresh(monkeypatch, tmp_path):
    shutil.copy(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json"), tmp_path / "board.json")
    slot = str(tmp_path / "app" / "a")
    saved_path = list(sys.path)
    try:
        machine.hw_reset()
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(appslot, "select", lambda root="/app", fs=None: slot)
        saved = dict(sys.modules)
        try:
            g = runpy.run_path(BOOT, run_name="boot")
            assert sys.path[0] == slot
            # the board module and appslot came from /: main.py must import the slot's own
            assert "drivers.board" not in sys.modules and "firmware.appslot" not in sys.modules
            assert g["_slot"] == slot
        finally:
            sys.modules.clear()
            sys.modules.update(saved)
    finally:
        sys.path[:] = saved_path
