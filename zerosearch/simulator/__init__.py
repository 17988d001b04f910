"""Simulation LLMs: collecting data from a real engine and fine-tuning a simulator (ZeroSearch)."""
