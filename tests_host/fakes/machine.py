"""Host fake of MicroPython's `machine` module (ESP32 port), for CPython and the unix port.

Same names, arguments and defaults as `micropython-esp32-stubs` (tests_host/test_fakes.py checks
it). The simulated world drives the other side through these hooks, which firmware never calls:

    hw_reset(cause=PWRON_RESET, keep_world=True)
        Power cut / reboot: forget every pin mode, output, irq, PWM, ADC setting, Timer, UART
        setting, the watchdog and disable_irq state; reset_cause() then returns `cause`. RTC time
        and memory survive unless cause is PWRON_RESET or HARD_RESET. Outputs the board drove high
        fall to 0 (their hw_on_output callbacks are told). The world's wiring (input levels,
        hw_on_output callbacks, analog functions, attached devices) and virtual time are kept;
        keep_world=False also unplugs all of it and restarts virtual time at 0 (a fresh bench).
        Also resets the esp32 fake (uncommitted NVS writes are lost) and the network fake.
    hw_level(pin) -> 0/1
        Level on the pin: what an output drives, what the world set on an input (else 1 with
        PULL_UP, 0 otherwise), for a PWM pin its level at the current virtual microsecond.
    hw_set_input(pin, level)
        The world drives the pin (0/1, None = let go). Fires the Pin.irq handler at once,
        handler(pin_obj), on a matching edge (queued while irqs are disabled).
    hw_on_output(pin, fn)
        fn(level) is called whenever a board-side action (value/on/off/init/reset) changes the
        pin's level. PWM is not reported: poll hw_pwm. fn=None removes it.
    hw_set_analog(pin, fn)
        fn(t_us) -> millivolts at the ADC pin (int or float). Every ADC read samples at the current
        virtual microsecond, then advances it by ADC_READ_US, so repeated reads sweep through a
        1 kHz PWM period. Inside fn, hw_level(pwm_pin) is the PWM level at that instant.
    hw_pwm(pin) -> (freq, duty_u16) or None
        The running PWM as seen on the pin (inversion applied); 65535 = steady high, 0 = steady low.
    hw_now_us() -> int
        The virtual microsecond counter (ADC reads, hw_advance_ms, time_pulse_us move it).
    hw_advance_ms(ms)
        Move virtual time: Timer callbacks fire at their due times; the watchdog is checked.
    hw_wdt_expired() -> bool
        True once the started WDT went unfed longer than its timeout (the board would have reset).
    hw_set_reset_cause(cause)
        What reset_cause() returns.
    hw_attach_uart(uart_id, device)
        UART writes go to device.feed(bytes); reads come from device.take(n) -> bytes (at most n);
        optional device.pending() -> int answers UART.any(). None detaches.
    hw_uart_settings(uart_id) -> dict or None
        The UART's settings (baudrate, bits, parity, stop, tx, rx, timeout, timeout_char), None
        when not initialised, so a device can check it is spoken to at the right speed.
    hw_attach_spi(bus, device)
        device.transfer(bytes) -> bytes of the same length (full duplex). bus is the SPI id, or
        the sck pin number for SoftSPI. Chip select is an ordinary pin (see hw_on_output).
        Without a device, reads return 0xFF.
    hw_attach_i2c(bus, device)
        device.scan() -> list of addresses, device.write(addr, bytes), device.read(addr, n) ->
        bytes. bus is the I2C id, or the scl pin number for SoftI2C. An address not in scan()
        raises OSError ENODEV like a NACK on the board.

reset() and soft_reset() raise ResetRequested; its `cause` is what reset_cause() reports after
that reset (the ESP32 reports machine.reset() as SOFT_RESET). The simulator catches it and calls
hw_reset(exc.cause). Hard IRQ handlers (hard=True) run with the heap locked under MicroPython,
so an allocation in them raises MemoryError as on the board; world callbacks run unlocked.
"""

try:
    import micropython as _mp
    _heap_lock = getattr(_mp, "heap_lock", None)
    _heap_unlock = getattr(_mp, "heap_unlock", None)
except ImportError:
    _heap_lock = _heap_unlock = None

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5

ADC_READ_US = 23  # virtual microseconds one ADC conversion takes

