"""A Modbus meter driver wired to a bus that replays the simulated meter's replies.

The replay UART and DE pin allocate nothing themselves, so what a test or benchmark measures on
it (time, heap) is the driver alone. Runs under MicroPython and CPython.
"""
import machine
from drivers import meter, modbus
from world.modbus_meter import MeterSlave

TRUTH = {"volts": [230.1, 231.2, 229.3], "amps": [16.0, 15.5, 0.25], "import_wh": 12345.6}


class ReplayUART:
    def __init__(self, replies):
        self.replies = replies
        self.cur = None
        self.pos = 0

    def write(self, buf):
        self.cur = self.replies[(buf[2] << 8) | buf[3]]
        self.pos = 0
        return 8

    def any(self):
        if self.cur is None:
            return 0
        return len(self.cur) - self.pos

    def readinto(self, buf, n):
        cur = self.cur
        p = self.pos
        for i in range(n):
            buf[i] = cur[p + i]
        self.pos = p + n
        return n

    def txdone(self):
        return True


class NullPin:
    def __init__(self):
        self.v = 0

    def value(self, v):
        self.v = v


def replay_meter(model, interval_ms=100, truth=None):
    """A Meter for `model` whose every request gets the simulated meter's recorded reply."""
    t = truth or TRUTH
    machine.hw_reset(keep_world=False)
    spec = meter.meter_models.MODELS[model]
    slave = MeterSlave(model, 1, lambda: t, 9600)
    machine.hw_attach_uart(2, slave)
    machine.UART(2, baudrate=9600)
    replies = {}
    for first, count in spec["reads"]:
        req = modbus.Request(1, spec["function"], first, count)
        slave.feed(bytes(req.frame))
        machine.hw_advance_ms(1000)
        replies[first] = bytearray(slave.take(slave.pending()))
    master = modbus.Master(ReplayUART(replies), meter.TickClock(), 9600, de=NullPin())
    return meter.Meter(master, model, 1, interval_ms)
