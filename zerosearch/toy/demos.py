"""Demonstration trajectories for the agent's SFT warm start, built from the world's real documents.

Kinds of demonstration (as token ids with a loss mask that is 0 on the inserted observations, exactly as
RL trains):
  search      search the fact, read its document, answer (copying the answer out of the document)
  direct      answer at once without searching (a guess: for an unseen entity it is usually wrong)
  retry       the first search returns a useless document (another fact, as a noisy simulated result
              would be); search again, then answer
  two_hop     search the country's neighbour, read its name, search the neighbour's fact, answer

Why a two-phase mixture (../shared/TOY_WORLD_NOTES.md): the warm start should copy well when it searches
but search rarely, so that RL has something to learn (when to search) without first destroying the copy
skill. The first phase has few `direct` demonstrations (the model learns to copy), the last phase many
(the model learns to skip searching often).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from zerosearch.data.prompts import encode_prompt
from zerosearch.search.formatting import format_observation
from zerosearch.search.types import Document
from zerosearch.toy.world import ATTRIBUTES, QUESTIONS, TWO_HOP, Country, World, query_for
from zerosearch.simulator.sft import SFTExample


@dataclass
class DemoMix:
    """Shares of demonstration kinds (normalised when sampled)."""

    search: float
    direct: float
    retry: float
    two_hop: float


def doc_of(c: Country, attribute: str) -> Document:
    """The corpus document of one fact, as retrieval returns it."""
    return Document(title=c.name, text=c.fact(attribute))


class DemoBuilder:
    """Turns world questions into SFT examples for a tokenizer.

    Args:
        prompt_template: the agent prompt (as data.prompt_template at RL time).
        world: the world (documents are taken from its countries).
        tokenizer: the agent's tokenizer (chat template applied to the prompt as at run time).
        max_obs_length: observation token budget (as rollout.max_obs_length).
        topk: documents per search result (as search.topk); extra documents are random other countries.
    """

    def __init__(self, world: World, tokenizer: Any, max_obs_length: int, topk: int = 1, seed: int = 0,
                 prompt_template: str = "compact"):
        self.world, self.tok, self.max_obs, self.topk = world, tokenizer, max_obs_length, topk
        self.prompt_template = prompt_template
        self.rng = random.Random(seed)
        self.eos = tokenizer.eos_token_id
        self._names = list(world.countries)
        self._prompt_cache: dict[str, list[int]] = {}

    def _enc(self, s: str) -> list[int]:
        return self.tok.encode(s, add_special_tokens=False)

    def _prompt(self, question: str) -> list[int]:
        ids = self._prompt_cache.get(question)
        if ids is None:
            ids = self._prompt_cache[question] = encode_prompt(self.tok, question, self.prompt_template)
        return ids

    def _result(self, c: Country, attribute: str) -> list[Document]:
        """The document of the fact, then (topk > 1) other facts of the same country, as BM25 ranks them."""
        others = [a for a in (*ATTRIBUTES, "neighbor") if a != attribute]
        return [doc_of(c, attribute), *(doc_of(c, a) for a in self.rng.sample(others, self.topk - 1))]

    def _obs(self, docs: list[Document]) -> list[int]:
        return self._enc(format_observation(docs, self._enc, self.max_obs))

    def example(self, country: Country, attribute: str, kind: str) -> SFTExample:
        """One demonstration about `country` (for two_hop: about its neighbour's attribute)."""
        ids: list[int] = []
        mask: list[int] = []

        def say(text: str) -> None:
            t = self._enc(text)
            ids.extend(t)
            mask.extend([1] * len(t))

        def see(docs: list[Document]) -> None:
            o = self._obs(docs)
            ids.extend(o)
            mask.extend([0] * len(o))

        if kind == "two_hop":
            other = self.world.countries[country.neighbor]
            question, answer = TWO_HOP[attribute].format(e=country.name), getattr(other, attribute)
            say(f"<search> {query_for('neighbor', country.name)} </search>")
            see(self._result(country, "neighbor"))
            say(f"<search> {query_for(attribute, other.name)} </search>")
            see(self._result(other, attribute))
        else:
            question, answer = QUESTIONS[attribute].format(e=country.name), getattr(country, attribute)
            query = query_for(attribute, country.name)
            if kind in ("search", "retry"):
                if kind == "retry":  # a useless first result: another fact of the country
                    say(f"<search> {query} </search>")
                    wrong = self.rng.choice([a for a in (*ATTRIBUTES, "neighbor") if a != attribute])
                    see([doc_of(country, wrong)])
                say(f"<search> {query} </search>")
                see(self._result(country, attribute))
        say(f"<answer> {answer} </answer>")
        ids.append(self.eos)
        mask.append(1)
        prompt = self._prompt(question)
        return SFTExample(prompt + ids, [0] * len(prompt) + mask)

    def sample(self, names: Sequence[str], mix: DemoMix, n: int) -> list[SFTExample]:
        kinds = ("search", "direct", "retry", "two_hop")
        weights = (mix.search, mix.direct, mix.retry, mix.two_hop)
        out = []
        for _ in range(n):
            c = self.world.countries[self.rng.choice(names)]
            kind = self.rng.choices(kinds, weights)[0]
            attr = self.rng.choice(sorted(TWO_HOP)) if kind == "two_hop" else self.rng.choice(list(QUESTIONS))
            out.append(self.example(c, attr, kind))
        return out


def phased_pool(builder: DemoBuilder, names: Sequence[str], total_steps: int, batch_size: int,
                early: DemoMix, late: DemoMix, late_share: float = 0.2) -> Callable[[int], list[SFTExample]]:
    """A per-step pool for SFTRunner.train: `early` mix for the first (1 - late_share) of the steps, then
    `late`. Each pool holds fresh demonstrations (a few batches' worth), regenerated as training goes."""
    switch = int(total_steps * (1 - late_share))
    pools: dict[str, list[SFTExample]] = {}
    refresh = max(1, 2048 // batch_size)

    def pool(step: int) -> list[SFTExample]:
        phase = "early" if step < switch else "late"
        key = f"{phase}-{step // refresh}"
        if key not in pools:
            pools.clear()
            pools[key] = builder.sample(names, early if phase == "early" else late, refresh * batch_size)
        return pools[key]

    return pool
