"""The one place a checkpoint id's conflict errors are built (store, saves and copies)."""

from __future__ import annotations

from objstore.checkpoint._layout import manifest_key
from objstore.errors import CheckpointConflict, FencedError

__all__ = ["id_taken"]


def id_taken(
    checkpoint_id: int,
    detail: str | None,
    *,
    epoch: int,
    winner_epoch: int | None,
    newer_fences: bool = False,
) -> CheckpointConflict:
    """The error for a write of ``checkpoint_id`` by ``epoch`` that found the id taken by a
    commit of ``winner_epoch`` (``None``: unknown, or one that never outranks ours), keyed
    by the id's manifest.

    With ``newer_fences`` (a writer's save or claim), a newer ``winner_epoch`` makes it a
    :class:`~objstore.errors.FencedError`: the writer is a zombie and must stop. Otherwise
    (a copy, a retry recognising its own commit) it is a plain
    :class:`~objstore.errors.CheckpointConflict` whatever the epochs. ``detail`` ``None``
    keeps the error's own message.
    """
    fenced = newer_fences and winner_epoch is not None and winner_epoch > epoch
    error = FencedError if fenced else CheckpointConflict
    return error(
        manifest_key(checkpoint_id),
        detail,
        checkpoint_id=checkpoint_id,
        epoch=epoch,
        winner_epoch=winner_epoch,
    )
