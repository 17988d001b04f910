"""Collapse guards: early warnings that a GRPO search agent is collapsing (reported around step 150-200).

Three signs, each logged every step under `guards/` and warned about when it crosses its threshold
(`trainer.guards.*`):
    entropy           actor/entropy, mean over policy tokens (nats): near 0 the policy is deterministic
    response length   the mean response's share of its budget (rollout.max_total_length - mean prompt
                      length): near 1 responses run into the limit (repetition, no answer)
    never searching   the share of trajectories without one search: the agent stopped using the tool
Non-finite losses and skipped updates are counted elsewhere (the workers' update step); this module only
reads the step's metrics.
"""

from __future__ import annotations

from zerosearch.config.schema import GuardsConfig


def guard_metrics(m: dict[str, float], max_total_length: int) -> dict[str, float]:
    """`guards/*` from the step's metrics (needs env/search_rate, response_length/mean, prompt_length/mean)."""
    budget = max(max_total_length - m.get("prompt_length/mean", 0.0), 1.0)
    return {"guards/response_length_share": m.get("response_length/mean", 0.0) / budget,
            "guards/no_search_share": 1.0 - m.get("env/search_rate", 0.0)}


def guard_warnings(m: dict[str, float], g: GuardsConfig, step: int) -> list[str]:
    """One WARNING line per crossed threshold (empty when none is crossed)."""
    out = []
    ent = m.get("actor/entropy")
    if ent is not None and g.min_entropy > 0 and ent < g.min_entropy:
        out.append(f"[guards] WARNING step {step}: actor/entropy {ent:.4f} < trainer.guards.min_entropy "
                   f"{g.min_entropy:g}: the policy is becoming deterministic (collapse?)")
    share = m.get("guards/response_length_share")
    if share is not None and g.max_response_length_share < 1 and share > g.max_response_length_share:
        out.append(f"[guards] WARNING step {step}: mean response fills {share:.0%} of its budget > "
                   f"trainer.guards.max_response_length_share {g.max_response_length_share:g} (responses run into "
                   "rollout.max_total_length)")
    never = m.get("guards/no_search_share")
    if never is not None and g.max_no_search_share < 1 and never > g.max_no_search_share:
        out.append(f"[guards] WARNING step {step}: {never:.0%} of trajectories never searched > "
                   f"trainer.guards.max_no_search_share {g.max_no_search_share:g}")
    return out


def check_step(m: dict[str, float], g: GuardsConfig, max_total_length: int, step: int) -> list[str]:
    """Add `guards/*` metrics (and `guards/warnings`, the count) to `m`; return the warning lines."""
    m.update(guard_metrics(m, max_total_length))
    warnings = guard_warnings(m, g, step)
    m["guards/warnings"] = float(len(warnings))
    return warnings
