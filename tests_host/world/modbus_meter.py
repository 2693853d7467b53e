"""Simulated Modbus energy meters (Eastron SDM630, SDM72D, SDM120, SDM230; Chint DTSU666,
DDSU666): byte-exact Modbus RTU slaves.

    slave = MeterSlave("sdm630", 1, source, 9600)
    machine.hw_attach_uart(2, slave)     # the fake UART calls feed(bytes), take(n), pending()

source() -> {"volts": [v1, v2, v3], "amps": [a1, a2, a3], "import_wh": float} (optional
"power_w": total watts; else the sum of the phase powers, which are volts * amps at unity power
factor, or, with the optional "powers": [p1, p2, p3], those signed watts (negative = export: the
phase's power factor reads -1 then, its current stays unsigned as on the meters); optional
"export_wh": the exported energy, 0 without it). 1-phase models use phase 1 only.

Several meters on one RS-485 line: `Bus([slave, ...])` is attached to the UART instead of a
single slave; it hands every request to every slave on it (each ignores frames for other
addresses) and reads back the reply of whichever answered.

    bus = Bus([MeterSlave("sdm630", 1, charger, 9600), MeterSlave("sdm630", 2, grid, 9600)], 2)
    machine.hw_attach_uart(2, bus)

Registers come from the manufacturers' protocol documents and are written out here on their own,
not taken from drivers/meter_models.py, so a wrong register, function or scale in the driver's
data shows up as a wrong reading (or an exception) in tests. Each register map gives, per value
register, the quantity and the factor it is stored with (the float in the register is quantity *
factor: Chint's DTSU666 keeps volts in 0.1 V, so 230.1 V is stored as 2301.0). Values are
float32, big-endian, high word first, two registers each; a read that touches a register the
model does not document gets exception 02.

Eastron (SDM630 / SDM72D / SDM120 / SDM230 Modbus protocol documents): measurements are input
registers (function 04), in V, A, W, kWh. Holding registers (03 read, 06/16 write) hold the
settings named in the facts file (parity/stop 0x0012, address 0x0014, baud code 0x001C), also
float32.
Chint DTSU666 (user manual ZTY0.464.1448 / ZTW0.464.0104, table 11 "ModBus protocol address
table": read command 03H, write command 10H): one holding-register space (function 03) holds the
settings (signed 16-bit words: protocol 0x002C, baud code 0x002D, address 0x002E, network 0x0003,
CT ratio 0x0006, VT ratio 0x0007) and the electricity data block 0x2000.. (line and phase volts
in 0.1 V, currents in 0.001 A, powers in 0.1 W / 0.1 var, power factors in 0.001, frequency in
0.01 Hz) and the energies 0x401E import / 0x4028 export in kWh. Settings are written with 10H
only.
Chint DDSU666 (user manuals ZTY0.464.922 / ZTY0.464.1036, appendix A): function 03 reads U 0x2000
(V), I 0x2002 (A), P 0x2004 (kW), Q 0x2006 (kvar), S 0x2008 (kVA), PF 0x200A, frequency 0x200E
(Hz), import energy 0x4000 and export energy 0x400A (kWh). Its settings registers are not
simulated (writes get exception 02).
A write is stored but, as on the meters, a new address or baud rate only takes effect after a
power cycle (not simulated).

Answers: exception 01 for a function the model does not implement (Eastron: 03/04/06/16; Chint:
03/16), 02 for a register outside the map, 03 for a bad count/byte count or a setting out of
range. Frames for other addresses and frames with a bad CRC get no answer; address 0 (broadcast)
writes are carried out silently.

Timing (virtual, from the fake's machine.hw_now_us(), which the simulator moves every step):
the request takes its frame time on the wire, the meter answers `response_ms` later, and the
reply's bytes become readable one character time apart. Without that clock everything is
immediate.

Faults:
    dead           never answers
    noise          fraction 0..1 of replies with one byte flipped (a value above 1 is taken as a
                   percentage, as the scenario verb `meter-noise 30` gives it); deterministic
    late_ms        the reply comes this much later (make it longer than the master's timeout)
    wrong_address  True (answers as address + 1) or an int address to answer as
    baudrate       when the UART's baud rate (machine.hw_uart_settings) differs, the meter does
                   not understand the request: silence, or with `garbage_on_mismatch` a few
                   garbage bytes
Counters for tests: `requests` (frames understood), `answered`, `ignored` (bad CRC, other
address, baud mismatch), `frames` (the last 16 request frames, bytes).
"""
import math
import struct

