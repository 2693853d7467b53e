"""Driver tokens -> decision: the Local Authorization List, the Authorization Cache and the rules
of OCPP 1.6 section 3.5 that choose between them. docs/auth.md has the full table and reasons.

    info = ("Accepted", expiry_epoch_or_None, "PARENT" or None)    an IdTagInfo, as a tuple
    parse_info({"status": "Accepted", "expiryDate": "2030-01-01T00:00:00Z"}) -> info (ValueError)
    info_json(info) -> {"status": ..., "expiryDate": ..., "parentIdTag": ...}

    ll = LocalList(fs, "/auth-list.bin", max_length=1000, max_send=100)
    ll.version                      GetLocalListVersion.conf listVersion (0: empty)
    ll.update(version, "Full" | "Differential", entries)  SendLocalList.conf status:
        "Accepted" | "Failed" | "VersionMismatch"  (ll.reason says why on Failed)
    await ll.update_async(...)      the same, letting other tasks run while the file is written
    ll.lookup(tag) -> info or None; len(ll)

    cache = Cache(fs, "/auth-cache.bin", max_entries=100)
    cache.lookup(tag) -> info or None; cache.put(tag, info, now) -> bool; cache.clear() -> "Accepted"

    decide(tag, now, online, cfg, ll, cache) -> ("accept", info, "list" | "cache")
                                              | ("accept", None, "offline-unknown")
                                              | ("reject", info, "list" | "cache")
                                              | ("reject", None, "offline")
                                              | ("ask", None, None): send Authorize.req
    answer(tag, idTagInfo, now, cfg, ll, cache) -> ("accept" | "reject", info, conflict)
    learn(tag, idTagInfo, now, cfg, ll, cache) -> conflict   StartTransaction/StopTransaction.conf
    same_group(tag_a, parent_a, tag_b, parent_b) -> bool     may tag_b stop tag_a's transaction

`cfg` is anything with .get(key): the ocpp Config, or a dict in tests. `now` is epoch seconds.
`online`: Authorize.req can be sent now; an Authorize.req that got no answer in time is
decided again with online=False. Lookups raise OSError when the flash can not be read.

Rules (OCPP 1.6 edition 2 with errata v4; the table is in docs/auth.md):
- IdToken is case-insensitive (7.28): tags are compared with ASCII letters folded to upper case.
- A valid entry has status Accepted or ConcurrentTx (3.5.2) and no expiryDate at or before now
  (3.5.1, 3.5.4: "apparently expired due to passage of time"); otherwise it counts as Expired.
- List entries take priority over cache entries (3.5.3); a disabled source is not consulted
  (LocalAuthListEnabled 9.2.1, AuthorizationCacheEnabled 9.1.2).
- Online: a valid entry with LocalPreAuthorize (9.1.13) starts at once; everything else asks
  the Central System (4.1; a NOT-valid cache entry is asked about again, 3.5.1).
- Offline: a known NOT-valid entry is rejected (3.5.4); a valid one is accepted when
  LocalAuthorizeOffline (9.1.12); anything else is accepted only with
  AllowOfflineTxForUnknownId (3.5.4, 9.1.1).
- Authorize.conf / StartTransaction.conf / StopTransaction.conf idTagInfo update the cache,
  except for tags in the local list (3.5.3, 4.1, 4.8, 4.10); a disagreement with the list is
  reported as a conflict (3.5.2: StatusNotification connector 0, errorCode LocalListConflict).
- SendLocalList (5.15, 6.41, 7.1, 7.47): Full replaces (no or an empty list clears it);
  Differential adds/replaces entries with idTagInfo and removes those without; a Differential
  whose version is not above the current one is VersionMismatch; a Full with version < 1 is
  Failed (errata 3.52); duplicate idTags, more than max_length entries afterwards, more than
  max_send in one request, a malformed entry or expiryDate -> Failed, and the list is left
  exactly as it was. An empty list reports version 0 (5.10).

Storage: one file per table, replaced atomically (write `path.tmp`, rename over `path`), so a
power cut at any instant leaves the old or the new table. The file is a 16-byte header
(magic "OAL1"/"OAC1", int64 version or next cache sequence number, uint32 count) followed by
`count` 54-byte records sorted by key:

    key 20s      the tag, UTF-8, ASCII letters upper-cased, NUL-padded (at most 20 bytes)
    parent 20s   parentIdTag as given, NUL-padded; empty = none
    status B     1 + index in STATUSES
    flags B      1: the expiry field is set
    expiry q     epoch seconds (int64: years 0000-9999)
    seq I        cache: when the entry was last received (eviction order); list: 0

A lookup is a binary search with seek + 20-byte reads: 14 reads for 10,000 entries, and RAM
does not depend on the table's length. An update streams the old file into the new one, merging
the (sorted) request; RAM is proportional to the request only. All file access goes through an
injectable `fs` (store.RealFS) so tests can cut the power at every write.
"""

