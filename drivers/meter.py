"""Modbus energy meter (Eastron SDM630 / SDM72D / SDM120 / SDM230, Chint DTSU666 / DDSU666),
described by data (drivers/meter_models.py), and the entry point for the S0 pulse meter.

    meter = build(profile["meter"], clock)      # model "s0": drivers.s0.S0Meter
    grid = build_on(meter, profile["grid_meter"])  # a second meter on the same RS-485 bus
    every tick: meter.poll(now_ms); grid.poll(now_ms)

Meters on one bus share its Modbus master: a meter starts a refresh only while the bus is idle,
and only the meter whose request is on the bus steps the master, so their requests take turns.

Readings (ints in fixed units, so a refresh allocates nothing once running):
    energy_wh   imported active energy, Wh
    power_w     active power, W (total of all phases)
    amps_ma     [L1, L2, L3] current, mA (L2/L3 stay 0 on 1-phase meters)
    volts_dv    [L1, L2, L3] line-to-neutral voltage, tenths of a volt
    valid       True while the last refresh completed and was believed
    updated_ms  clock tick of the last believed reading (None before the first)
    readings    count of believed readings
    failures    consecutive failed refreshes (0 after a good one)
    errors      counts by kind: timeout, crc, exception, wrong_address, wrong_function,
                bad_reply (one per failed Modbus attempt, retries included), backwards
                (refreshes whose energy went below the last believed one) and out_of_range
                (refreshes with a register holding NaN or an infinity, or a negative energy)
    last_error  a sentence about the most recent failure (None until one happens; kept after
                recovery, `valid` tells the present)
    measures_current  True: amps_ma and volts_dv are measured (an S0 meter has False)

Values are published together only when every read of a refresh succeeded; a refresh whose
energy is lower than the last believed one is not believed (counted in errors["backwards"]), nor
one with a value that is NaN or infinite (a float32 register with every exponent bit set) or an
energy below 0 (errors["out_of_range"]). Power and currents may be negative (power exported; a
meter that signs its currents by direction), so only the energy is held to 0 and up.
"""
from drivers import board
from drivers import meter_models
from drivers import modbus
from drivers import ticks

_SLOTS = {"volts_dv": 0, "amps_ma": 3, "power_w": 6, "energy_wh": 7}  # staging slot per value
VALUES = ("volts_dv", "amps_ma", "power_w", "energy_wh")  # the readings a model must give
_PER_PHASE = ("volts_dv", "amps_ma")
_KEYS = ("phases", "function", "encoding", "baudrate", "reads", "values", "scale")
ENCODINGS = {"float32": 2}  # encoding -> registers per value
S0_MODEL = "s0"  # the pulse-input meter (drivers/s0.py), not a register map
_DIV_BITS = 8  # binary places kept before a divisor is applied (see _scale_plan)
_SAT = modbus.SATURATED


class TickClock:
    """The Modbus master's clock: ticks_ms() is the now_ms of the latest Meter.poll, so the
    meter runs on the caller's time (virtual in tests and the simulator), with drivers/ticks.py's
    wrap arithmetic."""

    def __init__(self, clock=None):
        self.now = clock.ticks_ms() if clock is not None else 0

    def ticks_ms(self):
        return self.now

    ticks_diff = staticmethod(ticks.diff)
    ticks_add = staticmethod(ticks.add)


def model_spec(model):
    """The checked register map of a model. ValueError for an unknown model (naming it and the
    known ones) or for bad model data (naming the model and every bad entry)."""
    spec = meter_models.MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        known = sorted(list(meter_models.MODELS.keys()) + [S0_MODEL])
        raise ValueError("unknown meter model %r: known models are %s" % (model, ", ".join(known)))
    check_model(model, spec)
    return spec


def _is_int(v):
    return isinstance(v, int) and v is not True and v is not False


def _is_seq(v):
    return isinstance(v, (list, tuple))


def _register_error(v):
    if not _is_int(v) or not 0 <= v <= 0xFFFF:
        return "expected a register number 0..65535, got %r" % (v,)
    return None


