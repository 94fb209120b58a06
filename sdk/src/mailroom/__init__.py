"""Python client for the Mailroom transactional email service.

Example:
    >>> from mailroom import MailroomClient
    >>> with MailroomClient.from_env() as client:
    ...     email_id = client.send_email(["alice@example.com"], "Hello", "Hi Alice!")
    ...     print(client.wait_for_delivery(email_id, timeout=60).status.name)
    SENT

:class:`MailroomClient` blocks; :class:`AsyncMailroomClient` is its asyncio twin. Failures raise
:class:`MailroomError` subclasses (see :mod:`mailroom.errors`). The generated protobuf and gRPC
stubs ship as :mod:`mailroom.v1`.
"""

from mailroom._channel import DEFAULT_TARGET, DEFAULT_TIMEOUT, MAX_MESSAGE_BYTES, RetryPolicy
from mailroom._version import __version__ as __version__
from mailroom.aio import AsyncMailroomClient
from mailroom.client import MailroomClient
from mailroom.email_events import EmailEvent, EmailEventType, RecipientState, RecipientSummary
from mailroom.errors import (
    Aborted,
    AlreadyExists,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    DeliveryTimeout,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    MailroomError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
    error_class_for,
    error_from_rpc,
    error_from_status,
)
from mailroom.models import (
    Attempt,
    AttemptOutcome,
    BatchResponse,
    BatchResult,
    Email,
    EmailFilters,
    EmailPage,
    EmailStatus,
)
from mailroom.outgoing import Attachment, OutgoingEmail
from mailroom.suppressions import (
    DroppedRecipient,
    Suppression,
    SuppressionPage,
    SuppressionReason,
)
from mailroom.webhook_management import (
    CreatedWebhook,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookDeliveryState,
)
from mailroom.webhooks import WebhookVerificationError, sign_webhook, verify_webhook

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "Aborted",
    "AlreadyExists",
    "AsyncMailroomClient",
    "Attachment",
    "Attempt",
    "AttemptOutcome",
    "BatchResponse",
    "BatchResult",
    "Cancelled",
    "CreatedWebhook",
    "DataLoss",
    "DeadlineExceeded",
    "DeliveryTimeout",
    "DroppedRecipient",
    "Email",
    "EmailEvent",
    "EmailEventType",
    "EmailFilters",
    "EmailPage",
    "EmailStatus",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "MailroomClient",
    "MailroomError",
    "NotFound",
    "OutOfRange",
    "OutgoingEmail",
    "PermissionDenied",
    "RecipientState",
    "RecipientSummary",
    "ResourceExhausted",
    "RetryPolicy",
    "Suppression",
    "SuppressionPage",
    "SuppressionReason",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "Unknown",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookDeliveryPage",
    "WebhookDeliveryState",
    "WebhookVerificationError",
    "error_class_for",
    "error_from_rpc",
    "error_from_status",
    "sign_webhook",
    "verify_webhook",
]
