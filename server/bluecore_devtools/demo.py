"""``make demo``: the sidecar against the Bluecore sandbox, fed with every sample event.

Starts ``bluecore-sidecar sandbox`` and ``bluecore-sidecar serve`` as real processes on free
loopback ports, sends each file of ``examples/events/`` through gRPC ``Deliver`` (the seed's
Order Completed after two injected 503s, to show a retry, and then once more, to show the
duplicate check), prints a table of outcomes and the body Bluecore received for the order,
then stops both with SIGTERM and checks that they exit cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .localrun import child_process, free_port

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "events"
SEED_EXAMPLE = "order_completed.json"
NAMESPACE = "demo-namespace"
Status = delivery_pb2.DeliveryStatus


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


@contextlib.contextmanager
def process(
    name: str, args: list[str], env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a child process; when the block ends, stop it and insist that it exits cleanly."""
    with child_process(args, env=env, log=log) as child:
        yield child
    say(f"{name} stopped (exit code {child.returncode})")
    if child.returncode != 0:
        print(log.read_text(errors="replace")[-2000:], file=sys.stderr)
        raise SystemExit(f"{name} did not stop cleanly")


def http_json(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URL built here
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return json.loads(response.read())


def wait_until(check: Any, what: str, child: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{what} exited early with code {child.returncode}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise SystemExit(f"{what} did not become ready within {timeout:.0f}s")


def grpc_serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def load_events() -> list[tuple[str, delivery_pb2.DataflyEvent]]:
    events = []
    for path in sorted(EXAMPLES.glob("*.json")):
        event = delivery_pb2.DataflyEvent()
        json_format.Parse(path.read_text(encoding="utf-8"), event, ignore_unknown_fields=True)
        events.append((path.name, event))
    if not events:
        raise SystemExit(f"no sample events in {EXAMPLES}")
    return events


async def send_all(address: str, sandbox_url: str) -> list[tuple[str, delivery_pb2.DeliveryResult]]:
    rows = []
    async with grpc.aio.insecure_channel(address) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        for name, event in load_events():
            label = name
            if name == SEED_EXAMPLE:
                # Two 503s first: the table shows the sidecar retrying to a 202.
                http_json(
                    f"{sandbox_url}/_sandbox/faults",
                    "POST",
                    {"kind": "fail", "count": 2, "status": 503},
                )
                label = f"{name} (after 2x 503)"
            reply = await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=15)
            rows.append((label, reply.result))
            if name == SEED_EXAMPLE:
                again = await stub.Deliver(delivery_pb2.DeliverRequest(event=event), timeout=15)
                rows.append((f"{name} (sent again)", again.result))
    return rows


def print_table(rows: list[tuple[str, delivery_pb2.DeliveryResult]]) -> None:
    header = (
        f"{'sample':40} {'datafly event':22} {'bluecore':16} {'status':18} "
        f"{'http':>4} {'try':>3} {'ms':>7}  reason"
    )
    print(header)
    print("-" * len(header))
    for label, result in rows:
        ms = result.latency.ToTimedelta().total_seconds() * 1000
        status = Status.Name(result.status).removeprefix("DELIVERY_STATUS_")
        print(
            f"{label[:40]:40} {result.datafly_event[:22]:22} {result.bluecore_event or '-':16} "
            f"{status:18} {result.http_status or '':>4} {result.attempts:>3} {ms:7.1f}  "
            f"{result.reason}"
        )


def main() -> int:
    workdir = Path(os.environ.get("DEMO_LOG_DIR", ".cache/demo"))
    workdir.mkdir(parents=True, exist_ok=True)
    sandbox_port, grpc_port, ops_port = free_port(), free_port(), free_port()
    sandbox_base = f"http://127.0.0.1:{sandbox_port}"
    address = f"127.0.0.1:{grpc_port}"
    env = {
        **os.environ,
        "BLUECORE_NAMESPACE": NAMESPACE,
        "BLUECORE_API_URL": f"{sandbox_base}/api/track/mobile/v1",
        "SIDECAR_GRPC_ADDRESS": address,
        "SIDECAR_OPS_ADDRESS": f"127.0.0.1:{ops_port}",
        "SIDECAR_HTTP_ADDRESS": "",  # the demo uses gRPC; the JSON door's port may be taken
        "SIDECAR_RETRY_BASE": "100ms",
    }
    cli = [sys.executable, "-m", "bluecore_sidecar"]
    say(f"starting the Bluecore sandbox on {sandbox_base}")
    with process(
        "sandbox", [*cli, "sandbox", "--port", str(sandbox_port)], env, workdir / "sandbox.log"
    ) as sandbox:
        wait_until(lambda: http_json(f"{sandbox_base}/_sandbox/health"), "the sandbox", sandbox)
        say(f"starting the sidecar on {address} (logs: {workdir / 'sidecar.log'})")
        with process("sidecar", [*cli, "serve"], env, workdir / "sidecar.log") as sidecar:
            wait_until(lambda: grpc_serving(address), "the sidecar", sidecar)
            say(f"sending {len(load_events())} sample events from examples/events/")
            rows = asyncio.run(send_all(address, sandbox_base))
            print()
            print_table(rows)
            print()
            received = http_json(f"{sandbox_base}/_sandbox/received?event=purchase")
            accepted = [r for r in received if r["status"] == 202]
            say(
                f"the sandbox got {len(received)} purchase requests "
                f"({len(accepted)} accepted); the body it accepted:"
            )
            if accepted:
                print(json.dumps(accepted[-1]["body"], indent=2))
            statuses = [result.status for _, result in rows]
            delivered = statuses.count(Status.DELIVERY_STATUS_DELIVERED)
            print()
            say(
                f"{delivered} delivered, {len(rows) - delivered} not sent "
                "(the reason column says why)"
            )
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
