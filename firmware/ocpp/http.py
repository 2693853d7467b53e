"""A small async HTTP/1.1 client for firmware downloads and diagnostics uploads.

- `await get_to_file(url, path, fs=None, ca=None, max_bytes=..., timeout_ms=...)` -> (size,
  sha256 digest): GET into `path` through `fs`, streaming in 1 KB pieces and hashing while it
  writes (RAM does not grow with the file). The body goes to `path + ".part"`, which is renamed
  to `path` only when it is complete, so `path` never holds a partial file. Content-Length,
  chunked and read-until-close bodies; up to 3 redirects (301, 302, 303, 307, 308).
- `await upload(url, body, fs=None, ca=None, method="PUT", ...)` -> HTTP status: sends a file
  (`body` a path), several parts (a list of paths and bytes, sent as one body with a
  Content-Length) or any iterable of bytes (chunked); follows 307/308 for re-readable bodies.

http:// and https://. For https the server certificate must chain up to `ca` (the same CA text,
PEM or DER, the OCPP link uses; several PEM certificates may be concatenated) and name the host;
there is no unchecked TLS. `user:password@` in the URL becomes HTTP basic auth. Every failure is
an `HttpError` with `status` (the HTTP status code, or None when no answer came: network, TLS,
timeout) and a message naming host and port, never the URL's path, query or credentials.

Timeouts are real time: `timeout_ms` bounds every network step (connect with the TLS handshake,
each read, each write), so a transfer that keeps moving may take longer; one that stalls fails.
"""
import asyncio
import hashlib

from firmware import store
from firmware.ocpp import ws

CHUNK = 1024
MAX_REDIRECTS = 3
MAX_HEADERS = 64
DEFAULT_MAX_BYTES = 512 * 1024
DEFAULT_TIMEOUT_MS = 30000
_REDIRECTS = (301, 302, 303, 307, 308)


