"""What a Python user touches first: constructor options and signatures, context managers,
``load_state`` and ``copy_checkpoint`` from URLs, and the fencing opt-out (library and CLI).

Store behaviour runs on memory, a local directory and moto S3 (``KIND``), through both faces.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from objstore import (
    AsyncCheckpointStore,
    AsyncKVStore,
    AsyncNoopSnapshotStore,
    AsyncProjectionCheckpointStore,
    AsyncSnapshotStore,
    AsyncSourceCheckpointStore,
    CheckpointManifest,
    CheckpointStore,
    CorruptionError,
    GlobalProjectionCheckpoint,
    KVStore,
    NoopSnapshotStore,
    NotSupportedError,
    ProjectionCheckpointStore,
    RequestEvent,
    Snapshot,
    SnapshotStore,
    SourceCheckpointStore,
    cli,
    copy_checkpoint,
    copy_checkpoint_async,
    open_async_backend,
    open_backend,
)
from objstore.backends import PROBE_PREFIX, AsyncBackend
from objstore.checkpoint import LATEST, manifest_key, state_key
from objstore.checkpoint._layout import PointerRecord, parse_pointer
from tests.conftest import make_store_url

KINDS = ["memory", "file", "s3"]


@pytest.fixture(params=KINDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh store on memory, a local directory and moto S3 in turn."""
    return make_store_url(request.param, request, tmp_path)


def second_url(url: str, name: str) -> str:
    """Another empty store next to ``url``."""
    return f"{url}-{name}" if url.startswith("memory://") else f"{url}/{name}"


