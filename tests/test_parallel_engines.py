"""Parallel checkpoints through real engines: worker *processes* write and restore parts.

A Dask ``LocalCluster`` (two worker processes, one module-scoped cluster) and a plain
``ProcessPoolExecutor`` each upload the 8 parts of one checkpoint in parallel, restore every
part on a worker, and restore the checkpoint written by 8 subtasks with 4 (rescaling by key
group with :func:`objstore.assign_parts`, each new subtask reading only the frames of its own
key groups). Stores other processes can reach: a local directory and moto S3 for Dask, a
local directory for the pool.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from objstore import (
    CheckpointStore,
    PartReceipt,
    PartTicket,
    assign_parts,
    key_group_parts,
    write_part,
)
from tests.conftest import make_store_url

MAX_KEY_GROUPS = 32
WRITERS = 8
RESTORERS = 4


def key_group_state(group: int) -> bytes:
    """The state of one key group (different for each)."""
    return f"key-group-{group};".encode() * (50 + group)


def write_task(ticket: PartTicket) -> tuple[PartReceipt, int]:
    """A worker's task: the state of each key group of its range as one named frame."""
    assert ticket.key_groups is not None
    first, last = ticket.key_groups
    state = {f"kg-{group}": key_group_state(group) for group in range(first, last + 1)}
    return write_part(ticket, state), os.getpid()


_stores: dict[str, CheckpointStore] = {}


def worker_store(url: str) -> CheckpointStore:
    """The store this worker process keeps open for ``url`` (a worker opens it once)."""
    if url not in _stores:
        _stores[url] = CheckpointStore(url, verify_fencing=False)
    return _stores[url]


def read_part_task(url: str, checkpoint_id: int, name: str) -> tuple[str, bytes, int]:
    """A worker's task: restore one part."""
    return name, worker_store(url).load_part(checkpoint_id, name), os.getpid()


def restore_task(
    url: str, checkpoint_id: int, first: int, last: int, parts: tuple[str, ...]
) -> tuple[dict[int, bytes], int]:
    """A rescaled subtask's task: of its assigned parts, read only the frames of the key
    groups in ``[first, last]`` (one ranged read each)."""
    state: dict[int, bytes] = {}
    store = worker_store(url)
    manifest = store.load_by_id(checkpoint_id)
    assert manifest is not None
    for name in parts:
        groups = manifest.part(name).key_groups
        assert groups is not None
        for group in range(max(first, groups[0]), min(last, groups[1]) + 1):
            state[group] = store.load_part_frame(checkpoint_id, name, f"kg-{group}")
    return state, os.getpid()


Mapper = Callable[..., list[Any]]


def run_checkpoint(url: str, mapper: Mapper) -> None:
    """Write 8 parts on the engine's workers, commit, restore each part on a worker, then
    restore with 4 subtasks."""
    coordinator = CheckpointStore(url)
    job = coordinator.begin_parallel(1, 1, key_group_parts(WRITERS, MAX_KEY_GROUPS))
    written = mapper(write_task, list(job.tickets))
    pids = {pid for _, pid in written}
    assert os.getpid() not in pids
    assert len(pids) == 2  # both worker processes took parts
    committed = job.commit([receipt for receipt, _ in written], source_offsets={"p0": 8})
    assert len(committed.parts) == WRITERS
    assert coordinator.recover_latest_validated().chosen_id == 1
    names = [part.name for part in committed.parts]
    restored = mapper(read_part_task, [url] * WRITERS, [1] * WRITERS, names)
    assert os.getpid() not in {pid for _, _, pid in restored}
    for (name, data, _), part in zip(restored, committed.parts, strict=True):
        assert name == part.name
        assert part.key_groups is not None
        first, last = part.key_groups
        assert data == b"".join(key_group_state(g) for g in range(first, last + 1))
    plan = assign_parts({p.name: p.key_groups for p in committed.parts}, RESTORERS)
    assert [len(a.parts) for a in plan] == [2] * RESTORERS
    rescaled = mapper(
        restore_task,
        [url] * RESTORERS,
        [1] * RESTORERS,
        [a.key_groups[0] for a in plan],
        [a.key_groups[1] for a in plan],
        [a.parts for a in plan],
    )
    merged: dict[int, bytes] = {}
    for state, _ in rescaled:
        assert not set(state) & set(merged)  # every key group restored exactly once
        merged.update(state)
    assert merged == {g: key_group_state(g) for g in range(MAX_KEY_GROUPS)}
    coordinator.close()


@pytest.fixture(scope="module")
def dask_client(moto_server: str) -> Iterator[Any]:
    """Two worker processes, one thread each, for the module (started after moto, so the
    workers inherit its endpoint)."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["file", "s3"])
def test_dask_workers_write_and_restore_a_parallel_checkpoint(
    kind: str, dask_client: Any, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)

    def mapper(function: Callable[..., Any], *iterables: list[Any]) -> list[Any]:
        futures = dask_client.map(function, *iterables, pure=False)
        return list(dask_client.gather(futures))

    run_checkpoint(url, mapper)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["file"])  # S3 through worker processes: the dask test
def test_a_process_pool_writes_and_restores_a_parallel_checkpoint(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        # Start both processes first (two overlapping sleeps), so both take parts.
        list(pool.map(time.sleep, [0.5, 0.5]))

        def mapper(function: Callable[..., Any], *iterables: list[Any]) -> list[Any]:
            return list(pool.map(function, *iterables))

        run_checkpoint(url, mapper)
