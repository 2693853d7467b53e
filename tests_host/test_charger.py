"""Every transition and fault of the charging state machine, on virtual time."""
from firmware import limits as lim
from firmware import pilot
from firmware import safety
from offdevice import amps_for
from rig import Rig


def test_boot_is_safe():
    r = Rig()
    r.step()
    assert not r.c.contactor
    assert r.c.duty == pilot.DUTY_FULL
    assert r.c.state == "A"


def test_normal_session_states_and_offer():
    r = Rig()
    r.step()
    r.vehicle("B")
    r.step()
    assert r.c.state == "B1"  # no offer before the RCD self-test passed
    assert r.c.rcd_test
    r.run(200)
    assert r.c.rcd_ok and r.c.state == "B2"
    assert amps_for(r.c.duty) == 320
    r.vehicle("C")
    r.step()
    assert not r.c.contactor  # closing is debounced
    r.run(200)
    assert r.c.contactor and r.c.state == "C2"
    starts = [e for e in r.kinds("session") if e[1] == "start"]
    assert len(starts) == 1


def test_close_waits_for_debounce():
    r = Rig(close_debounce_ms=500)
    r.vehicle("B")
    r.run(500)
    r.vehicle("C")
    r.run(400)
    assert not r.c.contactor
    r.run(200)
    assert r.c.contactor


def test_c_to_b_opens_in_the_same_tick():
    r = Rig()
    r.charging()
    r.vehicle("B")
    r.step()
    assert not r.c.contactor
    assert r.c.state == "B2"


def test_unplug_under_load_opens_and_ends_session():
    r = Rig()
    r.charging()
    r.vehicle("A")
    r.step()
    assert not r.c.contactor
    assert r.c.state == "A"
    assert ("session", "stop", "EVDisconnected") in r.events


def test_state_e_opens_and_faults():
    r = Rig()
    r.charging()
    r.vehicle("E")
    r.step()
    assert not r.c.contactor
    assert r.c.faults.active(safety.PILOT_SHORT)


def test_pilot_stuck_at_minus_12_is_a_fault():
    r = Rig()
    r.charging()
    r.vehicle("F")
    r.step()
    assert not r.c.contactor
    assert r.c.faults.active(safety.PILOT)


def test_diode_fault_opens():
    r = Rig()
    r.charging()
    r.diode = False
    r.step()
    assert not r.c.contactor
    assert r.c.faults.active(safety.DIODE)


def test_diode_missing_prevents_closing():
    r = Rig()
    r.diode = False
    r.vehicle("B")
    r.run(1000)
    r.vehicle("C")
    r.run(2000)
    assert not r.c.contactor
    assert r.c.faults.active(safety.DIODE)


def test_rcd_trip_opens_and_retries_after_pause_with_new_selftest():
    r = Rig()
    r.charging()
    r.leak = True
    r.step()
    assert not r.c.contactor
    assert r.c.faults.active(safety.RCD_TRIP)
    r.run(40000)
    assert r.c.faults.active(safety.RCD_TRIP)  # still leaking: no retry
    r.leak = False
    r.run(29000)
    assert r.c.faults.active(safety.RCD_TRIP)  # the pause is at least 30 s
    r.run(1500)
    assert not r.c.faults.active(safety.RCD_TRIP)
    assert r.until(lambda: r.c.contactor, 3000)
    tests = [i for i, e in enumerate(r.events) if e == ("fault", safety.RCD_TRIP, False)]
    assert tests  # a new self-test ran before closing again


def test_rcd_selftest_failure_blocks_offer_and_gets_bounded_retries():
    r = Rig(fault_max_retries=2)
    r.rcd_works = False
    r.vehicle("B")
    r.run(600)
    assert r.c.faults.active(safety.RCD_SELFTEST)
    assert r.c.duty == pilot.DUTY_FULL
    r.vehicle("C")
    r.run(5 * 31000)
    assert not r.c.contactor
    raised = [e for e in r.events if e == ("fault", safety.RCD_SELFTEST, True)]
    assert len(raised) == 3  # the first try and two retries, then it waits for unplug
    r.rcd_works = True
    r.run(60000)
    assert r.c.faults.active(safety.RCD_SELFTEST)
    r.vehicle("A")
    r.run(31000)
    assert not r.c.faults.any()
    r.charging()


