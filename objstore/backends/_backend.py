"""The public backend: key validation, retries, conflict disambiguation and the probe.

:class:`AsyncBackend` wraps one :class:`~objstore.backends.Transport` and adds, for every
storage system alike: keys checked before any request, transient errors retried with jittered
backoff, a conditional write whose attempt *may have landed* settled by reading the object
back before anything else is sent (:meth:`AsyncBackend._write_conditionally`), and a one-time
capability probe that refuses stores which ignore preconditions. Every attempt of
every request it sends (retries, read-backs and probe requests included) passes through
:meth:`AsyncBackend._send`, which times it and reports it as a
:class:`~objstore.backends.RequestEvent` (DEBUG log line, optional request hook).
:class:`Backend` is the blocking face of the same object.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from types import TracebackType
from typing import Self, TypeVar

from objstore._concurrency import gather_bounded
from objstore._keys import validate_key, validate_prefix
from objstore._loop import blocking
from objstore.backends._base import Buffer, ObjectInfo, ObjectListing, Transport
from objstore.backends._observe import Operation, RequestHook, RequestObserver
from objstore.backends._retry import RetryPolicy
from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    NotSupportedError,
    OutcomeUnknownError,
    PreconditionFailedError,
    TransientStorageError,
)

__all__ = ["AsyncBackend", "Backend", "ProbeResult", "PROBE_PREFIX"]

_T = TypeVar("_T")
logger = logging.getLogger(__name__)

PROBE_PREFIX = ".objstore-probe"
DELETES_IN_FLIGHT = 16
"""How many DELETEs :meth:`AsyncBackend.delete_many` keeps in flight."""
"""Keys under this prefix are written and removed by the capability probe."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Which guarantees a store enforces, as measured by :meth:`AsyncBackend.probe`."""

    url: str
    create_if_absent: bool
    compare_and_swap: bool
    conditional_delete: bool

    @property
    def ok(self) -> bool:
        """True when every guarantee objstore's fencing needs is enforced."""
        return self.create_if_absent and self.compare_and_swap and self.conditional_delete

    def failures(self) -> list[str]:
        """One sentence per guarantee the store failed to enforce."""
        problems = []
        if not self.create_if_absent:
            problems.append(
                "create-if-absent is ignored: a second create of the probe key succeeded"
            )
        if not self.compare_and_swap:
            problems.append("compare-and-swap is ignored: a write with a stale version succeeded")
        if not self.conditional_delete:
            problems.append(
                "conditional delete is ignored: a delete with a stale version succeeded"
            )
        return problems


class ReadBack(Enum):
    """What reading an object back says about a conditional write that may have landed."""

    LANDED = "landed"
    """The object holds exactly the bytes we sent: our write landed (objstore's conditional
    writes carry a writer nonce, so equal bytes are ours)."""
    GONE = "gone"
    """The object is absent: our write never landed, or landed and was deleted since."""
    TAKEN = "taken"
    """The object holds other bytes at another version than the one a swap expected: another
    writer's object (ours, if it landed, was overtaken or replaced since)."""
    UNCHANGED = "unchanged"
    """A swap's object is still at the version it expected: our write did not land."""


def read_back_verdict(
    sent: Buffer, expected_version: str | None, stored: tuple[bytes, str] | None
) -> ReadBack:
    """Judge a read-back of a conditional write whose attempt may have landed.

    ``sent`` is what the write sent, ``expected_version`` the version a compare-and-swap
    expected (``None`` for a create), ``stored`` what the read-back found (``None``: absent).
    Pure, so the rule has one home and can be tested without storage.
    """
    if stored is None:
        return ReadBack.GONE
    data, version = stored
    if data == bytes(sent):
        return ReadBack.LANDED
    if expected_version is not None and version == expected_version:
        return ReadBack.UNCHANGED
    return ReadBack.TAKEN


def _as_bytes(data: Buffer) -> Buffer:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"object data must be bytes-like, not {type(data).__name__}")
    return data


def _nothing(_: object) -> int:
    return 0


def _data_size(result: tuple[bytes, str]) -> int:
    return len(result[0])


