"""Where checkpoint objects live (contract: DESIGN §3), and parsing names back into ids.

    checkpoints/checkpoint_{id:020d}/state.bin
    checkpoints/checkpoint_{id:020d}/manifest.json
    checkpoints/checkpoint_{id:020d}/parts/{name}.bin   a part's exclusive object (format 2)
    checkpoints/checkpoint_{id:020d}/refs-{call nonce}-{n}.json   an incremental save's pin
    shared/...                        objects shared by checkpoints (incremental) and the
                                      shared-object GC's record: a sibling of checkpoints/,
                                      so no checkpoint listing ever pages through them
    checkpoints/latest.txt            the pointer (format 2, canonical JSON):
        {"checkpoint_id": N, "epoch": E, "fence_epoch": F, "format_version": 2}

Ids are written zero-padded to 20 digits so listing order is numeric order; readers accept
any width. The pointer names the checkpoint readers should restore (``checkpoint_id`` and
its ``epoch``; ``checkpoint_id`` is null when an epoch was claimed before any checkpoint)
and the newest claimed epoch ``fence_epoch`` (≥ ``epoch``): a save or claim by an older epoch
is fenced. Format-1 pointers (the bare text ``checkpoint_{id:020d}``, no epochs) stay readable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TypeGuard

__all__ = [
    "CHECKPOINTS",
    "LATEST",
    "MAX_CHECKPOINT_ID",
    "PARTS_DIR",
    "PIN_PREFIX",
    "SHARED",
    "POINTER_FORMAT",
    "PointerRecord",
    "checkpoint_dir",
    "manifest_key",
    "parse_checkpoint_name",
    "parse_listing_key",
    "is_part_key",
    "parse_pointer",
    "part_key",
    "pin_key",
    "pin_nonce",
    "pointer_text",
    "state_key",
]

CHECKPOINTS = "checkpoints"
LATEST = f"{CHECKPOINTS}/latest.txt"
MAX_CHECKPOINT_ID = 2**64 - 1
MANIFEST_NAME = "manifest.json"
STATE_NAME = "state.bin"
PARTS_DIR = "parts"
PART_SUFFIX = ".bin"
SHARED = "shared"

PIN_PREFIX = "refs-"
PIN_SUFFIX = ".json"

_NAME = re.compile(r"checkpoint_(\d{1,20})")
_PIN = re.compile(r"refs-([0-9a-f]{8,64})-(\d{1,6})\.json")


def checkpoint_dir(checkpoint_id: int) -> str:
    """``checkpoints/checkpoint_{id:020d}``."""
    return f"{CHECKPOINTS}/checkpoint_{checkpoint_id:020d}"


def manifest_key(checkpoint_id: int) -> str:
    """The key of a checkpoint's manifest (its commit record)."""
    return f"{checkpoint_dir(checkpoint_id)}/{MANIFEST_NAME}"


def state_key(checkpoint_id: int) -> str:
    """The key of a checkpoint's ``state.bin`` sidecar."""
    return f"{checkpoint_dir(checkpoint_id)}/{STATE_NAME}"


def part_key(checkpoint_id: int, name: str) -> str:
    """The key of part ``name``'s exclusive object (``name`` checked by the caller)."""
    return f"{checkpoint_dir(checkpoint_id)}/{PARTS_DIR}/{name}{PART_SUFFIX}"


def is_part_key(key: str) -> bool:
    """Whether ``key`` is a part's object (``checkpoints/checkpoint_N/parts/<name>``)."""
    parsed = parse_listing_key(key)
    return parsed is not None and parsed[1].startswith(f"{PARTS_DIR}/")


POINTER_FORMAT = 2


@dataclass(frozen=True, slots=True)
class PointerRecord:
    """What ``latest.txt`` says.

    ``checkpoint_id`` is the checkpoint it names (``None``: an epoch was claimed before any
    checkpoint existed), ``epoch`` that checkpoint's epoch and ``fence_epoch`` the newest
    claimed epoch; both are ``None`` in a format-1 pointer, which names an id only.
    """

    checkpoint_id: int | None
    epoch: int | None = None
    fence_epoch: int | None = None

    @property
    def rank(self) -> tuple[int, int] | None:
        """``(epoch, id)`` of the named checkpoint, the order readers choose by; ``None``
        when the pointer names no checkpoint or does not say its epoch (format 1)."""
        if self.checkpoint_id is None or self.epoch is None:
            return None
        return self.epoch, self.checkpoint_id


def pointer_text(checkpoint_id: int | None, epoch: int | None, fence_epoch: int) -> bytes:
    """The content of a format-2 ``latest.txt`` (canonical JSON, one line)."""
    body = {
        "checkpoint_id": checkpoint_id,
        "epoch": epoch,
        "fence_epoch": fence_epoch,
        "format_version": POINTER_FORMAT,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("ascii")


def _u64(value: object, minimum: int) -> TypeGuard[int]:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and minimum <= value <= MAX_CHECKPOINT_ID
    )


def parse_pointer(data: bytes) -> PointerRecord | None:
    """Parse ``latest.txt`` of either format; ``None`` if it is garbage."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    legacy = parse_checkpoint_name(text)
    if legacy is not None:
        return PointerRecord(legacy)
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("format_version") != POINTER_FORMAT:
        return None
    checkpoint_id, epoch, fence = (body.get(k) for k in ("checkpoint_id", "epoch", "fence_epoch"))
    if not _u64(fence, 0):
        return None
    if checkpoint_id is None and epoch is None:
        return PointerRecord(None, None, fence)
    if not (_u64(checkpoint_id, 1) and _u64(epoch, 0)) or epoch > fence:
        return None
    return PointerRecord(checkpoint_id, epoch, fence)


def parse_checkpoint_name(text: str) -> int | None:
    """``checkpoint_<digits>`` (any width) to its id; ``None`` if it is not one."""
    match = _NAME.fullmatch(text.strip())
    if match is None:
        return None
    value = int(match.group(1))
    return value if 1 <= value <= MAX_CHECKPOINT_ID else None


def parse_listing_key(key: str) -> tuple[int, str] | None:
    """``checkpoints/checkpoint_N/<name>`` to ``(N, name)``, and a part's object
    ``checkpoints/checkpoint_N/parts/<part>`` to ``(N, "parts/<part>")``; ``None`` for
    anything else."""
    parts = key.split("/")
    if len(parts) == 4 and parts[2] == PARTS_DIR:
        parts = [parts[0], parts[1], f"{PARTS_DIR}/{parts[3]}"]
    if len(parts) != 3 or parts[0] != CHECKPOINTS:
        return None
    checkpoint_id = parse_checkpoint_name(parts[1])
    if checkpoint_id is None:
        return None
    return checkpoint_id, parts[2]


def pin_key(checkpoint_id: int, call_nonce: str, attempt: int) -> str:
    """``checkpoints/checkpoint_{id}/refs-{call_nonce}-{attempt}.json``: the shared keys an
    incremental save call is about to commit (``_shared``, step (p)). The call's nonce is
    also its manifest part's ``writer_nonce``, so a prune deletes only the pins of the
    manifest it deletes, never those of another writer of the same id."""
    return f"{checkpoint_dir(checkpoint_id)}/{PIN_PREFIX}{call_nonce}-{attempt}{PIN_SUFFIX}"


def pin_nonce(key: str) -> str | None:
    """The save call nonce of pin ``key`` (a key or a bare name); ``None`` if not a pin."""
    match = _PIN.fullmatch(key.rsplit("/", 1)[-1])
    return match.group(1) if match else None
