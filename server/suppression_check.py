"""SendEmail's suppression check: suppressed recipients are dropped and reported, or refused.

Checked when an email is accepted, before anything is stored, so it applies whichever provider
later sends it. Answered from the API process's snapshot of the list
(``server/suppression_snapshot.py``), or looked up in the store while it is not current.

``MAILROOM_SUPPRESSION_POLICY``:

* ``drop`` (default): suppressed recipients are left out of ``to``, ``cc`` and ``bcc`` and
  listed in the answer's ``dropped_recipients`` (field, address, reason). An email needs a
  ``to`` recipient, as validation says: when none remains, the email is refused.
* ``refuse``: any suppressed recipient refuses the email.

A refusal is INVALID_ARGUMENT (HTTP 400) with one violation per suppressed field:
``to[0]: someone@example.com is suppressed (hard_bounce)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import cast

from core.errors import FieldViolation, InvalidArgument, MailroomError, StorageOutcomeUnknown
from core.store.repository import NewEmail
from core.store.suppressions import REASONS, suppressed_among
from mailroom.v1 import suppressions_pb2
from server.suppression_snapshot import installed

_LISTS = ("to", "cc", "bcc")
_REASON_PREFIX = "SUPPRESSION_REASON_"
Reason = suppressions_pb2.SuppressionReason


def reason_name(value: int) -> str | None:
    """The stored reason of an enum value (``hard_bounce``); None for UNSPECIFIED or unknown."""
    try:
        name = Reason.Name(value).removeprefix(_REASON_PREFIX).lower()
    except ValueError:
        return None
    return name if name in REASONS else None


def reason_value(name: str) -> suppressions_pb2.SuppressionReason:
    """The enum value of a stored reason (UNSPECIFIED for one the API does not know)."""
    try:
        value = Reason.Value(_REASON_PREFIX + name.upper())
    except ValueError:
        return Reason.SUPPRESSION_REASON_UNSPECIFIED
    return cast(suppressions_pb2.SuppressionReason, value)


@dataclass(frozen=True)
class Dropped:
    """A recipient left out because it is suppressed: ``to[1]``, its address, the reason."""

    field: str
    address: str
    reason: str

    def to_proto(self) -> suppressions_pb2.DroppedRecipient:
        """The API's message for it."""
        return suppressions_pb2.DroppedRecipient(
            field=self.field, address=self.address, reason=reason_value(self.reason)
        )


def recipients_of(emails: Iterable[NewEmail]) -> list[str]:
    """Every ``to``, ``cc`` and ``bcc`` entry of the emails."""
    return [address for email in emails for name in _LISTS for address in getattr(email, name)]


def find_suppressed(emails: Iterable[NewEmail]) -> dict[str, str]:
    """The suppressed recipients of the emails (as given) and their reasons.

    From this process's snapshot of the list when it is current (a store lookup only for the
    recipients it holds), else looked up in the store.

    Raises:
        StorageUnavailable: MongoDB is unreachable.
    """
    snapshot = installed()
    if snapshot is not None and snapshot.current():
        return snapshot.suppressed_among(recipients_of(emails))
    return suppressed_among(recipients_of(emails))


def apply_suppression(
    email: NewEmail, suppressed: dict[str, str], policy: str
) -> tuple[NewEmail, list[Dropped]]:
    """Leave the suppressed recipients out of ``email``, or refuse it (see the module).

    Args:
        email: The validated email.
        suppressed: :func:`find_suppressed`'s answer (it may cover other emails too).
        policy: ``drop`` or ``refuse``.

    Returns:
        The email to store (the same one when nothing is suppressed) and what was dropped.

    Raises:
        InvalidArgument: Naming each suppressed field, when the email is refused.
    """
    if not suppressed:
        return email, []
    dropped: list[Dropped] = []
    kept: dict[str, list[str]] = {}
    for name in _LISTS:
        kept[name] = []
        for index, address in enumerate(getattr(email, name)):
            reason = suppressed.get(address)
            if reason is None:
                kept[name].append(address)
            else:
                dropped.append(Dropped(f"{name}[{index}]", address, reason))
    if not dropped:
        return email, []
    if policy == "refuse" or not kept["to"]:
        why = "" if policy == "refuse" else "; no `to` recipient remains"
        raise InvalidArgument(
            [
                FieldViolation(d.field, f"{d.address} is suppressed ({d.reason}){why}")
                for d in dropped
            ]
        )
    return replace(email, to=kept["to"], cc=kept["cc"], bcc=kept["bcc"]), dropped


def check_email(
    email: NewEmail,
    policy: str,
    email_id: object,
    void_later: Callable[[str], None],
    not_accepted: Callable[[str], MailroomError],
) -> tuple[NewEmail, list[Dropped]]:
    """SendEmail's check: :func:`apply_suppression` after one lookup.

    A lookup the store does not answer in time is answered 503 (``not_accepted``): only a read,
    nothing was written, so a retry is safe. The id it names is voided in the background like an
    unconfirmed insert's, so that it is found CANCELLED or nowhere, whatever stalled.

    Raises:
        InvalidArgument: The policy refuses the email.
        MailroomError: ``not_accepted``'s error, or StorageUnavailable (500).
    """
    try:
        suppressed = find_suppressed([email])
    except StorageOutcomeUnknown as exc:
        void_later(str(email_id))
        raise not_accepted(str(email_id)) from exc
    return apply_suppression(email, suppressed, policy)


def to_protos(dropped: Iterable[Dropped]) -> list[suppressions_pb2.DroppedRecipient]:
    """The API's messages for the dropped recipients."""
    return [d.to_proto() for d in dropped]
