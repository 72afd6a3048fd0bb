"""Where a store lives: its backend (from what users pass to a constructor) and the key
segments user names become."""

from __future__ import annotations

import hashlib
import os
from typing import Any

from objstore._keys import escape_name
from objstore.backends import AsyncBackend, Backend, open_async_backend

__all__ = ["MAX_SEGMENT_LENGTH", "StoreLocation", "as_async_backend", "name_segment"]

StoreLocation = str | os.PathLike[str] | Backend | AsyncBackend
"""A store URL or path, or an already opened backend."""


def as_async_backend(
    url_or_backend: StoreLocation, storage_options: dict[str, Any] | None = None
) -> AsyncBackend:
    """The async backend for ``url_or_backend`` (a URL/path is opened with the options)."""
    if isinstance(url_or_backend, AsyncBackend):
        backend = url_or_backend
    elif isinstance(url_or_backend, Backend):
        backend = url_or_backend.async_backend
    else:
        return open_async_backend(url_or_backend, **(storage_options or {}))
    if storage_options:
        raise ValueError("storage_options apply only when a URL is given, not an opened backend")
    return backend


MAX_SEGMENT_LENGTH = 200
"""Longest key segment a user name becomes; longer escaped names are shortened (below).

Local file systems refuse file names over 255 bytes and S3 keys over 1,024 bytes, so a
1,000-character id cannot simply be percent-encoded into one segment."""
_SHORTENED_PREFIX = 120
_SHORTENED_MARK = "%~"


def name_segment(name: object, *, what: str = "name") -> str:
    """The single key segment a user-supplied name (query id, projection name, stream id)
    lives under: :func:`~objstore._keys.escape_name`, shortened when too long.

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
