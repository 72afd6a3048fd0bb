"""AsyncKVStore and its blocking face KVStore (protocol described in :mod:`objstore.kv`)."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from objstore._concurrency import gather_bounded
from objstore._loop import AsyncClosing, StoreFacade, blocking
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend, Buffer, RequestHook
from objstore.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptionError,
    NotFoundError,
    OutcomeUnknownError,
)
from objstore.kv._compact import (
    DEFAULT_FLUSH_BATCHES,
    DEFAULT_MAX_RUNS,
    Compactor,
)
from objstore.kv._format import (
    LOG_PREFIX,
    MANIFEST_KEY,
    SNAPSHOT_PREFIX,
    KVBatch,
    KVManifest,
    contiguous_tail,
    decode_batch,
    decode_snapshot,
    describe_log_object,
    encode_batch,
    encode_tombstone,
    log_key,
    plan_sweep,
    sequence_of,
)
from objstore.kv._read import (
    DEFAULT_CACHE_BYTES,
    Entry,
    SegmentReader,
    StaleRead,
    merge_sources,
    read_manifest,
    segment_for_key,
    segments_for_range,
    swap_manifest,
)
from objstore.kv._segment import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_SEGMENT_BYTES,
    SEGMENT_PREFIX,
    SegmentRef,
)

__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_COMPACT_EVERY",
    "DEFAULT_SNAPSHOT_GRACE_SECONDS",
    "AsyncKVStore",
    "KVStore",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_COMPACT_EVERY = 32
"""Batches in the log tail after which a writer starts a background compaction."""
DEFAULT_SNAPSHOT_GRACE_SECONDS = 600.0
"""How old, by the store's clock, an unreferenced segment (or snapshot) that a compaction
in flight might still commit must be before a sweep condemns and deletes it. Only liveness
depends on it: the sweep bumps the manifest's generation first, so such a compaction loses
its commit instead of referencing a deleted segment."""
CLOCK_KEY = "kv/clock"
"""Rewritten by a sweep to read the store's current time (its mtime) when it must judge ages."""
_TAIL_PAGE = 100
"""Log objects one catch-up LIST asks for; a full page means the reader is far behind and
reads the manifest to jump to the compacted state instead of reading batch by batch."""
_MANIFEST_EVERY = 256
"""Batches a store object applies before it re-reads the manifest to drop what compaction
folded (bounds its in-memory tail when another process compacts)."""
_MAX_RELOADS = 16
_PARALLEL = 16
_SCAN_AHEAD = 1024 * 1024


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


class _View:
    """What one store object knows: the manifest it last saw (and its version), the state
    after batch ``sequence`` as that manifest's compacted state plus ``memtable`` — the
    batches after the manifest's ``snapshot``, each key with the newest sequence that wrote
    it and its value (``None``: deleted)."""

    def __init__(self) -> None:
        self.manifest = KVManifest()
        self.manifest_version: str | None = None
        self.manifest_at = 0
        self.sequence = 0
        self.memtable: dict[bytes, tuple[int, bytes | None]] = {}
        self._sorted: list[bytes] | None = None
        self.legacy: dict[bytes, bytes] | None = None
        self._legacy_sorted: list[bytes] | None = None
        self.caught_up_at = float("-inf")

    def apply(self, batch: KVBatch) -> None:
        sequence = batch.sequence
        if batch.kind == "put":
            for key, value in batch.pairs:
                self._set(key, sequence, value)
        else:
            for key in batch.keys:
                self._set(key, sequence, None)
        self.sequence = sequence

    def _set(self, key: bytes, sequence: int, value: bytes | None) -> None:
        if key not in self.memtable and self._sorted is not None:
            bisect.insort(self._sorted, key)
        self.memtable[key] = (sequence, value)

    def adopt(
        self, manifest: KVManifest, version: str | None, legacy: dict[bytes, bytes] | None
    ) -> None:
        """Move to ``manifest``'s compacted state: drop the tail it folded (or everything,
        when it is ahead of this view)."""
        self.manifest, self.manifest_version = manifest, version
        self.legacy, self._legacy_sorted = legacy, None
        if manifest.snapshot >= self.sequence:
            self.memtable, self._sorted = {}, None
            self.sequence = manifest.snapshot
        else:
            folded = [k for k, (s, _) in self.memtable.items() if s <= manifest.snapshot]
            for key in folded:
                del self.memtable[key]
            if folded:
                self._sorted = None
        self.manifest_at = self.sequence

    def sorted_keys(self) -> list[bytes]:
        if self._sorted is None:
            self._sorted = sorted(self.memtable)
        return self._sorted

    def legacy_keys(self) -> list[bytes]:
        if self._legacy_sorted is None:
            self._legacy_sorted = sorted(self.legacy or {})
        return self._legacy_sorted


