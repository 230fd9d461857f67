#!/usr/bin/env bash
# The first thing to run whenever a GPU machine is at hand (about 12 minutes on one H100):
#   1. the CUDA tests (pytest -m gpu): pinned staging and transfers, the TF32 switch, the measured
#      capture batch and the running peak, one NCCL process group, CUDA runs (both kernel strategies,
#      the Gram path reached, default bf16/TF32 precision) against the CPU float64 reference on the
#      tiny model, and where two GPUs exist two ranks exchanging over NCCL;
#   2. bench/seed_table.py with Qwen2.5-1.5B's shapes at factors 64 and 32, per_prompt and
#      all_selected, 3,822-token responses, on a token count that fits the slot; then factor 32
#      all_selected with 128-token responses: per-stage seconds, hessian_solve's real flop rate and the
#      Gram GEMM's share at the dense TF32 peak, max_memory_allocated against the memory model,
#      extrapolated to 733,870 tokens;
#   3. bench/kernel_launches.py: the GPU strategy's kernel launches extrapolated to the seed workload;
#   4. where two GPUs exist, bench/exchange_overlap.py --device cuda: a two-rank trace exchanging over
#      NCCL into the buffers the Hessian reads, with the rounds overlapped with the Hessian work and
#      not (the slowest rank's stage seconds, and the same scores both ways); skipped, saying why,
#      with fewer GPUs (and in the dry run).
# It FAILS (exit 1, after recording) when a test fails or pytest printed no summary (a timeout, a
# CUDA/NCCL abort), when the memory model is off the measured peak by more than 10%, when
# hessian_solve extrapolated to 733,870 tokens exceeds 60 s (GPU only), when hessian_solve or
# token_scoring would launch more than 100,000 kernels at the seed workload, or when the two-GPU
# exchange fails or its overlap changes the scores.
# Results are appended to bench/RESULTS.md (device, date and command in the heading).
#
#   bench/gpu_check.sh              # on the GPU machine, from the repository root
#   bench/gpu_check.sh --dry-run    # the same script on the CPU with the tiny model (a few minutes;
#                                   # tests/bench/test_gpu_check.py runs it, so CI exercises it)
# Environment: PYTHON (default .venv/bin/python), GPU_CHECK_RESULTS (default bench/RESULTS.md),
# GPU_CHECK_TOKENS (default 61152: 2 prompts x 8 responses x 3,822 tokens), GPU_CHECK_STEPS (default
# "tests table short launches exchange"), GPU_CHECK_PYTEST (the test command; tests of this script
# replace it).
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
PYTHON=${PYTHON:-.venv/bin/python}
RESULTS=${GPU_CHECK_RESULTS:-bench/RESULTS.md}
export PYTHONPATH="$PWD/worker:$PWD/operator${PYTHONPATH:+:$PYTHONPATH}"
LOG=$(mktemp -t gpu-check.XXXXXX)

STEPS=${GPU_CHECK_STEPS:-tests table short launches exchange}
if [[ $DRY == 1 ]]; then
  # Generous limits: the dry run checks the script, not the speed of a shared CPU machine.
  DEVICE=cpu SHAPES=tiny TOKENS=480 RESPONSE_LEN=30 SHORT_LEN=8 GROUP=4 TEST_LIMIT=600 TABLE_LIMIT=1200
  MAX_HESSIAN=0 LAUNCH_SCALE=8192  # no time limit on a CPU; launches counted at a coarser scale
else
  DEVICE=cuda SHAPES=qwen2.5-1.5b TOKENS=${GPU_CHECK_TOKENS:-61152} RESPONSE_LEN=3822 SHORT_LEN=128 GROUP=8
  TEST_LIMIT=150 TABLE_LIMIT=420 MAX_HESSIAN=60 LAUNCH_SCALE=1024
  "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "no CUDA device: use --dry-run")'
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi

read -r -a PYTEST <<< "${GPU_CHECK_PYTEST:-$PYTHON -m pytest}"
TABLE=$(mktemp -t gpu-check-table.XXXXXX) SHORT=$(mktemp -t gpu-check-short.XXXXXX)
LAUNCHES=$(mktemp -t gpu-check-launches.XXXXXX) EXCHANGE_OUT=$(mktemp -t gpu-check-exchange.XXXXXX)
trap 'rm -f "$LOG" "$TABLE" "$SHORT" "$LAUNCHES" "$EXCHANGE_OUT"' EXIT
TESTS=skipped BENCH=skipped BENCH_SHORT=skipped LAUNCH=skipped EXCHANGE=skipped TESTS_LINE="not run"
EXCHANGE_LINE="not run"
has() { [[ " $STEPS " == *" $1 "* ]]; }

