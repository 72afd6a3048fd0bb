"""``objstore ls``: every checkpoint directory, its status, and what ``latest.txt`` names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from objstore.checkpoint import (
    AsyncCheckpointStore,
    read_pointer_async,
    validate_checkpoint_streaming_async,
)
from objstore.checkpoint._plan import CheckpointEntry
from objstore.cli._errors import ExitCode
from objstore.cli._options import JsonOption, StorageOption, UrlArgument
from objstore.cli._output import (
    ByteProgress,
    Outcome,
    iso,
    iso_ms,
    pointer_line,
    run_command,
    size_text,
    when_text,
)
from objstore.cli._stores import gather, list_entries, open_store, pointer_document, read_stored
from objstore.errors import CorruptionError, NotFoundError

__all__ = ["list_checkpoints", "ls_command", "render_ls"]


def _size_issue(expected: int | None, actual: int) -> str | None:
    """What a listed sidecar size alone says (``--quick``), in the library's words."""
    if expected is None or expected == actual:
        return None
    return "sidecar truncated" if actual < expected else "sidecar longer than recorded"


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
        row["time"] = iso(entry.newest_mtime)
        row["reason"] = "no manifest; " + (
            "gc would delete it" if gc_eligible else "younger than the grace period, kept by gc"
        )
        return row
    try:
        _, stored = await read_stored(store.backend, checkpoint_id)
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
        time=iso_ms(manifest.timestamp_ms),
        pending_sinks=manifest.pending_sinks,
        source_offsets=manifest.source_offsets,
    )
    issues: tuple[str, ...]
    if full:
        result = await validate_checkpoint_streaming_async(store, checkpoint_id, progress=advance)
        issues, row["warnings"] = result.issues, list(result.warnings)
    elif manifest.state_checksum is None:
        issues = ()
    elif entry.state is None:
        issues = ("state.bin missing",)
    else:
        size_issue = _size_issue(manifest.state_size, entry.state.size)
        issues = () if size_issue is None else (size_issue,)
    if issues:
        row.update(status="corrupt", reason="; ".join(issues))
    else:
        row.update(status="pending_sinks" if manifest.pending_sinks else "valid", valid=True)
    return row


async def list_checkpoints(
    store: AsyncCheckpointStore, *, full: bool, progress: ByteProgress | None = None
) -> Outcome:
    """Every checkpoint directory with its status, and ``latest.txt``.

    ``full`` validates every checkpoint completely (sidecars hashed in ranged reads);
    otherwise a sidecar is only checked to exist with its recorded size.
    """
    progress = progress or ByteProgress(False)
    pointer = await read_pointer_async(store)
    entries = await list_entries(store)
    eligible = set(await store.plan_cleanup_orphans())
    if full:
        progress.start(
            "verifying",
            sum(e.state.size for e in entries.values() if e.committed and e.state is not None),
        )
    rows = await gather(
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
    newest_valid = max((row["id"] for row in rows if row["valid"]), default=None)
    counts = {
        status: sum(1 for row in rows if row["status"] == status)
        for status in ("valid", "pending_sinks", "corrupt", "orphan")
    }
    document = {
        "url": store.url,
        "checked": "full" if full else "quick",
        "latest": pointer_document(pointer, validity, newest_valid),
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


def render_ls(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore ls``."""
    rows = document["checkpoints"]
    console.print(Text.assemble(("Store ", "bold"), document["url"]))
    console.print(pointer_line(document["latest"]), "(→ in the table)" if rows else "")
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
            when_text(row["time"]),
            size_text(row["manifest_size"]),
            size_text(row["state_size"]),
            _status_text(row),
        )
    console.print(table)
    counts = document["counts"]
    console.print(
        f"{len(rows)} checkpoint directories: {counts['valid'] + counts['pending_sinks']} valid, "
        f"{counts['corrupt']} corrupt, {counts['orphan']} orphaned (checked: {document['checked']})"
    )


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
        async with open_store(url, options) as store:
            return await list_checkpoints(store, full=not quick, progress=progress)

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_ls)
