import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeliveryStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_STATUS_UNSPECIFIED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_DELIVERED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_QUEUED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_SKIPPED_UNMAPPED: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_SKIPPED_NO_CONSENT: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_SKIPPED_DUPLICATE: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_SKIPPED_STALE: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_REJECTED_INVALID: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_FAILED_PERMANENT: _ClassVar[DeliveryStatus]
    DELIVERY_STATUS_FAILED_RETRYABLE: _ClassVar[DeliveryStatus]

class DeliveryMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DELIVERY_MODE_UNSPECIFIED: _ClassVar[DeliveryMode]
    DELIVERY_MODE_WAIT: _ClassVar[DeliveryMode]
    DELIVERY_MODE_ENQUEUE: _ClassVar[DeliveryMode]
    DELIVERY_MODE_DIRECT: _ClassVar[DeliveryMode]
DELIVERY_STATUS_UNSPECIFIED: DeliveryStatus
DELIVERY_STATUS_DELIVERED: DeliveryStatus
DELIVERY_STATUS_QUEUED: DeliveryStatus
DELIVERY_STATUS_SKIPPED_UNMAPPED: DeliveryStatus
DELIVERY_STATUS_SKIPPED_NO_CONSENT: DeliveryStatus
DELIVERY_STATUS_SKIPPED_DUPLICATE: DeliveryStatus
DELIVERY_STATUS_SKIPPED_STALE: DeliveryStatus
DELIVERY_STATUS_REJECTED_INVALID: DeliveryStatus
DELIVERY_STATUS_FAILED_PERMANENT: DeliveryStatus
DELIVERY_STATUS_FAILED_RETRYABLE: DeliveryStatus
DELIVERY_MODE_UNSPECIFIED: DeliveryMode
DELIVERY_MODE_WAIT: DeliveryMode
DELIVERY_MODE_ENQUEUE: DeliveryMode
DELIVERY_MODE_DIRECT: DeliveryMode

