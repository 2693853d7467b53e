"""Driver tokens at a charger with a back end (firmware/ocpp/tokens.py + firmware/auth.py):
card then plug, plug then card, online and offline decisions, the local list and the cache from
the back end's commands, stopping by the same token or its group, late rejections. Virtual time,
CPython; the same flows run end to end on MicroPython in test_token_scenarios.py."""
import asyncio

import pytest

from test_chargepoint import PAID, Bench, aio  # noqa: F401 (aio is a decorator)

from firmware import auth
from offdevice import history


async def present(b, tag, ms=500):
    b.cp.tokens.present(tag)
    await b.run(ms)
    return b.cp.tokens.last


async def send_list(b, version, entries, kind="Full"):
    return (await b.ok("SendLocalList", {"listVersion": version, "updateType": kind,
                                         "localAuthorizationList": entries}))["status"]


def entry(tag, status="Accepted", parent=None, expiry=None):
    info = {"status": status}
    if parent:
        info["parentIdTag"] = parent
    if expiry:
        info["expiryDate"] = expiry
    return {"idTag": tag, "idTagInfo": info}


async def config(b, key, value):
    assert (await b.ok("ChangeConfiguration", {"key": key, "value": value}))["status"] == "Accepted"


# ------------------------------------------------------------------ starting

