"""firmware/energy.py: the energy manager's decisions, on fake readings and virtual time.

The charger is a stand-in with the attributes the manager reads (contactor, vs, offer_da) and
the real current arbiter (limits.py), so that a claim is seen as the offer it becomes."""
import pytest

from firmware import energy as en
from firmware import limits as lim
from firmware import settings as settings_mod
from vclock import VirtualClock


class Charger:
    def __init__(self, clock):
        self.limits = lim.Limits(clock)
        self.limits.claim(lim.HARDWARE, 320, safety=True)
        self.contactor = False
        self.vs = "B"
        self.offer_da = 0
        self.switchable = False
        self.supply_phases = 3
        self.switching = False
        self.phase_claims = []

    @property
    def plugged(self):
        return self.vs in ("B", "C", "D")

    def claim_phases(self, name, n):
        if not self.phase_claims or self.phase_claims[-1] != n:
            self.phase_claims.append(n)
        if n is not None:
            self.supply_phases = n  # (the charger's safe sequence is test_charger's business)


class GridMeter:
    """drivers.meter.Meter's readings: amps_ma (unsigned), power_w (signed), valid, updated_ms."""

    def __init__(self):
        self.valid = False
        self.updated_ms = None
        self.amps_ma = [0, 0, 0]
        self.power_w = 0

    def read(self, now, amps, power_w):
        self.valid = True
        self.updated_ms = now
        self.amps_ma = [int(abs(a) * 1000) for a in amps]
        self.power_w = power_w


class Metering:
    """The charger's own meter: what the car draws."""
    measures_current = True

    def __init__(self):
        self.amps_ma = [0, 0, 0]
        self.power_w = 0
        self.valid = True
        self.updated_ms = None

    def draw(self, amps, phases=3):
        self.amps_ma = [int(amps * 1000) if i < phases else 0 for i in range(3)]
        self.power_w = int(amps * 230 * phases)


