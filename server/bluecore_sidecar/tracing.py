"""Span plumbing that costs the event loop little: the CLIENT span of an HTTP try, and OTLP.

:class:`ClientSpans` makes the ``POST`` span of one try to Bluecore and the ``traceparent``
header that goes with it, with the stable HTTP attribute names (``http.request.method``,
``url.full``, ``server.address``, ``server.port``, ``http.request.resend_count``,
``http.response.status_code``, ``error.type``). Doing it here rather than with aiohttp's
``TraceConfig`` signals saves the signal machinery that aiohttp runs around every request.

:func:`encode_export_request` writes an OTLP ``ExportTraceServiceRequest`` straight to
protobuf bytes; :mod:`.otlp_grpc` holds the SDK's OTLP/gRPC exporter using it. The SDK's
own encoder builds a protobuf object for every span, attribute and value, which made the
export thread one of the largest costs of a traced delivery.
"""

from __future__ import annotations

import contextlib
import struct
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yarl
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import Attributes

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

#: The span name of one HTTP try (the method, as the HTTP conventions ask).
CLIENT_SPAN = "POST"
RESEND_COUNT = "http.request.resend_count"
STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
_CLIENT = trace.SpanKind.CLIENT
_ERROR = trace.StatusCode.ERROR
#: The key under which the API keeps the current span in a Context (its own name for it is
#: private): the one key of a context that holds nothing but a span.
CURRENT_SPAN = next(iter(trace.set_span_in_context(trace.INVALID_SPAN, otel_context.Context())))
#: What untraced work runs in: no span, nothing attached (the current span is the invalid one
#: already). Stateless, so one serves every call and every background try.
NO_SPAN: contextlib.AbstractContextManager[trace.Span] = contextlib.nullcontext(trace.INVALID_SPAN)


def url_without_secrets(url: str) -> str:
    """``url`` without user info, query and fragment: what ``url.full`` may show."""
    return str(yarl.URL(url).with_user(None).with_query(None).with_fragment(None))


