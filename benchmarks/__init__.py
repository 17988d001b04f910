"""Benchmarks of issue 16 (docs/PERFORMANCE.md has their commands and figures)."""
