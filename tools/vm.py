#!/usr/bin/env python3
"""Build the virtual ESP32: a 32-bit unix MicroPython with the firmware frozen in.

    python3 tools/vm.py            # build if stale, print the interpreter's path
    python3 tools/vm.py --esp32 MICROPYTHON_DIR [--board ESP32_GENERIC]
                                   # the frozen ESP32 image (needs ESP-IDF: not on this machine)
    python3 tools/vm.py --frozen-size
                                   # the bytes manifest.py adds to an image's frozen data

The virtual ESP32 is what the simulator, the scenario tests and the benchmark run by default. It
is built from the pinned MicroPython release in third_party/ (see third_party/README.md) as the
ESP32 port is: 32-bit pointers, single-precision floats, and `manifest.py` frozen into the image
with what a stock ESP32 image freezes (asyncio, ssl, umqtt). tests_host/manifest.py adds the
virtual board's own parts (the fake `machine`, the simulated world, the harness), frozen too, so
that only objects count against `-X heapsize`: on the board the bytecode is in flash, and the
module objects (classes, functions, dictionaries) are in RAM, which the virtual ESP32 counts.

Everything lives under build/vm/ (source tree, object files, `micropython-esp32`, `mpy-cross`).
The first build takes about a minute on 2 cores; a later one only re-freezes what changed
(seconds), and none runs when the frozen files, the source and the flags are as last time.
Needs gcc with 32-bit support (Debian: gcc-multilib).

From Python: `interpreter()` builds when stale and returns the binary's path.

--esp32 runs the same pinned freeze for the real chip: `make -C ports/esp32 BOARD=... \
FROZEN_MANIFEST=<repo>/manifest.py` in a full MicroPython v1.28.0 checkout with ESP-IDF sourced
(the trimmed source here has no ports/esp32, and ESP-IDF cannot be installed on this machine).
The image is ports/esp32/build-BOARD/firmware.bin; write it with tools/flash.py.

--frozen-size freezes the port's manifest alone and then with `manifest.py`, the bytecode compiled
for xtensawin (the ESP32's native code included), compiles each frozen_content.c for 32 bits, and
prints the difference of their data (.rodata and .data: bytecode, qstr strings, constant tables,
the raw-code structures with 4-byte pointers, as on the chip). That is what the firmware takes of
the image's flash; it is more than the sum of the .mpy files (tools/build.py), which pack the
same code tighter.

Exit status: 0 built (the path is printed); 1 the build failed (the compiler's last lines are
printed); 2 bad arguments.
"""
import argparse
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "third_party", "micropython-1.28.0-unix-src.tar.xz")
SOURCE_SHA256 = "5689671f48b630edaa31cc47586c5a2a787eb1e03e83e4aa0ad968b637b1599b"
VM = os.path.join(ROOT, "build", "vm")
SRC = os.path.join(VM, "micropython")
BINARY = os.path.join(VM, "micropython-esp32")
MPY_CROSS = os.path.join(SRC, "mpy-cross", "build", "mpy-cross")
MANIFEST = os.path.join(ROOT, "tests_host", "manifest.py")
# The CPU model (third_party/vesp/README.md): a patch to the extracted source (counts in the
# interpreter, the heap, string building, json, an asyncio step hook) and the `vesp` module.
VESP_PATCH = os.path.join(ROOT, "third_party", "vesp", "vesp.patch")
VESP_MODULES = os.path.join(ROOT, "third_party", "vesp", "module")
# What a stock ESP32 image freezes besides the port's own drivers: ports/esp32/boards/manifest.py.
PORT_MANIFEST = """\
include("$(MPY_DIR)/extmod/asyncio")
require("bundle-networking")
require("umqtt.simple")
require("umqtt.robust")
"""
# The ESP32 port's numbers: 32-bit, single-precision floats; -O2 for speed on the host. No btree, ffi, readline: the ESP32
# image has none of them either (and they would need 32-bit libraries on the host).
MAKE_ARGS = [
    "VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0", "MICROPY_USE_READLINE=0",
    "BUILD=build-esp32", "PROG=micropython-esp32", "COPT=-O2 -DNDEBUG -fdata-sections -ffunction-sections",
    "CFLAGS_EXTRA=-m32 -msse2 -mfpmath=sse -fno-pie -DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT",
    "LDFLAGS_EXTRA=-m32 -no-pie", "MICROPY_PY_THREAD=0",
    # The CPU model's module; frozen code compiled for this host's native emitter, so that
    # @micropython.native / viper functions run as native code here too (on the chip: xtensawin).
    "USER_C_MODULES=" + VESP_MODULES, "MPY_CROSS_FLAGS=-march=x86",
]
_CALL = re.compile(r'^(include|module|package)\("([^"]+)"(?:,\s*base_path="([^"]+)")?\)', re.M)


