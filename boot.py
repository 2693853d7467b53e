"""Runs first after every reset: pick the application slot, then make the outputs safe.

Slot: a board updated over the air keeps two copies of the application in /app (see
docs/firmware-update.md); `appslot.select` names the one to run (the new one on its trial boot,
the old one after a failed trial) and never raises. A board deployed the plain way has no /app
and runs the files at /.

Outputs: the contactor relay is driven open and the pilot held at a steady +12 V (state A/x1: no
offer) using the installed board profile's pins, or the generic DevKit pins if the profile is
missing or broken. Nothing here can raise: a broken profile must never leave the relay floating.
"""
import sys

_slot = None
try:
    try:
        import appslot as _appslot  # pyright: ignore[reportMissingImports] - the loader's copy at / (slotted boards)
    except ImportError:
        from firmware import appslot as _appslot  # plain deployment: the package at /
    _slot = _appslot.select("/app")
except Exception as _e:  # noqa: BLE001 - boot must finish whatever happens
    print("boot: slot selection failed:", _e)
if _slot:
    sys.path.insert(0, _slot)  # the slot's firmware/ and drivers/ shadow anything at /
    for _m in [k for k in sys.modules if k == "firmware" or k.startswith("firmware.")]:
        del sys.modules[_m]  # appslot may have come from /firmware: import it again from the slot

try:
    from drivers import board

    _safe = board.make_safe("board.json")
    for _e in _safe["errors"]:
        print("boot:", _e)
except Exception as _e:  # noqa: BLE001 - boot must finish whatever happens
    print("boot: could not make the outputs safe:", _e)
