"""The SDK's version: one value in the package, the distribution and the gRPC user agent."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import mailroom
from mailroom._channel import RetryPolicy, channel_options

SDK = Path(__file__).resolve().parents[3] / "sdk"


def test_version_is_the_distributions():
    # The installed metadata, the package's own file and sdk/pyproject.toml (the two PSR writes
    # at a release) all agree; install_tools.sh reinstalls when a pyproject.toml changes.
    project = tomllib.loads((SDK / "pyproject.toml").read_text())["project"]
    assert mailroom.__version__ == project["version"]
    assert mailroom.__version__ == metadata.version("mailroom-sdk")


def test_channels_announce_the_sdk_and_its_version():
    for retry in (RetryPolicy(), None):
        options = dict(channel_options(retry))
        assert options["grpc.primary_user_agent"] == f"mailroom-sdk/{mailroom.__version__}"


def test_a_callers_user_agent_wins():
    options = channel_options(RetryPolicy(), [("grpc.primary_user_agent", "billing/2.3")])
    assert dict(options)["grpc.primary_user_agent"] == "billing/2.3"
    assert [k for k, _ in options].count("grpc.primary_user_agent") == 1
