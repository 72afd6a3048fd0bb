"""Bytes written by released formats stay readable: tests/data holds one store per format.

``tests/data/generate.py`` wrote them (see its docstring for the two frozen by hand); every
check below runs on the committed directory and on a fresh run of the generator, so the two
cannot drift apart, and a format change that forgets its old bytes fails here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from objstore import (
    CheckpointConflict,
    CheckpointManifest,
    CheckpointStore,
    CorruptionError,
    FencedError,
    GlobalProjectionCheckpoint,
    KVStore,
    ProjectionCheckpointStore,
    Snapshot,
    SnapshotStore,
    SourceCheckpoint,
    SourceCheckpointStore,
)
from objstore.backends import open_backend
from objstore.checkpoint import (
    ABORTED,
    GC_RECORD,
    PARTS_FORMAT,
    POINTER_FORMAT,
    SHARED,
    TOMBSTONE_FORMAT,
)
from objstore.checkpoint._shared import GC_FORMAT
from objstore.codec import SEALED_FORMAT, unseal
from objstore.eventsourcing import EVENT_FORMAT, ObjstoreAggregateRecorder
from objstore.kv import (
    KV_MANIFEST_FORMAT,
    MANIFEST_KEY,
    SNAPSHOT_PREFIX,
    KVManifest,
    decode_manifest,
)
from objstore.kv._segment import SEGMENT_PREFIX
from objstore.projections import PROJECTION_FORMAT
from objstore.snapshots import SNAPSHOT_FORMAT
from objstore.sources import STATE_FORMAT
from tests.data import generate

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh run of the generator script, as a user runs it (a subprocess)."""
    out = tmp_path_factory.mktemp("generated")
    done = subprocess.run(
        [sys.executable, str(DATA / "generate.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.iterdir()) == sorted(generate.GENERATORS)
    return out


@pytest.fixture(params=["committed", "generated"])
def source(request: pytest.FixtureRequest) -> Path:
    """Where the store directories are read from: tests/data, or the generator's output."""
    if request.param == "committed":
        return DATA
    return Path(request.getfixturevalue("generated"))


def copy(source: Path, name: str, tmp_path: Path) -> str:
    """A copy of store directory ``name`` (tests may write to it), as a URL."""
    root = tmp_path / name
    shutil.copytree(source / name, root)
    return str(root)


def test_every_format_written_today_has_committed_data() -> None:
    """A format bump without its golden directory fails here: run tests/data/generate.py."""
    assert set(generate.GENERATORS) == {
        f"sources-format-{STATE_FORMAT}",
        f"projections-format-{PROJECTION_FORMAT}",
        f"snapshots-format-{SNAPSHOT_FORMAT}",
        f"sealed-format-{SEALED_FORMAT}",
        f"eventsourcing-format-{EVENT_FORMAT}",
        f"kv-format-{KV_MANIFEST_FORMAT}",
        f"checkpoint-format-{POINTER_FORMAT}",
        f"checkpoint-tombstone-format-{TOMBSTONE_FORMAT}",
        f"checkpoint-parts-format-{PARTS_FORMAT}",
        f"checkpoint-incremental-format-{PARTS_FORMAT}",
    }
    for name in generate.GENERATORS:
        assert (DATA / name).is_dir(), f"tests/data/{name} is missing: run tests/data/generate.py"


def test_sources_format_1(source: Path, tmp_path: Path) -> None:
    url = copy(source, "sources-format-1", tmp_path)
    store = SourceCheckpointStore(url, "q/1")
    expected = {"src/ü": SourceCheckpoint(42, b"\x00pos"), "other": SourceCheckpoint(3)}
    assert store.read_all_checkpoints() == expected == generate.SOURCES
    assert store.read_config_hash() == 2**64 - 1
    with store.session():
        store.stage_checkpoint("other", 4)
    assert SourceCheckpointStore(url, "q/1").read_checkpoint("other") == SourceCheckpoint(4)
    store.close()


def test_projections_format_1(source: Path, tmp_path: Path) -> None:
    url = copy(source, "projections-format-1", tmp_path)
    store = ProjectionCheckpointStore(url)
    # The base already folded delta d1, so d1 is not applied twice.
    expected = GlobalProjectionCheckpoint({"process/tenant/42": 9, "s": 1})
    assert store.load_projection_checkpoint("proj/a") == expected
    delta = Path(url) / "projections" / "proj%2Fa" / "deltas"
    shutil.copy(delta / "d1", delta / "d2")  # an unfolded delta is applied
    assert store.load_projection_checkpoint("proj/a") == GlobalProjectionCheckpoint(
        {"process/tenant/42": 10, "s": 1}
    )
    store.close()


@pytest.mark.parametrize(
    ("store_name", "expected"),
    [
        ("bytes-state", Snapshot("order/ü", 12, 3, b"\x00\x01state")),
        ("json-state", Snapshot("order/ü", 13, 4, {"total": 5, "items": ["a"]})),
    ],
)
def test_snapshots_format_1(
    source: Path, tmp_path: Path, store_name: str, expected: Snapshot
) -> None:
    url = copy(source / "snapshots-format-1", store_name, tmp_path)
    store = SnapshotStore(url)
    assert store.key_for("order/ü") == "snapshots/order%2F%C3%BC.snapshot"
    assert store.load("order/ü") == expected == generate.SNAPSHOTS[store_name]
    store.close()


def test_eventsourcing_format_1(source: Path, tmp_path: Path) -> None:
    url = copy(source, "eventsourcing-format-1", tmp_path)
    recorder = ObjstoreAggregateRecorder(open_backend(url), "snapshots")
    expected = generate.EVENTSOURCING_SNAPSHOTS
    uuid_id, str_id = expected[0].originator_id, expected[2].originator_id
    assert [
        (s.originator_id, s.originator_version, s.topic, s.state)
        for s in (*recorder.select_events(uuid_id), *recorder.select_events(str_id))
    ] == [(r.originator_id, r.originator_version, r.topic, r.state) for r in expected]
    newest = recorder.select_events(uuid_id, desc=True, limit=1, lte=9)
    assert [s.originator_version for s in newest] == [5]
    assert sorted(p.name for p in (Path(url) / "snapshots" / "snapshots").iterdir()) == [
        "6f1c3d0e-2b7a-4c55-9a43-6d2f1e0b9c11",
        "order%2F%C3%BC",
    ]


@pytest.mark.parametrize(("name", "compressed"), [("empty", 0), ("short", 0), ("long", 1)])
def test_sealed_format_1(source: Path, name: str, compressed: int) -> None:
    folder = source / "sealed-format-1"
    blob = (folder / f"{name}.sealed").read_bytes()
    payload = (folder / f"{name}.raw").read_bytes()
    assert payload == generate.SEALED[name]
    assert blob[:4] == b"OBJS"
    assert (blob[4], blob[5] & 1) == (1, compressed)  # format 1; flag bit 0 = zstd body
    assert unseal(blob, key=name) == payload
    header = 30  # magic 4 | format 1 | flags 1 | raw length 8 | xxh3-128 16
    damaged = blob[:-1] + bytes([blob[-1] ^ 1]) if len(blob) > header else blob[:-1]
    with pytest.raises(CorruptionError):
        unseal(damaged, key=name)


def _check_kv_golden(url: str) -> None:
    """The read-back checks every KV golden directory passes (``write_kv`` of generate.py)."""
    kv = KVStore(url, compact_every=0)
    assert kv.current_sequence() == 4
    assert kv.oldest_retained_batch() == 3
    assert kv.range_scan() == [
        (b"order/9", b"\x00\xff"),
        (b"user/1", b"alice-2"),
        (b"user/3", b"carol"),
        (b"user/4", b"dave"),
    ]
    assert kv.get_batch(2) is None  # pruned
    assert kv.get_batch(4) == [(b"user/4", b"dave"), (b"order/9", b"\x00\xff")]
    assert kv.put_batch([(b"user/5", b"erin")]) == 5
    kv.close()


def _kv_manifest(url: str) -> KVManifest:
    blob = (Path(url) / MANIFEST_KEY).read_bytes()
    return decode_manifest(blob, key=MANIFEST_KEY)


def test_kv_format_2(tmp_path: Path) -> None:
    """Frozen: manifest format 2, tombstones without the pruned batch's nonce."""
    url = copy(DATA, "kv-format-2", tmp_path)
    current = _kv_manifest(url)
    assert current.retired == ()
    assert (current.snapshot, current.retained_from, current.tombstoned_below) == (3, 3, 3)
    assert current.snapshot_id
    snapshot_dir = Path(url) / SNAPSHOT_PREFIX
    snapshots = sorted(p.relative_to(url).as_posix() for p in snapshot_dir.iterdir())
    assert snapshots == [current.snapshot_key]
    _check_kv_golden(url)


def test_kv_format_3(tmp_path: Path) -> None:
    """Frozen: manifest format 3, a crashed compaction's snapshot through batch 4 retired
    (and deleted); the next compaction moves the store to segments (format 4)."""
    url = copy(DATA, "kv-format-3", tmp_path)
    current = _kv_manifest(url)
    assert current.snapshot == 3
    assert [sequence for sequence, _ in current.retired] == [4]
    retired_id = current.retired[0][1]
    assert current.merged(KVManifest(4, 1, 1, retired_id)) == current
    _check_kv_golden(url)
    kv = KVStore(url, compact_every=0)
    assert kv.compact() == 5
    after = _kv_manifest(url)
    assert (after.snapshot, after.retired, after.legacy) == (5, (), False)
    assert not (Path(url) / SNAPSHOT_PREFIX).exists() or not any(
        (Path(url) / SNAPSHOT_PREFIX).iterdir()
    )
    kv.close()
    assert KVStore(url).get(b"user/5") == b"erin"


def test_kv_format_4(source: Path, tmp_path: Path) -> None:
    """Manifest format 4: one run of segments through batch 3, the log pruned below it, a
    crashed compaction's segment fenced (generation 2) and swept; blocks and the index are
    read back with ranged GETs."""
    url = copy(source, "kv-format-4", tmp_path)
    current = _kv_manifest(url)
    assert (current.snapshot, current.retained_from, current.tombstoned_below) == (3, 3, 3)
    assert (current.generation, current.legacy, len(current.runs)) == (2, False, 1)
    segments = sorted(p.relative_to(url).as_posix() for p in (Path(url) / SEGMENT_PREFIX).iterdir())
    assert segments == [segment.key for segment in current.segments]
    (segment,) = current.segments
    assert (segment.first, segment.last, segment.count) == (b"user/1", b"user/3", 2)
    _check_kv_golden(url)
    kv = KVStore(url, compact_every=0)
    assert kv.compact() == 5
    assert _kv_manifest(url).generation == 3
    kv.close()
    assert KVStore(url).range_scan(b"user/4") == [(b"user/4", b"dave"), (b"user/5", b"erin")]


def test_checkpoint_format_1_is_readable_and_valid(tmp_path: Path) -> None:
    root = tmp_path / "store"
    shutil.copytree(DATA / "checkpoint-format-1", root)
    store = CheckpointStore(str(root))
    latest = store.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch, latest.timestamp_ms) == (2, 1, 1_700_000_060_000)
    assert latest.extra == {"future_field": [1, 2]}
    assert latest.pending_sinks == ["kafka"]
    first = store.load_by_id(1)
    assert first is not None
    assert first.source_offsets == {"events": {"p0": 10}}
    assert first.watermark == 123
    assert first.sink_epochs == {"kafka": 1}
    assert store.load_operator_state(1, "window") == bytes(range(256))
    assert store.load_state_data(1) == b"alpha=1;beta=2;" * 20 + bytes(range(256))
    assert store.load_state_data(2) == b"chunk-0" * 100 + b"chunk-1" * 100
    report = store.recover_latest_validated()
    assert report.chosen_id == 2
    assert report.skipped == ()
    assert all(store.validate_checkpoint(i).valid for i in (1, 2))


def test_checkpoint_format_2(source: Path, tmp_path: Path) -> None:
    """Epoch 1 saved 5 and 7, epoch 2 claimed the store and saved 6: latest.txt is format 2
    (the named checkpoint's epoch and the fence epoch), and epoch 1's 7 is never restored."""
    url = copy(source, "checkpoint-format-2", tmp_path)
    assert (Path(url) / "checkpoints" / "latest.txt").read_bytes() == (
        b'{"checkpoint_id":6,"epoch":2,"fence_epoch":2,"format_version":2}'
    )
    store = CheckpointStore(url)
    latest = store.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch) == (6, 2)
    for checkpoint_id, epoch in generate.CHECKPOINT_SAVES:
        assert store.load_state_data(checkpoint_id) == generate.checkpoint_state(
            checkpoint_id, epoch
        )
    report = store.recover_latest_validated()
    assert report.chosen_id == 6
    assert [checkpoint_id for checkpoint_id, _ in report.skipped] == [7]
    assert store.list() == [(5, 1), (6, 2), (7, 1)]
    with pytest.raises(FencedError):
        store.save(CheckpointManifest(checkpoint_id=8, epoch=1))
    store.save(CheckpointManifest(checkpoint_id=8, epoch=2))
    assert store.load_latest().checkpoint_id == 8  # type: ignore[union-attr]
    store.close()


def test_checkpoint_tombstone_format_2(source: Path, tmp_path: Path) -> None:
    """Id 2 was aborted (a janitor's tombstone): never a checkpoint, never restored, never
    repaired, and its id stays taken; 1 and 3 read as saved."""
    url = copy(source, f"checkpoint-tombstone-format-{TOMBSTONE_FORMAT}", tmp_path)
    tombstone = json.loads(
        (
            Path(url) / "checkpoints" / "checkpoint_00000000000000000002" / "manifest.json"
        ).read_text()
    )
    assert (tombstone["format_version"], tombstone["aborted"]) == (TOMBSTONE_FORMAT, True)
    store = CheckpointStore(url)
    assert store.list_ids() == [1, 3]
    assert store.load_by_id(2) is None
    assert store.load_latest().checkpoint_id == 3  # type: ignore[union-attr]
    for checkpoint_id in (1, 3):
        assert store.load_state_data(checkpoint_id) == generate.checkpoint_state(checkpoint_id, 1)
    assert store.validate_checkpoint(2).issues == (ABORTED,)
    assert store.next_checkpoint_id() == 4
    with pytest.raises(CheckpointConflict):
        store.save(CheckpointManifest(checkpoint_id=2, epoch=1))
    store.close()


def test_checkpoint_parts_format_2(source: Path, tmp_path: Path) -> None:
    """Manifest format 2: a parallel checkpoint's parts (each its own object) above a
    format-1 checkpoint; both read, validate and restore, part by part and frame by frame."""
    url = copy(source, f"checkpoint-parts-format-{PARTS_FORMAT}", tmp_path)
    parts_id = generate.PARTS_CHECKPOINT
    body = json.loads(
        (Path(url) / f"checkpoints/checkpoint_{parts_id:020d}/manifest.json").read_text()
    )
    assert body["format_version"] == PARTS_FORMAT
    first = json.loads(
        (Path(url) / "checkpoints/checkpoint_00000000000000000001/manifest.json").read_text()
    )
    assert first["format_version"] == 1
    assert "parts" not in first
    store = CheckpointStore(url)
    latest = store.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch, latest.timestamp_ms) == (
        parts_id,
        1,
        1_700_000_002_000,
    )
    assert latest.source_offsets == {"events": {"p0": 20}}
    assert latest.metadata == {"parallelism": 3}
    assert latest.state_checksum is None
    assert {part.name: part.key_groups for part in latest.parts} == {
        name: groups for name, (groups, _) in generate.PARTS.items()
    }
    for name, (_, frames) in generate.PARTS.items():
        assert store.load_part(parts_id, name) == b"".join(frames.values())
        for frame_name, data in frames.items():
            assert store.load_part_frame(parts_id, name, frame_name) == data
    assert store.load_state(parts_id) == {
        f"{name}/{frame}": data
        for name, (_, frames) in generate.PARTS.items()
        for frame, data in frames.items()
    }
    assert store.load_state_data(1) == generate.checkpoint_state(1, 1)
    assert all(store.validate_checkpoint(i).valid for i in (1, parts_id))
    assert store.recover_latest_validated().chosen_id == parts_id
    part = Path(url) / latest.parts[1].key  # type: ignore[operator]
    part.write_bytes(part.read_bytes()[:-1] + b"\x00")
    assert not store.validate_checkpoint(parts_id).valid
    assert store.recover_latest_validated().chosen_id == 1
    store.save(CheckpointManifest(checkpoint_id=3, epoch=1))
    assert store.load_latest().checkpoint_id == 3  # type: ignore[union-attr]
    store.close()


