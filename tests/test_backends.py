"""The backend layer beyond the contract suite: URLs, memory isolation, retries, the
capability probe, lost responses, and the fault injector itself."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import (
    AsyncBackend,
    Backend,
    LocalTransport,
    MemoryTransport,
    RetryPolicy,
    open_async_backend,
    open_backend,
    open_transport,
    register_transport,
    registered_schemes,
    unregister_transport,
)
from objstore.backends._backend import ReadBack, read_back_verdict
from objstore.backends._base import Buffer
from objstore.errors import (
    AlreadyExistsError,
    NotFoundError,
    NotSupportedError,
    OutcomeUnknownError,
    PreconditionFailedError,
    TransientStorageError,
)
from objstore.testing import FaultInjectingTransport, SimulatedCrash
from tests.conftest import make_store_url

# -- URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "shown"),
    [
        ("memory://jobs", "memory", "memory://jobs"),
        ("file:///tmp/objstore-url-test", "file", "file:///tmp/objstore-url-test"),
        ("/tmp/objstore-url-test", "file", "file:///tmp/objstore-url-test"),
        ("s3://bucket/some/prefix", "s3", "s3://bucket/some/prefix"),
        ("s3://bucket", "s3", "s3://bucket"),
        ("gs://bucket/p", "gs", "gs://bucket/p"),
        ("gcs://bucket/p", "gs", "gs://bucket/p"),
    ],
)
def test_supported_urls(url: str, scheme: str, shown: str) -> None:
    transport = open_transport(url)
    assert transport.scheme == scheme
    assert transport.url == shown


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    transport = open_transport("relative/store")
    assert isinstance(transport, LocalTransport)
    assert transport.root == tmp_path / "relative" / "store"


@pytest.mark.parametrize(
    "url",
    ["ftp://host/x", "http://example.com/x", "s3://", "gs:///x", "file://remote/x", "", "a\x00b"],
)
def test_unusable_urls_name_the_supported_forms(url: str) -> None:
    with pytest.raises(ValueError, match=r"s3://|file|bucket|invalid|local|directory"):
        open_transport(url)


def test_unknown_scheme_message_lists_every_form() -> None:
    with pytest.raises(ValueError, match="unsupported store URL") as caught:
        open_transport("azure://container/x")
    for form in ("memory://", "file://", "s3://", "gs://"):
        assert form in str(caught.value)


def test_non_string_url_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        open_transport(42)  # type: ignore[arg-type]


# -- memory isolation ----------------------------------------------------------------------------


def test_memory_stores_are_isolated_unless_named_alike() -> None:
    anonymous_a, anonymous_b = open_backend("memory://"), open_backend("memory://")
    anonymous_a.put("k", b"a")
    assert not anonymous_b.exists("k")
    named = open_backend("memory://shared-name-test")
    named.put("k", b"n")
    assert open_backend("memory://shared-name-test").get("k")[0] == b"n"
    assert not open_backend("memory://other-name-test").exists("k")
    MemoryTransport.discard("shared-name-test")
    assert not open_backend("memory://shared-name-test").exists("k")


# -- retries -------------------------------------------------------------------------------------


def test_backoff_is_jittered_exponential_and_bounded() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, rng=random.Random(7))
    samples = {attempt: [policy.backoff(attempt) for _ in range(200)] for attempt in (1, 2, 5, 9)}
    assert all(0 <= s <= 0.1 for s in samples[1])
    assert all(0 <= s <= 0.2 for s in samples[2])
    assert all(0 <= s <= 1.0 for s in samples[9])
    assert max(samples[5]) > 0.8  # ceiling min(1.0, 1.6) is reached
    assert len(set(samples[2])) > 100  # jittered, not fixed


def test_transient_errors_are_retried_with_injected_sleep_then_given_up() -> None:
    slept: list[float] = []

    async def record_sleep(seconds: float) -> None:
        slept.append(seconds)

    faults = FaultInjectingTransport(MemoryTransport())
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(max_attempts=4, sleep=record_sleep)))
    backend.put("k", b"v")
    faults.fail_transiently(1.0, ["get"])
    with pytest.raises(TransientStorageError):
        backend.get("k")
    assert faults.count("get") == 4
    assert len(slept) == 3
    faults.fail_transiently(0.5, ["get"])
    for _ in range(20):
        assert backend.get("k")[0] == b"v"


@pytest.mark.parametrize("bad", [{"max_attempts": 0}, {"initial_backoff": -1.0}])
def test_retry_policy_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"max_attempts|backoff"):
        RetryPolicy(**bad)  # type: ignore[arg-type]


async def _no_sleep(_: float) -> None:
    return None


@pytest.mark.parametrize("operation", ["put_if_absent", "put_if_match"])
def test_lost_response_of_a_landed_conditional_write_is_success(
    store_url: str, operation: str
) -> None:
    faults = FaultInjectingTransport(open_transport(store_url))
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(sleep=_no_sleep)))
    backend.probe()
    version = backend.put_if_absent("k", b"first")
    faults.clear_calls()
    faults.lose_response(operation)
    if operation == "put_if_absent":
        key, data = "other", b"mine"
        new_version = backend.put_if_absent(key, data)
    else:
        key, data = "k", b"second"
        new_version = backend.put_if_match(key, data, version)
    assert faults.count(operation) == 1  # the lost attempt is never sent again ...
    assert faults.count("get") == 1  # ... the read-back recognised our own bytes
    assert backend.get(key) == (data, new_version)


@pytest.mark.parametrize(
    ("expected_version", "stored", "verdict"),
    [
        (None, (b"mine", "v1"), ReadBack.LANDED),
        (None, None, ReadBack.GONE),
        (None, (b"theirs", "v1"), ReadBack.TAKEN),
        ("v1", (b"mine", "v2"), ReadBack.LANDED),
        ("v1", (b"before", "v1"), ReadBack.UNCHANGED),
        ("v1", (b"theirs", "v3"), ReadBack.TAKEN),
        ("v1", None, ReadBack.GONE),
    ],
)
def test_read_back_verdict(
    expected_version: str | None, stored: tuple[bytes, str] | None, verdict: ReadBack
) -> None:
    assert read_back_verdict(memoryview(b"mine"), expected_version, stored) is verdict


def _lossy(store_url: str) -> tuple[Backend, FaultInjectingTransport]:
    """A backend on ``store_url`` whose requests pass a fault injector, probed already."""
    faults = FaultInjectingTransport(open_transport(store_url))
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(sleep=_no_sleep)))
    backend.probe()
    faults.clear_calls()
    return backend, faults


def test_a_create_whose_lost_attempt_was_deleted_since_is_never_made_again(
    store_url: str,
) -> None:
    """Simulator seed 6912 at the backend: our create landed, its reply was lost, and
    another writer (a prune) deleted the object before our retry. Sending the create again
    would bring back an object its owner had removed (a manifest whose state is gone); the
    backend cannot tell this from "never landed", so it says so instead of guessing."""
    backend, faults = _lossy(store_url)

    async def another_writer_deletes() -> None:
        await faults.inner.delete("k")

    faults.lose_response("put_if_absent")
    faults.on_call("put_if_absent", another_writer_deletes, when="after")
    with pytest.raises(OutcomeUnknownError) as unknown:
        backend.put_if_absent("k", b"mine")
    assert unknown.value.key == "k"
    assert faults.count("put_if_absent") == 1
    assert not backend.exists("k")


@pytest.mark.parametrize("rival", ["swaps", "deletes"])
def test_a_swap_whose_lost_attempt_was_overtaken_is_never_sent_again(
    store_url: str, rival: str
) -> None:
    """Our compare-and-swap landed with its reply lost, then another writer swapped on top of
    it (or deleted the object): the version moved, so the answer is the conflict a swap
    reports (or not-found), read back, not a blind second attempt."""
    backend, faults = _lossy(store_url)
    version = backend.put_if_absent("k", b"first")
    faults.clear_calls()

    async def another_writer() -> None:
        if rival == "swaps":
            _, ours = await faults.inner.get("k")
            await faults.inner.put_if_match("k", b"theirs", ours)
        else:
            await faults.inner.delete("k")

    faults.lose_response("put_if_match")
    faults.on_call("put_if_match", another_writer, when="after")
    expected = PreconditionFailedError if rival == "swaps" else NotFoundError
    with pytest.raises(expected):
        backend.put_if_match("k", b"mine", version)
    assert faults.count("put_if_match") == 1
    if rival == "swaps":
        assert backend.get("k")[0] == b"theirs"
    else:
        assert not backend.exists("k")


@pytest.mark.parametrize("operation", ["put_if_absent", "put_if_match"])
def test_a_conditional_write_that_cannot_be_read_back_is_an_unknown_outcome(
    store_url: str, operation: str
) -> None:
    """After an attempt that may have landed, a read-back that keeps failing leaves the
    outcome open: ``OutcomeUnknownError`` (never a transient error inviting a blind
    re-send), with the last failure as its cause."""
    backend, faults = _lossy(store_url)
    version = backend.put_if_absent("k", b"first")
    faults.clear_calls()
    faults.lose_response(operation)
    faults.fail_transiently(1.0, ["get"])
    if operation == "put_if_absent":
        write = partial(backend.put_if_absent, "other", b"mine")
    else:
        write = partial(backend.put_if_match, "k", b"mine", version)
    with pytest.raises(OutcomeUnknownError) as unknown:
        write()
    assert isinstance(unknown.value.__cause__, TransientStorageError)
    assert faults.count(operation) == 1


@pytest.mark.parametrize("operation", ["put_if_absent", "put_if_match"])
def test_a_failure_before_the_store_is_retried_without_a_read_back(
    store_url: str, operation: str
) -> None:
    """A transient failure that never reached the store (refused, throttled) cannot have
    landed: the write is simply sent again, with no read-back; nor does the happy path
    read anything back."""
    backend, faults = _lossy(store_url)
    version = backend.put_if_absent("k", b"first")
    assert faults.count() == 1  # happy path: one request
    faults.clear_calls()
    failing = [True]

    async def refused_once() -> None:
        if failing.pop() if failing else False:
            raise TransientStorageError("connection refused", may_have_landed=False)

    faults.on_call(operation, refused_once, when="before")
    if operation == "put_if_absent":
        backend.put_if_absent("other", b"mine")
    else:
        backend.put_if_match("k", b"mine", version)
    assert faults.count(operation) == 2
    assert faults.count("get") == 0


def test_conflict_after_retry_with_someone_elses_bytes_is_still_a_conflict() -> None:
    inner = MemoryTransport()
    faults = FaultInjectingTransport(inner)
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(sleep=_no_sleep)))
    backend.probe()
    faults.fail_transiently(1.0, ["put_if_absent"])

    async def rival_writes() -> None:
        await inner.put_if_absent("k", b"theirs")

    asyncio.run(rival_writes())
    faults.clear_faults()
    faults.lose_response("put_if_absent")  # our first attempt fails ambiguously
    with pytest.raises(AlreadyExistsError):
        backend.put_if_absent("k", b"ours")
    assert backend.get("k")[0] == b"theirs"


# -- the capability probe ------------------------------------------------------------------------


class IgnoresPreconditions(MemoryTransport):
    """A store that accepts every conditional write, like a naive S3-compatible gateway."""

    def __init__(self, *, honour_create: bool = False) -> None:
        super().__init__()
        self.honour_create = honour_create

    async def put_if_absent(self, key: str, data: Buffer) -> str:
        if self.honour_create:
            return await super().put_if_absent(key, data)
        return await self.put(key, data)

    async def put_if_match(self, key: str, data: Buffer, version: str) -> str:
        return await self.put(key, data)

    async def delete(self, key: str, version: str | None = None) -> None:
        await super().delete(key)


def test_probe_passes_on_honest_stores(store_url: str) -> None:
    result = open_backend(store_url).probe()
    assert result.ok
    assert result.failures() == []


@pytest.mark.parametrize(
    ("honour_create", "named"), [(False, "create-if-absent"), (True, "compare-and-swap")]
)
def test_store_ignoring_preconditions_is_refused_with_the_failed_check(
    honour_create: bool, named: str
) -> None:
    transport = IgnoresPreconditions(honour_create=honour_create)
    backend = Backend(AsyncBackend(transport))
    result = backend.probe()
    assert not result.ok
    assert any(named in failure for failure in result.failures())
    fresh = Backend(AsyncBackend(IgnoresPreconditions(honour_create=honour_create)))
    with pytest.raises(NotSupportedError, match=named):
        fresh.put_if_absent("k", b"v")
    with pytest.raises(NotImplementedError):
        fresh.put_if_match("k", b"v", "1")
    assert fresh.list("") == []  # refused before writing anything


def test_opting_out_of_fencing_allows_an_unsafe_store() -> None:
    backend = Backend(AsyncBackend(IgnoresPreconditions(), verify_fencing=False))
    backend.put_if_absent("k", b"1")
    backend.put_if_absent("k", b"2")  # not refused: the user accepted the risk
    assert backend.get("k")[0] == b"2"


def test_probe_runs_once_per_backend() -> None:
    faults = FaultInjectingTransport(MemoryTransport())
    backend = Backend(AsyncBackend(faults))
    backend.put_if_absent("a", b"1")
    probe_calls = faults.count()
    backend.put_if_absent("b", b"2")
    assert faults.count() == probe_calls + 1


# -- the fault injector --------------------------------------------------------------------------


def _faulty() -> tuple[Backend, FaultInjectingTransport]:
    faults = FaultInjectingTransport(MemoryTransport())
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(sleep=_no_sleep)))
    backend.probe()
    faults.clear_calls()
    return backend, faults


def test_crash_before_does_not_perform_the_call() -> None:
    backend, faults = _faulty()
    faults.crash_before("put", nth=2)
    backend.put("a", b"1")
    with pytest.raises(SimulatedCrash):
        backend.put("b", b"2")
    assert [info.key for info in backend.list("")] == ["a"]


def test_crash_after_performs_the_call_then_dies() -> None:
    backend, faults = _faulty()
    faults.crash_after("put_if_absent", key_contains="b")
    backend.put_if_absent("a", b"1")
    with pytest.raises(SimulatedCrash):
        backend.put_if_absent("b", b"2")
    assert backend.get("b")[0] == b"2"


def test_crash_after_fires_even_when_the_call_failed() -> None:
    backend, faults = _faulty()
    faults.crash_after("head")
    with pytest.raises(SimulatedCrash):
        backend.head("missing")


def test_wildcard_counts_every_request() -> None:
    backend, faults = _faulty()
    faults.crash_before("*", nth=3)
    backend.put("a", b"1")
    backend.get("a")
    with pytest.raises(SimulatedCrash):
        backend.list("")


def test_flipped_bytes_on_read_and_the_call_log() -> None:
    backend, faults = _faulty()
    backend.put("data/x", b"\x00\x00\x00\x00")
    faults.flip_bytes_on_read("data/", offset=1)
    assert backend.get("data/x")[0] == b"\x00\xff\x00\x00"
    assert backend.get_range("data/x", 0, 2) == b"\x00\xff"
    faults.clear_faults()
    assert backend.get("data/x")[0] == b"\x00\x00\x00\x00"
    assert [call.operation for call in faults.calls] == ["put", "get", "get_range", "get"]
    assert faults.calls[0].size == 4
    assert faults.count(writes=True) == 1
    assert faults.count(writes=False) == 3


def test_fault_settings_are_validated() -> None:
    faults = FaultInjectingTransport(MemoryTransport())
    with pytest.raises(ValueError, match="rate"):
        faults.fail_transiently(1.5)
    with pytest.raises(ValueError, match="nth"):
        faults.crash_before("get", nth=0)


def test_precondition_errors_carry_both_versions() -> None:
    backend = open_backend("memory://")
    v1 = backend.put_if_absent("k", b"1")
    v2 = backend.put_if_match("k", b"2", v1)
    with pytest.raises(PreconditionFailedError) as caught:
        backend.put_if_match("k", b"3", v1)
    assert (caught.value.expected_version, caught.value.actual_version) == (v1, v2)


def test_local_list_after_orders_directories_by_key_text(tmp_path: Path) -> None:
    backend = open_backend(str(tmp_path))
    for key in ["p/d.txt", "p/d/x", "p/d/y/z", "p/e", "p/c", "q/a"]:
        backend.put(key, b"1")
    everything = [info.key for info in backend.list("p")]
    assert everything == ["p/c", "p/d.txt", "p/d/x", "p/d/y/z", "p/e"]
    for index, start in enumerate(everything):
        expected = everything[index + 1 :]
        assert [info.key for info in backend.list_after("p", start, 10)] == expected
        assert [info.key for info in backend.list_after("p", start, 1)] == expected[:1]
    assert [info.key for info in backend.list_after("p", "p/d/", 2)] == ["p/d/x", "p/d/y/z"]
    assert [info.key for info in backend.list_after("", "p/e", 5)] == ["q/a"]


# -- the transport registry and storage options ------------------------------------------------


class _Recorded(MemoryTransport):
    """A memory transport that remembers the URL and options its factory was called with."""

    def __init__(self, url: str, options: dict[str, object]) -> None:
        super().__init__()
        self.opened_with = (url, options)


def _recording_factory(url: str, /, **options: object) -> _Recorded:
    return _Recorded(url, options)


def test_registering_a_scheme_twice_needs_replace() -> None:
    register_transport("recorded", _recording_factory)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_transport("recorded", _recording_factory)
        with pytest.raises(ValueError, match="already registered"):
            register_transport("s3", _recording_factory)  # built-ins are protected too
        register_transport("RECORDED", _recording_factory, replace=True)
        transport = open_transport("recorded://x/y", flavour="salty")
        assert isinstance(transport, _Recorded)
        assert transport.opened_with == ("recorded://x/y", {"flavour": "salty"})
        assert "recorded" in registered_schemes()
    finally:
        unregister_transport("recorded")
    with pytest.raises(ValueError, match="unsupported store URL"):
        open_transport("recorded://x")


@pytest.mark.parametrize("scheme", ["", "3d", "has space", "a/b"])
def test_invalid_schemes_are_refused(scheme: str) -> None:
    with pytest.raises(ValueError, match="invalid URL scheme"):
        register_transport(scheme, _recording_factory)


def test_a_factory_must_be_callable_and_return_a_transport() -> None:
    with pytest.raises(TypeError):
        register_transport("broken", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not a Transport"):
        open_transport("broken://x", transport=lambda url, **options: object())  # type: ignore[arg-type,return-value]


def test_open_backend_may_choose_the_implementation_for_one_call(s3_url: str) -> None:
    backend = open_backend(s3_url, transport=_recording_factory)
    transport = backend.async_backend.transport
    assert isinstance(transport, _Recorded)
    assert transport.opened_with == (s3_url, {})
    assert open_transport(s3_url).scheme == "s3"  # the registry itself is unchanged


def test_replacing_a_built_in_scheme_serves_its_urls(tmp_path: Path) -> None:
    original = unregister_transport("file")
    try:
        register_transport("file", _recording_factory)
        transport = open_transport(tmp_path / "x")
        assert isinstance(transport, _Recorded)
        assert transport.opened_with == (str(tmp_path / "x"), {})
    finally:
        register_transport("file", original, replace=True)
    assert isinstance(open_transport(tmp_path / "x"), LocalTransport)


def test_entry_points_are_read_lazily_on_the_first_unknown_scheme(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from importlib.metadata import EntryPoint

    from objstore.backends import _registry

    calls: list[str] = []
    point = EntryPoint(
        "plugged", "tests.test_backends:_recording_factory", _registry.ENTRY_POINT_GROUP
    )

    def entry_points(*, group: str) -> list[EntryPoint]:
        calls.append(group)
        return [point]

    monkeypatch.setattr(_registry.importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(_registry, "_entry_points_read", False)
    monkeypatch.setattr(_registry, "_factories", dict(_registry._BUILT_IN))
    open_transport("memory://lazy")
    assert calls == []  # a known scheme never scans installed packages
    transport = open_transport("plugged://bucket/p", colour="red")
    assert isinstance(transport, _Recorded)
    assert transport.opened_with == ("plugged://bucket/p", {"colour": "red"})
    open_transport("plugged://again")
    assert calls == [_registry.ENTRY_POINT_GROUP]  # read once


@pytest.mark.parametrize(
    ("kind", "option"),
    [
        ("memory", "endpoint_url"),
        ("file", "anon"),
        ("s3", "s3_additional_kwargs"),
        ("s3", "requester_pays"),
        ("s3", "asynchronous"),
        ("gs", "consistency"),
        ("gs", "asynchronous"),
        ("gs", "part_size"),
    ],
)
def test_storage_options_a_transport_does_not_use_are_refused(
    kind: str, option: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    with pytest.raises(ValueError, match=f"{option}.* not used"):
        open_backend(url, **{option: True})
    with pytest.raises(ValueError, match=f"{option}.* not used"):
        open_transport(url, **{option: True})


def test_the_backends_retry_policy_governs_streamed_uploads(
    s3_url: str, s3_faults: Any, gs_url: str, gcs_faults: Any
) -> None:
    """Parts and completions of streamed creates are retried by the user's policy (its sleep
    is called), on S3 and GCS."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(max_attempts=5, initial_backoff=0.001, sleep=sleep)
    data = bytes(range(256)) * (12 * 4096)  # 12 MiB: more than one part / chunk

    async def parts() -> Any:
        for offset in range(0, len(data), 1 << 20):
            yield data[offset : offset + (1 << 20)]

    for url, faults, options in (
        (s3_url, s3_faults, {"part_size": 5 << 20}),
        (gs_url, gcs_faults, {"chunk_size": 1 << 20}),
    ):
        slept.clear()
        backend = open_async_backend(url, retry=policy, **options)

        async def scenario(backend: AsyncBackend = backend, faults: Any = faults) -> str:
            await backend.probe()
            faults.fail_next(2, status=503, methods={"PUT"})
            version = await backend.put_if_absent_stream("streamed", parts())
            assert (await backend.get("streamed")) == (data, version)
            await backend.close()
            return version

        asyncio.run(scenario())
        assert len(slept) == 2, (url, slept)


