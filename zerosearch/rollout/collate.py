"""From trajectories to padded tensors, and per-batch rollout statistics.

Layout (as verl's): prompts left-padded to the longest prompt, responses right-padded to the longest
response; `input_ids = cat(prompts, responses)`. The attention mask covers every real token, the
observation tokens included (the model reads them); `response_mask` is 1 only on policy tokens, so
everything downstream (log-probs, advantages, whitening, losses) skips the observation holes.
"""

from __future__ import annotations

from typing import Sequence

import torch

from zerosearch.rollout.types import Trajectory


def collate_trajectories(trajs: Sequence[Trajectory], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of trajectories.

    Returns tensors:
        input_ids (B, P+R), attention_mask (B, P+R), position_ids (B, P+R): the full sequences;
        prompts (B, P); responses (B, R); response_mask (B, R) float, 1 on policy tokens;
        rollout_log_probs (B, R) float, the engine's log-probs (0 off the mask).
    """
    if not trajs:
        raise ValueError("collate_trajectories got an empty batch")
    B = len(trajs)
    P = max(len(t.prompt_ids) for t in trajs)
    R = max(max(len(t.response_ids) for t in trajs), 1)
    prompts = torch.full((B, P), pad_id, dtype=torch.long)
    prompt_attn = torch.zeros((B, P), dtype=torch.long)
    responses = torch.full((B, R), pad_id, dtype=torch.long)
    response_attn = torch.zeros((B, R), dtype=torch.long)
    response_mask = torch.zeros((B, R), dtype=torch.float32)
    logp = torch.zeros((B, R), dtype=torch.float32)
    for i, t in enumerate(trajs):
        p, r = len(t.prompt_ids), len(t.response_ids)
        if p:
            prompts[i, P - p:] = torch.tensor(t.prompt_ids)
            prompt_attn[i, P - p:] = 1
        if r:
            responses[i, :r] = torch.tensor(t.response_ids)
            response_attn[i, :r] = 1
            response_mask[i, :r] = torch.tensor(t.response_mask, dtype=torch.float32)
            logp[i, :r] = torch.tensor(t.rollout_log_probs, dtype=torch.float32)
    attention_mask = torch.cat([prompt_attn, response_attn], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": torch.cat([prompts, responses], dim=1),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "prompts": prompts,
        "responses": responses,
        "response_mask": response_mask,
        "rollout_log_probs": logp * response_mask,
    }


def trajectory_metrics(trajs: Sequence[Trajectory], prefix: str = "env/") -> dict[str, float]:
    """Per-batch means of what happened in the rollouts (names under env/ and response_length/)."""
    n = max(len(trajs), 1)

    def mean(xs: Sequence[float]) -> float:
        return float(sum(xs)) / max(len(xs), 1)

    policy = [sum(t.response_mask) for t in trajs]
    total = [len(t.response_ids) for t in trajs]
    searched = [h for t in trajs for h in t.search_has_answer]
    reasons: dict[str, float] = {}
    for t in trajs:
        reasons[t.stats.stop_reason] = reasons.get(t.stats.stop_reason, 0.0) + 1.0 / n
    out = {
        f"{prefix}turns/mean": mean([t.stats.turns for t in trajs]),
        f"{prefix}searches/mean": mean([t.stats.searches for t in trajs]),
        f"{prefix}searches/max": float(max((t.stats.searches for t in trajs), default=0)),
        f"{prefix}search_rate": mean([float(t.stats.searches > 0) for t in trajs]),
        f"{prefix}invalid_actions/mean": mean([t.stats.invalid_actions for t in trajs]),
        f"{prefix}answered": mean([float(t.stats.answered) for t in trajs]),
        f"{prefix}truncated": mean([float(t.stats.truncated) for t in trajs]),
        f"{prefix}search_has_answer": mean([float(h) for h in searched]) if searched else 0.0,
        "response_length/mean": mean(total),
        "response_length/max": float(max(total, default=0)),
        "response_length/policy_tokens_mean": mean(policy),
    }
    out.update({f"{prefix}stop_reason/{k or 'none'}": v for k, v in sorted(reasons.items())})
    out.update(search_again_rates(trajs, prefix))
    return out


def search_again_rates(trajs: Sequence[Trajectory], prefix: str = "env/") -> dict[str, float]:
    """How often a search result was followed by another search, split by whether the result held a gold
    answer: `search_again_after_miss` (answer-free results, e.g. noisy documents) and `..._after_hit`.

    ZeroSearch trains the agent to search again when the documents do not help; a rising `after_miss`
    next to a low `after_hit` is that behaviour. A search at the last allowed turn counts as followed by a
    search when the agent tried to search once more (stop reason `no_answer_at_final_turn`). A rate is left
    out when the batch had no result of its kind.
    """
    counts = {True: [0, 0], False: [0, 0]}  # has_answer -> [results, followed by a search]
    for t in trajs:
        hits = t.search_has_answer
        for i, hit in enumerate(hits):
            again = i < len(hits) - 1 or t.stats.stop_reason == "no_answer_at_final_turn"
            counts[bool(hit)][0] += 1
            counts[bool(hit)][1] += int(again)
    out = {}
    for hit, name in ((False, "miss"), (True, "hit")):
        n, again = counts[hit]
        if n:
            out[f"{prefix}search_again_after_{name}"] = again / n
    return out