def weld_found(r):
    """The contacts weld while the car charges; the car pauses, and the weld is found."""
    r.charging()
    r.welded = True
    r.vehicle("B")
    r.run(1100)
    assert r.c.faults.active(safety.WELDED)


def test_weld_is_permanent_until_cleared():
    r = Rig()
    weld_found(r)
    assert r.c.state == "F" and r.c.duty == pilot.DUTY_OFF
    r.vehicle("A")
    r.run(120000)
    r.vehicle("B")
    r.run(2000)
    r.vehicle("C")
    r.run(5000)
    assert not r.c.contactor and r.c.faults.active(safety.WELDED)
    r.welded = False
    r.c.clear_fault(safety.WELDED)
    r.run(2000)
    assert r.c.contactor


def test_contactor_that_does_not_close_is_a_fault():
    r = Rig()
    r.charging()
    r.c.inp.feedback = False

    def stuck_open():
        r.clock.advance(10)
        r._inputs()
        r.c.inp.feedback = False
        r.c.update(r.now)

    for _ in range(110):
        stuck_open()
    assert r.c.faults.active(safety.CONTACTOR)
    assert not r.c.contactor


def test_no_feedback_input_means_no_weld_check():
    r = Rig()
    r.charging()
    r.vehicle("B")
    for _ in range(200):
        r.clock.advance(10)
        r._inputs()
        r.c.inp.feedback = None
        r.c.update(r.now)
    assert not r.c.faults.any()


def test_overcurrent_after_five_seconds():
    r = Rig(max_current_a=16)
    r.amps_da = 170  # 17 A: within 16 A + 2 A margin
    r.charging()
    r.run(10000)
    assert r.c.contactor
    r.amps_da = 190
    r.run(4900)
    assert r.c.contactor
    r.run(200)
    assert not r.c.contactor
    assert r.c.faults.active(safety.OVERCURRENT)


def test_temperature_derating_then_shutdown_then_resume():
    r = Rig()
    r.charging()
    r.c.inp.temp_dc = 650  # 65 C: half-way from 60 to 70
    r.step()
    assert r.c.offer_da == 320 - (320 - 60) * 50 // 100
    assert r.c.contactor
    r.c.inp.temp_dc = 700
    r.step()
    assert not r.c.contactor
    assert r.c.faults.active(safety.OVERTEMP)
    r.c.inp.temp_dc = 600  # cooler but above the resume point
    r.run(60000)
    assert r.c.faults.active(safety.OVERTEMP)
    r.c.inp.temp_dc = 500
    r.run(29000)
    assert r.c.faults.active(safety.OVERTEMP)
    r.run(2000)
    assert not r.c.faults.active(safety.OVERTEMP)


def test_missing_temperature_sensor_is_a_fault():
    r = Rig()
    r.c.inp.temp_dc = None
    r.vehicle("B")
    r.run(500)
    assert r.c.faults.active(safety.TEMP_SENSOR)
    assert r.c.duty == pilot.DUTY_FULL


def test_authorization_and_its_loss():
    r = Rig(free_charging=False)
    r.vehicle("B")
    r.run(500)
    r.vehicle("C")
    r.run(2000)
    assert not r.c.contactor and r.c.state == "C1"
    r.c.authorize("CAFE01")
    r.run(300)
    assert r.c.contactor
    assert ("session", "start", "CAFE01") in r.events
    r.c.deauthorize(r.now)
    assert not r.c.contactor  # opened inside the call
    r.step()
    assert ("session", "stop", "DeAuthorized") in r.events


def test_stop_command_opens_and_does_not_restart():
    r = Rig()
    r.charging()
    r.c.stop("Remote", r.now)
    assert not r.c.contactor
    r.run(60000)
    assert not r.c.contactor and r.c.duty == pilot.DUTY_FULL
    assert ("session", "stop", "Remote") in r.events
    r.vehicle("A")
    r.run(100)
    r.charging()  # a new plug-in is a new session


def test_pwm_removed_car_stays_in_c_opens_at_6s():
    r = Rig()
    r.charging()
    r.run(6000)
    r.c.limits.claim(lim.OPERATOR, 0)
    r.step()
    assert r.c.duty == pilot.DUTY_FULL and r.c.state == "C1"
    r.run(5900)
    assert r.c.contactor
    r.run(200)
    assert not r.c.contactor


