"""OCPP 1.6 configuration keys: the table, typed values, GetConfiguration and ChangeConfiguration.

    cfg = Config("/ocpp_config.json", fs=None, overrides={"ConnectorPhaseRotation": "1.RST"},
                 measurands=None)
    cfg.get("HeartbeatInterval") -> 86400       typed: bool, int, str, CSL as a tuple of str
    cfg.get_configuration(["HeartbeatInterval", "Foo"])
        -> {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False, "value": "86400"}],
            "unknownKey": ["Foo"]}                 the GetConfiguration.conf payload
    cfg.change("HeartbeatInterval", "300") -> "Accepted" | "Rejected" | "RebootRequired" |
        "NotSupported"; on anything but Accepted/RebootRequired `cfg.reason` says why
    cfg.set("HeartbeatInterval", 300)           the firmware's own change (e.g. the interval of
        BootNotification.conf); typed or string value; bypasses read-only and the SecurityProfile
        rule; raises KeyError (unknown key), ValueError (invalid) or OSError (not saved)
    cfg.listen(fn)                              fn(key, typed_value) after each saved change
    cfg.load_error / cfg.listener_error         str or None, for the owner to report
    cfg.ca_installed = True                     a Central System root CA is configured (profile 2)
    Config(..., readonly=("UnlockConnectorOnEVSideDisconnect",))   keys that this hardware makes
        read-only (a charger without a socket lock: errata 3.83), treated as the table's RO keys

Rules (OCPP 1.6 edition 2 sections 5.3, 5.8, 9; errata v4; security whitepaper edition 2):
- Key names are CiString50: matched case-insensitively, always reported with their spelling here.
- change(): unknown key -> NotSupported; read-only key -> Rejected; a value that is not of the
  key's type, out of bounds, a CSL member the charger does not support (errata 3.14.4), a list
  longer than its [Key]MaxLength, a string too long -> Rejected, and nothing changes. An
  accepted value is saved (store.write_json, atomic) before change() returns; if the save fails
  the answer is Rejected and the old value stays. Listeners run after the save; one that raises
  is counted (`listener_errors`, `listener_error`) and the others still run.
- Booleans: "true"/"false" in any case. Integers: decimal digits with an optional sign.
  CSL: items separated by commas, spaces around items ignored, items matched in any case and
  stored in their canonical spelling; an empty string is the empty list (errata 3.14.5: no meter
  values in StopTransaction); an empty item or an item listed twice is refused.
- Measurand lists (MeterValuesSampledData, MeterValuesAlignedData, StopTxnSampledData,
  StopTxnAlignedData) accept what meter.measurands() delivers: Energy.Active.Import.Register,
  Power.Active.Import, Current.Import, Current.Offered, Voltage, and, "where applicable, the
  Measurand combined with the phase" (9.1.17), Current.Import.L1/L2/L3 and Voltage.L1-N/L2-N/L3-N
  (the meter measures line-to-neutral voltages; "Voltage.L1" is refused). A bare Current.Import
  or Voltage means every phase (errata 3.14.3). A station with less than a Modbus meter passes
  `measurands=` (e.g. S0: energy, power, Current.Offered) so the lists refuse what it cannot send.
- AuthorizationKey is write-only (whitepaper 7.2): never in GetConfiguration (asked for by name
  it goes to unknownKey, which discloses nothing, not even whether a key is set), never in a
  reason, load_error, listener_error or exception text. Its form (A00.FR.205/304, 7.2): 16 to 20
  bytes written as 32 to 40 hexadecimal digits (an even count); a ChangeConfiguration with
  anything else is Rejected (A01.FR.04: the Central System keeps the old credentials). The
  owner's own value (overrides, set(); e.g. a factory password from the settings) may be any
  string of at most 40 characters, so a charger whose back end issued another form can still
  connect; "" = no key. It is stored in clear text in the config file, as A01.FR.10 requires.
  Accepted at once: the owner's listener disconnects and reconnects with it (A01 steps 3-4).
- SecurityProfile (whitepaper 7.6, A05): default 0; over OCPP it can only be raised: a value
  lower than or EQUAL to the current one is Rejected (A05.FR.01); 1 or 2 need an
  AuthorizationKey of the whitepaper's form (A05.FR.02); 2 needs `ca_installed` (A05.FR.03);
  3 is Rejected because this charger has no client certificate (A05.FR.04). Accepted, not
  RebootRequired: the owner's listener reconnects with the new profile (A05.FR.06/07); falling
  back to the previous profile when that fails (A05.FR.08) is done with set(), which may lower
  it.
- CpoName is not here: it only feeds the CSR of SignCertificate (A02/A03), i.e. profile 3 client
  certificates, which this charger does not do. Likewise CertificateSignedMaxChainSize and
  CertificateStoreMaxLength (certificate management is not supported).
  AdditionalRootCertificateCheck is reported false (required once profile 2 is implemented).
- get_configuration(): no keys (None or []) -> every key but the write-only ones, in table order;
  with keys -> each known key once, unknown and write-only ones in unknownKey as requested (cut
  to 50 characters so the answer always fits the schema). Empty lists are left out (both arrays
  are optional in GetConfigurationResponse.json). Values are strings of at most 500 characters.
  GetConfigurationMaxKeys is not enforced here: the handler compares len(keys) with it.

Persistence: the file is a JSON object {key: value string} holding only the read-write keys
whose value differs from the default (the table's, or the owner's override). Read-only keys are
facts of the firmware and the hardware, given by the table and the overrides: set() can change
them in RAM, they are never saved, and a read-only key found in the file is ignored.
Loading: values = table defaults, then `overrides`, then the file. A missing file is no error; a
corrupt one (store.read_json raises ValueError) or an unreadable one leaves the defaults, sets
`load_error` and the station keeps running (the next change rewrites the file). Unknown, read-only
or invalid entries are ignored and named in `load_error`. Invalid `overrides` are a programming
or settings error: ValueError naming the key (never a secret value).

RAM: TABLE and the member lists are tuples of constants, which mpy-cross folds into constant
objects: frozen into flash on the ESP32 they cost no RAM, and a key is found by binary search
over the sorted TABLE (no dict of 44 entries, ~2 KB, built at import). A Config holds two dicts
of only the values that differ from the table (`_d` the owner's overrides, `_v` the changes),
typed, so an untouched charger holds two empty dicts. Measured on the 64-bit unix port (the
32-bit ESP32 needs about half): a fresh Config 384 B, with 5 changed values ~700 B; a
get_configuration() of all 43 reported keys ~6 KB while it lives, plus ~3.3 KB of JSON text
once serialized (test_config.py prints the figures).
get() is a binary search plus two dict lookups: fine for slow tasks, but the control loop should
take its values from a listener instead.

The keys. RO = read-only for the Central System, W = write-only. No key needs a reboot
(RebootRequired): every part reads its value when it next uses it or is told by a listener;
the flag (B) exists for a key that someday cannot be applied live, and a key carrying it would
be saved at once and answered RebootRequired.

key                               type     default / bounds                           used by
--------------------------------- -------- ------------------------------------------ --------------
Core profile (section 9.1, errata 3.79-3.83)
AllowOfflineTxForUnknownId        bool     false                                      auth (issue 5)
AuthorizationCacheEnabled         bool     true (the cache is what lets known drivers auth (issue 5)
                                           charge offline with LocalAuthorizeOffline)
AuthorizeRemoteTxRequests         bool     false (MicroOcpp)                          RemoteStart
ClockAlignedDataInterval          int      0, 0..86400 s; 0 = none                    aligned meter values
ConnectionTimeOut                 int      30, 1..3600 s                              Preparing timeout
ConnectorPhaseRotation            CSL      "1.Unknown"; items 0|1.NotApplicable|Unknown| reported; the
                                           RST|RTS|SRT|STR|TRS|TSR, one per connector   board overrides it
ConnectorPhaseRotationMaxLength   int RO   2 (connector 0 = grid, 1)                  limits the above
GetConfigurationMaxKeys           int RO   50 (>= the 44 keys)                        GetConfiguration
HeartbeatInterval                 int      86400, 0..518400 s; 0 = no heartbeat       heartbeat task
                                           (6 days: every interval * 1000 stays below
                                           2^29 ms, the reach of ticks_add/ticks_diff)
LocalAuthorizeOffline             bool     true                                       auth (issue 5)
LocalPreAuthorize                 bool     false                                      auth (issue 5)
MessageTimeout                    int      30, 1..600 s (errata 3.82)                 Rpc.timeout_ms
MeterValueSampleInterval          int      60, 0..86400 s; 0 = none                   sampled meter values
MeterValuesAlignedData            CSL      "Energy.Active.Import.Register,             aligned meter values
                                           Power.Active.Import" (MicroOcpp)
MeterValuesAlignedDataMaxLength   int RO   11 (every distinct supported item)         limits the above
MeterValuesSampledData            CSL      as MeterValuesAlignedData (MicroOcpp)      sampled meter values
MeterValuesSampledDataMaxLength   int RO   11                                         limits the above
NumberOfConnectors                int RO   1 (bounds 1..1)                            reported
ResetRetries                      int      2, 0..10 (MicroOcpp)                       Reset handler
StopTransactionOnEVSideDisconnect bool RO  true: unplugging always ends the session    reported
                                           (errata 3.79 allows R)
StopTransactionOnInvalidId        bool     true                                       StartTx.conf handling
StopTxnAlignedData                CSL      "" (no values in StopTransaction)          StopTransaction
StopTxnAlignedDataMaxLength       int RO   11                                         limits the above
StopTxnSampledData                CSL      ""                                         StopTransaction
StopTxnSampledDataMaxLength       int RO   11                                         limits the above
SupportedFeatureProfiles          CSL RO   "Core,FirmwareManagement,LocalAuthListManagement,
                                           Reservation,SmartCharging,RemoteTrigger"   reported
SupportedFeatureProfilesMaxLength int RO   6 (errata 3.80: optional, harmless)        limits the above
TransactionMessageAttempts        int      3, 1..10 (MicroOcpp)                       Outbox.configure
TransactionMessageRetryInterval   int      60, 0..86400 s (MicroOcpp)                 Outbox.configure
UnlockConnectorOnEVSideDisconnect bool     true: the lock opens when the car leaves;    charger (lock)
                                           RO false without a lock (readonly=, errata 3.83:
                                           a fixed cable reports false)
WebSocketPingInterval             int      60, 0..3600 s; 0 = no client pings         Link.ping_interval_s
Firmware Management (errata 3.88)
SupportedFileTransferProtocols    CSL RO   "HTTP,HTTPS"                               UpdateFirmware (issue 6)
Local Auth List Management (9.2)
LocalAuthListEnabled              bool     true (MicroOcpp)                           auth (issue 5)
LocalAuthListMaxLength            int RO   1000 (flash-backed list)                   SendLocalList
SendLocalListMaxLength            int RO   25 (full entries of ~125 B fit the 4 KB     SendLocalList
                                           receive buffer, rpc.MAX_FRAME)
Reservation (9.3)
ReserveConnectorZeroSupported     bool RO  false (reserve connector 1 instead)        ReserveNow
Smart Charging (9.4)
ChargeProfileMaxStackLevel        int RO   8                                          SetChargingProfile
ChargingScheduleAllowedChargingRateUnit CSL RO "Current,Power"                        SetChargingProfile
ChargingScheduleMaxPeriods        int RO   24                                         SetChargingProfile
ConnectorSwitch3to1PhaseSupported bool RO  true with a phase switch, else false        SetChargingProfile
MaxChargingProfilesInstalled      int RO   8                                          SetChargingProfile
Security whitepaper (section 7)
AdditionalRootCertificateCheck    bool RO  false (no certificate management)          reported
AuthorizationKey                  str W    "" = none; 32..40 hex digits               ws basic auth password
SecurityProfile                   int      0, 0..3, only raised over OCPP             ws URL scheme / auth

Optional keys left out, because their presence would promise a function the firmware lacks:
BlinkRepeat, LightIntensity (no controllable lighting), MaxEnergyOnInvalidId (the charger stops
or goes on, it does not cap energy), MinimumStatusDuration (StatusNotification is not delayed),
StopTransactionMaxMeterValues (errata 3.89: add it with the StopTransaction builder, whose frame
size decides it).
"""

