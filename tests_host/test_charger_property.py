"""Property: over random stories, the contactor is never closed while a precondition fails.

The reference below knows nothing of the charger's internals: it derives each precondition from
the inputs the story produced, and checks the contactor after every tick, so a precondition that
fails is seen opening the contactor within that same control tick.
"""
from hypothesis import given, settings, strategies as st, HealthCheck

from firmware import pilot
from rig import Rig

PILOT_STATES = ["A", "B", "C", "D", "E", "F", "gap"]

action = st.one_of(
    st.tuples(st.just("vehicle"), st.sampled_from(PILOT_STATES)),
    st.tuples(st.just("diode"), st.booleans()),
    st.tuples(st.just("leak"), st.booleans()),
    st.tuples(st.just("rcd_works"), st.booleans()),
    st.tuples(st.just("cable"), st.sampled_from([None, 220, 1500, 680, 20, 5000])),
    st.tuples(st.just("temp"), st.sampled_from([250, 620, 690, 700, 750, None])),
    st.tuples(st.just("authorize"), st.just(None)),
    st.tuples(st.just("deauthorize"), st.just(None)),
    st.tuples(st.just("stop"), st.just(None)),
    st.tuples(st.just("weld"), st.booleans()),
    st.tuples(st.just("amps"), st.sampled_from([None, 0, 100, 330, 400])),
    st.tuples(st.just("run"), st.integers(min_value=1, max_value=400)),
)


class Reference:
    """Preconditions derived from the story alone."""

    def __init__(self, free, vent, socketed):
        self.free = free
        self.vent = vent
        self.socketed = socketed
        self.reading = "A"  # last in-band pilot reading
        self.seen_b = False
        self.authorized = False
        self.stopped = False
        self.selftest_passed = False

    def observe(self, rig):
        vs = rig.vs
        if vs != "gap":
            if vs == "A":
                self.seen_b = False
                self.authorized = False
                self.stopped = False
                self.selftest_passed = False
            if vs == "B":
                self.seen_b = True
            self.reading = vs
        c = rig.c
        if c.rcd_test and rig.rcd_works:
            self.selftest_passed = True
        if rig.leak and rig.rcd_works:
            self.selftest_passed = False

    def failing(self, rig):
        """Names of the preconditions that fail right now."""
        c = rig.c
        i = c.inp
        out = []
        if not (self.reading == "C" or (self.reading == "D" and self.vent)):
            out.append("vehicle not ready")
        if not self.seen_b:
            out.append("no B since plug-in")
        if self.stopped or not (self.free or self.authorized):
            out.append("not authorized")
        if i.rcd_input:
            out.append("RCD tripped")
        if not self.selftest_passed:
            out.append("no RCD self-test")
        pwm = c.duty not in (pilot.DUTY_FULL, pilot.DUTY_OFF)
        if pwm and self.reading in "BCD" and not rig.diode:
            out.append("diode")
        if self.socketed and pilot.cable_amps(i.pp_ohms) is None:
            out.append("cable")
        if i.temp_dc is None or i.temp_dc >= 700:
            out.append("temperature")
        return out


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    free=st.booleans(),
    vent=st.booleans(),
    socketed=st.booleans(),
    start_charging=st.booleans(),
    story=st.lists(action, min_size=1, max_size=40),
)
def test_contactor_never_closed_while_a_precondition_fails(free, vent, socketed, start_charging, story):
    r = Rig(socketed=socketed, free_charging=free, ventilation_allowed=vent, fault_retry_s=30)
    ref = Reference(free, vent, socketed)
    if start_charging:  # most stories are more telling when they begin mid-session
        r.c.authorize("TAG")
        r.charging()
        ref.authorized = True
        ref.reading = "C"
        ref.seen_b = True
        ref.selftest_passed = True
    gap_mv = 7500

    def tick():
        r.clock.advance(10)
        r._inputs()
        if r.vs == "gap":
            r.c.inp.high_mv = gap_mv
        r.c.update(r.now)
        ref.observe(r)
        bad = ref.failing(r)
        assert not (r.c.contactor and bad), "closed while %s" % bad

    for verb, arg in story:
        if verb == "vehicle":
            r.vs = arg
        elif verb == "diode":
            r.diode = arg
        elif verb == "leak":
            r.leak = arg
        elif verb == "rcd_works":
            r.rcd_works = arg
        elif verb == "cable":
            if socketed:
                r.c.inp.pp_ohms = arg
        elif verb == "temp":
            r.c.inp.temp_dc = arg
        elif verb == "authorize":
            r.c.authorize("TAG")
            ref.authorized = True
            ref.stopped = False
        elif verb == "deauthorize":
            r.c.deauthorize(r.now)
            ref.authorized = False
            ref.stopped = True
            assert not r.c.contactor
        elif verb == "stop":
            r.c.stop("Remote", r.now)
            ref.authorized = False
            ref.stopped = True
            assert not r.c.contactor
        elif verb == "weld":
            r.welded = arg
        elif verb == "amps":
            r.amps_da = arg
        elif verb == "run":
            for _ in range(arg):
                tick()
        tick()
