"""Splitting work over ranks and putting it back together."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from zerosearch.generation.types import GenerationEngine, GenerationOutput, GenerationStream, SamplingParams
from zerosearch.trainer.worker_group import WorkerGroup
from zerosearch.utils.seeding import stable_seed

Batch = dict[str, torch.Tensor]


def shard_batch(batch: Batch, n: int) -> list[Batch]:
    """n contiguous shards (sizes differ by at most one row when n does not divide the batch)."""
    keys = list(batch)
    parts = {k: torch.tensor_split(batch[k], n) for k in keys}
    return [{k: parts[k][i] for k in keys} for i in range(n)]


def concat_outputs(outs: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}


def mean_metrics(outs: Sequence[dict[str, float]]) -> dict[str, float]:
    """Average per-rank metric dicts (each rank saw an equal share of the batch)."""
    keys = {k for o in outs for k in o}
    return {k: sum(o.get(k, 0.0) for o in outs) / len(outs) for k in sorted(keys)}


def run_sharded(group: WorkerGroup, method: str, batch: Batch) -> dict[str, torch.Tensor]:
    """Call a per-token method on every rank with its shard and concatenate the results."""
    return concat_outputs(group.scatter(method, shard_batch(batch, group.world_size)))


class WorkerGroupEngine(GenerationEngine):
    """The rollout engines of all ranks seen as one engine: prompts are dealt out round-robin (so long and
    short prompts spread evenly) and the outputs put back in order."""

    # measured through the trainer on CPU (2 workers, tiny model, fast search): a Ray round trip every few
    # decode steps cost more than continuous batching saved (rollout 1.18 s against 0.97 s with whole
    # calls, docs/PERFORMANCE.md), so `auto` keeps whole calls here; `continuous` still selects the stream
    stream_by_default = False

    def __init__(self, group: WorkerGroup):
        self.group = group

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        n = self.group.world_size
        idx = [list(range(r, len(prompts), n)) for r in range(n)]
        if seeds is None and params.seed is not None:
            # per-sequence seeds fixed before dealing, so the samples do not depend on the number of ranks
            seeds = [stable_seed(params.seed, i) for i in range(len(prompts))]

        def pick(xs: Sequence[Any] | None, r: int) -> list[Any] | None:
            return [xs[i] for i in idx[r]] if xs is not None else None

        results = self.group.scatter_args("generate", [
            ([list(prompts[i]) for i in idx[r]], params, pick(max_new_tokens, r), pick(seeds, r)) for r in range(n)])
        out: list[GenerationOutput | None] = [None] * len(prompts)
        for r in range(n):
            for i, o in zip(idx[r], results[r]):
                out[i] = o
        return out  # type: ignore[return-value]

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        self.group.call("update_rollout_weights", state_dict)

    def open_stream(self, params: SamplingParams) -> GenerationStream:
        """Continuous batching over the ranks' own streams (`WorkerGroupStream`)."""
        return WorkerGroupStream(self.group, params)


class WorkerGroupStream(GenerationStream):
    """The ranks' `GenerationStream`s seen as one.

    A sequence goes to the rank with the fewest sequences when its key is first added and stays there for
    its later turns (that rank holds its parked KV cache). `step()` is one call to every rank: each adds
    its new sequences and decodes until one of its sequences finishes, at most `steps_per_call` steps
    (`worker_group.RankStream`).
    """

    steps_per_call = 8

    def __init__(self, group: WorkerGroup, params: SamplingParams):
        self.group, self.n = group, group.world_size
        group.call("stream_open", params)
        self.rank_of: dict[Any, int] = {}
        self.adds: list[list[tuple[Any, list[int], int, int | None]]] = [[] for _ in range(self.n)]
        self.on_rank = [0] * self.n  # sequences each rank still holds, as of its last reply

    def add(self, key: Any, prompt: Sequence[int], max_new_tokens: int, seed: int | None = None) -> None:
        r = self.rank_of.get(key)
        if r is None:
            r = self.rank_of[key] = min(range(self.n), key=lambda i: self.on_rank[i] + len(self.adds[i]))
        self.adds[r].append((key, list(prompt), max_new_tokens, seed))

    def step(self) -> list[tuple[Any, GenerationOutput]]:
        args = [(self.adds[r], self.steps_per_call) for r in range(self.n)]
        self.adds = [[] for _ in range(self.n)]
        done: list[tuple[Any, GenerationOutput]] = []
        for r, (finished, left) in enumerate(self.group.scatter_args("stream_step", args)):
            done += finished
            self.on_rank[r] = left
        return done

    @property
    def active(self) -> int:
        return sum(self.on_rank) + sum(len(a) for a in self.adds)

    def close(self) -> None:
        self.group.call("stream_close")
