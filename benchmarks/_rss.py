"""Child process that measures peak RSS of one streamed save or one restore.

``python -m benchmarks._rss save URL BYTES`` saves a lazily generated ``columns`` state of
``BYTES`` as checkpoint 1; ``python -m benchmarks._rss restore URL`` loads it back. Each run
prints one JSON line: RSS before the operation (the interpreter's baseline with objstore,
numpy and the backend client imported and the store opened), the peak during it (the
kernel's high-water mark of this process's address space, ``VmHWM``), and the time taken.
A fresh process per operation keeps earlier allocations out of the high-water mark.
(``ru_maxrss`` would not do: Linux carries it over ``exec`` from the forked parent.)
"""

from __future__ import annotations

import gc
import json
import sys
import time

import psutil

from benchmarks._state import column_chunks
from objstore import CheckpointManifest, CheckpointStore


def _high_water_mark() -> int:
    """Peak RSS of this process's address space, in bytes (Linux ``VmHWM``)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(argv: list[str]) -> None:
    operation, url = argv[0], argv[1]
    store = CheckpointStore(url)
    store.list_ids()  # connects the client, so connection set-up is part of the baseline
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    if operation == "save":
        total = int(argv[2])
        saved = store.save_with_state(
            CheckpointManifest(checkpoint_id=1, epoch=1), column_chunks(total, seed=7)
        )
        raw = sum(entry.raw_length for entry in saved.operator_states)
        extra = {"raw_bytes": raw, "sidecar_bytes": saved.state_size}
    elif operation == "restore":
        state = store.load_state_data(1)
        assert state is not None
        extra = {"raw_bytes": len(state)}
    else:
        raise SystemExit(f"unknown operation {operation!r}")
    elapsed = time.perf_counter() - start
    peak = _high_water_mark()
    print(json.dumps({"baseline_rss": baseline, "peak_rss": peak, "seconds": elapsed, **extra}))


if __name__ == "__main__":
    main(sys.argv[1:])
