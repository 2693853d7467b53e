"""Boot-time choice of the application slot (A/B firmware with rollback).

Layout on flash (`root` is "/app" on the board):
    root/a/, root/b/   one application each (firmware/, drivers/, ... as in the bundle) and a
                       `.version` file, written last by the installer: its presence marks the
                       slot complete
    root/slot.json     {"active": "a"|"b"|null, "trial": null|"a"|"b", "tries": 0|1,
                        "n": install number, "result": null|"ok"|"failed"}
                       active null: the application deployed the plain way, at the top of the
                       filesystem (no slot yet). Replaced atomically (temporary file + rename).

`select(root)` (boot.py, before anything of the application is imported) returns the directory
to put first on sys.path, or None for "the plain files at /":
  - a trial slot on its first boot after an install: counts the try durably, returns the trial;
  - a trial slot that already had its try and was never confirmed: rollback (result "failed",
    the updater reports InstallationFailed after the boot) and the active slot;
  - else the active slot. No /app, no slot.json: None, nothing written.
It never raises: any problem (unreadable or corrupt slot.json, a slot without its `.version`,
a failed write) falls back to the known-good slot, or None.

`confirm(root)` makes the running trial slot active (result "ok"); the station calls it (through
Updater.confirm) once the new version proved healthy. `running(root)` names the slot in use,
`current_version(root)` its version.

Self-contained (json and os only), so that a copy of this file can live at the top of the
filesystem as the boot loader's own module, independent of the slots it chooses between.
"""
import json
import os
import sys

# As in firmware/store.py: os.sync() commits LittleFS on the board; on a PC it would flush
# every disk of the machine.
_ON_DEVICE = sys.platform not in ("linux", "darwin", "win32", "cygwin")

SLOTS = ("a", "b")
STATE = "slot.json"
STATE_MAX = 1024  # bytes: slot.json holds five short entries (about 70 bytes)
MARKER = ".version"
MAX_TRIES = 1


class _OsFS:
    def open(self, path, mode):
        return open(path, mode)

    def rename(self, a, b):
        os.rename(a, b)

    def remove(self, path):
        os.remove(path)

    def exists(self, path):
        try:
            os.stat(path)
            return True
        except OSError:
            return False

    def sync(self):
        if _ON_DEVICE and hasattr(os, "sync"):
            os.sync()  # type: ignore[attr-defined]


_FS = _OsFS()


def read(root, fs=None):
    """slot.json as a dict, or None when there is none. Raises ValueError when it is corrupt."""
    fs = fs or _FS
    path = root + "/" + STATE
    if not fs.exists(path):
        return None
    f = fs.open(path, "rb")
    try:
        # The size first, as drivers/jsonfile.py does for every other file (this module may
        # import nothing of the application): a big file is refused unread, not a MemoryError.
        if f.seek(0, 2) > STATE_MAX:
            raise ValueError("bad slot state: more than %d bytes" % STATE_MAX)
        f.seek(0)
        s = json.loads(f.read())
    finally:
        f.close()
    if not isinstance(s, dict) or s.get("active") not in (None,) + SLOTS or s.get("trial") not in (None,) + SLOTS:
        raise ValueError("bad slot state")
    return s


def write(root, s, fs=None):
    fs = fs or _FS
    path = root + "/" + STATE
    f = fs.open(path + ".tmp", "w")
    try:
        f.write(json.dumps(s))
    finally:
        f.close()
    fs.rename(path + ".tmp", path)
    fs.sync()


def complete(root, name, fs=None):
    """True when slot `name` was installed to the end (its `.version` exists)."""
    fs = fs or _FS
    return name in SLOTS and fs.exists(root + "/" + name + "/" + MARKER)


def version(slot_dir, fs=None):
    """The application version installed in `slot_dir` (None: unknown, e.g. a plain deployment)."""
    fs = fs or _FS
    try:
        f = fs.open(slot_dir + "/" + MARKER, "r")
        try:
            return f.read().strip() or None
        finally:
            f.close()
    except Exception:
        return None


def _dir(root, name, fs):
    return root + "/" + name if name is not None and complete(root, name, fs) else None


def _fallback(root, fs):
    """Known-good when slot.json cannot be used: its active slot if it can be read, else the
    first complete slot, else None."""
    try:
        s = read(root, fs)
        if s is not None:
            return _dir(root, s.get("active"), fs)
    except Exception:
        pass
    try:
        for name in SLOTS:
            if complete(root, name, fs):
                return root + "/" + name
    except Exception:
        pass
    return None


def select(root="/app", fs=None):
    """The slot directory to put first on sys.path for this boot, or None (see module doc)."""
    fs = fs or _FS
    try:
        s = read(root, fs)
        if s is None:
            return None
        active, trial = s.get("active"), s.get("trial")
        if trial is not None:
            tries = s.get("tries", 0)
            if trial != active and complete(root, trial, fs) and type(tries) is int and tries < MAX_TRIES:
                s["tries"] = tries + 1
                write(root, s, fs)  # counted before the trial runs: a crash in it means rollback
                return root + "/" + trial
            s["trial"], s["tries"], s["result"] = None, 0, "failed"
            try:
                write(root, s, fs)
            except Exception:
                pass
        return _dir(root, active, fs)
    except Exception:
        return _fallback(root, fs)


def running(root="/app", fs=None):
    """The slot name this boot runs ("a", "b") or None (plain files), from slot.json."""
    try:
        s = read(root, fs)
    except Exception:
        return None
    if s is None:
        return None
    if s.get("trial") is not None and s.get("tries", 0) >= 1:
        return s["trial"]
    return s.get("active")


def current_version(root="/app", fs=None):
    """The version of the application this boot runs (BootNotification.firmwareVersion), or
    None for plain files (the caller then reports its built-in version)."""
    name = running(root, fs)
    return version(root + "/" + name, fs) if name is not None else None


def confirm(root="/app", fs=None):
    """Make the running trial slot the active one. Returns True when a trial was confirmed,
    False when there was nothing to confirm (no trial, or it has not booted yet)."""
    s = read(root, fs)
    if s is None or s.get("trial") is None or s.get("tries", 0) < 1:
        return False
    s["active"], s["trial"], s["tries"], s["result"] = s["trial"], None, 0, "ok"
    write(root, s, fs)
    return True
