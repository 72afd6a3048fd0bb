"""Pure decisions over checkpoint listings: what exists, which checkpoint readers restore,
what to prune, what is an orphan.

Shared by the sync and async faces and by the CLI; no I/O, so tests call them directly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from objstore.backends import ObjectInfo
from objstore.checkpoint._layout import (
    MANIFEST_NAME,
    STATE_NAME,
    PointerRecord,
    is_part_key,
    parse_listing_key,
    pin_nonce,
)
from objstore.checkpoint._manifest import CheckpointManifest

__all__ = [
    "CheckpointEntry",
    "CleanupResult",
    "Orphan",
    "PruneResult",
    "LatestChoice",
    "age_matters",
    "fencing_candidates",
    "orphans_to_delete",
    "plan_prune",
    "pruned_objects",
    "scan",
    "spare_newer_epochs",
    "tombstone_candidates",
    "tombstones_to_collect",
]

TOMBSTONE_MAX_SIZE = 256
"""A ``manifest.json`` listed at most this size may be a tombstone (about 130 bytes) and is
read to find out; a real manifest, with its writer nonce and every field, is larger."""


@dataclass(slots=True)
class CheckpointEntry:
    """The objects found under one ``checkpoint_N/`` directory."""

    checkpoint_id: int
    manifest: ObjectInfo | None = None
    state: ObjectInfo | None = None
    others: list[ObjectInfo] = field(default_factory=list)
    aborted: bool = False
    """Its ``manifest.json`` is a tombstone (set by the store after reading it)."""
    aborted_epoch: int | None = None
    """The tombstone's ``orphan_epoch``."""

    @property
    def committed(self) -> bool:
        """Whether a manifest (the commit record) exists, valid or not: the id is taken."""
        return self.manifest is not None

    @property
    def checkpoint(self) -> bool:
        """Whether a manifest exists that is not known to be a tombstone: a checkpoint."""
        return self.manifest is not None and not self.aborted

    @property
    def keys(self) -> list[str]:
        """Every object of the directory, manifest first (the order prune deletes in)."""
        return [info.key for info in self.objects]

    @property
    def objects(self) -> list[ObjectInfo]:
        """What the listing said of every object of the directory, manifest first."""
        first = [info for info in (self.manifest, self.state) if info is not None]
        return first + self.others

    @property
    def newest_mtime(self) -> float | None:
        """The latest modification time of any object in the directory."""
        times = [
            info.mtime
            for info in (self.manifest, self.state, *self.others)
            if info is not None and info.mtime is not None
        ]
        return max(times) if times else None


def scan(listing: Iterable[ObjectInfo]) -> dict[int, CheckpointEntry]:
    """Group a listing of ``checkpoints/`` by checkpoint id (other keys are ignored)."""
    entries: dict[int, CheckpointEntry] = {}
    for info in listing:
        parsed = parse_listing_key(info.key)
        if parsed is None:
            continue
        checkpoint_id, name = parsed
        entry = entries.setdefault(checkpoint_id, CheckpointEntry(checkpoint_id))
        if name == MANIFEST_NAME:
            entry.manifest = info
        elif name == STATE_NAME:
            entry.state = info
        else:
            entry.others.append(info)
    return entries


def plan_prune(
    committed_ids: Iterable[int], keep_count: int, newest_valid: int | None
) -> list[int]:
    """Ids to delete so that ``keep_count`` newest committed ones remain, oldest first.

    The newest valid checkpoint is always kept, even when newer ones (all corrupt) fill the
    ``keep_count``. With no valid checkpoint at all, nothing is deleted: an operator must look.

    Raises:
        ValueError: ``keep_count`` is below 1.
    """
    if keep_count < 1:
        raise ValueError("keep_count must be at least 1: the newest valid checkpoint is kept")
    if newest_valid is None:
        return []
    ordered = sorted(set(committed_ids), reverse=True)
    keep = set(ordered[:keep_count]) | {newest_valid}
    return sorted(checkpoint_id for checkpoint_id in ordered if checkpoint_id not in keep)


def pruned_objects(entry: CheckpointEntry, manifest: CheckpointManifest | None) -> list[ObjectInfo]:
    """The objects of ``entry`` a prune deletes, given the manifest it read there
    (``None``: unreadable, so everything goes), manifest first.

    Only what that manifest owns: a ``state.bin`` beside a manifest saved without state, or
    a part object the manifest does not list, belongs to a writer that staged it under the
    id and may commit it once the manifest is gone (simulator seed 2884, for parts). So is
    a pin (``refs-{nonce}-{n}.json``) of another save call than the one that committed the
    manifest (its incremental part's ``writer_nonce``): that writer may still commit the id
    once the manifest is gone, and its pin is what keeps its shared objects from the GC
    until then (specs/gc-model2, scenario ``zombie_p``; the orphan janitor removes it after
    tombstoning the id). Other objects of the directory (nothing objstore writes) go with it.
    """
    if manifest is None:
        return entry.objects
    listed = {part.key for part in manifest.parts if part.key is not None}
    calls = {part.writer_nonce for part in manifest.parts if part.key is None}
    kept = []
    for info in entry.objects:
        if info is entry.state and not manifest.has_state:
            continue
        if is_part_key(info.key) and info.key not in listed:
            continue
        nonce = pin_nonce(info.key)
        if nonce is not None and nonce not in calls:
            continue
        kept.append(info)
    return kept


