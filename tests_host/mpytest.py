"""Run a pytest-style unit test module on MicroPython (the virtual ESP32: test_units_on_esp32.py).

    micropython-esp32 -X heapsize=4M tests_host/mpytest.py MODULE WORKDIR

MODULE is a test module's name in tests_host (test_pilot), or the path of one elsewhere.

The firmware, the fake `machine` and the world come from the frozen image (".frozen" goes before
tests_host on the path, and the repository root is not on it); the test module, rig.py,
flaky_fs.py and portable.py are imported from source; tests_host/mpy gives the small pytest and
hypothesis of mpy/pytest.py. Every test_* function of the module is collected in source order,
its parametrize marks expanded, its fixtures given (tmp_path and fastdir: a fresh directory under
WORKDIR; tmp_path_factory; bare_board; the module's own fixtures), and run. One line per test:

    PASS name | FAIL name (then the traceback) | SKIP name<TAB>reason | CPYTHON name<TAB>reason

then `SUMMARY module ran=N passed=P failed=F skipped=S cpython=C ms=T`. CPYTHON tests were not
run: @given tests (hypothesis) and those in NEEDS_CPYTHON below, each with its reason. A test
that reaches a CPython-only module without being listed fails, so nothing is left out unsaid.
Exit status 0 when nothing failed, 1 otherwise.
"""
import gc
import os
import sys
import time

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
sys.path[:] = [HERE + "/mpy", ".frozen", HERE]

import pytest  # noqa: E402  (mpy/pytest.py)

# Tests that need CPython, by module: the reason is printed on the test's CPYTHON line. Each
# uses a facility MicroPython has not (the CPython reference it compares against, tracemalloc's
# RAM figures, a subprocess of its own). An entry naming no test of the module is an error.
NEEDS_CPYTHON = {
    "test_dt": {
        "test_parse_agrees_with_cpython": "the reference is CPython's datetime",
        "test_iso_round_trip_and_agrees_with_cpython": "the reference is CPython's datetime and random.Random",
        "test_every_day_of_four_centuries": "the reference is CPython's datetime",
    },
    "test_tariff": {
        "test_every_zone_footer_agrees_with_zoneinfo": "the reference is CPython's zoneinfo and the tz database",
        "test_common_zones_2026_to_2037": "the reference is CPython's zoneinfo",
        "test_micropython_gives_the_same_numbers": "runs MicroPython and CPython in subprocesses",
    },
    "test_auth": {
        "test_lookup_ram_does_not_grow_with_the_list_cpython": "measures RAM with tracemalloc",
        "test_micropython_64k_heap_lookups_and_the_same_file": "runs MicroPython in a subprocess",
        "test_compiles_for_the_esp32": "runs mpy-cross in a subprocess",
    },
    "test_outbox": {
        "test_ten_thousand_messages_cpython_ram_constant": "measures RAM with tracemalloc in a subprocess",
        "test_ten_thousand_messages_micropython_64k_heap_ram_constant": "runs MicroPython in a subprocess",
    },
}

# CPython-only modules a unit test module imports at its top: on MicroPython each is a Missing,
# which lets the module import and raises NeedsCPython when a test uses it.
# (zoneinfo is left out: test_tariff.py imports it inside `try ... except Exception`, and finds
# it missing as on a CPython without a tz database.)
CPYTHON_MODULES = ("datetime", "tracemalloc", "subprocess", "pathlib", "tempfile", "calendar", "copy", "shutil")


class NeedsCPython(BaseException):
    """A test reached a CPython-only module (a BaseException: no `except Exception` in a test
    swallows it)."""


class Missing:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        return Missing(self._name + "." + attr)

    def __call__(self, *_a, **_kw):
        raise NeedsCPython(self._name)


