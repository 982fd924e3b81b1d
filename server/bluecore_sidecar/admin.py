"""The ``DeadLetterService`` servicer: list, show, replay and purge the queue's dead letters.

A thin layer over :class:`~.store.DeadLetterStore`. Without a durable queue every RPC answers
``FAILED_PRECONDITION``. Errors are raised as :class:`~.errors.RequestError`; the edge
interceptor turns them into statuses with an ``ErrorInfo``. The CLI's ``dead-letters`` verb
is its client: the store holds an exclusive lock on its file, so nothing else may open it
while the sidecar runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc
from datafly.bluecore.v1 import delivery_pb2, delivery_pb2_grpc
from google.protobuf import timestamp_pb2

from .errors import FailedPrecondition, InvalidRequest, NotFound
from .store import DeadLetter, DeadLetterFilter, DeadLetterStore

#: Largest page ``ListDeadLetters`` returns; 0 in the request means :data:`DEFAULT_PAGE`.
MAX_PAGE = 1000
DEFAULT_PAGE = 100

SERVICE_NAME = delivery_pb2.DESCRIPTOR.services_by_name["DeadLetterService"].full_name


class DeadLetterAdmin(delivery_pb2_grpc.DeadLetterServiceServicer):  # type: ignore[misc]
    """Implements ``datafly.bluecore.v1.DeadLetterService`` over the durable queue."""

    def __init__(
        self,
        store: DeadLetterStore | None,
        *,
        on_replay: Callable[[], None] = lambda: None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._on_replay = on_replay
        self._wall_clock = wall_clock

    async def ListDeadLetters(  # noqa: N802 - the proto names the RPC
        self, request: delivery_pb2.ListDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.ListDeadLettersResponse:
        """One page of dead letters, oldest first, without their events."""
        store = self._require()
        size = request.page_size or DEFAULT_PAGE
        if not 1 <= size <= MAX_PAGE:
            raise InvalidRequest(
                "BAD_PAGE_SIZE", f"page_size must be 0 to {MAX_PAGE}; got {request.page_size}"
            )
        after = _page_token(request.page_token)
        selection = self._filter(request.filter)
        rows = await store.list_dead_letters(selection, limit=size + 1, after_id=after)
        page = rows[:size]
        more = len(rows) > size
        return delivery_pb2.ListDeadLettersResponse(
            dead_letters=[_to_proto(row) for row in page],
            next_page_token=str(page[-1].id) if more else "",
        )

    async def GetDeadLetter(  # noqa: N802 - the proto names the RPC
        self, request: delivery_pb2.GetDeadLetterRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.GetDeadLetterResponse:
        """One dead letter with its event."""
        store = self._require()
        row = await store.get_dead_letter(request.id)
        if row is None:
            raise NotFound("DEAD_LETTER_NOT_FOUND", f"no dead letter has id {request.id}")
        return delivery_pb2.GetDeadLetterResponse(dead_letter=_to_proto(row))

    async def ReplayDeadLetters(  # noqa: N802 - the proto names the RPC
        self, request: delivery_pb2.ReplayDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.ReplayDeadLettersResponse:
        """Put the selected dead letters back into the queue, due now."""
        store = self._require()
        outcome = await store.replay_dead_letters(self._selection(request))
        if outcome.replayed:
            self._on_replay()
        return delivery_pb2.ReplayDeadLettersResponse(
            replayed=outcome.replayed, skipped_duplicates=outcome.skipped_duplicates
        )

    async def PurgeDeadLetters(  # noqa: N802 - the proto names the RPC
        self, request: delivery_pb2.PurgeDeadLettersRequest, context: grpc.aio.ServicerContext
    ) -> delivery_pb2.PurgeDeadLettersResponse:
        """Delete the selected dead letters for good."""
        store = self._require()
        purged = await store.purge_dead_letters(self._selection(request))
        return delivery_pb2.PurgeDeadLettersResponse(purged=purged)

    def _require(self) -> DeadLetterStore:
        if self._store is None:
            raise FailedPrecondition(
                "NO_DURABLE_QUEUE",
                "this sidecar has no durable queue (SIDECAR_QUEUE_PATH is unset), "
                "so it keeps no dead letters",
            )
        return self._store

    def _selection(
        self,
        request: delivery_pb2.ReplayDeadLettersRequest | delivery_pb2.PurgeDeadLettersRequest,
    ) -> DeadLetterFilter:
        """``ids`` when given, else a filter with a condition, else everything with ``all``."""
        if request.ids:
            return DeadLetterFilter(ids=tuple(request.ids))
        selection = self._filter(request.filter)
        if selection != DeadLetterFilter():
            return selection
        if request.all:
            return selection
        raise InvalidRequest(
            "EMPTY_SELECTION", "select dead letters by ids, a filter with a condition, or all"
        )

    def _filter(self, raw: delivery_pb2.DeadLetterFilter) -> DeadLetterFilter:
        now = self._wall_clock()
        return DeadLetterFilter(
            reasons=tuple(raw.reasons),
            bluecore_events=tuple(raw.bluecore_events),
            dead_before=now - raw.older_than.ToTimedelta().total_seconds()
            if raw.HasField("older_than")
            else None,
            dead_after=now - raw.newer_than.ToTimedelta().total_seconds()
            if raw.HasField("newer_than")
            else None,
        )


def _page_token(token: str) -> int:
    if not token:
        return 0
    if not token.isascii() or not token.isdigit() or len(token) > 19:
        raise InvalidRequest("BAD_PAGE_TOKEN", "page_token is not one this sidecar handed out")
    return int(token)


def _to_proto(row: DeadLetter) -> delivery_pb2.DeadLetter:
    parts = row.traceparent.split("-")
    message = delivery_pb2.DeadLetter(
        id=row.id,
        message_id=row.message_id,
        bluecore_event=row.bluecore_event,
        reason=row.reason,
        detail=row.detail,
        http_status=row.http_status,
        attempts=row.attempts,
        event_time=_timestamp(row.event_time),
        enqueue_time=_timestamp(row.enqueued_at),
        dead_time=_timestamp(row.dead_at),
        trace_id=parts[1] if len(parts) == 4 else "",
    )
    if row.payload is not None:
        message.event.ParseFromString(row.payload)
    return message


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    value = timestamp_pb2.Timestamp()
    value.FromDatetime(datetime.fromtimestamp(seconds, UTC))
    return value
