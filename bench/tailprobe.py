"""Run ``bluecore_sidecar`` with two probes of where its latency tail comes from.

``python bench/tailprobe.py OUT.json serve`` is ``python -m bluecore_sidecar serve`` plus:
a ``gc.callbacks`` timer of every collection (per generation), and a thread that every
``PING_S`` asks the event loop to run a callback and records how late it ran (the loop's lag:
the longest the loop could not get to new work). Both are written to OUT.json on exit. The
probes cost a few microseconds per collection and a ping per PING_S; ``run.py --tail-probe``
runs the tracing-off sidecar under this wrapper in the latency phase only when asked.
``TAILPROBE_GC_YOUNG=N`` (e.g. ``--sidecar-env TAILPROBE_GC_YOUNG=700``) replaces the
sidecar's young-generation GC threshold, for experiments.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

PING_S = 0.002


class Probe:
    """Collects GC pause lengths and loop lags, in milliseconds."""

    def __init__(self) -> None:
        # (time.monotonic() when it ended, milliseconds): the clock run.py stamps phases with.
        self.gc_ms: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}
        self.lag_ms: list[tuple[float, float]] = []
        # How late the ping thread itself woke (it needs the GIL and a CPU): a stall of the
        # whole process (GIL held elsewhere, no core free) shows here, not in the loop lag,
        # whose clock starts only once the thread runs.
        self.wake_ms: list[tuple[float, float]] = []
        self._gc_start = 0.0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started = time.monotonic()

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            took = (time.perf_counter() - self._gc_start) * 1e3
            self.gc_ms[info["generation"]].append((time.monotonic(), took))

    def _ran(self, due: float) -> None:
        self.lag_ms.append((time.monotonic(), (time.perf_counter() - due) * 1e3))

    def ping(self) -> None:
        while True:
            due = time.perf_counter() + PING_S
            time.sleep(PING_S)
            self.wake_ms.append((time.monotonic(), (time.perf_counter() - due) * 1e3))
            loop = self.loop
            if loop is None or loop.is_closed():
                continue
            try:
                loop.call_soon_threadsafe(self._ran, time.perf_counter())
            except RuntimeError:  # closed between the check and the call
                continue

    def report(self) -> dict[str, Any]:
        return {
            "seconds": time.monotonic() - self.started,
            "gc_ms": {str(g): v for g, v in self.gc_ms.items()},
            "lag_ms": self.lag_ms,
            "wake_ms": self.wake_ms,
        }


class _Policy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self._probe = probe

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        self._probe.loop = loop
        return loop


def main() -> int:
    out = Path(sys.argv[1])
    probe = Probe()
    gc.callbacks.append(probe.on_gc)
    asyncio.set_event_loop_policy(_Policy(probe))
    threading.Thread(target=probe.ping, name="tailprobe", daemon=True).start()
    from bluecore_sidecar import app  # noqa: PLC0415 - after the probes
    from bluecore_sidecar.cli import main as sidecar_main  # noqa: PLC0415 - after the probes

    # An experiment's young-generation threshold instead of the sidecar's (serve() reads the
    # module's constant when it sets it); the variable is this probe's, not the sidecar's.
    young = os.environ.get("TAILPROBE_GC_YOUNG")
    if young:
        app.GC_YOUNG_OBJECTS = int(young)

    try:
        return sidecar_main(sys.argv[2:])
    finally:
        out.write_text(json.dumps(probe.report()) + "\n")


if __name__ == "__main__":
    sys.exit(main())
