"""The OCPP 1.6J link: ws (WebSocket client), rpc (OCPP-J frames), outbox (durable queue)."""
import json

try:
    json.dumps([], separators=(",", ":"))

    def dumps(o):
        """Compact JSON: what goes on the wire and into the outbox."""
        return json.dumps(o, separators=(",", ":"))
except TypeError:  # pragma: no cover - an old MicroPython without separators
    dumps = json.dumps
