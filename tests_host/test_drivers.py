"""Drivers against the fake `machine`: pins, LEDC duty, ADC sampling, IRQ order, conversions."""
import math
import sys
import types

import pytest

import machine
from drivers import board
from drivers.led import Led
from drivers.pilot import Pilot
from drivers.proximity import Proximity, ohms_from_mv
from drivers.rcd import Rcd
from drivers.relay import Relay
from drivers.temperature import Temperature, ntc_deci_celsius
from drivers.watchdog import Watchdog


pytestmark = pytest.mark.usefixtures("bare_board")  # (conftest.py)


@pytest.fixture
def profile():
    return board.load("esp32-devkit")


def line_to_adc_mv(line_mv, cal):
    """Inverse of the pilot calibration: what the ADC sees for a pilot-line voltage."""
    lo = cal["adc_mv_at_minus12"]
    hi = cal["adc_mv_at_plus12"]
    return lo + (line_mv + 12000) * (hi - lo) / 24000.0


def pilot_wave(duty, high_mv, low_mv, cal, phase_us=0):
    """A 1 kHz pilot: high plateau for duty of each period, then the low plateau."""
    hi = line_to_adc_mv(high_mv, cal)
    lo = line_to_adc_mv(low_mv, cal)
    high_us = duty * 1000.0

    def fn(t_us):
        return int(round(hi if ((t_us + phase_us) % 1000) < high_us else lo))
    return fn


# ---------------------------------------------------------------------------------------------
# pilot

def test_pilot_starts_at_steady_plus12(profile):
    p = Pilot(profile["pilot"])
    assert machine.hw_pwm(25) == (1000, 65535)
    assert p.duty_u16() == 65535


@pytest.mark.parametrize("duty", [0, 1, 6554, 17476, 34734, 58982, 65534, 65535])
def test_pilot_ledc_1khz_exact_duty(profile, duty):
    p = Pilot(profile["pilot"])
    p.set_duty_u16(duty)
    assert machine.hw_pwm(25) == (1000, duty)
    assert p.duty_u16() == duty


def test_pilot_duty_is_clamped(profile):
    p = Pilot(profile["pilot"])
    p.set_duty_u16(70000)
    assert machine.hw_pwm(25) == (1000, 65535)
    p.set_duty_u16(-5)
    assert machine.hw_pwm(25) == (1000, 0)


@pytest.mark.parametrize("duty", [0.10, 0.267, 0.53, 0.90])
@pytest.mark.parametrize("high_mv", [9000, 6000, 3000])
@pytest.mark.parametrize("phase_us", [0, 337, 871])
def test_pilot_sample_finds_both_plateaus(profile, duty, high_mv, phase_us):
    cal = profile["pilot"]["cal"]
    p = Pilot(profile["pilot"])
    p.set_duty_u16(int(duty * 65535))
    machine.hw_set_analog(36, pilot_wave(duty, high_mv, -12000, cal, phase_us))
    for _ in range(5):  # different phases of the virtual microsecond counter
        hi, lo = p.sample()
        assert isinstance(hi, int) and isinstance(lo, int)
        assert abs(hi - high_mv) <= 200, (hi, lo)
        assert abs(lo + 12000) <= 200, (hi, lo)
        assert (p.high_mv, p.low_mv) == (hi, lo)


def test_pilot_sample_with_noise_and_slow_edges(profile):
    """Top/bottom-3 means tolerate a little noise and the RC-rounded edges of a real line."""
    cal = profile["pilot"]["cal"]
    p = Pilot(profile["pilot"])
    hi_adc = line_to_adc_mv(9000, cal)
    lo_adc = line_to_adc_mv(-12000, cal)
    seq = [0]

    def fn(t_us):
        seq[0] += 1
        x = t_us % 1000
        noise = ((seq[0] * 7919) % 21) - 10  # +-10 mV deterministic noise
        if x < 10:    # rising edge
            v = lo_adc + (hi_adc - lo_adc) * x / 10.0
        elif x < 530:
            v = hi_adc
        elif x < 540:
            v = hi_adc - (hi_adc - lo_adc) * (x - 530) / 10.0
        else:
            v = lo_adc
        return int(v + noise)

    machine.hw_set_analog(36, fn)
    hi, lo = p.sample()
    assert abs(hi - 9000) <= 200 and abs(lo + 12000) <= 200


