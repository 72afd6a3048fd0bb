"""Validation of backend keys and escaping of user-supplied names into key segments.

Backend keys are ``/``-separated paths relative to a store's root. They are rejected, before
any request, when they could escape the root or mean two different things on two backends.
User names (source ids, stream ids, projection names, KV keys) are percent-encoded into a
single segment, so no name can contain a separator or collide with another name's prefix.
"""

from __future__ import annotations

import hashlib
import urllib.parse

__all__ = [
    "MAX_SEGMENT_LENGTH",
    "escape_name",
    "join_key",
    "name_segment",
    "unescape_name",
    "validate_key",
    "validate_prefix",
]

_ESCAPE_SAFE = "-_.~"


def validate_key(key: object) -> str:
    """Return ``key`` if it is a safe object key, else raise ``ValueError``/``TypeError``.

    A safe key is a non-empty str encodable as UTF-8, with no NUL, backslash, leading or
    trailing ``/``, empty segment, ``.`` or ``..`` segment.

    Raises:
        TypeError: if ``key`` is not a str.
        ValueError: if ``key`` is empty or otherwise not a safe key (see above).
    """
    if not isinstance(key, str):
        raise TypeError(f"object key must be str, not {type(key).__name__}")
    if not key:
        raise ValueError("object key must not be empty")
    _check_path(key, what="object key")
    return key


def validate_prefix(prefix: object) -> str:
    """Return ``prefix`` with any trailing ``/`` removed; ``""`` means the whole store.

    Raises:
        TypeError: if ``prefix`` is not a str.
    """
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
    stripped = prefix.rstrip("/")
    if stripped:
        _check_path(stripped, what="prefix")
    return stripped


def _check_path(path: str, *, what: str) -> None:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {path!r} is not valid UTF-8") from exc
    if "\x00" in path:
        raise ValueError(f"{what} {path!r} contains NUL")
    if "\\" in path:
        raise ValueError(f"{what} {path!r} contains a backslash")
    if path.startswith("/") or path.endswith("/"):
        raise ValueError(f"{what} {path!r} must not start or end with '/'")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"{what} {path!r} has an empty, '.' or '..' segment")


def escape_name(name: object, *, what: str = "name") -> str:
    """Percent-encode a user-supplied name into one key segment that can never escape.

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: for an empty name, a NUL, or text that is not valid UTF-8 (lone surrogates).
    """
    if not isinstance(name, str):
        raise TypeError(f"{what} must be str, not {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    if "\x00" in name:
        raise ValueError(f"{what} {name!r} contains NUL")
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {name!r} is not valid UTF-8") from exc
    escaped = urllib.parse.quote_from_bytes(encoded, safe=_ESCAPE_SAFE)
    if escaped in (".", ".."):
        return escaped.replace(".", "%2E")
    return escaped


def unescape_name(segment: str) -> str:
    """Invert :func:`escape_name`."""
    return urllib.parse.unquote(segment, encoding="utf-8", errors="strict")


def join_key(*parts: str) -> str:
    """Join non-empty key parts with ``/``."""
    return "/".join(part for part in parts if part)


MAX_SEGMENT_LENGTH = 200
"""Longest key segment a user name becomes; longer escaped names are shortened (below).

Local file systems refuse file names over 255 bytes and S3 keys over 1,024 bytes, so a
1,000-character id cannot simply be percent-encoded into one segment."""
_SHORTENED_PREFIX = 120
_SHORTENED_MARK = "%~"


def name_segment(name: object, *, what: str = "name") -> str:
    """The single key segment a user-supplied name (query id, projection name, stream id)
    lives under: :func:`escape_name`, shortened when too long.

    An escaped name longer than :data:`MAX_SEGMENT_LENGTH` becomes its first 120 escaped
    characters, ``%~`` and the SHA-256 of the whole name in hex. ``escape_name`` never
    emits ``%~`` (a ``%`` is always followed by two hex digits there), so a shortened
    segment cannot equal any other name's plain segment, and SHA-256 makes two long names
    sharing a segment infeasible; stores still record the full name inside their objects
    and check it on read. Raises ``TypeError``/``ValueError`` like ``escape_name``.
    """
    escaped = escape_name(name, what=what)
    if len(escaped) <= MAX_SEGMENT_LENGTH:
        return escaped
    head = escaped[:_SHORTENED_PREFIX]
    cut = head.rfind("%", len(head) - 2)
    if cut != -1:
        head = head[:cut]  # never end on half of a %XX escape
    digest = hashlib.sha256(str(name).encode("utf-8")).hexdigest()
    return f"{head}{_SHORTENED_MARK}{digest}"