def frozen_inputs(manifest=MANIFEST):
    """Every file the manifest freezes (and the manifests themselves), read from its module(),
    package() and include() lines; the port's own manifest ($(...) paths) is the pinned source's."""
    out = [manifest]
    here = os.path.dirname(manifest)
    with open(manifest) as f:
        text = f.read()
    for kind, name, base in _CALL.findall(text):
        if name.startswith("$("):
            continue
        path = os.path.normpath(os.path.join(here, base or "", name))
        if kind == "include":
            out += frozen_inputs(path)
        elif kind == "module":
            out.append(path)
        else:
            for top, dirs, files in os.walk(path):
                dirs[:] = sorted(x for x in dirs if x != "__pycache__")
                out += [os.path.join(top, f) for f in sorted(files) if f.endswith(".py")]
    return out


def vesp_inputs():
    """The CPU model's patch and module sources (part of the build's digest)."""
    out = [VESP_PATCH]
    for top, dirs, files in os.walk(VESP_MODULES):
        dirs.sort()
        out += [os.path.join(top, f) for f in sorted(files)]
    return out


class VMError(Exception):
    """The build failed or cannot run here (exit status 1)."""


def _inputs_digest():
    h = hashlib.sha256(SOURCE_SHA256.encode() + repr(MAKE_ARGS).encode() + PORT_MANIFEST.encode())
    for p in frozen_inputs() + vesp_inputs():
        h.update(os.path.relpath(p, ROOT).encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _run(cmd, cwd):
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise VMError("%s failed:\n%s" % (" ".join(cmd[:3]), tail))


def _extract():
    stamp = os.path.join(VM, ".source")
    with open(VESP_PATCH, "rb") as f:
        want = SOURCE_SHA256 + " " + hashlib.sha256(f.read()).hexdigest()
    if os.path.exists(stamp) and open(stamp).read() == want:
        return
    with open(SOURCE, "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != SOURCE_SHA256:
            raise VMError("%s is not the pinned release (sha256 differs)" % SOURCE)
    shutil.rmtree(SRC, ignore_errors=True)
    with tarfile.open(SOURCE) as t:
        t.extractall(VM, filter="data")
    boards = os.path.join(SRC, "ports", "unix", "boards")
    os.makedirs(boards, exist_ok=True)
    with open(os.path.join(boards, "manifest.py"), "w") as f:
        f.write(PORT_MANIFEST)
    # The pinned tarball stays as released; the CPU model's counters are patched into the copy.
    _run(["patch", "-p1", "--forward", "--quiet", "-i", VESP_PATCH], SRC)
    shutil.rmtree(os.path.join(SRC, "ports", "unix", "build-esp32"), ignore_errors=True)
    with open(stamp, "w") as f:
        f.write(want)


def build(quiet=True):
    """Build when stale; returns the interpreter's path. Safe to call from parallel processes."""
    os.makedirs(VM, exist_ok=True)
    with open(os.path.join(VM, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        digest = _inputs_digest()
        stamp = os.path.join(VM, ".inputs")
        if os.path.exists(BINARY) and os.path.exists(stamp) and open(stamp).read() == digest:
            return BINARY
        if not quiet:
            print("building the virtual ESP32 (build/vm) ...", file=sys.stderr, flush=True)
        _extract()
        jobs = "-j%d" % max(2, os.cpu_count() or 2)
        if not os.path.exists(MPY_CROSS):
            _run(["make", "-C", "mpy-cross", jobs], SRC)
        _run(["make", "-C", "ports/unix", jobs, "FROZEN_MANIFEST=" + MANIFEST] + MAKE_ARGS, SRC)
        shutil.copyfile(os.path.join(SRC, "ports", "unix", "build-esp32", "micropython-esp32"), BINARY + ".new")
        os.chmod(BINARY + ".new", 0o755)
        os.replace(BINARY + ".new", BINARY)
        with open(stamp, "w") as f:
            f.write(digest)
        return BINARY


def interpreter():
    return build()


def _frozen_data(manifest, build_dir):
    """Bytes of .rodata and .data in the frozen_content.o of `manifest` (see --frozen-size)."""
    obj = os.path.join(build_dir, "frozen_content.o")
    _run(["make", "-C", "ports/unix", "-j%d" % max(2, os.cpu_count() or 2)] + MAKE_ARGS[:1] + [
        "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0", "MICROPY_USE_READLINE=0", "MICROPY_PY_THREAD=0",
        "BUILD=" + build_dir, "COPT=-Os -DNDEBUG", "LDFLAGS_EXTRA=-m32 -no-pie",
        "CFLAGS_EXTRA=-m32 -fno-pie -DMICROPY_FLOAT_IMPL=MICROPY_FLOAT_IMPL_FLOAT",
        "FROZEN_MANIFEST=" + manifest, "MPY_CROSS_FLAGS=-march=xtensawin", obj], SRC)
    out = subprocess.run(["size", "-A", obj], capture_output=True, text=True, check=True).stdout
    return sum(int(f[1]) for f in (line.split() for line in out.splitlines())
               if len(f) == 3 and (f[0].startswith(".rodata") or f[0].startswith(".data")))


def frozen_size():
    """What manifest.py adds to the frozen data of an image: {"port": B, "with_firmware": B, "firmware": B}."""
    build(quiet=True)  # the source tree, extracted and patched
    port = os.path.join(VM, "port-manifest.py")
    with open(port, "w") as f:
        f.write('include("$(PORT_DIR)/boards/manifest.py")\n')
    a = _frozen_data(port, os.path.join(VM, "build-frozen-port"))
    b = _frozen_data(os.path.join(ROOT, "manifest.py"), os.path.join(VM, "build-frozen-firmware"))
    return {"port": a, "with_firmware": b, "firmware": b - a}


def esp32_command(micropython_dir, board):
    return ["make", "-C", os.path.join(micropython_dir, "ports", "esp32"), "BOARD=" + board,
            "FROZEN_MANIFEST=" + os.path.join(ROOT, "manifest.py")]


def main(argv):
    p = argparse.ArgumentParser(prog="tools/vm.py", description="Build the virtual ESP32 (or the ESP32 image).")
    p.add_argument("--esp32", metavar="MICROPYTHON_DIR", help="a full MicroPython v1.28.0 checkout, ESP-IDF sourced")
    p.add_argument("--board", default="ESP32_GENERIC")
    p.add_argument("--frozen-size", action="store_true", help="the bytes manifest.py adds to an image's frozen data")
    a = p.parse_args(argv)
    try:
        if a.frozen_size:
            r = frozen_size()
            print("frozen data: port manifest %d B, with manifest.py %d B: the firmware %d B" %
                  (r["port"], r["with_firmware"], r["firmware"]))
            return 0
        if a.esp32:
            if not os.path.isdir(os.path.join(a.esp32, "ports", "esp32")):
                p.error("--esp32 %s: no ports/esp32 there (the trimmed source in third_party/ has none)" % a.esp32)
            if not os.environ.get("IDF_PATH"):
                raise VMError("ESP-IDF is not set up (IDF_PATH is empty): source esp-idf/export.sh first")
            cmd = esp32_command(a.esp32, a.board)
            print(" ".join(cmd), flush=True)
            _run(cmd, a.esp32)
            print(os.path.join(a.esp32, "ports", "esp32", "build-" + a.board, "firmware.bin"))
            return 0
        print(build(quiet=False))
        return 0
    except VMError as e:
        print("vm: %s" % e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
