"""Large-state save/restore against the machine's limits: ``python -m benchmarks.run``.

Every figure of a report comes from one run on one machine, so the ratios the targets are
stated in compare like with like:

1. save and restore throughput (MB/s of raw state) of realistic states on file, memory and
   S3 (a moto server in its own process);
2. the machine's limits on the same bytes: zstd compression with all threads and
   decompression alone, one xxh3 pass, and raw write/read of the compressed sidecar on the
   same backend;
3. the naive baseline (``pickle`` + ``boto3`` put/get, and the same through s3fs);
4. request counts per operation, from the fault injector's call log;
5. ``load_latest`` / ``recover_latest_validated`` latency with 10 vs 1,000 retained;
6. peak RSS of a 1 GiB streamed save and restore, each in a fresh process.

Measurements of one state are interleaved repetition by repetition (limit, pipeline,
baseline, then again), so a noisy neighbour slows them alike. The table is printed, the
JSON written to ``benchmarks/results.json`` and, with ``--update-results``, the generated
section of ``benchmarks/RESULTS.md`` replaced.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import psutil
import s3fs
import xxhash
import zstandard
from rich.console import Console
from rich.table import Table as RichTable

from benchmarks._moto import moto_server, new_bucket
from benchmarks._state import STATES, make_state
from benchmarks._timing import Samples, hashing_cpu
from objstore import CheckpointManifest, CheckpointStore
from objstore.backends import AsyncBackend, Backend, open_transport
from objstore.testing import FaultInjectingTransport

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "benchmarks" / "RESULTS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
BACKENDS = ("file", "memory", "s3")
LEVEL = 3
"""zstd level: the store's default, used for the limits as well."""
CPUS = os.cpu_count() or 1


# -- small helpers -----------------------------------------------------------------------------


