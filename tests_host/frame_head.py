"""The reference for what id a refused frame is answered with (firmware/ocpp/rpc.py): the id of
a frame whose first 64 bytes read `[2,"<id>"` (JSON blanks allowed, the id in at most 36
bytes, no escape or control character), whatever follows; otherwise "-1"."""
import re

_HEAD = re.compile(rb'[ \t\n\r]*\[[ \t\n\r]*2[ \t\n\r]*,[ \t\n\r]*"([^"\\\x00-\x1f]{0,36})"')


def answered_id(frame):
    b = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else bytes(frame)
    m = _HEAD.match(b[:64])
    if m is None:
        return "-1"
    try:
        return m.group(1).decode()
    except UnicodeError:
        return "-1"
