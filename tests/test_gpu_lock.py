"""The GPU install path: the compiled lock files are in step with pyproject.toml, and the GPU scripts parse
and plan without a GPU (the GPU itself is exercised by scripts/gpu_smoke.sh on a GPU machine)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def _lock(name: str) -> dict[str, str]:
    """package (canonical name) -> pinned version of a requirements/*.txt lock."""
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = m.group(3)
    return pins


def _core() -> list[Requirement]:
    return [Requirement(r) for r in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]]


def test_every_core_pin_of_pyproject_is_in_the_gpu_lock_with_its_version():
    lock = _lock("gpu-lock.txt")
    for req in _core():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} (pyproject.toml) is missing from requirements/gpu-lock.txt: run scripts/lock_gpu.sh"
        assert req.specifier.contains(lock[name], prereleases=True), (
            f"requirements/gpu-lock.txt has {req.name}=={lock[name]} but pyproject.toml says {req}: "
            "run bash scripts/lock_gpu.sh")


def test_the_gpu_lock_pins_a_vllm_that_accepts_the_core_torch():
    lock = _lock("gpu-lock.txt")
    torch_pin = next(str(r.specifier) for r in _core() if r.name == "torch")
    assert f"=={lock['torch']}" == torch_pin and "+cpu" not in lock["torch"]
    assert lock["vllm"] == "0.32.0"  # 0.33 needs torch 2.14: the lock pins the newest that resolves
    assert any(k.startswith("nvidia-") for k in lock)  # the CUDA build of torch, not the CPU one
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for r in map(Requirement, extras["vllm"] + extras["dev"]):
        assert r.specifier.contains(lock[canonicalize_name(r.name)]), r


def test_the_simulation_server_has_its_own_lock():
    sim = _lock("sim-sglang-lock.txt")
    assert "sglang" in sim and sim["torch"] != _lock("gpu-lock.txt")["torch"]  # why it needs its own venv


def test_the_gpu_scripts_parse_and_plan_without_a_gpu():
    for script in ("lock_gpu.sh", "gpu_smoke.sh", "launch_simulation_server.sh"):
        r = subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], capture_output=True, text=True)
        assert r.returncode == 0, (script, r.stderr)
    r = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_smoke.sh"), "--dry-run"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    checks = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("PLAN ")]
    assert checks == ["install", "cuda", "nccl", "bf16_fp32_master", "vllm_engine_weight_update", "sim_server_vllm",
                      "grpo_2_steps", "sglang_server"], r.stdout


def test_the_simulation_server_binds_localhost_unless_told(tmp_path):
    """--dry-run prints the server command: 127.0.0.1 by default, --host only when given."""
    model = tmp_path / "sim"
    model.mkdir()
    env = {**os.environ, "PYTHON": sys.executable}
    base = ["bash", str(ROOT / "scripts" / "launch_simulation_server.sh"), str(model), "--dry-run"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "--host 127.0.0.1 " in r.stdout and "0.0.0.0" not in r.stdout
    r = subprocess.run(base + ["--host", "0.0.0.0"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0 and "--host 0.0.0.0 " in r.stdout
