"""Modbus RTU master: a small state machine stepped from the control tick.

Usage (nothing here blocks or sleeps; every time comes from the clock handed in):

    req = Request(1, READ_INPUT, 0x0000, 12)   # built once: the frame and its CRC are precomputed
    master.start(req)
    ...every tick: code = master.poll()
        None       -> still working (waiting for the bus, sending, waiting for the reply)
        OK         -> master.register(i) / master.float32_scaled(i, odd, shift) read the reply
        an error   -> TIMEOUT, CRC, EXCEPTION (master.exception_code), WRONG_ADDRESS
                      (master.answered_by), WRONG_FUNCTION (master.answered_function), BAD_REPLY

Frames are separated by at least 3.5 character times of silence (Modbus over serial line V1.02,
2.5.1.1: 11-bit characters, fixed 1.75 ms above 19200 baud). Failed attempts (no answer, bad CRC,
wrong address, wrong function, inconsistent reply) are retried `retries` times; an exception reply
is a real answer and is not retried. Every failed attempt is counted in `errors` by kind. A reply
is only believed after its CRC checks out.

Memory: the request frames live in their Request objects, the reply lands in a preallocated
256-byte buffer; after construction a whole transaction allocates nothing, so the master can run
in the control loop. Float32 register values are decoded straight into scaled integers
(float32_scaled) without making a float.
"""
from array import array

READ_HOLDING = 3
READ_INPUT = 4
WRITE_SINGLE = 6
WRITE_MULTIPLE = 16

# poll() results (ints, so a poll allocates nothing)
OK = 0
TIMEOUT = 1
CRC = 2
EXCEPTION = 3
WRONG_ADDRESS = 4
WRONG_FUNCTION = 5
BAD_REPLY = 6

# index = result code; the keys of Master.errors
KINDS = ("ok", "timeout", "crc", "exception", "wrong_address", "wrong_function", "bad_reply")

EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "slave device failure",
    5: "acknowledge",
    6: "slave device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}

MAX_ADU = 256  # Modbus RTU frame limit: address + 253-byte PDU + CRC

_IDLE = 0
_WAIT_BUS = 1
_SENDING = 2
_WAIT_REPLY = 3


def _make_table():
    t = array("H", bytes(512))
    for i in range(256):
        c = i
        for _ in range(8):
            if c & 1:
                c = (c >> 1) ^ 0xA001
            else:
                c >>= 1
        t[i] = c
    return t


_CRC_TABLE = _make_table()


