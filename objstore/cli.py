"""The ``objstore`` command: inspect, verify, recover, repair, prune, gc and copy checkpoints.

Every command takes a store URL (a local path, ``file:///abs/path``, ``s3://bucket/prefix``,
``gs://bucket/prefix``), prints rich tables by default and exactly one JSON document on stdout
with ``--json``. Expected failures print one line on stderr and exit with a documented code:

====  ================================================================================
0     ok
1     nothing valid, or corruption found
2     usage error: bad arguments, bad URL, bad ``--storage-option``
3     conflict or fenced: another writer won, or ``latest.txt`` moved under us
4     the store does not enforce write preconditions (see ``objstore probe``)
5     storage failing or unreachable: I/O error after retries, missing bucket, credentials
====  ================================================================================

Code 5 is kept apart from 1 on purpose: a recovery script that reads "1" as "nothing valid,
start fresh" must never get there because the network was down.

Each command first computes a JSON-ready document and only then renders it, so the human and
the machine output cannot disagree. Three store-level operations the library does not offer
yet live here, on top of the public store and backend API: moving ``latest.txt`` to the newest
valid checkpoint (:func:`repair_pointer`), copying one checkpoint between stores
(:func:`copy_checkpoint`) and validating a large sidecar with ranged reads and progress
(:func:`validate_with_progress`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import functools
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
import typer.core
import xxhash
from rich.console import Console
from rich.filesize import decimal as human_size
from rich.json import JSON as RichJSON
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from objstore import __version__
from objstore.backends import AsyncBackend, open_async_backend
from objstore.checkpoint import AsyncCheckpointStore, ValidationResult
from objstore.checkpoint._layout import (
    CHECKPOINTS,
    LATEST,
    MAX_CHECKPOINT_ID,
    manifest_key,
    parse_checkpoint_name,
    pointer_text,
    state_key,
)
from objstore.checkpoint._manifest import StoredManifest, decode_manifest
from objstore.checkpoint._plan import CheckpointEntry, orphans_to_delete, plan_prune, scan
from objstore.checkpoint._sidecar import HEADER, verify_sidecar
from objstore.errors import (
    AlreadyExistsError,
    CorruptionError,
    FencedError,
    NotFoundError,
    NotSupportedError,
    PreconditionFailedError,
    TransientStorageError,
)

__all__ = [
    "CliError",
    "ExitCode",
    "app",
    "classify_error",
    "copy_checkpoint",
    "main",
    "parse_duration",
    "plan_pointer_repair",
    "parse_storage_options",
    "repair_pointer",
    "validate_with_progress",
]

_T = TypeVar("_T")

STREAM_THRESHOLD = 32 * 1024 * 1024
"""Sidecars larger than this are verified and copied with ranged reads, never held whole."""
RANGE_SIZE = 8 * 1024 * 1024
"""Bytes per ranged read when streaming a large sidecar."""
PARALLEL = 4
"""Checkpoints examined at once by ``ls`` (each may hold a sidecar of up to
:data:`STREAM_THRESHOLD` bytes while the library validates it)."""


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


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command found: the JSON document (rendered for humans too) and its exit code."""

    document: dict[str, Any]
    code: ExitCode = ExitCode.OK


# -- argument parsing ------------------------------------------------------------------------

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?", re.IGNORECASE)
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds in ``30s``, ``15m``, ``2h``, ``1d``, ``1h30m`` or plain ``90`` (seconds).

    Raises ``ValueError`` for anything else, including negative values.
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
    return total


def parse_storage_options(items: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs to fsspec storage options.

    A value that parses as JSON becomes that value (``true``, ``5``, ``{"a": 1}``); anything
    else stays a string (quote it, ``key='"123"'``, to force a string). A dotted key builds a
    nested mapping: ``client_kwargs.region_name=eu-west-1``. Raises ``ValueError``.
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


def _secrets(options: dict[str, Any]) -> list[str]:
    """Every string value in ``options``: kept out of anything printed."""
    found: list[str] = []
    for value in options.values():
        if isinstance(value, dict):
            found.extend(_secrets(value))
        elif isinstance(value, str) and len(value) >= 4:
            found.append(value)
    return found


def parse_checkpoint_id(text: str) -> int:
    """A checkpoint id as typed on the command line (``42`` or ``checkpoint_00…42``)."""
    value = parse_checkpoint_name(text) if text.startswith("checkpoint_") else None
    if value is None:
        try:
            value = int(text, 10)
        except ValueError:
            raise CliError(ExitCode.USAGE, f"invalid checkpoint id {text!r}") from None
    if not 1 <= value <= MAX_CHECKPOINT_ID:
        raise CliError(ExitCode.USAGE, f"checkpoint id {text!r} is out of range [1, 2**64 - 1]")
    return value


# -- errors ----------------------------------------------------------------------------------

_STORAGE_MODULES = frozenset({"botocore", "aiobotocore", "s3fs", "gcsfs", "google", "aiohttp"})


def classify_error(exc: BaseException) -> tuple[ExitCode, str] | None:
    """The exit code and one-line message for an expected failure; ``None`` for a bug."""
    if isinstance(exc, CliError):
        return exc.code, exc.message
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


def _fail(code: ExitCode | int, message: str, secrets: Iterable[str] = ()) -> typer.Exit:
    sys.stderr.write(f"objstore: error: {_one_line(message, secrets)}\n")
    sys.stderr.flush()
    return typer.Exit(int(code))


# -- output ----------------------------------------------------------------------------------


def _stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso_ms(timestamp_ms: int | None) -> str | None:
    return None if timestamp_ms is None else _iso(timestamp_ms / 1000)


def _when(document_time: str | None) -> str:
    return "-" if document_time is None else document_time.replace("T", " ").rstrip("Z")[:19]


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value} B" if value < 1000 else human_size(value)


