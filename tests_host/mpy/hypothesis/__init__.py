"""Hypothesis is CPython-only here: on MicroPython a @given test is reported by mpytest.py as
not run ("needs CPython: hypothesis property test"), never as passed. Strategies built at module
level (st.integers(...).map(...), a | b) only need to exist so that the test module imports."""
import pytest


def given(*_a, **_kw):
    return lambda fn: pytest._mark(fn, ("cpython", "hypothesis property test"))


def settings(*_a, **_kw):
    return lambda fn: fn


class HealthCheck:
    too_slow = "too_slow"
    function_scoped_fixture = "function_scoped_fixture"
    filter_too_much = "filter_too_much"
    data_too_large = "data_too_large"
