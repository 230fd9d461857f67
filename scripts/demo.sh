#!/usr/bin/env bash
# Set up .venv and run the embedded default: build a small random model and rollouts, trace them on
# the CPU, print the timing table and the most influential tokens. Outputs go to demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/influence-trace demo --out "${1:-demo-output}"
