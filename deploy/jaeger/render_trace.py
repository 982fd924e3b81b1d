"""Render one trace from Jaeger's query API as a static HTML timeline (for docs screenshots).

Jaeger built from the Go module proxy (``make jaeger-bin``) serves the query API but not the
web UI, whose bundle is built from a separate repository. This page draws what that API
returns -- the same spans, parentage, timings, tags and events the UI shows -- so the README
screenshot is taken from the trace as Jaeger stored it.

    python deploy/jaeger/render_trace.py http://127.0.0.1:16686 TRACE_ID > trace.html
"""

# ruff: noqa: T201 - writes the page to stdout

from __future__ import annotations

import html
import json
import sys
import urllib.request
from typing import Any


def render(query: str, trace_id: str) -> str:
    with urllib.request.urlopen(f"{query}/api/traces/{trace_id}", timeout=5) as response:  # noqa: S310
        trace = json.loads(response.read())["data"][0]
    spans: list[dict[str, Any]] = trace["spans"]
    by_id = {span["spanID"]: span for span in spans}
    kids: dict[str | None, list[dict[str, Any]]] = {}
    for span in spans:
        parents = [r["spanID"] for r in span.get("references", []) if r["spanID"] in by_id]
        kids.setdefault(parents[0] if parents else None, []).append(span)
    start = min(span["startTime"] for span in spans)
    total = max(span["startTime"] + span["duration"] for span in spans) - start or 1
    services = {key: p["serviceName"] for key, p in trace["processes"].items()}

    rows: list[str] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        tags = {t["key"]: t["value"] for t in span.get("tags", [])}
        error = tags.get("error") is True
        left = 100 * (span["startTime"] - start) / total
        width = max(100 * span["duration"] / total, 0.3)
        shown = [
            f"<b>{html.escape(k)}</b>={html.escape(str(v))}"
            for k, v in tags.items()
            if not k.startswith(("otel.scope", "internal."))
        ]
        events = [
            html.escape(", ".join(f"{f['key']}={f['value']}" for f in log["fields"]))
            for log in span.get("logs", [])
        ]
        millis = span["duration"] / 1000
        event_rows = "".join(f"<div class='ev'>event: {e}</div>" for e in events)
        rows.append(
            f"""<div class="row{" err" if error else ""}">
  <div class="name" style="padding-left:{depth * 18 + 6}px">
    <span class="svc">{html.escape(services.get(span["processID"], ""))}</span>
    {html.escape(span["operationName"])}</div>
  <div class="lane"><div class="bar" style="left:{left:.2f}%;width:{width:.2f}%"></div>
    <span class="dur" style="left:{min(left + width, 88):.2f}%">{millis:.2f} ms</span></div>
  <div class="tags">{" &nbsp; ".join(shown)}{event_rows}</div>
</div>"""
        )
        for child in sorted(kids.get(span["spanID"], []), key=lambda s: s["startTime"]):
            walk(child, depth + 1)

    for root in sorted(kids.get(None, []), key=lambda s: s["startTime"]):
        walk(root, 0)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Trace {trace_id}</title>
<style>
body {{ font: 13px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0;
        color: #222; }}
header {{ background: #199; color: #fff; padding: 10px 16px; font-size: 16px; }}
header small {{ opacity: .85; font-size: 12px; margin-left: 12px; }}
.row {{ display: grid; grid-template-columns: 440px 1fr; border-bottom: 1px solid #e6e6e6; }}
.row .name {{ padding: 6px; font-weight: 600; white-space: nowrap; overflow: hidden; }}
.svc {{ display: inline-block; background: #e7f3f3; color: #155; border-radius: 3px;
        padding: 0 4px; margin-right: 6px; font-weight: 400; font-size: 11px; }}
.lane {{ position: relative; background: #fafafa; }}
.bar {{ position: absolute; top: 8px; height: 12px; background: #3a9; border-radius: 2px; }}
.err .bar {{ background: #d33; }}
.err .name {{ color: #b00; }}
.dur {{ position: absolute; top: 5px; margin-left: 6px; font-size: 11px; color: #555; }}
.tags {{ grid-column: 1 / 3; padding: 2px 8px 8px 24px; font-size: 11.5px; color: #444; }}
.ev {{ color: #865; }}
</style></head><body>
<header>Jaeger trace {html.escape(trace_id)}<small>{len(spans)} spans,
{total / 1000:.1f} ms &middot; from Jaeger's query API /api/traces/{{id}}</small></header>
{"".join(rows)}
</body></html>"""


if __name__ == "__main__":
    print(render(sys.argv[1], sys.argv[2]))
