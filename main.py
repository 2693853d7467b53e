"""Starts the station from the installed board profile (board.json) and settings (settings.json)."""
from firmware import station

station.main()
