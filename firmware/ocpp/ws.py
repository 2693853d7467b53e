"""WebSocket client for OCPP-J 1.6 (RFC 6455) over asyncio streams.

- `connect(url, charge_box_id, clock, ...)` opens one connection and returns a `WebSocket`:
  the URL is the endpoint + "/" + the percent-encoded charge box id (OCPP-J 3.1.1), a query
  string of the endpoint after it; the subprotocol must be `ocpp1.6`, the server's
  Sec-WebSocket-Accept is checked, HTTP basic auth (user = charge box id, password =
  AuthorizationKey) is sent when a password is set, none when it is empty (security profile 0), and
  `wss://` checks the server certificate against the configured CA and the host name (profile 2).
- `WebSocket`: text messages in and out (client frames masked, fragments reassembled up to
  `max_size`, a bigger message is refused with close code 1009 and never buffered), pings
  answered, `keepalive()` pings and declares the link dead when nothing comes back, close
  handshake, protocol errors close with 1002.
- `Link` keeps a connection up: reconnects with exponential backoff and full jitter, tells
  truthfully whether it is connected, and hands incoming messages to `recv()` one at a time.

Memory: a message is read into one receive buffer that the `Link` allocates once, at boot,
while the heap is still in one piece; `recv()` returns a memoryview of it (valid until the next
`recv()`), which `json.loads` reads in place. Of a message longer than the buffer (but within
`max_size`) only the head is kept and `size` tells the real length, so that the RPC layer can
still answer the call by its id. Outgoing frames are masked and written in PIECE-byte pieces from
the text itself. So a large frame needs no large block of free heap, which a fragmented 64 KB
heap often does not have.

The password never appears in an exception, a repr or a log line: messages name the host, the
port and what went wrong, and quote nothing the server sent except its HTTP status code.
Masking an outgoing frame is a byte loop: a few ms for an OCPP message, more for tens of KB;
the writer yields after each piece.
"""
import asyncio
import hashlib
import struct
import sys
from binascii import a2b_base64, b2a_base64

from firmware import dumps
from firmware.encoder import Encoder, utf8
from firmware.ocpp import random_bytes as _random_bytes

try:
    import micropython  # pyright: ignore[reportAssignmentType]
except ImportError:  # CPython (host tests): the viper function below runs as plain Python
    class micropython:  # noqa: N801 - stands in for the module  # pyright: ignore[reportRedeclaration]
        @staticmethod
        def viper(f):
            return f

    def ptr8(buf):  # viper's byte pointer: the buffer itself
        return buf

_MICROPYTHON = sys.implementation.name == "micropython"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "ocpp1.6"
DEFAULT_MAX_SIZE = 16384

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"


@micropython.viper  # every byte a client sends is masked (RFC 6455 5.3): 1 KB in Python took
def _mask(buf, at: int, n: int, key, pos: int):  # some 5 ms of ESP32 time, as viper code 0.05
    """XOR buf[at:at + n] with the 4-byte `key`, starting at byte `pos` of the payload."""
    b = ptr8(buf)
    m = ptr8(key)
    i = 0
    while i < n:
        b[at + i] ^= m[(pos + i) & 3]
        i += 1


class WSError(Exception):
    """Anything that went wrong with the WebSocket connection."""


class HandshakeError(WSError):
    """The server did not accept an OCPP 1.6 WebSocket; `status` is its HTTP status code."""

    def __init__(self, msg, status=None):
        super().__init__(msg)
        self.status = status


class TLSError(WSError):
    """The TLS handshake failed, e.g. the server certificate is not signed by the configured CA."""


class ClosedError(WSError):
    """The connection is closed; `code` is the close code (1006: lost without a close frame)."""

    def __init__(self, code, reason=""):
        super().__init__("connection closed (%d%s)" % (code, " " + reason if reason else ""))
        self.code = code
        self.reason = reason


if hasattr(asyncio, "sleep_ms"):
    _sleep_ms = asyncio.sleep_ms  # type: ignore[attr-defined]
else:
    async def _sleep_ms(ms):
        await asyncio.sleep(ms / 1000)


async def with_timeout(aw, ms):
    """`aw` with a time limit (raises asyncio.TimeoutError); `aw` must be a coroutine."""
    return await asyncio.wait_for(aw, ms / 1000)


