"""The training prompt stream: seeded epoch permutations with a resumable position."""

from __future__ import annotations

import random
from typing import Any, Generic, Sequence, TypeVar

from zerosearch.utils.seeding import stable_seed

T = TypeVar("T")


class PromptLoader(Generic[T]):
    """Yields batches of rows forever, epoch after epoch.

    Each epoch is a permutation seeded by (seed, epoch), so the order depends only on the seed and the
    position is two integers: a resumed run continues exactly where the killed one stopped. A batch that
    runs past the end of an epoch is completed from the start of the next one (no row is dropped).
    """

    def __init__(self, rows: Sequence[T], batch_size: int, seed: int, shuffle: bool = True):
        if not rows:
            raise ValueError("PromptLoader: no training rows")
        if batch_size <= 0:
            raise ValueError(f"PromptLoader: batch_size must be > 0, got {batch_size}")
        self.rows, self.batch_size, self.seed, self.shuffle = list(rows), batch_size, seed, shuffle
        self.epoch, self.cursor = 0, 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(len(self.rows)))
        if self.shuffle:
            random.Random(stable_seed(self.seed, "epoch", epoch)).shuffle(order)
        return order

    def next_batch(self) -> list[T]:
        out: list[T] = []
        while len(out) < self.batch_size:
            if self.cursor >= len(self._order):
                self.epoch += 1
                self.cursor = 0
                self._order = self._permutation(self.epoch)
            take = min(self.batch_size - len(out), len(self._order) - self.cursor)
            out.extend(self.rows[i] for i in self._order[self.cursor:self.cursor + take])
            self.cursor += take
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "cursor": self.cursor, "num_rows": len(self.rows), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_rows"] != len(self.rows):
            raise ValueError(f"resuming a loader over {state['num_rows']} rows with {len(self.rows)} rows: the "
                             "training data changed since the checkpoint")
        self.epoch, self.cursor = int(state["epoch"]), int(state["cursor"])
        self._order = self._permutation(self.epoch)
