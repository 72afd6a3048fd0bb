"""The import rules ``.ci/run`` enforces with ``lint-imports`` (``[tool.importlinter]`` in
pyproject.toml): they hold for the package, and each contract breaks when a copy of the
package is given the import it forbids — so a rule cannot silently stop checking anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(where: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` with the project's contracts on the ``objstore`` found in ``where``."""
    args = [str(LINT_IMPORTS), str(CONFIG), "--no-cache"]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(
        args,
        cwd=where,
        env={**os.environ, "PYTHONPATH": str(where)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_package_keeps_every_contract() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 kept, 0 broken" in done.stdout


VIOLATIONS = [
    # (contract id, file to change, line appended)
    ("core-is-library", "objstore/codec.py", "import objstore.testing"),
    ("core-is-library", "objstore/errors.py", "import rich"),
    ("core-is-library", "objstore/backends/_memory.py", "import objstore.cli"),
    ("core-is-library", "objstore/kv/_store.py", "import eventsourcing"),
    ("core-is-library", "objstore/snapshots.py", "import objstore.eventsourcing"),
    ("eventsourcing-is-library", "objstore/eventsourcing/_view.py", "import objstore.testing"),
    ("eventsourcing-is-library", "objstore/eventsourcing/_recorder.py", "import boto3"),
    ("root-is-library", "objstore/__init__.py", "import typer"),
    ("root-is-library", "objstore/__init__.py", "import objstore.eventsourcing"),
    ("layers", "objstore/checkpoint/_store.py", "import objstore.eventsourcing"),
    ("layers", "objstore/backends/_memory.py", "import objstore.codec"),
    ("layers", "objstore/codec.py", "import objstore.kv"),
    ("layers", "objstore/errors.py", "import objstore._loop"),
    ("layers", "objstore/newthing.py", "import objstore.errors"),  # no layer given
    ("private-modules", "objstore/cli/_list.py", "import objstore.checkpoint._plan"),
    ("private-modules", "objstore/sources.py", "import objstore.backends._base"),
    ("private-modules", "objstore/testing/simulate.py", "import objstore.testing._sim._kv"),
]


@pytest.mark.parametrize(
    ("contract", "path", "line"), VIOLATIONS, ids=[f"{c}:{p}" for c, p, _ in VIOLATIONS]
)
def test_each_contract_breaks_on_the_import_it_forbids(
    contract: str, path: str, line: str, tmp_path: Path
) -> None:
    shutil.copytree(
        ROOT / "objstore", tmp_path / "objstore", ignore=shutil.ignore_patterns("__pycache__")
    )
    assert lint_imports(tmp_path, contract).returncode == 0  # the copy keeps it
    target = tmp_path / path
    before = target.read_text() if target.exists() else ""
    target.write_text(before + f"\n{line}  # noqa\n")
    done = lint_imports(tmp_path, contract)
    assert done.returncode != 0, done.stdout
    assert "BROKEN" in done.stdout
