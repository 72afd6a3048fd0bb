"""Store access shared by the commands: opening a store, listing it, reading a manifest as
stored, and describing ``latest.txt`` against what was found."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

from objstore._concurrency import gather_bounded
from objstore.backends import AsyncBackend, ObjectInfo
from objstore.checkpoint import (
    CHECKPOINTS,
    AsyncCheckpointStore,
    CheckpointEntry,
    CheckpointManifest,
    Pointer,
    StoredManifest,
    is_part_key,
    is_pin_name,
    read_manifest,
    scan,
    state_sizes,
)
from objstore.errors import CorruptionError, NotFoundError, StoreNotFoundError

__all__ = [
    "PARALLEL",
    "sharing",
    "gather",
    "list_entries",
    "listed_parts",
    "open_store",
    "pointer_document",
    "read_stored",
    "set_verify_fencing",
    "state_size",
]

_T = TypeVar("_T")

PARALLEL = 4
"""Checkpoints examined at once by ``ls`` (each streams its sidecar in bounded ranges)."""


_verify_fencing = True
"""Whether stores opened by this command refuse stores that ignore preconditions."""


def set_verify_fencing(enabled: bool) -> None:
    """Set by the global ``--unsafe-skip-fencing-check`` option, once per command line."""
    global _verify_fencing
    _verify_fencing = enabled


@contextlib.asynccontextmanager
async def open_store(
    url: str, options: dict[str, Any], *, create: bool = False
) -> AsyncIterator[AsyncCheckpointStore]:
    """The checkpoint store at ``url``, closed (quietly) afterwards.

    Unless ``create`` (the command writes and may start a new store, like a copy's
    destination), the store must exist. A path that can never hold a store raises
    ``ValueError`` (from the root check) either way.

    Raises:
        StoreNotFoundError: unless ``create``, for a missing bucket or root directory (instead of
            reading as an empty store).
    """
    store = AsyncCheckpointStore(url, storage_options=options, verify_fencing=_verify_fencing)
    try:
        try:
            await store.backend.check_root()
        except StoreNotFoundError:
            if not create:
                raise
        yield store
    finally:
        with contextlib.suppress(Exception):
            await store.close()


async def gather(jobs: Iterable[Awaitable[_T]], limit: int = PARALLEL) -> list[_T]:
    """Results of ``jobs`` in order, at most ``limit`` running at once."""
    return await gather_bounded(jobs, limit)


async def list_entries(store: AsyncCheckpointStore) -> dict[int, CheckpointEntry]:
    """Every checkpoint directory of ``store`` with its objects (one listing)."""
    return scan(await store.backend.list(CHECKPOINTS))


async def read_stored(backend: AsyncBackend, checkpoint_id: int) -> tuple[bytes, StoredManifest]:
    """Raw bytes and decoded manifest of ``checkpoint_id``; raises NotFound/Corruption."""
    data, _, stored = await read_manifest(backend, checkpoint_id)
    return data, stored


async def sharing(
    store: AsyncCheckpointStore, entries: dict[int, CheckpointEntry]
) -> dict[int, dict[str, int]]:
    """Per committed, readable checkpoint: ``exclusive_bytes`` (its own objects: sidecar,
    parts), ``shared_bytes`` (the shared objects it references, each once) and
    ``shared_with_others_bytes`` (those also referenced by another listed checkpoint). One
    GET per manifest."""
    committed = sorted(cid for cid, entry in entries.items() if entry.checkpoint)

    async def manifest(checkpoint_id: int) -> CheckpointManifest | None:
        try:
            return (await read_stored(store.backend, checkpoint_id))[1].manifest
        except (NotFoundError, CorruptionError):
            return None

    found = await gather(manifest(cid) for cid in committed)
    manifests = {cid: m for cid, m in zip(committed, found, strict=True) if m is not None}
    try:
        sizes = state_sizes(manifests)
    except CorruptionError:
        return {}
    return {
        cid: {
            "exclusive_bytes": sum(
                info.size
                for info in entries[cid].objects
                if info is not entries[cid].manifest
                and not is_pin_name(info.key.rsplit("/", 1)[-1])
            ),
            "shared_bytes": size.shared,
            "shared_with_others_bytes": size.shared_with_others,
        }
        for cid, size in sizes.items()
    }


def state_size(entries: dict[int, CheckpointEntry], checkpoint_id: int) -> int | None:
    """The listed size of a checkpoint's sidecar, or of all its parts (a parallel
    checkpoint, manifest format 2), for progress bars and size columns; ``None`` if neither
    is listed."""
    entry = entries.get(checkpoint_id)
    if entry is None:
        return None
    if entry.state is not None:
        return entry.state.size
    parts = listed_parts(entry)
    return sum(info.size for info in parts) if parts else None


def listed_parts(entry: CheckpointEntry) -> list[ObjectInfo]:
    """The part objects (``parts/<name>.bin``) listed in a checkpoint directory."""
    return [info for info in entry.others if is_part_key(info.key)]


def pointer_document(
    pointer: Pointer, validity: dict[int, bool | None], newest_valid: int | None
) -> dict[str, Any]:
    """Describe ``latest.txt`` given each id's validity (``None``: uncommitted)."""
    named = pointer.checkpoint_id
    if not pointer.exists:
        state, detail = "missing", "does not exist"
    elif named is None:
        state, detail = "garbage", "does not name a checkpoint"
    elif validity.get(named) is None:
        state, detail = "dangling", f"names checkpoint {named}, which is not committed"
    elif validity[named] is False:
        state, detail = "invalid", f"names checkpoint {named}, which is corrupt"
    elif newest_valid is not None and newest_valid > named:
        state, detail = (
            "lagging",
            f"names checkpoint {named}; a newer valid one ({newest_valid}) exists",
        )
    else:
        state, detail = "ok", f"names checkpoint {named}"
    return {"text": pointer.text, "checkpoint_id": named, "state": state, "detail": detail}
