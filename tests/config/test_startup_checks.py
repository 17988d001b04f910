"""Start-up checks that run before anything heavy (models, data, Ray), each naming the key to fix: model
folders, non-finite numbers, server addresses, writable folders, the SerpApi key, wandb's mode and its
network, and Hydra's own override errors as one line (through `python -m zerosearch.train` and the launcher)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from zerosearch.config.launch_keys import LaunchError, check_paths
from zerosearch.config.store import compose_config, to_structured
from zerosearch.config.validate import ConfigError, preflight, validate_config

OK = ["search.retrieval.url=http://127.0.0.1:8000/retrieve"]


def problems(overrides: list[str], check_paths: bool = False, key: str = "") -> list[str]:
    """validate_config's problems for the default config plus `overrides` (those starting with `key`)."""
    try:
        validate_config(to_structured(compose_config(OK + overrides)), check_paths=check_paths)
    except ConfigError as e:
        return [p for p in e.problems if p.startswith(key)]
    return []


def _model_folder(root: Path, files: tuple[str, ...] = ("config.json", "model.safetensors", "tokenizer.json")) -> Path:
    root.mkdir(parents=True)
    for f in files:
        (root / f).write_text("{}")
    return root


# ---------------------------------------------------------------------------- model folders
def test_a_model_path_that_is_a_file_an_empty_folder_or_incomplete_is_named(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    no_weights = _model_folder(tmp_path / "no_weights", ("config.json", "tokenizer.json"))
    no_tok = _model_folder(tmp_path / "no_tok", ("config.json", "model.safetensors"))
    good = _model_folder(tmp_path / "good")
    expect = {
        f: "is a file; expected a Hugging Face model folder",
        empty: "is an empty folder; expected a Hugging Face model folder",
        no_weights: "is missing weights (*.safetensors or pytorch_model*.bin): not a complete model folder",
        no_tok: "is missing tokenizer files (one of tokenizer.json",
    }
    for path, msg in expect.items():
        got = problems([f"model.path={path}"], check_paths=True, key="model.path")
        assert len(got) == 1 and got[0].startswith(f"model.path='{path}': {msg}"), got
        with pytest.raises(LaunchError) as e:  # the launcher's MODEL_PATH check says the same
            check_paths({"MODEL_PATH": str(path)})
        assert f"MODEL_PATH '{path}' {msg}" in str(e.value)
    assert problems([f"model.path={good}"], check_paths=True, key="model.path") == []
    check_paths({"MODEL_PATH": str(good)})
    # a separate tokenizer folder: the model folder needs no tokenizer, the tokenizer folder no weights
    assert problems([f"model.path={no_tok}", f"model.tokenizer_path={no_weights}"], check_paths=True, key="model.") == []


# ---------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("override, expected", [
    ("actor.lr=inf", "actor.lr=inf: must be a finite number"),
    ("actor.lr=nan", "actor.lr=nan: must be a finite number"),
    ("critic.lr=-inf", "critic.lr=-inf: must be a finite number"),
    ("search.simulation.timeout_s=nan", "search.simulation.timeout_s=nan: must be a finite number"),
    ("trainer.val_noise_levels=[0.1,nan]", "trainer.val_noise_levels[1]=nan: must be a finite number"),
    ("reward.final_format_score=inf", "reward.final_format_score=inf: must be a finite number"),
    ("actor.lr=0", "actor.lr=0.0: must be > 0"),
    ("critic.lr=-1e-5", "critic.lr=-1e-05: must be > 0"),
    ("search.retrieval.timeout_s=0", "search.retrieval.timeout_s=0.0: must be > 0"),
    ("actor.betas=[0.9,1.5]", "actor.betas[1]=1.5: must be in [0, 1)"),
    ("search.simulation.top_p=0", "search.simulation.top_p=0.0: must be in (0, 1]"),
])
def test_non_finite_and_out_of_range_numbers_are_named(override, expected):
    assert expected in problems([override])


# ---------------------------------------------------------------------------- servers (IP)
@pytest.mark.parametrize("servers, expected", [
    ("::::", "'::::' is not an IPv6 address"),
    ("localhost:99999", "port 99999 is outside 1..65535"),
    ("localhost:0", "port 0 is outside 1..65535"),
    ("http://h:70000", "the port must be in 1..65535"),
    ("a:b", "port 'b' is not a number"),
    (":7000", "no host"),
])
def test_ip_values_that_cannot_be_host_port_are_named(servers, expected):
    got = problems([f"search.simulation.servers='{servers}'"], key="search.simulation.servers")
    assert len(got) == 1 and expected in got[0], got


def test_good_ip_values_pass():
    for servers in ("localhost", "10.0.0.2:7000", "[::1]:7001", "::1", "a:6001, b:6002", "http://h:8000"):
        assert problems([f"search.simulation.servers='{servers}'"]) == [], servers


