"""The GCS transport against gcp-storage-emulator: preconditions, errors, prefixes and loops."""

# The fixtures are imported explicitly (tests/conftest.py may also register tests.servers.gcs;
# the servers are shared either way), so test parameters shadow the imported names.
# ruff: noqa: F811

from __future__ import annotations

import asyncio
import pickle
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from objstore.backends import (
    AsyncBackend,
    Backend,
    RetryPolicy,
    open_async_backend,
    open_backend,
    open_transport,
)
from objstore.backends._gcs import GCSTransport
from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    NotSupportedError,
    ObjstoreError,
    PreconditionFailedError,
    StoreNotFoundError,
    TransientStorageError,
)
from tests.servers.gcs import (  # noqa: F401
    GCSEmulator,
    GCSFaults,
    gcs_emulator,
    gcs_faults,
    gs_url,
    stock_gcs_emulator,
    stock_gcs_endpoint,
    stock_gcs_url,
)

_T = TypeVar("_T")


def run(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run one coroutine on a fresh loop (each test body gets its own, like a user would)."""

    async def main() -> _T:
        return await make()

    return asyncio.run(main())


def transport_for(url: str, **options: Any) -> GCSTransport:
    transport = open_transport(url, **options)
    assert isinstance(transport, GCSTransport)
    return transport


async def _no_sleep(_: float) -> None:
    return None


FAST_RETRY = RetryPolicy(max_attempts=4, sleep=_no_sleep)


@pytest.fixture
def transport(gs_url: str) -> Iterator[GCSTransport]:
    transport = transport_for(gs_url)
    yield transport
    run(transport.close)


# -- round trips ----------------------------------------------------------------------------


def test_url_and_scheme(gs_url: str) -> None:
    transport = transport_for(gs_url)
    assert transport.scheme == "gs"
    assert transport.url == gs_url
    bucket = gs_url.split("/")[2]
    assert transport_for(f"gcs://{bucket}").url == f"gs://{bucket}"
    assert transport_for(f"gs://{bucket}/a/b/").url == f"gs://{bucket}/a/b"


def test_round_trip(transport: GCSTransport) -> None:
    async def body() -> None:
        version = await transport.put_if_absent("dir/obj", b"hello world")
        assert version.isdigit()
        assert await transport.get("dir/obj") == (b"hello world", version)
        info = await transport.head("dir/obj")
        assert (info.key, info.size, info.version) == ("dir/obj", 11, version)
        assert info.mtime is not None
        assert info.mtime > 0
        assert await transport.get_range("dir/obj", 0, 5) == b"hello"
        assert await transport.get_range("dir/obj", 6, 100) == b"world"
        assert await transport.get_range("dir/obj", 11, 20) == b""
        assert await transport.get_range("dir/obj", 50, 60) == b""
        new_version = await transport.put_if_match("dir/obj", b"v2", version)
        assert int(new_version) > int(version)
        assert await transport.get("dir/obj") == (b"v2", new_version)
        overwritten = await transport.put("dir/obj", memoryview(b"v3"))
        assert await transport.get("dir/obj") == (b"v3", overwritten)
        await transport.delete("dir/obj", overwritten)
        with pytest.raises(NotFoundError):
            await transport.head("dir/obj")

    run(body)


def test_empty_and_large_objects(transport: GCSTransport) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB

    async def body() -> None:
        empty = await transport.put_if_absent("empty", b"")
        assert await transport.get("empty") == (b"", empty)
        assert (await transport.head("empty")).size == 0
        await transport.put("big", bytearray(big))
        assert (await transport.get("big"))[0] == big
        assert await transport.get_range("big", 1_000_000, 1_000_010) == big[1_000_000:1_000_010]

    run(body)


@pytest.mark.parametrize(
    "key",
    ["with space", "percent%2Fslash", "plus+and&amp=?#", "unicodé/ключ/鍵", "a%25b", "~tilde"],
)
def test_awkward_keys_round_trip(transport: GCSTransport, key: str) -> None:
    async def body() -> None:
        version = await transport.put_if_absent(key, key.encode())
        assert await transport.get(key) == (key.encode(), version)
        assert [info.key for info in await transport.list("")] == [key]
        await transport.delete(key, version)
        assert await transport.list("") == []

    run(body)


def test_put_if_absent_stream(transport: GCSTransport) -> None:
    async def parts() -> Any:
        for part in (b"ab", bytearray(b"cd"), memoryview(b"ef")):
            yield part

    async def body() -> None:
        version = await transport.put_if_absent_stream("streamed", parts())
        assert await transport.get("streamed") == (b"abcdef", version)
        with pytest.raises(AlreadyExistsError):
            await transport.put_if_absent_stream("streamed", parts())

    run(body)


def _big_parts(data: bytes, size: int = 1 << 19) -> Any:
    async def parts() -> Any:
        for offset in range(0, len(data), size):
            yield data[offset : offset + size]

    return parts()


def test_long_stream_is_a_resumable_upload_in_chunks(gs_url: str, gcs_faults: GCSFaults) -> None:
    transport = transport_for(gs_url, chunk_size=1 << 20)
    data = bytes(range(256)) * (4 * 4096 + 3)  # 4 MiB and a bit: four chunks and a tail
    requests: list[str] = []
    original = transport._send

    async def recording(what: str, method: str, url: str, **kwargs: Any) -> Any:
        requests.append(f"{method} {kwargs.get('params', {}).get('uploadType', '')}".strip())
        return await original(what, method, url, **kwargs)

    transport._send = recording  # type: ignore[method-assign]

    async def body() -> str:
        version = await transport.put_if_absent_stream("long", _big_parts(data))
        assert await transport.get("long") == (data, version)
        await transport.close()
        return version

    run(body)
    # One POST opens the session (with ifGenerationMatch=0), then one PUT per chunk; the last
    # one carries the tail and completes the object.
    assert requests[:6] == ["POST resumable", "PUT", "PUT", "PUT", "PUT", "PUT"]


def test_lost_response_of_the_completing_chunk_is_recognised(
    gs_url: str, gcs_faults: GCSFaults
) -> None:
    transport = transport_for(gs_url, chunk_size=1 << 20)
    pieces = [bytes([index]) * (1 << 19) for index in range(4)]  # 2 MiB: a chunk, then the rest

    async def parts() -> Any:
        for index, piece in enumerate(pieces):
            if index == 3:  # the first chunk is sent: lose the answer to the completing PUT
                gcs_faults.fail_next(1, methods={"PUT"}, key_contains="upload_id", after=True)
            yield piece

    async def body() -> None:
        await transport.put_if_absent("warm-up", b"")
        # The retry asks the session, which now answers with the object: the stream succeeds
        # with its version instead of failing or reporting a conflict with itself.
        version = await transport.put_if_absent_stream("lost", parts(), retry=FAST_RETRY)
        assert await transport.get("lost") == (b"".join(pieces), version)
        await transport.close()

    run(body)
    assert gcs_faults.injected == 1


def test_stream_onto_an_existing_key_fails_when_the_session_opens(transport: GCSTransport) -> None:
    async def body() -> None:
        await transport.put_if_absent("taken", b"first")
        with pytest.raises(AlreadyExistsError):
            await transport.put_if_absent_stream(
                "taken", _big_parts(b"x" * (9 << 20)), retry=FAST_RETRY
            )
        assert (await transport.get("taken"))[0] == b"first"

    run(body)


# -- prefixes and listing ----------------------------------------------------------------------


def test_prefix_isolation(gs_url: str) -> None:
    bucket = gs_url.split("/")[2]
    root = transport_for(gs_url)  # gs://bucket/root
    sibling = transport_for(f"gs://{bucket}/rootx")
    whole = transport_for(f"gs://{bucket}")

    async def body() -> None:
        for key in ("a/b", "a/b/1", "a/b/2/deep", "a/bc", "a/bc/1", "ab", "z"):
            await root.put(key, key.encode())
        await sibling.put("a/b/1", b"sibling")

        assert [i.key for i in await root.list("a/b")] == ["a/b/1", "a/b/2/deep"]
        assert [i.key for i in await root.list("a/b/")] == ["a/b/1", "a/b/2/deep"]
        assert [i.key for i in await root.list("a")] == [
            "a/b",
            "a/b/1",
            "a/b/2/deep",
            "a/bc",
            "a/bc/1",
        ]
        assert [i.key for i in await root.list("")] == [
            "a/b",
            "a/b/1",
            "a/b/2/deep",
            "a/bc",
            "a/bc/1",
            "ab",
            "z",
        ]
        assert await root.list("missing") == []
        assert [i.key for i in await sibling.list("")] == ["a/b/1"]
        assert await sibling.get("a/b/1") == (b"sibling", (await sibling.head("a/b/1")).version)
        assert [i.key for i in await whole.list("rootx")] == ["rootx/a/b/1"]
        listed = {i.key: i for i in await root.list("a/b")}
        head = await root.head("a/b/1")
        assert listed["a/b/1"].version == head.version
        assert listed["a/b/1"].size == head.size == 5
        for transport in (root, sibling, whole):
            await transport.close()

    run(body)


def test_listing_follows_pages(transport: GCSTransport) -> None:
    transport.page_size = 2
    keys = [f"p/{n:02d}" for n in range(7)]

    async def body() -> None:
        for key in reversed(keys):
            await transport.put(key, b"x")
        assert [info.key for info in await transport.list("p")] == keys

    run(body)


def test_probe_keys_hidden_from_backend_listing(gs_url: str) -> None:
    backend = open_backend(gs_url)
    backend.put_if_absent("visible", b"1")  # runs the probe first
    assert [info.key for info in backend.list()] == ["visible"]
    backend.close()


# -- error translation, by operation -----------------------------------------------------------


def test_missing_object_errors(transport: GCSTransport) -> None:
    async def body() -> None:
        for operation in (
            lambda: transport.get("nope"),
            lambda: transport.get_range("nope", 0, 10),
            lambda: transport.head("nope"),
            lambda: transport.put_if_match("nope", b"x", "12345"),
        ):
            with pytest.raises(NotFoundError) as caught:
                await operation()
            assert caught.value.key == "nope"
            assert caught.value.__cause__ is not None
        await transport.delete("nope")  # idempotent
        await transport.delete("nope", "12345")

    run(body)


def test_create_conflict_is_already_exists(transport: GCSTransport) -> None:
    async def body() -> None:
        version = await transport.put_if_absent("k", b"first")
        with pytest.raises(AlreadyExistsError) as caught:
            await transport.put_if_absent("k", b"second")
        assert isinstance(caught.value.__cause__, FileExistsError)  # gcsfs's view of the 412
        assert await transport.get("k") == (b"first", version)

    run(body)


def test_stale_cas_is_precondition_failed(transport: GCSTransport) -> None:
    async def body() -> None:
        stale = await transport.put_if_absent("k", b"first")
        current = await transport.put_if_match("k", b"second", stale)
        with pytest.raises(PreconditionFailedError) as caught:
            await transport.put_if_match("k", b"third", stale)
        assert caught.value.expected_version == stale
        assert caught.value.actual_version == current
        assert caught.value.__cause__ is not None
        assert await transport.get("k") == (b"second", current)

    run(body)


@pytest.mark.parametrize("bogus", ["0", "000", "-1", "abc", "1.5", "١٢"])
def test_cas_with_impossible_version_never_writes(transport: GCSTransport, bogus: str) -> None:
    """``0`` would mean "must not exist" to GCS: it must not turn a CAS into a create."""

    async def body() -> None:
        with pytest.raises(NotFoundError):
            await transport.put_if_match("k", b"x", bogus)
        with pytest.raises(NotFoundError):
            await transport.head("k")
        version = await transport.put("k", b"v")
        with pytest.raises(PreconditionFailedError):
            await transport.put_if_match("k", b"x", bogus)
        with pytest.raises(PreconditionFailedError):
            await transport.delete("k", bogus)
        assert await transport.get("k") == (b"v", version)

    run(body)


def test_conditional_delete(transport: GCSTransport) -> None:
    async def body() -> None:
        stale = await transport.put("k", b"1")
        current = await transport.put("k", b"2")
        with pytest.raises(PreconditionFailedError) as caught:
            await transport.delete("k", stale)
        assert caught.value.actual_version == current
        assert await transport.get("k") == (b"2", current)
        await transport.delete("k", current)
        with pytest.raises(NotFoundError):
            await transport.get("k")

    run(body)


def test_missing_bucket_is_not_an_empty_store(gcs_emulator: GCSEmulator) -> None:
    transport = transport_for("gs://objstore-no-such-bucket/root")

    async def body() -> None:
        for operation in (
            lambda: transport.get("k"),
            lambda: transport.head("k"),
            lambda: transport.list(""),
            lambda: transport.put_if_absent("k", b"1"),
        ):
            with pytest.raises(StoreNotFoundError, match="objstore-no-such-bucket") as caught:
                await operation()
            assert not isinstance(caught.value, NotFoundError)  # never "nothing saved yet"
        await transport.close()

    run(body)


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient(
    transport: GCSTransport, gcs_faults: GCSFaults, status: int
) -> None:
    async def body() -> None:
        version = await transport.put("k", b"data")
        operations: list[Callable[[], Awaitable[object]]] = [
            lambda: transport.get("k"),
            lambda: transport.get_range("k", 0, 2),
            lambda: transport.head("k"),
            lambda: transport.list(""),
            lambda: transport.put("k", b"x"),
            lambda: transport.put_if_absent("new", b"x"),
            lambda: transport.put_if_match("k", b"x", version),
            lambda: transport.delete("k", version),
        ]
        for operation in operations:
            gcs_faults.fail_next(status=status)
            with pytest.raises(TransientStorageError) as caught:
                await operation()
            assert f"HTTP {status}" in str(caught.value)
            assert caught.value.__cause__ is not None
            assert caught.value.may_have_landed is (status != 429)  # 429: throttled, unapplied
        assert gcs_faults.injected == len(operations)
        assert await transport.get("k") == (b"data", version)

    run(body)


def test_other_http_errors_are_not_transient(
    transport: GCSTransport, gcs_faults: GCSFaults
) -> None:
    async def body() -> None:
        gcs_faults.fail_next(status=403)
        with pytest.raises(ObjstoreError) as caught:
            await transport.put("k", b"x")
        assert not isinstance(caught.value, TransientStorageError)
        assert "HTTP 403" in str(caught.value)

    run(body)


def test_backend_retries_transient_errors(gs_url: str, gcs_faults: GCSFaults) -> None:
    async def body() -> None:
        backend = open_async_backend(gs_url, retry=FAST_RETRY)
        await backend.put("k", b"1")  # probe done
        gcs_faults.fail_next(2, status=503, methods={"GET"})
        data, _ = await backend.get("k")
        assert data == b"1"
        assert gcs_faults.injected == 2
        await backend.close()

    run(body)


@pytest.mark.parametrize("operation", ["create", "cas"])
def test_conditional_write_whose_response_was_lost(
    gs_url: str, gcs_faults: GCSFaults, operation: str
) -> None:
    """The write lands, the reply is a 503, the retry meets a 412 against its own write.

    Requests are sent once (no hidden retry inside gcsfs), so the backend knows the 412 came
    on a retry and reads the object back instead of reporting a conflict.
    """

    async def body() -> None:
        backend = open_async_backend(gs_url, retry=FAST_RETRY)
        version = await backend.put_if_absent("k", b"original")
        gcs_faults.fail_next(status=503, methods={"POST"}, after=True)
        if operation == "create":
            new_version = await backend.put_if_absent("other", b"mine")
            assert await backend.get("other") == (b"mine", new_version)
        else:
            new_version = await backend.put_if_match("k", b"mine", version)
            assert await backend.get("k") == (b"mine", new_version)
        assert gcs_faults.injected == 1
        await backend.close()

    run(body)


def test_connection_refused_is_transient(gcs_emulator: GCSEmulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = transport_for("gs://bucket/root", endpoint_url=f"http://127.0.0.1:{port}")

    async def body() -> None:
        with pytest.raises(TransientStorageError) as caught:
            await transport.get("k")
        assert caught.value.__cause__ is not None
        await transport.close()

    run(body)


def test_stalled_server_times_out_as_transient(gcs_emulator: GCSEmulator) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (kernel backlog) but never answers
        port = silent.getsockname()[1]
        transport = transport_for(
            "gs://bucket/root", endpoint_url=f"http://127.0.0.1:{port}", requests_timeout=0.3
        )

        async def body() -> None:
            with pytest.raises(TransientStorageError):
                await transport.head("k")
            await transport.close()

        run(body)


# -- loops, threads, processes -----------------------------------------------------------------


def test_sync_facade(gs_url: str) -> None:
    backend = open_backend(gs_url)
    version = backend.put_if_absent("a/1", b"one")
    assert backend.get("a/1") == (b"one", version)
    assert backend.exists("a/1")
    assert not backend.exists("a/2")
    new_version = backend.put_if_match("a/1", b"uno", version)
    with pytest.raises(PreconditionFailedError):
        backend.put_if_match("a/1", b"x", version)
    assert [info.key for info in backend.list("a")] == ["a/1"]
    backend.delete("a/1", new_version)
    assert backend.list() == []
    backend.close()


def test_one_transport_on_two_asyncio_run_loops(gs_url: str) -> None:
    backend = open_async_backend(gs_url)
    first = asyncio.run(backend.put_if_absent("k", b"1"))

    async def second_loop() -> str:
        data, version = await backend.get("k")
        assert (data, version) == (b"1", first)
        return await backend.put_if_match("k", b"2", version)

    second = asyncio.run(second_loop())

    async def third_loop() -> tuple[bytes, str]:
        try:
            return await backend.get("k")
        finally:
            await backend.close()

    assert asyncio.run(third_loop()) == (b"2", second)


def test_sync_facade_and_own_loop_share_one_transport(gs_url: str) -> None:
    # Options no other test uses: this transport is the only user of its sessions, so closing
    # it closes them (sessions are shared by transports opened with equal options).
    async_backend = open_async_backend(gs_url, requests_timeout=61)
    transport = async_backend.transport
    assert isinstance(transport, GCSTransport)
    sync_backend = Backend(async_backend)  # the same transport, driven from objstore's loop

    version = sync_backend.put_if_absent("k", b"from sync")

    async def body() -> None:
        assert await async_backend.get("k") == (b"from sync", version)
        assert transport._seat.loops() == 2  # one session per loop
        objstore_loop = next(
            key[0] for key in transport._seat._joined if key[0] is not asyncio.get_running_loop()
        )
        filesystems = [
            await transport._filesystem(),
            transport._seat.pool._entries[(objstore_loop, transport._seat.config)].client,
        ]
        sessions = [fs._session for fs in filesystems]
        assert sessions[0] is not sessions[1]
        await async_backend.close()  # closes ours here and asks objstore's loop to close its own
        assert all(session.closed for session in sessions)

    run(body)


def test_eight_threads_racing_to_create_one_key(gs_url: str) -> None:
    barrier = threading.Barrier(8)
    outcomes: dict[int, str | BaseException] = {}
    backends = [open_backend(gs_url) for _ in range(8)]
    for backend in backends:
        backend.put_if_absent(f"warm-up-{id(backend)}", b"")  # probes and opens the session

    def contender(n: int) -> None:
        barrier.wait()
        try:
            outcomes[n] = backends[n].put_if_absent("contended", f"writer {n}".encode())
        except BaseException as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    winners = [n for n, outcome in outcomes.items() if isinstance(outcome, str)]
    assert len(winners) == 1, outcomes
    assert all(
        isinstance(outcome, AlreadyExistsError)
        for n, outcome in outcomes.items()
        if n not in winners
    ), outcomes
    (winner,) = winners
    assert backends[0].get("contended") == (f"writer {winner}".encode(), outcomes[winner])
    for backend in backends:
        backend.close()


def test_eight_loops_racing_to_create_one_key(gs_url: str) -> None:
    """Eight threads, each with its own ``asyncio.run`` loop, on one shared transport."""
    backend = open_async_backend(gs_url)
    asyncio.run(backend.put_if_absent("warm-up", b""))
    barrier = threading.Barrier(8)
    outcomes: dict[int, str | BaseException] = {}

    def contender(n: int) -> None:
        async def attempt() -> str:
            return await backend.put_if_absent("contended", f"writer {n}".encode())

        barrier.wait()
        try:
            outcomes[n] = asyncio.run(attempt())
        except BaseException as exc:
            outcomes[n] = exc

    threads = [threading.Thread(target=contender, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sum(isinstance(outcome, str) for outcome in outcomes.values()) == 1, outcomes
    assert sum(isinstance(o, AlreadyExistsError) for o in outcomes.values()) == 7, outcomes
    transport = backend.transport
    assert isinstance(transport, GCSTransport)
    assert transport._seat.loops() == 9
    asyncio.run(backend.close())  # the eight finished loops' sessions are dropped too
    assert transport._seat.loops() == 0


def test_child_process_needs_only_the_environment(gs_url: str) -> None:
    script = textwrap.dedent(
        f"""
        from objstore.backends import open_backend
        backend = open_backend({gs_url!r})
        print(backend.put_if_absent("from-child", b"child data"))
        backend.close()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    backend = open_backend(gs_url)
    assert backend.get("from-child") == (b"child data", result.stdout.strip())
    backend.close()


def test_transport_pickles_without_sessions(transport: GCSTransport) -> None:
    run(lambda: transport.put("k", b"v"))
    clone = pickle.loads(pickle.dumps(transport))
    assert clone.url == transport.url
    assert clone._seat.loops() == 0
    assert run(lambda: clone.get("k"))[0] == b"v"
    run(clone.close)


# -- the capability probe ----------------------------------------------------------------------


def test_probe_passes_on_the_enforcing_emulator(gs_url: str) -> None:
    backend = open_backend(gs_url)
    result = backend.probe()
    assert result.ok, result.failures()
    assert backend.list() == []
    backend.close()


def test_stock_emulator_is_refused(stock_gcs_url: str, stock_gcs_endpoint: str) -> None:
    backend = open_backend(stock_gcs_url, endpoint_url=stock_gcs_endpoint)
    with pytest.raises(NotSupportedError) as caught:
        backend.put_if_absent("k", b"data")
    message = str(caught.value)
    assert "create-if-absent is ignored" in message
    assert "compare-and-swap is ignored" in message
    assert "verify_fencing=False" in message
    assert not backend.exists("k")
    backend.close()


def test_stock_emulator_with_fencing_disabled(stock_gcs_url: str, stock_gcs_endpoint: str) -> None:
    """The opt-out writes; reads work without ``x-goog-generation`` (the stock emulator)."""
    backend = open_backend(stock_gcs_url, endpoint_url=stock_gcs_endpoint, verify_fencing=False)
    version = backend.put_if_absent("k", b"data")
    assert backend.get("k") == (b"data", version)
    new_version = backend.put_if_match("k", b"more", version)
    assert backend.get("k") == (b"more", new_version)
    assert [info.key for info in backend.list()] == ["k"]
    backend.close()


def test_backend_wraps_transport(gs_url: str) -> None:
    backend = AsyncBackend(transport_for(gs_url))
    assert backend.scheme == "gs"
    assert backend.url == gs_url