@dataclass
class Table:
    """A result table, rendered both for the terminal and as Markdown."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def rich(self) -> RichTable:
        table = RichTable(title=self.title, title_justify="left", caption=self.note or None)
        for index, header in enumerate(self.headers):
            table.add_column(header, justify="left" if index == 0 else "right")
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.headers) + " |")
        lines.append("|" + "|".join(["---"] + ["---:"] * (len(self.headers) - 1)) + "|")
        lines.extend("| " + " | ".join(row) + " |" for row in self.rows)
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def machine_line() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "zstandard": zstandard.__version__,
        "zstd": ".".join(map(str, zstandard.ZSTD_VERSION)),
        "xxhash": xxhash.VERSION,
        "numpy": np.__version__,
        "load_average_at_start": os.getloadavg(),
    }


def machine_text(machine: dict[str, Any]) -> str:
    load_start = ", ".join(f"{x:.2f}" for x in machine["load_average_at_start"])
    load_end = ", ".join(f"{x:.2f}" for x in machine.get("load_average_at_end", ()))
    return (
        f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, {machine['ram_gib']} GiB RAM,"
        f" {machine['os']}, Python {machine['python']}, zstandard {machine['zstandard']}"
        f" (zstd {machine['zstd']}), xxhash {machine['xxhash']};"
        f" load average at start {load_start}, at end {load_end}"
    )


def manifest(checkpoint_id: int) -> CheckpointManifest:
    return CheckpointManifest(checkpoint_id=checkpoint_id, epoch=1)


_local = threading.local()


def _chunk_compress(chunk: bytes) -> bytes:
    """One chunk on one thread, as objstore compresses chunks while others are in flight."""
    compressor = getattr(_local, "compressor", None)
    if compressor is None:
        compressor = _local.compressor = zstandard.ZstdCompressor(
            level=LEVEL, write_checksum=True, write_content_size=True
        )
    return compressor.compress(chunk)


def _decompress(frame: bytes) -> bytes:
    decompressor = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = _local.decompressor = zstandard.ZstdDecompressor()
    return decompressor.decompress(frame)


# -- 1-3: throughput, limits and baselines -----------------------------------------------------


@dataclass
class StateRun:
    """Everything measured for one state."""

    kind: str
    raw_bytes: int
    chunks: int
    chunk_mib: int = 8
    backends: tuple[str, ...] = BACKENDS
    sidecar_bytes: int = 0
    save: dict[str, Samples] = field(default_factory=dict)
    restore: dict[str, Samples] = field(default_factory=dict)
    limits: dict[str, Samples] = field(default_factory=dict)
    naive: dict[str, Samples] = field(default_factory=dict)
    hashing: dict[str, dict[str, float]] = field(default_factory=dict)
    """CPU seconds in xxh3 of one file save and one file restore, by calling module."""

    @property
    def label(self) -> str:
        """``records``, or ``records/64`` for a state in 64 MiB chunks."""
        return self.kind if self.chunk_mib == 8 else f"{self.kind}/{self.chunk_mib}"

    @property
    def full(self) -> bool:
        """Whether s3 and the naive baselines were measured for this state."""
        return "s3" in self.backends

    def to_json(self) -> dict[str, Any]:
        return {
            "raw_bytes": self.raw_bytes,
            "chunks": self.chunks,
            "chunk_mib": self.chunk_mib,
            "sidecar_bytes": self.sidecar_bytes,
            "compression_ratio": self.raw_bytes / self.sidecar_bytes,
            "save": {name: s.to_json() for name, s in self.save.items()},
            "restore": {name: s.to_json() for name, s in self.restore.items()},
            "limits": {name: s.to_json() for name, s in self.limits.items()},
            "naive": {name: s.to_json() for name, s in self.naive.items()},
            "hashing_cpu_s": self.hashing,
        }


def measure_state(
    kind: str,
    chunks: list[bytes],
    *,
    reps: int,
    bucket: str,
    workdir: Path,
    server: psutil.Process,
    log: Console,
    chunk_mib: int = 8,
    backends: tuple[str, ...] = BACKENDS,
) -> StateRun:
    raw = b"".join(chunks)
    size = len(raw)
    run = StateRun(kind, size, len(chunks), chunk_mib, backends)
    tag = f"{kind}-{chunk_mib}"
    every_store: dict[str, Callable[[], CheckpointStore]] = {
        "file": lambda: CheckpointStore(workdir / f"store-{tag}"),
        "memory": lambda: CheckpointStore(f"memory://bench-{tag}-{uuid.uuid4().hex}"),
        "s3": lambda: CheckpointStore(f"s3://{bucket}/store-{tag}"),
    }
    stores = {name: every_store[name]() for name in backends}
    s3 = boto3.client("s3")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    # Two widths of pool for the limits: as wide as the machine (one single-threaded zstd
    # context per chunk on every core), and as wide as the pipeline's window.
    window = stores["file"].async_store.chunks_in_flight
    pool = ThreadPoolExecutor(CPUS)
    wide = ThreadPoolExecutor(window)
    next_id = {name: 1 for name in stores}

    # Warm-up (not timed): connections, fencing probes, thread pools, zstd contexts; and a
    # check that every backend gives the state back intact.
    saved: dict[str, CheckpointManifest] = {}
    for name, store in stores.items():
        saved[name] = store.save_with_state(manifest(next_id[name]), iter(chunks))
        restored = store.load_state_data(next_id[name])
        if restored != raw:
            raise AssertionError(f"{name}: the restored {kind} state differs")
        next_id[name] += 1
        del restored
    # The limits work on the bytes of the file store's sidecar, and on its index.
    index = saved["file"]
    assert index.state_size is not None
    run.sidecar_bytes = index.state_size
    sidecar_path = workdir / f"store-{tag}" / "checkpoints"
    sidecar = next(sidecar_path.rglob("state.bin")).read_bytes()
    frames = [sidecar[e.offset : e.offset + e.length] for e in index.operator_states]
    raw_file = workdir / f"raw-{tag}.bin"

    def add(
        group: dict[str, Samples], name: str, action: Callable[[], object], *, s3: bool = False
    ) -> Any:
        samples = group.setdefault(name, Samples(size, server if s3 else None))
        return samples.measure(action)

    def save_then_restore(name: str) -> None:
        store, checkpoint_id, s3 = stores[name], next_id[name], name == "s3"
        add(
            run.save,
            name,
            lambda: store.save_with_state(manifest(checkpoint_id), iter(chunks)),
            s3=s3,
        )
        state = add(run.restore, name, lambda: store.load_state_data(checkpoint_id), s3=s3)
        assert state is not None
        assert len(state) == size
        del state
        store.prune(1)
        next_id[name] += 1

    def raw_file_write() -> None:
        fd = os.open(raw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(sidecar)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    naive_key = f"naive/{kind}.pickle"
    raw_key = f"raw/{kind}.bin"
    offsets = [0]
    for entry in index.operator_states:
        offsets.append(offsets[-1] + entry.raw_length)
    prefaulted = bytearray(size)

    def decompress_into(target: bytearray) -> None:
        view = memoryview(target)

        def one(index: int) -> None:
            decompressor: zstandard.ZstdDecompressor = _local.__dict__.setdefault(
                "d", zstandard.ZstdDecompressor()
            )
            with decompressor.stream_reader(frames[index]) as reader:
                reader.readinto(view[offsets[index] : offsets[index + 1]])

        list(pool.map(one, range(len(frames))))

    def decompress_into_fresh() -> bytes:
        """What a restore must at least do: every frame on the machine pool, into one
        fresh result of the state's size (calloc: its pages are faulted in by the
        decompressing threads), returned as bytes without a copy."""
        result = io.BytesIO(bytes(size))
        with result.getbuffer() as view:
            decompress_into(view)  # type: ignore[arg-type]
        return result.getvalue()

    def naive_boto3_put() -> None:
        s3.put_object(Bucket=bucket, Key=naive_key, Body=pickle.dumps(chunks, protocol=5))

    def naive_boto3_get() -> list[bytes]:
        body = s3.get_object(Bucket=bucket, Key=naive_key)["Body"].read()
        state: list[bytes] = pickle.loads(body)
        return state

    def naive_s3fs_put() -> None:
        fs.pipe_file(f"{bucket}/{naive_key}", pickle.dumps(chunks, protocol=5))

    def naive_s3fs_get() -> list[bytes]:
        state: list[bytes] = pickle.loads(fs.cat_file(f"{bucket}/{naive_key}"))
        return state

    limits = run.limits
    for rep in range(reps):
        log.log(f"{run.label}: repetition {rep + 1}/{reps}")
        add(limits, "zstd_compress_threads", lambda: [_mt_compress(chunk) for chunk in chunks])
        add(limits, "zstd_compress_pool", lambda: list(pool.map(_chunk_compress, chunks)))
        add(limits, "zstd_compress_window", lambda: list(wide.map(_chunk_compress, chunks)))
        for name in backends:
            save_then_restore(name)
        add(limits, "zstd_decompress_pool", lambda: list(pool.map(_decompress, frames)))
        add(limits, "zstd_decompress_window", lambda: list(wide.map(_decompress, frames)))
        add(limits, "zstd_decompress_single", lambda: [_decompress(f) for f in frames])
        add(limits, "result_allocation", lambda: bytearray(size))
        add(limits, "zstd_decompress_into_prefaulted", lambda: decompress_into(prefaulted))
        add(limits, "zstd_decompress_into_fresh", decompress_into_fresh)
        add(limits, "xxh3_sidecar", lambda: xxhash.xxh3_128_hexdigest(sidecar))
        add(limits, "xxh3_frames_pool", lambda: list(pool.map(xxhash.xxh3_128_hexdigest, frames)))
        add(limits, "file_raw_write", raw_file_write)
        add(limits, "file_raw_read", raw_file.read_bytes)
        if not run.full:
            continue
        add(
            limits,
            "s3_raw_put",
            lambda: s3.put_object(Bucket=bucket, Key=raw_key, Body=sidecar),
            s3=True,
        )
        add(
            limits,
            "s3_raw_get",
            lambda: s3.get_object(Bucket=bucket, Key=raw_key)["Body"].read(),
            s3=True,
        )
        add(run.naive, "boto3_put", naive_boto3_put, s3=True)
        add(run.naive, "boto3_get", naive_boto3_get, s3=True)
        add(run.naive, "s3fs_put", naive_s3fs_put, s3=True)
        add(run.naive, "s3fs_get", naive_s3fs_get, s3=True)
        s3.delete_object(Bucket=bucket, Key=raw_key)
        s3.delete_object(Bucket=bucket, Key=naive_key)
    # One more file save and restore with every xxh3 call timed (not part of the medians).
    file_store, checkpoint_id = stores["file"], next_id["file"]
    with hashing_cpu() as spent:
        file_store.save_with_state(manifest(checkpoint_id), iter(chunks))
    run.hashing["save"] = dict(spent)
    with hashing_cpu() as spent:
        file_store.load_state_data(checkpoint_id)
    run.hashing["restore"] = dict(spent)
    pool.shutdown()
    wide.shutdown()
    for store in stores.values():
        store.prune(1)
        store.close()
    raw_file.unlink(missing_ok=True)
    return run


def _mt_compress(chunk: bytes) -> bytes:
    """One chunk compressed by zstd's own worker threads (one per core)."""
    compressor = getattr(_local, "mt_compressor", None)
    if compressor is None:
        compressor = _local.mt_compressor = zstandard.ZstdCompressor(
            level=LEVEL, threads=-1, write_checksum=True, write_content_size=True
        )
    return compressor.compress(chunk)


