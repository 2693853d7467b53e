"""The OCPP 1.6J link: ws (WebSocket client), rpc (OCPP-J frames), outbox (durable queue), and
chargepoint, the hub of the services (docs/ocpp.md). Here: what its parts share."""
from firmware import dumps  # noqa: F401 - compact JSON: what goes on the wire and into the outbox

try:
    from os import urandom as random_bytes  # n random bytes: WebSocket keys and masks, call ids
except ImportError:  # pragma: no cover - every supported runtime has os.urandom
    import random

    def random_bytes(n):
        return bytes(random.getrandbits(8) for _ in range(n))
