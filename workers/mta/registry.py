"""Build every provider whose credentials are set, and say at start-up which are enabled and why.

The names here (``smtp``, ``sendgrid``, ``mailgun``, ``ses``, ``postmark``) are the ones
``Settings.provider_order`` and ``Settings.provider_weights`` refer to.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from core.settings import HttpProviderSettings, Settings
from workers.mta.base import Provider, ProviderInfo
from workers.mta.mailgun import MailgunProvider
from workers.mta.postmark import PostmarkProvider
from workers.mta.sendgrid import SendGridProvider
from workers.mta.ses import SesProvider
from workers.mta.smtp import SmtpProvider

logger = logging.getLogger(__name__)

PROVIDER_NAMES = ("smtp", "sendgrid", "mailgun", "ses", "postmark")


def _env(*path: str) -> str:
    return "MAILROOM_" + "__".join(part.upper() for part in path)


def _secret_set(settings: HttpProviderSettings) -> bool:
    return bool(settings.api_key and settings.api_key.get_secret_value().strip())


def _build(
    name: str,
    missing: list[str],
    factory: Callable[[], Provider],
    extra: dict[str, str],
    providers: dict[str, Provider],
    infos: list[ProviderInfo],
) -> None:
    if missing:
        infos.append(ProviderInfo(name, enabled=False, reason=f"{', '.join(missing)} not set"))
        return
    try:
        providers[name] = factory()
    except Exception as exc:
        # A bad value (e.g. an invalid base_url) disables one provider, not the worker.
        logger.exception("%s: could not be built", name)
        infos.append(ProviderInfo(name, enabled=False, reason=f"error: {exc}", extra=extra))
        return
    infos.append(ProviderInfo(name, enabled=True, extra=extra))


def build_providers(settings: Settings) -> tuple[dict[str, Provider], list[ProviderInfo]]:
    """Build the providers whose credentials are present.

    Args:
        settings: Mailroom's settings.

    Returns:
        The enabled providers by name, and one ProviderInfo per known provider (enabled or
        not, and why not), in :data:`PROVIDER_NAMES` order.
    """
    providers: dict[str, Provider] = {}
    infos: list[ProviderInfo] = []

    smtp = settings.smtp
    if not smtp.enabled:
        infos.append(ProviderInfo("smtp", enabled=False, reason=f"{_env('smtp', 'enabled')}=false"))
    else:
        _build(
            "smtp",
            [] if smtp.host else [_env("smtp", "host")],
            lambda: SmtpProvider(smtp),
            {"server": f"{smtp.host}:{smtp.port}", "security": smtp.security},
            providers,
            infos,
        )

    sendgrid = settings.providers.sendgrid
    _build(
        "sendgrid",
        [] if _secret_set(sendgrid) else [_env("providers", "sendgrid", "api_key")],
        lambda: SendGridProvider(sendgrid),
        {"base_url": sendgrid.base_url} if sendgrid.base_url else {},
        providers,
        infos,
    )

    mailgun = settings.providers.mailgun
    mailgun_missing = [] if _secret_set(mailgun) else [_env("providers", "mailgun", "api_key")]
    if not (mailgun.domain or "").strip():
        mailgun_missing.append(_env("providers", "mailgun", "domain"))
    _build(
        "mailgun",
        mailgun_missing,
        lambda: MailgunProvider(mailgun),
        {
            "domain": mailgun.domain or "",
            **({"base_url": mailgun.base_url} if mailgun.base_url else {}),
        },
        providers,
        infos,
    )

    ses = settings.providers.ses
    ses_missing = [
        _env("providers", "ses", field)
        for field, value in (
            ("region", ses.region),
            ("access_key_id", ses.access_key_id),
            (
                "secret_access_key",
                ses.secret_access_key.get_secret_value() if ses.secret_access_key else "",
            ),
        )
        if not (value or "").strip()
    ]
    _build(
        "ses",
        ses_missing,
        lambda: SesProvider(ses),
        {
            "region": ses.region or "",
            **({"endpoint_url": ses.endpoint_url} if ses.endpoint_url else {}),
        },
        providers,
        infos,
    )

    postmark = settings.providers.postmark
    _build(
        "postmark",
        [] if _secret_set(postmark) else [_env("providers", "postmark", "api_key")],
        lambda: PostmarkProvider(postmark),
        {"base_url": postmark.base_url} if postmark.base_url else {},
        providers,
        infos,
    )
    return providers, infos


def describe(infos: list[ProviderInfo]) -> str:
    """Return the one start-up line about the providers.

    Example: ``providers: smtp: enabled (server=127.0.0.1:1025, security=none); sendgrid:
    disabled (MAILROOM_PROVIDERS__SENDGRID__API_KEY not set)``.
    """
    parts = []
    for info in infos:
        if info.enabled:
            detail = ", ".join(f"{key}={value}" for key, value in info.extra.items())
            parts.append(f"{info.name}: enabled" + (f" ({detail})" if detail else ""))
        else:
            parts.append(f"{info.name}: disabled ({info.reason})")
    return "providers: " + "; ".join(parts) if parts else "providers: none"


def close_providers(providers: dict[str, Provider]) -> None:
    """Close the connection pools of the providers that keep one (at worker shutdown)."""
    for name, provider in providers.items():
        close = getattr(provider, "close", None)
        if callable(close):
            try:
                close()
            except Exception:
                logger.warning("%s: close failed", name, exc_info=True)
