"""ListEmails: filters, pages and views over the stored emails.

``page_size`` 0 means the default (50); above 500 it is clamped to 500 (AIP-158: a client asking
for more gets the most the service gives, and pages on with the token); below 0 it is refused.
The page token is opaque and bound to the filters it was made with (see
:mod:`core.store.listing`): used with other filters, or altered, it is refused as
INVALID_ARGUMENT naming ``page_token``.

Envoy's gRPC-JSON transcoder binds no map field from a query string (grpc-httpjson-transcoding
issue 37): ``metadata.plan=pro`` would be dropped as an unknown parameter, and the filter
silently ignored. The transcoder passes the original path and query to the API as the
``x-envoy-original-path`` header, so the REST metadata filter is read from there.

A ``status`` filter matches the status GetEmail shows. SENDING is not stored: a worker's claim
is a turn with a lease and does not write the email (see :mod:`core.store.sending`), so
``status=SENDING`` lists the emails a live claim holds, ``status=QUEUED`` (RETRYING, SCHEDULED)
leaves them out, and every listed email held by a claim shows SENDING.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from core.errors import FieldViolation, InvalidArgument
from core.settings import Settings
from core.store.documents import Status
from core.store.listing import EmailFilter, list_page
from mailroom.v1 import mail_pb2
from server.convert import email_to_proto

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_STATUS_PREFIX = "EMAIL_STATUS_"
#: The header Envoy's transcoder sets to the REST request's path and query.
ORIGINAL_PATH_HEADER = "x-envoy-original-path"
_METADATA_PARAM = "metadata."


def _status(value: int, field: str, violations: list[FieldViolation]) -> str:
    """The stored status of one ``status`` filter value (an enum number)."""
    try:
        name = mail_pb2.EmailStatus.Name(value)
    except ValueError:
        name = ""
    stored = name.removeprefix(_STATUS_PREFIX)
    if stored not in Status.__members__:
        violations.append(FieldViolation(field, "not an email status"))
        return ""
    return stored


def _time(request: mail_pb2.ListEmailsRequest, field: str) -> datetime | None:
    """A Timestamp field as a naive UTC datetime (as stored), None when unset."""
    if not request.HasField(field):
        return None
    ts: Timestamp = getattr(request, field)
    # BSON keeps milliseconds: a bound of finer precision compares as the stored values do.
    return ts.ToDatetime(tzinfo=UTC).replace(tzinfo=None)


def query_metadata(original_path: str, violations: list[FieldViolation]) -> dict[str, str]:
    """The ``metadata.<key>=<value>`` parameters of a REST request's query string."""
    query = urllib.parse.urlsplit(original_path).query
    pairs: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if not name.startswith(_METADATA_PARAM):
            continue
        key = name.removeprefix(_METADATA_PARAM)
        if key in pairs and pairs[key] != value:
            # A map holds one value per key: no email could match both.
            violations.append(FieldViolation(name, "given twice with different values"))
        pairs[key] = value
    return pairs


def parse_request(
    request: mail_pb2.ListEmailsRequest, original_path: str = ""
) -> tuple[EmailFilter, int]:
    """Return the request's filter and its effective page size.

    Args:
        request: The request.
        original_path: The REST path and query when the call came through Envoy (its
            ``metadata.<key>`` parameters fill the metadata filter), else empty.

    Raises:
        InvalidArgument: A bad filter or page size, each named (``status[1]``, ``page_size``).
    """
    violations: list[FieldViolation] = []
    metadata = dict(request.metadata)
    if original_path:
        metadata.update(query_metadata(original_path, violations))
    statuses = [_status(s, f"status[{i}]", violations) for i, s in enumerate(request.status)]
    created_after = _time(request, "created_after")
    created_before = _time(request, "created_before")
    if created_after and created_before and created_before <= created_after:
        violations.append(FieldViolation("created_before", "must be later than created_after"))
    for key in metadata:
        if not key:
            violations.append(FieldViolation("metadata", "keys must not be empty"))
    if request.page_size < 0:
        violations.append(FieldViolation("page_size", "must not be negative"))
    if violations:
        raise InvalidArgument(violations)
    email_filter = EmailFilter.of(
        statuses=statuses,
        recipient=request.recipient,
        tag=request.tag,
        metadata=metadata,
        provider=request.provider,
        created_after=created_after,
        created_before=created_before,
        idempotency_key=request.idempotency_key,
    )
    page_size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    return email_filter, page_size


def list_emails(
    request: mail_pb2.ListEmailsRequest, settings: Settings, *, original_path: str = ""
) -> mail_pb2.ListEmailsResponse:
    """Return one page of emails, newest first.

    Args:
        request: The request.
        settings: The server's settings.
        original_path: The ``x-envoy-original-path`` of a REST call (see the module's notes).

    Raises:
        InvalidArgument: A bad filter, page size or page token.
        StorageUnavailable: MongoDB is unreachable.
    """
    email_filter, page_size = parse_request(request, original_path)
    full = request.view == mail_pb2.EMAIL_VIEW_FULL
    page = list_page(email_filter, page_size=page_size, page_token=request.page_token, full=full)
    return mail_pb2.ListEmailsResponse(
        emails=[email_to_proto(email, full=full) for email in page.emails],
        next_page_token=page.next_page_token,
    )