# ---------------------------------------------------------------------------- writable folders
def test_an_unwritable_output_folder_fails_at_start_naming_the_key(tmp_path):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    got = problems([f"trainer.output_dir={a_file}/run"], check_paths=True, key="trainer.output_dir")
    assert got == [f"trainer.output_dir='{a_file}/run': cannot be created: {a_file} is a file, not a folder"]
    got = problems(["trainer.output_dir=/proc/zerosearch_run"], check_paths=True, key="trainer.output_dir")
    assert len(got) == 1 and "cannot be written (tested in its nearest existing parent /proc)" in got[0], got
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoints").write_text("not a folder")
    got = problems([f"trainer.output_dir={run}"], check_paths=True, key="trainer.output_dir")
    assert got == [f"trainer.output_dir='{run}': {run / 'checkpoints'} cannot be created: "
                   f"{run / 'checkpoints'} is a file, not a folder"]
    assert problems([f"trainer.output_dir={tmp_path / 'new' / 'run'}"], check_paths=True, key="trainer") == []
    assert not (tmp_path / "new").exists() and sorted(os.listdir(tmp_path)) == ["file", "run"]  # no probe left


# ---------------------------------------------------------------------------- SerpApi key
def test_a_missing_serpapi_key_is_found_before_ray_starts(monkeypatch):
    for name in ("SERPAPI_API_KEY", "SER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    got = problems(["search.eval_engine=google"], check_paths=True, key="search.eval_engine")
    assert len(got) == 1 and "needs its key in the environment (SERPAPI_API_KEY or SER_API_KEY" in got[0]
    assert problems(["search=google"], check_paths=True, key="search.mode")[0].startswith("search.mode='google'")
    # the Trainer runs the same preflight first, before tokenizer, data or Ray
    import ray

    from zerosearch.trainer.trainer import Trainer

    cfg = validate_config(to_structured(compose_config(OK + ["search.eval_engine=google", "trainer.device=cpu"])),
                          check_paths=False)
    with pytest.raises(ConfigError, match="SERPAPI_API_KEY or SER_API_KEY"):
        Trainer(cfg)
    assert not ray.is_initialized()
    monkeypatch.setenv("SER_API_KEY", "k-original-name")  # the original ZeroSearch's variable name
    preflight(cfg)
    from zerosearch.search.web import SerpApiEngine

    engine = SerpApiEngine(topk=1)
    assert engine._key.reveal() == "k-original-name"
    engine.close()


# ---------------------------------------------------------------------------- wandb
def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_wandb_mode_from_the_environment_wins(tmp_path, monkeypatch):
    from zerosearch.trainer.tracking import Tracker

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    tr = Tracker(["wandb"], tmp_path, "p", "e", wandb_mode="offline", progress_bar=False)
    assert tr._wandb is None and not (tmp_path / "wandb").exists()
    tr.close()
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    assert "(from the WANDB_MODE environment variable, which wins over the config) must be one of" in \
        problems([], key="logging.wandb_mode")[0]


def test_wandb_online_without_a_network_goes_offline_with_a_warning(tmp_path, monkeypatch, capsys):
    from zerosearch.trainer.tracking import Tracker

    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    t0 = time.perf_counter()
    tr = Tracker(["wandb"], tmp_path, "p", "e", wandb_mode="offline", progress_bar=False, wandb_init_timeout_s=3)
    took = time.perf_counter() - t0
    tr.log({"x": 1.0}, 1)
    tr.close()
    err = capsys.readouterr().err
    assert "[tracking] WARNING: wandb could not start online within 3 s" in err and "wandb offline instead" in err
    assert took < 30, took
    assert list((tmp_path / "wandb").glob("offline-run-*"))


# ---------------------------------------------------------------------------- Hydra override errors
@pytest.mark.parametrize("override, expected", [
    ("actor.lr=[1,", "actor.lr: cannot parse the override 'actor.lr=[1,': no viable alternative at input '[1,'"),
    ("actor.lr=abc", "Error merging override actor.lr=abc (Value 'abc' of type 'str' could not be converted to Float)"),
    ("algorithm=foo", "Could not find 'algorithm/foo' Available options in 'algorithm': dr_grpo grpo gspo ppo"),
])
def test_hydra_override_errors_are_one_line_naming_the_key(override, expected, capsys):
    from zerosearch.train import main

    assert main([override]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: invalid configuration (1 problem):", f"  - {err.splitlines()[1][4:]}"]
    assert expected in err and "full_key" not in err and "Config search path" not in err


def test_hydra_override_errors_through_the_cli_and_the_launcher(tmp_path):
    """As a user sees them: exit 2, the error line, no traceback, from both entry points."""
    model = _model_folder(tmp_path / "model")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.parquet").write_text("")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    for cmd in ([sys.executable, "-m", "zerosearch.train", "rollout.n=2.5"],
                [sys.executable, "-m", "zerosearch.launch", "--algorithm", "grpo", "MODEL_PATH", str(model),
                 "DATA_PATH", str(tmp_path / "data"), "rollout.n=2.5"]):
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
        assert "Error merging override rollout.n=2.5 (Value '2.5' of type 'float' could not be converted to " \
               "Integer)" in r.stderr
