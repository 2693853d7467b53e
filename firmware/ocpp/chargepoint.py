"""The OCPP 1.6J charge point: one connector, fed by the station's events, feeding the charger's
inputs back. It never drives the contactor: a command becomes `authorize`, `stop`,
`set_available` or a current-limit claim, and the charger decides.

    cp = ChargePoint(station, Options(url=..., charge_box_id=...), fs=fs)
    cp.service(now)        # from the station's slow task (every 100 ms): statuses, sampling,
                           # reservations, charging profiles, connection time-out
    await cp.run()         # the link: connect, boot, send, answer (its own asyncio tasks)

Transactions never get lost (see also outbox.py). One step, _catch_up(), queues what is behind
the session journal, in order: session N's StartTransaction once its start is on flash, its
StopTransaction (after the SessionCost DataTransfer of a priced session) once its closing record
is; a small record (`ocpp.json`: "s" = last session whose StartTransaction was queued, "p" = last
whose StopTransaction was queued) is replaced right after each put. It runs in the same
synchronous call in which the station journals a session event, at boot (a power cut between
the journal and the outbox) and every service round (a write the flash refused, a StartTransaction
waiting for the meter's first reading). Nothing is put while ocpp.json lags, so at most the newest
put can be missing from it, and outbox.tail() tells whether that put was made. MeterValues of a
transaction go only after its StartTransaction, and only while the flash has room beyond its
reserve (firmware/flash.py: periodic data).

Statuses (section 4.9): derived from the charger every service round and sent when they change;
while the link is down only the newest status is kept, and all connectors are reported again
after every accepted BootNotification. errorCode comes from safety.OCPP_ERROR; while the flash
is full or failing (the station's flash fault) both connectors report OtherError with the
vendorErrorCode FlashFull or FlashError, unless a fault of the charger has its own errorCode.

Time: the back end sets the wall clock (BootNotification.conf, Heartbeat.conf). Before that the
clock counts from the last time known before the reboot (saved in ocpp.json), so timestamps
never go backwards; they are as good as the last sync.
"""
from firmware import Many, auth, finish
from firmware import charger as chg
from firmware import safety
from firmware import store
from firmware.ocpp import config as config_mod
from firmware.ocpp import dt
from firmware.ocpp import dumps as _dumps
from firmware.ocpp import outbox as outbox_mod
from firmware.ocpp import rpc as rpc_mod
from firmware.ocpp import smart
from firmware.ocpp import tokens as tokens_mod
from firmware.ocpp.rpc import RpcError

VENDOR = "MicroPython-EVSE"
VENDOR_ID = "org.micropython-evse"
VERSION = "0.4.0"
STATE_FILE = "ocpp.json"
CP_FAULTS = (safety.CONFIG, safety.OVERTEMP, safety.TEMP_SENSOR)  # also Faulted on connector 0
PROVISIONAL = "_clock"  # outbox payloads put before the time was known (never sent)
CONFIG_FILE = "ocpp-config.json"
PROFILES_FILE = "ocpp-profiles.json"
OUTBOX_DIR = "outbox"
CLAIM = "ocpp"  # the current-limit claim of charging profiles
INVALID_CLAIM = "ocpp-invalid-id"  # 0 A while a refused idTag's transaction stays open
SAVE_TIME_S = 3600  # how often the wall clock is saved as the floor for the next boot
POLL_MS = 100
CONFIRM_MS = 300000  # a new firmware version runs this long without a fault before it is kept
BACKOFF_CAP_MS = 60000  # longest wait between reconnection attempts (full jitter below it)
STABLE_MS = 10000  # a connection up this long resets the reconnect backoff
TXDATA_VALUES = 10  # sampled values in a StopTransaction's transactionData: 1.3 KB of JSON at most
READS = ("GetConfiguration", "GetLocalListVersion", "GetCompositeSchedule")  # change nothing (rpc: reads)
PROFILE_TRIES = 3  # failed connections with a raised SecurityProfile before falling back (A05.FR.08)
BOOT_RETRY_S = 60  # BootNotification retry when the back end gave no interval
RESET_WAIT_MS = 30000  # a soft Reset waits this long at most for the StopTransaction to go out
UNLOCK_WAIT_MS = 10000  # UnlockConnector's answer waits this long at most for the lock to open
# (the stop, the meter showing no current, a move with its retries: about 5 s; MessageTimeout 30 s)

# The CS -> CP operations this charge point implements (the others are NotSupported; names
# not in OCPP 1.6 at all are NotImplemented, see rpc.py).
SUPPORTED = (
    "ChangeAvailability", "ChangeConfiguration", "ClearCache", "DataTransfer", "GetConfiguration",
    "RemoteStartTransaction", "RemoteStopTransaction", "Reset", "UnlockConnector",
    "GetDiagnostics", "UpdateFirmware", "ReserveNow", "CancelReservation",
    "SetChargingProfile", "ClearChargingProfile", "GetCompositeSchedule", "TriggerMessage",
    "SendLocalList", "GetLocalListVersion",
)

# Statuses (ChargePointStatus)
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

_UNITS = {"Energy.Active.Import.Register": "Wh", "Power.Active.Import": "W", "Current.Import": "A",
          "Current.Offered": "A", "Voltage": "V"}


def _join(root, name):
    if not root:
        return name
    return root.rstrip("/") + "/" + name


class Options:
    """How to reach the back end and who we are (from settings.json and the board profile)."""

    def __init__(self, url, charge_box_id, password=None, ca=None, model="ESP32", serial=None,
                 version=VERSION, free_id_tag="FreeCharging", reboot=None, updater=None, diagnostics=None):
        self.url = url
        self.charge_box_id = charge_box_id
        self.password = password  # AuthorizationKey as installed; the back end may change it
        self.ca = ca  # PEM text of the CA the server certificate must chain to (profile 2)
        self.model = model
        self.serial = serial
        self.version = version
        self.free_id_tag = free_id_tag  # idTag of sessions that need no authorization
        self.reboot = reboot  # reboot(hard): restarts the board (machine.reset on the ESP32)
        self.updater = updater  # FirmwareManagement (update.Updater), or None
        self.diagnostics = diagnostics  # update.Diagnostics, or None
        # Or a function making it at the first GetDiagnostics (station.py): an upload is not
        # kept across a reboot, so until one is asked for, firmware/ocpp/update.py and http.py
        # need not take the heap their module objects take (docs/benchmarks.md).
        self.make_diagnostics = None


