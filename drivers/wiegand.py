"""Wiegand 26 / 34 card reader on two inputs, D0 and D1, with hard pin interrupts.

    chip = Wiegand(d0_pin, d1_pin, clock=None)   # input Pins (idle high, pulled up)
    n = chip.read(now_ms)                        # > 0: chip.uid[0:n]; 0: none; -1: error; -2: busy

Both lines rest high; the reader sends each bit as a short low pulse (~50 us, one every ~2 ms) on
D0 for a 0 and on D1 for a 1, most significant bit first. The falling edge's hard interrupt only
stores the bit in a preallocated buffer and counts it (and, with a clock, stamps the time): it
allocates nothing and takes no lock. read() assembles a frame once GAP_MS (25 ms) went by without
a bit: with a clock, from the last bit's time stamp; without one, from the first poll that saw
the bit count unchanged (then a frame ends up to one poll interval later).

Frames:
    26 bits  E FFFFFFFF CCCCCCCCCCCCCCCC O -> 3 bytes: facility, card number high, low
    34 bits  E DDDD..(32 bits)..DDDD O     -> 4 bytes
E is the even parity of the first half of the data bits (12 of 24, 16 of 32), O the odd parity of
the second half. A frame with another bit count (counted as "bits"; MAX_BITS at most are kept) or
a wrong parity ("parity") is dropped and returns ERROR.
"""
from drivers.reader import BUSY, ERROR, MAX_UID, NONE, ticks_diff

ERROR_KINDS = ("bits", "parity")
GAP_MS = 25          # no bit for this long ends a frame
MAX_BITS = 40        # bits kept per frame (more are only counted)


class Wiegand:
    def __init__(self, d0, d1, clock=None, machine_module=None):
        m = machine_module
        if m is None:
            import machine as m
        self._machine = m
        self._clock = clock
        self.uid = bytearray(MAX_UID)
        self.errors = {}
        for k in ERROR_KINDS:
            self.errors[k] = 0
        self.last_error = None
        self.frames = 0                  # frames taken (good or bad)
        # shared with the interrupt handlers: every attribute exists before the IRQs are enabled
        self._bits = bytearray(MAX_BITS)
        self._n = 0                      # bits since the last frame was taken (may exceed MAX_BITS)
        self._last_ms = 0                # the time of the last bit (stamped by the IRQ with a clock)
        # read()'s own state
        self._frame = bytearray(MAX_BITS)
        self._seen = 0                   # without a clock: the count the last poll saw
        self._d0 = d0
        self._d1 = d1
        self._h0 = self._irq0            # bound once: the IRQ must not allocate
        self._h1 = self._irq1
        falling = m.Pin.IRQ_FALLING
        d0.irq(handler=self._h0, trigger=falling, hard=True)
        d1.irq(handler=self._h1, trigger=falling, hard=True)

    # --- the interrupts ---------------------------------------------------------------------------
    def _irq0(self, pin):
        n = self._n
        if n < MAX_BITS:
            self._bits[n] = 0
        self._n = n + 1
        clock = self._clock
        if clock is not None:
            self._last_ms = clock.ticks_ms()

    def _irq1(self, pin):
        n = self._n
        if n < MAX_BITS:
            self._bits[n] = 1
        self._n = n + 1
        clock = self._clock
        if clock is not None:
            self._last_ms = clock.ticks_ms()

    # --- the poll -----------------------------------------------------------------------------------
    def read(self, now_ms):
        """A finished frame's UID length (uid[0:n]), NONE, ERROR (counted) or BUSY (bits coming)."""
        n = self._n
        if n == 0:
            return NONE
        if self._clock is None and n != self._seen:
            self._seen = n
            self._last_ms = now_ms
            return BUSY
        if ticks_diff(now_ms, self._last_ms) < GAP_MS:
            return BUSY
        # take the frame; bits that came since the check above begin the next one
        m = self._machine
        frame = self._frame
        bits = self._bits
        state = m.disable_irq()
        total = self._n
        for i in range(n if n < MAX_BITS else MAX_BITS):
            frame[i] = bits[i]
        rest = total - n
        keep = MAX_BITS - n if rest > MAX_BITS - n else rest
        for i in range(keep):
            bits[i] = bits[n + i]
        self._n = rest
        m.enable_irq(state)
        self._seen = rest
        self.frames += 1
        return self._decode(frame, n)

    def _fail(self, kind):
        self.errors[kind] += 1
        self.last_error = kind
        return ERROR

    def _decode(self, bits, n):
        if n == 26:
            half = 12
        elif n == 34:
            half = 16
        else:
            return self._fail("bits")
        even = 0
        for i in range(0, half + 1):            # the parity bit and the first half
            even ^= bits[i]
        odd = 0
        for i in range(half + 1, n):            # the second half and the parity bit
            odd ^= bits[i]
        if even != 0 or odd != 1:
            return self._fail("parity")
        nbytes = (n - 2) >> 3
        uid = self.uid
        k = 1
        for i in range(nbytes):
            v = 0
            for _ in range(8):
                v = (v << 1) | bits[k]
                k += 1
            uid[i] = v
        return nbytes
