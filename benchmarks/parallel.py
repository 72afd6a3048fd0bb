"""Parallel checkpoints against one process: ``python -m benchmarks.parallel``.

The same total state (``--size-mib``, split into two parts of equal size) is saved as one
parallel checkpoint three ways, repetition by repetition so a noisy neighbour slows them
alike, on a local directory:

1. *one process*: one worker process writes both parts (one after the other), then the
   coordinator commits;
2. *two processes*: two worker processes write one part each at the same time, then the
   coordinator commits;
3. the *compression limit* of the machine on the same chunks: zstd (the store's level) on
   one core, and on every core at once (one chunk per core), no I/O.

Reported: aggregate save throughput (MB/s of raw state, coordinator's wall clock from
handing out tickets to the committed manifest), the ratio two processes ÷ one process, and
each figure ÷ the all-cores compression limit (on 2 cores the ceiling of any save). Worker
processes are started (and their state generated) before any timing.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
from typing import Any

import zstandard

from benchmarks._state import make_state
from benchmarks._timing import MB
from objstore import CheckpointStore, PartReceipt, PartTicket, write_part

LEVEL = 3

_state: dict[str, list[bytes]] = {}


def _prepare(kind: str, part_bytes: int, seed_part: str) -> int:
    """In a worker: generate (once) the state of a part; its size in bytes."""
    if seed_part not in _state:
        _state[seed_part] = make_state(kind, part_bytes)
    return sum(map(len, _state[seed_part]))


def _write(tickets: list[PartTicket]) -> list[PartReceipt]:
    """In a worker: write the parts of ``tickets`` one after the other."""
    return [write_part(ticket, _state[ticket.part]) for ticket in tickets]


def _compress_chunks(chunks: list[bytes]) -> int:
    compressor = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True, write_content_size=True)
    return sum(len(compressor.compress(chunk)) for chunk in chunks)


def _run_checkpoint(
    url: str, checkpoint_id: int, assignment: list[list[str]], pools: list[Any]
) -> float:
    """Seconds from handing out tickets to the committed manifest."""
    store = CheckpointStore(url, verify_fencing=False)
    try:
        job = store.begin_parallel(checkpoint_id, 1, ["a", "b"])
        started = time.perf_counter()
        futures = [
            pool.submit(_write, [job.ticket(name) for name in names])
            for pool, names in zip(pools, assignment, strict=True)
        ]
        receipts = [receipt for future in futures for receipt in future.result()]
        job.commit(receipts)
        return time.perf_counter() - started
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=64, help="total state (default 64)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--state", default="columns", choices=["columns", "records"])
    args = parser.parse_args(argv)
    part_bytes = args.size_mib * 1024 * 1024 // 2
    context = multiprocessing.get_context("spawn")
    root = tempfile.mkdtemp(prefix="objstore-parallel-bench-")
    pools = [concurrent.futures.ProcessPoolExecutor(1, mp_context=context) for _ in range(2)]
    try:
        # Every worker holds both parts' state, so either layout can run in any of them.
        total = 0
        for pool in pools:
            total = sum(pool.submit(_prepare, args.state, part_bytes, p).result() for p in "ab")
        chunks = make_state(args.state, part_bytes) + make_state(args.state, part_bytes)
        cores = os.cpu_count() or 1
        one, two, limit_one, limit_all = [], [], [], []
        checkpoint_id = 0
        for _ in range(args.reps):
            checkpoint_id += 1
            one.append(_run_checkpoint(root, checkpoint_id, [["a", "b"]], pools[:1]))
            checkpoint_id += 1
            two.append(_run_checkpoint(root, checkpoint_id, [["a"], ["b"]], pools))
            started = time.perf_counter()
            _compress_chunks(chunks)
            limit_one.append(time.perf_counter() - started)
            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(cores) as threads:
                list(threads.map(_compress_chunks, [[c] for c in chunks]))
            limit_all.append(time.perf_counter() - started)
            shutil.rmtree(root, ignore_errors=True)
            os.makedirs(root, exist_ok=True)
    finally:
        for pool in pools:
            pool.shutdown()
        shutil.rmtree(root, ignore_errors=True)

    def rate(seconds: list[float]) -> float:
        return total / statistics.median(seconds) / MB

    one_rate, two_rate = rate(one), rate(two)
    limit_rate, single_rate = rate(limit_all), rate(limit_one)
    print(
        f"state {args.state}, {total / MB:.1f} MB in 2 parts, {args.reps} reps (median), "
        f"file backend, {cores} cores"
    )
    print(f"  one worker process (both parts)  {one_rate:8.1f} MB/s")
    print(f"  two worker processes (one each)  {two_rate:8.1f} MB/s")
    print(f"  zstd limit, one core             {single_rate:8.1f} MB/s")
    print(f"  zstd limit, all {cores} cores           {limit_rate:8.1f} MB/s")
    print(f"  two processes / one process      {two_rate / one_rate:8.2f}")
    print(f"  one process / compression limit  {one_rate / limit_rate:8.2f}")
    print(f"  two processes / compression limit{two_rate / limit_rate:8.2f}")


if __name__ == "__main__":
    main()
