"""Remote control and availability (OCPP 1.6 sections 5.1, 5.11, 5.12, 5.14, 5.17, 5.18):
ChangeAvailability (Scheduled while a transaction runs, kept across a power cut), remote start
(with AuthorizeRemoteTxRequests and ConnectionTimeOut) and stop, Reset (a soft one waits for the
StopTransaction to go out), UnlockConnector and TriggerMessage. Every command becomes one of the
charger's commands: authorize, stop, set_available, unlock; the charger decides."""
from firmware import charger as chg

RESET_WAIT_MS = 30000  # a soft Reset waits this long at most for the StopTransaction to go out
UNLOCK_WAIT_MS = 10000  # UnlockConnector's answer waits this long at most for the lock to open
# (the stop, the meter showing no current, a move with its retries: about 5 s; MessageTimeout 30 s)
POLL_MS = 100
_TRIGGERS = ("BootNotification", "Heartbeat", "DiagnosticsStatusNotification", "FirmwareStatusNotification")


class Remote:
    def __init__(self, cp):
        self.cp = cp
        self._auth_at = None  # tick of an authorization waiting for the car (ConnectionTimeOut)
        self._authorizing = None  # (idTag, TxProfile) of a remote start waiting for Authorize.conf
        self._reset = None  # "Soft"/"Hard" once a Reset was accepted
        self._reset_at = None  # tick of a soft Reset that stopped a transaction
        cp.charger.set_available(self.operative)

    @property
    def operative(self):
        """Operative wanted for the charge point and connector 1 (ocpp.json "o")."""
        return self.cp.kept["o"]

    def waiting_for_car(self):
        """An authorization waits for the car to be plugged in (ConnectionTimeOut)."""
        return self._auth_at is not None

    def wait_for_car(self):
        """An authorization without a car: it lapses after ConnectionTimeOut."""
        self._auth_at = self.cp.clock.ticks_ms()

    # ---- the transaction -------------------------------------------------------------------

    def session_started(self):
        self._auth_at = None

    def session_ended(self):
        self._apply_scheduled()

    # ---- every service round ------------------------------------------------------------

    def service(self, now, epoch):
        cp = self.cp
        c = cp.charger
        if not c.session:
            self._apply_scheduled()  # (after a power cut that ended the transaction)
        if self._auth_at is not None:
            if c.session or c.plugged:
                self._auth_at = None
            elif cp.clock.ticks_diff(now, self._auth_at) >= cp.config.get("ConnectionTimeOut") * 1000:
                self._auth_at = None
                c.forget_authorization()
        if self._reset is not None and c.session is False and not cp.busy() and not self._reset_waits(now):
            kind = self._reset
            self._reset = None
            cp.save()
            cp.opts.reboot(kind == "Hard")

    async def send(self, now):
        """The Authorize.req of a remote start with AuthorizeRemoteTxRequests."""
        if self._authorizing is None:
            return False
        cp = self.cp
        tag, prof = self._authorizing
        self._authorizing = None
        res = await cp.call("Authorize", {"idTag": tag})
        info = res["idTagInfo"]
        cp.tokens.learn(tag, info)
        if info["status"] == "Accepted":
            self._authorized(tag, prof, info.get("parentIdTag"))
        return True

    # ---- availability --------------------------------------------------------------------

    async def ChangeAvailability(self, p):
        cid = p["connectorId"]
        if cid > 1:
            return {"status": "Rejected"}
        kept = self.cp.kept
        want = p["type"] == "Operative"
        if self.cp.charger.session and not want:
            kept["so"] = want
            self.cp.save()
            return {"status": "Scheduled"}
        if kept["so"] is not None:
            kept["so"] = None
            self.cp.save()
        self._set_operative(want)
        return {"status": "Accepted"}

    def _apply_scheduled(self):
        kept = self.cp.kept
        want = kept["so"]
        if want is not None:
            kept["so"] = None
            self.cp.save()
            self._set_operative(want)

    def _set_operative(self, want):
        if want != self.cp.kept["o"]:
            self.cp.kept["o"] = want
            self.cp.save()
        self.cp.charger.set_available(want)  # available: from the next control tick on

    # ---- remote start and stop -----------------------------------------------------------

    async def RemoteStartTransaction(self, p):
        cp = self.cp
        c = cp.charger
        tokens = cp.tokens
        cid = p.get("connectorId", 1)
        tag = p["idTag"]
        if cid != 1 or c.session or c.faults.any() or not c.available or self._auth_at is not None \
                or not c.inp.journal_ok:  # (a session can not start while its start can not be recorded)
            return {"status": "Rejected"}
        group = tokens.group_of(tag)
        r = cp.reservation
        if r is not None and not cp.reservation_matches(tag, group):
            if group is None and r["parent"] and cp.online():
                group = await tokens.learn_group(tag)  # 5.13: learn its parentIdTag first
            if not cp.reservation_matches(tag, group):
                return {"status": "Rejected"}
        if not cp.st.billing.may_charge(group, cp.wall.now())[0]:  # outside sharing hours
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        if prof is not None and prof.get("chargingProfilePurpose") != "TxProfile":
            return {"status": "Rejected"}
        if cp.config.get("AuthorizeRemoteTxRequests") and not tokens.pre_authorized(tag):
            self._authorizing = (tag, prof)
        else:
            self._authorized(tag, prof, group)
        return {"status": "Accepted"}

    def _authorized(self, tag, prof, group=None):
        cp = self.cp
        c = cp.charger
        if c.session or c.faults.any() or not c.available:
            return
        if group is None:
            group = cp.tokens.group_of(tag)
        tariff = cp.st.billing.may_charge(group, cp.wall.now())[1]
        cp.tokens.grant(tag, group, tariff)
        if prof is not None:
            cp.part("smart").install_on_start(prof)

    async def RemoteStopTransaction(self, p):
        cp = self.cp
        if cp.tx.current is None or cp.charger.session is False:
            return {"status": "Rejected"}
        tid = cp.tx.transaction_id()
        if tid is None or tid != p["transactionId"]:
            return {"status": "Rejected"}
        cp.charger.stop(chg.REMOTE)
        return {"status": "Accepted"}

    # ---- reset and unlock -------------------------------------------------------------------

    async def Reset(self, p):
        cp = self.cp
        if cp.opts.reboot is None:
            return {"status": "Rejected"}
        self._reset = p["type"]
        if cp.charger.session:
            cp.charger.stop("HardReset" if p["type"] == "Hard" else "SoftReset")
            if p["type"] == "Soft":
                self._reset_at = cp.clock.ticks_ms()
        return {"status": "Accepted"}

    def _reset_waits(self, now):
        # 5.14: "The Charge Point SHALL send a StopTransaction.req for any ongoing transaction
        # before performing the reset" (soft reset). While the back end is reachable, wait for
        # the outbox to be delivered, for at most RESET_WAIT_MS; whatever is left stays queued
        # on flash and goes after the reboot.
        cp = self.cp
        at = self._reset_at
        if at is None or cp.outbox.pending() == 0 or not cp.online():
            return False
        return cp.clock.ticks_diff(now, at) < RESET_WAIT_MS

    async def UnlockConnector(self, p):
        # 5.18: finish a running transaction first (reason UnlockCommand), then answer whether
        # the lock's feedback shows it open. Errata 3.85: NotSupported for a connector that does
        # not exist, as for one without a lock (a tethered cable, a socket without actuator).
        cp = self.cp
        c = cp.charger
        if p["connectorId"] != 1 or not cp.has_lock():
            return {"status": "NotSupported"}
        if c.session:
            c.stop(chg.UNLOCK_COMMAND)
        c.unlock()
        clock = cp.clock
        since = clock.ticks_ms()
        cp.local_wait = True  # (the simulator lets virtual time run meanwhile)
        try:
            while True:
                done = c.unlock_result()
                if done is not None:
                    break
                if clock.ticks_diff(clock.ticks_ms(), since) >= UNLOCK_WAIT_MS:
                    done = False
                    break
                await clock.sleep_ms(POLL_MS)
        finally:
            cp.local_wait = False
        return {"status": "Unlocked" if done else "UnlockFailed"}

    # ---- TriggerMessage ----------------------------------------------------------------------

    async def TriggerMessage(self, p):
        cp = self.cp
        what = p["requestedMessage"]
        cid = p.get("connectorId")
        if cid is not None and cid > 1:
            return {"status": "Rejected"}
        if what == "StatusNotification":
            cp.status.report_all((0, 1) if cid is None else (cid,))
        elif what == "MeterValues":
            body = cp.meter.triggered()
            if body is None:
                return {"status": "Rejected"}
            cp.trigger("MeterValues", body)
        elif what in _TRIGGERS:
            cp.trigger(what)
        else:
            return {"status": "NotImplemented"}
        return {"status": "Accepted"}

