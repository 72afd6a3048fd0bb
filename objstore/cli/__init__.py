"""The ``objstore`` command: inspect, verify, recover, repair, prune, gc, remove and copy
checkpoints.

Every command takes a store URL (a local path, ``file:///abs/path``, ``s3://bucket/prefix``,
``gs://bucket/prefix``), prints rich tables by default and exactly one JSON document on stdout
with ``--json``. Expected failures print one line on stderr and exit with a documented code:

====  ================================================================================
0     ok
1     nothing valid, or corruption found
2     usage error: bad arguments, bad URL, bad ``--storage-option``
3     conflict or fenced: another writer won, or ``latest.txt`` moved under us
4     the store does not enforce write preconditions (see ``objstore probe``)
5     storage failing or unreachable: I/O error after retries, missing bucket, credentials
====  ================================================================================

Code 5 is kept apart from 1 on purpose: a recovery script that reads "1" as "nothing valid,
start fresh" must never get there because the network was down.

The commands only present what the library does (pointer repair, streamed validation and
copies live in :mod:`objstore.checkpoint`). Modules: ``_app`` (the Typer app, global options,
the command table), ``_errors`` (exit codes and the error → exit code mapping), ``_options``
(parsing what users type), ``_output`` (running a command, JSON and rich output, progress),
``_stores`` (store access shared by commands), and one module per group of commands:
``_list`` (ls), ``_inspect`` (show, verify), ``_repair`` (recover, cp), ``_cleanup`` (prune,
gc), ``_remove`` (rm), ``_probe`` and ``_demo`` (the ``demo`` package holds the scenario it runs).
"""

from objstore.cli._app import app, main
from objstore.cli._errors import CliError, ExitCode, classify_error
from objstore.cli._options import parse_duration, parse_storage_options

__all__ = [
    "CliError",
    "ExitCode",
    "app",
    "classify_error",
    "main",
    "parse_duration",
    "parse_storage_options",
]
