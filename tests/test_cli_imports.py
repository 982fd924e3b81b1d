"""The client verbs start light: they never load the server-side libraries; and ``config``
loads no I/O library at all.

Each check runs in a fresh interpreter, because this test process has long since imported
everything, and reads ``sys.modules`` there (what got imported, not how long it took).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "events"
#: Module prefixes only ``serve`` needs: the aiohttp server, the OTel SDK, Prometheus.
SERVER_ONLY = ("aiohttp.web", "opentelemetry.sdk", "prometheus_client")
#: What does I/O (gRPC, HTTP, exporters, metrics): ``bluecore_sidecar.config`` loads none of it.
IO_LIBRARIES = ("grpc", "grpc_status", "aiohttp", "prometheus_client", "opentelemetry.sdk")


def loaded_after(code: str, prefixes: tuple[str, ...] = SERVER_ONLY) -> list[str]:
    """Run ``code`` in a fresh interpreter; the modules under ``prefixes`` it left loaded."""
    probe = (
        f"{code}\n"
        "import json, sys\n"
        f"prefixes = {prefixes!r}\n"
        "found = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "print('LOADED=' + json.dumps(found))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONWARNINGS": "error"},
        check=False,
    )
    lines = [line for line in run.stdout.splitlines() if line.startswith("LOADED=")]
    assert lines, f"probe failed (exit {run.returncode}): {run.stderr[-2000:]}"
    loaded: list[str] = json.loads(lines[-1].removeprefix("LOADED="))
    # Exact names for those prefixes that are packages ("aiohttp.web" is also a module).
    return [m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes)]


def test_importing_the_cli_loads_no_server_library():
    assert loaded_after("import bluecore_sidecar.cli") == []


def test_preview_send_and_watch_run_without_loading_a_server_library():
    """preview decides locally; send and watch fail fast against a closed port (exit 2)."""
    event = str(EXAMPLES / "order_completed.json")
    closed = "127.0.0.1:1"
    code = (
        "import contextlib, io\n"
        "from bluecore_sidecar.cli import main\n"
        "env = {'BLUECORE_NAMESPACE': 'probe'}\n"
        "out, err = io.StringIO(), io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        f"    assert main(['preview', {event!r}], env) == 0\n"
        f"    assert main(['send', '--target', {closed!r}, '--timeout=2', {event!r}], env) == 2\n"
        f"    assert main(['watch', '--target', {closed!r}], env) == 2\n"
    )
    assert loaded_after(code) == []


@pytest.mark.parametrize("module", ["bluecore_sidecar.app", "bluecore_devtools.sandbox"])
def test_the_probe_sees_server_libraries_where_they_belong(module):
    """The check above can fail: the serving modules do load these libraries."""
    assert loaded_after(f"import {module}") != []


def test_importing_config_loads_no_io_library():
    """Settings (and the errors they raise) load without grpc, aiohttp, Prometheus or the
    OpenTelemetry SDK."""
    assert loaded_after("import bluecore_sidecar.config", IO_LIBRARIES) == []


def test_the_io_probe_sees_grpc_once_an_error_becomes_a_grpc_status():
    """The check above can fail: turning a RequestError into a gRPC status loads grpc."""
    code = (
        "from bluecore_sidecar.errors import InvalidRequest, to_rpc_status\n"
        "to_rpc_status(InvalidRequest('EVENT_MISSING', 'no event'))\n"
    )
    assert {"grpc", "grpc_status"} <= set(loaded_after(code, IO_LIBRARIES))
