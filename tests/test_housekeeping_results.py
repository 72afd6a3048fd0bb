"""``prune`` and ``cleanup_orphans`` return what they planned and deleted, and the CLI renders
that result instead of planning a second time (issue 11, part 2).

Runs on memory, a local directory, moto S3 and the GCS emulator (``store_url``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from objstore import AsyncCheckpointStore, CheckpointStore, CleanupResult, PruneResult
from objstore.backends import open_backend
from objstore.checkpoint import state_key
from objstore.cli import app
from tests.checkpoint_helpers import manifest, state_for


def saved(url: str, ids: range) -> CheckpointStore:
    store = CheckpointStore(url)
    for checkpoint_id in ids:
        store.save_with_state(manifest(checkpoint_id), state_for(checkpoint_id))
    return store


def test_prune_returns_what_it_planned_and_deleted(store_url: str) -> None:
    store = saved(store_url, range(1, 6))
    planned = store.prune(2, dry_run=True)
    assert isinstance(planned, PruneResult)
    assert planned.committed == (1, 2, 3, 4, 5)
    assert (planned.planned, planned.deleted, planned.kept) == ((1, 2, 3), (), (4, 5))
    assert planned.anchor_id == 5
    assert not planned.refused
    assert store.list_ids() == [1, 2, 3, 4, 5]  # a dry run deletes nothing

    done = store.prune(2)
    assert (done.planned, done.deleted, done.kept) == ((1, 2, 3), (1, 2, 3), (4, 5))
    assert not done.dry_run
    assert store.list_ids() == [4, 5]
    nothing = store.prune(2)
    assert (nothing.planned, nothing.deleted, nothing.anchor_id) == ((), (), None)


def test_prune_with_nothing_valid_is_refused_and_deletes_nothing(store_url: str) -> None:
    store = saved(store_url, range(1, 4))
    backend = open_backend(store_url)
    for checkpoint_id in (1, 2, 3):
        backend.put(state_key(checkpoint_id), b"rot")
    result = store.prune(1)
    assert result.refused
    assert result.deleted == ()
    assert store.list_ids() == [1, 2, 3]


def test_cleanup_returns_orphans_with_ages_by_the_store_clock(store_url: str) -> None:
    writer = saved(store_url, range(1, 2))
    writer.save_state_data(7, b"orphaned" * 10)
    real_now: list[float] = []

    async def store_clock_a_day_ahead() -> float:
        listing = await AsyncCheckpointStore(store_url).backend.list("checkpoints/")
        newest = max(info.mtime or 0.0 for info in listing)
        real_now.append(newest + 86_400)
        return real_now[-1]

    janitor = CheckpointStore(store_url, store_clock=store_clock_a_day_ahead)
    planned = janitor.cleanup_orphans(dry_run=True)
    assert isinstance(planned, CleanupResult)
    assert [o.checkpoint_id for o in planned.orphans] == [7]
    assert planned.deleted == ()
    assert open_backend(store_url).exists(state_key(7))  # a dry run deletes nothing

    done = janitor.cleanup_orphans()
    assert (done.planned, done.deleted) == ((7,), (7,))
    (orphan,) = done.orphans
    assert orphan.eligible
    assert orphan.size > 0
    age = done.age_of(orphan)
    assert age is not None
    assert age >= 86_400 - 5  # the store's clock, not this machine's
    assert not open_backend(store_url).exists(state_key(7))


def test_cli_prune_and_gc_render_the_stores_own_result(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands make one plan (the store's); planning again would fail here."""

    async def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the CLI planned a second time")

    saved(store_url, range(1, 5))
    for name in ("plan_prune", "newest_valid_id", "plan_cleanup_orphans"):
        monkeypatch.setattr(AsyncCheckpointStore, name, forbidden)
    runner = CliRunner()
    pruned = runner.invoke(app, ["prune", store_url, "--keep", "1", "--json"])
    assert pruned.exit_code == 0, pruned.output
    document = json.loads(pruned.stdout)
    assert document["planned"] == document["deleted"] == [1, 2, 3]
    assert document["kept"] == [4]
    assert document["newest_valid_id"] == 4
    collected = runner.invoke(app, ["gc", store_url, "--json", "--dry-run"])
    assert collected.exit_code == 0, collected.output
    assert json.loads(collected.stdout)["deleted"] == []
