"""Runs first after every reset: outputs safe before anything else.

The contactor relay is driven open and the pilot held at a steady +12 V (state A/x1: no offer)
using the installed board profile's pins, or the generic DevKit pins if the profile is missing
or broken. Nothing here can raise: a broken profile must never leave the relay floating.
"""
try:
    from drivers import board

    _safe = board.make_safe("board.json")
    for _e in _safe["errors"]:
        print("boot:", _e)
except Exception as _e:  # noqa: BLE001 - boot must finish whatever happens
    print("boot: could not make the outputs safe:", _e)
