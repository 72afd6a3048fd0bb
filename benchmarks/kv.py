"""KVStore at scale: open, memory, write latency under compaction, reads, catch-up.

``python -m benchmarks.kv --keys 1000000 --backends file,s3`` (s3 is a moto server in its
own process). Keys are 14 bytes, values 100 bytes of random data. Per backend it measures,
each figure from the objstore request hook (requests) and ``time.perf_counter``:

1. loading ``--keys`` keys in batches of 10,000 (no compaction), then ``compact()``;
2. in a fresh process: opening the store, RSS above the process's baseline (``VmHWM``
   minus the RSS before the open, after imports and the client's connection), and
   ``get`` / 100-row ``range_scan`` latency and requests, cold (first touch of a segment
   index and block) and warm;
3. ``put_batch`` of 100 pairs: p50/p99 idle, while a full ``compact()`` runs in another
   process, and with the writer's own background compaction (``compact_every=32``);
4. catch-up: a reader opened before ``--catch-up`` batches by another writer (which
   compacts in the background), then ``refresh()``: requests and time.

Results go to stdout as JSON lines and, with ``--out``, to a JSON file.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psutil

from benchmarks._moto import moto_server, new_bucket
from objstore import KVStore
from objstore._loop import run_sync
from objstore.observability import RequestEvent

VALUE_BYTES = 100
LOAD_BATCH = 10_000


def key_of(n: int) -> bytes:
    """The 14-byte key of record ``n``."""
    return b"k%013d" % n


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Counter:
    """Counts requests through the store's request hook."""

    def __init__(self) -> None:
        self.requests = 0

    def __call__(self, event: RequestEvent) -> None:
        self.requests += 1


def _high_water_mark() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def load(url: str, keys: int) -> dict[str, Any]:
    """Write ``keys`` keys in batches of 10,000, then compact fully."""
    rng = random.Random(7)
    store = KVStore(url, compact_every=0)
    start = time.perf_counter()
    for first in range(0, keys, LOAD_BATCH):
        count = min(LOAD_BATCH, keys - first)
        store.put_batch([(key_of(first + i), rng.randbytes(VALUE_BYTES)) for i in range(count)])
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    store.compact()
    compacted = time.perf_counter() - start
    store.close()
    return {"load_seconds": loaded, "compact_seconds": compacted}


def child_read(url: str, keys: int) -> dict[str, Any]:
    """In a fresh process: open, RSS, cold/warm get and range_scan (requests, latency)."""
    counter = Counter()
    store = KVStore(url, compact_every=0, request_hook=counter)
    run_sync(store.async_store.backend.exists("kv/absent"))  # the client's connection
    counter.requests = 0
    gc.collect()
    baseline = psutil.Process().memory_info().rss
    rng = random.Random(11)
    out: dict[str, Any] = {}

    def timed(label: str, call: Any) -> Any:
        before = counter.requests
        start = time.perf_counter()
        result = call()
        out[f"{label}_ms"] = (time.perf_counter() - start) * 1000
        out[f"{label}_requests"] = counter.requests - before
        return result

    timed("open", store.current_sequence)
    probe = rng.randrange(keys)
    assert timed("get_cold_first", lambda: store.get(key_of(probe))) is not None
    assert timed("get_warm", lambda: store.get(key_of(probe))) is not None
    cold, cold_requests, warm = [], [], []
    for _ in range(30):
        n = rng.randrange(keys)
        before, start = counter.requests, time.perf_counter()
        store.get(key_of(n))
        cold.append((time.perf_counter() - start) * 1000)
        cold_requests.append(counter.requests - before)
        start = time.perf_counter()
        store.get(key_of(n))
        warm.append((time.perf_counter() - start) * 1000)
    out["get_cold_block_ms_p50"] = statistics.median(cold)
    out["get_cold_block_requests_max"] = max(cold_requests)
    out["get_warm_ms_p50"] = statistics.median(warm)
    start_key = rng.randrange(keys - 200)
    rows = timed("scan100_cold", lambda: store.range_scan(key_of(start_key), limit=100))
    assert len(rows) == 100
    timed("scan100_warm", lambda: store.range_scan(key_of(start_key), limit=100))
    for _ in range(300):  # fill the block cache: RSS stays bounded by cache_bytes
        store.get(key_of(rng.randrange(keys)))
    out["rss_above_baseline_mib"] = (_high_water_mark() - baseline) / 2**20
    out["baseline_rss_mib"] = baseline / 2**20
    store.close()
    return out


