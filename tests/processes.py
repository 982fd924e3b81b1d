"""``python -m bluecore_sidecar serve`` as a real child process, for the tests that need one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Mapping


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any sidecar, Bluecore or OpenTelemetry settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("BLUECORE_", "SIDECAR_", "OTEL_"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def serve_env(api_url: str, **extra: str) -> dict[str, str]:
    """Settings for a ``serve`` on free loopback ports with short retries; ``extra`` wins."""
    settings = {
        "BLUECORE_API_URL": api_url,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        "SIDECAR_HTTP_ADDRESS": "127.0.0.1:0",
        "SIDECAR_SHUTDOWN_GRACE": "10s",
        "SIDECAR_RETRY_BASE": "10ms",
        "SIDECAR_RETRY_CAP": "50ms",
    }
    settings.update(extra)
    return clean_env(**settings)


class Served:
    """A running ``serve`` process, where it listens, and everything it wrote to stderr."""

    def __init__(self, process: asyncio.subprocess.Process, serving: dict[str, object]) -> None:
        self.process = process
        self.grpc_address = str(serving["grpc_address"])
        self.ops_url = str(serving["ops_url"])
        self.stderr: list[str] = []

    async def finish(self, timeout: float = 15.0) -> int:
        """Wait for the exit code, collecting the rest of stderr."""
        assert self.process.stderr is not None
        async with asyncio.timeout(timeout):
            rest = await self.process.stderr.read()
            code = await self.process.wait()
        self.stderr.extend(rest.decode().splitlines())
        return code


@contextlib.asynccontextmanager
async def serve(env: Mapping[str, str]) -> AsyncIterator[Served]:
    """Start ``serve`` and wait for its "serving" log line (which names the bound addresses)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bluecore_sidecar",
        "serve",
        env=dict(env),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    early: list[str] = []
    try:
        async with asyncio.timeout(20):
            while True:
                raw = await process.stderr.readline()
                if not raw:
                    raise AssertionError(f"serve exited before serving: {early}")
                line = raw.decode().rstrip("\n")
                early.append(line)
                entry = json.loads(line)
                if entry.get("message") == "serving":
                    break
        served = Served(process, entry)
        served.stderr.extend(early)
        yield served
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
