"""tools/build.py (mpy-cross build, size report, files.json), manifest.py (frozen firmware) and
package.json (mip), checked against the tree so none of them can drift from it."""
import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOOLS = os.path.join(ROOT, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import build  # noqa: E402

BUILD = os.path.join(TOOLS, "build.py")


def run_cli(*args):
    return subprocess.run([sys.executable, BUILD] + list(args), capture_output=True, text=True, timeout=120)


def tree_modules():
    """Every .py under firmware/ and drivers/, found without build.py's help."""
    out = set()
    for top in ("firmware", "drivers"):
        for d, dirs, files in os.walk(os.path.join(ROOT, top)):
            dirs[:] = [x for x in dirs if x != "__pycache__"]
            out |= {os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/") for f in files if f.endswith(".py")}
    return out


def expected_built():
    names = {m[:-3] + ".mpy" for m in tree_modules()} | {"boot.py", "main.py"}
    boards = os.path.join(ROOT, "drivers", "boards")
    names |= {"drivers/boards/" + f for f in os.listdir(boards) if f.endswith(".json")}
    return names


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    return build.build("xtensawin", out, quiet=True)


def test_build_mirrors_the_tree_and_lists_every_file(built):
    d = built["dir"]
    assert os.path.basename(d) == "xtensawin"
    assert set(built["files"]) == expected_built()
    on_disk = set()
    for dirpath, _dirs, files in os.walk(d):
        on_disk |= {os.path.relpath(os.path.join(dirpath, f), d).replace(os.sep, "/") for f in files}
    assert on_disk == expected_built() | {"files.json"}
    with open(os.path.join(d, "files.json")) as f:
        manifest = json.load(f)
    assert manifest["arch"] == "xtensawin"
    assert set(manifest["files"]) == expected_built()
    for name, info in manifest["files"].items():
        with open(os.path.join(d, name), "rb") as f:
            data = f.read()
        assert info == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, name
        assert info["bytes"] == built["files"][name]["bytes"]
    assert manifest["total"] == sum(i["bytes"] for i in manifest["files"].values()) == built["total"]


def test_entry_points_and_board_profiles_are_copied_as_they_are(built):
    for name in ["boot.py", "main.py"] + [n for n in built["files"] if n.endswith(".json")]:
        with open(os.path.join(ROOT, name), "rb") as a, open(os.path.join(built["dir"], name), "rb") as b:
            assert a.read() == b.read(), name


def test_modules_are_mpy_with_relative_source_names(built):
    with open(os.path.join(built["dir"], "firmware", "ocpp", "rpc.mpy"), "rb") as f:
        data = f.read()
    assert data[:2] == b"M\x06"  # .mpy version 6 (MicroPython 1.20 and later)
    assert b"firmware/ocpp/rpc.py" in data
    assert ROOT.encode() not in data  # no absolute path: the same bytes on every machine


def test_build_is_deterministic_and_clears_only_its_arch(tmp_path, built):
    stale = tmp_path / "xtensawin" / "firmware" / "removed_module.mpy"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    other = tmp_path / "sim" / "keep.txt"  # build/sim, build/typings belong to other tools
    other.parent.mkdir()
    other.write_text("keep")
    again = build.build("xtensawin", str(tmp_path), quiet=True)
    assert not stale.exists()
    assert other.read_text() == "keep"
    assert {k: v["sha256"] for k, v in again["files"].items()} == {k: v["sha256"] for k, v in built["files"].items()}


def test_compile_error_names_the_file_and_leaves_no_half_build(tmp_path, monkeypatch, capsys):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("boot.py", "main.py", "firmware", "drivers"):
        src = os.path.join(ROOT, name)
        if os.path.isdir(src):
            shutil.copytree(src, str(tree / name), ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, str(tree / name))
    (tree / "firmware" / "broken.py").write_text("def f(:\n    pass\n")
    monkeypatch.setattr(build, "ROOT", str(tree))
    out = tmp_path / "out"
    assert build.main(["--arch", "x64", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "firmware/broken.py" in err and "SyntaxError" in err
    assert not (out / "x64").exists()


def test_cli_size_report(tmp_path):
    p = run_cli("--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for arch in ("xtensawin", "x64"):
        assert (tmp_path / arch / "files.json").exists()
    # one line per file with source and built bytes
    row = [ln for ln in lines if ln.split()[:1] == ["firmware/ocpp/rpc.mpy"]]
    assert len(row) == 2  # one per arch
    src = os.path.getsize(os.path.join(ROOT, "firmware", "ocpp", "rpc.py"))
    assert int(row[0].split()[1]) == src
    assert any(ln.strip().startswith("total firmware/ocpp/") for ln in lines)
    assert any(ln.strip().startswith("total drivers/boards/") for ln in lines)
    totals = {}
    for arch in ("xtensawin", "x64"):
        with open(tmp_path / arch / "files.json") as f:
            totals[arch] = json.load(f)["total"]
    assert lines[-1].startswith("total: xtensawin %d bytes, x64 %d bytes" % (totals["xtensawin"], totals["x64"]))


@pytest.mark.parametrize("args, words", [
    (["--arch", "arm"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_arguments(args, words):
    p = run_cli(*args)
    assert p.returncode == 2
    assert words in p.stderr


def test_cli_out_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    p = run_cli("--out", str(f))
    assert p.returncode == 2 and "not a directory" in p.stderr


# --- manifest.py: the MicroPython way to freeze the firmware ---------------------------------

def exec_manifest():
    calls = []

    class Options:
        def __getattr__(self, name):
            return None

    env = {
        "include": lambda path, **kw: calls.append(("include", path, kw)),
        "package": lambda path, files=None, base_path=".", opt=None: calls.append(("package", path, dict(files=files, base_path=base_path))),
        "module": lambda path, base_path=".", opt=None: calls.append(("module", path, dict(base_path=base_path))),
        "require": lambda name, **kw: calls.append(("require", name, kw)),
        "metadata": lambda **kw: calls.append(("metadata", None, kw)),
        "options": Options(),
    }
    with open(os.path.join(ROOT, "manifest.py")) as f:
        exec(compile(f.read(), "manifest.py", "exec"), env)
    return calls


def test_manifest_keeps_the_port_manifest_and_freezes_every_module():
    calls = exec_manifest()
    assert calls[0] == ("include", "$(PORT_DIR)/boards/manifest.py", {})
    covered = set()
    for kind, path, kw in calls:
        if kind == "package":
            base = os.path.normpath(os.path.join(ROOT, kw["base_path"], path))
            for d, _dirs, files in os.walk(base):
                for f in files:
                    if f.endswith(".py") and (kw["files"] is None or f in kw["files"]):
                        covered.add(os.path.relpath(os.path.join(d, f), ROOT).replace(os.sep, "/"))
        elif kind == "module":
            covered.add(os.path.relpath(os.path.join(ROOT, kw["base_path"], path), ROOT).replace(os.sep, "/"))
    missing = tree_modules() - covered
    assert not missing, "manifest.py does not freeze %s" % sorted(missing)
    # the ESP32 port runs these only from the filesystem
    assert "boot.py" not in covered and "main.py" not in covered


# --- package.json: mip ----------------------------------------------------------------------

def test_package_json_lists_exactly_the_tree():
    with open(os.path.join(ROOT, "package.json")) as f:
        pkg = json.load(f)
    want = build.package_manifest()
    listed = [dest for dest, _src in pkg["urls"]]
    hint = "package.json is out of date: run python3 tools/build.py --package"
    assert sorted(listed) == sorted(u[0] for u in want["urls"]), hint
    assert set(listed) == tree_modules() | {"boot.py", "main.py"} | {
        "drivers/boards/" + f for f in os.listdir(os.path.join(ROOT, "drivers", "boards")) if f.endswith(".json")}
    assert pkg == want, hint
    with open(os.path.join(ROOT, "firmware", "ocpp", "chargepoint.py")) as f:
        assert 'VERSION = "%s"' % pkg["version"] in f.read()


def test_mip_installs_the_tree_from_package_json(tmp_path):
    """mpremote's own mip code, with a transport that writes into a directory: every device file
    lands at its place with its content (relative URLs resolved against package.json)."""
    mip = pytest.importorskip("mpremote.mip")
    board = tmp_path / "board"
    board.mkdir()

    def local(path):
        return board / path.lstrip("/")

    class Transport:
        def fs_exists(self, path):
            return local(path).exists()

        def fs_mkdir(self, path):
            local(path).mkdir()

        def fs_writefile(self, path, data, progress_callback=None):
            local(path).write_bytes(data)

    mip._install_json(Transport(), os.path.join(ROOT, "package.json"), mip._PACKAGE_INDEX, "/", None, False)
    got = {os.path.relpath(os.path.join(d, f), board).replace(os.sep, "/")
           for d, _dirs, files in os.walk(board) for f in files}
    assert got == set(build.device_files())
    for name in got:
        assert (board / name).read_bytes() == (open(os.path.join(ROOT, name), "rb").read()), name
