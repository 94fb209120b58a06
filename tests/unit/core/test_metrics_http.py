"""The shared ``/metrics`` server of the API and the scheduler (no socket is opened)."""

from __future__ import annotations

import logging

import pytest

from core import metrics_http
from core.metrics_http import serve_metrics


def test_port_zero_serves_nothing() -> None:
    assert serve_metrics(0) is False


def test_a_taken_port_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def taken(port: int, addr: str) -> None:
        raise OSError("Address already in use")

    monkeypatch.setattr(metrics_http, "start_http_server", taken)
    with caplog.at_level(logging.WARNING):
        assert serve_metrics(9999, "127.0.0.1", label="API metrics") is False
    assert "API metrics not served on port 9999" in caplog.text


def test_a_free_port_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    served: list[tuple[int, str]] = []
    monkeypatch.setattr(metrics_http, "start_http_server", lambda p, addr: served.append((p, addr)))
    assert serve_metrics(9999, "127.0.0.1") is True
    assert served == [(9999, "127.0.0.1")]
