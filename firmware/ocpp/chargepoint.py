"""The OCPP 1.6J charge point: one connector, fed by the station's events, feeding the charger's
inputs back. It never drives the contactor: a command becomes `authorize`, `stop`,
`set_available` or a current-limit claim, and the charger decides.

    cp = ChargePoint(station, Options(url=..., charge_box_id=...), fs=fs)
    cp.service(now)        # from the station's slow task (every 100 ms): every service's round
    await cp.run()         # the link: connect, boot, send, answer (its own asyncio tasks)

The ChargePoint is the hub: it owns the link (connection, RPC, the sender's order), the
configuration store, the outbox and ocpp.json, and hands each Call to the service that owns its
action (ROUTES). Each service owns its state, its handlers (methods named as the action) and,
where it has one, a `service(now, epoch)` for the slow task and a `send(now)` for the sender
(docs/ocpp.md, "Services"):

    boot           BootNotification, Heartbeat, the time          firmware/ocpp/boot.py
    status         StatusNotification                             firmware/ocpp/status.py
    tx             transactions: the session journal to the outbox, DataTransfer
                                                                  firmware/ocpp/transactions.py
    meter          MeterValues, StopTxn*Data                      firmware/ocpp/meter.py
    tokens         Authorize, local list, cache                   firmware/ocpp/tokens.py
    remote         remote control and availability, TriggerMessage
                                                                  firmware/ocpp/remote.py
    configuration  Get/ChangeConfiguration, security profile      firmware/ocpp/configuration.py
    smart          smart charging (on first use)                  firmware/ocpp/smart.py
    reservations   ReserveNow, CancelReservation (on first use)   firmware/ocpp/reservation.py
    maintenance    UpdateFirmware, GetDiagnostics (on first use)  firmware/ocpp/maintenance.py

Services talk to each other through public methods, and to the station and the charger through
their public commands and views (station.emit, charger.authorize, charger.stop, ...).

ocpp.json (`kept`): "s"/"p" the last sessions whose StartTransaction/StopTransaction were queued
(transactions.py), "t" the wall clock saved as the floor for the next boot, "o"/"so" operative
and scheduled availability (remote.py), "r" the reservation, "pf" the SecurityProfile to fall back
to. It is replaced as a whole by `save()`; one the flash refuses stays in RAM and is written again
every service round, before anything more is queued (`waiting()`).

Time: the back end sets the wall clock (BootNotification.conf, Heartbeat.conf). Before that the
clock counts from the last time known before the reboot (saved in ocpp.json), so timestamps
never go backwards; they are as good as the last sync.
"""
from firmware import store
from firmware.ocpp import boot as boot_mod
from firmware.ocpp import config as config_mod
from firmware.ocpp import dt
from firmware.ocpp import meter as meter_mod
from firmware.ocpp import outbox as outbox_mod
from firmware.ocpp import remote as remote_mod
from firmware.ocpp import rpc as rpc_mod
from firmware.ocpp import status as status_mod
from firmware.ocpp import tokens as tokens_mod
from firmware.ocpp import transactions as tx_mod
from firmware.ocpp.configuration import Configuration
from firmware.ocpp.rpc import RpcError

VERSION = "0.4.0"
STATE_FILE = "ocpp.json"
CONFIG_FILE = "ocpp-config.json"
OUTBOX_DIR = "outbox"
PROFILES_FILE = "ocpp-profiles.json"  # firmware/ocpp/smart.py
POLL_MS = 100
SAVE_TIME_S = 3600  # how often the wall clock is saved as the floor for the next boot
BACKOFF_CAP_MS = 60000  # longest wait between reconnection attempts (full jitter below it)
STABLE_MS = 10000  # a connection up this long resets the reconnect backoff
READS = ("GetConfiguration", "GetLocalListVersion", "GetCompositeSchedule")  # change nothing (rpc: reads)

# The CS -> CP operations this charge point implements and the service that handles each (a
# method of that name). The others are NotSupported; names not in OCPP 1.6 at all are
# NotImplemented (rpc.py). A constant tuple: in flash when frozen.
ROUTES = (
    ("ChangeAvailability", "remote"), ("RemoteStartTransaction", "remote"),
    ("RemoteStopTransaction", "remote"), ("Reset", "remote"), ("UnlockConnector", "remote"),
    ("TriggerMessage", "remote"),
    ("ChangeConfiguration", "configuration"), ("GetConfiguration", "configuration"),
    ("DataTransfer", "tx"),
    ("ClearCache", "tokens"), ("SendLocalList", "tokens"), ("GetLocalListVersion", "tokens"),
    ("ReserveNow", "reservations"), ("CancelReservation", "reservations"),
    ("SetChargingProfile", "smart"), ("ClearChargingProfile", "smart"), ("GetCompositeSchedule", "smart"),
    ("GetDiagnostics", "maintenance"), ("UpdateFirmware", "maintenance"),
)
SUPPORTED = (
    "ChangeAvailability", "RemoteStartTransaction", "RemoteStopTransaction", "Reset", "UnlockConnector",
    "TriggerMessage", "ChangeConfiguration", "GetConfiguration", "DataTransfer", "ClearCache",
    "SendLocalList", "GetLocalListVersion", "ReserveNow", "CancelReservation", "SetChargingProfile",
    "ClearChargingProfile", "GetCompositeSchedule", "GetDiagnostics", "UpdateFirmware",
)
_PENDING_ALLOWS = ("RemoteStartTransaction", "RemoteStopTransaction")  # 4.2: not while Pending


def _join(root, name):
    if not root:
        return name
    return root.rstrip("/") + "/" + name


def route(action):
    """The name of the service that handles `action`, or None."""
    for a, name in ROUTES:
        if a == action:
            return name
    return None


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
        self.boot_id = rpc_mod.random_hex()  # tells this boot's provisional timestamps from older ones
        self.st = station
        self.charger = station.charger
        self.clock = station.clock
        self.opts = opts
        self.fs = fs
        self.root = station.root
        self.phases = station.profile.get("phases", 3)
        self._state_path = _join(self.root, STATE_FILE)
        self.errors = []  # what went wrong locally, newest last (bounded): for logs and tests
        self.kept = self._load_state()  # ocpp.json (a corrupt one is noted in self.errors)
        self.wall = dt.WallClock(self.clock, self.kept.get("t") or 0)
        self._saved_t = self.wall.now()
        self._dirty = False  # ocpp.json is behind RAM (a write the flash refused): written again every round
        self.link = link
        self.rpc = None
        self.sent = 0
        self.received = 0
        self.last_sent = None  # tick of the last message sent (heartbeat timing)
        self.local_wait = False  # a command's answer waits on the charger, not on the network
        self.relink = None  # why the link must reconnect once the current answer is out
        self._triggers = []  # requested messages (TriggerMessage), sent after the answer
        self._notices = []  # (action, payload) status notifications of updates, in order
        self._reader_task = None  # the link's tasks while it runs
        self._side = ()
        # Every attribute is set here, none later: a first assignment that grows the instance's
        # dict in the middle of a session may find no block that large in a fragmented heap.
        self.config = config_mod.Config(_join(self.root, CONFIG_FILE), fs, self._config_defaults(),
                                        readonly=self._config_readonly())
        cfg = self.config
        cfg.ca_installed = opts.ca is not None  # SecurityProfile 2 needs it (A05.FR.03)
        self.outbox = outbox_mod.Outbox(_join(self.root, OUTBOX_DIR), fs=outbox_mod.FS() if fs is None else fs,
                                        clock=self.clock, attempts=cfg.get("TransactionMessageAttempts"),
                                        retry_interval_s=cfg.get("TransactionMessageRetryInterval"),
                                        enc=txenc)
        if self._txenc is None:
            self._txenc = self.outbox.encoder
        # the services (see the module's docstring); the first three are made at first use, or
        # at boot when ocpp.json, the profiles' file or the board says they are in use
        self.smart = None
        self.reservations = None
        self.maintenance = None
        self.configuration = Configuration(self)
        self.boot = boot_mod.Boot(self)
        self.tokens = tokens_mod.Tokens(self, fs)
        self.meter = meter_mod.Meter(self)
        self.remote = remote_mod.Remote(self)
        self.status = status_mod.Status(self)
        self.tx = tx_mod.Transactions(self)
        if (fs if fs is not None else store.RealFS()).exists(self.root_path(PROFILES_FILE)):
            self.part("smart")
        if self.kept.get("r") is not None:
            self.part("reservations")
        if opts.updater is not None:
            self.part("maintenance")
        station.add_sink(self.tx.event)
        self.tx.reconcile()
        if self.tx.current is None and self.smart is not None:
            self.smart.tx_ended()  # TxProfiles of a transaction that is over

    # ---- ocpp.json ----------------------------------------------------------------------

    def _load_state(self):
        try:
            doc = store.read_json(self._state_path, self.fs)
        except ValueError as e:
            self.note("ocpp.json unreadable (%s): starting from the journal" % e)
            doc = None
        if type(doc) is not dict:
            doc = {"new": True}
        for k in ("s", "p", "o", "so", "r", "pf"):
            if k not in doc:
                doc[k] = True if k == "o" else None
        return doc

    def save(self):
        """Write ocpp.json (`kept`, with the wall clock now); True when it is on flash. One the
        flash refuses stays in RAM and is written again every service round (tx.catch_up),
        before anything more is queued."""
        self._dirty = True
        self._saved_t = self.kept["t"] = self.wall.now()
        self.kept.pop("new", None)
        try:
            store.write_json(self._state_path, self.kept, self.fs)
        except OSError:
            return False  # the station's flash condition reports it
        self._dirty = False
        return True

    @property
    def dirty(self):
        """ocpp.json is behind RAM (a write the flash refused)."""
        return self._dirty

    def waiting(self):
        """True while a transaction message or a mark of the queue is in RAM only (the flash
        refused it): the station reports the flash condition and starts no new session."""
        return self._dirty or self.tx.waiting() or self.outbox.waiting()

    def root_path(self, name):
        return _join(self.root, name)

    def _config_defaults(self):
        d = {}
        if self.opts.password is not None:
            d["AuthorizationKey"] = self.opts.password
        if not self.has_lock():
            d["UnlockConnectorOnEVSideDisconnect"] = False  # errata 3.83
        if self.charger.switchable:
            d["ConnectorSwitch3to1PhaseSupported"] = True  # a phase switch (charger.claim_phases)
        return d

    def _config_readonly(self):
        return () if self.has_lock() else ("UnlockConnectorOnEVSideDisconnect",)

    def has_lock(self):
        return getattr(self.st, "lock", None) is not None

    # ---- read-only views ----------------------------------------------------------------

    @property
    def transaction(self):
        """The running transaction ({"n", "tag", "t0", "group", "tariff", ...}) or None: read only."""
        return self.tx.current

    @property
    def reservation(self):
        """The reservation in force ({"id", "tag", "parent", "exp"}) or None: read only."""
        r = self.reservations
        return r.current if r is not None else None

    def reservation_matches(self, tag, group):
        """5.13: the reserved idTag, or any token of the reservation's parentIdTag group."""
        r = self.reservations
        return r is not None and r.matches(tag, group)

    @property
    def accepted(self):
        """BootNotification accepted on this connection."""
        return self.boot.accepted

    @property
    def boot_status(self):
        """The last BootNotification answer: Accepted, Pending, Rejected (None before one)."""
        return self.boot.status

    def online(self):
        """Connected, and the BootNotification accepted."""
        return self.link is not None and self.link.connected and self.boot.accepted

    def note(self, text):
        """Something went wrong locally: kept (the last 8) and reported as an event for the log."""
        self.errors.append(text)
        if len(self.errors) > 8:
            self.errors.pop(0)
        self.st.emit("ocpp", {"error": text})

    # ---- the services -------------------------------------------------------------------

    def part(self, name):
        """The service `name`, its module imported and the service made at first use (the
        rarely used ones: smart, reservations, maintenance)."""
        s = getattr(self, name)
        if s is not None:
            return s
        if name == "smart":
            from firmware.ocpp.smart import Smart as make
        elif name == "reservations":
            from firmware.ocpp.reservation import Reservations as make
        else:
            from firmware.ocpp.maintenance import Maintenance as make
        s = make(self, self.root_path(PROFILES_FILE)) if name == "smart" else make(self)
        setattr(self, name, s)
        return s

    def service(self, now):
        """Every service round (100 ms): what each service watches (time-outs, samples,
        limits, statuses)."""
        epoch = self.wall.now()
        self.tx.service(now, epoch)
        if self.reservations is not None:
            self.reservations.service(now, epoch)
        self.remote.service(now, epoch)
        self.meter.service(now, epoch)
        if self.smart is not None:
            self.smart.service(now, epoch)
        self.status.service(now, epoch)
        if epoch - self._saved_t >= SAVE_TIME_S:
            if self.st.flash.periodic():  # (periodic data: outside the flash's reserve)
                self.save()
            else:
                self._saved_t = epoch
        if self.maintenance is not None:
            self.maintenance.service(now, epoch)

    def trigger(self, what, body=None):
        """A message to send once connected and after the answer being written (TriggerMessage,
        a clock-aligned sample outside a transaction)."""
        self._triggers.append((what, body))

    def queue(self, action, payload):
        """A FirmwareStatusNotification / DiagnosticsStatusNotification to send in order, once
        connected (kept in RAM: a few, the newest win)."""
        self._notices.append((action, payload))
        if len(self._notices) > 8:
            self._notices.pop(0)

    # ---- commands from the back end -----------------------------------------------------

    async def _handle(self, action, p):
        self.received += 1
        b = self.boot
        if not b.accepted and b.status != "Pending":
            raise RpcError(rpc_mod.SECURITY, "BootNotification not accepted yet")
        if not b.accepted and action in _PENDING_ALLOWS:
            # Section 4.2, "While in pending state, the following Central System initiated
            # messages are not allowed: RemoteStartTransaction.req and RemoteStopTransaction.req".
            return {"status": "Rejected"}
        name = route(action)
        if name is None:
            raise RpcError(rpc_mod.NOT_SUPPORTED, "%s not supported" % action)
        return await getattr(self.part(name), action)(p)

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

        # MessageTimeout (errata 3.82) applies to every call.
        self.rpc = Rpc(self.link.send, self.clock, self._handle, SUPPORTED,
                       timeout_ms=self.config.get("MessageTimeout") * 1000, send_json=self.link.send_json,
                       note=self.note, spare=self._spare, reads=READS)
        self.configuration.connected()
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
        self.configuration.connect_failed(reason)

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
        self.link.url = self.configuration.url()
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
            self.st = self.charger = self.outbox = self.config = self.rpc = None
            self.opts = self.link = self._rxbuf = self._txbuf = self._txenc = None
            self.boot = self.status = self.tx = self.meter = self.tokens = self.remote = None
            self.configuration = self.smart = self.reservations = self.maintenance = None

    def start_side_task(self, part):
        """Run part.run() beside the link's tasks, if they run already (run() starts the ones
        that exist before it)."""
        if self._reader_task is not None:
            import asyncio

            self._side.append(asyncio.create_task(part.run()))

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
            if r is not None and not self.boot.accepted and self.boot.status == "Rejected" \
                    and rpc_mod.parse(msg, SUPPORTED, r.max_size, size=size)[0] in (rpc_mod.CALL, rpc_mod.REFUSE):
                # Section 4.2, "While Rejected, the Charge Point SHALL NOT respond to any Central
                # System initiated message". Answers to our own calls are still read.
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

    async def _send_one(self):
        """Send the most urgent message, if any; True if something was sent. The order: a
        reconnection asked for, BootNotification, triggered messages, statuses, the token a
        driver waits on, a remote start's Authorize, the outbox, Heartbeat."""
        link = self.link
        if self.rpc is None or link is None or not link.connected:
            return False
        if self.rpc.busy and not self.local_wait:
            # (local_wait: UnlockConnector waits for the lock; its StopTransaction goes first)
            # An incoming call's answer is still being written. 5.17: "The Charge Point SHALL
            # first send the TriggerMessage response, before sending the requested message".
            return False
        if self.relink is not None:  # the answer that asked for it is out
            why, self.relink = self.relink, None
            await link.reconnect(why)
            return True
        now = self.clock.ticks_ms()
        if not self.boot.accepted:
            if self.boot.due(now):
                await self.boot.boot()
                return True
            return await self._send_trigger(boot_only=True)
        if await self._send_trigger():
            return True
        if await self.status.send(now) or await self.tokens.send(now) or await self.remote.send(now) \
                or await self.tx.send(now):
            return True
        return await self.boot.send(now)

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
            await self.boot.boot()
        elif what == "Heartbeat":
            await self.boot.heartbeat()
        elif what == "MeterValues":
            await self.call("MeterValues", body)
        else:  # FirmwareStatusNotification, DiagnosticsStatusNotification
            await self.call(what, {"status": self.part("maintenance").status_of(what)})
        return True

    async def call(self, action, payload, timeout_ms=None):
        self.last_sent = self.clock.ticks_ms()
        self.sent += 1
        try:
            return await self.rpc.call(action, payload, timeout_ms)
        except (RpcError, MemoryError):
            raise  # (MemoryError: the sender notes it and tries again later; the link is fine)
        except Exception as e:
            # ws.Link.send raises ClosedError (or OSError) when the connection breaks during the
            # write: the link going down, the same as an answer lost to CLOSED (the outbox
            # hands the message out again, the sender goes on).
            raise RpcError(rpc_mod.CLOSED, "send failed: %r" % (e,))

    # ---- for the bench, the simulator and tests --------------------------------------------

    def snapshot(self):
        return {"connected": self.link is not None and self.link.connected, "accepted": self.boot.accepted,
                "queued": self.outbox.pending(), "status": self.status.connector_status(),
                "time_synced": self.wall.synced}
