"""The ops listener: /healthz, /readyz and /metrics over HTTP, for kubelet probes and Prometheus.

One sidecar process and the supervisor of ``SIDECAR_WORKERS`` answer these three paths
differently (one process's state against all workers' states and aggregated metrics), but they
listen the same way: this module holds that part, and the addresses' printable form.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import split_address
from .errors import ConfigError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(
    stack: contextlib.AsyncExitStack,
    address: str,
    *,
    healthz: Handler,
    readyz: Handler,
    metrics: Handler,
) -> str:
    """Listen on ``address`` (``SIDECAR_OPS_ADDRESS``) until ``stack`` closes; returns the URL.

    A port that cannot be bound stops start-up with :class:`ConfigError` naming the variable.
    """
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = split_address(address)
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as error:
        raise ConfigError(
            "SIDECAR_OPS_ADDRESS", f"{address}: cannot listen there ({error.strerror})"
        ) from None
    return base_url(address, runner.addresses[0][1])


def base_url(address: str, bound: int) -> str:
    """``http://host:port`` of a listener on ``address`` that got port ``bound``."""
    host, _ = split_address(address)
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104
    return f"http://{join(shown, bound)}"


def join(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
