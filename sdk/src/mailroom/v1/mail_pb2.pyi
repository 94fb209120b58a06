import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from mailroom.v1 import suppressions_pb2 as _suppressions_pb2
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
    EMAIL_STATUS_DELIVERED: _ClassVar[EmailStatus]
    EMAIL_STATUS_BOUNCED: _ClassVar[EmailStatus]
    EMAIL_STATUS_COMPLAINED: _ClassVar[EmailStatus]

class EmailEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMAIL_EVENT_TYPE_UNSPECIFIED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_DELIVERED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_DEFERRED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_BOUNCED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_COMPLAINED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_OPENED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_CLICKED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_UNSUBSCRIBED: _ClassVar[EmailEventType]
    EMAIL_EVENT_TYPE_REJECTED: _ClassVar[EmailEventType]

class RecipientStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RECIPIENT_STATUS_UNSPECIFIED: _ClassVar[RecipientStatus]
    RECIPIENT_STATUS_SENT: _ClassVar[RecipientStatus]
    RECIPIENT_STATUS_DEFERRED: _ClassVar[RecipientStatus]
    RECIPIENT_STATUS_DELIVERED: _ClassVar[RecipientStatus]
    RECIPIENT_STATUS_BOUNCED: _ClassVar[RecipientStatus]
    RECIPIENT_STATUS_REJECTED: _ClassVar[RecipientStatus]
    RECIPIENT_STATUS_COMPLAINED: _ClassVar[RecipientStatus]

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