import struct

from firmware import drive, finish, store
from firmware.ocpp import dt

ACCEPTED = "Accepted"
BLOCKED = "Blocked"
EXPIRED = "Expired"
INVALID = "Invalid"
CONCURRENT = "ConcurrentTx"
STATUSES = (ACCEPTED, BLOCKED, EXPIRED, INVALID, CONCURRENT)  # AuthorizationStatus, 7.2
VALID = (ACCEPTED, CONCURRENT)  # "valid" in the list: Accepted/ConcurrentTx (3.5.2)

ASK = ("ask", None, None)

TAG_BYTES = 20  # IdToken = CiString20Type (7.28)
_HDR = ">4sqI"
_HDR_SIZE = 16
_REC = ">20s20sBBqI"
_REC_SIZE = 54
_PAD = b"\0" * TAG_BYTES
_STATUS = 2 * TAG_BYTES  # offset of the status byte in a record (0: a deletion)
_DELETE = b"\0" * (_REC_SIZE - TAG_BYTES)  # key + this: a change that removes the key
_STEP = 16  # records written between two yields of a rewrite (864 bytes)
_ENTRIES_AT_ONCE = 8  # SendLocalList entries read, or written, between two yields (0.4 ms each)
_MAX_Q = 0x7FFFFFFFFFFFFFFF  # int64: versions and expiry epochs must fit


# ---- tags and IdTagInfo ---------------------------------------------------------------------

def fold(tag):
    """The lookup key of a tag: UTF-8 with ASCII letters upper-cased (IdToken is case-insensitive),
    or None when it can not be a stored key (not a str, empty, over 20 bytes, or a NUL in it)."""
    if type(tag) is not str or not tag:
        return None
    b = tag.encode()
    if len(b) > TAG_BYTES or b"\0" in b:
        return None
    return b.upper()


def _same(a, b):
    # Two optional IdTokens equal case-insensitively; None and "" are both "none".
    a = a or None
    b = b or None
    if a is None or b is None:
        return a is b
    return a == b or a.encode().upper() == b.encode().upper()


def same_group(tag_a, parent_a, tag_b, parent_b):
    """May tag_b end the transaction tag_a started? The same token, or both tokens carry the same
    parentIdTag (3.10; errata 3.5 "the same identifier (or an identifier with the same
    ParentIdTag)"). A parentIdTag is never compared with a presented token (3.10)."""
    if tag_a is not None and tag_b is not None and _same(tag_a, tag_b):
        return True
    return bool(parent_a) and bool(parent_b) and _same(parent_a, parent_b)


