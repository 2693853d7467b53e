"""OCPP 1.6 Firmware Management: UpdateFirmware (signed application bundles, A/B slots with
rollback) and GetDiagnostics (log upload), with their status notifications.

Bundle (docs/firmware-update.md; built by tools/bundle.py):
    "EVBUNDLE" | format u16 BE (1) | header length H u32 BE | header (H bytes, UTF-8 lines)
    | the files' bytes, in header order | Ed25519 signature (64 bytes)
    header: "version <app version>\\n" then one "file <size> <sha256 hex> <path>\\n" per file.
    The signature is over SHA-256 of every byte before it. `scan()` checks all of it while
    streaming 1 KB at a time (two read handles: one on the header lines, one on the data), and
    with `target` also writes the files there.

Updater (one per charge point; `root` is "/app", shared with firmware/appslot.py):
    u = Updater("/app", fs, clock, public_key_hex, notify, reboot=machine_reset,
                can_install=lambda: not station.transaction_running(), epoch=wall_clock)
    u.request(location, retrieve_epoch, retries, retry_interval_s, now_epoch)  # UpdateFirmware.req
    await u.run()        # or: ms = await u.step() from the owner's own task
    u.confirm()          # the new version is healthy: make it permanent (-> Installed)
    u.status()           # TriggerMessage(FirmwareStatusNotification): "Idle" or the current one
  Statuses, in order: Downloading (each attempt), then Downloaded or, after the last attempt,
  DownloadFailed; a bundle that fails its signature or a file hash: Downloaded then
  InstallationFailed (never installed, not retried). Then, once `can_install()` is true (no
  transaction), Installing; the files go into the slot not in use, slot.json names it the trial,
  `reboot()` is called (again only when `can_install()`); after the reboot appslot.select() runs
  the trial once; Installed when the owner calls confirm(), InstallationFailed when the trial
  was not confirmed before the next boot (appslot rolled back).

  Durable state in root/update.json (store.write_json, atomic), every step one write:
    {"st": "wait", "loc", "at" (retrieve epoch s), "left" (attempts left), "iv" (s)}
    -> {"st": "ready", "ver"}      downloaded and verified (root/stage.bin)
    -> {"st": "inst", "slot", "n"} unpacking into root/<slot> (not referenced by slot.json)
    -> {"st": "boot", ...}         slot complete (.version written last); slot.json then gets
                                   trial=<slot>, n; the stage is removed; reboot
    -> removed                     after Installed / InstallationFailed / DownloadFailed.
  A power cut anywhere resumes from the last state written: a cut download starts again, a cut
  unpack is redone from the verified stage, a cut switch is completed. slot.json only ever names
  complete slots, so appslot.select() always boots a complete application.

Diagnostics:
    d = Diagnostics("/", fs, clock, notify, ["sessions.log", "log.txt"])
    name = d.request(location, retries, retry_interval_s, start_epoch, stop_epoch, now_epoch)
    await d.run()
  GetDiagnostics.conf carries `name` (None: no file to send, no fileName). The files that exist
  are sent as one body (a "==== path (N bytes) ====" line before each) by HTTP PUT to
  location + "/" + name (location used as it is when it has a query string); statuses
  Uploading (each attempt), then Uploaded or UploadFailed. Not kept across a reboot.

Time: epochs (seconds) come from the owner (arguments, or an `epoch()` callable returning None
while the wall clock is unknown); waits go through the injected async `sleep_ms`.
"""
import asyncio
import hashlib
import struct
from binascii import unhexlify

from firmware import appslot, store
from firmware.ocpp import http

# firmware/ocpp/ed25519.py is imported where a signature or a key is checked: a board without
# firmware_public_key (no Updater) that uploads diagnostics never needs it in RAM.

MAGIC = b"EVBUNDLE"
FORMAT = 1
PREAMBLE = 14
SIG_LEN = 64
MAX_HEADER = 16384
MAX_FILES = 512
MAX_PATH = 120
MAX_VERSION = 50  # BootNotification.firmwareVersion is CiString50
_PATH_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/"