class ByteProgress:
    """A transfer bar on stderr for long reads; silent when stderr is no terminal or with
    ``--json``, so pipes and machine output stay clean."""

    def __init__(self, enabled: bool, console: Console | None = None) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console or Console(stderr=True),
                transient=True,
            )
        self._task: Any = None

    @property
    def enabled(self) -> bool:
        """Whether a bar is drawn."""
        return self._progress is not None

    def __enter__(self) -> ByteProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, description: str, total: int) -> None:
        """Begin a bar of ``total`` bytes."""
        if self._progress is not None:
            self._task = self._progress.add_task(description, total=max(total, 1))

    def advance(self, count: int) -> None:
        """Record ``count`` more bytes done."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)


def _want_progress(json_output: bool) -> bool:
    return not json_output and Console(stderr=True).is_terminal


# -- store helpers ---------------------------------------------------------------------------


async def _gather(jobs: Iterable[Awaitable[_T]], limit: int = PARALLEL) -> list[_T]:
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[_T]) -> _T:
        async with semaphore:
            return await job

    return list(await asyncio.gather(*(one(job) for job in jobs)))


@dataclass(frozen=True, slots=True)
class Pointer:
    """``latest.txt`` as read: its text (``None`` if missing), the id it names (``None`` if
    missing or garbage) and the version a compare-and-swap needs."""

    text: str | None
    checkpoint_id: int | None
    version: str | None

    @property
    def exists(self) -> bool:
        """Whether ``latest.txt`` exists at all."""
        return self.text is not None


async def read_pointer(backend: AsyncBackend) -> Pointer:
    """Read ``latest.txt`` (one GET)."""
    try:
        data, version = await backend.get(LATEST)
    except NotFoundError:
        return Pointer(None, None, None)
    try:
        checkpoint_id = parse_checkpoint_name(data.decode("ascii"))
    except UnicodeDecodeError:
        checkpoint_id = None
    return Pointer(data[:200].decode("utf-8", "replace"), checkpoint_id, version)


def _pointer_document(
    pointer: Pointer, validity: dict[int, bool | None], newest_valid: int | None
) -> dict[str, Any]:
    """Describe ``latest.txt`` given each id's validity (``None``: uncommitted)."""
    named = pointer.checkpoint_id
    if not pointer.exists:
        state, detail = "missing", "does not exist"
    elif named is None:
        state, detail = "garbage", "does not name a checkpoint"
    elif validity.get(named) is None:
        state, detail = "dangling", f"names checkpoint {named}, which is not committed"
    elif validity[named] is False:
        state, detail = "invalid", f"names checkpoint {named}, which is corrupt"
    elif newest_valid is not None and newest_valid > named:
        state, detail = (
            "lagging",
            f"names checkpoint {named}; a newer valid one ({newest_valid}) exists",
        )
    else:
        state, detail = "ok", f"names checkpoint {named}"
    return {"text": pointer.text, "checkpoint_id": named, "state": state, "detail": detail}


async def _list_entries(store: AsyncCheckpointStore) -> dict[int, CheckpointEntry]:
    return scan(await store.backend.list(CHECKPOINTS))


async def _read_stored(backend: AsyncBackend, checkpoint_id: int) -> tuple[bytes, StoredManifest]:
    """Raw bytes and decoded manifest of ``checkpoint_id``; raises NotFound/Corruption."""
    key = manifest_key(checkpoint_id)
    data, _ = await backend.get(key)
    return data, decode_manifest(data, key=key, expected_id=checkpoint_id)


def _sidecar_size_issue(expected: int | None, actual: int) -> str | None:
    if expected is None or expected == actual:
        return None
    return "sidecar truncated" if actual < expected else "sidecar longer than recorded"


async def _iter_ranges(
    backend: AsyncBackend, key: str, size: int, advance: Callable[[int], None]
) -> AsyncIterator[bytes]:
    """The object ``key`` of ``size`` bytes as ranged reads of :data:`RANGE_SIZE`."""
    for start in range(0, size, RANGE_SIZE):
        end = min(size, start + RANGE_SIZE)
        piece = await backend.get_range(key, start, end)
        if len(piece) != end - start:
            raise CorruptionError(
                key, "sidecar truncated", expected=size, actual=start + len(piece)
            )
        advance(len(piece))
        yield piece


async def _hash_object(
    backend: AsyncBackend, key: str, size: int, advance: Callable[[int], None]
) -> tuple[str, bytes]:
    """xxh3-128 of the object ``key`` read in ranges, and its first :data:`HEADER` bytes."""
    hasher = xxhash.xxh3_128()
    header = b""
    async for piece in _iter_ranges(backend, key, size, advance):
        hasher.update(piece)
        if len(header) < HEADER.size:
            header += piece[: HEADER.size - len(header)]
    return hasher.hexdigest(), header


async def validate_with_progress(
    store: AsyncCheckpointStore,
    checkpoint_id: int,
    *,
    size_hint: int | None = None,
    advance: Callable[[int], None] = lambda _: None,
) -> ValidationResult:
    """Fully validate one checkpoint, like :meth:`AsyncCheckpointStore.validate_checkpoint`.

    Sidecars up to :data:`STREAM_THRESHOLD` (``size_hint``, from a listing) go to the library
    as they are; larger ones are hashed in ranged reads of :data:`RANGE_SIZE`, reporting each
    to ``advance`` and never holding the file whole, and are then held to the same checks as
    the library's ``verify_sidecar``: recorded size, xxh3-128, header magic/format, header
    id, writer nonce and chunk bounds. Candidate for the library (a ``progress`` argument).
    """
    if size_hint is None or size_hint <= STREAM_THRESHOLD:
        result = await store.validate_checkpoint(checkpoint_id)
        advance(size_hint or 0)
        return result
    try:
        _, stored = await _read_stored(store.backend, checkpoint_id)
    except NotFoundError:
        return ValidationResult(checkpoint_id, False, ("manifest missing",))
    except CorruptionError as exc:
        return ValidationResult(checkpoint_id, False, (exc.reason,))
    manifest = stored.manifest
    warnings: tuple[str, ...] = ()
    if manifest.vnode_count != store.vnode_count:
        warnings = (
            f"vnode_count {manifest.vnode_count} differs from the store's {store.vnode_count}",
        )
    if manifest.state_checksum is None:
        return ValidationResult(checkpoint_id, True, (), warnings)

    def invalid(reason: str) -> ValidationResult:
        return ValidationResult(checkpoint_id, False, (reason,), warnings)

    key = state_key(checkpoint_id)
    try:
        size = (await store.backend.head(key)).size
    except NotFoundError:
        return invalid("state.bin missing")
    size_issue = _sidecar_size_issue(manifest.state_size, size)
    if size_issue is not None:
        return invalid(size_issue)
    try:
        digest, header = await _hash_object(store.backend, key, size, advance)
    except NotFoundError:
        return invalid("state.bin missing")
    except CorruptionError as exc:
        return invalid(exc.reason)
    if digest != manifest.state_checksum:
        return invalid("sidecar checksum mismatch")
    try:
        # The library's own checks of the header (magic, format, id, writer nonce), run on
        # the header bytes alone so the whole file never has to be in memory.
        verify_sidecar(
            header,
            key=key,
            checkpoint_id=checkpoint_id,
            nonce=stored.state_nonce,
            size=None,
            state_checksum=xxhash.xxh3_128_hexdigest(header),
            entries=(),
        )
    except CorruptionError as exc:
        return invalid(exc.reason)
    for entry in manifest.operator_states:
        if entry.offset < HEADER.size or entry.offset + entry.length > size:
            return invalid(f"chunk {entry.name or entry.offset} lies outside the file")
    return ValidationResult(checkpoint_id, True, (), warnings)


@contextlib.asynccontextmanager
async def _open_store(url: str, options: dict[str, Any]) -> AsyncIterator[AsyncCheckpointStore]:
    store = AsyncCheckpointStore(url, storage_options=options)
    try:
        yield store
    finally:
        with contextlib.suppress(Exception):
            await store.close()


# -- ls --------------------------------------------------------------------------------------


