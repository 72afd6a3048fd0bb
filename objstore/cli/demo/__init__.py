"""``objstore demo``: a word-count stream processor that crashes, recovers and proves
exactly-once state (see :mod:`objstore.cli.demo._scenario`).

Part of the command line, not of the library: it uses rich for its output, may start a moto
server, and crashes itself through :mod:`objstore.testing`'s fault injector — none of which
the core packages may import. ``_steps`` holds its pieces (stream, crash plan, processor,
reported steps), ``_scenario`` the run itself, ``_server`` the moto server for ``--s3``.
"""

from objstore.cli.demo._scenario import (
    DEFAULT_S3_URL,
    DEFAULT_URL,
    DemoResult,
    run_demo,
    run_demo_command,
)
from objstore.cli.demo._server import moto_s3
from objstore.cli.demo._steps import (
    CRASH_KINDS,
    MARKER,
    CrashPlan,
    DemoError,
    DemoStep,
    Reporter,
    format_step,
    generate_events,
    plan_crash,
)

__all__ = [
    "CRASH_KINDS",
    "DEFAULT_S3_URL",
    "DEFAULT_URL",
    "MARKER",
    "CrashPlan",
    "DemoError",
    "DemoResult",
    "DemoStep",
    "Reporter",
    "format_step",
    "generate_events",
    "moto_s3",
    "plan_crash",
    "run_demo",
    "run_demo_command",
]
