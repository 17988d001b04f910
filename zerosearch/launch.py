"""What `train_grpo.sh` / `train_ppo.sh` run: the original `KEY value` interface, by name, in any order.

    bash train_grpo.sh NUM_GPUS_PER_NODE 4 MODEL_PATH Llama-3.2-3B DATA_PATH ZeroSearch_dataset \\
        TOTAL_STEPS 203 IP localhost:6001 SEARCH_MODE simulate_sft SIMULATION_LLM SearchSimulation_14B \\
        START_THRESHOLD 0.25 END_THRESHOLD 0.5  [a.b=c Hydra overrides ...]

The original read these pairs by position and ignored the key words; here each key maps to a config
field (`zerosearch.config.launch_keys.KEYS`), an unknown key is an error that lists the known ones, and MODEL_PATH / DATA_PATH are
checked before anything heavy (Ray, models) starts. Without MODEL_PATH the embedded toy world runs
(zerosearch.toy): ZeroSearch in miniature on CPU. The key table lives in zerosearch.config.launch_keys;
both paths end in zerosearch.run.run.
"""

from __future__ import annotations

import os
import sys

# transformers' progress bars would bury the training log; set before transformers is imported
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from zerosearch.config.launch_keys import LaunchError, build_overrides, check_paths, known_keys_text, parse_args
from zerosearch.config.validate import ConfigError
from zerosearch.utils.errors import RunError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] != "--algorithm" or len(argv) < 2:
        print("usage: python -m zerosearch.launch --algorithm grpo|ppo|... [KEY value ...] [a.b=c ...]", file=sys.stderr)
        return 2
    algorithm, rest = argv[1], argv[2:]
    if rest and rest[0] in ("-h", "--help", "help"):
        print(__doc__)
        print("Keys:\n" + known_keys_text())
        return 0
    try:
        pairs, overrides = parse_args(rest)
        check_paths(pairs)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "MODEL_PATH" not in pairs:
        from zerosearch.toy.pipeline import main as toy_main

        return toy_main(algorithm, pairs, overrides)
    from zerosearch.run import run

    ov = build_overrides(algorithm, pairs, overrides)
    print("[launch] python -m zerosearch.train " + " ".join(ov), flush=True)
    try:
        run(ov)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:  # a failure whose message is complete (a bad checkpoint, a lost rank)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