# -- the five stores, driven alike -----------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One store class pair, how to build it and one write.

    ``conditional``: whether that write is known to be conditional, so that it meets the
    capability probe (today's snapshot save is an unconditional PUT; DESIGN §4 wants it
    conditional, and then it belongs with the others).
    """

    name: str
    sync_class: type
    async_class: type
    args: tuple[Any, ...]
    write: Callable[[Any], Awaitable[object]]
    conditional: bool = True


async def _save_checkpoint(store: Any) -> object:
    return await store.save(CheckpointManifest(checkpoint_id=1, epoch=1))


async def _commit_source(store: Any) -> object:
    await store.begin()
    await store.stage_checkpoint("source", 1, b"position")
    return await store.commit()


async def _save_projection(store: Any) -> object:
    return await store.save_projection_checkpoint("p", GlobalProjectionCheckpoint({"s": 3}))


async def _save_snapshot(store: Any) -> object:
    return await store.save(Snapshot("stream", 1, 1, b"state"))


async def _put_batch(store: Any) -> object:
    return await store.put_batch([(b"k", b"v")])


STORES = [
    Kind("checkpoint", CheckpointStore, AsyncCheckpointStore, (), _save_checkpoint),
    Kind("sources", SourceCheckpointStore, AsyncSourceCheckpointStore, ("q",), _commit_source),
    Kind(
        "projections",
        ProjectionCheckpointStore,
        AsyncProjectionCheckpointStore,
        (),
        _save_projection,
    ),
    Kind("snapshots", SnapshotStore, AsyncSnapshotStore, (), _save_snapshot),
    Kind("kv", KVStore, AsyncKVStore, (), _put_batch),
]
store_kinds = pytest.mark.parametrize("kind", STORES, ids=lambda kind: kind.name)
fenced_kinds = pytest.mark.parametrize(
    "kind", [kind for kind in STORES if kind.conditional], ids=lambda kind: kind.name
)


def write_sync(kind: Kind, store: Any) -> None:
    """``kind.write`` through the blocking store (its async core on objstore's loop)."""
    from objstore._loop import run_sync

    run_sync(kind.write(store.async_store))


# -- verify_fencing --------------------------------------------------------------------------


@fenced_kinds
def test_unsafe_store_is_refused_and_the_advice_works(kind: Kind, lax_url: str) -> None:
    store = kind.sync_class(lax_url, *kind.args)
    with pytest.raises(NotSupportedError) as refused:
        write_sync(kind, store)
    message = str(refused.value)
    assert "verify_fencing=False" in message
    assert "--unsafe-skip-fencing-check" in message
    store.close()
    # What the message says to do, done: the same write now succeeds, on both faces.
    with kind.sync_class(lax_url, *kind.args, verify_fencing=False) as unsafe:
        write_sync(kind, unsafe)

    async def async_face() -> None:
        async with kind.async_class(lax_url, *kind.args) as refusing:
            with pytest.raises(NotSupportedError):
                await kind.write(refusing)

    asyncio.run(async_face())


@store_kinds
def test_verify_fencing_false_skips_the_probe(kind: Kind, url: str) -> None:
    """Default: the first conditional write probes the store; ``False``: no probe request."""
    # A write that is not conditional (today's snapshot save) need not probe: not asserted.
    cases = [(True, True)] if kind.conditional else []
    for verify, probed in [*cases, (False, False)]:
        events: list[RequestEvent] = []
        with kind.sync_class(
            second_url(url, f"v{verify}"),
            *kind.args,
            verify_fencing=verify,
            request_hook=events.append,
        ) as store:
            assert store.async_store.backend.verify_fencing is verify
            write_sync(kind, store)
        probe_requests = [e for e in events if e.key.startswith(PROBE_PREFIX)]
        assert bool(probe_requests) is probed, (verify, events)
        assert any(e.outcome == "ok" and e.bytes_sent > 0 for e in events)


def test_verify_fencing_false_with_a_probing_backend_is_refused() -> None:
    backend = open_backend("memory://")
    with pytest.raises(ValueError, match="verify_fencing=False"):
        CheckpointStore(backend, verify_fencing=False)
    with pytest.raises(ValueError, match="request_hook"):
        CheckpointStore(backend, request_hook=print)
    lax = open_backend("memory://", verify_fencing=False)
    CheckpointStore(lax, verify_fencing=False).save(CheckpointManifest(checkpoint_id=1, epoch=1))
    backend.close()
    lax.close()


runner = CliRunner()


def test_cli_unsafe_skip_fencing_check(lax_url: str) -> None:
    """The CLI refuses a lax store (exit 4, naming the flag) and writes with the flag."""
    with CheckpointStore(lax_url, verify_fencing=False) as store:
        store.save(CheckpointManifest(checkpoint_id=1, epoch=1))
        store.save(CheckpointManifest(checkpoint_id=2, epoch=1))
    lax = open_backend(lax_url, verify_fencing=False)
    lax.put(LATEST, b"checkpoint_00000000000000000001")  # lagging: recover --repair moves it
    refused = runner.invoke(cli.app, ["recover", lax_url, "--repair"])
    assert refused.exit_code == 4, refused.output
    assert "--unsafe-skip-fencing-check" in refused.stderr
    assert lax.get(LATEST)[0].endswith(b"1")
    allowed = runner.invoke(
        cli.app, ["--unsafe-skip-fencing-check", "recover", lax_url, "--repair"]
    )
    assert allowed.exit_code == 0, allowed.output
    assert parse_pointer(lax.get(LATEST)[0]) == PointerRecord(2, 1, 1)
    # The flag does not outlive its command line.
    lax.put(LATEST, b"checkpoint_00000000000000000001")
    assert runner.invoke(cli.app, ["recover", lax_url, "--repair"]).exit_code == 4
    lax.close()


# -- -v logs every request ----------------------------------------------------------------------


def test_cli_verbose_logs_each_request(url: str) -> None:
    with CheckpointStore(url) as store:
        store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), {"op": b"x" * 100})
    quiet = runner.invoke(cli.app, ["show", url, "1"])
    assert quiet.exit_code == 0, quiet.output
    assert "DEBUG" not in quiet.stderr
    loud = runner.invoke(cli.app, ["-v", "show", url, "1"])
    assert loud.exit_code == 0, loud.output
    lines = [line for line in loud.stderr.splitlines() if line.startswith("DEBUG")]
    assert lines, loud.stderr
    manifest_reads = [line for line in lines if f" {manifest_key(1)}: ok in " in line]
    assert manifest_reads, lines
    line = manifest_reads[0]
    assert line.startswith("DEBUG objstore.backends._observe: get ")
    assert " ms, 0 B sent, " in line
    assert "attempt 1" in line
    size = int(line.split(" B received")[0].rsplit(" ", 1)[1])
    assert size == open_backend(url).head(manifest_key(1)).size


