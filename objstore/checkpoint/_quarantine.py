"""Quarantine: invalid checkpoints taken out of what readers see, recoverably.

A repair that finds a committed checkpoint invalid (corrupt sidecar, unreadable manifest)
must stop readers from returning it, or a restarting job crash-loops on it. Deleting it
would destroy evidence an operator may need, so its manifest is *moved*::

    quarantine/checkpoints/checkpoint_{id:020d}/manifest.json   the original bytes, verbatim
    quarantine/checkpoints/checkpoint_{id:020d}/reason.json     {"checkpoint_id", "reason",
                                                                 "quarantined_at_ms"}
    checkpoints/checkpoint_{id:020d}/state.bin                  left where it was

Without its manifest the checkpoint is no longer committed, so every reader skips it; its
sidecar stays in place (no copy of possibly large bytes) and ``cleanup_orphans`` leaves a
quarantined id alone. Moving is: reason, then copy (create-if-absent), then a delete of the
original conditional on the version that was validated; a crash in between leaves the
checkpoint visible and a re-run completes it. :func:`restore` puts the manifest back
(create-if-absent: never over a newer commit of that id) and removes the record.

The ``quarantine/`` prefix lies outside ``checkpoints/``, so checkpoint listings never pay
for it. Pure layout plus backend-level moves; deciding *what* to quarantine is
:mod:`objstore.checkpoint._maintenance`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from objstore.backends import AsyncBackend
from objstore.checkpoint._layout import manifest_key, parse_checkpoint_name
from objstore.errors import AlreadyExistsError, NotFoundError, PreconditionFailedError

__all__ = [
    "QUARANTINE",
    "Quarantined",
    "list_quarantined",
    "move_to_quarantine",
    "quarantine_key",
    "quarantined_ids",
    "reason_key",
    "restore",
]

QUARANTINE = "quarantine/checkpoints"


def _directory(checkpoint_id: int) -> str:
    return f"{QUARANTINE}/checkpoint_{checkpoint_id:020d}"


def quarantine_key(checkpoint_id: int) -> str:
    """Where a quarantined checkpoint's manifest is kept."""
    return f"{_directory(checkpoint_id)}/manifest.json"


def reason_key(checkpoint_id: int) -> str:
    """Where the reason a checkpoint was quarantined is kept."""
    return f"{_directory(checkpoint_id)}/reason.json"


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One quarantined checkpoint: its id, why, and when (ms since the epoch, the
    quarantining process's clock; ``None`` if the reason record is missing)."""

    checkpoint_id: int
    reason: str
    quarantined_at_ms: int | None = None


async def quarantined_ids(backend: AsyncBackend) -> set[int]:
    """Ids with a quarantined manifest (one listing)."""
    ids = set()
    for info in await backend.list(QUARANTINE):
        parts = info.key.split("/")
        if len(parts) == 4 and parts[3] == "manifest.json":
            checkpoint_id = parse_checkpoint_name(parts[2])
            if checkpoint_id is not None:
                ids.add(checkpoint_id)
    return ids


async def list_quarantined(backend: AsyncBackend) -> list[Quarantined]:
    """Every quarantined checkpoint with its reason, ascending by id."""
    records = []
    for checkpoint_id in sorted(await quarantined_ids(backend)):
        reason, when = "unknown (no reason recorded)", None
        try:
            body = json.loads((await backend.get(reason_key(checkpoint_id)))[0])
            reason, when = str(body.get("reason", reason)), body.get("quarantined_at_ms")
        except (NotFoundError, ValueError, AttributeError):
            pass
        records.append(Quarantined(checkpoint_id, reason, when if isinstance(when, int) else None))
    return records


async def move_to_quarantine(
    backend: AsyncBackend, checkpoint_id: int, data: bytes, version: str, reason: str
) -> Quarantined:
    """Move the manifest ``data`` (read at ``version``) of ``checkpoint_id`` to quarantine.

    Raises:
        PreconditionFailedError: having taken nothing away, if the manifest changed since it was
            read, or if a *different* manifest of this id is already in quarantine (restore or
            remove that one first).
    """
    record = Quarantined(checkpoint_id, reason, time.time_ns() // 1_000_000)
    body = {
        "checkpoint_id": checkpoint_id,
        "reason": reason,
        "quarantined_at_ms": record.quarantined_at_ms,
    }
    await backend.put(reason_key(checkpoint_id), json.dumps(body, sort_keys=True).encode())
    copy = quarantine_key(checkpoint_id)
    try:
        await backend.put_if_absent(copy, data)
    except AlreadyExistsError as exc:
        if (await backend.get(copy))[0] != data:
            raise PreconditionFailedError(
                copy, f"a different manifest of checkpoint {checkpoint_id} is already quarantined"
            ) from exc
    try:
        await backend.delete(manifest_key(checkpoint_id), version)
    except PreconditionFailedError:
        # Updated since validated: it stays visible, and so must not be recorded as moved.
        await backend.delete(copy)
        await backend.delete(reason_key(checkpoint_id))
        raise
    return record


async def restore(backend: AsyncBackend, checkpoint_id: int) -> None:
    """Put a quarantined manifest back, byte for byte, and drop its quarantine record.

    A ``checkpoint_id`` that is not quarantined raises ``NotFoundError`` (from reading its
    copy).

    Raises:
        PreconditionFailedError: if another manifest of that id was committed since (nothing is
            overwritten; the quarantined copy is kept).
    """
    copy = quarantine_key(checkpoint_id)
    data, _ = await backend.get(copy)
    key = manifest_key(checkpoint_id)
    try:
        await backend.put_if_absent(key, data)
    except AlreadyExistsError as exc:
        if (await backend.get(key))[0] != data:
            raise PreconditionFailedError(
                key,
                f"checkpoint {checkpoint_id} was committed again since it was quarantined; "
                f"the quarantined manifest stays at {copy}",
            ) from exc
    await backend.delete(copy)
    await backend.delete(reason_key(checkpoint_id))