def spare_newer_epochs(doomed: list[int], epochs: list[int | None], epoch: int) -> list[int]:
    """The ``doomed`` ids (with their manifests' ``epochs``, ``None`` if unreadable) that a
    pruner keeping a checkpoint of ``epoch`` may delete: none of a newer epoch.

    A newer epoch's commit can sit below the newest ids while its writer is still moving the
    pointer (it outranks them all in (epoch, id) order); deleting it would break the promise
    that its save, once returned, stays valid.
    """
    return [
        checkpoint_id
        for checkpoint_id, found in zip(doomed, epochs, strict=True)
        if found is None or found <= epoch
    ]


def orphans_to_delete(
    entries: dict[int, CheckpointEntry],
    *,
    now: float | None,
    grace_seconds: float,
    fence_epoch: int | None,
    orphan_epochs: dict[int, int | None],
    kept: Collection[int] = (),
) -> list[int]:
    """Uncommitted directories that no live writer can still commit, oldest first.

    ``now`` is the *store's* time (``None``: unknown, so nothing is old); ``kept`` ids are
    never deleted (quarantined checkpoints keep their sidecar for an operator).
    A directory without a manifest is deleted if its newest object is at least the grace
    period old by the store's clock (its writer stalled or died; see
    :mod:`objstore.checkpoint._clock` for why a writer can then no longer commit it), or if
    it lies below the newest committed checkpoint and its writer is fenced: the pointer's
    fence epoch ``fence_epoch`` (read in the same cleanup) is newer than the orphan writer's
    epoch (read from the sidecar header into ``orphan_epochs``; ``None`` = unreadable, so no
    writer can commit it). A newer epoch's *commit* alone fences nobody: that writer may
    have crashed before it moved the pointer, and the older writer's save then still
    returns (DESIGN §3.7). An orphan of an unfenced epoch may belong to a save still in
    flight, so only the grace period frees it.
    """
    committed = [cid for cid, entry in entries.items() if entry.checkpoint]
    newest_committed = max(committed, default=0)
    doomed = []
    for checkpoint_id, entry in sorted(entries.items()):
        if entry.committed or checkpoint_id in kept:
            continue
        mtime = entry.newest_mtime
        stale = mtime is not None and now is not None and mtime <= now - grace_seconds
        orphan_epoch = orphan_epochs.get(checkpoint_id)
        fenced = checkpoint_id < newest_committed and (
            orphan_epoch is None or (fence_epoch is not None and orphan_epoch < fence_epoch)
        )
        if stale or fenced:
            doomed.append(checkpoint_id)
    return doomed


def age_matters(entries: dict[int, CheckpointEntry], settled: Collection[int]) -> bool:
    """Whether any uncommitted directory not already ``settled`` (doomed as fenced, or
    kept) would be deleted or kept by its age: only then is the store's clock read."""
    return any(not e.committed and cid not in settled for cid, e in entries.items())


def fencing_candidates(entries: dict[int, CheckpointEntry]) -> list[int]:
    """Uncommitted ids below the newest committed one: whose writers' epochs decide."""
    newest_committed = max((cid for cid, e in entries.items() if e.checkpoint), default=0)
    return sorted(cid for cid, e in entries.items() if not e.committed and cid < newest_committed)


def tombstone_candidates(entries: dict[int, CheckpointEntry]) -> list[int]:
    """Ids whose listed ``manifest.json`` is small enough to be a tombstone (to be read)."""
    return sorted(
        cid
        for cid, e in entries.items()
        if e.manifest is not None and e.manifest.size <= TOMBSTONE_MAX_SIZE
    )


def tombstones_to_collect(
    entries: dict[int, CheckpointEntry], fence_epoch: int | None
) -> list[int]:
    """Tombstones that may be deleted: below the newest checkpoint, whose orphan writer's
    epoch is older than the pointer's fence epoch ``fence_epoch``.

    That writer is fenced, the same rule :func:`orphans_to_delete` frees fenced orphans by:
    a manifest create it may still have in flight would be withdrawn at its pointer move,
    and readers prefer the newer epoch's checkpoints (DESIGN §3 invariant 3). A tombstone of
    an unfenced epoch stays, however old: a create delayed for any length of time still
    meets it (no timing assumption).
    """
    newest = max((cid for cid, e in entries.items() if e.checkpoint), default=0)
    if fence_epoch is None:
        return []
    return sorted(
        cid
        for cid, e in entries.items()
        if e.aborted and cid < newest and (e.aborted_epoch is None or e.aborted_epoch < fence_epoch)
    )


