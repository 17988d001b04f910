"""The one entry path: overrides in, a trained run's summary.json out.

    from zerosearch.run import run
    summary_path = run(["algorithm=grpo", "experiment=zerosearch", "model.path=...", ...])

`python -m zerosearch.train`, the `KEY value` launchers (`zerosearch.launch`, behind train_*.sh) and the
toy pipeline all end here: the overrides are checked against the schema (an unknown key names the closest
known ones), composed with configs/config.yaml through Hydra's compose API, validated once
(`zerosearch.config.validate`), written to `<output_dir>/config.yaml`, and trained. Nothing rewrites
`sys.argv`, and a bad override is one line naming the key, never a framework traceback.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported

from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.config.store import compose_config, to_structured
from zerosearch.config.validate import ConfigError, check_override_keys, validate_config
from zerosearch.utils.errors import RunError


def compose(overrides: Sequence[str]) -> DictConfig:
    """The composed (not yet validated) config; any Hydra/OmegaConf error becomes a one-line ConfigError."""
    overrides = list(overrides)
    check_override_keys([o for o in overrides if not o.startswith("-")])
    _check_syntax(overrides)
    try:
        return compose_config(overrides)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra's parse/composition and OmegaConf's type errors
        raise ConfigError([_one_line(e)]) from None


def load_config(overrides: Sequence[str], *, check_paths: bool = True) -> ZeroSearchConfig:
    """Compose and validate: the typed config of a run (ConfigError lists every problem)."""
    dcfg = compose(overrides)
    try:
        cfg = to_structured(dcfg)
    except Exception as e:  # noqa: BLE001 - an interpolation or type error found while resolving
        raise ConfigError([_one_line(e)]) from None
    return validate_config(cfg, check_paths=check_paths)


def run(overrides: Sequence[str]) -> Path:
    """Train the run the overrides describe; returns the path of its summary.json."""
    cfg = load_config(overrides)
    from zerosearch.trainer.trainer import run_training

    out = Path(cfg.trainer.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    return run_training(cfg)


def run_cli(overrides: Sequence[str]) -> int:
    """`run` for command lines: 0 on success; 2 with `error: ...` on stderr for a bad configuration, 1 for a run that failed
    with a complete message (`RunError`: a bad checkpoint, a lost rank)."""
    try:
        run(overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:  # a failure whose message is complete (a bad checkpoint, a lost rank)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _check_syntax(overrides: Sequence[str]) -> None:
    """Parse each override alone, so a malformed one is named (Hydra's parser reports only the position)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, problems = OverridesParser.create(), []
    for o in overrides:
        if o.startswith("-"):
            continue
        try:
            parser.parse_override(o)
        except Exception as e:  # noqa: BLE001 - Hydra's grammar errors
            key = o.split("=", 1)[0].lstrip("+~")
            problems.append(f"{key}: cannot parse the override {o!r}: {_one_line(e)} (quote a value with spaces, "
                            f"commas or brackets: {key}='...')")
    if problems:
        raise ConfigError(problems)


def _one_line(e: BaseException) -> str:
    """Hydra and OmegaConf errors as one readable line: the message, with OmegaConf's key/type context."""
    def clean(x: BaseException) -> str:
        text = " ".join(str(x).split())
        for marker in ("full_key:", "object_type=", "Config search path:", "See https://hydra.cc"):
            text = text.split(marker)[0].strip().rstrip(",")  # Hydra/OmegaConf append their internal context
        return text

    text = clean(e)
    cause = e.__cause__ or e.__context__
    if cause is not None and clean(cause) not in ("", "None") and clean(cause) not in text:
        text += f" ({clean(cause)[:200]})"
    return text or type(e).__name__
