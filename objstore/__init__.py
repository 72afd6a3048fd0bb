"""objstore: crash-safe, fenced checkpoints on S3, GCS or a local directory."""

from objstore.backends import (
    AsyncBackend,
    Backend,
    ObjectInfo,
    RetryPolicy,
    open_async_backend,
    open_backend,
)
from objstore.checkpoint import (
    AsyncCheckpointStore,
    CheckpointManifest,
    CheckpointStore,
    OperatorState,
    RecoveryReport,
    ValidationResult,
)
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    CorruptionError,
    FencedError,
    NotFoundError,
    NotSupportedError,
    ObjstoreError,
    PreconditionFailedError,
    TransientStorageError,
)
from objstore.projections import (
    AsyncProjectionCheckpointStore,
    GlobalProjectionCheckpoint,
    ProjectionCheckpointStore,
)
from objstore.snapshots import (
    AsyncNoopSnapshotStore,
    AsyncSnapshotStore,
    NoopSnapshotStore,
    Snapshot,
    SnapshotStore,
)
from objstore.sources import AsyncSourceCheckpointStore, SourceCheckpoint, SourceCheckpointStore

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "AsyncBackend",
    "AsyncCheckpointStore",
    "AsyncNoopSnapshotStore",
    "AsyncProjectionCheckpointStore",
    "AsyncSnapshotStore",
    "AsyncSourceCheckpointStore",
    "GlobalProjectionCheckpoint",
    "NoopSnapshotStore",
    "ProjectionCheckpointStore",
    "Snapshot",
    "SnapshotStore",
    "SourceCheckpoint",
    "SourceCheckpointStore",
    "CheckpointManifest",
    "CheckpointStore",
    "OperatorState",
    "RecoveryReport",
    "ValidationResult",
    "Backend",
    "CheckpointConflict",
    "CorruptionError",
    "FencedError",
    "NotFoundError",
    "NotSupportedError",
    "ObjectInfo",
    "ObjstoreError",
    "PreconditionFailedError",
    "RetryPolicy",
    "TransientStorageError",
    "open_async_backend",
    "open_backend",
]
