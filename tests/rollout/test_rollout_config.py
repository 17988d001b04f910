"""The rollout keys of issue 16 in start-up validation: each bad value is named with its key."""

from __future__ import annotations

import pytest

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.config.validate import ConfigError, validate_config


def _problems_of(cfg: ZeroSearchConfig) -> str:
    """Every validation problem of cfg, as the error message lists them ("" when valid)."""
    try:
        validate_config(cfg, check_paths=False)
    except ConfigError as e:
        return str(e)
    return ""


def _problems(**rollout) -> str:
    cfg = ZeroSearchConfig()
    for k, v in rollout.items():
        setattr(cfg.rollout, k, v)
    return _problems_of(cfg)


@pytest.mark.parametrize("key,value", [("mode", "parallel"), ("on_eos_without_action", "stop"),
                                       ("async_search_unit", "thread"), ("async_max_searches", 0)])
def test_bad_rollout_values_name_their_key(key, value):
    assert f"rollout.{key}={value!r}" in _problems(**{key: value})


def test_engine_log_probs_as_old_needs_an_exactly_on_policy_step():
    cfg = ZeroSearchConfig()
    cfg.rollout.engine_log_probs_as_old = True
    cfg.actor.ppo_mini_batch_size = cfg.data.train_batch_size // 2
    with pytest.raises(ConfigError, match="rollout.engine_log_probs_as_old"):
        validate_config(cfg, check_paths=False)
    cfg.actor.ppo_mini_batch_size = cfg.data.train_batch_size
    assert "engine_log_probs_as_old" not in _problems_of(cfg)


def test_inprocess_simulator_refuses_per_request_async_searches():
    cfg = ZeroSearchConfig()
    cfg.search.mode = "simulate_sft"
    cfg.search.simulation.transport = "inprocess"
    cfg.search.simulation.model_path = "/some/model"
    cfg.rollout.mode, cfg.rollout.async_search_unit = "async", "request"
    assert "rollout.async_search_unit='request'" in _problems_of(cfg)
    cfg.rollout.async_search_unit = "auto"
    assert "async_search_unit" not in _problems_of(cfg)