# -- 4: request counts -------------------------------------------------------------------------


def count_requests(url: str, chunks: list[bytes]) -> dict[str, dict[str, int]]:
    """Requests each operation sends, from the call log (after the one-time fencing probe)."""
    faults = FaultInjectingTransport(open_transport(url))
    backend = Backend(AsyncBackend(faults))
    assert backend.probe().ok
    store = CheckpointStore(backend)
    counts: dict[str, dict[str, int]] = {}

    def record(name: str, action: Callable[[], object]) -> None:
        faults.clear_calls()
        action()
        tally: dict[str, int] = {}
        for call in faults.calls:
            tally[call.operation] = tally.get(call.operation, 0) + 1
        counts[name] = tally

    store.save_with_state(manifest(1), iter(chunks))  # the first save also creates latest.txt
    record("save (steady state)", lambda: store.save_with_state(manifest(2), iter(chunks)))
    record("load_latest", store.load_latest)
    record("load_state_data", lambda: store.load_state_data(2))
    record("recover_latest_validated", store.recover_latest_validated)
    store.save_with_state(manifest(3), [b"small"])
    record("prune(keep=1) of 2", lambda: store.prune(1))
    store.prune(1)
    store.close()
    return counts


# -- 5: latency vs retained checkpoints --------------------------------------------------------


def populate(target: str, root: str, retained: int, bucket: str) -> str:
    """A store holding ``retained`` small checkpoints; returns its URL.

    The checkpoints are written once by objstore to an in-memory store, then its objects
    are copied as they are (a setup step, not measured).
    """
    source_url = f"memory://retained-{retained}-{uuid.uuid4().hex}"
    source = CheckpointStore(source_url)
    for checkpoint_id in range(1, retained + 1):
        source.save_with_state(manifest(checkpoint_id), {"op": b"x" * 1024})
    if target == "memory":
        return source_url
    objects = Backend(source.async_store.backend)
    keys = [info.key for info in objects.list("")]
    if target == "file":
        for key in keys:
            path = Path(root, *key.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(objects.get(key)[0])
        return root
    s3 = boto3.client("s3")
    prefix = f"retained-{retained}-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda key: s3.put_object(
                    Bucket=bucket, Key=f"{prefix}/{key}", Body=objects.get(key)[0]
                ),
                keys,
            )
        )
    return f"s3://{bucket}/{prefix}"


