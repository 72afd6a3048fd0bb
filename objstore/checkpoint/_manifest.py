"""The checkpoint manifest: what a checkpoint contains, and its canonical JSON encoding.

Encoding and decoding are pure. A manifest on storage is canonical JSON (sorted keys, UTF-8)
with a ``format_version`` and a ``manifest_checksum``: the xxh3-128 of the canonical JSON of
every other field. Fields this version does not know are kept in :attr:`extra` and written
back unchanged, so older readers never strip what newer writers added.

A *tombstone* is the other record that can sit at ``manifest.json``: written create-if-absent
by the janitor to claim an orphan's commit slot before it deletes the orphan's state (see
:meth:`~objstore.checkpoint.AsyncCheckpointStore.cleanup_orphans`). It records that the id
was aborted, never committed: ``{"aborted": true, "checkpoint_id": N, "format_version": 2,
"orphan_epoch": E|null, "manifest_checksum": ...}``. :func:`decode_manifest` raises
:class:`AbortedCheckpoint` (a ``NotFoundError``) for it, so every reader treats the id as
having no manifest; readers older than tombstones reject its ``format_version`` 2 as an
unsupported manifest and skip it as invalid, never restoring it. Checkpoint manifests stay
format 1, so those readers still read every real checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from objstore._checks import check_u64, is_int
from objstore.codec import canonical_json, checksum, parse_json
from objstore.errors import CorruptionError, NotFoundError

__all__ = [
    "ABORTED",
    "MANIFEST_FORMAT",
    "TOMBSTONE_FORMAT",
    "AbortedCheckpoint",
    "SINK_STATUSES",
    "CheckpointManifest",
    "OperatorState",
    "SinkStatus",
    "decode_manifest",
    "encode_manifest",
    "encode_tombstone",
]

MANIFEST_FORMAT = 1
TOMBSTONE_FORMAT = 2
"""The ``format_version`` of a tombstone (an aborted id): one that readers of manifest
format 1 reject, so they skip it as invalid instead of restoring it."""
ABORTED = "aborted: its state was collected as an orphan before a manifest landed"
"""Why a tombstoned id is skipped (recovery reports, validation issues)."""
SinkStatus = Literal["pending", "committed", "failed"]
SINK_STATUSES: frozenset[str] = frozenset({"pending", "committed", "failed"})
DEFAULT_VNODE_COUNT = 256


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def check_checkpoint_id(checkpoint_id: object) -> int:
    """Return ``checkpoint_id`` if it is an int in [1, 2**64); else ValueError/TypeError."""
    return check_u64(checkpoint_id, "checkpoint_id", minimum=1)


@dataclass(frozen=True, slots=True)
class OperatorState:
    """Where one chunk of operator state lives inside ``state.bin``.

    ``offset``/``length`` locate its zstd frame, ``raw_length`` is its decompressed size and
    ``xxh3`` the xxh3-128 of the frame, so one operator's state can be fetched with a ranged
    read and verified on its own.
    """

    name: str | None
    offset: int
    length: int
    raw_length: int
    xxh3: str

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form of this entry."""
        return {
            "name": self.name,
            "offset": self.offset,
            "length": self.length,
            "raw_length": self.raw_length,
            "xxh3": self.xxh3,
        }