class ClientSpans:
    """Starts the CLIENT span of each HTTP try to one URL; None where it would not be recorded.

    The span is not made current: nothing below the try starts spans of its own, and the
    ``traceparent`` is written from the span's context directly. Only W3C trace context goes
    to Bluecore (``tracestate`` too when the trace has one), never baggage.
    """

    def __init__(self, tracer: trace.Tracer, url: str, base_headers: Mapping[str, str]) -> None:
        self._tracer = tracer
        self._base_headers = dict(base_headers)
        shown = url_without_secrets(url)
        parsed = urllib.parse.urlsplit(shown)
        static: dict[str, str | int] = {"http.request.method": "POST", "url.full": shown}
        if parsed.hostname:
            static["server.address"] = parsed.hostname
        if parsed.port:
            static["server.port"] = parsed.port
        self._static = static
        # The start attributes of tries 1, 2, ...: built once, copied by the SDK per span.
        self._by_attempt: list[dict[str, str | int]] = []

    def start(self, attempt: int) -> tuple[trace.Span, dict[str, str]] | None:
        """The span of try number ``attempt`` (1 for the first) and the headers to send.

        None when the try is not traced: inside a call the sampler dropped (every sampler
        we accept decides a child as it decided its parent), or when the sampler drops it.
        """
        # The current span, read from the current context in two Python calls where
        # trace.get_current_span takes four and an ABC instance check.
        parent = otel_context.get_current().get(CURRENT_SPAN)
        if type(parent) is UnsampledSpan:
            return None  # the usual try of a call the sampler dropped
        span: trace.Span
        if type(parent) is RecordingSpan and parent.sampled and parent.tracer is self._tracer:
            # The usual traced try: the child of the call's sampled span, started from it
            # directly (start_span would look the current span up again).
            span = parent.tracer.child(parent, CLIENT_SPAN, _CLIENT, self._attributes(attempt))
        else:
            # Anything else by the API's rules. A recording parent is sampled (no sampler we
            # accept records without sampling); a valid one that does not record belongs to
            # a call the sampler dropped.
            current = trace.get_current_span()
            if not current.is_recording() and current.get_span_context().is_valid:
                return None
            span = self._tracer.start_span(
                CLIENT_SPAN, kind=_CLIENT, attributes=self._attributes(attempt)
            )
            if not span.is_recording():
                return None
        # A SpanContext is a tuple whose fields are properties: unpacked, they cost no call.
        trace_id, span_id, _remote, flags, state, _valid = span.get_span_context()
        headers = dict(self._base_headers)
        headers["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
        if state is not _NO_TRACE_STATE and state:
            headers["tracestate"] = state.to_header()
        return span, headers

    @staticmethod
    def answered(span: trace.Span, status: int) -> None:
        """Record the answer's status code; 4xx, 5xx and nonsense codes are errors."""
        if status >= 400 or status < 100:
            span.set_attributes({STATUS_CODE: status, ERROR_TYPE: str(status)})
            span.set_status(_ERROR)
        else:
            span.set_attribute(STATUS_CODE, status)

    @staticmethod
    def failed(span: trace.Span, error: BaseException) -> None:
        """Mark the try as failed by ``error`` (a connection error, or cancelled by its timeout).

        The error is recorded by type only: its text can quote the URL or a peer's answer.
        """
        kind = type(error).__qualname__
        span.set_attribute(ERROR_TYPE, kind)
        span.set_status(_ERROR, kind)

    def _attributes(self, attempt: int) -> dict[str, str | int]:
        cached = self._by_attempt
        if attempt <= len(cached):
            return cached[attempt - 1]
        attributes = {**self._static, RESEND_COUNT: attempt - 1}
        if attempt == len(cached) + 1 and attempt <= 16:
            cached.append(attributes)
        return attributes


# -- spans ---------------------------------------------------------------------------------


class LightTracer(trace.Tracer):
    """The SDK tracer's decisions, with spans that cost a fraction of the SDK's own.

    Sampler, id generator, resource, instrumentation scope and span processors are the SDK
    tracer's (``sdk_tracer``), so sampling, ids and export behave as configured by
    ``OTEL_*``. What differs is the span while it is open: a :class:`RecordingSpan` keeps its
    attributes in a plain dict, with no lock, no per-value validation and no bounded
    containers, and becomes the SDK's ``ReadableSpan`` once, when it ends. That is sound here
    because every span is opened, changed and ended on the event loop, and the sidecar's
    attribute values are short strings, integers and booleans it makes itself. When span
    limits bound attribute values (``OTEL_*ATTRIBUTE_VALUE_LENGTH_LIMIT``) or the tracer is
    disabled, :func:`light_tracer` keeps the SDK's own spans.
    """

    def __init__(self, sdk_tracer: Any) -> None:
        self._sampler = sdk_tracer.sampler
        self._decide = _Decisions.of(self._sampler)
        self._ids = sdk_tracer.id_generator
        self._random_ids = bool(self._ids.is_trace_id_random())
        self._processor = sdk_tracer.span_processor
        self._sdk = sdk_tracer  # its resource is read at each end: the SDK may replace it
        self._scope = sdk_tracer._instrumentation_scope
        from opentelemetry.sdk.trace import ReadableSpan  # noqa: PLC0415 - loaded with the SDK

        self._readable = ReadableSpan

    def start_span(  # noqa: PLR0917 - the API's signature
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        """A span as the SDK would start it: the sampler decides, ids come from the SDK's.

        The child of a sampled span of ours is sampled without asking: every sampler the
        sidecar accepts decides a child as it decided its parent (the ratio samplers look at
        the trace id, which the child shares), so it carries the parent's flags and state.
        """
        # trace.get_current_span(context), read from the context directly (see CURRENT_SPAN).
        current_span = (context if context is not None else otel_context.get_current()).get(
            CURRENT_SPAN
        )
        links = links or ()
        if type(current_span) is RecordingSpan and current_span.sampled and not links:
            return self.child(current_span, name, kind, attributes, start_time, context)
        if current_span is None or not isinstance(current_span, trace.Span):
            current_span = trace.INVALID_SPAN
        current = current_span.get_span_context()
        parent: trace.SpanContext | None = None
        # A SpanContext is a tuple whose fields are properties: unpacked, they cost no call.
        parent_trace_id, _span_id, remote, parent_flags, parent_state, valid = current
        if valid:
            parent = current
            trace_id = parent_trace_id
            random_id = parent_flags & _RANDOM_ID
            bound = self._decide.parented(remote, parent_flags & _SAMPLED) if not links else None
        else:
            trace_id = self._ids.generate_trace_id()
            random_id = self._random_ids
            bound = self._decide.root if not links else None
        if bound is None:
            # A sampler whose answer we cannot work out ourselves: ask it.
            decision = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = decision.decision.is_sampled()
            recording = decision.decision.is_recording()
            trace_state = decision.trace_state
            attributes = decision.attributes
        else:
            # The SDK sampler's own test (see _Decisions), without its SamplingResult.
            sampled = recording = trace_id & _LOW_64 < bound
            trace_state = parent_state if parent is not None else None
        flags = _FLAGS[bool(sampled), bool(random_id)]
        span_context = trace.SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=trace_state,
        )
        if not recording:
            return UnsampledSpan(span_context)
        span = RecordingSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            dict(attributes) if attributes else {},
            tuple(links),
            start_time or time.time_ns(),
            sampled=sampled,
        )
        self._processor.on_start(span, parent_context=context)
        return span

    def child(  # noqa: PLR0917 - start_span's arguments
        self,
        parent: RecordingSpan,
        name: str,
        kind: trace.SpanKind,
        attributes: Attributes = None,
        start_time: int | None = None,
        context: otel_context.Context | None = None,
    ) -> RecordingSpan:
        """A span under ``parent``, a sampled span of this tracer, without asking the sampler.

        Every sampler the sidecar accepts decides a child as it decided its parent (the
        ratio samplers look at the trace id, which the child shares), so the child carries
        the parent's flags and trace state. ``context`` goes to the processors' ``on_start``.
        """
        parent_context = parent.context
        # A SpanContext is a tuple whose fields are properties: unpacked, they cost no call.
        trace_id, _span_id, _remote, flags, state, _valid = parent_context
        span = RecordingSpan(
            self,
            name,
            trace.SpanContext(trace_id, self._ids.generate_span_id(), False, flags, state),
            parent_context,
            kind,
            dict(attributes) if attributes else {},
            (),
            start_time or time.time_ns(),
            sampled=True,
        )
        self._processor.on_start(span, parent_context=context)
        return span

    @contextlib.contextmanager  # the API's decorator is private; this one behaves the same
    def start_as_current_span(  # type: ignore[override]  # noqa: PLR0917 - the API's signature
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: trace.SpanKind = trace.SpanKind.INTERNAL,
        attributes: Attributes = None,
        links: Sequence[trace.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        """:meth:`start_span`, made current for the block and ended after it."""
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=False,
            set_status_on_exception=False,
        ) as current:
            yield current

    def _finish(self, span: RecordingSpan, end_time: int) -> None:
        self._processor.on_end(
            self._readable(
                name=span.name,
                context=span.context,
                parent=span.parent,
                resource=self._sdk.resource,
                attributes=span.attributes,
                events=tuple(span.events),
                links=span.links,
                kind=span.kind,
                status=span.status,
                start_time=span.start_time,
                end_time=end_time,
                instrumentation_scope=self._scope,
            )
        )


class _Decisions:
    """The decisions of the samplers ``OTEL_TRACES_SAMPLER`` names, worked out without asking.

    Each such sampler samples when the low 64 bits of the trace id are below a bound: 2**64
    for ``always_on``, 0 for ``always_off``, ``TraceIdRatioBased.bound`` for the ratio. A
    parent-based one picks the sampler by the parent (none, remote or local, sampled or not).
    The bound is None where the answer is not that simple (any other sampler, a delegate of
    another kind, and a remote parent of a sampler that is not parent-based): the sampler is
    asked. Asking costs an unsampled call most of what it costs: a ``SamplingResult`` and
    two reads of the current span per decision.
    """

    __slots__ = ("local", "remote", "root")

    def __init__(
        self,
        root: int | None,
        remote: tuple[int | None, int | None],
        local: tuple[int | None, int | None],
    ) -> None:
        self.root = root
        self.remote = remote  # (parent not sampled, parent sampled)
        self.local = local

    @classmethod
    def of(cls, sampler: object) -> _Decisions:
        """The bounds of ``sampler``; None wherever it must be asked."""
        from opentelemetry.sdk.trace import sampling  # noqa: PLC0415 - loaded with the SDK

        own = _bound(sampler)
        if own is not None:
            return cls(own, (None, None), (own, own))
        if type(sampler) not in (sampling.ParentBased, sampling.ParentBasedTraceIdRatio):
            return cls(None, (None, None), (None, None))
        # ParentBased keeps its delegates in private fields (the SDK version is pinned).
        delegate = getattr
        return cls(
            _bound(delegate(sampler, "_root", None)),
            (
                _bound(delegate(sampler, "_remote_parent_not_sampled", None)),
                _bound(delegate(sampler, "_remote_parent_sampled", None)),
            ),
            (
                _bound(delegate(sampler, "_local_parent_not_sampled", None)),
                _bound(delegate(sampler, "_local_parent_sampled", None)),
            ),
        )

    def parented(self, remote: bool, sampled: int) -> int | None:
        """The bound for a span whose (valid) parent is ``remote`` or not, ``sampled`` or not."""
        pair = self.remote if remote else self.local
        return pair[1] if sampled else pair[0]


def _bound(sampler: object) -> int | None:
    """The bound of a sampler that decides by the trace id alone, or None."""
    from opentelemetry.sdk.trace import sampling  # noqa: PLC0415 - loaded with the SDK

    if sampler is sampling.ALWAYS_ON:
        return 1 << 64
    if sampler is sampling.ALWAYS_OFF:
        return 0
    if type(sampler) is sampling.TraceIdRatioBased:
        return int(sampler.bound)
    return None


#: The trace id bits the ratio samplers look at (``TraceIdRatioBased.TRACE_ID_LIMIT``).
_LOW_64 = (1 << 64) - 1
_SAMPLED = trace.TraceFlags(trace.TraceFlags.SAMPLED)
_NOT_SAMPLED = trace.TraceFlags(trace.TraceFlags.DEFAULT)
_RANDOM_ID = trace.TraceFlags.RANDOM_TRACE_ID
#: A new span's flags by (sampled, random trace id).
_FLAGS = {
    (sampled, random): trace.TraceFlags(
        (_SAMPLED if sampled else _NOT_SAMPLED) | (_RANDOM_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}
_UNSET = trace.Status(trace.StatusCode.UNSET)


class UnsampledSpan(trace.NonRecordingSpan):
    """A span the sampler dropped: the SDK's non-recording span, of a type of its own.

    Its context is always valid (the light tracer made its ids), so :class:`ClientSpans`
    knows a try of a dropped call by the type of the current span alone.
    """


class RecordingSpan(trace.Span):
    """An open span of :class:`LightTracer`: plain fields until :meth:`end` hands it over."""

    __slots__ = (
        "attributes",
        "context",
        "ended",
        "events",
        "kind",
        "links",
        "name",
        "parent",
        "sampled",
        "start_time",
        "status",
        "tracer",
    )

    def __init__(  # noqa: PLR0917 - the fields of one span
        self,
        tracer: LightTracer,
        name: str,
        context: trace.SpanContext,
        parent: trace.SpanContext | None,
        kind: trace.SpanKind,
        attributes: dict[str, Any],
        links: tuple[trace.Link, ...],
        start_time: int,
        *,
        sampled: bool,
    ) -> None:
        self.tracer = tracer
        self.sampled = sampled  # its context's sampled flag (a span may record unsampled)
        self.name = name
        self.context = context
        self.parent = parent
        self.kind = kind
        self.attributes = attributes
        self.links = links
        self.start_time = start_time
        self.events: list[Any] = []
        self.status = _UNSET
        self.ended = False

    def get_span_context(self) -> trace.SpanContext:
        """This span's context."""
        return self.context

    def is_recording(self) -> bool:
        """True until the span ends."""
        return not self.ended

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Add or replace attributes (ignored once ended, as the SDK does)."""
        if not self.ended:
            self.attributes.update(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        """Add or replace one attribute (ignored once ended)."""
        if not self.ended:
            self.attributes[key] = value

    def add_event(
        self, name: str, attributes: Attributes = None, timestamp: int | None = None
    ) -> None:
        """Record an event (the SDK's ``Event``: its attributes are bounded and checked)."""
        if not self.ended:
            from opentelemetry.sdk.trace import Event  # noqa: PLC0415 - loaded with the SDK

            self.events.append(Event(name, attributes, timestamp))

    def update_name(self, name: str) -> None:
        """Rename the span (ignored once ended)."""
        if not self.ended:
            self.name = name

    def set_status(
        self, status: trace.Status | trace.StatusCode, description: str | None = None
    ) -> None:
        """The SDK's rules: UNSET changes nothing and OK is final."""
        if self.ended or self.status.status_code is trace.StatusCode.OK:
            return
        if isinstance(status, trace.Status):
            if status.status_code is not trace.StatusCode.UNSET:
                self.status = status
        elif status is not trace.StatusCode.UNSET:
            self.status = trace.Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        """An ``exception`` event with the type only: texts and stacks can quote data."""
        self.add_event(
            "exception",
            {"exception.type": type(exception).__qualname__, **dict(attributes or {})},
            timestamp,
        )

    def end(self, end_time: int | None = None) -> None:
        """End the span and hand it to the span processors (once)."""
        if self.ended:
            return
        self.ended = True
        self.tracer._finish(self, end_time or time.time_ns())


def light_tracer(sdk_tracer: trace.Tracer) -> trace.Tracer:
    """A :class:`LightTracer` over ``sdk_tracer``, or ``sdk_tracer`` where it cannot stand in.

    The SDK's own spans stay when the tracer is not the SDK's, when it is disabled, or when
    span limits bound attribute values (``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
    ``OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT``): the light span does not apply them.
    """
    limits = getattr(sdk_tracer, "_span_limits", None)
    enabled = getattr(sdk_tracer, "_is_enabled", None)
    if (
        limits is None
        or getattr(limits, "max_span_attribute_length", None) is not None
        or not callable(enabled)
        or not enabled()
        or not all(
            hasattr(sdk_tracer, name)
            for name in (
                "sampler",
                "id_generator",
                "span_processor",
                "resource",
                "_instrumentation_scope",
            )
        )
    ):
        return sdk_tracer
    return LightTracer(sdk_tracer)


# -- OTLP encoding ---------------------------------------------------------------------------
#
# Field numbers and wire types are those of opentelemetry-proto's trace.proto, common.proto,
# resource.proto and trace_service.proto; tests/test_tracing_otlp.py checks the bytes against
# the SDK's encoder for spans of every shape. Tags are written as bytes: (field << 3) | type.

_Q = struct.Struct("<Q")
_I = struct.Struct("<I")
_D = struct.Struct("<d")
#: Encoded key-value pairs of attributes, by (field tag, key, type, value): most repeat on
#: every span. The tag is part of the key: the same pair is another field in an event.
_KV_CACHE: dict[tuple[bytes, str, type, object], bytes] = {}
_KV_CACHE_SIZE = 4096
_KV_CACHE_VALUE_CHARS = 200
_FLAGS_LOCAL = b"\x85\x01" + _I.pack(0x100)  # span flags: "is remote" known, false
_FLAGS_REMOTE = b"\x85\x01" + _I.pack(0x300)  # ... true


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    if value < 0x4000:
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    size = len(payload)
    return tag + (_LENGTHS[size] if size < _TABLE else _varint(size)) + payload


#: The varints of 0 .. 2047: the length prefix of a span or an attribute, read from a list.
_TABLE = 0x800
_LENGTHS = [_varint(n) for n in range(_TABLE)]


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` message's bytes (the SDK's choice of kind, in its order)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value if value >= 0 else value + (1 << 64))
    if isinstance(value, float):
        return b"\x21" + _D.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"an attribute value of type {type(value).__name__} cannot be encoded")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """Each attribute as a ``KeyValue`` field ``tag``; one that cannot be encoded is left out."""
    if not attributes:
        return []
    # The SDK's BoundedAttributes keeps a plain dict inside; reading it directly skips the
    # Mapping protocol's Python-level __iter__ and __getitem__ for every attribute.
    inner = attributes if type(attributes) is dict else getattr(attributes, "_dict", None)
    return _key_values(tag, inner if isinstance(inner, dict) else attributes)


def _key_values(tag: bytes, attributes: Mapping[str, Any]) -> list[bytes]:
    out = []
    cache = _KV_CACHE
    for key, value in attributes.items():
        kind = type(value)
        cacheable = kind in (str, int, bool) and (
            kind is not str or len(value) <= _KV_CACHE_VALUE_CHARS
        )
        if cacheable:
            encoded = cache.get((tag, key, kind, value))
            if encoded is not None:
                out.append(encoded)
                continue
        try:
            encoded = _field(tag, _key_value(key, value))
        except TypeError:
            continue  # as the SDK's encoder does (it logs it)
        if cacheable:
            if len(cache) >= _KV_CACHE_SIZE:
                cache.clear()
            cache[(tag, key, kind, value)] = encoded
        out.append(encoded)
    return out


def _light_span(span: ReadableSpan) -> bytes:
    """:func:`_span` for a plain ``ReadableSpan``: what the SDK's processors hand over for
    its own spans, and what :class:`LightTracer` makes.

    The same bytes, with fewer Python calls: about 85 per span went to the ReadableSpan's
    properties (each a call, ``attributes`` a new MappingProxyType, ``events`` and ``links``
    new tuples, the ``dropped_*`` counts ABC instance checks), to the SpanContext's (a tuple
    whose fields are properties too: unpacked here instead) and to small helpers. The span's
    fields are read directly; what repeats from span to span (name and kind, an unset status,
    the flags) comes from small caches.
    """
    # A light span always has a context (the type says it may be None).
    trace_id, span_id, _remote, _flags, trace_state, _valid = span._context  # type: ignore[misc]
    parts = [b"\x0a\x10", trace_id.to_bytes(16, "big"), b"\x12\x08", span_id.to_bytes(8, "big")]
    if trace_state is not _NO_TRACE_STATE and trace_state:
        parts.append(_field(b"\x1a", trace_state.to_header().encode()))
    parent = span._parent
    if parent is not None:
        parts += (b"\x22\x08", parent[1].to_bytes(8, "big"))  # its span id
    kind = span._kind
    named = _NAME_KIND_CACHE.get(span._name)  # by name alone: hashing an enum is a Python call
    if named is None or named[0] is not kind:
        named = _name_and_kind(span._name, kind)
    parts.append(named[1])
    start, end = span._start_time, span._end_time
    if start and end:
        parts.append(_TIMES.pack(0x39, start, 0x41, end))
    else:
        if start:
            parts += (b"\x39", _Q.pack(start))
        if end:
            parts += (b"\x41", _Q.pack(end))
    attributes = span._attributes
    if type(attributes) is dict:
        if attributes:
            parts += _key_values(b"\x4a", attributes)
    else:
        parts += _attributes(b"\x4a", attributes)
        if span.dropped_attributes:
            parts += (b"\x50", _varint(span.dropped_attributes))
    events = span._events
    if events:
        for event in events:
            parts.append(_field(b"\x5a", _event(event)))
        if type(events) is not tuple and span.dropped_events:
            parts += (b"\x60", _varint(span.dropped_events))
    links = span._links
    if links:
        for link in links:
            parts.append(_field(b"\x6a", _link(link)))
        if type(links) is not tuple and span.dropped_links:
            parts += (b"\x70", _varint(span.dropped_links))
    status = span._status
    parts.append(_UNSET_STATUS if status is _UNSET else _status(status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent[2] else _FLAGS_LOCAL)
    return b"".join(parts)


def _name_and_kind(name: str, kind: trace.SpanKind) -> tuple[trace.SpanKind, bytes]:
    """The name and kind fields of a span, cached by its name (with the kind they are for)."""
    encoded = (_field(b"\x2a", name.encode()) if name else b"") + b"\x30" + _varint(kind.value + 1)
    if len(_NAME_KIND_CACHE) >= 256:
        _NAME_KIND_CACHE.clear()
    _NAME_KIND_CACHE[name] = (kind, encoded)
    return kind, encoded


def _status(status: trace.Status) -> bytes:
    parts = []
    if status.description:
        parts.append(_field(b"\x12", status.description.encode()))
    if status.status_code.value:
        parts += (b"\x18", _varint(status.status_code.value))
    return _field(b"\x7a", b"".join(parts))


_NAME_KIND_CACHE: dict[str, tuple[trace.SpanKind, bytes]] = {}
_TIMES = struct.Struct("<BQBQ")  # the start and end time fields: tag, fixed64, tag, fixed64
_NO_TRACE_STATE = trace.DEFAULT_TRACE_STATE
_UNSET_STATUS = b"\x7a\x00"  # an empty Status message


def _span(span: ReadableSpan) -> bytes:
    ctx = span.context
    parts = [
        b"\x0a\x10",
        ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        ctx.span_id.to_bytes(8, "big"),
    ]
    if ctx.trace_state:
        parts.append(_field(b"\x1a", ctx.trace_state.to_header().encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    if span.name:
        parts.append(_field(b"\x2a", span.name.encode()))
    parts += (b"\x30", _varint(span.kind.value + 1))
    if span.start_time:
        parts += (b"\x39", _Q.pack(span.start_time))
    if span.end_time:
        parts += (b"\x41", _Q.pack(span.end_time))
    # ReadableSpan.attributes wraps them in a MappingProxyType, which hides the plain dict.
    parts += _attributes(b"\x4a", getattr(span, "_attributes", None) or span.attributes)
    if span.dropped_attributes:
        parts += (b"\x50", _varint(span.dropped_attributes))
    for event in span.events:
        parts.append(_field(b"\x5a", _event(event)))
    if span.dropped_events:
        parts += (b"\x60", _varint(span.dropped_events))
    for link in span.links:
        parts.append(_field(b"\x6a", _link(link)))
    if span.dropped_links:
        parts += (b"\x70", _varint(span.dropped_links))
    parts.append(_status(span.status))
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


def _event(event: Any) -> bytes:
    parts = [b"\x09", _Q.pack(event.timestamp)]
    if event.name:
        parts.append(_field(b"\x12", event.name.encode()))
    parts += _attributes(b"\x1a", event.attributes)
    if event.dropped_attributes:
        parts += (b"\x20", _varint(event.dropped_attributes))
    return b"".join(parts)


def _link(link: trace.Link) -> bytes:
    ctx = link.context
    parts = [
        b"\x0a\x10",
        ctx.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        ctx.span_id.to_bytes(8, "big"),
    ]
    parts += _attributes(b"\x22", link.attributes)
    if link.dropped_attributes:
        parts += (b"\x28", _varint(link.dropped_attributes))
    parts.append(b"\x35" + _I.pack(0x300 if ctx.is_remote else 0x100))
    return b"".join(parts)


#: Encoded resources and scopes by identity (the object is kept so that its id stays its own).
_RESOURCE_CACHE: dict[int, tuple[Resource, bytes]] = {}
_SCOPE_CACHE: dict[int, tuple[InstrumentationScope | None, bytes, bytes]] = {}


def _resource(resource: Resource) -> bytes:
    """``ResourceSpans.resource``, written once per resource."""
    cached = _RESOURCE_CACHE.get(id(resource))
    if cached is not None and cached[0] is resource:
        return cached[1]
    encoded = _field(b"\x0a", b"".join(_attributes(b"\x0a", resource.attributes)))
    if len(_RESOURCE_CACHE) >= 16:
        _RESOURCE_CACHE.clear()
    _RESOURCE_CACHE[id(resource)] = (resource, encoded)
    return encoded


def _scope(scope: InstrumentationScope | None) -> tuple[bytes, bytes]:
    """``ScopeSpans.scope``, and its ``schema_url`` field (empty when it has none)."""
    cached = _SCOPE_CACHE.get(id(scope))
    if cached is not None and cached[0] is scope:
        return cached[1], cached[2]
    parts = []
    if scope is not None:
        if scope.name:
            parts.append(_field(b"\x0a", scope.name.encode()))
        if scope.version:
            parts.append(_field(b"\x12", scope.version.encode()))
        parts += _attributes(b"\x1a", scope.attributes)
    encoded = _field(b"\x0a", b"".join(parts))
    schema_url = scope.schema_url if scope is not None else ""
    schema = _field(b"\x1a", schema_url.encode()) if schema_url else b""
    if len(_SCOPE_CACHE) >= 64:
        _SCOPE_CACHE.clear()
    _SCOPE_CACHE[id(scope)] = (scope, encoded, schema)
    return encoded, schema


class _Group:
    """The spans of one resource (or one scope within it), in the order they came."""

    __slots__ = ("key", "members", "spans")

    def __init__(self, key: Any) -> None:
        self.key = key
        self.spans: list[bytes] = []
        self.members: list[_Group] = []


def _group_of(groups: list[_Group], by_id: dict[int, _Group], key: Any) -> _Group:
    """The group of ``key``: found by identity, else by equality (as the SDK groups), else new."""
    group = by_id.get(id(key))
    if group is None:
        group = next((g for g in groups if g.key == key), None)
        if group is None:
            group = _Group(key)
            groups.append(group)
        by_id[id(key)] = group
    return group


def encode_export_request(spans: Sequence[ReadableSpan]) -> bytes:
    """``spans`` as the bytes of an OTLP ``ExportTraceServiceRequest``.

    The same message as the SDK's ``encode_spans``: grouped by resource, then by
    instrumentation scope, each group in the order it first appears.
    """
    from opentelemetry.sdk.trace import ReadableSpan as Light  # noqa: PLC0415 - with the SDK

    resources: list[_Group] = []
    resource_ids: dict[int, _Group] = {}
    scope_ids: dict[tuple[int, int], _Group] = {}
    last: tuple[object, object, list[bytes]] | None = None  # most spans share one group
    lengths, table = _LENGTHS, _TABLE
    for span in spans:
        if type(span) is Light:
            resource = span._resource  # the fields, as _light_span reads them
            scope = span._instrumentation_scope or None
            encoded = _light_span(span)
        else:
            resource = span.resource
            scope = span.instrumentation_scope or None
            encoded = _span(span)
        if last is not None and last[0] is resource and last[1] is scope:
            out_spans = last[2]
        else:
            group = _group_of(resources, resource_ids, resource)
            scope_group = scope_ids.get((id(group), id(scope)))
            if scope_group is None:
                scope_group = next((g for g in group.members if g.key == scope), None)
                if scope_group is None:
                    scope_group = _Group(scope)
                    group.members.append(scope_group)
                scope_ids[(id(group), id(scope))] = scope_group
            out_spans = scope_group.spans
            last = (resource, scope, out_spans)
        size = len(encoded)
        out_spans += (b"\x12", lengths[size] if size < table else _varint(size), encoded)
    out = []
    for group in resources:
        resource = group.key
        parts = [_resource(resource)]
        for scope_group in group.members:
            scope_bytes, schema = _scope(scope_group.key)
            parts.append(_field(b"\x12", scope_bytes + b"".join(scope_group.spans) + schema))
        if resource.schema_url:
            parts.append(_field(b"\x1a", resource.schema_url.encode()))
        out.append(_field(b"\x0a", b"".join(parts)))
    return b"".join(out)
