"""``objstore prune`` and ``objstore gc``: deleting what is no longer needed, never what is.

The library decides and deletes (:meth:`~objstore.checkpoint.AsyncCheckpointStore.prune`,
:meth:`~objstore.checkpoint.AsyncCheckpointStore.cleanup_orphans`); these commands show the
plan first, and with ``--dry-run`` only the plan. Their JSON names ``planned`` (what the
plan chose) apart from ``deleted`` (what is gone afterwards: empty on a dry run); the tables
print ids as ranges, so 10,000 deleted checkpoints still make one short line.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from objstore.checkpoint import MAX_CHECKPOINT_ID, AsyncCheckpointStore
from objstore.cli._errors import ExitCode
from objstore.cli._options import (
    DryRunOption,
    JsonOption,
    StorageOption,
    UrlArgument,
    parse_duration,
)
from objstore.cli._output import ByteProgress, Outcome, ranges_text, run_command, size_text
from objstore.cli._stores import open_store

__all__ = ["gc", "gc_command", "prune", "prune_command", "render_gc", "render_prune"]


# -- prune -----------------------------------------------------------------------------------


async def prune(store: AsyncCheckpointStore, keep: int, *, dry_run: bool) -> Outcome:
    """Keep the ``keep`` newest committed checkpoints (and the newest valid one, always);
    delete the rest, manifest first. Renders the store's own result: one plan, and the
    report says what that plan deleted."""
    result = await store.prune(keep, dry_run=dry_run)
    document = {
        "url": store.url,
        "keep": keep,
        "dry_run": dry_run,
        "newest_valid_id": result.anchor_id,
        "committed": list(result.committed),
        "planned": list(result.planned),
        "deleted": list(result.deleted),
        "deleted_count": len(result.deleted),
        "kept": list(result.kept),
        "refused": (
            "no valid checkpoint: prune deletes nothing until an operator has looked"
            if result.refused
            else None
        ),
    }
    return Outcome(document, ExitCode.INVALID if result.refused else ExitCode.OK)


def render_prune(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore prune``: ids as ranges (``--json`` has every id)."""
    if document["refused"]:
        console.print(Text(f"prune refused: {document['refused']}", style="bold red"))
        return
    dry_run = document["dry_run"]
    ids = document["planned"] if dry_run else document["deleted"]
    if not document["planned"]:
        console.print(
            f"nothing to prune: {len(document['committed'])} committed, keeping {document['keep']}"
        )
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(ids):,} checkpoints: {ranges_text(ids)}")
    missed = sorted(set(document["planned"]) - set(ids))
    if missed:
        console.print(Text(f"not deleted: {ranges_text(missed)}", style="yellow"))
    console.print(f"kept {len(document['kept']):,}: {ranges_text(document['kept'])}")


def prune_command(
    url: UrlArgument,
    keep: Annotated[
        int,
        typer.Option(
            "--keep",
            min=1,
            max=MAX_CHECKPOINT_ID,
            help="How many newest committed checkpoints to keep.",
        ),
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
        async with open_store(url, options) as store:
            return await prune(store, keep, dry_run=dry_run)

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_prune)


# -- gc --------------------------------------------------------------------------------------


async def gc(store: AsyncCheckpointStore, grace_seconds: float | None, *, dry_run: bool) -> Outcome:
    """Delete orphaned sidecars no live writer can still commit; list the ones kept. Ages
    are the store's (its clock, as the cleanup judged them), never this machine's."""
    result = await store.cleanup_orphans(grace_seconds, dry_run=dry_run)
    orphans = []
    for orphan in result.orphans:
        age = result.age_of(orphan)
        orphans.append(
            {
                "id": orphan.checkpoint_id,
                "size": orphan.size,
                "age_seconds": None if age is None else round(age, 3),
                "eligible": orphan.eligible,
            }
        )
    shared = await store.collect_shared(grace_seconds, dry_run=dry_run)
    document = {
        "url": store.url,
        "grace_seconds": result.grace_seconds,
        "dry_run": dry_run,
        "orphans": orphans,
        "planned": list(result.planned),
        "deleted": list(result.deleted),
        "deleted_count": len(result.deleted),
        "shared": {
            "listed": shared.listed,
            "referenced": shared.referenced,
            "planned": list(shared.planned),
            "deleted": list(shared.deleted),
            "reclaimed_bytes": shared.reclaimed_bytes,
            "aborted": shared.aborted,
        },
    }
    return Outcome(document)


def render_gc(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore gc``."""
    _render_shared(console, document)
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
            size_text(orphan["size"]),
            "-" if age is None else f"{age:.0f}s",
            Text(verb, style="red")
            if orphan["eligible"]
            else Text("kept: a live writer may still commit it", style="dim"),
        )
    console.print(table)
    count = len(document["planned"] if document["dry_run"] else document["deleted"])
    console.print(f"{verb} {count:,} orphaned checkpoints (grace {document['grace_seconds']:g}s)")


def _render_shared(console: Console, document: dict[str, Any]) -> None:
    """The shared-object part of ``objstore gc`` (incremental checkpoints' chunks)."""
    shared = document.get("shared")
    if not shared or not shared["listed"]:
        return
    verb = "would delete" if document["dry_run"] else "deleted"
    count = len(shared["planned"] if document["dry_run"] else shared["deleted"])
    line = (
        f"shared objects: {shared['listed']:,} listed, {shared['referenced']:,} referenced by "
        f"retained checkpoints; {verb} {count:,}"
    )
    if not document["dry_run"]:
        line += f" ({size_text(shared['reclaimed_bytes'])})"
    if shared["aborted"]:
        line += f"; stopped: {shared['aborted']}"
    console.print(line)


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
    """Delete orphaned sidecars (no manifest) that no live writer can still commit, and
    shared objects (incremental checkpoints) that no retained checkpoint references."""

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        grace_seconds = None if grace is None else parse_duration(grace)
        async with open_store(url, options) as store:
            return await gc(store, grace_seconds, dry_run=dry_run)

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_gc)
