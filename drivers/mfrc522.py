"""NXP MFRC522 13.56 MHz reader over SPI: ISO/IEC 14443 A card UIDs of 4, 7 and 10 bytes.

    chip = Mfrc522(spi, cs, rst=None)   # cs (and rst) are output Pins; ReaderError if mute
    n = chip.read(now_ms)               # > 0: the UID is chip.uid[0:n]; 0: no card; -1: error

SPI (mode 0, MSB first, up to 10 MHz; 1 MHz here): chip select low for each access; the address
byte is (reg << 1) & 0x7E to write (the data bytes follow, all into that register) and
((reg << 1) & 0x7E) | 0x80 to read (the register's value comes back on the next byte).

Init (and again after the chip stopped answering): optional RST high, SoftReset, VersionReg must
be 0x91 (v1.0), 0x92 (v2.0) or a clone's 0x88 / 0x12 (any other value but 0x00 / 0xFF is
accepted and kept in `version`; 0x00 / 0xFF means nothing answers: ReaderError). Timer: TAuto,
prescaler 0xA9 (25 us ticks), reload TIMEOUT_TICKS (40 = 1 ms without an answer after the end of
a transmission), 100 % ASK, CRC preset 0x6363, 106 kBd without chip CRC (CRC_A is computed here),
antenna on.

One read (ISO/IEC 14443-3): REQA (7-bit short frame 0x26) -> ATQA; then per cascade level
(SEL 0x93, 0x95, 0x97): ANTICOLLISION (SEL 0x20) -> 4 bytes + BCC (checked), SELECT (SEL 0x70, the
5 bytes, CRC_A) -> SAK + CRC_A (checked); SAK bit 0x04 means the UID goes on at the next level
and the first byte was the cascade tag 0x88. Then HLTA (50 00 + CRC_A) so the card sleeps: it
does not answer REQA again until it has left the field. No answer to REQA = no card (not an
error). Every other failure ends the read, returns ERROR and is counted in `errors`:
    timeout    the card stopped answering in the middle (taken away)
    crc        SAK's CRC_A wrong (or ErrorReg CRCErr)
    bcc        the anticollision BCC is not the XOR of the 4 UID bytes
    collision  ErrorReg CollErr: two cards answered at once (not resolved: show one card)
    parity     ErrorReg ParityErr
    protocol   ErrorReg ProtocolErr / BufferOvfl, or an answer of the wrong length or meaning
    chip       the chip did not finish an exchange (ComIrqReg never set) or reads back as 0xFF;
               the next read sets it up again (counted again if it still does not answer)
Time: no card = one exchange (about 1.5 ms on the board: the 1 ms timer plus the SPI accesses);
reading a card = 2 exchanges per cascade level + REQA + HLTA (about 5 to 10 ms). Nothing sleeps: the
wait for an exchange reads ComIrqReg at most WAIT_READS times. Buffers are preallocated; a read
allocates nothing.
"""
from drivers.reader import ERROR, MAX_UID, NONE, ReaderError

# registers
_COMMAND = 0x01
_COM_IRQ = 0x04
_ERROR = 0x06
_FIFO_DATA = 0x09
_FIFO_LEVEL = 0x0A
_CONTROL = 0x0C
_BIT_FRAMING = 0x0D
_COLL = 0x0E
_MODE = 0x11
_TX_MODE = 0x12
_RX_MODE = 0x13
_TX_CONTROL = 0x14
_TX_ASK = 0x15
_T_MODE = 0x2A
_T_PRESCALER = 0x2B
_T_RELOAD_H = 0x2C
_T_RELOAD_L = 0x2D
_VERSION = 0x37

# commands (CommandReg bits 3..0); bit 4 is PowerDown
_IDLE = 0x00
_TRANSCEIVE = 0x0C
_SOFT_RESET = 0x0F
_POWER_DOWN = 0x10

# ComIrqReg
_TIMER_IRQ = 0x01
_IDLE_IRQ = 0x10
_RX_IRQ = 0x20

# ErrorReg
_PROTOCOL_ERR = 0x01
_PARITY_ERR = 0x02
_CRC_ERR = 0x04
_COLL_ERR = 0x08
_BUFFER_OVFL = 0x10
_UNUSED = 0x20  # reads 0 on a real chip: set means MISO is stuck high

# ISO/IEC 14443-3 type A
REQA = 0x26
ANTICOLLISION = 0x20   # NVB: 2 bytes sent, no UID bits
SELECT = 0x70          # NVB: 7 bytes (SEL, NVB, 4 UID bytes, BCC)
CASCADE_TAG = 0x88
SAK_CASCADE = 0x04
SEL = (0x93, 0x95, 0x97)

