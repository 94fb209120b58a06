# Mailroom's commands. `make test` is what CI runs (.ci/run); it installs what it needs first.
#
#   make dev            run everything locally in the foreground (scripts/dev.py; data in var/)
#   make test           install tools, lint, then all tests; extra pytest args: PYTEST_ARGS='-k smtp'
#   make lint           ruff, mypy, import layers (import-linter), generated-code check, buf lint
#   make proto          regenerate the stubs, Envoy's descriptor set and envoy/openapi.yaml from proto/
#   make bench          run the benchmarks (python -m bench)
#   make compose-check  validate docker-compose.yml
#   make release-dry-run  the next version and changelog of the service and the SDK; changes nothing
#   make clean          remove var/ (the dev PostgreSQL cluster too) and caches (keeps .venv)

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV := $(ROOT)/.venv
GO := $(or $(shell command -v go 2>/dev/null),$(wildcard /usr/local/go/bin/go))
GOPATH_DIR := $(if $(GO),$(shell $(GO) env GOPATH 2>/dev/null),$(HOME)/go)
GOBIN_DIR := $(firstword $(subst :, ,$(GOPATH_DIR)))/bin

# Every recipe finds the virtualenv's tools, the Go-built ones and Go itself.
export PATH := $(VENV)/bin:$(GOBIN_DIR):/usr/local/go/bin:$(PATH)

PYTHON := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help tools dev test lint proto bench compose-check release-dry-run clean

help:
	@sed -n 's/^#   //p' $(firstword $(MAKEFILE_LIST))

tools:
	@$(ROOT)/scripts/install_tools.sh

dev: tools
	$(PYTHON) scripts/dev.py

test: tools
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory compose-check
	$(PYTHON) -m pytest $(PYTEST_ARGS)

lint: tools
	ruff check .
	ruff format --check .
	mypy core server workers admin devtools sdk/src/mailroom
	lint-imports
	$(PYTHON) scripts/gen_proto.py --check
	@if command -v buf >/dev/null 2>&1; then echo "buf lint"; buf lint; \
	else echo "buf not installed: skipping buf lint (scripts/install_tools.sh installs it)"; fi

proto: tools
	$(PYTHON) scripts/gen_proto.py

bench: tools
	$(PYTHON) -m bench

# Debian's docker-compose (installed by scripts/install_tools.sh) validates the file without an
# engine; the docker client's compose plugin does too where it is installed.
compose-check: tools
	@if command -v docker-compose >/dev/null 2>&1; then docker-compose config -q; \
	elif docker compose version >/dev/null 2>&1; then docker compose config -q; \
	else echo "no docker-compose: install it with 'apt-get install docker-compose'" >&2; exit 1; fi
	@echo "docker-compose.yml is valid"

# python-semantic-release in a temporary clone (committed history and tags): no commit, tag or
# push here. `python scripts/release.py version` makes the releases (local commits and tags).
release-dry-run: tools
	$(PYTHON) scripts/release.py dry-run

clean:
	rm -rf var build dist .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.venv -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d -print0 \
		| xargs -0 rm -rf