def parse_info(d):
    """IdTagInfo JSON object -> (status, expiry epoch or None, parent or None); ValueError."""
    if type(d) is not dict:
        raise ValueError("idTagInfo is not an object")
    s = d.get("status")
    if s not in STATUSES:
        raise ValueError("idTagInfo status %r is not one of %s" % (s, ", ".join(STATUSES)))
    e = d.get("expiryDate")
    if e is not None:
        e = dt.parse(e)  # ValueError naming the text
        if not -_MAX_Q <= e <= _MAX_Q:
            raise ValueError("expiryDate out of range")
    p = d.get("parentIdTag")
    if p is not None:
        if type(p) is not str or len(p.encode()) > TAG_BYTES or "\0" in p:
            raise ValueError("parentIdTag is not an IdToken of at most 20 characters")
        p = p or None
    return (s, e, p)


def info_json(info):
    """(status, expiry, parent) -> the IdTagInfo JSON object."""
    d = {"status": info[0]}
    if info[1] is not None:
        d["expiryDate"] = dt.iso(info[1])
    if info[2] is not None:
        d["parentIdTag"] = info[2]
    return d


def _as_info(x):
    # A dict (JSON) or tuple -> a checked info tuple, or None when malformed.
    if type(x) is tuple:
        if len(x) == 3 and x[0] in STATUSES \
                and (x[1] is None or (type(x[1]) is int and -_MAX_Q <= x[1] <= _MAX_Q)) \
                and (x[2] is None or type(x[2]) is str):
            return x
        return None
    try:
        return parse_info(x)
    except ValueError:
        return None


def status_at(info, now):
    """The status of an entry at `now`: a valid status whose expiryDate has passed is Expired."""
    s = info[0]
    if s in VALID and info[1] is not None and now is not None and now >= info[1]:
        return EXPIRED
    return s


def _current(info, now):
    s = status_at(info, now)
    return info if s == info[0] else (s, info[1], info[2])


# ---- records --------------------------------------------------------------------------------

def _pack(key, info, seq=0):
    """The record of `info` under `key` (from fold), or None when the parent can not be stored."""
    p = info[2]
    pb = b""
    if p:
        pb = p.encode()
        if len(pb) > TAG_BYTES or b"\0" in pb:
            return None
    e = info[1]
    return struct.pack(_REC, key, pb, STATUSES.index(info[0]) + 1, 0 if e is None else 1,
                       0 if e is None else e, seq)


def _unpack(rec):
    """Record -> (info, seq)."""
    _k, pb, s, flags, e, seq = struct.unpack(_REC, rec)
    pb = pb.rstrip(b"\0")
    st = STATUSES[s - 1] if 1 <= s <= len(STATUSES) else INVALID  # a damaged record never admits
    return (st, e if flags & 1 else None, pb.decode() if pb else None), seq


def _copy(src, dst, a, b, buf):
    """Copy records a .. b-1 of the table file `src` to `dst` through `buf`, _STEP records at a
    time. A generator: yields after each block, returns how many records it copied."""
    if b <= a:
        return 0
    src.seek(_HDR_SIZE + a * _REC_SIZE)
    left = b - a
    while left:
        k = min(left, _STEP)
        part = buf if k == _STEP else memoryview(buf)[:k * _REC_SIZE]  # whole blocks: no slice
        if src.readinto(part) != k * _REC_SIZE:
            raise OSError(5, "table file shorter than its header says")  # EIO
        dst.write(part)
        left -= k
        yield
    return b - a


def _valid_rec(rec, now):
    info, seq = _unpack(rec)
    return status_at(info, now) in VALID, seq


