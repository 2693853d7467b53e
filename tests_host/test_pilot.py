"""Pilot math: bands, diode check, amps <-> duty, proximity."""
import pytest
from hypothesis import given, strategies as st

from firmware import pilot
from firmware.pilot import A, B, C, D, E, F
from offdevice import amps_for


@pytest.mark.parametrize(
    "mv,state",
    [
        (12000, A), (11400, A), (12600, A),
        (9000, B), (8360, B), (9560, B),
        (6000, C), (5480, C), (6490, C),
        (3000, D), (2620, D), (3250, D),
        (0, E), (-1000, E), (1000, E),
        (-12000, F), (-11400, F), (-12600, F),
    ],
)
def test_bands(mv, state):
    assert pilot.classify(mv) == state


@pytest.mark.parametrize("mv", [13000, 11399, 10000, 8359, 7000, 5479, 4000, 2619, 1001, -1001, -5000, -11399, -12601])
def test_between_bands_is_no_state(mv):
    assert pilot.classify(mv) is None


def test_diode():
    assert pilot.diode_ok(-12000)
    assert not pilot.diode_ok(-9000)  # missing diode: the car's resistor loads the negative half
    assert not pilot.diode_ok(0)
    assert not pilot.diode_ok(-13000)


@pytest.mark.parametrize(
    "amps,pct",
    [(6, 10.0), (10, 16.67), (13, 21.67), (16, 26.67), (20, 33.33), (32, 53.33), (40, 66.67), (51, 85.0), (60, 88.0), (80, 96.0)],
)
def test_duty_for_amps(amps, pct):
    d = pilot.duty_for(amps * 10)
    assert abs(d * 100 / 65535 - pct) < 0.01
    assert amps_for(d) == pytest.approx(amps * 10, abs=1)


def test_duty_edges():
    assert pilot.duty_for(59) == pilot.DUTY_FULL  # below 6 A: no PWM at all
    assert pilot.duty_for(0) == pilot.DUTY_FULL
    assert pilot.duty_for(60) * 100 / 65535 >= 10.0  # 6 A never rounds below 10 %
    assert amps_for(pilot.duty_for(60)) == 60
    assert pilot.duty_for(520) == pilot.duty_for(510)  # the 51..52.5 A gap clamps to 51 A
    assert pilot.duty_for(1000) == pilot.duty_for(800)  # above 80 A clamps to 80 A
    assert amps_for(pilot.DUTY_FULL) == 0
    assert amps_for(3277) == 0  # 5 %: digital communication, no current


@given(st.integers(min_value=0, max_value=1000))
def test_duty_never_offers_more_never_5pct(da):
    d = pilot.duty_for(da)
    if da < 60:
        assert d == pilot.DUTY_FULL
        return
    pct = d * 100 / 65535
    assert 10.0 <= pct <= 96.0
    assert not 3.0 <= pct <= 7.0
    offered = amps_for(d)
    assert 60 <= offered <= max(60, min(da, 800))


@pytest.mark.parametrize(
    "ohms,amps",
    [(1500, 13), (2200, 13), (1000, 13), (999, 20), (680, 20), (330, 20), (329, 32), (220, 32), (150, 32),
     (149, 63), (100, 63), (75, 63)],
)
def test_cable(ohms, amps):
    assert pilot.cable_amps(ohms, 3) == amps


def test_cable_single_phase_and_invalid():
    assert pilot.cable_amps(100, 1) == 70
    assert pilot.cable_amps(None) is None
    assert pilot.cable_amps(50) is None
    assert pilot.cable_amps(3000) is None
