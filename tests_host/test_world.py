"""The simulated world: pilot levels, car behaviour, contactor, RCD, PP, NTC, energy, meter.

The firmware side is played by the fake `machine` objects (and, where it says so, the real
drivers) on virtual time: `Bench.run_to(ms)` advances the world in 10 ms steps like the
simulator's control loop.
"""
import math
import os
import subprocess

import machine
import pytest

from drivers import board
from world.car import R_B, R_BC, R_BD, decode_duty
from world.cable import OHMS
from world.thermal import mv_to_celsius, ntc_mv
from world.world import VERBS, World

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")

PWM_PIN, PILOT_ADC, RELAY, FEEDBACK, RCD, RCD_TEST, PP_ADC, NTC_ADC = 25, 36, 26, 27, 33, 32, 39, 34


def adc_of(volts):
    """ADC millivolts for pilot-line volts with the DevKit calibration (280 .. 2980 mV)."""
    return int(280 + (volts + 12.0) * 2700 / 24.0 + 0.5)


def plateau(r):
    return 0.7 + 11.3 * r / (r + 1000)


def duty_for(amps):
    pct = amps / 0.6 if amps <= 51 else amps / 2.5 + 64
    return int(pct * 65535 / 100 + 0.5)


def profile(name="esp32-devkit", meter=False):
    p = board.load(name)
    if not meter:
        p.pop("meter", None)
    return p