def measure_latency(
    workdir: Path, bucket: str, counts: tuple[int, ...], reps: int, log: Console
) -> dict[str, dict[int, dict[str, Samples]]]:
    results: dict[str, dict[int, dict[str, Samples]]] = {}
    for target in BACKENDS:
        stores = {}
        for retained in counts:
            log.log(f"latency: {target}, {retained} retained")
            url = populate(target, str(workdir / f"retained-{retained}"), retained, bucket)
            stores[retained] = CheckpointStore(url)
            stores[retained].load_latest()  # connect and warm up
        per_count: dict[int, dict[str, Samples]] = {n: {} for n in counts}
        for _ in range(reps):  # interleaved, so drifting load hits both sizes alike
            for retained, store in stores.items():
                group = per_count[retained]
                latest = group.setdefault("load_latest", Samples()).measure(store.load_latest)
                assert latest is not None
                assert latest.checkpoint_id == retained
                report = group.setdefault("recover_latest_validated", Samples()).measure(
                    store.recover_latest_validated
                )
                assert report.chosen_id == retained
        for store in stores.values():
            store.close()
        results[target] = per_count
    return results


# -- 5b: small, frequent checkpoints ----------------------------------------------------------

SMALL_STATE = 4096
"""Bytes of state of a small checkpoint (a stream processor checkpointing every second)."""


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def measure_small(bucket: str, reps: int, log: Console) -> dict[str, Samples]:
    """Latency and client CPU of a 4 KiB checkpoint on s3, against one raw boto3 request.

    ``save``: ``save_with_state``; ``load``: ``load_latest`` then ``load_state_data``;
    ``raw_put``/``raw_get``: one boto3 ``put_object``/``get_object`` of the same 4 KiB.
    Interleaved one repetition at a time, with the garbage collector paused (collected
    between rounds) so that no collection lands inside one sample.
    """
    store = CheckpointStore(f"s3://{bucket}/small-{uuid.uuid4().hex[:8]}")
    s3 = boto3.client("s3")
    state = next(iter(make_state("columns", SMALL_STATE, SMALL_STATE)))
    raw_key = f"small-raw/{uuid.uuid4().hex}"
    results = {name: Samples(SMALL_STATE) for name in ("save", "load", "raw_put", "raw_get")}
    checkpoint_id = 0

    def save() -> None:
        store.save_with_state(manifest(checkpoint_id), [state])

    def load() -> None:
        latest = store.load_latest()
        assert latest is not None
        assert store.load_state_data(latest.checkpoint_id) == state

    actions: dict[str, Callable[[], object]] = {
        "save": save,
        "load": load,
        "raw_put": lambda: s3.put_object(Bucket=bucket, Key=raw_key, Body=state),
        "raw_get": lambda: s3.get_object(Bucket=bucket, Key=raw_key)["Body"].read(),
    }
    log.log(f"small checkpoints: {reps} repetitions")
    for round_number in range(reps + 5):  # the first 5 warm up connections and caches
        checkpoint_id += 1
        gc.collect()
        gc.disable()
        try:
            for name, action in actions.items():
                cpu, start = time.process_time(), time.perf_counter()
                action()
                if round_number >= 5:
                    results[name].seconds.append(time.perf_counter() - start)
                    results[name].cpu_seconds.append(time.process_time() - cpu)
        finally:
            gc.enable()
    store.prune(1)
    store.close()
    s3.delete_object(Bucket=bucket, Key=raw_key)
    return results


# -- 6: peak RSS ---------------------------------------------------------------------------------


def measure_rss(url: str, total: int) -> dict[str, dict[str, Any]]:
    """Peak RSS above the baseline of a streamed save and of a restore, each in a child."""
    out = {}
    for operation, args in (("save", [str(total)]), ("restore", [])):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks._rss", operation, url, *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"RSS child {operation} {url} failed:\n{done.stderr}")
        out[operation] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# -- targets and report ----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    measured: float
    bound: float
    higher_is_better: bool
    detail: str

    @property
    def met(self) -> bool:
        return self.measured >= self.bound if self.higher_is_better else self.measured <= self.bound

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "bound": self.bound,
            "higher_is_better": self.higher_is_better,
            "met": self.met,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Limit:
    """The fastest of several ways to do one kind of work, by its name in ``limits``."""

    name: str
    samples: Samples

    @property
    def median_s(self) -> float:
        return self.samples.median_s

    @property
    def median_cpu_s(self) -> float:
        return self.samples.median_cpu_s

    @property
    def median_rate(self) -> float:
        return self.samples.median_rate

    def cpu_rate_text(self) -> str:
        return self.samples.cpu_rate_text()


def _fastest(run: StateRun, names: tuple[str, ...]) -> Limit:
    name = min(names, key=lambda name: run.limits[name].median_s)
    return Limit(name, run.limits[name])


COMPRESS_WAYS = ("zstd_compress_threads", "zstd_compress_pool", "zstd_compress_window")
DECOMPRESS_WAYS = ("zstd_decompress_pool", "zstd_decompress_window", "zstd_decompress_single")
HASH_WAYS = ("xxh3_sidecar", "xxh3_frames_pool")


def compress_limit(run: StateRun) -> Limit:
    """The best way to compress these chunks with every core: zstd's own threads chunk by
    chunk, or one single-threaded context per chunk on a pool as wide as the machine (or
    as wide as the pipeline's window), whichever is fastest in this run."""
    return _fastest(run, COMPRESS_WAYS)


def decompress_limit(run: StateRun) -> Limit:
    """The best way to decompress these frames: one context per frame on a pool as wide as
    the machine (or the window), or one after another on one thread. zstd has no
    multi-threaded decompression, so a state of one frame is bounded by one core."""
    return _fastest(run, DECOMPRESS_WAYS)


def hash_limit(run: StateRun) -> Limit:
    """The faster of one xxh3 pass over the sidecar and its frames hashed on every core."""
    return _fastest(run, HASH_WAYS)


