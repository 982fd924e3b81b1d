"""A second process holding the durable queue open: ``python tests/store_peer.py DB``.

For tests/test_store_shared.py. It opens ``DB`` with ``shared=True``, prints ``{"open": pid}``
and then answers one JSON command per stdin line with one JSON line on stdout:
``{"op": "enqueue", "id": ..., "key": ...}`` -> ``{"outcome": "Enqueued" | "Duplicate" | ...}``,
``{"op": "claim", "limit": n}`` -> ``{"claimed": [message ids]}`` (the claims stay held),
``{"op": "deliver", "limit": n}`` -> ``{"delivered": [message ids]}`` (claimed and completed),
``{"op": "has_pending", "key": ...}`` -> ``{"pending": bool}``. EOF closes the queue.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from bluecore_sidecar.store import NewEntry, SqliteQueue


async def main(path: str) -> None:
    queue = await SqliteQueue.open(path, shared=True)
    loop = asyncio.get_running_loop()
    print(json.dumps({"open": os.getpid()}), flush=True)
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            command = json.loads(line)
            reply: dict[str, object]
            if command["op"] == "enqueue":
                new = NewEntry(
                    message_id=command["id"],
                    ordering_key=command["key"],
                    bluecore_event=command.get("event", "optin"),
                    payload=command["id"].encode(),
                    event_time=time.time(),
                )
                (outcome,) = await queue.enqueue([new])
                reply = {"outcome": type(outcome).__name__}
            elif command["op"] == "claim":
                claims = await queue.claim_due(command["limit"])
                reply = {"claimed": [c.entry.message_id for c in claims]}
            elif command["op"] == "deliver":
                claims = await queue.claim_due(command["limit"])
                for claim in claims:
                    await queue.complete(claim, attempts=1, http_status=202)
                reply = {"delivered": [c.entry.message_id for c in claims]}
            elif command["op"] == "has_pending":
                reply = {"pending": await queue.has_pending(command["key"])}
            else:
                reply = {"error": f"unknown op {command['op']!r}"}
            print(json.dumps(reply), flush=True)
    finally:
        await queue.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
