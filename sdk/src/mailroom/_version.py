"""The SDK's version, written by python-semantic-release at each release (sdk/pyproject.toml)."""

__version__ = "0.1.0"
