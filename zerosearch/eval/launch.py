"""What `scripts/eval.sh` runs: `KEY value` pairs, as the training launchers take them, into
`python -m zerosearch.eval`.

    bash scripts/eval.sh MODEL_PATH outputs/run/actor_hf OUTPUT_DIR eval/run DATASETS all LIMIT 500 \\
        METHODS agent,direct,cot,rag SEARCH_ENGINE wiki CORPUS_PATH wiki18.jsonl [a.b=c ...]

MODEL_PATH is the evaluated model (a model folder, a run folder or its actor_hf/, a checkpoint folder) and
OUTPUT_DIR the results folder; DATASETS, METHODS, LIMIT, SUBSET_SEED, BATCH_SIZE and NAME choose what is
evaluated (`zerosearch.config.launch_keys.EVAL_KEYS`); every other key sets the config field it sets for
training (SEARCH_ENGINE, RETRIEVAL_URL, CORPUS_PATH, TOPK, MAX_TURNS, IP, SIMULATION_LLM, ENGINE, ...).
"""

from __future__ import annotations

import sys

from zerosearch.config.launch_keys import (
    EVAL_KEYS, KEYS, LaunchError, check_paths, config_overrides, known_keys_text, parse_args)

ALL_KEYS = {**KEYS, **EVAL_KEYS}


def to_argv(argv: list[str]) -> list[str]:
    """The `python -m zerosearch.eval` arguments of a KEY value command line."""
    pairs, overrides = parse_args(argv, ALL_KEYS)
    check_paths(pairs)
    for key in ("MODEL_PATH", "OUTPUT_DIR"):
        if key not in pairs:
            raise LaunchError(f"{key} is required (MODEL_PATH: the model to evaluate; OUTPUT_DIR: the results folder)")
    out = ["--model", pairs.pop("MODEL_PATH"), "--out", pairs.pop("OUTPUT_DIR")]
    for key, value in pairs.items():
        if key in EVAL_KEYS:
            out.extend(EVAL_KEYS[key].to_overrides(value))
    config = config_overrides({k: v for k, v in pairs.items() if k not in EVAL_KEYS})  # as training maps them
    return out + config + overrides


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        print("Keys:\n" + known_keys_text(ALL_KEYS))
        return 0 if argv else 2
    try:
        args = to_argv(argv)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from zerosearch.eval.__main__ import main as eval_main

    print("[eval] python -m zerosearch.eval " + " ".join(args), flush=True)
    return eval_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
