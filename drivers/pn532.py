"""NXP PN532 NFC controller over I2C (address 0x24): ISO/IEC 14443 A card UIDs (NFCID1) of 4, 7
and 10 bytes, without ever waiting for the chip.

    chip = Pn532(i2c, address=0x24)   # sends GetFirmwareVersion; ReaderError if nobody answers
    n = chip.read(now_ms)             # > 0: chip.uid[0:n]; 0: no card; -1: error; -2: busy

Frames (PN532 user manual, 6.2): host to PN532 00 00 FF LEN LCS D4 CMD DATA.. DCS 00 with
LEN = bytes of TFI..DATA, LCS = -LEN, DCS = -(D4 + CMD + DATA..) (mod 256); the PN532 answers
first an ACK frame 00 00 FF 00 FF 00, then the response 00 00 FF LEN LCS D5 CMD+1 DATA.. DCS 00.
Over I2C every read starts with a status byte: bit 0 set (0x01) when a frame is ready. read()
looks at that byte (a 1-byte read) and only reads the frame once it is ready: it never sleeps, so
an exchange spans polls when the chip is slower than the caller (ACK_TIMEOUT_MS 250 ms and
RESPONSE_TIMEOUT_MS 1000 ms allow for a poll every ~100 ms). A poll does at most a few short
I2C transfers (the longest reads RX_LEN = 64 bytes, 1.6 ms at 400 kHz; MAX_STEPS at most, which
only an instantly ready chip would reach).

Sequence: GetFirmwareVersion (0x02, IC must be 0x32), SAMConfiguration (0x14: normal mode),
RFConfiguration (0x32, item 5 MaxRetries: passive activation tried twice, so the chip answers
"no card" at once instead of waiting for one), then InListPassiveTarget (0x4A, 1 target,
106 kbps type A) over and over: the answer is NbTg, then Tg, SENS_RES (2 bytes), SEL_RES,
NFCIDLength and NFCID (then the ATS for ISO-DEP cards, not used). After each answer the next
command is sent at once, so the chip works between polls.

Failures end the exchange, return ERROR and are counted in `errors`:
    checksum     LCS or DCS wrong (the frame is dropped; the command is sent again next poll)
    nack         a NACK frame (00 00 FF FF 00 00) where the ACK should be
    error_frame  the PN532's syntax-error frame (00 00 FF 01 FF 7F 81 00)
    protocol     anything else that does not fit: a bad preamble, the wrong response code, a
                 frame too long, an NFCID length other than 4, 7 or 10, an IC other than 0x32
    timeout      no ACK or response in time: the driver sends an ACK (abort) and starts over
    no_answer    the I2C transfer itself failed (the chip does not acknowledge its address)
After timeout or no_answer the set-up is run again, at most every RETRY_MS (1 s).
Buffers are preallocated; a poll allocates nothing.
"""
from drivers.reader import BUSY, ERROR, MAX_UID, NONE, ReaderError, ticks_add, ticks_diff

ADDRESS = 0x24
ERROR_KINDS = ("checksum", "nack", "error_frame", "protocol", "timeout", "no_answer")
ACK_TIMEOUT_MS = 250
RESPONSE_TIMEOUT_MS = 1000
RETRY_MS = 1000
RX_LEN = 64          # status byte + the longest frame read (NFCID 10 + an ATS of 30 fit)
SETUP_RX_LEN = 16    # status byte + the set-up commands' answers (GetFirmwareVersion: 13)
MAX_STEPS = 12       # transfers in one poll at most (the whole set-up with an instant chip)
IC_PN532 = 0x32

TFI_HOST = 0xD4
TFI_PN532 = 0xD5
GET_FIRMWARE_VERSION = 0x02
SAM_CONFIGURATION = 0x14
RF_CONFIGURATION = 0x32
IN_LIST_PASSIVE_TARGET = 0x4A

ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
NACK_FRAME = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"

# the commands in order; the last one is repeated
_COMMANDS = (
    (GET_FIRMWARE_VERSION,),
    (SAM_CONFIGURATION, 0x01, 0x14, 0x01),         # normal mode, 1 s virtual card timeout, IRQ
    (RF_CONFIGURATION, 0x05, 0xFF, 0x01, 0x01),    # MaxRetries: ATR 0xFF, PSL 1, passive 1
    (IN_LIST_PASSIVE_TARGET, 0x01, 0x00),          # 1 target, 106 kbps type A
)
_LIST = 3

_SEND = 0        # nothing in flight: send the current command
_WAIT_ACK = 1
_WAIT_RESPONSE = 2
_AGAIN = -3      # a step finished: go on in the same poll


def frame(data):
    """An information frame host -> PN532 carrying TFI D4 and `data` (command + parameters)."""
    n = len(data) + 1
    out = bytearray(n + 7)
    out[2] = 0xFF
    out[3] = n
    out[4] = (-n) & 0xFF
    out[5] = TFI_HOST
    s = TFI_HOST
    for i in range(len(data)):
        out[6 + i] = data[i]
        s += data[i]
    out[6 + len(data)] = (-s) & 0xFF
    return bytes(out)


def _starts(buf, off, pattern):
    for i in range(len(pattern)):
        if buf[off + i] != pattern[i]:
            return False
    return True


