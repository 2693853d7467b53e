"""Tests of the board fakes (tests_host/fakes): behaviour, conformance to micropython-esp32-stubs,
and that they run under the unix MicroPython port too."""
import ast
import glob
import inspect
import os
import shutil
import subprocess
import sysconfig

import pytest

import esp32
import machine
import network

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAKES = os.path.join(HERE, "fakes")


@pytest.fixture(autouse=True)
def fresh_board():
    machine.hw_reset(keep_world=False)
    esp32.hw_set_flash_dir(None)
    yield
    machine.hw_reset(keep_world=False)
    esp32.hw_set_flash_dir(None)


# ------------------------------------------------------------------ Pin

def test_irq_fires_on_matching_edges_only():
    seen = []
    pin = machine.Pin(27, machine.Pin.IN)
    irq = pin.irq(handler=lambda p: seen.append((p, p.value())), trigger=machine.Pin.IRQ_RISING)
    machine.hw_set_input(27, 1)
    machine.hw_set_input(27, 1)  # no edge
    machine.hw_set_input(27, 0)  # falling: not asked for
    assert seen == [(pin, 1)]
    assert irq.trigger() == machine.Pin.IRQ_RISING

    seen.clear()
    pin.irq(lambda p: seen.append(p.value()))  # default trigger: both edges
    machine.hw_set_input(27, 1)
    machine.hw_set_input(27, 0)
    assert seen == [1, 0]
    assert irq is not pin.irq(None)  # handler None disables
    machine.hw_set_input(27, 1)
    assert seen == [1, 0]


def test_pull_up_floating_input_and_release():
    pin = machine.Pin(33, machine.Pin.IN, machine.Pin.PULL_UP)
    assert pin.value() == 1
    falls = []
    pin.irq(lambda p: falls.append(1), machine.Pin.IRQ_FALLING)
    machine.hw_set_input(33, 0)
    assert pin() == 0 and falls == [1]
    machine.hw_set_input(33, None)  # world lets go: the pull-up wins
    assert pin() == 1


def test_output_levels_and_world_callback():
    calls = []
    machine.hw_on_output(26, calls.append)
    relay = machine.Pin(26, machine.Pin.OUT, value=0)
    relay.on()
    relay.on()  # no change, no call
    relay(0)
    relay.value(True)
    relay.toggle()
    assert calls == [1, 0, 1, 0]
    assert machine.hw_level(26) == 0 and relay.value() == 0


def test_open_drain_and_input_only_pins():
    od = machine.Pin(21, machine.Pin.OPEN_DRAIN, value=1)
    assert od.value() == 0  # released, nothing pulls it up
    machine.hw_set_input(21, 1)
    assert od.value() == 1
    od.off()
    assert od.value() == 0
    with pytest.raises(ValueError):
        machine.Pin(36, machine.Pin.OUT)
    with pytest.raises(ValueError):
        machine.Pin(6)  # flash pin


def test_disable_irq_defers_handlers():
    seen = []
    machine.Pin(27, machine.Pin.IN).irq(lambda p: seen.append(p.value()))
    state = machine.disable_irq()
    machine.hw_set_input(27, 1)
    assert seen == []
    machine.enable_irq(state)
    assert seen == [1]


def test_signal_inverts():
    led = machine.Signal(machine.Pin(2, machine.Pin.OUT), invert=True)
    led.on()
    assert machine.hw_level(2) == 0 and led.value() == 1
    led.off()
    assert machine.hw_level(2) == 1


# ------------------------------------------------------------------ PWM, ADC

def test_pwm_full_and_zero_duty_are_steady():
    pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535)
    assert machine.hw_pwm(25) == (1000, 65535)
    levels = set()
    for _ in range(100):
        levels.add(machine.hw_level(25))
        machine.hw_advance_ms(0.037)
    assert levels == {1}
    pwm.duty_u16(0)
    assert all(machine.hw_level(25) == 0 for _ in range(50) if machine.hw_advance_ms(0.011) is None)
    pwm.init(invert=True)
    assert machine.hw_pwm(25) == (1000, 65535)  # inverted on the pin
    assert pwm.duty_u16() == 0


