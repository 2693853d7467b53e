"""Driver tokens at the charger: a card on the reader (or an app's token) asks to start or to
stop a session. The decision follows OCPP 1.6 section 3.5 (firmware/auth.py: the local list,
the cache, online and offline rules), the reservation, and the owner's sharing windows and the
tariff of the token's group (firmware/tariff.py).

    tokens.present(tag)        a token was presented (the station's slow task, the simulator)
    await tokens.send(now)     the ChargePoint's sender: the Authorize.req that is waiting, if any
    tokens.learn(tag, info)    idTagInfo of a StartTransaction/StopTransaction.conf (cache)
    tokens.group_of(tag)       the parentIdTag this charger knows for a token (None: none)
    tokens.grant(tag, group, tariff)   authorize the charger for a token (also a remote start's)
    tokens.take_grant(tag)     at the session's start: (group, tariff) of the grant for its token

It also owns the back end's calls on the local list and the cache: SendLocalList,
GetLocalListVersion, ClearCache.

Every outcome is a "token" event: {"id_tag", "result": "accepted" | "refused" | "waiting" |
"stopping" | "unlocking", "reason", "group", "tariff"} for the display and the log. Starting means authorizing
the charger (the car may come within ConnectionTimeOut, or be there already); stopping means
charger.stop(Local) with the stopper's idTag in StopTransaction.
"""
from firmware import auth
from firmware import charger as chg
from firmware.ocpp.rpc import CLOSED, TIMEOUT, RpcError

LIST_FILE = "auth-list.bin"
CACHE_FILE = "auth-cache.bin"
CACHE_ENTRIES = 100  # bounded: the oldest invalid entries, then the oldest valid ones go first
# A driver stands at the charger: an Authorize.req without an answer this soon is decided by
# the offline rules (the RPC default, for messages nobody waits for, is longer).
AUTHORIZE_TIMEOUT_MS = 15000

ACCEPTED, REFUSED, WAITING, STOPPING = "accepted", "refused", "waiting", "stopping"
UNLOCKING = "unlocking"  # a socket lock held for this token's session opens (charger.hold_lock)


