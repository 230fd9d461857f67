#!/usr/bin/env bash
# Set up .venv and run the embedded default: build a small random model and rollouts, trace them on
# the CPU, print the timing table and the most influential tokens. Outputs go to demo-output/.
#   bash scripts/demo.sh [OUT]        the worker on this machine
#   bash scripts/demo.sh --operator   the operator's story on the local cluster (hack/cluster.sh up,
#                                     the CRD, a bound volume, the operator as a local process, a trace
#                                     that runs out of memory on h100 and succeeds on h200)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [[ "${1:-}" == "--operator" ]]; then
  exec .venv/bin/python hack/record_transcripts.py --demo --work "${2:-/tmp/influence-trace-operator-demo}"
fi
.venv/bin/influence-trace demo --out "${1:-demo-output}"