class Bench:
    """A world plus the EVSE's outputs driven through the fake machine module."""

    def __init__(self, prof=None):
        self.w = World(prof if prof is not None else profile())
        self.now = 0
        self.w.advance(0)
        self.pwm = machine.PWM(machine.Pin(PWM_PIN), freq=1000, duty_u16=65535)
        self.relay_pin = machine.Pin(RELAY, machine.Pin.OUT, value=0)
        self.test_pin = machine.Pin(RCD_TEST, machine.Pin.OUT, value=0)
        self.adc = machine.ADC(machine.Pin(PILOT_ADC), atten=machine.ADC.ATTN_11DB)

    def run_to(self, ms, step=10):
        while self.now < ms:
            self.now = min(self.now + step, ms)
            self.w.advance(self.now)

    def run(self, ms, step=10):
        self.run_to(self.now + ms, step)

    def offer(self, amps):
        self.pwm.duty_u16(duty_for(amps) if amps else 65535)

    def contactor(self, closed):
        self.relay_pin.value(1 if closed else 0)

    def pilot_levels(self, n=87):
        """Set of ADC millivolts seen over two PWM periods."""
        seen = set()
        for _ in range(n):
            seen.add((self.adc.read_uv() + 500) // 1000)
        return seen

    def charging(self, amps=16, offer=32, phases=None):
        """Plug, ready, offer, close: the car draws from self.now on (contacts closed)."""
        self.w.apply("plug", [32])
        self.w.apply("ev-ready", [amps] if phases is None else [amps, phases])
        self.offer(offer)
        self.run(500)
        assert self.w.car.state() == "C"
        self.contactor(True)
        self.run(30)
        assert self.w.relay.closed


@pytest.fixture(autouse=True)
def fresh_bench():
    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


# -- duty decode


@pytest.mark.parametrize("duty,da", [
    (duty_for(6), 60), (6553, 60), (duty_for(10), 100), (duty_for(16), 160),
    (duty_for(32), 320), (duty_for(51), 510), (duty_for(60), 600), (duty_for(80), 800),
    (3277, 0), (int(0.09 * 65535), 0), (int(0.97 * 65535), 0), (0, 0), (65535, 0), (1, 0),
    (65534, 0),
])
def test_decode_duty(duty, da):
    assert decode_duty(duty) == da


# -- pilot levels at the ADC


def test_pilot_levels_for_each_state():
    b = Bench()
    w = b.w
    assert b.pilot_levels() == {2980}                         # A1: 12 V
    b.offer(16)
    b.run(10)
    assert b.pilot_levels() == {2980, adc_of(-12)}            # A2: +12 / -12
    w.apply("plug")
    assert b.pilot_levels() == {adc_of(plateau(R_B)), 280}    # B2
    assert abs(plateau(R_B) - 9.0) < 0.05
    w.apply("ev-ready", [16])
    b.run(500)
    assert w.car.state() == "C"
    assert b.pilot_levels() == {adc_of(plateau(R_BC)), 280}   # C2
    assert abs(plateau(R_BC) - 6.0) < 0.05
    w.apply("ev-vent")
    assert w.car.state() == "D"
    assert b.pilot_levels() == {adc_of(plateau(R_BD)), 280}   # D2
    assert abs(plateau(R_BD) - 2.93) < 0.05
    b.pwm.duty_u16(65535)                                     # D1: steady high, no low plateau
    assert b.pilot_levels() == {adc_of(plateau(R_BD))}
    b.pwm.duty_u16(0)                                         # F: steady -12 V
    assert b.pilot_levels() == {280}
    b.pwm.deinit()                                            # pin low without PWM: -12 V
    assert b.pilot_levels() == {280}
    machine.Pin(PWM_PIN, machine.Pin.OUT, value=1)            # pin high without PWM: +12 V
    assert b.pilot_levels() == {adc_of(plateau(R_BD))}


def test_pwm_phase_follows_duty():
    b = Bench()
    b.w.apply("plug")
    b.offer(16)  # 26.67 %: high for the first 266 us of each 1000 us period
    highs = 0
    n = 1000
    for _ in range(n):
        if b.adc.read_uv() // 1000 > 1500:
            highs += 1
    assert abs(highs / n - 0.2667) < 0.03


def test_new_duty_seen_by_the_next_read_without_advance():
    b = Bench()
    b.w.apply("plug")
    assert b.pilot_levels() == {adc_of(plateau(R_B))}
    b.offer(32)
    assert b.pilot_levels() == {adc_of(plateau(R_B)), 280}


def test_pilot_short_and_diode_fault():
    b = Bench()
    w = b.w
    b.offer(16)
    w.apply("plug")
    w.apply("diode-fault")
    low = -(11.3 * R_B / (R_B + 1000))
    assert b.pilot_levels() == {adc_of(plateau(R_B)), adc_of(low)}
    b.pwm.duty_u16(0)  # steady -12 V source, no diode: the car's resistor still conducts
    assert b.pilot_levels() == {adc_of(low)}
    w.apply("pilot-ok")
    assert b.pilot_levels() == {280}
    b.offer(16)
    w.apply("pilot-short")
    assert w.car.state() == "E"
    assert b.pilot_levels() == {adc_of(0)}
    w.apply("pilot-ok")
    assert b.pilot_levels() == {adc_of(plateau(R_B)), 280}


def test_pilot_driver_reads_the_line():
    """The real pilot driver sampling the world: plateaus in line millivolts."""
    from drivers.pilot import Pilot
    w = World(profile())
    w.advance(0)
    pilot = Pilot(w.profile["pilot"])
    hi, lo = pilot.sample()
    assert abs(hi - 12000) <= 10 and abs(lo - 12000) <= 10
    w.apply("plug")
    w.apply("ev-ready", [16])
    pilot.set_duty_u16(duty_for(16))
    hi, lo = pilot.sample()
    assert abs(hi - 8980) <= 20 and abs(lo + 12000) <= 10
    w.advance(500)
    w.advance(1000)
    hi, lo = pilot.sample()
    assert abs(hi - 6000) <= 20 and abs(lo + 12000) <= 10


# -- the car


def test_car_reaction_and_offer_following():
    b = Bench()
    w = b.w
    w.apply("plug", [32])
    w.apply("ev-ready", [16])
    b.run_to(1000)
    assert w.car.state() == "B"          # ready, but no offer yet
    b.offer(32)                          # seen from t=1000
    b.run_to(1490)
    assert w.car.state() == "B"
    b.run_to(1500)
    assert w.car.state() == "C"
    assert w.amps() == 0                 # contacts still open
    b.contactor(True)
    b.run_to(1520)
    assert w.amps() == 0                 # 30 ms to close
    b.run_to(1530)
    assert w.amps() == 16.0              # min(offer 32, own 16)
    b.run_to(2000)
    b.offer(10)                          # follows within 1 s
    b.run_to(2990)
    assert w.amps() == 16.0
    b.run_to(3000)
    assert w.amps() == 10.0
    b.offer(0)                           # PWM off (steady +12 V): stop and go to B within 1 s
    b.run_to(3990)
    assert w.car.state() == "C" and w.amps() == 10.0
    b.run_to(4000)
    assert w.car.state() == "B" and w.amps() == 0
    b.offer(13)                          # a new offer: closes S2 again after 500 ms
    b.run_to(4500)
    assert w.car.state() == "C" and w.amps() == 13.0


def test_car_follows_own_limit_at_once():
    b = Bench()
    b.charging(amps=16)
    assert b.w.amps() == 16.0
    b.w.apply("ev-ready", [8])
    assert b.w.amps() == 8.0


def test_car_ignoring_offers_keeps_drawing():
    b = Bench()
    w = b.w
    b.charging(amps=16)
    w.apply("ev-ignore-offer")
    b.offer(6)
    b.run(3000)
    assert w.amps() == 16.0
    b.offer(0)
    b.run(5000)
    assert w.car.state() == "C" and w.amps() == 16.0
    b.contactor(False)
    b.run(20)
    assert w.amps() == 0 and w.car.state() == "C"


def test_invalid_duty_is_no_offer():
    b = Bench()
    w = b.w
    w.apply("plug")
    w.apply("ev-ready", [16])
    b.pwm.duty_u16(3277)  # 5 %: digital communication, no offer
    b.run(2000)
    assert w.car.state() == "B"
    b.pwm.freq(5000)
    b.offer(16)           # right duty, wrong frequency
    b.run(2000)
    assert w.car.state() == "B"
    b.pwm.freq(1000)
    b.run(500)
    assert w.car.state() == "C"


def test_plugging_while_ready_goes_a_to_c():
    b = Bench()
    w = b.w
    w.apply("ev-ready", [16])
    assert w.car.state() == "A"
    w.apply("plug")
    assert w.car.state() == "C"      # no B in between
    b.run(990)
    assert w.car.state() == "C"
    b.run(10)
    assert w.car.state() == "B"      # no offer: the car opens S2 within 1 s


def test_unplug_under_load_is_instant_and_forgets_ready():
    b = Bench()
    w = b.w
    b.charging()
    assert w.amps() == 16.0
    w.apply("unplug")
    assert w.car.state() == "A" and w.amps() == 0
    assert b.pilot_levels() == {2980, 280}
    w.apply("plug")
    assert w.car.state() == "B"


def test_pause_and_vent():
    b = Bench()
    w = b.w
    b.charging()
    w.apply("ev-pause")
    assert w.car.state() == "B" and w.amps() == 0
    b.run(3000)
    assert w.car.state() == "B"
    w.apply("ev-vent")
    w.apply("ev-ready", [16])
    b.run(500)
    assert w.car.state() == "D" and w.amps() == 16.0


# -- contactor


def test_relay_delays_and_feedback():
    b = Bench()
    w = b.w
    b.run_to(100)
    assert machine.hw_level(FEEDBACK) == 0
    b.contactor(True)
    b.run_to(129, step=1)
    assert not w.relay.closed and machine.hw_level(FEEDBACK) == 0
    b.run_to(130)
    assert w.relay.closed and machine.hw_level(FEEDBACK) == 1
    b.run_to(200)
    b.contactor(False)
    b.run_to(219, step=1)
    assert w.relay.closed and machine.hw_level(FEEDBACK) == 1
    b.run_to(220)
    assert not w.relay.closed and machine.hw_level(FEEDBACK) == 0
    # a pulse shorter than the closing time never moves the contacts
    b.contactor(True)
    b.run(20)
    b.contactor(False)
    b.run(100)
    assert not w.relay.closed
    assert w.relay.operations == 2


def test_relay_timing_inside_one_long_advance():
    b = Bench()
    b.contactor(True)
    seen = []
    machine.Pin(FEEDBACK, machine.Pin.IN).irq(lambda p: seen.append(b.w.t),
                                              machine.Pin.IRQ_RISING)
    b.w.advance(1000)
    assert seen == [30]


def test_relay_active_low_and_feedback_active_low():
    p = profile()
    p["relay"]["active_high"] = False
    p["relay"]["feedback_active_high"] = False
    w = World(p)
    w.advance(0)
    pin = machine.Pin(RELAY, machine.Pin.OUT, value=1)
    w.advance(100)
    assert not w.relay.closed and machine.hw_level(FEEDBACK) == 1
    pin.value(0)
    w.advance(200)
    assert w.relay.closed and machine.hw_level(FEEDBACK) == 0


def test_weld():
    b = Bench()
    w = b.w
    b.contactor(True)
    b.run(100)
    w.apply("weld")
    b.contactor(False)
    b.run(1000)
    assert w.relay.closed and machine.hw_level(FEEDBACK) == 1
    w.power_cut()
    b.run(1000)
    assert w.relay.closed


def test_weld_armed_while_open_takes_hold_at_next_close():
    b = Bench()
    w = b.w
    w.apply("weld")
    b.run(100)
    assert not w.relay.closed
    b.contactor(True)
    b.run(100)
    b.contactor(False)
    b.run(100)
    assert w.relay.closed


def test_tethered_board_without_feedback():
    w = World(profile("esp32-tethered-1p"))
    w.advance(0)
    assert w.cable is None
    pin = machine.Pin(RELAY, machine.Pin.OUT, value=1)
    w.advance(100)
    assert w.relay.closed
    assert machine.hw_level(FEEDBACK) == 0  # nothing drives it
    pin.value(0)
    w.advance(200)
    assert not w.relay.closed


# -- RCD


def test_rcd_leakage_trip_and_release():
    b = Bench()
    w = b.w
    trips = []
    machine.Pin(RCD, machine.Pin.IN).irq(lambda p: trips.append(w.t), machine.Pin.IRQ_RISING)
    b.run_to(100)
    w.apply("rcd-leak", [5])
    b.run(1000)
    assert machine.hw_level(RCD) == 0 and not trips
    w.apply("rcd-leak", [6])           # at t=1100
    b.run_to(1119, step=1)
    assert machine.hw_level(RCD) == 0
    b.run_to(1120)
    assert machine.hw_level(RCD) == 1 and trips == [1120]
    w.apply("rcd-leak", [300])         # still tripped, no new edge
    b.run(100)
    assert trips == [1120]
    w.apply("rcd-leak", [0])           # released at once
    assert machine.hw_level(RCD) == 0
    assert w.rcd.trips == 1


def test_rcd_self_test_input():
    b = Bench()
    w = b.w
    b.run_to(100)
    b.test_pin.value(1)
    b.run_to(129, step=1)
    assert machine.hw_level(RCD) == 0
    b.run_to(130)
    assert machine.hw_level(RCD) == 1
    b.test_pin.value(0)
    assert machine.hw_level(RCD) == 0   # released without waiting for advance
    assert w.rcd.trips == 1


def test_rcd_broken_never_trips_until_repaired():
    b = Bench()
    w = b.w
    w.apply("rcd-broken")
    w.apply("rcd-leak", [30])
    b.test_pin.value(1)
    b.run(2000)
    assert machine.hw_level(RCD) == 0
    b.test_pin.value(0)
    w.apply("rcd-ok")                  # leakage still there: trips 20 ms later
    b.run(10)
    assert machine.hw_level(RCD) == 0
    b.run(10)
    assert machine.hw_level(RCD) == 1


def test_rcd_trip_opens_contactor_through_drivers():
    """The real drivers: the trip IRQ opens the relay pin, the contacts follow 20 ms later."""
    from drivers.rcd import Rcd as RcdDriver
    from drivers.relay import Relay as RelayDriver
    w = World(profile())
    w.advance(0)
    relay = RelayDriver(w.profile["relay"])
    rcd = RcdDriver(w.profile["rcd"], relay)
    relay.set(True)
    w.advance(100)
    assert w.relay.closed and relay.feedback() is True
    w.apply("rcd-leak", [10])
    w.advance(120)                     # trip at 120, IRQ opens the coil, contacts at 140
    assert rcd.tripped() and not relay.closed()
    assert w.relay.closed
    w.advance(140)
    assert not w.relay.closed and relay.feedback() is False
    # self-test through the driver
    w.apply("rcd-leak", [0])
    assert rcd.clear()
    rcd.test(True)
    w.advance(169)
    assert not rcd.input_active()
    w.advance(170)
    assert rcd.input_active()
    rcd.test(False)
    assert not rcd.input_active()


# -- PP and NTC


@pytest.mark.parametrize("amps", [13, 20, 32, 63, 70])
def test_pp_resistor(amps):
    from drivers.proximity import ohms_from_mv
    w = World(profile())
    adc = machine.ADC(machine.Pin(PP_ADC), atten=machine.ADC.ATTN_11DB)
    assert adc.read_uv() == 3300000      # no cable: open
    w.apply("plug", [amps])
    mv = adc.read_uv() // 1000
    r = OHMS[amps]
    assert mv == (3300 * r + (r + 1000) // 2) // (r + 1000)
    assert abs(ohms_from_mv(mv, 1000, 3300) - r) <= r // 100 + 3
    w.apply("unplug")
    assert adc.read_uv() == 3300000


def test_plug_rejects_unknown_cable_rating():
    w = World(profile())
    with pytest.raises(ValueError):
        w.apply("plug", [16])


@pytest.mark.parametrize("c", [-40.0, -10.0, 0.0, 25.0, 55.5, 65.0, 71.0, 100.0, 125.0])
def test_ntc_round_trip(c):
    mv = ntc_mv(c, 10000, 3950, 10000, 3300)
    back = mv_to_celsius(mv, 10000, 3950, 10000, 3300)
    slope = abs(ntc_mv(c + 1, 10000, 3950, 10000, 3300) - mv)  # mV per degree
    assert abs(back - c) <= 0.5 / max(slope, 1) + 0.01
    assert ntc_mv(25.0, 10000, 3950, 10000, 3300) == 1650


def test_ntc_through_adc_and_driver():
    from drivers.temperature import Temperature
    w = World(profile())
    t = Temperature(w.profile["temperature"])
    assert abs(t.deci_celsius() - 250) <= 2
    w.apply("temp", [72.5])
    assert abs(t.deci_celsius() - 725) <= 3
    w.apply("temp", ["-5"])
    assert abs(t.deci_celsius() + 50) <= 3
    assert w.status()["temp"] == -5.0


# -- energy


def test_energy_three_phases_one_hour():
    b = Bench()
    w = b.w
    b.charging(amps=16)
    start = b.now
    b.run(3600 * 1000, step=1000)
    assert b.now - start == 3600000
    assert w.truth_wh == pytest.approx(230 * 16 * 3, rel=1e-9)


def test_energy_only_through_closed_contacts_and_piecewise():
    b = Bench()
    w = b.w
    w.apply("plug")
    w.apply("ev-ready", [10, 1])
    b.offer(32)
    b.run(10000)                          # in C, contacts open: nothing
    assert w.car.state() == "C" and w.truth_wh == 0
    b.contactor(True)                     # at t = 10000, contacts close at 10030
    b.w.advance(10000 + 1800 * 1000 + 30) # half an hour in one step
    assert w.truth_wh == pytest.approx(230 * 10 * 0.5, rel=1e-9)
    w.apply("unplug")
    b.w.advance(10000 + 3600 * 1000)
    assert w.truth_wh == pytest.approx(230 * 10 * 0.5, rel=1e-9)


def test_energy_one_phase_board():
    w = World(profile("esp32-tethered-1p", meter=False))
    w.advance(0)
    pwm = machine.PWM(machine.Pin(PWM_PIN), freq=1000, duty_u16=duty_for(16))
    w.apply("plug")
    w.apply("ev-ready", [32, 3])          # a 3-phase car on a 1-phase board: one phase
    w.advance(500)
    machine.Pin(RELAY, machine.Pin.OUT, value=1)
    w.advance(530)
    assert w.amps() == 16.0 and w.phases_now() == 1
    w.advance(530 + 3600 * 1000)
    assert w.truth_wh == pytest.approx(230 * 16, rel=1e-9)
    pwm.deinit()


def test_ticks_wrap():
    b = Bench()
    b.charging(amps=16)
    period = 1 << 30
    near = period - 500
    w = b.w
    e0 = w._energy
    w._last = near
    w.advance((near + 1000) % period)     # 1000 ms across the wrap
    assert w._energy - e0 == 160 * 3 * 1000


# -- power


def test_power_cut_and_restore():
    b = Bench()
    w = b.w
    w.apply("temp", [40])
    b.charging(amps=16)
    b.run(1000)
    wh = w.truth_wh
    assert wh == pytest.approx(230 * 16 * 3 / 3600.0, rel=1e-9)
    w.power_cut()
    assert w.amps() == 0
    assert b.pilot_levels() == {adc_of(0)}            # 0 V: the car sees E
    b.run(19)
    assert w.relay.closed                             # the coil lets go after 20 ms
    b.run(1)
    assert not w.relay.closed
    b.run(2000)
    assert w.car.state() == "B"                       # no offer: S2 opened
    assert w.truth_wh == wh                           # no mains, no energy
    machine.hw_reset(machine.PWRON_RESET)             # what the simulator does
    w.power_restored()
    assert w.car.plugged and w.cable.amps == 32 and w.thermal.celsius == 40.0
    assert b.pilot_levels() == {280}                  # pwm pin forgotten: low, -12 V
    machine.Pin(PWM_PIN, machine.Pin.OUT, value=1)
    assert b.pilot_levels() == {adc_of(plateau(R_B))}
    assert w.status()["power"] is True


def test_status():
    b = Bench()
    b.charging(amps=16)
    b.run(1000)
    s = b.w.status()
    assert s["car"] == "C" and s["amps"] == 16.0 and s["contacts"] is True
    assert s["rcd"] is False and s["phases"] == 3 and s["wh"] > 0


# -- actions


def test_apply_errors():
    w = World(profile())
    with pytest.raises(ValueError):
        w.apply("teleport", [])
    with pytest.raises(ValueError):
        w.apply("ev-ready", [])
    with pytest.raises(ValueError):
        w.apply("ev-ready", [16, 2])
    with pytest.raises(ValueError):
        w.apply("rcd-leak", ["lots"])
    for verb, args in (("meter-fail", []), ("meter-ok", []), ("meter-noise", [10])):
        with pytest.raises(ValueError) as e:
            w.apply(verb, args)
        assert "no meter" in str(e.value)


def test_verbs_are_scenario_verbs():
    from world.scenario import SPEC
    for v in VERBS:
        assert v in SPEC


# -- meter


def test_meter_source_and_faults():
    b = Bench(profile(meter=True))
    w = b.w
    m = w.meter
    assert m is not None
    src = w._meter_source()
    assert src["volts"] == [230.0, 230.0, 230.0] and src["amps"] == [0.0, 0.0, 0.0]
    b.charging(amps=16, phases=1)
    b.run(3600 * 1000, step=1000)
    src = w._meter_source()
    assert src["amps"] == [16.0, 0.0, 0.0]
    assert src["import_wh"] == pytest.approx(230 * 16, rel=1e-6)
    w.apply("meter-fail")
    assert m.dead
    w.apply("meter-ok")
    assert not m.dead
    w.apply("meter-noise", [20])
    assert m.noise == 0.2
    w.power_cut()
    assert m.dead
    w.power_restored()
    assert not m.dead
    w.apply("meter-ok")
    assert m.noise == 0


# -- the real MicroPython binary

SMOKE = r"""
import gc
import machine
from drivers import board

p = board.load("drivers/boards/esp32-devkit.json")
gc.collect()
m0 = gc.mem_alloc()
import world.car, world.relay, world.rcd, world.cable, world.thermal, world.world
gc.collect()
m1 = gc.mem_alloc()
import world.modbus_meter, world.card, world.grid  # (the code of the world's parts, not the instance)
gc.collect()
m2 = gc.mem_alloc()
w = world.world.World(p)
gc.collect()
m3 = gc.mem_alloc()
pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=17476)
relay = machine.Pin(26, machine.Pin.OUT, value=0)

def run(t0, t1):
    t = t0
    while t < t1:
        t += 10
        w.advance(t)
    return t

t = run(0, 100)
w.apply("plug", [32])
w.apply("ev-ready", [16])
t = run(t, 700)
relay.value(1)
t = run(t, 60700)

def grow(fn, n):
    for i in range(n):
        fn(i * 23)
    gc.collect()
    a = gc.mem_alloc()
    for i in range(n):
        fn(i * 23)
    return gc.mem_alloc() - a

def grow_adc(adc, n):
    for i in range(n):
        adc.read_uv()
    gc.collect()
    a = gc.mem_alloc()
    for i in range(n):
        adc.read_uv()
    return gc.mem_alloc() - a

print("state", w.car.state(), w.amps(), int(w.truth_wh * 1000))
print("size", m1 - m0, m3 - m2, m2 - m1)
print("fn", grow(w.cable.adc, 100), grow(w.thermal.adc, 100))
print("adc", grow_adc(machine.ADC(machine.Pin(36), atten=3), 100),
      grow_adc(machine.ADC(machine.Pin(39), atten=3), 100),
      grow_adc(machine.ADC(machine.Pin(34), atten=3), 100))
w.power_cut()
t = run(t, t + 2000)
machine.hw_reset()
w.power_restored()
print("after", w.car.state(), w.amps(), w.relay.closed)
"""


def test_micropython_smoke_and_no_allocation_per_read():
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    env = dict(os.environ)
    env["MICROPYPATH"] = os.pathsep.join(["tests_host/fakes", ".", "tests_host"])
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=256K", "-c", SMOKE], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + out.stdout
    lines = dict((ln.split(" ", 1)[0], ln.split(" ", 1)[1]) for ln in out.stdout.strip().split("\n"))
    # 60 s at 16 A on 3 phases through contacts closed at t=730
    state, amps, mwh = lines["state"].split()
    assert state == "C" and float(amps) == 16.0
    assert abs(int(mwh) - 230 * 16 * 3 * 59970 * 1000 // 3600000) <= 1
    code, inst, meter = [int(x) for x in lines["size"].split()]
    print("world code %d B, World instance %d B, modbus_meter code %d B" % (code, inst, meter))
    # (card reader models, the socket lock; a meter keeps its register tables, and the DevKit's
    # grid meter, a second one on the same bus, its own)
    assert code < 32000 and inst < 11264, lines["size"]
    assert lines["fn"] == "0 0"
    assert lines["adc"] == "0 0 0"
    assert lines["after"] == "B 0.0 False"
    assert not math.isnan(float(amps))
