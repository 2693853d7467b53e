"""The part of pytest the unit tests use, for MicroPython (tests_host/mpytest.py runs them on the
virtual ESP32). Only on MicroPython's path: CPython keeps the real pytest.

MicroPython functions take no attributes, so marks and fixtures are kept in tables keyed by the
function, which mpytest.py reads: FIXTURES (name -> function, scope), MARKS (function -> list of
("parametrize", names, values, ids) or ("skipif", condition, reason) or ("cpython", reason))."""
import re

FIXTURES = {}
MARKS = {}


class Skipped(Exception):
    """pytest.skip(): the test ends here and counts as skipped, with its reason."""


def skip(reason=""):
    raise Skipped(reason)


def _mark(fn, m):
    MARKS.setdefault(fn, []).append(m)
    return fn


def fixture(fn=None, scope="function", **_kw):
    def wrap(f):
        FIXTURES[f.__name__] = (f, scope)
        return f

    return wrap(fn) if fn is not None else wrap


class _Mark:
    def parametrize(self, names, values, ids=None):
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        return lambda fn: _mark(fn, ("parametrize", list(names), list(values), ids))

    def skipif(self, condition, reason=""):
        return lambda fn: _mark(fn, ("skipif", condition, reason))


mark = _Mark()


class ExceptionInfo:
    def __init__(self):
        self.type = None
        self.value = None


class raises:
    """`with pytest.raises(E, match=...) as e:`: the block must raise E (or one of a tuple of
    types); `match` is searched in str() of the exception, as pytest does."""

    def __init__(self, expected, match=None):
        self.expected = expected if isinstance(expected, tuple) else (expected,)
        self.match = match
        self.info = ExceptionInfo()

    def __enter__(self):
        return self.info

    def __exit__(self, typ, value, tb):
        if typ is None:
            raise AssertionError("DID NOT RAISE %r" % (self.expected,))
        if not any(issubclass(typ, e) for e in self.expected):
            return False  # not ours: it goes on up, as in pytest
        self.info.type = typ
        self.info.value = value
        if self.match is not None and not re.search(self.match, str(value)):
            raise AssertionError("Regex pattern did not match.\n Regex: %r\n Input: %r" % (self.match, str(value)))
        return True


class approx:
    """pytest.approx for numbers and flat sequences of numbers: the default tolerance is pytest's,
    rel 1e-6 of the expected value or abs 1e-12, whichever is larger; rel/abs given alone replace
    it (as in pytest, an abs alone means no relative tolerance)."""

    def __init__(self, expected, rel=None, abs=None):
        self.expected = expected
        self.rel = rel
        self.abs = abs

    def _tol(self, e):
        if self.rel is None and self.abs is None:
            return max(1e-6 * _abs(e), 1e-12)
        return max((self.rel or 0) * _abs(e), self.abs or 0)

    def _one(self, got, e):
        return got == e or _abs(got - e) <= self._tol(e)

    def __eq__(self, got):
        if isinstance(self.expected, (list, tuple)):
            return len(got) == len(self.expected) and all(self._one(g, e) for g, e in zip(got, self.expected))
        return self._one(got, self.expected)

    def __ne__(self, got):
        return not self.__eq__(got)

    def __repr__(self):
        return "approx(%r)" % (self.expected,)


_abs = abs
