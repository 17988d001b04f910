"""Unit tests of the controller's pieces that the end-to-end runs only reach as a whole: rewards onto the
last policy token, the advantage dispatch, the ranks' engines seen as one (order and seeds), and the
validation aggregation."""

from __future__ import annotations

import pytest
import torch

from zerosearch.algos import get_adv_estimator
from zerosearch.config.schema import AlgorithmConfig, RewardConfig
from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.types import SamplingParams
from zerosearch.reward import score_fn_from_config
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.testing.tiny_models import make_tiny_model
from zerosearch.trainer.core import compute_advantages, last_policy_index, token_level_scores
from zerosearch.trainer.dispatch import WorkerGroupEngine
from zerosearch.trainer.worker_group import RankStream
from zerosearch.trainer.validation import flatten, score_trajectory, summarize


# ----------------------------------------------------------------------------- rewards onto tokens
def test_score_sits_on_the_last_policy_token_not_on_a_trailing_observation():
    # row 0: policy, policy, observation, observation (ends with an inserted block); row 1: all policy then
    # padding; row 2: no policy token at all (a trajectory cut before it generated anything)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float32)
    assert last_policy_index(mask).tolist() == [1, 2, -1]
    out = token_level_scores([0.75, 0.25, 0.5], mask)
    assert out.tolist() == [[0.0, 0.75, 0.0, 0.0], [0.0, 0.0, 0.25, 0.0], [0.0, 0.0, 0.0, 0.0]]
    # a hole in the middle: the score goes after it, on the last policy token
    mask = torch.tensor([[1, 0, 0, 1, 1, 0]], dtype=torch.float32)
    assert token_level_scores([1.0], mask)[0].nonzero().flatten().tolist() == [4]


