"""Benchmarks of Mailroom (``make bench``)."""
