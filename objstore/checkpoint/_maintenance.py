"""Maintenance of a checkpoint store: its pointer, streamed validation, and copies.

These are an operator's operations, not a writer's hot path (the ``objstore`` command is
built on them):

- :func:`read_pointer_async` reads ``latest.txt`` as it is: missing, garbage, or naming an id.
- :func:`plan_pointer_repair` decides, purely, how ``latest.txt`` must move to name the
  newest valid checkpoint; :func:`repair_pointer_async` applies the plan with one
  compare-and-swap.
- :func:`validate_checkpoint_streaming_async` runs the checks of
  :meth:`~objstore.checkpoint.AsyncCheckpointStore.validate_checkpoint` with ranged reads
  and an incremental hash, so memory stays bounded whatever the size of the sidecar, and
  reports progress as it reads.
- :func:`copy_checkpoint_async` copies one checkpoint's bytes to another store, where it
  commits exactly as a save would, and moves the destination's pointer forward last.
- :func:`quarantine_invalid_async` takes checkpoints a recovery walk found invalid out of
  what readers see (their manifests move to ``quarantine/``, see
  :mod:`objstore.checkpoint._quarantine`); :func:`list_quarantined_async` and
  :func:`restore_quarantined_async` show and undo that.
- :func:`remove_checkpoints_async` deletes chosen checkpoints by id (a corrupt one that keeps
  failing checks), never the newest valid one unless forced, and moves ``latest.txt`` off a
  removed checkpoint with :func:`repair_pointer_async`.

Every ``*_async`` function has a blocking twin of the same name without the suffix, taking
:class:`~objstore.checkpoint.CheckpointStore` objects and running the same coroutine on
objstore's private loop.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Literal, TypeAlias

from objstore._loop import run_sync
from objstore._open import StoreLocation
from objstore.backends import AsyncBackend, Backend
from objstore.checkpoint._conflicts import id_taken
from objstore.checkpoint._incremental import copy_incremental, is_incremental
from objstore.checkpoint._layout import (
    CHECKPOINTS,
    LATEST,
    manifest_key,
    state_key,
)
from objstore.checkpoint._manifest import (
    ABORTED,
    PartEntry,
    StoredManifest,
    check_checkpoint_id,
)
from objstore.checkpoint._parallel import check_part, open_part
from objstore.checkpoint._plan import CheckpointEntry, scan
from objstore.checkpoint._pointer import (
    POINTER_ATTEMPTS,
    Pointer,
    advance_pointer,
    moved_text,
    swap_pointer,
)
from objstore.checkpoint._pointer import read_pointer as read_pointer_from
from objstore.checkpoint._quarantine import Quarantined, move_to_quarantine, restore
from objstore.checkpoint._quarantine import list_quarantined as _list_quarantined
from objstore.checkpoint._reads import read_manifest
from objstore.checkpoint._store import (
    NEVER_COMMITTED,
    AsyncCheckpointStore,
    CheckpointStore,
    RecoveryReport,
    ValidationResult,
)
from objstore.checkpoint._streamed_sidecar import (
    Progress,
    check_sidecar,
    no_progress,
    open_sidecar,
)
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    NotFoundError,
    PreconditionFailedError,
)

__all__ = [
    "CopyResult",
    "Pointer",
    "PointerRepair",
    "Quarantined",
    "Removal",
    "RemovalRefused",
    "copy_checkpoint",
    "copy_checkpoint_async",
    "list_quarantined",
    "list_quarantined_async",
    "plan_pointer_repair",
    "quarantine_invalid",
    "quarantine_invalid_async",
    "plan_removal",
    "read_pointer",
    "read_pointer_async",
    "remove_checkpoints",
    "remove_checkpoints_async",
    "repair_pointer",
    "repair_pointer_async",
    "restore_quarantined",
    "restore_quarantined_async",
    "validate_checkpoint_streaming",
    "validate_checkpoint_streaming_async",
]

RepairAction = Literal["none", "create", "replace", "forward", "backward", "refuse"]


# -- the pointer -------------------------------------------------------------------------------


async def read_pointer_async(store: AsyncCheckpointStore) -> Pointer:
    """Read ``latest.txt`` of ``store`` as it is (one GET).

    Unlike the store's loaders, this does not look past the pointer: it says what the
    pointer names, so that it can be reported or repaired.
    """
    return await read_pointer_from(store.backend)


@dataclass(frozen=True, slots=True)
class PointerRepair:
    """How ``latest.txt`` must move to name the newest valid checkpoint.

    ``action`` is ``none`` (nothing to do, or nothing valid to point at), ``create`` (the
    pointer is missing), ``replace`` (it is garbage), ``forward`` (it lags), ``backward``
    (it names a checkpoint found invalid or missing) or ``refuse`` (it names a newer
    checkpoint that was not found invalid: never moved backward). ``pointer`` is the pointer
    the plan was made from; its version is what the compare-and-swap expects, so a plan made
    before a writer moved the pointer can never overwrite that writer's commit.
    """

    action: RepairAction
    pointer: Pointer
    target_id: int | None
    reason: str

    @property
    def needed(self) -> bool:
        """Whether the pointer does not name the newest valid checkpoint (even if refused)."""
        return self.action != "none"

    @property
    def from_id(self) -> int | None:
        """The id the pointer names now (``None`` if missing or garbage)."""
        return self.pointer.checkpoint_id


def plan_pointer_repair(pointer: Pointer, report: RecoveryReport) -> PointerRepair:
    """Decide how ``pointer`` must move to name ``report.chosen_id`` (pure; no I/O).

    Writers only ever move the pointer forward. A repair is an operator's act and may also
    move it *backward*, but only off a checkpoint the recovery walk found invalid, or one
    that does not exist: that is its whole point. A pointer naming a newer checkpoint the
    walk did not examine (committed during the walk) is refused, never moved backward. A
    missing pointer is created, a garbage one replaced, a lagging one moved forward. With
    nothing valid, the pointer is left alone.

    ``pointer`` must have been read *before* the walk that produced ``report``.
    """
    chosen = report.chosen_id
    named = pointer.checkpoint_id
    skipped = dict(report.skipped)

    def plan(action: RepairAction, reason: str) -> PointerRepair:
        return PointerRepair(action, pointer, chosen, reason)

    if chosen is None:
        return plan("none", "no valid checkpoint to point at; latest.txt is left alone")
    if named == chosen:
        return plan("none", "latest.txt already names the newest valid checkpoint")
    if not pointer.exists:
        return plan("create", "latest.txt is missing")
    if named is None:
        return plan("replace", "latest.txt does not name a checkpoint")
    if named < chosen:
        return plan("forward", f"latest.txt lags behind at checkpoint {named}")
    if named in skipped:
        return plan(
            "backward", f"latest.txt names checkpoint {named}, which is invalid: {skipped[named]}"
        )
    if named not in report.examined:
        return plan("backward", f"latest.txt names checkpoint {named}, which does not exist")
    return plan(
        "refuse",
        f"latest.txt names checkpoint {named}, newer than the newest valid checkpoint "
        f"{chosen}, and the walk did not find it invalid; it is not moved backward",
    )


async def repair_pointer_async(
    store: AsyncCheckpointStore, plan: PointerRepair | None = None
) -> PointerRepair:
    """Apply ``plan`` to ``latest.txt`` with one compare-and-swap, and return it.

    Without a plan, reads the pointer, walks back with
    :meth:`~AsyncCheckpointStore.recover_latest_validated` and plans with
    :func:`plan_pointer_repair` first. Nothing is written when the action is ``none``.
    Never deletes anything.

    Raises:
        PreconditionFailedError: having written nothing, when the plan is ``refuse``, or when the
            pointer moved since the plan's pointer was read (a writer is active: re-plan and retry).
    """
    if plan is None:
        pointer = await read_pointer_async(store)  # before the walk: see plan_pointer_repair
        plan = plan_pointer_repair(pointer, await store.recover_latest_validated())
    if plan.action == "none":
        return plan
    if plan.action == "refuse" or plan.target_id is None:
        raise PreconditionFailedError(LATEST, plan.reason)
    _, target = await _read_manifest(store.backend, plan.target_id)
    text = moved_text(plan.target_id, target.manifest.epoch, plan.pointer.fence_epoch)
    if await swap_pointer(store.backend, plan.pointer.version, text) is None:
        raise PreconditionFailedError(
            LATEST,
            "latest.txt changed while repairing (is a writer running?); nothing was written",
            expected_version=plan.pointer.version,
        )
    return plan


# -- quarantine --------------------------------------------------------------------------------


async def quarantine_invalid_async(
    store: AsyncCheckpointStore, report: RecoveryReport | None = None
) -> list[Quarantined]:
    """Quarantine every committed checkpoint newer than the newest valid one that a
    recovery walk found invalid, so that no reader (``load_latest``, ``objstore show``, a
    restarting job) returns it; return what was quarantined, ascending.

    ``report`` is the walk to act on (default: a new
    :meth:`~AsyncCheckpointStore.recover_latest_validated`). Each checkpoint is validated
    again just before it moves, and one that turns out valid, or is gone, is left alone.
    With nothing valid, nothing is quarantined: an operator must look first (as ``prune``
    refuses). Older invalid checkpoints are not touched (readers never reach them). Raises
    :class:`PreconditionFailedError` if a manifest changed while it was being moved (it
    then stays where it is) and what the backend raises; a re-run completes a partial one.
    """
    if report is None:
        report = await store.recover_latest_validated()
    if report.chosen_id is None:
        return []
    moved = []
    for checkpoint_id, reason in sorted(report.skipped):
        if checkpoint_id > report.chosen_id and reason not in (NEVER_COMMITTED, ABORTED):
            record = await _quarantine_one(store, checkpoint_id)
            if record is not None:
                moved.append(record)
    return moved


async def _quarantine_one(store: AsyncCheckpointStore, checkpoint_id: int) -> Quarantined | None:
    """Move one checkpoint's manifest to quarantine if, read now, it is still invalid."""
    key = manifest_key(checkpoint_id)
    try:
        data, version = await store.backend.get(key)
    except NotFoundError:
        return None
    result = await store.validate_checkpoint(checkpoint_id)
    if result.valid or result.issues in (("manifest missing",), (ABORTED,)):
        return None
    return await move_to_quarantine(
        store.backend, checkpoint_id, data, version, "; ".join(result.issues)
    )


