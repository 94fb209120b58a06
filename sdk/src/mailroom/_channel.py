"""What the sync and asyncio clients share: settings, channel options, retry policy, metadata."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import grpc

from mailroom._version import __version__

__all__ = [
    "DEFAULT_TARGET",
    "DEFAULT_TIMEOUT",
    "MAX_MESSAGE_BYTES",
    "RetryPolicy",
]

#: The target ``from_env()`` uses when ``MAILROOM_TARGET`` is not set.
DEFAULT_TARGET = "localhost:50051"
#: The deadline of each call, in seconds, unless the client or the call says otherwise.
DEFAULT_TIMEOUT = 30.0
#: The largest message the channel sends or receives: the server accepts 10 MiB emails, and an
#: email fetched back carries its body and HTML alternative.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024

SERVICE_NAME = "mailroom.v1.MailService"
ENV_TARGET = "MAILROOM_TARGET"
ENV_API_KEY = "MAILROOM_API_KEY"

#: The gRPC primary user agent of the SDK's channels; gRPC appends its own, so servers and proxies
#: see e.g. ``mailroom-sdk/0.1.0 grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)``.
USER_AGENT = f"mailroom-sdk/{__version__}"


@dataclass(frozen=True)
class RetryPolicy:
    """How gRPC retries a failed call, expressed as a gRPC ``retryPolicy``.

    gRPC itself performs the retries (the channel's service config), waiting about
    ``initial_backoff * backoff_multiplier ** (n - 1)`` seconds (capped at ``max_backoff``,
    with ±20 % jitter) before attempt ``n + 1``. Every attempt counts against the call's
    deadline: when the deadline passes first, the call fails with ``DeadlineExceeded``.
    A ``DEADLINE_EXCEEDED`` status is retried only when the server answers it; the call's own
    deadline is never extended. Retrying ``send_email`` is safe: each request carries an
    idempotency key, the same on every attempt.

    The defaults wait about 0.5 + 1 + 2 + 4 = 7.5 s over five attempts: long enough to ride out
    a server restart, short enough to report ``Unavailable`` well within the default deadline.

    Attributes:
        max_attempts: Attempts in all, the first included; gRPC allows 2 to 5.
        initial_backoff: Seconds before the first retry.
        max_backoff: The longest wait between two attempts, in seconds.
        backoff_multiplier: Growth of the wait from one retry to the next.
        retryable_codes: The status codes that are retried.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.5
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    retryable_codes: tuple[grpc.StatusCode, ...] = (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )

    def __post_init__(self) -> None:
        """Reject values gRPC would refuse or silently clamp."""
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be between 2 and 5 (gRPC caps it at 5)")
        if self.initial_backoff <= 0 or self.max_backoff <= 0 or self.backoff_multiplier <= 0:
            raise ValueError("backoffs and multiplier must be positive")
        if not self.retryable_codes or grpc.StatusCode.OK in self.retryable_codes:
            raise ValueError("retryable_codes must name at least one error code")

    def service_config(self) -> dict[str, Any]:
        """Return the gRPC service config that applies this policy to every Mailroom method."""
        return {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE_NAME}],
                    "retryPolicy": {
                        "maxAttempts": self.max_attempts,
                        "initialBackoff": _duration(self.initial_backoff),
                        "maxBackoff": _duration(self.max_backoff),
                        "backoffMultiplier": self.backoff_multiplier,
                        "retryableStatusCodes": [c.name for c in self.retryable_codes],
                    },
                }
            ]
        }


def _duration(seconds: float) -> str:
    """Format seconds as a protobuf JSON Duration ("0.500s")."""
    return f"{seconds:.3f}s"


def channel_options(
    retry: RetryPolicy | None, extra: Sequence[tuple[str, Any]] = ()
) -> list[tuple[str, Any]]:
    """Return the channel options of a client; ``extra`` options override the SDK's own.

    Args:
        retry: The retry policy, or ``None`` to disable retries.
        extra: Further gRPC channel options.

    Returns:
        The options to pass to ``grpc.insecure_channel``/``secure_channel`` (or their aio twins).
    """
    options: dict[str, Any] = {
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.primary_user_agent": USER_AGENT,
        # gRPC's default reconnect backoff grows to 120 s, so after a short outage the channel
        # could go on failing fast long after the server is back, and our retries would all
        # land while it still thinks the server is down. Retry connecting at least every second.
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 1000,
        # Only our own service config applies, never one published in DNS.
        "grpc.service_config_disable_resolution": 1,
    }
    if retry is None:
        options["grpc.enable_retries"] = 0
    else:
        options["grpc.enable_retries"] = 1
        options["grpc.service_config"] = json.dumps(retry.service_config())
    options.update(dict(extra))
    return list(options.items())


class ClientBase:
    """The constructor and settings that ``MailroomClient`` and ``AsyncMailroomClient`` share."""

    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """Configure a client of the Mailroom API at ``target``.

        Args:
            target: The API's address, ``host:port`` (e.g. ``"localhost:50051"``) or any
                gRPC target.
            api_key: Sent on every call as ``authorization: Bearer <api_key>``.
            tls: Connect over TLS, verifying the server against the system's root certificates
                (or ``root_certificates``). Without it the connection is plaintext.
            root_certificates: PEM root certificates to verify the server with; implies ``tls``.
            timeout: The deadline of each call in seconds, retries included, unless a call
                gives its own.
            retry: How gRPC retries ``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``; ``None`` disables
                retries.
            options: Further gRPC channel options, overriding the SDK's.

        Raises:
            ValueError: ``target`` is empty or ``timeout`` is not positive.
        """
        if not target:
            raise ValueError("target must be a host:port, e.g. 'localhost:50051'")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._target = target
        self._timeout = timeout
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {api_key}"),) if api_key else ()
        )
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or root_certificates is not None:
            self._credentials = grpc.ssl_channel_credentials(root_certificates)
        self._options = channel_options(retry, options)
        self._open()

    def _open(self) -> None:
        """Create the channel and the stub (connected lazily, on the first call)."""
        raise NotImplementedError

    @classmethod
    def from_env(
        cls,
        *,
        target: str | None = None,
        api_key: str | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = RetryPolicy(),
        options: Sequence[tuple[str, Any]] = (),
    ) -> Self:
        """Create a client configured by the environment.

        ``MAILROOM_TARGET`` gives the target (default ``localhost:50051``) and
        ``MAILROOM_API_KEY`` the API key (default none). Arguments given here win over the
        environment; the others are those of the constructor.

        Args:
            target: The target, instead of ``MAILROOM_TARGET``.
            api_key: The API key, instead of ``MAILROOM_API_KEY``.
            tls: As for the constructor.
            root_certificates: As for the constructor.
            timeout: As for the constructor.
            retry: As for the constructor.
            options: As for the constructor.

        Returns:
            The client.
        """
        return cls(
            target or os.environ.get(ENV_TARGET) or DEFAULT_TARGET,
            api_key=api_key if api_key is not None else os.environ.get(ENV_API_KEY) or None,
            tls=tls,
            root_certificates=root_certificates,
            timeout=timeout,
            retry=retry,
            options=options,
        )

    @property
    def target(self) -> str:
        """The address of the API this client calls."""
        return self._target

    def _deadline(self, timeout: float | None) -> float:
        """Return the deadline of one call: its own timeout or the client's."""
        return self._timeout if timeout is None else timeout

    def __repr__(self) -> str:
        """Show the target, never the API key."""
        return f"{type(self).__name__}({self._target!r})"
