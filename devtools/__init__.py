"""Development helpers: local Envoy config, SMTP sink and other tools for `make dev` and tests."""
