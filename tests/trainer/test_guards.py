"""Collapse guards: the signs are computed from a step's metrics and warned about past their thresholds."""

from __future__ import annotations

from zerosearch.config.schema import GuardsConfig
from zerosearch.trainer.guards import check_step


def _step(entropy: float, response_len: float, search_rate: float) -> dict[str, float]:
    return {"actor/entropy": entropy, "response_length/mean": response_len, "prompt_length/mean": 100.0,
            "env/search_rate": search_rate}


def test_a_healthy_step_logs_the_signs_without_warning():
    m = _step(1.2, 250.0, 0.8)
    assert check_step(m, GuardsConfig(), max_total_length=600, step=3) == []
    assert m["guards/response_length_share"] == 0.5 and abs(m["guards/no_search_share"] - 0.2) < 1e-12
    assert m["guards/warnings"] == 0.0


def test_each_crossed_threshold_warns_naming_its_key():
    m = _step(0.01, 480.0, 0.02)
    lines = check_step(m, GuardsConfig(min_entropy=0.05, max_response_length_share=0.9, max_no_search_share=0.95),
                       max_total_length=600, step=170)
    assert lines == [
        "[guards] WARNING step 170: actor/entropy 0.0100 < trainer.guards.min_entropy 0.05: the policy is becoming "
        "deterministic (collapse?)",
        "[guards] WARNING step 170: mean response fills 96% of its budget > trainer.guards.max_response_length_share "
        "0.9 (responses run into rollout.max_total_length)",
        "[guards] WARNING step 170: 98% of trajectories never searched > trainer.guards.max_no_search_share 0.95"]
    assert m["guards/warnings"] == 3.0


def test_guards_switch_off():
    m = _step(0.0, 600.0, 0.0)
    assert check_step(m, GuardsConfig(min_entropy=0, max_response_length_share=1, max_no_search_share=1), 600, 1) == []
