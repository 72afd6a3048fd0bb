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
    sidecar_bytes: int = 0
    save: dict[str, Samples] = field(default_factory=dict)
    restore: dict[str, Samples] = field(default_factory=dict)
    limits: dict[str, Samples] = field(default_factory=dict)
    naive: dict[str, Samples] = field(default_factory=dict)
    hashing: dict[str, dict[str, float]] = field(default_factory=dict)
    """CPU seconds in xxh3 of one file save and one file restore, by calling module."""

    def to_json(self) -> dict[str, Any]:
        return {
            "raw_bytes": self.raw_bytes,
            "chunks": self.chunks,
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
) -> StateRun:
    raw = b"".join(chunks)
    size = len(raw)
    run = StateRun(kind, size, len(chunks))
    stores = {
        "file": CheckpointStore(workdir / f"store-{kind}"),
        "memory": CheckpointStore(f"memory://bench-{kind}-{uuid.uuid4().hex}"),
        "s3": CheckpointStore(f"s3://{bucket}/store-{kind}"),
    }
    s3 = boto3.client("s3")
    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    # The limits use the same parallelism as the pipeline: chunks_in_flight at once.
    pool = ThreadPoolExecutor(stores["file"].async_store.chunks_in_flight)
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
    sidecar_path = workdir / f"store-{kind}" / "checkpoints"
    sidecar = next(sidecar_path.rglob("state.bin")).read_bytes()
    frames = [sidecar[e.offset : e.offset + e.length] for e in index.operator_states]
    raw_file = workdir / f"raw-{kind}.bin"

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
        log.log(f"{kind}: repetition {rep + 1}/{reps}")
        add(limits, "zstd_compress_mt", lambda: _mt_compress(raw))
        add(limits, "zstd_compress_chunks", lambda: list(pool.map(_chunk_compress, chunks)))
        for name in BACKENDS:
            save_then_restore(name)
        add(limits, "zstd_decompress_parallel", lambda: list(pool.map(_decompress, frames)))
        add(limits, "zstd_decompress_single", lambda: [_decompress(f) for f in frames])
        add(limits, "result_allocation", lambda: bytearray(size))
        add(limits, "zstd_decompress_into_prefaulted", lambda: decompress_into(prefaulted))
        add(limits, "xxh3_sidecar", lambda: xxhash.xxh3_128_hexdigest(sidecar))
        add(limits, "file_raw_write", raw_file_write)
        add(limits, "file_raw_read", raw_file.read_bytes)
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
    for store in stores.values():
        store.prune(1)
        store.close()
    raw_file.unlink(missing_ok=True)
    return run


