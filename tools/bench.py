#!/usr/bin/env python3
"""Bench-test a charger board over mpremote: every part driven and read, a pass/fail report.

    python3 tools/bench.py --port PORT [--card-wait S] [--skip STEP]... [--json FILE]

For a person with a deployed board on the bench (tools/deploy.py first), no vehicle plugged
in. The station is stopped (mpremote's Ctrl-C and soft reset), tools/bench_board.py runs on the
board, and the board is reset at the end so the station starts again. Steps, in order:

  profile      /board.json and /settings.json load and the drivers build
  pilot-a      the pilot rests at +12 V (state A, no vehicle)
  pilot-pwm    a 16 A offer: 1 kHz PWM at 26.7 % duty, plateaus +12 V and -12 V
  relay        the contactor closes and opens, and its auxiliary contact reports both
  rcd          the residual-current detector trips on its test input within 500 ms
  proximity    the PP input reads no cable or a valid cable rating
  temperature  the temperature sensor reads a plausible value
  meter        the energy meter answers with voltages and an energy register
  card         a card held on the reader is read (--card-wait seconds to present it)
  wifi         the board joins wifi_ssid with wifi_password
  backend      the OCPP WebSocket handshake with ocpp_url succeeds (TLS and password included)

A step the profile or the settings leave out is SKIPPED, and says why. Each FAIL names what
was measured and what to check. Exit status: 0 every step passed or was skipped, 1 a step
failed, 2 bad arguments or no board.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
BOARD_SCRIPT = os.path.join(ROOT, "tools", "bench_board.py")
STEPS = ("profile", "pilot-a", "pilot-pwm", "relay", "rcd", "proximity", "temperature", "meter",
         "card", "wifi", "backend")
SKIPPABLE = ("pilot", "relay", "rcd", "proximity", "temperature", "meter", "card", "wifi", "backend")
TIMEOUT_S = 120

# (step, code) -> what to check. The board says what it measured; this says where to look.
HINTS = {
    ("profile", "profile"): "the board has no usable /board.json: deploy it (tools/deploy.py --board NAME)",
    ("profile", "settings"): "the board's /settings.json is invalid: fix it and deploy again",
    ("profile", "missing"): "the firmware is not on the board: run tools/deploy.py first",
    ("pilot-a", "short"): "the pilot reads about 0 V: CP shorted to PE, the +-12 V supply missing, "
                          "or the pilot driver dead; measure CP against PE with a multimeter (expect +12 V)",
    ("pilot-a", "vehicle"): "the pilot is loaded (a vehicle or tester in state B/C?): unplug it, or look for "
                            "a low resistance between CP and PE",
    ("pilot-a", "range"): "the pilot is outside +11.4..+12.6 V: check the +12 V rail, the output stage and "
                          "the divider to the ADC pin (pilot.cal in the board profile)",
    ("pilot-pwm", "short"): "the pilot reads 0 V with the PWM running too: see pilot-a",
    ("pilot-pwm", "high"): "the high plateau under PWM is off: the driver's output stage or its supply sags",
    ("pilot-pwm", "low"): "the low plateau is not -12 V: check the -12 V rail and the op-amp's negative swing",
    ("pilot-pwm", "duty"): "the measured duty differs from the offer: check pilot.pwm_pin, the driver's slew "
                           "rate, and that nothing else drives the line",
    ("relay", "no-close"): "the contactor did not report closing: check the coil supply and driver "
                           "(relay.pin -> driver -> coil), then the auxiliary contact wiring to "
                           "relay.feedback_pin and relay.feedback_active_high",
    ("relay", "no-open"): "the contactor did not report opening: welded contacts, or the feedback input "
                          "stuck active; do not use this contactor until it is checked",
    ("relay", "closed-at-rest"): "the feedback says closed while the coil is off: welded contacts or an "
                                 "inverted feedback_active_high in the board profile",
    ("relay", "rcd-active"): "the RCD input is active at rest: see the rcd step",
    ("rcd", "no-trip"): "the RCD did not trip on its test input: check rcd.test_pin -> the module's test "
                        "input, rcd.pin <- its trip output, rcd.active_high, and the module's supply",
    ("rcd", "active-at-rest"): "the RCD output is active with no test: a real fault current, a module "
                               "without supply, or an inverted rcd.active_high",
    ("rcd", "stuck"): "the RCD stayed tripped after the test ended: the module latches, or needs a reset input",
    ("proximity", "between"): "the PP resistance is between the standard values (1500/680/220/100 ohm): "
                              "check the pull-up (proximity.pullup_ohms) and the cable's resistor",
    ("temperature", "sensor"): "no temperature reading: the NTC is open or shorted; check it and the "
                               "series resistor on temperature.adc_pin",
    ("temperature", "range"): "the temperature is implausible for a bench: check the NTC's type (r25, beta) "
                              "and the series resistor against the board profile",
    ("meter", "no-reading"): "the meter did not answer: check its Modbus address and baud rate (meter.address, "
                             "meter.baudrate), the A/B wiring (swap A and B if unsure), termination, and the "
                             "transceiver's DE pin",
    ("card", "chip"): "the reader chip does not answer: check its supply (3.3 V), the bus pins in the "
                      "profile's reader section and the chip type",
    ("card", "no-card"): "no card was read: hold an ISO 14443A card flat on the antenna, or give more time "
                         "with --card-wait",
    ("wifi", "wrong_password"): "the access point refused the password: check wifi_password in your secrets file",
    ("wifi", "no_ap_found"): "the network was not found: check wifi_ssid (2.4 GHz only) and the distance",
    ("wifi", "idle"): "Wi-Fi did not start: check wifi_ssid",
    ("backend", "http"): "the back end refused the connection: 401 means a wrong authorization_key or "
                         "charge_box_id, 404 a wrong path in ocpp_url",
    ("backend", "tls"): "TLS failed: ocpp_ca_file must hold the CA that signed the back end's certificate, "
                        "and the board's clock must be right",
    ("backend", "connect"): "no connection to the back end: check the host and port in ocpp_url, and that "
                            "the network lets the board reach it",
    ("backend", "ca-file"): "the CA file named by ocpp_ca_file is not on the board: deploy it",
}
SKIP_WHY = {
    "unset": "not set up in the settings",
    "absent": "not in the board profile",
    "pilot": "the pilot reads a vehicle (state B/C/D), so the contactor was not closed: unplug it",
    "no-feedback": "no feedback input in the board profile; listen for the click",
    "offline": "no Wi-Fi connection",
    "skipped": "skipped on request (--skip)",
}


def parse_results(lines):
    results = []
    for line in lines:
        line = line.strip()
        if line.startswith("BENCH "):
            try:
                results.append(json.loads(line[6:]))
            except ValueError:
                pass
    return results


def describe(r):
    v = dict(r.get("v") or {})
    step = r["step"]
    if step == "pilot-a" and "high_mv" in v:
        return "%+.2f V at rest" % (v["high_mv"] / 1000)
    if step == "pilot-pwm" and "duty_pct" in v:
        return "duty %.1f %% (want %.1f %%), plateaus %+.2f V / %+.2f V" % (
            v["duty_pct"], v["expected_pct"], v["high_mv"] / 1000, v["low_mv"] / 1000)
    if step == "relay" and "close_ms" in v:
        return "closed in %d ms, opened in %s ms (feedback)" % (v["close_ms"], v.get("open_ms", "-"))
    if step == "rcd" and "trip_ms" in v:
        return "tripped in %d ms" % v["trip_ms"]
    if step == "temperature" and "celsius" in v:
        return "%.1f C" % v["celsius"]
    if step == "meter" and "volts" in v:
        return "%s, %s V, %d Wh" % (v["model"], "/".join("%.1f" % x for x in v["volts"]), v["energy_wh"])
    if step == "card" and "id_tag" in v:
        return "idTag %s (%s)" % (v["id_tag"], v["reader"])
    if step == "card" and "wait_s" in v:
        return "no card in %d s%s" % (v["wait_s"], " (last error: %s)" % v["error"] if v.get("error") else "")
    if step == "relay" and "limit_ms" in v:
        return "the feedback did not %s within %d ms" % ("close" if r.get("code") == "no-close" else "open",
                                                         v["limit_ms"])
    if step == "wifi" and v.get("ip"):
        return "joined %s as %s, RSSI %s dBm" % (v["ssid"], v["ip"], v["rssi"])
    if step == "backend" and r.get("ok"):
        return "WebSocket to %s as %s in %d ms" % (v["url"], v["charge_box_id"], v["ms"])
    return ", ".join("%s=%s" % (k, v[k]) for k in sorted(v))


def report(results, out=print):
    """The human report; returns (passed, failed, skipped)."""
    seen = {}
    counts = [0, 0, 0]
    for r in results:
        if r["step"] in ("prompt", "done"):
            continue
        seen[r["step"]] = r
    for step in STEPS:
        r = seen.get(step)
        if r is None:
            continue
        if r["ok"] is True:
            counts[0] += 1
            out("  PASS  %-12s %s" % (step, describe(r)))
        elif r["ok"] is False:
            counts[1] += 1
            out("  FAIL  %-12s %s" % (step, describe(r)))
            hint = HINTS.get((step, r.get("code")))
            out("        check: %s" % (hint or "code %s" % r.get("code")))
        else:
            counts[2] += 1
            why = SKIP_WHY.get(r.get("code"), r.get("code"))
            out("  SKIP  %-12s %s" % (step, why))
    return tuple(counts)


def run_board(port, args, on_line=None, timeout=TIMEOUT_S):
    """Run the board side; the BENCH lines' records and mpremote's whole output."""
    preamble = "BENCH_ARGS = %r" % (args,)
    cmd = [_venv.bin_path("mpremote"), "connect", port, "exec", preamble, "+", "run", BOARD_SCRIPT]
    lines = []
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as e:
        raise BenchError("cannot run mpremote (%s): pip install -r requirements.txt" % e)
    try:
        for line in p.stdout:
            lines.append(line)
            if on_line is not None and line.startswith("BENCH "):
                on_line(line)
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise BenchError("the board on %s did not finish the bench within %d s" % (port, timeout))
    text = "".join(lines)
    if rc != 0 and not parse_results(lines):
        raise BenchError(_explain(port, text))
    return parse_results(lines), text


def _explain(port, text):
    if "ImportError" in text and ("drivers" in text or "firmware" in text):
        last = text.strip().splitlines()[-1]
        return "the firmware is not on the board: run tools/deploy.py first (%s)" % last
    import deploy

    return deploy.explain_mpremote(port, text)


class BenchError(Exception):
    pass


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", required=True, help="the board's serial port, as mpremote connect takes it")
    p.add_argument("--card-wait", type=int, default=10, metavar="S",
                   help="seconds to wait for a card on the reader (default 10)")
    p.add_argument("--skip", action="append", default=[], choices=SKIPPABLE,
                   help="leave a step out (pilot covers pilot-pwm); may be repeated")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--no-reset", action="store_true", help="leave the board stopped at the end")
    a = p.parse_args(argv)
    if not 1 <= a.card_wait <= 120:
        p.error("--card-wait %d: expected 1 to 120 seconds" % a.card_wait)
    print("bench test on %s (no vehicle plugged in, please)" % a.port, flush=True)

    def live(line):
        try:
            r = json.loads(line[6:])
        except ValueError:
            return
        if r["step"] == "prompt":
            print("  ....  %s" % r["v"].get("text"), flush=True)

    try:
        results, text = run_board(a.port, {"card_s": a.card_wait, "skip": a.skip}, live)
    except BenchError as e:
        print("bench: %s" % e, file=sys.stderr)
        return 2
    if not any(r["step"] == "profile" for r in results):
        print("bench: %s" % _explain(a.port, text), file=sys.stderr)
        return 2
    for s in a.skip:
        for step in (("pilot-pwm",) if s == "pilot" else (s,)):
            results.append({"step": step, "ok": None, "code": "skipped", "v": {}})
    passed, failed, skipped = report(results)
    done = any(r["step"] == "done" for r in results)
    if not done:
        failed += 1
        tail = text.strip().splitlines()[-3:]
        print("  FAIL  the bench stopped early on the board:\n        %s" % "\n        ".join(tail))
    print("summary: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"results": results, "passed": passed, "failed": failed, "skipped": skipped}, f, indent=1)
    if not a.no_reset:
        subprocess.run([_venv.bin_path("mpremote"), "connect", a.port, "reset"], capture_output=True, timeout=30)
    return 1 if failed else 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
