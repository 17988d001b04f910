"""zerosearch.algos is torch-only: importing it pulls in none of the heavy machinery; and its public
signatures are the ones the rest of the project calls."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import zerosearch.algos as algos
from zerosearch.algos import advantages, losses

REPO_ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = ("ray", "transformers", "vllm", "omegaconf", "hydra")

# Run in a fresh interpreter: prints the heavy modules present after the import, then the top-level
# packages the import added beyond what torch itself loads (torch loads numpy, so numpy is not ours).
PROBE = f"""
import sys
import torch
before = {{m.split('.')[0] for m in sys.modules}}
import zerosearch.algos, zerosearch.algos.advantages, zerosearch.algos.losses, zerosearch.algos.kl
import zerosearch.algos.entropy, zerosearch.algos.masked
assert zerosearch.algos.__file__.startswith(sys.argv[1]), zerosearch.algos.__file__
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))
added = {{m.split('.')[0] for m in sys.modules}} - before - set(sys.stdlib_module_names) - {{'zerosearch'}}
print(','.join(heavy))
print(','.join(sorted(added)))
"""


def test_import_is_torch_only() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE, str(REPO_ROOT)], cwd=REPO_ROOT, env=env, capture_output=True,
                         text=True, check=True)
    heavy, added = (out.stdout.splitlines() + ["", ""])[:2]
    assert heavy == "", f"importing zerosearch.algos imported: {heavy}"
    assert added == "", f"importing zerosearch.algos imported non-stdlib packages beyond torch: {added}"


def _params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_interface_signatures() -> None:
    assert _params(advantages.compute_gae) == ["token_level_rewards", "values", "response_mask", "gamma", "lam"]
    assert _params(advantages.compute_grpo) == ["token_level_rewards", "response_mask", "group_ids", "norm_by_std",
                                                "epsilon"]
    assert _params(advantages.compute_rloo) == ["token_level_rewards", "response_mask", "group_ids"]
    assert _params(advantages.compute_reinforce_plus_plus) == ["token_level_rewards", "response_mask", "gamma"]
    assert _params(losses.policy_loss)[:8] == ["old_log_prob", "log_prob", "advantages", "response_mask",
                                               "clip_low", "clip_high", "clip_c", "agg"]
    assert _params(losses.gspo_loss)[:6] == ["old_log_prob", "log_prob", "advantages", "response_mask", "clip_low",
                                             "clip_high"]
    assert _params(losses.kl_penalty) == ["log_prob", "ref_log_prob", "kind"]
    assert _params(losses.agg_loss)[:4] == ["loss_mat", "mask", "mode", "norm_len"]
    assert _params(losses.value_loss)[:6] == ["values", "old_values", "returns", "response_mask", "clip", "agg"]
    assert _params(losses.entropy_from_logits)[0] == "logits"
    uniform_adv = ["token_level_rewards", "response_mask", "values", "group_ids", "gamma", "lam", "norm_by_std",
                   "epsilon"]
    for fn in algos.ADV_ESTIMATORS.values():
        assert _params(fn) == uniform_adv
    for fn in algos.POLICY_LOSSES.values():
        assert _params(fn)[:9] == ["old_log_prob", "log_prob", "advantages", "response_mask", "clip_low",
                                   "clip_high", "clip_c", "agg", "norm_len"]