from firmware import store
from firmware import Many

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

# const: the compiler puts the number itself into TABLE, which keeps TABLE a constant object.
R = const(1)  # read-only for the Central System
W = const(2)  # write-only: never reported
B = const(4)  # a change takes effect after a reboot: answered RebootRequired

MEASURANDS = (
    "Energy.Active.Import.Register",
    "Power.Active.Import",
    "Current.Import",
    "Current.Import.L1",
    "Current.Import.L2",
    "Current.Import.L3",
    "Current.Offered",
    "Voltage",
    "Voltage.L1-N",
    "Voltage.L2-N",
    "Voltage.L3-N",
)

# (name, kind, default, a, b, flags), sorted by name (binary search). Only literals and const()
# numbers in here (no names of other tuples): mpy-cross then makes the whole table one constant
# object, in flash when frozen; test_config.py checks it. kind:
#   "b" boolean                    a, b unused
#   "i" integer                    a = minimum, b = maximum
#   "c" comma-separated list       a = allowed members (None: the Config's measurands),
#                                  b = the [Key]MaxLength key limiting the item count, or None
#   "s" string                     a = maximum length, b = form ("hex": AuthorizationKey)
TABLE = (
    ("AdditionalRootCertificateCheck", "b", False, None, None, R),
    ("AllowOfflineTxForUnknownId", "b", False, None, None, 0),
    ("AuthorizationCacheEnabled", "b", True, None, None, 0),
    ("AuthorizationKey", "s", "", 40, "hex", W),
    ("AuthorizeRemoteTxRequests", "b", False, None, None, 0),
    ("ChargeProfileMaxStackLevel", "i", 8, 0, 100, R),
    ("ChargingScheduleAllowedChargingRateUnit", "c", ("Current", "Power"), ("Current", "Power"),
     None, R),
    ("ChargingScheduleMaxPeriods", "i", 24, 1, 100, R),
    ("ClockAlignedDataInterval", "i", 0, 0, 86400, 0),
    ("ConnectionTimeOut", "i", 30, 1, 3600, 0),
    ("ConnectorPhaseRotation", "c", ("1.Unknown",),
     ("0.NotApplicable", "0.Unknown", "0.RST", "0.RTS", "0.SRT", "0.STR", "0.TRS", "0.TSR",
      "1.NotApplicable", "1.Unknown", "1.RST", "1.RTS", "1.SRT", "1.STR", "1.TRS", "1.TSR"),
     "ConnectorPhaseRotationMaxLength", 0),
    ("ConnectorPhaseRotationMaxLength", "i", 2, 1, 2, R),
    ("ConnectorSwitch3to1PhaseSupported", "b", False, None, None, R),
    ("GetConfigurationMaxKeys", "i", 50, 44, 100, R),
    ("HeartbeatInterval", "i", 86400, 0, 518400, 0),
    ("LocalAuthListEnabled", "b", True, None, None, 0),
    ("LocalAuthListMaxLength", "i", 1000, 0, 10000, R),
    ("LocalAuthorizeOffline", "b", True, None, None, 0),
    ("LocalPreAuthorize", "b", False, None, None, 0),
    ("MaxChargingProfilesInstalled", "i", 8, 1, 100, R),
    ("MessageTimeout", "i", 30, 1, 600, 0),
    ("MeterValueSampleInterval", "i", 60, 0, 86400, 0),
    ("MeterValuesAlignedData", "c", ("Energy.Active.Import.Register", "Power.Active.Import"),
     None, "MeterValuesAlignedDataMaxLength", 0),
    ("MeterValuesAlignedDataMaxLength", "i", 11, 0, 11, R),
    ("MeterValuesSampledData", "c", ("Energy.Active.Import.Register", "Power.Active.Import"),
     None, "MeterValuesSampledDataMaxLength", 0),
    ("MeterValuesSampledDataMaxLength", "i", 11, 0, 11, R),
    ("NumberOfConnectors", "i", 1, 1, 1, R),
    ("ReserveConnectorZeroSupported", "b", False, None, None, R),
    ("ResetRetries", "i", 2, 0, 10, 0),
    ("SecurityProfile", "i", 0, 0, 3, 0),
    ("SendLocalListMaxLength", "i", 25, 1, 1000, R),
    ("StopTransactionOnEVSideDisconnect", "b", True, None, None, R),
    ("StopTransactionOnInvalidId", "b", True, None, None, 0),
    ("StopTxnAlignedData", "c", (), None, "StopTxnAlignedDataMaxLength", 0),
    ("StopTxnAlignedDataMaxLength", "i", 11, 0, 11, R),
    ("StopTxnSampledData", "c", (), None, "StopTxnSampledDataMaxLength", 0),
    ("StopTxnSampledDataMaxLength", "i", 11, 0, 11, R),
    ("SupportedFeatureProfiles", "c",
     ("Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation", "SmartCharging",
      "RemoteTrigger"),
     ("Core", "FirmwareManagement", "LocalAuthListManagement", "Reservation", "SmartCharging",
      "RemoteTrigger"),
     "SupportedFeatureProfilesMaxLength", R),
    ("SupportedFeatureProfilesMaxLength", "i", 6, 1, 6, R),
    ("SupportedFileTransferProtocols", "c", ("HTTP", "HTTPS"), ("FTP", "FTPS", "HTTP", "HTTPS"),
     None, R),
    ("TransactionMessageAttempts", "i", 3, 1, 10, 0),
    ("TransactionMessageRetryInterval", "i", 60, 0, 86400, 0),
    ("UnlockConnectorOnEVSideDisconnect", "b", True, None, None, 0),
    ("WebSocketPingInterval", "i", 60, 0, 3600, 0),
)

