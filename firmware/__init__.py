"""The charger firmware. `dumps`: compact JSON, what goes on the wire and onto the flash; `loads`:
JSON from bytes or a view (one home for the OCPP link and the storage, which import nothing
else of each other)."""
import json

try:
    json.dumps([], separators=(",", ":"))

    def dumps(o):
        return json.dumps(o, separators=(",", ":"))
except TypeError:  # pragma: no cover - an old MicroPython without separators
    dumps = json.dumps


def loads(buf):
    """json.loads of bytes or a memoryview: MicroPython reads the view in place, CPython's json
    takes no memoryview."""
    try:
        return json.loads(buf)
    except TypeError:
        return json.loads(bytes(buf))
