"""Polls a sidecar's ``/healthz`` every 50 ms and reports, as one JSON line, how long it stalled.

``tools/faults.py`` runs it as its own process, so that the harness's own load (thousands of
gRPC calls) cannot delay the probe and be mistaken for a stall of the sidecar. Standard library
only, so it starts in a blink. It stops on SIGTERM or after ``--max-seconds``; a probe still
waiting for its answer at that moment counts with the time it has waited so far.

    python tools/faults_poller.py http://127.0.0.1:9464/healthz [--interval 0.05]
"""

from __future__ import annotations

import argparse
import http.client
import json
import signal
import statistics
import sys
import time
import urllib.parse
from types import FrameType


class _Stop(Exception):
    """Raised from the SIGTERM handler to break out of a probe that is waiting for an answer."""


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def poll(url: str, interval: float, max_seconds: float, probe_timeout: float) -> dict[str, object]:
    """Probe ``url`` until SIGTERM or ``max_seconds``; the longest wait is the stall."""
    parts = urllib.parse.urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    failures = 0
    longest_gap = 0.0
    unanswered = 0.0
    started = time.monotonic()
    last_answer = started
    connection: http.client.HTTPConnection | None = None
    probe_started = started
    in_probe = False
    try:
        while time.monotonic() - started < max_seconds:
            probe_started = time.monotonic()
            in_probe = True
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(host, port, timeout=probe_timeout)
                connection.request("GET", parts.path or "/")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                if connection is not None:
                    connection.close()
                connection = None
            in_probe = False
            now = time.monotonic()
            latencies.append(now - probe_started)
            if ok:
                longest_gap = max(longest_gap, now - last_answer)
                last_answer = now
            else:
                failures += 1
            time.sleep(max(0.0, interval - (time.monotonic() - probe_started)))
    except _Stop:
        if in_probe:
            unanswered = time.monotonic() - probe_started
    ended = time.monotonic()
    return {
        "probes": len(latencies),
        "failures": failures,
        "max_latency": max([*latencies, unanswered], default=0.0),
        "p50_latency": statistics.median(latencies) if latencies else 0.0,
        # Time since the last good answer counts too: a sidecar frozen at the end is stalled.
        "longest_gap": max(longest_gap, ended - last_answer),
        "unanswered_at_end": unanswered,
        "seconds": ended - started,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--probe-timeout", type=float, default=60.0)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _on_sigterm)
    # The harness waits for this line: a SIGTERM before the handler is set would kill the
    # poller without its report (seen on a loaded machine, where start-up takes > 0.3 s).
    sys.stderr.write("probing\n")
    sys.stderr.flush()
    try:
        report = poll(args.url, args.interval, args.max_seconds, args.probe_timeout)
    finally:
        # A second SIGTERM while reporting must not lose the report.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
