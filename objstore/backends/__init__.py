"""Conditional object I/O on memory, local directories, S3 and GCS, and any transport you add.

Open a store by URL::

    backend = open_backend("s3://bucket/prefix")          # blocking
    backend = open_async_backend("gs://bucket/prefix")    # asyncio

Built-in URLs: ``memory://NAME`` (``memory://`` for a fresh isolated store), a local path
or ``file:///abs/path``, ``s3://bucket[/prefix]`` and ``gs://bucket[/prefix]`` (``gcs://``
too). Extra keyword arguments are ``storage_options`` for the transport (for s3fs / gcsfs on
S3 and GCS); options a transport does not use are refused with ``ValueError``.

Other schemes: :func:`register_transport` (or an entry point in the ``objstore.transports``
group) maps a scheme to a factory; ``open_backend(url, transport=factory)`` picks an
implementation for one call. A transport declares what it can do with class attributes
(:attr:`Transport.single_put_limit`, :attr:`Transport.persistent`,
:attr:`Transport.bounded_streaming`) that stores consult instead of the scheme, and proves
itself with the shipped contract suite, :class:`objstore.testing.contract.BackendContract`.
"""

from __future__ import annotations

import os
from typing import Any

from objstore.backends._backend import PROBE_PREFIX, AsyncBackend, Backend, ProbeResult
from objstore.backends._base import Buffer, ObjectInfo, ObjectListing, Transport
from objstore.backends._local import LocalTransport
from objstore.backends._memory import MemoryTransport
from objstore.backends._observe import Operation, Outcome, RequestEvent, RequestHook
from objstore.backends._registry import (
    ENTRY_POINT_GROUP,
    TransportFactory,
    open_transport,
    register_transport,
    registered_schemes,
    unregister_transport,
)
from objstore.backends._retry import RetryPolicy

__all__ = [
    "ENTRY_POINT_GROUP",
    "PROBE_PREFIX",
    "AsyncBackend",
    "Backend",
    "Buffer",
    "LocalTransport",
    "MemoryTransport",
    "ObjectInfo",
    "ObjectListing",
    "Operation",
    "Outcome",
    "ProbeResult",
    "RequestEvent",
    "RequestHook",
    "RetryPolicy",
    "Transport",
    "TransportFactory",
    "open_async_backend",
    "open_backend",
    "open_transport",
    "register_transport",
    "registered_schemes",
    "unregister_transport",
]


def open_async_backend(
    url: str | os.PathLike[str],
    *,
    retry: RetryPolicy | None = None,
    verify_fencing: bool = True,
    request_hook: RequestHook | None = None,
    transport: TransportFactory | None = None,
    **storage_options: Any,
) -> AsyncBackend:
    """Open the store at ``url`` for asyncio use. See :class:`AsyncBackend` for options.

    ``transport`` is the factory to build the transport with instead of the one registered
    for the URL's scheme. Raises ``ValueError`` for a bad or unknown URL and for storage
    options the transport does not use.
    """
    opened = open_transport(url, transport=transport, **storage_options)
    return AsyncBackend(
        opened, retry=retry, verify_fencing=verify_fencing, request_hook=request_hook
    )


def open_backend(
    url: str | os.PathLike[str],
    *,
    retry: RetryPolicy | None = None,
    verify_fencing: bool = True,
    request_hook: RequestHook | None = None,
    transport: TransportFactory | None = None,
    **storage_options: Any,
) -> Backend:
    """Open the store at ``url`` for blocking use; the arguments of
    :func:`open_async_backend`, with the same errors."""
    return Backend(
        open_async_backend(
            url,
            retry=retry,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
            transport=transport,
            **storage_options,
        )
    )
