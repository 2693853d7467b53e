"""The socket lock over OCPP 1.6 (firmware/ocpp/chargepoint.py), on the bench of test_chargepoint:
a whole DevKit station (its motor lock included) in the simulated world, a fake link, virtual time.

Spec 5.18 / 6.53-6.54 / 7.46 UnlockConnector; errata 3.85 (unknown connector: NotSupported);
9.1.33 with errata 3.83 UnlockConnectorOnEVSideDisconnect; 3.5.4 with errata 3.5 (after an
invalid idTag the cable stays locked until the same identifier, or one of its group, comes back).
"""
from drivers import board
from firmware.ocpp import remote as remote_mod
from test_chargepoint import PAID, Bench, aio


async def command(b, action, payload, ms=remote_mod.UNLOCK_WAIT_MS + 1000):
    """A back-end call whose answer may take virtual time (the lock moves): its answer frame."""
    b._uid += 1
    uid = "cs%d" % b._uid
    b.backend.cs_actions[uid] = action
    b.link.push([2, uid, action, payload])
    assert await b.until(lambda: uid in b.backend.answers, ms), "%s not answered" % action
    return b.backend.answers.pop(uid)


def lock(b):
    return b.st.lock.state


@aio
async def test_unlock_connector_stops_the_transaction_first_then_unlocks(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    assert lock(b) == "locked" and b.world.lock.locked()
    t0 = b.T
    m = await command(b, "UnlockConnector", {"connectorId": 1})
    assert m[2] == {"status": "Unlocked"}
    # 5.18: "SHALL finish the transaction first": its StopTransaction (Reason UnlockCommand)
    # went out before the answer
    stop = b.backend.sent("StopTransaction")
    assert len(stop) == 1 and stop[0]["reason"] == "UnlockCommand"
    frames = b.backend.frames
    assert frames.index([3, m[1], m[2]]) > [i for i, f in enumerate(frames)
                                           if f[0] == 2 and f[2] == "StopTransaction"][0]
    c = b.st.charger
    assert not c.session and not c.contactor and lock(b) == "unlocked"
    assert not b.world.lock.holds_plug()
    assert b.T - t0 < 5000  # the meter showed no current, then one motor pulse
    assert b.world.apply("pull") == {"pull": "done"}
    await b.run(500)
    assert b.backend.statuses(1)[-1] == ("Available", "NoError")


@aio
async def test_unlock_connector_without_a_transaction(tmp_path):
    b = await Bench.start(tmp_path)
    m = await command(b, "UnlockConnector", {"connectorId": 1})
    assert m[2] == {"status": "Unlocked"}  # it was open: the feedback says so
    assert b.backend.sent("StopTransaction") == []
    assert b.st.lock.moves == 0


@aio
async def test_unlock_connector_of_an_unknown_connector_is_not_supported(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    for cid in (0, 2):
        assert (await b.ok("UnlockConnector", {"connectorId": cid}))["status"] == "NotSupported"
    assert b.st.charger.session and lock(b) == "locked"  # errata 3.85: nothing happened


@aio
async def test_unlock_connector_with_a_jammed_lock_fails_and_faults(tmp_path):
    b = await Bench.start(tmp_path)
    await b.charge()
    b.world.apply("lock-jam")
    m = await command(b, "UnlockConnector", {"connectorId": 1})
    assert m[2] == {"status": "UnlockFailed"}
    assert b.backend.sent("StopTransaction")[0]["reason"] == "UnlockCommand"
    await b.run(500)
    assert b.backend.statuses(1)[-1] == ("Faulted", "ConnectorLockFailure")
    assert b.world.apply("pull")["pull"] == "refused"
    # the help desk tries again once the pin is free: a fresh attempt at once
    b.world.apply("lock-ok")
    m = await command(b, "UnlockConnector", {"connectorId": 1})
    assert m[2] == {"status": "Unlocked"}


@aio
async def test_unlock_on_ev_side_disconnect_is_read_write_with_a_lock(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    conf = await b.ok("GetConfiguration", {"key": ["UnlockConnectorOnEVSideDisconnect"]})
    assert conf["configurationKey"] == [{"key": "UnlockConnectorOnEVSideDisconnect", "readonly": False,
                                         "value": "true"}]
    assert (await b.ok("ChangeConfiguration", {"key": "UnlockConnectorOnEVSideDisconnect",
                                               "value": "false"}))["status"] == "Accepted"
    await b.ok("RemoteStartTransaction", {"idTag": "CARD1", "connectorId": 1})
    await b.charge()
    await b.unplug()  # the car leaves; StopTransactionOnEVSideDisconnect is true: the session ends
    await b.run(1500)
    assert b.backend.sent("StopTransaction")[0]["reason"] == "EVDisconnected"
    assert lock(b) == "locked" and b.world.cable.amps == 32  # the cable stays locked in the socket
    assert b.cp.tokens.present("OTHER") != "unlocking"
    await b.run(500)
    assert lock(b) == "locked"
    assert b.cp.tokens.present("card1") == "unlocking"  # the owner's token (any case)
    await b.run(1500)
    assert lock(b) == "unlocked"


@aio
async def test_without_a_lock_unlock_on_ev_side_disconnect_is_read_only_false(tmp_path):
    b = await Bench.start(tmp_path, profile=board.load("esp32-tethered-1p"))
    conf = await b.ok("GetConfiguration", {"key": ["UnlockConnectorOnEVSideDisconnect"]})
    assert conf["configurationKey"] == [{"key": "UnlockConnectorOnEVSideDisconnect", "readonly": True,
                                         "value": "false"}]
    assert (await b.ok("ChangeConfiguration", {"key": "UnlockConnectorOnEVSideDisconnect",
                                               "value": "true"}))["status"] == "Rejected"


@aio
async def test_invalid_id_tag_keeps_the_cable_locked_until_it_comes_back(tmp_path):
    b = await Bench.start(tmp_path, **PAID)
    b.backend.tx_status = "Invalid"
    b.backend.hold.add("StartTransaction")
    await b.ok("RemoteStartTransaction", {"idTag": "BAD", "connectorId": 1})
    await b.charge()
    b.backend.answer_held()
    await b.run(3000)
    c = b.st.charger
    assert not c.session and not c.contactor
    assert b.backend.sent("StopTransaction")[0]["reason"] == "DeAuthorized"
    assert lock(b) == "locked" and c.lock_hold and c.lock_owner == "BAD"
    await b.unplug()
    await b.run(2000)
    assert lock(b) == "locked"  # errata 3.5: until the same identifier is presented
    assert b.cp.tokens.present("BAD") == "unlocking"
    await b.run(1000)
    assert lock(b) == "unlocked" and not c.lock_hold


@aio
async def test_a_persons_unlock_is_refused_during_a_session(tmp_path):
    b = await Bench.start(tmp_path)
    seen = []
    b.st.add_sink(lambda kind, fields, at: seen.append(fields) if kind == "lock" and "request" in fields else None)
    await b.charge()
    assert b.st.unlock() == "refused"  # someone else's session: it takes their token or a stop
    await b.run(1000)
    assert b.st.charger.contactor and lock(b) == "locked"
    b.st.charger.stop()
    await b.run(1500)
    assert lock(b) == "unlocked"  # the session's end opens it by itself
    assert b.st.unlock() == "unlocking"
    assert seen == [{"request": "unlock", "result": "refused"}, {"request": "unlock", "result": "unlocking"}]


@aio
async def test_without_a_back_end_the_owners_local_token_frees_a_held_lock(tmp_path):
    b = await Bench.start(tmp_path, local_tokens={"OWN1": "HOME", "OWN2": "HOME", "SOLO": None}, **PAID)
    b.st.ocpp = None  # the station as it is without ocpp_url
    st = b.st
    st.charger.unlock_on_ev_disconnect = False
    assert st.present("own1") == "accepted"
    await b.charge()
    await b.unplug()
    await b.run(1000)
    assert lock(b) == "locked" and st.charger.lock_owner == "OWN1"
    assert st.present("SOLO") != "unlocking"
    assert st.present("OWN2") == "unlocking"  # the same group
    await b.run(1000)
    assert lock(b) == "unlocked"
