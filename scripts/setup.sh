#!/usr/bin/env bash
# Create .venv at the repository root and install the project (worker, operator and dev extras) with the
# exact versions in constraints.txt. Idempotent: a second run only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.influence-trace-installed
want=$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install --quiet --upgrade "pip==26.3"
  .venv/bin/python -m pip install --quiet -c constraints.txt -e ".[worker,operator,dev]"
  echo "$want" > "$stamp"
fi
.venv/bin/influence-trace --help >/dev/null
