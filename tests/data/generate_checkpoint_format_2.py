"""Write tests/data/checkpoint-format-2: a CheckpointStore with a format-2 ``latest.txt``.

The store a zombie leaves behind: epoch 1 saved 5 and 7, then epoch 2 claimed the store
(``claim_epoch``) and saved 6. ``latest.txt`` names checkpoint 6 of epoch 2 with fence epoch
2; checkpoint 7 of epoch 1 is still there, above the pointer, and must never be restored.
Nonces are random, so running this again changes the bytes (not their meaning); the copy
under tests/data is what ``tests/test_format_compat.py`` reads back.

Run from the repository root: ``python tests/data/generate_checkpoint_format_2.py``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

TARGET = Path(__file__).parent / "checkpoint-format-2"


def main() -> None:
    """(Re)generate :data:`TARGET`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from objstore import CheckpointManifest, CheckpointStore

    def manifest(checkpoint_id: int, epoch: int) -> CheckpointManifest:
        return CheckpointManifest(
            checkpoint_id=checkpoint_id,
            epoch=epoch,
            timestamp_ms=1_700_000_000_000 + checkpoint_id * 1000,
            source_offsets={"events": {"p0": checkpoint_id * 10}},
        )

    def state(checkpoint_id: int, epoch: int) -> dict[str, bytes]:
        return {"counts": f"epoch-{epoch}-checkpoint-{checkpoint_id};".encode() * 20}

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "store"
        zombie = CheckpointStore(str(root))
        zombie.save_with_state(manifest(5, 1), state(5, 1))
        zombie.save_with_state(manifest(7, 1), state(7, 1))
        leader = CheckpointStore(str(root))
        leader.claim_epoch(2)
        leader.save_with_state(manifest(6, 2), state(6, 2))
        for lock in root.rglob("*.lock"):
            lock.unlink()
        shutil.rmtree(TARGET, ignore_errors=True)
        shutil.copytree(root, TARGET)


if __name__ == "__main__":
    main()
