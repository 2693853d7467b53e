"""Simulated cards on the board's card reader, at byte level, behind the fake `machine`.

    dev = make_device(profile["reader"])   # Mfrc522Chip, Pn532Chip or WiegandSender
    dev.install()                          # attach to the fakes (again after machine.hw_reset)
    dev.present(uid)                       # a card (bytes) is held on the reader
    dev.remove()                           # ... and taken away
    dev.break_next(kind)                   # the next read goes wrong (dev.KINDS lists the kinds)
    dev.advance(now_ms)                    # world time (the Wiegand pulses, the PN532's latency)
    dev.power(on)                          # the reader loses / gets its supply

Picc: an ISO/IEC 14443-3 type A card (UID of 4, 7 or 10 bytes): IDLE -REQA/WUPA-> READY
-ANTICOLLISION/SELECT per cascade level (cascade tag 0x88, BCC, SAK bit 0x04, CRC_A)-> ACTIVE
-HLTA-> HALT (only WUPA wakes it; taking it out of the field resets it to IDLE). A frame it does
not expect sends it back to IDLE (to HALT when it was woken from there), as the standard says.

Mfrc522Chip: the NXP MFRC522 on SPI bus `bus` (hw_attach_spi), chip select `cs` (and optional
reset `rst`, low = powered down) watched with hw_on_output. Every chip-select-low frame starts
with an address byte: (reg << 1) & 0x7E writes the following bytes into that register;
with 0x80 the register named by each byte is read out on the next byte. Modelled: CommandReg
(Idle, CalcCRC with ModeReg's CRC preset, Transceive, SoftReset, PowerDown bit), ComIrqReg and
DivIrqReg (Set1/Set2 semantics), ErrorReg, FIFODataReg / FIFOLevelReg (64 bytes, FlushBuffer,
BufferOvfl), BitFramingReg (TxLastBits, StartSend), ControlReg (RxLastBits), CollReg (CollPos),
TxModeReg / RxModeReg CRC enables, TxControlReg (antenna: the cards have power only while TX1
and TX2 are on), TModeReg TAuto (without it a mute field never raises TimerIRq), VersionReg.
A Transceive sends the FIFO to every card in the field at once: no answer -> TimerIRq; answers
-> FIFO, RxIRq, and where the answers differ the first differing bit is a collision (CollErr,
ErrIRq, CollReg). `exchanges` logs (sent bytes, sent bits, answer bytes or None), the last
`log_size` (4: the device lives in the simulator's heap budget).
Faults (one read each): crc (SAK's CRC_A wrong; CRCErr if RxCRCEn), bcc (anticollision BCC
wrong), collision (a second card with another UID answers too), parity (ParityErr on the
anticollision answer), removed (the card leaves right after answering REQA and is back for the
next REQA). `dead` = the chip does not answer (MISO reads `dead_byte`, 0xFF).

Pn532Chip: the NXP PN532 on I2C bus `bus` (hw_attach_i2c) at `address`. Host frames
00 00 FF LEN LCS D4 CMD .. DCS 00 are checked (a bad one is ignored and counted in `bad_frames`);
the chip answers with an ACK frame, then the response frame D5 CMD+1 ..; each is readable
`latency_ms` of world time after the previous step; every read transaction starts with the
status byte (0x01 ready, else 0x00) and a read of more than that byte takes the frame. The
host's ACK aborts, its NACK asks for the last frame again. Commands: GetFirmwareVersion,
SAMConfiguration, RFConfiguration, InListPassiveTarget (106 kbps type A: the first card in the
field, none before SAMConfiguration); others get the syntax-error frame. Faults (the next
InListPassiveTarget): checksum (DCS), lcs (LCS), nack (NACK instead of ACK), error (error frame
instead of the response), noanswer (the command is ignored). `dead` = the chip does not
acknowledge its address.

WiegandSender: a Wiegand reader's D0 / D1 outputs (hw_set_input; idle high). present(uid) sends
one frame: 3 bytes -> Wiegand 26, 4 bytes -> Wiegand 34 (leading even, trailing odd parity), one
bit every `bit_ms` (2 ms) of world time, each a low pulse (its ~50 us collapse to an instant of
virtual time: the falling edge is what the board's interrupt sees). Faults (the next frame):
parity (the trailing parity bit flipped), bits (the last bit left out).
"""
import binascii