def test_pwm_removed_car_goes_to_b_opens_at_once():
    r = Rig()
    r.charging()
    r.run(6000)
    r.c.limits.claim(lim.OPERATOR, 0)
    r.run(1000)
    assert r.c.contactor
    r.vehicle("B")
    r.step()
    assert not r.c.contactor


def test_a_to_c_without_b_is_a_pilot_fault():
    r = Rig()
    r.step()
    r.vehicle("C")
    r.run(5000)
    assert not r.c.contactor
    assert r.c.faults.active(safety.PILOT)
    r.vehicle("B")
    r.run(31000)
    assert not r.c.faults.active(safety.PILOT)
    r.vehicle("C")
    assert r.until(lambda: r.c.contactor, 3000)


def test_out_of_band_holds_state_then_faults():
    r = Rig()
    r.charging()
    r.c.inp.high_mv = 7500
    r.c.update(r.now + 10)
    r.clock.advance(10)
    assert r.c.contactor and r.c.vs == "C"  # a reading between bands holds the state
    for _ in range(6):
        r.clock.advance(10)
        r.c.inp.high_mv = 7500
        r.c.update(r.now)
    assert not r.c.contactor
    assert r.c.faults.active(safety.PILOT)


def test_ventilation():
    r = Rig()
    r.vehicle("B")
    r.run(500)
    r.vehicle("D")
    r.run(2000)
    assert not r.c.contactor and r.c.state == "D2"
    r2 = Rig(ventilation_allowed=True)
    r2.vehicle("B")
    r2.run(500)
    r2.vehicle("D")
    r2.run(500)
    assert r2.c.contactor
    r2.vehicle("C")
    r2.step()
    assert r2.c.contactor  # D -> C keeps charging
    r2.vehicle("D")
    r2.step()
    assert r2.c.contactor


def test_socketed_needs_cable_and_takes_its_rating():
    r = Rig()
    r.c.inp.pp_ohms = None
    r.vehicle("B")
    r.run(1000)
    r.vehicle("C")
    r.run(1000)
    assert not r.c.contactor and r.c.duty == pilot.DUTY_FULL
    r.c.inp.pp_ohms = 1500  # 13 A cable
    r.run(500)
    assert r.c.contactor and amps_for(r.c.duty) == 130
    r.c.inp.pp_ohms = 20  # shorted PP
    r.step()
    assert not r.c.contactor and r.c.faults.active(safety.CABLE)


def test_tethered_needs_no_cable():
    r = Rig(socketed=False)
    r.charging()


def test_offer_changes_at_most_every_5s_except_safety_lowering():
    r = Rig()
    r.charging()
    assert r.c.offer_da == 320
    r.c.limits.claim(lim.OPERATOR, 160)
    r.step()
    assert r.c.offer_da == 320  # started less than 5 s ago
    r.run(5000)
    assert r.c.offer_da == 160
    r.c.limits.claim(lim.OPERATOR, 200)
    r.run(1000)
    assert r.c.offer_da == 160
    r.c.inp.pp_ohms = 1500  # a safety claim lowers at once
    r.step()
    assert r.c.offer_da == 130
    r.run(5000)
    r.c.inp.pp_ohms = 220
    r.run(100)
    r.c.inp.temp_dc = 690
    r.step()
    assert r.c.offer_da < 130


def test_unavailable_offers_nothing():
    r = Rig()
    r.charging()
    r.c.set_available(False, r.now)
    assert not r.c.contactor
    r.run(2000)
    assert r.c.duty == pilot.DUTY_FULL
    r.c.set_available(True, r.now)
    assert r.until(lambda: r.c.contactor, 1000)


def test_meter_failure_is_a_fault_unless_allowed():
    r = Rig()
    r.charging()
    r.c.inp.meter_failed = True
    r.step()
    assert not r.c.contactor and r.c.faults.active(safety.METER)
    r2 = Rig(meter_required=False)
    r2.charging()
    r2.c.inp.meter_failed = True
    r2.run(1000)
    assert r2.c.contactor