# ----------------------------------------------------------------------------- advantage dispatch
def _batch() -> dict[str, torch.Tensor]:
    mask = torch.tensor([[1, 1, 0, 1], [1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    scores = token_level_scores([1.0, 0.0, 0.5, 0.25], mask)
    return {"response_mask": mask, "token_level_scores": scores,
            "old_log_prob": torch.full((4, 4), -1.0) * mask, "ref_log_prob": torch.full((4, 4), -1.5) * mask,
            "values": torch.full((4, 4), 0.1) * mask}


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce", "reinforce_plus_plus_baseline", "gae"])
def test_compute_advantages_dispatches_to_the_named_estimator(name):
    batch = _batch()
    groups = ["a", "a", "b", "b"]
    algo = AlgorithmConfig(adv_estimator=name, use_kl_in_reward=False)
    out, metrics = compute_advantages(dict(batch), algo, groups)
    want_adv, want_ret = get_adv_estimator(name)(batch["token_level_scores"], batch["response_mask"],
                                                 values=batch["values"], group_ids=groups, gamma=1.0, lam=1.0,
                                                 norm_by_std=True)
    assert metrics == {}
    assert torch.equal(out["token_level_rewards"], batch["token_level_scores"])  # no KL: rewards = scores
    assert torch.allclose(out["advantages"], want_adv) and torch.allclose(out["returns"], want_ret)
    assert torch.all(out["advantages"][batch["response_mask"] == 0] == 0)  # holes stay zero


def test_in_reward_kl_uses_the_controllers_coefficient_and_penalises_divergence():
    batch = _batch()
    algo = AlgorithmConfig(adv_estimator="reinforce", use_kl_in_reward=True, kl_penalty="kl", kl_coef=0.5)
    out, metrics = compute_advantages(dict(batch), algo, ["a", "a", "b", "b"], kl_coef=0.1)
    mask = batch["response_mask"]
    kl = (batch["old_log_prob"] - batch["ref_log_prob"]) * mask  # k1 = 0.5 on every policy token
    assert torch.allclose(out["token_level_rewards"], batch["token_level_scores"] - 0.1 * kl)  # not kl_coef=0.5
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------- the ranks as one engine
class _LocalGroup:
    """The part of WorkerGroup that WorkerGroupEngine uses, over real engines in this process: rank r's
    engine answers rank r's share (Ray only carries the same calls across processes)."""

    def __init__(self, engines: list[HFEngine]):
        self.engines = engines
        self.calls: list[list[int]] = []

    @property
    def world_size(self) -> int:
        return len(self.engines)

    def scatter_args(self, method: str, per_rank_args):  # noqa: ANN001
        self.calls.append([len(args[0]) for args in per_rank_args])
        return [getattr(e, method)(*args) for e, args in zip(self.engines, per_rank_args)]


@pytest.fixture(scope="module")
def tiny_engine(tmp_path_factory: pytest.TempPathFactory) -> HFEngine:
    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "m", "tiny")
    return HFEngine.from_pretrained(str(path))


def _dealing_case(tok) -> tuple[list[list[int]], SamplingParams, list[int]]:  # noqa: ANN001
    """Prompts of several lengths, sampling settings, and per-prompt caps (one of them 0)."""
    prompts = [tok.encode(t) for t in ("Answer the question.", "Doc 1 Paris", "Q", "The year 1969, the river",
                                       "Which river flows", "capital city of the country", "a")]
    return prompts, SamplingParams(temperature=1.0, max_new_tokens=6, seed=11), [6, 3, 6, 1, 6, 0, 4]


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_ranks_engines_return_in_order_and_sample_as_one_engine(tiny_engine, ranks):
    tok = tiny_engine.tokenizer
    prompts, params, caps = _dealing_case(tok)
    group = _LocalGroup([tiny_engine] * ranks)
    dealt = WorkerGroupEngine(group).generate(prompts, params, caps)  # type: ignore[arg-type]
    alone = tiny_engine.generate(prompts, params, caps)
    assert [o.token_ids for o in dealt] == [o.token_ids for o in alone]  # same order, same samples
    for a, b in zip(dealt, alone):  # equal up to float noise: another batch means other padding
        assert a.log_probs == pytest.approx(b.log_probs, abs=1e-5)
    assert [len(o.token_ids) <= c for o, c in zip(dealt, caps)] == [True] * len(caps)
    # round-robin dealing: every rank got its share (sizes differ by at most one)
    sizes = group.calls[-1]
    assert sum(sizes) == len(prompts) and max(sizes) - min(sizes) <= 1


class _LocalStreamGroup:
    """The stream calls of WorkerGroup over `RankStream`s of real engines in this process (the methods the
    Ray actors expose as stream_open / stream_step / stream_close)."""

    def __init__(self, engines: list[HFEngine]):
        self.ranks = [RankStream(e) for e in engines]
        self.steps: list[list[int]] = []  # sequences added per rank, per call

    @property
    def world_size(self) -> int:
        return len(self.ranks)

    def _run(self, rank: RankStream, method: str, *args):  # noqa: ANN001
        return {"stream_open": rank.open, "stream_step": rank.step, "stream_close": rank.close}[method](*args)

    def call(self, method: str, *args):  # noqa: ANN001
        return [self._run(r, method, *args) for r in self.ranks]

    def scatter_args(self, method: str, per_rank_args):  # noqa: ANN001
        if method == "stream_step":
            self.steps.append([len(a[0]) for a in per_rank_args])
        return [self._run(r, method, *a) for r, a in zip(self.ranks, per_rank_args)]


@pytest.mark.parametrize("ranks", [2, 3])
def test_the_ranks_streams_sample_as_one_engine_and_keep_each_key_on_its_rank(tiny_engine, ranks):
    tok = tiny_engine.tokenizer
    prompts, params, caps = _dealing_case(tok)
    seeds = [100 + i for i in range(len(prompts))]
    group = _LocalStreamGroup([HFEngine(tiny_engine.model, tok) for _ in range(ranks)])
    stream = WorkerGroupEngine(group).open_stream(params)  # type: ignore[arg-type]

    def drain() -> dict:
        got = {}
        while stream.active:
            got.update(stream.step())
        return got

    for k, (p, c, s) in enumerate(zip(prompts, caps, seeds)):
        stream.add(k, p, c, s)
    first = drain()
    alone = tiny_engine.generate(prompts, params, caps, seeds)
    assert [first[k].token_ids for k in range(len(prompts))] == [o.token_ids for o in alone]
    assert max(group.steps[0]) - min(group.steps[0]) <= 1  # dealt evenly
    placed = dict(stream.rank_of)
    # a second turn: every key goes back to its own rank, which reuses the KV cache it parked there
    second = [p + first[k].token_ids + tok.encode(" obs") for k, p in enumerate(prompts)]
    for k, p in enumerate(second):
        stream.add(k, p, 4, seeds[k] + 1)
    again = drain()
    assert stream.rank_of == placed
    ref = tiny_engine.generate(second, params, [4] * len(second), [s + 1 for s in seeds])
    assert [again[k].token_ids for k in range(len(second))] == [o.token_ids for o in ref]
    assert sum(r.stream.reused_tokens for r in group.ranks) > 0
    stream.close()
    assert all(r.stream is None for r in group.ranks)


# ----------------------------------------------------------------------------- validation aggregation
def _traj(row: str, src: str, response: str, golds: tuple[str, ...], searches: int) -> Trajectory:
    t = Trajectory(prompt_ids=[1], item=PromptItem([1], row, "q?", golds, src))
    t.response_text = response
    t.stats.searches = searches
    return t


def test_validation_scores_with_the_training_score_function_and_averages_per_source():
    score_fn = score_fn_from_config(RewardConfig(score="f1"))
    trajs = [_traj("nq/1", "nq", "<answer> Paris </answer>", ("Paris",), 1),
             _traj("nq/2", "nq", "<answer> the city of Paris </answer>", ("Paris",), 2),
             _traj("hq/1", "hotpotqa", "no answer at all", ("Rome",), 0)]
    rows = [score_trajectory(t, score_fn) for t in trajs]
    assert [r.prediction for r in rows] == ["Paris", "the city of Paris", None]
    assert [r.em for r in rows] == [1.0, 0.0, 0.0] and [r.cover_em for r in rows] == [1.0, 1.0, 0.0]
    assert rows[1].reward == pytest.approx(score_fn(trajs[1].response_text, ("Paris",))[0])  # one scoring path
    s = summarize(rows)
    assert s["n"] == 3 and s["em"] == pytest.approx(1 / 3) and s["cover_em"] == pytest.approx(2 / 3)
    assert s["searches"] == pytest.approx(1.0)
    want = {"reward": (1.0 + rows[1].reward) / 2, "cover_em": 1.0, "em": 0.5, "f1": (1.0 + rows[1].f1) / 2,
            "n": 2.0, "searches": 1.5}
    assert {k: s["per_source"]["nq"][k] for k in want} == pytest.approx(want)
    flat = flatten(s, "val")
    assert flat["val/test_score/all"] == s["reward"] and flat["val/cover_em/hotpotqa"] == 0.0
    assert flat["val/em/nq"] == 0.5 and flat["val/searches/all"] == 1.0


def test_validation_reward_follows_the_configured_score():
    t = _traj("nq/1", "nq", "<answer> the city of Paris </answer>", ("Paris",), 1)
    em = score_trajectory(t, score_fn_from_config(RewardConfig(score="em")))
    cover = score_trajectory(t, score_fn_from_config(RewardConfig(score="cover_em")))
    assert (em.reward, cover.reward) == (0.0, 1.0)
