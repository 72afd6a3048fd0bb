"""ProjectionCheckpointStore: one-request advances, true saves, compaction, isolation, races.

Backends and faces are paired as in ``tests/store_helpers.py``.
"""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from objstore.backends import AsyncBackend, Backend, open_transport
from objstore.errors import CorruptionError
from objstore.projections import (
    AsyncProjectionCheckpointStore,
    GlobalProjectionCheckpoint,
    ProjectionCheckpointStore,
    _decode_delta,
)
from objstore.testing import FaultInjectingTransport, SimulatedCrash
from tests import store_helpers as shared
from tests.store_helpers import NASTY_NAMES, Faces, crash_points, local_backends, run_processes

# The backend/face fixtures of the source tests, so both files pair them the same way.
combo = shared.combo
faces = shared.faces
url = shared.url
local_url = shared.local_url
raw = shared.raw

G = GlobalProjectionCheckpoint


@pytest.fixture
def open_store(faces: Faces) -> Callable[..., Any]:
    """``open_store(location, **options)`` through the current face."""

    def open_(location: Any, **options: Any) -> Any:
        return faces.store(
            ProjectionCheckpointStore, AsyncProjectionCheckpointStore, location, **options
        )

    return open_


def delta_keys(backend: Backend, name_segment: str) -> list[str]:
    """The delta objects of a projection, read around the store."""
    return [info.key for info in backend.list(f"projections/{name_segment}/deltas")]


def advance_to(store: Any, name: str, previous: G, cursors: dict[str, int]) -> G:
    current = previous.merge(G(cursors))
    store.advance_projection_cursors(name, previous, current)
    return current


# -- values --------------------------------------------------------------------------------------


def test_checkpoint_value_semantics() -> None:
    empty = G()
    assert empty.cursor_for("missing") == 0
    one = empty.advance("process/tenant/42", 5)
    assert one.cursors == {"process/tenant/42": 5}
    assert empty.cursors == {}  # values are immutable: advance returns a new one
    assert one.advance("process/tenant/42", 3) is one  # never lowers
    assert one.advance("process/tenant/42", 5) is one
    assert one.advance("process/tenant/42", 6).cursor_for("process/tenant/42") == 6
    merged = G({"a": 1, "b": 9}).merge(G({"a": 4, "b": 2, "c": 1}))
    assert merged == G({"a": 4, "b": 9, "c": 1})
    assert merged.advanced_since(G({"a": 4, "b": 1})) == {"b": 9, "c": 1}
    assert hash(G({"a": 1, "b": 2})) == hash(G({"b": 2, "a": 1}))
    assert pickle.loads(pickle.dumps(merged)) == merged
    assert repr(G({"a": 1})) == "GlobalProjectionCheckpoint({'a': 1})"
    with pytest.raises(TypeError):
        merged.cursors["a"] = 0  # type: ignore[index]
    source = {"x": 1}
    copied = G(source)
    source["x"] = 2
    assert copied.cursor_for("x") == 1


@pytest.mark.parametrize(
    ("cursors", "error"),
    [
        ({"": 1}, ValueError),
        ({"nul\x00": 1}, ValueError),
        ({"bad\udcff": 1}, ValueError),
        ({7: 1}, TypeError),
        ({"a": -1}, ValueError),
        ({"a": 2**64}, ValueError),
        ({"a": True}, TypeError),
        ({"a": 1.0}, TypeError),
        ([("a", 1)], TypeError),
    ],
)
def test_checkpoint_rejects_bad_cursors(cursors: Any, error: type) -> None:
    with pytest.raises(error):
        G(cursors)
    if isinstance(cursors, dict):
        with pytest.raises(error):
            G({"ok": 1}).advance(*next(iter(cursors.items())))


# -- load, save, advance -------------------------------------------------------------------------


def test_unknown_projection_is_empty_after_one_list(
    faces: Faces, open_store: Any, url: str
) -> None:
    faults, backend = faces.faulty(url)
    assert open_store(backend).load_projection_checkpoint("never/saved") == G()
    assert [call.operation for call in faults.calls] == ["list"]


def test_save_truly_replaces(open_store: Any, url: str, raw: Callable[[str], Backend]) -> None:
    store = open_store(url)
    store.save_projection_checkpoint("p", G({"a": 5, "b": 7}))
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 5, "b": 7})
    advance_to(store, "p", G({"a": 5, "b": 7}), {"c": 3, "a": 6})
    store.save_projection_checkpoint("p", G({"a": 1}))
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 1})
    store.save_projection_checkpoint("p", G())
    assert open_store(url).load_projection_checkpoint("p") == G()
    assert delta_keys(raw(url), "p") == []  # the deltas a save supersedes are deleted


