"""``mailroom-admin``: the operator's command line (providers, dead letters)."""
