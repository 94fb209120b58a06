"""Amazon SES v2 ``SendEmail`` with the raw MIME message, through boto3."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from core.settings import SesSettings
from workers.mta.base import (
    DeliveryError,
    MisconfiguredError,
    OutgoingEmail,
    PermanentError,
    SendResult,
    ThrottledError,
    TransientError,
)
from workers.mta.http import error_class_for_status

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import DestinationTypeDef, MessageTagTypeDef

logger = logging.getLogger(__name__)

PERMANENT_CODES = frozenset({"MessageRejected", "BadRequestException"})
THROTTLED_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
MISCONFIGURED_CODES = frozenset(
    {
        # Our sending domain is not verified: the account's fault, not the email's.
        "MailFromDomainNotVerifiedException",
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "InvalidSignatureException",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "AccountSuspendedException",
        "SendingPausedException",
        # e.g. a configuration set or identity that does not exist in this account/region.
        "NotFoundException",
    }
)


# What SES allows in a message tag's name and value (MessageTag in the SES v2 API reference).
_TAG_TEXT = re.compile(r"[A-Za-z0-9_-]{1,256}")


def email_tags(email: OutgoingEmail) -> list[MessageTagTypeDef]:
    """The email's tags and metadata as SES message tags (for event publishing).

    A tag becomes ``{"Name": tag, "Value": "true"}`` (SES tags are name/value pairs, Mailroom's
    are labels); a metadata pair ``{"Name": key, "Value": value}`` when its value is something
    SES allows (ASCII letters, digits, ``_`` and ``-``): other values are left out rather than
    have SES refuse the email. A metadata key that is also a tag's name wins over the tag.
    """
    tags: dict[str, str] = dict.fromkeys(email.tags, "true")
    for key, value in email.metadata:
        if _TAG_TEXT.fullmatch(key) and _TAG_TEXT.fullmatch(value):
            tags[key] = value
    return [{"Name": name, "Value": value} for name, value in tags.items()]


def _classify_client_error(exc: ClientError) -> DeliveryError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    text = f"{code}: {error.get('Message', '')}".strip()
    message = f"ses: {code or 'error'} (HTTP {status})"
    if code in PERMANENT_CODES:
        return PermanentError(message, response=text)
    if code in THROTTLED_CODES:
        # SES sends no Retry-After: Mailroom's own backoff decides.
        return ThrottledError(message, retry_after=None, response=text)
    if code in MISCONFIGURED_CODES:
        return MisconfiguredError(message, response=text)
    if 200 <= status < 300 or status == 0:
        return TransientError(message, response=text)
    # An unknown code: the HTTP status says which class (5xx transient, 403 misconfigured…).
    # SES sends no Retry-After, so a 429 is throttled without one.
    return error_class_for_status(status)(message, response=text)


@contextmanager
def map_ses_errors() -> Iterator[None]:
    """Classify everything that can go wrong in an SES send into a DeliveryError.

    Yields:
        Nothing; exceptions raised in the block are translated.

    Raises:
        DeliveryError: Always one of its four subclasses.
    """
    try:
        yield
    except DeliveryError:
        raise
    except ClientError as exc:
        raise _classify_client_error(exc) from exc
    except (NoCredentialsError, PartialCredentialsError, NoRegionError) as exc:
        raise MisconfiguredError(f"ses: {exc}") from exc
    except ParamValidationError as exc:
        raise PermanentError(f"ses: invalid request: {exc}") from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError.
        raise TransientError(f"ses: {type(exc).__name__}: {exc}") from exc
    except BotoCoreError as exc:
        raise TransientError(f"ses: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:
        logger.exception("ses: unexpected error while sending")
        raise TransientError(f"ses: unexpected {type(exc).__name__}: {exc}") from exc


class SesProvider:
    """Sends the raw MIME message through Amazon SES v2.

    Args:
        settings: ``Settings.providers.ses``; ``region``, ``access_key_id`` and
            ``secret_access_key`` are required; ``endpoint_url`` overrides the AWS endpoint.

    Raises:
        ValueError: A required setting is missing.
    """

    name: str = "ses"

    def __init__(self, settings: SesSettings) -> None:
        secret = settings.secret_access_key.get_secret_value() if settings.secret_access_key else ""
        if not (settings.region and settings.access_key_id and secret):
            raise ValueError("ses: region, access_key_id and secret_access_key must all be set")
        config = Config(
            connect_timeout=settings.timeout_seconds,
            read_timeout=settings.timeout_seconds,
            # One attempt only: Mailroom retries with its own backoff. (``max_attempts`` counts
            # retries *after* the first try, so ``total_max_attempts`` is the one meaning 1.)
            retries={"total_max_attempts": 1, "mode": "standard"},
        )
        # A session of our own: boto3's default session is not safe to build clients from
        # concurrently; the client itself is thread-safe.
        self._client: SESV2Client = boto3.session.Session().client(
            "sesv2",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url or None,
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret,
            config=config,
        )

    def send(self, email: OutgoingEmail) -> SendResult:
        """Send ``email.mime`` as is, to every envelope recipient (bcc included).

        The raw message carries the attachments and extra headers; tags and metadata go as
        ``EmailTags`` (see :func:`email_tags`).

        Args:
            email: The email to send.

        Returns:
            The acceptance, with SES's MessageId.

        Raises:
            DeliveryError: One of its four subclasses, from :func:`map_ses_errors`.
        """
        destination: DestinationTypeDef = {"ToAddresses": list(email.to)}
        if email.cc:
            destination["CcAddresses"] = list(email.cc)
        if email.bcc:
            destination["BccAddresses"] = list(email.bcc)
        request: dict[str, Any] = {
            "Destination": destination,
            "Content": {"Raw": {"Data": email.mime}},
        }
        tags = email_tags(email)
        if tags:
            request["EmailTags"] = tags
        with map_ses_errors():
            reply: Any = self._client.send_email(**request)
        message_id = reply.get("MessageId") or email.message_id
        return SendResult(provider_message_id=str(message_id), response=f"MessageId {message_id}")

    def close(self) -> None:
        """Close the client's connection pool."""
        self._client.close()
