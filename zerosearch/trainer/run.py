"""Runs a training job from a validated config."""

from __future__ import annotations

from zerosearch.config.schema import ZeroSearchConfig


def run_training(cfg: ZeroSearchConfig) -> None:
    """Train as configured. The trainer is built in issue 7; until then say so plainly."""
    raise SystemExit(
        "zerosearch: the configuration is valid, but the RL trainer (zerosearch/trainer, issue 7) is not built "
        "yet, so nothing was trained. `python -m zerosearch.train --cfg job` prints the resolved configuration."
    )
