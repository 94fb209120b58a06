import os

from core.settings import DEFAULTS, Settings


def test_environment_with_prefix_and_nested_delimiter(monkeypatch):
    monkeypatch.setenv("MAILROOM_GRPC_PORT", "6000")
    monkeypatch.setenv("MAILROOM_SMTP__HOST", "relay.example.com")
    monkeypatch.setenv("MAILROOM_PROVIDERS__SENDGRID__API_KEY", "sg-key")
    monkeypatch.setenv("MAILROOM_PROVIDER_ORDER", '["sendgrid", "smtp"]')
    settings = Settings()
    assert settings.grpc_port == 6000
    assert settings.smtp.host == "relay.example.com"
    assert settings.providers.sendgrid.api_key.get_secret_value() == "sg-key"
    assert settings.provider_order == ["sendgrid", "smtp"]


def test_config_file_sits_below_the_environment(monkeypatch, tmp_path):
    config = tmp_path / "mailroom.toml"
    config.write_text('grpc_port = 7000\nqueue_name = "bulk"\n[smtp]\nport = 2525\n')
    monkeypatch.setenv("MAILROOM_CONFIG", str(config))
    monkeypatch.setenv("MAILROOM_GRPC_PORT", "6000")
    settings = Settings()
    assert settings.grpc_port == 6000  # the environment wins
    assert settings.queue_name == "bulk"
    assert settings.smtp.port == 2525


def test_secrets_have_no_defaults():
    settings = Settings()
    assert settings.smtp.password is None
    assert settings.providers.sendgrid.api_key is None
    assert settings.providers.ses.secret_access_key is None
    assert settings.api_keys == []
    assert "sg-key" not in repr(Settings(providers={"sendgrid": {"api_key": "sg-key"}}))


def test_defaults_are_the_settings_own_whatever_the_environment(monkeypatch):
    for key in list(os.environ):
        if key.startswith("MAILROOM_"):
            monkeypatch.delenv(key)
    assert DEFAULTS.model_dump() == Settings().model_dump()
    monkeypatch.setenv("MAILROOM_LEASE_SECONDS", "5")
    assert Settings().lease_seconds == 5
    assert Settings.model_construct().lease_seconds == DEFAULTS.lease_seconds != 5
