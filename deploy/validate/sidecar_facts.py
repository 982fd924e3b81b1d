"""Facts about the sidecar that the manifest checks compare against (used by validate_test.go).

``facts`` prints the environment variables the sidecar and the OpenTelemetry SDK read.
``settings`` reads a JSON object of environment variables on stdin, builds the sidecar's real
``Settings`` from it and prints what the manifests must agree with, or the configuration error
that start-up would stop with. Run with the project's virtualenv Python.
"""

from __future__ import annotations

import json
import sys

import opentelemetry.environment_variables as api_vars
import opentelemetry.sdk.environment_variables as sdk_vars
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
    return {"env_vars": list(ENV_VARS), "otel_vars": otel}


def settings(env: dict[str, str]) -> dict[str, object]:
    try:
        parsed = Settings.from_env(env)
    except ConfigError as exc:
        return {"ok": False, "error": str(exc)}
    return {
        "ok": True,
        "grpc_address": parsed.grpc_address,
        "ops_address": parsed.ops_address,
        "shutdown_grace_seconds": parsed.shutdown_grace.total_seconds(),
    }


def main(argv: list[str]) -> int:
    if argv == ["facts"]:
        result = facts()
    elif argv == ["settings"]:
        result = settings(json.load(sys.stdin))
    else:
        sys.stderr.write("usage: sidecar_facts.py facts | settings < env.json\n")
        return 2
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
