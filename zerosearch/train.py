"""Command-line entry point: `python -m zerosearch.train [group=option ...] [a.b=c ...]`.

The overrides go through `zerosearch.run.run` (the same path the launchers and the toy pipeline take):
checked against the schema, composed with configs/config.yaml, validated once, trained.

    python -m zerosearch.train --cfg job algorithm=ppo ...   print the resolved configuration and exit
    python -m zerosearch.train --help-keys                   every key with its help text and default
"""

from __future__ import annotations

import sys

from zerosearch.config.validate import ConfigError, schema_help
from zerosearch.utils.errors import RunError


def _print_help_keys() -> None:
    section = None
    for key, help_text, default in schema_help():
        top = key.split(".")[0]
        if top != section:
            section = top
            print(f"\n[{section}]")
        print(f"  {key} = {default!r}\n      {help_text}")


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--help-keys" in args or args[:1] in (["-h"], ["--help"]):
        if "--help-keys" not in args:
            print(__doc__)
        _print_help_keys()
        return 0
    from zerosearch import run

    try:
        if args[:1] == ["--cfg"]:  # --cfg job|all: print the composed configuration (Hydra's flag, kept)
            from omegaconf import OmegaConf

            overrides = args[2:] if len(args) > 1 and args[1] in ("job", "all") else args[1:]
            print(OmegaConf.to_yaml(run.compose(overrides), resolve=False))
            return 0
        run.run(args)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunError as e:  # a failure whose message is complete (a bad checkpoint, a lost rank)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
