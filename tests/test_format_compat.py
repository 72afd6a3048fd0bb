"""Bytes written by released formats stay readable: tests/data holds one store per format."""

from __future__ import annotations

import shutil
from pathlib import Path

from objstore import CheckpointStore, KVStore

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