import machine

IDLE = "IDLE"
READY = "READY"
ACTIVE = "ACTIVE"
HALT = "HALT"

REQA = 0x26
WUPA = 0x52
SEL = (0x93, 0x95, 0x97)
CASCADE_TAG = 0x88
HLTA = (0x50, 0x00)

ISO_LENGTHS = (4, 7, 10)
ISO_KINDS = ("crc", "bcc", "collision", "parity", "removed")
PN532_KINDS = ("checksum", "lcs", "nack", "error", "noanswer")
WIEGAND_KINDS = ("parity", "bits")
KINDS = ISO_KINDS + PN532_KINDS + ("bits",)   # every kind some reader knows


def crc_a(data, preset=0x6363):
    """ISO/IEC 14443-3 CRC_A of a byte sequence (an int; sent low byte first)."""
    crc = preset
    for x in data:
        b = (x ^ crc) & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = ((crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)) & 0xFFFF
    return crc


def with_crc(data):
    c = crc_a(data)
    return bytes(data) + bytes((c & 0xFF, c >> 8))


def bcc(four):
    return four[0] ^ four[1] ^ four[2] ^ four[3]


def parse_uid(text, verb="card"):
    """Hex text -> bytes; ValueError naming the verb."""
    s = str(text)
    if not s or len(s) % 2:
        raise ValueError("%s: UID: expected an even number of hex digits, got %r" % (verb, s))
    try:
        return binascii.unhexlify(s)
    except ValueError:
        raise ValueError("%s: UID: expected hex digits, got %r" % (verb, s))


def _check_kind(kind, kinds, what):
    if kind not in kinds:
        raise ValueError("card-broken: %r does not apply to %s (expected one of %s)"
                         % (kind, what, ", ".join(kinds)))


# ---------------------------------------------------------------------------------------------
# the card


class Picc:
    """An ISO/IEC 14443 type A card."""

    def __init__(self, uid, sak=None):
        uid = bytes(uid)
        if len(uid) not in ISO_LENGTHS:
            raise ValueError("card: UID: an ISO 14443 card has 4, 7 or 10 bytes, got %d"
                             % len(uid))
        self.uid = uid
        n = len(uid)
        if n == 4:
            self.levels = [uid]
        elif n == 7:
            self.levels = [bytes((CASCADE_TAG,)) + uid[0:3], uid[3:7]]
        else:
            self.levels = [bytes((CASCADE_TAG,)) + uid[0:3], bytes((CASCADE_TAG,)) + uid[3:6],
                           uid[6:10]]
        self.atqa = bytes(({4: 0x04, 7: 0x44, 10: 0x84}[n], 0x00))   # UID size in bits 7..6
        self.sak = (0x08 if n == 4 else 0x00) if sak is None else sak
        self.state = IDLE
        self.level = 0
        self.from_halt = False

    def power_off(self):
        self.state = IDLE
        self.level = 0
        self.from_halt = False

    def _back(self):
        self.state = HALT if self.from_halt else IDLE
        return None

    def receive(self, data, nbits):
        """A frame from the reader: (answer bytes, answer bits) or None (silence)."""
        st = self.state
        if nbits == 7:
            cmd = data[0] & 0x7F
            if cmd == REQA and st == IDLE or cmd == WUPA and st in (IDLE, HALT):
                self.from_halt = st == HALT
                self.state = READY
                self.level = 0
                return self.atqa, 16
            if st in (READY, ACTIVE):
                return self._back()
            return None
        if st == READY and nbits % 8 == 0 and len(data) >= 2 and data[0] in SEL:
            lv = SEL.index(data[0])
            if lv != self.level:
                return self._back()
            cl = self.levels[lv]
            cl_bcc = cl + bytes((bcc(cl),))
            if data[1] == 0x20 and len(data) == 2:
                return cl_bcc, 40
            if data[1] == 0x70 and len(data) == 9:
                c = crc_a(data[0:7])
                if data[7] != c & 0xFF or data[8] != c >> 8:
                    return self._back()
                if bytes(data[2:7]) != cl_bcc:
                    return None                      # another card is selected: stay READY
                if lv < len(self.levels) - 1:
                    self.level = lv + 1
                    return with_crc(bytes((0x04,))), 24
                self.state = ACTIVE
                return with_crc(bytes((self.sak,))), 24
            return self._back()
        if st == ACTIVE and bytes(data) == with_crc(bytes(HLTA)):
            self.state = HALT
            self.from_halt = True
            return None
        if st in (READY, ACTIVE):
            return self._back()
        return None