class HttpError(Exception):
    """`status`: the HTTP status code, or None when the server gave none."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def _unquote(s):
    out = bytearray()
    b = s.encode()
    i = 0
    while i < len(b):
        if b[i] == 37 and i + 3 <= len(b):  # %XX
            try:
                out.append(int(b[i + 1:i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        out.append(b[i])
        i += 1
    return bytes(out)


def parse_url(url):
    """(tls, host, port, path, auth) of an http:// or https:// URL; `path` includes the query,
    `auth` is the value of a basic Authorization header (bytes) or None. Raises ValueError."""
    if url.startswith("http://"):
        tls, rest = False, url[7:]
    elif url.startswith("https://"):
        tls, rest = True, url[8:]
    else:
        raise ValueError("URL must start with http:// or https://")
    i = rest.find("#")
    if i >= 0:
        rest = rest[:i]
    j = len(rest)
    for c in "/?":
        k = rest.find(c)
        if 0 <= k < j:
            j = k
    netloc, tail = rest[:j], rest[j:]
    if not tail.startswith("/"):
        tail = "/" + tail
    auth = None
    k = netloc.rfind("@")
    if k >= 0:
        user, netloc = netloc[:k], netloc[k + 1:]
        c = user.find(":")
        pw = b"" if c < 0 else _unquote(user[c + 1:])
        user = user if c < 0 else user[:c]
        auth = ws.basic_auth(_unquote(user).decode(), pw)
    _, host, port, path = ws.parse_url(("wss://" if tls else "ws://") + netloc + tail)
    return tls, host, port, path, auth


def join_url(base, location):
    """`location` (a redirect target: absolute URL, //host/path, /path or relative) against `base`."""
    if location.startswith("http://") or location.startswith("https://"):
        return location
    scheme = "https:" if base.startswith("https://") else "http:"
    if location.startswith("//"):
        return scheme + location
    rest = base[len(scheme) + 2:]
    i = rest.find("/")
    origin, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    origin = scheme + "//" + origin
    if location.startswith("/"):
        return origin + location
    q = path.find("?")
    if q >= 0:
        path = path[:q]
    return origin + path[:path.rfind("/") + 1] + location


class _Conn:
    """One connection, one request (Connection: close)."""

    def __init__(self, url, ca, timeout_ms):
        self.tls, self.host, self.port, self.path, self.auth = parse_url(url)
        if self.tls and ca is None:
            raise ValueError("https:// needs the CA certificate of the server (ca=...)")
        self.ca = ca
        self.timeout_ms = timeout_ms
        self.where = "%s:%d" % (self.host, self.port)
        self.r = self.w = None
        self.status = None

    async def _io(self, aw, what):
        try:
            return await ws.with_timeout(aw, self.timeout_ms)
        except asyncio.TimeoutError:
            raise HttpError(self.status, "%s: no progress within %d ms (%s)" % (self.where, self.timeout_ms, what))

    async def _connect(self):
        if self.tls:
            ctx = ws.tls_context(self.ca)
            self.r, self.w = await asyncio.open_connection(self.host, self.port, ssl=ctx, server_hostname=self.host)
        else:
            self.r, self.w = await asyncio.open_connection(self.host, self.port)

    async def start(self, method, headers=b""):
        """Connect and send the request head; raises HttpError for network and TLS failures."""
        try:
            await self._io(self._connect(), "connect")
            host = ("[%s]" % self.host) if ":" in self.host else self.host
            if self.port != (443 if self.tls else 80):
                host += ":%d" % self.port
            head = ("%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nUser-Agent: evse-fw\r\n"
                    % (method, self.path, host)).encode()
            if self.auth:
                head += b"Authorization: Basic " + self.auth + b"\r\n"
            await self.send(head + headers + b"\r\n")
        except Exception as e:
            raise self._failure(e, "connect")

    def _failure(self, e, what):
        if isinstance(e, HttpError):
            return e
        why = ws.tls_failure(e) if self.tls else None
        if why:
            return HttpError(None, "TLS with %s failed: %s" % (self.where, why))
        if isinstance(e, ValueError):
            return e
        return HttpError(self.status, "%s: %s failed (%s: %s)" % (self.where, what, e.__class__.__name__, e))

    async def send(self, data):
        self.w.write(data)
        await self._io(self._drain(), "send")

    async def _drain(self):
        await self.w.drain()

    async def _readline(self):
        return await self.r.readline()

    async def read_head(self):
        """Status line and headers; returns (status, {lowercase name: value bytes})."""
        try:
            line = await self._io(self._readline(), "status line")
            parts = line.split()
            if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
                raise HttpError(None, "%s did not answer with HTTP" % self.where)
            self.status = int(parts[1])
            headers = {}
            while True:
                line = await self._io(self._readline(), "headers")
                if not line:
                    raise HttpError(self.status, "%s closed the connection in the headers" % self.where)
                if line in (b"\r\n", b"\n"):
                    break
                if len(headers) >= MAX_HEADERS:
                    raise HttpError(self.status, "%s sent too many headers" % self.where)
                i = line.find(b":")
                if i > 0:
                    headers[bytes(line[:i].strip().lower())] = bytes(line[i + 1:].strip())
            if self.status == 100:  # an unasked-for "continue": the real answer follows
                self.status = None
                return await self.read_head()
            return self.status, headers
        except Exception as e:
            raise self._failure(e, "reading the answer")

    async def _readinto_once(self, mv):
        ri = getattr(self.r, "readinto", None)  # MicroPython: no intermediate copies
        while True:
            if ri is not None:
                n = await ri(mv)
                if n is None:  # TLS: no application data yet
                    continue
                return n
            data = await self.r.read(len(mv))
            n = len(data)
            mv[:n] = data
            return n

    async def readinto(self, mv):
        """Fill some of `mv`; 0 at the end of the stream."""
        try:
            return await self._io(self._readinto_once(mv), "body")
        except Exception as e:
            raise self._failure(e, "reading the body")

    async def close(self):
        w = self.w
        self.w = None
        if w is None:
            return
        try:
            t = getattr(w, "transport", None)
            if t is not None:  # CPython: drop the connection at once, no TLS goodbye
                t.abort()
            w.close()
            await ws.with_timeout(w.wait_closed(), 1000)
        except Exception:
            pass


async def _read_body(conn, headers, buf, sink, max_bytes):
    """Stream the body into `sink(memoryview)`; returns its size. Raises HttpError when it is
    truncated, malformed or over `max_bytes`."""
    mv = memoryview(buf)
    where, status = conn.where, conn.status
    total = 0
    if b"chunked" in headers.get(b"transfer-encoding", b"").lower():
        while True:
            try:
                line = await conn._io(conn._readline(), "chunk size")
            except Exception as e:
                raise conn._failure(e, "reading the body")
            if not line.endswith(b"\n"):
                raise HttpError(status, "%s: body truncated (chunked, after %d bytes)" % (where, total))
            i = line.find(b";")
            try:
                n = int(bytes(line[:i] if i >= 0 else line).strip(), 16)
            except ValueError:
                raise HttpError(status, "%s: bad chunk size" % where)
            if n == 0:
                while True:  # trailers up to the empty line
                    line = await conn._io(conn._readline(), "trailer")
                    if not line.strip():
                        break
                return total
            if total + n > max_bytes:
                raise HttpError(status, "%s: body over %d bytes" % (where, max_bytes))
            while n > 0:
                k = await conn.readinto(mv[:min(n, len(mv))])
                if not k:
                    raise HttpError(status, "%s: body truncated (chunked, after %d bytes)" % (where, total))
                sink(mv[:k])
                n -= k
                total += k
            if (await conn._io(conn._readline(), "chunk end")).strip():
                raise HttpError(status, "%s: bad chunk end" % where)
    length = headers.get(b"content-length")
    if length is not None:
        if not length.isdigit():
            raise HttpError(status, "%s: bad Content-Length" % where)
        want = int(length)
        if want > max_bytes:
            raise HttpError(status, "%s: body of %d bytes is over %d" % (where, want, max_bytes))
        while total < want:
            k = await conn.readinto(mv[:min(want - total, len(mv))])
            if not k:
                raise HttpError(status, "%s: body truncated: %d of %d bytes" % (where, total, want))
            sink(mv[:k])
            total += k
        return total
    while True:  # no length: the body ends when the server closes
        k = await conn.readinto(mv)
        if not k:
            return total
        total += k
        if total > max_bytes:
            raise HttpError(status, "%s: body over %d bytes" % (where, max_bytes))
        sink(mv[:k])


async def get_to_file(url, path, fs=None, ca=None, max_bytes=DEFAULT_MAX_BYTES, timeout_ms=DEFAULT_TIMEOUT_MS,
                      chunk=CHUNK):
    """Download `url` into `path`; returns (size, sha256 digest). See the module doc."""
    fs = fs or store.REAL
    part = path + ".part"
    buf = bytearray(chunk)
    for hop in range(MAX_REDIRECTS + 1):
        conn = _Conn(url, ca, timeout_ms)
        try:
            await conn.start("GET")
            status, headers = await conn.read_head()
            if status in _REDIRECTS and b"location" in headers:
                if hop == MAX_REDIRECTS:
                    raise HttpError(status, "%s: more than %d redirects" % (conn.where, MAX_REDIRECTS))
                url = join_url(url, headers[b"location"].decode())
                continue
            if not 200 <= status < 300:
                raise HttpError(status, "%s answered HTTP %d" % (conn.where, status))
            h = hashlib.sha256()
            f = fs.open(part, "wb")
            try:
                def sink(data):
                    f.write(data)
                    h.update(data)

                size = await _read_body(conn, headers, buf, sink, max_bytes)
            except BaseException:
                f.close()
                try:
                    fs.remove(part)
                except Exception:
                    pass
                raise
            f.close()
            fs.rename(part, path)
            fs.sync()
            return size, h.digest()
        finally:
            await conn.close()
    raise HttpError(None, "redirect loop")  # not reached


def _file_size(fs, path):
    f = fs.open(path, "rb")
    try:
        return f.seek(0, 2)
    finally:
        f.close()


def _parts(body):
    """A list of parts (paths and bytes) when `body` can be sent with a Content-Length, else None."""
    if isinstance(body, str):
        return [body]
    if isinstance(body, (list, tuple)) and all(isinstance(p, (str, bytes, bytearray)) for p in body):
        return list(body)
    return None


async def _send_parts(conn, parts, sizes, fs, buf):
    mv = memoryview(buf)
    for part, size in zip(parts, sizes):
        if not isinstance(part, str):
            await conn.send(part)
            continue
        f = fs.open(part, "rb")
        try:
            left = size
            while left > 0:
                n = f.readinto(mv[:min(left, len(mv))])
                if not n:  # the file shrank since its size was taken: keep the promised length
                    for i in range(min(left, len(mv))):
                        mv[i] = 10
                    n = min(left, len(mv))
                await conn.send(bytes(mv[:n]))
                left -= n
        finally:
            f.close()


async def upload(url, body, fs=None, ca=None, method="PUT", content_type="application/octet-stream",
                 timeout_ms=DEFAULT_TIMEOUT_MS, chunk=CHUNK):
    """Send `body` to `url`; returns the 2xx status. Raises HttpError otherwise (module doc)."""
    fs = fs or store.REAL
    parts = _parts(body)
    sizes = None
    if parts is not None:
        sizes = [_file_size(fs, p) if isinstance(p, str) else len(p) for p in parts]
    buf = bytearray(chunk)
    for hop in range(MAX_REDIRECTS + 1):
        conn = _Conn(url, ca, timeout_ms)
        try:
            extra = b"Content-Type: " + content_type.encode() + b"\r\n"
            if sizes is not None:
                extra += ("Content-Length: %d\r\n" % sum(sizes)).encode()
            else:
                extra += b"Transfer-Encoding: chunked\r\n"
            await conn.start(method, extra)
            try:
                if parts is not None:
                    await _send_parts(conn, parts, sizes, fs, buf)
                else:
                    for data in body:
                        if data:
                            await conn.send(("%x\r\n" % len(data)).encode() + bytes(data) + b"\r\n")
                    await conn.send(b"0\r\n\r\n")
            except Exception as e:
                raise conn._failure(e, "sending")
            status, headers = await conn.read_head()
            if status in (307, 308) and parts is not None and b"location" in headers and hop < MAX_REDIRECTS:
                url = join_url(url, headers[b"location"].decode())
                continue
            if not 200 <= status < 300:
                raise HttpError(status, "%s answered HTTP %d" % (conn.where, status))
            if b"content-length" in headers or b"transfer-encoding" in headers:
                try:  # read the (short) answer so the server sees a clean close
                    await _read_body(conn, headers, buf, lambda data: None, 65536)
                except HttpError:
                    pass
            return status
        finally:
            await conn.close()
    raise HttpError(None, "redirect loop")  # not reached
