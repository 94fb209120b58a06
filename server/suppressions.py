"""The SuppressionService servicer: the one suppression list, shared by every provider.

Addresses are checked with the rules of the send path (:func:`core.addresses.parse_address`)
and stored as their addr-spec, lowercased (:mod:`core.store.suppressions`). Reasons travel as
``SuppressionReason`` enum values and are stored as their lower-case names (``hard_bounce``).
"""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from core.addresses import AddressError, parse_address
from core.errors import FieldViolation, InvalidArgument, NotFound
from core.queue import DeliveryQueue
from core.settings import Settings
from core.store import suppressions as store
from core.store.documents import utcnow
from mailroom.v1 import suppressions_pb2, suppressions_pb2_grpc
from server.servicer import HTTP_STATUS_METADATA
from server.suppression_check import reason_name, reason_value

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
Reason = suppressions_pb2.SuppressionReason


def suppression_to_proto(entry: store.Suppression) -> suppressions_pb2.Suppression:
    """The API's message for a stored entry."""
    created = Timestamp()
    created.FromDatetime(entry.created_at)  # stored naive, in UTC
    return suppressions_pb2.Suppression(
        address=entry.address,
        reason=reason_value(entry.reason),
        provider=entry.provider or "",
        event_id=entry.event_id or "",
        create_time=created,
    )


def checked_address(value: str, field: str = "address") -> str:
    """The addr-spec of a bare address, or :class:`InvalidArgument` naming ``field``."""
    try:
        parsed = parse_address(value)
    except AddressError as exc:
        raise InvalidArgument([FieldViolation(field, str(exc))]) from None
    if parsed.display_name or "<" in value:
        raise InvalidArgument(
            [FieldViolation(field, "a bare address (someone@example.com), without a name")]
        )
    return parsed.addr_spec


class SuppressionServicer(suppressions_pb2_grpc.SuppressionServiceServicer):
    """Implements ``mailroom.v1.SuppressionService``.

    Args:
        settings: The process settings.
        queue: Unused: the list is only stored (the signature every servicer shares).
    """

    def __init__(self, settings: Settings, queue: DeliveryQueue) -> None:
        self._settings = settings

    def ListSuppressions(
        self, request: suppressions_pb2.ListSuppressionsRequest, context: grpc.ServicerContext
    ) -> suppressions_pb2.ListSuppressionsResponse:
        """One page of the list, newest first."""
        violations: list[FieldViolation] = []
        reason = None
        if request.reason != Reason.SUPPRESSION_REASON_UNSPECIFIED:
            reason = reason_name(request.reason)
            if reason is None:
                violations.append(FieldViolation("reason", "not a suppression reason"))
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        if violations:
            raise InvalidArgument(violations)
        # AIP-158: more than the most is the most, not an error.
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        entries, token = store.list_suppressions(
            reason=reason, page_size=size, page_token=request.page_token
        )
        return suppressions_pb2.ListSuppressionsResponse(
            suppressions=[suppression_to_proto(e) for e in entries], next_page_token=token
        )

    def AddSuppression(
        self, request: suppressions_pb2.AddSuppressionRequest, context: grpc.ServicerContext
    ) -> suppressions_pb2.AddSuppressionResponse:
        """Suppress an address (MANUAL unless another reason is given); 201 when added."""
        violations: list[FieldViolation] = []
        address = ""
        try:
            address = checked_address(request.address)
        except InvalidArgument as exc:
            violations += exc.violations
        reason = store.MANUAL
        if request.reason != Reason.SUPPRESSION_REASON_UNSPECIFIED:
            reason = reason_name(request.reason) or ""
            if not reason:
                violations.append(FieldViolation("reason", "not a suppression reason"))
        if violations:
            raise InvalidArgument(violations)
        created = store.suppress(address, reason)
        entry = store.get_suppression(address)
        if entry is None:  # removed by another call in between: answer what was asked
            entry = store.Suppression(address=store.suppression_key(address), reason=reason)
            entry.created_at = utcnow()
        if created:
            context.send_initial_metadata(((HTTP_STATUS_METADATA, "201"),))
        return suppressions_pb2.AddSuppressionResponse(
            suppression=suppression_to_proto(entry), created=created
        )

    def RemoveSuppression(
        self, request: suppressions_pb2.RemoveSuppressionRequest, context: grpc.ServicerContext
    ) -> suppressions_pb2.RemoveSuppressionResponse:
        """Remove an address from the list; NOT_FOUND when it is not on it.

        An entry a provider event added with an address these rules refuse is removable too:
        an invalid address is refused only when no entry has it.
        """
        try:
            address = checked_address(request.address)
        except InvalidArgument:
            address = request.address.strip()
            if not address or store.get_suppression(address) is None:
                raise
        entry = store.get_suppression(address)
        if entry is None or not store.unsuppress(address):
            raise NotFound(f"address: {address} is not suppressed")
        return suppressions_pb2.RemoveSuppressionResponse(suppression=suppression_to_proto(entry))
