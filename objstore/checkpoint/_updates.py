"""How :meth:`~objstore.checkpoint.AsyncCheckpointStore.update_manifest` merges (pure).

Sink committers each load a manifest, change their sink's status, and write it back, often
from an older copy than what is stored. Each update is merged into what is stored, so that
applying updates in any order, any number of times, gives the same result and none is lost:

- a sink's commit status only moves forward: ``pending`` < ``failed`` < ``committed`` (a
  failed commit may be retried and succeed; a committed one never becomes anything else);
- a sink's epoch and the watermark only grow;
- metadata entries are added or replaced per key (the update's value wins), never removed.

Everything else (offsets, the state index, its checksums) is kept as stored.
"""

from __future__ import annotations

import dataclasses

from objstore.checkpoint._manifest import CheckpointManifest, SinkStatus

__all__ = ["SINK_STATUS_ORDER", "merge_update"]

SINK_STATUS_ORDER: dict[str, int] = {"pending": 0, "failed": 1, "committed": 2}
"""The order a sink's commit status moves in; a merge keeps the later one."""


def _later(stored: SinkStatus, update: SinkStatus) -> SinkStatus:
    return update if SINK_STATUS_ORDER[update] > SINK_STATUS_ORDER[stored] else stored


def merge_update(stored: CheckpointManifest, update: CheckpointManifest) -> CheckpointManifest:
    """``stored`` with the sink statuses, sink epochs, watermark and metadata of ``update``
    merged in as the module describes; the caller checks that ids and epochs match."""
    statuses = dict(stored.sink_commit_statuses)
    for sink, status in update.sink_commit_statuses.items():
        statuses[sink] = _later(statuses[sink], status) if sink in statuses else status
    epochs = dict(stored.sink_epochs)
    for sink, epoch in update.sink_epochs.items():
        epochs[sink] = max(epochs.get(sink, epoch), epoch)
    watermarks = [w for w in (stored.watermark, update.watermark) if w is not None]
    return dataclasses.replace(
        stored,
        sink_commit_statuses=statuses,
        sink_epochs=epochs,
        watermark=max(watermarks) if watermarks else None,
        metadata={**stored.metadata, **update.metadata},
    )