async def _describe(
    store: AsyncCheckpointStore,
    entry: CheckpointEntry,
    *,
    full: bool,
    gc_eligible: bool,
    latest: int | None,
    advance: Callable[[int], None],
) -> dict[str, Any]:
    """One row of ``ls``: status and facts of one checkpoint directory."""
    checkpoint_id = entry.checkpoint_id
    row: dict[str, Any] = {
        "id": checkpoint_id,
        "epoch": None,
        "timestamp_ms": None,
        "time": None,
        "manifest_size": entry.manifest.size if entry.manifest else None,
        "state_size": entry.state.size if entry.state else None,
        "status": "orphan",
        "valid": False,
        "reason": None,
        "warnings": [],
        "pending_sinks": [],
        "source_offsets": None,
        "latest": latest == checkpoint_id,
    }
    if not entry.committed:
        row["time"] = _iso(entry.newest_mtime)
        row["reason"] = "no manifest; " + (
            "gc would delete it" if gc_eligible else "younger than the grace period, kept by gc"
        )
        return row
    try:
        _, stored = await _read_stored(store.backend, checkpoint_id)
    except NotFoundError:
        row.update(status="corrupt", reason="manifest vanished during the listing")
        return row
    except CorruptionError as exc:
        row.update(status="corrupt", reason=exc.reason)
        return row
    manifest = stored.manifest
    row.update(
        epoch=manifest.epoch,
        timestamp_ms=manifest.timestamp_ms,
        time=_iso_ms(manifest.timestamp_ms),
        pending_sinks=manifest.pending_sinks,
        source_offsets=manifest.source_offsets,
    )
    issues: tuple[str, ...]
    if full:
        result = await validate_with_progress(
            store, checkpoint_id, size_hint=row["state_size"], advance=advance
        )
        issues, row["warnings"] = result.issues, list(result.warnings)
    elif manifest.state_checksum is None:
        issues = ()
    elif entry.state is None:
        issues = ("state.bin missing",)
    else:
        size_issue = _sidecar_size_issue(manifest.state_size, entry.state.size)
        issues = () if size_issue is None else (size_issue,)
    if issues:
        row.update(status="corrupt", reason="; ".join(issues))
    else:
        row.update(status="pending_sinks" if manifest.pending_sinks else "valid", valid=True)
    return row


async def list_checkpoints(
    store: AsyncCheckpointStore, *, full: bool, progress: ByteProgress | None = None
) -> Outcome:
    """``objstore ls``: every checkpoint directory with its status, and ``latest.txt``.

    ``full`` validates every checkpoint completely (sidecars hashed); otherwise a sidecar is
    only checked to exist with its recorded size.
    """
    progress = progress or ByteProgress(False)
    pointer = await read_pointer(store.backend)
    entries = await _list_entries(store)
    eligible = set(
        orphans_to_delete(entries, now=time.time(), grace_seconds=store.orphan_grace_seconds)
    )
    if full:
        progress.start(
            "verifying",
            sum(e.state.size for e in entries.values() if e.committed and e.state is not None),
        )
    rows = await _gather(
        _describe(
            store,
            entries[checkpoint_id],
            full=full,
            gc_eligible=checkpoint_id in eligible,
            latest=pointer.checkpoint_id,
            advance=progress.advance,
        )
        for checkpoint_id in sorted(entries)
    )
    validity: dict[int, bool | None] = {
        row["id"]: (None if row["status"] == "orphan" else row["valid"]) for row in rows
    }
    valid_ids = [row["id"] for row in rows if row["valid"]]
    newest_valid = max(valid_ids, default=None)
    counts = {
        status: sum(1 for row in rows if row["status"] == status)
        for status in ("valid", "pending_sinks", "corrupt", "orphan")
    }
    document = {
        "url": store.url,
        "checked": "full" if full else "quick",
        "latest": _pointer_document(pointer, validity, newest_valid),
        "newest_valid_id": newest_valid,
        "counts": counts,
        "checkpoints": rows,
    }
    bad = counts["corrupt"] > 0 or newest_valid is None
    return Outcome(document, ExitCode.INVALID if bad else ExitCode.OK)


_STATUS_STYLE = {
    "valid": "green",
    "pending_sinks": "yellow",
    "corrupt": "bold red",
    "orphan": "dim",
}


def _status_text(row: dict[str, Any]) -> Text:
    status = row["status"]
    label = status
    if status == "pending_sinks":
        label = "valid, pending sinks: " + ", ".join(row["pending_sinks"])
    elif status == "corrupt":
        label = f"corrupt: {row['reason']}"
    elif status == "orphan":
        label = f"orphan: {row['reason']}"
    return Text(label, style=_STATUS_STYLE.get(status, ""))


def _pointer_line(pointer: dict[str, Any]) -> Text:
    style = "green" if pointer["state"] == "ok" else "yellow"
    return Text.assemble(
        ("latest.txt ", "bold"), pointer["detail"], (f" [{pointer['state']}]", style)
    )


