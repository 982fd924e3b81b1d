"""A faithful fake of the Bluecore Events API, for the demo, the tests and the benchmark.

It serves ``POST /api/track/mobile/v1`` the way the seed and DESIGN.md section 7 describe the
real endpoint: one JSON event per request, the namespace token in ``properties.token``, no
Authorization header, ``202 Accepted`` for a valid event.  Every request is recorded, and the
fake can be told to misbehave (fail, rate-limit, stall, drop the connection) either from Python
(``fail_next``, ``delay``, ...) or over HTTP under ``/_sandbox/`` for the CLI and for clients in
other languages.  It logs nothing: no access log, so neither a token nor an email is written out.

Answers of the events endpoint (checked in this order):

* 405 method other than POST; 415 Content-Type is not ``application/json``;
  413 body over 1 MiB; 400 body is not JSON, not an object, or has no ``properties`` object;
* 401 ``properties.token`` missing or empty; the status configured for this token, if any;
  403 token not among the accepted ``tokens`` (by default any non-empty token is accepted);
* 400 ``event`` missing or empty; ``properties.distinct_id`` missing or empty; ``customer``
  not an object or with an attribute name that is not lowercase snake_case; per event:
  ``purchase`` needs ``order_id`` and 1 to 30 unique product ids; ``add_to_cart`` exactly one
  product; ``viewed_product``, ``remove_from_cart`` and ``wishlist`` at least one product;
  every product of those events needs an ``id``; ``search`` needs ``search_term``;
  ``optin``, ``unsubscribe``, ``identify`` and ``purchase`` need ``customer.email``.
  Other event names (``viewed_page``, custom events) need nothing more;
* otherwise 202 ``{"status": "accepted"}``.  Errors are ``{"error": CODE, "message": TEXT}``.

Fault evaluation.  Faults are decided synchronously when a request has been read, so
concurrent requests consume them in arrival order, and every request on the events path
consumes them, valid or not:

1. delay: if a delay rule is active the answer (whatever it is) waits ``seconds``; a rule
   with a count is used up after that many requests, one without lasts until cleared;
2. reset: if resets are pending, one is used and the connection is closed with a TCP reset
   instead of an answer (after the delay, if any);
3. fail: the head of the failure queue answers its status (and ``Retry-After``); rules are
   queued in the order they were added, each for its count of requests.  A ``body`` rule
   shares that queue and answers its status with a body of its own: a given text, ``size``
   bytes streamed in chunks, or a stream that never ends (until the client goes away, the
   sandbox stops, or ``ENDLESS_BODY_SECONDS`` pass);
4. the endpoint's own checks above, including the per-token status.

Control API (JSON in and out; it records nothing and consumes no fault):

* ``GET /_sandbox/health`` -> ``{"status": "ok", "received": N, "faults": FAULTS}``
* ``GET /_sandbox/received[?event=NAME]`` -> ``[RECORD, ...]`` oldest first, where RECORD is
  ``{"method", "path", "headers": {name: value}, "body": JSON or null, "status": int or null
  (null: connection reset), "faults": ["delay", "reset", "fail", "body", "token_status"],
  "received_at": monotonic seconds}``
* ``DELETE /_sandbox/received`` -> ``{"cleared": N}``
* ``GET /_sandbox/counts`` -> ``{"total": N, "by_distinct_id": {distinct_id: N}}``: how many
  requests reached the events path, per ``properties.distinct_id`` of the body (the Bluecore
  body carries no message id, so a caller that gives each event its own anonymous id gets
  upstream requests per event).  Counted apart from the record, so it is not cut at
  ``max_records``; requests without a distinct id count in ``total`` only.  Cleared with the
  record.
* ``GET /_sandbox/faults`` -> FAULTS = ``{"fail": [{"status", "remaining", "retry_after"}],
  "delay": {"seconds", "remaining"} or null, "reset": N, "token_status": {token: status}}``
* ``POST /_sandbox/faults`` with one of the bodies below -> ``{"faults": FAULTS}`` (400 if invalid)

  - ``{"kind": "fail", "count": 3, "status": 503, "retry_after": RETRY_AFTER}``
    (count defaults to 1, status to 503, retry_after to none)
  - ``{"kind": "delay", "seconds": 2.5, "count": null}`` (replaces the previous delay rule;
    ``seconds: 0`` removes it)
  - ``{"kind": "reset", "count": 1}``
  - ``{"kind": "token_status", "token": "bluestore", "status": 403}`` (``status: null`` removes)
  - ``{"kind": "body", "count": 1, "status": 202, "text": "..."}``, or ``"size": BYTES``
    (that many filler bytes, streamed in 64 KiB chunks), or ``"endless": true``; exactly one
    of the three; status defaults to 202, count to 1, and ``retry_after`` may be set as for
    ``fail``.  Listed in FAULTS' ``fail`` queue with an extra ``"body"`` key
    (``{"text_bytes": N}``, ``{"size": N}`` or ``{"endless": true}``).

  RETRY_AFTER is an integer (seconds form, ``Retry-After: 2``), a string (sent verbatim, e.g.
  an HTTP-date or something malformed on purpose) or ``{"http_date_in": 2}`` (an HTTP-date
  that many seconds after the answer is sent, rounded up to a whole second).
* ``DELETE /_sandbox/faults`` -> ``{"faults": FAULTS}`` (all cleared)
* ``POST /_sandbox/reset`` -> ``{"cleared": N, "faults": FAULTS}`` (faults and record cleared)

From Python: ``async with run_sandbox() as sandbox:`` gives a started :class:`BluecoreSandbox`
(``sandbox.url``, ``sandbox.received``, ``sandbox.fail_next(3)``,
``sandbox.answer_next(1, size=200 << 20)``, ``sandbox.counts``...); ``serve_sandbox`` runs one
until SIGINT or SIGTERM for ``bluecore-sidecar sandbox``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import signal
import socket
import struct
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Final, TypeAlias

from aiohttp import web
from multidict import CIMultiDictProxy

__all__ = [
    "CONTROL_PREFIX",
    "DEFAULT_HOST",
    "DEFAULT_MAX_RECORDS",
    "DEFAULT_PORT",
    "ENDLESS_BODY_SECONDS",
    "EVENTS_PATH",
    "MAX_BODY_BYTES",
    "MAX_PURCHASE_PRODUCTS",
    "BluecoreSandbox",
    "JSONValue",
    "ReceivedRequest",
    "RetryAfter",
    "main",
    "run_sandbox",
    "serve_sandbox",
    "validate_event",
]

EVENTS_PATH: Final = "/api/track/mobile/v1"
CONTROL_PREFIX: Final = "/_sandbox"
MAX_BODY_BYTES: Final = 1024 * 1024
MAX_PURCHASE_PRODUCTS: Final = 30
DEFAULT_MAX_RECORDS: Final = 10_000
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8089
#: An "endless" body stops after this long anyway, so a forgotten fault cannot run forever.
ENDLESS_BODY_SECONDS: Final = 300.0
#: Chunk size of streamed bodies: large enough to stream fast, small enough to cost no memory.
_BODY_CHUNK: Final = 64 * 1024
#: At most this many distinct ids are counted one by one; later ones count in ``total`` only.
_MAX_COUNTED_IDS: Final = 1_000_000

# Long enough for in-flight answers to be written, short enough that stopping a sandbox with
# stalled requests does not hang a test run (stalled requests are woken on stop anyway).
_SHUTDOWN_TIMEOUT: Final = 2.0

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

RetryAfter: TypeAlias = int | str | datetime | timedelta | None
"""How a failure sets ``Retry-After``: int = seconds form; str = verbatim; datetime = that
moment as an HTTP-date; timedelta = an HTTP-date that long after the answer is sent."""

_SNAKE_CASE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
_PRODUCT_EVENTS: Final = frozenset(
    {"viewed_product", "add_to_cart", "remove_from_cart", "wishlist", "purchase"}
)
_EMAIL_EVENTS: Final = frozenset({"optin", "unsubscribe", "identify", "purchase"})


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request the events endpoint received, with the answer it decided on."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: JSONValue
    """The parsed JSON body; None when the body was not JSON (or was too large)."""
    status: int | None
    """The status answered; None when the connection was reset instead."""
    received_at: float
    """time.monotonic() when the request arrived."""
    faults: tuple[str, ...] = ()
    """Injected faults that shaped the answer: "delay", "reset", "fail", "body", "token_status"."""

    @property
    def event(self) -> str | None:
        """The Bluecore event name of the body, if it has one."""
        if isinstance(self.body, dict):
            name = self.body.get("event")
            if isinstance(name, str):
                return name
        return None

    def to_json(self) -> dict[str, JSONValue]:
        """The record as served by ``GET /_sandbox/received``."""
        headers: dict[str, JSONValue] = {}
        for name in self.headers:
            if name not in headers:
                headers[name] = ", ".join(self.headers.getall(name))
        return {
            "method": self.method,
            "path": self.path,
            "headers": headers,
            "body": self.body,
            "status": self.status,
            "faults": list(self.faults),
            "received_at": self.received_at,
        }


@dataclass(frozen=True, slots=True)
class _Body:
    """The body of a ``body`` rule: exactly one of text, size or endless."""

    text: str | None = None
    size: int | None = None
    endless: bool = False

    def to_json(self) -> dict[str, JSONValue]:
        if self.text is not None:
            return {"text_bytes": len(self.text.encode())}
        if self.size is not None:
            return {"size": self.size}
        return {"endless": True}


@dataclass(slots=True)
class _FailRule:
    status: int
    remaining: int
    retry_after: int | str | timedelta | None
    body: _Body | None = None


@dataclass(slots=True)
class _DelayRule:
    seconds: float
    remaining: int | None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    error: str | None = None
    message: str = ""
    retry_after: int | str | timedelta | None = None
    allow: str | None = None
    body: _Body | None = None

    def headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = _retry_after_header(self.retry_after)
        if self.allow is not None:
            headers["Allow"] = self.allow
        return headers

    def response(self) -> web.Response:
        headers = self.headers()
        if self.body is not None and self.body.text is not None:
            return web.Response(
                text=self.body.text,
                status=self.status,
                headers=headers,
                content_type="application/json",
            )
        if self.error is None:
            payload: dict[str, str] = {"status": "accepted"}
        else:
            payload = {"error": self.error, "message": self.message}
        return web.json_response(payload, status=self.status, headers=headers)


_ACCEPTED: Final = _Answer(202)


class BluecoreSandbox:
    """The fake Events API: its record, its fault rules and, once started, its HTTP server.

    ``tokens`` lists the accepted namespace tokens; None (the default) accepts any non-empty
    token.  At most ``max_records`` requests are kept, the oldest dropped first.
    """

    def __init__(
        self,
        *,
        tokens: Iterable[str] | None = None,
        max_records: int = DEFAULT_MAX_RECORDS,
    ) -> None:
        if max_records < 1:
            raise ValueError("max_records must be at least 1")
        if isinstance(tokens, str):  # a lone token, not an iterable of one-letter tokens
            tokens = (tokens,)
        self._tokens = None if tokens is None else frozenset(tokens)
        self._records: deque[ReceivedRequest] = deque(maxlen=max_records)
        self._counts: Counter[str] = Counter()
        self._total = 0
        self._failures: deque[_FailRule] = deque()
        self._delay: _DelayRule | None = None
        self._resets = 0
        self._token_status: dict[str, int] = {}
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    # -- the record ---------------------------------------------------------------------------

    @property
    def received(self) -> list[ReceivedRequest]:
        """A snapshot of the recorded requests, oldest first."""
        return list(self._records)

    def received_events(self, event: str) -> list[ReceivedRequest]:
        """The recorded requests whose body names ``event``."""
        return [record for record in self._records if record.event == event]

    @property
    def counts(self) -> dict[str, JSONValue]:
        """Requests received so far, in total and per ``properties.distinct_id`` of the body."""
        by_id: dict[str, JSONValue] = dict(self._counts)
        return {"total": self._total, "by_distinct_id": by_id}

    def clear_received(self) -> int:
        """Forget every recorded request and the counts; returns how many records there were."""
        count = len(self._records)
        self._records.clear()
        self._counts.clear()
        self._total = 0
        return count

    def _count(self, body: JSONValue) -> None:
        self._total += 1
        properties = body.get("properties") if isinstance(body, dict) else None
        distinct_id = properties.get("distinct_id") if isinstance(properties, dict) else None
        if isinstance(distinct_id, str) and (
            distinct_id in self._counts or len(self._counts) < _MAX_COUNTED_IDS
        ):
            self._counts[distinct_id] += 1

    # -- faults -------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 503, retry_after: RetryAfter = None) -> None:
        """Answer the next ``n`` requests with ``status`` (after any failures already queued)."""
        _check_count(n, "n")
        _check_status(status)
        if isinstance(retry_after, bool) or (isinstance(retry_after, int) and retry_after < 0):
            raise ValueError("retry_after seconds must be a non-negative integer")
        if isinstance(retry_after, datetime):
            retry_after = _http_date(retry_after)
        if n:
            self._failures.append(_FailRule(status, n, retry_after))

    def answer_next(
        self,
        n: int,
        status: int = 202,
        *,
        text: str | None = None,
        size: int | None = None,
        endless: bool = False,
        retry_after: RetryAfter = None,
    ) -> None:
        """Answer the next ``n`` requests with ``status`` and an odd body, in the failure queue.

        Exactly one of: ``text`` (sent as it is), ``size`` (that many filler bytes, streamed in
        chunks, never held in memory whole) or ``endless`` (a stream that does not end until
        the client leaves, the sandbox stops or ``ENDLESS_BODY_SECONDS`` pass).
        """
        if (text is not None) + (size is not None) + bool(endless) != 1:
            raise ValueError("a body rule must have exactly one of text, size and endless")
        if size is not None:
            _check_count(size, "size")
        self.fail_next(n, status, retry_after)
        if n:
            self._failures[-1].body = _Body(text=text, size=size, endless=bool(endless))

    def delay(self, seconds: float, count: int | None = None) -> None:
        """Hold every answer (or the next ``count``) for ``seconds``; replaces any earlier delay.

        ``seconds=0`` removes the delay.  Stalled requests are released when the sandbox stops.
        """
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("delay seconds must be a finite, non-negative number")
        if count is not None:
            _check_count(count, "count")
        self._delay = None if seconds == 0 or count == 0 else _DelayRule(float(seconds), count)

    def reset_next(self, n: int) -> None:
        """Close the connection, without answering, for the next ``n`` requests."""
        _check_count(n, "n")
        self._resets += n

    def set_token_status(self, token: str, status: int | None) -> None:
        """Answer every request carrying ``token`` with ``status`` (None removes the rule)."""
        if not token:
            raise ValueError("token must not be empty")
        if status is None:
            self._token_status.pop(token, None)
            return
        _check_status(status)
        self._token_status[token] = status

    def clear_faults(self) -> None:
        """Remove every fault rule (the accepted tokens are configuration, not a fault)."""
        self._failures.clear()
        self._delay = None
        self._resets = 0
        self._token_status.clear()

    def clear(self) -> None:
        """Remove every fault rule and forget every recorded request."""
        self.clear_faults()
        self.clear_received()

    def faults(self) -> dict[str, JSONValue]:
        """The pending fault rules, as served by ``GET /_sandbox/faults``."""
        delay: JSONValue = None
        if self._delay is not None:
            delay = {"seconds": self._delay.seconds, "remaining": self._delay.remaining}
        return {
            "fail": [_fail_rule_json(rule) for rule in self._failures],
            "delay": delay,
            "reset": self._resets,
            "token_status": dict(self._token_status),
        }

    # -- serving ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        """The aiohttp application serving the events endpoint and the control API."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", EVENTS_PATH, self._handle_event)
        app.router.add_get(f"{CONTROL_PREFIX}/health", self._handle_health)
        app.router.add_get(f"{CONTROL_PREFIX}/received", self._handle_get_received)
        app.router.add_delete(f"{CONTROL_PREFIX}/received", self._handle_delete_received)
        app.router.add_get(f"{CONTROL_PREFIX}/counts", self._handle_get_counts)
        app.router.add_get(f"{CONTROL_PREFIX}/faults", self._handle_get_faults)
        app.router.add_post(f"{CONTROL_PREFIX}/faults", self._handle_post_fault)
        app.router.add_delete(f"{CONTROL_PREFIX}/faults", self._handle_delete_faults)
        app.router.add_post(f"{CONTROL_PREFIX}/reset", self._handle_reset)
        return app

    async def start(self, host: str = DEFAULT_HOST, port: int = 0) -> None:
        """Listen on ``host:port`` (port 0 picks a free port; see ``url``)."""
        if self._runner is not None:
            raise RuntimeError("the sandbox is already running")
        self._closing = asyncio.Event()
        runner = web.AppRunner(self.make_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        bound_host, bound_port = runner.addresses[0][:2]
        self._runner = runner
        self._base_url = f"http://{_url_host(str(bound_host))}:{bound_port}"

    async def stop(self) -> None:
        """Release stalled requests, finish in-flight answers and stop listening."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._closing.set()
        await runner.cleanup()
        self._base_url = None

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running sandbox."""
        if self._base_url is None:
            raise RuntimeError("the sandbox is not running")
        return self._base_url

    @property
    def url(self) -> str:
        """The full events URL, e.g. ``http://127.0.0.1:8089/api/track/mobile/v1``."""
        return self.base_url + EVENTS_PATH

    # -- the events endpoint ------------------------------------------------------------------

    async def _handle_event(self, request: web.Request) -> web.StreamResponse:
        received_at = time.monotonic()
        too_large = False
        raw = b""
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            too_large = True
        is_json, body = (False, None) if too_large else _parse_json(raw)

        # Everything below up to the first await runs without yielding, so faults are taken
        # in arrival order even under concurrency.
        faults: list[str] = []
        pause = self._take_delay()
        if pause is not None:
            faults.append("delay")
        answer: _Answer | None = None
        self._count(body)
        if self._resets:
            self._resets -= 1
            faults.append("reset")
        else:
            answer = self._take_failure()
            if answer is not None:
                faults.append("fail" if answer.body is None else "body")
            else:
                answer = self._check(request, too_large=too_large, is_json=is_json, body=body)
                if answer.error == "token_status":
                    faults.append("token_status")
        self._records.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                headers=request.headers,
                body=body,
                status=None if answer is None else answer.status,
                received_at=received_at,
                faults=tuple(faults),
            )
        )

        if pause is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=pause)
        if answer is None:
            _drop_connection(request)
            # aiohttp quietly gives up writing this to the closed transport.
            return web.Response(status=499)
        if answer.body is not None and answer.body.text is None:
            return await self._stream(request, answer)
        return answer.response()

    async def _stream(self, request: web.Request, answer: _Answer) -> web.StreamResponse:
        """Send a ``size`` or endless body chunk by chunk; stop early if the client leaves."""
        assert answer.body is not None
        response = web.StreamResponse(status=answer.status, headers=answer.headers())
        response.content_type = "application/json"
        size = answer.body.size
        if size is not None:
            response.content_length = size
        chunk = b"x" * _BODY_CHUNK
        left = size
        stop_at = time.monotonic() + ENDLESS_BODY_SECONDS
        try:
            await response.prepare(request)
            while not self._closing.is_set():
                if left is None:
                    if time.monotonic() >= stop_at:
                        break
                    await response.write(chunk)
                else:
                    if left <= 0:
                        break
                    await response.write(chunk[: min(left, _BODY_CHUNK)])
                    left -= _BODY_CHUNK
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            # The client hung up (what a careful client does with a body it will not read
            # whole); aiohttp raises ConnectionResetError or, on a closing transport, a
            # RuntimeError.  Nothing more can be sent either way.
            pass
        return response

    def _take_delay(self) -> float | None:
        rule = self._delay
        if rule is None:
            return None
        if rule.remaining is not None:
            rule.remaining -= 1
            if rule.remaining <= 0:
                self._delay = None
        return rule.seconds

    def _take_failure(self) -> _Answer | None:
        if not self._failures:
            return None
        rule = self._failures[0]
        rule.remaining -= 1
        if rule.remaining <= 0:
            self._failures.popleft()
        return _Answer(
            rule.status,
            "injected_fault",
            f"sandbox fault: status {rule.status}",
            retry_after=rule.retry_after,
            body=rule.body,
        )

    def _check(
        self, request: web.Request, *, too_large: bool, is_json: bool, body: JSONValue
    ) -> _Answer:
        if request.method != "POST":
            return _Answer(405, "method_not_allowed", "use POST", allow="POST")
        if request.content_type != "application/json":
            return _Answer(415, "unsupported_media_type", "Content-Type must be application/json")
        if too_large:
            return _Answer(413, "payload_too_large", f"body exceeds {MAX_BODY_BYTES} bytes")
        if not is_json:
            return _Answer(400, "invalid_json", "body is not valid JSON")
        if not isinstance(body, dict):
            return _Answer(400, "invalid_body", "body must be a JSON object")
        properties = body.get("properties")
        if not isinstance(properties, dict):
            return _Answer(400, "missing_properties", "properties must be a JSON object")

        token = properties.get("token")
        if not isinstance(token, str) or not token.strip():
            return _Answer(401, "missing_token", "properties.token is required")
        configured = self._token_status.get(token)
        if configured is not None:
            return _Answer(configured, "token_status", f"status {configured} set for this token")
        if self._tokens is not None and token not in self._tokens:
            return _Answer(403, "unknown_token", "properties.token is not an accepted namespace")

        problem = validate_event(body)
        if problem is not None:
            code, message = problem
            return _Answer(400, code, message)
        return _ACCEPTED

    # -- the control API ----------------------------------------------------------------------

    async def _handle_health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "received": len(self._records), "faults": self.faults()}
        )

    async def _handle_get_received(self, request: web.Request) -> web.Response:
        event = request.query.get("event")
        records = self.received if event is None else self.received_events(event)
        return web.json_response([record.to_json() for record in records])

    async def _handle_delete_received(self, _request: web.Request) -> web.Response:
        return web.json_response({"cleared": self.clear_received()})

    async def _handle_get_counts(self, _request: web.Request) -> web.Response:
        return web.json_response(self.counts)

    async def _handle_get_faults(self, _request: web.Request) -> web.Response:
        return web.json_response(self.faults())

    async def _handle_post_fault(self, request: web.Request) -> web.Response:
        is_json, spec = _parse_json(await request.read())
        try:
            if not is_json or not isinstance(spec, dict):
                raise ValueError("the body must be a JSON object")
            self._apply_fault(spec)
        except ValueError as exc:
            return web.json_response({"error": "invalid_fault", "message": str(exc)}, status=400)
        return web.json_response({"faults": self.faults()})

    async def _handle_delete_faults(self, _request: web.Request) -> web.Response:
        self.clear_faults()
        return web.json_response({"faults": self.faults()})

    async def _handle_reset(self, _request: web.Request) -> web.Response:
        self.clear_faults()
        cleared = self.clear_received()
        return web.json_response({"cleared": cleared, "faults": self.faults()})

    def _apply_fault(self, spec: Mapping[str, JSONValue]) -> None:
        kind = spec.get("kind")
        if kind == "fail":
            self.fail_next(
                _json_int(spec, "count", 1),
                status=_json_int(spec, "status", 503),
                retry_after=_json_retry_after(spec.get("retry_after")),
            )
        elif kind == "delay":
            seconds = spec.get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float):
                raise ValueError("delay needs a number of seconds")
            count = spec.get("count")
            self.delay(seconds, None if count is None else _json_int(spec, "count", 1))
        elif kind == "reset":
            self.reset_next(_json_int(spec, "count", 1))
        elif kind == "token_status":
            token = spec.get("token")
            if not isinstance(token, str):
                raise ValueError("token_status needs a token string")
            status = spec.get("status")
            self.set_token_status(token, None if status is None else _json_int(spec, "status", 0))
        elif kind == "body":
            text = spec.get("text")
            if text is not None and not isinstance(text, str):
                raise ValueError("text must be a string")
            size = spec.get("size")
            endless = spec.get("endless", False)
            if not isinstance(endless, bool):
                raise ValueError("endless must be true or false")
            self.answer_next(
                _json_int(spec, "count", 1),
                status=_json_int(spec, "status", 202),
                text=text,
                size=None if size is None else _json_int(spec, "size", 0),
                endless=endless,
                retry_after=_json_retry_after(spec.get("retry_after")),
            )
        else:
            raise ValueError('kind must be one of "fail", "body", "delay", "reset", "token_status"')


