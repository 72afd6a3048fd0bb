"""The exception tree, pinned: each error's bases, the builtins it subclasses, its public
``__module__``, and a pickling round trip that keeps every field (the errors a multi-process
writer sends back across a process pool).

A change here is a change to the public contract: a handler written as ``except
FileNotFoundError`` or ``except PreconditionFailedError`` relies on it.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
import pickle
from typing import Any

import pytest

import objstore
from objstore import errors
from objstore.checkpoint import Pointer, Removal, RemovalRefused
from objstore.errors import (
    AlreadyExistsError,
    CheckpointConflict,
    ConflictError,
    CorruptionError,
    FencedError,
    NotFoundError,
    NotSupportedError,
    ObjstoreError,
    OutcomeUnknownError,
    PreconditionFailedError,
    ReceiptError,
    StoreNotFoundError,
    TransientStorageError,
)
from objstore.testing import SimulatedCrash

# class -> (its direct bases, the builtin exceptions it must be an instance of)
TREE: dict[type[BaseException], tuple[tuple[type, ...], tuple[type[BaseException], ...]]] = {
    ObjstoreError: ((Exception,), (Exception,)),
    NotFoundError: ((ObjstoreError, FileNotFoundError), (FileNotFoundError, OSError)),
    AlreadyExistsError: ((ObjstoreError, FileExistsError), (FileExistsError, OSError)),
    PreconditionFailedError: ((ObjstoreError,), ()),
    CheckpointConflict: ((PreconditionFailedError,), ()),
    FencedError: ((CheckpointConflict,), ()),
    ConflictError: ((PreconditionFailedError,), ()),
    CorruptionError: ((ObjstoreError,), ()),
    NotSupportedError: ((ObjstoreError, NotImplementedError), (NotImplementedError,)),
    OutcomeUnknownError: ((ObjstoreError,), ()),
    ReceiptError: ((ObjstoreError, ValueError), (ValueError,)),
    StoreNotFoundError: ((ObjstoreError,), ()),
    TransientStorageError: ((ObjstoreError, OSError), (OSError,)),
}
NOT_BUILTIN_SUBCLASSES: dict[type[BaseException], tuple[type[BaseException], ...]] = {
    # A missing store must never read as a missing object ("nothing saved yet").
    StoreNotFoundError: (FileNotFoundError, OSError),
    PreconditionFailedError: (OSError, ValueError),
    CorruptionError: (OSError, ValueError),
}


def _samples() -> list[BaseException]:
    """One instance of every error, every field set to a distinctive value."""
    return [
        ObjstoreError("plain message"),
        NotFoundError("checkpoints/latest.txt"),
        NotFoundError("k", "custom not-found message"),
        AlreadyExistsError("checkpoints/x/manifest.json"),
        PreconditionFailedError("k", expected_version="v1", actual_version="v2"),
        CheckpointConflict("m.json", checkpoint_id=7, epoch=3, winner_epoch=4),
        CheckpointConflict("m.json", "custom", checkpoint_id=8, epoch=2, winner_epoch=None),
        FencedError("m.json", "fenced!", checkpoint_id=9, epoch=1, winner_epoch=5),
        ConflictError("sources.json", expected={"a": 1}, actual={"a": 2}),
        ConflictError("kv/manifest", "lost races", expected=3, actual=4),
        CorruptionError("state.bin", "checksum mismatch", expected="ab", actual="cd"),
        CorruptionError("state.bin", "truncated"),
        NotSupportedError("ignores preconditions"),
        OutcomeUnknownError("kv/log/00000000000000000002", sequence=2),
        ReceiptError("checkpoint 4", "foreign receipt", checkpoint_id=4, parts=("kg-0",)),
        ReceiptError("checkpoint 5", "missing", checkpoint_id=5, parts=("a", "b")),
        StoreNotFoundError("s3://nope"),
        StoreNotFoundError("file:///x", "the store file:///x does not exist"),
        TransientStorageError("503 slow down"),
        RemovalRefused(
            Removal((1,), (1,), (), (), 1, "newest valid", Pointer("x", 1, "v"), None, False)
        ),
        SimulatedCrash("crash after put_if_absent"),
    ]


def _fields(error: BaseException) -> dict[str, Any]:
    """What a handler can read from ``error``."""
    return {
        "type": type(error),
        "str": str(error),
        "args": error.args,
        "dict": dict(vars(error)),
    }


def test_every_error_of_the_errors_module_is_pinned() -> None:
    public = {getattr(errors, name) for name in errors.__all__}
    assert public == set(TREE)
    assert {type(sample) for sample in _samples()} >= public


@pytest.mark.parametrize("cls", list(TREE), ids=lambda cls: cls.__name__)
def test_bases_and_builtins(cls: type[BaseException]) -> None:
    bases, builtins = TREE[cls]
    assert cls.__bases__ == bases
    for builtin in builtins:
        assert issubclass(cls, builtin)
    for builtin in NOT_BUILTIN_SUBCLASSES.get(cls, ()):
        assert not issubclass(cls, builtin)
    assert issubclass(cls, ObjstoreError)


@pytest.mark.parametrize("cls", list(TREE), ids=lambda cls: cls.__name__)
def test_public_module_paths(cls: type[BaseException]) -> None:
    assert cls.__module__ == "objstore.errors"
    assert getattr(objstore, cls.__name__) is cls  # also re-exported at the top


@pytest.mark.parametrize(
    ("cls", "module"),
    [(RemovalRefused, "objstore.checkpoint"), (SimulatedCrash, "objstore.testing")],
    ids=lambda value: getattr(value, "__name__", value),
)
def test_errors_outside_the_errors_module_name_their_public_home(
    cls: type[BaseException], module: str
) -> None:
    assert cls.__module__ == module
    assert getattr(importlib.import_module(module), cls.__name__) is cls


@pytest.mark.parametrize("error", _samples(), ids=lambda e: f"{type(e).__name__}-{e}"[:60])
def test_pickling_round_trip_keeps_every_field(error: BaseException) -> None:
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        clone = pickle.loads(pickle.dumps(error, protocol=protocol))
        assert _fields(clone) == _fields(error)


def _raise(index: int) -> None:
    raise _samples()[index]


def test_errors_cross_a_real_process_pool() -> None:
    """The way a multi-process writer meets them: raised in a worker, re-raised here."""
    samples = _samples()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as pool:
        futures = [pool.submit(_raise, index) for index in range(len(samples))]
        for sample, future in zip(samples, futures, strict=True):
            caught = future.exception(timeout=120)
            assert caught is not None
            assert _fields(caught) == _fields(sample)
            if isinstance(sample, CheckpointConflict):
                assert isinstance(caught, CheckpointConflict)
                assert (caught.checkpoint_id, caught.epoch, caught.winner_epoch) == (
                    sample.checkpoint_id,
                    sample.epoch,
                    sample.winner_epoch,
                )