class Pn532:
    def __init__(self, i2c, address=ADDRESS):
        self._i2c = i2c
        self.address = address
        self.uid = bytearray(MAX_UID)
        self.atqa = 0
        self.sak = 0
        self.firmware = None      # (version, revision) once GetFirmwareVersion answered
        self.errors = {}
        for k in ERROR_KINDS:
            self.errors[k] = 0
        self.last_error = None
        self._frames = tuple(frame(c) for c in _COMMANDS)
        self._status = bytearray(1)
        self._ack = bytearray(7)
        self._rx = bytearray(RX_LEN)
        self._rx_setup = memoryview(self._rx)[:SETUP_RX_LEN]   # made once: no slice per read
        self._step = 0
        self._state = _SEND
        self._t0 = None           # when the exchange in flight started (None: at the next poll)
        self._retry_at = None
        # the chip must acknowledge its address; the first transfer after power-up may wake it
        for attempt in range(2):
            try:
                i2c.writeto(address, self._frames[0])
                self._state = _WAIT_ACK
                return
            except OSError:
                pass
        raise ReaderError("pn532: no answer at I2C address 0x%02X: check SDA, SCL, the supply "
                          "and that the board's mode switches select I2C" % address)

    def _fail(self, kind, now_ms, restart):
        self.errors[kind] += 1
        self.last_error = kind
        self._state = _SEND
        if restart:
            self._step = 0
            self._retry_at = ticks_add(now_ms, RETRY_MS)
        return ERROR

    def read(self, now_ms):
        """Step the exchanges: UID length (uid[0:n]), NONE, ERROR (counted) or BUSY."""
        for _ in range(MAX_STEPS):
            r = self._step_once(now_ms)
            if r != _AGAIN:
                return r
        return BUSY

    def _send(self, now_ms):
        if self._retry_at is not None:
            if ticks_diff(now_ms, self._retry_at) < 0:
                return BUSY
            self._retry_at = None
        try:
            self._i2c.writeto(self.address, self._frames[self._step])
        except OSError:
            return self._fail("no_answer", now_ms, True)
        self._state = _WAIT_ACK
        self._t0 = now_ms
        return _AGAIN

    def _step_once(self, now_ms):
        state = self._state
        if state == _SEND:
            return self._send(now_ms)
        if self._t0 is None:
            self._t0 = now_ms
        i2c = self._i2c
        addr = self.address
        try:
            i2c.readfrom_into(addr, self._status)
        except OSError:
            return self._fail("no_answer", now_ms, True)
        if not self._status[0] & 0x01:
            limit = ACK_TIMEOUT_MS if state == _WAIT_ACK else RESPONSE_TIMEOUT_MS
            if ticks_diff(now_ms, self._t0) >= limit:
                try:
                    i2c.writeto(addr, ACK_FRAME)   # an ACK from the host aborts the command
                except OSError:
                    pass
                return self._fail("timeout", now_ms, True)
            return BUSY
        if state == _WAIT_ACK:
            a = self._ack
            try:
                i2c.readfrom_into(addr, a)
            except OSError:
                return self._fail("no_answer", now_ms, True)
            if _starts(a, 1, ACK_FRAME):
                self._state = _WAIT_RESPONSE
                self._t0 = now_ms
                return _AGAIN
            if _starts(a, 1, NACK_FRAME):
                return self._fail("nack", now_ms, False)
            if _starts(a, 1, ERROR_FRAME[:6]):
                return self._fail("error_frame", now_ms, False)
            return self._fail("protocol", now_ms, False)
        try:
            i2c.readfrom_into(addr, self._rx if self._step == _LIST else self._rx_setup)
        except OSError:
            return self._fail("no_answer", now_ms, True)
        return self._response(self._rx, now_ms)

    def _response(self, b, now_ms):
        # b[0] is the status byte; the frame starts at b[1]
        if b[1] != 0 or b[2] != 0 or b[3] != 0xFF:
            return self._fail("protocol", now_ms, False)
        n = b[4]
        if n == 0xFF and b[5] == 0xFF:
            return self._fail("protocol", now_ms, False)       # extended frame: not expected
        if (n + b[5]) & 0xFF:
            return self._fail("checksum", now_ms, False)       # LCS
        if n == 1 and b[6] == 0x7F:
            return self._fail("error_frame", now_ms, False)
        if n < 2 or 7 + n > (len(b) if self._step == _LIST else SETUP_RX_LEN):
            return self._fail("protocol", now_ms, False)       # too short, or extended / long
        s = 0
        for i in range(6, 7 + n):
            s += b[i]
        if s & 0xFF:
            return self._fail("checksum", now_ms, False)       # DCS
        cmd = _COMMANDS[self._step][0]
        if b[6] != TFI_PN532 or b[7] != cmd + 1:
            return self._fail("protocol", now_ms, False)
        end = 6 + n                                             # data: b[8:end]
        if self._step < _LIST:
            if cmd == GET_FIRMWARE_VERSION:
                if end - 8 < 4 or b[8] != IC_PN532:
                    return self._fail("protocol", now_ms, False)
                self.firmware = (b[9], b[10])
            self._step += 1
            self._state = _SEND
            return _AGAIN
        # InListPassiveTarget: NbTg [Tg SENS_RES(2) SEL_RES NFCIDLength NFCID ...]
        if end - 8 < 1:
            return self._fail("protocol", now_ms, False)
        if b[8] == 0:
            self._send(now_ms)
            return NONE
        idlen = b[13] if end > 13 else 0
        if end - 8 < 6 or idlen not in (4, 7, 10) or 14 + idlen > end:
            return self._fail("protocol", now_ms, False)
        self.atqa = (b[10] << 8) | b[11]
        self.sak = b[12]
        uid = self.uid
        for i in range(idlen):
            uid[i] = b[14 + i]
        self._send(now_ms)   # the next look starts now; its answer is read at the next poll
        return idlen