class _Table:
    """A sorted file of fixed-size records, replaced atomically on every change."""

    MAGIC = b"????"

    def __init__(self, fs, path):
        self.fs = fs or store.REAL
        self.path = path
        self.tmp = path + ".tmp"
        self.load_error = None  # why the file on flash was not usable (then the table is empty)
        self._head = 0  # header int64: list version / next cache sequence number
        self._n = 0
        self._kb = bytearray(TAG_BYTES)  # the key being compared: a lookup allocates no keys
        # The block a rewrite copies through, allocated with the table (at boot): a fragmented
        # heap may not have 864 bytes in one piece later.
        self._buf = bytearray(_STEP * _REC_SIZE)
        self._load()

    def __len__(self):
        return self._n

    def _load(self):
        fs = self.fs
        try:
            if fs.exists(self.tmp):  # a rewrite cut by a power failure: the old file holds
                fs.remove(self.tmp)
        except OSError:
            pass
        if not fs.exists(self.path):
            return
        try:
            f = fs.open(self.path, "rb")
            try:
                h = f.read(_HDR_SIZE)
                size = f.seek(0, 2)
            finally:
                f.close()
        except OSError as ex:
            self.load_error = "%s: could not be read (%s); empty" % (self.path, type(ex).__name__)
            return
        if len(h) != _HDR_SIZE:
            self.load_error = "%s: no header; empty" % self.path
            return
        magic, head, n = struct.unpack(_HDR, h)
        if magic != self.MAGIC or size != _HDR_SIZE + n * _REC_SIZE:
            self.load_error = "%s: not a table of this kind or cut short; empty" % self.path
            return
        self._head = head
        self._n = n

    def _bound(self, f, key):
        """(index of the first record whose key is not below `key`, True when it is `key`):
        a binary search with seeks, reading keys into one buffer (no allocation)."""
        lo = 0
        hi = self._n
        k = self._kb
        while lo < hi:
            mid = (lo + hi) // 2
            f.seek(_HDR_SIZE + mid * _REC_SIZE)
            f.readinto(k)
            if k < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == self._n:
            return lo, False
        f.seek(_HDR_SIZE + lo * _REC_SIZE)
        f.readinto(k)
        return lo, k == key

    def _find(self, key):
        """The record with `key` (padded to 20 bytes), or None."""
        if not self._n:
            return None
        f = self.fs.open(self.path, "rb")
        try:
            i, hit = self._bound(f, key)
            if not hit:
                return None
            f.seek(_HDR_SIZE + i * _REC_SIZE)
            return f.read(_REC_SIZE)
        finally:
            f.close()

    def _plan(self, changes):
        """Where each change (key-sorted records) meets the current file: [(index, present)],
        and how many records the table holds once they are applied."""
        n = self._n
        plan = []
        f = self.fs.open(self.path, "rb") if n else None
        try:
            for c in changes:
                at = self._bound(f, c[:TAG_BYTES]) if f is not None else (0, False)
                plan.append(at)
                if c[_STATUS] and not at[1]:
                    n += 1  # a new entry
                elif not c[_STATUS] and at[1]:
                    n -= 1  # a removed one
        finally:
            if f is not None:
                f.close()
        return plan, n

    def _lookup(self, tag):
        key = fold(tag)
        if key is None:
            return None
        rec = self._find(key + _PAD[len(key):])
        return None if rec is None else _unpack(rec)[0]

    def _records(self):
        """Yield every record (bytes) in key order, one read each."""
        if not self._n:
            return
        f = self.fs.open(self.path, "rb")
        try:
            f.seek(_HDR_SIZE)
            for _ in range(self._n):
                yield f.read(_REC_SIZE)
        finally:
            f.close()

    def items(self):
        """Yield (key, info) in key order (streaming): for tests and diagnostics."""
        for rec in self._records():
            yield rec[:TAG_BYTES].rstrip(b"\0").decode(), _unpack(rec)[0]

    def _rewrite(self, head, n, changes, plan=None):
        """Replace the file with header (head, n) and records: the current ones (when a `plan`
        from _plan is given) merged with `changes`, key-sorted records, each of which replaces
        the current record with its key, or removes it when its status byte is 0. The current
        records between two changes are copied in blocks. Atomic: temporary file + rename.

        A generator: it yields after every block of _STEP records, so a caller can let other
        tasks run (LocalList.update_async). Returns True, or False with the old file untouched
        when the result did not hold exactly n records. Run it with firmware.drive()."""
        fs = self.fs
        if n == 0:
            if fs.exists(self.path):
                fs.remove(self.path)
                fs.sync()
            self._head = 0
            self._n = 0
            return True
        out = fs.open(self.tmp, "wb")
        old = None
        written = 0
        try:
            if plan is not None and self._n:
                old = fs.open(self.path, "rb")
            out.write(struct.pack(_HDR, self.MAGIC, head, n))
            buf = self._buf
            cur = 0  # the next current record to copy
            for i in range(len(changes)):
                at, present = plan[i] if old is not None else (0, False)
                copied = yield from _copy(old, out, cur, at, buf)
                written += copied
                cur = at + 1 if present else at
                c = changes[i]
                if c[_STATUS]:
                    out.write(c)
                    written += 1
                if i % _ENTRIES_AT_ONCE == _ENTRIES_AT_ONCE - 1:
                    yield
            copied = yield from _copy(old, out, cur, self._n if old is not None else 0, buf)
            written += copied
        finally:
            out.close()
            if old is not None:
                old.close()
        if written != n:
            fs.remove(self.tmp)
            return False
        fs.rename(self.tmp, self.path)
        fs.sync()
        self._head = head
        self._n = n
        return True

    def _discard_tmp(self):
        try:
            if self.fs.exists(self.tmp):
                self.fs.remove(self.tmp)
        except OSError:
            pass


