"""Facts about the sidecar that the manifest checks compare against (used by validate_test.go).

``facts`` prints the environment variables the sidecar and the OpenTelemetry SDK read, and the
path the sandbox serves events on.
``settings`` reads a JSON object of environment variables on stdin, builds the sidecar's real
``Settings`` from it and prints what the manifests must agree with, or the configuration error
that start-up would stop with.
``argv`` reads a JSON list of arguments (what follows ``bluecore-sidecar`` in a container's
command) on stdin and parses it with the CLI's own parser: which subcommand runs and, for
``sandbox``, the address it listens on. Run with the project's virtualenv Python.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys

import opentelemetry.environment_variables as api_vars
import opentelemetry.sdk.environment_variables as sdk_vars
from bluecore_devtools.sandbox import EVENTS_PATH
from bluecore_sidecar.cli import _parser
from bluecore_sidecar.config import ENV_VARS, Settings
from bluecore_sidecar.errors import ConfigError


def facts() -> dict[str, object]:
    otel = sorted(
        {
            value
            for module in (api_vars, sdk_vars)
            for name, value in vars(module).items()
            if name.startswith("OTEL_") and isinstance(value, str)
        }
    )
    return {"env_vars": list(ENV_VARS), "otel_vars": otel, "sandbox_events_path": EVENTS_PATH}


def settings(env: dict[str, str]) -> dict[str, object]:
    try:
        parsed = Settings.from_env(env)
    except ConfigError as exc:
        return {"ok": False, "error": str(exc)}
    return {
        "ok": True,
        "grpc_address": parsed.grpc_address,
        "ops_address": parsed.ops_address,
        "http_address": parsed.http_address,
        "api_url": parsed.api_url,
        "shutdown_grace_seconds": parsed.shutdown_grace.total_seconds(),
        "queue_path": "" if parsed.queue_path is None else str(parsed.queue_path),
        "queue_max_bytes": parsed.queue_max_bytes,
    }


def parse_argv(args: list[str]) -> dict[str, object]:
    # argparse reports a bad command line on stderr (and --help on stdout) and exits; keep the
    # message instead, so that stdout carries only this script's JSON.
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors), contextlib.redirect_stdout(io.StringIO()):
            parsed = _parser({}).parse_args(args)
    except SystemExit:
        lines = errors.getvalue().strip().splitlines()
        return {"ok": False, "error": lines[-1] if lines else "rejected by the CLI"}
    return {
        "ok": True,
        "command": parsed.command,
        "host": getattr(parsed, "host", None),
        "port": getattr(parsed, "port", None),
    }


def main(argv: list[str]) -> int:
    if argv == ["facts"]:
        result = facts()
    elif argv == ["settings"]:
        result = settings(json.load(sys.stdin))
    elif argv == ["argv"]:
        result = parse_argv(json.load(sys.stdin))
    else:
        sys.stderr.write("usage: sidecar_facts.py facts | settings < env.json | argv < args.json\n")
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