async def list_quarantined_async(store: AsyncCheckpointStore) -> list[Quarantined]:
    """Every quarantined checkpoint of ``store`` with its reason, ascending (one listing and
    one GET per checkpoint)."""
    return await _list_quarantined(store.backend)


async def restore_quarantined_async(store: AsyncCheckpointStore, checkpoint_id: int) -> None:
    """Put a quarantined checkpoint's manifest back, byte for byte, so readers see it again
    (it is as valid or invalid as before; ``latest.txt`` is not moved).

    Raises ``NotFoundError`` if it is not quarantined and
    :class:`PreconditionFailedError` if that id was committed again since.
    """
    check_checkpoint_id(checkpoint_id)
    await restore(store.backend, checkpoint_id)


# -- streamed validation ----------------------------------------------------------------------


def _range_size(store: AsyncCheckpointStore, requested: int | None) -> int:
    """``requested`` (``None``: the store's ``range_size``); ``ValueError`` unless positive.

    Raises:
        ValueError: if the size is below 1 byte.
    """
    if requested is None:
        return store.range_size
    if requested < 1:
        raise ValueError(f"range_size must be at least 1 byte, got {requested}")
    return requested


async def _read_manifest(backend: AsyncBackend, checkpoint_id: int) -> tuple[bytes, StoredManifest]:
    """Bytes and decoded manifest of ``checkpoint_id``; ``NotFoundError``/``CorruptionError``."""
    data, _, stored = await read_manifest(backend, checkpoint_id)
    return data, stored