@aio
async def test_card_then_plug_online(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    out = await present(b, "04A1B2C3")
    assert out["result"] == "accepted" and "back end" in out["reason"]
    assert b.backend.sent("Authorize") == [{"idTag": "04A1B2C3"}]
    assert b.st.charger.authorized and not b.st.charger.session
    await b.charge()
    start = b.backend.sent("StartTransaction")[0]
    assert start["idTag"] == "04A1B2C3"
    # 3.5.1: the answer went into the cache
    assert b.cp.tokens.cache.lookup("04A1B2C3")[0] == "Accepted"


@aio
async def test_plug_then_card(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.plug()
    b.act("ev-ready", 16)
    await b.run(2000)
    assert not b.st.charger.session  # nobody authorized yet
    assert (await present(b, "CARD1"))["result"] == "accepted"
    assert await b.until(lambda: b.st.charger.contactor, 5000)
    await b.run(300)
    assert b.backend.sent("StartTransaction")[0]["idTag"] == "CARD1"


@aio
async def test_card_without_a_car_lapses_after_connection_timeout(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "ConnectionTimeOut", "20")
    assert (await present(b, "CARD1"))["result"] == "accepted"
    assert b.cp.status.connector_status() == "Preparing"
    await b.idle(21000)
    await b.run(200)
    assert not b.st.charger.authorized
    b.act("plug", 32)
    b.act("ev-ready", 16)
    await b.run(3000)
    assert not b.st.charger.session and b.backend.sent("StartTransaction") == []


@aio
async def test_unknown_card_refused_online(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    b.backend.id_tags["BAD1"] = {"status": "Invalid"}
    out = await present(b, "BAD1")
    assert out["result"] == "refused" and "Invalid" in out["reason"]
    await b.plug()
    b.act("ev-ready", 16)
    await b.run(3000)
    assert not b.st.charger.session


@aio
async def test_expired_and_blocked_tokens_never_start(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert await send_list(b, 3, [entry("OLD1", expiry="2020-01-01T00:00:00Z"), entry("BLK1", "Blocked")]) == "Accepted"
    b.backend.id_tags["OLD1"] = {"status": "Expired"}
    b.backend.id_tags["BLK1"] = {"status": "Blocked"}
    for tag in ("OLD1", "BLK1"):
        assert (await present(b, tag))["result"] == "refused"  # asked online: the back end says so
    await b.down()
    for tag in ("OLD1", "BLK1"):
        assert (await present(b, tag))["result"] == "refused"  # offline: from the list
    assert not b.st.charger.authorized


@aio
async def test_with_a_back_end_a_car_waits_for_a_token_unless_free_charging_is_set(tmp_path):
    """free_charging unset (null) and an ocpp_url: an operator's charger, so a car plugged in
    charges only once a token is accepted, and the card presented after plugging in starts the
    session (it is not taken for a stop)."""
    b = await Bench.start(tmp_path, free_charging=None)
    assert b.st.settings.get("free_charging") is False
    await b.plug()
    await b.run(3000)
    assert not b.st.charger.session and b.backend.sent("StartTransaction") == []
    out = await present(b, "LATE1", 1000)
    assert out["result"] == "accepted", out
    await b.run(3000)
    assert b.st.charger.session and [s["idTag"] for s in b.backend.sent("StartTransaction")] == ["LATE1"]


def test_free_charging_unset_means_free_only_without_a_back_end():
    from firmware import settings as settings_mod

    assert settings_mod.Settings().get("free_charging") is True
    op = {"ocpp_url": "ws://csms.example/ocpp", "charge_box_id": "CP1"}
    assert settings_mod.Settings(op).get("free_charging") is False
    assert settings_mod.Settings(dict(op, free_charging=True)).get("free_charging") is True
    assert settings_mod.Settings({"free_charging": False}).get("free_charging") is False
    assert settings_mod.Settings(dict(op, free_charging=None)).changed() == op  # null is the default: not written


# ------------------------------------------------------------------ offline

@aio
async def test_blocked_card_in_the_local_list_refused_offline(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "AllowOfflineTxForUnknownId", "true")
    assert await send_list(b, 1, [entry("BLK1", "Blocked"), entry("OK1")]) == "Accepted"
    await b.down()
    out = await present(b, "BLK1")
    assert out["result"] == "refused" and "Blocked" in out["reason"]
    assert (await present(b, "OK1"))["result"] == "accepted"


@aio
async def test_accepted_card_from_the_cache_while_offline(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert (await present(b, "CACHED1"))["result"] == "accepted"  # online: cached
    b.st.charger.authorized = False
    await b.down()
    out = await present(b, "CACHED1")
    assert out["result"] == "accepted" and "cache" in out["reason"]
    await b.charge()
    await b.unplug()
    await b.up()
    await b.run(2000)
    assert [s["idTag"] for s in b.backend.sent("StartTransaction")] == ["CACHED1"]


@aio
async def test_allow_offline_tx_for_unknown_id(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await b.down()
    out = await present(b, "STRANGER")
    assert out["result"] == "refused" and "offline" in out["reason"]  # default: false
    await b.up()
    await config(b, "AllowOfflineTxForUnknownId", "true")
    await b.down()
    assert (await present(b, "STRANGER"))["result"] == "accepted"


@aio
async def test_late_rejection_stops_the_session_deauthorized(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "AllowOfflineTxForUnknownId", "true")
    await b.down()
    assert (await present(b, "STRANGER"))["result"] == "accepted"
    await b.charge()
    b.backend.id_tags["STRANGER"] = {"status": "Invalid"}
    await b.up()
    await b.run(3000)
    assert not b.st.charger.contactor and not b.st.charger.session
    stop = b.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "DeAuthorized"
    assert b.cp.tokens.cache.lookup("STRANGER")[0] == "Invalid"  # learnt from StartTransaction.conf


@pytest.mark.parametrize("answer", [
    {"idTagInfo": {"status": "Acepted"}},  # not in the enum
    {"idTagInfo": {"status": "Accepted", "parentIdTag": "P" * 21}},  # too long
    {"idTagInfo": {"status": "Accepted"}, "extra": 1},  # a property the schema does not have
    {},  # idTagInfo missing
    "CallError",
], ids=["bad-enum", "long-parent", "extra-property", "empty", "call-error"])
@aio
async def test_an_answer_that_fails_its_schema_or_a_call_error_accepts_nobody(tmp_path, answer):
    """The back end answered Authorize, but not with a valid Authorize.conf (or with a CallError):
    it is reachable, so the offline rules (AllowOfflineTxForUnknownId here) do not apply and the
    token is refused; nothing starts."""
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "AllowOfflineTxForUnknownId", "true")
    if answer == "CallError":
        b.backend.errors["Authorize"] = "InternalError"
    else:
        b.backend.hold.add("Authorize")
    b.cp.tokens.present("ODD1")
    await b.run(200)
    if answer != "CallError":
        b.backend.answer_held(0, answer)
    await b.run(500)
    out = b.cp.tokens.last
    assert out["id_tag"] == "ODD1" and out["result"] == "refused", out
    assert "back end" in out["reason"] and "offline" not in out["reason"]
    assert not b.st.charger.authorized
    await b.plug()
    await b.run(2000)
    assert not b.st.charger.session and b.backend.sent("StartTransaction") == []


@aio
async def test_authorize_without_an_answer_falls_back_to_offline_rules(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "AllowOfflineTxForUnknownId", "true")
    b.backend.hold.add("Authorize")
    out = await present(b, "SLOW1", 100)
    assert out["result"] == "waiting"
    assert (await present(b, "OTHER", 100))["result"] == "refused"  # busy with SLOW1
    await b.idle(14000)
    await asyncio.sleep(0.05)  # the Rpc checks its deadline every 20 ms of real time
    await b.run(100)
    assert b.cp.tokens.last["id_tag"] == "OTHER"  # still waiting for SLOW1's answer
    await b.idle(2000)  # AUTHORIZE_TIMEOUT_MS: 15 s, then the offline rules
    await asyncio.sleep(0.05)
    await b.run(500)
    last = b.cp.tokens.last
    assert last["id_tag"] == "SLOW1" and last["result"] == "accepted" and "offline" in last["reason"]


@aio
async def test_local_pre_authorize_starts_without_asking(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "LocalPreAuthorize", "true")
    assert await send_list(b, 1, [entry("FAST1")]) == "Accepted"
    out = await present(b, "FAST1")
    assert out["result"] == "accepted" and "list" in out["reason"]
    assert b.backend.sent("Authorize") == []


# ------------------------------------------------------------------ stopping

@aio
async def test_stop_by_the_same_card_and_by_a_card_of_the_same_group(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    lst = [entry("DRV1", parent="FLEET"), entry("DRV2", parent="FLEET"), entry("OTHER", parent="ELSE")]
    assert await send_list(b, 1, lst) == "Accepted"
    assert (await present(b, "DRV1"))["result"] == "accepted"
    await b.charge()
    assert (await present(b, "OTHER"))["result"] == "refused"
    assert b.st.charger.contactor
    out = await present(b, "DRV2")
    assert out["result"] == "stopping" and "FLEET" in out["reason"]
    await b.run(1000)
    stop = b.backend.sent("StopTransaction")[0]
    assert stop["reason"] == "Local" and stop["idTag"] == "DRV2"  # 6.51: who asked for the stop
    await b.unplug()
    assert (await present(b, "DRV1"))["result"] == "accepted"
    await b.charge()
    assert (await present(b, "drv1"))["result"] == "stopping"  # idTags are case-insensitive
    await b.run(1000)
    assert b.backend.sent("StopTransaction")[1]["idTag"] == "DRV1"


@aio
async def test_stop_by_a_card_whose_group_only_the_back_end_knows(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    b.backend.id_tags["DRV1"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    b.backend.id_tags["DRV2"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    await config(b, "AuthorizationCacheEnabled", "false")
    assert (await present(b, "DRV1"))["result"] == "accepted"
    await b.charge()
    assert b.cp.transaction["group"] == "FLEET"
    out = await present(b, "DRV2", 1000)
    assert out["result"] == "stopping"
    assert [a["idTag"] for a in b.backend.sent("Authorize")] == ["DRV1", "DRV2"]


@aio
async def test_the_group_from_start_transaction_conf_counts_for_stopping(tmp_path):
    """A remote start sends no Authorize (AuthorizeRemoteTxRequests false): the parentIdTag the
    back end gives in StartTransaction.conf is the session's group, as Authorize.conf's would be."""
    b = await Bench.start(tmp_path, **PAID)
    b.backend.id_tags["DRV1"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    b.backend.id_tags["DRV2"] = {"status": "Accepted", "parentIdTag": "FLEET"}
    await config(b, "AuthorizationCacheEnabled", "false")
    await b.plug()
    assert (await b.ok("RemoteStartTransaction", {"idTag": "DRV1"}))["status"] == "Accepted"
    await b.run(3000)
    assert b.backend.sent("Authorize") == [] and [s["idTag"] for s in b.backend.sent("StartTransaction")] == ["DRV1"]
    assert b.st.charger.session and b.cp.transaction["group"] == "FLEET"
    out = await present(b, "DRV2", 1000)
    assert out["result"] == "stopping" and "FLEET" in out["reason"]
    await b.run(1000)
    assert b.backend.sent("StopTransaction")[0]["idTag"] == "DRV2"


# ------------------------------------------------------------------ the back end's commands

@aio
async def test_send_local_list_full_differential_and_bad_lists(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert (await b.ok("GetLocalListVersion", {}))["listVersion"] == 0
    assert await send_list(b, 5, [entry("A1"), entry("B1", "Blocked")]) == "Accepted"
    assert (await b.ok("GetLocalListVersion", {}))["listVersion"] == 5
    path = b.cp.tokens.list.path
    before = open(path, "rb").read()
    # a duplicate idTag: Failed, and the old list stays byte for byte
    assert await send_list(b, 6, [entry("C1"), entry("c1")]) == "Failed"
    # more than SendLocalListMaxLength (25) entries in one request
    assert await send_list(b, 6, [entry("T%d" % i) for i in range(26)]) == "Failed"
    # a Differential that does not raise the version
    assert await send_list(b, 5, [entry("D1")], "Differential") == "VersionMismatch"
    assert open(path, "rb").read() == before
    assert (await b.ok("GetLocalListVersion", {}))["listVersion"] == 5
    # an over-long idTag never reaches the list: the frame is refused by its schema
    m = await b.cs("SendLocalList", {"listVersion": 7, "updateType": "Full",
                                     "localAuthorizationList": [entry("X" * 21)]})
    assert m[0] == 4 and m[2] == "PropertyConstraintViolation"
    assert open(path, "rb").read() == before
    # Differential: add one, remove one (no idTagInfo)
    assert await send_list(b, 6, [entry("C1"), {"idTag": "A1"}], "Differential") == "Accepted"
    ll = b.cp.tokens.list
    assert ll.lookup("A1") is None and ll.lookup("C1")[0] == "Accepted" and ll.version == 6
    # persists across a reboot
    b.halt()
    b2 = await Bench.start(tmp_path, **PAID)
    assert (await b2.ok("GetLocalListVersion", {}))["listVersion"] == 6
    assert b2.cp.tokens.list.lookup("B1")[0] == "Blocked"


@aio
async def test_local_list_disabled(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "LocalAuthListEnabled", "false")
    assert (await b.ok("GetLocalListVersion", {}))["listVersion"] == -1
    assert await send_list(b, 1, [entry("A1")]) == "NotSupported"


@aio
async def test_clear_cache(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert (await present(b, "CACHED1"))["result"] == "accepted"
    assert b.cp.tokens.cache.lookup("CACHED1") is not None
    assert (await b.ok("ClearCache", {}))["status"] == "Accepted"
    assert b.cp.tokens.cache.lookup("CACHED1") is None
    b.st.charger.authorized = False
    await b.down()
    assert (await present(b, "CACHED1"))["result"] == "refused"


@aio
async def test_local_list_conflict_is_reported_on_connector_0(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    assert await send_list(b, 1, [entry("A1")]) == "Accepted"
    b.backend.id_tags["A1"] = {"status": "Blocked"}
    assert (await present(b, "A1", 1000))["result"] == "refused"  # the back end has the last word
    sent = [p for p in b.backend.sent("StatusNotification") if p["errorCode"] == "LocalListConflict"]
    assert sent and sent[0]["connectorId"] == 0


def test_fold_is_the_reader_format():
    assert auth.fold("04a1b2c3") == auth.fold("04A1B2C3")


# ------------------------------------------------------------------ groups, tariffs, sharing
# The bench's back end starts at Monday 2026-03-02 08:00 UTC.

TABLE = {
    "currency": "EUR", "tz": "UTC0",
    "tariffs": {"standard": {"per_kwh": 0.40}, "fleet": {"per_kwh": 0.25},
                "owner": {"per_kwh": 0}, "guest": {"per_kwh": 0.35, "per_hour": 1.20}},
    "groups": {"FLEET-RIDE": "fleet", "OWNER": "owner"},
    "default": "standard",
}
SHARED = dict(TABLE, sharing={"owner_groups": ["OWNER"], "guest_tariff": "guest",
                              "windows": [{"days": "Mon-Fri", "from": "09:00", "to": "17:00"}]})


def cost_reports(b):
    import json
    return [json.loads(p["data"]) for p in b.backend.sent("DataTransfer") if p.get("messageId") == "SessionCost"]


@aio
async def test_fleet_driver_charges_at_the_fleet_rate(tmp_path):
    b = await Bench.start(tmp_path, tariffs=TABLE, **PAID)
    assert await send_list(b, 1, [entry("DRV1", parent="FLEET-RIDE"), entry("ANY1")]) == "Accepted"
    await config(b, "LocalPreAuthorize", "true")
    out = await present(b, "DRV1")
    assert out["result"] == "accepted" and out["group"] == "FLEET-RIDE" and out["tariff"] == "fleet"
    await b.charge(16)
    await b.idle(600000)  # 10 min at 16 A, 3 phases
    wh = b.st.keeper.energy(b.st._meter_wh())
    assert wh > 1500
    live = b.st.snapshot()["cost"]
    assert live[1] == "EUR" and abs(live[0] - wh * 25 / 1000) <= 1
    await b.unplug()
    await b.run(2000)
    stop = b.backend.sent("StopTransaction")[0]
    report = cost_reports(b)
    assert len(report) == 1
    r = report[0]
    energy = stop["meterStop"] - b.backend.sent("StartTransaction")[0]["meterStart"]
    assert r["transactionId"] == stop["transactionId"] and r["tariff"] == "fleet" and r["group"] == "FLEET-RIDE"
    assert r["currency"] == "EUR" and r["idTag"] == "DRV1"
    assert abs(float(r["cost"]) - energy * 0.25 / 1000) <= 0.011
    # the journal keeps group, tariff and cost
    last = history(b.st.keeper, 1)[-1]
    assert (last["group"], last["tariff"]) == ("FLEET-RIDE", "fleet")
    assert last["cost"] == round(float(r["cost"]) * 100)


@aio
async def test_guest_outside_the_sharing_window_is_refused_with_a_reason(tmp_path):
    b = await Bench.start(tmp_path, tariffs=SHARED, **PAID)
    assert await send_list(b, 1, [entry("GUEST1"), entry("ME1", parent="OWNER")]) == "Accepted"
    out = await present(b, "GUEST1")  # Monday 08:00: the window opens at 09:00
    assert out["result"] == "refused" and "outside sharing hours" in out["reason"] and "09:00" in out["reason"]
    assert not b.st.charger.authorized
    out = await present(b, "ME1")  # the owner may always charge
    assert out["result"] == "accepted" and out["tariff"] == "owner"
    b.st.charger.authorized = False
    # a remote start for the guest is refused too
    assert (await b.ok("RemoteStartTransaction", {"idTag": "GUEST1"}))["status"] == "Rejected"
    await b.idle(3600 * 1000 + 60000)  # 09:01: inside the window
    out = await present(b, "GUEST1")
    assert out["result"] == "accepted" and out["tariff"] == "guest"


@aio
async def test_tariffs_from_the_back_end_and_a_malformed_table(tmp_path):
    import json
    b = await Bench.start(tmp_path, tariffs=TABLE, **PAID)
    bad = dict(TABLE, tariffs=dict(TABLE["tariffs"], fleet={"per_kwh": -1}))
    r = await b.ok("DataTransfer", {"vendorId": "org.micropython-evse", "messageId": "SetTariffs",
                                    "data": json.dumps(bad)})
    assert r["status"] == "Rejected" and "tariffs.fleet.per_kwh" in r["data"]
    assert b.st.billing.tariffs.price("fleet", 0)[0] == 2500  # the old table stays
    new = dict(TABLE, tariffs=dict(TABLE["tariffs"], fleet={"per_kwh": 0.20}))
    r = await b.ok("DataTransfer", {"vendorId": "org.micropython-evse", "messageId": "SetTariffs",
                                    "data": json.dumps(new)})
    assert r["status"] == "Accepted"
    got = await b.ok("DataTransfer", {"vendorId": "org.micropython-evse", "messageId": "GetTariffs"})
    assert json.loads(got["data"])["tariffs"]["fleet"]["per_kwh"] == 0.2
    b.halt()  # kept across a reboot, over the settings' table
    b2 = await Bench.start(tmp_path, tariffs=TABLE, **PAID)
    assert b2.st.billing.tariffs.price("fleet", 0)[0] == 2000


@aio
async def test_the_bill_survives_a_power_cut(tmp_path):
    b = await Bench.start(tmp_path, tariffs=TABLE, **PAID)
    assert (await present(b, "ANY1"))["result"] == "accepted"
    await b.charge(16)
    await b.idle(600000)
    before = b.st.billing.bill.x
    assert before > 0
    b.halt()
    b2 = await Bench.start(tmp_path, tariffs=TABLE, **PAID)
    await b2.run(3000)
    stops = b2.backend.sent("StopTransaction")
    assert stops and stops[0]["reason"] == "PowerLoss"
    r = cost_reports(b2)
    assert len(r) == 1 and r[0]["tariff"] == "standard"
    energy = stops[0]["meterStop"] - b.backend.sent("StartTransaction")[0]["meterStart"]
    # priced from the journal's last progress record to the register read after the reboot
    assert abs(float(r[0]["cost"]) - energy * 0.40 / 1000) <= 0.011


def test_a_malformed_tariff_table_in_the_settings_names_the_entry():
    import pytest

    from firmware import settings as settings_mod
    bad = dict(TABLE, groups={"FLEET-RIDE": "flet"})
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.Settings({"tariffs": bad})
    assert "setting 'tariffs'" in str(e.value) and "groups.FLEET-RIDE" in str(e.value) and "flet" in str(e.value)
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.Settings({"tariffs": [1]})
    assert "expected JSON object" in str(e.value)
    assert settings_mod.Settings({"tariffs": TABLE}).get("tariffs") == TABLE


@aio
async def test_without_a_back_end_local_tokens_decide(tmp_path):
    b = await Bench.start(tmp_path, local_tokens={"OWN1": "HOME", "OWN2": "HOME", "SOLO": None}, **PAID)
    b.st.ocpp = None  # the station as it is without ocpp_url
    st = b.st
    assert st.present("STRANGER") == "refused"
    assert st.present("own1") == "accepted"  # idTags are case-insensitive
    await b.charge()
    assert st.charger.id_tag == "OWN1"
    assert st.present("SOLO") == "refused"  # another token, no group in common
    assert st.present("OWN2") == "stopping"  # the same group
    await b.run(500)
    assert not st.charger.session and not st.charger.contactor


def test_local_tokens_setting_is_checked():
    import pytest

    from firmware import settings as settings_mod
    for bad, words in (({"X" * 21: None}, "idTag"), ({"A": 5}, "group of A"), ([1], "JSON object")):
        with pytest.raises(settings_mod.SettingsError) as e:
            settings_mod.Settings({"local_tokens": bad})
        assert "local_tokens" in str(e.value) and words in str(e.value)