_GPIOS = tuple(range(0, 6)) + tuple(range(12, 20)) + (21, 22, 23, 25, 26, 27) + tuple(range(32, 40))
_INPUT_ONLY = (34, 35, 36, 37, 38, 39)
_ADC_PINS = (0, 2, 4, 12, 13, 14, 15, 25, 26, 27) + tuple(range(32, 40))
_FULL_SCALE_MV = (1100, 1500, 2200, 3300)  # per ADC attenuation 0, 2.5, 6, 11 dB
_UID = b"\x24\x6f\x28\x12\x34\x56"
_EPOCH_DAYS = 10957  # 1970-01-01 .. 2000-01-01, MicroPython's epoch on the ESP32


# The virtual ESP32's CPU model (tests_host/cpumodel.py): on the chip these methods are C, so
# their Python bodies here are not the firmware's work. ADC.read_uv pauses the counters inside it
# (the call itself, made by the firmware's bytecode, still counts) and charges the conversion as
# ADC_READ_US of time that does not scale with the clock. Pin, PWM, UART and SPI pause the
# counters in their bodies the same way (inline, as a wrapper through a closure would allocate,
# also under the IRQ's heap lock); an IRQ handler they call is the firmware's and counts again.
try:
    import vesp as _vesp
except ImportError:
    _vesp = None


def _pause():
    return _vesp.enable(0) if _vesp is not None else 0


def _resume(was):
    if _vesp is not None:
        _vesp.enable(was)




class ResetRequested(Exception):
    """Raised by reset()/soft_reset(); the simulator catches it and restarts the firmware."""

    def __init__(self, cause):
        super().__init__(cause)
        self.cause = cause


