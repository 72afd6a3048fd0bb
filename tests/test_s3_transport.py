"""S3-specific behaviour of :class:`S3Transport`, against an in-process moto server.

The backend contract itself is exercised for every transport by the shared contract suite;
this file covers what only S3 has: error translation by operation, prefix isolation on a flat
key space, multipart create-if-absent, per-loop clients, and moto's own guarantees that the
rest of the suite relies on. The fixtures (``moto_server``, ``s3_url``, ``s3_faults``) come
from the ``tests.servers.s3`` plugin registered in ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import boto3
import botocore.exceptions
import pytest

from objstore.backends import AsyncBackend, RetryPolicy, open_async_backend, open_backend
from objstore.backends._s3 import (
    MIN_PART_SIZE,
    S3Transport,
    _MultipartUpload,
    multipart_etag,
    translate_error,
)
from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    StoreNotFoundError,
    TransientStorageError,
)
from tests.servers.s3 import S3Faults

T = TypeVar("T")


def run(factory: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a fresh event loop (each call is a different loop)."""

    async def main() -> T:
        return await factory()

    return asyncio.run(main())


def transport_for(url: str, **options: Any) -> S3Transport:
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return S3Transport(bucket, prefix, **options)


def bucket_of(url: str) -> str:
    return url.removeprefix("s3://").partition("/")[0]


def no_sleep_policy(attempts: int = 5) -> RetryPolicy:
    async def sleep(_: float) -> None:
        return None

    return RetryPolicy(max_attempts=attempts, sleep=sleep)