def test_load_is_base_plus_later_deltas(
    open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    store = open_store(url, compact_every=100)
    store.save_projection_checkpoint("p", G({"a": 1, "b": 1}))
    current = advance_to(store, "p", G({"a": 1, "b": 1}), {"a": 5})
    current = advance_to(store, "p", current, {"c": 2})
    assert len(delta_keys(raw(url), "p")) == 2
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 5, "b": 1, "c": 2})


def test_advance_is_one_request_with_only_strictly_advanced_cursors(
    faces: Faces, open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    previous = G({f"stream/{n}": n for n in range(2000)})
    store.save_projection_checkpoint("p", previous)
    current = G(
        {
            **{f"stream/{n}": n + 1 for n in range(0, 2000, 2)},  # 1,000 advanced
            **{f"stream/{n}": n for n in range(1, 2000, 4)},  # unchanged
            **{f"stream/{n}": 0 for n in range(3, 2000, 4)},  # lower: ignored
            "new/stream": 1,
        }
    )
    faults.clear_calls()
    store.advance_projection_cursors("p", previous, current)
    assert [call.operation for call in faults.calls] == ["put_if_absent"]
    (key,) = delta_keys(raw(url), "p")
    delta = _decode_delta(raw(url).get(key)[0], key=key, name="p")
    assert delta == {**{f"stream/{n}": n + 1 for n in range(0, 2000, 2)}, "new/stream": 1}
    expected = previous.merge(current)
    assert open_store(url).load_projection_checkpoint("p") == expected


@local_backends
def test_nothing_advanced_means_no_request(faces: Faces, open_store: Any, url: str) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    previous = G({"a": 5, "b": 2})
    store.advance_projection_cursors("p", previous, previous)
    store.advance_projection_cursors("p", previous, G({"a": 4}))
    store.advance_projection_cursors("p", previous, G({"a": 5, "b": 0}))
    assert faults.calls == []


@local_backends
def test_advance_never_moves_a_cursor_backward(open_store: Any, url: str) -> None:
    store = open_store(url)
    store.save_projection_checkpoint("p", G({"a": 10}))
    store.advance_projection_cursors("p", G(), G({"a": 3, "b": 1}))  # a stale view of "a"
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 10, "b": 1})


def test_compaction_keeps_deltas_bounded_and_advances_at_one_request(
    faces: Faces, open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend, compact_every=4)
    current = store.load_projection_checkpoint("p")
    for n in range(1, 23):
        faults.clear_calls()
        current = advance_to(store, "p", current, {f"s{n % 5}": n, "all": n})
        if n % 4:
            assert [call.operation for call in faults.calls] == ["put_if_absent"]
        else:  # this advance compacted: the 4 deltas went into the base
            assert faults.count("put_if_absent") + faults.count("put_if_match") == 2
            assert faults.count("delete") == 4
        assert len(delta_keys(raw(url), "p")) == n % 4
    assert open_store(url).load_projection_checkpoint("p") == current
    assert current == G({"s0": 20, "s1": 21, "s2": 22, "s3": 18, "s4": 19, "all": 22})


def test_load_counts_deltas_it_found_towards_compaction(
    open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    first = open_store(url, compact_every=100)
    current = first.load_projection_checkpoint("p")
    for n in range(1, 4):
        current = advance_to(first, "p", current, {"a": n})
    second = open_store(url, compact_every=4)
    assert second.load_projection_checkpoint("p") == current
    advance_to(second, "p", current, {"a": 4})  # 3 found + 1 own = 4: compacts
    assert delta_keys(raw(url), "p") == []
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 4})


@local_backends
def test_explicit_compaction(open_store: Any, url: str, raw: Callable[[str], Backend]) -> None:
    store = open_store(url, compact_every=100)
    assert store.compact_projection_checkpoint("p") is False
    current = advance_to(store, "p", G(), {"a": 1})
    current = advance_to(store, "p", current, {"b": 2})
    assert store.compact_projection_checkpoint("p") is True
    assert delta_keys(raw(url), "p") == []
    assert store.compact_projection_checkpoint("p") is False
    assert open_store(url).load_projection_checkpoint("p") == current


# -- names ---------------------------------------------------------------------------------------