def quote(text):
    """Percent-encode `text` (UTF-8) for a URL path segment, as RFC 3986 asks."""
    out = []
    for b in text.encode():
        out.append(chr(b) if b in _UNRESERVED else "%%%02X" % b)
    return "".join(out)


def parse_url(url):
    """(tls, host, port, path) of a ws:// or wss:// URL."""
    if url.startswith("ws://"):
        tls, rest, port = False, url[5:], 80
    elif url.startswith("wss://"):
        tls, rest, port = True, url[6:], 443
    else:
        raise ValueError("URL must start with ws:// or wss://")
    i = rest.find("/")
    netloc, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if "@" in netloc:
        raise ValueError("URL must not hold credentials; give the password separately")
    if netloc.startswith("["):  # IPv6 literal
        j = netloc.find("]")
        host, tail = netloc[1:j], netloc[j + 1:]
    else:
        j = netloc.rfind(":")
        host, tail = (netloc, "") if j < 0 else (netloc[:j], netloc[j:])
    if tail:
        if not tail.startswith(":") or not tail[1:].isdigit():
            raise ValueError("bad port in URL")
        port = int(tail[1:])
    if not host:
        raise ValueError("no host in URL")
    return tls, host, port, path


def _ca_certs(ca):
    """The DER certificates in `ca`: PEM or DER bytes/str, or the path of such a file."""
    if isinstance(ca, str) and "-----BEGIN" not in ca:
        with open(ca, "rb") as f:
            ca = f.read()
    if isinstance(ca, str):
        ca = ca.encode()
    if b"-----BEGIN" not in ca:
        return [bytes(ca)]
    certs, lines = [], None
    for line in ca.split(b"\n"):
        line = line.strip()
        if line.startswith(b"-----BEGIN"):
            lines = []
        elif line.startswith(b"-----END"):
            if lines is not None:
                certs.append(a2b_base64(b"".join(lines)))
            lines = None
        elif lines is not None:
            lines.append(line)
    if not certs:
        raise ValueError("no certificate in the CA data")
    return certs


def tls_context(ca):
    """A TLS client context that accepts only a server whose certificate chains up to `ca` and
    names the host we connect to (open_connection passes it as `server_hostname`).

    The runtimes differ in two ways, both handled here: MicroPython (mbedTLS) reads only DER
    through `cadata` (so PEM is decoded here, one certificate per call, which both runtimes
    accept) and its clients default to CERT_NONE, so CERT_REQUIRED is set explicitly (mbedTLS
    then also checks the host name); CPython's PROTOCOL_TLS_CLIENT checks both by default.
    """
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for der in _ca_certs(ca):
        ctx.load_verify_locations(cadata=der)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if not _MICROPYTHON:
        ctx.check_hostname = True  # type: ignore[attr-defined]
    return ctx


def tls_failure(e):
    """What went wrong in the TLS layer, when exception `e` came from it; else None."""
    if _MICROPYTHON:  # mbedTLS: OSError with a negative code, ValueError for a refused certificate
        if isinstance(e, ValueError):
            return str(e).strip() or "certificate refused"
        if isinstance(e, OSError) and e.args and isinstance(e.args[0], int) and e.args[0] < 0:
            return str(e.args[-1]) if len(e.args) > 1 else "mbedTLS error %d" % e.args[0]
        return None
    import ssl

    if not isinstance(e, ssl.SSLError):
        return None
    why = getattr(e, "verify_message", None)
    return (e.reason or e.__class__.__name__) + (" (%s)" % why if why else "")


def basic_auth(user, password):
    if isinstance(password, str):
        password = password.encode()
    return b2a_base64(user.encode() + b":" + password).strip()


def accept_key(key):
    """Sec-WebSocket-Accept expected for Sec-WebSocket-Key `key` (bytes, base64)."""
    return b2a_base64(hashlib.sha1(key + _GUID).digest()).strip()


def _header(op, n, key):
    """The head of one final client frame of `n` payload bytes, masked with `key`."""
    if n < 126:
        return struct.pack("!BB", 0x80 | op, 0x80 | n) + key
    if n < 65536:
        return struct.pack("!BBH", 0x80 | op, 0xFE, n) + key
    return struct.pack("!BBQ", 0x80 | op, 0xFF, n) + key