class _Line:
    """Board-side state of one GPIO."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.mode = None
        self.pull = None
        self.out = 0
        self.irq = None
        self.pwm = None


# Board state: forgotten by hw_reset.
_lines = {}
_timers = {}
_uarts = {}
_pending = []
_irq_on = True
_hard_depth = 0
_wdt_timeout_us = None
_wdt_fed_us = 0
_wdt_fired = False
_reset_cause = PWRON_RESET
_cpu_hz = 160000000
_rtc_base_us = 0  # RTC microseconds since 2000-01-01 at virtual time _rtc_set_us
_rtc_set_us = 0
_rtc_mem = b""
# The world's wiring and virtual time: kept by hw_reset.
_now_us = 0
# The ADC reads' time since _now_us was last set, and _now_us % 1 s then: the hot path (68 reads a
# control tick) stays in small ints, which the 32-bit virtual ESP32 keeps below 2**30 (a larger
# _now_us, after 18 virtual minutes, is a heap-allocated big int: every addition would allocate).
_adc_us = 0
_now_mod = 0
_inputs = {}
_outputs = {}
_analog = {}
_pwm_analog = {}  # ADC pin -> (PWM pin, source with high_mv, low_mv): see hw_set_analog_pwm
_wiring = 0  # bumped when the ADC wiring above changes: an ADC re-reads it then (ADC._plan)
_uart_devs = {}
_spi_devs = {}
_i2c_devs = {}
_reset_hooks = []  # fn(keep_world) from the esp32 and network fakes


def _pin_id(p):
    return p._id if isinstance(p, Pin) else int(p)


def _line(pid):
    ln = _lines.get(pid)
    if ln is None:
        ln = _lines[pid] = _Line()
    return ln


# Every GPIO's state exists from the start, like the chip's registers: it is the simulated
# hardware's, not the firmware's heap (the simulator counts what is allocated after the code).
for _pid in _GPIOS:
    _line(_pid)


def _level(pid):
    ln = _lines.get(pid)
    if ln is not None:
        if ln.pwm is not None:
            return ln.pwm._level_now()
        if ln.mode == Pin.OUT or (ln.mode == Pin.OPEN_DRAIN and ln.out == 0):
            return ln.out
    world = _inputs.get(pid)
    if world is not None:
        return world
    return 1 if ln is not None and ln.pull == Pin.PULL_UP else 0


def _changed(pid, old, by_board):
    """After anything that may move a pin: tell the world, then fire the irq on an edge."""
    new = _level(pid)
    if new == old:
        return
    if by_board and pid in _outputs:
        _world_call(_outputs[pid], new)
    ln = _lines.get(pid)
    irq = ln.irq if ln is not None else None
    if irq is not None and irq._handler is not None:
        edge = Pin.IRQ_RISING if new else Pin.IRQ_FALLING
        if irq._trigger & edge:
            irq._flags = edge
            _run(irq._handler, irq._pin, irq._hard)


def _run(fn, arg, hard):
    """Run an IRQ/timer callback now, or queue it while irqs are disabled."""
    global _hard_depth
    if not _irq_on:
        _pending.append((fn, arg, hard))
    elif hard and _heap_lock is not None:
        _heap_lock()
        _hard_depth += 1
        was = _vesp.enable(1) if _vesp is not None else 0  # the firmware's handler counts
        try:
            fn(arg)
        finally:
            _resume(was)
            _hard_depth -= 1
            _heap_unlock()
    else:
        was = _vesp.enable(1) if _vesp is not None else 0
        try:
            fn(arg)
        finally:
            _resume(was)


def _world_call(fn, arg):
    """Call world code with the heap unlocked, even from inside a hard IRQ handler."""
    n = _hard_depth
    i = 0
    while i < n:
        _heap_unlock()
        i += 1
    try:
        fn(arg)
    finally:
        while i > 0:
            _heap_lock()
            i -= 1


# (days from 1970-01-01 <-> dates: the firmware's own calendar arithmetic, one home)
from firmware.calendar import civil as _civil  # noqa: E402
from firmware.calendar import days as _days  # noqa: E402


# ---------------------------------------------------------------- world hooks

def hw_reset(cause=PWRON_RESET, keep_world=True):
    global _irq_on, _hard_depth, _wdt_timeout_us, _wdt_fed_us, _wdt_fired, _reset_cause
    global _cpu_hz, _rtc_base_us, _rtc_set_us, _rtc_mem
    before = {}
    for pid in _lines:
        before[pid] = _level(pid)
    for pid in _lines:
        _lines[pid].reset()
    _timers.clear()
    _uarts.clear()
    _pending.clear()
    _irq_on = True
    _hard_depth = 0
    _wdt_timeout_us = None
    _wdt_fed_us = 0
    _wdt_fired = False
    _reset_cause = cause
    _cpu_hz = 160000000
    if cause in (PWRON_RESET, HARD_RESET) or not keep_world:
        _rtc_base_us = 0
        _rtc_set_us = _now()
        _rtc_mem = b""
    if keep_world:
        for pid in before:
            if pid in _outputs and _level(pid) != before[pid]:
                _world_call(_outputs[pid], _level(pid))
    else:
        for d in (_inputs, _outputs, _analog, _pwm_analog, _uart_devs, _spi_devs, _i2c_devs):
            d.clear()
        global _wiring
        _wiring += 1
        _set_now(0)
        _rtc_set_us = 0
    for fn in _reset_hooks:
        fn(keep_world)


def hw_level(pin):
    return _level(_pin_id(pin))


def hw_set_input(pin, level):
    pid = _pin_id(pin)
    old = _level(pid)
    if level is None:
        _inputs.pop(pid, None)
    else:
        _inputs[pid] = 1 if level else 0
    _changed(pid, old, False)


def hw_on_output(pin, fn):
    pid = _pin_id(pin)
    if fn is None:
        _outputs.pop(pid, None)
    else:
        _outputs[pid] = fn


def hw_set_analog(pin, fn):
    global _wiring
    _wiring += 1
    pid = _pin_id(pin)
    _pwm_analog.pop(pid, None)
    if fn is None:
        _analog.pop(pid, None)
    else:
        _analog[pid] = fn


def hw_set_analog_pwm(pin, pwm_pin, source):
    """The ADC at `pin` reads source.high_mv while the output `pwm_pin` is high and
    source.low_mv while it is low, at the virtual microsecond of each reading (the control
    pilot). The same as hw_set_analog(pin, fn) with an fn that looks at hw_level(pwm_pin), but
    without Python calls per reading: the pilot driver takes 68 readings every 10 ms tick."""
    global _wiring
    _wiring += 1
    pid = _pin_id(pin)
    _analog.pop(pid, None)
    if source is None:
        _pwm_analog.pop(pid, None)
    else:
        _pwm_analog[pid] = (_pin_id(pwm_pin), source)


def hw_pwm(pin):
    ln = _lines.get(_pin_id(pin))
    if ln is None or ln.pwm is None:
        return None
    return (ln.pwm._freq, ln.pwm._pin_duty())


def _set_now(t):
    global _now_us, _adc_us, _now_mod
    _now_us = t
    _adc_us = 0
    _now_mod = t % 1000000


def _now():
    return _now_us + _adc_us if _adc_us else _now_us


def hw_now_us():
    return _now()


def hw_state():
    """What of the board outlives a power cut besides the flash: its clocks (the RTC keeps time
    across soft and watchdog resets; hw_reset decides). For a run that restarts the interpreter."""
    return {"now_us": _now(), "rtc": [_rtc_base_us, _rtc_set_us, _rtc_mem.hex()]}


def hw_set_state(doc):
    global _rtc_base_us, _rtc_set_us, _rtc_mem
    _set_now(doc["now_us"])
    _rtc_base_us, _rtc_set_us, mem = doc["rtc"]
    _rtc_mem = bytes.fromhex(mem)


def hw_advance_ms(ms):
    end = _now() + int(ms * 1000)
    while True:
        due = None
        for t in _timers.values():
            if t._due is not None and t._due <= end and (due is None or t._due < due._due):
                due = t
        if due is None:
            break
        _set_now(max(_now(), due._due))
        due._due = due._due + due._period_us if due._mode == Timer.PERIODIC else None
        if due._callback is not None:
            _run(due._callback, due, due._hard)
    _set_now(end)
    _check_wdt()


def _check_wdt():
    global _wdt_fired
    if _wdt_timeout_us is not None and _now() - _wdt_fed_us > _wdt_timeout_us:
        _wdt_fired = True


def hw_wdt_expired():
    _check_wdt()
    return _wdt_fired


def hw_set_reset_cause(cause):
    global _reset_cause
    _reset_cause = cause


def _attach(table, key, device):
    if device is None:
        table.pop(key, None)
    else:
        table[key] = device


def hw_attach_uart(uart_id, device):
    _attach(_uart_devs, uart_id, device)


def hw_uart_settings(uart_id):
    s = _uarts.get(uart_id)
    return dict(s) if s is not None else None


def hw_attach_spi(bus, device):
    _attach(_spi_devs, bus, device)


def hw_attach_i2c(bus, device):
    _attach(_i2c_devs, bus, device)


# ---------------------------------------------------------------- module functions

def reset():
    raise ResetRequested(SOFT_RESET)


def soft_reset():
    raise ResetRequested(_reset_cause)


def reset_cause():
    return _reset_cause


def unique_id():
    return _UID


def freq(hz=None):
    global _cpu_hz
    if hz is None:
        return _cpu_hz
    if hz not in (20000000, 40000000, 80000000, 160000000, 240000000):
        raise ValueError("frequency must be 20MHz, 40MHz, 80Mhz, 160MHz or 240MHz")
    _cpu_hz = hz


def idle():
    pass


def disable_irq():
    global _irq_on
    state = 1 if _irq_on else 0
    _irq_on = False
    return state


def enable_irq(state):
    global _irq_on
    _irq_on = bool(state)
    while _irq_on and _pending:
        fn, arg, hard = _pending.pop(0)
        _run(fn, arg, hard)


def time_pulse_us(pin, pulse_level, timeout_us=1000000):
    """Levels are static between world events: the pulse never starts (-2) or never ends (-1)."""
    _set_now(_now() + timeout_us)
    return -1 if _level(_pin_id(pin)) == pulse_level else -2


# ---------------------------------------------------------------- Pin, Signal

class _PinIRQ:
    def __init__(self, pin, handler, trigger, hard):
        self._pin = pin
        self._handler = handler
        self._trigger = trigger
        self._hard = hard
        self._flags = 0

    def trigger(self):
        return self._trigger

    def flags(self):
        return self._flags


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_DOWN = 1
    PULL_UP = 2
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        id = _pin_id(id)
        if id not in _GPIOS:
            raise ValueError("invalid pin")
        self._id = id
        self.init(mode, pull, value=value, drive=drive, alt=alt)

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, alt=None):
        pid = self._id
        if mode in (Pin.OUT, Pin.OPEN_DRAIN) and pid in _INPUT_ONLY:
            raise ValueError("pin can only be input")
        old = _level(pid)
        ln = _line(pid)
        if value is not None:
            ln.out = 1 if value else 0
        if mode != -1:
            ln.mode = mode
            ln.pwm = None  # the pin goes back to plain GPIO
        if pull != -1:
            ln.pull = pull
        _changed(pid, old, True)

    def value(self, x=None):
        was = _pause()
        try:
            if x is None:
                return _level(self._id)
            old = _level(self._id)
            _line(self._id).out = 1 if x else 0
            _changed(self._id, old, True)
        finally:
            _resume(was)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def toggle(self):
        self.value(1 - _line(self._id).out)

    def mode(self, mode=None):
        if mode is None:
            return _line(self._id).mode
        self.init(mode)

    def pull(self, pull=None):
        if pull is None:
            return _line(self._id).pull
        self.init(-1, pull)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING, *, priority=1, wake=None,
            hard=False):
        """Any call (re)configures; handler=None disables. Returns the irq object."""
        ln = _line(self._id)
        ln.irq = _PinIRQ(self, handler, trigger, hard)
        return ln.irq

    def __repr__(self):
        return "Pin(%d)" % self._id


class Signal:
    def __init__(self, pin_obj, invert=False):
        self._pin = pin_obj if isinstance(pin_obj, Pin) else Pin(pin_obj)
        self._invert = 1 if invert else 0

    def value(self, x=None):
        if x is None:
            return self._pin.value() ^ self._invert
        self._pin.value((1 if x else 0) ^ self._invert)

    def __call__(self, x=None):
        return self.value(x)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


# ---------------------------------------------------------------- PWM, ADC

class PWM:
    """Defaults when never set: 5000 Hz, duty_u16 32768. deinit leaves the pin driven low."""

    def __init__(self, dest, *, freq=None, duty_u16=None, duty_ns=None, invert=None):
        self._pin = _pin_id(dest)
        if self._pin not in _GPIOS:
            raise ValueError("invalid pin")
        if self._pin in _INPUT_ONLY:
            raise ValueError("pin can only be input")
        self._freq = 5000
        self._duty = 32768
        self._invert = False
        self._tune()
        self.init(freq=freq, duty_u16=duty_u16, duty_ns=duty_ns, invert=invert)

    def init(self, *, freq=None, duty_u16=None, duty_ns=None, invert=None):
        if freq is not None:
            self.freq(freq)
        if invert is not None:
            self._invert = bool(invert)
            self._tune()
        if duty_u16 is not None:
            self.duty_u16(duty_u16)
        if duty_ns is not None:
            self.duty_ns(duty_ns)
        ln = _line(self._pin)
        ln.mode = Pin.OUT
        ln.out = 0
        ln.pwm = self

    def deinit(self):
        ln = _lines.get(self._pin)
        if ln is not None and ln.pwm is self:
            ln.pwm = None

    def freq(self, value=None):
        if value is None:
            return self._freq
        if not 0 < value <= 40000000:
            raise ValueError("frequency must be from 1Hz to 40MHz")
        self._freq = int(value)

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        was = _pause()
        try:
            self._duty = min(max(int(value), 0), 65535)
            self._tune()
        finally:
            _resume(was)

    def duty_ns(self, value=None):
        period_ns = 1000000000 // self._freq
        if value is None:
            return self._duty * period_ns // 65535
        self.duty_u16(value * 65535 // period_ns)

    def duty(self, value=None):
        """Deprecated 10-bit duty (0..1023) of the ESP32 port."""
        if value is None:
            return self._duty * 1023 // 65535
        self.duty_u16(value * 65535 // 1023)

    def _pin_duty(self):
        return 65535 - self._duty if self._invert else self._duty

    def _level_now(self):
        return 1 if self._high(_now_mod + _adc_us) else 0

    def _tune(self):
        # The phase threshold of _high, ceil(duty * 1e6 / 65535), worked out once per duty.
        self._thr = (self._pin_duty() * 1000000 + 65534) // 65535

    def _high(self, us):
        """High at time `us` (mod 1 s): during the first duty/65535 of each period (65535 is
        steady high, 0 steady low). Small ints only (see _adc_us)."""
        return (us % 1000000) * self._freq % 1000000 < self._thr


class ADC:
    """Ideal converter: linear up to the attenuation's full scale (3300 mV at 11 dB), clipped.
    A pin the world never connected reads 0 mV."""

    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12

    def __init__(self, id, *, sample_ns=None, atten=None):
        self._pin = _pin_id(id)
        if self._pin not in _ADC_PINS:
            raise ValueError("invalid Pin for ADC")
        self._atten = ADC.ATTN_0DB
        self._cap = _FULL_SCALE_MV[0] * 1000  # microvolts at full scale
        self._bits = 12
        self.init(sample_ns=sample_ns, atten=atten)

    def init(self, *, sample_ns=None, atten=None):
        if atten is not None:
            self.atten(atten)

    def deinit(self):
        pass

    def atten(self, atten):
        if atten not in (0, 1, 2, 3):
            raise ValueError("invalid attenuation")
        self._atten = atten
        self._cap = _FULL_SCALE_MV[atten] * 1000

    def width(self, bits):
        if bits not in (9, 10, 11, 12):
            raise ValueError("invalid bit-width")
        self._bits = bits

    _wired = -1  # the _wiring this ADC's plan was made for

    def _plan(self):
        """What this pin reads: the PWM line and source (hw_set_analog_pwm), else a function
        (hw_set_analog) or nothing; worked out again only after the wiring changed."""
        self._wired = _wiring
        p = _pwm_analog.get(self._pin)
        self._pline = _lines[p[0]] if p is not None else None
        self._src = p[1] if p is not None else None
        self._pwm_pin = p[0] if p is not None else None
        self._fn = _analog.get(self._pin)

    def read_uv(self):
        global _adc_us
        # The chip's CPU model (_vesp) counts the conversion's time, not this fake's Python; the
        # body is written out, not a decorator or a helper: 68 reads a control tick come here.
        was = _vesp.enable(0) if _vesp is not None else 0
        if self._wired != _wiring:
            self._plan()
        ln = self._pline
        if ln is not None:
            pwm = ln.pwm
            if pwm is not None:  # PWM._high, inline
                high = ((_now_mod + _adc_us) % 1000000) * pwm._freq % 1000000 < pwm._thr
            else:
                high = _level(self._pwm_pin)
            mv = self._src.high_mv if high else self._src.low_mv
        else:
            fn = self._fn
            mv = fn(_now()) if fn is not None else 0
        _adc_us += ADC_READ_US
        uv = int(mv * 1000)
        cap = self._cap
        if _vesp is not None:
            _vesp.enable(was)
            _vesp.wait_us(ADC_READ_US)  # the conversion: the chip's time, whatever its clock
        return cap if uv > cap else (uv if uv > 0 else 0)

    def read_u16(self):
        return self.read_uv() * 65535 // (_FULL_SCALE_MV[self._atten] * 1000)

    def read(self):
        return self.read_uv() * ((1 << self._bits) - 1) // (_FULL_SCALE_MV[self._atten] * 1000)


# ---------------------------------------------------------------- Timer, WDT, RTC

class Timer:
    ONE_SHOT = 0
    PERIODIC = 1

    def __init__(self, id, *, mode=PERIODIC, period=None, callback=None, hard=None, freq=None):
        if id not in (0, 1, 2, 3):
            raise ValueError("invalid Timer number")
        self._id = id
        self._due = None
        if period is not None or freq is not None:
            self.init(mode=mode, period=period, callback=callback, hard=hard, freq=freq)

    def init(self, *, mode=PERIODIC, period=None, callback=None, hard=None, freq=None):
        """period in ms, or freq in Hz."""
        if freq is not None:
            period_us = 1000000 // freq
        elif period is not None:
            period_us = int(period * 1000)
        else:
            raise ValueError("period or freq required")
        self._mode = mode
        self._period_us = max(period_us, 1)
        self._callback = callback
        self._hard = bool(hard)
        self._due = _now() + self._period_us
        _timers[self._id] = self

    def deinit(self):
        self._due = None
        if _timers.get(self._id) is self:
            del _timers[self._id]


class WDT:
    """Starting it again only changes the timeout; it cannot be stopped."""

    def __init__(self, *, id=0, timeout=5000):
        global _wdt_timeout_us, _wdt_fed_us
        if timeout <= 0:
            raise ValueError("WDT timeout too short")
        if _wdt_timeout_us is None:  # starting now: the countdown begins now
            _wdt_fed_us = _now()
        _wdt_timeout_us = timeout * 1000
        self.feed()

    def feed(self):
        global _wdt_fed_us
        _check_wdt()
        _wdt_fed_us = _now()


class RTC:
    """Runs on virtual time; datetime is (year, month, day, weekday, hours, minutes, seconds,
    microseconds), weekday 0 = Monday. Starts at 2000-01-01 00:00 after a power cut."""

    def __init__(self, id=0, *, datetime=None):
        if datetime is not None:
            self.datetime(datetime)

    def init(self, datetime=None):
        self.datetime(datetime or (2000, 1, 1, 0, 0, 0, 0, 0))

    def datetime(self, datetimetuple=None):
        global _rtc_base_us, _rtc_set_us
        if datetimetuple is None:
            us = _rtc_base_us + _now() - _rtc_set_us
            s, sub = divmod(us, 1000000)
            days, s = divmod(s, 86400)
            y, m, d = _civil(days + _EPOCH_DAYS)
            return (y, m, d, (days + 5) % 7, s // 3600, s // 60 % 60, s % 60, sub)
        t = tuple(datetimetuple) + (0, 0, 0, 0, 0)
        days = _days(t[0], t[1], t[2]) - _EPOCH_DAYS
        _rtc_base_us = ((days * 86400 + t[4] * 3600 + t[5] * 60 + t[6]) * 1000000) + t[7]
        _rtc_set_us = _now()

    def memory(self, data=None):
        global _rtc_mem
        if data is None:
            return _rtc_mem
        if len(data) > 2048:
            raise ValueError("buffer too long")
        _rtc_mem = bytes(data)


# ---------------------------------------------------------------- UART, SPI, I2C

class UART:
    """read() with no count reads up to rxbuf bytes (default 256); None when nothing came."""

    INV_RX = 4
    INV_CTS = 8
    INV_TX = 32
    INV_RTS = 64
    RTS = 1
    CTS = 2

    def __init__(self, id, baudrate=9600, bits=8, parity=None, stop=1, *, tx=None, rx=None,
                 txbuf=None, rxbuf=None, timeout=None, timeout_char=None, invert=None, flow=None):
        if id not in (0, 1, 2):
            raise ValueError("UART(%s) does not exist" % id)
        self._id = id
        self.init(baudrate, bits, parity, stop, tx=tx, rx=rx, txbuf=txbuf, rxbuf=rxbuf,
                  timeout=timeout, timeout_char=timeout_char, invert=invert, flow=flow)

    def init(self, baudrate=9600, bits=8, parity=None, stop=1, *, tx=None, rx=None, txbuf=None,
             rxbuf=None, timeout=None, timeout_char=None, invert=None, flow=None):
        if bits not in (5, 6, 7, 8) or parity not in (None, 0, 1) or stop not in (1, 2):
            raise ValueError("invalid bits, parity or stop")
        self._rxbuf = rxbuf or 256
        _uarts[self._id] = {"baudrate": baudrate, "bits": bits, "parity": parity, "stop": stop,
                            "tx": tx, "rx": rx, "timeout": timeout, "timeout_char": timeout_char}

    def deinit(self):
        _uarts.pop(self._id, None)

    def write(self, buf):
        was = _pause()
        try:
            data = buf.encode() if isinstance(buf, str) else bytes(buf)
            dev = _uart_devs.get(self._id)
            if dev is not None:
                dev.feed(data)
            return len(data)
        finally:
            _resume(was)

    def any(self):
        was = _pause()
        try:
            dev = _uart_devs.get(self._id)
            return dev.pending() if dev is not None and hasattr(dev, "pending") else 0
        finally:
            _resume(was)

    def read(self, nbytes=None):
        was = _pause()
        try:
            dev = _uart_devs.get(self._id)
            data = dev.take(self._rxbuf if nbytes is None else nbytes) if dev is not None else b""
            return bytes(data) if data else None
        finally:
            _resume(was)

    def readinto(self, buf, nbytes=None):
        data = self.read(len(buf) if nbytes is None else nbytes)
        if data is None:
            return None
        buf[0:len(data)] = data
        return len(data)

    def readline(self):
        line = b""
        while not line.endswith(b"\n"):
            c = self.read(1)
            if c is None:
                break
            line += c
        return line or None

    def flush(self):
        pass

    def txdone(self):
        return True


class SPI:
    MSB = 0
    LSB = 1

    def __init__(self, id, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=MSB,
                 sck=None, mosi=None, miso=None):
        if id not in (1, 2):
            raise ValueError("SPI(%s) doesn't exist" % id)
        self._bus = id
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit,
                  sck=sck, mosi=mosi, miso=miso)

    def init(self, baudrate=1000000, *, polarity=0, phase=0, bits=8, firstbit=MSB, sck=None,
             mosi=None, miso=None):
        self._baudrate = baudrate

    def deinit(self):
        pass

    def _xfer(self, data):
        was = _pause()
        try:
            dev = _spi_devs.get(self._bus)
            if dev is None:
                return b"\xff" * len(data)
            got = bytes(dev.transfer(bytes(data)))
            if len(got) != len(data):
                raise ValueError("SPI device returned %d bytes for %d" % (len(got), len(data)))
            return got
        finally:
            _resume(was)

    def read(self, nbytes, write=0):
        return self._xfer(bytes([write]) * nbytes)

    def readinto(self, buf, write=0):
        buf[0:len(buf)] = self._xfer(bytes([write]) * len(buf))

    def write(self, buf):
        self._xfer(buf)

    def write_readinto(self, write_buf, read_buf):
        read_buf[0:len(read_buf)] = self._xfer(write_buf)


class SoftSPI(SPI):
    """Routed to the device attached with hw_attach_spi(sck pin number, device)."""

    def __init__(self, baudrate=500000, *, polarity=0, phase=0, bits=8, firstbit=SPI.MSB,
                 sck=None, mosi=None, miso=None):
        self._bus = _pin_id(sck) if sck is not None else None
        self.init(baudrate, polarity=polarity, phase=phase, bits=bits, firstbit=firstbit,
                  sck=sck, mosi=mosi, miso=miso)


class I2C:
    def __init__(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
        if id not in (0, 1):
            raise ValueError("I2C(%s) doesn't exist" % id)
        self._bus = id
        self.init(scl=scl, sda=sda, freq=freq)

    def init(self, *, scl=None, sda=None, freq=400000):
        self._freq = freq

    def deinit(self):
        pass

    def _dev(self, addr):
        dev = _i2c_devs.get(self._bus)
        if dev is None or addr not in dev.scan():
            raise OSError(19, "ENODEV")
        return dev

    def scan(self):
        dev = _i2c_devs.get(self._bus)
        return sorted(dev.scan()) if dev is not None else []

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._dev(addr).read(addr, nbytes))

    def readfrom_into(self, addr, buf, stop=True):
        buf[0:len(buf)] = self.readfrom(addr, len(buf))

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).write(addr, bytes(buf))
        return len(buf)

    def readfrom_mem(self, addr, memaddr, nbytes, *, addrsize=8):
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big"), False)
        return self.readfrom(addr, nbytes)

    def readfrom_mem_into(self, addr, memaddr, buf, *, addrsize=8):
        buf[0:len(buf)] = self.readfrom_mem(addr, memaddr, len(buf), addrsize=addrsize)

    def writeto_mem(self, addr, memaddr, buf, *, addrsize=8):
        self.writeto(addr, memaddr.to_bytes(addrsize // 8, "big") + bytes(buf))


class SoftI2C(I2C):
    """Routed to the device attached with hw_attach_i2c(scl pin number, device)."""

    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        self._bus = _pin_id(scl)
        self.init(scl=scl, sda=sda, freq=freq)