def test_names_and_stream_ids_with_special_characters(
    open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    store = open_store(url)
    for index, name in enumerate(NASTY_NAMES):
        checkpoint = G({stream: index * 100 + n for n, stream in enumerate(NASTY_NAMES)})
        store.save_projection_checkpoint(name, checkpoint)
        advance_to(store, name, checkpoint, {NASTY_NAMES[0]: 10_000 + index})
    for index, name in enumerate(NASTY_NAMES):
        expected = G({stream: index * 100 + n for n, stream in enumerate(NASTY_NAMES)})
        expected = expected.advance(NASTY_NAMES[0], 10_000 + index)
        assert open_store(url).load_projection_checkpoint(name) == expected
    keys = [info.key for info in raw(url).list("projections")]
    assert all(key.count("/") in (2, 3) for key in keys), keys  # projections/{segment}/...
    assert all(len(key) < 300 for key in keys)


def test_projection_a_never_sees_projection_a_slash_b(open_store: Any, url: str) -> None:
    store = open_store(url, compact_every=2)
    store.save_projection_checkpoint("a/b", G({"process/tenant/42": 7}))
    advance_to(store, "a/b", G(), {"x": 1})
    advance_to(store, "a/b", G(), {"y": 1})  # compacts a/b
    advance_to(store, "a/b", G(), {"z": 1})
    assert open_store(url).load_projection_checkpoint("a") == G()
    store.save_projection_checkpoint("a", G({"mine": 1}))
    store.compact_projection_checkpoint("a")
    assert open_store(url).load_projection_checkpoint("a") == G({"mine": 1})
    assert open_store(url).load_projection_checkpoint("a/b") == G(
        {"process/tenant/42": 7, "x": 1, "y": 1, "z": 1}
    )


@local_backends
@pytest.mark.parametrize(
    ("bad", "error"),
    [("", ValueError), ("nul\x00", ValueError), ("bad\udcff", ValueError), (3, TypeError)],
)
def test_bad_names_are_rejected_before_any_request(
    faces: Faces, open_store: Any, url: str, bad: Any, error: type
) -> None:
    faults, backend = faces.faulty(url)
    store = open_store(backend)
    with pytest.raises(error):
        store.load_projection_checkpoint(bad)
    with pytest.raises(error):
        store.save_projection_checkpoint(bad, G({"a": 1}))
    with pytest.raises(error):
        store.advance_projection_cursors(bad, G(), G({"a": 1}))
    with pytest.raises(TypeError):
        store.save_projection_checkpoint("p", {"a": 1})
    with pytest.raises(TypeError):
        store.advance_projection_cursors("p", {}, G({"a": 1}))
    assert faults.calls == []


# -- crash safety --------------------------------------------------------------------------------

BASE = G({"a": 1, "b": 1})


def run_crash_matrix(
    faces: Faces,
    open_store: Any,
    url: str,
    raw: Callable[[str], Backend],
    prepare: Callable[[Any, str], None],
    operation: Callable[[Any, str], None],
    old: G,
    new: G,
    commit_point: Callable[[str, int], bool],
) -> int:
    """Crash before and after every write ``operation`` makes (and lose each response),
    each on a fresh projection; a fresh store must load ``old`` before the commit point
    and ``new`` from it on. Returns the number of writes."""

    def scenario(name: str) -> tuple[FaultInjectingTransport, Any]:
        faults, backend = faces.faulty(url)
        store = open_store(backend, compact_every=1000)
        prepare(store, name)
        faults.clear_calls()
        return faults, store

    faults, store = scenario("dry-run")
    operation(store, "dry-run")
    points = crash_points(faults)
    committed = False
    for case, (op, nth) in enumerate(points):
        committed = committed or commit_point(op, nth)
        for when in ("before", "after", "lose-response"):
            name = f"case-{case}-{when}"
            faults, store = scenario(name)
            if when == "lose-response":
                faults.lose_response(op, nth)
                operation(store, name)
                expected = new
            else:
                getattr(faults, f"crash_{when}")(op, nth)
                with pytest.raises(SimulatedCrash):
                    operation(store, name)
                landed = committed and (when == "after" or not commit_point(op, nth))
                expected = new if landed else old
            fresh = open_store(url)
            assert fresh.load_projection_checkpoint(name) == expected, (when, op, nth)
            # Life goes on: a new advance and a compaction (which also finishes any cleanup
            # the crash interrupted) must neither lose it nor revive superseded deltas.
            fresh.advance_projection_cursors(name, G(), G({"later": 1}))
            fresh.compact_projection_checkpoint(name)
            later = expected.advance("later", 1)
            assert fresh.load_projection_checkpoint(name) == later, (when, op, nth)
            assert len(delta_keys(raw(url), name)) == 0, (when, op, nth)
    return len(points)


def _prepare_with_deltas(store: Any, name: str) -> None:
    store.save_projection_checkpoint(name, BASE)
    advance_to(store, name, BASE, {"a": 2})
    advance_to(store, name, BASE, {"c": 1})


def test_crash_matrix_advance(
    faces: Faces, open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    writes = run_crash_matrix(
        faces,
        open_store,
        url,
        raw,
        lambda store, name: store.save_projection_checkpoint(name, BASE),
        lambda store, name: advance_to(store, name, BASE, {"a": 5, "z": 1}),
        old=BASE,
        new=G({"a": 5, "b": 1, "z": 1}),
        commit_point=lambda op, nth: op == "put_if_absent",
    )
    assert writes == 1


def test_crash_matrix_save(
    faces: Faces, open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    writes = run_crash_matrix(
        faces,
        open_store,
        url,
        raw,
        _prepare_with_deltas,
        lambda store, name: store.save_projection_checkpoint(name, G({"a": 1})),
        old=G({"a": 2, "b": 1, "c": 1}),
        new=G({"a": 1}),
        commit_point=lambda op, nth: op == "put_if_match",
    )
    assert writes == 3  # swap the base, delete the 2 superseded deltas


def test_crash_matrix_compaction(
    faces: Faces, open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    value = G({"a": 2, "b": 1, "c": 1})
    writes = run_crash_matrix(
        faces,
        open_store,
        url,
        raw,
        _prepare_with_deltas,
        lambda store, name: store.compact_projection_checkpoint(name),
        old=value,
        new=value,
        commit_point=lambda op, nth: op == "put_if_match",
    )
    assert writes == 3  # swap the base, delete the 2 folded deltas


def test_crash_matrix_first_save(
    faces: Faces, open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    writes = run_crash_matrix(
        faces,
        open_store,
        url,
        raw,
        lambda store, name: None,
        lambda store, name: store.save_projection_checkpoint(name, BASE),
        old=G(),
        new=BASE,
        commit_point=lambda op, nth: op == "put_if_absent",
    )
    assert writes == 1


@local_backends
def test_crashes_in_a_row_never_revive_superseded_deltas(
    faces: Faces, open_store: Any, url: str
) -> None:
    faults, backend = faces.faulty(url)
    _prepare_with_deltas(open_store(backend), "p")  # deltas a=2 and c=1 on the base
    faults.crash_after("put_if_match")  # the save lands, its cleanup never runs
    with pytest.raises(SimulatedCrash):
        open_store(backend).save_projection_checkpoint("p", G({"a": 1}))
    restarted = open_store(backend)
    restarted.advance_projection_cursors("p", G(), G({"later": 1}))
    faults.clear_faults()
    faults.crash_after("put_if_match")  # the compaction lands, its cleanup never runs
    with pytest.raises(SimulatedCrash):
        restarted.compact_projection_checkpoint("p")
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 1, "later": 1})


@local_backends
def test_damaged_objects_are_errors_and_save_recovers(
    open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    store = open_store(url, compact_every=100)
    store.save_projection_checkpoint("p", BASE)
    advance_to(store, "p", BASE, {"a": 2})
    backend = raw(url)
    (delta,) = delta_keys(raw(url), "p")
    backend.put(delta, b"not sealed")
    with pytest.raises(CorruptionError):
        open_store(url).load_projection_checkpoint("p")
    backend.put("projections/p/base", b"\x00" * 40)
    with pytest.raises(CorruptionError):
        open_store(url).load_projection_checkpoint("p")
    open_store(url).save_projection_checkpoint("p", G({"a": 3}))
    assert open_store(url).load_projection_checkpoint("p") == G({"a": 3})


# -- deterministic interleavings of two writers ---------------------------------------------------


class Interleaver(FaultInjectingTransport):
    """Runs another writer's coroutine right before the ``nth`` call of an operation."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.hooks: dict[tuple[str, int], Callable[[], Awaitable[Any]]] = {}
        self.seen: dict[str, int] = {}

    def before(self, operation: str, nth: int, hook: Callable[[], Awaitable[Any]]) -> None:
        self.hooks[(operation, nth)] = hook

    async def _hook(self, operation: str) -> None:
        self.seen[operation] = self.seen.get(operation, 0) + 1
        hook = self.hooks.pop((operation, self.seen[operation]), None)
        if hook is not None:
            await hook()

    async def list(self, prefix: str) -> Any:
        await self._hook("list")
        return await super().list(prefix)

    async def get(self, key: str) -> Any:
        await self._hook("get")
        return await super().get(key)

    async def put_if_match(self, key: str, data: Any, version: str) -> str:
        await self._hook("put_if_match")
        return await super().put_if_match(key, data, version)

    async def put_if_absent(self, key: str, data: Any) -> str:
        await self._hook("put_if_absent")
        return await super().put_if_absent(key, data)


def interleaved(url: str, scenario: Callable[[Interleaver, Any, Any], Awaitable[None]]) -> None:
    """Run ``scenario(hooks, hooked_store, other_store)`` on one event loop."""

    async def main() -> None:
        transport = open_transport(url)
        hooks = Interleaver(transport)
        hooked = AsyncProjectionCheckpointStore(AsyncBackend(hooks, verify_fencing=False))
        other = AsyncProjectionCheckpointStore(AsyncBackend(transport, verify_fencing=False))
        await scenario(hooks, hooked, other)
        await other.close()

    asyncio.run(main())


def test_compaction_that_loses_to_a_save_gives_up(local_url: str) -> None:
    async def scenario(hooks: Interleaver, compactor: Any, saver: Any) -> None:
        await compactor.save_projection_checkpoint("p", BASE)
        await compactor.advance_projection_cursors("p", BASE, G({"a": 9}))
        hooks.seen.clear()
        hooks.before("put_if_match", 1, lambda: saver.save_projection_checkpoint("p", G({"s": 1})))
        assert await compactor.compact_projection_checkpoint("p") is False
        assert await saver.load_projection_checkpoint("p") == G({"s": 1})
        assert await compactor.load_projection_checkpoint("p") == G({"s": 1})

    interleaved(local_url, scenario)


def test_save_that_loses_to_a_compaction_retries_and_stands(local_url: str) -> None:
    async def scenario(hooks: Interleaver, saver: Any, compactor: Any) -> None:
        await compactor.save_projection_checkpoint("p", BASE)
        await compactor.advance_projection_cursors("p", BASE, G({"a": 9}))
        await saver.load_projection_checkpoint("p")  # the saver knows the base's version
        hooks.seen.clear()
        hooks.before("put_if_match", 1, lambda: compactor.compact_projection_checkpoint("p"))
        await saver.save_projection_checkpoint("p", G({"s": 1}))
        assert hooks.count("put_if_match") == 2
        assert await compactor.load_projection_checkpoint("p") == G({"s": 1})

    interleaved(local_url, scenario)


def test_reader_starts_over_when_a_compaction_removes_what_it_listed(local_url: str) -> None:
    async def scenario(hooks: Interleaver, reader: Any, writer: Any) -> None:
        await writer.save_projection_checkpoint("p", BASE)
        await writer.advance_projection_cursors("p", BASE, G({"a": 5}))
        await writer.advance_projection_cursors("p", BASE, G({"c": 2}))
        hooks.seen.clear()
        # get 1 reads the base, get 2 the first listed delta, which the compaction deletes
        hooks.before("get", 2, lambda: writer.compact_projection_checkpoint("p"))
        assert await reader.load_projection_checkpoint("p") == G({"a": 5, "b": 1, "c": 2})
        assert hooks.count("list") == 2

    interleaved(local_url, scenario)


def test_advance_landing_after_a_save_listed_counts_on_top_of_it(local_url: str) -> None:
    async def scenario(hooks: Interleaver, saver: Any, writer: Any) -> None:
        await saver.save_projection_checkpoint("p", G({"a": 9, "b": 9}))
        hooks.seen.clear()
        hooks.before(
            "put_if_match", 1, lambda: writer.advance_projection_cursors("p", G(), G({"y": 5}))
        )
        await saver.save_projection_checkpoint("p", G({"a": 1}))
        assert await writer.load_projection_checkpoint("p") == G({"a": 1, "y": 5})

    interleaved(local_url, scenario)


def test_two_writers_advancing_one_projection_lose_nothing(local_url: str) -> None:
    async def scenario(hooks: Interleaver, first: Any, second: Any) -> None:
        first.compact_every = second.compact_every = 3
        mine, theirs = G(), G()
        for n in range(1, 20):
            if n == 7:  # the second writer compacts in the middle of the first's compaction
                hooks.seen.clear()
                hooks.before("put_if_match", 1, lambda: second.compact_projection_checkpoint("p"))
            new_mine = mine.merge(G({"first": n, "shared": 2 * n}))
            await first.advance_projection_cursors("p", mine, new_mine)
            new_theirs = theirs.merge(G({"second": n, "shared": 2 * n + 1}))
            await second.advance_projection_cursors("p", theirs, new_theirs)
            mine, theirs = new_mine, new_theirs
        expected = G({"first": 19, "second": 19, "shared": 39})
        assert await first.load_projection_checkpoint("p") == expected

    interleaved(local_url, scenario)


# -- stored format -------------------------------------------------------------------------------

# Format-1 objects, written by tests/data/generate.py (tests/test_format_compat.py reads them too).
FORMAT_1 = Path(__file__).parent / "data" / "projections-format-1" / "projections" / "proj%2Fa"
BASE_V1 = (FORMAT_1 / "base").read_bytes()
DELTA_V1 = (FORMAT_1 / "deltas" / "d1").read_bytes()


@local_backends
def test_format_1_objects_still_read(
    open_store: Any, url: str, raw: Callable[[str], Backend]
) -> None:
    backend = raw(url)
    backend.put("projections/proj%2Fa/base", BASE_V1)  # folds delta "d1"
    backend.put("projections/proj%2Fa/deltas/d1", DELTA_V1)
    assert open_store(url).load_projection_checkpoint("proj/a") == G(
        {"process/tenant/42": 9, "s": 1}
    )
    backend.put("projections/proj%2Fa/deltas/d2", DELTA_V1)
    assert open_store(url).load_projection_checkpoint("proj/a") == G(
        {"process/tenant/42": 10, "s": 1}
    )


# -- the async face on every backend, driven by asyncio.run ---------------------------------------


def test_async_store_round_trip(store_url: str) -> None:
    async def main() -> None:
        store = AsyncProjectionCheckpointStore(store_url, compact_every=2)
        previous = await store.load_projection_checkpoint("orders/eu")
        await store.save_projection_checkpoint("orders/eu", previous.advance("s/1", 1))
        current = G({"s/1": 2, "s/2": 1})
        await store.advance_projection_cursors("orders/eu", previous, current)
        await store.advance_projection_cursors("orders/eu", current, current.advance("s/3", 3))
        assert await store.compact_projection_checkpoint("orders/eu") is False
        other = AsyncProjectionCheckpointStore(store_url)
        assert await other.load_projection_checkpoint("orders/eu") == G(
            {"s/1": 2, "s/2": 1, "s/3": 3}
        )
        await store.close()
        await other.close()

    asyncio.run(main())


# -- concurrent writers in separate processes ----------------------------------------------------

PROCESSES = 3
ADVANCES_PER_PROCESS = 10


def advance_worker(url: str, worker: int, barrier: Any, results: Any) -> None:
    """Child process: advance its own stream and a shared one, compacting every 3."""
    try:
        store = ProjectionCheckpointStore(url, compact_every=3)
        previous = store.load_projection_checkpoint("process/tenant/42")
        barrier.wait()
        for n in range(1, ADVANCES_PER_PROCESS + 1):
            current = previous.merge(G({f"worker/{worker}": n, "shared": worker * 1000 + n}))
            store.advance_projection_cursors("process/tenant/42", previous, current)
            previous = current
        store.close()
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(("error", repr(exc)))
    else:
        results.put(("done", worker))


def test_writers_in_processes_lose_no_advance(
    shared_store_url: str, raw: Callable[[str], Backend]
) -> None:
    outcomes = run_processes(advance_worker, [(shared_store_url, w) for w in range(PROCESSES)])
    assert sorted(outcomes) == [("done", w) for w in range(PROCESSES)]
    loaded = ProjectionCheckpointStore(shared_store_url).load_projection_checkpoint(
        "process/tenant/42"
    )
    expected = {f"worker/{w}": ADVANCES_PER_PROCESS for w in range(PROCESSES)}
    expected["shared"] = (PROCESSES - 1) * 1000 + ADVANCES_PER_PROCESS
    assert loaded == G(expected)
    # Each writer leaves fewer than compact_every deltas of its own, plus at most as many
    # again that were written while a compaction it lost was in flight.
    assert len(delta_keys(raw(shared_store_url), "process%2Ftenant%2F42")) <= 2 * PROCESSES * 3
