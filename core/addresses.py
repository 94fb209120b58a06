r"""The header-safety and address rules shared by the API's validation and the MIME builder.

One home for what may go into a header, so that whatever the API accepts, the MIME builder
(``workers/mime.py``) can build, and a reader parses back the same recipients and subject:

* No control characters (C0, DEL, C1: NUL, tab, VT, FF, ``\x1c``-``\x1e``, U+0085) and no
  Unicode line or paragraph separators (U+2028, U+2029) in a header value: Python's ``email``
  package refuses any value that ``str.splitlines`` splits ("Header values may not contain
  linefeed"), and a raw control character in a header is not RFC 5322.
* One address per entry (``a@x.com, b@x.com`` is two), no groups, parsed by the same header
  parser the MIME builder's readers use.
* Internationalized domains are accepted. When the local part is ASCII the address is kept in
  its IDNA (ASCII) form, so the envelope and the headers need no SMTPUTF8; only a non-ASCII
  local part needs it (:func:`needs_smtputf8`).
"""

from __future__ import annotations

import base64
import functools
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from email.errors import NonASCIILocalPartDefect
from email.policy import default as _default_policy

import idna
from email_validator import EmailNotValidError, validate_email

#: RFC 5321 4.5.3.1.3: the longest path (address) in octets.
MAX_ADDRESS_OCTETS = 254
#: The longest display name: its encoded word (up to 4 bytes a character, base64) stays within
#: a header line.
MAX_DISPLAY_NAME_CHARS = 128
#: RFC 5322 2.1.1: the longest line. An address entry (display name included) may not be longer.
MAX_HEADER_LINE_CHARS = 998

# What str.splitlines() splits on besides CR and LF; the email package refuses them in headers.
_LINE_BREAKS = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
# A space and the whitespace after it: a reader's parse of a display name makes it one space.
_SPACES = re.compile(r" \s+")
# A bare ASCII dot-atom address, what most entries are. The header parser would hand it back
# unchanged, without a name or a defect, and it costs about three times email-validator's checks
# on the accept path: such entries skip it.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_BARE_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


class AddressError(ValueError):
    """An address entry that cannot be used; the message says why (no field name)."""


def header_unsafe(value: str) -> str | None:
    """Say what makes ``value`` unusable in a header, or None when it is safe.

    Refused: NUL, every other control character (category Cc, tab included), and the line and
    paragraph separators.
    """
    for char in value:
        if char == "\x00":
            return "must not contain NUL"
        if char in _LINE_BREAKS or unicodedata.category(char) in ("Cc", "Zl", "Zp"):
            return f"must not contain control or line-break characters (U+{ord(char):04X})"
    return None


def needs_smtputf8(address: str) -> bool:
    """Whether a stored address (``Name <a@b>`` or ``a@b``) needs SMTPUTF8: a non-ASCII addr-spec.

    Stored addresses keep the IDNA form of their domain when the local part is ASCII, so this is
    true only for a non-ASCII local part (or an address stored before that rule).
    """
    if address.isascii():  # then so is any addr-spec in it: no parse needed
        return False
    try:
        parsed = _default_policy.header_factory("to", address)
        specs = [a.addr_spec for a in parsed.addresses]
    except Exception:
        specs = [address]
    return not all(spec.isascii() for spec in specs)


@dataclass(frozen=True)
class ParsedAddress:
    """One checked address: its display name ("" when none) and its addr-spec."""

    display_name: str
    addr_spec: str

    def __str__(self) -> str:
        """``Name <addr>`` (the name quoted as needed) or the bare ``addr``."""
        if not self.display_name:
            return self.addr_spec
        name = self.display_name
        if not (name.isascii() and all(word.isalnum() for word in name.split(" "))):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{name} <{self.addr_spec}>"


