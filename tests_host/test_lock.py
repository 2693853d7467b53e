"""The socket lock: the driver on the fake `machine` (pins, timing, retries), the board profile's
`lock` section, make_safe, the world's actuator, and the charger's rules on virtual time.

The rules (firmware/charger.py `_lock`, README "The socket lock"): locked for the whole session
and confirmed before the contactor may close; open again at the session's end only once no
current can flow; a move the feedback does not confirm is the fault `lock`
(ConnectorLockFailure), retried after the fault pause.
"""
import json
import os

import pytest

import machine
from drivers import board
from drivers.lock import FAILED, LOCKED, MOVING, UNLOCKED, Lock
from firmware import charger as chg
from firmware import safety
from firmware import settings as settings_mod
from firmware.ocpp import status
from rig import Rig, RigLock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MOTOR = {"type": "motor", "lock_pin": 13, "unlock_pin": 21, "active_high": True, "feedback_pin": 14,
         "feedback_active_high": True, "pulse_ms": 300, "settle_ms": 50, "pause_ms": 1000, "retries": 2}
SOLENOID = {"type": "solenoid", "pin": 13, "active_high": True, "feedback_pin": 14,
            "feedback_active_high": True, "settle_ms": 50, "pause_ms": 1000, "retries": 2}


pytestmark = pytest.mark.usefixtures("bare_board")  # (conftest.py)


class Wires:
    """Records every level the driver puts on the lock outputs, and fails on both motor outputs
    on at once (the H-bridge would short or brake)."""

    def __init__(self, a=13, b=21):
        self.a, self.b = a, b
        self.log = []  # (t, pin, level)
        self.t = 0
        machine.hw_on_output(a, lambda lv: self._seen(a, lv))
        machine.hw_on_output(b, lambda lv: self._seen(b, lv))

    def _seen(self, pin, level):
        self.log.append((self.t, pin, level))
        assert not (machine.hw_level(self.a) and machine.hw_level(self.b)), "both motor outputs on"

    def feedback(self, locked):
        machine.hw_set_input(14, 1 if locked else 0)


def run(lock, wires, start, end, confirm_at=None):
    """Poll every 10 ms from start to end; the feedback shows locked from confirm_at on.
    Returns the states seen, each with the first tick it was seen at."""
    seen = []
    for t in range(start, end + 1, 10):
        wires.t = t
        if confirm_at is not None and t >= confirm_at:
            wires.feedback(lock.target)
        s = lock.poll(t)
        if not seen or seen[-1][1] != s:
            seen.append((t, s))
    return seen


# ---------------------------------------------------------------------------------------------
# the driver

def test_motor_lock_pulses_one_way_then_reads_the_feedback():
    w = Wires()
    w.feedback(False)
    lk = Lock(MOTOR)
    assert lk.poll(0) == UNLOCKED and lk.target is None
    lk.want(True, 0)
    assert machine.hw_level(13) == 1 and machine.hw_level(21) == 0 and lk.state == MOVING
    seen = run(lk, w, 10, 600, confirm_at=200)
    # 300 ms of pulse, both outputs off, 50 ms to settle, then the feedback confirms
    assert seen == [(10, MOVING), (350, LOCKED)]
    assert w.log == [(0, 13, 1), (300, 13, 0)]
    assert lk.moves == 1
    w.t = 1000
    lk.want(False, 1000)
    assert machine.hw_level(21) == 1 and machine.hw_level(13) == 0
    w.feedback(False)
    assert run(lk, w, 1010, 1400) == [(1010, MOVING), (1350, UNLOCKED)]
    assert w.log[-2:] == [(1000, 21, 1), (1300, 21, 0)]