@pytest.mark.parametrize("line_mv", [12000, 0, -12000])
def test_pilot_steady_levels_give_equal_plateaus(profile, line_mv):
    cal = profile["pilot"]["cal"]
    p = Pilot(profile["pilot"])
    p.set_duty_u16(0 if line_mv < 0 else 65535)
    adc = int(round(line_to_adc_mv(line_mv, cal)))
    machine.hw_set_analog(36, lambda t: adc)
    hi, lo = p.sample()
    assert abs(hi - line_mv) <= 10 and abs(lo - line_mv) <= 10


def test_pilot_diode_fault_shows_as_low_plateau_near_zero(profile):
    cal = profile["pilot"]["cal"]
    p = Pilot(profile["pilot"])
    p.set_duty_u16(32768)
    machine.hw_set_analog(36, pilot_wave(0.5, 9000, 0, cal))
    hi, lo = p.sample()
    assert abs(hi - 9000) <= 200 and abs(lo) <= 200


def test_pilot_calibration_math(profile):
    p = Pilot(profile["pilot"])  # 280 mV at -12 V, 2980 mV at +12 V
    assert p.to_line_mv(280000) == -12000
    assert p.to_line_mv(2980000) == 12000
    assert p.to_line_mv(1630000) == 0
    assert p.to_line_mv(2642500) == 9000          # 280 + 21/24 * 2700
    assert p.to_line_mv(0) == -14489              # below the -12 V point (-14488.9)
    for adc_mv in range(0, 3301, 37):
        exact = -12000 + (adc_mv - 280) * 24000 / 2700.0
        assert abs(p.to_line_mv(adc_mv * 1000) - exact) <= 1
    # the sampled plateaus use the same conversion
    machine.hw_set_analog(36, lambda t: 1630)
    assert p.sample() == (0, 0)


def test_pilot_inverted_calibration(profile):
    cfg = dict(profile["pilot"])
    cfg["cal"] = {"adc_mv_at_minus12": 3000, "adc_mv_at_plus12": 200}
    p = Pilot(cfg)
    assert p.to_line_mv(3000000) == -12000
    assert p.to_line_mv(200000) == 12000
    assert p.to_line_mv(1600000) == 0
    machine.hw_set_analog(36, lambda t: 200 if t % 1000 < 500 else 3000)
    hi, lo = p.sample()
    # with an inverting front end the "high" ADC plateau is the low pilot level
    assert sorted((hi, lo)) == [-12000, 12000]


def test_pilot_sample_takes_the_configured_number_of_reads(profile):
    cfg = dict(profile["pilot"])
    cfg["samples"] = 50
    p = Pilot(cfg)
    times = []

    def fn(t_us):
        times.append(t_us)
        return 1630
    machine.hw_set_analog(36, fn)
    p.sample()
    assert len(times) == 50
    assert times[-1] - times[0] >= 1000 - 23  # spans a whole 1 ms period


# ---------------------------------------------------------------------------------------------
# relay

def test_relay_active_high(profile):
    r = Relay(profile["relay"])
    assert machine.hw_level(26) == 0 and r.closed() is False
    r.set(True)
    assert machine.hw_level(26) == 1 and r.closed() is True
    r.set(False)
    assert machine.hw_level(26) == 0 and r.closed() is False
    r.set(True)
    r.open_now()
    assert machine.hw_level(26) == 0 and r.closed() is False


