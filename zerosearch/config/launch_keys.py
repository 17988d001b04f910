"""The launchers' `KEY value` interface (train_grpo.sh, train_ppo.sh, scripts/eval.sh): each key of the
original's command line maps to config overrides, read by name and in any order.

The original read these pairs by position and ignored the key words; here an unknown key is an error that
lists the known ones, and paths are checked before anything heavy (Ray, models) starts. `build_overrides`
turns the pairs into the Hydra overrides that `zerosearch.run.run` composes.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Key:
    """One launcher key: the config field(s) it sets and how its value is turned into overrides."""

    help: str
    to_overrides: Callable[[str], list[str]]


def _field(name: str) -> Callable[[str], list[str]]:
    return lambda v: [f"{name}={v}"]


def _search_mode(v: str) -> list[str]:
    # the original's SEARCH_MODE values: simulate_sft | simulate_prompt | google | wiki (its local retriever)
    return [f"search={'retrieval' if v == 'wiki' else v}"]


def _eval_engine(v: str) -> list[str]:
    # the original's SEARCH_ENGINE values: google | wiki (a local Wikipedia retriever)
    return [f"search.eval_engine={'retrieval' if v == 'wiki' else v}"]


def _simulation_llm(v: str) -> list[str]:
    out = [f"search.simulation.model_name={v}"]
    if os.path.isdir(v):  # a local folder also gives the tokenizer (completions / sglang transports)
        out.append(f"search.simulation.model_path={os.path.abspath(v)}")
    return out


KEYS: dict[str, Key] = {
    "NUM_GPUS_PER_NODE": Key("GPUs per node (trainer.n_gpus_per_node); ignored on CPU, where trainer.cpu_workers applies",
                             _field("trainer.n_gpus_per_node")),
    "NNODES": Key("nodes in the Ray cluster (trainer.nnodes)", _field("trainer.nnodes")),
    "MODEL_PATH": Key("the agent model folder (model.path)", lambda v: [f"model.path={os.path.abspath(v)}"]),
    "DATA_PATH": Key("a ZeroSearch_dataset folder (train.parquet, test.parquet) or a train file (data.path)",
                     lambda v: [f"data.path={os.path.abspath(v)}"] if os.path.isdir(v)
                     else [f"data.train_files=[{os.path.abspath(v)}]"]),
    "TOTAL_STEPS": Key("training steps (trainer.total_steps)", _field("trainer.total_steps")),
    "IP": Key("simulation server(s): host, host:port or a comma list (search.simulation.servers)",
              lambda v: [f"search.simulation.servers='{v}'"]),
    "SEARCH_MODE": Key("training search: simulate_sft | simulate_prompt | retrieval (alias wiki) | google (search=...)",
                       _search_mode),
    "SIMULATION_LLM": Key("served name (or local folder) of the simulation LLM (search.simulation.model_name)",
                          _simulation_llm),
    "START_THRESHOLD": Key("noise probability at the first step (curriculum.start_threshold)",
                           _field("curriculum.start_threshold")),
    "END_THRESHOLD": Key("noise probability at the last step (curriculum.end_threshold)", _field("curriculum.end_threshold")),
    "SEARCH_ENGINE": Key("evaluation search: wiki (retrieval) | google | none (search.eval_engine); without it, or "
                         "without RETRIEVAL_URL / CORPUS_PATH for wiki, validation is skipped with a warning",
                         _eval_engine),
    "RETRIEVAL_URL": Key("a Search-R1 /retrieve server for evaluation (search.retrieval.url)", _field("search.retrieval.url")),
    "CORPUS_PATH": Key("jsonl corpus for a local evaluation index (search.retrieval.corpus_path)",
                       lambda v: [f"search.retrieval.corpus_path={os.path.abspath(v)}"]),
    "MAX_TURNS": Key("searches before the forced answer (rollout.max_turns)", _field("rollout.max_turns")),
    "TOPK": Key("documents per search (search.topk)", _field("search.topk")),
    "N_ROLLOUTS": Key("samples per prompt, the GRPO group size (rollout.n)", _field("rollout.n")),
    "TRAIN_BATCH_SIZE": Key("prompts per step (data.train_batch_size)", _field("data.train_batch_size")),
    "LR": Key("actor learning rate (actor.lr)", _field("actor.lr")),
    "ENGINE": Key("rollout engine: hf | vllm (rollout.engine)", _field("rollout.engine")),
    "SEED": Key("random seed (trainer.seed)", _field("trainer.seed")),
    "EXPERIMENT_NAME": Key("run name and folder (trainer.experiment_name)", _field("trainer.experiment_name")),
    "OUTPUT_DIR": Key("run folder (trainer.output_dir)", lambda v: [f"trainer.output_dir={os.path.abspath(v)}"]),
    "SAVE_FREQ": Key("checkpoint every N steps (trainer.save_freq)", _field("trainer.save_freq")),
    "TEST_FREQ": Key("validate every N steps (trainer.test_freq)", _field("trainer.test_freq")),
    "RAY_ADDRESS": Key("join this Ray cluster (trainer.ray_address)", _field("trainer.ray_address")),
    "WANDB_MODE": Key("online | offline | disabled (logging.wandb_mode)", _field("logging.wandb_mode")),
}


def _flag(name: str) -> Callable[[str], list[str]]:
    return lambda v: [name, v]


# Keys only scripts/eval.sh reads, on top of KEYS: they choose *what* is evaluated, so they map to flags of
# `python -m zerosearch.eval` instead of config overrides. There MODEL_PATH is the evaluated model (a model
# folder, a run's actor_hf/ or a checkpoint) and OUTPUT_DIR the results folder.
EVAL_KEYS: dict[str, Key] = {
    "DATASETS": Key("benchmarks: all | a comma list of nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,bamboogle "
                    "and/or QA file paths (--datasets)", _flag("--datasets")),
    "METHODS": Key("a comma list of agent,direct,cot,rag (--methods)", _flag("--methods")),
    "LIMIT": Key("rows per dataset: a seeded, fixed subset (--limit; see zerosearch.eval.subsets)", _flag("--limit")),
    "SUBSET_SEED": Key("seed of the --limit subsets (--seed)", _flag("--seed")),
    "BATCH_SIZE": Key("questions per generation batch (--batch-size; default data.val_batch_size)", _flag("--batch-size")),
    "NAME": Key("the model's name in the result tables (--name)", _flag("--name")),
}


class LaunchError(ValueError):
    """Bad launcher arguments; the message says what and lists the known keys where useful."""


def known_keys_text(keys: dict[str, Key] = KEYS) -> str:
    width = max(len(k) for k in keys)
    return "\n".join(f"  {k.ljust(width)}  {v.help}" for k, v in keys.items())


def parse_args(argv: list[str], keys: dict[str, Key] = KEYS) -> tuple[dict[str, str], list[str]]:
    """Split argv into KEY value pairs (of `keys`) and Hydra overrides (anything containing '=' or starting
    with '-')."""
    pairs: dict[str, str] = {}
    overrides: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if "=" in tok or tok.startswith("-"):
            overrides.append(tok)
            i += 1
            continue
        if tok not in keys:
            close = difflib.get_close_matches(tok.upper(), keys, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise LaunchError(f"unknown key {tok!r}{hint}. Known keys:\n{known_keys_text(keys)}\n"
                              "Hydra overrides (a.b=c) are passed through as they are.")
        if i + 1 >= len(argv):
            raise LaunchError(f"key {tok} has no value (expected: {tok} VALUE)")
        if tok in pairs:
            raise LaunchError(f"key {tok} given twice ({pairs[tok]!r} and {argv[i + 1]!r})")
        pairs[tok] = argv[i + 1]
        i += 2
    return pairs, overrides


def check_paths(pairs: dict[str, str]) -> None:
    """Fail within seconds, naming the path, before Ray or a model starts."""
    for key in ("MODEL_PATH", "DATA_PATH", "CORPUS_PATH"):
        if key in pairs and not os.path.exists(pairs[key]):
            hint = {"MODEL_PATH": "a local Hugging Face model folder (scripts/download_assets.sh fetches models)",
                    "DATA_PATH": "a folder with train.parquet/test.parquet (scripts/prepare_data.py writes one)",
                    "CORPUS_PATH": "a jsonl corpus with {id, contents} rows"}[key]
            raise LaunchError(f"{key} {pairs[key]!r} does not exist ({os.path.abspath(pairs[key])}); expected {hint}")
    if "DATA_PATH" in pairs and os.path.isdir(pairs["DATA_PATH"]):
        train = os.path.join(pairs["DATA_PATH"], "train.parquet")
        if not os.path.exists(train):
            raise LaunchError(f"DATA_PATH {pairs['DATA_PATH']!r} has no train.parquet ({train})")
    if "MODEL_PATH" in pairs:
        from zerosearch.config.validate import model_folder_problem

        problem = model_folder_problem(pairs["MODEL_PATH"])
        if problem:
            raise LaunchError(f"MODEL_PATH {pairs['MODEL_PATH']!r} {problem} ({os.path.abspath(pairs['MODEL_PATH'])}; "
                              "scripts/download_assets.sh fetches models)")


def config_overrides(pairs: dict[str, str], keys: dict[str, Key] | None = None) -> list[str]:
    """The config overrides of KEY value pairs (training's and evaluation's launchers share them)."""
    keys = KEYS if keys is None else keys
    out: list[str] = []
    for key, value in pairs.items():
        out.extend(keys[key].to_overrides(value))
    if "wiki" in (pairs.get("SEARCH_MODE"), pairs.get("SEARCH_ENGINE")) and not (
            {"RETRIEVAL_URL", "CORPUS_PATH"} & set(pairs)):
        # the original's wiki engine is ZeroSearch's retriever ({"query", "top_k"} at 127.0.0.1:6002); with a
        # RETRIEVAL_URL (Search-R1's server) or a CORPUS_PATH (a local index) those are meant instead
        out.append("search.retrieval.protocol=zerosearch")
    return out


def build_overrides(algorithm: str, pairs: dict[str, str], overrides: list[str]) -> list[str]:
    out = [f"algorithm={algorithm}", "experiment=zerosearch", *config_overrides(pairs)]
    if "EXPERIMENT_NAME" not in pairs:
        model = os.path.basename(os.path.normpath(pairs.get("MODEL_PATH", "model")))
        out.append(f"trainer.experiment_name={model}_{algorithm}_{pairs.get('SEARCH_MODE', 'simulate_sft')}")
    return out + overrides