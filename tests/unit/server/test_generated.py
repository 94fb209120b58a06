"""The committed stubs, descriptor set and OpenAPI document match proto/ (``make proto``)."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]


def test_generated_files_are_fresh():
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_check_detects_a_stale_stub(tmp_path):
    copy = tmp_path / "repo"
    for part in ("proto", "scripts", "envoy", "sdk/src/mailroom/v1"):
        shutil.copytree(ROOT / part, copy / part)
    proto = copy / "proto/mailroom/v1/mail.proto"
    proto.write_text(
        proto.read_text().replace(
            "string reply_to = 8;", "string reply_to = 8;\n  string extra = 99;", 1
        )
    )
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "mail_pb2.py" in result.stderr


def test_check_detects_a_stale_openapi_document(tmp_path):
    # A comment is documentation only: the stubs stay the same, the REST reference does not.
    copy = tmp_path / "repo"
    for part in ("proto", "scripts", "envoy", "sdk/src/mailroom/v1"):
        shutil.copytree(ROOT / part, copy / part)
    proto = copy / "proto/mailroom/v1/mail.proto"
    proto.write_text(
        proto.read_text().replace("// The subject line.", "// The subject line, in Unicode.", 1)
    )
    result = subprocess.run(
        [sys.executable, "scripts/gen_proto.py", "--check"],
        cwd=copy,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "envoy/openapi.yaml" in result.stderr
    assert "mail_pb2.py" not in result.stderr


def test_openapi_document_names_fields_as_envoy_prints_them():
    document = yaml.safe_load((ROOT / "envoy/openapi.yaml").read_text())
    send = document["components"]["schemas"]["SendEmailRequest"]["properties"]
    assert {"from", "replyTo", "sendAt", "idempotencyKey"} <= set(send)
    assert not {"from_address", "reply_to", "send_at"} & set(send)
    email = document["components"]["schemas"]["Email"]["properties"]
    assert email["status"]["type"] == "string"
    assert "EMAIL_STATUS_SENT" in email["status"]["enum"]
    # SendEmail answers 201 through Envoy (its Lua filter), not the plugin's default 200.
    assert set(document["paths"]["/api/email"]["post"]["responses"]) == {"201", "default"}
