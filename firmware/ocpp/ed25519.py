"""Ed25519 signature verification (RFC 8032, section 5.1.7): pure Python big-int arithmetic.

`verify(public_key, message, signature)` -> bool. Strict like OpenSSL (the `cryptography`
package): S must be below the group order L (no malleable signatures), R is compared by its
encoding (a non-canonical R is refused), the public key must decode (RFC 8032 5.1.3: y < p,
no "negative zero" x) and the check is the cofactorless [S]B == R + [k]A.

`verify_steps(...)` is the same check cut into slices: a generator that yields None between
slices (about one bit of the scalars each) and finally yields the answer. A task that must not
stall other tasks (the charger's control loop) runs it as
    for ok in ed25519.verify_steps(pk, msg, sig):
        if ok is None: await sleep_ms(0)
Slices are one bit of the scalars or 32 bits of a modular exponent: about 1/300 of the whole.

SHA-512 comes from hashlib where the runtime has it (CPython), else from the small pure
implementation below (MicroPython has only sha1/sha256); one 128-byte block for a
32-byte message.
"""
try:
    from hashlib import sha512 as _hsha512  # type: ignore[attr-defined]
except ImportError:
    _hsha512 = None

P = 2 ** 255 - 19
L = 2 ** 252 + 27742317777372353535851937790883648493
_D = 0x52036CEE2B6FFE738CC740797779E89800700A4D4141D8AB75EB4DCA135978A3  # -121665/121666
_D2 = 2 * _D % P
_I = 0x2B8324804FC1DF0B2B4D00993DFBD7A72F431806AD2FE478C4EE1B274A0EA0B0  # sqrt(-1)
_BX = 0x216936D3CD6E53FEC0A4E231FDD6DC5C692CC7609525A7B2C9562D608F25D51A
_BY = 0x6666666666666666666666666666666666666666666666666666666666666658

_M64 = 0xFFFFFFFFFFFFFFFF
_IV = "6a09e667f3bcc908bb67ae8584caa73b3c6ef372fe94f82ba54ff53a5f1d36f1" \
      "510e527fade682d19b05688c2b3e6c1f1f83d9abfb41bd6b5be0cd19137e2179"
_K = ("428a2f98d728ae227137449123ef65cdb5c0fbcfec4d3b2fe9b5dba58189dbbc3956c25bf348b53859f111f1b605d019"
      "923f82a4af194f9bab1c5ed5da6d8118d807aa98a303024212835b0145706fbe243185be4ee4b28c550c7dc3d5ffb4e2"
      "72be5d74f27b896f80deb1fe3b1696b19bdc06a725c71235c19bf174cf692694e49b69c19ef14ad2efbe4786384f25e3"
      "0fc19dc68b8cd5b5240ca1cc77ac9c652de92c6f592b02754a7484aa6ea6e4835cb0a9dcbd41fbd476f988da831153b5"
      "983e5152ee66dfaba831c66d2db43210b00327c898fb213fbf597fc7beef0ee4c6e00bf33da88fc2d5a79147930aa725"
      "06ca6351e003826f142929670a0e6e7027b70a8546d22ffc2e1b21385c26c9264d2c6dfc5ac42aed53380d139d95b3df"
      "650a73548baf63de766a0abb3c77b2a881c2c92e47edaee692722c851482353ba2bfe8a14cf10364a81a664bbc423001"
      "c24b8b70d0f89791c76c51a30654be30d192e819d6ef5218d69906245565a910f40e35855771202a106aa07032bbd1b8"
      "19a4c116b8d2d0c81e376c085141ab532748774cdf8eeb9934b0bcb5e19b48a8391c0cb3c5c95a634ed8aa4ae3418acb"
      "5b9cca4f7763e373682e6ff3d6b2b8a3748f82ee5defb2fc78a5636f43172f6084c87814a1f0ab728cc702081a6439ec"
      "90befffa23631e28a4506cebde82bde9bef9a3f7b2c67915c67178f2e372532bca273eceea26619cd186b8c721c0c207"
      "eada7dd6cde0eb1ef57d4f7fee6ed17806f067aa72176fba0a637dc5a2c898a6113f9804bef90dae1b710b35131c471b"
      "28db77f523047d8432caab7b40c724933c9ebe0a15c9bebc431d67c49c100d4c4cc5d4becb3e42b6597f299cfc657e2a"
      "5fcb6fab3ad6faec6c44198c4a475817")


def _rot(x, n):
    return ((x >> n) | (x << (64 - n))) & _M64


