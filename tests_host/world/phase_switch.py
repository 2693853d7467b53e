"""The phase switch of a 1p/3p board (profile section `phase_switch`: pin, active_high): a second
contactor whose coil connects L2 and L3 to the outlet. Energised, the outlet has 3 phases;
released, L1 only.

It follows its coil at once (no mechanical delay is modelled). The coil is energised only while
the station has power and the board drives the active level on `pin`: it is released at power-up
(a pin not yet set up as an output drives nothing, whatever its active level), during a power cut,
after a reset, and while an open-drain output is let go or the pin is an input. A change the
board makes without an edge on the line (an active-low pin set up as an output at level 0) is
seen at the world's next advance, as for the main contactor.

The tests' safety bookkeeping: `switches` counts its changes of state, `switch_under_load` those
made while the main contactor's contacts were closed (the world's Relay model, not the command)
with the mains present. A power cut releases the coil (counted in `switches`), but nothing flows
then: it is never counted under load. A reset of the board with the contacts closed is (both
coils drop at once while the car draws).

Imported by the World only for a board that has the section (a World without one is the size
it always was).
"""
import machine


def driven(pin):
    """The level the board drives on pin, or None while it drives nothing."""
    lines = getattr(machine, "_lines", None)  # (the fake's GPIO table: mode, out, pwm)
    if lines is not None:
        ln = lines.get(pin)
        if ln is None:
            return None
        mode = ln.mode
        if ln.pwm is None and mode != machine.Pin.OUT \
                and not (mode == machine.Pin.OPEN_DRAIN and ln.out == 0):
            return None
    return machine.hw_level(pin)


class PhaseSwitch:
    def __init__(self, cfg, world):
        self.world = world
        self.pin = cfg["pin"]
        self.active_high = cfg.get("active_high", True)
        if self.active_high is None:
            self.active_high = True
        self.coil = False          # energised: 3 phases at the outlet
        self.switches = 0
        self.switch_under_load = 0
        self.on_pin = self._on_pin  # the hw_on_output callback (made once)

    def energised_by(self, level):
        """Coil state for the level the board drives on pin (None: it drives nothing)."""
        return level is not None and (level == 1) == bool(self.active_high)

    def phases(self):
        """The outlet's phases: 3 energised, 1 released."""
        return 3 if self.coil else 1

    def _on_pin(self, level):
        self.update()

    def update(self):
        """The coil as the board drives it now (released without power)."""
        w = self.world
        on = w.powered and self.energised_by(driven(self.pin))
        self.command(on, w.powered and w.relay.closed)

    def command(self, energised, loaded):
        """The coil is now `energised`; `loaded`: the main contacts are closed on live mains.
        True when the switch moved."""
        if energised == self.coil:
            return False
        self.coil = energised
        self.switches += 1
        if loaded:
            self.switch_under_load += 1
        return True
