"""Seeds derived from names, stable across processes and Python versions (unlike hash())."""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A 63-bit seed from any printable parts, e.g. stable_seed(run_seed, "nq/17#3", turn)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF_FFFF_FFFF
