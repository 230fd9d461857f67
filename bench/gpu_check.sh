#!/usr/bin/env bash
# The first thing to run whenever a GPU machine is at hand (about 8 minutes on one H100):
#   1. the CUDA tests (pytest -m gpu): pinned staging and transfers, the TF32 switch, the measured
#      capture batch and the running peak, one NCCL process group, a CUDA run against the CPU float64
#      reference on the tiny model;
#   2. bench/seed_table.py with Qwen2.5-1.5B's shapes at factors 64 and 32 (per_prompt) on a token
#      count that fits the slot: per-stage seconds, the Hessian stage's TFLOP/s against the dense TF32
#      peak, max_memory_allocated against the memory model, extrapolated to 733,870 tokens.
# Results are appended to bench/RESULTS.md (device, date and command in the heading).
#
#   bench/gpu_check.sh              # on the GPU machine, from the repository root
#   bench/gpu_check.sh --dry-run    # the same script on the CPU with the tiny model (a minute or two;
#                                   # tests/bench/test_gpu_check.py runs it, so CI exercises it)
# Environment: PYTHON (default .venv/bin/python), GPU_CHECK_RESULTS (default bench/RESULTS.md),
# GPU_CHECK_TOKENS (default 61152: 2 prompts x 8 responses x 3,822 tokens).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PYTHON=${PYTHON:-.venv/bin/python}
RESULTS=${GPU_CHECK_RESULTS:-bench/RESULTS.md}
export PYTHONPATH="$PWD/worker:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
LOG=$(mktemp -t gpu-check.XXXXXX)
trap 'rm -f "$LOG"' EXIT

if [[ $DRY == 1 ]]; then
  # Generous limits: the dry run checks the script, not the speed of a shared CPU machine.
  DEVICE=cpu SHAPES=tiny TOKENS=480 RESPONSE_LEN=30 GROUP=4 TEST_LIMIT=600 TABLE_LIMIT=1200
else
  DEVICE=cuda SHAPES=qwen2.5-1.5b TOKENS=${GPU_CHECK_TOKENS:-61152} RESPONSE_LEN=3822 GROUP=8
  TEST_LIMIT=150 TABLE_LIMIT=330
  "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: use --dry-run")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

echo "== 1. pytest -m gpu (limit ${TEST_LIMIT} s)"
set +e
timeout "$TEST_LIMIT" "$PYTHON" -m pytest -m gpu -q -rs -p no:cacheprovider tests/gpu 2>&1 | tee "$LOG"
TESTS=${PIPESTATUS[0]}
set -e
# On the CPU every GPU test is skipped (exit 0, "skipped" with the reason); on a GPU each must pass.
TESTS_LINE=$(grep -E '(passed|failed|skipped|error)' "$LOG" | tail -1)

echo "== 2. bench/seed_table.py --shapes $SHAPES --tokens $TOKENS (limit ${TABLE_LIMIT} s)"
TABLE=$(mktemp -t gpu-check-table.XXXXXX)
set +e
timeout "$TABLE_LIMIT" "$PYTHON" bench/seed_table.py --shapes "$SHAPES" --device "$DEVICE" \
  --tokens "$TOKENS" --response-len "$RESPONSE_LEN" --group "$GROUP" --factors 64 32 \
  --scopes per_prompt --out "$TABLE"
BENCH=$?
set -e

{
  echo
  echo "## GPU check ($([[ $DRY == 1 ]] && echo 'CPU dry run' || echo "$DEVICE")), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "\`bench/gpu_check.sh $*\` on $(hostname): pytest -m gpu exit $TESTS (${TESTS_LINE:-no summary});"
  echo "seed table exit $BENCH."
  cat "$TABLE"
} >> "$RESULTS"
rm -f "$TABLE"
echo "== appended to $RESULTS"
if [[ $TESTS != 0 || $BENCH != 0 ]]; then
  echo "gpu_check: FAILED (pytest $TESTS, seed table $BENCH)" >&2
  exit 1
fi
echo "gpu_check: ok"
