"""Firmware management (OCPP 1.6 sections 6.25, 6.36, 5.9; docs/firmware-update.md): UpdateFirmware
and GetDiagnostics handed to update.Updater and update.Diagnostics, their status notifications,
and the confirmation of a new version on trial. Imported at the first of these calls, or at boot
when the board has an updater."""
from firmware.ocpp import dt
from firmware.ocpp import rpc as rpc_mod
from firmware.ocpp.rpc import RpcError

CONFIRM_MS = 300000  # a new firmware version runs this long without a fault before it is kept


class Maintenance:
    def __init__(self, cp):
        self.cp = cp
        self._healthy_since = None  # tick since which a trial firmware has been healthy
        self._confirmed = False

    def service(self, now, epoch):
        # A new version on trial is confirmed once it has been accepted by the back end and
        # ran CONFIRM_MS without a fault; otherwise the next boot rolls back (appslot.py).
        cp = self.cp
        u = cp.opts.updater
        if u is None or self._confirmed or not cp.boot.accepted:
            return
        if cp.charger.faults.any():
            self._healthy_since = None
            return
        if self._healthy_since is None:
            self._healthy_since = now
        elif cp.clock.ticks_diff(now, self._healthy_since) >= CONFIRM_MS:
            self._confirmed = True
            u.confirm()

    def status_of(self, what):
        """The status for a triggered FirmwareStatusNotification or DiagnosticsStatusNotification."""
        o = self.cp.opts
        part = o.updater if what == "FirmwareStatusNotification" else o.diagnostics
        return part.status() if part is not None else "Idle"

    async def UpdateFirmware(self, p):
        cp = self.cp
        u = cp.opts.updater
        if u is None:
            raise RpcError(rpc_mod.NOT_SUPPORTED, "no firmware updater on this board")
        try:
            when = dt.parse(p["retrieveDate"])
        except ValueError:
            raise RpcError(rpc_mod.PROPERTY, "retrieveDate is not a date-time")
        u.request(p["location"], when, p.get("retries", 1), p.get("retryInterval", 60), cp.wall.now())
        return {}

    def _diagnostics(self):
        """opts.diagnostics, made by opts.make_diagnostics when first needed; its task starts
        then if the link's tasks run already."""
        o = self.cp.opts
        d = o.diagnostics
        if d is None and o.make_diagnostics is not None:
            d = o.diagnostics = o.make_diagnostics()
            self.cp.start_side_task(d)
        return d

    async def GetDiagnostics(self, p):
        d = self._diagnostics()
        if d is None:
            raise RpcError(rpc_mod.NOT_SUPPORTED, "no diagnostics on this board")
        start = stop = None
        try:
            if p.get("startTime"):
                start = dt.parse(p["startTime"])
            if p.get("stopTime"):
                stop = dt.parse(p["stopTime"])
        except ValueError:
            raise RpcError(rpc_mod.PROPERTY, "startTime/stopTime is not a date-time")
        name = d.request(p["location"], p.get("retries", 1), p.get("retryInterval", 60), start, stop)
        return {"fileName": name} if name else {}