def test_store_locations_open_through_a_chosen_transport() -> None:
    """What store constructors call to open a URL takes the same ``transport`` choice."""
    from objstore._open import as_async_backend

    backend = as_async_backend("memory://chosen", transport=_recording_factory)
    assert isinstance(backend.transport, _Recorded)
    assert backend.transport.opened_with == ("memory://chosen", {})
    with pytest.raises(ValueError, match="transport applies only when a URL is given"):
        as_async_backend(backend, transport=_recording_factory)


# -- streamed ranged reads -----------------------------------------------------------------------


class _FlakyStream(MemoryTransport):
    """Streams a range in 10-byte pieces and breaks the connection mid-body ``breaks`` times."""

    def __init__(self, name: str, breaks: int) -> None:
        super().__init__(name)
        self.breaks = breaks
        self.requests: list[tuple[int, int]] = []

    async def get_range_stream(self, key: str, start: int, end: int) -> AsyncIterator[Buffer]:
        self.requests.append((start, end))
        data = await self.get_range(key, start, end)
        for offset in range(0, len(data), 10):
            if offset == 20 and self.breaks:
                self.breaks -= 1
                raise TransientStorageError("connection reset mid-body")
            yield data[offset : offset + 10]


def test_streamed_read_resumes_after_a_transient_failure_mid_body() -> None:
    """The bytes already handed out are not asked for again, none is skipped, and each
    request is reported to the observer."""
    transport = _FlakyStream(f"flaky-{random.random()}", breaks=2)
    events: list[Any] = []
    backend = AsyncBackend(
        transport,
        retry=RetryPolicy(max_attempts=3, initial_backoff=0),
        request_hook=events.append,
    )
    data = bytes(range(100))

    async def scenario() -> bytes:
        await backend.put("k", data)
        return b"".join([bytes(p) async for p in backend.get_range_stream("k", 5, 95)])

    assert asyncio.run(scenario()) == data[5:95]
    assert transport.requests == [(5, 95), (25, 95), (45, 95)]
    reads = [e for e in events if e.operation == "get_range"]
    assert [(e.attempt, e.bytes_received, e.outcome) for e in reads] == [
        (1, 20, "transient_error"),
        (2, 20, "transient_error"),
        (3, 50, "ok"),
    ]


def test_streamed_read_gives_up_after_the_policy_s_attempts() -> None:
    transport = _FlakyStream(f"flaky-{random.random()}", breaks=5)
    backend = AsyncBackend(transport, retry=RetryPolicy(max_attempts=2, initial_backoff=0))

    async def scenario() -> list[bytes]:
        await backend.put("k", bytes(100))
        return [bytes(p) async for p in backend.get_range_stream("k", 0, 100)]

    with pytest.raises(TransientStorageError):
        asyncio.run(scenario())
    assert transport.requests == [(0, 100), (20, 100)]