class ChargePoint:
    def __init__(self, station, opts, fs=None, link=None, rxbuf=None, txbuf=None, txenc=None):
        # The link's receive buffer (firmware/ocpp/ws.py): best allocated by the caller before
        # anything else, while the heap is in one piece (station.start does).
        if rxbuf is None and link is None:
            rxbuf = bytearray(rpc_mod.MAX_FRAME)
        self._rxbuf = rxbuf
        self._spare = [bytearray(rpc_mod.SPARE_BYTES)]  # for the link's Rpc, made while the heap is whole
        self._txbuf = txbuf  # its send buffer (ws.PIECE bytes), or the Link makes one
        # the encoder the link and the outbox share, made at boot (firmware/encoder.py), or the
        # outbox makes one and the link takes it
        self._txenc = txenc
        self._boot_id = rpc_mod.random_hex()  # tells this boot's provisional timestamps from older ones
        self.st = station
        self.charger = station.charger
        self.clock = station.clock
        self.opts = opts
        self.fs = fs
        root = station.root
        self.root = root
        self._state_path = _join(root, STATE_FILE)
        self.errors = []  # what went wrong locally, newest last (bounded): for logs and tests
        doc = self._load_state()  # (a corrupt ocpp.json is noted in self.errors)
        self.wall = dt.WallClock(self.clock, doc.get("t") or 0)
        self._saved_t = self.wall.now()
        self.config = config_mod.Config(_join(root, CONFIG_FILE), fs, self._config_defaults(),
                                        readonly=self._config_readonly())
        cfg = self.config
        cfg.ca_installed = opts.ca is not None  # SecurityProfile 2 needs it (A05.FR.03)
        self.outbox = outbox_mod.Outbox(_join(root, OUTBOX_DIR), fs=outbox_mod.FS() if fs is None else fs,
                                        clock=self.clock, attempts=cfg.get("TransactionMessageAttempts"),
                                        retry_interval_s=cfg.get("TransactionMessageRetryInterval"),
                                        enc=txenc)
        if self._txenc is None:
            self._txenc = self.outbox.encoder
        self.profiles = smart.Profiles(_join(root, PROFILES_FILE), fs,
                                       max_stack_level=cfg.get("ChargeProfileMaxStackLevel"),
                                       max_periods=cfg.get("ChargingScheduleMaxPeriods"),
                                       max_installed=cfg.get("MaxChargingProfilesInstalled"))
        self.tokens = tokens_mod.Tokens(self, fs)
        self.stop_by = None  # idTag that asked for the stop being recorded (StopTransaction)
        self.link = link
        self.rpc = None
        self.accepted = False  # BootNotification accepted on this connection
        self.boot_status = None  # last BootNotification answer: Accepted, Pending, Rejected
        self._boot_due = None  # tick of the next BootNotification attempt
        self._last_sent = None  # tick of the last message sent (heartbeat timing)
        self._hb_s = cfg.get("HeartbeatInterval")
        # transactions
        self._tx = None  # {"n", "tag", "t0", "group", "tariff"[, "k0"]} of the running transaction
        self._queued_start = doc.get("s", None)
        self._queued_stop = doc.get("p", None)
        self._next_sample = None
        self._last_aligned = None
        self._txdata_new()
        # availability: "o" = operative wanted for connector 1 / the charge point
        self._operative = doc.get("o", True)
        # ChangeAvailability answered Scheduled: applied when the transaction ends (kept across
        # a power cut, which ends it)
        self._scheduled_operative = doc.get("so")
        # reservation {"id", "tag", "parent", "exp"}
        self._reservation = doc.get("r")
        # SecurityProfile raised by the back end and not yet connected with: the one before it
        self._fallback = doc.get("pf")
        self._profile_fails = 0
        # remote start waiting for the car (ConnectionTimeOut)
        self._auth_at = None
        self._auth_tag = None
        self._authorizing = None  # idTag of a remote start waiting for Authorize.conf
        # statuses: derived now / last reported, per connector
        self._status = [None, None]  # (status, errorCode, epoch, vendorErrorCode or None)
        self._reported = [None, None]
        self._triggers = []  # requested messages (TriggerMessage), sent after the answer
        self._reset = None  # "Soft"/"Hard" once a Reset was accepted
        self._notices = []  # (action, payload) status notifications of updates, in order
        self.sent = 0
        self.received = 0
        # Every attribute is set here, none later: a first assignment that grows the instance's
        # dict (a 944 B table for this object) in the middle of a session may find no block
        # that large in a fragmented heap.
        self._dirty = False  # ocpp.json is behind RAM (a write the flash refused): written again every round
        # [n, idTag, epoch, transactionData, SessionCost payload, stop_by, epoch is true] of a stop
        # not queued yet
        self._stop_info = None
        self._pending = None  # (action, n, payload) of a transaction message built but not queued yet
        self._put_error = None  # OSError of the transaction message that waits to be queued
        self._claimed = None  # the back end's current claim on the limits (deci-amps) or None
        self._pending_tx_profile = None  # a RemoteStart's TxProfile, installed once the transaction has its id
        self._reset_at = None  # tick of a soft Reset that stopped a transaction
        self._reader_task = None  # the link's tasks while it runs
        self._relink = None  # why the link must reconnect once the current answer is out
        self._side = ()
        self._healthy_since = None  # tick since which a trial firmware has been healthy
        self._confirmed = False
        self._synced_at = 0  # epoch at the first time sync of this boot
        self.local_wait = False  # a command's answer waits on the charger, not on the network
        station.add_sink(self._event)
        self.charger.set_unlock_on_ev_disconnect(cfg.get("UnlockConnectorOnEVSideDisconnect"))
        self.charger.set_available(self._operative)
        self.charger.reserve(self._reservation is not None)
        self._phases = station.profile.get("phases", 3)
        self._reconcile(doc)
        if self._tx is None:
            self.profiles.tx_ended()  # TxProfiles of a transaction that is over
        cfg.listen(self._config_changed)

    # ---- persistence --------------------------------------------------------------------

    def _load_state(self):
        try:
            doc = store.read_json(self._state_path, self.fs)
        except ValueError as e:
            self.note("ocpp.json unreadable (%s): starting from the journal" % e)
            doc = None
        if type(doc) is not dict:
            return {"new": True}
        return doc

    def _save_state(self):
        """Write ocpp.json; True when it is on flash. One the flash refuses stays in RAM and is
        written again every service round (_catch_up), before anything more is queued."""
        self._dirty = True
        self._saved_t = self.wall.now()
        doc = {"s": self._queued_start, "p": self._queued_stop, "t": self._saved_t, "o": self._operative,
               "so": self._scheduled_operative, "r": self._reservation, "pf": self._fallback}
        try:
            store.write_json(self._state_path, doc, self.fs)
        except OSError:
            return False  # the station's flash condition reports it
        self._dirty = False
        return True

    def waiting(self):
        """True while a transaction message or a mark of the queue is in RAM only (the flash
        refused it): the station reports the flash condition and starts no new session."""
        return self._dirty or self._put_error is not None or self.outbox.waiting()

    def root_path(self, name):
        return _join(self.root, name)

    def _config_defaults(self):
        d = {}
        if self.opts.password is not None:
            d["AuthorizationKey"] = self.opts.password
        if not self._has_lock():
            d["UnlockConnectorOnEVSideDisconnect"] = False  # errata 3.83
        return d

    def _config_readonly(self):
        return () if self._has_lock() else ("UnlockConnectorOnEVSideDisconnect",)

    def _has_lock(self):
        return getattr(self.st, "lock", None) is not None

    @property
    def transaction(self):
        """The running transaction ({"n", "tag", "t0", "group", "tariff", ...}) or None: read only."""
        return self._tx

    @property
    def reservation(self):
        """The reservation in force ({"id", "tag", "parent", "exp"}) or None: read only."""
        return self._reservation

    def note(self, text):
        """Something went wrong locally: kept (the last 8) and reported as an event for the log."""
        self.errors.append(text)
        if len(self.errors) > 8:
            self.errors.pop(0)
        self.st.emit("ocpp", {"error": text})

    def _reconcile(self, doc):
        """At boot: where the queue stands, then what a power cut kept out of the outbox."""
        keeper = self.st.keeper
        last = keeper.last_n()
        qs, qp = self._queued_start, self._queued_stop
        if doc.get("new") or qs is None or qp is None:
            # The first boot with OCPP: sessions from before are not transactions of this back
            # end; an open one is.
            qs = qp = last - 1 if keeper.current is not None else last
        elif qs > last:
            keeper.skip_to(qs)  # the journal lost sessions the back end has seen: never reuse their numbers
        if qp > qs:
            qs = qp
        elif qs > qp + 1:
            qp = qs - 1
        changed = (qs, qp) != (self._queued_start, self._queued_stop)
        self._queued_start, self._queued_stop = qs, qp
        if changed:
            self._save_state()
        cur = keeper.current or self.st.recovered
        if cur is not None:
            self._tx = {"n": cur["n"], "tag": cur.get("tag"), "t0": cur.get("t")}
        self._catch_up()

    def _catch_up(self):
        """Queue, in order, the transaction messages behind the journal: after a power cut (at
        boot), after a write the flash refused, and a StartTransaction that waited for the
        meter's first reading. The same step serves a session event as it happens, and runs
        every service round. Session N's StartTransaction goes once its start is on flash, its
        StopTransaction once its closing record is; each put is followed by ocpp.json's mark,
        and nothing is put while that mark is behind, so that at most the newest put is missing
        from ocpp.json: outbox.tail() tells whether it was made (_queue)."""
        if self._dirty and not self._save_state():
            return
        k = self.st.keeper
        while True:
            qs = self._queued_start
            if self._queued_stop < qs:
                if k.closed_n() < qs or not self._queue_stop(qs):
                    return
            elif k.started_n() > qs:
                if not self._queue_start(qs + 1):
                    return
            else:
                return

    def _built(self, action, n):
        m = self._pending
        return m[2] if m is not None and m[0] == action and m[1] == n else None

    def _queue(self, action, p, n):
        """Put a transaction message unless the outbox's newest message is that very one (its put
        reached the flash, its mark in ocpp.json did not). False: the flash refused it; it is
        kept (_pending) and put again by the next _catch_up."""
        if self._is_tail(action, n):
            self._pending = None
            return True
        r = self._put(action, p, n)
        if r is False:
            self._pending = (action, n, p)
            return False
        self._pending = None
        return True  # (None: it can never be queued, and was noted: the next one goes on)

    def _queue_start(self, n):
        p = self._built(outbox_mod.START, n)
        if p is None:
            rec = self.st.keeper.find(n)
            if rec is None:
                self.note("session %d is not in the journal (any more): no StartTransaction" % n)
                self._queued_start = self._queued_stop = n
                return self._save_state()
            if rec.get("e0") is None and not rec.get("stop") and self.st.meter is not None:
                # The meter has not answered since boot: meterStart waits for its first reading
                # (meanwhile nothing of the transaction is queued), else the back end would bill
                # the meter's whole register.
                return False
            tx = self._tx if self._tx is not None and self._tx["n"] == n else None
            tag = (tx["tag"] if tx is not None else rec.get("tag")) or self.opts.free_id_tag
            t = tx["t0"] if tx is not None else rec.get("t")
            p = {"connectorId": 1, "idTag": tag, "meterStart": int(rec.get("e0") or 0),
                 "timestamp": dt.iso(t if t is not None else self.wall.now())}
            # (a time from the journal was true when written: _put must not shift it)
            self._exact(p, t is not None and (tx is None or "k0" not in tx))
            if self.reservation_matches(tag, tx.get("group") if tx is not None else None):
                p["reservationId"] = self._reservation["id"]
        if not self._queue(outbox_mod.START, p, n):
            return False
        if "reservationId" in p:
            self._reservation = None
            self.charger.reserve(False)
        self._queued_start = n
        return self._save_state()

    def _queue_stop(self, n):
        info = self._stop_info
        if info is not None and info[0] != n:
            info = None
        if info is not None and info[4] is not None:
            # The session cost, just before the StopTransaction: the outbox forgets the
            # transactionId after it.
            if not self._queue("DataTransfer", info[4], n):
                return False
            info[4] = None
        p = self._built(outbox_mod.STOP, n)
        if p is None:
            rec = self.st.keeper.find(n)
            if rec is None or not rec.get("stop"):
                self.note("session %d is not in the journal (any more): no StopTransaction" % n)
                self._queued_stop = n
                return self._save_state()
            t = info[2] if info is not None else rec.get("ts")
            exact = info[6] if info is not None else t is not None
            p = {"meterStop": int(rec.get("e") or 0), "timestamp": dt.iso(t if t is not None else self.wall.now()),
                 "transactionId": -1, "reason": rec.get("reason") or "Other"}
            # 6.51: the idTag is "the identifier which requested to stop the charging"
            tag = (info[5] or info[1]) if info is not None else rec.get("tag")
            if tag:
                p["idTag"] = tag
            if info is not None and info[3]:
                p["transactionData"] = info[3]
            self._exact(p, exact)
        if not self._queue(outbox_mod.STOP, p, n):
            return False
        self._stop_info = None
        self._queued_stop = n
        return self._save_state()

    def _is_tail(self, action, n):
        t = self.outbox.tail()
        return t is not None and t[0] == action and t[1] == n

    # ---- events from the station (synchronous, in its slow task) ------------------------

    def _event(self, kind, fields, at):
        if kind != "session":
            return
        t = self._epoch_at(at)
        if fields["event"] == "start":
            n = fields["n"]
            tag = fields.get("id_tag") or self.opts.free_id_tag
            a = self.tokens.authorized
            if a is not None and a[0] == fields.get("id_tag"):
                group, tariff = a[1], a[2]
            else:  # a remote start, free charging
                group, tariff = self.tokens.group_of(fields.get("id_tag")), None
            self.tokens.authorized = None
            # k0: the tick of the start, to put t0 right once the back end tells the time
            self._tx = {"n": n, "tag": tag, "t0": t, "group": group, "tariff": tariff,
                        "k0": at if at is not None else self.clock.ticks_ms()}
            self._auth_at = None
            self._next_sample = None
            self._txdata_new()
            self._txdata_add("StopTxnSampledData", "Transaction.Begin", t)
        else:
            n = fields.get("n")
            if n is None:
                return
            tx = self._tx
            tag = tx["tag"] if tx is not None and tx["n"] == n else fields.get("id_tag")
            exact = fields.get("time") is not None  # it stopped then (a session cut by a power loss)
            if exact:
                t = fields["time"]
            data = self._txdata_end(t)
            cost = self._cost(tag, fields) if "cost" in fields else None
            self._stop_info = [n, tag, t, data, cost, self.stop_by, exact]
            self.stop_by = None
            self._tx = None
            self.profiles.tx_ended()
            self.charger.limits.claim(INVALID_CLAIM, None)
            self._apply_scheduled()
        self._catch_up()

    def _cost(self, tag, fields):
        """The session's local cost, sent just before its StopTransaction as a DataTransfer
        (docs/tariffs.md): the back end stays the authority on billing; the transactionId is
        filled in when sent."""
        from firmware import tariff

        d = fields.get("decimals", 2)
        data = {"idTag": tag, "cost": tariff.format_cost(fields["cost"], "", d).strip(),
                "currency": fields.get("currency"), "tariff": fields.get("tariff"), "group": fields.get("group"),
                "energyWh": fields.get("energy_wh")}
        return {"vendorId": VENDOR_ID, "messageId": "SessionCost", "data": data}

    def _put(self, action, payload, n):
        """Put a message in the outbox: True once it is on flash; False when the flash refused it
        (`_put_error` for a transaction message) or the outbox is full; None when it can never be
        queued. Both are noted (events); the caller decides what is retried."""
        if not self.wall.synced and PROVISIONAL not in payload:
            # The back end has not told the time in this boot: the timestamps count from the
            # last time known before it (1970 if none). Note where this boot's clock stood, so
            # that _restamp() can shift them once the time is known, before they are sent.
            payload[PROVISIONAL] = [self._boot_id, self.wall.now(), self.clock.ticks_ms()]
        try:
            self.outbox.put(action, payload, n)
        except (OSError, outbox_mod.OutboxFull) as e:
            if action == "MeterValues":
                return False
            if self._put_error is None and self._pending is None:  # (once: it is put again every round)
                self.note("%s of transaction %d not queued yet (put again later): %s" % (action, n, e))
            if isinstance(e, OSError):
                self._put_error = e  # the flash refused it (the outbox being full is not the flash's fault)
            return False
        except ValueError as e:
            self.note("%s of transaction %d not queued: %s" % (action, n, e))
            return None
        if action != "MeterValues":
            self._put_error = None
        return True

    def _epoch_at(self, at):
        now = self.clock.ticks_ms()
        back = self.clock.ticks_diff(now, at) // 1000 if at is not None else 0
        return self.wall.now() - (back if back > 0 else 0)

    # ---- the slow task ------------------------------------------------------------------

    def service(self, now):
        """Every service round (100 ms): statuses, samples, time-outs, limits."""
        c = self.charger
        epoch = self.wall.now()
        self._catch_up()
        if not c.session:
            self._apply_scheduled()  # (after a power cut that ended the transaction)
        self._reservation_expiry(epoch)
        self._connection_timeout(now)
        self._meter_samples(now, epoch)
        self._smart_limit(epoch)
        flash = self.st.flash_fault
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
        if epoch - self._saved_t >= SAVE_TIME_S:
            if self.st.flash.periodic():  # (periodic data: outside the flash's reserve)
                self._save_state()
            else:
                self._saved_t = epoch
        if self._reset is not None and c.session is False and not self.busy() and not self._reset_waits(now):
            self._do_reset()

    def _derive(self):
        c = self.charger
        if c.faults.any():
            codes = c.faults.codes()
            return FAULTED, safety.OCPP_ERROR.get(codes[0], "OtherError")
        connected = c.vs in ("B", "C", "D")
        if c.session:
            if c.contactor:
                return CHARGING, "NoError"
            if c.offer_da == 0:
                return SUSPENDED_EVSE, "NoError"
            return SUSPENDED_EV, "NoError"
        if not c.available:
            return UNAVAILABLE, "NoError"
        if connected:
            if c.stopped:
                return FINISHING, "NoError"
            if self._reservation is not None and not c.authorized:
                return RESERVED, "NoError"  # 5.13: a car without identification keeps it Reserved
            return PREPARING, "NoError"
        if self._auth_at is not None:
            return PREPARING, "NoError"
        if self._reservation is not None:
            return RESERVED, "NoError"
        return AVAILABLE, "NoError"

    def _derive_cp(self):
        """Connector 0, the charge point itself (4.9): Faulted for a fault of the box rather than
        of the outlet or the vehicle: its configuration, its temperature or sensor."""
        f = self.charger.faults
        for code in CP_FAULTS:
            if f.active(code):
                return FAULTED, safety.OCPP_ERROR[code]
        return (AVAILABLE if self._operative else UNAVAILABLE), "NoError"

    def _connection_timeout(self, now):
        if self._auth_at is None:
            return
        c = self.charger
        if c.session or c.vs in ("B", "C", "D"):
            self._auth_at = None
            return
        limit = self.config.get("ConnectionTimeOut") * 1000
        if self.clock.ticks_diff(now, self._auth_at) >= limit:
            self._auth_at = None
            c.forget_authorization()

    def _reservation_expiry(self, epoch):
        r = self._reservation
        c = self.charger
        # Fix (test_chargepoint): 5.13, a reservation "SHALL be terminated ... (3) when the Charge
        # Point or connector are set to Faulted or Unavailable"; only the expiry ended it.
        if r is not None and (epoch >= r["exp"] or c.faults.any() or not c.available):
            self._reservation = None
            self.charger.reserve(False)
            self._save_state()

    def _smart_limit(self, epoch):
        tx = self._tx
        # Watts become amps with the period's numberPhases, else the station's phases (7.12 says
        # 3, which a single-phase station is not).
        da, _next = self.profiles.limit(epoch, tx["t0"] if tx is not None else None, self._phases)
        if da != self._claimed:
            self.charger.limits.claim(CLAIM, da)
            self._claimed = da

    # ---- meter values -------------------------------------------------------------------

    def _meter_samples(self, now, epoch):
        cfg = self.config
        tx = self._tx
        iv = cfg.get("MeterValueSampleInterval")
        if tx is not None and (self._queued_start != tx["n"] or self._dirty):
            tx = None  # nothing of the transaction goes before its StartTransaction, nor while ocpp.json lags
        if tx is not None and iv > 0:
            if self._next_sample is None:
                self._next_sample = self.clock.ticks_add(now, iv * 1000)
            elif self.clock.ticks_diff(now, self._next_sample) >= 0:
                self._next_sample = self.clock.ticks_add(self._next_sample, iv * 1000)
                if self.clock.ticks_diff(now, self._next_sample) >= 0:  # far behind: restart
                    self._next_sample = self.clock.ticks_add(now, iv * 1000)
                self._txdata_add("StopTxnSampledData", "Sample.Periodic", epoch)
                mv = self._samples("MeterValuesSampledData", "Sample.Periodic", epoch)
                if mv:
                    self._put_periodic({"connectorId": 1, "transactionId": -1, "meterValue": mv}, tx["n"])
        ai = cfg.get("ClockAlignedDataInterval")
        if ai > 0:
            slot = epoch // ai
            if self._last_aligned is None:
                self._last_aligned = slot
            elif slot != self._last_aligned:
                self._last_aligned = slot
                if self._tx is not None:
                    self._txdata_add("StopTxnAlignedData", "Sample.Clock", slot * ai)
                mv = self._samples("MeterValuesAlignedData", "Sample.Clock", slot * ai)
                if mv:
                    if tx is not None:
                        self._put_periodic({"connectorId": 1, "transactionId": -1, "meterValue": mv}, tx["n"])
                    elif self.accepted:
                        self._triggers.append(("MeterValues", {"connectorId": 1, "meterValue": mv}))

    def _txdata_new(self):
        self._txdata = Many()  # StopTxnSampledData / AlignedData of the running transaction (RAM)
        self._txdata_every = 1  # of the samples taken, every so many is kept (thinned when full)
        self._txdata_seen = 0

    def _txdata_add(self, key, context, epoch):
        """A StopTxnSampledData / StopTxnAlignedData sample for the transactionData of the
        StopTransaction (9.1.24/25): kept in RAM, at most TXDATA_VALUES values with room left for
        the Transaction.End sample; when full every second sample after the first goes and only
        every second one from then on is kept, so that they stay spread over the session."""
        mv = self._samples(key, context, epoch)
        if mv is None:
            return
        d = self._txdata
        room = TXDATA_VALUES - len(self.config.get("StopTxnSampledData"))
        if _values(d[:1]) + _values(mv) > room:
            return  # none beside the first (and the last) fits
        self._txdata_seen += 1
        if (self._txdata_seen - 1) % self._txdata_every:
            return
        d.append(mv[0])
        while _values(d) > room:
            self._txdata = d = Many(d[:1] + d[2::2])
            self._txdata_every *= 2

    def _txdata_end(self, epoch):
        """The transactionData of the StopTransaction: the samples kept and the
        Transaction.End one (None when there are none)."""
        d = self._txdata
        self._txdata_new()
        end = self._samples("StopTxnSampledData", "Transaction.End", epoch)
        if end is not None:
            while d and _values(d) + _values(end) > TXDATA_VALUES:
                d.pop(len(d) // 2)
            d.append(end[0])
        return d or None

    def _put_periodic(self, payload, n):
        """Transaction MeterValues are periodic data: queued only outside the flash's reserve;
        one left out or refused is counted (the station's flash events report the count)."""
        fl = self.st.flash
        if fl.periodic() and not self._put("MeterValues", payload, n):
            fl.refused += 1

    def _samples(self, key, context, epoch):
        """[{"timestamp", "sampledValue": [...]}] for the measurands configured in `key`."""
        want = self.config.get(key)
        if not want:
            return None
        c = self.charger
        m = measurands(self.st.metering, c.offer_da / 10)
        sv = []
        for name in want:
            v = m.get(name)
            if v is None and name not in m:
                # Fix (test_chargepoint): config.py accepts "Current.Import.L1", "Voltage.L2-N"
                # (9.1.17: "the Measurand combined with the phase"); they were silently left out.
                k = name.rfind(".")
                w = m.get(name[:k]) if k > 0 else None
                if type(w) is dict and name[k + 1:] in w:
                    v = {name[k + 1:]: w[name[k + 1:]]}
                    name = name[:k]
            if v is None:
                continue
            unit = _UNITS.get(name)
            if type(v) is dict:
                for ph in v:
                    sv.append({"value": _num(v[ph]), "context": context, "measurand": name, "phase": ph,
                               "location": "Outlet", "unit": unit})
            else:
                sv.append({"value": _num(v), "context": context, "measurand": name, "location": "Outlet",
                           "unit": unit})
        if not sv:
            return None
        return [{"timestamp": dt.iso(epoch), "sampledValue": sv}]

    # ---- commands from the back end -----------------------------------------------------

    async def _handle(self, action, p):
        self.received += 1
        if not self.accepted and self.boot_status != "Pending":
            raise RpcError(rpc_mod.SECURITY, "BootNotification not accepted yet")
        if not self.accepted and action in ("RemoteStartTransaction", "RemoteStopTransaction"):
            # Fix (test_chargepoint): section 4.2, "While in pending state, the following Central
            # System initiated messages are not allowed: RemoteStartTransaction.req and
            # RemoteStopTransaction.req"; they were carried out.
            return {"status": "Rejected"}
        h = getattr(self, "_on_" + action, None)
        if h is None:
            raise RpcError(rpc_mod.NOT_SUPPORTED, "%s not supported" % action)
        return await h(p)

    async def _on_ChangeAvailability(self, p):
        cid = p["connectorId"]
        if cid > 1:
            return {"status": "Rejected"}
        want = p["type"] == "Operative"
        if self.charger.session and not want:
            self._scheduled_operative = want
            self._save_state()
            return {"status": "Scheduled"}
        if self._scheduled_operative is not None:
            self._scheduled_operative = None
            self._save_state()
        self._set_operative(want)
        return {"status": "Accepted"}

    def _apply_scheduled(self):
        want = self._scheduled_operative
        if want is not None:
            self._scheduled_operative = None
            self._save_state()
            self._set_operative(want)

    def _set_operative(self, want):
        if want != self._operative:
            self._operative = want
            self._save_state()
        self.charger.set_available(want)  # available: from the next control tick on

    async def _on_ChangeConfiguration(self, p):
        was = self.config.get("SecurityProfile")
        status = self.config.change(p["key"], p["value"])
        if status == "Rejected" and getattr(self.config, "reason", None):
            self.note(self.config.reason)
        now = self.config.get("SecurityProfile")
        if now != was:
            self._raise_profile(was, now)
        return {"status": status}

    def _url(self, profile):
        """The back end's URL for a security profile: 2 is TLS (whitepaper 7.2), so a ws://
        URL becomes wss:// at the same host, port and path."""
        url = self.opts.url
        if profile >= 2 and url.startswith("ws://"):
            return "wss://" + url[5:]
        return url

    def _raise_profile(self, was, now):
        # Whitepaper A05: answered Accepted, then a new connection with the new profile; the
        # old one is kept in ocpp.json until a connection with the new one has succeeded.
        if self._fallback is None:
            self._fallback = was
        self._profile_fails = 0
        self._save_state()
        if self.link is not None:
            self.link.url = self._url(now)
        self._relink = "SecurityProfile raised from %d to %d" % (was, now)
        self.note(self._relink + ": reconnecting with it")

    def _profile_failed(self, reason):
        """A connection with a raised profile failed: after PROFILE_TRIES, back to the one before
        (A05.FR.08), so that the charger does not lock itself out."""
        self._profile_fails += 1
        if self._profile_fails < PROFILE_TRIES:
            return
        now = self.config.get("SecurityProfile")
        back, self._fallback = self._fallback, None
        try:
            self.config.set("SecurityProfile", back)
        except (OSError, ValueError) as e:  # the flash: the old profile holds until the next boot
            self.note("SecurityProfile %d not saved: %s" % (back, e))
        self.link.url = self._url(back)
        self._save_state()
        self.note("could not connect with SecurityProfile %d (%s): back to %d" % (now, reason, back))

    def _config_changed(self, key, value):
        if key == "TransactionMessageAttempts":
            self.outbox.configure(attempts=value)
        elif key == "TransactionMessageRetryInterval":
            self.outbox.configure(retry_interval_s=value)
        elif key == "WebSocketPingInterval" and self.link is not None:
            self.link.ping_interval_s = value
        elif key == "AuthorizationKey" and self.link is not None:
            # Whitepaper A01: answered Accepted, then a new connection with the new key (the
            # sender reconnects once the answer is out); logged, never with the key (A01.FR.11/12).
            self.link.password = value
            self._relink = "AuthorizationKey changed"
            self.note("AuthorizationKey changed: reconnecting with the new key")
        elif key == "HeartbeatInterval":
            self._hb_s = value
        elif key == "MessageTimeout" and self.rpc is not None:  # fix (test_chargepoint), see _on_up
            self.rpc.timeout_ms = value * 1000
        elif key == "UnlockConnectorOnEVSideDisconnect":
            self.charger.set_unlock_on_ev_disconnect(value)
        elif key == "MeterValueSampleInterval":
            self._next_sample = None  # the new interval counts from now, also in a transaction

    async def _on_ClearCache(self, p):
        return {"status": self.tokens.cache.clear()}

    async def _on_GetLocalListVersion(self, p):
        if not self.config.get("LocalAuthListEnabled"):
            return {"listVersion": -1}  # 5.10: -1 when the local list is not enabled
        return {"listVersion": self.tokens.list.version}

    async def _on_SendLocalList(self, p):
        if not self.config.get("LocalAuthListEnabled"):
            return {"status": "NotSupported"}
        ll = self.tokens.list
        status = await ll.update_async(p["listVersion"], p["updateType"], p.get("localAuthorizationList"))
        if status != "Accepted":
            self.note("SendLocalList %s: %s" % (status, ll.reason))
        return {"status": status}

    async def _on_DataTransfer(self, p):
        if p["vendorId"] != VENDOR_ID:
            return {"status": "UnknownVendorId"}
        mid = p.get("messageId")
        bl = self.st.billing
        if mid == "SetTariffs":  # docs/tariffs.md: the whole table, JSON text in data
            err = bl.replace(p.get("data") or "")
            if err is not None:
                return {"status": "Rejected", "data": err[:500]}
            return {"status": "Accepted"}
        if mid == "GetTariffs":
            return {"status": "Accepted", "data": bl.tariffs.to_json() if bl.tariffs is not None else ""}
        return {"status": "UnknownMessageId"}

    async def _on_GetConfiguration(self, p):
        keys = p.get("key")
        most = self.config.get("GetConfigurationMaxKeys")
        if keys is not None and len(keys) > most:
            raise RpcError(rpc_mod.OCCURENCE, "at most %d keys per request (GetConfigurationMaxKeys)" % most)
        return self.config.get_configuration(keys)

    async def _on_RemoteStartTransaction(self, p):
        c = self.charger
        cid = p.get("connectorId", 1)
        tag = p["idTag"]
        if cid != 1 or c.session or c.faults.any() or not c.available or self._auth_at is not None \
                or not c.inp.journal_ok:  # (a session can not start while its start can not be recorded)
            return {"status": "Rejected"}
        group = self.tokens.group_of(tag)
        r = self._reservation
        if r is not None and not self.reservation_matches(tag, group):
            if group is None and r["parent"] and self.tokens.online():
                group = await self.tokens.learn_group(tag)  # 5.13: learn its parentIdTag first
            if not self.reservation_matches(tag, group):
                return {"status": "Rejected"}
        if not self.st.billing.may_charge(group, self.wall.now())[0]:  # outside sharing hours
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        if prof is not None:
            if prof.get("chargingProfilePurpose") != "TxProfile":
                return {"status": "Rejected"}
        if self.config.get("AuthorizeRemoteTxRequests") and not self.tokens.pre_authorized(tag):
            self._authorizing = (tag, prof)
        else:
            self._remote_authorized(tag, prof, group)
        return {"status": "Accepted"}

    def wait_for_car(self):
        """An authorization without a car: it lapses after ConnectionTimeOut."""
        self._auth_at = self.clock.ticks_ms()

    def local_list_conflict(self):
        """3.5.2: the back end's answer contradicts the local list."""
        s = self._status[0]
        self.queue("StatusNotification", {"connectorId": 0, "status": s[0] if s else AVAILABLE,
                                          "errorCode": "LocalListConflict"})

    def _remote_authorized(self, tag, prof, group=None):
        c = self.charger
        if c.session or c.faults.any() or not c.available:
            return
        c.authorize(tag)
        if group is None:
            group = self.tokens.group_of(tag)
        tariff = self.st.billing.may_charge(group, self.wall.now())[1]
        self.tokens.authorized = (tag, group, tariff)  # the session's group and tariff when it starts
        self.st.billing.authorized(tag, group, tariff)
        if prof is not None:
            self._pending_tx_profile = prof
        if c.vs not in ("B", "C", "D"):
            self.wait_for_car()

    async def _on_RemoteStopTransaction(self, p):
        tx = self._tx
        if tx is None or self.charger.session is False:
            return {"status": "Rejected"}
        tid = self.outbox.transaction_id(tx["n"])
        if tid is None or tid != p["transactionId"]:
            return {"status": "Rejected"}
        self.charger.stop(chg.REMOTE)
        return {"status": "Accepted"}

    async def _on_Reset(self, p):
        if self.opts.reboot is None:
            return {"status": "Rejected"}
        self._reset = p["type"]
        if self.charger.session:
            self.charger.stop("HardReset" if p["type"] == "Hard" else "SoftReset")
            if p["type"] == "Soft":
                self._reset_at = self.clock.ticks_ms()  # fix (test_chargepoint), see _reset_waits
        return {"status": "Accepted"}

    def _reset_waits(self, now):
        # Fix (test_chargepoint): 5.14, "The Charge Point SHALL send a StopTransaction.req for
        # any ongoing transaction before performing the reset" (soft reset). The reboot came in
        # the service round right after the stop, before the sender had a chance. While the
        # back end is reachable, wait for the outbox to be delivered, for at most RESET_WAIT_MS;
        # whatever is left stays queued on flash and goes after the reboot.
        at = self._reset_at
        if at is None or self.outbox.pending() == 0:
            return False
        link = self.link
        if link is None or not link.connected or not self.accepted:
            return False
        return self.clock.ticks_diff(now, at) < RESET_WAIT_MS

    def _do_reset(self):
        kind = self._reset
        self._reset = None
        self._save_state()
        self.opts.reboot(kind == "Hard")

    async def _on_UnlockConnector(self, p):
        # 5.18: finish a running transaction first (reason UnlockCommand), then answer whether
        # the lock's feedback shows it open. Errata 3.85: NotSupported for a connector that does
        # not exist, as for one without a lock (a tethered cable, a socket without actuator).
        c = self.charger
        if p["connectorId"] != 1 or not self._has_lock():
            return {"status": "NotSupported"}
        if c.session:
            c.stop(chg.UNLOCK_COMMAND)
        c.unlock()
        clock = self.clock
        since = clock.ticks_ms()
        self.local_wait = True  # (the simulator lets virtual time run meanwhile)
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
            self.local_wait = False
        return {"status": "Unlocked" if done else "UnlockFailed"}

    async def _on_ReserveNow(self, p):
        c = self.charger
        cid = p["connectorId"]
        if cid == 0 and not self.config.get("ReserveConnectorZeroSupported"):
            return {"status": "Rejected"}
        if cid > 1:
            return {"status": "Rejected"}
        try:
            exp = dt.parse(p["expiryDate"])
        except ValueError:
            raise RpcError(rpc_mod.PROPERTY, "expiryDate is not a date-time")
        r = self._reservation
        if c.faults.any():
            return {"status": "Faulted"}
        if not c.available:
            return {"status": "Unavailable"}
        if r is not None and r["id"] != p["reservationId"]:
            return {"status": "Occupied"}
        if c.session or c.vs in ("B", "C", "D") or self._auth_at is not None:
            return {"status": "Occupied"}
        self._reservation = {"id": p["reservationId"], "tag": p["idTag"], "parent": p.get("parentIdTag"), "exp": exp}
        self.charger.reserve(True)
        self._save_state()
        return {"status": "Accepted"}

    async def _on_CancelReservation(self, p):
        r = self._reservation
        if r is None or r["id"] != p["reservationId"]:
            return {"status": "Rejected"}
        self._reservation = None
        self.charger.reserve(False)
        self._save_state()
        return {"status": "Accepted"}

    def reservation_matches(self, tag, group):
        """5.13: the reserved idTag, or any token of the reservation's parentIdTag group."""
        r = self._reservation
        return r is not None and tag is not None and auth.same_group(r["tag"], r["parent"], tag, group)

    async def _on_SetChargingProfile(self, p):
        tid = None
        if self._tx is not None:
            tid = self.outbox.transaction_id(self._tx["n"])
            # Without a transactionId yet (offline start) a TxProfile naming one can not match.
            if tid is None:
                tid = -1
        # Fix (test_chargepoint): without any transaction tid stays None, so smart.Profiles
        # refuses a TxProfile (5.16.4: "not possible ... without presence of an active
        # transaction"); it used to pass -1 and the profile was Accepted.
        status = self.profiles.set(p["connectorId"], p["csChargingProfiles"], tid, self.wall.now())
        if status != "Accepted":
            self.note("SetChargingProfile rejected: %s" % getattr(self.profiles, "reason", ""))
        return {"status": status}

    async def _on_ClearChargingProfile(self, p):
        return {"status": self.profiles.clear(p.get("id"), p.get("connectorId"), p.get("chargingProfilePurpose"),
                                              p.get("stackLevel"))}

    async def _on_GetCompositeSchedule(self, p):
        cid = p["connectorId"]
        if cid > 1:
            return {"status": "Rejected"}
        tx = self._tx
        own = self.charger.limits.lowest_but(CLAIM)  # what the charger allows by itself
        sched = await finish(self.profiles.composite_steps(
            cid, p["duration"], p.get("chargingRateUnit"), self.wall.now(), tx["t0"] if tx is not None else None,
            self._phases, own_da=own))
        if sched is None:
            return {"status": "Rejected"}
        start = sched.pop("startSchedule")  # errata 3.57: only as scheduleStart
        return {"status": "Accepted", "connectorId": cid, "scheduleStart": start, "chargingSchedule": sched}

    async def _on_TriggerMessage(self, p):
        what = p["requestedMessage"]
        cid = p.get("connectorId")
        if cid is not None and cid > 1:
            return {"status": "Rejected"}
        if what == "StatusNotification":
            for k in ((0, 1) if cid is None else (cid,)):
                self._reported[k] = None
        elif what == "MeterValues":
            mv = self._samples("MeterValuesSampledData", "Trigger", self.wall.now())
            if mv is None:
                return {"status": "Rejected"}
            body = {"connectorId": 1, "meterValue": mv}
            tx = self._tx
            if tx is not None:
                tid = self.outbox.transaction_id(tx["n"])
                if tid is not None:
                    body["transactionId"] = tid
            self._triggers.append(("MeterValues", body))
        elif what in ("BootNotification", "Heartbeat", "DiagnosticsStatusNotification", "FirmwareStatusNotification"):
            self._triggers.append((what, None))
        else:
            return {"status": "NotImplemented"}
        return {"status": "Accepted"}

    async def _on_UpdateFirmware(self, p):
        u = self.opts.updater
        if u is None:
            raise RpcError(rpc_mod.NOT_SUPPORTED, "no firmware updater on this board")
        try:
            when = dt.parse(p["retrieveDate"])
        except ValueError:
            raise RpcError(rpc_mod.PROPERTY, "retrieveDate is not a date-time")
        u.request(p["location"], when, p.get("retries", 1), p.get("retryInterval", 60), self.wall.now())
        return {}

    def _diagnostics(self):
        """opts.diagnostics, made by opts.make_diagnostics when first needed; its task starts
        then if the link's tasks run already (run() starts the ones that exist before)."""
        d = self.opts.diagnostics
        if d is None and self.opts.make_diagnostics is not None:
            d = self.opts.diagnostics = self.opts.make_diagnostics()
            if self._reader_task is not None:
                import asyncio

                self._side.append(asyncio.create_task(d.run()))
        return d

    async def _on_GetDiagnostics(self, p):
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

    # ---- the link -----------------------------------------------------------------------

    def busy(self):
        """True while the link waits for the network: connecting, or a call without its answer
        yet. (The simulator holds virtual time meanwhile: see docs/ocpp.md.)"""
        link = self.link
        if link is not None and getattr(link, "connecting", False):
            return True
        r = self.rpc
        return r is not None and (r.outstanding is not None or (r.busy and not self.local_wait))

    def _on_up(self):
        # A new connection is not a reboot: BootNotification only until one was accepted since
        # boot (section 4.2); statuses the back end has not seen go out as usual.
        from firmware.ocpp.rpc import Rpc

        # Fix (test_chargepoint): MessageTimeout (errata 3.82) was not applied: always 30 s.
        self.rpc = Rpc(self.link.send, self.clock, self._handle, SUPPORTED,
                       timeout_ms=self.config.get("MessageTimeout") * 1000, send_json=self.link.send_json,
                       note=self.note, spare=self._spare, reads=READS)
        if self._fallback is not None:  # connected with the raised profile: it stays
            self._fallback = None
            self._save_state()
        self.st.emit("ocpp", {"link": "up", "url": self.link.url})

    def _on_down(self, reason):
        r = self.rpc
        if r is not None:
            r.closed()
        self.rpc = None
        self.note("link down: %s" % reason)
        self.st.emit("ocpp", {"link": "down", "reason": reason})

    def _on_fail(self, reason):
        self.st.emit("ocpp", {"link": "failed", "reason": reason})
        if self._fallback is not None:
            self._profile_failed(reason)

    async def run(self):
        """The link's tasks: the connection (ws.Link), a reader and the sender. Never returns."""
        import asyncio
        from firmware.ocpp import ws

        if self.link is None:
            self.link = ws.Link(self.opts.url, self.opts.charge_box_id, self.clock, self.config.get("AuthorizationKey"),
                                self.opts.ca, self.config.get("WebSocketPingInterval"),
                                sleep_ms=self.clock.sleep_ms, stable_ms=STABLE_MS,
                                backoff=ws.Backoff(1000, BACKOFF_CAP_MS), buf=self._rxbuf, piece=self._txbuf,
                                enc=self._txenc)
        self.link.url = self._url(self.config.get("SecurityProfile"))
        self.link.tls_gate = self.may_stall
        self.link.on_up = self._on_up
        self.link.on_down = self._on_down
        self.link.on_fail = self._on_fail
        self.link.start()
        self._reader_task = asyncio.create_task(self._reader())
        self._side = []
        for part in (self.opts.updater, self.opts.diagnostics):
            if part is not None:
                self._side.append(asyncio.create_task(part.run()))
        try:
            await self._sender()
        finally:
            # Cancelled (the simulator's power cut): the tasks it started end with it, the
            # connection drops unannounced, and what a task still running (an answer on its way)
            # holds of this object no longer keeps the station's RAM.
            self._reader_task.cancel()
            for t in self._side:
                t.cancel()
            self.link.abort()
            self.st = self.charger = self.outbox = self.config = self.profiles = self.rpc = None
            self.opts = self.link = self.tokens = self._rxbuf = self._txbuf = self._txenc = None

    def may_stall(self):
        """Whether a TLS handshake may start now. On the ESP32 one holds the CPU for about a
        second, and the control loop with it; with the contactor open no opening can be waiting
        behind it, and a closing may wait (3 s allowed). README: "Stalls and the safety path"."""
        c = self.charger
        return c is not None and not c.contactor

    async def _reader(self):
        while True:
            link = self.link
            msg = await link.recv()  # a view of the link's receive buffer, until the next recv()
            size = link.last_size
            r = self.rpc
            if r is not None and not self.accepted and self.boot_status == "Rejected" \
                    and rpc_mod.parse(msg, SUPPORTED, r.max_size, size=size)[0] in (rpc_mod.CALL, rpc_mod.REFUSE):
                # Fix (test_chargepoint): section 4.2, "While Rejected, the Charge Point SHALL
                # NOT respond to any Central System initiated message"; they were answered
                # (SecurityError). Answers to our own calls are still read.
                continue
            if r is not None:
                try:
                    m = await r.feed(msg, size)
                    if m[0] == rpc_mod.REFUSE and m[3] == rpc_mod.NOT_UTF8 and link.ws is not None:
                        await link.ws.close(1007, "text is not UTF-8")  # RFC 6455 section 8.1
                except Exception as e:  # the link went down while answering
                    self.note("answering failed: %r" % e)

    async def _sender(self):
        sleep = self.clock.sleep_ms
        while True:
            try:
                sent = await self._send_one()
            except RpcError as e:
                self.note("%s: %s" % (e.code, e.description))
                sent = False
            except Exception as e:  # (MemoryError, a flash error) must not end the sender for good
                self.note("sender: %r" % (e,))
                sent = False
            if not sent:
                await sleep(POLL_MS)

    def _since_ms(self, tick):
        return self.clock.ticks_diff(self.clock.ticks_ms(), tick)

    async def _send_one(self):
        """Send the most urgent message, if any; True if something was sent."""
        link = self.link
        if self.rpc is None or link is None or not link.connected:
            return False
        if self.rpc.busy and not self.local_wait:
            # (local_wait: UnlockConnector waits for the lock; its StopTransaction goes first)
            # Fix (test_chargepoint): an incoming call's answer is still being written. 5.17:
            # "The Charge Point SHALL first send the TriggerMessage response, before sending the
            # requested message"; a slow write let the triggered message overtake the answer.
            return False
        if self._relink is not None:  # the answer that asked for it is out
            why, self._relink = self._relink, None
            await link.reconnect(why)
            return True
        now = self.clock.ticks_ms()
        if not self.accepted:
            if self._boot_due is not None and self.clock.ticks_diff(now, self._boot_due) < 0:
                return await self._send_trigger(boot_only=True)
            await self._boot()
            return True
        if await self._send_trigger():
            return True
        for k in (0, 1):
            s = self._status[k]
            if s is not None and self._reported[k] != (s[0], s[1], s[3]):
                # A status seen before the back end told the time is stamped with the time now.
                t = s[2] if s[2] >= self._synced_at else self.wall.now()
                p = {"connectorId": k, "status": s[0], "errorCode": s[1], "timestamp": dt.iso(t)}
                if s[3] is not None:
                    p["vendorErrorCode"] = s[3]
                await self.call("StatusNotification", p)
                self._reported[k] = (s[0], s[1], s[3])
                return True
        if self.tokens.waiting():
            await self.tokens.ask()  # a driver is waiting at the charger: before the outbox
            return True
        if self._authorizing is not None:
            tag, prof = self._authorizing
            self._authorizing = None
            res = await self.call("Authorize", {"idTag": tag})
            info = res["idTagInfo"]
            self.tokens.learn(tag, info)
            if info["status"] == "Accepted":
                self._remote_authorized(tag, prof, info.get("parentIdTag"))
            return True
        if await self._send_outbox(now):
            return True
        if self._pending_tx_profile is not None and self._tx is not None:
            tid = self.outbox.transaction_id(self._tx["n"])
            if tid is not None:
                prof = self._pending_tx_profile
                self._pending_tx_profile = None
                prof["transactionId"] = tid
                self.profiles.set(1, prof, tid, self.wall.now())
        hb = self._hb_s
        if hb > 0 and (self._last_sent is None or self._since_ms(self._last_sent) >= hb * 1000):
            await self._heartbeat()
            return True
        self._confirm_update(now)
        return False

    def _confirm_update(self, now):
        # A new version on trial is confirmed once it has been accepted by the back end and
        # ran CONFIRM_MS without a fault; otherwise the next boot rolls back (appslot.py).
        u = self.opts.updater
        if u is None or self._confirmed:
            return
        if self.charger.faults.any():
            self._healthy_since = None
            return
        if self._healthy_since is None:
            self._healthy_since = now
        elif self.clock.ticks_diff(now, self._healthy_since) >= CONFIRM_MS:
            self._confirmed = True
            u.confirm()

    def queue(self, action, payload):
        """A FirmwareStatusNotification / DiagnosticsStatusNotification to send in order, once
        connected (kept in RAM: a few, the newest win)."""
        self._notices.append((action, payload))
        if len(self._notices) > 8:
            self._notices.pop(0)

    async def _send_trigger(self, boot_only=False):
        if self._notices and not boot_only:
            action, payload = self._notices[0]
            await self.call(action, payload)
            self._notices.pop(0)
            return True
        if not self._triggers:
            return False
        what, body = self._triggers[0]
        if boot_only and what != "BootNotification":
            return False
        self._triggers.pop(0)
        if what == "BootNotification":
            await self._boot()
        elif what == "Heartbeat":
            await self._heartbeat()
        elif what == "MeterValues":
            await self.call("MeterValues", body)
        elif what == "FirmwareStatusNotification":
            u = self.opts.updater
            await self.call(what, {"status": u.status() if u is not None else "Idle"})
        elif what == "DiagnosticsStatusNotification":
            d = self.opts.diagnostics
            await self.call(what, {"status": d.status() if d is not None else "Idle"})
        return True

    async def call(self, action, payload, timeout_ms=None):
        self._last_sent = self.clock.ticks_ms()
        self.sent += 1
        try:
            return await self.rpc.call(action, payload, timeout_ms)
        except (RpcError, MemoryError):
            raise  # (MemoryError: the sender notes it and tries again later; the link is fine)
        except Exception as e:
            # Fix (test_chargepoint): ws.Link.send raises ClosedError (or OSError) when the
            # connection breaks during the write. That escaped _send_outbox (the message stayed
            # handed out, so the outbox stalled) and _sender (the link's task ended for good).
            # It is the link going down: the same as an answer lost to CLOSED.
            raise RpcError(rpc_mod.CLOSED, "send failed: %r" % (e,))

    async def _boot(self):
        o = self.opts
        p = {"chargePointVendor": VENDOR, "chargePointModel": o.model[:20], "firmwareVersion": o.version[:50]}
        if o.serial:
            p["chargePointSerialNumber"] = o.serial[:25]
        meter = self.st.meter
        if meter is not None and getattr(meter, "model", None):
            p["meterType"] = str(meter.model)[:25]
        try:
            res = await self.call("BootNotification", p)
        except RpcError as e:
            if e.code == rpc_mod.CLOSED:
                raise
            self._boot_due = self.clock.ticks_add(self.clock.ticks_ms(), BOOT_RETRY_S * 1000)
            raise
        self.boot_status = res["status"]
        self._set_time(res["currentTime"])
        self.st.emit("ocpp", {"boot": res["status"], "interval": res["interval"]})
        iv = res["interval"]
        if res["status"] == "Accepted":
            if iv > 0:
                try:
                    self.config.set("HeartbeatInterval", iv)
                    self._hb_s = iv
                except (ValueError, OSError) as e:  # beyond what the tick arithmetic can time
                    self.note("heartbeat interval %r not taken: %s" % (iv, e))
            self.accepted = True
            self._reported = [None, None]  # every connector's status again (section 4.2.1)
        else:
            self._boot_due = self.clock.ticks_add(self.clock.ticks_ms(), (iv if iv > 0 else BOOT_RETRY_S) * 1000)

    async def _heartbeat(self):
        res = await self.call("Heartbeat", {})
        self._set_time(res["currentTime"])

    def _set_time(self, text):
        try:
            was = self.wall.synced
            self.wall.set(dt.parse(text))
            if not was:
                self._synced_at = self.wall.now()
                tx = self._tx
                if tx is not None and "k0" in tx:  # started in this boot, before the time was known
                    tx["t0"] = self._epoch_at(tx["k0"])
        except ValueError:
            self.note("back end sent a bad currentTime %r" % (text,))

    async def _send_outbox(self, now):
        ob = self.outbox
        m = ob.next_due(now)
        if m is None:
            return False
        seq, action, payload = m
        if PROVISIONAL in payload:
            payload = self._restamp(payload)
        if action == "DataTransfer":  # the session cost: its transactionId goes into the data
            data = dict(payload["data"])
            data["transactionId"] = payload.get("transactionId", -1)
            payload = {"vendorId": payload["vendorId"], "messageId": payload["messageId"], "data": _dumps(data)}
        try:
            res = await self.call(action, payload)
        except RpcError as e:
            if e.code == rpc_mod.CLOSED:
                ob.release(seq)
            else:
                self.note("%s failed: %s %s" % (action, e.code, e.description))
                ob.fail(seq, self.clock.ticks_ms())
            return True
        ob.confirm(seq, res)
        if action == outbox_mod.START:
            self._start_answered(payload, res)
        if action in (outbox_mod.START, outbox_mod.STOP) and type(res) is dict:
            self.tokens.learn(payload.get("idTag"), res.get("idTagInfo"))
        return True

    def _exact(self, payload, exact):
        """A payload whose time is true whatever this boot's clock knows (it comes from the
        journal, written when the time was known): marked so that _put leaves it as it is."""
        if exact and not self.wall.synced:
            payload[PROVISIONAL] = None

    def _restamp(self, payload):
        """The payload to send for one put before the time was known (see _put): its timestamps
        shifted by what the wall clock then lacked, when it was this boot and the time is known
        now; else as estimated (a boot never told the time can not be put right), or as it is
        when it was true already (_exact)."""
        mark = payload[PROVISIONAL]
        p = dict(payload)
        del p[PROVISIONAL]
        if mark is None:
            return p
        boot, then, tick = mark
        if boot != self._boot_id or not self.wall.synced:
            return p
        shift = self.wall.now() - self.clock.ticks_diff(self.clock.ticks_ms(), tick) // 1000 - then
        if not shift:
            return p

        def moved(d):
            d = dict(d)
            d["timestamp"] = dt.iso(dt.parse(d["timestamp"]) + shift)
            return d
        if "timestamp" in p:
            p = moved(p)
        for key in ("meterValue", "transactionData"):
            if key in p:
                p[key] = [moved(v) for v in p[key]]
        return p

    def _start_answered(self, payload, res):
        # Section 3.5.4 / 5.x: the back end may refuse the idTag of a transaction that runs. A
        # session that needed no authorization (free charging) is not the back end's to refuse.
        info = res.get("idTagInfo") or {}
        tx = self._tx
        c = self.charger
        if tx is not None and payload.get("idTag") == tx["tag"] and info.get("parentIdTag"):
            tx["group"] = info["parentIdTag"]  # stopping by group counts it as Authorize.conf's (3.10)
        if info.get("status") == "Accepted" or tx is None or not c.session or c.id_tag is None \
                or payload.get("idTag") != tx["tag"]:
            return
        if self.config.get("StopTransactionOnInvalidId"):
            c.deauthorize()
            if self._has_lock():  # errata 3.5: locked until the same idTag (or group) comes back
                c.hold_lock(tx["tag"])
        else:
            c.limits.claim(INVALID_CLAIM, 0)  # energy stops; the transaction stays open


    # ---- for the bench, the simulator and tests --------------------------------------------

    def snapshot(self):
        return {"connected": self.link is not None and self.link.connected, "accepted": self.accepted,
                "queued": self.outbox.pending(), "status": self._status[1] and self._status[1][0],
                "time_synced": self.wall.synced}


def measurands(mt, offered_a):
    """What a metering.Metering `mt` measures, by the names of OCPP 1.6 (9.1.17, 7.31), for
    MeterValues: {measurand: value or {phase: value}}."""
    out = {"Current.Offered": offered_a}
    if mt.register_wh is None:
        return out
    out["Energy.Active.Import.Register"] = mt.register_wh
    if not mt.valid:
        return out
    out["Power.Active.Import"] = mt.power_w
    if mt.measures_current:
        a = mt.amps_ma
        v = mt.volts_dv
        out["Current.Import"] = {"L1": a[0] / 1000, "L2": a[1] / 1000, "L3": a[2] / 1000}
        out["Voltage"] = {"L1-N": v[0] / 10, "L2-N": v[1] / 10, "L3-N": v[2] / 10}
    return out


def _values(meter_values):
    """The number of sampled values in a list of MeterValue entries."""
    n = 0
    for e in meter_values:
        n += len(e["sampledValue"])
    return n


def _num(v):
    """A sampled value as OCPP wants it: a decimal string without needless digits."""
    if type(v) is float:
        if v == int(v):
            return "%d" % int(v)
        return ("%.3f" % v).rstrip("0").rstrip(".")
    return "%d" % v