class DataflyEvent(_message.Message):
    __slots__ = ("message_id", "type", "event", "name", "anonymous_id", "user_id", "properties", "traits", "context", "timestamp", "sent_at", "received_at", "original_timestamp", "integrations", "channel", "category")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ANONYMOUS_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROPERTIES_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SENT_AT_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_AT_FIELD_NUMBER: _ClassVar[int]
    ORIGINAL_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    INTEGRATIONS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    type: str
    event: str
    name: str
    anonymous_id: str
    user_id: str
    properties: _struct_pb2.Struct
    traits: _struct_pb2.Struct
    context: Context
    timestamp: _timestamp_pb2.Timestamp
    sent_at: _timestamp_pb2.Timestamp
    received_at: _timestamp_pb2.Timestamp
    original_timestamp: _timestamp_pb2.Timestamp
    integrations: _struct_pb2.Struct
    channel: str
    category: str
    def __init__(self, message_id: _Optional[str] = ..., type: _Optional[str] = ..., event: _Optional[str] = ..., name: _Optional[str] = ..., anonymous_id: _Optional[str] = ..., user_id: _Optional[str] = ..., properties: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., received_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., original_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., integrations: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., channel: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("page", "traits", "consent", "ip", "user_agent", "locale", "library", "campaign", "timezone")
    class ConsentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TRAITS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    IP_FIELD_NUMBER: _ClassVar[int]
    USER_AGENT_FIELD_NUMBER: _ClassVar[int]
    LOCALE_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    CAMPAIGN_FIELD_NUMBER: _ClassVar[int]
    TIMEZONE_FIELD_NUMBER: _ClassVar[int]
    page: Page
    traits: _struct_pb2.Struct
    consent: _containers.ScalarMap[str, bool]
    ip: str
    user_agent: str
    locale: str
    library: Library
    campaign: Campaign
    timezone: str
    def __init__(self, page: _Optional[_Union[Page, _Mapping]] = ..., traits: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., consent: _Optional[_Mapping[str, bool]] = ..., ip: _Optional[str] = ..., user_agent: _Optional[str] = ..., locale: _Optional[str] = ..., library: _Optional[_Union[Library, _Mapping]] = ..., campaign: _Optional[_Union[Campaign, _Mapping]] = ..., timezone: _Optional[str] = ...) -> None: ...

class Page(_message.Message):
    __slots__ = ("url", "path", "title", "referrer", "search")
    URL_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    REFERRER_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    url: str
    path: str
    title: str
    referrer: str
    search: str
    def __init__(self, url: _Optional[str] = ..., path: _Optional[str] = ..., title: _Optional[str] = ..., referrer: _Optional[str] = ..., search: _Optional[str] = ...) -> None: ...

class Library(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class Campaign(_message.Message):
    __slots__ = ("name", "source", "medium", "term", "content")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MEDIUM_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    source: str
    medium: str
    term: str
    content: str
    def __init__(self, name: _Optional[str] = ..., source: _Optional[str] = ..., medium: _Optional[str] = ..., term: _Optional[str] = ..., content: _Optional[str] = ...) -> None: ...

class DeliveryResult(_message.Message):
    __slots__ = ("message_id", "status", "bluecore_event", "http_status", "attempts", "reason", "detail", "retry_after", "latency", "trace_id", "datafly_event")
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BLUECORE_EVENT_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    DATAFLY_EVENT_FIELD_NUMBER: _ClassVar[int]
    message_id: str
    status: DeliveryStatus
    bluecore_event: str
    http_status: int
    attempts: int
    reason: str
    detail: str
    retry_after: _duration_pb2.Duration
    latency: _duration_pb2.Duration
    trace_id: str
    datafly_event: str
    def __init__(self, message_id: _Optional[str] = ..., status: _Optional[_Union[DeliveryStatus, str]] = ..., bluecore_event: _Optional[str] = ..., http_status: _Optional[int] = ..., attempts: _Optional[int] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., trace_id: _Optional[str] = ..., datafly_event: _Optional[str] = ...) -> None: ...

class DeliverRequest(_message.Message):
    __slots__ = ("event", "mode")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    event: DataflyEvent
    mode: DeliveryMode
    def __init__(self, event: _Optional[_Union[DataflyEvent, _Mapping]] = ..., mode: _Optional[_Union[DeliveryMode, str]] = ...) -> None: ...

class DeliverResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: DeliveryResult
    def __init__(self, result: _Optional[_Union[DeliveryResult, _Mapping]] = ...) -> None: ...

class DeliverBatchRequest(_message.Message):
    __slots__ = ("events", "mode")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DataflyEvent]
    mode: DeliveryMode
    def __init__(self, events: _Optional[_Iterable[_Union[DataflyEvent, _Mapping]]] = ..., mode: _Optional[_Union[DeliveryMode, str]] = ...) -> None: ...

class DeliverBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DeliveryResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DeliveryResult, _Mapping]]] = ...) -> None: ...

