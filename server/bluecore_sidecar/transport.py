"""The HTTP edge: one POST of a finished body, and the bounded parts of its answer.

:class:`AiohttpTransport` is the one real implementation of
:class:`~bluecore_sidecar.upstream.Transport`, over the process's pooled
``aiohttp.ClientSession``. aiohttp exceptions stop here and come out as
:mod:`bluecore_sidecar.errors` types.
"""

from __future__ import annotations

import aiohttp

from .errors import UpstreamConnectionError
from .redaction import excerpt
from .telemetry import attempt_context, client_span_wanted
from .upstream import Answer

#: Bytes of an answer's body kept for the detail; the rest is never read.
DEFAULT_MAX_BODY_BYTES = 4096
_HEADERS = {"Content-Type": "application/json"}  # aiohttp copies it into each request


class AiohttpTransport:
    """:class:`Transport` over one aiohttp session to one URL."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        traced: aiohttp.ClientSession | None = None,
    ) -> None:
        self._session = session
        # The session with the tracing hooks, for the tries of sampled calls (None: tracing
        # is off). The two share one connector.
        self._traced = traced
        self._url = url
        self._max_body_bytes = max_body_bytes

    async def post(self, body: bytes, attempt: int) -> Answer:
        """POST ``body``; read at most ``max_body_bytes`` of the answer, drop the rest."""
        # The CLIENT span of this try (and the traceparent header) come from the aiohttp
        # instrumentation on the traced session (telemetry.http_trace_configs); the try number
        # rides along in the request's trace context so the span carries the resend count.
        # An unsampled try takes the session without hooks: no span, no header, no work.
        traced = self._traced is not None and client_span_wanted()
        session = self._traced if traced and self._traced is not None else self._session
        try:
            async with session.post(
                self._url,
                data=body,
                headers=_HEADERS,
                # A 307/308 would re-post the body, namespace token included, elsewhere.
                allow_redirects=False,
                trace_request_ctx=attempt_context(attempt) if traced else None,
            ) as response:
                head = await _read_at_most(response.content, self._max_body_bytes)
                if not response.content.at_eof():
                    # The rest is not wanted: closing drops the connection instead of
                    # reading a possibly endless body to reuse it.
                    response.close()
                return Answer(response.status, response.headers.get("Retry-After"), head)
        except aiohttp.ClientError as exc:
            # The exception text can carry the URL but never the body, so the token stays out.
            raise UpstreamConnectionError(f"{type(exc).__name__}: {excerpt(str(exc))}") from None


async def _read_at_most(stream: aiohttp.StreamReader, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
        if stream.at_eof():
            break  # the whole body is in: no read just to learn that it ended
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
