"""Proof in a real Jaeger: deliveries traced by the sidecar are stored, queryable and shown there.

Starts Jaeger (built by ``make jaeger-bin``, configured by ``jaeger.yaml`` beside this file),
the sandbox Bluecore and ``bluecore-sidecar serve`` on free loopback ports, with the sidecar's
``OTEL_*`` pointing at Jaeger's OTLP gRPC receiver. Sends one event that succeeds after a 503
(with the caller's own ``traceparent``) and one that Bluecore refuses with a 400, then asks
Jaeger's query API for both traces and checks the spans, their parentage and attributes, that
the failure is marked as an error, that a tag search finds it, and that neither the namespace
token nor an email is anywhere in them.

With ``--ui FOLDER`` (a built jaeger-ui) Jaeger serves the real UI, and headless Chromium opens
the retried delivery's trace page: the page must show the RPC, the delivery and the two HTTP
tries under it with their status codes (503, then 202), and it is saved as ``--screenshot``.

Run it with ``make jaeger-e2e``; ``--keep`` leaves everything running to look at the UI.
Every wait has a timeout; progress goes to stdout; the exit code is 0 only if all checks pass.
"""

# ruff: noqa: T201 - a script that reports its progress to a person

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
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

import devtools
import grpc
from bluecore_devtools.localrun import child_process, free_port
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format

NAMESPACE = "e2e-namespace-" + secrets.token_hex(8)
EMAIL = "jaeger.e2e@example.com"
T = TypeVar("T")

HERE = Path(__file__).resolve().parent


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


RPC = "datafly.bluecore.v1.DeliveryService/Deliver"

# What the trace page shows, read from the DOM in page order: each span row (service,
# operation, depth in the tree, error icon) and each opened span detail (title, tags summary).
# The class names are jaeger-ui's own (TraceTimelineViewer: SpanBarRow, SpanDetail,
# AccordianKeyValues in v1.74.0).
READ_TIMELINE = """
[...document.querySelectorAll('.span-row, .detail-row')].map(row => {
  if (row.classList.contains('span-row')) {
    return {
      row: 'span',
      service: row.querySelector('.span-svc-name')?.textContent.trim(),
      operation: row.querySelector('.endpoint-name')?.textContent.trim(),
      depth: row.querySelectorAll('.span-name-column .SpanTreeOffset--indentGuide').length - 1,
      error: row.querySelector('.SpanBarRow--errorIcon') !== null,
    };
  }
  const tags = {};
  for (const header of row.querySelectorAll('.AccordianKeyValues--header')) {
    if (!/^(Tags|Attributes):$/.test(header.querySelector('[data-test=label]')?.textContent)) {
      continue;
    }
    for (const item of header.querySelectorAll('.AccordianKeyValues--summaryItem')) {
      const key = item.querySelector('.AccordianKeyValues--summaryLabel').textContent;
      tags[key] = item.textContent.slice(key.length + 1);
    }
  }
  return {row: 'detail', title: row.querySelector('h2')?.textContent.trim(), tags};
})
"""

# Opens the detail of every span with one of these operation names, the way a person would.
OPEN_DETAILS = """
(names => {
  const links = [...document.querySelectorAll('.span-row a.span-name')]
    .filter(a => names.includes(a.querySelector('.endpoint-name')?.textContent.trim()));
  links.forEach(a => a.click());
  return links.length;
})(%s)
"""

# Resolves after two frames, so the screenshot shows the page as laid out after the clicks.
SETTLED = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))"


async def look_in_ui(
    chromium: str, url: str, trace_id: str, log: Path
) -> tuple[str, list[dict[str, Any]], bytes]:
    """Open a trace in the real Jaeger UI as a person would: its title, timeline and a PNG."""
    async with devtools.open_page(chromium, url, width=1400, height=900, log=log) as page:
        title = await page.wait_for(
            "the trace page with its spans",
            f"document.title.includes({json.dumps(trace_id[:7])})"
            " && document.querySelectorAll('.span-row').length >= 4 && document.title",
            30,
        )
        await page.evaluate(OPEN_DETAILS % json.dumps(["bluecore.deliver", "POST"]))
        await page.wait_for(
            "the opened span details", "document.querySelectorAll('.detail-row').length >= 3", 15
        )
        await page.evaluate(SETTLED)
        return str(title), await page.evaluate(READ_TIMELINE), await page.screenshot()


