"""The one seeding rule: every seed derived from another goes through `stable_seed`.

    stable_seed(run_seed, "nq/17#3", turn)      a trajectory's turn (the agent loop)
    stable_seed(run_seed, "rollout", step)      a training step's rollout
    stable_seed(run_seed, "epoch", epoch)       the data order of an epoch
    stable_seed(call_seed, i)                   sequence i of a call without per-sequence seeds

The parts are joined with a separator and hashed with blake2b, so a seed depends only on its parts: not on
Python's per-process salted `hash()`, the order of calls, the batch a sequence shares, the number of ranks
it is dealt over, or a resume. Hand-rolled arithmetic (`seed * 1_000_003 + i`) is avoided: it collides
across purposes (the rollout seed of step s and sequence i of another call) and is easy to get subtly
different in two places.
"""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, e.g. stable_seed(run_seed, "nq/17#3", turn)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF
