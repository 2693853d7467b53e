"""Transactions: the session journal to the outbox, and the outbox to the back end.

Transactions never get lost (see also outbox.py). One step, catch_up(), queues what is behind
the session journal, in order: session N's StartTransaction once its start is on flash, its
StopTransaction (after the SessionCost DataTransfer of a priced session) once its closing record
is; ocpp.json's marks ("s" = last session whose StartTransaction was queued, "p" = last whose
StopTransaction was queued) are replaced right after each put. It runs in the same synchronous
call in which the station journals a session event, at boot (a power cut between the journal and
the outbox) and every service round (a write the flash refused, a StartTransaction waiting for
the meter's first reading). Nothing is put while ocpp.json lags, so at most the newest put can be
missing from it, and outbox.tail() tells whether that put was made.

Also here: DataTransfer of this vendor (the tariff table, docs/tariffs.md), and the idTag the
back end refuses in StartTransaction.conf (3.5.4).
"""
from firmware.ocpp import dt
from firmware.ocpp import dumps as _dumps
from firmware.ocpp import outbox as outbox_mod
from firmware.ocpp.rpc import CLOSED, RpcError

VENDOR_ID = "org.micropython-evse"
PROVISIONAL = "_clock"  # outbox payloads put before the time was known (never sent)
INVALID_CLAIM = "ocpp-invalid-id"  # 0 A while a refused idTag's transaction stays open