IDLE = "Idle"
DOWNLOADING = "Downloading"
DOWNLOADED = "Downloaded"
DOWNLOAD_FAILED = "DownloadFailed"
INSTALLING = "Installing"
INSTALLED = "Installed"
INSTALLATION_FAILED = "InstallationFailed"
UPLOADING = "Uploading"
UPLOADED = "Uploaded"
UPLOAD_FAILED = "UploadFailed"

_MAX_WAIT_MS = 60000  # longest single wait: the wall clock may be set meanwhile


class BundleError(Exception):
    """The bundle is not a valid, correctly signed application bundle."""


FS = store.RealFS  # the filesystem adapter (with the directory operations the installer needs)
REAL = store.REAL


def check_path(p):
    """Raise BundleError unless `p` is a safe relative path inside a slot."""
    ok = 0 < len(p) <= MAX_PATH and not p.startswith("/")
    for c in p:
        ok = ok and c in _PATH_CHARS
    for seg in p.split("/"):
        ok = ok and seg != "" and not seg.startswith(".")
    if not ok:
        raise BundleError("bad file path %r" % p[:MAX_PATH])


def check_version(v):
    ok = 0 < len(v) <= MAX_VERSION
    for c in v:
        ok = ok and 32 < ord(c) < 127
    if not ok:
        raise BundleError("bad version %r (1-%d printable ASCII characters, no spaces)" % (v[:60], MAX_VERSION))


def _size(fs, path):
    f = fs.open(path, "rb")
    try:
        return f.seek(0, 2)
    finally:
        f.close()


def _header_line(g, used, hlen):
    line = g.readline()
    used += len(line)
    if used > hlen or not line.endswith(b"\n"):
        raise BundleError("bad header")
    try:
        return str(line[:-1], "utf-8").split(" "), used
    except UnicodeError:
        raise BundleError("bad header")


async def scan(path, fs, public_key, target=None, pause=None, chunk=1024):
    """Check the bundle at `path` (format, every file's SHA-256, the signature by `public_key`,
    32 bytes); with `target` (a directory), also write its files there. Returns (version, number
    of files, bundle size). Raises BundleError; OSError for flash trouble. `pause()` (async) is
    awaited between pieces of work so other tasks keep running."""
    total = _size(fs, path)
    f = fs.open(path, "rb")
    g = None
    try:
        pre = f.read(PREAMBLE)
        if len(pre) < PREAMBLE or pre[:8] != MAGIC:
            raise BundleError("not an application bundle")
        fmt, hlen = struct.unpack(">HI", pre[8:])
        if fmt != FORMAT:
            raise BundleError("bundle format %d, this firmware reads format %d" % (fmt, FORMAT))
        if hlen > MAX_HEADER or PREAMBLE + hlen + SIG_LEN > total:
            raise BundleError("bad header length %d" % hlen)
        whole = hashlib.sha256(pre)
        buf = bytearray(chunk)
        mv = memoryview(buf)
        left = hlen
        while left:
            n = f.readinto(mv[:min(left, chunk)])
            if not n:
                raise BundleError("bundle truncated")
            whole.update(mv[:n])
            left -= n
        g = fs.open(path, "rb")
        g.seek(PREAMBLE)
        words, used = _header_line(g, 0, hlen)
        if len(words) != 2 or words[0] != "version":
            raise BundleError("header does not start with the version")
        version = words[1]
        check_version(version)
        files = data = 0
        made = []
        while used < hlen:
            words, used = _header_line(g, used, hlen)
            if len(words) != 4 or words[0] != "file" or not words[1].isdigit() or len(words[2]) != 64:
                raise BundleError("bad file entry in the header")
            size, name = int(words[1]), words[3]
            try:
                digest = unhexlify(words[2])
            except ValueError:
                raise BundleError("bad file entry in the header")
            check_path(name)
            files += 1
            data += size
            if files > MAX_FILES or PREAMBLE + hlen + data + SIG_LEN > total:
                raise BundleError("bundle shorter than its header says")
            out = None
            if target is not None:
                parts = name.split("/")
                for i in range(1, len(parts)):
                    d = target + "/" + "/".join(parts[:i])
                    if d not in made:
                        fs.mkdir(d)
                        made.append(d)
                out = fs.open(target + "/" + name, "wb")
            h = hashlib.sha256()
            try:
                left = size
                while left:
                    n = f.readinto(mv[:min(left, chunk)])
                    if not n:
                        raise BundleError("bundle truncated")
                    whole.update(mv[:n])
                    h.update(mv[:n])
                    if out is not None:
                        out.write(mv[:n])
                    left -= n
                    if pause is not None:
                        await pause()
            finally:
                if out is not None:
                    out.close()
            if h.digest() != digest:
                raise BundleError("%s: SHA-256 does not match the header" % name)
        if not files:
            raise BundleError("bundle holds no file")
        if PREAMBLE + hlen + data + SIG_LEN != total:
            raise BundleError("bundle size does not match its header")
        sig = f.read(SIG_LEN)
        ok = False
        from firmware.ocpp import ed25519

        for ok in ed25519.verify_steps(public_key, whole.digest(), sig):
            if ok is None and pause is not None:
                await pause()
        if not ok:
            raise BundleError("signature does not match the public key")
        return version, files, total
    finally:
        f.close()
        if g is not None:
            g.close()


