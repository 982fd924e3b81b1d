"""The JSON door: the delivery contract over HTTP/1.1, for callers without gRPC.

One aiohttp server on ``SIDECAR_HTTP_ADDRESS`` (loopback) speaks two dialects:

- the Connect protocol (connectrpc.com), unary, with JSON or binary protobuf bodies:
  ``POST /datafly.bluecore.v1.DeliveryService/Deliver`` and every other unary method;
- ``POST /v1/events``: one Signal event exactly as Signal or a browser SDK writes it, or a
  JSON array or JSON lines for a batch, answered with the ``DeliveryResult`` JSON.

Below the wire both are the gRPC path: the same :class:`~.interceptor.Edge` (span continuing
``traceparent``, admission, refusals counted) and the same servicer methods. A refused call
is answered with Connect's error JSON, whose code and ``ErrorInfo`` are those gRPC would send.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import grpc
from aiohttp import hdrs, web
from datafly.bluecore.v1 import delivery_pb2
from google.protobuf import descriptor_pool, json_format, message_factory
from google.protobuf.message import Message
from opentelemetry import trace

from .config import split_address
from .errors import (
    ConfigError,
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    RequestError,
    TooLarge,
    Unsupported,
    to_status,
)
from .interceptor import Edge, decode_request
from .redaction import excerpt
from .service import CallContext, DeliveryService

JSON = "application/json"
PROTO = "application/proto"
#: Media types of a JSON-lines body (one event per line) for /v1/events.
JSON_LINES = frozenset({"application/x-ndjson", "application/jsonl", "application/jsonlines"})
EVENTS_PATH = "/v1/events"
#: JSON nesting the door parses at all. Protobuf refuses more than about 33 objects in a
#: ``Struct``, which the exact check below reports as gRPC does (TOO_DEEP); this cap only
#: keeps hostile nesting far from Python's recursion limit while the JSON becomes a message.
MAX_JSON_DEPTH = 64
_READ_CHUNK = 64 * 1024
#: Seconds that requests still being handled get once the door's listener has closed.
CLOSE_TIMEOUT = 1.0
_JSON_SPACE = re.compile(r"[ \t\n\r]*")

#: The HTTP status of each Connect error code (the Connect protocol's table).
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}


def connect_code(code: grpc.StatusCode) -> str:
    """Connect's name for a gRPC status code (``invalid_argument``; ``canceled`` with one l)."""
    return "canceled" if code is grpc.StatusCode.CANCELLED else str(code.name).lower()


def http_status(error: RequestError) -> int:
    """The HTTP status a refusal is sent with.

    Connect's table, except that a body over the limit is 413: it is no rate limit (429), and
    Connect clients take the code from the error body, not from the status.
    """
    return 413 if isinstance(error, TooLarge) else HTTP_STATUS.get(error.code, 500)


def error_body(error: RequestError) -> dict[str, Any]:
    """Connect's error JSON for ``error``: code, message, and the details of its gRPC status.

    Each detail carries its type, its protobuf bytes in unpadded base64 (what clients decode)
    and, for people reading the wire, the same message as JSON under ``debug``.
    """
    details = []
    for packed in to_status(error).details:
        debug = json_format.MessageToDict(packed)
        debug.pop("@type", None)
        details.append(
            {
                "type": packed.TypeName(),
                "value": base64.b64encode(packed.value).decode("ascii").rstrip("="),
                "debug": debug,
            }
        )
    return {"code": connect_code(error.code), "message": error.message, "details": details}


@dataclasses.dataclass(frozen=True, slots=True)
class _Call:
    """The :class:`~.service.CallContext` of one HTTP call: the caller's deadline, if any."""

    deadline: float | None  # event-loop time

    def time_remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - asyncio.get_running_loop().time())


