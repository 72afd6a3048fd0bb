"""Where checkpoint objects live (contract: DESIGN §3), and parsing names back into ids.

    checkpoints/checkpoint_{id:020d}/state.bin
    checkpoints/checkpoint_{id:020d}/manifest.json
    checkpoints/latest.txt            "checkpoint_{id:020d}"

Ids are written zero-padded to 20 digits so listing order is numeric order; readers accept
any width.
"""

from __future__ import annotations

import re

__all__ = [
    "CHECKPOINTS",
    "LATEST",
    "MAX_CHECKPOINT_ID",
    "checkpoint_dir",
    "manifest_key",
    "parse_checkpoint_name",
    "parse_listing_key",
    "pointer_text",
    "state_key",
]

CHECKPOINTS = "checkpoints"
LATEST = f"{CHECKPOINTS}/latest.txt"
MAX_CHECKPOINT_ID = 2**64 - 1
MANIFEST_NAME = "manifest.json"
STATE_NAME = "state.bin"

_NAME = re.compile(r"checkpoint_(\d{1,20})")


def checkpoint_dir(checkpoint_id: int) -> str:
    """``checkpoints/checkpoint_{id:020d}``."""
    return f"{CHECKPOINTS}/checkpoint_{checkpoint_id:020d}"


def manifest_key(checkpoint_id: int) -> str:
    """The key of a checkpoint's manifest (its commit record)."""
    return f"{checkpoint_dir(checkpoint_id)}/{MANIFEST_NAME}"


def state_key(checkpoint_id: int) -> str:
    """The key of a checkpoint's ``state.bin`` sidecar."""
    return f"{checkpoint_dir(checkpoint_id)}/{STATE_NAME}"


def pointer_text(checkpoint_id: int) -> bytes:
    """The content of ``latest.txt`` naming ``checkpoint_id``."""
    return f"checkpoint_{checkpoint_id:020d}".encode("ascii")


def parse_checkpoint_name(text: str) -> int | None:
    """``checkpoint_<digits>`` (any width) to its id; ``None`` if it is not one."""
    match = _NAME.fullmatch(text.strip())
    if match is None:
        return None
    value = int(match.group(1))
    return value if 1 <= value <= MAX_CHECKPOINT_ID else None


def parse_listing_key(key: str) -> tuple[int, str] | None:
    """``checkpoints/checkpoint_N/<name>`` to ``(N, name)``; ``None`` for anything else."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != CHECKPOINTS:
        return None
    checkpoint_id = parse_checkpoint_name(parts[1])
    if checkpoint_id is None:
        return None
    return checkpoint_id, parts[2]