def client_error(status: int, code: str, operation: str = "PutObject") -> Exception:
    error: Exception = botocore.exceptions.ClientError(
        {
            "Error": {"Code": code, "Message": "test"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        operation,
    )
    return error


# -- translation, unit level ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "status", "code", "expected"),
    [
        ("read", 404, "NoSuchKey", NotFoundError),
        ("read", 404, "404", NotFoundError),  # HEAD has no body: the code is the status
        ("read", 404, "NotFound", NotFoundError),
        ("cas", 404, "NoSuchKey", NotFoundError),  # If-Match on a missing object
        ("delete", 404, "NoSuchKey", NotFoundError),
        ("create", 412, "PreconditionFailed", AlreadyExistsError),
        ("cas", 412, "PreconditionFailed", PreconditionFailedError),
        ("delete", 412, "PreconditionFailed", PreconditionFailedError),
        ("create", 409, "ConditionalRequestConflict", TransientStorageError),
        ("cas", 409, "ConditionalRequestConflict", TransientStorageError),
        ("put", 500, "InternalError", TransientStorageError),
        ("read", 503, "SlowDown", TransientStorageError),
        ("list", 503, "ServiceUnavailable", TransientStorageError),
        ("put", 400, "RequestTimeout", TransientStorageError),
        ("read", 429, "TooManyRequests", TransientStorageError),
        ("create", 501, "NotImplemented", NotSupportedError),
        ("read", 404, "NoSuchBucket", StoreNotFoundError),  # never an empty store
        ("put", 403, "AccessDenied", None),
        ("put", 400, "InvalidArgument", None),
        ("read", 412, "PreconditionFailed", None),  # objstore never sends conditional reads
        ("create", 409, "BucketAlreadyExists", None),
    ],
)
def test_translate_client_error(
    operation: Any, status: int, code: str, expected: type[Exception] | None
) -> None:
    translated = translate_error(client_error(status, code), operation, "k", '"etag"')
    if expected is None:
        assert translated is None
    else:
        assert type(translated) is expected
        if isinstance(translated, NotFoundError | AlreadyExistsError | PreconditionFailedError):
            assert translated.key == "k"
        if isinstance(translated, PreconditionFailedError):
            assert translated.expected_version == '"etag"'


@pytest.mark.parametrize(
    "error",
    [
        botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"),
        botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"),
        botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"),
        botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"),
        aiohttp.ServerDisconnectedError(),
        aiohttp.ClientPayloadError("truncated"),
        ConnectionResetError(),
        TimeoutError(),
    ],
)
def test_translate_connection_errors_are_transient(error: Exception) -> None:
    assert isinstance(translate_error(error, "put", "k"), TransientStorageError)


@pytest.mark.parametrize(
    ("error", "landed"),
    [
        (client_error(409, "ConditionalRequestConflict"), False),
        (client_error(503, "SlowDown"), False),
        (client_error(429, "TooManyRequests"), False),
        (client_error(400, "RequestTimeout"), False),
        (client_error(500, "InternalError"), True),
        (client_error(503, "ServiceUnavailable"), True),
        (botocore.exceptions.EndpointConnectionError(endpoint_url="http://x"), False),
        (botocore.exceptions.ConnectTimeoutError(endpoint_url="http://x"), False),
        (ConnectionRefusedError(), False),
        (botocore.exceptions.ReadTimeoutError(endpoint_url="http://x"), True),
        (botocore.exceptions.ConnectionClosedError(endpoint_url="http://x"), True),
        (aiohttp.ServerDisconnectedError(), True),
        (ConnectionResetError(), True),
        (TimeoutError(), True),
    ],
)
def test_transient_errors_say_whether_a_write_may_have_landed(
    error: Exception, landed: bool
) -> None:
    """Only a request refused unapplied or never sent is safe to re-send without a
    read-back; a timeout, a dropped connection or a 5xx may come after the write applied."""
    translated = translate_error(error, "create", "k")
    assert isinstance(translated, TransientStorageError)
    assert translated.may_have_landed is landed


@pytest.mark.parametrize(
    "error",
    [botocore.exceptions.NoCredentialsError(), ValueError("bad"), KeyError("x")],
)
def test_translate_leaves_unknown_errors_alone(error: Exception) -> None:
    assert translate_error(error, "read", "k") is None


def test_constructor_validates_arguments() -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3Transport("", "x")
    with pytest.raises(ValueError, match="part_size"):
        S3Transport("bucket", "x", part_size=MIN_PART_SIZE - 1)
    with pytest.raises(ValueError, match="segment"):
        S3Transport("bucket", "a//b")
    assert S3Transport("bucket", "/a/b/").url == "s3://bucket/a/b"
    assert S3Transport("bucket", "").url == "s3://bucket"


# -- translation against the server -----------------------------------------------------------


def test_errors_by_operation(s3_url: str) -> None:
    transport = transport_for(s3_url)

    async def scenario() -> None:
        for read in (
            transport.get("missing"),
            transport.get_range("missing", 0, 4),
            transport.head("missing"),
            transport.put_if_match("missing", b"x", '"0123"'),
        ):
            with pytest.raises(NotFoundError) as caught:
                await read
            assert isinstance(caught.value.__cause__, botocore.exceptions.ClientError)

        first = await transport.put_if_absent("obj", b"one")
        with pytest.raises(AlreadyExistsError) as exists:
            await transport.put_if_absent("obj", b"two")
        assert isinstance(exists.value.__cause__, botocore.exceptions.ClientError)

        second = await transport.put_if_match("obj", b"three", first)
        assert second != first
        with pytest.raises(PreconditionFailedError):
            await transport.put_if_match("obj", b"four", first)
        with pytest.raises(PreconditionFailedError):
            await transport.delete("obj", first)
        assert (await transport.get("obj")) == (b"three", second)

        await transport.delete("obj", second)
        await transport.delete("obj")  # idempotent
        await transport.delete("obj", second)  # missing + If-Match: still not an error
        with pytest.raises(NotFoundError):
            await transport.head("obj")
        await transport.close()

    run(scenario)


def test_missing_bucket_is_not_an_empty_store(moto_server: str) -> None:
    transport = S3Transport("objstore-no-such-bucket", "root")

    async def scenario() -> None:
        with pytest.raises(StoreNotFoundError, match="NoSuchBucket") as caught:
            await transport.get("k")
        assert isinstance(caught.value.__cause__, botocore.exceptions.ClientError)
        assert not isinstance(caught.value, NotFoundError)
        with pytest.raises(StoreNotFoundError, match="objstore-no-such-bucket"):
            await transport.list("")
        await transport.close()

    run(scenario)


def test_reads_versions_and_ranges(s3_url: str) -> None:
    transport = transport_for(s3_url)

    async def scenario() -> None:
        version = await transport.put("dir/obj", b"0123456789")
        data, got = await transport.get("dir/obj")
        assert (data, got) == (b"0123456789", version)
        assert version.startswith('"')  # the ETag is kept as S3 sends it, quotes and all
        assert version.endswith('"')
        info = await transport.head("dir/obj")
        assert (info.key, info.size, info.version) == ("dir/obj", 10, version)
        assert info.mtime is not None
        assert info.mtime > 0
        assert await transport.get_range("dir/obj", 2, 5) == b"234"
        assert await transport.get_range("dir/obj", 8, 20) == b"89"
        assert await transport.get_range("dir/obj", 10, 20) == b""
        assert await transport.get_range("dir/obj", 50, 60) == b""
        await transport.put("empty", b"")
        assert await transport.get_range("empty", 0, 4) == b""
        assert await transport.get("empty") == (b"", (await transport.head("empty")).version)
        assert await transport.put("view", memoryview(b"abcdef")[1:3]) is not None
        assert (await transport.get("view"))[0] == b"bc"
        await transport.close()

    run(scenario)


def test_transient_errors_surface_and_are_retried(s3_url: str, s3_faults: S3Faults) -> None:
    transport = transport_for(s3_url)

    async def scenario() -> None:
        s3_faults.fail_next(1, status=503, code="SlowDown")
        with pytest.raises(TransientStorageError) as caught:
            await transport.put("a", b"x")
        assert isinstance(caught.value.__cause__, botocore.exceptions.ClientError)

        s3_faults.fail_next(1, status=409, code="ConditionalRequestConflict")
        with pytest.raises(TransientStorageError):
            await transport.put_if_absent("b", b"x")
        with pytest.raises(NotFoundError):
            await transport.head("b")  # the failed create did not land

        s3_faults.fail_next(1, status=500, code="InternalError", methods={"GET"})
        with pytest.raises(TransientStorageError):
            await transport.get("a")

        # botocore's own retries are off: one injected failure is one visible failure, and
        # the AsyncBackend's retry policy is what gets past it.
        backend = AsyncBackend(transport, retry=no_sleep_policy(), verify_fencing=False)
        s3_faults.fail_next(2, status=503, code="SlowDown", methods={"PUT"})
        version = await backend.put_if_absent("c", b"payload")
        assert await backend.get("c") == (b"payload", version)
        assert s3_faults.injected == 5
        await backend.close()

    run(scenario)


def test_lost_response_of_a_conditional_write_is_not_a_conflict(
    s3_url: str, s3_faults: S3Faults
) -> None:
    """The write lands but its response is an error: the retry must recognise its own write."""
    backend = open_async_backend(s3_url, retry=no_sleep_policy(), verify_fencing=False)

    async def scenario() -> None:
        s3_faults.fail_next(1, status=500, code="InternalError", methods={"PUT"}, after=True)
        version = await backend.put_if_absent("k", b"mine, with a nonce")
        s3_faults.fail_next(1, status=503, code="SlowDown", methods={"PUT"}, after=True)
        newer = await backend.put_if_match("k", b"mine again", version)
        assert await backend.get("k") == (b"mine again", newer)
        await backend.close()

    run(scenario)


# -- listing ----------------------------------------------------------------------------------


def test_prefix_isolation(s3_url: str) -> None:
    bucket = bucket_of(s3_url)
    transport = transport_for(s3_url)
    sibling = S3Transport(bucket, "ro")  # a root that is a string prefix of "root"
    nested = S3Transport(bucket, "root/a")
    transport.list_page_size = 2  # force several ListObjectsV2 pages

    async def scenario() -> None:
        for key in ("a/b", "a/bc", "a/b/x", "a/b/c/d", "a/bc/y", "z", "a/b0"):
            await transport.put(key, key.encode())
        assert [i.key for i in await transport.list("a/b")] == ["a/b/c/d", "a/b/x"]
        assert [i.key for i in await transport.list("a/bc")] == ["a/bc/y"]
        assert [i.key for i in await transport.list("a/b/c/d")] == []
        everything = await transport.list("")
        assert [i.key for i in everything] == [
            "a/b",
            "a/b/c/d",
            "a/b/x",
            "a/b0",
            "a/bc",
            "a/bc/y",
            "z",
        ]
        assert all(i.size == len(i.key) and i.version for i in everything)
        assert await sibling.list("") == []
        assert [i.key for i in await nested.list("")] == ["b", "b/c/d", "b/x", "b0", "bc", "bc/y"]
        assert await nested.get("b/x") == await transport.get("a/b/x")
        for t in (transport, sibling, nested):
            await t.close()

    run(scenario)


def test_listing_skips_directory_markers(s3_url: str) -> None:
    bucket = bucket_of(s3_url)
    boto3.client("s3").put_object(Bucket=bucket, Key="root/dir/", Body=b"")
    transport = transport_for(s3_url)

    async def scenario() -> list[str]:
        await transport.put("dir/obj", b"x")
        keys = [i.key for i in await transport.list("dir")]
        await transport.close()
        return keys

    assert run(scenario) == ["dir/obj"]


# -- streamed (multipart) creates -------------------------------------------------------------


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


def pending_uploads(bucket: str) -> list[Any]:
    uploads: list[Any] = boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return uploads


def test_stream_small_is_one_conditional_put(s3_url: str) -> None:
    transport = transport_for(s3_url)

    async def scenario() -> None:
        version = await transport.put_if_absent_stream("small", chunks(b"abc" * 1000, 700))
        assert "-" not in version  # a single PUT's ETag, not a multipart one
        assert await transport.get("small") == (b"abc" * 1000, version)
        with pytest.raises(AlreadyExistsError):
            await transport.put_if_absent_stream("small", chunks(b"other", 2))
        await transport.close()

    run(scenario)


def test_stream_multipart_creates_if_absent(s3_url: str) -> None:
    transport = transport_for(s3_url, part_size=MIN_PART_SIZE, parts_in_flight=2)
    data = os.urandom(2 * MIN_PART_SIZE + 12345)

    async def scenario() -> None:
        version = await transport.put_if_absent_stream("big", chunks(data, 1_000_003))
        assert version.endswith('-3"')  # three parts: 5 MiB, 5 MiB, the rest
        assert await transport.get("big") == (data, version)
        assert (
            await transport.get_range("big", MIN_PART_SIZE - 2, MIN_PART_SIZE + 2)
            == (data[MIN_PART_SIZE - 2 : MIN_PART_SIZE + 2])
        )
        with pytest.raises(AlreadyExistsError):
            await transport.put_if_absent_stream("big", chunks(data[::-1], 3_000_000))
        assert (await transport.get("big"))[0] == data
        await transport.close()

    run(scenario)
    assert pending_uploads(bucket_of(s3_url)) == []


def test_stream_racing_creates_have_one_winner(s3_url: str) -> None:
    transport = transport_for(s3_url, part_size=MIN_PART_SIZE)
    payloads = [bytes([n]) * (MIN_PART_SIZE + 1000 * n) for n in (1, 2)]

    async def create(payload: bytes) -> str | BaseException:
        try:
            return await transport.put_if_absent_stream("race", chunks(payload, 1 << 20))
        except AlreadyExistsError as exc:
            return exc

    async def scenario() -> None:
        outcomes = await asyncio.gather(*(create(p) for p in payloads))
        winners = [i for i, outcome in enumerate(outcomes) if isinstance(outcome, str)]
        losers = [o for o in outcomes if isinstance(o, AlreadyExistsError)]
        assert len(winners) == 1, outcomes
        assert len(losers) == 1, outcomes
        data, version = await transport.get("race")
        assert (data, version) == (payloads[winners[0]], outcomes[winners[0]])
        await transport.close()

    run(scenario)
    assert pending_uploads(bucket_of(s3_url)) == []


def test_stream_keeps_a_bounded_number_of_parts_in_flight(
    s3_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transport = transport_for(s3_url, part_size=MIN_PART_SIZE, parts_in_flight=2)
    in_flight, peak, produced, uploaded = 0, 0, 0, 0
    original = _MultipartUpload._upload

    async def counting(self: _MultipartUpload, number: int, data: bytes) -> None:
        nonlocal in_flight, peak, uploaded
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await original(self, number, data)
        finally:
            in_flight -= 1
            uploaded += 1

    async def producer() -> AsyncIterator[bytes]:
        nonlocal produced
        for index in range(4):
            # Parts not yet uploaded are held in memory: never more than those in flight
            # plus the one being filled.
            assert produced - uploaded <= 3
            produced += 1
            yield bytes([index]) * MIN_PART_SIZE

    monkeypatch.setattr(_MultipartUpload, "_upload", counting)

    async def scenario() -> None:
        version = await transport.put_if_absent_stream("bounded", producer())
        assert version.endswith('-4"')
        await transport.close()

    run(scenario)
    assert peak == 2


def test_stream_failure_aborts_the_upload(s3_url: str, s3_faults: S3Faults) -> None:
    transport = transport_for(s3_url, part_size=MIN_PART_SIZE)

    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * (MIN_PART_SIZE + 1)
        raise RuntimeError("the producer died")

    policy = no_sleep_policy(attempts=2)

    async def scenario() -> None:
        with pytest.raises(RuntimeError, match="producer died"):
            await transport.put_if_absent_stream("broken", broken(), retry=policy)
        s3_faults.fail_next(10, status=503, code="SlowDown", methods={"PUT"}, key_contains="flaky")
        with pytest.raises(TransientStorageError):
            await transport.put_if_absent_stream(
                "flaky", chunks(b"y" * (2 * MIN_PART_SIZE), 1 << 20), retry=policy
            )
        for key in ("broken", "flaky"):
            with pytest.raises(NotFoundError):
                await transport.head(key)
        await transport.close()

    run(scenario)
    assert pending_uploads(bucket_of(s3_url)) == []


def test_stream_parts_and_completion_survive_transient_errors(
    s3_url: str, s3_faults: S3Faults
) -> None:
    transport = transport_for(s3_url, part_size=MIN_PART_SIZE, parts_in_flight=2)
    policy = no_sleep_policy()
    data = os.urandom(2 * MIN_PART_SIZE + 7)

    async def scenario() -> str:
        s3_faults.fail_next(2, status=500, code="InternalError", methods={"PUT"})
        # The completion lands but its response is lost: the retry must recognise our object.
        s3_faults.fail_next(
            1, status=503, code="SlowDown", methods={"POST"}, key_contains="uploadId", after=True
        )
        version = await transport.put_if_absent_stream(
            "sturdy", chunks(data, 1 << 20), retry=policy
        )
        assert await transport.get("sturdy") == (data, version)
        await transport.close()
        return version

    version = run(scenario)
    assert version.endswith('-3"')
    assert s3_faults.injected == 3
    assert pending_uploads(bucket_of(s3_url)) == []


def test_multipart_etag_matches_what_s3_computes(s3_url: str) -> None:
    transport = transport_for(s3_url, part_size=MIN_PART_SIZE)
    etags: dict[int, str] = {}
    original = _MultipartUpload._upload

    async def recording(self: _MultipartUpload, number: int, data: bytes) -> None:
        await original(self, number, data)
        etags[number] = self._etags[number]

    async def scenario() -> str:
        _MultipartUpload._upload = recording  # type: ignore[method-assign]
        try:
            return await transport.put_if_absent_stream(
                "etag", chunks(b"z" * (MIN_PART_SIZE + 3), 1 << 20)
            )
        finally:
            _MultipartUpload._upload = original  # type: ignore[method-assign]
            await transport.close()

    version = run(scenario)
    assert multipart_etag([etags[number] for number in sorted(etags)]) == version
    assert multipart_etag(["not-hex"]) is None


# -- event loops, processes, the probe ----------------------------------------------------------


def test_sync_facade_and_fresh_loops_share_one_transport(s3_url: str) -> None:
    backend = open_backend(s3_url)
    assert backend.probe().ok
    version = backend.put_if_absent("shared", b"from the sync facade")
    async_backend = backend.async_backend

    async def from_a_new_loop(expected: str, data: bytes) -> str:
        assert await async_backend.get("shared") == (
            b"from the sync facade" if expected == version else b"from loop 1",
            expected,
        )
        return await async_backend.put_if_match("shared", data, expected)

    second = run(lambda: from_a_new_loop(version, b"from loop 1"))
    third = run(lambda: from_a_new_loop(second, b"from loop 2"))
    assert backend.get("shared") == (b"from loop 2", third)
    assert [i.key for i in backend.list("")] == ["shared"]
    backend.close()


def test_probe_passes_on_moto(s3_url: str) -> None:
    backend = open_async_backend(s3_url)

    async def scenario() -> bool:
        ok = (await backend.probe()).ok
        await backend.close()
        return ok

    assert run(scenario)


def test_child_process_needs_only_the_url(s3_url: str) -> None:
    """s3fs/botocore honour AWS_ENDPOINT_URL: a child opens the store from the URL alone."""
    code = (
        "import sys\n"
        "from objstore.backends import open_backend\n"
        "backend = open_backend(sys.argv[1])\n"
        "backend.put_if_absent('child', b'hello from the child')\n"
        "print(backend.get('child')[0].decode())\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, s3_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from the child"
    backend = open_backend(s3_url)
    assert backend.get("child")[0] == b"hello from the child"
    backend.close()


def test_threads_racing_put_if_absent_have_one_winner(s3_url: str) -> None:
    """8 threads, each on its own event loop, one shared transport: exactly one create wins.

    Without the fixture's request lock moto lets two creates of one key both succeed now and
    then (and answers some with 500s); with it, every round has exactly one winner.
    """
    transport = transport_for(s3_url)
    threads_count, rounds = 8, 3
    results: list[list[str | None]] = [[None] * threads_count for _ in range(rounds)]
    barrier = threading.Barrier(threads_count)

    def worker(index: int) -> None:
        async def main() -> None:
            for round_ in range(rounds):
                barrier.wait()
                try:
                    await transport.put_if_absent(f"contended-{round_}", f"writer {index}".encode())
                    results[round_][index] = "won"
                except AlreadyExistsError:
                    results[round_][index] = "lost"

        asyncio.run(main())

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(threads_count)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)  # interleave the handler threads more densely
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(interval)

    async def contents() -> list[bytes]:
        values = [(await transport.get(f"contended-{r}"))[0] for r in range(rounds)]
        await transport.close()
        return values

    stored = run(contents)
    for round_, outcome in enumerate(results):
        assert outcome.count("won") == 1, outcome
        assert outcome.count("lost") == threads_count - 1, outcome
        assert stored[round_] == f"writer {outcome.index('won')}".encode()


def test_transports_share_one_client_per_loop_and_close_is_reference_counted(
    s3_url: str,
) -> None:
    async def scenario() -> None:
        first = open_async_backend(s3_url)
        second = open_async_backend(s3_url + "/other")
        await first.put("a", b"1")
        await second.put("b", b"2")
        shared = await first.transport._client()  # type: ignore[attr-defined]
        assert await second.transport._client() is shared  # type: ignore[attr-defined]
        await first.close()
        assert (await second.get("b"))[0] == b"2"
        await second.close()
        third = open_async_backend(s3_url)
        assert (await third.get("a"))[0] == b"1"
        assert await third.transport._client() is not shared  # type: ignore[attr-defined]
        await third.close()

    asyncio.run(scenario())


def test_no_such_upload_is_not_found_so_a_lost_completion_can_be_recognised() -> None:
    error = botocore.exceptions.ClientError(
        {
            "Error": {"Code": "NoSuchUpload", "Message": "gone"},
            "ResponseMetadata": {"HTTPStatusCode": 404},
        },
        "CompleteMultipartUpload",
    )
    assert isinstance(translate_error(error, "create", "k", None), NotFoundError)


def test_concurrent_first_uses_of_a_loop_build_one_client(s3_url: str) -> None:
    async def scenario() -> None:
        transport = transport_for(s3_url)
        clients = await asyncio.gather(*(transport._client() for _ in range(8)))
        assert len({id(client) for client in clients}) == 1
        await transport.close()

    run(scenario)