_MAX_VALUE = 500  # CiString500Type: ChangeConfiguration.req value, KeyValue value
_MAX_KEY = 50  # CiString50Type: key names, unknownKey items
_HEX = "0123456789abcdefABCDEF"


def find(name):
    """The TABLE entry for `name`, or None. Exact match first (binary search), then any case."""
    if type(name) is not str:
        return None
    t = TABLE
    lo = 0
    hi = len(t)
    while lo < hi:
        mid = (lo + hi) // 2
        k = t[mid][0]
        if k == name:
            return t[mid]
        if k < name:
            lo = mid + 1
        else:
            hi = mid
    n = len(name)
    low = None
    for e in t:
        if len(e[0]) == n:
            if low is None:
                low = name.lower()
            if e[0].lower() == low:
                return e
    return None


def text(value):
    """A typed value (bool, int, str, tuple or list of str) in OCPP's string form, or None."""
    t = type(value)
    if t is bool:
        return "true" if value else "false"
    if t is int:
        return str(value)
    if t is str:
        return value
    if t is tuple or t is list:
        for m in value:
            if type(m) is not str:
                return None
        return ",".join(value)
    return None


def _kind(e):
    k = e[1]
    if k == "b":
        return "a boolean"
    if k == "i":
        return "an integer"
    if k == "c":
        return "a list of strings"
    return "a string"


