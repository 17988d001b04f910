#!/usr/bin/env bash
# One prepared GPU check, under 5 minutes on one GPU: installs from the lock file and exercises every
# CUDA-only path on tiny models, printing one line per check:  PASS|FAIL|SKIP <name> <detail>
#
#   bash scripts/gpu_smoke.sh             # create .venv-gpu from requirements/gpu-lock.txt, then check
#   bash scripts/gpu_smoke.sh --no-install  # use $PYTHON (or .venv-gpu) as it is (a machine without PyPI)
#   bash scripts/gpu_smoke.sh --dry-run   # print the plan (PLAN <name> <what>) and exit; needs no GPU
#
# Checks: install, cuda, nccl (a NCCL process group: all-reduce over every visible GPU), bf16_fp32_master
# (FSDP2 with bf16 compute keeps fp32 master weights and takes a finite step), vllm_engine_weight_update
# (the vLLM GPU engine generates, takes new weights and matches HF: tests/rollout/test_vllm_engine.py),
# sim_server_vllm (scripts/launch_simulation_server.sh --backend vllm answers chat requests), grpo_2_steps
# (a 2-step GRPO run on cuda with the vLLM rollout engine against that server), sglang_server (the sglang
# simulation server in .venv-sim, SKIP when sglang does not install). Exit status: the number of FAILs.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${ZS_GPU_VENV:-"$ROOT/.venv-gpu"}
MODE=install
case "${1:-}" in
  --dry-run) MODE=dry ;;
  --no-install) MODE=noinstall ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_smoke.sh [--dry-run|--no-install]" >&2; exit 2 ;;
esac
CHECKS=(
  "install|pip install -r requirements/gpu-lock.txt + the package (no deps) into $VENV"
  "cuda|torch sees a CUDA device; a bf16 matmul on it"
  "nccl|a NCCL process group over every visible GPU (torch.multiprocessing), all-reduce"
  "bf16_fp32_master|FSDP2 (zerosearch.workers.fsdp.shard_model) bf16 compute: fp32 masters, a finite AdamW step"
  "vllm_engine_weight_update|pytest tests/rollout/test_vllm_engine.py (GPU engine, weight update, HF parity)"
  "sim_server_vllm|scripts/launch_simulation_server.sh --backend vllm on 127.0.0.1, one chat request"
  "grpo_2_steps|python -m zerosearch.train: 2 GRPO steps, trainer.device=cuda, rollout.engine=vllm, that server"
  "sglang_server|scripts/launch_simulation_server.sh --backend sglang in .venv-sim (SKIP if sglang does not install)"
)
if [ "$MODE" = dry ]; then
  for c in "${CHECKS[@]}"; do echo "PLAN ${c%%|*} ${c#*|}"; done
  exit 0
