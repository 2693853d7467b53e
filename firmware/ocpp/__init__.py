"""The OCPP 1.6J link: ws (WebSocket client), rpc (OCPP-J frames), outbox (durable queue)."""
from firmware import dumps  # noqa: F401 - compact JSON: what goes on the wire and into the outbox