def crc16(buf, n):
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF) of buf[0:n]; sent low byte first."""
    crc = 0xFFFF
    t = _CRC_TABLE
    for i in range(n):
        crc = (crc >> 8) ^ t[(crc ^ buf[i]) & 0xFF]
    return crc


def scale_parts(scale):
    """Split an integer scale into (odd, shift) with scale == odd << shift (for float32_scaled)."""
    scale = int(scale)
    if scale < 1:
        raise ValueError("scale must be a positive integer, got %r" % (scale,))
    shift = 0
    while not scale & 1:
        scale >>= 1
        shift += 1
    if scale > 127:  # keeps float32_scaled within small ints
        raise ValueError("scale's odd part must be at most 127, got %d" % scale)
    return scale, shift


SATURATED = 0x3FFFFFFF  # largest small int on a 32-bit MicroPython port


def float32_finite(hi):
    """False when the float32 whose high word is `hi` is NaN or an infinity (all exponent bits
    set): a meter register that holds one is no reading (drivers/meter.py refuses the refresh)."""
    return hi & 0x7F80 != 0x7F80


def float32_scaled(hi, lo, odd, shift):
    """round(float32 * (odd << shift)) from its two big-endian register words, as an int.

    Pure small-integer arithmetic (every intermediate stays below 2**30), so it allocates nothing
    even on the 32-bit ESP32 where bigger ints live on the heap. Rounds half away from zero.
    Zero and denormals give 0; infinities, NaN and results beyond +-SATURATED give +-SATURATED.
    """
    e = (hi >> 7) & 0xFF
    if e == 0:
        return 0
    if e == 0xFF:
        v = SATURATED
    else:
        m = ((hi & 0x7F) << 16) | lo | 0x800000  # 24-bit mantissa: value = m * 2**(e - 150)
        s = 150 - e - shift  # value * scale == m * odd / 2**s
        if s <= 0:
            if s < -6 or m > (SATURATED >> -s) // odd:
                v = SATURATED
            else:
                v = (m * odd) << -s
        elif s > 23:  # below `odd` units: m * odd in two 12-bit halves, exact rounding
            if s > 40:  # m * odd < 2**31: under half a unit
                return 0
            c = (m >> 12) * odd + (((m & 0xFFF) * odd) >> 12)  # m * odd >> 12, < 2**20
            v = (c + (1 << (s - 13))) >> (s - 12)
        else:
            q = m >> s
            if q >= SATURATED // odd:
                v = SATURATED
            else:
                r = m & ((1 << s) - 1)  # r * odd < 2**23 * 127 < 2**30
                v = q * odd + ((r * odd + (1 << (s - 1))) >> s)
    if hi & 0x8000:
        return -v
    return v


class Request:
    """One Modbus request, encoded once (frame + CRC) so sending it allocates nothing.

    Request(address, READ_HOLDING or READ_INPUT, register, count)
    Request(address, WRITE_SINGLE, register, values=value)         (value: int 0..65535)
    Request(address, WRITE_MULTIPLE, register, values=[words...])  (count = len(values))
    """

    def __init__(self, address, function, register, count=1, values=None):
        if not 1 <= address <= 247:
            raise ValueError("modbus address must be 1..247, got %r" % (address,))
        if not 0 <= register <= 0xFFFF:
            raise ValueError("modbus register must be 0..65535, got %r" % (register,))
        self.address = address
        self.function = function
        self.register = register
        if function == READ_HOLDING or function == READ_INPUT:
            if not 1 <= count <= 125:
                raise ValueError("modbus read count must be 1..125, got %r" % (count,))
            n = 8
            self.reply_len = 5 + 2 * count
        elif function == WRITE_SINGLE:
            if values is None:
                raise ValueError("function 6 needs values=<register value>")
            if isinstance(values, (list, tuple)):
                if len(values) != 1:
                    raise ValueError("function 6 writes exactly one register")
                values = values[0]
            values = [values]
            count = 1
            n = 8
            self.reply_len = 8
        elif function == WRITE_MULTIPLE:
            if values is None or not 1 <= len(values) <= 123:
                raise ValueError("function 16 writes 1..123 registers")
            count = len(values)
            n = 9 + 2 * count
            self.reply_len = 8
        else:
            raise ValueError("modbus function %r not supported (3, 4, 6, 16)" % (function,))
        if register + count > 0x10000:
            raise ValueError("modbus registers beyond 65535")
        self.count = count
        self.length = n
        f = bytearray(n)
        f[0] = address
        f[1] = function
        f[2] = register >> 8
        f[3] = register & 0xFF
        self.frame = f
        if values is None:
            f[4] = count >> 8
            f[5] = count & 0xFF
            self._seal()
        else:
            self.set_values(values)

    def set_values(self, values):
        """Change the words of a write request in place (same count); allocates nothing."""
        f = self.frame
        if self.function == WRITE_SINGLE:
            v = values[0] if isinstance(values, (list, tuple)) else values
            self._check_word(v)
            f[4] = v >> 8
            f[5] = v & 0xFF
        elif self.function == WRITE_MULTIPLE:
            if len(values) != self.count:
                raise ValueError("expected %d values, got %d" % (self.count, len(values)))
            f[4] = 0
            f[5] = self.count
            f[6] = 2 * self.count
            for i in range(self.count):
                v = values[i]
                self._check_word(v)
                f[7 + 2 * i] = v >> 8
                f[8 + 2 * i] = v & 0xFF
        else:
            raise ValueError("only write requests carry values")
        self._seal()

    @staticmethod
    def _check_word(v):
        if not 0 <= v <= 0xFFFF:
            raise ValueError("register value must be 0..65535, got %r" % (v,))

    def _seal(self):
        f = self.frame
        n = self.length - 2
        c = crc16(f, n)
        f[n] = c & 0xFF
        f[n + 1] = c >> 8


_NO_REQUEST = Request(1, READ_INPUT, 0, 1)  # placeholder before the first start()


class Master:
    """Modbus RTU master on one UART (stream with any/readinto/write).

    de: an optional Pin-like object (value(0/1)) for the RS-485 driver enable; it is high from
    just before the request is written until the UART has shifted the last bit out (uart.txdone()
    where the port has it, else the computed frame time), low otherwise. With a 10 ms tick the
    release can come up to one tick late: a slave answering faster than that needs the firmware
    to poll() more often while `busy()`, or a transceiver with automatic direction control.
    """

    def __init__(self, uart, clock, baudrate, de=None, timeout_ms=300, retries=2, char_bits=10):
        if baudrate <= 0:
            raise ValueError("baudrate must be positive")
        self.uart = uart
        self.clock = clock
        self.baudrate = baudrate
        self.de = de
        self.timeout_ms = timeout_ms
        self.retries = retries
        self._char_bits = char_bits
        # 3.5 character times of 11 bits, whole ms rounded up, +1 for the ms tick's granularity
        if baudrate > 19200:
            self.silence_ms = 3  # 1.75 ms
        else:
            self.silence_ms = (38500 + baudrate - 1) // baudrate + 1
        self._has_txdone = hasattr(uart, "txdone")
        self._rx = bytearray(MAX_ADU)
        self._scratch = bytearray(64)
        self._pos = 0
        self._state = _IDLE
        self._req = _NO_REQUEST
        self._attempt = 0
        self._tx_end = 0
        self._deadline = 0
        self._idle_since = clock.ticks_ms()
        self.errors = {}
        for k in KINDS[1:]:
            self.errors[k] = 0
        self.sent = 0            # frames written (attempts)
        self.result = None       # last final result code
        self.exception_code = 0  # of the last EXCEPTION reply
        self.answered_by = 0     # address seen in the last WRONG_ADDRESS reply
        self.answered_function = 0  # function seen in the last WRONG_FUNCTION reply
        self.reply_len = 0       # bytes of the last good reply (in self._rx)
        if de is not None:
            de.value(0)

    # --- timing helpers -------------------------------------------------------------------
    def frame_ms(self, nbytes):
        """Time on the wire for nbytes, whole ms rounded up."""
        return (nbytes * self._char_bits * 1000 + self.baudrate - 1) // self.baudrate

    def busy(self):
        return self._state != _IDLE

    # --- transaction ----------------------------------------------------------------------
    def start(self, request):
        """Queue one request; poll() does the work. Raises if a transaction is in progress."""
        if self._state != _IDLE:
            raise ValueError("modbus master busy: one request at a time")
        self._req = request
        self._attempt = 0
        self.result = None
        self._state = _WAIT_BUS

    def poll(self):
        """Step the transaction. None while in progress; else OK or an error code (see KINDS)."""
        clock = self.clock
        now = clock.ticks_ms()
        st = self._state
        if st == _IDLE:
            self._drain(now)
            return None
        if st == _WAIT_BUS:
            self._drain(now)
            quiet = clock.ticks_diff(now, self._idle_since)
            if 0 <= quiet < self.silence_ms:  # (negative: wrapped, idle for ages)
                return None
            self._send(now)
            st = _SENDING
        if st == _SENDING:
            if self._has_txdone:
                if not self.uart.txdone():
                    return None
            elif clock.ticks_diff(now, self._tx_end) < 0:
                return None
            if self.de is not None:
                self.de.value(0)
            self._idle_since = now
            self._state = _WAIT_REPLY
        # waiting for the reply
        if self._receive(now):
            code = self._check()
        else:
            code = None
        if code is None:
            if clock.ticks_diff(now, self._deadline) < 0:
                return None
            code = CRC if self._pos else TIMEOUT  # bytes that never made a frame: garbled
        if code != OK:
            self.errors[KINDS[code]] += 1
            if code != EXCEPTION and self._attempt < self.retries:
                self._attempt += 1
                self._state = _WAIT_BUS
                return None
        self._state = _IDLE
        self.result = code
        return code

    def _send(self, now):
        req = self._req
        self._pos = 0
        if self.de is not None:
            self.de.value(1)
        self.uart.write(req.frame)
        self.sent += 1
        tx = self.frame_ms(req.length) + 1
        clock = self.clock
        self._tx_end = clock.ticks_add(now, tx)
        self._deadline = clock.ticks_add(now, tx + self.timeout_ms + self.frame_ms(req.reply_len))
        self._state = _SENDING

    def _drain(self, now):
        """Discard stray bytes between transactions; they restart the silence."""
        uart = self.uart
        n = uart.any()
        while n > 0:
            got = uart.readinto(self._scratch, n if n < 64 else 64)
            if not got:
                break
            self._idle_since = now
            n = uart.any()

    def _receive(self, now):
        """Append what the UART holds to the reply buffer. True if anything new arrived."""
        uart = self.uart
        n = uart.any()
        if n <= 0:
            return False
        rx = self._rx
        scratch = self._scratch
        while n > 0:
            pos = self._pos
            if pos == 0 and n <= MAX_ADU:
                got = uart.readinto(rx, n)
                if not got:
                    break
                self._pos = got
            else:
                got = uart.readinto(scratch, n if n < 64 else 64)
                if not got:
                    break
                room = MAX_ADU - pos
                if got < room:
                    room = got
                for i in range(room):
                    rx[pos + i] = scratch[i]
                self._pos = pos + room
            n = uart.any()
        self._idle_since = now
        return True

    def _check(self):
        """Judge the bytes received so far: None (incomplete) or a result code."""
        pos = self._pos
        if pos < 2:
            return None
        rx = self._rx
        req = self._req
        fc = rx[1]
        if fc & 0x80:
            need = 5
        elif fc == READ_HOLDING or fc == READ_INPUT:
            if pos < 3:
                return None
            need = 5 + rx[2]
        elif fc == WRITE_SINGLE or fc == WRITE_MULTIPLE:
            need = 8
        else:
            need = req.reply_len
        if pos < need:
            return None
        if crc16(rx, need - 2) != rx[need - 2] | (rx[need - 1] << 8):
            return CRC
        if rx[0] != req.address:
            self.answered_by = rx[0]
            return WRONG_ADDRESS
        if fc & 0x7F != req.function:
            self.answered_function = fc & 0x7F
            return WRONG_FUNCTION
        if fc & 0x80:
            self.exception_code = rx[2]
            return EXCEPTION
        if fc == READ_HOLDING or fc == READ_INPUT:
            if rx[2] != 2 * req.count:
                return BAD_REPLY
        else:  # writes echo the register and the value (06) or the count (16)
            f = req.frame
            if rx[2] != f[2] or rx[3] != f[3] or rx[4] != f[4] or rx[5] != f[5]:
                return BAD_REPLY
        self.reply_len = need
        return OK

    # --- reading the reply (after OK) -----------------------------------------------------
    def register(self, i):
        """The i-th 16-bit register of the last read reply."""
        rx = self._rx
        return (rx[3 + 2 * i] << 8) | rx[4 + 2 * i]

    def float32_scaled(self, i, odd, shift):
        """Registers i, i+1 of the last read reply as a big-endian float32, times odd << shift,
        rounded to an int (see float32_scaled)."""
        rx = self._rx
        j = 3 + 2 * i
        return float32_scaled((rx[j] << 8) | rx[j + 1], (rx[j + 2] << 8) | rx[j + 3], odd, shift)

    def describe(self, code):
        """A sentence for a result code of the last transaction (allocates; not for every tick)."""
        req = self._req
        addr = req.address
        if code == OK:
            return "ok"
        if code == TIMEOUT:
            return ("no answer from address %d at %d baud: check the meter's Modbus address and baud "
                    "rate, and the A/B wiring" % (addr, self.baudrate))
        if code == CRC:
            return "CRC errors: check baud rate and wiring (address %d, %d baud)" % (
                addr, self.baudrate)
        if code == WRONG_ADDRESS:
            return "answers from address %d, expected %d" % (self.answered_by, addr)
        if code == WRONG_FUNCTION:
            return "address %d answered function %d to a function %d request" % (
                addr, self.answered_function, req.function)
        if code == EXCEPTION:
            return "address %d answered exception %d (%s) to function %d, register 0x%04X" % (
                addr, self.exception_code,
                EXCEPTION_NAMES.get(self.exception_code, "unknown"),
                req.function, req.register)
        if code == BAD_REPLY:
            return "address %d sent an inconsistent reply to function %d, register 0x%04X" % (
                addr, req.function, req.register)
        return "modbus error %r" % (code,)
