"""An in-process fake of MailService on 127.0.0.1 for the SDK's client tests (no API, no store).

It validates like the real service (BadRequest details, `emails[i].` prefixes in batches),
honours idempotency keys, pages newest first with opaque tokens, and can be told to fail the
next calls with a status, so retries, metadata and error mapping are checked on the wire.
"""

from __future__ import annotations

import threading
import uuid
from concurrent import futures

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from mailroom.v1 import mail_pb2, mail_pb2_grpc

MiB = 1024 * 1024


def _bad_request(
    violations: list[error_details_pb2.BadRequest.FieldViolation],
) -> status_pb2.Status:
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.BadRequest(field_violations=violations))
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message="invalid request", details=[detail]
    )


class FakeMailService(mail_pb2_grpc.MailServiceServicer):
    """An in-memory MailService; emails turn SENT after ``polls_until_sent`` GetEmail calls."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.emails: dict[str, mail_pb2.Email] = {}
        self.polls: dict[str, int] = {}
        self.by_key: dict[str, str] = {}
        self.calls: list[tuple[str, object, dict[str, str]]] = []
        self.fail_next: list[grpc.StatusCode] = []
        self.polls_until_sent: int | None = 1

    def _record(self, method, request, context) -> None:
        with self.lock:
            metadata = {k: v for k, v in context.invocation_metadata()}
            self.calls.append((method, request, metadata))
            code = self.fail_next.pop(0) if self.fail_next else None
        if code is not None:
            context.abort(code, f"injected {code.name}")

    def calls_of(self, method):
        return [c for c in self.calls if c[0] == method]

    @staticmethod
    def _violations(request, prefix=""):
        return [
            error_details_pb2.BadRequest.FieldViolation(
                field=f"{prefix}to[{i}]", description="not an email address"
            )
            for i, address in enumerate(request.to)
            if "@" not in address
        ]

    def _accept(self, request) -> str:
        with self.lock:
            if request.idempotency_key in self.by_key:
                return self.by_key[request.idempotency_key]
            email_id = uuid.uuid4().hex
            self.by_key[request.idempotency_key] = email_id
            self.emails[email_id] = mail_pb2.Email(
                id=email_id,
                status=mail_pb2.EMAIL_STATUS_QUEUED,
                to=request.to,
                title=request.title,
                content=request.content,
                html=request.html,
                attachments=[
                    mail_pb2.Attachment(
                        filename=a.filename,
                        content_type=a.content_type or "application/octet-stream",
                        content=a.content,
                        content_id=a.content_id,
                        size=len(a.content),
                    )
                    for a in request.attachments
                ],
                headers=request.headers,
                tags=request.tags,
                metadata=request.metadata,
            )
            self.polls[email_id] = 0
            return email_id

    def SendEmail(self, request, context):
        self._record("SendEmail", request, context)
        bad = self._violations(request)
        if bad:
            context.abort_with_status(rpc_status.to_status(_bad_request(bad)))
        return mail_pb2.SendEmailResponse(id=self._accept(request))

    def SendEmailBatch(self, request, context):
        self._record("SendEmailBatch", request, context)
        if not request.emails:
            empty = error_details_pb2.BadRequest.FieldViolation(field="emails", description="empty")
            context.abort_with_status(rpc_status.to_status(_bad_request([empty])))
        response = mail_pb2.SendEmailBatchResponse()
        every = []
        for index, item in enumerate(request.emails):
            bad = self._violations(item, prefix=f"emails[{index}].")
            every.extend(bad)
            if bad:
                response.results.add(error=_bad_request(bad))
                response.refused_count += 1
            else:
                response.results.add(id=self._accept(item))
                response.accepted_count += 1
        if not response.accepted_count:
            context.abort_with_status(rpc_status.to_status(_bad_request(every)))
        return response

    def ListEmails(self, request, context):
        self._record("ListEmails", request, context)
        with self.lock:
            emails = list(reversed(self.emails.values()))  # newest first
        if request.tag:
            emails = [e for e in emails if request.tag in e.tags]
        if request.status:
            emails = [e for e in emails if e.status in request.status]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = emails[start : start + size]
        response = mail_pb2.ListEmailsResponse()
        for email in page:
            listed = response.emails.add()
            listed.CopyFrom(email)
            if request.view != mail_pb2.EMAIL_VIEW_FULL:
                listed.content = ""
                listed.html = ""
                listed.ClearField("headers")
                for attachment in listed.attachments:
                    attachment.content = b""
        if start + size < len(emails):
            response.next_page_token = str(start + size)
        return response

    def GetEmail(self, request, context):
        self._record("GetEmail", request, context)
        with self.lock:
            email = self.emails.get(request.id)
            if email is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no email {request.id}")
            self.polls[request.id] += 1
            if (
                self.polls_until_sent is not None
                and self.polls[request.id] >= self.polls_until_sent
                and email.status == mail_pb2.EMAIL_STATUS_QUEUED
            ):
                email.status = mail_pb2.EMAIL_STATUS_SENT
            return mail_pb2.GetEmailResponse(email=email)

    def CancelEmail(self, request, context):
        self._record("CancelEmail", request, context)
        with self.lock:
            email = self.emails.get(request.id)
            if email is None:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no email {request.id}")
            if email.status != mail_pb2.EMAIL_STATUS_QUEUED:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, "email is not cancellable")
            email.status = mail_pb2.EMAIL_STATUS_CANCELLED
            return mail_pb2.CancelEmailResponse(email=email)


class FakeServer:
    """The fake service on a port of 127.0.0.1 that survives ``stop()``/``start()``."""

    def __init__(self, credentials: grpc.ServerCredentials | None = None) -> None:
        self.service = FakeMailService()
        self.credentials = credentials
        self.port = 0
        self._server: grpc.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeServer:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_receive_message_length", 32 * MiB), ("grpc.so_reuseport", 0)],
        )
        mail_pb2_grpc.add_MailServiceServicer_to_server(self.service, server)
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            self.port = server.add_insecure_port(address)
        else:
            self.port = server.add_secure_port(address, self.credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(None).wait()
            self._server = None
