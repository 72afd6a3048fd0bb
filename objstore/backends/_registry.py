"""Which transport serves a URL: a registry of schemes, open to other packages.

A scheme (``s3``, ``gs``, ``memory``, ``myfs``...) maps to a :class:`TransportFactory`, a
callable that takes the whole URL and the caller's ``storage_options`` and returns a
:class:`~objstore.backends.Transport`. The built-in schemes are registered here; another
package adds its own in one of two ways:

* at run time: ``register_transport("myfs", MyTransport.from_url)``;
* without any import by the user: an entry point in the group :data:`ENTRY_POINT_GROUP`
  (``objstore.transports``) whose name is the scheme and whose object is the factory, e.g. in
  ``pyproject.toml``::

      [project.entry-points."objstore.transports"]
      myfs = "myfs_objstore:open_myfs"

  Entry points are read once, the first time a URL names a scheme nobody registered (so
  opening ``s3://`` never scans installed packages), and each is imported only when its
  scheme is first opened. A scheme registered at run time wins over an entry point.

A factory must reject ``storage_options`` it does not use with ``ValueError``, so a typo in an
option never passes unnoticed.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import threading
import urllib.parse
from typing import Any, Protocol

from objstore.backends._base import Transport

__all__ = [
    "ENTRY_POINT_GROUP",
    "TransportFactory",
    "open_transport",
    "register_transport",
    "registered_schemes",
    "unregister_transport",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "objstore.transports"
"""The entry-point group in which installed packages name a factory per scheme."""

BUILT_IN_FORMS = (
    "memory://NAME, a local path, file:///abs/path, s3://bucket[/prefix], gs://bucket[/prefix]"
)

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


class TransportFactory(Protocol):
    """Builds the transport for one URL of a registered scheme.

    Called with the URL exactly as the user gave it (``scheme://...``; a bare local path
    reaches the ``file`` factory as is) and the user's ``storage_options``. Raises
    ``ValueError`` for a URL it cannot serve and for options it does not use.
    """

    def __call__(self, url: str, /, **storage_options: Any) -> Transport:
        """Return a new transport rooted at ``url``."""
        ...


def reject_options(url: str, storage_options: dict[str, Any], accepted: frozenset[str]) -> None:
    """Raise ``ValueError`` naming every option in ``storage_options`` not in ``accepted``.

    Factories call it so that an option a transport would ignore is an error, not a no-op.

    Raises:
        ValueError: naming every option in ``storage_options`` not in ``accepted``.
    """
    unknown = sorted(set(storage_options) - accepted)
    if unknown:
        hint = f"it accepts {', '.join(sorted(accepted))}" if accepted else "it accepts none"
        raise ValueError(
            f"storage option(s) {', '.join(unknown)} are not used by the transport for "
            f"{url!r}; {hint}"
        )


def _bucket_and_prefix(url: str) -> tuple[str, str]:
    parsed = urllib.parse.urlsplit(url)
    if not parsed.netloc:
        raise ValueError(f"{url!r} names no bucket; supported forms: {BUILT_IN_FORMS}")
    if parsed.query or parsed.fragment:
        raise ValueError(f"{url!r}: query strings and fragments are not supported")
    return parsed.netloc, parsed.path.strip("/")


def _open_memory(url: str, /, **storage_options: Any) -> Transport:
    from objstore.backends._memory import MemoryTransport

    reject_options(url, storage_options, frozenset())
    parsed = urllib.parse.urlsplit(url)
    return MemoryTransport(parsed.netloc + parsed.path)


def _open_file(url: str, /, **storage_options: Any) -> Transport:
    from objstore.backends._local import LocalTransport

    reject_options(url, storage_options, frozenset())
    if "://" not in url:
        return LocalTransport(url)
    parsed = urllib.parse.urlsplit(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url!r}: file URLs must be local (file:///abs/path)")
    path = urllib.parse.unquote(parsed.path)
    if not path:
        raise ValueError(f"{url!r} names no directory")
    return LocalTransport(path)


def _open_s3(url: str, /, **storage_options: Any) -> Transport:
    from objstore.backends._s3 import ACCEPTED_OPTIONS, S3Transport

    reject_options(url, storage_options, ACCEPTED_OPTIONS)
    return S3Transport(*_bucket_and_prefix(url), **storage_options)


def _open_gcs(url: str, /, **storage_options: Any) -> Transport:
    from objstore.backends._gcs import ACCEPTED_OPTIONS, GCSTransport

    reject_options(url, storage_options, ACCEPTED_OPTIONS)
    return GCSTransport(*_bucket_and_prefix(url), **storage_options)


_BUILT_IN: dict[str, TransportFactory] = {
    "memory": _open_memory,
    "file": _open_file,
    "s3": _open_s3,
    "s3a": _open_s3,
    "gs": _open_gcs,
    "gcs": _open_gcs,
}

_lock = threading.Lock()
_factories: dict[str, TransportFactory] = dict(_BUILT_IN)
_entry_points_read = False


class _EntryPointFactory:
    """An installed package's factory, imported the first time its scheme is opened."""

    def __init__(self, entry_point: importlib.metadata.EntryPoint) -> None:
        self.entry_point = entry_point
        self._loaded: TransportFactory | None = None

    def __call__(self, url: str, /, **storage_options: Any) -> Transport:
        if self._loaded is None:
            loaded = self.entry_point.load()
            if not callable(loaded):
                raise TypeError(
                    f"entry point {self.entry_point.value!r} of {ENTRY_POINT_GROUP!r} is not "
                    "a transport factory"
                )
            self._loaded = loaded
        return self._loaded(url, **storage_options)

    def __repr__(self) -> str:
        return f"<entry point {self.entry_point.name} = {self.entry_point.value}>"


