"""The release configuration: python-semantic-release knows both distributions and their rules.

tests/integration/test_release.py runs it on a clone of the repository.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _psr_config(pyproject: Path) -> dict:
    return tomllib.loads(pyproject.read_text())["tool"]["semantic_release"]


def test_the_configuration_names_both_distributions():
    service, sdk = _psr_config(ROOT / "pyproject.toml"), _psr_config(ROOT / "sdk/pyproject.toml")
    assert service["tag_format"] == "v{version}"
    assert sdk["tag_format"] == "sdk-v{version}"
    for config in (service, sdk):
        assert config["commit_parser"] == "conventional-monorepo"
        assert config["version_toml"] == ["pyproject.toml:project.version"]
        assert config["allow_zero_version"] is True
        assert config["major_on_zero"] is False
        assert config["publish"]["upload_to_vcs_release"] is False
    # The SDK's version lives in its package too, where PSR rewrites it.
    [variable] = sdk["version_variables"]
    path, name = variable.split(":")
    sdk_version = tomllib.loads((ROOT / "sdk/pyproject.toml").read_text())["project"]["version"]
    assert f'{name} = "{sdk_version}"' in (ROOT / "sdk" / path).read_text()


def test_each_distribution_reads_its_own_paths():
    service = _psr_config(ROOT / "pyproject.toml")["commit_parser_options"]["path_filters"]
    sdk = _psr_config(ROOT / "sdk/pyproject.toml")["commit_parser_options"]["path_filters"]
    # Relative to where each runs: the root for the service, sdk/ for the SDK.
    assert "." in service and "!sdk" in service
    assert "." in sdk and "../proto" in sdk, "the SDK's stubs are generated from proto/"


def test_the_release_tool_is_a_dev_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(
        d.startswith("python-semantic-release") for d in project["optional-dependencies"]["dev"]
    )