async def validate_checkpoint_streaming_async(
    store: AsyncCheckpointStore,
    checkpoint_id: int,
    *,
    progress: Progress | None = None,
    range_size: int | None = None,
) -> ValidationResult:
    """Fully validate one checkpoint like :meth:`AsyncCheckpointStore.validate_checkpoint`
    (same checks, same issues, same warnings), reading its sidecar in ranged reads.

    The sidecar is hashed as it arrives, ``range_size`` bytes at a time (default: the
    store's ``range_size``; two reads in flight), and never held whole, so a multi-GB
    sidecar costs bounded memory.
    ``progress`` is called with the byte count of each read. Requests: the manifest GET,
    a HEAD of the sidecar and one GET per range. Transient errors propagate (after
    retries) rather than being mistaken for corruption.
    """
    return await store.validate_checkpoint(
        checkpoint_id, progress=progress or no_progress, range_size=_range_size(store, range_size)
    )


# -- copies ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CopyResult:
    """What :func:`copy_checkpoint_async` did.

    ``outcome`` is ``copied``, or ``present`` when the destination already held this very
    commit (an earlier or interrupted copy). ``pointer_before`` is the destination's pointer
    as found before moving it, ``pointer_moved`` whether it now names this checkpoint.
    """

    checkpoint_id: int
    outcome: Literal["copied", "present"]
    pointer_before: Pointer
    pointer_moved: bool


