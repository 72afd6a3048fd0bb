"""One home for reading a checkpoint's manifest: GET ``manifest.json``, then decode it."""

from __future__ import annotations

from objstore.backends import AsyncBackend
from objstore.checkpoint._layout import manifest_key
from objstore.checkpoint._manifest import StoredManifest, decode_manifest

__all__ = ["read_manifest"]


async def read_manifest(
    backend: AsyncBackend, checkpoint_id: int, *, check_id: bool = True
) -> tuple[bytes, str, StoredManifest]:
    """The stored bytes, version and decoded manifest of ``checkpoint_id`` (one GET).

    ``check_id=False`` accepts a manifest naming another id (a conflict report only wants
    the occupant's epoch). The backend's ``NotFoundError`` (no manifest) and
    :func:`decode_manifest`'s ``AbortedCheckpoint`` (a tombstone holds the id) and
    ``CorruptionError`` (unreadable, or with ``check_id`` naming another id) propagate.
    """
    key = manifest_key(checkpoint_id)
    data, version = await backend.get(key)
    expected = checkpoint_id if check_id else None
    return data, version, decode_manifest(data, key=key, expected_id=expected)