def test_pwm_settings_and_deinit():
    pwm = machine.PWM(25, freq=1000, duty_u16=32768)
    assert pwm.freq() == 1000 and pwm.duty_ns() == 500007
    pwm.duty_ns(250000)
    assert machine.hw_pwm(25)[1] == 16383
    pwm.duty(1023)
    assert pwm.duty_u16() == 65535
    pwm.deinit()
    assert machine.hw_pwm(25) is None and machine.hw_level(25) == 0
    pwm2 = machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535)
    machine.Pin(25, machine.Pin.OUT)  # back to plain GPIO: PWM detached
    assert machine.hw_pwm(25) is None
    with pytest.raises(ValueError):
        pwm2.freq(0)
    with pytest.raises(ValueError):
        machine.PWM(machine.Pin(34))


def test_adc_reads_sweep_through_a_pwm_period():
    pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535 // 4)
    machine.hw_set_analog(36, lambda t_us: 2980 if machine.hw_level(25) else 280)
    adc = machine.ADC(machine.Pin(36), atten=machine.ADC.ATTN_11DB)
    t0 = machine.hw_now_us()
    mv = [adc.read_uv() // 1000 for _ in range(87)]  # 87 * 23 us = 2.001 periods
    assert machine.hw_now_us() - t0 == 87 * machine.ADC_READ_US
    assert set(mv) == {280, 2980}
    assert 20 <= mv.count(2980) <= 24  # a quarter of the samples on the high plateau
    pwm.duty_u16(65535)
    assert {adc.read_uv() for _ in range(64)} == {2980000}


def test_adc_scaling_clipping_and_function_of_time():
    machine.hw_set_analog(39, lambda t_us: t_us // 1000)  # 1 mV per virtual ms
    adc = machine.ADC(39, atten=machine.ADC.ATTN_11DB)
    assert adc.read_u16() == 0
    machine.hw_advance_ms(1650)
    assert adc.read_uv() == 1650000
    assert abs(adc.read_u16() - 32767) <= 1
    assert adc.read() == 2047
    adc.width(machine.ADC.WIDTH_10BIT)
    assert adc.read() == 511
    machine.hw_advance_ms(5000)
    assert adc.read_u16() == 65535 and adc.read_uv() == 3300000  # clipped at full scale
    adc.atten(machine.ADC.ATTN_0DB)
    assert adc.read_uv() == 1100000
    machine.hw_set_analog(39, lambda t_us: -50)
    assert adc.read_u16() == 0
    assert machine.ADC(machine.Pin(34)).read_uv() == 0  # never connected: 0 mV
    with pytest.raises(ValueError):
        machine.ADC(machine.Pin(5))


# ------------------------------------------------------------------ Timer, WDT, RTC, reset

def test_timer_callbacks_on_virtual_time():
    ticks, once = [], []
    t = machine.Timer(0, mode=machine.Timer.PERIODIC, period=10, callback=ticks.append)
    machine.Timer(1).init(mode=machine.Timer.ONE_SHOT, period=25,
                          callback=lambda tm: once.append(machine.hw_now_us()))
    machine.hw_advance_ms(55)
    assert ticks == [t] * 5 and once == [25000]
    t.deinit()
    machine.hw_advance_ms(100)
    assert len(ticks) == 5 and len(once) == 1


def test_watchdog_expiry():
    assert not machine.hw_wdt_expired()  # not started
    wdt = machine.WDT(timeout=2000)
    for _ in range(10):
        machine.hw_advance_ms(1500)
        wdt.feed()
    assert not machine.hw_wdt_expired()
    machine.hw_advance_ms(2001)
    assert machine.hw_wdt_expired()
    machine.hw_reset(machine.WDT_RESET)
    assert not machine.hw_wdt_expired() and machine.reset_cause() == machine.WDT_RESET


def test_rtc_runs_on_virtual_time():
    rtc = machine.RTC()
    assert rtc.datetime()[:3] == (2000, 1, 1)
    rtc.datetime((2024, 2, 28, 0, 23, 59, 59, 0))
    machine.hw_advance_ms(24 * 3600 * 1000 + 1500)
    assert rtc.datetime() == (2024, 3, 1, 4, 0, 0, 0, 500000)  # leap day crossed, a Friday
    rtc.memory(b"boot=3")
    machine.hw_reset(machine.SOFT_RESET)
    assert rtc.memory() == b"boot=3" and rtc.datetime()[0] == 2024
    machine.hw_reset()  # power cut
    assert rtc.memory() == b"" and rtc.datetime()[:3] == (2000, 1, 1)


def test_reset_raises_and_hw_reset_forgets_the_board():
    with pytest.raises(machine.ResetRequested) as exc:
        machine.reset()
    assert exc.value.cause == machine.SOFT_RESET
    with pytest.raises(machine.ResetRequested):
        machine.soft_reset()
    assert machine.reset_cause() == machine.PWRON_RESET
    machine.hw_set_reset_cause(machine.DEEPSLEEP_RESET)
    assert machine.reset_cause() == machine.DEEPSLEEP_RESET

    told = []
    machine.hw_on_output(26, told.append)
    machine.Pin(26, machine.Pin.OUT, value=1)
    machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535)
    machine.hw_set_input(27, 1)
    machine.hw_set_analog(36, lambda t: 1234)
    machine.hw_reset()
    assert told == [1, 0]  # the relay output fell when the board lost power
    assert machine.hw_pwm(25) is None
    assert machine.Pin(27).value() == 1  # the world still drives its inputs
    assert machine.ADC(36, atten=machine.ADC.ATTN_11DB).read_uv() == 1234000
    machine.hw_reset(keep_world=False)
    assert machine.Pin(27).value() == 0 and machine.hw_now_us() == 0


def test_misc_module_functions():
    assert len(machine.unique_id()) == 6
    assert machine.freq() == 160000000
    machine.freq(240000000)
    assert machine.freq() == 240000000
    with pytest.raises(ValueError):
        machine.freq(123)
    machine.idle()
    assert machine.time_pulse_us(machine.Pin(27, machine.Pin.IN), 1, 1000) == -2


# ------------------------------------------------------------------ UART, SPI, I2C

class Meter:
    """A tiny UART device: answers each request with its bytes reversed, at 9600 baud only."""

    def __init__(self, uart_id):
        self.uart_id = uart_id
        self.rx = b""
        self.out = b""

    def feed(self, data):
        self.rx += data
        if machine.hw_uart_settings(self.uart_id)["baudrate"] == 9600:
            self.out += data[::-1] + b"\n"

    def take(self, n):
        data, self.out = self.out[:n], self.out[n:]
        return data

    def pending(self):
        return len(self.out)


def test_uart_routes_to_the_attached_device():
    meter = Meter(2)
    machine.hw_attach_uart(2, meter)
    uart = machine.UART(2, baudrate=9600, tx=17, rx=16, timeout=100)
    assert uart.read() is None and uart.any() == 0
    assert uart.write(b"\x01\x04ab") == 4
    assert meter.rx == b"\x01\x04ab" and uart.any() == 5
    assert uart.read(2) == b"ba"
    buf = bytearray(8)
    assert uart.readinto(buf, 1) == 1 and buf[0] == 0x04
    assert uart.readline() == b"\x01\n"
    uart.write("hi")
    assert uart.readline() == b"ih\n" and uart.readline() is None
    assert uart.txdone() and uart.flush() is None
    uart.init(baudrate=2400, parity=0)
    assert machine.hw_uart_settings(2)["baudrate"] == 2400
    assert machine.hw_uart_settings(2)["parity"] == 0
    uart.write(b"xx")
    assert uart.read() is None  # the meter ignores the wrong speed
    uart.deinit()
    assert machine.hw_uart_settings(2) is None
    machine.UART(1).write(b"lost")  # nothing attached: bytes vanish
    assert machine.UART(1).read(4) is None


def test_spi_and_i2c_route_to_devices():
    class Echo:
        def transfer(self, data):
            return bytes(b ^ 0xFF for b in data)

    class Eeprom:
        def __init__(self):
            self.mem = bytearray(16)
            self.ptr = 0

        def scan(self):
            return [0x50]

        def write(self, addr, data):
            self.ptr = data[0]
            for i, b in enumerate(data[1:]):
                self.mem[self.ptr + i] = b

        def read(self, addr, n):
            return bytes(self.mem[self.ptr:self.ptr + n])

    machine.hw_attach_spi(2, Echo())
    spi = machine.SPI(2, baudrate=1000000, sck=18, mosi=23, miso=19)
    assert spi.read(2, 0x0F) == b"\xf0\xf0"
    rbuf = bytearray(3)
    spi.write_readinto(b"\x00\x01\x02", rbuf)
    assert rbuf == b"\xff\xfe\xfd"
    spi.readinto(rbuf)
    assert rbuf == b"\xff\xff\xff"
    spi.write(b"\x12")
    assert machine.SoftSPI(sck=machine.Pin(14), mosi=13, miso=12).read(1) == b"\xff"  # no device

    machine.hw_attach_i2c(0, Eeprom())
    i2c = machine.I2C(0, scl=22, sda=21, freq=100000)
    assert i2c.scan() == [0x50]
    i2c.writeto_mem(0x50, 4, b"abc")
    assert i2c.readfrom_mem(0x50, 4, 3) == b"abc"
    buf = bytearray(2)
    i2c.readfrom_mem_into(0x50, 5, buf)
    assert buf == b"bc"
    assert i2c.writeto(0x50, b"\x06") == 1 and i2c.readfrom(0x50, 1) == b"c"
    i2c.readfrom_into(0x50, buf)
    assert buf == b"c\x00"
    with pytest.raises(OSError) as exc:
        i2c.readfrom(0x51, 1)
    assert exc.value.errno == 19  # ENODEV, as a NACK on the board
    machine.hw_attach_i2c(15, Eeprom())
    assert machine.SoftI2C(scl=machine.Pin(15), sda=machine.Pin(4)).scan() == [0x50]


# ------------------------------------------------------------------ esp32.NVS

def test_nvs_values_survive_reset_only_once_committed():
    nvs = esp32.NVS("charger")
    nvs.set_i32("sessions", 7)
    nvs.set_blob("last", b"\x01\x02\x03")
    nvs.commit()
    nvs.set_i32("sessions", 8)
    nvs.set_i32("pending", 1)
    assert esp32.NVS("charger").get_i32("sessions") == 8  # visible before commit
    machine.hw_reset()
    nvs = esp32.NVS("charger")
    assert nvs.get_i32("sessions") == 7
    with pytest.raises(OSError) as exc:
        nvs.get_i32("pending")
    assert exc.value.args == (-4354, "ESP_ERR_NVS_NOT_FOUND")
    buf = bytearray(8)
    assert nvs.get_blob("last", buf) == 3 and buf[:3] == b"\x01\x02\x03"
    with pytest.raises(OSError):
        nvs.get_blob("last", bytearray(2))  # buffer too small
    with pytest.raises(OSError):
        nvs.get_i32("last")  # wrong type
    nvs.erase_key("last")
    machine.hw_reset()
    assert esp32.NVS("charger").get_blob("last", buf) == 3  # the erase was not committed
    with pytest.raises(OSError):
        esp32.NVS("other").erase_key("last")  # namespaces are separate
    with pytest.raises(OverflowError):
        nvs.set_i32("big", 1 << 31)
    with pytest.raises(OSError):
        nvs.set_i32("a_key_longer_than_15", 1)


def test_nvs_flash_dir_persists_across_process_restart(tmp_path):
    flash = str(tmp_path / "flash")
    esp32.hw_set_flash_dir(flash)
    nvs = esp32.NVS("ocpp")
    nvs.set_i32("txid", -1)
    nvs.set_blob("queue", b"\x00\xffabc")
    nvs.commit()
    nvs.set_i32("uncommitted", 1)
    assert os.path.exists(os.path.join(flash, "nvs-ocpp.json"))
    esp32.hw_set_flash_dir(flash)  # like a new process mounting the same flash
    nvs = esp32.NVS("ocpp")
    buf = bytearray(5)
    assert nvs.get_i32("txid") == -1 and nvs.get_blob("queue", buf) == 5 and buf == b"\x00\xffabc"
    with pytest.raises(OSError):
        nvs.get_i32("uncommitted")
    esp32.hw_set_flash_dir(None)
    with pytest.raises(OSError):
        esp32.NVS("ocpp").get_i32("txid")  # blank flash


# ------------------------------------------------------------------ network.WLAN

def test_wlan_connects_only_when_the_world_ap_is_up():
    wlan = network.WLAN(network.STA_IF)
    assert not wlan.active()
    with pytest.raises(OSError):
        wlan.connect("home", "secret")  # not active
    wlan.active(True)
    wlan.connect("home", "secret")
    assert not wlan.isconnected() and wlan.status() == network.STAT_NO_AP_FOUND
    assert wlan.ifconfig()[0] == "0.0.0.0" and wlan.scan() == []
    network.hw_set_wifi(True, ssid="home", key="secret")
    assert wlan.isconnected() and wlan.status() == network.STAT_GOT_IP
    assert network.hw_wifi_state() == {"available": True, "ssid": "home", "active": True,
                                       "connected": True, "status": network.STAT_GOT_IP}
    assert wlan.scan()[0][0] == b"home" and wlan.status("rssi") < 0
    assert wlan.ipconfig("addr4") == ("192.168.1.50", "255.255.255.0")
    wlan.ipconfig(addr4="10.0.0.7/8", gw4="10.0.0.1")
    assert wlan.ifconfig() == ("10.0.0.7", "255.0.0.0", "10.0.0.1", "192.168.1.1")
    assert wlan.ipconfig("dhcp4") is False
    network.hw_set_wifi(False, ssid="home", key="secret")  # AP down: link drops ...
    assert not wlan.isconnected()
    network.hw_set_wifi(True, ssid="home", key="secret")  # ... and comes back by itself
    assert wlan.isconnected()
    wlan.disconnect()
    assert not wlan.isconnected() and wlan.status() == network.STAT_IDLE
    wlan.connect("home", "wrong")
    assert wlan.status() == network.STAT_WRONG_PASSWORD
    wlan.config(ssid="home", key="secret", hostname="evse-1")
    wlan.connect()
    assert wlan.isconnected() and wlan.config("hostname") == "evse-1"
    assert wlan.config("mac") == machine.unique_id()
    with pytest.raises(ValueError):
        wlan.config("nope")
    machine.hw_reset()  # a reboot forgets the interface, the AP stays up
    assert not network.WLAN(network.STA_IF).isconnected() and network.hw_wifi_state()["available"]
    ap = network.WLAN(network.AP_IF)
    ap.active(True)
    assert ap.ifconfig()[0] == "192.168.4.1" and not ap.isconnected()


# ------------------------------------------------------------------ stub conformance

WORLD_EXTRAS = {"machine": {"ResetRequested", "ADC_READ_US"}}
UNKNOWN = object()


def _stub_file(module):
    # tools/test.py installs them into build/typings; older setups had them in the venv
    dirs = [os.path.join(ROOT, "build", "typings"), sysconfig.get_paths()["purelib"]]
    dirs += glob.glob(os.path.join(ROOT, ".venv", "lib", "python*", "site-packages"))
    for d in dirs:
        candidates = [os.path.join(d, module + ".pyi"), os.path.join(d, "stubs", module + ".pyi")]
        candidates += glob.glob(os.path.join(d, "stubs", "*", module + ".pyi"))
        for path in candidates:
            if os.path.exists(path):
                return path
    return None


def _parse_stub(module):
    """-> {"functions": {name: [FunctionDef]}, "consts": {name: expr}, "classes": {name:
    {"bases": [...], "methods": {name: [FunctionDef]}, "consts": {name: expr}}}}"""
    path = _stub_file(module)
    if path is None:
        pytest.skip("micropython-esp32-stubs not installed (no %s.pyi): run tools/test.py" % module)
    with open(path) as f:
        tree = ast.parse(f.read())

    def body(nodes, funcs, consts):
        for node in nodes:
            if isinstance(node, ast.FunctionDef):
                funcs.setdefault(node.name, []).append(node)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        consts[target.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                consts[node.target.id] = node.value

    stub = {"functions": {}, "consts": {}, "classes": {}}
    body(tree.body, stub["functions"], stub["consts"])
    for node in tree.body:
        if isinstance(node, ast.ClassDef):  # a class may appear twice (network.LAN): merge
            cls = stub["classes"].setdefault(node.name, {"bases": [], "methods": {}, "consts": {}})
            cls["bases"] += [b.id for b in node.bases if isinstance(b, ast.Name)]
            body(node.body, cls["methods"], cls["consts"])
    return stub


def _class_chain(stub, name):
    chain, todo = [], [name]
    while todo:
        cls = stub["classes"].get(todo.pop(0))
        if cls is not None and cls not in chain:
            chain.append(cls)
            todo += cls["bases"]
    return chain


def _value(expr, namespace):
    """The value of a stub expression (literal or constants of the class), else UNKNOWN."""
    if expr is None:
        return UNKNOWN
    try:
        value = eval(compile(ast.Expression(expr), "<stub>", "eval"), {"__builtins__": {}},
                     namespace)
    except Exception:
        return UNKNOWN
    return UNKNOWN if value is Ellipsis else value


def _namespace(consts_dicts):
    ns = {}
    for consts in reversed(consts_dicts):  # the class overrides its bases
        for name, expr in consts.items():
            value = _value(expr, ns)
            if value is not UNKNOWN:
                ns[name] = value
    return ns


def _stub_params(fn, skip_first):
    """-> (positional [(name, posonly, default)], keyword-only [(name, default)], *args, **kw);
    default is None when the parameter is required."""
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [None] * (len(pos) - len(a.defaults)) + list(a.defaults)
    positional = [(p.arg, i < len(a.posonlyargs), d) for i, (p, d) in enumerate(zip(pos, defaults))]
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)
    if skip_first and not static:
        positional = positional[1:]
    kwonly = [(p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults)]
    return positional, kwonly, a.vararg is not None, a.kwarg is not None


def check_signature(where, fake_fn, overloads, namespace, skip_first):
    """Problems (strings) with a fake function against the stub's overloads: every parameter of
    the fake must exist in some overload at the same position (positional) or by name
    (keyword-only); a required one must be required there; a default must equal the stub's
    where the stub spells one out."""
    stubs = [_stub_params(o, skip_first) for o in overloads]
    if any(s[2] and s[3] for s in stubs):
        return []  # the stub takes anything
    params = list(inspect.signature(fake_fn).parameters.values())
    if skip_first:
        params = params[1:]
    problems = []
    for i, p in enumerate(params):
        if p.kind == p.VAR_POSITIONAL:
            ok, matches = any(s[2] for s in stubs), []
        elif p.kind == p.VAR_KEYWORD:
            ok, matches = any(s[3] for s in stubs), []
        elif p.kind == p.POSITIONAL_OR_KEYWORD:
            matches = [s[0][i][2] for s in stubs if i < len(s[0]) and s[0][i][0] == p.name]
            ok = bool(matches) or any(s[2] for s in stubs)
        else:  # keyword-only: the stub must accept it by name
            matches = [d for s in stubs for (n, posonly, d) in s[0] if n == p.name and not posonly]
            matches += [d for s in stubs for (n, d) in s[1] if n == p.name]
            ok = bool(matches) or any(s[3] for s in stubs)
        if not ok:
            problems.append("%s: parameter %r not in the stub" % (where, p.name))
            continue
        if not matches or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            if None not in matches:
                problems.append("%s: %r is required but optional in the stub" % (where, p.name))
            continue
        known = [v for v in (_value(d, namespace) for d in matches if d is not None)
                 if v is not UNKNOWN]
        if known and p.default not in known:
            problems.append("%s: %r defaults to %r, the stub to %r"
                            % (where, p.name, p.default, known[0]))
    return problems


def _is_const(value):
    return isinstance(value, (bool, int, float, str, bytes))


def conformance_problems(module):
    stub = _parse_stub(module.__name__)
    extras = WORLD_EXTRAS.get(module.__name__, set())
    module_ns = _namespace([stub["consts"]])
    problems = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or name.startswith("hw_") or name in extras \
                or inspect.ismodule(obj):
            continue
        where = module.__name__ + "." + name
        if inspect.isclass(obj):
            chain = _class_chain(stub, name)
            if not chain:
                problems.append("%s: class not in the stub" % where)
                continue
            ns = _namespace([c["consts"] for c in chain])
            for attr, value in sorted(vars(obj).items()):
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                w = where + "." + attr
                if isinstance(value, (staticmethod, classmethod)):
                    skip_first, value = isinstance(value, classmethod), value.__func__
                else:
                    skip_first = True
                if inspect.isfunction(value):
                    overloads = [o for c in chain for o in c["methods"].get(attr, [])]
                    if not overloads:
                        problems.append("%s: method not in the stub" % w)
                    else:
                        problems += check_signature(w, value, overloads, ns, skip_first)
                elif _is_const(value):
                    if not any(attr in c["consts"] for c in chain):
                        problems.append("%s: constant not in the stub" % w)
                    elif ns.get(attr, value) != value:
                        problems.append("%s = %r, the stub says %r" % (w, value, ns[attr]))
                else:
                    problems.append("%s: unexpected public attribute" % w)
        elif inspect.isfunction(obj):
            overloads = stub["functions"].get(name)
            if not overloads:
                problems.append("%s: function not in the stub" % where)
            else:
                problems += check_signature(where, obj, overloads, module_ns, False)
        elif _is_const(obj):
            if name not in stub["consts"]:
                problems.append("%s: constant not in the stub" % where)
            elif module_ns.get(name, obj) != obj:
                problems.append("%s = %r, the stub says %r" % (where, obj, module_ns[name]))
        else:
            problems.append("%s: unexpected public name" % where)
    return problems


@pytest.mark.parametrize("module", [machine, esp32, network], ids=lambda m: m.__name__)
def test_fakes_conform_to_the_stubs(module):
    assert conformance_problems(module) == []


def test_conformance_check_catches_mismatches():
    stub = _parse_stub("machine")
    pin = _class_chain(stub, "Pin")
    ns = _namespace([c["consts"] for c in pin])

    def irq(self, handler=None, trigger=1, *, prio=1, hard=True):
        pass

    def value(self, level=None):
        pass

    def init(self, mode, pull=-1):
        pass

    assert check_signature("irq", irq, pin[0]["methods"]["irq"], ns, True) == [
        "irq: 'trigger' defaults to 1, the stub to 3",
        "irq: parameter 'prio' not in the stub",
        "irq: 'hard' defaults to True, the stub to False"]
    assert check_signature("value", value, pin[0]["methods"]["value"], ns, True) == [
        "value: parameter 'level' not in the stub"]
    assert check_signature("init", init, pin[0]["methods"]["init"], ns, True) == [
        "init: 'mode' is required but optional in the stub"]


# ------------------------------------------------------------------ under MicroPython

MICROPYTHON_SCRIPT = r"""
import sys
import machine, esp32, network
import micropython

flash = sys.argv[1]
phase = sys.argv[2]
esp32.hw_set_flash_dir(flash)
nvs = esp32.NVS("sim")
if phase == "1":
    nvs.set_i32("kept", 42)
    nvs.commit()
    nvs.set_i32("lost", 1)
    print("OK1")
    sys.exit(0)
assert nvs.get_i32("kept") == 42
try:
    nvs.get_i32("lost")
    raise AssertionError("uncommitted value survived")
except OSError as e:
    assert e.args[0] == -4354

# irq edges, and a hard handler that opens a relay without allocating
relay = machine.Pin(26, machine.Pin.OUT, value=1)
told = []
machine.hw_on_output(26, lambda level: told.append(level))  # world code may allocate
rcd = machine.Pin(33, machine.Pin.IN)
rcd.irq(lambda p: relay.off(), machine.Pin.IRQ_RISING, hard=True)
machine.hw_set_input(33, 1)
assert told == [0] and machine.hw_level(26) == 0
rcd.irq(lambda p: [1, 2, 3], machine.Pin.IRQ_FALLING, hard=True)
try:
    machine.hw_set_input(33, 0)
    raise AssertionError("allocation in a hard IRQ went unnoticed")
except MemoryError:
    pass

# PWM 100 % and the ADC sweeping a 50 % period
pwm = machine.PWM(machine.Pin(25), freq=1000, duty_u16=65535)
assert machine.hw_pwm(25) == (1000, 65535)
machine.hw_set_analog(36, lambda t: 2980 if machine.hw_level(25) else 280)
adc = machine.ADC(machine.Pin(36), atten=machine.ADC.ATTN_11DB)
assert adc.read_uv() == 2980000
pwm.duty_u16(32768)
mv = [adc.read_uv() // 1000 for i in range(87)]
assert 40 <= mv.count(2980) <= 47 and mv.count(280) == 87 - mv.count(2980)

# UART routing
class Dev:
    def __init__(self):
        self.out = b""
    def feed(self, data):
        assert machine.hw_uart_settings(2)["baudrate"] == 9600
        self.out += data
    def take(self, n):
        d, self.out = self.out[:n], self.out[n:]
        return d
machine.hw_attach_uart(2, Dev())
uart = machine.UART(2, baudrate=9600, tx=17, rx=16)
uart.write(b"ping\n")
assert uart.readline() == b"ping\n" and uart.read() is None

# timers, watchdog, RTC, reset
ticks = []
machine.Timer(0, period=10, callback=lambda t: ticks.append(1))
wdt = machine.WDT(timeout=1000)
machine.hw_advance_ms(100)
assert len(ticks) == 10 and not machine.hw_wdt_expired()
machine.hw_advance_ms(1000)
assert machine.hw_wdt_expired()
rtc = machine.RTC()
rtc.datetime((2024, 12, 31, 1, 23, 59, 59, 0))
machine.hw_advance_ms(1000)
assert rtc.datetime()[:3] == (2025, 1, 1)
try:
    machine.reset()
except machine.ResetRequested as e:
    machine.hw_reset(e.cause)
assert machine.reset_cause() == machine.SOFT_RESET and machine.hw_pwm(25) is None

# Wi-Fi
wlan = network.WLAN(network.STA_IF)
wlan.active(True)
wlan.connect("ap", "pw")
assert not wlan.isconnected()
network.hw_set_wifi(True)
assert wlan.isconnected() and network.hw_wifi_state()["connected"]
print("OK2")
"""


def test_fakes_run_under_micropython(tmp_path):
    mp = os.path.join(ROOT, ".venv", "bin", "micropython")
    if not os.path.exists(mp):
        mp = shutil.which("micropython")
    if mp is None:
        pytest.skip("no micropython binary")
    script = tmp_path / "check_fakes.py"
    script.write_text(MICROPYTHON_SCRIPT)
    env = dict(os.environ, MICROPYPATH=FAKES + ":" + ROOT)  # (the RTC takes the firmware's calendar arithmetic)
    for phase in ("1", "2"):  # two processes: committed NVS survives the "power cut"
        run = subprocess.run([mp, str(script), str(tmp_path / "flash"), phase], env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "OK" + phase in run.stdout


def test_watchdog_started_after_a_reset_counts_from_its_start():
    import machine

    machine.hw_reset()
    machine.hw_advance_ms(60000)
    w = machine.WDT(timeout=5000)
    assert not machine.hw_wdt_expired()
    machine.hw_advance_ms(4000)
    w.feed()
    machine.hw_advance_ms(4000)
    assert not machine.hw_wdt_expired()
    machine.hw_advance_ms(2000)
    assert machine.hw_wdt_expired()
    machine.hw_reset()