def _normal_scheme(scheme: object) -> str:
    if not isinstance(scheme, str) or not _SCHEME.fullmatch(scheme.lower()):
        raise ValueError(
            f"invalid URL scheme {scheme!r}: a letter, then letters, digits, '+', '-' or '.'"
        )
    return scheme.lower()


def register_transport(scheme: str, factory: TransportFactory, *, replace: bool = False) -> None:
    """Make URLs ``scheme://...`` open through ``factory`` in this process.

    With ``replace=True`` the new factory takes over, e.g. to serve ``s3://``
    with another implementation.

    Raises:
        TypeError: when ``factory`` is not callable.
        ValueError: when ``scheme`` is not a valid URL scheme, or already has a factory (a built-in
            one included) and ``replace`` is false.
    """
    name = _normal_scheme(scheme)
    if not callable(factory):
        raise TypeError(f"a transport factory must be callable, not {type(factory).__name__}")
    with _lock:
        existing = _factories.get(name)
        if existing is not None and not replace:
            raise ValueError(
                f"a transport for {name}:// is already registered ({existing!r}); pass "
                "replace=True to replace it"
            )
        _factories[name] = factory


def unregister_transport(scheme: str) -> TransportFactory:
    """Forget the factory of ``scheme`` and return it; ``KeyError`` if none is registered.

    A built-in scheme may be unregistered too (then its URLs are refused).
    """
    name = _normal_scheme(scheme)
    with _lock:
        return _factories.pop(name)


def registered_schemes() -> list[str]:
    """Every scheme with a factory, sorted, installed packages' entry points included."""
    _read_entry_points()
    with _lock:
        return sorted(_factories)


def _read_entry_points() -> None:
    """Register a lazy factory for each installed entry point (once per process)."""
    global _entry_points_read
    with _lock:
        if _entry_points_read:
            return
        _entry_points_read = True
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                name = _normal_scheme(entry_point.name)
            except ValueError:
                logger.warning("ignoring entry point %r: not a URL scheme", entry_point.name)
                continue
            _factories.setdefault(name, _EntryPointFactory(entry_point))


def _factory_for(scheme: str) -> TransportFactory | None:
    with _lock:
        factory = _factories.get(scheme)
    if factory is None:
        _read_entry_points()
        with _lock:
            factory = _factories.get(scheme)
    return factory


def open_transport(
    url: str | os.PathLike[str],
    *,
    transport: TransportFactory | None = None,
    **storage_options: Any,
) -> Transport:
    """Build the transport for ``url`` through its scheme's factory.

    ``transport`` chooses the implementation for this call instead of the registered one.

    Raises:
        TypeError: for a URL that is not a string or path, or a factory that returns something other
            than a :class:`Transport`.
        ValueError: for a malformed URL, an unknown scheme or options the transport does not use.
    """
    if isinstance(url, os.PathLike):
        url = os.fspath(url)
    if not isinstance(url, str):
        raise TypeError(f"store URL must be str or a path, not {type(url).__name__}")
    if not url or "\x00" in url:
        raise ValueError(f"invalid store URL {url!r}; supported forms: {BUILT_IN_FORMS}")
    scheme = urllib.parse.urlsplit(url).scheme.lower() if "://" in url else "file"
    factory = transport or _factory_for(scheme)
    if factory is None:
        others = [name for name in registered_schemes() if name not in _BUILT_IN]
        extra = f"; registered: {', '.join(s + '://' for s in others)}" if others else ""
        raise ValueError(
            f"unsupported store URL {url!r}; supported forms: {BUILT_IN_FORMS}{extra} "
            f"(other schemes: objstore.backends.register_transport or the "
            f"{ENTRY_POINT_GROUP!r} entry-point group)"
        )
    opened = factory(url, **storage_options)
    if not isinstance(opened, Transport):
        raise TypeError(
            f"the transport factory for {scheme}:// returned {type(opened).__name__}, "
            "not a Transport"
        )
    return opened