def _sha512_steps(m, out):
    """Append SHA-512 (FIPS 180-4) of bytes `m` to `out`, in pure Python (64-bit words as
    ints, the message schedule in a rolling window of 16); a generator yielding every 16 rounds."""
    h = [int(_IV[i:i + 16], 16) for i in range(0, 128, 16)]
    n = len(m)
    m = bytes(m) + b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    for o in range(0, len(m), 128):
        w = [int.from_bytes(m[o + i:o + i + 8], "big") for i in range(0, 128, 8)]
        a, b, c, d, e, f, g, hh = h
        for i in range(80):
            j = i & 15
            if i >= 16:
                x, y = w[(i - 15) & 15], w[(i - 2) & 15]
                w[j] = (w[j] + w[(i - 7) & 15] + (_rot(x, 1) ^ _rot(x, 8) ^ (x >> 7))
                        + (_rot(y, 19) ^ _rot(y, 61) ^ (y >> 6))) & _M64
            t = (hh + (_rot(e, 14) ^ _rot(e, 18) ^ _rot(e, 41)) + ((e & f) ^ ((e ^ _M64) & g))
                 + int(_K[16 * i:16 * i + 16], 16) + w[j])
            u = (_rot(a, 28) ^ _rot(a, 34) ^ _rot(a, 39)) + ((a & b) ^ (a & c) ^ (b & c))
            hh, g, f, e, d, c, b, a = g, f, e, (d + t) & _M64, c, b, a, (t + u) & _M64
            if j == 15:
                yield None
        h = [(x + y) & _M64 for x, y in zip(h, (a, b, c, d, e, f, g, hh))]
    out.append(b"".join(x.to_bytes(8, "big") for x in h))


def sha512_py(m):
    """SHA-512 of bytes `m` in pure Python (what MicroPython uses; it has no hashlib.sha512)."""
    out = []
    for _ in _sha512_steps(m, out):
        pass
    return out[0]


# Points in extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, x*y = T/Z (RFC 8032 5.1.4).

def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % P
    b = (y1 + x1) * (y2 + x2) % P
    c = t1 * _D2 * t2 % P
    d = 2 * z1 * z2 % P
    e, f, g, h = b - a, d - c, d + c, b + a
    return e * f % P, g * h % P, f * g % P, e * h % P


def _dbl(p):
    x, y, z, _ = p
    a = x * x % P
    b = y * y % P
    c = 2 * z * z % P
    h = a + b
    e = h - (x + y) * (x + y) % P
    g = a - b
    f = c + g
    return e * f % P, g * h % P, f * g % P, e * h % P


def _pow(b, e, out):
    """Append b**e mod P to `out`; a generator yielding every 32 bits of the exponent (e < 2**255)."""
    r = 1
    i = 255
    while i:
        i -= 1
        r = r * r % P
        if e >> i & 1:
            r = r * b % P
        if not i & 31:
            yield None
    out.append(r)


def _decode_steps(s, out):
    """Append the point encoded by 32 bytes `s` to `out`, or None when they encode no point
    (RFC 8032 5.1.3: y < p, a square root exists, no "negative zero" x)."""
    y = int.from_bytes(s, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    if y >= P:
        out.append(None)
        return
    u = (y * y - 1) % P
    v = (_D * y * y + 1) % P
    v3 = v * v * v % P
    r = []
    yield from _pow(u * v3 * v3 * v % P, (P - 5) // 8, r)
    x = u * v3 * r[0] % P
    vx2 = v * x * x % P
    if vx2 != u:
        if vx2 != P - u:
            out.append(None)
            return
        x = x * _I % P
    if x == 0 and sign:
        out.append(None)
        return
    if x & 1 != sign:
        x = P - x
    out.append((x, y, 1, x * y % P))


def _decode(s):
    out = []
    for _ in _decode_steps(s, out):
        pass
    return out[0]


def verify_steps(public_key, message, signature):
    """Generator: yields None between slices of work, then True/False (see the module doc)."""
    ok = False
    if len(public_key) == 32 and len(signature) == 64:
        r = bytes(signature[:32])
        s = int.from_bytes(bytes(signature[32:]), "little")
        a = []
        if s < L:
            yield from _decode_steps(bytes(public_key), a)
        if a and a[0] is not None:
            a = a[0]
            m = r + bytes(public_key) + bytes(message)
            h = []
            if _hsha512 is not None:
                h.append(_hsha512(m).digest())
            else:
                yield from _sha512_steps(m, h)
            k = int.from_bytes(h[0], "little") % L
            b = (_BX, _BY, 1, _BX * _BY % P)
            na = (P - a[0], a[1], a[2], P - a[3])  # -A
            both = _add(b, na)
            q = (0, 1, 1, 0)  # neutral element
            for i in range(252, -1, -1):  # Straus: [S]B + [k](-A), both scalars < L < 2**253
                q = _dbl(q)
                bit = (s >> i) & 1 | ((k >> i) & 1) << 1
                if bit:
                    q = _add(q, b if bit == 1 else na if bit == 2 else both)
                yield None
            zi = []
            yield from _pow(q[2], P - 2, zi)  # encode [S]B - [k]A, compare with R
            x, y = q[0] * zi[0] % P, q[1] * zi[0] % P
            ok = (y | (x & 1) << 255).to_bytes(32, "little") == r
    yield ok


def verify(public_key, message, signature):
    """True when `signature` (64 bytes) is public_key's (32 bytes) Ed25519 signature of `message`."""
    ok = False
    for ok in verify_steps(public_key, message, signature):
        pass
    return ok
