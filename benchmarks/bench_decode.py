"""The HF engine's decode on CPU, with and without its speed-ups, side by side in one process.

    python -m benchmarks.bench_decode [--size 30m] [--dtype bf16|fp32] [--attn eager|sdpa] [--batch 16] \
        [--max-new 64] [--repeats 5] [--threads 1] [--profile VARIANT]

Variants, each an `HFEngine` over its own copy of compare_trl's locally built Qwen2 (the same presets; built
here if missing), decoding `--batch` toy-world prompts (about 43 tokens) for exactly `--max-new` tokens
(no stop) at T = 1 with per-sequence seeds:
- `baseline`: transformers' `DynamicCache` (a `torch.cat` of the cache per step), the model's own attention,
  plain `nn.Linear`;
- `growing_cache`: `kv_cache.GrowingCache` (appends in place), the rest as baseline;
- `cpu_kernels`: growing cache, `sdpa_gqa` attention, prepacked bf16 weights, transformers' forward;
- `fused_decode`: the same and `generation.fused_decode` (fused q/k/v and gate/up projections, the decoder
  stack run without transformers' per-layer dispatch): what the engine does by default
  (`rollout.cpu_decode_kernels=true`) for Qwen2 and LLaMA.

The variants take turns, rotating which goes first, after one warm-up call each. Printed per variant: the
median seconds of one `generate` call, tokens/s, and the ratio to the baseline (median of the per-round
ratios); and whether every variant sampled the same ids as the baseline.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager

VARIANTS = ("baseline", "growing_cache", "cpu_kernels", "fused_decode")


@contextmanager
def _cache_class(name: str):
    """The sampler builds `kv_cache.GrowingCache` at call time; the baseline swaps in transformers' cache."""
    from transformers import DynamicCache

    import zerosearch.generation.kv_cache as kv

    saved = kv.GrowingCache
    if name == "baseline":
        kv.GrowingCache = lambda layers=None: DynamicCache(ddp_cache_data=layers) if layers else DynamicCache()
    try:
        yield
    finally:
        kv.GrowingCache = saved


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", choices=("0.4m", "3m", "30m"), default="30m")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="eager")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", choices=VARIANTS, help="print torch's operator table of one call of this variant")
    args = ap.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.compare_trl import cached_assets
    from zerosearch.generation.hf_engine import HFEngine
    from zerosearch.generation.types import SamplingParams

    torch.set_num_threads(args.threads)
    a = cached_assets(args.size)
    tok = AutoTokenizer.from_pretrained(a["model"], padding_side="left")
    texts = a["texts"]
    prompts = [tok.encode(texts[i % len(texts)]) for i in range(args.batch)]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    engines = {}
    for v in VARIANTS:
        model = AutoModelForCausalLM.from_pretrained(a["model"], dtype=dtype, attn_implementation=args.attn).eval()
        engines[v] = HFEngine(model, tok, micro_batch_size=args.batch, cpu_kernels=v in ("cpu_kernels", "fused_decode"),
                              fused_decode=v == "fused_decode")
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new)
    seeds = list(range(args.batch))

    def call(v: str) -> tuple[float, list[list[int]]]:
        with _cache_class(v):
            t = time.perf_counter()
            outs = engines[v].generate(prompts, params, seeds=seeds)
            return time.perf_counter() - t, [o.token_ids for o in outs]

    e = engines["fused_decode"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} size {args.size} | {args.dtype}, {args.attn} attention, "
          f"{args.threads} thread(s) | {args.batch} x {args.max_new} tokens, prompts {len(prompts[0])} tokens | "
          f"fused_decode: attention {e.attention}, {e.packed_linears} packed linears, fused decoder {e.fused_decode}",
          flush=True)
    ids = {v: call(v)[1] for v in VARIANTS}  # warm-up (and the packing of cpu_kernels' weights)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]:
            dt, got = call(v)
            times[v].append(dt)
            if v != "baseline" and got != ids["baseline"]:
                ids[v] = got  # reported below
    tokens = args.batch * args.max_new
    for v in VARIANTS:
        med = statistics.median(times[v])
        ratio = statistics.median(t / b for t, b in zip(times[v], times["baseline"]))
        same = ids[v] == ids["baseline"]
        print(f"{v:14s}: {med:6.3f} s a call | {tokens / med:7.0f} tokens/s | vs baseline {ratio:.3f} | "
              f"calls {' '.join(f'{t:.2f}' for t in times[v])} | same ids as baseline: {same}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            call(args.profile)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
    return 0


if __name__ == "__main__":
    sys.exit(main())