def test_checkpoint_incremental_format_2(source: Path, tmp_path: Path) -> None:
    """Manifest format 2 with shared frames (incremental saves) and the GC record: every
    checkpoint reads, validates and restores; a new incremental save on top reuses the
    stored objects; the GC keeps everything the checkpoints reference."""
    url = copy(source, f"checkpoint-incremental-format-{PARTS_FORMAT}", tmp_path)
    root = Path(url)
    body = json.loads(
        (root / "checkpoints/checkpoint_00000000000000000004/manifest.json").read_text()
    )
    assert body["format_version"] == PARTS_FORMAT
    assert [frame["name"] for frame in body["parts"][0]["frames"]] == ["op-0", "op-1", "op-2"]
    assert all(frame["key"].startswith(SHARED + "/") for frame in body["parts"][0]["frames"])
    record = json.loads((root / GC_RECORD).read_text())
    assert (record["format_version"], record["generation"]) == (GC_FORMAT, 1)
    assert len(record["doomed"]) == 1
    store = CheckpointStore(url)
    assert store.list_ids() == [1, 3, 4]
    assert store.load_state_data(1) == generate.checkpoint_state(1, 1)
    for checkpoint_id in (3, 4):
        assert store.validate_checkpoint(checkpoint_id).valid
        assert store.load_state(checkpoint_id) == generate.incremental_state(checkpoint_id)
        assert store.load_operator_state(checkpoint_id, "op-2") == bytes(range(256)) * 3
    assert store.recover_latest_validated().chosen_id == 4
    assert store.collect_shared(0).deleted == ()
    before = set((root / SHARED).glob("*.zst"))
    assert len(before) == 5  # op-0 of 3 and of 4, op-1 twice, op-2 shared by both
    state = {**generate.incremental_state(4), "op-0": b"new"}
    store.save_incremental(CheckpointManifest(checkpoint_id=5, epoch=1), state, base=4)
    assert len(set((root / SHARED).glob("*.zst")) - before) == 1  # only op-0 of 5 was added
    assert store.load_state(5) == state
    store.close()


def test_kv_format_1_is_readable(tmp_path: Path) -> None:
    root = tmp_path / "kv"
    shutil.copytree(DATA / "kv-format-1", root)
    kv = KVStore(str(root), compact_every=0)
    assert kv.current_sequence() == 4
    assert kv.oldest_retained_batch() == 2
    assert kv.get(b"user/1") == b"alice-2"
    assert kv.get(b"user/2") is None
    assert kv.range_scan(b"user/", b"user/~") == [
        (b"user/1", b"alice-2"),
        (b"user/3", b"carol"),
        (b"user/4", b"dave"),
    ]
    assert kv.get_batch(1) is None  # pruned
    assert kv.get_batch(4) == [(b"order/9", b"\x00\xff")]
    assert kv.put_batch([(b"user/5", b"erin")]) == 5
