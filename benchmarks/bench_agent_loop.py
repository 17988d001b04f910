"""The toy world's rollout phase, turn-synchronous against asynchronous, against a slow search server.

    python -m benchmarks.bench_agent_loop [--prompts 32] [--n 4] [--repeats 3] \
        [--scenarios instant,fixed200,tail] [--drivers sync,call,continuous] [--groups 1] \
        [--agent-steps 300] [--threads N] [--json FILE]

Drivers: `sync` (rollout.mode=sync), `call` (rollout.mode=async, async_batching=call: whole generate
calls over the ready trajectories, `--groups` = async_groups) and `continuous` (rollout.mode=async,
async_batching=continuous: the HF engine's stream, sequences joining and leaving between decode steps).

The agent is the cached toy agent (`bash train_grpo.sh` builds it under .cache/toy/) when present, else a
toy-sized tiny Qwen2 SFT'd here for `--agent-steps` steps on the toy world's search demonstrations (cached
under .cache/bench/), so it searches once or twice and answers, as the toy agent does. Search is the real
simulated-search client (`SimulatedSearchEngine`, HTTP chat transport) against a real server process on
127.0.0.1 (`benchmarks.latency_server`) that delays every request:

    instant    no delay
    fixed200   200 ms per request
    tail       200 ms, and 1 s for 10% of the requests (chosen by a hash of the request: the same ones
               are slow in both loops)

Per scenario, after one warm-up rollout per driver, `--repeats` rollouts per driver, rotating which goes
first, the same seeds for all: with per-trajectory seeds every driver produces the same trajectories
(checked: `identical` counts those with the same ids as sync), so they do the same work. Printed per driver:
median rollout wall time, engine idle share, searches/s; and for each asynchronous driver the median of the
per-repeat ratio driver/sync of the wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCENARIOS = {"instant": (0.0, 0.0, 0.0), "fixed200": (0.2, 0.0, 0.0), "tail": (0.2, 0.1, 1.0)}


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def agent_and_questions(steps: int, cache_root: Path):
    """(model dir, tokenizer, questions): the cached toy agent when present, else a quick one built here."""
    from zerosearch.toy.pipeline import ToySettings
    from zerosearch.toy.world import build_world

    s = ToySettings()
    toy = Path(os.environ.get("ZS_TOY_CACHE", cache_root / "toy")) / s.key()
    world = build_world(s.n_sft, s.n_rl, s.n_test, s.two_hop_share, seed=s.world_seed)
    if (toy / "agent_sft" / "DONE").exists():
        _log(f"[bench] the cached toy agent: {toy / 'agent_sft'}")
        return toy / "agent_sft", world
    out = cache_root / "bench" / f"agent_{s.key()}_{steps}"
    if not (out / "DONE").exists():
        build_quick_agent(out, world, s, steps)
    _log(f"[bench] quick toy agent: {out}")
    return out, world


def build_quick_agent(out: Path, world, s, steps: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from zerosearch.data.prompts import render_prompt
    from zerosearch.simulator.sft import SFTRunner
    from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer
    from zerosearch.toy.demos import DemoBuilder, DemoMix

    t0 = time.perf_counter()
    texts = [row["contents"] for row in world.corpus()][:4000]
    texts += [q.question for qs in world.questions.values() for q in qs][:4000]
    texts += [render_prompt(None, "Q?", template="compact", chat_template="never")] * 50
    tok = build_tokenizer(out, texts, vocab_size=s.vocab_size)
    spec = TinySpec(vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_layers=s.num_layers,
                    num_heads=s.num_heads, num_kv_heads=s.num_kv_heads, intermediate_size=s.intermediate_size, seed=2)
    build_model(out, tok, spec)
    model = AutoModelForCausalLM.from_pretrained(out)
    builder = DemoBuilder(world, tok, s.max_obs_length, s.topk, seed=0)
    pool = builder.sample(world.splits["sft"], DemoMix(0.55, 0.15, 0.15, 0.15), 2048)
    torch.manual_seed(0)
    runner = SFTRunner(model, tok.pad_token_id, lr=s.agent_lr, total_steps=steps, batch_size=32, warmup_steps=20)
    runner.train(pool, log_every=max(1, steps // 4), log=_log)
    runner.save(out, tok)
    (out / "DONE").write_text(f"{time.perf_counter() - t0:.0f}\n")


def start_server(latency: float, tail_share: float, tail_latency: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.latency_server", "--latency", str(latency),
                             "--tail-share", str(tail_share), "--tail-latency", str(tail_latency)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[1])
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"latency server did not start (said {line!r})")
    return proc, int(line.split()[1])


def run_scenario(name: str, model_dir: Path, world, args) -> dict:
    from transformers import AutoTokenizer

    from zerosearch.config.schema import CurriculumConfig, RolloutConfig, SimulationConfig
    from zerosearch.data.prompts import encode_prompt
    from zerosearch.generation.hf_engine import HFEngine
    from zerosearch.generation.types import SamplingParams
    from zerosearch.rollout.agent_loop import AgentLoop
    from zerosearch.rollout.types import PromptItem
    from zerosearch.search.simulated import SimulatedSearchEngine

    proc, port = start_server(*SCENARIOS[name])
    try:
        engine = HFEngine.from_pretrained(str(model_dir), micro_batch_size=1024)
        tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
        sim = SimulationConfig(servers=f"127.0.0.1:{port}", transport="chat", model_name="stub",
                               max_concurrency=256, timeout_s=30.0, words_per_doc=12)
        search = SimulatedSearchEngine.from_config(sim, CurriculumConfig(), mode="simulate_sft", topk=1,
                                                   total_steps=10, seed=0, cache=False)
        qs = world.questions["rl"][:args.prompts]
        items = [PromptItem(encode_prompt(tok, q.question, "compact"), q.id, q.question, tuple(q.golden_answers), "toy")
                 for q in qs]
        base = dict(max_turns=4, max_response_length=48, max_obs_length=48, max_total_length=1024)
        modes = {"sync": dict(mode="sync"), "call": dict(mode="async", async_batching="call", async_groups=args.groups),
                 "continuous": dict(mode="async", async_batching="continuous")}
        drivers = args.drivers.split(",")
        loops = {m: AgentLoop(engine, search, tok, RolloutConfig(**base, **modes[m])) for m in drivers}
        rows: dict[str, list[dict]] = {m: [] for m in drivers}
        identical = {m: 0 for m in drivers}
        total = 0
        for rep in range(-1, args.repeats):  # rep -1: warm-up, not recorded
            k = max(rep, 0) % len(drivers)
            order = drivers[k:] + drivers[:k]
            got = {}
            for m in order:
                trajs = loops[m].run(items, args.n, SamplingParams(temperature=1.0, seed=1000 + max(rep, 0)))
                t = dict(loops[m].timing)
                t["searches_per_s"] = t["searches"] / t["rollout"]
                got[m] = trajs
                if rep >= 0:
                    rows[m].append(t)
            if rep >= 0:
                total += len(got["sync"])
                for m in drivers:
                    identical[m] += sum(a.response_ids == b.response_ids for a, b in zip(got["sync"], got[m]))
            _log(f"[bench] {name} rep {rep}: " + " | ".join(
                f"{m} {loops[m].timing['rollout']:.2f}s" for m in order))
        search.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(10)
    med = {m: {k: statistics.median(r[k] for r in rows[m]) for k in rows[m][0]} for m in rows}
    ratios = {m: [a["rollout"] / s["rollout"] for a, s in zip(rows[m], rows["sync"])] for m in drivers if m != "sync"}
    return {"scenario": name, "drivers": drivers, "median": med, "ratios": ratios,
            "ratio_over_sync": {m: statistics.median(v) for m, v in ratios.items()},
            "identical_trajectories": identical, "trajectories": total, "async_groups": args.groups}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--scenarios", default="instant,fixed200,tail")
    ap.add_argument("--groups", type=int, default=1, help="rollout.async_groups of the call driver")
    ap.add_argument("--drivers", default="sync,call,continuous",
                    help="comma-separated: sync, call (async, whole generate calls), continuous (async, the engine's stream)")
    ap.add_argument("--agent-steps", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (0 = all cores; 1 by default: on shared cores, OpenMP threads spinning against other jobs slow every op up to tenfold)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    drivers = args.drivers.split(",")
    if drivers[0] != "sync" or not set(drivers) <= {"sync", "call", "continuous"}:
        ap.error(f"--drivers {args.drivers!r}: sync first, then call and/or continuous")
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    from zerosearch.utils.paths import project_root

    model_dir, world = agent_and_questions(args.agent_steps, project_root() / ".cache")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} load average {os.getloadavg()[0]:.1f} | {args.prompts} prompts x "
          f"{args.n} samples, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    results = []
    for name in args.scenarios.split(","):
        r = run_scenario(name, model_dir, world, args)
        results.append(r)
        for m in r["drivers"]:
            x = r["median"][m]
            print(f"{name:9s} {m:10s}: wall {x['rollout']:6.2f}s | gen {x['gen']:6.2f}s | engine idle "
                  f"{x['engine_idle_share']:5.1%} | {x['searches_per_s']:6.1f} searches/s | "
                  f"{x['generate_calls']:.0f} generate calls / engine steps")
        for m, ratio in r["ratio_over_sync"].items():
            print(f"{name:9s} {m}/sync wall: {ratio:.3f} (per repeat "
                  f"{', '.join(f'{v:.3f}' for v in r['ratios'][m])}) | identical trajectories "
                  f"{r['identical_trajectories'][m]}/{r['trajectories']}"
                  + (f" | async groups {r['async_groups']}" if m == "call" else ""), flush=True)
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
