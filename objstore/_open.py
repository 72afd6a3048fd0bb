"""Turning what users pass to a store constructor into an :class:`AsyncBackend`."""

from __future__ import annotations

import os
from typing import Any

from objstore.backends import AsyncBackend, Backend, open_async_backend

__all__ = ["StoreLocation", "as_async_backend"]

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