# ---- the Local Authorization List -----------------------------------------------------------

class LocalList(_Table):
    """The Local Authorization List (3.5.2), kept on flash; only SendLocalList changes it."""

    MAGIC = b"OAL1"

    def __init__(self, fs, path, max_length=1000, max_send=None):
        self.max_length = max_length  # LocalAuthListMaxLength
        self.max_send = max_send  # SendLocalListMaxLength (None: not checked here)
        self.reason = None  # why the last update was not Accepted
        _Table.__init__(self, fs, path)

    @property
    def version(self):
        """listVersion for GetLocalListVersion.conf: 0 when the list is empty (5.10)."""
        return self._head if self._n else 0

    def lookup(self, tag):
        """The entry of `tag` as stored (status, expiry, parent), or None."""
        return self._lookup(tag)

    def _fail(self, why):
        self.reason = why
        return "Failed"

    def update(self, version, update_type, entries=None):
        """SendLocalList.req -> SendLocalList.conf status. Nothing changes unless Accepted."""
        return drive(self.update_steps(version, update_type, entries))

    async def update_async(self, version, update_type, entries=None):
        """update() that lets other tasks run every 16 records written: a Differential rewrites
        the whole file (54 bytes per entry), which takes a while on the ESP32's flash. Lookups
        in between see the old list until the new one is renamed into place."""
        g = self.update_steps(version, update_type, entries)
        try:
            return await finish(g)
        except BaseException:  # cancelled half way: the old list stays
            g.close()
            self._discard_tmp()
            raise

    def update_steps(self, version, update_type, entries=None):
        """update() as a generator: yields while it writes, returns the status."""
        self.reason = None
        if update_type not in ("Full", "Differential"):
            return self._fail("updateType %r is not Full or Differential" % (update_type,))
        if type(version) is not int or version > _MAX_Q:
            return self._fail("listVersion %r is not an integer" % (version,))
        full = update_type == "Full"
        if not full and version <= self.version:
            self.reason = "listVersion %d is not above the current version %d" % (
                version, self.version)
            return "VersionMismatch"
        if full and version < 1:
            return self._fail("listVersion %d: 0 and -1 have a special meaning (errata 3.52)"
                              % version)
        if entries is None:
            entries = ()
        if type(entries) is not list and type(entries) is not tuple:
            return self._fail("localAuthorizationList is not a list")
        if self.max_send is not None and len(entries) > self.max_send:
            return self._fail("%d entries, at most %d in one request (SendLocalListMaxLength)"
                              % (len(entries), self.max_send))
        if full and len(entries) > self.max_length:
            return self._fail("%d entries, the list holds at most %d (LocalAuthListMaxLength)"
                              % (len(entries), self.max_length))
        changes = []
        for k in range(len(entries)):
            rec, why = _entry(entries[k], full)
            if why is not None:
                return self._fail("entry %d: %s" % (k, why))
            changes.append(rec)
            if k % _ENTRIES_AT_ONCE == _ENTRIES_AT_ONCE - 1:
                yield
        changes.sort()
        for k in range(1, len(changes)):
            if changes[k][:TAG_BYTES] == changes[k - 1][:TAG_BYTES]:
                return self._fail("idTag %s is listed twice" % _show(changes[k]))
        try:
            plan, n = (None, len(changes)) if full else self._plan(changes)
            if n > self.max_length:
                return self._fail("the list would hold %d entries, at most %d "
                                  "(LocalAuthListMaxLength)" % (n, self.max_length))
            ok = yield from self._rewrite(version, n, changes, plan)
        except OSError as ex:  # flash full or failing: the old list stays
            self._discard_tmp()
            return self._fail("the list could not be saved (%s)" % type(ex).__name__)
        if not ok:
            return self._fail("the list changed while it was rewritten")
        return "Accepted"


