"""trainer.val_only=true validates through the training stack (Ray, 2 FSDP2 workers) and exits; the harness,
on the same model, data and engine, gives the same numbers (one scoring path, one agent loop)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from trainer_fixtures import make_assets, run_overrides  # noqa: E402

from zerosearch.config.store import compose_config, to_structured  # noqa: E402
from zerosearch.config.validate import validate_config  # noqa: E402
from zerosearch.data.qa import load_qa  # noqa: E402


@pytest.fixture(autouse=True)
def _ray():
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def test_val_only_matches_the_harness(tmp_path):
    from zerosearch.trainer.trainer import Trainer

    a = make_assets(tmp_path / "assets")
    out = tmp_path / "run"
    ov = run_overrides(a, out) + ["trainer.val_only=true", "trainer.resume=disable", "logging.backends=[jsonl]"]
    cfg = validate_config(to_structured(compose_config(ov)))
    path = Trainer(cfg).fit()
    assert path.name == "summary_val_only.json" and not (out / "summary.json").exists()
    assert not (out / "actor_hf").exists() and not (out / "checkpoints").exists()  # nothing trained or saved
    val = json.loads(path.read_text())["final_val"]
    assert val["n"] == len(load_qa(a["val"])) and val["turns"] > 1  # multi-turn (invalid actions get a notice)

    # the toy world's final report: the harness on the run's actor_hf/ under its config.yaml (the run kind of
    # model input), printed beside the final validation, which it must equal
    from omegaconf import OmegaConf

    from zerosearch.toy.pipeline import harness_report

    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    shutil.copytree(a["agent"], out / "actor_hf")
    rep = harness_report(out, cfg.data.val_files, cfg.data.val_batch_size, val)
    assert rep["equals_final_val"] and rep["n"] == val["n"]
    rows = [json.loads(x) for x in (out / "eval" / "trajectories.jsonl").read_text().splitlines()]
    overall = next(r for r in csv.DictReader(open(out / "eval" / "results.csv")) if r["dataset"] == "overall")
    assert len(rows) == val["n"] == int(overall["rows"])
    for mine, theirs in (("cover_em", "cover_em"), ("em", "em"), ("f1", "f1"), ("reward", "reward"),
                         ("answer_rate", "answer_rate"), ("searches_per_question", "searches"), ("mean_turns", "turns")):
        assert float(overall[mine]) == pytest.approx(val[theirs], abs=1e-6), mine
