"""Pure control-pilot and proximity-pilot math (IEC 61851-1, SAE J1772).

Everything here is integer arithmetic on values the control loop reads every tick: pilot-line
millivolts, deci-amps (0.1 A) and 16-bit PWM duties, so the loop allocates nothing.
"""

# Vehicle states as the pilot shows them. Strings are interned constants: comparing them is cheap.
A = "A"  # no vehicle (+12 V)
B = "B"  # vehicle connected, not ready (+9 V)
C = "C"  # vehicle ready (+6 V)
D = "D"  # vehicle ready, ventilation required (+3 V)
E = "E"  # 0 V: pilot shorted to PE or EVSE without power
F = "F"  # -12 V: EVSE not available

# Positive-plateau bands in millivolts (SAE J1772 table). The gaps between bands are not a state:
# a reading there keeps the previous state, which gives the hysteresis.
_BANDS = (
    (A, 11400, 12600),
    (B, 8360, 9560),
    (C, 5480, 6490),
    (D, 2620, 3250),
    (E, -1000, 1000),
    (F, -12600, -11400),
)

# The negative plateau while PWM runs must be -12 V; anything else means a missing/shorted diode.
LOW_MIN_MV = -12600
LOW_MAX_MV = -11400

DUTY_FULL = 65535  # steady +12 V: no PWM (x1 states)
DUTY_OFF = 0  # steady -12 V: state F

MIN_DA = 60  # 6 A: the lowest offer the standard allows
MAX_DA = 800  # 80 A: the highest offer a duty cycle can express
_DUTY_10PCT = 6554  # 10 % rounded up: 6 A must never read as 5.99 A (or 5 % digital mode)
_RANGE1_MAX_DA = 510  # up to 51 A: duty = amps / 0.6
_GAP_MAX_DA = 525  # 51 .. 52.5 A is a gap in the norm: clamp to 51 A


def classify(high_mv):
    """Pilot state for a positive-plateau reading, or None when it falls between bands."""
    for state, lo, hi in _BANDS:
        if lo <= high_mv <= hi:
            return state
    return None


def diode_ok(low_mv):
    """True when the negative plateau is the -12 V the vehicle's diode guarantees."""
    return LOW_MIN_MV <= low_mv <= LOW_MAX_MV


def duty_for(da):
    """16-bit PWM duty that offers `da` deci-amps, or DUTY_FULL (no offer) below 6 A.

    6 .. 51 A: duty = A / 0.6 %; 51 .. 80 A: duty = A / 2.5 + 64 %. Duties are rounded down (the
    car may draw a little less, never more) except at the 10 % floor, which is rounded up so that
    6 A never decodes as less than 6 A and rounding can never produce the 5 % digital-mode duty.
    """
    if da < MIN_DA:
        return DUTY_FULL
    if da > MAX_DA:
        da = MAX_DA
    if da <= _RANGE1_MAX_DA:
        d = da * 65535 // 600
    elif da <= _GAP_MAX_DA:
        d = _RANGE1_MAX_DA * 65535 // 600
    else:
        d = (da + 1600) * 65535 // 2500
    if d < _DUTY_10PCT:
        d = _DUTY_10PCT
    return d




# Proximity resistor bands (Tinkerforge) -> cable rating in amps.
_PP_BANDS = (
    (1000, 2200, 13),
    (330, 1000, 20),
    (150, 330, 32),
    (75, 150, 63),
)


def cable_amps(ohms, phases=3):
    """Cable rating from the PP-PE resistance; None for no cable (open) or an invalid reading.

    100 ohms is 63 A on a 3-phase cable and 70 A on a 1-phase one. A reading on the border of
    two bands gets the lower rating (the bands are checked from the lowest rating up).
    """
    if ohms is None:
        return None
    for lo, hi, amps in _PP_BANDS:
        if lo <= ohms <= hi:
            if amps == 63 and phases == 1:
                return 70
            return amps
    return None
