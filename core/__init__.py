"""Mailroom's shared core: settings, errors, logging, the delivery queue and the email store.

The API (``server``) and the workers (``workers``) both build on it; it imports neither.
"""
