"""The pure units on the virtual ESP32 as well as on CPython: one suite, both runtimes.

Each unit test module runs under tests_host/mpytest.py on the virtual ESP32 (tools/vm.py: 32-bit
MicroPython v1.28.0, single-precision floats, the firmware frozen in) with a 4 MB heap: the
tests' own data (thousands of records in the power-cut tests) needs far more than the board's
96 KB, which the scenario tests hold the firmware to. Every test must pass there; the tests that
need CPython are reported by the runner with their reason (@given property tests, and those in
mpytest.NEEDS_CPYTHON), and every test CPython's pytest collects must be accounted for.
Run with -s for the per-module figures.
"""
import calendar
import copy
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import pytest

import portable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import vm  # noqa: E402

RUNNER = os.path.join(HERE, "mpytest.py")
HEAP = 4 * 1024 * 1024
TIMEOUT = 300

# The units (safety and limits have no test module of their own: test_charger.py exercises them
# through the charger) and how many of their tests at least run on MicroPython: a drop means a
# test stopped running there (it went CPython-only, or the runner no longer collects it).
MIN_RAN = {
    "test_charger": 40,
    "test_pilot": 56,
    "test_metering": 9,
    "test_tariff": 186,
    "test_auth": 47,
    "test_dt": 64,
    "test_store": 13,
    "test_outbox": 17,
    "test_energy": 30,
}
LINE = re.compile(r"^(PASS|FAIL|SKIP|CPYTHON) ([^\t]+)(?:\t(.*))?$")
SUMMARY = re.compile(r"^SUMMARY (\S+) ran=(\d+) passed=(\d+) failed=(\d+) skipped=(\d+) cpython=(\d+) ms=(\d+)$")


def scratch():
    """A directory for a run's files: in RAM when the host has one (the power-cut tests write
    thousands of files)."""
    return tempfile.mkdtemp(prefix="mpytest.", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)


def run_on_esp32(module):
    """(exit status, stdout, stderr) of the runner on `module` in a scratch directory."""
    work = scratch()
    try:
        p = subprocess.run([vm.build(), "-X", "heapsize=%d" % HEAP, RUNNER, module, work], cwd=work,
                           env=dict(os.environ, MICROPYPATH=".frozen"), capture_output=True, text=True,
                           timeout=TIMEOUT)
        return p.returncode, p.stdout, p.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def collected_by_pytest(modules):
    """{module: number of tests} as CPython's pytest collects them."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
                       + [os.path.join(HERE, m + ".py") for m in modules], cwd=ROOT, capture_output=True,
                       text=True, timeout=TIMEOUT)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    counts = dict.fromkeys(modules, 0)
    for line in p.stdout.splitlines():
        m = re.match(r"^tests_host/(test_\w+)\.py::", line)
        if m:
            counts[m.group(1)] += 1
    return counts


def parse(out):
    lines = [LINE.match(x) for x in out.splitlines()]
    s = [SUMMARY.match(x) for x in out.splitlines() if x.startswith("SUMMARY ")]
    summary = None
    if len(s) == 1 and s[0]:
        keys = ("ran", "passed", "failed", "skipped", "cpython", "ms")
        summary = dict(zip(keys, (int(x) for x in s[0].groups()[1:])))
    return [m.groups() for m in lines if m], summary


@pytest.fixture(scope="module")
def runs():
    """Every unit module on the virtual ESP32, two at a time (the machine has two cores), and
    CPython's collection of the same modules beside them."""
    vm.build(quiet=False)  # once, before the threads ask for it
    with ThreadPoolExecutor(2) as pool:
        collected = pool.submit(collected_by_pytest, list(MIN_RAN))
        results = dict(zip(MIN_RAN, pool.map(run_on_esp32, MIN_RAN)))
        return results, collected.result()


@pytest.mark.parametrize("module", list(MIN_RAN))
def test_unit_module_passes_on_the_virtual_esp32(runs, module):
    results, collected = runs
    status, out, err = results[module]
    lines, summary = parse(out)
    failed = [x for x in lines if x[0] == "FAIL"]
    assert summary is not None, "no summary line (the runner crashed?):\n" + out[-3000:] + err[-3000:]
    assert not failed and summary["failed"] == 0 and status == 0, out[-6000:] + err[-2000:]
    counts = {k: sum(1 for x in lines if x[0] == k) for k in ("PASS", "SKIP", "CPYTHON")}
    assert (counts["PASS"], counts["SKIP"], counts["CPYTHON"]) == \
        (summary["passed"], summary["skipped"], summary["cpython"])
    assert all(x[2] for x in lines if x[0] in ("SKIP", "CPYTHON")), "a test left out without its reason"
    # every test CPython's pytest collects ran here or is listed as not run, with its reason
    assert summary["ran"] + summary["skipped"] + summary["cpython"] == collected[module]
    print("\n%s on the virtual ESP32: ran %d, passed %d, skipped %d, needs CPython %d (of %d), %.1f s"
          % (module, summary["ran"], summary["passed"], summary["skipped"], summary["cpython"],
             collected[module], summary["ms"] / 1000))
    for kind, name, why in lines:
        if kind in ("SKIP", "CPYTHON"):
            print("  %s %s: %s" % (kind, name, why))
    assert summary["ran"] >= MIN_RAN[module]


