"""CheckpointStore: manifests, ``state.bin`` sidecars and ``latest.txt`` (DESIGN §3)."""

from objstore.checkpoint._incremental import StateSizes as StateSizes
from objstore.checkpoint._incremental import is_pin_name as is_pin_name
from objstore.checkpoint._incremental import state_sizes as state_sizes
from objstore.checkpoint._keygroups import (
    Assignment,
    assign_parts,
    key_group_parts,
    key_group_range,
    part_name,
)
from objstore.checkpoint._layout import (
    CHECKPOINTS,
    LATEST,
    POINTER_FORMAT,
    checkpoint_dir,
    manifest_key,
    state_key,
)

# Building blocks objstore's own CLI and test kit share with the store: re-exported here (the
# ``X as X`` form) so no module outside this package imports a private module, but kept out
# of ``__all__``: they are not part of the stable API.
from objstore.checkpoint._layout import MAX_CHECKPOINT_ID as MAX_CHECKPOINT_ID
from objstore.checkpoint._layout import PointerRecord as PointerRecord
from objstore.checkpoint._layout import is_part_key as is_part_key
from objstore.checkpoint._layout import parse_checkpoint_name as parse_checkpoint_name
from objstore.checkpoint._layout import parse_listing_key as parse_listing_key
from objstore.checkpoint._layout import parse_pointer as parse_pointer
from objstore.checkpoint._layout import part_key as part_key
from objstore.checkpoint._maintenance import (
    CopyResult,
    Pointer,
    PointerRepair,
    Quarantined,
    Removal,
    RemovalRefused,
    copy_checkpoint,
    copy_checkpoint_async,
    list_quarantined,
    list_quarantined_async,
    plan_pointer_repair,
    plan_removal,
    quarantine_invalid,
    quarantine_invalid_async,
    read_pointer,
    read_pointer_async,
    remove_checkpoints,
    remove_checkpoints_async,
    repair_pointer,
    repair_pointer_async,
    restore_quarantined,
    restore_quarantined_async,
    validate_checkpoint_streaming,
    validate_checkpoint_streaming_async,
)
from objstore.checkpoint._manifest import (
    ABORTED,
    MANIFEST_FORMAT,
    PARTS_FORMAT,
    TOMBSTONE_FORMAT,
    AbortedCheckpoint,
    CheckpointManifest,
    OperatorState,
    PartEntry,
    PartFrame,
    SinkStatus,
)
from objstore.checkpoint._manifest import StoredManifest as StoredManifest
from objstore.checkpoint._manifest import decode_manifest as decode_manifest
from objstore.checkpoint._parallel import (
    AsyncParallelJob,
    ParallelJob,
    PartReceipt,
    PartTicket,
    write_part,
    write_part_async,
)
from objstore.checkpoint._plan import CheckpointEntry as CheckpointEntry
from objstore.checkpoint._plan import CleanupResult, Orphan, PruneResult
from objstore.checkpoint._plan import plan_prune as plan_prune
from objstore.checkpoint._plan import scan as scan
from objstore.checkpoint._quarantine import QUARANTINE
from objstore.checkpoint._reads import read_manifest as read_manifest
from objstore.checkpoint._shared import GC_RECORD, SHARED, SharedGcResult
from objstore.checkpoint._store import (
    AsyncCheckpointStore,
    CheckpointStore,
    RecoveryReport,
    ValidationResult,
)

__all__ = [
    "ABORTED",
    "CHECKPOINTS",
    "LATEST",
    "MANIFEST_FORMAT",
    "POINTER_FORMAT",
    "AbortedCheckpoint",
    "Assignment",
    "AsyncCheckpointStore",
    "AsyncParallelJob",
    "CheckpointManifest",
    "CheckpointStore",
    "CleanupResult",
    "CopyResult",
    "OperatorState",
    "Orphan",
    "PARTS_FORMAT",
    "ParallelJob",
    "PartEntry",
    "PartFrame",
    "PartReceipt",
    "PartTicket",
    "Pointer",
    "PointerRepair",
    "PruneResult",
    "QUARANTINE",
    "Quarantined",
    "RecoveryReport",
    "Removal",
    "RemovalRefused",
    "GC_RECORD",
    "SHARED",
    "SharedGcResult",
    "SinkStatus",
    "TOMBSTONE_FORMAT",
    "ValidationResult",
    "assign_parts",
    "checkpoint_dir",
    "copy_checkpoint",
    "copy_checkpoint_async",
    "list_quarantined",
    "list_quarantined_async",
    "key_group_parts",
    "key_group_range",
    "manifest_key",
    "part_name",
    "plan_pointer_repair",
    "quarantine_invalid",
    "quarantine_invalid_async",
    "plan_removal",
    "read_pointer",
    "read_pointer_async",
    "remove_checkpoints",
    "remove_checkpoints_async",
    "repair_pointer",
    "repair_pointer_async",
    "restore_quarantined",
    "restore_quarantined_async",
    "state_key",
    "validate_checkpoint_streaming",
    "validate_checkpoint_streaming_async",
    "write_part",
    "write_part_async",
]
