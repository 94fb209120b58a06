import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EmailStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMAIL_STATUS_UNSPECIFIED: _ClassVar[EmailStatus]
    EMAIL_STATUS_SCHEDULED: _ClassVar[EmailStatus]
    EMAIL_STATUS_QUEUED: _ClassVar[EmailStatus]
    EMAIL_STATUS_SENDING: _ClassVar[EmailStatus]
    EMAIL_STATUS_RETRYING: _ClassVar[EmailStatus]
    EMAIL_STATUS_SENT: _ClassVar[EmailStatus]
    EMAIL_STATUS_FAILED: _ClassVar[EmailStatus]
    EMAIL_STATUS_CANCELLED: _ClassVar[EmailStatus]

class AttemptOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ATTEMPT_OUTCOME_UNSPECIFIED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_DELIVERED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_TRANSIENT: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_PERMANENT: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_THROTTLED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_MISCONFIGURED: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_NO_PROVIDER: _ClassVar[AttemptOutcome]
    ATTEMPT_OUTCOME_INTERRUPTED: _ClassVar[AttemptOutcome]
EMAIL_STATUS_UNSPECIFIED: EmailStatus
EMAIL_STATUS_SCHEDULED: EmailStatus
EMAIL_STATUS_QUEUED: EmailStatus
EMAIL_STATUS_SENDING: EmailStatus
EMAIL_STATUS_RETRYING: EmailStatus
EMAIL_STATUS_SENT: EmailStatus
EMAIL_STATUS_FAILED: EmailStatus
EMAIL_STATUS_CANCELLED: EmailStatus
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_DELIVERED: AttemptOutcome
ATTEMPT_OUTCOME_TRANSIENT: AttemptOutcome
ATTEMPT_OUTCOME_PERMANENT: AttemptOutcome
ATTEMPT_OUTCOME_THROTTLED: AttemptOutcome
ATTEMPT_OUTCOME_MISCONFIGURED: AttemptOutcome
ATTEMPT_OUTCOME_NO_PROVIDER: AttemptOutcome
ATTEMPT_OUTCOME_INTERRUPTED: AttemptOutcome

class SendEmailRequest(_message.Message):
    __slots__ = ("to", "cc", "bcc", "title", "content", "html", "from_address", "reply_to", "idempotency_key", "send_at")
    TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    to: _containers.RepeatedScalarFieldContainer[str]
    cc: _containers.RepeatedScalarFieldContainer[str]
    bcc: _containers.RepeatedScalarFieldContainer[str]
    title: str
    content: str
    html: str
    from_address: str
    reply_to: str
    idempotency_key: str
    send_at: _timestamp_pb2.Timestamp
    def __init__(self, to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., html: _Optional[str] = ..., from_address: _Optional[str] = ..., reply_to: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class SendEmailResponse(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetEmailRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class GetEmailResponse(_message.Message):
    __slots__ = ("email",)
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    email: Email
    def __init__(self, email: _Optional[_Union[Email, _Mapping]] = ...) -> None: ...

class CancelEmailRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class CancelEmailResponse(_message.Message):
    __slots__ = ("email",)
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    email: Email
    def __init__(self, email: _Optional[_Union[Email, _Mapping]] = ...) -> None: ...

class Email(_message.Message):
    __slots__ = ("id", "status", "to", "cc", "bcc", "title", "content", "html", "from_address", "reply_to", "message_id", "create_time", "update_time", "send_at", "sent_time", "provider", "provider_message_id", "last_error", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TO_FIELD_NUMBER: _ClassVar[int]
    CC_FIELD_NUMBER: _ClassVar[int]
    BCC_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    HTML_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    SENT_TIME_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: EmailStatus
    to: _containers.RepeatedScalarFieldContainer[str]
    cc: _containers.RepeatedScalarFieldContainer[str]
    bcc: _containers.RepeatedScalarFieldContainer[str]
    title: str
    content: str
    html: str
    from_address: str
    reply_to: str
    message_id: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    send_at: _timestamp_pb2.Timestamp
    sent_time: _timestamp_pb2.Timestamp
    provider: str
    provider_message_id: str
    last_error: str
    attempts: _containers.RepeatedCompositeFieldContainer[Attempt]
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., html: _Optional[str] = ..., from_address: _Optional[str] = ..., reply_to: _Optional[str] = ..., message_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provider: _Optional[str] = ..., provider_message_id: _Optional[str] = ..., last_error: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ...) -> None: ...

class Attempt(_message.Message):
    __slots__ = ("provider", "start_time", "duration", "outcome", "error", "response", "worker")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    provider: str
    start_time: _timestamp_pb2.Timestamp
    duration: _duration_pb2.Duration
    outcome: AttemptOutcome
    error: str
    response: str
    worker: str
    def __init__(self, provider: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., outcome: _Optional[_Union[AttemptOutcome, str]] = ..., error: _Optional[str] = ..., response: _Optional[str] = ..., worker: _Optional[str] = ...) -> None: ...
