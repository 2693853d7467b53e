"""Blocking clients for the test harness's control ports on 127.0.0.1, under CPython and the unix
MicroPython port alike (only `socket` and `json`; no http.client, no urllib).

    proxy_command(port, "down")                    -> "ok"        (tests_host/netproxy.py control port)
    http_json("POST", port, "/command", {"cp": "CP1", "action": "Reset", "payload": {"type": "Soft"}})
                                                   -> (200, {...}) (tools/csms.py control API)

It runs inside the simulator, so it allocates little: one request buffer, a 1 KB header buffer, the
body read into a buffer of its Content-Length (measured on the unix port: about 4.8 KB at the peak of
an http_json call with a small answer, 1.4 KB for proxy_command, all of it garbage afterwards). A refused or silent port raises OSError; a reply that
is not HTTP or not JSON raises ValueError.
"""
import json
import socket

HOST = "127.0.0.1"
_HEADER_MAX = 1024  # the csms answers with about 110 bytes of headers


def _connect(port, timeout_s):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout_s)
        s.connect(socket.getaddrinfo(HOST, port)[0][-1])
    except BaseException:
        s.close()
        raise
    return s


def _send_all(s, data):
    """All of `data`: CPython's sendall; MicroPython's stream write, which on a blocking socket
    returns once all is written (the 32-bit virtual ESP32's socket has no sendall)."""
    (getattr(s, "sendall", None) or s.write)(data)


def _recv_some(s, mv):
    """Read what has arrived (at least 1 byte, 0 at EOF) into memoryview `mv`; the number of bytes."""
    ri = getattr(s, "recv_into", None)  # CPython
    if ri is not None:
        return ri(mv)
    d = s.recv(min(len(mv), 256))  # MicroPython: its readinto waits until the buffer is full
    mv[:len(d)] = d
    return len(d)


def _read_exact(s, mv):
    """Fill memoryview `mv`; the number of bytes read (less only at EOF)."""
    ri = getattr(s, "recv_into", None)
    have = 0
    while have < len(mv):
        n = ri(mv[have:]) if ri is not None else s.readinto(mv[have:])
        if not n:
            break
        have += n
    return have


def proxy_command(port, line, timeout_s=5):
    """Send one command line to a netproxy control port; its one-line answer, without the newline."""
    s = _connect(port, timeout_s)
    try:
        _send_all(s, line.encode() + b"\n")
        buf = bytearray(256)
        mv = memoryview(buf)
        got = 0
        while True:
            if got == len(buf):  # a long answer (stats): grow once in a while
                buf.extend(bytes(len(buf)))
                mv = memoryview(buf)
            n = _recv_some(s, mv[got:])
            if n == 0:
                break
            end = buf.find(b"\n", got, got + n)
            got += n
            if end >= 0:
                got = end
                break
        return bytes(mv[:got]).decode().rstrip("\r")
    finally:
        s.close()


def http_json(method, port, path, body=None, timeout_s=30):
    """One HTTP/1.1 request with a JSON body (or none) to 127.0.0.1:port; (status, decoded JSON answer or
    None for an empty body)."""
    data = b"" if body is None else json.dumps(body).encode()
    head = "%s %s HTTP/1.1\r\nHost: %s:%d\r\nConnection: close\r\nAccept: application/json\r\n" % (
        method, path, HOST, port)
    if body is not None:
        head += "Content-Type: application/json\r\n"
    head += "Content-Length: %d\r\n\r\n" % len(data)
    s = _connect(port, timeout_s)
    try:
        _send_all(s, head.encode() + data if len(data) < 512 else head.encode())
        if len(data) >= 512:
            _send_all(s, data)
        del head, data
        # the status line and headers, up to the blank line
        hbuf = bytearray(_HEADER_MAX)
        mv = memoryview(hbuf)
        got = 0
        end = -1
        while end < 0:
            if got == len(hbuf):
                raise ValueError("the HTTP headers are longer than %d bytes" % _HEADER_MAX)
            n = _recv_some(s, mv[got:])
            if n == 0:
                raise ValueError("the connection closed before the HTTP headers ended")
            got += n
            end = hbuf.find(b"\r\n\r\n", 0, got)
        lines = bytes(mv[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/"):
            raise ValueError("not an HTTP answer: %r" % lines[0][:60])
        status = int(parts[1])
        length = -1
        for h in lines[1:]:
            k, _, v = h.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        start = end + 4
        if length < 0:  # no Content-Length: the body runs to the close
            chunks = [bytes(mv[start:got])]
            while True:
                n = _recv_some(s, mv)
                if n == 0:
                    break
                chunks.append(bytes(mv[:n]))
            raw = b"".join(chunks)
        else:
            bbuf = bytearray(length)
            bmv = memoryview(bbuf)
            have = min(got - start, length)
            bmv[:have] = mv[start:start + have]
            del mv, hbuf
            if have < length:
                have += _read_exact(s, bmv[have:])
            if have < length:
                raise ValueError("the connection closed %d bytes into a body of %d" % (have, length))
            raw = bbuf
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise ValueError("the answer (HTTP %d) is not JSON: %r" % (status, bytes(raw[:60])))
    finally:
        s.close()
