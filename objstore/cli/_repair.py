"""``objstore recover [--repair]`` and ``objstore cp``: the commands that move a pointer.

Both are thin over the library: the recovery walk and :func:`plan_pointer_repair` /
:func:`repair_pointer_async` for ``recover``, :func:`copy_checkpoint_async` for ``cp``.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from objstore.checkpoint import (
    AsyncCheckpointStore,
    PointerRepair,
    copy_checkpoint_async,
    plan_pointer_repair,
    quarantine_invalid_async,
    read_pointer_async,
    repair_pointer_async,
)
from objstore.cli._errors import CliError, ExitCode
from objstore.cli._options import (
    DryRunOption,
    JsonOption,
    StorageOption,
    UrlArgument,
    parse_checkpoint_id,
    parse_storage_options,
)
from objstore.cli._output import (
    ByteProgress,
    Outcome,
    iso_ms,
    pointer_line,
    ranges_text,
    run_command,
    size_text,
    when_text,
)
from objstore.cli._stores import list_entries, open_store, pointer_document, state_size
from objstore.errors import CorruptionError, PreconditionFailedError

__all__ = [
    "copy_checkpoints",
    "cp_command",
    "recover",
    "recover_command",
    "render_cp",
    "render_recover",
]


# -- recover ---------------------------------------------------------------------------------


def _repair_document(plan: PointerRepair, *, dry_run: bool) -> dict[str, Any]:
    return {
        "needed": plan.needed,
        "action": plan.action,
        "from": plan.from_id,
        "to": plan.target_id,
        "applied": False,
        "dry_run": dry_run,
        "reason": plan.reason,
    }


async def _apply(store: AsyncCheckpointStore, plan: PointerRepair) -> bool:
    """Apply a needed repair; whether it wrote. Refusals and lost races exit 3.

    Raises:
        CliError: (conflict, exit 3) if the plan is a refusal or the pointer moved meanwhile.
    """
    if not plan.needed:
        return False
    if plan.action == "refuse":
        raise CliError(ExitCode.CONFLICT, plan.reason)
    try:
        await repair_pointer_async(store, plan)
    except PreconditionFailedError as exc:
        raise CliError(ExitCode.CONFLICT, f"{exc}; re-run `objstore recover --repair`") from exc
    return True


async def recover(store: AsyncCheckpointStore, *, repair: bool, dry_run: bool) -> Outcome:
    """What a restart would restore, and optionally the pointer repaired to name it."""
    pointer = await read_pointer_async(store)  # before the walk: see plan_pointer_repair
    report = await store.recover_latest_validated()
    committed = {cid for cid, entry in (await list_entries(store)).items() if entry.committed}
    validity: dict[int, bool | None] = {
        cid: (False if cid in committed else None) for cid, _ in report.skipped
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
            "time": iso_ms(manifest.timestamp_ms),
            "source_offsets": manifest.source_offsets,
            "watermark": manifest.watermark,
            "state_size": manifest.state_size,
            "operators": [entry.name for entry in manifest.operator_states],
            "pending_sinks": manifest.pending_sinks,
        }
    plan = plan_pointer_repair(pointer, report)
    repair_doc = _repair_document(plan, dry_run=dry_run)
    quarantined = []
    if repair and not dry_run:
        repair_doc["applied"] = await _apply(store, plan)
        # Readers must stop returning what the walk found invalid, not only the pointer.
        quarantined = await quarantine_invalid_async(store, report)
    document = {
        "url": store.url,
        "chosen_id": report.chosen_id,
        "fresh_start": report.chosen_id is None,
        "restore": restore,
        "examined": list(report.examined),
        "skipped": [{"id": cid, "reason": reason} for cid, reason in report.skipped],
        "latest": pointer_document(pointer, validity, report.chosen_id),
        "repair": repair_doc,
        "quarantined": [{"id": q.checkpoint_id, "reason": q.reason} for q in quarantined],
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
                f" — epoch {restore['epoch']}, {when_text(restore['time'])} UTC, "
                f"source offsets {json.dumps(restore['source_offsets'], sort_keys=True)}, "
                f"state {size_text(restore['state_size'])}",
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
    console.print(pointer_line(document["latest"]))
    for item in document["quarantined"]:
        console.print(Text(f"quarantined {item['id']}: {item['reason']}", style="yellow"))
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
    backward only off a checkpoint found invalid or missing, and the invalid checkpoints
    newer than it are quarantined (manifest moved to quarantine/, sidecar kept) so readers
    stop returning them. Exit 1 when nothing is valid.
    """

    async def work(options: dict[str, Any], progress: ByteProgress) -> Outcome:
        async with open_store(url, options) as store:
            return await recover(store, repair=repair, dry_run=dry_run)

    run_command(
        work, json_output=json_output, storage_options=storage_option, render=render_recover
    )


# -- cp --------------------------------------------------------------------------------------


async def copy_checkpoints(
    src: AsyncCheckpointStore,
    dst: AsyncCheckpointStore,
    requested: list[str],
    *,
    all_: bool,
    progress: ByteProgress,
) -> Outcome:
    """Copy checkpoints (default: the newest valid one) in ascending order; each copy moves
    the destination's pointer forward only after it validates there, so it ends at the
    newest copied unless it already named a newer one.

    Raises:
        CliError: (usage) if both ``--id`` and ``--all`` are given; (invalid) if the source has no
            valid checkpoint.
    """
    if requested and all_:
        raise CliError(ExitCode.USAGE, "give --id or --all, not both")
    entries = await list_entries(src)
    ids: list[int]
    if all_:
        ids = sorted(cid for cid, entry in entries.items() if entry.committed)
    elif requested:
        ids = sorted({parse_checkpoint_id(item) for item in requested})
    else:
        newest = await src.newest_valid_id()
        if newest is None:
            raise CliError(ExitCode.INVALID, f"no valid checkpoint to copy in {src.url}")
        ids = [newest]
    # Each sidecar is read twice: from the source while copied, on the destination to validate.
    progress.start("copying", 2 * sum(state_size(entries, cid) or 0 for cid in ids))
    copied: list[int] = []
    present: list[int] = []
    skipped: list[dict[str, Any]] = []
    before: int | None = None
    moved = False
    for checkpoint_id in ids:
        if checkpoint_id not in entries or not entries[checkpoint_id].committed:
            skipped.append({"id": checkpoint_id, "reason": "not committed in the source"})
            continue
        try:
            result = await copy_checkpoint_async(src, dst, checkpoint_id, progress=progress.advance)
        except CorruptionError as exc:  # nothing of it was committed on the destination
            skipped.append({"id": checkpoint_id, "reason": exc.reason})
            continue
        if not copied and not present:
            before = result.pointer_before.checkpoint_id
        moved = moved or result.pointer_moved
        (copied if result.outcome == "copied" else present).append(checkpoint_id)
    done = copied + present
    pointer_doc: dict[str, Any] = {"before": None, "after": None, "moved": False}
    if done:
        pointer_doc = {"before": before, "after": max(done) if moved else before, "moved": moved}
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
    console.print(Text(f"copied and validated: {ranges_text(document['copied'])}", style="green"))
    if document["already_present"]:
        console.print(f"already present (same commit): {ranges_text(document['already_present'])}")
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
            open_store(src_url, src_options) as src,
            open_store(dst_url, dst_options, create=True) as dst,
        ):
            return await copy_checkpoints(src, dst, list(ids or []), all_=all_, progress=progress)

    every_option = [*(storage_option or []), *(src_option or []), *(dst_option or [])]
    run_command(work, json_output=json_output, storage_options=every_option, render=render_cp)
