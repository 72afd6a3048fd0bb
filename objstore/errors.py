"""The objstore exception tree.

Every error objstore raises on purpose derives from :class:`ObjstoreError`, grouped by what a
handler would do about it::

    ObjstoreError
    ├── NotFoundError(FileNotFoundError)        the object is not there
    ├── AlreadyExistsError(FileExistsError)     create-if-absent lost: someone created it first
    ├── PreconditionFailedError                 compare-and-swap lost: the version moved
    │   ├── CheckpointConflict                  another writer claimed this checkpoint id
    │   │   └── FencedError                     ... and that writer's epoch is newer than ours
    │   └── ConflictError                       the store holds newer state than this write
    ├── CorruptionError                         bytes do not match their checksum or format
    ├── NotSupportedError(NotImplementedError)  the store cannot give the guarantees we need
    ├── OutcomeUnknownError                     a write may have committed; the store cannot tell
    ├── ReceiptError(ValueError)                parts' receipts that are not this commit's
    ├── StoreNotFoundError                      the store itself (bucket, root directory) is missing
    └── TransientStorageError(OSError)          5xx, throttling, timeouts: the only retried kind

Backends translate fsspec, botocore and gcsfs errors into this tree exactly once, at the
transport boundary, keeping the original as ``__cause__``. Errors subclass the matching
builtins so ``except FileNotFoundError`` keeps working for code that does not know objstore.
Invalid arguments raise plain :class:`ValueError` / :class:`TypeError` before any request.

Every error pickles with all its fields (``key``, versions, ids, epochs, both sides of a
conflict), so one raised in a worker process arrives whole in the parent, and every class
names this public module as its ``__module__``. ``tests/test_exception_tree.py`` pins the tree.
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = [
    "AlreadyExistsError",
    "CheckpointConflict",
    "ConflictError",
    "CorruptionError",
    "FencedError",
    "NotFoundError",
    "NotSupportedError",
    "ObjstoreError",
    "OutcomeUnknownError",
    "PreconditionFailedError",
    "ReceiptError",
    "StoreNotFoundError",
    "TransientStorageError",
]


_E = TypeVar("_E", bound=BaseException)


def _rebuild(cls: type[_E], args: tuple[Any, ...], state: dict[str, Any]) -> _E:
    """Recreate a pickled error without calling its ``__init__`` (whose keyword-only fields
    ``BaseException``'s default pickling cannot pass): the same ``args``, the same fields."""
    error = cls.__new__(cls, *args)
    error.args = args  # OSError subclasses with their own __init__ leave args empty in __new__
    error.__dict__.update(state)
    return error


class ObjstoreError(Exception):
    """Base class of every error objstore raises deliberately.

    Subclasses keep their fields as instance attributes; pickling copies ``args`` and those
    attributes as they are, so a subclass needs no ``__reduce__`` of its own.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class NotFoundError(ObjstoreError, FileNotFoundError):
    """The object (or the version asked for) does not exist."""

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(message or f"object not found: {key!r}")
        self.key = key


class AlreadyExistsError(ObjstoreError, FileExistsError):
    """A create-if-absent write found the key already taken."""

    def __init__(self, key: str, message: str | None = None) -> None:
        super().__init__(message or f"object already exists: {key!r}")
        self.key = key


class PreconditionFailedError(ObjstoreError):
    """A compare-and-swap write or conditional delete found a different version."""

    def __init__(
        self,
        key: str,
        message: str | None = None,
        *,
        expected_version: str | None = None,
        actual_version: str | None = None,
    ) -> None:
        super().__init__(
            message
            or f"precondition failed on {key!r}: expected version {expected_version!r}, "
            f"found {actual_version!r}"
        )
        self.key = key
        self.expected_version = expected_version
        self.actual_version = actual_version


class CheckpointConflict(PreconditionFailedError):
    """Another writer committed the checkpoint id this writer tried to claim.

    Carries both sides: ``checkpoint_id``, our ``epoch`` and the winner's ``winner_epoch``
    (``None`` when the winner's manifest could not be read).
    """

    def __init__(
        self,
        key: str,
        message: str | None = None,
        *,
        checkpoint_id: int,
        epoch: int,
        winner_epoch: int | None,
    ) -> None:
        super().__init__(
            key,
            message
            or f"checkpoint {checkpoint_id} was already committed by another writer "
            f"(our epoch {epoch}, theirs {winner_epoch})",
        )
        self.checkpoint_id = checkpoint_id
        self.epoch = epoch
        self.winner_epoch = winner_epoch


class FencedError(CheckpointConflict):
    """This writer lost to one with a newer epoch: it is a zombie and must stop writing."""


class ConflictError(PreconditionFailedError):
    """The store already holds newer state than this write, so the write was refused and
    nothing was changed (e.g. a stale committer would move a source's sequence backward, or
    an older snapshot would replace a newer one).

    Carries both sides: ``expected`` is what this writer tried to store, ``actual`` what the
    store holds instead (each a value or a mapping, as the raising store documents).
    Pickles with both sides (e.g. across process pools).
    """

    def __init__(
        self,
        key: str,
        message: str | None = None,
        *,
        expected: object = None,
        actual: object = None,
    ) -> None:
        super().__init__(
            key,
            message or f"{key!r} holds newer state ({actual!r}) than this write ({expected!r})",
        )
        self.expected = expected
        self.actual = actual


class CorruptionError(ObjstoreError):
    """Stored bytes failed validation: checksum mismatch, truncation or a bad format."""

    def __init__(
        self,
        key: str,
        message: str,
        *,
        expected: object = None,
        actual: object = None,
    ) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.reason = message
        self.expected = expected
        self.actual = actual


class NotSupportedError(ObjstoreError, NotImplementedError):
    """The store cannot provide a guarantee objstore relies on (e.g. it ignores preconditions)."""


class OutcomeUnknownError(ObjstoreError):
    """A write whose earlier answer was lost may have committed as ``sequence``, and the
    evidence is gone (e.g. its log object was pruned to a tombstone that cannot say whose
    batch it was). Nothing was written by the call that raised; the caller decides whether
    to write again. ``key`` is the object that could not tell.
    """

    def __init__(self, key: str, message: str | None = None, *, sequence: int) -> None:
        super().__init__(
            message
            or f"outcome unknown: the batch may have committed as sequence {sequence} and "
            f"been pruned ({key} no longer says whose batch it was)"
        )
        self.key = key
        self.sequence = sequence


class ReceiptError(ObjstoreError, ValueError):
    """The receipts handed to a parallel commit are not exactly its parts: one of another
    checkpoint, epoch or job (stale or foreign), of a part not planned, two for one part, or
    none for a planned part. Raised before any request; nothing was written. ``parts``
    names the parts concerned; a ``ValueError``, as bad arguments are.
    """

    def __init__(
        self, key: str, message: str, *, checkpoint_id: int, parts: tuple[str, ...]
    ) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.checkpoint_id = checkpoint_id
        self.parts = parts


class StoreNotFoundError(ObjstoreError):
    """The store itself does not exist: its bucket, or its root directory on local disk.

    Deliberately neither a :class:`NotFoundError` nor a ``FileNotFoundError``: a missing
    *object* reads as "nothing saved yet", while a mistyped bucket or an unmounted volume must
    never read as an empty store, or a recovery would start fresh beside the real checkpoints.
    ``url`` is the store's root URL.
    """

    def __init__(self, url: str, message: str | None = None) -> None:
        super().__init__(url, message)
        self.url = url
        self.message = message or f"the store {url} does not exist"

    def __str__(self) -> str:
        return self.message


class TransientStorageError(ObjstoreError, OSError):
    """A failure that may succeed when retried: 5xx, throttling, timeouts, dropped connections."""
