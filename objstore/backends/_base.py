"""The transport contract: the few object-storage requests every backend must honour.

A :class:`Transport` speaks to one storage system and translates its errors into the objstore
tree (:mod:`objstore.errors`) exactly once. It does not retry and does not validate keys: the
:class:`~objstore.backends.AsyncBackend` in front of it does both, for every transport alike.
Keys handed to a transport are already validated and relative to the transport's root.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

from objstore.errors import AlreadyExistsError, NotFoundError

if TYPE_CHECKING:
    from objstore.backends._retry import RetryPolicy

__all__ = [
    "Buffer",
    "ObjectInfo",
    "ObjectListing",
    "Transport",
    "ChunkedUpload",
    "create_retried",
    "fixed_size_chunks",
    "upload_in_chunks",
]

Buffer = bytes | bytearray | memoryview
"""Anything a write accepts: bytes-like objects are written without an extra copy."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or ``head`` says about one object.

    ``version`` is the token a compare-and-swap needs (S3 ETag, GCS generation, a content hash
    on local disk, a counter in memory); listings may leave it ``None`` where computing it
    would cost a read (local disk).
    """

    key: str
    size: int
    version: str | None
    mtime: float | None = None


ObjectListing = list[ObjectInfo]


class Transport(abc.ABC):
    """Raw conditional object I/O against one storage system, rooted at one URL.

    Implementations raise :class:`~objstore.errors.NotFoundError`,
    :class:`~objstore.errors.AlreadyExistsError`,
    :class:`~objstore.errors.PreconditionFailedError` and
    :class:`~objstore.errors.TransientStorageError`, keeping the native error as the cause.
    A transient error is raised with ``may_have_landed=False`` only when the store certainly
    did not apply the request (no connection was made, it was throttled or refused): a
    conditional write that may have landed is read back, never sent again blindly.
    """

    #: Short scheme name: ``memory``, ``file``, ``s3``, ``gs`` or the one a third-party
    #: transport registered; used in logs and request events, never to decide behaviour.
    scheme: str = ""

    # -- capabilities: what stores consult instead of the scheme ------------------------------

    #: Payloads up to this many bytes are best sent as one :meth:`put_if_absent`; larger ones
    #: through :meth:`put_if_absent_stream`, so sending overlaps producing (S3: its part size).
    single_put_limit: int = 16 * 1024 * 1024

    #: Objects outlive the process and every process that opens the same URL sees them.
    #: ``False`` for process-local stores (``memory://``), whose stores skip what only
    #: matters across a restart; the contract suite runs its process races only when true.
    persistent: bool = True

    #: :meth:`put_if_absent_stream` holds a bounded part of the stream in memory (a few parts),
    #: not all of it. The default implementation joins the parts, so it is ``False``; the
    #: contract suite measures the bound when a transport claims it.
    bounded_streaming: bool = False

    #: The names of the capability attributes above: a transport that wraps another copies
    #: them (``adopt_capabilities``), so stores see what the wrapped storage can do.
    CAPABILITIES: ClassVar[tuple[str, ...]] = (
        "single_put_limit",
        "persistent",
        "bounded_streaming",
    )

    def adopt_capabilities(self, inner: Transport) -> None:
        """Take ``inner``'s scheme and capabilities, for a transport that wraps ``inner``."""
        self.scheme = inner.scheme
        for name in self.CAPABILITIES:
            setattr(self, name, getattr(inner, name))

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The root URL this transport serves, without credentials."""

    @abc.abstractmethod
    async def get(self, key: str) -> tuple[bytes, str]:
        """Return the whole object and its version."""

    @abc.abstractmethod
    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Return bytes ``[start, end)`` of the object (shorter if the object is shorter)."""

    async def get_range_stream(self, key: str, start: int, end: int) -> AsyncIterator[Buffer]:
        """Bytes ``[start, end)`` of the object as one request whose body arrives in pieces,
        in order (fewer bytes in all if the object is shorter); ``NotFoundError`` if absent.

        A consumer can work on the first pieces while the rest is still arriving and never
        holds the whole range at once. A piece is valid until the consumer has finished with it;
        it may be a view of storage that does not change (never of a buffer reused later).
        The default yields one :meth:`get_range` as a single piece; transports that can
        stream (a local file, an HTTP body) override it.
        """
        yield await self.get_range(key, start, end)

    @abc.abstractmethod
    async def head(self, key: str) -> ObjectInfo:
        """Return size, version and mtime of the object."""

    @abc.abstractmethod
    async def put(self, key: str, data: Buffer) -> str:
        """Write unconditionally and return the new version."""

    @abc.abstractmethod
    async def put_if_absent(self, key: str, data: Buffer) -> str:
        """Create the object atomically; raise ``AlreadyExistsError`` if the key exists."""

    @abc.abstractmethod
    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        """Replace the object only if its version is ``version``.

        Raises ``PreconditionFailedError`` when the version differs and ``NotFoundError``
        when the object does not exist.
        """

    @abc.abstractmethod
    async def list(self, prefix: str) -> ObjectListing:
        """Every object whose key is ``prefix`` + ``/`` + something, sorted by key.

        ``prefix == ""`` lists the whole root. Hidden bookkeeping objects are never listed.
        """

    async def list_after(self, prefix: str, start_after: str, limit: int) -> ObjectListing:
        """At most ``limit`` objects under ``prefix`` whose keys sort after ``start_after``.

        One request on object stores (S3 ``StartAfter``, GCS ``startOffset``), so its cost does
        not grow with the number of objects before ``start_after``. The default filters a
        full listing.
        """
        listing = await self.list(prefix)
        return [info for info in listing if info.key > start_after][:limit]

    @abc.abstractmethod
    async def delete(self, key: str, version: str | None = None) -> None:
        """Delete the object; a missing object is not an error.

        With ``version``, delete only if the object is at that version, else raise
        ``PreconditionFailedError``.
        """

    async def check_root(self) -> None:
        """Raise :class:`~objstore.errors.StoreNotFoundError` if the store's root (a bucket,
        a local directory) does not exist, and ``ValueError`` if the location can never hold a
        store; create nothing.

        Writers do not need it (their first write creates what is missing); read-only tools
        call it so that a mistyped location is reported instead of reading as an empty store.
        The default makes one listing request for at most one key, which fails on a missing
        bucket.
        """
        await self.list_after("", "", 1)

    async def put_if_absent_stream(
        self,
        key: str,
        parts: AsyncIterable[Buffer],
        *,
        retry: RetryPolicy | None = None,
    ) -> str:
        """Create the object from a stream of parts; same contract as :meth:`put_if_absent`
        (``AlreadyExistsError`` if the key exists when the object would be completed).

        The stream cannot be replayed, so the backend does not retry this call: ``retry`` (the
        backend's policy) governs the requests a transport sends it with — parts, completion —
        and ``None`` means one attempt each. The default joins the parts and makes one
        :meth:`put_if_absent`; transports that upload incrementally override it so memory
        stays bounded by the parts in flight, and say so with :attr:`bounded_streaming`.
        """
        chunks = [bytes(part) async for part in parts]
        return await self.put_if_absent(key, b"".join(chunks))

    async def close(self) -> None:  # noqa: B027 - optional hook, most transports hold nothing
        """Release connections; the transport must not be used afterwards."""