try:
    import machine
except ImportError:  # pragma: no cover - always present with the fakes on the path
    machine = None

# -- register maps: value register -> (quantity, factor); each value spans the register and the
#    next one and holds float32(quantity * factor)


def _unit(names):
    out = {}
    for reg in names:
        out[reg] = (names[reg], 1)
    return out


# Eastron SDM630 / SDM72D-M Modbus protocol, input registers 3xxxx (register = 3xxxx - 30001)
_EASTRON_3P = _unit({
    0x0000: "v1", 0x0002: "v2", 0x0004: "v3",
    0x0006: "a1", 0x0008: "a2", 0x000A: "a3",
    0x000C: "p1", 0x000E: "p2", 0x0010: "p3",
    0x0012: "va1", 0x0014: "va2", 0x0016: "va3",
    0x001E: "pf1", 0x0020: "pf2", 0x0022: "pf3",
    0x0034: "p",
    0x0046: "hz",
    0x0048: "import_kwh",
    0x004A: "export_kwh",
    0x0156: "total_kwh",
})
# Eastron SDM120 / SDM230 Modbus protocol, input registers
_EASTRON_1P = _unit({
    0x0000: "v1",
    0x0006: "a1",
    0x000C: "p1",
    0x0012: "va1",
    0x001E: "pf1",
    0x0046: "hz",
    0x0048: "import_kwh",
    0x004A: "export_kwh",
    0x0156: "total_kwh",
})
# Chint DTSU666, table 11: the electricity data block (Uab..Uca, Ua..Uc x0.1 V; Ia..Ic x0.001 A;
# Pt, Pa..Pc x0.1 W; Qt, Qa..Qc x0.1 var; PFt, PFa..PFc x0.001; Freq x0.01 Hz) and the energy
# block (ImpEp 401EH, ExpEp 4028H, kWh)
_DTSU666 = {
    0x2000: ("v12", 10), 0x2002: ("v23", 10), 0x2004: ("v31", 10),
    0x2006: ("v1", 10), 0x2008: ("v2", 10), 0x200A: ("v3", 10),
    0x200C: ("a1", 1000), 0x200E: ("a2", 1000), 0x2010: ("a3", 1000),
    0x2012: ("p", 10), 0x2014: ("p1", 10), 0x2016: ("p2", 10), 0x2018: ("p3", 10),
    0x201A: ("q", 10), 0x201C: ("q1", 10), 0x201E: ("q2", 10), 0x2020: ("q3", 10),
    0x202A: ("pf", 1000), 0x202C: ("pf1", 1000), 0x202E: ("pf2", 1000), 0x2030: ("pf3", 1000),
    0x2044: ("hz", 100),
    0x401E: ("import_kwh", 1),
    0x4028: ("export_kwh", 1),
}
# Chint DDSU666, appendix A: engineering units, powers in k-units
_DDSU666 = {
    0x2000: ("v1", 1), 0x2002: ("a1", 1), 0x2004: ("p1", 0.001), 0x2006: ("q1", 0.001),
    0x2008: ("va1", 0.001), 0x200A: ("pf1", 1), 0x200E: ("hz", 1),
    0x4000: ("import_kwh", 1), 0x400A: ("export_kwh", 1),
}