def put_latencies(store: KVStore, count: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    samples = []
    for _ in range(count):
        pairs = [(key_of(rng.randrange(10**9)), rng.randbytes(VALUE_BYTES)) for _ in range(100)]
        start = time.perf_counter()
        store.put_batch(pairs)
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def _stats(samples: list[float]) -> dict[str, float]:
    return {"p50_ms": statistics.median(samples), "p99_ms": _percentile(samples, 0.99)}


def writes_under_compaction(url: str, puts: int) -> dict[str, Any]:
    """put_batch(100) p50/p99 idle, during a full compaction in another process, and with
    the writer's own background compaction."""
    out: dict[str, Any] = {}
    writer = KVStore(url, compact_every=0)
    writer.current_sequence()
    out["idle"] = _stats(put_latencies(writer, puts, 1))
    child = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.kv", "--child", "compact", "--url", url],
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.0)  # let it read the manifest and start merging
    samples = put_latencies(writer, puts, 2)
    still_running = child.poll() is None
    report = json.loads(child.communicate()[0].strip().splitlines()[-1])
    out["during_full_compaction"] = _stats(samples) | {
        "compaction_seconds": report["seconds"],
        "compaction_outlived_the_puts": still_running,
    }
    writer.close()
    background = KVStore(url, compact_every=32)
    background.current_sequence()
    samples = put_latencies(background, puts, 3)
    background.wait_for_background()
    out["own_background_compaction"] = _stats(samples)
    background.close()
    return out


