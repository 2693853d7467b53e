"""Card readers: one idTag format and one "a held card counts once" rule for every reader chip.

    reader = make_reader(profile["reader"], clock=clock)   # Reader; ReaderError if the chip is mute
    every ~100 ms: tag = reader.poll(now_ms)             # "04A1B2C3" once per presentation, else None

Reader types (board profile section "reader", see docs/readers.md for the wiring):
    {"type": "mfrc522", "spi": 1|2, "sck", "mosi", "miso", "cs", "rst" (optional)}  drivers/mfrc522.py
    {"type": "pn532", "i2c": 0|1, "scl", "sda", "address" (optional, 36 = 0x24)}     drivers/pn532.py
    {"type": "wiegand", "d0", "d1"}                                                   drivers/wiegand.py

idTag: the UID bytes as upper-case hex, two digits a byte, in the order the card sends them:
4 bytes -> 8 characters, 7 -> 14, 10 -> 20 (the OCPP idToken limit); a Wiegand 26 frame gives 3
bytes (facility, card number high, low), Wiegand 34 gives 4.

Counts once: poll() returns the idTag when a card is presented, then None while the same card
stays. It is presented again only after it has been released: RELEASE_POLLS (2) consecutive polls
that saw no card *and* RELEASE_MS (500 ms) since it was last read. A poll that failed (an error
was counted) is not an empty poll: it restarts the count. A different card counts at once.

Every chip driver has the same small interface, used here:
    chip.read(now_ms) -> n > 0: a UID of n bytes is in chip.uid[0:n]; NONE (0): no card;
                         ERROR: a broken read, counted in chip.errors; BUSY: an exchange is under
                         way, no answer yet (the PN532 and Wiegand work across polls)
    chip.errors      dict kind -> count, fixed keys (ERROR_KINDS of the chip's module)
    chip.last_error  the kind of the most recent error, or None
Reader.errors is that same dict; Reader.reads counts UIDs read, Reader.presented idTags returned.
A poll allocates nothing except the idTag string it returns.
"""
from drivers import board as _board

TYPES = ("mfrc522", "pn532", "wiegand")
MAX_UID = 10         # bytes (ISO/IEC 14443 triple size UID)
MAX_ID_TAG = 20      # characters (OCPP 1.6 idToken)
RELEASE_POLLS = 2    # consecutive empty polls ...
RELEASE_MS = 500     # ... and this long since the card was last read, before it counts again

# chip.read() results other than a UID length
NONE = 0
ERROR = -1
BUSY = -2

_MASK = 0x3FFFFFFF   # ticks period - 1 (MicroPython's ticks_ms wraps at 2**30)
_HALF = 0x20000000
_HEX = b"0123456789ABCDEF"

# keys of each reader type: (key, kind) with kind "pin-in", "pin-out", "int" or "opt-..." (optional)
KEYS = {
    "mfrc522": (("spi", "int"), ("sck", "pin-out"), ("mosi", "pin-out"), ("miso", "pin-in"),
                ("cs", "pin-out"), ("rst", "opt-pin-out")),
    "pn532": (("i2c", "int"), ("scl", "pin-out"), ("sda", "pin-out"), ("address", "opt-int")),
    "wiegand": (("d0", "pin-in"), ("d1", "pin-in")),
}
ALL_KEYS = ("type", "spi", "sck", "mosi", "miso", "cs", "rst", "i2c", "scl", "sda", "address",
            "d0", "d1")
PN532_ADDRESS = 0x24


class ReaderError(Exception):
    """The reader chip does not answer or is not what the profile says (raised at construction)."""


def ticks_diff(a, b):
    return ((a - b + _HALF) & _MASK) - _HALF


def ticks_add(a, ms):
    return (a + ms) & _MASK


def id_tag(uid, n=None):
    """Upper-case hex of uid[0:n] (bytes, bytearray or list of ints): "04A1B2C3"."""
    if n is None:
        n = len(uid)
    if n < 1 or n > MAX_UID:
        raise ValueError("UID length %d out of range 1..%d" % (n, MAX_UID))
    out = bytearray(2 * n)
    for i in range(n):
        b = uid[i]
        out[2 * i] = _HEX[b >> 4]
        out[2 * i + 1] = _HEX[b & 15]
    return bytes(out).decode()


def _is_int(v):
    return isinstance(v, int) and v is not True and v is not False


def pin_keys(cfg):
    """(key, "in"|"out") for every pin the section uses (present and an int), for board.py."""
    out = []
    t = cfg.get("type") if isinstance(cfg, dict) else None
    if t not in TYPES:
        return out
    spec = KEYS[t]
    for key, kind in spec:
        if "pin" in kind and _is_int(cfg.get(key)):
            out.append((key, "in" if kind.endswith("in") else "out"))
    return out


