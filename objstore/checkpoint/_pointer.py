"""``latest.txt``, in one place: reading and classifying it, and moving it by compare-and-swap.

The store (saves, claims, loads) and the maintenance operations (repair, copy, remove) both
go through this module; the fencing rules that decide *where* the pointer may move stay
with their callers (``_store.py``: ``(epoch, id)`` ranking, a fence epoch never lowered),
built from the pure helpers here. The format itself lives in ``_layout.py``.

- :func:`read_pointer` — one GET, classified as a :class:`Pointer` (missing / garbage / set,
  format 1 or 2).
- :func:`swap_pointer` — one conditional write: create-if-absent when the pointer was
  missing, otherwise if-match its version; ``None`` when another writer moved it first.
- :func:`moved_text` and :func:`at_or_past` — the pure rules every move shares.
- :func:`advance_pointer` — read-compare-swap forward in ``(epoch, id)`` order, retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from objstore.backends import AsyncBackend
from objstore.checkpoint._layout import (
    LATEST,
    PointerRecord,
    parse_pointer,
    pointer_text,
)
from objstore.checkpoint._reads import read_manifest
from objstore.errors import (
    AlreadyExistsError,
    CorruptionError,
    NotFoundError,
    OutcomeUnknownError,
    PreconditionFailedError,
)

__all__ = [
    "POINTER_ATTEMPTS",
    "POINTER_TEXT_SHOWN",
    "Pointer",
    "PointerState",
    "advance_pointer",
    "at_or_past",
    "classify_pointer",
    "moved_text",
    "read_pointer",
    "ranked_record",
    "swap_pointer",
]

POINTER_ATTEMPTS = 100
"""Compare-and-swap attempts to move a pointer forward before giving up to other writers."""
POINTER_TEXT_SHOWN = 200
"""How much of a garbage ``latest.txt`` :class:`Pointer` keeps, for reports."""

PointerState = Literal["missing", "garbage", "set"]


@dataclass(frozen=True, slots=True)
class Pointer:
    """``latest.txt`` as read.

    ``text`` is its content (the first 200 characters, decoded leniently; ``None`` if the
    object is missing), ``checkpoint_id`` the id it names (``None`` if missing or garbage),
    ``version`` what a compare-and-swap of it must expect (``None`` if missing), and
    ``epoch``/``fence_epoch`` the named checkpoint's epoch and the newest claimed epoch
    (``None`` in a format-1 pointer).
    """

    text: str | None
    checkpoint_id: int | None
    version: str | None
    epoch: int | None = None
    fence_epoch: int | None = None

    @property
    def exists(self) -> bool:
        """Whether ``latest.txt`` exists at all."""
        return self.text is not None

    @property
    def state(self) -> PointerState:
        """``missing``, ``garbage`` (does not name a checkpoint) or ``set``."""
        if self.text is None:
            return "missing"
        return "garbage" if self.checkpoint_id is None else "set"

    @property
    def record(self) -> PointerRecord | None:
        """What the pointer says, as :func:`~objstore.checkpoint.parse_pointer` parsed it;
        ``None`` if it is missing or garbage. A pointer naming no checkpoint but a claimed
        epoch (format 2) is a record, not garbage."""
        if self.text is None or (self.checkpoint_id is None and self.fence_epoch is None):
            return None
        return PointerRecord(self.checkpoint_id, self.epoch, self.fence_epoch)


MISSING = Pointer(None, None, None)


def classify_pointer(data: bytes, version: str) -> Pointer:
    """The :class:`Pointer` for ``latest.txt`` content ``data`` at ``version`` (pure)."""
    record = parse_pointer(data) or PointerRecord(None)
    text = data[:POINTER_TEXT_SHOWN].decode("utf-8", "replace")
    return Pointer(text, record.checkpoint_id, version, record.epoch, record.fence_epoch)


async def read_pointer(backend: AsyncBackend) -> Pointer:
    """Read ``latest.txt`` as it is (one GET): missing, garbage, or naming an id.

    Transport errors other than a missing object propagate.
    """
    try:
        data, version = await backend.get(LATEST)
    except NotFoundError:
        return MISSING
    return classify_pointer(data, version)


async def ranked_record(backend: AsyncBackend, pointer: Pointer) -> PointerRecord | None:
    """The record of ``pointer`` (``None``: missing or garbage), with the epochs a format-1
    pointer leaves out filled in from the checkpoint it names (one GET of its manifest); if
    that is unreadable, the pointer ranks as epoch 0 and fences nothing. Storage errors
    other than a missing object propagate."""
    record = pointer.record
    if record is None or record.checkpoint_id is None or record.epoch is not None:
        return record
    try:
        named = (await read_manifest(backend, record.checkpoint_id))[2].manifest.epoch
    except (NotFoundError, CorruptionError):
        named = 0
    return PointerRecord(record.checkpoint_id, named, named)


def moved_text(checkpoint_id: int | None, epoch: int | None, fence_epoch: int | None) -> bytes:
    """The pointer naming ``checkpoint_id`` of ``epoch``, keeping the fence epoch
    ``fence_epoch`` it had: a move never lowers the fence (never unfences a zombie)."""
    return pointer_text(checkpoint_id, epoch, max(fence_epoch or 0, epoch or 0))


def at_or_past(record: PointerRecord | None, epoch: int, checkpoint_id: int) -> bool:
    """Whether ``record`` already names ``checkpoint_id`` of ``epoch`` or something newer in
    ``(epoch, id)`` order, so moving it there would be a move backward. A format-1 record
    (no epoch) compares by id alone."""
    if record is None or record.checkpoint_id is None:
        return False
    if record.epoch is None:
        return record.checkpoint_id >= checkpoint_id
    return (record.epoch, record.checkpoint_id) >= (epoch, checkpoint_id)


async def swap_pointer(backend: AsyncBackend, version: str | None, text: bytes) -> str | None:
    """Write ``text`` to ``latest.txt`` if it is still at ``version`` (``None``: still
    missing, so create it); the new version, or ``None`` if another writer moved or
    deleted it first, or if a create whose answer was lost finds the pointer gone (the
    caller re-reads and decides afresh, as after losing a race). Other storage errors
    propagate."""
    try:
        if version is None:
            return await backend.put_if_absent(LATEST, text)
        return await backend.put_if_match(LATEST, text, version)
    except (AlreadyExistsError, PreconditionFailedError, NotFoundError, OutcomeUnknownError):
        return None


async def advance_pointer(backend: AsyncBackend, target: int, epoch: int) -> tuple[Pointer, bool]:
    """Move ``latest.txt`` forward to ``target`` (of ``epoch``) in (epoch, id) order, never
    backward (a format-1 pointer ranks by the epoch of the checkpoint it names, see
    :func:`ranked_record`): the pointer as found and whether it moved. Retries while
    concurrent writers move it first.

    Raises:
        PreconditionFailedError: :data:`POINTER_ATTEMPTS` races in a row were lost.
    """
    for _ in range(POINTER_ATTEMPTS):
        pointer = await read_pointer(backend)
        if at_or_past(await ranked_record(backend, pointer), epoch, target):
            return pointer, False
        text = moved_text(target, epoch, pointer.fence_epoch)
        if await swap_pointer(backend, pointer.version, text) is not None:
            return pointer, True
    raise PreconditionFailedError(LATEST, "latest.txt keeps changing under concurrent writers")
