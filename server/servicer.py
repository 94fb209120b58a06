"""The MailService servicer: validate, store, enqueue, answer."""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

import grpc
from bson import ObjectId

from mailroom.v1 import mail_pb2, mail_pb2_grpc
from server.convert import email_to_proto
from server.errors import QueueUnavailable
from server.queue import DeliveryQueue
from server.settings import Settings
from server.store import idempotency, repository
from server.store.documents import Status, utcnow
from server.validation import validate_send_request

log = logging.getLogger(__name__)

# Envoy's Lua filter turns this initial-metadata marker into the HTTP status (201 Created).
HTTP_STATUS_METADATA = "x-http-status"
IDEMPOTENCY_METADATA = "idempotency-key"


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


class MailServicer(mail_pb2_grpc.MailServiceServicer):
    """Implements ``mailroom.v1.MailService``.

    Args:
        settings: The process settings.
        queue: Where delivery messages go.
    """

    def __init__(self, settings: Settings, queue: DeliveryQueue) -> None:
        self._settings = settings
        self._queue = queue

    def SendEmail(
        self, request: mail_pb2.SendEmailRequest, context: grpc.ServicerContext
    ) -> mail_pb2.SendEmailResponse:
        """Validate, store and enqueue one email; answer with its id."""
        new = validate_send_request(
            request,
            self._settings,
            idempotency_key=_metadata_value(context, IDEMPOTENCY_METADATA),
        )
        email_id = ObjectId()
        if new.idempotency_key:
            existing = idempotency.reserve_idempotency_key(
                new.idempotency_key,
                _fingerprint(request),
                str(email_id),
                ttl=timedelta(hours=self._settings.idempotency_ttl_hours),
            )
            if existing is not None:
                log.info("idempotent replay of key %r → %s", new.idempotency_key, existing)
                email_id = ObjectId(existing)
        # The key stays bound even if this insert fails or times out: a retry with the same key
        # and payload (same fingerprint) stores the email under the reserved id if it is not
        # there yet, so an answered id always names a stored email, and never two.
        email = repository.ensure_email(
            new, message_id_domain=self._settings.message_id_domain, email_id=email_id
        )
        if email.created:
            self._enqueue(email.id, email.status, email.send_at)
        context.send_initial_metadata(((HTTP_STATUS_METADATA, "201"),))
        return mail_pb2.SendEmailResponse(id=email.id)

    def _enqueue(self, email_id: str, status: str, send_at: datetime | None) -> None:
        delay_ms: int | None = None
        if status == Status.SCHEDULED and send_at is not None:
            delay = send_at - utcnow()
            delay_ms = max(0, int(delay.total_seconds() * 1000))
        try:
            self._queue.enqueue_delivery(email_id, delay_ms=delay_ms)
        except QueueUnavailable as exc:
            # The email is stored and stays QUEUED; the periodic rescan will enqueue it.
            log.warning("email %s stored but not enqueued (rescan will retry): %s", email_id, exc)

    def GetEmail(
        self, request: mail_pb2.GetEmailRequest, context: grpc.ServicerContext
    ) -> mail_pb2.GetEmailResponse:
        """Return one email with its status and attempts."""
        return mail_pb2.GetEmailResponse(email=email_to_proto(repository.get_email(request.id)))

    def CancelEmail(
        self, request: mail_pb2.CancelEmailRequest, context: grpc.ServicerContext
    ) -> mail_pb2.CancelEmailResponse:
        """Cancel a SCHEDULED or QUEUED email no worker has claimed."""
        email = repository.cancel_email(request.id)
        log.info("email %s cancelled", request.id)
        return mail_pb2.CancelEmailResponse(email=email_to_proto(email))
