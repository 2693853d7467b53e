#!/usr/bin/env python3
"""Build, sign and check application bundles for UpdateFirmware (docs/firmware-update.md).

    python3 tools/bundle.py keygen --out KEY.pem [--force]      # prints the public key (hex)
    python3 tools/bundle.py pubkey --key KEY.pem                 # the public key of KEY.pem
    python3 tools/bundle.py build --key KEY.pem --version V --out app.bundle [--base DIR] [PATH ...]
    python3 tools/bundle.py verify (--pub HEX | --key KEY.pem) app.bundle [--list]

build: PATHs are files or directories; each file goes into the bundle under its path relative
to --base (default: the current directory). Without PATHs: the compiled application in build/app
if it exists, else the sources boot.py, main.py, firmware/ and drivers/ of this repository.
__pycache__, *.pyc and hidden files are left out. The public key goes into the station's
settings; keep KEY.pem off the charge points.

verify runs the firmware's own check (firmware/ocpp/update.py, pure-Python Ed25519) and the
`cryptography` package's, and prints the version and the files.

Exit status: 0 done / valid, 1 the bundle is invalid, 2 bad arguments or input files.
"""
import argparse
import asyncio
import hashlib
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _venv  # noqa: E402

ROOT = _venv.ROOT
sys.path.insert(0, ROOT)

from firmware.ocpp import update  # noqa: E402

SOURCES = ("boot.py", "main.py", "firmware", "drivers")


class Bad(Exception):
    """Bad input: exit status 2."""


def _crypto():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return serialization, ed25519


def load_key(path):
    serialization, ed25519 = _crypto()
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise Bad("cannot read key %s: %s" % (path, e.strerror or e))
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as e:
        raise Bad("%s is not an unencrypted PEM private key: %s" % (path, e))
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise Bad("%s is not an Ed25519 key (make one with: bundle.py keygen)" % path)
    return key


def public_hex(key):
    serialization, _ = _crypto()
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def cmd_keygen(args):
    serialization, ed25519 = _crypto()
    if os.path.exists(args.out) and not args.force:
        raise Bad("%s exists; use --force to replace it" % args.out)
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    print(public_hex(key))
    print("private key written to %s (keep it off the charge points); the line above is the public key "
          "for the station's settings" % args.out, file=sys.stderr)
    return 0


def cmd_pubkey(args):
    print(public_hex(load_key(args.key)))
    return 0


def _skip(name):
    return name.startswith(".") or name == "__pycache__" or name.endswith(".pyc") or name.endswith("~")


def collect(paths, base):
    """[(arcname, filesystem path)] sorted by arcname; raises Bad."""
    base = os.path.abspath(base)
    out = {}

    def add(full):
        rel = os.path.relpath(full, base)
        if rel.startswith(".." + os.sep) or rel == ".." or os.path.isabs(rel):
            raise Bad("%s is outside the base directory %s (use --base)" % (full, base))
        arc = rel.replace(os.sep, "/")
        try:
            update.check_path(arc)
        except update.BundleError as e:
            raise Bad("%s: %s (letters, digits, . _ - / only; no hidden files)" % (full, e))
        if arc in out:
            raise Bad("%s given twice" % arc)
        out[arc] = full

    for p in paths:
        full = os.path.abspath(p)
        if os.path.isdir(full):
            for d, dirs, files in os.walk(full):
                dirs[:] = sorted(x for x in dirs if not _skip(x))
                for name in sorted(files):
                    if not _skip(name):
                        add(os.path.join(d, name))
        elif os.path.isfile(full):
            add(full)
        else:
            raise Bad("no such file or directory: %s" % p)
    if not out:
        raise Bad("nothing to bundle")
    if len(out) > update.MAX_FILES:
        raise Bad("%d files: a bundle holds at most %d" % (len(out), update.MAX_FILES))
    return sorted(out.items())


def default_inputs():
    app = os.path.join(ROOT, "build", "app")
    if os.path.isdir(app):
        return [app], app
    return [os.path.join(ROOT, s) for s in SOURCES], ROOT


def build_bundle(key, version, files, out):
    """Write the bundle; returns (size, sha256 hex of the whole file)."""
    try:
        update.check_version(version)
    except update.BundleError as e:
        raise Bad(str(e))
    lines = ["version %s\n" % version]
    for arc, full in files:
        h = hashlib.sha256()
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(65536), b""):
                h.update(block)
        lines.append("file %d %s %s\n" % (os.path.getsize(full), h.hexdigest(), arc))
    header = "".join(lines).encode()
    if len(header) > update.MAX_HEADER:
        raise Bad("header of %d bytes is over %d: fewer files or shorter paths" % (len(header), update.MAX_HEADER))
    whole = hashlib.sha256()
    tmp = out + ".tmp"
    try:
        _write(tmp, key, header, files, lines, whole)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, out)
    with open(out, "rb") as f:
        return os.path.getsize(out), hashlib.sha256(f.read()).hexdigest()


