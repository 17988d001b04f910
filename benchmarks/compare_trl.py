"""TRL 1.16's GRPOTrainer against our GRPO on identical single-turn work, alternating in one invocation.

    python -m benchmarks.compare_trl --size 0.4m|3m|30m [--repeats 3] [--steps 8] [--warmup 2] \
        [--precision fp32|bf16] [--attn sdpa|eager] [--ours-workers 1] [--threads N] [--json FILE]
    # needs TRL: pip install trl==1.16.0 (the `bench` extra), never part of the default install

Identical work on both sides:
  * model: the same locally built Qwen2 (zerosearch.testing.tiny_models presets tiny ~0.4 M, small ~3 M,
    medium ~30 M parameters; 25 M with its 541-id vocabulary), fp32 weights, CPU; compute in `--precision`
    (bf16: ours `actor.param_dtype=bfloat16`, FSDP2 mixed precision over fp32 masters, and a bf16 rollout
    copy; TRL `bf16=True`, autocast over fp32 weights) with the attention kernel `--attn` on both sides;
  * prompts: the toy world's RL questions in the `compact` template, as plain text (no chat template);
  * group size (`--group`, default 4), prompts a step (`--prompts`, default 4), max completion length
    (`--max-new`, default 64), sampling temperature 1, top-p 1, no top-k;
  * optimizer AdamW, lr 1e-5, betas (0.9, 0.999), weight decay 0, grad clip 1.0, constant schedule, no
    warm-up; one optimizer step per generation batch (one PPO epoch, one mini-batch = the whole batch);
    no KL term (beta 0: neither side runs a reference model); token-mean loss;
  * HF generation on both sides (TRL: `model.generate`; ours: the HF engine's KV-cache sampler).
Our side runs through the public API: `zerosearch.run.run(overrides)` -> Trainer (Ray, FSDP2 workers
over gloo) with `rollout.max_turns=0` (the first turn is the final answer turn: no search).

Each side runs in its own process (`--side ours|trl`, so peak RSS is per side: the process tree's summed
RSS, Ray workers included), `--warmup` steps excluded, then `--steps` timed steps; sides alternate for
`--repeats` rounds and the medians are reported: optimizer steps/s, generated tokens/s, peak RSS.
The last line is `ratio_ours_over_trl=<float>` (ours / TRL optimizer steps per second).

Before the sides run, the matmul peak of this machine for the compute dtype and thread count is measured
(square matmuls of 512-2048, the best of them); our update phase's achieved FLOP/s is 6 x (matmul
parameters, lm_head included) x (prompt + response tokens of the step) / `timing_s/update_actor`, per
timed step, median, printed against that peak.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SIZES = {"0.4m": "tiny", "3m": "small", "30m": "medium"}
ROOT = Path(__file__).resolve().parents[1]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_assets(size: str, root: Path, n_prompts: int) -> dict:
    """The model folder and the prompts (texts), built once per size under root."""
    from zerosearch.data.prompts import render_prompt
    from zerosearch.testing.tiny_models import make_tiny_model
    from zerosearch.toy.world import build_world

    world = build_world(n_sft=50, n_rl=max(64, n_prompts), n_test=5, seed=0)
    qs = world.questions["rl"][:n_prompts]
    texts = [render_prompt(None, q.question, "compact", "never") for q in qs]
    model = make_tiny_model(root / f"model_{size}", SIZES[size], texts=texts * 5)
    data = root / "train.jsonl"
    with open(data, "w") as f:
        for q in qs:
            f.write(json.dumps({"id": q.id, "question": q.question, "golden_answers": q.golden_answers,
                                "source": "toy"}) + "\n")
    corpus = root / "corpus.jsonl"  # for the retrieval engine the trainer builds but never calls (no search)
    corpus.write_text(json.dumps({"id": "0", "contents": '"x"\nnothing'}) + "\n")
    return {"model": str(model), "data": str(data), "corpus": str(corpus), "texts": texts,
            "answers": [q.golden_answers for q in qs]}


def cached_assets(size: str) -> dict:
    """compare_trl's model and prompts for `size`, as its last run wrote them, built here if there was none
    (for the benchmarks that reuse them: bench_update, bench_decode)."""
    root = ROOT / ".cache" / "bench" / "compare_trl"
    root.mkdir(parents=True, exist_ok=True)
    assets = root / f"assets_{size}.json"
    if not assets.exists():
        assets.write_text(json.dumps(make_assets(size, root, 16)))
    return json.loads(assets.read_text())


def matmul_peak(dtype_name: str, threads: int) -> float:
    """The best FLOP/s of square matmuls (512, 1024, 2048) in this dtype on `threads` threads."""
    import torch

    torch.set_num_threads(threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    best = 0.0
    for n in (512, 1024, 2048):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(2):
            a @ b
        reps = max(3, int(1e10 / (2 * n ** 3)))
        for _ in range(3):  # best of three timings: other jobs on shared cores only ever slow a timing down
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - t0))
    return best


def matmul_params(model_dir: str) -> int:
    """Parameters that take part in matmuls per token: every 2-D weight but the input embedding, plus the
    lm_head once (tied or not)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    n = sum(p.numel() for name, p in model.named_parameters() if p.dim() == 2 and "embed_tokens" not in name
            and "lm_head" not in name)
    return n + model.config.vocab_size * model.config.hidden_size