class AsyncBackend:
    """Conditional object I/O on one store, safe to use from many tasks of one event loop.

    Args:
        transport: the storage system to talk to.
        retry: how transient errors are retried (default :class:`RetryPolicy()`).
        verify_fencing: run the capability probe before the first conditional write and
            refuse a store that ignores preconditions with ``NotSupportedError``. Setting it to
            ``False`` is an explicit opt-out for users who accept that racing writers can then
            corrupt each other's checkpoints.
        request_hook: called with a :class:`~objstore.backends.RequestEvent` after every
            attempt of every request (see :mod:`objstore.observability`).

    Usable as ``async with``: leaving the block closes the transport.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        retry: RetryPolicy | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
    ) -> None:
        self.transport = transport
        self.retry = retry or RetryPolicy()
        self.verify_fencing = verify_fencing
        self._observer = RequestObserver(transport.url, transport.scheme, request_hook)
        self._probe_result: ProbeResult | None = None
        self._probe_lock: asyncio.Lock | None = None

    @property
    def request_hook(self) -> RequestHook | None:
        """The hook called with every request's :class:`~objstore.backends.RequestEvent`."""
        return self._observer.hook

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.transport.url

    @property
    def scheme(self) -> str:
        """``memory``, ``file``, ``s3``, ``gs`` or a registered scheme (for logs and events;
        what the store can do is in the transport's capability attributes)."""
        return self.transport.scheme

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _send(
        self,
        operation: Operation,
        key: str,
        attempt: int,
        request: Callable[[], Awaitable[_T]],
        *,
        sent: int | Callable[[], int] = 0,
        received: Callable[[_T], int] = _nothing,
    ) -> _T:
        """Send one attempt of one request and report it to the observer.

        The one place every request to the transport passes through; ``sent`` may be a
        callable for a stream whose size is known only afterwards.
        """
        observer = self._observer
        if not observer.wanted:
            return await request()
        start = time.perf_counter()
        try:
            result = await request()
        except BaseException as error:
            observer.record(
                operation,
                key,
                attempt,
                time.perf_counter() - start,
                sent=sent() if callable(sent) else sent,
                received=0,
                error=error,
            )
            raise
        observer.record(
            operation,
            key,
            attempt,
            time.perf_counter() - start,
            sent=sent() if callable(sent) else sent,
            received=received(result),
            error=None,
        )
        return result

    async def _retried(
        self,
        operation: Operation,
        key: str,
        request: Callable[[], Awaitable[_T]],
        *,
        sent: int = 0,
        received: Callable[[_T], int] = _nothing,
        description: str,
    ) -> _T:
        """Send a request, retrying transient failures; every attempt is observed."""
        return await self.retry.call(
            lambda attempt: self._send(
                operation, key, attempt, request, sent=sent, received=received
            ),
            description=description,
        )

    async def get(self, key: str) -> tuple[bytes, str]:
        """Return the whole object and its version; ``NotFoundError`` if absent."""
        key = validate_key(key)
        return await self._retried(
            "get",
            key,
            lambda: self.transport.get(key),
            received=_data_size,
            description=f"GET {key}",
        )

    async def get_range(self, key: str, start: int, end: int) -> bytes:
        """Return bytes ``[start, end)``; ``NotFoundError`` if absent.

        Raises:
            ValueError: if ``start`` is negative or ``end`` is before ``start``.
        """
        key = validate_key(key)
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        if end == start:
            await self.head(key)
            return b""
        return await self._retried(
            "get_range",
            key,
            lambda: self.transport.get_range(key, start, end),
            received=len,
            description=f"GET {key} range",
        )

    async def get_range_stream(self, key: str, start: int, end: int) -> AsyncIterator[Buffer]:
        """Bytes ``[start, end)`` in order, in the pieces the transport receives them
        (:meth:`~objstore.backends.Transport.get_range_stream`: one request, consumed while
        it arrives); fewer bytes in all if the object is shorter.

        A transient failure, before or after the first piece, is retried by this backend's
        policy as a new ranged request for the bytes not yet handed out, so no byte is
        given twice or skipped; every request is observed as a ``get_range``. A piece is
        valid until the consumer asks for the next one.

        A missing object raises ``NotFoundError`` from the transport, before any piece.

        Raises:
            ValueError: if ``start`` is negative or ``end`` is before ``start``.
            TransientStorageError: when the policy's attempts are exhausted.
        """
        key = validate_key(key)
        if start < 0 or end < start:
            raise ValueError(f"invalid byte range [{start}, {end})")
        if end == start:
            await self.head(key)
            return
        position, failures = start, 0
        while True:
            attempt, first, began = failures + 1, position, time.perf_counter()
            error: BaseException | None = None
            pieces = self.transport.get_range_stream(key, position, end)
            try:
                async with contextlib.aclosing(pieces):  # type: ignore[type-var]
                    async for piece in pieces:
                        size = memoryview(piece).nbytes
                        if size:
                            position += size
                            yield piece
                return
            except TransientStorageError as exc:
                error = exc
                failures += 1
                if failures >= self.retry.max_attempts:
                    raise
            except BaseException as exc:
                if not isinstance(exc, GeneratorExit):  # else the consumer stopped reading
                    error = exc
                raise
            finally:
                if self._observer.wanted:
                    self._observer.record(
                        "get_range",
                        key,
                        attempt,
                        time.perf_counter() - began,
                        sent=0,
                        received=position - first,
                        error=error,
                    )
            logger.info(
                "retrying GET %s from byte %d after a transient failure: %s", key, position, error
            )
            await self.retry.sleep(self.retry.backoff(failures))

    async def head(self, key: str) -> ObjectInfo:
        """Return size, version and mtime; ``NotFoundError`` if absent."""
        key = validate_key(key)
        return await self._retried(
            "head", key, lambda: self.transport.head(key), description=f"HEAD {key}"
        )

    async def exists(self, key: str) -> bool:
        """Whether the object exists (one HEAD)."""
        try:
            await self.head(key)
        except NotFoundError:
            return False
        return True

    async def put(self, key: str, data: Buffer) -> str:
        """Write unconditionally; use only where losing a race is harmless."""
        key = validate_key(key)
        data = _as_bytes(data)
        return await self._retried(
            "put",
            key,
            lambda: self.transport.put(key, data),
            sent=len(data),
            description=f"PUT {key}",
        )

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        """Create atomically; ``AlreadyExistsError`` if another writer created it first.

        An attempt that may have landed is never sent again: the object is read back (see
        :meth:`_write_conditionally`), and ``OutcomeUnknownError`` is raised when it is gone
        (deleted since, or never written) or cannot be read back.
        """
        key = validate_key(key)
        data = _as_bytes(data)
        await self._ensure_fencing()
        return await self._write_conditionally(
            "put_if_absent",
            key,
            data,
            lambda: self.transport.put_if_absent(key, data),
            expected_version=None,
            description=f"PUT-if-absent {key}",
        )

    async def put_if_absent_stream(self, key: str, parts: AsyncIterable[Buffer]) -> str:
        """Create atomically from a stream of parts; ``AlreadyExistsError`` if the key exists
        when the object would be completed.

        The call as a whole is not retried (a stream is read once; callers that need that
        re-create the stream), but this backend's :class:`RetryPolicy` is handed to the
        transport, which retries the requests it sends the stream with (parts, completion).
        The transport decides how many parts are held in memory.
        """
        key = validate_key(key)
        await self._ensure_fencing()
        sent = 0

        async def counted() -> AsyncIterator[Buffer]:
            nonlocal sent
            async for part in parts:
                sent += len(part)
                yield part

        return await self._send(
            "put_if_absent_stream",
            key,
            1,
            lambda: self.transport.put_if_absent_stream(key, counted(), retry=self.retry),
            sent=lambda: sent,
        )

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        """Compare-and-swap: replace only if the object is still at ``version``.

        An object that moved on raises ``PreconditionFailedError``, one that is gone
        ``NotFoundError``. After an attempt that may have landed, the object is read back
        first (see :meth:`_write_conditionally`): ours is success, still at ``version`` is
        sent again, moved on or gone is reported as those errors, and a read-back that
        fails raises ``OutcomeUnknownError``.

        Raises:
            ValueError: if ``version`` is not a non-empty version string from a get/put.
        """
        key = validate_key(key)
        data = _as_bytes(data)
        if not isinstance(version, str) or not version:
            raise ValueError("put_if_match needs the version returned by a get/put")
        await self._ensure_fencing()
        return await self._write_conditionally(
            "put_if_match",
            key,
            data,
            lambda: self.transport.put_if_match(key, data, version),
            expected_version=version,
            description=f"PUT-if-match {key}",
        )

    async def list(self, prefix: str = "") -> ObjectListing:
        """Objects under ``prefix`` (a whole path segment: ``a/b`` never lists ``a/bc``)."""
        prefix = validate_prefix(prefix)
        listing = await self._retried(
            "list", prefix, lambda: self.transport.list(prefix), description=f"LIST {prefix}"
        )
        return [info for info in listing if not info.key.startswith(PROBE_PREFIX + "/")]

    async def list_after(self, prefix: str, start_after: str, limit: int = 1000) -> ObjectListing:
        """At most ``limit`` objects under ``prefix`` sorting after ``start_after`` (one LIST).

        Raises:
            ValueError: if ``limit`` is below 1.
        """
        prefix = validate_prefix(prefix)
        if limit < 1:
            raise ValueError("limit must be at least 1")
        listing = await self._retried(
            "list_after",
            prefix,
            lambda: self.transport.list_after(prefix, start_after, limit),
            description=f"LIST {prefix} after {start_after}",
        )
        return [info for info in listing if not info.key.startswith(PROBE_PREFIX + "/")]

    async def delete(self, key: str, version: str | None = None) -> None:
        """Delete; idempotent. With ``version``, only if unchanged (else precondition error)."""
        key = validate_key(key)
        if version is not None:
            await self._ensure_fencing()

        await self._retried(
            "delete", key, lambda: self.transport.delete(key, version), description=f"DELETE {key}"
        )

    async def delete_many(self, keys: Iterable[str]) -> None:
        """Delete several objects unconditionally, a few requests in flight at once."""
        await gather_bounded((self.delete(key) for key in keys), DELETES_IN_FLIGHT)

    async def check_root(self) -> None:
        """Check that the store exists before reading it (see :meth:`Transport.check_root`).

        Raises :class:`~objstore.errors.StoreNotFoundError` when its bucket or root directory
        is missing and ``ValueError`` when the location can never hold a store; writes
        nothing. Transient errors are retried.
        """
        await self._retried("check_root", "", self.transport.check_root, description="CHECK root")

    async def close(self) -> None:
        """Close the transport's connections."""
        await self.transport.close()

    async def _write_conditionally(
        self,
        operation: Operation,
        key: str,
        data: Buffer,
        request: Callable[[], Awaitable[str]],
        *,
        expected_version: str | None,
        description: str,
    ) -> str:
        """Send a conditional write (create when ``expected_version`` is ``None``, else
        compare-and-swap), retrying transient failures, and never blindly re-sending an
        attempt that may have landed.

        A transient failure with ``may_have_landed`` (a lost answer: timeout, dropped
        connection, 5xx) makes the outcome uncertain. From then on, before the next attempt
        and when the retries run out, the object is read back (:meth:`_settle`). Another
        writer may have deleted or replaced our object between the attempt and the
        read-back, so re-sending a create could bring back an object its owner removed; it
        is never re-sent. A conflict met by any attempt after the first is read back as
        well: our own bytes mean an earlier attempt landed after all (one still in flight
        when read back, or a failure wrongly said not to have landed). The happy path reads
        nothing back.

        Other errors are the transport's (a conflict, a swap's missing object) and
        :meth:`_settle`'s.

        Raises:
            TransientStorageError: the retries ran out and no attempt may have landed (or a
                swap's read-back found the object unchanged).
        """
        uncertain: TransientStorageError | None = None

        async def attempt(number: int) -> str:
            nonlocal uncertain
            if uncertain is not None:
                landed = await self._settle(key, data, expected_version, uncertain)
                if landed is not None:
                    return landed
            try:
                return await self._send(operation, key, number, request, sent=len(data))
            except TransientStorageError as error:
                if error.may_have_landed:
                    uncertain = error
                raise
            except (AlreadyExistsError, PreconditionFailedError):
                if number > 1:
                    stored = await self._read_back(key)
                    if read_back_verdict(data, expected_version, stored) is ReadBack.LANDED:
                        assert stored is not None
                        logger.info("conditional write of %s had landed after all", key)
                        return stored[1]
                raise

        try:
            return await self.retry.call(attempt, description=description)
        except TransientStorageError as error:
            if uncertain is None:
                raise
            landed = await self._settle(key, data, expected_version, error)
            if landed is not None:
                return landed
            raise

    async def _read_back(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and version, ``None`` if absent (1 GET, retried)."""
        try:
            return await self._retried(
                "get",
                key,
                lambda: self.transport.get(key),
                received=_data_size,
                description=f"GET {key} (read-back)",
            )
        except NotFoundError:
            return None

    async def _settle(
        self, key: str, data: Buffer, expected_version: str | None, cause: BaseException
    ) -> str | None:
        """Read back a conditional write that may have landed (1 GET, retried) and settle it
        by :func:`read_back_verdict`: our bytes are our version (success); a swap's object
        still at its expected version is ``None`` (send it again).

        Raises:
            OutcomeUnknownError: a create's object is gone (never landed, or landed and
                deleted since: it cannot be told, and creating it again could resurrect an
                object its owner removed), or the read-back failed.
            AlreadyExistsError: a create's key holds another writer's object.
            PreconditionFailedError: a swap's object moved to another writer's version (ours,
                if it landed, was overtaken: a caller re-reads on a conflict, as it would had
                ours been sent a moment later).
            NotFoundError: a swap's object is gone.
        """
        try:
            stored = await self._read_back(key)
        except TransientStorageError as error:
            raise OutcomeUnknownError(
                key,
                f"outcome unknown: a write of {key!r} may have landed (its answer was lost) "
                f"and reading it back failed: {error}",
            ) from cause
        verdict = read_back_verdict(data, expected_version, stored)
        if verdict is ReadBack.LANDED:
            assert stored is not None
            logger.info("conditional write of %s had landed on an earlier attempt", key)
            return stored[1]
        if verdict is ReadBack.UNCHANGED:
            return None
        if expected_version is None:
            if verdict is ReadBack.GONE:
                raise OutcomeUnknownError(
                    key,
                    f"outcome unknown: a create of {key!r} may have landed (its answer was "
                    "lost) and the object is gone now (never written, or deleted since by "
                    "another writer); it was not created again",
                ) from cause
            raise AlreadyExistsError(key) from cause
        if verdict is ReadBack.GONE:
            raise NotFoundError(key) from cause
        raise PreconditionFailedError(
            key,
            expected_version=expected_version,
            actual_version=stored[1] if stored is not None else None,
        ) from cause

    async def probe(self) -> ProbeResult:
        """Measure whether the store enforces create-if-absent, CAS and conditional delete.

        Uses one throw-away key under :data:`PROBE_PREFIX` and removes it afterwards. The
        result is remembered: conditional writes after a passing probe do not probe again.
        """
        key = f"{PROBE_PREFIX}/{uuid.uuid4().hex}"
        transport = self.transport

        async def step(
            operation: Operation, request: Callable[[], Awaitable[object]], sent: int = 0
        ) -> bool:
            """Run one probe request (retried); True if it raised a precondition error."""
            try:
                await self._retried(operation, key, request, sent=sent, description=f"probe {key}")
            except (AlreadyExistsError, PreconditionFailedError):
                return True
            return False

        await step("put_if_absent", lambda: transport.put_if_absent(key, b"1"), 1)
        try:
            create_enforced = await step(
                "put_if_absent", lambda: transport.put_if_absent(key, b"2"), 1
            )
            _, stale = await self._retried(
                "get", key, lambda: transport.get(key), received=_data_size, description="probe"
            )
            await step("put_if_match", lambda: transport.put_if_match(key, b"3", stale), 1)
            cas_enforced = await step(
                "put_if_match", lambda: transport.put_if_match(key, b"4", stale), 1
            )
            delete_enforced = await step("delete", lambda: transport.delete(key, stale))
        finally:
            await self._retried(
                "delete", key, lambda: transport.delete(key), description="probe cleanup"
            )
        result = ProbeResult(self.url, create_enforced, cas_enforced, delete_enforced)
        self._probe_result = result
        return result

    async def _ensure_fencing(self) -> None:
        if not self.verify_fencing:
            return
        if self._probe_lock is None:
            self._probe_lock = asyncio.Lock()
        async with self._probe_lock:
            result = self._probe_result or await self.probe()
            if not result.ok:
                raise NotSupportedError(
                    f"{self.url} does not enforce write preconditions ("
                    + "; ".join(result.failures())
                    + "). objstore cannot fence concurrent writers there. To accept that risk "
                    "(racing writers may then overwrite each other's checkpoints), open the "
                    "store with verify_fencing=False, e.g. CheckpointStore(url, "
                    "verify_fencing=False), or pass --unsafe-skip-fencing-check to the "
                    "objstore command."
                )


class Backend:
    """The blocking face of :class:`AsyncBackend`: same methods, same errors, no ``await``."""

    def __init__(self, async_backend: AsyncBackend) -> None:
        self._async = async_backend

    @property
    def async_backend(self) -> AsyncBackend:
        """The async backend this facade drives."""
        return self._async

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self._async.url

    @property
    def scheme(self) -> str:
        """``memory``, ``file``, ``s3`` or ``gs``."""
        return self._async.scheme

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    get = blocking(AsyncBackend.get)
    get_range = blocking(AsyncBackend.get_range)
    head = blocking(AsyncBackend.head)
    exists = blocking(AsyncBackend.exists)
    put = blocking(AsyncBackend.put)
    put_if_absent = blocking(AsyncBackend.put_if_absent)
    put_if_match = blocking(AsyncBackend.put_if_match)
    list = blocking(AsyncBackend.list)
    list_after = blocking(AsyncBackend.list_after)
    delete = blocking(AsyncBackend.delete)
    delete_many = blocking(AsyncBackend.delete_many)
    probe = blocking(AsyncBackend.probe)
    check_root = blocking(AsyncBackend.check_root)
    close = blocking(AsyncBackend.close)
