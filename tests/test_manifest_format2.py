"""Manifest format 2 (parts): encoding, decoding, and format 1 left byte for byte as it was."""

from __future__ import annotations

import json

import pytest

from objstore import CorruptionError
from objstore.checkpoint import (
    MANIFEST_FORMAT,
    PARTS_FORMAT,
    CheckpointManifest,
    OperatorState,
    PartEntry,
    PartFrame,
    parse_listing_key,
    part_key,
)
from objstore.checkpoint._manifest import StoredManifest, decode_manifest, encode_manifest
from objstore.codec import canonical_json, checksum

KEY = "checkpoints/checkpoint_00000000000000000003/manifest.json"


def _part(name: str, groups: tuple[int, int] | None = (0, 31)) -> PartEntry:
    return PartEntry(
        name=name,
        key_groups=groups,
        key=part_key(3, name),
        size=120,
        xxh3="a" * 32,
        writer_nonce="b" * 32,
        frames=(
            PartFrame("op-a", 44, 30, 60, "c" * 32),
            PartFrame(None, 0, 17, 40, "d" * 32, key="checkpoints/shared/ee-ff.zst"),
        ),
    )


def _stored(manifest: CheckpointManifest) -> StoredManifest:
    return StoredManifest(manifest, writer_nonce="0" * 32, state_nonce=None, revision=0)


def test_a_manifest_with_parts_round_trips_as_format_2() -> None:
    manifest = CheckpointManifest(
        checkpoint_id=3,
        epoch=2,
        timestamp_ms=5,
        source_offsets={"k": {"p0": 1}},
        parts=(_part("kg-0000-0031"), _part("kg-0032-0063", (32, 63)), _part("plain", None)),
    )
    data = encode_manifest(_stored(manifest))
    body = json.loads(data)
    assert body["format_version"] == PARTS_FORMAT == 2
    assert body["operator_states"] == []
    assert body["state_checksum"] is None
    assert body["parts"][0] == {
        "name": "kg-0000-0031",
        "key_groups": [0, 31],
        "key": "checkpoints/checkpoint_00000000000000000003/parts/kg-0000-0031.bin",
        "size": 120,
        "xxh3": "a" * 32,
        "writer_nonce": "b" * 32,
        "frames": [
            {"name": "op-a", "key": None, "offset": 44, "length": 30, "raw_length": 60,
             "xxh3": "c" * 32},
            {"name": None, "key": "checkpoints/shared/ee-ff.zst", "offset": 0, "length": 17,
             "raw_length": 40, "xxh3": "d" * 32},
        ],
    }  # fmt: skip
    decoded = decode_manifest(data, key=KEY, expected_id=3)
    assert decoded.manifest == manifest
    assert decoded.manifest.part("kg-0032-0063").key_groups == (32, 63)
    assert decoded.manifest.part("plain").frame("op-a").as_operator_state() == OperatorState(
        "op-a", 44, 30, 60, "c" * 32
    )
    assert encode_manifest(decoded) == data


def test_a_manifest_without_parts_stays_format_1_byte_for_byte() -> None:
    manifest = CheckpointManifest(checkpoint_id=3, epoch=1, timestamp_ms=7)
    data = encode_manifest(_stored(manifest))
    body = json.loads(data)
    assert body["format_version"] == MANIFEST_FORMAT == 1
    assert "parts" not in body
    assert sorted(body) == sorted(
        [
            "checkpoint_id", "epoch", "format_version", "manifest_checksum", "metadata",
            "operator_states", "revision", "sink_commit_statuses", "sink_epochs",
            "source_offsets", "state_checksum", "state_nonce", "state_size", "timestamp_ms",
            "vnode_count", "watermark", "writer_nonce",
        ]
    )  # fmt: skip


def test_a_format_1_manifest_with_an_unknown_parts_field_keeps_it_as_extra() -> None:
    body = json.loads(encode_manifest(_stored(CheckpointManifest(checkpoint_id=3, epoch=1))))
    del body["manifest_checksum"]
    body["parts"] = "a future field"
    body["manifest_checksum"] = checksum(canonical_json(body))
    decoded = decode_manifest(canonical_json(body), key=KEY)
    assert decoded.manifest.parts == ()
    assert decoded.manifest.extra == {"parts": "a future field"}


def _reencoded(change: dict[str, object]) -> bytes:
    manifest = CheckpointManifest(checkpoint_id=3, epoch=1, parts=(_part("p"),))
    body = json.loads(encode_manifest(_stored(manifest)))
    del body["manifest_checksum"]
    body.update(change)
    body["manifest_checksum"] = checksum(canonical_json(body))
    return canonical_json(body)


@pytest.mark.parametrize(
    "change",
    [
        {"parts": []},
        {"parts": None},
        {"format_version": 3},
        {"aborted": False},
        {"state_checksum": "f" * 32},
        {"parts": [{"name": "a/b"}]},
        {"parts": [{**_part("x").to_json(), "name": ".."}]},
        {"parts": [{**_part("x").to_json(), "key_groups": [5, 1]}]},
        {"parts": [{**_part("x").to_json(), "size": None}]},
        {"parts": [_part("x").to_json(), _part("x").to_json()]},
        {"parts": [{**_part("x").to_json(), "frames": [{"name": None}]}]},
    ],
)
def test_a_malformed_format_2_manifest_is_corrupt(change: dict[str, object]) -> None:
    with pytest.raises(CorruptionError):
        decode_manifest(_reencoded(change), key=KEY)


@pytest.mark.parametrize("name", ["", "a/b", ".", "..", "nul\x00", "back\\slash", "x" * 201, 7])
def test_bad_part_names_are_refused(name: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        _part(name)  # type: ignore[arg-type]


def test_part_objects_are_listed_under_their_checkpoint_and_shared_objects_are_not() -> None:
    assert parse_listing_key(part_key(3, "kg-0")) == (3, "parts/kg-0.bin")
    assert parse_listing_key("checkpoints/shared/abc-def.zst") is None
    assert parse_listing_key("checkpoints/shared/checkpoint_00000000000000000001/x") is None
    assert parse_listing_key("checkpoints/checkpoint_00000000000000000003/other/x") is None
