"""Boot and heartbeat (OCPP 1.6 sections 4.2, 4.6): BootNotification until one is accepted
since boot, Heartbeat every HeartbeatInterval of silence, and the wall clock both of them set."""
from firmware.ocpp import dt
from firmware.ocpp.rpc import CLOSED, RpcError

VENDOR = "MicroPython-EVSE"
BOOT_RETRY_S = 60  # BootNotification retry when the back end gave no interval


class Boot:
    def __init__(self, cp):
        self.cp = cp
        self.accepted = False  # BootNotification accepted on this connection
        self.status = None  # last BootNotification answer: Accepted, Pending, Rejected
        self.synced_at = 0  # epoch at the first time sync of this boot
        self._due = None  # tick of the next BootNotification attempt
        self._hb_s = cp.config.get("HeartbeatInterval")
        cp.config.listen(self._config_changed)

    def _config_changed(self, key, value):
        if key == "HeartbeatInterval":
            self._hb_s = value

    def due(self, now):
        """Whether a BootNotification may go now (not before the retry the back end asked for)."""
        return self._due is None or self.cp.clock.ticks_diff(now, self._due) >= 0

    async def send(self, now):
        """Heartbeat after HeartbeatInterval without any message sent."""
        cp = self.cp
        hb = self._hb_s
        if hb > 0 and (cp.last_sent is None or cp.clock.ticks_diff(now, cp.last_sent) >= hb * 1000):
            await self.heartbeat()
            return True
        return False

    async def boot(self):
        cp = self.cp
        o = cp.opts
        clock = cp.clock
        p = {"chargePointVendor": VENDOR, "chargePointModel": o.model[:20], "firmwareVersion": o.version[:50]}
        if o.serial:
            p["chargePointSerialNumber"] = o.serial[:25]
        meter = cp.st.meter
        if meter is not None and getattr(meter, "model", None):
            p["meterType"] = str(meter.model)[:25]
        try:
            res = await cp.call("BootNotification", p)
        except RpcError as e:
            if e.code != CLOSED:
                self._due = clock.ticks_add(clock.ticks_ms(), BOOT_RETRY_S * 1000)
            raise
        self.status = res["status"]
        self.set_time(res["currentTime"])
        cp.st.emit("ocpp", {"boot": res["status"], "interval": res["interval"]})
        iv = res["interval"]
        if res["status"] == "Accepted":
            if iv > 0:
                try:
                    cp.config.set("HeartbeatInterval", iv)
                    self._hb_s = iv
                except (ValueError, OSError) as e:  # beyond what the tick arithmetic can time
                    cp.note("heartbeat interval %r not taken: %s" % (iv, e))
            self.accepted = True
            cp.status.report_all()  # every connector's status again (section 4.2.1)
        else:
            self._due = clock.ticks_add(clock.ticks_ms(), (iv if iv > 0 else BOOT_RETRY_S) * 1000)

    async def heartbeat(self):
        res = await self.cp.call("Heartbeat", {})
        self.set_time(res["currentTime"])

    def set_time(self, text):
        cp = self.cp
        try:
            was = cp.wall.synced
            cp.wall.set(dt.parse(text))
        except ValueError:
            cp.note("back end sent a bad currentTime %r" % (text,))
            return
        if not was:
            self.synced_at = cp.wall.now()
            cp.tx.time_known()
