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

*Manifest format 2* (layout: the README) is written only for a
checkpoint made of *parts* (a parallel commit, an incremental save): every format-1 field
(``operator_states`` empty, ``state_checksum``/``state_size`` null) plus ``parts``, a list of
:class:`PartEntry`. Each part has an exclusive object ``parts/{name}.bin`` (a ``state.bin``-style
sidecar) and frames; a frame whose ``key`` is null lives inside that object, a frame with a
``key`` lives in a shared object under ``shared/``. Single-writer saves keep
writing format 1 byte for byte; readers accept both. Readers that only know format 1 reject a
format-2 manifest as unsupported, so they skip a parts checkpoint instead of restoring it
without its parts.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from objstore._checks import check_u64, is_int
from objstore._keys import validate_key
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
    "PARTS_FORMAT",
    "PartEntry",
    "PartFrame",
    "check_part_name",
    "SinkStatus",
    "decode_manifest",
    "encode_manifest",
    "encode_tombstone",
]

MANIFEST_FORMAT = 1
"""The ``format_version`` of a manifest without parts (every single-writer save)."""
PARTS_FORMAT = 2
"""The ``format_version`` of a manifest with parts (parallel commits, incremental saves)."""
SUPPORTED_FORMATS = (MANIFEST_FORMAT, PARTS_FORMAT)
TOMBSTONE_FORMAT = 2
"""The ``format_version`` of a tombstone (an aborted id): one that readers of manifest
format 1 reject, so they skip it as invalid instead of restoring it."""
ABORTED = "aborted: its state was collected as an orphan before a manifest landed"
"""Why a tombstoned id is skipped (recovery reports, validation issues)."""
SinkStatus = Literal["pending", "committed", "failed"]
SINK_STATUSES: frozenset[str] = frozenset({"pending", "committed", "failed"})
DEFAULT_VNODE_COUNT = 256
MAX_PART_NAME_LENGTH = 200


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


def check_part_name(name: object) -> str:
    """Return ``name`` if it can name a part (one key segment: ``parts/{name}.bin``).

    Raises:
        TypeError: if ``name`` is not a str.
        ValueError: if it is empty, longer than 200 characters, contains ``/``, a backslash
            or NUL, is ``.``/``..`` or is not valid UTF-8.
    """
    if not isinstance(name, str):
        raise TypeError(f"part name must be a str, not {type(name).__name__}")
    if "/" in name:
        raise ValueError(f"part name {name!r} must not contain '/'")
    if len(name) > MAX_PART_NAME_LENGTH:
        raise ValueError(f"part name {name[:20]!r}... is longer than {MAX_PART_NAME_LENGTH}")
    validate_key(name)
    return name