async def create_retried(transport: Transport, key: str, data: Buffer, retry: RetryPolicy) -> str:
    """``transport.put_if_absent(key, data)`` retried by ``retry``, for a transport's own use
    (a short stream sent as one request).

    A conflict after a retry is read back and compared, as the backend does for its creates:
    it may be our own earlier attempt, whose response was lost. Raises ``AlreadyExistsError``
    when someone else's object holds the key.
    """

    async def attempt(number: int) -> str:
        try:
            return await transport.put_if_absent(key, data)
        except AlreadyExistsError:
            if number > 1:
                with contextlib.suppress(NotFoundError):
                    stored, version = await transport.get(key)
                    if stored == bytes(data):
                        return version
            raise

    return await retry.call(attempt, description=f"PUT-if-absent {key}")


async def fixed_size_chunks(
    parts: AsyncIterable[Buffer], size: int
) -> AsyncGenerator[tuple[bytearray, bool], None]:
    """The bytes of ``parts`` re-cut into chunks of ``size`` bytes, each with whether it is
    the last, for transports that upload a stream in fixed-size requests.

    Every chunk but the last has exactly ``size`` bytes; the last has 1 to ``size`` bytes (0
    only when the stream is empty), so a stream of one chunk can be sent as a single request.
    A chunk is handed out once more bytes are known to follow it, so besides the chunk being
    sent this holds at most ``size`` bytes plus one part. Each byte is copied once, from its
    part straight into a fresh chunk (the chunk is the consumer's from then on: nothing
    here writes to it again).
    """
    chunk: bytearray | None = None  # allocated when its first byte is known
    filled = 0
    full: bytearray | None = None  # a complete chunk, held until more bytes are known to follow
    async for part in parts:
        view = memoryview(part).cast("B")
        while view.nbytes:
            if full is not None:
                yield full, False
                full = None
            if chunk is None:
                chunk, filled = bytearray(size), 0
            take = min(size - filled, view.nbytes)
            chunk[filled : filled + take] = view[:take]
            filled += take
            view = view[take:]
            if filled == size:
                full, chunk = chunk, None
    if full is not None:
        yield full, True
        return
    if chunk is None:
        yield bytearray(), True
        return
    del chunk[filled:]
    yield chunk, True


class ChunkedUpload(Protocol):
    """A multi-request create in progress (an S3 multipart upload, a GCS resumable upload),
    driven by :func:`upload_in_chunks`."""

    async def start(self) -> None:
        """Open the upload; ``AlreadyExistsError`` if the storage can tell the key is taken."""

    async def send(self, chunk: bytearray, *, final: bool) -> str | None:
        """Send the next chunk; the ``final`` one completes the object, create-if-absent
        checked there, and its version is returned."""

    async def abort(self) -> None:
        """Give the upload up, creating nothing (best effort, never raises)."""


async def upload_in_chunks(
    transport: Transport,
    key: str,
    parts: AsyncIterable[Buffer],
    *,
    size: int,
    retry: RetryPolicy,
    open_upload: Callable[[], ChunkedUpload],
) -> str:
    """Create ``key`` from a stream in requests of ``size`` bytes, for a transport's
    :meth:`~Transport.put_if_absent_stream`.

    A stream of at most one chunk is one :meth:`~Transport.put_if_absent` (retried by
    ``retry``, see :func:`create_retried`); a longer one goes through the upload
    ``open_upload`` makes, aborted on any failure. Memory holds a chunk and a part besides
    what the upload keeps in flight.

    Raises:
        AssertionError: never: it guards an unreachable path (the chunks end with one marked last).
    """
    upload: ChunkedUpload | None = None
    try:
        async with contextlib.aclosing(fixed_size_chunks(parts, size)) as chunks:
            async for chunk, last in chunks:
                if upload is None:
                    if last:
                        return await create_retried(transport, key, chunk, retry)
                    upload = open_upload()
                    await upload.start()
                version = await upload.send(chunk, final=last)
                if last:
                    assert version is not None, "the final chunk completes the object"
                    return version
    except BaseException:
        if upload is not None:
            await upload.abort()
        raise
    raise AssertionError("unreachable: the chunks end with one marked last")
