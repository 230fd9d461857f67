#!/usr/bin/env bash
# Set up .venv and run every check: ruff, the CRD freshness check and the whole pytest suite. Tests of
# the operator and the control plane bring up the local cluster themselves (hack/cluster.sh up), building
# its binaries on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
