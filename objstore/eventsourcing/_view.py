"""Exactly-once projection views: view state and tracking positions in one objstore commit.

:class:`ObjstoreTrackingRecorder` is the framework's ``TrackingRecorder`` and, at the same
time, the base class of materialised views kept in object storage. A view holds a small
key/value state (JSON values) next to its tracking positions (application name → last
processed notification id). Every :meth:`~ObjstoreTrackingRecorder.update` applies one
event's changes and advances one position *together* in memory; every ``commit_every``
events, or ``commit_interval`` seconds after the first uncommitted one, both are written
as **one** :class:`~objstore.CheckpointStore` checkpoint (the view state is its
``state.bin``, the positions its ``source_offsets``), whose manifest create is the atomic
commit point. A process that dies loses only the uncommitted tail, state and positions
alike, so the projection runner, which resumes after ``max_tracking_id``, replays exactly
what the committed state lacks: every event counts once.

Fencing: the first write claims an epoch (:meth:`objstore.CheckpointStore.claim_epoch`),
by default one above every epoch claimed or committed so far. A runner started later claims
a newer one, after which every commit of the older runner raises
:class:`~objstore.errors.FencedError` and that view object refuses further work.

Reading: an object that has not written (a query-side reader, or a runner before its first
event) answers ``max_tracking_id`` by re-reading the newest committed checkpoint, state
included, so the framework's ``wait`` sees another process's commits. A writer answers from
memory: its state and positions are what it serves, committed or not.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder

from objstore.checkpoint import CheckpointManifest, CheckpointStore, read_pointer
from objstore.codec import canonical_json, parse_json
from objstore.errors import ConflictError, CorruptionError, FencedError

__all__ = ["ObjstoreTrackingRecorder", "commit_due"]

logger = logging.getLogger(__name__)

Changes = Mapping[str, Any] | Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""What one event changes in a view: a mapping key → new JSON value, or a function from the
current (read-only) state to such a mapping."""

_PRUNE_EVERY = 32
"""Commits between two prunes of the view's older checkpoints."""


def commit_due(
    pending: int, first_pending_at: float | None, now: float, every: int, interval: float | None
) -> bool:
    """Whether a view with ``pending`` uncommitted events must commit now: ``every`` of them
    have piled up, or the first of them waited ``interval`` seconds (``None``: never)."""
    if pending <= 0:
        return False
    if pending >= every:
        return True
    return (
        interval is not None
        and first_pending_at is not None
        and (now - first_pending_at >= interval)
    )


def _positions_of(manifest: CheckpointManifest) -> dict[str, int]:
    positions = manifest.source_offsets
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in positions.values()):
        raise CorruptionError(
            f"checkpoint {manifest.checkpoint_id}", "tracking positions are not integers"
        )
    return dict(positions)


