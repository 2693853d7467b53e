"""The lifetime energy register: never backwards, survives reboots, believes only plausible readings."""
from vclock import VirtualClock
from firmware.metering import Metering, REBASE_AFTER
from firmware.ocpp.meter import measurands  # the names OCPP gives what metering measures


class FakeMeter:
    """The reading attributes of drivers/meter.py, set by hand."""

    def __init__(self, wh=1000):
        self.readings = 0
        self.valid = False
        self.energy_wh = wh
        self.power_w = 0
        self.amps_ma = [0, 0, 0]
        self.volts_dv = [2300, 2300, 2300]
        self.failures = 0

    def reading(self, wh, amps=(16000, 16000, 16000), power=11040):
        self.readings += 1
        self.valid = True
        self.energy_wh = wh
        self.amps_ma = list(amps)
        self.power_w = power

    def failure(self):
        self.readings += 1
        self.valid = False
        self.failures += 1


def make(tmp_path, meter=None, clock=None):
    clock = clock or VirtualClock(0)
    return Metering(meter or FakeMeter(), clock, str(tmp_path / "energy.json"), 32, 3), clock


def feed(mt, clock, meter, wh, step_ms=1000, **kw):
    clock.advance(step_ms)
    meter.reading(wh, **kw)
    mt.update(clock.ticks_ms())


def test_register_follows_the_meter_from_zero(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    assert mt.register_wh is None
    feed(mt, clock, m, 5000)
    assert mt.register_wh == 0 and mt.valid
    feed(mt, clock, m, 5003)
    assert mt.register_wh == 3
    assert mt.max_amps_da() == 160
    assert mt.phases() == "L1,L2,L3"


def test_register_survives_a_reboot_and_counts_what_the_meter_counted_meanwhile(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    feed(mt, clock, m, 5000)
    feed(mt, clock, m, 5003)
    mt.save()
    m2 = FakeMeter()
    again, clock2 = make(tmp_path, m2)
    assert again.register_wh == 3
    feed(again, clock2, m2, 5010)
    assert again.register_wh == 10


def test_replaced_meter_never_makes_the_register_go_back(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    feed(mt, clock, m, 5000)
    feed(mt, clock, m, 5003)
    mt.save()
    m2 = FakeMeter()
    again, clock2 = make(tmp_path, m2)
    feed(again, clock2, m2, 12)  # a new meter, at 12 Wh
    assert again.register_wh == 3
    feed(again, clock2, m2, 15)
    assert again.register_wh == 6


def test_backwards_and_jumps_are_rejected_and_counted(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    feed(mt, clock, m, 5000)
    feed(mt, clock, m, 4990)
    assert mt.rejected["backwards"] == 1 and mt.register_wh == 0 and not mt.valid
    feed(mt, clock, m, 9000)  # 4 kWh in 2 s: no 32 A installation delivers that
    assert mt.rejected["jump"] == 1 and mt.register_wh == 0
    feed(mt, clock, m, 5010)
    assert mt.register_wh == 10 and mt.valid
    feed(mt, clock, m, 5011, amps=(400000, 0, 0))
    assert mt.rejected["current"] == 1 and mt.register_wh == 10


def test_a_steady_new_level_is_taken_as_a_replaced_meter(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    feed(mt, clock, m, 5000)
    for k in range(REBASE_AFTER):
        feed(mt, clock, m, 100 + k)
    assert mt.rejected["rebased"] == 1
    assert mt.register_wh == 0
    feed(mt, clock, m, 108)
    assert mt.register_wh == 108 - (100 + REBASE_AFTER - 1)


def test_failed_after_consecutive_failures_and_recovers(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    feed(mt, clock, m, 5000)
    for _ in range(3):
        clock.advance(1000)
        m.failure()
        mt.update(clock.ticks_ms())
    assert mt.failed
    m.failures = 0
    feed(mt, clock, m, 5001)
    assert not mt.failed and mt.valid


def test_nonsense_in_a_row_counts_as_failed(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    feed(mt, clock, m, 5000)
    for wh in (10, 900000, 3, 700000):
        feed(mt, clock, m, wh)
    assert mt.failed


def test_measurands(tmp_path):
    m = FakeMeter()
    mt, clock = make(tmp_path, m)
    assert measurands(mt, 16) == {"Current.Offered": 16}
    feed(mt, clock, m, 5000, amps=(16000, 0, 0), power=3680)
    out = measurands(mt, 16)
    assert out["Energy.Active.Import.Register"] == 0
    assert out["Power.Active.Import"] == 3680
    assert out["Current.Import"] == {"L1": 16.0, "L2": 0.0, "L3": 0.0}
    assert out["Voltage"]["L1-N"] == 230.0
    assert mt.phases() == "L1"


def test_no_meter_reports_nothing_but_the_offer(tmp_path):
    mt = Metering(None, VirtualClock(0), str(tmp_path / "energy.json"), 32, 3)
    mt.update(0)
    assert mt.register_wh is None and mt.max_amps_da() is None and not mt.failed
    assert measurands(mt, 10) == {"Current.Offered": 10}