def _ratio_detail(ours: Samples, limit: Limit) -> str:
    return (
        f"{ours.median_rate:,.0f} vs {limit.median_rate:,.0f} MB/s; "
        f"CPU-time ratio {limit.median_cpu_s / ours.median_cpu_s:.2f}"
    )


def evaluate(
    states: list[StateRun],
    latency: dict[str, dict[int, dict[str, Samples]]],
    rss: dict[str, dict[str, dict[str, Any]]],
    counts: tuple[int, ...],
    small: dict[str, Samples],
) -> list[Target]:
    targets: list[Target] = []
    for run in states:
        k = run.label
        comp, decomp = compress_limit(run), decompress_limit(run)
        for backend in ("file", "memory"):
            targets.append(
                Target(
                    f"{k}: {backend} save / compression limit",
                    comp.median_s / run.save[backend].median_s,
                    0.90,
                    True,
                    _ratio_detail(run.save[backend], comp),
                )
            )
            targets.append(
                Target(
                    f"{k}: {backend} restore / decompression limit",
                    decomp.median_s / run.restore[backend].median_s,
                    0.90,
                    True,
                    _ratio_detail(run.restore[backend], decomp),
                )
            )
            fresh = Limit("zstd_decompress_into_fresh", run.limits["zstd_decompress_into_fresh"])
            targets.append(
                Target(
                    f"{k}: {backend} restore / decompression into one fresh result (informational)",
                    fresh.median_s / run.restore[backend].median_s,
                    float("inf"),
                    False,
                    _ratio_detail(run.restore[backend], fresh),
                )
            )
        save, restore = run.save["file"], run.restore["file"]
        for label, samples in (("save", save), ("restore", restore)):
            spent = run.hashing[label]
            transport = spent.get("objstore.backends._local", 0.0)
            total = sum(spent.values())
            targets.append(
                Target(
                    f"{k}: hashing share of file {label} (xxh3 CPU / wall time)",
                    total / samples.median_s,
                    0.02,
                    False,
                    f"{total * 1e3:.1f} ms of xxh3 ({(total - transport) * 1e3:.1f} checkpoint "
                    f"store, {transport * 1e3:.1f} local transport's version token) / "
                    f"{samples.median_s * 1e3:.0f} ms",
                )
            )
        if not run.full:
            continue
        s3_save = run.save["s3"].median_s
        reference = comp.median_s + run.limits["s3_raw_put"].median_s
        targets.append(
            Target(
                f"{k}: s3 save / (zstd compress + raw PUT of the sidecar)",
                s3_save / reference,
                1.1,
                False,
                f"{s3_save * 1e3:,.0f} ms vs {comp.median_s * 1e3:,.0f} + "
                f"{run.limits['s3_raw_put'].median_s * 1e3:,.0f} ms",
            )
        )
        naive = run.naive["boto3_put"].median_s
        targets.append(
            Target(
                f"{k}: s3 save / naive pickle+boto3 put_object",
                s3_save / naive,
                1.0,
                False,
                f"{run.save['s3'].median_rate:,.0f} vs "
                f"{run.naive['boto3_put'].median_rate:,.0f} MB/s"
                + ("" if k == "columns" else " (informational: the target names columns)"),
            )
        )
    few, many = counts
    for backend, per_count in latency.items():
        low, high = per_count[few]["load_latest"], per_count[many]["load_latest"]
        targets.append(
            Target(
                f"{backend}: load_latest at {many:,} / at {few} retained",
                high.median_s / low.median_s,
                1.2,
                False,
                f"{high.median_s * 1e3:.2f} vs {low.median_s * 1e3:.2f} ms",
            )
        )
    for backend, result in rss.items():
        save = result["save"]
        above = (save["peak_rss"] - save["baseline_rss"]) / 2**20
        targets.append(
            Target(
                f"{backend}: peak RSS of a {save['raw_bytes'] / 2**30:g} GiB streamed save "
                "above baseline (MiB)",
                above,
                256,
                False,
                f"baseline {save['baseline_rss'] / 2**20:.0f} MiB, "
                f"peak {save['peak_rss'] / 2**20:.0f} MiB",
            )
        )
        loaded = result["restore"]
        raw_mib = loaded["raw_bytes"] / 2**20
        targets.append(
            Target(
                f"{backend}: peak RSS of a {raw_mib / 1024:g} GiB restore above baseline minus "
                "the result (MiB)",
                (loaded["peak_rss"] - loaded["baseline_rss"]) / 2**20 - raw_mib,
                128,
                False,
                f"baseline {loaded['baseline_rss'] / 2**20:.0f} MiB, "
                f"peak {loaded['peak_rss'] / 2**20:.0f} MiB, result {raw_mib:,.0f} MiB",
            )
        )
    for ours, raw, what in (("save", "raw_put", "PUT"), ("load", "raw_get", "GET")):
        for fraction in (0.5, 0.99):
            mine = percentile(small[ours].seconds, fraction)
            reference = percentile(small[raw].seconds, fraction)
            targets.append(
                Target(
                    f"s3, 4 KiB state: {ours} p{fraction * 100:g} / one raw {what} (informational)",
                    mine / reference,
                    float("inf"),
                    False,
                    f"{mine * 1e3:.2f} vs {reference * 1e3:.2f} ms",
                )
            )
    return targets


