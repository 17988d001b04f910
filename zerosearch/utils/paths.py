"""Where the package's own files are, so an installed (non-editable) package works as well as a checkout.

The Hydra configs and the prompt templates ship inside the package (`zerosearch/configs/`, package data);
the repository's top-level `configs` is a link to that folder. Caches and the shared data folder live
beside a source checkout when the package runs from one, else under the current directory.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CONFIG_DIR = PACKAGE_DIR / "configs"
PROMPT_DIR = CONFIG_DIR / "prompts"


def project_root() -> Path:
    """The source checkout holding the package (it has pyproject.toml), else the current directory."""
    checkout = PACKAGE_DIR.parent
    return checkout if (checkout / "pyproject.toml").is_file() else Path.cwd()


def shared_dir() -> Path:
    """`$ZS_SHARED_DIR`, else `../shared` beside the project root (the developers' and CI's layout)."""
    env = os.environ.get("ZS_SHARED_DIR")
    return Path(env) if env else project_root().parent / "shared"
