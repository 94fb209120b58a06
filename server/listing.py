"""ListEmails: filters, pages and views over the stored emails."""

from __future__ import annotations

from core.settings import Settings
from mailroom.v1 import mail_pb2


def list_emails(
    request: mail_pb2.ListEmailsRequest, settings: Settings
) -> mail_pb2.ListEmailsResponse:
    """Return one page of emails, newest first."""
    raise NotImplementedError  # TODO(listing helper)