def test_relay_active_low_never_glitches_closed():
    seen = []
    machine.hw_on_output(14, seen.append)
    r = Relay({"pin": 14, "active_high": False, "feedback_pin": None,
               "feedback_active_high": True})
    assert machine.hw_level(14) == 1
    assert 0 not in seen
    r.set(True)
    assert machine.hw_level(14) == 0
    r.open_now()
    assert machine.hw_level(14) == 1


def test_relay_feedback(profile):
    r = Relay(profile["relay"])
    machine.hw_set_input(27, 0)
    assert r.feedback() is False
    machine.hw_set_input(27, 1)
    assert r.feedback() is True


def test_relay_feedback_active_low():
    r = Relay({"pin": 26, "active_high": True, "feedback_pin": 27,
               "feedback_active_high": False})
    machine.hw_set_input(27, 0)
    assert r.feedback() is True
    machine.hw_set_input(27, 1)
    assert r.feedback() is False


def test_relay_without_feedback_pin():
    r = Relay({"pin": 26, "active_high": True, "feedback_pin": None})
    assert r.feedback() is None


# ---------------------------------------------------------------------------------------------
# RCD

def test_rcd_irq_opens_relay_before_latching(profile):
    machine.hw_set_input(33, 0)
    relay = Relay(profile["relay"])
    rcd = Rcd(profile["rcd"], relay)
    relay.set(True)
    assert rcd.tripped() is False and rcd.trips == 0
    at_open = []
    machine.hw_on_output(26, lambda level: at_open.append((level, rcd._latched, rcd.trips)))
    machine.hw_set_input(33, 1)
    # before hw_set_input returned: the contactor opened, and only then the latch was set
    assert at_open and at_open[0] == (0, False, 0)
    assert machine.hw_level(26) == 0 and relay.closed() is False
    assert rcd.tripped() is True and rcd.trips == 1 and rcd.input_active()


def test_rcd_clear_only_when_input_inactive(profile):
    machine.hw_set_input(33, 0)
    relay = Relay(profile["relay"])
    rcd = Rcd(profile["rcd"], relay)
    machine.hw_set_input(33, 1)
    assert rcd.clear() is False and rcd.tripped() is True
    machine.hw_set_input(33, 0)
    assert rcd.tripped() is True  # latched
    assert rcd.clear() is True
    assert rcd.tripped() is False and not rcd.input_active()
    machine.hw_set_input(33, 1)
    assert rcd.tripped() and rcd.trips == 2


def test_relay_cannot_close_while_rcd_tripped(profile):
    machine.hw_set_input(33, 0)
    relay = Relay(profile["relay"])
    rcd = Rcd(profile["rcd"], relay)
    machine.hw_set_input(33, 1)
    machine.hw_set_input(33, 0)
    relay.set(True)
    assert machine.hw_level(26) == 0 and relay.closed() is False
    assert rcd.clear()
    relay.set(True)
    assert machine.hw_level(26) == 1 and relay.closed() is True


def test_rcd_active_low(profile):
    machine.hw_set_input(33, 1)
    relay = Relay(profile["relay"])
    rcd = Rcd({"pin": 33, "active_high": False, "test_pin": 32, "type": "type-b"}, relay)
    relay.set(True)
    assert not rcd.tripped()
    machine.hw_set_input(33, 0)
    assert machine.hw_level(26) == 0 and rcd.tripped() and rcd.trips == 1


def test_rcd_active_at_boot_is_a_trip(profile):
    machine.hw_set_input(33, 1)
    relay = Relay(profile["relay"])
    rcd = Rcd(profile["rcd"], relay)
    assert rcd.tripped() and rcd.trips == 1


def test_rcd_test_output(profile):
    relay = Relay(profile["relay"])
    rcd = Rcd(profile["rcd"], relay)
    assert machine.hw_level(32) == 0
    rcd.test(True)
    assert machine.hw_level(32) == 1
    rcd.test(False)
    assert machine.hw_level(32) == 0