# ---------------------------------------------------------------------------------------------
# MFRC522

_COMMAND = 0x01
_COM_IRQ = 0x04
_DIV_IRQ = 0x05
_ERROR = 0x06
_STATUS1 = 0x07
_STATUS2 = 0x08
_FIFO_DATA = 0x09
_FIFO_LEVEL = 0x0A
_CONTROL = 0x0C
_BIT_FRAMING = 0x0D
_COLL = 0x0E
_MODE = 0x11
_TX_MODE = 0x12
_RX_MODE = 0x13
_TX_CONTROL = 0x14
_CRC_H = 0x21
_CRC_L = 0x22
_T_MODE = 0x2A
_T_RELOAD_H = 0x2C
_T_RELOAD_L = 0x2D
_VERSION = 0x37
_READ_ONLY = (_ERROR, _STATUS1, _STATUS2, _CRC_H, _CRC_L, _VERSION)

_IDLE = 0x00
_CALC_CRC = 0x03
_TRANSCEIVE = 0x0C
_SOFT_RESET = 0x0F

_TX_IRQ = 0x40
_RX_IRQ = 0x20
_ERR_IRQ = 0x02
_TIMER_IRQ = 0x01
_CRC_IRQ = 0x04

_PARITY_ERR = 0x02
_CRC_ERR = 0x04
_COLL_ERR = 0x08
_BUFFER_OVFL = 0x10

_RESET_VALUES = {0x01: 0x20, 0x02: 0x80, 0x04: 0x14, 0x07: 0x21, 0x0B: 0x08, 0x0C: 0x10,
                 0x0E: 0xA0, 0x11: 0x3F, 0x14: 0x80, 0x16: 0x10, 0x17: 0x84, 0x18: 0x84,
                 0x19: 0x4D, 0x21: 0xFF, 0x22: 0xFF, 0x24: 0x26, 0x26: 0x48, 0x27: 0x88,
                 0x28: 0x20}
_CRC_PRESETS = (0x0000, 0x6363, 0xA671, 0xFFFF)


def _bit(data, i):
    return (data[i >> 3] >> (i & 7)) & 1


