"""``objstore rm``: remove checkpoints by id, a dry run unless ``--yes``.

Thin over :func:`~objstore.checkpoint.remove_checkpoints_async`, which refuses to remove the
newest valid checkpoint (or an uncommitted one) without ``--force``, deletes each manifest
before its sidecar, and moves ``latest.txt`` off what it removed.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from objstore.checkpoint import (
    AsyncCheckpointStore,
    RemovalRefused,
    read_pointer_async,
    remove_checkpoints_async,
)
from objstore.cli._errors import ExitCode, print_error
from objstore.cli._options import JsonOption, StorageOption, UrlArgument, parse_checkpoint_id
from objstore.cli._output import ByteProgress, Outcome, ranges_text, run_command
from objstore.cli._stores import open_store

__all__ = ["remove", "render_rm", "rm_command"]


async def remove(
    store: AsyncCheckpointStore, requested: list[str], *, yes: bool, force: bool
) -> Outcome:
    """Plan the removal of ``requested`` and, with ``yes``, do it. A refusal (see
    :func:`~objstore.checkpoint.plan_removal`) exits 2 having deleted nothing."""
    ids = [parse_checkpoint_id(item) for item in requested]
    try:
        removal = await remove_checkpoints_async(store, ids, force=force, dry_run=not yes)
    except RemovalRefused as refusal:
        removal = refusal.removal
    after = None
    if removal.removed:
        after = (await read_pointer_async(store)).checkpoint_id
    before = removal.pointer_before.checkpoint_id
    document = {
        "url": store.url,
        "dry_run": not yes,
        "force": force,
        "requested": list(removal.requested),
        "planned": list(removal.planned),
        "absent": list(removal.absent),
        "removed": list(removal.removed),
        "newest_valid_id": removal.newest_valid_id,
        "refused": removal.refused,
        "latest": {
            "before": before,
            "after": after if removal.removed else before,
            "moved": bool(removal.removed) and after != before,
        },
    }
    return Outcome(document, ExitCode.OK if removal.refused is None else ExitCode.USAGE)


def _count(ids: list[int]) -> str:
    return f"{len(ids):,} checkpoint{'' if len(ids) == 1 else 's'}: {ranges_text(ids)}"


def render_rm(console: Console, document: dict[str, Any]) -> None:
    """Human view of ``objstore rm``; a refusal is also the one error line on stderr."""
    planned, removed = document["planned"], document["removed"]
    latest = document["latest"]
    if document["absent"]:
        console.print(f"nothing stored under {ranges_text(document['absent'])}")
    if document["refused"]:
        if planned:
            console.print(f"would remove {_count(planned)} (refused)")
        print_error(f"{document['refused']}; pass --force to remove anyway")
        return
    if not planned:
        console.print("nothing to remove")
    elif document["dry_run"]:
        console.print(Text(f"dry run: would remove {_count(planned)}", style="yellow"))
        if latest["before"] in planned:
            console.print(
                f"latest.txt would move off checkpoint {latest['before']} to the newest valid "
                "checkpoint left"
            )
        console.print("run again with --yes to remove them")
    else:
        console.print(Text(f"removed {_count(removed)}", style="green"))
        if latest["moved"]:
            console.print(f"latest.txt moved: {latest['before']} → {latest['after'] or '-'}")
        elif latest["before"] in removed:
            console.print(
                Text(
                    f"latest.txt still names removed checkpoint {latest['before']}: nothing "
                    "valid is left to point at (a restart starts fresh)",
                    style="bold red",
                )
            )


def rm_command(
    url: UrlArgument,
    checkpoints: Annotated[
        list[str],
        typer.Argument(metavar="ID...", help="Checkpoint ids to remove.", show_default=False),
    ],
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Remove them; without it, only show the plan.")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Also remove the newest valid checkpoint or an uncommitted one (a live "
            "writer's?): a restart may then fall back to an older checkpoint or start fresh.",
        ),
    ] = False,
    json_output: JsonOption = False,
    storage_option: StorageOption = None,
) -> None:
    """Remove checkpoints by id (e.g. a corrupt newest one); a dry run unless --yes.

    The newest valid checkpoint and uncommitted ones are kept unless --force (exit 2).
    Each manifest goes before its sidecar, so a crash leaves at worst an orphan for gc;
    latest.txt is then moved off a removed checkpoint by compare-and-swap. Ids with nothing
    stored are reported, not an error.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with open_store(url, options) as store:
            return await remove(store, list(checkpoints), yes=yes, force=force)

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_rm)