def test_motor_not_confirmed_is_retried_after_a_pause_then_failed():
    w = Wires()
    w.feedback(False)
    lk = Lock(MOTOR)
    lk.want(True, 0)
    seen = run(lk, w, 10, 6000)  # the feedback never shows locked (a jammed pin)
    # attempts at 0, 1350, 2700 (pulse 300 + settle 50 + pause 1000); failed after the third
    ons = [t for t, pin, lv in w.log if lv == 1]
    assert ons == [0, 1350, 2700] and all(pin == 13 for _, pin, _ in w.log)
    assert seen == [(10, MOVING), (3050, FAILED)]
    assert lk.moves == 3
    assert machine.hw_level(13) == 0 and machine.hw_level(21) == 0  # nothing left on
    # a second want() of the same position is a fresh set of attempts
    lk.want(True, 7000)
    assert lk.state == MOVING and machine.hw_level(13) == 1


def test_motor_confirmed_on_the_second_attempt():
    w = Wires()
    w.feedback(False)
    lk = Lock(MOTOR)
    lk.want(True, 0)
    seen = run(lk, w, 10, 3000, confirm_at=1400)  # freed during the pause
    assert seen == [(10, MOVING), (1700, LOCKED)]
    assert lk.moves == 2


def test_a_lock_at_rest_that_loses_its_feedback_fails_at_once():
    w = Wires()
    w.feedback(False)
    lk = Lock(MOTOR)
    lk.want(True, 0)
    run(lk, w, 10, 400, confirm_at=100)
    assert lk.state == LOCKED
    w.feedback(False)  # the wire breaks, or the pin was forced back
    assert lk.poll(410) == FAILED
    assert lk.poll(420) == FAILED  # stays so until the next want()
    w.feedback(True)
    assert lk.poll(430) == FAILED


def test_reversing_mid_pulse_switches_the_other_way_off_first():
    w = Wires()
    w.feedback(False)
    lk = Lock(MOTOR)
    lk.want(True, 0)
    lk.poll(100)
    w.t = 100
    lk.want(False, 100)
    assert w.log == [(0, 13, 1), (100, 13, 0), (100, 21, 1)]


def test_boot_reads_the_feedback_and_a_first_wish_already_met_moves_nothing():
    w = Wires()
    w.feedback(True)  # locked across a power cut (a motor lock stays where it is)
    lk = Lock(MOTOR)
    assert lk.poll(0) == LOCKED
    lk.want(True, 10)
    assert lk.state == LOCKED and lk.moves == 0 and w.log == []
    lk.want(False, 20)
    assert lk.state == MOVING and machine.hw_level(21) == 1


def test_solenoid_holds_its_output_while_locked_and_drops_it_for_pauses():
    machine.hw_on_output(13, lambda lv: None)
    machine.hw_set_input(14, 0)
    lk = Lock(SOLENOID)
    assert not lk.motor and machine.hw_level(13) == 0
    lk.want(True, 0)
    assert machine.hw_level(13) == 1 and lk.state == MOVING
    assert lk.poll(40) == MOVING
    machine.hw_set_input(14, 1)
    assert lk.poll(50) == LOCKED
    assert machine.hw_level(13) == 1  # held: a solenoid lock is locked only while energised
    lk.want(False, 100)
    assert machine.hw_level(13) == 0
    machine.hw_set_input(14, 0)
    assert lk.poll(150) == UNLOCKED
    # not confirmed: off during the pause, on again for the next attempt
    lk.want(True, 200)
    assert lk.poll(250) == MOVING and machine.hw_level(13) == 0
    assert lk.poll(1250) == MOVING and machine.hw_level(13) == 1


def test_active_low_outputs_and_feedback():
    cfg = dict(MOTOR, active_high=False, feedback_active_high=False)
    machine.hw_set_input(14, 1)
    lk = Lock(cfg)
    assert machine.hw_level(13) == 1 and machine.hw_level(21) == 1  # idle = high
    assert lk.poll(0) == UNLOCKED
    lk.want(True, 0)
    assert machine.hw_level(13) == 0 and machine.hw_level(21) == 1
    machine.hw_set_input(14, 0)
    lk.poll(300)
    assert lk.poll(350) == LOCKED and machine.hw_level(13) == 1