SAMPLE = '''
import datetime
import pytest
from hypothesis import given, strategies as st

EVENTS = []


@pytest.fixture
def opened(tmp_path):
    EVENTS.append("open")
    yield tmp_path / "x"
    EVENTS.append("close")


def test_passes(opened):
    assert str(opened).endswith("/x") and EVENTS == ["open"]


@pytest.mark.parametrize("a, b", [(1, 2), (2, 3)])
@pytest.mark.parametrize("c", [10])
def test_param(a, b, c):
    assert b == a + 1 and c == 10 and abs(0.1 + 0.2 - 0.3) < 1e-6 and 0.1 + 0.2 == pytest.approx(0.3)


def test_fails_an_assert():
    assert 1 == 2


def test_fails_when_nothing_raises():
    with pytest.raises(ValueError, match="x"):
        pass


def test_raises_and_matches():
    with pytest.raises(ValueError, match="^bad [0-9]+$") as e:
        raise ValueError("bad 42")
    assert str(e.value) == "bad 42"


def test_uses_datetime_unlisted():
    datetime.date(2026, 1, 1)


@given(st.integers())
def test_property(n):
    raise AssertionError("never runs on MicroPython")


def test_skips():
    pytest.skip("not today")
'''


def test_the_runner_reports_each_outcome(tmp_path):
    """The runner itself: a failure is a FAIL line and exit status 1; a test reaching a
    CPython-only module without being listed fails; a @given test is not run; fixtures tear down."""
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    status, out, err = run_on_esp32(str(tmp_path / "test_sample.py"))
    lines, summary = parse(out)
    got = {name.split("::")[1]: kind for kind, name, _why in lines}
    assert got == {
        "test_passes": "PASS", "test_param[10-1-2]": "PASS", "test_param[10-2-3]": "PASS",
        "test_fails_an_assert": "FAIL", "test_fails_when_nothing_raises": "FAIL",
        "test_raises_and_matches": "PASS", "test_uses_datetime_unlisted": "FAIL",
        "test_property": "CPYTHON", "test_skips": "SKIP",
    }, out + err
    assert "uses CPython-only datetime.date" in out and "DID NOT RAISE" in out
    assert summary == dict(summary, ran=7, passed=4, failed=3, skipped=1, cpython=1)
    assert status == 1


def test_portable_helpers_agree_with_the_standard_library(tmp_path):
    """portable.py's MicroPython versions against CPython's own functions."""
    rnd = random.Random(3)
    for _ in range(2000):
        t = (rnd.randint(1600, 2400), rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 23),
             rnd.randint(0, 59), rnd.randint(0, 59))
        assert portable._timegm(t) == calendar.timegm(t), t
    for t in ((2024, 2, 29, 0, 0, 0), (2100, 3, 1, 0, 0, 0), (2000, 12, 31, 23, 59, 59), (1970, 1, 1, 0, 0, 0)):
        assert portable._timegm(t) == calendar.timegm(t), t
    data = {"a": [1, {"b": None, "c": 0.5}], "d": "e"}
    c = portable._deepcopy(data)
    assert c == copy.deepcopy(data) and c["a"] is not data["a"] and c["a"][1] is not data["a"][1]
    d = str(tmp_path / "x" / "y")
    portable._makedirs(d)
    assert os.path.isdir(d) and portable._exists(d) and not portable._exists(d + "z")
    with pytest.raises(OSError):
        portable._makedirs(d)
    portable._makedirs(d, exist_ok=True)
    f = portable._join(d, "f.bin")
    assert f == os.path.join(d, "f.bin") and portable._dirname(f) == os.path.dirname(f)
    assert portable._join("a", "/b") == os.path.join("a", "/b") and portable._join("a/", "b") == os.path.join("a/", "b")
    portable.write_bytes(f, b"12345")
    assert portable._getsize(f) == 5 == os.path.getsize(f) and portable.read_bytes(f) == b"12345"
    portable._rmtree(str(tmp_path / "x"))
    assert not os.path.exists(str(tmp_path / "x"))
