"""The HTTP edge: one POST of a finished body, and the bounded parts of its answer.

:class:`AiohttpTransport` is the one real implementation of
:class:`~bluecore_sidecar.upstream.Transport`, over the process's pooled
``aiohttp.ClientSession``. aiohttp exceptions stop here and come out as
:mod:`bluecore_sidecar.errors` types.
"""

from __future__ import annotations

import aiohttp
from opentelemetry import trace

from .errors import UpstreamConnectionError
from .redaction import excerpt
from .tracing import ClientSpans
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
        tracer: trace.Tracer | None = None,
    ) -> None:
        self._session = session
        # The CLIENT span of each try of a sampled call (None: tracing is off).
        self._spans = None if tracer is None else ClientSpans(tracer, url, _HEADERS)
        self._url = url
        self._max_body_bytes = max_body_bytes

    async def post(self, body: bytes, attempt: int) -> Answer:
        """POST ``body``; read at most ``max_body_bytes`` of the answer, drop the rest."""
        # The CLIENT span of this try, and the traceparent header that goes with it; None
        # for a try that is not traced (tracing off, or a call the sampler dropped).
        traced = self._spans.start(attempt) if self._spans is not None else None
        span = None
        headers = _HEADERS
        if traced is not None:
            span, headers = traced
        try:
            async with self._session.post(
                self._url,
                data=body,
                headers=headers,
                # A 307/308 would re-post the body, namespace token included, elsewhere.
                allow_redirects=False,
            ) as response:
                if span is not None:
                    ClientSpans.answered(span, response.status)
                head = await _read_at_most(response.content, self._max_body_bytes)
                if not response.content.at_eof():
                    # The rest is not wanted: closing drops the connection instead of
                    # reading a possibly endless body to reuse it.
                    response.close()
                return Answer(response.status, response.headers.get("Retry-After"), head)
        except aiohttp.ClientError as exc:
            if span is not None:
                ClientSpans.failed(span, exc)
            # The exception text can carry the URL but never the body, so the token stays out.
            raise UpstreamConnectionError(f"{type(exc).__name__}: {excerpt(str(exc))}") from None
        except BaseException as exc:  # cancelled: the try's time limit, or shutdown
            if span is not None:
                ClientSpans.failed(span, exc)
            raise
        finally:
            if span is not None:
                span.end()


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
