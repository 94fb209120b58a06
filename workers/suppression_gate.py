"""Send-time suppression: an address suppressed after its email was accepted is not sent to.

SendEmail checks the suppression list when it accepts an email (``server/suppression_check``).
An email sent much later (scheduled, retried, held up by a backlog) may meet a suppression added
since, say the hard bounce of another email. So before a provider gets it, an email accepted more
than ``MAILROOM_SUPPRESSION_RECHECK_SECONDS`` ago is checked again, with the same policy: its
suppressed recipients are left out, or it fails at once (PERMANENT, not retried) when no ``to``
recipient remains (``drop``) or any recipient is suppressed (``refuse``). Emails sent soon after
they were accepted skip the read: the accept-time check covers them, and the delivery path keeps
its round trips.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import datetime, timedelta

from core.settings import Settings
from core.store.documents import Email
from core.store.suppressions import suppressed_among
from workers.mta.base import OutgoingEmail, PermanentError

log = logging.getLogger(__name__)

#: What the attempt of an email failed by the list names as its provider.
SUPPRESSION = "suppression"


def recheck_due(email: Email, settings: Settings, now: datetime) -> bool:
    """Whether the email was accepted long enough ago to be checked again."""
    accepted = email.created_at or now
    return now - accepted >= timedelta(seconds=settings.suppression_recheck_seconds)


def without_suppressed(
    email: Email, outgoing: OutgoingEmail, settings: Settings, now: datetime
) -> OutgoingEmail:
    """The outgoing email without the recipients suppressed since it was accepted.

    The MIME headers stay as accepted (the email was addressed so); only the envelope and the
    providers' recipient lists lose the suppressed addresses.

    Raises:
        PermanentError: The policy refuses the email (see the module).
        StorageUnavailable: The list could not be read; the attempt is retried.
    """
    if not recheck_due(email, settings, now):
        return outgoing
    lists = {"to": outgoing.to, "cc": outgoing.cc, "bcc": outgoing.bcc}
    suppressed = suppressed_among([a for addresses in lists.values() for a in addresses])
    if not suppressed:
        return outgoing
    dropped = [
        f"{name}[{i}] {address} ({suppressed[address]})"
        for name, addresses in lists.items()
        for i, address in enumerate(addresses)
        if address in suppressed
    ]
    kept = {name: tuple(a for a in lists[name] if a not in suppressed) for name in lists}
    if settings.suppression_policy == "refuse" or not kept["to"]:
        raise PermanentError(f"suppressed since accepted: {', '.join(dropped)}")
    log.info("email %s: left out, suppressed since accepted: %s", email.id, ", ".join(dropped))
    return replace(outgoing, to=kept["to"], cc=kept["cc"], bcc=kept["bcc"])