def test_tick_wraparound():
    w = Wires()
    w.feedback(False)
    lk = Lock(MOTOR)
    start = (1 << 30) - 100
    lk.want(True, start)
    assert lk.poll((start + 299) & ((1 << 30) - 1)) == MOVING and machine.hw_level(13) == 1
    lk.poll((start + 300) & ((1 << 30) - 1))
    assert machine.hw_level(13) == 0


# ---------------------------------------------------------------------------------------------
# the board profile and make_safe

def devkit():
    with open(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json")) as f:
        return json.load(f)


def test_devkit_profile_has_a_motor_lock_on_free_pins():
    p = board.load("esp32-devkit")
    assert p["lock"] == MOTOR
    b = board.build(p)
    assert b.lock is not None and b.lock.motor
    assert board.build("esp32-tethered-1p").lock is None


def test_lock_defaults_and_solenoid():
    p = devkit()
    p["lock"] = {"type": "solenoid", "pin": 13, "feedback_pin": 14}
    assert board.validate(p)["lock"] == SOLENOID
    p = devkit()
    p["lock"] = {"type": "motor", "lock_pin": 13, "unlock_pin": 21, "feedback_pin": 14}
    assert board.validate(p)["lock"] == MOTOR
    p = devkit()
    p["lock"] = None
    assert "lock" not in board.validate(p)


@pytest.mark.parametrize("lock,message", [
    (dict(MOTOR, unlock_pin=26), "pin 26 used twice: relay.pin and lock.unlock_pin"),
    (dict(MOTOR, lock_pin=35), "lock.lock_pin: GPIO 35 is input only"),
    (dict(MOTOR, feedback_pin=None), "lock.feedback_pin: expected int, got null"),
    ({k: v for k, v in MOTOR.items() if k != "feedback_pin"}, "missing required entry: lock.feedback_pin"),
    (dict(MOTOR, pulse_ms=5), "lock.pulse_ms: 5 out of range 20..2000"),
    (dict(MOTOR, retries=9), "lock.retries: 9 out of range 0..5"),
    (dict(MOTOR, pause_ms="1s"), "lock.pause_ms: expected int, got str"),
    (dict(MOTOR, speed=3), "unknown key: lock.speed"),
    (dict(MOTOR, pin=12), "lock.pin: not a key of a motor lock"),
    (dict(SOLENOID, pulse_ms=300), "lock.pulse_ms: not a key of a solenoid lock"),
    (dict(MOTOR, type="magnet"), "lock.type: expected \"motor\" or \"solenoid\", got 'magnet'"),
    ([13, 21], "lock: expected object, got list"),
])
def test_lock_validation_names_the_entry(lock, message):
    p = devkit()
    p["lock"] = lock
    with pytest.raises(board.BoardError) as e:
        board.validate(p)
    assert message in str(e.value), str(e.value)


def test_tethered_board_refuses_a_lock():
    with open(os.path.join(ROOT, "drivers", "boards", "esp32-tethered-1p.json")) as f:
        p = json.load(f)
    p["lock"] = dict(MOTOR)
    with pytest.raises(board.BoardError) as e:
        board.validate(p)
    assert "lock: must be absent when socketed is false" in str(e.value)


def test_make_safe_drives_the_lock_outputs_idle_and_never_both_on():
    w = Wires()
    machine.hw_set_input(14, 0)
    r = board.make_safe(devkit())
    assert r["errors"] == []
    assert machine.hw_level(13) == 0 and machine.hw_level(21) == 0
    assert machine._lines[13].mode == machine.Pin.OUT and machine._lines[21].mode == machine.Pin.OUT
    assert all(lv == 0 for _, _, lv in w.log)
    p = devkit()
    p["lock"] = dict(MOTOR, active_high=False)
    board.make_safe(p)
    assert machine.hw_level(13) == 1 and machine.hw_level(21) == 1  # active low: idle is high
    p = devkit()
    p["lock"] = dict(MOTOR, lock_pin=26)  # the relay's pin: left to the relay
    r = board.make_safe(p)
    assert machine.hw_level(26) == 0 and "lock.lock_pin equals the relay or pilot pin" in r["errors"][0]
    p["lock"] = "broken"
    assert board.make_safe(p)["errors"] == []


# ---------------------------------------------------------------------------------------------
# the world's actuator and its verbs

def world():
    from world.world import World

    return World(board.load("esp32-devkit"))


def step(w, lk, t0, t1, want=None):
    for t in range(t0, t1 + 1, 10):
        w.advance(t)
        if want is not None and t == t0:
            lk.want(want, t)
        lk.poll(t)


def test_world_actuator_follows_the_driver_and_holds_the_plug():
    w = world()
    lk = Lock(board.load("esp32-devkit")["lock"])
    w.apply("plug", [32])
    step(w, lk, 0, 500, want=True)
    assert lk.state == LOCKED and w.lock.locked() and w.lock.strokes == 1
    assert w.apply("pull") == {"pull": "refused", "refused": 1}
    assert w.cable.amps == 32 and w.car.plugged
    w.apply("unplug")  # the car leaves its end; the plug stays locked in the socket
    assert not w.car.plugged and w.cable.amps == 32
    w.apply("plug")  # and the car comes back onto that cable
    assert w.car.plugged
    with pytest.raises(ValueError) as e:
        w.apply("plug", [20])
    assert "holds a locked 32 A cable" in str(e.value)
    step(w, lk, 510, 1000, want=False)
    assert lk.state == UNLOCKED and not w.lock.holds_plug()
    assert w.apply("pull") == {"pull": "done"}
    assert w.cable.amps is None and not w.car.plugged
    with pytest.raises(ValueError) as e:
        w.apply("pull")
    assert "no plug in the socket" in str(e.value)
    assert w.lock.both_on == 0


def test_world_jammed_actuator_never_confirms():
    w = world()
    lk = Lock(board.load("esp32-devkit")["lock"])
    w.apply("lock-jam")
    step(w, lk, 0, 4000, want=True)
    assert lk.state == FAILED and lk.moves == 3 and w.lock.pos == 0
    w.apply("lock-ok")
    step(w, lk, 4010, 4500, want=True)
    assert lk.state == LOCKED


def test_world_power_cut_motor_stays_solenoid_lets_go():
    w = world()
    lk = Lock(board.load("esp32-devkit")["lock"])
    step(w, lk, 0, 500, want=True)
    w.power_cut()
    w.advance(2000)
    assert w.lock.locked()
    machine.hw_reset(keep_world=False)
    p = board.load("esp32-devkit")
    p["lock"] = dict(SOLENOID)
    from world.world import World

    w = World(p)
    lk = Lock(p["lock"])
    step(w, lk, 0, 500, want=True)
    assert lk.state == LOCKED
    w.power_cut()
    w.advance(1000)
    assert not w.lock.holds_plug()


def test_world_lock_verbs_need_a_lock():
    from world.world import World

    w = World(board.load("esp32-tethered-1p"))
    for verb in ("lock-jam", "lock-ok"):
        with pytest.raises(ValueError) as e:
            w.apply(verb)
        assert "has no socket lock" in str(e.value)
    with pytest.raises(ValueError) as e:
        w.apply("pull")
    assert "tethered" in str(e.value)


# ---------------------------------------------------------------------------------------------
# the charger's rules (tests_host/rig.py: RigLock moves in 350 ms)

def lock_events(r):
    return [e[1] for e in r.kinds("lock")]


def test_no_lock_fitted_changes_nothing():
    r = Rig()
    r.charging()
    assert r.c.lock_wanted is None and not r.kinds("lock")


def test_lock_is_confirmed_before_the_contactor_closes():
    r = Rig(lock=True)
    r.step()
    r.vehicle("B")
    r.step()
    assert r.c.session and r.c.lock_wanted is True and r.lock.state == "moving"
    r.vehicle("C")  # ready at once: the debounce passes before the lock is in
    r.run(300)
    assert not r.c.contactor
    assert r.until(lambda: r.c.contactor, 1000)
    order = [e[:2] for e in r.events if e[0] in ("lock", "contactor")]
    assert order.index(("lock", "locked")) < order.index(("contactor", True))


def test_slow_lock_holds_the_offer_and_the_closing_back():
    lk = RigLock()
    lk.MOVE_MS = 3000
    r = Rig(lock=lk)
    r.vehicle("B")
    r.run(200)
    r.vehicle("C")
    r.run(2500)
    assert not r.c.contactor and r.c.state == "C1"  # nothing offered before the lock is in
    assert r.until(lambda: r.c.contactor, 1500)


def test_jam_is_a_fault_retried_after_the_pause_and_never_closes_unlocked():
    r = Rig(lock=True)
    r.lock.jammed = True
    r.vehicle("B")
    r.run(500)
    r.vehicle("C")
    r.run(400)
    f = r.c.faults
    assert f.active(safety.LOCK) and status.error_code(safety.LOCK) == "ConnectorLockFailure"
    assert not r.c.contactor and r.lock.moves == 1
    r.run(29000)
    assert f.active(safety.LOCK) and r.lock.moves == 1  # the pause of a transient fault
    r.run(1500)
    assert r.lock.moves == 2  # retried after fault_retry_s
    r.lock.jammed = False
    r.run(200)
    assert not r.c.contactor
    assert r.until(lambda: r.c.contactor, 35000)  # the next retry locks, the fault clears
    assert not f.active(safety.LOCK)
    assert not [e for e in r.events if e[0] == "contactor" and e[1]][:-1]


def test_a_lock_that_keeps_failing_waits_for_the_vehicle_to_leave():
    r = Rig(lock=True, fault_max_retries=1)
    r.lock.jammed = True
    r.vehicle("B")
    r.run(70000)
    assert r.c.faults.active(safety.LOCK) and r.lock.moves == 2
    r.run(60000)
    assert r.lock.moves == 2  # retries used up for this vehicle
    r.vehicle("A")
    r.lock.jammed = False
    r.run(40000)
    assert not r.c.faults.active(safety.LOCK) and r.lock.state == "unlocked"


def test_a_lock_that_stops_confirming_opens_the_contactor_in_the_same_tick():
    r = Rig(lock=True)
    r.charging()
    r.lock.state = "failed"  # what the driver reports when the feedback is lost at rest
    r.step()
    assert not r.c.contactor and r.c.faults.active(safety.LOCK)


def test_unlocks_at_the_session_end_only_once_no_current_can_flow():
    r = Rig(lock=True)
    r.amps_da = 160
    r.charging()
    r.run(1000)
    r.c.stop()
    assert not r.c.contactor
    r.amps_da = 160  # the meter still shows current: its next reading comes later
    r._inputs = _lagging(r, 1000)
    r.run(900)
    assert r.c.lock_wanted is True and r.lock.state == "locked"
    r.run(200)
    assert r.c.lock_wanted is False
    r.run(400)
    assert r.lock.state == "unlocked"


def _lagging(r, ms):
    """The Rig's inputs, with the meter showing the last current for `ms` after the opening."""
    plain = r._inputs
    opened = r.now

    def inputs():
        plain()
        if r.clock.ticks_diff(r.now, opened) < ms:
            r.c.inp.amps_da = 160
    return inputs


def test_welded_contactor_keeps_the_socket_locked():
    r = Rig(lock=True)
    r.charging()
    r.welded = True
    r.c.stop()
    r.run(3000)
    assert r.c.faults.active(safety.WELDED)
    assert r.c.lock_wanted is True and r.lock.state == "locked"


def test_vehicle_unplugging_its_end_unlocks_unless_configured_not_to():
    r = Rig(lock=True)
    r.charging()
    r.vehicle("A")
    r.run(1000)
    assert r.lock.state == "unlocked"
    r = Rig(lock=True, free_charging=False)
    r.c.unlock_on_ev_disconnect = False  # OCPP UnlockConnectorOnEVSideDisconnect false
    r.c.authorize("CARD1")
    r.charging()
    r.vehicle("A")
    r.run(1000)
    assert r.lock.state == "locked" and r.c.lock_hold and r.c.lock_owner == "CARD1"
    r.c.unlock()  # the owner's card (station.present) or a person's request
    r.run(1000)
    assert r.lock.state == "unlocked" and not r.c.lock_hold


def test_unlock_request_of_a_failed_lock_is_a_fresh_attempt_at_once():
    r = Rig(lock=True)
    r.charging()
    r.vehicle("A")
    r.lock.jammed = True
    r.run(1000)
    assert r.lock.state == "failed" and r.c.faults.active(safety.LOCK)
    assert r.c.unlock_result() is False
    r.lock.jammed = False
    r.c.unlock()
    assert r.c.unlock_result() is None
    r.step()
    assert r.lock.state == "moving" and r.lock.moves == 3
    r.run(400)
    assert r.c.unlock_result() is True


def test_power_loss_keep_holds_a_lock_found_locked_release_opens_it():
    r = Rig(lock=RigLock(locked=True), lock_after_power_loss="keep")
    r.run(2000)
    assert r.lock.state == "locked" and r.c.lock_hold and r.lock.moves == 0
    r.c.unlock()
    r.run(500)
    assert r.lock.state == "unlocked"
    r = Rig(lock=RigLock(locked=True))  # "release", the default
    r.run(1000)
    assert r.lock.state == "unlocked" and r.lock.moves == 1
    r = Rig(lock=RigLock(locked=True))  # the car is still there: its new session keeps it locked
    r.vehicle("B")
    r.run(1000)
    assert r.c.session and r.lock.state == "locked" and r.lock.moves == 0


def test_lock_after_power_loss_setting_is_checked():
    assert settings_mod.Settings({"lock_after_power_loss": "keep"}).get("lock_after_power_loss") == "keep"
    with pytest.raises(settings_mod.SettingsError) as e:
        settings_mod.Settings({"lock_after_power_loss": "hold"})
    assert "'lock_after_power_loss': expected one of \"release\", \"keep\", got 'hold'" in str(e.value)


def test_a_new_session_takes_over_a_held_lock():
    r = Rig(lock=True)
    r.c.hold_lock("CARD1")
    r.run(500)
    assert r.lock.state == "locked"
    r.vehicle("B")
    r.run(500)
    assert r.c.session and not r.c.lock_hold
    r.c.stop()
    r.run(1000)
    assert r.lock.state == "unlocked"


def test_lock_states_are_events():
    r = Rig(lock=True)
    r.charging()
    assert lock_events(r)[:3] == ["unlocked", "moving", "locked"]
    assert chg.LOCK_LOCKED == LOCKED and chg.LOCK_FAILED == FAILED and chg.LOCK_MOVING == MOVING


MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")

NO_ALLOC = r"""
import machine, micropython
from drivers.lock import Lock
from drivers import board
lk = Lock(board.load("esp32-devkit")["lock"])
machine.hw_set_input(14, 0)
lk.poll(0)
t = s = None  # (module globals made before the heap is locked)
micropython.heap_lock()
try:
    lk.want(True, 0)             # a whole move with its retries, stepped every 10 ms
    t = 10
    while t < 4000:
        lk.poll(t)
        t += 10
    s = lk.state
    lk.want(True, 4000)
    machine.hw_set_input(14, 1)  # (the fake's input hook may allocate; the driver must not)
    while t < 4500:
        lk.poll(t)
        t += 10
    lk.idle()
finally:
    micropython.heap_unlock()
print(s, lk.state, lk.moves)
"""


@pytest.mark.skipif(not os.path.exists(MICROPYTHON), reason="no micropython binary")
def test_driver_allocates_nothing_on_real_micropython():
    import subprocess

    env = dict(os.environ, MICROPYPATH=os.pathsep.join([os.path.join(ROOT, "tests_host", "fakes"), ROOT]))
    p = subprocess.run([MICROPYTHON, "-X", "heapsize=256K", "-c", NO_ALLOC], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.split() == ["failed", "locked", "4"]
