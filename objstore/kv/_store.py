"""AsyncKVStore and its blocking face KVStore (protocol described in :mod:`objstore.kv`)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Iterable
from typing import Any, TypeVar

from objstore._loop import AsyncClosing, StoreFacade, blocking
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend, Buffer, RequestHook
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    NotFoundError,
    ObjstoreError,
    PreconditionFailedError,
)
from objstore.kv._format import (
    LOG_PREFIX,
    MANIFEST_KEY,
    KVBatch,
    KVManifest,
    contiguous_tail,
    decode_batch,
    decode_manifest,
    decode_snapshot,
    encode_batch,
    encode_manifest,
    encode_snapshot,
    encode_tombstone,
    log_key,
    sequence_of,
    snapshot_key,
)

__all__ = ["DEFAULT_COMPACT_EVERY", "AsyncKVStore", "KVStore"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_COMPACT_EVERY = 256
"""Batches in the log tail after which a writer folds the state into a new snapshot."""
_LIST_PAGE = 1000
_MAX_RELOADS = 16
_PARALLEL = 16


def _check_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


def _check_key(key: object) -> bytes:
    checked = _check_bytes(key, "key")
    if not checked:
        raise ValueError("key must not be empty")
    return checked


async def _gather(jobs: Iterable[Awaitable[_T]]) -> list[_T]:
    """Run ``jobs`` with at most a few requests in flight, keeping their order."""
    semaphore = asyncio.Semaphore(_PARALLEL)

    async def one(job: Awaitable[_T]) -> _T:
        async with semaphore:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs))


class _View:
    """What one store object knows: the manifest it last saw (and its version) and the
    state after batch ``sequence`` — every batch ``1..sequence`` applied in order."""

    def __init__(self) -> None:
        self.manifest = KVManifest()
        self.manifest_version: str | None = None
        self.sequence = 0
        self.data: dict[bytes, bytes] = {}
        self._sorted: list[bytes] | None = None

    def apply(self, batch: KVBatch) -> None:
        if batch.kind == "put":
            self.data.update(batch.pairs)
        else:
            for key in batch.keys:
                self.data.pop(key, None)
        self.sequence = batch.sequence
        self._sorted = None

    def sorted_keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self.data)
        return self._sorted


class _Stale(Exception):
    """What a reader read was superseded under it (pruned or re-snapshotted): reload."""


class AsyncKVStore(AsyncClosing):
    """Sorted bytes keys with a sequence-numbered batch log under ``{root}/kv/`` (asyncio).

    Every call first catches up with batches other writers committed (1 LIST, plus 1 GET per
    new batch); reads are then served from memory. :meth:`put_batch` and
    :meth:`delete_batch` are one create-if-absent write each in the steady state. The whole
    live key set is held in memory.

    Args:
        url_or_backend: store URL/path or an opened backend.
        storage_options: fsspec options when a URL is given.
        verify_fencing: prove before the first conditional write that the store enforces
            preconditions, refusing it with ``NotSupportedError`` if not (default). ``False``
            skips that check, at a risk: on a store that ignores preconditions concurrent
            writers cannot be fenced and create-once writes are not once, so a stale writer
            may overwrite newer state. With an opened backend, set it on the backend instead.
        request_hook: called with a :class:`~objstore.observability.RequestEvent` after
            every request (see :mod:`objstore.observability`); URL only.
        compact_every: fold the state into a new snapshot once this many batches follow the
            newest one (0 disables automatic compaction; :meth:`compact` still works).
        max_write_attempts: lost races for a sequence number a write absorbs before raising
            :class:`~objstore.errors.CheckpointConflict`.
    """

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        max_write_attempts: int = 1000,
    ) -> None:
        if compact_every < 0:
            raise ValueError("compact_every must not be negative")
        if max_write_attempts < 1:
            raise ValueError("max_write_attempts must be at least 1")
        self.backend: AsyncBackend = as_async_backend(
            url_or_backend,
            storage_options,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
        )
        self.compact_every = compact_every
        self.max_write_attempts = max_write_attempts
        self._view: _View | None = None
        self._lock = asyncio.Lock()

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.backend.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- writes ------------------------------------------------------------------------------

    async def put_batch(self, pairs: Iterable[tuple[Buffer, Buffer]]) -> int:
        """Atomically set every ``(key, value)`` pair; return the batch's sequence number.

        A key given twice takes its last value. Raises ``TypeError`` for keys/values that are
        not bytes-like and ``ValueError`` for an empty batch or key, before any request.
        """
        checked = tuple((_check_key(key), _check_bytes(value, "value")) for key, value in pairs)
        if not checked:
            raise ValueError("put_batch needs at least one pair")
        return await self._commit("put", checked, ())

    async def delete_batch(self, keys: Iterable[Buffer]) -> int:
        """Atomically delete ``keys`` (absent ones are fine); return the batch's sequence.

        Raises ``TypeError``/``ValueError`` like :meth:`put_batch`, before any request.
        """
        checked = tuple(_check_key(key) for key in keys)
        if not checked:
            raise ValueError("delete_batch needs at least one key")
        return await self._commit("delete", (), checked)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: Buffer) -> bytes | None:
        """The value of ``key``, or ``None`` when it is not set."""
        checked = _check_key(key)
        async with self._lock:
            view = await self._catch_up()
            return view.data.get(checked)

    async def get_many(self, keys: Iterable[Buffer]) -> list[tuple[bytes, bytes | None]]:
        """``(key, value or None)`` for each of ``keys``, in the order given."""
        checked = [_check_key(key) for key in keys]
        async with self._lock:
            view = await self._catch_up()
            return [(key, view.data.get(key)) for key in checked]

    async def range_scan(
        self,
        start: Buffer = b"",
        end: Buffer = b"",
        limit: int | None = None,
        forward: bool = True,
    ) -> list[tuple[bytes, bytes]]:
        """Pairs with ``start <= key <= end`` (an empty ``end`` is unbounded), in key order
        (descending when not ``forward``), at most ``limit`` of them (``None``: all)."""
        low, high = _check_bytes(start, "start"), _check_bytes(end, "end")
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        async with self._lock:
            view = await self._catch_up()
            keys = view.sorted_keys()
            first = bisect.bisect_left(keys, low)
            stop = bisect.bisect_right(keys, high) if high else len(keys)
            chosen = keys[first:stop] if forward else keys[first:stop][::-1]
            if limit is not None:
                chosen = chosen[:limit]
            return [(key, view.data[key]) for key in chosen]

    async def current_sequence(self) -> int:
        """The newest sequence visible to readers (0 before the first batch)."""
        async with self._lock:
            return (await self._catch_up()).sequence

    async def get_batch(self, sequence: int) -> list[tuple[bytes, bytes]] | None:
        """The pairs written by put batch ``sequence``; ``[]`` for a delete batch (see
        :meth:`read_batch` for its keys); ``None`` when pruned or not (yet) visible."""
        batch = await self.read_batch(sequence)
        if batch is None:
            return None
        return list(batch.pairs)

    async def read_batch(self, sequence: int) -> KVBatch | None:
        """Batch ``sequence`` with its kind (put or delete), or ``None`` when pruned or not
        (yet) visible."""
        if sequence < 1:
            return None
        async with self._lock:
            view = await self._catch_up()
            if sequence > view.sequence or sequence < view.manifest.retained_from:
                return None
        try:
            return await self._read_log(sequence)
        except NotFoundError:
            return None

    async def oldest_retained_batch(self) -> int | None:
        """The lowest batch still readable with :meth:`get_batch`, ``None`` when none is
        (1 GET of the manifest + catching up)."""
        async with self._lock:
            view = await self._catch_up()
            manifest, _ = await self._read_manifest()
            if view.sequence == 0 or manifest.retained_from > view.sequence:
                return None
            return manifest.retained_from

    # -- maintenance -------------------------------------------------------------------------

    async def compact(self) -> int:
        """Fold every visible batch into a snapshot the manifest points to; return the
        sequence it covers (nothing is written when the manifest already covers it)."""
        async with self._lock:
            view = await self._catch_up()
            await self._compact(view)
            return view.manifest.snapshot

    async def prune_batch_log(self, cutoff_exclusive: int) -> int:
        """Drop the data of every batch below ``cutoff_exclusive``; return how many batches
        this call pruned.

        Compacts through the cutoff first, so no key is ever lost. A pruned log object is
        overwritten with a tiny tombstone rather than deleted, so its sequence number can
        never be allocated again.
        """
        if cutoff_exclusive < 1:
            raise ValueError("cutoff_exclusive must be at least 1")
        async with self._lock:
            view = await self._catch_up()
            cutoff = min(cutoff_exclusive, view.sequence + 1)
            before = view.manifest.retained_from
            if cutoff <= before:
                return 0
            if view.manifest.snapshot < cutoff - 1:
                await self._compact(view)
            await self._advance_manifest(view, KVManifest(view.manifest.snapshot, cutoff, 1))
            target = view.manifest.retained_from
            await _gather(
                self.backend.put(log_key(sequence), encode_tombstone(sequence))
                for sequence in range(view.manifest.tombstoned_below, target)
            )
            await self._advance_manifest(view, KVManifest(0, 1, target))
            return max(0, target - before)

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    # -- internals ---------------------------------------------------------------------------

    async def _commit(
        self, kind: str, pairs: tuple[tuple[bytes, bytes], ...], keys: tuple[bytes, ...]
    ) -> int:
        """Claim the next sequence with one create-if-absent of its log object, catching up
        and trying the next number after each lost race."""
        async with self._lock:
            try:
                view = await self._catch_up() if self._view is None else self._view
                for _ in range(self.max_write_attempts):
                    sequence = view.sequence + 1
                    batch = KVBatch(sequence, "put" if kind == "put" else "delete", pairs, keys)
                    try:
                        await self.backend.put_if_absent(
                            log_key(sequence), encode_batch(batch, uuid.uuid4().hex)
                        )
                    except AlreadyExistsError:
                        view = await self._catch_up()
                        continue
                    view.apply(batch)
                    break
                else:
                    raise CheckpointConflict(
                        log_key(view.sequence + 1),
                        f"lost {self.max_write_attempts} consecutive races for a sequence number",
                        checkpoint_id=view.sequence + 1,
                        epoch=0,
                        winner_epoch=None,
                    )
            except BaseException:
                self._view = None  # the write may or may not have landed: reload next time
                raise
            if self.compact_every and sequence - view.manifest.snapshot >= self.compact_every:
                try:
                    await self._compact(view)
                except ObjstoreError as exc:  # the batch is committed; compaction can wait
                    logger.warning("KV compaction after batch %d failed: %s", sequence, exc)
            return sequence

    async def _catch_up(self) -> _View:
        """This object's view brought up to the newest visible batch: the log tail after
        what it knows (1 LIST + GETs of new batches), or a full load when it knows nothing
        or its tail was pruned under it."""
        if self._view is not None:
            try:
                await self._read_tail(self._view)
                return self._view
            except _Stale:
                self._view = None
        for _ in range(_MAX_RELOADS):
            try:
                self._view = await self._load()
                return self._view
            except _Stale:
                continue
        raise CorruptionError(MANIFEST_KEY, f"state kept changing under {_MAX_RELOADS} loads")

    async def _load(self) -> _View:
        """Manifest → its snapshot → the log tail after it."""
        view = _View()
        view.manifest, view.manifest_version = await self._read_manifest()
        if view.manifest.snapshot:
            key = snapshot_key(view.manifest.snapshot)
            try:
                blob, _ = await self.backend.get(key)
            except NotFoundError as exc:  # replaced by a newer snapshot since we read the manifest
                raise _Stale from exc
            view.data = decode_snapshot(blob, key=key, sequence=view.manifest.snapshot)
            view.sequence = view.manifest.snapshot
        await self._read_tail(view)
        return view

    async def _read_tail(self, view: _View) -> None:
        """Apply the contiguous run of batches after ``view.sequence``; ``_Stale`` if one of
        them was pruned (another writer compacted past this view)."""
        while True:
            listing = await self.backend.list_after(
                LOG_PREFIX, log_key(view.sequence), limit=_LIST_PAGE
            )
            found = (sequence_of(info.key, LOG_PREFIX) for info in listing)
            tail = contiguous_tail(view.sequence, (s for s in found if s is not None))
            batches = await _gather(self._read_log(sequence) for sequence in tail)
            for batch in batches:
                if batch is None:
                    raise _Stale
                view.apply(batch)
            if len(listing) < _LIST_PAGE or len(tail) < len(listing):
                return

    async def _read_log(self, sequence: int) -> KVBatch | None:
        key = log_key(sequence)
        blob, _ = await self.backend.get(key)
        return decode_batch(blob, key=key, sequence=sequence)

    async def _read_manifest(self) -> tuple[KVManifest, str | None]:
        try:
            blob, version = await self.backend.get(MANIFEST_KEY)
        except NotFoundError:
            return KVManifest(), None
        return decode_manifest(blob, key=MANIFEST_KEY), version

    async def _compact(self, view: _View) -> None:
        """Write the snapshot of ``view`` (create-if-absent: the state after batch N is the
        same whoever writes it), then move the manifest to it and delete the snapshot it
        replaced. A crash before the manifest moves leaves an unreferenced snapshot."""
        sequence = view.sequence
        if sequence <= view.manifest.snapshot:
            return
        items = [(key, view.data[key]) for key in view.sorted_keys()]
        with contextlib.suppress(AlreadyExistsError):  # another writer compacted this state
            await self.backend.put_if_absent(
                snapshot_key(sequence), encode_snapshot(sequence, items)
            )
        previous = view.manifest.snapshot
        await self._advance_manifest(view, KVManifest(sequence, 1, 1))
        if previous and view.manifest.snapshot > previous:
            await self.backend.delete(snapshot_key(previous))

    async def _advance_manifest(self, view: _View, wanted: KVManifest) -> None:
        """Compare-and-swap the manifest to the field-wise max of itself and ``wanted``."""
        manifest, version = view.manifest, view.manifest_version
        for _ in range(self.max_write_attempts):
            target = manifest.merged(wanted)
            if target == manifest and version is not None:
                break
            blob = encode_manifest(target, uuid.uuid4().hex)
            try:
                if version is None:
                    version = await self.backend.put_if_absent(MANIFEST_KEY, blob)
                else:
                    version = await self.backend.put_if_match(MANIFEST_KEY, blob, version)
            except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
                manifest, version = await self._read_manifest()
                continue
            manifest = target
            break
        else:
            raise CheckpointConflict(
                MANIFEST_KEY,
                "lost too many races to update the KV manifest",
                checkpoint_id=wanted.snapshot,
                epoch=0,
                winner_epoch=None,
            )
        view.manifest, view.manifest_version = manifest, version


class KVStore(StoreFacade[AsyncKVStore]):
    """The blocking face of :class:`AsyncKVStore`: same arguments, methods and errors, no
    ``await``. Safe to share between threads (calls on one store object run one at a time)."""

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        max_write_attempts: int = 1000,
    ) -> None:
        super().__init__(
            AsyncKVStore(
                url_or_backend,
                storage_options=storage_options,
                verify_fencing=verify_fencing,
                request_hook=request_hook,
                compact_every=compact_every,
                max_write_attempts=max_write_attempts,
            )
        )

    put_batch = blocking(AsyncKVStore.put_batch)
    delete_batch = blocking(AsyncKVStore.delete_batch)
    get = blocking(AsyncKVStore.get)
    get_many = blocking(AsyncKVStore.get_many)
    range_scan = blocking(AsyncKVStore.range_scan)
    current_sequence = blocking(AsyncKVStore.current_sequence)
    get_batch = blocking(AsyncKVStore.get_batch)
    read_batch = blocking(AsyncKVStore.read_batch)
    oldest_retained_batch = blocking(AsyncKVStore.oldest_retained_batch)
    compact = blocking(AsyncKVStore.compact)
    prune_batch_log = blocking(AsyncKVStore.prune_batch_log)
    close = blocking(AsyncKVStore.close)
