"""The charger firmware. `dumps`: compact JSON, what goes on the wire and onto the flash (one
home for the OCPP link and the storage, which import nothing else of each other)."""
import json

try:
    json.dumps([], separators=(",", ":"))

    def dumps(o):
        return json.dumps(o, separators=(",", ":"))
except TypeError:  # pragma: no cover - an old MicroPython without separators
    dumps = json.dumps
