"""Bare addresses skip the header parser: the answer must be the one the parser path gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.addresses import (
    AddressError,
    ParsedAddress,
    _parse_entry,
    needs_smtputf8,
    parse_address,
    stored_address,
)

ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
# Dots, hyphens and digits where they are legal and where they are not: both outcomes occur.
local_parts = st.text(alphabet=ATEXT + ".", min_size=1, max_size=70)
domains = st.text(alphabet="abcXYZ019-.", min_size=1, max_size=70)


def _outcome(parse, value: str) -> ParsedAddress | str:  # type: ignore[no-untyped-def]
    try:
        return parse(value)
    except AddressError:
        return "refused"


@settings(max_examples=600, deadline=None)
@given(local=local_parts, domain=domains)
def test_a_bare_address_is_accepted_or_refused_as_the_header_parser_path_decides(
    local: str, domain: str
) -> None:
    value = f"{local}@{domain}"
    assert _outcome(parse_address, value) == _outcome(_parse_entry, value)


@pytest.mark.parametrize(
    "value",
    [
        "alice@example.com",
        "Alice.Smith+tag@Example.COM",
        "o'brien@example.co.uk",
        "a..b@example.com",
        ".a@example.com",
        "a@-example.com",
        "a@example",
        "x" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
    ],
)
def test_known_bare_addresses_agree(value: str) -> None:
    assert _outcome(parse_address, value) == _outcome(_parse_entry, value)


def test_an_entry_with_a_name_still_goes_through_the_header_parser() -> None:
    parsed = parse_address("Alice <ALICE@Example.com>")
    assert parsed == ParsedAddress(display_name="Alice", addr_spec="ALICE@example.com")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60))
def test_an_ascii_entry_never_needs_smtputf8(entry: str) -> None:
    assert needs_smtputf8(entry) is False


def test_a_non_ascii_local_part_needs_smtputf8() -> None:
    assert needs_smtputf8("José <josé@example.com>") is True
    assert needs_smtputf8("José <jose@example.com>") is False


# -- stored entries: the worker splits them without a parse ---------------------------------------

names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0x3000),
    min_size=1,
    max_size=40,
) | st.text(alphabet='abcXYZ019 "\\=?,.<>@', min_size=1, max_size=30)


@settings(max_examples=800, deadline=None)
@given(name=names, local=local_parts, domain=domains)
def test_a_stored_entry_splits_as_the_parser_reads_it(name: str, local: str, domain: str) -> None:
    address = f"{local}@{domain}"
    for entry in (f"{name} <{address}>", f'"{name}" <{address}>', address):
        try:
            stored = str(parse_address(entry))
        except AddressError:
            continue
        assert stored_address(stored) == parse_address(stored)


@pytest.mark.parametrize(
    "stored",
    [
        "alice@example.com",
        "Alice Smith <alice@example.com>",
        '"Smith, Alice" <alice@example.com>',
        '"say \\"hi\\" \\\\ bye" <a@example.com>',
        '"José" <jose@example.com>',
        '"=?utf-8?q?x?=" <a@example.com>',
        "Alice <alice@Example.com>",  # stored before normalisation: the slow way agrees
        "josé@example.com",
    ],
)
def test_known_stored_entries_split_as_the_parser_reads_them(stored: str) -> None:
    assert _outcome(stored_address, stored) == _outcome(parse_address, stored)


def test_a_refused_stored_entry_is_refused_each_time_from_one_parse(monkeypatch) -> None:
    from core import addresses

    calls: list[str] = []
    real = addresses.parse_address

    def counted(value: str) -> ParsedAddress:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(addresses, "parse_address", counted)
    addresses._parse_stored.cache_clear()
    for _ in range(3):  # the default sender: localhost is no public domain
        with pytest.raises(AddressError):
            stored_address("Mailroom <mailroom@localhost>")
    assert calls == ["Mailroom <mailroom@localhost>"]
