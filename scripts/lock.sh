#!/usr/bin/env bash
# Regenerates constraints.txt, the exact versions the README commands install, from the
# compatible ranges in pyproject.toml: resolve them in a fresh venv and freeze the result.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q -e '.[test,bench]'
{
  echo "# The exact versions the README commands install (pip install -c constraints.txt ...);"
  echo "# pyproject.toml holds the compatible ranges. Regenerate with scripts/lock.sh."
  "$venv/bin/pip" freeze --exclude-editable
} > constraints.txt
