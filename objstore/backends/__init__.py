"""Conditional object I/O on memory, local directories, S3 and GCS.

Open a store by URL::

    backend = open_backend("s3://bucket/prefix")          # blocking
    backend = open_async_backend("gs://bucket/prefix")    # asyncio

Supported URLs: ``memory://NAME`` (``memory://`` for a fresh isolated store), a local path
or ``file:///abs/path``, ``s3://bucket[/prefix]`` and ``gs://bucket[/prefix]`` (``gcs://``
too). Extra keyword arguments are fsspec ``storage_options`` for s3fs / gcsfs.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

from objstore.backends._backend import PROBE_PREFIX, AsyncBackend, Backend, ProbeResult
from objstore.backends._base import Buffer, ObjectInfo, ObjectListing, Transport
from objstore.backends._local import LocalTransport
from objstore.backends._memory import MemoryTransport
from objstore.backends._observe import Operation, Outcome, RequestEvent, RequestHook
from objstore.backends._retry import RetryPolicy

__all__ = [
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
    "open_async_backend",
    "open_backend",
    "open_transport",
]

SUPPORTED_URLS = (
    "memory://NAME, a local path, file:///abs/path, s3://bucket[/prefix], gs://bucket[/prefix]"
)


def _bucket_and_prefix(url: str, parsed: urllib.parse.SplitResult) -> tuple[str, str]:
    if not parsed.netloc:
        raise ValueError(f"{url!r} names no bucket; supported forms: {SUPPORTED_URLS}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{url!r}: query strings and fragments are not supported")
    return parsed.netloc, parsed.path.strip("/")


def open_transport(url: str | os.PathLike[str], **storage_options: Any) -> Transport:
    """Build the transport for ``url``; raise ``ValueError`` for an unknown or bad URL."""
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"store URL must be str or a path, not {type(url).__name__}")
    if not url or "\x00" in url:
        raise ValueError(f"invalid store URL {url!r}; supported forms: {SUPPORTED_URLS}")
    if "://" not in url:
        return LocalTransport(url)
    parsed = urllib.parse.urlsplit(url)
    scheme = parsed.scheme.lower()
    if scheme == "memory":
        return MemoryTransport(parsed.netloc + parsed.path)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"{url!r}: file URLs must be local (file:///abs/path)")
        path = urllib.parse.unquote(parsed.path)
        if not path:
            raise ValueError(f"{url!r} names no directory")
        return LocalTransport(path)
    if scheme in ("s3", "s3a"):
        from objstore.backends._s3 import S3Transport

        return S3Transport(*_bucket_and_prefix(url, parsed), **storage_options)
    if scheme in ("gs", "gcs"):
        from objstore.backends._gcs import GCSTransport

        return GCSTransport(*_bucket_and_prefix(url, parsed), **storage_options)
    raise ValueError(f"unsupported store URL {url!r}; supported forms: {SUPPORTED_URLS}")


def open_async_backend(
    url: str | os.PathLike[str],
    *,
    retry: RetryPolicy | None = None,
    verify_fencing: bool = True,
    request_hook: RequestHook | None = None,
    **storage_options: Any,
) -> AsyncBackend:
    """Open the store at ``url`` for asyncio use. See :class:`AsyncBackend` for options."""
    transport = open_transport(url, **storage_options)
    return AsyncBackend(
        transport, retry=retry, verify_fencing=verify_fencing, request_hook=request_hook
    )


def open_backend(
    url: str | os.PathLike[str],
    *,
    retry: RetryPolicy | None = None,
    verify_fencing: bool = True,
    request_hook: RequestHook | None = None,
    **storage_options: Any,
) -> Backend:
    """Open the store at ``url`` for blocking use. See :class:`AsyncBackend` for options."""
    return Backend(
        open_async_backend(
            url,
            retry=retry,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
            **storage_options,
        )
    )