def _text_for(e, value):
    # text(value) for entry e; a string key takes only a string.
    if e[1] == "s" and type(value) is not str:
        return None
    return text(value)


def _clip(s, n=40):
    if type(s) is not str:
        s = str(s)
    if len(s) > n:
        return repr(s[:n]) + "..."
    return repr(s)


def _show(e, s):
    # A value as it may appear in a message: never a write-only one.
    if e[5] & W:
        return "a value of %d characters (not shown)" % len(s)
    return _clip(s)


def _member(members, item):
    for m in members:
        if m == item:
            return m
    low = None
    for m in members:
        if len(m) == len(item):
            if low is None:
                low = item.lower()
            if m.lower() == low:
                return m
    return None


class Config:
    def __init__(self, path, fs=None, overrides=None, measurands=None, readonly=()):
        self.path = path
        self.fs = fs
        self.measurands = MEASURANDS if measurands is None else tuple(measurands)
        self.ca_installed = False
        self.reason = None
        self.load_error = None
        self.listener_errors = 0
        self.listener_error = None
        self._fns = []
        self._d = {}  # the owner's defaults that differ from the table
        self._v = {}  # values that differ from the effective default
        self._ro = readonly  # keys the owner makes read-only: facts of this hardware (errata 3.83)
        if overrides:
            self._override(overrides)
        self._load()

    # ---- reading ----

    def get(self, key):
        e = find(key)
        if e is None:
            raise KeyError(key)
        return self._get(e)

    def _get(self, e):
        n = e[0]
        if n in self._v:
            return self._v[n]
        if n in self._d:
            return self._d[n]
        return e[2]

    def _default(self, e):
        n = e[0]
        if n in self._d:
            return self._d[n]
        return e[2]

    def get_configuration(self, keys=None):
        """The GetConfiguration.conf payload for the requested keys (None or empty: all)."""
        known = Many()  # up to 45 keys of up to 500 characters: sent a key at a time
        unknown = Many()
        if not keys:
            for e in TABLE:
                if not e[5] & W:
                    known.append(self._kv(e))
        else:
            seen = []
            for k in keys:
                e = find(k)
                if e is None or e[5] & W:
                    k = (k if type(k) is str else str(k))[:_MAX_KEY]
                    if k not in unknown:
                        unknown.append(k)
                elif e[0] not in seen:
                    seen.append(e[0])
                    known.append(self._kv(e))
        out = {}
        if known:
            out["configurationKey"] = known
        if unknown:
            out["unknownKey"] = unknown
        return out

    def _kv(self, e):
        return {"key": e[0], "readonly": bool(self._flags(e) & R), "value": text(self._get(e))}

    def _flags(self, e):
        return e[5] | R if e[0] in self._ro else e[5]

    # ---- changing ----

    def change(self, key, value):
        """ChangeConfiguration.req from the Central System: the ConfigurationStatus to answer."""
        self.reason = None
        e = find(key)
        if e is None:
            self.reason = "unknown configuration key %s" % _clip(key)
            return "NotSupported"
        name = e[0]
        if self._flags(e) & R:
            self.reason = "%s is read-only" % name
            return "Rejected"
        if type(value) is not str:
            self.reason = "%s: expected the value as a string" % name
            return "Rejected"
        v, why = self._parse(e, value, True)
        if why is None and name == "SecurityProfile":
            why = self._check_profile(v)
        if why is not None:
            self.reason = why
            return "Rejected"
        if v == self._get(e):
            return "Accepted"
        why = self._store(e, v)
        if why is not None:
            self.reason = why
            return "Rejected"
        self._notify(e, v)
        return "RebootRequired" if e[5] & B else "Accepted"

    def set(self, key, value):
        """The firmware's own change. Returns True when the value changed (saved, listeners
        told). Read-only keys change in RAM only; SecurityProfile may be lowered (fallback,
        A05.FR.08); AuthorizationKey may be set to "" (no key)."""
        e = find(key)
        if e is None:
            raise KeyError(key)
        s = _text_for(e, value)
        if s is None:
            raise ValueError("%s: expected %s, got a %s" % (e[0], _kind(e),
                                                           type(value).__name__))
        if s == "" and e[1] == "s":
            v = ""
        else:
            v, why = self._parse(e, s)
            if why is not None:
                raise ValueError(why)
        if v == self._get(e):
            return False
        why = self._store(e, v)
        if why is not None:
            raise OSError(why)
        self._notify(e, v)
        return True

    def listen(self, fn):
        """Call fn(key, typed_value) after every saved change. Returns fn."""
        self._fns.append(fn)
        return fn

    def _check_profile(self, v):
        cur = self._get(find("SecurityProfile"))
        if v <= cur:
            return ("SecurityProfile: %d is not higher than the current profile %d; over OCPP "
                    "the profile can only be raised (whitepaper A05.FR.01)" % (v, cur))
        if v == 3:
            return ("SecurityProfile: 3 needs a client certificate, which this charger does not "
                    "support (whitepaper A05.FR.04)")
        k = find("AuthorizationKey")
        if self._parse(k, self._get(k), True)[1] is not None:
            return ("SecurityProfile: %d needs an AuthorizationKey of 32 to 40 hexadecimal "
                    "digits (whitepaper A05.FR.02); set one first" % v)
        if v == 2:
            ok = self.ca_installed() if callable(self.ca_installed) else self.ca_installed
            if not ok:
                return ("SecurityProfile: 2 needs a Central System root certificate; none is "
                        "installed (whitepaper A05.FR.03)")
        return None

    def _store(self, e, v):
        # Keep v, save the file (not for read-only keys); on failure restore and say why.
        n = e[0]
        had = n in self._v
        old = self._v.get(n)
        if v == self._default(e):
            self._v.pop(n, None)
        else:
            self._v[n] = v
        if self._flags(e) & R:
            return None
        try:
            self._save()
        except Exception as ex:  # OSError on a full or failing flash, MemoryError
            if had:
                self._v[n] = old
            else:
                self._v.pop(n, None)
            return "%s: the value could not be saved (%s), nothing changed" % (
                n, type(ex).__name__)
        return None

    def _save(self):
        doc = {}
        for n in self._v:
            e = find(n)
            if not self._flags(e) & R:
                doc[n] = text(self._v[n])
        store.write_json(self.path, doc, self.fs)

    def _notify(self, e, v):
        for fn in self._fns:
            try:
                fn(e[0], v)
            except Exception as ex:
                self.listener_errors += 1
                if e[5] & W:
                    what = type(ex).__name__
                else:
                    what = "%s: %s" % (type(ex).__name__, ex)
                self.listener_error = "listener for %s failed: %s" % (e[0], what)

    # ---- validation ----

    def _parse(self, e, s, ocpp=False):
        """(typed value, None), or (None, a reason naming the key, the value and what is
        expected) for the OCPP string s. `ocpp`: it comes from the Central System, so
        AuthorizationKey must have the whitepaper's form."""
        name = e[0]
        kind = e[1]
        if len(s) > _MAX_VALUE:
            return None, "%s: the value has %d characters, at most %d are allowed" % (
                name, len(s), _MAX_VALUE)
        if kind == "b":
            low = s.strip().lower()
            if low == "true":
                return True, None
            if low == "false":
                return False, None
            return None, "%s: expected true or false, got %s" % (name, _show(e, s))
        if kind == "i":
            t = s.strip()
            d = t[1:] if t[:1] in ("-", "+") else t
            ok = 0 < len(d) <= 9
            for c in d:
                if c < "0" or c > "9":
                    ok = False
                    break
            v = int(t) if ok else None
            if v is None or v < e[3] or v > e[4]:
                return None, "%s: expected an integer from %d to %d, got %s" % (
                    name, e[3], e[4], _show(e, s))
            return v, None
        if kind == "c":
            return self._parse_csl(e, s)
        # string
        if len(s) > e[3] and not (ocpp and e[4] == "hex"):
            return None, "%s: expected at most %d characters, got %d" % (name, e[3], len(s))
        if ocpp and e[4] == "hex":
            n = len(s)
            ok = 32 <= n <= 40 and n % 2 == 0
            for c in s:
                if c not in _HEX:
                    ok = False
                    break
            if not ok:
                return None, ("%s: expected 16 to 20 bytes written as 32 to 40 hexadecimal "
                              "digits (an even count), got %s" % (name, _show(e, s)))
        return s, None

    def _parse_csl(self, e, s):
        name = e[0]
        members = e[3] if e[3] is not None else self.measurands
        if s.strip() == "":
            items = ()
        else:
            out = []
            for part in s.split(","):
                p = part.strip()
                if not p:
                    return None, "%s: empty item in %s; expected items separated by commas" % (
                        name, _show(e, s))
                m = _member(members, p)
                if m is None:
                    return None, "%s: %s is not supported; expected a comma-separated list of: %s" % (
                        name, _clip(p), ", ".join(members))
                if m in out:
                    return None, "%s: %s is listed twice" % (name, m)
                out.append(m)
            items = tuple(out)
        if name == "ConnectorPhaseRotation":
            for i in range(len(items)):
                for j in range(i):
                    if items[i][:2] == items[j][:2]:
                        return None, "%s: connector %s has two rotations in %s" % (
                            name, items[i][:1], _show(e, s))
        if e[4] is not None:
            limit = self._get(find(e[4]))
            if len(items) > limit:
                return None, "%s: %d items in %s, at most %d (%s)" % (
                    name, len(items), _show(e, s), limit, e[4])
        return items, None

    # ---- loading ----

    def _override(self, overrides):
        # Lists last: their item limit may itself be overridden.
        for lists in (False, True):
            for k in overrides:
                e = find(k)
                if e is None:
                    raise ValueError("configuration override: unknown key %s" % _clip(k))
                if (e[1] == "c") != lists:
                    continue
                s = _text_for(e, overrides[k])
                if s is None:
                    raise ValueError("configuration override %s: expected %s, got a %s" % (
                        e[0], _kind(e), type(overrides[k]).__name__))
                if s == text(e[2]):
                    continue
                v, why = self._parse(e, s)
                if why is not None:
                    raise ValueError("configuration override " + why)
                if v != e[2]:
                    self._d[e[0]] = v

    def _load(self):
        try:
            doc = store.read_json(self.path, self.fs)
        except ValueError as ex:
            self.load_error = "%s: %s; using the defaults" % (self.path, ex)
            return
        except OSError as ex:
            self.load_error = "%s: could not be read (%s); using the defaults" % (
                self.path, type(ex).__name__)
            return
        if doc is None:
            return
        if type(doc) is not dict:
            self.load_error = "%s: not a JSON object; using the defaults" % self.path
            return
        problems = []
        for k in doc:
            e = find(k)
            if e is None:
                problems.append("unknown key %s ignored" % _clip(k))
                continue
            if self._flags(e) & R:
                problems.append("%s is read-only, ignored" % e[0])
                continue
            s = _text_for(e, doc[k])
            if s is None:
                problems.append("%s: not a string, ignored" % e[0])
                continue
            if s == "" and e[1] == "s":
                v, why = "", None  # a key removed with set()
            else:
                v, why = self._parse(e, s)
            if why is not None:
                problems.append(why + ", ignored")
                continue
            if v == self._default(e):
                self._v.pop(e[0], None)
            else:
                self._v[e[0]] = v
        if problems:
            self.load_error = "%s: %s" % (self.path, "; ".join(problems))
