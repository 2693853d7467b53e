"""Starts the station from the installed board profile (board.json) and settings (settings.json),
and joins the Wi-Fi network the settings name."""
import machine

from drivers import wifi
from firmware import station


def _reboot(hard):
    machine.reset()  # the ESP32 has one reset; OCPP's soft and hard reset both restart the board


station.main(reboot=_reboot, wifi=wifi.start)