def _same_commit(a: StoredManifest, b: StoredManifest) -> bool:
    """Whether two manifests record the same commit (revisions may differ)."""
    return a.writer_nonce == b.writer_nonce and a.state_nonce == b.state_nonce


CopyEndpoint: TypeAlias = AsyncCheckpointStore | CheckpointStore | StoreLocation
"""Either side of a copy: a checkpoint store (either face), a store URL/path, or a backend."""


@contextlib.asynccontextmanager
async def _checkpoint_store(
    endpoint: CopyEndpoint, role: str
) -> AsyncIterator[AsyncCheckpointStore]:
    """``endpoint`` as an async checkpoint store; one opened here from a URL is closed after.

    Raises:
        TypeError: if ``endpoint`` is not a checkpoint store, a store URL or a backend.
    """
    if isinstance(endpoint, AsyncCheckpointStore):
        yield endpoint
    elif isinstance(endpoint, CheckpointStore):
        yield endpoint.async_store
    elif isinstance(endpoint, Backend | AsyncBackend):
        yield AsyncCheckpointStore(endpoint)  # the caller's backend: the caller closes it
    elif isinstance(endpoint, str | os.PathLike):
        store = AsyncCheckpointStore(endpoint)
        try:
            yield store
        finally:
            await store.close()
    else:
        raise TypeError(
            f"copy {role} must be a checkpoint store, a store URL or a backend, "
            f"not {type(endpoint).__name__}"
        )


async def copy_checkpoint_async(
    src: CopyEndpoint,
    dst: CopyEndpoint,
    checkpoint_id: int,
    *,
    progress: Progress | None = None,
    range_size: int | None = None,
) -> CopyResult:
    """Copy one checkpoint from ``src`` to ``dst`` byte for byte, committing it there.

    ``src`` and ``dst`` are checkpoint stores (either face), store URLs/paths (opened with
    default options and closed afterwards; pass a store for other options) or opened
    backends; anything else raises ``TypeError``.

    ``state.bin`` (or every part's object, for a parallel checkpoint) then ``manifest.json``,
    each create-if-absent, so the copy commits exactly
    as a save does and its checksums carry over; the sidecar is checked against its manifest
    while it streams (ranged reads of ``range_size``), and a source that is not whole makes
    the copy stop before anything is committed on ``dst``. The copy is then validated on
    ``dst``, and last ``dst``'s ``latest.txt`` is moved forward to it by compare-and-swap,
    never backward. Copying again resumes: objects already on ``dst`` are kept if they are
    this very commit. ``progress`` is called with byte counts as the sidecar is read from
    ``src`` and again as it is validated on ``dst`` (twice its size in all).

    Raises ``NotFoundError`` if ``src`` has no such checkpoint, :class:`CorruptionError` if
    it is not valid on ``src`` (nothing committed on ``dst``) or does not validate on ``dst``
    after the copy, and :class:`~objstore.errors.CheckpointConflict` if ``dst`` holds a
    different commit of that id (or an unreadable one); nothing on ``dst`` is overwritten.
    """
    check_checkpoint_id(checkpoint_id)
    async with (
        _checkpoint_store(src, "source") as source,
        _checkpoint_store(dst, "destination") as destination,
    ):
        return await _copy_checkpoint(
            source, destination, checkpoint_id, progress=progress, range_size=range_size
        )


