"""CheckpointStore: fenced, checksummed checkpoints with validated backward recovery.

Write order (DESIGN §3): ``state.bin`` (create-if-absent) → ``manifest.json``
(create-if-absent: the commit point) → ``latest.txt`` (compare-and-swap, forward only).
A writer that loses the race for an id learns it from a failed create and changes nothing
the winner wrote. Readers treat ``latest.txt`` as a hint and confirm it with one bounded
listing, so a pointer that is missing, garbage, dangling or lagging never hides a commit.

:class:`AsyncCheckpointStore` holds all logic; :class:`CheckpointStore` is its blocking face.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from objstore._checks import check_u64, is_int
from objstore._concurrency import gather_bounded
from objstore._loop import AsyncClosing, StoreFacade, blocking, run_sync
from objstore._open import StoreLocation, as_async_backend
from objstore.backends import AsyncBackend, ObjectInfo, RequestHook
from objstore.checkpoint._clock import StoreClock, read_store_clock
from objstore.checkpoint._commit import UPDATE_ATTEMPTS, CommitProtocol, Landed
from objstore.checkpoint._conflicts import id_taken
from objstore.checkpoint._incremental import (
    collect_shared,
    is_incremental,
    load_frames,
    save_incremental,
    shared_frames,
)
from objstore.checkpoint._layout import (
    CHECKPOINTS,
    LATEST,
    PointerRecord,
    checkpoint_dir,
    is_part_key,
    manifest_key,
    parse_listing_key,
    pointer_text,
    state_key,
)
from objstore.checkpoint._manifest import (
    ABORTED,
    AbortedCheckpoint,
    CheckpointManifest,
    OperatorState,
    StoredManifest,
    check_checkpoint_id,
    encode_manifest,
    encode_tombstone,
)
from objstore.checkpoint._parallel import (
    AsyncParallelJob,
    ParallelJob,
    check_part,
    frame_of,
    joined_names,
    plan_parts,
    read_frame,
    read_part,
)
from objstore.checkpoint._plan import (
    CheckpointEntry,
    CleanupResult,
    LatestChoice,
    Orphan,
    PruneResult,
    age_matters,
    fencing_candidates,
    orphans_to_delete,
    plan_prune,
    pruned_objects,
    scan,
    spare_newer_epochs,
    tombstone_candidates,
    tombstones_to_collect,
)
from objstore.checkpoint._pointer import (
    Pointer,
    classify_pointer,
    ranked_record,
    read_pointer,
    swap_pointer,
)
from objstore.checkpoint._quarantine import quarantined_ids
from objstore.checkpoint._reads import read_manifest
from objstore.checkpoint._shared import SharedGcResult
from objstore.checkpoint._sidecar import (
    HEADER,
    EncodedState,
    StateInput,
    decode_frame,
    decode_sidecar,
    decode_sidecar_stream,
    iter_chunks,
    read_header_epoch,
    verify_sidecar,
)
from objstore.checkpoint._streamed_sidecar import RANGE_SIZE, Progress, check_sidecar, no_progress
from objstore.checkpoint._updates import merge_update
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    FencedError,
    NotFoundError,
    PreconditionFailedError,
    TransientStorageError,
)

__all__ = ["AsyncCheckpointStore", "CheckpointStore", "RecoveryReport", "ValidationResult"]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

SINGLE_PUT_LIMIT = 16 * 1024 * 1024
"""Sidecars up to this size (or the transport's smaller ``single_put_limit``: 1 MiB on a
local directory) are sent as one retried PUT; larger ones are streamed (on S3 a multipart
upload, completed only if the key is still absent), so their upload overlaps their
compression."""


def default_chunks_in_flight() -> int:
    """Twice the CPUs plus two: enough chunks in flight that every core stays busy
    compressing while the event loop hands finished frames to the backend (with one chunk
    per core plus one, a 2-core machine saved about 10% slower), and still a bounded few."""
    return 2 * (os.cpu_count() or 1) + 2


STREAMED_VALIDATION_THRESHOLD = 64 * 1024 * 1024
"""Sidecars larger than this are validated in ranged reads instead of one whole GET."""
LOOKAHEAD_KEYS = 16
"""How many keys after the pointer's checkpoint one listing checks for newer commits."""
PARALLEL_READS = 16
NEVER_COMMITTED = "no manifest (never committed)"
"""The reason a recovery walk gives for a directory without a manifest."""
RELIST_ATTEMPTS = 5
"""Listings a reader walks before concluding that nothing is valid while checkpoints keep
vanishing under it (a concurrent prune); then it raises instead of reporting a fresh start."""


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Whether one checkpoint is whole. ``issues`` say why not; ``warnings`` never
    make it invalid (e.g. a vnode count that differs from the store's)."""

    checkpoint_id: int
    valid: bool
    issues: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """The walk of :meth:`AsyncCheckpointStore.recover_latest_validated`.

    ``chosen_id``/``manifest`` are the newest valid checkpoint (``None``: nothing valid,
    fresh start), ``examined`` every id looked at, newest first, and ``skipped`` each
    ``(id, reason)`` passed over on the way.
    """

    chosen_id: int | None
    manifest: CheckpointManifest | None
    examined: tuple[int, ...]
    skipped: tuple[tuple[int, str], ...]


async def _gather_bounded(jobs: Iterable[Awaitable[_T]]) -> list[_T]:
    """:func:`~objstore._concurrency.gather_bounded` with this store's read limit."""
    return await gather_bounded(jobs, PARALLEL_READS)


class AsyncCheckpointStore(AsyncClosing):
    """Checkpoints under ``{root}/checkpoints/`` on any objstore backend (asyncio).

    ``async with AsyncCheckpointStore(url) as store:`` closes the store's connections when
    the block ends.

    Args:
        url_or_backend: store URL/path or an opened backend.
        storage_options: fsspec options when a URL is given.
        verify_fencing: before the first conditional write, prove that the store enforces
            create-if-absent and compare-and-swap, and refuse it with ``NotSupportedError``
            if not (default). ``False`` skips that check, at a risk: on a store that ignores
            preconditions objstore can neither fence a zombie writer of an older epoch nor
            keep an id created once, so racing writers may overwrite each other's
            checkpoints. With an opened backend, set it on the backend instead.
        request_hook: called with a :class:`~objstore.observability.RequestEvent` after
            every request (see :mod:`objstore.observability`); URL only, like
            ``storage_options``.
        max_retained: if set, :meth:`prune` to this many after every committed save.
        vnode_count: the vnode count manifests are expected to carry; a mismatch is
            reported as a validation warning.
        compression_level: zstd level for ``state.bin`` frames.
        orphan_grace_seconds: an uncommitted sidecar younger than this *by the store's
            clock* is presumed to belong to a live writer and is left alone by
            :meth:`cleanup_orphans`; a save refuses to commit state staged longer than half
            of it (see :mod:`objstore.checkpoint._clock`). Janitors must use a grace at
            least as long as the writers'.
        chunks_in_flight: how many state chunks are compressed/uploaded (and frames
            decompressed) at once; bounds the memory a streamed save holds. Default
            :func:`default_chunks_in_flight`.
        clock: a monotonic clock in seconds, used only for durations (how long a save's
            sidecar has waited for its commit), never compared with the store's times.
        store_clock: the store's current time, for orphan ages (default
            :func:`~objstore.checkpoint._clock.read_store_clock`: the mtime the store stamps
            on a marker written for the purpose).
        single_put_limit: sidecars up to this many bytes (or the transport's smaller
            ``single_put_limit``) are sent as one retried PUT, larger ones streamed (default
            :data:`SINGLE_PUT_LIMIT`, 16 MiB; 0 streams every sidecar).
        streamed_validation_threshold: sidecars larger than this many bytes are validated
            in ranged reads instead of one whole GET (default
            :data:`STREAMED_VALIDATION_THRESHOLD`, 64 MiB).
        range_size: the bytes per ranged read when a sidecar is validated or copied in
            ranges and no ``range_size`` is passed to the call (default
            :data:`~objstore.checkpoint._streamed_sidecar.RANGE_SIZE`, 8 MiB).

    Raises ``ValueError`` for an option out of range.
    """

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        max_retained: int | None = None,
        vnode_count: int = 256,
        compression_level: int = 3,
        orphan_grace_seconds: float = 3600.0,
        chunks_in_flight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        store_clock: StoreClock | None = None,
        single_put_limit: int = SINGLE_PUT_LIMIT,
        streamed_validation_threshold: int = STREAMED_VALIDATION_THRESHOLD,
        range_size: int = RANGE_SIZE,
    ) -> None:
        if max_retained is not None and max_retained < 1:
            raise ValueError("max_retained must be at least 1")
        if not 1 <= vnode_count <= 65535:
            raise ValueError("vnode_count must be within [1, 65535]")
        if not -7 <= compression_level <= 22:
            raise ValueError("compression_level must be within zstd's [-7, 22]")
        if single_put_limit < 0 or streamed_validation_threshold < 0:
            raise ValueError("single_put_limit and streamed_validation_threshold must be >= 0")
        if range_size < 1:
            raise ValueError(f"range_size must be at least 1 byte, got {range_size}")
        self._storage_options = dict(storage_options) if storage_options else None
        """Kept for the tickets of parallel checkpoints (workers reopen the store by URL)."""
        self.backend: AsyncBackend = as_async_backend(
            url_or_backend,
            storage_options,
            verify_fencing=verify_fencing,
            request_hook=request_hook,
        )
        self.max_retained = max_retained
        self._vnode_count = vnode_count
        self.compression_level = compression_level
        self.orphan_grace_seconds = orphan_grace_seconds
        self.chunks_in_flight = chunks_in_flight or default_chunks_in_flight()
        self._clock = clock
        self._store_clock = store_clock
        self.single_put_limit = single_put_limit
        self.streamed_validation_threshold = streamed_validation_threshold
        self.range_size = range_size
        self._pointer: Pointer | None = None
        self._staged: dict[int, tuple[EncodedState, str, str]] = {}
        self._unconfirmed: dict[int, str] = {}
        """Sidecar versions of saves that raised with their outcome unknown, by id."""
        self._sidecar_started: dict[int, float] = {}
        """clock() before each pending sidecar's write, by id (see ``_clock``)."""
        self._stream_unconfirmed: set[int] = set()
        """Ids whose streamed sidecar upload failed with its outcome unknown."""
        self._state_withdrawn: set[int] = set()
        """Ids whose staged sidecar this store object deleted as too old to commit."""
        self._timely: set[int] = set()
        """Ids whose manifest create was answered in time (no janitor can have taken their
        sidecar), though their save has not finished yet."""
        self._commits = CommitProtocol(self)
        """The commit protocol behind the saves and :meth:`claim_epoch`."""
        self._incremental_base: int | None = None
        """The checkpoint this store object's last incremental save committed (its base)."""
        self._incremental_uploaded = 0
        """Bytes of new shared objects the last incremental save uploaded."""
        self._writer_nonce = os.urandom(16)
        """Identifies this store object's writes (sidecar headers, manifests) across calls,
        so a retried save recognises its own earlier commit."""

    @property
    def vnode_count(self) -> int:
        """The vnode count this store's manifests are expected to use."""
        return self._vnode_count

    @property
    def url(self) -> str:
        """The root URL of the store."""
        return self.backend.url

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    # -- saving --------------------------------------------------------------------------------

    async def save(self, manifest: CheckpointManifest) -> CheckpointManifest:
        """Commit ``manifest``; if :meth:`save_state_data` staged state for its id, with it.

        Returns the manifest as stored (checksums filled in). A save that raised anything
        but a conflict may have committed: calling it again with the same manifest on the
        same store object completes that commit (recognised by this store object's writer
        nonce) instead of conflicting. The commit itself raises
        :class:`~objstore.errors.CheckpointConflict` if another writer already committed this
        id, and :class:`~objstore.errors.FencedError` if a newer epoch committed it or has
        been claimed (:meth:`claim_epoch`).

        Raises:
            PreconditionFailedError: the state staged for this id was withdrawn as too old
                for the janitor's grace period (stage it again), or the commit landed too
                late and was withdrawn.
            CheckpointConflict: another writer committed this id (``FencedError``, its
                subclass, when that writer's epoch is newer or a newer epoch was claimed).
        """
        _check_manifest(manifest)
        if manifest.checkpoint_id in self._state_withdrawn:
            raise PreconditionFailedError(
                state_key(manifest.checkpoint_id),
                f"checkpoint {manifest.checkpoint_id}: its staged state was withdrawn (too old "
                "to commit); nothing was committed: stage the state again and save",
            )
        staged = self._staged.get(manifest.checkpoint_id)
        encoded, nonce, version = staged if staged is not None else (None, None, None)
        try:
            committed = await self._commits.commit(manifest, encoded, nonce, version)
        except CheckpointConflict:
            # Definitely not ours any more; anything else (an outage, a cancellation) keeps
            # the staged sidecar so a retried save commits *with* its state.
            self._forget(manifest.checkpoint_id)
            self._state_withdrawn.discard(manifest.checkpoint_id)  # the conflict says it all
            raise
        self._forget(manifest.checkpoint_id)
        return committed

    def _withdrawn(self, checkpoint_id: int) -> None:
        """Our sidecar of ``checkpoint_id`` was deleted (too old to commit): until state is
        staged again, a retried :meth:`save` must refuse rather than commit without it."""
        self._forget(checkpoint_id)
        self._state_withdrawn.add(checkpoint_id)

    def _forget(self, checkpoint_id: int) -> None:
        """Drop what this store object remembers of a save of ``checkpoint_id`` that has
        ended (committed, or lost to another writer): a retry has nothing left to finish."""
        self._staged.pop(checkpoint_id, None)
        self._unconfirmed.pop(checkpoint_id, None)
        self._sidecar_started.pop(checkpoint_id, None)
        self._timely.discard(checkpoint_id)
        self._stream_unconfirmed.discard(checkpoint_id)

    async def save_with_state(
        self, manifest: CheckpointManifest, state: StateInput
    ) -> CheckpointManifest:
        """Write ``state`` as the checkpoint's ``state.bin``, then commit ``manifest``.

        ``state`` is one bytes-like object, a sequence of chunks, a mapping name → chunk, or
        an (async) iterable of chunks or ``(name, chunk)`` pairs, streamed and never held
        whole. Each chunk becomes one zstd frame that :meth:`load_operator_state` can read on
        its own. Bad chunks raise ``TypeError``/``ValueError`` (from the chunk reader).
        Retrying a save that raised completes it the same way; if its earlier attempt had
        already committed, the checkpoint keeps the state that attempt uploaded.

        Beyond the conflicts below, the sidecar write raises ``TransientStorageError`` when
        a streamed sidecar met this store object's own unconfirmed earlier one (removed; the
        stream is consumed, so the caller retries the save), and the commit raises
        ``PreconditionFailedError`` when it landed too late for the janitor's grace period
        and was withdrawn.

        Raises:
            CheckpointConflict: another writer committed this id (``FencedError`` when its
                epoch is newer or a newer epoch was claimed); never for this store object's
                own earlier attempt.
        """
        _check_manifest(manifest)
        chunks = iter_chunks(state)
        written = await self._commits.write_sidecar(manifest, chunks)
        if isinstance(written, Landed):
            state_version = self._unconfirmed.pop(manifest.checkpoint_id, None)
            try:
                committed = await self._commits.complete(
                    manifest, written, state_version, compare_state=False
                )
            except CheckpointConflict:
                self._forget(manifest.checkpoint_id)
                raise
            self._forget(manifest.checkpoint_id)
            return committed
        encoded, nonce, version = written
        try:
            committed = await self._commits.commit(manifest, encoded, nonce, version)
        except CheckpointConflict:
            self._forget(manifest.checkpoint_id)
            raise
        except BaseException:
            # The outcome is unknown: a retry on this store object finds its sidecar here.
            self._unconfirmed[manifest.checkpoint_id] = version
            raise
        self._forget(manifest.checkpoint_id)
        return committed

    async def save_incremental(
        self, manifest: CheckpointManifest, state: StateInput, *, base: int | None = None
    ) -> CheckpointManifest:
        """Save ``state`` incrementally: every chunk whose bytes equal a chunk of ``base`` is
        referenced, not uploaded; the others become new shared objects. Then commit
        ``manifest`` (format 2: one part, ``"state"``, whose frames name shared objects).

        ``base`` defaults to the checkpoint this store object's previous incremental save
        committed; pass the id you restored from after a restart. A base that is gone or
        holds no shared frames means everything is uploaded. ``state`` takes every form
        :meth:`save_with_state` takes; each chunk is one shared object (choose chunks of a
        few MiB: unchanged chunks cost nothing, a changed one is uploaded whole).

        Shared objects are never deleted by :meth:`prune`, :meth:`cleanup_orphans` or a
        removal, only by :meth:`collect_shared`, and a save that returned keeps every object
        it references while its manifest exists, whatever GCs run concurrently (the protocol
        and its argument: :mod:`objstore.checkpoint._shared`). Beyond :meth:`save`'s requests
        it costs two GETs of the GC record, a GET of the base's manifest, a LIST of the
        shared objects, one create per changed chunk and one for the list of the keys it is
        about to commit (``checkpoint_N/refs-*.json``, pruned with the checkpoint).

        Raises:
            CheckpointConflict: another writer committed this id (``FencedError`` when its
                epoch is newer or a newer epoch was claimed).
            PreconditionFailedError: concurrent GCs collected objects this save reused and it
                could not upload them again (state given as a stream); nothing was committed:
                save again.
            CorruptionError: the GC record is unreadable.
        """  # noqa: DOC502 - raised by the incremental module and the commit protocol
        _check_manifest(manifest)
        return await save_incremental(
            self, manifest, state, base if base is not None else self._incremental_base
        )

    async def collect_shared(
        self, grace_seconds: float | None = None, *, dry_run: bool = False
    ) -> SharedGcResult:
        """Delete shared objects (incremental checkpoints' chunks) that no committed or
        quarantined checkpoint references and no in-flight save can still reference; return
        what was seen, planned and deleted (:class:`~objstore.checkpoint.SharedGcResult`).

        Objects younger than ``grace_seconds`` by the store's clock (default: the orphan
        grace period) are left for a later run; age only spares in-flight saves a repair,
        safety rests on the GC record handshake (:mod:`objstore.checkpoint._shared`). A
        ``dry_run`` writes nothing and judges ages against the newest listed mtime.

        Raises:
            CorruptionError: the GC record is unreadable.
        """  # noqa: DOC502 - raised by the incremental module
        return await collect_shared(
            self,
            grace_seconds,
            dry_run=dry_run,
            store_now=functools.partial(self._shared_now, writes=not dry_run),
        )

    async def _shared_now(self, listed: dict[str, ObjectInfo], *, writes: bool) -> float | None:
        """The store's time for shared-object ages (see :meth:`_store_now`)."""
        if self._store_clock is not None:
            return await self._store_clock()
        if writes:
            return await read_store_clock(self.backend)
        return max((info.mtime for info in listed.values() if info.mtime), default=None)

    async def save_state_data(
        self, checkpoint_id: int, chunks: StateInput, *, epoch: int = 0
    ) -> None:
        """Write only the sidecar of ``checkpoint_id``; a later :meth:`save` of that id on
        this store object commits it. Until then it is an orphan to :meth:`cleanup_orphans`.

        ``epoch`` is recorded in the sidecar's header, so a writer racing for the same id
        learns whether it was fenced before the manifest exists.

        Raises:
            CheckpointConflict: the id is already committed (by anyone, this store object
                included); built by ``id_taken``.
        """  # noqa: DOC501, DOC502 - raised through the id_taken factory, which ruff names instead
        check_checkpoint_id(checkpoint_id)
        placeholder = CheckpointManifest(checkpoint_id=checkpoint_id, epoch=epoch)
        written = await self._commits.write_sidecar(placeholder, iter_chunks(chunks))
        if isinstance(written, Landed):
            raise id_taken(
                checkpoint_id,
                f"checkpoint {checkpoint_id} is already committed (by this store object)",
                epoch=epoch,
                winner_epoch=written.stored.manifest.epoch,
            )
        self._staged[checkpoint_id] = written

    # -- parallel checkpoints (coordinator side; the worker side is write_part) ------------

    async def begin_parallel(
        self,
        checkpoint_id: int,
        epoch: int,
        parts: Mapping[str, tuple[int, int] | None] | Iterable[str | tuple[str, Any]],
    ) -> AsyncParallelJob:
        """Begin a parallel checkpoint of ``parts``: returns the job whose picklable
        ``tickets`` the workers pass to :func:`~objstore.write_part`, and whose
        ``commit(receipts, source_offsets=..., ...)`` commits one fenced manifest (format 2)
        listing every part, then moves the pointer as a save does.

        ``parts`` maps part names to inclusive key-group ranges ``(first, last)`` (or
        ``None`` for an unkeyed part), or lists names or ``(name, range)`` pairs; see
        :func:`~objstore.key_group_parts` for Flink-style ranges. One GET of the pointer:
        a coordinator whose epoch is already fenced is refused before any worker uploads.
        Workers reopen the store from the ticket by its URL and storage options, so the
        store must be reachable by URL from their processes (not an anonymous memory store).

        Raises:
            FencedError: a newer epoch has been claimed (``latest.txt``'s fence epoch).
            ValueError: no parts, a duplicate or bad part name, or a bad key-group range.
            TypeError: a part is neither a name nor a ``(name, range)`` pair.
        """  # noqa: DOC502 - ValueError/TypeError are raised by plan_parts
        check_checkpoint_id(checkpoint_id)
        if not is_int(epoch) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        planned = plan_parts(parts)
        current = await self._read_pointer()
        record = await self._pointer_record(current)
        if record is not None:
            self._pointer = current  # the commit's pointer move swaps from it: no GET then
        fence = record.fence_epoch if record is not None else None
        if fence is not None and fence > epoch:
            raise FencedError(
                LATEST,
                f"checkpoint {checkpoint_id}: epoch {fence} has been claimed, so a parallel "
                f"checkpoint of epoch {epoch} would be fenced; nothing was written",
                checkpoint_id=checkpoint_id,
                epoch=epoch,
                winner_epoch=fence,
            )
        return AsyncParallelJob(self, checkpoint_id, epoch, planned, self._storage_options)

    async def _commit_parts(self, manifest: CheckpointManifest) -> CheckpointManifest:
        """Commit a manifest with parts (from :meth:`AsyncParallelJob.commit`) through the
        commit protocol: as a save without state, so fencing, conflicts, a retry completing
        an earlier attempt and the pointer move are those of :meth:`save`."""
        return await self._commits.commit(manifest, None, None, None)

    async def _load_parts_manifest(self, checkpoint_id: int) -> CheckpointManifest:
        check_checkpoint_id(checkpoint_id)
        manifest = (await self._load_stored(checkpoint_id)).manifest
        if not manifest.parts:
            raise KeyError(f"checkpoint {checkpoint_id} has no parts (it is a single-writer save)")
        return manifest

    async def load_part(self, checkpoint_id: int, name: str) -> bytes:
        """The state of part ``name`` of a parts checkpoint: all its frames, verified,
        decompressed and concatenated in order (what one worker restores). Reads only that
        part: one GET of the manifest and one of the part's object (shared frames, of
        incremental checkpoints, one ranged read each).

        Raises ``NotFoundError`` if the checkpoint does not exist and ``CorruptionError`` if
        the part does not match its manifest.

        Raises:
            KeyError: the checkpoint has no parts, or no part ``name``.
        """  # noqa: DOC502 - raised by _load_parts_manifest and CheckpointManifest.part
        manifest = await self._load_parts_manifest(checkpoint_id)
        part = manifest.part(name)
        frames = await read_part(self.backend, manifest, part, self.chunks_in_flight)
        return b"".join(frames)

    async def load_part_frame(self, checkpoint_id: int, name: str, frame: str | int) -> bytes:
        """One frame (one chunk, e.g. one operator's state) of part ``name``, by its name or
        position, fetched with one ranged read and verified by its own xxh3.

        Raises ``NotFoundError`` if the checkpoint does not exist and ``CorruptionError`` if
        the frame fails its checksum.

        Raises:
            KeyError: the checkpoint has no parts, no part ``name`` or no such frame.
            TypeError: ``frame`` is neither a name nor a position.
        """  # noqa: DOC502 - KeyError/TypeError raised by frame_of
        manifest = await self._load_parts_manifest(checkpoint_id)
        part = manifest.part(name)
        return await read_frame(self.backend, part, frame_of(part, frame))

    async def _read_parts(self, manifest: CheckpointManifest) -> tuple[list[str], list[bytes]]:
        """Every frame of every part of ``manifest`` (load_state's names, and the frames)."""
        names = joined_names(manifest.parts)
        read = await _gather_bounded(
            read_part(self.backend, manifest, part, self.chunks_in_flight)
            for part in manifest.parts
        )
        return names, [frame for frames in read for frame in frames]

    async def claim_epoch(self, epoch: int) -> None:
        """Fence every older epoch before this writer's first save (call it at startup).

        Moves the pointer's fence epoch forward to ``epoch`` with one compare-and-swap, and
        with it names the checkpoint readers restore now (looking past a lagging pointer, as
        :meth:`load_latest` does). Afterwards every save by an older epoch raises
        :class:`~objstore.errors.FencedError` (its commit is withdrawn), and readers never
        prefer an older epoch's checkpoint over one of ``epoch``. Claiming the epoch already
        claimed changes nothing; epochs must be unique per writer incarnation.

        Costs one GET of ``latest.txt`` plus what :meth:`load_latest` costs, and one write.

        Raises:
            FencedError: a newer epoch was claimed already, or a checkpoint of a newer epoch
                is committed (found when the pointer had to be re-created from the listing).
        """
        check_u64(epoch, "epoch")
        while True:
            current = await self._read_pointer()
            record = await self._pointer_record(current)
            fence = record.fence_epoch if record is not None else None
            if fence is not None and fence > epoch:
                raise FencedError(
                    LATEST,
                    f"epoch {epoch} cannot be claimed: epoch {fence} was claimed already",
                    checkpoint_id=(record.checkpoint_id or 0) if record else 0,
                    epoch=epoch,
                    winner_epoch=fence,
                )
            if fence == epoch and current.exists:
                self._pointer = current
                return
            latest = await self._latest_after(record)
            if latest is not None and latest.epoch > epoch:
                raise FencedError(
                    LATEST,
                    f"epoch {epoch} cannot be claimed: epoch {latest.epoch} committed "
                    f"checkpoint {latest.checkpoint_id} already",
                    checkpoint_id=latest.checkpoint_id,
                    epoch=epoch,
                    winner_epoch=latest.epoch,
                )
            text = pointer_text(
                latest.checkpoint_id if latest else None, latest.epoch if latest else None, epoch
            )
            version = await swap_pointer(self.backend, current.version, text)
            if version is None:
                continue
            self._pointer = classify_pointer(text, version)
            newer = (
                None
                if record is not None
                else await self._commits.newer_since_recreated(version, epoch)
            )
            if newer is not None:
                raise FencedError(
                    LATEST,
                    f"epoch {epoch} cannot be claimed: epoch {newer[1]} committed checkpoint "
                    f"{newer[0]} already",
                    checkpoint_id=newer[0],
                    epoch=epoch,
                    winner_epoch=newer[1],
                )
            logger.info("claimed epoch %d", epoch)
            return

    async def _fence_epoch(self) -> int | None:
        """The newest claimed epoch, from ``latest.txt`` (``None`` if it says none)."""
        record = await self._pointer_record(await self._read_pointer())
        return record.fence_epoch if record is not None else None

    async def _read_pointer(self) -> Pointer:
        """``latest.txt`` as it is now (one GET)."""
        return await read_pointer(self.backend)

    async def _pointer_record(self, current: Pointer) -> PointerRecord | None:
        """The record of a pointer as read (``None``: missing or garbage), with the epochs
        a format-1 pointer leaves out filled in from the checkpoint it names (one GET); if
        that is unreadable, the pointer ranks as epoch 0 and fences nothing."""
        return await ranked_record(self.backend, current)

    async def _epoch_of(self, checkpoint_id: int) -> int | None:
        """The epoch of a committed checkpoint, or ``None`` if it is missing or unreadable."""
        try:
            return (await self._load_stored(checkpoint_id)).manifest.epoch
        except (NotFoundError, CorruptionError):
            return None

    async def load_latest(self) -> CheckpointManifest | None:
        """The checkpoint to restore: of the committed checkpoints whose manifest is readable,
        the newest epoch's newest id (DESIGN §3: a newer epoch always wins), or ``None``.

        Reads ``latest.txt`` and, together, the manifest it names and one bounded listing of
        what follows it — three requests, whatever the number retained, plus one GET per
        committed checkpoint found past the pointer (to learn its epoch). Falls back to a
        listing walked from the newest id when the pointer is missing, garbage, dangling or
        lagging. Does not read state; use :meth:`recover_latest_validated` for that.
        """
        return await self._latest_after((await self._read_pointer()).record)

    async def _latest_after(self, record: PointerRecord | None) -> CheckpointManifest | None:
        """:meth:`load_latest` once the pointer was read."""
        if record is not None and record.checkpoint_id is not None:
            pointed = record.checkpoint_id
            loaded, after = await asyncio.gather(
                self._try_load(pointed),
                self.backend.list_after(
                    CHECKPOINTS, checkpoint_dir(pointed) + "/~", LOOKAHEAD_KEYS
                ),
            )
            newer = [cid for cid, e in scan(after).items() if e.committed and cid > pointed]
            # The window proves "nothing newer" only if it reached past the last checkpoint
            # directory (latest.txt sorts after them all) or was not full; a run of orphans
            # can fill it, and then the full listing decides.
            window_complete = len(after) < LOOKAHEAD_KEYS or any(
                parse_listing_key(info.key) is None for info in after
            )
            if window_complete and loaded is not None:
                if not newer:
                    return loaded
                found = await _gather_bounded(
                    self._try_load(cid) for cid in sorted(newer, reverse=True)
                )
                return _best(LatestChoice(record), [*found, loaded])
        return await _until_settled(
            self._entries, functools.partial(self._newest_readable, record), lambda m: m is None
        )

    async def _newest_readable(
        self, record: PointerRecord | None, entries: dict[int, CheckpointEntry]
    ) -> CheckpointManifest | None:
        """The checkpoint readers restore among one listing's readable manifests, walked
        from the newest id (``None``: none)."""
        choice = LatestChoice(record)
        best: CheckpointManifest | None = None
        for checkpoint_id in sorted(entries, reverse=True):
            if choice.done_before(checkpoint_id):
                break
            if entries[checkpoint_id].committed:
                manifest = await self._try_load(checkpoint_id)
                if manifest is not None:
                    best = _best(choice, [manifest]) or best
        return best

    async def _try_load(self, checkpoint_id: int) -> CheckpointManifest | None:
        try:
            return (await self._load_stored(checkpoint_id)).manifest
        except NotFoundError:
            return None
        except CorruptionError as exc:
            logger.warning("skipping checkpoint %d: %s", checkpoint_id, exc)
            return None

    async def _load_stored(self, checkpoint_id: int) -> StoredManifest:
        return (await read_manifest(self.backend, checkpoint_id))[2]

    async def load_by_id(self, checkpoint_id: int) -> CheckpointManifest | None:
        """The manifest of ``checkpoint_id``; ``None`` if absent, ``CorruptionError`` if bad."""
        check_checkpoint_id(checkpoint_id)
        try:
            return (await self._load_stored(checkpoint_id)).manifest
        except NotFoundError:
            return None

    async def _entries(self, *, settle: bool = False) -> dict[int, CheckpointEntry]:
        """One listing of ``checkpoints/``; with ``settle``, tombstones are marked
        (``aborted``): each manifest small enough to be one is read (one GET each)."""
        entries = scan(await self.backend.list(CHECKPOINTS))
        if settle:
            candidates = tombstone_candidates(entries)
            found = await _gather_bounded(self._tombstone_epoch(cid) for cid in candidates)
            for checkpoint_id, aborted in zip(candidates, found, strict=True):
                if aborted is not None:
                    entries[checkpoint_id].aborted = True
                    entries[checkpoint_id].aborted_epoch = aborted[0]
        return entries

    async def _tombstone_epoch(self, checkpoint_id: int) -> tuple[int | None] | None:
        """``(orphan epoch,)`` if the manifest of ``checkpoint_id`` is a tombstone; ``None``
        if it is anything else (a checkpoint, unreadable, gone)."""
        try:
            await self._load_stored(checkpoint_id)
        except AbortedCheckpoint as exc:
            return (exc.orphan_epoch,)
        except (NotFoundError, CorruptionError):
            return None
        return None

    async def list_ids(self) -> list[int]:
        """Ids that have a manifest (readable or not; not a tombstone), ascending. One
        listing, plus a GET of each manifest small enough to be a tombstone."""
        entries = await self._entries(settle=True)
        return sorted(cid for cid, entry in entries.items() if entry.checkpoint)

    async def next_checkpoint_id(self) -> int:
        """One more than any id in use (committed, corrupt or orphaned) or pointed at."""
        entries = await self._entries()
        pointed = (await self._read_pointer()).checkpoint_id
        return max([pointed or 0, *entries]) + 1

    async def load_state_data(self, checkpoint_id: int) -> bytes | None:
        """All saved chunks of ``checkpoint_id``, verified, decompressed and concatenated.

        ``None`` when the checkpoint does not exist or has no state; ``CorruptionError`` when
        the sidecar does not match its manifest. A checkpoint of parts gives every part's
        frames concatenated in the manifest's order (``b"".join(load_state(id).values())``).
        One GET of the manifest and one of the
        sidecar (a ranged GET of all of it), decompressed while it downloads: each frame is
        decompressed as soon as it has arrived, by worker threads (one per core, at most
        ``chunks_in_flight`` frames queued) straight into the returned ``bytes``, and the
        file is hashed once as it passes. Memory holds the result plus a bounded window of
        frames, never the whole sidecar.
        """
        loaded = await self._read_state(checkpoint_id)
        return None if loaded is None else loaded[1]

    async def load_state(self, checkpoint_id: int) -> dict[str, bytes] | None:
        """The saved chunks of ``checkpoint_id`` by name, verified and decompressed.

        State saved as a mapping comes back as that mapping (same names, same order). A
        chunk saved without a name — state saved as plain bytes, or as a list of buffers —
        is keyed by its position as a decimal string: plain bytes come back as
        ``{"0": data}``. ``None`` exactly when :meth:`load_state_data` gives ``None``: the
        checkpoint does not exist or was saved without state. Verification raises
        ``CorruptionError`` like :meth:`load_state_data`, with the same requests (one GET of
        the manifest, one of the sidecar).

        A checkpoint of parts (a parallel commit) comes back as ``{"{part}/{frame}": bytes}``
        for every frame of every part, in the manifest's order (an unnamed frame by its
        position in its part), each part's object read once. An incremental checkpoint
        (:meth:`save_incremental`) comes back as it was saved, like a full one.

        Raises:
            ValueError: a chunk's position equals the name of another chunk, so the state
                cannot be told apart by name (read it with :meth:`load_operator_state` by
                position).
        """
        check_checkpoint_id(checkpoint_id)
        try:
            stored = await self._load_stored(checkpoint_id)
        except NotFoundError:
            return None
        if is_incremental(stored.manifest):
            shared = await load_frames(self, stored.manifest)
            return _by_name(checkpoint_id, [(frame.name, raw) for frame, raw in shared])
        if stored.manifest.parts:
            frame_names, frames = await self._read_parts(stored.manifest)
            return dict(zip(frame_names, frames, strict=True))
        loaded = await self._read_state(checkpoint_id, stored)
        if loaded is None:
            return None
        entries, data = loaded
        names = {entry.name for entry in entries if entry.name is not None}
        chunks: dict[str, bytes] = {}
        view = memoryview(data)
        start = 0
        for position, entry in enumerate(entries):
            name = str(position) if entry.name is None else entry.name
            if name in chunks or (entry.name is None and name in names):
                raise ValueError(
                    f"checkpoint {checkpoint_id}: unnamed chunk {position} and a chunk named "
                    f"{name!r} collide; read them with load_operator_state"
                )
            chunks[name] = bytes(view[start : start + entry.raw_length])
            start += entry.raw_length
        return chunks

    async def _read_state(
        self, checkpoint_id: int, stored: StoredManifest | None = None
    ) -> tuple[tuple[OperatorState, ...], bytes] | None:
        """The manifest's chunk index and all chunks joined (see :meth:`load_state_data`);
        for a parts checkpoint, every part's frames in order (no index). ``stored``: the
        manifest, if already read."""
        check_checkpoint_id(checkpoint_id)
        if stored is None:
            try:
                stored = await self._load_stored(checkpoint_id)
            except NotFoundError:
                return None
        manifest = stored.manifest
        if manifest.parts:
            _, frames = await self._read_parts(manifest)
            return (), b"".join(frames)
        if manifest.state_checksum is None:
            return None
        key = state_key(checkpoint_id)
        if manifest.state_size is None:
            data, _ = await self.backend.get(key)
            joined = await decode_sidecar(
                data,
                key=key,
                checkpoint_id=checkpoint_id,
                nonce=stored.state_nonce,
                size=manifest.state_size,
                state_checksum=manifest.state_checksum,
                entries=manifest.operator_states,
                parallelism=self.chunks_in_flight,
            )
            return tuple(manifest.operator_states), joined
        # One ranged GET, decompressed while it arrives. A range asks for no version token,
        # which a local directory would have to compute by hashing the whole file once more;
        # the extra byte reveals a sidecar longer than recorded.
        pieces = self.backend.get_range_stream(key, 0, manifest.state_size + 1)
        async with contextlib.aclosing(pieces):  # type: ignore[type-var]
            joined = await decode_sidecar_stream(
                pieces,
                key=key,
                checkpoint_id=checkpoint_id,
                nonce=stored.state_nonce,
                size=manifest.state_size,
                state_checksum=manifest.state_checksum,
                entries=manifest.operator_states,
                parallelism=self.chunks_in_flight,
            )
        return tuple(manifest.operator_states), joined

    async def load_operator_state(self, checkpoint_id: int, name_or_index: str | int) -> bytes:
        """One saved chunk, by operator name or position, fetched with a ranged read.

        Reading raises ``NotFoundError`` if the checkpoint does not exist and
        ``CorruptionError`` if the chunk fails its checksum.

        Raises:
            TypeError: ``name_or_index`` is neither a name nor a position.
            IndexError: no chunk at that position.
            KeyError: no chunk of that name.
        """
        check_checkpoint_id(checkpoint_id)
        manifest = (await self._load_stored(checkpoint_id)).manifest
        frames = shared_frames(manifest) if is_incremental(manifest) else []
        entries = tuple(f.entry() for f in frames) if frames else manifest.operator_states
        if isinstance(name_or_index, bool) or not isinstance(name_or_index, str | int):
            raise TypeError("name_or_index must be an operator name or a position")
        if isinstance(name_or_index, int):
            if not 0 <= name_or_index < len(entries):
                raise IndexError(f"checkpoint {checkpoint_id} has {len(entries)} chunks")
            entry = entries[name_or_index]
        else:
            matches = [e for e in entries if e.name == name_or_index]
            if not matches:
                raise KeyError(name_or_index)
            entry = matches[0]
        if frames:
            shared = frames[entries.index(entry)]
            data, _ = await self.backend.get(shared.key)
            return await asyncio.to_thread(decode_frame, data, entry, key=shared.key)
        key = state_key(checkpoint_id)
        frame = await self.backend.get_range(key, entry.offset, entry.offset + entry.length)
        return await asyncio.to_thread(decode_frame, frame, entry, key=key)

    # -- updating ------------------------------------------------------------------------------

    async def update_manifest(self, manifest: CheckpointManifest) -> CheckpointManifest:
        """Merge the sink statuses, sink epochs, watermark and metadata of ``manifest`` into
        the stored checkpoint by compare-and-swap; return the manifest as stored.

        ``manifest`` may be an older copy: a sink's status only moves forward (``pending`` <
        ``failed`` < ``committed``), epochs and the watermark only grow, metadata keys are
        added or replaced, never removed (:mod:`objstore.checkpoint._updates`), so two
        committers that loaded it earlier both keep their transition. A lost compare-and-swap
        is re-read and merged again. Everything else (checksums, index, offsets) is kept.
        Costs one GET and one PUT (none when nothing changes).

        Reading raises ``NotFoundError`` if the checkpoint does not exist (or was pruned
        meanwhile) and ``CorruptionError`` if its manifest is unreadable.

        Raises:
            ValueError: the epoch differs from the stored one.
            PreconditionFailedError: :data:`UPDATE_ATTEMPTS` compare-and-swaps in a row lost
                to other updaters.
        """
        _check_manifest(manifest)
        key = manifest_key(manifest.checkpoint_id)
        for _ in range(UPDATE_ATTEMPTS):
            _, version, stored = await read_manifest(self.backend, manifest.checkpoint_id)
            if stored.manifest.epoch != manifest.epoch:
                raise ValueError(
                    f"checkpoint {manifest.checkpoint_id} has epoch {stored.manifest.epoch}; "
                    f"update_manifest cannot change it to {manifest.epoch}"
                )
            updated = merge_update(stored.manifest, manifest)
            if updated == stored.manifest:
                return updated
            new_stored = dataclasses.replace(stored, manifest=updated, revision=stored.revision + 1)
            try:
                await self.backend.put_if_match(key, encode_manifest(new_stored), version)
            except PreconditionFailedError:
                continue  # another update landed: merge into it
            return updated
        raise PreconditionFailedError(
            key, f"checkpoint {manifest.checkpoint_id}: the manifest keeps changing under updates"
        )

    # -- validation and recovery ---------------------------------------------------------------

    async def validate_checkpoint(
        self,
        checkpoint_id: int,
        *,
        progress: Progress | None = None,
        range_size: int | None = None,
    ) -> ValidationResult:
        """Fully validate one checkpoint: manifest readable, checksum holds, id matches its
        path, sidecar present with the recorded size and xxh3. Transient errors propagate
        (after retries) instead of being mistaken for corruption.

        A sidecar over the store's ``streamed_validation_threshold``, or any sidecar when
        ``progress`` or ``range_size`` is given, is read in ranges and hashed as it arrives,
        never held whole; ``progress`` is called with the size of each range read.

        Raises:
            ValueError: ``range_size`` is below 1.
        """
        check_checkpoint_id(checkpoint_id)
        if range_size is not None and range_size < 1:
            raise ValueError(f"range_size must be at least 1 byte, got {range_size}")
        return (await self._validate(checkpoint_id, progress, range_size))[0]

    async def _validate(
        self,
        checkpoint_id: int,
        progress: Progress | None = None,
        range_size: int | None = None,
        stored: StoredManifest | None = None,
    ) -> tuple[ValidationResult, CheckpointManifest | None]:
        """:meth:`validate_checkpoint`, also handing back the manifest it read (or was
        given as ``stored``)."""
        if stored is None:
            try:
                stored = await self._load_stored(checkpoint_id)
            except AbortedCheckpoint:
                return ValidationResult(checkpoint_id, False, (ABORTED,)), None
            except NotFoundError:
                return ValidationResult(checkpoint_id, False, ("manifest missing",)), None
            except CorruptionError as exc:
                return ValidationResult(checkpoint_id, False, (exc.reason,)), None
        manifest = stored.manifest
        warnings: tuple[str, ...] = ()
        if manifest.vnode_count != self._vnode_count:
            warnings = (
                f"vnode_count {manifest.vnode_count} differs from the store's {self._vnode_count}",
            )
        if manifest.parts:
            issues = await self._validate_parts(manifest, progress, range_size)
            return ValidationResult(checkpoint_id, not issues, issues, warnings), manifest
        if manifest.state_checksum is None:
            return ValidationResult(checkpoint_id, True, (), warnings), manifest
        streamed = (
            progress is not None
            or range_size is not None
            or (manifest.state_size or 0) > self.streamed_validation_threshold
        )
        key = state_key(checkpoint_id)
        try:
            if streamed:
                await check_sidecar(
                    self.backend,
                    stored,
                    range_size=range_size or self.range_size,
                    progress=progress or no_progress,
                )
            else:
                data, _ = await self.backend.get(key)
                verify_sidecar(
                    data,
                    key=key,
                    checkpoint_id=checkpoint_id,
                    nonce=stored.state_nonce,
                    size=manifest.state_size,
                    state_checksum=manifest.state_checksum,
                    entries=manifest.operator_states,
                )
        except NotFoundError:
            invalid = ValidationResult(checkpoint_id, False, ("state.bin missing",), warnings)
            return invalid, manifest
        except CorruptionError as exc:
            return ValidationResult(checkpoint_id, False, (exc.reason,), warnings), manifest
        return ValidationResult(checkpoint_id, True, (), warnings), manifest

    async def _validate_parts(
        self,
        manifest: CheckpointManifest,
        progress: Progress | None,
        range_size: int | None,
    ) -> tuple[str, ...]:
        """Why the parts of ``manifest`` are invalid (empty: every part's object has its
        recorded size and xxh3, header and frame bounds, and every shared frame is there),
        each part checked as ``state.bin`` is (streamed past the threshold, or with
        ``progress``/``range_size``), up to :data:`PARALLEL_READS` parts at once."""
        streamed = progress is not None or range_size is not None
        found = await _gather_bounded(
            check_part(
                self.backend,
                manifest,
                part,
                streamed=streamed or (part.size or 0) > self.streamed_validation_threshold,
                range_size=range_size or self.range_size,
                progress=progress or no_progress,
            )
            for part in manifest.parts
        )
        return tuple(issue for issue in found if issue is not None)

    async def recover_latest_validated(self) -> RecoveryReport:
        """Walk back from the newest checkpoint to the one to restore: of the checkpoints that
        fully validate, the newest epoch's newest id (as :meth:`load_latest` chooses).

        Every id above the chosen one is reported in ``skipped`` with its reason, including
        uncommitted directories and valid checkpoints of an older epoch. ``chosen_id is None``
        means nothing valid exists (a fresh start is then correct): a walk that found nothing
        valid is confirmed by a second listing, and walked again if the committed checkpoints
        changed meanwhile (a concurrent prune deleted what the first listing named). Raises
        :class:`TransientStorageError` if they keep changing for :data:`RELIST_ATTEMPTS`
        listings, rather than report a fresh start that may be false.

        Reads ``latest.txt`` alongside the first listing: its fence epoch tells when no lower
        id can outrank the best found, so the walk usually stops at the first valid
        checkpoint; without a usable pointer it reads every manifest (``examined`` lists
        every id it looked at).
        """
        first, pointer = await asyncio.gather(self._entries(), self._read_pointer())
        record = pointer.record
        unused = [first]

        async def listing() -> dict[int, CheckpointEntry]:
            return unused.pop() if unused else await self._entries()

        return await _until_settled(
            listing, functools.partial(self._walk, record), lambda r: r.chosen_id is None
        )

    async def _walk(
        self, record: PointerRecord | None, entries: dict[int, CheckpointEntry]
    ) -> RecoveryReport:
        """The backward walk of :meth:`recover_latest_validated` over one listing."""
        choice = LatestChoice(record)
        examined: list[int] = []
        skipped: list[tuple[int, str]] = []
        chosen: CheckpointManifest | None = None
        for checkpoint_id in sorted(entries, reverse=True):
            if choice.done_before(checkpoint_id):
                break
            examined.append(checkpoint_id)
            if not entries[checkpoint_id].committed:
                skipped.append((checkpoint_id, NEVER_COMMITTED))
                continue
            try:
                stored = await self._load_stored(checkpoint_id)
            except AbortedCheckpoint:
                skipped.append((checkpoint_id, ABORTED))
                continue
            except NotFoundError:
                skipped.append((checkpoint_id, "manifest missing"))
                continue
            except CorruptionError as exc:
                skipped.append((checkpoint_id, exc.reason))
                continue
            reason = choice.excluded(checkpoint_id, stored.manifest.epoch)
            if reason is not None:
                skipped.append((checkpoint_id, reason))
                continue
            result, manifest = await self._validate(checkpoint_id, stored=stored)
            if not result.valid:
                skipped.append((checkpoint_id, "; ".join(result.issues)))
                continue
            outranked = choice.take(checkpoint_id, stored.manifest.epoch)
            if outranked is not None:
                skipped.append(outranked)
            chosen = manifest
        if chosen is None:
            return RecoveryReport(None, None, tuple(examined), tuple(skipped))
        # Ids below the chosen one were read only to rule out a newer epoch: not skipped.
        passed_over = tuple((cid, why) for cid, why in skipped if cid > chosen.checkpoint_id)
        return RecoveryReport(chosen.checkpoint_id, chosen, tuple(examined), passed_over)

    async def newest_valid_id(self) -> int | None:
        """The id :meth:`recover_latest_validated` would choose."""
        return (await self.recover_latest_validated()).chosen_id

    # -- housekeeping --------------------------------------------------------------------------

    async def prune(self, keep_count: int, *, dry_run: bool = False) -> PruneResult:
        """Delete all but the ``keep_count`` newest committed checkpoints; return what was
        planned and deleted (:class:`~objstore.checkpoint.PruneResult`).

        The newest *valid* checkpoint is always kept, even when newer ones are corrupt; if
        none is valid nothing is deleted (``result.refused``). Each checkpoint loses its
        manifest before its sidecar, so a crash leaves at worst an orphan. A ``dry_run``
        plans the same way and deletes nothing. Raises ``ValueError`` for a ``keep_count``
        below 1.
        """
        return await self._prune(keep_count, known_valid=None, dry_run=dry_run)

    async def plan_prune(self, keep_count: int) -> list[int]:
        """The ids :meth:`prune` would delete now (``prune(keep_count, dry_run=True)``)."""
        return list((await self.prune(keep_count, dry_run=True)).planned)

    async def _prune(
        self, keep_count: int, *, known_valid: CheckpointManifest | None, dry_run: bool = False
    ) -> PruneResult:
        """Delete what :meth:`prune` deletes. Tombstones are neither counted nor deleted
        (they hold aborted ids; :meth:`cleanup_orphans` collects them)."""
        entries = await self._entries(settle=True)
        committed = tuple(cid for cid, entry in entries.items() if entry.checkpoint)
        if len(committed) <= keep_count:
            plan_prune(list(committed), keep_count, None)  # validates keep_count
            return PruneResult(keep_count, committed, None, (), (), dry_run)
        if known_valid is None:
            known_valid = await self._prune_anchor()
        newest_valid = known_valid.checkpoint_id if known_valid is not None else None
        doomed = plan_prune(list(committed), keep_count, newest_valid)
        read = await self._spare_newer_epochs(doomed, known_valid)
        planned = tuple(read)
        if dry_run:
            return PruneResult(keep_count, committed, newest_valid, planned, (), dry_run)
        deleted = []
        for checkpoint_id in planned:
            found, version = read[checkpoint_id]
            entry = entries[checkpoint_id]
            if version is not None:
                # Through the manifest read, or not at all: if it changed or vanished since
                # (withdrawn, its id staged again: simulator seed 9620), what lies there now
                # is not what was judged (cleanup_orphans or the next prune decides).
                try:
                    await self.backend.delete(manifest_key(checkpoint_id), version)
                except (PreconditionFailedError, NotFoundError):
                    continue
            # Only what the manifest read there owns (see pruned_objects).
            for info in pruned_objects(entry, found):
                if info is not entry.manifest or version is None:
                    await self.backend.delete(info.key)
            deleted.append(checkpoint_id)
        if deleted:
            logger.info("pruned checkpoints %s", deleted)
        return PruneResult(keep_count, committed, newest_valid, planned, tuple(deleted), dry_run)

    async def _prune_anchor(self) -> CheckpointManifest | None:
        """The valid checkpoint a prune keeps and measures what it deletes against: one no
        save can still withdraw.

        The newest valid checkpoint (:meth:`recover_latest_validated`), unless it ranks
        above the checkpoint ``latest.txt`` names: such a commit's save has not moved the
        pointer yet and may still be withdrawn (its writer fenced, or its commit too late),
        so the anchor is then the named checkpoint, fully validated — every save moves the
        pointer before it returns. If that one is invalid, nothing is pruned now.
        """
        report, pointer = await asyncio.gather(
            self.recover_latest_validated(), self._read_pointer()
        )
        chosen = report.manifest
        record = await self._pointer_record(pointer)
        rank = record.rank if record is not None else None
        if chosen is None or rank is None or (chosen.epoch, chosen.checkpoint_id) <= rank:
            return chosen
        result, named = await self._validate(rank[1])
        if not result.valid or named is None or (named.epoch, named.checkpoint_id) != rank:
            return None
        return named

    async def _spare_newer_epochs(
        self, doomed: list[int], newest_valid: CheckpointManifest | None
    ) -> dict[int, tuple[CheckpointManifest | None, str | None]]:
        """``doomed`` without the checkpoints of an epoch newer than ``newest_valid``'s: a
        newer epoch's commit whose pointer move is still in flight (one GET per doomed id),
        each with its manifest as read and that manifest's version (``(None, None)``:
        unreadable). A manifest gone since the listing drops its id: nothing of it is left
        to prune, and what lies there now is not what was listed."""
        if not doomed or newest_valid is None:
            return {}
        read = await _gather_bounded(self._read_doomed(cid) for cid in doomed)
        present = [(cid, found) for cid, found in zip(doomed, read, strict=True) if found]
        epochs = [m.epoch if m is not None else None for _, (m, _) in present]
        kept = set(spare_newer_epochs([cid for cid, _ in present], epochs, newest_valid.epoch))
        return {cid: found for cid, found in present if cid in kept}

    async def _read_doomed(
        self, checkpoint_id: int
    ) -> tuple[CheckpointManifest | None, str | None] | None:
        """A doomed checkpoint's manifest and version; ``(None, None)`` if unreadable (a
        corrupt checkpoint, pruned as it is), ``None`` if gone (or a tombstone now)."""
        try:
            _, version, stored = await read_manifest(self.backend, checkpoint_id)
        except NotFoundError:
            return None
        except CorruptionError as exc:
            logger.warning("pruning unreadable checkpoint %d: %s", checkpoint_id, exc)
            return None, None
        return stored.manifest, version

    async def plan_cleanup_orphans(self, grace_seconds: float | None = None) -> list[int]:
        """The uncommitted checkpoint ids :meth:`cleanup_orphans` would delete now
        (``cleanup_orphans(grace_seconds, dry_run=True).planned``)."""
        return list((await self.cleanup_orphans(grace_seconds, dry_run=True)).planned)

    async def _plan_orphans(
        self, grace_seconds: float | None, *, writes: bool = True
    ) -> tuple[dict[int, CheckpointEntry], list[int], float | None]:
        """The listing and the orphans to delete. Ages are judged by the store's clock,
        read (one marker PUT + HEAD, unless ``writes`` is false) only when some orphan's
        fate depends on its age; quarantined ids (one listing, only when orphans exist)
        are never doomed."""
        grace = self.orphan_grace_seconds if grace_seconds is None else grace_seconds
        entries = await self._entries(settle=writes)
        if all(entry.committed for entry in entries.values()):
            return entries, [], None
        candidates = fencing_candidates(entries)
        fence: int | None = None
        orphan_epochs: dict[int, int | None] = {}
        if candidates:
            fence = await self._fence_epoch()
            epochs = await _gather_bounded(
                self._orphan_epoch(cid, entries[cid]) for cid in candidates
            )
            orphan_epochs = dict(zip(candidates, epochs, strict=True))
        kept = await quarantined_ids(self.backend)

        def plan(store_now: float | None) -> list[int]:
            return orphans_to_delete(
                entries,
                now=store_now,
                grace_seconds=grace,
                fence_epoch=fence,
                orphan_epochs=orphan_epochs,
                kept=kept,
            )

        doomed = plan(None)
        store_now: float | None = None
        if age_matters(entries, {*doomed, *kept}):
            store_now = await self._store_now(entries, writes=writes)
            doomed = plan(store_now)
        return entries, doomed, store_now

    async def _store_now(
        self, entries: dict[int, CheckpointEntry], *, writes: bool
    ) -> float | None:
        """The store's time: the injected ``store_clock``, else a marker's mtime, or without
        ``writes`` the newest mtime in ``entries`` (a lower bound)."""
        if self._store_clock is not None:
            return await self._store_clock()
        if writes:
            return await read_store_clock(self.backend)
        return max((e.newest_mtime for e in entries.values() if e.newest_mtime), default=None)

    async def _orphan_epoch(
        self, checkpoint_id: int, entry: CheckpointEntry | None = None
    ) -> int | None:
        """The epoch in an orphan's sidecar header (one ranged read); ``None`` if none. An
        orphan without ``state.bin`` but with parts (a parallel checkpoint not committed
        yet) is judged by the header of one of its parts, which carries its writer's epoch
        just as ``state.bin`` does."""
        key = state_key(checkpoint_id)
        if entry is not None and entry.state is None:
            part = next((info.key for info in entry.others if is_part_key(info.key)), None)
            if part is not None:
                key = part
        try:
            header = await self.backend.get_range(key, 0, HEADER.size)
        except NotFoundError:
            return None
        return read_header_epoch(header)

    async def cleanup_orphans(
        self, grace_seconds: float | None = None, *, dry_run: bool = False
    ) -> CleanupResult:
        """Delete sidecars and directories that have no manifest and that no live writer can
        still commit: older than the grace period, or below the newest commit and written by
        an epoch older than ``latest.txt``'s fence epoch (their writer is fenced; a newer
        epoch's commit alone fences nobody until its save moved the pointer). Returns what
        it saw, planned and deleted (:class:`~objstore.checkpoint.CleanupResult`).

        A ``dry_run`` writes nothing, so ages are judged against the newest mtime listed (a
        lower bound of the store's time): it may plan fewer ids than a real run deletes,
        never more.

        Race-free against a save still committing the orphan: before deleting anything the
        janitor claims the id's commit slot itself, creating ``manifest.json`` create-if-
        absent as a *tombstone* (an aborted id, which readers treat as no checkpoint). The
        store lets exactly one of the two creates win. If the saver's manifest won, the
        janitor's create fails and it deletes nothing; if the tombstone won, the saver's
        create fails (a :class:`~objstore.errors.CheckpointConflict` saying so) and nothing
        can ever commit that id, so its state is garbage. The ages and epochs only choose
        *which* orphans to claim; no timing argument is needed for safety, however long a
        saver's create is delayed.

        Also finishes tombstoned directories a crashed janitor left with objects besides the
        tombstone, and deletes tombstones whose writer is fenced
        (:func:`~objstore.checkpoint._plan.tombstones_to_collect`); those are not counted.
        """
        grace = self.orphan_grace_seconds if grace_seconds is None else grace_seconds
        entries, doomed, store_now = await self._plan_orphans(grace, writes=not dry_run)
        planned = set(doomed)
        orphans = tuple(
            Orphan(
                cid,
                sum(info.size for info in (entry.state, *entry.others) if info is not None),
                entry.newest_mtime,
                cid in planned,
            )
            for cid, entry in sorted(entries.items())
            if not entry.committed
        )
        if dry_run:
            return CleanupResult(grace, orphans, tuple(doomed), (), store_now, dry_run)
        deleted: list[int] = []
        for checkpoint_id in doomed:
            epoch = await self._orphan_epoch(checkpoint_id, entries[checkpoint_id])
            try:
                await self.backend.put_if_absent(
                    manifest_key(checkpoint_id), encode_tombstone(checkpoint_id, epoch)
                )
            except AlreadyExistsError:
                continue  # committed since the listing (or claimed by another janitor)
            for info in entries[checkpoint_id].objects:
                await self.backend.delete(info.key)
            deleted.append(checkpoint_id)
        await self._tidy_tombstones(entries)
        return CleanupResult(grace, orphans, tuple(doomed), tuple(deleted), store_now, dry_run)

    async def _tidy_tombstones(self, entries: dict[int, CheckpointEntry]) -> None:
        """Delete what remains beside a tombstone (an interrupted cleanup's garbage: the id
        is claimed, so nothing there can ever be committed), then collect the tombstones
        whose writers are fenced, each only if unchanged since it was read."""
        aborted = [cid for cid, entry in entries.items() if entry.aborted]
        if not aborted:
            return
        for checkpoint_id in aborted:
            entry = entries[checkpoint_id]
            for leftover in [entry.state, *entry.others]:
                if leftover is not None:
                    await self.backend.delete(leftover.key)
        for checkpoint_id in tombstones_to_collect(entries, await self._fence_epoch()):
            key = manifest_key(checkpoint_id)
            info = entries[checkpoint_id].manifest
            version = info.version if info is not None else None
            if version is None:
                version = (await self.backend.head(key)).version
            with contextlib.suppress(PreconditionFailedError, NotFoundError):
                await self.backend.delete(key, version)

    async def close(self) -> None:
        """Close the backend's connections."""
        await self.backend.close()

    async def list(self) -> list[tuple[int, int]]:
        """``(id, epoch)`` of every checkpoint whose manifest is readable, ascending."""
        ids = await self.list_ids()
        manifests = await _gather_bounded(self._try_load(cid) for cid in ids)
        return [(m.checkpoint_id, m.epoch) for m in manifests if m is not None]