def _mt_compress(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(
        level=LEVEL, threads=-1, write_checksum=True, write_content_size=True
    ).compress(raw)


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


def compress_limit(run: StateRun) -> Samples:
    """The faster of zstd's own multi-threaded compressor on the whole state and the
    chunks compressed on every core at once: the stricter reference."""
    a, b = run.limits["zstd_compress_mt"], run.limits["zstd_compress_chunks"]
    return a if a.median_s <= b.median_s else b


def decompress_limit(run: StateRun) -> Samples:
    a, b = run.limits["zstd_decompress_parallel"], run.limits["zstd_decompress_single"]
    return a if a.median_s <= b.median_s else b


def evaluate(
    states: list[StateRun],
    latency: dict[str, dict[int, dict[str, Samples]]],
    rss: dict[str, dict[str, dict[str, Any]]],
    counts: tuple[int, ...],
) -> list[Target]:
    targets: list[Target] = []
    for run in states:
        k = run.kind
        save, restore = run.save["file"], run.restore["file"]
        comp, decomp = compress_limit(run), decompress_limit(run)
        targets.append(
            Target(
                f"{k}: file save / zstd compress (all threads)",
                comp.median_s / save.median_s,
                0.85,
                True,
                f"{save.median_rate:,.0f} vs {comp.median_rate:,.0f} MB/s",
            )
        )
        targets.append(
            Target(
                f"{k}: file restore / zstd decompress",
                decomp.median_s / restore.median_s,
                0.85,
                True,
                f"{restore.median_rate:,.0f} vs {decomp.median_rate:,.0f} MB/s",
            )
        )
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
    return targets


def tables(
    states: list[StateRun],
    counts: dict[str, dict[str, dict[str, int]]],
    latency: dict[str, dict[int, dict[str, Samples]]],
    rss: dict[str, dict[str, dict[str, Any]]],
    targets: list[Target],
    reps: int,
) -> list[Table]:
    out = []
    throughput = Table(
        "Save and restore throughput, MB/s of raw state: median (min-max)",
        ["state", "operation", *BACKENDS],
        note=f"{reps} repetitions; MB = 10^6 bytes.",
    )
    for run in states:
        label = (
            f"{run.kind} ({run.raw_bytes / 2**20:.0f} MiB, {run.chunks} chunks, "
            f"zstd {run.raw_bytes / run.sidecar_bytes:.1f}x)"
        )
        throughput.rows.append([label, "save", *(run.save[b].rate_text() for b in BACKENDS)])
        throughput.rows.append(["", "restore", *(run.restore[b].rate_text() for b in BACKENDS)])
    out.append(throughput)

    limits = Table(
        "Machine limits on the same bytes, MB/s of raw state: median (min-max)",
        ["measurement", *(run.kind for run in states)],
        note="Raw write/read and xxh3 move the compressed sidecar; rates are still per raw "
        "byte so they compare with the table above. File reads come from the page cache, "
        "as the restores above do.",
    )
    names = [
        ("zstd compress, zstd threads on the whole state", "zstd_compress_mt"),
        ("zstd compress, chunks in parallel as objstore does", "zstd_compress_chunks"),
        ("zstd decompress, frames in parallel", "zstd_decompress_parallel"),
        ("zstd decompress, one thread", "zstd_decompress_single"),
        ("(reference) zero-fill a result on one thread: bytearray(n)", "result_allocation"),
        ("(reference) decompress into faulted-in memory", "zstd_decompress_into_prefaulted"),
        ("xxh3-128, one pass over the sidecar", "xxh3_sidecar"),
        ("file: write + fsync the sidecar", "file_raw_write"),
        ("file: read the sidecar", "file_raw_read"),
        ("s3: boto3 put_object of the sidecar", "s3_raw_put"),
        ("s3: boto3 get_object of the sidecar", "s3_raw_get"),
    ]
    for text, key in names:
        limits.rows.append([text, *(run.limits[key].rate_text() for run in states)])
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
        note="Independent of how busy the machine is. The s3 columns count the client only "
        "(the moto server is another process).",
    )
    for run in states:
        cpu.rows.append(
            [
                run.kind,
                compress_limit(run).cpu_rate_text(),
                *(run.save[b].cpu_rate_text() for b in BACKENDS),
                decompress_limit(run).cpu_rate_text(),
                *(run.restore[b].cpu_rate_text() for b in BACKENDS),
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
    for run in states:
        comp, put = compress_limit(run), run.limits["s3_raw_put"]
        s3cpu.rows.append(
            [
                run.kind,
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

    naive = Table(
        "Naive baseline on s3 (pickle, no compression, no checksum), MB/s: median (min-max)",
        ["path", *(f"{run.kind} {op}" for run in states for op in ("save", "restore"))],
    )
    naive.rows.append(
        [
            "objstore",
            *(
                t
                for run in states
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
                    for run in states
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

    verdicts = Table("Targets", ["target", "measured", "bound", "met", "detail"])
    for target in targets:
        sign = ">=" if target.higher_is_better else "<="
        verdicts.rows.append(
            [
                target.name,
                _number(target.measured),
                f"{sign} {target.bound:g}",
                "yes" if target.met else "**no**",
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
    targets = evaluate(states, latency, rss, counts_retained)
    report = tables(states, request_counts, latency, rss, targets, args.reps)
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
        "states": {run.kind: run.to_json() for run in states},
        "requests": request_counts,
        "latency": {
            backend: {
                str(n): {op: s.to_json() for op, s in group.items()}
                for n, group in per_count.items()
            }
            for backend, per_count in latency.items()
        },
        "rss": rss,
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