def _scale_error(v):
    """None if v is a valid scale (int, or (multiplier, divisor)), else what is wrong."""
    if _is_int(v):
        mul = v
    elif _is_seq(v) and len(v) == 2 and _is_int(v[0]) and _is_int(v[1]) and v[1] >= 1:
        mul = v[0]
    else:
        return ("expected a positive int or a (multiplier, divisor) pair of positive ints, "
                "got %r" % (v,))
    if mul < 1:
        return "the multiplier must be at least 1, got %r" % (mul,)
    try:
        modbus.scale_parts(mul)
    except ValueError as e:
        return str(e)
    return None


def check_model(name, spec):
    """Check every entry of one model's data (see drivers/meter_models.py for the schema).

    Raises ValueError "meter model 'NAME': ENTRY: PROBLEM" ("; "-joined when several are wrong),
    e.g. "meter model 'dtsu666': values.amps_ma: expected 3 register numbers, got '0x200C'".
    """
    if not isinstance(spec, dict):
        raise ValueError("meter model %r: expected a dict of entries, got %s" % (
            name, board.type_name(spec)))
    errs = []
    for k in sorted([str(k) for k in spec]):
        if k not in _KEYS:
            errs.append("unknown key: %s" % k)
    for k in _KEYS:
        if k not in spec:
            errs.append("missing entry: %s" % k)
    phases = spec.get("phases")
    if "phases" in spec and (not _is_int(phases) or phases not in (1, 3)):
        errs.append("phases: expected 1 or 3, got %r" % (phases,))
        phases = None
    fn = spec.get("function")
    if "function" in spec and (not _is_int(fn) or fn not in (modbus.READ_HOLDING,
                                                             modbus.READ_INPUT)):
        errs.append("function: expected 3 (read holding registers) or 4 (read input registers), "
                    "got %r" % (fn,))
    enc = spec.get("encoding")
    width = 2
    if "encoding" in spec:
        if not isinstance(enc, str) or enc not in ENCODINGS:
            errs.append("encoding: unknown %r (known: %s)" % (
                enc, ", ".join(sorted(ENCODINGS.keys()))))
        else:
            width = ENCODINGS[enc]
    baud = spec.get("baudrate")
    if "baudrate" in spec and not (isinstance(baud, int) and not isinstance(baud, bool)
                                   and 300 <= baud <= 115200):
        errs.append("baudrate: expected a baud rate 300..115200, got %r" % (baud,))
    reads = spec.get("reads")
    good_reads = []
    reads_ok = False
    if "reads" in spec:
        if not _is_seq(reads) or not reads:
            errs.append("reads: expected a sequence of (first register, count), got %r" % (
                reads,))
        else:
            for i in range(len(reads)):
                r = reads[i]
                if not (_is_seq(r) and len(r) == 2 and _is_int(r[0]) and _is_int(r[1])):
                    errs.append("reads[%d]: expected (first register, count), got %r" % (i, r))
                elif not 0 <= r[0] <= 0xFFFF:
                    errs.append("reads[%d]: first register %r out of range 0..65535" % (i, r[0]))
                elif not 1 <= r[1] <= 125 or r[0] + r[1] > 0x10000:
                    errs.append("reads[%d]: count %r out of range 1..125 (and within 65535)" % (
                        i, r[1]))
                else:
                    good_reads.append(r)
            reads_ok = len(good_reads) == len(reads)
    values = spec.get("values")
    if "values" in spec:
        if not isinstance(values, dict):
            errs.append("values: expected a dict, got %r" % (values,))
        else:
            for k in sorted([str(k) for k in values]):
                if k not in VALUES:
                    errs.append("values: unknown key: %s" % k)
            for name_ in VALUES:
                path = "values." + name_
                if name_ not in values:
                    errs.append(path + ": missing")
                    continue
                v = values[name_]
                if name_ in _PER_PHASE:
                    if phases is None:
                        continue
                    if not _is_seq(v) or len(v) != phases:
                        errs.append("%s: expected %d register number%s, got %r" % (
                            path, phases, "s" if phases > 1 else "", v))
                        continue
                    regs = v
                    paths = ["%s[%d]" % (path, i) for i in range(len(v))]
                else:
                    regs = (v,)
                    paths = [path]
                for i in range(len(regs)):
                    e = _register_error(regs[i])
                    if e is not None:
                        errs.append("%s: %s" % (paths[i], e))
                        continue
                    if not reads_ok:
                        continue  # the reads are reported already
                    reg = regs[i]
                    found = False
                    for first, count in good_reads:
                        if first <= reg and reg + width <= first + count:
                            found = True
                    if not found:
                        errs.append("%s: register 0x%04X is in no read" % (paths[i], reg))
    scale = spec.get("scale")
    if "scale" in spec:
        if not isinstance(scale, dict):
            errs.append("scale: expected a dict, got %r" % (scale,))
        else:
            for k in sorted([str(k) for k in scale]):
                if k not in VALUES:
                    errs.append("scale: unknown key: %s" % k)
            for name_ in VALUES:
                if name_ not in scale:
                    errs.append("scale.%s: missing" % name_)
                    continue
                e = _scale_error(scale[name_])
                if e is not None:
                    errs.append("scale.%s: %s" % (name_, e))
    if errs:
        raise ValueError("meter model %r: %s" % (name, "; ".join(errs)))