@dataclass(frozen=True, slots=True)
class PartFrame:
    """One zstd frame of a part: inside the part's exclusive object (``key`` is ``None``,
    at ``offset``/``length``) or a whole shared object ``key`` (under
    ``shared/``; ``offset`` 0, ``length`` its size). ``raw_length`` is its
    decompressed size and ``xxh3`` the xxh3-128 of the frame's bytes."""

    name: str | None
    offset: int
    length: int
    raw_length: int
    xxh3: str
    key: str | None = None

    def __post_init__(self) -> None:
        if self.name is not None and not isinstance(self.name, str):
            raise TypeError("frame name must be a str or None")
        for what in ("offset", "length", "raw_length"):
            value = getattr(self, what)
            if not is_int(value) or value < 0:
                raise ValueError(f"frame {what} must be a non-negative int, got {value!r}")
        if not isinstance(self.xxh3, str):
            raise TypeError("frame xxh3 must be a str")
        if self.key is not None:
            validate_key(self.key)

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form of this frame."""
        return {
            "name": self.name,
            "key": self.key,
            "offset": self.offset,
            "length": self.length,
            "raw_length": self.raw_length,
            "xxh3": self.xxh3,
        }

    def as_operator_state(self) -> OperatorState:
        """The same frame as a ``state.bin`` index entry (what the frame decoder takes)."""
        return OperatorState(self.name, self.offset, self.length, self.raw_length, self.xxh3)

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> PartFrame:
        """Parse one frame of a stored manifest (``KeyError``, ``TypeError``, ``ValueError``
        from the constructor on a malformed entry)."""
        return cls(
            name=entry["name"],
            key=entry.get("key"),
            offset=entry["offset"],
            length=entry["length"],
            raw_length=entry["raw_length"],
            xxh3=entry["xxh3"],
        )


@dataclass(frozen=True, slots=True)
class PartEntry:
    """One part of a format-2 checkpoint (see the module doc and the README's layout).

    ``name`` is unique within the checkpoint (:func:`check_part_name`); ``key_groups`` the
    inclusive key-group range ``(first, last)`` the part holds, for rescaling (``None``: not
    keyed); ``key`` the part's exclusive object, with its ``size`` and whole-object ``xxh3``
    (all ``None`` when every frame is shared); ``writer_nonce`` the nonce in the exclusive
    object's header; ``frames`` its frames in order.
    """

    name: str
    key_groups: tuple[int, int] | None
    key: str | None
    size: int | None
    xxh3: str | None
    writer_nonce: str
    frames: tuple[PartFrame, ...] = ()

    def __post_init__(self) -> None:
        check_part_name(self.name)
        if self.key_groups is not None and (
            not isinstance(self.key_groups, tuple)
            or len(self.key_groups) != 2
            or not all(is_int(v) and v >= 0 for v in self.key_groups)
            or self.key_groups[0] > self.key_groups[1]
        ):
            raise ValueError(
                f"part {self.name!r}: key_groups must be (first, last) with "
                f"0 <= first <= last, got {self.key_groups!r}"
            )
        if self.key is not None:
            validate_key(self.key)
        if (self.key is None) != (self.size is None) or (self.key is None) != (self.xxh3 is None):
            raise ValueError(f"part {self.name!r}: key, size and xxh3 go together")
        if self.size is not None and (not is_int(self.size) or self.size < 0):
            raise ValueError(f"part {self.name!r}: size must be a non-negative int")
        if not isinstance(self.writer_nonce, str):
            raise TypeError(f"part {self.name!r}: writer_nonce must be a str")
        if not all(isinstance(frame, PartFrame) for frame in self.frames):
            raise TypeError(f"part {self.name!r}: frames must be PartFrame")
        if self.key is None and any(frame.key is None for frame in self.frames):
            raise ValueError(f"part {self.name!r}: a frame without a key needs the part's object")

    @property
    def raw_size(self) -> int:
        """The decompressed size of the whole part."""
        return sum(frame.raw_length for frame in self.frames)

    def frame(self, name_or_index: str | int) -> PartFrame:
        """The frame called ``name_or_index`` (or at that index).

        Raises:
            KeyError: no such frame.
        """
        if isinstance(name_or_index, int) and not isinstance(name_or_index, bool):
            if 0 <= name_or_index < len(self.frames):
                return self.frames[name_or_index]
            raise KeyError(f"part {self.name!r} has no frame {name_or_index}")
        for frame in self.frames:
            if frame.name == name_or_index:
                return frame
        raise KeyError(f"part {self.name!r} has no frame {name_or_index!r}")

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form of this part."""
        return {
            "name": self.name,
            "key_groups": list(self.key_groups) if self.key_groups is not None else None,
            "key": self.key,
            "size": self.size,
            "xxh3": self.xxh3,
            "writer_nonce": self.writer_nonce,
            "frames": [frame.to_json() for frame in self.frames],
        }

    @classmethod
    def from_json(cls, entry: Mapping[str, Any]) -> PartEntry:
        """Parse one part of a stored manifest.

        A missing field raises ``KeyError``.

        Raises:
            TypeError: a field has the wrong type.
            ValueError: a field has a wrong value.
        """
        groups = entry["key_groups"]
        if groups is not None:
            if not isinstance(groups, list) or len(groups) != 2:
                raise ValueError(f"key_groups must be a pair, got {groups!r}")
            groups = (groups[0], groups[1])
        frames = entry["frames"]
        if not isinstance(frames, list):
            raise TypeError("frames must be a list")
        return cls(
            name=entry["name"],
            key_groups=groups,
            key=entry["key"],
            size=entry["size"],
            xxh3=entry["xxh3"],
            writer_nonce=entry["writer_nonce"],
            frames=tuple(PartFrame.from_json(frame) for frame in frames),
        )


@dataclass(frozen=True, slots=True)
class CheckpointManifest:
    """The commit record of one checkpoint.

    Only ``checkpoint_id`` (≥ 1) and ``epoch`` (≥ 0) are required. ``operator_states``,
    ``state_checksum`` and ``state_size`` are filled in by the store when it saves state;
    values passed in for them are ignored. ``parts`` (manifest format 2) is filled in by a
    parallel commit or an incremental save; a manifest with parts has no ``state.bin``.
    ``metadata`` is any JSON-serialisable mapping.
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
    parts: tuple[PartEntry, ...] = ()

    def __post_init__(self) -> None:
        check_checkpoint_id(self.checkpoint_id)
        if not isinstance(self.parts, tuple) or not all(
            isinstance(part, PartEntry) for part in self.parts
        ):
            raise TypeError("parts must be a tuple of PartEntry")
        names = [part.name for part in self.parts]
        if len(set(names)) != len(names):
            raise ValueError(f"part names must be unique, got {names!r}")
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
    def has_parts(self) -> bool:
        """Whether this is a checkpoint of parts (manifest format 2, no ``state.bin``)."""
        return bool(self.parts)

    @property
    def format_version(self) -> int:
        """The manifest format this manifest is stored in: 2 with parts, else 1."""
        return PARTS_FORMAT if self.parts else MANIFEST_FORMAT

    def part(self, name: str) -> PartEntry:
        """The part called ``name``.

        Raises:
            KeyError: the checkpoint has no such part.
        """
        for part in self.parts:
            if part.name == name:
                return part
        raise KeyError(f"checkpoint {self.checkpoint_id} has no part {name!r}")

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


_KNOWN = {f.name for f in fields(CheckpointManifest)} - {"extra", "parts"}
_BOOKKEEPING = {"format_version", "manifest_checksum", "writer_nonce", "revision", "state_nonce"}


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest as stored: the user's record plus the store's bookkeeping."""

    manifest: CheckpointManifest
    writer_nonce: str
    state_nonce: str | None
    revision: int


def encode_manifest(stored: StoredManifest) -> bytes:
    """Canonical JSON bytes of ``stored``, with its checksum: format 1 without parts (the
    bytes every single-writer save has always written), format 2 with them."""
    manifest = stored.manifest
    body: dict[str, Any] = dict(manifest.extra)
    if manifest.parts:
        body["parts"] = [part.to_json() for part in manifest.parts]
    body.update(
        {
            "format_version": manifest.format_version,
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
    if not is_int(version) or version not in SUPPORTED_FORMATS:
        raise CorruptionError(key, f"unsupported manifest format_version {version!r}")
    if version == PARTS_FORMAT and "aborted" in body:  # a garbled tombstone, not a manifest
        raise CorruptionError(key, f"unsupported manifest format_version {version!r}")
    try:
        parts: tuple[PartEntry, ...] = ()
        if version == PARTS_FORMAT:
            listed = body.get("parts")
            if not isinstance(listed, list) or not listed:
                raise CorruptionError(key, "a format-2 manifest lists its parts")
            parts = tuple(PartEntry.from_json(entry) for entry in listed)
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
        if version == PARTS_FORMAT:
            del extra["parts"]
            if operator_states or known.get("state_checksum") is not None:
                raise CorruptionError(key, "a format-2 manifest has parts, not a state.bin")
        manifest = CheckpointManifest(**known, extra=extra, parts=parts)
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
