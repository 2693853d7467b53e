"""Modbus energy meter (Eastron SDM630 / SDM72D / SDM120 / SDM230), described by data.

    meter = build(profile["meter"], clock)
    every tick: meter.poll(now_ms)

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
                bad_reply (one per failed Modbus attempt, retries included) and backwards
                (refreshes whose energy went below the last believed one)
    last_error  a sentence about the most recent failure (None until one happens; kept after
                recovery, `valid` tells the present)

Values are published together only when every read of a refresh succeeded; a refresh whose
energy is lower than the last believed one is not believed (counted in errors["backwards"]).
"""
from drivers import meter_models
from drivers import modbus

_SLOTS = {"volts_dv": 0, "amps_ma": 3, "power_w": 6, "energy_wh": 7}  # staging slot per value

_MASK = 0x3FFFFFFF  # MicroPython's ticks period - 1 (small-int arithmetic, no allocation)
_HALF = 0x20000000


class TickClock:
    """The Modbus master's clock: ticks_ms() is the now_ms of the latest Meter.poll, so the
    meter runs on the caller's time (virtual in tests and the simulator). The wrap arithmetic is
    MicroPython's ticks arithmetic (period 2**30, as every clock here), done with masks so it
    stays in small ints on the 32-bit ESP32 and allocates nothing."""

    def __init__(self, clock=None):
        self.now = clock.ticks_ms() if clock is not None else 0

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return ((a - b + _HALF) & _MASK) - _HALF

    def ticks_add(self, a, ms):
        return (a + ms) & _MASK


def model_spec(model):
    """The register map of a model, or ValueError naming the model and the known ones."""
    spec = meter_models.MODELS.get(model) if isinstance(model, str) else None
    if spec is None:
        known = sorted(meter_models.MODELS.keys())
        raise ValueError("unknown meter model %r: known models are %s" % (model, ", ".join(known)))
    return spec


def _plan(spec, model):
    """For each read block: a tuple of (slot, register offset in the reply, odd, shift)."""
    if spec.get("encoding", "float32") != "float32":
        raise ValueError("meter model %s: encoding %r not supported" % (model, spec["encoding"]))
    reads = spec["reads"]
    plans = [[] for _ in reads]
    values = spec["values"]
    scales = spec["scale"]
    for name in ("volts_dv", "amps_ma", "power_w", "energy_wh"):
        regs = values.get(name)
        if regs is None:
            raise ValueError("meter model %s: no register for %s" % (model, name))
        if isinstance(regs, int):
            regs = (regs,)
        odd, shift = modbus.scale_parts(scales[name])
        for phase in range(len(regs)):
            reg = regs[phase]
            found = False
            for i in range(len(reads)):
                first, count = reads[i]
                if first <= reg and reg + 2 <= first + count:
                    plans[i].append((_SLOTS[name] + phase, reg - first, odd, shift))
                    found = True
                    break
            if not found:
                raise ValueError("meter model %s: register 0x%04X (%s) is in no read" % (
                    model, reg, name))
    return tuple(tuple(p) for p in plans)


class Meter:
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
        for slot, off, odd, shift in self._plans[step]:
            stage[slot] = master.float32_scaled(off, odd, shift)
        step += 1
        if step < len(self._requests):
            self._step = step
            master.start(self._requests[step])
            return
        self._step = -1
        self._publish(now_ms)

    def _publish(self, now_ms):
        stage = self._stage
        energy = stage[7]
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

    def _fail(self, message):
        self._step = -1
        self.valid = False
        self.failures += 1
        self.last_error = message


def build(section, clock=None):
    """A Meter from a board profile section:
    {"model", "uart", "tx_pin", "rx_pin", "de_pin" (int or None), "address", "baudrate"}
    optional: "interval_ms" (1000), "timeout_ms" (300), "retries" (2).

    The meter runs on the now_ms handed to poll(); `clock` (optional) gives the start time.
    """
    model = section.get("model")
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
