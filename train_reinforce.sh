#!/usr/bin/env bash
# Train a search agent with REINFORCE (ZeroSearch; recommended by its authors when GRPO collapses). Installs into .venv on first use.
#
#   bash train_reinforce.sh                                   # the embedded toy world on CPU (no GPU, no downloads)
#   bash train_reinforce.sh MODEL_PATH ... DATA_PATH ... IP ... [KEY value ...] [a.b=c ...]
#   bash train_reinforce.sh --help                            # every key
#
# Keys are read by name, in any order (see zerosearch/launch.py); a.b=c are Hydra overrides.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
bash "$ROOT/scripts/setup_env.sh"
exec "${ZS_VENV:-$ROOT/.venv}/bin/python" -m zerosearch.launch --algorithm reinforce "$@"
