"""Command line: ``bluecore-sidecar serve | sandbox | preview | send | watch | dead-letters``.

``serve`` and ``sandbox`` run servers; ``preview`` decides on an event file locally; ``send``,
``watch`` and ``dead-letters`` are gRPC clients of a running sidecar (``dead-letters`` never
opens the queue's file: the running sidecar holds it). Exit codes: 0 success, 1 an event was not
delivered (send) or would not be sent (preview), 2 bad usage, configuration or input.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import json_format

from .config import Settings
from .envparse import parse_duration
from .errors import ConfigError
from .results import status_name
from .store import StoreError
from .telemetry import configure_logging

Status = delivery_pb2.DeliveryStatus
#: Statuses ``send`` counts as success: delivered now, earlier, or safely queued.
SUCCESS = frozenset(
    {
        Status.DELIVERY_STATUS_DELIVERED,
        Status.DELIVERY_STATUS_SKIPPED_DUPLICATE,
        Status.DELIVERY_STATUS_QUEUED,
    }
)
MAX_INPUT_BYTES = 16 * 1024 * 1024


class UsageError(Exception):
    """Bad input from the person at the terminal; printed as one line, exit 2."""


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``bluecore-sidecar`` console script."""
    env = os.environ if env is None else env
    args = _parser(env).parse_args(argv)
    try:
        return int(args.run(args, env))
    except ConfigError as exc:
        print(f"bluecore-sidecar: configuration error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(f"bluecore-sidecar: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"bluecore-sidecar: durable queue: {exc}", file=sys.stderr)
        return 2
    except grpc.aio.AioRpcError as exc:
        print(
            f"bluecore-sidecar: the sidecar answered {exc.code().name}: {exc.details()}",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        return 130


def _parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bluecore-sidecar",
        description="Deliver Datafly Signal events to the Bluecore Events API over gRPC.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    default_target = env.get("SIDECAR_GRPC_ADDRESS") or "127.0.0.1:50051"

    serve = commands.add_parser("serve", help="run the sidecar (configured by environment)")
    # Set by the supervisor of SIDECAR_WORKERS > 1 for each worker it starts; not for people.
    serve.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(run=_serve)

    sandbox = commands.add_parser("sandbox", help="run the fake Bluecore Events API")
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument("--port", type=int, default=8089)
    sandbox.add_argument(
        "--token",
        action="append",
        dest="tokens",
        help="accept only this namespace token (repeatable); default: any non-empty token",
    )
    sandbox.set_defaults(run=_sandbox)

    preview = commands.add_parser(
        "preview", help="show the decision and Bluecore body for an event file; sends nothing"
    )
    preview.add_argument("event", type=Path, help="Signal-style JSON event ('-' for stdin)")
    preview.add_argument("--json", action="store_true", help="print one JSON object")
    preview.set_defaults(run=_preview)

    send = commands.add_parser("send", help="send events to a running sidecar")
    send.add_argument("events", nargs="*", type=Path, help="JSON event files")
    send.add_argument("--batch", type=Path, help="a JSON-lines file: one event per line")
    send.add_argument("--target", default=default_target, help="sidecar address (HOST:PORT)")
    send.add_argument("--timeout", type=float, default=10.0, help="deadline per call, seconds")
    send.set_defaults(run=_send)

    watch = commands.add_parser("watch", help="print delivery outcomes live")
    watch.add_argument("--target", default=default_target, help="sidecar address (HOST:PORT)")
    watch.add_argument(
        "--status",
        action="append",
        default=[],
        help="only this status, e.g. DELIVERED or FAILED_RETRYABLE (repeatable)",
    )
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.set_defaults(run=_watch)
    _dead_letter_parser(commands, default_target)
    return parser


def _dead_letter_parser(commands: Any, default_target: str) -> None:
    dead = commands.add_parser(
        "dead-letters", help="list, show, replay or purge the durable queue's dead letters"
    )
    verbs = dead.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--target", default=default_target, help="sidecar address (HOST:PORT)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts")
    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument(
        "--reason", action="append", default=[], help="only this reason, e.g. AUTH (repeatable)"
    )
    filters.add_argument(
        "--event",
        action="append",
        default=[],
        help="only this Bluecore event, e.g. purchase (repeatable)",
    )
    filters.add_argument("--older-than", help="given up at least this long ago, e.g. 1h")
    filters.add_argument("--newer-than", help="given up less than this long ago, e.g. 30m")

    listing = verbs.add_parser("list", parents=[common, filters], help="list dead letters")
    listing.add_argument("--limit", type=int, default=1000, help="at most this many")
    listing.set_defaults(run=_dead_letters)
    show = verbs.add_parser("show", parents=[common], help="one dead letter with its event")
    show.add_argument("id", type=int)
    show.set_defaults(run=_dead_letters)
    for verb, what in (("replay", "put back into the queue"), ("purge", "delete for good")):
        sub = verbs.add_parser(verb, parents=[common, filters], help=f"dead letters to {what}")
        sub.add_argument("ids", nargs="*", type=int, help="dead letter ids")
        sub.add_argument("--all", action="store_true", help="every dead letter")
        sub.set_defaults(run=_dead_letters)


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .app import serve  # noqa: PLC0415 - keeps client commands light to start

    settings = Settings.from_env(env)
    if args.worker:
        from .supervisor import run_worker  # noqa: PLC0415

        configure_logging(settings.log_level, static={"worker": args.worker})
        return asyncio.run(run_worker(settings, env, args.worker))
    configure_logging(settings.log_level)
    if settings.workers > 1:
        from .supervisor import supervise  # noqa: PLC0415

        return asyncio.run(supervise(settings, env))
    return asyncio.run(serve(settings, env))


def _sandbox(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from bluecore_devtools.sandbox import serve_sandbox  # noqa: PLC0415

    serve_sandbox(args.host, args.port, tokens=args.tokens)
    return 0


def _preview(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    from .delivery import preview_result  # noqa: PLC0415

    # Preview sends nothing and shows the token as ***, so no namespace is needed.
    settings = Settings.from_env(env, namespace_required=False)
    event = _parse_event(_read_text(args.event), str(args.event))
    result, bodies = preview_result(
        event, settings.rules, settings.gates, max_event_bytes=settings.max_event_bytes
    )
    would_send = result.status == Status.DELIVERY_STATUS_DELIVERED
    if args.json:
        print(
            json.dumps(
                {"result": _result_dict(result), "bodies": [json.loads(b) for b in bodies]},
                indent=2,
            )
        )
    else:
        verdict = "WOULD SEND" if would_send else status_name(result.status)
        mapped = result.bluecore_event or "-"
        print(f"decision: {verdict}  {result.datafly_event or '?'} -> {mapped}")
        if result.reason:
            print(f"reason:   {result.reason}: {result.detail}")
        for number, body in enumerate(bodies, 1):
            label = f"body {number} of {len(bodies)}" if len(bodies) > 1 else "body"
            print(f"{label} (token redacted):")
            print(json.dumps(json.loads(body), indent=2))
    return 0 if would_send else 1


def _send(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    events = [_parse_event(_read_text(path), str(path)) for path in args.events]
    if args.batch is not None:
        events.extend(_read_jsonl(args.batch))
    if not events:
        raise UsageError("send needs event files or --batch FILE.jsonl")
    return asyncio.run(_send_all(args.target, events, args.timeout))


async def _send_all(target: str, events: list[delivery_pb2.DataflyEvent], timeout: float) -> int:
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        try:
            if len(events) == 1:
                response = await stub.Deliver(
                    delivery_pb2.DeliverRequest(event=events[0]), timeout=timeout
                )
                results = [response.result]
            else:
                batch = await stub.DeliverBatch(
                    delivery_pb2.DeliverBatchRequest(events=events), timeout=timeout
                )
                results = list(batch.results)
        except grpc.aio.AioRpcError as exc:
            # gRPC reports a refused connection as UNAVAILABLE, which read as if the sidecar
            # had answered. A channel that never connected means nobody answered at all.
            never_connected = channel.get_state() is grpc.ChannelConnectivity.TRANSIENT_FAILURE
            if exc.code() is grpc.StatusCode.UNAVAILABLE and never_connected:
                raise UsageError(
                    f"nothing is listening on {target} (start the sidecar with "
                    "`bluecore-sidecar serve`, or pass --target HOST:PORT)"
                ) from None
            raise
    for result in results:
        print(json.dumps(_result_dict(result)), flush=True)
        failures += result.status not in SUCCESS
    return 1 if failures else 0


def _watch(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    statuses = []
    for name in args.status:
        full = name.upper()
        if not full.startswith("DELIVERY_STATUS_"):
            full = "DELIVERY_STATUS_" + full
        if full not in Status.keys():  # noqa: SIM118 - an enum wrapper, not a dict
            choices = ", ".join(status_name(v) for v in Status.values() if v)
            raise UsageError(f"unknown status {name!r}; choose from {choices}")
        statuses.append(Status.Value(full))
    return asyncio.run(_watch_stream(args.target, statuses, args.json))


async def _watch_stream(target: str, statuses: list[int], as_json: bool) -> int:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = delivery_pb2_grpc.DeliveryServiceStub(channel)
        request = delivery_pb2.WatchDeliveriesRequest(statuses=statuses)  # type: ignore[arg-type]
        if not as_json:
            print(
                f"{'time':8}  {'message id':24}  {'event':22}  {'bluecore':16}  "
                f"{'status':18}  {'http':>4}  {'try':>3}  {'ms':>7}  reason",
                flush=True,
            )
        dropped = 0
        async for item in stub.WatchDeliveries(request):
            result = item.result
            if as_json:
                print(json.dumps({**_result_dict(result), "dropped": item.dropped}), flush=True)
                continue
            if item.dropped > dropped:
                print(f"... {item.dropped - dropped} outcomes dropped (watcher too slow)")
                dropped = item.dropped
            ms = result.latency.ToTimedelta().total_seconds() * 1000
            print(
                f"{datetime.now(UTC):%H:%M:%S}  {result.message_id[:24]:24}  "
                f"{result.datafly_event[:22]:22}  {result.bluecore_event[:16]:16}  "
                f"{status_name(result.status):18}  {result.http_status or '':>4}  "
                f"{result.attempts:>3}  {ms:7.1f}  {result.reason}",
                flush=True,
            )
    return 0


def _dead_letters(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return asyncio.run(_dead_letter_call(args))


async def _dead_letter_call(args: argparse.Namespace) -> int:
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = delivery_pb2_grpc.DeadLetterServiceStub(channel)
        if args.verb == "show":
            reply = await stub.GetDeadLetter(
                delivery_pb2.GetDeadLetterRequest(id=args.id), timeout=10
            )
            _print_dead_letters([reply.dead_letter], args.json, single=True)
            return 0
        selection = _dead_letter_filter(args)
        if args.verb == "list":
            found: list[delivery_pb2.DeadLetter] = []
            token = ""
            while len(found) < args.limit:
                page = await stub.ListDeadLetters(
                    delivery_pb2.ListDeadLettersRequest(
                        filter=selection,
                        page_size=min(1000, args.limit - len(found)),
                        page_token=token,
                    ),
                    timeout=10,
                )
                found.extend(page.dead_letters)
                token = page.next_page_token
                if not token:
                    break
            _print_dead_letters(found, args.json)
            return 0
        if not (args.ids or selection.ListFields() or args.all):
            raise UsageError(f"{args.verb} needs ids, a filter (--reason, --event, ...) or --all")
        if args.verb == "replay":
            replayed = await stub.ReplayDeadLetters(
                delivery_pb2.ReplayDeadLettersRequest(ids=args.ids, filter=selection, all=args.all),
                timeout=30,
            )
            counts = {
                "replayed": replayed.replayed,
                "skipped_duplicates": replayed.skipped_duplicates,
            }
        else:
            purged = await stub.PurgeDeadLetters(
                delivery_pb2.PurgeDeadLettersRequest(ids=args.ids, filter=selection, all=args.all),
                timeout=30,
            )
            counts = {"purged": purged.purged}
        if args.json:
            print(json.dumps(counts))
        else:
            print(", ".join(f"{key.replace('_', ' ')}: {value}" for key, value in counts.items()))
        return 0


def _dead_letter_filter(args: argparse.Namespace) -> delivery_pb2.DeadLetterFilter:
    selection = delivery_pb2.DeadLetterFilter(reasons=args.reason, bluecore_events=args.event)
    for option, field in (("older_than", "older_than"), ("newer_than", "newer_than")):
        text = getattr(args, option)
        if text:
            try:
                value = parse_duration(text)
            except ValueError as exc:
                raise UsageError(f"--{option.replace('_', '-')}: {exc}") from None
            getattr(selection, field).FromTimedelta(value)
    return selection


def _print_dead_letters(
    rows: Sequence[delivery_pb2.DeadLetter], as_json: bool, *, single: bool = False
) -> None:
    if as_json:
        items = [json_format.MessageToDict(row, preserving_proto_field_name=True) for row in rows]
        print(json.dumps(items[0] if single else {"dead_letters": items}, indent=2))
        return
    if single:
        row = rows[0]
        for key, value in _dead_letter_fields(row).items():
            print(f"{key + ':':16}{value}")
        print("event:")
        event = json_format.MessageToDict(row.event)
        print(json.dumps(event, indent=2))
        return
    print(
        f"{'id':>6}  {'dead since (UTC)':19}  {'reason':14}  {'bluecore':16}  {'http':>4}  "
        f"{'try':>3}  message id"
    )
    for row in rows:
        when = row.dead_time.ToDatetime(UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{row.id:>6}  {when:19}  {row.reason[:14]:14}  {row.bluecore_event[:16]:16}  "
            f"{row.http_status or '':>4}  {row.attempts:>3}  {row.message_id}"
        )
    print(f"{len(rows)} dead letter{'s' if len(rows) != 1 else ''}")


def _dead_letter_fields(row: delivery_pb2.DeadLetter) -> dict[str, Any]:
    return {
        "id": row.id,
        "message id": row.message_id,
        "bluecore event": row.bluecore_event,
        "reason": row.reason,
        "detail": row.detail,
        "http status": row.http_status,
        "attempts": row.attempts,
        "event time": row.event_time.ToDatetime(UTC).isoformat(),
        "queued": row.enqueue_time.ToDatetime(UTC).isoformat(),
        "dead since": row.dead_time.ToDatetime(UTC).isoformat(),
        "trace id": row.trace_id or "-",
    }


def _read_text(path: Path) -> str:
    if str(path) == "-":
        return sys.stdin.read(MAX_INPUT_BYTES + 1)
    try:
        with path.open(encoding="utf-8") as handle:
            text = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    if len(text) > MAX_INPUT_BYTES:
        raise UsageError(f"{path} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB")
    return text


def _parse_event(text: str, origin: str) -> delivery_pb2.DataflyEvent:
    """Parse one Signal-style JSON event (camelCase; unknown fields ignored)."""
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{origin}: not valid JSON: {exc.msg} (line {exc.lineno})") from None
    return _event_from_object(raw, origin)


def _event_from_object(raw: Any, origin: str) -> delivery_pb2.DataflyEvent:
    if not isinstance(raw, dict):
        raise UsageError(f"{origin}: an event must be a JSON object")
    event = delivery_pb2.DataflyEvent()
    try:
        json_format.ParseDict(raw, event, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise UsageError(f"{origin}: not a Datafly event: {exc}") from None
    if not event.message_id:
        event.message_id = str(uuid.uuid4())
    return event


def _read_jsonl(path: Path) -> Iterator[delivery_pb2.DataflyEvent]:
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip():
            yield _parse_event(line, f"{path}:{number}")


def _result_dict(result: delivery_pb2.DeliveryResult) -> dict[str, Any]:
    return json_format.MessageToDict(result, preserving_proto_field_name=True)


if __name__ == "__main__":
    sys.exit(main())