class PreviewRequest(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: DataflyEvent
    def __init__(self, event: _Optional[_Union[DataflyEvent, _Mapping]] = ...) -> None: ...

class PreviewResponse(_message.Message):
    __slots__ = ("result", "bluecore_body", "additional_bodies")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    BLUECORE_BODY_FIELD_NUMBER: _ClassVar[int]
    ADDITIONAL_BODIES_FIELD_NUMBER: _ClassVar[int]
    result: DeliveryResult
    bluecore_body: str
    additional_bodies: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, result: _Optional[_Union[DeliveryResult, _Mapping]] = ..., bluecore_body: _Optional[str] = ..., additional_bodies: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchDeliveriesRequest(_message.Message):
    __slots__ = ("statuses",)
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[DeliveryStatus]
    def __init__(self, statuses: _Optional[_Iterable[_Union[DeliveryStatus, str]]] = ...) -> None: ...

class WatchDeliveriesResponse(_message.Message):
    __slots__ = ("result", "dropped")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    result: DeliveryResult
    dropped: int
    def __init__(self, result: _Optional[_Union[DeliveryResult, _Mapping]] = ..., dropped: _Optional[int] = ...) -> None: ...

class DeadLetter(_message.Message):
    __slots__ = ("id", "message_id", "bluecore_event", "reason", "detail", "http_status", "attempts", "event_time", "enqueue_time", "dead_time", "trace_id", "event")
    ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    BLUECORE_EVENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    HTTP_STATUS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ENQUEUE_TIME_FIELD_NUMBER: _ClassVar[int]
    DEAD_TIME_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    id: int
    message_id: str
    bluecore_event: str
    reason: str
    detail: str
    http_status: int
    attempts: int
    event_time: _timestamp_pb2.Timestamp
    enqueue_time: _timestamp_pb2.Timestamp
    dead_time: _timestamp_pb2.Timestamp
    trace_id: str
    event: DataflyEvent
    def __init__(self, id: _Optional[int] = ..., message_id: _Optional[str] = ..., bluecore_event: _Optional[str] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ..., http_status: _Optional[int] = ..., attempts: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., enqueue_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., dead_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trace_id: _Optional[str] = ..., event: _Optional[_Union[DataflyEvent, _Mapping]] = ...) -> None: ...

class DeadLetterFilter(_message.Message):
    __slots__ = ("reasons", "bluecore_events", "older_than", "newer_than")
    REASONS_FIELD_NUMBER: _ClassVar[int]
    BLUECORE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    OLDER_THAN_FIELD_NUMBER: _ClassVar[int]
    NEWER_THAN_FIELD_NUMBER: _ClassVar[int]
    reasons: _containers.RepeatedScalarFieldContainer[str]
    bluecore_events: _containers.RepeatedScalarFieldContainer[str]
    older_than: _duration_pb2.Duration
    newer_than: _duration_pb2.Duration
    def __init__(self, reasons: _Optional[_Iterable[str]] = ..., bluecore_events: _Optional[_Iterable[str]] = ..., older_than: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., newer_than: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ListDeadLettersRequest(_message.Message):
    __slots__ = ("filter", "page_size", "page_token")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    filter: DeadLetterFilter
    page_size: int
    page_token: str
    def __init__(self, filter: _Optional[_Union[DeadLetterFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListDeadLettersResponse(_message.Message):
    __slots__ = ("dead_letters", "next_page_token")
    DEAD_LETTERS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    dead_letters: _containers.RepeatedCompositeFieldContainer[DeadLetter]
    next_page_token: str
    def __init__(self, dead_letters: _Optional[_Iterable[_Union[DeadLetter, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetDeadLetterRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class GetDeadLetterResponse(_message.Message):
    __slots__ = ("dead_letter",)
    DEAD_LETTER_FIELD_NUMBER: _ClassVar[int]
    dead_letter: DeadLetter
    def __init__(self, dead_letter: _Optional[_Union[DeadLetter, _Mapping]] = ...) -> None: ...

class ReplayDeadLettersRequest(_message.Message):
    __slots__ = ("ids", "filter", "all")
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    filter: DeadLetterFilter
    all: bool
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., filter: _Optional[_Union[DeadLetterFilter, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class ReplayDeadLettersResponse(_message.Message):
    __slots__ = ("replayed", "skipped_duplicates")
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    replayed: int
    skipped_duplicates: int
    def __init__(self, replayed: _Optional[int] = ..., skipped_duplicates: _Optional[int] = ...) -> None: ...

class PurgeDeadLettersRequest(_message.Message):
    __slots__ = ("ids", "filter", "all")
    IDS_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    filter: DeadLetterFilter
    all: bool
    def __init__(self, ids: _Optional[_Iterable[int]] = ..., filter: _Optional[_Union[DeadLetterFilter, _Mapping]] = ..., all: _Optional[bool] = ...) -> None: ...

class PurgeDeadLettersResponse(_message.Message):
    __slots__ = ("purged",)
    PURGED_FIELD_NUMBER: _ClassVar[int]
    purged: int
    def __init__(self, purged: _Optional[int] = ...) -> None: ...
