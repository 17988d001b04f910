"""Sampling tokens from a causal LM: the engine interface and its types, the shared batched sampler, and
the HF and vLLM engines. Below both `rollout/` (the agent's turns) and `search/` (the in-process
simulation LLM), which import it and never each other."""
