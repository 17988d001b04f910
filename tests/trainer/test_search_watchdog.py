"""The search watchdog: a step whose searches mostly fell back is a logged warning with the counts; three in
a row stop the run with a clear error, keeping a checkpoint of the last good step (real CheckpointManager,
real files). Plus one short real run (Ray, 2 FSDP2 workers on CPU) whose simulation server starts answering
nothing after step 1: it stops at step 4 with step 1's checkpoint kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch.trainer.checkpoint import CheckpointManager
from zerosearch.trainer.search_watchdog import SearchFailureError, SearchWatchdog


def step_metrics(requests: int, fallbacks: int, **kinds: int) -> dict[str, float]:
    m = {"search/requests": float(requests), "search/fallbacks": float(fallbacks)}
    m.update({f"search/failures/{k}": float(v) for k, v in kinds.items()})
    return m


class Keeper:
    """keep_last_good as the trainer does it: reuse the latest checkpoint of that step, else save one."""

    def __init__(self, run_dir: Path):
        self.ckpt = CheckpointManager(run_dir, keep_last_k=2)
        self.calls: list[int] = []

    def save(self, step: int) -> Path:
        return self.ckpt.save(step, lambda p: Path(p).mkdir(parents=True), {"step": step})

    def __call__(self, step: int) -> Path | None:
        self.calls.append(step)
        if step < 1:
            return None
        done = self.ckpt.complete()
        return done[-1][1] if done and done[-1][0] == step else self.save(step)


def test_three_bad_steps_in_a_row_stop_with_the_last_good_checkpoint(tmp_path):
    lines: list[str] = []
    keeper = Keeper(tmp_path)
    keeper.save(4)  # a periodic checkpoint, older than the last good step
    dog = SearchWatchdog(max_fallback_share=0.5, max_bad_steps=3, log=lines.append)
    for step in range(1, 8):
        dog.observe(step, step_metrics(40, 3, timeout=3), keeper)  # 7.5%: fine
    assert lines == [] and keeper.calls == []
    dog.observe(8, step_metrics(40, 30, connect=25, timeout=5), keeper)
    assert keeper.calls == [7] and dog.last_good_checkpoint == tmp_path / "checkpoints" / "step_000007"
    assert "step 8: 30 of 40 searches fell back (75% > search.max_fallback_share=0.5)" in lines[0]
    assert "{'connect': 25, 'timeout': 5}" in lines[0] and "bad step 1 of 3 in a row" in lines[0]
    assert lines[0].startswith("WARNING")
    dog.observe(9, step_metrics(40, 40, connect=40), keeper)
    with pytest.raises(SearchFailureError) as e:
        dog.observe(10, step_metrics(40, 21, http_4xx=21), keeper)
    msg = str(e.value)
    assert "3 training steps in a row (steps 8-10)" in msg and "search.max_fallback_share=0.5" in msg
    for key in ("search.max_bad_search_steps", "search.simulation.servers (IP)", "SIMULATION_LLM"):
        assert key in msg
    assert f"checkpoint is {tmp_path / 'checkpoints' / 'step_000007'}" in msg and "{'http_4xx': 21}" in msg
    assert keeper.calls == [7] and len(lines) == 3  # one checkpoint at the streak's start, a warning a step
    assert json.loads((tmp_path / "checkpoints" / "step_000007" / "trainer_state.json").read_text())["step"] == 7


def test_a_good_step_or_a_step_without_searches_ends_the_streak(tmp_path):
    lines: list[str] = []
    keeper = Keeper(tmp_path)
    dog = SearchWatchdog(0.5, 3, log=lines.append)
    for step, m in enumerate([step_metrics(10, 9), step_metrics(10, 9), step_metrics(10, 5),  # 50% is not bad
                              step_metrics(10, 10), step_metrics(10, 6), {},                  # no searches
                              step_metrics(10, 10), step_metrics(10, 10)], start=3):
        dog.observe(step, m, keeper)
    assert dog.streak == 2 and keeper.calls == [2, 5, 8]
    assert sum("recovered" in line for line in lines) == 2 and sum(line.startswith("WARNING") for line in lines) == 6


def test_a_streak_from_the_first_step_keeps_the_initial_model(tmp_path):
    keeper = Keeper(tmp_path)
    dog = SearchWatchdog(0.5, 2, log=lambda _: None)
    dog.observe(1, step_metrics(8, 8, empty_output=8), keeper)
    with pytest.raises(SearchFailureError, match=r"initial model \(model.path\) is unchanged"):
        dog.observe(2, step_metrics(8, 8, empty_output=8), keeper)
    assert keeper.calls == [0] and not (tmp_path / "checkpoints").exists()


def test_never_stopping_when_asked(tmp_path):
    lines: list[str] = []
    dog = SearchWatchdog(0.2, 0, log=lines.append)
    for step in range(1, 20):
        dog.observe(step, step_metrics(10, 10), Keeper(tmp_path))
    assert dog.streak == 19 and "bad step 19 in a row" in lines[-1]


@pytest.mark.parametrize("share", [-0.1, 1.0, 2.0])
def test_a_share_out_of_range_names_the_key(share):
    with pytest.raises(ValueError, match="search.max_fallback_share"):
        SearchWatchdog(share, 3)


# ------------------------------------------------------------------------------------------- a real run
@pytest.mark.slow  # about 40 s; the watchdog's logic is in the unit tests above; CI runs this in its slow pass
def test_a_run_whose_simulation_server_stops_answering_stops_at_the_third_bad_step(tmp_path):
    """Step 1 gets documents; from step 2 on the server's answers parse into nothing (empty_output
    fallbacks). Steps 2, 3, 4 are bad: the run stops at step 4 before its update, with a checkpoint of
    step 1 (saved at step 2, before step 2's batch: a resume redoes step 2)."""
    import ray
    from trainer_fixtures import make_assets, run_overrides, teach_to_search

    from zerosearch.config.store import compose_config, to_structured
    from zerosearch.config.validate import validate_config
    from zerosearch.data.qa import load_qa
    from zerosearch.testing.stub_server import StubSimServer, echo_reply
    from zerosearch.trainer.trainer import Trainer

    assets = make_assets(tmp_path / "assets")
    teach_to_search(assets["agent"], [r.question for r in load_qa(assets["train"])])
    out = tmp_path / "run"
    metrics_file = out / "metrics.jsonl"

    def reply(prompt: str) -> str:  # documents until step 1 is logged, then nothing usable
        done = metrics_file.exists() and any(json.loads(x)["step"] >= 1 for x in metrics_file.read_text().splitlines())
        return "" if done else echo_reply(prompt)

    with StubSimServer(reply=reply, served_model_name="sim") as srv:
        overrides = run_overrides(assets, out, steps=6) + [
            "search.simulation.transport=chat", f"search.simulation.servers={srv.url}",
            "search.simulation.model_name=sim", "search.simulation.max_retries=0", "search.cache_train=false",
            "data.train_batch_size=2", "rollout.n=2", "rollout.max_turns=1", "actor.micro_batch_size_per_worker=2",
            "trainer.save_freq=100", "trainer.test_freq=100", "trainer.val_before_train=false",
            "logging.backends=[console,jsonl]"]
        cfg = validate_config(to_structured(compose_config(overrides)))
        try:
            with pytest.raises(SearchFailureError) as e:
                Trainer(cfg).fit()
        finally:
            if ray.is_initialized():
                ray.shutdown()
    ckpt = out / "checkpoints" / "step_000001"
    assert "stopping at step 4: 3 training steps in a row (steps 2-4)" in str(e.value)
    assert f"checkpoint is {ckpt}" in str(e.value) and "empty_output" in str(e.value)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["step"] == 1 and state["loader"]["cursor"] == 2  # after step 1's batch of 2 prompts
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001"]
    rows = [json.loads(x) for x in metrics_file.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]  # step 4 stopped before it was logged
    assert rows[0]["search/fallbacks"] == 0 < rows[0]["search/requests"]
    assert all(r["search/fallbacks"] == r["search/requests"] == r["search/failures/empty_output"] > 0 for r in rows[1:])