async def _copy_checkpoint(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    checkpoint_id: int,
    *,
    progress: Progress | None,
    range_size: int | None,
) -> CopyResult:
    advance = progress or no_progress
    ranges = _range_size(src, range_size)
    data, stored = await _read_manifest(src.backend, checkpoint_id)
    existing = await _destination_manifest(dst, stored)
    outcome: Literal["copied", "present"] = "present" if existing is not None else "copied"
    if existing is None and is_incremental(stored.manifest):
        try:
            await copy_incremental(src, dst, stored)
        except AlreadyExistsError as exc:
            if await _destination_manifest(dst, stored) is None:
                raise _conflict(dst, stored, None) from exc
            outcome = "present"
    elif existing is None:
        version = None
        if stored.manifest.state_checksum is not None:
            version = await _copy_sidecar(src, dst, stored, range_size=ranges, progress=advance)
        created = await _copy_parts(src, dst, stored, range_size=ranges, progress=advance)
        try:
            await dst.backend.put_if_absent(manifest_key(checkpoint_id), data)
        except AlreadyExistsError as exc:
            # Another copy of this very commit may have won the race: then it is present.
            try:
                raced = await _destination_manifest(dst, stored)
            except CheckpointConflict:
                if version is not None:  # our sidecar lost to a manifest-only commit
                    with contextlib.suppress(PreconditionFailedError):
                        await dst.backend.delete(state_key(checkpoint_id), version)
                for key, part_version in created:  # and so did our parts
                    with contextlib.suppress(PreconditionFailedError):
                        await dst.backend.delete(key, part_version)
                raise
            if raced is None:
                raise _conflict(dst, stored, None) from exc
            outcome = "present"
    result = await validate_checkpoint_streaming_async(
        dst, checkpoint_id, progress=advance, range_size=ranges
    )
    if not result.valid:
        raise CorruptionError(
            manifest_key(checkpoint_id),
            f"checkpoint {checkpoint_id} does not validate on {dst.url} after the copy: "
            + "; ".join(result.issues),
        )
    before, moved = await advance_pointer(dst.backend, checkpoint_id, stored.manifest.epoch)
    return CopyResult(checkpoint_id, outcome, before, moved)


def _conflict(
    dst: AsyncCheckpointStore, stored: StoredManifest, theirs: StoredManifest | None
) -> CheckpointConflict:
    checkpoint_id = stored.manifest.checkpoint_id
    return id_taken(
        checkpoint_id,
        f"{dst.url} already has a different checkpoint {checkpoint_id} (another writer's "
        "commit); not copying over it",
        epoch=stored.manifest.epoch,
        winner_epoch=None if theirs is None else theirs.manifest.epoch,
    )


async def _destination_manifest(
    dst: AsyncCheckpointStore, stored: StoredManifest
) -> StoredManifest | None:
    """``dst``'s manifest of the same id if it is this commit, ``None`` if there is none.

    Raises:
        CheckpointConflict: (built by ``_conflict``) if ``dst`` holds another commit of the
            id, or a manifest it cannot read.
    """  # noqa: DOC501, DOC502 - raised through the _conflict factory, which ruff names instead
    try:
        _, theirs = await _read_manifest(dst.backend, stored.manifest.checkpoint_id)
    except NotFoundError:
        return None
    except CorruptionError as exc:
        raise _conflict(dst, stored, None) from exc
    if not _same_commit(theirs, stored):
        raise _conflict(dst, stored, theirs)
    return theirs


