"""ZeroSearch: train LLM search agents with RL against a simulated search engine.

The package is split by concern (see docs/ARCHITECTURE.md). Importing `zerosearch` itself is cheap: it
pulls in nothing heavy, so `zerosearch.algos` and `zerosearch.reward` stay usable on their own.
"""

__version__ = "0.1.0"