def check_ui(checks: Checks, title: str, timeline: list[dict[str, Any]]) -> None:
    checks.that(RPC in title, f"the page is the trace of {RPC}")
    spans = [row for row in timeline if row["row"] == "span"]
    shown = [(row["operation"], row["depth"]) for row in spans]
    checks.that(
        shown == [(RPC, 0), ("bluecore.deliver", 1), ("POST", 2), ("POST", 2)],
        f"it draws {RPC} > bluecore.deliver > POST, POST",
    )
    checks.that(
        [row["error"] for row in spans] == [False, False, True, False],
        "  only the first POST has the error icon",
    )
    details: dict[str, list[dict[str, str]]] = {}
    for above, row in itertools.pairwise(timeline):
        if row["row"] == "detail" and above["row"] == "span":
            details.setdefault(above["operation"], []).append(row["tags"])
    deliver = details.get("bluecore.deliver", [{}])[0]
    checks.that(
        (deliver.get("delivery.status"), deliver.get("delivery.attempts")) == ("DELIVERED", "2"),
        "  bluecore.deliver shows delivery.status=DELIVERED, delivery.attempts=2",
    )
    codes = [tags.get("http.response.status_code") for tags in details.get("POST", [])]
    checks.that(codes == ["503", "202"], "  the POSTs show http.response.status_code 503, then 202")
    shown_text = json.dumps([title, timeline])
    checks.that(
        NAMESPACE not in shown_text and EMAIL not in shown_text, "  no token or email on the page"
    )


def main() -> int:  # noqa: PLR0915 - one linear script reads best top to bottom
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jaeger", required=True, help="path of the jaeger binary")
    parser.add_argument(
        "--config", type=Path, default=HERE / "jaeger.yaml", help="Jaeger's config (ports from env)"
    )
    parser.add_argument("--ui", type=Path, help="a built jaeger-ui folder: check the trace in it")
    parser.add_argument(
        "--screenshot", type=Path, default=Path("build/jaeger-trace.png"), help="PNG of the UI"
    )
    parser.add_argument("--keep", action="store_true", help="keep everything running at the end")
    args = parser.parse_args()
    started = time.monotonic()

    ports = {name: free_port() for name in ("otlp", "otlp_http", "query", "query_grpc", "health")}
    sandbox_port, grpc_port, ops_port = free_port(), free_port(), free_port()
    service = "bluecore-sidecar-e2e"
    query = f"http://127.0.0.1:{ports['query']}"
    work = Path(tempfile.mkdtemp(prefix="bluecore-jaeger-e2e-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "JAEGER_"))}
    jaeger_env = {
        **base_env,
        "JAEGER_OTLP_GRPC_PORT": str(ports["otlp"]),
        "JAEGER_OTLP_HTTP_PORT": str(ports["otlp_http"]),
        "JAEGER_QUERY_PORT": str(ports["query"]),
        "JAEGER_QUERY_GRPC_PORT": str(ports["query_grpc"]),
        "JAEGER_HEALTH_PORT": str(ports["health"]),
        "JAEGER_UI": str(args.ui.resolve()) if args.ui else "",
    }

    with contextlib.ExitStack() as stack:
        step(f"starting jaeger ({args.jaeger}); OTLP gRPC :{ports['otlp']}, query {query}")
        stack.enter_context(
            process(
                "jaeger",
                [args.jaeger, "--config", str(args.config)],
                jaeger_env,
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
            "SIDECAR_HTTP_ADDRESS": "",  # the JSON door is not part of this check
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
        if args.ui:
            chromium = devtools.find_chromium()
            step(f"opening {ui} in the Jaeger UI with headless {chromium}")
            if chromium is None:
                checks.that(False, "chromium is installed (Debian: apt-get install chromium)")
            else:
                try:
                    title, timeline, png = asyncio.run(
                        look_in_ui(chromium, ui, caller_trace, work / "chromium.log")
                    )
                except (OSError, RuntimeError, TimeoutError) as exc:
                    checks.that(False, f"the trace in the UI: {exc}")
                else:
                    check_ui(checks, title, timeline)
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    args.screenshot.write_bytes(png)
                    print(f"    saved {args.screenshot} ({len(png) // 1024} KiB)", flush=True)
        if checks.failed:
            print(f"FAIL: {len(checks.failed)} check(s) failed; logs in {work}", flush=True)
            return 1
        step(f"PASS in {time.monotonic() - started:.1f}s; trace: {ui}")
        if args.keep:
            step("--keep: running until Ctrl-C")
            signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop the children too
            with contextlib.suppress(KeyboardInterrupt):
                signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
