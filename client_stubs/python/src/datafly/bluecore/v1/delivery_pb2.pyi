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
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: DataflyEvent
    def __init__(self, event: _Optional[_Union[DataflyEvent, _Mapping]] = ...) -> None: ...

class DeliverResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: DeliveryResult
    def __init__(self, result: _Optional[_Union[DeliveryResult, _Mapping]] = ...) -> None: ...

class DeliverBatchRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[DataflyEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[DataflyEvent, _Mapping]]] = ...) -> None: ...

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
