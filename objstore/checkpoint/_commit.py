"""The commit protocol of :class:`~objstore.checkpoint.AsyncCheckpointStore` (DESIGN §3).

What happens behind ``save``, ``save_with_state``, ``save_state_data`` and ``claim_epoch``:
the sidecar written under create-if-absent, the manifest committed under create-if-absent,
a late or fenced commit withdrawn, ``latest.txt`` advanced by compare-and-swap (re-created
from the listing if lost, never below a newer committed epoch). :class:`CommitProtocol`
holds no state of its own: it reads and updates its store's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from objstore.checkpoint._clock import commit_too_late, staged_too_long
from objstore.checkpoint._conflicts import id_taken
from objstore.checkpoint._layout import (
    CHECKPOINTS,
    checkpoint_dir,
    manifest_key,
    pointer_text,
    state_key,
)
from objstore.checkpoint._manifest import (
    AbortedCheckpoint,
    CheckpointManifest,
    StoredManifest,
    encode_manifest,
)
from objstore.checkpoint._plan import scan
from objstore.checkpoint._pointer import (
    Pointer,
    at_or_past,
    classify_pointer,
    moved_text,
    swap_pointer,
)
from objstore.checkpoint._reads import read_manifest
from objstore.checkpoint._sidecar import (
    HEADER,
    EncodedState,
    SidecarEncoder,
    read_header_epoch,
    read_header_nonce,
)
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    FencedError,
    NotFoundError,
    ObjstoreError,
    PreconditionFailedError,
    TransientStorageError,
)

if TYPE_CHECKING:
    from objstore.checkpoint._store import AsyncCheckpointStore

__all__ = ["CommitProtocol", "Landed", "UPDATE_ATTEMPTS"]

logger = logging.getLogger(__name__)

UPDATE_ATTEMPTS = 100
"""Compare-and-swaps ``AsyncCheckpointStore.update_manifest`` tries before giving up."""


@dataclass(frozen=True, slots=True)
class Landed:
    """A commit this store object made in an earlier call: its manifest and version."""

    stored: StoredManifest
    version: str


def _same_commit(
    stored: CheckpointManifest, requested: CheckpointManifest, *, compare_state: bool
) -> bool:
    """Whether a commit found is the one requested again: equal but for the timestamp, what
    :meth:`~AsyncCheckpointStore.update_manifest` may have changed since (sink statuses and
    epochs, watermark, metadata) and, unless ``compare_state``, the state fields."""
    ignored: dict[str, Any] = {
        "timestamp_ms": 0,
        "sink_commit_statuses": {},
        "sink_epochs": {},
        "watermark": None,
        "metadata": {},
    }
    if not compare_state:
        ignored.update(operator_states=(), state_checksum=None, state_size=None)
        if _all_shared(stored) and _all_shared(requested):
            # An incremental save's frames (shared keys drawn fresh per attempt) are its state.
            ignored["parts"] = ()
    return dataclasses.replace(stored, **ignored) == dataclasses.replace(requested, **ignored)


def _all_shared(manifest: CheckpointManifest) -> bool:
    """Whether every part of ``manifest`` lives in shared objects (an incremental save)."""
    return bool(manifest.parts) and all(part.key is None for part in manifest.parts)


class CommitProtocol:
    """The private steps of a save of ``store``; the store's public methods call them."""

    def __init__(self, store: AsyncCheckpointStore) -> None:
        self.store = store

    async def write_sidecar(
        self, manifest: CheckpointManifest, chunks: Any
    ) -> tuple[EncodedState, str, str] | Landed:
        """Write ``state.bin`` create-if-absent while its frames are being compressed.

        Frames are gathered until the sidecar outgrows the single-PUT limit: a small
        sidecar is one retried PUT; a larger one is handed over as a stream, so memory stays
        bounded by the encoder's window plus what the transport holds in flight. A sidecar
        already there that this store object wrote is its own earlier attempt: see
        :meth:`own_sidecar`.

        Another writer's sidecar holding the id raises ``CheckpointConflict`` (built by
        :meth:`conflict`).

        Raises:
            TransientStorageError: a streamed sidecar met this store object's own
                unconfirmed earlier one, which was removed; the stream is consumed.
        """
        started = self.store._clock()  # before any request: no later than the sidecar's mtime
        encoder = SidecarEncoder(
            manifest.checkpoint_id,
            manifest.epoch,
            self.store._writer_nonce,
            level=self.store.compression_level,
            window=self.store.chunks_in_flight,
        )
        key = state_key(manifest.checkpoint_id)
        limit = min(self.store.single_put_limit, self.store.backend.transport.single_put_limit)
        pieces = encoder.pieces(chunks)
        head: collections.deque[bytes] = collections.deque()
        head_size = 0
        try:
            async for piece in pieces:
                head.append(piece)
                head_size += len(piece)
                if head_size > limit:
                    break
            if head_size <= limit:
                data = head[0] if len(head) == 1 else b"".join(head)
                head.clear()
                try:
                    version = await self.store.backend.put_if_absent(key, data)
                except AlreadyExistsError as exc:
                    landed = await self.own_sidecar(manifest, exc)
                    if landed is not None:
                        return landed
                    version = await self.store.backend.put_if_absent(key, data)
            else:
                if manifest.checkpoint_id in self.store._stream_unconfirmed:
                    # An earlier streamed attempt may have landed: a stream cannot be sent
                    # twice, so settle that first (ours and committed, or removed).
                    landed = await self.own_sidecar(manifest, AlreadyExistsError(key))
                    if landed is not None:
                        return landed
                    self.store._stream_unconfirmed.discard(manifest.checkpoint_id)
                try:
                    version = await self.store.backend.put_if_absent_stream(
                        key, _chain(head, pieces)
                    )
                except AlreadyExistsError as exc:
                    landed = await self.own_sidecar(manifest, exc)
                    if landed is not None:
                        return landed
                    raise TransientStorageError(
                        f"{key}: removed this store object's own unconfirmed sidecar of an "
                        "earlier attempt; the streamed state was consumed, retry the save"
                    ) from exc
                except Exception:
                    self.store._stream_unconfirmed.add(manifest.checkpoint_id)
                    raise
        except AlreadyExistsError as exc:
            raise await self.conflict(manifest, exc, what="state.bin") from exc
        finally:
            await pieces.aclose()  # cancels compressions still in flight after a failure
        self.store._unconfirmed.pop(manifest.checkpoint_id, None)
        self.store._state_withdrawn.discard(manifest.checkpoint_id)
        self.store._sidecar_started[manifest.checkpoint_id] = started
        return encoder.result(), self.store._writer_nonce.hex(), version

    async def own_sidecar(
        self, manifest: CheckpointManifest, cause: AlreadyExistsError
    ) -> Landed | None:
        """Decide about a ``state.bin`` found in place of ours.

        Another writer's raises the conflict. This store object's own (an earlier attempt
        whose outcome was unknown): if our manifest was committed with it, that commit is
        returned to be completed; if nothing was committed, the stale sidecar is deleted
        (``None``: write again); if another writer committed the id, ours is deleted and the
        conflict raised.
        """
        checkpoint_id = manifest.checkpoint_id
        key = state_key(checkpoint_id)
        try:
            header = await self.store.backend.get_range(key, 0, HEADER.size)
        except NotFoundError:
            return None  # gone since (a janitor): write it again
        if read_header_nonce(header) != self.store._writer_nonce:
            raise await self.conflict(manifest, cause, what="state.bin") from cause
        landed = await self.own_commit(checkpoint_id)
        if landed is not None:
            return landed
        version = self.store._unconfirmed.pop(checkpoint_id, None)
        if version is None:
            version = (await self.store.backend.head(key)).version
        self.store._staged.pop(checkpoint_id, None)
        with contextlib.suppress(PreconditionFailedError):
            await self.store.backend.delete(key, version)
        if await self.store.backend.exists(manifest_key(checkpoint_id)):
            raise await self.conflict(manifest, cause, what="manifest.json") from cause
        return None

    async def own_commit(self, checkpoint_id: int) -> Landed | None:
        """The manifest of ``checkpoint_id`` if this store object committed it (its writer
        nonce), with its version; ``None`` if it is missing, unreadable or another's."""
        try:
            _, version, stored = await read_manifest(self.store.backend, checkpoint_id)
        except (NotFoundError, CorruptionError):
            return None
        if stored.writer_nonce != self.store._writer_nonce.hex():
            return None
        return Landed(stored, version)

    async def commit(
        self,
        manifest: CheckpointManifest,
        encoded: EncodedState | None,
        nonce: str | None,
        state_version: str | None,
    ) -> CheckpointManifest:
        final = dataclasses.replace(
            manifest,
            operator_states=encoded.entries if encoded else (),
            state_checksum=encoded.checksum if encoded else None,
            state_size=encoded.size if encoded else None,
        )
        stored = StoredManifest(final, self.store._writer_nonce.hex(), nonce, revision=0)
        key = manifest_key(manifest.checkpoint_id)
        started = self.store._sidecar_started.get(manifest.checkpoint_id)
        if started is not None and state_version is not None:
            await self.refuse_if_staged_too_long(manifest.checkpoint_id, started, state_version)
        try:
            manifest_version = await self.store.backend.put_if_absent(key, encode_manifest(stored))
        except AlreadyExistsError as exc:
            landed = await self.own_commit(manifest.checkpoint_id)
            if landed is not None:  # our own earlier attempt committed it: complete that
                return await self.complete(
                    final, landed, state_version, compare_state=encoded is not None
                )
            if state_version is not None:
                # Our own sidecar lost to another writer's commit; it is garbage, and only ours.
                # Withdrawn first: if the delete fails (or the other commit is withdrawn), a
                # retried save must not commit a manifest whose state may be gone.
                self.store._withdrawn(manifest.checkpoint_id)
                with contextlib.suppress(PreconditionFailedError):
                    await self.store.backend.delete(
                        state_key(manifest.checkpoint_id), state_version
                    )
            raise await self.conflict(manifest, exc, what="manifest.json") from exc
        if started is not None and state_version is not None:
            await self.withdraw_if_late(
                manifest.checkpoint_id, started, manifest_version, state_version
            )
            self.store._timely.add(manifest.checkpoint_id)
        return await self.finish(final, manifest_version, state_version)

    async def complete(
        self,
        requested: CheckpointManifest,
        landed: Landed,
        state_version: str | None,
        *,
        compare_state: bool,
    ) -> CheckpointManifest:
        """Finish a commit an earlier attempt of this store object made, if it is the one
        asked for now (see :func:`_same_commit`). Like a first attempt, a commit that may
        have landed too late for its sidecar is withdrawn instead (``PreconditionFailedError``
        from the lateness check; see ``_clock``).

        Raises:
            CheckpointConflict: the landed commit differs from the one asked for; nothing
                is changed (built by ``id_taken``).
        """  # noqa: DOC501, DOC502 - raised through the id_taken factory, which ruff names instead
        stored = landed.stored.manifest
        if not _same_commit(stored, requested, compare_state=compare_state):
            raise id_taken(
                stored.checkpoint_id,
                f"checkpoint {stored.checkpoint_id} was already committed by this store object "
                "with a different manifest; it is kept as it is",
                epoch=requested.epoch,
                winner_epoch=stored.epoch,
            )
        checkpoint_id = stored.checkpoint_id
        started = self.store._sidecar_started.get(checkpoint_id)
        if (
            state_version is not None
            and checkpoint_id not in self.store._timely
            and not await self.adopted_and_whole(checkpoint_id, state_version)
        ):
            # When the earlier create landed is unknown; now bounds it from above.
            if started is None:
                started = -float("inf")
            await self.withdraw_if_late(checkpoint_id, started, landed.version, state_version)
        logger.info("completing checkpoint %d of an earlier attempt", checkpoint_id)
        return await self.finish(stored, landed.version, state_version)

    async def finish(
        self, final: CheckpointManifest, manifest_version: str, state_version: str | None
    ) -> CheckpointManifest:
        """After the commit point: move the pointer (where fencing is decided), then prune.

        A prune failure is logged, never reported: the save has committed and returned it.
        """
        newer = await self.advance_pointer(final.checkpoint_id, final.epoch)
        if newer is not None:
            raise await self.retract(final, manifest_version, state_version, newer)
        if self.store.max_retained is not None:
            try:
                await self.store._prune(self.store.max_retained, known_valid=final)
            except (ObjstoreError, OSError) as exc:
                logger.warning(
                    "checkpoint %d committed; pruning failed (the next save retries): %s",
                    final.checkpoint_id,
                    exc,
                )
        return final

    async def refuse_if_staged_too_long(
        self, checkpoint_id: int, started: float, state_version: str
    ) -> None:
        """Refuse to commit a sidecar that a janitor may be about to delete (its write began
        half the grace period ago or more): delete it, so the id can be staged again. Why
        this keeps a returned save whole: :mod:`objstore.checkpoint._clock`.

        Raises:
            PreconditionFailedError: the sidecar's write began half the grace period ago or
                more.
        """
        elapsed = self.store._clock() - started
        if not staged_too_long(elapsed, self.store.orphan_grace_seconds):
            return
        if await self.store.backend.exists(manifest_key(checkpoint_id)):
            # Committed already: by an earlier attempt of this save (no janitor takes a
            # committed sidecar, and the commit path recognises its own) or by another
            # writer (the create below conflicts). Either way the sidecar is not ours to drop.
            return
        with contextlib.suppress(PreconditionFailedError):
            await self.store.backend.delete(state_key(checkpoint_id), state_version)
        self.store._withdrawn(checkpoint_id)
        raise PreconditionFailedError(
            state_key(checkpoint_id),
            f"checkpoint {checkpoint_id}: its state was written {elapsed:.0f} s ago, at least "
            f"half the orphan grace period ({self.store.orphan_grace_seconds:.0f} s), so a janitor "
            "may delete it; nothing was committed: stage the state again and save",
        )

    async def withdraw_if_late(
        self, checkpoint_id: int, started: float, manifest_version: str, state_version: str
    ) -> None:
        """After the manifest landed: if it landed so long after the sidecar's write began
        that a janitor may have deleted the sidecar, withdraw our manifest, then our sidecar
        (each only if still ours).

        Raises:
            PreconditionFailedError: the commit landed too late and was withdrawn.
        """
        elapsed = self.store._clock() - started
        if not commit_too_late(elapsed, self.store.orphan_grace_seconds):
            return
        try:
            await self.store.backend.delete(manifest_key(checkpoint_id), manifest_version)
            await self.store.backend.delete(state_key(checkpoint_id), state_version)
        except PreconditionFailedError as exc:
            if await self.adopted_and_whole(checkpoint_id, state_version):
                logger.info("late checkpoint %d was adopted by a sink update: kept", checkpoint_id)
                return
            logger.warning("could not withdraw late checkpoint %d: %s", checkpoint_id, exc)
        except TransientStorageError as exc:
            logger.warning("could not withdraw late checkpoint %d: %s", checkpoint_id, exc)
        self.store._withdrawn(checkpoint_id)
        raise PreconditionFailedError(
            manifest_key(checkpoint_id),
            f"checkpoint {checkpoint_id}: the manifest landed {elapsed:.0f} s after its state "
            f"was written (orphan grace {self.store.orphan_grace_seconds:.0f} s), so a janitor may "
            "have deleted the state; the commit was withdrawn: stage the state again and save",
        )

    async def adopted_and_whole(self, checkpoint_id: int, state_version: str) -> bool:
        """Whether our late commit of ``checkpoint_id`` must stand instead of being withdrawn:
        a sink update made a new revision of it (a reader restored it and committed a sink,
        which a withdrawal would undo) and its sidecar is still the one we wrote (one GET of
        the manifest, one HEAD of the sidecar)."""
        landed = await self.own_commit(checkpoint_id)
        if landed is None or landed.stored.revision == 0:
            return False
        try:
            info = await self.store.backend.head(state_key(checkpoint_id))
        except NotFoundError:
            return False
        return info.version is None or info.version == state_version

    async def delete_own_manifest(self, checkpoint_id: int, version: str) -> bool:
        """Delete the manifest of ``checkpoint_id`` this store object committed (found at
        ``version``), following sink updates made since (a new revision keeps our writer
        nonce): whether it was deleted. ``False`` if it is gone or another writer's now.

        Raises:
            PreconditionFailedError: it kept changing under sink updates.
        """
        key = manifest_key(checkpoint_id)
        for _ in range(UPDATE_ATTEMPTS):
            try:
                await self.store.backend.delete(key, version)
                return True
            except NotFoundError:
                return False
            except PreconditionFailedError:
                landed = await self.own_commit(checkpoint_id)
                if landed is None:
                    return False
                version = landed.version
        raise PreconditionFailedError(key, "keeps changing under sink updates")

    async def conflict(
        self, manifest: CheckpointManifest, cause: Exception, *, what: str
    ) -> CheckpointConflict:
        """The error for not getting ``manifest.checkpoint_id``: :class:`FencedError` if the
        occupant's epoch or the claimed epoch is newer than ours; a plain conflict naming the
        occupant's epoch if it is ours; one naming no winner (``winner_epoch=None``) if the
        occupant is of an older epoch, which never wins over a newer one (its writer is
        fenced at its pointer move) but holds the id."""
        winner_epoch: int | None = None
        detail = None
        try:
            _, _, occupant = await read_manifest(
                self.store.backend, manifest.checkpoint_id, check_id=False
            )
            winner_epoch = occupant.manifest.epoch
        except AbortedCheckpoint:
            detail = (
                f"checkpoint {manifest.checkpoint_id} was aborted: its staged state was "
                "collected as an orphan before the manifest landed (a janitor's tombstone "
                "holds the id). Nothing was committed and the id stays taken: stage the "
                "state again under a new id (next_checkpoint_id) and save"
            )
        except (NotFoundError, CorruptionError):
            # Not committed (yet): the sidecar's header names the epoch of its writer.
            try:
                header = await self.store.backend.get_range(
                    state_key(manifest.checkpoint_id), 0, HEADER.size
                )
                winner_epoch = read_header_epoch(header)
            except NotFoundError:
                pass
            detail = (
                f"checkpoint {manifest.checkpoint_id}: {what} already exists without a "
                f"readable manifest (an in-flight writer of epoch {winner_epoch}, or an orphan; "
                "see next_checkpoint_id and cleanup_orphans)"
            )
        if winner_epoch is None or winner_epoch <= manifest.epoch:
            # An older or equal winner, yet we may be fenced all the same (a claim): say so.
            fence = await self.store._fence_epoch()
            if fence is not None and fence > manifest.epoch:
                return id_taken(
                    manifest.checkpoint_id,
                    f"checkpoint {manifest.checkpoint_id}: {what} already exists, and epoch "
                    f"{fence} has been claimed (ours is {manifest.epoch})",
                    epoch=manifest.epoch,
                    winner_epoch=fence,
                    newer_fences=True,
                )
        if winner_epoch is not None and winner_epoch < manifest.epoch:
            # A newer epoch never loses to an older one: the id is merely occupied (by an
            # older checkpoint, which ours outranks anyway, or by a writer that is fenced at
            # its pointer move and withdraws what it wrote).
            return id_taken(
                manifest.checkpoint_id,
                f"checkpoint {manifest.checkpoint_id}: {what} is occupied by the older epoch "
                f"{winner_epoch}, which never outranks epoch {manifest.epoch}; nothing was "
                "written: save under another id (next_checkpoint_id)",
                epoch=manifest.epoch,
                winner_epoch=None,
            )
        return id_taken(
            manifest.checkpoint_id,
            detail,
            epoch=manifest.epoch,
            winner_epoch=winner_epoch,
            newer_fences=True,
        )

    async def advance_pointer(self, checkpoint_id: int, epoch: int) -> tuple[int, int] | None:
        """Move ``latest.txt`` forward to ``(epoch, checkpoint_id)`` by CAS; never backward.

        This is where a save learns it is fenced: the pointer carries the newest claimed
        epoch, and a pointer whose fence epoch is newer than ``epoch`` is left alone and
        ``(its checkpoint id, its fence epoch)`` returned. A compare-and-swap from the version
        this store object remembers proves that nobody (no claim) moved the pointer since,
        so while it is the only writer a save costs this one write and no read.

        "Nothing to move" is decided only from a pointer read in this call: a remembered
        pointer at or past ``(epoch, checkpoint_id)`` may have been fenced since (a claim
        does not change what this store object remembers), so an out-of-order save costs
        one GET. A pointer that is missing or garbage is re-created only after the listing
        showed that no newer epoch committed (:meth:`recreate_pointer`): the fence is
        never lowered below what a reader would restore.
        """
        while True:
            current = self.store._pointer
            remembered = current is not None
            if current is None:
                current = await self.store._read_pointer()
            record = await self.store._pointer_record(current)
            fence = record.fence_epoch if record is not None else None
            if record is not None and fence is not None and fence > epoch:
                self.store._pointer = None
                return record.checkpoint_id or 0, fence
            if at_or_past(record, epoch, checkpoint_id):
                if remembered:
                    self.store._pointer = None  # read it: only what is stored now may say so
                    continue
                self.store._pointer = current
                return None
            if record is None:
                newer, moved = await self.recreate_pointer(current, checkpoint_id, epoch)
                if not moved:
                    continue
                return newer
            rank = record.rank if record is not None else None
            text = moved_text(checkpoint_id, epoch, fence)
            version = await swap_pointer(self.store.backend, current.version, text)
            if version is None:
                self.store._pointer = None
                continue
            self.store._pointer = classify_pointer(text, version)
            if rank is not None and rank[0] == epoch and checkpoint_id > rank[1] + 1:
                newer = await self.newer_epoch_between(rank[1], checkpoint_id, epoch)
                if newer is not None:
                    await self.hand_pointer_to(newer, version)
                return newer
            return None

    async def recreate_pointer(
        self, current: Pointer, checkpoint_id: int, epoch: int
    ) -> tuple[tuple[int, int] | None, bool]:
        """Re-create a missing or garbage ``latest.txt`` (still at ``current``) for a save
        of ``(epoch, checkpoint_id)``, whose manifest has landed.

        The fence lived in the pointer, so it is taken again from what readers would
        restore (the listing's best committed checkpoint, ``load_latest``'s fallback):
        the pointer names the better of that and ours, and its fence epoch is the newer of
        the two epochs. Returns ``(newer, moved)``: ``newer`` is ``(id, epoch)`` of a newer
        epoch's commit that fences this save (the pointer then names it), ``moved`` whether
        our compare-and-swap won (``False``: another writer moved it first; read again).
        Costs one listing plus one GET per committed manifest walked.
        """
        best = await self.store._latest_after(None)
        if best is not None and (best.epoch, best.checkpoint_id) > (epoch, checkpoint_id):
            named, named_epoch = best.checkpoint_id, best.epoch
        else:
            named, named_epoch = checkpoint_id, epoch
        text = pointer_text(named, named_epoch, max(named_epoch, epoch))
        version = await swap_pointer(self.store.backend, current.version, text)
        if version is None:
            self.store._pointer = None
            return None, False
        self.store._pointer = classify_pointer(text, version)
        logger.warning(
            "latest.txt was %s; re-created naming checkpoint %d of epoch %d",
            current.state,
            named,
            named_epoch,
        )
        if named_epoch > epoch:
            return (named, named_epoch), True
        return await self.newer_since_recreated(version, epoch), True

    async def newer_since_recreated(self, version: str, epoch: int) -> tuple[int, int] | None:
        """After ``latest.txt`` was re-created from nothing (now at ``version``) for
        ``epoch``: a commit of a newer epoch, as ``(id, epoch)``, that the listing taken
        before the create may have missed (its save returned, and the pointer it moved was
        lost, in between); the pointer is then handed to it. ``None`` if there is none.
        One more listing walk, paid only when the pointer was re-created."""
        best = await self.store._latest_after(None)
        if best is None or best.epoch <= epoch:
            return None
        newer = (best.checkpoint_id, best.epoch)
        await self.hand_pointer_to(newer, version)
        return newer

    async def newer_epoch_between(self, low: int, high: int, epoch: int) -> tuple[int, int] | None:
        """A checkpoint committed with an id in ``(low, high)`` by a newer epoch than
        ``epoch``, as ``(id, epoch)``; ``None`` if there is none.

        Checked when a pointer move skipped ids: another writer may have committed one of
        them without having moved the pointer yet, and if its epoch is newer, we are the
        zombie even though our compare-and-swap succeeded.
        """
        after = await self.store.backend.list_after(CHECKPOINTS, checkpoint_dir(low) + "/~", 1000)
        skipped = sorted(
            cid for cid, entry in scan(after).items() if entry.committed and low < cid < high
        )
        for checkpoint_id in skipped:
            other_epoch = await self.store._epoch_of(checkpoint_id)
            if other_epoch is not None and other_epoch > epoch:
                return checkpoint_id, other_epoch
        return None

    async def hand_pointer_to(self, newer: tuple[int, int], version: str) -> None:
        """Point ``latest.txt`` (still at ``version``, ours) at the newer epoch's commit we
        found, a move forward in (epoch, id) order, so withdrawing ours leaves no dangling
        pointer. Best effort: if the pointer moved meanwhile, its mover knew better."""
        newer_id, newer_epoch = newer
        self.store._pointer = None
        await swap_pointer(
            self.store.backend, version, pointer_text(newer_id, newer_epoch, newer_epoch)
        )

    async def retract(
        self,
        manifest: CheckpointManifest,
        manifest_version: str,
        state_version: str | None,
        newer: tuple[int, int],
    ) -> FencedError:
        """Withdraw a commit made by a writer that a newer epoch has replaced (a zombie):
        delete our own manifest, then, only if that worked, our sidecar (each only if still
        ours). A failure to withdraw is logged; the zombie is told it is fenced either way."""
        try:
            withdrawn = await self.delete_own_manifest(manifest.checkpoint_id, manifest_version)
            if withdrawn and state_version is not None:
                await self.store.backend.delete(state_key(manifest.checkpoint_id), state_version)
        except (PreconditionFailedError, TransientStorageError) as exc:
            logger.warning(
                "fenced writer could not withdraw checkpoint %d: %s", manifest.checkpoint_id, exc
            )
        newer_id, newer_epoch = newer
        return FencedError(
            manifest_key(manifest.checkpoint_id),
            f"checkpoint {manifest.checkpoint_id} of epoch {manifest.epoch} was withdrawn: "
            f"epoch {newer_epoch} is newer (latest.txt or checkpoint {newer_id})",
            checkpoint_id=manifest.checkpoint_id,
            epoch=manifest.epoch,
            winner_epoch=newer_epoch,
        )

    # -- loading -------------------------------------------------------------------------------


async def _chain(head: collections.deque[bytes], rest: Any) -> Any:
    """``head``'s pieces, then ``rest``'s; each head piece is let go once handed over."""
    while head:
        yield head.popleft()
    async for piece in rest:
        yield piece
