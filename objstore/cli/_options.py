"""What users type: durations, storage options, checkpoint ids, and the shared Typer options."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from typing import Annotated, Any

import typer

from objstore.checkpoint import MAX_CHECKPOINT_ID, parse_checkpoint_name
from objstore.cli._errors import CliError, ExitCode

__all__ = [
    "DryRunOption",
    "JsonOption",
    "StorageOption",
    "UnsafeSkipFencingOption",
    "UrlArgument",
    "parse_checkpoint_id",
    "parse_duration",
    "parse_storage_options",
    "secret_values",
]

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``2h``, ``1d``, ``1h30m`` or plain ``90`` (seconds).

    Raises:
        ValueError: for anything else (empty, malformed, negative, or out of range).
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("empty duration")
    total = 0.0
    position = 0
    for match in _DURATION_PART.finditer(stripped):
        if match.start() != position:
            break
        total += float(match.group(1)) * _DURATION_UNITS[(match.group(2) or "s").lower()]
        position = match.end()
        while position < len(stripped) and stripped[position].isspace():
            position += 1
    if position != len(stripped):
        raise ValueError(f"invalid duration {text!r}: use e.g. 30s, 15m, 2h, 1d or seconds")
    if not math.isfinite(total):
        raise ValueError(f"duration {text!r} is out of range")
    return total


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to fsspec storage options.

    A value that parses as JSON becomes that value (``true``, ``5``, ``{"a": 1}``); anything
    else stays a string (quote it, ``key='"123"'``, to force a string). A dotted key builds a
    nested mapping: ``client_kwargs.region_name=eu-west-1``.

    Raises:
        ValueError: for an item that is not ``KEY=VALUE``, an empty key segment, or a key that
            conflicts with another (a value and a nested mapping at once).
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--storage-option expects KEY=VALUE, got {item!r}")
        value: Any
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            child = target.setdefault(parent, {})
            if not isinstance(child, dict) or not parent:
                raise ValueError(f"--storage-option {key!r} conflicts with another option")
            target = child
        if not leaf:
            raise ValueError(f"--storage-option key {key!r} is empty after a dot")
        target[leaf] = value
    return options


def secret_values(options: dict[str, Any]) -> list[str]:
    """Every string value in ``options``: kept out of anything printed."""
    found: list[str] = []
    for value in options.values():
        if isinstance(value, dict):
            found.extend(secret_values(value))
        elif isinstance(value, str) and len(value) >= 4:
            found.append(value)
    return found


def parse_checkpoint_id(text: str) -> int:
    """A checkpoint id as typed on the command line (``42`` or ``checkpoint_00…42``).

    Raises:
        CliError: (usage) if ``text`` is not a checkpoint id or is out of range [1, 2**64 - 1].
    """
    value = parse_checkpoint_name(text) if text.startswith("checkpoint_") else None
    if value is None:
        try:
            value = int(text, 10)
        except ValueError:
            raise CliError(ExitCode.USAGE, f"invalid checkpoint id {text!r}") from None
    if not 1 <= value <= MAX_CHECKPOINT_ID:
        raise CliError(ExitCode.USAGE, f"checkpoint id {text!r} is out of range [1, 2**64 - 1]")
    return value


UrlArgument = Annotated[
    str,
    typer.Argument(
        metavar="URL",
        help="Store root: a local path, file:///abs/path, s3://bucket/prefix or gs://bucket/prefix.",
        show_default=False,
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout instead of tables.")
]
StorageOption = Annotated[
    list[str] | None,
    typer.Option(
        "--storage-option",
        "-o",
        metavar="KEY=VALUE",
        help="fsspec storage option (repeatable); values are JSON if they parse as JSON.",
        show_default=False,
    ),
]
UnsafeSkipFencingOption = Annotated[
    bool,
    typer.Option(
        "--unsafe-skip-fencing-check",
        help="Write to a store even if it ignores write preconditions (the library's "
        "verify_fencing=False). UNSAFE: racing writers can then overwrite each other's "
        "checkpoints and a zombie writer cannot be fenced.",
    ),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]