if has tests; then
  echo "== 1. pytest -m gpu (limit ${TEST_LIMIT} s)"
  set +e
  timeout "$TEST_LIMIT" "${PYTEST[@]}" -m gpu -q -rs -p no:cacheprovider tests/gpu 2>&1 | tee "$LOG"
  TESTS=${PIPESTATUS[0]}
  set -e
  # On the CPU every GPU test is skipped (exit 0, "skipped" with the reason); on a GPU each must pass.
  # No summary line (a timeout, a CUDA or NCCL abort) is recorded as such, and fails the check.
  TESTS_LINE=$(grep -E '[0-9]+ (passed|failed|skipped|errors?)' "$LOG" | tail -1 || true)
  if [[ -z $TESTS_LINE ]]; then
    TESTS_LINE="no summary"
    [[ $TESTS == 0 ]] && TESTS=no-summary
  fi
fi

table() {  # seed_table.py with the check's thresholds; $1 the output file, the rest its arguments
  local out=$1
  shift
  set +e
  timeout "$TABLE_LIMIT" "$PYTHON" bench/seed_table.py --shapes "$SHAPES" --device "$DEVICE" \
    --tokens "$TOKENS" --group "$GROUP" --check --max-hessian-seconds "$MAX_HESSIAN" --out "$out" "$@"
  local code=$?
  set -e
  return $code
}

if has table; then
  echo "== 2a. bench/seed_table.py --shapes $SHAPES --tokens $TOKENS, $RESPONSE_LEN-token responses (limit ${TABLE_LIMIT} s)"
  BENCH=0
  table "$TABLE" --response-len "$RESPONSE_LEN" --factors 64 32 --scopes per_prompt all_selected || BENCH=$?
fi
if has short; then
  echo "== 2b. bench/seed_table.py, $SHORT_LEN-token responses, factor 32 all_selected (limit ${TABLE_LIMIT} s)"
  BENCH_SHORT=0
  table "$SHORT" --response-len "$SHORT_LEN" --factors 32 --scopes all_selected || BENCH_SHORT=$?
fi
if has launches; then
  echo "== 3. bench/kernel_launches.py --kernels gpu (budget 100,000 per stage)"
  LAUNCH=0
  set +e
  timeout "$TABLE_LIMIT" "$PYTHON" bench/kernel_launches.py --kernels gpu --scale "$LAUNCH_SCALE" \
    --check 100000 > "$LAUNCHES"
  LAUNCH=$?
  set -e
  cat "$LAUNCHES"
fi

if has exchange; then
  GPUS=0
  if [[ $DRY == 0 ]]; then
    GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())')
  fi
  if (( GPUS >= 2 )); then
    echo "== 4. bench/exchange_overlap.py --device cuda: two ranks over NCCL (limit ${TABLE_LIMIT} s)"
    set +e
    timeout "$TABLE_LIMIT" "$PYTHON" bench/exchange_overlap.py --device cuda > "$EXCHANGE_OUT"
    EXCHANGE=$?
    set -e
    cat "$EXCHANGE_OUT"
    EXCHANGE_LINE="$GPUS GPUs"
  else
    WHERE="$GPUS CUDA GPUs"
    [[ $DRY == 1 ]] && WHERE="the CPU dry run"
    EXCHANGE_LINE="skipped: $WHERE here, the NCCL exchange needs two"
    echo "== 4. two-GPU exchange: $EXCHANGE_LINE"
  fi
fi

{
  echo
  echo "## GPU check ($([[ $DRY == 1 ]] && echo 'CPU dry run' || echo "$DEVICE")), $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo
  echo "\`bench/gpu_check.sh $*\` on $(hostname): pytest -m gpu exit $TESTS ($TESTS_LINE);"
  echo "seed table exit $BENCH, short responses exit $BENCH_SHORT, kernel launches exit $LAUNCH,"
  echo "two-GPU exchange exit $EXCHANGE ($EXCHANGE_LINE)."
  for part in "$TABLE" "$SHORT"; do
    [[ -s $part ]] && { echo; cat "$part"; }
  done
  if [[ -s $LAUNCHES ]]; then
    echo
    echo "Kernel launches (GPU strategy, counted on the CPU), \`bench/kernel_launches.py --scale $LAUNCH_SCALE\`:"
    echo
    cat "$LAUNCHES"
  fi
  if [[ -s $EXCHANGE_OUT ]]; then
    echo
    cat "$EXCHANGE_OUT"
  fi
} >> "$RESULTS"
echo "== appended to $RESULTS"
for code in "$TESTS" "$BENCH" "$BENCH_SHORT" "$LAUNCH" "$EXCHANGE"; do
  if [[ $code != 0 && $code != skipped ]]; then
    echo "gpu_check: FAILED (pytest $TESTS, seed table $BENCH, short $BENCH_SHORT, launches $LAUNCH," \
      "exchange $EXCHANGE)" >&2
    exit 1
  fi
done
echo "gpu_check: ok"