def validate_event(body: Mapping[str, JSONValue]) -> tuple[str, str] | None:
    """The endpoint's content checks: None if ``body`` is a valid event, else (code, message).

    Messages name fields, never values, so they cannot leak an email.
    """
    event = body.get("event")
    if not isinstance(event, str) or not event.strip():
        return "missing_event", "event is required"
    properties = body.get("properties")
    if not isinstance(properties, dict):
        return "missing_properties", "properties must be a JSON object"
    distinct_id = properties.get("distinct_id")
    if not isinstance(distinct_id, str) or not distinct_id.strip():
        return "missing_distinct_id", "properties.distinct_id is required"

    customer = properties.get("customer")
    if customer is not None:
        if not isinstance(customer, dict):
            return "invalid_customer", "properties.customer must be a JSON object"
        for name in customer:
            if not _SNAKE_CASE.fullmatch(name):
                return (
                    "invalid_customer_attribute",
                    f"customer attribute names must be lowercase snake_case: {name[:64]!r}",
                )
    if event in _EMAIL_EVENTS:
        email = customer.get("email") if isinstance(customer, dict) else None
        if not isinstance(email, str) or not _EMAIL.fullmatch(email.strip()):
            return "missing_email", f"{event} needs properties.customer.email"

    if event == "search":
        term = properties.get("search_term")
        if not isinstance(term, str) or not term.strip():
            return "missing_search_term", "search needs properties.search_term"
    if event in _PRODUCT_EVENTS:
        problem = _check_products(event, properties.get("products"))
        if problem is not None:
            return problem
    if event == "purchase":
        order_id = properties.get("order_id")
        if not _is_id(order_id):
            return "missing_order_id", "purchase needs properties.order_id"
    return None