# -- context managers --------------------------------------------------------------------------


def spy_close(backend: AsyncBackend) -> list[int]:
    """Count calls of the transport's ``close`` (still closing it for real)."""
    closed: list[int] = []
    original = backend.transport.close

    async def close() -> None:
        closed.append(1)
        await original()

    backend.transport.close = close  # type: ignore[method-assign]
    return closed


@store_kinds
def test_stores_are_context_managers_that_close(kind: Kind, url: str) -> None:
    with kind.sync_class(url, *kind.args) as store:
        assert isinstance(store, kind.sync_class)
        closed = spy_close(store.async_store.backend)
        write_sync(kind, store)
        assert closed == []
    assert closed == [1]

    async def async_face() -> list[int]:
        async with kind.async_class(second_url(url, "async"), *kind.args) as store:
            assert isinstance(store, kind.async_class)
            closed = spy_close(store.backend)
            await kind.write(store)
            assert closed == []
        return closed

    assert asyncio.run(async_face()) == [1]


def test_backends_and_noop_stores_are_context_managers(url: str) -> None:
    with open_backend(url) as backend:
        closed = spy_close(backend.async_backend)
        backend.put("k", b"v")
    assert closed == [1]

    async def async_face() -> list[int]:
        async with open_async_backend(url) as backend:
            closed = spy_close(backend)
            await backend.put("k", b"v")
        return closed

    assert asyncio.run(async_face()) == [1]
    with NoopSnapshotStore() as noop:
        assert noop.load("s") is None

    async def noop_async() -> None:
        async with AsyncNoopSnapshotStore() as store:
            assert await store.load("s") is None

    asyncio.run(noop_async())


def test_with_closes_when_the_block_raises(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "s")
    closed = spy_close(store.async_store.backend)

    def use() -> None:
        with store:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        use()
    assert closed == [1]


# -- typed constructors --------------------------------------------------------------------------


@store_kinds
def test_blocking_constructors_have_the_async_signature(kind: Kind) -> None:
    blocking = inspect.signature(kind.sync_class)
    core = inspect.signature(kind.async_class)
    kinds = {p.kind for p in blocking.parameters.values()}
    assert inspect.Parameter.VAR_POSITIONAL not in kinds
    assert inspect.Parameter.VAR_KEYWORD not in kinds

    def described(signature: inspect.Signature) -> list[tuple[str, Any, Any, Any]]:
        return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]

    assert described(blocking) == described(core)
    assert "verify_fencing" in blocking.parameters
    assert "request_hook" in blocking.parameters
    typo = r"unexpected keyword argument '(max_retaned|compact_evry)'"
    with pytest.raises(TypeError, match=typo):
        kind.sync_class("memory://", *kind.args, max_retaned=3, compact_evry=2)