fi
FAILS=0
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() { [ -n "$SERVER_PID" ] && kill -- -"$SERVER_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
report() {  # report NAME STATUS(0 pass, 77 skip, else fail) LOG
  local detail
  detail=$(tail -n 3 "$3" 2>/dev/null | tr '\n' ' ' | cut -c1-300)
  if [ "$2" -eq 0 ]; then echo "PASS $1 ${detail}"
  elif [ "$2" -eq 77 ]; then echo "SKIP $1 ${detail}"
  else echo "FAIL $1 (exit $2) ${detail}"; FAILS=$((FAILS + 1)); fi
}
run() {  # run NAME TIMEOUT_S COMMAND...
  local name=$1 t=$2; shift 2
  timeout "$t" "$@" >"$WORK/$name.log" 2>&1
  report "$name" $? "$WORK/$name.log"
}
free_port() { "$PY" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"; }
wait_health() {  # wait_health URL SECONDS
  "$PY" - "$1" "$2" <<'PY'
import sys, time, urllib.request
url, limit = sys.argv[1], float(sys.argv[2]); t0 = time.time()
while time.time() - t0 < limit:
    try:
        urllib.request.urlopen(url + "/health", timeout=2); print(f"healthy after {time.time() - t0:.0f} s"); sys.exit(0)
    except Exception:
        time.sleep(1)
print("no /health answer"); sys.exit(1)
PY
}

# --- install
if [ "$MODE" = install ]; then
  PY="$VENV/bin/python"
  run install 240 bash -c "python3 -m venv '$VENV' && '$PY' -m pip install -q -r requirements/gpu-lock.txt \
    && '$PY' -m pip install -q --no-deps -e . && '$PY' -c 'import torch, vllm, zerosearch; print(torch.__version__, vllm.__version__)'"
else
  PY=${PYTHON:-"$VENV/bin/python"}
  echo "SKIP install --no-install: using $PY"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled

# --- tiny models (the same builders the CPU tests use)
"$PY" - "$WORK" >"$WORK/models.log" 2>&1 <<'PY'
import sys
from pathlib import Path
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model
sys.path.insert(0, "tests/trainer")
from trainer_fixtures import make_assets
root = Path(sys.argv[1])
import json
make_tiny_model(root / "sim", TinySpec(num_heads=2, num_kv_heads=2))  # head_dim 64: vLLM's kernels need it
(root / "assets.json").write_text(json.dumps({k: str(v) for k, v in make_assets(root / "assets").items()}))
PY
[ $? -eq 0 ] || { report models 1 "$WORK/models.log"; }

run cuda 60 "$PY" -c "
import torch
assert torch.cuda.is_available(), 'no CUDA device'
a = torch.randn(256, 256, device='cuda', dtype=torch.bfloat16)
print(torch.cuda.get_device_name(0), 'bf16 matmul ok', float((a @ a).float().norm()) > 0)"

run nccl 120 "$PY" -c "
import os, torch, torch.distributed as dist, torch.multiprocessing as mp
def work(rank, world, port):
    dist.init_process_group('nccl', rank=rank, world_size=world, init_method=f'tcp://127.0.0.1:{port}')
    torch.cuda.set_device(rank)
    x = torch.ones(1, device='cuda') * (rank + 1)
    dist.all_reduce(x)
    assert x.item() == world * (world + 1) / 2, x
    dist.destroy_process_group()
if __name__ == '__main__':
    import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]; s.close()
    world = max(1, min(2, torch.cuda.device_count()))
    mp.spawn(work, args=(world, port), nprocs=world)
    print(f'NCCL all-reduce over {world} GPU(s), nccl {torch.cuda.nccl.version()}')"

run bf16_fp32_master 120 "$PY" - "$WORK" <<'PY'
import sys, torch, torch.distributed as dist
from zerosearch.workers import fsdp
fsdp.init_distributed(0, 1, "127.0.0.1", 29533, "cuda")
model = fsdp.load_causal_lm(f"{sys.argv[1]}/sim", torch.float32).cuda()
model = fsdp.shard_model(model, param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
ids = torch.randint(0, 100, (2, 16), device="cuda")
out = model(input_ids=ids, labels=ids)
assert out.logits.dtype == torch.bfloat16, out.logits.dtype  # bf16 compute
out.loss.backward()
opt.step()
dtypes = {p.dtype for p in model.parameters()}
assert dtypes == {torch.float32}, dtypes  # fp32 masters
assert torch.isfinite(out.loss), out.loss
print(f"loss {out.loss.item():.3f} (bf16 logits), masters {dtypes}")
dist.destroy_process_group()
PY

run vllm_engine_weight_update 180 "$PY" -m pytest tests/rollout/test_vllm_engine.py -q -x -p no:cacheprovider

# --- the simulation server (vLLM) and a 2-step GRPO run against it
PORT=$(free_port)
setsid env PYTHON="$PY" bash scripts/launch_simulation_server.sh "$WORK/sim" --backend vllm --port "$PORT" \
  -- --max-model-len 2048 --gpu-memory-utilization 0.2 --enforce-eager >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
run sim_server_vllm 180 bash -c "$(declare -f wait_health); PY='$PY'; wait_health http://127.0.0.1:$PORT 170 && \
  '$PY' -c \"import httpx; r = httpx.post('http://127.0.0.1:$PORT/v1/chat/completions', timeout=60, json={'model': 'sim', \
  'messages': [{'role': 'user', 'content': 'hello'}], 'max_tokens': 8}); r.raise_for_status(); print(r.json()['usage'])\""

run grpo_2_steps 240 "$PY" - "$WORK" "$PORT" <<'PY'
import subprocess, sys, json
from pathlib import Path
sys.path.insert(0, "tests/trainer")
from trainer_fixtures import run_overrides
work, port = Path(sys.argv[1]), sys.argv[2]
assets = {k: Path(v) for k, v in json.loads((work / "assets.json").read_text()).items()}
ov = [o for o in run_overrides(assets, work / "run", "grpo", steps=2) if not o.startswith(("trainer.device", "search.simulation.transport", "search.simulation.model_path"))]
ov += ["trainer.device=cuda", "trainer.n_gpus_per_node=1", "rollout.engine=vllm", "rollout.gpu_memory_utilization=0.2",
       "search.simulation.transport=chat", f"search.simulation.servers=127.0.0.1:{port}", "search.simulation.model_name=sim",
       "data.train_batch_size=4", "actor.ppo_mini_batch_size=4", "logging.backends=[console,jsonl]"]
r = subprocess.run([sys.executable, "-m", "zerosearch.train", *ov], capture_output=True, text=True, timeout=230)
print(r.stdout[-1500:], r.stderr[-1500:])
assert r.returncode == 0
rows = [json.loads(x) for x in (work / "run/metrics.jsonl").read_text().splitlines()]
print(f"steps {[x['step'] for x in rows]} search/generations {sum(x.get('search/generations', 0) for x in rows)}")
PY
kill -- -"$SERVER_PID" 2>/dev/null; SERVER_PID=""

# --- sglang, in the simulation server's own environment (.venv-sim from requirements/sim-sglang-lock.txt)
PORT=$(free_port)
if [ "$MODE" = install ] || [ -x "$ROOT/.venv-sim/bin/python" ]; then
  setsid bash scripts/launch_simulation_server.sh "$WORK/sim" --backend sglang --port "$PORT" \
    -- --mem-fraction-static 0.2 >"$WORK/sglang.log" 2>&1 &
  SERVER_PID=$!
  run sglang_server 240 bash -c "$(declare -f wait_health); PY='$PY'; wait_health http://127.0.0.1:$PORT 230 || \
    { grep -q 'No module named .sglang\|ERROR: No matching distribution' '$WORK/sglang.log' && exit 77; exit 1; }"
else
  echo "SKIP sglang_server no .venv-sim and --no-install (nothing to install it from)"
fi
echo "gpu_smoke: $FAILS failed"
exit "$FAILS"
