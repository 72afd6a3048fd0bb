"""Incremental checkpoints against full ones: ``python -m benchmarks.incremental``.

A ``columns`` state of ``--size-mib`` (default 1024) in chunks of ``--chunk-mib`` (4) is
saved on a local directory, then ``--saves`` times again with ``--changed`` percent of its
chunks replaced each time (default 1 %: 3 of 256 chunks), once as an incremental save
(``save_incremental``, on the previous one) and once as a full save (``save_with_state``),
alternating save by save so a noisy neighbour slows both alike.

Reported, per steady-state incremental save (medians, min-max):

* bytes uploaded ÷ raw bytes changed: every byte the save sent (shared chunks, pin,
  manifest, pointer; from the request hook) over the raw size of the replaced chunks;
* bytes uploaded ÷ compressed size of the replaced chunks: the protocol's overhead on top of
  uploading what changed (the issue's goal: at most 1.1);
* save time ÷ the full save's time, and the first incremental save (everything uploaded)
  ÷ a full save.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import tempfile
import time

from benchmarks._state import column_chunks
from benchmarks._timing import MB
from objstore import CheckpointManifest, CheckpointStore, RequestEvent
from objstore.checkpoint._shared import is_shared_key


class Sent:
    """Bytes sent by writes, and by shared-object creates, since the last :meth:`reset`."""

    def __init__(self) -> None:
        self.total = 0
        self.shared = 0

    def __call__(self, event: RequestEvent) -> None:
        self.total += event.bytes_sent
        if is_shared_key(event.key):
            self.shared += event.bytes_sent

    def reset(self) -> None:
        self.total = self.shared = 0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--chunk-mib", type=int, default=4)
    parser.add_argument("--changed", type=float, default=1.0, help="percent of chunks per save")
    parser.add_argument("--saves", type=int, default=8)
    args = parser.parse_args(argv)
    chunk = args.chunk_mib * 1024 * 1024
    chunks = list(column_chunks(args.size_mib * 1024 * 1024, chunk_bytes=chunk))
    state = {f"op-{i:04d}": data for i, data in enumerate(chunks)}
    size = sum(map(len, chunks))
    per_save = max(1, round(len(chunks) * args.changed / 100))
    rng = random.Random(0)
    fresh = column_chunks(10**15, seed=1, chunk_bytes=chunk)
    root = tempfile.mkdtemp(prefix="objstore-incremental-")
    sent = Sent()
    try:
        incremental = CheckpointStore(f"{root}/inc", request_hook=sent)
        full = CheckpointStore(f"{root}/full")
        started = time.perf_counter()
        incremental.save_incremental(CheckpointManifest(1, 1), state)
        first = time.perf_counter() - started
        started = time.perf_counter()
        full.save_with_state(CheckpointManifest(1, 1), state)
        first_full = time.perf_counter() - started
        ratios_raw, ratios_compressed, times, full_times = [], [], [], []
        for checkpoint_id in range(2, args.saves + 2):
            changed = rng.sample(sorted(state), per_save)
            for name in changed:
                state[name] = next(fresh)
            changed_raw = sum(len(state[name]) for name in changed)
            sent.reset()
            started = time.perf_counter()
            incremental.save_incremental(CheckpointManifest(checkpoint_id, 1), state)
            times.append(time.perf_counter() - started)
            ratios_raw.append(sent.total / changed_raw)
            ratios_compressed.append(sent.total / sent.shared)
            started = time.perf_counter()
            full.save_with_state(CheckpointManifest(checkpoint_id, 1), state)
            full_times.append(time.perf_counter() - started)
            full.prune(2)
            incremental.prune(2)
            incremental.collect_shared(0)
        assert incremental.load_state(args.saves + 1) == state
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def spread(values: list[float], digits: int = 3) -> str:
        return (
            f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}-{max(values):.{digits}f})"
        )

    print(
        f"state {size / MB:,.0f} MB in {len(chunks)} chunks of {args.chunk_mib} MiB (columns); "
        f"{per_save} chunk(s) = {100 * per_save / len(chunks):.2f} % replaced per save, "
        f"{args.saves} saves, local directory"
    )
    print(f"bytes uploaded ÷ raw bytes changed          {spread(ratios_raw)}")
    print(f"bytes uploaded ÷ changed chunks compressed  {spread(ratios_compressed)}")
    ratio = [t / f for t, f in zip(times, full_times, strict=True)]
    inc_s, full_s = statistics.median(times), statistics.median(full_times)
    print(
        f"save time ÷ full save                       {spread(ratio)}  "
        f"(incremental {inc_s:.2f} s, full {full_s:.2f} s)"
    )
    print(
        f"first incremental save ÷ full save          {first / first_full:.3f}  "
        f"({first:.2f} s vs {first_full:.2f} s: everything uploaded)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