def parse_address(value: str) -> ParsedAddress:
    """Check one address entry (``Name <a@b.c>`` or ``a@b.c``) and return it normalised.

    The domain is lower-cased, and kept in (or converted to) its IDNA form when the local part
    is ASCII. Syntax only: no DNS lookups.

    Raises:
        AddressError: Why the entry is refused.
    """
    if len(value) <= MAX_HEADER_LINE_CHARS and _BARE_ADDRESS.fullmatch(value):
        return _checked(value, display_name="", entry=value)
    return _parse_entry(value)


# Senders repeat (each service has its From), and so do many recipients: the header parser's
# answers for entries with a name are kept. An AddressError is not cached.
@functools.lru_cache(maxsize=4096)
def _parse_entry(value: str) -> ParsedAddress:
    """:func:`parse_address` through the header parser: names, quoting, any entry."""
    unsafe = header_unsafe(value)
    if unsafe:
        raise AddressError(unsafe)
    if not value.strip():
        raise AddressError("must not be empty")
    if len(value) > MAX_HEADER_LINE_CHARS:
        raise AddressError(f"at most {MAX_HEADER_LINE_CHARS} characters")
    try:
        header = _default_policy.header_factory("to", value)
        groups = header.groups
        addresses = header.addresses
        # A non-ASCII local part is what SMTPUTF8 is for: accepted (see needs_smtputf8).
        defects = [d for d in header.defects if not isinstance(d, NonASCIILocalPartDefect)]
    except Exception:
        raise AddressError(f"{value!r} is not a valid email address") from None
    if len(addresses) > 1:
        raise AddressError("one address per entry")
    if defects or len(addresses) != 1 or len(groups) != 1:
        raise AddressError(f"{value!r} is not a valid email address")
    if groups[0].display_name is not None:
        raise AddressError("one address per entry, not a group")
    address = addresses[0]
    # Leading and trailing blanks of a name do not survive a reader's parse, nor does a space
    # followed by more whitespace (U+00A0, U+3000...): the email package reads that as one space,
    # even within an encoded word.
    name = _SPACES.sub(" ", address.display_name).strip()
    unsafe = header_unsafe(name)
    if unsafe:
        raise AddressError(f"the display name {unsafe}")
    if len(name) > MAX_DISPLAY_NAME_CHARS:
        raise AddressError(f"the display name has more than {MAX_DISPLAY_NAME_CHARS} characters")
    return _checked(address.addr_spec, display_name=name, entry=value)


def _checked(addr_spec: str, *, display_name: str, entry: str) -> ParsedAddress:
    """email-validator's syntax checks of an addr-spec, and the normalised address."""
    try:
        checked = validate_email(addr_spec, check_deliverability=False)
    except EmailNotValidError as exc:
        raise AddressError(f"{entry!r} is not a valid email address: {exc}") from None
    spec = checked.ascii_email or checked.normalized
    if len(spec.encode()) > MAX_ADDRESS_OCTETS:
        raise AddressError(f"the address is longer than {MAX_ADDRESS_OCTETS} bytes")
    return ParsedAddress(display_name=display_name, addr_spec=spec)


def domain_of(address: str) -> str:
    """The IDNA (ASCII), lower-cased domain of an addr-spec; as given when it is not IDNA-able."""
    domain = address.rpartition("@")[2].strip().lower().rstrip(".")
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return domain


# An RFC 2047 encoded word is at most 75 characters: "=?utf-8?b?" + base64 + "?=". 39 bytes of
# text (52 base64 characters, 64 in all) also fit the first line of "Reply-To: " within 78.
_WORD_BYTES = 39


def _plain_header_text(text: str) -> bool:
    return (
        text.isascii()
        and len(text) <= 60
        and "=?" not in text
        and text == text.strip()
        and "  " not in text
        and all(" " <= c <= "~" for c in text)
    )


def encode_header_text(text: str) -> str:
    """``text`` as a header value: as is when short plain ASCII, else RFC 2047 encoded words.

    The words are folded one per line; each is whole (no character is split between two), and
    readers drop the folding between adjacent encoded words, so the text reads back exactly,
    spaces included. (The ``email`` package's own folder loses or adds spaces at folds between
    encoded words of long non-ASCII text; the property test found it.)
    """
    if _plain_header_text(text):
        return text
    words: list[str] = []
    chunk = b""
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(chunk.decode("utf-8"))
            chunk = b""
        chunk += encoded
    if chunk:
        words.append(chunk.decode("utf-8"))
    return "\r\n ".join(
        "=?utf-8?b?" + base64.b64encode(word.encode("utf-8")).decode("ascii") + "?="
        for word in words
    )