# settings: register -> (name, lowest, highest)
# Eastron holding registers 4xxxx, float32 (two registers each)
_EASTRON_SETTINGS = {
    0x0012: ("parity", 0, 3),     # 0 = 1 stop no parity, 1 = even, 2 = odd, 3 = 2 stop no parity
    0x0014: ("address", 1, 247),
    0x001C: ("baud", 0, 5),       # 0 = 2400, 1 = 4800, 2 = 9600, 3 = 19200, 4 = 38400, 5 = 1200
}
_EASTRON_BAUD_CODES = {2400: 0, 4800: 1, 9600: 2, 19200: 3, 38400: 4, 1200: 5}
# Chint DTSU666 keyboard parameters, signed 16-bit (one register each)
_DTSU666_SETTINGS = {
    0x0003: ("net", 0, 1),        # 0 = three phase four wire, 1 = three phase three wire
    0x0006: ("ct_ratio", 1, 9999),
    0x0007: ("vt_ratio", 1, 9999),  # x0.1
    0x002C: ("protocol", 1, 5),   # 1 = DL/T645, 2 = n.2, 3 = n.1, 4 = E.1, 5 = o.1
    0x002D: ("baud", 0, 4),       # 0 = 1200, 1 = 2400, 2 = 4800, 3 = 9600, 4 = 19200
    0x002E: ("address", 1, 247),
}
_DTSU666_BAUD_CODES = {1200: 0, 2400: 1, 4800: 2, 9600: 3, 19200: 4}


class _Model:
    def __init__(self, phases, baud, measure, measure_fc, settings, settings_fc, words,
                 baud_codes, writes, defaults):
        self.phases = phases
        self.baud = baud
        self.measure = measure          # value register -> (quantity, factor)
        self.measure_fc = measure_fc    # function that reads them
        self.settings = settings        # register -> (name, lowest, highest)
        self.settings_fc = settings_fc  # function that reads the settings
        self.words = words              # registers a setting takes: 2 = float32, 1 = int16
        self.baud_codes = baud_codes
        self.writes = writes            # write functions understood
        self.defaults = defaults        # settings other than address and baud


_SDM_3P = _Model(3, 9600, _EASTRON_3P, 4, _EASTRON_SETTINGS, 3, 2, _EASTRON_BAUD_CODES,
                 (6, 16), {"parity": 0})
_SDM_1P = _Model(1, 2400, _EASTRON_1P, 4, _EASTRON_SETTINGS, 3, 2, _EASTRON_BAUD_CODES,
                 (6, 16), {"parity": 0})

MODELS = {
    "sdm630": _SDM_3P,
    "sdm72d": _SDM_3P,
    "sdm120": _SDM_1P,
    "sdm230": _SDM_1P,
    "dtsu666": _Model(3, 9600, _DTSU666, 3, _DTSU666_SETTINGS, 3, 1, _DTSU666_BAUD_CODES, (16,),
                      {"net": 0, "ct_ratio": 1, "vt_ratio": 10, "protocol": 3}),
    "ddsu666": _Model(1, 9600, _DDSU666, 3, {}, 3, 1, {}, (16,), {}),
}

_GARBAGE = b"\xff\x00\xf8\x80\x7f\x06"


def crc16(data):
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


def with_crc(frame):
    """frame + its Modbus CRC (low byte first), as bytes."""
    c = crc16(frame)
    return bytes(frame) + bytes((c & 0xFF, c >> 8))


def _f32_words(value):
    raw = struct.pack(">f", value)
    return (raw[0] << 8) | raw[1], (raw[2] << 8) | raw[3]