class Mfrc522Chip:
    KINDS = ISO_KINDS
    lengths = ISO_LENGTHS

    def __init__(self, bus, cs, rst=None, version=0x92):
        self.bus = bus
        self.cs = cs
        self.rst = rst
        self.version = version
        self.cards = []           # Picc in the field (the held card first)
        self.dead = False
        self.dead_byte = 0xFF
        self.powered = True
        self.fault = None
        self.exchanges = []       # (sent, sent bits, answer or None), the last log_size
        self.log_size = 4
        self.resets = 0
        self.unknown_commands = []
        self._phantom = None
        self._gone = False
        self._selected = False
        self._in_reset = False
        self._pos = 0
        self._addr = 0
        self._reading = False
        self.regs = bytearray(64)
        self.fifo = []
        self._reset_chip()

    # -- the world's side

    def install(self):
        machine.hw_attach_spi(self.bus, self)
        machine.hw_on_output(self.cs, self._on_cs)
        self._selected = machine.hw_level(self.cs) == 0
        self._pos = 0
        if self.rst is not None:
            machine.hw_on_output(self.rst, self._on_rst)
            self._in_reset = machine.hw_level(self.rst) == 0

    def present(self, uid, sak=None):
        card = Picc(uid, sak)
        self.remove()
        self.cards.insert(0, card)
        return card

    def remove(self):
        self.cards = [c for c in self.cards if c is self._phantom]

    def break_next(self, kind):
        _check_kind(kind, self.KINDS, "an MFRC522 reader")
        self.fault = kind

    def advance(self, now_ms):
        pass

    def power(self, on):
        self.powered = bool(on)
        if not on:
            self._reset_chip()

    @property
    def antenna(self):
        return self.regs[_TX_CONTROL] & 0x03 == 0x03

    # -- pins and bus

    def _on_cs(self, level):
        self._selected = level == 0
        self._pos = 0

    def _on_rst(self, level):
        if level == 0:
            self._in_reset = True
            self._field_off()
        elif self._in_reset:
            self._in_reset = False
            self._reset_chip()

    def transfer(self, data):
        out = bytearray(len(data))
        if self.dead or not self.powered or self._in_reset or not self._selected:
            for i in range(len(data)):
                out[i] = self.dead_byte
            return bytes(out)
        for i in range(len(data)):
            b = data[i]
            if self._pos == 0:
                self._addr = (b >> 1) & 0x3F
                self._reading = bool(b & 0x80)
            elif self._reading:
                out[i] = self._read_reg(self._addr)
                self._addr = (b >> 1) & 0x3F
            else:
                self._write_reg(self._addr, b)
            self._pos += 1
        return bytes(out)

    # -- registers

    def _reset_chip(self):
        self.resets += 1
        regs = self.regs
        for i in range(64):
            regs[i] = 0
        for k in _RESET_VALUES:
            regs[k] = _RESET_VALUES[k]
        self.fifo = []
        self._field_off()

    def _field_off(self):
        for c in self.cards:
            c.power_off()

    def _read_reg(self, reg):
        if reg == _FIFO_DATA:
            return self.fifo.pop(0) if self.fifo else 0
        if reg == _FIFO_LEVEL:
            return len(self.fifo) & 0x7F
        if reg == _VERSION:
            return self.version
        return self.regs[reg]

    def _write_reg(self, reg, v):
        regs = self.regs
        if reg == _COMMAND:
            cmd = v & 0x0F
            regs[_COMMAND] = (regs[_COMMAND] & 0x20) | (v & 0x10) | cmd
            if cmd == _SOFT_RESET:
                self._reset_chip()
            elif cmd == _CALC_CRC:
                c = crc_a(self.fifo, _CRC_PRESETS[regs[_MODE] & 0x03])
                self.fifo = []
                regs[_CRC_H] = c >> 8
                regs[_CRC_L] = c & 0xFF
                regs[_DIV_IRQ] |= _CRC_IRQ
            elif cmd not in (_IDLE, _TRANSCEIVE):
                self.unknown_commands.append(cmd)
        elif reg == _COM_IRQ or reg == _DIV_IRQ:
            if v & 0x80:
                regs[reg] |= v & 0x7F
            else:
                regs[reg] &= ~v & 0x7F
        elif reg == _FIFO_DATA:
            if len(self.fifo) < 64:
                self.fifo.append(v)
            else:
                regs[_ERROR] |= _BUFFER_OVFL
        elif reg == _FIFO_LEVEL:
            if v & 0x80:
                self.fifo = []
                regs[_ERROR] &= ~_BUFFER_OVFL & 0xFF
        elif reg == _BIT_FRAMING:
            regs[reg] = v & 0x7F
            if v & 0x80 and regs[_COMMAND] & 0x0F == _TRANSCEIVE:
                self._transceive()
        elif reg == _COLL:
            regs[reg] = (regs[reg] & 0x7F) | (v & 0x80)
        elif reg == _CONTROL:
            pass   # TStopNow / TStartNow act on the timer (not modelled); RxLastBits is read-only
        elif reg == _TX_CONTROL:
            was = self.antenna
            regs[reg] = v
            if was and not self.antenna:
                self._field_off()
        elif reg not in _READ_ONLY:
            regs[reg] = v

    # -- the air

    def _transceive(self):
        regs = self.regs
        data = bytes(self.fifo)
        self.fifo = []
        last = regs[_BIT_FRAMING] & 0x07
        nbits = len(data) * 8 if last == 0 else (len(data) - 1) * 8 + last
        if regs[_TX_MODE] & 0x80 and last == 0:
            data = with_crc(data)
            nbits += 16
        regs[_ERROR] = 0
        regs[_COLL] = (regs[_COLL] & 0x80) | 0x20     # CollPosNotValid: no collision seen
        regs[_CONTROL] &= 0xF8
        irq = _TX_IRQ
        fault = self.fault
        short = nbits == 7 and len(data) == 1
        if short and self._gone:                      # the card that was taken away is back
            self._gone = False
            self._field_off()
        if short and fault == "collision" and self.cards and self._phantom is None:
            self._add_phantom()
        answers = []
        if self.antenna and not self._gone:
            for c in self.cards:
                a = c.receive(data, nbits)
                if a is not None:
                    answers.append(a)
        err = 0
        rx = None
        if answers:
            rx, rx_bits, pos = self._superpose(answers)
            if pos is not None:
                err |= _COLL_ERR
                regs[_COLL] = (regs[_COLL] & 0x80) | (0 if pos + 1 <= 32 else 0x20) | ((pos + 1) & 0x1F)
                if fault == "collision":
                    self.fault = None
                    self.cards = [c for c in self.cards if c is not self._phantom]
                    self._phantom = None
            anticoll = nbits == 16 and data[1] == 0x20 and len(rx) == 5
            select = nbits >= 72 and data[1] == 0x70 and len(rx) == 3
            if fault == "bcc" and anticoll:
                rx[4] ^= 0x01
                self.fault = None
            elif fault == "parity" and anticoll:
                err |= _PARITY_ERR
                self.fault = None
            elif fault == "crc" and select:
                rx[1] ^= 0x01
                self.fault = None
            elif fault == "removed" and short:
                self._gone = True
                self.fault = None
            if regs[_RX_MODE] & 0x80 and rx_bits % 8 == 0 and len(rx) >= 3:
                c = crc_a(rx[:-2])
                if rx[-2] != c & 0xFF or rx[-1] != c >> 8:
                    err |= _CRC_ERR
                rx = rx[:-2]
            self.fifo = list(rx)
            regs[_CONTROL] |= rx_bits & 0x07
            irq |= _RX_IRQ
            if err:
                irq |= _ERR_IRQ
        elif regs[_T_MODE] & 0x80 and (regs[_T_RELOAD_H] or regs[_T_RELOAD_L]):
            irq |= _TIMER_IRQ
        regs[_ERROR] = err
        regs[_COM_IRQ] |= irq
        self.exchanges.append((data, nbits, bytes(rx) if rx is not None else None))
        if len(self.exchanges) > self.log_size:
            self.exchanges.pop(0)

    def _add_phantom(self):
        uid = bytearray(self.cards[0].uid)
        uid[0] ^= 0x01 if uid[0] ^ 0x01 != CASCADE_TAG else 0x02
        self._phantom = Picc(uid)
        self.cards.append(self._phantom)

    @staticmethod
    def _superpose(answers):
        """(bytes, bits, first collision bit or None) of cards answering at once."""
        data, bits = answers[0]
        out = bytearray(data)
        pos = None
        for other, obits in answers[1:]:
            n = min(bits, obits)
            for i in range(n):
                if _bit(out, i) != _bit(other, i):
                    if pos is None or i < pos:
                        pos = i
                    break
            for i in range(min(len(out), len(other))):
                out[i] |= other[i]
        return out, bits % 8, pos


