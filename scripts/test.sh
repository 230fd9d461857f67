#!/usr/bin/env bash
# Set up .venv (and Debian's chromium for the report's browser test) and run every check: ruff and
# the whole pytest suite (the CRD freshness check included). Tests of the operator and the control
# plane bring up the local cluster themselves (hack/cluster.sh up), building its binaries on first use.
#   scripts/test.sh --images [PYTEST ARGS]   also build both images with hack/images.sh and smoke-test
#                                             them (tests/images; the worker's cold build ~11 min)
# Otherwise the image tests run for the targets INFLUENCETRACE_IMAGES names (.ci/run: the operator).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --images ]; then
  shift
  export INFLUENCETRACE_IMAGES=all
fi
bash scripts/setup.sh
# Headless Chromium for the report's browser test (tests/report); only where we may install it.
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
.venv/bin/ruff check .
.venv/bin/mypy  # the files and settings of pyproject.toml's [tool.mypy]
# Tests run in PYTEST_WORKERS processes (pytest-xdist); the cluster tests keep to one of them, one after
# another (tests/conftest.py), while the others take the CPU-bound tests.
.venv/bin/python -m pytest -n "${PYTEST_WORKERS:-3}" "$@"