def run_ours(a: dict, args, out: Path) -> dict:
    from zerosearch.run import run

    total = args.warmup + args.steps
    overrides = [
        "algorithm=grpo", "search=retrieval", f"search.retrieval.corpus_path={a['corpus']}",
        "search.eval_engine=retrieval", f"model.path={a['model']}", f"data.train_files=[{a['data']}]",
        "data.val_files=[]", "data.prompt_template=compact", "data.chat_template=never",
        "data.max_prompt_length=256", f"data.train_batch_size={args.prompts}", "data.shuffle=false",
        f"rollout.n={args.group}", "rollout.max_turns=0", f"rollout.max_response_length={args.max_new}",
        f"rollout.max_total_length={256 + args.max_new + 1}", "rollout.temperature=1.0", "rollout.top_p=1.0",
        "rollout.log_prob_check=true",
        f"actor.lr={args.lr}", "actor.lr_warmup_steps=0", "actor.weight_decay=0.0", "actor.grad_clip=1.0",
        f"actor.ppo_mini_batch_size={args.prompts}", f"actor.micro_batch_size_per_worker={args.prompts * args.group}",
        "actor.ppo_epochs=1", "actor.use_kl_loss=false", "algorithm.use_kl_in_reward=false",
        "actor.loss_agg_mode=token-mean", "actor.entropy_coeff=0.0",
        f"ref.micro_batch_size_per_worker={args.prompts * args.group}",
        "trainer.device=cpu", f"trainer.cpu_workers={args.ours_workers}",
        f"trainer.cpu_threads_per_worker={max(1, (args.threads or os.cpu_count() or 1) // args.ours_workers)}", f"trainer.total_steps={total}",
        "trainer.save_freq=0", "trainer.test_freq=0", "trainer.val_before_train=false", "trainer.resume=disable",
        f"trainer.output_dir={out}", "logging.backends=[jsonl]", "logging.progress_bar=false",
        f"actor.param_dtype={'bfloat16' if args.precision == 'bf16' else 'float32'}",
        f"model.attn_implementation={args.attn}",
        *args.ours_override,
    ]
    run(overrides)
    rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    rows = [r for r in rows if "timing_s/step" in r][args.warmup:]
    step_s = [r["timing_s/step"] for r in rows]
    toks = [r["response_length/mean"] * args.prompts * args.group for r in rows]
    stages = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k.startswith("timing_s/")}
    # tokens through the update: every row's prompt and response (the forward and backward cover both)
    rows_per_step = args.prompts * args.group
    update_tokens = [(r["prompt_length/mean"] + r["response_length/mean"]) * rows_per_step for r in rows]
    n_params = matmul_params(a["model"])  # once: it builds the model from its config
    stages["update_flops_per_s"] = statistics.median(
        6 * n_params * n / r["timing_s/update_actor"] for n, r in zip(update_tokens, rows))
    stages["update_tokens"] = statistics.median(update_tokens)
    # engine vs trainer log-probs of the same tokens: the mismatch rollout.engine_log_probs_as_old would accept
    stages.update({k: max(r[k] for r in rows) for k in rows[0] if k.startswith("rollout/log_prob_diff")})
    return {"step_s": step_s, "tokens": toks, "stages": stages}