def test_rcd_poll_catches_a_missed_edge(profile):
    machine.hw_set_input(33, 0)
    relay = Relay(profile["relay"])
    rcd = Rcd(profile["rcd"], relay)
    rcd._pin.irq(handler=None)  # as if the edge were lost
    relay.set(True)
    machine.hw_set_input(33, 1)
    assert machine.hw_level(26) == 1
    assert rcd.tripped() is True
    assert machine.hw_level(26) == 0 and rcd.trips == 1


# ---------------------------------------------------------------------------------------------
# proximity

@pytest.mark.parametrize("r_pp", [1500, 680, 220, 100])
def test_proximity_ohms(profile, r_pp):
    prox = Proximity(profile["proximity"])
    mv = 3300.0 * r_pp / (r_pp + 1000)
    machine.hw_set_analog(39, lambda t: int(round(mv)))
    got = prox.ohms()
    assert isinstance(got, int)
    assert abs(got - r_pp) <= max(2, r_pp // 100), got


def test_proximity_open_and_short(profile):
    prox = Proximity(profile["proximity"])
    machine.hw_set_analog(39, lambda t: 3300)
    assert prox.ohms() is None
    machine.hw_set_analog(39, lambda t: 3150)   # ADC saturated below the supply
    assert prox.ohms() is None
    machine.hw_set_analog(39, lambda t: 0)
    assert prox.ohms() == 0


def test_proximity_math():
    assert ohms_from_mv(1650, 1000, 3300) == 1000
    assert ohms_from_mv(3300, 1000, 3300) is None
    assert ohms_from_mv(3400, 1000, 3300) is None
    assert ohms_from_mv(-3, 1000, 3300) == 0


# ---------------------------------------------------------------------------------------------
# temperature

def ntc_mv(celsius, r25=10000, beta=3950, series=10000, supply=3300):
    t = celsius + 273.15
    r = r25 * math.exp(beta * (1.0 / t - 1.0 / 298.15))
    return supply * r / (r + series)


@pytest.mark.parametrize("celsius", [25, 60, -20, 0, 71, 100])
def test_ntc(profile, celsius):
    temp = Temperature(profile["temperature"])
    mv = int(round(ntc_mv(celsius)))
    machine.hw_set_analog(34, lambda t: mv)
    d = temp.deci_celsius()
    assert isinstance(d, int)
    assert abs(d - celsius * 10) <= 5, d


def test_ntc_open_and_shorted(profile):
    temp = Temperature(profile["temperature"])
    machine.hw_set_analog(34, lambda t: 3300)
    assert temp.deci_celsius() is None
    machine.hw_set_analog(34, lambda t: 3200)  # saturated ADC: cannot tell from open
    assert temp.deci_celsius() is None
    machine.hw_set_analog(34, lambda t: 0)
    assert temp.deci_celsius() is None
    assert ntc_deci_celsius(1, 3300, 10000, 10000, 3950) is None  # far beyond 150 C


class _FakeDS:
    """Stand-in for ds18x20.DS18X20 (the unix port has no onewire)."""

    def __init__(self, ow):
        self.ow = ow
        self.celsius = 30.0
        self.converts = 0
        self.reads = 0
        self.fail = False

    def scan(self):
        return [b"\x28\x01\x02\x03\x04\x05\x06\x07"]

    def convert_temp(self):
        self.converts += 1

    def read_temp(self, rom):
        self.reads += 1
        if self.fail:
            raise Exception("CRC error")
        return self.celsius


@pytest.fixture
def ds_modules(monkeypatch):
    made = []
    ow = types.ModuleType("onewire")
    ow.OneWire = lambda pin: ("ow", pin)  # type: ignore[attr-defined]
    ds = types.ModuleType("ds18x20")

    def DS18X20(bus):
        d = _FakeDS(bus)
        made.append(d)
        return d
    ds.DS18X20 = DS18X20  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "onewire", ow)
    monkeypatch.setitem(sys.modules, "ds18x20", ds)
    return made


