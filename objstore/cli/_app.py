"""The Typer application: global options, usage errors as one line, and the command table."""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
import typer.core

from objstore import __version__
from objstore.cli._cleanup import gc_command, prune_command
from objstore.cli._demo import demo_command
from objstore.cli._errors import ExitCode, fail
from objstore.cli._inspect import show_command, verify_command
from objstore.cli._list import ls_command
from objstore.cli._options import UnsafeSkipFencingOption
from objstore.cli._probe import probe_command
from objstore.cli._remove import rm_command
from objstore.cli._repair import cp_command, recover_command
from objstore.cli._stores import set_verify_fencing

__all__ = ["app", "installed_version", "main"]


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
            sys.exit(fail(getattr(exc, "exit_code", ExitCode.USAGE), message).exit_code)
        except typer.Abort:
            sys.exit(fail(130, "aborted").exit_code)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    name="objstore",
    cls=_OneLineErrors,
    help="Inspect, verify, recover, repair, prune, gc, remove and copy objstore checkpoints.\n\n"
    "Exit codes: 0 ok; 1 nothing valid or corruption found; 2 usage error; "
    "3 conflict or fenced; 4 store does not enforce preconditions; 5 storage error.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def installed_version() -> str:
    """objstore's version as installed (package metadata); the source's own when run from a
    checkout that is not installed."""
    try:
        return importlib.metadata.version("objstore")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"objstore {installed_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Log objstore's requests and retries on stderr.")
    ] = False,
    unsafe_skip_fencing_check: UnsafeSkipFencingOption = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version_callback, is_eager=True, help="Show the version."
        ),
    ] = False,
) -> None:
    """Crash-safe, fenced checkpoints on S3, GCS or a local directory."""
    set_verify_fencing(not unsafe_skip_fencing_check)
    logger = logging.getLogger("objstore")
    for previous in [h for h in logger.handlers if getattr(h, "objstore_cli", False)]:
        logger.removeHandler(previous)  # from an earlier run in this process
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logger.setLevel(logging.DEBUG)  # every request (objstore.backends._observe)
    else:
        # Library warnings are summarised in each command's report; keep stderr to one line.
        handler = logging.NullHandler()
        logger.setLevel(logging.NOTSET)  # undo an earlier -v run in this process
    setattr(handler, "objstore_cli", True)  # noqa: B010 - a marker attribute, not typed
    logger.addHandler(handler)


# The commands, in the order ``objstore --help`` lists them.
app.command("ls")(ls_command)
app.command("show")(show_command)
app.command("verify")(verify_command)
app.command("recover")(recover_command)
app.command("prune")(prune_command)
app.command("gc")(gc_command)
app.command("rm")(rm_command)
app.command("cp")(cp_command)
app.command("probe")(probe_command)
app.command("demo")(demo_command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: ``objstore`` / ``python -m objstore``."""
    app(args=argv, prog_name="objstore")