class Rig:
    def __init__(self, **settings):
        self.clock = VirtualClock()
        s = settings_mod.Settings()
        s.update(settings)
        self.events = []
        self.e = en.Energy(self.clock, s, lambda kind, fields: self.events.append((kind, dict(fields))), 3)
        self.c = Charger(self.clock)
        self.grid = GridMeter()
        self.mt = Metering()

    def step(self, ms=100):
        self.clock.advance(ms)
        self.e.update(self.clock.ticks_ms(), self.grid, self.mt, self.c)

    def run(self, ms):
        for _ in range(ms // 100):
            self.step()

    def read(self, house, pv_w=0):
        """The grid meter reads the house plus what the car draws less the PV (spread on 3 phases)."""
        amps = [house[i] + self.mt.amps_ma[i] / 1000 - pv_w / 3 / 230 for i in range(3)]
        self.grid.read(self.clock.ticks_ms(), amps, int(sum(a * 230 for a in amps)))
        self.mt.updated_ms = self.clock.ticks_ms()  # the charger's own reading, right after

    def charge(self, phases=3):
        """The car draws what it is offered (the arbiter's lowest claim) on `phases` (at most
        the supply's)."""
        da = self.c.limits.target()
        self.c.contactor = da >= 60
        self.c.vs = "C" if da >= 60 else "B"
        self.c.offer_da = da
        self.mt.draw(da / 10 if da >= 60 else 0, min(phases, self.c.supply_phases))

    def claim(self):
        return self.c.limits.claims().get(en.CLAIM)

    def of(self, kind):
        return [f for k, f in self.events if k == kind]


def test_normal_mode_claims_nothing():
    r = Rig()
    r.read([40, 40, 40])
    r.run(1000)
    assert r.claim() is None and not r.e.needs_grid()


def test_smart_keeps_house_and_car_under_the_fuse_on_every_phase():
    r = Rig(energy_mode="smart", main_fuse_a=25.0, fuse_margin_a=1.0)
    r.read([10, 4, 2])
    r.step()
    assert r.claim() == 25 * 10 - 10 - 100  # L1 decides: 25 - 1 - 10 A of house = 14 A
    r.charge()
    r.read([10, 4, 2])
    r.step()
    assert r.claim() == 140  # the car's own current is not counted twice
    r.read([18, 4, 2])  # the house takes 8 A more on L1
    r.step()
    assert r.claim() == 60  # at once (a safety claim: the arbiter lowers the offer in this tick)
    r.read([22, 4, 2])
    r.step()
    assert r.claim() == 0  # less than 6 A left: the car pauses
    assert r.of("energy")[-1]["reason"] == en.FUSE


def test_smart_raises_gently():
    r = Rig(energy_mode="smart", main_fuse_a=40.0, fuse_margin_a=0.0)
    r.read([30, 0, 0])
    r.step()
    r.charge()
    assert r.claim() == 100
    seen = []
    for _ in range(200):  # 20 s, the house's load gone
        r.read([0, 0, 0])
        r.step()
        seen.append(r.claim())
    # 2 A every 5 s, the first once the car has followed its last change (SETTLE_MS)
    assert sorted(set(seen)) == [100, 120, 140, 160, 180] and seen[-1] == 180
    assert seen.count(100) == 31 and seen.count(140) == 50  # (3 s after the first round)


def test_a_one_phase_car_is_limited_by_its_own_phase_only():
    r = Rig(energy_mode="smart", main_fuse_a=25.0, fuse_margin_a=0.0)
    r.read([0, 0, 0])
    r.step()
    r.charge(phases=1)
    r.read([0, 20, 20])  # the other phases are nearly full
    r.step()
    assert r.e.car_phases == 1 and r.claim() == 250


def test_a_stale_reading_falls_back_to_the_safe_current_and_says_so():
    r = Rig(energy_mode="smart", main_fuse_a=25.0, grid_timeout_s=10, grid_fallback_a=6.0)
    r.read([0, 0, 0])
    r.step()
    assert r.claim() == 240
    r.run(9900)  # the reading is 10 s old: still fresh (not older than the timeout)
    assert r.claim() == 240 and not r.of("fault")
    r.run(100)
    assert r.claim() == 60 and r.e.reason == en.STALE
    assert r.of("fault") == [{"code": "grid", "active": True, "reason": "no grid reading for 10 s: 6 A offered"}]
    r.read([0, 0, 0])
    r.step()
    assert r.of("fault")[-1] == {"code": "grid", "active": False, "reason": None}
    assert r.claim() == 240  # (the first reading after a spell without one is not a raise)


def test_no_reading_since_boot_is_stale_after_the_timeout():
    r = Rig(energy_mode="solar", grid_timeout_s=5, grid_fallback_a=0.0)
    r.run(5000)
    assert r.claim() == 0 and not r.of("fault")
    r.run(200)
    assert r.of("fault")[0]["active"] is True


def test_solar_starts_after_the_start_time_and_rides_out_a_cloud():
    r = Rig(energy_mode="solar", solar_start_s=60, solar_stop_s=300)
    for _ in range(590):  # 59 s of 5.3 kW export
        r.read([1, 1, 1], pv_w=6000)
        r.step()
        r.charge()
    assert r.claim() == 0 and r.e.reason == en.SOLAR_SOON
    for _ in range(20):
        r.read([1, 1, 1], pv_w=6000)
        r.step()
        r.charge()
    # started on one phase's worth (the car's phases unknown), then it drew on three
    assert r.c.contactor and r.e.car_phases == 3
    for _ in range(100):
        r.read([1, 1, 1], pv_w=6000)
        r.step()
        r.charge()
    assert r.claim() == 76  # 5,310 W on three phases
    for _ in range(2900):  # 290 s of cloud: no surplus at all
        r.read([1, 1, 1], pv_w=0)
        r.step()
        r.charge()
    assert r.claim() == 60 and r.e.reason == en.SOLAR_SHORT
    for _ in range(300):  # the sun is back
        r.read([1, 1, 1], pv_w=9000)
        r.step()
        r.charge()
    assert r.claim() > 100 and r.e.reason == en.SURPLUS


def test_solar_stops_when_the_surplus_stays_short():
    r = Rig(energy_mode="solar", solar_start_s=0, solar_stop_s=300)
    for _ in range(30):
        r.read([0, 0, 0], pv_w=5000)
        r.step()
        r.charge()
    assert r.claim() >= 60
    for _ in range(3010):
        r.read([0, 0, 0], pv_w=500)
        r.step()
        r.charge()
    assert r.claim() == 0 and en.SOLAR_STOP in [f["reason"] for f in r.of("energy")]
    assert r.e.reason == en.SOLAR_WAIT


def test_a_one_phase_car_starts_on_one_phase_surplus():
    r = Rig(energy_mode="solar", solar_start_s=10)
    for _ in range(200):
        r.read([0, 0, 0], pv_w=1800)  # 7.8 A on one phase, 2.6 A on three
        r.step()
        r.charge(phases=1)
    assert r.c.contactor and r.e.car_phases == 1 and r.claim() == 78


def test_solar_import_allowance():
    r = Rig(energy_mode="solar", solar_start_s=0, solar_import_w=1000)
    for _ in range(50):
        r.read([0, 0, 0], pv_w=500)  # 1.5 kW with the allowance: 6.5 A on one phase
        r.step()
        r.charge(phases=1)
    assert r.claim() == 65


def test_the_fuse_caps_solar_too():
    r = Rig(energy_mode="solar", main_fuse_a=20.0, fuse_margin_a=0.0, solar_start_s=0)
    for _ in range(50):
        r.read([15, 0, 0], pv_w=20000)
        r.step()
        r.charge()
    assert r.claim() <= 50 + 0 or r.claim() == 0  # 20 - 15 = 5 A on L1: too little, it pauses
    assert r.claim() == 0


def test_no_other_claim_lifts_the_fuse_ceiling():
    r = Rig(energy_mode="smart", main_fuse_a=25.0, fuse_margin_a=0.0)
    r.read([15, 0, 0])
    r.step()
    r.c.limits.claim(lim.OPERATOR, 320)  # a person, the back end: more
    assert r.c.limits.target() == 100


def test_the_mode_changes_at_run_time_and_a_bad_one_changes_nothing():
    r = Rig(main_fuse_a=25.0)
    assert r.e.set_mode("fast") == "energy_mode must be one of normal, smart, solar, not 'fast'"
    assert r.e.mode == "normal"
    assert r.e.set_mode("smart") is None and r.e.needs_grid()
    r.read([5, 5, 5])
    r.step()
    assert r.claim() == 190
    assert r.e.set_mode("normal") is None
    r.step()
    assert r.claim() is None


def test_smart_needs_a_fuse():
    r = Rig()
    assert r.e.set_mode("smart") == "smart mode needs main_fuse_a"
    with pytest.raises(settings_mod.SettingsError, match="needs main_fuse_a"):
        settings_mod.Settings().update({"energy_mode": "smart"})


@pytest.mark.parametrize("amps, power, age", [
    ([float("nan"), 0, 0], 0, 0), ([1e999, 0, 0], 0, 0), ([1, 2], 0, 0), ("abc", 0, 0),
    ([1, 2, 3], float("nan"), 0), ([1, 2, 3], 0, -5), ([1, 2, 3], 0, 10 ** 9), (None, None, None),
])
def test_a_pushed_reading_out_of_range_is_refused_and_changes_nothing(amps, power, age):
    r = Rig(energy_mode="smart", main_fuse_a=25.0)
    assert r.e.grid([3, 3, 3], 2000, r.clock.ticks_ms()) is None
    r.step()
    before = (list(r.e.grid_amps), r.e.grid_w, r.claim())
    assert isinstance(r.e.grid(amps, power, r.clock.ticks_ms(), age), str)
    r.step()
    assert (list(r.e.grid_amps), r.e.grid_w, r.claim()) == before


def test_a_pushed_reading_counts_like_the_meters():
    r = Rig(energy_mode="smart", main_fuse_a=25.0, fuse_margin_a=0.0)
    r.grid = None
    assert r.e.grid([-5, 10, 3], 500, r.clock.ticks_ms(), age_ms=1000) is None
    r.step()
    assert r.e.fresh and r.claim() == 150  # the magnitudes: L2 has 10 A of house load


def test_the_decision_is_an_energy_event_when_it_changes():
    r = Rig(energy_mode="smart", main_fuse_a=25.0)
    r.read([5, 5, 5])
    r.run(1000)
    ev = r.of("energy")
    assert len(ev) == 1  # one decision, unchanged for a second
    assert ev[-1] == {"mode": "smart", "grid_amps": [5.0, 5.0, 5.0], "surplus_w": 0, "phases": 3,
                      "target_amps": 19.0, "reason": en.WITHIN if 190 >= 320 else en.FUSE}


def solar_day(r, pv_w, seconds, phases=3, house=(0, 0, 0)):
    for _ in range(seconds * 10):
        r.read(list(house), pv_w=pv_w)
        r.step()
        r.charge(phases)


def test_solar_switches_to_one_phase_on_a_small_surplus_and_back_up():
    r = Rig(energy_mode="solar", solar_start_s=0)
    r.c.switchable = True
    solar_day(r, 2500, 30)  # 2.5 kW: too little for three phases at 6 A
    assert r.c.phase_claims == []  # not before SWITCH_DOWN_MS
    solar_day(r, 2500, 40)
    assert r.c.phase_claims == [1] and r.c.supply_phases == 1
    solar_day(r, 2500, 30)
    assert r.claim() == 108 and r.e.car_phases == 1  # 2.5 kW on one phase
    solar_day(r, 4500, 300)  # enough for three phases at 6.5 A, but under the hysteresis
    assert r.c.phase_claims == [1]
    solar_day(r, 6000, 100)  # not before SWITCH_UP_MS
    assert r.c.phase_claims == [1]
    solar_day(r, 6000, 30)
    assert r.c.phase_claims == [1, 3] and r.c.supply_phases == 3
    solar_day(r, 6000, 30)
    assert r.claim() == 86 and r.e.car_phases == 3


def test_no_two_switches_within_the_minimum_time():
    r = Rig(energy_mode="solar", solar_start_s=0)
    r.c.switchable = True
    solar_day(r, 2500, 61)
    assert r.c.phase_claims == [1]
    solar_day(r, 9000, 290)  # up after 120 s of surplus, but not within 300 s of the first switch
    assert r.c.phase_claims == [1]
    solar_day(r, 9000, 20)
    assert r.c.phase_claims == [1, 3]


def test_a_car_that_charges_on_one_phase_is_not_switched_up_in_vain():
    r = Rig(energy_mode="solar", solar_start_s=0)
    r.c.switchable = True
    solar_day(r, 9000, 30, phases=1)  # three phases supplied, the car takes one
    assert r.e.car_max == 1
    solar_day(r, 2500, 61, phases=1)
    assert r.c.phase_claims == [1]
    solar_day(r, 9000, 400, phases=1)
    assert r.c.phase_claims == [1]  # never back up for this car
    r.c.vs = "A"
    r.c.contactor = False
    r.step()
    assert r.e.car_max is None  # the next car may be another


def test_smart_mode_claims_no_phases():
    r = Rig(energy_mode="smart", main_fuse_a=25.0)
    r.c.switchable = True
    r.read([0, 0, 0])
    r.step()
    assert r.c.phase_claims == [None]


def test_a_three_phase_car_started_on_one_phase_surplus_stops_at_once_and_waits_for_three():
    r = Rig(energy_mode="solar", solar_start_s=60)
    solar_day(r, 2000, 64)  # 2 kW: enough for one phase, and the car's phases are unknown
    started = [f for f in r.of("energy") if f["reason"] == en.SURPLUS]
    assert started and started[0]["target_amps"] == 8.6  # it started on one phase's worth ...
    assert r.e.car_max == 3 and r.claim() == 0  # ... drew on three, and stopped at once
    assert r.of("energy")[-1]["reason"] in (en.SOLAR_PROBE, en.SOLAR_WAIT)
    solar_day(r, 2000, 120)
    assert r.claim() == 0  # not again on one phase's worth in this plug-in
    solar_day(r, 5000, 61)
    assert r.claim() >= 60 and r.c.contactor


def test_back_to_normal_withdraws_the_phase_claim_too():
    r = Rig(energy_mode="solar", solar_start_s=0)
    r.c.switchable = True
    solar_day(r, 2500, 61)
    assert r.c.phase_claims == [1]
    assert r.e.set_mode("normal") is None
    r.step()
    assert r.c.phase_claims == [1, None] and r.claim() is None
