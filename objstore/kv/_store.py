"""AsyncKVStore and its blocking face KVStore (protocol described in :mod:`objstore.kv`)."""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
import uuid
from collections.abc import Callable, Iterable
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
    PreconditionFailedError,
)
from objstore.kv._format import (
    LOG_PREFIX,
    MANIFEST_KEY,
    SNAPSHOT_PREFIX,
    KVBatch,
    KVManifest,
    contiguous_tail,
    decode_batch,
    decode_manifest,
    decode_snapshot,
    describe_log_object,
    encode_batch,
    encode_manifest,
    encode_snapshot,
    encode_tombstone,
    log_key,
    parse_snapshot_key,
    plan_snapshot_sweep,
    sequence_of,
    snapshot_key,
)

__all__ = ["DEFAULT_COMPACT_EVERY", "DEFAULT_SNAPSHOT_GRACE_SECONDS", "AsyncKVStore", "KVStore"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DEFAULT_COMPACT_EVERY = 256
"""Batches in the log tail after which a writer folds the state into a new snapshot."""
DEFAULT_SNAPSHOT_GRACE_SECONDS = 600.0
"""How old, by the store's clock, an unreferenced snapshot newer than the manifest's must be
before a sweep retires and deletes it. Only liveness depends on it: a sweep that judges a
live compaction's snapshot old makes that compaction lose (its snapshot is retired in the
manifest first), never leaves the manifest referencing a deleted snapshot. A compaction
that has not moved the manifest within half of it (by its own monotonic clock) gives up."""
CLOCK_KEY = "kv/clock"
"""Rewritten by a sweep to read the store's current time (its mtime) when it must judge ages."""
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


class _Abandoned(Exception):
    """A compaction took too long to reference its snapshot: a sweep may have deleted it."""


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
        max_write_attempts: lost races for a sequence number (or for the manifest) a write
            absorbs before raising :class:`~objstore.errors.ConflictError` (``expected`` =
            what it last tried to write, ``actual`` = what the store holds).
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
        (descending when not ``forward``), at most ``limit`` of them (``None``: all).

        Raises:
            ValueError: if ``limit`` is negative.
        """
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
        """Fold every visible batch into a snapshot the manifest points to, then sweep
        snapshots no manifest can reference (see :meth:`sweep_snapshots`); return the
        sequence the manifest's snapshot covers (no snapshot is written when it already
        covers every visible batch)."""
        async with self._lock:
            view = await self._catch_up()
            await self._compact(view)
            await self._sweep(DEFAULT_SNAPSHOT_GRACE_SECONDS)
            return view.manifest.snapshot

    async def sweep_snapshots(
        self, grace_seconds: float = DEFAULT_SNAPSHOT_GRACE_SECONDS
    ) -> list[str]:
        """Delete snapshots the manifest does not reference and never will; return their keys.

        Snapshots older than the manifest's go at once (the manifest's snapshot only grows).
        Newer ones may belong to a compaction about to reference them, so they go only once
        ``grace_seconds`` old by the **store's** clock (object times, never this machine's),
        and only after a compare-and-swap of the manifest has *retired* them: a manifest
        never moves to a retired snapshot, so a compaction whose manifest swap is still in
        flight (retries, backoff, a paused process) loses that swap's precondition instead of
        referencing a deleted snapshot. Safety therefore does not depend on clocks or delays;
        a grace shorter than a compaction takes only makes that compaction give up. Costs
        1 LIST + 1 GET, plus 1 PUT + 1 HEAD + 1 GET when newer unreferenced snapshots exist,
        plus 1 manifest CAS when some are old, plus the deletes.

        Raises:
            ValueError: if ``grace_seconds`` is negative.
        """
        if grace_seconds < 0:
            raise ValueError("grace_seconds must not be negative")
        async with self._lock:
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
            ConflictError: (nothing pruned) if the compaction it needs gave up (it could not
                reference its snapshot in time).
        """
        if cutoff_exclusive < 1:
            raise ValueError("cutoff_exclusive must be at least 1")
        async with self._lock:
            view = await self._catch_up()
            view.manifest, view.manifest_version = await self._read_manifest()
            cutoff = min(cutoff_exclusive, view.sequence + 1)
            if cutoff > view.manifest.retained_from:
                if view.manifest.snapshot < cutoff - 1:
                    await self._compact(view)
                if view.manifest.snapshot < cutoff - 1:
                    raise ConflictError(
                        MANIFEST_KEY,
                        f"could not compact through batch {cutoff - 1} before pruning",
                        expected=cutoff - 1,
                        actual=view.manifest.snapshot,
                    )
                await self._advance_manifest(view, KVManifest(view.manifest.snapshot, cutoff, 1))
            start, target = view.manifest.tombstoned_below, view.manifest.retained_from
            if start >= target:
                return 0
            await gather_bounded(
                (self._tombstone(sequence) for sequence in range(start, target)), _PARALLEL
            )
            await self._advance_manifest(view, KVManifest(0, 1, target))
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
        """Close the backend's connections."""
        await self.backend.close()

    # -- internals ---------------------------------------------------------------------------

    async def _commit(
        self, kind: str, pairs: tuple[tuple[bytes, bytes], ...], keys: tuple[bytes, ...]
    ) -> int:
        """Append the batch (:meth:`_append`), then keep house: a committed batch returns
        its sequence whatever housekeeping does."""
        async with self._lock:
            sequence = await self._append(kind, pairs, keys)
            await self._housekeeping(sequence)
            return sequence

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
                    view = await self._catch_up()
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

    async def _housekeeping(self, sequence: int) -> None:
        """Compact once ``compact_every`` batches follow the snapshot. Never raises: the
        batch is committed, so a failure (of any kind: a full disk is an ``OSError``) is
        logged at WARNING and compaction retried after a few more batches (doubling the
        wait, up to ``compact_every``)."""
        view = self._view
        if (
            not self.compact_every
            or view is None
            or sequence - view.manifest.snapshot < self.compact_every
            or sequence < self._compact_not_before
        ):
            return
        try:
            await self._compact(view)
            await self._sweep(DEFAULT_SNAPSHOT_GRACE_SECONDS)
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

    async def _catch_up(self) -> _View:
        """This object's view brought up to the newest visible batch: the log tail after
        what it knows (1 LIST + GETs of new batches), or a full load when it knows nothing
        or its tail was pruned under it.

        Raises:
            CorruptionError: if the manifest, snapshot and log keep changing under repeated full
                loads.
        """
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
        """Manifest → its snapshot → the log tail after it.

        Raises:
            _Stale: if the manifest's snapshot was replaced by a newer one since the manifest was
                read.
        """
        view = _View()
        view.manifest, view.manifest_version = await self._read_manifest()
        if view.manifest.snapshot:
            key = view.manifest.snapshot_key
            try:
                blob, _ = await self.backend.get(key)
            except NotFoundError as exc:  # replaced by a newer snapshot since we read the manifest
                raise _Stale from exc
            view.data = decode_snapshot(blob, key=key, sequence=view.manifest.snapshot)
            view.sequence = view.manifest.snapshot
        await self._read_tail(view)
        return view

    async def _read_tail(self, view: _View) -> None:
        """Apply the contiguous run of batches after ``view.sequence``.

        Raises:
            _Stale: if one of them was pruned (another writer compacted past this view).
        """
        while True:
            listing = await self.backend.list_after(
                LOG_PREFIX, log_key(view.sequence), limit=_LIST_PAGE
            )
            found = (sequence_of(info.key, LOG_PREFIX) for info in listing)
            tail = contiguous_tail(view.sequence, (s for s in found if s is not None))
            batches = await gather_bounded(
                (self._read_log(sequence) for sequence in tail), _PARALLEL
            )
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
        """Write the snapshot of ``view`` under a key of its own, then move the manifest to
        it and delete the snapshot it replaced; if another compaction's snapshot won the
        manifest instead, delete ours (the manifest can never reference it any more).

        A crash before the manifest moves leaves an unreferenced snapshot for a later sweep.
        A sweep retires a snapshot in the manifest before deleting it, and the manifest
        never moves to a retired one, so a swap of ours that is still in flight then fails
        its precondition and the retry finds our snapshot retired: we lost, like a
        compaction beaten by another. A compaction that cannot move the manifest within half
        the sweep grace gives up early (a sweep would likely retire its snapshot)."""
        sequence = view.sequence
        if sequence <= view.manifest.snapshot:
            return
        items = [(key, view.data[key]) for key in view.sorted_keys()]
        snapshot_id = uuid.uuid4().hex[:16]
        key = snapshot_key(sequence, snapshot_id)
        deadline = self._monotonic() + DEFAULT_SNAPSHOT_GRACE_SECONDS / 2
        await self.backend.put_if_absent(key, encode_snapshot(sequence, items))
        try:
            replaced = await self._advance_manifest(
                view, KVManifest(sequence, 1, 1, snapshot_id), deadline=deadline
            )
        except _Abandoned:
            logger.warning("KV compaction through batch %d took too long; abandoned", sequence)
            await self.backend.delete(key)
            return
        if view.manifest.snapshot_key != key:
            await self.backend.delete(key)  # lost to a snapshot at the same or a later batch
        elif replaced is not None and replaced.snapshot:
            await self.backend.delete(replaced.snapshot_key)

    async def _sweep(self, grace_seconds: float) -> list[str]:
        """Delete unreferenced snapshots (see :meth:`sweep_snapshots`); return their keys."""
        listing = [(info.key, info.mtime) for info in await self.backend.list(SNAPSHOT_PREFIX)]
        manifest, _ = await self._read_manifest()
        plan = plan_snapshot_sweep(listing, manifest)
        doomed = list(plan.now)
        if plan.if_old:
            store_now = await self._store_now()
            manifest, version = await self._read_manifest()
            fresh = plan_snapshot_sweep(plan.if_old, manifest)
            doomed += fresh.now
            old = fresh.old(store_now, grace_seconds)
            if old:
                doomed += await self._retire(old, manifest, version)
        await self.backend.delete_many(doomed)
        if doomed:
            logger.info("swept %d unreferenced KV snapshot(s)", len(doomed))
        return sorted(doomed)

    async def _retire(
        self, keys: Iterable[str], manifest: KVManifest, version: str | None
    ) -> list[str]:
        """Record ``keys`` (snapshots newer than the manifest's) as retired with a
        compare-and-swap of the manifest; return those the stored manifest now retires,
        which no manifest can ever reference, so they may be deleted. A compaction whose
        swap to one of them landed first keeps it (the retry sees it referenced)."""
        wanted = {key: parse_snapshot_key(key) for key in keys}
        retired = tuple(sorted(parsed for parsed in wanted.values() if parsed is not None))
        view = _View()
        view.manifest, view.manifest_version = manifest, version
        await self._advance_manifest(view, KVManifest(retired=retired))
        return [key for key, parsed in wanted.items() if parsed in view.manifest.retired]

    async def _store_now(self) -> float | None:
        """The store's current time: the mtime it gives a fresh write of :data:`CLOCK_KEY`
        (1 PUT + 1 HEAD); ``None`` if it reports no times."""
        await self.backend.put(CLOCK_KEY, uuid.uuid4().hex.encode())
        return (await self.backend.head(CLOCK_KEY)).mtime

    async def _advance_manifest(
        self, view: _View, wanted: KVManifest, *, deadline: float | None = None
    ) -> KVManifest | None:
        """Compare-and-swap the manifest to the field-wise max of itself and ``wanted``;
        return the manifest our write replaced (``None`` if nothing was written or there was
        none).

        Raises:
            _Abandoned: instead of writing once past ``deadline`` (monotonic), if one is given.
            ConflictError: after losing ``max_write_attempts`` consecutive races to update the
                manifest.
        """
        manifest, version = view.manifest, view.manifest_version
        replaced: KVManifest | None = None
        for _ in range(self.max_write_attempts):
            target = manifest.merged(wanted)
            if target == manifest and version is not None:
                break
            if deadline is not None and self._monotonic() > deadline:
                raise _Abandoned
            blob = encode_manifest(target, uuid.uuid4().hex)
            previous = None if version is None else manifest
            try:
                if version is None:
                    version = await self.backend.put_if_absent(MANIFEST_KEY, blob)
                else:
                    version = await self.backend.put_if_match(MANIFEST_KEY, blob, version)
            except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
                manifest, version = await self._read_manifest()
                continue
            replaced, manifest = previous, target
            break
        else:
            raise ConflictError(
                MANIFEST_KEY,
                f"lost {self.max_write_attempts} consecutive races to update the KV manifest",
                expected=manifest.merged(wanted),
                actual=manifest,
            )
        view.manifest, view.manifest_version = manifest, version
        return replaced


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
    sweep_snapshots = blocking(AsyncKVStore.sweep_snapshots)
    prune_batch_log = blocking(AsyncKVStore.prune_batch_log)
    close = blocking(AsyncKVStore.close)