def tables(
    states: list[StateRun],
    counts: dict[str, dict[str, dict[str, int]]],
    latency: dict[str, dict[int, dict[str, Samples]]],
    rss: dict[str, dict[str, dict[str, Any]]],
    targets: list[Target],
    reps: int,
    small: dict[str, Samples],
) -> list[Table]:
    out = []
    throughput = Table(
        "Save and restore throughput, MB/s of raw state: median (min-max)",
        ["state", "operation", *BACKENDS],
        note=f"{reps} repetitions; MB = 10^6 bytes.",
    )
    for run in states:
        label = (
            f"{run.kind} ({run.raw_bytes / 2**20:.0f} MiB, {run.chunks} chunks of "
            f"{run.chunk_mib} MiB, zstd {run.raw_bytes / run.sidecar_bytes:.1f}x)"
        )

        def cell(group: dict[str, Samples], backend: str) -> str:
            return group[backend].rate_text() if backend in group else "-"

        throughput.rows.append([label, "save", *(cell(run.save, b) for b in BACKENDS)])
        throughput.rows.append(["", "restore", *(cell(run.restore, b) for b in BACKENDS)])
    out.append(throughput)

    limits = Table(
        "Machine limits on the same bytes, MB/s of raw state: median (min-max)",
        ["measurement", *(run.label for run in states)],
        note="The limit of each kind of work (bold) is the fastest way measured in this run. "
        f"Pools: 'machine' has {CPUS} threads (one per core), 'window' as many as the "
        "pipeline's chunks_in_flight. Raw write/read and xxh3 move the compressed sidecar; "
        "rates are still per raw byte so they compare with the table above. File reads come "
        "from the page cache, as the restores above do.",
    )
    names = [
        ("zstd compress, zstd's own threads, chunk by chunk", "zstd_compress_threads"),
        ("zstd compress, one context per chunk, machine pool", "zstd_compress_pool"),
        ("zstd compress, one context per chunk, window pool", "zstd_compress_window"),
        ("zstd decompress, machine pool", "zstd_decompress_pool"),
        ("zstd decompress, window pool", "zstd_decompress_window"),
        ("zstd decompress, one thread", "zstd_decompress_single"),
        ("(reference) zero-fill a result on one thread: bytearray(n)", "result_allocation"),
        ("(reference) decompress into faulted-in memory", "zstd_decompress_into_prefaulted"),
        ("(fair limit) machine pool into one fresh result", "zstd_decompress_into_fresh"),
        ("xxh3-128, one pass over the sidecar", "xxh3_sidecar"),
        ("xxh3-128, frames on the machine pool", "xxh3_frames_pool"),
        ("file: write + fsync the sidecar", "file_raw_write"),
        ("file: read the sidecar", "file_raw_read"),
        ("s3: boto3 put_object of the sidecar", "s3_raw_put"),
        ("s3: boto3 get_object of the sidecar", "s3_raw_get"),
    ]
    fastest = {
        run.label: {
            compress_limit(run).name,
            decompress_limit(run).name,
            hash_limit(run).name,
        }
        for run in states
    }

    def limit_cell(run: StateRun, key: str) -> str:
        if key not in run.limits:
            return "-"
        text = run.limits[key].rate_text()
        return f"**{text}**" if key in fastest[run.label] else text

    for text, key in names:
        limits.rows.append([text, *(limit_cell(run, key) for run in states)])
    out.append(limits)

    cpu = Table(
        "CPU cost: MB of raw state per CPU-second of the benchmark process (median)",
        [
            "state",
            "zstd compress",
            *(f"save {b}" for b in BACKENDS),
            "zstd decompress",
            *(f"restore {b}" for b in BACKENDS),
        ],
        note="Barely depends on how busy the machine is (unlike wall time). The s3 columns "
        "count the client only (the moto server is another process).",
    )
    for run in states:

        def cpu_cell(group: dict[str, Samples], backend: str) -> str:
            return group[backend].cpu_rate_text() if backend in group else "-"

        cpu.rows.append(
            [
                run.label,
                compress_limit(run).cpu_rate_text(),
                *(cpu_cell(run.save, b) for b in BACKENDS),
                decompress_limit(run).cpu_rate_text(),
                *(cpu_cell(run.restore, b) for b in BACKENDS),
            ]
        )
    out.append(cpu)

    s3cpu = Table(
        "s3 CPU accounting, seconds (median): the moto server shares the machine's cores",
        ["state", "path", "wall", "client CPU", "moto CPU"],
        note="Sequential reference = zstd compress (the limit) then boto3 put_object of the "
        "sidecar; objstore overlaps the two, so on a machine whose cores are all busy its "
        "wall time is bounded by (client CPU + moto CPU) / cores.",
    )
    full = [run for run in states if run.full]
    for run in full:
        comp, put = compress_limit(run), run.limits["s3_raw_put"]
        s3cpu.rows.append(
            [
                run.label,
                "objstore save",
                f"{run.save['s3'].median_s:.3f}",
                f"{run.save['s3'].median_cpu_s:.3f}",
                f"{run.save['s3'].median_server_cpu_s:.3f}",
            ]
        )
        s3cpu.rows.append(
            [
                "",
                "compress, then raw put",
                f"{comp.median_s + put.median_s:.3f}",
                f"{comp.median_cpu_s + put.median_cpu_s:.3f}",
                f"{put.median_server_cpu_s:.3f}",
            ]
        )
        naive_put = run.naive["boto3_put"]
        s3cpu.rows.append(
            [
                "",
                "naive pickle + boto3 put",
                f"{naive_put.median_s:.3f}",
                f"{naive_put.median_cpu_s:.3f}",
                f"{naive_put.median_server_cpu_s:.3f}",
            ]
        )
    out.append(s3cpu)

    client = Table(
        "s3 client CPU per MB of raw state (ms per MB, median)",
        ["state", "save", "zstd compress + boto3 PUT", "restore", "zstd decompress + boto3 GET"],
        note="CPU of the benchmark process only (all its threads). The references are the "
        "compression/decompression limit plus one raw boto3 put_object/get_object of the "
        "sidecar: what the client must at least spend to move this state compressed.",
    )
    for run in full:

        def per_mb(seconds: float, mb: float = run.raw_bytes / 1e6) -> str:
            return f"{seconds * 1e3 / mb:.2f}"

        put, get = run.limits["s3_raw_put"], run.limits["s3_raw_get"]
        client.rows.append(
            [
                run.label,
                per_mb(run.save["s3"].median_cpu_s),
                per_mb(compress_limit(run).median_cpu_s + put.median_cpu_s),
                per_mb(run.restore["s3"].median_cpu_s),
                per_mb(decompress_limit(run).median_cpu_s + get.median_cpu_s),
            ]
        )
    out.append(client)

    naive = Table(
        "Naive baseline on s3 (pickle, no compression, no checksum), MB/s: median (min-max)",
        ["path", *(f"{run.label} {op}" for run in full for op in ("save", "restore"))],
    )
    naive.rows.append(
        [
            "objstore",
            *(
                t
                for run in full
                for t in (run.save["s3"].rate_text(), run.restore["s3"].rate_text())
            ),
        ]
    )
    for label, key in (("pickle + boto3", "boto3"), ("pickle + s3fs", "s3fs")):
        naive.rows.append(
            [
                label,
                *(
                    t
                    for run in full
                    for t in (
                        run.naive[f"{key}_put"].rate_text(),
                        run.naive[f"{key}_get"].rate_text(),
                    )
                ),
            ]
        )
    out.append(naive)

    requests = Table(
        "Requests per operation (call log)",
        ["operation", *counts],
        note="Streamed creates are one call-log entry; on S3 that is a multipart upload: "
        "create + one request per part + complete (If-None-Match).",
    )
    operations = list(next(iter(counts.values())))
    for operation in operations:
        requests.rows.append(
            [operation, *(_tally(counts[backend][operation]) for backend in counts)]
        )
    out.append(requests)

    few, many = sorted(next(iter(latency.values())))
    lat = Table(
        "Latency with few vs many retained checkpoints, ms: median (min-max)",
        [
            "backend",
            f"load_latest @{few}",
            f"load_latest @{many:,}",
            f"recover @{few}",
            f"recover @{many:,}",
        ],
    )
    for backend, per_count in latency.items():
        lat.rows.append(
            [
                backend,
                per_count[few]["load_latest"].ms_text(),
                per_count[many]["load_latest"].ms_text(),
                per_count[few]["recover_latest_validated"].ms_text(),
                per_count[many]["recover_latest_validated"].ms_text(),
            ]
        )
    out.append(lat)

    memory = Table(
        "Peak RSS, each operation in a fresh process (MiB)",
        ["backend", "operation", "raw state", "baseline", "peak", "peak - baseline", "seconds"],
    )
    for backend, result in rss.items():
        for operation, r in result.items():
            memory.rows.append(
                [
                    backend,
                    operation,
                    f"{r['raw_bytes'] / 2**20:,.0f}",
                    f"{r['baseline_rss'] / 2**20:,.0f}",
                    f"{r['peak_rss'] / 2**20:,.0f}",
                    f"{(r['peak_rss'] - r['baseline_rss']) / 2**20:,.0f}",
                    f"{r['seconds']:.1f}",
                ]
            )
    out.append(memory)

    small_table = Table(
        f"Small checkpoints on s3 ({SMALL_STATE // 1024} KiB of state), ms",
        ["operation", "requests", "p50", "p99", "p50 / raw", "p99 / raw", "client CPU p50"],
        note="save = save_with_state (sidecar create, manifest create, pointer swap: three "
        "sequential requests by design, each waiting for the previous one to be durable); "
        "load = load_latest + load_state_data (pointer, manifest, listing after it, then "
        "manifest and sidecar). raw = one boto3 put_object / get_object of the same bytes.",
    )
    for ours, raw, requests_text in (("save", "raw_put", "3W"), ("load", "raw_get", "5R")):
        for name, label in ((ours, ours), (raw, f"raw {'PUT' if ours == 'save' else 'GET'}")):
            group = small[name]
            p50, p99 = percentile(group.seconds, 0.5), percentile(group.seconds, 0.99)
            reference = small[raw]
            small_table.rows.append(
                [
                    label,
                    requests_text if name == ours else "1",
                    f"{p50 * 1e3:.2f}",
                    f"{p99 * 1e3:.2f}",
                    f"{p50 / percentile(reference.seconds, 0.5):.2f}",
                    f"{p99 / percentile(reference.seconds, 0.99):.2f}",
                    f"{percentile(group.cpu_seconds, 0.5) * 1e3:.2f}",
                ]
            )
    out.append(small_table)

    verdicts = Table("Targets", ["target", "measured", "bound", "met", "detail"])
    for target in targets:
        sign = ">=" if target.higher_is_better else "<="
        verdicts.rows.append(
            [
                target.name,
                _number(target.measured),
                f"{sign} {target.bound:g}" if target.bound != float("inf") else "-",
                ("yes" if target.met else "**no**") if target.bound != float("inf") else "-",
                target.detail,
            ]
        )
    out.append(verdicts)
    return out


