"""The HTTP client (firmware/ocpp/http.py) against real servers on 127.0.0.1, plain and TLS.

A raw asyncio server in a background thread does what a good server does (Content-Length,
chunked with extensions and trailers, read-until-close, redirects, uploads) and what a bad one
does (truncated bodies, 404/500, silence, a body over the limit). The client side is one script,
CLIENT below, run unchanged under CPython and under the real MicroPython binary; each scenario
prints PASS or FAIL and the pytest tests check the lines and what the server received.
"""
import asyncio
import hashlib
import json
import os
import ssl
import subprocess
import sys
import threading

import pytest

from firmware.ocpp import http as H
from test_ws import _make_certs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
RUNTIMES = [sys.executable, MICROPYTHON]
RUNTIME_IDS = ["cpython", "micropython"]
N = 150001  # bytes of the test file: not a multiple of any chunk size


def body(n):
    return bytes((i * 7 + 3) & 255 for i in range(n))


BODY = body(N)


class Server:
    """Plain and TLS listeners, one handler; `uploads[path]` is what each upload delivered."""

    def __init__(self, certs):
        self.uploads = {}
        self.auth = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(certs["server.pem"], certs["server.key"])
        self.port = self._call(self._listen(None))
        self.tls_port = self._call(self._listen(ctx))

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self, ctx):
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ctx)
        return server.sockets[0].getsockname()[1]

    async def _handle(self, r, w):
        try:
            head = (await r.readuntil(b"\r\n\r\n")).decode()
            method, path = head.split()[:2]
            headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in head.split("\r\n")[1:] if ": " in ln)}
            self.auth[path] = headers.get("authorization")
            parts = path.split("/")
            kind = parts[1]
            if method in ("PUT", "POST"):
                if headers.get("transfer-encoding") == "chunked":
                    data = b""
                    while True:
                        n = int((await r.readline()).split(b";")[0], 16)
                        if n == 0:
                            await r.readline()
                            break
                        data += await r.readexactly(n)
                        await r.readline()
                else:
                    data = await r.readexactly(int(headers["content-length"]))
                self.uploads[path] = {"method": method, "body": data, "type": headers.get("content-type")}
                if kind == "up-fail":
                    w.write(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\noops")
                elif kind == "up-moved" and len(parts) > 2 and parts[2] == "0":
                    w.write(b"HTTP/1.1 307 Again\r\nLocation: /up/moved-target\r\nContent-Length: 0\r\n\r\n")
                else:
                    w.write(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                await w.drain()
                return
            if kind == "file":
                n = int(parts[2])
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n" % n)
                w.write(body(n))
            elif kind == "chunked":
                n = int(parts[2])
                data = body(n)
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                i, k = 0, 1
                while i < n:
                    piece = data[i:i + k]
                    w.write(b"%x;ext=1\r\n" % len(piece) + piece + b"\r\n")
                    i += len(piece)
                    k = k * 3 + 1 if k < 5000 else 777
                w.write(b"0\r\nX-Trailer: yes\r\n\r\n")
            elif kind == "close":
                w.write(b"HTTP/1.0 200 OK\r\n\r\n" + body(int(parts[2])))
            elif kind == "redirect":
                n, k = int(parts[2]), int(parts[3])  # /redirect/N/K: K more redirects to /file/N
                if k == 1:
                    loc = "/file/%d" % n
                elif k % 2:
                    loc = "%d" % (k - 1)  # relative: /redirect/N/K-1
                else:
                    loc = "http://127.0.0.1:%d/redirect/%d/%d" % (self.port, n, k - 1)
                w.write(("HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n" % loc).encode())
            elif kind == "trunc":
                n = int(parts[2])
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % n + body(n // 2))
            elif kind == "trunc-chunked":
                w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n400\r\n" + body(1024) + b"\r\n400\r\n"
                        + body(100))
            elif kind == "status":
                code = int(parts[2])
                w.write(b"HTTP/1.1 %d Nope\r\nContent-Length: 9\r\n\r\nnot found" % code)
            elif kind == "slow":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
                await w.drain()
                await r.read()  # until the client gives up and closes
            elif kind == "big":
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + body(4096))
            await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            try:
                w.close()
            except Exception:
                pass

    async def _cancel_all(self):
        for t in asyncio.all_tasks():
            if t is not asyncio.current_task():
                t.cancel()

    def stop(self):
        self._call(self._cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return _make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def server(certs):
    s = Server(certs)
    yield s
    s.stop()


CLIENT = r'''
import sys
sys.path.insert(0, sys.argv[1])
import asyncio
import hashlib
import json
import os
from firmware.ocpp import http as H

with open(sys.argv[2]) as f:
    P = json.load(f)
RT = sys.implementation.name
TMP = P["tmp"]


def url(path, tls=False):
    return "%s://127.0.0.1:%d%s" % ("https" if tls else "http", P["tls_port"] if tls else P["port"], path)


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4096)
            if not b:
                return h.digest()
            h.update(b)


def hexd(d):
    from binascii import hexlify
    return hexlify(d).decode()


def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


async def get_ok(name, path, tls=False, **kw):
    dest = TMP + "/" + RT + "-" + name
    size, digest = await H.get_to_file(url(path, tls), dest, ca=P["ca.pem"] if tls else None, **kw)
    assert digest == file_sha(dest), "digest is the file's"
    assert not exists(dest + ".part"), "no .part left"
    return "%d %s" % (size, hexd(digest))


async def get_err(name, path, tls=False, ca=None, **kw):
    dest = TMP + "/" + RT + "-" + name
    try:
        await H.get_to_file(url(path, tls), dest, ca=ca, **kw)
    except H.HttpError as e:
        assert not exists(dest) and not exists(dest + ".part"), "nothing left behind"
        return "HttpError %s %s" % (e.status, e)
    raise AssertionError("no HttpError")


async def s_content_length():
    return await get_ok("cl", "/file/%d" % P["n"])


async def s_chunked():
    return await get_ok("chunked", "/chunked/%d" % P["n"])


async def s_until_close():
    return await get_ok("close", "/close/5000")


async def s_redirects_3():
    return await get_ok("redir", "/redirect/%d/3" % P["n"])


async def s_redirects_4():
    return await get_err("redir4", "/redirect/100/4")


async def s_truncated():
    return await get_err("trunc", "/trunc/5000")


async def s_truncated_chunked():
    return await get_err("truncc", "/trunc-chunked/0")


async def s_not_found():
    return await get_err("404", "/status/404")


async def s_timeout():
    return await get_err("slow", "/slow", timeout_ms=300)


async def s_too_big():
    return await get_err("big", "/big", max_bytes=100000)


async def s_refused():
    try:
        await H.get_to_file("http://127.0.0.1:%d/x" % P["closed_port"], TMP + "/refused")
    except H.HttpError as e:
        return "HttpError %s %s" % (e.status, e)
    raise AssertionError("no error")


async def s_tls():
    return await get_ok("tls", "/file/%d" % P["n"], tls=True)


async def s_tls_chunked():
    return await get_ok("tlschunked", "/chunked/%d" % P["n"], tls=True)


async def s_tls_wrong_ca():
    return await get_err("tlsbad", "/file/100", tls=True, ca=P["ca2.pem"])


async def s_tls_no_ca():
    try:
        await H.get_to_file(url("/file/1", True), TMP + "/noca")
    except ValueError as e:
        return "ValueError %s" % e
    raise AssertionError("no error")


async def s_upload_file():
    src = TMP + "/" + RT + "-upsrc"
    with open(src, "wb") as f:
        f.write(b"line one\n" * 3000)
    st = await H.upload(url("/up/file-" + RT), src)
    return "status %d" % st


async def s_upload_parts():
    src = TMP + "/" + RT + "-upsrc2"
    with open(src, "wb") as f:
        f.write(b"journal\n" * 10)
    st = await H.upload(url("/up/parts-" + RT), [b"head\n", src, b"tail\n"], method="POST",
                        content_type="text/plain")
    return "status %d" % st


async def s_upload_chunked():
    def gen():
        for i in range(5):
            yield b"piece %d\n" % i
    st = await H.upload(url("/up/chunks-" + RT), gen())
    return "status %d" % st


async def s_upload_redirect():
    st = await H.upload(url("/up-moved/0/" + RT), [b"moved body"])
    return "status %d" % st


async def s_upload_fail():
    try:
        await H.upload(url("/up-fail/" + RT), [b"x"])
    except H.HttpError as e:
        return "HttpError %s %s" % (e.status, e)
    raise AssertionError("no error")


async def s_upload_tls():
    st = await H.upload(url("/up/tls-" + RT, True), [b"over tls"], ca=P["ca.pem"])
    return "status %d" % st


async def s_basic_auth():
    u = "http://fw%%40user:pa%%3Ass@127.0.0.1:%d/file/10" % P["port"]
    size, _ = await H.get_to_file(u, TMP + "/" + RT + "-auth")
    return "size %d" % size


async def main():
    for name in P["scenarios"]:
        try:
            out = await globals()["s_" + name]()
            print("PASS", name, out)
        except Exception as e:
            print("FAIL", name, e.__class__.__name__, e)


asyncio.run(main())
'''

SCENARIOS = ["content_length", "chunked", "until_close", "redirects_3", "redirects_4", "truncated",
             "truncated_chunked", "not_found", "timeout", "too_big", "refused", "tls", "tls_chunked",
             "tls_wrong_ca", "tls_no_ca", "upload_file", "upload_parts", "upload_chunked", "upload_redirect",
             "upload_fail", "upload_tls", "basic_auth"]


def _closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def results(tmp_path_factory, server, certs):
    folder = tmp_path_factory.mktemp("http")
    script = str(folder / "client.py")
    with open(script, "w") as f:
        f.write(CLIENT)
    params = dict(certs, port=server.port, tls_port=server.tls_port, tmp=str(folder), n=N,
                  closed_port=_closed_port(), scenarios=SCENARIOS)
    with open(script + ".json", "w") as f:
        json.dump(params, f)
    cache = {}

    def get(runtime):
        if runtime not in cache:
            if runtime == MICROPYTHON and not os.path.exists(MICROPYTHON):
                pytest.skip("no micropython binary")
            p = subprocess.run([runtime, script, ROOT, script + ".json"], capture_output=True, text=True,
                               timeout=60, cwd=ROOT)
            out = {}
            for line in p.stdout.splitlines():
                word, _, rest = line.partition(" ")
                name, _, detail = rest.partition(" ")
                if word in ("PASS", "FAIL"):
                    out[name] = (word, detail)
            assert out, p.stdout + p.stderr
            cache[runtime] = out
        return cache[runtime]

    return get


def run(results, runtime, name):
    word, detail = results(runtime).get(name, ("MISSING", ""))
    assert word == "PASS", "%s: %s %s" % (name, word, detail)
    return detail


SHA = hashlib.sha256(BODY).hexdigest()


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
@pytest.mark.parametrize("name", ["content_length", "chunked", "redirects_3", "tls", "tls_chunked"])
def test_downloads_stream_to_file_with_size_and_sha256(results, runtime, name):
    assert run(results, runtime, name) == "%d %s" % (N, SHA)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_body_until_close(results, runtime):
    assert run(results, runtime, "until_close") == "5000 " + hashlib.sha256(body(5000)).hexdigest()


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
@pytest.mark.parametrize("name,status,words", [
    ("redirects_4", "302", "more than 3 redirects"),
    ("truncated", "200", "truncated: 2500 of 5000"),
    ("truncated_chunked", "200", "truncated"),
    ("not_found", "404", "HTTP 404"),
    ("timeout", "200", "no progress within 300 ms"),
    ("too_big", "200", "over 100000"),
    ("refused", "None", "connect failed"),
    ("tls_wrong_ca", "None", "TLS with 127.0.0.1"),
])
def test_failures_are_http_errors_and_leave_no_file(results, runtime, name, status, words):
    detail = run(results, runtime, name)
    assert detail.startswith("HttpError %s " % status), detail
    assert words in detail, detail
    assert "127.0.0.1:" in detail  # names host and port ...
    assert "/redirect" not in detail and "/trunc" not in detail  # ... never the path


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_https_needs_a_ca(results, runtime):
    assert run(results, runtime, "tls_no_ca").startswith("ValueError")


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_uploads(results, server, runtime):
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    assert run(results, runtime, "upload_file") == "status 201"
    up = server.uploads["/up/file-" + rt]
    assert up["method"] == "PUT" and up["body"] == b"line one\n" * 3000
    assert run(results, runtime, "upload_parts") == "status 201"
    up = server.uploads["/up/parts-" + rt]
    assert up["method"] == "POST" and up["body"] == b"head\n" + b"journal\n" * 10 + b"tail\n"
    assert up["type"] == "text/plain"
    assert run(results, runtime, "upload_chunked") == "status 201"
    assert server.uploads["/up/chunks-" + rt]["body"] == b"".join(b"piece %d\n" % i for i in range(5))
    assert run(results, runtime, "upload_redirect") == "status 201"
    assert server.uploads["/up/moved-target"]["body"] == b"moved body"
    detail = run(results, runtime, "upload_fail")
    assert detail.startswith("HttpError 500") and "HTTP 500" in detail
    assert run(results, runtime, "upload_tls") == "status 201"
    assert server.uploads["/up/tls-" + rt]["body"] == b"over tls"


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_credentials_in_url_become_basic_auth(results, server, runtime):
    import base64

    assert run(results, runtime, "basic_auth") == "size 10"
    assert server.auth["/file/10"] == "Basic " + base64.b64encode(b"fw@user:pa:ss").decode()


# ---------------------------------------------------------------------------------------------
# in-process details


def test_parse_and_join_urls():
    assert H.parse_url("http://h/fw.bin") == (False, "h", 80, "/fw.bin", None)
    assert H.parse_url("https://h:8443/a/b?x=1#frag") == (True, "h", 8443, "/a/b?x=1", None)
    assert H.parse_url("http://h?q") == (False, "h", 80, "/?q", None)
    assert H.parse_url("https://[::1]/x")[1:3] == ("::1", 443)
    assert H.parse_url("http://u:p@h/")[4] == b"dTpw"
    for bad in ("ftp://h/x", "ws://h/", "http:///x", "http://h:xx/"):
        with pytest.raises(ValueError):
            H.parse_url(bad)
    b = "http://h:1/a/b/c?q=1"
    assert H.join_url(b, "d") == "http://h:1/a/b/d"
    assert H.join_url(b, "/x/y") == "http://h:1/x/y"
    assert H.join_url(b, "//o/p") == "http://o/p"
    assert H.join_url(b, "https://s/t") == "https://s/t"
    assert H.join_url("https://h", "x") == "https://h/x"
