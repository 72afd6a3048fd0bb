"""The backend contract suite, shipped so any transport can prove it is honest.

Subclass :class:`BackendContract` in a pytest module and provide two fixtures:

* ``store_url`` — a fresh, empty store URL for each test;
* ``shared_store_url`` — the same, for a store that other *processes* can reach
  (not ``memory://``); the multi-process races run against it.

Every test runs through both faces: the blocking :class:`~objstore.backends.Backend` and the
:class:`~objstore.backends.AsyncBackend` driven by an event loop the test owns. Overriding a
test must be explicit (redefine it in the subclass), never silent.
"""

from __future__ import annotations

import asyncio
import inspect
import multiprocessing
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from objstore.backends import open_async_backend, open_backend
from objstore.errors import AlreadyExistsError, NotFoundError, PreconditionFailedError

__all__ = [
    "BackendContract",
    "LoopDriven",
    "cas_increment_worker",
    "create_race_worker",
    "run_processes",
]

RACE_THREADS = 8
RACE_PROCESSES = 4
CAS_INCREMENTS = 50


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


def create_race_worker(url: str, key: str, payload: bytes, barrier: Any, results: Any) -> None:
    """Child process: wait at the barrier, then try to create ``key``; report the outcome."""
    backend = open_backend(url)
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


def cas_increment_worker(url: str, key: str, increments: int, barrier: Any, results: Any) -> None:
    """Child process: add 1 to the counter at ``key`` ``increments`` times by CAS."""
    backend = open_backend(url)
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
    """Every backend must pass these tests, unchanged."""

    @pytest.fixture(params=["sync", "async"])
    def backend(self, request: pytest.FixtureRequest, store_url: str) -> Iterator[Any]:
        """The store under test through the face named by the parameter."""
        if request.param == "sync":
            sync_backend = open_backend(store_url)
            yield sync_backend
            sync_backend.close()
        else:
            driven = LoopDriven(open_async_backend(store_url))
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

    def test_threads_racing_put_if_absent_have_one_winner(self, backend: Any) -> None:
        backend.probe()
        sync = open_backend(backend.url)
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

    def test_threads_cas_counter_loses_no_increment(self, backend: Any) -> None:
        sync = open_backend(backend.url)
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

    def test_processes_racing_put_if_absent_have_one_winner(self, shared_store_url: str) -> None:
        backend = open_backend(shared_store_url)
        backend.probe()
        payloads = [f"process-{i}-{uuid.uuid4().hex}".encode() for i in range(RACE_PROCESSES)]
        outcomes = run_processes(
            create_race_worker, [(shared_store_url, "race/key", p) for p in payloads]
        )
        assert [o for o in outcomes if o[0] == "error"] == []
        winners = [payload for status, payload in outcomes if status == "won"]
        assert len(winners) == 1
        assert backend.get("race/key")[0] == winners[0]

    def test_processes_cas_counter_reaches_exact_total(self, shared_store_url: str) -> None:
        backend = open_backend(shared_store_url)
        backend.put_if_absent("counter", b"0")
        outcomes = run_processes(
            cas_increment_worker,
            [(shared_store_url, "counter", CAS_INCREMENTS)] * RACE_PROCESSES,
        )
        assert [o for o in outcomes if o[0] == "error"] == []
        assert int(backend.get("counter")[0]) == RACE_PROCESSES * CAS_INCREMENTS