def catch_up(url: str, batches: int) -> dict[str, Any]:
    """A reader misses ``batches`` one-pair batches, then refreshes."""
    counter = Counter()
    reader = KVStore(url, compact_every=0, request_hook=counter)
    reader.current_sequence()
    writer = KVStore(url, compact_every=32)
    start = time.perf_counter()
    for n in range(batches):
        writer.put_batch([(key_of(n), b"caught-up-%d" % n)])
    written = time.perf_counter() - start
    writer.wait_for_background()
    writer.close()
    before = counter.requests
    start = time.perf_counter()
    sequence = reader.refresh()
    elapsed = time.perf_counter() - start
    assert reader.get(key_of(batches - 1)) == b"caught-up-%d" % (batches - 1)
    reader.close()
    return {
        "missed_batches": batches,
        "refresh_requests": counter.requests - before,
        "refresh_ms": elapsed * 1000,
        "writer_batches_per_second": batches / written,
        "sequence": sequence,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    """The RESULTS.md table of one run (one column per backend)."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, values: list[Any]) -> None:
        if any(v is None for v in values):
            return  # a part that was not run (10 M: load and reads only)
        rows.append((label, [v if isinstance(v, str) else f"{v:,.1f}" for v in values]))

    def per(path: str) -> list[Any]:
        values: list[Any] = []
        for result in results:
            value: Any = result
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            values.append(value)
        return values

    def text(values: list[Any]) -> list[Any]:
        return [None if v is None else str(v) for v in values]

    def pairs(first: str, second: str) -> list[Any]:
        return [
            None if a is None else f"{a:.1f} / {b:.1f}"
            for a, b in zip(per(first), per(second), strict=True)
        ]

    row("keys", [f"{r['keys']:,}" for r in results])
    row("load (batches of 10,000), s", per("load_seconds"))
    row("first `compact()` of everything, s", per("compact_seconds"))
    row("open (first call), ms", per("reads.open_ms"))
    row("open, requests", text(per("reads.open_requests")))
    row("RSS above baseline after open + 330 gets, MiB", per("reads.rss_above_baseline_mib"))
    row("cold `get` (first: index + block), ms", per("reads.get_cold_first_ms"))
    row(
        "cold `get`, requests (max over 31)",
        [
            str(max(a, b))
            for a, b in zip(
                per("reads.get_cold_first_requests"),
                per("reads.get_cold_block_requests_max"),
                strict=True,
            )
        ],
    )
    row("cold-block `get` p50, ms", per("reads.get_cold_block_ms_p50"))
    row("warm `get` p50, ms", per("reads.get_warm_ms_p50"))
    row("warm `get`, requests", text(per("reads.get_warm_requests")))
    row("100-row `range_scan` cold, ms", per("reads.scan100_cold_ms"))
    row("100-row `range_scan` cold, requests", text(per("reads.scan100_cold_requests")))
    row("100-row `range_scan` warm, ms", per("reads.scan100_warm_ms"))
    row("100-row `range_scan` warm, requests", text(per("reads.scan100_warm_requests")))
    row("`put_batch(100)` idle p50 / p99, ms", pairs("writes.idle.p50_ms", "writes.idle.p99_ms"))
    row(
        "… during a full `compact()` in another process, p50 / p99, ms",
        pairs("writes.during_full_compaction.p50_ms", "writes.during_full_compaction.p99_ms"),
    )
    row(
        "… with its own background compaction, p50 / p99, ms",
        pairs("writes.own_background_compaction.p50_ms", "writes.own_background_compaction.p99_ms"),
    )
    row("catch-up after 20,000 missed batches, requests", text(per("catch_up.refresh_requests")))
    row("catch-up after 20,000 missed batches, ms", per("catch_up.refresh_ms"))
    lines = ["| | " + " | ".join(r["backend"] for r in results) + " |"]
    lines.append("|---|" + "---:|" * len(results))
    lines += [f"| {label} | " + " | ".join(values) + " |" for label, values in rows]
    return "\n".join(lines)


def run_backend(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": name, "keys": args.keys, "load_average": os.getloadavg()}
    result |= load(url, args.keys)
    print(json.dumps(result), flush=True)
    reads = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.kv",
            "--child",
            "read",
            "--url",
            url,
            "--keys",
            str(args.keys),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    result["reads"] = json.loads(reads.stdout.strip().splitlines()[-1])
    print(json.dumps(result["reads"]), flush=True)
    if "writes" in args.parts:
        result["writes"] = writes_under_compaction(url, args.puts)
        print(json.dumps(result["writes"]), flush=True)
    if "catch-up" in args.parts:
        result["catch_up"] = catch_up(url, args.catch_up)
        print(json.dumps(result["catch_up"]), flush=True)
    return result


@contextlib.contextmanager
def _url(name: str) -> Iterator[str]:
    if name == "file":
        with tempfile.TemporaryDirectory(prefix="kv-bench-") as root:
            yield root
    elif name == "s3":
        with moto_server():
            yield f"s3://{new_bucket('kv')}/kv"
    else:
        raise SystemExit(f"unknown backend {name!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--backends", default="file,s3")
    parser.add_argument("--puts", type=int, default=300)
    parser.add_argument("--catch-up", type=int, default=20_000)
    parser.add_argument("--out", default="")
    parser.add_argument(
        "--parts", default="writes,catch-up", help="besides load and reads (10 M: none)"
    )
    parser.add_argument("--markdown", default="", help="print the table of a results file")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.markdown:
        with open(args.markdown) as results:
            print(markdown(json.load(results)))
        return 0
    if args.child == "read":
        print(json.dumps(child_read(args.url, args.keys)))
        return 0
    if args.child == "compact":
        start = time.perf_counter()
        KVStore(args.url, compact_every=0).compact()
        print(json.dumps({"seconds": time.perf_counter() - start}))
        return 0
    results = []
    for name in args.backends.split(","):
        with _url(name) as url:
            results.append(run_backend(name, url, args))
    if args.out:
        with open(args.out, "w") as out:
            json.dump(results, out, indent=2)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