async def _copy_sidecar(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    stored: StoredManifest,
    *,
    range_size: int,
    progress: Progress,
) -> str | None:
    """Create ``dst``'s sidecar from ``src``'s, checked on the way; its version, or
    ``None`` if ``dst`` already held this commit's sidecar (an interrupted copy)."""
    key = state_key(stored.manifest.checkpoint_id)
    if await dst.backend.exists(key):
        await _adopt_sidecar(dst, stored, range_size=range_size, progress=progress)
        return None
    size, pieces = await open_sidecar(src.backend, stored, range_size=range_size, progress=progress)
    try:
        async with contextlib.aclosing(pieces):
            if size <= range_size:  # one piece: a single, retried PUT
                return await dst.backend.put_if_absent(key, b"".join([p async for p in pieces]))
            return await dst.backend.put_if_absent_stream(key, pieces)
    except AlreadyExistsError:
        await _adopt_sidecar(dst, stored, range_size=range_size, progress=no_progress)
        return None


async def _copy_parts(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    stored: StoredManifest,
    *,
    range_size: int,
    progress: Progress,
) -> list[tuple[str, str]]:
    """Create ``dst``'s part objects from ``src``'s (a parts checkpoint, manifest format 2),
    each checked as it streams, before the manifest; ``(key, version)`` of those created
    here. A part already on ``dst`` (an interrupted copy) is kept only if it is exactly
    this commit's.

    Raises:
        CorruptionError: a part on ``src`` is missing or not the recorded one.
        CheckpointConflict: (built by ``_conflict``) a part on ``dst`` is another writer's.
    """  # noqa: DOC502 - CorruptionError raised by open_part and the checked pieces
    manifest = stored.manifest
    created: list[tuple[str, str]] = []
    for part in manifest.parts:
        if part.key is None:
            continue
        if await dst.backend.exists(part.key):
            await _adopt_part(dst, stored, part, range_size=range_size)
            continue
        size, pieces = await open_part(
            src.backend, manifest, part, range_size=range_size, progress=progress
        )
        try:
            async with contextlib.aclosing(pieces):
                if size <= range_size:
                    data = b"".join([piece async for piece in pieces])
                    version = await dst.backend.put_if_absent(part.key, data)
                else:
                    version = await dst.backend.put_if_absent_stream(part.key, pieces)
        except AlreadyExistsError:
            await _adopt_part(dst, stored, part, range_size=range_size)
            continue
        created.append((part.key, version))
    return created


async def _adopt_part(
    dst: AsyncCheckpointStore, stored: StoredManifest, part: PartEntry, *, range_size: int
) -> None:
    """Accept a part object already on ``dst`` only if it is exactly this commit's.

    Raises:
        CheckpointConflict: (built by ``_conflict``) if it is not.
    """  # noqa: DOC501, DOC502 - raised through the _conflict factory, which ruff names instead
    issue = await check_part(
        dst.backend,
        stored.manifest,
        part,
        streamed=True,
        range_size=range_size,
        progress=no_progress,
    )
    if issue is not None:
        raise _conflict(dst, stored, None)


async def _adopt_sidecar(
    dst: AsyncCheckpointStore, stored: StoredManifest, *, range_size: int, progress: Progress
) -> None:
    """Accept a sidecar already on ``dst`` only if it is exactly this commit's (left by an
    interrupted copy); anything else is another writer's.

    Raises:
        CheckpointConflict: (built by ``_conflict``) if ``dst``'s sidecar is not exactly this
            commit's.
    """  # noqa: DOC501, DOC502 - raised through the _conflict factory, which ruff names instead
    try:
        await check_sidecar(dst.backend, stored, range_size=range_size, progress=progress)
    except CorruptionError as exc:
        raise _conflict(dst, stored, None) from exc


