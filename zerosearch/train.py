"""Command-line entry point: `python -m zerosearch.train [group=option ...] [a.b=c ...]`.

Hydra composes configs/config.yaml with the overrides; Hydra's own flags work as usual
(`--cfg job` prints the resolved configuration, `--help`, `--multirun`). Before Hydra runs, override
keys are checked against the schema so a typo fails with the list of known keys; after composing, the
whole config is validated once (zerosearch.config.validate) and every problem is reported together.
`--help-keys` prints every key with its help text and default.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported

import hydra
from omegaconf import DictConfig

from zerosearch.config.store import CONFIG_DIR, register_configs, to_structured
from zerosearch.config.validate import ConfigError, check_override_keys, schema_help, validate_config

register_configs()


def _print_help_keys() -> None:
    section = None
    for key, help_text, default in schema_help():
        top = key.split(".")[0]
        if top != section:
            section = top
            print(f"\n[{section}]")
        print(f"  {key} = {default!r}\n      {help_text}")


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def _hydra_main(dcfg: DictConfig) -> None:
    try:
        cfg = validate_config(to_structured(dcfg))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    from zerosearch.trainer.trainer import run_training

    run_training(cfg)


def main() -> None:
    args = sys.argv[1:]
    if "--help-keys" in args:
        _print_help_keys()
        return
    try:
        check_override_keys([a for a in args if not a.startswith("-")])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    _hydra_main()


if __name__ == "__main__":
    main()