def render_ls(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore ls``."""
    rows = document["checkpoints"]
    console.print(Text.assemble(("Store ", "bold"), document["url"]))
    console.print(_pointer_line(document["latest"]), "(→ in the table)" if rows else "")
    if not rows:
        console.print("No checkpoints.")
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("epoch", justify="right", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("manifest", justify="right", no_wrap=True)
    table.add_column("state", justify="right", no_wrap=True)
    table.add_column("status", overflow="fold", ratio=1)
    for row in rows:
        table.add_row(
            Text("→", style="bold") if row["latest"] else "",
            str(row["id"]),
            "-" if row["epoch"] is None else str(row["epoch"]),
            _when(row["time"]),
            _size(row["manifest_size"]),
            _size(row["state_size"]),
            _status_text(row),
        )
    console.print(table)
    counts = document["counts"]
    console.print(
        f"{len(rows)} checkpoint directories: {counts['valid'] + counts['pending_sinks']} valid, "
        f"{counts['corrupt']} corrupt, {counts['orphan']} orphaned (checked: {document['checked']})"
    )


# -- show ------------------------------------------------------------------------------------


async def show_checkpoint(store: AsyncCheckpointStore, which: str) -> Outcome:
    """``objstore show``: one manifest, verified, as stored."""
    if which == "latest":
        latest = await store.load_latest()
        if latest is None:
            raise CliError(ExitCode.INVALID, f"no committed checkpoint in {store.url}")
        checkpoint_id = latest.checkpoint_id
    else:
        checkpoint_id = parse_checkpoint_id(which)
    try:
        data, _ = await _read_stored(store.backend, checkpoint_id)
    except NotFoundError:
        raise CliError(
            ExitCode.INVALID, f"checkpoint {checkpoint_id} does not exist in {store.url}"
        ) from None
    pointer = await read_pointer(store.backend)
    document = {
        "url": store.url,
        "checkpoint_id": checkpoint_id,
        "latest": pointer.checkpoint_id == checkpoint_id,
        "time": _iso_ms(json.loads(data).get("timestamp_ms")),
        "manifest": json.loads(data),
    }
    return Outcome(document)


def render_show(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore show``."""
    manifest = document["manifest"]
    title = f"Checkpoint {document['checkpoint_id']}"
    if document["latest"]:
        title += " (named by latest.txt)"
    console.print(Text(title, style="bold"))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    facts.add_row("epoch", str(manifest.get("epoch")))
    facts.add_row("time (UTC)", _when(document["time"]))
    facts.add_row("watermark", str(manifest.get("watermark")))
    facts.add_row("source offsets", json.dumps(manifest.get("source_offsets"), sort_keys=True))
    sinks = manifest.get("sink_commit_statuses") or {}
    epochs = manifest.get("sink_epochs") or {}
    sink_text = ", ".join(
        f"{sink}={status} (epoch {epochs.get(sink, '-')})" for sink, status in sorted(sinks.items())
    )
    facts.add_row("sinks", sink_text or "-")
    facts.add_row(
        "state",
        f"{_size(manifest.get('state_size'))}, xxh3 {manifest.get('state_checksum')}"
        if manifest.get("state_checksum")
        else "none",
    )
    facts.add_row("revision", str(manifest.get("revision")))
    console.print(facts)
    operators = manifest.get("operator_states") or []
    if operators:
        table = Table(title="operator states", show_edge=False, pad_edge=False)
        for column in ("name", "offset", "length", "raw length", "xxh3"):
            table.add_column(column, justify="left" if column in ("name", "xxh3") else "right")
        for entry in operators:
            table.add_row(
                str(entry.get("name")),
                str(entry.get("offset")),
                str(entry.get("length")),
                str(entry.get("raw_length")),
                str(entry.get("xxh3")),
            )
        console.print(table)
    console.print(Text("manifest.json", style="bold"))
    console.print(RichJSON(json.dumps(manifest, sort_keys=True)))


# -- verify ----------------------------------------------------------------------------------


async def verify_checkpoints(
    store: AsyncCheckpointStore,
    requested: list[str],
    *,
    all_: bool,
    progress: ByteProgress,
) -> Outcome:
    """``objstore verify``: full validation of the chosen checkpoints."""
    if requested and all_:
        raise CliError(ExitCode.USAGE, "give checkpoint ids or --all, not both")
    entries = await _list_entries(store)
    committed = sorted(cid for cid, entry in entries.items() if entry.committed)
    targets: list[int] = []
    if all_:
        targets = committed
    elif not requested:
        targets = committed[-1:]
    for item in requested:
        if item == "latest":
            latest = await store.load_latest()
            if latest is None:
                raise CliError(ExitCode.INVALID, f"no committed checkpoint in {store.url}")
            targets.append(latest.checkpoint_id)
        else:
            targets.append(parse_checkpoint_id(item))
    targets = sorted(set(targets))

    def hint(checkpoint_id: int) -> int | None:
        entry = entries.get(checkpoint_id)
        return entry.state.size if entry is not None and entry.state is not None else None

    progress.start("verifying", sum(hint(cid) or 0 for cid in targets))
    results = []
    for checkpoint_id in targets:
        if checkpoint_id not in entries:
            results.append(ValidationResult(checkpoint_id, False, ("does not exist",)))
            continue
        results.append(
            await validate_with_progress(
                store, checkpoint_id, size_hint=hint(checkpoint_id), advance=progress.advance
            )
        )
    rows = [
        {
            "id": result.checkpoint_id,
            "valid": result.valid,
            "issues": list(result.issues),
            "warnings": list(result.warnings),
            "state_size": hint(result.checkpoint_id),
        }
        for result in results
    ]
    all_valid = bool(rows) and all(row["valid"] for row in rows)
    document = {"url": store.url, "all_valid": all_valid, "checkpoints": rows}
    return Outcome(document, ExitCode.OK if all_valid else ExitCode.INVALID)


def render_verify(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore verify``."""
    rows = document["checkpoints"]
    if not rows:
        console.print(f"No checkpoints to verify in {document['url']}.")
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("id", justify="right")
    table.add_column("state", justify="right")
    table.add_column("result", overflow="fold")
    for row in rows:
        if row["valid"]:
            result = Text("valid", style="green")
            if row["warnings"]:
                result.append(" (" + "; ".join(row["warnings"]) + ")", style="yellow")
        else:
            result = Text("INVALID: " + "; ".join(row["issues"]), style="bold red")
        table.add_row(str(row["id"]), _size(row["state_size"]), result)
    console.print(table)
    bad = sum(1 for row in rows if not row["valid"])
    console.print(
        Text(f"all {len(rows)} valid", style="green")
        if not bad
        else Text(f"{bad} of {len(rows)} invalid", style="bold red")
    )


# -- recover ---------------------------------------------------------------------------------


def plan_pointer_repair(
    pointer: Pointer,
    chosen_id: int | None,
    skipped: dict[int, str],
    examined: Iterable[int],
) -> dict[str, Any]:
    """Decide how ``latest.txt`` must move to name ``chosen_id``, the newest valid checkpoint.

    Writers only ever move the pointer forward. Repair is an operator's act and may also
    move it *backward*, but only off a checkpoint the recovery walk found invalid or missing
    (newer than every valid one): that is its whole point. A pointer that names a newer
    checkpoint the walk did not find invalid is left alone (``action == "refuse"``).
    A missing or garbage pointer is (re)written; a lagging one moves forward.
    """
    named = pointer.checkpoint_id
    plan: dict[str, Any] = {
        "needed": False,
        "action": "none",
        "from": named,
        "to": chosen_id,
        "applied": False,
        "dry_run": False,
        "reason": "",
    }
    if chosen_id is None:
        plan["reason"] = "no valid checkpoint to point at; latest.txt is left alone"
        return plan
    if named == chosen_id:
        plan["reason"] = "latest.txt already names the newest valid checkpoint"
        return plan
    if not pointer.exists:
        action, reason = "create", "latest.txt is missing"
    elif named is None:
        action, reason = "replace", "latest.txt does not name a checkpoint"
    elif named < chosen_id:
        action, reason = "forward", f"latest.txt lags behind at checkpoint {named}"
    elif named in skipped:
        action = "backward"
        reason = f"latest.txt names checkpoint {named}, which is invalid: {skipped[named]}"
    elif named not in set(examined):
        action, reason = "backward", f"latest.txt names checkpoint {named}, which does not exist"
    else:
        action = "refuse"
        reason = (
            f"latest.txt names checkpoint {named}, newer than the newest valid checkpoint "
            f"{chosen_id}, and the walk did not find it invalid; it is not moved backward"
        )
    plan.update(needed=True, action=action, reason=reason)
    return plan


async def repair_pointer(
    store: AsyncCheckpointStore, pointer: Pointer, plan: dict[str, Any]
) -> None:
    """Apply :func:`plan_pointer_repair` with one compare-and-swap of ``latest.txt``.

    ``pointer`` must have been read *before* the recovery walk: a writer that moved it since
    makes the swap fail, and this raises :class:`CliError` (``CONFLICT``) having written
    nothing, instead of overwriting a newer commit. Candidate for the library.
    """
    if not plan["needed"]:
        return
    if plan["action"] == "refuse":
        raise CliError(ExitCode.CONFLICT, plan["reason"])
    text = pointer_text(plan["to"])
    try:
        if pointer.version is None:
            await store.backend.put_if_absent(LATEST, text)
        else:
            await store.backend.put_if_match(LATEST, text, pointer.version)
    except (AlreadyExistsError, PreconditionFailedError, NotFoundError) as exc:
        raise CliError(
            ExitCode.CONFLICT,
            "latest.txt changed while repairing (is a writer running?); nothing was written, "
            "re-run `objstore recover --repair`",
        ) from exc
    plan["applied"] = True


async def recover(store: AsyncCheckpointStore, *, repair: bool, dry_run: bool) -> Outcome:
    """``objstore recover``: what a restart would restore, and optionally repair the pointer."""
    pointer = await read_pointer(store.backend)  # before the walk: see repair_pointer
    report = await store.recover_latest_validated()
    committed = {cid for cid, entry in (await _list_entries(store)).items() if entry.committed}
    skipped = dict(report.skipped)
    validity: dict[int, bool | None] = {
        cid: (False if cid in committed else None) for cid in skipped
    }
    if report.chosen_id is not None:
        validity[report.chosen_id] = True
    restore: dict[str, Any] | None = None
    if report.manifest is not None:
        manifest = report.manifest
        restore = {
            "checkpoint_id": manifest.checkpoint_id,
            "epoch": manifest.epoch,
            "timestamp_ms": manifest.timestamp_ms,
            "time": _iso_ms(manifest.timestamp_ms),
            "source_offsets": manifest.source_offsets,
            "watermark": manifest.watermark,
            "state_size": manifest.state_size,
            "operators": [entry.name for entry in manifest.operator_states],
            "pending_sinks": manifest.pending_sinks,
        }
    pointer_doc = _pointer_document(pointer, validity, report.chosen_id)
    repair_doc = plan_pointer_repair(pointer, report.chosen_id, skipped, report.examined)
    repair_doc["dry_run"] = dry_run
    if repair and not dry_run:
        await repair_pointer(store, pointer, repair_doc)
    document = {
        "url": store.url,
        "chosen_id": report.chosen_id,
        "fresh_start": report.chosen_id is None,
        "restore": restore,
        "examined": list(report.examined),
        "skipped": [{"id": cid, "reason": reason} for cid, reason in report.skipped],
        "latest": pointer_doc,
        "repair": repair_doc,
    }
    return Outcome(document, ExitCode.INVALID if report.chosen_id is None else ExitCode.OK)


def render_recover(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore recover``."""
    console.print(Text.assemble(("Recovery of ", "bold"), document["url"]))
    restore = document["restore"]
    if restore is None:
        examined = len(document["examined"])
        console.print(
            Text(
                f"Nothing valid to restore ({examined} checkpoint directories examined): "
                "a restart starts fresh.",
                style="bold red",
            )
        )
    else:
        console.print(
            Text.assemble(
                ("Would restore checkpoint ", "green"),
                (str(restore["checkpoint_id"]), "bold green"),
                f" — epoch {restore['epoch']}, {_when(restore['time'])} UTC, "
                f"source offsets {json.dumps(restore['source_offsets'], sort_keys=True)}, "
                f"state {_size(restore['state_size'])}",
            )
        )
        if restore["pending_sinks"]:
            console.print(
                Text("pending sinks: " + ", ".join(restore["pending_sinks"]), style="yellow")
            )
    if document["skipped"]:
        table = Table(title="skipped (newest first)", show_edge=False, pad_edge=False)
        table.add_column("id", justify="right")
        table.add_column("why", overflow="fold")
        for item in document["skipped"]:
            table.add_row(str(item["id"]), Text(item["reason"], style="red"))
        console.print(table)
    console.print(_pointer_line(document["latest"]))
    repair = document["repair"]
    if not repair["needed"]:
        console.print(f"repair: not needed ({repair['reason']})")
        return
    if repair["action"] == "refuse":
        console.print(Text(f"repair refused: {repair['reason']}", style="bold red"))
        return
    move = f"{repair['action']}: {repair['from'] or '-'} → {repair['to']} ({repair['reason']})"
    if repair["applied"]:
        console.print(Text(f"repaired latest.txt, {move}", style="green"))
    elif repair["dry_run"]:
        console.print(Text(f"dry run: would repair latest.txt, {move}", style="yellow"))
    else:
        console.print(Text(f"needs repair (--repair), {move}", style="yellow"))


# -- prune and gc ----------------------------------------------------------------------------


async def prune(store: AsyncCheckpointStore, keep: int, *, dry_run: bool) -> Outcome:
    """``objstore prune``: keep the ``keep`` newest committed checkpoints (and the newest
    valid one, always); delete the rest, manifest first."""
    entries = await _list_entries(store)
    committed = sorted(cid for cid, entry in entries.items() if entry.committed)
    newest_valid = await store.newest_valid_id() if len(committed) > keep else None
    planned = plan_prune(committed, keep, newest_valid) if len(committed) > keep else []
    refused = len(committed) > keep and newest_valid is None
    deleted_count = 0
    if planned and not dry_run:
        deleted_count = await store.prune(keep)
    document = {
        "url": store.url,
        "keep": keep,
        "dry_run": dry_run,
        "newest_valid_id": newest_valid,
        "committed": committed,
        "deleted": planned,
        "deleted_count": 0 if dry_run else deleted_count,
        "kept": [cid for cid in committed if cid not in set(planned)],
        "refused": (
            "no valid checkpoint: prune deletes nothing until an operator has looked"
            if refused
            else None
        ),
    }
    return Outcome(document, ExitCode.INVALID if refused else ExitCode.OK)


def render_prune(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore prune``."""
    if document["refused"]:
        console.print(Text(f"prune refused: {document['refused']}", style="bold red"))
        return
    deleted = document["deleted"]
    verb = "would delete" if document["dry_run"] else "deleted"
    if not deleted:
        console.print(
            f"nothing to prune: {len(document['committed'])} committed, keeping {document['keep']}"
        )
        return
    console.print(f"{verb} {len(deleted)} checkpoints: {_ids(deleted)}")
    console.print(f"kept {len(document['kept'])}: {_ids(document['kept'])}")


def _ids(ids: list[int]) -> str:
    return ", ".join(str(cid) for cid in ids) or "-"


async def gc(store: AsyncCheckpointStore, grace_seconds: float | None, *, dry_run: bool) -> Outcome:
    """``objstore gc``: delete orphaned sidecars no live writer can still commit."""
    grace = store.orphan_grace_seconds if grace_seconds is None else grace_seconds
    now = time.time()
    entries = await _list_entries(store)
    eligible = orphans_to_delete(entries, now=now, grace_seconds=grace)
    orphans = []
    for checkpoint_id, entry in sorted(entries.items()):
        if entry.committed:
            continue
        mtime = entry.newest_mtime
        orphans.append(
            {
                "id": checkpoint_id,
                "size": sum(info.size for info in (entry.state, *entry.others) if info),
                "age_seconds": None if mtime is None else round(now - mtime, 3),
                "eligible": checkpoint_id in eligible,
            }
        )
    deleted = 0
    if eligible and not dry_run:
        deleted = await store.cleanup_orphans(grace)
    document = {
        "url": store.url,
        "grace_seconds": grace,
        "dry_run": dry_run,
        "orphans": orphans,
        "deleted": eligible,
        "deleted_count": 0 if dry_run else deleted,
    }
    return Outcome(document)


def render_gc(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore gc``."""
    orphans = document["orphans"]
    if not orphans:
        console.print("no orphaned checkpoints")
        return
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("id", justify="right")
    table.add_column("size", justify="right")
    table.add_column("age", justify="right")
    table.add_column("action")
    verb = "would delete" if document["dry_run"] else "deleted"
    for orphan in orphans:
        age = orphan["age_seconds"]
        table.add_row(
            str(orphan["id"]),
            _size(orphan["size"]),
            "-" if age is None else f"{age:.0f}s",
            Text(verb, style="red")
            if orphan["eligible"]
            else Text("kept: a live writer may still commit it", style="dim"),
        )
    console.print(table)
    count = len(document["deleted"]) if document["dry_run"] else document["deleted_count"]
    console.print(f"{verb} {count} orphaned checkpoints (grace {document['grace_seconds']:g}s)")


# -- cp --------------------------------------------------------------------------------------


async def _destination_manifest(
    dst: AsyncCheckpointStore, checkpoint_id: int
) -> StoredManifest | None:
    try:
        return (await _read_stored(dst.backend, checkpoint_id))[1]
    except NotFoundError:
        return None
    except CorruptionError as exc:
        raise CliError(
            ExitCode.INVALID,
            f"{dst.url} already holds a corrupt checkpoint {checkpoint_id} ({exc.reason}); "
            "not overwriting it",
        ) from exc


def _same_commit(a: StoredManifest, b: StoredManifest) -> bool:
    return a.writer_nonce == b.writer_nonce and a.state_nonce == b.state_nonce


async def copy_checkpoint(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    checkpoint_id: int,
    *,
    size_hint: int | None,
    advance: Callable[[int], None] = lambda _: None,
) -> str:
    """Copy one valid checkpoint's bytes as they are; return ``"copied"`` or ``"present"``.

    ``state.bin`` then ``manifest.json``, each create-if-absent on ``dst``, so the copy
    commits exactly as a save does and checksums carry over; then the copy is validated on
    ``dst``. An object already at ``dst`` is accepted only if it is the same commit (same
    writer nonces): an earlier, interrupted copy. Raises :class:`CliError` with
    ``CONFLICT`` when ``dst`` holds another writer's checkpoint of that id, ``INVALID`` when
    the copy does not validate. Does not touch ``latest.txt``. Candidate for the library.
    """
    data, stored = await _read_stored(src.backend, checkpoint_id)
    mkey, skey = manifest_key(checkpoint_id), state_key(checkpoint_id)

    def conflict() -> CliError:
        return CliError(
            ExitCode.CONFLICT,
            f"{dst.url} already has a different checkpoint {checkpoint_id} (another writer's "
            "commit); not copying over it",
        )

    existing = await _destination_manifest(dst, checkpoint_id)
    if existing is not None and not _same_commit(existing, stored):
        raise conflict()
    outcome = "present" if existing is not None else "copied"
    if existing is None and stored.manifest.state_checksum is not None:
        size = size_hint if size_hint is not None else (await src.backend.head(skey)).size
        try:
            if size <= STREAM_THRESHOLD:
                state, _ = await src.backend.get(skey)
                await dst.backend.put_if_absent(skey, state)
                advance(size)
            else:
                await dst.backend.put_if_absent_stream(
                    skey, _iter_ranges(src.backend, skey, size, advance)
                )
        except AlreadyExistsError:
            # Left by an earlier, interrupted copy of this very commit? Then it has exactly
            # the recorded size and checksum; anything else is another writer's sidecar.
            existing_size = (await dst.backend.head(skey)).size
            if existing_size != stored.manifest.state_size:
                raise conflict() from None
            digest, _ = await _hash_object(dst.backend, skey, existing_size, lambda _: None)
            if digest != stored.manifest.state_checksum:
                raise conflict() from None
    if existing is None:
        try:
            await dst.backend.put_if_absent(mkey, data)
        except AlreadyExistsError:
            raced = await _destination_manifest(dst, checkpoint_id)
            if raced is None or not _same_commit(raced, stored):
                raise conflict() from None
            outcome = "present"
    result = await validate_with_progress(dst, checkpoint_id, size_hint=stored.manifest.state_size)
    if not result.valid:
        raise CliError(
            ExitCode.INVALID,
            f"checkpoint {checkpoint_id} does not validate on {dst.url} after the copy: "
            + "; ".join(result.issues),
        )
    return outcome


async def advance_pointer_forward(backend: AsyncBackend, target: int) -> tuple[Pointer, bool]:
    """Move ``latest.txt`` forward to ``target`` by CAS, never backward; return the pointer
    as found and whether it moved. Retries when a concurrent writer moves it first."""
    for _ in range(100):
        pointer = await read_pointer(backend)
        if pointer.checkpoint_id is not None and pointer.checkpoint_id >= target:
            return pointer, False
        try:
            if pointer.version is None:
                await backend.put_if_absent(LATEST, pointer_text(target))
            else:
                await backend.put_if_match(LATEST, pointer_text(target), pointer.version)
        except (AlreadyExistsError, PreconditionFailedError, NotFoundError):
            continue
        return pointer, True
    raise CliError(ExitCode.CONFLICT, "latest.txt keeps changing under concurrent writers")


async def copy_checkpoints(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    requested: list[str],
    *,
    all_: bool,
    progress: ByteProgress,
) -> Outcome:
    """``objstore cp``: copy checkpoints (default: the newest valid one), pointer last."""
    if requested and all_:
        raise CliError(ExitCode.USAGE, "give --id or --all, not both")
    entries = await _list_entries(src)
    committed = sorted(cid for cid, entry in entries.items() if entry.committed)
    ids: list[int]
    if all_:
        ids = committed
    elif requested:
        ids = sorted({parse_checkpoint_id(item) for item in requested})
    else:
        newest = await src.newest_valid_id()
        if newest is None:
            raise CliError(ExitCode.INVALID, f"no valid checkpoint to copy in {src.url}")
        ids = [newest]

    def hint(checkpoint_id: int) -> int | None:
        entry = entries.get(checkpoint_id)
        return entry.state.size if entry is not None and entry.state is not None else None

    progress.start("copying", 2 * sum(hint(cid) or 0 for cid in ids))
    copied: list[int] = []
    present: list[int] = []
    skipped: list[dict[str, Any]] = []
    for checkpoint_id in ids:
        if checkpoint_id not in entries or not entries[checkpoint_id].committed:
            skipped.append({"id": checkpoint_id, "reason": "not committed in the source"})
            continue
        check = await validate_with_progress(
            src, checkpoint_id, size_hint=hint(checkpoint_id), advance=progress.advance
        )
        if not check.valid:
            skipped.append({"id": checkpoint_id, "reason": "; ".join(check.issues)})
            continue
        outcome = await copy_checkpoint(
            src, dst, checkpoint_id, size_hint=hint(checkpoint_id), advance=progress.advance
        )
        (copied if outcome == "copied" else present).append(checkpoint_id)
    done = copied + present
    pointer_doc: dict[str, Any] = {"before": None, "after": None, "moved": False}
    if done:
        before, moved = await advance_pointer_forward(dst.backend, max(done))
        pointer_doc = {
            "before": before.checkpoint_id,
            "after": max(done) if moved else before.checkpoint_id,
            "moved": moved,
        }
    document = {
        "src": src.url,
        "dst": dst.url,
        "copied": copied,
        "already_present": present,
        "skipped": skipped,
        "latest": pointer_doc,
    }
    return Outcome(document, ExitCode.INVALID if skipped or not done else ExitCode.OK)


def render_cp(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore cp``."""
    console.print(Text.assemble(("Copy ", "bold"), document["src"], " → ", document["dst"]))
    console.print(Text(f"copied and validated: {_ids(document['copied'])}", style="green"))
    if document["already_present"]:
        console.print(f"already present (same commit): {_ids(document['already_present'])}")
    for item in document["skipped"]:
        console.print(Text(f"skipped {item['id']}: {item['reason']}", style="bold red"))
    pointer = document["latest"]
    if pointer["moved"]:
        console.print(
            f"latest.txt on the destination: {pointer['before'] or '-'} → {pointer['after']}"
        )
    elif document["copied"] or document["already_present"]:
        console.print(
            f"latest.txt on the destination stays at {pointer['before']} (never backward)"
        )


# -- probe -----------------------------------------------------------------------------------


async def probe(url: str, options: dict[str, Any]) -> Outcome:
    """``objstore probe``: does the store enforce the preconditions fencing relies on?"""
    backend = open_async_backend(url, verify_fencing=False, **options)
    try:
        result = await backend.probe()
    finally:
        with contextlib.suppress(Exception):
            await backend.close()
    document = {
        "url": result.url,
        "ok": result.ok,
        "create_if_absent": result.create_if_absent,
        "compare_and_swap": result.compare_and_swap,
        "conditional_delete": result.conditional_delete,
        "failures": result.failures(),
    }
    return Outcome(document, ExitCode.OK if result.ok else ExitCode.UNSUPPORTED)


def render_probe(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore probe``."""
    table = Table(title=f"Capabilities of {document['url']}", show_edge=False, pad_edge=False)
    table.add_column("guarantee")
    table.add_column("enforced")
    for name in ("create_if_absent", "compare_and_swap", "conditional_delete"):
        ok = document[name]
        table.add_row(
            name.replace("_", "-"), Text("yes", "green") if ok else Text("NO", "bold red")
        )
    console.print(table)
    if document["ok"]:
        console.print(Text("the store can fence concurrent writers", style="green"))
    for failure in document["failures"]:
        console.print(Text(failure, style="bold red"))


# -- the Typer application -------------------------------------------------------------------


class _OneLineErrors(typer.core.TyperGroup):
    """The command group, reporting usage errors like every other expected failure: one
    line on stderr naming the command's ``--help``, exit code 2."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; with ``standalone_mode``, exit the process."""
        call = functools.partial(
            super().main,
            args,
            prog_name,
            complete_var,
            windows_expand_args=windows_expand_args,
            **extra,
        )
        if not standalone_mode:
            return call(standalone_mode=False)
        try:
            code = call(standalone_mode=False)
        except typer.TyperException as exc:
            show = getattr(exc, "show", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and callable(show):
                show()  # a bare command: its help is the clearest answer
                sys.exit(int(getattr(exc, "exit_code", ExitCode.USAGE)))
            format_message = getattr(exc, "format_message", None)
            message = format_message() if callable(format_message) else str(exc)
            context = getattr(exc, "ctx", None)
            if context is not None:
                message += f" (see '{context.command_path} --help')"
            sys.exit(_fail(getattr(exc, "exit_code", ExitCode.USAGE), message).exit_code)
        except typer.Abort:
            sys.exit(_fail(130, "aborted").exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="objstore",
    cls=_OneLineErrors,
    help="Inspect, verify, recover, repair, prune, gc and copy objstore checkpoints.\n\n"
    "Exit codes: 0 ok; 1 nothing valid or corruption found; 2 usage error; "
    "3 conflict or fenced; 4 store does not enforce preconditions; 5 storage error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)

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
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Show what would change; change nothing.")
]


def _execute(
    work: Callable[[dict[str, Any], ByteProgress], Coroutine[Any, Any, Outcome]],
    *,
    json_output: bool,
    storage_options: list[str] | None,
    render: Callable[[Console, dict[str, Any]], None],
) -> None:
    """Run one command: parse options, run ``work`` on a fresh event loop, print, exit."""
    secrets: list[str] = []
    try:
        options = parse_storage_options(storage_options or [])
        secrets = _secrets(options)
        with ByteProgress(_want_progress(json_output)) as progress:
            outcome = asyncio.run(work(options, progress))
    except KeyboardInterrupt:
        raise _fail(130, "interrupted") from None
    except Exception as exc:
        classified = classify_error(exc)
        if classified is None:
            raise
        raise _fail(classified[0], classified[1], secrets) from None
    if json_output:
        sys.stdout.write(json.dumps(outcome.document, indent=2, default=str) + "\n")
    else:
        render(_stdout_console(), outcome.document)
    raise typer.Exit(int(outcome.code))


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"objstore {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log objstore's requests and retries on stderr.")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Crash-safe, fenced checkpoints on S3, GCS or a local directory."""
    logger = logging.getLogger("objstore")
    for previous in [h for h in logger.handlers if getattr(h, "objstore_cli", False)]:
        logger.removeHandler(previous)  # from an earlier run in this process
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.setLevel(logging.INFO)
    else:
        # Library warnings are summarised in each command's report; keep stderr to one line.
        handler = logging.NullHandler()
    setattr(handler, "objstore_cli", True)  # noqa: B010 - a marker attribute, not typed
    logger.addHandler(handler)


@app.command("ls")
def ls_command(
    url: UrlArgument,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Check sidecars by size only instead of hashing them (for huge state)."
        ),
    ] = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """List every checkpoint: epoch, time, sizes, status, and which one latest.txt names.

    Status is valid, valid with pending sinks, corrupt (with the reason) or orphan (a
    sidecar without a manifest). Every checkpoint is fully validated unless --quick.
    Exit 1 when a corrupt checkpoint is listed or none is valid.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with _open_store(url, options) as store:
            return await list_checkpoints(store, full=not quick, progress=progress)

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_ls)


@app.command("show")
def show_command(
    url: UrlArgument,
    checkpoint: Annotated[
        str,
        typer.Argument(
            metavar="[ID|latest]", help="Checkpoint id, or 'latest' (what load_latest returns)."
        ),
    ] = "latest",
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Show one checkpoint's manifest (verified against its checksum)."""

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with _open_store(url, options) as store:
            return await show_checkpoint(store, checkpoint)

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_show)


@app.command("verify")
def verify_command(
    url: UrlArgument,
    checkpoints: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[ID ...]",
            help="Checkpoint ids or 'latest'; default: the newest committed checkpoint.",
            show_default=False,
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Verify every committed checkpoint.")] = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Fully validate checkpoints: manifest checksum, id, sidecar size, xxh3, header, chunks.

    Shows a progress bar on a terminal. Exit 1 if any checked checkpoint is invalid or there
    is nothing to check.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with _open_store(url, options) as store:
            return await verify_checkpoints(
                store, list(checkpoints or []), all_=all_, progress=progress
            )

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_verify)


@app.command("recover")
def recover_command(
    url: UrlArgument,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair", help="Move latest.txt to the newest valid checkpoint (compare-and-swap)."
        ),
    ] = False,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Report what a restart would restore (recover_latest_validated) and what it skipped.

    With --repair, latest.txt is moved to the newest valid checkpoint: forward always, and
    backward only off a checkpoint found invalid or missing. Exit 1 when nothing is valid.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with _open_store(url, options) as store:
            return await recover(store, repair=repair, dry_run=dry_run)

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_recover)


@app.command("prune")
def prune_command(
    url: UrlArgument,
    keep: Annotated[
        int, typer.Option("--keep", min=1, help="How many newest committed checkpoints to keep.")
    ],
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Delete all but the newest --keep committed checkpoints.

    The newest valid checkpoint is always kept; with no valid checkpoint nothing is deleted
    (exit 1). Manifests go before sidecars, so a crash leaves at worst an orphan.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with _open_store(url, options) as store:
            return await prune(store, keep, dry_run=dry_run)

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_prune)


@app.command("gc")
def gc_command(
    url: UrlArgument,
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace",
            metavar="DURATION",
            help="Orphans younger than this may belong to a live writer (30s, 15m, 2h, 1d; "
            "default 1h) unless a newer checkpoint is committed.",
            show_default=False,
        ),
    ] = None,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Delete orphaned sidecars (no manifest) that no live writer can still commit."""

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        grace_seconds = None if grace is None else parse_duration(grace)
        async with _open_store(url, options) as store:
            return await gc(store, grace_seconds, dry_run=dry_run)

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_gc)


@app.command("cp")
def cp_command(
    src_url: Annotated[str, typer.Argument(metavar="SRC_URL", help="Store to copy from.")],
    dst_url: Annotated[str, typer.Argument(metavar="DST_URL", help="Store to copy to.")],
    ids: Annotated[
        list[str] | None,
        typer.Option(
            "--id", metavar="ID", help="Checkpoint to copy (repeatable); default: newest valid."
        ),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Copy every valid checkpoint.")] = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
    src_option: Annotated[
        list[str] | None,
        typer.Option("--src-option", metavar="KEY=VALUE", help="Storage option for SRC only."),
    ] = None,
    dst_option: Annotated[
        list[str] | None,
        typer.Option("--dst-option", metavar="KEY=VALUE", help="Storage option for DST only."),
    ] = None,
) -> None:
    """Copy checkpoints between stores, bytes as they are, validated on both sides.

    state.bin, then manifest.json (create-if-absent), then the destination's latest.txt is
    moved forward by compare-and-swap, last. Invalid source checkpoints are skipped (exit 1);
    a different checkpoint of the same id at the destination is a conflict (exit 3).
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        src_options = {**options, **parse_storage_options(src_option or [])}
        dst_options = {**options, **parse_storage_options(dst_option or [])}
        async with (
            _open_store(src_url, src_options) as src,
            _open_store(dst_url, dst_options) as dst,
        ):
            return await copy_checkpoints(src, dst, list(ids or []), all_=all_, progress=progress)

    every_option = [*(storage_option or []), *(src_option or []), *(dst_option or [])]
    _execute(work, json_output=json_output, storage_options=every_option, render=render_cp)


