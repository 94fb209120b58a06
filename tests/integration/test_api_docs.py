"""The REST reference through Envoy: /openapi.yaml and Swagger UI at /docs (issue 9, item 8).

A headless Chromium renders /docs with every host but 127.0.0.1 unresolvable, so the page can
only work with what the repo ships, and writes the screenshot kept in docs/api-docs.png.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from devtools.envoy_config import REPO_ROOT
from devtools.services import BinaryNotFoundError, find_binary
from helpers import wait_until

SCREENSHOT = REPO_ROOT / "docs" / "api-docs.png"
WINDOW = (1280, 1600)
# The operations Swagger UI must show: their operationIds (shown with displayOperationId) and
# the first sentence of their proto comments (the summaries).
OPERATIONS = {
    "MailService_SendEmail": "SendEmail validates and stores an email",
    "MailService_ListEmails": "ListEmails pages through emails, newest first",
    "MailService_SendEmailBatch": "SendEmailBatch accepts up to 100 emails",
}


def chromium(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium on ``url`` with ``args`` (--dump-dom, --screenshot=...)."""
    try:
        binary = find_binary("chromium")
    except BinaryNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    argv = [
        binary,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Offline but for the Envoy under test: a page that needs the internet renders nothing.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--virtual-time-budget=15000",
        *args,
        url,
    ]
    if os.geteuid() == 0:
        argv.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


def test_openapi_document_is_served_as_generated(envoy):
    status, headers, body = envoy.request("GET", "/openapi.yaml")

    assert status == 200, body
    assert headers["content-type"].startswith("application/yaml")
    assert body == (REPO_ROOT / "envoy" / "openapi.yaml").read_text(encoding="utf-8")
    document = yaml.safe_load(str(body))
    assert document["openapi"].startswith("3.")
    assert {"/api/email", "/api/emails", "/api/emails:batch"} <= set(document["paths"])
    assert document["paths"]["/api/emails:batch"]["post"]["operationId"] == (
        "MailService_SendEmailBatch"
    )


def test_docs_assets_are_served_with_their_types_before_the_transcoder(envoy):
    for path, content_type in [
        ("/docs", "text/html"),
        ("/docs/", "text/html"),
        ("/docs/swagger-ui-bundle.js", "text/javascript"),
        ("/docs/swagger-ui.css", "text/css"),
    ]:
        status, headers, body = envoy.request("GET", path, timeout=30)
        assert status == 200, (path, str(body)[:200])
        assert headers["content-type"].startswith(content_type), (path, headers)
    # The API's own 404 is untouched beside them.
    status, _, body = envoy.request("GET", "/docs/missing.js")
    assert status == 404
    assert body["code"] == 5


def test_docs_page_renders_the_operations_offline(envoy, tmp_path):
    url = f"{envoy.url}/docs"
    dom = ""

    def rendered() -> bool:
        nonlocal dom
        result = chromium(url, tmp_path / "profile", "--dump-dom")
        dom = result.stdout
        return all(op in dom and summary in dom for op, summary in OPERATIONS.items())

    # Virtual time waits for the page to settle; a loaded machine may still need another go.
    shown = f"Swagger UI at {url} shows the operations"
    wait_until(rendered, timeout=180, interval=1, message=shown)
    assert "/api/emails:batch" in dom
    assert "Mailroom REST API" in dom

    SCREENSHOT.unlink(missing_ok=True)
    result = chromium(
        url,
        tmp_path / "profile",
        f"--screenshot={SCREENSHOT}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
    )
    assert SCREENSHOT.is_file(), result.stderr[-2000:]
    assert png_size(SCREENSHOT) == WINDOW