class ObjstoreTrackingRecorder(TrackingRecorder):
    """Tracking positions, and optionally a view's state, committed atomically to objstore.

    Subclass it for a view: read with :meth:`get` / :attr:`state`, write through
    :meth:`update` with the event's ``Tracking``. Used alone it is a durable, fenced
    tracking recorder (``insert_tracking``).

    Args:
        store: the view's checkpoint store (one per view; the factory opens
            ``{OBJSTORE_URL}/views/{name}``).
        epoch: the epoch to claim on the first write; ``None`` picks one above every epoch
            claimed or committed. Use explicit epochs only when each runner incarnation gets
            a fresh, larger one (e.g. a lease or deployment generation).
        commit_every: commit after this many uncommitted events (``1``: every event).
        commit_interval: commit once the oldest uncommitted event is this many seconds old,
            from a background thread if no event comes (``None``: only by count and
            :meth:`flush`).
        keep_checkpoints: committed checkpoints kept when older ones are pruned (every
            32 commits).
        clock: monotonic seconds, for ``commit_interval``.

    Raises ``ValueError`` for ``commit_every`` or ``keep_checkpoints`` below 1 or a
    non-positive ``commit_interval``.
    """

    def __init__(
        self,
        store: CheckpointStore,
        *,
        epoch: int | None = None,
        commit_every: int = 100,
        commit_interval: float | None = 1.0,
        keep_checkpoints: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if commit_every < 1:
            raise ValueError(f"commit_every must be at least 1, got {commit_every}")
        if commit_interval is not None and commit_interval <= 0:
            raise ValueError(f"commit_interval must be positive, got {commit_interval}")
        if keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints must be at least 1, got {keep_checkpoints}")
        self.store = store
        self.commit_every = commit_every
        self.commit_interval = commit_interval
        self.keep_checkpoints = keep_checkpoints
        self._wanted_epoch = epoch
        self._clock = clock
        self._lock = threading.RLock()
        self._state: dict[str, Any] = {}
        self._positions: dict[str, int] = {}
        self._checkpoint_id: int | None = None
        self._latest_epoch = 0
        self._next_id: int | None = None
        """The id of the next commit when it is not the loaded id + 1 (after a recovery)."""
        self._loaded = False
        self._epoch: int | None = None
        self._pending = 0
        self._first_pending_at: float | None = None
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    # -- reading -------------------------------------------------------------------------------

    @property
    def epoch(self) -> int | None:
        """The epoch this object claimed (``None`` until its first write)."""
        return self._epoch

    @property
    def committed_checkpoint_id(self) -> int | None:
        """The id of the checkpoint the state was loaded from or last committed as."""
        return self._checkpoint_id

    @property
    def state(self) -> Mapping[str, Any]:
        """A read-only copy of the view's state as this object serves it (a copy, so it
        can be iterated while the projection thread goes on writing)."""
        with self._lock:
            self._ensure_loaded()
            return MappingProxyType(dict(self._state))

    def get(self, key: str, default: Any = None) -> Any:
        """One value of the view's state (``default`` if absent)."""
        with self._lock:
            self._ensure_loaded()
            return self._state.get(key, default)

    def max_tracking_id(self, application_name: str) -> int | None:
        """The last notification id of ``application_name`` reflected in this view, or
        ``None``. A writer answers from memory; an object that has not written re-reads the
        newest committed checkpoint first (so ``wait`` sees other processes' commits)."""
        with self._lock:
            if self._epoch is None:
                self.refresh()
            return self._positions.get(application_name)

    def refresh(self) -> None:
        """Re-read the newest committed state and positions (readers only).

        Raises:
            RuntimeError: on an object that has written (its memory is ahead of the store).
        """
        with self._lock:
            if self._epoch is not None:
                raise RuntimeError("a writing view serves its own state; it never re-reads")
            self._load()

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self._load()

    def _load(self) -> None:
        latest = self.store.load_latest()
        self._latest_epoch = latest.epoch if latest is not None else 0
        if latest is not None and (latest.checkpoint_id != self._checkpoint_id or not self._loaded):
            try:
                self._adopt(latest, self.store.load_state_data(latest.checkpoint_id))
            except CorruptionError:
                # A damaged newest commit: fall back to the newest valid one (state and
                # positions still travel together, so the runner replays more, never less).
                logger.warning("view %s: newest checkpoint damaged", self.store.url, exc_info=True)
                self._recover()
        elif latest is None:
            self._state, self._positions, self._checkpoint_id = {}, {}, None
        self._loaded = True

    def _adopt(self, manifest: CheckpointManifest, data: bytes | None) -> None:
        key = f"checkpoint {manifest.checkpoint_id}"
        state = parse_json(data, key=key) if data else {}
        if not isinstance(state, dict):
            raise CorruptionError(key, "state is not a map")
        self._state, self._positions = state, _positions_of(manifest)
        self._checkpoint_id = manifest.checkpoint_id

    def _recover(self) -> None:
        report = self.store.recover_latest_validated()
        if report.manifest is None:
            self._state, self._positions, self._checkpoint_id = {}, {}, None
        else:
            self._adopt(report.manifest, self.store.load_state_data(report.manifest.checkpoint_id))
        # The next commit must take an id above the damaged ones.
        self._next_id = self.store.next_checkpoint_id()

    # -- writing -------------------------------------------------------------------------------

    def insert_tracking(self, tracking: Tracking) -> None:
        """Record that ``tracking``'s notification was processed (no state change); raises
        as :meth:`update` does."""
        self.update(tracking)

    def update(
        self, tracking: Tracking, changes: Changes | None = None, deletes: Iterable[str] = ()
    ) -> None:
        """Apply one event: set ``changes``, remove ``deletes`` and advance ``tracking``'s
        position, all or nothing; commit when due (see the class docstring).

        A commit, or the epoch claim of the first write, raises
        :class:`~objstore.errors.FencedError` when a newer runner claimed this view and
        :class:`~objstore.errors.CheckpointConflict` when another writer of the same epoch
        committed first; after any failed commit this object raises that error again for
        every write (open the view again to resume from what was committed).

        Raises:
            IntegrityError: the notification id is not above the application's position
                (already processed, or a gap filled late); nothing changes.
            TypeError: a changed key is not a str or a value is not JSON-serialisable;
                nothing changes.
        """
        with self._lock:
            self._check_usable()
            self._become_writer()
            current = self._positions.get(tracking.application_name)
            if current is not None and tracking.notification_id <= current:
                raise IntegrityError(
                    f"notification {tracking.notification_id} of "
                    f"{tracking.application_name!r} is not after tracked position {current}"
                )
            new = dict(
                (changes(MappingProxyType(self._state)) if callable(changes) else changes) or {}
            )
            if any(not isinstance(key, str) for key in new):
                raise TypeError("view state keys must be str")
            canonical_json(new)  # refuse what cannot be committed before changing anything
            removed = list(deletes)
            self._state.update(new)
            for key in removed:
                self._state.pop(key, None)
            self._positions[tracking.application_name] = tracking.notification_id
            if self._pending == 0:
                self._first_pending_at = self._clock()
            self._pending += 1
            if commit_due(
                self._pending,
                self._first_pending_at,
                self._clock(),
                self.commit_every,
                self.commit_interval,
            ):
                self._commit()

    def flush(self) -> None:
        """Commit what is pending now (nothing if nothing is); raises as a commit of
        :meth:`update` does."""
        with self._lock:
            self._check_usable()
            if self._pending:
                self._commit()

    def close(self) -> None:
        """Commit what is pending (if this object is still usable), stop the background
        committer and close the store."""
        self._stop.set()
        with self._lock:
            try:
                if self._failure is None and self._pending:
                    self._commit()
            finally:
                self.store.close()

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _become_writer(self) -> None:
        if self._epoch is not None:
            return
        self._ensure_loaded()
        loaded = self._checkpoint_id
        epoch = self._wanted_epoch
        if epoch is None:
            # Above every epoch committed and every epoch claimed (a runner that claimed one
            # may not have committed yet); two runners starting at the same instant may
            # still pick the same epoch: the second to commit then gets CheckpointConflict.
            fence = read_pointer(self.store).fence_epoch or 0
            epoch = max(self._latest_epoch, fence) + 1
            while True:
                try:
                    self.store.claim_epoch(epoch)
                    break
                except FencedError as exc:
                    epoch = max(epoch, exc.winner_epoch or epoch) + 1
        else:
            self.store.claim_epoch(epoch)
        self._load()
        if self._checkpoint_id != loaded:
            self._failure = ConflictError(
                "view",
                f"the view moved from checkpoint {loaded} to {self._checkpoint_id} while this "
                "object was starting; open it again",
                expected=loaded,
                actual=self._checkpoint_id,
            )
            raise self._failure
        self._epoch = epoch
        logger.info("view %s: writing as epoch %d", self.store.url, epoch)
        if self.commit_interval is not None:
            self._flusher = threading.Thread(
                target=_flush_when_due,
                args=(weakref.ref(self), self._stop, self.commit_interval),
                name="objstore-view-committer",
                daemon=True,
            )
            self._flusher.start()

    def _commit(self) -> None:
        """Write state and positions as the next checkpoint (the caller holds the lock)."""
        assert self._epoch is not None
        checkpoint_id = max((self._checkpoint_id or 0) + 1, self._next_id or 0)
        manifest = CheckpointManifest(
            checkpoint_id=checkpoint_id,
            epoch=self._epoch,
            source_offsets=dict(self._positions),
            metadata={"objstore.eventsourcing": "view"},
        )
        try:
            self.store.save_with_state(manifest, canonical_json(self._state))
        except BaseException as exc:
            # Fenced, beaten, or unknown outcome: memory may now disagree with the store,
            # so this object stops; a new one resumes from what was committed.
            self._failure = exc
            raise
        self._checkpoint_id = checkpoint_id
        self._next_id = None
        self._pending = 0
        self._first_pending_at = None
        if checkpoint_id % _PRUNE_EVERY == 0:
            try:
                self.store.prune(self.keep_checkpoints)
            except Exception:  # pruning is housekeeping: a failure costs only storage
                logger.warning("view %s: prune failed", self.store.url, exc_info=True)

    def _flush_if_due(self) -> None:
        with self._lock:
            if self._failure is not None or not commit_due(
                self._pending,
                self._first_pending_at,
                self._clock(),
                self.commit_every,
                self.commit_interval,
            ):
                return
            try:
                self._commit()
            except Exception:
                logger.exception("view %s: background commit failed", self.store.url)


def _flush_when_due(
    view: weakref.ref[ObjstoreTrackingRecorder], stop: threading.Event, interval: float
) -> None:
    """The background committer of one view: wakes a few times per interval."""
    while not stop.wait(min(interval / 4, 0.25)):
        target = view()
        if target is None:
            return
        target._flush_if_due()
        del target