class Path:
    """tmp_path on MicroPython: `/` and str() as pathlib.Path, and the few methods tests use.
    MicroPython's open() and os functions take only str: tests pass str(path) to them."""

    def __init__(self, p):
        self._p = p

    def __truediv__(self, name):
        return Path(self._p + "/" + str(name))

    def __str__(self):
        return self._p

    def __repr__(self):
        return "Path(%r)" % self._p

    def __eq__(self, other):
        return isinstance(other, Path) and other._p == self._p

    @property
    def parent(self):
        return Path(self._p.rsplit("/", 1)[0])

    @property
    def name(self):
        return self._p.rsplit("/", 1)[-1]

    def mkdir(self, parents=False, exist_ok=False):
        import portable

        if parents:
            portable.makedirs(self._p, exist_ok=exist_ok)
        elif not (exist_ok and portable.exists(self._p)):
            os.mkdir(self._p)

    def exists(self):
        import portable

        return portable.exists(self._p)

    def read_bytes(self):
        with open(self._p, "rb") as f:
            return f.read()

    def read_text(self):
        with open(self._p) as f:
            return f.read()

    def write_bytes(self, data):
        with open(self._p, "wb") as f:
            return f.write(data)

    def write_text(self, data):
        with open(self._p, "w") as f:
            return f.write(data)


class Dirs:
    """Fresh directories under WORKDIR, one per tmp_path/fastdir asked for; also tmp_path_factory."""

    def __init__(self, base):
        self.base = base
        self.n = 0

    def mktemp(self, name="t"):
        self.n += 1
        p = "%s/%s%d" % (self.base, name, self.n)
        os.mkdir(p)
        return Path(p)


def parse_defs(source):
    """{name: [parameter names]} of the module's top-level functions, and its test names in
    source order (MicroPython functions do not tell their parameter names)."""
    defs, tests = {}, []
    i = 0
    while True:
        i = source.find("def ", i)
        if i < 0:
            return defs, tests
        if i and source[i - 1] != "\n":
            i += 4
            continue
        j = source.find("(", i)
        name = source[i + 4:j].strip()
        depth, k = 1, j + 1
        while depth:
            c = source[k]
            depth += (c in "([{") - (c in ")]}")
            k += 1
        params, depth, cur = [], 0, ""
        for c in source[j + 1:k - 1] + ",":
            if c == "," and depth == 0:
                p = cur.split("=")[0].split(":")[0].strip()
                if p and not p.startswith("*"):
                    params.append(p)
                cur = ""
                continue
            depth += (c in "([{") - (c in ")]}")
            cur += c
        defs[name] = params
        if name.startswith("test_"):
            tests.append(name)
        i = k


def ident(value, name, i):
    """A parameter's part of the test id, as pytest makes it; one line, no tab (see main)."""
    if value is None or isinstance(value, (int, float, str, bool)):
        return str(value).replace("\n", "\\n").replace("\t", "\\t")
    return "%s%d" % (name, i)


def cases(fn, name):
    """[(id, {argument: value})] from the parametrize marks (the lowest decorator first)."""
    out = [("", {})]
    for m in pytest.MARKS.get(fn, ()):
        if m[0] != "parametrize":
            continue
        _k, names, values, ids = m
        grown = []
        for i, v in enumerate(values):
            vals = (v,) if len(names) == 1 else tuple(v)
            vid = ids[i] if ids else "-".join(ident(x, n, i) for x, n in zip(vals, names))
            for cid, args in out:
                a = dict(args)
                for n, x in zip(names, vals):
                    a[n] = x
                grown.append((cid + "-" + vid if cid else vid, a))
        out = grown
    return [(name + ("[%s]" % cid if cid else ""), args) for cid, args in out]