VERSIONS = {0x91: "MFRC522 1.0", 0x92: "MFRC522 2.0", 0x88: "FM17522 (clone)", 0x12: "clone"}
ERROR_KINDS = ("timeout", "crc", "bcc", "collision", "parity", "protocol", "chip")
TIMEOUT_TICKS = 40     # 25 us ticks: 1 ms for the card to start answering
WAIT_READS = 200       # ComIrqReg reads before an exchange is given up (the chip is stuck)
RESET_READS = 100      # CommandReg reads while waiting for SoftReset to finish

_NO_ANSWER = -1        # _transceive results besides a byte count
_FAILED = -2
_FIFO_W = (_FIFO_DATA << 1) & 0x7E


def crc_a(buf, start, end):
    """ISO/IEC 14443-3 CRC_A (CRC-16/ITU, preset 0x6363, reflected) of buf[start:end]; it is
    sent low byte first. Small ints only."""
    crc = 0x6363
    for i in range(start, end):
        b = (buf[i] ^ crc) & 0xFF
        b = (b ^ (b << 4)) & 0xFF
        crc = (crc >> 8) ^ (b << 8) ^ (b << 3) ^ (b >> 4)
    return crc


class Mfrc522:
    def __init__(self, spi, cs, rst=None):
        self._spi = spi
        self._cs = cs
        self._rst = rst
        self.uid = bytearray(MAX_UID)
        self.sak = 0
        self.atqa = 0
        self.version = 0
        self.errors = {}
        for k in ERROR_KINDS:
            self.errors[k] = 0
        self.last_error = None
        self._w2 = bytearray(2)          # one SPI access: address, data (read back in place)
        self._rx = bytearray(8)          # an answer: ATQA 2, UID CLn + BCC 5, SAK + CRC_A 3
        self._rx_n = 0
        self._rx_bits = 0
        # frames as written to the FIFO: the FIFODataReg write address, then the bytes to send
        self._reqa = bytearray((_FIFO_W, REQA))
        self._anticoll = bytearray((_FIFO_W, 0x93, ANTICOLLISION))
        self._select = bytearray(10)
        self._select[0] = _FIFO_W
        self._select[2] = SELECT
        self._hlta = bytearray((_FIFO_W, 0x50, 0x00, 0, 0))
        crc = crc_a(self._hlta, 1, 3)
        self._hlta[3] = crc & 0xFF
        self._hlta[4] = crc >> 8
        self._stale = False
        cs.value(1)
        self.init()

    # --- SPI --------------------------------------------------------------------------------
    def _write(self, reg, value):
        b = self._w2
        b[0] = (reg << 1) & 0x7E
        b[1] = value
        cs = self._cs
        cs.value(0)
        self._spi.write(b)
        cs.value(1)

    def _read(self, reg):
        b = self._w2
        b[0] = ((reg << 1) & 0x7E) | 0x80
        b[1] = 0
        cs = self._cs
        cs.value(0)
        self._spi.write_readinto(b, b)   # the same buffer both ways is allowed
        cs.value(1)
        return b[1]

    def _write_frame(self, frame):
        cs = self._cs
        cs.value(0)
        self._spi.write(frame)
        cs.value(1)

    # --- set-up -------------------------------------------------------------------------------
    def init(self):
        """Reset and configure the chip; ReaderError when it does not answer."""
        if self._rst is not None:
            self._rst.value(1)
        self._write(_COMMAND, _SOFT_RESET)
        for _ in range(RESET_READS):
            c = self._read(_COMMAND)
            if not c & _POWER_DOWN or c == 0xFF:   # done, or nothing there (MISO high)
                break
        v = self._read(_VERSION)
        if v == 0x00 or v == 0xFF:
            raise ReaderError("mfrc522: no answer on SPI (VersionReg reads 0x%02X): check SCK, "
                              "MOSI, MISO, CS, the 3.3 V supply and RST (must be high)" % v)
        self.version = v
        self._write(_T_MODE, 0x80)        # TAuto: the timer starts when a transmission ends
        self._write(_T_PRESCALER, 0xA9)   # 13.56 MHz / (2 * 169 + 1): 40 kHz, 25 us ticks
        self._write(_T_RELOAD_H, TIMEOUT_TICKS >> 8)
        self._write(_T_RELOAD_L, TIMEOUT_TICKS & 0xFF)
        self._write(_TX_ASK, 0x40)        # Force100ASK (ISO/IEC 14443 A)
        self._write(_MODE, 0x3D)          # CRC preset 0x6363
        self._write(_TX_MODE, 0x00)       # 106 kBd, no CRC added by the chip
        self._write(_RX_MODE, 0x00)       # 106 kBd, no CRC checked by the chip
        tx = self._read(_TX_CONTROL)
        if tx & 0x03 != 0x03:
            self._write(_TX_CONTROL, tx | 0x03)   # antenna drivers TX1, TX2 on
        self._stale = False

    def version_name(self):
        return VERSIONS.get(self.version, "unknown (0x%02X)" % self.version)

    # --- one exchange ---------------------------------------------------------------------------
    def _fail(self, kind):
        self.errors[kind] += 1
        self.last_error = kind
        if kind == "chip":
            self._stale = True
        return _FAILED

    def _transceive(self, frame, tx_last_bits):
        """Send frame[1:], receive into self._rx: byte count, _NO_ANSWER or _FAILED (counted)."""
        self._write(_COMMAND, _IDLE)
        self._write(_COM_IRQ, 0x7F)               # clear every interrupt request
        self._write(_FIFO_LEVEL, 0x80)            # flush the FIFO
        self._write_frame(frame)
        self._write(_BIT_FRAMING, tx_last_bits)
        self._write(_COMMAND, _TRANSCEIVE)
        self._write(_BIT_FRAMING, tx_last_bits | 0x80)   # StartSend
        irq = 0
        for _ in range(WAIT_READS):
            irq = self._read(_COM_IRQ)
            if irq & (_RX_IRQ | _IDLE_IRQ) or irq & _TIMER_IRQ:
                break
        else:
            self._write(_COMMAND, _IDLE)
            return self._fail("chip")
        err = self._read(_ERROR)
        self._write(_BIT_FRAMING, 0)
        if irq == 0xFF or err & _UNUSED:
            return self._fail("chip")
        if not irq & (_RX_IRQ | _IDLE_IRQ):
            return _NO_ANSWER                     # the timer ran out: nobody answered
        if err & _COLL_ERR:
            return self._fail("collision")
        if err & _PARITY_ERR:
            return self._fail("parity")
        if err & _CRC_ERR:
            return self._fail("crc")
        if err & (_PROTOCOL_ERR | _BUFFER_OVFL):
            return self._fail("protocol")
        n = self._read(_FIFO_LEVEL) & 0x7F
        if n > len(self._rx):
            return self._fail("protocol")
        self._rx_bits = self._read(_CONTROL) & 0x07
        rx = self._rx
        for i in range(n):
            rx[i] = self._read(_FIFO_DATA)
        self._rx_n = n
        return n

    # --- one read -------------------------------------------------------------------------------
    def read(self, now_ms=0):
        """One attempt to read a card: UID length (uid[0:n]), NONE or ERROR (counted)."""
        if self._stale:
            try:
                self.init()
            except ReaderError:
                self._fail("chip")
                return ERROR
        self._write(_COLL, 0x00)   # ValuesAfterColl 0: bits after a collision read as 0
        r = self._transceive(self._reqa, 7)
        if r == _NO_ANSWER:
            return NONE
        if r < 0:
            return ERROR
        rx = self._rx
        if r != 2 or self._rx_bits:
            self._fail("protocol")
            return ERROR
        self.atqa = rx[0] | (rx[1] << 8)
        uid = self.uid
        n = 0
        sel = self._select
        ac = self._anticoll
        for level in range(3):
            ac[1] = SEL[level]
            r = self._exchange(ac, 5)
            if r < 0:
                return ERROR
            if rx[0] ^ rx[1] ^ rx[2] ^ rx[3] != rx[4]:
                self._fail("bcc")
                return ERROR
            sel[1] = SEL[level]
            for i in range(5):
                sel[3 + i] = rx[i]
            crc = crc_a(sel, 1, 8)
            sel[8] = crc & 0xFF
            sel[9] = crc >> 8
            r = self._exchange(sel, 3)
            if r < 0:
                return ERROR
            if crc_a(rx, 0, 1) != rx[1] | (rx[2] << 8):
                self._fail("crc")
                return ERROR
            sak = rx[0]
            if sak & SAK_CASCADE:
                if sel[3] != CASCADE_TAG or level == 2:
                    self._fail("protocol")
                    return ERROR
                for i in range(3):
                    uid[n + i] = sel[4 + i]
                n += 3
                continue
            for i in range(4):
                uid[n + i] = sel[3 + i]
            n += 4
            self.sak = sak
            self._transceive(self._hlta, 0)   # no answer is the good answer; any other is ignored
            return n
        return ERROR  # not reached: level 3 never has the cascade bit (checked above)

    def _exchange(self, frame, want):
        """A whole-byte exchange that must bring exactly `want` bytes: the count or _FAILED."""
        r = self._transceive(frame, 0)
        if r == _NO_ANSWER:
            return self._fail("timeout")
        if r < 0:
            return r
        if r != want or self._rx_bits:
            return self._fail("protocol")
        return r
