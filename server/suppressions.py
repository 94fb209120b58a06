"""The SuppressionService servicer: the one suppression list, shared by every provider."""

from __future__ import annotations

from core.queue import DeliveryQueue
from core.settings import Settings
from mailroom.v1 import suppressions_pb2_grpc


class SuppressionServicer(suppressions_pb2_grpc.SuppressionServiceServicer):
    """Implements ``mailroom.v1.SuppressionService``.

    Args:
        settings: The process settings.
        queue: Unused: the list is only stored (the signature every servicer shares).
    """

    def __init__(self, settings: Settings, queue: DeliveryQueue) -> None:
        self._settings = settings