# ---------------------------------------------------------------------------------------------
# PN532

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"


def pn532_frame(data, tfi=0xD5, bad_lcs=False, bad_dcs=False):
    """00 00 FF LEN LCS TFI DATA.. DCS 00."""
    n = len(data) + 1
    lcs = (-n) & 0xFF
    dcs = (-(tfi + sum(data))) & 0xFF
    if bad_lcs:
        lcs ^= 0x01
    if bad_dcs:
        dcs ^= 0x01
    return bytes((0x00, 0x00, 0xFF, n, lcs, tfi)) + bytes(data) + bytes((dcs, 0x00))


class Pn532Chip:
    KINDS = PN532_KINDS
    lengths = ISO_LENGTHS

    def __init__(self, bus, address=0x24, latency_ms=0, ic=0x32):
        self.bus = bus
        self.address = address
        self.latency_ms = latency_ms
        self.ic = ic
        self.cards = []
        self.dead = False
        self.powered = True
        self.fault = None
        self.now_ms = 0
        self.commands = []        # command codes received (the last log_size)
        self.log_size = 4
        self.bad_frames = 0
        self.aborts = 0
        self.sam = False          # SAMConfiguration seen since power-up
        self._out = None          # [frame, ready at ms] readable now or later
        self._next = None         # the response, readable latency_ms after the ACK was read
        self._last = None

    def install(self):
        machine.hw_attach_i2c(self.bus, self)

    def present(self, uid, sak=None):
        self.cards = [Picc(uid, sak)]
        return self.cards[0]

    def remove(self):
        self.cards = []

    def break_next(self, kind):
        _check_kind(kind, self.KINDS, "a PN532 reader")
        self.fault = kind

    def advance(self, now_ms):
        self.now_ms = now_ms

    def power(self, on):
        self.powered = bool(on)
        if not on:
            self.sam = False
            self._out = None
            self._next = None

    # -- the bus

    def scan(self):
        return [] if self.dead or not self.powered else [self.address]

    def write(self, addr, data):
        data = bytes(data)
        if not data:
            return
        if data == ACK:
            self.aborts += 1
            self._out = None
            self._next = None
            return
        if data == NACK:
            if self._last is not None:
                self._out = [self._last, self.now_ms + self.latency_ms]
            return
        n = data[3] if len(data) > 3 else 0
        if (len(data) < n + 7 or data[0:3] != b"\x00\x00\xff" or (n + data[4]) & 0xFF
                or data[5] != 0xD4 or sum(data[5:6 + n]) & 0xFF or n < 2):
            self.bad_frames += 1
            return
        cmd = data[6]
        params = data[7:5 + n]
        self.commands.append(cmd)
        if len(self.commands) > self.log_size:
            self.commands.pop(0)
        fault = self.fault if cmd == 0x4A else None
        if fault is not None:
            self.fault = None
        if fault == "noanswer":
            self._out = None
            self._next = None
            return
        if fault == "nack":
            self._out = [NACK, self.now_ms + self.latency_ms]
            self._next = None
            return
        resp = self._execute(cmd, params)
        if resp is None or fault == "error":
            frame = ERROR_FRAME
        else:
            frame = pn532_frame(resp, bad_lcs=fault == "lcs", bad_dcs=fault == "checksum")
        self._out = [ACK, self.now_ms + self.latency_ms]
        self._next = frame

    def read(self, addr, n):
        out = bytearray(n)
        cur = self._out
        if cur is None or self.now_ms < cur[1]:
            return bytes(out)
        out[0] = 0x01
        frame = cur[0]
        k = min(len(frame), n - 1)
        out[1:1 + k] = frame[:k]
        if n >= 2:
            self._last = frame
            self._out = None
            if frame is ACK and self._next is not None:
                self._out = [self._next, self.now_ms + self.latency_ms]
                self._next = None
        return bytes(out)

    def _execute(self, cmd, params):
        if cmd == 0x02:
            return bytes((0x03, self.ic, 0x01, 0x06, 0x07))
        if cmd == 0x14:
            self.sam = True
            return bytes((0x15,))
        if cmd == 0x32:
            return bytes((0x33,))
        if cmd == 0x4A and len(params) >= 2 and params[1] == 0x00:
            if not self.sam or not self.cards:
                return bytes((0x4B, 0x00))
            c = self.cards[0]
            return (bytes((0x4B, 0x01, 0x01, c.atqa[1], c.atqa[0], c.sak, len(c.uid)))
                    + c.uid)
        return None


