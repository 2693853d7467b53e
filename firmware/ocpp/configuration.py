"""Configuration (OCPP 1.6 sections 5.3, 5.8, 9; the security whitepaper's A01 and A05):
GetConfiguration and ChangeConfiguration over the key store (config.py), what a change means for
the link, the outbox and the charger, and the security profile: an upgrade reconnects with the
new profile and falls back to the old one after PROFILE_TRIES failed connections (A05.FR.08); a
new AuthorizationKey reconnects with it (A01)."""
from firmware.ocpp import rpc as rpc_mod
from firmware.ocpp.rpc import RpcError

PROFILE_TRIES = 3  # failed connections with a raised SecurityProfile before falling back (A05.FR.08)


class Configuration:
    def __init__(self, cp):
        self.cp = cp
        self._profile_fails = 0
        cp.charger.set_unlock_on_ev_disconnect(cp.config.get("UnlockConnectorOnEVSideDisconnect"))
        cp.config.listen(self._config_changed)

    def url(self, profile=None):
        """The back end's URL for a security profile (the configured one by default): 2 is TLS
        (whitepaper 7.2), so a ws:// URL becomes wss:// at the same host, port and path."""
        if profile is None:
            profile = self.cp.config.get("SecurityProfile")
        url = self.cp.opts.url
        if profile >= 2 and url.startswith("ws://"):
            return "wss://" + url[5:]
        return url

    # ---- the link tells ------------------------------------------------------------------

    def connected(self):
        """A connection succeeded: a raised profile stays."""
        cp = self.cp
        if cp.kept["pf"] is not None:
            cp.kept["pf"] = None
            cp.save()

    def connect_failed(self, reason):
        """A connection failed: with a raised profile, after PROFILE_TRIES, back to the one
        before (A05.FR.08), so that the charger does not lock itself out."""
        cp = self.cp
        back = cp.kept["pf"]
        if back is None:
            return
        self._profile_fails += 1
        if self._profile_fails < PROFILE_TRIES:
            return
        now = cp.config.get("SecurityProfile")
        cp.kept["pf"] = None
        try:
            cp.config.set("SecurityProfile", back)
        except (OSError, ValueError) as e:  # the flash: the old profile holds until the next boot
            cp.note("SecurityProfile %d not saved: %s" % (back, e))
        cp.link.url = self.url(back)
        cp.save()
        cp.note("could not connect with SecurityProfile %d (%s): back to %d" % (now, reason, back))

    # ---- the back end's calls ---------------------------------------------------------------

    async def GetConfiguration(self, p):
        cfg = self.cp.config
        keys = p.get("key")
        most = cfg.get("GetConfigurationMaxKeys")
        if keys is not None and len(keys) > most:
            raise RpcError(rpc_mod.OCCURENCE, "at most %d keys per request (GetConfigurationMaxKeys)" % most)
        return cfg.get_configuration(keys)

    async def ChangeConfiguration(self, p):
        cp = self.cp
        was = cp.config.get("SecurityProfile")
        status = cp.config.change(p["key"], p["value"])
        if status == "Rejected" and getattr(cp.config, "reason", None):
            cp.note(cp.config.reason)
        now = cp.config.get("SecurityProfile")
        if now != was:
            self._raise_profile(was, now)
        return {"status": status}

    def _raise_profile(self, was, now):
        # Whitepaper A05: answered Accepted, then a new connection with the new profile; the
        # old one is kept in ocpp.json until a connection with the new one has succeeded.
        cp = self.cp
        if cp.kept["pf"] is None:
            cp.kept["pf"] = was
        self._profile_fails = 0
        cp.save()
        if cp.link is not None:
            cp.link.url = self.url(now)
        cp.relink = "SecurityProfile raised from %d to %d" % (was, now)
        cp.note(cp.relink + ": reconnecting with it")

    def _config_changed(self, key, value):
        """What a saved change means for the hub's parts: the outbox, the link, the charger."""
        cp = self.cp
        if key == "TransactionMessageAttempts":
            cp.outbox.configure(attempts=value)
        elif key == "TransactionMessageRetryInterval":
            cp.outbox.configure(retry_interval_s=value)
        elif key == "WebSocketPingInterval" and cp.link is not None:
            cp.link.ping_interval_s = value
        elif key == "AuthorizationKey" and cp.link is not None:
            # Whitepaper A01: answered Accepted, then a new connection with the new key (the
            # sender reconnects once the answer is out); logged, never with the key (A01.FR.11/12).
            cp.link.password = value
            cp.relink = "AuthorizationKey changed"
            cp.note("AuthorizationKey changed: reconnecting with the new key")
        elif key == "MessageTimeout" and cp.rpc is not None:
            cp.rpc.timeout_ms = value * 1000
        elif key == "UnlockConnectorOnEVSideDisconnect":
            cp.charger.set_unlock_on_ev_disconnect(value)