def _show(rec):
    return repr(rec[:TAG_BYTES].rstrip(b"\0").decode())


def _entry(e, full):
    """AuthorizationData (7.1) -> (record, None) or (None, why). A Differential entry without
    idTagInfo becomes a deletion (status byte 0)."""
    if type(e) is not dict:
        return None, "not an object"
    tag = e.get("idTag")
    key = fold(tag)
    if key is None:
        return None, "idTag %r is not an IdToken of 1 to 20 characters" % (tag,)
    ti = e.get("idTagInfo")
    if ti is None:
        if full:
            return None, "idTag %r has no idTagInfo, required in a Full update (7.1)" % tag
        return key + _PAD[len(key):] + _DELETE, None
    try:
        info = parse_info(ti)
    except ValueError as ex:
        return None, "idTag %r: %s" % (tag, ex)
    return _pack(key, info), None


# ---- the Authorization Cache ----------------------------------------------------------------

class Cache(_Table):
    """The Authorization Cache (3.5.1): the latest IdTagInfo received for each tag, valid or not.

    Bounded to `max_entries`. When a new tag arrives and the cache is full, the NOT-valid
    entries go first (not Accepted/ConcurrentTx, or expired at `now`), the one received longest
    ago first; then the valid entry received longest ago (3.5.1: "remove any NOT-valid entries,
    and then, if necessary, the oldest valid entries"). "Received" is the last put() of the tag:
    lookups are not recorded, so reading a card never writes the flash.
    """

    MAGIC = b"OAC1"

    def __init__(self, fs, path, max_entries=100):
        self.max_entries = max_entries
        self.error = None  # why the last put() or clear() failed
        _Table.__init__(self, fs, path)

    def lookup(self, tag):
        """The entry of `tag` as stored (status, expiry, parent), or None."""
        return self._lookup(tag)

    def put(self, tag, info, now=None):
        """Store the IdTagInfo (tuple or JSON object) received for `tag`. True when stored;
        False for a tag or info that can not be stored, or a flash error (`error` says)."""
        key = fold(tag)
        info = _as_info(info)
        if key is None or info is None or self.max_entries < 1:
            return False
        key = key + _PAD[len(key):]
        seq = self._head
        rec = _pack(key, info, seq & 0xFFFFFFFF)
        if rec is None:
            return False
        try:
            changes = [rec]
            plan, n = self._plan(changes)
            if n > self.max_entries:  # evict; more than one if max_entries was lowered
                skip = [key]  # never the tag being stored
                while n > self.max_entries:
                    victim = self._victim(now, skip)
                    if victim is None:
                        break
                    skip.append(victim)
                    changes.append(victim + _DELETE)
                    n -= 1
                changes.sort()
                plan, n = self._plan(changes)
            if not drive(self._rewrite(seq + 1, n, changes, plan)):
                self.error = "cache not saved (the file changed while it was rewritten)"
                return False
        except OSError as ex:
            self._discard_tmp()
            self.error = "cache not saved (%s)" % type(ex).__name__
            return False
        return True

    def _victim(self, now, skip):
        # The key of the first NOT-valid entry received, else the first valid one received.
        best = None
        best_rank = None
        for rec in self._records():
            k = rec[:TAG_BYTES]
            if k in skip:
                continue
            ok, seq = _valid_rec(rec, now)
            rank = (1 if ok else 0, seq)
            if best_rank is None or rank < best_rank:
                best = k
                best_rank = rank
        return best

    def clear(self):
        """ClearCache.req -> ClearCache.conf status."""
        try:
            drive(self._rewrite(0, 0, ()))
        except OSError as ex:
            self.error = "cache not cleared (%s)" % type(ex).__name__
            return "Rejected"
        return "Accepted"


