"""Driver tokens at a charger with a back end (firmware/ocpp/tokens.py + firmware/auth.py):
card then plug, plug then card, online and offline decisions, the local list and the cache from
the back end's commands, stopping by the same token or its group, late rejections. Virtual time,
CPython; the same flows run end to end on MicroPython in test_token_scenarios.py."""
from test_chargepoint import PAID, Bench, aio  # noqa: F401 (aio is a decorator)

from firmware import auth


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
    assert b.cp._status[1][0] == "Preparing"
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


@aio
async def test_authorize_without_an_answer_falls_back_to_offline_rules(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    await config(b, "AllowOfflineTxForUnknownId", "true")
    b.backend.hold.add("Authorize")
    out = await present(b, "SLOW1", 100)
    assert out["result"] == "waiting"
    assert (await present(b, "OTHER", 100))["result"] == "refused"  # busy with SLOW1
    await b.idle(40000)  # the call times out
    await b.run(500)
    assert b.cp.tokens.last["id_tag"] == "SLOW1" and b.cp.tokens.last["result"] == "accepted"


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
    assert b.cp._tx["group"] == "FLEET"
    out = await present(b, "DRV2", 1000)
    assert out["result"] == "stopping"
    assert [a["idTag"] for a in b.backend.sent("Authorize")] == ["DRV1", "DRV2"]


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
