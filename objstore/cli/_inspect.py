"""``objstore show`` (one manifest as stored) and ``objstore verify`` (full validation)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.json import JSON as RichJSON
from rich.table import Table
from rich.text import Text

from objstore.checkpoint import (
    AsyncCheckpointStore,
    ValidationResult,
    read_pointer_async,
    validate_checkpoint_streaming_async,
)
from objstore.cli._errors import CliError, ExitCode
from objstore.cli._options import JsonOption, StorageOption, UrlArgument, parse_checkpoint_id
from objstore.cli._output import ByteProgress, Outcome, iso_ms, run_command, size_text, when_text
from objstore.cli._stores import (
    list_entries,
    listed_parts,
    open_store,
    read_stored,
    sharing,
    state_size,
)
from objstore.errors import NotFoundError

__all__ = [
    "render_show",
    "render_verify",
    "show_checkpoint",
    "show_command",
    "verify_checkpoints",
    "verify_command",
]


async def _latest_id(store: AsyncCheckpointStore) -> int:
    """The id ``load_latest`` returns; :class:`CliError` when nothing is committed.

    Raises:
        CliError: (invalid) when nothing is committed.
    """
    latest = await store.load_latest()
    if latest is None:
        raise CliError(ExitCode.INVALID, f"no committed checkpoint in {store.url}")
    return latest.checkpoint_id


# -- show ------------------------------------------------------------------------------------


async def show_checkpoint(store: AsyncCheckpointStore, which: str) -> Outcome:
    """One manifest, verified against its checksum, as stored.

    Raises:
        CliError: (invalid) if the checkpoint does not exist.
    """
    checkpoint_id = await _latest_id(store) if which == "latest" else parse_checkpoint_id(which)
    try:
        data, _ = await read_stored(store.backend, checkpoint_id)
    except NotFoundError:
        raise CliError(
            ExitCode.INVALID, f"checkpoint {checkpoint_id} does not exist in {store.url}"
        ) from None
    pointer = await read_pointer_async(store)
    manifest = json.loads(data)
    shares = await sharing(store, await list_entries(store))
    document = {
        "url": store.url,
        "checkpoint_id": checkpoint_id,
        "latest": pointer.checkpoint_id == checkpoint_id,
        "time": iso_ms(manifest.get("timestamp_ms")),
        "sizes": shares.get(checkpoint_id),
        "manifest": manifest,
    }
    return Outcome(document)


def _value_text(value: object) -> str:
    """A manifest field for a table cell: ``-`` when absent or null, never ``None``."""
    return "-" if value is None else str(value)


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
    facts.add_row("epoch", _value_text(manifest.get("epoch")))
    facts.add_row("time (UTC)", when_text(document["time"]))
    facts.add_row("watermark", _value_text(manifest.get("watermark")))
    facts.add_row("source offsets", json.dumps(manifest.get("source_offsets"), sort_keys=True))
    sinks = manifest.get("sink_commit_statuses") or {}
    epochs = manifest.get("sink_epochs") or {}
    sink_text = ", ".join(
        f"{sink}={status} (epoch {epochs.get(sink, '-')})" for sink, status in sorted(sinks.items())
    )
    facts.add_row("sinks", sink_text or "-")
    parts = manifest.get("parts") or []
    if parts:
        total = sum(part.get("size") or 0 for part in parts)
        facts.add_row("state", f"{len(parts)} parts, {size_text(total)} (manifest format 2)")
    else:
        facts.add_row(
            "state",
            f"{size_text(manifest.get('state_size'))}, xxh3 {manifest.get('state_checksum')}"
            if manifest.get("state_checksum")
            else "none",
        )
    sizes = document.get("sizes")
    if sizes and sizes["shared_bytes"]:
        facts.add_row(
            "stored bytes",
            f"{size_text(sizes['exclusive_bytes'])} exclusive, "
            f"{size_text(sizes['shared_bytes'])} in shared objects "
            f"({size_text(sizes['shared_with_others_bytes'])} also used by other checkpoints)",
        )
    facts.add_row("revision", _value_text(manifest.get("revision")))
    console.print(facts)
    operators = manifest.get("operator_states") or []
    if operators:
        table = Table(title="operator states", show_edge=False, pad_edge=False)
        for column in ("name", "offset", "length", "raw length", "xxh3"):
            table.add_column(column, justify="left" if column in ("name", "xxh3") else "right")
        for entry in operators:
            table.add_row(
                _value_text(entry.get("name")),
                _value_text(entry.get("offset")),
                _value_text(entry.get("length")),
                _value_text(entry.get("raw_length")),
                _value_text(entry.get("xxh3")),
            )
        console.print(table)
    if parts:
        _render_parts(console, parts)
    console.print(Text("manifest.json", style="bold"))
    console.print(RichJSON(json.dumps(manifest, sort_keys=True)))


def _render_parts(console: Console, parts: list[dict[str, Any]]) -> None:
    """The parts table of a parts checkpoint (manifest format 2)."""
    table = Table(title="parts", show_edge=False, pad_edge=False)
    for column in ("name", "key groups", "size", "raw size", "frames", "shared", "xxh3"):
        table.add_column(column, justify="left" if column in ("name", "xxh3") else "right")
    for part in parts:
        frames = part.get("frames") or []
        groups = part.get("key_groups")
        table.add_row(
            _value_text(part.get("name")),
            f"{groups[0]}-{groups[1]}" if isinstance(groups, list) and len(groups) == 2 else "-",
            size_text(part.get("size")),
            size_text(sum(frame.get("raw_length") or 0 for frame in frames)),
            str(len(frames)),
            str(sum(1 for frame in frames if frame.get("key"))),
            _value_text(part.get("xxh3")),
        )
    console.print(table)


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
        async with open_store(url, options) as store:
            return await show_checkpoint(store, checkpoint)

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_show)


# -- verify ----------------------------------------------------------------------------------


async def verify_checkpoints(
    store: AsyncCheckpointStore, requested: list[str], *, all_: bool, progress: ByteProgress
) -> Outcome:
    """Full validation of the chosen checkpoints (default: the newest committed one), each
    sidecar streamed by the library in bounded ranged reads.

    Raises:
        CliError: (usage) if both checkpoint ids and ``--all`` are given.
    """
    if requested and all_:
        raise CliError(ExitCode.USAGE, "give checkpoint ids or --all, not both")
    entries = await list_entries(store)
    committed = sorted(cid for cid, entry in entries.items() if entry.committed)
    if all_:
        targets = committed
    elif requested:
        targets = [
            await _latest_id(store) if item == "latest" else parse_checkpoint_id(item)
            for item in requested
        ]
    else:
        targets = committed[-1:]
    targets = sorted(set(targets))
    progress.start("verifying", sum(state_size(entries, cid) or 0 for cid in targets))
    results = []
    for checkpoint_id in targets:
        if checkpoint_id not in entries:
            results.append(ValidationResult(checkpoint_id, False, ("does not exist",)))
            continue
        results.append(
            await validate_checkpoint_streaming_async(
                store, checkpoint_id, progress=progress.advance
            )
        )
    shares = await sharing(store, entries)
    rows = [
        {
            "id": result.checkpoint_id,
            "valid": result.valid,
            "issues": list(result.issues),
            "warnings": list(result.warnings),
            "state_size": state_size(entries, result.checkpoint_id),
            "parts": len(listed_parts(entries[result.checkpoint_id]))
            if result.checkpoint_id in entries
            else 0,
            **shares.get(
                result.checkpoint_id,
                {"exclusive_bytes": None, "shared_bytes": None, "shared_with_others_bytes": None},
            ),
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
    table.add_column("shared", justify="right")
    table.add_column("result", overflow="fold")
    for row in rows:
        if row["valid"]:
            result = Text("valid", style="green")
            if row["warnings"]:
                result.append(" (" + "; ".join(row["warnings"]) + ")", style="yellow")
        else:
            result = Text("INVALID: " + "; ".join(row["issues"]), style="bold red")
        state = size_text(row["state_size"])
        if row.get("parts"):
            state += f" in {row['parts']} parts"
        shared = size_text(row["shared_bytes"]) if row.get("shared_bytes") else "-"
        table.add_row(str(row["id"]), state, shared, result)
    console.print(table)
    bad = sum(1 for row in rows if not row["valid"])
    console.print(
        Text(f"all {len(rows)} valid", style="green")
        if not bad
        else Text(f"{bad} of {len(rows)} invalid", style="bold red")
    )


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

    Sidecars are hashed in ranged reads, never held whole, with a progress bar on a
    terminal. Exit 1 if any checked checkpoint is invalid or there is nothing to check.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with open_store(url, options) as store:
            return await verify_checkpoints(
                store, list(checkpoints or []), all_=all_, progress=progress
            )

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_verify)
