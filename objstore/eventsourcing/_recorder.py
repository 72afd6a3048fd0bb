"""The aggregate recorder: one object per (originator, version), created if absent.

Built for ``purpose="snapshots"``: the framework asks for the newest snapshot at or below a
version with ``select_events(id, desc=True, limit=1, lte=v)``, and that is answered with one
bounded LIST (keys sort newest first, :mod:`objstore.eventsourcing._layout`) and one GET,
however many snapshots the originator has. Saving a snapshot is one create-if-absent PUT,
so a second snapshot of the same version raises the framework's ``IntegrityError``.

Atomicity of a multi-event insert: the events are created in order and, if one of them
exists already, those this call created are deleted again before ``IntegrityError`` is
raised. A crash in the middle of a multi-event insert can leave the first events of the batch
behind; the framework only ever inserts one snapshot at a time, where this cannot happen.

:class:`AsyncEventObjects` holds the I/O (asyncio, on an :class:`AsyncBackend`);
:class:`ObjstoreAggregateRecorder` is the framework's blocking interface over it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import AggregateRecorder, IntegrityError, StoredEvent

from objstore._checks import MAX_U64
from objstore._concurrency import gather_bounded
from objstore._loop import run_sync
from objstore.backends import AsyncBackend, Backend
from objstore.errors import AlreadyExistsError, CorruptionError, NotFoundError
from objstore.eventsourcing._layout import (
    EventRecord,
    decode_event,
    encode_event,
    event_key,
    events_prefix,
    listing_start,
    version_of_key,
)

__all__ = ["AsyncEventObjects", "ObjstoreAggregateRecorder"]

logger = logging.getLogger(__name__)

_PARALLEL_READS = 16
_PAGE = 1000


class AsyncEventObjects:
    """Stored events of one recorder ``purpose`` on an :class:`AsyncBackend` (asyncio).

    Args:
        backend: the store.
        purpose: the framework's recorder purpose (``"snapshots"``, ``"events"``...); each
            purpose has its own key prefix.
        skip_corrupt: treat a damaged object as absent (logged) instead of raising
            :class:`~objstore.errors.CorruptionError`; right for snapshots, which are never
            the source of truth.
    """

    def __init__(self, backend: AsyncBackend, purpose: str, *, skip_corrupt: bool) -> None:
        events_prefix(purpose, "x")  # refuse a purpose that cannot be a key segment, now
        self.backend = backend
        self.purpose = purpose
        self.skip_corrupt = skip_corrupt

    async def insert(self, records: Sequence[EventRecord]) -> None:
        """Create one object per record, all or none (see the module docstring).

        Raises:
            IntegrityError: a version is recorded already, or twice in ``records``; nothing
                this call created is left behind.
        """
        keyed = [
            (event_key(self.purpose, r.originator_id, r.originator_version), r) for r in records
        ]
        if len({key for key, _ in keyed}) < len(keyed):
            raise IntegrityError(f"stored events are not unique: {list(records)!r}")
        blobs = [(key, encode_event(record)) for key, record in keyed]
        created: list[tuple[str, str]] = []
        try:
            for key, blob in blobs:
                created.append((key, await self.backend.put_if_absent(key, blob)))
        except AlreadyExistsError as exc:
            await self._undo(created)
            raise IntegrityError(f"stored event already recorded: {exc.args[0]!r}") from exc
        except BaseException:
            await self._undo(created)
            raise

    async def _undo(self, created: list[tuple[str, str]]) -> None:
        for key, version in reversed(created):
            try:
                await self.backend.delete(key, version)
            except Exception:  # the original error matters more; log what stays behind
                logger.warning("could not remove %s after a failed insert", key, exc_info=True)

    async def select(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[EventRecord]:
        """The stored events of ``originator_id`` with ``gt < version <= lte``, in version
        order (newest first with ``desc``), at most ``limit``.

        ``desc`` costs one LIST per ``limit`` versions (at most 1,000 per LIST) plus one GET
        per event returned; ascending lists the originator's versions once, then GETs. A
        damaged object raises :class:`~objstore.errors.CorruptionError` unless
        ``skip_corrupt``.
        """
        prefix = events_prefix(self.purpose, originator_id)
        if (limit is not None and limit < 1) or (lte is not None and lte < 0):
            return []
        if gt is not None and lte is not None and gt >= lte:
            return []
        if desc:
            return await self._newest_first(prefix, originator_id, gt, lte, limit)
        versions = [
            version
            for info in await self.backend.list(prefix)
            if (version := version_of_key(prefix, info.key)) is not None
            and (gt is None or version > gt)
            and (lte is None or version <= lte)
        ]
        versions.sort()
        records = await self._read_many(prefix, originator_id, versions)
        return records if limit is None else records[:limit]

    async def _newest_first(
        self,
        prefix: str,
        originator_id: UUID | str,
        gt: int | None,
        lte: int | None,
        limit: int | None,
    ) -> list[EventRecord]:
        start = listing_start(prefix, lte)
        page = min(limit or _PAGE, _PAGE)
        found: list[EventRecord] = []
        while True:
            listing = await self.backend.list_after(prefix, start, page)
            versions: list[int] = []
            done = len(listing) < page
            for info in listing:
                version = version_of_key(prefix, info.key)
                if version is None:
                    continue
                if (lte is not None and version > lte) or (gt is not None and version <= gt):
                    done = done or (gt is not None and version <= gt)
                    continue
                versions.append(version)
            wanted = versions if limit is None else versions[: limit - len(found)]
            found.extend(await self._read_many(prefix, originator_id, wanted))
            if done or not listing or (limit is not None and len(found) >= limit):
                return found
            start = listing[-1].key

    async def _read_many(
        self, prefix: str, originator_id: UUID | str, versions: list[int]
    ) -> list[EventRecord]:
        read = await gather_bounded(
            (self._read(prefix, originator_id, version) for version in versions),
            _PARALLEL_READS,
        )
        return [record for record in read if record is not None]

    async def _read(
        self, prefix: str, originator_id: UUID | str, version: int
    ) -> EventRecord | None:
        key = event_key(self.purpose, originator_id, version)
        try:
            blob, _ = await self.backend.get(key)
            return decode_event(blob, key=key, originator_id=originator_id, version=version)
        except NotFoundError:
            return None  # pruned since it was listed
        except CorruptionError:
            if not self.skip_corrupt:
                raise
            logger.warning("skipping damaged stored event %s", key, exc_info=True)
            return None

    async def prune(self, originator_id: UUID | str, keep: int) -> list[int]:
        """Delete all but the newest ``keep`` versions of ``originator_id``; return the
        versions deleted (newest first). One LIST plus one DELETE per version deleted.

        Raises:
            ValueError: if ``keep`` is below 1 (the newest version is always kept).
        """
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        prefix = events_prefix(self.purpose, originator_id)
        keys = [
            (version, info.key)
            for info in await self.backend.list(prefix)
            if (version := version_of_key(prefix, info.key)) is not None
        ]
        doomed = keys[keep:]  # keys sort newest first
        await self.backend.delete_many(key for _, key in doomed)
        return [version for version, _ in doomed]


def _to_record(stored: StoredEvent) -> EventRecord:
    if not isinstance(stored, StoredEvent):
        raise TypeError(f"expected a StoredEvent, not {type(stored).__name__}")
    return EventRecord(stored.originator_id, stored.originator_version, stored.topic, stored.state)


def _to_stored(record: EventRecord) -> StoredEvent:
    return StoredEvent(
        originator_id=record.originator_id,
        originator_version=record.originator_version,
        topic=record.topic,
        state=record.state,
    )


class ObjstoreAggregateRecorder(AggregateRecorder):
    """The framework's ``AggregateRecorder`` on an objstore backend (blocking).

    Made by the factory for ``aggregate_recorder(purpose)``; ``purpose="snapshots"`` (what an
    application with ``IS_SNAPSHOTTING_ENABLED`` asks for) skips damaged objects as absent.
    Request counts: a single-event insert (a snapshot save) is one PUT; the newest snapshot
    at or below a version is one LIST + one GET. Versions must be within ``[0, 2**64 - 1]``.

    Args:
        backend: the store (blocking or async backend).
        purpose: key prefix of this recorder (see :class:`AsyncEventObjects`).
    """

    def __init__(self, backend: Backend | AsyncBackend, purpose: str = "snapshots") -> None:
        async_backend = backend.async_backend if isinstance(backend, Backend) else backend
        self.purpose = purpose
        self.objects = AsyncEventObjects(
            async_backend, purpose, skip_corrupt=purpose == "snapshots"
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Record ``stored_events`` (each one create-if-absent PUT); returns ``None``: this
        recorder keeps no notification log.

        The framework's ``IntegrityError`` when a version is recorded already or appears
        twice (nothing of this call is left behind); ``TypeError`` for an event that is not a
        ``StoredEvent`` or has a bad field type; ``ValueError`` for a version outside
        ``[0, 2**64 - 1]`` or an unusable originator id.
        """
        records = [_to_record(stored) for stored in stored_events]
        if records:
            run_sync(self.objects.insert(records))
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        """The stored events of ``originator_id`` in ``(gt, lte]``, ascending or (``desc``)
        newest first, at most ``limit`` (see :meth:`AsyncEventObjects.select` for costs).
        A damaged object raises ``CorruptionError`` for a purpose other than ``"snapshots"``
        and is skipped as absent for snapshots.
        """
        lte = None if lte is not None and lte >= MAX_U64 else lte
        records = run_sync(
            self.objects.select(originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        )
        return [_to_stored(record) for record in records]

    def prune(self, originator_id: UUID | str, keep: int = 1) -> list[int]:
        """Delete all but the newest ``keep`` stored versions of ``originator_id`` and return
        the versions deleted (e.g. old snapshots nobody will load again); ``ValueError`` if
        ``keep`` is below 1."""
        return run_sync(self.objects.prune(originator_id, keep))
