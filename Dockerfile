# Mailroom's image: the API, the worker, the scheduler and the operator CLI are its console
# scripts (mailroom-api, mailroom-worker, mailroom-scheduler, mailroom-admin); docker-compose.yml
# picks one per service, and runs aiosmtpd's own Mailbox sink from it for the dev profile. Envoy runs from the official envoyproxy/envoy image beside it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The SDK first: it changes less often than the service and carries the generated stubs.
COPY sdk/ sdk/
RUN pip install ./sdk

COPY pyproject.toml ./
COPY core/ core/
COPY server/ server/
COPY workers/ workers/
COPY admin/ admin/
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin mailroom \
    && mkdir -p /app/var/mail \
    && chown -R mailroom /app/var

USER mailroom

# gRPC API; the worker's Prometheus metrics; the dev SMTP sink.
EXPOSE 50051 9191 1025

CMD ["mailroom-api"]
