"""A TCP proxy between the firmware and the back end, for network faults on demand (CPython only).

    with Proxy("127.0.0.1", csms_port) as p:        # p.port: where the charge point connects
        p.down()        # reset every open connection; new ones are accepted and reset at once
        p.up()          # forward again
        p.half_open()   # a dead NAT or cellular link: every connection stays open, nothing passes
        p.drop()        # reset the open connections once, keep the mode
        p.stats()       # {"mode", "connections", "open", "refused", "blackholed", "drops", "upstream_failures",
                        #  "bytes_up", "bytes_down"}

One thread runs a selectors loop over every socket. Modes:

- up: each accepted connection gets its own connection to the target; bytes are forwarded both ways
  as they come, a half-close (EOF) is passed on, a reset on one side resets the other. A target that
  refuses the connection resets the client's (counted in upstream_failures).
- down: open connections are reset (RST, via SO_LINGER 0) on both sides; a new one is accepted and reset
  at once (the client sees ECONNRESET on connect() or on its first read, whichever the RST meets) (counted in refused; `connections` counts only the ones let in).
- half-open: nothing is read or written on any connection, so neither side learns anything: what one
  sends waits in the kernel buffers (as TCP would retransmit it), which is what a link whose packets
  vanish looks like. New connections are accepted and black-holed (counted in blackholed) without a
  connection to the target. up() resumes every connection where it stopped (black-holed ones get their
  target connection then), like a link that comes back before TCP gives up.
- drop(): the open connections are reset once, the mode stays. `drops` counts the connections reset by
  drop() and down().

Mode changes are synchronous: when down() or drop() returns, the connections are reset.

A line-based control port on 127.0.0.1 (`control_port`) takes `up`, `down`, `half-open`, `drop` and
`stats`, one per line, and answers one line each: `ok`, the stats as JSON, or `error: ...`. The
simulator (under MicroPython) uses it through tests_host/control.py.
"""
import errno
import json
import selectors
import socket
import struct
import threading

MODES = ("up", "down", "half-open")
CHUNK = 65536
HIGH_WATER = 1 << 20  # stop reading from a side while this much waits to be written to the other
CONTROL_LINE_MAX = 1024


