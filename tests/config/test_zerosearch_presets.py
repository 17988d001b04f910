"""The ZeroSearch presets hold the original's settings, field by field, for every preset and algorithm.

The table below is written from the original's launchers (train_grpo.sh, train_ppo.sh, train_reinforce.sh),
its verl fork's defaults (verl/trainer/config/ppo_trainer.yaml) and llm_agent/generation.py, as
../shared/ZEROSEARCH_INTERFACES.md section 6 lists them. Where our unit differs, the value is converted
and the comment says how.
"""

from __future__ import annotations

import pytest

from zerosearch.config.store import compose_config, to_structured
from zerosearch.config.validate import eval_engine_configured, validate_config

PRESETS = ["zerosearch", "zerosearch_qwen2.5_3b", "zerosearch_qwen2.5_7b", "zerosearch_llama3.2_3b"]
ALGORITHMS = ["grpo", "ppo", "reinforce"]

INVALID = ("\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
           "</search>. If I want to give the final answer, I should put the answer between <answer> and </answer>. "
           "Let me try again.\n")

# the original's values, shared by the three launchers
COMMON = {
    "data.train_batch_size": 64,                 # data.train_batch_size=64
    "data.max_prompt_length": 2048,              # data.max_start_length=2048 (the prompt)
    "data.prompt_template": "search_r1",         # the datasets' instruction (Search-R1 preprocessing)
    "data.use_dataset_prompt": True,             # RLHFDataset trains on the parquet prompt column
    "rollout.n": 5,                              # actor_rollout_ref.rollout.n_agent=5
    "rollout.temperature": 1.0,                  # rollout.temperature=1
    "rollout.top_p": 0.95,                       # ppo_trainer.yaml rollout.top_p
    "rollout.top_k": -1,                         # ppo_trainer.yaml rollout.top_k=-1 (off)
    "rollout.max_turns": 5,                      # MAX_TURNS 5 (README)
    "rollout.max_response_length": 500,          # data.max_response_length=500
    "rollout.max_obs_length": 2048,              # data.max_obs_length=2048
    "rollout.max_total_length": 4096,            # data.max_prompt_length=4096 (the rolling context)
    "rollout.gpu_memory_utilization": 0.6,       # rollout.gpu_memory_utilization=0.6
    "rollout.invalid_action_text": INVALID,      # generation.py execute_predictions
    "rollout.on_eos_without_action": "continue",  # the trajectory goes on after an EOS without a tag
    "rollout.observation_layout": "auto",        # simulator text passed through; Doc i: for google / wiki
    "search.topk": 5,                            # TOPK 5
    "search.simulation.temperature": 0.8,        # GenerationConfig.temperature
    "search.simulation.max_tokens": 600,         # ask_llm max_tokens=600
    "search.simulation.words_per_doc": 30,       # "about 30 words"
    "search.simulation.prompt_family": "",       # = SEARCH_MODE: simulate_sft is the exact prompt
    "curriculum.base": 4.0,                      # dynamic_threshold exp_base 4
    "curriculum.granularity": "query",           # one draw per query
    "reward.score": "f1",                        # trainer.reward_function=f1
    "reward.format_reward": False,
    "actor.lr": 1e-6,                            # actor.optim.lr=1e-6
    "actor.lr_schedule": "constant",             # warmup_style: constant
    "actor.weight_decay": 0.01,                  # AdamW default of the fork
    "actor.grad_clip": 1.0,                      # actor.grad_clip
    "actor.entropy_coeff": 0.001,                # actor.entropy_coeff
    "actor.ppo_epochs": 1,                       # actor.ppo_epochs
    "actor.clip_ratio_low": 0.2,                 # actor.clip_ratio
    "actor.clip_ratio_high": 0.2,
    "actor.clip_ratio_c": None,                  # no dual clip in the fork's compute_policy_loss
    "actor.loss_agg_mode": "token-mean",         # masked_mean over tokens
    # ppo_mini_batch_size=256 counts trajectories in the fork (x rollout.n = 1; n_agent makes the 5
    # samples): 320 trajectories a step -> two optimizer steps. Ours counts prompts: 32 x 5 = 160, two steps.
    "actor.ppo_mini_batch_size": 32,
    "critic.lr": 1e-5,                           # critic.optim.lr=1e-5
    "critic.cliprange_value": 0.5,               # critic.cliprange_value
    "critic.ppo_epochs": 1,
    "trainer.total_steps": 203,                  # TOTAL_STEPS 203
    "trainer.save_freq": 50,                     # trainer.save_freq=50
    "trainer.critic_warmup": 0,                  # trainer.critic_warmup=0
}