def _best(
    choice: LatestChoice, manifests: Iterable[CheckpointManifest | None]
) -> CheckpointManifest | None:
    """Offer ``manifests`` (descending ids) to ``choice``; the last one it took, if any."""
    best = None
    for manifest in manifests:
        if manifest is None:
            continue
        if choice.excluded(manifest.checkpoint_id, manifest.epoch) is None:
            choice.take(manifest.checkpoint_id, manifest.epoch)
            best = manifest
    return best


async def _until_settled(
    listing: Callable[[], Awaitable[dict[int, CheckpointEntry]]],
    walk: Callable[[dict[int, CheckpointEntry]], Awaitable[_T]],
    found_nothing: Callable[[_T], bool],
) -> _T:
    """``walk`` over a listing; when it found nothing although the listing had committed
    checkpoints, list again and walk again while the committed ids changed in between (a
    concurrent prune removed what was listed while a newer checkpoint committed). "Nothing"
    stands only when a listing taken *after* the walk names the same committed ids, so a
    reader never reports a fresh start from a listing that was out of date.

    Raises:
        TransientStorageError: :data:`RELIST_ATTEMPTS` listings in a row did not settle.
    """
    entries = await listing()
    for _ in range(RELIST_ATTEMPTS):
        result = await walk(entries)
        committed = {cid for cid, entry in entries.items() if entry.committed}
        if not found_nothing(result) or not committed:
            return result
        entries = await listing()
        if {cid for cid, entry in entries.items() if entry.committed} == committed:
            return result
    raise TransientStorageError(
        f"checkpoints kept vanishing while reading {CHECKPOINTS}/ ({RELIST_ATTEMPTS} listings; "
        "a prune or gc is running?): retry"
    )


