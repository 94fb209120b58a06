"""Dramatiq's Prometheus middleware, with ``dramatiq_delayed_messages_inprogress`` counted right.

Import only once ``dramatiq_prom_db`` / ``dramatiq_prom_port`` are in the environment: Dramatiq's
module reads them at import time (``mailroom-worker`` sets them, see :mod:`workers.main`).

Dramatiq (2.2.1, and upstream issue Bogdanp/dramatiq#672) counts a delayed message in when its
worker holds it from the delay queue (``before_delay_message``, labelled ``mail.DQ``) and out when
a worker starts processing it (``before_process_message``). But at its eta the holding worker
puts it back on the queue itself (``mail``, same message id) and acknowledges the delay queue's
copy, so the decrement lands under another label (``mail``: the gauge reads -1 there, +1 on
``mail.DQ`` forever), and in another process when another worker process takes it. Here a delayed
message is counted out where it leaves this process's memory: when the delay queue's copy is
acknowledged (or rejected), under the label it was counted in with.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from dramatiq import Broker, Worker
from dramatiq.middleware.prometheus import Prometheus

from workers.webhook_metrics import run_exposition_server


class MailroomPrometheus(Prometheus):
    """Dramatiq's Prometheus middleware; the delayed-messages gauge goes back to 0."""

    def __init__(self) -> None:
        super().__init__()
        # Delayed messages this process holds: (message id, queue, actor) → how many copies (the
        # same id can be held twice for a moment: a retry's copy arriving before the last ack).
        self._held: Counter[tuple[str, str, str]] = Counter()
        self._held_lock = threading.Lock()

    @property
    def forks(self) -> list[Any]:
        """Dramatiq's exposition server, also serving the webhook outbox's gauge."""
        return [run_exposition_server]

    def before_delay_message(self, broker: Broker, message: Any) -> None:
        """Count a message held from the delay queue in (not Dramatiq's version: see above)."""
        with self._held_lock:
            self._held[message.message_id, message.queue_name, message.actor_name] += 1
        self.inprogress_delayed_messages.labels(message.queue_name, message.actor_name).inc()

    def _release(self, message: Any) -> None:
        key = (message.message_id, message.queue_name, message.actor_name)
        with self._held_lock:
            if key not in self._held:
                return  # a message from the queue itself, not a held delayed one
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
        self.inprogress_delayed_messages.labels(message.queue_name, message.actor_name).dec()

    def after_ack(self, broker: Broker, message: Any) -> None:
        """A held delayed message was put back on its queue: no longer in memory here."""
        self._release(message)

    def after_nack(self, broker: Broker, message: Any) -> None:
        """Count the rejection (Dramatiq's); a rejected delayed message leaves memory too."""
        super().after_nack(broker, message)  # type: ignore[no-untyped-call]
        self._release(message)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        """The messages still held go back to Redis with the worker: count them out first."""
        with self._held_lock:
            held, self._held = self._held, Counter()
        for (_, queue_name, actor_name), copies in held.items():
            self.inprogress_delayed_messages.labels(queue_name, actor_name).dec(copies)
        super().after_worker_shutdown(broker, worker)  # type: ignore[no-untyped-call]
