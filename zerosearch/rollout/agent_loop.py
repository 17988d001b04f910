"""The multi-turn agent loop over token ids: generate -> parse action -> search -> append observation.

For a batch of prompts x n samples, each turn:
  1. every live trajectory generates until `</search>`, `</answer>` or end-of-sequence (engine stop
     strings / ids), keeping the sampled ids and their log-probs;
  2. its action is parsed: a search, an answer, or an invalid action (which gets a short corrective
     observation and is counted);
  3. the rows that searched are sent to the search engine *together*, each query tied to its row;
  4. each result is formatted within `max_obs_length` tokens and appended as ids with loss mask 0.
After `max_turns` turns a final turn must answer: a search there is not sent (the original still sent
those requests and threw the results away). A trajectory that would outgrow `max_total_length` ends
cleanly, marked truncated; the prompt (and so the question) is never cut.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Sequence

from zerosearch.config.schema import RolloutConfig
from zerosearch.rollout.actions import STOP_STRINGS, parse_action
from zerosearch.generation.types import GenerationEngine, SamplingParams
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.search.formatting import format_observation
from zerosearch.search.types import SearchEngine, SearchRequest
from zerosearch.utils.seeding import stable_seed

# the smallest observation worth appending: tags plus a few tokens of text
_MIN_OBS_TOKENS = 16


class AgentLoop:
    """Runs rollouts of an agent against a search engine.

    Args:
        engine: generates turns (HF, vLLM, or a proxy over Ray workers).
        search: answers searches (simulated in training, real at evaluation).
        tokenizer: the agent's tokenizer (decodes turns, encodes observations).
        cfg: the rollout section of the run config (budgets, texts; `zerosearch.config.schema.RolloutConfig`).
    """

    def __init__(self, engine: GenerationEngine, search: SearchEngine, tokenizer: Any, cfg: RolloutConfig):
        self.engine, self.search, self.tokenizer, self.cfg = engine, search, tokenizer, cfg
        self.stop_token_ids = tuple(sorted({i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id,
                                                        tokenizer.convert_tokens_to_ids("<|im_end|>"))
                                            if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id}))
        self._invalid_ids = self._encode(cfg.invalid_action_text)
        self.timing: dict[str, float] = {}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def run(self, items: Sequence[PromptItem], n: int, params: SamplingParams, *, step: int = 0,
            noise_prob: float | None = None) -> list[Trajectory]:
        """Roll out every item n times. Returns trajectories item-major: item0 s0..s(n-1), item1 s0, ...

        Args:
            params: sampling of every turn (stop strings and ids are added here).
            step: training step, passed to the search engine (curriculum noise).
            noise_prob: force this noise probability (validation at fixed noise); None = curriculum.
        """
        cfg = self.cfg
        params = replace(params, max_new_tokens=cfg.max_response_length, stop_token_ids=self.stop_token_ids,
                         stop_strings=STOP_STRINGS)
        trajs = [Trajectory(prompt_ids=list(it.prompt_ids), item=it, sample_index=k) for it in items for k in range(n)]
        for t in trajs:
            if len(t.prompt_ids) >= cfg.max_total_length:
                raise ValueError(f"prompt of row {t.item.row_id!r} has {len(t.prompt_ids)} tokens, not below "
                                 f"rollout.max_total_length={cfg.max_total_length}: raise the budget or drop the row")
        live = list(range(len(trajs)))
        t_gen = t_search = 0.0
        for turn in range(cfg.max_turns + 1):
            final = turn == cfg.max_turns
            caps = [min(cfg.max_response_length, cfg.max_total_length - len(trajs[i])) for i in live]
            gen_rows = [i for i, c in zip(live, caps) if c > 0]
            for i, c in zip(live, caps):
                if c <= 0:
                    self._end(trajs[i], "context_budget", truncated=True)
            if not gen_rows:
                break
            # one seed per trajectory and turn: its sample depends on nothing else in the batch
            seeds = None if params.seed is None else [stable_seed(params.seed, trajs[i].uid, turn) for i in gen_rows]
            t0 = time.perf_counter()
            outs = self.engine.generate([trajs[i].prompt_ids + trajs[i].response_ids for i in gen_rows], params,
                                        [c for c in caps if c > 0], seeds)
            t_gen += time.perf_counter() - t0
            searching: list[int] = []
            requests: list[SearchRequest] = []
            next_live: list[int] = []
            for i, out in zip(gen_rows, outs):
                t = trajs[i]
                t.extend(out.token_ids, 1, out.log_probs)
                t.stats.turns += 1
                text = self.tokenizer.decode(out.token_ids)
                action, cut = parse_action(text, cfg.max_query_chars)
                t.stats.query_chars_cut += cut
                if action.kind == "answer":
                    t.stats.answered = True
                    self._end(t, "answer")
                elif out.finish_reason == "stop" and out.stop not in STOP_STRINGS:
                    self._end(t, "eos")  # ended the sequence without answering
                elif final:
                    self._end(t, "no_answer_at_final_turn")
                elif action.kind == "search":
                    searching.append(i)
                    requests.append(SearchRequest(
                        query=action.content, row_id=t.uid, question=t.item.question,
                        golden_answers=tuple(t.item.golden_answers), data_source=t.item.data_source, step=step,
                        turn=t.stats.searches, noise_prob=noise_prob))
                elif out.finish_reason == "length" and len(t) >= cfg.max_total_length:
                    self._end(t, "context_budget", truncated=True)
                else:  # invalid: a cut-off turn, a malformed tag, an empty query
                    t.stats.invalid_actions += 1
                    if self._append_observation(t, self._invalid_ids):
                        next_live.append(i)
            if requests:
                t0 = time.perf_counter()
                results = self.search.search(requests)
                t_search += time.perf_counter() - t0
                for i, res in zip(searching, results):
                    t = trajs[i]
                    t.stats.searches += 1
                    t.search_has_answer.append(res.has_answer(t.item.golden_answers))
                    budget = min(cfg.max_obs_length, cfg.max_total_length - len(t) - 1)
                    if budget < _MIN_OBS_TOKENS:
                        self._end(t, "context_budget", truncated=True)
                        continue
                    obs = self._encode(format_observation(res.documents, self._encode, budget))
                    if self._append_observation(t, obs):
                        next_live.append(i)
            live = sorted(next_live)
            if not live:
                break
        for i in live:  # only reachable if the loop ran out of turns with rows still live
            self._end(trajs[i], "max_turns", truncated=True)
        for t in trajs:
            t.response_text = self.tokenizer.decode(t.response_ids)
        self.timing = {"gen": t_gen, "search": t_search}
        return trajs

    def _append_observation(self, t: Trajectory, ids: list[int]) -> bool:
        """Append environment ids (mask 0); end the trajectory instead if they would not fit."""
        if len(t) + len(ids) >= self.cfg.max_total_length:
            self._end(t, "context_budget", truncated=True)
            return False
        t.extend(ids, 0)
        return True

    @staticmethod
    def _end(t: Trajectory, reason: str, truncated: bool = False) -> None:
        t.stats.stop_reason = reason
        t.stats.truncated = truncated
