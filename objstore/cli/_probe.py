"""``objstore probe``: does a store enforce the preconditions fencing relies on?"""

from __future__ import annotations

import contextlib
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from objstore.backends import open_async_backend
from objstore.cli._errors import ExitCode
from objstore.cli._options import JsonOption, StorageOption, UrlArgument
from objstore.cli._output import ByteProgress, Outcome, run_command

__all__ = ["probe", "probe_command", "render_probe"]


async def probe(url: str, options: dict[str, Any]) -> Outcome:
    """Run the backend's capability probe on ``url`` (fencing not required to open it)."""
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

    run_command(work, json_output=json_output, storage_options=storage_option, render=render_probe)
