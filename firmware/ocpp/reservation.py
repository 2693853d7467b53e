"""Reservations (OCPP 1.6 sections 5.13, 3.12; errata 3.54): one reservation for connector 1
(or for the charge point, with ReserveConnectorZeroSupported), for an idTag or its parentIdTag's
group, until its expiryDate, a cancel, a fault or unavailability, or the transaction it was made
for. Kept in ocpp.json ("r") across a power cut. Imported at the first ReserveNow, or at boot when
one is kept: most chargers are never reserved."""
from firmware import auth
from firmware.ocpp import dt
from firmware.ocpp import rpc as rpc_mod
from firmware.ocpp.rpc import RpcError



class Reservations:
    def __init__(self, cp):
        self.cp = cp
        cp.charger.reserve(self.current is not None)

    @property
    def current(self):
        """The reservation in force ({"id", "tag", "parent", "exp"}) or None: read only."""
        return self.cp.kept["r"]

    def matches(self, tag, group):
        """5.13: the reserved idTag, or any token of the reservation's parentIdTag group."""
        r = self.current
        return r is not None and tag is not None and auth.same_group(r["tag"], r["parent"], tag, group)

    def used(self):
        """The StartTransaction of the reserved idTag is queued: the reservation is over (saved
        with the caller's mark of that, in the same write of ocpp.json)."""
        self.cp.kept["r"] = None
        self.cp.charger.reserve(False)

    def service(self, now, epoch):
        r = self.current
        c = self.cp.charger
        # 5.13: a reservation "SHALL be terminated ... (3) when the Charge Point or connector
        # are set to Faulted or Unavailable", and when it expires.
        if r is not None and (epoch >= r["exp"] or c.faults.any() or not c.available):
            self._set(None)

    def _set(self, r):
        self.cp.kept["r"] = r
        self.cp.charger.reserve(r is not None)
        self.cp.save()

    async def ReserveNow(self, p):
        cp = self.cp
        c = cp.charger
        cid = p["connectorId"]
        if cid == 0 and not cp.config.get("ReserveConnectorZeroSupported"):
            return {"status": "Rejected"}
        if cid > 1:
            return {"status": "Rejected"}
        try:
            exp = dt.parse(p["expiryDate"])
        except ValueError:
            raise RpcError(rpc_mod.PROPERTY, "expiryDate is not a date-time")
        r = self.current
        if c.faults.any():
            return {"status": "Faulted"}
        if not c.available:
            return {"status": "Unavailable"}
        if r is not None and r["id"] != p["reservationId"]:
            return {"status": "Occupied"}
        if c.session or c.plugged or cp.remote.waiting_for_car():
            return {"status": "Occupied"}
        self._set({"id": p["reservationId"], "tag": p["idTag"], "parent": p.get("parentIdTag"), "exp": exp})
        return {"status": "Accepted"}

    async def CancelReservation(self, p):
        r = self.current
        if r is None or r["id"] != p["reservationId"]:
            return {"status": "Rejected"}
        self._set(None)
        return {"status": "Accepted"}
