"""Untrusted input: the one strict JSON scan and the one finite-number check.

Everything that comes from outside (OCPP frames, files on flash through drivers/jsonfile.py, a
back end's tariff table) is scanned before json.loads sees it, and every number that must be
finite is checked here:

    scan_json(s) / json_error(s)    strict JSON (RFC 8259), valid UTF-8, at most MAX_DEPTH levels,
                                    checked without allocating (a generator that yields, for a
                                    long frame; json_error runs it at once)
    finite(v)                       an int, or a float that is neither NaN nor infinite

Why scan before json.loads: MicroPython's parser accepts missing commas and colons, trailing
commas, `{"x"}`, bad escapes and raw control characters (a damaged file or a malformed frame
could be read as something else), builds strings of invalid UTF-8 (text-mode reads then fail
with an empty UnicodeError), and nests as deep as memory goes (8 KB of "[" is 4096 lists, far
beyond a 64 KB heap), while CPython's parser raises RecursionError past ~1000 levels and takes
NaN and Infinity.

Why finite(v) is `v - v == 0`: NaN and +-inf are the only numbers for which it is not (inf - inf
is NaN, and NaN equals nothing); it works on ints of any size, where math.isfinite raises
OverflowError on CPython, and needs no import. A NaN passes every `v < lo` and `v > hi` test, so
a range check alone lets it through. (A Modbus float32 register is checked before it becomes a
number at all, by its exponent bits: drivers/modbus.py float32_finite.)

drivers/ may not import firmware/, so this module lives here and firmware/ imports it, as it
does drivers.board. It is small on purpose: the OCPP link imports it (frames), and on the unix
port the test probes load code into a 64 KB heap.
"""
try:
    from micropython import const  # type: ignore  (the stubs make its argument positional-only)
except ImportError:  # CPython
    def const(x):
        return x


# The scanner reads bytes (ints): a frame arrives as a view of the WebSocket's receive buffer, a
# file as the bytes read from flash.
_WS = b" \t\n\r"
_ESC = b"\"\\/bfnrtu"
_HEX = b"0123456789abcdefABCDEF"
_LIT = (b"true", b"false", b"null")
# const() with a leading underscore: MicroPython's compiler puts the number in the code and the
# module keeps no global for it (RAM: every loaded module's globals are in the heap).
_QUOTE = const(0x22)
_BACKSLASH = const(0x5C)
_COMMA = const(0x2C)
_COLON_CH = const(0x3A)
_MINUS = const(0x2D)
_DOT = const(0x2E)
_LBRACKET = const(0x5B)
_RBRACKET = const(0x5D)
_LBRACE = const(0x7B)
_RBRACE = const(0x7D)
_ZERO = const(0x30)
NOT_UTF8 = "not UTF-8"
TOO_DEEP = "nested too deeply"
MAX_DEPTH = 32  # levels; the deepest document here (a charging profile in a frame, a tariff table) has 6
# scanner states
_VALUE = const(0)
_VALUE_OR_END = const(1)
_KEY_OR_END = const(2)
_KEY = const(3)
_COLON = const(4)
_AFTER = const(5)
_STEP = const(256)  # bytes between two yields


def _utf8_len(s, i, n):
    """Length of the UTF-8 sequence that starts with the byte s[i] >= 0x80, or 0 if it is not
    valid UTF-8 (overlong forms, surrogates and code points above U+10FFFF are not)."""
    c = s[i]
    if 0xC2 <= c <= 0xDF:
        k, lo, hi = 1, 0x80, 0xBF
    elif c == 0xE0:
        k, lo, hi = 2, 0xA0, 0xBF
    elif c == 0xED:
        k, lo, hi = 2, 0x80, 0x9F
    elif 0xE1 <= c <= 0xEF:
        k, lo, hi = 2, 0x80, 0xBF
    elif c == 0xF0:
        k, lo, hi = 3, 0x90, 0xBF
    elif 0xF1 <= c <= 0xF3:
        k, lo, hi = 3, 0x80, 0xBF
    elif c == 0xF4:
        k, lo, hi = 3, 0x80, 0x8F
    else:
        return 0
    if i + k >= n or not lo <= s[i + 1] <= hi:
        return 0
    for j in range(i + 2, i + k + 1):
        if not 0x80 <= s[j] <= 0xBF:
            return 0
    return k + 1


def _skip_digits(s, i, n):
    while i < n and 0x30 <= s[i] <= 0x39:
        i += 1
    return i