# Bytes masked and written at a time: most OCPP messages fit in one piece, so that a frame goes
# out in one write. (A frame of several pieces leaves in several TCP segments, and Nagle's rule
# with the peer's delayed ACK can hold each later one back some 40 ms.)
PIECE = 512


async def connect(url, charge_box_id, clock, password=None, ca=None, max_size=DEFAULT_MAX_SIZE,
                  timeout_ms=10000, buf=None, piece=None, ctx=None, enc=None):
    """Open an OCPP-J 1.6 WebSocket to `url` + "/" + charge box id; returns a `WebSocket`.

    `password`: the AuthorizationKey (str or bytes) for HTTP basic auth; None or empty: no
    Authorization header. `ca`: the CA
    certificate that must have signed a wss:// server's certificate (PEM or DER, bytes or str,
    or a file path); wss:// refuses to run without one. `buf`: the receive buffer (see the
    module's docstring; default: one of `max_size` bytes); `piece`: the send buffer (default:
    PIECE bytes); `ctx`: a TLS context made by `tls_context(ca)` to use instead of making one.
    Raises HandshakeError, TLSError, WSError (timeout), OSError (network) or ValueError (bad URL).
    """
    tls, host, port, path = parse_url(url)
    if tls and ca is None and ctx is None:
        raise ValueError("wss:// needs the CA certificate of the back end (ca=...)")
    if "#" in path:
        raise ValueError("a ws:// URL has no fragment (RFC 6455 section 3)")
    q = path.find("?")
    path, query = (path, "") if q < 0 else (path[:q], path[q:])
    if not path.endswith("/"):
        path += "/"
    path += quote(charge_box_id) + query
    auth = basic_auth(charge_box_id, password) if password else None
    ws = WebSocket(clock, max_size, buf, piece, enc)
    where = "%s:%d" % (host, port)
    try:
        if tls and ctx is None:
            ctx = tls_context(ca)
        await with_timeout(ws._open(host, port, path, auth, ctx if tls else None), timeout_ms)
    except asyncio.TimeoutError:
        await ws._shutdown(1006, "timeout")
        raise WSError("no WebSocket to %s within %d ms" % (where, timeout_ms))
    except BaseException as e:  # also a cancellation: never leave the socket open
        await ws._shutdown(1006, "handshake failed")
        if not isinstance(e, Exception):
            raise
        why = tls_failure(e) if tls else None
        if why:
            raise TLSError("TLS with %s failed: %s" % (where, why))
        raise
    return ws