def _number(value: float) -> str:
    if value < 10:
        return f"{value:.3f}"
    return f"{value:.1f}" if value < 100 else f"{value:,.0f}"


def _tally(calls: dict[str, int]) -> str:
    reads = sum(n for op, n in calls.items() if op in ("get", "get_range", "head", "list"))
    writes = sum(calls.values()) - reads
    detail = ", ".join(f"{op} {n}" for op, n in sorted(calls.items()))
    return f"{reads}R + {writes}W ({detail})" if calls else "none"


def update_results(markdown: str) -> None:
    """Replace the generated section of RESULTS.md (between the markers) with ``markdown``."""
    text = RESULTS_MD.read_text() if RESULTS_MD.exists() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    RESULTS_MD.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}")


# -- main ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256, help="raw size of each state")
    parser.add_argument("--reps", type=int, default=5, help="repetitions (at least 5)")
    parser.add_argument("--rss-gib", type=float, default=1.0, help="streamed save size for RSS")
    parser.add_argument("--retained", type=int, default=1000, help="many retained checkpoints")
    parser.add_argument(
        "--large-chunk-mib", type=int, default=64, help="chunk size of the second pass (0: none)"
    )
    parser.add_argument("--small-reps", type=int, default=300, help="4 KiB checkpoints timed")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument(
        "--update-results", action="store_true", help="rewrite the tables in RESULTS.md"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run (32 MiB, 3 reps, 100 retained)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.size_mib, args.reps, args.rss_gib, args.retained = 32, 3, 0.25, 100
        args.small_reps = 50
    console = Console()
    machine = machine_line()
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="objstore-bench-"))
    counts_retained = (10, args.retained)
    try:
        with moto_server() as server:
            console.log(f"moto server at {server.endpoint} (separate process)")
            bucket = new_bucket()
            states = []
            request_counts: dict[str, dict[str, dict[str, int]]] = {}
            for kind in STATES:
                console.log(f"generating the {kind} state ({args.size_mib} MiB)")
                chunks = make_state(kind, args.size_mib * 2**20)
                states.append(
                    measure_state(
                        kind,
                        chunks,
                        reps=args.reps,
                        bucket=bucket,
                        workdir=workdir,
                        server=server.process,
                        log=console,
                    )
                )
                if kind == "columns":
                    console.log("request counts")
                    request_counts = {
                        "file": count_requests(str(workdir / "counts"), chunks),
                        "memory": count_requests(f"memory://counts-{uuid.uuid4().hex}", chunks),
                        "s3": count_requests(f"s3://{bucket}/counts", chunks),
                    }
                del chunks
                if args.large_chunk_mib:
                    console.log(f"the {kind} state in {args.large_chunk_mib} MiB chunks")
                    chunks = make_state(kind, args.size_mib * 2**20, args.large_chunk_mib * 2**20)
                    states.append(
                        measure_state(
                            kind,
                            chunks,
                            reps=args.reps,
                            bucket=bucket,
                            workdir=workdir,
                            server=server.process,
                            log=console,
                            chunk_mib=args.large_chunk_mib,
                            backends=("file", "memory"),
                        )
                    )
                    del chunks
            small = measure_small(bucket, args.small_reps, console)
            latency = measure_latency(workdir, bucket, counts_retained, max(15, args.reps), console)
            console.log(f"peak RSS of {args.rss_gib} GiB streamed save and restore")
            rss_bytes = int(args.rss_gib * 2**30)
            rss = {
                "file": measure_rss(str(workdir / "rss"), rss_bytes),
                "s3": measure_rss(f"s3://{bucket}/rss", rss_bytes),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    machine["load_average_at_end"] = os.getloadavg()
    elapsed = time.perf_counter() - started
    targets = evaluate(states, latency, rss, counts_retained, small)
    report = tables(states, request_counts, latency, rss, targets, args.reps, small)
    console.print(f"[bold]Machine:[/bold] {machine_text(machine)}")
    for table in report:
        console.print(table.rich())
    console.print(f"Total benchmark time: {elapsed:.0f} s")
    result = {
        "machine": machine,
        "config": {
            "size_mib": args.size_mib,
            "reps": args.reps,
            "rss_gib": args.rss_gib,
            "retained": counts_retained,
            "zstd_level": LEVEL,
            "seconds": elapsed,
        },
        "states": {run.label: run.to_json() for run in states},
        "requests": request_counts,
        "latency": {
            backend: {
                str(n): {op: s.to_json() for op, s in group.items()}
                for n, group in per_count.items()
            }
            for backend, per_count in latency.items()
        },
        "rss": rss,
        "small_checkpoints": {name: s.to_json() for name, s in small.items()},
        "targets": [t.to_json() for t in targets],
    }
    args.json.write_text(json.dumps(result, indent=2))
    console.log(f"wrote {args.json}")
    if args.update_results:
        markdown = (
            f"Command: `python -m benchmarks.run --update-results`"
            f" ({elapsed / 60:.1f} min)\n\nMachine: {machine_text(machine)}\n\n"
            + "\n".join(table.markdown() for table in report)
        )
        update_results(markdown)
        console.log(f"updated {RESULTS_MD}")


if __name__ == "__main__":
    main()
