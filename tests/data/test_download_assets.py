"""scripts/download_assets.sh fails at once, with directions, when the hub cannot be reached."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "download_assets.sh"


def _run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **env})
    return proc, time.monotonic() - t0


@pytest.mark.parametrize("env,says", [
    ({"HF_HUB_OFFLINE": "1"}, "HF_HUB_OFFLINE=1 is set"),
    ({"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}, "cannot reach http://127.0.0.1:9 within 5 s"),
])
def test_fails_fast_offline(env, says, tmp_path):
    proc, took = _run("dataset", "14B", ZS_DATA_DIR=str(tmp_path / "d"), ZS_MODELS_DIR=str(tmp_path / "m"), **env)
    assert proc.returncode == 1
    assert says in proc.stderr
    assert "scripts/prepare_data.py" in proc.stderr
    assert took < 10
    assert not (tmp_path / "d").exists() and not (tmp_path / "m").exists()


def test_arguments():
    proc, _ = _run("--help")
    assert proc.returncode == 0 and "sunhaonlp/ZeroSearch_dataset" in proc.stdout
    proc, _ = _run("5B", HF_HUB_OFFLINE="1")
    assert proc.returncode == 2 and "unknown argument '5B'" in proc.stderr