def config_errors(cfg, path="reader.", unknown_checked=False):
    """Every problem of a reader section, each naming its key and what was expected ([] = ok).

    Pins are checked to be ints here; whether the GPIO can do the job (and is not used twice)
    is drivers/board.py's check. unknown_checked: keys outside ALL_KEYS were reported already.
    """
    if not isinstance(cfg, dict):
        return ["%s expected object, got %s" % (path[:-1] + ":", _board.type_name(cfg))]
    errs = []
    t = cfg.get("type")
    if "type" not in cfg:
        errs.append("missing required entry: %stype (one of \"mfrc522\", \"pn532\", \"wiegand\")"
                    % path)
        return errs
    if t not in TYPES:
        errs.append("%stype: expected \"mfrc522\", \"pn532\" or \"wiegand\", got %r" % (path, t))
        return errs
    spec = KEYS[t]
    names = ["type"] + [k for k, _ in spec]
    for k in cfg:
        if k in names or (unknown_checked and k not in ALL_KEYS):
            continue
        errs.append("%s%s: not a key of a %s reader (expected %s)"
                    % (path, k, t, ", ".join(names)))
    for key, kind in spec:
        optional = kind.startswith("opt-")
        if key not in cfg or (optional and cfg[key] is None):
            if not optional:
                errs.append("missing required entry: %s%s" % (path, key))
            continue
        v = cfg[key]
        if not _is_int(v):
            errs.append("%s%s: expected int, got %s" % (path, key, _board.type_name(v)))
            continue
        if key == "spi" and v not in (1, 2):
            errs.append("%sspi: expected 1 (HSPI) or 2 (VSPI), got %d" % (path, v))
        elif key == "i2c" and v not in (0, 1):
            errs.append("%si2c: expected 0 or 1, got %d" % (path, v))
        elif key == "address" and not 0x08 <= v <= 0x77:
            errs.append("%saddress: expected a 7-bit I2C address 8..119 (the PN532 is 36 = 0x24), "
                        "got %d" % (path, v))
    return errs


class Reader:
    """A chip driver plus the "counts once" rule. `type` is the profile's reader type."""

    def __init__(self, chip, kind, release_polls=RELEASE_POLLS, release_ms=RELEASE_MS):
        self.chip = chip
        self.type = kind
        self.errors = chip.errors
        self.release_polls = release_polls
        self.release_ms = release_ms
        self.reads = 0          # UIDs read (a held card read again counts here, not as presented)
        self.presented = 0      # idTags returned by poll()
        self._held = bytearray(MAX_UID)
        self._held_n = 0        # 0: no card held
        self._seen_ms = 0       # when the held card was last read
        self._empty = 0         # consecutive polls without a card

    @property
    def last_error(self):
        return self.chip.last_error

    @property
    def held(self):
        """True while a card counted by poll() is not released yet."""
        return self._held_n > 0

    def poll(self, now_ms):
        """The idTag of a newly presented card, else None. Short; allocates only the idTag."""
        n = self.chip.read(now_ms)
        if n > 0:
            self.reads += 1
            self._empty = 0
            uid = self.chip.uid
            held = self._held
            same = n == self._held_n
            if same:
                for i in range(n):
                    if uid[i] != held[i]:
                        same = False
                        break
            self._seen_ms = now_ms
            if same:
                return None
            for i in range(n):
                held[i] = uid[i]
            self._held_n = n
            self.presented += 1
            return id_tag(uid, n)
        if n == NONE:
            if self._held_n:
                self._empty += 1
                if (self._empty >= self.release_polls
                        and ticks_diff(now_ms, self._seen_ms) >= self.release_ms):
                    self._held_n = 0
                    self._empty = 0
        elif n == ERROR:
            self._empty = 0
        return None


def make_reader(cfg, machine_module=None, clock=None):
    """The Reader for a board profile's "reader" section.

    ValueError naming the key and the expected value for a bad section; ReaderError when the
    chip does not answer. machine_module: the `machine` to build the bus objects with (default:
    the real one). clock (optional): lets the Wiegand interrupt stamp its bits.
    """
    errs = config_errors(cfg)
    if errs:
        raise ValueError("; ".join(errs))
    m = machine_module
    if m is None:
        import machine as m
    Pin = m.Pin
    t = cfg["type"]
    if t == "mfrc522":
        from drivers.mfrc522 import Mfrc522

        spi = m.SPI(cfg["spi"], baudrate=1000000, polarity=0, phase=0, sck=Pin(cfg["sck"]),
                    mosi=Pin(cfg["mosi"]), miso=Pin(cfg["miso"]))
        cs = Pin(cfg["cs"], Pin.OUT, value=1)
        rst = None
        if cfg.get("rst") is not None:
            rst = Pin(cfg["rst"], Pin.OUT, value=1)
        return Reader(Mfrc522(spi, cs, rst), t)
    if t == "pn532":
        from drivers.pn532 import Pn532

        i2c = m.I2C(cfg["i2c"], scl=Pin(cfg["scl"]), sda=Pin(cfg["sda"]), freq=400000)
        address = cfg.get("address")
        return Reader(Pn532(i2c, PN532_ADDRESS if address is None else address), t)
    from drivers.wiegand import Wiegand

    return Reader(Wiegand(_input(m, cfg["d0"]), _input(m, cfg["d1"]), clock, m), t)


def _input(m, pin):
    """An input with the pull-up the idle-high Wiegand lines need (34-39 have none: fit one)."""
    if pin >= 34:
        return m.Pin(pin, m.Pin.IN)
    return m.Pin(pin, m.Pin.IN, m.Pin.PULL_UP)
