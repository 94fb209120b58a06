"""Release the service and the SDK with python-semantic-release (PSR); never pushes or publishes.

Usage:
    python scripts/release.py dry-run   # each distribution's next version and changelog
    python scripts/release.py version   # bump, write the changelogs, commit and tag, locally
    python scripts/release.py changelog # rewrite the changelogs (unreleased changes included)

The service (``mailroom``, tags ``v<version>``) is configured in the repository's pyproject.toml
and released from the root; the SDK (``mailroom-sdk``, tags ``sdk-v<version>``) in
sdk/pyproject.toml and released from sdk/, as PSR's monorepo guide has it: its path filters are
relative to the directory it runs in.

``dry-run`` changes nothing here: it clones the repository (committed history and tags, as a
release would see them) into a temporary directory, lets PSR write the versions and changelogs
there without committing or tagging, and prints them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# PSR's configuration reads the remote's address from this variable when it is set, else from
# `git remote get-url origin`; PSR refuses to start without one, although without pushing and
# VCS releases it never uses it.
REMOTE_ENV = "MAILROOM_RELEASE_REMOTE"


@dataclass(frozen=True)
class Distribution:
    """One releasable distribution of the repository.

    Attributes:
        name: The distribution's name.
        directory: Where PSR runs for it, relative to the repository's root.
        changelog: Its changelog, relative to the repository's root.
    """

    name: str
    directory: str
    changelog: str


DISTRIBUTIONS = (
    Distribution("mailroom", ".", "CHANGELOG.md"),
    Distribution("mailroom-sdk", "sdk", "sdk/CHANGELOG.md"),
)


def _env(repo: Path) -> dict[str, str]:
    """Return the environment to run PSR in: a remote address when the clone has no ``origin``."""
    env = dict(os.environ)
    has_origin = (
        subprocess.run(
            ["git", "-C", str(repo), "remote", "get-url", "origin"],
            capture_output=True,
            check=False,
        ).returncode
        == 0
    )
    if not has_origin:
        env.setdefault(REMOTE_ENV, repo.as_uri())
    return env


def semantic_release(repo: Path, dist: Distribution, *args: str) -> str:
    """Run PSR for one distribution and return what it printed on stdout.

    Args:
        repo: The repository's root.
        dist: The distribution.
        *args: PSR's arguments.

    Returns:
        PSR's standard output, stripped.

    Raises:
        SystemExit: PSR failed; its output has been shown.
    """
    proc = subprocess.run(
        [sys.executable, "-m", "semantic_release", *args],
        cwd=repo / dist.directory,
        env=_env(repo),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"semantic-release {' '.join(args)} failed for {dist.name}")
    return proc.stdout.strip()


def _tags(repo: Path) -> set[str]:
    """Return the repository's tags."""
    out = subprocess.run(
        ["git", "-C", str(repo), "tag", "--list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(out.split())


def dry_run() -> None:
    """Print each distribution's last and next version and the changelog it would write."""
    with tempfile.TemporaryDirectory(prefix="mailroom-release-") as tmp:
        clone = Path(tmp) / "mailroom"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        for dist in DISTRIBUTIONS:
            next_tag = semantic_release(clone, dist, "version", "--print-tag")
            last_tag = semantic_release(clone, dist, "version", "--print-last-released-tag")
            print(f"== {dist.name}: last release {last_tag or 'none'}", end="")
            if next_tag in _tags(clone):
                print(", nothing to release")
                continue
            print(f", next {next_tag}")
            semantic_release(
                clone,
                dist,
                "version",
                "--no-commit",
                "--no-tag",
                "--no-push",
                "--no-vcs-release",
                "--skip-build",
            )
            print(f"-- {dist.changelog} would read:")
            print((clone / dist.changelog).read_text(encoding="utf-8"))


def release() -> None:
    """Release every distribution with changes: bump, changelog, commit and tag, locally."""
    for dist in DISTRIBUTIONS:
        print(f"== {dist.name}")
        print(
            semantic_release(ROOT, dist, "version", "--no-push", "--no-vcs-release", "--skip-build")
        )


def changelog() -> None:
    """Rewrite each distribution's changelog from the history, without releasing anything."""
    for dist in DISTRIBUTIONS:
        semantic_release(ROOT, dist, "changelog")
        print(f"wrote {dist.changelog}")


def main(argv: list[str] | None = None) -> None:
    """Run the command named on the command line.

    Args:
        argv: The arguments, without the program's name; ``sys.argv``'s by default.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    args = parser.parse_args(argv)
    COMMANDS[args.command]()


COMMANDS = {"dry-run": dry_run, "version": release, "changelog": changelog}


if __name__ == "__main__":
    main()