class WebSocket:
    """One client connection. Use `connect()` to make one.

    Exactly one task may call `recv()` at a time; it also answers pings and sees pongs, so
    `keepalive()` only works while some task keeps calling `recv()`. Sending is safe from any task.
    """

    def __init__(self, clock, max_size=DEFAULT_MAX_SIZE, buf=None, piece=None, enc=None):
        self._clock = clock
        self._enc = enc  # firmware/encoder.py: a message given as a JSON value is encoded into it
        self.max_size = max_size
        self._buf = buf if buf is not None else bytearray(max_size)
        self._len = 0  # bytes of the message being received that are in _buf
        self.size = 0  # length of that message; after recv(): of the message returned
        self._ctl = bytearray(125)  # control frame payloads
        self._piece = piece if piece is not None else bytearray(PIECE)  # outgoing bytes being masked
        self.send_timeout_ms = 10000  # a frame not written within this: the link is dead
        self.open = False  # True while messages can be sent
        self.closed = False  # True once the socket is closed
        self.close_code = None
        self.close_reason = ""
        self.rx_frames = 0  # frames received, of any kind
        self.last_rx_ms = None  # clock.ticks_ms() of the last frame received
        self._r = self._w = None
        self._lock = asyncio.Lock()
        self._reader = None  # task inside recv()
        self._closing = False  # we sent a close frame
        self._close_seen = asyncio.Event()
        self._in_msg = False  # fragments of a message are being received
        self._host = ""

    def __repr__(self):
        state = "open" if self.open else ("closed %s" % self.close_code if self.closed else "closing")
        return "<WebSocket %s %s>" % (self._host, state)

    async def _open(self, host, port, path, auth, ctx):
        self._host = "%s:%d" % (host, port)
        if ctx is None:
            self._r, self._w = await asyncio.open_connection(host, port)
        else:
            self._r, self._w = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=host)
        key = b2a_base64(_random_bytes(16)).strip()
        hosthdr = ("[%s]" % host) if ":" in host else host
        if port != (443 if ctx else 80):
            hosthdr += ":%d" % port
        req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: %s\r\n"
               % (path, hosthdr, key.decode(), SUBPROTOCOL)).encode()
        if auth:
            req += b"Authorization: Basic " + auth + b"\r\n"
        self._w.write(req + b"\r\n")
        req = None
        await self._w.drain()
        line = await self._r.readline()
        parts = line.split()
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
            raise HandshakeError("%s did not answer with HTTP" % self._host)
        status = int(parts[1])
        headers = {}
        while True:
            line = await self._r.readline()
            if not line:
                raise HandshakeError("%s closed the connection during the handshake" % self._host, status)
            if line in (b"\r\n", b"\n"):
                break
            if len(headers) >= 64:
                raise HandshakeError("%s sent too many headers" % self._host, status)
            i = line.find(b":")
            if i > 0:
                headers[line[:i].strip().lower()] = line[i + 1:].strip()
        if status != 101:
            raise HandshakeError("%s refused the WebSocket: HTTP %d" % (self._host, status), status)
        if headers.get(b"upgrade", b"").lower() != b"websocket" or \
                b"upgrade" not in headers.get(b"connection", b"").lower():
            raise HandshakeError("%s did not upgrade to WebSocket" % self._host, status)
        if headers.get(b"sec-websocket-accept") != accept_key(key):
            raise HandshakeError("%s sent a wrong Sec-WebSocket-Accept" % self._host, status)
        if headers.get(b"sec-websocket-protocol") != SUBPROTOCOL.encode():
            raise HandshakeError("%s did not select subprotocol %s" % (self._host, SUBPROTOCOL), status)
        self.open = True
        self.last_rx_ms = self._clock.ticks_ms()

    # -- sending ------------------------------------------------------------------------------

    async def _send_frame(self, op, payload, enc=None):
        if isinstance(payload, str):
            payload = utf8(payload)
        async with self._lock:
            if self.closed:
                raise ClosedError(self.close_code, self.close_reason)
            if enc is not None:  # a JSON value: encoded now, under the lock; the outbox keeps off
                n = enc.load(payload)  # the encoder until the frame is out (Encoder.busy)
                chunks = enc.pieces()
                enc.busy = True
            else:
                n = len(payload)
                chunks = (payload,)
            try:
                await with_timeout(self._write_frame(op, n, chunks), self.send_timeout_ms)
            except (OSError, EOFError, asyncio.TimeoutError):  # TimeoutError: nothing moves
                await self._shutdown(1006, "connection lost")
                raise ClosedError(1006, "connection lost")
            except Exception:  # (MemoryError) part of a frame is out: the stream is broken
                await self._shutdown(1011, "frame cut short")
                raise ClosedError(1011, "frame cut short")
            finally:
                if enc is not None:
                    enc.busy = False
                    enc.release()

    async def _write_frame(self, op, n, chunks):
        """One frame of `n` payload bytes that `chunks` yields (bytes-likes), masked through the
        send buffer and written a buffer-full at a time."""
        key = _random_bytes(4)
        hdr = _header(op, n, key)
        h = len(hdr)
        piece = self._piece
        piece[:h] = hdr  # a small frame goes out in one write, as one TCP segment
        view = memoryview(piece)
        w = self._w
        pos = 0  # payload bytes masked so far
        fill = h  # bytes in the send buffer
        size = len(piece)
        for chunk in chunks:
            src = memoryview(chunk)
            m = len(src)
            at = 0
            while at < m:
                k = min(m - at, size - fill)
                piece[fill:fill + k] = src[at:at + k]
                _mask(piece, fill, k, key, pos)
                fill += k
                at += k
                pos += k
                if fill == size:
                    w.write(view)  # both runtimes copy what they can not write at once
                    fill = 0
                    await self._drain()
        if fill:
            w.write(view[:fill])
            await self._drain()

    async def _drain(self):
        await self._w.drain()

    async def send(self, text):
        """Send one text message. Raises ClosedError when the connection is not open."""
        if not self.open:
            raise ClosedError(self.close_code or 1006, self.close_reason)
        await self._send_frame(TEXT, text)  # (a str goes out without a copy: _send_frame)

    async def send_json(self, value):
        """Send one text message holding `value` as JSON, encoded under the send lock into the
        encoder given at creation (no block of heap the size of the message), or as a str
        without one."""
        enc = self._enc
        if enc is None:
            await self.send(dumps(value))
            return
        if not self.open:
            raise ClosedError(self.close_code or 1006, self.close_reason)
        await self._send_frame(TEXT, value, enc)

    async def ping(self, data=b""):
        if not self.open:
            raise ClosedError(self.close_code or 1006, self.close_reason)
        await self._send_frame(PING, data)

    async def _send_close(self, code, reason=""):
        if self._closing or self.closed:
            return
        self._closing = True
        self.open = False
        try:
            await with_timeout(self._send_frame(CLOSE, struct.pack("!H", code) + reason.encode()[:120]), 1000)
        except Exception:  # a dead link: the socket gets closed anyway
            pass

    # -- receiving ----------------------------------------------------------------------------

    async def _read_into(self, buf):
        mv = memoryview(buf)
        pos = 0
        readinto = getattr(self._r, "readinto", None)  # MicroPython: no intermediate copies
        while pos < len(buf):
            if readinto:
                k = await readinto(mv[pos:])
                if k is None:  # TLS: no application data yet
                    continue
            else:
                chunk = await self._r.read(len(buf) - pos)
                k = len(chunk)
                mv[pos:pos + k] = chunk
            if not k:
                raise EOFError
            pos += k

    async def _skip(self, n):
        """Read past n bytes of the stream, through the control-frame buffer (no garbage; only
        the reading task uses it, while senders mask into _piece)."""
        view = memoryview(self._ctl)
        while n > 0:
            k = min(n, len(view))
            await self._read_into(view[:k])
            n -= k

    async def _fail(self, code, reason, skip=None):
        """Close with `code` because of what the server sent. After a protocol error the stream
        is out of step, so the socket is closed at once; a message that is only too big is
        skipped (`skip` bytes, never buffered) and the server gets a second to answer the
        close frame, so that it learns the code instead of seeing a reset."""
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        await self._send_close(code, reason)
        if skip is not None:
            self._reader = None  # the skipping below ends by itself
            try:
                await with_timeout(self._skip_until_close(skip), 1000)
            except Exception:
                pass
        await self._shutdown(code, reason)
        raise ClosedError(code, reason)

    async def _skip_until_close(self, n):
        await self._skip(n)
        await self._drain_until_close()

    async def _next(self):
        """Read one frame; returns a complete text message or None (control frame handled)."""
        b0, b1 = await self._r.readexactly(2)
        fin, op, n = b0 & 0x80, b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", await self._r.readexactly(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", await self._r.readexactly(8))[0]
        self.rx_frames += 1
        self.last_rx_ms = self._clock.ticks_ms()
        if b0 & 0x70:
            await self._fail(1002, "reserved bits set")
        if b1 & 0x80:
            await self._fail(1002, "masked frame from server")
        if op >= 8:
            if op not in (CLOSE, PING, PONG):
                await self._fail(1002, "unknown opcode")
            if not fin or n > 125:
                await self._fail(1002, "bad control frame")
        elif op not in (CONT, TEXT, BINARY):
            await self._fail(1002, "unknown opcode")
        elif self._closing:  # data after our close frame is not wanted, nor buffered
            await self._skip(n)
            return None
        elif (op == CONT) != self._in_msg:
            await self._fail(1002, "bad fragmentation")
        if op >= 8:  # a control frame, at most 125 bytes
            payload = memoryview(self._ctl)[:n]
            await self._read_into(payload)
            if op == PING:
                if not self._closing:
                    await self._send_frame(PONG, payload)
                return None
            if op == PONG:
                return None
            await self._on_close(payload)
        if op == BINARY:
            await self._fail(1003, "binary frames are not OCPP-J", n)
        if op == TEXT:
            self._len = self.size = 0
        if self.size + n > self.max_size:
            self._in_msg = False
            await self._fail(1009, "message too big", n)
        buf = self._buf
        k = min(n, len(buf) - self._len)  # beyond the buffer: counted in size, not kept
        if k:
            await self._read_into(memoryview(buf)[self._len:self._len + k])
        if n > k:
            await self._skip(n - k)
        self._len += k
        self.size += n
        self._in_msg = not fin
        if not fin:
            return None
        return memoryview(buf)[:self._len]

    async def _on_close(self, payload):
        code, reason = 1005, ""
        if len(payload) == 1:
            await self._fail(1002, "bad close frame")
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            try:
                reason = str(payload[2:], "utf-8")
            except UnicodeError:
                reason = ""
        self._close_seen.set()
        if not self._closing:  # the server started the close handshake: answer it
            await self._send_close(code if 1000 <= code < 5000 and code not in (1005, 1006, 1015) else 1000)
            self.close_code, self.close_reason = code, reason
        await self._shutdown(self.close_code or code, self.close_reason or reason)
        raise ClosedError(self.close_code, self.close_reason)

    async def recv(self):
        """The next text message: a memoryview of the receive buffer, valid until the next
        recv(); `size` is its real length (more than the view's when the message was longer
        than the buffer). Its bytes are not checked for UTF-8: the RPC layer's JSON check does
        that. Raises ClosedError once the connection is closed."""
        if self.closed:
            raise ClosedError(self.close_code, self.close_reason)
        self._reader = asyncio.current_task()
        try:
            while True:
                msg = await self._next()
                if msg is not None and not self._closing:
                    return msg
        except asyncio.CancelledError:
            if not self.closed:
                raise
            # Closed by another task (close(), keepalive) while we waited: not a cancellation.
            task = asyncio.current_task()
            if hasattr(task, "uncancel"):  # CPython counts cancellations
                task.uncancel()  # type: ignore[attr-defined]
            raise ClosedError(self.close_code, self.close_reason)
        except (EOFError, OSError):
            await self._shutdown(1006, "connection lost")
            raise ClosedError(1006, "connection lost")
        except MemoryError:
            # A frame within max_size that the heap can not hold right now: the stream is in
            # the middle of it, so the connection can not go on. Close and let the link
            # reconnect; the back end times its call out and may send it again.
            self._in_msg = False
            await self._shutdown(1009, "no memory for the message")
            raise ClosedError(1009, "no memory for the message")
        finally:
            self._reader = None

    async def recv_text(self):
        """recv() as a str (tests and tools: it copies the message)."""
        m = await self.recv()
        try:
            return str(m, "utf-8")
        except UnicodeError:
            await self._fail(1007, "text is not UTF-8")

    # -- liveness and closing -----------------------------------------------------------------

    async def keepalive(self, interval_ms):
        """Ping every `interval_ms` (a number, or a function giving the current one; 0: no pings).
        When nothing at all arrived in the interval after a ping, the link is dead and gets
        closed (code 1006), so a half-open connection is noticed within two intervals. Returns
        when the connection is closing or closed."""
        sleep = getattr(self._clock, "sleep_ms", None) or _sleep_ms  # the clock's time, also virtual
        while self.open:
            ms = interval_ms() if callable(interval_ms) else interval_ms
            if not ms:
                await sleep(1000)
                continue
            seen = self.rx_frames
            try:
                await with_timeout(self.ping(), ms)
            except (ClosedError, asyncio.TimeoutError):
                if self.open:
                    await self._shutdown(1006, "ping not sent within %d ms" % ms)
                return
            await sleep(ms)
            if self.open and self.rx_frames == seen:  # (a close handshake has its own time limit)
                await self._shutdown(1006, "no answer to ping within %d ms" % ms)

    async def close(self, code=1000, reason="", timeout_ms=2000):
        """Close handshake: send a close frame, wait up to `timeout_ms` for the server's, then
        close the socket."""
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        await self._send_close(code, reason)
        try:
            if self._reader is not None:  # the reading task will see the server's close frame
                await with_timeout(self._wait_close_seen(), timeout_ms)
            else:
                await with_timeout(self._drain_until_close(), timeout_ms)
        except Exception:
            pass
        await self._shutdown(code, reason)

    async def _wait_close_seen(self):
        await self._close_seen.wait()

    async def _drain_until_close(self):
        try:
            while True:
                await self._next()
        except ClosedError:
            pass

    def abort(self):
        """Drop the connection at once, from synchronous code (a power cut in the simulator)."""
        self.closed = True
        self.open = False
        if self.close_code is None:
            self.close_code, self.close_reason = 1006, "aborted"
        w = self._w
        if w is None:
            return
        t = getattr(w, "transport", None)
        if t is not None:  # CPython
            t.abort()
        else:  # MicroPython's stream: the socket is `s`
            try:
                w.s.close()
            except Exception:
                pass

    async def _shutdown(self, code, reason):
        """Close the socket now (no handshake); a task blocked in recv() gets ClosedError."""
        if self.closed:
            return
        self.closed = True
        self.open = False
        if self.close_code is None:
            self.close_code, self.close_reason = code, reason
        self._close_seen.set()
        task = self._reader
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        w = self._w
        if w is None:
            return
        try:
            t = getattr(w, "transport", None)
            if t is not None:  # CPython: drop the connection at once, no TLS goodbye
                t.abort()
            w.close()
            await with_timeout(w.wait_closed(), 1000)  # on MicroPython this is what closes the socket
        except Exception:
            pass