def test_nothing_offered_before_the_meter_gave_a_reading():
    r = Rig()
    r.c.inp.meter_ready = False
    r.vehicle("B")
    r.run(1000)
    r.vehicle("C")
    r.run(2000)
    assert not r.c.contactor and r.c.duty == 65535
    r.c.inp.meter_ready = True
    assert r.until(lambda: r.c.contactor, 1000)


# ---- weld check at boot and after every opening; contactor wear (README "Contactor checks
# and wear") ----

def test_nothing_is_offered_after_boot_before_the_weld_check_passed():
    r = Rig()
    r.welded = True  # welded before the boot: the feedback shows closed with the coil off
    r.vehicle("B")
    r.run(500)
    r.vehicle("C")
    r.run(800)
    # a car offered current would draw it through the welded contacts
    assert r.c.duty in (pilot.DUTY_FULL, pilot.DUTY_OFF) and not r.c.contactor
    r.run(300)
    assert r.c.faults.active(safety.WELDED) and r.c.state == "F"
    assert not [e for e in r.kinds("contactor") if e[1]]


def test_a_boot_with_an_open_feedback_offers_at_once():
    r = Rig()
    r.vehicle("B")
    r.run(300)
    assert r.c.state == "B2"


def test_after_an_opening_the_contactor_closes_again_only_once_the_feedback_showed_open():
    r = Rig()
    r.charging()
    r.welded = True
    r.vehicle("B")
    r.step()
    assert not r.c.contactor
    r.vehicle("C")  # back before the weld check is over: must not close onto the weld
    r.run(990)
    assert not r.c.contactor and not r.c.faults.active(safety.WELDED)
    r.run(20)
    assert r.c.faults.active(safety.WELDED)
    assert len([e for e in r.kinds("contactor") if e[1]]) == 1


def test_a_latched_fault_ends_the_session():
    r = Rig()
    weld_found(r)
    assert ("session", "stop", "Other") in r.events
    assert not r.c.session
    r.run(60000)  # in F the unplug cannot be seen: no second stop, no new session
    assert [e for e in r.kinds("session")] == [("session", "start", None), ("session", "stop", "Other")]


