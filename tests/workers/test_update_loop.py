"""The one update loop of actor and critic (workers/update.py): a non-finite loss skips that optimizer step on
either role, counted in `{role}/skipped_steps`, leaving weights and AdamW state as they were; finite steps
still apply; the critic's settings are its own where the original has them; and the trainer stops after
trainer.max_consecutive_skips skipped steps in a row. Real FSDP2 on a one-rank gloo group."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.workers.worker_fixtures import one_rank_group, rollout_batch, tiny_model_dir, worker_config  # noqa: F401
from zerosearch.workers import fsdp
from zerosearch.workers.update import actor_settings, critic_settings


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in fsdp.full_state_dict_as(model, torch.float32).items()}


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> int:
    return sum(int((before[k] != after[k]).sum()) for k in before)


def test_actor_skips_exactly_the_non_finite_optimizer_step(one_rank_group, model_dir):  # noqa: F811
    from zerosearch.workers.actor import PolicyWorker

    # 8 rows, 2 prompts x 2 samples = 4 rows per optimizer step: two steps per update
    cfg = worker_config(model_dir, "actor.ppo_mini_batch_size=2", "actor.lr=1e-3", "actor.use_kl_loss=false")
    w = PolicyWorker(cfg, 0, 1, "cpu")
    batch = rollout_batch(8, seed=1)
    batch.update(w.compute_log_prob(batch))
    w0 = _weights(w.actor)

    bad = {k: v.clone() for k, v in batch.items()}
    bad["advantages"][:4] = float("nan")  # the first optimizer step's rows only
    out = w.update_actor(bad)
    assert out["actor/skipped_steps"] == 1.0
    w1 = _weights(w.actor)
    assert _changed(w0, w1) > 0, "the finite second step must still apply"
    assert all(torch.isfinite(v).all() for v in w1.values())
    steps = {int(s["step"]) for s in w.optimizer.state.values()}
    assert steps == {1}, f"AdamW must have stepped once, not {steps}"

    all_bad = {k: v.clone() for k, v in batch.items()}
    all_bad["advantages"][:] = float("inf")
    out = w.update_actor(all_bad)
    assert out["actor/skipped_steps"] == 2.0
    w2 = _weights(w.actor)
    assert _changed(w1, w2) == 0, "a skipped step must leave every weight as it was"
    assert {int(s["step"]) for s in w.optimizer.state.values()} == {1}
    assert all(torch.isfinite(s["exp_avg"]).all() for s in w.optimizer.state.values())

    out = w.update_actor(batch)
    assert out["actor/skipped_steps"] == 0.0 and torch.isfinite(torch.tensor(out["actor/pg_loss"]))
    assert _changed(w2, _weights(w.actor)) > 0


def test_critic_skips_non_finite_steps_and_uses_its_own_settings(one_rank_group, model_dir):  # noqa: F811
    from zerosearch.workers.critic import CriticWorker

    cfg = worker_config(model_dir, "algorithm=ppo", "critic.ppo_mini_batch_size=2", "critic.lr=1e-3",
                        "actor.ppo_mini_batch_size=4", "critic.use_dynamic_bsz=true",
                        "critic.max_tokens_per_micro_batch=40")
    c = CriticWorker(cfg, 0, 1, "cpu")
    assert c.settings.rows_per_step(cfg.rollout.n, 1) == 4  # the critic's mini-batch, not the actor's 8
    batch = rollout_batch(8, seed=2)
    batch.update(c.compute_values(batch))
    w0 = _weights(c.critic)

    bad = {k: v.clone() for k, v in batch.items()}
    bad["returns"][4:] = float("nan")  # the second optimizer step's rows
    out = c.update_critic(bad)
    assert out["critic/skipped_steps"] == 1.0
    w1 = _weights(c.critic)
    assert _changed(w0, w1) > 0 and all(torch.isfinite(v).all() for v in w1.values())

    all_bad = {k: v.clone() for k, v in batch.items()}
    all_bad["returns"][:] = float("inf")
    out = c.update_critic(all_bad)
    assert out["critic/skipped_steps"] == 2.0
    assert _changed(w1, _weights(c.critic)) == 0
    assert {int(s["step"]) for s in c.optimizer.state.values()} == {1}

    out = c.update_critic(batch)
    assert out["critic/skipped_steps"] == 0.0 and out["critic/vf_loss"] > 0
    assert _changed(w1, _weights(c.critic)) > 0


def test_critic_settings_follow_the_actor_only_where_unset(tmp_path):
    cfg = worker_config(tmp_path, "actor.ppo_mini_batch_size=2", "actor.use_dynamic_bsz=true",
                        "actor.max_tokens_per_micro_batch=1000", "actor.grad_clip=0.5")
    s = critic_settings(cfg)
    assert (s.role, s.mini_batch_size, s.use_dynamic_bsz, s.max_tokens_per_micro_batch) == ("critic", 2, True, 2000)
    assert s.grad_clip == cfg.critic.grad_clip == 1.0 and s.loss_agg_mode == cfg.critic.loss_agg_mode
    cfg = worker_config(tmp_path, "critic.ppo_mini_batch_size=1", "critic.use_dynamic_bsz=false",
                        "critic.max_tokens_per_micro_batch=77", "actor.use_dynamic_bsz=true")
    s = critic_settings(cfg)
    assert (s.mini_batch_size, s.use_dynamic_bsz, s.max_tokens_per_micro_batch) == (1, False, 77)
    a = actor_settings(worker_config(tmp_path, "actor.policy_loss=gspo"))
    assert a.loss_agg_mode == "seq-mean-token-mean" and a.role == "actor"


def test_critic_mini_batch_is_validated(tmp_path):
    from zerosearch.config.validate import ConfigError, check_world_size

    with pytest.raises(ConfigError, match=r"critic.ppo_mini_batch_size=3: must divide data.train_batch_size \(4\)"):
        worker_config(tmp_path, "critic.ppo_mini_batch_size=3")
    cfg = worker_config(tmp_path, "critic.ppo_mini_batch_size=1", "rollout.n=3", "data.train_batch_size=4",
                        "actor.ppo_mini_batch_size=2")
    with pytest.raises(ConfigError, match=r"critic.ppo_mini_batch_size=1: x rollout.n \(3\) = 3 trajectories"):
        check_world_size(cfg, 2)


def _guard(tmp_path: Path, limit: int):
    from zerosearch.trainer.checkpoint import CheckpointManager
    from zerosearch.trainer.trainer import Trainer

    t = object.__new__(Trainer)  # the guard's state only; the rest of a Trainer needs Ray and models
    t.cfg = worker_config(tmp_path, f"trainer.max_consecutive_skips={limit}")
    t.ckpt = CheckpointManager(tmp_path / "run", keep_last_k=2)
    t.skip_streak, t.step = 0, 0
    return t


def test_trainer_stops_after_max_consecutive_skips_naming_the_key_and_last_checkpoint(tmp_path):
    t = _guard(tmp_path, limit=3)
    saved = t.ckpt.save(4, lambda p: None, {"step": 4})  # the last good checkpoint (no worker state needed here)
    seq = [0.0, 1.0, 2.0, 0.0, 1.0, 1.0]  # actor/skipped_steps per step: streaks 0 1 2 0 1 2, then 3 stops
    for t.step, skipped in enumerate(seq, start=1):
        clean = t._count_skips({"actor/skipped_steps": skipped, "critic/skipped_steps": 0.0})
        assert clean == (skipped == 0)
        t._stop_on_skips()
    assert t.skip_streak == 2
    t.step += 1
    assert not t._count_skips({"actor/skipped_steps": 0.0, "critic/skipped_steps": 1.0})  # the critic counts too
    assert t.ckpt.latest() == saved
    with pytest.raises(RuntimeError, match=r"trainer.max_consecutive_skips=3: 3 training steps in a row") as e:
        t._stop_on_skips()
    assert str(saved) in str(e.value) and "trainer.resume=auto" in str(e.value)

    never = _guard(tmp_path, limit=0)
    for never.step in range(1, 20):
        never._count_skips({"actor/skipped_steps": 1.0})
        never._stop_on_skips()
    assert never.skip_streak == 19
