"""Evaluation: the paper's seven-benchmark table for the agent and the baselines (`python -m zerosearch.eval`).

    scoring   row scoring and aggregation, shared with validation during training (one scoring path)
    subsets   the benchmarks by short name and the --limit/--seed subset protocol
    models    model inputs (model folder, run, actor_hf, checkpoint), their config, generation engines
    baselines the methods: agent, direct, cot, rag
    store     trajectories.jsonl (append + fsync per batch; resumable)
    harness   methods x datasets through trainer.validation.run_validation
    report    results.csv / .md / .png and --compare
    rescore   --rescore FILE
"""
