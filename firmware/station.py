"""Composition root: builds every part from the board profile and the settings, runs the tasks.

Two tasks share the work:
- `tick()`, the control task, every 10 ms: sample pilot, proximity, RCD, contactor feedback and
  the meter's current; let the charger decide; apply duty, contactor and RCD test output. It
  allocates nothing in steady state and never waits.
- `service()`, the slow task, every 100 ms: temperature, events to the session journal and the
  event sinks (log, LED, later OCPP), persistent faults, watchdog.

On the board `main.py` calls `main()`, which runs both under asyncio. The simulator and the
tests call `tick()` and `service()` themselves on a virtual clock.

Neither task may die of an exception (a MemoryError in a fragmented heap, a flash error, a bug):
- the control task cannot be trusted once it raised: the contactor opens and the pilot goes to
  -12 V (state F) at once, then the board restarts;
- a slow round that raises is given up, reported as an "error" event, and the next round starts
  afresh while the control task goes on; SERVICE_FAILS_MAX failed rounds in a row restart the
  board (outputs safe first), before the watchdog would.
After a restart the journal carries the session across, as after a power cut.
A write the flash refuses (full, failing) is not an exception of a round at all: the record waits
in RAM and the flash condition is reported (_flash_check, firmware/flash.py).
"""

from firmware import billing as billing_mod
from firmware import charger as chg
from firmware import metering as metering_mod
from firmware import safety
from firmware import settings as settings_mod
from firmware import flash as flash_mod
from firmware import journal
from firmware import store
from firmware.session import SessionKeeper

TICK_MS = 10
SERVICE_MS = 100
TEMP_MS = 1000
METER_EVENT_MS = 10000
RECOVER_WAIT_MS = 5000
SERVICE_FAILS_MAX = 30  # slow rounds in a row that raised (3 s; the watchdog's default is 5 s)

SETTINGS_FILE = "settings.json"
FAULTS_FILE = "faults.json"
JOURNAL_FILE = "sessions.log"  # and .1 (the older generation), .open (the open session): firmware/session.py
LEGACY_JOURNAL = "sessions.jnl"  # the journal of firmware before 0.5, carried over once
OCPP_RX_BYTES = 4096  # the OCPP link's receive buffer: firmware/ocpp/rpc.py MAX_FRAME
OCPP_TX_BYTES = 512  # its send buffer: firmware/ocpp/ws.py PIECE (a TLS record each)
BOARD_FILE = "board.json"


def _join(root, name):
    """ROOT/name; an empty root means the working directory (the board's is "/")."""
    if not root:
        return name
    if root == "/":
        return "/" + name
    return root.rstrip("/") + "/" + name