def rmtree(fs, path):
    """Remove `path` and everything below it (nothing when it does not exist)."""
    if not fs.exists(path):
        return
    for name, is_dir in list(fs.entries(path)):
        p = path + "/" + name
        if is_dir:
            rmtree(fs, p)
        else:
            fs.remove(p)
    fs.rmdir(path)


def public_key_bytes(public_key_hex):
    """The 32-byte key of a 64-hex-digit setting; ValueError when it is not an Ed25519 key."""
    try:
        k = unhexlify(public_key_hex)
    except Exception:
        k = b""
    from firmware.ocpp import ed25519

    if len(k) != 32 or ed25519._decode(k) is None:
        raise ValueError("firmware public key must be 64 hex digits of an Ed25519 public key")
    return k


class _Job:
    """What the two services share: notification, wall clock, sleeping."""

    # A function saying whether a TLS handshake may start now: on the ESP32 one holds the CPU
    # for about a second, so the station allows it only while the contactor is open (README,
    # "Stalls and the safety path"). None: always.
    tls_gate = None

    def _tls_allowed(self, url):
        return self.tls_gate is None or not url.startswith("https:") or self.tls_gate()

    def __init__(self, clock, notify, epoch, sleep_ms):
        self.clock = clock
        self._notify_cb = notify
        self._epoch_fn = epoch
        self._sleep_ms = sleep_ms or _default_sleep
        self._ep_ms = None  # wall-clock estimate: epoch ms at tick self._ep_t
        self._ep_t = 0
        self.last_status = None  # the last status notified
        self.last_error = None

    def _sync_epoch(self, epoch_s):
        self._ep_ms = int(epoch_s) * 1000
        self._ep_t = self.clock.ticks_ms()

    def _now(self):
        """Epoch seconds now, or None while the wall clock is unknown."""
        if self._epoch_fn is not None:
            e = self._epoch_fn()
            if e is not None:
                self._sync_epoch(e)
                return int(e)
        if self._ep_ms is None:
            return None
        t = self.clock.ticks_ms()
        self._ep_ms += self.clock.ticks_diff(t, self._ep_t)
        self._ep_t = t
        return self._ep_ms // 1000

    async def _notify(self, status):
        self.last_status = status
        try:
            r = self._notify_cb(status)
            if r is not None and hasattr(r, "send"):  # a coroutine: the owner sends it now
                await r
        except Exception as e:  # a broken callback must not stop the job
            self.last_error = "notify failed: %r" % e

    async def _pause(self):
        await self._sleep_ms(0)

    async def step(self, now_epoch=None):  # pragma: no cover - each service has its own
        return None

    async def run(self, idle_ms=1000):
        """Work forever: step, then sleep as long as step asked (idle_ms when idle)."""
        while True:
            try:
                ms = await self.step()
            except Exception as e:  # flash trouble etc.: the state on flash stays consistent
                self.last_error = "%s: %s" % (e.__class__.__name__, e)
                ms = 10000
            await self._sleep_ms(idle_ms if ms is None else ms)


