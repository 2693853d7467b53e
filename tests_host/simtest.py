"""Helpers for tests that drive the simulator's runner (simrun.Sim) in-process: a Sim on a board
profile of the test's own, scenario lines acted on it, and the events it wrote."""
import asyncio
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def devkit():
    """The DevKit board profile as a dict (tests change it for their board)."""
    with open(os.path.join(ROOT, "drivers", "boards", "esp32-devkit.json")) as f:
        return json.load(f)


def sim_on(tmp_path, monkeypatch, profile, settings=None):
    """A simrun.Sim in tmp_path with `profile` as its board.json (and settings.json if given)."""
    import simrun

    with open(tmp_path / "board.json", "w") as f:
        json.dump(profile, f)
    if settings is not None:
        with open(tmp_path / "settings.json", "w") as f:
            json.dump(settings, f)
    monkeypatch.chdir(tmp_path)
    return simrun.Sim(ROOT, str(tmp_path / "events.jsonl"), quiet=True)


def act(s, text):
    """Act scenario lines on the Sim."""
    from world import scenario

    async def go():
        for lineno, verb, args in scenario.parse(text):
            await s.act(lineno, verb, args)
    asyncio.run(go())


def events(s):
    """The events the Sim wrote so far."""
    if not s.events.closed:
        s.events.flush()
    return [json.loads(line) for line in open(s.events.name)]


class WorldBench:
    """A world and the EVSE's outputs through the fake machine module, pins from the profile:
    `charge()` plugs a car and closes the contactor, `open()` opens it, `switch(on)` drives a
    phase switch's pin to its active level (on) or the other one."""

    def __init__(self, prof):
        import machine
        from world.world import World

        self.prof = prof
        self.w = World(prof)
        self.now = 0
        self.w.advance(0)
        self.pwm = machine.PWM(machine.Pin(prof["pilot"]["pwm_pin"]), freq=1000, duty_u16=65535)
        self.relay = machine.Pin(prof["relay"]["pin"], machine.Pin.OUT, value=0)
        self.ps = None
        ps = prof.get("phase_switch")
        if ps is not None:
            self._on = 1 if ps["active_high"] else 0
            self.ps = machine.Pin(ps["pin"], machine.Pin.OUT, value=1 - self._on)  # as drivers/relay.py

    def switch(self, on):
        self.ps.value(self._on if on else 1 - self._on)

    def run(self, ms, step=10):
        end = self.now + ms
        while self.now < end:
            self.now = min(self.now + step, end)
            self.w.advance(self.now)

    def charge(self, amps=16, phases=3):
        self.w.apply("plug", [32])
        self.w.apply("ev-ready", [amps, phases])
        self.pwm.duty_u16(int(32 / 0.6 * 65535 / 100 + 0.5))  # 32 A offered
        self.run(500)
        self.relay.value(1)
        self.run(30)
        assert self.w.relay.closed and self.w.amps() == amps

    def open(self):
        self.relay.value(0)
        self.run(30)
        assert not self.w.relay.closed


def request(addr, fc, start, count):
    """A Modbus RTU read request frame."""
    from world.modbus_meter import with_crc

    return with_crc(bytes((addr, fc, start >> 8, start & 0xFF, count >> 8, count & 0xFF)))


def read_floats(addr, start, count, baud=9600, uart_id=2):
    """Read `count` float32 input register pairs through the fake UART: the values, or None
    when nobody answered."""
    import struct

    import machine
    from world.modbus_meter import with_crc

    uart = machine.UART(uart_id, baudrate=baud)
    uart.write(request(addr, 4, start, 2 * count))
    machine.hw_advance_ms(200)
    reply = uart.read()
    if reply is None:
        return None
    assert reply[0] == addr and reply[1] == 4 and reply[2] == 4 * count
    assert with_crc(reply[:-2]) == reply
    return [struct.unpack(">f", reply[3 + 4 * i:7 + 4 * i])[0] for i in range(count)]


def snapshot_roundtrip(w, prof):
    """The world `w` saved as across a power cut (tests_host/world/snapshot.py), the fake
    machine reset, and a fresh World of `prof` loaded from it."""
    import io

    import machine
    import simrun
    from world import snapshot
    from world.world import World

    f = io.StringIO()
    snapshot.save(w, f)
    machine.hw_reset(keep_world=False)
    fresh = World(prof)
    snapshot.load(fresh, json.loads(f.getvalue()), simrun.world_classes())
    fresh.install()
    return fresh
