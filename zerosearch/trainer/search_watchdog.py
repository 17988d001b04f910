"""Bounds how much of a run may train on fallback documents.

A search that fails after its retries is answered with the fallback document and counted
(`search/fallbacks`, `search/failures/<kind>`): one failed search must not stop a run. But a step in which
most searches failed trains the agent on "No information available." instead of documents, and a run of
such steps means a server died or is overloaded: training on would spend hours teaching the agent that
searching is useless. So, each training step, right after its rollout and before any update:

    share = search/fallbacks / search/requests
    share > search.max_fallback_share (default 0.5)  -> a WARNING with the counts and failure kinds;
    the first such step of a streak                  -> keep a checkpoint of the last good step (the weights
                                                        are still those of the step before: nothing has
                                                        been updated on the bad rollout yet);
    search.max_bad_search_steps (default 3) in a row -> SearchFailureError naming the keys and that
                                                        checkpoint, before this step updates anything.

A step without searches is not bad and ends a streak, as does a good step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping


class SearchFailureError(RuntimeError):
    """Too many training steps in a row had most of their searches fall back."""


class SearchWatchdog:
    """Counts bad search steps in a row and stops the run after `max_bad_steps` of them.

    Args:
        max_fallback_share: a step with fallbacks / requests above this is bad (search.max_fallback_share).
        max_bad_steps: bad steps in a row that stop the run; <= 0 never stops (search.max_bad_search_steps).
        log: where the warnings go (the trainer's tracker).
    """

    def __init__(self, max_fallback_share: float = 0.5, max_bad_steps: int = 3, log: Callable[[str], Any] = print):
        if not 0.0 <= max_fallback_share < 1.0:
            raise ValueError(f"search.max_fallback_share={max_fallback_share!r}: must be in [0, 1) (the share of a "
                             "step's searches that may fall back before the step counts as bad)")
        self.max_fallback_share, self.max_bad_steps, self._log = max_fallback_share, max_bad_steps, log
        self.streak = 0                                 # bad steps in a row, up to the last one observed
        self.streak_start: int | None = None            # the first step of the current streak
        self.last_good_checkpoint: Path | None = None   # kept when the streak began

    def is_bad(self, metrics: Mapping[str, float]) -> bool:
        requests = metrics.get("search/requests", 0.0)
        return requests > 0 and metrics.get("search/fallbacks", 0.0) / requests > self.max_fallback_share

    def observe(self, step: int, metrics: Mapping[str, float],
                keep_last_good: Callable[[int], Path | None]) -> None:
        """Judge `step` from its search metrics (`search/requests`, `search/fallbacks`,
        `search/failures/<kind>`), before the step updates the model. At the first bad step of a streak,
        `keep_last_good(step - 1)` returns the path of a checkpoint of step - 1 (saving one when the latest
        is older; None when step - 1 is 0, the untouched initial model). Raises SearchFailureError at the
        `max_bad_steps`-th bad step in a row."""
        if not self.is_bad(metrics):
            if self.streak:
                self._log(f"[search] step {step}: searches recovered after {self.streak} bad step(s)")
            self.streak, self.streak_start = 0, None
            return
        self.streak += 1
        if self.streak == 1:
            self.streak_start = step
            self.last_good_checkpoint = keep_last_good(step - 1)
        requests, fallbacks = metrics.get("search/requests", 0.0), metrics.get("search/fallbacks", 0.0)
        kinds = {k.removeprefix("search/failures/"): int(v) for k, v in sorted(metrics.items())
                 if k.startswith("search/failures/") and v}
        of = f" of {self.max_bad_steps}" if self.max_bad_steps > 0 else ""
        self._log(f"WARNING [search] step {step}: {int(fallbacks)} of {int(requests)} searches fell back "
                  f"({fallbacks / requests:.0%} > search.max_fallback_share={self.max_fallback_share:g}); failures by "
                  f"kind: {kinds or 'none counted'}; bad step {self.streak}{of} in a row")
        if 0 < self.max_bad_steps <= self.streak:
            raise SearchFailureError(self._stop_message(step, kinds))

    def _stop_message(self, step: int, kinds: Mapping[str, int]) -> str:
        ckpt = self.last_good_checkpoint
        if self.streak_start is not None and self.streak_start <= 1:
            kept = "no step before the streak trained: the initial model (model.path) is unchanged"
        elif ckpt is None:
            kept = "no checkpoint of the last good step could be kept"
        elif not ckpt.exists():
            kept = f"the last good step's checkpoint {ckpt} was since removed (trainer.keep_last_k)"
        else:
            kept = (f"the last good step's checkpoint is {ckpt} (resume from it with trainer.resume={ckpt} once "
                    "the servers are fixed)")
        return (f"stopping at step {step}: {self.streak} training steps in a row (steps {self.streak_start}-{step}) "
                f"had more than search.max_fallback_share={self.max_fallback_share:g} of their searches fall back "
                f"(last step's failures by kind: {dict(kinds)}). The search servers are failing: check "
                "search.simulation.servers (IP) and search.simulation.model_name (SIMULATION_LLM), or the retrieval "
                "server / SerpApi of search.mode; raise search.max_bad_search_steps (<= 0 never stops) or "
                f"search.max_fallback_share to tolerate it. Step {step} did not update the model; {kept}.")