class EmailView(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EMAIL_VIEW_UNSPECIFIED: _ClassVar[EmailView]
    EMAIL_VIEW_BASIC: _ClassVar[EmailView]
    EMAIL_VIEW_FULL: _ClassVar[EmailView]
EMAIL_STATUS_UNSPECIFIED: EmailStatus
EMAIL_STATUS_SCHEDULED: EmailStatus
EMAIL_STATUS_QUEUED: EmailStatus
EMAIL_STATUS_SENDING: EmailStatus
EMAIL_STATUS_RETRYING: EmailStatus
EMAIL_STATUS_SENT: EmailStatus
EMAIL_STATUS_FAILED: EmailStatus
EMAIL_STATUS_CANCELLED: EmailStatus
EMAIL_STATUS_DELIVERED: EmailStatus
EMAIL_STATUS_BOUNCED: EmailStatus
EMAIL_STATUS_COMPLAINED: EmailStatus
EMAIL_EVENT_TYPE_UNSPECIFIED: EmailEventType
EMAIL_EVENT_TYPE_DELIVERED: EmailEventType
EMAIL_EVENT_TYPE_DEFERRED: EmailEventType
EMAIL_EVENT_TYPE_BOUNCED: EmailEventType
EMAIL_EVENT_TYPE_COMPLAINED: EmailEventType
EMAIL_EVENT_TYPE_OPENED: EmailEventType
EMAIL_EVENT_TYPE_CLICKED: EmailEventType
EMAIL_EVENT_TYPE_UNSUBSCRIBED: EmailEventType
EMAIL_EVENT_TYPE_REJECTED: EmailEventType
RECIPIENT_STATUS_UNSPECIFIED: RecipientStatus
RECIPIENT_STATUS_SENT: RecipientStatus
RECIPIENT_STATUS_DEFERRED: RecipientStatus
RECIPIENT_STATUS_DELIVERED: RecipientStatus
RECIPIENT_STATUS_BOUNCED: RecipientStatus
RECIPIENT_STATUS_REJECTED: RecipientStatus
RECIPIENT_STATUS_COMPLAINED: RecipientStatus
ATTEMPT_OUTCOME_UNSPECIFIED: AttemptOutcome
ATTEMPT_OUTCOME_DELIVERED: AttemptOutcome
ATTEMPT_OUTCOME_TRANSIENT: AttemptOutcome
ATTEMPT_OUTCOME_PERMANENT: AttemptOutcome
ATTEMPT_OUTCOME_THROTTLED: AttemptOutcome
ATTEMPT_OUTCOME_MISCONFIGURED: AttemptOutcome
ATTEMPT_OUTCOME_NO_PROVIDER: AttemptOutcome
ATTEMPT_OUTCOME_INTERRUPTED: AttemptOutcome
EMAIL_VIEW_UNSPECIFIED: EmailView
EMAIL_VIEW_BASIC: EmailView
EMAIL_VIEW_FULL: EmailView

class Attachment(_message.Message):
    __slots__ = ("filename", "content_type", "content", "content_id", "size")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    content_type: str
    content: bytes
    content_id: str
    size: int
    def __init__(self, filename: _Optional[str] = ..., content_type: _Optional[str] = ..., content: _Optional[bytes] = ..., content_id: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class SendEmailRequest(_message.Message):
    __slots__ = ("to", "cc", "bcc", "title", "content", "html", "from_address", "reply_to", "idempotency_key", "send_at", "attachments", "headers", "tags", "metadata")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
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
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
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
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    headers: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., html: _Optional[str] = ..., from_address: _Optional[str] = ..., reply_to: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., headers: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SendEmailResponse(_message.Message):
    __slots__ = ("id", "dropped_recipients")
    ID_FIELD_NUMBER: _ClassVar[int]
    DROPPED_RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    dropped_recipients: _containers.RepeatedCompositeFieldContainer[_suppressions_pb2.DroppedRecipient]
    def __init__(self, id: _Optional[str] = ..., dropped_recipients: _Optional[_Iterable[_Union[_suppressions_pb2.DroppedRecipient, _Mapping]]] = ...) -> None: ...

class SendEmailBatchRequest(_message.Message):
    __slots__ = ("emails",)
    EMAILS_FIELD_NUMBER: _ClassVar[int]
    emails: _containers.RepeatedCompositeFieldContainer[SendEmailRequest]
    def __init__(self, emails: _Optional[_Iterable[_Union[SendEmailRequest, _Mapping]]] = ...) -> None: ...

class SendEmailBatchResult(_message.Message):
    __slots__ = ("id", "error", "dropped_recipients")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DROPPED_RECIPIENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    error: _status_pb2.Status
    dropped_recipients: _containers.RepeatedCompositeFieldContainer[_suppressions_pb2.DroppedRecipient]
    def __init__(self, id: _Optional[str] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., dropped_recipients: _Optional[_Iterable[_Union[_suppressions_pb2.DroppedRecipient, _Mapping]]] = ...) -> None: ...

class SendEmailBatchResponse(_message.Message):
    __slots__ = ("results", "accepted_count", "refused_count")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_COUNT_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[SendEmailBatchResult]
    accepted_count: int
    refused_count: int
    def __init__(self, results: _Optional[_Iterable[_Union[SendEmailBatchResult, _Mapping]]] = ..., accepted_count: _Optional[int] = ..., refused_count: _Optional[int] = ...) -> None: ...

class ListEmailsRequest(_message.Message):
    __slots__ = ("status", "recipient", "tag", "metadata", "provider", "created_after", "created_before", "idempotency_key", "page_size", "page_token", "view")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIEW_FIELD_NUMBER: _ClassVar[int]
    status: _containers.RepeatedScalarFieldContainer[EmailStatus]
    recipient: str
    tag: str
    metadata: _containers.ScalarMap[str, str]
    provider: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    idempotency_key: str
    page_size: int
    page_token: str
    view: EmailView
    def __init__(self, status: _Optional[_Iterable[_Union[EmailStatus, str]]] = ..., recipient: _Optional[str] = ..., tag: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., provider: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., idempotency_key: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., view: _Optional[_Union[EmailView, str]] = ...) -> None: ...

class ListEmailsResponse(_message.Message):
    __slots__ = ("emails", "next_page_token")
    EMAILS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    emails: _containers.RepeatedCompositeFieldContainer[Email]
    next_page_token: str
    def __init__(self, emails: _Optional[_Iterable[_Union[Email, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("id", "status", "to", "cc", "bcc", "title", "content", "html", "from_address", "reply_to", "message_id", "create_time", "update_time", "send_at", "sent_time", "provider", "provider_message_id", "last_error", "attempts", "attachments", "headers", "tags", "metadata", "purge_time", "events", "recipient_statuses")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
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
    ATTACHMENTS_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PURGE_TIME_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_STATUSES_FIELD_NUMBER: _ClassVar[int]
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
    attachments: _containers.RepeatedCompositeFieldContainer[Attachment]
    headers: _containers.ScalarMap[str, str]
    tags: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    purge_time: _timestamp_pb2.Timestamp
    events: _containers.RepeatedCompositeFieldContainer[EmailEvent]
    recipient_statuses: _containers.RepeatedCompositeFieldContainer[RecipientSummary]
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[EmailStatus, str]] = ..., to: _Optional[_Iterable[str]] = ..., cc: _Optional[_Iterable[str]] = ..., bcc: _Optional[_Iterable[str]] = ..., title: _Optional[str] = ..., content: _Optional[str] = ..., html: _Optional[str] = ..., from_address: _Optional[str] = ..., reply_to: _Optional[str] = ..., message_id: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sent_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provider: _Optional[str] = ..., provider_message_id: _Optional[str] = ..., last_error: _Optional[str] = ..., attempts: _Optional[_Iterable[_Union[Attempt, _Mapping]]] = ..., attachments: _Optional[_Iterable[_Union[Attachment, _Mapping]]] = ..., headers: _Optional[_Mapping[str, str]] = ..., tags: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., purge_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events: _Optional[_Iterable[_Union[EmailEvent, _Mapping]]] = ..., recipient_statuses: _Optional[_Iterable[_Union[RecipientSummary, _Mapping]]] = ...) -> None: ...

class EmailEvent(_message.Message):
    __slots__ = ("id", "type", "provider", "recipient", "time", "bounce_type", "diagnostic_code", "description", "url")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    RECIPIENT_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    BOUNCE_TYPE_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTIC_CODE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: EmailEventType
    provider: str
    recipient: str
    time: _timestamp_pb2.Timestamp
    bounce_type: str
    diagnostic_code: str
    description: str
    url: str
    def __init__(self, id: _Optional[str] = ..., type: _Optional[_Union[EmailEventType, str]] = ..., provider: _Optional[str] = ..., recipient: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bounce_type: _Optional[str] = ..., diagnostic_code: _Optional[str] = ..., description: _Optional[str] = ..., url: _Optional[str] = ...) -> None: ...

class RecipientSummary(_message.Message):
    __slots__ = ("address", "status", "update_time", "diagnostic_code")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DIAGNOSTIC_CODE_FIELD_NUMBER: _ClassVar[int]
    address: str
    status: RecipientStatus
    update_time: _timestamp_pb2.Timestamp
    diagnostic_code: str
    def __init__(self, address: _Optional[str] = ..., status: _Optional[_Union[RecipientStatus, str]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., diagnostic_code: _Optional[str] = ...) -> None: ...

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