# -- removal -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Removal:
    """What :func:`remove_checkpoints_async` planned and, unless a dry run, did.

    ``requested`` are the ids asked for (sorted, once each); ``planned`` those with objects in
    the store, in the order they are removed; ``absent`` those with nothing stored; ``removed``
    those whose objects were deleted (empty on a dry run). ``newest_valid_id`` is the newest
    valid checkpoint before the removal, ``refused`` why the removal may not go ahead (``None``
    when it may; only a dry run returns a refusal, a real run raises it). ``pointer_before`` is
    ``latest.txt`` as found; ``pointer_repair`` how it was moved off a removed checkpoint
    (``None`` when it did not name one, or on a dry run).
    """

    requested: tuple[int, ...]
    planned: tuple[int, ...]
    absent: tuple[int, ...]
    removed: tuple[int, ...]
    newest_valid_id: int | None
    refused: str | None
    pointer_before: Pointer
    pointer_repair: PointerRepair | None
    dry_run: bool


class RemovalRefused(ValueError):
    """:func:`remove_checkpoints_async` will not remove these checkpoints without ``force``;
    nothing was deleted. ``removal`` is the refused plan (its ``refused`` says why)."""

    __module__ = "objstore.checkpoint"  # its public home (tracebacks, pickles, docs)

    def __init__(self, removal: Removal) -> None:
        super().__init__(f"not removing checkpoints: {removal.refused}")
        self.removal = removal

    def __reduce__(self) -> tuple[type[RemovalRefused], tuple[Removal]]:
        return type(self), (self.removal,)


def plan_removal(
    requested: Iterable[int],
    entries: dict[int, CheckpointEntry],
    newest_valid: int | None,
    *,
    force: bool,
) -> tuple[tuple[int, ...], tuple[int, ...], str | None]:
    """Decide a removal (pure): the ids to remove, the ids with nothing stored, and why the
    removal is refused (``None`` if it is not).

    Without ``force`` it is refused when it would remove the newest valid checkpoint (a
    restart would fall back to an older one, or start fresh) or a checkpoint that is not
    committed (a live writer may be about to commit it; ``gc`` removes orphans safely).
    Raises ``ValueError``/``TypeError`` for an id outside [1, 2**64).
    """
    ids = sorted({check_checkpoint_id(cid) for cid in requested})
    planned = tuple(cid for cid in ids if cid in entries)
    absent = tuple(cid for cid in ids if cid not in entries)
    reasons = []
    if not force and newest_valid is not None and newest_valid in planned:
        reasons.append(
            f"it would remove the newest valid checkpoint {newest_valid}: a restart would "
            "then fall back to an older one or start fresh"
        )
    uncommitted = [cid for cid in planned if not entries[cid].committed]
    if not force and uncommitted:
        reasons.append(
            f"checkpoint(s) {', '.join(map(str, uncommitted))} not committed: a live writer "
            "may still commit them (gc removes orphans once no writer can)"
        )
    return planned, absent, "; ".join(reasons) or None


async def remove_checkpoints_async(
    store: AsyncCheckpointStore,
    checkpoint_ids: Iterable[int],
    *,
    force: bool = False,
    dry_run: bool = False,
) -> Removal:
    """Delete the checkpoints ``checkpoint_ids`` (every object of each), then move
    ``latest.txt`` off them.

    Refused without ``force`` when the removal takes the newest valid checkpoint or an
    uncommitted one (see :func:`plan_removal`); a dry run then returns the refusal in
    :attr:`Removal.refused`. Ids with nothing stored are reported as ``absent``, not an
    error, so a removal can be re-run.
    Each checkpoint loses its manifest before its sidecar, so a crash leaves at worst an
    orphan for ``gc``. If ``latest.txt`` names a removed checkpoint afterwards, it is
    repaired with :func:`repair_pointer_async` (backward to the newest valid one left, by
    compare-and-swap; left alone when nothing valid is left, which readers handle). Requests:
    a listing, the recovery walk, one DELETE per object, and the pointer repair if needed.

    Raises:
        RemovalRefused: (a ``ValueError``) when a real run is refused, having deleted nothing.
    """
    requested = tuple(sorted({check_checkpoint_id(cid) for cid in checkpoint_ids}))
    entries = scan(await store.backend.list(CHECKPOINTS))
    pointer = await read_pointer_async(store)
    newest_valid = await store.newest_valid_id()
    planned, absent, refused = plan_removal(requested, entries, newest_valid, force=force)
    plan = Removal(requested, planned, absent, (), newest_valid, refused, pointer, None, dry_run)
    if dry_run or not planned:
        return plan
    if refused is not None:
        raise RemovalRefused(plan)
    for checkpoint_id in planned:
        for key in entries[checkpoint_id].keys:  # manifest first
            await store.backend.delete(key)
    repair = await _move_pointer_off(store, set(planned))
    return Removal(
        requested, planned, absent, planned, newest_valid, None, pointer, repair, dry_run
    )