async def _default_sleep(ms):
    if hasattr(asyncio, "sleep_ms"):
        await asyncio.sleep_ms(ms)  # type: ignore[attr-defined]
    else:
        await asyncio.sleep(ms / 1000)


class Updater(_Job):
    """UpdateFirmware (see the module doc)."""

    def __init__(self, root, fs, clock, public_key_hex, notify, reboot=None, can_install=None, epoch=None,
                 ca=None, sleep_ms=None, max_bytes=http.DEFAULT_MAX_BYTES, timeout_ms=60000, retries=3,
                 retry_interval_s=60, get=None):
        _Job.__init__(self, clock, notify, epoch, sleep_ms)
        self.root = root
        self.fs = fs or REAL
        self.public_key = public_key_bytes(public_key_hex)
        self.reboot_cb = reboot
        self.can_install = can_install
        self.ca = ca
        self.max_bytes, self.timeout_ms = max_bytes, timeout_ms
        self.default_retries, self.default_interval_s = retries, retry_interval_s
        self._get = get or http.get_to_file
        self._path = root + "/update.json"
        self.stage = root + "/stage.bin"
        self.running = appslot.running(root, self.fs)  # the slot this boot runs
        self.waiting_to_install = False  # downloaded, held back by can_install()
        self.reboots = 0  # reboot() calls made (at most one per boot)
        try:
            self._state = store.read_json(self._path, self.fs)
        except ValueError:
            self._state = None
        s = self._state
        if s is not None and not (isinstance(s, dict) and s.get("st") in ("wait", "ready", "inst", "boot")):
            self._state = s = None
        if s is not None:
            self.last_status = {"ready": DOWNLOADED, "inst": INSTALLING, "boot": INSTALLING}.get(s["st"])

    @property
    def busy(self):
        return self._state is not None

    @property
    def phase(self):
        return None if self._state is None else self._state["st"]

    def status(self):
        """Status for a TriggerMessage: Idle when no update is under way (OCPP 4.5), else the
        last one notified."""
        return IDLE if self._state is None or self.last_status is None else self.last_status

    trigger_status = status

    def request(self, location, retrieve_epoch, retries=None, retry_interval_s=None, now_epoch=None):
        """UpdateFirmware.req (its conf is empty). Returns False when ignored: an installation is
        under way. A request that arrives while an earlier one waits or downloads replaces it."""
        if now_epoch is not None:
            self._sync_epoch(now_epoch)
        s = self._state
        if s is not None and s["st"] in ("inst", "boot"):
            return False
        retries = self.default_retries if retries is None else max(0, int(retries))
        iv = self.default_interval_s if retry_interval_s is None else max(0, int(retry_interval_s))
        self.fs.mkdir(self.root)
        self._set({"st": "wait", "loc": location, "at": int(retrieve_epoch), "left": retries + 1, "iv": iv})
        self.last_status = None
        return True

    def confirm(self):
        """The running version is healthy (BootNotification accepted and running for a while
        without a fault): a trial slot becomes the active one. Returns True when a trial was
        confirmed. The next step() reports Installed."""
        return appslot.confirm(self.root, self.fs)

    def _set(self, s):
        store.write_json(self._path, s, self.fs)
        self._state = s

    def _may_install(self):
        if self.can_install is not None and not self.can_install():
            return False
        try:  # a trial that is running and not yet confirmed: its fallback must not be overwritten
            sj = appslot.read(self.root, self.fs)
        except ValueError:
            return True
        return not (sj and sj.get("trial") is not None and sj.get("tries", 0) >= 1)

    async def _finish(self, status):
        """The final status, then the state is dropped: a power cut in between repeats the
        status after the reboot rather than losing it."""
        s = self._state
        self.waiting_to_install = False
        await self._notify(status)
        if self._state is not s:
            return  # a new request arrived meanwhile: it owns the state now
        for p in (self._path, self.stage):
            if self.fs.exists(p):
                self.fs.remove(p)
        self._state = None

    async def step(self, now_epoch=None):
        """Do the next piece of work; returns the ms to wait before the next call (None: idle)."""
        if now_epoch is not None:
            self._sync_epoch(now_epoch)
        s = self._state
        if s is None:
            return None
        st = s["st"]
        if st == "wait":
            now = self._now()
            if now is None:
                return 1000  # wait for the wall clock
            if now < s["at"]:
                return min((s["at"] - now) * 1000, _MAX_WAIT_MS)
            if not self._tls_allowed(s["loc"]):
                return 1000
            await self._download(s)
            return 0
        if st in ("ready", "inst"):
            if not self._may_install():
                self.waiting_to_install = True
                return 1000
            self.waiting_to_install = False
            await self._install(s)
            return 0
        return await self._after_switch(s)

    async def _download(self, s):
        await self._notify(DOWNLOADING)
        try:
            await self._get(s["loc"], self.stage, fs=self.fs, ca=self.ca, max_bytes=self.max_bytes,
                            timeout_ms=self.timeout_ms)
        except (http.HttpError, OSError, ValueError, asyncio.TimeoutError) as e:
            if self._state is not s:
                return  # replaced by a newer request meanwhile
            self.last_error = "download failed: %s" % e
            left = 0 if isinstance(e, ValueError) else s["left"] - 1  # a bad URL stays bad
            if left > 0:
                now = self._now()
                t = dict(s)
                t["left"], t["at"] = left, (now or 0) + s["iv"]
                self._set(t)
                return
            await self._finish(DOWNLOAD_FAILED)
            return
        if self._state is not s:
            return
        try:
            version = (await scan(self.stage, self.fs, self.public_key, pause=self._pause))[0]
        except (BundleError, OSError) as e:
            self.last_error = "bundle refused: %s" % e
            await self._notify(DOWNLOADED)
            await self._finish(INSTALLATION_FAILED)
            return
        if self._state is not s:
            return
        self._set({"st": "ready", "ver": version})
        await self._notify(DOWNLOADED)

    def _slot_state(self):
        try:
            return appslot.read(self.root, self.fs)
        except ValueError:
            return None

    async def _install(self, s):
        sj = self._slot_state() or {}
        active = sj.get("active", self.running)
        target = "b" if (self.running or active) == "a" else "a"
        n = sj.get("n", 0)
        n = (n if type(n) is int else 0) + 1
        self._set({"st": "inst", "slot": target, "n": n, "ver": s.get("ver")})
        await self._notify(INSTALLING)
        tdir = self.root + "/" + target
        try:
            rmtree(self.fs, tdir)
            self.fs.mkdir(tdir)
            version = (await scan(self.stage, self.fs, self.public_key, target=tdir, pause=self._pause))[0]
            f = self.fs.open(tdir + "/" + appslot.MARKER, "w")
            try:
                f.write(version)
            finally:
                f.close()
            self.fs.sync()
        except (BundleError, OSError) as e:
            self.last_error = "installation failed: %s" % e
            try:
                rmtree(self.fs, tdir)
            except OSError:
                pass
            await self._finish(INSTALLATION_FAILED)
            return
        self._set({"st": "boot", "slot": target, "n": n, "ver": version})
        self._switch(self._state)
        if self.fs.exists(self.stage):
            self.fs.remove(self.stage)
        self._reboot()

    def _switch(self, s):
        sj = self._slot_state() or {"active": self.running}
        sj["trial"], sj["tries"], sj["n"], sj["result"] = s["slot"], 0, s["n"], None
        appslot.write(self.root, sj, self.fs)

    def _reboot(self):
        """Ask the owner to reboot, once, and only without a transaction."""
        if self.reboots:
            return
        if self.can_install is not None and not self.can_install():
            self.waiting_to_install = True
            return
        self.waiting_to_install = False
        self.reboots += 1
        if self.reboot_cb is not None:
            self.reboot_cb()

    async def _after_switch(self, s):
        sj = self._slot_state()
        if sj is not None and sj.get("n") == s["n"]:
            if sj.get("result") == "ok":
                await self._finish(INSTALLED)
                return None
            if sj.get("result") == "failed":
                self.last_error = "version %s did not come up healthy: rolled back" % s.get("ver")
                await self._finish(INSTALLATION_FAILED)
                return None
            if sj.get("trial") == s["slot"]:
                if sj.get("tries", 0) < 1:  # switched, not yet rebooted
                    self._reboot()
                return 1000  # running the trial: waiting for confirm()
        # the switch did not reach flash before a power cut: do it now
        self._switch(s)
        self._reboot()
        return 1000


