#!/usr/bin/env bash
# Train a search agent with GRPO (ZeroSearch). Installs into .venv on first use.
#
#   bash train_grpo.sh                                   # the embedded toy world on CPU (no GPU, no downloads)
#   bash train_grpo.sh MODEL_PATH ... DATA_PATH ... IP ... [KEY value ...] [a.b=c ...]
#   bash train_grpo.sh --help                            # every key
#
# Keys are read by name, in any order (see zerosearch/launch.py); a.b=c are Hydra overrides.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$ROOT/scripts/setup_env.sh"
exec "${ZS_VENV:-$ROOT/.venv}/bin/python" -m zerosearch.launch --algorithm grpo "$@"