async def _move_pointer_off(store: AsyncCheckpointStore, removed: set[int]) -> PointerRepair | None:
    """Repair ``latest.txt`` if it names a removed checkpoint; the repair applied, if any.

    A writer moving the pointer meanwhile makes the compare-and-swap fail: the pointer is
    then read again, and repaired again only if it still names a removed checkpoint.

    Raises:
        PreconditionFailedError: if concurrent writers keep moving the pointer through every
            attempt.
    """
    for _ in range(POINTER_ATTEMPTS):
        if (await read_pointer_async(store)).checkpoint_id not in removed:
            return None
        try:
            return await repair_pointer_async(store)
        except PreconditionFailedError:
            continue
    raise PreconditionFailedError(LATEST, "latest.txt keeps changing under concurrent writers")


# -- the blocking faces ------------------------------------------------------------------------


def read_pointer(store: CheckpointStore) -> Pointer:
    """The blocking face of :func:`read_pointer_async`."""
    return run_sync(read_pointer_async(store.async_store))


def repair_pointer(store: CheckpointStore, plan: PointerRepair | None = None) -> PointerRepair:
    """The blocking face of :func:`repair_pointer_async`."""
    return run_sync(repair_pointer_async(store.async_store, plan))


def quarantine_invalid(
    store: CheckpointStore, report: RecoveryReport | None = None
) -> list[Quarantined]:
    """The blocking face of :func:`quarantine_invalid_async`."""
    return run_sync(quarantine_invalid_async(store.async_store, report))


def list_quarantined(store: CheckpointStore) -> list[Quarantined]:
    """The blocking face of :func:`list_quarantined_async`."""
    return run_sync(list_quarantined_async(store.async_store))


def restore_quarantined(store: CheckpointStore, checkpoint_id: int) -> None:
    """The blocking face of :func:`restore_quarantined_async`."""
    run_sync(restore_quarantined_async(store.async_store, checkpoint_id))


def validate_checkpoint_streaming(
    store: CheckpointStore,
    checkpoint_id: int,
    *,
    progress: Progress | None = None,
    range_size: int | None = None,
) -> ValidationResult:
    """The blocking face of :func:`validate_checkpoint_streaming_async`; ``progress`` is
    called on objstore's loop thread."""
    return run_sync(
        validate_checkpoint_streaming_async(
            store.async_store, checkpoint_id, progress=progress, range_size=range_size
        )
    )


def copy_checkpoint(
    src: CheckpointStore | StoreLocation,
    dst: CheckpointStore | StoreLocation,
    checkpoint_id: int,
    *,
    progress: Progress | None = None,
    range_size: int | None = None,
) -> CopyResult:
    """The blocking face of :func:`copy_checkpoint_async` (stores, URLs/paths or backends);
    ``progress`` is called on objstore's loop thread."""
    return run_sync(
        copy_checkpoint_async(
            src,
            dst,
            checkpoint_id,
            progress=progress,
            range_size=range_size,
        )
    )


def remove_checkpoints(
    store: CheckpointStore,
    checkpoint_ids: Iterable[int],
    *,
    force: bool = False,
    dry_run: bool = False,
) -> Removal:
    """The blocking face of :func:`remove_checkpoints_async`."""
    return run_sync(
        remove_checkpoints_async(
            store.async_store, list(checkpoint_ids), force=force, dry_run=dry_run
        )
    )
