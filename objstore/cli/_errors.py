"""Exit codes, and how an expected failure becomes one line on stderr and an exit code.

Every failure a command expects is classified once, here, by the kind of error the library
raises; anything unclassified is a bug and keeps its traceback.
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable

import typer

from objstore.errors import (
    AlreadyExistsError,
    CorruptionError,
    FencedError,
    NotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    StoreNotFoundError,
    TransientStorageError,
)

__all__ = ["CliError", "ExitCode", "classify_error", "fail", "print_error"]


class ExitCode(enum.IntEnum):
    """The documented exit codes of every ``objstore`` command."""

    OK = 0
    INVALID = 1
    USAGE = 2
    CONFLICT = 3
    UNSUPPORTED = 4
    STORAGE = 5


class CliError(Exception):
    """An expected failure: printed as one line on stderr, the command exits with ``code``."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_STORAGE_MODULES = frozenset({"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "aiohttp"})
"""Packages whose own exceptions mean storage trouble (code 5) when they escape untranslated."""


def classify_error(exc: BaseException) -> tuple[ExitCode, str] | None:
    """The exit code and one-line message for an expected failure; ``None`` for a bug."""
    if isinstance(exc, CliError):
        return exc.code, exc.message
    if isinstance(exc, StoreNotFoundError):
        return ExitCode.STORAGE, f"store not found: {exc}"
    if isinstance(exc, FencedError):
        return ExitCode.CONFLICT, f"fenced: {exc}"
    if isinstance(exc, PreconditionFailedError | AlreadyExistsError):
        return ExitCode.CONFLICT, f"conflict: {exc}"
    if isinstance(exc, NotSupportedError):
        return ExitCode.UNSUPPORTED, f"store unsupported: {exc}"
    if isinstance(exc, CorruptionError):
        return ExitCode.INVALID, f"corrupt: {exc}"
    if isinstance(exc, NotFoundError):
        return ExitCode.INVALID, f"not found: {exc}"
    if isinstance(exc, TransientStorageError):
        return ExitCode.STORAGE, f"storage unavailable after retries: {exc}"
    if isinstance(exc, ValueError | TypeError):
        return ExitCode.USAGE, str(exc)
    if isinstance(exc, OSError):
        return ExitCode.STORAGE, f"storage error: {exc}"
    if type(exc).__module__.split(".")[0] in _STORAGE_MODULES:
        return ExitCode.STORAGE, f"storage error: {type(exc).__name__}: {exc}"
    return None


def _one_line(message: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "***")
    return " ".join(message.split())


def print_error(message: str, secrets: Iterable[str] = ()) -> None:
    """Print ``objstore: error: …`` on stderr: one line, ``secrets`` masked."""
    sys.stderr.write(f"objstore: error: {_one_line(message, secrets)}\n")
    sys.stderr.flush()


def fail(code: ExitCode | int, message: str, secrets: Iterable[str] = ()) -> typer.Exit:
    """Print the error line (:func:`print_error`) and return the :class:`typer.Exit` to
    raise with ``code``."""
    print_error(message, secrets)
    return typer.Exit(int(code))