def _scale_plan(scale):
    """(odd, shift, div, half) for a checked scale: value = round(f * (odd << shift)), then,
    when div > 1, divided by div rounding half away from zero (half = div // 2); see
    decode_scaled. With a divisor, div and shift include the _DIV_BITS extra binary places, so
    the first rounding costs at most 1/512 of a final unit."""
    if _is_int(scale):
        mul, div = scale, 1
    else:
        mul, div = scale[0], scale[1]
    odd, shift = modbus.scale_parts(mul)
    if div > 1:
        shift += _DIV_BITS
        div <<= _DIV_BITS
    return odd, shift, div, div >> 1


def decode_scaled(hi, lo, odd, shift, div, half):
    """A float32 (two big-endian words) times a scale planned by _scale_plan, as an int.

    Without a divisor: round(f * (odd << shift)). With one: the float scaled by 2**_DIV_BITS more,
    divided rounding half away from zero. A value too big for that headroom (|f * multiplier|
    of 2**22 or more) is decoded again without it (its first rounding is then to a whole
    register unit); from |f * multiplier| >= 2**30 on, or beyond SATURATED, it saturates
    (+-SATURATED). Small ints only, no allocation.
    """
    v = modbus.float32_scaled(hi, lo, odd, shift)
    if div <= 1:
        return v
    if v >= _SAT or v <= -_SAT:
        v = modbus.float32_scaled(hi, lo, odd, shift - _DIV_BITS)
        if v >= _SAT or v <= -_SAT:
            return v
        div >>= _DIV_BITS
        half = div >> 1
    if v >= 0:
        return (v + half) // div
    return -((half - v) // div)


def _plan(spec, model):
    """For each read block: a tuple of (slot, register offset in the reply, odd, shift, div,
    half). The spec must have passed check_model."""
    reads = spec["reads"]
    width = ENCODINGS[spec["encoding"]]
    plans = [[] for _ in reads]
    values = spec["values"]
    scales = spec["scale"]
    for name in VALUES:
        regs = values[name]
        if name not in _PER_PHASE:
            regs = (regs,)
        odd, shift, div, half = _scale_plan(scales[name])
        for phase in range(len(regs)):
            reg = regs[phase]
            for i in range(len(reads)):
                first, count = reads[i]
                if first <= reg and reg + width <= first + count:
                    plans[i].append((_SLOTS[name] + phase, reg - first, odd, shift, div, half))
                    break
    return tuple(tuple(p) for p in plans)


class Meter:
    measures_current = True

    def __init__(self, master, model, address=1, interval_ms=1000):
        spec = model_spec(model)
        self.model = model
        self.address = address
        self.master = master
        self._tick_clock = isinstance(master.clock, TickClock)
        self.interval_ms = interval_ms
        self.phases = spec["phases"]
        self._requests = tuple(
            modbus.Request(address, spec["function"], first, count)
            for first, count in spec["reads"])
        self._plans = _plan(spec, model)
        self._stage = [0] * 8  # volts L1..L3, amps L1..L3, power, energy
        self.energy_wh = 0
        self.power_w = 0
        self.amps_ma = [0, 0, 0]
        self.volts_dv = [0, 0, 0]
        self.valid = False
        self.updated_ms = None
        self.readings = 0
        self.failures = 0
        self.errors = master.errors  # per Modbus attempt, counted by the master
        self.errors["backwards"] = 0
        self.errors["out_of_range"] = 0
        self.last_error = None
        self._step = -1  # index of the read in progress, -1 between refreshes
        self._due = None

    def poll(self, now_ms):
        """Step the refresh; call every tick. Starts a refresh every interval_ms."""
        master = self.master
        clock = master.clock
        if self._tick_clock:
            clock.now = now_ms
        step = self._step
        if step < 0:
            if master.busy():  # another meter's request is on the shared bus: its turn
                return
            due = self._due
            if due is not None and clock.ticks_diff(now_ms, due) < 0:
                master.poll()  # keeps stray bytes drained and the bus silence measured
                return
            self._due = clock.ticks_add(now_ms, self.interval_ms)
            step = 0
            self._step = 0
            master.start(self._requests[0])
        code = master.poll()
        if code is None:
            return
        if code != modbus.OK:
            self._fail(master.describe(code))
            return
        stage = self._stage
        for slot, off, odd, shift, div, half in self._plans[step]:
            if not modbus.float32_finite(master.register(off)):
                self._out_of_range("register 0x%04X holds NaN or an infinity" % (
                    self._requests[step].register + off))
                return
            if div > 1:
                stage[slot] = decode_scaled(master.register(off), master.register(off + 1),
                                            odd, shift, div, half)
            else:
                stage[slot] = master.float32_scaled(off, odd, shift)
        step += 1
        if step < len(self._requests):
            self._step = step
            master.start(self._requests[step])
            return
        self._step = -1
        self._publish(now_ms)

    def refresh(self):
        """Start the next refresh at the next poll the bus allows, not at the interval's end
        (energy management pairs the charger's reading with the grid meter's)."""
        self._due = None

    def _publish(self, now_ms):
        stage = self._stage
        energy = stage[7]
        if energy < 0:  # an import register counts up from 0
            self._out_of_range("energy register reads %d Wh" % energy)
            return
        if self.readings and energy < self.energy_wh:
            self.errors["backwards"] += 1
            self._fail("energy went backwards: %d Wh after %d Wh, reading ignored" % (
                energy, self.energy_wh))
            return
        volts = self.volts_dv
        amps = self.amps_ma
        for i in range(3):
            volts[i] = stage[i]
            amps[i] = stage[3 + i]
        self.power_w = stage[6]
        self.energy_wh = energy
        self.valid = True
        self.failures = 0
        self.readings += 1
        self.updated_ms = now_ms

    def _out_of_range(self, what):
        self.errors["out_of_range"] += 1
        self._fail("address %d: %s: reading ignored" % (self.address, what))

    def _fail(self, message):
        self._step = -1
        self.valid = False
        self.failures += 1
        self.last_error = message


def build_on(meter, section):
    """A second Modbus meter on the bus of `meter` (its UART, master and baud rate), from a
    board profile section {"model", "address"[, "interval_ms"]}."""
    return Meter(meter.master, section.get("model"), section.get("address") or 1,
                 section.get("interval_ms", 1000))


def build(section, clock=None):
    """A Meter from a board profile section:
    {"model", "uart", "tx_pin", "rx_pin", "de_pin" (int or None), "address", "baudrate"}
    optional: "interval_ms" (1000), "timeout_ms" (300), "retries" (2).
    Model "s0": drivers.s0.S0Meter from {"model": "s0", "pin", "impulses_per_kwh" (1000),
    "active_high" (False)}; its pin interrupt reads the clock.

    The Modbus meter runs on the now_ms handed to poll(); `clock` (optional) gives the start
    time.
    """
    model = section.get("model")
    if model == S0_MODEL:
        from drivers import s0

        return s0.build(section, clock)
    spec = model_spec(model)
    import machine

    baudrate = section.get("baudrate") or spec["baudrate"]
    address = section.get("address") or 1
    uart = machine.UART(section["uart"], baudrate=baudrate, bits=8, parity=None, stop=1,
                        tx=section["tx_pin"], rx=section["rx_pin"], timeout=0)
    de = None
    if section.get("de_pin") is not None:
        de = machine.Pin(section["de_pin"], machine.Pin.OUT, value=0)
    master = modbus.Master(uart, TickClock(clock), baudrate, de=de,
                           timeout_ms=section.get("timeout_ms", 300),
                           retries=section.get("retries", 2))
    return Meter(master, model, address, section.get("interval_ms", 1000))