@dataclass(frozen=True, slots=True)
class CheckpointManifest:
    """The commit record of one checkpoint.

    Only ``checkpoint_id`` (≥ 1) and ``epoch`` (≥ 0) are required. ``operator_states``,
    ``state_checksum`` and ``state_size`` are filled in by the store when it saves state;
    values passed in for them are ignored. ``metadata`` is any JSON-serialisable mapping.
    Invalid values raise ``ValueError``/``TypeError`` at construction, before any request.
    """

    checkpoint_id: int
    epoch: int
    timestamp_ms: int = field(default_factory=_now_ms)
    source_offsets: dict[str, Any] = field(default_factory=dict)
    sink_epochs: dict[str, int] = field(default_factory=dict)
    sink_commit_statuses: dict[str, SinkStatus] = field(default_factory=dict)
    operator_states: tuple[OperatorState, ...] = ()
    watermark: int | None = None
    vnode_count: int = DEFAULT_VNODE_COUNT
    state_checksum: str | None = None
    state_size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_checkpoint_id(self.checkpoint_id)
        if not is_int(self.epoch):
            raise TypeError(f"epoch must be an int, not {type(self.epoch).__name__}")
        if self.epoch < 0:
            raise ValueError(f"epoch must not be negative, got {self.epoch}")
        if not is_int(self.timestamp_ms) or self.timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be a non-negative int, got {self.timestamp_ms!r}")
        if self.watermark is not None and not is_int(self.watermark):
            raise TypeError("watermark must be an int or None")
        if not is_int(self.vnode_count) or not 1 <= self.vnode_count <= 65535:
            raise ValueError(f"vnode_count must be within [1, 65535], got {self.vnode_count!r}")
        for name, mapping in (
            ("source_offsets", self.source_offsets),
            ("sink_epochs", self.sink_epochs),
            ("sink_commit_statuses", self.sink_commit_statuses),
            ("metadata", self.metadata),
            ("extra", self.extra),
        ):
            if not isinstance(mapping, Mapping):
                raise TypeError(f"{name} must be a mapping, not {type(mapping).__name__}")
            if any(not isinstance(key, str) for key in mapping):
                raise TypeError(f"{name} keys must be str")
            _check_json(name, mapping)
        for sink, sink_epoch in self.sink_epochs.items():
            if not is_int(sink_epoch):
                raise TypeError(f"sink_epochs[{sink!r}] must be an int")
        for sink, status in self.sink_commit_statuses.items():
            if status not in SINK_STATUSES:
                raise ValueError(
                    f"sink_commit_statuses[{sink!r}] must be one of {sorted(SINK_STATUSES)}, "
                    f"got {status!r}"
                )

    @property
    def has_state(self) -> bool:
        """Whether a ``state.bin`` sidecar belongs to this checkpoint."""
        return self.state_checksum is not None

    @property
    def pending_sinks(self) -> list[str]:
        """Sinks whose commit is still pending."""
        return sorted(s for s, status in self.sink_commit_statuses.items() if status == "pending")

    def with_status(self, sink: str, status: SinkStatus) -> CheckpointManifest:
        """A copy with one sink's commit status changed (for :meth:`update_manifest`)."""
        return replace(self, sink_commit_statuses={**self.sink_commit_statuses, sink: status})


