"""The actor's update phase alone, split by stage, against the machine's matmul peak.

    python -m benchmarks.bench_update [--size 30m] [--dtype bf16|fp32] [--attn eager|sdpa] [--threads 1] \
        [--optimizer fused|foreach] [--rows 16] [--prompt 43] \
        [--response 40-64] [--repeats 5] [--profile]

One gloo rank, the trainer's own pieces: `fsdp.load_causal_lm` + FSDP2 `fully_shard` per decoder layer
with mixed precision (fp32 masters, `--dtype` compute), `batching.response_logits` / `token_log_probs`
over a collated batch of `--rows` trajectories (prompt `--prompt` tokens, response lengths drawn from
`--response`), backward, `fsdp.clip_grad_norm`, AdamW step. The model is compare_trl's (the same locally
built Qwen2 presets; built here if missing). Prints the median seconds of forward, backward, clip and
optimizer step, and the achieved FLOP/s of the whole update (6 x matmul parameters x tokens, padding
included) against the matmul peak of the dtype at the same thread count. `--profile` adds torch's
operator table of one update.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

SIZES = {"0.4m": "tiny", "3m": "small", "30m": "medium"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="30m")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="eager")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizer", choices=("fused", "foreach"), default="fused")
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=43)
    ap.add_argument("--response", default="40-64", help="response lengths, uniform in LO-HI")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)

    import torch
    from benchmarks.compare_trl import cached_assets, matmul_params, matmul_peak
    from zerosearch.rollout.collate import collate_trajectories
    from zerosearch.rollout.types import PromptItem, Trajectory
    from zerosearch.workers import fsdp
    from zerosearch.workers.batching import response_logits, token_log_probs
    from zerosearch.workers.optim import build_optimizer

    torch.set_num_threads(args.threads)
    model_dir = cached_assets(args.size)["model"]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fsdp.init_distributed(0, 1, "127.0.0.1", port, "cpu")
    model = fsdp.shard_model(fsdp.load_causal_lm(model_dir, torch.float32, args.attn), dtype)
    opt = build_optimizer(model.parameters(), lr=1e-5, weight_decay=0.0, fused=args.optimizer == "fused")

    lo, hi = (int(x) for x in args.response.split("-"))
    g = torch.Generator().manual_seed(0)
    vocab = int(model.config.vocab_size)
    trajs = []
    for i in range(args.rows):
        p = torch.randint(5, vocab, (args.prompt,), generator=g).tolist()
        t = Trajectory(prompt_ids=p, item=PromptItem(p, f"r{i}"))
        n = int(torch.randint(lo, hi + 1, (1,), generator=g))
        t.extend(torch.randint(5, vocab, (n,), generator=g).tolist(), 1)
        trajs.append(t)
    batch = collate_trajectories(trajs, pad_id=0)
    dev = torch.device("cpu")
    tokens = batch["input_ids"].numel()  # padding included: the work the kernels do

    def one() -> tuple[float, float, float, float]:
        t0 = time.perf_counter()
        logits = response_logits(model, batch, dev)
        lp = token_log_probs(logits, batch["responses"])
        loss = -(lp * batch["response_mask"]).sum() / batch["response_mask"].sum()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        fsdp.clip_grad_norm(list(model.parameters()), 1.0)
        t3 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return t1 - t0, t2 - t1, t3 - t2, time.perf_counter() - t3

    for _ in range(2):
        one()
    runs = [one() for _ in range(args.repeats)]
    fwd, bwd, clip, step = (statistics.median(x) for x in zip(*runs))
    total = statistics.median(sum(r) for r in runs)
    flops = 6 * matmul_params(model_dir) * tokens
    peak = matmul_peak(args.dtype, args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} size {args.size} | {args.dtype} compute, {args.attn} attention, "
          f"{args.threads} thread(s), {args.optimizer} AdamW | "
          f"{args.rows} rows x {batch['input_ids'].shape[1]} tokens ({tokens} with padding)")
    print(f"update: forward {fwd:.3f}s | backward {bwd:.3f}s | clip {clip:.3f}s | optimizer {step:.3f}s | "
          f"total {total:.3f}s (median of {args.repeats})")
    print(f"achieved {flops / total / 1e12:.3f} TFLOP/s = {flops / total / peak:.1%} of the {args.dtype} matmul peak "
          f"{peak / 1e12:.3f} TFLOP/s ({args.threads} thread(s))")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            one()
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=20))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
