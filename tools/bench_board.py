"""The bench test's board side: drives and reads every part of a deployed charger.

tools/bench.py sends this file to the board with `mpremote run` after stopping the station (the
board is in its raw REPL, boot.py ran, main.py did not). It builds the drivers from the
installed /board.json and /settings.json, runs each step and prints one line per step:

    BENCH {"step": NAME, "ok": true | false | null (skipped), "code": WHY, "v": {values}}

tools/bench.py turns the codes into advice. `BENCH_ARGS` (a dict set by tools/bench.py before
this file runs) may hold "card_s" (how long to wait for a card) and "skip" (step names).
Safety: the contactor is closed only with no vehicle on the pilot (state A), for at most
CLOSE_MS, and every exit path leaves it open and the pilot at a steady +12 V.
"""
import json
import time

ARGS = globals().get("BENCH_ARGS") or {}
CLOSE_MS = 500        # longest the contactor may take to report a movement
RCD_MS = 500          # the RCD self-test's trip limit
A_MIN_MV, A_MAX_MV = 11400, 12600   # state A: +12 V +- 0.6 V
LOW_MIN_MV, LOW_MAX_MV = -12600, -11400
TEST_DA = 160         # the offer used to check the PWM: 16 A = 26.7 %
DUTY_TOL = 1.0        # percent points
DUTY_SAMPLES = 2000
WIFI_S = 15
METER_S = 5


def report(step, ok, code="", **values):
    print("BENCH " + json.dumps({"step": step, "ok": ok, "code": code, "v": values}))


def wait_for(fn, ms):
    """Poll fn() until it is true or `ms` pass; the milliseconds it took, or None."""
    t0 = time.ticks_ms()
    while True:
        if fn():
            return time.ticks_diff(time.ticks_ms(), t0)
        if time.ticks_diff(time.ticks_ms(), t0) > ms:
            return None
        time.sleep_ms(1)


