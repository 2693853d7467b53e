"""The virtual ESP32's CPU model (tests_host/cpumodel.py): its calibration arithmetic, and that
its counts are deterministic (the same program gives the same counts, twice). Pass/fail never
depends on the wall clock."""
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cpumodel  # noqa: E402


def test_published_time_from_score():
    # run-perfbench.py: score = 1e6 * norm / time_us
    assert cpumodel.published_us(50, 204.19) == pytest.approx(244870.0, rel=1e-5)


def test_fit_reproduces_the_constants():
    a, b, c, ratios = cpumodel.fit(cpumodel.calibration_rows())
    assert abs(a * 1e4 - cpumodel.PS_PER_COP_160) < 5  # us per op -> ps per cop (1e6 / 100)
    assert round(100 * b / a) == cpumodel.W_ALLOC
    assert round(100 * c / a) == cpumodel.W_BYTE
    ratios = sorted(ratios)
    assert ratios[4] <= 1 <= ratios[5]  # the median is predicted exactly
    assert 0.3 < ratios[0] and ratios[-1] < 2  # what the docs state of single benchmarks


def test_fit_on_an_exact_model():
    # rows made from known weights are fitted back to them
    w = (0.5, 3.0, 0.25)
    rows = [(o, a, b, w[0] * o + w[1] * a + w[2] * b) for o, a, b in
            [(1000, 10, 100), (2000, 500, 10), (500, 50, 5000), (3000, 1, 1)]]
    a, b, c, ratios = cpumodel.fit(rows)
    assert (a, b, c) == pytest.approx(w, rel=1e-9)
    assert ratios == pytest.approx([1.0] * 4)


def test_cost_arithmetic():
    # 1000 ops = 100,000 cops = 641 us at 160 MHz, 427 us at 240; wait_us does not scale
    assert cpumodel.cops((1000, 0, 0, 0, 0)) == 100000
    assert cpumodel.us_at(100000, 0, 160) == 641
    assert cpumodel.us_at(100000, 0, 240) == 427
    assert cpumodel.us_at(100000, 23, 240) == 450
    assert cpumodel.cops((0, 2, 10, 5, 0)) == 2 * cpumodel.W_ALLOC + 15 * cpumodel.W_BYTE


class _FakeVesp:
    def __init__(self):
        self.next = (0, 0, 0, 0, 0)
        self.on = 1

    def take(self):
        t, self.next = self.next, (0, 0, 0, 0, 0)
        return t

    def enable(self, on):
        was, self.on = self.on, 1 if on else 0
        return was


def test_meter_labels_and_lateness():
    v = _FakeVesp()
    m = cpumodel.Meter(v, mhz=160)
    m.switch("tick")
    v.next = (20000, 0, 0, 0, 1000)  # 12.82 ms + 1 ms at 160 MHz
    m.switch(m.HARNESS)
    v.next = (5000, 0, 0, 0, 0)  # the harness's: not charged
    m.switch("tick")
    v.next = (1000, 0, 0, 0, 0)
    m.switch(m.HARNESS)
    assert m.stats["tick"][0] == 2
    assert m.late_ms(10) == 5  # 13,820 + 641 us in a 10 ms step: 4.461 ms late, whole ms up
    assert m.late_ms(10) == 0
    r = m.report(20)
    assert r["tick"]["worst_ms_160"] == 13.82
    assert r["tick"]["steps"] == 2
    assert "service" not in r


VM = os.path.join(os.path.dirname(HERE), "build", "vm", "micropython-esp32")
_PROG = """
import vesp
def work(n):
    d = {}
    for i in range(n):
        d[str(i)] = [i] * 3
    return len(repr(d))
vesp.take()
work(200)
print(vesp.take())
"""


def test_counts_are_deterministic():
    sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
    import vm

    binary = vm.interpreter()
    runs = [subprocess.run([binary, "-c", _PROG], capture_output=True, text=True, timeout=60).stdout
            for _ in range(2)]
    assert runs[0] == runs[1]
    ops, allocs, abytes, nbytes, wait = eval(runs[0])
    assert ops > 2000 and allocs > 200 and nbytes > 0 and wait == 0