def _key_range(keys: list[bytes], low: bytes, high: bytes, forward: bool) -> Iterable[bytes]:
    first = bisect.bisect_left(keys, low)
    stop = bisect.bisect_right(keys, high) if high else len(keys)
    chosen = keys[first:stop]
    return chosen if forward else reversed(chosen)


async def _memtable_source(
    view: _View, low: bytes, high: bytes, forward: bool
) -> AsyncIterator[Entry]:
    for key in list(_key_range(view.sorted_keys(), low, high, forward)):
        yield key, view.memtable[key][1]


async def _legacy_source(
    view: _View, low: bytes, high: bytes, forward: bool
) -> AsyncIterator[Entry]:
    legacy = view.legacy or {}
    for key in list(_key_range(view.legacy_keys(), low, high, forward)):
        yield key, legacy[key]


@dataclass(frozen=True, slots=True)
class _Unanswered:
    """A batch whose create got no answer (it may have landed): the exact bytes sent to
    ``log/{sequence}``, so a retry of the same batch can recognise them (writer nonce)."""

    sequence: int
    blob: bytes
    nonce: str
    kind: str
    pairs: tuple[tuple[bytes, bytes], ...]
    keys: tuple[bytes, ...]

    def is_retry(
        self, kind: str, pairs: tuple[tuple[bytes, bytes], ...], keys: tuple[bytes, ...]
    ) -> bool:
        """Whether a new batch is the same as this one (a caller retrying it)."""
        return (self.kind, self.pairs, self.keys) == (kind, pairs, keys)


