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