def _upload_url(location, name):
    if "?" in location:
        return location
    return location + ("" if location.endswith("/") else "/") + name


class Diagnostics(_Job):
    """GetDiagnostics (see the module doc). `paths`: the files to send, relative to `root`."""

    def __init__(self, root, fs, clock, notify, paths, ca=None, sleep_ms=None, epoch=None, name="diagnostics",
                 method="PUT", timeout_ms=30000, retries=2, retry_interval_s=60, put=None):
        _Job.__init__(self, clock, notify, epoch, sleep_ms)
        self.root = root
        self.fs = fs or REAL
        self.paths = paths
        self.ca = ca
        self.name, self.method, self.timeout_ms = name, method, timeout_ms
        self.default_retries, self.default_interval_s = retries, retry_interval_s
        self._put = put or http.upload
        self._job = None

    def _full(self, p):
        return p if p.startswith("/") else self.root.rstrip("/") + "/" + p

    @property
    def busy(self):
        return self._job is not None

    def status(self):
        """Status for a TriggerMessage: Idle when no upload is under way (OCPP 4.4)."""
        return IDLE if self._job is None or self.last_status is None else self.last_status

    trigger_status = status

    def request(self, location, retries=None, retry_interval_s=None, start_epoch=None, stop_epoch=None,
                now_epoch=None):
        """GetDiagnostics.req -> the fileName for GetDiagnostics.conf, or None when there is
        nothing to send. A request replaces one still under way."""
        if now_epoch is not None:
            self._sync_epoch(now_epoch)
        files = [p for p in self.paths if self.fs.exists(self._full(p))]
        if not files:
            return None
        now = self._now()
        name = "%s-%d.log" % (self.name, now) if now is not None else self.name + ".log"
        retries = self.default_retries if retries is None else max(0, int(retries))
        iv = self.default_interval_s if retry_interval_s is None else max(0, int(retry_interval_s))
        self._job = {"url": _upload_url(location, name), "name": name, "files": files, "left": retries + 1,
                     "iv": iv, "due": self.clock.ticks_ms(), "window": (start_epoch, stop_epoch)}
        self.last_status = None
        return name

    def _body(self, j):
        start, stop = j["window"]
        parts = [("# %s: %d file(s); requested window %s..%s (epoch s; the files are sent whole)\n"
                  % (j["name"], len(j["files"]), start, stop)).encode()]
        for p in j["files"]:
            full = self._full(p)
            if self.fs.exists(full):
                parts.append(("\n==== %s (%d bytes) ====\n" % (p, _size(self.fs, full))).encode())
                parts.append(full)
        return parts

    async def step(self, now_epoch=None):
        if now_epoch is not None:
            self._sync_epoch(now_epoch)
        j = self._job
        if j is None:
            return None
        wait = self.clock.ticks_diff(j["due"], self.clock.ticks_ms())
        if wait > 0:
            return min(wait, _MAX_WAIT_MS)
        if not self._tls_allowed(j["url"]):
            return 1000
        await self._notify(UPLOADING)
        try:
            await self._put(j["url"], self._body(j), fs=self.fs, ca=self.ca, method=self.method,
                            content_type="text/plain", timeout_ms=self.timeout_ms)
        except (http.HttpError, OSError, ValueError, asyncio.TimeoutError) as e:
            self.last_error = "upload failed: %s" % e
            if self._job is not j:
                return 0
            j["left"] = 0 if isinstance(e, ValueError) else j["left"] - 1
            if j["left"] > 0:
                j["due"] = self.clock.ticks_add(self.clock.ticks_ms(), min(j["iv"] * 1000, 0x0FFFFFFF))
                return 0
            self._job = None
            await self._notify(UPLOAD_FAILED)
            return None
        if self._job is j:
            self._job = None
        await self._notify(UPLOADED)
        return None