def test_mypy_rejects_a_misspelt_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``mypy --strict`` a typo in a blocking constructor's option is an error."""
    from mypy import api

    root = Path(__file__).resolve().parent.parent  # this checkout's objstore, not another
    monkeypatch.chdir(root)
    monkeypatch.setenv("MYPYPATH", str(root))
    snippet = tmp_path / "typo.py"
    snippet.write_text(
        "from objstore import CheckpointStore, KVStore\n"
        "CheckpointStore('memory://x', max_retaned=3)\n"
        "KVStore('memory://x', compact_every=2)\n"
    )
    stdout, _, status = api.run(
        [
            "--strict",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(snippet),
        ]
    )
    assert status == 1, stdout
    errors = [line for line in stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, stdout
    assert 'Unexpected keyword argument "max_retaned"' in errors[0]
    assert "typo.py:2:" in errors[0]


# -- load_state ----------------------------------------------------------------------------------


STATE = {"counts": b"c" * 5000, "window": os.urandom(300), "empty": b"", "last": b"tail"}


def test_load_state_returns_the_named_chunks(url: str) -> None:
    with CheckpointStore(url) as store:
        store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
        loaded = store.load_state(1)
        assert loaded == STATE
        assert loaded is not None
        assert list(loaded) == list(STATE)  # saved order
        assert all(type(value) is bytes for value in loaded.values())
        assert store.load_state_data(1) == b"".join(STATE.values())  # still the concatenation

    async def async_face() -> dict[str, bytes] | None:
        async with AsyncCheckpointStore(url) as store:
            return await store.load_state(1)

    assert asyncio.run(async_face()) == STATE


def test_load_state_of_unnamed_missing_and_stateless_checkpoints(url: str) -> None:
    with CheckpointStore(url) as store:
        store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), b"plain bytes")
        store.save_with_state(CheckpointManifest(checkpoint_id=2, epoch=1), [b"a", b"bb"])
        store.save(CheckpointManifest(checkpoint_id=3, epoch=1))
        store.save_with_state(CheckpointManifest(checkpoint_id=4, epoch=1), {})
        store.save_with_state(
            CheckpointManifest(checkpoint_id=5, epoch=1), [("1", b"named"), b"x", b"unnamed"]
        )
        assert store.load_state(1) == {"0": b"plain bytes"}
        assert store.load_state(2) == {"0": b"a", "1": b"bb"}
        assert store.load_state(3) is None
        assert store.load_state_data(3) is None
        assert store.load_state(4) == {}
        assert store.load_state(99) is None
        assert store.load_state_data(99) is None
        with pytest.raises(ValueError, match="collide"):
            store.load_state(5)  # unnamed chunk 1 vs the chunk named "1"
        assert store.load_operator_state(5, 1) == b"x"


def test_load_state_verifies(url: str) -> None:
    with CheckpointStore(url) as store:
        store.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
    raw = open_backend(url, verify_fencing=False)
    data = bytearray(raw.get(state_key(1))[0])
    data[-1] ^= 0xFF
    raw.put(state_key(1), bytes(data))
    raw.close()
    with CheckpointStore(url) as store, pytest.raises(CorruptionError):
        store.load_state(1)


# -- copy_checkpoint from URLs -----------------------------------------------------------------


def test_copy_checkpoint_accepts_urls(url: str, tmp_path: Path) -> None:
    with CheckpointStore(url) as src:
        src.save_with_state(CheckpointManifest(checkpoint_id=1, epoch=1), STATE)
        src.save_with_state(CheckpointManifest(checkpoint_id=2, epoch=1), STATE)
    dst_url = second_url(url, "dst")
    result = copy_checkpoint(url, dst_url, 1)
    assert result.checkpoint_id == 1
    assert result.outcome == "copied"
    with CheckpointStore(dst_url) as dst:
        assert dst.load_state(1) == STATE
        # A store on one side, a path-like on the other.
        assert copy_checkpoint(dst, tmp_path / "third", 1).outcome == "copied"
    assert CheckpointStore(tmp_path / "third").load_state(1) == STATE

    async def async_face() -> str:
        copied = await copy_checkpoint_async(url, dst_url, 2)
        return copied.outcome

    assert asyncio.run(async_face()) == "copied"
    with CheckpointStore(dst_url) as dst:
        assert dst.load_state(2) == STATE
    with pytest.raises(TypeError, match="source must be a checkpoint store"):
        copy_checkpoint(42, dst_url, 1)  # type: ignore[arg-type]