# ---------------------------------------------------------------------------------------------
# Wiegand


def wiegand_bits(uid):
    """The bits (list of 0/1) of a Wiegand frame for 3 (W26) or 4 (W34) UID bytes."""
    data = []
    for b in uid:
        for i in range(7, -1, -1):
            data.append((b >> i) & 1)
    half = len(data) // 2
    even = sum(data[:half]) & 1
    odd = 1 - (sum(data[half:]) & 1)
    return [even] + data + [odd]


class WiegandSender:
    KINDS = WIEGAND_KINDS
    lengths = (3, 4)

    def __init__(self, d0, d1, bit_ms=2):
        self.d0 = d0
        self.d1 = d1
        self.bit_ms = bit_ms
        self.now_ms = 0
        self.fault = None
        self.powered = True
        self.held = None
        self.frames = []          # the bit lists sent (the last 16)
        self._queue = []          # [due ms, bit]

    def install(self):
        machine.hw_set_input(self.d0, 1)
        machine.hw_set_input(self.d1, 1)

    def present(self, uid):
        uid = bytes(uid)
        if len(uid) not in self.lengths:
            raise ValueError("card: UID: a Wiegand reader sends 3 bytes (Wiegand 26) or 4 "
                             "(Wiegand 34), got %d" % len(uid))
        self.held = uid
        bits = wiegand_bits(uid)
        if self.fault == "parity":
            bits[-1] ^= 1
        elif self.fault == "bits":
            bits = bits[:-1]
        self.fault = None
        self.frames.append(bits)
        if len(self.frames) > 16:
            self.frames.pop(0)
        t = self.now_ms
        if self._queue:
            t = max(t, self._queue[-1][0] + 50)        # after the frame still on the wire
        for b in bits:
            self._queue.append([t, b])
            t += self.bit_ms

    def remove(self):
        self.held = None

    def break_next(self, kind):
        _check_kind(kind, self.KINDS, "a Wiegand reader")
        self.fault = kind

    def power(self, on):
        self.powered = bool(on)
        if not on:
            self._queue = []

    def advance(self, now_ms):
        self.now_ms = now_ms
        q = self._queue
        while q and q[0][0] <= now_ms:
            _, b = q.pop(0)
            pin = self.d1 if b else self.d0
            machine.hw_set_input(pin, 0)
            machine.hw_set_input(pin, 1)

    @property
    def sending(self):
        return bool(self._queue)


def make_device(section):
    """The simulated reader hardware for a board profile's "reader" section."""
    t = section.get("type")
    if t == "mfrc522":
        return Mfrc522Chip(section["spi"], section["cs"], section.get("rst"))
    if t == "pn532":
        return Pn532Chip(section["i2c"], section.get("address") or 0x24, latency_ms=1)
    if t == "wiegand":
        return WiegandSender(section["d0"], section["d1"])
    raise ValueError("reader.type: no simulated reader for %r" % (t,))
