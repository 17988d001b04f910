"""The package works installed, not only from a checkout: the configs and prompt templates are package data,
and no module finds its files through the repository layout."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_no_module_reaches_outside_the_package_through_parents():
    offenders = [f"{p.relative_to(REPO)}:{i}" for p in (REPO / "zerosearch").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"parents\[\d\]", line)]
    assert offenders == [], offenders


def test_a_built_wheel_installed_elsewhere_composes_the_configs_and_loads_the_prompts(tmp_path):
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(wheels), str(REPO)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = wheels.glob("zerosearch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ("zerosearch/configs/config.yaml", "zerosearch/configs/algorithm/grpo.yaml",
                 "zerosearch/configs/experiment/zerosearch.yaml", "zerosearch/configs/search/simulate_sft.yaml"):
        assert want in names, want
    assert any(n.startswith("zerosearch/configs/prompts/") and n.endswith(".txt") for n in names)
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # a wheel is a zip laid out as site-packages
    code = ("import zerosearch, sys; from zerosearch.run import load_config; "
            "from zerosearch.search.sim_prompts import PromptSet; "
            "assert zerosearch.__file__.startswith(sys.argv[1]), zerosearch.__file__; "
            "cfg = load_config(['algorithm=ppo', 'experiment=zerosearch', "
            "'search.retrieval.url=http://127.0.0.1:8000/retrieve'], check_paths=False); "
            "print(cfg.algorithm.adv_estimator, cfg.trainer.total_steps, len(PromptSet.load('simulate_sft').useful.pieces))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)  # before the editable install of the checkout
    r = subprocess.run([sys.executable, "-c", code, str(target)], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split()[:2] == ["gae", "203"]
