"""The MIME bytes of an email without attachments, written directly.

Most emails are a text part, or a text and an HTML part, with a dozen headers. Building them
with the ``email`` package (a message object, header objects re-parsed for each parameter, the
generator) was about a fifth of the worker's CPU per delivered email. This module writes the
same bytes the package would: the same headers in the same order, the same choice of
``7bit`` or ``8bit``, the same ``multipart/alternative`` layout. Whatever it cannot write exactly
(a body line over 998 bytes, which the package encodes as quoted-printable or base64; a header
the package would fold again) it leaves to ``workers.mime``: :func:`render` answers None.
A property test compares both ways byte for byte.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

# RFC 5322's line limit: the MIME policy of ``workers.mime`` is set to it as well.
from core.addresses import MAX_HEADER_LINE_CHARS as MAX_LINE


def _header_lines(headers: Sequence[tuple[str, str]], *, utf8: bool) -> bytes | None:
    """``Name: value`` lines as the package's generator writes raw values, or None.

    None when the generator would fold a value again (a line too long) or could not encode it
    (non-ASCII without SMTPUTF8).
    """
    out: list[str] = []
    for name, value in headers:
        lines = value.splitlines()
        if lines and len(lines[0]) + len(name) + 2 > MAX_LINE:
            return None
        if any(len(line) > MAX_LINE for line in lines[1:]):
            return None
        out.append(f"{name}: " + "\r\n".join(lines) + "\r\n")
    text = "".join(out)
    if not utf8 and not text.isascii():
        return None
    return text.encode("utf-8")


def _body(text: str) -> tuple[str, bytes] | None:
    """The transfer encoding and CRLF body the package picks for ``text``, or None.

    None when a line is longer than 998 bytes: then the package encodes the body.
    """
    lines = text.encode("utf-8").splitlines()
    if any(len(line) > MAX_LINE for line in lines):
        return None
    body = b"\r\n".join(lines) + b"\r\n"
    return ("7bit" if body.isascii() else "8bit"), body


def _text_part(subtype: str, cte: str) -> bytes:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}\r\n'
    ).encode("ascii")


def _boundary(*bodies: bytes) -> bytes:
    """A boundary in the package's form that occurs nowhere in the bodies.

    (The package only looks for it at the start of a line; anywhere is stricter and as good.)
    """
    while True:
        boundary = b"=" * 15 + str(secrets.randbits(63)).rjust(19, "0").encode("ascii") + b"=="
        if not any(b"--" + boundary in body for body in bodies):
            return boundary


def render(headers: Sequence[tuple[str, str]], text: str, html: str, *, utf8: bool) -> bytes | None:
    """The RFC 5322 bytes of a text (and HTML) email, or None to leave it to the package.

    Args:
        headers: The message's own headers in order, values ready to write (folded with CRLF).
        text: The plain-text body.
        html: The HTML alternative; empty for none.
        utf8: Whether headers may be UTF-8 (SMTPUTF8).
    """
    head = _header_lines(headers, utf8=utf8)
    plain = _body(text)
    if head is None or plain is None:
        return None
    if not html:
        return b"".join(
            (head, _text_part("plain", plain[0]), b"MIME-Version: 1.0\r\n\r\n", plain[1])
        )
    rich = _body(html)
    if rich is None:
        return None
    boundary = _boundary(plain[1], rich[1])
    return b"".join(
        (
            head,
            b"MIME-Version: 1.0\r\n",
            b'Content-Type: multipart/alternative; boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\n",
            _text_part("plain", plain[0]),
            b"\r\n",
            plain[1],
            b"\r\n--" + boundary + b"\r\n",
            _text_part("html", rich[0]),
            # The package's HTML part is a message of its own: it gets a MIME-Version too.
            b"MIME-Version: 1.0\r\n\r\n",
            rich[1],
            b"\r\n--" + boundary + b"--\r\n",
        )
    )
