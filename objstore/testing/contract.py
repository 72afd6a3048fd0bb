"""The backend contract suite, shipped so any transport can prove it is honest.

Subclass :class:`BackendContract` in a pytest module (the class name must start with
``Test``) and provide, as zarr's ``StoreTests`` does, a way to open the transport under test
and a view of the storage that goes *around* it:

* a ``transport_factory`` fixture returning a callable ``(root: str) -> Transport``: the
  transport rooted at ``root`` (``""`` for the store's root, ``"a/b"`` for a prefix below it)
  of one fresh, empty store for this test; calls with the same ``root`` reach the same
  objects (several transports on one store race each other; two roots test prefix isolation);
* the raw hooks :meth:`~BackendContract.raw_get`, :meth:`~BackendContract.raw_put`,
  :meth:`~BackendContract.raw_list` and :meth:`~BackendContract.raw_delete`, which read and
  write the storage itself (files, the server's API, your dict) with keys relative to the
  store's root, so that what a transport says is checked against what is really there.

Every request-level test runs through both faces: the blocking :class:`Backend` and the
:class:`AsyncBackend` driven by an event loop the test owns. Tests that need another process
send it the transport by pickling it. The transport's capability attributes decide what is
measured: ``persistent`` (a child process sees the objects; process races run),
``bounded_streaming`` (a streamed create's peak memory, measured in a child process, stays
below half the stream). Overriding a test must be explicit — redefine it in the subclass, or
set it to ``None`` with a comment saying why — never silent.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import pickle
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from objstore.backends import AsyncBackend, Backend, RetryPolicy, Transport
from objstore.errors import AlreadyExistsError, NotFoundError, PreconditionFailedError

__all__ = [
    "BackendContract",
    "LoopDriven",
    "TransportOpener",
    "cas_increment_worker",
    "create_race_worker",
    "run_processes",
]

RACE_THREADS = 8
RACE_PROCESSES = 4
CAS_INCREMENTS = 50
MiB = 1024 * 1024

TransportOpener = Callable[[str], Transport]
"""``(root) -> Transport``: what a contract subclass's ``transport_factory`` fixture returns."""


class LoopDriven:
    """Drives an async object (a backend or a store) from an event loop the caller owns,
    with the blocking call shape: coroutine methods are run to completion on ``loop``.

    This exercises the async face on a loop that is *not* objstore's private one.
    """

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._target = target
        self._owns_loop = loop is None
        self._loop = loop or asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attribute(*args, **kwargs))

        return call

    def close_loop(self) -> None:
        """Close the loop if this object created it."""
        if self._owns_loop:
            self._loop.close()


def _as_backend(target: str | Transport) -> Backend:
    """A blocking backend on a URL or on a (pickled and unpickled) transport."""
    if isinstance(target, Transport):
        return Backend(AsyncBackend(target))
    from objstore.backends import open_backend

    return open_backend(target)


def create_race_worker(
    target: str | Transport, key: str, payload: bytes, barrier: Any, results: Any
) -> None:
    """Child process: wait at the barrier, then try to create ``key``; report the outcome.

    ``target`` is a store URL or a transport (pickled into the child).
    """
    backend = _as_backend(target)
    backend.probe()
    barrier.wait()
    try:
        backend.put_if_absent(key, payload)
    except AlreadyExistsError:
        results.put(("lost", payload))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc).encode()))
    else:
        results.put(("won", payload))


def cas_increment_worker(
    target: str | Transport, key: str, increments: int, barrier: Any, results: Any
) -> None:
    """Child process: add 1 to the counter at ``key`` ``increments`` times by CAS."""
    backend = _as_backend(target)
    backend.probe()
    barrier.wait()
    conflicts = 0
    try:
        for _ in range(increments):
            while True:
                data, version = backend.get(key)
                try:
                    backend.put_if_match(key, str(int(data) + 1).encode(), version)
                    break
                except PreconditionFailedError:
                    conflicts += 1
    except Exception as exc:
        results.put(("error", repr(exc)))
    else:
        results.put(("done", conflicts))