Handler = Callable[[Any, CallContext], Awaitable[Message]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Procedure:
    """One unary method served over Connect, through its service's edge."""

    edge: Edge
    name: str
    request_type: type[Message]
    handler: Handler


def _unary_procedures(edge: Edge, servicer: object) -> list[_Procedure]:
    """Every unary method of ``edge``'s service, served by ``servicer``'s method of that name.

    Streaming methods (WatchDeliveries) need Connect's streaming protocol and stay gRPC-only.
    """
    service = descriptor_pool.Default().FindServiceByName(edge.service)
    return [
        _Procedure(
            edge,
            method.name,
            message_factory.GetMessageClass(method.input_type),
            getattr(servicer, method.name),
        )
        for method in service.methods
        if not (method.client_streaming or method.server_streaming)
    ]


class HttpDoor:
    """The aiohttp application of the door: the delivery service, and any ``more`` services.

    ``more`` pairs another service's :class:`Edge` with its servicer (the dead-letter admin
    service, once it exists); its unary methods are served over Connect like the delivery
    service's.
    """

    def __init__(
        self,
        edge: Edge,
        servicer: DeliveryService,
        *,
        max_message_bytes: int,
        max_events_bytes: int,
        more: Sequence[tuple[Edge, object]] = (),
    ) -> None:
        self._edge = edge
        self._servicer = servicer
        self._max_message_bytes = max_message_bytes
        self._max_events_bytes = max_events_bytes
        self._procedures = [
            procedure
            for service_edge, service_servicer in ((edge, servicer), *more)
            for procedure in _unary_procedures(service_edge, service_servicer)
        ]

    def application(self) -> web.Application:
        """The routes: one per unary method, and /v1/events."""
        app = web.Application()
        for procedure in self._procedures:
            path = f"/{procedure.edge.service}/{procedure.name}"
            app.router.add_post(path, self._connect(procedure))
        app.router.add_post(EVENTS_PATH, self._events)
        return app

    # -- Connect ---------------------------------------------------------------------------

    def _connect(self, procedure: _Procedure) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            codec = _media_type(request)
            if codec not in (JSON, PROTO):
                return _unsupported_media(f"{JSON}, {PROTO}")
            edge = procedure.edge
            attributes = {
                "rpc.system": "connect_rpc",
                "rpc.service": edge.service,
                "rpc.method": procedure.name,
            }
            name = f"{edge.service}/{procedure.name}"
            with edge.call(name, _carrier(request), attributes) as span:
                try:
                    _check_caller(request)
                    version = request.headers.get("Connect-Protocol-Version")
                    if version is not None and version.strip() != "1":
                        raise InvalidRequest(
                            "UNSUPPORTED_PROTOCOL_VERSION",
                            "Connect-Protocol-Version must be 1",
                        )
                    deadline = _deadline(request)
                    body = await _read_body(request, self._max_message_bytes)
                    message = (
                        decode_request(procedure.request_type, body)
                        if codec == PROTO
                        else _from_json(_parse_json(body), procedure.request_type)
                    )
                    with edge.admitted(procedure.name, bounded=True):
                        async with _until(deadline):
                            response = await procedure.handler(message, _Call(deadline))
                except Exception as error:  # noqa: BLE001 - every failure becomes an error body
                    return _refuse(edge, procedure.name, error, span)
            if codec == PROTO:
                return web.Response(body=response.SerializeToString(), content_type=PROTO)
            return _json_response(json_format.MessageToDict(response))

        return handle

    # -- /v1/events ------------------------------------------------------------------------

    async def _events(self, request: web.Request) -> web.Response:
        media = _media_type(request)
        if media != JSON and media not in JSON_LINES:
            return _unsupported_media(f"{JSON}, {', '.join(sorted(JSON_LINES))}")
        attributes = {
            "rpc.system": "http",
            "rpc.service": self._edge.service,
            "http.request.method": "POST",
            "http.route": EVENTS_PATH,
        }
        # Deliver or DeliverBatch: known once the body is read; refusals before count as this.
        method = "Events"
        with self._edge.call(f"POST {EVENTS_PATH}", _carrier(request), attributes) as span:
            try:
                _check_caller(request)
                deadline = _deadline(request)
                body = await _read_body(request, self._max_events_bytes)
                events, batch = _signal_events(body, lines=media in JSON_LINES)
                method = "DeliverBatch" if batch else "Deliver"
                span.set_attribute("rpc.method", method)
                message = _checked(
                    delivery_pb2.DeliverBatchRequest(events=events)
                    if batch
                    else delivery_pb2.DeliverRequest(event=events[0])
                )
                with self._edge.admitted(method, bounded=True):
                    async with _until(deadline):
                        answer = await self._deliver(message, _Call(deadline))
            except Exception as error:  # noqa: BLE001 - every failure becomes an error body
                return _refuse(self._edge, method, error, span)
        return _json_response(json_format.MessageToDict(answer))

    async def _deliver(self, message: Message, call: _Call) -> Message:
        """A batch's DeliverBatchResponse (``{"results": [...]}``), or one event's result."""
        if isinstance(message, delivery_pb2.DeliverBatchRequest):
            return await self._servicer.DeliverBatch(message, call)
        assert isinstance(message, delivery_pb2.DeliverRequest)
        return (await self._servicer.Deliver(message, call)).result


def _refuse(edge: Edge, method: str, error: Exception, span: trace.Span) -> web.Response:
    """The error response to a call refused with ``error``, counted by ``edge``."""
    refusal = edge.refusal(method, error, span)
    status = http_status(refusal)
    span.set_attribute("rpc.connect_rpc.error_code", connect_code(refusal.code))
    span.set_attribute("http.response.status_code", status)
    response = _json_response(error_body(refusal), status=status)
    if refusal.retry_delay is not None:
        response.headers[hdrs.RETRY_AFTER] = str(
            max(1, math.ceil(refusal.retry_delay.total_seconds()))
        )
    if isinstance(refusal, TooLarge):
        # The rest of the body is never read: the connection cannot be reused.
        response.force_close()
    return response


async def start(
    stack: contextlib.AsyncExitStack, address: str, door: HttpDoor, *, reuse_port: bool = False
) -> web.AppRunner:
    """Serve ``door`` on ``address`` until ``stack`` closes; returns the runner to stop it.

    ``reuse_port`` lets the workers of ``SIDECAR_WORKERS`` share the address, as they share
    the gRPC one.

    Cleaning the runner up closes the listener, then gives requests still being handled
    :data:`CLOSE_TIMEOUT` to finish: the drain has already waited, within the shutdown grace,
    for every admitted call, so what is left are answers being written and refusals.
    """
    runner = web.AppRunner(
        door.application(), access_log=None, handle_signals=False, shutdown_timeout=CLOSE_TIMEOUT
    )
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = split_address(address)
    try:
        await web.TCPSite(runner, host, port, reuse_address=True, reuse_port=reuse_port).start()
    except OSError as error:
        raise ConfigError(
            "SIDECAR_HTTP_ADDRESS", f"{address}: cannot listen there ({error.strerror})"
        ) from None
    return runner


# -- the wire ------------------------------------------------------------------------------


def _media_type(request: web.Request) -> str:
    """The request's media type, lower case, without parameters such as ``charset``."""
    return request.headers.get(hdrs.CONTENT_TYPE, "").split(";", 1)[0].strip().lower()


def _unsupported_media(accepted: str) -> web.Response:
    return web.Response(
        status=415,
        text=f"unsupported Content-Type; send one of: {accepted}\n",
        headers={"Accept-Post": accepted},
    )


def _carrier(request: web.Request) -> dict[str, str]:
    return {key.lower(): value for key, value in request.headers.items()}


def _check_caller(request: web.Request) -> None:
    """Refuse requests sent by web pages, and content encodings the door cannot read.

    The door has no authentication and what it sends carries the namespace token. Browsers
    put ``Origin`` on every POST, so refusing it keeps pages the user happens to open (or a
    DNS-rebinding one) from posting events through a sidecar on the same machine.
    """
    if hdrs.ORIGIN in request.headers:
        raise Forbidden(
            "BROWSER_REQUEST",
            "the HTTP door serves programs, not web pages: requests with an Origin header "
            "are refused",
        )
    encoding = request.headers.get(hdrs.CONTENT_ENCODING, "identity").strip().lower()
    if encoding not in ("identity", "gzip", "deflate"):
        raise Unsupported(
            "UNSUPPORTED_ENCODING", "unsupported Content-Encoding; supported: gzip, identity"
        )


def _deadline(request: web.Request) -> float | None:
    """The call's deadline (event-loop time) from ``Connect-Timeout-Ms``; None without one."""
    text = request.headers.get("Connect-Timeout-Ms")
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise InvalidRequest(
            "BAD_TIMEOUT", "Connect-Timeout-Ms must be a positive integer of at most 10 digits"
        )
    return asyncio.get_running_loop().time() + int(text) / 1000


@contextlib.asynccontextmanager
async def _until(deadline: float | None) -> AsyncIterator[None]:
    """Cut the call at ``deadline`` and answer DEADLINE_EXCEEDED, as gRPC does."""
    if deadline is None:
        yield
        return
    try:
        async with asyncio.timeout_at(deadline) as scope:
            yield
    except TimeoutError:
        if not scope.expired():
            raise
        raise DeadlineExceeded(
            "DEADLINE_EXCEEDED", "the call's Connect-Timeout-Ms ran out before it finished"
        ) from None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refused as :class:`TooLarge` as soon as it is known to pass ``limit``.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked
    body is read only up to the limit.
    """
    too_large = TooLarge(
        "REQUEST_TOO_LARGE",
        f"the request body is larger than this endpoint takes ({limit} bytes)",
        limit=str(limit),
    )
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(_READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _json_response(body: object, status: int = 200) -> web.Response:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return web.Response(body=text.encode("utf-8"), status=status, content_type=JSON)


# -- JSON to messages ----------------------------------------------------------------------


def _text(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("MALFORMED_REQUEST", "the body is not UTF-8 text") from None


def _parse_json(body: bytes) -> Any:
    """One JSON value from ``body``; :class:`InvalidRequest` naming where it is wrong."""
    values = _json_values(_text(body))
    if len(values) != 1:
        raise InvalidRequest(
            "MALFORMED_REQUEST",
            "the body is not JSON: expected one JSON value"
            + (", got none" if not values else f", got {len(values)}"),
        )
    return values[0]


def _json_values(text: str) -> list[Any]:
    """Every JSON value in ``text``, separated by whitespace (one, or JSON lines)."""
    decoder = json.JSONDecoder()
    values: list[Any] = []
    position = _JSON_SPACE.match(text, 0).end()  # type: ignore[union-attr]  # always matches
    while position < len(text):
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise InvalidRequest(
                "MALFORMED_REQUEST",
                f"the body is not JSON: {error.msg} at line {error.lineno} column {error.colno}",
            ) from None
        except RecursionError:
            raise _too_deep() from None
        if _depth(value) > MAX_JSON_DEPTH:
            raise _too_deep()
        values.append(value)
        position = _JSON_SPACE.match(text, position).end()  # type: ignore[union-attr]
    return values


def _depth(value: object) -> int:
    """How deeply objects and arrays nest in ``value`` (a scalar is 0), without recursion."""
    deepest = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Iterator[object] = iter(item.values())
        elif isinstance(item, list):
            children = iter(item)
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            return depth
        pending.extend((child, depth + 1) for child in children)
    return deepest


def _too_deep() -> InvalidRequest:
    return InvalidRequest(
        "TOO_DEEP",
        f"the body nests JSON deeper than the {MAX_JSON_DEPTH} levels this door reads "
        "(a Struct holds at most 33 levels of JSON objects)",
    )


def _from_json(value: Any, message_type: type[Message]) -> Any:
    """``value`` (proto3 JSON) as ``message_type``, unknown fields ignored, checked as bytes."""
    what = f"a {message_type.DESCRIPTOR.full_name}"
    if not isinstance(value, dict):
        raise InvalidRequest("MALFORMED_REQUEST", f"the body is not {what}: expected a JSON object")
    message = message_type()
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except json_format.ParseError as error:
        # The parser's text names the field; values in it are scrubbed and cut short.
        raise InvalidRequest(
            "MALFORMED_REQUEST", f"the body is not {what}: {excerpt(str(error))}"
        ) from None
    return _checked(message)


def _checked(message: Message) -> Any:
    """``message`` after the same decoding check as a gRPC request (depth, UTF-8).

    JSON parsing builds messages that the protobuf wire decoder would refuse (a ``Struct``
    nested past its limit); a round trip through the wire format answers exactly as gRPC.
    """
    return decode_request(type(message), message.SerializeToString())


def _signal_events(body: bytes, *, lines: bool) -> tuple[list[delivery_pb2.DataflyEvent], bool]:
    """The Signal events of a /v1/events body, and whether it was a batch.

    One JSON object is one event; a JSON array, several objects one after another (JSON lines)
    or any JSON-lines body is a batch.
    """
    values = _json_values(_text(body))
    if not values:
        raise InvalidRequest("MALFORMED_REQUEST", "the body is empty; send a Signal event as JSON")
    batch = lines or len(values) > 1 or isinstance(values[0], list)
    if len(values) == 1 and isinstance(values[0], list):
        values = values[0]
    events = []
    for index, value in enumerate(values, start=1):
        what = f"event {index} of the batch" if batch else "a Signal event"
        if not isinstance(value, dict):
            raise InvalidRequest(
                "MALFORMED_REQUEST", f"{what} is not a JSON object; send Signal's event JSON"
            )
        event = delivery_pb2.DataflyEvent()
        try:
            json_format.ParseDict(value, event, ignore_unknown_fields=True)
        except json_format.ParseError as error:
            raise InvalidRequest(
                "MALFORMED_REQUEST", f"{what} does not fit DataflyEvent: {excerpt(str(error))}"
            ) from None
        events.append(event)
    return events, batch
