"""The ``bluecore-sidecar`` command line: preview (local), send (against a live sidecar)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path

import pytest
from bluecore_sidecar.cli import main

from .conftest import NAMESPACE

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "events"


def run_main(capsys: pytest.CaptureFixture[str], *argv: str, env: dict[str, str] | None = None):
    code = main(list(argv), env or {})
    out, err = capsys.readouterr()
    return code, out, err


def test_preview_prints_the_body_with_the_token_redacted(capsys):
    code, out, err = run_main(
        capsys,
        "preview",
        str(EXAMPLES / "order_completed.json"),
        env={"BLUECORE_NAMESPACE": NAMESPACE},
    )
    assert code == 0
    assert err == ""
    assert "WOULD SEND" in out
    assert "Order Completed -> purchase" in out
    assert '"token": "***"' in out
    assert NAMESPACE not in out
    assert '"order_id": "ORD-1001"' in out


def test_preview_runs_without_a_configured_namespace(capsys):
    code, out, _ = run_main(capsys, "preview", str(EXAMPLES / "page.json"))
    assert code == 0
    assert '"event": "viewed_page"' in out


def test_preview_json_holds_the_result_and_every_body(capsys):
    code, out, _ = run_main(
        capsys, "preview", "--json", str(EXAMPLES / "add_to_cart_ga4_two_items.json")
    )
    assert code == 0
    printed = json.loads(out)
    assert printed["result"]["status"] == "DELIVERY_STATUS_DELIVERED"
    assert [b["event"] for b in printed["bodies"]] == ["add_to_cart", "add_to_cart"]
    assert {b["properties"]["token"] for b in printed["bodies"]} == {"***"}


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("skip_no_consent.json", "NO_MARKETING_CONSENT"),
        ("skip_unmapped_event.json", "UNMAPPED_EVENT"),
        ("reject_missing_order_id.json", "MISSING_ORDER_ID"),
    ],
)
def test_preview_of_an_event_that_would_not_be_sent_exits_1_with_the_reason(capsys, name, reason):
    code, out, _ = run_main(capsys, "preview", str(EXAMPLES / name))
    assert code == 1
    assert f"reason:   {reason}" in out
    assert "body" not in out


def test_preview_follows_the_event_map_setting(capsys):
    code, out, _ = run_main(
        capsys,
        "preview",
        str(EXAMPLES / "product_viewed.json"),
        env={"SIDECAR_EVENT_MAP": '{"Product Viewed": null}'},
    )
    assert code == 1
    assert "SKIPPED_UNMAPPED" in out


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('"text"', "must be a JSON object"),
        ('{"messageId": 5, "type": "track"}', "not a Datafly event"),
        ('{"properties": "flat"}', "not a Datafly event"),
    ],
)
def test_preview_of_bad_input_exits_2_with_one_line(capsys, tmp_path, content, problem):
    path = tmp_path / "event.json"
    path.write_text(content, encoding="utf-8")
    code, out, err = run_main(capsys, "preview", str(path))
    assert code == 2
    assert out == ""
    [line] = err.splitlines()
    assert str(path) in line
    assert problem in line


def test_preview_of_a_missing_file_exits_2(capsys, tmp_path):
    code, _, err = run_main(capsys, "preview", str(tmp_path / "absent.json"))
    assert code == 2
    [line] = err.splitlines()
    assert "cannot read" in line


def test_a_config_error_exits_2_naming_the_variable(capsys):
    code, _, err = run_main(
        capsys, "preview", str(EXAMPLES / "page.json"), env={"SIDECAR_CONSENT_DEFAULT": "perhaps"}
    )
    assert code == 2
    [line] = err.splitlines()
    assert "SIDECAR_CONSENT_DEFAULT" in line


def test_send_without_events_exits_2(capsys):
    code, _, err = run_main(capsys, "send")
    assert code == 2
    assert "send needs event files" in err


def test_send_to_a_closed_port_says_nothing_is_listening(capsys, refused_port):
    """A refused connection is named as such, not as an answer from the sidecar."""
    target = f"127.0.0.1:{refused_port}"
    code, out, err = run_main(capsys, "send", str(EXAMPLES / "page.json"), "--target", target)
    assert code == 2
    assert out == ""
    assert err == (
        f"bluecore-sidecar: nothing is listening on {target} (start the sidecar with "
        "`bluecore-sidecar serve`, or pass --target HOST:PORT)\n"
    )
    assert "UNAVAILABLE" not in err


# -- send, as a real process against a sidecar running in this test ----------------------------


async def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``python -m bluecore_sidecar ARGV`` without blocking this test's event loop."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLUECORE_", "SIDECAR_"))}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bluecore_sidecar",
        *argv,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_send_prints_one_json_result_and_exits_0_when_delivered(sidecar, sandbox):
    code, out, err = await run_cli(
        "send", str(EXAMPLES / "order_completed.json"), "--target", sidecar.grpc_address
    )
    assert code == 0, err
    [line] = out.splitlines()
    result = json.loads(line)
    assert result["status"] == "DELIVERY_STATUS_DELIVERED"
    assert result["message_id"] == "demo-order-completed-0001"
    assert result["bluecore_event"] == "purchase"
    assert [r.event for r in sandbox.received] == ["purchase"]


async def test_send_exits_1_when_an_event_is_not_delivered(sidecar, sandbox):
    code, out, _ = await run_cli(
        "send",
        str(EXAMPLES / "page.json"),
        str(EXAMPLES / "skip_no_consent.json"),
        "--target",
        sidecar.grpc_address,
    )
    assert code == 1
    statuses = [json.loads(line)["status"] for line in out.splitlines()]
    assert statuses == ["DELIVERY_STATUS_DELIVERED", "DELIVERY_STATUS_SKIPPED_NO_CONSENT"]
    assert [r.event for r in sandbox.received] == ["viewed_page"]


async def test_send_batch_prints_one_result_per_line_in_order(sidecar, sandbox, tmp_path):
    names = ["product_viewed.json", "skip_unmapped_event.json", "signed_up.json"]
    lines = [json.dumps(json.loads((EXAMPLES / n).read_text(encoding="utf-8"))) for n in names]
    batch = tmp_path / "events.jsonl"
    batch.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    code, out, _ = await run_cli("send", "--batch", str(batch), "--target", sidecar.grpc_address)
    assert code == 1
    results = [json.loads(line) for line in out.splitlines()]
    assert [r["status"] for r in results] == [
        "DELIVERY_STATUS_DELIVERED",
        "DELIVERY_STATUS_SKIPPED_UNMAPPED",
        "DELIVERY_STATUS_DELIVERED",
    ]
    assert sorted(r.event for r in sandbox.received) == ["optin", "viewed_product"]


async def test_send_batch_of_deliverable_events_exits_0(sidecar, sandbox, tmp_path):
    batch = tmp_path / "events.jsonl"
    batch.write_text(
        '{"messageId": "j-1", "type": "page", "anonymousId": "a-1",'
        ' "context": {"consent": {"marketing": true}, "page": {"url": "https://shop.example/"}}}\n'
        '{"messageId": "j-2", "type": "page", "anonymousId": "a-2",'
        ' "context": {"consent": {"marketing": true}, "page": {"url": "https://shop.example/b"}}}\n',
        encoding="utf-8",
    )
    code, out, _ = await run_cli("send", "--batch", str(batch), "--target", sidecar.grpc_address)
    assert code == 0
    assert [json.loads(line)["message_id"] for line in out.splitlines()] == ["j-1", "j-2"]
    assert len(sandbox.received) == 2


async def test_the_readme_batch_file_delivers_every_event(sidecar, sandbox):
    """examples/events.jsonl (named by the README) holds example events that all go out."""
    batch = EXAMPLES.parent / "events.jsonl"
    code, out, err = await run_cli("send", "--batch", str(batch), "--target", sidecar.grpc_address)
    assert code == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) >= 5
    assert {r["status"] for r in results} == {"DELIVERY_STATUS_DELIVERED"}
    assert len(sandbox.received) == len(results)
    # Each line is one of the single-event examples, so the two never drift apart.
    singles = [json.loads(p.read_text(encoding="utf-8")) for p in EXAMPLES.glob("*.json")]
    for line in batch.read_text(encoding="utf-8").splitlines():
        assert json.loads(line) in singles


async def test_send_with_a_bad_line_in_the_batch_exits_2_sending_nothing(
    sidecar, sandbox, tmp_path
):
    batch = tmp_path / "events.jsonl"
    batch.write_text('{"messageId": "ok", "type": "page"}\n{oops\n', encoding="utf-8")
    code, out, err = await run_cli("send", "--batch", str(batch), "--target", sidecar.grpc_address)
    assert code == 2
    assert out == ""
    [line] = err.splitlines()
    assert f"{batch}:2" in line
    assert sandbox.received == []


@pytest.mark.parametrize("workers", ["1", "2"], ids=["one-process", "supervisor"])
@pytest.mark.parametrize("variable", ["SIDECAR_GRPC_ADDRESS", "SIDECAR_OPS_ADDRESS"])
def test_serve_on_an_address_in_use_stops_with_one_line_naming_the_variable(
    capsys, variable, workers
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {
            "BLUECORE_NAMESPACE": NAMESPACE,
            "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
            "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
            "SIDECAR_HTTP_ADDRESS": "",
            "SIDECAR_WORKERS": workers,
            variable: busy,
        }
        code, _, err = run_main(capsys, "serve", env=env)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("bluecore-sidecar:")]
    assert len(lines) == 1, err
    assert variable in lines[0]
    assert "Traceback" not in err
    assert NAMESPACE not in err


def test_serve_with_a_queue_path_in_a_missing_folder_stops_with_one_line(capsys, tmp_path):
    env = {
        "BLUECORE_NAMESPACE": NAMESPACE,
        "SIDECAR_GRPC_ADDRESS": "127.0.0.1:0",
        "SIDECAR_OPS_ADDRESS": "127.0.0.1:0",
        "SIDECAR_HTTP_ADDRESS": "",
        "SIDECAR_QUEUE_PATH": str(tmp_path / "no-such-folder" / "queue.db"),
    }
    code, _, err = run_main(capsys, "serve", env=env)
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("bluecore-sidecar:")]
    assert len(lines) == 1, err
    assert "SIDECAR_QUEUE_PATH" in lines[0]
    assert "Traceback" not in err
