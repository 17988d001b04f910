"""Bad configuration is refused at start-up with a message that names the key, the bad value and what is
allowed. Each test shows the exact message a user sees for one kind of bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ValidationError

from zerosearch.config.store import compose_config, to_structured
from zerosearch.config.validate import ConfigError, check_override_keys, check_world_size, validate_config

ROOT = Path(__file__).resolve().parents[2]
# a config that is valid without files: a retrieval server URL instead of a local corpus
OK = ["search.retrieval.url=http://127.0.0.1:8000/retrieve"]


def problems(overrides: list[str], check_paths: bool = False) -> list[str]:
    """The problems validate_config reports for the default config plus `overrides` ([] when valid)."""
    cfg = to_structured(compose_config(OK + overrides))
    try:
        validate_config(cfg, check_paths=check_paths)
    except ConfigError as e:
        assert str(e).startswith(f"invalid configuration ({len(e.problems)} problem")
        return e.problems
    return []


def test_the_default_config_is_valid():
    assert problems([]) == []


def test_unknown_key_suggests_the_closest_and_lists_the_section():
    with pytest.raises(ConfigError) as e:
        check_override_keys(["rollout.max_turn=3"])
    msg = e.value.problems[0]
    assert msg.startswith("unknown key 'rollout.max_turn' (did you mean rollout.max_turns")
    assert "known keys in 'rollout':" in msg and "max_response_length" in msg


def test_unknown_section_lists_the_sections_and_groups():
    with pytest.raises(ConfigError) as e:
        check_override_keys(["trainr.total_steps=3"])
    assert "unknown key 'trainr.total_steps': no section 'trainr'" in str(e.value)
    assert "trainer" in str(e.value) and "groups: algorithm, search, experiment" in str(e.value)
    check_override_keys(["algorithm=ppo", "trainer.total_steps=3", "+extra.key=1", "hydra.run.dir=x"])  # all fine


def test_wrong_type_names_the_key_and_value():
    with pytest.raises(ConfigCompositionException) as e:
        compose_config(["trainer.total_steps=abc"])
    cause = e.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "Value 'abc' of type 'str' could not be converted to Integer" in str(cause)
    assert "full_key: trainer.total_steps" in str(cause)


def test_probability_outside_0_1():
    assert problems(["curriculum.start_threshold=-0.5", "trainer.val_noise_levels=[0,-0.1]"]) == [
        "curriculum.start_threshold=-0.5: must be a probability in [0, 1]",
        "trainer.val_noise_levels[1]=-0.1: must be a probability in [0, 1]",
    ]


def test_end_threshold_below_start_unless_meant():
    assert problems(["curriculum.start_threshold=0.5", "curriculum.end_threshold=0.25"]) == [
        "curriculum.end_threshold=0.25: is below curriculum.start_threshold (0.5); set "
        "curriculum.allow_decreasing=true if a falling noise schedule is meant"]
    assert problems(["curriculum.start_threshold=0.5", "curriculum.end_threshold=0.25",
                     "curriculum.allow_decreasing=true"]) == []


def test_mini_batch_that_does_not_divide_the_batch():
    assert problems(["data.train_batch_size=10", "actor.ppo_mini_batch_size=4"]) == [
        "actor.ppo_mini_batch_size=4: must divide data.train_batch_size (10)"]


def test_batch_that_does_not_divide_over_the_workers():
    cfg = to_structured(compose_config(OK + ["data.train_batch_size=3", "actor.ppo_mini_batch_size=3",
                                             "rollout.n=3"]))
    validate_config(cfg, check_paths=False)
    with pytest.raises(ConfigError) as e:
        check_world_size(cfg, 2)
    assert e.value.problems == [
        "data.train_batch_size=3: x rollout.n (3) = 9 trajectories must divide evenly over 2 workers",
        "actor.ppo_mini_batch_size=3: x rollout.n (3) = 9 trajectories must divide evenly over 2 workers"]
    check_world_size(cfg, 3)


def test_missing_paths_are_named(tmp_path):
    missing = str(tmp_path / "no_such_model")
    got = problems([f"model.path={missing}", f"data.train_files=[{tmp_path / 'train.parquet'}]",
                    f"search.retrieval.corpus_path={tmp_path / 'corpus.jsonl'}", "search.retrieval.url=null",
                    "search.eval_engine=retrieval"], check_paths=True)
    assert got == [
        f"search.retrieval.corpus_path='{tmp_path / 'corpus.jsonl'}': corpus file does not exist",
        f"model.path='{missing}': model folder does not exist",
        f"data.train_files[0]='{tmp_path / 'train.parquet'}': training file does not exist"]
    assert problems([], check_paths=True) == [
        "model.path='': is required (MODEL_PATH): a Hugging Face model folder",
        "data.train_files=[]: no training data: set DATA_PATH (data.path) or data.train_files"]


def test_unknown_choice_suggests_the_closest():
    assert problems(["algorithm.adv_estimator=grpoo", "rollout.engine=vlm"]) == [
        "rollout.engine='vlm': must be one of hf, vllm (did you mean 'vllm'?)",
        "algorithm.adv_estimator='grpoo': must be one of gae, grpo, reinforce, reinforce_plus_plus, "
        "reinforce_plus_plus_baseline, rloo (did you mean 'grpo'?)"]


def test_group_estimators_need_more_than_one_sample():
    assert problems(["rollout.n=1"]) == [
        "rollout.n=1: algorithm.adv_estimator=grpo compares samples of a prompt: needs >= 2"]
    assert problems(["algorithm=reinforce", "rollout.n=1"]) == []


def test_context_budget_must_leave_room_for_a_response():
    assert problems(["data.max_prompt_length=4096", "rollout.max_total_length=4096"]) == [
        "rollout.max_total_length=4096: must exceed data.max_prompt_length (4096) to leave room for a response"]


def test_simulated_search_needs_a_server_or_a_local_model():
    assert problems(["search.simulation.servers=''"]) == [
        "search.simulation.servers='': needs at least one host[:port] for an HTTP transport"]
    assert problems(["search.simulation.transport=inprocess"]) == [
        "search.simulation.model_path=None: the inprocess transport needs the simulator's model folder"]


def test_negative_and_zero_sizes():
    assert problems(["rollout.max_turns=-1", "search.topk=0", "actor.lr=0"]) == [
        "rollout.max_turns=-1: must be >= 0", "search.topk=0: must be > 0", "actor.lr=0.0: must be > 0"]


def test_the_cli_reports_every_problem_and_exits_2():
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    r = subprocess.run([sys.executable, "-m", "zerosearch.train", *OK, "model.path=/no/such/model",
                        "curriculum.end_threshold=2", "rollout.top_p=0"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "error: invalid configuration (4 problems):" in r.stderr
    for line in ("  - rollout.top_p=0.0: must be in (0, 1]", "  - curriculum.end_threshold=2.0: must be a probability",
                 "  - model.path='/no/such/model': model folder does not exist", "  - data.train_files=[]: no training"):
        assert line in r.stderr, line
    r = subprocess.run([sys.executable, "-m", "zerosearch.train", "rollout.max_turn=3"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "unknown key 'rollout.max_turn'" in r.stderr


def test_cfg_job_prints_the_resolved_configuration():
    r = subprocess.run([sys.executable, "-m", "zerosearch.train", "--cfg", "job", "algorithm=ppo",
                        "trainer.total_steps=7"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "total_steps: 7" in r.stdout and "adv_estimator: gae" in r.stdout


def test_no_evaluation_engine_skips_validation_but_training_retrieval_needs_an_index():
    from zerosearch.config.validate import eval_engine_configured

    cfg = to_structured(compose_config([]))  # eval_engine retrieval, no url, no corpus: valid, not configured
    validate_config(cfg, check_paths=False)
    assert not eval_engine_configured(cfg.search)
    assert eval_engine_configured(to_structured(compose_config(OK)).search)
    assert not eval_engine_configured(to_structured(compose_config(OK + ["search.eval_engine=none"])).search)
    cfg = to_structured(compose_config(["search=retrieval"]))
    with pytest.raises(ConfigError, match=r"search.retrieval.corpus_path=None: training by retrieval"):
        validate_config(cfg, check_paths=False)


def test_new_choices_are_checked():
    assert problems(["rollout.observation_layout=bing"]) == [
        "rollout.observation_layout='bing': must be one of search_r1, simulated, google, wiki, auto"]
    assert problems(["rollout.on_eos_without_action=stop"]) == [
        "rollout.on_eos_without_action='stop': must be one of end, continue"]
    assert problems(["search.simulation.prompt_family=simulate_sft_all"])[0].startswith(
        "search.simulation.prompt_family='simulate_sft_all': must be one of simulate_prompt, "
        "simulate_prompt_all_answers, simulate_sft, simulate_sft_all_answers (did you mean")
    assert problems(["data.prompt_template=r1"]) == [
        "data.prompt_template='r1': must be one of search_r1, zerosearch, compact or an existing .txt template file"]
    assert problems(["actor.clip_ratio_c=null"]) == []
    assert problems(["actor.clip_ratio_c=1.0"]) == [
        "actor.clip_ratio_c=1.0: the dual-clip bound must be > 1 (or null: no dual clip)"]