def read_worker(transport: Transport, key: str, barrier: Any, results: Any) -> None:
    """Child process: report the object at ``key`` as the unpickled transport sees it."""
    barrier.wait()

    async def read() -> bytes | None:
        try:
            return (await transport.get(key))[0]
        except NotFoundError:
            return None
        finally:
            await transport.close()

    try:
        results.put(("read", asyncio.run(read())))
    except Exception as exc:
        results.put(("error", repr(exc)))


def stream_part(index: int, size: int) -> bytes:
    """Part ``index`` of the streamed test objects: ``size`` bytes, distinct per part."""
    return (index.to_bytes(4, "big") + b"objstore-stream-") * (size // 20) + b"\x00" * (size % 20)


def stream_worker(
    transport: Transport, key: str, parts: int, part_size: int, barrier: Any, results: Any
) -> None:
    """Child process: create ``key`` from a stream of ``parts`` parts and report the version
    and the peak of traced memory while streaming (the connection is opened beforehand)."""
    barrier.wait()

    async def produce() -> AsyncIterator[bytes]:
        for index in range(parts):
            yield stream_part(index, part_size)

    async def create() -> tuple[str, int]:
        try:
            await transport.list_after("", "", 1)  # opens the connection outside the window
            tracemalloc.start()
            try:
                version = await transport.put_if_absent_stream(key, produce(), retry=RetryPolicy())
                return version, tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        finally:
            await transport.close()

    try:
        results.put(("streamed", asyncio.run(create())))
    except Exception as exc:
        results.put(("error", repr(exc)))


def run_processes(target: Callable[..., None], argument_sets: list[tuple[Any, ...]]) -> list[Any]:
    """Run ``target(*arguments, barrier, results)`` in one spawned process per argument
    set, all released together by the barrier, and return what each put on ``results``."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(len(argument_sets))
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*arguments, barrier, results))
        for arguments in argument_sets
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0, f"worker exited with {process.exitcode}"
    return outcomes


class BackendContract:
    """Every transport must pass these tests, unchanged. See the module docstring."""

    #: Bytes streamed by the bounded-memory test (a transport claiming
    #: ``bounded_streaming`` must hold less than half of it at once).
    stream_size: int = 48 * MiB

    # -- what a subclass provides --------------------------------------------------------------

    @pytest.fixture
    def transport_factory(self) -> TransportOpener:
        """``(root) -> Transport`` on one fresh, empty store for this test (override)."""
        raise NotImplementedError("a BackendContract subclass must define transport_factory")

    def raw_get(self, transport: Transport, key: str) -> bytes | None:
        """The object ``key`` of the store ``transport`` is rooted at, read around any
        transport; ``None`` when there is none (override)."""
        raise NotImplementedError

    def raw_put(self, transport: Transport, key: str, data: bytes) -> None:
        """Write ``key`` in ``transport``'s store around any transport (override)."""
        raise NotImplementedError

    def raw_list(self, transport: Transport) -> list[str]:
        """Every object key stored under ``transport``'s root, sorted, read around any
        transport (bookkeeping a transport keeps out of listings may be left out)
        (override)."""
        raise NotImplementedError

    def raw_delete(self, transport: Transport, key: str) -> None:
        """Remove ``key`` from ``transport``'s store around any transport (override)."""
        raise NotImplementedError

    # -- fixtures built on it ------------------------------------------------------------------

    @pytest.fixture
    def transport(self, transport_factory: TransportOpener) -> Iterator[Transport]:
        """The transport rooted at the store's root."""
        opened = transport_factory("")
        yield opened
        asyncio.run(opened.close())

    @pytest.fixture(params=["sync", "async"])
    def backend(self, request: pytest.FixtureRequest, transport: Transport) -> Iterator[Any]:
        """The store under test through the face named by the parameter."""
        if request.param == "sync":
            sync_backend = Backend(AsyncBackend(transport))
            yield sync_backend
            sync_backend.close()
        else:
            driven = LoopDriven(AsyncBackend(transport))
            yield driven
            driven.close()
            driven.close_loop()

    # -- round trips -------------------------------------------------------------------------

    def test_put_get_round_trip_returns_versions(self, backend: Any) -> None:
        version = backend.put("a/object.bin", b"\x00\x01payload")
        data, read_version = backend.get("a/object.bin")
        assert data == b"\x00\x01payload"
        assert read_version == version
        assert backend.head("a/object.bin").version == version
        assert backend.head("a/object.bin").size == len(b"\x00\x01payload")

    def test_put_overwrites_and_changes_version(self, backend: Any) -> None:
        first = backend.put("k", b"one")
        second = backend.put("k", b"two")
        assert first != second
        assert backend.get("k") == (b"two", second)

    def test_empty_object_round_trips(self, backend: Any) -> None:
        backend.put_if_absent("empty", b"")
        assert backend.get("empty")[0] == b""
        assert backend.head("empty").size == 0

    def test_bytearray_and_memoryview_are_accepted(self, backend: Any) -> None:
        backend.put("ba", bytearray(b"abc"))
        backend.put_if_absent("mv", memoryview(b"xyz123")[1:4])
        assert backend.get("ba")[0] == b"abc"
        assert backend.get("mv")[0] == b"yz1"

    def test_get_range(self, backend: Any) -> None:
        backend.put("r", bytes(range(100)))
        assert backend.get_range("r", 10, 20) == bytes(range(10, 20))
        assert backend.get_range("r", 0, 1) == b"\x00"
        assert backend.get_range("r", 95, 200) == bytes(range(95, 100))
        assert backend.get_range("r", 5, 5) == b""

    def test_get_range_stream(self, transport: Transport) -> None:
        """A streamed ranged read gives exactly the bytes :meth:`get_range` gives, in order,
        for ranges inside, across and past the end of an object several pieces long."""
        data = b"".join(stream_part(index, MiB) for index in range(9)) + b"tail"

        async def read(backend: AsyncBackend, key: str, start: int, end: int) -> bytes:
            pieces = [bytes(p) async for p in backend.get_range_stream(key, start, end)]
            assert all(pieces)  # no empty pieces are handed out
            return b"".join(pieces)

        async def scenario() -> None:
            backend = AsyncBackend(transport)
            await backend.put("s", data)
            for start, end in [
                (0, len(data)),
                (0, len(data) + 1),
                (5, 3 * MiB + 7),
                (len(data) - 2, len(data) + 100),
                (MiB, MiB + 1),
                (4, 4),
            ]:
                assert await read(backend, "s", start, end) == data[start:end], (start, end)
            assert await read(backend, "s", len(data) + 5, len(data) + 9) == b""
            with pytest.raises(NotFoundError):
                await read(backend, "missing", 0, 10)

        asyncio.run(scenario())

    def test_unicode_keys_round_trip(self, backend: Any) -> None:
        backend.put("ünï/cødé-%20 key~", b"u")
        assert backend.get("ünï/cødé-%20 key~")[0] == b"u"
        assert [info.key for info in backend.list("ünï")] == ["ünï/cødé-%20 key~"]

    # -- listing ---------------------------------------------------------------------------

    def test_list_is_sorted_recursive_and_relative(self, backend: Any) -> None:
        for key in ["p/b", "p/a", "p/c/d", "q/x"]:
            backend.put(key, key.encode())
        assert [info.key for info in backend.list("p")] == ["p/a", "p/b", "p/c/d"]
        assert [info.key for info in backend.list("p/")] == ["p/a", "p/b", "p/c/d"]
        assert [info.key for info in backend.list("")] == ["p/a", "p/b", "p/c/d", "q/x"]
        sizes = {info.key: info.size for info in backend.list("p")}
        assert sizes == {"p/a": 3, "p/b": 3, "p/c/d": 5}

    def test_list_prefix_is_a_whole_segment(self, backend: Any) -> None:
        backend.put("a/b/one", b"1")
        backend.put("a/bc/two", b"2")
        assert [info.key for info in backend.list("a/b")] == ["a/b/one"]
        assert [info.key for info in backend.list("a/bc")] == ["a/bc/two"]

    def test_list_after_is_exclusive_bounded_and_prefix_scoped(self, backend: Any) -> None:
        for index in range(10):
            backend.put(f"l/{index:02d}", b"x")
        backend.put("l2/outside", b"x")
        assert [i.key for i in backend.list_after("l", "l/03", 4)] == [
            "l/04",
            "l/05",
            "l/06",
            "l/07",
        ]
        assert [i.key for i in backend.list_after("l", "l/08", 100)] == ["l/09"]
        assert backend.list_after("l", "l/09", 5) == []
        assert [i.key for i in backend.list_after("l", "a", 2)] == ["l/00", "l/01"]
        assert [i.key for i in backend.list_after("", "l/09", 5)] == ["l2/outside"]

    def test_list_of_missing_prefix_is_empty(self, backend: Any) -> None:
        assert backend.list("nothing/here") == []

    def test_list_hides_probe_objects(self, backend: Any) -> None:
        backend.put("visible", b"v")
        assert backend.probe().ok
        assert [info.key for info in backend.list("")] == ["visible"]

    # -- create-if-absent, compare-and-swap, delete ----------------------------------------

    def test_put_if_absent_creates_once(self, backend: Any) -> None:
        version = backend.put_if_absent("once", b"first")
        with pytest.raises(AlreadyExistsError) as caught:
            backend.put_if_absent("once", b"second")
        assert isinstance(caught.value, FileExistsError)
        assert backend.get("once") == (b"first", version)

    def test_put_if_match_swaps_only_on_current_version(self, backend: Any) -> None:
        v1 = backend.put_if_absent("cas", b"1")
        v2 = backend.put_if_match("cas", b"2", v1)
        assert v2 != v1
        with pytest.raises(PreconditionFailedError):
            backend.put_if_match("cas", b"stale", v1)
        assert backend.get("cas") == (b"2", v2)

    def test_put_if_match_on_missing_object_is_not_found(self, backend: Any) -> None:
        version = backend.put_if_absent("gone", b"x")
        backend.delete("gone")
        with pytest.raises(NotFoundError):
            backend.put_if_match("gone", b"y", version)
        assert not backend.exists("gone")

    def test_delete_is_idempotent(self, backend: Any) -> None:
        backend.put("d", b"x")
        backend.delete("d")
        backend.delete("d")
        assert not backend.exists("d")
        with pytest.raises(NotFoundError):
            backend.get("d")

    def test_conditional_delete(self, backend: Any) -> None:
        v1 = backend.put_if_absent("cd", b"1")
        v2 = backend.put_if_match("cd", b"2", v1)
        with pytest.raises(PreconditionFailedError):
            backend.delete("cd", v1)
        assert backend.get("cd")[0] == b"2"
        backend.delete("cd", v2)
        assert not backend.exists("cd")

    def test_delete_many(self, backend: Any) -> None:
        for index in range(5):
            backend.put(f"m/{index}", b"x")
        backend.delete_many([f"m/{index}" for index in range(5)] + ["m/missing"])
        assert backend.list("m") == []

    # -- errors ------------------------------------------------------------------------------

    def test_missing_object_errors(self, backend: Any) -> None:
        with pytest.raises(NotFoundError) as caught:
            backend.get("missing")
        assert isinstance(caught.value, FileNotFoundError)
        with pytest.raises(NotFoundError):
            backend.head("missing")
        with pytest.raises(NotFoundError):
            backend.get_range("missing", 0, 10)

    @pytest.mark.parametrize(
        "key",
        [
            "",
            "/abs",
            "trailing/",
            "a//b",
            "a/../b",
            "..",
            "./a",
            "nul\x00byte",
            "back\\slash",
            "bad\udcffutf8",
        ],
    )
    def test_unsafe_keys_are_rejected_before_any_request(self, backend: Any, key: str) -> None:
        with pytest.raises(ValueError, match="key"):
            backend.put(key, b"x")
        with pytest.raises(ValueError, match="key"):
            backend.get(key)
        with pytest.raises(ValueError, match="key"):
            backend.put_if_absent(key, b"x")
        assert backend.list("") == []

    def test_non_bytes_data_is_a_type_error(self, backend: Any) -> None:
        with pytest.raises(TypeError):
            backend.put("t", "text")

    # -- races -------------------------------------------------------------------------------

    def test_threads_racing_put_if_absent_have_one_winner(
        self, backend: Any, transport_factory: TransportOpener
    ) -> None:
        backend.probe()
        sync = Backend(AsyncBackend(transport_factory("")))
        barrier = threading.Barrier(RACE_THREADS)
        winners: list[bytes] = []
        errors: list[BaseException] = []

        def contender(index: int) -> None:
            payload = f"writer-{index}-{uuid.uuid4().hex}".encode()
            barrier.wait()
            try:
                sync.put_if_absent("race/one", payload)
                winners.append(payload)
            except AlreadyExistsError:
                pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=contender, args=(i,)) for i in range(RACE_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(winners) == 1
        assert backend.get("race/one")[0] == winners[0]

    def test_threads_cas_counter_loses_no_increment(
        self, backend: Any, transport_factory: TransportOpener
    ) -> None:
        sync = Backend(AsyncBackend(transport_factory("")))
        sync.put_if_absent("counter", b"0")
        per_thread = 10

        def increment() -> None:
            for _ in range(per_thread):
                while True:
                    data, version = sync.get("counter")
                    try:
                        sync.put_if_match("counter", str(int(data) + 1).encode(), version)
                        break
                    except PreconditionFailedError:
                        continue

        threads = [threading.Thread(target=increment) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert int(backend.get("counter")[0]) == 4 * per_thread

    def test_processes_racing_put_if_absent_have_one_winner(self, transport: Transport) -> None:
        assert transport.persistent, (
            "set this test to None for a store other processes cannot reach"
        )
        backend = Backend(AsyncBackend(transport))
        backend.probe()
        payloads = [f"process-{i}-{uuid.uuid4().hex}".encode() for i in range(RACE_PROCESSES)]
        outcomes = run_processes(create_race_worker, [(transport, "race/key", p) for p in payloads])
        assert [o for o in outcomes if o[0] == "error"] == []
        winners = [payload for status, payload in outcomes if status == "won"]
        assert len(winners) == 1
        assert backend.get("race/key")[0] == winners[0]
        assert self.raw_get(transport, "race/key") == winners[0]

    def test_processes_cas_counter_reaches_exact_total(self, transport: Transport) -> None:
        assert transport.persistent, (
            "set this test to None for a store other processes cannot reach"
        )
        backend = Backend(AsyncBackend(transport))
        backend.put_if_absent("counter", b"0")
        outcomes = run_processes(
            cas_increment_worker, [(transport, "counter", CAS_INCREMENTS)] * RACE_PROCESSES
        )
        assert [o for o in outcomes if o[0] == "error"] == []
        assert int(backend.get("counter")[0]) == RACE_PROCESSES * CAS_INCREMENTS

    # -- ground truth: what the transport says is what is stored ------------------------------

    def test_writes_land_where_the_raw_view_sees_them(
        self, backend: Any, transport: Transport
    ) -> None:
        backend.put("g/put", b"put")
        backend.put_if_absent("g/created", b"created")
        version = backend.put_if_absent("g/swapped", b"1")
        backend.put_if_match("g/swapped", b"2", version)
        assert self.raw_get(transport, "g/put") == b"put"
        assert self.raw_get(transport, "g/created") == b"created"
        assert self.raw_get(transport, "g/swapped") == b"2"
        assert self.raw_list(transport) == ["g/created", "g/put", "g/swapped"]
        backend.delete("g/put")
        assert self.raw_get(transport, "g/put") is None
        assert self.raw_list(transport) == ["g/created", "g/swapped"]

    def test_reads_see_objects_written_around_the_transport(
        self, backend: Any, transport: Transport
    ) -> None:
        self.raw_put(transport, "outside/a", b"written around")
        self.raw_put(transport, "outside/b", b"")
        assert backend.get("outside/a")[0] == b"written around"
        assert backend.get_range("outside/a", 8, 14) == b"around"
        assert backend.head("outside/b").size == 0
        assert [info.key for info in backend.list("outside")] == ["outside/a", "outside/b"]
        with pytest.raises(AlreadyExistsError):
            backend.put_if_absent("outside/a", b"mine")
        self.raw_delete(transport, "outside/a")
        with pytest.raises(NotFoundError):
            backend.get("outside/a")
        assert self.raw_get(transport, "outside/b") == b""

    def test_compare_and_swap_sees_a_change_made_around_it(
        self, backend: Any, transport: Transport
    ) -> None:
        version = backend.put_if_absent("cas-raw", b"1")
        self.raw_put(transport, "cas-raw", b"changed behind its back")
        with pytest.raises(PreconditionFailedError):
            backend.put_if_match("cas-raw", b"2", version)
        assert self.raw_get(transport, "cas-raw") == b"changed behind its back"

    # -- streamed creates ----------------------------------------------------------------------

    def test_put_if_absent_stream_creates_once(self, transport: Transport) -> None:
        size = transport.single_put_limit + 3 * MiB // 2  # past the single-PUT limit
        parts = [stream_part(i, MiB // 2) for i in range(size // (MiB // 2))]

        async def stream(chunks: list[bytes]) -> AsyncIterator[bytes]:
            for chunk in chunks:
                yield chunk

        async def scenario() -> tuple[bytes, str, str]:
            backend = AsyncBackend(transport)
            version = await backend.put_if_absent_stream("streamed/big", stream(parts))
            await backend.put_if_absent_stream("streamed/small", stream([b"tiny"]))
            with pytest.raises(AlreadyExistsError):
                await backend.put_if_absent_stream("streamed/big", stream([b"second", b"one"]))
            with pytest.raises(AlreadyExistsError):
                await backend.put_if_absent_stream("streamed/small", stream(parts))
            data, read_version = await backend.get("streamed/big")
            return data, read_version, version

        data, read_version, version = asyncio.run(scenario())
        assert (data, read_version) == (b"".join(parts), version)
        assert self.raw_get(transport, "streamed/big") == b"".join(parts)
        assert self.raw_get(transport, "streamed/small") == b"tiny"
        assert self.raw_list(transport) == ["streamed/big", "streamed/small"]

    def test_put_if_absent_stream_conflicts_on_completion(self, transport: Transport) -> None:
        """A key created while a stream is being sent wins; the stream's data never lands."""
        size = transport.single_put_limit + 3 * MiB // 2
        count = size // (MiB // 2)

        async def stream() -> AsyncIterator[bytes]:
            for index in range(count):
                if index == count - 2:  # most of the stream is sent: someone creates the key
                    await asyncio.to_thread(self.raw_put, transport, "late", b"the other writer")
                yield stream_part(index, MiB // 2)

        async def create() -> None:
            backend = AsyncBackend(transport)
            with pytest.raises(AlreadyExistsError):
                await backend.put_if_absent_stream("late", stream())

        asyncio.run(create())
        assert self.raw_get(transport, "late") == b"the other writer"
        assert self.raw_list(transport) == ["late"]  # no partial or temporary object left

    def test_put_if_absent_stream_memory_is_bounded(self, transport: Transport) -> None:
        """A transport claiming ``bounded_streaming`` holds less than half of a long stream
        at once (measured in a child process, away from any in-process test server)."""
        part = MiB // 4
        count = self.stream_size // part
        if transport.persistent:
            (outcome,) = run_processes(stream_worker, [(transport, "long", count, part)])
        else:
            outcome = _run_in_process(stream_worker, (transport, "long", count, part))
        assert outcome[0] == "streamed", outcome
        version, peak = outcome[1]
        expected = b"".join(stream_part(index, part) for index in range(count))
        assert self.raw_get(transport, "long") == expected
        info = asyncio.run(transport.head("long"))
        assert (info.size, info.version) == (len(expected), version)
        if transport.bounded_streaming:
            assert peak < self.stream_size // 2, (peak, self.stream_size)

    # -- pickling, persistence, isolation ------------------------------------------------------

    def test_transport_pickles_and_the_copy_works(self, transport: Transport) -> None:
        asyncio.run(transport.put("p/original", b"from the original"))
        clone: Transport = pickle.loads(pickle.dumps(transport))
        assert clone.url == transport.url
        for name in (*Transport.CAPABILITIES, "scheme"):
            assert getattr(clone, name) == getattr(transport, name), name

        async def use_clone() -> bytes:
            try:
                await clone.put_if_absent("p/clone", b"from the clone")
                return (await clone.get("p/original"))[0]
            finally:
                await clone.close()

        assert asyncio.run(use_clone()) == b"from the original"
        assert asyncio.run(transport.get("p/clone"))[0] == b"from the clone"
        assert self.raw_get(transport, "p/clone") == b"from the clone"

    def test_persistence_across_processes_is_what_the_transport_claims(
        self, transport: Transport
    ) -> None:
        asyncio.run(transport.put("shared/k", b"seen by others?"))
        (outcome,) = run_processes(read_worker, [(transport, "shared/k")])
        assert outcome[0] == "read", outcome
        assert outcome[1] == (b"seen by others?" if transport.persistent else None)

    def test_prefixes_of_one_store_are_isolated(
        self, transport: Transport, transport_factory: TransportOpener
    ) -> None:
        left, right = transport_factory("iso/a"), transport_factory("iso/ab")

        async def scenario() -> None:
            await left.put_if_absent("k", b"left")
            await right.put_if_absent("k", b"right")  # same key, other prefix: no conflict
            await left.put("only-left/x", b"x")
            assert [i.key for i in await left.list("")] == ["k", "only-left/x"]
            assert [i.key for i in await right.list("")] == ["k"]
            assert [i.key for i in await right.list_after("", "", 10)] == ["k"]
            assert (await left.get("k"))[0] == b"left"
            await right.delete("k")
            assert (await left.get("k"))[0] == b"left"
            with pytest.raises(NotFoundError):
                await right.get("only-left/x")
            for opened in (left, right):
                await opened.close()

        asyncio.run(scenario())
        assert self.raw_list(transport) == ["iso/a/k", "iso/a/only-left/x"]
        assert self.raw_get(transport, "iso/a/k") == b"left"
        self.raw_put(transport, "iso/ab/raw", b"r")
        assert [i.key for i in asyncio.run(_listed(transport_factory("iso/ab")))] == ["raw"]


async def _listed(transport: Transport) -> list[Any]:
    try:
        return await transport.list("")
    finally:
        await transport.close()


def _run_in_process(target: Callable[..., None], arguments: tuple[Any, ...]) -> Any:
    """Run a worker here, for a transport whose store other processes cannot reach."""
    results: list[Any] = []

    class _Queue:
        def put(self, item: Any) -> None:
            results.append(item)

    class _Barrier:
        def wait(self) -> None:
            return None

    thread = threading.Thread(target=target, args=(*arguments, _Barrier(), _Queue()))
    thread.start()
    thread.join()
    return results[0]
