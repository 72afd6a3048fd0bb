"""Turning what users pass to a store constructor into an :class:`AsyncBackend`."""

from __future__ import annotations

import os
from typing import Any

from objstore.backends import (
    AsyncBackend,
    Backend,
    RequestHook,
    TransportFactory,
    open_async_backend,
)

__all__ = ["StoreLocation", "as_async_backend"]

StoreLocation = str | os.PathLike[str] | Backend | AsyncBackend
"""A store URL or path, or an already opened backend."""


def as_async_backend(
    url_or_backend: StoreLocation,
    storage_options: dict[str, Any] | None = None,
    *,
    verify_fencing: bool = True,
    request_hook: RequestHook | None = None,
    transport: TransportFactory | None = None,
) -> AsyncBackend:
    """The async backend for ``url_or_backend``: a URL/path is opened with the options,
    through ``transport`` when given (else the factory registered for its scheme).

    An opened backend keeps its own settings (open the backend with them instead);
    ``verify_fencing=False`` is accepted when the backend already skips the probe.

    Raises:
        ValueError: if ``url_or_backend`` is an opened backend and ``storage_options``,
            ``request_hook``, ``transport`` or ``verify_fencing=False`` (for a backend that
            probes) is given too.
    """
    if isinstance(url_or_backend, AsyncBackend):
        backend = url_or_backend
    elif isinstance(url_or_backend, Backend):
        backend = url_or_backend.async_backend
    else:
        return open_async_backend(
            url_or_backend,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
            transport=transport,
            **(storage_options or {}),
        )
    if storage_options:
        raise ValueError("storage_options apply only when a URL is given, not an opened backend")
    if transport is not None:
        raise ValueError(
            "transport applies only when a URL is given; pass it to open_backend() instead"
        )
    if request_hook is not None:
        raise ValueError(
            "request_hook applies only when a URL is given; pass it to open_backend() instead"
        )
    if not verify_fencing and backend.verify_fencing:
        raise ValueError(
            "verify_fencing=False applies only when a URL is given; open the backend with "
            "open_backend(url, verify_fencing=False) instead"
        )
    return backend
