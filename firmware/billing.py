"""What a session costs: the tariff of the driver's group (firmware/tariff.py, docs/tariffs.md)
applied to the session's energy and time as it goes, kept in the session journal so that a power
cut loses nothing, shown in the status and reported at the end of the session.

    billing = Billing(root, settings, fs)
    billing.tariffs               tariff.Tariffs, or None: sessions are not priced
    billing.replace(text)         a new table from the back end: None, or the error (nothing changes)
    billing.may_charge(group, epoch) -> (True, tariff name or None) | (False, reason)
    billing.authorized(tag, group, tariff)   who the next session is for (the token flow)
    billing.begin(tag, epoch, wh) -> journal fields {"g", "tf"} of the new session
    billing.update(epoch, wh);  billing.fields() -> {"t", "x"} for a progress record
    billing.retime(epoch)         the session began then (the time was learnt after its start)
    billing.resume(session)       after a power cut: the journal's last state of the open session
    billing.finish(epoch, wh) -> {"cost", "currency", "tariff", "group"} or {}

The table comes from `tariffs.json` when the back end has set one (DataTransfer SetTariffs,
docs/tariffs.md), else from the settings' `tariffs`. The back end stays the authority on billing.
"""
import json

from firmware import store

TARIFF_FILE = "tariffs.json"
# tariffs.json holds a table the back end sent (at most tariff.MAX_TEXT, 4 KB), re-written by
# json.dumps, which adds a blank after every comma and colon: twice that is room enough.
TARIFF_FILE_MAX = 8192


class Billing:
    def __init__(self, root, settings, fs=None):
        self.fs = fs
        self.path = (root.rstrip("/") + "/" + TARIFF_FILE) if root else TARIFF_FILE
        self.tariffs = None
        self.error = None  # why the stored table was not applied
        self._next = None  # (tag, group, tariff) of the last authorization
        self.bill = None  # tariff.Bill of the running session
        self._pending = None  # its tariff, until the first reading starts the bill
        self._start = None
        self._wh0 = None  # the register when the session began (None: the meter was silent)
        self.group = None
        doc = None
        try:
            doc = store.read_json(self.path, fs, TARIFF_FILE_MAX)
        except ValueError as e:
            self.error = "%s: %s" % (TARIFF_FILE, e)
        if doc is None:
            doc = settings.get("tariffs")
        if doc is not None:
            from firmware import tariff
            try:
                self.tariffs = tariff.parse(doc)
            except ValueError as e:
                self.error = "tariffs: %s" % e

    def replace(self, text):
        """A table from the back end (JSON text): applied and stored, or the reason it was not."""
        from firmware import tariff
        try:
            t = tariff.parse(text)
        except ValueError as e:
            return str(e)
        try:
            store.write_json(self.path, json.loads(t.to_json()), self.fs)
        except OSError as e:
            return "not stored: %s" % e
        self.tariffs = t
        self.error = None
        return None

    def may_charge(self, group, epoch):
        if self.tariffs is None:
            return True, None
        return self.tariffs.may_charge(group, epoch)

    def authorized(self, tag, group, tariff_name):
        self._next = (tag, group, tariff_name)

    def begin(self, tag, epoch, wh):
        """A session starts: its group and tariff (from the authorization when it was for this
        tag, else the group's default), and the bill from here."""
        n = self._next
        self._next = None
        group, name = (n[1], n[2]) if n is not None and n[0] == tag else (None, None)
        self.group = group
        self.bill = None
        t = self.tariffs
        if t is None:
            return {}
        if name is None:
            name = t.group_tariff(group)
        self._pending = name
        self._start = epoch
        self._wh0 = wh
        self.update(epoch, wh)  # the bill starts at the first reading known with the time
        fields = {"tf": name}
        if group is not None:
            fields["g"] = group
        return fields

    def resume(self, session):
        """The open session of the journal after a power cut: its bill as last recorded."""
        from firmware import tariff
        self.group = session.get("g")
        self.bill = self._pending = None
        name = session.get("tf")
        if self.tariffs is None or name is None:
            return
        t0, x = session.get("te") or session.get("t"), session.get("x") or 0
        wh = session.get("e") if session.get("te") else session.get("e0")
        if t0 is None or wh is None:
            return
        try:
            self.bill = tariff.Bill.from_dict(self.tariffs, {"tariff": name, "t": t0, "wh": wh, "x": x})
        except ValueError:  # the table changed meanwhile and lost that tariff: unpriced
            self.bill = None

    def retime(self, epoch):
        """The session began at `epoch`, learnt after its start (the time was not known then):
        its bill, still waiting for the time, starts there."""
        if self._pending is not None and self._start is None:
            self._start = epoch

    def update(self, epoch, wh):
        if epoch is None or wh is None:
            return
        if self.bill is not None:
            self.bill.update(epoch, wh)
        elif self._pending is not None:
            # The meter had not answered, or the time was not known, when the session began:
            # the bill starts at the session's start where it is known by now.
            from firmware import tariff
            t0 = self._start if self._start is not None else epoch
            wh0 = self._wh0 if self._wh0 is not None else wh
            self.bill = tariff.Bill(self.tariffs, self._pending, t0, wh0)
            self._pending = None
            self.bill.update(epoch, wh)

    def fields(self):
        b = self.bill
        return {"t": b.t, "x": b.x} if b is not None else {}

    def cost(self):
        """(minor units, currency, decimals) of the running session, or None."""
        b = self.bill
        return (b.cost, self.tariffs.currency, self.tariffs.decimals) if b is not None else None

    def finish(self, epoch, wh):
        self.update(epoch, wh)
        b = self.bill
        self.bill = self._pending = None
        if b is None:
            return {}
        return {"cost": b.cost, "currency": self.tariffs.currency, "decimals": self.tariffs.decimals,
                "tariff": b.tariff, "group": self.group}
