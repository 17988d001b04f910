"""What happens to ONE trajectory at each of its turns, whatever drives the batch.

The rules of a turn live here once and both drivers call them: the turn-synchronous loop
(`agent_loop.AgentLoop`, every live row generates, then the turn's searches go out together) and the
asynchronous scheduler (`async_scheduler.AsyncScheduler`, each trajectory goes back to generation as soon
as its own search returned). A trajectory is live while `t.stats.stop_reason` is empty; its turn index is
`t.stats.turns` (generation calls so far), so its seed `stable_seed(seed, uid, turn)` and its final-turn
rule do not depend on which other trajectories share a generate call.

Per turn:
  1. `generation_cap`: tokens it may generate (ends it, truncated, when its context is full);
  2. `after_generation`: append the sampled ids; parse the action; answer / end-of-sequence / final turn
     end it; a search returns the request to send; anything else is an invalid action (notice appended);
  3. `after_search`: append the formatted observation within the observation and context budgets.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from zerosearch.config.schema import RolloutConfig
from zerosearch.generation.types import GenerationOutput, SamplingParams
from zerosearch.rollout.actions import STOP_STRINGS, parse_action
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.search.formatting import format_result
from zerosearch.search.types import SearchRequest, SearchResult
from zerosearch.utils.seeding import stable_seed

# the smallest observation worth appending: tags plus a few tokens of text
_MIN_OBS_TOKENS = 16

EOS_ACTIONS = ("end", "continue")


def is_live(t: Trajectory) -> bool:
    """A trajectory is live until a stop reason is set."""
    return not t.stats.stop_reason


def end(t: Trajectory, reason: str, truncated: bool = False) -> None:
    t.stats.stop_reason = reason
    t.stats.truncated = truncated


@dataclass
class RolloutTiming:
    """Wall-clock accounting of one rollout (seconds).

    gen: inside engine.generate; search: with at least one search in flight (the union of the intervals,
    so overlapping searches count once); rollout: the whole run. The engine idles for rollout - gen.
    """

    gen: float = 0.0
    search: float = 0.0
    rollout: float = 0.0
    searches: int = 0
    generate_calls: int = 0

    @property
    def engine_idle_share(self) -> float:
        return max(0.0, 1.0 - self.gen / self.rollout) if self.rollout > 0 else 0.0

    def as_dict(self) -> dict[str, float]:
        return {"gen": self.gen, "search": self.search, "rollout": self.rollout,
                "engine_idle_share": self.engine_idle_share, "searches": float(self.searches),
                "generate_calls": float(self.generate_calls)}


class TurnRules:
    """The per-trajectory turn logic of one rollout (one `AgentLoop.run` call).

    Args:
        cfg: the rollout config (budgets, texts, `on_eos_without_action`).
        tokenizer: the agent's tokenizer (decodes turns, encodes observations).
        invalid_ids: the invalid-action notice, encoded once per loop.
        step, noise_prob: passed on in every search request (curriculum noise).
    """

    def __init__(self, cfg: RolloutConfig, tokenizer: Any, invalid_ids: list[int], step: int,
                 noise_prob: float | None):
        if cfg.on_eos_without_action not in EOS_ACTIONS:
            raise ValueError(f"rollout.on_eos_without_action={cfg.on_eos_without_action!r}: must be one of "
                             f"{', '.join(EOS_ACTIONS)}")
        self.cfg, self.tokenizer, self.invalid_ids = cfg, tokenizer, invalid_ids
        self.step, self.noise_prob = step, noise_prob

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    @staticmethod
    def start(items: Sequence[PromptItem], n: int, max_total_length: int) -> list[Trajectory]:
        """n empty trajectories per item, item-major; a prompt that leaves no room is a clear error."""
        trajs = [Trajectory(prompt_ids=list(it.prompt_ids), item=it, sample_index=k) for it in items for k in range(n)]
        for t in trajs:
            if len(t.prompt_ids) >= max_total_length:
                raise ValueError(f"prompt of row {t.item.row_id!r} has {len(t.prompt_ids)} tokens, not below "
                                 f"rollout.max_total_length={max_total_length}: raise the budget or drop the row")
        return trajs

    def generation_cap(self, t: Trajectory) -> int:
        """Tokens t may generate this turn; 0 ends it (its context is full, or it ran out of turns)."""
        if t.stats.turns > self.cfg.max_turns:  # unreachable while the final turn always ends a trajectory
            end(t, "max_turns", truncated=True)
            return 0
        cap = min(self.cfg.max_response_length, self.cfg.max_total_length - len(t))
        if cap <= 0:
            end(t, "context_budget", truncated=True)
        return max(cap, 0)

    @staticmethod
    def seed(params: SamplingParams, t: Trajectory) -> int | None:
        """One seed per trajectory and turn: its sample depends on nothing else in the generate call."""
        return None if params.seed is None else stable_seed(params.seed, t.uid, t.stats.turns)

    def after_generation(self, t: Trajectory, out: GenerationOutput) -> SearchRequest | None:
        """Append a generated turn and act on it. Returns the search to send, or None (t then either ended
        or is ready to generate again, after an invalid-action notice)."""
        cfg = self.cfg
        final = t.stats.turns == cfg.max_turns  # the turn index before this generation
        t.extend(out.token_ids, 1, out.log_probs)
        t.stats.turns += 1
        action, cut = parse_action(self.tokenizer.decode(out.token_ids), cfg.max_query_chars)
        t.stats.query_chars_cut += cut
        eos = out.finish_reason == "stop" and out.stop not in STOP_STRINGS
        if action.kind == "answer":
            t.stats.answered = True
            end(t, "answer")
        elif eos and cfg.on_eos_without_action == "end":
            end(t, "eos")  # ended the sequence without answering
        elif final:
            end(t, "no_answer_at_final_turn")
        elif action.kind == "search":
            return SearchRequest(query=action.content, row_id=t.uid, question=t.item.question,
                                 golden_answers=tuple(t.item.golden_answers), data_source=t.item.data_source,
                                 step=self.step, turn=t.stats.searches, noise_prob=self.noise_prob)
        elif out.finish_reason == "length" and len(t) >= cfg.max_total_length:
            end(t, "context_budget", truncated=True)
        else:  # invalid: a cut-off turn, a malformed tag, an empty query (or, with `continue`, an eos)
            t.stats.invalid_actions += 1
            self._append_observation(t, self.invalid_ids)
        return None

    def after_search(self, t: Trajectory, res: SearchResult) -> None:
        """Count the search and append its observation within the budgets (or end t, truncated)."""
        cfg = self.cfg
        t.stats.searches += 1
        t.search_has_answer.append(res.has_answer(t.item.golden_answers))
        budget = min(cfg.max_obs_length, cfg.max_total_length - len(t) - 1)
        if budget < _MIN_OBS_TOKENS:
            end(t, "context_budget", truncated=True)
            return
        # the observation in rollout.observation_layout ("auto": the answering engine's own, as the original)
        self._append_observation(t, self._encode(format_result(res, self._encode, budget, cfg.observation_layout)))

    def finish(self, trajs: Sequence[Trajectory]) -> None:
        """Decode every response once (for the reward and the logs)."""
        for t in trajs:
            t.response_text = self.tokenizer.decode(t.response_ids)

    def _append_observation(self, t: Trajectory, ids: list[int]) -> None:
        """Append environment ids (mask 0); end the trajectory instead if they would not fit."""
        if len(t) + len(ids) >= self.cfg.max_total_length:
            end(t, "context_budget", truncated=True)
            return
        t.extend(ids, 0)


def turn_params(params: SamplingParams, cfg: RolloutConfig, stop_token_ids: tuple[int, ...]) -> SamplingParams:
    """The sampling of every turn: the caller's, plus the turn's token cap and the action stop strings."""
    return replace(params, max_new_tokens=cfg.max_response_length, stop_token_ids=stop_token_ids,
                   stop_strings=STOP_STRINGS)


def union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Seconds covered by at least one (start, end) interval: overlapping searches count once."""
    total, reach = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total
