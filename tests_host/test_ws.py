"""The OCPP-J WebSocket client (firmware/ocpp/ws.py) against real servers on 127.0.0.1.

The servers run in a background thread: a `websockets` server (plain and TLS) that echoes and
obeys a few commands, and a tiny raw asyncio server for what a good server never does (wrong
Sec-WebSocket-Accept, HTTP 401, masked or unknown frames, a huge length, going silent). The
client side is one script, CLIENT below, run as it is under CPython and under the real
MicroPython binary; the servers record what they saw so the tests can check the wire too.
The certificates (two CAs, server certificates signed by the first) are made by the test.
"""
import asyncio
import base64
import datetime
import ipaddress
import json
import os
import random
import ssl
import struct
import subprocess
import sys
import threading
import time
import traceback

import pytest

from vclock import VirtualClock
from firmware.ocpp import ws as W

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
RUNTIMES = [sys.executable, MICROPYTHON]
RUNTIME_IDS = ["cpython", "micropython"]
PASSWORD = "0001020304050607S3CRETkey"
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# ---------------------------------------------------------------------------------------------
# certificates


def _make_certs(folder):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, issuer, pub, sign_key, ca, sans=None):
        b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(sign_key, hashes.SHA256())

    def key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    paths = {}

    def save(fname, data):
        paths[fname] = p = os.path.join(folder, fname)
        with open(p, "wb") as f:
            f.write(data)

    pem = serialization.Encoding.PEM
    ca_key, ca2_key = key(), key()
    ca = build("Test CA", "Test CA", ca_key.public_key(), ca_key, True)
    ca2 = build("Other CA", "Other CA", ca2_key.public_key(), ca2_key, True)
    save("ca.pem", ca.public_bytes(pem))
    save("ca.der", ca.public_bytes(serialization.Encoding.DER))
    save("ca2.pem", ca2.public_bytes(pem))
    for fname, sans in (("server", [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                        ("other", [x509.DNSName("other.example")])):
        k = key()
        save(fname + ".pem", build("csms", "Test CA", k.public_key(), ca_key, False, sans).public_bytes(pem))
        save(fname + ".key", k.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()))
    return paths


# ---------------------------------------------------------------------------------------------
# servers


def _accept(key):
    import hashlib

    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


async def _read_client_frame(reader):
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    assert b1 & 0x80, "client frames must be masked"
    key = await reader.readexactly(4)
    data = bytearray(await reader.readexactly(n))
    for i in range(n):
        data[i] ^= key[i % 4]
    return b0 & 0x0F, bytes(data)


class Servers:
    """An event loop in a thread running the test servers; `records[path]` is what each saw."""

    def __init__(self, certs):
        self.certs = certs
        self.records = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.echo = self._call(self._serve_ws(["ocpp1.6"], None))
        self.noproto = self._call(self._serve_ws(None, None))
        self.tls = self._call(self._serve_ws(["ocpp1.6"], self._tls("server")))
        self.tls_other = self._call(self._serve_ws(["ocpp1.6"], self._tls("other")))
        self.raw = self._call(self._serve_raw())

    def _call(self, coro, timeout=10):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _tls(self, name):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.certs[name + ".pem"], self.certs[name + ".key"])
        return ctx

    async def _serve_ws(self, subprotocols, ctx):
        from websockets.asyncio.server import serve

        server = await serve(self._ws_handler, "127.0.0.1", 0, subprotocols=subprotocols, ssl=ctx,
                             max_size=None, ping_interval=None, compression=None)
        return server.sockets[0].getsockname()[1]

    async def _ws_handler(self, ws):
        from websockets.exceptions import ConnectionClosed

        rec = {"auth": ws.request.headers.get("Authorization"), "proto": ws.subprotocol}
        self.records[ws.request.path] = rec
        try:
            async for m in ws:
                if m.startswith("frag:"):  # frag:N:text -> text in N fragments
                    _, n, text = m.split(":", 2)
                    k = -(-len(text) // int(n))
                    await ws.send([text[i:i + k] for i in range(0, len(text), k)])
                elif m.startswith("big:"):
                    await ws.send("b" * int(m[4:]))
                elif m.startswith("close:"):
                    await ws.close(int(m[6:]), "bye")
                elif m == "ping-me":
                    waiter = await ws.ping(b"srv")
                    await asyncio.wait_for(waiter, 5)
                    await ws.send("ponged")
                else:
                    await ws.send(m)
        except ConnectionClosed:
            pass
        await ws.wait_closed()
        rec["close_code"] = ws.close_code

    async def _serve_raw(self):
        server = await asyncio.start_server(self._raw_handler, "127.0.0.1", 0)
        return server.sockets[0].getsockname()[1]

    async def _raw_handler(self, reader, writer):
        """Modes by path /raw/<mode>/<id>: what a broken or vanishing server does."""
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split()[1]
            mode = path.split("/")[2]
            headers = dict(line.split(": ", 1) for line in head.split("\r\n")[1:] if ": " in line)
            rec = self.records[path] = {"auth": headers.get("Authorization")}
            if mode == "401":  # a hostile server reflecting the credentials back
                writer.write(("HTTP/1.1 401 %s\r\nContent-Length: 0\r\n\r\n" % rec["auth"]).encode())
                await writer.drain()
                writer.close()
                return
            accept = "d3JvbmcgYWNjZXB0IGtleSEhISE=" if mode == "badaccept" else _accept(headers["Sec-WebSocket-Key"])
            proto = "ocpp2.0.1" if mode == "wrongproto" else "ocpp1.6"
            writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: %s\r\n\r\n" % (accept, proto)).encode())
            bad = {"masked": b"\x81\x82abcd\x00\x00", "badop": b"\x83\x00",
                   "huge": b"\x81\x7f" + struct.pack("!Q", 1 << 40), "rsv": b"\xc1\x00",
                   "interleave": b"\x01\x03hel\x89\x02hi\x80\x02lo"}.get(mode)  # a ping between fragments
            if bad:
                writer.write(bad)
            await writer.drain()
            silent = False
            while True:
                op, data = await _read_client_frame(reader)
                if op == 0x8:
                    rec["close_code"] = struct.unpack("!H", data[:2])[0] if len(data) >= 2 else 1005
                    break
                if silent:
                    continue  # half-open: the server is gone, nothing comes back
                if op == 0xA:
                    rec["pong"] = data
                elif op == 0x9:
                    writer.write(b"\x8a" + bytes([len(data)]) + data)
                    await writer.drain()
                elif op == 0x1 and data == b"vanish":
                    silent = True
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def record(self, path, key="close_code", timeout=5):
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            rec = self.records.get(path)
            if rec is not None and key in rec:
                return rec[key]
            time.sleep(0.02)
        raise AssertionError("server saw no %s on %s: %r" % (key, path, self.records.get(path)))

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return _make_certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def servers(certs):
    s = Servers(certs)
    yield s
    s.stop()


# ---------------------------------------------------------------------------------------------
# the client: one script, run by CPython and by MicroPython

CLIENT = r'''
import sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(1, sys.argv[1] + "/tests_host")
import asyncio
import json
import random
import time
from firmware.clock import SystemClock
from vclock import VirtualClock
from firmware.ocpp import ws as W

with open(sys.argv[3]) as f:  # a file: MicroPython dies on an argument over 255 bytes
    P = json.load(f)
RT = sys.implementation.name
CLOCK = SystemClock()
PASSWORD = P["password"]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def url(port, path="/ocpp", scheme="ws"):
    return "%s://127.0.0.1:%d%s" % (scheme, port, path)


async def expect(exc_type, coro):
    try:
        await coro
    except exc_type as e:
        print("raised", e.__class__.__name__, repr(str(e)))
        return e
    raise AssertionError("no %s" % exc_type.__name__)


async def wait_until(cond, ms=5000):
    for _ in range(ms // 10):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out waiting")


async def s_echo():
    ws = await W.connect(url(P["echo"]), "cp-echo-" + RT, CLOCK, password=PASSWORD, max_size=70000)
    check(ws.open and "127.0.0.1" in repr(ws), repr(ws))
    await ws.send('[2,"1","Heartbeat",{}]')
    check(await ws.recv_text() == '[2,"1","Heartbeat",{}]', "echo")
    await ws.send("frag:3:hello fragmented world")
    check(await ws.recv_text() == "hello fragmented world", "fragmented")
    await ws.send("frag:5:" + "f" * 60000)
    check(await ws.recv_text() == "f" * 60000, "fragmented 60 KB")
    big = "".join(chr(65 + i % 26) for i in range(65536))
    await ws.send(big)
    check(await ws.recv_text() == big, "64 KB both ways")
    await ws.send("big:65536")
    check(await ws.recv_text() == "b" * 65536, "64 KB from the server")
    await ws.send("unicode: \u00e4\u20ac")
    check(await ws.recv_text() == "unicode: \u00e4\u20ac", "UTF-8")
    before = ws.rx_frames
    await ws.ping()
    await ws.send("after ping")
    check(await ws.recv_text() == "after ping", "after ping")
    check(ws.rx_frames - before == 2, "pong received: %d frames" % (ws.rx_frames - before))
    await ws.send("ping-me")  # the server pings and waits for our pong
    check(await ws.recv_text() == "ponged", "server ping answered")
    await ws.close()
    check(ws.closed and ws.close_code == 1000, "closed %r" % ws.close_code)
    await expect(W.ClosedError, ws.send("late"))


async def s_server_close():
    ws = await W.connect(url(P["echo"]), "cp-sclose-" + RT, CLOCK)
    await ws.send("close:4001")
    e = await expect(W.ClosedError, ws.recv())
    check(e.code == 4001 and e.reason == "bye", "code %r %r" % (e.code, e.reason))
    check(ws.closed and not ws.open, "state")


async def s_oversize():
    ws = await W.connect(url(P["echo"]), "cp-big-" + RT, CLOCK, max_size=1000)
    await ws.send("big:1000")
    check(len(await ws.recv_text()) == 1000, "max_size itself is fine")
    await ws.send("big:1001")
    e = await expect(W.ClosedError, ws.recv())
    check(e.code == 1009, "code %r" % e.code)


async def s_oversize_fragments():
    ws = await W.connect(url(P["echo"]), "cp-bigfrag-" + RT, CLOCK, max_size=1000)
    await ws.send("frag:4:" + "x" * 1200)  # every fragment fits, the message does not
    e = await expect(W.ClosedError, ws.recv())
    check(e.code == 1009, "code %r" % e.code)


async def s_raw(mode, code):
    ws = await W.connect(url(P["raw"], "/raw/" + mode), RT, CLOCK)
    e = await expect(W.ClosedError, ws.recv())
    check(e.code == code, "code %r" % e.code)


async def s_interleave():
    ws = await W.connect(url(P["raw"], "/raw/interleave"), RT, CLOCK, max_size=5)
    check(await ws.recv_text() == "hello", "fragments around a ping")
    await ws.close()
    check(ws.close_code == 1000, "close")


async def s_refused():
    e = await expect(W.HandshakeError, W.connect(url(P["noproto"]), "cp-noproto-" + RT, CLOCK))
    check("ocpp1.6" in str(e), str(e))
    e = await expect(W.HandshakeError, W.connect(url(P["raw"], "/raw/wrongproto"), RT, CLOCK))
    check("ocpp1.6" in str(e), str(e))
    e = await expect(W.HandshakeError, W.connect(url(P["raw"], "/raw/badaccept"), RT, CLOCK))
    check("Sec-WebSocket-Accept" in str(e), str(e))
    e = await expect(W.HandshakeError, W.connect(url(P["raw"], "/raw/401"), RT, CLOCK, password=PASSWORD))
    check(e.status == 401 and "401" in str(e), str(e))
    print("error repr", repr(e), e.args)
    link = W.Link(url(P["raw"], "/raw/401"), "cp-link401-" + RT, CLOCK, password=PASSWORD,
                  sleep_ms=lambda ms: asyncio.sleep(0))
    link.start()
    await wait_until(lambda: link.attempts >= 2)
    print("link", repr(link), link.last_error)
    check("401" in link.last_error and not link.connected, link.last_error)
    await link.stop()
    await expect(W.ClosedError, link.send("x"))
    await expect(ValueError, W.connect("http://127.0.0.1/", RT, CLOCK))
    await expect(ValueError, W.connect("ws://user:pw@127.0.0.1/", RT, CLOCK))


async def s_tls():
    ca = P["ca.pem"]
    for how in ("PEM bytes", "PEM str", "PEM file", "DER file", "DER bytes"):
        if how == "PEM bytes":
            cadata = open(ca, "rb").read()
        elif how == "PEM str":
            cadata = open(ca).read()
        elif how == "PEM file":
            cadata = ca
        elif how == "DER file":
            cadata = P["ca.der"]
        else:
            cadata = open(P["ca.der"], "rb").read()
        ws = await W.connect(url(P["tls"], scheme="wss"), "cp-tls-" + RT, CLOCK, password=PASSWORD, ca=cadata,
                             max_size=70000)
        await ws.send("over TLS")
        check(await ws.recv_text() == "over TLS", how)
        await ws.send("big:65536")
        check(await ws.recv_text() == "b" * 65536, "64 KB over TLS")
        await ws.close()
        print("ok", how)
    e = await expect(W.TLSError, W.connect(url(P["tls"], scheme="wss"), "cp-tlsbad-" + RT, CLOCK,
                                           password=PASSWORD, ca=P["ca2.pem"]))
    check("TLS" in str(e) and "127.0.0.1" in str(e), str(e))
    print("wrong CA:", str(e))
    e = await expect(W.TLSError, W.connect(url(P["tls_other"], scheme="wss"), "cp-tlsname-" + RT, CLOCK,
                                           ca=P["ca.pem"]))
    print("wrong host name:", str(e))
    await expect(ValueError, W.connect(url(P["tls"], scheme="wss"), RT, CLOCK))


async def s_link_tls():
    # A wss:// link parses the CA into a TLS context once and reconnects with it: a context is
    # some 3 KB in one piece, which a heap hours into its work may no longer have.
    made = []
    make = W.tls_context

    def counting(ca):
        made.append(ca)
        return make(ca)

    W.tls_context = counting
    link = W.Link(url(P["tls"], scheme="wss"), "cp-ltls-" + RT, CLOCK, password=PASSWORD, ca=P["ca.pem"],
                  ping_interval_s=0)
    ups = []
    link.on_up = lambda: ups.append(1)
    link.backoff.first_ms = 10
    link.start()
    for n in range(3):
        await wait_until(lambda: len(ups) > n and link.connected)
        await link.send("close:1000")  # the server ends this connection; the link makes another
    await wait_until(lambda: len(ups) > 3 and link.connected)
    await link.send("hello")
    check(str(await link.recv(), "utf-8") == "hello", "echo over the fourth connection")
    check(len(made) == 1, "contexts made %d for %d connections" % (len(made), len(ups)))
    await link.stop()
    W.tls_context = make


async def s_half_open():
    interval = 400
    events = []
    link = W.Link(url(P["raw"], "/raw/silent"), "cp-halfopen-" + RT, CLOCK, ping_interval_s=interval / 1000,
                  on_up=lambda: events.append("up"), on_down=lambda why: events.append(why))
    link.start()
    await wait_until(lambda: link.connected)
    await asyncio.sleep(1.0)  # pings answered: stays up
    check(link.connected and link.ws.rx_frames >= 2, "alive with pongs: %r" % events)
    await link.send("vanish")
    t0 = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.monotonic() * 1000)
    await wait_until(lambda: not link.connected, 3000)
    t1 = time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.monotonic() * 1000)
    dt = (t1 - t0)
    print("dead after %d ms; events %r" % (dt, events))
    check(dt <= 2 * interval + 150, "detected after %d ms" % dt)
    await wait_until(lambda: len(events) >= 2, 1000)  # on_down follows in the next step
    check(events[0] == "up" and "ping" in events[1], repr(events))
    await link.stop()


async def s_link_buffer():
    # The link reads into one buffer given at construction: a message is a view of it, handed
    # over one at a time; of a longer message the head is kept and last_size tells its length.
    buf = bytearray(64)
    link = W.Link(url(P["echo"]), "cp-lbuf-" + RT, CLOCK, ping_interval_s=0, buf=buf)
    link.start()
    await wait_until(lambda: link.connected)
    await link.send("first")
    await link.send("big:64")
    await link.send("frag:3:" + "y" * 100)
    await link.send("big:5000")
    await link.send("last")
    m = await link.recv()
    check(bytes(m) == b"first" and link.last_size == 5, "first %r" % bytes(m))
    check(m.obj is buf if hasattr(m, "obj") else True, "a view of the given buffer")
    await asyncio.sleep(0.2)  # the link may not read the next message into the buffer meanwhile
    check(bytes(m) == b"first", "the view stays valid until the next recv(): %r" % bytes(m))
    m = await link.recv()
    check(bytes(m) == b"b" * 64 and link.last_size == 64, "exactly the buffer")
    m = await link.recv()
    check(bytes(m) == b"y" * 64 and link.last_size == 100, "fragments beyond the buffer: head kept")
    m = await link.recv()
    check(bytes(m) == b"b" * 64 and link.last_size == 5000, "5000: head kept, size %d" % link.last_size)
    m = await link.recv()
    check(bytes(m) == b"last" and link.last_size == 4, "the stream stayed in step")
    check(link.dropped == 0, "nothing dropped")
    await link.stop()


async def s_backoff():
    # The schedule: full jitter under a ceiling that doubles from 1 s up to 300 s.
    random.seed(7)
    b = W.Backoff()
    first = [b.next_ms() for _ in range(12)]
    random.seed(7)
    b2 = W.Backoff()
    check(first == [b2.next_ms() for _ in range(12)], "same seed, same schedule")
    ceil = [min(1000 * 2 ** i, 300000) for i in range(12)]
    check(all(0 <= d <= c for d, c in zip(first, ceil)), repr(first))
    print("schedule", first)
    # A link that cannot connect waits those delays, on the clock it was given.
    clock = VirtualClock()
    delays = []

    async def fake_sleep(ms):
        delays.append(ms)
        clock.advance(ms)
        await asyncio.sleep(0)

    random.seed(7)
    link = W.Link(url(P["refused"]), "cp-refused-" + RT, clock, sleep_ms=fake_sleep)
    ups = []
    link.on_up = lambda: ups.append(1)
    link.start()
    await wait_until(lambda: len(delays) >= 12)
    await link.stop()
    check(delays[:12] == first, "link delays %r" % delays[:12])
    check(not ups and not link.connected and link.attempts >= 12, "never up")
    # A connection that stayed up stable_ms resets the backoff; a short one does not.
    delays[:] = []
    link = W.Link(url(P["echo"]), "cp-reset-" + RT, clock, ping_interval_s=0, sleep_ms=fake_sleep)
    link.backoff.failures = 5
    link.start()
    await wait_until(lambda: link.connected)
    clock.advance(60000)
    await link.send("close:1000")
    await wait_until(lambda: len(delays) >= 1)
    check(link.backoff.failures == 1 and delays[0] <= 1000, "reset: %r %r" % (link.backoff.failures, delays))
    await wait_until(lambda: link.connected)
    await link.send("close:1000")
    await wait_until(lambda: len(delays) >= 2)
    check(link.backoff.failures == 2 and delays[1] <= 2000, "no reset: %r" % link.backoff.failures)
    await wait_until(lambda: link.connected)
    await link.send("hello link")
    check(str(await link.recv(), "utf-8") == "hello link", "link recv")
    await link.stop()
    check(not link.connected, "stopped")


async def main():
    name = sys.argv[2]
    if name.startswith("raw_"):
        _, mode, code = name.split("_")
        await s_raw(mode, int(code))
    else:
        await globals()["s_" + name]()
    print("PASS", name)


asyncio.run(main())
'''


@pytest.fixture(scope="module")
def client(tmp_path_factory, servers, certs):
    path = str(tmp_path_factory.mktemp("client") / "ws_client.py")
    with open(path, "w") as f:
        f.write(CLIENT)
    s = socket_refused_port()
    params = dict(certs, echo=servers.echo, noproto=servers.noproto, tls=servers.tls, tls_other=servers.tls_other,
                  raw=servers.raw, refused=s, password=PASSWORD)

    with open(path + ".json", "w") as f:
        json.dump(params, f)

    def run(runtime, scenario):
        if runtime == MICROPYTHON and not os.path.exists(MICROPYTHON):
            pytest.skip("no micropython binary")
        p = subprocess.run([runtime, path, ROOT, scenario, path + ".json"], capture_output=True, text=True,
                           timeout=60, cwd=ROOT)
        out = p.stdout + p.stderr
        assert p.returncode == 0 and ("PASS " + scenario) in p.stdout, out
        return out
    return run


def socket_refused_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _no_secret(text):
    auth = base64.b64encode(b"x:" + PASSWORD.encode()).decode()
    assert PASSWORD not in text
    assert PASSWORD[4:12] not in text
    assert base64.b64encode(PASSWORD.encode()).decode()[:12] not in text
    assert auth[4:] not in text


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_echo_fragments_64k_ping_and_close(client, servers, runtime):
    client(runtime, "echo")
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    path = "/ocpp/cp-echo-" + rt
    assert servers.record(path, "proto") == "ocpp1.6"
    want = "Basic " + base64.b64encode(("cp-echo-%s:%s" % (rt, PASSWORD)).encode()).decode()
    assert servers.record(path, "auth") == want
    assert servers.record(path) == 1000


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_server_close_is_answered(client, servers, runtime):
    client(runtime, "server_close")
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    assert servers.record("/ocpp/cp-sclose-" + rt) == 4001  # our close frame echoed the code
    assert servers.record("/ocpp/cp-sclose-" + rt, "auth") is None  # no password, no header


@pytest.mark.parametrize("scenario", ["oversize", "oversize_fragments"])
@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_oversize_refused_with_1009(client, servers, runtime, scenario):
    client(runtime, scenario)
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    tag = "big" if scenario == "oversize" else "bigfrag"
    assert servers.record("/ocpp/cp-%s-%s" % (tag, rt)) == 1009


@pytest.mark.parametrize("mode,code", [("masked", 1002), ("badop", 1002), ("rsv", 1002), ("huge", 1009)])
@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_protocol_errors_close_with_code(client, servers, runtime, mode, code):
    client(runtime, "raw_%s_%d" % (mode, code))
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    assert servers.record("/raw/%s/%s" % (mode, rt)) == code


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_ping_between_fragments_is_answered(client, servers, runtime):
    client(runtime, "interleave")
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    assert servers.record("/raw/interleave/" + rt, "pong") == b"hi"
    assert servers.record("/raw/interleave/" + rt) == 1000


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_handshake_refusals_and_no_password_in_errors(client, runtime):
    out = client(runtime, "refused")
    assert "401" in out
    _no_secret(out)


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_tls_checks_ca_and_host_name(client, servers, runtime):
    out = client(runtime, "tls")
    rt = "cpython" if runtime != MICROPYTHON else "micropython"
    want = "Basic " + base64.b64encode(("cp-tls-%s:%s" % (rt, PASSWORD)).encode()).decode()
    assert servers.record("/ocpp/cp-tls-" + rt, "auth") == want
    assert "/ocpp/cp-tlsbad-" + rt not in servers.records  # never got past TLS
    _no_secret(out.replace(want, ""))


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_a_tls_link_reconnects_with_the_context_it_made_once(client, runtime):
    client(runtime, "link_tls")


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_half_open_link_detected_within_two_ping_intervals(client, runtime):
    out = client(runtime, "half_open")
    assert "dead after" in out


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_link_reads_into_one_buffer(client, runtime):
    client(runtime, "link_buffer")


@pytest.mark.parametrize("runtime", RUNTIMES, ids=RUNTIME_IDS)
def test_backoff_schedule_and_reset(client, runtime):
    client(runtime, "backoff")


# ---------------------------------------------------------------------------------------------
# in-process details (CPython)


def test_url_and_charge_box_id_encoding():
    assert W.quote("RDAM 123") == "RDAM%20123"
    assert W.quote("CP/1?ä") == "CP%2F1%3F%C3%A4"
    assert W.quote("A-b_c.d~9") == "A-b_c.d~9"
    assert W.parse_url("ws://centralsystem.example.com/ocpp") == (False, "centralsystem.example.com", 80, "/ocpp")
    assert W.parse_url("wss://h:9443") == (True, "h", 9443, "/")
    assert W.parse_url("ws://[::1]:9000/x") == (False, "::1", 9000, "/x")
    for bad in ("http://h/", "ws://h:x/", "ws:///p", "ws://u:p@h/"):
        with pytest.raises(ValueError):
            W.parse_url(bad)


def test_accept_key_and_basic_auth_examples():
    assert W.accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # RFC 6455
    key = bytes.fromhex("0001020304050607FFFFFFFFFFFFFFFFFFFFFFFF")  # OCPP-J 1.6 section 6.2.2
    assert W.basic_auth("AL1000", key) == b"QUwxMDAwOgABAgMEBQYH////////////////"


class _Writer:
    def __init__(self):
        self.writes = []

    def write(self, b):
        self.writes.append(bytes(b))

    async def drain(self):
        pass


def _frame_of(payload):
    ws = W.WebSocket(VirtualClock())
    ws._w = _Writer()
    asyncio.run(ws._send_frame(W.TEXT, payload))
    return ws._w.writes


def test_client_frames_are_masked_and_written_in_small_pieces():
    for n in (0, 5, 125, 126, 241, 242, 300, 65535, 65536):
        payload = os.urandom(n)
        writes = _frame_of(payload)
        assert all(len(w) <= W.PIECE for w in writes)  # no frame-sized copy
        frame = b"".join(writes)
        assert frame[0] == 0x81 and frame[1] & 0x80
        ln = frame[1] & 0x7F
        off = 2 + {126: 2, 127: 8}.get(ln, 0)
        got = {126: lambda: struct.unpack("!H", frame[2:4])[0], 127: lambda: struct.unpack("!Q", frame[2:10])[0]}
        assert got.get(ln, lambda: ln)() == n
        key = frame[off:off + 4]
        assert bytes(b ^ key[i % 4] for i, b in enumerate(frame[off + 4:])) == payload
        if n <= W.PIECE - off - 4:
            assert len(writes) == 1  # a small frame is one write: one TCP segment


def test_text_is_sent_as_utf8():
    frame = b"".join(_frame_of("unicode: \u00e4\u20ac"))
    key = frame[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(frame[6:])) == "unicode: \u00e4\u20ac".encode()


def test_backoff_exact_schedule_with_seeded_random():
    b = W.Backoff(first_ms=1000, cap_ms=300000, randint=random.Random(42).randint)
    got = [b.next_ms() for _ in range(12)]
    r = random.Random(42)
    assert got == [r.randint(0, min(1000 * 2 ** i, 300000)) for i in range(12)]
    b.reset()
    assert b.ceiling_ms() == 1000


def test_query_string_follows_the_charge_box_id_and_no_key_sends_no_authorization(servers):
    """OCPP-J 3.1.1: the charge box id ends the path; an endpoint's query string comes after it.
    With no AuthorizationKey (None or "", security profile 0) there is no Authorization header at
    all, not `Basic` of "id:"."""
    async def go(url, cbid, password):
        ws = await W.connect(url, cbid, VirtualClock(), password=password)
        await ws.close(1000)

    base = "ws://127.0.0.1:%d" % servers.echo
    asyncio.run(go(base + "/ocpp?site=7&x=a", "cp q", ""))
    asyncio.run(go(base + "/ocpp/?site=8", "cp-none", None))
    asyncio.run(go(base + "/ocpp?site=9", "cp-key", "0123456789abcdef0123456789abcdef"))
    assert servers.record("/ocpp/cp%20q?site=7&x=a", "auth") is None
    assert servers.record("/ocpp/cp-none?site=8", "auth") is None
    assert servers.record("/ocpp/cp-key?site=9", "auth") == \
        "Basic " + base64.b64encode(b"cp-key:0123456789abcdef0123456789abcdef").decode()
    with pytest.raises(ValueError, match="fragment"):
        asyncio.run(go(base + "/ocpp#x", "cp", None))


def test_password_never_in_errors_tracebacks_or_reprs(servers):
    link = W.Link("ws://127.0.0.1:%d/raw/401" % servers.raw, "cp-inproc", VirtualClock(), password=PASSWORD)

    async def go():
        try:
            await W.connect("ws://127.0.0.1:%d/raw/401" % servers.raw, "cp-inproc", VirtualClock(), password=PASSWORD)
        except W.HandshakeError as e:
            return e

    e = asyncio.run(go())
    assert e.status == 401
    text = "".join(traceback.format_exception(e)) + repr(e) + str(e) + repr(link) + repr(vars(e))
    _no_secret(text)
    # the hostile server did get (and reflect) the header: it is just never repeated by us
    assert servers.record("/raw/401/cp-inproc", "auth").startswith("Basic ")


def test_connected_is_false_when_nothing_answers():
    async def go():
        clock = VirtualClock()
        link = W.Link("ws://127.0.0.1:%d/ocpp" % socket_refused_port(), "cp", clock,
                      sleep_ms=lambda ms: asyncio.sleep(0.001))
        link.start()
        await asyncio.sleep(0.05)
        assert not link.connected and link.attempts >= 1 and link.last_error
        await link.stop()

    asyncio.run(go())


def test_reconnect_closes_cleanly_and_connects_again_with_the_new_password(servers):
    """Link.reconnect (a new AuthorizationKey, whitepaper A01): a close handshake (1000), then a
    new connection that carries the password as it is now."""
    old, new = "0123456789abcdef0123456789abcdef", "fedcba9876543210fedcba9876543210"
    path = "/ocpp/cp-rekey"
    slept = []

    async def go():
        link = W.Link("ws://127.0.0.1:%d/ocpp" % servers.echo, "cp-rekey", VirtualClock(), password=old,
                      sleep_ms=lambda ms: slept.append(ms) or asyncio.sleep(0.001))
        link.start()
        for _ in range(500):
            if link.connected:
                break
            await asyncio.sleep(0.01)
        assert link.connected and servers.record(path, "auth") == "Basic " + base64.b64encode(
            ("cp-rekey:" + old).encode()).decode()
        link.password = new
        await link.reconnect("AuthorizationKey changed")
        for _ in range(500):
            if link.connected and link.attempts == 2:
                break
            await asyncio.sleep(0.01)
        assert link.connected and link.attempts == 2
        await link.stop()

    asyncio.run(go())
    assert servers.record(path, "auth") == "Basic " + base64.b64encode(("cp-rekey:" + new).encode()).decode()
    assert slept and slept[0] <= 1000  # the backoff starts over: within a second
