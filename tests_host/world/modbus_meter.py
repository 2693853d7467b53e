"""A simulated Eastron meter (SDM630, SDM72D, SDM120, SDM230): a byte-exact Modbus RTU slave.

    slave = MeterSlave("sdm630", 1, source, 9600)
    machine.hw_attach_uart(2, slave)     # the fake UART calls feed(bytes), take(n), pending()

source() -> {"volts": [v1, v2, v3], "amps": [a1, a2, a3], "import_wh": float} (optional
"power_w": total watts; else the sum of volts * amps, unity power factor). 1-phase models use
phase 1 only.

Registers come from the Eastron protocol documents and are written out here on their own, not
taken from drivers/meter_models.py, so a wrong register in the driver's data shows up as a wrong
reading in tests. Input registers (function 04) hold float32 values, big-endian, high word
first, two registers each; a read that touches a register the model does not document gets
exception 02. Holding registers (03 read, 06/16 write) hold the settings named in the facts file
(parity/stop 0x0012, address 0x0014, baud code 0x001C), also float32; a write is stored but, as on
the meter, a new address or baud rate only takes effect after a power cycle (not simulated).

Answers: exception 01 for a function other than 03/04/06/16, 02 for a register outside the map,
03 for a bad count/byte count or a setting out of range. Frames for other addresses and frames
with a bad CRC get no answer; address 0 (broadcast) writes are carried out silently.

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
import struct

try:
    import machine
except ImportError:  # pragma: no cover - always present with the fakes on the path
    machine = None

# -- register maps: param register -> quantity (each spans the register and the next one)
# Eastron SDM630 / SDM72D-M Modbus protocol, input registers 3xxxx (register = 3xxxx - 30001)
_INPUT_3P = {
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
}
# Eastron SDM120 / SDM230 Modbus protocol, input registers
_INPUT_1P = {
    0x0000: "v1",
    0x0006: "a1",
    0x000C: "p1",
    0x0012: "va1",
    0x001E: "pf1",
    0x0046: "hz",
    0x0048: "import_kwh",
    0x004A: "export_kwh",
    0x0156: "total_kwh",
}
# holding registers 4xxxx: setting -> (register, lowest, highest)
_HOLDING = {
    0x0012: ("parity", 0, 3),     # 0 = 1 stop no parity, 1 = even, 2 = odd, 3 = 2 stop no parity
    0x0014: ("address", 1, 247),
    0x001C: ("baud", 0, 5),       # 0 = 2400, 1 = 4800, 2 = 9600, 3 = 19200, 4 = 38400, 5 = 1200
}
_BAUD_CODES = {2400: 0, 4800: 1, 9600: 2, 19200: 3, 38400: 4, 1200: 5}

MODELS = {
    "sdm630": (3, _INPUT_3P, 9600),
    "sdm72d": (3, _INPUT_3P, 9600),
    "sdm120": (1, _INPUT_1P, 2400),
    "sdm230": (1, _INPUT_1P, 2400),
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
        self.phases, self._input, default_baud = MODELS[model]
        self.address = address
        self.source = source
        self.baudrate = baudrate or default_baud
        self.response_ms = response_ms
        self.uart_id = None         # found from the fake's attachment table when None
        self._now_us = now_us       # time source override (fn() -> microseconds)
        # faults
        self.dead = False
        self.noise = 0
        self.late_ms = 0
        self.wrong_address = False
        self.garbage_on_mismatch = False
        # settings (holding registers), float values
        self.settings = {"parity": 0.0, "address": float(address),
                         "baud": float(_BAUD_CODES.get(self.baudrate, 2))}
        self._holding = {}
        for reg in _HOLDING:
            hi, lo = _f32_words(self.settings[_HOLDING[reg][0]])
            self._holding[reg] = hi
            self._holding[reg + 1] = lo
        # bus state
        self._inbuf = bytearray()
        self._fifo = bytearray()    # bytes already on the wire, waiting for the master's read
        self._reply = b""           # bytes not sent yet
        self._reply_at = 0          # us when the first byte of _reply is complete
        self._sent = 0              # bytes of _reply moved to _fifo
        self._noise_acc = 0.0
        self._noise_pos = 0
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
            words = self._input_words() if fc == 4 else self._holding
            out = bytearray((fc, 2 * count))
            for reg in range(start, start + count):
                w = words.get(reg)
                if w is None:
                    return bytes((fc | 0x80, 2))
                out.append(w >> 8)
                out.append(w & 0xFF)
            return bytes(out)
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

    def _write(self, reg, values):
        """Write holding registers; 0 or an exception code. Nothing changes on an error."""
        h = self._holding
        new = {}
        for i in range(len(values)):
            if reg + i not in h:
                return 2
            new[reg + i] = values[i]
        # every setting touched must stay a valid float in range
        for base in _HOLDING:
            if base in new or base + 1 in new:
                hi = new.get(base, h[base])
                lo = new.get(base + 1, h[base + 1])
                v = struct.unpack(">f", bytes((hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF)))[0]
                name, low, high = _HOLDING[base]
                if not (low <= v <= high) or v != int(v):
                    return 3
        for r in new:
            h[r] = new[r]
        for base in _HOLDING:
            hi, lo = h[base], h[base + 1]
            self.settings[_HOLDING[base][0]] = struct.unpack(
                ">f", bytes((hi >> 8, hi & 0xFF, lo >> 8, lo & 0xFF)))[0]
        return 0

    def _input_words(self):
        s = self.source()
        volts = s.get("volts") or [0.0, 0.0, 0.0]
        amps = s.get("amps") or [0.0, 0.0, 0.0]
        n = self.phases
        q = {"hz": 50.0, "export_kwh": 0.0}
        total = 0.0
        for i in range(3):
            v = float(volts[i]) if i < n else 0.0
            a = float(amps[i]) if i < n else 0.0
            q["v%d" % (i + 1)] = v
            q["a%d" % (i + 1)] = a
            q["p%d" % (i + 1)] = v * a
            q["va%d" % (i + 1)] = v * a
            q["pf%d" % (i + 1)] = 1.0
            total += v * a
        p = s.get("power_w")
        q["p"] = float(p) if p is not None else total
        if n == 1 and p is not None:
            q["p1"] = float(p)
        kwh = float(s.get("import_wh", 0.0)) / 1000.0
        q["import_kwh"] = kwh
        q["total_kwh"] = kwh
        words = {}
        m = self._input
        for reg in m:
            hi, lo = _f32_words(q[m[reg]])
            words[reg] = hi
            words[reg + 1] = lo
        return words
