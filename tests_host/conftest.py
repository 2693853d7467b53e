"""Test setup: the fakes stand in for MicroPython's board modules.

`tests_host/fakes` goes first on the path so `import machine` finds the fake, exactly as the
simulator does with MICROPYPATH; `tests_host` makes `world` importable; the repository root makes
`firmware` and `drivers` importable.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
for p in (ROOT, HERE, os.path.join(HERE, "fakes")):
    if p in sys.path:
        sys.path.remove(p)
    sys.path.insert(0, p)


import pathlib  # noqa: E402
import tempfile  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def fastdir(tmp_path):
    """A directory in RAM when the host has one (thousands of renames on a disk are slow), else
    tmp_path."""
    if not os.path.isdir("/dev/shm"):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
        yield pathlib.Path(d)


@pytest.fixture
def bare_board():
    """A board after a power cut, with no world wired to it, before and after the test."""
    import machine

    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


class _Progress:
    """One line per finished test file: tests done of the total, failures so far, elapsed time
    (the test command's progress: -q prints only dots). With pytest-xdist the workers collect
    and this, in the controller, learns the test ids from the first worker's collection."""

    def __init__(self, config):
        import time

        self.config = config
        self.left = {}  # test file -> tests of it not yet finished
        self.total = 0
        self.done = 0
        self.failed = 0
        self.t0 = time.monotonic()

    def _ids(self, ids):
        if self.total:
            return
        for nodeid in ids:
            f = nodeid.split("::")[0]
            self.left[f] = self.left.get(f, 0) + 1
        self.total = len(ids)

    def pytest_collection_modifyitems(self, items):
        self._ids([i.nodeid for i in items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        self._ids(ids)

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed += 1
        if report.when != "teardown":
            return
        self.done += 1
        f = report.nodeid.split("::")[0]
        self.left[f] = self.left.get(f, 1) - 1
        if self.left[f] == 0:
            self._line(f)

    def _line(self, name):
        import time

        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        if getattr(tr._tw, "width_of_current_line", 0):  # after the dots of -q
            tr.write_line("")
        s = int(time.monotonic() - self.t0)
        tr.write_line("  [%d/%d tests, %d failed, %dm%02ds] %s" % (self.done, self.total, self.failed, s // 60, s % 60, name))


def pytest_configure(config):
    # the controller's only (an xdist worker's lines would not be seen)
    if not hasattr(config, "workerinput") and (config.getoption("verbose") < 0 or os.environ.get("EVSE_PROGRESS")):
        config.pluginmanager.register(_Progress(config), "evse-progress")


# The files that run the simulator (minutes of CPU each) start first, so that the cheap ones fill
# the gaps beside them rather than leave one long file running alone at the end.
FIRST = ("test_ocpp_scenarios.py", "test_interop.py", "test_simboard.py", "test_scenarios.py", "test_benchmark.py", "test_ocpp_fuzz.py",
         "test_token_scenarios.py", "test_energy_scenarios.py", "test_meters_scenarios.py", "test_heap_budget.py",
         "test_wear.py",
         "test_units_on_esp32.py", "test_alloc.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.nodeid.split("::")[0].rsplit("/", 1)[-1]
        return FIRST.index(name) if name in FIRST else len(FIRST)

    items.sort(key=rank)  # stable: the order within a file stays
