"""The contactor: a coil driven by relay.pin, contacts that follow after a mechanical delay.

Closing takes `close_ms` (30), opening `open_ms` (20) after the coil changes; a coil change
back before the contacts moved cancels the move. The auxiliary (mirror) contact reports the
real contact state. `welded`: once welded, closed contacts stay closed when the coil drops
(a weld applied while open takes hold at the next closing). `feedback_lost`: the auxiliary
contact's wire is off, so the feedback input always shows open. The World turns pin levels and
power into coil commands and drives the feedback input.
"""


class Relay:
    def __init__(self, cfg):
        self.pin = cfg["pin"]
        self.active_high = cfg.get("active_high", True)
        self.feedback_pin = cfg.get("feedback_pin")
        self.feedback_active_high = cfg.get("feedback_active_high", True)
        if self.feedback_active_high is None:
            self.feedback_active_high = True
        self.close_ms = 30
        self.open_ms = 20
        self.coil = False
        self.closed = False      # the main contacts
        self.welded = False
        self.feedback_lost = False
        self.operations = 0      # contact movements, for tests
        self._due = None

    def energised_by(self, level):
        """Coil state for an output level on relay.pin."""
        return (level == 1) == bool(self.active_high)

    def feedback_level(self):
        """Level of the feedback input for the current contact state."""
        closed = self.closed and not self.feedback_lost
        return 1 if closed == bool(self.feedback_active_high) else 0

    def command(self, energised, t):
        if energised == self.coil:
            return
        self.coil = energised
        if energised == self.closed or (self.closed and self.welded):
            self._due = None
        else:
            self._due = t + (self.close_ms if energised else self.open_ms)

    def next_due(self):
        return self._due

    def step(self, t):
        """Move the contacts if due; True when they moved."""
        d = self._due
        if d is None or t < d:
            return False
        self._due = None
        if self.coil:
            new = True
        else:
            new = self.closed and self.welded
        if new == self.closed:
            return False
        self.closed = new
        self.operations += 1
        return True