class Backoff:
    """Delays between reconnect attempts: full jitter, i.e. uniform in [0, min(cap, first * 2**n)]
    for the n-th failure in a row; `reset()` after a connection that stayed up."""

    def __init__(self, first_ms=1000, cap_ms=300000, randint=None):
        if randint is None:
            import random

            randint = random.randint
        self.first_ms, self.cap_ms, self.randint = first_ms, cap_ms, randint
        self.failures = 0

    def ceiling_ms(self):
        c = self.first_ms
        for _ in range(self.failures):
            c *= 2
            if c >= self.cap_ms:
                return self.cap_ms
        return min(c, self.cap_ms)

    def next_ms(self):
        c = self.ceiling_ms()
        self.failures += 1
        return self.randint(0, c)

    def reset(self):
        self.failures = 0


class Link:
    """Keeps an OCPP-J connection up and says truthfully whether it is.

    `start()` (or `await run()`) connects and reconnects after every loss, waiting `Backoff`
    delays; a connection that stayed up `stable_ms` resets the backoff. `connected` is True only
    while the WebSocket is open and answering pings. `send(text)` raises ClosedError when the
    link is down; `recv()` waits for the next message across reconnects. A message is a view of
    the receive buffer (`buf`, a bytearray; allocate it early, while the heap is in one piece;
    default: `max_size` bytes allocated here), valid until the next `recv()`: the
    link reads nothing more from the network until then; `last_size` is its real length. A
    message not taken before its connection ends is dropped and counted in `dropped`. `on_up()` and `on_down(reason)` are
    called on each change, `on_fail(reason)` after each failed connection attempt. A wss://
    connection attempt waits while `tls_gate()` (if set) says no TLS handshake may start now; its
    TLS context (the CA parsed, some 3 KB in one piece) is made at the first attempt and kept for
    every reconnection, as the heap is no longer in one piece after hours. `ping_interval_s` (WebSocketPingInterval, 0 = off) and `password`
    may be changed at any time; they apply from the next ping/connection.
    """

    def __init__(self, url, charge_box_id, clock, password=None, ca=None, ping_interval_s=60,
                 max_size=DEFAULT_MAX_SIZE, connect_timeout_ms=10000, backoff=None, stable_ms=60000,
                 buf=None, on_up=None, on_down=None, sleep_ms=None, on_fail=None, piece=None, enc=None):
        self.url, self.charge_box_id, self.clock = url, charge_box_id, clock
        self.password, self.ca = password, ca
        self.ping_interval_s = ping_interval_s
        self.max_size, self.connect_timeout_ms = max_size, connect_timeout_ms
        self.backoff = backoff or Backoff()
        self.stable_ms = stable_ms
        self.on_up, self.on_down, self.on_fail = on_up, on_down, on_fail
        self._sleep_ms = sleep_ms or _sleep_ms
        self._buf = buf if buf is not None else bytearray(max_size)
        self._piece = piece if piece is not None else bytearray(PIECE)
        self._enc = enc if enc is not None else Encoder()  # for send_json
        self._msg = None  # the message waiting for recv()
        self.last_size = 0
        self._has_msg = asyncio.Event()
        self._free = asyncio.Event()  # nobody holds a message in the buffer
        self._free.set()
        self._held = False  # recv() returned a message that is still in use
        self.dropped = 0
        self.attempts = 0  # connection attempts so far
        self.last_error = None  # why the last attempt or connection ended
        self.ws = None
        self.connecting = False  # a connection attempt is in progress
        self.tls_gate = None
        self.gated = False  # a wss:// attempt waits for tls_gate()
        self._ctx = None
        self._task = None
        self._stopped = False

    def __repr__(self):
        return "<Link %s %s>" % (self.url, "connected" if self.connected else "down")

    @property
    def connected(self):
        ws = self.ws
        return ws is not None and ws.open

    def start(self):
        self._stopped = False
        self._task = asyncio.create_task(self.run())
        return self._task

    def abort(self):
        """Stop at once, from synchronous code: the board lost power (simulator)."""
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
        ws = self.ws
        if ws is not None:
            ws.abort()
        self.ws = self.on_up = self.on_down = self.on_fail = None
        self._msg = self._buf = self._piece = self.tls_gate = self._ctx = None

    async def stop(self):
        """Close the connection (close handshake) and stop reconnecting."""
        self._stopped = True
        ws = self.ws
        if ws is not None:
            await ws.close(1000)
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            try:
                await self._task
            except BaseException:
                pass
            self._task = None

    async def reconnect(self, reason):
        """Close the connection (close handshake) and connect again within a second, with the
        password as it is now (a new AuthorizationKey: security whitepaper A01)."""
        self.backoff.reset()
        ws = self.ws
        if ws is not None:
            await ws.close(1000, reason)

    async def send(self, text):
        ws = self.ws
        if ws is None or not ws.open:
            raise ClosedError(1006, "not connected")
        await ws.send(text)

    async def send_json(self, value):
        ws = self.ws
        if ws is None or not ws.open:
            raise ClosedError(1006, "not connected")
        await ws.send_json(value)

    async def recv(self):
        if self._held:  # done with the previous message: the buffer may be reused
            self._held = False
            self._free.set()
        while self._msg is None:
            self._has_msg.clear()
            await self._has_msg.wait()
        m, self._msg = self._msg, None
        self._held = True
        return m

    async def run(self):
        while not self._stopped:
            gate = self.tls_gate
            if gate is not None and self.url.startswith("wss:") and not gate():
                self.gated = True
                await self._sleep_ms(1000)
                continue
            self.gated = False
            self.attempts += 1
            self.connecting = True
            try:
                if self._ctx is None and self.url.startswith("wss:") and self.ca is not None:
                    self._ctx = tls_context(self.ca)
                ws = await connect(self.url, self.charge_box_id, self.clock, self.password, self.ca,
                                   self.max_size, self.connect_timeout_ms, self._buf, self._piece, self._ctx,
                                   self._enc)
            except Exception as e:
                self.connecting = False
                self.last_error = "%s: %s" % (e.__class__.__name__, e)
                self._call(self.on_fail, self.last_error)
                await self._sleep_ms(self.backoff.next_ms())
                continue
            self.connecting = False
            up_at = self.clock.ticks_ms()
            self.ws = ws
            self.last_error = None
            self._call(self.on_up)
            try:
                await self._serve(ws)
            except Exception as e:  # whatever happens to one connection, the link goes on
                ws.close_code, ws.close_reason = ws.close_code or 1011, "%s: %s" % (e.__class__.__name__, e)
            finally:
                await ws._shutdown(1006, "link stopped")
                self.ws = None
                self.last_error = "closed (%s %s)" % (ws.close_code, ws.close_reason)
                self._call(self.on_down, self.last_error)
            if self.clock.ticks_diff(self.clock.ticks_ms(), up_at) >= self.stable_ms:
                self.backoff.reset()
            if not self._stopped:
                await self._sleep_ms(self.backoff.next_ms())

    async def _serve(self, ws):
        ka = asyncio.create_task(ws.keepalive(lambda: int(self.ping_interval_s * 1000)))
        try:
            while True:
                await self._free.wait()
                self._free.clear()  # the buffer is the connection's until recv() hands it back
                try:
                    msg = await ws.recv()
                except BaseException:
                    self._free.set()
                    raise
                self._msg = msg
                self.last_size = ws.size
                self._has_msg.set()
        except ClosedError:
            pass
        finally:
            ka.cancel()
            if self._msg is not None:  # not taken, and its connection is gone: nor is the answer
                self._msg = None
                self.dropped += 1
                self._free.set()

    def _call(self, cb, *args):
        if cb is not None:
            try:
                cb(*args)
            except Exception as e:  # a broken callback must not take the link down
                self.last_error = "callback failed: %r" % e
