"""File and time helpers the unit tests use on both runtimes: CPython (the real os.path, calendar,
copy) and MicroPython, whose os has no os.path and which has no calendar or copy (the unit tests
run on the virtual ESP32 too: tests_host/mpytest.py). On CPython these are the standard library's
own functions, so the tests behave there exactly as before; the MicroPython versions beside them
are checked against those in test_units_on_esp32.py."""
import json
import os

from pathx import exists as _exists

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."


def _getsize(path):
    return os.stat(str(path))[6]


def _join(a, *rest):
    out = str(a)
    for p in rest:
        p = str(p)
        out = p if p.startswith("/") else (out + p if out.endswith("/") or not out else out + "/" + p)
    return out


def _dirname(path):
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _makedirs(path, exist_ok=False):
    """os.makedirs: every missing directory on the way; an existing one is an error unless
    exist_ok."""
    path = str(path)
    if _exists(path):
        if exist_ok:
            return
        raise OSError(17, "exists: " + path)
    parent = path.rsplit("/", 1)[0]
    if parent and parent != path and not _exists(parent):
        _makedirs(parent)
    os.mkdir(path)


def read_bytes(path):
    with open(str(path), "rb") as f:
        return f.read()


def write_bytes(path, data):
    with open(str(path), "wb") as f:
        return f.write(data)


def _rmtree(path):
    """shutil.rmtree: the directory and everything in it."""
    path = str(path)
    for name in os.listdir(path):
        p = path + "/" + name
        if (os.stat(p)[0] & 0xF000) == 0x4000:  # a directory
            _rmtree(p)
        else:
            os.remove(p)
    os.rmdir(path)


def _timegm(t):
    """calendar.timegm for (year, month, day, hour, minute, second, ...) in the proleptic
    Gregorian calendar (days from civil: H. Hinnant's algorithm)."""
    y, m, d, hh, mm, ss = t[:6]
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    days = era * 146097 + doe - 719468
    return ((days * 24 + hh) * 60 + mm) * 60 + ss


def _deepcopy(data):
    """copy.deepcopy of JSON data (dicts, lists, strings, numbers, None): all the tests copy."""
    return json.loads(json.dumps(data))


try:
    from os.path import dirname, exists, getsize, join  # CPython
    from calendar import timegm
    from copy import deepcopy
    from shutil import rmtree

    def makedirs(path, exist_ok=False):
        os.makedirs(path, exist_ok=exist_ok)

    HERE = os.path.dirname(os.path.abspath(__file__))
except ImportError:  # MicroPython
    dirname, exists, getsize, join, makedirs, rmtree = _dirname, _exists, _getsize, _join, _makedirs, _rmtree
    timegm, deepcopy = _timegm, _deepcopy

ROOT = HERE.rsplit("/", 1)[0] if "/" in HERE else ".."
