#!/usr/bin/env bash
# Evaluate a model on the paper's benchmarks (the agent and the baselines), with any search engine.
#
#   bash scripts/eval.sh MODEL_PATH outputs/run/actor_hf OUTPUT_DIR eval/run \
#       DATASETS all LIMIT 500 METHODS agent,direct,cot,rag \
#       SEARCH_ENGINE wiki CORPUS_PATH wiki18.jsonl            # or RETRIEVAL_URL http://host:8000/retrieve,
#                                                              # or SEARCH_ENGINE google (SERPAPI_API_KEY)
#   bash scripts/eval.sh --help                                # every key
#
# Keys are read by name, in any order (zerosearch/eval/launch.py); a.b=c are config overrides. Re-running
# the same command continues an interrupted evaluation. docs/EVALUATION.md has the whole protocol.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/setup_env.sh"
exec "${ZS_VENV:-$ROOT/.venv}/bin/python" -m zerosearch.eval.launch "$@"
