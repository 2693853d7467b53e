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
    (the test command's progress: -q prints only dots)."""

    def __init__(self, config):
        self.config = config
        self.total = 0
        self.done = 0
        self.failed = 0
        self.order = {}
        import time

        self.t0 = time.monotonic()

    def pytest_collection_modifyitems(self, items):
        self.total = len(items)

    def pytest_runtest_logreport(self, report):
        if report.failed:
            self.failed += 1
        if report.when != "teardown":
            return
        self.done += 1
        if self.done == self.total or _next_file(self, report):
            self._line(report.nodeid.split("::")[0])

    def _line(self, name):
        import time

        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return
        s = int(time.monotonic() - self.t0)
        if getattr(tr._tw, "width_of_current_line", 0):  # after the dots of -q
            tr.write_line("")
        tr.write_line("  [%d/%d tests, %d failed, %dm%02ds] %s" % (self.done, self.total, self.failed, s // 60, s % 60, name))


def _next_file(progress, report):
    nxt = progress.order.get(report.nodeid)
    return nxt is not None and nxt != report.nodeid.split("::")[0]


def pytest_configure(config):
    if config.getoption("verbose") < 0 or os.environ.get("EVSE_PROGRESS"):
        config.pluginmanager.register(_Progress(config), "evse-progress")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    p = config.pluginmanager.get_plugin("evse-progress")
    if p is not None:
        # the file of the test after each one: a file's line is written once its last test ends
        p.order = {a.nodeid: b.nodeid.split("::")[0] for a, b in zip(items, items[1:])}