def run_trl(a: dict, args, out: Path) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from zerosearch.reward import compute_score  # the same reward work as ours (reward.score=f1)

    answers = {t: g for t, g in zip(a["texts"], a["answers"])}

    def reward(prompts, completions, **kw):
        return [compute_score(c, answers[p], score="f1")[0] for p, c in zip(prompts, completions)]

    tok = AutoTokenizer.from_pretrained(a["model"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=torch.float32, attn_implementation=args.attn)
    total = args.warmup + args.steps
    cfg = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=args.precision == "bf16", per_device_train_batch_size=args.prompts * args.group,
        gradient_accumulation_steps=1, num_generations=args.group, max_completion_length=args.max_new,
        temperature=1.0, top_p=1.0, top_k=0, beta=0.0, num_iterations=1, learning_rate=args.lr,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999,
        max_grad_norm=1.0, loss_type="dapo", max_steps=total, logging_steps=1, save_strategy="no",
        report_to="none", seed=1, dataloader_num_workers=0, disable_tqdm=True)
    times: list[float] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *_a, **_k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_a, **_k):
            times.append(time.perf_counter() - self.t0)

        def on_log(self, _args, _state, _control, logs=None, **_k):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    ds = Dataset.from_list([{"prompt": t} for t in a["texts"]] * (total * args.prompts // len(a["texts"]) + 2))
    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=cfg, train_dataset=ds, processing_class=tok,
                          callbacks=[Clock()])
    trainer.train()
    step_s = times[args.warmup:]
    toks = [n * args.prompts * args.group for n in lengths[args.warmup:]]
    return {"step_s": step_s, "tokens": toks, "stages": {}}


def side_main(args) -> int:
    import torch

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    a = json.loads(Path(args.assets).read_text())
    out = Path(tempfile.mkdtemp(prefix=f"cmp_{args.side}_"))
    res = (run_ours if args.side == "ours" else run_trl)(a, args, out)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        try:
            total += q.memory_info().rss
        except psutil.Error:
            pass
    return total


def run_side(side: str, assets: Path, args) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.compare_trl", "--side", side, "--assets", str(assets),
           "--size", args.size, "--steps", str(args.steps), "--warmup", str(args.warmup), "--prompts",
           str(args.prompts), "--group", str(args.group), "--max-new", str(args.max_new), "--lr", str(args.lr),
           "--ours-workers", str(args.ours_workers), "--threads", str(args.threads), "--precision",
           args.precision, "--attn", args.attn]
    for o in args.ours_override:
        cmd += ["--ours-override", o]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "RAY_DEDUP_LOGS": "0"})
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc.pid))
            time.sleep(0.2)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    out, _ = proc.communicate()
    th.join()
    line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"{side} side failed (exit {proc.returncode}); its output:\n{out[-3000:]}")
    res = json.loads(line[7:])
    res["peak_rss_mib"] = peak[0] / 2 ** 20
    res["wall_s"] = time.perf_counter() - t0
    step = statistics.median(res["step_s"])
    res["steps_per_s"] = 1.0 / step
    res["tokens_per_s"] = statistics.median(t / s for t, s in zip(res["tokens"], res["step_s"]))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="0.4m")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per run")
    ap.add_argument("--warmup", type=int, default=2, help="steps not timed at the start of each run")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="compute dtype of both sides (weights and optimizer states stay fp32)")
    ap.add_argument("--attn", choices=("sdpa", "eager"), default="sdpa",
                    help="attention kernel of both sides (CPU bf16: eager's backward is faster than sdpa's)")
    ap.add_argument("--ours-workers", type=int, default=1, help="trainer.cpu_workers of our side")
    ap.add_argument("--ours-override", action="append", default=[], help="extra override for our side")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per side (0 = all cores; ours: divided over its workers, trainer.cpu_threads_per_worker; 1 by default: on shared cores OpenMP threads spinning against other jobs slow every op up to tenfold)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--side", choices=("ours", "trl"), default=None, help=argparse.SUPPRESS)
    ap.add_argument("--assets", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.side:
        return side_main(args)
    try:
        import trl  # noqa: F401
    except ImportError:
        print("error: TRL is not installed: pip install trl==1.16.0 (the `bench` extra)", file=sys.stderr)
        return 2
    root = ROOT / ".cache" / "bench" / "compare_trl"
    root.mkdir(parents=True, exist_ok=True)
    assets = root / f"assets_{args.size}.json"
    assets.write_text(json.dumps(make_assets(args.size, root, max(16, args.prompts * 4))))
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} size {args.size} | {args.prompts} prompts x {args.group}, "
          f"<= {args.max_new} new tokens, {args.precision} compute, {args.attn} attention, CPU, {args.threads} "
          f"thread(s) | ours: {args.ours_workers} worker(s) {args.ours_override} | "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    peak = matmul_peak(args.precision, args.threads or os.cpu_count() or 1)
    print(f"matmul peak, {args.precision}, {args.threads} thread(s): {peak / 1e12:.3f} TFLOP/s", flush=True)
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for rep in range(args.repeats):
        for side in (("ours", "trl") if rep % 2 == 0 else ("trl", "ours")):
            r = run_side(side, assets, args)
            runs[side].append(r)
            print(f"rep {rep} {side:4s}: {r['steps_per_s']:.3f} steps/s | {r['tokens_per_s']:.0f} tokens/s | peak RSS "
                  f"{r['peak_rss_mib']:.0f} MiB | process {r['wall_s']:.0f}s", flush=True)
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in ("steps_per_s", "tokens_per_s", "peak_rss_mib")}
           for s in runs}
    stages = runs["ours"][-1]["stages"]
    if stages:
        print("ours, stage medians of the last run (s): " + ", ".join(
            f"{k[9:]} {v:.3f}" for k, v in sorted(stages.items()) if k.startswith("timing_s/")))
        print(f"ours, update phase: {stages['update_flops_per_s'] / 1e12:.3f} TFLOP/s over "
              f"{stages['update_tokens']:.0f} tokens a step = {stages['update_flops_per_s'] / peak:.1%} of the "
              f"{args.precision} matmul peak")
        if "rollout/log_prob_diff_max" in stages:
            print(f"ours, engine vs trainer log-prob |diff| (max over the run's steps): mean "
                  f"{stages['rollout/log_prob_diff_mean']:.2e}, max {stages['rollout/log_prob_diff_max']:.2e}")
    for s in ("ours", "trl"):
        print(f"{s:4s} median: {med[s]['steps_per_s']:.3f} optimizer steps/s | {med[s]['tokens_per_s']:.0f} generated "
              f"tokens/s | peak RSS {med[s]['peak_rss_mib']:.0f} MiB")
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "median": med, "matmul_peak_flops": peak}, indent=1))
    print(f"ratio_ours_over_trl={med['ours']['steps_per_s'] / med['trl']['steps_per_s']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
