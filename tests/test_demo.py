"""`make demo` end to end: the same module, as a person runs it, in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import seed_purchase_body

pytestmark = pytest.mark.slow


def test_the_demo_delivers_the_samples_and_stops_both_processes_cleanly(tmp_path: Path) -> None:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("SIDECAR_", "BLUECORE_", "OTEL_"))
    }
    env["DEMO_LOG_DIR"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "bluecore_devtools.demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    lines = out.splitlines()

    def row(label: str) -> tuple[str, ...]:
        """Status, HTTP status and attempts in the table row of one sample."""
        [line] = [line for line in lines if line.startswith(label)]
        found = re.search(r"\b(DELIVERED|SKIPPED_\w+|REJECTED_\w+|FAILED_\w+) +(\d*) +(\d+) ", line)
        assert found, line
        return found.groups()

    assert row("order_completed.json (after 2x 503)") == ("DELIVERED", "202", "3")
    assert row("order_completed.json (sent again)")[0] == "SKIPPED_DUPLICATE"
    assert row("product_viewed.json") == ("DELIVERED", "202", "1")
    assert row("skip_no_consent.json") == ("SKIPPED_NO_CONSENT", "", "0")
    assert row("reject_missing_order_id.json") == ("REJECTED_INVALID", "", "0")
    assert row("skip_unmapped_event.json") == ("SKIPPED_UNMAPPED", "", "0")
    # The accepted purchase body is printed after the table: the seed's body, demo token in it.
    body_text = out[out.index("the body it accepted:") :].split("\n", 1)[1]
    body = json.JSONDecoder().raw_decode(body_text)[0]
    assert body == seed_purchase_body("demo-namespace")
    assert "sidecar stopped (exit code 0)" in out
    assert "sandbox stopped (exit code 0)" in out
