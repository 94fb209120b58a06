"""SendEmailBatch's bookkeeping: the batch's limits, one item per email, the answer.

The servicer (:meth:`server.servicer.MailServicer.SendEmailBatch`) stores and enqueues; this
module checks the batch as a whole, validates each email on its own (its violations renamed
``emails[i].<field>``), pairs emails that share an idempotency key, and turns the items'
outcomes into the response or, when no email was accepted, into the call's one error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bson import ObjectId

from core.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    MailroomError,
    NotAccepted,
    PermissionDenied,
    StorageOutcomeUnknown,
    StorageUnavailable,
)
from core.settings import Settings
from core.store.repository import NewEmail
from mailroom.v1 import mail_pb2
from server.interceptors import error_to_status
from server.suppression_check import Dropped, apply_suppression, find_suppressed, to_protos
from server.validation import validate_send_request


@dataclass
class Item:
    """One email of a batch, from validation to its result.

    Attributes:
        index: Its position in the request.
        request: The email as received.
        new: The validated email (None when refused by validation).
        fingerprint: Its payload's hash, set when it has an idempotency key.
        email_id: The id it is stored under (its own new one, or a first request's).
        replay: Its key named an earlier email: that email is the answer (no new email).
        enqueue: This call stored or accepted it: its delivery is enqueued.
        same_as: The earlier item of this batch with the same key and payload, whose outcome
            this one shares.
        error: Why it was refused, as it would be answered to SendEmail (field names and
            messages are given the email's place in the batch by :meth:`named_error`); None
            while it is (or once it is) accepted.
        dropped: Its recipients left out because they are suppressed.
        stored: The email as this call stored it, for its message to carry
            (``core.store.carried``); None when it was not stored by this call's write.
    """

    index: int
    request: mail_pb2.SendEmailRequest
    new: NewEmail | None = None
    fingerprint: str = ""
    email_id: ObjectId | None = None
    replay: bool = False
    enqueue: bool = False
    same_as: Item | None = None
    error: MailroomError | None = None
    dropped: list[Dropped] = field(default_factory=list)
    stored: str | None = None

    @property
    def outcome(self) -> Item:
        """The item whose id or error answers for this one (itself, or its ``same_as``)."""
        return self.same_as.outcome if self.same_as is not None else self

    @property
    def key(self) -> str:
        """Its idempotency key ("" when none, or not validated)."""
        return self.new.idempotency_key if self.new is not None else ""

    @property
    def open(self) -> bool:
        """Validated, not refused yet, and not answered by another item: still to store."""
        return self.new is not None and self.error is None and self.same_as is None

    @property
    def named_error(self) -> MailroomError | None:
        """Why this email was refused, naming its place in the batch; None when accepted."""
        error = self.outcome.error
        if error is None and self.outcome.email_id is None:
            error = StorageUnavailable("the email was not stored")  # not reached: a safe net
        return None if error is None else in_batch(error, self.index)


def in_batch(error: MailroomError, index: int) -> MailroomError:
    """The same error, naming the email's place: ``emails[2].to[0]``, ``emails[2]: ...``."""
    prefix = f"emails[{index}]"
    if isinstance(error, InvalidArgument):
        return InvalidArgument(
            [FieldViolation(f"{prefix}.{v.field}", v.description) for v in error.violations]
        )
    if isinstance(error, PermissionDenied):
        # Its message starts with the refused field ("from: ..."), which keeps its dot.
        return PermissionDenied(f"{prefix}.{error.message}")
    # Every MailroomError but InvalidArgument is made from its message alone.
    return type(error)(f"{prefix}: {error.message}")


def check_batch(request: mail_pb2.SendEmailBatchRequest, settings: Settings, key: str) -> None:
    """Refuse a batch that is empty, too large, or carries a call-wide idempotency key.

    Raises:
        InvalidArgument: Naming ``emails`` (or ``idempotency_key`` for the header).
    """
    count, limit = len(request.emails), settings.max_batch_emails
    if not count:
        raise InvalidArgument([FieldViolation("emails", "at least one email is required")])
    if count > limit:
        raise InvalidArgument(
            [FieldViolation("emails", f"{count} emails; at most {limit} per batch")]
        )
    if key:
        # A key for the whole call would read as "this batch is idempotent": it is not.
        raise InvalidArgument(
            [
                FieldViolation(
                    "idempotency_key",
                    "a batch has no key of its own: set each email's idempotency_key",
                )
            ]
        )


def validate_items(
    request: mail_pb2.SendEmailBatchRequest,
    settings: Settings,
    fingerprint: Callable[[mail_pb2.SendEmailRequest], str],
) -> list[Item]:
    """Validate each email on its own; pair emails of the batch that share a key.

    A later email with an earlier one's key is answered as a retry of it would be: the same
    outcome when the payload is the same, else ALREADY_EXISTS naming the key.
    """
    items: list[Item] = []
    first_with_key: dict[str, Item] = {}
    for index, email in enumerate(request.emails):
        item = Item(index, email)
        items.append(item)
        try:
            item.new = validate_send_request(email, settings)
        except (InvalidArgument, PermissionDenied) as exc:
            item.error = exc
            continue
        key = item.new.idempotency_key
        if not key:
            continue
        item.fingerprint = fingerprint(email)
        first = first_with_key.setdefault(key, item)
        if first is item:
            continue
        if first.fingerprint == item.fingerprint:
            item.same_as = first
        else:
            # The words of core.store.idempotency's refusal, as SendEmail answers it.
            item.error = AlreadyExists(
                f"idempotency key {key!r} was already used with a different request"
            )
    return items


def check_suppressions(items: list[Item], settings: Settings) -> None:
    """Drop the suppressed recipients of the validated items, or refuse items: one lookup.

    Raises:
        NotAccepted: The store did not answer the lookup in time: nothing was written, so
            retrying the batch is safe.
    """
    try:
        suppressed = find_suppressed(i.new for i in items if i.new is not None)
    except StorageOutcomeUnknown as exc:
        raise NotAccepted(
            "no email of the batch was accepted: the store did not answer in time, so none "
            "will be sent; retrying with the same idempotency keys is safe"
        ) from exc
    for item in items:
        if item.new is None:
            continue
        try:
            item.new, item.dropped = apply_suppression(
                item.new, suppressed, settings.suppression_policy
            )
        except InvalidArgument as exc:
            item.error = exc


def _as_violations(error: MailroomError) -> list[FieldViolation]:
    """A refused email's reasons as field violations (already named ``emails[i]...``)."""
    if isinstance(error, InvalidArgument):
        return list(error.violations)
    field, _, description = error.message.partition(": ")
    if isinstance(error, AlreadyExists):
        field += ".idempotency_key"
    return [FieldViolation(field, description or error.message)]


def refusal(items: list[Item]) -> MailroomError:
    """The call's error when no email was accepted.

    Storage failures win over the emails' own faults, so that the status says what to do:
    503 (a NotAccepted email: not accepted, retrying is safe), else 500 (not stored, never
    sent); otherwise 400 with every email's violations.
    """
    errors = [e for e in (item.named_error for item in items) if e is not None]
    for kind in (NotAccepted, StorageUnavailable):
        failed = [e for e in errors if isinstance(e, kind)]
        if failed:
            summary = "; ".join(e.message for e in failed[:3])
            more = f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""
            return kind(f"no email of the batch was accepted: {summary}{more}")
    return InvalidArgument([v for e in errors for v in _as_violations(e)])


def response(items: list[Item]) -> mail_pb2.SendEmailBatchResponse:
    """One result per email, in order, with the counts.

    Raises:
        MailroomError: No email was accepted (see :func:`refusal`).
    """
    results = []
    for item in items:
        error = item.named_error
        if error is None:
            results.append(
                mail_pb2.SendEmailBatchResult(
                    id=str(item.outcome.email_id),
                    dropped_recipients=to_protos(item.outcome.dropped),
                )
            )
        else:
            results.append(mail_pb2.SendEmailBatchResult(error=error_to_status(error)))
    accepted = sum(1 for r in results if r.id)
    if not accepted:
        raise refusal(items)
    return mail_pb2.SendEmailBatchResponse(
        results=results, accepted_count=accepted, refused_count=len(results) - accepted
    )