def test_ds18b20_is_non_blocking(profile, ds_modules):
    cfg = dict(profile["temperature"])
    cfg["ds18b20_pin"] = 13
    temp = Temperature(cfg)
    ds = ds_modules[0]
    machine.hw_set_analog(34, lambda t: int(round(ntc_mv(25))))
    assert abs(temp.deci_celsius(1000) - 250) <= 5      # conversion started, NTC only
    assert ds.converts == 1 and ds.reads == 0
    assert abs(temp.deci_celsius(1500) - 250) <= 5      # 500 ms: not read yet
    assert ds.reads == 0
    assert temp.deci_celsius(1750) == 300               # 750 ms: read, the hotter one wins
    assert ds.reads == 1 and ds.converts == 2
    ds.celsius = 20.0
    assert temp.deci_celsius(2000) == 300               # previous reading, still fresh
    assert abs(temp.deci_celsius(2600) - 250) <= 5      # 20.0 C read; NTC is hotter
    ds.fail = True
    machine.hw_set_analog(34, lambda t: 3300)           # NTC open
    assert temp.deci_celsius(3400) == 200               # read failed; last value is fresh
    assert temp.deci_celsius(9000) is None              # stale and NTC open
    assert temp.deci_celsius() is None                  # without ticks: NTC only


def test_ds18b20_wraps_ticks(profile, ds_modules):
    cfg = dict(profile["temperature"])
    cfg["ds18b20_pin"] = 13
    temp = Temperature(cfg)
    machine.hw_set_analog(34, lambda t: 3300)
    top = (1 << 30) - 100
    assert temp.deci_celsius(top) is None
    assert temp.deci_celsius(650) == 300                # 750 ms later across the wrap


def test_ds18b20_missing_module_falls_back_to_ntc(profile, monkeypatch):
    monkeypatch.setitem(sys.modules, "onewire", None)   # import fails as on the unix port
    cfg = dict(profile["temperature"])
    cfg["ds18b20_pin"] = 13
    temp = Temperature(cfg)
    assert temp.ds_error
    machine.hw_set_analog(34, lambda t: int(round(ntc_mv(60))))
    assert abs(temp.deci_celsius(1000) - 600) <= 5


# ---------------------------------------------------------------------------------------------
# LED, watchdog

def test_led_patterns(profile):
    led = Led(profile["led"])
    assert machine.hw_level(2) == 0
    led.show("idle", 123)
    assert machine.hw_level(2) == 1
    led.show("unavailable", 0)
    assert machine.hw_level(2) == 0
    for status, half in (("connected", 500), ("charging", 250), ("fault", 100)):
        led.show(status, 0)
        assert machine.hw_level(2) == 1
        led.show(status, half)
        assert machine.hw_level(2) == 0
        led.show(status, 2 * half + 1)
        assert machine.hw_level(2) == 1


def test_led_active_low():
    led = Led({"pin": 2, "active_high": False})
    assert machine.hw_level(2) == 1
    led.show("idle")
    assert machine.hw_level(2) == 0 and led.lit()


def test_watchdog(monkeypatch):
    made = []

    class WDT:
        def __init__(self, id=0, timeout=5000):
            self.timeout = timeout
            self.fed = 0
            made.append(self)

        def feed(self):
            self.fed += 1

    monkeypatch.setattr(machine, "WDT", WDT)
    w = Watchdog(5000)
    w.feed()
    w.feed()
    assert w.enabled() and made[0].timeout == 5000 and made[0].fed == 2
    off = Watchdog(0)
    off.feed()
    assert not off.enabled() and len(made) == 1


def test_watchdog_with_fake_machine():
    w = Watchdog(2000)
    w.feed()
    assert w.enabled()
