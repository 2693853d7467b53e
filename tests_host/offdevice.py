"""Helpers the tests need and the charger does not: kept here, off the device, so that they take
neither the ESP32's flash (bytecode) nor its heap (function objects). Each works on the
firmware's own objects and constants, so it stays the inverse or the view of what the firmware
does."""
from firmware import pilot


def amps_for(duty_u16):
    """Deci-amps a vehicle reads from a duty (the inverse of firmware/pilot.py `duty_for`); 0
    when it offers nothing.

    Valid duties are 10 .. 96 %; 3 .. 7 % is digital communication, everything else no offer.
    """
    if duty_u16 < pilot._DUTY_10PCT - 1 or duty_u16 >= pilot.DUTY_FULL:
        return 0
    pm = duty_u16 * 10000 // 65535  # duty in 0.01 %
    if pm < 1000 - 1:
        return 0
    if pm <= 8500:
        da = (pm * 6 + 50) // 100
        return pilot.MIN_DA if da < pilot.MIN_DA else da
    if pm <= 9600:
        return (pm - 6400) * 25 // 100
    return 0


def history(keeper, limit=10):
    """The last `limit` sessions a SessionKeeper (firmware/session.py) closed, newest last."""
    out = []
    for rec in keeper._closing():
        out.append({"n": rec.get("n"), "tag": rec.get("tag"), "reason": rec.get("reason"), "wh": rec.get("wh"),
                    "incomplete": rec.get("incomplete", False), "group": rec.get("g"),
                    "tariff": rec.get("tf"), "cost": rec.get("cost")})
        if len(out) > limit:
            out.pop(0)
    return out