# The two forms ``str(ParsedAddress)`` writes for a named entry, which is how the API stores
# them: ``Plain Name <addr>`` and ``"Quoted \\"name\\"" <addr>``.
_STORED_NAMED = re.compile(
    r'(?:(?P<plain>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*)|"(?P<quoted>(?:[^"\\]|\\.)*)")'
    r" <(?P<addr>[^<>\s@]+@[^<>\s@]+)>"
)
_QUOTED_PAIR = re.compile(r"\\(.)")


def _stored_addr_spec(value: str) -> bool:
    """Whether ``value`` is a dot-atom address as validation stores it (lower-case domain)."""
    return bool(_BARE_ADDRESS.fullmatch(value)) and value.rpartition("@")[2].islower()


def stored_address(entry: str) -> ParsedAddress:
    """Split an entry the API stored (``str(parse_address(...))``) into its name and address.

    The worker writes the headers of every email it sends from these: re-checking each
    recipient with the header parser and email-validator was about 8 % of its CPU, for entries
    checked once already. A bare dot-atom address or an entry in one of the stored forms is
    split without a parse; anything else (stored before these rules) goes through
    :func:`parse_address`. A property test checks both ways agree on every stored form.

    Raises:
        AddressError: An entry that does not parse (only one that took the slow way).
    """
    if _stored_addr_spec(entry):
        return ParsedAddress(display_name="", addr_spec=entry)
    named = _STORED_NAMED.fullmatch(entry)
    if named is not None:
        addr = named["addr"]
        if _stored_addr_spec(addr):
            plain = named["plain"]
            name = plain if plain is not None else _QUOTED_PAIR.sub(r"\1", named["quoted"])
            # An encoded word in quotes is decoded by the header parser: the slow way for it.
            fine = name == _SPACES.sub(" ", name).strip() and "=?" not in name
            if name and fine and not header_unsafe(name):
                return ParsedAddress(display_name=name, addr_spec=addr)
    parsed = _parse_stored(entry)
    if isinstance(parsed, str):
        raise AddressError(parsed)
    return parsed


# Entries the fast way does not split repeat too: the default sender, Mailroom <mailroom@localhost>,
# which the address rules refuse (no public domain), was parsed again for every email sent.
@functools.lru_cache(maxsize=1024)
def _parse_stored(entry: str) -> ParsedAddress | str:
    """:func:`parse_address`, with a refusal as its message: both are kept."""
    try:
        return parse_address(entry)
    except AddressError as exc:
        return str(exc)


def address_header(entries: Iterable[str]) -> str:
    """The value of an address header (From, To, Cc, Reply-To) for stored entries.

    Display names are encoded with :func:`encode_header_text`; each address and each entry is on
    a line of its own. An entry that does not parse (stored before these rules) is written as is.
    """
    parts = []
    for entry in entries:
        try:
            parsed = stored_address(entry)
        except AddressError:
            parts.append(entry)
            continue
        if not parsed.display_name:
            parts.append(parsed.addr_spec)
        elif _plain_header_text(parsed.display_name) and all(
            word.isalnum() for word in parsed.display_name.split(" ")
        ):
            parts.append(f"{parsed.display_name} <{parsed.addr_spec}>")
        else:
            # One encoded word, however long (MAX_DISPLAY_NAME_CHARS keeps it within a line):
            # the email package's reader puts a space between adjacent encoded words of a name.
            word = base64.b64encode(parsed.display_name.encode("utf-8")).decode("ascii")
            parts.append(f"=?utf-8?b?{word}?=\r\n <{parsed.addr_spec}>")
    return ",\r\n ".join(parts)