def _check_json(name: str, value: object) -> None:
    try:
        canonical_json(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not JSON-serialisable: {exc}") from exc


_KNOWN = {f.name for f in fields(CheckpointManifest)} - {"extra"}
_BOOKKEEPING = {"format_version", "manifest_checksum", "writer_nonce", "revision", "state_nonce"}


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest as stored: the user's record plus the store's bookkeeping."""

    manifest: CheckpointManifest
    writer_nonce: str
    state_nonce: str | None
    revision: int


def encode_manifest(stored: StoredManifest) -> bytes:
    """Canonical JSON bytes of ``stored``, with its checksum."""
    manifest = stored.manifest
    body: dict[str, Any] = dict(manifest.extra)
    body.update(
        {
            "format_version": MANIFEST_FORMAT,
            "checkpoint_id": manifest.checkpoint_id,
            "epoch": manifest.epoch,
            "timestamp_ms": manifest.timestamp_ms,
            "source_offsets": manifest.source_offsets,
            "sink_epochs": manifest.sink_epochs,
            "sink_commit_statuses": manifest.sink_commit_statuses,
            "operator_states": [entry.to_json() for entry in manifest.operator_states],
            "watermark": manifest.watermark,
            "vnode_count": manifest.vnode_count,
            "state_checksum": manifest.state_checksum,
            "state_size": manifest.state_size,
            "metadata": manifest.metadata,
            "writer_nonce": stored.writer_nonce,
            "state_nonce": stored.state_nonce,
            "revision": stored.revision,
        }
    )
    body["manifest_checksum"] = checksum(canonical_json(body))
    return canonical_json(body)


class AbortedCheckpoint(NotFoundError):
    """``manifest.json`` holds a tombstone: the id was aborted, nothing was committed.

    A ``NotFoundError``, so every reader treats the checkpoint as absent; ``orphan_epoch``
    is the epoch of the writer whose orphaned state was collected (``None``: unknown)."""

    def __init__(self, key: str, checkpoint_id: int, orphan_epoch: int | None) -> None:
        super().__init__(key, f"checkpoint {checkpoint_id}: {ABORTED}")
        self.checkpoint_id = checkpoint_id
        self.orphan_epoch = orphan_epoch


def encode_tombstone(checkpoint_id: int, orphan_epoch: int | None) -> bytes:
    """Canonical JSON bytes of the tombstone of ``checkpoint_id`` (see the module doc)."""
    body: dict[str, Any] = {
        "aborted": True,
        "checkpoint_id": check_checkpoint_id(checkpoint_id),
        "format_version": TOMBSTONE_FORMAT,
        "orphan_epoch": orphan_epoch,
    }
    body["manifest_checksum"] = checksum(canonical_json(body))
    return canonical_json(body)


def decode_manifest(data: bytes, *, key: str, expected_id: int | None = None) -> StoredManifest:
    """Parse and verify manifest bytes; raise :class:`CorruptionError` saying what is wrong.

    Checks UTF-8, JSON, the checksum, the format version, field types, and (when given)
    that the id inside matches the id of the path it was read from. A verified tombstone
    raises :class:`AbortedCheckpoint` instead (the id has no manifest).

    Raises:
        CorruptionError: if the bytes are not a JSON object with a matching checksum, a supported
            format version and valid fields, or the id inside (or a tombstone's) does not match
            ``expected_id``.
        AbortedCheckpoint: for a verified tombstone (the id has no manifest).
    """
    body = parse_json(data, key=key)
    if not isinstance(body, dict):
        raise CorruptionError(key, "manifest is not a JSON object")
    stated = body.pop("manifest_checksum", None)
    if stated is None:
        raise CorruptionError(key, "manifest has no manifest_checksum")
    actual = checksum(canonical_json(body))
    if stated != actual:
        raise CorruptionError(key, "manifest checksum mismatch", expected=stated, actual=actual)
    version = body.get("format_version")
    if version == TOMBSTONE_FORMAT and body.get("aborted") is True:
        checkpoint_id, orphan_epoch = body.get("checkpoint_id"), body.get("orphan_epoch")
        if not is_int(checkpoint_id) or (expected_id is not None and checkpoint_id != expected_id):
            raise CorruptionError(key, "tombstone id does not match its path")
        raise AbortedCheckpoint(key, checkpoint_id, orphan_epoch if is_int(orphan_epoch) else None)
    if (
        not isinstance(version, int)
        or isinstance(version, bool)
        or not 1 <= version <= MANIFEST_FORMAT
    ):
        raise CorruptionError(key, f"unsupported manifest format_version {version!r}")
    try:
        operator_states = tuple(
            OperatorState(
                name=entry["name"],
                offset=int(entry["offset"]),
                length=int(entry["length"]),
                raw_length=int(entry["raw_length"]),
                xxh3=str(entry["xxh3"]),
            )
            for entry in body.get("operator_states", [])
        )
        known = {name: body[name] for name in _KNOWN if name in body}
        known["operator_states"] = operator_states
        extra = {k: v for k, v in body.items() if k not in _KNOWN and k not in _BOOKKEEPING}
        manifest = CheckpointManifest(**known, extra=extra)
        stored = StoredManifest(
            manifest=manifest,
            writer_nonce=str(body.get("writer_nonce", "")),
            state_nonce=body.get("state_nonce"),
            revision=int(body.get("revision", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptionError(key, f"manifest fields are invalid: {exc}") from exc
    if expected_id is not None and manifest.checkpoint_id != expected_id:
        raise CorruptionError(
            key,
            "manifest id does not match its path",
            expected=expected_id,
            actual=manifest.checkpoint_id,
        )
    return stored