class Tokens:
    def __init__(self, cp, fs):
        self.cp = cp
        cfg = cp.config
        self.list = auth.LocalList(fs, cp.root_path(LIST_FILE), cfg.get("LocalAuthListMaxLength"),
                                   cfg.get("SendLocalListMaxLength"))
        self.cache = auth.Cache(fs, cp.root_path(CACHE_FILE), CACHE_ENTRIES)
        self._asking = None  # (tag, purpose "start" | "stop") waiting for Authorize.conf
        self._granted = None  # (tag, group, tariff) of the authorization given last
        self.last = None  # the last outcome (the event's fields)

    # ---- presenting ------------------------------------------------------------------------

    def present(self, tag):
        cp = self.cp
        c = cp.charger
        tag = tag.upper()  # idTags are case-insensitive (7.28); a reader gives upper-case hex
        if self._asking is not None:
            return self._out(tag, REFUSED, "busy: waiting for the back end's answer on another token")
        if cp.st.frees_lock(tag, self.group_of(tag), self.group_of(c.lock_owner)):
            return self._out(tag, UNLOCKING, "the token whose session the lock is held for")
        if c.session:
            return self._present_to_stop(tag)
        if c.faults.any() or not c.available:
            return self._out(tag, REFUSED, "the charger is %s" % ("faulted" if c.faults.any() else "unavailable"))
        verdict = auth.decide(tag, cp.wall.now(), cp.online(), cp.config, self._list(), self._cache())
        if verdict[0] == "ask":
            self._asking = (tag, "start")
            return self._out(tag, WAITING, "asking the back end")
        return self._conclude(tag, verdict[0], verdict[1], verdict[2])

    def _present_to_stop(self, tag):
        tx = self.cp.transaction
        started_by = tx["tag"] if tx is not None else self.cp.charger.id_tag
        if started_by is not None and auth.fold(tag) == auth.fold(started_by):
            return self._stop(tag, "the token that started the session")
        group = tx.get("group") if tx is not None else None
        info = self._known(tag)
        if info is not None:
            if group is not None and auth.same_group(started_by, group, tag, info[2]):
                return self._stop(tag, "same group %s" % group)
            return self._out(tag, REFUSED, "not the token or group that started the session")
        if group is not None and self.cp.online():
            self._asking = (tag, "stop")  # 5.x: its parentIdTag is unknown here: ask
            return self._out(tag, WAITING, "asking the back end for the token's group")
        return self._out(tag, REFUSED, "not the token that started the session")

    def _stop(self, tag, why):
        self.cp.tx.stop_by = tag
        self.cp.charger.stop(chg.LOCAL)
        return self._out(tag, STOPPING, why)

    def _known(self, tag):
        info = self._list().lookup(tag) if self._list() is not None else None
        if info is None and self._cache() is not None:
            info = self._cache().lookup(tag)
        return info

    def _conclude(self, tag, kind, info, source):
        """Start (authorize the charger) or refuse, after the OCPP decision."""
        cp = self.cp
        c = cp.charger
        if kind != "accept":
            status = info[0] if info is not None else "Invalid"
            why = "unknown token while offline" if source == "offline" else "%s (%s)" % (status, source)
            return self._out(tag, REFUSED, why)
        group = info[2] if info is not None else None
        if group is None:
            group = self.group_of(tag)  # an answer without parentIdTag: what the list/cache say
        if cp.reservation is not None and not cp.reservation_matches(tag, group):
            if group is None and cp.reservation["parent"] and source != "back end" and cp.online():
                self._asking = (tag, "start")  # 5.13: its parentIdTag may be the reservation's
                return self._out(tag, WAITING, "asking the back end for the token's group (reserved)")
            return self._out(tag, REFUSED, "the connector is reserved for another driver")
        ok, tariff = cp.st.billing.may_charge(group, cp.wall.now())  # sharing windows, the tariff
        if not ok:
            return self._out(tag, REFUSED, tariff, group)
        if c.session or c.faults.any() or not c.available:
            return self._out(tag, REFUSED, "the charger can not start now")
        self.grant(tag, group, tariff)
        return self._out(tag, ACCEPTED, "from %s" % source, group, tariff)

    def grant(self, tag, group, tariff):
        """Authorize the charger for `tag` (a card here, or a remote start): the session that
        starts next is this token's, with its group and tariff."""
        cp = self.cp
        c = cp.charger
        c.authorize(tag)
        self._granted = (tag, group, tariff)
        cp.st.billing.authorized(tag, group, tariff)
        if not c.plugged:
            cp.remote.wait_for_car()  # ConnectionTimeOut: token first, the car must follow in time

    def take_grant(self, tag):
        """At the start of a session for `tag`: (group, tariff) of the grant given to it, else
        the group this charger knows for it (a free start: no tariff). The grant is used up."""
        g = self._granted
        self._granted = None
        if g is not None and g[0] == tag:
            return g[1], g[2]
        return self.group_of(tag), None

    async def learn_group(self, tag):
        """5.13: the parentIdTag of `tag` from an Authorize.req (learnt into the cache as any
        answer); None when the back end gives none, does not accept the token or does not answer."""
        try:
            res = await self.cp.call("Authorize", {"idTag": tag}, AUTHORIZE_TIMEOUT_MS)
        except RpcError:
            return None
        info = res["idTagInfo"]
        self.learn(tag, info)
        return info.get("parentIdTag") if info.get("status") == "Accepted" else None

    def pre_authorized(self, tag):
        """A remote start with AuthorizeRemoteTxRequests (5.11: "as if in response to a local
        action"): True when LocalPreAuthorize lets the local list or the cache accept `tag`, so
        that no Authorize.req is needed."""
        cp = self.cp
        return auth.decide(tag, cp.wall.now(), True, cp.config, self._list(), self._cache())[0] == "accept"

    # ---- the back end -----------------------------------------------------------------------

    async def send(self, now):
        """The ChargePoint's sender: the Authorize.req a driver at the charger waits for, if any."""
        if self._asking is None:
            return False
        await self.ask()
        return True

    async def ask(self):
        """Send the waiting Authorize.req and act on its answer."""
        tag, purpose = self._asking
        cp = self.cp
        try:
            res = await cp.call("Authorize", {"idTag": tag}, AUTHORIZE_TIMEOUT_MS)
        except RpcError as e:
            self._asking = None
            if e.code != TIMEOUT and e.code != CLOSED:
                # The back end answered, with a CallError or an Authorize.conf that fails its
                # schema: it is reachable, so the offline rules do not apply, and an answer that
                # can not be read accepts nobody.
                return self._out(tag, REFUSED, "the back end's answer to Authorize: %s" % e.code)
            # No answer: decide as offline (3.5.4: a Charge Point that can not reach the
            # Central System uses its local information).
            if purpose == "stop":
                return self._out(tag, REFUSED, "no answer from the back end: %s" % e.code)
            verdict = auth.decide(tag, cp.wall.now(), False, cp.config, self._list(), self._cache())
            return self._conclude(tag, verdict[0], verdict[1], "offline (%s)" % e.code)
        self._asking = None
        try:
            kind, info, conflict = auth.answer(tag, res["idTagInfo"], cp.wall.now(), cp.config, self._list(),
                                               self._cache())
        except (OSError, MemoryError, ValueError) as e:  # the cache could not learn it: decide anyway
            cp.note("authorization cache: %r" % (e,))
            kind, info, conflict = auth.answer(tag, res["idTagInfo"], cp.wall.now(), cp.config, self._list(), None)
        if conflict:
            cp.status.local_list_conflict()
        if purpose == "stop":
            tx = cp.transaction
            if cp.charger.session and tx is not None and info is not None and kind == "accept" \
                    and auth.same_group(tx["tag"], tx.get("group"), tag, info[2]):
                return self._stop(tag, "same group %s" % info[2])
            return self._out(tag, REFUSED, "not the token or group that started the session")
        return self._conclude(tag, kind, info, "back end")

    def learn(self, tag, id_tag_info):
        if tag and id_tag_info:
            try:
                conflict = auth.learn(tag, id_tag_info, self.cp.wall.now(), self.cp.config, self._list(),
                                      self._cache())
            except (OSError, MemoryError, ValueError) as e:  # the cache is only a cache
                self.cp.note("authorization cache: %r" % (e,))
                return
            if conflict:
                self.cp.status.local_list_conflict()

    def group_of(self, tag):
        info = self._known(tag) if tag else None
        return info[2] if info is not None else None

    # ---- the back end's calls on the list and the cache --------------------------------------

    async def ClearCache(self, p):
        return {"status": self.cache.clear()}

    async def GetLocalListVersion(self, p):
        if not self.cp.config.get("LocalAuthListEnabled"):
            return {"listVersion": -1}  # 5.10: -1 when the local list is not enabled
        return {"listVersion": self.list.version}

    async def SendLocalList(self, p):
        if not self.cp.config.get("LocalAuthListEnabled"):
            return {"status": "NotSupported"}
        ll = self.list
        status = await ll.update_async(p["listVersion"], p["updateType"], p.get("localAuthorizationList"))
        if status != "Accepted":
            self.cp.note("SendLocalList %s: %s" % (status, ll.reason))
        return {"status": status}

    # ---- helpers ----------------------------------------------------------------------------

    def _list(self):
        return self.list if self.cp.config.get("LocalAuthListEnabled") else None

    def _cache(self):
        return self.cache if self.cp.config.get("AuthorizationCacheEnabled") else None

    def _out(self, tag, result, reason, group=None, tariff=None):
        self.last = {"id_tag": tag, "result": result, "reason": reason, "group": group, "tariff": tariff}
        self.cp.st.emit("token", self.last)
        return result
