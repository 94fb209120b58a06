"""The MailService servicer: validate, store, enqueue, answer.

What SendEmail's answers mean (the README's "What a SendEmail answer means"):

* 201 (OK): the email is stored and will end SENT, FAILED or CANCELLED.
* 500 (INTERNAL): it is not stored, or it is made void: it will never be sent.
* 503 (UNAVAILABLE, :class:`NotAccepted`): the store did not confirm in time. The email is not
  sent unless a retry with the same idempotency key claims it; this process voids it in the
  background once the store answers again.

SendEmailBatch keeps these meanings per email: an email with an id in its result is stored (as
201 above); an email with an error will never be sent (500) or is not accepted (503), and the
call answers OK (HTTP 200, not 201: a 201 would hide the refused emails) when at least one email
is accepted. The valid emails are stored with one bulk write; when its outcome is unknown, each
email is resolved as SendEmail resolves its insert (found: accepted; else voided: 500; else
voided in the background: 503). When no email is accepted the call itself fails (see
:func:`server.batch.refusal`), and nothing of it is sent.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

import grpc
import pymongo
from bson import ObjectId

from core.errors import (
    DuplicateKey,
    MailroomError,
    NotAccepted,
    QueueUnavailable,
    StorageOutcomeUnknown,
    StorageUnavailable,
)
from core.events_out import publish_safely
from core.group_commit import GroupCommit, NotTaken, TakenNoAnswer
from core.queue import DeliveryQueue
from core.settings import Settings
from core.store import idempotency, repository, turns
from core.store.carried import carry
from core.store.documents import delay_ms, utcnow
from mailroom.v1 import mail_pb2, mail_pb2_grpc
from server import batch
from server.backlog import RetryBacklog
from server.convert import email_to_proto
from server.listing import ORIGINAL_PATH_HEADER, list_emails
from server.suppression_check import check_email, to_protos
from server.validation import validate_send_request

log = logging.getLogger(__name__)

W = TypeVar("W")
V = TypeVar("V")

# Envoy's Lua filter turns this initial-metadata marker into the HTTP status (201 Created).
HTTP_STATUS_METADATA = "x-http-status"
IDEMPOTENCY_METADATA = "idempotency-key"

#: The share of the accept budget the insert itself may take; the rest resolves its outcome.
INSERT_SHARE = 0.6
#: Hops along voided ids an idempotent retry follows before giving up.
MAX_VOID_HOPS = 5


def _metadata_value(context: grpc.ServicerContext, key: str) -> str:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return str(value)
    return ""


def _fingerprint(request: mail_pb2.SendEmailRequest) -> str:
    """Hash the payload, minus the key itself, to tell a retry from a different email."""
    payload = mail_pb2.SendEmailRequest()
    payload.CopyFrom(request)
    payload.ClearField("idempotency_key")
    return hashlib.sha256(payload.SerializeToString(deterministic=True)).hexdigest()


def _within(deadline: float, write: Callable[[list[W]], V], items: list[W]) -> V:
    """Run a group's ``write`` under a ``pymongo.timeout`` ending at ``deadline`` (monotonic).

    The write runs in the thread of the call leading the group, whose own ``pymongo.timeout``
    ends first (the leader waited longest) and would bound every call's write: a fresh context
    drops it.
    """

    def bounded() -> V:
        with pymongo.timeout(max(deadline - time.monotonic(), 0.001)):
            return write(items)

    return contextvars.Context().run(bounded)


def successor_id(email_id: ObjectId) -> ObjectId:
    """The id an idempotent retry uses when its key's email was voided.

    Derived, not random, so concurrent retries agree on it; it keeps the voided id's timestamp.
    """
    digest = hashlib.sha256(f"{email_id}:successor".encode()).digest()
    return ObjectId(email_id.binary[:4] + digest[:8])


def not_accepted(email_id: ObjectId | str) -> NotAccepted:
    """The 503 answer: names the id an operator finds CANCELLED ("not accepted"), or nowhere."""
    return NotAccepted(
        f"email {email_id} was not accepted: the store did not confirm it in time, so it will "
        "not be sent; retrying with the same idempotency key is safe"
    )


class MailServicer(mail_pb2_grpc.MailServiceServicer):
    """Implements ``mailroom.v1.MailService``.

    Args:
        settings: The process settings.
        queue: Where delivery messages go.
    """

    def __init__(self, settings: Settings, queue: DeliveryQueue) -> None:
        self._settings = settings
        self._queue = queue
        self.enqueues: RetryBacklog[tuple[str, datetime | None]] = RetryBacklog(
            "enqueue-backlog", self._enqueue_now
        )
        self.voids: RetryBacklog[str] = RetryBacklog("void-backlog", self._void)
        # Concurrent SendEmails share inserts: on FerretDB an insert's cost is mostly per write.
        self._inserts: GroupCommit[tuple[dict[str, object], float], None] = GroupCommit(
            self._insert_emails, max_items=settings.accept_group_max_emails
        )
        # And their idempotency keys (the SDK sends one with every email): one bulk write too.
        self._reservations: GroupCommit[tuple[tuple[str, str, str], float], str | None] = (
            GroupCommit(self._reserve_keys, max_items=settings.accept_group_max_emails)
        )

    def close(self) -> None:
        """Stop the background retries."""
        self.enqueues.close()
        self.voids.close()

    def SendEmail(
        self, request: mail_pb2.SendEmailRequest, context: grpc.ServicerContext
    ) -> mail_pb2.SendEmailResponse:
        """Validate, store and enqueue one email; answer with its id."""
        new = validate_send_request(
            request,
            self._settings,
            idempotency_key=_metadata_value(context, IDEMPOTENCY_METADATA),
        )
        budget = self._settings.accept_timeout_ms / 1000
        deadline = time.monotonic() + budget
        email_id = ObjectId()
        with pymongo.timeout(budget):
            policy = self._settings.suppression_policy
            new, dropped = check_email(new, policy, email_id, self.voids.add, not_accepted)
            replay = False
            stored = None
            if new.idempotency_key:
                existing = self._reserve(
                    new.idempotency_key, _fingerprint(request), email_id, deadline
                )
                if existing is not None:
                    log.info("idempotent retry of key %r → %s", new.idempotency_key, existing)
                    email_id, replay = ObjectId(existing), True
            if replay:
                email_id, enqueue = self._take_over(new, email_id)
            else:
                document = self._insert(new, email_id, deadline, size=request.ByteSize())
                # The worker claims it from this copy instead of reading it back.
                stored = carry(document) if new.send_at is None else None
                enqueue = True
        if enqueue:
            self._enqueue((str(email_id), new.send_at), stored=stored)
        context.send_initial_metadata(((HTTP_STATUS_METADATA, "201"),))
        return mail_pb2.SendEmailResponse(id=str(email_id), dropped_recipients=to_protos(dropped))

    def _document(self, new: repository.NewEmail, email_id: ObjectId) -> dict[str, object]:
        return repository.new_email_document(
            new,
            message_id_domain=self._settings.message_id_domain,
            email_id=email_id,
            now=utcnow(),
        )

    def _insert_emails(
        self, items: list[tuple[dict[str, object], float]]
    ) -> list[MailroomError | None]:
        """A group's email insert (see :meth:`_insert`), bounded by its calls' latest deadline."""
        documents = [document for document, _ in items]
        return _within(max(d for _, d in items), repository.insert_email_group, documents)

    def _reserve_keys(
        self, items: list[tuple[tuple[str, str, str], float]]
    ) -> list[str | MailroomError | None]:
        """A group's key binding (see :meth:`_reserve`), bounded by its calls' latest deadline."""
        ttl = timedelta(hours=self._settings.idempotency_ttl_hours)
        entries = [entry for entry, _ in items]
        return _within(
            max(d for _, d in items),
            lambda e: idempotency.reserve_idempotency_keys(e, ttl=ttl),
            entries,
        )

    def _reserve(
        self, key: str, fingerprint: str, email_id: ObjectId, deadline: float
    ) -> str | None:
        """Bind the key to ``email_id`` (with the concurrent calls' keys); the first id if bound.

        Raises:
            AlreadyExists: The key was used with a different request.
            NotAccepted: The binding's outcome is unknown (503): no email was written; the key
                may now name this id, which a retry then stores.
            StorageUnavailable: Not bound, nothing stored (500).
        """
        share = max(deadline - time.monotonic(), 0.001) * INSERT_SHARE
        entry = (key, fingerprint, str(email_id))
        try:
            return self._reservations.submit((entry, time.monotonic() + share), timeout=share)
        except (StorageOutcomeUnknown, TakenNoAnswer) as exc:
            raise not_accepted(email_id) from exc
        except NotTaken as exc:
            raise StorageUnavailable(
                "storage did not answer in time: the email was not stored"
            ) from exc

    def _insert(
        self, new: repository.NewEmail, email_id: ObjectId, deadline: float, *, size: int
    ) -> dict[str, object]:
        """Insert a new email (with the concurrent ones); resolve an unknown outcome.

        Returns:
            The document stored.

        Raises:
            StorageUnavailable: Not stored, or voided: it will never be sent (500).
            NotAccepted: Neither confirmed nor voided in time (503); voided in the background.
        """
        document = self._document(new, email_id)
        share = max(deadline - time.monotonic(), 0.001) * INSERT_SHARE
        try:
            self._inserts.submit((document, time.monotonic() + share), size=size, timeout=share)
        except DuplicateKey:
            pass  # a driver retry of this very insert, whose first try landed
        except NotTaken as exc:
            log.warning("email %s: the inserts before it did not end in time", email_id)
            raise StorageUnavailable(
                "storage did not answer in time: the email was not stored"
            ) from exc
        except (StorageOutcomeUnknown, TakenNoAnswer):
            self._resolve(str(email_id))
        return document

    def _resolve(self, email_id: str) -> None:
        """The insert may or may not have landed: find it, or void it, within the budget."""
        try:
            if repository.find_email(email_id) is not None:
                log.info("email %s: insert unconfirmed, but it is stored: accepted", email_id)
                return
            if not turns.void_email(email_id):
                return  # an idempotent retry accepted it meanwhile
        except StorageUnavailable as exc:
            self.voids.add(email_id)
            log.warning("email %s: insert unconfirmed; answering 503 and voiding later", email_id)
            raise not_accepted(email_id) from exc
        log.warning("email %s: insert unconfirmed; voided: answering 500", email_id)
        raise StorageUnavailable("storage unavailable: the email was not stored")

    def _take_over(self, new: repository.NewEmail, email_id: ObjectId) -> tuple[ObjectId, bool]:
        """Answer an idempotent retry: the first request's email, made sure to be stored.

        The first request may have been answered 503 and its email voided (or about to be): the
        retry takes the email's first turn as ``accept`` (it wins or loses against the void), or
        follows a void to the successor id.

        Returns:
            The email's id, and whether to enqueue it (this call accepted or stored it).
        """
        for _ in range(MAX_VOID_HOPS):
            accepted = turns.accept_email(str(email_id))
            if accepted is None:
                email_id = successor_id(email_id)
                continue
            try:
                repository.insert_email(self._document(new, email_id))
            except DuplicateKey:
                return email_id, accepted
            return email_id, True
        raise StorageUnavailable(f"email {email_id}: too many voided attempts with this key")

    def _enqueue(self, item: tuple[str, datetime | None], *, stored: str | None = None) -> None:
        try:
            self._enqueue_now(item, stored=stored)
        except QueueUnavailable as exc:
            # The email is stored: enqueue it as soon as Redis answers (the scans are a backstop).
            log.warning("email %s stored but not enqueued yet (retrying): %s", item[0], exc)
            self.enqueues.add(item)

    def _enqueue_many(
        self, items: list[tuple[str, datetime | None]], *, stored: dict[str, str] | None = None
    ) -> None:
        """Enqueue many stored emails in one round trip; on failure, each one as _enqueue does."""
        if not items:
            return
        now = utcnow()
        try:
            self._queue.enqueue_deliveries(
                [(i, delay_ms(send_at, now)) for i, send_at in items], stored=stored
            )
        except QueueUnavailable as exc:
            log.warning("%d stored emails not enqueued yet (retrying): %s", len(items), exc)
            for item in items:
                self.enqueues.add(item)

    def _enqueue_now(self, item: tuple[str, datetime | None], *, stored: str | None = None) -> None:
        email_id, send_at = item
        self._queue.enqueue_delivery(email_id, delay_ms=delay_ms(send_at, utcnow()), stored=stored)

    def _void(self, email_id: str) -> None:
        if turns.void_email(email_id):
            log.info("email %s: voided (its request was answered 503)", email_id)
        else:
            log.info("email %s: an idempotent retry accepted it before the void", email_id)

    def GetEmail(
        self, request: mail_pb2.GetEmailRequest, context: grpc.ServicerContext
    ) -> mail_pb2.GetEmailResponse:
        """Return one email with its status and attempts."""
        return mail_pb2.GetEmailResponse(email=email_to_proto(turns.get_email_as_seen(request.id)))

    def CancelEmail(
        self, request: mail_pb2.CancelEmailRequest, context: grpc.ServicerContext
    ) -> mail_pb2.CancelEmailResponse:
        """Cancel a SCHEDULED or QUEUED email no worker has claimed."""
        email = turns.cancel_email(request.id)
        log.info("email %s cancelled", request.id)
        publish_safely(str(email.id), "email.cancelled", {}, occurred_at=utcnow())
        return mail_pb2.CancelEmailResponse(email=email_to_proto(email))

    def ListEmails(
        self, request: mail_pb2.ListEmailsRequest, context: grpc.ServicerContext
    ) -> mail_pb2.ListEmailsResponse:
        """Return one page of emails, newest first."""
        return list_emails(
            request,
            self._settings,
            original_path=_metadata_value(context, ORIGINAL_PATH_HEADER),
        )

    def SendEmailBatch(
        self, request: mail_pb2.SendEmailBatchRequest, context: grpc.ServicerContext
    ) -> mail_pb2.SendEmailBatchResponse:
        """Validate each email; store the valid ones with one write, enqueue them at once.

        Each email is answered as SendEmail would answer it (its idempotency key is its own
        ``idempotency_key``), in one result per email, in order. The call answers OK (HTTP 200
        through Envoy: no ``x-http-status: 201``, which would hide the refused emails) when at
        least one email is accepted; else the error of :func:`server.batch.refusal`.

        Raises:
            InvalidArgument: The batch is empty or too large (naming ``emails``), or no email
                was accepted and all were refused for their own faults.
            NotAccepted: No email was accepted, and some were not confirmed in time (503).
            StorageUnavailable: No email was accepted, and some were not stored (500).
        """
        batch.check_batch(request, self._settings, _metadata_value(context, IDEMPOTENCY_METADATA))
        items = batch.validate_items(request, self._settings, _fingerprint)
        budget = self._settings.accept_timeout_ms / 1000
        deadline = time.monotonic() + budget
        with pymongo.timeout(budget):
            batch.check_suppressions([i for i in items if i.open], self._settings)
            self._reserve_items([i for i in items if i.open])
            self._take_over_items([i for i in items if i.open and i.replay])
            self._insert_items([i for i in items if i.open and not i.replay], deadline)
        self._enqueue_many(
            [(str(i.email_id), i.new.send_at) for i in items if i.enqueue and i.new is not None],
            stored={str(i.email_id): i.stored for i in items if i.enqueue and i.stored},
        )
        return batch.response(items)

    def _reserve_items(self, items: list[batch.Item]) -> None:
        """Give each email of a batch its id: a new one, or its key's first email's (a replay).

        The keys are bound with one bulk write, each as :meth:`_reserve` binds one.
        """
        for item in items:
            item.email_id = ObjectId()
        keyed = [i for i in items if i.new is not None and i.new.idempotency_key]
        if not keyed:
            return
        entries = [(i.key, i.fingerprint, str(i.email_id)) for i in keyed]
        ttl = timedelta(hours=self._settings.idempotency_ttl_hours)
        try:
            outcomes = idempotency.reserve_idempotency_keys(entries, ttl=ttl)
        except StorageUnavailable as exc:
            outcomes = [exc] * len(keyed)
        for item, outcome in zip(keyed, outcomes, strict=True):
            if isinstance(outcome, StorageOutcomeUnknown):
                # No email was written; the key may now name this id, which a retry then stores.
                item.error = not_accepted(str(item.email_id))
            elif isinstance(outcome, MailroomError):
                item.error = outcome  # AlreadyExists, or StorageUnavailable: nothing stored
            elif outcome is not None:
                log.info("idempotent retry of key %r → %s", item.key, outcome)
                item.email_id, item.replay = ObjectId(outcome), True

    def _take_over_items(self, items: list[batch.Item]) -> None:
        """:meth:`_take_over` for a batch's replays: the accept turns and inserts in bulk."""
        if not items:
            return
        try:
            accepted = turns.accept_emails([str(i.email_id) for i in items])
        except StorageUnavailable as exc:
            for item in items:
                item.error = exc
            return
        taken: list[tuple[batch.Item, bool]] = []
        for item, outcome in zip(items, accepted, strict=True):
            if outcome is None:  # voided: _take_over follows it to its successor
                assert item.new is not None and item.email_id is not None
                try:
                    item.email_id, item.enqueue = self._take_over(item.new, item.email_id)
                except MailroomError as exc:
                    item.error = exc
            else:
                taken.append((item, outcome))
        try:
            stored = repository.insert_emails([self._item_document(i) for i, _ in taken])
        except StorageUnavailable as exc:
            for item, _ in taken:
                item.error = exc
            return
        for index, (item, accepted_here) in enumerate(taken):
            if index in stored.refused:
                item.error = StorageUnavailable("storage unavailable: the email was not stored")
            else:
                # As _take_over: stored by this call, or already there and accepted by it.
                item.enqueue = index not in stored.existing or accepted_here

    def _item_document(self, item: batch.Item) -> dict[str, object]:
        assert item.new is not None and item.email_id is not None  # set by _reserve_items
        return self._document(item.new, item.email_id)

    def _insert_items(self, items: list[batch.Item], deadline: float) -> None:
        """Store a batch's new emails with one bulk write; resolve an unknown outcome per email.

        Each item ends accepted (``enqueue``) or refused with SendEmail's error for the case.
        """
        if not items:
            return
        documents = [self._item_document(item) for item in items]
        try:
            with pymongo.timeout(max(deadline - time.monotonic(), 0.001) * INSERT_SHARE):
                refused = repository.insert_emails(documents).refused
        except StorageOutcomeUnknown:
            for item in items:
                try:
                    self._resolve(str(item.email_id))
                    item.enqueue = True
                except MailroomError as exc:
                    item.error = exc
            return
        except StorageUnavailable as exc:
            for item in items:
                item.error = exc  # certainly not written
            return
        for index, item in enumerate(items):
            if index in refused:
                log.warning("email %s: the store refused its document", item.email_id)
                item.error = StorageUnavailable("storage unavailable: the email was not stored")
            else:
                item.enqueue = True  # stored (an existing _id: a driver retry of this write)
                if item.new is not None and item.new.send_at is None:
                    item.stored = carry(documents[index])