@app.command("probe")
def probe_command(
    url: UrlArgument,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Check that the store enforces create-if-absent, compare-and-swap and conditional delete.

    Writes and removes one key under .objstore-probe/. Exit 4 if any guarantee is missing.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        return await probe(url, options)

    _execute(work, json_output=json_output, storage_options=storage_option, render=render_probe)


@app.command("demo")
def demo_command(
    url: Annotated[
        str | None,
        typer.Argument(
            metavar="[URL]", help="Where to run (default ./objstore-demo).", show_default=False
        ),
    ] = None,
    s3: Annotated[
        bool, typer.Option("--s3", help="Run against a moto S3 server started on 127.0.0.1.")
    ] = False,
    events: Annotated[int, typer.Option("--events", min=2, help="Events in the stream.")] = 1000,
    every: Annotated[int, typer.Option("--every", min=1, help="Checkpoint every N events.")] = 100,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Makes the crash reproducible.")
    ] = None,
    crash: Annotated[
        str | None,
        typer.Option(
            "--crash",
            metavar="KIND",
            help="mid-batch, after-state, after-manifest or after-pointer (default: random).",
        ),
    ] = None,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Run a word-count stream processor that crashes, recovers and proves exactly-once state.

    It checkpoints every N events with save_with_state, dies between two real writes, restarts
    with recover_latest_validated, finishes, and compares its counts with an uninterrupted run.
    Exit 0 when the results match, 1 when they do not.
    """
    from objstore import demo

    console = _stdout_console()
    steps: list[dict[str, Any]] = []

    def report(step: demo.DemoStep) -> None:
        steps.append(step.to_json())
        if not json_output:
            console.print(demo.format_step(step))

    secrets: list[str] = []
    try:
        options = parse_storage_options(storage_option or [])
        secrets = _secrets(options)
        result = demo.run_demo_command(
            url,
            s3=s3,
            events=events,
            interval=every,
            seed=seed,
            crash=crash,
            storage_options=options,
            report=report,
        )
    except KeyboardInterrupt:
        raise _fail(130, "interrupted") from None
    except Exception as exc:
        classified = classify_error(exc)
        if classified is None:
            raise
        raise _fail(classified[0], classified[1], secrets) from None
    if json_output:
        sys.stdout.write(json.dumps({**result.to_json(), "steps": steps}, indent=2) + "\n")
    raise typer.Exit(int(ExitCode.OK if result.exactly_once else ExitCode.INVALID))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``objstore`` / ``python -m objstore``."""
    app(args=argv, prog_name="objstore")
