"""Releases end to end: python-semantic-release (no network) on a fresh clone of this repository.

The clone's release configuration is the working tree's, so the tests check what is about to be
committed. Each distribution is versioned by the commits that touch it, the dry run changes
nothing, and a release writes the versions, the changelogs, a commit and a tag per distribution.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What decides a release: overlaid on the clone so that uncommitted edits are what is tested.
RELEASE_FILES = (
    "pyproject.toml",
    "sdk/pyproject.toml",
    "sdk/src/mailroom/_version.py",
    "scripts/release.py",
    "scripts/release_templates",
)
IDENTITY = {
    "GIT_AUTHOR_NAME": "Release Test",
    "GIT_AUTHOR_EMAIL": "release-test@example.com",
    "GIT_COMMITTER_NAME": "Release Test",
    "GIT_COMMITTER_EMAIL": "release-test@example.com",
}


def _run(cmd: list[str], cwd: Path, **env: str) -> str:
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env={**os.environ, **IDENTITY, **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _git(repo: Path, *args: str) -> str:
    return _run(["git", *args], repo)


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    repo = tmp_path / "mailroom"
    _git(tmp_path, "clone", "--quiet", str(ROOT), str(repo))
    for name in RELEASE_FILES:
        src, dst = ROOT / name, repo / name
        if src.is_dir():
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst)
    _git(repo, "add", "--all", *RELEASE_FILES)
    _git(repo, "commit", "--quiet", "--allow-empty", "-m", "chore: the release setup under test")
    return repo


def _commit(repo: Path, path: str, message: str) -> None:
    with (repo / path).open("a") as f:
        f.write("\n# a change\n" if path.endswith((".py", ".proto")) else "\na change\n")
    _git(repo, "commit", "--quiet", "-am", message)


def _next_tag(repo: Path, directory: str) -> str:
    cmd = [sys.executable, "-m", "semantic_release", "version", "--print-tag"]
    return _run(cmd, repo / directory, MAILROOM_RELEASE_REMOTE=repo.as_uri()).strip()


def _bump(tag: str, part: str) -> str:
    prefix, version = re.fullmatch(r"(.*?v)(\d+\.\d+\.\d+)", tag).groups()
    major, minor, patch = map(int, version.split("."))
    bumped = {"minor": (major, minor + 1, 0), "patch": (major, minor, patch + 1)}[part]
    return prefix + ".".join(map(str, bumped))


def test_dry_run_on_a_fresh_clone_prints_versions_and_changelogs_and_changes_nothing(clone):
    tags_before = _git(clone, "tag", "--list")
    out = _run([sys.executable, "scripts/release.py", "dry-run"], clone)
    assert re.search(r"^== mailroom: last release \S+, next v\d+\.\d+\.\d+$", out, re.M), out
    assert re.search(r"^== mailroom-sdk: last release \S+, next sdk-v\d+\.\d+\.\d+$", out, re.M)
    service_log, sdk_log = out.split("-- CHANGELOG.md would read:")[1].split("== mailroom-sdk")
    # Each changelog has its own commits: the SDK's clients are only in the SDK's.
    assert "sync and asyncio clients with typed results" in sdk_log
    assert "**workers**" in service_log
    assert "**workers**" not in sdk_log
    assert _git(clone, "status", "--porcelain") == ""
    assert _git(clone, "tag", "--list") == tags_before


def test_each_distribution_is_versioned_by_its_own_commits(clone):
    _run([sys.executable, "scripts/release.py", "version"], clone)
    service, sdk = _next_tag(clone, "."), _next_tag(clone, "sdk")
    tags = _git(clone, "tag", "--list").split()
    assert service in tags and sdk in tags, "a release tags both distributions"
    assert (clone / "CHANGELOG.md").read_text().count(f"## {service} (") == 1
    assert (
        f'__version__ = "{sdk.removeprefix("sdk-v")}"'
        in (clone / "sdk/src/mailroom/_version.py").read_text()
    )
    assert _git(clone, "status", "--porcelain") == ""

    _commit(clone, "sdk/README.md", "fix(sdk): a fix to the client")
    assert _next_tag(clone, ".") == service, "an SDK fix releases no service"
    assert _next_tag(clone, "sdk") == _bump(sdk, "patch")

    _commit(clone, "server/__init__.py", "feat(server)!: a breaking change to the service")
    assert _next_tag(clone, ".") == _bump(service, "minor"), "breaking on 0.x bumps the minor"
    assert _next_tag(clone, "sdk") == _bump(sdk, "patch")

    _commit(clone, "proto/mailroom/v1/mail.proto", "feat(proto): a new field")
    assert _next_tag(clone, "sdk") == _bump(sdk, "minor"), "the stubs come from proto/"
    assert _next_tag(clone, ".") == _bump(service, "minor")


def _version_of(pyproject: Path) -> str:
    return tomllib.loads(pyproject.read_text())["project"]["version"]


def test_a_release_writes_each_version_where_it_is_read(clone):
    _run([sys.executable, "scripts/release.py", "version"], clone)
    service = _version_of(clone / "pyproject.toml")
    _commit(clone, "sdk/src/mailroom/client.py", "fix(sdk): a fix to the client")

    _run([sys.executable, "scripts/release.py", "version"], clone)
    sdk = _version_of(clone / "sdk/pyproject.toml")
    assert _next_tag(clone, "sdk") == f"sdk-v{sdk}"
    assert f'__version__ = "{sdk}"' in (clone / "sdk/src/mailroom/_version.py").read_text()
    assert f"## sdk-v{sdk} (" in (clone / "sdk/CHANGELOG.md").read_text()
    assert "a fix to the client" in (clone / "sdk/CHANGELOG.md").read_text()
    assert _version_of(clone / "pyproject.toml") == service, "the service is not released"
    assert _git(clone, "log", "-1", "--format=%s").strip() == f"chore(release): mailroom-sdk {sdk}"
    assert _git(clone, "status", "--porcelain") == ""