class MeterSlave:
    def __init__(self, model, address, source, baudrate=None, response_ms=3, now_us=None):
        if model not in MODELS:
            raise ValueError("unknown meter model %r: known models are %s"
                             % (model, ", ".join(sorted(MODELS))))
        self.model = model
        m = self._m = MODELS[model]
        self.phases = m.phases
        self.address = address
        self.source = source
        self.baudrate = baudrate or m.baud
        self.response_ms = response_ms
        self.uart_id = None         # found from the fake's attachment table when None
        self._now_us = now_us       # time source override (fn() -> microseconds)
        # faults
        self.dead = False
        self.noise = 0
        self.late_ms = 0
        self.wrong_address = False
        self.garbage_on_mismatch = False
        # settings (holding registers): floats on Eastron meters, ints on Chint ones
        num = float if m.words == 2 else int
        self.settings = {}
        for k in m.defaults:
            self.settings[k] = num(m.defaults[k])
        for reg in m.settings:
            name = m.settings[reg][0]
            if name == "address":
                self.settings[name] = num(address)
            elif name == "baud":
                self.settings[name] = num(m.baud_codes.get(self.baudrate, m.baud_codes[m.baud]))
        self._holding = {}
        self._words = {}  # input registers, refreshed in place on each read
        self._q = {}  # the quantities behind them, likewise
        for reg in m.settings:
            words = self._setting_words(self.settings[m.settings[reg][0]])
            for i in range(len(words)):
                self._holding[reg + i] = words[i]
        # bus state
        self._inbuf = bytearray()
        self._fifo = bytearray()    # bytes already on the wire, waiting for the master's read
        self._reply = b""           # bytes not sent yet
        self._reply_at = 0          # us when the first byte of _reply is complete
        self._sent = 0              # bytes of _reply moved to _fifo
        self._noise_acc = 0.0
        self._noise_pos = 0
        self._input_words()  # fill both tables now: later reads only change their values
        # counters
        self.requests = 0
        self.answered = 0
        self.ignored = 0
        self.frames = []

    # -- time

    def _now(self):
        if self._now_us is not None:
            return self._now_us()
        if machine is not None and hasattr(machine, "hw_now_us"):
            return machine.hw_now_us()
        return None

    def _char_us(self, baud):
        return (10 * 1000000 + baud - 1) // baud

    def _update(self):
        """Move the reply bytes whose time has come onto the wire (into the fifo)."""
        left = len(self._reply) - self._sent
        if left <= 0:
            return
        now = self._now()
        if now is None:
            n = left
        else:
            if now < self._reply_at:
                return
            n = 1 + (now - self._reply_at) // self._char_us(self.baudrate)
            n = min(n, len(self._reply)) - self._sent
        if n > 0:
            self._fifo.extend(self._reply[self._sent:self._sent + n])
            self._sent += n

    # -- the fake UART's side

    def feed(self, data):
        self._update()
        # a new frame on the line interrupts an answer still being prepared or sent
        self._reply = b""
        self._sent = 0
        if not self._baud_matches():
            self.ignored += 1
            if self.garbage_on_mismatch and not self.dead:
                self._queue(_GARBAGE, len(data))
            return
        self._inbuf.extend(data)
        while self._inbuf:
            need = self._frame_len(self._inbuf)
            if need is None or len(self._inbuf) < need:
                return
            frame = bytes(self._inbuf[:need])
            self._inbuf = self._inbuf[need:]
            self._frame(frame)

    def pending(self):
        self._update()
        return len(self._fifo)

    def take(self, n):
        self._update()
        out = bytes(self._fifo[:n])
        self._fifo = self._fifo[n:]
        return out

    # -- framing

    def _baud_matches(self):
        if machine is None or not hasattr(machine, "hw_uart_settings"):
            return True
        uid = self.uart_id
        if uid is None:
            devs = getattr(machine, "_uart_devs", None) or {}
            for k in devs:
                if devs[k] is self:
                    uid = k
            if uid is None:
                return True
        s = machine.hw_uart_settings(uid)
        return s is None or s.get("baudrate") == self.baudrate

    @staticmethod
    def _frame_len(buf):
        if len(buf) < 2:
            return None
        fc = buf[1]
        if fc in (3, 4, 6):
            return 8
        if fc == 16:
            if len(buf) < 7:
                return None
            return 9 + buf[6]
        return len(buf)  # unknown function: the frame is what came in one piece

    def _frame(self, frame):
        if len(frame) < 4 or crc16(frame[:-2]) != frame[-2] | (frame[-1] << 8):
            self.ignored += 1
            return
        addr = frame[0]
        if addr != self.address and addr != 0:
            self.ignored += 1
            return
        self.requests += 1
        self.frames.append(frame)
        if len(self.frames) > 16:
            self.frames.pop(0)
        if self.dead:
            return
        pdu = self._answer(frame[1], frame[2:-2])
        if addr == 0:
            return  # broadcast: carried out, never answered
        me = self.address
        wa = self.wrong_address
        if wa is True:
            me = me % 247 + 1
        elif wa:
            me = int(wa)
        reply = bytearray(with_crc(bytes((me,)) + pdu))
        if self._corrupt():
            i = self._noise_pos % len(reply)
            self._noise_pos += 1
            reply[i] ^= 0x5A
        self.answered += 1
        self._queue(bytes(reply), len(frame))

    def _queue(self, reply, request_len):
        """Send reply: it starts after the request's own time on the wire plus the response
        time (and late_ms); its first byte is complete one character time later."""
        now = self._now()
        c = self._char_us(self.baudrate)
        self._reply = reply
        self._sent = 0
        if now is None:
            self._reply_at = 0
        else:
            self._reply_at = (now + request_len * c + (self.response_ms + self.late_ms) * 1000
                              + c)
        self._update()

    def _corrupt(self):
        f = self.noise or 0
        if f > 1:
            f = f / 100.0
        if f <= 0:
            return False
        self._noise_acc += f
        if self._noise_acc >= 1.0:
            self._noise_acc -= 1.0
            return True
        return False

    # -- Modbus functions

    def _answer(self, fc, data):
        """PDU (function + data) answering one request PDU."""
        if fc == 4 or fc == 3:
            if len(data) != 4:
                return bytes((fc | 0x80, 3))
            start = (data[0] << 8) | data[1]
            count = (data[2] << 8) | data[3]
            if not 1 <= count <= 125:
                return bytes((fc | 0x80, 3))
            m = self._m
            if fc != m.measure_fc and fc != m.settings_fc:
                return bytes((fc | 0x80, 1))
            # (no merged copy of the tables: the world runs inside the firmware's heap budget in
            # the simulator, so it keeps its allocations per request small)
            words = self._input_words() if fc == m.measure_fc else None
            holding = self._holding if fc == m.settings_fc else None
            out = bytearray(2 + 2 * count)
            out[0], out[1] = fc, 2 * count
            i = 2
            for reg in range(start, start + count):
                w = words.get(reg) if words is not None else None
                if w is None and holding is not None:
                    w = holding.get(reg)
                if w is None:
                    return bytes((fc | 0x80, 2))
                out[i] = w >> 8
                out[i + 1] = w & 0xFF
                i += 2
            return bytes(out)
        if fc in (6, 16) and fc not in self._m.writes:
            return bytes((fc | 0x80, 1))
        if fc == 6:
            if len(data) != 4:
                return bytes((fc | 0x80, 3))
            reg = (data[0] << 8) | data[1]
            value = (data[2] << 8) | data[3]
            err = self._write(reg, [value])
            if err:
                return bytes((fc | 0x80, err))
            return bytes((fc,)) + bytes(data)
        if fc == 16:
            if len(data) < 5:
                return bytes((fc | 0x80, 3))
            reg = (data[0] << 8) | data[1]
            count = (data[2] << 8) | data[3]
            nbytes = data[4]
            if not 1 <= count <= 123 or nbytes != 2 * count or len(data) != 5 + nbytes:
                return bytes((fc | 0x80, 3))
            values = [(data[5 + 2 * i] << 8) | data[6 + 2 * i] for i in range(count)]
            err = self._write(reg, values)
            if err:
                return bytes((fc | 0x80, err))
            return bytes((fc,)) + bytes(data[:4])
        return bytes((fc | 0x80, 1))

    def _setting_words(self, value):
        if self._m.words == 2:
            return _f32_words(value)
        return (int(value) & 0xFFFF,)

    def _setting_value(self, words):
        if self._m.words == 2:
            hi, lo = words
            return struct.unpack(">f", bytes((hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF)))[0]
        w = words[0]
        return w - 0x10000 if w & 0x8000 else w  # signed 16-bit

    def _write(self, reg, values):
        """Write holding registers; 0 or an exception code. Nothing changes on an error."""
        h = self._holding
        settings = self._m.settings
        n = self._m.words
        new = {}
        for i in range(len(values)):
            if reg + i not in h:
                return 2
            new[reg + i] = values[i]
        # every setting touched must stay a valid number in range
        for base in settings:
            if any(base + i in new for i in range(n)):
                v = self._setting_value([new.get(base + i, h[base + i]) for i in range(n)])
                name, low, high = settings[base]
                if not (low <= v <= high) or v != int(v):
                    return 3
        for r in new:
            h[r] = new[r]
        for base in settings:
            self.settings[settings[base][0]] = self._setting_value(
                [h[base + i] for i in range(n)])
        return 0

    def _input_words(self):
        s = self.source()
        volts = s.get("volts") or [0.0, 0.0, 0.0]
        amps = s.get("amps") or [0.0, 0.0, 0.0]
        n = self.phases
        q = self._q  # the same dict every time (the world runs inside the firmware's heap budget)
        powers = s.get("powers")  # signed phase powers (a grid meter), else volts * amps
        q["hz"], q["q"], q["pf"] = 50.0, 0.0, 1.0
        total = 0.0
        for i in range(3):
            v = float(volts[i]) if i < n else 0.0
            a = float(amps[i]) if i < n else 0.0
            pw = v * a
            if powers is not None:
                pw = float(powers[i]) if i < n else 0.0
            q["v%d" % (i + 1)] = v
            q["a%d" % (i + 1)] = a
            q["p%d" % (i + 1)] = pw
            q["va%d" % (i + 1)] = v * a
            q["q%d" % (i + 1)] = 0.0
            q["pf%d" % (i + 1)] = -1.0 if pw < 0 else 1.0
            total += pw
        for a, b in ((1, 2), (2, 3), (3, 1)):  # line-to-line: phases 120 degrees apart
            va = q["v%d" % a]
            vb = q["v%d" % b]
            q["v%d%d" % (a, b)] = math.sqrt(va * va + va * vb + vb * vb)
        p = s.get("power_w")
        q["p"] = float(p) if p is not None else total
        if n == 1 and p is not None:
            q["p1"] = float(p)
        if q["p"] < 0:
            q["pf"] = -1.0
        kwh = float(s.get("import_wh", 0.0)) / 1000.0
        exp = float(s.get("export_wh", 0.0)) / 1000.0
        q["import_kwh"] = kwh
        q["export_kwh"] = exp
        q["total_kwh"] = kwh + exp
        words = self._words  # the same dict every time: its values change, its keys do not
        m = self._m.measure
        for reg in m:
            name, factor = m[reg]
            hi, lo = _f32_words(q[name] * factor)
            words[reg] = hi
            words[reg + 1] = lo
        return words


class Bus:
    """An RS-485 line with several slaves, attached to a UART in the place of one slave: a
    request reaches every slave (each ignores frames for other addresses, as on a real line);
    pending() and take(n) give the reply bytes of whichever answered (with one slave, exactly
    that slave's). `uart_id` is the UART it hangs on: the slaves check its baud rate there."""

    def __init__(self, slaves=None, uart_id=None):
        self.slaves = []
        self.uart_id = uart_id
        for s in slaves or ():
            self.add(s)

    def add(self, slave):
        if self.uart_id is not None:
            slave.uart_id = self.uart_id
        self.slaves.append(slave)
        return slave

    def feed(self, data):
        for s in self.slaves:
            s.feed(data)

    def pending(self):
        n = 0
        for s in self.slaves:
            n += s.pending()
        return n

    def take(self, n):
        out = None
        for s in self.slaves:
            if s.pending():
                got = s.take(n if out is None else n - len(out))
                out = got if out is None else out + got
                if len(out) >= n:
                    break
        return b"" if out is None else out