class AsyncKVStore(AsyncClosing):
    """Sorted bytes keys with a sequence-numbered batch log under ``{root}/kv/`` (asyncio).

    The compacted state lives in sorted segments on the store, read block by block with
    ranged GETs through an LRU of ``cache_bytes``; a store object holds in memory only the
    log tail not yet compacted, the indexes of segments it touched and that cache.
    :meth:`put_batch` and :meth:`delete_batch` are one create-if-absent write each in the
    steady state and never compact: once ``compact_every`` batches follow the compacted
    state, a background task compacts while writers go on.

    **Freshness.** A store object always reads its own batches. Other writers' batches are
    visible to a read once it catches up: 1 LIST of the log after what it knows plus 1 GET
    per new batch; a reader far behind (a full page of new batches) reads the manifest and
    jumps to the compacted state instead. Reads catch up when the last catch-up is older
    than ``max_staleness`` seconds (``0``, the default: every read sees every batch
    committed before it started; ``None``: only :meth:`refresh` and this object's own
    writes move it).

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
        compact_every: start a background compaction once this many batches follow the
            compacted state (0: never; :meth:`compact` still works).
        max_write_attempts: lost races for a sequence number (or for the manifest) a write
            absorbs before raising :class:`~objstore.errors.ConflictError` (``expected`` =
            what it last tried to write, ``actual`` = what the store holds).
        max_staleness: seconds a read may serve without catching up (see above).
        cache_bytes: decoded segment blocks kept in memory (LRU).
        max_runs: sorted runs a background compaction lets stand (size-tiered).
        segment_bytes: size after which a compaction closes a segment object.
        block_bytes: raw entry bytes per block (the unit of a point read).
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
        max_staleness: float | None = 0.0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_runs: int = DEFAULT_MAX_RUNS,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        if compact_every < 0:
            raise ValueError("compact_every must not be negative")
        if max_write_attempts < 1:
            raise ValueError("max_write_attempts must be at least 1")
        if max_staleness is not None and max_staleness < 0:
            raise ValueError("max_staleness must not be negative")
        if min(cache_bytes, max_runs, segment_bytes, block_bytes) < 1:
            raise ValueError("cache_bytes, max_runs, segment_bytes, block_bytes must be >= 1")
        self.backend: AsyncBackend = as_async_backend(
            url_or_backend,
            storage_options,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
        )
        self.compact_every = compact_every
        self.max_write_attempts = max_write_attempts
        self.max_staleness = max_staleness
        self._reader = SegmentReader(self.backend, cache_bytes)
        self._compactor = Compactor(
            self.backend,
            self._reader,
            self._read_log,
            max_runs=max_runs,
            segment_bytes=segment_bytes,
            block_bytes=block_bytes,
            flush_batches=DEFAULT_FLUSH_BATCHES,
            attempts=max_write_attempts,
        )
        self._view: _View | None = None
        self._lock = asyncio.Lock()
        self._compact_lock = asyncio.Lock()
        self._background: asyncio.Task[None] | None = None
        self._offered: tuple[KVManifest, str | None] | None = None
        self._unanswered: _Unanswered | None = None
        self._compact_failures = 0
        self._compact_not_before = 0
        self._monotonic: Callable[[], float] = time.monotonic

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.backend.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- writes ------------------------------------------------------------------------------

    async def put_batch(self, pairs: Iterable[tuple[Buffer, Buffer]]) -> int:
        """Atomically set every ``(key, value)`` pair; return the batch's sequence number.

        A key given twice takes its last value. Keys or values that are not bytes-like raise
        ``TypeError`` (from the key/value check) before any request.

        Raises:
            ValueError: for an empty batch (or an empty key, from the key check), before any
                request.
        """
        checked = tuple((_check_key(key), _check_bytes(value, "value")) for key, value in pairs)
        if not checked:
            raise ValueError("put_batch needs at least one pair")
        return await self._commit("put", checked, ())

    async def delete_batch(self, keys: Iterable[Buffer]) -> int:
        """Atomically delete ``keys`` (absent ones are fine); return the batch's sequence.

        Keys that are not bytes-like raise ``TypeError`` (from the key check) before any
        request.

        Raises:
            ValueError: for no keys (or an empty key, from the key check), before any request.
        """
        checked = tuple(_check_key(key) for key in keys)
        if not checked:
            raise ValueError("delete_batch needs at least one key")
        return await self._commit("delete", (), checked)

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: Buffer) -> bytes | None:
        """The value of ``key``, or ``None`` when it is not set (cold: at most 1 ranged GET
        of a segment's index and 1 of a block per run whose key range holds ``key``)."""
        checked = _check_key(key)
        return await self._reading(lambda view: self._lookup(view, checked))

    async def get_many(self, keys: Iterable[Buffer]) -> list[tuple[bytes, bytes | None]]:
        """``(key, value or None)`` for each of ``keys``, in the order given."""
        checked = [_check_key(key) for key in keys]

        async def lookup(view: _View) -> list[tuple[bytes, bytes | None]]:
            values = await gather_bounded((self._lookup(view, key) for key in checked), _PARALLEL)
            return list(zip(checked, values, strict=True))

        return await self._reading(lookup)

    async def range_scan(
        self,
        start: Buffer = b"",
        end: Buffer = b"",
        limit: int | None = None,
        forward: bool = True,
    ) -> list[tuple[bytes, bytes]]:
        """Pairs with ``start <= key <= end`` (an empty ``end`` is unbounded), in key order
        (descending when not ``forward``), at most ``limit`` of them (``None``: all).

        Reads only the blocks the range touches (1 ranged GET each, cached); an unbounded
        scan reads about 1 MiB of consecutive blocks per GET.

        Raises:
            ValueError: if ``limit`` is negative.
        """
        low, high = _check_bytes(start, "start"), _check_bytes(end, "end")
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        if limit == 0 or (high and high < low):
            return []

        async def scan(view: _View) -> list[tuple[bytes, bytes]]:
            sources = [_memtable_source(view, low, high, forward)]
            for run in view.manifest.runs:
                sources.append(self._run_source(run, low, high, forward, limit))
            if view.legacy is not None:
                sources.append(_legacy_source(view, low, high, forward))
            rows: list[tuple[bytes, bytes]] = []
            merged = merge_sources(sources, forward)
            try:
                async for key, value in merged:
                    if value is not None:
                        rows.append((key, value))
                        if limit is not None and len(rows) >= limit:
                            break
            finally:
                await merged.aclose()
            return rows

        return await self._reading(scan)

    async def current_sequence(self) -> int:
        """The newest sequence visible to this store object (0 before the first batch)."""
        return await self._reading(self._sequence_of)

    async def refresh(self) -> int:
        """Catch up now with every batch committed before this call, whatever
        ``max_staleness`` (1 LIST, plus 1 GET per new batch, or the manifest and the tail
        after it when far behind); return the newest visible sequence."""
        async with self._lock:
            return (await self._catch_up(force=True)).sequence

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
            manifest, _ = await read_manifest(self.backend)
            if view.sequence == 0 or manifest.retained_from > view.sequence:
                return None
            return manifest.retained_from

    # -- maintenance -------------------------------------------------------------------------

    async def compact(self, full: bool = True) -> int:
        """Fold every visible batch into the compacted state the manifest points to, then
        sweep what no manifest can reference (see :meth:`sweep_snapshots`); return the
        sequence the compacted state covers. ``full`` (the default) merges every run into
        one (deleted keys dropped: the cheapest state to read); ``full=False`` is what the
        background task does, a size-tiered pass that merges only runs of similar size.
        Writers are not blocked meanwhile (they only append to the log).
        Raises ``ConflictError`` if it kept losing the manifest to other compactions or
        sweeps."""
        async with self._lock:
            target = (await self._catch_up()).sequence
        covered = await self._compact_through(target, full=full)
        await self._sweep(DEFAULT_SNAPSHOT_GRACE_SECONDS)
        return covered

    async def wait_for_background(self) -> None:
        """Wait until the background compaction running now (if any) has ended; its errors
        are logged, never raised."""
        task = self._background
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

    async def sweep_snapshots(
        self, grace_seconds: float = DEFAULT_SNAPSHOT_GRACE_SECONDS
    ) -> list[str]:
        """Delete segments (and legacy snapshots) the manifest does not reference and never
        will; return their keys.

        An unreferenced segment written against an older manifest generation goes at once
        (its compaction committed and was replaced, or lost). One of the current generation
        may belong to a compaction about to commit, so it goes only once ``grace_seconds``
        old by the **store's** clock (object times, never this machine's), and only after a
        compare-and-swap has moved the manifest to the next generation: a compaction commits
        only onto the generation it read, so one still in flight then loses instead of
        referencing a deleted segment. Safety does not depend on clocks or delays; a grace
        shorter than a compaction takes only makes that compaction lose. Costs 2 LISTs +
        1 GET, plus 1 PUT + 1 HEAD when young unreferenced segments exist, plus 1 manifest
        CAS when some are old, plus the deletes.

        Raises:
            ValueError: if ``grace_seconds`` is negative.
        """
        if grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        return await self._sweep(grace_seconds)

    async def prune_batch_log(self, cutoff_exclusive: int) -> int:
        """Drop the data of every batch below ``cutoff_exclusive``; return how many log
        objects this call tombstoned.

        Compacts through the cutoff first, so no key is ever lost. A pruned log object is
        overwritten with a tiny tombstone rather than deleted, so its sequence number can
        never be allocated again; the tombstone keeps the batch's writer nonce (1 GET per
        batch), so a writer retrying an unanswered batch still recognises it as committed.
        Resumable: a prune that crashed midway (after moving ``retained_from``, before
        recording its tombstones) is finished by the next call, whatever its cutoff.

        Raises:
            ValueError: if ``cutoff_exclusive`` is below 1.
            ConflictError: (nothing pruned) if the compaction it needs kept losing.
        """
        if cutoff_exclusive < 1:
            raise ValueError("cutoff_exclusive must be at least 1")
        async with self._lock:
            view = await self._catch_up(force=True)
            newest = view.sequence
        manifest, version = await read_manifest(self.backend)
        cutoff = min(cutoff_exclusive, newest + 1)
        if cutoff > manifest.retained_from:
            if manifest.snapshot < cutoff - 1:
                await self._compact_through(cutoff - 1, full=False)
                manifest, version = await read_manifest(self.backend)
            if manifest.snapshot < cutoff - 1:
                raise ConflictError(
                    MANIFEST_KEY,
                    f"could not compact through batch {cutoff - 1} before pruning",
                    expected=cutoff - 1,
                    actual=manifest.snapshot,
                )
            wanted = KVManifest(retained_from=cutoff)
            manifest, version, _ = await swap_manifest(
                self.backend, manifest, version, lambda m: m.merged(wanted), self.max_write_attempts
            )
        start, target = manifest.tombstoned_below, manifest.retained_from
        if start >= target:
            return 0
        await gather_bounded(
            (self._tombstone(sequence) for sequence in range(start, target)), _PARALLEL
        )
        marks = KVManifest(retained_from=target, tombstoned_below=target)
        manifest, version, _ = await swap_manifest(
            self.backend, manifest, version, lambda m: m.merged(marks), self.max_write_attempts
        )
        self._offer(manifest, version)
        return target - start

    async def _tombstone(self, sequence: int) -> None:
        """Overwrite log object ``sequence`` with a tombstone keeping its writer nonce (read
        from the batch, or from the tombstone a crashed prune already wrote)."""
        key = log_key(sequence)
        try:
            blob, _ = await self.backend.get(key)
        except NotFoundError:
            nonce = ""
        else:
            nonce = describe_log_object(blob, key=key, sequence=sequence).nonce or ""
        await self.backend.put(key, encode_tombstone(sequence, nonce))

    async def close(self) -> None:
        """Stop a background compaction (what it wrote is swept later) and close the
        backend's connections."""
        task, self._background = self._background, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.backend.close()

    # -- internals: reading --------------------------------------------------------------------

    async def _reading(self, read: Callable[[_View], Awaitable[_T]]) -> _T:
        """Run ``read`` on the caught-up view; when a segment it reads is gone (replaced by
        a compaction since this object read the manifest), re-read the manifest and retry.

        Raises:
            CorruptionError: if the state kept changing under repeated retries.
        """
        for _ in range(_MAX_RELOADS):
            async with self._lock:
                view = await self._catch_up()
                try:
                    return await read(view)
                except StaleRead:
                    self._view = None
        raise CorruptionError(MANIFEST_KEY, f"state kept changing under {_MAX_RELOADS} reads")

    async def _sequence_of(self, view: _View) -> int:
        return view.sequence

    async def _lookup(self, view: _View, key: bytes) -> bytes | None:
        entry = view.memtable.get(key)
        if entry is not None:
            return entry[1]
        for run in view.manifest.runs:
            segment = segment_for_key(run, key)
            if segment is not None:
                found, value = await self._reader.get(segment, key)
                if found:
                    return value
        if view.legacy is not None:
            return view.legacy.get(key)
        return None

    async def _run_source(
        self, run: tuple[SegmentRef, ...], low: bytes, high: bytes, forward: bool, limit: int | None
    ) -> AsyncIterator[Entry]:
        chosen = segments_for_range(run, low, high)
        for segment in chosen if forward else reversed(chosen):
            # Read ahead what ``limit`` rows likely take (all of it: 1 MiB per GET), so a
            # bounded scan costs one ranged GET per run, not one per block.
            ahead = _SCAN_AHEAD
            if limit is not None:
                ahead = min(_SCAN_AHEAD, 2 * limit * segment.size // max(segment.count, 1))
            async for item in self._reader.scan(segment, low, high, forward, ahead):
                yield item

    async def _catch_up(self, *, force: bool = False) -> _View:
        """This object's view brought up to the newest visible batch (see the class
        docstring's freshness rule), or a full load when it knows nothing or its tail was
        pruned under it.

        Raises:
            CorruptionError: if the manifest, segments and log keep changing under repeated
                full loads.
        """
        view = self._view
        if view is not None:
            self._adopt_offered(view)
            staleness = self.max_staleness
            if not force and (
                staleness is None or self._monotonic() - view.caught_up_at < staleness
            ):
                return view
            try:
                await self._read_tail(view)
                return view
            except StaleRead:
                self._view = None
        for _ in range(_MAX_RELOADS):
            try:
                view = _View()
                await self._read_manifest_into(view)
                await self._read_tail(view)
                self._view = view
                return view
            except StaleRead:
                continue
        raise CorruptionError(MANIFEST_KEY, f"state kept changing under {_MAX_RELOADS} loads")

    async def _read_manifest_into(self, view: _View) -> None:
        """Read the manifest (1 GET, + the legacy snapshot of a format 1-3 store) and move
        ``view`` onto it.

        Raises:
            StaleRead: if a legacy snapshot was replaced since the manifest was read.
        """
        manifest, version = await read_manifest(self.backend)
        if version is not None and version == view.manifest_version:
            view.manifest_at = view.sequence
            return
        legacy: dict[bytes, bytes] | None = None
        if manifest.legacy:
            key = manifest.snapshot_key
            try:
                blob, _ = await self.backend.get(key)
            except NotFoundError as exc:
                raise StaleRead from exc
            legacy = decode_snapshot(blob, key=key, sequence=manifest.snapshot)
        view.adopt(manifest, version, legacy)
        self._reader.retain(manifest)

    async def _read_tail(self, view: _View) -> None:
        """Apply the contiguous run of batches after ``view.sequence``; when a full page of
        them waits (far behind), or many batches were applied since the manifest was last
        read, read the manifest first and jump to its compacted state.

        Raises:
            StaleRead: if one of them was pruned (another writer compacted past this view).
        """
        started = self._monotonic()
        while True:
            listing = await self.backend.list_after(
                LOG_PREFIX, log_key(view.sequence), limit=_TAIL_PAGE
            )
            found = (sequence_of(info.key, LOG_PREFIX) for info in listing)
            tail = contiguous_tail(view.sequence, (s for s in found if s is not None))
            if len(tail) >= _TAIL_PAGE or view.sequence + len(tail) - view.manifest_at >= (
                _MANIFEST_EVERY
            ):
                before = view.sequence
                await self._read_manifest_into(view)
                if view.sequence > before:
                    continue  # jumped to the compacted state: list the tail after it
            batches = await gather_bounded(
                (self._read_log(sequence) for sequence in tail), _PARALLEL
            )
            for batch in batches:
                if batch is None:
                    raise StaleRead
                view.apply(batch)
            if len(listing) < _TAIL_PAGE or len(tail) < len(listing):
                view.caught_up_at = started
                return

    async def _read_log(self, sequence: int) -> KVBatch | None:
        key = log_key(sequence)
        blob, _ = await self.backend.get(key)
        return decode_batch(blob, key=key, sequence=sequence)

    def _adopt_offered(self, view: _View) -> None:
        """Move ``view`` onto the manifest maintenance offered, if newer than its own."""
        if self._offered is not None:
            manifest, version = self._offered
            self._offered = None
            if manifest.generation > view.manifest.generation and not manifest.legacy:
                view.adopt(manifest, version, None)
                self._reader.retain(manifest)

    def _offer(self, manifest: KVManifest, version: str | None) -> None:
        """Hand a manifest this object wrote or read during maintenance to its view, which
        adopts it on its next call (dropping the tail it folded)."""
        if self._offered is None or manifest.generation > self._offered[0].generation:
            self._offered = (manifest, version)

    # -- internals: writing ------------------------------------------------------------------

    async def _commit(
        self, kind: str, pairs: tuple[tuple[bytes, bytes], ...], keys: tuple[bytes, ...]
    ) -> int:
        """Append the batch (:meth:`_append`), then start a background compaction when due:
        a committed batch returns its sequence, never waiting for compaction."""
        async with self._lock:
            sequence = await self._append(kind, pairs, keys)
            view = self._view
            if view is not None:
                self._adopt_offered(view)
                if view.sequence - view.manifest_at >= _MANIFEST_EVERY:
                    # Another process may compact: learn what it folded (1 GET per
                    # _MANIFEST_EVERY batches), so this object's tail stays bounded.
                    try:
                        await self._read_manifest_into(view)
                    except Exception as exc:  # the batch is committed whatever this does
                        view.manifest_at = view.sequence
                        logger.info("KV manifest re-read after batch %d failed: %s", sequence, exc)
            self._maybe_compact_in_background(sequence)
            return sequence

    def _maybe_compact_in_background(self, sequence: int) -> None:
        """Start a background compaction once ``compact_every`` batches follow the
        compacted state this object knows (and none is running, and no recent failure asks
        to wait)."""
        view = self._view
        if (
            not self.compact_every
            or view is None
            or sequence - view.manifest.snapshot < self.compact_every
            or sequence < self._compact_not_before
            or (self._background is not None and not self._background.done())
        ):
            return
        self._background = asyncio.get_running_loop().create_task(
            self._compact_in_background(sequence)
        )

    async def _compact_in_background(self, sequence: int) -> None:
        """One size-tiered compaction. Never raises: the batches are committed, so a
        failure (of any kind: a full disk is an ``OSError``) is logged at WARNING and
        compaction retried after a few more batches (doubling the wait, up to
        ``compact_every``). Cancelled by :meth:`close`.

        Raises:
            CancelledError: when :meth:`close` stops it.
        """
        try:
            async with self._compact_lock:
                for _ in range(_MAX_RELOADS):
                    try:
                        result = await self._compactor.compact(full=False)
                    except StaleRead:
                        continue
                    self._offer(result.manifest, result.version)
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._compact_failures += 1
            wait = min(self.compact_every, 2 ** min(self._compact_failures - 1, 30))
            self._compact_not_before = sequence + wait
            logger.warning(
                "KV batch %d is committed, but compaction after it failed (%s: %s); "
                "retrying after batch %d",
                sequence,
                type(exc).__name__,
                exc,
                self._compact_not_before,
            )
        else:
            self._compact_failures = 0

    async def _compact_through(self, target: int, *, full: bool) -> int:
        """Compact until the compacted state covers batch ``target`` — size-tiered passes,
        each folding a bounded part of the tail — then, if ``full``, one pass merging every
        run into one; return what the compacted state covers.

        Raises:
            ConflictError: if compactions kept losing (to other compactions or sweeps).
        """
        async with self._compact_lock:
            manifest = KVManifest()
            losses = 0
            while losses < _MAX_RELOADS:
                try:
                    result = await self._compactor.compact(full=False)
                except StaleRead:
                    losses += 1
                    continue
                self._offer(result.manifest, result.version)
                manifest = result.manifest
                if manifest.snapshot >= target:
                    break
                losses += 0 if result.committed else 1
            while losses < _MAX_RELOADS:
                if manifest.snapshot >= target and (not full or len(manifest.runs) <= 1):
                    return manifest.snapshot
                try:
                    result = await self._compactor.compact(full=True)
                except StaleRead:
                    losses += 1
                    continue
                self._offer(result.manifest, result.version)
                manifest = result.manifest
                if result.committed:
                    return manifest.snapshot
                losses += 1
            raise ConflictError(
                MANIFEST_KEY,
                f"could not compact through batch {target} in {_MAX_RELOADS} attempts",
                expected=target,
                actual=manifest.snapshot,
            )

    async def _sweep(self, grace_seconds: float) -> list[str]:
        """Delete unreferenced segments and snapshots (see :meth:`sweep_snapshots`)."""
        segments = [(i.key, i.mtime) for i in await self.backend.list(SEGMENT_PREFIX)]
        snapshots = [(i.key, i.mtime) for i in await self.backend.list(SNAPSHOT_PREFIX)]
        manifest, version = await read_manifest(self.backend)
        plan = plan_sweep(segments, snapshots, manifest)
        doomed = list(plan.now)
        if plan.if_old:
            old = plan.old(await self._store_now(), grace_seconds)
            if old:
                fence = KVManifest(generation=manifest.generation + 1)
                manifest, version, _ = await swap_manifest(
                    self.backend,
                    manifest,
                    version,
                    lambda m: m.merged(fence) if m.generation < fence.generation else None,
                    self.max_write_attempts,
                )
                self._offer(manifest, version)
                doomed += plan_sweep([(key, None) for key in old], [], manifest).now
        await self.backend.delete_many(doomed)
        if doomed:
            logger.info("swept %d unreferenced KV segment(s) or snapshot(s)", len(doomed))
        return sorted(doomed)

    async def _store_now(self) -> float | None:
        """The store's current time: the mtime it gives a fresh write of :data:`CLOCK_KEY`
        (1 PUT + 1 HEAD); ``None`` if it reports no times."""
        await self.backend.put(CLOCK_KEY, uuid.uuid4().hex.encode())
        return (await self.backend.head(CLOCK_KEY)).mtime

    async def _append(
        self, kind: str, pairs: tuple[tuple[bytes, bytes], ...], keys: tuple[bytes, ...]
    ) -> int:
        """Claim the next sequence with one create-if-absent of its log object, catching up
        and trying the next number after each lost race.

        A create that raised is read back at once (1 GET): if it holds the bytes sent (writer
        nonce) the batch committed and its sequence is returned. If that cannot tell, the
        create is remembered; when the caller retries the same batch, the log object it may
        have created is read back first and, if it is ours (or a tombstone keeping our
        nonce: pruned since), its sequence is returned instead of appending again.

        Raises:
            OutcomeUnknownError: (appending nothing) when that object is a tombstone that does not
                say whose batch it was.
            ConflictError: (nothing written) after losing ``max_write_attempts`` consecutive races
                for a sequence number.
            OSError: a storage error of the create is re-raised when its outcome cannot be told; the
                batch is remembered for the caller's retry.
        """
        try:
            unanswered, self._unanswered = self._unanswered, None
            if unanswered is not None and unanswered.is_retry(kind, pairs, keys):
                try:
                    landed = await self._landed(unanswered)
                except OutcomeUnknownError:
                    raise
                except BaseException:
                    self._unanswered = unanswered  # still unknown: ask again next retry
                    raise
                if landed:
                    logger.info("KV batch %d had landed before its retry", unanswered.sequence)
                    return unanswered.sequence
            elif unanswered is not None:
                self._unanswered = unanswered  # until another batch commits
            view = await self._catch_up() if self._view is None else self._view
            for _ in range(self.max_write_attempts):
                sequence = view.sequence + 1
                batch = KVBatch(sequence, "put" if kind == "put" else "delete", pairs, keys)
                nonce = uuid.uuid4().hex
                blob = encode_batch(batch, nonce)
                try:
                    await self.backend.put_if_absent(log_key(sequence), blob)
                except AlreadyExistsError:
                    view = await self._catch_up(force=True)
                    if view.manifest.retained_from > sequence and await self._pruned_as_ours(
                        sequence, nonce
                    ):
                        logger.info("KV batch %d had landed and been pruned", sequence)
                        self._unanswered = None
                        return sequence
                    continue
                except OSError:  # transient past its retries, or the store's own (disk full)
                    sent = _Unanswered(sequence, blob, nonce, kind, pairs, keys)
                    if not await self._landed_after_error(sent):
                        self._unanswered = sent
                        raise
                except BaseException:
                    self._unanswered = _Unanswered(sequence, blob, nonce, kind, pairs, keys)
                    raise
                view.apply(batch)
                self._unanswered = None
                return sequence
            raise ConflictError(
                log_key(sequence),
                f"lost {self.max_write_attempts} consecutive races for a sequence number "
                f"(last tried {sequence}, the store holds {view.sequence}); nothing was written",
                expected=sequence,
                actual=view.sequence,
            )
        except BaseException:
            self._view = None  # the write may or may not have landed: reload next time
            raise

    async def _landed_after_error(self, sent: _Unanswered) -> bool:
        """Whether a create that raised had landed all the same (an earlier attempt's answer
        was lost, then a retry failed): one read-back, so a committed batch is never reported
        as failed. ``False`` when the read-back fails too; the caller's retry asks again."""
        try:
            landed = await self._landed(sent)
        except Exception:
            return False
        if landed:
            logger.info("KV batch %d had landed before the error of its retry", sent.sequence)
        return landed

    async def _pruned_as_ours(self, sequence: int, nonce: str) -> bool:
        """Whether log object ``sequence`` is a tombstone keeping ``nonce`` (1 GET).

        Asked when a create met an existing object at a sequence that is pruned by now: an
        earlier attempt of the same create may have landed with its answer lost, and the
        backend's read-back (which compares bytes) found the tombstone a prune put there
        since. A tombstone without a nonce counts as someone else's here (this may just
        have been a lost race; :meth:`_landed` is stricter for a caller's retry)."""
        key = log_key(sequence)
        try:
            stored, _ = await self.backend.get(key)
            stamp = describe_log_object(stored, key=key, sequence=sequence)
        except (NotFoundError, CorruptionError):
            return False
        return stamp.pruned and stamp.nonce == nonce

    async def _landed(self, unanswered: _Unanswered) -> bool:
        """Whether the log object of an unanswered create holds exactly what it sent, or a
        tombstone keeping its nonce (the batch landed and was pruned since).

        Raises:
            OutcomeUnknownError: for a tombstone without a nonce (one written before tombstones kept
                them): it may or may not have been ours.
        """
        key = log_key(unanswered.sequence)
        try:
            stored, _ = await self.backend.get(key)
        except NotFoundError:
            return False
        if stored == unanswered.blob:
            return True
        try:
            stamp = describe_log_object(stored, key=key, sequence=unanswered.sequence)
        except CorruptionError:
            return False
        if stamp.pruned and stamp.nonce is None:
            raise OutcomeUnknownError(key, sequence=unanswered.sequence)
        return stamp.pruned and stamp.nonce == unanswered.nonce


class KVStore(StoreFacade[AsyncKVStore]):
    """The blocking face of :class:`AsyncKVStore`: same arguments, methods and errors, no
    ``await``. Safe to share between threads (calls on one store object run one at a time).
    Its background compactions run on objstore's private event loop thread."""

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        compact_every: int = DEFAULT_COMPACT_EVERY,
        max_write_attempts: int = 1000,
        max_staleness: float | None = 0.0,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        max_runs: int = DEFAULT_MAX_RUNS,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        super().__init__(
            AsyncKVStore(
                url_or_backend,
                storage_options=storage_options,
                verify_fencing=verify_fencing,
                request_hook=request_hook,
                compact_every=compact_every,
                max_write_attempts=max_write_attempts,
                max_staleness=max_staleness,
                cache_bytes=cache_bytes,
                max_runs=max_runs,
                segment_bytes=segment_bytes,
                block_bytes=block_bytes,
            )
        )

    put_batch = blocking(AsyncKVStore.put_batch)
    delete_batch = blocking(AsyncKVStore.delete_batch)
    get = blocking(AsyncKVStore.get)
    get_many = blocking(AsyncKVStore.get_many)
    range_scan = blocking(AsyncKVStore.range_scan)
    current_sequence = blocking(AsyncKVStore.current_sequence)
    refresh = blocking(AsyncKVStore.refresh)
    get_batch = blocking(AsyncKVStore.get_batch)
    read_batch = blocking(AsyncKVStore.read_batch)
    oldest_retained_batch = blocking(AsyncKVStore.oldest_retained_batch)
    compact = blocking(AsyncKVStore.compact)
    wait_for_background = blocking(AsyncKVStore.wait_for_background)
    sweep_snapshots = blocking(AsyncKVStore.sweep_snapshots)
    prune_batch_log = blocking(AsyncKVStore.prune_batch_log)
    close = blocking(AsyncKVStore.close)