class Transactions:
    def __init__(self, cp):
        self.cp = cp
        self.current = None  # {"n", "tag", "t0", "group", "tariff"[, "k0"]} of the running transaction
        self.stop_by = None  # idTag that asked for the stop being recorded (StopTransaction)
        # [n, idTag, epoch, transactionData, SessionCost payload, stop_by, epoch is true] of a stop
        # not queued yet
        self._stop_info = None
        self._pending = None  # (action, n, payload) of a transaction message built but not queued yet
        self._put_error = None  # OSError of the transaction message that waits to be queued

    # ---- views ----------------------------------------------------------------------------

    def waiting(self):
        """A transaction message waits in RAM to be queued (the flash refused it)."""
        return self._put_error is not None

    def started(self):
        """The running transaction, once its StartTransaction is queued and ocpp.json says so:
        nothing of the transaction goes before it."""
        tx = self.current
        cp = self.cp
        if tx is None or cp.kept["s"] != tx["n"] or cp.dirty:
            return None
        return tx

    def transaction_id(self):
        """The back end's transactionId of the running transaction, None before it is known."""
        tx = self.current
        return self.cp.outbox.transaction_id(tx["n"]) if tx is not None else None

    # ---- at boot ---------------------------------------------------------------------------

    def reconcile(self):
        """At boot: where the queue stands, then what a power cut kept out of the outbox."""
        cp = self.cp
        kept = cp.kept
        keeper = cp.st.keeper
        last = keeper.last_n()
        qs, qp = kept["s"], kept["p"]
        if kept.get("new") or qs is None or qp is None:
            # The first boot with OCPP: sessions from before are not transactions of this back
            # end; an open one is.
            qs = qp = last - 1 if keeper.current is not None else last
        elif qs > last:
            keeper.skip_to(qs)  # the journal lost sessions the back end has seen: never reuse their numbers
        if qp > qs:
            qs = qp
        elif qs > qp + 1:
            qp = qs - 1
        changed = (qs, qp) != (kept["s"], kept["p"])
        kept["s"], kept["p"] = qs, qp
        if changed:
            cp.save()
        cur = keeper.current or cp.st.recovered
        if cur is not None:
            self.current = {"n": cur["n"], "tag": cur.get("tag"), "t0": cur.get("t")}
        self.catch_up()

    def time_known(self):
        """The back end told the time: a transaction started in this boot before that gets its
        true start."""
        tx = self.current
        if tx is not None and "k0" in tx:
            tx["t0"] = self._epoch_at(tx["k0"])

    # ---- journal -> outbox -----------------------------------------------------------------

    def service(self, now, epoch):
        self.catch_up()

    def catch_up(self):
        """Queue, in order, the transaction messages behind the journal: after a power cut (at
        boot), after a write the flash refused, and a StartTransaction that waited for the
        meter's first reading. The same step serves a session event as it happens, and runs
        every service round. Session N's StartTransaction goes once its start is on flash, its
        StopTransaction once its closing record is; each put is followed by ocpp.json's mark,
        and nothing is put while that mark is behind, so that at most the newest put is missing
        from ocpp.json: outbox.tail() tells whether it was made (_queue)."""
        cp = self.cp
        if cp.dirty and not cp.save():
            return
        k = cp.st.keeper
        kept = cp.kept
        while True:
            qs = kept["s"]
            if kept["p"] < qs:
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
        kept (_pending) and put again by the next catch_up."""
        t = self.cp.outbox.tail()
        if t is not None and t[0] == action and t[1] == n:
            self._pending = None
            return True
        r = self.put(action, p, n)
        if r is False:
            self._pending = (action, n, p)
            return False
        self._pending = None
        return True  # (None: it can never be queued, and was noted: the next one goes on)

    def _queue_start(self, n):
        cp = self.cp
        p = self._built(outbox_mod.START, n)
        if p is None:
            rec = cp.st.keeper.find(n)
            if rec is None:
                cp.note("session %d is not in the journal (any more): no StartTransaction" % n)
                cp.kept["s"] = cp.kept["p"] = n
                return cp.save()
            if rec.get("e0") is None and not rec.get("stop") and cp.st.meter is not None:
                # The meter has not answered since boot: meterStart waits for its first reading
                # (meanwhile nothing of the transaction is queued), else the back end would bill
                # the meter's whole register.
                return False
            tx = self.current if self.current is not None and self.current["n"] == n else None
            tag = (tx["tag"] if tx is not None else rec.get("tag")) or cp.opts.free_id_tag
            t = tx["t0"] if tx is not None else rec.get("t")
            p = {"connectorId": 1, "idTag": tag, "meterStart": int(rec.get("e0") or 0),
                 "timestamp": dt.iso(t if t is not None else cp.wall.now())}
            # (a time from the journal was true when written: put must not shift it)
            self._exact(p, t is not None and (tx is None or "k0" not in tx))
            if cp.reservation_matches(tag, tx.get("group") if tx is not None else None):
                p["reservationId"] = cp.reservation["id"]
        if not self._queue(outbox_mod.START, p, n):
            return False
        if "reservationId" in p:
            cp.reservations.used()  # 5.13: the reservation ends with the transaction it was for
        cp.kept["s"] = n
        return cp.save()

    def _queue_stop(self, n):
        cp = self.cp
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
            rec = cp.st.keeper.find(n)
            if rec is None or not rec.get("stop"):
                cp.note("session %d is not in the journal (any more): no StopTransaction" % n)
                cp.kept["p"] = n
                return cp.save()
            t = info[2] if info is not None else rec.get("ts")
            exact = info[6] if info is not None else t is not None
            p = {"meterStop": int(rec.get("e") or 0), "timestamp": dt.iso(t if t is not None else cp.wall.now()),
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
        cp.kept["p"] = n
        return cp.save()

    # ---- session events from the station (synchronous, in its slow task) ---------------

    def event(self, kind, fields, at):
        if kind != "session":
            return
        cp = self.cp
        t = self._epoch_at(at)
        if fields["event"] == "start":
            n = fields["n"]
            id_tag = fields.get("id_tag")
            group, tariff = cp.tokens.take_grant(id_tag)
            # k0: the tick of the start, to put t0 right once the back end tells the time
            self.current = {"n": n, "tag": id_tag or cp.opts.free_id_tag, "t0": t, "group": group,
                            "tariff": tariff, "k0": at if at is not None else cp.clock.ticks_ms()}
            cp.remote.session_started()
            cp.meter.session_started(t)
        else:
            n = fields.get("n")
            if n is None:
                return
            tx = self.current
            tag = tx["tag"] if tx is not None and tx["n"] == n else fields.get("id_tag")
            exact = fields.get("time") is not None  # it stopped then (a session cut by a power loss)
            if exact:
                t = fields["time"]
            data = cp.meter.session_ended(t)
            cost = self._cost(tag, fields) if "cost" in fields else None
            self._stop_info = [n, tag, t, data, cost, self.stop_by, exact]
            self.stop_by = None
            self.current = None
            if cp.smart is not None:
                cp.smart.tx_ended()
            cp.charger.limits.claim(INVALID_CLAIM, None)
            cp.remote.session_ended()
        self.catch_up()

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

    def put(self, action, payload, n):
        """Put a message in the outbox: True once it is on flash; False when the flash refused it
        (`_put_error` for a transaction message) or the outbox is full; None when it can never be
        queued. Both are noted (events); the caller decides what is retried."""
        cp = self.cp
        if not cp.wall.synced and PROVISIONAL not in payload:
            # The back end has not told the time in this boot: the timestamps count from the
            # last time known before it (1970 if none). Note where this boot's clock stood, so
            # that _restamp() can shift them once the time is known, before they are sent.
            payload[PROVISIONAL] = [cp.boot_id, cp.wall.now(), cp.clock.ticks_ms()]
        try:
            cp.outbox.put(action, payload, n)
        except (OSError, outbox_mod.OutboxFull) as e:
            if action == "MeterValues":
                return False
            if self._put_error is None and self._pending is None:  # (once: it is put again every round)
                cp.note("%s of transaction %d not queued yet (put again later): %s" % (action, n, e))
            if isinstance(e, OSError):
                self._put_error = e  # the flash refused it (the outbox being full is not the flash's fault)
            return False
        except ValueError as e:
            cp.note("%s of transaction %d not queued: %s" % (action, n, e))
            return None
        if action != "MeterValues":
            self._put_error = None
        return True

    def _epoch_at(self, at):
        clock = self.cp.clock
        now = clock.ticks_ms()
        back = clock.ticks_diff(now, at) // 1000 if at is not None else 0
        return self.cp.wall.now() - (back if back > 0 else 0)

    # ---- outbox -> back end ----------------------------------------------------------------

    async def send(self, now):
        cp = self.cp
        ob = cp.outbox
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
            res = await cp.call(action, payload)
        except RpcError as e:
            if e.code == CLOSED:
                ob.release(seq)
            else:
                cp.note("%s failed: %s %s" % (action, e.code, e.description))
                ob.fail(seq, cp.clock.ticks_ms())
            return True
        ob.confirm(seq, res)
        if action == outbox_mod.START:
            self._start_answered(payload, res)
        if action in (outbox_mod.START, outbox_mod.STOP) and type(res) is dict:
            cp.tokens.learn(payload.get("idTag"), res.get("idTagInfo"))
        return True

    def _exact(self, payload, exact):
        """A payload whose time is true whatever this boot's clock knows (it comes from the
        journal, written when the time was known): marked so that put leaves it as it is."""
        if exact and not self.cp.wall.synced:
            payload[PROVISIONAL] = None

    def _restamp(self, payload):
        """The payload to send for one put before the time was known (see put): its timestamps
        shifted by what the wall clock then lacked, when it was this boot and the time is known
        now; else as estimated (a boot never told the time can not be put right), or as it is
        when it was true already (_exact)."""
        cp = self.cp
        mark = payload[PROVISIONAL]
        p = dict(payload)
        del p[PROVISIONAL]
        if mark is None:
            return p
        boot, then, tick = mark
        if boot != cp.boot_id or not cp.wall.synced:
            return p
        shift = cp.wall.now() - cp.clock.ticks_diff(cp.clock.ticks_ms(), tick) // 1000 - then
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
        cp = self.cp
        info = res.get("idTagInfo") or {}
        tx = self.current
        c = cp.charger
        if tx is not None and payload.get("idTag") == tx["tag"] and info.get("parentIdTag"):
            tx["group"] = info["parentIdTag"]  # stopping by group counts it as Authorize.conf's (3.10)
        if info.get("status") == "Accepted" or tx is None or not c.session or c.id_tag is None \
                or payload.get("idTag") != tx["tag"]:
            return
        if cp.config.get("StopTransactionOnInvalidId"):
            c.deauthorize()
            if cp.has_lock():  # errata 3.5: locked until the same idTag (or group) comes back
                c.hold_lock(tx["tag"])
        else:
            c.limits.claim(INVALID_CLAIM, 0)  # energy stops; the transaction stays open

    # ---- DataTransfer ------------------------------------------------------------------------

    async def DataTransfer(self, p):
        if p["vendorId"] != VENDOR_ID:
            return {"status": "UnknownVendorId"}
        mid = p.get("messageId")
        bl = self.cp.st.billing
        if mid == "SetTariffs":  # docs/tariffs.md: the whole table, JSON text in data
            err = bl.replace(p.get("data") or "")
            if err is not None:
                return {"status": "Rejected", "data": err[:500]}
            return {"status": "Accepted"}
        if mid == "GetTariffs":
            return {"status": "Accepted", "data": bl.tariffs.to_json() if bl.tariffs is not None else ""}
        return {"status": "UnknownMessageId"}
