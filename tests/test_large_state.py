"""Large state: streamed saves, bounded memory, multipart sidecars, one GET per restore.

Sizes are kept modest so the file runs in seconds; throughput is measured by
``benchmarks/``, never asserted here. The single-PUT limits are lowered where a test needs
the streamed path with little data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import threading
import tracemalloc
from collections.abc import AsyncIterable, Callable, Iterator
from pathlib import Path

import boto3
import pytest

import objstore.checkpoint._sidecar as sidecar_module
from objstore import CheckpointConflict, CheckpointStore, CorruptionError
from objstore.backends import (
    AsyncBackend,
    Backend,
    Buffer,
    MemoryTransport,
    RetryPolicy,
    open_backend,
)
from objstore.checkpoint import state_key
from tests.checkpoint_helpers import faulty_store, manifest
from tests.conftest import make_store_url

KiB = 1024
MiB = 1024 * KiB


@pytest.fixture(params=["memory", "file", "s3"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on each backend the issue names."""
    return make_store_url(request.param, request, tmp_path)


STREAMED = 0
"""A ``single_put_limit`` that sends every sidecar larger than its header through the
streamed path."""


def compressible(index: int, size: int) -> bytes:
    """Chunk ``index``: distinct, compressible, ``size`` bytes."""
    line = f"chunk {index:05d} counter ".encode()
    return (line * (size // len(line) + 1))[:size]


def sizes(count: int) -> list[int]:
    """Varied chunk sizes, including empty ones."""
    return [0 if i % 17 == 5 else (i * 7919) % (48 * KiB) + 1 for i in range(count)]


# -- round trips -------------------------------------------------------------------------------


def test_streamed_save_of_many_chunks_round_trips(url: str) -> None:
    chunk_sizes = sizes(300)
    store = CheckpointStore(url, chunks_in_flight=3, single_put_limit=STREAMED)

    def chunks() -> Iterator[bytes]:
        for index, size in enumerate(chunk_sizes):
            yield compressible(index, size)

    saved = store.save_with_state(manifest(1), chunks())
    assert len(saved.operator_states) == 300
    expected = b"".join(compressible(i, size) for i, size in enumerate(chunk_sizes))
    assert store.load_state_data(1) == expected
    for index in (0, 5, 150, 299):
        assert store.load_operator_state(1, index) == compressible(index, chunk_sizes[index])
    assert store.validate_checkpoint(1).valid
    assert CheckpointStore(url).load_latest() == saved


def test_async_iterator_of_named_chunks_round_trips(url: str) -> None:
    async def chunks() -> AsyncIterable[tuple[str, bytes]]:
        for index in range(40):
            await asyncio.sleep(0)
            yield f"operator-{index}", compressible(index, 10 * KiB + index)

    store = CheckpointStore(url, single_put_limit=STREAMED)
    store.save_with_state(manifest(1), chunks())
    assert store.load_operator_state(1, "operator-33") == compressible(33, 10 * KiB + 33)
    assert store.load_state_data(1) == b"".join(compressible(i, 10 * KiB + i) for i in range(40))


def test_chunk_compressed_with_zstd_threads_round_trips(url: str) -> None:
    big = compressible(1, sidecar_module.MULTITHREAD_THRESHOLD + 123)
    store = CheckpointStore(url)
    store.save_with_state(manifest(1), [b"small", big, b""])
    assert store.load_state_data(1) == b"small" + big
    assert store.load_operator_state(1, 1) == big


def test_zstd_threads_only_for_a_large_chunk_compressed_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads_used: list[int] = []
    compress = sidecar_module._compress

    def recorded(data: Buffer, level: int, threads: int) -> tuple[bytes, str, int]:
        threads_used.append(threads)
        return compress(data, level, threads)

    monkeypatch.setattr(sidecar_module, "_compress", recorded)
    large = compressible(0, sidecar_module.MULTITHREAD_THRESHOLD)
    store = CheckpointStore("memory://", chunks_in_flight=4)
    all_cores = os.cpu_count() or 1
    alone = all_cores if all_cores > 1 else 0
    store.save_with_state(manifest(1), [large])
    assert threads_used == [alone]
    threads_used.clear()
    # Submitted back to back: a small chunk is compressed at once on the event loop (never
    # with zstd threads), so the first large one runs alone; the others find it busy and
    # run one per thread.
    store.save_with_state(manifest(2), [b"small", large, large, large])
    assert threads_used == [0, alone, 0, 0]
    threads_used.clear()
    store.save_with_state(manifest(3), [large, large, b"small"])
    # (the small chunk's compression is recorded first: it is not handed to a thread)
    assert threads_used == [0, alone, 0]
    assert store.load_state_data(3) == large + large + b"small"


# -- bounded memory and chunks in flight -------------------------------------------------------


class _CountingTransport(MemoryTransport):
    """Memory objects that count the parts a streamed create has consumed so far."""

    def __init__(self) -> None:
        super().__init__()
        self.parts_consumed = 0

    async def put_if_absent_stream(
        self, key: str, parts: AsyncIterable[Buffer], *, retry: RetryPolicy | None = None
    ) -> str:
        async def counted() -> AsyncIterable[Buffer]:
            async for part in parts:
                self.parts_consumed += 1
                yield part

        return await super().put_if_absent_stream(key, counted(), retry=retry)


@pytest.mark.parametrize("window", [1, 2, 5])
def test_chunks_in_flight_is_respected(window: int, monkeypatch: pytest.MonkeyPatch) -> None:
    transport = _CountingTransport()
    store = CheckpointStore(
        Backend(AsyncBackend(transport)), chunks_in_flight=window, single_put_limit=STREAMED
    )
    active = 0
    most_active = 0
    lock = threading.Lock()
    compress = sidecar_module._compress

    def tracked(data: Buffer, level: int, threads: int) -> tuple[bytes, str, int]:
        nonlocal active, most_active
        with lock:
            active += 1
            most_active = max(most_active, active)
        try:
            return compress(data, level, threads)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(sidecar_module, "_compress", tracked)
    held: list[int] = []

    def chunks() -> Iterator[bytes]:
        for index in range(30):
            # Chunks taken from us (this one included) whose frames the transport has not
            # consumed yet; the header is the first part consumed.
            held.append(index + 1 - max(0, transport.parts_consumed - 1))
            yield compressible(index, 32 * KiB)

    store.save_with_state(manifest(1), chunks())
    assert max(held) == window  # the whole window is used, and never exceeded
    assert most_active <= window
    assert transport.parts_consumed == 31


def _peak_traced_memory(root: Path, chunk_count: int, chunk_size: int, window: int) -> int:
    store = CheckpointStore(root, chunks_in_flight=window)

    def chunks() -> Iterator[bytes]:
        for _ in range(chunk_count):
            yield os.urandom(chunk_size)  # incompressible: frames as large as chunks

    tracemalloc.start()
    try:
        store.save_with_state(manifest(1), chunks())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_of_a_streamed_save_is_bounded_by_the_window(tmp_path: Path) -> None:
    chunk, window = 1 * MiB, 2
    small = _peak_traced_memory(tmp_path / "small", 8, chunk, window)
    large = _peak_traced_memory(tmp_path / "large", 64, chunk, window)
    # Held at once: `window` chunks being compressed and their frames, the frame being
    # written and the chunk being generated; nothing grows with the state (64 MiB here).
    bound = (2 * window + 4) * chunk
    assert large < bound, (large, bound)
    assert large < small + 2 * chunk, (small, large)


# -- S3 multipart ------------------------------------------------------------------------------


def _bucket_and_prefix(url: str) -> tuple[str, str]:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return bucket, prefix


def test_large_sidecar_goes_multipart_on_s3_and_stays_create_if_absent(s3_url: str) -> None:
    options = {"part_size": 5 * MiB, "parts_in_flight": 2}
    first = CheckpointStore(s3_url, storage_options=options, single_put_limit=1 * MiB)
    state = [os.urandom(1 * MiB) for _ in range(12)]
    saved = first.save_with_state(manifest(1, epoch=2), iter(state))
    bucket, prefix = _bucket_and_prefix(s3_url)
    client = boto3.client("s3")
    head = client.head_object(Bucket=bucket, Key=f"{prefix}/{state_key(1)}")
    assert head["ETag"].strip('"').endswith("-3")  # 12 MiB + frames in 5 MiB parts
    assert head["ContentLength"] == saved.state_size

    second = CheckpointStore(s3_url, storage_options=options, single_put_limit=1 * MiB)
    with pytest.raises(CheckpointConflict):
        second.save_with_state(manifest(1, epoch=2), (os.urandom(1 * MiB) for _ in range(12)))
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert CheckpointStore(s3_url).load_state_data(1) == b"".join(state)
    assert CheckpointStore(s3_url).validate_checkpoint(1).valid


# -- restore requests --------------------------------------------------------------------------


def test_restore_is_one_get_per_object(url: str) -> None:
    store, faults = faulty_store(url, single_put_limit=STREAMED)
    store.save_with_state(manifest(1), (compressible(i, 64 * KiB) for i in range(20)))
    faults.clear_calls()
    assert store.load_state_data(1) == b"".join(compressible(i, 64 * KiB) for i in range(20))
    # One GET each, no HEAD; the sidecar's GET names a range covering all of it, so that a
    # local directory need not hash the file for a version token nobody uses.
    assert [(call.operation, call.key.rsplit("/", 1)[-1]) for call in faults.calls] == [
        ("get", "manifest.json"),
        ("get_range", "state.bin"),
    ]
    faults.clear_calls()
    assert store.load_operator_state(1, 7) == compressible(7, 64 * KiB)
    assert [call.operation for call in faults.calls] == ["get", "get_range"]


def test_restore_returns_bytes_and_holds_one_full_size_buffer(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path)
    chunks = [compressible(i, 1 * MiB) for i in range(24)]
    saved = store.save_with_state(manifest(1), chunks)
    assert saved.state_size is not None
    raw = 24 * MiB
    tracemalloc.start()
    try:
        state = store.load_state_data(1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert type(state) is bytes
    assert state == b"".join(chunks)
    # The result, the downloaded sidecar and small change; joining decompressed frames
    # (or copying the result out of a scratch buffer) would need twice the raw size.
    assert peak < raw + saved.state_size + 4 * MiB, (peak, raw)


@pytest.mark.parametrize("backend", ["file", "memory"])
def test_restore_holds_the_result_and_a_bounded_window_not_the_sidecar(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The sidecar is decompressed while it is read: besides the result, a restore holds
    the frames in flight and the pieces they lie in, not the whole downloaded file."""
    store = CheckpointStore(make_store_url(backend, request, tmp_path), chunks_in_flight=2)
    chunks = [os.urandom(1 * MiB) for _ in range(48)]  # incompressible: sidecar ~ 48 MiB
    saved = store.save_with_state(manifest(1), chunks)
    assert saved.state_size is not None
    assert saved.state_size > 48 * MiB
    tracemalloc.start()
    try:
        state = store.load_state_data(1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert state == b"".join(chunks)
    assert peak < 48 * MiB + 20 * MiB, (peak, saved.state_size)


def _encoded_sidecar(chunks: list[bytes]) -> tuple[bytes, sidecar_module.EncodedState]:
    async def encode() -> tuple[bytes, sidecar_module.EncodedState]:
        encoder = sidecar_module.SidecarEncoder(7, 3, b"n" * 16, level=3, window=3)
        pieces = [p async for p in encoder.pieces(sidecar_module.iter_chunks(chunks))]
        return b"".join(pieces), encoder.result()

    return asyncio.run(encode())


async def _pieces_of(data: bytes, cuts: list[int]) -> AsyncIterable[Buffer]:
    start = 0
    for cut in [*cuts, len(data)]:
        if cut > start:
            yield data[start:cut]
            start = cut
        await asyncio.sleep(0)


def _decode(data: bytes, encoded: sidecar_module.EncodedState, *, cuts: list[int] | None) -> bytes:
    options = {
        "key": "k",
        "checkpoint_id": 7,
        "nonce": (b"n" * 16).hex(),
        "size": encoded.size,
        "state_checksum": encoded.checksum,
        "entries": encoded.entries,
        "parallelism": 2,
    }
    if cuts is None:
        return asyncio.run(sidecar_module.decode_sidecar(data, **options))  # type: ignore[arg-type]
    return asyncio.run(
        sidecar_module.decode_sidecar_stream(_pieces_of(data, cuts), **options)  # type: ignore[arg-type]
    )


def _random_cuts(size: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    if seed == 0:
        return list(range(1, size))  # one byte at a time
    return sorted(rng.sample(range(1, size), min(size - 1, rng.randint(1, 40))))


@pytest.mark.parametrize("seed", range(6))
def test_streamed_decoding_in_any_pieces_equals_whole_file_decoding(seed: int) -> None:
    chunks = [compressible(i, n) for i, n in enumerate(sizes(12))]
    data, encoded = _encoded_sidecar(chunks)
    if seed == 0:
        data, encoded = _encoded_sidecar(chunks[:3])  # small enough to feed byte by byte
        chunks = chunks[:3]
    assert _decode(data, encoded, cuts=_random_cuts(len(data), seed)) == b"".join(chunks)


def _damaged(data: bytes, damage: str) -> bytes:
    mutable = bytearray(data)
    if damage == "append":
        return data + b"x"
    if damage == "truncate":
        return data[:-1]
    position = {"magic": 0, "format": 8, "id": 12, "epoch": 20, "nonce": 30, "frame": 200}[damage]
    mutable[position] ^= 0xFF
    return bytes(mutable)


def _reason(action: Callable[[], object]) -> str:
    with pytest.raises(CorruptionError) as caught:
        action()
    return str(caught.value)


@pytest.mark.parametrize(
    "damage", ["append", "truncate", "magic", "format", "id", "epoch", "nonce", "frame"]
)
def test_streamed_decoding_reports_what_whole_file_decoding_reports(damage: str) -> None:
    chunks = [compressible(i, 8 * KiB) for i in range(6)]
    data, encoded = _encoded_sidecar(chunks)
    bad = _damaged(data, damage)
    whole = _reason(lambda: _decode(bad, encoded, cuts=None))
    for cuts in (_random_cuts(len(bad), 1), _random_cuts(len(bad), 2)):
        assert _reason(lambda cuts=cuts: _decode(bad, encoded, cuts=cuts)) == whole


@pytest.mark.parametrize("lie", ["raw_length", "frame_bytes"])
def test_streamed_decoding_refuses_a_frame_that_differs_from_its_index(lie: str) -> None:
    """An index whose checksum matches (a manifest written with a wrong entry) but whose
    frame decodes to another size, or whose bytes are not a frame, is still refused."""
    chunks = [compressible(i, 8 * KiB) for i in range(4)]
    data, encoded = _encoded_sidecar(chunks)
    entries = list(encoded.entries)
    first = entries[1]
    if lie == "raw_length":
        entries[1] = dataclasses.replace(first, raw_length=first.raw_length + 1)
    else:
        entries[1] = dataclasses.replace(first, offset=first.offset + 1, length=first.length - 1)
    lying = dataclasses.replace(encoded, entries=tuple(entries))
    whole = _reason(lambda: _decode(data, lying, cuts=None))
    assert _reason(lambda: _decode(data, lying, cuts=_random_cuts(len(data), 3))) == whole


def test_corruption_in_a_streamed_sidecar_is_caught_on_restore(url: str) -> None:
    store, faults = faulty_store(url, single_put_limit=STREAMED)
    store.save_with_state(manifest(1), (compressible(i, 64 * KiB) for i in range(20)))
    faults.flip_bytes_on_read("state.bin")
    with pytest.raises(CorruptionError, match="checksum"):
        store.load_state_data(1)


@pytest.mark.parametrize(("damage", "reason"), [("append", "longer"), ("truncate", "truncated")])
def test_sidecar_of_the_wrong_length_is_caught_on_restore(
    url: str, damage: str, reason: str
) -> None:
    store = CheckpointStore(url)
    store.save_with_state(manifest(1), [compressible(i, 64 * KiB) for i in range(4)])
    backend = open_backend(url)
    data, _ = backend.get(state_key(1))
    backend.put(state_key(1), data + b"x" if damage == "append" else data[:-1])
    with pytest.raises(CorruptionError, match=reason):
        store.load_state_data(1)


# -- failures while streaming ------------------------------------------------------------------


def test_failed_stream_leaves_nothing_on_disk(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, single_put_limit=STREAMED)

    def chunks() -> Iterator[object]:
        for index in range(10):
            yield compressible(index, 64 * KiB)
        yield "not bytes"

    with pytest.raises(TypeError):
        store.save_with_state(manifest(1), chunks())  # type: ignore[arg-type]
    left = [p.name for p in tmp_path.rglob("*") if p.is_file() and ".objstore-locks" not in str(p)]
    assert left == []
    assert store.load_latest() is None