class LatestChoice:
    """Which checkpoint readers restore (DESIGN §3 invariant 3), decided from manifests met
    in descending id order.

    Checkpoints rank by ``(epoch, id)``: a newer epoch wins whatever ids the writers chose.
    Every committed manifest is a candidate (the manifest is the commit point), including one
    a fenced writer committed and has not withdrawn yet: it is restored only while nothing of
    a newer epoch exists.

    The walk may stop (:meth:`done_before`) once no lower id can outrank the best so far:
    when the best's epoch has reached the fence epoch, or, below the pointer, its named
    checkpoint's epoch. Every save that returned ranks at or below the pointer (saves move
    it forward in this order before returning), so what the stop passes over can only be a
    first save of a newer epoch that has not returned yet.
    """

    def __init__(self, pointer: PointerRecord | None) -> None:
        self.pointer = pointer
        self.best: tuple[int, int] | None = None
        """``(epoch, id)`` of the best candidate so far."""
        self._pointed_epoch = pointer.epoch if pointer is not None else None

    def done_before(self, checkpoint_id: int) -> bool:
        """Whether no checkpoint at ``checkpoint_id`` or below can outrank the best."""
        if self.best is None or self.pointer is None:
            return False
        best_epoch = self.best[0]
        fence = self.pointer.fence_epoch
        if fence is not None and best_epoch >= fence:
            return True
        named = self.pointer.checkpoint_id
        return (
            named is not None
            and self._pointed_epoch is not None
            and checkpoint_id <= named
            and best_epoch >= self._pointed_epoch
        )

    def excluded(self, checkpoint_id: int, epoch: int) -> str | None:
        """Why a checkpoint with a readable manifest is not the best so far (it is outranked);
        ``None`` if it is. Also learns the named checkpoint's epoch (format-1 pointers)."""
        if self.pointer is not None and checkpoint_id == self.pointer.checkpoint_id:
            self._pointed_epoch = epoch
        if self.best is None or (epoch, checkpoint_id) > self.best:
            return None
        best_epoch, best_id = self.best
        if epoch == best_epoch:
            return f"older than checkpoint {best_id} of the same epoch"
        return f"epoch {epoch} is older than checkpoint {best_id}'s epoch {best_epoch}"

    def take(self, checkpoint_id: int, epoch: int) -> tuple[int, str] | None:
        """Make ``checkpoint_id`` the best (after :meth:`excluded` said it qualifies).

        Returns ``(id, reason)`` of the checkpoint it outranks, if there was one.
        """
        previous = self.best
        self.best = (epoch, checkpoint_id)
        if previous is None:
            return None
        reason = f"epoch {previous[0]} is older than checkpoint {checkpoint_id}'s epoch {epoch}"
        return previous[1], reason


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What :meth:`~objstore.checkpoint.AsyncCheckpointStore.prune` decided and did.

    ``committed`` are the committed ids it listed (ascending), ``anchor_id`` the valid
    checkpoint it kept and measured against (``None`` when there was nothing to prune, or
    nothing valid: then nothing is deleted), ``planned`` the ids it chose and ``deleted``
    the ids it deleted (empty on a dry run). A CLI or a script renders this instead of
    planning again, so what it reports is what happened.
    """

    keep_count: int
    committed: tuple[int, ...]
    anchor_id: int | None
    planned: tuple[int, ...]
    deleted: tuple[int, ...]
    dry_run: bool = False

    @property
    def kept(self) -> tuple[int, ...]:
        """The committed ids the plan keeps."""
        planned = set(self.planned)
        return tuple(cid for cid in self.committed if cid not in planned)

    @property
    def refused(self) -> bool:
        """Whether there was something to prune but no valid checkpoint to keep, so nothing
        was deleted (an operator should look first)."""
        return len(self.committed) > self.keep_count and self.anchor_id is None


@dataclass(frozen=True, slots=True)
class Orphan:
    """An uncommitted checkpoint directory as a cleanup saw it: its ``size`` in bytes, its
    newest ``mtime`` (store clock) and whether the cleanup chose to delete it."""

    checkpoint_id: int
    size: int
    mtime: float | None
    eligible: bool


@dataclass(frozen=True, slots=True)
class CleanupResult:
    """What :meth:`~objstore.checkpoint.AsyncCheckpointStore.cleanup_orphans` decided and did.

    ``orphans`` are every uncommitted directory it listed, ``planned`` the ids it chose,
    ``deleted`` those it claimed with a tombstone and deleted (empty on a dry run; an id a
    saver committed meanwhile is planned but not deleted), ``store_now`` the store's time
    the ages were judged by (``None`` when no orphan's fate depended on its age).
    """

    grace_seconds: float
    orphans: tuple[Orphan, ...]
    planned: tuple[int, ...]
    deleted: tuple[int, ...]
    store_now: float | None
    dry_run: bool = False

    def age_of(self, orphan: Orphan) -> float | None:
        """``orphan``'s age by the store's clock, if both times are known."""
        if self.store_now is None or orphan.mtime is None:
            return None
        return max(0.0, self.store_now - orphan.mtime)