class Fixtures:
    def __init__(self, defs, dirs):
        self.defs = defs
        self.dirs = dirs
        self.module_values = {}
        self.module_teardowns = []

    def get(self, name, teardowns):
        if name in ("tmp_path", "fastdir"):
            return self.dirs.mktemp(name)
        if name == "tmp_path_factory":
            return self.dirs
        if name == "bare_board":
            return self._gen(_bare_board(), teardowns)
        if name not in pytest.FIXTURES:
            raise LookupError("fixture %r not found" % name)
        fn, scope = pytest.FIXTURES[name]
        if scope == "module" and name in self.module_values:
            return self.module_values[name]
        where = self.module_teardowns if scope == "module" else teardowns
        args = [self.get(p, where) for p in self.defs.get(name, [])]
        value = self._gen(fn(*args), where)
        if scope == "module":
            self.module_values[name] = value
        return value

    @staticmethod
    def _gen(value, teardowns):
        if type(value).__name__ == "generator":
            teardowns.append(value)
            return next(value)
        return value


def _bare_board():
    """conftest.py's bare_board: a board after a power cut, with no world wired to it."""
    import machine

    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


def finish(teardowns):
    while teardowns:
        g = teardowns.pop()
        try:
            next(g)
        except StopIteration:
            pass
        else:
            raise AssertionError("a fixture yielded twice")


def main(module, workdir):
    for name in CPYTHON_MODULES:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = Missing(name)
    path = HERE + "/" + module + ".py"
    if module.endswith(".py"):  # a module elsewhere (the runner's own test gives one)
        path = module
        where, module = module.rsplit("/", 1)
        module = module[:-3]
        sys.path.append(where)
    with open(path) as f:
        source = f.read()
    defs, tests = parse_defs(source)
    del source
    t0 = time.ticks_ms()
    mod = __import__(module)
    gc.collect()
    listed = NEEDS_CPYTHON.get(module, {})
    fx = Fixtures(defs, Dirs(workdir))
    count = {"ran": 0, "passed": 0, "failed": 0, "skipped": 0, "cpython": 0}
    for stale in listed:
        if stale not in tests:
            print("FAIL %s::%s\tlisted in NEEDS_CPYTHON but not a test of the module" % (module, stale))
            count["failed"] += 1
    for name in tests:
        fn = getattr(mod, name)
        marks = pytest.MARKS.get(fn, ())
        why = listed.get(name) or "".join(m[1] for m in marks if m[0] == "cpython")
        if why:
            for case, _a in cases(fn, name):
                print("CPYTHON %s::%s\t%s" % (module, case, why))
                count["cpython"] += 1
            continue
        skip = [m[2] for m in marks if m[0] == "skipif" and m[1]]
        for case, args in cases(fn, name):
            if skip:
                print("SKIP %s::%s\t%s" % (module, case, skip[0]))
                count["skipped"] += 1
                continue
            teardowns = []
            try:
                try:
                    call = [args[p] if p in args else fx.get(p, teardowns) for p in defs[name]]
                    fn(*call)
                finally:
                    finish(teardowns)
            except pytest.Skipped as e:
                print("SKIP %s::%s\t%s" % (module, case, e))
                count["skipped"] += 1
                continue
            except NeedsCPython as e:
                count["ran"] += 1
                count["failed"] += 1
                print("FAIL %s::%s\tuses CPython-only %s: make it portable or list it in NEEDS_CPYTHON"
                      % (module, case, e))
                continue
            except Exception as e:  # noqa: BLE001  (every failure is reported, then the next test runs)
                count["ran"] += 1
                count["failed"] += 1
                print("FAIL %s::%s" % (module, case))
                sys.print_exception(e)
                continue
            finally:
                gc.collect()
            count["ran"] += 1
            count["passed"] += 1
            print("PASS %s::%s" % (module, case))
    finish(fx.module_teardowns)
    print("SUMMARY %s ran=%d passed=%d failed=%d skipped=%d cpython=%d ms=%d" % (
        module, count["ran"], count["passed"], count["failed"], count["skipped"], count["cpython"],
        time.ticks_diff(time.ticks_ms(), t0)))
    return count["failed"] == 0


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1], sys.argv[2]) else 1)
