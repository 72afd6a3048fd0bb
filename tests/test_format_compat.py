"""Bytes written by released formats stay readable: tests/data holds one store per format."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from objstore import CheckpointManifest, CheckpointStore, FencedError, KVStore

DATA = Path(__file__).parent / "data"


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


def test_checkpoint_format_2_pointer_ranks_by_epoch_and_fences(tmp_path: Path) -> None:
    """tests/data/generate_checkpoint_format_2.py: epoch 1 saved 5 and 7, epoch 2 claimed
    the store and saved 6; latest.txt is format 2 (epoch and fence epoch)."""
    root = tmp_path / "store"
    shutil.copytree(DATA / "checkpoint-format-2", root)
    assert (root / "checkpoints" / "latest.txt").read_bytes() == (
        b'{"checkpoint_id":6,"epoch":2,"fence_epoch":2,"format_version":2}'
    )
    store = CheckpointStore(str(root))
    latest = store.load_latest()
    assert latest is not None
    assert (latest.checkpoint_id, latest.epoch) == (6, 2)
    assert store.load_state_data(6) == b"epoch-2-checkpoint-6;" * 20
    assert store.load_state_data(7) == b"epoch-1-checkpoint-7;" * 20  # kept, never restored
    report = store.recover_latest_validated()
    assert report.chosen_id == 6
    assert [checkpoint_id for checkpoint_id, _ in report.skipped] == [7]
    assert store.list() == [(5, 1), (6, 2), (7, 1)]
    with pytest.raises(FencedError):
        store.save(CheckpointManifest(checkpoint_id=8, epoch=1))
    store.save(CheckpointManifest(checkpoint_id=8, epoch=2))
    assert store.load_latest().checkpoint_id == 8  # type: ignore[union-attr]


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
