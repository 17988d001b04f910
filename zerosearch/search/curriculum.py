"""The curriculum of simulated search: how likely a search is to return noisy documents at each step, and
the seeded draw that decides it.

ZeroSearch raises the noise probability from p_s to p_e along an exponential curve,

    p_i = p_s + (b^(i/m) - 1) / (b - 1) * (p_e - p_s),      b = 4 in the paper,

so the agent first learns the output format with mostly useful documents and later learns to cope with
noise. The draw is a pure function of (seed, step, row_id, turn) through a stable hash (blake2b, not
Python's per-process salted `hash()`), so a resumed run, a reordered batch or another worker draws exactly
the same noise for the same search.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

GRANULARITIES = ("query", "document")


def noise_probability(step: int, total_steps: int, start: float, end: float, base: float = 4.0) -> float:
    """Probability that a search at `step` (0-based) of `total_steps` returns noisy documents.

    `start` at step 0, `end` at step >= total_steps, the 4^x-shaped curve between (base b > 0; b = 1 is
    the linear limit). `end < start` gives a falling curriculum.

    >>> round(noise_probability(0, 100, 0.25, 0.5), 4), noise_probability(100, 100, 0.25, 0.5)
    (0.25, 0.5)
    >>> round(noise_probability(50, 100, 0.0, 0.5), 4)   # (4^0.5 - 1) / 3 * 0.5
    0.1667
    """
    if base <= 0:
        raise ValueError(f"curriculum base must be > 0, got {base}")
    if total_steps <= 0 or step >= total_steps:
        return float(end)
    x = max(step, 0) / total_steps
    frac = x if abs(base - 1.0) < 1e-12 else (base ** x - 1.0) / (base - 1.0)
    return float(start + frac * (end - start))


def _uniforms(seed: int, step: int, row_id: str, turn: int, n: int, domain: str) -> list[float]:
    """`n` uniforms in [0, 1) from a stable hash of the key (53 bits each, like random.random())."""
    key = f"{domain}\x1f{seed}\x1f{step}\x1f{row_id}\x1f{turn}".encode()
    out = []
    for i in range(n):
        digest = hashlib.blake2b(key + struct.pack("<I", i), digest_size=8).digest()
        out.append((int.from_bytes(digest, "little") >> 11) / float(1 << 53))
    return out


def draw_noisy(seed: int, step: int, row_id: str, turn: int, p: float,
               n_docs: int | None = None) -> bool | list[bool]:
    """Seeded noise draw for one search.

    With `n_docs=None` (granularity "query", as the original): one bool, all documents of the result
    useful (False) or all noisy (True). With `n_docs=k` (granularity "document"): k bools, one per
    document slot, so a result mixes useful and noisy documents; each is noisy with probability p.
    The same (seed, step, row_id, turn) always gives the same draw, whatever else is in the batch.
    """
    if n_docs is None:
        return _uniforms(seed, step, str(row_id), turn, 1, "query")[0] < p
    return [u < p for u in _uniforms(seed, step, str(row_id), turn, n_docs, "document")]


@dataclass(frozen=True)
class NoiseSchedule:
    """The curriculum of one run: `probability(step)` and `draw(...)` bound to its settings.

    Attributes:
        start, end: p_s and p_e (START_THRESHOLD / END_THRESHOLD).
        total_steps: m, the run's training steps.
        base: b of the curve (4 in ZeroSearch).
        granularity: "query" (one draw per search) or "document" (one per document slot).
        seed: the run's seed (trainer.seed).
    """

    start: float = 0.0
    end: float = 0.5
    total_steps: int = 1
    base: float = 4.0
    granularity: str = "query"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"noise granularity {self.granularity!r}: must be one of {', '.join(GRANULARITIES)}")
        if self.base <= 0:
            raise ValueError(f"curriculum base must be > 0, got {self.base}")

    def probability(self, step: int) -> float:
        return noise_probability(step, self.total_steps, self.start, self.end, self.base)

    def draw(self, step: int, row_id: str, turn: int, topk: int, p: float | None = None) -> list[bool]:
        """Noise flags of the `topk` document slots of one search (all equal at query granularity).
        `p` overrides the scheduled probability (validation at a fixed noise level)."""
        prob = self.probability(step) if p is None else p
        if self.granularity == "query":
            return [bool(draw_noisy(self.seed, step, row_id, turn, prob))] * topk
        return list(draw_noisy(self.seed, step, row_id, turn, prob, n_docs=topk))  # type: ignore[arg-type]
