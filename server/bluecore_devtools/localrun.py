"""Running the sidecar and its neighbours as local processes: for the demo and the e2e checks.

Nothing here is used by the sidecar itself; it keeps the one way of picking a free loopback port
and of starting and stopping a child process that ``make demo``, ``make clients-e2e``,
``make jaeger-e2e`` and ``make bench`` share.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def child_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
    stop_timeout: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with stdout and stderr to ``log``; on exit stop it with SIGTERM.

    A child that outlives ``stop_timeout`` seconds after SIGTERM is killed. When the block is
    left, ``returncode`` of the yielded process is set.
    """
    with log.open("wb") as sink:
        child = subprocess.Popen(  # noqa: S603 - argv is built by our own scripts
            list(argv), cwd=cwd, env=dict(env), stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=stop_timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