def scan_json(s):
    """Check that `s` (bytes-like; a str is encoded first) is strict JSON (RFC 8259) in valid
    UTF-8 before json.loads sees it: MicroPython's parser accepts missing commas and colons,
    trailing commas, `{"x"}`, bad escapes and raw control characters, so a malformed frame could
    be read as a command. A generator: it yields every _STEP bytes (the caller lets the control
    task run) and returns (StopIteration value) None when `s` is fine, else a short reason
    (NOT_UTF8 for bad UTF-8, TOO_DEEP beyond MAX_DEPTH levels). \\uD800-\\uDFFF escapes are
    refused: MicroPython can not hold them in a str. Allocates nothing per byte."""
    if isinstance(s, str):
        s = s.encode()
    n = len(s)
    i = 0
    stack = []
    st = _VALUE
    work = 0
    while True:
        work += 1
        if work >= _STEP:
            work = 0
            yield
        while i < n and s[i] in _WS:
            i += 1
        if i >= n:
            return None if (st == _AFTER and not stack) else "unexpected end"
        c = s[i]
        if st == _AFTER:
            if not stack:
                return "text after the value"
            top = stack[-1]
            if c == _COMMA:
                st = _VALUE if top == _LBRACKET else _KEY
            elif (c == _RBRACKET and top == _LBRACKET) or (c == _RBRACE and top == _LBRACE):
                stack.pop()
            else:
                return "expected , or a closing bracket at %d" % i
            i += 1
            continue
        if st == _COLON:
            if c != _COLON_CH:
                return "expected : at %d" % i
            st = _VALUE
            i += 1
            continue
        if st == _VALUE_OR_END and c == _RBRACKET or st == _KEY_OR_END and c == _RBRACE:
            stack.pop()
            st = _AFTER
            i += 1
            continue
        if st == _KEY or st == _KEY_OR_END:
            if c != _QUOTE:
                return "expected a key at %d" % i
            st = _COLON
        else:
            st = _AFTER
        if c == _QUOTE:
            i += 1
            while True:
                if i >= n:
                    return "unterminated string"
                c = s[i]
                if c == _QUOTE:
                    break
                if c < 0x20:
                    return "control character in a string at %d" % i
                if c == _BACKSLASH:
                    i += 1
                    if i >= n or s[i] not in _ESC:
                        return "bad escape at %d" % i
                    if s[i] == 0x75:  # u
                        if i + 4 >= n or s[i + 1] not in _HEX or s[i + 2] not in _HEX \
                                or s[i + 3] not in _HEX or s[i + 4] not in _HEX:
                            return "bad \\u escape at %d" % i
                        if s[i + 1] in b"dD" and s[i + 2] in b"89abcdefABCDEF":
                            return "surrogate escape at %d" % i
                        i += 4
                elif c >= 0x80:
                    k = _utf8_len(s, i, n)
                    if not k:
                        return NOT_UTF8
                    i += k - 1
                i += 1
                work += 1
                if work >= _STEP:
                    work = 0
                    yield
            i += 1
        elif c == _LBRACE or c == _LBRACKET:
            if len(stack) >= MAX_DEPTH:
                return TOO_DEEP
            stack.append(c)
            st = _KEY_OR_END if c == _LBRACE else _VALUE_OR_END
            i += 1
        elif c == _MINUS or 0x30 <= c <= 0x39:
            if c == _MINUS:
                i += 1
            if i < n and s[i] == _ZERO:
                i += 1
            elif i < n and 0x31 <= s[i] <= 0x39:
                i = _skip_digits(s, i, n)
            else:
                return "bad number at %d" % i
            if i < n and s[i] == _DOT:
                j = i = i + 1
                i = _skip_digits(s, i, n)
                if i == j:
                    return "bad number at %d" % i
            if i < n and s[i] in b"eE":
                i += 1
                if i < n and s[i] in b"+-":
                    i += 1
                j = i
                i = _skip_digits(s, i, n)
                if i == j:
                    return "bad number at %d" % i
        else:
            for word in _LIT:
                k = len(word)
                j = 0
                while j < k and i + j < n and s[i + j] == word[j]:
                    j += 1
                if j == k:
                    i += k
                    break
            else:
                return NOT_UTF8 if c >= 0x80 and not _utf8_len(s, i, n) else "unexpected byte 0x%02x at %d" % (c, i)


def json_error(s):
    """scan_json run to its end at once (tests, small texts): None or the reason."""
    g = scan_json(s)
    while True:
        try:
            next(g)
        except StopIteration as e:
            return e.value if e.args else None


def finite(v):
    """True for an int, or a float that is neither NaN nor infinite. `v` must be a number."""
    return v - v == 0
