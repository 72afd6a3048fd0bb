"""``objstore ls``: every checkpoint directory, its status, and what ``latest.txt`` names."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from objstore.checkpoint import (
    ABORTED,
    AbortedCheckpoint,
    AsyncCheckpointStore,
    CheckpointEntry,
    CheckpointManifest,
    read_pointer_async,
    validate_checkpoint_streaming_async,
)
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
from objstore.cli._stores import (
    gather,
    list_entries,
    listed_parts,
    open_store,
    pointer_document,
    read_stored,
    sharing,
    state_size,
)
from objstore.errors import CorruptionError, NotFoundError

__all__ = ["list_checkpoints", "ls_command", "render_ls"]


def _size_issue(expected: int | None, actual: int) -> str | None:
    """What a listed sidecar size alone says (``--quick``), in the library's words."""
    if expected is None or expected == actual:
        return None
    return "sidecar truncated" if actual < expected else "sidecar longer than recorded"


def _parts_issues(manifest: CheckpointManifest, entry: CheckpointEntry) -> tuple[str, ...]:
    """What the listing alone says of a parts checkpoint's objects (``--quick``): each part
    listed with its recorded size."""
    listed = {info.key: info.size for info in listed_parts(entry)}
    issues = []
    for part in manifest.parts:
        if part.key is None:
            continue
        if part.key not in listed:
            issues.append(f"part {part.name!r}: {part.key} missing")
            continue
        size_issue = _size_issue(part.size, listed[part.key])
        if size_issue is not None:
            issues.append(f"part {part.name!r}: {size_issue.replace('sidecar', 'object')}")
    return tuple(issues)


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
        "state_size": state_size({checkpoint_id: entry}, checkpoint_id),
        "parts": len(listed_parts(entry)),
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
    except AbortedCheckpoint:
        row.update(status="aborted", reason=ABORTED)
        return row
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
    elif manifest.parts:
        issues = _parts_issues(manifest, entry)
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
            sum(state_size(entries, cid) or 0 for cid, e in entries.items() if e.committed),
        )
    shares = await sharing(store, entries)
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
    for row in rows:
        row.update(
            shares.get(
                row["id"],
                {"exclusive_bytes": None, "shared_bytes": None, "shared_with_others_bytes": None},
            )
        )
    validity: dict[int, bool | None] = {
        row["id"]: (None if row["status"] in ("orphan", "aborted") else row["valid"])
        for row in rows
    }
    newest_valid = max((row["id"] for row in rows if row["valid"]), default=None)
    counts = {
        status: sum(1 for row in rows if row["status"] == status)
        for status in ("valid", "pending_sinks", "corrupt", "orphan", "aborted")
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
    "aborted": "dim",
}


def _status_text(row: dict[str, Any]) -> Text:
    status = row["status"]
    label = status
    if status == "pending_sinks":
        label = "valid, pending sinks: " + ", ".join(row["pending_sinks"])
    elif status == "corrupt":
        label = f"corrupt: {row['reason']}"
    elif status in ("orphan", "aborted"):
        label = f"{status}: {row['reason']}"
    return Text(label, style=_STATUS_STYLE.get(status, ""))


STATUS_MIN_WIDTH = 16
"""The status column's least width: wide enough for ``corrupt:``/``orphan:`` and a few words
of the reason (the rest folds onto more lines)."""
_COLUMN_GAP = 3  # " │ " between two columns
# Optional columns, in the order they give way on a narrow terminal (first = first dropped).
_OPTIONAL_COLUMNS = ("shared", "manifest", "state", "epoch", "time (UTC)")


def _cells(row: dict[str, Any]) -> dict[str, str]:
    return {
        "id": str(row["id"]),
        "epoch": "-" if row["epoch"] is None else str(row["epoch"]),
        "time (UTC)": when_text(row["time"]),
        "manifest": size_text(row["manifest_size"]),
        "state": size_text(row["state_size"])
        + (f" in {row['parts']} parts" if row.get("parts") else ""),
        "shared": size_text(row["shared_bytes"]) if row.get("shared_bytes") else "-",
    }


def _fitting_columns(cells: list[dict[str, str]], marker: int, width: int) -> list[str]:
    """The columns to show at ``width``: id and status always; the others only while the
    status keeps :data:`STATUS_MIN_WIDTH`, dropped in :data:`_OPTIONAL_COLUMNS` order."""
    columns = ["id", "epoch", "time (UTC)", "manifest", "state", "shared"]

    def needed(names: list[str]) -> int:
        widths = [max(len(name), *(len(row[name]) for row in cells)) for name in names]
        return marker + sum(w + _COLUMN_GAP for w in widths) + STATUS_MIN_WIDTH

    for optional in _OPTIONAL_COLUMNS:
        if needed(columns) <= width:
            break
        columns.remove(optional)
    return columns


def render_ls(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore ls``.

    The status is the one column that never gives way: on a narrow terminal the sizes, the
    epoch and then the time are left out (``--json`` has them all) before the status would
    be squeezed below :data:`STATUS_MIN_WIDTH`.
    """
    rows = document["checkpoints"]
    console.print(Text.assemble(("Store ", "bold"), document["url"]))
    marked = any(row["latest"] for row in rows)
    console.print(pointer_line(document["latest"]), "(→ in the table)" if marked else "")
    if not rows:
        console.print("No checkpoints.")
        return
    cells = [_cells(row) for row in rows]
    marker = 1 + _COLUMN_GAP if marked else 0
    columns = _fitting_columns(cells, marker, console.width)
    table = Table(show_edge=False, pad_edge=False)
    if marked:
        table.add_column("", no_wrap=True)
    for name in columns:
        table.add_column(name, justify="left" if name == "time (UTC)" else "right", no_wrap=True)
    table.add_column("status", overflow="fold", ratio=1, min_width=STATUS_MIN_WIDTH)
    for row, cell in zip(rows, cells, strict=True):
        arrow: list[Text | str] = [Text("→", style="bold") if row["latest"] else ""]
        table.add_row(
            *(arrow if marked else []), *(cell[name] for name in columns), _status_text(row)
        )
    console.print(table)
    left_out = [name for name in _OPTIONAL_COLUMNS if name not in columns]
    if left_out:
        console.print(Text(f"(narrow terminal: {', '.join(left_out)} not shown)", style="dim"))
    counts = document["counts"]
    console.print(
        f"{len(rows)} checkpoint directories: {counts['valid'] + counts['pending_sinks']} valid, "
        f"{counts['corrupt']} corrupt, {counts['orphan']} orphaned, {counts['aborted']} aborted "
        f"(checked: {document['checked']})"
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