PER_ALGORITHM = {
    "grpo": {"algorithm.adv_estimator": "grpo", "actor.lr_warmup_ratio": 0.95, "actor.use_kl_loss": True,
             "actor.kl_loss_type": "low_var_kl", "actor.kl_loss_coef": 0.001, "algorithm.use_kl_in_reward": False},
    "reinforce": {"algorithm.adv_estimator": "reinforce", "actor.lr_warmup_ratio": 0.95, "actor.use_kl_loss": True,
                  "actor.kl_loss_type": "low_var_kl", "actor.kl_loss_coef": 0.001,
                  "algorithm.use_kl_in_reward": False},
    "ppo": {"algorithm.adv_estimator": "gae", "actor.lr_warmup_ratio": 0.285, "critic.lr_warmup_ratio": 0.015,
            "actor.use_kl_loss": False, "algorithm.use_kl_in_reward": True, "algorithm.kl_coef": 0.001,
            "algorithm.kl_ctrl": "fixed", "algorithm.gamma": 1.0, "algorithm.lam": 1.0},
}

MODELS = {"zerosearch_qwen2.5_3b": "Qwen/Qwen2.5-3B", "zerosearch_qwen2.5_7b": "Qwen/Qwen2.5-7B",
          "zerosearch_llama3.2_3b": "meta-llama/Llama-3.2-3B"}


def _get(cfg, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("preset", PRESETS)
def test_preset_holds_the_original_values(preset, algorithm):
    cfg = to_structured(compose_config([f"experiment={preset}", f"algorithm={algorithm}"]))
    expected = {**COMMON, **PER_ALGORITHM[algorithm]}
    if preset in MODELS:
        expected["model.path"] = MODELS[preset]
    wrong = {k: (_get(cfg, k), v) for k, v in expected.items() if _get(cfg, k) != v}
    assert not wrong, wrong
    if algorithm != "ppo":  # the critic is not trained: its warm-up stays at the default
        assert cfg.critic.lr_warmup_ratio == 0.0
    validate_config(cfg, check_paths=False)
    assert not eval_engine_configured(cfg.search)  # the original's command line names no evaluation engine


def test_preset_values_stay_overridable_and_other_runs_keep_their_defaults():
    cfg = to_structured(compose_config(["experiment=zerosearch", "algorithm=ppo", "actor.lr_warmup_ratio=0.1"]))
    assert cfg.actor.lr_warmup_ratio == 0.1 and cfg.critic.lr_warmup_ratio == 0.015
    plain = to_structured(compose_config(["algorithm=ppo"]))
    assert plain.actor.lr_warmup_ratio == 0.0 and plain.critic.lr_warmup_ratio == 0.0
    assert plain.actor.clip_ratio_c == 3.0 and plain.rollout.observation_layout == "search_r1"
    assert plain.rollout.on_eos_without_action == "end" and plain.data.prompt_template == "zerosearch"
    assert "previous action is invalid" not in plain.rollout.invalid_action_text
    toy = to_structured(compose_config(["experiment=toy"]))
    assert toy.rollout.observation_layout == "search_r1" and toy.data.prompt_template == "compact"
    assert toy.search.simulation.prompt_family == "simulate_sft_all_answers"
    assert toy.actor.lr_warmup_steps == 3
