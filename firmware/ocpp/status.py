"""Statuses (OCPP 1.6 section 4.9): derived from the charger's view every service round, and
sent when they change. While the link is down only the newest status is kept; all connectors are
reported again after every accepted BootNotification and on TriggerMessage. errorCode comes from
error_code(); while the flash is full or failing (the station's flash fault) both connectors
report OtherError with the vendorErrorCode FlashFull or FlashError, unless a fault of the charger
has its own errorCode."""
from firmware import safety
from firmware.ocpp import dt

CP_FAULTS = (safety.CONFIG, safety.OVERTEMP, safety.TEMP_SENSOR)  # also Faulted on connector 0

# ChargePointErrorCode (StatusNotification.errorCode) of each of the charger's faults, in the
# order of safety.CODES: rcd-trip, rcd-selftest, welded, contactor, diode, pilot, pilot-short,
# overcurrent, over-temperature, temp-sensor, cable, config, meter, lock (a constant tuple: in
# flash when frozen)
_ERRORS = ("GroundFailure", "GroundFailure", "PowerSwitchFailure", "PowerSwitchFailure",
           "EVCommunicationError", "EVCommunicationError", "EVCommunicationError", "OverCurrentFailure",
           "HighTemperature", "OtherError", "OtherError", "InternalError", "PowerMeterFailure",
           "ConnectorLockFailure")


def error_code(fault):
    """The ChargePointErrorCode of one of the charger's fault codes (OtherError if unknown)."""
    codes = safety.CODES
    for i in range(len(codes)):
        if codes[i] == fault:
            return _ERRORS[i]
    return "OtherError"

AVAILABLE = "Available"
PREPARING = "Preparing"
CHARGING = "Charging"
SUSPENDED_EV = "SuspendedEV"
SUSPENDED_EVSE = "SuspendedEVSE"
FINISHING = "Finishing"
RESERVED = "Reserved"
UNAVAILABLE = "Unavailable"
FAULTED = "Faulted"
_IN_SESSION = (CHARGING, SUSPENDED_EV, SUSPENDED_EVSE)


class Status:
    def __init__(self, cp):
        self.cp = cp
        self._status = [None, None]  # per connector: (status, errorCode, epoch, vendorErrorCode or None)
        self._reported = [None, None]  # per connector: (status, errorCode, vendorErrorCode) last sent

    def connector_status(self, k=1):
        """The status derived last for connector `k` (None before the first round)."""
        s = self._status[k]
        return s[0] if s is not None else None

    def derived(self, k=1):
        """(status, errorCode, epoch it began, vendorErrorCode or None) derived last for
        connector `k`, or None before the first round: read only."""
        return self._status[k]

    def reported(self, k=1):
        """The status last sent for connector `k`, or None."""
        r = self._reported[k]
        return r[0] if r is not None else None

    def report_all(self, connectors=(0, 1)):
        """Send these connectors' statuses again, changed or not."""
        for k in connectors:
            self._reported[k] = None

    def service(self, now, epoch):
        flash = self.cp.st.flash_fault
        for k in (0, 1):
            status, code = self._derive_cp() if k == 0 else self._derive()
            rep = self._reported[k]
            if k == 1 and rep is not None and (rep[0] == FINISHING or rep[0] == RESERVED) and status in _IN_SESSION:
                status = PREPARING  # 4.9: Finishing and Reserved lead to a session only through Preparing (F2, G2)
            vendor = None
            if code == "NoError" and flash is not None:
                code, vendor = "OtherError", flash  # the flash is full or failing (station._flash_check)
            old = self._status[k]
            if old is None or old[0] != status or old[1] != code or old[3] != vendor:
                self._status[k] = (status, code, epoch, vendor)

    def _derive(self):
        cp = self.cp
        c = cp.charger
        if c.faults.any():
            codes = c.faults.codes()
            return FAULTED, error_code(codes[0])
        if c.session:
            if c.contactor:
                return CHARGING, "NoError"
            if c.offer_da == 0:
                return SUSPENDED_EVSE, "NoError"
            return SUSPENDED_EV, "NoError"
        if not c.available:
            return UNAVAILABLE, "NoError"
        reserved = cp.reservation is not None
        if c.plugged:
            if c.stopped:
                return FINISHING, "NoError"
            if reserved and not c.authorized:
                return RESERVED, "NoError"  # 5.13: a car without identification keeps it Reserved
            return PREPARING, "NoError"
        if cp.remote.waiting_for_car():
            return PREPARING, "NoError"
        if reserved:
            return RESERVED, "NoError"
        return AVAILABLE, "NoError"

    def _derive_cp(self):
        """Connector 0, the charge point itself (4.9): Faulted for a fault of the box rather than
        of the outlet or the vehicle: its configuration, its temperature or sensor."""
        f = self.cp.charger.faults
        for code in CP_FAULTS:
            if f.active(code):
                return FAULTED, error_code(code)
        return (AVAILABLE if self.cp.remote.operative else UNAVAILABLE), "NoError"

    async def send(self, now):
        """The StatusNotification of a connector whose status the back end has not seen."""
        cp = self.cp
        for k in (0, 1):
            s = self._status[k]
            if s is not None and self._reported[k] != (s[0], s[1], s[3]):
                # A status seen before the back end told the time is stamped with the time now.
                t = s[2] if s[2] >= cp.boot.synced_at else cp.wall.now()
                p = {"connectorId": k, "status": s[0], "errorCode": s[1], "timestamp": dt.iso(t)}
                if s[3] is not None:
                    p["vendorErrorCode"] = s[3]
                await cp.call("StatusNotification", p)
                self._reported[k] = (s[0], s[1], s[3])
                return True
        return False

    def local_list_conflict(self):
        """3.5.2: the back end's answer contradicts the local list."""
        s = self._status[0]
        self.cp.queue("StatusNotification", {"connectorId": 0, "status": s[0] if s else AVAILABLE,
                                             "errorCode": "LocalListConflict"})
