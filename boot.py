"""Runs first after every reset: make the outputs safe, then pick the application slot.

Outputs first: the contactor relay is driven open and the pilot held at a steady +12 V (state
A/x1: no offer) using the installed board profile's pins (/board.json), or the generic DevKit pins
if the profile is missing or broken. Nothing else runs before that, not even the slot choice,
which may write to flash (and a full or failing flash may take its time). Nothing here can raise:
a broken profile must never leave the relay floating.

Slot: a board updated over the air keeps two copies of the application in /app (see
docs/firmware-update.md); `appslot.select` names the one to run (the new one on its trial boot,
the old one after a failed trial) and never raises. A board deployed the plain way has no /app
and runs the files at /. The modules used above are imported again from the chosen slot.
"""
import sys

try:
    from drivers import board

    _safe = board.make_safe("board.json")
    for _e in _safe["errors"]:
        print("boot:", _e)
except Exception as _e:  # noqa: BLE001 - boot must finish whatever happens
    print("boot: could not make the outputs safe:", _e)

# The CPU at 240 MHz (a stock image runs at 160): the control tick's share of the CPU and the
# longest stalls shrink by a third (docs/benchmarks.md, "CPU on the real chip"). After the
# outputs are safe, as everything else.
try:
    import machine

    machine.freq(240000000)
except Exception as _e:  # noqa: BLE001 - boot must finish whatever happens
    print("boot: could not set the CPU clock:", _e)

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
    for _m in [k for k in sys.modules if k.split(".")[0] in ("firmware", "drivers")]:
        del sys.modules[_m]  # board and appslot came from /: main.py imports the slot's own
