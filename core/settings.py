"""Mailroom's settings: one pydantic-settings object, read once in each entry point.

Every field can be set by an environment variable with the ``MAILROOM_`` prefix; nested fields
use ``__`` (``MAILROOM_SMTP__HOST``, ``MAILROOM_PROVIDERS__SENDGRID__API_KEY``). An optional TOML
file named by ``MAILROOM_CONFIG`` supplies values below the environment. Secrets never have
defaults.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024


#: Executable and script types mail clients run on a click: refused as attachments by default.
BLOCKED_ATTACHMENT_EXTENSIONS = tuple(
    [
        ".ade",
        ".adp",
        ".app",
        ".bat",
        ".chm",
        ".cmd",
        ".com",
        ".cpl",
        ".dll",
        ".exe",
        ".hta",
        ".inf",
        ".ins",
        ".isp",
        ".jar",
        ".js",
        ".jse",
        ".lib",
        ".lnk",
        ".mde",
        ".msc",
        ".msi",
        ".msp",
        ".mst",
        ".pif",
        ".ps1",
        ".scr",
        ".sct",
        ".shb",
        ".sys",
        ".vb",
        ".vbe",
        ".vbs",
        ".vxd",
        ".wsc",
        ".wsf",
        ".wsh",
    ]
)


class SmtpSettings(BaseModel):
    """The SMTP relay (by default the local sink of ``make dev``)."""

    host: str = "127.0.0.1"
    port: int = 1025
    security: Literal["none", "starttls", "ssl"] = "none"
    username: str | None = None
    password: SecretStr | None = None
    timeout_seconds: float = 30.0
    # A worker thread's SMTP connection is kept open between sends, and closed after this long
    # without one; 0 opens a connection per send.
    idle_seconds: float = 30.0
    enabled: bool = True


class HttpProviderSettings(BaseModel):
    """An HTTP mail provider: enabled only when its credentials are set."""

    api_key: SecretStr | None = None
    base_url: str | None = None
    timeout_seconds: float = 30.0
    # Mailgun sends from a domain of its own.
    domain: str | None = None


class SesSettings(BaseModel):
    """Amazon SES v2: enabled when a region and credentials are set."""

    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    endpoint_url: str | None = None
    timeout_seconds: float = 30.0


class ProvidersSettings(BaseModel):
    """Credentials and endpoints of the HTTP/API providers."""

    sendgrid: HttpProviderSettings = HttpProviderSettings()
    mailgun: HttpProviderSettings = HttpProviderSettings()
    postmark: HttpProviderSettings = HttpProviderSettings()
    ses: SesSettings = SesSettings()


class RetrySettings(BaseModel):
    """Dramatiq retries: exponential backoff with jitter between attempts."""

    max_retries: int = 8
    min_backoff_ms: int = 15_000
    max_backoff_ms: int = 3_600_000
    # Attempts of one email through one provider before a retry moves on to the next one.
    per_provider_attempts: int = 3
    # Waits for a provider (breakers open, credentials refused) spend no retries; after this
    # long an email goes to the dead letters anyway.
    max_pending_hours: float = 24.0


class BreakerSettings(BaseModel):
    """Circuit breakers, one per provider, shared through Redis."""

    fail_max: int = 5
    reset_timeout_seconds: float = 60.0
    # A provider that refuses our credentials (401/403) is skipped this long by every worker.
    out_of_rotation_seconds: float = 600.0


class RescanSettings(BaseModel):
    """The periodic rescan of emails that were never enqueued or got stuck."""

    cron: str = "*/30 * * * *"
    buffer_seconds: float = 1800.0
    batch_size: int = 500
    lock_seconds: float = 600.0
    # Due SCHEDULED emails whose delayed message was lost still go out within a minute; the
    # same job enqueues QUEUED/RETRYING emails untouched for quick_buffer_seconds.
    due_cron: str = "* * * * *"
    quick_buffer_seconds: float = 60.0
    # Expired idempotency keys (FerretDB has no TTL index).
    purge_cron: str = "7 * * * *"
    # The retention job (see Settings.retention_days).
    retention_cron: str = "17 * * * *"


class WebhookSettings(BaseModel):
    """Outbound webhooks: delivery attempts, backoff and the sweep of the outbox."""

    # The Dramatiq queue of the webhook actor: deliveries never wait behind emails.
    queue_name: str = "mail.webhooks"
    # Attempts per delivery before it is dead; the default backoff spreads them over ~23 h.
    max_attempts: int = Field(default=15, ge=1)
    min_backoff_ms: int = Field(default=10_000, ge=1)
    max_backoff_ms: int = Field(default=21_600_000, ge=1)
    timeout_seconds: float = 10.0
    # The periodic sweep re-enqueues pending deliveries overdue by this much (messages lost).
    sweep_cron: str = "* * * * *"
    sweep_grace_seconds: float = 60.0
    sweep_batch_size: int = 500
    # Receivers' responses kept per attempt, in characters.
    max_response_chars: int = 500
    # Delivered and dead deliveries are deleted this long after they finished (the hourly purge).
    keep_days: float = Field(default=30.0, gt=0)
    # Each process reads the subscription list at most this often to match events; creating a
    # subscription waits this long before it answers, so later events reach it. Same everywhere.
    subscriptions_max_age_seconds: float = Field(default=0.5, ge=0, le=10)


class ProviderEventSettings(BaseModel):
    """Inbound provider events: how each provider's webhook proves it is the provider.

    A provider without its setting has its events refused (401): nothing unverified is stored.
    """

    # SendGrid's "verification key" (base64 DER of an ECDSA P-256 public key, or PEM).
    sendgrid_public_key: SecretStr | None = None
    # Mailgun's HTTP webhook signing key.
    mailgun_signing_key: SecretStr | None = None
    # The basic auth credentials put in the webhook URL configured at Postmark.
    postmark_username: str | None = None
    postmark_password: SecretStr | None = None
    # SNS topics whose messages are accepted (empty: any topic with a valid signature).
    ses_topic_arns: list[str] = Field(default_factory=list)
    # URL prefixes trusted for SNS signing certificates and SubscribeURLs besides
    # https://sns.<region>.amazonaws.com/ (tests point this at a local server).
    sns_trusted_url_prefixes: list[str] = Field(default_factory=list)
    sns_timeout_seconds: float = 5.0


class Settings(BaseSettings):
    """All of Mailroom's settings."""

    model_config = SettingsConfigDict(
        env_prefix="MAILROOM_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    mongodb_uri: str = "mongodb://127.0.0.1:27017/mailroom"
    # Fail a request fast (well within 3 s) when MongoDB is unreachable, not after pymongo's 30 s.
    mongodb_timeout_ms: int = 1500
    # SendEmail's whole budget for the store. An insert not confirmed within its share is looked
    # up (or voided) in the rest; only then the answer is 503 "not accepted, retry safely".
    accept_timeout_ms: int = 2500
    # SendEmail inserts that arrive while another insert of the process is in flight go to the
    # store together in the next one (core.group_commit), at most this many; 1: each alone.
    accept_group_max_emails: int = Field(default=16, ge=1, le=256)
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_timeout_seconds: float = 1.0

    grpc_host: str = "0.0.0.0"
    grpc_port: int = 50051
    # Request threads per API process. Each SendEmail holds one for a millisecond or two; more
    # threads only fight over the GIL (make bench: 8 served ~10% more than 32 on 2 cores).
    grpc_max_workers: int = 8
    # API server processes sharing grpc_port (SO_REUSEPORT): one Python process uses one core.
    api_processes: int = Field(default=1, ge=1, le=64)
    # The transport limit: above the email limit, so an oversized email gets a field violation
    # naming it rather than a transport error; matches Envoy's 32 MiB body limit.
    grpc_max_message_bytes: int = 32 * MiB

    # When set, every MailService call needs `authorization: Bearer <one of these>`.
    api_keys: list[SecretStr] = Field(default_factory=list)

    queue_name: str = "mail"
    default_from: str = "Mailroom <mailroom@localhost>"
    message_id_domain: str = "mailroom.local"
    max_recipients: int = 50
    # The longest subject (title), in characters: RFC 5322's line limit. Longer ones are refused.
    max_title_chars: int = Field(default=998, ge=1, le=998)
    # Domains a request's `from` may use (IDNA or Unicode, exact match, case-insensitive); empty
    # allows any. Outside them SendEmail answers PERMISSION_DENIED (HTTP 403) naming `from`.
    allowed_from_domains: list[str] = Field(default_factory=list)
    # Bodies and attachments together, in bytes (attachments counted decoded).
    max_email_bytes: int = 10 * MiB
    max_schedule_days: int = 30
    # Attachment file name extensions that are refused (case-insensitive, with the dot).
    blocked_attachment_extensions: list[str] = Field(
        default_factory=lambda: list(BLOCKED_ATTACHMENT_EXTENSIONS)
    )
    max_attachments: int = 50
    max_tags: int = 10
    max_metadata: int = 20
    # SendEmailBatch: the most emails one call may carry.
    max_batch_emails: int = Field(default=100, ge=1, le=1000)
    # A suppressed recipient of SendEmail (core.store.suppressions): "drop" leaves it out and
    # reports it (the email is refused when no `to` recipient remains); "refuse" refuses the
    # whole email. Either way the answer names the field and the reason.
    suppression_policy: Literal["drop", "refuse"] = "drop"
    # An email accepted longer ago than this (scheduled, retried) is checked against the list
    # again when sent (workers.suppression_gate); 0: every send.
    suppression_recheck_seconds: float = Field(default=60.0, ge=0)
    # Each API process keeps the list in memory (server.suppression_snapshot): it reads the
    # list's change notes this often (an addition made by another process applies within about
    # this long); 0: no snapshot, every SendEmail looks its recipients up in the store.
    suppression_snapshot_poll_seconds: float = Field(default=1.0, ge=0)
    # ...and reloads the whole list this often (entries added behind Mailroom's back).
    suppression_snapshot_reload_seconds: float = Field(default=600.0, gt=0)
    # Final emails older than this lose their bodies, attachments and headers (the retention
    # job, hourly); their metadata, statuses and attempts are kept.
    retention_days: float = Field(default=30.0, gt=0)
    idempotency_ttl_hours: float = 24.0

    smtp: SmtpSettings = SmtpSettings()
    providers: ProvidersSettings = ProvidersSettings()
    # Provider names in priority order; "a|b" puts a and b in one priority group, where optional
    # weights split first attempts (a weight of 0 makes a provider a fallback only).
    provider_order: list[str] = Field(default_factory=lambda: ["smtp"])
    provider_weights: dict[str, float] = Field(default_factory=dict)
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    rescan: RescanSettings = RescanSettings()
    provider_events: ProviderEventSettings = ProviderEventSettings()
    webhooks: WebhookSettings = WebhookSettings()

    # A claimed email is locked for this long: longer than the longest provider timeout.
    lease_seconds: float = 120.0
    worker_processes: int = 1
    worker_threads: int = 8
    # How long a worker thread may hold the GIL while another waits for it (Python's default is
    # 5 ms). A delivery thread needs the GIL back after each SMTP or store reply; with the
    # default its wait behind a thread building MIME made one SMTP transaction last twice the
    # raw one in the delivery benchmark.
    worker_switch_interval_ms: float = Field(default=0.5, gt=0)
    metrics_port: int = 9191
    scheduler_metrics_port: int = 9192
    # The API's Prometheus metrics (provider events received, signature failures); 0: off.
    api_metrics_port: int = 9193
    log_level: str = "INFO"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Read init kwargs, then the environment, then the optional ``MAILROOM_CONFIG`` file."""
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("MAILROOM_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_file))
        return tuple(sources)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Return the process's settings, read from the environment on first use."""
    return Settings()


#: Every setting at its default, read from nothing: what a keyword argument elsewhere defaults to
#: when it mirrors a setting (this module is the only home for defaults).
DEFAULTS = Settings.model_construct()