class Station:
    def __init__(self, hw, profile, clock, root="/", settings=None, settings_error=None, fs=None):
        self.hw = hw
        self.profile = profile
        self.clock = clock
        self.root = root
        # Every part writes through this one adapter: a full or failing flash is known in one place.
        self.flash = flash_mod.Flash(fs, root, clock)
        fs = self.fs = self.flash
        self.flash_fault = None  # vendorErrorCode of the flash condition (FlashFull, FlashError) or None
        self._faults_dirty = False  # faults.json is behind the latched faults
        self._flash_state = 0  # which reason the flash fault has (0: none)
        self.sinks = []
        self.settings_error = settings_error
        if settings is None:
            settings = settings_mod.Settings()
        self.settings = settings
        self.charger = chg.Charger(
            clock,
            settings,
            profile["max_current_a"],
            profile.get("phases", 3),
            profile.get("socketed", True),
        )
        self.meter = getattr(hw, "meter", None)
        self.metering = metering_mod.Metering(
            self.meter, clock, _join(root, metering_mod.ENERGY_FILE), profile["max_current_a"],
            profile.get("phases", 3), settings.get("meter_max_failures"), fs=fs)
        # at the house connection (board profile grid_meter), made with the energy manager
        self.grid_meter = getattr(hw, "grid_meter", None)
        self.phase_switch = getattr(hw, "phase_switch", None)  # L2 and L3 on (3) or off (1), or None
        self._grid_readings = 0
        self.charger.switchable = self.phase_switch is not None
        # energy management (firmware/energy.py): made when a mode needs it, at boot or later
        self.energy = None
        if settings.get("energy_mode") != "normal":
            self._make_energy()
        self._incomplete = False  # the open session lost its meter for a while
        self.keeper = SessionKeeper(journal.Journal(_join(root, JOURNAL_FILE), fs), legacy=_join(root, LEGACY_JOURNAL))
        now = clock.ticks_ms()
        self._next_temp = now
        self._next_meter_event = now
        if settings_error is not None:
            self.charger.faults.trip(safety.CONFIG, now, False)
        self._restore_faults(now)
        self.billing = billing_mod.Billing(root, settings, fs)
        self._recovered = self.keeper.recover()
        if self._recovered is not None:
            self.billing.resume(self._recovered)
        self._recover_since = None
        self.lock = getattr(hw, "lock", None)  # the socket lock (drivers/lock.py), or None
        if self.lock is not None and self._recovered is not None:
            self.charger.lock_owner = self._recovered.get("tag")  # frees a lock kept across the cut
        self.ocpp = None  # the back-end link (firmware.ocpp.chargepoint), when configured
        # fn() -> wall-clock seconds once something knows the time (the OCPP link, when the back
        # end told it in this boot), else None; guess() -> its best estimate meanwhile
        self.epoch = None
        self.guess = None
        self._start_at = None  # tick of this boot at which the open session began
        self.reboot = None  # reboot(hard): restarts the board (set by start())
        self.failures = 0  # slow rounds that raised since boot
        self._failing = 0  # ... in a row

    # ---- persistence of latched faults ----

    def _restore_faults(self, now):
        try:
            doc = store.read_json(_join(self.root, FAULTS_FILE), self.fs)
        except ValueError:
            doc = None  # a corrupt record errs on the safe side below
            self.charger.faults.trip(safety.WELDED, now, False)
        if doc and doc.get("welded"):
            self.charger.faults.trip(safety.WELDED, now, False)

    def _save_faults(self):
        # A transaction-class record (it may use the flash's reserve): one the flash refuses is
        # written again every slow round (the latch itself holds in RAM meanwhile).
        self._faults_dirty = True
        welded = self.charger.faults.active(safety.WELDED)
        try:
            store.write_json(_join(self.root, FAULTS_FILE), {"welded": welded}, self.fs)
            self._faults_dirty = False
        except OSError:
            pass  # the flash condition reports it (_flash_check)

    def clear_fault(self, code):
        """A person cleared a latched fault (bench tool, local button or back end)."""
        self.charger.clear_fault(code)
        if code == safety.WELDED:
            self._save_faults()

    # ---- the control task ----

    def tick(self):
        try:
            self._tick()
        except Exception as e:  # noqa: BLE001 - whatever it was, the outputs go safe first
            self._control_failed(e)

    def _control_failed(self, e):
        self.make_safe(False)  # state F: the vehicle stops drawing current
        self._report_failure("control", e, None)
        self._restart(e)

    def _tick(self):
        now = self.clock.ticks_ms()
        hw = self.hw
        c = self.charger
        i = c.inp
        hw.pilot.measure()
        i.high_mv = hw.pilot.high_mv
        i.low_mv = hw.pilot.low_mv
        if hw.proximity is not None:
            i.pp_ohms = hw.proximity.ohms()
        rcd = hw.rcd
        i.rcd_tripped = rcd.tripped()
        i.rcd_input = rcd.input_active()
        i.feedback = hw.relay.feedback()
        m = self.meter
        if m is not None:
            m.poll(now)
            mt = self.metering
            mt.update(now)
            i.amps_da = mt.max_amps_da()
            i.meter_failed = mt.failed
            i.meter_ready = mt.seen
        g = self.grid_meter
        if g is not None and self.energy is not None and self.energy.needs_grid():
            g.poll(now)  # (it takes its turn on the bus the charger's meter shares)
            if g.readings != self._grid_readings:
                self._grid_readings = g.readings
                m.refresh()  # the charger's own reading right after it (firmware/energy.py; a grid
                # meter is made only beside a Modbus meter, whose bus it shares)
        if self.lock is not None:
            i.lock = self.lock.poll(now)
        c.update(now)
        self._outputs()
        ps = self.phase_switch
        if ps is not None and ps.closed() != (c.supply_phases == 3) and not c.contactor:
            ps.set(c.supply_phases == 3)  # (the charger changes it only with the contactor open)
        if self.lock is not None:
            self._lock_outputs(now)

    def _outputs(self):
        hw = self.hw
        c = self.charger
        if c.duty != hw.pilot.duty_u16():
            hw.pilot.set_duty_u16(c.duty)
        if c.rcd_clear:
            hw.rcd.clear()
            c.rcd_clear = False
        if c.rcd_test != self._rcd_test_out:
            hw.rcd.test(c.rcd_test)
            self._rcd_test_out = c.rcd_test
        closed = c.contactor and not hw.rcd.tripped()
        if closed != hw.relay.closed():
            hw.relay.set(closed)

    _rcd_test_out = False

    def _lock_outputs(self, now):
        # Like the relay: the charger decides, the driver moves (a move is stepped by poll()).
        c = self.charger
        want = c.lock_wanted
        if want is None:
            return
        if want != self._lock_out or c.lock_retry:
            self.lock.want(want, now)
            self._lock_out = want
            c.lock_retry = False
            c.inp.lock = self.lock.state  # what unlock_result() reads until the next tick

    _lock_out = None

    def _make_energy(self):
        from firmware import energy

        self.energy = energy.Energy(self.clock, self.settings, self.emit, self.profile.get("phases", 3))
        g = self.profile.get("grid_meter")
        if self.grid_meter is None and g is not None and self.meter is not None and hasattr(self.meter, "master"):
            from drivers import meter as meter_driver

            self.grid_meter = meter_driver.build_on(self.meter, g)

    def set_energy_mode(self, mode):
        """Change energy_mode at run time (a person, the local API): saved to the settings
        file, in force from the next service round. None, or why not (nothing changes then)."""
        try:
            self.settings.update({"energy_mode": mode})
        except settings_mod.SettingsError as e:
            return str(e)
        try:
            settings_mod.save(_join(self.root, SETTINGS_FILE), self.settings, self.fs)
        except OSError as e:  # in force until the next boot; the flash condition reports the cause
            self.emit("error", {"where": "settings", "error": "energy_mode not saved: %s" % e, "in_a_row": None})
        if self.energy is None:
            self._make_energy()
        else:
            self.energy.set_mode(mode)
        return None

    def unlock(self):
        """A person asks for the socket to be unlocked (a button, the app, the simulator's
        `unlock`). Refused while a session runs: ending it takes the driver's token or a stop
        command, then the lock opens by itself. "unlocking", "refused" or "no lock"."""
        c = self.charger
        if self.lock is None:
            result = "no lock"
        elif c.session:
            result = "refused"
        else:
            c.unlock()
            result = "unlocking"
        self.emit("lock", {"request": "unlock", "result": result})
        return result

    # ---- the slow task ----

    def service(self):
        try:
            self._service()
        except Exception as e:  # noqa: BLE001 - the round is given up, the next one starts afresh
            self.failures += 1
            self._failing += 1
            self._report_failure("service", e, self._failing)
            if self._failing >= SERVICE_FAILS_MAX:
                self.make_safe(False)
                self._restart(e)
        else:
            self._failing = 0

    def _report_failure(self, where, e, in_a_row):
        try:
            self.emit("error", {"where": where, "error": "%s: %s" % (type(e).__name__, e), "in_a_row": in_a_row})
        except Exception:  # noqa: BLE001 - (a MemoryError again): the restart or the next round tells
            pass

    def _restart(self, e):
        """Restart the board (hard); without a way to, the exception goes on up."""
        if self.reboot is None:
            raise e
        self.reboot(True)

    def make_safe(self, pilot_high=True):
        """Contactor open, pilot steady at +12 V (no offer) or -12 V (state F): when the tasks
        stop (a person pressed Ctrl-C at the REPL, a restart). Allocates nothing, waits for nothing."""
        hw = self.hw
        hw.relay.open_now()
        if self.lock is not None:
            self.lock.idle()  # no current in the actuator (a motor stays put, a solenoid lets go)
        hw.pilot.set_duty_u16(65535 if pilot_high else 0)

    def _service(self):
        now = self.clock.ticks_ms()
        hw = self.hw
        c = self.charger
        if self.clock.ticks_diff(now, self._next_temp) >= 0:
            self._next_temp = self.clock.ticks_add(now, TEMP_MS)
            c.inp.temp_dc = hw.temperature.deci_celsius(now) if hw.temperature is not None else None
        keeper = self.keeper
        if keeper.waiting():
            keeper.flush()  # records the flash refused, oldest first
        if self._faults_dirty:
            self._save_faults()
        if self._recovered is not None:
            self._close_recovered()
        if len(c.events) and self._recovered is None:
            # (new session events wait until the one cut by the power loss is closed)
            self._drain()
        reader = getattr(hw, "reader", None)
        if reader is not None:
            tag = reader.poll(now)  # once per presentation of a card
            if tag is not None:
                self.present(tag)
        mt = self.metering
        if keeper.current is not None:
            wh = self._meter_wh()
            bl = self.billing
            epoch = self._epoch()
            if epoch is not None and self._start_at is not None:
                self._start_known(epoch)
            bl.update(epoch, wh)
            keeper.progress(wh, bl.fields if bl.bill is not None else None, epoch)
            if mt.failed:
                self._incomplete = True
        if mt.due():
            self._save_energy()
        if self.meter is not None and self.clock.ticks_diff(now, self._next_meter_event) >= 0:
            self._next_meter_event = self.clock.ticks_add(now, METER_EVENT_MS)
            self._meter_event()
        if self.energy is not None:
            self.energy.update(now, self.grid_meter, mt if self.meter is not None else None, c)
        if self.ocpp is not None:
            self.ocpp.service(now)
        self._flash_check()
        if hw.led is not None:
            hw.led.show(self.status(), now)
        if hw.watchdog is not None:
            hw.watchdog.feed()

    def _meter_event(self, at=None):
        mt = self.metering
        if self.meter is None or not mt.valid:
            return
        amps = [a / 1000 for a in mt.amps_ma] if mt.measures_current else None
        self.emit("meter", {"energy_wh": mt.register_wh, "power_w": mt.power_w, "amps": amps,
                             "phases": mt.phases(), "bus_errors": sum(self.meter.errors.values()),
                             "rejected": sum(mt.rejected.values())}, at)

    def _meter_wh(self):
        """The lifetime energy register while the meter gives believable readings, else None."""
        mt = self.metering
        if mt.valid:
            return mt.register_wh
        return None

    def _close_recovered(self):
        # A session was open when the power went: close it with the energy the meter's own
        # register shows now, waiting up to RECOVER_WAIT_MS for the meter to answer; without
        # an answer the last energy in the journal is used.
        rec = self._recovered
        wh = self._meter_wh()
        now = self.clock.ticks_ms()
        if wh is None and self.meter is not None:
            if self._recover_since is None:
                self._recover_since = now
            if self.clock.ticks_diff(now, self._recover_since) < RECOVER_WAIT_MS:
                return
        self._recovered = None
        # It stopped when it was last known alive (the journal's progress time, "ta"), not when
        # the power came back: neither the StopTransaction nor the bill counts the outage.
        self._stop_session(chg.POWER_LOSS, wh, None, {"recovered": True, "incomplete": wh is None and self.meter is not None},
                           rec.get("ta"))

    def _drain(self):
        c = self.charger
        q = c.events
        if q.lost:
            self.emit("error", {"where": "control", "error": "%d charger events lost: the queue was full" % q.lost})
            q.lost = 0
        while True:
            e = q.take()
            if e is None:
                break
            kind, a, b, at = e
            if kind == "state":
                self.emit("state", {"state": a}, at)
            elif kind == "phases":
                self.emit("phases", {"phases": a}, at)
            elif kind == "offer":
                self.emit("offer", {"amps": a / 10, "duty": round(b * 100 / 65535, 2), "duty_u16": b}, at)
            elif kind == "contactor":
                self.emit("contactor", {"closed": a}, at)
            elif kind == "fault":
                fields = {"code": a, "active": b}
                if a == safety.METER and b and self.meter is not None:
                    fields["reason"] = self.meter.last_error or "readings not believable"
                self.emit("fault", fields, at)
                if a == safety.WELDED:
                    self._save_faults()
            elif kind == "session":
                self._session_event(a, b, at)
            elif kind == "holdoff":
                if b == chg.HOLD_RATE:
                    why = "%d closings within %d s" % (chg.WEAR_MAX, chg.WEAR_WINDOW_MS // 1000)
                else:
                    why = "%d charges in a row shorter than %d s" % (c.short_charges, chg.STABLE_MS // 1000)
                self.emit("holdoff", {"ms": a, "reason": "contactor wear: " + why}, at)
            elif kind == "lock":
                self.emit("lock", {"state": a, "held": b}, at)
            elif kind == "boot":
                fields = {"settings_error": self.settings_error}
                if self.billing.error:
                    fields["tariff_error"] = self.billing.error
                self.emit("boot", fields, at)

    def _session_event(self, what, arg, at):
        wh = self._meter_wh()
        if what == "start":
            self._incomplete = self.metering.failed
            epoch = self._epoch()
            priced = self.billing.begin(arg, epoch, wh)
            s = self.keeper.start(arg, wh, epoch, priced)
            self._start_at = None if epoch is not None else (at if at is not None else self.clock.ticks_ms())
            fields = {"event": "start", "id_tag": arg, "energy_wh": 0, "n": s["n"], "meter_wh": s["e0"]}
            if priced:
                fields["tariff"] = priced["tf"]
                fields["group"] = priced.get("g")
            self.emit("session", fields, at)
        else:
            self._stop_session(arg, wh, at, {"incomplete": self._incomplete})

    def _start_known(self, epoch):
        """The back end told the time after the open session began in this boot: its start time
        goes into the journal and the bill starts there (nothing was billed on a guessed time)."""
        back = self.clock.ticks_diff(self.clock.ticks_ms(), self._start_at) // 1000
        t0 = epoch - (back if back > 0 else 0)
        self._start_at = None
        self.keeper.retime(t0)
        self.billing.retime(t0)

    def _stop_session(self, reason, wh, at, extra, t=None):
        """Close the open session; `t`: the time it stopped when that is not now (epoch s)."""
        self._start_at = None
        epoch = t if t is not None else self._epoch()
        cost = self.billing.finish(epoch, wh if wh is not None else (self.keeper.current or {}).get("e"))
        done = self.keeper.stop(reason, wh, extra.get("incomplete", False), epoch,
                                {"cost": cost["cost"]} if cost else None)
        self._save_energy()
        if done is None:
            return
        s, energy = done
        self._meter_event(at)  # the register at the end of the session
        fields = {"event": "stop", "reason": reason, "energy_wh": energy, "id_tag": s.get("tag"), "n": s["n"],
                  "meter_wh": s["e"]}
        if t is not None:
            fields["time"] = t  # (epoch s) it stopped then, not now
        if self.meter is None:
            fields["unmetered"] = True
        fields.update(cost)  # cost, currency, decimals, tariff, group of a priced session
        for k in extra:
            if extra[k]:
                fields[k] = extra[k]
        self.emit("session", fields, at)

    def _epoch(self):
        return self.epoch() if self.epoch is not None else None

    # ---- the flash ----

    def _save_energy(self):
        """energy.json is periodic data: written only outside the flash's reserve; one left out
        or failed is counted (flash.refused, in the flash events) and the next comes after
        another save_wh (firmware/metering.py)."""
        fl = self.flash
        try:
            self.metering.save(fl.periodic())
        except OSError:
            fl.refused += 1

    def _flash_check(self):
        """The flash condition, derived every slow round from what waits to be written, the
        newest write's outcome and the free space. A transaction record that waits in RAM or a
        write that failed (FlashError; FlashFull when the flash said ENOSPC), or the free space
        down to the reserve (FlashFull: periodic data is left out), is reported as the fault
        "flash" (OCPP OtherError with that vendorErrorCode) and cleared by itself once the
        records are written and the space is back. New sessions start only while nothing waits
        and flash_mod.START_ROOM bytes are free (charger input journal_ok)."""
        fl = self.flash
        cp = self.ocpp
        waiting = self.keeper.waiting() or self._faults_dirty or (cp is not None and cp.waiting())
        free = fl.free()
        low = free is not None and free <= flash_mod.RESERVE
        err = fl.error
        if err is not None and not waiting and not low and flash_mod.errno_of(err) == flash_mod.ENOSPC:
            fl.error = err = None  # the space is back
        e = err or (fl.last_error if waiting else None)
        vendor = None
        if e is not None:
            vendor = "FlashFull" if flash_mod.errno_of(e) == flash_mod.ENOSPC else "FlashError"
        elif waiting or low:
            vendor = "FlashFull" if low else "FlashError"
        self.charger.inp.journal_ok = not waiting and fl.room_to_start()
        state = 0 if vendor is None else 1 + (2 if waiting else 0) + (4 if e is not None else 0)  # (the reason)
        if vendor == self.flash_fault and state == self._flash_state:
            return
        self.flash_fault = vendor
        self._flash_state = state
        fields = {"code": "flash", "active": vendor is not None, "vendor": vendor,
                  "free": free, "refused": fl.refused}
        if vendor is not None:
            if waiting:
                why = "records wait in RAM and no new session starts"
            elif e is not None:
                why = "a write failed"
            else:
                why = "%d bytes free, within the %d kept for transaction records: periodic data is left out" % (
                    free, flash_mod.RESERVE)
            fields["reason"] = "%s%s" % (why, (" (%s)" % e) if e is not None else "")
        self.emit("fault", fields)

    def present(self, tag):
        """A driver token (card reader, app): with a back end, OCPP's rules decide
        (firmware/ocpp/tokens.py); without one, the settings' local_tokens."""
        if self.ocpp is not None:
            return self.ocpp.tokens.present(tag)
        c = self.charger
        tokens = self.settings.get("local_tokens") or {}
        known = None
        for k in tokens:
            if k.upper() == tag.upper():
                known = k
        group = tokens[known] if known is not None else None
        if self.frees_lock(tag, group, tokens.get(c.lock_owner)):
            return self._token(tag, "unlocking", "the token whose session the lock is held for")
        if c.session:
            from firmware import auth  # the same stop rule as with a back end

            if c.id_tag is not None and auth.same_group(c.id_tag, tokens.get(c.id_tag), tag, group):
                c.stop(chg.LOCAL)
                return self._token(tag, "stopping", "the token or group that started the session")
            return self._token(tag, "refused", "not the token that started the session")
        if known is None:
            return self._token(tag, "refused", "not in local_tokens")
        if c.faults.any() or not c.available:
            return self._token(tag, "refused", "the charger can not start now")
        ok, tariff = self.billing.may_charge(group, self.guess() if self.guess is not None else 0)
        if not ok:
            return self._token(tag, "refused", tariff)
        c.authorize(known)
        self.billing.authorized(known, group, tariff)
        return self._token(tag, "accepted", "local_tokens", group, tariff)

    @property
    def recovered(self):
        """The session a power cut interrupted, as the journal recovered it at boot (None: none),
        until it is closed."""
        return self._recovered

    def frees_lock(self, tag, group, owner_group):
        """A held socket lock (charger.hold_lock) opens for its owner's token or its group."""
        c = self.charger
        if self.lock is None or c.session or not c.lock_hold or c.lock_owner is None:
            return False
        from firmware import auth

        if not auth.same_group(c.lock_owner, owner_group, tag, group):
            return False
        c.unlock()
        return True

    def _token(self, tag, result, reason, group=None, tariff=None):
        self.emit("token", {"id_tag": tag, "result": result, "reason": reason, "group": group, "tariff": tariff})
        return result

    def status(self):
        c = self.charger
        if c.faults.any():
            return "fault"
        if not c.available:
            return "unavailable"
        if c.contactor:
            return "charging"
        if c.plugged:
            return "connected"
        return "idle"

    def snapshot(self):
        """A short summary for a status line or a bench report."""
        c = self.charger
        return {
            "state": c.state,
            "offer_a": c.offer_da / 10,
            "contactor": c.contactor,
            "amps": (c.inp.amps_da / 10) if c.inp.amps_da is not None else None,
            "energy_wh": self.keeper.energy(self._meter_wh()) if self.keeper.current else 0,
            "meter_wh": self.metering.register_wh,
            "faults": c.faults.codes(),
            "temp_c": (c.inp.temp_dc / 10) if c.inp.temp_dc is not None else None,
            "cost": self.billing.cost(),  # (minor units, currency, decimals) while priced
        }

    def add_sink(self, fn):
        """fn(kind, fields, ticks_ms): every event (log, LED, OCPP link, simulator), with the
        firmware tick at which it happened."""
        self.sinks.append(fn)

    def emit(self, kind, fields, at=None):
        """An event for every sink (add_sink): the log, the OCPP link, the simulator."""
        if at is None:
            at = self.clock.ticks_ms()
        for fn in self.sinks:
            fn(kind, fields, at)

    # ---- running on the board ----

    async def _control(self, asyncio):
        while True:
            self.tick()
            await asyncio.sleep_ms(TICK_MS)

    async def _slow(self, asyncio):
        while True:
            self.service()
            await asyncio.sleep_ms(SERVICE_MS)

    def run(self):
        import asyncio

        async def tasks():
            asyncio.create_task(self._control(asyncio))
            if self.ocpp is not None:
                asyncio.create_task(self.ocpp.run())
            await self._slow(asyncio)

        asyncio.run(tasks())


def load_settings(root, fs=None):
    """(Settings, error message or None). A bad file keeps the defaults and reports why."""
    try:
        return settings_mod.load(_join(root, SETTINGS_FILE), fs), None
    except settings_mod.SettingsError as e:
        return settings_mod.Settings(), str(e)


class OutOfService:
    """What runs when the board profile is unusable: the outputs were made safe (contactor
    open, pilot at -12 V = state F) and stay so; the error is reported, nothing else happens."""

    def __init__(self, error, clock):
        self.error = error
        self.clock = clock
        self.sinks = []
        self._reported = False
        self.charger = None

    def tick(self):
        pass

    def make_safe(self, pilot_high=True):
        pass  # they were made safe when the profile failed, and nothing drives them since

    def service(self):
        if not self._reported and self.sinks:
            self._reported = True
            self.emit("boot", {"board_error": self.error})
            self.emit("state", {"state": "F"})
            self.emit("fault", {"code": safety.CONFIG, "active": True, "reason": self.error})

    def status(self):
        return "fault"

    def snapshot(self):
        return {"state": "F", "offer_a": 0, "contactor": False, "amps": None, "energy_wh": 0,
                "meter_wh": None, "faults": [safety.CONFIG], "temp_c": None}

    def add_sink(self, fn):
        self.sinks.append(fn)

    def emit(self, kind, fields):
        for fn in self.sinks:
            fn(kind, fields, self.clock.ticks_ms())

    def run(self):
        import asyncio

        async def idle():
            while True:
                self.service()
                await asyncio.sleep_ms(1000)

        asyncio.run(idle())


def _read_text(path, fs):
    f = (fs or store.REAL).open(path, "r")
    try:
        return f.read()
    finally:
        f.close()


def attach_ocpp(station, fs=None, reboot=None, link=None, rxbuf=None, txbuf=None, txenc=None):
    """Give the station its back-end link when the settings name one (ocpp_url). A link that
    cannot be set up (an unreadable CA file) is reported as an event; charging goes on.
    `rxbuf`, `txbuf`, `txenc`: the link's receive and send buffers, and the encoder of the
    messages it sends and stores (link and outbox share it), allocated by start() before anything
    else."""
    st = station.settings
    url = st.get("ocpp_url")
    if not url:
        return None
    from firmware.ocpp import chargepoint as cp_mod

    ca = None
    if st.get("ocpp_ca_file"):
        try:
            ca = _read_text(_join(station.root, st.get("ocpp_ca_file")), fs)
        except OSError as e:
            station.emit("boot", {"ocpp_error": "ocpp_ca_file %s: %s" % (st.get("ocpp_ca_file"), e)})
            return None
    from firmware import appslot

    app = _join(station.root, "app")
    opts = cp_mod.Options(url, st.get("charge_box_id"), st.get("authorization_key") or None, ca,
                          model=station.profile.get("name", "ESP32"), free_id_tag=st.get("free_id_tag"),
                          reboot=reboot, version=appslot.current_version(app) or cp_mod.VERSION)
    if fs is None or fs is station.flash.fs:
        fs = station.flash  # the station's flash, through the adapter that knows its condition
    cp = cp_mod.ChargePoint(station, opts, fs, link, rxbuf, txbuf, txenc)
    station.ocpp = cp
    station.epoch = cp.wall.known
    station.guess = cp.wall.now
    _firmware_management(station, cp, app, ca, reboot)
    return cp


def _firmware_management(station, cp, app, ca, reboot):
    """UpdateFirmware and GetDiagnostics (docs/firmware-update.md). Without a public key in the
    settings no bundle can be trusted, so UpdateFirmware is refused (NotSupported), and
    firmware/ocpp/update.py is imported only at the first GetDiagnostics."""
    key = station.settings.get("firmware_public_key")
    if key and reboot is not None:
        # The updater is made at boot: it resumes what update.json says (a download, an
        # install, the confirmation of a trial boot).
        from firmware.ocpp import update

        clock = station.clock
        try:
            cp.opts.updater = update.Updater(
                app, fs, clock, key, lambda s: cp.queue("FirmwareStatusNotification", {"status": s}),
                reboot=lambda: reboot(True), can_install=lambda: not station.charger.session,
                epoch=lambda: cp.wall.now() if cp.wall.synced else None, ca=ca, sleep_ms=clock.sleep_ms)
            cp.opts.updater.tls_gate = cp.may_stall
        except ValueError as e:
            station.emit("boot", {"ocpp_error": "firmware_public_key: %s" % e})

    def diagnostics():
        from firmware.ocpp import update

        clock = station.clock
        d = update.Diagnostics(
            station.root, update.REAL, clock, lambda s: cp.queue("DiagnosticsStatusNotification", {"status": s}),
            station.keeper.files(station.root) + (FAULTS_FILE, "ocpp.json"), ca=ca, epoch=cp.wall.now,
            sleep_ms=clock.sleep_ms)
        d.tls_gate = cp.may_stall
        return d

    cp.opts.make_diagnostics = diagnostics


def start(root="/", clock=None, profile=None, fs=None, reboot=None):
    """Build the station from the board profile and the settings on flash.

    A profile that cannot be used gives an OutOfService station with the outputs safe, never
    an exception: a charger must not crash-loop with its contactor in an unknown state.
    """
    from drivers import board
    from firmware.clock import SystemClock

    clock = clock or SystemClock()
    st, err = load_settings(root, fs)
    # The OCPP link's receive buffer comes first: after the board and the station are built the
    # heap's free space is in pieces of a few KB (measured in the simulator: 8 KB free at this
    # point, at most 3 KB in one piece after attach_ocpp).
    rxbuf = bytearray(OCPP_RX_BYTES) if st.get("ocpp_url") else None
    txbuf = bytearray(OCPP_TX_BYTES) if st.get("ocpp_url") else None
    txenc = None
    if st.get("ocpp_url"):  # and the encoder of the messages it sends and stores (firmware/encoder.py)
        from firmware.encoder import Encoder

        txenc = Encoder()
    try:
        if profile is None:
            profile = board.load_installed(root)
        hw = board.build(profile, clock)
    except (board.BoardError, ValueError, OSError) as e:
        board.fail_safe(root)
        return OutOfService(str(e), clock)
    station = Station(hw, profile, clock, root, st, err, fs)
    station.reboot = reboot
    attach_ocpp(station, fs, reboot, rxbuf=rxbuf, txbuf=txbuf, txenc=txenc)
    return station


def log_sink(kind, fields, at):
    print(at, kind, fields)


def join_wifi(station, wifi):
    """Join the settings' Wi-Fi network (wifi_ssid) without waiting: `wifi(ssid, password)` is
    drivers.wifi.start. The back-end link retries until the network is up."""
    settings = getattr(station, "settings", None)
    ssid = settings.get("wifi_ssid") if settings is not None else ""
    if not ssid:
        return None
    try:
        return wifi(ssid, settings.get("wifi_password"))
    except OSError as e:
        print("wifi: cannot join %s: %s" % (ssid, e))
        return None


def main(root="/", reboot=None, wifi=None):
    """Entry point on the board (main.py). `reboot(hard)` restarts the board (OCPP Reset, a
    firmware update); `wifi` joins the network (drivers.wifi.start). firmware/ never imports
    machine or network, so main.py hands them in."""
    station = start(root, reboot=reboot)
    station.add_sink(log_sink)
    if wifi is not None:
        station.wifi = join_wifi(station, wifi)
    try:
        station.run()
    finally:  # Ctrl-C at the REPL, or something escaped the tasks: nothing controls the outputs now
        station.make_safe()
