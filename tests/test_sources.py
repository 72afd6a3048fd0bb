"""SourceCheckpointStore: sessions, atomic commits, concurrent committers, crash safety.

Every rule runs on every backend through both faces: the blocking store and the async store
driven by an event loop the test owns. The helpers at the top (:class:`Faces`,
:func:`crash_points`) are shared with the projection and snapshot tests.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import AsyncBackend, Backend, RetryPolicy, open_backend, open_transport
from objstore.errors import (
    CheckpointConflict,
    ConflictError,
    CorruptionError,
    TransientStorageError,
)
from objstore.sources import (
    AsyncSourceCheckpointStore,
    SourceCheckpoint,
    SourceCheckpointStore,
    encode_state,
)
from objstore.testing import FaultInjectingTransport, SimulatedCrash
from tests import store_helpers as shared
from tests.conftest import make_store_url
from tests.store_helpers import (
    NASTY_NAMES,
    Faces,
    crash_points,
    local_backends,
    run_processes,
)

# The face/backend fixtures shared with the projection and snapshot tests.
combo = shared.combo
faces = shared.faces
url = shared.url
local_url = shared.local_url
raw = shared.raw


@pytest.fixture
def open_store(faces: Faces) -> Callable[..., Any]:
    """``open_store(location, query_id="q", **options)`` through the current face."""

    def open_(location: Any, query_id: str = "q", **options: Any) -> Any:
        return faces.store(
            SourceCheckpointStore, AsyncSourceCheckpointStore, location, query_id, **options
        )

    return open_


def cp(sequence: int, position: bytes | None = None) -> SourceCheckpoint:
    return SourceCheckpoint(sequence, position)


def commit(store: Any, checkpoints: dict[str, SourceCheckpoint]) -> None:
    store.begin()
    for source_id, checkpoint in checkpoints.items():
        store.stage_checkpoint(source_id, checkpoint.sequence, checkpoint.source_position)
    store.commit()


# -- values --------------------------------------------------------------------------------------


def test_source_checkpoint_validates_and_copies_positions() -> None:
    assert SourceCheckpoint(0).source_position is None
    assert SourceCheckpoint(2**64 - 1, bytearray(b"ab")).source_position == b"ab"
    assert type(SourceCheckpoint(1, memoryview(b"xy")).source_position) is bytes
    for bad_sequence in (-1, 2**64):
        with pytest.raises(ValueError, match="sequence"):
            SourceCheckpoint(bad_sequence)
    for bad_type in (True, 1.0, "1"):
        with pytest.raises(TypeError, match="sequence"):
            SourceCheckpoint(bad_type)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source_position"):
        SourceCheckpoint(1, "text")  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        SourceCheckpoint(1).sequence = 2  # type: ignore[misc]


# -- basic behaviour -----------------------------------------------------------------------------


@local_backends
def test_fresh_store_has_nothing(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url)
    assert store.read_checkpoint("s") is None
    assert store.read_all_checkpoints() == {}
    assert store.read_config_hash() is None
    assert not store.in_session


def test_is_persistent_only_off_memory(open_store: Callable[..., Any], url: str) -> None:
    assert open_store(url).is_persistent is (not url.startswith("memory://"))


def test_commit_persists_for_a_fresh_store_object(open_store: Callable[..., Any], url: str) -> None:
    writer = open_store(url)
    commit(writer, {"kafka": cp(7, b"\x00offset-7"), "pg": cp(3)})
    reader = open_store(url)
    assert reader.read_checkpoint("kafka") == cp(7, b"\x00offset-7")
    assert reader.read_checkpoint("pg") == cp(3, None)
    assert reader.read_checkpoint("other") is None
    assert reader.read_all_checkpoints() == {"kafka": cp(7, b"\x00offset-7"), "pg": cp(3)}


@local_backends
def test_later_commits_keep_untouched_sources(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url)
    commit(store, {"a": cp(1, b"a1"), "b": cp(1, b"b1")})
    commit(store, {"b": cp(2, b"b2")})
    assert open_store(url).read_all_checkpoints() == {"a": cp(1, b"a1"), "b": cp(2, b"b2")}


@local_backends
def test_staged_none_position_removes_the_stored_one(
    open_store: Callable[..., Any], url: str
) -> None:
    store = open_store(url)
    commit(store, {"s": cp(1, b"resume-here")})
    commit(store, {"s": cp(2, None)})
    assert open_store(url).read_checkpoint("s") == cp(2, None)


@local_backends
def test_commit_without_session_raises_and_rollback_without_is_a_noop(
    open_store: Callable[..., Any], url: str
) -> None:
    store = open_store(url)
    with pytest.raises(RuntimeError, match="session"):
        store.commit()
    store.rollback()
    store.rollback()
    assert not store.in_session


@local_backends
def test_staging_outside_a_session(faces: Faces, open_store: Callable[..., Any], url: str) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    if store.is_persistent:
        with pytest.raises(RuntimeError, match="session"):
            store.stage_checkpoint("s", 1, b"p")
        assert faults.calls == []
        assert open_store(url).read_all_checkpoints() == {}
    else:
        store.stage_checkpoint("s", 1, b"p")  # the volatile store applies it at once
        assert open_store(url).read_checkpoint("s") == cp(1, b"p")


@local_backends
def test_reads_inside_a_session_see_staged_writes(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url)
    commit(store, {"a": cp(1, b"a1"), "b": cp(1, b"b1")})
    other = open_store(url)
    store.begin()
    store.stage_checkpoint("b", 2, None)
    store.stage_checkpoint("c", 5, b"c5")
    assert store.in_session
    assert store.read_checkpoint("b") == cp(2, None)
    assert store.read_checkpoint("c") == cp(5, b"c5")
    assert store.read_checkpoint("a") == cp(1, b"a1")
    assert store.read_all_checkpoints() == {"a": cp(1, b"a1"), "b": cp(2), "c": cp(5, b"c5")}
    assert other.read_all_checkpoints() == {"a": cp(1, b"a1"), "b": cp(1, b"b1")}
    store.commit()
    assert other.read_all_checkpoints() == {"a": cp(1, b"a1"), "b": cp(2), "c": cp(5, b"c5")}


@local_backends
def test_sessions_nest_and_only_the_outermost_commit_writes(
    faces: Faces, open_store: Callable[..., Any], url: str
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    store.begin()
    store.begin()
    store.stage_checkpoint("inner", 1, b"i")
    store.commit()
    assert store.in_session
    assert faults.count(writes=True) == 0
    assert open_store(url).read_all_checkpoints() == {}
    store.stage_checkpoint("outer", 2, b"o")
    store.commit()
    assert not store.in_session
    assert faults.count(writes=True) == 1
    assert open_store(url).read_all_checkpoints() == {
        "inner": cp(1, b"i"),
        "outer": cp(2, b"o"),
    }


@local_backends
def test_rollback_discards_the_whole_session_at_any_depth(
    open_store: Callable[..., Any], url: str
) -> None:
    store = open_store(url)
    commit(store, {"a": cp(1)})
    store.begin()
    store.stage_checkpoint("a", 9)
    store.begin()
    store.stage_checkpoint("b", 9)
    store.rollback()
    assert not store.in_session
    assert store.read_all_checkpoints() == {"a": cp(1)}
    with pytest.raises(RuntimeError):
        store.commit()
    assert open_store(url).read_all_checkpoints() == {"a": cp(1)}


@local_backends
def test_an_empty_commit_makes_no_request(
    faces: Faces, open_store: Callable[..., Any], url: str
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    store.begin()
    store.commit()
    assert faults.calls == []


@local_backends
def test_oversized_position_is_refused_and_the_last_good_one_kept(
    open_store: Callable[..., Any], url: str
) -> None:
    store = open_store(url, max_position_size=16)
    commit(store, {"s": cp(1, b"good")})
    store.begin()
    with pytest.raises(ValueError, match="last good position is kept"):
        store.stage_checkpoint("s", 2, b"x" * 17)
    assert store.read_checkpoint("s") == cp(1, b"good")
    store.stage_checkpoint("t", 1, b"y" * 16)
    store.commit()
    assert open_store(url).read_all_checkpoints() == {
        "s": cp(1, b"good"),
        "t": cp(1, b"y" * 16),
    }


@local_backends
def test_failed_commit_keeps_the_committed_state_and_the_session(
    faces: Faces, open_store: Callable[..., Any], url: str
) -> None:
    faults, backend = faces.faulty(url, max_attempts=2)
    store = open_store(backend)
    commit(store, {"s": cp(1, b"good")})
    faults.fail_transiently(1.0, ["put_if_match"])
    store.begin()
    store.stage_checkpoint("s", 2, b"better")
    with pytest.raises(TransientStorageError):
        store.commit()
    assert store.in_session
    assert open_store(url).read_checkpoint("s") == cp(1, b"good")
    faults.clear_faults()
    store.commit()
    assert open_store(url).read_checkpoint("s") == cp(2, b"better")


# -- config hash and clear -----------------------------------------------------------------------


def test_config_hash_round_trips_and_is_replaced(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url)
    store.write_config_hash(0)
    assert store.read_config_hash() == 0
    store.write_config_hash(2**64 - 1)
    assert open_store(url).read_config_hash() == 2**64 - 1
    for bad in (-1, 2**64):
        with pytest.raises(ValueError, match="config_hash"):
            store.write_config_hash(bad)
    for wrong in (True, "1", 1.5):
        with pytest.raises(TypeError, match="config_hash"):
            store.write_config_hash(wrong)
    assert store.read_config_hash() == 2**64 - 1


@local_backends
def test_config_hash_is_independent_of_sessions(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url)
    store.begin()
    store.write_config_hash(5)
    store.rollback()
    assert open_store(url).read_config_hash() == 5


def test_clear_removes_checkpoints_and_config_hash(
    open_store: Callable[..., Any], url: str
) -> None:
    store = open_store(url)
    commit(store, {"a": cp(1, b"p"), "b": cp(2)})
    store.write_config_hash(42)
    other = open_store(url)
    other.clear_checkpoints()
    assert store.read_all_checkpoints() == {}
    assert store.read_config_hash() is None
    commit(store, {"c": cp(3)})  # a store that knew the old state commits on the empty one
    assert other.read_all_checkpoints() == {"c": cp(3)}
    other.clear_checkpoints()
    other.clear_checkpoints()  # idempotent


# -- names ---------------------------------------------------------------------------------------


def test_query_ids_and_source_ids_with_special_characters(
    open_store: Callable[..., Any], url: str
) -> None:
    for index, query_id in enumerate(NASTY_NAMES):
        store = open_store(url, query_id)
        commit(store, {source_id: cp(index * 100 + n) for n, source_id in enumerate(NASTY_NAMES)})
    for index, query_id in enumerate(NASTY_NAMES):
        expected = {source_id: cp(index * 100 + n) for n, source_id in enumerate(NASTY_NAMES)}
        assert open_store(url, query_id).read_all_checkpoints() == expected
    assert open_store(url, "a").read_all_checkpoints() == {}
    keys = [info.key for info in open_backend(url).list("sources")]
    assert all(key.count("/") == 2 for key in keys), keys  # sources/{one segment}/{object}
    assert all(len(key) < 300 for key in keys)


def test_query_a_never_sees_query_a_slash_b(open_store: Callable[..., Any], url: str) -> None:
    commit(open_store(url, "a/b"), {"s": cp(1)})
    open_store(url, "a/b").write_config_hash(1)
    assert open_store(url, "a").read_all_checkpoints() == {}
    assert open_store(url, "a").read_config_hash() is None
    open_store(url, "a").clear_checkpoints()
    assert open_store(url, "a/b").read_all_checkpoints() == {"s": cp(1)}


@local_backends
@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("", ValueError),
        ("nul\x00", ValueError),
        ("bad\udcff", ValueError),
        (7, TypeError),
        (None, TypeError),
    ],
)
def test_bad_names_are_rejected_before_any_request(
    faces: Faces, open_store: Callable[..., Any], url: str, bad: Any, error: type
) -> None:
    faults, backend = faces.faulty(url)
    with pytest.raises(error):
        open_store(backend, bad)
    store = open_store(backend)
    store.begin()
    with pytest.raises(error):
        store.stage_checkpoint(bad, 1, b"p")
    with pytest.raises(error):
        store.read_checkpoint(bad)
    store.commit()
    assert faults.calls == []


@local_backends
def test_bad_sequences_and_positions_are_rejected(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url)
    store.begin()
    with pytest.raises(ValueError, match="sequence"):
        store.stage_checkpoint("s", -1, None)
    with pytest.raises(TypeError):
        store.stage_checkpoint("s", 1, "position")
    with pytest.raises(TypeError):
        store.stage_checkpoint("s", 1, 5)
    assert store.read_all_checkpoints() == {}


# -- request counts ------------------------------------------------------------------------------


def test_commit_request_counts(faces: Faces, open_store: Callable[..., Any], url: str) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    commit(store, {f"s{n}": cp(n, b"p" * n) for n in range(50)})
    assert (faults.count(writes=True), faults.count(writes=False)) == (
        1,
        1,
    )  # GET (absent) + create
    for round_ in range(3):
        faults.clear_calls()
        commit(store, {"s1": cp(100 + round_), "new": cp(round_)})
        assert (faults.count(writes=True), faults.count(writes=False)) == (1, 0)
        assert faults.count("put_if_match") == 1
    fresh = open_store(backend)
    faults.clear_calls()
    commit(fresh, {"s2": cp(200)})
    assert (faults.count(writes=True), faults.count(writes=False)) == (1, 1)
    faults.clear_calls()
    assert fresh.read_checkpoint("s2") == cp(200)
    assert [call.operation for call in faults.calls] == ["get"]


def test_lost_race_rereads_once_and_reapplies_only_staged_changes(
    faces: Faces, open_store: Callable[..., Any], url: str
) -> None:
    faults, backend = faces.faulty(url)
    first = open_store(backend)
    second = open_store(url)
    commit(first, {"shared": cp(1), "mine": cp(1)})
    commit(second, {"theirs": cp(5, b"t"), "shared": cp(2)})
    faults.clear_calls()
    commit(first, {"mine": cp(2, b"m")})
    assert faults.count("put_if_match") == 2
    assert faults.count("get") == 1
    assert open_store(url).read_all_checkpoints() == {
        "shared": cp(2),
        "mine": cp(2, b"m"),
        "theirs": cp(5, b"t"),
    }


def test_a_stale_committer_cannot_move_a_source_backward(
    open_store: Callable[..., Any], url: str
) -> None:
    leader, stale = open_store(url), open_store(url)
    commit(leader, {"s": cp(100, b"p100"), "other": cp(1)})
    assert stale.read_all_checkpoints()["s"] == cp(100, b"p100")  # stale now knows 100
    commit(leader, {"s": cp(250, b"p250")})
    stale.begin()
    stale.stage_checkpoint("s", 120, b"p120")
    stale.stage_checkpoint("mine", 7)
    with pytest.raises(ConflictError) as caught:
        stale.commit()
    assert (caught.value.expected, caught.value.actual) == ({"s": 120}, {"s": 250})
    assert caught.value.key == "sources/q/state"
    assert stale.in_session  # the session is kept, as after any failed commit
    committed = open_store(url).read_all_checkpoints()
    assert committed == {"s": cp(250, b"p250"), "other": cp(1)}  # nothing of it applied
    stale.rollback()
    commit(stale, {"s": cp(300, b"p300"), "mine": cp(7)})  # forward is fine
    commit(stale, {"s": cp(300, b"again")})  # and so is the same sequence
    assert open_store(url).read_all_checkpoints() == {
        "s": cp(300, b"again"),
        "other": cp(1),
        "mine": cp(7),
    }
    with pytest.raises(ConflictError):  # its own last commit forbids a step back too
        commit(stale, {"s": cp(299)})
    assert open_store(url).read_checkpoint("s") == cp(300, b"again")
    # After a reset by another store object, what it remembers is stale: not a conflict.
    stale.rollback()
    open_store(url).clear_checkpoints()
    commit(stale, {"s": cp(10)})
    assert open_store(url).read_all_checkpoints() == {"s": cp(10)}


class _Meddler(FaultInjectingTransport):
    """Before each compare-and-swap, another "process" replaces the state object."""

    async def put_if_match(self, key: str, data: Any, version: str) -> str:
        meddled = self.count("put_if_match")
        await self.inner.put(key, encode_state("q", 1, {"meddler": cp(meddled)}, str(meddled)))
        return await super().put_if_match(key, data, version)


@local_backends
def test_commit_gives_up_with_a_conflict_after_max_attempts(
    faces: Faces, open_store: Callable[..., Any], url: str
) -> None:
    meddler = _Meddler(open_transport(url))
    async_backend = AsyncBackend(meddler, verify_fencing=False)
    backend = faces.as_face(async_backend)
    store = open_store(backend, max_commit_attempts=3)
    commit(store, {"old": cp(0)})  # creates the state; later commits compare-and-swap it
    store.begin()
    store.stage_checkpoint("mine", 1)
    with pytest.raises(ConflictError) as caught:
        store.commit()
    # Sources have no checkpoint ids or epochs: the conflict names generations, both sides.
    assert not isinstance(caught.value, CheckpointConflict)
    assert caught.value.key.startswith("sources/")
    assert caught.value.key.endswith("/state")
    assert (caught.value.expected, caught.value.actual) == (2, 1)  # tried 2, the store has 1
    assert meddler.count("put_if_match") == 3
    assert store.in_session
    assert "mine" not in open_store(url).read_all_checkpoints()


# -- crash safety --------------------------------------------------------------------------------

OLD = {"a": cp(1, b"a1"), "b": cp(1, b"b1")}
STAGED = {"b": cp(2, None), "c": cp(1, b"c1")}
NEW = {"a": cp(1, b"a1"), "b": cp(2, None), "c": cp(1, b"c1")}


@pytest.mark.parametrize("first_commit", [True, False], ids=["create", "replace"])
def test_crash_at_every_write_of_a_commit_leaves_old_or_new(
    faces: Faces, open_store: Callable[..., Any], url: str, first_commit: bool
) -> None:
    old, new = ({}, STAGED) if first_commit else (OLD, NEW)

    def scenario(query_id: str) -> tuple[FaultInjectingTransport, Any]:
        faults, backend = faces.faulty(url)
        store = open_store(backend, query_id)
        if not first_commit:
            commit(store, OLD)
        faults.clear_calls()
        return faults, store

    faults, store = scenario("dry-run")
    commit(store, STAGED)
    points = crash_points(faults)
    assert len(points) == 1  # the commit is one write
    for case, (when, (operation, nth)) in enumerate(
        (when, point) for point in points for when in ("before", "after", "lose-response")
    ):
        query_id = f"case-{case}"
        faults, store = scenario(query_id)
        if when == "lose-response":
            faults.lose_response(operation, nth)
            commit(store, STAGED)  # the retry meets its own write and recognises it
        else:
            getattr(faults, f"crash_{when}")(operation, nth)
            with pytest.raises(SimulatedCrash):
                commit(store, STAGED)
        expected = old if when == "before" else new
        fresh = open_store(url, query_id)
        assert fresh.read_all_checkpoints() == expected, (when, operation, nth)
        if when != "lose-response":
            store.rollback()
        commit(store, {"d": cp(1)})  # the crashed store object still works afterwards
        assert fresh.read_all_checkpoints() == {**expected, "d": cp(1)}


def test_crash_during_clear_never_leaves_checkpoints_without_their_hash(
    faces: Faces, open_store: Callable[..., Any], url: str
) -> None:
    for case, when in enumerate(["before", "after"]):
        for nth in (1, 2):
            query_id = f"case-{case}-{nth}"
            faults, backend = faces.faulty(url)
            store = open_store(backend, query_id)
            commit(store, OLD)
            store.write_config_hash(7)
            getattr(faults, f"crash_{when}")("delete", nth)
            with pytest.raises(SimulatedCrash):
                store.clear_checkpoints()
            fresh = open_store(url, query_id)
            state = (fresh.read_all_checkpoints(), fresh.read_config_hash())
            assert state in [(OLD, 7), ({}, 7), ({}, None)], (when, nth)
            store.clear_checkpoints()
            assert (fresh.read_all_checkpoints(), fresh.read_config_hash()) == ({}, None)


@local_backends
def test_corrupt_state_is_an_error_not_a_fresh_start(
    open_store: Callable[..., Any], url: str
) -> None:
    store = open_store(url)
    commit(store, OLD)
    backend = open_backend(url)
    backend.put("sources/q/state", b"garbage")
    with pytest.raises(CorruptionError):
        open_store(url).read_all_checkpoints()
    backend.put("sources/q/state", encode_state("another query", 1, {}, "n"))
    with pytest.raises(CorruptionError, match="another query"):
        open_store(url).read_all_checkpoints()
    store.clear_checkpoints()
    commit(store, {"a": cp(9)})
    assert open_store(url).read_all_checkpoints() == {"a": cp(9)}


# -- stored format -------------------------------------------------------------------------------

# Format-1 objects, written by tests/data/generate.py (tests/test_format_compat.py reads them too).
FORMAT_1 = Path(__file__).parent / "data" / "sources-format-1" / "sources" / "q%2F1"
STATE_V1 = (FORMAT_1 / "state").read_bytes()
CONFIG_V1 = (FORMAT_1 / "config_hash").read_bytes()


@local_backends
def test_format_1_objects_still_read(open_store: Callable[..., Any], url: str) -> None:
    store = open_store(url, "q/1")
    backend = open_backend(url)
    backend.put("sources/q%2F1/state", STATE_V1)
    backend.put("sources/q%2F1/config_hash", CONFIG_V1)
    assert store.read_all_checkpoints() == {"src/ü": cp(42, b"\x00pos"), "other": cp(3)}
    assert store.read_config_hash() == 2**64 - 1
    commit(store, {"other": cp(4)})
    assert open_store(url, "q/1").read_checkpoint("other") == cp(4)


# -- context managers (asyncio.run drives the async face directly) -------------------------------


def test_sync_session_context_manager(local_url: str) -> None:
    store = SourceCheckpointStore(local_url, "q")
    with store.session():
        store.stage_checkpoint("a", 1, b"a")
        with store.session():
            store.stage_checkpoint("b", 1)
        assert store.in_session
    assert store.read_all_checkpoints() == {"a": cp(1, b"a"), "b": cp(1)}

    def fail_inside_a_session() -> None:
        with store.session():
            store.stage_checkpoint("a", 2)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        fail_inside_a_session()
    assert not store.in_session
    assert store.read_all_checkpoints() == {"a": cp(1, b"a"), "b": cp(1)}
    store.close()


def test_async_session_context_manager(store_url: str) -> None:
    async def main() -> None:
        store = AsyncSourceCheckpointStore(store_url, "q")
        async with store.session() as session:
            await session.stage_checkpoint("a", 1, b"a")
            assert await store.read_checkpoint("a") == cp(1, b"a")
        assert await AsyncSourceCheckpointStore(store_url, "q").read_all_checkpoints() == {
            "a": cp(1, b"a")
        }

        async def fail_inside_a_session() -> None:
            async with store.session():
                await store.stage_checkpoint("a", 2)
                raise KeyError("boom")

        with pytest.raises(KeyError):
            await fail_inside_a_session()
        assert not store.in_session
        assert await store.read_checkpoint("a") == cp(1, b"a")
        await store.close()

    asyncio.run(main())


def test_session_context_manager_rolls_back_a_failed_commit(local_url: str) -> None:
    faults = FaultInjectingTransport(open_transport(local_url))
    backend = Backend(AsyncBackend(faults, retry=RetryPolicy(max_attempts=1), verify_fencing=False))
    store = SourceCheckpointStore(backend, "q")
    faults.fail_transiently(1.0, ["put_if_absent"])
    with pytest.raises(TransientStorageError), store.session():
        store.stage_checkpoint("a", 1)
    assert not store.in_session
    faults.clear_faults()
    assert store.read_all_checkpoints() == {}


# -- concurrent committers in threads and separate processes ------------------------------------

COMMITTERS = 3
COMMITS_PER_COMMITTER = 6


def _race_commits(url: str, worker: int) -> list[tuple[int, str]]:
    """Commit ``shared`` at sequences ``n * COMMITTERS + worker`` (interleaved with the other
    committers) plus a source of its own per commit; return ``(n, outcome)`` per commit,
    outcome ``ok``, ``refused`` or an error description (a read that went backward is one)."""
    store = SourceCheckpointStore(open_backend(url, verify_fencing=False), "query/shared")
    outcomes: list[tuple[int, str]] = []
    seen = -1
    try:
        for n in range(COMMITS_PER_COMMITTER):
            sequence = n * COMMITTERS + worker
            try:
                with store.session():
                    store.stage_checkpoint(f"worker-{worker}/source-{n}", n, b"%d" % worker)
                    store.stage_checkpoint("shared", sequence, b"%d" % worker)
                outcomes.append((n, "ok"))
                seen = max(seen, sequence)
            except ConflictError as exc:
                theirs = exc.actual.get("shared", -1) if isinstance(exc.actual, dict) else -1
                refused = exc.expected == {"shared": sequence} and theirs > sequence
                outcomes.append((n, "refused" if refused else repr(exc)))
            shared = store.read_checkpoint("shared")
            if shared is None or shared.sequence < seen:
                outcomes.append((n, f"read went backward: {shared!r} after {seen}"))
            else:
                seen = shared.sequence
    finally:
        store.close()
    return outcomes


def _check_commit_race(url: str, outcomes: dict[int, list[tuple[int, str]]]) -> None:
    """Every commit was applied whole or refused whole, and ``shared`` ended at the newest."""
    verdicts = {verdict for results in outcomes.values() for _, verdict in results}
    assert verdicts <= {"ok", "refused"}, outcomes
    newest = COMMITTERS * COMMITS_PER_COMMITTER - 1
    assert (newest // COMMITTERS, "ok") in outcomes[newest % COMMITTERS]
    checkpoints = SourceCheckpointStore(url, "query/shared").read_all_checkpoints()
    assert checkpoints.pop("shared") == cp(newest, b"%d" % (newest % COMMITTERS))
    assert checkpoints == {
        f"worker-{w}/source-{n}": cp(n, b"%d" % w)
        for w, results in outcomes.items()
        for n, verdict in results
        if verdict == "ok"
    }


@pytest.mark.parametrize("kind", ["memory", "file", "s3"])
def test_racing_committers_in_threads_never_move_a_source_backward(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = make_store_url(kind, request, tmp_path)
    barrier = threading.Barrier(COMMITTERS)
    outcomes: dict[int, list[tuple[int, str]]] = {}

    def committer(worker: int) -> None:
        barrier.wait()
        try:
            outcomes[worker] = _race_commits(url, worker)
        except BaseException as exc:  # reported below, failing the test
            outcomes[worker] = [(-1, repr(exc))]

    threads = [threading.Thread(target=committer, args=(w,)) for w in range(COMMITTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _check_commit_race(url, outcomes)


def commit_worker(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: :func:`_race_commits` after the barrier; sends its outcomes."""
    try:
        barrier.wait()
        results.put((worker, _race_commits(url, worker)))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put((worker, [(-1, repr(exc))]))


def test_racing_committers_in_processes_never_move_a_source_backward(
    shared_store_url: str,
) -> None:
    outcomes = run_processes(commit_worker, [(shared_store_url, w) for w in range(COMMITTERS)])
    _check_commit_race(shared_store_url, dict(outcomes))
