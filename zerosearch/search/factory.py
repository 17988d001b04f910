"""Builds the search engine a run asks for: the training engine (SEARCH_MODE) and the evaluation engine
(SEARCH_ENGINE) are chosen independently."""

from __future__ import annotations

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.search.types import SearchEngine

SIMULATED = ("simulate_sft", "simulate_prompt")


def curriculum_horizon(total_steps: int) -> int:
    """Steps are passed to the engine 0-based: step 0 draws at START_THRESHOLD and step total_steps - 1
    (the last) at END_THRESHOLD."""
    return max(total_steps - 1, 1)


def build_search_engine(cfg: ZeroSearchConfig, role: str) -> SearchEngine:
    """The engine for `role`: "train" uses search.mode (cache: search.cache_train), "eval" uses
    search.eval_engine (cache: search.cache_eval; "wiki" means local retrieval)."""
    if role not in ("train", "eval"):
        raise ValueError(f"role must be train or eval, got {role!r}")
    s = cfg.search
    kind = s.mode if role == "train" else ("retrieval" if s.eval_engine == "wiki" else s.eval_engine)
    cache = s.cache_train if role == "train" else s.cache_eval
    if kind in SIMULATED:
        from zerosearch.search.simulated import SimulatedSearchEngine

        return SimulatedSearchEngine.from_config(s.simulation, cfg.curriculum, mode=kind, topk=s.topk,
                                                 total_steps=curriculum_horizon(cfg.trainer.total_steps),
                                                 seed=cfg.trainer.seed, cache=cache)
    if kind == "retrieval":
        from zerosearch.search.retrieval import retrieval_engine_from_config

        return retrieval_engine_from_config(s.retrieval, topk=s.topk)
    if kind == "google":
        from zerosearch.search.web import SerpApiEngine

        return SerpApiEngine.from_config(s.web, topk=s.topk)
    raise ValueError(f"unknown search engine {kind!r}; known: {', '.join((*SIMULATED, 'retrieval', 'google'))}")
