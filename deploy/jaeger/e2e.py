"""Proof in a real Jaeger: deliveries traced by the sidecar are stored and queryable there.

Starts Jaeger (built by ``make jaeger-bin``), the sandbox Bluecore and ``bluecore-sidecar
serve`` on free loopback ports, with the sidecar's ``OTEL_*`` pointing at Jaeger's OTLP gRPC
receiver. Sends one event that succeeds after a 503 (with the caller's own ``traceparent``)
and one that Bluecore refuses with a 400, then asks Jaeger's query API for both traces and
checks the spans, their parentage and attributes, that the failure is marked as an error, that
a tag search finds it, and that neither the namespace token nor an email is anywhere in them.

Run it with ``make jaeger-e2e``; ``--keep`` leaves everything running to look at the UI.
Every wait has a timeout; progress goes to stdout; the exit code is 0 only if all checks pass.
"""

# ruff: noqa: T201 - a script that reports its progress to a person

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from bluecore_devtools.localrun import child_process, free_port
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format

NAMESPACE = "e2e-namespace-" + secrets.token_hex(8)
EMAIL = "jaeger.e2e@example.com"
T = TypeVar("T")

JAEGER_CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp}
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float) -> T:
    """Call ``probe`` until it returns something other than None, or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (OSError, urllib.error.URLError, ValueError) as exc:
            last_error, value = exc, None
        if value is not None:
            return value
        time.sleep(0.25)
    raise SystemExit(f"FAIL: {what} did not happen within {timeout:.0f}s ({last_error or ''})")


def http_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URLs built here
        url, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return json.loads(response.read())


def http_ok(url: str) -> bool | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
            return True if response.status == 200 else None
    except urllib.error.HTTPError:
        return None


@contextlib.contextmanager
def process(name: str, argv: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """Run ``argv`` with output to ``log``; stop it on exit and say if it ended badly."""
    with child_process(argv, env=env, log=log, stop_timeout=15) as child:
        yield
    if child.returncode not in (0, -signal.SIGTERM):
        print(f"    {name} exited with {child.returncode}; log: {log}", flush=True)


def event(message_id: str, **fields: Any) -> delivery_pb2.DataflyEvent:
    raw: dict[str, Any] = {
        "messageId": message_id,
        "type": "track",
        "event": "Product Viewed",
        "anonymousId": "anon-e2e",
        "properties": {"product_id": "SKU-E2E", "price": 12.5},
        "traits": {"email": EMAIL},
        "context": {"consent": {"marketing": True}},
    }
    raw.update(fields)
    return json_format.ParseDict(raw, delivery_pb2.DataflyEvent())


async def deliver(target: str, request_event: Any, traceparent: str | None) -> Any:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        metadata = (("traceparent", traceparent),) if traceparent else None
        reply = await stub.Deliver(
            delivery_pb2.DeliverRequest(event=request_event), timeout=15, metadata=metadata
        )
        return reply.result


def tags(item: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in item.get("tags", [])}


def parent_of(span: dict[str, Any]) -> str | None:
    for ref in span.get("references", []):
        if ref.get("refType") == "CHILD_OF":
            return str(ref["spanID"])
    return None


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def that(self, ok: bool, text: str) -> None:
        print(f"    {'ok  ' if ok else 'FAIL'} {text}", flush=True)
        if not ok:
            self.failed.append(text)


def check_retried(checks: Checks, trace: dict[str, Any], caller_span: str) -> None:
    spans = trace["spans"]
    by_op: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_op.setdefault(span["operationName"], []).append(span)
    server = by_op.get("datafly.bluecore.v1.DeliveryService/Deliver", [])
    checks.that(len(server) == 1, "one SERVER span datafly.bluecore.v1.DeliveryService/Deliver")
    if not server:
        return
    checks.that(tags(server[0]).get("span.kind") == "server", "  its kind is server")
    checks.that(parent_of(server[0]) == caller_span, "  its parent is the caller's span")
    deliver = [s for s in by_op.get("bluecore.deliver", []) if parent_of(s) == server[0]["spanID"]]
    checks.that(len(deliver) == 1, "one bluecore.deliver span under it")
    if not deliver:
        return
    attributes = tags(deliver[0])
    checks.that(attributes.get("delivery.status") == "DELIVERED", "  delivery.status=DELIVERED")
    checks.that(attributes.get("delivery.attempts") == 2, "  delivery.attempts=2")
    checks.that(attributes.get("bluecore.event") == "viewed_product", "  bluecore.event set")
    checks.that(attributes.get("datafly.event") == "Product Viewed", "  datafly.event set")
    checks.that(
        str(attributes.get("datafly.message_id", "")).startswith("e2e-retried-"),
        "  datafly.message_id set",
    )
    logs = [tags({"tags": log["fields"]}).get("event") for log in deliver[0].get("logs", [])]
    checks.that("retry.backoff" in logs, "  retry.backoff event recorded")
    tries = sorted(
        (s for s in by_op.get("POST", []) if parent_of(s) == deliver[0]["spanID"]),
        key=lambda s: s["startTime"],
    )
    checks.that(len(tries) == 2, "two POST CLIENT spans under it (one per HTTP try)")
    if len(tries) == 2:
        first, second = tags(tries[0]), tags(tries[1])
        checks.that(first.get("span.kind") == "client", "  kind client")
        checks.that(
            (first.get("http.response.status_code"), second.get("http.response.status_code"))
            == (503, 202),
            "  statuses 503 then 202",
        )
        checks.that(
            (first.get("http.request.resend_count"), second.get("http.request.resend_count"))
            == (0, 1),
            "  http.request.resend_count 0 then 1",
        )
        checks.that(first.get("error") is True, "  the 503 try is an error")
        checks.that("?" not in str(first.get("url.full", "?")), "  url.full has no query")


def check_failed(checks: Checks, trace: dict[str, Any]) -> None:
    spans = trace["spans"]
    deliver = [s for s in spans if s["operationName"] == "bluecore.deliver"]
    checks.that(len(deliver) == 1, "failed trace has its bluecore.deliver span")
    if deliver:
        attributes = tags(deliver[0])
        checks.that(attributes.get("error") is True, "  marked as error")
        checks.that(attributes.get("otel.status_code") == "ERROR", "  otel.status_code=ERROR")
        checks.that(attributes.get("delivery.status") == "FAILED_PERMANENT", "  FAILED_PERMANENT")
        checks.that(attributes.get("delivery.reason") == "HTTP_400", "  delivery.reason=HTTP_400")
    tries = [s for s in spans if s["operationName"] == "POST"]
    checks.that(len(tries) == 1 and tags(tries[0]).get("error") is True, "  one POST try, an error")


def main() -> int:  # noqa: PLR0915 - one linear script reads best top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jaeger", required=True, help="path of the jaeger binary")
    parser.add_argument("--keep", action="store_true", help="keep everything running at the end")
    args = parser.parse_args()
    started = time.monotonic()

    ports = {name: free_port() for name in ("otlp", "query", "query_grpc", "health")}
    sandbox_port, grpc_port, ops_port = free_port(), free_port(), free_port()
    service = "bluecore-sidecar-e2e"
    query = f"http://127.0.0.1:{ports['query']}"
    work = Path(tempfile.mkdtemp(prefix="bluecore-jaeger-e2e-"))
    (work / "jaeger.yaml").write_text(JAEGER_CONFIG.format(**ports))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}

    with contextlib.ExitStack() as stack:
        step(f"starting jaeger ({args.jaeger}); OTLP gRPC :{ports['otlp']}, query {query}")
        stack.enter_context(
            process(
                "jaeger",
                [args.jaeger, "--config", str(work / "jaeger.yaml")],
                base_env,
                work / "jaeger.log",
            )
        )
        wait_for("jaeger query API", lambda: http_ok(f"{query}/api/services"), 60)

        step(f"starting the sandbox Bluecore on :{sandbox_port}")
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        cli = [sys.executable, "-m", "bluecore_sidecar"]
        stack.enter_context(
            process(
                "sandbox",
                [*cli, "sandbox", "--host", "127.0.0.1", "--port", str(sandbox_port)],
                base_env,
                work / "sandbox.log",
            )
        )
        wait_for("sandbox", lambda: http_ok(f"{sandbox}/_sandbox/health"), 30)

        step(f"starting bluecore-sidecar serve on :{grpc_port} with tracing to jaeger")
        sidecar_env = {
            **base_env,
            "BLUECORE_NAMESPACE": NAMESPACE,
            "BLUECORE_API_URL": f"{sandbox}/api/track/mobile/v1",
            "SIDECAR_GRPC_ADDRESS": f"127.0.0.1:{grpc_port}",
            "SIDECAR_OPS_ADDRESS": f"127.0.0.1:{ops_port}",
            "SIDECAR_RETRY_BASE": "50ms",
            "SIDECAR_SHUTDOWN_GRACE": "2s",
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['otlp']}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=e2e",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
        }
        stack.enter_context(process("sidecar", [*cli, "serve"], sidecar_env, work / "sidecar.log"))
        wait_for("sidecar readiness", lambda: http_ok(f"http://127.0.0.1:{ops_port}/readyz"), 30)

        step("delivering: one event that succeeds after a 503, one that Bluecore refuses (400)")
        caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
        http_json(f"{sandbox}/_sandbox/faults", {"kind": "fail", "count": 1, "status": 503})
        retried = asyncio.run(
            deliver(
                f"127.0.0.1:{grpc_port}",
                event("e2e-retried-" + secrets.token_hex(4)),
                f"00-{caller_trace}-{caller_span}-01",
            )
        )
        http_json(f"{sandbox}/_sandbox/faults", {"kind": "fail", "count": 1, "status": 400})
        failed = asyncio.run(
            deliver(
                f"127.0.0.1:{grpc_port}",
                event("e2e-failed-" + secrets.token_hex(4), type="identify"),
                None,
            )
        )
        checks = Checks()
        checks.that(
            retried.status == delivery_pb2.DELIVERY_STATUS_DELIVERED and retried.attempts == 2,
            f"retried event DELIVERED after {retried.attempts} attempts",
        )
        checks.that(retried.trace_id == caller_trace, "its DeliveryResult.trace_id is the caller's")
        checks.that(
            failed.status == delivery_pb2.DELIVERY_STATUS_FAILED_PERMANENT,
            f"refused event {delivery_pb2.DeliveryStatus.Name(failed.status)}",
        )

        step(f"asking jaeger for trace {retried.trace_id} and {failed.trace_id}")

        def fetch(trace_id: str, spans: int) -> dict[str, Any] | None:
            try:
                data = http_json(f"{query}/api/traces/{trace_id}")["data"]
            except urllib.error.HTTPError:
                return None
            return data[0] if data and len(data[0]["spans"]) >= spans else None

        retried_trace = wait_for("the retried trace in jaeger", lambda: fetch(caller_trace, 4), 30)
        failed_trace = wait_for("the failed trace in jaeger", lambda: fetch(failed.trace_id, 3), 30)
        check_retried(checks, retried_trace, caller_span)
        check_failed(checks, failed_trace)
        processes = retried_trace["processes"].values()
        checks.that(
            {p["serviceName"] for p in processes} == {service}, f"service.name is {service}"
        )

        search = urllib.parse.urlencode(
            {"service": service, "tags": json.dumps({"delivery.status": "FAILED_PERMANENT"})}
        )
        found = wait_for(
            "a tag search for the failure",
            lambda: http_json(f"{query}/api/traces?{search}")["data"] or None,
            30,
        )
        checks.that(
            [t["traceID"] for t in found] == [failed.trace_id],
            "search by tag delivery.status=FAILED_PERMANENT finds exactly the failed trace",
        )
        dumped = json.dumps([retried_trace, failed_trace])
        checks.that(NAMESPACE not in dumped, "the namespace token is nowhere in either trace")
        checks.that(EMAIL not in dumped and "@" not in dumped, "no email anywhere in either trace")

        ui = f"{query}/trace/{caller_trace}"
        if checks.failed:
            print(f"FAIL: {len(checks.failed)} check(s) failed; logs in {work}", flush=True)
            return 1
        step(f"PASS in {time.monotonic() - started:.1f}s; trace: {ui}")
        if args.keep:
            step("--keep: running until Ctrl-C")
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
