"""``objstore demo``: the command-line wiring of :mod:`objstore.cli.demo`.

The demo reports its steps as they happen rather than as one document at the end, so it
prints them itself instead of going through :func:`~objstore.cli._output.run_command`; its
failures are classified the same way.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from objstore.cli._errors import CliError, ExitCode
from objstore.cli._options import JsonOption, StorageOption
from objstore.cli._output import expected_failures, stdout_closed, stdout_console

__all__ = ["MAX_CHECKPOINTS", "MAX_EVENTS", "MAX_SEED", "demo_command"]

MAX_EVENTS = 10_000_000
"""The longest stream ``--events`` accepts (the demo holds it in memory)."""
MAX_CHECKPOINTS = 10_000
"""The most checkpoints ``--events``/``--every`` may ask for: each is a few real writes."""
MAX_SEED = 2**64 - 1


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
    events: Annotated[
        int, typer.Option("--events", min=2, max=MAX_EVENTS, help="Events in the stream.")
    ] = 1000,
    every: Annotated[
        int, typer.Option("--every", min=1, max=MAX_EVENTS, help="Checkpoint every N events.")
    ] = 100,
    seed: Annotated[
        int | None,
        typer.Option("--seed", min=0, max=MAX_SEED, help="Makes the crash reproducible."),
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

    \f

    Raises:
        CliError: (usage) if the run would need more checkpoints than a store can hold.
        Exit: always, with code 0 when the results match and 1 when they do not.
    """
    from objstore.cli import demo  # imported on use: the other commands never need it

    console = stdout_console()
    steps: list[dict[str, Any]] = []

    def report(step: demo.DemoStep) -> None:
        steps.append(step.to_json())
        if not json_output:
            with stdout_closed():
                console.print(demo.format_step(step))

    with expected_failures(storage_option) as options:
        if -(-events // every) > MAX_CHECKPOINTS:
            raise CliError(
                ExitCode.USAGE,
                f"--events {events} --every {every} asks for more than {MAX_CHECKPOINTS:,} "
                "checkpoints: checkpoint less often",
            )
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
    if json_output:
        with stdout_closed():
            sys.stdout.write(json.dumps({**result.to_json(), "steps": steps}, indent=2) + "\n")
            sys.stdout.flush()
    raise typer.Exit(int(ExitCode.OK if result.exactly_once else ExitCode.INVALID))
