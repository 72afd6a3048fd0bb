"""CheckpointStore: manifests, ``state.bin`` sidecars and ``latest.txt`` (DESIGN §3)."""

from objstore.checkpoint._layout import LATEST, checkpoint_dir, manifest_key, state_key
from objstore.checkpoint._manifest import (
    MANIFEST_FORMAT,
    CheckpointManifest,
    OperatorState,
    SinkStatus,
)
from objstore.checkpoint._store import (
    AsyncCheckpointStore,
    CheckpointStore,
    RecoveryReport,
    ValidationResult,
)

__all__ = [
    "LATEST",
    "MANIFEST_FORMAT",
    "AsyncCheckpointStore",
    "CheckpointManifest",
    "CheckpointStore",
    "OperatorState",
    "RecoveryReport",
    "SinkStatus",
    "ValidationResult",
    "checkpoint_dir",
    "manifest_key",
    "state_key",
]
