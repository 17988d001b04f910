"""The single controller: one process that owns the loop and drives the Ray worker group.

One step:
    rollout (agent loop; generation on the workers, search here)  -> timing_s/gen, timing_s/search
    reward (one score per trajectory on its last policy token)   -> timing_s/reward
    old log-probs, reference log-probs, values (on the workers)  -> timing_s/old_log_prob, ref, values
    advantages (here)                                            -> timing_s/adv
    critic and actor updates (on the workers)                    -> timing_s/update_critic, update_actor
    weight sync to the rollout engines                           -> timing_s/sync
Validation every test_freq steps, checkpoints every save_freq steps, both also at the end.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import torch

from zerosearch.algos import make_kl_controller
from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.config.validate import check_world_size, eval_engine_configured, preflight
from zerosearch.data.prompts import encode_row_prompt
from zerosearch.data.qa import QARow, load_qa
from zerosearch.reward import run_scorer
from zerosearch.rollout.agent_loop import AgentLoop
from zerosearch.rollout.collate import collate_trajectories, trajectory_metrics
from zerosearch.generation.types import SamplingParams
from zerosearch.rollout.types import PromptItem
from zerosearch.search.factory import build_search_engine
from zerosearch.search.probe import probe_search
from zerosearch.trainer import guards, validation
from zerosearch.trainer.checkpoint import CheckpointError, CheckpointManager, verify
from zerosearch.trainer.core import batch_metrics, compute_advantages, token_level_scores
from zerosearch.trainer.data_loader import PromptLoader
from zerosearch.trainer.dispatch import WorkerGroupEngine, mean_metrics, run_sharded, shard_batch
from zerosearch.trainer.search_watchdog import SearchWatchdog
from zerosearch.trainer.tracking import Tracker
from zerosearch.trainer.worker_group import Resources, WorkerGroup
from zerosearch.utils.failpoints import failpoint
from zerosearch.utils.seeding import stable_seed
from zerosearch.workers.fsdp import resolve_device


@contextmanager
def timed(metrics: dict[str, float], name: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    metrics[f"timing_s/{name}"] = time.perf_counter() - t0


class Trainer:
    """Builds the run (data, workers, engines, trackers, checkpoints) and trains.

    Args:
        cfg: a validated configuration.
        log: where human-readable lines go (the tracker's console once it exists).
    """

    def __init__(self, cfg: ZeroSearchConfig, log: Any = print):
        self.cfg = cfg
        self._log = log
        self.t_start = time.time()
        # Fail fast, before any model loads: writable folders and API keys (local, instant), then every search
        # server the run will call answers as configured (one real call each).
        preflight(cfg)
        train_files, val_files = _data_files(cfg)
        probe_search(cfg, validation=bool(val_files) and eval_engine_configured(cfg.search), log=log)
        self.search_watchdog = SearchWatchdog(cfg.search.max_fallback_share, cfg.search.max_bad_search_steps,
                                              log=lambda line: self._log(line))
        self.device = resolve_device(cfg.trainer.device)
        self.run_dir = Path(cfg.trainer.output_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ckpt = CheckpointManager(self.run_dir, cfg.trainer.keep_last_k)
        resume_from = self._select_checkpoint()
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer_path or cfg.model.path,
                                                       padding_side="left", trust_remote_code=cfg.model.trust_remote_code)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        self.train_rows = [r for f in train_files for r in load_qa(f, skip_invalid=cfg.data.skip_invalid_rows)]
        self.val_rows = [r for f in val_files for r in load_qa(f, skip_invalid=cfg.data.skip_invalid_rows)]
        if cfg.data.val_max_rows_per_source:
            self.val_rows = _subsample_per_source(self.val_rows, cfg.data.val_max_rows_per_source, cfg.trainer.seed)
        self.train_items = self._encode(self.train_rows, "training")
        self.val_items = self._encode(self.val_rows, "validation")
        self.resources = Resources.from_config(cfg, self.device)
        check_world_size(cfg, self.resources.world_size)
        self._init_ray()
        self.use_critic = cfg.algorithm.adv_estimator == "gae"
        self.group = WorkerGroup(cfg, self.resources, cfg.model.path, with_critic=self.use_critic)
        self.engine = WorkerGroupEngine(self.group)
        for rank in range(self.group.world_size):
            note = self.group.setup_notes(rank)
            self._log(f"[workers] {self.group.describe(rank)} ({cfg.trainer.placement_strategy} placement)"
                      + (f"; {note}" if note else ""))
        self.train_search = build_search_engine(cfg, role="train")
        self.eval_search = build_search_engine(cfg, role="eval") if eval_engine_configured(cfg.search) else None
        if self.eval_search is None and self.val_items:  # the original's command line names no evaluation engine
            self._log(f"[val] WARNING: no evaluation search engine is configured (search.eval_engine="
                      f"{cfg.search.eval_engine} without search.retrieval.url or corpus_path): validation is skipped. "
                      "Set SEARCH_ENGINE and RETRIEVAL_URL / CORPUS_PATH to validate.")
            self.val_items = []
        # the one scoring path (training and validation); the invalid-action notice is environment text, never
        # an answer (it mentions "<answer> and </answer>")
        self.score_fn = run_scorer(cfg)
        self.train_loop = AgentLoop(self.engine, self.train_search, self.tokenizer, cfg.rollout)
        self.eval_loop = AgentLoop(self.engine, self.eval_search, self.tokenizer, cfg.rollout) if self.eval_search else None
        a = cfg.algorithm
        self.kl_ctrl = make_kl_controller(a.kl_ctrl, a.kl_coef, a.kl_target, a.kl_horizon)
        self.loader = PromptLoader(self.train_items, cfg.data.train_batch_size, cfg.trainer.seed, cfg.data.shuffle)
        self.step = 0
        self.skip_streak = 0  # training steps in a row that skipped a non-finite update (_count_skips)
        self.initial_val: dict[str, Any] | None = None
        self.final_val: dict[str, Any] | None = None
        self._resume(resume_from)
        self.tracker = Tracker(cfg.logging.backends, self.run_dir, cfg.trainer.project_name, cfg.trainer.experiment_name,
                               _config_dict(cfg), cfg.trainer.total_steps, self.step, cfg.logging.wandb_mode,
                               cfg.logging.progress_bar, cfg.logging.wandb_init_timeout_s)
        self._log = self.tracker.write

    # ------------------------------------------------------------------ set-up helpers
    def _init_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": True,
                                  "runtime_env": {"env_vars": {"TOKENIZERS_PARALLELISM": "false",
                                                               "HF_HUB_DISABLE_PROGRESS_BARS": "1"}}}
        if self.cfg.trainer.ray_address:
            kwargs["address"] = self.cfg.trainer.ray_address
        else:
            # on CPU the ranks need a CPU each; Ray would otherwise refuse to place them on a 2-core machine
            kwargs["num_cpus"] = max(os.cpu_count() or 1, self.resources.world_size * self.resources.cpus_per_worker)
            if "RAY_worker_niceness" not in os.environ:
                # Ray starts its workers at niceness 15, so any other process preempts a rank mid-kernel (and
                # with it every OpenMP thread waiting at the next barrier): 4-7% of a 25 M CPU step
                # (docs/PERFORMANCE.md). The ranks are this run's compute; they run at the driver's priority.
                kwargs["_system_config"] = {"worker_niceness": 0}
        ray.init(**kwargs)

    def _encode(self, rows: list[QARow], what: str) -> list[PromptItem]:
        d = self.cfg.data
        items, too_long = [], []
        for r in rows:
            ids = encode_row_prompt(self.tokenizer, r, d)
            if len(ids) > d.max_prompt_length:
                too_long.append((r.id, len(ids)))
                continue
            items.append(PromptItem(ids, r.id, r.question, tuple(r.golden_answers), r.data_source))
        if too_long:
            msg = (f"{len(too_long)} {what} prompts exceed data.max_prompt_length={d.max_prompt_length} tokens "
                   f"(first: row {too_long[0][0]!r} with {too_long[0][1]})")
            if not d.skip_invalid_rows:
                raise ValueError(msg + "; raise data.max_prompt_length or set data.skip_invalid_rows=true to skip them")
            self._log(f"[data] skipped {msg}")
        return items

    def _select_checkpoint(self) -> tuple[Path, dict[str, Any]] | None:
        """The checkpoint to resume from, verified, before anything heavy starts (None: start at step 0)."""
        mode = self.cfg.trainer.resume
        removed = self.ckpt.clean_partial()
        for p in removed:
            self._log(f"[checkpoint] removed the partial checkpoint {p} (its run died while writing it)")
        if mode == "disable":
            return None
        if mode == "auto":
            found = self.ckpt.resumable(self._log)  # the newest that verifies; refuses a folder of bad ones
            if found is None:
                return None
            path, state = found
        else:
            path = Path(mode)
            try:
                state = verify(path)
            except CheckpointError as e:
                raise CheckpointError(f"trainer.resume={mode}: {e}") from None
        mine, theirs = run_fingerprint(self.cfg), state.get("fingerprint", {})
        differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differ:
            raise CheckpointError(
                f"trainer.resume={mode}: the checkpoint {path} belongs to a different run ("
                + "; ".join(f"{k}: checkpoint {theirs.get(k)!r}, now {mine.get(k)!r}" for k in differ)
                + "). Use another trainer.output_dir / EXPERIMENT_NAME for a new run, or trainer.resume=disable "
                "to start over in this folder.")
        if int(state["step"]) >= self.cfg.trainer.total_steps:
            self._log(f"[checkpoint] {path} is at step {state['step']} of {self.cfg.trainer.total_steps}: the run "
                      "is complete; validating and exporting it again")
        return path, state

    def _resume(self, found: tuple[Path, dict[str, Any]] | None) -> None:
        if found is None:
            return
        path, state = found
        self.group.call("load_checkpoint", str(path / "workers"))
        self.step = int(state["step"])
        self.loader.load_state_dict(state["loader"])
        self.kl_ctrl.value = float(state["kl_coef"])
        self.initial_val = state.get("initial_val")
        self._log(f"[checkpoint] resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> Path:
        t = self.cfg.trainer
        try:
            if t.val_only:
                return self.validate_only()
            if t.val_before_train and self.step == 0 and self.val_items:
                val = self.validate(step=0)
                self.initial_val = val["summary"]
                self.tracker.log(val["metrics"], 0, advance=False)
            last_val_step = -1
            while self.step < t.total_steps:
                self.step += 1
                metrics = self.train_step(self.step)
                clean = self._count_skips(metrics)
                final = self.step == t.total_steps
                if self.val_items and (final or (t.test_freq > 0 and self.step % t.test_freq == 0)):
                    val = self.validate(step=self.step)
                    metrics.update(val["metrics"])
                    self.final_val = val["summary"]
                    if self.initial_val is None:
                        self.initial_val = val["summary"]
                    last_val_step = self.step
                self.tracker.log(metrics, self.step)
                self._stop_on_skips()
                if final or (t.save_freq > 0 and self.step % t.save_freq == 0):
                    if clean:
                        self.save_checkpoint()
                    else:  # keep the last good checkpoint the newest one
                        self._log(f"[checkpoint] step {self.step} skipped a non-finite update: not saved")
            if self.val_items and last_val_step != self.step and self.final_val is None:
                self.final_val = self.validate(step=self.step)["summary"]
            export_dir = self.run_dir / "actor_hf"
            self.group.call("export_hf", str(export_dir))
            return self.write_summary(export_dir)
        finally:
            self.close()

    def validate_only(self) -> Path:
        """trainer.val_only: validate the loaded weights (step 0, or the resumed checkpoint's step) once,
        log the metrics, and write them as final_val to summary_val_only.json (the training run's own
        summary.json is left as it is); nothing is trained or exported."""
        if not self.val_items:
            raise ValueError("trainer.val_only=true needs validation data: set data.val_files (or DATA_PATH with a "
                             "test.parquet)")
        val = self.validate(step=self.step)
        self.tracker.log(val["metrics"], self.step, advance=False)
        self.final_val = val["summary"]
        return self.write_summary(None, "summary_val_only.json")

    def train_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        m: dict[str, float] = {}
        t0 = time.perf_counter()
        loader_state = self.loader.state_dict()  # before this step's batch: what a checkpoint of step - 1 holds
        items = self.loader.next_batch()
        r = cfg.rollout
        params = SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                                seed=stable_seed(cfg.trainer.seed, "rollout", step))
        with timed(m, "rollout"):
            trajs = self.train_loop.run(items, r.n, params, step=step - 1)
        failpoint("after_rollout", step)
        search_m = self.train_search.pop_metrics()
        # before any update: a step that stops the run leaves the model as the previous step left it
        self.search_watchdog.observe(step, search_m, lambda good: self._keep_checkpoint(good, loader_state))
        lt = self.train_loop.timing
        m["timing_s/gen"], m["timing_s/search"] = lt["gen"], lt["search"]
        m["rollout/engine_idle_share"] = lt["engine_idle_share"]  # share of the rollout's wall time not generating
        m["rollout/generate_calls"] = lt["generate_calls"]  # generate calls, or engine steps when streaming
        with timed(m, "reward"):
            scored = [self.score_fn(t.response_text, t.item.golden_answers) for t in trajs]
            batch = collate_trajectories(trajs, self.pad_id)
            batch["token_level_scores"] = token_level_scores([s for s, _ in scored], batch["response_mask"])
        for key in ("em", "cover_em", "f1"):
            m[f"critic/{key}/mean"] = sum(d[key] for _, d in scored) / len(scored)
        group_ids = [t.item.row_id for t in trajs]
        with timed(m, "old_log_prob"):
            if r.engine_log_probs_as_old:  # exactly on-policy (validated): the engine's log-probs are the old policy's
                batch["old_log_prob"] = batch.pop("rollout_log_probs")
            else:
                out = run_sharded(self.group, "compute_log_prob", batch)
                batch["old_log_prob"] = out["old_log_prob"]
                mask = batch["response_mask"]
                m["actor/entropy"] = float((out["entropy"] * mask).sum() / mask.sum().clamp(min=1))
        if cfg.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward:
            with timed(m, "ref"):
                batch["ref_log_prob"] = run_sharded(self.group, "compute_ref_log_prob", batch)["ref_log_prob"]
        if self.use_critic:
            with timed(m, "values"):
                batch["values"] = run_sharded(self.group, "compute_values", batch)["values"]
        with timed(m, "adv"):
            batch, kl_m = compute_advantages(batch, cfg.algorithm, group_ids, self.kl_ctrl.value)
            m.update(kl_m)
            if cfg.algorithm.use_kl_in_reward:
                self.kl_ctrl.update(kl_m["actor/reward_kl_penalty"], len(trajs))
        if self.use_critic:
            with timed(m, "update_critic"):
                m.update(mean_metrics(self.group.scatter("update_critic", shard_batch(batch, self.group.world_size))))
        if step > cfg.trainer.critic_warmup:
            with timed(m, "update_actor"):
                m.update(mean_metrics(self.group.scatter("update_actor", shard_batch(batch, self.group.world_size))))
            with timed(m, "sync"):
                self.group.call("sync_rollout_weights")
        m.update(batch_metrics(batch))
        m.update(trajectory_metrics(trajs))
        m.update(search_m)  # search/noise_prob: what the engine drew with
        for line in guards.check_step(m, cfg.trainer.guards, cfg.rollout.max_total_length, step):
            self._log(line)
        m["timing_s/step"] = time.perf_counter() - t0
        m["training/epoch"] = float(self.loader.epoch)
        return m

    def _count_skips(self, metrics: dict[str, float]) -> bool:
        """Count steps in a row whose actor or critic update skipped a non-finite loss or gradient
        (`*/skipped_steps`, the same on every rank); True when this step skipped nothing."""
        skipped = metrics.get("actor/skipped_steps", 0.0) + metrics.get("critic/skipped_steps", 0.0)
        self.skip_streak = self.skip_streak + 1 if skipped > 0 else 0
        return skipped == 0

    def _stop_on_skips(self) -> None:
        limit = self.cfg.trainer.max_consecutive_skips
        if limit and self.skip_streak >= limit:
            last = self.ckpt.latest()
            raise RuntimeError(
                f"trainer.max_consecutive_skips={limit}: {self.skip_streak} training steps in a row (up to step "
                f"{self.step}) skipped an update for a non-finite loss or gradient (actor/skipped_steps, "
                f"critic/skipped_steps in the metrics); the training has diverged. The last good checkpoint is "
                f"{last if last is not None else 'none (no step was saved yet)'}; lower actor.lr / critic.lr or "
                "check the data, then resume with trainer.resume=auto (or raise trainer.max_consecutive_skips; "
                "0 never stops)")

    def validate(self, step: int) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        summary, results, env = validation.run_validation(self.eval_loop, self.val_items, cfg.data.val_batch_size,
                                                          self.score_fn, cfg.rollout.val_temperature, step=step,
                                                          seed=cfg.trainer.seed)
        metrics = validation.flatten(summary, "val")
        metrics.update({f"val/{k}": v for k, v in env.items()})
        metrics.update({f"val/{k}": v for k, v in self.eval_search.pop_metrics().items()})
        for p in cfg.trainer.val_noise_levels:
            s_noise, _, env_noise = validation.run_validation(
                self.train_loop, self.val_items, cfg.data.val_batch_size, self.score_fn, cfg.rollout.val_temperature,
                noise_prob=p, step=step, seed=cfg.trainer.seed)
            tag = f"val_noise_{p:g}"
            again = {k.removeprefix("env/"): v for k, v in env_noise.items() if k.startswith("env/search_again_")}
            metrics.update({f"{tag}/cover_em": s_noise["cover_em"], f"{tag}/f1": s_noise["f1"],
                            f"{tag}/searches": env_noise["env/searches/mean"],
                            **{f"{tag}/{k}": v for k, v in again.items()}})
            summary.setdefault("noise", {})[f"{p:g}"] = {"cover_em": s_noise["cover_em"], "em": s_noise["em"],
                                                         "f1": s_noise["f1"], "searches": env_noise["env/searches/mean"],
                                                         **again}
            self.train_search.pop_metrics()
        metrics["timing_s/validation"] = time.perf_counter() - t0
        self._log(f"[val] step {step}: cover-EM {summary['cover_em']:.3f} EM {summary['em']:.3f} "
                  f"F1 {summary['f1']:.3f} over {int(summary['n'])} rows, searches {summary['searches']:.2f}")
        for r in results[: cfg.logging.log_examples]:
            self._log(f"[val] example ({r.data_source}) Q: {r.question}\n      gold: {list(r.golden_answers)} "
                      f"pred: {r.prediction!r} cover-EM {r.cover_em:.0f}\n      {r.response_text[:600]!r}")
        return {"summary": summary, "metrics": metrics}

    # ------------------------------------------------------------------ state
    def save_checkpoint(self, step: int | None = None, loader_state: dict[str, Any] | None = None) -> Path:
        """Checkpoint the current weights as `step` (default: self.step) with `loader_state` (default: now)."""
        step = self.step if step is None else step
        state = {"step": step, "loader": loader_state or self.loader.state_dict(), "kl_coef": self.kl_ctrl.value,
                 "initial_val": self.initial_val, "total_steps": self.cfg.trainer.total_steps,
                 "fingerprint": run_fingerprint(self.cfg)}
        path = self.ckpt.save(step, lambda p: self.group.call("save_checkpoint", p), state)
        self._log(f"[checkpoint] saved {path}")
        return path

    def _keep_checkpoint(self, step: int, loader_state: dict[str, Any]) -> Path | None:
        """A checkpoint of `step`, whose weights the workers still hold (the search watchdog's last good step):
        the latest checkpoint when it is of that step, else a new one. None for step 0 (the initial model)."""
        if step < 1:
            return None
        done = self.ckpt.complete()
        if done and done[-1][0] == step:
            return done[-1][1]
        return self.save_checkpoint(step, loader_state)

    def write_summary(self, export_dir: Path | None, name: str = "summary.json") -> Path:
        summary = {
            "steps": self.step,
            "total_steps": self.cfg.trainer.total_steps,
            "initial_val": self.initial_val,
            "final_val": self.final_val,
            "wall_time_s": time.time() - self.t_start,
            "run_dir": str(self.run_dir),
            "exported_model": str(export_dir) if export_dir is not None else None,
            "val_only": self.cfg.trainer.val_only,
            "metrics_file": str(self.run_dir / "metrics.jsonl"),
        }
        path = self.run_dir / name
        path.write_text(json.dumps(summary, indent=1))
        return path

    def close(self) -> None:
        for res in (getattr(self, "train_search", None), getattr(self, "eval_search", None)):
            if res is not None:
                res.close()
        if getattr(self, "tracker", None) is not None:
            self.tracker.close()
        if getattr(self, "group", None) is not None:
            self.group.shutdown()
            self.group = None  # type: ignore[assignment]


def run_fingerprint(cfg: ZeroSearchConfig) -> dict[str, Any]:
    """What makes a checkpoint belong to this run: resuming across a change of any of these would silently
    continue a different experiment (other settings, e.g. lr or logging, may change on resume)."""
    train, _ = _data_files(cfg)
    return {"model.path": os.path.abspath(cfg.model.path), "data.train_files": [os.path.abspath(f) for f in train],
            "algorithm.adv_estimator": cfg.algorithm.adv_estimator, "rollout.n": cfg.rollout.n,
            "data.train_batch_size": cfg.data.train_batch_size, "trainer.seed": cfg.trainer.seed}


def _data_files(cfg: ZeroSearchConfig) -> tuple[list[str], list[str]]:
    train, val = list(cfg.data.train_files), list(cfg.data.val_files)
    if cfg.data.path:
        root = Path(cfg.data.path)
        if not train:
            train = [str(root / "train.parquet")]
        if not val and (root / "test.parquet").exists():
            val = [str(root / "test.parquet")]
    return train, val


def _subsample_per_source(rows: list[QARow], k: int, seed: int) -> list[QARow]:
    import random

    by: dict[str, list[QARow]] = {}
    for r in rows:
        by.setdefault(r.data_source, []).append(r)
    out = []
    for src in sorted(by):
        rs = by[src]
        out.extend(random.Random(seed).sample(rs, k) if len(rs) > k else rs)
    return out


def _config_dict(cfg: ZeroSearchConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def run_training(cfg: ZeroSearchConfig) -> Path:
    """Train as configured; prints and returns the path of summary.json (its last line)."""
    torch.manual_seed(cfg.trainer.seed)
    trainer = Trainer(cfg)
    path = trainer.fit()
    print(path, flush=True)  # the last line: the path of summary.json, nothing else
    return path