def _by_name(checkpoint_id: int, chunks: Iterable[tuple[str | None, bytes]]) -> dict[str, bytes]:
    """Chunks by name, an unnamed one by its position (``load_state``'s rule).

    Raises:
        ValueError: an unnamed chunk's position equals another chunk's name.
    """
    listed = list(chunks)
    names = {name for name, _ in listed if name is not None}
    result: dict[str, bytes] = {}
    for position, (name, data) in enumerate(listed):
        key = str(position) if name is None else name
        if key in result or (name is None and key in names):
            raise ValueError(
                f"checkpoint {checkpoint_id}: unnamed chunk {position} and a chunk named "
                f"{key!r} collide; read them with load_operator_state"
            )
        result[key] = data
    return result


def _check_manifest(manifest: object) -> None:
    if not isinstance(manifest, CheckpointManifest):
        raise TypeError(f"expected a CheckpointManifest, not {type(manifest).__name__}")


class CheckpointStore(StoreFacade[AsyncCheckpointStore]):
    """The blocking face of :class:`AsyncCheckpointStore`: same arguments and methods.

    ``with CheckpointStore(url) as store:`` closes the store when the block ends.
    """

    def __init__(
        self,
        url_or_backend: StoreLocation,
        *,
        storage_options: dict[str, Any] | None = None,
        verify_fencing: bool = True,
        request_hook: RequestHook | None = None,
        max_retained: int | None = None,
        vnode_count: int = 256,
        compression_level: int = 3,
        orphan_grace_seconds: float = 3600.0,
        chunks_in_flight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        store_clock: StoreClock | None = None,
        single_put_limit: int = SINGLE_PUT_LIMIT,
        streamed_validation_threshold: int = STREAMED_VALIDATION_THRESHOLD,
        range_size: int = RANGE_SIZE,
    ) -> None:
        super().__init__(
            AsyncCheckpointStore(
                url_or_backend,
                storage_options=storage_options,
                verify_fencing=verify_fencing,
                request_hook=request_hook,
                max_retained=max_retained,
                vnode_count=vnode_count,
                compression_level=compression_level,
                orphan_grace_seconds=orphan_grace_seconds,
                chunks_in_flight=chunks_in_flight,
                clock=clock,
                store_clock=store_clock,
                single_put_limit=single_put_limit,
                streamed_validation_threshold=streamed_validation_threshold,
                range_size=range_size,
            )
        )

    @property
    def vnode_count(self) -> int:
        """The vnode count this store's manifests are expected to use."""
        return self._async.vnode_count

    save = blocking(AsyncCheckpointStore.save)
    save_with_state = blocking(AsyncCheckpointStore.save_with_state)
    save_state_data = blocking(AsyncCheckpointStore.save_state_data)
    save_incremental = blocking(AsyncCheckpointStore.save_incremental)
    collect_shared = blocking(AsyncCheckpointStore.collect_shared)
    claim_epoch = blocking(AsyncCheckpointStore.claim_epoch)
    load_part = blocking(AsyncCheckpointStore.load_part)
    load_part_frame = blocking(AsyncCheckpointStore.load_part_frame)

    def begin_parallel(
        self,
        checkpoint_id: int,
        epoch: int,
        parts: Mapping[str, tuple[int, int] | None] | Iterable[str | tuple[str, Any]],
    ) -> ParallelJob:
        """Blocking :meth:`AsyncCheckpointStore.begin_parallel`; the job's ``commit`` blocks
        too.

        Raises:
            FencedError: a newer epoch has been claimed.
            ValueError: no parts, a duplicate or bad part name, or a bad key-group range.
            TypeError: a part is neither a name nor a ``(name, range)`` pair.
        """  # noqa: DOC502 - raised by the async method, run here
        return ParallelJob(run_sync(self._async.begin_parallel(checkpoint_id, epoch, parts)))

    load_latest = blocking(AsyncCheckpointStore.load_latest)
    load_by_id = blocking(AsyncCheckpointStore.load_by_id)
    list = blocking(AsyncCheckpointStore.list)
    list_ids = blocking(AsyncCheckpointStore.list_ids)
    next_checkpoint_id = blocking(AsyncCheckpointStore.next_checkpoint_id)
    load_state_data = blocking(AsyncCheckpointStore.load_state_data)
    load_state = blocking(AsyncCheckpointStore.load_state)
    load_operator_state = blocking(AsyncCheckpointStore.load_operator_state)
    update_manifest = blocking(AsyncCheckpointStore.update_manifest)
    validate_checkpoint = blocking(AsyncCheckpointStore.validate_checkpoint)
    recover_latest_validated = blocking(AsyncCheckpointStore.recover_latest_validated)
    newest_valid_id = blocking(AsyncCheckpointStore.newest_valid_id)
    prune = blocking(AsyncCheckpointStore.prune)
    plan_prune = blocking(AsyncCheckpointStore.plan_prune)
    cleanup_orphans = blocking(AsyncCheckpointStore.cleanup_orphans)
    plan_cleanup_orphans = blocking(AsyncCheckpointStore.plan_cleanup_orphans)
    close = blocking(AsyncCheckpointStore.close)
