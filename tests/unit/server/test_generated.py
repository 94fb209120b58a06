"""The committed stubs and descriptor set match proto/ (``make proto`` regenerates them)."""

import shutil
import subprocess
import sys
from pathlib import Path

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
