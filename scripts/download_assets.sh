#!/usr/bin/env bash
# Fetch the ZeroSearch dataset and the fine-tuned simulation LLMs from the Hugging Face hub.
#
#   bash scripts/download_assets.sh                  # the dataset and SearchSimulation_14B
#   bash scripts/download_assets.sh dataset 3B 7B    # any of: dataset 3B 7B 14B all
#   bash scripts/download_assets.sh google_14B wiki_7B  # the V2 simulators: {google,wiki}_{3B,7B,14B}, v2 (all six)
#
# Layout (what DATA_PATH and SIMULATION_LLM of the launchers point at):
#   data/ZeroSearch_dataset/{train,test}.parquet     <- hf dataset sunhaonlp/ZeroSearch_dataset
#   models/SearchSimulation_{3B,7B,14B}/             <- hf models sunhaonlp/SearchSimulation_*
#   models/Simulation_LLM_{google,wiki}_{3B,7B,14B}/ <- hf models sunhaonlp/Simulation_LLM_{google,wiki}_*_V2
# Environment: ZS_DATA_DIR (default <repo>/data), ZS_MODELS_DIR (default <repo>/models), HF_ENDPOINT,
# HF_TOKEN, HF_HUB_OFFLINE, ZS_PYTHON (a python with huggingface_hub; default <repo>/.venv/bin/python).
#
# Without network it stops at once (a 5 s reachability check comes first) and says what to do instead:
# scripts/prepare_data.py builds the same dataset layout from local QA jsonl files.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATA_DIR=${ZS_DATA_DIR:-$ROOT/data}
MODELS_DIR=${ZS_MODELS_DIR:-$ROOT/models}
ENDPOINT=${HF_ENDPOINT:-https://huggingface.co}
CHECK_TIMEOUT_S=5

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

offline_help() {
  cat >&2 <<EOF
Without the hub:
  - the dataset: build the same layout from local QA jsonl files (../shared/data/qa), e.g.
      python scripts/prepare_data.py --out data/ZeroSearch_dataset \\
        --train nq_efficientqa_dev nq_efficientqa_test hotpotqa_dev \\
        --test nq_test_sub1000_flashrag triviaqa_test_sub1000 popqa_test_sub1000 bamboogle_test \\
               2wikimultihopqa_dev musique_dev
    (python scripts/prepare_data.py --help lists the options; point DATA_PATH at the folder.)
  - a simulation LLM: copy an already downloaded model folder to $MODELS_DIR/SearchSimulation_14B,
    serve one on a machine that has it (IP host:port), or use SEARCH_MODE simulate_prompt with any
    local instruct model.
EOF
}

# ---- what to fetch
want_dataset=0; sizes=(); v2=()
[ $# -eq 0 ] && set -- dataset 14B
for a in "$@"; do
  case "$a" in
    -h|--help) usage; exit 0 ;;
    dataset) want_dataset=1 ;;
    3B|7B|14B) sizes+=("$a") ;;
    google_3B|google_7B|google_14B|wiki_3B|wiki_7B|wiki_14B) v2+=("$a") ;;
    v2) v2+=(google_3B google_7B google_14B wiki_3B wiki_7B wiki_14B) ;;
    all) want_dataset=1; sizes=(3B 7B 14B) ;;
    *) echo "error: unknown argument '$a' (expected dataset, 3B, 7B, 14B, all, v2 or {google,wiki}_{3B,7B,14B})" >&2
       usage >&2; exit 2 ;;
  esac
done

# ---- fail fast without network
case "${HF_HUB_OFFLINE:-0}" in
  1|true|TRUE|yes|YES|on|ON)
    echo "error: HF_HUB_OFFLINE=${HF_HUB_OFFLINE} is set: the hub is switched off, nothing can be downloaded." >&2
    offline_help; exit 1 ;;
esac
reachable() {
  if command -v curl >/dev/null 2>&1; then
    curl -sS -o /dev/null --connect-timeout "$CHECK_TIMEOUT_S" --max-time "$CHECK_TIMEOUT_S" -I "$ENDPOINT" 2>/dev/null
  else
    "${PY:-python3}" - "$ENDPOINT" "$CHECK_TIMEOUT_S" <<'EOF' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(urllib.request.Request(sys.argv[1], method="HEAD"), timeout=float(sys.argv[2]))
EOF
  fi
}
if ! reachable; then
  echo "error: cannot reach $ENDPOINT within ${CHECK_TIMEOUT_S} s: no network (or the hub is blocked) here." >&2
  offline_help; exit 1
fi

# ---- a python with huggingface_hub
PY=${ZS_PYTHON:-}
if [ -z "$PY" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; else PY=python3; fi
fi
if ! "$PY" -c "import huggingface_hub" 2>/dev/null; then
  echo "error: $PY cannot import huggingface_hub; install it (pip install huggingface_hub) or set ZS_PYTHON." >&2
  exit 1
fi

fetch() {  # repo_id repo_type local_dir
  echo "== $1 ($2) -> $3"
  "$PY" - "$1" "$2" "$3" <<'EOF'
import sys
from huggingface_hub import snapshot_download

repo_id, repo_type, local_dir = sys.argv[1:4]
path = snapshot_download(repo_id=repo_id, repo_type=repo_type, local_dir=local_dir)
print(f"   done: {path}")
EOF
}

if [ "$want_dataset" = 1 ]; then
  fetch sunhaonlp/ZeroSearch_dataset dataset "$DATA_DIR/ZeroSearch_dataset"
  for f in train.parquet test.parquet; do
    [ -f "$DATA_DIR/ZeroSearch_dataset/$f" ] || echo "warning: $DATA_DIR/ZeroSearch_dataset/$f is missing" >&2
  done
fi
for s in "${sizes[@]}"; do
  fetch "sunhaonlp/SearchSimulation_$s" model "$MODELS_DIR/SearchSimulation_$s"
done
# the V2 simulators go to the folder names the original README uses (the served name, SIMULATION_LLM)
for s in "${v2[@]}"; do
  fetch "sunhaonlp/Simulation_LLM_${s}_V2" model "$MODELS_DIR/Simulation_LLM_$s"
done
[ "$want_dataset" = 1 ] && echo "DATA_PATH: $DATA_DIR/ZeroSearch_dataset"
for s in "${sizes[@]}"; do echo "SIMULATION_LLM: $MODELS_DIR/SearchSimulation_$s"; done
for s in "${v2[@]}"; do echo "SIMULATION_LLM: $MODELS_DIR/Simulation_LLM_$s"; done
