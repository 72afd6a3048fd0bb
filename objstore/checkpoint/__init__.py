"""CheckpointStore: manifests, ``state.bin`` sidecars and ``latest.txt`` (DESIGN §3)."""

from objstore.checkpoint._layout import LATEST, checkpoint_dir, manifest_key, state_key
from objstore.checkpoint._maintenance import (
    CopyResult,
    Pointer,
    PointerRepair,
    copy_checkpoint,
    copy_checkpoint_async,
    plan_pointer_repair,
    read_pointer,
    read_pointer_async,
    repair_pointer,
    repair_pointer_async,
    validate_checkpoint_streaming,
    validate_checkpoint_streaming_async,
)
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
    "CopyResult",
    "OperatorState",
    "Pointer",
    "PointerRepair",
    "RecoveryReport",
    "SinkStatus",
    "ValidationResult",
    "checkpoint_dir",
    "copy_checkpoint",
    "copy_checkpoint_async",
    "manifest_key",
    "plan_pointer_repair",
    "read_pointer",
    "read_pointer_async",
    "repair_pointer",
    "repair_pointer_async",
    "state_key",
    "validate_checkpoint_streaming",
    "validate_checkpoint_streaming_async",
]
