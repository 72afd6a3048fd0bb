#!/usr/bin/env bash
# Re-resolve the test environment with a current pip in a throw-away venv and write the exact
# versions to constraints/test.txt. Run after changing dependencies in pyproject.toml, then
# run .ci/run to prove the new set installs with the venv's own pip and passes.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q -U pip
"$scratch/venv/bin/pip" install -q -e ".[test]"
{
    echo "# Exact versions of the test environment, resolved together and tested by .ci/run."
    echo "# Regenerate with constraints/update.sh after changing a dependency in pyproject.toml."
    "$scratch/venv/bin/pip" freeze --exclude-editable | grep -v '^objstore'
} > constraints/test.txt
rm -rf "$scratch"
echo "wrote constraints/test.txt ($(grep -vc '^#' constraints/test.txt) packages)"