def _check_products(event: str, products: JSONValue) -> tuple[str, str] | None:
    if not isinstance(products, list) or not products:
        return "missing_products", f"{event} needs a non-empty properties.products list"
    if event == "add_to_cart" and len(products) != 1:
        return "too_many_products", "add_to_cart takes exactly one product"
    ids: set[str | int | float] = set()
    for product in products:
        product_id = product.get("id") if isinstance(product, dict) else None
        if not _is_id(product_id):
            return "missing_product_id", f"every product of {event} needs an id"
        assert isinstance(product_id, str | int | float)
        ids.add(product_id)
    if event == "purchase" and len(ids) > MAX_PURCHASE_PRODUCTS:
        return (
            "too_many_products",
            f"purchase takes at most {MAX_PURCHASE_PRODUCTS} unique product ids",
        )
    return None


def _is_id(value: JSONValue) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- helpers --------------------------------------------------------------------------------


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def _parse_json(raw: bytes) -> tuple[bool, JSONValue]:
    """(True, value) for a JSON document; (False, None) otherwise, NaN and Infinity included."""
    try:
        value: JSONValue = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return False, None
    return True, value


def _check_count(n: int, name: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"{name} must be a non-negative integer")


def _check_status(status: int) -> None:
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        raise ValueError("status must be an integer from 200 to 599")