def _reset(sock):
    """Close `sock` with a TCP RST instead of a FIN."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Pair:
    """One client connection and its connection to the target."""
    __slots__ = ("client", "target", "connecting", "to_target", "to_client", "client_eof", "target_eof",
                 "target_shut", "client_shut")

    def __init__(self, client):
        self.client = client
        self.target = None
        self.connecting = False
        self.to_target = bytearray()
        self.to_client = bytearray()
        self.client_eof = self.target_eof = False
        self.target_shut = self.client_shut = False


class _Control:
    __slots__ = ("sock", "inbuf", "outbuf", "closing")

    def __init__(self, sock):
        self.sock = sock
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.closing = False


class Proxy:
    def __init__(self, target_host, target_port, listen_port=0, listen_host="127.0.0.1"):
        self.target = (target_host, int(target_port))
        self.listen_addr = (listen_host, int(listen_port))
        self.port = None
        self.control_port = None
        self.mode = "up"
        self._counters = dict.fromkeys(("connections", "refused", "blackholed", "drops", "upstream_failures",
                                        "bytes_up", "bytes_down"), 0)
        self._pairs = []
        self._controls = []
        self._sel = None
        self._listener = self._control_listener = None
        self._wake_r = self._wake_w = None
        self._jobs = []
        self._jobs_lock = threading.Lock()
        self._thread = None
        self._running = False
        self._interest = {}  # socket -> events registered

    # life cycle

    def start(self):
        if self._thread is not None:
            return self
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(self.listen_addr)
        self._listener.listen(64)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._control_listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._control_listener.bind(("127.0.0.1", 0))
        self._control_listener.listen(16)
        self._control_listener.setblocking(False)
        self.control_port = self._control_listener.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, "listen")
        self._sel.register(self._control_listener, selectors.EVENT_READ, "control-listen")
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="netproxy:%d" % self.port, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._thread is None:
            return
        self._running = False
        self._wake()
        self._thread.join(10)
        self._thread = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # modes (from any thread; done when they return)

    def up(self):
        self._call(self._set_mode, "up")

    def down(self):
        self._call(self._set_mode, "down")

    def half_open(self):
        self._call(self._set_mode, "half-open")

    def drop(self):
        self._call(self._drop_all)

    def stats(self):
        return self._call(self._stats)

    def command(self, line):
        """What the control port answers to `line` (without its newline)."""
        return self._call(self._command, line)

    # the loop's side

    def _call(self, fn, *args):
        if self._thread is None:
            raise RuntimeError("the proxy is not running (start() it first)")
        if threading.current_thread() is self._thread:
            return fn(*args)
        done = threading.Event()
        box = []
        with self._jobs_lock:
            self._jobs.append((fn, args, box, done))
        self._wake()
        if not done.wait(10):
            raise RuntimeError("the proxy thread did not answer")
        if box and isinstance(box[0], BaseException):
            raise box[0]
        return box[1] if len(box) > 1 else None

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    def _command(self, line):
        word = line.strip().lower()
        if word == "up":
            self._set_mode("up")
        elif word == "down":
            self._set_mode("down")
        elif word in ("half-open", "half_open", "halfopen"):
            self._set_mode("half-open")
        elif word == "drop":
            self._drop_all()
        elif word == "stats":
            return json.dumps(self._stats(), sort_keys=True)
        else:
            return "error: unknown command %r (up, down, half-open, drop, stats)" % line.strip()[:60]
        return "ok"

    def _stats(self):
        s = dict(self._counters)
        s["mode"] = self.mode
        s["open"] = len(self._pairs)
        return s

    def _set_mode(self, mode):
        assert mode in MODES
        self.mode = mode
        if mode == "down":
            self._drop_all()
        elif mode == "up":
            for p in list(self._pairs):
                if p.target is None:
                    self._connect(p)

    def _drop_all(self):
        for p in list(self._pairs):
            self._close_pair(p, reset=True)
            self._counters["drops"] += 1

    def _loop(self):
        try:
            while self._running:
                for p in list(self._pairs):
                    self._update(p)
                for c in list(self._controls):
                    self._want(c.sock, (selectors.EVENT_READ if not c.closing else 0) |
                               (selectors.EVENT_WRITE if c.outbuf else 0), c)
                for key, events in self._sel.select(1.0):
                    what = key.data
                    if what == "wake":
                        self._drain_wake()
                    elif what == "listen":
                        self._accept()
                    elif what == "control-listen":
                        self._accept_control()
                    elif isinstance(what, _Control):
                        self._control_io(what, events)
                    else:
                        pair, side = what
                        if pair in self._pairs:
                            self._pair_io(pair, side, events)
                self._run_jobs()
        finally:
            self._run_jobs()
            for p in list(self._pairs):
                self._close_pair(p, reset=True)
            for c in list(self._controls):
                self._close_control(c)
            for s in (self._listener, self._control_listener, self._wake_r, self._wake_w):
                try:
                    s.close()
                except OSError:
                    pass
            self._sel.close()

    def _run_jobs(self):
        with self._jobs_lock:
            jobs, self._jobs = self._jobs, []
        for fn, args, box, done in jobs:
            try:
                box[:] = [None, fn(*args)]
            except BaseException as e:  # handed to the caller
                box[:] = [e]
            done.set()

    def _drain_wake(self):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _want(self, sock, events, data):
        """Register `sock` for `events` (0: not at all) with `data`."""
        if sock is None:
            return
        old = self._interest.get(sock)
        if old == events:
            return
        if old is None or old == 0:
            if events:
                self._sel.register(sock, events, data)
        elif events:
            self._sel.modify(sock, events, data)
        else:
            self._sel.unregister(sock)
        self._interest[sock] = events

    def _forget(self, sock):
        if sock is not None and self._interest.pop(sock, 0):
            try:
                self._sel.unregister(sock)
            except (KeyError, ValueError, OSError):
                pass

    # connections

    def _accept(self):
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.mode == "down":
                self._counters["refused"] += 1
                _reset(sock)
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._counters["connections"] += 1
            p = _Pair(sock)
            self._pairs.append(p)
            if self.mode == "half-open":
                self._counters["blackholed"] += 1
            else:
                self._connect(p)

    def _connect(self, p):
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setblocking(False)
        t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        p.target, p.connecting = t, True
        err = t.connect_ex(self.target)
        if err not in (0, errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EALREADY):
            self._counters["upstream_failures"] += 1
            self._close_pair(p, reset=True)

    def _update(self, p):
        """Register both sockets of `p` for what the mode and the buffers call for."""
        R, W = selectors.EVENT_READ, selectors.EVENT_WRITE
        if self.mode != "up":
            self._want(p.client, 0, (p, "client"))
            self._want(p.target, 0, (p, "target"))
            return
        if p.target is None:
            self._connect(p)
            if p not in self._pairs:
                return
        if p.connecting:
            self._want(p.client, 0, (p, "client"))
            self._want(p.target, W, (p, "target"))
            return
        c = (R if not p.client_eof and len(p.to_target) < HIGH_WATER else 0) | (W if p.to_client else 0)
        t = (R if not p.target_eof and len(p.to_client) < HIGH_WATER else 0) | (W if p.to_target else 0)
        self._want(p.client, c, (p, "client"))
        self._want(p.target, t, (p, "target"))

    def _pair_io(self, p, side, events):
        try:
            if side == "target" and p.connecting:
                err = p.target.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._counters["upstream_failures"] += 1
                    self._close_pair(p, reset=True)
                    return
                p.connecting = False
                return
            if self.mode != "up":
                return
            mine, other = (p.client, p.target) if side == "client" else (p.target, p.client)
            out = p.to_target if side == "client" else p.to_client
            pending = p.to_client if side == "client" else p.to_target
            if events & selectors.EVENT_READ:
                data = mine.recv(CHUNK)
                if data:
                    out += data
                    self._counters["bytes_up" if side == "client" else "bytes_down"] += len(data)
                elif side == "client":
                    p.client_eof = True
                else:
                    p.target_eof = True
                self._flush(other, out)
            if events & selectors.EVENT_WRITE and pending:
                self._flush(mine, pending)
            # pass a half-close on once everything before it is through
            if p.client_eof and not p.to_target and not p.target_shut:
                p.target.shutdown(socket.SHUT_WR)
                p.target_shut = True
            if p.target_eof and not p.to_client and not p.client_shut:
                p.client.shutdown(socket.SHUT_WR)
                p.client_shut = True
            if p.client_shut and p.target_shut:
                self._close_pair(p, reset=False)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:  # a reset (or anything else) on one side resets the other
            self._close_pair(p, reset=True)

    @staticmethod
    def _flush(sock, buf):
        while buf:
            try:
                n = sock.send(buf)
            except (BlockingIOError, InterruptedError):
                return
            del buf[:n]

    def _close_pair(self, p, reset):
        if p in self._pairs:
            self._pairs.remove(p)
        for s in (p.client, p.target):
            self._forget(s)
            if reset:
                _reset(s)
            elif s is not None:
                try:
                    s.close()
                except OSError:
                    pass

    # the control port

    def _accept_control(self):
        while True:
            try:
                sock, _ = self._control_listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            self._controls.append(_Control(sock))

    def _control_io(self, c, events):
        try:
            if events & selectors.EVENT_READ:
                data = c.sock.recv(4096)
                if not data:
                    c.closing = True
                c.inbuf += data
                while b"\n" in c.inbuf:
                    line, _, rest = bytes(c.inbuf).partition(b"\n")
                    c.inbuf[:] = rest
                    c.outbuf += self._command(line.decode("utf-8", "replace").rstrip("\r")).encode() + b"\n"
                if len(c.inbuf) > CONTROL_LINE_MAX:
                    c.outbuf += b"error: line too long\n"
                    c.inbuf[:] = b""
                    c.closing = True
            if c.outbuf:
                self._flush(c.sock, c.outbuf)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._close_control(c)
            return
        if c.closing and not c.outbuf:
            self._close_control(c)

    def _close_control(self, c):
        if c in self._controls:
            self._controls.remove(c)
        self._forget(c.sock)
        try:
            c.sock.close()
        except OSError:
            pass


def main(argv=None):
    """python3 tests_host/netproxy.py TARGET_HOST TARGET_PORT [LISTEN_PORT]: run until interrupted."""
    import sys
    import time
    a = sys.argv[1:] if argv is None else argv
    if len(a) not in (2, 3):
        print("usage: netproxy.py TARGET_HOST TARGET_PORT [LISTEN_PORT]", file=sys.stderr)
        return 2
    with Proxy(a[0], int(a[1]), int(a[2]) if len(a) == 3 else 0) as p:
        print("netproxy: 127.0.0.1:%d -> %s:%s; control port %d" % (p.port, a[0], a[1], p.control_port), flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