def chatter(r, minutes, b_ms=200, c_ms=1000, weld_at=None):
    """The car's pilot goes B for b_ms, C for c_ms, again and again; returns the closing ticks."""
    closes = []
    was = r.c.contactor
    t = 0
    r.welded_found = None
    while t < minutes * 60000:
        for vs, ms in (("B", b_ms), ("C", c_ms)):
            r.vehicle(vs)
            for _ in range(ms // 10):
                if weld_at is not None and t >= weld_at:
                    r.welded = True
                r.step()
                t += 10
                if r.welded_found is None and r.c.faults.active(safety.WELDED):
                    r.welded_found = t
                if r.c.contactor and not was:
                    closes.append(r.now)
                was = r.c.contactor
    return closes


def test_a_chattering_pilot_gets_at_most_ten_closings_a_minute_and_a_growing_hold_off():
    r = Rig()
    r.charging()
    closes = chatter(r, 10)
    for i, t in enumerate(closes):
        assert len([x for x in closes[i:] if x - t < 60000]) <= 10
    assert len(closes) <= 30  # over ten minutes: the hold-off grew
    holds = [e[1] for e in r.kinds("holdoff")]
    assert holds and holds == sorted(holds) and holds[-1] >= 60000
    assert [e[2] for e in r.kinds("holdoff")][0] == "short"
    assert not r.c.faults.any()


def test_the_ring_caps_closings_even_when_the_charges_are_not_short():
    r = Rig(close_debounce_ms=50)
    r.charging()
    # every charge lasts long enough to reset the short-charge count, but the car replugs
    closes = []
    for _ in range(30):
        r.vehicle("A")
        r.run(100)
        r.vehicle("B")
        r.run(300)
        r.vehicle("C")
        t0 = r.now
        r.until(lambda: r.c.contactor, 120000)
        closes.append(r.now)
        assert r.now - t0 < 120000
    for i, t in enumerate(closes):
        assert len([x for x in closes[i:] if x - t < 60000]) <= 10
    assert "rate" in [e[2] for e in r.kinds("holdoff")]


def test_a_long_charge_starts_the_wear_count_afresh():
    r = Rig()
    r.charging()
    chatter(r, 1)
    assert r.c.short_charges > 3
    r.vehicle("C")
    r.until(lambda: r.c.contactor, 400000)
    r.run(61000)
    r.vehicle("B")
    r.step()
    assert r.c.short_charges == 0
    r.vehicle("C")
    r.run(500)
    assert r.c.contactor  # no hold-off


def test_a_weld_that_appears_during_chatter_is_found_within_five_seconds():
    r = Rig()
    r.charging()
    t0 = r.now
    closes = chatter(r, 1, weld_at=30000)
    assert r.welded_found is not None and r.welded_found - 30000 <= 5000
    assert not [t for t in closes if t - t0 > 30000]  # no closing onto the weld
    assert r.c.faults.active(safety.WELDED)


def test_no_session_begins_while_out_of_service():
    r = Rig()
    r.c.faults.trip(safety.CONFIG, r.now, False)  # a refused settings file
    r.vehicle("B")
    r.run(2000)
    assert not r.kinds("session") and r.c.state == "F"


def test_a_person_may_reset_the_wear_count():
    r = Rig()
    r.charging()
    chatter(r, 1)
    r.c.reset_wear()
    r.vehicle("C")
    r.run(300)
    assert r.c.contactor  # no hold-off, whatever the ring held


# ---- 1p/3p switching (a board with a phase switch) ----

def switching_rig(**settings):
    r = Rig(**settings)
    r.c.switchable = True
    r.amps_da = 160
    r.charging()
    return r


def steps_watching_the_switch(r, ms):
    """Step, and check the switch's rule at every tick: it moves only with the contactor open and
    its auxiliary contact showing open."""
    for _ in range(ms // 10):
        before = r.c.supply_phases
        r.step()
        if r.c.supply_phases != before:
            assert not r.c.contactor and not r.c.inp.feedback


def test_a_phase_switch_withdraws_the_offer_waits_for_the_car_and_switches_with_the_contactor_open():
    r = switching_rig()
    assert r.c.claim_phases("energy", 1)
    r.step()
    assert r.c.switching and r.c.duty == pilot.DUTY_FULL  # the offer goes in the same tick
    assert r.c.contactor and r.c.supply_phases == 3  # the car still draws: not under load
    r.amps_da = 0  # the car stopped drawing
    steps_watching_the_switch(r, 20)
    assert not r.c.contactor
    steps_watching_the_switch(r, 20)
    assert r.c.supply_phases == 1 and ("phases", 1, None) in r.events
    assert r.c.duty == pilot.DUTY_FULL  # no offer while the switch settles
    r.amps_da = 160
    steps_watching_the_switch(r, 2000)
    assert not r.c.switching and r.c.duty != pilot.DUTY_FULL
    assert r.until(lambda: r.c.contactor, 3000)
    assert r.c.session and not [e for e in r.events if e[0] == "session" and e[1] == "stop"]


def test_a_car_that_keeps_drawing_gets_the_c1_timeout_then_the_switch():
    r = switching_rig(c1_timeout_ms=6000)
    r.c.claim_phases("energy", 1)
    steps_watching_the_switch(r, 5900)
    assert r.c.contactor and r.c.supply_phases == 3
    steps_watching_the_switch(r, 200)
    assert not r.c.contactor and r.c.supply_phases == 1


def test_a_welded_contactor_never_moves_the_switch():
    r = switching_rig()
    r.welded = True
    r.amps_da = 0
    r.c.claim_phases("energy", 1)
    steps_watching_the_switch(r, 3000)
    assert r.c.supply_phases == 3 and r.c.faults.active(safety.WELDED)


def test_the_fewest_claimed_phases_win_and_a_switch_not_begun_can_be_called_off():
    r = switching_rig()
    r.c.claim_phases("energy", 3)
    r.c.claim_phases("ocpp", 1)
    assert r.c.phases_wanted == 1
    r.step()
    assert r.c.switching
    r.c.claim_phases("ocpp", None)  # the car still draws: the switch has not moved
    r.step()
    assert not r.c.switching and r.c.supply_phases == 3 and r.c.contactor
    assert not r.c.claim_phases("energy", 2) and r.c.phases_wanted == 3


def test_without_a_phase_switch_claims_change_nothing():
    r = Rig()
    r.amps_da = 160
    r.charging()
    r.c.claim_phases("energy", 1)
    r.run(10000)
    assert r.c.contactor and r.c.supply_phases == 3 and not r.c.switching
