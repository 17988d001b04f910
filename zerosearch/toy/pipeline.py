"""`bash train_grpo.sh` with no MODEL_PATH: ZeroSearch in miniature, end to end, on CPU.

  1. world       invented countries, their documents (a corpus) and questions (zerosearch.toy.world)
  2. tokenizer   a byte-level BPE trained on the world's text (zerosearch.testing.tiny_models)
  3. simulator   a tiny LM fine-tuned the ZeroSearch way with the same prompts as at scale
                 (zerosearch.simulator.finetune): BM25 results labelled useful / noisy -> SFT
  4. warm start  a tiny agent SFT'd on demonstrations that often answer without searching
  5. RL          the normal trainer (Ray, FSDP2 workers, GRPO or PPO) with the simulator as the training
                 search engine (curriculum noise START_THRESHOLD -> END_THRESHOLD) and real BM25
                 retrieval over the world's corpus at validation
  6. report      metrics.jsonl, wandb (offline), tensorboard, summary.json and a PNG of the curves
Steps 1-4 are cached under .cache/toy/<key>/ and reused by later runs (any seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from zerosearch.utils.paths import project_root

# The simulator prompt family the toy simulator is fine-tuned on and queried with (configs/experiment/toy.yaml
# sets search.simulation.prompt_family to the same): it states top-k and the word count (the toy asks for
# one document of 12 words), where ZeroSearch's exact simulate_sft prompt says "five ... about 30 words".
TOY_SIM_FAMILY = "simulate_sft_all_answers"


@dataclass
class ToySettings:
    """What the cached artefacts are built from (a change rebuilds them)."""

    world_seed: int = 0
    n_sft: int = 3000
    n_rl: int = 1000
    n_test: int = 100
    two_hop_share: float = 0.2
    vocab_size: int = 1024
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 384
    topk: int = 1
    max_obs_length: int = 48
    words_per_doc: int = 12
    sim_steps: int = 1200
    sim_batch_size: int = 32
    sim_lr: float = 6e-3
    sim_rows: int = 6000
    agent_steps: int = 1000
    agent_batch_size: int = 32
    agent_lr: float = 3e-3
    # demonstration mixes (search, direct, retry, two_hop): copy first, then learn to skip searching
    early_mix: tuple[float, float, float, float] = (0.72, 0.15, 0.08, 0.05)
    late_mix: tuple[float, float, float, float] = (0.27, 0.60, 0.08, 0.05)
    late_share: float = 0.2
    version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


class Stage:
    """A cached build step: runs `build(tmp_dir)` once, then renames tmp_dir to its final place."""

    def __init__(self, root: Path, name: str, log: Callable[[str], None]):
        self.path, self.log, self.name = root / name, log, name

    def get(self, build: Callable[[Path], None]) -> Path:
        if (self.path / "DONE").exists():
            self.log(f"[toy] {self.name}: cached ({self.path})")
            return self.path
        tmp = self.path.with_name(self.path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        t0 = time.perf_counter()
        build(tmp)
        (tmp / "DONE").write_text(f"{time.perf_counter() - t0:.1f}\n")
        shutil.rmtree(self.path, ignore_errors=True)
        os.replace(tmp, self.path)
        self.log(f"[toy] {self.name}: built in {time.perf_counter() - t0:.0f}s ({self.path})")
        return self.path


def _log(text: str) -> None:
    print(text, flush=True)  # progress must show up in a log file as it happens


def build_artefacts(s: ToySettings, cache_root: Path, log: Callable[[str], None] = _log) -> dict[str, Path]:
    """World, tokenizer, simulator and warm-started agent; cached by the settings' key."""
    import torch

    from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer
    from zerosearch.toy.world import build_world

    root = cache_root / s.key()
    root.mkdir(parents=True, exist_ok=True)
    (root / "settings.json").write_text(json.dumps(asdict(s), indent=1))
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    world = build_world(s.n_sft, s.n_rl, s.n_test, s.two_hop_share, seed=s.world_seed)
    spec = TinySpec(vocab_size=s.vocab_size, hidden_size=s.hidden_size, num_layers=s.num_layers,
                    num_heads=s.num_heads, num_kv_heads=s.num_kv_heads, intermediate_size=s.intermediate_size,
                    seed=s.world_seed)

    def make_world(tmp: Path) -> None:
        world.save(tmp)

    world_dir = Stage(root, "world", log).get(make_world)

    def make_tokenizer(tmp: Path) -> None:
        from zerosearch.data.prompts import render_prompt
        from zerosearch.search.sim_prompts import PromptSet

        texts = [row["contents"] for row in world.corpus()]
        texts += [q.question for qs in world.questions.values() for q in qs]
        texts += [render_prompt(_NoChat(), "Q?", template="compact", chat_template="never")] * 50
        sim = PromptSet.load(TOY_SIM_FAMILY)
        texts += [sim.render(noisy=n, query="Q", question="Q?", answers=["A"], topk=s.topk, words=s.words_per_doc)
                  for n in (False, True)] * 50
        build_tokenizer(tmp, texts, vocab_size=s.vocab_size)

    tok_dir = Stage(root, "tokenizer", log).get(make_tokenizer)

    def make_base(tmp: Path, seed: int) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(tok_dir)
        build_model(tmp, tok, TinySpec(**{**asdict(spec), "seed": seed}))
        tok.save_pretrained(tmp)

    def make_simulator(tmp: Path) -> None:
        from zerosearch.simulator.finetune import train_simulator

        base = root / "simulator_base"
        shutil.rmtree(base, ignore_errors=True)
        make_base(base, seed=s.world_seed + 1)
        train_simulator(base_model=str(base), out_dir=tmp, corpus=str(world_dir / "corpus.jsonl"),
                        qa_files=[str(world_dir / "sft.jsonl")], query_field="query", topk=s.topk,
                        words=s.words_per_doc, steps=s.sim_steps, batch_size=s.sim_batch_size, lr=s.sim_lr,
                        max_rows=s.sim_rows, eval_rows=200, seed=s.world_seed, family=TOY_SIM_FAMILY, log=log)
        shutil.rmtree(base, ignore_errors=True)

    sim_dir = Stage(root, "simulator", log).get(make_simulator)

    def make_agent(tmp: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from zerosearch.toy.demos import DemoBuilder, DemoMix, phased_pool
        from zerosearch.simulator.sft import SFTRunner

        make_base(tmp, seed=s.world_seed + 2)
        tok = AutoTokenizer.from_pretrained(tmp)
        model = AutoModelForCausalLM.from_pretrained(tmp)
        builder = DemoBuilder(world, tok, s.max_obs_length, s.topk, seed=s.world_seed)
        pool = phased_pool(builder, world.splits["sft"], s.agent_steps, s.agent_batch_size, DemoMix(*s.early_mix),
                           DemoMix(*s.late_mix), s.late_share)
        torch.manual_seed(s.world_seed)
        runner = SFTRunner(model, tok.pad_token_id, lr=s.agent_lr, total_steps=s.agent_steps,
                           batch_size=s.agent_batch_size, warmup_steps=100, seed=s.world_seed)
        runner.train(pool, log_every=max(1, s.agent_steps // 5), log=log)
        runner.save(tmp, tok)

    agent_dir = Stage(root, "agent_sft", log).get(make_agent)
    return {"root": root, "world": world_dir, "tokenizer": tok_dir, "simulator": sim_dir, "agent": agent_dir}


class _NoChat:
    """Stands in for a tokenizer without a chat template when rendering the plain prompt text."""

    chat_template = None


def toy_overrides(art: dict[str, Path], algorithm: str) -> list[str]:
    w = art["world"]
    return [
        "experiment=toy", f"algorithm={algorithm}",
        f"model.path={art['agent']}",
        f"data.train_files=[{w / 'rl.jsonl'}]", f"data.val_files=[{w / 'test.jsonl'}]",
        f"search.simulation.model_path={art['simulator']}",
        f"search.retrieval.corpus_path={w / 'corpus.jsonl'}",
    ]


def harness_report(run_dir: Path, val_files: list[str], batch_size: int, final_val: dict[str, Any]) -> dict[str, Any]:
    """The final report's numbers from the evaluation harness (zerosearch.eval) on the exported actor_hf/, under
    the run's config (the same engine, budgets and scoring as validation); printed beside the final
    validation's, which they must equal (the same greedy rollouts, scored by the same code)."""
    from zerosearch.eval.harness import EvalOptions, evaluate

    res = evaluate(EvalOptions(model=str(run_dir / "actor_hf"), out_dir=run_dir / "eval", datasets=list(val_files),
                               methods=["agent"], batch_size=batch_size, progress=False), log=_log)
    overall = next(r for r in res["records"] if r["dataset"] == "overall")
    out = {"cover_em": overall["cover_em"], "em": overall["em"], "f1": overall["f1"], "n": overall["rows"],
           "results": str(res["paths"]["md"])}
    same = bool(final_val) and all(abs(out[k] - final_val[k]) < 1e-9 for k in ("cover_em", "em", "f1", "n"))
    out["equals_final_val"] = same
    print(f"[toy] evaluation harness on actor_hf: cover-EM {out['cover_em']:.3f} EM {out['em']:.3f} F1 {out['f1']:.3f} "
          f"over {out['n']} questions ({out['results']}); final validation: cover-EM "
          f"{final_val.get('cover_em', float('nan')):.3f} EM {final_val.get('em', float('nan')):.3f} F1 "
          f"{final_val.get('f1', float('nan')):.3f} -> {'the same' if same else 'DIFFERENT (a bug: please report)'}",
          flush=True)
    return out


def main(algorithm: str, pairs: dict[str, str], overrides: list[str]) -> int:
    """The launcher's toy path. `pairs` are the launcher's KEY value pairs, `overrides` Hydra ones."""
    import sys

    from zerosearch.config.launch_keys import KEYS
    from zerosearch.config.validate import ConfigError
    from zerosearch.run import load_config, run

    not_for_toy = sorted(set(pairs) & {"DATA_PATH", "IP", "SIMULATION_LLM", "SEARCH_MODE", "NUM_GPUS_PER_NODE",
                                        "NNODES", "RETRIEVAL_URL", "CORPUS_PATH", "ENGINE", "RAY_ADDRESS"})
    if not_for_toy:
        print(f"error: {', '.join(not_for_toy)} need MODEL_PATH: without it the embedded toy world runs, with "
              "its own data, simulator and retrieval", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    print("[toy] ZeroSearch in miniature: building (or reusing) the world, the simulator and the warm start",
          flush=True)
    settings = ToySettings()
    art = build_artefacts(settings, Path(os.environ.get("ZS_TOY_CACHE", project_root() / ".cache" / "toy")))
    ov = toy_overrides(art, algorithm)
    if "OUTPUT_DIR" not in pairs and not any(o.startswith("trainer.output_dir=") for o in overrides):
        # a fresh folder per run: running the default command again runs it again (and never resumes a run
        # made with other artefacts); OUTPUT_DIR <folder> trainer.resume=auto continues a given run
        seed = pairs.get("SEED", "1")
        ov.append(f"trainer.output_dir=outputs/toy/{algorithm}_seed{seed}_{time.strftime('%Y%m%d-%H%M%S')}")
    for key, value in pairs.items():
        ov.extend(KEYS[key].to_overrides(value))
    ov.extend(overrides)
    try:
        cfg = load_config(ov)
        print(f"[toy] artefacts ready in {time.perf_counter() - t0:.0f}s; RL: {cfg.trainer.total_steps} steps of "
              f"{cfg.data.train_batch_size} questions x {cfg.rollout.n} samples ({algorithm})", flush=True)
        summary_path = run(ov)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = json.loads(Path(summary_path).read_text())
    from zerosearch.toy.report import plot_run

    png = plot_run(Path(cfg.trainer.output_dir))
    summary["plot"] = str(png)
    summary["toy_total_time_s"] = time.perf_counter() - t0
    summary["simulator_report"] = json.loads((art["simulator"] / "simulator_report.json").read_text())
    Path(summary_path).write_text(json.dumps(summary, indent=1))
    iv, fv = summary.get("initial_val") or {}, summary.get("final_val") or {}
    for name, s in (("noise 0", "0"), ("noise 0.5", "0.5")):
        a, b = iv.get("noise", {}).get(s), fv.get("noise", {}).get(s)
        if a and b:
            again = ""
            if "search_again_after_miss" in a and "search_again_after_miss" in b:
                again = (f", search again after an answer-free result {a['search_again_after_miss']:.2f} -> "
                         f"{b['search_again_after_miss']:.2f}")
            print(f"[toy] simulated search at {name}: cover-EM {a['cover_em']:.3f} -> {b['cover_em']:.3f}, "
                  f"searches {a['searches']:.2f} -> {b['searches']:.2f}{again}")
    summary["harness_eval"] = harness_report(Path(cfg.trainer.output_dir), cfg.data.val_files, cfg.data.val_batch_size, fv)
    Path(summary_path).write_text(json.dumps(summary, indent=1))
    print(f"[toy] total time {summary['toy_total_time_s'] / 60:.1f} min")
    if iv and fv:
        print(f"validation cover-EM: {iv['cover_em']:.3f} -> {fv['cover_em']:.3f} "
              f"(F1 {iv['f1']:.3f} -> {fv['f1']:.3f}; real BM25 search, {int(fv['n'])} held-out questions)")
    print(f"plot: {png}")
    print(summary_path, flush=True)  # the last line: the path of summary.json, nothing else
    return 0