class Bench:
    def __init__(self):
        from drivers import board
        from firmware import settings
        from firmware.clock import SystemClock

        self.clock = SystemClock()
        try:
            self.profile = board.load_installed("/")
        except board.BoardError as e:
            report("profile", False, "profile", error=str(e))
            raise SystemExit
        try:
            self.settings = settings.load("/settings.json")
        except settings.SettingsError as e:
            report("profile", False, "settings", error=str(e))
            raise SystemExit
        self.hw = board.build(self.profile, self.clock)
        report("profile", True, name=self.profile.get("name"))

    def safe(self):
        self.hw.relay.open_now()
        self.hw.pilot.set_duty_u16(65535)

    def pilot_mv(self):
        return self.hw.pilot.sample()

    # ---- steps

    def pilot_a(self):
        """The pilot at rest; False when a vehicle (or a tester) seems to be on the line."""
        self.hw.pilot.set_duty_u16(65535)
        time.sleep_ms(5)
        high, low = self.pilot_mv()
        if A_MIN_MV <= high <= A_MAX_MV:
            report("pilot-a", True, high_mv=high)
            return True
        code = "short" if -1500 < high < 1500 else ("vehicle" if 2000 < high < A_MIN_MV else "range")
        report("pilot-a", False, code, high_mv=high)
        return code != "vehicle"

    def pilot_pwm(self):
        from firmware import pilot

        duty = pilot.duty_for(TEST_DA)
        p = self.hw.pilot
        p.set_duty_u16(duty)
        time.sleep_ms(5)
        high, low = self.pilot_mv()
        n_high = 0
        for _ in range(DUTY_SAMPLES):  # the share of readings on the high plateau is the duty
            if p.line_mv() > 0:
                n_high += 1
        p.set_duty_u16(65535)
        want = duty * 100.0 / 65535
        got = n_high * 100.0 / DUTY_SAMPLES
        v = {"duty_pct": round(got, 1), "expected_pct": round(want, 1), "high_mv": high, "low_mv": low}
        if -1500 < high < 1500 and -1500 < low < 1500:
            report("pilot-pwm", False, "short", **v)
        elif not (A_MIN_MV <= high <= A_MAX_MV):
            report("pilot-pwm", False, "high", **v)
        elif not (LOW_MIN_MV <= low <= LOW_MAX_MV):
            report("pilot-pwm", False, "low", **v)
        elif abs(got - want) > DUTY_TOL:
            report("pilot-pwm", False, "duty", **v)
        else:
            report("pilot-pwm", True, **v)

    def relay(self, no_vehicle):
        r = self.hw.relay
        r.open_now()
        if not no_vehicle:
            report("relay", None, "pilot", why="the pilot reads a vehicle (state B/C/D): not closing the contactor")
            return
        if self.hw.rcd.tripped() and not self.hw.rcd.clear():
            report("relay", False, "rcd-active", why="the RCD input is active, so the contactor may not close")
            return
        if r.feedback() is None:
            r.set(True)
            time.sleep_ms(200)
            r.open_now()
            report("relay", None, "no-feedback", why="no feedback input in the profile: listen for the click")
            return
        if r.feedback():
            report("relay", False, "closed-at-rest")
            return
        try:
            r.set(True)
            closed = wait_for(r.feedback, CLOSE_MS)
        finally:
            r.open_now()
        if closed is None:
            report("relay", False, "no-close", limit_ms=CLOSE_MS)
            return
        opened = wait_for(lambda: not r.feedback(), CLOSE_MS)
        if opened is None:
            report("relay", False, "no-open", close_ms=closed, limit_ms=CLOSE_MS)
            return
        report("relay", True, close_ms=closed, open_ms=opened)

    def rcd(self):
        d = self.hw.rcd
        if d.input_active():
            report("rcd", False, "active-at-rest")
            return
        d.test(True)
        try:
            took = wait_for(d.input_active, RCD_MS)
        finally:
            d.test(False)
        if took is None:
            report("rcd", False, "no-trip", limit_ms=RCD_MS)
            return
        released = wait_for(lambda: not d.input_active(), 1000)
        d.clear()
        if released is None:
            report("rcd", False, "stuck", trip_ms=took)
            return
        report("rcd", True, trip_ms=took, release_ms=released)

    def proximity(self):
        from firmware import pilot

        px = self.hw.proximity
        if px is None:
            report("proximity", None, "absent")
            return
        ohms = px.ohms()
        mv = px.millivolts()
        amps = pilot.cable_amps(ohms, self.profile.get("phases", 3))
        if ohms is None:
            report("proximity", True, mv=mv, cable="none (open)")
        elif amps is None:
            report("proximity", False, "between", mv=mv, ohms=ohms)
        else:
            report("proximity", True, mv=mv, ohms=ohms, cable_a=amps)

    def temperature(self):
        t = self.hw.temperature.deci_celsius(time.ticks_ms())
        if t is None:
            report("temperature", False, "sensor", mv=self.hw.temperature.millivolts())
        elif not -200 <= t <= 600:
            report("temperature", False, "range", celsius=t / 10)
        else:
            report("temperature", True, celsius=t / 10)

    def meter(self):
        m = self.hw.meter
        if m is None:
            report("meter", None, "absent")
            return
        t0 = time.ticks_ms()
        while m.readings == 0 and time.ticks_diff(time.ticks_ms(), t0) < METER_S * 1000:
            m.poll(time.ticks_ms())
            if m.failures >= 2:
                break
            time.sleep_ms(2)
        if m.readings == 0:
            report("meter", False, "no-reading", error=m.last_error, model=m.model)
            return
        report("meter", True, model=m.model, volts=[v / 10 for v in m.volts_dv[:m.phases]],
               energy_wh=m.energy_wh)

    def card(self):
        rd = self.hw.reader
        if rd is None:
            if self.hw.reader_error:
                report("card", False, "chip", error=self.hw.reader_error)
            else:
                report("card", None, "absent")
            return
        wait_s = ARGS.get("card_s", 10)
        report("prompt", None, "", text="hold a card on the reader (%d s)" % wait_s)
        t0 = time.ticks_ms()
        while time.ticks_diff(time.ticks_ms(), t0) < wait_s * 1000:
            tag = rd.poll(time.ticks_ms())
            if tag:
                report("card", True, id_tag=tag, reader=rd.type)
                return
            time.sleep_ms(50)
        report("card", False, "no-card", error=rd.last_error, wait_s=wait_s)

    def wifi(self):
        ssid = self.settings.get("wifi_ssid")
        if not ssid:
            report("wifi", None, "unset")
            return False
        from drivers import wifi

        w = wifi.start(ssid, self.settings.get("wifi_password"))
        took = wait_for(w.connected, WIFI_S * 1000)
        st = w.state()
        if took is None:
            report("wifi", False, st["status"], ssid=ssid)
            return False
        report("wifi", True, ssid=ssid, ip=st["ip"], rssi=st["rssi"], ms=took)
        return True

    def backend(self, online):
        url = self.settings.get("ocpp_url")
        if not url:
            report("backend", None, "unset")
            return
        if not online and self.settings.get("wifi_ssid"):
            report("backend", None, "offline", url=url)
            return
        import asyncio

        from firmware.ocpp import ws

        ca = None
        if self.settings.get("ocpp_ca_file"):
            try:
                with open("/" + self.settings.get("ocpp_ca_file").lstrip("/")) as f:
                    ca = f.read()
            except OSError as e:
                report("backend", False, "ca-file", url=url, error=str(e))
                return
        cbid = self.settings.get("charge_box_id")
        key = self.settings.get("authorization_key") or None

        async def attempt():
            t0 = time.ticks_ms()
            sock = await ws.connect(url, cbid, self.clock, key, ca, timeout_ms=10000)
            took = time.ticks_diff(time.ticks_ms(), t0)
            await sock.close()
            return took

        try:
            took = asyncio.run(attempt())
        except ws.HandshakeError as e:
            report("backend", False, "http", url=url, status=e.status, error=str(e))
        except ws.TLSError as e:
            report("backend", False, "tls", url=url, error=str(e))
        except (ws.WSError, OSError, ValueError) as e:
            report("backend", False, "connect", url=url, error="%s: %s" % (type(e).__name__, e))
        else:
            report("backend", True, url=url, charge_box_id=cbid, ms=took)


def main():
    skip = ARGS.get("skip") or ()
    b = Bench()
    try:
        ok = b.pilot_a()
        if "pilot" not in skip:
            b.pilot_pwm()
        if "relay" not in skip:
            b.relay(ok)
        for name in ("rcd", "proximity", "temperature", "meter", "card"):
            if name not in skip:
                getattr(b, name)()
        online = False
        if "wifi" not in skip:
            online = b.wifi()
        if "backend" not in skip:
            b.backend(online)
    finally:
        b.safe()
    report("done", True)


main()
