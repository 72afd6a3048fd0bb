"""Running a command and printing what it found: one JSON document, or its rich view.

Each command first computes a JSON-ready document (:class:`Outcome`) and only then renders
it, so the human and the machine output cannot disagree.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.filesize import decimal as human_size
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from objstore.cli._errors import ExitCode, classify_error, fail
from objstore.cli._options import parse_storage_options, secret_values

__all__ = [
    "ByteProgress",
    "Outcome",
    "Render",
    "Work",
    "iso",
    "iso_ms",
    "pointer_line",
    "ranges_text",
    "run_command",
    "stdout_closed",
    "size_text",
    "stdout_console",
    "want_progress",
    "when_text",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a command found: the JSON document (rendered for humans too) and its exit code."""

    document: dict[str, Any]
    code: ExitCode = ExitCode.OK


class _StdoutConsole(Console):
    """A console that goes quiet when its reader leaves, instead of exiting with 1."""

    def on_broken_pipe(self) -> None:
        """Stop printing; the command's exit code stands (see :func:`stdout_closed`)."""
        self.quiet = True
        _discard_stdout()


def stdout_console() -> Console:
    """The console human views are printed on."""
    return _StdoutConsole(highlight=False, soft_wrap=True)


def iso(seconds: float | None) -> str | None:
    """Seconds since the epoch as ISO 8601 UTC with milliseconds (``…Z``)."""
    if seconds is None:
        return None
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_ms(timestamp_ms: int | None) -> str | None:
    """:func:`iso` of a millisecond timestamp."""
    return None if timestamp_ms is None else iso(timestamp_ms / 1000)


def when_text(document_time: str | None) -> str:
    """A document's ISO time, shortened for a table cell."""
    return "-" if document_time is None else document_time.replace("T", " ").rstrip("Z")[:19]


def size_text(value: int | None) -> str:
    """A byte count for a table cell."""
    if value is None:
        return "-"
    return f"{value} B" if value < 1000 else human_size(value)


_RANGE_DASH = "\u2013"


def ranges_text(ids: Iterable[int]) -> str:
    """Checkpoint ids as runs joined by an en dash, for a line that stays short however many
    there are: ids 1 to 9,998 and 10,000 read ``1\u20139,998, 10,000``. (``--json`` keeps
    the full lists.)"""
    ordered = sorted(set(ids))
    runs: list[str] = []
    start = 0
    for index in range(1, len(ordered) + 1):
        if index < len(ordered) and ordered[index] == ordered[index - 1] + 1:
            continue
        first, last = ordered[start], ordered[index - 1]
        if last - first < 2:  # one id, or two: listed as they are
            runs.extend(f"{cid:,}" for cid in ordered[start:index])
        else:
            runs.append(f"{first:,}{_RANGE_DASH}{last:,}")
        start = index
    return ", ".join(runs) or "-"


def pointer_line(pointer: dict[str, Any]) -> Text:
    """The line describing ``latest.txt`` (its document as made by ``pointer_document``)."""
    style = "green" if pointer["state"] == "ok" else "yellow"
    return Text.assemble(
        ("latest.txt ", "bold"), pointer["detail"], (f" [{pointer['state']}]", style)
    )


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
        """Record ``count`` more bytes done (the library's progress callback)."""
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, count)


def want_progress(json_output: bool) -> bool:
    """Whether to draw a progress bar: only on a terminal, never with ``--json``."""
    return not json_output and Console(stderr=True).is_terminal


Work = Callable[[dict[str, Any], ByteProgress], Coroutine[Any, Any, Outcome]]
"""A command's work: given the parsed storage options and a progress bar, its outcome."""
Render = Callable[[Console, dict[str, Any]], None]
"""A command's human view of its document."""


@contextlib.contextmanager
def expected_failures(storage_options: list[str] | None) -> Iterator[dict[str, Any]]:
    """Parse ``--storage-option`` values and run the block; an expected failure (see
    :func:`classify_error`) becomes one line on stderr and its exit code, with option values
    masked; anything unclassified is a bug and propagates with its traceback.

    Raises:
        fail: (a ``typer.Exit``) for an expected failure or an interrupt (exit code 130); anything
            unclassified is re-raised as it is.
    """
    secrets: list[str] = []
    try:
        options = parse_storage_options(storage_options or [])
        secrets = secret_values(options)
        yield options
    except KeyboardInterrupt:
        raise fail(130, "interrupted") from None
    except Exception as exc:
        classified = classify_error(exc)
        if classified is None:
            raise
        raise fail(classified[0], classified[1], secrets) from None


def run_command(
    work: Work, *, json_output: bool, storage_options: list[str] | None, render: Render
) -> NoReturn:
    """Run one command: parse options, run ``work`` on a fresh event loop, print, exit.

    Expected failures exit with their code after one line on stderr (storage option values
    masked); anything unclassified is a bug and propagates with its traceback.

    Raises:
        Exit: always, with the command's exit code.
    """
    with (
        expected_failures(storage_options) as options,
        ByteProgress(want_progress(json_output)) as progress,
    ):
        outcome = asyncio.run(work(options, progress))
    with stdout_closed():
        if json_output:
            sys.stdout.write(json.dumps(outcome.document, indent=2, default=str) + "\n")
        else:
            render(stdout_console(), outcome.document)
        sys.stdout.flush()
    raise typer.Exit(int(outcome.code))


@contextlib.contextmanager
def stdout_closed() -> Iterator[None]:
    """Stop printing, quietly, once the reader of stdout has gone (``objstore ls | head``).

    The command's work is done and its exit code stands: a closed pipe is the reader's
    choice, not a failure. Later writes (and the flush at exit) go to ``/dev/null``.
    """
    try:
        yield
    except BrokenPipeError:
        _discard_stdout()


def _discard_stdout() -> None:
    """Send whatever is still written to stdout, and its flush at exit, to ``/dev/null``."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
