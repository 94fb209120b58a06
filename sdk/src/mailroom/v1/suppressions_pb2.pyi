import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SuppressionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SUPPRESSION_REASON_UNSPECIFIED: _ClassVar[SuppressionReason]
    SUPPRESSION_REASON_HARD_BOUNCE: _ClassVar[SuppressionReason]
    SUPPRESSION_REASON_COMPLAINT: _ClassVar[SuppressionReason]
    SUPPRESSION_REASON_MANUAL: _ClassVar[SuppressionReason]
    SUPPRESSION_REASON_UNSUBSCRIBE: _ClassVar[SuppressionReason]
SUPPRESSION_REASON_UNSPECIFIED: SuppressionReason
SUPPRESSION_REASON_HARD_BOUNCE: SuppressionReason
SUPPRESSION_REASON_COMPLAINT: SuppressionReason
SUPPRESSION_REASON_MANUAL: SuppressionReason
SUPPRESSION_REASON_UNSUBSCRIBE: SuppressionReason

class Suppression(_message.Message):
    __slots__ = ("address", "reason", "provider", "event_id", "create_time")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    address: str
    reason: SuppressionReason
    provider: str
    event_id: str
    create_time: _timestamp_pb2.Timestamp
    def __init__(self, address: _Optional[str] = ..., reason: _Optional[_Union[SuppressionReason, str]] = ..., provider: _Optional[str] = ..., event_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DroppedRecipient(_message.Message):
    __slots__ = ("field", "address", "reason")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    field: str
    address: str
    reason: SuppressionReason
    def __init__(self, field: _Optional[str] = ..., address: _Optional[str] = ..., reason: _Optional[_Union[SuppressionReason, str]] = ...) -> None: ...

class ListSuppressionsRequest(_message.Message):
    __slots__ = ("reason", "page_size", "page_token")
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    reason: SuppressionReason
    page_size: int
    page_token: str
    def __init__(self, reason: _Optional[_Union[SuppressionReason, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListSuppressionsResponse(_message.Message):
    __slots__ = ("suppressions", "next_page_token")
    SUPPRESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    suppressions: _containers.RepeatedCompositeFieldContainer[Suppression]
    next_page_token: str
    def __init__(self, suppressions: _Optional[_Iterable[_Union[Suppression, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class AddSuppressionRequest(_message.Message):
    __slots__ = ("address", "reason")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    address: str
    reason: SuppressionReason
    def __init__(self, address: _Optional[str] = ..., reason: _Optional[_Union[SuppressionReason, str]] = ...) -> None: ...

class AddSuppressionResponse(_message.Message):
    __slots__ = ("suppression", "created")
    SUPPRESSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    suppression: Suppression
    created: bool
    def __init__(self, suppression: _Optional[_Union[Suppression, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class RemoveSuppressionRequest(_message.Message):
    __slots__ = ("address",)
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    address: str
    def __init__(self, address: _Optional[str] = ...) -> None: ...

class RemoveSuppressionResponse(_message.Message):
    __slots__ = ("suppression",)
    SUPPRESSION_FIELD_NUMBER: _ClassVar[int]
    suppression: Suppression
    def __init__(self, suppression: _Optional[_Union[Suppression, _Mapping]] = ...) -> None: ...
