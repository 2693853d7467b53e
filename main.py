"""Starts the station from the installed board profile (board.json) and settings (settings.json),
and joins the Wi-Fi network the settings name.

Whatever ends the station's tasks, its outputs are made safe first (firmware/station.py main).
Ctrl-C (mpremote, a person at the REPL) then leaves the board at the REPL; anything else
restarts it, and the journal carries an open session across as after a power cut."""
import machine
import sys

from drivers import wifi
from firmware import station


def _reboot(hard):
    machine.reset()  # the ESP32 has one reset; OCPP's soft and hard reset both restart the board


try:
    station.main(reboot=_reboot, wifi=wifi.start)
except KeyboardInterrupt:
    print("main: stopped at the REPL; contactor open")
except Exception as e:  # noqa: BLE001 - a board must not sit at the REPL after a crash
    sys.print_exception(e)  # pyright: ignore[reportAttributeAccessIssue] - MicroPython's sys
    machine.reset()
