"""Where metrics go: a compact console line per step with a progress bar, metrics.jsonl in the run folder,
tensorboard, and wandb (online, or offline with no network).

Metric names follow verl's dashboards (`actor/pg_loss`, `critic/score/mean`, `timing_s/gen`,
`val/test_score/<source>`) plus ours under `search/`, `env/` and `rollout/`.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

# (metric, short label, format) shown on the console line, when present
CONSOLE_FIELDS = (
    ("critic/score/mean", "reward", "{:.3f}"),
    ("env/searches/mean", "searches", "{:.2f}"),
    ("search/noise_prob", "noise", "{:.2f}"),
    ("actor/pg_loss", "pg", "{:+.4f}"),
    ("actor/kl_loss", "kl", "{:.4f}"),
    ("critic/vf_loss", "vf", "{:.4f}"),
    ("actor/entropy", "ent", "{:.3f}"),
    ("response_length/mean", "len", "{:.0f}"),
    ("val/test_score/all", "val", "{:.3f}"),
    ("timing_s/step", "s", "{:.1f}"),
)


def console_line(step: int, total: int, metrics: dict[str, float]) -> str:
    parts = [f"step {step}/{total}"]
    for key, label, fmt in CONSOLE_FIELDS:
        if key in metrics and metrics[key] is not None and not (isinstance(metrics[key], float) and math.isnan(metrics[key])):
            parts.append(f"{label} {fmt.format(metrics[key])}")
    return " | ".join(parts)


class Tracker:
    """Fans metrics out to the configured backends.

    Args:
        backends: subset of console, jsonl, tensorboard, wandb.
        run_dir: the run folder (metrics.jsonl, tensorboard/, wandb/ go there).
        project, experiment: names for wandb.
        config: the resolved configuration (stored with the wandb run).
        total_steps, start_step: for the progress bar (a resumed run starts part-way).
        wandb_mode: online | offline | disabled; a WANDB_MODE environment variable wins (see `wandb_mode`).
        progress_bar: show a tqdm bar with ETA (on a terminal or not).
        wandb_init_timeout_s: how long an online wandb may take to reach its server before the run goes on
            offline (with a warning) instead of hanging on a network that is not there.
    """

    def __init__(self, backends: list[str], run_dir: str | Path, project: str, experiment: str,
                 config: dict[str, Any] | None = None, total_steps: int = 0, start_step: int = 0,
                 wandb_mode: str = "offline", progress_bar: bool = True, wandb_init_timeout_s: float = 30.0):
        self.backends = set(backends)
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.total = total_steps
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a") if "jsonl" in self.backends else None
        self._tb = None
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
        self._wandb = None
        mode = wandb_mode_from_env(wandb_mode)
        if "wandb" in self.backends and mode != "disabled":
            self._wandb = self._init_wandb(project, experiment, config or {}, mode, wandb_init_timeout_s)
        self._bar = None
        self._start_step, self._t0 = start_step, time.perf_counter()
        # a live bar needs a terminal; in logs (CI, nohup, pipes) the console line carries the ETA instead
        if progress_bar and total_steps and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                             file=sys.stderr, leave=True)

    def _init_wandb(self, project: str, experiment: str, config: dict[str, Any], mode: str, timeout_s: float) -> Any:
        """wandb.init with a bounded wait; an online run that cannot reach its server continues offline."""
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(project=project, name=experiment, dir=str(self.run_dir), config=config,
                      id=_wandb_id(self.run_dir, experiment), resume="allow")
        try:
            return wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout_s), **kwargs)
        except Exception as e:  # noqa: BLE001 - CommError (no network), UsageError (no API key), ...
            if mode != "online":
                raise
            detail = " ".join(str(e).split())[:300]
            print(f"[tracking] WARNING: wandb could not start online within {timeout_s:g} s ({type(e).__name__}: "
                  f"{detail}); logging to wandb offline instead (upload later with `wandb sync "
                  f"{self.run_dir / 'wandb'}`)", file=sys.stderr, flush=True)
            wandb.teardown()  # the service still holds the failed online run's id
            return wandb.init(mode="offline", **kwargs)

    @property
    def wandb_dir(self) -> str | None:
        return getattr(self._wandb, "dir", None) if self._wandb is not None else None

    def log(self, metrics: dict[str, float], step: int, *, advance: bool = True) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._jsonl is not None:
            self._jsonl.write(json.dumps({"step": step, **clean}) + "\n")
            self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                if math.isfinite(v):
                    self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)
        if "console" in self.backends:
            line = console_line(step, self.total, clean)
            if self._bar is None and advance and self.total and step > self._start_step:
                rate = (time.perf_counter() - self._t0) / (step - self._start_step)
                line += f" | eta {_fmt_duration(rate * (self.total - step))}"
            self.write(line)
        if self._bar is not None and advance:
            self._bar.update(1)
            if "critic/score/mean" in clean:
                self._bar.set_postfix(reward=f"{clean['critic/score/mean']:.3f}", refresh=False)

    def write(self, text: str) -> None:
        """Print a line without breaking the progress bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def wandb_mode_from_env(configured: str) -> str:
    """The wandb mode in effect: the WANDB_MODE environment variable when set (how wandb users switch it on a
    machine without network), else the configured one. wandb's older names map to ours."""
    env = os.environ.get("WANDB_MODE", "").strip()
    return {"dryrun": "offline", "run": "online"}.get(env, env) or configured


def _fmt_duration(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _wandb_id(run_dir: Path, experiment: str) -> str:
    """A stable run id per run folder, so a resumed run continues the same wandb run."""
    f = run_dir / ".wandb_id"
    if f.exists():
        return f.read_text().strip()
    import hashlib

    rid = hashlib.sha1(f"{run_dir.resolve()}:{experiment}:{time.time()}".encode()).hexdigest()[:12]
    f.write_text(rid)
    return rid
