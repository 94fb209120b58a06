"""Shared httpx plumbing of the HTTP providers: one client factory and one error classifier.

Every HTTP provider sends inside :func:`map_http_errors` and calls ``raise_for_status()`` on the
response, so the status-code table below (:func:`error_class_for_status`) is the only place where
an HTTP outcome becomes a :class:`~workers.mta.base.DeliveryError`; SES reads the same table for
the codes it does not know.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    PermanentError,
    ThrottledError,
    TransientError,
)

logger = logging.getLogger(__name__)

USER_AGENT = "mailroom/0.1"
# Enough of an error body to explain a failure in the email's history, not a whole HTML page.
MAX_RESPONSE_CHARS = 1000

# The email itself is bad: sending it again (anywhere) gives the same answer.
PERMANENT_STATUSES = frozenset({400, 413, 422})
# Our account, key or endpoint is wrong: 402 payment required, 404 unknown domain or wrong
# base_url, 405/407 wrong endpoint or proxy. Another provider may still send the email.
MISCONFIGURED_STATUSES = frozenset({401, 402, 403, 404, 405, 407})
TRANSIENT_STATUSES = frozenset({408})

BodyClassifier = Callable[[httpx.Response], DeliveryError | None]


def make_client(
    *,
    base_url: str,
    timeout_seconds: float,
    headers: dict[str, str] | None = None,
    auth: tuple[str, str] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """Return the one thread-safe client a provider instance keeps for its lifetime.

    Args:
        base_url: The provider's API root; paths are appended to it.
        timeout_seconds: Applies to connecting, writing, reading and waiting for a pooled
            connection alike.
        headers: Extra headers sent with every request (e.g. the API token).
        auth: Basic-auth user and password.
        transport: A replacement transport (tests use ``httpx.MockTransport``).

    Returns:
        A client that does not follow redirects (a redirect means a wrong ``base_url``).

    Raises:
        ValueError: ``base_url`` is not an absolute http(s) URL.
    """
    url = httpx.URL(base_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(f"base_url must be an absolute http(s) URL, not {base_url!r}")
    return httpx.Client(
        base_url=url,
        timeout=httpx.Timeout(timeout_seconds),
        headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
        auth=auth,
        transport=transport,
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Parse a ``Retry-After`` header: delay-seconds or an HTTP-date.

    Args:
        value: The header value, or None when absent.
        now: The current time (for tests); defaults to the clock.

    Returns:
        Seconds to wait (0 for a date in the past), or None when absent or unparseable.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def response_excerpt(response: httpx.Response) -> str:
    """Return ``"<status> <body>"`` cut to a length fit for an email's history."""
    # httpx decodes with errors="replace", so reading .text cannot fail on a bad body.
    return f"{response.status_code} {response.text.strip()}"[:MAX_RESPONSE_CHARS]


def error_class_for_status(status: int) -> type[DeliveryError]:
    """The status-code table: which DeliveryError a non-2xx HTTP status means.

    Args:
        status: The HTTP status code.

    Returns:
        Throttled for 429, Misconfigured for 401/403 (and 3xx, 402, 404, 405, 407), Permanent
        for 400/413/422, Transient for 408, 5xx and anything unexpected.
    """
    if status == 429:
        return ThrottledError
    if status in PERMANENT_STATUSES:
        return PermanentError
    if status in MISCONFIGURED_STATUSES or 300 <= status < 400:
        return MisconfiguredError
    # 408, 5xx, and any other status we do not expect: retry, and let the breaker count it.
    return TransientError


def classify_status(provider: str, response: httpx.Response) -> DeliveryError:
    """Turn a non-2xx response into the DeliveryError saying what to do next.

    Args:
        provider: The provider's name, for the message.
        response: The failed response.

    Returns:
        The error to raise (see :func:`error_class_for_status`); a 429 carries its
        ``Retry-After``.
    """
    status = response.status_code
    excerpt = response_excerpt(response)
    message = f"{provider}: HTTP {status} {response.reason_phrase}".rstrip()
    error_class = error_class_for_status(status)
    if error_class is ThrottledError:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return ThrottledError(message, retry_after=retry_after, response=excerpt)
    return error_class(message, response=excerpt)


@contextmanager
def map_http_errors(provider: str, classify: BodyClassifier | None = None) -> Iterator[None]:
    """Classify everything that can go wrong in an HTTP send into a DeliveryError.

    The body calls ``response.raise_for_status()``; anything other than a 2xx lands here.

    Args:
        provider: The provider's name, for messages and logs.
        classify: An optional provider-specific look at an error response (e.g. Postmark's
            ``ErrorCode``); when it returns None the status-code table decides.

    Yields:
        Nothing; exceptions raised in the block are translated.

    Raises:
        DeliveryError: Always one of its four subclasses.
    """
    try:
        yield
    except DeliveryError:
        raise
    except httpx.HTTPStatusError as exc:
        error = None
        if classify is not None:
            try:
                error = classify(exc.response)
            except Exception:
                logger.exception("%s: could not classify an error response", provider)
        raise (error or classify_status(provider, exc.response)) from exc
    except httpx.TimeoutException as exc:
        raise TransientError(f"{provider}: timed out ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        raise TransientError(f"{provider}: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        logger.exception("%s: unexpected error while sending", provider)
        raise TransientError(f"{provider}: unexpected {type(exc).__name__}: {exc}") from exc


def json_object(response: httpx.Response) -> dict[str, Any]:
    """Return the response's JSON object, or {} when the body is not one.

    A 2xx means the provider took the email: a body we cannot read must not turn it into a
    failure (and a resend).
    """
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
