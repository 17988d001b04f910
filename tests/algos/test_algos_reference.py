"""zerosearch.algos against the reference numbers of verl 0.9.1 core_algos (../shared/reference).

Every case of the JSON is checked, every value to 1e-5; the parametrize ids name the seed and the option
set, so a failure says which case broke.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from conftest import IN_CI, SHARED_DATA  # tests/conftest.py: ZS_SHARED_DIR, else ../shared
from zerosearch.algos import advantages, get_adv_estimator, get_policy_loss, losses

REF_PATH = SHARED_DATA.parent / "reference" / "rl_math_vectors_verl_0_9_1.json"
REF: dict[str, Any] | None = json.loads(REF_PATH.read_text()) if REF_PATH.exists() else None
CASES: list[dict[str, Any]] = REF["cases"] if REF else []
ATOL = 1e-5


def t(x: Any) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float32)


def close(actual: Any, expected: Any) -> None:
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float32), torch.as_tensor(expected, dtype=torch.float32),
                               atol=ATOL, rtol=0)


def test_reference_file_present() -> None:
    if REF is None:
        if IN_CI:
            pytest.fail(f"reference vectors not found at {REF_PATH}")
        pytest.skip(f"reference vectors not found at {REF_PATH} (set ZS_SHARED_DIR)")
    assert len(CASES) >= 1
    assert all(set(c) >= {"policy_loss", "kl_token_mean", "grpo", "gae", "value_loss"} for c in CASES)


def _parse_policy_key(key: str) -> tuple[str, dict[str, str]]:
    """'clip_low=0.2,clip_high=0.28,clip_c=3.0,agg=token-mean' or 'gspo,clip_low=0.2,clip_high=0.2'."""
    parts = key.split(",")
    name = "gspo" if parts[0] == "gspo" else "ppo"
    return name, dict(p.split("=", 1) for p in parts if "=" in p)


POLICY_PARAMS = [pytest.param(i, key, id=f"seed{c['seed']}-{key}") for i, c in enumerate(CASES) for key in c["policy_loss"]]


@pytest.mark.parametrize(("case_index", "key"), POLICY_PARAMS)
def test_policy_loss(case_index: int, key: str) -> None:
    case = CASES[case_index]
    expected = case["policy_loss"][key]
    name, opts = _parse_policy_key(key)
    known = {"clip_low", "clip_high", "clip_c", "agg"}
    assert set(opts) <= known, f"reference has options this test does not pass on: {set(opts) - known}"
    args = (t(case["old_log_prob"]), t(case["log_prob"]), t(case["advantages"]), t(case["response_mask"]))
    clip_low, clip_high = float(opts["clip_low"]), float(opts["clip_high"])
    if name == "gspo":
        loss, metrics = losses.gspo_loss(*args, clip_low, clip_high)
        reg_loss, reg_metrics = get_policy_loss("gspo")(*args, clip_low=clip_low, clip_high=clip_high, clip_c=3.0,
                                                        agg="seq-mean-token-mean", norm_len=None)
    else:
        clip_c, agg = float(opts["clip_c"]), opts["agg"]
        loss, metrics = losses.policy_loss(*args, clip_low, clip_high, clip_c, agg)
        reg_loss, reg_metrics = get_policy_loss("ppo")(*args, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c,
                                                       agg=agg, norm_len=None)
    close(loss, expected["loss"])
    close(reg_loss, expected["loss"])
    for metric, value in expected.items():
        if metric == "loss":
            continue
        assert isinstance(metrics[metric], float)
        close(metrics[metric], value)
        close(reg_metrics[metric], value)


KL_PARAMS = [pytest.param(i, kind, id=f"seed{c['seed']}-{kind}") for i, c in enumerate(CASES) for kind in c["kl_token_mean"]]


@pytest.mark.parametrize(("case_index", "kind"), KL_PARAMS)
def test_kl_token_mean(case_index: int, kind: str) -> None:
    case = CASES[case_index]
    mask = t(case["response_mask"])
    per_token = losses.kl_penalty(t(case["log_prob"]), t(case["ref_log_prob"]), kind)
    close(losses.agg_loss(per_token, mask, "token-mean"), case["kl_token_mean"][kind])
    close(losses.kl_loss(t(case["log_prob"]), t(case["ref_log_prob"]), mask, kind, "token-mean"),
          case["kl_token_mean"][kind])


# (reference key, direct call, registry name and keywords)
OUTCOME_VARIANTS = {
    "advantages_std": (lambda r, m, g: advantages.compute_grpo(r, m, g), "grpo", {}),
    "advantages_no_std": (lambda r, m, g: advantages.compute_grpo(r, m, g, norm_by_std=False), "grpo",
                          {"norm_by_std": False}),
    "advantages_rloo": (lambda r, m, g: advantages.compute_rloo(r, m, g), "rloo", {}),
    "advantages_reinforce_plus_plus_gamma1": (
        lambda r, m, g: advantages.compute_reinforce_plus_plus(r, m, 1.0), "reinforce_plus_plus", {"gamma": 1.0}),
}
OUTCOME_PARAMS = [pytest.param(i, key, id=f"seed{c['seed']}-{key}") for i, c in enumerate(CASES) for key in OUTCOME_VARIANTS]


@pytest.mark.parametrize(("case_index", "key"), OUTCOME_PARAMS)
def test_outcome_advantages(case_index: int, key: str) -> None:
    case = CASES[case_index]["grpo"]
    unknown = set(case) - {"token_level_rewards", "group_index"} - set(OUTCOME_VARIANTS)
    assert not unknown, f"reference has outcome results this test does not check: {unknown}"
    rewards, mask, group_ids = t(case["token_level_rewards"]), t(CASES[case_index]["response_mask"]), case["group_index"]
    direct, name, kwargs = OUTCOME_VARIANTS[key]
    adv, _ = direct(rewards, mask, group_ids)
    close(adv, case[key])
    reg_adv, _ = get_adv_estimator(name)(rewards, mask, group_ids=group_ids, **kwargs)
    close(reg_adv, case[key])


GAE_PARAMS = [pytest.param(i, id=f"seed{c['seed']}") for i, c in enumerate(CASES)]


@pytest.mark.parametrize("case_index", GAE_PARAMS)
def test_gae(case_index: int) -> None:
    case = CASES[case_index]
    gae, mask, rewards = case["gae"], t(case["response_mask"]), t(case["grpo"]["token_level_rewards"])
    adv, ret = advantages.compute_gae(rewards, t(gae["values"]), mask, gae["gamma"], gae["lam"])
    close(adv, gae["advantages_whitened_times_mask"])
    close(ret, gae["returns_times_mask"])
    reg_adv, reg_ret = get_adv_estimator("gae")(rewards, mask, values=t(gae["values"]), gamma=gae["gamma"],
                                                lam=gae["lam"])
    close(reg_adv, gae["advantages_whitened_times_mask"])
    close(reg_ret, gae["returns_times_mask"])


@pytest.mark.parametrize("case_index", GAE_PARAMS)
def test_value_loss(case_index: int) -> None:
    # The reference's value loss takes the GAE case's values as old values and its returns as targets.
    case = CASES[case_index]
    vl, gae = case["value_loss"], case["gae"]
    loss, clipfrac = losses.value_loss(t(vl["vpreds"]), t(gae["values"]), t(gae["returns_times_mask"]),
                                       t(case["response_mask"]), vl["cliprange_value"], vl["agg"])
    close(loss, vl["loss"])
    assert isinstance(clipfrac, float)
    close(clipfrac, vl["clipfrac"])