def _write(tmp, key, header, files, lines, whole):
    with open(tmp, "wb") as o:
        def put(data):
            whole.update(data)
            o.write(data)

        put(update.MAGIC + struct.pack(">HI", update.FORMAT, len(header)))
        put(header)
        for (arc, full), line in zip(files, lines[1:]):
            n = 0
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(65536), b""):
                    put(block)
                    n += len(block)
            if n != int(line.split()[1]):
                raise Bad("%s changed while it was bundled" % full)
        o.write(key.sign(whole.digest()))


def cmd_build(args):
    try:
        update.check_version(args.version)
    except update.BundleError as e:
        raise Bad(str(e))
    key = load_key(args.key)
    if args.paths:
        paths, base = args.paths, args.base or os.getcwd()
    else:
        paths, base = default_inputs()
        base = args.base or base
    files = collect(paths, base)
    names = set(a for a, _ in files)
    if not any(n in names for n in ("firmware/station.py", "firmware/station.mpy")):
        print("warning: no firmware/station.py or .mpy in the bundle", file=sys.stderr)
    for a in names:
        if a.endswith(".py") and a[:-3] + ".mpy" in names:
            print("warning: both %s and its .mpy are in the bundle" % a, file=sys.stderr)
    size, digest = build_bundle(key, args.version, files, args.out)
    print("%s: version %s, %d files, %d bytes, sha256 %s, public key %s"
          % (args.out, args.version, len(files), size, digest, public_hex(key)))
    return 0


def read_entries(path):
    with open(path, "rb") as f:
        pre = f.read(update.PREAMBLE)
        if len(pre) < update.PREAMBLE or pre[:8] != update.MAGIC:
            return None, []
        _, hlen = struct.unpack(">HI", pre[8:])
        text = f.read(min(hlen, update.MAX_HEADER)).decode("utf-8", "replace")
    lines = text.splitlines()
    return (lines[0][8:] if lines and lines[0].startswith("version ") else None), [
        ln.split(" ", 3) for ln in lines[1:] if ln.startswith("file ")]


def cmd_verify(args):
    if args.key:
        pub = public_hex(load_key(args.key))
    elif args.pub:
        pub = args.pub
    else:
        raise Bad("give --pub HEX or --key KEY.pem")
    try:
        pk = update.public_key_bytes(pub)
    except ValueError as e:
        raise Bad(str(e))
    if not os.path.isfile(args.bundle):
        raise Bad("no such file: %s" % args.bundle)
    problems = []
    try:
        version, nfiles, size = asyncio.run(update.scan(args.bundle, update.REAL, pk))
    except update.BundleError as e:
        problems.append("firmware check: %s" % e)
    # the same signature through OpenSSL
    _, ed25519 = _crypto()
    with open(args.bundle, "rb") as f:
        data = f.read()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(pk).verify(data[-64:], hashlib.sha256(data[:-64]).digest())
    except Exception:
        problems.append("cryptography: signature does not verify")
    if problems:
        for p in problems:
            print("INVALID %s: %s" % (args.bundle, p))
        return 1
    print("valid %s: version %s, %d files, %d bytes" % (args.bundle, version, nfiles, size))
    if args.list:
        for e in read_entries(args.bundle)[1]:
            print("  %8s  %s  %s" % (e[1], e[2][:16], e[3]))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="bundle.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("keygen", help="make a signing key; prints the public key")
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    p = sub.add_parser("pubkey", help="print the public key of a signing key")
    p.add_argument("--key", required=True)
    p = sub.add_parser("build", help="build and sign a bundle")
    p.add_argument("--key", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--base", help="paths in the bundle are relative to this (default: current directory)")
    p.add_argument("paths", nargs="*")
    p = sub.add_parser("verify", help="check a bundle's format, file hashes and signature")
    p.add_argument("bundle")
    p.add_argument("--pub", help="public key, 64 hex digits")
    p.add_argument("--key", help="or the signing key itself")
    p.add_argument("--list", action="store_true")
    args = ap.parse_args(argv)
    try:
        return {"keygen": cmd_keygen, "pubkey": cmd_pubkey, "build": cmd_build, "verify": cmd_verify}[args.cmd](args)
    except Bad as e:
        print("bundle.py: error: %s" % e, file=sys.stderr)
        return 2


if __name__ == "__main__":
    _venv.ensure()
    sys.exit(main())