def _json_int(spec: Mapping[str, JSONValue], key: str, default: int) -> int:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer")
    return value


def _json_retry_after(value: JSONValue) -> RetryAfter:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, dict) and set(value) == {"http_date_in"}:
        seconds = value["http_date_in"]
        if isinstance(seconds, int | float) and not isinstance(seconds, bool) and seconds >= 0:
            return timedelta(seconds=seconds)
    raise ValueError('retry_after must be an integer, a string or {"http_date_in": seconds}')


def _fail_rule_json(rule: _FailRule) -> JSONValue:
    shown: dict[str, JSONValue] = {
        "status": rule.status,
        "remaining": rule.remaining,
        "retry_after": _retry_after_json(rule.retry_after),
    }
    if rule.body is not None:
        shown["body"] = rule.body.to_json()
    return shown


def _retry_after_json(value: int | str | timedelta | None) -> JSONValue:
    if isinstance(value, timedelta):
        return {"http_date_in": value.total_seconds()}
    return value


def _retry_after_header(value: int | str | timedelta) -> str:
    if isinstance(value, timedelta):
        moment = datetime.now(UTC) + value
        # HTTP-dates have whole seconds; rounding up keeps the wait at least as long as asked.
        if moment.microsecond:
            moment = moment.replace(microsecond=0) + timedelta(seconds=1)
        return _http_date(moment)
    return str(value)


def _http_date(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _drop_connection(request: web.Request) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0) rather than an orderly FIN."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# -- entry points ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def run_sandbox(
    host: str = DEFAULT_HOST,
    port: int = 0,
    tokens: Iterable[str] | None = None,
    *,
    max_records: int = DEFAULT_MAX_RECORDS,
) -> AsyncIterator[BluecoreSandbox]:
    """Run a sandbox for the duration of the ``async with`` block."""
    sandbox = BluecoreSandbox(tokens=tokens, max_records=max_records)
    await sandbox.start(host, port)
    try:
        yield sandbox
    finally:
        await sandbox.stop()


async def main(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, tokens: Iterable[str] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, after printing one line with the events URL."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with run_sandbox(host, port, tokens) as sandbox:
            sys.stdout.write(f"Bluecore sandbox listening on {sandbox.url}\n")
            sys.stdout.flush()
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


def serve_sandbox(
    host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, tokens: Iterable[str] | None = None
) -> None:
    """Blocking entry point of ``bluecore-sidecar sandbox --host H --port P``."""
    asyncio.run(main(host, port, tokens))