# ---- the decision ---------------------------------------------------------------------------

def _known(tag, cfg, local_list, cache):
    # (stored info, "list" | "cache") or (None, None): the list first (3.5.3).
    if local_list is not None and cfg.get("LocalAuthListEnabled"):
        info = local_list.lookup(tag)
        if info is not None:
            return info, "list"
    if cache is not None and cfg.get("AuthorizationCacheEnabled"):
        info = cache.lookup(tag)
        if info is not None:
            return info, "cache"
    return None, None


def decide(tag, now, online, cfg, local_list=None, cache=None):
    """What to do when `tag` is presented to start charging (section 3.5; docs/auth.md)."""
    info, source = _known(tag, cfg, local_list, cache)
    valid = info is not None and status_at(info, now) in VALID
    if online:
        if valid and cfg.get("LocalPreAuthorize"):
            return ("accept", info, source)
        return ASK
    if info is not None and not valid:
        return ("reject", _current(info, now), source)
    if valid and cfg.get("LocalAuthorizeOffline"):
        return ("accept", info, source)
    if cfg.get("AllowOfflineTxForUnknownId"):
        return ("accept", None, "offline-unknown")
    return ("reject", None, "offline")


def learn(tag, id_tag_info, now, cfg, local_list=None, cache=None):
    """An idTagInfo arrived for `tag` (Authorize.conf, StartTransaction.conf, StopTransaction.conf):
    update the cache unless the tag is in the (enabled) local list. Returns True when it
    disagrees with the local list (send StatusNotification 0 / LocalListConflict, 3.5.2)."""
    info = _as_info(id_tag_info)
    if info is None:
        return False
    if local_list is not None and cfg.get("LocalAuthListEnabled"):
        entry = local_list.lookup(tag)
        if entry is not None:
            return _conflict(entry, info, now)
    if cache is not None and cfg.get("AuthorizationCacheEnabled"):
        cache.put(tag, info, now)
    return False


def _conflict(entry, info, now):
    a = status_at(entry, now)
    b = status_at(info, now)
    if a == CONCURRENT:
        a = ACCEPTED
    if b == CONCURRENT:
        b = ACCEPTED
    return a != b or not _same(entry[2], info[2])


def answer(tag, id_tag_info, now, cfg, local_list=None, cache=None):
    """Authorize.conf arrived: learn() it, then ("accept" | "reject", info, conflict). Only an
    Accepted, unexpired status starts charging (ConcurrentTx: the tag is busy elsewhere, 7.2); a
    malformed idTagInfo is a reject with info None."""
    info = _as_info(id_tag_info)
    if info is None:
        return ("reject", None, False)
    conflict = learn(tag, info, now, cfg, local_list, cache)
    info = _current(info, now)
    return ("accept" if info[0] == ACCEPTED else "reject", info, conflict)
