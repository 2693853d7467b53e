"""The network-fault proxy (tests_host/netproxy.py) against a plain TCP server, and the control client
(tests_host/control.py) under CPython and the real MicroPython binary against a running proxy and a
running development back end (tools/csms.py) with a charge point connected through the proxy."""
import asyncio
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MICROPYTHON = os.path.join(ROOT, ".venv", "bin", "micropython")
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import control  # noqa: E402
from netproxy import Proxy  # noqa: E402


class Target:
    """A TCP server in a thread: greets each connection with b"hi:", echoes what it gets, and records
    every connection's bytes and how it ended ("eof" or "reset")."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.conns = []  # {"sock", "data", "end"}
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            rec = {"sock": c, "data": b"", "end": None}
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self._serve, args=(rec,), daemon=True).start()

    def _serve(self, rec):
        c = rec["sock"]
        try:
            c.sendall(b"hi:")
            while True:
                d = c.recv(65536)
                if not d:
                    rec["end"] = "eof"
                    c.close()
                    return
                rec["data"] += d
                c.sendall(d)
        except ConnectionResetError:
            rec["end"] = "reset"
        except OSError:
            rec["end"] = rec["end"] or "error"

    def close(self):
        self.sock.close()


def wait_until(cond, timeout=3):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def recv_exactly(s, n, timeout=3):
    s.settimeout(timeout)
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        if not d:
            break
        out += d
    return out


def ends_with_reset(s, timeout=3):
    """True when the peer reset `s` (what the firmware sees as ECONNRESET)."""
    s.settimeout(timeout)
    try:
        while s.recv(4096):
            pass
    except ConnectionResetError:
        return True
    return False


def refused(p):
    """A connection to the proxy is reset: at once (the RST beat connect()) or on its first read."""
    try:
        s = dial(p)
    except ConnectionResetError:
        return True
    with s:
        return ends_with_reset(s)


def silent(s, wait=0.3):
    """Nothing arrives on `s` (no data, no EOF, no reset) within `wait` seconds."""
    r, _, _ = select.select([s], [], [], wait)
    return not r


@pytest.fixture
def target():
    t = Target()
    yield t
    t.close()


@pytest.fixture
def proxy(target):
    with Proxy("127.0.0.1", target.port) as p:
        yield p


def dial(p):
    return socket.create_connection(("127.0.0.1", p.port), timeout=3)


def test_forwards_both_ways_and_passes_eof_on(proxy, target):
    s = dial(proxy)
    assert recv_exactly(s, 3) == b"hi:"  # target -> client before the client said anything
    s.sendall(b"ping")
    assert recv_exactly(s, 4) == b"ping"
    big = os.urandom(300000)
    t = threading.Thread(target=s.sendall, args=(big,))
    t.start()
    assert recv_exactly(s, len(big)) == big
    t.join()
    s.shutdown(socket.SHUT_WR)  # the client's EOF reaches the target, whose close comes back as EOF
    assert s.recv(10) == b""
    assert wait_until(lambda: target.conns[0]["end"] == "eof")
    s.close()
    assert wait_until(lambda: proxy.stats()["open"] == 0)
    st = proxy.stats()
    assert st["connections"] == 1 and st["bytes_up"] == 4 + len(big) and st["bytes_down"] == 3 + 4 + len(big)
    assert st["mode"] == "up" and st["drops"] == 0


def test_client_reset_resets_the_target(proxy, target):
    s = dial(proxy)
    assert recv_exactly(s, 3) == b"hi:"
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert wait_until(lambda: target.conns[0]["end"] == "reset")


def test_down_resets_and_refuses(proxy, target):
    s = dial(proxy)
    assert recv_exactly(s, 3) == b"hi:"
    proxy.down()
    assert ends_with_reset(s)
    assert wait_until(lambda: target.conns[0]["end"] == "reset")
    assert refused(proxy)  # accepted, then reset at once
    time.sleep(0.1)
    assert len(target.conns) == 1  # never reached the target
    st = proxy.stats()
    assert (st["mode"], st["refused"], st["connections"], st["drops"], st["open"]) == ("down", 1, 1, 1, 0)
    proxy.up()
    s3 = dial(proxy)
    assert recv_exactly(s3, 3) == b"hi:"
    s3.close()


def test_drop_resets_once_and_stays_up(proxy, target):
    a, b = dial(proxy), dial(proxy)
    assert recv_exactly(a, 3) == recv_exactly(b, 3) == b"hi:"
    proxy.drop()
    assert ends_with_reset(a) and ends_with_reset(b)
    c = dial(proxy)
    assert recv_exactly(c, 3) == b"hi:"
    c.sendall(b"again")
    assert recv_exactly(c, 5) == b"again"
    st = proxy.stats()
    assert (st["mode"], st["drops"], st["connections"], st["open"]) == ("up", 2, 3, 1)


def test_target_refusing_resets_the_client():
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # nothing listens there
    with Proxy("127.0.0.1", port) as p:
        assert refused(p)
        assert wait_until(lambda: p.stats()["upstream_failures"] == 1)


def test_half_open_forwards_nothing_and_keeps_sockets_open(proxy, target):
    s = dial(proxy)
    assert recv_exactly(s, 3) == b"hi:"
    assert wait_until(lambda: len(target.conns) == 1)
    server_side = target.conns[0]["sock"]
    proxy.half_open()
    s.sendall(b"lost?")
    server_side.sendall(b"down?")  # straight from the target, not an echo
    assert silent(s)  # no data, no EOF, no reset: a dead link
    assert target.conns[0]["data"] == b"" and target.conns[0]["end"] is None
    s.sendall(b"more")  # still writable: the socket is open
    # A new connection is accepted and black-holed: the target never hears of it.
    s2 = dial(proxy)
    s2.sendall(b"new")
    assert silent(s2, 0.2) and len(target.conns) == 1
    st = proxy.stats()
    assert (st["mode"], st["blackholed"], st["open"], st["bytes_up"], st["bytes_down"]) == ("half-open", 1, 2, 0, 3)
    # The link comes back: what waited goes through, in order, on both connections.
    proxy.up()
    assert recv_exactly(s, 5) == b"down?"
    assert recv_exactly(s, 9) == b"lost?more"
    assert recv_exactly(s2, 6) == b"hi:new"
    assert target.conns[0]["data"] == b"lost?more"
    s.close()
    s2.close()


def test_control_port(proxy, target):
    port = proxy.control_port
    assert control.proxy_command(port, "down") == "ok"
    assert json.loads(control.proxy_command(port, "stats"))["mode"] == "down"
    assert control.proxy_command(port, "half-open") == "ok"
    assert proxy.mode == "half-open"
    assert control.proxy_command(port, "drop") == "ok"
    assert control.proxy_command(port, "up") == "ok"
    err = control.proxy_command(port, "explode")
    assert err.startswith("error: ") and "explode" in err and "half-open" in err
    assert control.proxy_command(port, "").startswith("error: ")
    # Several lines on one connection, one answer each, with CR LF too.
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
        c.sendall(b"stats\r\ndown\nbogus\nup\n")
        f = c.makefile("rb")
        lines = [f.readline() for _ in range(4)]
    st = json.loads(lines[0])
    assert set(st) >= {"mode", "connections", "open", "refused", "blackholed", "drops", "bytes_up", "bytes_down"}
    assert lines[1:] == [b"ok\n", b"error: unknown command 'bogus' (up, down, half-open, drop, stats)\n", b"ok\n"]
    # A line that never ends is refused.
    with socket.create_connection(("127.0.0.1", port), timeout=3) as c:
        c.sendall(b"x" * 5000)
        assert c.makefile("rb").readline().startswith(b"error: line too long")
    assert proxy.stats()["mode"] == "up"


def test_stop_closes_everything(target):
    p = Proxy("127.0.0.1", target.port).start()
    s = dial(p)
    assert recv_exactly(s, 3) == b"hi:"
    port = p.port
    p.stop()
    assert ends_with_reset(s)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    with pytest.raises(RuntimeError):
        p.down()


# ---------------------------------------------------------------------------------------------- control.py on both runtimes

CLIENT = r'''
import sys
sys.path.insert(0, sys.argv[1] + "/tests_host")
import control

csms_port, proxy_port = int(sys.argv[2]), int(sys.argv[3])


def check(cond, what):
    if not cond:
        print("FAIL", what)
        sys.exit(1)


st, body = control.http_json("GET", csms_port, "/status/CP1")
check(st == 200 and body["connected"] is True, ("status", st, body))
st, body = control.http_json("POST", csms_port, "/command",
                             {"cp": "CP1", "action": "ChangeConfiguration",
                              "payload": {"key": "HeartbeatInterval", "value": "60"}})
check(st == 200 and body["result"] == {"status": "Accepted"}, ("command", st, body))
st, body = control.http_json("POST", csms_port, "/command", {"cp": "CP1", "action": "Reset",
                                                            "payload": {"type": "Warm"}})
check(st == 400 and "Warm" in body["error"], ("bad command", st, body))
st, body = control.http_json("POST", csms_port, "/command", {"cp": "CP9", "action": "Reset",
                                                            "payload": {"type": "Soft"}})
check(st == 404, ("not connected", st, body))
big = {"cp": "CP1", "action": "DataTransfer", "payload": {"vendorId": "x", "data": "y" * 3000}}
st, body = control.http_json("POST", csms_port, "/command", big)
check(st == 200 and body["result"]["status"] == "Accepted", ("big body", st))
st, body = control.http_json("GET", csms_port, "/frames?cp=CP1&action=DataTransfer")
check(st == 200 and body["count"] == 2 and len(body["frames"][0]["frame"][3]["data"]) == 3000, ("frames", st))
st, body = control.http_json("GET", csms_port, "/nothing")
check(st == 404 and "no such endpoint" in body["error"], ("404", st, body))

reply = control.proxy_command(proxy_port, "stats")
check(reply.startswith("{") and '"mode": "up"' in reply, ("stats", reply))
check(control.proxy_command(proxy_port, "what").startswith("error: "), "bad proxy command")
check(control.proxy_command(proxy_port, "drop") == "ok", "drop")

try:
    control.proxy_command(int(sys.argv[4]), "up", timeout_s=2)
    check(False, "a closed port answered")
except OSError:
    pass
print("PASS")
'''


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("runtime", [sys.executable, MICROPYTHON], ids=["cpython", "micropython"])
def test_control_client_against_csms_and_proxy(runtime, tmp_path):
    if runtime == MICROPYTHON and not os.path.exists(MICROPYTHON):
        pytest.skip("no micropython binary")
    csms = pytest.importorskip("csms")
    from ocpp.routing import on
    from ocpp.v16 import ChargePoint, call, call_result
    from websockets.asyncio.client import connect

    class CP(ChargePoint):
        @on("ChangeConfiguration")
        def on_change_configuration(self, **_):
            return call_result.ChangeConfiguration(status="Accepted")

        @on("DataTransfer")
        def on_data_transfer(self, **_):
            return call_result.DataTransfer(status="Accepted")

    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    with csms.CsmsThread(port=0, db=str(tmp_path / "csms.db")) as c, Proxy("127.0.0.1", c.port) as p:
        ended = []

        async def charge_point():
            async with connect("ws://127.0.0.1:%d/CP1" % p.port, subprotocols=["ocpp1.6"]) as ws:
                cp = CP("CP1", ws)
                task = asyncio.create_task(cp.start())
                await cp.call(call.BootNotification(charge_point_model="M", charge_point_vendor="V"))
                try:
                    await task  # until the proxy drops the connection
                except Exception as e:  # ConnectionClosedError
                    ended.append(type(e).__name__)

        t = threading.Thread(target=lambda: asyncio.run(charge_point()), daemon=True)
        t.start()
        c.wait_for("CP1", "BootNotification", timeout=5)
        r = subprocess.run([runtime, str(script), ROOT, str(c.control_port), str(p.control_port), str(_free_port())],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "PASS" in r.stdout, r.stdout + r.stderr
        c.wait_disconnected("CP1", timeout=5)  # the "drop" went through the proxy to both ends
        t.join(5)
        assert ended == ["ConnectionClosedError"]
        assert p.stats()["drops"] == 1
        assert c.invalid_frames() == []


def test_net_verbs_work_with_a_back_end_given_by_url(tmp_path):
    """tools/sim.py --csms URL puts its network proxy in front of that back end (here a
    tools/csms.py of its own, standing for anyone's central system): `net down` takes the link
    away and `net up` brings it back, and the session made offline reaches the back end once."""
    import csms

    scn = tmp_path / "offline.scn"
    scn.write_text("wait 10s\nnet down\nplug\nev-ready 16 3\nwait 1m\nunplug\nwait 10s\nnet up\nwait 1m\n")
    events = tmp_path / "ev.jsonl"
    with csms.CsmsThread(port=0, control_port=0, db=str(tmp_path / "csms.db")) as c:
        r = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sim.py"), "--csms",
                            "ws://127.0.0.1:%d/ocpp?site=7" % c.port, "--id", "ANY-1", "--scenario", str(scn),
                            "--events", str(events), "--quiet"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        links = [json.loads(line) for line in events.read_text().splitlines()]
        links = [e.get("link") for e in links if e["type"] == "ocpp" and e.get("link") in ("up", "down")]
        assert links[:3] == ["up", "down", "up"], links
        sessions = c.sessions("ANY-1")
    assert len(sessions) == 1, sessions
    t = sessions[0]
    assert (t["reason"], t["start_count"], t["stop_count"]) == ("EVDisconnected", 1, 1), t
